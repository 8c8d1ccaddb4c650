/*
 * `mgate tunnel` (docs/TUNNEL.md): the command line, the one MQTT
 * connection per process (a stable client id, a persistent session, so
 * QoS 1 messages survive a broker restart), reconnection with backoff, the
 * local side's listener, signals and the counters' timer.  The streams
 * themselves are the mode's (reliable.c, compat.c).
 */
#include "tunnel/tunnel.h"

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "net/conn.h"
#include "net/tls.h"
#include "tunnel/internal.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define STATS_EVERY_MS 60000
#define EXIT_LINGER_MS 300 /* the DISCONNECT's time to go before the loop ends */
#define MQTT_INFLIGHT 1024 /* QoS 1 frames of every stream waiting for PUBACK */
#define MQTT_HIGH_WATER (4u << 20)

static const char usage[] =
    "usage: mgate tunnel -c FILE                       (the remote side)\n"
    "       mgate tunnel -c FILE -l LOCALPORT -r REMOTEPORT  (the local side)\n"
    "\n"
    "TCP over an MQTT broker: the local side listens on 127.0.0.1:LOCALPORT and\n"
    "every connection reaches 127.0.0.1:REMOTEPORT on the remote side, if the\n"
    "remote side's config allows that port (\"allow\": [22]).\n"
    "\n"
    "  -c, --config FILE      mqtunnel's JSON config, plus mgate's keys (docs/TUNNEL.md)\n"
    "  -l, --local PORT       the local side: listen on 127.0.0.1:PORT\n"
    "  -r, --remote PORT      the local side: the remote side's port to reach\n"
    "      --compat mqtunnel  speak mqtunnel's protocol (lossy; also \"compat\" in the file)\n"
    "  -v, --verbose          debug log lines\n"
    "  -h, --help             this text\n"
    "\n"
    "Logs are JSON lines on stderr.  Exit status: 0 after SIGTERM/SIGINT, 1 when it\n"
    "cannot start, 2 for a bad command line or config.\n";

struct args {
    const char *config;
    long lport, rport;
    bool compat, verbose;
};

static long port_arg(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && v >= 1 && v <= 65535 ? v : -1;
}

/* -1 to go on; else the exit status. */
static int parse_args(int argc, char **argv, struct args *a)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"local", required_argument, NULL, 'l'},
        {"remote", required_argument, NULL, 'r'}, {"compat", required_argument, NULL, 'm'},
        {"verbose", no_argument, NULL, 'v'},      {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:l:r:vh", opts, NULL)) != -1) {
        if (c == 'h')
            return fputs(usage, stdout), 0;
        else if (c == 'c')
            a->config = optarg;
        else if (c == 'l' && (a->lport = port_arg(optarg)) < 0)
            return fprintf(stderr, "mgate tunnel: -l: a port from 1 to 65535\n"), TUNNEL_EXIT_CONFIG;
        else if (c == 'r' && (a->rport = port_arg(optarg)) < 0)
            return fprintf(stderr, "mgate tunnel: -r: a port from 1 to 65535\n"), TUNNEL_EXIT_CONFIG;
        else if (c == 'm' && strcmp(optarg, "mqtunnel"))
            return fprintf(stderr, "mgate tunnel: --compat: only \"mqtunnel\"\n"), TUNNEL_EXIT_CONFIG;
        else if (c == 'm')
            a->compat = true;
        else if (c == 'v')
            a->verbose = true;
        else if (c == '?' || c == ':')
            return fputs(usage, stderr), TUNNEL_EXIT_CONFIG;
    }
    if (optind < argc || !a->config || !a->lport != !a->rport)
        return fputs(optind < argc ? "mgate tunnel: unexpected argument\n"
                     : !a->config ? "mgate tunnel: -c FILE is required\n"
                                  : "mgate tunnel: -l and -r go together\n",
                     stderr),
               fputs(usage, stderr), TUNNEL_EXIT_CONFIG;
    return -1;
}

/* ---- helpers for the modes ---------------------------------------------------------- */

void tunnel_random_letters(char *out, size_t n, const char *set)
{
    uint8_t r[64];
    size_t m = strlen(set);
    ASSERT(n < sizeof(r));
    if (RAND_bytes(r, (int)n) != 1)
        abort(); /* no randomness: the topics would be guessable */
    for (size_t i = 0; i < n; i++)
        out[i] = set[r[i] % m]; /* 256 % 52 and % 26 bias a little: still ~5.6 and ~4.7 bits a letter */
    out[n] = 0;
}

uint64_t tunnel_random_u64(void)
{
    uint64_t v = 0;
    while (!v)
        if (RAND_bytes((uint8_t *)&v, sizeof(v)) != 1)
            abort();
    return v;
}

void tunnel_conn_reset(struct conn *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (c->io.fd >= 0)
        setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    conn_close(c);
}

static bool all_of(const char *p, size_t n, const char *set)
{
    for (size_t i = 0; i < n; i++)
        if (!p[i] || !strchr(set, p[i]))
            return false;
    return true;
}

/* A peer's data topic, as it came from the wire (an open's reply, an
 * ACCEPT, an mqtunnel connect): one level right under our root, in the
 * shape this mode makes ("mgt-" and 16 lower-case letters; mqtunnel: a
 * port, '-' and 8 letters).  Nothing else can pass: not the control topic,
 * not $SYS, no character a broker refuses (a control character makes
 * mosquitto drop the publisher, and we would publish there again after
 * every reconnect). */
bool tunnel_topic_ok(const struct tunnel *t, const char *topic, size_t len)
{
    size_t rl = strlen(t->root);
    if (len <= rl + 1 || len > TUNNEL_MAX_TOPIC || memcmp(topic, t->root, rl) || topic[rl] != '/')
        return false;
    const char *lvl = topic + rl + 1;
    size_t n = len - rl - 1;
    if (len == strlen(t->cfg->control) && !memcmp(topic, t->cfg->control, len))
        return false;
    if (t->mode == &tunnel_compat) {
        const char *dash = memchr(lvl, '-', n);
        size_t digits = dash ? (size_t)(dash - lvl) : 0;
        return digits >= 1 && digits <= 5 && all_of(lvl, digits, "0123456789") && n == digits + 1 + 8 &&
               all_of(dash + 1, 8, TUNNEL_LETTERS);
    }
    return n == 4 + 16 && !memcmp(lvl, "mgt-", 4) && all_of(lvl + 4, 16, TUNNEL_LOWER);
}

/* ---- the MQTT connection ------------------------------------------------------------ */

bool tunnel_connected(const struct tunnel *t) { return t->mc && mqtt_client_ready(t->mc); }

bool tunnel_publish_done(struct tunnel *t, const char *topic, const void *p, size_t n, uint8_t qos,
                         mqc_done_fn done, void *arg)
{
    if (!tunnel_connected(t) || !mqtt_client_writable(t->mc))
        return false;
    mgate_bytes tp = {(const uint8_t *)topic, (uint32_t)strlen(topic)}, pl = {p, (uint32_t)n};
    return mqtt_client_publish(t->mc, tp, pl, qos, false, done, arg) == MQC_OK;
}

static void publish_done(void *arg, enum mqc_status st, uint8_t code, const uint8_t *codes, uint32_t n)
{
    (void)code, (void)codes, (void)n;
    struct tunnel *t = arg;
    if (st == MQC_REFUSED)
        log_msgf(LOGL_WARN, "tunnel: the broker refused a PUBLISH (its ACL?)");
    if (t->mc && !t->stopping)
        t->mode->on_drain(t); /* a slot is free again: what waited for one may go */
}

bool tunnel_publish(struct tunnel *t, const char *topic, const void *p, size_t n, uint8_t qos)
{
    return tunnel_publish_done(t, topic, p, n, qos, publish_done, t);
}

static void sub_done(void *arg, enum mqc_status st, uint8_t code, const uint8_t *codes, uint32_t n)
{
    (void)arg, (void)code;
    if (st != MQC_OK || !n || codes[0] >= 0x80)
        log_msgf(LOGL_ERROR, "tunnel: the broker refused a subscription (its ACL must grant it)");
}

bool tunnel_subscribe(struct tunnel *t, const char *filter)
{
    if (!t->mc)
        return false;
    mgate_bytes f = {(const uint8_t *)filter, (uint32_t)strlen(filter)};
    uint8_t qos = 1;
    return mqtt_client_subscribe(t->mc, &f, &qos, 1, sub_done, t) == MQC_OK;
}

static void unsub_done(void *arg, enum mqc_status st, uint8_t code, const uint8_t *codes, uint32_t n)
{
    (void)arg, (void)st, (void)code, (void)codes, (void)n;
}

void tunnel_unsubscribe(struct tunnel *t, const char *filter)
{
    if (!tunnel_connected(t))
        return; /* gone with the connection's end only if clean: harmless either way */
    mgate_bytes f = {(const uint8_t *)filter, (uint32_t)strlen(filter)};
    mqtt_client_unsubscribe(t->mc, &f, 1, unsub_done, t);
}

static void mqtt_connect(struct tunnel *t);

static void on_reconnect_timer(struct loop *l, struct loop_timer *tm)
{
    (void)l;
    mqtt_connect(container_of(tm, struct tunnel, reconnect));
}

static void schedule_reconnect(struct tunnel *t)
{
    if (t->stopping)
        return;
    log_msgf(LOGL_INFO, "tunnel: reconnecting to the broker in %u ms", t->backoff_ms);
    loop_timer_start(t->loop, &t->reconnect, t->backoff_ms, on_reconnect_timer);
    t->backoff_ms = t->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : t->backoff_ms * 2;
}

static void on_ready(struct mqtt_client *mc, void *ctx)
{
    (void)mc;
    struct tunnel *t = ctx;
    t->backoff_ms = BACKOFF_MIN_MS;
    log_msgf(LOGL_INFO, "tunnel: connected to the broker %s:%u as %s", t->cfg->host, t->cfg->port, t->client_id);
    t->mode->on_ready(t);
}

static void on_closed(struct mqtt_client *mc, void *ctx, enum mqc_end why, uint8_t code)
{
    (void)mc;
    struct tunnel *t = ctx;
    static const char *const names[] = {"unreachable", "refused", "timeout", "ping timeout", "lost", "protocol"};
    struct logline l;
    if (log_begin(&l, LOGL_WARN, "tunnel: broker connection ended")) {
        log_str(&l, "reason", (unsigned)why < 6 ? names[why] : "?");
        log_uint(&l, "code", code);
        log_end(&l);
    }
    t->mc = NULL;
    schedule_reconnect(t);
}

static void on_message(struct mqtt_client *mc, void *ctx, const struct mqtt_publish *pub)
{
    (void)mc;
    struct tunnel *t = ctx;
    if (!t->stopping)
        t->mode->on_message(t, pub);
}

static void on_drain(struct mqtt_client *mc, void *ctx)
{
    (void)mc;
    struct tunnel *t = ctx;
    if (!t->stopping)
        t->mode->on_drain(t);
}

static const struct mqtt_client_cbs client_cbs = {
    .on_ready = on_ready, .on_closed = on_closed, .on_message = on_message, .on_drain = on_drain};

static void mqtt_connect(struct tunnel *t)
{
    const struct tunnel_config *c = t->cfg;
    struct mqtt_client_opts o = {
        .p = &t->params, .client_id = {(const uint8_t *)t->client_id, (uint32_t)strlen(t->client_id)},
        .username = {(const uint8_t *)(c->username ? c->username : ""), c->username ? strlen(c->username) : 0},
        .password = {(const uint8_t *)(c->password ? c->password : ""), c->password ? strlen(c->password) : 0},
        .has_username = c->username != NULL, .has_password = c->password != NULL,
        .clean_session = false, /* QoS 1 messages wait at the broker while we reconnect */
        .version = c->mqtt_version, .keepalive = c->keepalive, .max_inflight = MQTT_INFLIGHT,
        .cbs = &client_cbs, .ctx = t};
    log_msgf(LOGL_INFO, "tunnel: connecting to the broker %s:%u%s", c->host, c->port, c->tls ? " (TLS)" : "");
    if (!(t->mc = mqtt_client_open(t->loop, &o))) {
        log_msgf(LOGL_WARN, "tunnel: cannot connect to the broker: %s", strerror(errno));
        schedule_reconnect(t);
    }
}

/* ---- start and stop ----------------------------------------------------------------- */

/* The broker's address (resolved once, here, before the loop runs) and TLS. */
static int prepare_broker(struct tunnel *t, char *err, size_t errlen)
{
    const struct tunnel_config *c = t->cfg;
    char why[384];
    t->params = (struct session_params){.listener = "tunnel", .max_packet_size = 4u << 20,
                                        .connect_timeout_ms = 10000, .output_high_water = MQTT_HIGH_WATER};
    if (resolve_address(c->host, c->port, &t->params.target, &t->params.target_len, why, sizeof(why)) < 0)
        return snprintf(err, errlen, "%s: field \"host\": %s", c->path, why), -1;
    if (!c->tls)
        return 0;
    struct tls_settings ts = {.name = "tunnel", .cert_file = c->client_cert, .key_file = c->private_key,
                              .ca_file = c->ca_cert, .verify_peer = !c->insecure};
    if (!(t->params.upstream_tls = tls_client_ctx_new(&ts, why, sizeof(why))))
        return snprintf(err, errlen, "%s: caCert/clientCert/privateKey: %s", c->path, why), -1;
    t->params.target_server_name = c->host;
    return 0;
}

/* The root (the control topic without its last level) and the client id. */
static void prepare_names(struct tunnel *t)
{
    const char *ctl = t->cfg->control;
    size_t n = (size_t)(strrchr(ctl, '/') - ctl);
    memcpy(t->root, ctl, n);
    t->root[n] = 0;
    /* mqtunnel's way is one config file for both sides: with a clientId in
     * it, the two would take each other's session over, again and again.
     * The local side is the clientId and its port (stable across restarts,
     * and several local sides of one file stay apart); the remote side is
     * the clientId itself. */
    if (t->cfg->client_id && t->local)
        snprintf(t->client_id, sizeof(t->client_id), "%s-%u", t->cfg->client_id, (unsigned)t->lport);
    else if (t->cfg->client_id)
        snprintf(t->client_id, sizeof(t->client_id), "%s", t->cfg->client_id);
    else {
        char r[13];
        tunnel_random_letters(r, 12, TUNNEL_LOWER);
        snprintf(t->client_id, sizeof(t->client_id), "mgate-tunnel-%s", r);
    }
}

static void on_accept(struct listener *ls, int fd, const struct sockaddr *peer, socklen_t peerlen)
{
    (void)peer, (void)peerlen;
    struct tunnel *t = ls->ctx;
    t->mode->on_accept(t, fd);
}

/* listener_bind shares the port (SO_REUSEPORT, for mgate's workers): a
 * second tunnel on a taken port would silently take half the connections.
 * A plain bind fails on a port any socket holds. */
static int port_free(uint16_t port, char *err, size_t errlen)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc = 0;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        rc = -1, snprintf(err, errlen, "%s", strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc;
}

static int start_listener(struct tunnel *t)
{
    char err[256];
    int fd = port_free(t->lport, err, sizeof(err)) < 0 ? -1 : listener_bind("127.0.0.1", t->lport, err, sizeof(err));
    int zero = 0; /* a tunnelled service may speak first (ssh, smtp): no deferred accept here */
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &zero, sizeof(zero));
    if (fd < 0 || listener_start(&t->ls, t->loop, fd, "tunnel", on_accept, t) < 0) {
        log_msgf(LOGL_ERROR, "tunnel: cannot listen on 127.0.0.1:%u: %s", t->lport, fd < 0 ? err : "failed");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    t->listening = true;
    log_msgf(LOGL_INFO, "tunnel: listening on 127.0.0.1:%u for the remote port %u", t->lport, t->rport);
    return 0;
}

static void on_stats_timer(struct loop *l, struct loop_timer *tm)
{
    struct tunnel *t = container_of(tm, struct tunnel, stats_timer);
    tunnel_stats_log(&t->stats, "tunnel stats");
    loop_timer_start(l, tm, STATS_EVERY_MS, on_stats_timer);
}

static void on_exit_timer(struct loop *l, struct loop_timer *tm)
{
    (void)tm;
    loop_stop(l);
}

static void on_signal(struct loop *l, int signo, void *ctx)
{
    struct tunnel *t = ctx;
    if (t->stopping)
        return;
    log_msgf(LOGL_INFO, "tunnel: %s: stopping", strsignal(signo));
    t->stopping = true;
    if (t->listening)
        listener_close(&t->ls), t->listening = false;
    t->mode->stop(t); /* streams end: RSTs to the peers, queued before the DISCONNECT */
    if (t->mc)
        mqtt_client_close(t->mc), t->mc = NULL;
    loop_timer_stop(l, &t->reconnect);
    loop_timer_stop(l, &t->stats_timer);
    loop_timer_start(l, &t->exit_timer, EXIT_LINGER_MS, on_exit_timer);
}

static int run(struct tunnel *t)
{
    static const int sigs[] = {SIGTERM, SIGINT};
    signal(SIGPIPE, SIG_IGN);
    if (!(t->loop = loop_new()) || loop_signals(t->loop, sigs, 2, on_signal, t) < 0) {
        fprintf(stderr, "mgate tunnel: cannot set up the loop: %s\n", strerror(errno));
        return 1;
    }
    int rc = t->mode->start(t) < 0 || (t->local && start_listener(t) < 0) ? 1 : 0;
    if (rc == 0) {
        log_msgf(LOGL_INFO, "tunnel: %s side, %s mode, control topic %s", t->local ? "local" : "remote",
                 t->mode->name, t->cfg->control);
        t->backoff_ms = BACKOFF_MIN_MS;
        mqtt_connect(t);
        loop_timer_start(t->loop, &t->stats_timer, STATS_EVERY_MS, on_stats_timer);
        loop_run(t->loop);
    }
    if (t->mc)
        mqtt_client_close(t->mc), t->mc = NULL;
    tunnel_stats_log(&t->stats, "tunnel stats");
    loop_free(t->loop);
    return rc;
}

int tunnel_main(int argc, char **argv)
{
    struct args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    log_set_level(a.verbose ? LOGL_DEBUG : LOGL_INFO);
    struct tunnel_config cfg;
    char err[512];
    if (tunnel_config_load(&cfg, a.config, err, sizeof(err)) < 0) {
        fprintf(stderr, "mgate tunnel: %s\n", err);
        tunnel_config_free(&cfg);
        return TUNNEL_EXIT_CONFIG;
    }
    struct tunnel t = {.cfg = &cfg, .local = a.lport > 0, .lport = (uint16_t)a.lport, .rport = (uint16_t)a.rport,
                       .mode = a.compat || cfg.compat ? &tunnel_compat : &tunnel_reliable};
    prepare_names(&t);
    if (prepare_broker(&t, err, sizeof(err)) < 0) {
        fprintf(stderr, "mgate tunnel: %s\n", err);
        tunnel_config_free(&cfg);
        return TUNNEL_EXIT_CONFIG;
    }
    rc = run(&t);
    if (t.params.upstream_tls)
        tls_ctx_free(t.params.upstream_tls);
    tunnel_config_free(&cfg);
    return rc;
}
