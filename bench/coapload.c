/*
 * coapload: the CoAP load generator of bench/coap.sh.
 *
 * One thread, one epoll loop.  Each client is its own UDP socket connected
 * to the target (its own source port: one peer and session in mgate, one
 * endpoint in a CoAP server).  A client keeps a window of W requests out:
 * POST (or PUT) with a small payload to a path (and a query: -Q, with the
 * client's own number in it where it says %n, such as a client id for
 * mgate's CoAP bridge), confirmable by default
 * (-N: non-confirmable), each with a 4-byte token (window slot, generation)
 * and a message id of its own.  An answer is matched by its token and, when
 * it is a piggybacked ACK, by its message id too; the slot then sends its
 * next request at once.  A request unanswered after -t ms counts as a
 * timeout and its slot goes on (no retransmission: on loopback a loss is a
 * finding, not noise to hide).  A separate response (empty ACK first, the
 * answer later as CON) is acknowledged.  Every mode is bounded in time.
 * Each run prints one line of key=value pairs on stdout (idle mode prints
 * one per step); diagnostics go to stderr.  Exit status 2: timeouts, lost
 * requests, answers other than 2.xx or socket errors (the line says which).
 *
 *   coapload load -p PORT [options]     N clients, W requests each in flight, D seconds
 *   coapload idle -p PORT -n N          N clients, one request each (-c at a time), then
 *                                       "ready ..."; on "close" or EOF on stdin the sockets
 *                                       close (mgate keeps their sessions: UDP has no end)
 *                                       and "closed ..." is printed
 *   coapload freeport [N]               N UDP ports p on 127.0.0.1 with p and p + 1 free
 *                                       for UDP and TCP (a CoAP server takes all four)
 *
 * Load: recv and rate count answers received within the measured seconds
 * (after the warm-up), latency is of the requests sent within them; after
 * the measured seconds no request is sent and the outstanding ones get up
 * to -t ms (at most 3 s) to arrive: those still missing are "lost".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

#define TOKEN_LEN 4
#define MAX_DGRAM 1500

enum { CON = 0, NON = 1, ACK = 2, RST = 3 };
enum { C_POST = 2, C_PUT = 3 };

struct slot {
    uint64_t sent_ns; /* 0: free */
    uint16_t mid, gen;
};

struct cl {
    int fd;
    uint16_t next_mid;
    uint32_t started;  /* requests sent */
    uint32_t done;     /* requests answered or timed out */
    uint32_t answered;
    struct slot *w;
    uint8_t *req; /* the request, mid and token patched per send */
    size_t req_len;
};

static struct {
    const char *host, *path, *query;
    int port;
    long clients, window, size, parallel, timeout_ms, per_client;
    double duration, warmup;
    int type, code;
} o = {"127.0.0.1", "bench", "", 0, 16, 4, 32, 64, 1000, 0, 3, 0.5, CON, C_POST};

static int ep;
static struct cl *cls;
static bool sending;
static uint64_t t_measure, t_end; /* ns: answers between them count */
static uint64_t recvd, recvd_measured, sent, timeouts, late, not_2xx, errors, seps;
static uint32_t *lat_us;
static size_t n_lat, max_lat;
static long next_client, n_ok, n_failed;

static void error(const char *what)
{
    if (errors++ < 5)
        fprintf(stderr, "coapload: %s: %s\n", what, strerror(errno));
}

/* ---- the request --------------------------------------------------------- */

/* One option (number delta d, value of len n) at p; its length. */
static size_t put_option(uint8_t *p, unsigned d, const void *v, size_t n)
{
    size_t k = 1;
    uint8_t dn = d < 13 ? (uint8_t)d : 13, ln = n < 13 ? (uint8_t)n : 13;
    p[0] = (uint8_t)(dn << 4 | ln);
    if (d >= 13)
        p[k++] = (uint8_t)(d - 13);
    if (n >= 13)
        p[k++] = (uint8_t)(n - 13);
    memcpy(p + k, v, n);
    return k + n;
}

/* Uri-Query option values from o.query, split at '&', "%n" replaced by
 * "PID-K" (client k of this process: unique across runs), into q; their count. */
static int expand_query(long k, char q[][256], int max)
{
    int n = 0;
    for (const char *s = o.query; *s;) {
        size_t len = strcspn(s, "&"), m = 0;
        if (len && n == max)
            return -1;
        for (size_t i = 0; i < len; i++) {
            int w = s[i] == '%' && i + 1 < len && s[i + 1] == 'n'
                        ? snprintf(q[n] + m, 256 - m, "%ld-%ld", (long)getpid(), k)
                        : snprintf(q[n] + m, 256 - m, "%c", s[i]);
            if (w < 0 || (m += (size_t)w) >= 256)
                return -1;
            i += s[i] == '%' && i + 1 < len && s[i + 1] == 'n';
        }
        n += len > 0;
        s += len + (s[len] == '&');
    }
    return n;
}

/* Client k's request: header, a token's room, one Uri-Path option per
 * segment of o.path, one Uri-Query option per part of o.query, payload. */
static int build_request(struct cl *c, long k)
{
    uint8_t p[MAX_DGRAM];
    char q[16][256];
    int nq = expand_query(k, q, 16);
    if (nq < 0)
        return -1;
    p[0] = (uint8_t)(0x40 | o.type << 4 | TOKEN_LEN);
    p[1] = (uint8_t)o.code;
    size_t n = 4 + TOKEN_LEN;
    unsigned last = 0; /* the number of the option before */
    for (const char *s = o.path; *s;) {
        size_t len = strcspn(s, "/");
        if (len > 268 || n + 3 + len > sizeof(p) - 1 - (size_t)o.size)
            return -1;
        if (len) {
            n += put_option(p + n, 11 - last, s, len); /* Uri-Path */
            last = 11;
        }
        s += len + (s[len] == '/');
    }
    for (int i = 0; i < nq; i++) {
        size_t len = strlen(q[i]);
        if (n + 3 + len > sizeof(p) - 1 - (size_t)o.size)
            return -1;
        n += put_option(p + n, 15 - last, q[i], len); /* Uri-Query */
        last = 15;
    }
    if (o.size > 0) {
        p[n++] = 0xFF;
        for (long i = 0; i < o.size; i++)
            p[n++] = (uint8_t)('a' + i % 26);
    }
    if (!(c->req = malloc(n)))
        return -1;
    memcpy(c->req, p, n);
    c->req_len = n;
    return 0;
}

static void send_request(struct cl *c, long i)
{
    struct slot *s = &c->w[i];
    s->mid = c->next_mid++;
    s->gen++;
    uint8_t *req = c->req;
    req[2] = (uint8_t)(s->mid >> 8), req[3] = (uint8_t)s->mid;
    req[4] = (uint8_t)(i >> 8), req[5] = (uint8_t)i, req[6] = (uint8_t)(s->gen >> 8), req[7] = (uint8_t)s->gen;
    s->sent_ns = now_ns();
    c->started++;
    sent++;
    if (send(c->fd, req, c->req_len, MSG_DONTWAIT) < 0)
        error("send"); /* the slot times out */
}

static bool wants_more(const struct cl *c) { return sending && (!o.per_client || c->started < o.per_client); }

/* The slot is done: its next request, if the run goes on. */
static void slot_done(struct cl *c, long i)
{
    c->w[i].sent_ns = 0;
    c->done++;
    if (wants_more(c))
        send_request(c, i);
}

/* ---- answers --------------------------------------------------------------- */

static void record_latency(uint64_t sent_ns, uint64_t now)
{
    if (sent_ns < t_measure || now > t_end)
        return;
    if (n_lat == max_lat) {
        size_t m = max_lat ? max_lat * 2 : 65536;
        uint32_t *p = realloc(lat_us, m * sizeof(*p));
        if (!p)
            return;
        lat_us = p, max_lat = m;
    }
    lat_us[n_lat++] = (uint32_t)((now - sent_ns) / 1000);
}

static void ack_empty(struct cl *c, uint16_t mid)
{
    uint8_t a[4] = {0x40 | ACK << 4, 0, (uint8_t)(mid >> 8), (uint8_t)mid};
    if (send(c->fd, a, sizeof(a), MSG_DONTWAIT) < 0)
        error("send");
}

static void on_datagram(struct cl *c, const uint8_t *d, size_t n)
{
    if (n < 4 || d[0] >> 6 != 1)
        return;
    int type = d[0] >> 4 & 3, tkl = d[0] & 15, code = d[1];
    uint16_t mid = (uint16_t)(d[2] << 8 | d[3]);
    if (type == CON)
        ack_empty(c, mid); /* a separate response, answered or not below */
    if (code == 0) {         /* empty: the ACK of a separate response, or RST */
        if (type == ACK)
            seps++;
        else if (type == RST)
            not_2xx++;
        return;
    }
    if (tkl != TOKEN_LEN || n < 4u + TOKEN_LEN)
        return;
    long i = d[4] << 8 | d[5];
    uint16_t gen = (uint16_t)(d[6] << 8 | d[7]);
    if (i >= o.window || c->w[i].sent_ns == 0 || c->w[i].gen != gen || (type == ACK && c->w[i].mid != mid)) {
        late++; /* an answer to a request that timed out, or a duplicate */
        return;
    }
    uint64_t now = now_ns();
    recvd++;
    if (now >= t_measure && now <= t_end)
        recvd_measured++;
    if (code >> 5 != 2)
        not_2xx++;
    record_latency(c->w[i].sent_ns, now);
    if (++c->answered == o.per_client)
        n_ok++;
    slot_done(c, i);
}

static void on_readable(struct cl *c)
{
    uint8_t buf[MAX_DGRAM];
    for (int k = 0; k < 64; k++) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                error("recv"); /* ECONNREFUSED: nothing listens there */
            return;
        }
        on_datagram(c, buf, (size_t)n);
    }
}

/* ---- clients ----------------------------------------------------------------- */

static int client_open(struct cl *c, const struct sockaddr_in *to)
{
    c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (const struct sockaddr *)to, sizeof(*to)) < 0) {
        error("socket");
        return -1;
    }
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e) < 0) {
        error("epoll_ctl");
        return -1;
    }
    c->next_mid = (uint16_t)random();
    for (long i = 0; i < o.window && wants_more(c); i++)
        send_request(c, i);
    return 0;
}

/* Opens clients while fewer than o.parallel are busy (all at once in load mode). */
static void open_more(const struct sockaddr_in *to)
{
    long busy = next_client - n_ok - n_failed;
    while (next_client < o.clients && busy < o.parallel) {
        struct cl *c = &cls[next_client++];
        if (client_open(c, to) < 0)
            n_failed++;
        else
            busy++;
    }
}

/* Requests older than the timeout: counted, their slots go on. */
static void expire(uint64_t now)
{
    uint64_t limit = (uint64_t)o.timeout_ms * 1000000u;
    for (long k = 0; k < next_client; k++) {
        struct cl *c = &cls[k];
        for (long i = 0; c->fd >= 0 && i < o.window; i++)
            if (c->w[i].sent_ns && c->w[i].sent_ns + limit < now) {
                timeouts++;
                slot_done(c, i);
                if (o.per_client && c->done == o.per_client && c->answered < o.per_client)
                    n_failed++;
            }
    }
}

static void poll_once(int ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(ep, evs, 256, ms);
    for (int i = 0; i < n; i++)
        on_readable(evs[i].data.ptr);
}

static uint64_t outstanding(void)
{
    uint64_t n = 0;
    for (long k = 0; k < next_client; k++)
        for (long i = 0; cls[k].fd >= 0 && i < o.window; i++)
            n += cls[k].w[i].sent_ns != 0;
    return n;
}

/* Runs the loop until nothing is outstanding or the time is up. */
static void drain(uint64_t ns)
{
    uint64_t end = now_ns() + ns;
    while (outstanding() && now_ns() < end)
        poll_once(10);
}

static void close_all(void)
{
    for (long k = 0; k < o.clients; k++)
        if (cls[k].fd >= 0) {
            close(cls[k].fd);
            cls[k].fd = -1;
        }
}

/* ---- modes ----------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static uint32_t pct(double q) { return n_lat ? lat_us[(size_t)(q * (double)(n_lat - 1))] : 0; }

static int run_load(const struct sockaddr_in *to)
{
    sending = true;
    o.parallel = o.clients;
    uint64_t t0 = now_ns(), last_expire = t0;
    t_measure = t0 + (uint64_t)(o.warmup * NS);
    t_end = t_measure + (uint64_t)(o.duration * NS);
    open_more(to);
    double c0 = cpu_s();
    for (uint64_t t = t0; t < t_end;) {
        poll_once(10);
        if ((t = now_ns()) - last_expire > 50000000u) {
            expire(t);
            last_expire = t;
        }
    }
    double c1 = cpu_s();
    sending = false;
    uint64_t grace = (uint64_t)o.timeout_ms * 1000000u;
    drain(grace < 3 * NS ? grace : 3 * NS);
    uint64_t lost = outstanding();
    close_all();
    qsort(lat_us, n_lat, sizeof(*lat_us), cmp_u32);
    printf("mode=load clients=%ld open=%ld window=%ld type=%s method=%s size=%ld recv=%llu elapsed_s=%.3f rate=%.0f "
           "p50_us=%u p99_us=%u max_us=%u sent=%llu recv_total=%llu timeouts=%llu lost=%llu late=%llu not_2xx=%llu "
           "separate=%llu errors=%llu cpu_s=%.3f\n",
           o.clients, o.clients - n_failed, o.window, o.type == CON ? "CON" : "NON", o.code == C_POST ? "POST" : "PUT",
           o.size, (unsigned long long)recvd_measured, o.duration, (double)recvd_measured / o.duration, pct(0.5),
           pct(0.99), n_lat ? lat_us[n_lat - 1] : 0, (unsigned long long)sent, (unsigned long long)recvd,
           (unsigned long long)timeouts, (unsigned long long)lost, (unsigned long long)late,
           (unsigned long long)not_2xx, (unsigned long long)seps, (unsigned long long)errors, c1 - c0);
    fflush(stdout);
    return timeouts || lost || not_2xx || errors || n_failed ? 2 : 0;
}

static int run_idle(const struct sockaddr_in *to)
{
    sending = true;
    o.per_client = 1;
    t_measure = now_ns(), t_end = UINT64_MAX;
    uint64_t t0 = t_measure, end = t0 + 60 * NS, last_expire = t0;
    while (n_ok + n_failed < o.clients && now_ns() < end) {
        open_more(to);
        poll_once(10);
        uint64_t t = now_ns();
        if (t - last_expire > 50000000u) {
            expire(t);
            last_expire = t;
        }
    }
    qsort(lat_us, n_lat, sizeof(*lat_us), cmp_u32);
    printf("ready clients=%ld ok=%ld failed=%ld not_2xx=%llu open_s=%.3f p50_us=%u p99_us=%u\n", o.clients, n_ok,
           n_failed, (unsigned long long)not_2xx, (double)(now_ns() - t0) / 1e9, pct(0.5), pct(0.99));
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof(line), stdin) && strncmp(line, "close", 5) != 0) {
    }
    close_all();
    printf("closed clients=%ld\n", o.clients);
    fflush(stdout);
    return n_failed || not_2xx ? 2 : 0;
}

/* ---- free ports -------------------------------------------------------------- */

static int bind_port(int type, int port)
{
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

static int run_freeport(int n)
{
    int fds[64 * 4], nfd = 0, got = 0, ports[64];
    srandom((unsigned)(now_ns() ^ (uint64_t)getpid()));
    for (int tries = 0; got < n && got < 64 && tries < 10000; tries++) {
        int port = 20000 + (int)(random() % 12000); /* below the ephemeral range (32768-) */
        bool ok = true;
        for (int i = 0; i < got; i++)
            ok = ok && (port > ports[i] + 1 || port < ports[i] - 1);
        int f[4], k = 0;
        for (int q = 0; ok && q < 2; q++)
            for (int t = 0; ok && t < 2; t++)
                ok = (f[k++] = bind_port(t ? SOCK_STREAM : SOCK_DGRAM, port + q)) >= 0;
        if (!ok) {
            while (k-- > 0)
                if (f[k] >= 0)
                    close(f[k]);
            continue;
        }
        memcpy(fds + nfd, f, sizeof(f));
        nfd += 4;
        ports[got++] = port;
        printf("%d\n", port);
    }
    while (nfd-- > 0)
        close(fds[nfd]);
    return got == n ? 0 : 1;
}

/* ---- command line ------------------------------------------------------------ */

static const char usage[] =
    "usage: coapload MODE [options]\n"
    "modes: load | idle | freeport [N]\n"
    "  -H HOST    target address, IPv4 (127.0.0.1)\n"
    "  -p PORT    target UDP port (required)\n"
    "  -n N       clients, each its own socket and source port (16)\n"
    "  -W N       requests in flight per client (4; idle mode: 1)\n"
    "  -s BYTES   payload bytes (32)\n"
    "  -P PATH    Uri-Path, segments split at '/' (bench)\n"
    "  -Q QUERY   Uri-Query, options split at '&'; %n in it: PID-K for client K (none)\n"
    "  -m METHOD  post or put (post)\n"
    "  -N         non-confirmable requests (default: confirmable)\n"
    "  -d SEC     measured seconds (3)\n"
    "  -w SEC     warm-up seconds before them (0.5)\n"
    "  -t MS      a request unanswered this long is a timeout (1000)\n"
    "  -c N       idle mode: clients opening at a time (64)\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 64;
    }
    const char *mode = argv[1];
    if (!strcmp(mode, "freeport"))
        return run_freeport(argc > 2 ? atoi(argv[2]) : 1);
    bool idle = !strcmp(mode, "idle");
    if (!idle && strcmp(mode, "load") != 0) {
        fputs(usage, stderr);
        return 64;
    }
    int ch;
    optind = 2;
    while ((ch = getopt(argc, argv, "H:p:n:W:s:P:Q:m:Nd:w:t:c:h")) != -1) {
        switch (ch) {
        case 'H': o.host = optarg; break;
        case 'p': o.port = atoi(optarg); break;
        case 'n': o.clients = atol(optarg); break;
        case 'W': o.window = atol(optarg); break;
        case 's': o.size = atol(optarg); break;
        case 'P': o.path = optarg; break;
        case 'Q': o.query = optarg; break;
        case 'm':
            if (!strcasecmp(optarg, "post"))
                o.code = C_POST;
            else if (!strcasecmp(optarg, "put"))
                o.code = C_PUT;
            else {
                fprintf(stderr, "coapload: -m %s: post or put\n", optarg);
                return 64;
            }
            break;
        case 'N': o.type = NON; break;
        case 'd': o.duration = atof(optarg); break;
        case 'w': o.warmup = atof(optarg); break;
        case 't': o.timeout_ms = atol(optarg); break;
        case 'c': o.parallel = atol(optarg); break;
        default: fputs(usage, ch == 'h' ? stdout : stderr); return ch == 'h' ? 0 : 64;
        }
    }
    if (idle)
        o.window = 1;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
    if (o.port <= 0 || o.port > 65535 || inet_pton(AF_INET, o.host, &to.sin_addr) != 1 || o.clients < 1 ||
        o.window < 1 || o.window > 65536 || o.size < 0 || o.size > 1024 || o.duration <= 0 || o.warmup < 0 ||
        o.timeout_ms < 1 || o.parallel < 1) {
        fputs(usage, stderr);
        return 64;
    }
    srandom((unsigned)(now_ns() ^ (uint64_t)getpid()));
    ep = epoll_create1(EPOLL_CLOEXEC);
    cls = calloc((size_t)o.clients, sizeof(*cls));
    if (ep < 0 || !cls)
        return 1;
    for (long k = 0; k < o.clients; k++) {
        cls[k].fd = -1;
        if (!(cls[k].w = calloc((size_t)o.window, sizeof(*cls[k].w))))
            return 1;
        if (build_request(&cls[k], k) < 0) {
            fputs(usage, stderr);
            return 64;
        }
    }
    return idle ? run_idle(&to) : run_load(&to);
}
