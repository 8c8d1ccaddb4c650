/* Mount points, the pure part (session/mount.h): templates, expansion,
 * prefixing topics and filters, stripping. */
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>

#include "check.h"
#include "session/mount.h"
#include "session/session.h"

static mgate_bytes b(const char *s) { return (mgate_bytes){(const uint8_t *)s, (uint32_t)strlen(s)}; }
static const mgate_bytes none = {NULL, 0};

static void test_template(void)
{
    CHECK(!mount_template_error(""));
    CHECK(!mount_template_error("tenants/%u/"));
    CHECK(!mount_template_error("t/%u/%c/"));
    CHECK(!mount_template_error("site1/"));
    CHECK(!mount_template_error("t/dev-%c/"));
    CHECK(mount_template_error("tenants/%u"));   /* alice would be a prefix of alice2 */
    CHECK(mount_template_error("tenants/+/"));
    CHECK(mount_template_error("tenants/#/"));
    CHECK(mount_template_error("$SYS/%u/"));
    CHECK(mount_template_error("t/%x/"));
    CHECK(mount_template_error("t/%/"));
    CHECK(mount_template_error("t/%"));
    CHECK(mount_template_error("t/%u%c/"));      /* a+bc and ab+c */
    CHECK(mount_template_error("t/%u-%c/"));
    CHECK(mount_template_error("t/\xff/"));
    char big[MOUNT_MAX_LEN + 2];
    memset(big, 'a', sizeof(big) - 2);
    big[sizeof(big) - 2] = '/';
    big[sizeof(big) - 1] = 0;
    CHECK(mount_template_error(big));
}

static void expect(const char *tmpl, const char *u, const char *c, enum mount_expand_rc rc, const char *want)
{
    struct mount *m = (struct mount *)1;
    CHECK_EQ_INT(mount_expand(tmpl, u ? b(u) : none, c ? b(c) : none, &m), rc);
    if (rc != MOUNT_OK || !want) {
        CHECK(!m);
        return;
    }
    CHECK(m && m->len == strlen(want) && memcmp(m->p, want, m->len) == 0);
    free(m);
}

static void test_expand(void)
{
    expect("tenants/%u/", "alice", "c1", MOUNT_OK, "tenants/alice/");
    expect("t/%u/%c/", "alice", "c1", MOUNT_OK, "t/alice/c1/");
    expect("t/dev-%c/", NULL, "c1", MOUNT_OK, "t/dev-c1/");
    expect("site1/", NULL, NULL, MOUNT_OK, "site1/");
    expect("", "alice", "c", MOUNT_OK, NULL);
    expect("tenants/%u/", "", "c", MOUNT_BAD_USERNAME, NULL);
    expect("tenants/%u/", NULL, "c", MOUNT_BAD_USERNAME, NULL);
    expect("tenants/%u/", "a+", "c", MOUNT_BAD_USERNAME, NULL);
    expect("tenants/%u/", "#", "c", MOUNT_BAD_USERNAME, NULL);
    expect("tenants/%u/", "bob/../alice", "c", MOUNT_BAD_USERNAME, NULL);
    expect("tenants/%u/", "alice/x", "c", MOUNT_BAD_USERNAME, NULL);
    mgate_bytes nul = {(const uint8_t *)"a\0b", 3};
    struct mount *m = NULL;
    CHECK_EQ_INT(mount_expand("tenants/%u/", nul, b("c"), &m), MOUNT_BAD_USERNAME);
    expect("t/%c/", "alice", "", MOUNT_BAD_CLIENT_ID, NULL);
    expect("t/%c/", "alice", "x/y", MOUNT_BAD_CLIENT_ID, NULL);
    expect("t/%c/", "", "x", MOUNT_OK, "t/x/"); /* %u unused: any username */
    expect("%u/", "$SYS", "c", MOUNT_BAD_RESULT, NULL);
    expect("%u/", "alice", "c", MOUNT_OK, "alice/");
}

static void test_prefix_valid(void)
{
    CHECK(mount_prefix_valid(b("")));
    CHECK(mount_prefix_valid(none));
    CHECK(mount_prefix_valid(b("a/b/")));
    CHECK(!mount_prefix_valid(b("a/+/")));
    CHECK(!mount_prefix_valid(b("a/#")));
    CHECK(!mount_prefix_valid((mgate_bytes){(const uint8_t *)"a\0", 2}));
    CHECK(!mount_prefix_valid(b("a\xc0\x80")));
    CHECK(!mount_new(b("")));
}

static char *put(const struct mount *m, const char *x, bool filter)
{
    mgate_bytes in = b(x);
    char *out = calloc(1, m->len + in.len + 1);
    if (filter)
        mount_put_filter(m, in, (uint8_t *)out);
    else
        mount_put_topic(m, in, (uint8_t *)out);
    return out;
}

static void test_apply(void)
{
    struct mount *m = mount_new(b("tenants/alice/"));
    CHECK(m);
    if (!m)
        return;
    static const char *cases[][3] = {
        /* input, as a topic, as a filter */
        {"a/b", "tenants/alice/a/b", "tenants/alice/a/b"},
        {"#", "tenants/alice/#", "tenants/alice/#"},
        {"$SYS/x", "tenants/alice/$SYS/x", "tenants/alice/$SYS/x"},
        {"$share/g/#", "tenants/alice/$share/g/#", "$share/g/tenants/alice/#"},
        {"$share/g/a/+/b", "tenants/alice/$share/g/a/+/b", "$share/g/tenants/alice/a/+/b"},
        {"$share/g", "tenants/alice/$share/g", "tenants/alice/$share/g"}, /* no filter: the broker refuses */
        {"$queue/a", "tenants/alice/$queue/a", "tenants/alice/$queue/a"},  /* mosquitto has no $queue */
        {"/", "tenants/alice//", "tenants/alice//"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *t = put(m, cases[i][0], false), *f = put(m, cases[i][0], true);
        CHECK_EQ_STR(t, cases[i][1]);
        CHECK_EQ_STR(f, cases[i][2]);
        free(t);
        free(f);
    }
    mgate_bytes out;
    CHECK(mount_strip(m, b("tenants/alice/a/b"), &out) && out.len == 3 && memcmp(out.p, "a/b", 3) == 0);
    CHECK(!mount_strip(m, b("tenants/alice/"), &out)); /* nothing left: no topic */
    CHECK(!mount_strip(m, b("tenants/alice"), &out));
    CHECK(!mount_strip(m, b("tenants/bob/a/b"), &out));
    CHECK(!mount_strip(m, b("tenants/alicex/a"), &out));
    CHECK(!mount_strip(m, b("a/b"), &out));
    free(m);
}

/* ---- a session's mount point (a front end's: no sockets) ---------------- */

static void front_end(struct mgate_session *s) { session_front_end(s); }
static const struct session_front front = {.drain = front_end, .close = front_end};

static void stop(struct loop *l, struct loop_timer *t)
{
    (void)t;
    loop_stop(l);
}

static bool mount_is(const struct mgate_session *s, const char *want)
{
    mgate_bytes m = mgate_session_mount_point(s);
    return m.p && m.len == strlen(want) && memcmp(m.p, want, m.len) == 0;
}

static void test_session(void)
{
    static const struct sockaddr_in peer = {.sin_family = AF_INET};
    struct session_params p = {.listener = "test", .connect_timeout_ms = 1000, .output_high_water = 65536,
                               .mount_point = "tenants/%u/"};
    struct loop *l = loop_new();
    struct session_list list = {0};
    struct mgate_session *s = session_front_start(l, (const struct sockaddr *)&peer, &p, &list, &front, NULL);
    CHECK(s != NULL);
    if (!s) {
        loop_free(l);
        return;
    }
    CHECK(mount_is(s, "")); /* none until the identity is settled */
    CHECK_EQ_INT(session_mount_settle(s, b("alice"), b("c1")), 0);
    CHECK(mount_is(s, "tenants/alice/"));
    CHECK_EQ_INT(session_mount_settle(s, b("a/b"), b("c1")), 0x86); /* refused: the old one stands */
    CHECK(mount_is(s, "tenants/alice/"));
    CHECK_EQ_INT(session_mount_settle(s, none, b("c1")), 0x86);
    session_mount_begin(s);
    CHECK_EQ_INT(mgate_session_set_mount_point(s, b("acme/")), 0); /* auth_connect's choice wins */
    CHECK_EQ_INT(session_mount_settle(s, b("bob"), b("c1")), 0);
    CHECK(mount_is(s, "acme/"));
    CHECK_EQ_INT(mgate_session_set_mount_point(s, b("a/+/")), -1);
    CHECK_EQ_INT(mgate_session_set_mount_point(s, b("#")), -1);
    CHECK(mount_is(s, "acme/")); /* a refused one changes nothing */
    CHECK_EQ_INT(mgate_session_set_mount_point(s, none), 0); /* "" removes it */
    CHECK(mount_is(s, ""));
    CHECK_EQ_INT(session_mount_settle(s, b("bob"), b("c1")), 0); /* still the handler's choice: none */
    CHECK(mount_is(s, ""));
    session_mount_begin(s); /* the next auth_connect chooses nothing: the template's */
    CHECK_EQ_INT(session_mount_settle(s, b("bob"), b("c1")), 0);
    CHECK(mount_is(s, "tenants/bob/"));
    session_front_end(s);
    struct loop_timer t = {0};
    loop_timer_start(l, &t, 10, stop);
    loop_run(l);
    loop_free(l);
}

int main(void)
{
    test_template();
    test_expand();
    test_prefix_valid();
    test_apply();
    test_session();
    return check_done("test_mount");
}
