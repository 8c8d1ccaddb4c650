/*
 * The verdict engine: one pending-request object (struct ask) and one walk
 * of the handler chain (MGATE_HANDLER; the rules are in mgate.h), used by
 * every front end: MQTT (a CONNECT, its will, a PUBLISH either way, a
 * SUBSCRIBE), MQTT over WebSocket (the same), HTTP requests and HTTP
 * WebSocket messages.
 *
 * The owner embeds a struct ask in its own request (no allocation), fills
 * ask.req and calls verdict_ask.  An answer now (ALLOW or DENY) is returned
 * and nothing is kept.  MGATE_PENDING: the ask joins its session's list of
 * pending asks (the session stays allocated meanwhile: one reference per
 * pending ask, even after its client left); mgate_resume(s, req, v) finds
 * it by pointer identity against that list only (never by reading through
 * `req`), and the rest is done from the loop, outside the handler's own
 * callback: a pass asks the next handler (which may answer or pend again),
 * then ask.done(ask) gives the owner the final ALLOW or DENY in
 * ask.verdict.  A session that is closing, or an ask its owner dropped,
 * asks no further handler: its owner gets MGATE_DENY and only frees what
 * it kept.
 */
#ifndef MGATE_SESSION_VERDICT_H
#define MGATE_SESSION_VERDICT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/loop.h"
#include "mgate.h"

enum ask_kind {
    ASK_CONNECT,   /* auth_connect with req.connect */
    ASK_PUBLISH,   /* auth_publish with req.publish */
    ASK_SUBSCRIBE, /* auth_subscribe with req.subscribe (a broker PUBLISH: one filter, its topic) */
    ASK_WILL,      /* auth_publish with `will`: a CONNECT's will, req.connect kept as allowed */
};

struct ask;
typedef void (*ask_done_fn)(struct ask *a);

struct ask {
    /* What the handler is given (and may rewrite): the owner fills it. */
    union {
        struct mgate_connect_req connect;
        struct mgate_publish_req publish;
        struct mgate_subscribe_req subscribe;
    } req;
    struct mgate_publish_req will; /* ASK_WILL */
    /* The engine's: */
    struct mgate_session *s;
    ask_done_fn done;      /* a late verdict's completion, to the owner */
    struct ask *next;      /* in the session's pending asks */
    uint64_t since;        /* loop ms when it first pended (kept through passes) */
    struct loop_defer resume;
    enum mgate_verdict verdict; /* final: MGATE_ALLOW or MGATE_DENY */
    uint8_t kind;          /* enum ask_kind */
    uint8_t step;          /* the handler of the chain that has it */
    bool pending;          /* in the session's list: the handler holds it */
    bool answered;         /* mgate_resume came, its completion is deferred */
    bool dropped;          /* its owner gave up on it: no further handler is asked */
};

/* verdict.c: the walk from a->step on, and keeping a pending ask. */
enum mgate_verdict verdict_walk(struct mgate_session *s, struct ask *a);
void verdict_pend(struct mgate_session *s, struct ask *a);

/* The ask whose request is `req` (by address: the one being asked, or a
 * pending one), or NULL. */
struct ask *verdict_find(const struct mgate_session *s, const void *req);

/* Ask the chain about a->req (or a->will) from its first handler: returns
 * MGATE_ALLOW or MGATE_DENY (also in a->verdict), or MGATE_PENDING, and
 * then done(a) follows once, from the loop, with the final verdict in
 * a->verdict.  done may ask again (a CONNECT's will after its CONNECT).
 * Inline: every packet a handler sees comes here. */
static inline enum mgate_verdict verdict_ask(struct mgate_session *s, struct ask *a, enum ask_kind kind,
                                             ask_done_fn done)
{
    a->kind = (uint8_t)kind;
    a->done = done;
    a->step = 0;
    enum mgate_verdict v = verdict_walk(s, a);
    if (v == MGATE_PENDING)
        verdict_pend(s, a);
    else
        a->verdict = v;
    return v;
}

/* The owner no longer wants the verdict of a pending ask (its request was
 * answered or its connection went away): the handler still holds it, so
 * done(a) still comes, with MGATE_DENY, and asks no further handler. */
static inline void verdict_drop(struct ask *a) { a->dropped = true; }

/* The request the handler was given: what mgate_resume matches. */
static inline const void *ask_request(const struct ask *a)
{
    return a->kind == ASK_WILL ? (const void *)&a->will : (const void *)&a->req;
}

#endif
