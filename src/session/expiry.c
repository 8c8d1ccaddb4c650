/*
 * mgate_session_expire_at: a handler's deadline for the session (credentials
 * that expire).  The timer lives in a block of its own, made on the first
 * call: most sessions never have one, and struct mgate_session stays one
 * pointer larger instead of a timer's size.
 *
 * The deadline is wall-clock time (seconds since the epoch); the loop's
 * timers count milliseconds of the monotonic clock, so the timer is armed
 * for the distance at the time of the call (at most a day at a time, then
 * measured again: a clock step is caught within that).
 *
 * At the deadline: an open MQTT 5 client gets DISCONNECT 0xA0 (Maximum
 * connect time), an older one is closed; a CONNECT not answered yet is
 * refused (CONNACK 0x87 / 5: the deadline passed before the client got
 * in); a front end's session (HTTP, CoAP bridge) is closed through its
 * front end.  Counted (sessions_expired) and logged once: the session is
 * closing after that, and a closing session is never expired again.
 */
#include <stdlib.h>
#include <time.h>

#include "core/log.h"
#include "session/internal.h"

#define EXPIRY_MAX_STEP_MS (24u * 3600u * 1000u)

struct session_expiry {
    struct loop_timer t;
    mgate_session *s;
    uint64_t at; /* seconds since the epoch; the earliest asked */
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void expiry_fired(struct loop *l, struct loop_timer *t);

static void expiry_arm(struct session_expiry *e)
{
    uint64_t now = wall_ms(), due = e->at * 1000u;
    uint64_t ms = due > now ? due - now : 0;
    loop_timer_start(e->s->loop, &e->t, ms > EXPIRY_MAX_STEP_MS ? EXPIRY_MAX_STEP_MS : (uint32_t)ms, expiry_fired);
}

static void expire_now(mgate_session *s)
{
    if (s->state == SESSION_CLOSING || s->ended)
        return;
    METRIC_INC(session_metrics(s)->sessions_expired);
    if (s->front) {
        session_log(s, LOGL_INFO, "closing: the session's time is up (mgate_session_expire_at)");
        s->front->close(s);
        return;
    }
    if (s->state == SESSION_OPEN) {
        reply_disconnect(s, MQTT_RC_MAXIMUM_CONNECT_TIME); /* 3.1.1: nothing, just closed */
        session_close_as(s, CONN_END_POLICY, CONN_END_NORMAL, "the session's time is up (mgate_session_expire_at)");
        return;
    }
    /* Its CONNECT is still being judged, or the broker has not answered:
     * a time that passed before the client got in refuses it. */
    if (!s->p->refusal_close)
        reply_connack(s, MQTT_RC_NOT_AUTHORIZED);
    session_close_as(s, CONN_END_POLICY, CONN_END_NORMAL, "CONNECT refused: its time was up (mgate_session_expire_at)");
}

static void expiry_fired(struct loop *l, struct loop_timer *t)
{
    (void)l;
    struct session_expiry *e = container_of(t, struct session_expiry, t);
    if (wall_ms() < e->at * 1000u) {
        expiry_arm(e); /* a step of a long wait, or the clock went back */
        return;
    }
    expire_now(e->s);
}

void mgate_session_expire_at(mgate_session *s, uint64_t unix_seconds)
{
    if (s->state == SESSION_CLOSING || s->ended)
        return;
    if (unix_seconds > UINT64_MAX / 1000u)
        unix_seconds = UINT64_MAX / 1000u; /* never, as far as the timer can tell */
    struct session_expiry *e = s->expiry;
    if (e && e->at <= unix_seconds)
        return; /* the earliest wins */
    if (!e) {
        if (!(e = calloc(1, sizeof(*e)))) {
            /* No memory for the timer: the session cannot be let past its
             * time, so it ends now rather than never. */
            session_log(s, LOGL_WARN, "out of memory keeping the session's expiry time");
            expire_now(s);
            return;
        }
        e->s = s;
        s->expiry = e;
    }
    e->at = unix_seconds;
    /* Armed even when the time is past: the timer fires on the next loop
     * turn, after the handler's callback returned (ending the session
     * inside it would free what the caller still uses). */
    expiry_arm(e);
}

void session_expiry_free(mgate_session *s)
{
    if (!s->expiry)
        return;
    loop_timer_stop(s->loop, &s->expiry->t);
    free(s->expiry);
    s->expiry = NULL;
}
