/*
 * The `log` handler (the Go mGate's default): logs every call.  Its auth_*
 * calls pass (MGATE_IGNORE): alone it lets everything through, as the Go
 * mGate's does, and first in a chain ("log,acl") it logs every request
 * before the next handler decides.  Connections are logged at info;
 * per-message calls at debug, so a production log stays readable at the
 * default level.
 */
#include "core/log.h"
#include "handlers/handlers.h"

static void begin(struct logline *l, int level, const char *msg, const mgate_session *s)
{
    log_begin(l, level, msg);
    log_uint(l, "session", mgate_session_id(s));
    log_str(l, "listener", mgate_session_listener(s));
    log_str(l, "peer", mgate_session_peer(s));
    mgate_bytes id = mgate_session_client_id(s), user = mgate_session_username(s);
    log_bytes(l, "client_id", id.p, id.len);
    log_bytes(l, "username", user.p, user.len);
}

static enum mgate_verdict auth_connect(mgate_session *s, struct mgate_connect_req *req)
{
    struct logline l;
    if (log_begin(&l, LOGL_INFO, "auth_connect")) {
        log_uint(&l, "session", mgate_session_id(s));
        log_str(&l, "listener", mgate_session_listener(s));
        log_str(&l, "peer", mgate_session_peer(s));
        log_bytes(&l, "client_id", req->client_id.p, req->client_id.len);
        log_bytes(&l, "username", req->username.p, req->has_username ? req->username.len : 0);
        log_int(&l, "protocol", req->version);
        log_end(&l);
    }
    return MGATE_IGNORE; /* an observer: the next handler, if any, decides */
}

static enum mgate_verdict auth_publish(mgate_session *s, struct mgate_publish_req *req)
{
    struct logline l;
    if (log_enabled(LOGL_DEBUG)) {
        begin(&l, LOGL_DEBUG, req->will ? "auth_publish (will)" : "auth_publish", s);
        log_bytes(&l, "topic", req->topic.p, req->topic.len);
        log_uint(&l, "bytes", req->payload.len);
        log_int(&l, "qos", req->qos);
        log_end(&l);
    }
    return MGATE_IGNORE; /* an observer: the next handler, if any, decides */
}

static enum mgate_verdict auth_subscribe(mgate_session *s, struct mgate_subscribe_req *req)
{
    struct logline l;
    if (log_enabled(LOGL_DEBUG)) {
        begin(&l, LOGL_DEBUG, req->dir == MGATE_UP ? "auth_subscribe" : "auth_subscribe (delivery)", s);
        for (uint32_t i = 0; i < req->count && i < 8; i++)
            log_bytes(&l, "topic", req->filters[i].filter.p, req->filters[i].filter.len);
        log_uint(&l, "count", req->count);
        log_end(&l);
    }
    return MGATE_IGNORE; /* an observer: the next handler, if any, decides */
}

static void on_connect(mgate_session *s)
{
    struct logline l;
    if (log_enabled(LOGL_INFO)) {
        begin(&l, LOGL_INFO, "connect", s);
        log_int(&l, "protocol", mgate_session_version(s));
        log_end(&l);
    }
}

static void on_publish(mgate_session *s, const struct mgate_publish_req *req)
{
    struct logline l;
    if (log_enabled(LOGL_DEBUG)) {
        begin(&l, LOGL_DEBUG, "publish", s);
        log_bytes(&l, "topic", req->topic.p, req->topic.len);
        log_uint(&l, "bytes", req->payload.len);
        log_end(&l);
    }
}

static void on_subscribe(mgate_session *s, const struct mgate_subscribe_req *req)
{
    struct logline l;
    if (log_enabled(LOGL_DEBUG)) {
        begin(&l, LOGL_DEBUG, "subscribe", s);
        for (uint32_t i = 0; i < req->count && i < 8; i++)
            if (!req->filters[i].denied)
                log_bytes(&l, "topic", req->filters[i].filter.p, req->filters[i].filter.len);
        log_end(&l);
    }
}

static void on_unsubscribe(mgate_session *s, const struct mgate_unsubscribe_req *req)
{
    struct logline l;
    if (log_enabled(LOGL_DEBUG)) {
        begin(&l, LOGL_DEBUG, "unsubscribe", s);
        for (uint32_t i = 0; i < req->count && i < 8; i++)
            log_bytes(&l, "topic", req->topics[i].p, req->topics[i].len);
        log_end(&l);
    }
}

static void on_disconnect(mgate_session *s)
{
    struct logline l;
    if (log_enabled(LOGL_INFO)) {
        begin(&l, LOGL_INFO, "disconnect", s);
        log_end(&l);
    }
}

const struct mgate_handler mgate_log_handler = {
    .name = "log",
    .auth_connect = auth_connect,
    .auth_publish = auth_publish,
    .auth_subscribe = auth_subscribe,
    .connect = on_connect,
    .publish = on_publish,
    .subscribe = on_subscribe,
    .unsubscribe = on_unsubscribe,
    .disconnect = on_disconnect,
};

/* Allows everything and does nothing: the benchmark's baseline. */
const struct mgate_handler mgate_noop_handler = {.name = "noop"};
