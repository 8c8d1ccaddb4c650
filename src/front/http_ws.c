/*
 * The WebSocket relay of the HTTP listener (http_ws.h).  Two legs, the
 * client's and the target's, each a struct conn (plain or TLS) read frame
 * by frame: a data frame's payload is gathered into the leg's message
 * buffer as it arrives (unmasked on the way), control frames are taken
 * whole (they are at most 125 bytes).  A whole message is judged, then
 * written to the other leg as one frame, into the leg's batch: what one
 * loop turn gives a leg leaves in one write at the turn's end (a read
 * brings dozens of messages; a write each cost 25 times the CPU).
 *
 * Phases: DIALING (TCP, then TLS, to the target), SHAKING (our upgrade,
 * net/ws.c's client side with the client's request, sent and its 101
 * checked there; on_target_101 answers the client), OPEN, CLOSING (close frames sent, their answers
 * awaited for a linger time).  One timer per relay: TARGET_TIMEOUT until
 * OPEN (504), then IDLE_TIMEOUT since the last frame either way,
 * REQUEST_TIMEOUT for a pending verdict and a quiet second for releasing
 * buffers kept between messages, then the linger.
 */
#include "front/http_ws.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/log.h"
#include "core/util.h"
#include "core/metrics.h"
#include "front/http.h"
#include "front/http_parse.h"
#include "front/http_util.h"
#include "net/tls.h"
#include "net/ws.h"
#include "net/ws_frame.h"

#define WS_LINGER_MS 2000        /* a closing leg's time to answer our close */
#define WS_KEEP_BUF 4096         /* a message buffer this small is kept for the next one */
#define WS_BATCH 16384           /* frames for a leg gathered in one loop turn, then one write */
#define WS_QUIET_MS 1000         /* buffers kept for a busy leg are released after this long without a frame */

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
    bool client;     /* frames in masked, out unmasked */
    bool close_sent; /* our close went out: nothing more is sent */
    bool close_rcvd; /* it closed (or broke): nothing more is read */
    bool blocked;    /* the peer's output is over its bound */
    bool own_full;   /* its own output is (pongs and closes we answer it with) */
    bool in_frame;   /* fh is a data frame whose payload is arriving */
    struct wsf_head fh;
    uint64_t frame_done;
    struct wsf_seq seq;
    enum wsf_op msg_op;
    uint8_t *msg;
    size_t msg_len, msg_cap;
    struct ws_msg msg_req;  /* what the handler is shown of the message */
    struct ws_msg *judged; /* &msg_req while its verdict is awaited; the leg reads nothing meanwhile */
    uint8_t *batch;        /* frames for this leg not written yet (this loop turn's) */
    uint32_t batch_len;
    struct loop_defer flushing;
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
    uint64_t active; /* loop time of the last frame */
    char *topic;                     /* NULL: a bypass path, nothing is judged */
    size_t topic_len;
    uint8_t *masks; /* masking keys for the target's frames, drawn from RAND_bytes 64 at a time */
    uint16_t masks_left;
    char *request; /* the upgrade request for the target, until it is connected */
    size_t request_len;
    char *refused; /* why the target refused the upgrade, until the client is told */
    char client_accept[29];
    void (*ended)(void *ctx);
    void *ctx;
};

static void on_timer(struct loop *l, struct loop_timer *t);
static size_t leg_frames(struct ws_leg *leg, const uint8_t *data, size_t len);

static const char *leg_name(const struct ws_leg *leg) { return leg->client ? "client" : "target"; }

/* ---- ending --------------------------------------------------------------------------- */

static const struct conn_cbs quiet_cbs = {NULL, NULL, NULL, NULL};

static void leg_drop(struct ws_leg *leg)
{
    loop_defer_cancel(leg->w->loop, &leg->flushing);
    free(leg->batch);
    leg->batch = NULL;
    leg->batch_len = 0;
    if (leg->c) {
        leg->c->cbs = &quiet_cbs;
        conn_close(leg->c);
        leg->c = NULL;
    }
}

static void relay_free(struct http_ws *w)
{
    ASSERT(!w->cl.msg_req.ask.pending && !w->tg.msg_req.ask.pending); /* the handler would hold freed memory */
    free(w->cl.msg);
    free(w->tg.msg);
    free(w->topic);
    free(w->request);
    free(w->refused);
    free(w->masks);
    free(w);
}

/* Both legs are gone: the session ends now; the memory goes now, or with
 * the last pending verdict (on_resumed). */
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

/* ---- frames out ------------------------------------------------------------------------ */

static void spare_kept(struct http_ws *w);

/* Write what was gathered for a leg.  The buffer is kept for the next
 * turn only while the leg is busy (a quarter full or more), and then only
 * until a quiet second (on_timer): an idle leg holds none. */
static void leg_flush(struct ws_leg *leg)
{
    bool busy = leg->batch_len >= WS_BATCH / 4;
    if (leg->batch_len && leg->c)
        conn_write(leg->c, leg->batch, leg->batch_len);
    leg->batch_len = 0;
    if (busy && leg->c) {
        spare_kept(leg->w);
    } else {
        free(leg->batch);
        leg->batch = NULL;
    }
}

/* The loop turn is over: one write for the frames it gave the leg; if that
 * leaves the leg's output over its bound, its peer is not read meanwhile. */
static void on_flush(struct loop *l, struct loop_defer *d)
{
    (void)l;
    struct ws_leg *leg = (struct ws_leg *)((char *)d - offsetof(struct ws_leg, flushing));
    struct ws_leg *from = leg->peer;
    leg_flush(leg);
    if (leg->c && conn_over_high_water(leg->c) && !from->blocked) {
        from->blocked = true;
        METRIC_INC(loop_metrics(leg->w->loop)->backpressure_pauses[from->client ? MGATE_UP : MGATE_DOWN]);
        if (from->c)
            conn_pause_read(from->c);
    }
}

/* n bytes (at most WS_BATCH) in the leg's batch: gathered until the end of
 * the loop turn, so the many frames one read brings leave in one write. */
static uint8_t *leg_room(struct ws_leg *leg, size_t n)
{
    if (!leg->c)
        return NULL;
    if (leg->batch_len + n > WS_BATCH)
        leg_flush(leg);
    if (!leg->batch && !(leg->batch = malloc(WS_BATCH)))
        return NULL;
    if (!leg->batch_len)
        loop_defer(leg->w->loop, &leg->flushing, on_flush);
    uint8_t *dst = leg->batch + leg->batch_len;
    leg->batch_len += (uint32_t)n;
    return dst;
}

/* Bytes for a leg, in order: small ones gathered, large ones at once. */
static int leg_out(struct ws_leg *leg, const uint8_t *p, size_t n)
{
    if (n > WS_BATCH / 2) {
        leg_flush(leg);
        return leg->c ? conn_write(leg->c, p, n) : -1;
    }
    uint8_t *dst = leg_room(leg, n);
    if (!dst)
        return -1;
    memcpy(dst, p, n);
    return 0;
}

#define WS_MASK_POOL 256 /* bytes: 64 keys per RAND_bytes call */

static int next_mask(struct http_ws *w, uint8_t mask[4])
{
    if (w->masks_left < 4) {
        if ((!w->masks && !(w->masks = malloc(WS_MASK_POOL))) || RAND_bytes(w->masks, WS_MASK_POOL) != 1)
            return -1;
        w->masks_left = WS_MASK_POOL;
    }
    w->masks_left -= 4;
    memcpy(mask, w->masks + w->masks_left, 4);
    return 0;
}

/* One whole frame to a leg, masked with a fresh key towards the target
 * (straight into the batch). */
static int leg_send(struct ws_leg *leg, enum wsf_op op, const uint8_t *p, size_t n)
{
    uint8_t head[WSF_MAX_HEAD], mask[4];
    bool masked = !leg->client;
    if (!leg->c || (masked && next_mask(leg->w, mask) < 0))
        return -1;
    if (leg_out(leg, head, wsf_write_head(head, 1, op, n, masked ? mask : NULL)) < 0)
        return -1;
    if (!masked)
        return n ? leg_out(leg, p, n) : 0;
    for (size_t off = 0, k; off < n; off += k) {
        k = n - off < WS_BATCH / 2 ? n - off : WS_BATCH / 2;
        uint8_t *dst = leg_room(leg, k);
        if (!dst)
            return -1;
        memcpy(dst, p + off, k);
        wsf_mask(dst, k, mask, off);
    }
    return 0;
}

/* A control frame (pong, close) to a leg now, behind what was gathered for
 * it, without taking a batch buffer for a few bytes. */
static int leg_send_now(struct ws_leg *leg, enum wsf_op op, const uint8_t *p, size_t n)
{
    uint8_t frame[WSF_MAX_HEAD + 125], mask[4];
    bool masked = !leg->client;
    if (!leg->c || n > 125 || (masked && next_mask(leg->w, mask) < 0))
        return -1;
    leg_flush(leg);
    size_t hl = wsf_write_head(frame, 1, op, n, masked ? mask : NULL);
    if (n)
        memcpy(frame + hl, p, n);
    if (masked)
        wsf_mask(frame + hl, n, mask, 0);
    return conn_write(leg->c, frame, hl + n);
}

/* Our close to a leg (once); the connection ends when both closes crossed. */
static void leg_close(struct ws_leg *leg, const uint8_t *payload, size_t n)
{
    if (!leg->c || leg->close_sent)
        return;
    leg->close_sent = true;
    leg_send_now(leg, WSF_CLOSE, payload, n);
    if (leg->close_rcvd)
        conn_close_after_flush(leg->c);
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

/* Close the relay: each leg gets its code, then has the linger to answer. */
static void shut(struct http_ws *w, int client_code, int target_code, const char *why)
{
    mgate_log(LOGL_INFO, w->s, "websocket closed: %s", why);
    begin_closing(w);
    leg_close_code(&w->cl, client_code, why);
    leg_close_code(&w->tg, target_code, why);
}

/* A leg broke the protocol (or a limit): its close, no waiting for an
 * answer; the other leg is told the relay is going away. */
static void leg_broken(struct ws_leg *leg, int code, const char *why)
{
    session_log(leg->w->s, LOGL_INFO, "websocket: the %s %s; closed with %d", leg_name(leg), why, code);
    leg->close_rcvd = true;
    begin_closing(leg->w);
    leg_close_code(leg, code, why);
    leg_close_code(leg->peer, 1001, "the other side failed");
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

static void rearm(struct http_ws *w);

/* The target's 101 (net/ws.c checked it): the client's goes out, and the
 * relay opens.  Called inside the target's upgrade, which must not be
 * closed here: a failure returns -1 and the upgrade fails (leg_on_close). */
static int on_target_101(struct conn *c, const char *head, size_t len)
{
    struct ws_leg *leg = c->owner;
    struct http_ws *w = leg->w;
    size_t n;
    char *ok = client_101(w, head, len, &n);
    if (!ok) {
        errno = ENOMEM;
        return -1;
    }
    int rc = conn_write(w->cl.c, ok, n);
    free(ok);
    if (rc < 0) { /* the client is gone: its leg ends, and this one with it */
        errno = ECONNRESET;
        return -1;
    }
    mgate_log(LOGL_INFO, w->s, "websocket open%s", w->topic ? "" : " (bypass: messages not checked)");
    w->phase = WS_OPEN;
    w->active = loop_now(w->loop);
    METRIC_INC(loop_metrics(w->loop)->ws_opened);
    rearm(w);
    conn_resume_read(w->cl.c); /* with what the client sent after its request */
    if (w->draining)
        shut(w, 1001, 1001, "shutting down");
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
 * the client's request, our key, and the relay's own framing after it). */
static void on_target_connected(struct conn *c)
{
    struct ws_leg *leg = c->owner;
    struct http_ws *w = leg->w;
    if (w->hs->https && (!w->p->upstream_tls || tls_connect(c, w->p->upstream_tls, w->p->target_server_name) < 0)) {
        fail_upgrade(w, 502, "cannot start TLS with the target");
        return;
    }
    int rc = ws_client_start_head(c, &target_ws, w->request, w->request_len, true);
    free(w->request);
    w->request = NULL;
    if (rc < 0) {
        fail_upgrade(w, 502, "out of memory");
        return;
    }
    w->phase = WS_SHAKING;
}

/* ---- messages ------------------------------------------------------------------------------ */

static uint64_t max_message(const struct http_ws *w) { return w->hs->max_body; }

/* Done with a message.  The buffer is kept for the next one when small,
 * or while messages fill a quarter of it, until a quiet second (on_timer). */
static void msg_reset(struct ws_leg *leg)
{
    size_t used = leg->msg_len;
    leg->msg_len = 0;
    if (leg->msg_cap <= WS_KEEP_BUF || used >= leg->msg_cap / 4) {
        spare_kept(leg->w);
        return;
    }
    free(leg->msg);
    leg->msg = NULL;
    leg->msg_cap = 0;
}

/* Payload bytes of the frame in fh, unmasked into the message. */
static int msg_add(struct ws_leg *leg, const uint8_t *p, size_t n)
{
    if (leg->msg_len + n > leg->msg_cap) {
        size_t cap = leg->msg_cap ? leg->msg_cap : 1024;
        while (cap < leg->msg_len + n)
            cap *= 2;
        uint8_t *m = realloc(leg->msg, cap);
        if (!m)
            return -1;
        leg->msg = m;
        leg->msg_cap = cap;
    }
    uint8_t *dst = leg->msg + leg->msg_len;
    memcpy(dst, p, n);
    if (leg->fh.masked)
        wsf_mask(dst, n, leg->fh.mask, leg->frame_done);
    leg->msg_len += n;
    return 0;
}

/* Read a leg again once nothing holds it: a verdict, the peer's output, its own. */
static void resume_if_free(struct ws_leg *leg)
{
    if (leg->c && !leg->judged && !leg->close_rcvd && !leg->blocked && !leg->own_full)
        conn_resume_read(leg->c);
}

/* To the other leg, unless it is closing; reading stops while its output
 * is over the bound (on_drain resumes). */
static void pass_on(struct ws_leg *from, const uint8_t *p, size_t n)
{
    struct ws_leg *to = from->peer;
    if (!to->c || to->close_sent)
        return;
    struct metrics *m = loop_metrics(from->w->loop);
    METRIC_INC(m->ws_messages[from->client ? MGATE_UP : MGATE_DOWN]);
    METRIC_ADD(m->ws_bytes[from->client ? MGATE_UP : MGATE_DOWN], n);
    leg_send(to, from->msg_op, p, n);
    if (to->c && conn_over_high_water(to->c) && !from->blocked) {
        from->blocked = true;
        METRIC_INC(loop_metrics(from->w->loop)->backpressure_pauses[from->client ? MGATE_UP : MGATE_DOWN]);
    }
}

static void refused(struct ws_leg *leg)
{
    struct http_ws *w = leg->w;
    METRIC_INC(loop_metrics(w->loop)->publish_refused[leg->client ? MGATE_UP : MGATE_DOWN]);
    session_log(w->s, LOGL_INFO, "websocket: a message %s refused by the handler (%s); dropped",
                leg->client ? "up" : "down", leg->client ? "auth_publish" : "auth_subscribe");
}

static void decided(struct ws_msg *m, bool ok)
{
    struct ws_leg *leg = m->leg;
    bool waited = leg->judged == m;
    leg->judged = NULL;
    if (leg->client) {
        if (ok) {
            session_front_published(leg->w->s, &m->ask.req.publish);
            pass_on(leg, m->ask.req.publish.payload.p, m->ask.req.publish.payload.len); /* rewritten or not */
        }
    } else {
        ok = ok && !m->filter.denied;
        if (ok)
            pass_on(leg, leg->msg, leg->msg_len);
    }
    if (!ok)
        refused(leg);
    msg_reset(leg);
    if (waited)
        resume_if_free(leg);
}

static void on_verdict(struct ask *a);

static void ask(struct ws_msg *m)
{
    struct ws_leg *leg = m->leg;
    enum mgate_verdict v = verdict_ask(leg->w->s, &m->ask, leg->client ? ASK_PUBLISH : ASK_SUBSCRIBE, on_verdict);
    if (v != MGATE_PENDING) {
        decided(m, v == MGATE_ALLOW);
        return;
    }
    leg->judged = m;
    conn_pause_read(leg->c);
    rearm(leg->w);
}

/* A whole message from a leg. */
static void message(struct ws_leg *leg)
{
    struct http_ws *w = leg->w;
    if (!leg->peer->c || leg->peer->close_sent) { /* nobody to give it to */
        msg_reset(leg);
        return;
    }
    if (!w->topic) {
        pass_on(leg, leg->msg, leg->msg_len);
        msg_reset(leg);
        return;
    }
    struct ws_msg *m = &leg->msg_req; /* fields set one by one: a memset of it was 8 % of the CPU */
    m->leg = leg;
    mgate_bytes topic = {(const uint8_t *)w->topic, (uint32_t)w->topic_len};
    if (leg->client) {
        m->ask.req.publish = (struct mgate_publish_req){
            .dir = MGATE_UP, .topic = topic,
            .payload = {leg->msg ? leg->msg : (const uint8_t *)"", (uint32_t)leg->msg_len}};
    } else {
        m->filter = (struct mgate_filter){.filter = topic};
        m->ask.req.subscribe = (struct mgate_subscribe_req){.dir = MGATE_DOWN, .filters = &m->filter, .count = 1};
    }
    ask(m);
}

/* A late verdict (the engine asked past any pass). */
static void on_verdict(struct ask *a)
{
    struct ws_msg *m = container_of(a, struct ws_msg, ask);
    struct http_ws *w = m->leg->w;
    if (w->ending) { /* the relay went away meanwhile */
        m->leg->judged = NULL;
        if (!w->cl.judged && !w->tg.judged)
            relay_free(w);
        return;
    }
    decided(m, a->verdict == MGATE_ALLOW);
}

/* ---- frames in ---------------------------------------------------------------------------- */

static bool close_code_ok(int code)
{
    return (code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006) ||
           (code >= 3000 && code <= 4999);
}

/* A close from a leg: answered with the same close, and passed on. */
static void closed_by(struct ws_leg *leg, const uint8_t *pl, size_t n)
{
    if (n == 1 || (n >= 2 && !close_code_ok(pl[0] << 8 | pl[1]))) {
        leg_broken(leg, WSF_CLOSE_PROTOCOL, "sent a bad close frame");
        return;
    }
    int code = n >= 2 ? pl[0] << 8 | pl[1] : 1005;
    mgate_log(LOGL_INFO, leg->w->s, "websocket: the %s %s (%d%s%.*s)", leg_name(leg),
              leg->close_sent ? "answered the close" : "closed", code, n > 2 ? " " : "", n > 2 ? (int)n - 2 : 0,
              (const char *)pl + 2);
    leg->close_rcvd = true;
    if (leg->close_sent) { /* the answer to ours */
        leg_flush(leg);
        conn_close_after_flush(leg->c);
    }
    else
        leg_close(leg, pl, n);
    begin_closing(leg->w);
    leg_close(leg->peer, pl, n);
}

static void control(struct ws_leg *leg, const uint8_t *p)
{
    uint8_t pl[125];
    size_t n = (size_t)leg->fh.len;
    memcpy(pl, p, n);
    if (leg->fh.masked)
        wsf_mask(pl, n, leg->fh.mask, 0);
    if (leg->fh.op == WSF_PING && !leg->close_sent)
        leg_send_now(leg, WSF_PONG, pl, n); /* answered here: a ping checks this leg */
    else if (leg->fh.op == WSF_CLOSE)
        closed_by(leg, pl, n);
}

/* The next frame's head at p: a control frame is taken whole and handled,
 * a data frame begins.  Returns the bytes used, 0 when more are needed,
 * -1 when the leg broke the protocol (it is closing). */
static ssize_t frame_head(struct ws_leg *leg, const uint8_t *p, size_t n)
{
    struct wsf_head *fh = &leg->fh;
    uint64_t max = max_message(leg->w);
    enum wsf_op op;
    int code, rc = wsf_parse_head(p, n, leg->client, max, fh, &code);
    if (rc == 0)
        return 0;
    if (rc > 0 && fh->op >= WSF_CLOSE) { /* control frames are taken whole */
        size_t whole = fh->head_len + (size_t)fh->len;
        if (n < whole) {
            leg->c->want = (uint32_t)whole;
            return 0;
        }
        control(leg, p + fh->head_len);
        leg->own_full = leg->c && conn_over_high_water(leg->c); /* a ping flood that reads nothing */
        return (ssize_t)whole;
    }
    if (rc < 0 || wsf_seq_frame(&leg->seq, fh, max, &op, &code) < 0) {
        leg_broken(leg, code, code == WSF_CLOSE_TOO_BIG ? "sent a message over MAX_BODY_SIZE"
                                                        : "broke the WebSocket protocol");
        return -1;
    }
    leg->msg_op = op;
    leg->in_frame = true;
    leg->frame_done = 0;
    return (ssize_t)fh->head_len;
}

static size_t leg_frames(struct ws_leg *leg, const uint8_t *data, size_t len)
{
    struct wsf_head *fh = &leg->fh;
    size_t off = 0;
    leg->w->active = loop_now(leg->w->loop);
    while (off < len && !leg->judged && !leg->close_rcvd && !leg->blocked && !leg->own_full) {
        if (!leg->in_frame) {
            ssize_t used = frame_head(leg, data + off, len - off);
            if (used <= 0) {
                if (used < 0)
                    return len;
                break;
            }
            off += (size_t)used;
            if (!leg->in_frame)
                continue;
        }
        size_t take = len - off < fh->len - leg->frame_done ? len - off : (size_t)(fh->len - leg->frame_done);
        if (take && msg_add(leg, data + off, take) < 0) {
            leg_broken(leg, 1011, "message could not be held (out of memory)");
            return len;
        }
        off += take;
        leg->frame_done += take;
        if (leg->frame_done < fh->len)
            break;
        leg->in_frame = false;
        if (fh->fin)
            message(leg);
    }
    if (leg->close_rcvd)
        return len; /* nothing after a close counts */
    if ((leg->blocked || leg->own_full) && leg->c)
        conn_pause_read(leg->c);
    return off;
}

/* ---- the legs' connections ------------------------------------------------------------------ */

static size_t leg_on_data(struct conn *c, const uint8_t *data, size_t len)
{
    struct ws_leg *leg = c->owner;
    struct http_ws *w = leg->w;
    if (w->phase < WS_OPEN)
        return 0;
    return leg_frames(leg, data, len);
}

static void leg_on_drain(struct conn *c)
{
    struct ws_leg *leg = c->owner;
    if (leg->own_full) {
        leg->own_full = false;
        resume_if_free(leg);
    }
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
            if (w->refused)
                snprintf(why, sizeof(why), "the target refused the upgrade (%s)", w->refused);
            else
                snprintf(why, sizeof(why), "the target cannot be reached (%s)",
                         err == EPROTO ? "TLS failure" : err ? strerror(err) : "it closed the connection");
            fail_upgrade(w, 502, why);
            return;
        }
        leg_drop(&w->tg); /* the client left before the target answered */
    } else if (w->phase == WS_OPEN && !leg->close_rcvd) {
        mgate_log(LOGL_INFO, w->s, "websocket: the %s went away without a close", leg_name(leg));
    }
    leg->close_rcvd = true;
    if (leg->peer->c) {
        begin_closing(w);
        leg_close_code(leg->peer, 1001, "the other side went away");
    }
    maybe_end(w);
}

static const struct conn_cbs leg_cbs = {leg_on_data, leg_on_drain, on_target_connected, leg_on_close};

/* ---- the timer ------------------------------------------------------------------------------------ */

/* Buffers a leg holds between messages, which a quiet second releases. */
static bool holds_spare(const struct ws_leg *leg)
{
    return (leg->msg && !leg->in_frame && !leg->seq.in_message && !leg->judged) || (leg->batch && !leg->batch_len);
}

static void release_spare(struct ws_leg *leg)
{
    if (leg->msg && !leg->in_frame && !leg->seq.in_message && !leg->judged) {
        free(leg->msg);
        leg->msg = NULL;
        leg->msg_cap = 0;
    }
    if (leg->batch && !leg->batch_len) {
        free(leg->batch);
        leg->batch = NULL;
    }
}

static void rearm(struct http_ws *w)
{
    if (w->phase != WS_OPEN)
        return;
    uint64_t now = loop_now(w->loop), due = w->active + w->hs->idle_timeout_ms;
    if ((holds_spare(&w->cl) || holds_spare(&w->tg)) && w->active + WS_QUIET_MS < due)
        due = w->active + WS_QUIET_MS;
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
        if (now - w->active >= WS_QUIET_MS) {
            release_spare(&w->cl);
            release_spare(&w->tg);
        }
        if (now - w->active >= w->hs->idle_timeout_ms)
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

/* A buffer was kept for a busy leg: the timer must come by a quiet second. */
static void spare_kept(struct http_ws *w)
{
    if (w->phase == WS_OPEN && w->timer.when > loop_now(w->loop) + WS_QUIET_MS)
        rearm(w);
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
