/*
 * wsload: the WebSocket load generator of bench/http_ws.sh.
 *
 * One thread, one epoll loop, non-blocking sockets, RFC 6455 framed by hand
 * (wsutil.h): each connection sends the upgrade GET, checks the 101 and its
 * Sec-WebSocket-Accept, then sends binary messages masked with a fresh key
 * each, as a client must, and checks every echo (unmasked, binary, FIN, its
 * own connection, sequence number and payload bytes).  Every mode is bounded
 * in time.  Each run prints one line of key=value pairs on stdout (idle mode
 * prints one per step); diagnostics go to stderr.  Throughput: recv and rate
 * are of the measured seconds, recv_total of the whole run (warm-up and the
 * drain of the last window included), cpu_s is wsload's own over the measured
 * seconds.  Exit status 2: errors,
 * wrong echoes or lost messages (the line says which).
 *
 *   wsload throughput -p PORT [options]   N WebSockets, each keeping W messages in flight
 *   wsload latency -p PORT [options]      messages paced at a fixed rate; round trip p50/p99
 *   wsload idle -p PORT -n N              open N WebSockets, print "ready ...", then obey
 *                                         lines on stdin: "msg" (one echo on each), "close"
 *                                         (or EOF: close them all, print "closed ...", exit)
 *
 * Payload (at least 16 bytes): u32 connection, u32 sequence, u64
 * CLOCK_MONOTONIC ns at send, then bytes that depend on the sequence.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "wsutil.h"

#define MAX_HEAD 8192
#define PAT_LEN 256

enum state { S_CONNECTING, S_SHAKING, S_OPEN, S_CLOSING, S_CLOSED };
enum mode { M_THROUGHPUT, M_LATENCY, M_IDLE };

struct cl {
    int fd;
    uint32_t id;
    enum state st;
    char accept[WS_ACCEPT_LEN + 1];
    uint8_t *r;
    size_t rlen, rcap;
    uint8_t *w;
    size_t woff, wlen, wcap;
    bool pollout;
    uint32_t next_send, next_recv; /* sequence numbers */
    uint64_t rng;
};

static struct {
    const char *host, *path;
    int port;
    long conns, size, window, rate, parallel;
    double duration, warmup;
} o = {"127.0.0.1", "/ws/echo", 0, 1, 64, 100, 1000, 64, 3, 0.5};

static enum mode mode;
static int ep;
static struct cl *cls;
static uint8_t *pat;         /* payload bytes: message seq uses pat + seq % PAT_LEN */
static bool sending;         /* throughput: each echo is followed by the next message */
static uint64_t recvd, sent; /* messages echoed and sent, all connections */
static uint64_t errors, bad, closes_clean;
static long n_open, n_failed, n_closed;
static uint64_t *samples; /* latency: round trips in ns */
static size_t n_samples, max_samples;
static bool measuring;
static size_t rchunk = 256 * 1024; /* room for a read; idle mode: 4 KiB */

static uint64_t rnd(struct cl *c) /* xorshift64 */
{
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return c->rng;
}

static void fail(struct cl *c, const char *what)
{
    if (errors++ < 5)
        fprintf(stderr, "wsload: connection %u: %s\n", c->id, what);
}

static void watch(struct cl *c, bool out)
{
    if (c->pollout == out)
        return;
    c->pollout = out;
    struct epoll_event e = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void cl_close(struct cl *c)
{
    if (c->st == S_CLOSED)
        return;
    if (c->st == S_OPEN || c->st == S_CLOSING)
        n_open--;
    c->st = S_CLOSED;
    close(c->fd);
    c->fd = -1;
    free(c->r);
    free(c->w);
    c->r = c->w = NULL;
    c->rlen = c->rcap = c->woff = c->wlen = c->wcap = 0;
    n_closed++;
}

static void cl_broken(struct cl *c, const char *what)
{
    if (c->st < S_OPEN)
        n_failed++;
    fail(c, what);
    cl_close(c);
}

static int flush(struct cl *c)
{
    if (ws_send_queued(c->fd, c->w, &c->woff, c->wlen) < 0) {
        cl_broken(c, strerror(errno));
        return -1;
    }
    if (c->woff == c->wlen)
        c->woff = c->wlen = 0;
    watch(c, c->wlen > 0);
    return 0;
}

/* A masked frame queued (not written). */
static int queue_frame(struct cl *c, uint8_t op, const uint8_t *p, size_t n)
{
    if (ws_reserve(&c->w, &c->wcap, c->wlen + WS_MAX_HEAD + n, 4096) < 0)
        return -1;
    uint64_t k = rnd(c);
    uint8_t mask[4];
    memcpy(mask, &k, 4);
    uint8_t *f = c->w + c->wlen;
    size_t hl = ws_write_head(f, true, op, n, mask);
    if (p)
        memcpy(f + hl, p, n);
    ws_mask(f + hl, n, mask, 0);
    c->wlen += hl + n;
    return 0;
}

/* The next message of c, queued. */
static int queue_message(struct cl *c)
{
    size_t n = (size_t)o.size;
    if (ws_reserve(&c->w, &c->wcap, c->wlen + WS_MAX_HEAD + n, 4096) < 0)
        return -1;
    uint64_t k = rnd(c), t = now_ns();
    uint8_t mask[4];
    memcpy(mask, &k, 4);
    uint8_t *f = c->w + c->wlen;
    size_t hl = ws_write_head(f, true, WS_BINARY, n, mask);
    uint8_t *p = f + hl;
    uint32_t seq = c->next_send++;
    memcpy(p, &c->id, 4);
    memcpy(p + 4, &seq, 4);
    memcpy(p + 8, &t, 8);
    memcpy(p + 16, pat + seq % PAT_LEN + 16, n - 16);
    ws_mask(p, n, mask, 0);
    c->wlen += hl + n;
    sent++;
    return 0;
}

static void open_next(void);

/* ---- receiving ----------------------------------------------------------- */

static void on_message(struct cl *c, const struct ws_head *f, const uint8_t *p)
{
    uint32_t id, seq;
    uint64_t t;
    if (f->len != (uint64_t)o.size || f->op != WS_BINARY || !f->fin) {
        if (bad++ < 5)
            fprintf(stderr, "wsload: connection %u: echo of %llu bytes, opcode %u, fin %d (sent %ld, 2, 1)\n", c->id,
                    (unsigned long long)f->len, f->op, f->fin, o.size);
        return;
    }
    memcpy(&id, p, 4);
    memcpy(&seq, p + 4, 4);
    memcpy(&t, p + 8, 8);
    if (id != c->id || seq != c->next_recv || memcmp(p + 16, pat + seq % PAT_LEN + 16, (size_t)o.size - 16)) {
        if (bad++ < 5)
            fprintf(stderr, "wsload: connection %u: wrong echo (connection %u, sequence %u, expected %u%s)\n", c->id,
                    id, seq, c->next_recv, id == c->id && seq == c->next_recv ? ", payload differs" : "");
        if (id == c->id && seq >= c->next_recv && seq < c->next_send)
            c->next_recv = seq + 1;
        return;
    }
    c->next_recv++;
    recvd++;
    if (mode == M_LATENCY && measuring && n_samples < max_samples)
        samples[n_samples++] = now_ns() - t;
    if (mode == M_THROUGHPUT && sending && queue_message(c) < 0)
        cl_broken(c, "out of memory");
}

/* Frames from the server: unmasked. */
static size_t frames(struct cl *c, const uint8_t *d, size_t n)
{
    size_t off = 0;
    while (c->st == S_OPEN || c->st == S_CLOSING) {
        struct ws_head f;
        int rc = ws_parse_head(d + off, n - off, &f);
        if (rc == 0)
            break;
        if (rc < 0 || f.masked) {
            cl_broken(c, rc < 0 ? "frame with RSV bits" : "masked frame from the server");
            return n;
        }
        if (n - off < f.head_len + f.len)
            break;
        const uint8_t *p = d + off + f.head_len;
        off += f.head_len + (size_t)f.len;
        if (f.op == WS_CLOSE) {
            if (c->st == S_CLOSING)
                closes_clean++;
            else
                fail(c, "the server closed the WebSocket");
            cl_close(c);
            return n;
        }
        if (f.op == WS_PING) {
            queue_frame(c, WS_PONG, p, (size_t)f.len);
            continue;
        }
        if (f.op != WS_PONG)
            on_message(c, &f, p);
    }
    return off;
}

/* The answer to the upgrade: used bytes, 0 for more, or -1. */
static ssize_t answer(struct cl *c)
{
    uint8_t *e = memmem(c->r, c->rlen, "\r\n\r\n", 4);
    if (!e)
        return c->rlen > MAX_HEAD ? -1 : 0;
    size_t head = (size_t)(e - c->r) + 4;
    char *h = (char *)c->r;
    h[head - 2] = '\0';
    if (strncmp(h, "HTTP/1.1 101", 12)) {
        char line[160];
        snprintf(line, sizeof(line), "upgrade refused: %.*s", (int)strcspn(h, "\r\n"), h);
        cl_broken(c, line);
        return -1;
    }
    bool ok = false;
    for (char *l = strstr(h, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
        if (!strncasecmp(l + 2, "sec-websocket-accept:", 21)) {
            char *v = l + 23;
            while (*v == ' ')
                v++;
            ok = !strncmp(v, c->accept, WS_ACCEPT_LEN) && strchr("\r \t", v[WS_ACCEPT_LEN]);
        }
    }
    if (!ok) {
        cl_broken(c, "wrong or missing Sec-WebSocket-Accept");
        return -1;
    }
    c->st = S_OPEN;
    n_open++;
    if (mode == M_IDLE)
        open_next();
    if (mode == M_THROUGHPUT && sending)
        for (long i = 0; i < o.window; i++)
            queue_message(c);
    return (ssize_t)head;
}

static void on_read(struct cl *c)
{
    for (;;) {
        if (ws_reserve(&c->r, &c->rcap, c->rlen + rchunk, 4096) < 0) {
            cl_broken(c, "out of memory");
            return;
        }
        size_t room = c->rcap - c->rlen;
        ssize_t k = ws_recv(c->fd, c->r + c->rlen, room);
        if (k == 0) {
            cl_broken(c, c->st == S_CLOSING ? "closed without a close frame" : "connection closed");
            return;
        }
        if (k < 0) {
            if (errno != EAGAIN)
                cl_broken(c, strerror(errno));
            break;
        }
        c->rlen += (size_t)k;
        size_t used = 0;
        if (c->st == S_SHAKING) {
            ssize_t a = answer(c);
            if (a < 0)
                return;
            used = (size_t)a;
        }
        if (c->st == S_OPEN || c->st == S_CLOSING)
            used += frames(c, c->r + used, c->rlen - used);
        if (c->st == S_CLOSED)
            return;
        memmove(c->r, c->r + used, c->rlen - used);
        c->rlen -= used;
        if ((size_t)k < room)
            break;
    }
    if (c->st != S_CLOSED)
        flush(c);
}

/* ---- connecting ---------------------------------------------------------- */

static void start(struct cl *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
    inet_pton(AF_INET, o.host, &a.sin_addr);
    c->st = S_CONNECTING;
    if (c->fd < 0 || (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS)) {
        n_failed++;
        fail(c, strerror(errno));
        if (c->fd >= 0)
            close(c->fd);
        c->st = S_CLOSED;
        n_closed++;
        return;
    }
    c->pollout = true;
    struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
}

static void connected(struct cl *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        cl_broken(c, strerror(err));
        return;
    }
    uint8_t raw[16];
    char key[32], req[512];
    for (int i = 0; i < 16; i += 8) {
        uint64_t k = rnd(c);
        memcpy(raw + i, &k, 8);
    }
    EVP_EncodeBlock((unsigned char *)key, raw, 16);
    ws_accept(key, c->accept);
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     o.path, o.host, o.port, key);
    c->st = S_SHAKING;
    if (ws_reserve(&c->w, &c->wcap, (size_t)n, 4096) < 0) {
        cl_broken(c, "out of memory");
        return;
    }
    memcpy(c->w, req, (size_t)n);
    c->wlen = (size_t)n;
    flush(c);
}

static long next_to_open;

/* Idle mode opens at most o.parallel at a time; the others start as these finish. */
static void open_next(void)
{
    while (next_to_open < o.conns && next_to_open - n_open - n_closed < o.parallel)
        start(&cls[next_to_open++]);
}

static void poll_once(int ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(ep, evs, 256, ms);
    for (int i = 0; i < n; i++) {
        struct cl *c = evs[i].data.ptr;
        if (!c)
            continue; /* stdin or the timer: the caller looks */
        if (c->st == S_CLOSED)
            continue;
        if (c->st == S_CONNECTING) {
            if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                connected(c);
            continue;
        }
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_read(c);
        else if (evs[i].events & EPOLLOUT)
            flush(c);
    }
}

static bool all_settled(void) { return next_to_open >= o.conns && n_open + n_closed >= o.conns; }

/* Opens every connection (idle mode: o.parallel at a time); false after 60 s. */
static bool open_all(void)
{
    uint64_t end = now_ns() + 60 * NS;
    if (mode != M_IDLE)
        o.parallel = o.conns;
    open_next();
    while (!all_settled() && now_ns() < end) {
        poll_once(10);
        if (mode == M_IDLE)
            open_next();
    }
    return n_open == o.conns;
}

/* Runs the loop until every open connection has its echoes (or the time is up). */
static void drain(double seconds)
{
    uint64_t end = now_ns() + (uint64_t)(seconds * NS);
    for (;;) {
        bool waiting = false;
        for (long i = 0; i < o.conns && !waiting; i++)
            waiting = cls[i].st == S_OPEN && cls[i].next_recv != cls[i].next_send;
        if (!waiting || now_ns() >= end)
            return;
        poll_once(10);
    }
}

static uint64_t lost(void)
{
    uint64_t n = 0;
    for (long i = 0; i < o.conns; i++)
        n += cls[i].next_send - cls[i].next_recv;
    return n;
}

/* A close (1000) to each, their answers awaited up to 3 s, then every socket closed. */
static void close_all(void)
{
    static const uint8_t bye[2] = {0x03, 0xe8};
    for (long i = 0; i < o.conns; i++) {
        struct cl *c = &cls[i];
        if (c->st == S_OPEN) {
            queue_frame(c, WS_CLOSE, bye, 2);
            c->st = S_CLOSING;
            flush(c);
        }
    }
    uint64_t end = now_ns() + 3 * NS;
    while (n_open > 0 && now_ns() < end)
        poll_once(10);
    for (long i = 0; i < o.conns; i++)
        cl_close(&cls[i]);
}

/* ---- modes --------------------------------------------------------------- */

static int run_throughput(void)
{
    sending = true;
    if (!open_all())
        fprintf(stderr, "wsload: %ld of %ld WebSockets opened\n", n_open, o.conns);
    uint64_t t0 = now_ns(), t_measure = t0 + (uint64_t)(o.warmup * NS), t_end = t_measure + (uint64_t)(o.duration * NS);
    uint64_t r0 = 0;
    double c0 = 0;
    bool started = false;
    for (uint64_t t = t0; t < t_end; t = now_ns()) {
        if (!started && t >= t_measure) {
            started = true;
            r0 = recvd;
            c0 = cpu_s();
            t_measure = t;
        }
        poll_once(started ? (int)((t_end - t) / 1000000 + 1) : (int)((t_measure - t) / 1000000 + 1));
    }
    uint64_t r1 = recvd, t1 = now_ns();
    double c1 = cpu_s();
    sending = false;
    drain(3);
    uint64_t lo = lost();
    close_all();
    double el = (double)(t1 - t_measure) / 1e9;
    printf("mode=throughput conns=%ld open=%ld size=%ld window=%ld recv=%llu elapsed_s=%.3f rate=%.0f recv_total=%llu "
           "lost=%llu bad=%llu errors=%llu clean_closes=%llu cpu_s=%.3f\n",
           o.conns, o.conns - n_failed, o.size, o.window, (unsigned long long)(r1 - r0), el, (double)(r1 - r0) / el,
           (unsigned long long)recvd,
           (unsigned long long)lo, (unsigned long long)bad, (unsigned long long)errors,
           (unsigned long long)closes_clean, c1 - c0);
    return errors || bad || lo || n_failed ? 2 : 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double q) { return n_samples ? (double)samples[(size_t)(q * (double)(n_samples - 1))] / 1e3 : 0; }

static int run_latency(void)
{
    max_samples = (size_t)((double)o.rate * o.duration) + 16;
    samples = malloc(max_samples * sizeof(*samples));
    if (!samples)
        return 1;
    if (!open_all())
        fprintf(stderr, "wsload: %ld of %ld WebSockets opened\n", n_open, o.conns);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    uint64_t iv = NS / (uint64_t)o.rate;
    struct itimerspec its = {.it_interval = {(time_t)(iv / NS), (long)(iv % NS)}, .it_value = {0, 1000}};
    timerfd_settime(tfd, 0, &its, NULL);
    struct epoll_event te = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &te);
    uint64_t t0 = now_ns(), t_measure = t0 + (uint64_t)(o.warmup * NS), t_end = t_measure + (uint64_t)(o.duration * NS);
    uint64_t due = 0, paced = 0;
    long rr = 0;
    for (uint64_t t = t0; t < t_end; t = now_ns()) {
        measuring = t >= t_measure;
        due = (t - t0) / iv + 1;
        while (paced < due) { /* one message per tick; ticks missed are caught up at once */
            struct cl *c = &cls[rr++ % o.conns];
            paced++;
            if (c->st == S_OPEN && queue_message(c) == 0)
                flush(c);
        }
        uint64_t x;
        if (read(tfd, &x, sizeof(x)) < 0 && errno != EAGAIN)
            break;
        poll_once(1);
    }
    measuring = false;
    drain(3);
    uint64_t lo = lost();
    close_all();
    close(tfd);
    qsort(samples, n_samples, sizeof(*samples), cmp_u64);
    printf("mode=latency conns=%ld rate=%ld size=%ld samples=%zu p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f "
           "max_us=%.1f sent=%llu lost=%llu bad=%llu errors=%llu\n",
           o.conns, o.rate, o.size, n_samples, pct(0.5), pct(0.9), pct(0.99), pct(0.999), pct(1), (unsigned long long)sent,
           (unsigned long long)lo, (unsigned long long)bad, (unsigned long long)errors);
    return errors || bad || lo || n_failed ? 2 : 0;
}

static int run_idle(void)
{
    uint64_t t0 = now_ns();
    open_all();
    printf("ready ok=%ld failed=%ld open_s=%.3f errors=%llu\n", n_open, n_failed, (double)(now_ns() - t0) / 1e9,
           (unsigned long long)errors);
    fflush(stdout);
    struct epoll_event se = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &se);
    char line[64];
    size_t ll = 0;
    for (;;) {
        poll_once(100);
        ssize_t k = read(0, line + ll, sizeof(line) - 1 - ll);
        if (k < 0 && errno == EAGAIN)
            continue;
        if (k <= 0)
            break; /* EOF: close */
        ll += (size_t)k;
        line[ll] = '\0';
        char *nl = strchr(line, '\n');
        if (!nl) {
            if (ll == sizeof(line) - 1)
                ll = 0;
            continue;
        }
        *nl = '\0';
        bool msg = !strcmp(line, "msg");
        ll = 0;
        if (!msg)
            break;
        uint64_t r0 = recvd, b0 = bad, t1 = now_ns();
        for (long i = 0; i < o.conns; i++)
            if (cls[i].st == S_OPEN && queue_message(&cls[i]) == 0)
                flush(&cls[i]);
        drain(30);
        printf("echoed ok=%llu bad=%llu lost=%llu open=%ld echo_s=%.3f errors=%llu\n",
               (unsigned long long)(recvd - r0), (unsigned long long)(bad - b0), (unsigned long long)lost(), n_open,
               (double)(now_ns() - t1) / 1e9, (unsigned long long)errors);
        fflush(stdout);
    }
    long was_open = n_open;
    close_all();
    printf("closed n=%ld clean=%llu errors=%llu\n", was_open, (unsigned long long)closes_clean,
           (unsigned long long)errors);
    return errors || bad ? 2 : 0;
}

/* ---- command line -------------------------------------------------------- */

static const char usage[] =
    "usage: wsload MODE -p PORT [options]\n"
    "modes: throughput | latency | idle\n"
    "  -a ADDR      server address (127.0.0.1)\n"
    "  -p PORT      server port\n"
    "  -P PATH      request path (/ws/echo)\n"
    "  -n N         WebSockets (1)\n"
    "  -s BYTES     message size, at least 16 (64)\n"
    "  -W N         throughput: messages in flight per WebSocket (100)\n"
    "  -r RATE      latency: messages per second over all WebSockets (1000)\n"
    "  -d SEC       measured seconds (3)\n"
    "  -w SEC       warm-up seconds before that (0.5)\n"
    "  -c N         idle: WebSockets being opened at once (64)\n";

int main(int argc, char **argv)
{
    if (argc < 2)
        goto usage;
    if (!strcmp(argv[1], "throughput"))
        mode = M_THROUGHPUT;
    else if (!strcmp(argv[1], "latency"))
        mode = M_LATENCY;
    else if (!strcmp(argv[1], "idle"))
        mode = M_IDLE;
    else
        goto usage;
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "a:p:P:n:s:W:r:d:w:c:")) != -1) {
        switch (opt) {
        case 'a': o.host = optarg; break;
        case 'p': o.port = atoi(optarg); break;
        case 'P': o.path = optarg; break;
        case 'n': o.conns = atol(optarg); break;
        case 's': o.size = atol(optarg); break;
        case 'W': o.window = atol(optarg); break;
        case 'r': o.rate = atol(optarg); break;
        case 'd': o.duration = atof(optarg); break;
        case 'w': o.warmup = atof(optarg); break;
        case 'c': o.parallel = atol(optarg); break;
        default: goto usage;
        }
    }
    if (o.port <= 0 || o.port > 65535 || o.conns < 1 || o.size < 16 || o.size > (1 << 24) || o.window < 1 ||
        o.rate < 1 || o.rate > 1000000 || o.parallel < 1 || o.duration <= 0 || o.warmup < 0 || o.duration > 3600)
        goto usage;
    struct in_addr ia;
    if (inet_pton(AF_INET, o.host, &ia) != 1)
        goto usage;
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if ((rlim_t)o.conns + 16 > rl.rlim_cur) {
            fprintf(stderr, "wsload: -n %ld is over the open-file limit (%llu)\n", o.conns,
                    (unsigned long long)rl.rlim_cur);
            return 1;
        }
    }
    pat = malloc(PAT_LEN + (size_t)o.size);
    cls = calloc((size_t)o.conns, sizeof(*cls));
    if (!pat || !cls)
        return 1;
    for (size_t i = 0; i < PAT_LEN + (size_t)o.size; i++)
        pat[i] = (uint8_t)(i * 7 + 3);
    uint64_t seed = now_ns() ^ ((uint64_t)getpid() << 32);
    for (long i = 0; i < o.conns; i++) {
        cls[i].id = (uint32_t)i;
        cls[i].fd = -1;
        cls[i].rng = seed + (uint64_t)i * 0x9e3779b97f4a7c15ull + 1;
    }
    if (mode == M_IDLE) {
        fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
        rchunk = 4096;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    switch (mode) {
    case M_THROUGHPUT: return run_throughput();
    case M_LATENCY: return run_latency();
    case M_IDLE: return run_idle();
    }
usage:
    fputs(usage, stderr);
    return 64;
}
