/*
 * Single values: integers, durations, sizes, enum names.  Strict on purpose:
 * a stray sign, space or unit is far more likely a mistake than a wish, and
 * the caller reports the value back verbatim.
 */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"

struct unit {
    const char *name;
    uint32_t mult;
};

/* Leading digits of s; false when there are none or they pass the limit. */
static bool digits(const char **s, uint64_t limit, uint64_t *out)
{
    const char *p = *s;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > limit)
            return false;
    }
    *out = v;
    if (p == *s)
        return false;
    *s = p;
    return true;
}

int config_parse_uint(const char *s, uint32_t *out)
{
    uint64_t v;
    if (!s || !digits(&s, UINT32_MAX, &v) || *s)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* A number followed by one of units (case-insensitive). */
static int scaled(const char *s, const struct unit *units, uint32_t *out)
{
    uint64_t v;
    if (!s || !digits(&s, UINT32_MAX, &v))
        return -1;
    for (const struct unit *u = units; u->name; u++) {
        if (strcasecmp(s, u->name) != 0)
            continue;
        if (v * u->mult > UINT32_MAX)
            return -1;
        *out = (uint32_t)(v * u->mult);
        return 0;
    }
    return -1;
}

int config_parse_duration_ms(const char *s, uint32_t *out)
{
    /* A bare number is seconds, as the Go mGate's timeouts are. */
    static const struct unit units[] = {{"", 1000},    {"ms", 1},       {"s", 1000},
                                        {"m", 60000}, {"h", 3600000}, {NULL, 0}};
    return scaled(s, units, out);
}

int config_parse_size(const char *s, uint32_t *out)
{
    /* KB means 1024 here: nobody sizes a buffer in powers of ten. */
    static const struct unit units[] = {
        {"", 1},           {"b", 1},          {"k", 1u << 10},   {"kb", 1u << 10},
        {"kib", 1u << 10}, {"m", 1u << 20},   {"mb", 1u << 20},  {"mib", 1u << 20},
        {"g", 1u << 30},   {"gb", 1u << 30},  {"gib", 1u << 30}, {NULL, 0}};
    return scaled(s, units, out);
}

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};
static const char *const protocol_names[] = {"none", "mqtt", "mqtts", "ws", "wss", "http", "https", "coap"};
static const char *const refusal_names[] = {"reason", "close"};
static const char *const client_cert_names[] = {"required", "optional"};
static const char *const client_id_names[] = {"any", "equal", "prefix", "pattern"};
/* the first half means false, the second true */
static const char *const bool_names[] = {"false", "no", "off", "0", "true", "yes", "on", "1"};
static const char *const tls_version_names[] = {"1.2", "1.3"};
static const unsigned tls_versions[] = {CONFIG_TLS1_2, CONFIG_TLS1_3};
#define COUNT(a) (int)(sizeof(a) / sizeof((a)[0]))

/* Index of s among names[first..n), ignoring case, or -1. */
static int word_index(const char *s, const char *const *names, int first, int n)
{
    for (int i = first; s && i < n; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

const char *log_level_name(enum log_level l)
{
    return (unsigned)l < COUNT(level_names) ? level_names[l] : "?";
}

const char *target_protocol_name(enum target_protocol p)
{
    return (unsigned)p < COUNT(protocol_names) ? protocol_names[p] : "?";
}

int config_parse_log_level(const char *s, enum log_level *out)
{
    int i = word_index(s, level_names, 0, COUNT(level_names));
    if (i >= 0)
        *out = (enum log_level)i;
    return i >= 0 ? 0 : -1;
}

int config_parse_target_protocol(const char *s, enum target_protocol *out)
{
    /* from 1: "none" is what unset means, not something to write */
    int i = word_index(s, protocol_names, 1, COUNT(protocol_names));
    if (i >= 0)
        *out = (enum target_protocol)i;
    return i >= 0 ? 0 : -1;
}

int config_parse_refusal(const char *s, enum refusal_mode *out)
{
    int i = word_index(s, refusal_names, 0, COUNT(refusal_names));
    if (i >= 0)
        *out = (enum refusal_mode)i;
    return i >= 0 ? 0 : -1;
}

int config_parse_client_cert(const char *s, enum client_cert_mode *out)
{
    int i = word_index(s, client_cert_names, 0, COUNT(client_cert_names));
    if (i >= 0)
        *out = (enum client_cert_mode)i;
    return i >= 0 ? 0 : -1;
}

int config_parse_client_id_mode(const char *s, enum client_id_mode *out)
{
    int i = word_index(s, client_id_names, 0, COUNT(client_id_names));
    if (i >= 0)
        *out = (enum client_id_mode)i;
    return i >= 0 ? 0 : -1;
}

const char *client_id_mode_name(enum client_id_mode m)
{
    return (unsigned)m < COUNT(client_id_names) ? client_id_names[m] : "?";
}

int config_parse_bool(const char *s, bool *out)
{
    int i = word_index(s, bool_names, 0, COUNT(bool_names));
    if (i >= 0)
        *out = i >= COUNT(bool_names) / 2;
    return i >= 0 ? 0 : -1;
}

int config_parse_tls_version(const char *s, unsigned *out)
{
    /* Only what a server should still offer: older versions are broken,
     * and "1.2" vs "TLSv1.2" spellings are not worth guessing at. */
    int i = word_index(s, tls_version_names, 0, COUNT(tls_version_names));
    if (i >= 0)
        *out = tls_versions[i];
    return i >= 0 ? 0 : -1;
}

/* One item of a comma list, blanks around it allowed. */
static unsigned cert_method(const char *p, size_t n)
{
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 4 && strncasecmp(p, "ocsp", 4) == 0)
        return CERT_VERIFY_OCSP;
    if (n == 3 && strncasecmp(p, "crl", 3) == 0)
        return CERT_VERIFY_CRL;
    return 0;
}

int config_parse_cert_methods(const char *s, unsigned *out)
{
    unsigned bits = 0;
    if (!s)
        return -1;
    for (const char *p = s;; p++) {
        size_t n = strcspn(p, ",");
        unsigned m = cert_method(p, n);
        if (!m)
            return -1; /* an empty item is a typo too: "ocsp,,crl" */
        bits |= m;
        p += n;
        if (!*p)
            break;
    }
    *out = bits;
    return 0;
}

int config_check_handler_list(const char *s)
{
    /* Names are checked against the registry later; here only the shape,
     * so "log,,x" or "Log" fail with the variable's name in the message. */
    bool name_started = false;
    for (const char *p = s; p && *p; p++) {
        if (*p == ',') {
            if (!name_started)
                return -1;
            name_started = false;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_') {
            name_started = true;
        } else {
            return -1;
        }
    }
    return name_started ? 0 : -1;
}
