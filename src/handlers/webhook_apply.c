/*
 * An allowed answer's modifiers carried into the request being judged
 * (mgate.h's rewriting rules: new bytes in mgate_session_alloc memory,
 * which lives until the packet is forwarded).  webhook_json.c checked
 * their shape; what only the session can tell (a mount point it takes, a
 * time already past, memory) is checked here.  Anything that cannot be
 * applied denies the request, logged within the session's budget with
 * the field's name: a rewrite half done would forward something nobody
 * allowed.
 */
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "handlers/webhook.h"
#include "mqtt/mqtt.h"
#include "session/session.h"

static enum wh_result refuse(mgate_session *s, const char *field, const char *why)
{
    session_log(s, LOGL_WARN, "http: the webhook's modifier \"%s\" %s: denied", field, why);
    return WH_DENY;
}

/* A copy of b that lives as long as the request. */
static bool copy(mgate_session *s, mgate_bytes *b)
{
    if (!b->len)
        return true;
    uint8_t *p = mgate_session_alloc(s, b->len);
    if (!p)
        return false;
    memcpy(p, b->p, b->len);
    b->p = p;
    return true;
}

static enum wh_result apply_connect(mgate_session *s, struct mgate_connect_req *req, struct wh_answer *a)
{
    if ((a->has_client_id && !mqtt_utf8_valid(a->client_id.p, a->client_id.len)))
        return refuse(s, "client_id", "is not an MQTT string");
    if ((a->has_username && !mqtt_utf8_valid(a->username.p, a->username.len)))
        return refuse(s, "username", "is not an MQTT string");
    if (a->has_expire_at && a->expire_at <= (uint64_t)time(NULL))
        return refuse(s, "expire_at", "is past");
    if (a->has_mount_point && mgate_session_set_mount_point(s, a->mount_point) < 0)
        return refuse(s, "mount_point", "is not a mount point (a wildcard, U+0000, bad UTF-8) or no memory");
    if ((a->has_client_id && !copy(s, &a->client_id)) || (a->has_username && !copy(s, &a->username)))
        return refuse(s, "client_id", "cannot be kept: out of memory");
    if (a->has_client_id)
        req->client_id = a->client_id;
    if (a->has_username) {
        req->username = a->username;
        req->has_username = true;
    }
    if (a->has_expire_at) /* the earliest of every handler's wins */
        mgate_session_expire_at(s, a->expire_at);
    return WH_ALLOW;
}

/* Replaces the PUBLISH's user properties (mgate.h: `user` pointed at a new
 * array); 3.1.1 has no properties, so there it has nothing to change. */
static enum wh_result apply_user_properties(mgate_session *s, struct mgate_publish_req *req, struct wh_answer *a)
{
    if (mgate_session_version(s) != 5)
        return WH_ALLOW;
    struct mgate_properties *p = mgate_properties(s, req);
    struct mgate_user_property *u = p ? mgate_session_alloc(s, (a->user_count ? a->user_count : 1) * sizeof(*u)) : NULL;
    if (!u)
        return refuse(s, "user_properties", "cannot be kept: out of memory");
    for (uint32_t i = 0; i < a->user_count; i++) {
        u[i] = a->user[i];
        if (!mqtt_utf8_valid(u[i].name.p, u[i].name.len) || !mqtt_utf8_valid(u[i].value.p, u[i].value.len))
            return refuse(s, "user_properties", "holds a string that is not an MQTT string");
        if (!copy(s, &u[i].name) || !copy(s, &u[i].value))
            return refuse(s, "user_properties", "cannot be kept: out of memory");
    }
    p->user = u;
    p->user_count = a->user_count;
    return WH_ALLOW;
}

static enum wh_result apply_publish(mgate_session *s, struct mgate_publish_req *req, struct wh_answer *a)
{
    /* A will's QoS is any; a PUBLISH's may only go from 1 to 0 (mgate then
     * acknowledges it): raising it, or lowering 2, would leave a flow of
     * acknowledgements nobody answers (session/upstream.c). */
    if (a->qos >= 0 && !req->will && a->qos != req->qos && !(req->qos == 1 && a->qos == 0))
        return refuse(s, "qos", "can only lower a PUBLISH's QoS 1 to 0");
    if (a->has_user_properties && apply_user_properties(s, req, a) != WH_ALLOW)
        return WH_DENY;
    mgate_bytes payload = {a->payload, a->payload_len};
    if ((a->has_topic && !copy(s, &a->topic)) || (a->has_payload && !copy(s, &payload)))
        return refuse(s, a->has_topic ? "topic" : "payload", "cannot be kept: out of memory");
    if (a->has_topic)
        req->topic = a->topic;
    if (a->has_payload)
        req->payload = payload;
    if (a->qos >= 0)
        req->qos = (uint8_t)a->qos;
    if (a->retain >= 0)
        req->retain = a->retain != 0;
    return WH_ALLOW;
}

static enum wh_result apply_filter(mgate_session *s, struct mgate_filter *f, struct wh_answer *a)
{
    if (a->has_filter && !copy(s, &a->filter))
        return refuse(s, "topics[].topic", "cannot be kept: out of memory");
    if (a->has_filter)
        f->filter = a->filter;
    if (a->filter_qos >= 0)
        f->qos = (uint8_t)a->filter_qos;
    if (a->refuse) { /* this filter alone, with this code (v5; 3.1.1 gets 0x80) */
        f->denied = true;
        f->reason = a->refuse;
        return WH_DENY;
    }
    return WH_ALLOW;
}

enum wh_result wh_apply(mgate_session *s, enum wh_kind kind, void *req, uint32_t filter, struct wh_answer *a)
{
    if (a->bad)
        return refuse(s, a->bad, "is not valid");
    if (a->result != WH_ALLOW)
        return a->result;
    switch (kind) {
    case WH_CONNECT:
        return apply_connect(s, req, a);
    case WH_PUBLISH:
        return apply_publish(s, req, a);
    default:
        return apply_filter(s, &((struct mgate_subscribe_req *)req)->filters[filter], a);
    }
}
