/* The verdict engine (session/verdict.c) and the session's state machine,
 * without sockets: a session runs on two virtual connections (the client's,
 * and the broker's from a fake dial) that record what they are sent, with a
 * chain of three handlers (two configurable ones around one with no
 * callbacks at all).  Late verdicts are given from the loop, step by step. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rec_conn.h"
#include "session/internal.h"

/* ---- two recording connections --------------------------------------- */

static struct rec client, broker;
static int dials;

static struct conn *rec_dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner)
{
    (void)p;
    dials++;
    return rec_open(l, &broker, cbs, owner);
}

/* Whether r's last bytes are pkt. */
static bool got(const struct rec *r, const uint8_t *pkt, size_t len)
{
    return r->n >= len && !memcmp(r->buf + r->n - len, pkt, len);
}

/* ---- the chain: h0, a handler without callbacks, h2 ------------------- */

enum mode { M_PASS, M_ALLOW, M_DENY, M_PEND, M_BAD, M_INSIDE };
static enum mode cmode[3], pmode[3], smode[3];
static int calls[3];
static void *kept[3]; /* the request a pending handler holds */

static enum mgate_verdict decide(int i, enum mode m, mgate_session *s, void *req)
{
    calls[i]++;
    switch (m) {
    case M_PASS: return MGATE_IGNORE;
    case M_ALLOW: return MGATE_ALLOW;
    case M_DENY: return MGATE_DENY;
    case M_PEND: kept[i] = req; return MGATE_PENDING;
    case M_INSIDE: mgate_resume(s, req, MGATE_ALLOW); return MGATE_PENDING;
    default: return (enum mgate_verdict)42; /* a handler bug */
    }
}

#define JUDGE(i)                                                                                           \
    static enum mgate_verdict c##i(mgate_session *s, struct mgate_connect_req *r) { return decide(i, cmode[i], s, r); } \
    static enum mgate_verdict p##i(mgate_session *s, struct mgate_publish_req *r) { return decide(i, pmode[i], s, r); } \
    static enum mgate_verdict s##i(mgate_session *s, struct mgate_subscribe_req *r) { return decide(i, smode[i], s, r); } \
    static const struct mgate_handler h##i = {.name = "h" #i, .auth_connect = c##i, .auth_publish = p##i,      \
                                              .auth_subscribe = s##i};
JUDGE(0)
JUDGE(2)
static const struct mgate_handler silent = {.name = "silent"}; /* every auth_* NULL: passes */
static const struct mgate_handler *const chain[] = {&h0, &silent, &h2};

/* ---- packets ---------------------------------------------------------- */

static const uint8_t connect_v4[] = {0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 1, 'c'};
/* v4 CONNECT, client id "c", will "w/t" = "x" */
static const uint8_t connect_will[] = {0x10, 21, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 60,
                                       0, 1, 'c', 0, 3, 'w', '/', 't', 0, 1, 'x'};
static const uint8_t connack_ok[] = {0x20, 2, 0, 0};
static const uint8_t connack_5[] = {0x20, 2, 0, 5};
static const uint8_t publish[] = {0x30, 7, 0, 3, 'a', '/', 'b', 'h', 'i'};
static const uint8_t subscribe3[] = {0x82, 14, 0, 1, 0, 1, 'x', 0, 0, 1, 'y', 0, 0, 1, 'z', 0};
static const uint8_t subscribe_xz[] = {0x82, 10, 0, 1, 0, 1, 'x', 0, 0, 1, 'z', 0};
static const uint8_t suback2[] = {0x90, 4, 0, 1, 0, 0};
static const uint8_t suback_merged[] = {0x90, 5, 0, 1, 0, 0x80, 0};

/* ---- running -------------------------------------------------------- */

static struct loop *loop;
static bool closing, ran; /* the run's phase (see run) */
static struct session_list list;
static struct session_params params;
static const struct sockaddr_in peer = {.sin_family = AF_INET};

static void reset(void)
{
    memset(cmode, 0, sizeof(cmode));
    memset(pmode, 0, sizeof(pmode));
    memset(smode, 0, sizeof(smode));
    memset(calls, 0, sizeof(calls));
    memset(kept, 0, sizeof(kept));
    memset(&client, 0, sizeof(client));
    memset(&broker, 0, sizeof(broker));
    dials = 0;
    closing = ran = false;
    loop = loop_new();
    list = (struct session_list){0};
    params = (struct session_params){.listener = "test", .connect_timeout_ms = 5000, .output_high_water = 65536,
                                     .max_packet_size = 1 << 20, .handlers = chain, .handler_count = 3,
                                     .dial = rec_dial};
}

/* The steps of a test run one at a time, each once the loop has nothing
 * left to do at once: no deferred call queued (a late verdict's completion
 * and a connection's close are deferred, and a close may take several
 * turns) and no timer due.  A timer-driven step would race them on a slow
 * machine (a turn longer than the step's period runs the step first).
 * Then every session left is closed and, when that has settled, the loop
 * stops (for good: one run per test, so nothing may touch a session or
 * connection after it). */
typedef void (*step_fn)(void);
static const step_fn *steps;
static struct loop_hook step_hook;

static int next_step(void *ctx, int timeout_ms)
{
    struct loop *l = ctx;
    if (timeout_ms == 0)
        return 0; /* work is due now: let it run first */
    if (*steps) {
        (*steps++)();
    } else if (!closing) {
        closing = true;
        if (list.count)
            session_list_close_all(&list);
    } else {
        loop_stop(l);
    }
    return 0;
}
static void run(const step_fn *s)
{
    steps = s;
    ran = true;
    step_hook = (struct loop_hook){.ctx = loop, .before_poll = next_step};
    loop_hook_add(loop, &step_hook);
    loop_run(loop);
}
static void done(void)
{
    static const step_fn none[] = {NULL};
    if (!ran)
        run(none);
    CHECK_EQ_INT(list.count, 0);
    loop_free(loop);
    if (list.spare)
        free(list.spare);
}

static struct mgate_session *sess;

/* A session whose CONNECT went through (the broker answered). */
static struct mgate_session *open_session(const uint8_t *connect, size_t len)
{
    rec_open(loop, &client, NULL, NULL);
    sess = session_start(loop, client.c, (const struct sockaddr *)&peer, &params, &list);
    conn_deliver(client.c, connect, len);
    if (broker.c && sess->state == SESSION_AWAIT_CONNACK)
        conn_deliver(broker.c, connack_ok, sizeof(connack_ok));
    return sess;
}

/* ---- IGNORE through the whole chain, now and late --------------------- */

static void resume0_ignore(void) { mgate_resume(sess, kept[0], MGATE_IGNORE); }
static void resume2_ignore(void) { mgate_resume(sess, kept[2], MGATE_IGNORE); }
static void check_forwarded_once(void)
{
    CHECK(got(&broker, publish, sizeof(publish)));
    CHECK_EQ_INT(broker.n, sizeof(connect_v4) + 2 * sizeof(publish)); /* the sync one, then the late one */
    CHECK(sess->asks == NULL && sess->held[MGATE_UP] == NULL);
    CHECK(!client.c->read_paused);
}

static void test_ignore_chain(void)
{
    reset();
    open_session(connect_v4, sizeof(connect_v4));
    CHECK_EQ_INT(sess->state, SESSION_OPEN);
    CHECK(got(&broker, connect_v4, sizeof(connect_v4))); /* every handler passed the CONNECT */
    conn_deliver(client.c, publish, sizeof(publish));
    CHECK(got(&broker, publish, sizeof(publish))); /* and the PUBLISH, at once */
    CHECK_EQ_INT(calls[0], 2);
    CHECK_EQ_INT(calls[2], 2);

    pmode[0] = pmode[2] = M_PEND; /* now each passes late */
    size_t before = broker.n;
    conn_deliver(client.c, publish, sizeof(publish));
    CHECK_EQ_INT(broker.n, before);
    CHECK(sess->asks != NULL && client.c->read_paused);
    CHECK_EQ_INT(calls[2], 2); /* h2 waits for h0 */
    static const step_fn s[] = {resume0_ignore, resume2_ignore, check_forwarded_once, NULL};
    run(s);
    CHECK_EQ_INT(calls[2], 3);
    done();
}

/* ---- a late DENY on one SUBSCRIBE filter ------------------------------ */

static bool h2_saw_denied;
static void deny_y_late(void)
{
    struct mgate_subscribe_req *req = kept[0];
    CHECK_EQ_INT(req->count, 3);
    req->filters[1].denied = true; /* "y" only, then no opinion on the rest */
    mgate_resume(sess, req, MGATE_IGNORE);
}
static void check_filtered(void)
{
    CHECK_EQ_INT(broker.n, sizeof(connect_v4)); /* h2 has it now */
    struct mgate_subscribe_req *req = kept[2];
    h2_saw_denied = req && req->filters[1].denied;
    mgate_resume(sess, kept[2], MGATE_ALLOW); /* a later ALLOW does not undo the denial */
}
static void broker_suback(void)
{
    CHECK(got(&broker, subscribe_xz, sizeof(subscribe_xz))); /* "x" and "z" go on */
    conn_deliver(broker.c, suback2, sizeof(suback2));
    CHECK(got(&client, suback_merged, sizeof(suback_merged))); /* 0, 0x80, 0: in the client's order */
    CHECK_EQ_INT(sess->merge_count, 0);
}

static void test_late_filter_deny(void)
{
    reset();
    open_session(connect_v4, sizeof(connect_v4));
    smode[0] = M_PEND;
    smode[2] = M_PEND;
    conn_deliver(client.c, subscribe3, sizeof(subscribe3));
    CHECK_EQ_INT(broker.n, sizeof(connect_v4));
    static const step_fn s[] = {deny_y_late, check_filtered, broker_suback, NULL};
    run(s);
    CHECK(h2_saw_denied);
    done();
}

/* ---- resumes that match nothing -------------------------------------- */

static int dummy;
static void resume_unknown(void)
{
    mgate_resume(sess, &dummy, MGATE_ALLOW); /* logged and ignored */
    mgate_resume(sess, NULL, MGATE_DENY);
    CHECK(sess->asks != NULL);
    CHECK_EQ_INT(broker.n, sizeof(connect_v4));
}
static void resume_twice(void)
{
    mgate_resume(sess, kept[0], MGATE_ALLOW);
    mgate_resume(sess, kept[0], MGATE_DENY); /* the first answer stands */
}
static void resume_stale(void)
{
    CHECK(got(&broker, publish, sizeof(publish)));
    mgate_resume(sess, kept[0], MGATE_DENY); /* finished already: ignored */
    CHECK(!mgate_session_closed(sess));
}

static void test_unknown_resume(void)
{
    reset();
    open_session(connect_v4, sizeof(connect_v4));
    pmode[0] = M_PEND;
    conn_deliver(client.c, publish, sizeof(publish));
    static const step_fn s[] = {resume_unknown, resume_twice, resume_stale, NULL};
    run(s);
    CHECK_EQ_INT(broker.n, sizeof(connect_v4) + sizeof(publish));
    done();
}

/* ---- a verdict that arrives after the client left ----------------------- */

static void client_leaves(void)
{
    conn_fail(client.c, 0);
    client.c = NULL;
}
static void check_gone(void)
{
    CHECK_EQ_INT(list.count, 0); /* ended and unlisted... */
    CHECK(mgate_session_closed(sess)); /* ...but still allocated: it may be asked */
    CHECK(sess->asks != NULL);
}
static void resume_after(void) { mgate_resume(sess, kept[0], MGATE_ALLOW); } /* frees it at the end of the turn */

static void test_late_after_client_left(void)
{
    reset();
    open_session(connect_v4, sizeof(connect_v4));
    pmode[0] = M_PEND;
    conn_deliver(client.c, publish, sizeof(publish));
    static const step_fn s[] = {client_leaves, check_gone, check_gone, resume_after, NULL};
    run(s);
    CHECK_EQ_INT(broker.n, sizeof(connect_v4)); /* nothing forwarded for a client that left */
    CHECK_EQ_INT(calls[2], 1);                   /* nor asked further */
    done();
}

/* The same for a front end's session (HTTP): the owner gets DENY once and
 * no later handler is asked. */
static int front_done_calls;
static enum mgate_verdict front_verdict = MGATE_ALLOW;
static void front_done(struct ask *a)
{
    front_done_calls++;
    front_verdict = a->verdict;
}
static void front_drain(struct mgate_session *s) { session_front_end(s); }
static const struct session_front front = {.drain = front_drain, .close = front_drain};
static struct ask front_ask;
static void front_leaves(void) { session_front_end(sess); }
static void front_resume_ignore(void) { mgate_resume(sess, kept[0], MGATE_IGNORE); }

static void test_front_after_end(void)
{
    reset();
    sess = session_front_start(loop, (const struct sockaddr *)&peer, &params, &list, &front, NULL);
    pmode[0] = M_PEND;
    front_ask = (struct ask){.req.publish = {.dir = MGATE_UP}};
    CHECK_EQ_INT(verdict_ask(sess, &front_ask, ASK_PUBLISH, front_done), MGATE_PENDING);
    CHECK(kept[0] == &front_ask.req.publish); /* the handler holds the ask's own request */
    static const step_fn s[] = {front_leaves, front_resume_ignore, NULL};
    run(s);
    CHECK_EQ_INT(front_done_calls, 1);
    CHECK_EQ_INT(front_verdict, MGATE_DENY);
    CHECK_EQ_INT(calls[2], 0);
    done();
}

/* ---- the will, judged late ------------------------------------------------ */

static void will_allowed(void)
{
    struct mgate_publish_req *w = kept[0];
    CHECK(w->will && w->topic.len == 3 && !memcmp(w->topic.p, "w/t", 3));
    CHECK_EQ_INT(dials, 0);
    mgate_resume(sess, &sess->held[MGATE_UP]->ask.req.connect, MGATE_ALLOW); /* the CONNECT's stage is over */
    mgate_resume(sess, w, MGATE_ALLOW);
}
static void will_check_dialled(void)
{
    CHECK_EQ_INT(dials, 1);
    CHECK(got(&broker, connect_will, sizeof(connect_will))); /* unchanged: forwarded as it came */
    CHECK_EQ_INT(sess->state, SESSION_AWAIT_CONNACK);
}
static void will_denied_late(void) { mgate_resume(sess, kept[2], MGATE_DENY); }
static void check_closed(void) { CHECK_EQ_INT(list.count, 0); } /* closed by itself, and freed: nothing pending */

static void test_will_late(void)
{
    reset();
    pmode[0] = M_PEND;
    open_session(connect_will, sizeof(connect_will));
    CHECK_EQ_INT(calls[0], 2); /* auth_connect passed, the will is with h0 */
    CHECK_EQ_INT(sess->state, SESSION_AUTH_CONNECT);
    static const step_fn s[] = {will_allowed, will_check_dialled, NULL};
    run(s);
    done();

    reset();
    cmode[0] = M_PEND; /* the CONNECT late, then its will late */
    pmode[2] = M_PEND;
    open_session(connect_will, sizeof(connect_will));
    static const step_fn s2[] = {resume0_ignore, will_denied_late, NULL};
    run(s2);
    CHECK_EQ_INT(calls[2], 2); /* h2: auth_connect, then the will */
    CHECK_EQ_INT(dials, 0);
    CHECK(got(&client, connack_5, sizeof(connack_5)));
    done();
}
static void test_will_denied_late(void)
{
    reset();
    pmode[2] = M_PEND;
    open_session(connect_will, sizeof(connect_will));
    static const step_fn s[] = {will_denied_late, check_closed, NULL};
    run(s);
    CHECK_EQ_INT(dials, 0);
    CHECK(got(&client, connack_5, sizeof(connack_5))); /* the will refused the CONNECT */
    done();
}

/* ---- answers given from inside the call, and handler bugs ------------- */

static void nothing(void) {}
static void check_inside(void)
{
    CHECK(got(&broker, publish, sizeof(publish)));
    CHECK(sess->asks == NULL);
}
static void test_resume_inside(void)
{
    reset();
    open_session(connect_v4, sizeof(connect_v4));
    pmode[0] = M_INSIDE;
    conn_deliver(client.c, publish, sizeof(publish));
    static const step_fn s[] = {nothing, check_inside, NULL}; /* the completion runs at the end of a turn */
    run(s);
    done();
}

/* A late pass to a handler that answers from inside its call: the ask is
 * pending and running at once; its answer still comes once. */
static void check_inside_late(void)
{
    CHECK_EQ_INT(broker.n, sizeof(connect_v4) + sizeof(publish));
    CHECK(sess->asks == NULL);
}
static void test_resume_inside_late(void)
{
    reset();
    open_session(connect_v4, sizeof(connect_v4));
    pmode[0] = M_PEND;
    pmode[2] = M_INSIDE;
    conn_deliver(client.c, publish, sizeof(publish));
    static const step_fn s[] = {resume0_ignore, nothing, check_inside_late, NULL};
    run(s);
    CHECK_EQ_INT(calls[2], 2);
    done();
}

static void test_not_a_verdict(void)
{
    reset();
    open_session(connect_v4, sizeof(connect_v4));
    pmode[0] = M_BAD;
    conn_deliver(client.c, publish, sizeof(publish));
    CHECK_EQ_INT(broker.n, sizeof(connect_v4)); /* fails closed: 3.1.1 has only closing */
    CHECK(mgate_session_closed(sess));
    CHECK_EQ_INT(calls[2], 1); /* no later handler was asked */
    done();
}

int main(void)
{
    test_ignore_chain();
    test_late_filter_deny();
    test_unknown_resume();
    test_late_after_client_left();
    test_front_after_end();
    test_will_late();
    test_will_denied_late();
    test_resume_inside();
    test_resume_inside_late();
    test_not_a_verdict();
    return check_done("test_verdict");
}
