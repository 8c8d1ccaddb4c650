/*
 * The verdict engine (verdict.h): the one walk of the handler chain and the
 * one way a late verdict finds its request.
 */
#include "session/verdict.h"

#include "core/log.h"
#include "core/util.h"
#include "session/internal.h"

static enum mgate_verdict call(const struct mgate_handler *hd, struct mgate_session *s, struct ask *a)
{
    switch (a->kind) {
    case ASK_CONNECT:
        return hd->auth_connect ? hd->auth_connect(s, &a->req.connect) : MGATE_IGNORE;
    case ASK_PUBLISH:
        return hd->auth_publish ? hd->auth_publish(s, &a->req.publish) : MGATE_IGNORE;
    case ASK_WILL:
        return hd->auth_publish ? hd->auth_publish(s, &a->will) : MGATE_IGNORE;
    default:
        return hd->auth_subscribe ? hd->auth_subscribe(s, &a->req.subscribe) : MGATE_IGNORE;
    }
}

/* From handler a->step on, until one allows, denies or pends (a->step is
 * then that handler); every handler passing allows.  While the handlers
 * run the ask is s->asking, so one may even resume it from inside its
 * call (no walk nests in another on one session: a handler cannot make a
 * request of its session). */
enum mgate_verdict verdict_walk(struct mgate_session *s, struct ask *a)
{
    const struct session_params *p = s->p;
    if (s->identity_lost)
        return MGATE_DENY; /* the handlers would judge it as an anonymous client's */
    ASSERT(!s->asking);
    s->asking = a;
    enum mgate_verdict v = MGATE_ALLOW;
    for (; a->step < p->handler_count; a->step++) {
        const struct mgate_handler *hd = p->handlers[a->step];
        a->answered = false;
        v = call(hd, s, a);
        if (v == MGATE_IGNORE)
            continue;
        if (v != MGATE_ALLOW && v != MGATE_DENY && v != MGATE_PENDING) {
            /* Fail closed: a handler bug must not let a request through. */
            session_log(s, LOGL_ERROR, "handler %s returned %d, not a verdict; denied", hd->name, (int)v);
            v = MGATE_DENY;
        }
        break;
    }
    s->asking = NULL;
    return v == MGATE_IGNORE ? MGATE_ALLOW : v;
}

static void on_resume(struct loop *l, struct loop_defer *d);

/* The handler keeps the request: the session keeps it listed, and itself
 * allocated, until the verdict comes. */
void verdict_pend(struct mgate_session *s, struct ask *a)
{
    ASSERT(!a->pending);
    a->s = s;
    a->since = loop_now(s->loop);
    a->dropped = false;
    a->pending = true;
    a->next = s->asks;
    s->asks = a;
    s->refs++;
    if (a->answered) /* resumed from inside the handler's call */
        loop_defer(s->loop, &a->resume, on_resume);
}

static void unlist(struct mgate_session *s, struct ask *a)
{
    struct ask **pp = &s->asks;
    while (*pp != a) {
        ASSERT(*pp); /* a pending ask is always listed */
        pp = &(*pp)->next;
    }
    *pp = a->next;
    a->next = NULL;
    a->pending = false;
}

/* The late verdict, outside the handler's call: a pass goes on down the
 * chain (maybe pending again); an answer goes to the owner. */
static void on_resume(struct loop *l, struct loop_defer *d)
{
    (void)l;
    struct ask *a = container_of(d, struct ask, resume);
    struct mgate_session *s = a->s;
    ASSERT(a->pending && a->answered);
    enum mgate_verdict v = a->verdict;
    bool wanted = !a->dropped && !mgate_session_closed(s);
    if (v == MGATE_IGNORE && wanted) {
        a->step++;
        v = verdict_walk(s, a);
        if (v == MGATE_PENDING) { /* the next handler has it now: it stays listed */
            if (a->answered)
                loop_defer(s->loop, &a->resume, on_resume);
            return;
        }
    }
    unlist(s, a);
    a->verdict = v == MGATE_ALLOW && wanted ? MGATE_ALLOW : MGATE_DENY;
    a->done(a); /* may free a, or ask it again */
    session_unref(s);
}

struct ask *verdict_find(const struct mgate_session *s, const void *req)
{
    if (s->asking && ask_request(s->asking) == req)
        return s->asking;
    for (struct ask *a = s->asks; a; a = a->next)
        if (ask_request(a) == req)
            return a;
    return NULL;
}

void mgate_resume(mgate_session *s, const void *req, enum mgate_verdict v)
{
    struct ask *a = verdict_find(s, req);
    if (!a || a->answered) {
        log_msgf(LOGL_ERROR, "mgate_resume: no pending request %p on session %llu", req, (unsigned long long)s->id);
        return;
    }
    a->answered = true;
    a->verdict = v == MGATE_ALLOW || v == MGATE_IGNORE ? v : MGATE_DENY;
    /* Deferred: the handler may call us from inside its own callback.  From
     * inside its auth_* call, the walk defers it once that call returned
     * MGATE_PENDING (verdict_pend, on_resume), and ignores it otherwise. */
    if (a->pending && a != s->asking)
        loop_defer(s->loop, &a->resume, on_resume);
}
