/*
 * Decoding whole packets.  Fields point into the caller's buffer.  The error
 * classes (MQTT_MALFORMED for what does not parse, MQTT_PROTOCOL_ERROR for
 * well-formed packets that break a rule, the spec's own class where it
 * names one) are described at mqtt_decode in mqtt.h.
 */
#include <string.h>

#include "mqtt/mqtt.h"

#define TRY(expr)                                                                      \
    do {                                                                               \
        mqtt_rc try_rc_ = (expr);                                                      \
        if (try_rc_ != MQTT_OK)                                                        \
            return try_rc_;                                                            \
    } while (0)

#define T(x) (1u << MQTT_##x)
#define ACKS (T(PUBACK) | T(PUBREC) | T(PUBREL) | T(PUBCOMP))

/* A read cursor over the variable header and payload; running past its end
 * is always MQTT_MALFORMED. */
struct rd {
    const uint8_t *p, *end;
};

static uint32_t left(const struct rd *r) { return (uint32_t)(r->end - r->p); }

static mqtt_rc end(const struct rd *r) { return r->p == r->end ? MQTT_OK : MQTT_MALFORMED; }

static mqtt_rc get_u8(struct rd *r, uint8_t *v)
{
    if (left(r) < 1)
        return MQTT_MALFORMED;
    *v = *r->p++;
    return MQTT_OK;
}

static mqtt_rc get_u16(struct rd *r, uint16_t *v)
{
    if (left(r) < 2)
        return MQTT_MALFORMED;
    *v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return MQTT_OK;
}

/* Packet identifiers are never 0 where the spec requires one. */
static mqtt_rc get_id(struct rd *r, uint16_t *id)
{
    TRY(get_u16(r, id));
    return *id ? MQTT_OK : MQTT_PROTOCOL_ERROR;
}

/* Binary data: two-byte length, then the bytes. */
static mqtt_rc get_bin(struct rd *r, mqtt_str *s)
{
    uint16_t n;

    TRY(get_u16(r, &n));
    if (left(r) < n)
        return MQTT_MALFORMED;
    s->p = r->p;
    s->len = n;
    r->p += n;
    return MQTT_OK;
}

static mqtt_rc get_utf8(struct rd *r, mqtt_str *s)
{
    TRY(get_bin(r, s));
    return mqtt_utf8_valid(s->p, s->len) ? MQTT_OK : MQTT_MALFORMED;
}

static mqtt_rc get_props(struct rd *r, uint8_t type, mqtt_props *props)
{
    uint32_t used;

    TRY(mqtt_props_parse(r->p, left(r), type, props, &used));
    r->p += used;
    return MQTT_OK;
}

/* The v5 tail of PUBACK..PUBCOMP, DISCONNECT and AUTH: an optional reason
 * code, then an optional property block, each present only if bytes remain. */
static mqtt_rc get_tail(struct rd *r, uint8_t type, uint8_t *rc, uint8_t *form,
                        mqtt_props *props)
{
    *form = MQTT_FORM_BARE;
    if (left(r) > 0) {
        TRY(get_u8(r, rc));
        *form = MQTT_FORM_RC;
    }
    if (left(r) > 0) {
        TRY(get_props(r, type, props));
        *form = MQTT_FORM_FULL;
    }
    TRY(end(r));
    return mqtt_reason_valid(type, MQTT_V5, *rc) ? MQTT_OK : MQTT_PROTOCOL_ERROR;
}

/* ---- CONNECT ---------------------------------------------------------- */

static bool str_is(mqtt_str s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

/* Only the name/level pairs the specs define; a known name with another
 * level is an unsupported version (the client gets a CONNACK saying so),
 * any other name is not MQTT at all. */
static mqtt_rc get_protocol(struct rd *r, struct mqtt_connect *c)
{
    mqtt_str name;

    TRY(get_bin(r, &name));
    TRY(get_u8(r, &c->version));
    bool mqtt = str_is(name, "MQTT");
    if (!mqtt && !str_is(name, "MQIsdp"))
        return MQTT_PROTOCOL_ERROR;
    if (mqtt ? c->version == MQTT_V311 || c->version == MQTT_V5 : c->version == MQTT_V31)
        return MQTT_OK;
    return MQTT_BAD_VERSION;
}

/* Every rule on the flags byte is a Malformed Packet in the specs. */
static mqtt_rc set_connect_flags(struct mqtt_connect *c, uint8_t f)
{
    c->flags = f;
    c->clean_start = f & 0x02;
    c->has_will = f & 0x04;
    c->will_qos = (f >> 3) & 3;
    c->will_retain = f & 0x20;
    c->has_password = f & 0x40;
    c->has_username = f & 0x80;
    if ((f & 0x01) || c->will_qos == 3 || (!c->has_will && (f & 0x38)))
        return MQTT_MALFORMED;
    if (c->version < MQTT_V5 && c->has_password && !c->has_username)
        return MQTT_MALFORMED;
    return MQTT_OK;
}

static mqtt_rc get_will(struct rd *r, struct mqtt_connect *c)
{
    if (c->version == MQTT_V5)
        TRY(get_props(r, MQTT_PROPS_WILL, &c->will_props));
    TRY(get_utf8(r, &c->will_topic));
    /* The will is published to that topic, so it must be a topic name. */
    if (!mqtt_topic_name_valid(c->will_topic.p, c->will_topic.len))
        return MQTT_PROTOCOL_ERROR;
    return get_bin(r, &c->will_payload);
}

static mqtt_rc dec_connect(struct rd *r, struct mqtt_connect *c)
{
    uint8_t f;

    TRY(get_protocol(r, c));
    TRY(get_u8(r, &f));
    TRY(set_connect_flags(c, f));
    TRY(get_u16(r, &c->keepalive));
    if (c->version == MQTT_V5)
        TRY(get_props(r, MQTT_CONNECT, &c->props));
    TRY(get_utf8(r, &c->client_id));
    if (c->has_will)
        TRY(get_will(r, c));
    if (c->has_username)
        TRY(get_utf8(r, &c->username));
    if (c->has_password)
        TRY(get_bin(r, &c->password));
    return end(r);
}

static mqtt_rc dec_connack(struct rd *r, struct mqtt_connack *c, uint8_t version)
{
    uint8_t f;

    TRY(get_u8(r, &f));
    if (f & 0xFE)
        return MQTT_MALFORMED; /* reserved acknowledge flags */
    c->session_present = f;
    TRY(get_u8(r, &c->rc));
    if (version >= MQTT_V5)
        TRY(get_props(r, MQTT_CONNACK, &c->props));
    TRY(end(r));
    /* A refused connection has no session to be present. */
    if (!mqtt_reason_valid(MQTT_CONNACK, version, c->rc) || (c->rc && c->session_present))
        return MQTT_PROTOCOL_ERROR;
    return MQTT_OK;
}

/* ---- PUBLISH and its acknowledgements ----------------------------------- */

static mqtt_rc dec_publish(struct rd *r, struct mqtt_packet *pkt, uint8_t version,
                           bool from_client)
{
    struct mqtt_publish *p = &pkt->publish;

    p->qos = (pkt->flags >> 1) & 3;
    p->dup = pkt->flags & 0x08;
    p->retain = pkt->flags & 0x01;
    TRY(get_utf8(r, &p->topic));
    if (memchr(p->topic.p, '+', p->topic.len) || memchr(p->topic.p, '#', p->topic.len))
        return MQTT_PROTOCOL_ERROR;
    if (p->qos)
        TRY(get_id(r, &p->id));
    if (version >= MQTT_V5)
        TRY(get_props(r, MQTT_PUBLISH, &p->props));
    /* An empty topic means "the topic this alias stands for" (v5 only). */
    if (p->topic.len == 0 && !(p->props.has & 1u << MQTT_PROPBIT_TOPIC_ALIAS))
        return MQTT_PROTOCOL_ERROR;
    /* Subscription identifiers are the server's to add. */
    if (from_client && (p->props.has & 1u << MQTT_PROPBIT_SUBSCRIPTION_ID))
        return MQTT_PROTOCOL_ERROR;
    p->payload.p = r->p;
    p->payload.len = left(r);
    return MQTT_OK;
}

static mqtt_rc dec_ack(struct rd *r, uint8_t type, struct mqtt_ack *a, uint8_t version)
{
    TRY(get_id(r, &a->id));
    if (version < MQTT_V5)
        return end(r);
    return get_tail(r, type, &a->rc, &a->form, &a->props);
}

/* ---- SUBSCRIBE, UNSUBSCRIBE and their acknowledgements ------------------ */

static mqtt_rc check_filter(mqtt_str f)
{
    if (!mqtt_utf8_valid(f.p, f.len))
        return MQTT_MALFORMED;
    return mqtt_topic_filter_valid(f.p, f.len) ? MQTT_OK : MQTT_PROTOCOL_ERROR;
}

/* 3.1.1 calls any bad options byte malformed; v5 only its reserved bits,
 * QoS 3 and retain handling 3 being Protocol Errors. */
static mqtt_rc check_options(uint8_t o, uint8_t version)
{
    if (version < MQTT_V5)
        return (o & 0xFC) || (o & 3) == 3 ? MQTT_MALFORMED : MQTT_OK;
    if (o & 0xC0)
        return MQTT_MALFORMED;
    return (o & 3) == 3 || (o >> 4 & 3) == 3 ? MQTT_PROTOCOL_ERROR : MQTT_OK;
}

/* v5 shared subscriptions (section 4.8.2): "$share/" name "/" filter, the
 * name non-empty and wildcard-free, the filter non-empty; No Local cannot
 * apply to them [MQTT-3.8.3-4].  Before v5 "$share" is an ordinary level. */
static mqtt_rc check_shared(mqtt_str f, bool no_local)
{
    static const char prefix[] = "$share/";
    const uint32_t plen = sizeof prefix - 1;

    if (f.len < plen || memcmp(f.p, prefix, plen) != 0)
        return MQTT_OK;
    const uint8_t *name = f.p + plen;
    const uint8_t *slash = memchr(name, '/', f.len - plen);
    size_t nlen = slash ? (size_t)(slash - name) : 0;
    if (nlen == 0 || slash + 1 == f.p + f.len || memchr(name, '+', nlen) ||
        memchr(name, '#', nlen) || no_local)
        return MQTT_PROTOCOL_ERROR;
    return MQTT_OK;
}

/* Walk the list with the public iterators: if they stop short of the end,
 * an entry overran the packet. */
static mqtt_rc check_list(struct mqtt_subscribe *s, uint8_t type, uint8_t version)
{
    uint32_t off = 0;
    mqtt_str f;
    uint8_t o = 0;

    while (type == MQTT_SUBSCRIBE ? mqtt_sub_next(s, &off, &f, &o)
                                  : mqtt_unsub_next(s, &off, &f)) {
        TRY(check_filter(f));
        if (type == MQTT_SUBSCRIBE)
            TRY(check_options(o, version));
        if (version >= MQTT_V5)
            TRY(check_shared(f, o & 0x04));
        s->count++;
    }
    if (off != s->list_len)
        return MQTT_MALFORMED;
    return s->count ? MQTT_OK : MQTT_PROTOCOL_ERROR;
}

static mqtt_rc dec_subscribe(struct rd *r, uint8_t type, struct mqtt_subscribe *s,
                             uint8_t version)
{
    TRY(get_id(r, &s->id));
    if (version >= MQTT_V5)
        TRY(get_props(r, type, &s->props));
    s->list = r->p;
    s->list_len = left(r);
    return check_list(s, type, version);
}

static mqtt_rc dec_suback(struct rd *r, uint8_t type, struct mqtt_suback *s, uint8_t version)
{
    TRY(get_id(r, &s->id));
    if (version < MQTT_V5 && type == MQTT_UNSUBACK)
        return end(r); /* 3.x UNSUBACK carries no codes */
    if (version >= MQTT_V5)
        TRY(get_props(r, type, &s->props));
    s->codes = r->p;
    s->count = left(r);
    if (s->count == 0)
        return MQTT_PROTOCOL_ERROR; /* one code per filter, and there is one */
    for (uint32_t i = 0; i < s->count; i++)
        if (!mqtt_reason_valid(type, version, s->codes[i]))
            return MQTT_PROTOCOL_ERROR;
    return MQTT_OK;
}

/* ---- DISCONNECT, AUTH -------------------------------------------------- */

static mqtt_rc dec_disconnect(struct rd *r, uint8_t type, struct mqtt_disconnect *d,
                              uint8_t version, bool from_client)
{
    if (version < MQTT_V5)
        return end(r);
    TRY(get_tail(r, type, &d->rc, &d->form, &d->props));
    /* Only the client decides how long its session outlives the connection. */
    if (!from_client && (d->props.has & 1u << MQTT_PROPBIT_SESSION_EXPIRY))
        return MQTT_PROTOCOL_ERROR;
    return MQTT_OK;
}

/* ---- fixed header ------------------------------------------------------ */

/* Who may send what (3.1.1 / 5.0 section 2.1.2).  Servers send DISCONNECT
 * only from v5 on, and AUTH exists only in v5. */
static mqtt_rc check_type(uint8_t type, uint8_t version, bool from_client)
{
    static const uint16_t both = T(PUBLISH) | ACKS | T(DISCONNECT) | T(AUTH);
    static const uint16_t client = both | T(CONNECT) | T(SUBSCRIBE) | T(UNSUBSCRIBE) | T(PINGREQ);
    static const uint16_t server = both | T(CONNACK) | T(SUBACK) | T(UNSUBACK) | T(PINGRESP);

    if (type == 0)
        return MQTT_MALFORMED; /* reserved packet type */
    if (!((from_client ? client : server) & 1u << type))
        return MQTT_PROTOCOL_ERROR;
    if (version < MQTT_V5 && (type == MQTT_AUTH || (type == MQTT_DISCONNECT && !from_client)))
        return MQTT_PROTOCOL_ERROR;
    return MQTT_OK;
}

static mqtt_rc check_flags(uint8_t type, uint8_t flags)
{
    if (type == MQTT_PUBLISH) {
        uint8_t qos = (flags >> 1) & 3;
        return qos == 3 || (qos == 0 && (flags & 0x08)) ? MQTT_MALFORMED : MQTT_OK;
    }
    bool two = type == MQTT_PUBREL || type == MQTT_SUBSCRIBE || type == MQTT_UNSUBSCRIBE;
    return flags == (two ? 2 : 0) ? MQTT_OK : MQTT_MALFORMED;
}

static mqtt_rc dec_body(struct rd *r, struct mqtt_packet *pkt, uint8_t version, bool from_client)
{
    switch (pkt->type) {
    case MQTT_CONNECT:
        return dec_connect(r, &pkt->connect);
    case MQTT_CONNACK:
        return dec_connack(r, &pkt->connack, version);
    case MQTT_PUBLISH:
        return dec_publish(r, pkt, version, from_client);
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return dec_ack(r, pkt->type, &pkt->ack, version);
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        return dec_subscribe(r, pkt->type, &pkt->subscribe, version);
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        return dec_suback(r, pkt->type, &pkt->suback, version);
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        return dec_disconnect(r, pkt->type, &pkt->disconnect, version, from_client);
    }
    return end(r); /* PINGREQ, PINGRESP */
}

mqtt_rc mqtt_decode(const uint8_t *buf, size_t total, uint8_t version, bool from_client,
                    struct mqtt_packet *out)
{
    uint32_t rl, n;

    memset(out, 0, sizeof *out);
    if (total < 2 || mqtt_varint_get(buf + 1, total - 1, &rl, &n) != MQTT_OK ||
        total != 1 + (size_t)n + rl)
        return MQTT_MALFORMED;
    out->type = buf[0] >> 4;
    out->flags = buf[0] & 0x0F;
    TRY(check_type(out->type, version, from_client));
    TRY(check_flags(out->type, out->flags));
    struct rd r = {buf + 1 + n, buf + total};
    return dec_body(&r, out, version, from_client);
}
