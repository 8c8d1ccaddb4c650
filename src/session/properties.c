/*
 * MQTT 5 properties in the handler API (mgate.h): mgate_properties decodes
 * the property block of the packet behind the request being judged on the
 * first call (nothing for handlers that never ask), into memory from
 * mgate_session_alloc cached in the packet's holder; the user-property
 * helpers; and, at forwarding, a PUBLISH whose user properties, content
 * type or response topic a handler changed gets its new block (the rest of
 * the block as it came: mqtt_props_edit).
 */
#include <string.h>

#include "core/util.h"
#include "session/internal.h"
#include "session/mount.h"

/* The decoded properties and what is needed to tell whether a handler
 * changed them: the block as decoded (orig_*), never shown to handlers. */
struct session_props {
    struct mgate_properties pub; /* what mgate_properties returns */
    uint8_t kind;                /* enum ask_kind it was decoded for (a CONNECT, then its will) */
    bool orig_has_ct, orig_has_rt;
    mqtt_str orig_ct, orig_rt;
    struct mqtt_user_prop *orig_user;
    uint32_t orig_user_count;
    uint32_t user_cap; /* room in pub.user while it is still our array (own_user) */
    struct mgate_user_property *own_user;
};

static struct session_props *box_of(struct mgate_properties *p) { return container_of(p, struct session_props, pub); }

/* The packet's block the request stands for. */
static const mqtt_props *raw_props(const struct held *h, uint8_t kind)
{
    switch (kind) {
    case ASK_CONNECT: return &h->pkt.connect.props;
    case ASK_WILL: return &h->pkt.connect.will_props;
    default: return h->type == MQTT_PUBLISH ? &h->pkt.publish.props : &h->pkt.subscribe.props;
    }
}

static void fill_public(struct mgate_properties *p, const struct mqtt_prop_values *v)
{
#define HAS(id) MQTT_PROP_HAS(v, MQTT_PROP_##id)
    *p = (struct mgate_properties){
        .user_count = v->user_count,
        .has_payload_format = HAS(PAYLOAD_FORMAT),
        .has_message_expiry = HAS(MESSAGE_EXPIRY),
        .has_content_type = HAS(CONTENT_TYPE),
        .has_response_topic = HAS(RESPONSE_TOPIC),
        .has_correlation_data = HAS(CORRELATION_DATA),
        .payload_format = v->payload_format,
        .message_expiry = v->message_expiry,
        .content_type = to_bytes(v->content_type),
        .response_topic = to_bytes(v->response_topic),
        .correlation_data = to_bytes(v->correlation_data),
        .subscription_ids = v->sub_ids,
        .subscription_id_count = v->sub_id_count,
        .has_will_delay = HAS(WILL_DELAY),
        .will_delay = v->will_delay,
        .has_session_expiry = HAS(SESSION_EXPIRY),
        .has_auth_method = HAS(AUTH_METHOD),
        .has_auth_data = HAS(AUTH_DATA),
        .has_receive_maximum = HAS(RECEIVE_MAX),
        .has_maximum_packet_size = HAS(MAX_PACKET_SIZE),
        .has_topic_alias_maximum = HAS(TOPIC_ALIAS_MAX),
        .session_expiry = v->session_expiry,
        .maximum_packet_size = v->max_packet_size,
        .receive_maximum = v->receive_max,
        .topic_alias_maximum = v->topic_alias_max,
        .auth_method = to_bytes(v->auth_method),
        .auth_data = to_bytes(v->auth_data),
    };
#undef HAS
}

/* One allocation: the box, the user properties twice (as decoded, and the
 * handler's copy), the subscription identifiers. */
static struct session_props *decode(struct mgate_session *s, const mqtt_props *raw, uint8_t kind)
{
    struct mqtt_prop_values v;
    if (!mqtt_prop_values(raw->raw, raw->raw_len, &v, NULL, 0, NULL, 0))
        return NULL; /* never for a block mqtt_decode accepted */
    if (v.user_count > MGATE_MAX_USER_PROPERTIES) { /* 5 bytes each on the wire, 64 here */
        session_log(s, LOGL_INFO, "%u user properties: more than a handler is shown (%u)", v.user_count,
                    MGATE_MAX_USER_PROPERTIES);
        return NULL;
    }
    size_t users = v.user_count, ids = v.sub_id_count;
    size_t size = sizeof(struct session_props) + users * (sizeof(struct mqtt_user_prop) +
                                                          sizeof(struct mgate_user_property)) +
                  ids * sizeof(uint32_t);
    struct session_props *b = mgate_session_alloc(s, size);
    if (!b)
        return NULL;
    struct mqtt_user_prop *orig = (struct mqtt_user_prop *)(b + 1);
    struct mgate_user_property *user = (struct mgate_user_property *)(orig + users);
    uint32_t *sub_ids = (uint32_t *)(user + users);
    mqtt_prop_values(raw->raw, raw->raw_len, &v, orig, (uint32_t)users, sub_ids, (uint32_t)ids);
    fill_public(&b->pub, &v);
    for (size_t i = 0; i < users; i++)
        user[i] = (struct mgate_user_property){to_bytes(orig[i].name), to_bytes(orig[i].value)};
    b->pub.user = user;
    b->kind = kind;
    b->orig_has_ct = b->pub.has_content_type;
    b->orig_has_rt = b->pub.has_response_topic;
    b->orig_ct = v.content_type;
    b->orig_rt = v.response_topic;
    b->orig_user = orig;
    b->orig_user_count = v.user_count;
    b->own_user = user;
    b->user_cap = v.user_count;
    return b;
}

struct mgate_properties *mgate_properties(mgate_session *s, const void *req)
{
    struct ask *a = verdict_find(s, req);
    /* HTTP and CoAP requests have asks of their own, with no MQTT packet */
    if (!a || s->version != MQTT_V5 || !held_owns(a))
        return NULL;
    struct held *h = container_of(a, struct held, ask);
    if (h->props && h->props->kind == a->kind)
        return &h->props->pub;
    struct session_props *b = decode(s, raw_props(h, a->kind), a->kind);
    if (!b)
        return NULL;
    h->props = b;
    return &b->pub;
}

/* ---- user-property helpers ------------------------------------------- */

static bool same_name(mgate_bytes a, mgate_bytes b) { return a.len == b.len && (!a.len || !memcmp(a.p, b.p, a.len)); }

/* Room for one more in p->user: our own array grows by doubling; an array
 * the handler set is copied into a new one of ours. */
static int user_room(mgate_session *s, struct mgate_properties *p)
{
    struct session_props *b = box_of(p);
    if (p->user == b->own_user && p->user_count < b->user_cap)
        return 0;
    uint32_t cap = p->user_count < 4 ? 8 : p->user_count * 2;
    struct mgate_user_property *n = mgate_session_alloc(s, cap * sizeof(*n));
    if (!n)
        return -1;
    if (p->user_count)
        memcpy(n, p->user, p->user_count * sizeof(*n));
    p->user = b->own_user = n;
    b->user_cap = cap;
    return 0;
}

int mgate_user_property_add(mgate_session *s, struct mgate_properties *p, mgate_bytes name, mgate_bytes value)
{
    if (user_room(s, p) < 0)
        return -1;
    p->user[p->user_count++] = (struct mgate_user_property){name, value};
    return 0;
}

/* Remove those named `name` from index `from` on, keeping the order. */
static uint32_t remove_from(struct mgate_properties *p, uint32_t from, mgate_bytes name)
{
    uint32_t w = from;
    for (uint32_t i = from; i < p->user_count; i++)
        if (!same_name(p->user[i].name, name))
            p->user[w++] = p->user[i];
    uint32_t removed = p->user_count - w;
    p->user_count = w;
    return removed;
}

/* The first one named `name` takes the value (keeping its place), the
 * others go. */
int mgate_user_property_set(mgate_session *s, struct mgate_properties *p, mgate_bytes name, mgate_bytes value)
{
    for (uint32_t i = 0; i < p->user_count; i++) {
        if (!same_name(p->user[i].name, name))
            continue;
        p->user[i].value = value;
        remove_from(p, i + 1, name);
        return 0;
    }
    return mgate_user_property_add(s, p, name, value);
}

uint32_t mgate_user_property_remove(struct mgate_properties *p, mgate_bytes name) { return remove_from(p, 0, name); }

/* ---- a held packet's bytes moving ------------------------------------ */

static void move_view(const uint8_t **p, uint32_t *len, const uint8_t *from, uint32_t flen, const uint8_t *to)
{
    if (*p >= from && *p < from + flen) {
        *p = to ? to + (*p - from) : (const uint8_t *)"";
        if (!to)
            *len = 0;
    }
}
#define MOVE(b) move_view(&(b).p, &(b).len, from, len, to)

void session_props_rebase(struct held *h, const uint8_t *from, uint32_t len, const uint8_t *to)
{
    struct session_props *b = h->props;
    struct mgate_properties *p = &b->pub;
    MOVE(p->content_type);
    MOVE(p->response_topic);
    MOVE(p->correlation_data);
    MOVE(p->auth_method);
    MOVE(p->auth_data);
    MOVE(b->orig_ct);
    MOVE(b->orig_rt);
    for (uint32_t i = 0; i < p->user_count; i++) {
        MOVE(p->user[i].name);
        MOVE(p->user[i].value);
    }
    for (uint32_t i = 0; i < b->orig_user_count; i++) {
        MOVE(b->orig_user[i].name);
        MOVE(b->orig_user[i].value);
    }
}

/* ---- a PUBLISH's properties at forwarding ----------------------------- */

/* Compared by identity, as every rewrite is: a handler that changed
 * nothing leaves the packet byte for byte. */
static bool props_changed(const struct session_props *b)
{
    const struct mgate_properties *p = &b->pub;
    if (p->has_content_type != b->orig_has_ct || p->has_response_topic != b->orig_has_rt ||
        p->user_count != b->orig_user_count)
        return true;
    if ((p->has_content_type && !bytes_same(p->content_type, b->orig_ct)) ||
        (p->has_response_topic && !bytes_same(p->response_topic, b->orig_rt)))
        return true;
    for (uint32_t i = 0; i < p->user_count; i++)
        if (!bytes_same(p->user[i].name, b->orig_user[i].name) || !bytes_same(p->user[i].value, b->orig_user[i].value))
            return true;
    return false;
}

/* props->raw as edited, in memory from mgate_session_alloc: outside the
 * packet's bytes, so publish_forward sees it changed.  0, -1 out of memory,
 * PASS_DROPPED for a value the protocol cannot carry. */
static int props_edit(struct mgate_session *s, mqtt_props *props, const struct mqtt_prop_edit *e)
{
    bool bad;
    size_t need = mqtt_props_edit(props->raw, props->raw_len, e, NULL, 0, &bad);
    if (bad)
        return PASS_DROPPED;
    uint8_t *out = mgate_session_alloc(s, need ? need : 1);
    if (!out)
        return -1;
    mqtt_props_edit(props->raw, props->raw_len, e, out, need, &bad);
    props->raw = out;
    props->raw_len = (uint32_t)need;
    return 0;
}

int held_props_apply_slow(struct mgate_session *s, struct held *h)
{
    const struct session_props *b = h->props;
    if ((b->kind != ASK_PUBLISH && b->kind != ASK_SUBSCRIBE) || h->type != MQTT_PUBLISH || !props_changed(b))
        return 0; /* CONNECT, will and SUBSCRIBE properties are read-only */
    const struct mgate_properties *p = &b->pub;
    struct mqtt_user_prop *user = p->user_count ? mgate_session_alloc(s, p->user_count * sizeof(*user)) : NULL;
    if (p->user_count && !user)
        return -1;
    for (uint32_t i = 0; i < p->user_count; i++)
        user[i] = (struct mqtt_user_prop){to_str(p->user[i].name), to_str(p->user[i].value)};
    struct mqtt_prop_edit e = {
        .user = user,
        .user_count = p->user_count,
        .has_content_type = p->has_content_type,
        .has_response_topic = p->has_response_topic,
        .content_type = to_str(p->content_type),
        .response_topic = to_str(p->response_topic),
    };
    return props_edit(s, &h->pkt.publish.props, &e);
}

/* ---- the Response Topic of a mounted session -------------------------- */

int session_props_mount(struct mgate_session *s, mqtt_props *props, int dir)
{
    const uint8_t *v;
    if (!s->mount || !props->raw_len || !mqtt_props_find(props->raw, props->raw_len, MQTT_PROP_RESPONSE_TOPIC, &v))
        return 0;
    mgate_bytes rt = {v + 2, (uint32_t)v[0] << 8 | v[1]}, to;
    if (dir == MGATE_UP) {
        uint8_t *p = mount_fits(s->mount, rt) ? mgate_session_alloc(s, s->mount->len + rt.len) : NULL;
        if (!p)
            return mount_fits(s->mount, rt) ? -1 : PASS_DROPPED;
        mount_put_topic(s->mount, rt, p);
        to = (mgate_bytes){p, s->mount->len + rt.len};
    } else if (!mount_strip(s->mount, rt, &to)) {
        return 0; /* not the tenant's: it names a topic the client cannot reach anyway */
    }
    struct mqtt_prop_edit e = {.has_response_topic = true, .response_topic = to_str(to), .response_topic_only = true};
    return props_edit(s, props, &e);
}
