/* mgate_properties and the user-property helpers on a session without
 * sockets (two recording virtual connections, as in test_verdict): what a
 * handler reads, what the broker then gets (byte for byte when nothing
 * changed, re-encoded when something did, also after a late verdict), and
 * a PUBLISH grown past the broker's Maximum Packet Size answered 0x83 (a
 * PUBACK cannot say 0x95, Packet too large). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rec_conn.h"
#include "session/internal.h"

static struct rec client, broker;

static struct conn *rec_dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner)
{
    (void)p;
    return rec_open(l, &broker, cbs, owner);
}

static bool ends_with(const struct rec *r, const uint8_t *pkt, size_t len)
{
    return r->n >= len && !memcmp(r->buf + r->n - len, pkt, len);
}

#define TEXT(s) ((mgate_bytes){(const uint8_t *)(s), (uint32_t)(sizeof(s) - 1)})

/* ---- the handler ------------------------------------------------------- */

enum mode { M_READ, M_STAMP, M_GROW, M_PEND_STAMP };
static enum mode mode;
static struct mgate_properties seen; /* a copy of what the handler read */
static bool read_null, unknown_null, connect_null;
static const void *kept;

static enum mgate_verdict on_connect(mgate_session *s, struct mgate_connect_req *req)
{
    connect_null = mgate_properties(s, req) == NULL;
    return MGATE_ALLOW;
}

static enum mgate_verdict on_publish(mgate_session *s, struct mgate_publish_req *req)
{
    static int other;
    unknown_null = mgate_properties(s, &other) == NULL; /* never a request: no ask found */
    struct mgate_properties *p = mgate_properties(s, req);
    read_null = p == NULL;
    if (!p)
        return MGATE_ALLOW;
    CHECK(mgate_properties(s, req) == p); /* decoded once */
    seen = *p;
    switch (mode) {
    case M_READ:
        return MGATE_ALLOW;
    case M_STAMP:
    case M_PEND_STAMP:
        CHECK_EQ_INT(mgate_user_property_set(s, p, TEXT("x"), TEXT("y")), 0);
        CHECK_EQ_INT(mgate_user_property_remove(p, TEXT("k")), 1);
        kept = req;
        return mode == M_STAMP ? MGATE_ALLOW : MGATE_PENDING;
    case M_GROW:
        CHECK_EQ_INT(mgate_user_property_add(s, p, TEXT("name"), TEXT("value")), 0);
        return MGATE_ALLOW;
    }
    return MGATE_DENY;
}

static const struct mgate_handler judge = {.name = "props", .auth_connect = on_connect, .auth_publish = on_publish};
static const struct mgate_handler *const chain[] = {&judge};

/* ---- packets ----------------------------------------------------------- */

static const uint8_t connect_v5[] = {0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 1, 'c'};
static const uint8_t connect_v4[] = {0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 1, 'c'};
static const uint8_t connack_v5[] = {0x20, 3, 0, 0, 0};
/* Maximum Packet Size 30 */
static const uint8_t connack_max30[] = {0x20, 8, 0, 0, 5, 0x27, 0, 0, 0, 30};
static const uint8_t connack_v4[] = {0x20, 2, 0, 0};
/* QoS 1, id 1, "a/b", user k=v, content type "t", payload "hi" */
static const uint8_t publish_kv[] = {0x32, 21, 0, 3, 'a', '/', 'b', 0, 1, 11, 0x26, 0, 1, 'k', 0, 1, 'v',
                                     0x03, 0, 1, 't', 'h', 'i'};
/* the same with k=v replaced by x=y */
static const uint8_t publish_xy[] = {0x32, 21, 0, 3, 'a', '/', 'b', 0, 1, 11, 0x26, 0, 1, 'x', 0, 1, 'y',
                                     0x03, 0, 1, 't', 'h', 'i'};
static const uint8_t publish_v4[] = {0x32, 9, 0, 3, 'a', '/', 'b', 0, 1, 'h', 'i'};
static const uint8_t puback_too_large[] = {0x40, 3, 0, 1, 0x83};

/* ---- running (one loop per test, as test_verdict) ---------------------- */

static struct loop *loop;
static struct session_list list;
static struct session_params params;
static const struct sockaddr_in peer = {.sin_family = AF_INET};
static struct mgate_session *sess;

static struct mgate_session *open_session(const uint8_t *connect, size_t clen, const uint8_t *connack,
                                          size_t alen)
{
    memset(&client, 0, sizeof(client));
    memset(&broker, 0, sizeof(broker));
    loop = loop_new();
    list = (struct session_list){0};
    params = (struct session_params){.listener = "test", .connect_timeout_ms = 5000, .output_high_water = 65536,
                                     .max_packet_size = 1 << 20, .handlers = chain, .handler_count = 1,
                                     .dial = rec_dial};
    rec_open(loop, &client, NULL, NULL);
    sess = session_start(loop, client.c, (const struct sockaddr *)&peer, &params, &list);
    conn_deliver(client.c, connect, clen);
    conn_deliver(broker.c, connack, alen);
    CHECK_EQ_INT(sess->state, SESSION_OPEN);
    return sess;
}

/* Once the loop is idle (nothing deferred, no timer due): the late verdict
 * if one is wanted, then closing every session, then stopping. */
static int phase;
static bool want_resume;
static int when_idle(void *ctx, int timeout_ms)
{
    if (timeout_ms == 0)
        return 0;
    if (phase == 0 && want_resume)
        mgate_resume(sess, kept, MGATE_ALLOW);
    else if (phase <= 1 && list.count)
        session_list_close_all(&list);
    else if (!list.count)
        loop_stop(ctx);
    phase++;
    return 0;
}

static void settle(bool resume)
{
    static struct loop_hook hook;
    phase = 0;
    want_resume = resume;
    hook = (struct loop_hook){.ctx = loop, .before_poll = when_idle};
    loop_hook_add(loop, &hook);
    loop_run(loop);
}

static void finish(void)
{
    CHECK_EQ_INT(list.count, 0);
    loop_free(loop);
    free(list.spare);
    list.spare = NULL;
}

/* ---- tests ------------------------------------------------------------- */

static void test_read_unchanged(void)
{
    mode = M_READ;
    open_session(connect_v5, sizeof connect_v5, connack_v5, sizeof connack_v5);
    CHECK(!connect_null); /* a v5 CONNECT has properties (none here) */
    size_t before = broker.n;
    conn_deliver(client.c, publish_kv, sizeof publish_kv);
    CHECK(!read_null && unknown_null);
    CHECK_EQ_INT(seen.user_count, 1);
    CHECK(seen.has_content_type && seen.content_type.len == 1 && seen.content_type.p[0] == 't');
    CHECK(!seen.has_response_topic && seen.subscription_id_count == 0);
    CHECK_EQ_INT(broker.n - before, sizeof publish_kv);
    CHECK(ends_with(&broker, publish_kv, sizeof publish_kv)); /* byte for byte */
    settle(false);
    finish();
}

static void test_stamp(void)
{
    mode = M_STAMP;
    open_session(connect_v5, sizeof connect_v5, connack_v5, sizeof connack_v5);
    conn_deliver(client.c, publish_kv, sizeof publish_kv);
    CHECK(ends_with(&broker, publish_xy, sizeof publish_xy));
    settle(false);
    finish();
}

/* Packets re-encoded in one read go out in one write, as a run of
 * unchanged ones does (a mount point re-encodes every PUBLISH). */
static void test_stamped_together(void)
{
    mode = M_STAMP;
    open_session(connect_v5, sizeof connect_v5, connack_v5, sizeof connack_v5);
    uint8_t three[3 * sizeof publish_kv];
    for (int i = 0; i < 3; i++)
        memcpy(three + i * sizeof publish_kv, publish_kv, sizeof publish_kv);
    size_t before = broker.n;
    unsigned writes = broker.writes;
    conn_deliver(client.c, three, sizeof three);
    CHECK_EQ_INT(broker.n - before, 3 * sizeof publish_xy);
    CHECK(ends_with(&broker, publish_xy, sizeof publish_xy));
    CHECK_EQ_INT(broker.writes - writes, 1);
    settle(false);
    finish();
}

static void test_stamp_late(void)
{
    mode = M_PEND_STAMP;
    open_session(connect_v5, sizeof connect_v5, connack_v5, sizeof connack_v5);
    size_t before = broker.n;
    conn_deliver(client.c, publish_kv, sizeof publish_kv);
    CHECK_EQ_INT(broker.n, before); /* held */
    settle(true);
    CHECK_EQ_INT(broker.n - before, sizeof publish_xy);
    CHECK(ends_with(&broker, publish_xy, sizeof publish_xy)); /* the views followed the packet's copy */
    finish();
}

static void test_too_large(void)
{
    mode = M_GROW;
    open_session(connect_v5, sizeof connect_v5, connack_max30, sizeof connack_max30);
    size_t before = broker.n;
    conn_deliver(client.c, publish_kv, sizeof publish_kv);
    CHECK_EQ_INT(broker.n, before); /* 23 bytes grown to 37: not sent */
    CHECK(ends_with(&client, puback_too_large, sizeof puback_too_large));
    settle(false);
    finish();
}

static void test_v4(void)
{
    mode = M_STAMP;
    open_session(connect_v4, sizeof connect_v4, connack_v4, sizeof connack_v4);
    CHECK(connect_null);
    conn_deliver(client.c, publish_v4, sizeof publish_v4);
    CHECK(read_null);
    CHECK(ends_with(&broker, publish_v4, sizeof publish_v4));
    settle(false);
    finish();
}

int main(void)
{
    test_read_unchanged();
    test_stamp();
    test_stamped_together();
    test_stamp_late();
    test_too_large();
    test_v4();
    return check_done("test_session_props");
}
