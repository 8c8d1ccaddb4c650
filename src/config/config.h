/*
 * Configuration: MGATE_* environment variables (the Go mGate's names), an
 * optional .env file and an optional INI file.  Precedence, strongest first:
 * the process environment, the .env file (it never overrides a variable that
 * is already set), the INI file, built-in defaults.
 *
 * INI layout: global keys in section [mgate] (or before any section), one
 * section per listener named after its prefix without "MGATE_" and the
 * trailing "_", lower case: [mqtt_without_tls], [mqtt_with_tls], ...  Keys are
 * the variable suffixes in lower case: port, target_host, max_packet_size...
 */
#ifndef MGATE_CONFIG_H
#define MGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mgate.h"

enum listener_id {
    LISTENER_MQTT,          /* MGATE_MQTT_WITHOUT_TLS_ */
    LISTENER_MQTT_TLS,      /* MGATE_MQTT_WITH_TLS_ */
    LISTENER_MQTT_MTLS,     /* MGATE_MQTT_WITH_MTLS_ */
    LISTENER_WS,            /* MGATE_MQTT_WS_WITHOUT_TLS_ */
    LISTENER_WS_TLS,        /* MGATE_MQTT_WS_WITH_TLS_ */
    LISTENER_WS_MTLS,       /* MGATE_MQTT_WS_WITH_MTLS_ */
    LISTENER_HTTP,          /* MGATE_HTTP_WITHOUT_TLS_ */
    LISTENER_HTTP_TLS,      /* MGATE_HTTP_WITH_TLS_ */
    LISTENER_HTTP_MTLS,     /* MGATE_HTTP_WITH_MTLS_ */
    LISTENER_COAP,          /* MGATE_COAP_WITHOUT_DTLS_ */
    LISTENER_COAP_DTLS,     /* MGATE_COAP_WITH_DTLS_ */
    LISTENER_COUNT
};

enum target_protocol {
    TARGET_NONE,
    TARGET_MQTT,
    TARGET_MQTTS,
    TARGET_WS,
    TARGET_WSS,
    TARGET_HTTP,
    TARGET_HTTPS,
    TARGET_COAP, /* a CoAP server over UDP (the CoAP listeners' relay) */
};

enum refusal_mode {
    REFUSAL_REASON, /* answer with the protocol's reason code (default) */
    REFUSAL_CLOSE,  /* Go mGate behaviour: close the connection */
};

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

/* What a listener with CLIENT_CA_FILE does with a client that sends no certificate. */
enum client_cert_mode {
    CLIENT_CERT_REQUIRED = 0, /* refuse it (default) */
    CLIENT_CERT_OPTIONAL,     /* let it in; a certificate it does send must still verify */
};

/* CLIENT_ID_POLICY: which client ids a client may use, given the identity
 * it proved (the username as finally given to the broker, the certificate
 * CN).  mgate's own; the Go mGate has no such key. */
enum client_id_mode {
    CLIENT_ID_ANY = 0, /* any id (default): anyone may take anyone's id */
    CLIENT_ID_EQUAL,   /* the id is the username */
    CLIENT_ID_PREFIX,  /* the id's part before its first separator is the username */
    CLIENT_ID_PATTERN, /* the id matches CLIENT_ID_PATTERN (%u, %cn, a final *) */
};

struct client_id_policy {
    enum client_id_mode mode; /* CLIENT_ID_POLICY */
    char *separators;         /* CLIENT_ID_SEPARATORS; config_load makes it "-" for prefix */
    char *pattern;            /* CLIENT_ID_PATTERN; required by (and only with) pattern */
};

/* Values of tls_min_version: OpenSSL's TLS1_2_VERSION and TLS1_3_VERSION,
 * written out so that config needs no OpenSSL header. */
#define CONFIG_TLS1_2 0x0303u
#define CONFIG_TLS1_3 0x0304u

/* Bits of cert_verification_methods. */
#define CERT_VERIFY_OCSP 1u
#define CERT_VERIFY_CRL 2u

/* All strings are owned (malloc'd) and never NULL: unset means "". */
struct listener_config {
    enum listener_id id;
    const char *prefix; /* "MGATE_MQTT_WITHOUT_TLS_" (static) */
    const char *name;   /* "mqtt_without_tls" (static): log and INI section name */
    bool enabled;       /* PORT was given */

    /* Go mGate keys */
    char *host;
    uint16_t port;
    char *path_prefix;
    char *target_host;
    uint16_t target_port;
    enum target_protocol target_protocol;
    char *target_path;
    char *cert_file, *key_file, *server_ca_file, *client_ca_file;
    unsigned cert_verification_methods;
    unsigned ocsp_depth;
    char *ocsp_responder_url;
    unsigned crl_depth;
    char *crl_distribution_points;
    char *crl_distribution_points_issuer_cert_file;
    char *offline_crl_file;
    char *offline_crl_issuer_cert_file;

    /* mgate's own keys (same prefix) */
    uint32_t max_packet_size;       /* MAX_PACKET_SIZE, bytes, default 1 MiB */
    uint32_t connect_timeout_ms;    /* CONNECT_TIMEOUT, default 10 s */
    uint32_t output_high_water;     /* OUTPUT_HIGH_WATER, bytes, default 64 KiB */
    enum refusal_mode refusal;      /* REFUSAL = reason | close */
    struct client_id_policy client_id; /* CLIENT_ID_*: MQTT listeners only */
    char *mount_point;              /* MOUNT_POINT template ("tenants/%u/"); "": none (session/mount.h) */

    /* TLS with clients (ours) */
    unsigned tls_min_version;          /* TLS_MIN_VERSION 1.2 (default) | 1.3: CONFIG_TLS1_* */
    char *tls_ciphers;                 /* TLS_CIPHERS, TLS 1.2 cipher list; "": OpenSSL's */
    char *tls_ciphersuites;            /* TLS_CIPHERSUITES, TLS 1.3; "": OpenSSL's */
    bool tls_session_tickets;          /* TLS_SESSION_TICKETS, default true */
    enum client_cert_mode client_cert; /* CLIENT_CERT; optional needs CLIENT_CA_FILE */
    bool use_cn_as_username;           /* USE_CN_AS_USERNAME; needs CLIENT_CA_FILE */
    bool revocation_soft_fail;         /* REVOCATION_SOFT_FAIL: OCSP/CRL unreachable -> allow */
    uint32_t revocation_timeout_ms;    /* REVOCATION_TIMEOUT, 100 ms - 60 s, default 5 s */
    char *psk_file;                    /* PSK_FILE: DTLS pre-shared keys, "identity:hexkey" lines;
                                        * the CoAP DTLS listener only (read by net/tls_dtls.c) */

    /* TLS with the broker, for TARGET_PROTOCOL mqtts (ours).  config_load
     * fills in the defaults, so these are final: an empty target_ca_file
     * means the system's trust store. */
    char *target_ca_file;              /* TARGET_CA_FILE, default SERVER_CA_FILE */
    char *target_cert_file, *target_key_file; /* TARGET_CERT_FILE, TARGET_KEY_FILE: a pair */
    char *target_server_name;          /* TARGET_SERVER_NAME (SNI, name to verify), default
                                        * TARGET_HOST, so it may be an IP address */
    bool target_tls_verify;            /* TARGET_TLS_VERIFY, default true */

    /* WebSocket (ours) */
    char *allowed_origins; /* ALLOWED_ORIGINS: comma-separated Origin values; "": any */
    uint32_t ws_ping_interval_ms; /* WS_PING_INTERVAL: ping a silent peer this often; 0: never */
    uint32_t ws_ping_timeout_ms;  /* WS_PING_TIMEOUT: close when no pong came this long after */

    /* PROXY protocol (ours) */
    bool proxy_protocol;        /* PROXY_PROTOCOL: every client comes with a v1 or v2 header */
    bool target_proxy_protocol; /* TARGET_PROXY_PROTOCOL: send the broker a v2 header */

    /* limits (ours); 0: none */
    unsigned max_connections;          /* MAX_CONNECTIONS: client connections at once */
    unsigned connection_rate_limit;    /* CONNECTION_RATE_LIMIT: new connections/s per source address */
    unsigned publish_rate_limit;       /* PUBLISH_RATE_LIMIT: PUBLISH/s per client */
    uint32_t publish_bandwidth_limit;  /* PUBLISH_BANDWIDTH_LIMIT: PUBLISH bytes/s per client */

    /* HTTP listeners (ours) */
    char *bypass_paths;          /* BYPASS_PATHS: comma-separated POSIX extended regular
                                  * expressions; a path below PATH_PREFIX that matches one is
                                  * forwarded without the handler (checked at start) */
    uint32_t max_header_size;    /* MAX_HEADER_SIZE: request line and headers, default 8 KiB */
    uint32_t max_body_size;      /* MAX_BODY_SIZE: request body, default 1 MiB */
    uint32_t request_timeout_ms; /* REQUEST_TIMEOUT: a request's head and body, default 10 s */
    uint32_t idle_timeout_ms;    /* IDLE_TIMEOUT: keep-alive wait for the next request, 60 s */
    uint32_t ack_timeout_ms;     /* ACK_TIMEOUT: CoAP, the first wait for a CON's ACK, 2 s (RFC 7252 4.8) */
    uint32_t target_timeout_ms;  /* TARGET_TIMEOUT: the target's answer, and each pause in it, 30 s */
};

struct mgate_config {
    struct listener_config listeners[LISTENER_COUNT];
    enum log_level log_level;        /* MGATE_LOG_LEVEL: debug|info|warn|error|off, default info */
    char *handler;                   /* MGATE_HANDLER, default "log" */
    uint32_t shutdown_grace_ms;      /* MGATE_SHUTDOWN_GRACE, default 5 s */
    unsigned workers;                /* MGATE_WORKERS, default: the CPUs this process may use */
    char *admin_host;                /* MGATE_ADMIN_HOST, default 127.0.0.1 */
    unsigned admin_port;             /* MGATE_ADMIN_PORT: /metrics, /healthz, /readyz; 0 = none */
    char *config_file;               /* the INI file that was read, "" if none */

    /* the `acl` handler (ours) */
    char *acl_password_file;         /* MGATE_ACL_PASSWORD_FILE: mosquitto password_file */
    char *acl_file;                  /* MGATE_ACL_FILE: mosquitto acl_file */
    bool acl_allow_anonymous;        /* MGATE_ACL_ALLOW_ANONYMOUS, default false */

    /* the `rewrite` handler (ours) */
    char *rewrite_file;              /* MGATE_REWRITE_FILE: topic rewrite rules (docs/HANDLERS.md) */

    /* the `http` handler (ours): an auth webhook */
    char *webhook_url;               /* MGATE_WEBHOOK_URL: http:// or https:// */
    uint32_t webhook_timeout_ms;     /* MGATE_WEBHOOK_TIMEOUT, default 2 s */
    unsigned webhook_concurrency;    /* MGATE_WEBHOOK_CONCURRENCY: requests in flight per worker, default 128 */
    uint32_t webhook_cache_ttl_ms;   /* MGATE_WEBHOOK_CACHE_TTL: 0 (default) = no cache */
    char *webhook_on_error;          /* MGATE_WEBHOOK_ON_ERROR: deny (default), allow or ignore */

    /* the `jwt` handler (ours): tokens checked locally (docs/HANDLERS.md) */
    char *jwt_jwks_url;              /* MGATE_JWT_JWKS_URL: http:// or https://, fetched on the loops */
    char *jwt_jwks_file;             /* MGATE_JWT_JWKS_FILE */
    char *jwt_public_key_file;       /* MGATE_JWT_PUBLIC_KEY_FILE: PEM */
    char *jwt_secret_file;           /* MGATE_JWT_SECRET_FILE: HS* secret, never logged */
    char *jwt_algorithms;            /* MGATE_JWT_ALGORITHMS: "" = every one the keys allow */
    char *jwt_issuer, *jwt_audience; /* MGATE_JWT_ISSUER, MGATE_JWT_AUDIENCE: "" = not checked */
    uint32_t jwt_leeway_ms;          /* MGATE_JWT_LEEWAY, default 30 s, at most 1 h */
    bool jwt_require_exp;            /* MGATE_JWT_REQUIRE_EXP, default true */
    char *jwt_token_from;            /* MGATE_JWT_TOKEN_FROM: password (default) | username */
    char *jwt_username_claim;        /* MGATE_JWT_USERNAME_CLAIM, default "sub"; "": no identity check */
    char *jwt_username;              /* MGATE_JWT_USERNAME: match (default) | set */
    char *jwt_client_id_claim;       /* MGATE_JWT_CLIENT_ID_CLAIM: "" (default) = not checked */
    char *jwt_acl_claim;             /* MGATE_JWT_ACL_CLAIM, default "acl"; "": claims ignored */
    bool jwt_expire_sessions;        /* MGATE_JWT_EXPIRE_SESSIONS, default true */
    bool jwt_forward_token;          /* MGATE_JWT_FORWARD_TOKEN, default true: the broker gets the password as sent */
    uint32_t jwt_jwks_refresh_ms;    /* MGATE_JWT_JWKS_REFRESH, default 5 min */
    uint32_t jwt_jwks_min_interval_ms; /* MGATE_JWT_JWKS_MIN_INTERVAL, default 10 s, process-wide */
    uint32_t jwt_jwks_timeout_ms;    /* MGATE_JWT_JWKS_TIMEOUT, default 5 s */
    char *jwt_jwks_ca_file;          /* MGATE_JWT_JWKS_CA_FILE: https CA bundle; "": the system's */
};

/*
 * Where values come from.  `env` looks a variable up (getenv in the binary, a
 * table in tests); ini_path and dotenv_path may be NULL.
 */
struct config_source {
    const char *(*env)(void *ctx, const char *name);
    void *ctx;
    const char *ini_path;    /* -c FILE or MGATE_CONFIG; missing file is an error */
    const char *dotenv_path; /* ".env"; a missing file is silently skipped */
};

/*
 * Fill cfg from src.  Returns 0, or -1 with a one-line message in err that
 * names the variable (or file and line) and what is wrong, e.g.
 * "MGATE_MQTT_WITHOUT_TLS_PORT: \"70000\" is not a port (1-65535)".
 */
int config_load(struct mgate_config *cfg, const struct config_source *src, char *err,
                size_t errlen);
void config_free(struct mgate_config *cfg);

/* Parsers shared with tests: return 0 or -1. */
int config_parse_duration_ms(const char *s, uint32_t *out); /* "10s", "500ms", "2m", "3" (=s) */
int config_parse_size(const char *s, uint32_t *out);        /* "1048576", "64KiB", "1MiB", "1M" */

const char *log_level_name(enum log_level l);
const char *target_protocol_name(enum target_protocol p);

/* Names an unknown MGATE_* variable would be checked against: true for every
 * variable config_load reads, and for MGATE_CONFIG (the INI path). */
bool config_known_var(const char *name);

/*
 * Typo help: the MGATE_* names in envp (e.g. environ) and in the .env file
 * (may be NULL) that no setting reads, comma-separated into out (truncated
 * to fit).  Returns how many there are.  Nothing else can warn about these:
 * an unknown variable is not an error, it may belong to something else.
 */
size_t config_unknown_vars(char *const *envp, const char *dotenv_path, char *out, size_t outlen);

/* More parsers (0 or -1).  Numbers are digits only: no sign, no spaces. */
int config_parse_uint(const char *s, uint32_t *out); /* at most UINT32_MAX */
int config_parse_log_level(const char *s, enum log_level *out); /* case-insensitive */
int config_parse_target_protocol(const char *s, enum target_protocol *out); /* never NONE */
int config_parse_refusal(const char *s, enum refusal_mode *out);
int config_parse_cert_methods(const char *s, unsigned *out); /* "ocsp, CRL" -> CERT_VERIFY_* */
int config_parse_bool(const char *s, bool *out); /* true/false, yes/no, on/off, 1/0; any case */
int config_parse_tls_version(const char *s, unsigned *out); /* "1.2", "1.3" -> CONFIG_TLS1_* */
int config_parse_client_cert(const char *s, enum client_cert_mode *out); /* required|optional */
int config_check_handler_list(const char *s); /* "log" or "a,b": names of [a-z0-9_] */
int config_parse_client_id_mode(const char *s, enum client_id_mode *out); /* any|equal|prefix|pattern */
const char *client_id_mode_name(enum client_id_mode m);

/*
 * CLIENT_ID_POLICY's grammar (client_id.c), shared by config_load, which
 * checks the settings, and the session, which applies them at CONNECT.
 *
 * A pattern is literal text with placeholders %u (the username) and %cn
 * (the certificate CN), %% for a literal '%', and at most one '*', as its
 * last character, standing for any rest of the id.  The shape keeps every
 * id owned by one identity: at least one placeholder; no two placeholders
 * side by side; no '*' right after a placeholder (with "%u*", user bob
 * could take user bobby's ids).  At CONNECT an identity that contains the
 * character following its placeholder is refused, for the same reason
 * (with "%u-*", bob-x could otherwise share ids with bob).
 *
 * config_check_* return NULL when s is good, else why it is not (for the
 * message that names the variable).
 */
const char *config_check_client_id_pattern(const char *s);
const char *config_check_client_id_separators(const char *s);
bool client_id_pattern_uses_cn(const char *pattern);
/* Whether the policy lets a client that proved username and cn ("" when it
 * has no certificate) use client_id.  On false, *why (if why is not NULL)
 * says why, for the log. */
bool client_id_check(const struct client_id_policy *p, mgate_bytes client_id, mgate_bytes username,
                     const char *cn, const char **why);

/*
 * Variables read from a file (.env or INI), kept apart from the environment
 * so that precedence is decided at lookup and nothing calls setenv.  Each
 * entry remembers where it was written, for error messages.
 */
struct config_var {
    char *name;    /* MGATE_MQTT_WITHOUT_TLS_PORT */
    char *value;
    char *section; /* INI: section as written ("" before any); .env: "" */
    char *key;     /* INI: key as written ("port"); .env: the name */
    unsigned line;
};

struct config_vars {
    char *file; /* the path it was read from */
    struct config_var *v;
    size_t n, cap;
};

/* Add or replace (the later line wins, as in both file formats). 0 or -1 (ENOMEM). */
int config_vars_set(struct config_vars *vs, const struct config_var *var);
const struct config_var *config_vars_get(const struct config_vars *vs, const char *name);
void config_vars_free(struct config_vars *vs);

/* Read path into vs.  A missing .env is not an error (vs stays empty); a
 * missing INI file is.  Returns 0, or -1 with "file:line: ..." in err. */
int config_read_dotenv(const char *path, struct config_vars *vs, char *err, size_t errlen);
int config_read_ini(const char *path, struct config_vars *vs, char *err, size_t errlen);

#endif
