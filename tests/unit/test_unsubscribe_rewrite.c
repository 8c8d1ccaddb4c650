/* rewrite_unsubscribe (mgate.h): each handler that has it may point an
 * UNSUBSCRIBE's filters elsewhere before it is forwarded.  What the broker
 * gets: the packet unchanged when no filter changed, re-encoded with the new
 * filters when one did (the unsubscribe hook sees them too), nothing when a
 * new filter is not a valid filter (the session ends).  A pair of virtual
 * connections, no sockets. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rec_conn.h"
#include "session/internal.h"

static struct rec client, broker;
static const struct sockaddr_in peer = {.sin_family = AF_INET};
static const char *rewrite_to; /* what filter 2 becomes; NULL: nothing changes */
static char hooked[64];        /* filter 2 as the unsubscribe hook saw it */

static void rewrite_second(mgate_session *s, struct mgate_unsubscribe_req *req)
{
    (void)s;
    if (rewrite_to && req->count >= 2)
        req->topics[1] = (mgate_bytes){(const uint8_t *)rewrite_to, (uint32_t)strlen(rewrite_to)};
}
static void hook(mgate_session *s, const struct mgate_unsubscribe_req *req)
{
    (void)s;
    snprintf(hooked, sizeof(hooked), "%.*s", (int)req->topics[1].len, (const char *)req->topics[1].p);
}
static const struct mgate_handler rewriter = {.name = "rewriter", .rewrite_unsubscribe = rewrite_second};
static const struct mgate_handler watcher = {.name = "watcher", .unsubscribe = hook};
static const struct mgate_handler *const chain[] = {&rewriter, &watcher};

static struct conn *dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner)
{
    (void)p;
    return rec_open(l, &broker, cbs, owner);
}

static const uint8_t connect_pkt[] = {0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 1, 'c'};
static const uint8_t connack_ok[] = {0x20, 2, 0, 0};
/* UNSUBSCRIBE id 7: "a/b", "c/d" */
static const uint8_t unsub[] = {0xA2, 12, 0, 7, 0, 3, 'a', '/', 'b', 0, 3, 'c', '/', 'd'};

static void stop(struct loop *l, struct loop_timer *t)
{
    (void)t;
    loop_stop(l);
}

/* An open pair, then the UNSUBSCRIBE: what the broker got after the CONNECT. */
static mgate_session *run(struct loop *l, struct session_list *list, struct session_params *p)
{
    *p = (struct session_params){.listener = "test", .connect_timeout_ms = 1000, .output_high_water = 1 << 16,
                                 .max_packet_size = 1 << 20, .dial = dial, .handlers = chain, .handler_count = 2};
    client = broker = (struct rec){0};
    hooked[0] = 0;
    struct conn *c = rec_open(l, &client, NULL, NULL);
    mgate_session *s = session_start(l, c, (const struct sockaddr *)&peer, p, list);
    conn_deliver(c, connect_pkt, sizeof(connect_pkt));
    conn_deliver(broker.c, connack_ok, sizeof(connack_ok));
    broker.n = 0; /* the CONNECT */
    conn_deliver(c, unsub, sizeof(unsub));
    return s;
}

static void finish(struct loop *l, struct session_list *list)
{
    struct loop_timer t = {0};
    loop_timer_start(l, &t, 10, stop);
    loop_run(l);
    CHECK_EQ_INT(list->count, 0);
    loop_free(l);
    free(list->spare); /* the worker's spare request holder */
}

static void test_unchanged(void)
{
    struct loop *l = loop_new();
    struct session_list list = {0};
    struct session_params p;
    rewrite_to = NULL;
    mgate_session *s = run(l, &list, &p);
    CHECK(!mgate_session_closed(s));
    CHECK_EQ_INT(broker.n, sizeof(unsub));
    CHECK(memcmp(broker.buf, unsub, sizeof(unsub)) == 0);
    CHECK_EQ_STR(hooked, "c/d");
    session_close(s, "test over");
    finish(l, &list);
}

static void test_rewritten(void)
{
    struct loop *l = loop_new();
    struct session_list list = {0};
    struct session_params p;
    rewrite_to = "x/c/+";
    mgate_session *s = run(l, &list, &p);
    static const uint8_t want[] = {0xA2, 14, 0, 7, 0, 3, 'a', '/', 'b', 0, 5, 'x', '/', 'c', '/', '+'};
    CHECK(!mgate_session_closed(s));
    CHECK_EQ_INT(broker.n, sizeof(want));
    CHECK(memcmp(broker.buf, want, sizeof(want)) == 0);
    CHECK_EQ_STR(hooked, "x/c/+"); /* the hook sees what was sent */
    session_close(s, "test over");
    finish(l, &list);
}

static void test_invalid(void)
{
    const char *bad[] = {"a/#/b", "", "a+"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct loop *l = loop_new();
        struct session_list list = {0};
        struct session_params p;
        rewrite_to = bad[i];
        mgate_session *s = run(l, &list, &p);
        CHECK(mgate_session_closed(s));
        CHECK_EQ_INT(broker.n, 0); /* nothing sent: neither the bad filter nor the old one */
        CHECK_EQ_STR(hooked, "");  /* and not reported as unsubscribed */
        finish(l, &list);
    }
}

int main(void)
{
    test_unchanged();
    test_rewritten();
    test_invalid();
    return check_done("test_unsubscribe_rewrite");
}
