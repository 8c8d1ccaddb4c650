/*
 * The reliable tunnel's wire format (frame.h): binary frames and the JSON
 * open message, optionally authenticated with HMAC-SHA256.  Decoding is
 * strict because both arrive from anyone who may publish on the topics.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/utf8.h"
#include "core/util.h"
#include "tunnel/frame.h"

#define MAC_HEX 64 /* SHA-256 as lower-case hex */

/* ---- frames ---------------------------------------------------------------- */

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

size_t tunnel_frame_encode(const struct tunnel_frame *f, uint8_t *out)
{
    ASSERT(f->type >= TF_DATA && f->type <= TF_ACCEPT);
    out[0] = (uint8_t)(TUNNEL_FRAME_VERSION << 4 | f->type);
    out[1] = f->flags;
    put_be(out + 2, f->stream, 8);
    put_be(out + 10, f->offset, 8);
    put_be(out + 18, f->window, 4);
    if (f->len)
        memcpy(out + TUNNEL_FRAME_HEAD, f->payload, f->len);
    return TUNNEL_FRAME_HEAD + f->len;
}

/* A topic someone may publish to: not empty, bounded, no wildcard, and
 * nothing a broker refuses (NUL, control characters, bad UTF-8). */
static bool topic_ok(const uint8_t *p, size_t len)
{
    return len > 0 && len <= TUNNEL_MAX_TOPIC && !memchr(p, '+', len) && !memchr(p, '#', len) &&
           utf8_mqtt_name(p, len);
}

static bool has_mac(const uint8_t *p, size_t len);

/* Whether the payload's length and content suit the frame's type. */
static bool payload_ok(const struct tunnel_frame *f)
{
    switch (f->type) {
    case TF_DATA:
        return f->len > 0 && f->len <= TUNNEL_MAX_CHUNK;
    case TF_ACCEPT: /* a topic, MAC-prefixed or not (tunnel_accept_encode) */
        return has_mac(f->payload, f->len) ? topic_ok(f->payload + MAC_HEX + 1, f->len - MAC_HEX - 1)
                                           : topic_ok(f->payload, f->len);
    case TF_RST:
        return f->len <= TUNNEL_MAX_REASON;
    default: /* ACK, FIN */
        return f->len == 0;
    }
}

bool tunnel_frame_decode(const uint8_t *p, size_t len, struct tunnel_frame *f)
{
    if (len < TUNNEL_FRAME_HEAD || p[0] >> 4 != TUNNEL_FRAME_VERSION)
        return false;
    *f = (struct tunnel_frame){
        .type = p[0] & 0x0f,
        .flags = p[1],
        .stream = get_be(p + 2, 8),
        .offset = get_be(p + 10, 8),
        .window = (uint32_t)get_be(p + 18, 4),
        .payload = p + TUNNEL_FRAME_HEAD,
        .len = len - TUNNEL_FRAME_HEAD,
    };
    if (f->type < TF_DATA || f->type > TF_ACCEPT || f->stream == 0)
        return false;
    uint8_t allowed = f->type == TF_ACK ? TF_FIN_SEEN : 0;
    return (f->flags & ~allowed) == 0 && payload_ok(f);
}

/* ---- the open message ------------------------------------------------------ */

static bool keyed(const uint8_t *key, size_t keylen) { return key && keylen > 0; }

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
}

/* HMAC-SHA256(key, p[0..n)) as 64 lower-case hex digits (no NUL). */
static bool mac_hex(const uint8_t *key, size_t keylen, const uint8_t *p, size_t n, char out[MAC_HEX])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (keylen > INT32_MAX || !HMAC(EVP_sha256(), key, (int)keylen, p, n, md, &mdlen) || mdlen * 2 != MAC_HEX)
        return false;
    hex(md, mdlen, out);
    return true;
}

/* s[0..len) written as a JSON string's content: the reply topic may hold
 * quotes, backslashes or control characters, which must not end the string. */
static bool json_escape(const char *s, size_t len, char *out, size_t outlen, size_t *used)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[7];
        int n = c < 0x20 ? snprintf(tmp, sizeof(tmp), "\\u%04x", c)
                         : snprintf(tmp, sizeof(tmp), c == '"' || c == '\\' ? "\\%c" : "%c", c);
        if (o + (size_t)n >= outlen)
            return false;
        memcpy(out + o, tmp, (size_t)n);
        o += (size_t)n;
    }
    *used = o;
    return true;
}

/* Whether o is something a receiver would accept (what decode checks). */
static bool open_ok(const struct tunnel_open *o)
{
    size_t rlen = strnlen(o->reply, sizeof(o->reply));
    return o->stream != 0 && o->port != 0 && o->ts <= INT64_MAX && rlen < sizeof(o->reply) &&
           topic_ok((const uint8_t *)o->reply, rlen) && utf8_valid((const uint8_t *)o->reply, rlen, false);
}

/* The JSON alone into out; its length, or 0 when it does not fit. */
static size_t open_json(const struct tunnel_open *o, char *out, size_t outlen)
{
    char reply[TUNNEL_MAX_TOPIC * 6 + 1];
    size_t rlen;
    if (!json_escape(o->reply, strlen(o->reply), reply, sizeof(reply), &rlen))
        return 0;
    int n = snprintf(out, outlen, "{\"type\":\"open\",\"v\":1,\"stream\":\"%016llx\",\"port\":%u,\"reply\":\"%.*s\",\"ts\":%llu}",
                     (unsigned long long)o->stream, (unsigned)o->port, (int)rlen, reply, (unsigned long long)o->ts);
    return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
}

/* Written by hand rather than with jansson: no allocation, and the key
 * order is fixed (what the MAC covers is exactly these bytes anyway).  out
 * is NUL-terminated; an o that decode would refuse encodes to 0. */
size_t tunnel_open_encode(const struct tunnel_open *o, const uint8_t *key, size_t keylen, char *out, size_t outlen)
{
    if (!open_ok(o))
        return 0;
    if (!keyed(key, keylen))
        return open_json(o, out, outlen);
    if (outlen <= MAC_HEX + 1)
        return 0;
    size_t n = open_json(o, out + MAC_HEX + 1, outlen - MAC_HEX - 1);
    if (n == 0 || !mac_hex(key, keylen, (const uint8_t *)out + MAC_HEX + 1, n, out))
        return 0;
    out[MAC_HEX] = '.';
    return MAC_HEX + 1 + n;
}

/* Whether p starts with "<64 lower-case hex>." (a MAC prefix). */
static bool has_mac(const uint8_t *p, size_t len)
{
    if (len <= MAC_HEX || p[MAC_HEX] != '.')
        return false;
    for (size_t i = 0; i < MAC_HEX; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    return true;
}

/* The 16 lower-case hex digits of a non-zero stream id. */
static bool parse_stream(const json_t *v, uint64_t *out)
{
    const char *s = json_string_value(v);
    if (!s || json_string_length(v) != 16)
        return false;
    uint64_t id = 0;
    for (int i = 0; i < 16; i++) {
        int d = s[i] >= '0' && s[i] <= '9' ? s[i] - '0' : s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10 : -1;
        if (d < 0)
            return false;
        id = id << 4 | (uint64_t)d;
    }
    *out = id;
    return id != 0;
}

static bool int_in(const json_t *v, json_int_t lo, json_int_t hi, json_int_t *out)
{
    if (!json_is_integer(v))
        return false;
    *out = json_integer_value(v);
    return *out >= lo && *out <= hi;
}

/* The object's fields into o: exactly the six keys, each of its type. */
static bool read_open(const json_t *j, struct tunnel_open *o)
{
    const json_t *type = json_object_get(j, "type"), *reply = json_object_get(j, "reply");
    json_int_t v, port, ts;
    if (json_object_size(j) != 6 || !json_is_string(type) || strcmp(json_string_value(type), "open") != 0 ||
        json_string_length(type) != 4 || !int_in(json_object_get(j, "v"), 1, 1, &v) ||
        !parse_stream(json_object_get(j, "stream"), &o->stream) ||
        !int_in(json_object_get(j, "port"), 1, 65535, &port) || !int_in(json_object_get(j, "ts"), 0, INT64_MAX, &ts) ||
        !json_is_string(reply) || !topic_ok((const uint8_t *)json_string_value(reply), json_string_length(reply)))
        return false;
    o->port = (uint16_t)port;
    o->ts = (uint64_t)ts;
    memcpy(o->reply, json_string_value(reply), json_string_length(reply) + 1);
    return true;
}

static enum tunnel_open_result parse_open(const uint8_t *p, size_t len, struct tunnel_open *o)
{
    json_error_t err;
    /* Strict: a duplicate key could mean different things to different
     * parsers; without JSON_ALLOW_NUL a string holding U+0000 is refused. */
    json_t *j = json_loadb((const char *)p, len, JSON_REJECT_DUPLICATES, &err);
    bool ok = json_is_object(j) && read_open(j, o);
    json_decref(j);
    return ok ? TUNNEL_OPEN_OK : TUNNEL_OPEN_MALFORMED;
}

static bool fresh(uint64_t ts, uint64_t now)
{
    return (ts > now ? ts - now : now - ts) <= TUNNEL_CONTROL_SKEW;
}

/*
 * Without a key the MAC prefix of a keyed sender is skipped unchecked: a
 * receiver that has no key cannot check it and does not require it, and so
 * a keyless side still talks to a keyed one (the key protects only the
 * side that holds it).
 */
enum tunnel_open_result tunnel_open_decode(const uint8_t *p, size_t len, const uint8_t *key, size_t keylen,
                                           uint64_t now, struct tunnel_open *o)
{
    *o = (struct tunnel_open){0};
    bool mac = has_mac(p, len);
    const uint8_t *json = mac ? p + MAC_HEX + 1 : p;
    size_t jlen = mac ? len - MAC_HEX - 1 : len;
    if (keyed(key, keylen)) {
        char want[MAC_HEX];
        if (!mac || !mac_hex(key, keylen, json, jlen, want) || CRYPTO_memcmp(want, p, MAC_HEX) != 0)
            return TUNNEL_OPEN_BAD_MAC;
    }
    enum tunnel_open_result r = parse_open(json, jlen, o);
    if (r == TUNNEL_OPEN_OK && keyed(key, keylen) && !fresh(o->ts, now))
        r = TUNNEL_OPEN_STALE;
    if (r != TUNNEL_OPEN_OK)
        *o = (struct tunnel_open){0};
    return r;
}

const char *tunnel_open_result_name(enum tunnel_open_result r)
{
    static const char *const names[] = {
        [TUNNEL_OPEN_OK] = "ok",
        [TUNNEL_OPEN_MALFORMED] = "malformed",
        [TUNNEL_OPEN_BAD_MAC] = "bad_mac",
        [TUNNEL_OPEN_STALE] = "stale",
    };
    return r >= TUNNEL_OPEN_OK && r <= TUNNEL_OPEN_STALE ? names[r] : "unknown";
}

/* What an ACCEPT's MAC covers: "accept", the stream id, the topic. */
static bool accept_mac(uint64_t stream, const char *topic, size_t tlen, const uint8_t *key, size_t keylen,
                       char out[MAC_HEX])
{
    uint8_t msg[6 + 8 + TUNNEL_MAX_TOPIC];
    if (tlen > TUNNEL_MAX_TOPIC)
        return false;
    memcpy(msg, "accept", 6);
    put_be(msg + 6, stream, 8);
    memcpy(msg + 14, topic, tlen);
    return mac_hex(key, keylen, msg, 14 + tlen, out);
}

size_t tunnel_accept_encode(uint64_t stream, const char *topic, const uint8_t *key, size_t keylen, uint8_t *out,
                            size_t outlen)
{
    size_t tlen = strlen(topic), pre = keylen ? MAC_HEX + 1 : 0;
    if (pre + tlen > outlen || pre + tlen > TUNNEL_MAX_TOPIC + MAC_HEX + 1)
        return 0;
    if (keylen && !accept_mac(stream, topic, tlen, key, keylen, (char *)out))
        return 0;
    if (keylen)
        out[MAC_HEX] = '.';
    memcpy(out + pre, topic, tlen);
    return pre + tlen;
}

long tunnel_accept_topic(uint64_t stream, const uint8_t *p, size_t len, const uint8_t *key, size_t keylen)
{
    bool mac = has_mac(p, len);
    if (!keylen)
        return mac ? MAC_HEX + 1 : 0;
    char want[MAC_HEX];
    if (!mac || !accept_mac(stream, (const char *)p + MAC_HEX + 1, len - MAC_HEX - 1, key, keylen, want) ||
        CRYPTO_memcmp(want, p, MAC_HEX) != 0)
        return -1;
    return MAC_HEX + 1;
}
