/*
 * PUBLISH in either direction: v5 topic alias resolution, and forwarding
 * that re-encodes only what changed while keeping the receiver's alias table
 * truthful.
 */
#include <stdlib.h>

#include "session/internal.h"

#define HAS_ALIAS(pub) ((pub)->props.has & (1u << MQTT_PROPBIT_TOPIC_ALIAS))

/* The session's alias maps, made the first time an alias is used; NULL
 * when out of memory (or, with make false, when none was ever used). */
static struct session_aliases *aliases(struct mgate_session *s, bool make)
{
    if (!s->aliases && make)
        s->aliases = calloc(1, sizeof(*s->aliases));
    return s->aliases;
}

int publish_resolve_alias(struct pass *ps, struct mqtt_publish *pub, mqtt_str *resolved)
{
    struct mgate_session *s = ps->s;
    *resolved = pub->topic;
    if (s->version != MQTT_V5 || !HAS_ALIAS(pub))
        return 0;
    uint16_t alias = pub->props.topic_alias;
    /* The receiver's advertised maximum bounds what the sender may use. */
    uint16_t max = ps->dir == MGATE_UP ? s->broker_alias_max : s->client_alias_max;
    if (alias == 0 || alias > max)
        return -1;
    struct session_aliases *al = aliases(s, pub->topic.len > 0);
    /* alias is valid here, so alias_set fails only for want of memory: not
     * the sender's fault, and not to be answered as a protocol error. */
    if (pub->topic.len)
        return al && alias_set(&al->in[ps->dir], alias, pub->topic.p, pub->topic.len) == 0 ? 0
                                                                                           : PUBLISH_ALIAS_NOMEM;
    const uint8_t *t;
    uint32_t tl;
    if (!al || !alias_get(&al->in[ps->dir], alias, &t, &tl))
        return -1;
    *resolved = (mqtt_str){t, tl};
    return 0;
}

enum pkt_result publish_oom(struct mgate_session *s)
{
    session_close_as(s, CONN_END_INTERNAL, CONN_END_INTERNAL, "out of memory");
    return PKT_CLOSE;
}

/* A property block a handler changed is outside the packet's bytes
 * (held_props_apply); an unchanged one is in them (v5 PUBLISH always has
 * one, maybe empty at the very end; 3.x none). */
static bool props_as_received(const struct mqtt_publish *pub, const uint8_t *raw, uint32_t len)
{
    return !pub->props.raw || (pub->props.raw >= raw && pub->props.raw <= raw + len);
}

enum pkt_result publish_forward(struct pass *ps, const uint8_t *raw, uint32_t len,
                                struct mqtt_publish *pub, mqtt_str resolved, mgate_bytes topic,
                                mgate_bytes payload)
{
    struct mgate_session *s = ps->s;
    /* A handler may also have changed the flags (retain, a QoS lowered:
     * upstream.c): the fixed header as received tells. */
    uint8_t flags = (uint8_t)((pub->dup ? 8u : 0u) | (unsigned)(pub->qos << 1) | (pub->retain ? 1u : 0u));
    bool same = bytes_same(topic, resolved) && bytes_same(payload, pub->payload) &&
                props_as_received(pub, raw, len) && (!raw || (raw[0] & 0x0Fu) == flags);
    bool aliased = s->version == MQTT_V5 && HAS_ALIAS(pub);
    struct session_aliases *al = aliased ? aliases(s, true) : NULL;
    if (aliased && !al)
        goto oom;
    struct alias_map *out = al ? &al->out[ps->dir] : NULL;
    uint16_t alias = aliased ? pub->props.topic_alias : 0;
    if (same) {
        if (!aliased)
            return PKT_FORWARD;
        if (pub->topic.len) {
            if (alias_set(out, alias, topic.p, topic.len) < 0)
                goto oom;
            return PKT_FORWARD;
        }
        if (alias_is(out, alias, topic.p, topic.len))
            return PKT_FORWARD;
    }
    /* Re-encode with the full topic: with an alias, that also (re)binds the
     * alias at the receiver to exactly this topic.  One the receiver already
     * has bound to it goes alone (a mounted topic keeps what aliases save). */
    bool bound = aliased && alias_is(out, alias, topic.p, topic.len);
    if (aliased && !bound && alias_set(out, alias, topic.p, topic.len) < 0)
        goto oom;
    struct mqtt_packet np = {.type = MQTT_PUBLISH};
    np.flags = flags;
    np.publish = *pub;
    np.publish.topic = bound ? (mqtt_str){NULL, 0} : to_str(topic);
    np.publish.payload = to_str(payload);
    int rc = pass_emit_packet(ps, &np);
    if (rc < 0)
        goto oom;
    if (rc > 0) {
        /* Not sent: the receiver was not told, so the alias means nothing we know. */
        if (aliased && !bound && alias_set(out, alias, (const uint8_t *)"", 0) < 0)
            goto oom;
        /* too large for the receiver as rewritten: it must not stay unanswered */
        return ps->dir == MGATE_UP ? up_publish_not_sent(ps, pub, rc)
                                   : down_publish_not_sent(ps, pub, rc == PASS_INVALID
                                                                        ? "dropped: not a valid PUBLISH once rewritten"
                                                                        : "dropped: too large for the client once rewritten");
    }
    return PKT_HANDLED;
oom:
    return publish_oom(s);
}
