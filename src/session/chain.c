/*
 * The handler chain (MGATE_HANDLER=a,b,c; the rules are in mgate.h): every
 * auth_* request goes to the handlers in order until one allows or denies,
 * now or later; a pass (MGATE_IGNORE, or no callback) goes on to the next,
 * and a request every handler passed is allowed.  The hooks that report a
 * forwarded packet go to every handler.
 */
#include "core/log.h"
#include "session/internal.h"

static enum mgate_verdict ask_one(const struct mgate_handler *hd, struct mgate_session *s, struct held *h)
{
    if (h->type == MQTT_CONNECT && !h->will_stage)
        return hd->auth_connect ? hd->auth_connect(s, &h->req.connect) : MGATE_IGNORE;
    if (h->type == MQTT_CONNECT)
        return hd->auth_publish ? hd->auth_publish(s, &h->will) : MGATE_IGNORE;
    if (h->type == MQTT_PUBLISH && h->dir == MGATE_UP)
        return hd->auth_publish ? hd->auth_publish(s, &h->req.publish) : MGATE_IGNORE;
    /* SUBSCRIBE, and a broker's PUBLISH (checked as a subscription to its topic) */
    return hd->auth_subscribe ? hd->auth_subscribe(s, &h->req.subscribe) : MGATE_IGNORE;
}

static enum mgate_verdict ask_from_step(struct mgate_session *s, struct held *h)
{
    const struct session_params *p = s->p;
    for (; h->step < p->handler_count; h->step++) {
        const struct mgate_handler *hd = p->handlers[h->step];
        enum mgate_verdict v = ask_one(hd, s, h);
        switch (v) {
        case MGATE_IGNORE:
            continue;
        case MGATE_ALLOW:
        case MGATE_DENY:
        case MGATE_PENDING:
            return v;
        default:
            /* Fail closed: a handler bug must not let a packet through. */
            mgate_log(LOGL_ERROR, s, "handler %s returned %d, not a verdict; denied", hd->name, (int)v);
            return MGATE_DENY;
        }
    }
    return MGATE_ALLOW;
}

/* The will is a publish the client causes: it is judged with the identity
 * auth_connect settled on (saved first, so handlers read it through the
 * session's accessors), from the first handler of the chain on. */
static bool begin_will_stage(struct mgate_session *s, struct held *h)
{
    if (h->type != MQTT_CONNECT || h->will_stage || !h->pkt.connect.has_will)
        return false;
    const struct mqtt_connect *c = &h->pkt.connect;
    h->will_lost = session_save_credentials(s, &h->req.connect) < 0;
    h->will_stage = true;
    h->step = 0;
    h->will = (struct mgate_publish_req){
        .dir = MGATE_UP,
        .topic = to_bytes(c->will_topic),
        .payload = to_bytes(c->will_payload),
        .qos = c->will_qos,
        .retain = c->will_retain,
        .will = true,
        .will_properties = {c->will_props.raw, c->will_props.raw_len},
    };
    return true;
}

/* Out of memory saving the identity (the session is closing): the will
 * would be judged as an anonymous client's, so it is refused instead. */
static enum mgate_verdict ask_will(struct mgate_session *s, struct held *h)
{
    if (!h->will_lost)
        return ask_from_step(s, h);
    h->will.reason = MGATE_REASON_SERVER_BUSY;
    return MGATE_DENY;
}

enum mgate_verdict chain_ask(struct mgate_session *s, struct held *h)
{
    enum mgate_verdict v = ask_from_step(s, h);
    if (v == MGATE_ALLOW && begin_will_stage(s, h))
        v = ask_will(s, h);
    return v;
}

enum mgate_verdict chain_resume(struct mgate_session *s, struct held *h)
{
    h->answered = false; /* in case the request is asked again */
    if (h->verdict == MGATE_IGNORE) {
        h->step++;
        return chain_ask(s, h);
    }
    if (h->verdict == MGATE_ALLOW && begin_will_stage(s, h))
        return ask_will(s, h);
    return h->verdict;
}

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
        if (s->p->handlers[i]->unsubscribe)
            return true;
    return false;
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
