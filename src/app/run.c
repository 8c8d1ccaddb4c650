/*
 * mgate_main: command line, configuration, listeners, workers, signals.
 * The control thread owns a small loop of its own that only watches
 * signals; workers do all the proxying.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/admin.h"
#include "app/admission.h"
#include "app/status.h"
#include "app/trim.h"
#include "app/worker.h"
#include "core/log.h"
#include "front/front.h"
#include "handlers/handlers.h"
#include "net/conn.h"
#include "net/fetch.h"
#include "net/tls.h"
#include "tunnel/tunnel.h"

#define EXIT_CONFIG 2

struct app {
    struct mgate_config cfg;
    const struct mgate_handler *handlers[SESSION_MAX_HANDLERS];
    unsigned handler_count;
    const struct mgate_interceptor *interceptor;
    struct session_params params[LISTENER_COUNT];
    const struct front_ops *fronts[LISTENER_COUNT]; /* of the listeners prepare reached */
    uint32_t open_sessions[LISTENER_COUNT];          /* MAX_CONNECTIONS, all workers */
    struct admission *admissions[LISTENER_COUNT];    /* CONNECTION_RATE_LIMIT */
    struct worker *workers;
    unsigned nworkers;
    struct loop *ctl;
    bool stopping;
    struct loop_timer drained; /* during a drain: have the workers all finished? */
    struct status *status;
    struct admin *admin;
    struct trim *trim;
};

static const char usage[] =
    "usage: mgate [-c FILE] [--check-config] [--help] [--version]\n"
    "       mgate tunnel -c FILE [-l LOCALPORT -r REMOTEPORT]  (docs/TUNNEL.md; --help)\n"
    "\n"
    "An MQTT proxy: every client connection is paired with a connection to the\n"
    "broker and every packet is shown to a handler.\n"
    "\n"
    "  -c, --config FILE   read an INI file (also MGATE_CONFIG); environment wins\n"
    "      --check-config  load and check the configuration, then exit\n"
    "  -h, --help          this text\n"
    "  -V, --version       print the version\n"
    "\n"
    "Configuration is MGATE_* environment variables (a .env file in the working\n"
    "directory is read too); see docs/CONFIGURATION.md.  Exit status: 0 after a\n"
    "clean shutdown, 1 when it cannot start, 2 for a bad configuration.\n";

static const char *getenv_cb(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

/* TLS is on where CERT_FILE and KEY_FILE are set (config_load checked that
 * they come in pairs and that the TLS listeners have them), and DTLS where
 * PSK_FILE is. */
static int prepare_tls(const struct listener_config *lc, struct session_params *p, char *err, size_t errlen)
{
    if (!*lc->cert_file && !*lc->psk_file)
        return 0;
    struct tls_settings t = {
        .name = lc->name, .cert_file = lc->cert_file, .key_file = lc->key_file, .ca_file = lc->client_ca_file,
        .client_cert_optional = lc->client_cert == CLIENT_CERT_OPTIONAL, .min_version = lc->tls_min_version,
        .ciphers = lc->tls_ciphers, .ciphersuites = lc->tls_ciphersuites, .no_tickets = !lc->tls_session_tickets,
        .methods = (lc->cert_verification_methods & CERT_VERIFY_OCSP ? TLS_CHECK_OCSP : 0) |
                   (lc->cert_verification_methods & CERT_VERIFY_CRL ? TLS_CHECK_CRL : 0),
        .ocsp_depth = lc->ocsp_depth, .crl_depth = lc->crl_depth, .ocsp_url = lc->ocsp_responder_url,
        .crl_url = lc->crl_distribution_points, .crl_url_issuer_file = lc->crl_distribution_points_issuer_cert_file,
        .offline_crl_file = lc->offline_crl_file, .offline_crl_issuer_file = lc->offline_crl_issuer_cert_file,
        .soft_fail = lc->revocation_soft_fail, .timeout_ms = lc->revocation_timeout_ms,
        .dtls = lc->id == LISTENER_COAP_DTLS, .psk_file = lc->psk_file,
    };
    char why[384];
    if (!(p->tls = tls_ctx_new(&t, why, sizeof(why)))) {
        snprintf(err, errlen, "%s%s", lc->prefix, why);
        return -1;
    }
    p->cn_as_username = lc->use_cn_as_username;
    return 0;
}

/* TARGET_PROTOCOL mqtts, wss or https (the HTTP listener's WebSocket
 * relay; its requests go through libcurl): mgate is a TLS client of the
 * target.  An https target's CA is TARGET_CA_FILE or the system's, as
 * libcurl's is. */
static int prepare_upstream_tls(const struct listener_config *lc, struct session_params *p, char *err,
                                size_t errlen)
{
    bool https = lc->target_protocol == TARGET_HTTPS;
    if (lc->target_protocol != TARGET_MQTTS && lc->target_protocol != TARGET_WSS && !https)
        return 0;
    struct tls_settings t = {
        .name = lc->name, .cert_file = lc->target_cert_file, .key_file = lc->target_key_file,
        .ca_file = *lc->target_ca_file || https ? lc->target_ca_file : lc->server_ca_file,
        .min_version = lc->tls_min_version, .verify_peer = lc->target_tls_verify,
    };
    char why[384];
    if (!(p->upstream_tls = tls_client_ctx_new(&t, why, sizeof(why)))) {
        snprintf(err, errlen, "%s%s", lc->prefix, why);
        return -1;
    }
    p->target_server_name = *lc->target_server_name ? lc->target_server_name : lc->target_host;
    return 0;
}

/* Check what config_load cannot know: handler names, what is built yet,
 * and that targets resolve.  Fills the per-listener session parameters. */
static int prepare(struct app *a, const struct mgate_handler *const *extra, char *err, size_t errlen)
{
    int n = handler_chain(a->cfg.handler, extra, a->handlers, SESSION_MAX_HANDLERS, err, errlen);
    if (n < 0 || handlers_start(a->handlers, (unsigned)n, &a->cfg, err, errlen) < 0)
        return -1;
    a->handler_count = (unsigned)n;
    unsigned enabled = 0;
    for (int i = 0; i < LISTENER_COUNT; i++) {
        const struct listener_config *lc = &a->cfg.listeners[i];
        if (!lc->enabled)
            continue;
        const struct front_ops *front = front_of(lc->id);
        if (!front) {
            snprintf(err, errlen, "%sPORT: this listener is not available in this version", lc->prefix);
            return -1;
        }
        struct session_params *p = &a->params[i];
        a->fronts[i] = front; /* free_params frees what its prepare made, even half of it */
        if (front->prepare(lc, p, err, errlen) < 0)
            return -1;
        char rerr[256];
        if (resolve_address(lc->target_host, lc->target_port, &p->target, &p->target_len, rerr,
                            sizeof(rerr)) < 0) {
            snprintf(err, errlen, "%sTARGET_HOST: %s", lc->prefix, rerr);
            return -1;
        }
        p->listener = lc->name;
        p->listener_id = (uint8_t)lc->id;
        p->proxy_protocol = lc->proxy_protocol;
        p->publish_rate = lc->publish_rate_limit;
        p->publish_bandwidth = lc->publish_bandwidth_limit;
        p->max_connections = lc->max_connections;
        if (lc->max_connections)
            p->open_sessions = &a->open_sessions[i];
        if (lc->connection_rate_limit && !(p->admission = a->admissions[i] = admission_new(lc->connection_rate_limit))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        p->target_proxy_protocol = lc->target_proxy_protocol;
        p->max_packet_size = lc->max_packet_size;
        p->connect_timeout_ms = lc->connect_timeout_ms;
        p->output_high_water = lc->output_high_water;
        p->refusal_close = lc->refusal == REFUSAL_CLOSE;
        p->client_id_policy = lc->client_id.mode != CLIENT_ID_ANY ? &lc->client_id : NULL;
        p->mount_point = *lc->mount_point ? lc->mount_point : NULL;
        p->handlers = a->handlers;
        p->handler_count = a->handler_count;
        p->interceptor = a->interceptor;
        if (prepare_tls(lc, p, err, errlen) < 0 || prepare_upstream_tls(lc, p, err, errlen) < 0)
            return -1;
        enabled++;
    }
    if (!enabled) {
        snprintf(err, errlen, "no listener configured: set MGATE_MQTT_WITHOUT_TLS_PORT (and its TARGET_HOST, "
                              "TARGET_PORT)");
        return -1;
    }
    return 0;
}

static void free_params(struct app *a)
{
    for (int i = 0; i < LISTENER_COUNT; i++) {
        tls_ctx_free(a->params[i].tls);
        tls_ctx_free(a->params[i].upstream_tls);
        admission_free(a->admissions[i]);
        a->admissions[i] = NULL;
        if (a->fronts[i])
            a->fronts[i]->free(&a->params[i]);
        a->fronts[i] = NULL;
        a->params[i].tls = NULL;
        a->params[i].upstream_tls = NULL;
    }
}

static int start_workers(struct app *a)
{
    a->nworkers = a->cfg.workers;
    a->workers = calloc(a->nworkers, sizeof(*a->workers));
    if (!a->workers)
        return -1;
    for (unsigned w = 0; w < a->nworkers; w++) {
        struct worker *wk = &a->workers[w];
        if (worker_init(wk, w, a->cfg.shutdown_grace_ms) < 0) {
            fprintf(stderr, "mgate: cannot create worker %u: %s\n", w, strerror(errno));
            return -1;
        }
        for (int i = 0; i < LISTENER_COUNT; i++) {
            const struct listener_config *lc = &a->cfg.listeners[i];
            if (!lc->enabled)
                continue;
            char err[256];
            int fd = a->fronts[i]->datagram ? listener_bind_udp(lc->host, lc->port, err, sizeof(err))
                                            : listener_bind(lc->host, lc->port, err, sizeof(err));
            if (fd < 0) {
                fprintf(stderr, "mgate: %sPORT: %s\n", lc->prefix, err);
                return -1;
            }
            if (worker_add_listener(wk, fd, lc->id, &a->params[i]) < 0) {
                fprintf(stderr, "mgate: %sPORT: cannot start the listener: %s\n", lc->prefix, strerror(errno));
                return -1;
            }
            if (w == 0)
                log_msgf(LOGL_INFO, "listening on %s:%u (%s) for %s:%u", *lc->host ? lc->host : "*",
                         lc->port, lc->name, lc->target_host, lc->target_port);
        }
    }
    for (unsigned w = 0; w < a->nworkers; w++)
        if (worker_start(&a->workers[w]) != 0)
            return -1;
    return 0;
}

/* SIGHUP, TLS: read certificates, keys, CAs and CRL files again; a file
 * that does not load keeps the old ones for that listener. */
static void reload_tls(struct app *a)
{
    for (int i = 0; i < LISTENER_COUNT; i++) {
        if (!a->params[i].tls)
            continue;
        char err[512];
        if (tls_ctx_reload(a->params[i].tls, err, sizeof(err)) < 0)
            log_msgf(LOGL_ERROR, "SIGHUP: %s%s; keeping the previous certificates", a->cfg.listeners[i].prefix, err);
        else
            log_msgf(LOGL_INFO, "SIGHUP: %s reloaded its certificates", a->cfg.listeners[i].name);
    }
}

/* SIGHUP: resolve every broker name again (here, never on a worker) and
 * hand the addresses over; a name that no longer resolves keeps the old one. */
static void reload(struct app *a)
{
    reload_tls(a);
    handlers_reload();
    struct worker_targets t;
    for (int i = 0; i < LISTENER_COUNT; i++) {
        const struct listener_config *lc = &a->cfg.listeners[i];
        t.addr[i] = a->params[i].target;
        t.len[i] = a->params[i].target_len;
        if (!lc->enabled)
            continue;
        char err[256], addr[64];
        if (resolve_address(lc->target_host, lc->target_port, &t.addr[i], &t.len[i], err, sizeof(err)) < 0) {
            log_msgf(LOGL_WARN, "SIGHUP: %sTARGET_HOST: %s; keeping the previous address", lc->prefix, err);
            continue;
        }
        a->params[i].target = t.addr[i];
        a->params[i].target_len = t.len[i];
        sockaddr_format((const struct sockaddr *)&t.addr[i], addr, sizeof(addr));
        log_msgf(LOGL_INFO, "SIGHUP: %s now forwards to %s", lc->name, addr);
    }
    for (unsigned w = 0; w < a->nworkers; w++)
        worker_retarget(&a->workers[w], &t);
}

/* The control loop outlives the drain, so /healthz and /readyz (503) keep
 * answering while clients are let go. */
static void on_drained_check(struct loop *l, struct loop_timer *t)
{
    struct app *a = (struct app *)((char *)t - offsetof(struct app, drained));
    for (unsigned w = 0; w < a->nworkers; w++)
        if (a->workers[w].started && !__atomic_load_n(&a->workers[w].finished, __ATOMIC_ACQUIRE)) {
            loop_timer_start(l, t, 20, on_drained_check);
            return;
        }
    loop_stop(l);
}

static void on_signal(struct loop *l, int signo, void *ctx)
{
    struct app *a = ctx;
    if (signo == SIGHUP) {
        if (!a->stopping)
            reload(a);
        return;
    }
    if (a->stopping)
        return;
    a->stopping = true;
    log_msgf(LOGL_INFO, "%s: draining, grace period %u ms", strsignal(signo), a->cfg.shutdown_grace_ms);
    for (unsigned w = 0; w < a->nworkers; w++)
        worker_send(&a->workers[w], WORKER_DRAIN);
    on_drained_check(l, &a->drained);
}

/* MGATE_ADMIN_PORT: the admin listener and the broker probes behind /readyz. */
static int start_admin(struct app *a)
{
    if (!a->cfg.admin_port)
        return 0;
    struct status_src src = {&a->cfg, a->params, a->workers, a->nworkers, &a->stopping};
    char err[256];
    if (!(a->status = status_start(a->ctl, &src)) ||
        !(a->admin = admin_start(a->ctl, a->cfg.admin_host, (uint16_t)a->cfg.admin_port, status_route, a->status,
                                 err, sizeof(err)))) {
        fprintf(stderr, "mgate: MGATE_ADMIN_PORT: %s\n", a->status ? err : "out of memory");
        return -1;
    }
    log_msgf(LOGL_INFO, "admin listener on %s:%u (/metrics, /healthz, /readyz)", a->cfg.admin_host,
             a->cfg.admin_port);
    return 0;
}

static int parse_args(int argc, char **argv, const char **ini, bool *check)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check-config", no_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            *ini = optarg;
            break;
        case 'k':
            *check = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case 'V':
            printf("mgate %s\n", MGATE_VERSION);
            return 0;
        default:
            fputs(usage, stderr);
            return EXIT_CONFIG;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mgate: unexpected argument \"%s\"\n%s", argv[optind], usage);
        return EXIT_CONFIG;
    }
    return -1;
}

int mgate_main(int argc, char **argv, const struct mgate_handler *const *handlers,
               const struct mgate_interceptor *interceptor)
{
    if (argc > 1 && !strcmp(argv[1], "tunnel")) /* a mode of its own: docs/TUNNEL.md */
        return tunnel_main(argc - 1, argv + 1);
    const char *ini = getenv("MGATE_CONFIG");
    bool check = false;
    int rc = parse_args(argc, argv, &ini, &check);
    if (rc >= 0)
        return rc;

    struct app a = {.interceptor = interceptor};
    struct config_source src = {getenv_cb, NULL, ini && *ini ? ini : NULL, ".env"};
    char err[512];
    if (fetch_global_init() < 0) {
        fprintf(stderr, "mgate: cannot initialise libcurl\n");
        return 1;
    }
    if (config_load(&a.cfg, &src, err, sizeof(err)) < 0 || prepare(&a, handlers, err, sizeof(err)) < 0) {
        fprintf(stderr, "mgate: %s\n", err);
        handlers_stop();
        free_params(&a);
        config_free(&a.cfg);
        return EXIT_CONFIG;
    }
    log_set_level((int)a.cfg.log_level);
    char unknown[512];
    extern char **environ;
    if (config_unknown_vars(environ, ".env", unknown, sizeof(unknown)))
        log_msgf(LOGL_WARN, "ignoring unknown variables (a typo?): %s", unknown);
    if (check) {
        printf("mgate: configuration OK (handler %s, %u worker%s)\n", a.cfg.handler, a.cfg.workers,
               a.cfg.workers == 1 ? "" : "s");
        handlers_stop();
        free_params(&a);
        config_free(&a.cfg);
        return 0;
    }

    /* Workers inherit this mask: only the control thread takes signals. */
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    signal(SIGPIPE, SIG_IGN);
    a.ctl = loop_new();
    if (!a.ctl || loop_signals(a.ctl, sigs, 3, on_signal, &a) < 0) {
        fprintf(stderr, "mgate: cannot set up signals: %s\n", strerror(errno));
        return 1;
    }
    log_msgf(LOGL_INFO, "mgate %s starting: handler %s, %u worker%s", MGATE_VERSION, a.cfg.handler,
             a.cfg.workers, a.cfg.workers == 1 ? "" : "s");
    rc = start_workers(&a) < 0 || start_admin(&a) < 0 ? 1 : 0;
    if (rc == 0) {
        a.trim = trim_start(a.ctl, a.workers, a.nworkers);
        loop_run(a.ctl);
    }
    else
        for (unsigned w = 0; w < a.nworkers; w++)
            if (a.workers[w].started)
                worker_send(&a.workers[w], WORKER_DRAIN);
    trim_stop(a.trim);
    admin_stop(a.admin); /* it reads the workers' counters: before they go */
    status_stop(a.status);
    for (unsigned w = 0; w < a.nworkers; w++)
        if (a.workers[w].loop)
            worker_join(&a.workers[w]);
    log_msgf(LOGL_INFO, "mgate stopped");
    free(a.workers);
    loop_free(a.ctl);
    handlers_stop();
    free_params(&a);
    config_free(&a.cfg);
    return rc;
}
