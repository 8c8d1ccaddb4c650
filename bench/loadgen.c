/*
 * loadgen: the MQTT 3.1.1 load generator of bench/run.sh.
 *
 * One thread, one epoll loop, non-blocking raw sockets, packets encoded by
 * hand.  Every mode is bounded in time (and the message modes in count too).
 * Each run prints one line of key=value pairs on stdout (idle mode prints
 * two); diagnostics go to stderr.
 *
 * Transports (any mode): MQTT over TCP (the default), over TLS (--tls), over
 * WebSocket (--ws PATH: an upgrade with subprotocol "mqtt", then one masked
 * binary frame per MQTT packet, as MQTT.js and paho send them), and over
 * WebSocket over TLS (--ws PATH --tls).  Incoming frames may split or join
 * packets; their payloads are joined into one MQTT byte stream.  TLS is
 * OpenSSL's with no certificate check (a benchmark on loopback); framing
 * comes from wsutil.h.
 *
 *   loadgen freeport [N]                    N free TCP ports on 127.0.0.1 (20000-31999)
 *   loadgen throughput -p PORT [options]    publishers -> subscribers, as fast as the window allows
 *   loadgen latency -p PORT [options]       the same topology paced at a fixed rate; p50/p99
 *   loadgen idle -p PORT -n N               open N connections, print "ready", hold until
 *                                           a line (or EOF) on stdin, then close them
 *   loadgen connrate -p PORT [options]      connect+CONNECT+CONNACK+DISCONNECT+close, in parallel
 *
 * Payload layout (at least 16 bytes): u32 publisher, u32 sequence, u64
 * CLOCK_MONOTONIC ns at send; latency is measured in this process, so both
 * timestamps come from the same clock.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "wsutil.h"

#define MAX_CLIENTS 8
#define RBUF_SIZE (256 * 1024)
#define OUT_BATCH (64 * 1024) /* a publisher queues at most this much before writing */
#define HANDSHAKE_TIMEOUT_NS (10 * NS)
#define NS 1000000000ull

enum role { R_PUB, R_SUB, R_IDLE, R_CYCLE };
enum state { S_CONNECTING, S_TLS, S_UPGRADE, S_CONNACK, S_SUBACK, S_READY, S_CLOSED };
enum phase { P_SETUP, P_RUN, P_DRAIN, P_DONE };

struct cl {
    int fd;
    uint8_t role, state;
    uint16_t next_id;
    uint32_t idx;
    uint64_t started; /* ns, for the handshake deadline */
    uint8_t *in;      /* an incomplete packet carried to the next read */
    uint32_t in_len, in_cap;
    uint8_t *out; /* bytes the socket did not take yet */
    uint32_t out_off, out_len, out_cap;
    uint32_t events;
    SSL *ssl;            /* --tls */
    uint32_t mask_from;  /* --ws: frames in out from here on are not masked yet */
    uint64_t ws_left;    /* --ws: payload bytes of the current incoming frame still to come */
    bool ws_data;        /* --ws: the current incoming frame carries MQTT bytes */
    uint8_t hlen;        /* --ws: bytes of an incomplete frame head in hbuf */
    uint8_t hbuf[WS_MAX_HEAD];
};

/* ---- options and state --------------------------------------------------- */

static struct {
    const char *host;
    int port;
    int qos, size, pubs, subs;
    bool fanout;
    double duration, warmup, drain, rate, hold;
    long window, max_msgs, conns, parallel;
    int keepalive;
    const char *ws; /* WebSocket path, or NULL: MQTT straight over TCP/TLS */
    bool tls;
    const char *user, *password; /* in every CONNECT when set (a token for the jwt handler) */
} o = {.host = "127.0.0.1", .qos = 0, .size = 64, .pubs = 4, .subs = 4, .duration = 5, .warmup = 1,
       .drain = 5, .rate = 1000, .max_msgs = -1, .hold = 120, .window = 200, .conns = 1000, .parallel = 64,
       .keepalive = 300};

static int ep;
static struct sockaddr_in target;
static uint8_t rbuf[RBUF_SIZE];
static enum phase phase = P_SETUP;
static struct cl pubs[MAX_CLIENTS], subs[MAX_CLIENTS];
static uint64_t sent[MAX_CLIENTS], deliv[MAX_CLIENTS], acked[MAX_CLIENTS];
static uint64_t sent_total, recv_total, recv_bad, errors;
static uint64_t t_measure; /* messages sent from here on are latency samples */
static uint32_t *lat;      /* latency samples, ns */
static size_t lat_len, lat_cap;
static long ready, failed, completed, active;
static const char *mode;
static SSL_CTX *tls_ctx;
static char ws_accept_want[WS_ACCEPT_LEN + 1]; /* Sec-WebSocket-Accept for ws_key */
static const char ws_key[] = "bWdhdGUtYmVuY2gta2V5IQ==";
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    if (!(p = realloc(p, n)))
        die("out of memory");
    return p;
}

/* ---- buffers and sockets ------------------------------------------------- */

static void set_events(struct cl *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0)
        die("epoll_ctl");
    c->events = ev;
}

static uint8_t *out_reserve(struct cl *c, uint32_t n)
{
    if (c->out_off && c->out_off == c->out_len)
        c->out_off = c->out_len = c->mask_from = 0;
    if (c->out_len + n > c->out_cap) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->mask_from -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            c->out_cap = (c->out_len + n) * 2;
            c->out = xrealloc(c->out, c->out_cap);
        }
    }
    uint8_t *p = c->out + c->out_len;
    c->out_len += n;
    return p;
}

/* Room for a frame of n payload bytes (--ws: after its head; the payload is
 * masked when it is flushed); without --ws, room for n bytes. */
static uint8_t *frame_reserve(struct cl *c, uint8_t op, uint32_t n)
{
    if (!o.ws)
        return out_reserve(c, n);
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; /* xorshift64: a fresh key per frame */
    uint8_t head[WS_MAX_HEAD], key[4];
    memcpy(key, &rng, 4);
    size_t hl = ws_write_head(head, true, op, n, key);
    uint8_t *p = out_reserve(c, (uint32_t)hl + n);
    memcpy(p, head, hl);
    return p + hl;
}

static uint8_t *pkt_reserve(struct cl *c, uint32_t n) { return frame_reserve(c, WS_BINARY, n); }

/* --ws: masks the payloads of the frames queued since the last flush. */
static void mask_queued(struct cl *c)
{
    while (c->mask_from < c->out_len) {
        struct ws_head h;
        uint8_t *f = c->out + c->mask_from;
        if (ws_parse_head(f, c->out_len - c->mask_from, &h) != 1)
            die("internal: bad queued frame");
        ws_mask(f + h.head_len, (size_t)h.len, h.mask, 0);
        c->mask_from += (uint32_t)(h.head_len + h.len);
    }
}

/* send or SSL_write: bytes taken, or -1 with errno (EAGAIN: try again later). */
static ssize_t cl_send(struct cl *c, const uint8_t *p, size_t n)
{
    if (!c->ssl)
        return send(c->fd, p, n, MSG_NOSIGNAL);
    ERR_clear_error();
    int k = SSL_write(c->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (k > 0)
        return k;
    int e = SSL_get_error(c->ssl, k);
    errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EPIPE;
    return -1;
}

/* recv or SSL_read: bytes, 0 at the end, -1 with errno (EAGAIN: nothing yet). */
static ssize_t cl_recv(struct cl *c, uint8_t *p, size_t n)
{
    if (!c->ssl)
        return recv(c->fd, p, n, 0);
    ERR_clear_error();
    int k = SSL_read(c->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (k > 0)
        return k;
    int e = SSL_get_error(c->ssl, k);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        errno = EAGAIN;
    else if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    else
        errno = ECONNRESET;
    return -1;
}

static void cl_close(struct cl *c)
{
    if (c->state == S_CLOSED)
        return;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl)
        SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);
    c->fd = -1;
    c->state = S_CLOSED;
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->in_cap = c->out_off = c->out_len = c->out_cap = c->mask_from = 0;
}

/* Write what is queued; returns -1 when the connection failed (and closes it). */
static int cl_flush(struct cl *c)
{
    if (c->state == S_TLS)
        return 0; /* the handshake drives the socket until it is done */
    if (o.ws)
        mask_queued(c);
    while (c->out_off < c->out_len) {
        ssize_t n = cl_send(c, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0) {
            c->out_off += (uint32_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        errors++;
        cl_close(c);
        return -1;
    }
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = c->mask_from = 0;
        if (c->role == R_IDLE || c->role == R_CYCLE) { /* thousands of them: hold no buffer */
            free(c->out);
            c->out = NULL;
            c->out_cap = 0;
        }
    }
    set_events(c, c->out_len ? EPOLLIN | EPOLLOUT : EPOLLIN);
    return 0;
}

static int cl_open(struct cl *c, enum role role, uint32_t idx)
{
    memset(c, 0, sizeof(*c));
    c->role = (uint8_t)role;
    c->idx = idx;
    c->next_id = 1;
    c->started = now_ns();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        c->state = S_CLOSED;
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&target, sizeof(target)) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->state = S_CLOSED;
        return -1;
    }
    c->state = S_CONNECTING;
    c->events = EPOLLOUT;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e) < 0)
        die("epoll_ctl");
    return 0;
}

/* ---- MQTT 3.1.1 encoding ----------------------------------------------- */

static uint32_t put_varint(uint8_t *p, uint32_t v)
{
    uint32_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        p[n++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
    return n;
}

static uint32_t varint_len(uint32_t v) { return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4; }

static uint8_t *put_str(uint8_t *p, const char *s, size_t len)
{
    *p++ = (uint8_t)(len >> 8);
    *p++ = (uint8_t)len;
    memcpy(p, s, len);
    return p + len;
}

static void send_connect(struct cl *c)
{
    char id[32];
    int idl = snprintf(id, sizeof(id), "lg%d-%c%u", (int)getpid() % 100000, "psic"[c->role], c->idx);
    size_t ul = o.user ? strlen(o.user) : 0, pl = o.password ? strlen(o.password) : 0;
    uint32_t rl = 10 + 2 + (uint32_t)idl + (o.user ? 2 + (uint32_t)ul : 0) + (o.password ? 2 + (uint32_t)pl : 0);
    uint8_t *p = pkt_reserve(c, 1 + varint_len(rl) + rl);
    *p++ = 0x10;
    p += put_varint(p, rl);
    p = put_str(p, "MQTT", 4);
    *p++ = 4;                                                          /* protocol level 3.1.1 */
    *p++ = 0x02 | (o.user ? 0x80 : 0) | (o.password ? 0x40 : 0); /* clean session */
    *p++ = (uint8_t)(o.keepalive >> 8);
    *p++ = (uint8_t)o.keepalive;
    p = put_str(p, id, (size_t)idl);
    if (o.user)
        p = put_str(p, o.user, ul);
    if (o.password)
        put_str(p, o.password, pl);
    c->state = S_CONNACK;
}

static void topic_of(uint32_t pub, char *buf, size_t len) { snprintf(buf, len, "bench/%u", pub); }

static void send_subscribe(struct cl *c)
{
    char topic[32];
    if (o.fanout)
        snprintf(topic, sizeof(topic), "bench/#");
    else
        topic_of(c->idx, topic, sizeof(topic));
    size_t tl = strlen(topic);
    uint32_t rl = 2 + 2 + (uint32_t)tl + 1;
    uint8_t *p = pkt_reserve(c, 2 + rl);
    *p++ = 0x82;
    *p++ = (uint8_t)rl;
    *p++ = 0;
    *p++ = 1;
    p = put_str(p, topic, tl);
    *p = (uint8_t)o.qos;
    c->state = S_SUBACK;
}

static void send_disconnect(struct cl *c)
{
    uint8_t *p = pkt_reserve(c, 2);
    p[0] = 0xe0;
    p[1] = 0;
}

static void queue_publish(struct cl *c)
{
    char topic[32];
    topic_of(c->idx, topic, sizeof(topic));
    size_t tl = strlen(topic);
    uint32_t rl = 2 + (uint32_t)tl + (o.qos ? 2 : 0) + (uint32_t)o.size;
    uint8_t *p = pkt_reserve(c, 1 + varint_len(rl) + rl);
    *p++ = (uint8_t)(0x30 | (o.qos << 1));
    p += put_varint(p, rl);
    p = put_str(p, topic, tl);
    if (o.qos) {
        if (!c->next_id)
            c->next_id = 1;
        *p++ = (uint8_t)(c->next_id >> 8);
        *p++ = (uint8_t)c->next_id++;
    }
    uint32_t seq = (uint32_t)sent[c->idx];
    uint64_t ts = now_ns();
    memcpy(p, &c->idx, 4);
    memcpy(p + 4, &seq, 4);
    memcpy(p + 8, &ts, 8);
    memset(p + 16, 'x', (size_t)o.size - 16);
    sent[c->idx]++;
    sent_total++;
}

/* ---- incoming packets ---------------------------------------------------- */

static void on_publish(struct cl *c, const uint8_t *p, uint32_t len, uint8_t flags, uint64_t now)
{
    uint32_t qos = (flags >> 1) & 3u;
    if (len < 2)
        goto bad;
    uint32_t tl = (uint32_t)p[0] << 8 | p[1], off = 2 + tl + (qos ? 2 : 0);
    if (off + 16 > len)
        goto bad;
    if (qos == 1) {
        uint8_t *a = pkt_reserve(c, 4);
        a[0] = 0x40;
        a[1] = 2;
        a[2] = p[2 + tl];
        a[3] = p[3 + tl];
    }
    uint32_t pub;
    uint64_t ts;
    memcpy(&pub, p + off, 4);
    memcpy(&ts, p + off + 8, 8);
    if (pub >= (uint32_t)o.pubs)
        goto bad;
    deliv[pub]++;
    recv_total++;
    if (lat && ts >= t_measure && phase == P_RUN && lat_len < lat_cap)
        lat[lat_len++] = now > ts ? (uint32_t)(now - ts > UINT32_MAX ? UINT32_MAX : now - ts) : 0;
    return;
bad:
    recv_bad++;
}

/* Returns false when the connection was closed. */
static bool on_packet(struct cl *c, const uint8_t *pkt, uint32_t hdr, uint32_t len, uint64_t now)
{
    uint8_t type = pkt[0] >> 4;
    const uint8_t *body = pkt + hdr;
    switch (type) {
    case 2: /* CONNACK */
        if (c->state != S_CONNACK || len < 2 || body[1] != 0) {
            fprintf(stderr, "loadgen: CONNACK refused (code %d)\n", len >= 2 ? body[1] : -1);
            errors++;
            cl_close(c);
            if (c->role == R_IDLE) {
                failed++;
                active--;
            } else if (c->role == R_CYCLE) {
                active--;
            }
            return false;
        }
        if (c->role == R_SUB) {
            send_subscribe(c);
        } else if (c->role == R_CYCLE) {
            send_disconnect(c);
            cl_flush(c);
            cl_close(c);
            completed++;
            active--;
            return false;
        } else {
            c->state = S_READY;
            if (c->role == R_IDLE) {
                ready++;
                active--;
            }
        }
        return true;
    case 9: /* SUBACK */
        if (len < 3 || body[2] == 0x80) {
            fprintf(stderr, "loadgen: SUBSCRIBE refused\n");
            errors++;
        }
        c->state = S_READY;
        return true;
    case 3:
        on_publish(c, body, len, pkt[0] & 0x0f, now);
        return true;
    case 4: /* PUBACK */
        acked[c->idx]++;
        return true;
    default:
        return true;
    }
}

/* Frames and handles what is in data; returns bytes consumed, or -1 if closed. */
static long parse(struct cl *c, const uint8_t *data, size_t len, uint64_t now)
{
    size_t off = 0;
    while (len - off >= 2) {
        uint32_t rl = 0, shift = 0, i = 1;
        for (;;) {
            if (off + i >= len)
                return (long)off;
            uint8_t b = data[off + i++];
            rl |= (uint32_t)(b & 0x7f) << shift;
            shift += 7;
            if (!(b & 0x80))
                break;
            if (shift > 21) {
                fprintf(stderr, "loadgen: malformed length\n");
                errors++;
                cl_close(c);
                return -1;
            }
        }
        if (len - off < i + rl)
            break;
        if (!on_packet(c, data + off, i, rl, now))
            return -1;
        off += i + rl;
    }
    return (long)off;
}

/* A connection that ended before it was ready, or was refused: counted and closed. */
static void fail_handshake(struct cl *c, const char *why)
{
    if (c->role != R_CYCLE || errors < 5)
        fprintf(stderr, "loadgen: %s\n", why);
    errors++;
    cl_close(c);
    if (c->role == R_IDLE)
        failed++;
    if (c->role == R_IDLE || c->role == R_CYCLE)
        active--;
}

/* The peer closed the connection (n == 0) or it failed. */
static void on_lost(struct cl *c, ssize_t n)
{
    if (phase != P_DONE) {
        fprintf(stderr, "loadgen: connection %c%u closed by the peer%s%s\n", "psic"[c->role], c->idx,
                n ? ": " : "", n ? strerror(errno) : "");
        errors++;
    }
    if (c->role == R_IDLE && c->state != S_READY) {
        failed++;
        active--;
    } else if (c->role == R_CYCLE) {
        active--;
    }
    cl_close(c);
}

/* The transport is up (TCP, or TLS after its handshake): the upgrade or the CONNECT. */
static void after_transport(struct cl *c)
{
    if (o.ws) {
        char req[512];
        int n = snprintf(req, sizeof(req),
                         "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                         o.ws, o.host, o.port, ws_key);
        if (n < 0 || (size_t)n >= sizeof(req))
            die("--ws path too long");
        memcpy(out_reserve(c, (uint32_t)n), req, (size_t)n);
        c->mask_from = c->out_len; /* not a frame */
        c->state = S_UPGRADE;
    } else {
        send_connect(c);
    }
    cl_flush(c);
}

static void tls_step(struct cl *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->state = S_CONNACK; /* (lets cl_flush write; after_transport sets the real state) */
        after_transport(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        set_events(c, EPOLLIN);
    else if (e == SSL_ERROR_WANT_WRITE)
        set_events(c, EPOLLOUT);
    else
        fail_handshake(c, "TLS handshake failed");
}

/* --ws: the upgrade answer, gathered in c->in.  Once it is complete, the
 * bytes after it are moved to the start of d and their number returned (the
 * state is then S_CONNACK); -1 if the upgrade failed (closed). */
static long on_upgrade(struct cl *c, uint8_t *d, size_t n)
{
    if (c->in_len + n + 1 > c->in_cap) {
        c->in_cap = (uint32_t)(c->in_len + n + 1) * 2;
        c->in = xrealloc(c->in, c->in_cap);
    }
    memcpy(c->in + c->in_len, d, n);
    c->in_len += (uint32_t)n;
    c->in[c->in_len] = 0;
    char *head = (char *)c->in, *end = strstr(head, "\r\n\r\n");
    if (!end) {
        if (c->in_len > 8192 || strlen(head) < c->in_len) {
            fail_handshake(c, "bad WebSocket upgrade answer");
            return -1;
        }
        return 0;
    }
    size_t head_len = (size_t)(end + 4 - head), rest = c->in_len - head_len;
    *end = 0;
    char *acc = strcasestr(head, "\r\nSec-WebSocket-Accept:");
    if (strncmp(head, "HTTP/1.1 101", 12) || !acc || !strstr(acc, ws_accept_want)) {
        char line[96];
        snprintf(line, sizeof(line), "WebSocket upgrade refused: %.60s", head);
        *strchrnul(line, '\r') = 0;
        fail_handshake(c, line);
        return -1;
    }
    memcpy(d, c->in + head_len, rest); /* rest <= n: the head ended in this chunk */
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
    send_connect(c);
    return (long)rest;
}

/* --ws: strips the frame heads from d[0..n) in place, leaving the MQTT bytes
 * of data frames at the start of d; returns their number, or -1 if closed. */
static long ws_unframe(struct cl *c, uint8_t *d, size_t n)
{
    size_t r = 0, w = 0;
    while (r < n) {
        if (c->ws_left) {
            size_t k = n - r < c->ws_left ? n - r : (size_t)c->ws_left;
            if (c->ws_data) {
                memmove(d + w, d + r, k);
                w += k;
            }
            r += k;
            c->ws_left -= k;
            continue;
        }
        size_t k = n - r < sizeof(c->hbuf) - c->hlen ? n - r : sizeof(c->hbuf) - c->hlen;
        memcpy(c->hbuf + c->hlen, d + r, k);
        struct ws_head h;
        int rc = ws_parse_head(c->hbuf, c->hlen + k, &h);
        if (rc == 0) { /* all of d taken: the head is longer than what came */
            c->hlen = (uint8_t)(c->hlen + k);
            r += k;
            continue;
        }
        if (rc < 0 || h.masked || (h.op > WS_BINARY && h.op < WS_CLOSE) || h.op > WS_PONG) {
            fprintf(stderr, "loadgen: bad frame from the server\n");
            errors++;
            on_lost(c, 0);
            return -1;
        }
        r += h.head_len - c->hlen;
        c->hlen = 0;
        if (h.op == WS_CLOSE) {
            errno = 0;
            on_lost(c, 0);
            return -1;
        }
        if (h.op == WS_PING)
            frame_reserve(c, WS_PONG, 0);
        c->ws_left = h.len;
        c->ws_data = h.op <= WS_BINARY;
    }
    return (long)w;
}

/* MQTT bytes: whole packets handled, the rest carried in c->in.  False when closed. */
static bool on_mqtt_bytes(struct cl *c, const uint8_t *d, size_t n, uint64_t now)
{
    long used;
    if (c->in_len) {
        if (c->in_len + n > c->in_cap) {
            c->in_cap = (c->in_len + (uint32_t)n) * 2;
            c->in = xrealloc(c->in, c->in_cap);
        }
        memcpy(c->in + c->in_len, d, n);
        c->in_len += (uint32_t)n;
        if ((used = parse(c, c->in, c->in_len, now)) < 0)
            return false;
        memmove(c->in, c->in + used, c->in_len - (size_t)used);
        c->in_len -= (uint32_t)used;
    } else {
        if ((used = parse(c, d, n, now)) < 0)
            return false;
        if ((size_t)used < n) {
            c->in_len = (uint32_t)(n - (size_t)used);
            if (c->in_len > c->in_cap) {
                c->in_cap = c->in_len * 2;
                c->in = xrealloc(c->in, c->in_cap);
            }
            memcpy(c->in, d + used, c->in_len);
        }
    }
    return true;
}

/* Bytes as they came off the transport, in rbuf.  False when closed. */
static bool on_bytes(struct cl *c, uint8_t *d, size_t n)
{
    uint64_t now = now_ns();
    if (c->state == S_UPGRADE) {
        long rest = on_upgrade(c, d, n);
        if (rest < 0)
            return false;
        if (c->state == S_UPGRADE || rest == 0)
            return true;
        n = (size_t)rest;
    }
    if (o.ws) {
        long k = ws_unframe(c, d, n);
        if (k < 0)
            return false;
        n = (size_t)k;
    }
    return on_mqtt_bytes(c, d, n, now);
}

static void on_readable(struct cl *c)
{
    for (;;) { /* plain TCP: one recv a wake-up; TLS: until OpenSSL holds nothing more */
        ssize_t n = cl_recv(c, rbuf, sizeof(rbuf));
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            on_lost(c, n);
            return;
        }
        if (!on_bytes(c, rbuf, (size_t)n))
            return;
        if (!c->ssl)
            break;
    }
    if (c->out_len)
        cl_flush(c);
}

static void on_event(struct cl *c, uint32_t ev)
{
    if (c->state == S_CLOSED)
        return;
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            char why[120];
            snprintf(why, sizeof(why), "connect: %s", strerror(err));
            fail_handshake(c, why);
            return;
        }
        if (o.tls) {
            if (!(c->ssl = SSL_new(tls_ctx)) || SSL_set_fd(c->ssl, c->fd) != 1)
                die("SSL_new");
            SSL_set_connect_state(c->ssl);
            c->state = S_TLS;
            tls_step(c);
            return;
        }
        after_transport(c);
        return;
    }
    if (c->state == S_TLS) {
        tls_step(c);
        return;
    }
    if (ev & EPOLLOUT)
        if (cl_flush(c) < 0)
            return;
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
        on_readable(c);
}

/* One pass of epoll_wait; returns after at most timeout_ms. */
static void poll_once(int timeout_ms, int tfd, void (*on_tick)(void))
{
    struct epoll_event evs[256];
    int n = epoll_wait(ep, evs, 256, timeout_ms);
    if (n < 0 && errno != EINTR)
        die("epoll_wait");
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr == NULL) { /* the timer */
            uint64_t ticks;
            if (read(tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
                die("timerfd");
            if (on_tick)
                on_tick();
            continue;
        }
        if (evs[i].data.ptr == (void *)&ep) /* stdin (idle mode) */
            continue;
        on_event(evs[i].data.ptr, evs[i].events);
    }
}

/* ---- publishers and subscribers: throughput and latency ---------------- */

static uint32_t per_message; /* deliveries of one message: subs with fanout, else 1 */

static bool may_send(uint32_t p)
{
    if (phase != P_RUN || (o.max_msgs >= 0 && sent_total >= (uint64_t)o.max_msgs))
        return false;
    return sent[p] - deliv[p] / per_message < (uint64_t)o.window;
}

/* Throughput: keep each publisher's window full. */
static void pump(void)
{
    for (int i = 0; i < o.pubs; i++) {
        struct cl *c = &pubs[i];
        if (c->state != S_READY)
            continue;
        bool queued = false;
        while (c->out_len - c->out_off < OUT_BATCH && may_send((uint32_t)i)) {
            queue_publish(c);
            queued = true;
        }
        if (queued)
            cl_flush(c);
    }
}

/* Latency: send what the fixed rate says is due, round robin over publishers. */
static uint64_t t_run;
static int pace_fd = -1;

/* Arm the timer for the next message that falls due (one wake-up a message). */
static void pace_arm(void)
{
    uint64_t at = t_run + (uint64_t)((double)(sent_total + 1) * 1e9 / o.rate) + 1;
    struct itimerspec its = {{0, 0}, {(time_t)(at / NS), (long)(at % NS)}};
    if (timerfd_settime(pace_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        die("timerfd_settime");
}

static void pace(void)
{
    if (phase != P_RUN)
        return;
    uint64_t due = (uint64_t)((double)(now_ns() - t_run) * o.rate / 1e9);
    bool touched[MAX_CLIENTS] = {0};
    while (sent_total < due && (o.max_msgs < 0 || sent_total < (uint64_t)o.max_msgs)) {
        uint32_t i = (uint32_t)(sent_total % (uint64_t)o.pubs);
        if (pubs[i].state != S_READY)
            break;
        queue_publish(&pubs[i]);
        touched[i] = true;
    }
    for (int i = 0; i < o.pubs; i++)
        if (touched[i])
            cl_flush(&pubs[i]);
    pace_arm();
}

static bool all_ready(void)
{
    for (int i = 0; i < o.pubs; i++)
        if (pubs[i].state != S_READY)
            return false;
    for (int i = 0; i < o.subs; i++)
        if (subs[i].state != S_READY)
            return false;
    return true;
}

static bool any_closed(void)
{
    for (int i = 0; i < o.pubs; i++)
        if (pubs[i].state == S_CLOSED)
            return true;
    for (int i = 0; i < o.subs; i++)
        if (subs[i].state == S_CLOSED)
            return true;
    return false;
}

/* CPU seconds this process used (user + system). */
static double cpu_used(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double q)
{
    if (!lat_len)
        return 0;
    size_t i = (size_t)(q * (double)(lat_len - 1) + 0.5);
    return lat[i] / 1000.0;
}

static void close_all(struct cl *set, int n)
{
    for (int i = 0; i < n; i++) {
        if (set[i].state == S_CLOSED)
            continue;
        send_disconnect(&set[i]);
        cl_flush(&set[i]);
        cl_close(&set[i]);
    }
}

static int run_pubsub(bool latency)
{
    if (o.pubs < 1 || o.pubs > MAX_CLIENTS || o.subs < 1 || o.subs > MAX_CLIENTS)
        die("--pubs and --subs must be 1..8");
    if (!o.fanout && o.pubs != o.subs)
        die("without --fanout, publisher i feeds subscriber i: --pubs must equal --subs");
    if (o.size < 16)
        die("--size must be at least 16 (the payload carries a timestamp)");
    per_message = o.fanout ? (uint32_t)o.subs : 1;
    for (int i = 0; i < o.subs; i++)
        if (cl_open(&subs[i], R_SUB, (uint32_t)i) < 0)
            die("connect");
    for (int i = 0; i < o.pubs; i++)
        if (cl_open(&pubs[i], R_PUB, (uint32_t)i) < 0)
            die("connect");

    int tfd = -1;
    if (latency) {
        tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (tfd < 0)
            die("timerfd");
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &e);
        lat_cap = (size_t)(o.rate * (o.duration + o.warmup) * per_message) + 1024;
        lat = xrealloc(NULL, lat_cap * sizeof(*lat));
    }

    uint64_t t0 = now_ns();
    while (!all_ready()) {
        if (any_closed() || now_ns() - t0 > HANDSHAKE_TIMEOUT_NS) {
            fprintf(stderr, "loadgen: publishers/subscribers not ready in time\n");
            return 1;
        }
        poll_once(10, tfd, NULL);
    }

    phase = P_RUN;
    t_run = now_ns();
    if (latency) {
        pace_fd = tfd;
        pace_arm();
    }
    t_measure = t_run + (uint64_t)(o.warmup * NS);
    uint64_t t_end = t_measure + (uint64_t)(o.duration * NS), recv_at_start = 0, t_start_real = 0;
    bool measuring = false;
    uint64_t recv_in_window = 0, t_window = 0;
    while (phase == P_RUN) {
        if (!latency)
            pump();
        poll_once(latency ? 50 : 2, tfd, latency ? pace : NULL);
        uint64_t now = now_ns();
        if (!measuring && now >= t_measure) {
            measuring = true;
            recv_at_start = recv_total;
            t_start_real = now;
        }
        bool count_done = o.max_msgs >= 0 && sent_total >= (uint64_t)o.max_msgs;
        if (now >= t_end || count_done || any_closed()) {
            recv_in_window = recv_total - recv_at_start;
            t_window = now - (measuring ? t_start_real : t_run);
            if (!measuring)
                recv_in_window = recv_total;
            phase = P_DRAIN;
        }
    }
    if (tfd >= 0)
        close(tfd);
    /* Wait for what is on its way; bounded. */
    uint64_t expect = sent_total * per_message, t_drain = now_ns();
    while (recv_total < expect && now_ns() - t_drain < (uint64_t)(o.drain * NS) && !any_closed())
        poll_once(10, -1, NULL);
    uint64_t t_done = now_ns();
    phase = P_DONE;
    close_all(pubs, o.pubs);
    close_all(subs, o.subs);

    double elapsed = (double)(t_done - t_run) / 1e9, window_s = (double)t_window / 1e9;
    uint64_t lost = expect > recv_total ? expect - recv_total : 0;
    if (latency) {
        qsort(lat, lat_len, sizeof(*lat), cmp_u32);
        printf("mode=latency qos=%d size=%d pubs=%d subs=%d fanout=%d rate=%.0f samples=%zu p50_us=%.1f "
               "p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f sent=%llu recv=%llu lost=%llu errors=%llu\n",
               o.qos, o.size, o.pubs, o.subs, o.fanout, o.rate, lat_len, pct(0.50), pct(0.90), pct(0.99),
               pct(0.999), lat_len ? lat[lat_len - 1] / 1000.0 : 0, (unsigned long long)sent_total,
               (unsigned long long)recv_total, (unsigned long long)lost, (unsigned long long)errors);
    } else {
        double rate = o.max_msgs >= 0 ? (double)recv_total / elapsed : (double)recv_in_window / window_s;
        uint64_t acks = 0;
        for (int i = 0; i < o.pubs; i++)
            acks += acked[i];
        printf("mode=throughput qos=%d size=%d pubs=%d subs=%d fanout=%d window=%ld rate=%.0f "
               "window_s=%.3f recv_window=%llu sent=%llu recv=%llu lost=%llu puback=%llu bad=%llu "
               "errors=%llu elapsed_s=%.3f cpu_s=%.3f\n",
               o.qos, o.size, o.pubs, o.subs, o.fanout, o.window, rate, window_s,
               (unsigned long long)recv_in_window, (unsigned long long)sent_total,
               (unsigned long long)recv_total, (unsigned long long)lost, (unsigned long long)acks,
               (unsigned long long)recv_bad, (unsigned long long)errors, elapsed, cpu_used());
    }
    return lost || errors || recv_bad ? 2 : 0;
}

/* ---- idle connections -------------------------------------------------- */

static struct cl *many;

static void expire_handshakes(long n)
{
    uint64_t now = now_ns();
    for (long i = 0; i < n; i++) {
        struct cl *c = &many[i];
        if (c->state == S_CLOSED || c->state == S_READY || now - c->started < HANDSHAKE_TIMEOUT_NS)
            continue;
        cl_close(c);
        errors++;
        if (c->role == R_IDLE)
            failed++;
        active--;
    }
}

static int run_idle(void)
{
    many = xrealloc(NULL, (size_t)o.conns * sizeof(*many));
    for (long i = 0; i < o.conns; i++)
        many[i].state = S_CLOSED;
    long started = 0;
    uint64_t t0 = now_ns();
    while (ready + failed < o.conns) {
        while (active < o.parallel && started < o.conns) {
            if (cl_open(&many[started], R_IDLE, (uint32_t)started) < 0) {
                if (failed < 3)
                    fprintf(stderr, "loadgen: socket/connect: %s\n", strerror(errno));
                failed++;
                errors++;
            } else {
                active++;
            }
            started++;
        }
        poll_once(10, -1, NULL);
        expire_handshakes(started);
        if (now_ns() - t0 > 120 * NS) {
            fprintf(stderr, "loadgen: idle: opening took too long\n");
            break;
        }
    }
    double open_s = (double)(now_ns() - t0) / 1e9;
    printf("ready conns=%ld ok=%ld failed=%ld open_s=%.3f\n", o.conns, ready, failed, open_s);
    fflush(stdout);

    /* Hold until the orchestrator says so (a line or EOF on stdin), or --hold. */
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = (void *)&ep};
    bool watch_stdin = epoll_ctl(ep, EPOLL_CTL_ADD, 0, &e) == 0;
    uint64_t th = now_ns();
    long dropped = 0;
    while (now_ns() - th < (uint64_t)(o.hold * NS)) {
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 100);
        bool go = false;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == (void *)&ep) {
                go = true;
                continue;
            }
            struct cl *c = evs[i].data.ptr;
            on_event(c, evs[i].events);
            if (c->state == S_CLOSED)
                dropped++;
        }
        if (go || (!watch_stdin && o.hold <= 0))
            break;
    }
    phase = P_DONE;
    uint64_t tc = now_ns();
    long closed = 0;
    for (long i = 0; i < o.conns; i++) {
        if (many[i].state == S_CLOSED)
            continue;
        send_disconnect(&many[i]);
        cl_flush(&many[i]);
        cl_close(&many[i]);
        closed++;
    }
    printf("closed conns=%ld dropped_while_held=%ld close_s=%.3f errors=%llu\n", closed, dropped,
           (double)(now_ns() - tc) / 1e9, (unsigned long long)errors);
    return failed || dropped ? 2 : 0;
}

/* ---- connection rate -------------------------------------------------- */

static long cycle_seq;

static void start_cycle(struct cl *c)
{
    if (cl_open(c, R_CYCLE, (uint32_t)cycle_seq++) < 0) {
        if (errors < 5)
            fprintf(stderr, "loadgen: socket/connect: %s\n", strerror(errno));
        errors++;
        return;
    }
    active++;
}

static int run_connrate(void)
{
    many = xrealloc(NULL, (size_t)o.parallel * sizeof(*many));
    for (long i = 0; i < o.parallel; i++)
        many[i].state = S_CLOSED;
    uint64_t t0 = now_ns(), t_end = t0 + (uint64_t)(o.duration * NS);
    long limit = o.max_msgs >= 0 ? o.max_msgs : 1000000;
    while (now_ns() < t_end && cycle_seq < limit) {
        for (long i = 0; i < o.parallel && cycle_seq < limit; i++)
            if (many[i].state == S_CLOSED)
                start_cycle(&many[i]);
        poll_once(5, -1, NULL);
        expire_handshakes(o.parallel);
        if (errors > 1000) {
            fprintf(stderr, "loadgen: connrate: too many errors\n");
            break;
        }
    }
    /* Let the ones under way finish; bounded. */
    uint64_t td = now_ns();
    while (active > 0 && now_ns() - td < 2 * NS) {
        poll_once(5, -1, NULL);
        expire_handshakes(o.parallel);
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    phase = P_DONE;
    for (long i = 0; i < o.parallel; i++)
        cl_close(&many[i]);
    printf("mode=connrate parallel=%ld completed=%ld elapsed_s=%.3f rate=%.0f errors=%llu\n", o.parallel,
           completed, elapsed, (double)completed / elapsed, (unsigned long long)errors);
    return errors ? 2 : 0;
}

/* ---- free ports -------------------------------------------------------- */

static int run_freeport(int n)
{
    int fds[64], got = 0;
    srand((unsigned)(now_ns() ^ (uint64_t)getpid()));
    for (int tries = 0; got < n && got < 64 && tries < 10000; tries++) {
        int port = 20000 + rand() % 12000; /* below the ephemeral range (32768-) */
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            fds[got++] = fd;
            printf("%d\n", port);
        } else {
            close(fd);
        }
    }
    for (int i = 0; i < got; i++)
        close(fds[i]);
    return got == n ? 0 : 1;
}

/* ---- command line ------------------------------------------------------ */

static const char usage[] =
    "usage: loadgen MODE [options]\n"
    "modes: throughput | latency | idle | connrate | freeport [N]\n"
    "  -a, --host ADDR      target address (127.0.0.1)\n"
    "  -p, --port PORT      target port (required)\n"
    "  -q, --qos 0|1        QoS of PUBLISH and SUBSCRIBE (0)\n"
    "  -s, --size BYTES     payload size, >= 16 (64)\n"
    "  -P, --pubs N         publishers (4)       -S, --subs N   subscribers (4)\n"
    "  -f, --fanout         every subscriber takes every topic (bench/#); default: subscriber i\n"
    "                       takes bench/i only, which publisher i publishes to\n"
    "  -d, --duration SEC   measured time (5); connrate: how long to run\n"
    "  -w, --warmup SEC     time before measuring (1)\n"
    "  -W, --window N       throughput: messages per publisher sent but not yet received (200)\n"
    "  -m, --max N          stop after N messages (throughput/latency) or N connections (connrate)\n"
    "  -D, --drain SEC      how long to wait for messages in flight at the end (5)\n"
    "  -r, --rate N         latency: messages per second over all publishers (1000)\n"
    "  -n, --conns N        idle: connections to open (1000)\n"
    "  -c, --parallel N     idle: handshakes at a time; connrate: connections at a time (64)\n"
    "  -H, --hold SEC       idle: longest hold if stdin says nothing (120)\n"
    "  -k, --keepalive SEC  MQTT keepalive in CONNECT (300)\n"
    "  -u, --ws PATH        MQTT over WebSocket: upgrade at PATH (subprotocol mqtt), one frame a packet\n"
    "  -t, --tls            TLS (no certificate check); with --ws: wss://\n"
    "  --user NAME, --password TEXT  in every CONNECT (a token, for the jwt handler)\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 64;
    }
    mode = argv[1];
    if (!strcmp(mode, "freeport"))
        return run_freeport(argc > 2 ? atoi(argv[2]) : 1);
    static const struct option lo[] = {
        {"host", 1, 0, 'a'},     {"port", 1, 0, 'p'},    {"qos", 1, 0, 'q'},      {"size", 1, 0, 's'},
        {"pubs", 1, 0, 'P'},     {"subs", 1, 0, 'S'},    {"fanout", 0, 0, 'f'},   {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'w'},   {"window", 1, 0, 'W'},  {"max", 1, 0, 'm'},      {"drain", 1, 0, 'D'},
        {"rate", 1, 0, 'r'},     {"conns", 1, 0, 'n'},   {"parallel", 1, 0, 'c'}, {"hold", 1, 0, 'H'},
        {"keepalive", 1, 0, 'k'}, {"ws", 1, 0, 'u'},     {"tls", 0, 0, 't'},      {"help", 0, 0, 'h'},
        {"user", 1, 0, 'U'},     {"password", 1, 0, 'X'}, {0, 0, 0, 0}};
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "a:p:q:s:P:S:fd:w:W:m:D:r:n:c:H:k:u:th", lo, NULL)) != -1) {
        switch (ch) {
        case 'a': o.host = optarg; break;
        case 'p': o.port = atoi(optarg); break;
        case 'q': o.qos = atoi(optarg); break;
        case 's': o.size = atoi(optarg); break;
        case 'P': o.pubs = atoi(optarg); break;
        case 'S': o.subs = atoi(optarg); break;
        case 'f': o.fanout = true; break;
        case 'd': o.duration = atof(optarg); break;
        case 'w': o.warmup = atof(optarg); break;
        case 'W': o.window = atol(optarg); break;
        case 'm': o.max_msgs = atol(optarg); break;
        case 'D': o.drain = atof(optarg); break;
        case 'r': o.rate = atof(optarg); break;
        case 'n': o.conns = atol(optarg); break;
        case 'c': o.parallel = atol(optarg); break;
        case 'H': o.hold = atof(optarg); break;
        case 'k': o.keepalive = atoi(optarg); break;
        case 'u': o.ws = optarg; break;
        case 't': o.tls = true; break;
        case 'U': o.user = optarg; break;
        case 'X': o.password = optarg; break;
        default: fputs(usage, ch == 'h' ? stdout : stderr); return ch == 'h' ? 0 : 64;
        }
    }
    if (o.port <= 0 || o.port > 65535 || (o.qos != 0 && o.qos != 1) || o.size > 256 * 1024 ||
        (o.user && strlen(o.user) > 65535) || (o.password && strlen(o.password) > 65535) ||
        o.window < 1 || o.conns < 1 || o.parallel < 1 || o.rate <= 0 || o.duration <= 0 ||
        o.duration > 600 || o.hold > 600) {
        fputs("loadgen: bad option (see --help)\n", stderr);
        return 64;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)o.port);
    if (inet_pton(AF_INET, o.host, &target.sin_addr) != 1) {
        fputs("loadgen: --host must be an IPv4 address\n", stderr);
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    if (o.ws && (o.ws[0] != '/' || strpbrk(o.ws, " \r\n") || ws_accept(ws_key, ws_accept_want) < 0)) {
        fputs("loadgen: --ws PATH must start with / and hold no space\n", stderr);
        return 64;
    }
    if (o.tls) {
        if (!(tls_ctx = SSL_CTX_new(TLS_client_method())))
            die("SSL_CTX_new");
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
    rng ^= now_ns() ^ (uint64_t)getpid() << 32;
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
    if (!strcmp(mode, "throughput"))
        return run_pubsub(false);
    if (!strcmp(mode, "latency"))
        return run_pubsub(true);
    if (!strcmp(mode, "idle"))
        return run_idle();
    if (!strcmp(mode, "connrate"))
        return run_connrate();
    fputs(usage, stderr);
    return 64;
}
