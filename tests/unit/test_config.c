/* Configuration: defaults, precedence, every validation error, the .env and
 * INI readers, the value parsers, and the Go mGate's demo configuration. */
#include <sched.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config/config.h"

#define CHECK_HAS(hay, needle)                                                         \
    do {                                                                               \
        const char *check_h_ = (hay), *check_n_ = (needle);                            \
        check_count++;                                                                 \
        if (!strstr(check_h_, check_n_)) {                                             \
            check_failures++;                                                          \
            fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__,       \
                    __LINE__, check_h_, check_n_);                                     \
        }                                                                              \
    } while (0)

/* ---- sources: a table for the environment, temporary files ---- */

static const char *table_env(void *ctx, const char *name)
{
    for (const char *const *p = ctx; p && *p; p += 2)
        if (strcmp(*p, name) == 0)
            return p[1];
    return NULL;
}

static char tmpdir[64];

/* Writes text to tmpdir/name; the path returned stays valid for the next
 * three calls, enough for the sources of one load. */
static const char *tmpfile_with(const char *name, const char *text)
{
    static char paths[4][128];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof(paths[0]), "%s/%s", tmpdir, name);
    check_write_file(path, text);
    return path;
}

static char err[512];

static int load(struct mgate_config *cfg, const char *const *env, const char *ini,
                const char *dotenv)
{
    struct config_source src = {table_env, (void *)env, ini, dotenv};
    err[0] = '\0';
    return config_load(cfg, &src, err, sizeof(err));
}

/* Loads with the environment only and expects an error naming each needle. */
static void expect_error_at(int line, const char *const *env, const char *n1, const char *n2)
{
    struct mgate_config cfg;
    int rc = load(&cfg, env, NULL, NULL);
    check_count++;
    if (rc != -1 || !strstr(err, n1) || (n2 && !strstr(err, n2))) {
        check_failures++;
        fprintf(stderr, "%s:%d: wanted an error with \"%s\" and \"%s\", got %d \"%s\"\n", __FILE__,
                line, n1, n2 ? n2 : "", rc, err);
    }
    CHECK(!strchr(err, '\n')); /* one line */
    config_free(&cfg);
}
#define expect_error(env, n1, n2) expect_error_at(__LINE__, env, n1, n2)

/* ---- defaults ---- */

static void test_defaults(void)
{
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, NULL, NULL, NULL), 0);
    CHECK_EQ_STR(err, "");
    CHECK_EQ_INT(cfg.log_level, LOG_INFO);
    CHECK_EQ_STR(cfg.handler, "log");
    CHECK_EQ_INT(cfg.shutdown_grace_ms, 5000);
    cpu_set_t cpus;
    CHECK_EQ_INT(sched_getaffinity(0, sizeof(cpus), &cpus), 0);
    CHECK_EQ_INT(cfg.workers, CPU_COUNT(&cpus)); /* one worker per CPU it may use */
    CHECK_EQ_STR(cfg.config_file, "");
    for (int i = 0; i < LISTENER_COUNT; i++) {
        const struct listener_config *lc = &cfg.listeners[i];
        CHECK_EQ_INT(lc->id, i);
        CHECK(!lc->enabled);
        CHECK_EQ_INT(lc->port, 0);
        CHECK_EQ_STR(lc->host, "");
        CHECK_EQ_STR(lc->target_host, "");
        CHECK_EQ_STR(lc->offline_crl_issuer_cert_file, "");
        CHECK_EQ_INT(lc->cert_verification_methods, 0);
        CHECK_EQ_INT(lc->ocsp_depth, 0);
        CHECK_EQ_INT(lc->crl_depth, 1);
        CHECK_EQ_INT(lc->max_packet_size, 1048576);
        CHECK_EQ_INT(lc->connect_timeout_ms, 10000);
        CHECK_EQ_INT(lc->output_high_water, 65536);
        CHECK_EQ_INT(lc->refusal, REFUSAL_REASON);
        CHECK_EQ_INT(lc->tls_min_version, 0x0303);
        CHECK_EQ_STR(lc->tls_ciphers, "");
        CHECK_EQ_STR(lc->tls_ciphersuites, "");
        CHECK(lc->tls_session_tickets);
        CHECK_EQ_INT(lc->client_cert, CLIENT_CERT_REQUIRED);
        CHECK(!lc->use_cn_as_username);
        CHECK(!lc->revocation_soft_fail);
        CHECK_EQ_INT(lc->revocation_timeout_ms, 5000);
        CHECK_EQ_STR(lc->target_ca_file, "");
        CHECK_EQ_STR(lc->target_cert_file, "");
        CHECK_EQ_STR(lc->target_key_file, "");
        CHECK_EQ_STR(lc->target_server_name, "");
        CHECK(lc->target_tls_verify);
        CHECK_EQ_STR(lc->allowed_origins, "");
    }
    CHECK_EQ_STR(cfg.listeners[LISTENER_MQTT].prefix, "MGATE_MQTT_WITHOUT_TLS_");
    CHECK_EQ_STR(cfg.listeners[LISTENER_WS_MTLS].prefix, "MGATE_MQTT_WS_WITH_MTLS_");
    CHECK_EQ_STR(cfg.listeners[LISTENER_COAP_DTLS].name, "coap_with_dtls");
    CHECK_EQ_STR(cfg.listeners[LISTENER_HTTP_TLS].name, "http_with_tls");
    CHECK_EQ_INT(cfg.listeners[LISTENER_MQTT_TLS].target_protocol, TARGET_MQTT);
    CHECK_EQ_INT(cfg.listeners[LISTENER_WS].target_protocol, TARGET_WS);
    CHECK_EQ_INT(cfg.listeners[LISTENER_HTTP_MTLS].target_protocol, TARGET_HTTP);
    CHECK_EQ_INT(cfg.listeners[LISTENER_COAP].target_protocol, TARGET_COAP);
    config_free(&cfg);
}

static void test_minimal_listener(void)
{
    const char *env[] = {"MGATE_MQTT_WITHOUT_TLS_PORT", "1884", "MGATE_MQTT_WITHOUT_TLS_TARGET_HOST",
                         "b", "MGATE_MQTT_WITHOUT_TLS_TARGET_PORT", "1883", NULL};
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, env, NULL, NULL), 0);
    const struct listener_config *lc = &cfg.listeners[LISTENER_MQTT];
    CHECK(lc->enabled);
    CHECK_EQ_INT(lc->port, 1884);
    CHECK_EQ_STR(lc->target_host, "b");
    CHECK_EQ_INT(lc->target_port, 1883);
    CHECK_EQ_INT(lc->target_protocol, TARGET_MQTT);
    CHECK(!cfg.listeners[LISTENER_MQTT_TLS].enabled);
    config_free(&cfg);
}

/* ---- precedence: environment > .env > INI > default ---- */

static void test_precedence(void)
{
    const char *ini = tmpfile_with("p.ini", "[mgate]\nlog_level = warn\nworkers = 2\n"
                                            "shutdown_grace = 7s\n");
    const char *dotenv = tmpfile_with("p.env", "MGATE_LOG_LEVEL=error\nMGATE_WORKERS=3\n");
    const char *env[] = {"MGATE_LOG_LEVEL", "debug", NULL};
    struct mgate_config cfg;

    CHECK_EQ_INT(load(&cfg, NULL, ini, NULL), 0); /* INI over default */
    CHECK_EQ_INT(cfg.log_level, LOG_WARN);
    CHECK_EQ_INT(cfg.shutdown_grace_ms, 7000);
    CHECK_EQ_STR(cfg.config_file, ini);
    config_free(&cfg);

    CHECK_EQ_INT(load(&cfg, NULL, ini, dotenv), 0); /* .env over INI */
    CHECK_EQ_INT(cfg.log_level, LOG_ERROR);
    CHECK_EQ_INT(cfg.workers, 3);
    CHECK_EQ_INT(cfg.shutdown_grace_ms, 7000);
    config_free(&cfg);

    CHECK_EQ_INT(load(&cfg, env, ini, dotenv), 0); /* environment over .env */
    CHECK_EQ_INT(cfg.log_level, LOG_DEBUG);
    CHECK_EQ_INT(cfg.workers, 3);
    CHECK_EQ_STR(cfg.handler, "log"); /* nobody set it: default */
    config_free(&cfg);
}

static void test_empty_hides_weaker(void)
{
    const char *ini = tmpfile_with("e.ini", "[mqtt_without_tls]\nport = 1884\ntarget_host = b\n"
                                            "target_port = 1883\nhost = 10.0.0.1\n");
    const char *env[] = {"MGATE_MQTT_WITHOUT_TLS_PORT", "", NULL};
    const char *dotenv = tmpfile_with("e.env", "MGATE_MQTT_WITHOUT_TLS_HOST=\n");
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, env, ini, dotenv), 0);
    CHECK(!cfg.listeners[LISTENER_MQTT].enabled); /* the environment turned it off */
    CHECK_EQ_STR(cfg.listeners[LISTENER_MQTT].host, "");
    CHECK_EQ_STR(cfg.listeners[LISTENER_MQTT].target_host, "b");
    config_free(&cfg);
}

/* ---- validation: values ---- */

/* One bad variable each; the message must read NAME: "value" ... expect. */
static const struct bad_value {
    const char *name, *value, *expect;
} bad_values[] = {
    {"MGATE_MQTT_WITHOUT_TLS_PORT", "70000", "is not a port (expected 1-65535)"},
    {"MGATE_MQTT_WITHOUT_TLS_PORT", "0", "1-65535"},
    {"MGATE_MQTT_WITHOUT_TLS_PORT", "18a4", "not a port"},
    {"MGATE_MQTT_WITHOUT_TLS_PORT", "+1884", "not a port"},
    {"MGATE_MQTT_WITHOUT_TLS_PORT", " 1884", "not a port"},
    {"MGATE_MQTT_WITHOUT_TLS_TARGET_PORT", "-1", "not a port"},
    {"MGATE_MQTT_WITHOUT_TLS_TARGET_PROTOCOL", "ftp", "not a protocol (expected mqtt, mqtts, ws or wss)"},
    {"MGATE_MQTT_WITHOUT_TLS_TARGET_PROTOCOL", "http", "not possible for this listener"},
    {"MGATE_HTTP_WITHOUT_TLS_TARGET_PROTOCOL", "ws", "(expected mqtt, mqtts, http or https)"},
    {"MGATE_MQTT_WS_WITHOUT_TLS_TARGET_PROTOCOL", "https", "(expected mqtt, mqtts, ws or wss)"},
    {"MGATE_COAP_WITHOUT_DTLS_TARGET_PROTOCOL", "http", "(expected mqtt, mqtts or coap)"},
    {"MGATE_MQTT_WITH_MTLS_CERT_VERIFICATION_METHODS", "ocsp,foo", "ocsp, crl or both"},
    {"MGATE_MQTT_WITH_MTLS_CERT_VERIFICATION_METHODS", "ocsp,,crl", "ocsp, crl or both"},
    {"MGATE_MQTT_WITH_MTLS_OCSP_DEPTH", "two", "not a whole number (expected 0 or more)"},
    {"MGATE_HTTP_WITH_TLS_CRL_DEPTH", "-1", "not a whole number"},
    {"MGATE_MQTT_WITHOUT_TLS_MAX_PACKET_SIZE", "8", "at least 16 bytes"},
    {"MGATE_MQTT_WITHOUT_TLS_MAX_PACKET_SIZE", "256MiB", "at most 268435455 bytes"},
    {"MGATE_MQTT_WITHOUT_TLS_MAX_PACKET_SIZE", "1 MiB", "not a size"},
    {"MGATE_MQTT_WITH_TLS_CONNECT_TIMEOUT", "0", "must be more than 0"},
    {"MGATE_MQTT_WITH_TLS_CONNECT_TIMEOUT", "5x", "not a duration"},
    {"MGATE_MQTT_WS_WITH_TLS_OUTPUT_HIGH_WATER", "1023", "at least 1024 bytes"},
    {"MGATE_MQTT_WITHOUT_TLS_REFUSAL", "drop", "(expected reason or close)"},
    {"MGATE_MQTT_WITH_TLS_TLS_MIN_VERSION", "1.1", "is not a TLS version (expected 1.2 or 1.3)"},
    {"MGATE_MQTT_WITH_TLS_TLS_MIN_VERSION", "TLSv1.3", "not a TLS version"},
    {"MGATE_MQTT_WITH_TLS_TLS_CIPHERS", "ECDHE+AESGCM:caf\xc3\xa9", "is not a cipher list"},
    {"MGATE_MQTT_WITH_TLS_TLS_CIPHERSUITES", "TLS_AES_128_GCM_SHA256 \xff", "printable ASCII"},
    {"MGATE_MQTT_WITH_TLS_TLS_SESSION_TICKETS", "maybe",
     "is not a boolean (expected true or false, yes or no, on or off, 1 or 0)"},
    {"MGATE_MQTT_WITH_MTLS_USE_CN_AS_USERNAME", "2", "not a boolean"},
    {"MGATE_MQTT_WITH_MTLS_REVOCATION_SOFT_FAIL", "truee", "not a boolean"},
    {"MGATE_MQTT_WITH_TLS_TARGET_TLS_VERIFY", " no", "not a boolean"},
    {"MGATE_MQTT_WITH_MTLS_CLIENT_CERT", "request",
     "is not a client certificate mode (expected required or optional)"},
    {"MGATE_MQTT_WITH_MTLS_REVOCATION_TIMEOUT", "99ms", "is out of range (expected 100ms to 60s)"},
    {"MGATE_MQTT_WITH_MTLS_REVOCATION_TIMEOUT", "60001ms", "out of range (expected 100ms to 60s)"},
    {"MGATE_MQTT_WITH_MTLS_REVOCATION_TIMEOUT", "0", "out of range"},
    {"MGATE_MQTT_WITH_MTLS_REVOCATION_TIMEOUT", "1m1s", "not a duration"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_POLICY", "username",
     "is not a client id policy (expected any, equal, prefix or pattern)"},
    {"MGATE_MQTT_WS_WITH_TLS_CLIENT_ID_POLICY", "equal ", "not a client id policy"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_SEPARATORS", "a", "not a list of separators"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_SEPARATORS", "- ", "not a list of separators"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_SEPARATORS", "-_:/.@#+!$&*,;=~|^", "at most 16 characters"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_PATTERN", "dev-1", "(expected %u or %cn in it"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_PATTERN", "%u*", "a * right after %u or %cn"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_PATTERN", "%cn*", "a * right after %u or %cn"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_PATTERN", "*-%u", "a * may only be its last character"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_PATTERN", "%u-**", "a * may only be its last character"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_PATTERN", "%u%cn", "two placeholders side by side"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_PATTERN", "%c-x", "after % expected u, cn or %"},
    {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_PATTERN", "%u-%", "after % expected u, cn or %"},
    {"MGATE_LOG_LEVEL", "verbose", "(expected debug, info, warn, error or off)"},
    {"MGATE_HANDLER", "Log", "a-z, 0-9 and _"},
    {"MGATE_HANDLER", "log,,audit", "not a handler list"},
    {"MGATE_HANDLER", "log,", "not a handler list"},
    {"MGATE_HANDLER", "log audit", "not a handler list"},
    {"MGATE_SHUTDOWN_GRACE", "-5s", "not a duration"},
    {"MGATE_WORKERS", "0", "(expected 1-256)"},
    {"MGATE_WORKERS", "257", "(expected 1-256)"},
    {"MGATE_WORKERS", "1.5", "(expected 1-256)"},
};

static void test_bad_values(void)
{
    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
        const struct bad_value *b = &bad_values[i];
        const char *env[] = {b->name, b->value, NULL};
        char head[160];
        snprintf(head, sizeof(head), "%s: \"%s\" ", b->name, b->value);
        expect_error(env, head, b->expect);
    }
    /* a control character, which the message shows as '?' */
    const char *tab[] = {"MGATE_MQTT_WITH_TLS_TLS_CIPHERS", "HIGH\t!aNULL", NULL};
    expect_error(tab, "MGATE_MQTT_WITH_TLS_TLS_CIPHERS: \"HIGH?!aNULL\" is not a cipher list", NULL);
}

static void test_good_values(void)
{
    const char *env[] = {"MGATE_MQTT_WS_WITH_TLS_TARGET_PROTOCOL", "MQTTS",
                         "MGATE_COAP_WITHOUT_DTLS_TARGET_PROTOCOL", "mqtts",
                         "MGATE_HTTP_WITH_TLS_TARGET_PROTOCOL", "https",
                         "MGATE_MQTT_WITH_MTLS_CERT_VERIFICATION_METHODS", " OCSP , crl ",
                         "MGATE_MQTT_WITH_MTLS_CLIENT_CA_FILE", "ca.crt",
                         "MGATE_MQTT_WITH_TLS_CERT_VERIFICATION_METHODS", "Crl",
                         "MGATE_MQTT_WITH_TLS_CLIENT_CA_FILE", "ca.crt",
                         "MGATE_HTTP_WITH_MTLS_OCSP_DEPTH", "3",
                         "MGATE_MQTT_WITHOUT_TLS_MAX_PACKET_SIZE", "255MB",
                         "MGATE_MQTT_WITHOUT_TLS_REFUSAL", "Close",
                         "MGATE_MQTT_WITHOUT_TLS_CONNECT_TIMEOUT", "1500ms",
                         "MGATE_MQTT_WITHOUT_TLS_OUTPUT_HIGH_WATER", "1KiB",
                         "MGATE_LOG_LEVEL", "OFF",
                         "MGATE_HANDLER", "log,audit_2",
                         "MGATE_SHUTDOWN_GRACE", "0",
                         "MGATE_WORKERS", "256",
                         NULL};
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, env, NULL, NULL), 0);
    const struct listener_config *l = cfg.listeners;
    CHECK_EQ_INT(l[LISTENER_WS_TLS].target_protocol, TARGET_MQTTS);
    CHECK_EQ_INT(l[LISTENER_COAP].target_protocol, TARGET_MQTTS);
    CHECK_EQ_INT(l[LISTENER_HTTP_TLS].target_protocol, TARGET_HTTPS);
    CHECK_EQ_INT(l[LISTENER_MQTT_MTLS].cert_verification_methods, CERT_VERIFY_OCSP | CERT_VERIFY_CRL);
    CHECK_EQ_INT(l[LISTENER_MQTT_TLS].cert_verification_methods, CERT_VERIFY_CRL);
    CHECK_EQ_INT(l[LISTENER_HTTP_MTLS].ocsp_depth, 3);
    CHECK_EQ_INT(l[LISTENER_MQTT].max_packet_size, 255u << 20);
    CHECK_EQ_INT(l[LISTENER_MQTT].refusal, REFUSAL_CLOSE);
    CHECK_EQ_INT(l[LISTENER_MQTT].connect_timeout_ms, 1500);
    CHECK_EQ_INT(l[LISTENER_MQTT].output_high_water, 1024);
    CHECK_EQ_INT(l[LISTENER_MQTT_TLS].max_packet_size, 1048576); /* per listener */
    CHECK_EQ_INT(cfg.log_level, LOG_OFF);
    CHECK_EQ_STR(cfg.handler, "log,audit_2");
    CHECK_EQ_INT(cfg.shutdown_grace_ms, 0);
    CHECK_EQ_INT(cfg.workers, 256);
    config_free(&cfg);
}

static void test_good_tls_values(void)
{
    const char *env[] = {"MGATE_MQTT_WITH_TLS_TLS_MIN_VERSION", "1.3",
                         "MGATE_MQTT_WITH_TLS_TLS_CIPHERS", "ECDHE+AESGCM:!aNULL @STRENGTH",
                         "MGATE_MQTT_WITH_TLS_TLS_CIPHERSUITES", "TLS_AES_256_GCM_SHA384",
                         "MGATE_MQTT_WITH_TLS_TLS_SESSION_TICKETS", "OFF",
                         "MGATE_MQTT_WITH_TLS_TARGET_TLS_VERIFY", "No",
                         "MGATE_MQTT_WITH_TLS_REVOCATION_TIMEOUT", "100ms",
                         "MGATE_MQTT_WITH_MTLS_CLIENT_CA_FILE", "ca.crt",
                         "MGATE_MQTT_WITH_MTLS_CLIENT_CERT", "Optional",
                         "MGATE_MQTT_WITH_MTLS_USE_CN_AS_USERNAME", "YES",
                         "MGATE_MQTT_WITH_MTLS_REVOCATION_SOFT_FAIL", "1",
                         "MGATE_MQTT_WITH_MTLS_REVOCATION_TIMEOUT", "1m",
                         "MGATE_MQTT_WITH_MTLS_TLS_SESSION_TICKETS", "", /* empty: the default */
                         "MGATE_MQTT_WITH_MTLS_TARGET_CERT_FILE", "client.crt",
                         "MGATE_MQTT_WITH_MTLS_TARGET_KEY_FILE", "client.key",
                         "MGATE_MQTT_WS_WITH_TLS_CLIENT_CERT", "required", /* harmless without a CA */
                         "MGATE_MQTT_WS_WITH_TLS_USE_CN_AS_USERNAME", "false",
                         NULL};
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, env, NULL, NULL), 0);
    CHECK_EQ_STR(err, "");
    const struct listener_config *t = &cfg.listeners[LISTENER_MQTT_TLS];
    CHECK_EQ_INT(t->tls_min_version, 0x0304);
    CHECK_EQ_STR(t->tls_ciphers, "ECDHE+AESGCM:!aNULL @STRENGTH");
    CHECK_EQ_STR(t->tls_ciphersuites, "TLS_AES_256_GCM_SHA384");
    CHECK(!t->tls_session_tickets);
    CHECK(!t->target_tls_verify);
    CHECK_EQ_INT(t->revocation_timeout_ms, 100);
    const struct listener_config *m = &cfg.listeners[LISTENER_MQTT_MTLS];
    CHECK_EQ_INT(m->client_cert, CLIENT_CERT_OPTIONAL);
    CHECK(m->use_cn_as_username);
    CHECK(m->revocation_soft_fail);
    CHECK_EQ_INT(m->revocation_timeout_ms, 60000);
    CHECK(m->tls_session_tickets);
    CHECK_EQ_STR(m->target_cert_file, "client.crt");
    CHECK_EQ_STR(m->target_key_file, "client.key");
    CHECK_EQ_INT(m->tls_min_version, 0x0303); /* per listener */
    CHECK(!cfg.listeners[LISTENER_WS_TLS].use_cn_as_username);
    config_free(&cfg);
}

/* TARGET_CA_FILE falls back to SERVER_CA_FILE, TARGET_SERVER_NAME to
 * TARGET_HOST; a value of their own wins. */
static void test_target_tls_defaults(void)
{
    const char *env[] = {"MGATE_MQTT_WITHOUT_TLS_SERVER_CA_FILE", "ca.crt",
                         "MGATE_MQTT_WITHOUT_TLS_TARGET_HOST", "broker.local",
                         "MGATE_MQTT_WITH_TLS_SERVER_CA_FILE", "ca.crt",
                         "MGATE_MQTT_WITH_TLS_TARGET_CA_FILE", "broker-ca.crt",
                         "MGATE_MQTT_WITH_TLS_TARGET_HOST", "10.0.0.5",
                         "MGATE_MQTT_WITH_TLS_TARGET_SERVER_NAME", "broker.local",
                         NULL};
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, env, NULL, NULL), 0);
    const struct listener_config *l = cfg.listeners;
    CHECK_EQ_STR(l[LISTENER_MQTT].target_ca_file, "ca.crt");
    CHECK_EQ_STR(l[LISTENER_MQTT].target_server_name, "broker.local");
    CHECK_EQ_STR(l[LISTENER_MQTT_TLS].target_ca_file, "broker-ca.crt");
    CHECK_EQ_STR(l[LISTENER_MQTT_TLS].target_server_name, "broker.local");
    CHECK_EQ_STR(l[LISTENER_MQTT_TLS].server_ca_file, "ca.crt"); /* untouched */
    CHECK_EQ_STR(l[LISTENER_MQTT_MTLS].target_ca_file, ""); /* the system's store */
    config_free(&cfg);
}

/* ---- validation: settings that go together ---- */

static void test_client_id_policy(void)
{
    const char *def[] = {NULL};
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, def, NULL, NULL), 0);
    for (int i = 0; i < LISTENER_COUNT; i++)
        CHECK_EQ_INT(cfg.listeners[i].client_id.mode, CLIENT_ID_ANY);
    config_free(&cfg);

    const char *good[] = {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_POLICY", "Prefix",
                          "MGATE_MQTT_WITH_TLS_CLIENT_ID_POLICY", "prefix",
                          "MGATE_MQTT_WITH_TLS_CLIENT_ID_SEPARATORS", ":/",
                          "MGATE_MQTT_WS_WITHOUT_TLS_CLIENT_ID_POLICY", "EQUAL",
                          "MGATE_MQTT_WS_WITH_MTLS_CLIENT_ID_POLICY", "pattern",
                          "MGATE_MQTT_WS_WITH_MTLS_CLIENT_ID_PATTERN", "dev/%cn/%u:*",
                          "MGATE_MQTT_WS_WITH_MTLS_CLIENT_CA_FILE", "ca.crt",
                          "MGATE_MQTT_WITH_MTLS_CLIENT_ID_POLICY", "pattern",
                          "MGATE_MQTT_WITH_MTLS_CLIENT_ID_PATTERN", "100%%-%u",
                          "MGATE_HTTP_WITHOUT_TLS_CLIENT_ID_POLICY", "any",
                          NULL};
    CHECK_EQ_INT(load(&cfg, good, NULL, NULL), 0);
    const struct listener_config *l = cfg.listeners;
    CHECK_EQ_INT(l[LISTENER_MQTT].client_id.mode, CLIENT_ID_PREFIX);
    CHECK_EQ_STR(l[LISTENER_MQTT].client_id.separators, "-"); /* the default */
    CHECK_EQ_STR(l[LISTENER_MQTT_TLS].client_id.separators, ":/");
    CHECK_EQ_INT(l[LISTENER_WS].client_id.mode, CLIENT_ID_EQUAL);
    CHECK_EQ_INT(l[LISTENER_WS_MTLS].client_id.mode, CLIENT_ID_PATTERN);
    CHECK_EQ_STR(l[LISTENER_WS_MTLS].client_id.pattern, "dev/%cn/%u:*");
    CHECK_EQ_STR(l[LISTENER_MQTT_MTLS].client_id.pattern, "100%%-%u");
    CHECK_EQ_INT(l[LISTENER_HTTP].client_id.mode, CLIENT_ID_ANY);
    CHECK_EQ_INT(l[LISTENER_MQTT_TLS].client_id.mode, CLIENT_ID_PREFIX); /* per listener */
    CHECK_EQ_INT(l[LISTENER_WS_TLS].client_id.mode, CLIENT_ID_ANY);
    config_free(&cfg);

    /* A setting the policy would not read: the user believes in a check that is not there. */
    const char *a[] = {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_PATTERN", "%u", NULL};
    expect_error(a, "MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_PATTERN is set but "
                    "MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_POLICY is \"any\"", "(expected pattern)");
    const char *b[] = {"MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_POLICY", "equal",
                       "MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_SEPARATORS", ":", NULL};
    expect_error(b, "MGATE_MQTT_WITHOUT_TLS_CLIENT_ID_SEPARATORS is set but", "(expected prefix)");
    const char *c[] = {"MGATE_MQTT_WITH_TLS_CLIENT_ID_POLICY", "pattern", NULL};
    expect_error(c, "MGATE_MQTT_WITH_TLS_CLIENT_ID_PATTERN is required when "
                    "MGATE_MQTT_WITH_TLS_CLIENT_ID_POLICY is \"pattern\"", NULL);
    const char *d[] = {"MGATE_MQTT_WITH_TLS_CLIENT_ID_POLICY", "pattern",
                       "MGATE_MQTT_WITH_TLS_CLIENT_ID_PATTERN", "%u-%cn", NULL};
    expect_error(d, "MGATE_MQTT_WITH_TLS_CLIENT_ID_PATTERN uses %cn and requires "
                    "MGATE_MQTT_WITH_TLS_CLIENT_CA_FILE", NULL);
    const char *e[] = {"MGATE_HTTP_WITH_TLS_CLIENT_ID_POLICY", "equal", NULL};
    expect_error(e, "MGATE_HTTP_WITH_TLS_CLIENT_ID_POLICY: \"equal\" is not possible for this listener",
                 "expected any");
    /* CoAP clients name a client id in the query, and so do the HTTP bridge's */
    const char *f[] = {"MGATE_COAP_WITHOUT_DTLS_CLIENT_ID_POLICY", "prefix",
                       "MGATE_HTTP_WITHOUT_TLS_CLIENT_ID_POLICY", "equal",
                       "MGATE_HTTP_WITHOUT_TLS_TARGET_PROTOCOL", "mqtt", NULL};
    CHECK_EQ_INT(load(&cfg, f, NULL, NULL), 0);
    CHECK_EQ_INT(cfg.listeners[LISTENER_COAP].client_id.mode, CLIENT_ID_PREFIX);
    CHECK_EQ_INT(cfg.listeners[LISTENER_HTTP].client_id.mode, CLIENT_ID_EQUAL);
    config_free(&cfg);

    /* The INI file: keys in the listener's section, messages with file and key. */
    const char *ini = tmpfile_with("cid.ini", "[mqtt_without_tls]\nclient_id_policy = pattern\n"
                                              "client_id_pattern = %u:*\n");
    CHECK_EQ_INT(load(&cfg, NULL, ini, NULL), 0);
    CHECK_EQ_INT(cfg.listeners[LISTENER_MQTT].client_id.mode, CLIENT_ID_PATTERN);
    CHECK_EQ_STR(cfg.listeners[LISTENER_MQTT].client_id.pattern, "%u:*");
    config_free(&cfg);
    ini = tmpfile_with("cid-bad.ini", "[mqtt_with_tls]\nclient_id_policy = username\n");
    CHECK_EQ_INT(load(&cfg, NULL, ini, NULL), -1);
    CHECK(strstr(err, "cid-bad.ini:2: client_id_policy (MGATE_MQTT_WITH_TLS_CLIENT_ID_POLICY): \"username\"") != NULL);
    config_free(&cfg);
    ini = tmpfile_with("cid-unused.ini", "[mqtt_with_tls]\nclient_id_separators = :\n");
    CHECK_EQ_INT(load(&cfg, NULL, ini, NULL), -1);
    CHECK(strstr(err, "MGATE_MQTT_WITH_TLS_CLIENT_ID_SEPARATORS (client_id_separators in [mqtt_with_tls]) is set") != NULL);
    config_free(&cfg);
    CHECK(config_known_var("MGATE_MQTT_WS_WITH_MTLS_CLIENT_ID_PATTERN"));
}

static void test_required_together(void)
{
    const char *a[] = {"MGATE_MQTT_WITHOUT_TLS_PORT", "1884", "MGATE_MQTT_WITHOUT_TLS_TARGET_PORT",
                       "1883", NULL};
    expect_error(a, "MGATE_MQTT_WITHOUT_TLS_TARGET_HOST is required", "PORT is set");
    const char *b[] = {"MGATE_HTTP_WITHOUT_TLS_PORT", "8086", "MGATE_HTTP_WITHOUT_TLS_TARGET_HOST",
                       "h", NULL};
    expect_error(b, "MGATE_HTTP_WITHOUT_TLS_TARGET_PORT is required", NULL);
    const char *c[] = {"MGATE_MQTT_WITH_TLS_PORT", "8883", "MGATE_MQTT_WITH_TLS_TARGET_HOST", "h",
                       "MGATE_MQTT_WITH_TLS_TARGET_PORT", "1883", NULL};
    expect_error(c, "MGATE_MQTT_WITH_TLS_CERT_FILE and MGATE_MQTT_WITH_TLS_KEY_FILE", "TLS");
    const char *d[] = {"MGATE_MQTT_WITH_MTLS_PORT", "8884", "MGATE_MQTT_WITH_MTLS_TARGET_HOST", "h",
                       "MGATE_MQTT_WITH_MTLS_TARGET_PORT", "1883", "MGATE_MQTT_WITH_MTLS_CERT_FILE",
                       "c", "MGATE_MQTT_WITH_MTLS_KEY_FILE", "k", NULL};
    expect_error(d, "MGATE_MQTT_WITH_MTLS_CLIENT_CA_FILE is required", "client certificates");
    const char *f[] = {"MGATE_MQTT_WITH_TLS_CERT_FILE", "c.pem", NULL};
    expect_error(f, "MGATE_MQTT_WITH_TLS_KEY_FILE is required", "MGATE_MQTT_WITH_TLS_CERT_FILE");
    const char *g[] = {"MGATE_MQTT_WITHOUT_TLS_KEY_FILE", "k.pem", NULL};
    expect_error(g, "MGATE_MQTT_WITHOUT_TLS_CERT_FILE is required", "KEY_FILE is set");
    const char *h[] = {"MGATE_MQTT_WITH_TLS_TARGET_CERT_FILE", "c.pem", NULL};
    expect_error(h, "MGATE_MQTT_WITH_TLS_TARGET_KEY_FILE is required when "
                    "MGATE_MQTT_WITH_TLS_TARGET_CERT_FILE is set", NULL);
    const char *i[] = {"MGATE_MQTT_WITH_TLS_TARGET_KEY_FILE", "k.pem", NULL};
    expect_error(i, "MGATE_MQTT_WITH_TLS_TARGET_CERT_FILE is required", "TARGET_KEY_FILE is set");
    const char *e[] = {"MGATE_COAP_WITH_DTLS_PORT", "5684", "MGATE_COAP_WITH_DTLS_TARGET_HOST", "h",
                       "MGATE_COAP_WITH_DTLS_TARGET_PORT", "5683", NULL};
    expect_error(e, "MGATE_COAP_WITH_DTLS_CERT_FILE", "DTLS");
    /* Two listeners on one address (SO_REUSEPORT would let both bind and share clients at random). */
    const char *twice[] = {"MGATE_MQTT_WITHOUT_TLS_PORT", "1884", "MGATE_MQTT_WITHOUT_TLS_TARGET_HOST", "h",
                           "MGATE_MQTT_WITHOUT_TLS_TARGET_PORT", "1883", "MGATE_MQTT_WS_WITHOUT_TLS_PORT", "1884",
                           "MGATE_MQTT_WS_WITHOUT_TLS_TARGET_HOST", "h", "MGATE_MQTT_WS_WITHOUT_TLS_TARGET_PORT", "1883",
                           NULL};
    expect_error(twice, "MGATE_MQTT_WITHOUT_TLS_PORT and MGATE_MQTT_WS_WITHOUT_TLS_PORT", "both *:1884");
    const char *admin_twice[] = {"MGATE_MQTT_WITHOUT_TLS_PORT", "9090", "MGATE_MQTT_WITHOUT_TLS_HOST", "127.0.0.1",
                                 "MGATE_MQTT_WITHOUT_TLS_TARGET_HOST", "h", "MGATE_MQTT_WITHOUT_TLS_TARGET_PORT", "1883",
                                 "MGATE_ADMIN_PORT", "9090", NULL};
    expect_error(admin_twice, "MGATE_ADMIN_PORT and MGATE_MQTT_WITHOUT_TLS_PORT", "127.0.0.1:9090");
    struct mgate_config cfg2;
    const char *other_host[] = {"MGATE_MQTT_WITHOUT_TLS_PORT", "1884", "MGATE_MQTT_WITHOUT_TLS_HOST", "127.0.0.1",
                                "MGATE_MQTT_WITHOUT_TLS_TARGET_HOST", "h", "MGATE_MQTT_WITHOUT_TLS_TARGET_PORT", "1883",
                                "MGATE_MQTT_WS_WITHOUT_TLS_PORT", "1884", "MGATE_MQTT_WS_WITHOUT_TLS_HOST", "127.0.0.2",
                                "MGATE_MQTT_WS_WITHOUT_TLS_TARGET_HOST", "h", "MGATE_MQTT_WS_WITHOUT_TLS_TARGET_PORT", "1883",
                                "MGATE_COAP_WITHOUT_DTLS_PORT", "1884", "MGATE_COAP_WITHOUT_DTLS_TARGET_HOST", "h",
                                "MGATE_COAP_WITHOUT_DTLS_TARGET_PORT", "5683", NULL};
    CHECK_EQ_INT(load(&cfg2, other_host, NULL, NULL), 0); /* other hosts, and UDP beside TCP: fine */
    config_free(&cfg2);
    const char *psk_elsewhere[] = {"MGATE_MQTT_WITH_TLS_PSK_FILE", "keys", NULL};
    expect_error(psk_elsewhere, "MGATE_MQTT_WITH_TLS_PSK_FILE", "CoAP over DTLS listener only");

    /* Client-certificate settings without a client CA, on or off. */
    const char *j[] = {"MGATE_MQTT_WITH_TLS_CERT_VERIFICATION_METHODS", "ocsp", NULL};
    expect_error(j, "MGATE_MQTT_WITH_TLS_CERT_VERIFICATION_METHODS requires "
                    "MGATE_MQTT_WITH_TLS_CLIENT_CA_FILE: revocation", "CLIENT_CA_FILE is set");
    const char *k[] = {"MGATE_HTTP_WITH_TLS_CLIENT_CERT", "optional", NULL};
    expect_error(k, "MGATE_HTTP_WITH_TLS_CLIENT_CERT requires MGATE_HTTP_WITH_TLS_CLIENT_CA_FILE",
                 "\"optional\"");
    const char *m[] = {"MGATE_MQTT_WITH_TLS_USE_CN_AS_USERNAME", "on", NULL};
    expect_error(m, "MGATE_MQTT_WITH_TLS_USE_CN_AS_USERNAME requires "
                    "MGATE_MQTT_WITH_TLS_CLIENT_CA_FILE", "the CN");

    /* A disabled listener is not asked for what only a running one needs. */
    const char *ok[] = {"MGATE_MQTT_WITH_MTLS_TARGET_HOST", "h", NULL};
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, ok, NULL, NULL), 0);
    CHECK(!cfg.listeners[LISTENER_MQTT_MTLS].enabled);
    config_free(&cfg);

    /* DTLS with pre-shared keys only needs no certificate (the file is read by prepare). */
    const char *psk[] = {"MGATE_COAP_WITH_DTLS_PORT", "5684", "MGATE_COAP_WITH_DTLS_TARGET_HOST", "h",
                         "MGATE_COAP_WITH_DTLS_TARGET_PORT", "5683", "MGATE_COAP_WITH_DTLS_PSK_FILE", "keys", NULL};
    CHECK_EQ_INT(load(&cfg, psk, NULL, NULL), 0);
    CHECK(cfg.listeners[LISTENER_COAP_DTLS].enabled);
    CHECK_EQ_STR(cfg.listeners[LISTENER_COAP_DTLS].psk_file, "keys");
    config_free(&cfg);
}

/* ---- the INI file ---- */

/* A file (INI when ini, else .env) whose load must fail with expect in
 * the message. */
static const struct bad_file {
    bool ini;
    const char *text, *expect;
} bad_files[] = {
    {true, "[mgate]\nlog_level = info\n\n[mqtt_without_tls]\nport = 1884\ntarget_hots = b\n",
     "bad.ini:6: target_hots (MGATE_MQTT_WITHOUT_TLS_TARGET_HOTS): unknown key"},
    {true, "log_level = info\nlog_levle = debug\n",
     "bad.ini:2: log_levle (MGATE_LOG_LEVLE): unknown key in [mgate]"},
    {true, "[mgate]\nport = 1884\n", /* a listener key in [mgate] */
     "bad.ini:2: port (MGATE_PORT): unknown key"},
    {true, "; comment\n[mqtt_without_tsl]\nport = 1884\n",
     "bad.ini:3: unknown section [mqtt_without_tsl]"},
    {true, "[mqtt_without_tls]\nport = 1884\ntarget_port = 99999\n",
     "bad.ini:3: target_port (MGATE_MQTT_WITHOUT_TLS_TARGET_PORT): \"99999\" is not a port"},
    {true, "[mgate]\nhandler log\n", "bad.ini:2: expected [section], key = value"},
    {true, "[mqtt_with_tls]\nport = 8883\ntarget_host = h\ntarget_port = 1\n",
     "MGATE_MQTT_WITH_TLS_CERT_FILE (cert_file in [mqtt_with_tls])"},
    {true, "[mqtt_with_tls]\nclient_cert = optional\n",
     "MGATE_MQTT_WITH_TLS_CLIENT_CERT (client_cert in [mqtt_with_tls]) requires "
     "MGATE_MQTT_WITH_TLS_CLIENT_CA_FILE (client_ca_file in [mqtt_with_tls])"},
    {true, "[mqtt_with_mtls]\nrevocation_timeout = 2m\n",
     "bad.ini:2: revocation_timeout (MGATE_MQTT_WITH_MTLS_REVOCATION_TIMEOUT): \"2m\" is out of "
     "range (expected 100ms to 60s)"},
    {false, "MGATE_LOG_LEVEL=info\nMGATE_HANDLER=\"log\n", "bad.env:2: no closing double quote"},
    {false, "\nMGATE_WORKERS='2' x\n", "bad.env:2: text after the closing quote"},
    {false, "MGATE_WORKERS 2\n", "bad.env:1: expected NAME=VALUE"},
    {false, "# x\nMGATE_WORKERS=0\n", "bad.env:2: MGATE_WORKERS: \"0\""},
    {false, "MGATE_WORKERS=\"1\\n2\"\n", "MGATE_WORKERS: \"1?2\""}, /* one line still */
};

static void test_bad_files(void)
{
    for (size_t i = 0; i < sizeof(bad_files) / sizeof(bad_files[0]); i++) {
        const struct bad_file *b = &bad_files[i];
        const char *p = tmpfile_with(b->ini ? "bad.ini" : "bad.env", b->text);
        struct mgate_config cfg;
        CHECK_EQ_INT(load(&cfg, NULL, b->ini ? p : NULL, b->ini ? NULL : p), -1);
        CHECK_HAS(err, b->expect);
        CHECK(!strchr(err, '\n'));
        config_free(&cfg);
    }
}

static void test_missing_files(void)
{
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, NULL, "no/such/file.ini", NULL), -1);
    CHECK_HAS(err, "no/such/file.ini");
    CHECK_HAS(err, strerror(ENOENT));
    CHECK(cfg.config_file == NULL || !*cfg.config_file);
    config_free(&cfg);

    /* A missing .env is normal. */
    CHECK_EQ_INT(load(&cfg, NULL, NULL, "no/such/.env"), 0);
    CHECK_EQ_STR(err, "");
    config_free(&cfg);
}

static void test_ini_long_line(void)
{
    char text[1024], value[400];
    memset(value, 'x', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    /* A long comment is fine; a long value on line 5 is not, and the lines
     * after it must not be read as the tail of that line. */
    snprintf(text, sizeof(text), "; %s\n[mqtt_without_tls]\nport = 1884\n\nhost = %s\n"
                                 "target_host = b\n", value, value);
    const char *p = tmpfile_with("long.ini", text);
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, NULL, p, NULL), -1);
    CHECK_HAS(err, "long.ini:5: line longer than");
    config_free(&cfg);

    snprintf(text, sizeof(text), "# %s\n[mgate]\nworkers = 4\n", value);
    p = tmpfile_with("long.ini", text);
    CHECK_EQ_INT(load(&cfg, NULL, p, NULL), 0);
    CHECK_EQ_INT(cfg.workers, 4);
    config_free(&cfg);
}

static void test_ini_layout(void)
{
    const char *p = tmpfile_with("ok.ini", "workers = 2 ; before any section: global\r\n"
                                           "[ Mqtt_Without_TLS ]\r\n"
                                           "  PORT = 1884\r\n"
                                           "\ttarget_host = broker.local\r\n"
                                           "target_port: 1883\r\n"
                                           "port = 1885\r\n" /* the later line wins */
                                           "refusal =\r\n"); /* empty: the default */
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, NULL, p, NULL), 0);
    CHECK_EQ_STR(err, "");
    CHECK_EQ_INT(cfg.workers, 2);
    CHECK_EQ_INT(cfg.listeners[LISTENER_MQTT].port, 1885);
    CHECK_EQ_STR(cfg.listeners[LISTENER_MQTT].target_host, "broker.local");
    CHECK_EQ_INT(cfg.listeners[LISTENER_MQTT].target_port, 1883);
    CHECK_EQ_INT(cfg.listeners[LISTENER_MQTT].refusal, REFUSAL_REASON);
    config_free(&cfg);
}

/* ---- the .env file ---- */

static void test_dotenv_quoting(void)
{
    const char *p = tmpfile_with("q.env",
                                 "# comment\n"
                                 "\n"
                                 "export MGATE_MQTT_WITHOUT_TLS_HOST = 127.0.0.1  \n"
                                 "MGATE_MQTT_WITHOUT_TLS_PATH_PREFIX='/a b#c'\n"
                                 "MGATE_MQTT_WITHOUT_TLS_TARGET_PATH=\"/x \\\"y\\\" \\\\z\" # note\n"
                                 "MGATE_MQTT_WITHOUT_TLS_CERT_FILE=/etc/c#1.pem # inline comment\n"
                                 "MGATE_MQTT_WITHOUT_TLS_KEY_FILE=  'k.pem'\r\n"
                                 "  MGATE_HANDLER=log\n"
                                 "MGATE_MQTT_WITHOUT_TLS_SERVER_CA_FILE=''\n"
                                 "MGATE_MQTT_WITHOUT_TLS_CRL_DISTRIBUTION_POINTS=\"a\\nb\"\n"
                                 "MGATE_MQTT_WITHOUT_TLS_OFFLINE_CRL_FILE='a\\nb'\n"
                                 "OTHER_PROGRAM_VAR=ignored\n");
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, NULL, NULL, p), 0);
    CHECK_EQ_STR(err, "");
    const struct listener_config *lc = &cfg.listeners[LISTENER_MQTT];
    CHECK_EQ_STR(lc->host, "127.0.0.1");
    CHECK_EQ_STR(lc->path_prefix, "/a b#c");
    CHECK_EQ_STR(lc->target_path, "/x \"y\" \\z");
    CHECK_EQ_STR(lc->cert_file, "/etc/c#1.pem");
    CHECK_EQ_STR(lc->key_file, "k.pem");
    CHECK_EQ_STR(lc->server_ca_file, "");
    CHECK_EQ_STR(lc->crl_distribution_points, "a\nb"); /* double quotes know \n */
    CHECK_EQ_STR(lc->offline_crl_file, "a\\nb");       /* single quotes are literal */
    config_free(&cfg);
}

/* ---- parsers ---- */

struct parse_case {
    const char *s;
    int rc;
    uint32_t v;
};

static void check_parser(int (*parse)(const char *, uint32_t *), const struct parse_case *t,
                         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v = 12345;
        int rc = parse(t[i].s, &v);
        if (rc != t[i].rc)
            fprintf(stderr, "parsing \"%s\"\n", t[i].s);
        CHECK_EQ_INT(rc, t[i].rc);
        CHECK_EQ_INT(v, rc == 0 ? t[i].v : 12345); /* untouched on error */
    }
    uint32_t v;
    CHECK_EQ_INT(parse(NULL, &v), -1);
}

static void test_parse_duration(void)
{
    static const struct parse_case t[] = {
        {"10s", 0, 10000},
        {"500ms", 0, 500},
        {"2m", 0, 120000},
        {"1h", 0, 3600000},
        {"3", 0, 3000}, /* bare number: seconds */
        {"0", 0, 0},
        {"10S", 0, 10000},
        {"4294967295ms", 0, 4294967295u},
        {"4294967s", 0, 4294967000u},
        {"1193h", 0, 4294800000u},
        {"4294967296ms", -1, 0},
        {"4294968s", -1, 0},
        {"1194h", -1, 0},
        {"99999999999999999999", -1, 0},
        {"-1s", -1, 0},
        {"+1s", -1, 0},
        {"", -1, 0},
        {"s", -1, 0},
        {"10 s", -1, 0},
        {" 10s", -1, 0},
        {"10sec", -1, 0},
        {"1.5s", -1, 0},
        {"10d", -1, 0},
    };
    check_parser(config_parse_duration_ms, t, sizeof(t) / sizeof(t[0]));
}

static void test_parse_size(void)
{
    static const struct parse_case t[] = {
        {"1048576", 0, 1048576},
        {"0", 0, 0},
        {"64K", 0, 65536},
        {"64kb", 0, 65536},
        {"64KiB", 0, 65536},
        {"1M", 0, 1048576},
        {"1MB", 0, 1048576},
        {"1mib", 0, 1048576},
        {"3G", 0, 3221225472u},
        {"3GiB", 0, 3221225472u},
        {"100B", 0, 100},
        {"4294967295", 0, 4294967295u},
        {"4294967296", -1, 0},
        {"4G", -1, 0},
        {"4194304K", -1, 0},
        {"4194303K", 0, 4294966272u},
        {"", -1, 0},
        {"K", -1, 0},
        {"-1", -1, 0},
        {"1 K", -1, 0},
        {"1KK", -1, 0},
        {"1T", -1, 0},
        {"0x10", -1, 0},
    };
    check_parser(config_parse_size, t, sizeof(t) / sizeof(t[0]));
}

static void test_parse_small(void)
{
    uint32_t u = 7;
    CHECK_EQ_INT(config_parse_uint("4294967295", &u), 0);
    CHECK_EQ_INT(u, 4294967295u);
    CHECK_EQ_INT(config_parse_uint("4294967296", &u), -1);
    CHECK_EQ_INT(config_parse_uint("", &u), -1);
    CHECK_EQ_INT(config_parse_uint("1e3", &u), -1);

    enum log_level l = LOG_INFO;
    CHECK_EQ_INT(config_parse_log_level("Warn", &l), 0);
    CHECK_EQ_INT(l, LOG_WARN);
    CHECK_EQ_INT(config_parse_log_level("warning", &l), -1);
    CHECK_EQ_STR(log_level_name(LOG_ERROR), "error");
    CHECK_EQ_STR(log_level_name(LOG_OFF), "off");

    enum target_protocol p = TARGET_NONE;
    CHECK_EQ_INT(config_parse_target_protocol("WSS", &p), 0);
    CHECK_EQ_INT(p, TARGET_WSS);
    CHECK_EQ_INT(config_parse_target_protocol("none", &p), -1); /* unset, not a value */
    CHECK_EQ_INT(config_parse_target_protocol("CoAP", &p), 0);
    CHECK_EQ_INT(p, TARGET_COAP);
    CHECK_EQ_STR(target_protocol_name(TARGET_COAP), "coap");
    CHECK_EQ_STR(target_protocol_name(TARGET_HTTPS), "https");
    CHECK_EQ_STR(target_protocol_name(TARGET_MQTT), "mqtt");

    unsigned m = 99;
    CHECK_EQ_INT(config_parse_cert_methods("crl", &m), 0);
    CHECK_EQ_INT(m, CERT_VERIFY_CRL);
    CHECK_EQ_INT(config_parse_cert_methods("ocsp,", &m), -1);
    CHECK_EQ_INT(config_parse_cert_methods("ocspcrl", &m), -1);
    CHECK_EQ_INT(config_check_handler_list("a_1,b"), 0);
    CHECK_EQ_INT(config_check_handler_list(""), -1);
    CHECK_EQ_INT(config_check_handler_list("a-b"), -1);

    enum client_cert_mode cc = CLIENT_CERT_REQUIRED;
    CHECK_EQ_INT(config_parse_client_cert("OPTIONAL", &cc), 0);
    CHECK_EQ_INT(cc, CLIENT_CERT_OPTIONAL);
    CHECK_EQ_INT(config_parse_client_cert("none", &cc), -1);
    CHECK_EQ_INT(cc, CLIENT_CERT_OPTIONAL);

    unsigned v = 7;
    CHECK_EQ_INT(config_parse_tls_version("1.3", &v), 0);
    CHECK_EQ_INT(v, 0x0304);
    CHECK_EQ_INT(config_parse_tls_version("1.2", &v), 0);
    CHECK_EQ_INT(v, 0x0303);
    CHECK_EQ_INT(config_parse_tls_version("1.0", &v), -1);
    CHECK_EQ_INT(config_parse_tls_version("1.4", &v), -1);
    CHECK_EQ_INT(config_parse_tls_version("1.2 ", &v), -1);
    CHECK_EQ_INT(config_parse_tls_version(NULL, &v), -1);
    CHECK_EQ_INT(v, 0x0303);
}

static void test_parse_bool(void)
{
    static const struct {
        const char *s;
        int rc;
        bool v;
    } t[] = {
        {"true", 0, true},   {"TRUE", 0, true},   {"yes", 0, true},   {"Yes", 0, true},
        {"on", 0, true},     {"ON", 0, true},     {"1", 0, true},     {"false", 0, false},
        {"False", 0, false}, {"no", 0, false},    {"NO", 0, false},   {"off", 0, false},
        {"oFF", 0, false},   {"0", 0, false},     {"", -1, false},    {"2", -1, false},
        {"01", -1, false},   {"y", -1, false},    {"t", -1, false},   {"true ", -1, false},
        {" on", -1, false},  {"enabled", -1, false},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        for (int start = 0; start < 2; start++) { /* both ways, so a stale value cannot pass */
            bool v = start;
            int rc = config_parse_bool(t[i].s, &v);
            if (rc != t[i].rc || v != (rc == 0 ? t[i].v : (bool)start))
                fprintf(stderr, "parsing \"%s\"\n", t[i].s);
            CHECK_EQ_INT(rc, t[i].rc);
            CHECK_EQ_INT(v, rc == 0 ? t[i].v : (bool)start); /* untouched on error */
        }
    }
    bool v;
    CHECK_EQ_INT(config_parse_bool(NULL, &v), -1);
}

/* ---- the Go mGate's demo ---- */

static void check_listener(const struct mgate_config *cfg, enum listener_id id, unsigned port,
                           unsigned target_port, enum target_protocol proto, const char *prefix)
{
    const struct listener_config *lc = &cfg->listeners[id];
    CHECK(lc->enabled);
    CHECK_EQ_INT(lc->port, port);
    CHECK_EQ_STR(lc->target_host, "localhost");
    CHECK_EQ_INT(lc->target_port, target_port);
    CHECK_EQ_INT(lc->target_protocol, proto);
    CHECK_EQ_STR(lc->path_prefix, prefix);
}

static void test_go_demo(void)
{
    struct mgate_config cfg;
    CHECK_EQ_INT(load(&cfg, NULL, NULL, "fixtures/config/demo.env"), 0);
    CHECK_EQ_STR(err, "");
    CHECK_EQ_INT(cfg.log_level, LOG_DEBUG);
    check_listener(&cfg, LISTENER_MQTT, 1884, 1883, TARGET_MQTT, "");
    check_listener(&cfg, LISTENER_MQTT_TLS, 8883, 1883, TARGET_MQTT, "");
    check_listener(&cfg, LISTENER_MQTT_MTLS, 8884, 1883, TARGET_MQTT, "");
    check_listener(&cfg, LISTENER_WS, 8083, 8000, TARGET_WS, "/mgate-ws");
    check_listener(&cfg, LISTENER_WS_TLS, 8084, 8000, TARGET_WS, "/mgate-ws");
    check_listener(&cfg, LISTENER_WS_MTLS, 8085, 8000, TARGET_WS, "/mgate-ws");
    check_listener(&cfg, LISTENER_HTTP, 8086, 8888, TARGET_HTTP, "/mgate-http");
    check_listener(&cfg, LISTENER_HTTP_TLS, 8087, 8888, TARGET_HTTP, "/mgate-http");
    check_listener(&cfg, LISTENER_HTTP_MTLS, 8088, 8888, TARGET_HTTP, "/mgate-http");
    check_listener(&cfg, LISTENER_COAP, 5682, 5683, TARGET_COAP, "");
    check_listener(&cfg, LISTENER_COAP_DTLS, 5684, 5683, TARGET_COAP, "");
    const struct listener_config *m = &cfg.listeners[LISTENER_MQTT_MTLS];
    CHECK_EQ_STR(m->host, "localhost");
    CHECK_EQ_STR(m->cert_file, "ssl/certs/server.crt");
    CHECK_EQ_STR(m->key_file, "ssl/certs/server.key");
    CHECK_EQ_STR(m->client_ca_file, "ssl/certs/ca.crt");
    CHECK_EQ_INT(m->cert_verification_methods, CERT_VERIFY_OCSP);
    CHECK_EQ_STR(m->ocsp_responder_url, "http://localhost:8080/ocsp");
    CHECK_EQ_STR(cfg.listeners[LISTENER_HTTP].target_path, "/messages");
    CHECK_EQ_INT(cfg.listeners[LISTENER_HTTP_MTLS].cert_verification_methods,
                 CERT_VERIFY_OCSP | CERT_VERIFY_CRL);
    CHECK_EQ_INT(cfg.listeners[LISTENER_HTTP_MTLS].crl_depth, 2);
    config_free(&cfg);

    /* The same listeners from the INI form. */
    CHECK_EQ_INT(load(&cfg, NULL, "fixtures/config/demo.ini", NULL), 0);
    CHECK_EQ_STR(err, "");
    CHECK_EQ_INT(cfg.log_level, LOG_DEBUG);
    CHECK_EQ_INT(cfg.shutdown_grace_ms, 2000);
    check_listener(&cfg, LISTENER_MQTT, 1884, 1883, TARGET_MQTT, "");
    check_listener(&cfg, LISTENER_MQTT_MTLS, 8884, 1883, TARGET_MQTT, "");
    check_listener(&cfg, LISTENER_HTTP, 8086, 8888, TARGET_HTTP, "/mgate-http");
    CHECK_EQ_STR(cfg.listeners[LISTENER_MQTT_MTLS].ocsp_responder_url, "http://localhost:8080/ocsp");
    CHECK_EQ_STR(cfg.listeners[LISTENER_HTTP].target_path, "/messages");
    CHECK(!cfg.listeners[LISTENER_WS].enabled);
    config_free(&cfg);
}

/* ---- freeing, unknown names ---- */

static void test_free_is_safe(void)
{
    struct mgate_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    config_free(&cfg); /* zeroed */

    /* Fails on the last listener, after every string before it was set. */
    const char *env[] = {"MGATE_MQTT_WITHOUT_TLS_HOST", "h", "MGATE_COAP_WITH_DTLS_PORT", "x", NULL};
    CHECK_EQ_INT(load(&cfg, env, NULL, NULL), -1);
    CHECK_HAS(err, "MGATE_COAP_WITH_DTLS_PORT");
    config_free(&cfg);
    config_free(&cfg); /* twice */

    CHECK_EQ_INT(load(&cfg, NULL, NULL, NULL), 0);
    config_free(&cfg);
    config_free(&cfg);
    CHECK(cfg.handler == NULL);
}

static void test_unknown_vars(void)
{
    CHECK(config_known_var("MGATE_MQTT_WITHOUT_TLS_PORT"));
    CHECK(config_known_var("MGATE_COAP_WITH_DTLS_OFFLINE_CRL_ISSUER_CERT_FILE"));
    CHECK(config_known_var("MGATE_HTTP_WITH_MTLS_REFUSAL"));
    CHECK(config_known_var("MGATE_WORKERS"));
    CHECK(config_known_var("MGATE_CONFIG"));
    static const char *const tls_keys[] = {
        "TLS_MIN_VERSION",    "TLS_CIPHERS",          "TLS_CIPHERSUITES",   "TLS_SESSION_TICKETS",
        "CLIENT_CERT",        "USE_CN_AS_USERNAME",   "REVOCATION_SOFT_FAIL", "REVOCATION_TIMEOUT",
        "TARGET_CA_FILE",     "TARGET_CERT_FILE",     "TARGET_KEY_FILE",    "TARGET_SERVER_NAME",
        "TARGET_TLS_VERIFY",
    };
    for (size_t i = 0; i < sizeof(tls_keys) / sizeof(tls_keys[0]); i++) {
        char name[96];
        snprintf(name, sizeof(name), "MGATE_MQTT_WITH_MTLS_%s", tls_keys[i]);
        if (!config_known_var(name))
            fprintf(stderr, "unknown: %s\n", name);
        CHECK(config_known_var(name));
    }
    CHECK(!config_known_var("MGATE_TLS_MIN_VERSION")); /* a listener key, not a global one */
    CHECK(!config_known_var("MGATE_MQTT_WITHOUT_TLS_POTR"));
    CHECK(!config_known_var("MGATE_MQTT_WITHOUT_TLS_WORKERS"));
    CHECK(!config_known_var("MGATE_PORT"));
    CHECK(!config_known_var("PATH"));

    char *envp[] = {"PATH=/bin", "MGATE_WORKERS=2", "MGATE_LOG_LEVLE=debug", "MGATE_X=1",
                    "MGATE_X=2", NULL};
    const char *dotenv = tmpfile_with("u.env", "MGATE_HANDLER=log\nMGATE_HANDLR=x\nMGATE_X=3\n");
    char out[128];
    CHECK_EQ_INT(config_unknown_vars(envp, dotenv, out, sizeof(out)), 3);
    CHECK_EQ_STR(out, "MGATE_LOG_LEVLE,MGATE_X,MGATE_HANDLR");
    char small[20];
    CHECK_EQ_INT(config_unknown_vars(envp, dotenv, small, sizeof(small)), 3);
    CHECK_EQ_STR(small, "MGATE_LOG_LEVLE");
    CHECK_EQ_INT(config_unknown_vars(NULL, NULL, out, sizeof(out)), 0);
    CHECK_EQ_STR(out, "");
}

static void remove_tmpdir(void)
{
    static const char *const names[] = {"p.ini", "p.env", "e.ini", "e.env", "bad.ini", "long.ini",
                                        "ok.ini", "q.env", "bad.env", "u.env"};
    char path[128];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/mgate-config-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_defaults();
    test_minimal_listener();
    test_precedence();
    test_empty_hides_weaker();
    test_bad_values();
    test_good_values();
    test_good_tls_values();
    test_target_tls_defaults();
    test_required_together();
    test_client_id_policy();
    test_bad_files();
    test_missing_files();
    test_ini_long_line();
    test_ini_layout();
    test_dotenv_quoting();
    test_parse_duration();
    test_parse_size();
    test_parse_small();
    test_parse_bool();
    test_go_demo();
    test_free_is_safe();
    test_unknown_vars();
    remove_tmpdir();
    return check_done("test_config");
}
