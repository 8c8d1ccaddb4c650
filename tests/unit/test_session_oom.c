/* Out of memory keeping a client's identity fails closed (issue 14): an MQTT
 * pair is closed, never left running as an anonymous client; a front end's
 * session has every later request refused.  malloc is made to fail on
 * demand by this executable's own malloc (glibc lets a program replace it);
 * under a sanitizer, which owns malloc, the injection is skipped. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rec_conn.h"
#include "session/internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define INJECT 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INJECT 0
#endif
#endif
#ifndef INJECT
#define INJECT 1
#endif

static int fail_mallocs; /* the next this many malloc calls return NULL */

#if INJECT
extern void *__libc_malloc(size_t n);
void *malloc(size_t n)
{
    if (fail_mallocs > 0) {
        fail_mallocs--;
        return NULL;
    }
    return __libc_malloc(n);
}
#endif

/* Everything written to any connection here: the first bytes tell what a
 * client was told. */
static struct rec sink;

static void stop(struct loop *l, struct loop_timer *t)
{
    (void)t;
    loop_stop(l);
}

/* Run the loop for a turn or so (the deferred closes and frees), then free
 * it. */
static void finish(struct loop *l)
{
    struct loop_timer t = {0};
    loop_timer_start(l, &t, 10, stop);
    loop_run(l);
}

static struct mgate_connect_req login(void)
{
    struct mgate_connect_req req = {0};
    req.client_id = (mgate_bytes){(const uint8_t *)"dev1", 4};
    req.username = (mgate_bytes){(const uint8_t *)"alice", 5};
    req.password = (mgate_bytes){(const uint8_t *)"secret", 6};
    req.has_username = req.has_password = true;
    return req;
}

static const struct sockaddr_in peer = {.sin_family = AF_INET};
static struct session_params params = {.listener = "test", .connect_timeout_ms = 1000,
                                       .output_high_water = 65536};

static void test_pair(void)
{
    struct loop *l = loop_new();
    struct session_list list = {0};
    struct conn *c = conn_virtual(l, &rec_ops, &sink, NULL, NULL);
    struct mgate_session *s = session_start(l, c, (const struct sockaddr *)&peer, &params, &list);
    CHECK(s != NULL);
    struct mgate_connect_req req = login();
    CHECK_EQ_INT(session_save_credentials(s, &req), 0);
    CHECK(mgate_session_username(s).len == 5 && !mgate_session_closed(s));

    fail_mallocs = 1;
    CHECK_EQ_INT(session_save_credentials(s, &req), -1);
    fail_mallocs = 0;
    CHECK(mgate_session_closed(s));          /* closed, not running on */
    CHECK(s->identity_lost);
    CHECK_EQ_INT(session_dial(s), -1);       /* and never dialled */
    CHECK(s->broker == NULL);
    finish(l);
    CHECK_EQ_INT(list.count, 0);             /* gone once its connection closed */
    loop_free(l);
}

static void test_token(void)
{
    struct loop *l = loop_new();
    struct session_list list = {0};
    struct conn *c = conn_virtual(l, &rec_ops, &sink, NULL, NULL);
    struct mgate_session *s = session_start(l, c, (const struct sockaddr *)&peer, &params, &list);
    fail_mallocs = 1;
    session_set_credentials(s, NULL, 0, "tok", 3); /* a WebSocket's Authorization token */
    fail_mallocs = 0;
    CHECK(mgate_session_closed(s));
    finish(l);
    CHECK_EQ_INT(list.count, 0);
    loop_free(l);
}

static void front_drain(struct mgate_session *s) { session_front_end(s); }
static void front_close(struct mgate_session *s) { session_front_end(s); }
static const struct session_front front = {.drain = front_drain, .close = front_close};
static void never_done(struct ask *a) { (void)a; }

static void test_front(void)
{
    struct loop *l = loop_new();
    struct session_list list = {0};
    struct mgate_session *s = session_front_start(l, (const struct sockaddr *)&peer, &params, &list, &front, NULL);
    CHECK(s != NULL);
    struct ask pub = {0};
    CHECK_EQ_INT(verdict_ask(s, &pub, ASK_PUBLISH, never_done), MGATE_ALLOW); /* no handler: allowed */
    struct mgate_connect_req req = login();
    fail_mallocs = 1;
    session_front_credentials(s, &req);
    fail_mallocs = 0;
    CHECK_EQ_INT(verdict_ask(s, &pub, ASK_PUBLISH, never_done), MGATE_DENY); /* never as anonymous */
    CHECK_EQ_INT(list.count, 1); /* the front end ends it, not us */
    session_front_end(s);
    CHECK_EQ_INT(list.count, 0);
    finish(l);
    loop_free(l);
}

/* ---- through the packet path: a CONNECT with a will --------------------- */

static int publish_asks, dials;
static bool starve_after_connect, rewrite_huge;
static enum mgate_verdict allow_connect(mgate_session *s, struct mgate_connect_req *req)
{
    if (rewrite_huge) { /* a client id MQTT cannot carry (over 65535 bytes) */
        static uint8_t big[70000];
        memset(big, 'x', sizeof(big));
        req->client_id = (mgate_bytes){big, sizeof(big)};
    }
    (void)s;
    if (starve_after_connect)
        fail_mallocs = 1; /* the next allocation is keeping the identity */
    return MGATE_ALLOW;
}
static enum mgate_verdict count_publish(mgate_session *s, struct mgate_publish_req *req)
{
    (void)s, (void)req;
    publish_asks++;
    return MGATE_ALLOW;
}
static const struct mgate_handler judge = {.name = "judge", .auth_connect = allow_connect,
                                           .auth_publish = count_publish};
static const struct mgate_handler *const chain[] = {&judge};

static struct conn *sink_dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner)
{
    (void)p;
    dials++;
    return conn_virtual(l, &rec_ops, &sink, cbs, owner);
}

/* v4 CONNECT, client id "c", will "w/t" = "x" */
static const uint8_t connect_with_will[] = {0x10, 21, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 60,
                                            0, 1, 'c', 0, 3, 'w', '/', 't', 0, 1, 'x'};

static struct mgate_session *judged(struct loop *l, struct session_list *list, struct session_params *p)
{
    *p = params;
    p->handlers = chain;
    p->handler_count = 1;
    p->max_packet_size = 1 << 20;
    p->dial = sink_dial;
    struct conn *c = conn_virtual(l, &rec_ops, &sink, NULL, NULL);
    struct mgate_session *s = session_start(l, c, (const struct sockaddr *)&peer, p, list);
    publish_asks = dials = 0;
    sink.n = 0;
    conn_deliver(c, connect_with_will, sizeof(connect_with_will));
    return s;
}

/* The will is judged with the identity auth_connect settled on: if that
 * cannot be kept, the will would be judged as an anonymous client's. */
static void test_will_identity(void)
{
    struct loop *l = loop_new();
    struct session_list list = {0};
    struct session_params p;
    starve_after_connect = true;
    struct mgate_session *s = judged(l, &list, &p);
    starve_after_connect = false;
    fail_mallocs = 0;
    CHECK_EQ_INT(publish_asks, 0); /* never asked as anonymous */
    CHECK(mgate_session_closed(s));
    CHECK_EQ_INT(dials, 0);
    finish(l);
    CHECK_EQ_INT(list.count, 0);
    loop_free(l);
}

/* A rewrite the protocol cannot carry: the client is told (CONNACK 3), not
 * left waiting for a CONNACK from a broker that never got its CONNECT. */
static void test_unsendable_connect(void)
{
    struct loop *l = loop_new();
    struct session_list list = {0};
    struct session_params p;
    rewrite_huge = true;
    struct mgate_session *s = judged(l, &list, &p);
    rewrite_huge = false;
    CHECK_EQ_INT(publish_asks, 1); /* the will was judged */
    CHECK(mgate_session_closed(s));
    CHECK(sink.n >= 4 && sink.buf[0] == 0x20 && sink.buf[3] == 3); /* CONNACK 3, server unavailable */
    finish(l);
    CHECK_EQ_INT(list.count, 0);
    loop_free(l);
}

/* ---- a pending verdict whose packet cannot be copied --------------------- */

/* The handler keeps the request until its resume whatever happens: out of
 * memory copying the packet, the session closes but the request stays
 * allocated (its views emptied, since the input they pointed into is
 * reused) until the resume, which then frees it. */
static const void *pending_req;
static mgate_session *pending_s;
static enum mgate_verdict pend_starved(mgate_session *s, struct mgate_publish_req *req)
{
    pending_req = req;
    pending_s = s;
    fail_mallocs = 1; /* the next allocation is the packet's copy */
    return MGATE_PENDING;
}
static const struct mgate_handler pender = {.name = "pender", .auth_publish = pend_starved};
static const struct mgate_handler *const pend_chain[] = {&pender};

static void resume_pending(struct loop *l, struct loop_timer *t)
{
    (void)t;
    const struct mgate_publish_req *req = pending_req;
    CHECK(mgate_session_closed(pending_s)); /* closed, yet still allocated */
    CHECK(req->topic.len == 0 && req->payload.len == 0);
    mgate_resume(pending_s, pending_req, MGATE_ALLOW);
    static struct loop_timer stop_t;
    loop_timer_start(l, &stop_t, 5, stop); /* the resume is completed at the end of this turn */
}

static void test_pending_copy_fails(void)
{
    struct loop *l = loop_new();
    struct session_list list = {0};
    struct session_params p = params;
    p.handlers = pend_chain;
    p.handler_count = 1;
    p.max_packet_size = 1 << 20;
    p.dial = sink_dial;
    struct conn *c = conn_virtual(l, &rec_ops, &sink, NULL, NULL);
    struct mgate_session *s = session_start(l, c, (const struct sockaddr *)&peer, &p, &list);
    static const uint8_t connect_v4[] = {0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 1, 'c'};
    static const uint8_t publish[] = {0x30, 7, 0, 3, 'a', '/', 'b', 'h', 'i'};
    conn_deliver(c, connect_v4, sizeof(connect_v4));
    CHECK(s->state == SESSION_AWAIT_CONNACK && s->broker);
    static const uint8_t connack[] = {0x20, 2, 0, 0};
    conn_deliver(s->broker, connack, sizeof(connack));
    conn_deliver(c, publish, sizeof(publish));
    fail_mallocs = 0;
    CHECK(mgate_session_closed(s));
    CHECK(s->asks != NULL); /* the handler still holds it */
    struct loop_timer t = {0};
    loop_timer_start(l, &t, 20, resume_pending); /* after the pair closed and was unlisted */
    loop_run(l);
    CHECK_EQ_INT(list.count, 0);
    free(list.spare);
    loop_free(l);
}

int main(void)
{
    if (!INJECT) {
        printf("test_session_oom: skipped (a sanitizer owns malloc)\n");
        return 0;
    }
    test_pair();
    test_token();
    test_front();
    test_will_identity();
    test_unsendable_connect();
    test_pending_copy_fails();
    return check_done("test_session_oom");
}
