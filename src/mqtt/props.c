/* v5 property blocks: what each identifier holds and where it may appear
 * (MQTT 5 table 2.2.2.2), validation in one pass, and walking raw blocks. */
#include <string.h>

#include "mqtt/mqtt.h"

enum ptype { PT_NONE, PT_BYTE, PT_U16, PT_U32, PT_VARINT, PT_UTF8, PT_BIN, PT_PAIR };

/* Value rules the spec states as Protocol Errors. */
enum pcheck {
    PC_ANY,
    PC_BOOL,    /* 0 or 1 */
    PC_NONZERO, /* receive max, max packet size, topic alias, subscription id */
    PC_TOPIC,   /* response topic: a topic name, so no wildcards */
};

struct pdesc {
    uint8_t type, check;
    uint16_t allowed; /* bit per packet type; bit 0 is MQTT_PROPS_WILL */
    uint8_t has;      /* MQTT_PROPBIT_x + 1 for the properties mqtt_props tracks */
};

#define W (1u << MQTT_PROPS_WILL)
#define T(x) (1u << MQTT_##x)
#define HAS(x) (MQTT_PROPBIT_##x + 1)
#define ACKS (T(PUBACK) | T(PUBREC) | T(PUBREL) | T(PUBCOMP))
#define REPLIES (T(CONNACK) | ACKS | T(SUBACK) | T(UNSUBACK) | T(DISCONNECT) | T(AUTH))
#define ANY_PROPS (REPLIES | W | T(CONNECT) | T(PUBLISH) | T(SUBSCRIBE) | T(UNSUBSCRIBE))

static const struct pdesc descs[MQTT_PROP_SHARED_SUB_AVAILABLE + 1] = {
    [MQTT_PROP_PAYLOAD_FORMAT] = {PT_BYTE, PC_BOOL, W | T(PUBLISH)},
    [MQTT_PROP_MESSAGE_EXPIRY] = {PT_U32, PC_ANY, W | T(PUBLISH)},
    [MQTT_PROP_CONTENT_TYPE] = {PT_UTF8, PC_ANY, W | T(PUBLISH)},
    [MQTT_PROP_RESPONSE_TOPIC] = {PT_UTF8, PC_TOPIC, W | T(PUBLISH)},
    [MQTT_PROP_CORRELATION_DATA] = {PT_BIN, PC_ANY, W | T(PUBLISH)},
    [MQTT_PROP_SUBSCRIPTION_ID] = {PT_VARINT, PC_NONZERO, T(PUBLISH) | T(SUBSCRIBE),
                                   HAS(SUBSCRIPTION_ID)},
    [MQTT_PROP_SESSION_EXPIRY] = {PT_U32, PC_ANY, T(CONNECT) | T(CONNACK) | T(DISCONNECT),
                                  HAS(SESSION_EXPIRY)},
    [MQTT_PROP_ASSIGNED_CLIENT_ID] = {PT_UTF8, PC_ANY, T(CONNACK)},
    [MQTT_PROP_SERVER_KEEPALIVE] = {PT_U16, PC_ANY, T(CONNACK)},
    [MQTT_PROP_AUTH_METHOD] = {PT_UTF8, PC_ANY, T(CONNECT) | T(CONNACK) | T(AUTH),
                               HAS(AUTH_METHOD)},
    [MQTT_PROP_AUTH_DATA] = {PT_BIN, PC_ANY, T(CONNECT) | T(CONNACK) | T(AUTH)},
    [MQTT_PROP_REQUEST_PROBLEM_INFO] = {PT_BYTE, PC_BOOL, T(CONNECT)},
    [MQTT_PROP_WILL_DELAY] = {PT_U32, PC_ANY, W},
    [MQTT_PROP_REQUEST_RESPONSE_INFO] = {PT_BYTE, PC_BOOL, T(CONNECT)},
    [MQTT_PROP_RESPONSE_INFO] = {PT_UTF8, PC_ANY, T(CONNACK)},
    [MQTT_PROP_SERVER_REFERENCE] = {PT_UTF8, PC_ANY, T(CONNACK) | T(DISCONNECT)},
    [MQTT_PROP_REASON_STRING] = {PT_UTF8, PC_ANY, REPLIES},
    [MQTT_PROP_RECEIVE_MAX] = {PT_U16, PC_NONZERO, T(CONNECT) | T(CONNACK), HAS(RECEIVE_MAX)},
    [MQTT_PROP_TOPIC_ALIAS_MAX] = {PT_U16, PC_ANY, T(CONNECT) | T(CONNACK), HAS(TOPIC_ALIAS_MAX)},
    [MQTT_PROP_TOPIC_ALIAS] = {PT_U16, PC_NONZERO, T(PUBLISH), HAS(TOPIC_ALIAS)},
    [MQTT_PROP_MAX_QOS] = {PT_BYTE, PC_BOOL, T(CONNACK)},
    [MQTT_PROP_RETAIN_AVAILABLE] = {PT_BYTE, PC_BOOL, T(CONNACK)},
    [MQTT_PROP_USER_PROPERTY] = {PT_PAIR, PC_ANY, ANY_PROPS},
    [MQTT_PROP_MAX_PACKET_SIZE] = {PT_U32, PC_NONZERO, T(CONNECT) | T(CONNACK),
                                   HAS(MAX_PACKET_SIZE)},
    [MQTT_PROP_WILDCARD_SUB_AVAILABLE] = {PT_BYTE, PC_BOOL, T(CONNACK)},
    [MQTT_PROP_SUB_ID_AVAILABLE] = {PT_BYTE, PC_BOOL, T(CONNACK)},
    [MQTT_PROP_SHARED_SUB_AVAILABLE] = {PT_BYTE, PC_BOOL, T(CONNACK)},
};

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Identifiers are varints, but all defined ones fit in a byte, so a byte
 * with the continuation bit is an unknown identifier like any other. */
static const struct pdesc *desc_of(uint8_t id)
{
    if (id >= sizeof descs / sizeof descs[0] || descs[id].type == PT_NONE)
        return NULL;
    return &descs[id];
}

/* Size of a 2-byte-length-prefixed string at p[0..left), 0 if it overruns. */
static uint32_t str_size(const uint8_t *p, uint32_t left)
{
    if (left < 2 || (uint32_t)be16(p) + 2 > left)
        return 0;
    return (uint32_t)be16(p) + 2;
}

static uint32_t value_size(uint8_t type, const uint8_t *p, uint32_t left)
{
    static const uint8_t fixed[] = {[PT_BYTE] = 1, [PT_U16] = 2, [PT_U32] = 4};
    uint32_t v, n, first;

    switch (type) {
    case PT_BYTE:
    case PT_U16:
    case PT_U32:
        return fixed[type] <= left ? fixed[type] : 0;
    case PT_VARINT:
        return mqtt_varint_get(p, left, &v, &n) == MQTT_OK ? n : 0;
    case PT_UTF8:
    case PT_BIN:
        return str_size(p, left);
    case PT_PAIR:
        first = str_size(p, left);
        n = first ? str_size(p + first, left - first) : 0;
        return n ? first + n : 0;
    }
    return 0;
}

/* Size of the whole property (identifier and value) at p, 0 if malformed. */
static uint32_t prop_size(const uint8_t *p, uint32_t left)
{
    const struct pdesc *d = left ? desc_of(p[0]) : NULL;
    uint32_t n = d ? value_size(d->type, p + 1, left - 1) : 0;
    return n ? n + 1 : 0;
}

static bool all_zero(const uint8_t *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (v[i])
            return false;
    return true;
}

static mqtt_rc check_value(const struct pdesc *d, const uint8_t *v, uint32_t n)
{
    if (d->type == PT_UTF8 && !mqtt_utf8_valid(v + 2, n - 2))
        return MQTT_MALFORMED;
    if (d->type == PT_PAIR) {
        uint32_t k = str_size(v, n);
        if (!mqtt_utf8_valid(v + 2, k - 2) || !mqtt_utf8_valid(v + k + 2, n - k - 2))
            return MQTT_MALFORMED;
    }
    switch (d->check) {
    case PC_BOOL:
        return v[0] > 1 ? MQTT_PROTOCOL_ERROR : MQTT_OK;
    case PC_NONZERO: /* minimal big-endian or varint: zero is all zero bytes */
        return all_zero(v, n) ? MQTT_PROTOCOL_ERROR : MQTT_OK;
    case PC_TOPIC:
        return mqtt_topic_name_valid(v + 2, n - 2) ? MQTT_OK : MQTT_PROTOCOL_ERROR;
    }
    return MQTT_OK;
}

/* Record the few values the proxy acts on. */
static void extract(mqtt_props *out, const struct pdesc *d, uint8_t id, const uint8_t *v)
{
    if (d->has)
        out->has |= 1u << (d->has - 1);
    switch (id) {
    case MQTT_PROP_TOPIC_ALIAS:
        out->topic_alias = be16(v);
        break;
    case MQTT_PROP_TOPIC_ALIAS_MAX:
        out->topic_alias_max = be16(v);
        break;
    case MQTT_PROP_RECEIVE_MAX:
        out->receive_max = be16(v);
        break;
    case MQTT_PROP_MAX_PACKET_SIZE:
        out->max_packet_size = be32(v);
        break;
    case MQTT_PROP_SESSION_EXPIRY:
        out->session_expiry = be32(v);
        break;
    }
}

static bool may_repeat(uint8_t id, uint8_t type)
{
    return id == MQTT_PROP_USER_PROPERTY ||
           (id == MQTT_PROP_SUBSCRIPTION_ID && type == MQTT_PUBLISH);
}

/* Validate the property at raw[*off] and step over it. */
static mqtt_rc parse_one(mqtt_props *out, uint8_t type, uint64_t *seen, uint32_t *off)
{
    const uint8_t *p = out->raw + *off;
    uint32_t n = prop_size(p, out->raw_len - *off);
    if (n == 0)
        return MQTT_MALFORMED; /* unknown identifier or value overruns the block */
    const struct pdesc *d = desc_of(p[0]);
    if (!(d->allowed & (1u << type)))
        return MQTT_PROTOCOL_ERROR;
    if ((*seen & (1ull << p[0])) && !may_repeat(p[0], type))
        return MQTT_PROTOCOL_ERROR;
    *seen |= 1ull << p[0];
    mqtt_rc rc = check_value(d, p + 1, n - 1);
    if (rc != MQTT_OK)
        return rc;
    extract(out, d, p[0], p + 1);
    *off += n;
    return MQTT_OK;
}

mqtt_rc mqtt_props_parse(const uint8_t *p, size_t len, uint8_t type, mqtt_props *out,
                         uint32_t *used)
{
    uint32_t blen, n;
    uint64_t seen = 0;

    *out = (mqtt_props){0};
    if (type >= 16 || mqtt_varint_get(p, len, &blen, &n) != MQTT_OK || blen > len - n)
        return MQTT_MALFORMED;
    out->raw = p + n;
    out->raw_len = blen;
    for (uint32_t off = 0; off < blen;) {
        mqtt_rc rc = parse_one(out, type, &seen, &off);
        if (rc != MQTT_OK)
            return rc;
    }
    if ((seen & 1ull << MQTT_PROP_AUTH_DATA) && !(seen & 1ull << MQTT_PROP_AUTH_METHOD))
        return MQTT_PROTOCOL_ERROR;
    *used = n + blen;
    return MQTT_OK;
}

uint32_t mqtt_prop_size(const uint8_t *p, uint32_t left) { return prop_size(p, left); }

bool mqtt_props_find(const uint8_t *raw, uint32_t raw_len, uint8_t id, const uint8_t **val)
{
    for (uint32_t off = 0, n; off < raw_len; off += n) {
        n = prop_size(raw + off, raw_len - off);
        if (n == 0)
            return false;
        if (raw[off] == id) {
            *val = raw + off + 1;
            return true;
        }
    }
    return false;
}

/* out may be raw itself (filtering in place).  A malformed block (never one
 * mqtt_decode accepted) is copied up to the first property that does not
 * parse. */
uint32_t mqtt_props_without(const uint8_t *raw, uint32_t raw_len, uint8_t drop, uint8_t *out)
{
    uint32_t w = 0;

    for (uint32_t off = 0, n; off < raw_len; off += n) {
        n = prop_size(raw + off, raw_len - off);
        if (n == 0)
            break;
        if (raw[off] != drop) {
            memmove(out + w, raw + off, n);
            w += n;
        }
    }
    return w;
}
