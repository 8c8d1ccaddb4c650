/* A WebSocket as a layer of struct conn: see ws.h.  The stream first
 * (output tx_*, control frames ctl_*, input unframe), then the upgrade
 * (hs_*), which runs as the connection's handshake. */
#include "net/ws.h"

#include <assert.h>
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/ws_frame.h"

/* Payload bytes of one frame we write: the owner's output goes out in
 * frames of at most this, copied (and masked, from a client) once. */
#define WS_TX_CHUNK (16 * 1024)
#define WS_MAX_PAYLOAD ((uint64_t)INT64_MAX)

enum ws_phase { WS_UPGRADING, WS_OPEN };

/* Only while the upgrade runs (and until bytes read behind its head are
 * taken): an idle WebSocket holds none of it. */
struct ws_hs {
    char in[WS_MAX_HEAD + 1];
    uint16_t in_len;
    uint16_t left_off, left_len; /* bytes read behind the head: the first frames */
    uint16_t out_len, out_done;  /* our request or answer, being sent */
    char out[1024];
    char accept[29];   /* a client's: the Sec-WebSocket-Accept to expect */
    const char *proto; /* ... and the subprotocol it asked for */
};

/* Control frames, made when the first one comes or goes: one on the wire,
 * one waiting (a pong answers only the latest ping, RFC 6455 5.5.3). */
struct ws_ctl {
    uint8_t in[125], in_len;
    uint8_t next[125], next_len, next_op; /* 0: none waiting */
    uint8_t wire[WSF_MAX_HEAD + 125], wire_len, wire_done;
};

struct ws {
    struct conn *c;
    const struct ws_server *srv; /* one of the two */
    const struct ws_client *cli;
    struct ws_hs *hs;
    struct ws_ctl *ctl;
    struct loop_timer ping;
    struct ws_pings pings;
    /* input: the frame being read */
    uint64_t rx_left;
    struct wsf_seq seq;
    uint8_t rx_head[WSF_MAX_HEAD], rx_head_len;
    uint8_t rx_mask[4], rx_off; /* rx_off: payload offset mod 4, for the mask */
    bool rx_frame, rx_masked, rx_ctl;
    uint8_t rx_op;
    /* output: the data frame being written */
    uint32_t tx_left; /* its payload bytes not written yet */
    uint8_t tx_head[WSF_MAX_HEAD], tx_head_len;
    uint8_t tx_mask[4], tx_off;
    uint8_t phase;
    bool awaiting_pong;
    bool peer_closed;    /* its close frame came: we answer it and end */
    uint16_t close_code; /* what our close frame says, when not conn.end's */
};

static const struct conn_layer ws_layer;

bool ws_is_ws(const struct conn *c) { return c->layer == &ws_layer; }

/* ---- close codes ------------------------------------------------------ */

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

uint16_t ws_close_code(uint8_t end)
{
    return close_codes[end < sizeof(close_codes) / sizeof(close_codes[0]) ? end : CONN_END_NORMAL].code;
}

/* ---- masking keys ----------------------------------------------------- */

/* A client's masking keys need not be secret from anyone but a browser's
 * scripts (RFC 6455 10.3): a per-thread xorshift seeded from OpenSSL. */
static void mask_key(uint8_t key[4])
{
    static __thread uint64_t x;
    if (!x && (RAND_bytes((unsigned char *)&x, sizeof(x)) != 1 || !x))
        x = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&x;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    memcpy(key, &x, 4);
}

/* ---- output ----------------------------------------------------------- */

static bool tx_idle(const struct ws *w) { return !w->tx_head_len && !w->tx_left; }

static void tx_begin(struct ws *w, size_t len)
{
    assert(tx_idle(w) && len <= WS_TX_CHUNK);
    if (w->cli)
        mask_key(w->tx_mask);
    w->tx_head_len = (uint8_t)wsf_write_head(w->tx_head, 1, WSF_BINARY, len, w->cli ? w->tx_mask : NULL);
    w->tx_left = (uint32_t)len;
    w->tx_off = 0;
}

/* Write what is left of the frame in progress, its payload continuing at p
 * (avail bytes, at least what was offered last time: a transport that
 * asked to wait gets the same bytes again).  Payload bytes taken, or -1. */
static ssize_t tx_frame(struct ws *w, const uint8_t *p, size_t avail)
{
    static __thread uint8_t out[WSF_MAX_HEAD + WS_TX_CHUNK];
    size_t h = w->tx_head_len, n = avail < w->tx_left ? avail : w->tx_left;
    memcpy(out, w->tx_head, h);
    if (w->cli)
        wsf_mask_to(out + h, p, n, w->tx_mask, w->tx_off); /* copied and masked in one pass */
    else
        memcpy(out + h, p, n);
    struct iovec iov = {out, h + n};
    ssize_t k = conn_raw_writev(w->c, &iov, 1);
    if (k < 0)
        return -1;
    if ((size_t)k < h) { /* part of the header: the rest first, next time */
        memmove(w->tx_head, w->tx_head + k, h - (size_t)k);
        w->tx_head_len = (uint8_t)(h - (size_t)k);
        return 0;
    }
    size_t pay = (size_t)k - h;
    w->tx_head_len = 0;
    w->tx_left -= (uint32_t)pay;
    w->tx_off = (uint8_t)((w->tx_off + pay) & 3);
    return (ssize_t)pay;
}

/* The control frame on the wire, then the one waiting, between data
 * frames only.  0, or -1 with errno (EAGAIN: the socket is full). */
static int ctl_flush(struct ws *w)
{
    struct ws_ctl *k = w->ctl;
    for (int i = 0; k && i < 2; i++) {
        if (k->wire_done == k->wire_len) {
            if (!k->next_op || !tx_idle(w))
                return 0;
            uint8_t key[4];
            if (w->cli)
                mask_key(key);
            k->wire_len = (uint8_t)wsf_write_head(k->wire, 1, k->next_op, k->next_len, w->cli ? key : NULL);
            memcpy(k->wire + k->wire_len, k->next, k->next_len);
            if (w->cli)
                wsf_mask(k->wire + k->wire_len, k->next_len, key, 0);
            k->wire_len = (uint8_t)(k->wire_len + k->next_len);
            k->wire_done = 0;
            k->next_op = 0;
        }
        struct iovec iov = {k->wire + k->wire_done, (size_t)(k->wire_len - k->wire_done)};
        ssize_t n = conn_raw_writev(w->c, &iov, 1);
        if (n < 0)
            return -1;
        k->wire_done = (uint8_t)(k->wire_done + n);
        if (k->wire_done < k->wire_len) {
            errno = EAGAIN;
            return -1;
        }
    }
    return 0;
}

/* ctl_flush where a full socket is no failure: ask to be told when it
 * drains (the connection calls flush or read then). */
static int ctl_try(struct ws *w)
{
    if (ctl_flush(w) == 0) {
        struct ws_ctl *k = w->ctl;
        if (k && k->wire_done == k->wire_len && !k->next_op && !(w->rx_frame && w->rx_ctl)) {
            free(k); /* nothing in flight: an idle WebSocket holds no control buffer */
            w->ctl = NULL;
        }
        return 0;
    }
    if (errno != EAGAIN && errno != EINTR)
        return -1;
    w->c->want_write = true;
    return 0;
}

static struct ws_ctl *ctl_get(struct ws *w)
{
    if (!w->ctl)
        w->ctl = calloc(1, sizeof(*w->ctl));
    return w->ctl;
}

static int ctl_send(struct ws *w, enum wsf_op op, const uint8_t *p, size_t n)
{
    struct ws_ctl *k = ctl_get(w);
    if (!k) {
        errno = ENOMEM;
        return -1;
    }
    assert(n <= sizeof(k->next));
    memcpy(k->next, p, n);
    k->next_len = (uint8_t)n;
    k->next_op = (uint8_t)op;
    return ctl_try(w);
}

static ssize_t ws_writev(struct conn *c, const struct iovec *iov, int cnt)
{
    (void)cnt; /* the connection writes one buffer at a time */
    struct ws *w = c->layer_state;
    const uint8_t *p = iov[0].iov_base;
    size_t avail = iov[0].iov_len, done = 0;
    if (ctl_flush(w) < 0)
        return -1;
    while (done < avail) { /* each turn writes a frame, or stops */
        if (tx_idle(w))
            tx_begin(w, avail - done < WS_TX_CHUNK ? avail - done : WS_TX_CHUNK);
        ssize_t k = tx_frame(w, p + done, avail - done);
        if (k < 0) {
            if (done)
                break;
            return -1;
        }
        done += (size_t)k;
        if (!tx_idle(w))
            break; /* the socket took part of it */
        if (w->ctl && ctl_try(w) < 0)
            return done ? (ssize_t)done : -1;
    }
    if (!done) {
        errno = EAGAIN;
        return -1;
    }
    return (ssize_t)done;
}

static int ws_flush(struct conn *c) { return ctl_try(c->layer_state); }

/* Best effort, once: the connection closes right after. */
static void send_close(struct ws *w)
{
    uint8_t frame[WSF_MAX_HEAD + 125], pl[125], key[4];
    size_t n;
    if (w->peer_closed) { /* echo its code (RFC 6455 5.5.1) */
        uint16_t code = w->close_code ? w->close_code : 1000;
        n = wsf_close_payload(pl, code, "");
    } else if (w->close_code) {
        n = wsf_close_payload(pl, w->close_code, "");
    } else {
        uint8_t end = w->c->end < sizeof(close_codes) / sizeof(close_codes[0]) ? w->c->end : CONN_END_NORMAL;
        n = wsf_close_payload(pl, close_codes[end].code, close_codes[end].text);
    }
    (void)ctl_flush(w);
    if (!tx_idle(w) || (w->ctl && w->ctl->wire_done < w->ctl->wire_len))
        return; /* in the middle of a frame: the close frame cannot go */
    if (w->cli)
        mask_key(key);
    size_t h = wsf_write_head(frame, 1, WSF_CLOSE, n, w->cli ? key : NULL);
    memcpy(frame + h, pl, n);
    if (w->cli)
        wsf_mask(frame + h, n, key, 0);
    struct iovec iov = {frame, h + n};
    (void)conn_raw_writev(w->c, &iov, 1);
}

/* ---- keep-alive (WS_PING_INTERVAL, WS_PING_TIMEOUT) --------------------- */

static void on_ping_timer(struct loop *l, struct loop_timer *t)
{
    struct ws *w = (struct ws *)((char *)t - offsetof(struct ws, ping));
    if (w->awaiting_pong) {
        conn_fail(w->c, ETIMEDOUT);
        return;
    }
    w->awaiting_pong = true;
    if ((!w->ctl || !w->ctl->next_op) && ctl_send(w, WSF_PING, (const uint8_t *)"mgate", 5) < 0) {
        conn_fail(w->c, errno);
        return;
    }
    loop_timer_start(l, &w->ping, w->pings.timeout_ms, on_ping_timer);
}

static void ping_rearm(struct ws *w)
{
    w->awaiting_pong = false;
    if (w->pings.interval_ms)
        loop_timer_start(w->c->loop, &w->ping, w->pings.interval_ms, on_ping_timer);
}

/* ---- input ------------------------------------------------------------ */

static ssize_t protocol_error(struct ws *w, int code)
{
    w->close_code = (uint16_t)code;
    errno = EBADMSG;
    return -1;
}

static int frame_begin(struct ws *w, const struct wsf_head *h)
{
    enum wsf_op op;
    int code;
    if (wsf_seq_frame(&w->seq, h, WS_MAX_PAYLOAD, &op, &code) < 0)
        return (int)protocol_error(w, code);
    w->rx_frame = true;
    w->rx_op = (uint8_t)h->op;
    w->rx_ctl = h->op >= WSF_CLOSE;
    w->rx_masked = h->masked;
    memcpy(w->rx_mask, h->mask, 4);
    w->rx_left = h->len;
    w->rx_off = 0;
    if (w->rx_ctl) {
        if (!ctl_get(w)) {
            errno = ENOMEM;
            return -1;
        }
        w->ctl->in_len = 0;
    }
    return 0;
}

/* A whole control frame is in. */
static int control(struct ws *w)
{
    struct ws_ctl *k = w->ctl;
    switch (w->rx_op) {
    case WSF_PING:
        return ctl_send(w, WSF_PONG, k->in, k->in_len);
    case WSF_PONG:
        if (w->awaiting_pong)
            ping_rearm(w);
        return 0;
    default: /* WSF_CLOSE */
        w->peer_closed = true;
        w->close_code = k->in_len >= 2 ? (uint16_t)(k->in[0] << 8 | k->in[1]) : 0;
        return 0;
    }
}

/* Frames in p[0..n) into their payload, in place; control frames are
 * taken out and handled.  The payload's length (0: only headers or
 * control frames), or -1 (errno; a protocol error sets the close code). */
static ssize_t unframe(struct ws *w, uint8_t *p, size_t n)
{
    size_t i = 0, o = 0;
    while (i < n && !w->peer_closed) {
        if (!w->rx_frame) {
            size_t take = n - i < sizeof(w->rx_head) - w->rx_head_len ? n - i : sizeof(w->rx_head) - w->rx_head_len;
            memcpy(w->rx_head + w->rx_head_len, p + i, take);
            struct wsf_head h;
            int code, r = wsf_parse_head(w->rx_head, w->rx_head_len + take, !w->cli, WS_MAX_PAYLOAD, &h, &code);
            if (r < 0)
                return protocol_error(w, code);
            if (r == 0) {
                w->rx_head_len = (uint8_t)(w->rx_head_len + take);
                i += take;
                continue;
            }
            i += h.head_len - w->rx_head_len;
            w->rx_head_len = 0;
            if (frame_begin(w, &h) < 0)
                return -1;
        }
        size_t take = n - i < w->rx_left ? n - i : (size_t)w->rx_left;
        if (w->rx_ctl) {
            if (w->rx_masked)
                wsf_mask(p + i, take, w->rx_mask, w->rx_off);
            memcpy(w->ctl->in + w->ctl->in_len, p + i, take);
            w->ctl->in_len = (uint8_t)(w->ctl->in_len + take);
        } else {
            if (w->rx_masked) /* unmasked and moved over the frame head in one pass */
                wsf_mask_to(p + o, p + i, take, w->rx_mask, w->rx_off);
            else
                memmove(p + o, p + i, take);
            o += take;
        }
        i += take;
        w->rx_left -= take;
        w->rx_off = (uint8_t)((w->rx_off + take) & 3);
        if (!w->rx_left) {
            w->rx_frame = false;
            if (w->rx_ctl && control(w) < 0)
                return -1;
        }
    }
    return (ssize_t)o;
}

/* Bytes the upgrade read behind its head come first. */
static ssize_t raw_read(struct ws *w, void *buf, size_t len)
{
    struct ws_hs *hs = w->hs;
    if (!hs)
        return conn_raw_read(w->c, buf, len);
    size_t n = hs->left_len < len ? hs->left_len : len;
    memcpy(buf, hs->in + hs->left_off, n);
    hs->left_off = (uint16_t)(hs->left_off + n);
    hs->left_len = (uint16_t)(hs->left_len - n);
    if (!hs->left_len) {
        free(hs);
        w->hs = NULL;
    }
    return (ssize_t)n;
}

/* Each turn takes bytes from the transport, so the loop ends when it has
 * none (EAGAIN) or payload came. */
static ssize_t ws_read(struct conn *c, void *buf, size_t len)
{
    struct ws *w = c->layer_state;
    if (ctl_try(w) < 0)
        return -1;
    for (;;) {
        if (w->peer_closed)
            return 0;
        ssize_t n = raw_read(w, buf, len);
        if (n <= 0)
            return n;
        ssize_t out = unframe(w, buf, (size_t)n);
        if (out != 0)
            return out;
    }
}

/* ---- the upgrade -------------------------------------------------------- */

/* Send our request or answer; 1 when all of it went. */
static int hs_send(struct ws *w)
{
    struct ws_hs *hs = w->hs;
    while (hs->out_done < hs->out_len) {
        struct iovec iov = {hs->out + hs->out_done, (size_t)(hs->out_len - hs->out_done)};
        ssize_t n = conn_raw_writev(w->c, &iov, 1);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                return -1;
            w->c->want_write = true;
            return 0;
        }
        hs->out_done = (uint16_t)(hs->out_done + n);
    }
    return 1;
}

/* Read until the head is in: its length, 0 for not yet, -1 for a peer that
 * left or sent more than WS_MAX_HEAD (errno EMSGSIZE).  Each turn adds to
 * the buffer, so the loop is bounded by its size. */
static ssize_t hs_read(struct ws *w)
{
    struct ws_hs *hs = w->hs;
    for (;;) {
        size_t hl = ws_head_len(hs->in, hs->in_len);
        if (hl)
            return (ssize_t)hl;
        if (hs->in_len > WS_MAX_HEAD) {
            errno = EMSGSIZE;
            return -1;
        }
        ssize_t n = conn_raw_read(w->c, hs->in + hs->in_len, sizeof(hs->in) - hs->in_len);
        if (n == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        hs->in_len = (uint16_t)(hs->in_len + n);
    }
}

/* The upgrade is done: what was read behind the head waits for ws_read. */
static int hs_done(struct ws *w, size_t head_len)
{
    struct ws_hs *hs = w->hs;
    hs->left_off = (uint16_t)head_len;
    hs->left_len = (uint16_t)(hs->in_len - head_len);
    if (!hs->left_len) {
        free(hs);
        w->hs = NULL;
    }
    w->phase = WS_OPEN;
    ping_rearm(w);
    return 1;
}

/* A refused request: the owner's answer, once, then the end.  What the
 * client sent beyond what we read is read away first (a bounded amount),
 * or closing would reset the connection before the answer is read. */
static int hs_refuse(struct ws *w, const struct ws_verdict *v)
{
    struct iovec iov = {v->answer, v->answer_len};
    if (v->answer_len)
        (void)conn_raw_writev(w->c, &iov, 1);
    char sink[4096];
    for (int i = 0; i < 16 && conn_raw_read(w->c, sink, sizeof(sink)) > 0; i++)
        ;
    errno = EACCES;
    return -1;
}

static int hs_server(struct ws *w)
{
    struct ws_hs *hs = w->hs;
    if (hs->out_len) { /* our 101 is on its way */
        int r = hs_send(w);
        return r == 1 ? hs_done(w, (size_t)hs->left_off) : r;
    }
    ssize_t hl = hs_read(w);
    if (hl == 0 || (hl < 0 && errno != EMSGSIZE))
        return (int)hl;
    struct ws_head h;
    struct ws_verdict v = {.answer = hs->out, .answer_room = sizeof(hs->out)};
    bool parsed = hl > 0 && ws_head_parse(hs->in, (size_t)hl, false, &h) == 0;
    if (hl < 0)
        v.status = 431, v.why = "request head over 4 KiB";
    else if (!parsed)
        v.status = 400, v.why = "not an HTTP/1.1 request";
    else
        v.status = ws_request_check(&h, &v.why);
    char key[25], accept[29];
    if (!v.status) {
        memcpy(key, h.key.p, 24);
        key[24] = '\0';
        if (wsf_accept(key, accept) < 0)
            v.status = 400, v.why = "no valid Sec-WebSocket-Key";
    }
    w->srv->check(w->c, parsed ? &h : NULL, &v);
    if (v.status)
        return hs_refuse(w, &v);
    const char *proto = v.proto ? v.proto : "";
    int n = snprintf(hs->out, sizeof(hs->out),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
                     accept, *proto ? "Sec-WebSocket-Protocol: " : "", proto, *proto ? "\r\n" : "");
    assert(n > 0 && (size_t)n < sizeof(hs->out));
    hs->out_len = (uint16_t)n;
    hs->left_off = (uint16_t)hl; /* where the head ends, until hs_done */
    int r = hs_send(w);
    return r == 1 ? hs_done(w, (size_t)hl) : r;
}

static void broker_refused(struct ws *w, const char *why)
{
    if (w->cli->failed)
        w->cli->failed(w->c, why);
    errno = EPROTO;
}

static int hs_check_answer(struct ws *w, size_t hl)
{
    struct ws_head h;
    char why[96];
    if (ws_head_parse(w->hs->in, hl, true, &h) < 0) {
        broker_refused(w, "the upgrade's answer is not HTTP/1.1");
        return -1;
    }
    if (h.status != 101) {
        snprintf(why, sizeof(why), "the upgrade was answered with %u", h.status);
        broker_refused(w, why);
        return -1;
    }
    if (!ws_has_token(h.upgrade, "websocket") || !ws_has_token(h.connection, "upgrade") || !h.accept.p ||
        h.accept.n != 28 || memcmp(h.accept.p, w->hs->accept, 28)) {
        broker_refused(w, "the 101 has no matching Sec-WebSocket-Accept");
        return -1;
    }
    const char *proto = w->hs->proto;
    if (h.protocol.p && (h.protocol.n != strlen(proto) || memcmp(h.protocol.p, proto, h.protocol.n))) {
        broker_refused(w, "the 101 names another subprotocol");
        return -1;
    }
    return hs_done(w, hl);
}

static int hs_request(struct ws *w, const char *host, uint16_t port, const char *path)
{
    struct ws_hs *hs = w->hs;
    char key[25];
    if (wsf_new_key(key, hs->accept) < 0)
        return -1;
    int n = snprintf(hs->out, sizeof(hs->out),
                     "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
                     path && *path ? path : "/", host, port, key, hs->proto);
    if (n < 0 || (size_t)n >= sizeof(hs->out)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    hs->out_len = (uint16_t)n;
    return 0;
}

static int hs_client(struct ws *w)
{
    int r = hs_send(w);
    if (r != 1)
        return r;
    ssize_t hl = hs_read(w);
    if (hl < 0 && errno == EMSGSIZE)
        broker_refused(w, "the upgrade's answer is over 4 KiB");
    if (hl <= 0)
        return (int)hl;
    return hs_check_answer(w, (size_t)hl);
}

static int ws_handshake(struct conn *c)
{
    struct ws *w = c->layer_state;
    if (w->phase == WS_OPEN)
        return 1;
    return w->cli ? hs_client(w) : hs_server(w);
}

/* ---- life cycle ------------------------------------------------------- */

static void ws_close(struct conn *c)
{
    struct ws *w = c->layer_state;
    if (w->phase == WS_OPEN)
        send_close(w);
    loop_timer_stop(c->loop, &w->ping);
    free(w->hs);
    free(w->ctl);
    free(w);
    c->layer_state = NULL;
}

static const struct conn_layer ws_layer = {
    .read = ws_read,
    .writev = ws_writev,
    .handshake = ws_handshake,
    .flush = ws_flush,
    .close = ws_close,
};

static struct ws *ws_new(struct conn *c)
{
    struct ws *w = calloc(1, sizeof(*w));
    if (w && !(w->hs = calloc(1, sizeof(*w->hs)))) {
        free(w);
        return NULL;
    }
    if (w)
        w->c = c;
    return w;
}

int ws_server_start(struct conn *c, const struct ws_server *srv, struct ws_pings pings)
{
    struct ws *w = ws_new(c);
    if (!w)
        return -1;
    w->srv = srv;
    w->pings = pings;
    conn_set_layer(c, &ws_layer, w);
    return 0;
}

int ws_client_start(struct conn *c, const struct ws_client *cli, const char *host, uint16_t port, const char *path,
                    const char *proto, struct ws_pings pings)
{
    struct ws *w = ws_new(c);
    if (!w)
        return -1;
    w->cli = cli;
    w->pings = pings;
    w->hs->proto = proto;
    if (hs_request(w, host, port, path) < 0) {
        free(w->hs);
        free(w);
        return -1;
    }
    conn_set_layer(c, &ws_layer, w);
    return 0;
}
