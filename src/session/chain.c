/*
 * The handler chain (MGATE_HANDLER=a,b,c; the rules are in mgate.h): the
 * hooks that report a forwarded packet go to every handler, and so does
 * rewrite_unsubscribe, which has no verdict.  The auth_*
 * requests go through the verdict engine (verdict.c), which walks the
 * chain until one handler allows or denies, now or later.
 */
#include "session/internal.h"

void chain_connect(struct mgate_session *s)
{
    for (unsigned i = 0; i < s->p->handler_count; i++)
        if (s->p->handlers[i]->connect)
            s->p->handlers[i]->connect(s);
}

void chain_publish(struct mgate_session *s, const struct mgate_publish_req *req)
{
    for (unsigned i = 0; i < s->p->handler_count; i++)
        if (s->p->handlers[i]->publish)
            s->p->handlers[i]->publish(s, req);
}

void chain_subscribe(struct mgate_session *s, const struct mgate_subscribe_req *req)
{
    for (unsigned i = 0; i < s->p->handler_count; i++)
        if (s->p->handlers[i]->subscribe)
            s->p->handlers[i]->subscribe(s, req);
}

bool chain_wants_unsubscribe(const struct mgate_session *s)
{
    for (unsigned i = 0; i < s->p->handler_count; i++)
        if (s->p->handlers[i]->unsubscribe || s->p->handlers[i]->rewrite_unsubscribe)
            return true;
    return false;
}

void chain_rewrite_unsubscribe(struct mgate_session *s, struct mgate_unsubscribe_req *req)
{
    for (unsigned i = 0; i < s->p->handler_count; i++)
        if (s->p->handlers[i]->rewrite_unsubscribe)
            s->p->handlers[i]->rewrite_unsubscribe(s, req);
}

void chain_unsubscribe(struct mgate_session *s, const struct mgate_unsubscribe_req *req)
{
    for (unsigned i = 0; i < s->p->handler_count; i++)
        if (s->p->handlers[i]->unsubscribe)
            s->p->handlers[i]->unsubscribe(s, req);
}

void chain_disconnect(struct mgate_session *s)
{
    for (unsigned i = 0; i < s->p->handler_count; i++)
        if (s->p->handlers[i]->disconnect)
            s->p->handlers[i]->disconnect(s);
}
