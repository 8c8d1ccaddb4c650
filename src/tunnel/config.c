/*
 * The tunnel's JSON config (docs/TUNNEL.md): mqtunnel's file accepted as
 * is, plus our keys.  Strict, because a typo in "allow" or "insecure" must
 * not silently weaken anything: an unknown key or a wrong type is an error
 * naming the field and the file.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/internal.h"

#define FAIL(...) (snprintf(err, errlen, __VA_ARGS__), -1)

static int get_str(json_t *v, const char *name, char **out, const char *path, char *err, size_t errlen)
{
    if (!json_is_string(v))
        return FAIL("%s: field \"%s\": expected a string", path, name);
    free(*out);
    *out = strdup(json_string_value(v));
    return *out ? 0 : FAIL("%s: out of memory", path);
}

static int get_int(json_t *v, const char *name, long long lo, long long hi, long long *out, const char *path,
                   char *err, size_t errlen)
{
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return FAIL("%s: field \"%s\": expected an integer from %lld to %lld", path, name, lo, hi);
    *out = json_integer_value(v);
    return 0;
}

static int get_bool(json_t *v, const char *name, bool *out, const char *path, char *err, size_t errlen)
{
    if (!json_is_boolean(v))
        return FAIL("%s: field \"%s\": expected true or false", path, name);
    *out = json_is_true(v);
    return 0;
}

static int get_allow(json_t *v, struct tunnel_config *c, char *err, size_t errlen)
{
    if (!json_is_array(v) || json_array_size(v) > TUNNEL_MAX_ALLOW)
        return FAIL("%s: field \"allow\": expected an array of at most %d ports", c->path, TUNNEL_MAX_ALLOW);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        long long port;
        if (get_int(e, "allow", 1, 65535, &port, c->path, err, errlen) < 0)
            return -1;
        c->allow[c->nallow++] = (uint16_t)port;
    }
    return 0;
}

/* Hex of an even length into key; -1 when it is not that. */
static long hex_decode(const char *s, size_t n, uint8_t *key, size_t cap)
{
    if (n % 2 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return -1;
    for (size_t i = 0; i < n / 2; i++) {
        char two[3] = {s[2 * i], s[2 * i + 1], 0};
        key[i] = (uint8_t)strtoul(two, NULL, 16);
    }
    return (long)(n / 2);
}

static int get_key(json_t *v, struct tunnel_config *c, char *err, size_t errlen)
{
    if (c->keylen)
        return FAIL("%s: field \"key\": give \"key\" or \"keyFile\", not both", c->path);
    if (!json_is_string(v))
        return FAIL("%s: field \"key\": expected a string of hex digits", c->path);
    long n = hex_decode(json_string_value(v), strlen(json_string_value(v)), c->key, sizeof(c->key));
    if (n < TUNNEL_KEY_MIN) /* the key itself is never part of a message */
        return FAIL("%s: field \"key\": expected %d to %zu bytes as hex digits", c->path, TUNNEL_KEY_MIN,
                    sizeof(c->key));
    c->keylen = (size_t)n;
    return 0;
}

/* keyFile: hex digits, or the raw key bytes (a trailing newline dropped). */
static int get_key_file(json_t *v, struct tunnel_config *c, char *err, size_t errlen)
{
    if (c->keylen)
        return FAIL("%s: field \"keyFile\": give \"key\" or \"keyFile\", not both", c->path);
    if (!json_is_string(v))
        return FAIL("%s: field \"keyFile\": expected a file name", c->path);
    FILE *f = fopen(json_string_value(v), "rb");
    if (!f)
        return FAIL("%s: field \"keyFile\": %s: %s", c->path, json_string_value(v), strerror(errno));
    char buf[2 * TUNNEL_MAX_KEY + 2];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    long k = hex_decode(buf, n, c->key, sizeof(c->key));
    bool all_hex = n > 0;
    for (size_t i = 0; i < n && all_hex; i++)
        all_hex = isxdigit((unsigned char)buf[i]);
    if (k < 0 && all_hex) /* hex with a digit missing or too many: a typo, not raw bytes */
        return FAIL("%s: field \"keyFile\": %zu hex digits (an odd count, or more than %zu bytes)", c->path, n,
                    sizeof(c->key));
    if (k < 0 && n <= sizeof(c->key))
        memcpy(c->key, buf, n), k = (long)n;
    if (k < TUNNEL_KEY_MIN)
        return FAIL("%s: field \"keyFile\": expected %d to %zu bytes of key", c->path, TUNNEL_KEY_MIN,
                    sizeof(c->key));
    c->keylen = (size_t)k;
    return 0;
}

static int get_compat(json_t *v, struct tunnel_config *c, char *err, size_t errlen)
{
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (!s || (strcmp(s, "mqtunnel") && strcmp(s, "reliable") && strcmp(s, "")))
        return FAIL("%s: field \"compat\": expected \"mqtunnel\" (or \"reliable\", the default)", c->path);
    c->compat = !strcmp(s, "mqtunnel");
    return 0;
}

/* Integers with a range, by name. */
static int get_number(const char *k, json_t *v, struct tunnel_config *c, bool *port_set, char *err,
                      size_t errlen)
{
    long long n;
    const char *p = c->path;
    if (!strcmp(k, "port")) {
        *port_set = true;
        return get_int(v, k, 1, 65535, &n, p, err, errlen) < 0 ? -1 : (c->port = (uint16_t)n, 0);
    }
    if (!strcmp(k, "window"))
        return get_int(v, k, 4096, 64 << 20, &n, p, err, errlen) < 0 ? -1 : (c->window = (uint32_t)n, 0);
    if (!strcmp(k, "chunk"))
        return get_int(v, k, 512, TUNNEL_MAX_CHUNK, &n, p, err, errlen) < 0 ? -1 : (c->chunk = (uint32_t)n, 0);
    if (!strcmp(k, "keepalive"))
        return get_int(v, k, 0, 65535, &n, p, err, errlen) < 0 ? -1 : (c->keepalive = (uint16_t)n, 0);
    if (!strcmp(k, "giveUp"))
        return get_int(v, k, 2, 3600, &n, p, err, errlen) < 0 ? -1 : (c->give_up_s = (uint32_t)n, 0);
    if (get_int(v, k, 4, 5, &n, p, err, errlen) < 0)
        return -1;
    c->mqtt_version = (uint8_t)n;
    return 0;
}

static int field(const char *k, json_t *v, struct tunnel_config *c, bool *port_set, bool *tls_set, char *err,
                 size_t errlen)
{
    static const struct { const char *name; size_t off; } strs[] = {
        {"host", offsetof(struct tunnel_config, host)},       {"username", offsetof(struct tunnel_config, username)},
        {"password", offsetof(struct tunnel_config, password)}, {"clientId", offsetof(struct tunnel_config, client_id)},
        {"caCert", offsetof(struct tunnel_config, ca_cert)},   {"clientCert", offsetof(struct tunnel_config, client_cert)},
        {"privateKey", offsetof(struct tunnel_config, private_key)}, {"control", offsetof(struct tunnel_config, control)},
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (!strcmp(k, strs[i].name))
            return get_str(v, k, (char **)((char *)c + strs[i].off), c->path, err, errlen);
    if (!strcmp(k, "port") || !strcmp(k, "window") || !strcmp(k, "chunk") || !strcmp(k, "keepalive") ||
        !strcmp(k, "giveUp") || !strcmp(k, "mqttVersion"))
        return get_number(k, v, c, port_set, err, errlen);
    if (!strcmp(k, "tls"))
        return *tls_set = true, get_bool(v, k, &c->tls, c->path, err, errlen);
    if (!strcmp(k, "insecure"))
        return get_bool(v, k, &c->insecure, c->path, err, errlen);
    if (!strcmp(k, "allow"))
        return get_allow(v, c, err, errlen);
    if (!strcmp(k, "key"))
        return get_key(v, c, err, errlen);
    if (!strcmp(k, "keyFile"))
        return get_key_file(v, c, err, errlen);
    if (!strcmp(k, "compat"))
        return get_compat(v, c, err, errlen);
    return FAIL("%s: field \"%s\": unknown (a typo?)", c->path, k);
}

/* What every field together must make sense as. */
static int check(struct tunnel_config *c, char *err, size_t errlen)
{
    if (!c->host || !*c->host)
        return FAIL("%s: field \"host\": required", c->path);
    if (!c->control || !*c->control || !strchr(c->control, '/') || strpbrk(c->control, "+#") ||
        strlen(c->control) > 216) /* room for the data topics (%.216s) */
        return FAIL("%s: field \"control\": required, a topic with at least two levels and no wildcard",
                    c->path);
    if (!c->client_cert != !c->private_key)
        return FAIL("%s: field \"%s\": clientCert and privateKey go together", c->path,
                    c->client_cert ? "privateKey" : "clientCert");
    if (c->client_id && (!*c->client_id || strlen(c->client_id) > 63))
        return FAIL("%s: field \"clientId\": 1 to 63 characters", c->path);
    if (c->password && !c->username)
        return FAIL("%s: field \"password\": needs a username (MQTT 3.1.1)", c->path);
    return 0;
}

int tunnel_config_load(struct tunnel_config *c, const char *path, char *err, size_t errlen)
{
    *c = (struct tunnel_config){.path = path, .port = 1883, .mqtt_version = 4, .keepalive = 60};
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return FAIL("%s: line %d: %s", path, je.line, je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return FAIL("%s: expected a JSON object", path);
    }
    bool port_set = false, tls_set = false;
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(root, k, v) {
        if ((rc = field(k, v, c, &port_set, &tls_set, err, errlen)) < 0)
            break;
    }
    json_decref(root);
    if (!tls_set) /* as mqtunnel chose, by port, and whenever a CA is given */
        c->tls = c->ca_cert || c->port == 8883;
    return rc < 0 ? -1 : check(c, err, errlen);
}

void tunnel_config_free(struct tunnel_config *c)
{
    char **strs[] = {&c->host, &c->username, &c->password, &c->client_id,
                     &c->ca_cert, &c->client_cert, &c->private_key, &c->control};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
    memset(c->key, 0, sizeof(c->key)); /* the key does not outlive its use */
    c->keylen = 0;
}

bool tunnel_config_allows(const struct tunnel_config *c, uint16_t port)
{
    for (unsigned i = 0; i < c->nallow; i++)
        if (c->allow[i] == port)
            return true;
    return false;
}
