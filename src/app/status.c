#include "app/status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "handlers/handlers.h"
#include "handlers/jwt.h"

#define PROBE_EVERY_MS 5000
#define PROBE_TIMEOUT_MS 2000

/* One TCP connect to a listener's broker; for a CoAP server (UDP), a CoAP
 * ping, which a CoAP endpoint answers with a RST (RFC 7252 4.3). */
struct probe {
    struct loop_io io;
    struct status *st;
    int id; /* enum listener_id */
    bool ok, done, udp;
};

struct status {
    struct status_src src;
    struct loop *l;
    struct loop_timer every, timeout;
    struct probe probes[LISTENER_COUNT];
};

/* ---- readiness ------------------------------------------------------------ */

static void probe_end(struct probe *p, bool ok)
{
    if (p->io.fd >= 0) {
        loop_io_del(p->st->l, &p->io);
        close(p->io.fd);
        p->io.fd = -1;
    }
    if (p->done && p->ok != ok)
        log_msgf(ok ? LOGL_INFO : LOGL_WARN, "readiness: the broker of %s is %s", p->st->src.cfg->listeners[p->id].name,
                 ok ? "reachable again" : "unreachable");
    p->ok = ok;
    p->done = true;
}

static void on_probe(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)l, (void)events;
    struct probe *p = (struct probe *)io;
    if (p->udp) {
        uint8_t answer[16];
        probe_end(p, recv(io->fd, answer, sizeof(answer), 0) >= 4); /* ECONNREFUSED: the port is closed */
        return;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    probe_end(p, err == 0);
}

static void probe_start(struct status *st, int id)
{
    struct probe *p = &st->probes[id];
    const struct session_params *sp = &st->src.params[id];
    p->udp = st->src.cfg->listeners[id].target_protocol == TARGET_COAP;
    int fd = socket(sp->target.ss_family, (p->udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    static const uint8_t ping[4] = {0x40, 0x00, 0x6d, 0x67}; /* CoAP 1, CON, code 0.00, message id "mg" */
    int rc = connect(fd, (const struct sockaddr *)&sp->target, sp->target_len);
    if (rc == 0 && p->udp)
        rc = send(fd, ping, sizeof(ping), 0) == (ssize_t)sizeof(ping) ? 0 : -1;
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        probe_end(p, false);
        return;
    }
    if (loop_io_add(st->l, &p->io, fd, p->udp ? EPOLLIN : EPOLLOUT, on_probe) < 0) {
        close(fd);
        return;
    }
}

static void on_timeout(struct loop *l, struct loop_timer *t)
{
    (void)l;
    struct status *st = (struct status *)((char *)t - offsetof(struct status, timeout));
    for (int i = 0; i < LISTENER_COUNT; i++)
        if (st->probes[i].io.fd >= 0)
            probe_end(&st->probes[i], false);
}

static void on_every(struct loop *l, struct loop_timer *t)
{
    struct status *st = (struct status *)((char *)t - offsetof(struct status, every));
    for (int i = 0; i < LISTENER_COUNT; i++)
        if (st->src.cfg->listeners[i].enabled && st->probes[i].io.fd < 0)
            probe_start(st, i);
    loop_timer_start(l, &st->timeout, PROBE_TIMEOUT_MS, on_timeout);
    loop_timer_start(l, &st->every, PROBE_EVERY_MS, on_every);
}

static int readyz(struct status *st, struct buf *body)
{
    char line[256];
    int status = 200;
    if (*st->src.stopping) {
        buf_append(body, "draining\n", 9);
        return 503;
    }
    for (int i = 0; i < LISTENER_COUNT; i++) {
        const struct listener_config *lc = &st->src.cfg->listeners[i];
        const struct probe *p = &st->probes[i];
        if (!lc->enabled)
            continue;
        int n = snprintf(line, sizeof(line), "%s: broker %s:%u %s\n", lc->name, lc->target_host, lc->target_port,
                         !p->done ? "not probed yet" : p->ok ? "reachable" : "unreachable");
        buf_append(body, line, (size_t)n);
        if (!p->ok)
            status = 503;
    }
    return status;
}

/* ---- metrics ---------------------------------------------------------------- */

static void outf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(struct buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_append(b, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void family(struct buf *b, const char *name, const char *type, const char *help)
{
    outf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The sum over every worker of the counter at the same offset. */
static uint64_t sum(const struct status *st, const uint64_t *field_of_first)
{
    size_t off = (size_t)((const char *)field_of_first - (const char *)loop_metrics(st->src.workers[0].loop));
    uint64_t total = 0;
    for (unsigned w = 0; w < st->src.nworkers; w++)
        total += metric_get((const uint64_t *)((const char *)loop_metrics(st->src.workers[w].loop) + off));
    return total;
}
#define SUM(field) sum(st, &m0->field)

static const char *const packet_names[16] = {"reserved", "connect", "connack", "publish", "puback", "pubrec",
                                             "pubrel", "pubcomp", "subscribe", "suback", "unsubscribe",
                                             "unsuback", "pingreq", "pingresp", "disconnect", "auth"};
static const char *const dir_names[2] = {"client_to_broker", "broker_to_client"};

/* A counter family of one line, and of two lines told apart by one label. */
static void counter(struct buf *b, const char *name, const char *help, uint64_t v)
{
    family(b, name, "counter", help);
    outf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void counter2(struct buf *b, const char *name, const char *help, const char *label, const char *a,
                     const char *z, uint64_t va, uint64_t vz)
{
    family(b, name, "counter", help);
    outf(b, "%s{%s=\"%s\"} %llu\n", name, label, a, (unsigned long long)va);
    outf(b, "%s{%s=\"%s\"} %llu\n", name, label, z, (unsigned long long)vz);
}
#define COUNTER(name, help, field) counter(b, name, help, SUM(field))
#define PER_DIRECTION(name, help, field) \
    counter2(b, name, help, "direction", dir_names[0], dir_names[1], SUM(field[0]), SUM(field[1]))

static void sessions(const struct status *st, const struct metrics *m0, struct buf *b)
{
    family(b, "mgate_connections", "gauge", "Client connections open now (sessions), by listener.");
    for (int i = 0; i < LISTENER_COUNT; i++)
        if (st->src.cfg->listeners[i].enabled)
            outf(b, "mgate_connections{listener=\"%s\"} %llu\n", st->src.cfg->listeners[i].name,
                 (unsigned long long)(SUM(sessions_opened[i]) - SUM(sessions_closed[i])));
    family(b, "mgate_connections_total", "counter", "Client connections accepted, by listener.");
    for (int i = 0; i < LISTENER_COUNT; i++)
        if (st->src.cfg->listeners[i].enabled)
            outf(b, "mgate_connections_total{listener=\"%s\"} %llu\n", st->src.cfg->listeners[i].name,
                 (unsigned long long)SUM(sessions_opened[i]));
    COUNTER("mgate_connect_accepted_total", "CONNECTs the broker accepted.", connect_accepted);
    family(b, "mgate_connect_refused_total", "counter",
           "CONNECTs refused, by MQTT 5 reason code (3.1.1 codes mapped) and by whom.");
    for (int by = 0; by < 2; by++)
        for (int r = 0; r < 256; r++) {
            uint64_t n = SUM(connect_refused[by][r]);
            if (n)
                outf(b, "mgate_connect_refused_total{reason=\"0x%02X\",by=\"%s\"} %llu\n", r,
                     by == METRIC_BY_MGATE ? "mgate" : "broker", (unsigned long long)n);
        }
    COUNTER("mgate_broker_dial_failures_total", "Broker connections that could not be made.", broker_dial_failures);
    COUNTER("mgate_sessions_expired_total",
            "Sessions ended at the time a handler set (mgate_session_expire_at).",
            sessions_expired);
    COUNTER("mgate_webhook_requests_total", "Requests sent to MGATE_WEBHOOK_URL.", webhook_requests);
    COUNTER("mgate_webhook_cache_hits_total",
            "Webhook requests answered from the per-worker cache.",
            webhook_cache_hits);
}

static void traffic(const struct status *st, const struct metrics *m0, struct buf *b)
{
    family(b, "mgate_packets_total", "counter", "MQTT packets forwarded or answered, by type and direction.");
    for (int d = 0; d < 2; d++)
        for (int t = 1; t < 16; t++)
            outf(b, "mgate_packets_total{direction=\"%s\",type=\"%s\"} %llu\n", dir_names[d], packet_names[t],
                 (unsigned long long)SUM(packets[d][t]));
    PER_DIRECTION("mgate_bytes_total", "MQTT bytes read, by direction.", bytes);
    PER_DIRECTION("mgate_publish_refused_total", "PUBLISHes refused by the handler, by direction.", publish_refused);
    COUNTER("mgate_subscribe_refused_total", "SUBSCRIBE filters refused by the handler.", subscribe_refused);
    counter2(b, "mgate_rewrite_topics_total",
             "Topics and filters the rewrite handler rewrote, or could not (the packet or filter refused).",
             "result", "rewritten", "failed", SUM(rewrites[0]), SUM(rewrites[1]));
    COUNTER("mgate_mount_dropped_total",
            "Broker PUBLISHes outside the session's mount point, acknowledged and never delivered.",
            mount_dropped);
    PER_DIRECTION("mgate_backpressure_pauses_total",
                  "Times reading from one side stopped because the other side was not taking data, by direction.",
                  backpressure_pauses);
}

static void http(const struct status *st, const struct metrics *m0, struct buf *b)
{
    family(b, "mgate_http_responses_total", "counter", "HTTP answers (the target's and mgate's own), by class.");
    for (int c = 1; c <= 5; c++)
        outf(b, "mgate_http_responses_total{code=\"%dxx\"} %llu\n", c, (unsigned long long)SUM(http_responses[c]));
    COUNTER("mgate_http_websockets_total", "WebSockets opened on HTTP listeners (101 given).", ws_opened);
    PER_DIRECTION("mgate_http_websocket_messages_total", "WebSocket messages relayed, by direction.", ws_messages);
    PER_DIRECTION("mgate_http_websocket_bytes_total", "WebSocket message bytes relayed, by direction.", ws_bytes);
}

static void coap(const struct status *st, const struct metrics *m0, struct buf *b)
{
    PER_DIRECTION("mgate_coap_datagrams_total", "CoAP datagrams relayed, by direction.", coap_datagrams);
    PER_DIRECTION("mgate_coap_bytes_total", "CoAP datagram bytes relayed, by direction.", coap_bytes);
    family(b, "mgate_coap_answers_total", "counter", "CoAP answers mgate gave itself (refusals, limits), by class.");
    for (int c = 4; c <= 5; c++)
        outf(b, "mgate_coap_answers_total{code=\"%d.xx\"} %llu\n", c, (unsigned long long)SUM(coap_answers[c]));
    COUNTER("mgate_coap_dropped_total",
            "CoAP datagrams dropped: malformed, not to be judged (a response from a client), or over a bound.",
            coap_dropped);
}

static void jwt(const struct status *st, const struct metrics *m0, struct buf *b)
{
    static const char *const fetch_results[3] = {"ok", "error", "invalid"};
    COUNTER("mgate_jwt_verified_total", "Tokens the jwt handler accepted.", jwt_verified);
    family(b, "mgate_jwt_refused_total", "counter", "CONNECTs the jwt handler refused, by reason.");
    for (int r = JWT_OK + 1; r < JWT_RESULT_COUNT; r++)
        outf(b, "mgate_jwt_refused_total{reason=\"%s\"} %llu\n", jwt_result_name((enum jwt_result)r),
             (unsigned long long)SUM(jwt_refused[r]));
    family(b, "mgate_jwt_jwks_fetches_total", "counter", "Fetches of MGATE_JWT_JWKS_URL, by result.");
    for (int r = 0; r < 3; r++)
        outf(b, "mgate_jwt_jwks_fetches_total{result=\"%s\"} %llu\n", fetch_results[r],
             (unsigned long long)SUM(jwt_jwks_fetches[r]));
    int keys = jwt_keys_gauge();
    if (keys < 0)
        return; /* no jwt handler: no key set to count */
    family(b, "mgate_jwt_keys", "gauge", "Keys in the jwt handler's current key set.");
    outf(b, "mgate_jwt_keys %d\n", keys);
}

static void verdicts(const struct status *st, const struct metrics *m0, struct buf *b)
{
    static const char *const calls[METRIC_CALLS] = {"auth_connect", "auth_publish", "auth_subscribe"};
    static const char *const le[METRIC_BUCKETS] = {"0.001", "0.005", "0.025", "0.1", "0.25", "1", "2.5", "10", "+Inf"};
    family(b, "mgate_handler_verdict_seconds", "histogram",
           "Time from a handler call to its verdict (answers given at once count as 0).");
    for (int c = 0; c < METRIC_CALLS; c++) {
        uint64_t cum = 0;
        for (int i = 0; i < METRIC_BUCKETS; i++) {
            cum += SUM(verdicts[c][i]);
            outf(b, "mgate_handler_verdict_seconds_bucket{call=\"%s\",le=\"%s\"} %llu\n", calls[c], le[i],
                 (unsigned long long)cum);
        }
        outf(b, "mgate_handler_verdict_seconds_sum{call=\"%s\"} %.3f\n", calls[c], SUM(verdict_ms_sum[c]) / 1000.0);
        outf(b, "mgate_handler_verdict_seconds_count{call=\"%s\"} %llu\n", calls[c], (unsigned long long)cum);
    }
}

static void tls(const struct status *st, const struct metrics *m0, struct buf *b)
{
    static const char *const fails[METRIC_TLS_FAILS] = {"revoked", "unknown_ca", "no_certificate", "expired",
                                                        "revocation_unavailable", "other"};
    static const char *const kinds[2] = {"ocsp", "crl"};
    COUNTER("mgate_tls_handshakes_total", "Client TLS handshakes completed.", tls_handshakes);
    family(b, "mgate_tls_handshake_failures_total", "counter", "Client TLS handshakes refused or failed, by reason.");
    for (int i = 0; i < METRIC_TLS_FAILS; i++)
        outf(b, "mgate_tls_handshake_failures_total{reason=\"%s\"} %llu\n", fails[i],
             (unsigned long long)SUM(tls_failures[i]));
    family(b, "mgate_revocation_fetches_total", "counter", "OCSP requests and CRL downloads, by result.");
    for (int k = 0; k < 2; k++)
        for (int r = 0; r < 2; r++)
            outf(b, "mgate_revocation_fetches_total{kind=\"%s\",result=\"%s\"} %llu\n", kinds[k],
                 r ? "failed" : "answered", (unsigned long long)SUM(rev_fetches[k][r]));
    family(b, "mgate_revocation_cache_hits_total", "counter", "Revocation checks answered from the cache.");
    for (int k = 0; k < 2; k++)
        outf(b, "mgate_revocation_cache_hits_total{kind=\"%s\"} %llu\n", kinds[k],
             (unsigned long long)SUM(rev_cache_hits[k]));
    counter2(b, "mgate_connections_refused_total",
             "Connections closed at accept by a limit.",
             "limit", "max_connections", "connection_rate", SUM(conns_refused[0]), SUM(conns_refused[1]));
    counter2(b, "mgate_publish_limited_total",
             "Client PUBLISHes over a limit (refused with 0x97 or held back), by limit.",
             "limit", "rate", "bandwidth", SUM(limit_hits[0]), SUM(limit_hits[1]));
    COUNTER("mgate_proxy_protocol_refused_total",
            "Connections closed for a missing or broken PROXY protocol header.",
            proxy_refused);
}

static void process(const struct status *st, struct buf *b)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r"); /* the control thread, never a worker */
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    family(b, "process_resident_memory_bytes", "gauge", "Resident memory of the mgate process.");
    outf(b, "process_resident_memory_bytes %ld\n", rss * sysconf(_SC_PAGESIZE));
    family(b, "mgate_workers", "gauge", "Worker threads (event loops).");
    outf(b, "mgate_workers %u\n", st->src.nworkers);
    family(b, "mgate_ready", "gauge", "1 when /readyz says ready.");
    struct buf scratch = {0};
    outf(b, "mgate_ready %d\n", readyz((struct status *)st, &scratch) == 200);
    buf_release(&scratch);
}

static void metrics_text(const struct status *st, struct buf *b)
{
    const struct metrics *m0 = loop_metrics(st->src.workers[0].loop);
    sessions(st, m0, b);
    traffic(st, m0, b);
    http(st, m0, b);
    coap(st, m0, b);
    verdicts(st, m0, b);
    jwt(st, m0, b);
    tls(st, m0, b);
    process(st, b);
}

int status_route(void *ctx, const char *path, struct buf *body, const char **content_type)
{
    struct status *st = ctx;
    if (!strcmp(path, "/healthz")) {
        buf_append(body, "ok\n", 3);
        return 200;
    }
    if (!strcmp(path, "/readyz"))
        return readyz(st, body);
    if (!strcmp(path, "/metrics")) {
        *content_type = "text/plain; version=0.0.4; charset=utf-8";
        metrics_text(st, body);
        return 200;
    }
    buf_append(body, "not found: try /metrics, /healthz, /readyz\n", 43);
    return 404;
}

struct status *status_start(struct loop *ctl, const struct status_src *src)
{
    struct status *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->src = *src;
    st->l = ctl;
    for (int i = 0; i < LISTENER_COUNT; i++) {
        st->probes[i].io.fd = -1;
        st->probes[i].st = st;
        st->probes[i].id = i;
    }
    on_every(ctl, &st->every);
    return st;
}

void status_stop(struct status *st)
{
    if (!st)
        return;
    for (int i = 0; i < LISTENER_COUNT; i++)
        if (st->probes[i].io.fd >= 0) {
            loop_io_del(st->l, &st->probes[i].io);
            close(st->probes[i].io.fd);
        }
    loop_timer_stop(st->l, &st->every);
    loop_timer_stop(st->l, &st->timeout);
    free(st);
}
