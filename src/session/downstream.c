/*
 * Broker -> client: the CONNACK (learn the broker's limits), PUBLISH
 * (checked with auth_subscribe on its topic, as the Go mGate does; a refused
 * one is acknowledged to the broker so its QoS flow completes), SUBACK
 * (merge back the filters we refused), PUBREL for flows we completed.
 */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "session/internal.h"

/* ---- refused QoS 2 identifiers --------------------------------------- */

static int idset_add(struct idset *set, uint16_t id)
{
    for (uint32_t i = 0; i < set->len; i++)
        if (set->ids[i] == id)
            return 0;
    if (set->len == set->cap) {
        uint32_t cap = set->cap ? set->cap * 2 : 8;
        if (cap > 65536)
            return -1;
        uint16_t *ids = realloc(set->ids, cap * sizeof(*ids));
        if (!ids)
            return -1;
        set->ids = ids;
        set->cap = cap;
    }
    set->ids[set->len++] = id;
    return 0;
}

static bool idset_take(struct idset *set, uint16_t id)
{
    for (uint32_t i = 0; i < set->len; i++) {
        if (set->ids[i] != id)
            continue;
        set->ids[i] = set->ids[--set->len];
        if (!set->len) {
            free(set->ids);
            *set = (struct idset){0};
        }
        return true;
    }
    return false;
}

/* ---- CONNACK ---------------------------------------------------------- */

static enum pkt_result down_connack(struct pass *ps, const uint8_t *raw, uint32_t len,
                                    const struct mqtt_connack *ca)
{
    struct mgate_session *s = ps->s;
    loop_timer_stop(s->loop, &s->timer); /* the CONNECT deadline */
    if (s->version == MQTT_V5) {
        if (ca->props.has & (1u << MQTT_PROPBIT_MAX_PACKET_SIZE))
            s->broker_max_packet = ca->props.max_packet_size;
        if (ca->props.has & (1u << MQTT_PROPBIT_TOPIC_ALIAS_MAX))
            s->broker_alias_max = ca->props.topic_alias_max;
    }
    if (ca->rc != 0) {
        /* 3.1.1's codes 1-5 as their 5.0 reasons, so both count alike */
        static const uint8_t v5_of_v3[6] = {0, 0x84, 0x85, 0x88, 0x86, 0x87};
        uint8_t reason = s->version == MQTT_V5 || ca->rc > 5 ? ca->rc : v5_of_v3[ca->rc];
        METRIC_INC(session_metrics(s)->connect_refused[METRIC_BY_BROKER][reason]);
        pass_emit(ps, raw, len);
        session_close_as(s, CONN_END_POLICY, CONN_END_NORMAL, "the broker refused CONNECT");
        return PKT_CLOSE;
    }
    s->state = SESSION_OPEN;
    METRIC_INC(session_metrics(s)->connect_accepted);
    mgate_log(LOGL_DEBUG, s, "connected to the broker");
    /* The client's packets behind its CONNECT waited for this (nothing may
     * reach the client before its CONNACK): send it, then read them. */
    pass_emit(ps, raw, len); /* a client that is gone is told to the session by its conn */
    session_resume_reading(s);
    return PKT_HANDLED;
}

/* ---- PUBLISH ---------------------------------------------------------- */

static enum pkt_result complete_for_client(struct pass *ps, const struct mqtt_publish *pub);

/* A broker PUBLISH outside the session's mount point (a broker's quirk, or
 * a subscription made some other way): never the client's, nor shown to
 * its handlers; acknowledged to the broker as auth_subscribe's refusals are,
 * counted apart (mgate_mount_dropped_total). */
static enum pkt_result refuse_unmounted(struct pass *ps, struct held *h)
{
    struct mgate_session *s = ps->s;
    struct logline l;
    if (session_log_begin(s, &l, LOGL_WARN, "broker PUBLISH outside the mount point dropped")) {
        log_bytes(&l, "topic", h->resolved_topic.p, h->resolved_topic.len);
        log_end(&l);
    }
    METRIC_INC(session_metrics(s)->mount_dropped);
    enum pkt_result r = complete_for_client(ps, &h->pkt.publish);
    held_put(s, h);
    return r;
}

static enum pkt_result down_publish(struct pass *ps, const uint8_t *raw, uint32_t len,
                                    struct mqtt_packet *pkt)
{
    struct mgate_session *s = ps->s;
    struct held *h = held_begin(ps, pkt);
    if (!h)
        return PKT_CLOSE;
    int alias = publish_resolve_alias(ps, &h->pkt.publish, &h->resolved_topic);
    if (alias < 0) {
        held_put(s, h);
        if (alias == PUBLISH_ALIAS_NOMEM)
            return publish_oom(s);
        session_close_as(s, CONN_END_UPSTREAM, CONN_END_PROTOCOL, "broker used an unknown topic alias");
        return PKT_CLOSE;
    }
    h->one_filter.filter = to_bytes(h->resolved_topic);
    if (s->mount && !mount_strip(s->mount, h->one_filter.filter, &h->one_filter.filter))
        return refuse_unmounted(ps, h);
    /* the handlers see the response topic as the client will, too */
    if (s->mount && session_props_mount(s, &h->pkt.publish.props, MGATE_DOWN) != 0) {
        held_put(s, h);
        return publish_oom(s);
    }
    h->one_filter.qos = h->pkt.publish.qos;
    struct mgate_subscribe_req *req = &h->ask.req.subscribe;
    req->dir = MGATE_DOWN;
    req->filters = &h->one_filter;
    req->count = 1;
    return held_ask(ps, h, ASK_SUBSCRIBE, raw, len);
}

/* Not for this client (refused, or too large for it as the handlers left
 * it): complete the broker's QoS flow in its place. */
enum pkt_result down_publish_not_sent(struct pass *ps, const struct mqtt_publish *pub, const char *why)
{
    METRIC_INC(session_metrics(ps->s)->publish_refused[MGATE_DOWN]);
    session_log(ps->s, LOGL_DEBUG, "broker PUBLISH %s", why);
    return complete_for_client(ps, pub);
}

/* Acknowledged to the broker as the client would have. */
static enum pkt_result complete_for_client(struct pass *ps, const struct mqtt_publish *pub)
{
    struct mgate_session *s = ps->s;
    if (pub->qos == 1) {
        reply_ack(s->broker, MQTT_PUBACK, s->version, pub->id, 0);
    } else if (pub->qos == 2) {
        if (idset_add(&s->refused_qos2, pub->id) < 0) {
            session_close_as(s, CONN_END_INTERNAL, CONN_END_INTERNAL, "out of memory");
            return PKT_CLOSE;
        }
        reply_ack(s->broker, MQTT_PUBREC, s->version, pub->id, 0);
    }
    return PKT_REFUSED;
}

static enum pkt_result finish_publish(struct pass *ps, struct held *h, const uint8_t *raw, uint32_t len)
{
    struct mqtt_publish *pub = &h->pkt.publish;
    if (h->ask.verdict != MGATE_ALLOW || h->one_filter.denied)
        return down_publish_not_sent(ps, pub, "refused by auth_subscribe");
    int e = held_props_apply(ps->s, h);
    if (e == 0)
        return publish_forward(ps, raw, len, pub, h->resolved_topic, h->one_filter.filter, to_bytes(pub->payload));
    return e > 0 ? down_publish_not_sent(ps, pub, "dropped: its new properties cannot be encoded")
                 : publish_oom(ps->s);
}

/* ---- SUBACK ----------------------------------------------------------- */

static enum pkt_result down_suback(struct pass *ps, struct mqtt_packet *pkt)
{
    struct mgate_session *s = ps->s;
    struct suback_merge **pp = &s->merges, *m;
    while ((m = *pp) && m->id != pkt->suback.id)
        pp = &m->next;
    if (!m)
        return PKT_FORWARD;
    *pp = m->next;
    s->merge_count--;
    /* A client stopped at the bound goes on at once: what it sends next
     * carries our ACK to the broker, which releases the SUBACKs that Nagle
     * holds there (waiting for a batch would wait for a delayed ACK each). */
    session_resume_reading(s);
    uint32_t from = 0;
    for (uint32_t i = 0; i < m->count; i++)
        if (m->codes[i] == SUBACK_FROM_BROKER)
            m->codes[i] = from < pkt->suback.count ? pkt->suback.codes[from++] : 0x80;
    struct mqtt_packet np = *pkt;
    np.suback.codes = m->codes;
    np.suback.count = m->count;
    int rc = pass_emit_packet(ps, &np);
    free(m);
    if (rc < 0) {
        session_close_as(s, CONN_END_INTERNAL, CONN_END_INTERNAL, "out of memory");
        return PKT_CLOSE;
    }
    return PKT_HANDLED;
}

/* ---- dispatch --------------------------------------------------------- */

enum pkt_result down_finish(struct pass *ps, struct held *h, const uint8_t *raw, uint32_t len)
{
    return finish_publish(ps, h, raw, len);
}

enum pkt_result down_packet(struct pass *ps, const uint8_t *raw, uint32_t len, struct mqtt_packet *pkt)
{
    struct mgate_session *s = ps->s;
    if (s->state == SESSION_AWAIT_CONNACK) {
        if (pkt->type == MQTT_CONNACK)
            return down_connack(ps, raw, len, &pkt->connack);
        if (pkt->type == MQTT_AUTH && s->enhanced_auth)
            return PKT_FORWARD; /* the broker's challenge: the client answers with AUTH */
        session_close_as(s, CONN_END_UPSTREAM, CONN_END_PROTOCOL, "broker sent a packet before CONNACK");
        return PKT_CLOSE;
    }
    switch (pkt->type) {
    case MQTT_CONNACK:
        session_close_as(s, CONN_END_UPSTREAM, CONN_END_PROTOCOL, "broker sent a second CONNACK");
        return PKT_CLOSE;
    case MQTT_PUBLISH:
        return down_publish(ps, raw, len, pkt);
    case MQTT_PUBREL:
        if (!s->refused_qos2.len || !idset_take(&s->refused_qos2, pkt->ack.id))
            return PKT_FORWARD;
        reply_ack(s->broker, MQTT_PUBCOMP, s->version, pkt->ack.id, 0);
        return PKT_HANDLED;
    case MQTT_SUBACK:
        return s->merges ? down_suback(ps, pkt) : PKT_FORWARD;
    default:
        return PKT_FORWARD;
    }
}
