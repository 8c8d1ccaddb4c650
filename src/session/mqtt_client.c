/*
 * The MQTT client of mqtt_client.h.  One allocation per client: the struct,
 * its request slots (max_inflight) and the identifiers of the broker's
 * QoS 2 messages that wait for their PUBREL.  Every end of the connection
 * comes through its on_close (a deferred call), which fails what waits and
 * tells the owner; an owner's close instead drops everything silently.
 */
#include "session/mqtt_client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "session/internal.h"

#define MQC_LINGER_MS 2000    /* a closing client's time to flush its DISCONNECT */
#define MQC_DEFAULT_INFLIGHT 16

enum mqc_state { MQC_CONNECTING, MQC_READY };

/* What a request slot waits for. */
enum slot_wait { W_FREE, W_SENT0, W_PUBACK, W_PUBREC, W_PUBCOMP, W_SUBACK, W_UNSUBACK };

struct slot {
    uint16_t id;
    uint8_t wait; /* enum slot_wait */
    mqc_done_fn done;
    void *arg;
};

struct mqtt_client {
    struct loop *loop;
    const struct session_params *p;
    struct mgate_session *s;
    struct conn *c; /* NULL once it ended (during on_close) */
    const struct mqtt_client_cbs *cbs;
    void *ctx;
    struct loop_timer timer; /* the CONNACK deadline, then keepalive */
    struct after linger;     /* after mqtt_client_close: the DISCONNECT's time to go (also at exit) */
    struct loop_defer defer; /* QoS 0 completions */
    uint8_t state;           /* enum mqc_state */
    uint8_t version;
    bool owner_gone; /* mqtt_client_close: no callback any more */
    bool ping_out;   /* a PINGREQ waits for its PINGRESP */
    bool why_set;
    bool held;       /* mqtt_client_hold: the owner takes no message now */
    uint8_t why, why_code; /* enum mqc_end, when found before the connection's end */
    uint16_t keepalive, next_id, max_inflight, inflight;
    uint16_t send_max; /* 5.0: the broker's Receive Maximum (QoS 1 and 2 PUBLISHes unacknowledged) */
    uint32_t connect_timeout_ms, ping_timeout_ms;
    uint64_t last_tx, ping_at;
    uint32_t qos2_count, qos2_cap; /* the broker's QoS 2 messages awaiting PUBREL */
    uint32_t skip_left;            /* bytes still to come of a PUBLISH too large to take */
    uint16_t *qos2;
    struct slot slots[];
};

static size_t on_data(struct conn *c, const uint8_t *data, size_t len);
static void on_drain(struct conn *c);
static void on_connected(struct conn *c);
static void on_close(struct conn *c, int err);
static const struct conn_cbs client_cbs = {on_data, on_drain, on_connected, on_close};
static const struct conn_cbs quiet_cbs = {NULL, NULL, NULL, NULL};

static void on_timer(struct loop *l, struct loop_timer *t);

/* ---- sending ------------------------------------------------------------------------ */

/* Encode and queue: 0, -1 when it cannot be encoded (nothing sent) or the
 * connection failed (its on_close follows). */
static int send_pkt(struct mqtt_client *mc, const struct mqtt_packet *pkt)
{
    uint8_t stack[512];
    size_t n = mqtt_encode(pkt, mc->version, stack, sizeof(stack));
    if (!n)
        return -1;
    uint8_t *b = n <= sizeof(stack) ? stack : malloc(n);
    if (!b)
        return -1;
    if (b != stack)
        mqtt_encode(pkt, mc->version, b, n);
    int rc = conn_write(mc->c, b, n);
    if (b != stack)
        free(b);
    mc->last_tx = loop_now(mc->loop);
    return rc;
}

static void send_ack(struct mqtt_client *mc, uint8_t type, uint16_t id)
{
    reply_ack(mc->c, type, mc->version, id, 0);
    mc->last_tx = loop_now(mc->loop);
}

/* ---- the end ------------------------------------------------------------------------ */

static void client_free(struct mqtt_client *mc)
{
    loop_timer_stop(mc->loop, &mc->timer);
    session_after_stop(mc->loop, &mc->linger);
    loop_defer_cancel(mc->loop, &mc->defer);
    free(mc);
}

/* End the connection for why: on_close follows from a deferred call. */
static void fail_with(struct mqtt_client *mc, enum mqc_end why, uint8_t code, int err)
{
    if (!mc->why_set) {
        mc->why_set = true;
        mc->why = (uint8_t)why;
        mc->why_code = code;
    }
    if (mc->c)
        conn_fail(mc->c, err);
}

static void complete(struct mqtt_client *mc, struct slot *sl, enum mqc_status st, uint8_t code, const uint8_t *codes,
                     uint32_t n)
{
    mqc_done_fn done = sl->done;
    void *arg = sl->arg;
    *sl = (struct slot){0};
    mc->inflight--;
    if (done && !mc->owner_gone)
        done(arg, st, code, codes, n);
}

static const char *const end_names[] = {"broker unreachable", "CONNECT refused by the broker",
                                        "no CONNACK in time", "no PINGRESP in time", "broker closed",
                                        "broker broke the protocol"};

static void on_close(struct conn *c, int err)
{
    struct mqtt_client *mc = c->owner;
    mc->c = NULL;
    if (mc->owner_gone) {
        client_free(mc);
        return;
    }
    enum mqc_end why = mc->why_set ? mc->why : mc->state == MQC_CONNECTING ? MQC_END_UNREACHABLE : MQC_END_LOST;
    session_log(mc->s, why == MQC_END_LOST ? LOGL_DEBUG : LOGL_INFO, "MQTT client: %s%s%s", end_names[why],
                err ? ": " : "", err == EPROTO ? "TLS failure" : err ? strerror(err) : "");
    loop_timer_stop(mc->loop, &mc->timer);
    loop_defer_cancel(mc->loop, &mc->defer);
    for (uint16_t i = 0; i < mc->max_inflight; i++)
        if (mc->slots[i].wait != W_FREE)
            complete(mc, &mc->slots[i], MQC_FAILED, 0, NULL, 0); /* may close: owner_gone */
    if (!mc->owner_gone && mc->cbs->on_closed)
        mc->cbs->on_closed(mc, mc->ctx, why, mc->why_code);
    client_free(mc);
}

/* A closed client's connection did not end within the linger, or the loop
 * is being freed (exit): end it now. */
static void linger_over(void *arg)
{
    struct mqtt_client *mc = arg;
    if (mc->c) {
        mc->c->cbs = &quiet_cbs; /* an on_close already queued must not reach mc */
        conn_close(mc->c);
    }
    client_free(mc);
}

void mqtt_client_close(struct mqtt_client *mc)
{
    if (!mc || mc->owner_gone)
        return;
    mc->owner_gone = true;
    if (!mc->c)
        return; /* inside on_close, which frees it */
    loop_defer_cancel(mc->loop, &mc->defer);
    if (mc->state == MQC_READY) {
        uint8_t b[8];
        size_t n = mqtt_encode_disconnect(mc->version, 0, b, sizeof(b));
        conn_write(mc->c, b, n);
    }
    loop_timer_stop(mc->loop, &mc->timer);
    session_after(mc->loop, &mc->linger, MQC_LINGER_MS, linger_over, mc);
    conn_close_after_flush(mc->c); /* its on_close frees mc */
}

/* ---- timers ------------------------------------------------------------------------- */

static void keepalive_arm(struct mqtt_client *mc)
{
    if (!mc->keepalive)
        return;
    uint64_t now = loop_now(mc->loop);
    uint64_t next = mc->ping_out ? mc->ping_at + mc->ping_timeout_ms : mc->last_tx + mc->keepalive * 1000ull;
    loop_timer_start(mc->loop, &mc->timer, next > now ? (uint32_t)(next - now) : 0, on_timer);
}

static void on_timer(struct loop *l, struct loop_timer *t)
{
    (void)l;
    struct mqtt_client *mc = container_of(t, struct mqtt_client, timer);
    if (mc->state == MQC_CONNECTING) {
        fail_with(mc, MQC_END_TIMEOUT, 0, ETIMEDOUT);
        return;
    }
    uint64_t now = loop_now(mc->loop);
    if (mc->ping_out && now - mc->ping_at >= mc->ping_timeout_ms) {
        fail_with(mc, MQC_END_PING_TIMEOUT, 0, ETIMEDOUT);
        return;
    }
    if (!mc->ping_out && now - mc->last_tx >= mc->keepalive * 1000ull) {
        static const uint8_t pingreq[] = {MQTT_PINGREQ << 4, 0};
        mc->ping_out = true;
        mc->ping_at = now;
        mc->last_tx = now;
        if (conn_write(mc->c, pingreq, sizeof(pingreq)) < 0)
            return; /* on_close follows */
    }
    keepalive_arm(mc);
}

/* QoS 0 PUBLISHes are done once written: told after the call that made them. */
static void sent0_done(struct loop *l, struct loop_defer *d)
{
    (void)l;
    struct mqtt_client *mc = container_of(d, struct mqtt_client, defer);
    for (uint16_t i = 0; i < mc->max_inflight && !mc->owner_gone && mc->c; i++)
        if (mc->slots[i].wait == W_SENT0)
            complete(mc, &mc->slots[i], MQC_OK, 0, NULL, 0);
}

/* ---- the connection ----------------------------------------------------------------- */

static void on_connected(struct conn *c)
{
    struct mqtt_client *mc = c->owner;
    /* mqtts: the CONNECT already queued goes out once TLS is up */
    if (broker_connected(c, mc->p) < 0)
        conn_close_after_flush(c);
}

static void on_drain(struct conn *c)
{
    struct mqtt_client *mc = c->owner;
    if (c->read_paused && !mc->held)
        conn_resume_read(c);
    if (!mc->owner_gone && mc->cbs->on_drain)
        mc->cbs->on_drain(mc, mc->ctx);
}

static struct slot *slot_find(struct mqtt_client *mc, uint16_t id, uint8_t wait)
{
    for (uint16_t i = 0; i < mc->max_inflight; i++)
        if (mc->slots[i].wait == wait && mc->slots[i].id == id)
            return &mc->slots[i];
    return NULL;
}

static bool qos2_has(const struct mqtt_client *mc, uint16_t id, uint32_t *at)
{
    for (uint32_t i = 0; i < mc->qos2_count; i++)
        if (mc->qos2[i] == id) {
            if (at)
                *at = i;
            return true;
        }
    return false;
}

/* A PUBLISH from the broker: handed over once, then acknowledged.  -1: stop
 * reading (the owner closed, or the broker sent more QoS 2 messages at once
 * than we have room for). */
static int got_publish(struct mqtt_client *mc, const struct mqtt_publish *pub)
{
    if (pub->qos == 2 && qos2_has(mc, pub->id, NULL)) { /* a resend before its PUBREL: not again */
        send_ack(mc, MQTT_PUBREC, pub->id);
        return 0;
    }
    if (pub->qos == 2 && mc->qos2_count == mc->qos2_cap) {
        fail_with(mc, MQC_END_PROTOCOL, 0, EBADMSG);
        return -1;
    }
    if (mc->cbs->on_message)
        mc->cbs->on_message(mc, mc->ctx, pub);
    if (mc->owner_gone)
        return -1;
    if (pub->qos == 1)
        send_ack(mc, MQTT_PUBACK, pub->id);
    else if (pub->qos == 2) {
        mc->qos2[mc->qos2_count++] = pub->id;
        send_ack(mc, MQTT_PUBREC, pub->id);
    }
    return 0;
}

static int got_connack(struct mqtt_client *mc, const struct mqtt_connack *ca)
{
    if (mc->state != MQC_CONNECTING) {
        fail_with(mc, MQC_END_PROTOCOL, 0, EBADMSG);
        return -1;
    }
    if (ca->rc) {
        fail_with(mc, MQC_END_REFUSED, ca->rc, 0);
        return -1;
    }
    if (ca->props.has & (1u << MQTT_PROPBIT_RECEIVE_MAX))
        mc->send_max = ca->props.receive_max;
    mc->state = MQC_READY;
    loop_timer_stop(mc->loop, &mc->timer);
    keepalive_arm(mc);
    if (mc->cbs->on_ready)
        mc->cbs->on_ready(mc, mc->ctx);
    return mc->owner_gone ? -1 : 0;
}

/* One packet from the broker: 0, or -1 to stop reading. */
static int got_packet(struct mqtt_client *mc, const struct mqtt_packet *pkt)
{
    if (pkt->type == MQTT_CONNACK)
        return got_connack(mc, &pkt->connack);
    if (mc->state != MQC_READY) {
        fail_with(mc, MQC_END_PROTOCOL, 0, EBADMSG);
        return -1;
    }
    const struct mqtt_ack *a = &pkt->ack;
    struct slot *sl;
    switch (pkt->type) {
    case MQTT_PUBLISH:
        return got_publish(mc, &pkt->publish);
    case MQTT_PUBACK:
        if ((sl = slot_find(mc, a->id, W_PUBACK)))
            complete(mc, sl, a->rc >= 0x80 ? MQC_REFUSED : MQC_OK, a->rc, NULL, 0);
        break;
    case MQTT_PUBREC:
        if (!(sl = slot_find(mc, a->id, W_PUBREC)))
            break; /* not ours (any more): nothing to release */
        if (a->rc >= 0x80) {
            complete(mc, sl, MQC_REFUSED, a->rc, NULL, 0);
            break;
        }
        sl->wait = W_PUBCOMP;
        send_ack(mc, MQTT_PUBREL, a->id);
        break;
    case MQTT_PUBREL: {
        uint32_t at;
        if (qos2_has(mc, a->id, &at))
            mc->qos2[at] = mc->qos2[--mc->qos2_count];
        send_ack(mc, MQTT_PUBCOMP, a->id);
        break;
    }
    case MQTT_PUBCOMP:
        if ((sl = slot_find(mc, a->id, W_PUBCOMP)))
            complete(mc, sl, MQC_OK, a->rc, NULL, 0);
        break;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        if ((sl = slot_find(mc, pkt->suback.id, pkt->type == MQTT_SUBACK ? W_SUBACK : W_UNSUBACK)))
            complete(mc, sl, MQC_OK, 0, pkt->suback.codes, pkt->suback.count);
        break;
    case MQTT_PINGRESP:
        mc->ping_out = false;
        break;
    default: /* a 5.0 DISCONNECT, AUTH: we asked for no extended authentication */
        fail_with(mc, pkt->type == MQTT_DISCONNECT ? MQC_END_LOST : MQC_END_PROTOCOL, pkt->disconnect.rc, 0);
        return -1;
    }
    return mc->owner_gone ? -1 : 0;
}

/* A PUBLISH from the broker larger than MAX_PACKET_SIZE (at p, total bytes,
 * have of them here): acknowledged and dropped, its bytes read past rather
 * than kept, so that one big message (a retained one, on a topic a client
 * observes) cannot end the session with all its subscriptions.  Returns the
 * bytes used, or 0 when its topic and id have not all come yet (*need: how
 * many are needed). */
static size_t skip_publish(struct mqtt_client *mc, const uint8_t *p, size_t have, size_t total, size_t *need)
{
    uint32_t rem, vlen;
    if (mqtt_varint_get(p + 1, have - 1, &rem, &vlen) != MQTT_OK)
        return *need = 1 + 4 + 2, 0;
    size_t at = 1 + vlen;
    uint8_t qos = (uint8_t)(p[0] >> 1 & 3);
    if (have < at + 2)
        return *need = at + 2, 0;
    size_t id_at = at + 2 + ((size_t)p[at] << 8 | p[at + 1]);
    if (qos && have < id_at + 2)
        return *need = id_at + 2, 0;
    session_log(mc->s, LOGL_WARN, "MQTT client: a PUBLISH of %zu bytes from the broker, over MAX_PACKET_SIZE: "
                "acknowledged and dropped", total);
    if (qos)
        send_ack(mc, qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, (uint16_t)(p[id_at] << 8 | p[id_at + 1]));
    size_t used = have < total ? have : total;
    mc->skip_left = (uint32_t)(total - used);
    return used;
}

static size_t on_data(struct conn *c, const uint8_t *data, size_t len)
{
    struct mqtt_client *mc = c->owner;
    size_t off = 0;
    if (mc->skip_left) { /* the rest of a PUBLISH too large to take */
        off = len < mc->skip_left ? len : mc->skip_left;
        mc->skip_left -= (uint32_t)off;
    }
    while (off < len && !mc->owner_gone && !mc->why_set) {
        if (conn_over_high_water(c) || mc->held) { /* our answers (or the owner) wait: so does the broker */
            conn_pause_read(c);
            return off;
        }
        size_t total, need = 0;
        mqtt_rc rc = mqtt_frame(data + off, len - off, mc->p->max_packet_size, &total);
        if (rc == MQTT_NEED_MORE) {
            c->want = (uint32_t)total;
            return off;
        }
        if (rc == MQTT_TOO_LARGE && data[off] >> 4 == MQTT_PUBLISH && mc->state == MQC_READY) {
            size_t used = skip_publish(mc, data + off, len - off, total, &need);
            if (!used) {
                c->want = (uint32_t)need;
                return off;
            }
            off += used;
            continue;
        }
        struct mqtt_packet pkt;
        if (rc == MQTT_OK)
            rc = mqtt_decode(data + off, total, mc->version, false, &pkt);
        if (rc != MQTT_OK) {
            session_log(mc->s, LOGL_WARN, "MQTT client: %s from the broker", mqtt_rc_name(rc));
            fail_with(mc, MQC_END_PROTOCOL, 0, EBADMSG);
            return len;
        }
        off += total;
        if (got_packet(mc, &pkt) < 0)
            return len;
    }
    c->want = 0;
    return mc->owner_gone || mc->why_set ? len : off;
}

/* ---- requests ---------------------------------------------------------------------- */

/* A free slot with a fresh packet identifier, or NULL (max_inflight wait). */
static struct slot *slot_take(struct mqtt_client *mc, uint8_t wait, mqc_done_fn done, void *arg)
{
    struct slot *free_slot = NULL;
    for (uint16_t i = 0; i < mc->max_inflight && !free_slot; i++)
        if (mc->slots[i].wait == W_FREE)
            free_slot = &mc->slots[i];
    if (!free_slot)
        return NULL;
    uint16_t id = 0;
    if (wait != W_SENT0)
        do
            id = ++mc->next_id ? mc->next_id : ++mc->next_id;
        while (slot_find(mc, id, W_PUBACK) || slot_find(mc, id, W_PUBREC) || slot_find(mc, id, W_PUBCOMP) ||
               slot_find(mc, id, W_SUBACK) || slot_find(mc, id, W_UNSUBACK));
    *free_slot = (struct slot){.id = id, .wait = wait, .done = done, .arg = arg};
    mc->inflight++;
    return free_slot;
}

/* QoS 1 and 2 PUBLISHes waiting for their acknowledgement. */
static uint32_t publishes_unacked(const struct mqtt_client *mc)
{
    uint32_t n = 0;
    for (uint16_t i = 0; i < mc->max_inflight; i++)
        n += mc->slots[i].wait == W_PUBACK || mc->slots[i].wait == W_PUBREC || mc->slots[i].wait == W_PUBCOMP;
    return n;
}

static enum mqc_status request(struct mqtt_client *mc, struct mqtt_packet *pkt, uint8_t wait, mqc_done_fn done,
                               void *arg)
{
    if (mc->owner_gone || !mc->c || mc->why_set)
        return MQC_INVALID;
    if (!mqtt_encode(pkt, mc->version, NULL, 0))
        return MQC_INVALID;
    if ((wait == W_PUBACK || wait == W_PUBREC) && publishes_unacked(mc) >= mc->send_max)
        return MQC_BUSY;
    struct slot *sl = slot_take(mc, wait, done, arg);
    if (!sl)
        return MQC_BUSY;
    if (pkt->type == MQTT_PUBLISH)
        pkt->publish.id = sl->id;
    else
        pkt->subscribe.id = sl->id;
    if (send_pkt(mc, pkt) < 0 && mc->c->state != CONN_CLOSED) {
        *sl = (struct slot){0}; /* out of memory encoding it: nothing was sent */
        mc->inflight--;
        return MQC_INVALID;
    }
    if (wait == W_SENT0)
        loop_defer(mc->loop, &mc->defer, sent0_done);
    return MQC_OK; /* a connection that failed writing fails it from on_close */
}

enum mqc_status mqtt_client_publish(struct mqtt_client *mc, mgate_bytes topic, mgate_bytes payload, uint8_t qos,
                                    bool retain, mqc_done_fn done, void *arg)
{
    if (qos > 2 || !mqtt_topic_name_valid(topic.p, topic.len))
        return MQC_INVALID;
    struct mqtt_packet pkt = {.type = MQTT_PUBLISH};
    pkt.publish = (struct mqtt_publish){
        .qos = qos, .retain = retain, .topic = {topic.p, topic.len}, .payload = {payload.p, payload.len}};
    return request(mc, &pkt, qos == 0 ? W_SENT0 : qos == 1 ? W_PUBACK : W_PUBREC, done, arg);
}

/* SUBSCRIBE (qos != NULL) or UNSUBSCRIBE: the payload's list, allocated. */
static enum mqc_status filters_request(struct mqtt_client *mc, const mgate_bytes *filters, const uint8_t *qos,
                                       uint32_t n, mqc_done_fn done, void *arg)
{
    size_t size = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!mqtt_topic_filter_valid(filters[i].p, filters[i].len) || (qos && qos[i] > 2))
            return MQC_INVALID;
        size += 3u + filters[i].len;
    }
    uint8_t *list = n ? malloc(size) : NULL, *w = list;
    if (!list)
        return MQC_INVALID;
    for (uint32_t i = 0; i < n; i++) {
        *w++ = (uint8_t)(filters[i].len >> 8);
        *w++ = (uint8_t)filters[i].len;
        memcpy(w, filters[i].p, filters[i].len);
        w += filters[i].len;
        if (qos)
            *w++ = qos[i];
    }
    struct mqtt_packet pkt = {.type = qos ? MQTT_SUBSCRIBE : MQTT_UNSUBSCRIBE};
    pkt.subscribe.list = list;
    pkt.subscribe.list_len = (uint32_t)(w - list);
    pkt.subscribe.count = n;
    enum mqc_status st = request(mc, &pkt, qos ? W_SUBACK : W_UNSUBACK, done, arg);
    free(list);
    return st;
}

enum mqc_status mqtt_client_subscribe(struct mqtt_client *mc, const mgate_bytes *filters, const uint8_t *qos,
                                      uint32_t n, mqc_done_fn done, void *arg)
{
    return qos ? filters_request(mc, filters, qos, n, done, arg) : MQC_INVALID;
}

enum mqc_status mqtt_client_unsubscribe(struct mqtt_client *mc, const mgate_bytes *filters, uint32_t n,
                                        mqc_done_fn done, void *arg)
{
    return filters_request(mc, filters, NULL, n, done, arg);
}

bool mqtt_client_ready(const struct mqtt_client *mc) { return mc->state == MQC_READY && !mc->why_set; }
bool mqtt_client_writable(const struct mqtt_client *mc) { return mc->c && !conn_over_high_water(mc->c); }
uint32_t mqtt_client_inflight(const struct mqtt_client *mc) { return mc->inflight; }

void mqtt_client_hold(struct mqtt_client *mc, bool hold)
{
    mc->held = hold;
    if (!hold && mc->c && mc->c->read_paused && !conn_over_high_water(mc->c))
        conn_resume_read(mc->c); /* what was read already comes from a deferred call */
}

/* ---- opening ------------------------------------------------------------------------ */

struct mqtt_client *mqtt_client_open(struct loop *l, const struct mqtt_client_opts *o)
{
    uint16_t max = o->max_inflight ? o->max_inflight : MQC_DEFAULT_INFLIGHT;
    uint32_t q2 = 2u * max + 16; /* 5.0: our Receive Maximum */
    if (q2 > 65535)
        q2 = 65535;
    uint8_t version = o->version ? o->version : MQTT_V311;
    struct mqtt_packet pkt = {.type = MQTT_CONNECT};
    uint8_t props[8];
    pkt.connect = (struct mqtt_connect){
        .version = version, .clean_start = o->clean_session, .keepalive = o->keepalive,
        .client_id = {o->client_id.p, o->client_id.len},
        .has_username = o->has_username, .username = {o->username.p, o->username.len},
        .has_password = o->has_password, .password = {o->password.p, o->password.len}};
    if (version == MQTT_V5)
        pkt.connect.props = (mqtt_props){.raw = props, .raw_len = mqtt_prop_put_u16(props, MQTT_PROP_RECEIVE_MAX,
                                                                                   (uint16_t)q2)};
    if ((version != MQTT_V311 && version != MQTT_V5) || !mqtt_encode(&pkt, version, NULL, 0)) {
        errno = EINVAL;
        return NULL;
    }
    struct mqtt_client *mc = calloc(1, sizeof(*mc) + max * sizeof(struct slot) + q2 * sizeof(uint16_t));
    if (!mc) {
        errno = ENOMEM;
        return NULL;
    }
    *mc = (struct mqtt_client){
        .loop = l, .p = o->p, .s = o->s, .cbs = o->cbs, .ctx = o->ctx, .version = version,
        .keepalive = o->keepalive, .max_inflight = max, .send_max = 65535, .qos2_cap = q2,
        .connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : o->p->connect_timeout_ms,
        .ping_timeout_ms = o->ping_timeout_ms ? o->ping_timeout_ms : o->keepalive * 1000u};
    mc->qos2 = (uint16_t *)(mc->slots + max);
    int err = 0;
    if (!(mc->c = broker_dial(l, o->p, &client_cbs, mc, &err))) {
        free(mc);
        errno = err;
        return NULL;
    }
    loop_timer_start(l, &mc->timer, mc->connect_timeout_ms, on_timer);
    send_pkt(mc, &pkt); /* failed: on_close follows */
    return mc;
}
