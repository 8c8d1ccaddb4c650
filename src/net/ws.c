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

#include "core/utf8.h"
#include "core/util.h"
#include "net/ws_frame.h"

/* Payload bytes of one frame we write: the owner's output goes out in
 * frames of at most this, copied (and masked, from a client) once.  With
 * its head (8 bytes at this size when masked, 4 when not) a frame fits one
 * TLS record (16 KiB of plaintext): a 16 KiB payload made a full record
 * and one of the 4 bytes left over (26 on the wire), each its own write
 * and TCP segment. */
#define WS_TX_CHUNK (16 * 1024 - 8)
#define WS_MAX_PAYLOAD ((uint64_t)INT64_MAX)

enum ws_phase { WS_UPGRADING, WS_OPEN };

/* Only while the upgrade runs (and until bytes read behind its head are
 * taken): an idle WebSocket holds none of it.  The peer's head is read
 * into the loop's scratch and parsed there; in only holds one that came in
 * pieces, or the bytes that came behind it. */
struct ws_hs {
    char *in;          /* in_room bytes behind out (none at first), grown as a head
                        * arrives in pieces (hs_grow), up to WS_MAX_HEAD + 1 */
    uint16_t in_room;
    uint16_t in_len;
    uint16_t left_off, left_len; /* in in: bytes read behind the head, the first frames */
    uint32_t out_len, out_done;  /* our request or answer, being sent */
    char accept[29];   /* a client's: the Sec-WebSocket-Accept to expect */
    const struct ws_server *srv; /* a server's: who decides the upgrade */
    const struct ws_client *cli; /* a client's: who hears how it went */
    uint32_t out_room;
    char out[];        /* a client's request (made to measure), or what the socket did
                        * not take of a server's answer (hs_keep_out) */
};

#define WS_HS_OUT 1024 /* room for a 101, a refusal, or a request we make up */
#define HS_IN_FIRST 512 /* the first buffer for a head that comes in pieces (hs_grow) */

/* Control frames, made when the first one comes or goes: one on the wire,
 * one waiting (a pong answers only the latest ping, RFC 6455 5.5.3). */
struct ws_ctl {
    uint8_t in[125], in_len;
    uint8_t next[125], next_len, next_op; /* 0: none waiting */
    uint8_t wire[WSF_MAX_HEAD + 125], wire_len, wire_done;
};

/* Only where WS_PING_INTERVAL is set (the default is none), so an idle
 * WebSocket without pings does not carry a timer. */
struct ws_keepalive {
    struct ws *w;
    struct loop_timer timer;
    struct ws_pings pings;
};

/* Message mode's state, from ws_set_messages to the end, so that a
 * WebSocket carrying a byte stream (MQTT) does not hold it. */
struct ws_msgs {
    const struct ws_messages *ops;
    struct ws_mm *mm; /* message mode's buffers, only while it has any */
    uint64_t read_at; /* loop time of the last read */
    uint32_t max;     /* a message's most bytes */
    uint8_t op;       /* the message being read: its opcode, */
    bool fin;         /* ... the frame being read ends it, */
    bool whole;       /* ... and is all of it (so far in place, nothing gathered) */
};

/* 120 bytes, a 128-byte malloc chunk: two per WebSocket pair. */
struct ws {
    struct conn *c;
    struct ws_hs *hs;
    struct ws_ctl *ctl;
    struct ws_keepalive *ka; /* WS_PING_INTERVAL set: its timer; NULL: no pings */
    struct ws_msgs *msgs;    /* message mode (ws_set_messages); NULL: a byte stream */
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
    bool client; /* a client's (it masks; its ws_client is in hs); else a server's */
    bool awaiting_pong;
    bool peer_closed;    /* its close frame came: we answer it and end */
    bool close_sent;     /* our close frame went (message mode: ws_close_with) */
    uint16_t close_code; /* what our close frame says, when not conn.end's */
};
_Static_assert(sizeof(void *) != 8 || sizeof(struct ws) <= 120, "struct ws outgrew its 128-byte chunk");

/* Message mode: whole messages to the owner, whole messages from it.  The
 * owner's conn output holds whole frames, so the layer passes writes
 * through; control frames join it.  It holds a buffer only while a message
 * is split across frames or reads (msg), the owner paused behind one
 * (stash), or frames were gathered in this loop turn (batch); msg and
 * batch stay for the next message while it is busy, and go after a quiet
 * second (a buffer each message or turn was as costly as it sounds). */
struct ws_mm {
    struct ws *w;
    uint8_t *msg;     /* a message gathered across frames or reads */
    size_t msg_len, msg_cap;
    uint8_t *stash; /* bytes read behind a message the owner paused at */
    uint32_t stash_off, stash_len;
    uint8_t *batch; /* frames for the peer gathered in this loop turn, then one write */
    uint32_t batch_len;
    bool busy;       /* msg or batch were used since the quiet timer last came */
    struct loop_defer flushing, resuming;
    struct loop_timer quiet;
};

#define WS_BATCH (16 * 1024)

static const struct conn_layer ws_layer;
static int mm_send_ctl(struct ws *w, enum wsf_op op, const uint8_t *p, size_t n);
static void mm_maybe_free(struct ws *w);
static int mm_peer_closed(struct ws *w);

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
    if (w->client)
        mask_key(w->tx_mask);
    w->tx_head_len = (uint8_t)wsf_write_head(w->tx_head, 1, WSF_BINARY, len, w->client ? w->tx_mask : NULL);
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
    if (w->client)
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
            if (w->client)
                mask_key(key);
            k->wire_len = (uint8_t)wsf_write_head(k->wire, 1, k->next_op, k->next_len, w->client ? key : NULL);
            memcpy(k->wire + k->wire_len, k->next, k->next_len);
            if (w->client)
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
    if (w->msgs)
        return mm_send_ctl(w, op, p, n);
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
    struct ws *w = c->layer_state;
    if (w->msgs) /* the owner's output is whole frames already */
        return conn_raw_writev(c, iov, cnt);
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
    if (w->client)
        mask_key(key);
    size_t h = wsf_write_head(frame, 1, WSF_CLOSE, n, w->client ? key : NULL);
    memcpy(frame + h, pl, n);
    if (w->client)
        wsf_mask(frame + h, n, key, 0);
    struct iovec iov = {frame, h + n};
    (void)conn_raw_writev(w->c, &iov, 1);
}

/* ---- keep-alive (WS_PING_INTERVAL, WS_PING_TIMEOUT) --------------------- */

static void on_ping_timer(struct loop *l, struct loop_timer *t)
{
    struct ws_keepalive *ka = container_of(t, struct ws_keepalive, timer);
    struct ws *w = ka->w;
    if (w->awaiting_pong) {
        conn_fail(w->c, ETIMEDOUT);
        return;
    }
    w->awaiting_pong = true;
    if ((!w->ctl || !w->ctl->next_op) && ctl_send(w, WSF_PING, (const uint8_t *)"mgate", 5) < 0) {
        conn_fail(w->c, errno);
        return;
    }
    loop_timer_start(l, &ka->timer, ka->pings.timeout_ms, on_ping_timer);
}

static void ping_rearm(struct ws *w)
{
    w->awaiting_pong = false;
    if (w->ka)
        loop_timer_start(w->c->loop, &w->ka->timer, w->ka->pings.interval_ms, on_ping_timer);
}

/* Keep-alive as configured: -1 (ENOMEM) when it cannot be had. */
static int ka_set(struct ws *w, struct ws_pings pings)
{
    if (!pings.interval_ms)
        return 0;
    if (!(w->ka = calloc(1, sizeof(*w->ka))))
        return -1;
    w->ka->w = w;
    w->ka->pings = pings;
    return 0;
}

/* ---- input ------------------------------------------------------------ */

static ssize_t protocol_error(struct ws *w, int code)
{
    w->close_code = (uint16_t)code;
    if (w->msgs && w->msgs->ops->on_broken)
        w->msgs->ops->on_broken(w->c, code);
    errno = EBADMSG;
    return -1;
}

/* A message's most bytes: the owner's limit in message mode (1009 beyond). */
static uint64_t rx_max(const struct ws *w) { return w->msgs ? w->msgs->max : WS_MAX_PAYLOAD; }

static int frame_begin(struct ws *w, const struct wsf_head *h)
{
    enum wsf_op op;
    int code;
    if (wsf_seq_frame(&w->seq, h, rx_max(w), &op, &code) < 0)
        return (int)protocol_error(w, code);
    if (!w->msgs && h->op == WSF_TEXT) /* MQTT rides in binary messages only [MQTT-6.0.0-1] */
        return (int)protocol_error(w, WSF_CLOSE_UNSUPPORTED);
    if (w->msgs && h->op < WSF_CLOSE) {
        w->msgs->whole = h->fin && h->op != WSF_CONT;
        w->msgs->fin = h->fin;
        w->msgs->op = (uint8_t)op;
    }
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

/* A code a close frame may carry (RFC 6455 7.4: 1005 and 1006 are never
 * sent, 1004 and 1015 not by an endpoint). */
static bool close_code_ok(int code)
{
    return (code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006) ||
           (code >= 3000 && code <= 4999);
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
    default: { /* WSF_CLOSE */
        int code = k->in_len >= 2 ? k->in[0] << 8 | k->in[1] : 0;
        if (k->in_len == 1 || (k->in_len >= 2 && !close_code_ok(code)))
            return (int)protocol_error(w, WSF_CLOSE_PROTOCOL);
        if (k->in_len > 2 && !utf8_valid(k->in + 2, k->in_len - 2u, true)) /* RFC 6455 8.1 */
            return (int)protocol_error(w, WSF_CLOSE_BAD_DATA);
        w->peer_closed = true;
        w->close_code = (uint16_t)code;
        return w->msgs ? mm_peer_closed(w) : 0;
    }
    }
}

/* The next frame's header from p[*i..n) (its first bytes may have come
 * before): 1 when the frame begins, 0 when more bytes are needed (all of
 * these were taken), -1 for a frame the RFC or our limits refuse. */
static int rx_head(struct ws *w, const uint8_t *p, size_t n, size_t *i)
{
    size_t room = sizeof(w->rx_head) - w->rx_head_len, take = n - *i < room ? n - *i : room;
    memcpy(w->rx_head + w->rx_head_len, p + *i, take);
    struct wsf_head h;
    int code, r = wsf_parse_head(w->rx_head, w->rx_head_len + take, !w->client, rx_max(w), &h, &code);
    if (r < 0)
        return (int)protocol_error(w, code);
    if (r == 0) {
        w->rx_head_len = (uint8_t)(w->rx_head_len + take);
        *i += take;
        return 0;
    }
    *i += h.head_len - w->rx_head_len;
    w->rx_head_len = 0;
    return frame_begin(w, &h) < 0 ? -1 : 1;
}

/* The next piece of the frame being read, at p[*i..n): its header first
 * when one begins; a control frame's piece unmasked in place and copied
 * aside; a data frame's unmasked in place, or, with dst, unmasked and moved
 * to dst (dst <= the piece) in one pass.  Its length, 0 with *more when
 * only header bytes were there (all taken), or -1. */
static ssize_t rx_piece(struct ws *w, uint8_t *p, size_t n, size_t *i, bool *more, uint8_t *dst)
{
    *more = false;
    if (!w->rx_frame) {
        int r = rx_head(w, p, n, i);
        if (r <= 0) {
            *more = r == 0;
            return r;
        }
    }
    size_t take = n - *i < w->rx_left ? n - *i : (size_t)w->rx_left;
    if (dst && !w->rx_ctl) {
        if (w->rx_masked)
            wsf_mask_to(dst, p + *i, take, w->rx_mask, w->rx_off);
        else if (dst != p + *i)
            memmove(dst, p + *i, take);
        return (ssize_t)take;
    }
    if (w->rx_masked)
        wsf_mask(p + *i, take, w->rx_mask, w->rx_off);
    if (w->rx_ctl) {
        memcpy(w->ctl->in + w->ctl->in_len, p + *i, take);
        w->ctl->in_len = (uint8_t)(w->ctl->in_len + take);
    }
    return (ssize_t)take;
}

/* Past the piece: true when its frame ended. */
static bool rx_advance(struct ws *w, size_t take, size_t *i)
{
    *i += take;
    w->rx_left -= take;
    w->rx_off = (uint8_t)((w->rx_off + take) & 3);
    if (w->rx_left)
        return false;
    w->rx_frame = false;
    return true;
}

/* Frames in p[0..n) into their payload, in place; control frames are
 * taken out and handled.  The payload's length (0: only headers or
 * control frames), or -1 (errno; a protocol error sets the close code). */
static ssize_t unframe(struct ws *w, uint8_t *p, size_t n)
{
    size_t i = 0, o = 0;
    while (i < n && !w->peer_closed) {
        bool more;
        ssize_t take = rx_piece(w, p, n, &i, &more, p + o); /* payload moved over the frame heads */
        if (take < 0)
            return -1;
        if (more)
            continue;
        if (!w->rx_ctl)
            o += (size_t)take;
        if (rx_advance(w, (size_t)take, &i) && w->rx_ctl && control(w) < 0)
            return -1;
    }
    return (ssize_t)o;
}

/* Bytes the upgrade read behind its head come first. */
static ssize_t raw_read(struct ws *w, void *buf, size_t len)
{
    struct ws_hs *hs = w->hs;
    if (!hs && w->msgs && w->msgs->mm && w->msgs->mm->stash) { /* then what a paused owner left */
        struct ws_mm *m = w->msgs->mm;
        size_t n = m->stash_len < len ? m->stash_len : len;
        memcpy(buf, m->stash + m->stash_off, n);
        m->stash_off += (uint32_t)n;
        m->stash_len -= (uint32_t)n;
        if (!m->stash_len) {
            free(m->stash);
            m->stash = NULL;
            mm_maybe_free(w);
        }
        return (ssize_t)n;
    }
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

/* ---- message mode ------------------------------------------------------ */

/* Write what was gathered (keep: the buffer stays for more of this turn).
 * After a failure (-1) the connection is closed and w freed. */
static void mm_keep(struct ws_mm *m);

/* The buffers' holder goes when it holds none and nothing will look at it. */
static void mm_maybe_free(struct ws *w)
{
    struct ws_mm *m = w->msgs->mm;
    if (m && !m->batch && !m->msg && !m->stash && !m->flushing.queued && !m->resuming.queued &&
        !loop_timer_armed(&m->quiet)) {
        free(m);
        w->msgs->mm = NULL;
    }
}

static int mm_flush(struct ws *w, bool keep)
{
    struct ws_mm *m = w->msgs->mm;
    struct conn *c = w->c;
    if (!m)
        return 0;
    uint8_t *b = m->batch;
    uint32_t n = m->batch_len;
    m->batch_len = 0;
    keep = keep || n >= WS_BATCH / 4; /* a busy side: the buffer serves the next turn */
    if (keep && b) {
        mm_keep(m);
    } else {
        m->batch = NULL;
        mm_maybe_free(w);
    }
    int r = n ? conn_write(c, b, n) : 0;
    if (!keep)
        free(b);
    return r < 0 || c->state == CONN_CLOSED ? -1 : 0;
}

/* A quiet second: what no message or turn used since goes. */
static void on_mm_quiet(struct loop *l, struct loop_timer *t)
{
    struct ws_mm *m = container_of(t, struct ws_mm, quiet);
    if (m->busy) {
        m->busy = false;
        loop_timer_start(l, t, 1000, on_mm_quiet);
        return;
    }
    if (!m->batch_len) {
        free(m->batch);
        m->batch = NULL;
    }
    if (!m->msg_len) {
        free(m->msg);
        m->msg = NULL;
        m->msg_cap = 0;
    }
    mm_maybe_free(m->w); /* an idle WebSocket holds none of it */
}

/* Message mode's buffers, made when the first is needed: NULL for no memory. */
static struct ws_mm *mm_get(struct ws *w)
{
    if (!w->msgs->mm && (w->msgs->mm = calloc(1, sizeof(*w->msgs->mm))))
        w->msgs->mm->w = w;
    return w->msgs->mm;
}

/* A buffer stays for the next message or turn: the quiet timer releases it
 * (and the buffers' holder when all are gone). */
static void mm_keep(struct ws_mm *m)
{
    m->busy = true;
    if (!loop_timer_armed(&m->quiet))
        loop_timer_start(m->w->c->loop, &m->quiet, 1000, on_mm_quiet);
}

/* The loop turn is over: one write for the frames it gave this side. */
static void on_mm_flush(struct loop *l, struct loop_defer *d)
{
    (void)l;
    struct ws_mm *m = container_of(d, struct ws_mm, flushing);
    (void)mm_flush(m->w, false);
}

/* n bytes (at most WS_BATCH) into the batch, masked with key from payload
 * offset off when we are the client. */
static int mm_put(struct ws *w, const uint8_t *p, size_t n, const uint8_t *key, size_t off)
{
    struct ws_mm *m = mm_get(w);
    if (!m)
        return -1;
    if (m->batch_len + n > WS_BATCH && mm_flush(w, true) < 0)
        return -1;
    if (!m->batch && !(m->batch = malloc(WS_BATCH))) {
        mm_keep(m); /* the holder goes with the quiet timer */
        return -1;
    }
    if (!m->batch_len)
        loop_defer(w->c->loop, &m->flushing, on_mm_flush);
    memcpy(m->batch + m->batch_len, p, n);
    if (key)
        wsf_mask(m->batch + m->batch_len, n, key, off);
    m->batch_len += (uint32_t)n;
    return 0;
}

/* One message as one frame: gathered until the end of the loop turn, so
 * the many one read brings leave in one write (a write each cost 25
 * times the CPU); a large unmasked one goes at once, behind them. */
static int mm_send(struct ws *w, enum wsf_op op, const uint8_t *p, size_t n)
{
    uint8_t head[WSF_MAX_HEAD], key[4];
    struct conn *c = w->c;
    if (w->client)
        mask_key(key);
    if (mm_put(w, head, wsf_write_head(head, 1, op, n, w->client ? key : NULL), NULL, 0) < 0)
        return -1;
    if (!w->client && n > WS_BATCH / 2)
        return mm_flush(w, true) < 0 ? -1 : conn_write(c, p, n);
    for (size_t off = 0, k; off < n; off += k) {
        k = n - off < WS_BATCH / 2 ? n - off : WS_BATCH / 2;
        if (mm_put(w, p + off, k, w->client ? key : NULL, off) < 0)
            return -1;
    }
    return 0;
}

/* A pong (or our ping) joins the output.  A peer that sends pings and
 * reads no pongs is not read while its output is over the mark (the owner
 * resumes it on drain, as for its other output). */
static int mm_send_ctl(struct ws *w, enum wsf_op op, const uint8_t *p, size_t n)
{
    struct conn *c = w->c;
    if (w->close_sent)
        return 0;
    if (mm_send(w, op, p, n) < 0) {
        errno = ENOMEM;
        return -1;
    }
    if (c->out.len + (w->msgs->mm ? w->msgs->mm->batch_len : 0) >= c->high_water)
        conn_pause_read(c);
    return 0;
}

int ws_send(struct conn *c, int op, const uint8_t *p, size_t n)
{
    struct ws *w = c->layer_state;
    if (c->state == CONN_CLOSED || !ws_is_ws(c) || !w->msgs || w->close_sent)
        return -1;
    return mm_send(w, (enum wsf_op)op, p, n);
}

int ws_close_with(struct conn *c, const uint8_t *payload, size_t n)
{
    struct ws *w = c->layer_state;
    if (c->state == CONN_CLOSED || !ws_is_ws(c) || !w->msgs || w->close_sent)
        return -1;
    w->close_sent = true;
    if (mm_send(w, WSF_CLOSE, payload, n > 125 ? 125 : n) < 0 || mm_flush(w, false) < 0)
        return -1;
    conn_close_after_flush(c);
    return 0;
}

int ws_close_as(struct conn *c, int code, const char *reason)
{
    uint8_t pl[125];
    return ws_close_with(c, pl, wsf_close_payload(pl, code, reason));
}

/* The peer's close: the owner hears it (and passes it on), our answer
 * echoes it (unless ours went first), and the connection ends once that
 * is written.  c may be closed on return: the caller looks at c first. */
static int mm_peer_closed(struct ws *w)
{
    struct conn *c = w->c;
    struct ws_ctl *k = w->ctl;
    if (w->msgs->ops->on_close)
        w->msgs->ops->on_close(c, k->in, k->in_len);
    if (c->state != CONN_OPEN)
        return 0;
    if (!w->close_sent)
        return ws_close_with(c, k->in, k->in_len) < 0 && c->state != CONN_CLOSED ? -1 : 0;
    if (mm_flush(w, false) == 0)
        conn_close_after_flush(c);
    return 0;
}

/* Bytes read behind a message the owner paused at: kept until it resumes. */
static ssize_t mm_stash(struct ws *w, const uint8_t *p, size_t n)
{
    struct ws_mm *m = mm_get(w);
    uint8_t *s = m ? malloc(n + m->stash_len) : NULL;
    if (!s)
        return protocol_error(w, 1011);
    memcpy(s, p, n);
    if (m->stash)
        memcpy(s + n, m->stash + m->stash_off, m->stash_len);
    free(m->stash);
    m->stash = s;
    m->stash_off = 0;
    m->stash_len += (uint32_t)n;
    errno = EAGAIN;
    return -1;
}

/* Payload of a message that does not lie whole in one read. */
static int mm_gather(struct ws *w, const uint8_t *p, size_t n)
{
    struct ws_mm *m = mm_get(w);
    if (!m)
        return (int)protocol_error(w, 1011);
    if (m->msg_len + n > m->msg_cap) {
        /* room for the frame's rest, as far as twice what came: a length
         * is a peer's claim, not bytes it sent */
        size_t need = m->msg_len + n, room = need + (size_t)w->rx_left - n;
        size_t cap = room < 2 * need ? room : 2 * need;
        if (cap < 1024)
            cap = 1024;
        uint8_t *b = realloc(m->msg, cap);
        if (!b)
            return (int)protocol_error(w, 1011);
        m->msg = b;
        m->msg_cap = cap;
    }
    memcpy(m->msg + m->msg_len, p, n);
    m->msg_len += n;
    w->msgs->whole = false;
    return 0;
}

/* A whole message to the owner: in place when one frame of one read held
 * it, else gathered.  -1 when the owner closed c meanwhile (w is gone),
 * or it is closing (nothing more is read). */
static int mm_deliver(struct ws *w, const uint8_t *p, size_t n)
{
    struct conn *c = w->c;
    w->msgs->ops->on_message(c, w->msgs->op, p, n);
    if (c->state == CONN_CLOSED) {
        errno = ECONNRESET;
        return -1;
    }
    if (w->msgs->mm && w->msgs->mm->msg) { /* kept for the next message, until a quiet second */
        mm_keep(w->msgs->mm);
        w->msgs->mm->msg_len = 0;
    }
    if (c->state != CONN_OPEN) {
        errno = EAGAIN;
        return -1;
    }
    return 0;
}

/* Frames in p[0..n) into messages for the owner (unmasked in place).
 * Returns -1 with errno: EAGAIN when all was taken, or the owner paused
 * (the rest is stashed), else the error (a protocol error sets the close
 * code). */
static ssize_t mm_unframe(struct ws *w, uint8_t *p, size_t n)
{
    struct conn *c = w->c;
    size_t i = 0;
    w->msgs->read_at = loop_now(c->loop);
    while (i < n) {
        if (c->read_paused)
            return mm_stash(w, p + i, n - i);
        bool more;
        ssize_t n_take = rx_piece(w, p, n, &i, &more, NULL);
        if (n_take < 0)
            return -1;
        if (more)
            continue;
        size_t take = (size_t)n_take;
        const uint8_t *whole = NULL;
        if (!w->rx_ctl && w->msgs->whole && take == w->rx_left)
            whole = p + i; /* the whole message lies here: handed over in place */
        else if (!w->rx_ctl && take && mm_gather(w, p + i, take) < 0)
            return -1;
        if (!rx_advance(w, take, &i))
            continue;
        if (w->rx_ctl) {
            if (control(w) < 0)
                return -1;
            if (c->state != CONN_OPEN) { /* a close: answered, closing (or closed: w is gone) */
                errno = c->state == CONN_CLOSED ? ECONNRESET : EAGAIN;
                return -1;
            }
        } else if (w->msgs->fin) {
            const struct ws_mm *m = w->msgs->mm;
            if (!whole) {
                whole = m && m->msg ? m->msg : (const uint8_t *)"";
                take = m ? m->msg_len : 0;
            }
            if (mm_deliver(w, whole, take) < 0)
                return -1;
        }
    }
    errno = EAGAIN;
    return -1;
}

static void on_mm_resume(struct loop *l, struct loop_defer *d)
{
    (void)l;
    struct ws_mm *m = container_of(d, struct ws_mm, resuming);
    if (m->stash && m->w->c->state == CONN_OPEN && !m->w->c->read_paused)
        conn_read_now(m->w->c);
}

void ws_resume_read(struct conn *c)
{
    conn_resume_read(c);
    struct ws *w = ws_is_ws(c) ? c->layer_state : NULL;
    struct ws_mm *m = w && w->msgs ? w->msgs->mm : NULL;
    if (m && m->stash && !c->read_paused)
        loop_defer(c->loop, &m->resuming, on_mm_resume);
}

uint64_t ws_last_read(const struct conn *c)
{
    const struct ws *w = ws_is_ws(c) ? c->layer_state : NULL;
    return w && w->msgs ? w->msgs->read_at : 0;
}

int ws_set_messages(struct conn *c, const struct ws_messages *ops, uint64_t max_message)
{
    struct ws *w = c->layer_state;
    if (!w->msgs && !(w->msgs = calloc(1, sizeof(*w->msgs))))
        return -1;
    w->msgs->ops = ops;
    w->msgs->max = max_message > UINT32_MAX ? UINT32_MAX : (uint32_t)max_message;
    w->msgs->read_at = loop_now(c->loop);
    if (c->in.len) { /* frames read behind a head the owner read */
        struct ws_mm *m = mm_get(w);
        if (!m || !(m->stash = malloc(c->in.len)))
            return -1;
        memcpy(m->stash, buf_head(&c->in), c->in.len);
        m->stash_len = c->in.len;
        buf_consume(&c->in, c->in.len);
    }
    return 0;
}

/* Message mode at the end: a close frame of ours (unless one went) behind
 * what was gathered, when the output is at a frame's end. */
static void mm_close(struct ws *w)
{
    struct ws_mm *m = w->msgs->mm;
    if (!m) {
        w->close_sent |= w->c->out.len > 0;
        return;
    }
    loop_defer_cancel(w->c->loop, &m->flushing);
    loop_defer_cancel(w->c->loop, &m->resuming);
    loop_timer_stop(w->c->loop, &m->quiet);
    if (m->batch_len && !w->c->out.len) {
        struct iovec iov = {m->batch, m->batch_len};
        if (conn_raw_writev(w->c, &iov, 1) != (ssize_t)m->batch_len)
            w->close_sent = true; /* cut inside a frame: no close frame can follow */
    } else if (m->batch_len || w->c->out.len) {
        w->close_sent = true;
    }
    free(m->batch);
    free(m->msg);
    free(m->stash);
    free(m);
    w->msgs->mm = NULL;
}

/* Each turn takes bytes from the transport, so the loop ends when it has
 * none (EAGAIN) or payload came. */
static ssize_t ws_read(struct conn *c, void *buf, size_t len)
{
    struct ws *w = c->layer_state;
    if (w->msgs) { /* messages go to the owner; the stream stays empty */
        ssize_t n = raw_read(w, buf, len);
        return n <= 0 ? n : mm_unframe(w, buf, (size_t)n);
    }
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
        hs->out_done += (uint32_t)n;
    }
    return 1;
}

/* Room for more of the head, at least need bytes in all: the buffer
 * starts at HS_IN_FIRST and doubles, to WS_MAX_HEAD + 1 at most, so the
 * many upgrades of a burst of clients do not each hold (and leave the heap
 * fragmented by) a buffer for the largest head. */
static struct ws_hs *hs_grow(struct ws *w, size_t need)
{
    struct ws_hs *hs = w->hs;
    size_t room = hs->in_room ? (size_t)hs->in_room * 2 : HS_IN_FIRST;
    while (room < need)
        room *= 2;
    if (room > WS_MAX_HEAD + 1)
        room = WS_MAX_HEAD + 1;
    ASSERT(room > hs->in_room && room >= need);
    hs = realloc(hs, sizeof(*hs) + hs->out_room + room);
    if (!hs)
        return NULL;
    hs->in = hs->out + hs->out_room;
    hs->in_room = (uint16_t)room;
    return w->hs = hs;
}

static ssize_t hs_read_failed(ssize_t n)
{
    if (n == 0)
        errno = ECONNRESET;
    return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
}

/* Read until the head is in: its length, with where it starts (*p, in the
 * loop's scratch or in hs->in) and the bytes read from there (*n: the head
 * and what came behind it); 0 for not yet, -1 for a peer that left or sent
 * more than WS_MAX_HEAD (errno EMSGSIZE).  A head that comes in one read
 * (nearly every one) is never copied; one that comes in pieces is kept in
 * hs->in.  Each turn adds to that buffer, so the loop is bounded by its
 * size. */
static ssize_t hs_read(struct ws *w, const char **p, size_t *n)
{
    struct ws_hs *hs = w->hs;
    if (!hs->in_len) {
        size_t size;
        char *s = (char *)loop_scratch(w->c->loop, &size);
        if (size > WS_MAX_HEAD + 1)
            size = WS_MAX_HEAD + 1;
        ssize_t k = conn_raw_read(w->c, s, size);
        if (k <= 0)
            return hs_read_failed(k);
        size_t hl = ws_head_len(s, (size_t)k);
        if (hl) {
            *p = s;
            *n = (size_t)k;
            return (ssize_t)hl;
        }
        if (!(hs = hs_grow(w, (size_t)k)))
            return -1;
        memcpy(hs->in, s, (size_t)k);
        hs->in_len = (uint16_t)k;
    }
    for (;;) {
        size_t hl = ws_head_len(hs->in, hs->in_len);
        if (hl) {
            *p = hs->in;
            *n = hs->in_len;
            return (ssize_t)hl;
        }
        if (hs->in_len > WS_MAX_HEAD) {
            errno = EMSGSIZE;
            return -1;
        }
        if (hs->in_len == hs->in_room && !(hs = hs_grow(w, (size_t)hs->in_len + 1)))
            return -1;
        ssize_t k = conn_raw_read(w->c, hs->in + hs->in_len, (size_t)(hs->in_room - hs->in_len));
        if (k <= 0)
            return hs_read_failed(k);
        hs->in_len = (uint16_t)(hs->in_len + k);
    }
}

/* The head (hl of the n bytes at p, hs_read) is read: what came behind it
 * waits in hs->in for ws_read (copied there from the scratch). */
static struct ws_hs *hs_keep_left(struct ws *w, const char *p, size_t hl, size_t n)
{
    struct ws_hs *hs = w->hs;
    if (p == hs->in) {
        hs->left_off = (uint16_t)hl;
        hs->left_len = (uint16_t)(n - hl);
        return hs;
    }
    hs->left_off = 0;
    hs->left_len = (uint16_t)(n - hl);
    if (n == hl)
        return hs;
    if (!(hs = hs_grow(w, n - hl)))
        return NULL;
    memcpy(hs->in, p + hl, n - hl);
    hs->in_len = (uint16_t)(n - hl);
    return hs;
}

/* The upgrade is done: what was read behind the head (hs_keep_left)
 * waits for ws_read. */
static int hs_done(struct ws *w)
{
    if (!w->hs->left_len) {
        free(w->hs);
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

/* What the socket did not take of our 101, kept to send when it can: out
 * grows in front of in (a server starts with no out at all; its answers
 * are made on the stack and nearly always go at once). */
static struct ws_hs *hs_keep_out(struct ws *w, const char *p, size_t n)
{
    struct ws_hs *hs = w->hs;
    ASSERT(!hs->out_room && n);
    size_t in_room = hs->in_room;
    hs = realloc(hs, sizeof(*hs) + n + in_room);
    if (!hs)
        return NULL;
    memmove(hs->out + n, hs->out, in_room); /* what came behind the head moves up */
    memcpy(hs->out, p, n);
    hs->out_room = hs->out_len = (uint32_t)n;
    hs->out_done = 0;
    hs->in = hs->out + n;
    return w->hs = hs;
}

static int hs_server(struct ws *w)
{
    struct ws_hs *hs = w->hs;
    if (hs->out_len) { /* our 101 is on its way */
        int r = hs_send(w);
        return r == 1 ? hs_done(w) : r;
    }
    const char *head = NULL;
    size_t got = 0;
    ssize_t hl = hs_read(w, &head, &got);
    if (hl == 0 || (hl < 0 && errno != EMSGSIZE))
        return (int)hl;
    hs = w->hs; /* hs_read may have grown it */
    struct ws_head h;
    char out[WS_HS_OUT];
    struct ws_verdict v = {.answer = out, .answer_room = sizeof(out)};
    bool parsed = hl > 0 && ws_head_parse(head, (size_t)hl, false, &h) == 0;
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
    hs->srv->check(w->c, parsed ? &h : NULL, &v);
    if (v.status)
        return hs_refuse(w, &v);
    const char *proto = v.proto ? v.proto : "";
    int n = snprintf(out, sizeof(out),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
                     accept, *proto ? "Sec-WebSocket-Protocol: " : "", proto, *proto ? "\r\n" : "");
    assert(n > 0 && (size_t)n < sizeof(out));
    struct iovec iov = {out, (size_t)n};
    ssize_t k = conn_raw_writev(w->c, &iov, 1);
    if ((k < 0 && errno != EAGAIN && errno != EINTR) || !hs_keep_left(w, head, (size_t)hl, got))
        return -1;
    if (k == n)
        return hs_done(w);
    k = k < 0 ? 0 : k;
    if (!hs_keep_out(w, out + k, (size_t)(n - k)))
        return -1;
    w->c->want_write = true;
    return 0;
}

static void broker_refused(struct ws *w, const char *why)
{
    if (w->hs->cli->failed)
        w->hs->cli->failed(w->c, why);
    errno = EPROTO;
}

static int hs_check_answer(struct ws *w, const char *head, size_t hl, size_t got)
{
    struct ws_head h;
    char why[96];
    if (ws_head_parse(head, hl, true, &h) < 0) {
        broker_refused(w, "the upgrade's answer is not HTTP/1.1");
        return -1;
    }
    if (h.status != 101) {
        snprintf(why, sizeof(why), "the upgrade was answered with %u", h.status);
        broker_refused(w, why);
        return -1;
    }
    if (!h.accept.p || h.accept.n != 28 || memcmp(h.accept.p, w->hs->accept, 28)) {
        broker_refused(w, "the 101 has no matching Sec-WebSocket-Accept");
        return -1;
    }
    if (!ws_has_token(h.upgrade, "websocket") || !ws_has_token(h.connection, "upgrade")) {
        broker_refused(w, "the 101 lacks Upgrade: websocket or Connection: upgrade");
        return -1;
    }
    if (h.extensions.p) { /* we offer none */
        broker_refused(w, "the 101 chose a WebSocket extension nobody offered");
        return -1;
    }
    if (h.protocol.p && !ws_head_offers(w->hs->out, w->hs->out_len, h.protocol)) {
        broker_refused(w, "the 101 names a subprotocol that was not offered");
        return -1;
    }
    if (w->hs->cli->upgraded && w->hs->cli->upgraded(w->c, head, hl) < 0)
        return -1;
    return hs_keep_left(w, head, hl, got) ? hs_done(w) : -1;
}

/* Our request (into out, WS_HS_OUT bytes) and the accept its key wants:
 * its length, or -1. */
static int hs_request(char *out, char accept[29], const char *host, uint16_t port, const char *path,
                      const char *proto)
{
    char key[25];
    if (wsf_new_key(key, accept) < 0)
        return -1;
    int n = snprintf(out, WS_HS_OUT,
                     "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
                     path && *path ? path : "/", host, port, key, proto);
    if (n < 0 || n >= WS_HS_OUT) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return n;
}

/* The owner's request line and headers, then our key. */
static int hs_request_head(struct ws *w, const char *head, size_t len)
{
    struct ws_hs *hs = w->hs;
    char key[25];
    if (wsf_new_key(key, hs->accept) < 0)
        return -1;
    memcpy(hs->out, head, len);
    int n = snprintf(hs->out + len, hs->out_room - len, "Sec-WebSocket-Key: %s\r\n\r\n", key);
    assert(n > 0 && (size_t)n < hs->out_room - len);
    hs->out_len = (uint32_t)(len + (size_t)n);
    return 0;
}

static int hs_client(struct ws *w)
{
    int r = hs_send(w);
    if (r != 1)
        return r;
    const char *head = NULL;
    size_t got = 0;
    ssize_t hl = hs_read(w, &head, &got);
    if (hl < 0 && errno == EMSGSIZE)
        broker_refused(w, "the upgrade's answer is over 4 KiB");
    if (hl <= 0)
        return (int)hl;
    return hs_check_answer(w, head, (size_t)hl, got);
}

static int ws_handshake(struct conn *c)
{
    struct ws *w = c->layer_state;
    if (w->phase == WS_OPEN)
        return 1;
    return w->client ? hs_client(w) : hs_server(w);
}

/* ---- life cycle ------------------------------------------------------- */

static void ws_close(struct conn *c)
{
    struct ws *w = c->layer_state;
    if (w->msgs)
        mm_close(w);
    if (w->phase == WS_OPEN && !w->close_sent)
        send_close(w);
    if (w->ka)
        loop_timer_stop(c->loop, &w->ka->timer);
    free(w->ka);
    free(w->hs);
    free(w->ctl);
    free(w->msgs);
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

/* The upgrade's buffers: out_room for what we send, in_room for the
 * head we read. */
static struct ws *ws_new(struct conn *c, size_t out_room)
{
    struct ws *w = calloc(1, sizeof(*w));
    if (w && !(w->hs = calloc(1, sizeof(*w->hs) + out_room))) {
        free(w);
        return NULL;
    }
    if (w) {
        w->c = c;
        w->hs->out_room = (uint32_t)out_room;
    }
    return w;
}

int ws_server_start(struct conn *c, const struct ws_server *srv, struct ws_pings pings)
{
    struct ws *w = ws_new(c, 0); /* its answers are made on the stack */
    if (!w)
        return -1;
    w->hs->srv = srv;
    if (ka_set(w, pings) < 0) {
        free(w->hs);
        free(w);
        return -1;
    }
    conn_set_layer(c, &ws_layer, w);
    return 0;
}

int ws_client_start(struct conn *c, const struct ws_client *cli, const char *host, uint16_t port, const char *path,
                    const char *proto, struct ws_pings pings)
{
    char out[WS_HS_OUT], accept[29];
    int n = hs_request(out, accept, host, port, path, proto);
    struct ws *w = n < 0 ? NULL : ws_new(c, (size_t)n); /* the request, to measure */
    if (!w)
        return -1;
    w->client = true;
    w->hs->cli = cli;
    memcpy(w->hs->out, out, (size_t)n);
    w->hs->out_len = (uint32_t)n;
    memcpy(w->hs->accept, accept, sizeof(accept));
    if (ka_set(w, pings) < 0) {
        free(w->hs);
        free(w);
        return -1;
    }
    conn_set_layer(c, &ws_layer, w);
    return 0;
}

int ws_server_open(struct conn *c, const char *answer, size_t len, struct ws_pings pings)
{
    if (c->state != CONN_OPEN) { /* closed (its owner not told yet), or closing */
        errno = ECONNRESET;
        return -1;
    }
    struct ws *w = calloc(1, sizeof(*w));
    if (!w || ka_set(w, pings) < 0) {
        free(w);
        return -1;
    }
    /* The 101 goes now, or waits in c->out (raw: in message mode the
     * layer passes the output through), and the connection stays open: a
     * close that comes with the target's 101 flushes it and what follows. */
    struct iovec iov = {(void *)answer, len};
    ssize_t k = c->out.len ? 0 : conn_raw_writev(c, &iov, 1);
    if (k < 0 && errno != EAGAIN && errno != EINTR) {
        free(w->ka);
        free(w);
        errno = ECONNRESET;
        return -1;
    }
    k = k < 0 ? 0 : k;
    if ((size_t)k < len && buf_append(&c->out, (const uint8_t *)answer + k, len - (size_t)k) < 0) {
        free(w->ka);
        free(w);
        errno = ENOMEM;
        return -1;
    }
    w->c = c;
    w->phase = WS_OPEN;
    conn_set_layer_open(c, &ws_layer, w);
    ping_rearm(w);
    return 0;
}

int ws_client_start_head(struct conn *c, const struct ws_client *cli, const char *head, size_t len)
{
    struct ws *w = ws_new(c, len + 48); /* the key's line (19 + 24 + 2) and the blank line */
    if (!w)
        return -1;
    w->client = true;
    w->hs->cli = cli;
    if (hs_request_head(w, head, len) < 0) {
        free(w->hs);
        free(w);
        return -1;
    }
    conn_set_layer(c, &ws_layer, w);
    return 0;
}
