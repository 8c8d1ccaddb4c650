/* CLIENT_ID_POLICY: the pattern grammar and client_id_check, without a session. */
#include <string.h>

#include "check.h"
#include "config/config.h"

static mgate_bytes b(const char *s) { return (mgate_bytes){(const uint8_t *)s, (uint32_t)strlen(s)}; }

static const char *why;

/* Whether policy p lets user (NULL: anonymous) with certificate CN cn use id. */
static bool ok(const struct client_id_policy *p, const char *id, const char *user, const char *cn)
{
    why = NULL;
    bool r = client_id_check(p, b(id), user ? b(user) : (mgate_bytes){NULL, 0}, cn, &why);
    CHECK(r || (why && *why)); /* a refusal always says why */
    return r;
}

static void test_any(void)
{
    struct client_id_policy p = {CLIENT_ID_ANY, NULL, NULL};
    CHECK(ok(&p, "anything", NULL, ""));
    CHECK(ok(&p, "", NULL, ""));
    CHECK(ok(&p, "alice", "bob", ""));
    CHECK(client_id_check(NULL, b("x"), b("y"), NULL, NULL)); /* no policy: any */
}

static void test_equal(void)
{
    struct client_id_policy p = {CLIENT_ID_EQUAL, NULL, NULL};
    CHECK(ok(&p, "alice", "alice", ""));
    CHECK(!ok(&p, "bob", "alice", ""));         /* the attack: another user's id */
    CHECK(!ok(&p, "alice2", "alice", ""));
    CHECK(!ok(&p, "alic", "alice", ""));
    CHECK(!ok(&p, "Alice", "alice", ""));       /* bytes, not case-folded */
    CHECK(!ok(&p, "alice", NULL, ""));          /* anonymous */
    CHECK_EQ_STR(why, "no username");
    CHECK(!ok(&p, "", "", ""));                 /* an empty username is none */
    CHECK(!ok(&p, "", "alice", ""));            /* server-assigned: bound to nobody */
    CHECK(strstr(why, "empty client id") != NULL);
    CHECK(!ok(&p, "dev1", NULL, "dev1"));       /* equal is the username's; %cn is pattern's */
    /* an id with a NUL byte is not the username it starts with */
    mgate_bytes nul = {(const uint8_t *)"alice\0", 6};
    CHECK(!client_id_check(&p, nul, b("alice"), "", NULL));
}

static void test_prefix(void)
{
    struct client_id_policy p = {CLIENT_ID_PREFIX, (char *)"-", NULL};
    CHECK(ok(&p, "alice-phone", "alice", ""));
    CHECK(ok(&p, "alice-", "alice", ""));          /* nothing after the separator is fine */
    CHECK(ok(&p, "alice-a-b", "alice", ""));       /* separators after the first are the client's */
    CHECK(!ok(&p, "alice", "alice", ""));          /* the separator is required */
    CHECK(!ok(&p, "alicephone", "alice", ""));
    CHECK(!ok(&p, "alice_phone", "alice", ""));    /* not one of the separators */
    CHECK(!ok(&p, "bob-phone", "alice", ""));
    CHECK(!ok(&p, "alice-phone", "bob", ""));      /* the attack */
    CHECK(!ok(&p, "bobby-1", "bob", ""));          /* a longer name is another user */
    CHECK(!ok(&p, "alice-phone", NULL, ""));
    CHECK_EQ_STR(why, "no username");
    CHECK(!ok(&p, "", "alice", ""));
    /* A username holding a separator would share ids with a shorter one
     * (bob could take bob-x's "bob-x-1"): refused. */
    CHECK(!ok(&p, "bob-x-1", "bob-x", ""));
    CHECK(strstr(why, "CLIENT_ID_SEPARATORS") != NULL);
    CHECK(ok(&p, "bob-x-1", "bob", "")); /* and so "bob-x-1" is bob's alone */

    struct client_id_policy q = {CLIENT_ID_PREFIX, (char *)":/_", NULL};
    CHECK(ok(&q, "alice:1", "alice", ""));
    CHECK(ok(&q, "alice/1", "alice", ""));
    CHECK(ok(&q, "alice_1", "alice", ""));
    CHECK(!ok(&q, "alice-1", "alice", ""));
    CHECK(ok(&q, "bob-x:1", "bob-x", ""));         /* '-' is no separator here */
    CHECK(!ok(&q, "a_b:1", "a_b", ""));

    struct client_id_policy none = {CLIENT_ID_PREFIX, (char *)"", NULL}; /* fails closed */
    CHECK(!ok(&none, "alice-1", "alice", ""));
    CHECK(!ok(&none, "alice", "alice", ""));
}

static void test_pattern(void)
{
    struct client_id_policy p = {CLIENT_ID_PATTERN, NULL, (char *)"dev/%u"};
    CHECK(ok(&p, "dev/alice", "alice", ""));
    CHECK(!ok(&p, "dev/alice/x", "alice", ""));
    CHECK(!ok(&p, "dev/bob", "alice", ""));
    CHECK(!ok(&p, "dev/", "alice", ""));
    CHECK(!ok(&p, "xdev/alice", "alice", ""));
    CHECK(!ok(&p, "dev/alice", NULL, ""));
    CHECK_EQ_STR(why, "no username");

    struct client_id_policy star = {CLIENT_ID_PATTERN, NULL, (char *)"%u:*"};
    CHECK(ok(&star, "alice:", "alice", ""));
    CHECK(ok(&star, "alice:phone:2", "alice", ""));
    CHECK(!ok(&star, "alice", "alice", ""));
    CHECK(!ok(&star, "alicex:1", "alice", ""));
    CHECK(!ok(&star, "a:b:1", "a:b", "")); /* holds the character after %u */
    CHECK(strstr(why, "follows %u") != NULL);
    CHECK(!ok(&star, "", "alice", ""));

    struct client_id_policy cn = {CLIENT_ID_PATTERN, NULL, (char *)"%cn"};
    CHECK(ok(&cn, "dev00001", NULL, "dev00001"));   /* no username needed when only %cn is asked */
    CHECK(ok(&cn, "dev00001", "someone", "dev00001"));
    CHECK(!ok(&cn, "dev00002", NULL, "dev00001"));
    CHECK(!ok(&cn, "dev00001", "dev00001", ""));    /* no certificate */
    CHECK_EQ_STR(why, "no certificate CN");
    CHECK(!ok(&cn, "dev00001", "dev00001", NULL));

    struct client_id_policy both = {CLIENT_ID_PATTERN, NULL, (char *)"%u.%cn-*"};
    CHECK(ok(&both, "alice.dev1-x", "alice", "dev1"));
    CHECK(ok(&both, "alice.dev1-", "alice", "dev1"));
    CHECK(!ok(&both, "alice.dev2-x", "alice", "dev1"));
    CHECK(!ok(&both, "alice.dev1-x", NULL, "dev1"));
    CHECK(!ok(&both, "alice.dev1-x", "alice", ""));
    CHECK(!ok(&both, "a.b.c-1", "a.b", "c"));       /* "." follows %u: a.b is refused */
    CHECK(!ok(&both, "a.b-c-1", "a", "b-c"));       /* "-" follows %cn */
    CHECK(ok(&both, "a.b-c-1", "a", "b"));

    struct client_id_policy pct = {CLIENT_ID_PATTERN, NULL, (char *)"100%%-%u"};
    CHECK(ok(&pct, "100%-alice", "alice", ""));
    CHECK(!ok(&pct, "100%%-alice", "alice", ""));

    struct client_id_policy empty = {CLIENT_ID_PATTERN, NULL, NULL}; /* fails closed */
    CHECK(!ok(&empty, "alice", "alice", ""));
}

static void test_grammar(void)
{
    static const char *const good[] = {"%u", "%cn", "dev/%u", "%u-*", "%u-%cn", "%cn/%u/*", "a%%b-%u",
                                       "%u:x:*", "%un"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const char *w = config_check_client_id_pattern(good[i]);
        CHECK(w == NULL);
        if (w)
            fprintf(stderr, "  pattern \"%s\": %s\n", good[i], w);
    }
    static const char *const bad[] = {"",     "abc",  "%%",   "*",      "%u*",   "%cn*", "*%u",
                                      "%u-*x", "%u**", "%u%cn", "%cn%u", "%c",    "%x",   "%u%",
                                      "a\tb%u", "%u-\x7f"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(config_check_client_id_pattern(bad[i]) != NULL);
    char longp[300];
    memset(longp, 'a', sizeof(longp) - 3);
    memcpy(longp + sizeof(longp) - 3, "%u", 3);
    CHECK(config_check_client_id_pattern(longp) != NULL);

    CHECK(client_id_pattern_uses_cn("dev/%cn"));
    CHECK(!client_id_pattern_uses_cn("dev/%u"));
    CHECK(!client_id_pattern_uses_cn("%%cn-%u")); /* a literal "%cn" */

    CHECK(config_check_client_id_separators("-") == NULL);
    CHECK(config_check_client_id_separators("-_:/.@") == NULL);
    CHECK(config_check_client_id_separators("a") != NULL);
    CHECK(config_check_client_id_separators("-1") != NULL);
    CHECK(config_check_client_id_separators("- ") != NULL);
    CHECK(config_check_client_id_separators("\xc3\xa9") != NULL);
}

int main(void)
{
    test_any();
    test_equal();
    test_prefix();
    test_pattern();
    test_grammar();
    return check_done("test_client_id");
}
