/*
 * config_load: the table of settings, where each value comes from, and the
 * checks that span several settings.  Files are read by dotenv.c and ini.c,
 * single values parsed by parse.c.
 *
 * Every source is looked up by the environment variable's name, so the
 * precedence (environment, .env, INI, default) lives in one function,
 * lookup(), and every error can name the variable the way the user wrote it.
 */
#include <ctype.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "session/mount.h"

enum value_type { V_STR, V_PORT, V_UINT, V_SIZE, V_DURATION, V_PROTOCOL, V_METHODS, V_REFUSAL,
                  V_LOG_LEVEL, V_HANDLER, V_CIPHERS, V_BOOL, V_TLS_VERSION, V_CLIENT_CERT, V_CLIENT_ID,
                  V_ID_SEPARATORS, V_ID_PATTERN };

struct key {
    const char *name; /* after the prefix: "PORT" */
    enum value_type type;
    size_t off;      /* of the field in listener_config or mgate_config */
    const char *def; /* parsed like a user's value; NULL: "" or 0 */
    uint32_t min, max;
};

#define L(field) offsetof(struct listener_config, field)
#define LSTR(name, field) {name, V_STR, L(field), NULL, 0, 0}
static const struct key listener_keys[] = {
    /* the Go mGate's keys, same names and defaults */
    LSTR("HOST", host),
    {"PORT", V_PORT, L(port), NULL, 1, 65535},
    LSTR("PATH_PREFIX", path_prefix),
    LSTR("TARGET_HOST", target_host),
    {"TARGET_PORT", V_PORT, L(target_port), NULL, 1, 65535},
    {"TARGET_PROTOCOL", V_PROTOCOL, L(target_protocol), NULL, 0, 0}, /* default: by kind */
    LSTR("TARGET_PATH", target_path),
    LSTR("CERT_FILE", cert_file),
    LSTR("KEY_FILE", key_file),
    LSTR("SERVER_CA_FILE", server_ca_file),
    LSTR("CLIENT_CA_FILE", client_ca_file),
    {"CERT_VERIFICATION_METHODS", V_METHODS, L(cert_verification_methods), NULL, 0, 0},
    {"OCSP_DEPTH", V_UINT, L(ocsp_depth), "0", 0, UINT32_MAX},
    LSTR("OCSP_RESPONDER_URL", ocsp_responder_url),
    {"CRL_DEPTH", V_UINT, L(crl_depth), "1", 0, UINT32_MAX},
    LSTR("CRL_DISTRIBUTION_POINTS", crl_distribution_points),
    LSTR("CRL_DISTRIBUTION_POINTS_ISSUER_CERT_FILE", crl_distribution_points_issuer_cert_file),
    LSTR("OFFLINE_CRL_FILE", offline_crl_file),
    LSTR("OFFLINE_CRL_ISSUER_CERT_FILE", offline_crl_issuer_cert_file),
    /* ours; 268435455 is the largest length MQTT can encode */
    {"MAX_PACKET_SIZE", V_SIZE, L(max_packet_size), "1MiB", 16, 268435455},
    {"CONNECT_TIMEOUT", V_DURATION, L(connect_timeout_ms), "10s", 1, UINT32_MAX},
    {"OUTPUT_HIGH_WATER", V_SIZE, L(output_high_water), "64KiB", 1024, UINT32_MAX},
    {"REFUSAL", V_REFUSAL, L(refusal), "reason", 0, 0},
    {"CLIENT_ID_POLICY", V_CLIENT_ID, L(client_id.mode), "any", 0, 0},
    {"CLIENT_ID_SEPARATORS", V_ID_SEPARATORS, L(client_id.separators), NULL, 0, 0}, /* prefix: "-" */
    {"CLIENT_ID_PATTERN", V_ID_PATTERN, L(client_id.pattern), NULL, 0, 0},
    {"TLS_MIN_VERSION", V_TLS_VERSION, L(tls_min_version), "1.2", 0, 0},
    {"TLS_CIPHERS", V_CIPHERS, L(tls_ciphers), NULL, 0, 0},
    {"TLS_CIPHERSUITES", V_CIPHERS, L(tls_ciphersuites), NULL, 0, 0},
    {"TLS_SESSION_TICKETS", V_BOOL, L(tls_session_tickets), "true", 0, 0},
    {"CLIENT_CERT", V_CLIENT_CERT, L(client_cert), "required", 0, 0},
    {"USE_CN_AS_USERNAME", V_BOOL, L(use_cn_as_username), "false", 0, 0},
    {"REVOCATION_SOFT_FAIL", V_BOOL, L(revocation_soft_fail), "false", 0, 0},
    {"REVOCATION_TIMEOUT", V_DURATION, L(revocation_timeout_ms), "5s", 100, 60000},
    LSTR("PSK_FILE", psk_file),
    LSTR("TARGET_CA_FILE", target_ca_file), /* default: inherited[] */
    LSTR("TARGET_CERT_FILE", target_cert_file),
    LSTR("TARGET_KEY_FILE", target_key_file),
    LSTR("TARGET_SERVER_NAME", target_server_name),
    {"TARGET_TLS_VERIFY", V_BOOL, L(target_tls_verify), "true", 0, 0},
    LSTR("ALLOWED_ORIGINS", allowed_origins),
    {"WS_PING_INTERVAL", V_DURATION, L(ws_ping_interval_ms), "0", 0, 3600000},
    {"WS_PING_TIMEOUT", V_DURATION, L(ws_ping_timeout_ms), "10s", 1000, 3600000},
    {"PROXY_PROTOCOL", V_BOOL, L(proxy_protocol), "false", 0, 0},
    {"MAX_CONNECTIONS", V_UINT, L(max_connections), "0", 0, 10000000},
    {"CONNECTION_RATE_LIMIT", V_UINT, L(connection_rate_limit), "0", 0, 1000000},
    {"PUBLISH_RATE_LIMIT", V_UINT, L(publish_rate_limit), "0", 0, 10000000},
    {"PUBLISH_BANDWIDTH_LIMIT", V_SIZE, L(publish_bandwidth_limit), "0", 0, UINT32_MAX},
    {"TARGET_PROXY_PROTOCOL", V_BOOL, L(target_proxy_protocol), "false", 0, 0},
    LSTR("BYPASS_PATHS", bypass_paths),
    {"MAX_HEADER_SIZE", V_SIZE, L(max_header_size), "8KiB", 1024, 1048576},
    {"MAX_BODY_SIZE", V_SIZE, L(max_body_size), "1MiB", 0, 268435455},
    {"REQUEST_TIMEOUT", V_DURATION, L(request_timeout_ms), "10s", 100, 3600000},
    {"IDLE_TIMEOUT", V_DURATION, L(idle_timeout_ms), "60s", 100, 3600000},
    {"ACK_TIMEOUT", V_DURATION, L(ack_timeout_ms), "2s", 100, 2000}, /* above 2 s, BR_PING_TIMEOUT_MS would be shorter than a hold */
    {"TARGET_TIMEOUT", V_DURATION, L(target_timeout_ms), "30s", 100, 3600000},
    LSTR("MOUNT_POINT", mount_point),
};

/* Defaults that are another key's value: {key, the key it defaults to}. */
static const char *const inherited[][2] = {
    {"TARGET_CA_FILE", "SERVER_CA_FILE"},
    {"TARGET_SERVER_NAME", "TARGET_HOST"},
};

/* Files that make sense only together. */
static const char *const pairs[][2] = {
    {"CERT_FILE", "KEY_FILE"},
    {"TARGET_CERT_FILE", "TARGET_KEY_FILE"},
};

/* Settings about client certificates, which are asked for only when
 * CLIENT_CA_FILE is set: {key, what it would act on}. */
static const char *const need_client_ca[][2] = {
    {"CERT_VERIFICATION_METHODS", "revocation is checked on client certificates"},
    {"CLIENT_CERT", "\"optional\" is about client certificates"},
    {"USE_CN_AS_USERNAME", "the CN comes from the client certificate"},
};

#define G(field) offsetof(struct mgate_config, field)
static const struct key global_keys[] = {
    {"LOG_LEVEL", V_LOG_LEVEL, G(log_level), "info", 0, 0},
    {"HANDLER", V_HANDLER, G(handler), "log", 0, 0},
    {"SHUTDOWN_GRACE", V_DURATION, G(shutdown_grace_ms), "5s", 0, UINT32_MAX},
    {"WORKERS", V_UINT, G(workers), NULL, 1, 256}, /* unset: one per CPU (cpus_available) */
    {"ADMIN_HOST", V_STR, G(admin_host), "127.0.0.1", 0, 0},
    {"ADMIN_PORT", V_UINT, G(admin_port), "0", 0, 65535},
    {"ACL_PASSWORD_FILE", V_STR, G(acl_password_file), NULL, 0, 0},
    {"ACL_FILE", V_STR, G(acl_file), NULL, 0, 0},
    {"ACL_ALLOW_ANONYMOUS", V_BOOL, G(acl_allow_anonymous), "false", 0, 0},
    {"REWRITE_FILE", V_STR, G(rewrite_file), NULL, 0, 0},
    {"WEBHOOK_URL", V_STR, G(webhook_url), NULL, 0, 0},
    {"WEBHOOK_TIMEOUT", V_DURATION, G(webhook_timeout_ms), "2s", 10, 60000},
    {"WEBHOOK_CONCURRENCY", V_UINT, G(webhook_concurrency), "128", 1, 10000},
    {"WEBHOOK_CACHE_TTL", V_DURATION, G(webhook_cache_ttl_ms), "0s", 0, 86400000},
    {"WEBHOOK_ON_ERROR", V_STR, G(webhook_on_error), "deny", 0, 0},
    {"JWT_JWKS_URL", V_STR, G(jwt_jwks_url), NULL, 0, 0},
    {"JWT_JWKS_FILE", V_STR, G(jwt_jwks_file), NULL, 0, 0},
    {"JWT_PUBLIC_KEY_FILE", V_STR, G(jwt_public_key_file), NULL, 0, 0},
    {"JWT_SECRET_FILE", V_STR, G(jwt_secret_file), NULL, 0, 0},
    {"JWT_ALGORITHMS", V_STR, G(jwt_algorithms), NULL, 0, 0},
    {"JWT_ISSUER", V_STR, G(jwt_issuer), NULL, 0, 0},
    {"JWT_AUDIENCE", V_STR, G(jwt_audience), NULL, 0, 0},
    {"JWT_LEEWAY", V_DURATION, G(jwt_leeway_ms), "30s", 0, 3600000},
    {"JWT_REQUIRE_EXP", V_BOOL, G(jwt_require_exp), "true", 0, 0},
    {"JWT_TOKEN_FROM", V_STR, G(jwt_token_from), "password", 0, 0},
    {"JWT_USERNAME_CLAIM", V_STR, G(jwt_username_claim), "sub", 0, 0},
    {"JWT_USERNAME", V_STR, G(jwt_username), "match", 0, 0},
    {"JWT_CLIENT_ID_CLAIM", V_STR, G(jwt_client_id_claim), NULL, 0, 0},
    {"JWT_ACL_CLAIM", V_STR, G(jwt_acl_claim), "acl", 0, 0},
    {"JWT_EXPIRE_SESSIONS", V_BOOL, G(jwt_expire_sessions), "true", 0, 0},
    {"JWT_FORWARD_TOKEN", V_BOOL, G(jwt_forward_token), "true", 0, 0},
    {"JWT_JWKS_REFRESH", V_DURATION, G(jwt_jwks_refresh_ms), "5m", 1000, 86400000},
    {"JWT_JWKS_MIN_INTERVAL", V_DURATION, G(jwt_jwks_min_interval_ms), "10s", 100, 3600000},
    {"JWT_JWKS_TIMEOUT", V_DURATION, G(jwt_jwks_timeout_ms), "5s", 100, 60000},
    {"JWT_JWKS_CA_FILE", V_STR, G(jwt_jwks_ca_file), NULL, 0, 0},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

enum listener_kind { KIND_MQTT, KIND_WS, KIND_HTTP, KIND_COAP };

#define PROTO(p) (1u << (p))
static const struct kind_info {
    unsigned allowed; /* PROTO() bits of the target protocols it can speak */
    enum target_protocol default_protocol;
} kinds[] = {
    [KIND_MQTT] = {PROTO(TARGET_MQTT) | PROTO(TARGET_MQTTS) | PROTO(TARGET_WS) | PROTO(TARGET_WSS), TARGET_MQTT},
    [KIND_WS] = {PROTO(TARGET_WS) | PROTO(TARGET_WSS) | PROTO(TARGET_MQTT) | PROTO(TARGET_MQTTS),
                 TARGET_WS},
    [KIND_HTTP] = {PROTO(TARGET_HTTP) | PROTO(TARGET_HTTPS) | PROTO(TARGET_MQTT) | PROTO(TARGET_MQTTS), TARGET_HTTP},
    /* coap: the relay (the Go mGate's); mqtt, mqtts: the bridge (front/coap.c says which is built). */
    [KIND_COAP] = {PROTO(TARGET_COAP) | PROTO(TARGET_MQTT) | PROTO(TARGET_MQTTS), TARGET_COAP},
};

static const struct listener_def {
    const char *prefix, *name;
    enum listener_kind kind;
    bool tls, mtls; /* needs a certificate; also verifies the client's */
} listener_defs[LISTENER_COUNT] = {
    [LISTENER_MQTT] = {"MGATE_MQTT_WITHOUT_TLS_", "mqtt_without_tls", KIND_MQTT, false, false},
    [LISTENER_MQTT_TLS] = {"MGATE_MQTT_WITH_TLS_", "mqtt_with_tls", KIND_MQTT, true, false},
    [LISTENER_MQTT_MTLS] = {"MGATE_MQTT_WITH_MTLS_", "mqtt_with_mtls", KIND_MQTT, true, true},
    [LISTENER_WS] = {"MGATE_MQTT_WS_WITHOUT_TLS_", "mqtt_ws_without_tls", KIND_WS, false, false},
    [LISTENER_WS_TLS] = {"MGATE_MQTT_WS_WITH_TLS_", "mqtt_ws_with_tls", KIND_WS, true, false},
    [LISTENER_WS_MTLS] = {"MGATE_MQTT_WS_WITH_MTLS_", "mqtt_ws_with_mtls", KIND_WS, true, true},
    [LISTENER_HTTP] = {"MGATE_HTTP_WITHOUT_TLS_", "http_without_tls", KIND_HTTP, false, false},
    [LISTENER_HTTP_TLS] = {"MGATE_HTTP_WITH_TLS_", "http_with_tls", KIND_HTTP, true, false},
    [LISTENER_HTTP_MTLS] = {"MGATE_HTTP_WITH_MTLS_", "http_with_mtls", KIND_HTTP, true, true},
    [LISTENER_COAP] = {"MGATE_COAP_WITHOUT_DTLS_", "coap_without_dtls", KIND_COAP, false, false},
    [LISTENER_COAP_DTLS] = {"MGATE_COAP_WITH_DTLS_", "coap_with_dtls", KIND_COAP, true, false},
};

static const struct key *find_key(const struct key *keys, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static const struct listener_def *listener_by_name(const char *name)
{
    for (int i = 0; i < LISTENER_COUNT; i++)
        if (strcasecmp(listener_defs[i].name, name) == 0)
            return &listener_defs[i];
    return NULL;
}

bool config_known_var(const char *name)
{
    if (strncmp(name, "MGATE_", 6) != 0)
        return false;
    if (strcmp(name, "MGATE_CONFIG") == 0 || find_key(global_keys, COUNT(global_keys), name + 6))
        return true;
    for (int i = 0; i < LISTENER_COUNT; i++) {
        size_t n = strlen(listener_defs[i].prefix);
        if (strncmp(name, listener_defs[i].prefix, n) == 0 &&
            find_key(listener_keys, COUNT(listener_keys), name + n))
            return true;
    }
    return false;
}

static bool is_string(enum value_type t)
{
    return t == V_STR || t == V_HANDLER || t == V_CIPHERS || t == V_ID_SEPARATORS || t == V_ID_PATTERN;
}

/* One value on its way into its field; why says what is wrong with it. */
struct value {
    const char *s;
    void *field;
    const struct key *key;
    unsigned allowed; /* target protocols this listener can speak */
    char why[160];
};

static bool parse_number(struct value *v)
{
    const struct key *k = v->key;
    uint32_t n;
    if (config_parse_uint(v->s, &n) == 0 && n >= k->min && n <= k->max) {
        if (k->type == V_PORT)
            *(uint16_t *)v->field = (uint16_t)n;
        else
            *(unsigned *)v->field = n;
        return true;
    }
    if (k->type == V_PORT)
        snprintf(v->why, sizeof(v->why), "is not a port (expected 1-65535)");
    else if (k->max == UINT32_MAX)
        snprintf(v->why, sizeof(v->why), "is not a whole number (expected %u or more)", k->min);
    else
        snprintf(v->why, sizeof(v->why), "is not a whole number (expected %u-%u)", k->min, k->max);
    return false;
}

/* "60s" or "100ms": a limit the way a user would write it. */
static void format_ms(uint32_t ms, char *buf, size_t size)
{
    if (ms % 1000 == 0)
        snprintf(buf, size, "%us", ms / 1000);
    else
        snprintf(buf, size, "%ums", ms);
}

static void duration_range_why(struct value *v)
{
    const struct key *k = v->key;
    char lo[16], hi[16];
    if (k->min == 1 && k->max == UINT32_MAX) {
        snprintf(v->why, sizeof(v->why), "must be more than 0");
        return;
    }
    format_ms(k->min, lo, sizeof(lo));
    format_ms(k->max, hi, sizeof(hi));
    snprintf(v->why, sizeof(v->why), "is out of range (expected %s to %s)", lo, hi);
}

static bool parse_scaled(struct value *v)
{
    const struct key *k = v->key;
    bool duration = k->type == V_DURATION;
    uint32_t n;
    if ((duration ? config_parse_duration_ms(v->s, &n) : config_parse_size(v->s, &n)) < 0)
        snprintf(v->why, sizeof(v->why), "%s",
                 duration ? "is not a duration (expected e.g. 500ms, 10s, 2m or 1h; a bare "
                            "number is seconds)"
                          : "is not a size (expected bytes, or a number with K, KB, KiB, M, MB, "
                            "MiB, G, GB or GiB)");
    else if (duration && (n < k->min || n > k->max))
        duration_range_why(v);
    else if (n < k->min)
        snprintf(v->why, sizeof(v->why), "is too small (expected at least %u bytes)", k->min);
    else if (n > k->max)
        snprintf(v->why, sizeof(v->why), "is too large (expected at most %u bytes)", k->max);
    else {
        *(uint32_t *)v->field = n;
        return true;
    }
    return false;
}

/* "mqtt, mqtts or ws": the protocols in mask, for a message. */
static void protocol_list(unsigned mask, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int p = TARGET_MQTT; p <= TARGET_COAP; p++) { /* the last one */
        if (!(mask & PROTO(p)))
            continue;
        mask &= ~PROTO(p);
        const char *sep = !len ? "" : mask ? ", " : " or ";
        int n = snprintf(buf + len, size - len, "%s%s", sep, target_protocol_name(p));
        if (n < 0 || (size_t)n >= size - len)
            return;
        len += (size_t)n;
    }
}

static bool parse_protocol(struct value *v)
{
    enum target_protocol p;
    char list[64];
    protocol_list(v->allowed, list, sizeof(list));
    if (config_parse_target_protocol(v->s, &p) < 0) {
        snprintf(v->why, sizeof(v->why), "is not a protocol (expected %s)", list);
        return false;
    }
    if (!(v->allowed & PROTO(p))) {
        snprintf(v->why, sizeof(v->why), "is not possible for this listener (expected %s)", list);
        return false;
    }
    *(enum target_protocol *)v->field = p;
    return true;
}

/* Cipher names are OpenSSL's to judge when the listener starts; here only
 * what can never be one, so a stray control character from a file is
 * reported with the variable's name. */
static bool printable(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

static bool parse_string(struct value *v)
{
    if (v->key->type == V_HANDLER && config_check_handler_list(v->s) < 0) {
        snprintf(v->why, sizeof(v->why),
                 "is not a handler list (expected names of a-z, 0-9 and _, separated by commas)");
        return false;
    }
    if (v->key->type == V_CIPHERS && !printable(v->s)) {
        snprintf(v->why, sizeof(v->why),
                 "is not a cipher list (expected printable ASCII: OpenSSL names separated by colons)");
        return false;
    }
    /* "" is unset: check_client_id says whether the policy needs it */
    const char *bad = !*v->s                            ? NULL
                      : v->key->type == V_ID_PATTERN    ? config_check_client_id_pattern(v->s)
                      : v->key->type == V_ID_SEPARATORS ? config_check_client_id_separators(v->s)
                                                        : NULL;
    if (bad) {
        snprintf(v->why, sizeof(v->why), "%s", bad);
        return false;
    }
    char **field = v->field;
    free(*field);
    if ((*field = strdup(v->s)))
        return true;
    snprintf(v->why, sizeof(v->why), "cannot be stored: out of memory");
    return false;
}

/* The small enumerations: a parser and what to say when it fails. */
static bool parse_enum(struct value *v)
{
    int rc;
    const char *expected;
    switch (v->key->type) {
    case V_LOG_LEVEL:
        rc = config_parse_log_level(v->s, v->field);
        expected = "a log level (expected debug, info, warn, error or off)";
        break;
    case V_REFUSAL:
        rc = config_parse_refusal(v->s, v->field);
        expected = "a refusal mode (expected reason or close)";
        break;
    case V_BOOL:
        rc = config_parse_bool(v->s, v->field);
        expected = "a boolean (expected true or false, yes or no, on or off, 1 or 0)";
        break;
    case V_TLS_VERSION:
        rc = config_parse_tls_version(v->s, v->field);
        expected = "a TLS version (expected 1.2 or 1.3)";
        break;
    case V_CLIENT_CERT:
        rc = config_parse_client_cert(v->s, v->field);
        expected = "a client certificate mode (expected required or optional)";
        break;
    case V_CLIENT_ID:
        rc = config_parse_client_id_mode(v->s, v->field);
        expected = "a client id policy (expected any, equal, prefix or pattern)";
        break;
    default: /* V_METHODS */
        rc = config_parse_cert_methods(v->s, v->field);
        expected = "a list of verification methods (expected ocsp, crl or both, comma-separated)";
        break;
    }
    if (rc < 0)
        snprintf(v->why, sizeof(v->why), "is not %s", expected);
    return rc == 0;
}

static bool value_parse(struct value *v)
{
    switch (v->key->type) {
    case V_STR:
    case V_HANDLER:
    case V_CIPHERS:
    case V_ID_SEPARATORS:
    case V_ID_PATTERN:
        return parse_string(v);
    case V_PORT:
    case V_UINT:
        return parse_number(v);
    case V_SIZE:
    case V_DURATION:
        return parse_scaled(v);
    case V_PROTOCOL:
        return parse_protocol(v);
    default:
        return parse_enum(v);
    }
}

struct loader {
    const struct config_source *src;
    struct config_vars dotenv, ini;
    char *err;
    size_t errlen;
};

/* Where a value came from: var is NULL for the environment or a default. */
struct found {
    const char *value;
    const struct config_vars *file;
    const struct config_var *var;
};

/* The strongest source that has the variable wins, even when its value is
 * empty: an empty value means "unset" and so hides weaker sources, which is
 * how MGATE_X_PORT= in the environment turns off a listener the INI file
 * enables (and how the Go mGate treats an empty variable). */
static struct found lookup(const struct loader *ld, const char *name)
{
    struct found f = {0};
    if (ld->src->env && (f.value = ld->src->env(ld->src->ctx, name)))
        return f;
    const struct config_vars *files[] = {&ld->dotenv, &ld->ini};
    for (int i = 0; i < 2; i++) {
        if ((f.var = config_vars_get(files[i], name))) {
            f.file = files[i];
            f.value = f.var->value;
            return f;
        }
    }
    return f;
}

/* "NAME: ", "file:line: NAME: " (.env) or "file:line: key (NAME): " (INI),
 * then the message; no prefix when name is NULL. */
static int fail(struct loader *ld, const struct found *f, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct loader *ld, const struct found *f, const char *name, const char *fmt, ...)
{
    int n = 0;
    if (!name)
        n = snprintf(ld->err, ld->errlen, "%s", ""); /* the message names its variables */
    else if (!f || !f->var)
        n = snprintf(ld->err, ld->errlen, "%s: ", name);
    else if (f->file == &ld->ini)
        n = snprintf(ld->err, ld->errlen, "%s:%u: %s (%s): ", f->file->file, f->var->line,
                     f->var->key, name);
    else
        n = snprintf(ld->err, ld->errlen, "%s:%u: %s: ", f->file->file, f->var->line, name);
    if (n >= 0 && (size_t)n < ld->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Look name up, fall back to the default, parse into base + k->off. */
static int load_key(struct loader *ld, const char *prefix, const struct key *k, void *base,
                    unsigned allowed_protocols)
{
    char name[128];
    snprintf(name, sizeof(name), "%s%s", prefix, k->name);
    struct found f = lookup(ld, name);
    struct value v = {.s = f.value && *f.value ? f.value : k->def,
                      .field = (char *)base + k->off,
                      .key = k,
                      .allowed = allowed_protocols};
    if (!v.s && !is_string(k->type))
        return 0; /* unset without a default: the field stays 0 */
    if (!v.s)
        v.s = "";
    if (value_parse(&v))
        return 0;
    if (!f.value || !*f.value) /* a default that does not parse: our bug */
        return fail(ld, NULL, name, "bad built-in default \"%s\": %s", v.s, v.why);
    return fail(ld, &f, name, "\"%s\" %s", v.s, v.why);
}

static int load_keys(struct loader *ld, const char *prefix, const struct key *keys, size_t n,
                     void *base, unsigned allowed_protocols)
{
    for (size_t i = 0; i < n; i++)
        if (load_key(ld, prefix, &keys[i], base, allowed_protocols) < 0)
            return -1;
    return 0;
}

/* "MGATE_X_CERT_FILE", plus " (cert_file in [x])" when an INI file is in
 * use, so the user finds the setting in whichever place they keep it. */
static const char *label(const struct loader *ld, const struct listener_def *d, const char *key,
                         char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s%s", d->prefix, key);
    if (!ld->ini.file || n < 0 || (size_t)n >= size)
        return buf;
    char lower[64];
    size_t i = 0;
    for (; key[i] && i + 1 < sizeof(lower); i++)
        lower[i] = (char)tolower((unsigned char)key[i]);
    lower[i] = '\0';
    snprintf(buf + n, size - (size_t)n, " (%s in [%s])", lower, d->name);
    return buf;
}

/* The field of a listener key, by name; the tables above name only keys
 * that exist. */
static void *listener_field(const struct listener_config *lc, const char *key, enum value_type *type)
{
    const struct key *k = find_key(listener_keys, COUNT(listener_keys), key);
    if (type)
        *type = k->type;
    return (char *)lc + k->off;
}

/* Whether key differs from "unset": every default it checks is 0, false or "". */
static bool key_set(const struct listener_config *lc, const char *key)
{
    enum value_type type;
    const void *p = listener_field(lc, key, &type);
    if (type == V_BOOL)
        return *(const bool *)p;
    if (is_string(type))
        return **(char *const *)p;
    return *(const unsigned *)p; /* a bit set or an enum of unsigned size */
}
_Static_assert(sizeof(enum client_cert_mode) == sizeof(unsigned), "key_set reads it as unsigned");

static int check_pairs(struct loader *ld, const struct listener_config *lc,
                       const struct listener_def *d)
{
    char a[160], b[160];
    for (size_t i = 0; i < COUNT(pairs); i++) {
        bool first = key_set(lc, pairs[i][0]);
        if (first == key_set(lc, pairs[i][1]))
            continue;
        return fail(ld, NULL, NULL,
                    "%s is required when %s is set (a certificate and its key go together)",
                    label(ld, d, pairs[i][first], a, sizeof(a)),
                    label(ld, d, pairs[i][!first], b, sizeof(b)));
    }
    return 0;
}

static int check_client_ca(struct loader *ld, const struct listener_config *lc,
                           const struct listener_def *d)
{
    char a[160], b[160];
    if (*lc->client_ca_file)
        return 0;
    for (size_t i = 0; i < COUNT(need_client_ca); i++)
        if (key_set(lc, need_client_ca[i][0]))
            return fail(ld, NULL, NULL,
                        "%s requires %s: %s, and clients are asked for one only when "
                        "CLIENT_CA_FILE is set",
                        label(ld, d, need_client_ca[i][0], a, sizeof(a)),
                        label(ld, d, "CLIENT_CA_FILE", b, sizeof(b)), need_client_ca[i][1]);
    return 0;
}

/* A CLIENT_ID_* setting the policy would not use is an error: someone who
 * sets a pattern and forgets the policy believes in a protection that is
 * not there. */
static int check_client_id_keys(struct loader *ld, const struct listener_config *lc,
                                const struct listener_def *d)
{
    static const struct {
        const char *key;
        enum client_id_mode user; /* the one policy that reads it */
    } keys[] = {
        {"CLIENT_ID_PATTERN", CLIENT_ID_PATTERN},
        {"CLIENT_ID_SEPARATORS", CLIENT_ID_PREFIX},
    };
    char a[160], b[160];
    enum client_id_mode m = lc->client_id.mode;
    for (size_t i = 0; i < COUNT(keys); i++)
        if (m != keys[i].user && key_set(lc, keys[i].key))
            return fail(ld, NULL, NULL, "%s is set but %s is \"%s\", which does not use it (expected %s)",
                        label(ld, d, keys[i].key, a, sizeof(a)), label(ld, d, "CLIENT_ID_POLICY", b, sizeof(b)),
                        client_id_mode_name(m), client_id_mode_name(keys[i].user));
    if (m == CLIENT_ID_PATTERN && !*lc->client_id.pattern)
        return fail(ld, NULL, NULL, "%s is required when %s is \"pattern\"",
                    label(ld, d, "CLIENT_ID_PATTERN", a, sizeof(a)), label(ld, d, "CLIENT_ID_POLICY", b, sizeof(b)));
    return 0;
}

/* CLIENT_ID_POLICY: where it can act, and what it needs there. */
static int check_client_id(struct loader *ld, struct listener_config *lc, const struct listener_def *d)
{
    char a[160], b[160];
    if (check_client_id_keys(ld, lc, d) < 0)
        return -1;
    enum client_id_mode m = lc->client_id.mode;
    /* Client ids exist where a client names one: MQTT, and the CoAP and HTTP
     * front ends that speak to a broker or take `clientid` from the query. */
    bool ids = d->kind == KIND_MQTT || d->kind == KIND_WS || d->kind == KIND_COAP ||
               (d->kind == KIND_HTTP && (lc->target_protocol == TARGET_MQTT || lc->target_protocol == TARGET_MQTTS));
    if (m != CLIENT_ID_ANY && !ids)
        return fail(ld, NULL, NULL, "%s: \"%s\" is not possible for this listener (it has no client ids; "
                                    "expected any)",
                    label(ld, d, "CLIENT_ID_POLICY", a, sizeof(a)), client_id_mode_name(m));
    if (m == CLIENT_ID_PATTERN && client_id_pattern_uses_cn(lc->client_id.pattern) && !*lc->client_ca_file)
        return fail(ld, NULL, NULL,
                    "%s uses %%cn and requires %s: the CN comes from the client certificate, and clients are "
                    "asked for one only when CLIENT_CA_FILE is set",
                    label(ld, d, "CLIENT_ID_PATTERN", a, sizeof(a)), label(ld, d, "CLIENT_CA_FILE", b, sizeof(b)));
    if (m == CLIENT_ID_PREFIX && !*lc->client_id.separators) {
        free(lc->client_id.separators);
        if (!(lc->client_id.separators = strdup("-")))
            return fail(ld, NULL, "config", "out of memory");
    }
    return 0;
}

/* MOUNT_POINT: where topics are MQTT's (MQTT and WebSocket listeners, the
 * HTTP and CoAP bridges), and a template that cannot mix tenants. */
static int check_mount_point(struct loader *ld, const struct listener_config *lc, const struct listener_def *d)
{
    char a[160];
    if (!*lc->mount_point)
        return 0;
    bool bridge = lc->target_protocol == TARGET_MQTT || lc->target_protocol == TARGET_MQTTS;
    if ((d->kind == KIND_HTTP || d->kind == KIND_COAP) && !bridge)
        return fail(ld, NULL, NULL, "%s: this listener relays to a %s server, it has no MQTT topics "
                                    "(a mount point needs TARGET_PROTOCOL mqtt or mqtts)",
                    label(ld, d, "MOUNT_POINT", a, sizeof(a)), d->kind == KIND_HTTP ? "HTTP" : "CoAP");
    const char *why = mount_template_error(lc->mount_point);
    if (why)
        return fail(ld, NULL, NULL, "%s \"%s\" %s", label(ld, d, "MOUNT_POINT", a, sizeof(a)), lc->mount_point,
                    why);
    return 0;
}

/* Settings that only make sense together. */
static int check_listener(struct loader *ld, struct listener_config *lc, const struct listener_def *d)
{
    char a[160], b[160];
    if (check_pairs(ld, lc, d) < 0 || check_client_ca(ld, lc, d) < 0 || check_client_id(ld, lc, d) < 0 ||
        check_mount_point(ld, lc, d) < 0)
        return -1;
    bool dtls = d->tls && d->kind == KIND_COAP;
    if (*lc->psk_file && !dtls)
        return fail(ld, NULL, NULL, "%s: pre-shared keys are for the CoAP over DTLS listener only",
                    label(ld, d, "PSK_FILE", a, sizeof(a)));
    if (!lc->enabled)
        return 0;
    const char *need = !*lc->target_host ? "TARGET_HOST" : !lc->target_port ? "TARGET_PORT" : NULL;
    if (need)
        return fail(ld, NULL, NULL, "%s is required: the listener is on because its PORT is set",
                    label(ld, d, need, a, sizeof(a)));
    if (d->tls && !*lc->cert_file && !(dtls && *lc->psk_file))
        return fail(ld, NULL, NULL, "%s and %s are required: this listener speaks %s",
                    label(ld, d, "CERT_FILE", a, sizeof(a)), label(ld, d, "KEY_FILE", b, sizeof(b)),
                    dtls ? "DTLS (or set PSK_FILE)" : "TLS");
    if (d->mtls && !*lc->client_ca_file)
        return fail(ld, NULL, NULL,
                    "%s is required: this listener verifies client certificates (mTLS)",
                    label(ld, d, "CLIENT_CA_FILE", a, sizeof(a)));
    return 0;
}

/* Filled in here rather than by each user of the field, so that nobody
 * forgets the fallback. */
static int inherit_defaults(struct loader *ld, struct listener_config *lc)
{
    for (size_t i = 0; i < COUNT(inherited); i++) {
        char **to = listener_field(lc, inherited[i][0], NULL);
        if (**to)
            continue;
        char *copy = strdup(*(char **)listener_field(lc, inherited[i][1], NULL));
        if (!copy)
            return fail(ld, NULL, "config", "out of memory");
        free(*to);
        *to = copy;
    }
    return 0;
}

static int load_listener(struct loader *ld, struct listener_config *lc)
{
    const struct listener_def *d = &listener_defs[lc->id];
    const struct kind_info *ki = &kinds[d->kind];
    if (load_keys(ld, d->prefix, listener_keys, COUNT(listener_keys), lc, ki->allowed) < 0)
        return -1;
    lc->enabled = lc->port != 0;
    if (lc->target_protocol == TARGET_NONE)
        lc->target_protocol = ki->default_protocol;
    if (inherit_defaults(ld, lc) < 0)
        return -1;
    return check_listener(ld, lc, d);
}

/* Typo protection: a key the INI file names but nothing reads is an error,
 * the user clearly meant to set something. */
static int check_ini_keys(struct loader *ld)
{
    for (size_t i = 0; i < ld->ini.n; i++) {
        const struct config_var *v = &ld->ini.v[i];
        struct found f = {v->value, &ld->ini, v};
        bool global = !*v->section || strcasecmp(v->section, "mgate") == 0;
        const struct listener_def *d = global ? NULL : listener_by_name(v->section);
        if (!global && !d) {
            snprintf(ld->err, ld->errlen,
                     "%s:%u: unknown section [%s] (expected [mgate] or a listener such as "
                     "[mqtt_without_tls])",
                     ld->ini.file, v->line, v->section);
            return -1;
        }
        if (global ? !find_key(global_keys, COUNT(global_keys), v->name + strlen("MGATE_"))
                   : !find_key(listener_keys, COUNT(listener_keys), v->name + strlen(d->prefix)))
            return fail(ld, &f, v->name, "unknown key in [%s]", global ? "mgate" : d->name);
    }
    return 0;
}

/* The CPUs this process may run on (a container's cpuset, taskset), 1-256. */
static unsigned cpus_available(void)
{
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
    return n < 1 ? 1 : n > 256 ? 256 : (unsigned)n;
}

/* Whether two HOST values name one address: the same text, or both every
 * address (empty or 0.0.0.0). */
static bool same_host(const char *a, const char *b)
{
    bool any_a = !*a || !strcmp(a, "0.0.0.0"), any_b = !*b || !strcmp(b, "0.0.0.0");
    return (any_a && any_b) || !strcmp(a, b);
}

/* Listeners bind with SO_REUSEPORT (one socket per worker), so two of them
 * on one address would both start and the kernel would share their clients
 * between them at random: refuse it.  A CoAP listener is UDP and may share a
 * port number with a TCP one. */
static int check_addresses(struct loader *ld, const struct mgate_config *cfg)
{
    for (int i = 0; i < LISTENER_COUNT; i++) {
        const struct listener_config *a = &cfg->listeners[i];
        if (!a->enabled)
            continue;
        bool udp = listener_defs[i].kind == KIND_COAP;
        for (int j = i + 1; j < LISTENER_COUNT; j++) {
            const struct listener_config *b = &cfg->listeners[j];
            if (b->enabled && b->port == a->port && (listener_defs[j].kind == KIND_COAP) == udp &&
                same_host(a->host, b->host))
                return fail(ld, NULL, NULL, "%sPORT and %sPORT: both %s:%u; each listener needs an address of its own",
                            a->prefix, b->prefix, *a->host ? a->host : "*", a->port);
        }
        if (!udp && cfg->admin_port == a->port && same_host(a->host, cfg->admin_host))
            return fail(ld, NULL, NULL, "MGATE_ADMIN_PORT and %sPORT: both %s:%u; each listener needs an address of its own",
                        a->prefix, *a->host ? a->host : "*", a->port);
    }
    return 0;
}

static int load_all(struct loader *ld, struct mgate_config *cfg)
{
    const struct config_source *src = ld->src;
    char *err = ld->err;
    size_t len = ld->errlen;
    if (src->dotenv_path && config_read_dotenv(src->dotenv_path, &ld->dotenv, err, len) < 0)
        return -1;
    if (src->ini_path && config_read_ini(src->ini_path, &ld->ini, err, len) < 0)
        return -1;
    if (check_ini_keys(ld) < 0)
        return -1;
    if (!(cfg->config_file = strdup(src->ini_path ? src->ini_path : "")))
        return fail(ld, NULL, "config", "out of memory");
    if (load_keys(ld, "MGATE_", global_keys, COUNT(global_keys), cfg, 0) < 0)
        return -1;
    if (!cfg->workers)
        cfg->workers = cpus_available();
    for (int i = 0; i < LISTENER_COUNT; i++)
        if (load_listener(ld, &cfg->listeners[i]) < 0)
            return -1;
    return check_addresses(ld, cfg);
}

static void config_init(struct mgate_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (int i = 0; i < LISTENER_COUNT; i++) {
        cfg->listeners[i].id = (enum listener_id)i;
        cfg->listeners[i].prefix = listener_defs[i].prefix;
        cfg->listeners[i].name = listener_defs[i].name;
    }
}

int config_load(struct mgate_config *cfg, const struct config_source *src, char *err,
                size_t errlen)
{
    struct loader ld = {.src = src, .err = err, .errlen = errlen};
    if (errlen)
        err[0] = '\0';
    config_init(cfg);
    int rc = load_all(&ld, cfg);
    config_vars_free(&ld.dotenv);
    config_vars_free(&ld.ini);
    /* Messages quote values and paths verbatim; keep them one line. */
    for (size_t i = 0; rc < 0 && i < errlen && err[i]; i++)
        if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
            err[i] = '?';
    if (rc < 0) {
        config_free(cfg);
        config_init(cfg); /* zeroed with the static names: freeable again */
    }
    return rc;
}

/* The tables know which fields are strings, so freeing follows them. */
static void free_strings(const struct key *keys, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++) {
        if (!is_string(keys[i].type))
            continue;
        char **p = (char **)((char *)base + keys[i].off);
        free(*p);
        *p = NULL;
    }
}

void config_free(struct mgate_config *cfg)
{
    for (int i = 0; i < LISTENER_COUNT; i++)
        free_strings(listener_keys, COUNT(listener_keys), &cfg->listeners[i]);
    free_strings(global_keys, COUNT(global_keys), cfg);
    free(cfg->config_file);
    cfg->config_file = NULL;
}
