/* v5 property blocks as values (mqtt_prop_values) and a PUBLISH's block
 * with some of them replaced (mqtt_props_edit): what the handler API shows
 * and lets a handler change, kept pure here so it is tested on its own. */
#include <string.h>

#include "mqtt/mqtt.h"

static uint32_t get_be(const uint8_t *p, unsigned n)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static mqtt_str get_str(const uint8_t *p) { return (mqtt_str){p + 2, get_be(p, 2)}; }

static void add_user(struct mqtt_prop_values *out, const uint8_t *v, uint32_t cap)
{
    mqtt_str name = get_str(v);
    if (out->user_count < cap)
        out->user[out->user_count] = (struct mqtt_user_prop){name, get_str(v + 2 + name.len)};
    out->user_count++;
}

static void add_sub_id(struct mqtt_prop_values *out, const uint8_t *v, uint32_t left, uint32_t cap)
{
    uint32_t id = 0, used;
    if (mqtt_varint_get(v, left, &id, &used) == MQTT_OK && out->sub_id_count < cap)
        out->sub_ids[out->sub_id_count] = id;
    out->sub_id_count++;
}

/* One property's value (v, after its identifier; its size was checked). */
static void take(struct mqtt_prop_values *out, uint8_t id, const uint8_t *v, uint32_t left,
                 uint32_t user_cap, uint32_t ids_cap)
{
    switch (id) {
    case MQTT_PROP_PAYLOAD_FORMAT: out->payload_format = v[0]; break;
    case MQTT_PROP_MESSAGE_EXPIRY: out->message_expiry = get_be(v, 4); break;
    case MQTT_PROP_WILL_DELAY: out->will_delay = get_be(v, 4); break;
    case MQTT_PROP_SESSION_EXPIRY: out->session_expiry = get_be(v, 4); break;
    case MQTT_PROP_MAX_PACKET_SIZE: out->max_packet_size = get_be(v, 4); break;
    case MQTT_PROP_RECEIVE_MAX: out->receive_max = (uint16_t)get_be(v, 2); break;
    case MQTT_PROP_TOPIC_ALIAS_MAX: out->topic_alias_max = (uint16_t)get_be(v, 2); break;
    case MQTT_PROP_CONTENT_TYPE: out->content_type = get_str(v); break;
    case MQTT_PROP_RESPONSE_TOPIC: out->response_topic = get_str(v); break;
    case MQTT_PROP_CORRELATION_DATA: out->correlation_data = get_str(v); break;
    case MQTT_PROP_AUTH_METHOD: out->auth_method = get_str(v); break;
    case MQTT_PROP_AUTH_DATA: out->auth_data = get_str(v); break;
    case MQTT_PROP_USER_PROPERTY: add_user(out, v, user_cap); break;
    case MQTT_PROP_SUBSCRIPTION_ID: add_sub_id(out, v, left, ids_cap); break;
    default: break; /* the others (CONNACK's, a topic alias) are no handler's business */
    }
}

bool mqtt_prop_values(const uint8_t *raw, uint32_t raw_len, struct mqtt_prop_values *out,
                      struct mqtt_user_prop *user, uint32_t user_cap, uint32_t *ids, uint32_t ids_cap)
{
    *out = (struct mqtt_prop_values){.user = user, .sub_ids = ids};
    for (uint32_t off = 0, n; off < raw_len; off += n) {
        n = mqtt_prop_size(raw + off, raw_len - off);
        if (n == 0)
            return false;
        uint8_t id = raw[off];
        out->has |= 1ull << id;
        take(out, id, raw + off + 1, n - 1, user_cap, ids_cap);
    }
    return true;
}

/* ---- editing ------------------------------------------------------------ */

struct pw {
    uint8_t *p; /* NULL while sizing */
    size_t n;
    bool bad;
};

static void pw_put(struct pw *w, const void *src, size_t len)
{
    if (w->p && len)
        memcpy(w->p + w->n, src, len);
    w->n += len;
}

static void pw_str(struct pw *w, mqtt_str s)
{
    if (s.len > 0xFFFF || (s.len && !s.p)) {
        w->bad = true;
        return;
    }
    uint8_t b[2] = {(uint8_t)(s.len >> 8), (uint8_t)s.len};
    pw_put(w, b, 2);
    pw_put(w, s.p, s.len);
}

static void pw_prop_str(struct pw *w, uint8_t id, mqtt_str s)
{
    pw_put(w, &id, 1);
    pw_str(w, s);
}

static void pw_users(struct pw *w, const struct mqtt_prop_edit *e)
{
    static const uint8_t id = MQTT_PROP_USER_PROPERTY;
    for (uint32_t i = 0; i < e->user_count; i++) {
        pw_put(w, &id, 1);
        pw_str(w, e->user[i].name);
        pw_str(w, e->user[i].value);
    }
}

/* Which of the three replaced kinds were written already. */
enum { DONE_USER = 1, DONE_CT = 2, DONE_RT = 4 };

static void pw_replaced(struct pw *w, const struct mqtt_prop_edit *e, uint8_t id, unsigned *done)
{
    if (id == MQTT_PROP_USER_PROPERTY && !(*done & DONE_USER)) {
        *done |= DONE_USER;
        pw_users(w, e);
    } else if (id == MQTT_PROP_CONTENT_TYPE && !(*done & DONE_CT)) {
        *done |= DONE_CT;
        if (e->has_content_type)
            pw_prop_str(w, id, e->content_type);
    } else if (id == MQTT_PROP_RESPONSE_TOPIC && !(*done & DONE_RT)) {
        *done |= DONE_RT;
        if (e->has_response_topic)
            pw_prop_str(w, id, e->response_topic);
    }
}

static void edit_into(struct pw *w, const uint8_t *raw, uint32_t raw_len, const struct mqtt_prop_edit *e)
{
    unsigned done = 0;
    for (uint32_t off = 0, n; off < raw_len; off += n) {
        n = mqtt_prop_size(raw + off, raw_len - off);
        if (n == 0) { /* never in a block mqtt_decode accepted */
            w->bad = true;
            return;
        }
        uint8_t id = raw[off];
        bool others = !e->response_topic_only && (id == MQTT_PROP_USER_PROPERTY || id == MQTT_PROP_CONTENT_TYPE);
        if (others || id == MQTT_PROP_RESPONSE_TOPIC)
            pw_replaced(w, e, id, &done);
        else
            pw_put(w, raw + off, n);
    }
    if (!e->response_topic_only)
        pw_replaced(w, e, MQTT_PROP_CONTENT_TYPE, &done);
    pw_replaced(w, e, MQTT_PROP_RESPONSE_TOPIC, &done);
    if (!e->response_topic_only)
        pw_replaced(w, e, MQTT_PROP_USER_PROPERTY, &done);
}

size_t mqtt_props_edit(const uint8_t *raw, uint32_t raw_len, const struct mqtt_prop_edit *e, uint8_t *out,
                       size_t cap, bool *bad)
{
    struct pw w = {0};
    edit_into(&w, raw, raw_len, e);
    /* a block is at most a varint's worth: 268435455 bytes */
    *bad = w.bad || w.n > 268435455u;
    if (*bad)
        return 0;
    if (out && w.n <= cap) {
        size_t need = w.n;
        w = (struct pw){.p = out};
        edit_into(&w, raw, raw_len, e);
        return need;
    }
    return w.n;
}
