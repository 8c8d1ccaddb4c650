/*
 * The WebSocket relay of the HTTP listener (http_ws.h): the policy between
 * two WebSockets of net/ws.c in message mode, the client's (the upgraded
 * HTTP connection: ws_server_open with our 101) and the target's (a client
 * upgrade with the client's request: ws_client_start_head).  The layer
 * does the RFC (framing, masking, fragments, pings, close handshakes,
 * 1002 and 1009); the relay shows each whole message to the handler
 * through the verdict engine, forwards or drops it, stops reading a leg
 * while the other's output is over its mark or its message waits for a
 * verdict, and maps endings to close codes.
 *
 * Phases: DIALING (TCP, then TLS, to the target), SHAKING (our upgrade
 * sent, its 101 checked by net/ws.c; on_target_101 answers the client),
 * OPEN, CLOSING (close frames sent, the legs given a linger time to end).
 * One timer per relay: TARGET_TIMEOUT until OPEN (504), then IDLE_TIMEOUT
 * since the last frame either way and REQUEST_TIMEOUT for a pending
 * verdict, then the linger.
 */
#include "front/http_ws.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "front/http.h"
#include "front/http_util.h"
#include "net/tls.h"
#include "net/ws.h"
#include "net/ws_frame.h"

#define WS_LINGER_MS 2000 /* a closing leg's time to end */

enum ws_phase { WS_DIALING, WS_SHAKING, WS_OPEN, WS_CLOSING };

/* A whole message shown to the handler, one at a time per leg and kept in
 * it (no allocation per message).  The handler holds the pointer until
 * mgate_resume (the session's verdict engine, session/verdict.h), so a
 * relay that ends with a verdict pending stays allocated (ending) until
 * that verdict comes. */
struct ws_msg {
    struct ask ask;             /* the request and its verdict */
    struct ws_leg *leg;
    struct mgate_filter filter; /* a message down: its topic */
};

struct ws_leg {
    struct conn *c;
    struct http_ws *w;
    struct ws_leg *peer;
    bool client;     /* the client's leg (messages up), or the target's */
    bool close_sent; /* our close went out: nothing more is sent */
    bool close_rcvd; /* it closed (or broke): nothing more is read */
    bool blocked;    /* the peer's output is over its bound */
    uint16_t broken; /* the close code net/ws.c ended it with (1002, 1009, 1011), for the log */
    uint8_t op;      /* the held message's opcode */
    uint8_t *held;   /* the message whose verdict is awaited (a copy), */
    size_t held_len;
    struct ws_msg msg_req;  /* what the handler is shown of the message */
    struct ws_msg *judged;  /* &msg_req while its verdict is awaited; the leg reads nothing meanwhile */
};

struct http_ws {
    struct loop *loop;
    struct mgate_session *s;
    const struct session_params *p;
    const struct http_settings *hs;
    struct ws_leg cl, tg;
    struct loop_timer timer;
    uint8_t phase; /* enum ws_phase */
    bool draining, ending;
    char *topic;   /* NULL: a bypass path, nothing is judged */
    size_t topic_len;
    char *request; /* the upgrade request for the target, until it is connected */
    size_t request_len;
    char *refused; /* why the target refused the upgrade, until the client is told */
    char client_accept[29];
    void (*ended)(void *ctx);
    void *ctx;
};

static void on_timer(struct loop *l, struct loop_timer *t);
static void rearm(struct http_ws *w);

static const char *leg_name(const struct ws_leg *leg) { return leg->client ? "client" : "target"; }

/* ---- ending --------------------------------------------------------------------------- */

static const struct conn_cbs quiet_cbs = {0};

static void leg_drop(struct ws_leg *leg)
{
    if (leg->c) {
        leg->c->cbs = &quiet_cbs;
        conn_close(leg->c);
        leg->c = NULL;
    }
}

static void relay_free(struct http_ws *w)
{
    ASSERT(!w->cl.msg_req.ask.pending && !w->tg.msg_req.ask.pending); /* the handler would hold freed memory */
    free(w->cl.held);
    free(w->tg.held);
    free(w->topic);
    free(w->request);
    free(w->refused);
    free(w);
}

/* Both legs are gone: the session ends now; the memory goes now, or with
 * the last pending verdict (on_verdict). */
static void relay_end(struct http_ws *w)
{
    if (w->ending)
        return;
    w->ending = true;
    loop_timer_stop(w->loop, &w->timer);
    leg_drop(&w->cl);
    leg_drop(&w->tg);
    void (*ended)(void *) = w->ended;
    void *ctx = w->ctx;
    if (w->cl.judged) /* the handler holds it: on_verdict frees the relay */
        verdict_drop(&w->cl.judged->ask);
    if (w->tg.judged)
        verdict_drop(&w->tg.judged->ask);
    if (!w->cl.judged && !w->tg.judged)
        relay_free(w);
    ended(ctx);
}

static void maybe_end(struct http_ws *w)
{
    if (!w->cl.c && !w->tg.c)
        relay_end(w);
}

/* Our close to a leg (once), with a payload as a close frame carries it;
 * the leg ends once it is written (net/ws.c), bounded by the linger. */
static void leg_close(struct ws_leg *leg, const uint8_t *payload, size_t n)
{
    if (!leg->c || leg->close_sent)
        return;
    leg->close_sent = true;
    (void)ws_close_with(leg->c, payload, n);
}

static void leg_close_code(struct ws_leg *leg, int code, const char *why)
{
    uint8_t pl[125];
    leg_close(leg, pl, wsf_close_payload(pl, code, why));
}

static void begin_closing(struct http_ws *w)
{
    if (w->phase == WS_CLOSING)
        return;
    w->phase = WS_CLOSING;
    loop_timer_start(w->loop, &w->timer, WS_LINGER_MS, on_timer);
}

/* Close the relay: each leg gets its code, then has the linger to end. */
static void shut(struct http_ws *w, int client_code, int target_code, const char *why)
{
    mgate_log(LOGL_INFO, w->s, "websocket closed: %s", why);
    begin_closing(w);
    leg_close_code(&w->cl, client_code, why);
    leg_close_code(&w->tg, target_code, why);
}

/* ---- the upgrade ------------------------------------------------------------------------- */

/* Refuse the client's upgrade (the target failed): an HTTP error, then close. */
static void fail_upgrade(struct http_ws *w, int status, const char *why)
{
    char out[1024];
    size_t n = http_error_answer(out, sizeof(out), status, why, "", "Connection: close\r\n", true);
    session_log(w->s, LOGL_WARN, "http %d: websocket upgrade: %s", status, why);
    METRIC_INC(loop_metrics(w->loop)->http_responses[status / 100]);
    leg_drop(&w->tg);
    begin_closing(w);
    if (w->cl.c) {
        conn_write(w->cl.c, out, n);
        conn_close_after_flush(w->cl.c);
    }
    maybe_end(w);
}

/* Whether a header line of the target's 101 (no CRLF) goes on to the
 * client: not hop-by-hop, not what the 101 of ours says itself. */
static bool passes_on(const char *line, size_t len)
{
    static const char *const dropped[] = {"connection", "upgrade", "keep-alive", "transfer-encoding",
                                          "content-length", "te", "trailer", "sec-websocket-accept", NULL};
    const char *colon = memchr(line, ':', len);
    if (!colon)
        return false;
    size_t nl = (size_t)(colon - line);
    for (const char *const *d = dropped; *d; d++)
        if (nl == strlen(*d) && !strncasecmp(line, *d, nl))
            return false;
    return true;
}

/* The client's 101 from the target's (net/ws.c checked it: head is a 101
 * with our key's accept, n bytes up to CRLF CRLF): our accept for the
 * client's key, and the target's other end-to-end headers (its
 * subprotocol, cookies). */
static char *client_101(const struct http_ws *w, const char *head, size_t n, size_t *outlen)
{
    size_t size = n + 256, o;
    char *out = malloc(size);
    if (!out)
        return NULL;
    o = (size_t)snprintf(out, size, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n", w->client_accept);
    const char *end = head + n, *line = memchr(head, '\n', n) + 1;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        size_t len = (size_t)(eol - line);
        if (len && line[len - 1] == '\r')
            len--;
        if (passes_on(line, len)) {
            memcpy(out + o, line, len);
            memcpy(out + o + len, "\r\n", 2);
            o += len + 2;
        }
        line = eol + 1;
    }
    memcpy(out + o, "\r\n", 2);
    *outlen = o + 2;
    return out;
}

static const struct ws_messages leg_messages;

/* The target's 101 (net/ws.c checked it): the client's goes out as the
 * start of its WebSocket, and the relay opens.  Called inside the target's
 * upgrade, which must not be closed here: a failure returns -1 and the
 * upgrade fails (leg_on_close). */
static int on_target_101(struct conn *c, const char *head, size_t len)
{
    struct ws_leg *leg = c->owner;
    struct http_ws *w = leg->w;
    if (w->draining) {
        errno = ESHUTDOWN;
        return -1;
    }
    size_t n;
    char *ok = client_101(w, head, len, &n);
    errno = ENOMEM;
    int rc = ok ? ws_server_open(w->cl.c, ok, n, (struct ws_pings){0}) : -1; /* ECONNRESET: the client left */
    free(ok);
    if (rc < 0 || ws_set_messages(w->cl.c, &leg_messages, w->hs->max_body) < 0)
        return -1;
    mgate_log(LOGL_INFO, w->s, "websocket open%s", w->topic ? "" : " (bypass: messages not checked)");
    w->phase = WS_OPEN;
    METRIC_INC(loop_metrics(w->loop)->ws_opened);
    rearm(w);
    ws_resume_read(w->cl.c); /* with what the client sent after its request */
    return 0;
}

/* The target refused the upgrade (why): the client's 502 says so. */
static void on_target_refused(struct conn *c, const char *why)
{
    struct ws_leg *leg = c->owner;
    free(leg->w->refused);
    leg->w->refused = strdup(why);
}

static const struct ws_client target_ws = {.failed = on_target_refused, .upgraded = on_target_101};

/* Connected to the target: TLS for https, then our upgrade (net/ws.c, with
 * the client's request and our key). */
static void on_target_connected(struct conn *c)
{
    struct ws_leg *leg = c->owner;
    struct http_ws *w = leg->w;
    if (w->hs->https && (!w->p->upstream_tls || tls_connect(c, w->p->upstream_tls, w->p->target_server_name) < 0)) {
        fail_upgrade(w, 502, "cannot start TLS with the target");
        return;
    }
    int rc = ws_client_start_head(c, &target_ws, w->request, w->request_len);
    free(w->request);
    w->request = NULL;
    if (rc < 0 || ws_set_messages(c, &leg_messages, w->hs->max_body) < 0) {
        fail_upgrade(w, 502, "out of memory");
        return;
    }
    w->phase = WS_SHAKING;
}

/* ---- messages ------------------------------------------------------------------------------ */

/* Read a leg again once nothing holds it: a verdict, the peer's output.
 * (net/ws.c pauses a leg whose own output is over its mark when a ping
 * comes, and does so again at the next one: a ping flood stays bounded.) */
static void resume_if_free(struct ws_leg *leg)
{
    if (leg->c && !leg->judged && !leg->close_rcvd && !leg->blocked)
        ws_resume_read(leg->c);
}

/* To the other leg, unless it is closing; reading stops while its output
 * is over the bound (on_drain resumes). */
static void pass_on(struct ws_leg *from, int op, const uint8_t *p, size_t n)
{
    struct ws_leg *to = from->peer;
    if (!to->c || to->close_sent)
        return;
    struct metrics *m = loop_metrics(from->w->loop);
    METRIC_INC(m->ws_messages[from->client ? MGATE_UP : MGATE_DOWN]);
    METRIC_ADD(m->ws_bytes[from->client ? MGATE_UP : MGATE_DOWN], n);
    (void)ws_send(to->c, op, p, n);
    if (to->c && conn_over_high_water(to->c) && !from->blocked) {
        from->blocked = true;
        METRIC_INC(m->backpressure_pauses[from->client ? MGATE_UP : MGATE_DOWN]);
        if (from->c)
            conn_pause_read(from->c);
    }
}

static void refused(struct ws_leg *leg)
{
    struct http_ws *w = leg->w;
    METRIC_INC(loop_metrics(w->loop)->publish_refused[leg->client ? MGATE_UP : MGATE_DOWN]);
    session_log(w->s, LOGL_INFO, "websocket: a message %s refused by the handler (%s); dropped",
                leg->client ? "up" : "down", leg->client ? "auth_publish" : "auth_subscribe");
}

/* The verdict on a message (p, n: the message as it came). */
static void decided(struct ws_msg *m, bool ok, int op, const uint8_t *p, size_t n)
{
    struct ws_leg *leg = m->leg;
    if (leg->client) {
        if (ok) {
            session_front_published(leg->w->s, &m->ask.req.publish);
            pass_on(leg, op, m->ask.req.publish.payload.p, m->ask.req.publish.payload.len); /* rewritten or not */
        }
    } else {
        ok = ok && !m->filter.denied;
        if (ok)
            pass_on(leg, op, p, n);
    }
    if (!ok)
        refused(leg);
}

static void on_verdict(struct ask *a);

/* The handler keeps the request past this call: the message is copied out
 * of the read (the payload it was shown is rebased onto the copy), and the
 * leg is not read until the verdict. */
static void hold(struct ws_leg *leg, int op, const uint8_t *p, size_t n)
{
    struct mgate_publish_req *pub = &leg->msg_req.ask.req.publish;
    leg->held = malloc(n ? n : 1);
    leg->held_len = n;
    leg->op = (uint8_t)op;
    if (leg->held)
        memcpy(leg->held, p, n);
    if (leg->client && pub->payload.p >= p && pub->payload.p <= p + n)
        pub->payload.p = leg->held ? leg->held + (pub->payload.p - p) : (const uint8_t *)"";
    if (!leg->held) {
        pub->payload.len = 0;
        shut(leg->w, 1011, 1011, "out of memory holding a message for its verdict");
    }
    leg->judged = &leg->msg_req;
    conn_pause_read(leg->c);
    rearm(leg->w);
}

/* A whole message from a leg. */
static void on_message(struct conn *c, int op, const uint8_t *p, size_t n)
{
    struct ws_leg *leg = c->owner;
    struct http_ws *w = leg->w;
    if (!leg->peer->c || leg->peer->close_sent || leg->close_sent) /* nobody to give it to */
        return;
    if (!w->topic) {
        pass_on(leg, op, p, n);
        return;
    }
    struct ws_msg *m = &leg->msg_req; /* fields set one by one: a memset of it was 8 % of the CPU */
    m->leg = leg;
    mgate_bytes topic = {(const uint8_t *)w->topic, (uint32_t)w->topic_len};
    if (leg->client) {
        m->ask.req.publish = (struct mgate_publish_req){
            .dir = MGATE_UP, .topic = topic, .payload = {n ? p : (const uint8_t *)"", (uint32_t)n}};
    } else {
        m->filter = (struct mgate_filter){.filter = topic};
        m->ask.req.subscribe = (struct mgate_subscribe_req){.dir = MGATE_DOWN, .filters = &m->filter, .count = 1};
    }
    enum mgate_verdict v = verdict_ask(w->s, &m->ask, leg->client ? ASK_PUBLISH : ASK_SUBSCRIBE, on_verdict);
    if (v != MGATE_PENDING)
        decided(m, v == MGATE_ALLOW, op, p, n);
    else
        hold(leg, op, p, n);
}

/* A late verdict (the engine asked past any pass). */
static void on_verdict(struct ask *a)
{
    struct ws_msg *m = container_of(a, struct ws_msg, ask);
    struct ws_leg *leg = m->leg;
    struct http_ws *w = leg->w;
    leg->judged = NULL;
    if (!w->ending)
        decided(m, a->verdict == MGATE_ALLOW, leg->op, leg->held, leg->held_len);
    free(leg->held);
    leg->held = NULL;
    if (w->ending) { /* the relay went away meanwhile */
        if (!w->cl.judged && !w->tg.judged)
            relay_free(w);
        return;
    }
    resume_if_free(leg);
}

/* A close from a leg (net/ws.c answers it): passed on. */
static void on_peer_close(struct conn *c, const uint8_t *pl, size_t n)
{
    struct ws_leg *leg = c->owner;
    int code = n >= 2 ? pl[0] << 8 | pl[1] : 1005;
    mgate_log(LOGL_INFO, leg->w->s, "websocket: the %s %s (%d%s%.*s)", leg_name(leg),
              leg->close_sent ? "answered the close" : "closed", code, n > 2 ? " " : "", n > 2 ? (int)n - 2 : 0,
              (const char *)pl + 2);
    leg->close_rcvd = true;
    leg->close_sent = true; /* net/ws.c answers it */
    begin_closing(leg->w);
    leg_close(leg->peer, pl, n);
}

/* net/ws.c ends a leg that broke the protocol or a limit: said in the log
 * when it closes (leg_on_close). */
static void on_broken(struct conn *c, int code)
{
    struct ws_leg *leg = c->owner;
    leg->broken = (uint16_t)code;
}

static const struct ws_messages leg_messages = {
    .on_message = on_message, .on_close = on_peer_close, .on_broken = on_broken};

/* ---- the legs' connections ------------------------------------------------------------------ */

static size_t leg_on_data(struct conn *c, const uint8_t *data, size_t len)
{
    (void)c, (void)data, (void)len;
    return 0; /* before the upgrade nothing is read; after it messages come (on_message) */
}

static void leg_on_drain(struct conn *c)
{
    struct ws_leg *leg = c->owner;
    if (!conn_over_high_water(c))
        resume_if_free(leg); /* a leg paused over its own output (pongs it does not read) */
    if (leg->peer->blocked) {
        leg->peer->blocked = false;
        resume_if_free(leg->peer);
    }
}

static void leg_on_close(struct conn *c, int err)
{
    struct ws_leg *leg = c->owner;
    struct http_ws *w = leg->w;
    leg->c = NULL;
    if (w->phase < WS_OPEN) {
        if (!leg->client && w->cl.c && w->cl.c->state != CONN_CLOSED) {
            char why[160];
            if (w->draining)
                snprintf(why, sizeof(why), "mgate is shutting down");
            else if (w->refused)
                snprintf(why, sizeof(why), "the target refused the upgrade (%s)", w->refused);
            else
                snprintf(why, sizeof(why), "the target cannot be reached (%s)",
                         err == EPROTO ? "TLS failure" : err ? strerror(err) : "it closed the connection");
            fail_upgrade(w, w->draining ? 503 : 502, why);
            return;
        }
        leg_drop(&w->tg); /* the client left before the target answered */
    } else if (!leg->close_rcvd) {
        if (err == EBADMSG)
            session_log(w->s, LOGL_INFO, "websocket: the %s %s; closed with %u", leg_name(leg),
                        leg->broken == WSF_CLOSE_TOO_BIG ? "sent a message over MAX_BODY_SIZE"
                        : leg->broken == 1011            ? "sent a message that could not be held (out of memory)"
                                                         : "broke the WebSocket protocol",
                        leg->broken);
        else if (w->phase == WS_OPEN)
            mgate_log(LOGL_INFO, w->s, "websocket: the %s went away without a close", leg_name(leg));
    }
    leg->close_rcvd = true;
    if (leg->peer->c) {
        begin_closing(w);
        if (err == EBADMSG)
            leg_close_code(leg->peer, 1001, "the other side failed");
        else
            leg_close_code(leg->peer, 1001, "the other side went away");
    }
    maybe_end(w);
}

static const struct conn_cbs leg_cbs = {
    .on_data = leg_on_data, .on_drain = leg_on_drain, .on_connected = on_target_connected, .on_close = leg_on_close};

/* ---- the timer ------------------------------------------------------------------------------------ */

/* The last frame either way. */
static uint64_t last_active(const struct http_ws *w)
{
    uint64_t a = w->cl.c ? ws_last_read(w->cl.c) : 0, b = w->tg.c ? ws_last_read(w->tg.c) : 0;
    return a > b ? a : b;
}

static void rearm(struct http_ws *w)
{
    if (w->phase != WS_OPEN)
        return;
    uint64_t now = loop_now(w->loop), due = last_active(w) + w->hs->idle_timeout_ms;
    const struct ws_leg *legs[2] = {&w->cl, &w->tg};
    for (int i = 0; i < 2; i++)
        if (legs[i]->judged && legs[i]->judged->ask.since + w->hs->request_timeout_ms < due)
            due = legs[i]->judged->ask.since + w->hs->request_timeout_ms;
    loop_timer_start(w->loop, &w->timer, due > now ? (uint32_t)(due - now) : 0, on_timer);
}

static void on_timer(struct loop *l, struct loop_timer *t)
{
    struct http_ws *w = container_of(t, struct http_ws, timer);
    uint64_t now = loop_now(l);
    switch (w->phase) {
    case WS_DIALING:
    case WS_SHAKING:
        fail_upgrade(w, 504, "the target did not answer the upgrade in time (TARGET_TIMEOUT)");
        return;
    case WS_OPEN:
        for (struct ws_leg *leg = &w->cl; leg; leg = leg == &w->cl ? &w->tg : NULL)
            if (leg->judged && now - leg->judged->ask.since >= w->hs->request_timeout_ms) {
                shut(w, 1011, 1001, "the handler did not answer in time (REQUEST_TIMEOUT)");
                return;
            }
        if (now - last_active(w) >= w->hs->idle_timeout_ms)
            shut(w, 1001, 1001, "no frame either way for IDLE_TIMEOUT");
        else
            rearm(w);
        return;
    default: /* the linger ran out */
        leg_drop(&w->cl);
        leg_drop(&w->tg);
        maybe_end(w);
    }
}

/* ---- the API ----------------------------------------------------------------------------------------- */

/* The client's accept, and the request for the target (net/ws.c adds our key). */
static int make_request(struct http_ws *w, const struct http_ws_start *a)
{
    if (wsf_accept(a->client_key, w->client_accept) < 0 || !(w->request = malloc(a->request_len)))
        return -1;
    memcpy(w->request, a->request, a->request_len);
    w->request_len = a->request_len;
    return 0;
}

struct http_ws *http_ws_start(const struct http_ws_start *a)
{
    struct http_ws *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->loop = a->loop;
    w->s = a->s;
    w->p = a->p;
    w->hs = a->hs;
    w->ended = a->ended;
    w->ctx = a->ctx;
    w->draining = a->draining;
    w->cl = (struct ws_leg){.w = w, .peer = &w->tg, .client = true};
    w->tg = (struct ws_leg){.w = w, .peer = &w->cl};
    if (a->topic && (w->topic = malloc(a->topic_len + 1))) {
        memcpy(w->topic, a->topic, a->topic_len);
        w->topic_len = a->topic_len;
    }
    int err = ENOMEM;
    if ((a->topic && !w->topic) || make_request(w, a) < 0 ||
        !(w->tg.c = conn_tcp_dial(a->loop, (const struct sockaddr *)&a->p->target, a->p->target_len, &leg_cbs,
                                  &w->tg, &err))) {
        free(w->topic);
        free(w->request);
        free(w);
        errno = err;
        return NULL;
    }
    w->tg.c->high_water = a->p->output_high_water;
    w->cl.c = a->client;
    a->client->cbs = &leg_cbs;
    a->client->owner = &w->cl;
    conn_pause_read(a->client); /* until the target's 101 */
    w->phase = WS_DIALING;
    loop_timer_start(w->loop, &w->timer, w->hs->target_timeout_ms, on_timer);
    return w;
}

void http_ws_drain(struct http_ws *w)
{
    w->draining = true;
    if (w->phase < WS_OPEN)
        fail_upgrade(w, 503, "mgate is shutting down");
    else if (w->phase == WS_OPEN)
        shut(w, 1001, 1001, "shutting down");
}

void http_ws_close(struct http_ws *w)
{
    leg_drop(&w->cl);
    leg_drop(&w->tg);
    relay_end(w);
}
