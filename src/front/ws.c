#include "front/ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "front/front.h"
#include "front/http_util.h"
#include "net/tls.h"
#include "net/ws.h"

/* A WebSocket listener's own settings (session_params.front_settings). */
struct ws_settings {
    const char *path_prefix;     /* PATH_PREFIX: upgrades outside it are refused */
    const char *allowed_origins; /* ALLOWED_ORIGINS: "a,b" Origin values allowed; "": any */
    struct ws_pings pings;       /* WS_PING_INTERVAL, WS_PING_TIMEOUT */
};

/* A WebSocket broker's (session_params.broker_settings). */
struct ws_broker {
    const char *host; /* Host:, as SNI for wss */
    const char *path; /* TARGET_PATH */
    uint16_t port;
    struct ws_pings pings;
};

/* WS_PING_INTERVAL and WS_PING_TIMEOUT: on the client's WebSocket and on
 * the one mgate dials to a ws/wss broker. */
static struct ws_pings pings_of(const struct listener_config *lc)
{
    return (struct ws_pings){.interval_ms = lc->ws_ping_interval_ms, .timeout_ms = lc->ws_ping_timeout_ms};
}

/* "mqtt" (MQTT 3.1.1 and 5.0) and "mqttv3.1" (MQTT 3.1); a client that
 * offers none is upgraded without naming one. */
static const char *const mqtt_protocols[] = {"mqtt", "mqttv3.1", NULL};

/* A line a client can cause before its session has an identity: the
 * listener's budget on this worker bounds what a flood of them writes (the
 * count of lines left out rides on the next one). */
static bool listener_log_begin(struct loop *l, const struct session_params *p, struct logline *ll, int level,
                               const char *text)
{
    uint32_t left_out = 0;
    if (!log_enabled(level) ||
        (p->log_budget && !log_limit_take(p->log_budget, loop_now(l), LISTENER_LOG_BURST, &left_out)))
        return false;
    log_begin(ll, level, text);
    if (left_out)
        log_uint(ll, "listener_left_out", left_out);
    return true;
}

/* PATH_PREFIX, ALLOWED_ORIGINS and the subprotocol, by the HTTP listener's
 * rules (http_util.c). */
static void decide(const struct ws_settings *ws, const struct ws_head *h, struct ws_verdict *v)
{
    const char *rest, *why;
    size_t path_len = h->target.n;
    const char *q = memchr(h->target.p, '?', h->target.n);
    if (q)
        path_len = (size_t)(q - h->target.p);
    char mem[WS_MAX_HEAD + 1]; /* the path is inside the head; decoding never grows it */
    int st = http_path_check(h->target.p, path_len, ws->path_prefix, mem, &rest, &why);
    if (st)
        v->status = (unsigned)st, v->why = st == 404 ? "not found" : why;
    else if (!http_origin_allowed(ws->allowed_origins, h->origins, h->origin.p ? h->origin.p : "", h->origin.n))
        v->status = 403, v->why = "origin not allowed";
    else if (!(v->proto = ws_pick_protocol(h->protocol, mqtt_protocols)))
        v->status = 400, v->why = "no supported subprotocol (mqtt, mqttv3.1)";
}

/* The session's credentials, which the handler sees as the username and
 * password of a CONNECT without them (browsers cannot put credentials in
 * CONNECT easily): by the rule of every HTTP-based listener
 * (http_credentials): Basic credentials in the Authorization header, else
 * its token ("Bearer T" gives T, any other scheme is taken whole), else
 * the authorization query parameter.  Two that disagree are refused (400):
 * only one would be judged. */
static void take_credentials(struct mgate_session *s, const struct ws_head *h, struct ws_verdict *v)
{
    const char *q = memchr(h->target.p, '?', h->target.n);
    size_t qlen = q ? h->target.n - (size_t)(q + 1 - h->target.p) : 0;
    char mem[2 * WS_MAX_HEAD]; /* the header and the query are inside the head; decoding never grows them */
    struct http_cred cr;
    unsigned st = (unsigned)http_credentials(h->authorization.p, h->authorization.n, q ? q + 1 : NULL, qlen, true,
                                             mem, &cr, &v->why);
    if (st)
        v->status = st;
    else if (cr.has_user || cr.has_pass)
        session_set_credentials(s, cr.has_user ? cr.user : NULL, cr.user_len, cr.pass, cr.pass_len);
}

/* An upgrade we refuse gets an HTTP answer that says why, is counted in
 * mgate_http_responses_total and logged within the listener's budget. */
static void refuse(struct conn *c, const struct session_params *p, struct ws_verdict *v)
{
    struct mgate_session *s = c->owner;
    METRIC_INC(loop_metrics(c->loop)->http_responses[v->status / 100 % 6]);
    char text[320];
    snprintf(text, sizeof(text), "%s: WebSocket upgrade from %s refused (%u): %s", p->listener,
             mgate_session_peer(s), v->status, v->why);
    struct logline ll;
    if (listener_log_begin(c->loop, p, &ll, LOGL_INFO, text))
        log_end(&ll);
    session_refused_quietly(s);
    v->answer_len = http_error_answer(v->answer, v->answer_room, (int)v->status, v->why, "",
                                      "Connection: close\r\n", true);
}

static void check(struct conn *c, const struct ws_head *h, struct ws_verdict *v)
{
    struct mgate_session *s = c->owner;
    const struct session_params *p = session_params_of(s);
    if (!v->status)
        decide(p->front_settings, h, v);
    if (!v->status)
        take_credentials(s, h, v);
    if (v->status)
        refuse(c, p, v);
}

static const struct ws_server server = {.check = check};

static void ws_accept(struct loop *l, int fd, const struct sockaddr *peer, const struct session_params *p,
                      struct session_list *list)
{
    const struct ws_settings *ws = p->front_settings;
    struct conn *c = front_conn_accept(l, fd, p, list);
    if (!c)
        return;
    /* The session (and its CONNECT deadline, and its place in
     * MAX_CONNECTIONS) starts now: it bounds the TLS handshake and the
     * upgrade too. */
    if (ws_server_start(c, &server, ws->pings) < 0 || !session_start(l, c, peer, p, list)) {
        conn_close(c);
        front_accept_failed(l, p);
    }
}

/* Each client connecting while the broker refuses upgrades causes one. */
static void broker_failed(struct conn *c, const char *why)
{
    const struct session_params *p = session_params_of(c->owner);
    char text[320];
    snprintf(text, sizeof(text), "WebSocket broker: %s", why);
    struct logline ll;
    if (listener_log_begin(c->loop, p, &ll, LOGL_WARN, text))
        log_end(&ll);
}

static const struct ws_client client = {.failed = broker_failed};

static int ws_broker_layer(struct conn *c, const struct session_params *p)
{
    const struct ws_broker *b = p->broker_settings;
    return ws_client_start(c, &client, b->host, b->port, b->path, "mqtt", b->pings);
}

int ws_broker_prepare(const struct listener_config *lc, struct session_params *p, char *err, size_t errlen)
{
    struct ws_broker *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    bool wss = lc->target_protocol == TARGET_WSS; /* Host: names what TLS verified (TARGET_SERVER_NAME) */
    *b = (struct ws_broker){
        .host = wss && *lc->target_server_name ? lc->target_server_name : lc->target_host,
        .path = lc->target_path,
        .port = lc->target_port,
        .pings = pings_of(lc),
    };
    p->broker_layer = ws_broker_layer;
    p->broker_settings = b;
    return 0;
}

void ws_broker_free(struct session_params *p)
{
    ASSERT(!p->broker_settings || p->broker_layer == ws_broker_layer);
    free((void *)p->broker_settings);
    p->broker_settings = NULL;
    p->broker_layer = NULL;
}

/* ---- the front end ------------------------------------------------------ */

static int ws_prepare(const struct listener_config *lc, struct session_params *p, char *err, size_t errlen)
{
    if (mqtt_target_prepare(lc, p, err, errlen) < 0)
        return -1;
    struct ws_settings *ws = calloc(1, sizeof(*ws));
    if (!ws) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *ws = (struct ws_settings){
        .path_prefix = lc->path_prefix, .allowed_origins = lc->allowed_origins, .pings = pings_of(lc)};
    p->front_settings = ws;
    return 0;
}

static void ws_free(struct session_params *p)
{
    mqtt_target_free(p);
    free((void *)p->front_settings);
    p->front_settings = NULL;
}

const struct front_ops front_ws = {
    .name = "MQTT over WebSocket",
    .prepare = ws_prepare,
    .accept = ws_accept,
    .free = ws_free,
};
