/*
 * Encoding packets from the structs mqtt_decode fills.  Each body is written
 * by one function run twice: first with no output to size it (so nothing is
 * written when the caller's buffer is too small), then for real.
 */
#include <string.h>

#include "mqtt/mqtt.h"

struct wr {
    uint8_t *p; /* NULL while sizing */
    size_t n;
    bool bad; /* something has no encoding; the packet cannot be written */
};

static void put(struct wr *w, const void *src, size_t len)
{
    if (w->p && len)
        memcpy(w->p + w->n, src, len);
    w->n += len;
}

static void put_u8(struct wr *w, uint8_t v) { put(w, &v, 1); }

static void put_u16(struct wr *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(w, b, 2);
}

static void put_str(struct wr *w, mqtt_str s)
{
    if (s.len > 0xFFFF || (s.len && !s.p)) {
        w->bad = true;
        return;
    }
    put_u16(w, (uint16_t)s.len);
    put(w, s.p, s.len);
}

static void put_props(struct wr *w, const mqtt_props *props)
{
    uint8_t b[4];
    uint32_t n = mqtt_varint_put(b, props->raw_len);

    if (n == 0 || (props->raw_len && !props->raw)) {
        w->bad = true;
        return;
    }
    put(w, b, n);
    put(w, props->raw, props->raw_len);
}

/* The optional v5 tail of acks, DISCONNECT and AUTH: at least the form the
 * struct asks for (what was decoded), at least what rc and props need. */
static void put_tail(struct wr *w, uint8_t rc, uint8_t form, const mqtt_props *props)
{
    uint8_t need = props->raw_len ? MQTT_FORM_FULL : rc ? MQTT_FORM_RC : MQTT_FORM_BARE;

    if (form < need)
        form = need;
    if (form >= MQTT_FORM_RC)
        put_u8(w, rc);
    if (form >= MQTT_FORM_FULL)
        put_props(w, props);
}

static uint8_t connect_flags(const struct mqtt_connect *c)
{
    uint8_t f = (uint8_t)(c->clean_start << 1 | c->has_password << 6 | c->has_username << 7);

    if (c->has_will)
        f |= (uint8_t)(0x04 | (c->will_qos & 3) << 3 | c->will_retain << 5);
    return f;
}

static void enc_connect(struct wr *w, const struct mqtt_connect *c, uint8_t version)
{
    static const mqtt_str mqtt = {(const uint8_t *)"MQTT", 4};
    static const mqtt_str mqisdp = {(const uint8_t *)"MQIsdp", 6};
    uint8_t v = c->version ? c->version : version;

    if (v < MQTT_V31 || v > MQTT_V5) {
        w->bad = true;
        return;
    }
    put_str(w, v == MQTT_V31 ? mqisdp : mqtt);
    put_u8(w, v);
    put_u8(w, connect_flags(c));
    put_u16(w, c->keepalive);
    if (v == MQTT_V5)
        put_props(w, &c->props);
    put_str(w, c->client_id);
    if (c->has_will) {
        if (v == MQTT_V5)
            put_props(w, &c->will_props);
        put_str(w, c->will_topic);
        put_str(w, c->will_payload);
    }
    if (c->has_username)
        put_str(w, c->username);
    if (c->has_password)
        put_str(w, c->password);
}

static void enc_publish(struct wr *w, const struct mqtt_publish *p, bool v5)
{
    put_str(w, p->topic);
    if (p->qos)
        put_u16(w, p->id);
    if (v5)
        put_props(w, &p->props);
    if (p->payload.len && !p->payload.p)
        w->bad = true;
    else
        put(w, p->payload.p, p->payload.len);
}

static void enc_body(struct wr *w, const struct mqtt_packet *pkt, uint8_t version)
{
    bool v5 = version >= MQTT_V5;

    switch (pkt->type) {
    case MQTT_CONNECT:
        enc_connect(w, &pkt->connect, version);
        return;
    case MQTT_CONNACK:
        put_u8(w, pkt->connack.session_present);
        put_u8(w, pkt->connack.rc);
        if (v5)
            put_props(w, &pkt->connack.props);
        return;
    case MQTT_PUBLISH:
        enc_publish(w, &pkt->publish, v5);
        return;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        put_u16(w, pkt->ack.id);
        if (v5)
            put_tail(w, pkt->ack.rc, pkt->ack.form, &pkt->ack.props);
        return;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        put_u16(w, pkt->subscribe.id);
        if (v5)
            put_props(w, &pkt->subscribe.props);
        put(w, pkt->subscribe.list, pkt->subscribe.list_len);
        return;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        put_u16(w, pkt->suback.id);
        if (v5)
            put_props(w, &pkt->suback.props);
        if (v5 || pkt->type == MQTT_SUBACK) /* a 3.x UNSUBACK has no codes */
            put(w, pkt->suback.codes, pkt->suback.count);
        return;
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
        return;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        if (v5)
            put_tail(w, pkt->disconnect.rc, pkt->disconnect.form, &pkt->disconnect.props);
        else if (pkt->type == MQTT_AUTH)
            w->bad = true;
        return;
    }
    w->bad = true;
}

static uint8_t first_byte(const struct mqtt_packet *pkt)
{
    uint8_t flags = 0;

    if (pkt->type == MQTT_PUBLISH)
        flags = (uint8_t)(pkt->publish.dup << 3 | pkt->publish.qos << 1 | pkt->publish.retain);
    else if (pkt->type == MQTT_PUBREL || pkt->type == MQTT_SUBSCRIBE ||
             pkt->type == MQTT_UNSUBSCRIBE)
        flags = 2;
    return (uint8_t)(pkt->type << 4 | flags);
}

size_t mqtt_encode(const struct mqtt_packet *pkt, uint8_t version, uint8_t *out, size_t cap)
{
    struct wr w = {0};

    if (pkt->type == MQTT_PUBLISH && pkt->publish.qos > 2)
        return 0;
    enc_body(&w, pkt, version);
    uint32_t hlen = w.n <= UINT32_MAX ? mqtt_varint_size((uint32_t)w.n) : 0;
    if (w.bad || hlen == 0)
        return 0;
    size_t total = 1 + hlen + w.n;
    if (total > cap)
        return total;
    out[0] = first_byte(pkt);
    mqtt_varint_put(out + 1, (uint32_t)w.n);
    w = (struct wr){.p = out + 1 + hlen};
    enc_body(&w, pkt, version);
    return total;
}
