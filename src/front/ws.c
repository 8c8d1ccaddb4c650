#include "front/ws.h"

#include <errno.h>
#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "front/http_util.h"
#include "front/uvloop.h"
#include "net/conn.h"

/* One libwebsockets write per "writeable" callback, from a copy with the
 * headroom lws needs in front of the payload. */
#define WS_WRITE_CHUNK (16 * 1024)
/* lws keeps a receive buffer of this size for every WebSocket: frames
 * larger than it arrive in pieces, which the session joins anyway. */
#define WS_RX_BUFFER 1024
/* lws_write()'s opcode for a close frame: 4.1.6 keeps its name private
 * (its header skips the value), and uses it the same way itself. */
#define WS_WRITE_CLOSE ((enum lws_write_protocol)4)
/* Upgrade request headers, all of them: browsers send about 1 KiB. */
#define WS_MAX_UPGRADE 4096

struct ws_front;
/* One lws context per listener, each with its one vhost: lws re-picks a
 * connection's vhost from its Host header among the vhosts of a context
 * (falling back to the first on the same "port", and ours all have none),
 * which would let a client of one listener use another's settings. */
struct ws_listener {
    struct lws_context *ctx;
    struct lws_vhost *vh;
    SSL_CTX *client_tls; /* wss brokers: our reference, lws borrows it */
    lws_retry_bo_t idle; /* WS_PING_*: lws keeps a pointer */
    bool verify_broker;
    unsigned timeout_secs;
    struct ws_front *front;
    const struct session_params *p;
    struct session_list *list;
};

struct ws_front {
    struct loop *l;
    uv_loop_t *uv;
    struct ws_listener ls[8];
    unsigned nls;
    uint8_t out[LWS_PRE + WS_WRITE_CHUNK];
};

/* What an adopted socket carries until lws destroys it (opaque user data):
 * who is really at the other end (behind the TLS bridge or a PROXY header),
 * and its place in MAX_CONNECTIONS while it upgrades (the session counts it
 * from then on). */
struct ws_adopted {
    bool has_origin;
    struct ws_origin origin;
    uint32_t *upgrading; /* the listener's open_sessions, while counted here */
};

static const struct ws_origin *origin_of(struct lws *wsi)
{
    const struct ws_adopted *ad = lws_get_opaque_user_data(wsi);
    return ad && ad->has_origin ? &ad->origin : NULL;
}

/* The upgrade is over (a session takes the count, or the socket is gone). */
static void upgrade_uncounted(struct ws_adopted *ad)
{
    if (ad && ad->upgrading) {
        __atomic_fetch_sub(ad->upgrading, 1, __ATOMIC_RELAXED);
        ad->upgrading = NULL;
    }
}

/* Per WebSocket: lws allocates it for accepted ones (per_session_data_size),
 * we do for the ones we dial (ci.userdata). */
struct ws_conn {
    struct conn *c;
    struct ws_front *front;
    bool can_write; /* inside LWS_CALLBACK_SERVER_WRITEABLE, nothing written yet */
    bool rx_off;    /* lws_rx_flow_control(0) is in force */
    bool closing;   /* our side ended it: close at the next writeable */
    bool client;    /* we dialled it (a WebSocket broker): we allocated this, we free it */
    uint8_t end;    /* enum conn_end: the close code we send */
    struct lws *wsi;
};

static struct ws_front **slot(struct loop *l) { return (struct ws_front **)loop_slot(l, LOOP_SLOT_WS); }

/* ---- the transport under struct conn ------------------------------------ */

/* conn->transport is our struct ws_conn, which knows its wsi: the same
 * lookup whether lws allocated it (accepted) or we did (dialled). */
static struct ws_conn *wc_of(const struct conn *c) { return c->transport; }

static ssize_t ws_read(struct conn *c, void *buf, size_t len)
{
    (void)c, (void)buf, (void)len;
    errno = EAGAIN; /* input arrives by conn_deliver */
    return -1;
}

static ssize_t ws_writev(struct conn *c, const struct iovec *iov, int n)
{
    (void)n;
    struct ws_conn *wc = wc_of(c);
    if (!wc) {
        errno = EPIPE;
        return -1;
    }
    if (!wc->can_write) {
        errno = EAGAIN; /* conn keeps it and asks for EPOLLOUT: see ws_interest */
        return -1;
    }
    size_t len = iov[0].iov_len < WS_WRITE_CHUNK ? iov[0].iov_len : WS_WRITE_CHUNK;
    memcpy(wc->front->out + LWS_PRE, iov[0].iov_base, len);
    wc->can_write = false;
    int wr = lws_write(wc->wsi, wc->front->out + LWS_PRE, len, LWS_WRITE_BINARY);
    if (wr < (int)len) {
        errno = EPIPE;
        return -1;
    }
    return (ssize_t)len;
}

static void ws_interest(struct conn *c, uint32_t events)
{
    struct ws_conn *wc = wc_of(c);
    if (!wc)
        return;
    bool rx_off = !(events & EPOLLIN);
    if (rx_off != wc->rx_off) {
        wc->rx_off = rx_off;
        lws_rx_flow_control(wc->wsi, rx_off ? 0 : 1);
        uvloop_touch(c->loop);
    }
    if (events & EPOLLOUT) {
        lws_callback_on_writable(wc->wsi);
        uvloop_touch(c->loop);
    }
}

static void ws_close(struct conn *c)
{
    struct ws_conn *wc = wc_of(c);
    if (!wc)
        return;
    wc->c = NULL;
    wc->closing = true;
    wc->end = c->end;
    if (wc->wsi)
        lws_callback_on_writable(wc->wsi);
    uvloop_touch(c->loop);
    c->transport = NULL;
}

static const struct conn_ops ws_ops = {ws_read, ws_writev, ws_close, NULL, ws_interest};

/* ---- libwebsockets callbacks -------------------------------------------- */

static struct ws_listener *listener_of(struct lws *wsi)
{
    struct lws_vhost *vh = lws_get_vhost(wsi);
    return vh ? lws_get_vhost_user(vh) : NULL;
}

/* PATH_PREFIX, segment-aware as on the HTTP listener: "/mqtt" admits
 * "/mqtt" and "/mqtt/x", not "/mqttx". */
static bool path_allowed(struct lws *wsi, const struct ws_listener *wl)
{
    const char *prefix = wl->p->path_prefix ? wl->p->path_prefix : "";
    if (!*prefix)
        return true;
    char uri[WS_MAX_UPGRADE];
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) < 0)
        return false;
    const char *rest;
    return http_path_under(uri, strcspn(uri, "?"), prefix, &rest);
}

/* "Authorization: Bearer T" (or any other scheme, whole) becomes the
 * session's token: browsers cannot put credentials in CONNECT easily. */
static void take_token(struct lws *wsi, struct mgate_session *s)
{
    char auth[1024];
    int n = lws_hdr_copy(wsi, auth, sizeof(auth), WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n <= 0)
        return;
    const char *tok = auth;
    if (!strncasecmp(tok, "Bearer ", 7))
        tok += 7;
    session_set_token(s, tok, strlen(tok));
}

/* ALLOWED_ORIGINS, the HTTP listener's rule (http_origin_allowed): lws
 * joins repeated Origin headers into one value, and keeps an empty one as a
 * fragment of length 0 (absent: -1). */
static bool origin_allowed(struct lws *wsi, const struct ws_listener *wl)
{
    char origin[WS_MAX_UPGRADE], probe[1];
    int n = lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN);
    bool present = n > 0 || lws_hdr_copy_fragment(wsi, probe, sizeof(probe), WSI_TOKEN_ORIGIN, 0) == 0;
    return http_origin_allowed(wl->p->allowed_origins, present, origin, n > 0 ? (size_t)n : 0);
}

/* The subprotocols we speak, as a client may list them: "mqtt, foo". */
static bool subprotocol_ok(struct lws *wsi)
{
    char list[256];
    if (!lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL))
        return true; /* none asked for: the first, "mqtt" */
    if (lws_hdr_copy(wsi, list, sizeof(list), WSI_TOKEN_PROTOCOL) <= 0)
        return false;
    for (char *save = NULL, *p = strtok_r(list, ", ", &save); p; p = strtok_r(NULL, ", ", &save))
        if (!strcmp(p, "mqtt") || !strcmp(p, "mqttv3.1"))
            return true;
    return false;
}

/* A line a client can cause before (or outside) any session: the
 * listener's budget on this worker bounds what a flood of them writes (the
 * count of lines left out rides on the next one); metrics count them all. */
static bool listener_log_begin(const struct ws_listener *wl, struct logline *l, int level, const char *text)
{
    uint32_t left_out = 0;
    struct log_limit *budget = wl ? wl->p->log_budget : NULL; /* a wsi without our vhost: none */
    if (!log_enabled(level) ||
        (budget && !log_limit_take(budget, loop_now(wl->front->l), LISTENER_LOG_BURST, &left_out)))
        return false;
    log_begin(l, level, text);
    if (left_out)
        log_uint(l, "listener_left_out", left_out);
    return true;
}

static void log_refusal(struct lws *wsi, const struct ws_listener *wl, unsigned status, const char *why)
{
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    const struct ws_origin *bridged = origin_of(wsi);
    char addr[64] = "?", text[320];
    if (bridged)
        sockaddr_format((const struct sockaddr *)&bridged->peer, addr, sizeof(addr));
    else if (getpeername(lws_get_socket_fd(wsi), (struct sockaddr *)&peer, &plen) == 0)
        sockaddr_format((const struct sockaddr *)&peer, addr, sizeof(addr));
    snprintf(text, sizeof(text), "%s: WebSocket upgrade from %s refused (%u): %s", wl->p->listener, addr, status,
             why);
    struct logline l;
    if (listener_log_begin(wl, &l, LOGL_INFO, text))
        log_end(&l);
}

/* An upgrade we refuse gets an HTTP answer that says why, not a hang-up. */
static int confirm_upgrade(struct lws *wsi, const char *what)
{
    struct ws_listener *wl = listener_of(wsi);
    unsigned status = 0;
    const char *why = NULL;
    if (!what || strcmp(what, "websocket"))
        status = HTTP_STATUS_BAD_REQUEST, why = "only WebSocket upgrades here";
    else if (!path_allowed(wsi, wl))
        status = HTTP_STATUS_NOT_FOUND, why = "not found";
    else if (!origin_allowed(wsi, wl))
        status = HTTP_STATUS_FORBIDDEN, why = "origin not allowed";
    else if (!subprotocol_ok(wsi))
        status = HTTP_STATUS_BAD_REQUEST, why = "no supported subprotocol (mqtt, mqttv3.1)";
    if (!status)
        return 0;
    METRIC_INC(loop_metrics(wl->front->l)->http_responses[status / 100]);
    log_refusal(wsi, wl, status, why);
    lws_return_http_status(wsi, status, why);
    return -1;
}

static void established(struct lws *wsi, struct ws_conn *wc)
{
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    struct ws_listener *wl = listener_of(wsi);
    struct loop *l = wl->front->l;
    wc->front = wl->front;
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    const struct ws_origin *bridged = origin_of(wsi);
    upgrade_uncounted(lws_get_opaque_user_data(wsi));
    if (bridged)
        peer = bridged->peer;
    else if (getpeername(lws_get_socket_fd(wsi), (struct sockaddr *)&peer, &plen) < 0)
        memset(&peer, 0, sizeof(peer));
    wc->wsi = wsi;
    wc->c = conn_virtual(l, &ws_ops, wc, NULL, NULL);
    struct mgate_session *s = wc->c ? session_start(l, wc->c, (struct sockaddr *)&peer, wl->p, wl->list) : NULL;
    if (s) {
        take_token(wsi, s);
        if (bridged && bridged->has_cert)
            session_set_cert(s, &bridged->cert);
    }
    else {
        if (wc->c)
            conn_close(wc->c);
        wc->c = NULL;
        wc->closing = true;
        wc->end = wl->list->draining ? CONN_END_GOING_AWAY : CONN_END_INTERNAL;
        lws_callback_on_writable(wsi);
    }
}

/* RFC 6455 7.4.1 and IANA's registry (1014: bad gateway). */
static const struct {
    uint16_t code;
    const char *text;
} close_codes[] = {
    [CONN_END_NORMAL] = {1000, ""},
    [CONN_END_GOING_AWAY] = {1001, "shutting down"},
    [CONN_END_PROTOCOL] = {1002, "MQTT protocol error"},
    [CONN_END_TOO_BIG] = {1009, "MQTT packet too large"},
    [CONN_END_POLICY] = {1008, "refused"},
    [CONN_END_UPSTREAM] = {1014, "broker unavailable"},
    [CONN_END_INTERNAL] = {1011, "internal error"},
};

/* Our side ends it: a close frame with the code for why, then lws closes.
 * We write the frame ourselves: Debian's lws 4.1.6 is a _DEBUG build whose
 * libuv path closes every wsi twice, and the second close kills a socket
 * that lws_close_reason() left waiting to send its close frame. */
static int close_now(struct lws *wsi, struct ws_conn *wc)
{
    unsigned end = wc->end < sizeof(close_codes) / sizeof(close_codes[0]) ? wc->end : CONN_END_NORMAL;
    const char *text = close_codes[end].text;
    size_t n = strlen(text);
    uint8_t *frame = wc->front->out + LWS_PRE;
    frame[0] = (uint8_t)(close_codes[end].code >> 8);
    frame[1] = (uint8_t)close_codes[end].code;
    memcpy(frame + 2, text, n);
    lws_write(wsi, frame, 2 + n, WS_WRITE_CLOSE);
    return -1;
}

static int on_writeable(struct lws *wsi, struct ws_conn *wc)
{
    if (wc->closing || !wc->c)
        return close_now(wsi, wc);
    wc->can_write = true;
    conn_transport_writable(wc->c);
    wc->can_write = false;
    return wc->closing ? close_now(wsi, wc) : 0;
}

/* lws hands us its per-thread buffer, which the next lws call may reuse
 * (dialling a WebSocket broker writes its HTTP request there) while the
 * session still points into what it delivered: move it to the loop's
 * scratch buffer, where connections expect input to be. */
static void deliver(struct ws_conn *wc, const void *in, size_t len)
{
    if (!wc->c)
        return;
    size_t room;
    uint8_t *scratch = loop_scratch(wc->c->loop, &room);
    for (size_t off = 0; off < len && wc->c;) {
        size_t n = len - off < room ? len - off : room;
        memcpy(scratch, (const uint8_t *)in + off, n);
        conn_deliver(wc->c, scratch, n);
        off += n;
    }
}

static void transport_gone(struct ws_conn *wc, int err)
{
    if (wc && wc->c) {
        struct conn *c = wc->c;
        wc->c = NULL;
        conn_transport_closed(c, err);
    }
}

/* Each client connecting while the broker is down causes one of these. */
static void broker_failed(struct lws *wsi, const void *in)
{
    char text[320];
    struct logline l;
    snprintf(text, sizeof(text), "WebSocket broker: %s", in ? (const char *)in : "connection failed");
    if (listener_log_begin(listener_of(wsi), &l, LOGL_WARN, text))
        log_end(&l);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct ws_conn *wc = user;
    if (wc && reason != LWS_CALLBACK_WSI_DESTROY)
        wc->wsi = wsi;
    switch (reason) {
    case LWS_CALLBACK_HTTP: /* a plain HTTP request: nothing here but WebSockets */
        METRIC_INC(loop_metrics(listener_of(wsi)->front->l)->http_responses[4]);
        lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
        return -1;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return confirm_upgrade(wsi, in);
    case LWS_CALLBACK_ESTABLISHED:
        established(wsi, wc);
        return 0;
    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_CLIENT_RECEIVE:
        deliver(wc, in, len);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return on_writeable(wsi, wc);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2)
            log_msgf(LOGL_DEBUG, "WebSocket closed by the %s with code %u", wc && wc->client ? "broker" : "client",
                     ((const uint8_t *)in)[0] << 8 | ((const uint8_t *)in)[1]);
        return 0; /* lws answers with the same code */
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_CLIENT_CLOSED:
        transport_gone(wc, 0);
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!wc->c)
            return -1; /* the session gave up while we were connecting */
        conn_transport_connected(wc->c);
        return 0;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        broker_failed(wsi, in);
        transport_gone(wc, ECONNREFUSED);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        /* Some ends reach no callback above (a wss broker refusing our
         * certificate after the TLS 1.3 handshake, during the upgrade). */
        transport_gone(wc, ECONNRESET);
        if (wc && wc->client) {
            free(wc);
        } else {
            upgrade_uncounted(lws_get_opaque_user_data(wsi)); /* never upgraded */
            free(lws_get_opaque_user_data(wsi));
        }
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* "mqtt" (MQTT 3.1.1 and 5.0) and "mqttv3.1"; a client that names no
 * subprotocol gets the first. */
static const struct lws_protocols protocols[] = {
    {"mqtt", callback, sizeof(struct ws_conn), WS_RX_BUFFER, 0, NULL, 0},
    {"mqttv3.1", callback, sizeof(struct ws_conn), WS_RX_BUFFER, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- per worker ----------------------------------------------------------- */

static void lws_log(int level, const char *line)
{
    log_msgf(level == LLL_ERR ? LOGL_ERROR : LOGL_WARN, "libwebsockets: %.*s", (int)strcspn(line, "\n"), line);
}

static struct ws_front *front_get(struct loop *l)
{
    struct ws_front *f = *slot(l);
    if (f)
        return f;
    uv_loop_t *uv = uvloop_get(l);
    if (!uv || !(f = calloc(1, sizeof(*f))))
        return NULL;
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
    f->l = l;
    f->uv = uv;
    *slot(l) = f;
    return f;
}

static struct lws_context *context_new(struct ws_front *f)
{
    void *loops[1] = {f->uv};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.foreign_loops = loops;
    info.max_http_header_data = WS_MAX_UPGRADE; /* a larger upgrade request is refused */
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT; /* wss brokers */
    return lws_create_context(&info);
}

/* lws 4.1.6 with a foreign loop: the first destroy starts closing a
 * context's uv handles, whose close callbacks live in the evlib plugin;
 * they must run before the second destroy frees the context and unloads
 * the plugin. */
static void contexts_destroy(struct loop *l, struct ws_listener *ls, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        lws_context_destroy(ls[i].ctx);
    for (int i = 0; i < 8; i++)
        uvloop_kick(l);
    for (unsigned i = 0; i < n; i++) {
        lws_context_destroy(ls[i].ctx);
        ls[i].ctx = NULL;
    }
}

static struct ws_listener *listener_get(struct ws_front *f, const struct session_params *p, struct session_list *list)
{
    for (unsigned i = 0; i < f->nls; i++)
        if (f->ls[i].p == p)
            return &f->ls[i];
    if (f->nls == sizeof(f->ls) / sizeof(f->ls[0]))
        return NULL;
    struct ws_listener *wl = &f->ls[f->nls];
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = protocols;
    info.vhost_name = p->listener;
    info.user = wl;
    /* the upgrade must be done within the CONNECT deadline the session arms after it */
    wl->timeout_secs = p->connect_timeout_ms >= 2000 ? p->connect_timeout_ms / 1000 : 1;
    info.timeout_secs = wl->timeout_secs;
    if (p->ws_ping_interval_ms) { /* lws counts whole seconds; a pong (or the upgrade) resets the count */
        unsigned ping = (p->ws_ping_interval_ms + 999) / 1000, wait = (p->ws_ping_timeout_ms + 999) / 1000;
        wl->idle.secs_since_valid_ping = (uint16_t)ping;
        wl->idle.secs_since_valid_hangup = (uint16_t)(ping + wait);
        info.retry_and_idle_policy = &wl->idle;
    }
    if (p->upstream_tls && p->dial) { /* a wss:// broker: lws dials with our TLS client settings */
        wl->client_tls = tls_client_ssl_ctx(p->upstream_tls, &wl->verify_broker);
        info.provided_client_ssl_ctx = wl->client_tls;
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    }
    wl->p = p;
    wl->list = list;
    wl->front = f;
    if (!(wl->ctx = context_new(f)) || !(wl->vh = lws_create_vhost(wl->ctx, &info))) {
        SSL_CTX_free(wl->client_tls);
        if (wl->ctx)
            contexts_destroy(f->l, wl, 1);
        memset(wl, 0, sizeof(*wl));
        return NULL;
    }
    f->nls++;
    return wl;
}

void ws_accept(struct loop *l, int fd, const struct session_params *p, struct session_list *list)
{
    ws_accept_peer(l, fd, NULL, p, list);
}

void ws_accept_peer(struct loop *l, int fd, const struct ws_origin *origin, const struct session_params *p,
                    struct session_list *list)
{
    struct ws_front *f = list->draining ? NULL : front_get(l);
    struct ws_listener *wl = f ? listener_get(f, p, list) : NULL;
    struct lws *wsi = wl ? lws_adopt_socket_vhost(wl->vh, fd) : NULL;
    if (!wsi) {
        if (!wl)
            close(fd); /* adopting closes it on failure */
        return;
    }
    /* behind a TLS bridge the socket's peer is the bridge, not the client;
     * and until the upgrade no session counts it in MAX_CONNECTIONS */
    struct ws_adopted *ad = malloc(sizeof(*ad));
    if (ad) {
        ad->has_origin = origin != NULL;
        if (origin)
            ad->origin = *origin;
        ad->upgrading = p->open_sessions;
        if (ad->upgrading)
            __atomic_fetch_add(ad->upgrading, 1, __ATOMIC_RELAXED);
    }
    lws_set_opaque_user_data(wsi, ad);
    /* The upgrade must be done within CONNECT_TIMEOUT (then the session's own
     * CONNECT deadline takes over): lws sets no deadline on adopted sockets. */
    lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_KEEPALIVE_IDLE, (int)wl->timeout_secs);
    uvloop_kick(l);
}

/* ---- a WebSocket broker (TARGET_PROTOCOL ws, wss) ------------------------ */

struct conn *ws_dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner)
{
    struct ws_front *f = front_get(l);
    struct ws_listener *wl = f ? listener_get(f, p, NULL) : NULL;
    struct ws_conn *wc = wl ? calloc(1, sizeof(*wc)) : NULL;
    struct conn *c = wc ? conn_virtual(l, &ws_ops, NULL, cbs, owner) : NULL;
    if (!c) {
        free(wc);
        return NULL;
    }
    c->state = CONN_CONNECTING; /* writes queue until the upgrade is done */
    wc->c = c;
    wc->front = f;
    wc->client = true;
    struct lws *wsi = NULL;
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.context = wl->ctx;
    ci.vhost = wl->vh;
    ci.address = p->target_host;
    ci.port = p->target_port;
    ci.path = p->target_path && *p->target_path ? p->target_path : "/";
    ci.host = p->upstream_tls ? p->target_server_name : p->target_host; /* Host:, SNI, the name verified */
    ci.origin = ci.host;
    if (wl->client_tls)
        ci.ssl_connection = LCCSCF_USE_SSL | (wl->verify_broker ? 0
                                                                : LCCSCF_ALLOW_SELFSIGNED | LCCSCF_ALLOW_INSECURE |
                                                                      LCCSCF_ALLOW_EXPIRED |
                                                                      LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK);
    ci.protocol = "mqtt";
    ci.local_protocol_name = "mqtt";
    ci.userdata = wc;
    ci.pwsi = &wsi;
    c->transport = wc;
    wc->wsi = lws_client_connect_via_info(&ci);
    if (!wc->wsi) { /* lws reported it (CONNECTION_ERROR) or will not: either way it is over */
        if (wc->c) {
            wc->c = NULL;
            conn_close(c);
            free(wc);
        }
        return NULL;
    }
    uvloop_kick(l);
    return c;
}

void ws_loop_free(struct loop *l)
{
    struct ws_front *f = *slot(l);
    if (f) {
        /* Sessions closed at shutdown left their close frames (1001) to the
         * next writeable callbacks: let them run before lws is torn down. */
        for (int i = 0; i < 4; i++)
            uvloop_kick(l);
        contexts_destroy(l, f->ls, f->nls);
        for (unsigned i = 0; i < f->nls; i++)
            SSL_CTX_free(f->ls[i].client_tls);
        free(f);
        *slot(l) = NULL;
    }
    uvloop_free(l);
}
