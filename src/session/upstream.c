/*
 * Client -> broker: CONNECT (authorise before dialling), PUBLISH and
 * SUBSCRIBE (authorise, maybe rewrite, refuse with the protocol's codes),
 * UNSUBSCRIBE (maybe rewrite, report).  Everything else is forwarded unchanged.
 */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "net/tls.h"
#include "session/internal.h"

#define CONNECT_FLAG_USERNAME 0x80u
#define CONNECT_FLAG_PASSWORD 0x40u

/* ---- mount points ----------------------------------------------------- */


/* t as the broker must see it: the session's mount point before it (after
 * the group of a $share filter), in memory that lives until the packet is
 * forwarded; {NULL, 0} when out of memory.  The caller checked mount_fits. */
static mgate_bytes mounted(struct mgate_session *s, mgate_bytes t, bool filter)
{
    ASSERT(s->mount && mount_fits(s->mount, t));
    uint32_t n = s->mount->len + t.len;
    uint8_t *p = mgate_session_alloc(s, n);
    if (!p)
        return (mgate_bytes){NULL, 0};
    if (filter)
        mount_put_filter(s->mount, t, p);
    else
        mount_put_topic(s->mount, t, p);
    return (mgate_bytes){p, n};
}



/* ---- CONNECT ---------------------------------------------------------- */

/* USE_CN_AS_USERNAME: the broker (and the handler) see the certificate's
 * CN as the username, whatever the client sent.  No usable CN (no
 * certificate on an optional listener, none in the certificate, an
 * ambiguous one) refuses the client: keeping the username it sent would let
 * it pick its own identity. */
static bool cn_as_username(struct mgate_session *s, struct mgate_connect_req *req)
{
    struct mgate_cert cert;
    const char *cn = mgate_session_cert(s, &cert) ? cert.cn : "";
    size_t n = strlen(cn);
    char *p = n ? mgate_session_alloc(s, n) : NULL;
    if (!p) {
        session_log(s, LOGL_INFO, n ? "refused: out of memory taking the certificate CN as the username"
                                    : "refused: USE_CN_AS_USERNAME and no usable certificate CN");
        req->reason = n ? MGATE_REASON_SERVER_BUSY : MGATE_REASON_BAD_USER_OR_PASSWORD;
        return false;
    }
    memcpy(p, cn, n);
    req->username = (mgate_bytes){(const uint8_t *)p, (uint32_t)n};
    req->has_username = true;
    return true;
}

/* What the front end took from the upgrade (a WebSocket's Authorization
 * header or query) fills in what the CONNECT lacks. */
static void front_credentials(const struct mgate_session *s, struct mgate_connect_req *req)
{
    const struct front_cred *fc = s->front_cred;
    if (!fc)
        return;
    if (!req->has_username && fc->has_user) {
        req->username = (mgate_bytes){(const uint8_t *)fc->mem, fc->user_len};
        req->has_username = true;
    }
    if (!req->has_password && fc->has_pass) {
        req->password = (mgate_bytes){(const uint8_t *)fc->mem + fc->user_len, fc->pass_len};
        req->has_password = true;
    }
}

static enum pkt_result up_connect(struct pass *ps, const uint8_t *raw, uint32_t len,
                                  struct mqtt_packet *pkt)
{
    struct mgate_session *s = ps->s;
    struct mqtt_connect *c = &pkt->connect;
    s->version = c->version;
    if (c->version == MQTT_V5) {
        if (c->props.has & (1u << MQTT_PROPBIT_MAX_PACKET_SIZE))
            s->client_max_packet = c->props.max_packet_size;
        if (c->props.has & (1u << MQTT_PROPBIT_TOPIC_ALIAS_MAX))
            s->client_alias_max = c->props.topic_alias_max;
        s->enhanced_auth = c->props.has & (1u << MQTT_PROPBIT_AUTH_METHOD);
    }
    struct held *h = held_begin(ps, pkt);
    if (!h)
        return PKT_CLOSE;
    struct mgate_connect_req *req = &h->ask.req.connect;
    req->client_id = to_bytes(c->client_id);
    req->username = to_bytes(c->username);
    req->password = to_bytes(c->password);
    req->has_username = c->has_username;
    req->has_password = c->has_password;
    req->version = c->version;
    req->clean_start = c->clean_start;
    req->keepalive = c->keepalive;
    front_credentials(s, req);
    s->state = SESSION_AUTH_CONNECT;
    if (s->p->cn_as_username && !cn_as_username(s, req)) {
        h->ask.verdict = MGATE_DENY;
        return held_decide(ps, h, MGATE_DENY, raw, len);
    }
    return held_ask_connect(ps, h, raw, len);
}

/* The will is a publish the client causes: it is judged with the identity
 * auth_connect settled on (saved first, so handlers read it through the
 * session's accessors), from the first handler of the chain on.  Out of
 * memory saving that identity (the session is closing) the engine refuses
 * it, as it refuses everything of a session whose identity was lost. */
enum mgate_verdict up_connect_will(struct mgate_session *s, struct held *h)
{
    const struct mqtt_connect *c = &h->pkt.connect;
    struct ask *a = &h->ask;
    if (!c->has_will)
        return MGATE_ALLOW;
    bool lost = session_save_credentials(s, &a->req.connect) < 0;
    h->will_stage = true;
    a->will = (struct mgate_publish_req){
        .dir = MGATE_UP,
        .topic = to_bytes(c->will_topic),
        .payload = to_bytes(c->will_payload),
        .qos = c->will_qos,
        .retain = c->will_retain,
        .reason = lost ? MGATE_REASON_SERVER_BUSY : 0,
        .will = true,
        .will_properties = {c->will_props.raw, c->will_props.raw_len},
    };
    return verdict_ask(s, a, ASK_WILL, a->done); /* done: set when auth_connect was asked */
}

static bool will_changed(const struct held *h)
{
    const struct mgate_publish_req *w = &h->ask.will;
    const struct mqtt_connect *c = &h->pkt.connect;
    return h->will_stage && (!bytes_same(w->topic, c->will_topic) || !bytes_same(w->payload, c->will_payload) ||
                             w->qos != c->will_qos || w->retain != c->will_retain);
}

static bool connect_changed(const struct held *h)
{
    const struct mgate_connect_req *req = &h->ask.req.connect;
    const struct mqtt_connect *c = &h->pkt.connect;
    return !bytes_same(req->client_id, c->client_id) || req->has_username != c->has_username ||
           req->has_password != c->has_password ||
           (req->has_username && !bytes_same(req->username, c->username)) ||
           (req->has_password && !bytes_same(req->password, c->password)) || will_changed(h);
}

/* The CONNECT as the handlers left it: credentials as saved, the will as
 * rewritten (its properties stay as they came). */
static int emit_rewritten_connect(struct pass *ps, const struct held *h)
{
    struct mgate_session *s = ps->s;
    const struct mgate_connect_req *req = &h->ask.req.connect;
    struct mqtt_packet np = h->pkt;
    struct mqtt_connect *nc = &np.connect;
    nc->client_id = to_str(s->client_id);
    nc->has_username = req->has_username;
    /* before 5.0 a password needs a username: a token then stays with the handler */
    bool pw = req->has_password && (req->has_username || s->version == MQTT_V5);
    nc->has_password = pw;
    nc->username = to_str(s->username);
    nc->password = to_str(s->password);
    if (s->mount && nc->has_will) {
        mgate_bytes t = h->will_stage ? h->ask.will.topic : to_bytes(nc->will_topic);
        if (!mount_fits(s->mount, t))
            return PASS_DROPPED;
        if (!(t = mounted(s, t, false)).p)
            return -1;
        nc->will_topic = to_str(t);
        int e = session_props_mount(s, &nc->will_props, MGATE_UP);
        if (e != 0)
            return e;
    } else if (h->will_stage) {
        nc->will_topic = to_str(h->ask.will.topic);
    }
    if (h->will_stage) {
        nc->will_payload = to_str(h->ask.will.payload);
        nc->will_qos = h->ask.will.qos > 2 ? 2 : h->ask.will.qos;
        nc->will_retain = h->ask.will.retain;
    }
    return pass_emit_packet(ps, &np);
}

static enum pkt_result refuse_connect(struct mgate_session *s, const struct held *h)
{
    uint8_t reason = h->will_stage ? h->ask.will.reason : h->ask.req.connect.reason;
    if (!s->p->refusal_close) /* REFUSAL=close: the Go mGate just closes */
        reply_connack(s, reason ? reason : MQTT_RC_NOT_AUTHORIZED);
    if (h->will_stage)
        METRIC_INC(session_metrics(s)->publish_refused[MGATE_UP]);
    session_close_as(s, CONN_END_POLICY, CONN_END_NORMAL,
                     h->will_stage ? "CONNECT refused: its will was refused by the handler"
                                   : "CONNECT refused by the handler");
    return PKT_CLOSE;
}

static enum pkt_result finish_connect(struct pass *ps, struct held *h)
{
    struct mgate_session *s = ps->s;
    struct mgate_connect_req *req = &h->ask.req.connect;
    if (h->ask.verdict != MGATE_ALLOW)
        return refuse_connect(s, h);
    if (session_save_credentials(s, req) < 0)
        return PKT_CLOSE; /* never on with an identity nobody checked: it closed the session */
    if (!session_client_id_allowed(s)) {
        if (!s->p->refusal_close)
            reply_connack(s, MQTT_RC_BAD_CLIENT_ID);
        session_close_as(s, CONN_END_POLICY, CONN_END_NORMAL, "client id refused by the listener's policy");
        return PKT_CLOSE;
    }
    uint8_t mount_refused = session_mount_settle(s, s->username, s->client_id);
    if (mount_refused) {
        if (!s->p->refusal_close)
            reply_connack(s, mount_refused);
        session_close_as(s, CONN_END_POLICY, CONN_END_NORMAL, "CONNECT refused: no mount point for this identity");
        return PKT_CLOSE;
    }
    if (session_dial(s) < 0) {
        reply_connack(s, MQTT_RC_SERVER_UNAVAILABLE);
        session_close_as(s, CONN_END_UPSTREAM, CONN_END_NORMAL, "cannot dial the broker");
        return PKT_CLOSE;
    }
    ps->to = s->broker;
    s->state = SESSION_AWAIT_CONNACK;
    enum pkt_result r = PKT_FORWARD;
    if (connect_changed(h) || (s->mount && h->pkt.connect.has_will)) {
        if (emit_rewritten_connect(ps, h) != 0) { /* a rewrite the protocol cannot carry, or no memory */
            reply_connack(s, MQTT_RC_SERVER_UNAVAILABLE);
            session_close_as(s, CONN_END_INTERNAL, CONN_END_NORMAL, "the rewritten CONNECT cannot be sent");
            return PKT_CLOSE;
        }
        r = PKT_HANDLED;
    }
    chain_connect(s);
    s->connect_called = true;
    return r;
}

/* ---- PUBLISH ---------------------------------------------------------- */

static enum pkt_result up_publish(struct pass *ps, const uint8_t *raw, uint32_t len,
                                  struct mqtt_packet *pkt)
{
    struct mgate_session *s = ps->s;
    struct held *h = held_begin(ps, pkt);
    if (!h)
        return PKT_CLOSE;
    struct mqtt_publish *pub = &h->pkt.publish;
    int alias = publish_resolve_alias(ps, pub, &h->resolved_topic);
    if (alias < 0) {
        held_put(s, h);
        if (alias == PUBLISH_ALIAS_NOMEM)
            return publish_oom(s);
        session_protocol_error(s, MGATE_UP, MQTT_PROTOCOL_ERROR);
        return PKT_CLOSE;
    }
    struct mgate_publish_req *req = &h->ask.req.publish;
    req->dir = MGATE_UP;
    req->topic = to_bytes(h->resolved_topic);
    req->payload = to_bytes(pub->payload);
    req->qos = pub->qos;
    req->retain = pub->retain;
    return held_ask(ps, h, ASK_PUBLISH, raw, len);
}

static void count_refused(struct mgate_session *s, const struct mqtt_publish *pub)
{
    METRIC_INC(session_metrics(s)->publish_refused[MGATE_UP]);
    struct logline l;
    if (session_log_begin(s, &l, LOGL_INFO, "PUBLISH refused")) {
        log_bytes(&l, "topic", pub->topic.p, pub->topic.len);
        log_end(&l);
    }
}

static enum pkt_result refuse_publish(struct pass *ps, const struct mqtt_publish *pub, uint8_t reason)
{
    struct mgate_session *s = ps->s;
    count_refused(s, pub);
    if (s->p->refusal_close || s->version != MQTT_V5) {
        /* 3.1.1 has no way to refuse a PUBLISH but closing. */
        session_close_as(s, CONN_END_POLICY, CONN_END_NORMAL, "PUBLISH refused");
        return PKT_CLOSE;
    }
    if (pub->qos)
        reply_ack(s->client, pub->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, s->version, pub->id,
                  reason ? reason : MQTT_RC_NOT_AUTHORIZED);
    return PKT_REFUSED;
}

/* Allowed, but the broker cannot take it as the handlers left it (over its
 * Maximum Packet Size, or not encodable): a QoS 1/2 sender is told 0x83 (a
 * 3.1.1 one, which cannot be told, is closed, as for a refusal) rather than
 * left waiting for an acknowledgement; QoS 0 is dropped and counted.  Not
 * 0x95 (Packet too large): a PUBACK or PUBREC may not carry it
 * [MQTT-3.4.2.1], and the client's packet was not too large anyway. */
enum pkt_result up_publish_not_sent(struct pass *ps, const struct mqtt_publish *pub, int why)
{
    (void)why;
    if (pub->qos)
        return refuse_publish(ps, pub, MQTT_RC_IMPL_SPECIFIC);
    count_refused(ps->s, pub);
    return PKT_REFUSED;
}

/* The handlers' retain, and their QoS where the flow allows: 1 lowered to
 * 0 is acknowledged here (the broker will not); other QoS changes would
 * leave the client's or the broker's acknowledgements unanswered, so they
 * are not taken. */
static void publish_take_flags(struct mgate_session *s, struct mqtt_publish *pub, const struct mgate_publish_req *req)
{
    pub->retain = req->retain;
    if (pub->qos == 1 && req->qos == 0) {
        reply_ack(s->client, MQTT_PUBACK, s->version, pub->id, MQTT_RC_SUCCESS);
        pub->qos = 0;
        pub->id = 0;
        pub->dup = false;
    }
}

static enum pkt_result finish_publish(struct pass *ps, struct held *h, const uint8_t *raw, uint32_t len)
{
    struct mgate_session *s = ps->s;
    struct mgate_publish_req *req = &h->ask.req.publish;
    if (h->ask.verdict != MGATE_ALLOW)
        return refuse_publish(ps, &h->pkt.publish, req->reason);
    mgate_bytes topic = req->topic;
    if (s->mount) { /* handlers saw the client's topic; the broker sees the tenant's */
        if (!mount_fits(s->mount, topic))
            return refuse_publish(ps, &h->pkt.publish, MQTT_RC_TOPIC_NAME_INVALID);
        if (!(topic = mounted(s, topic, false)).p) {
            session_close_as(s, CONN_END_INTERNAL, CONN_END_INTERNAL, "out of memory");
            return PKT_CLOSE;
        }
    }
    int e = held_props_apply(s, h);
    if (e == 0 && s->mount)
        e = session_props_mount(s, &h->pkt.publish.props, MGATE_UP);
    if (e == 0)
        publish_take_flags(s, &h->pkt.publish, req);
    enum pkt_result r = e == 0 ? publish_forward(ps, raw, len, &h->pkt.publish, h->resolved_topic, topic,
                                                 req->payload)
                        : e > 0 ? up_publish_not_sent(ps, &h->pkt.publish, e)
                                            : publish_oom(s);
    if (r != PKT_REFUSED && r != PKT_CLOSE)
        chain_publish(s, req);
    return r;
}

/* ---- SUBSCRIBE -------------------------------------------------------- */

static enum pkt_result up_subscribe(struct pass *ps, const uint8_t *raw, uint32_t len,
                                    struct mqtt_packet *pkt)
{
    struct mgate_session *s = ps->s;
    struct mqtt_subscribe *sub = &pkt->subscribe;
    struct held *h = held_begin(ps, pkt);
    if (!h)
        return PKT_CLOSE;
    struct mgate_filter *f = calloc(sub->count, sizeof(*f));
    if (!f) {
        held_put(s, h);
        session_close_as(s, CONN_END_INTERNAL, CONN_END_INTERNAL, "out of memory");
        return PKT_CLOSE;
    }
    uint32_t off = 0, i = 0;
    mqtt_str filter;
    uint8_t opts;
    while (i < sub->count && mqtt_sub_next(sub, &off, &filter, &opts)) {
        f[i].filter = to_bytes(filter);
        f[i].qos = opts & 3u;
        i++;
    }
    struct mgate_subscribe_req *req = &h->ask.req.subscribe;
    req->dir = MGATE_UP;
    req->filters = f;
    req->count = i;
    return held_ask(ps, h, ASK_SUBSCRIBE, raw, len);
}

static uint8_t refusal_code(const struct mgate_session *s, uint8_t reason)
{
    if (s->version != MQTT_V5)
        return 0x80;
    return reason ? reason : MQTT_RC_NOT_AUTHORIZED;
}

/* A refused filter's code: its own reason when a handler gave a SUBACK
 * failure code (one below 0x80 would grant it), else the request's. */
static uint8_t filter_refusal_code(const struct mgate_session *s, const struct mgate_subscribe_req *req, uint32_t i)
{
    uint8_t own = req->filters[i].reason;
    bool usable = own >= 0x80 && mqtt_reason_valid(MQTT_SUBACK, MQTT_V5, own);
    return refusal_code(s, usable ? own : req->reason);
}

/* The client gets one SUBACK, in its order: remember which positions we
 * answered so the broker's SUBACK can be completed (downstream.c). */
static int remember_merge(struct mgate_session *s, uint16_t id, const struct mgate_subscribe_req *req)
{
    struct suback_merge *m = malloc(sizeof(*m) + req->count);
    if (!m)
        return -1;
    m->id = id;
    m->count = req->count;
    for (uint32_t i = 0; i < req->count; i++)
        m->codes[i] = req->filters[i].denied ? filter_refusal_code(s, req, i) : SUBACK_FROM_BROKER;
    m->next = s->merges;
    s->merges = m;
    s->merge_count++;
    return 0;
}

/* A SUBSCRIBE with only the allowed (maybe rewritten) filters. */
static int emit_filtered_subscribe(struct pass *ps, struct held *h)
{
    struct mgate_subscribe_req *req = &h->ask.req.subscribe;
    struct mqtt_subscribe *sub = &h->pkt.subscribe;
    const struct mount *m = ps->s->mount;
    size_t size = 0;
    for (uint32_t i = 0; i < req->count; i++)
        if (!req->filters[i].denied)
            size += 3u + req->filters[i].filter.len + (m ? m->len : 0);
    uint8_t *list = malloc(size ? size : 1), *w = list;
    if (!list)
        return -1;
    uint32_t off = 0, kept = 0;
    mqtt_str filter;
    uint8_t opts;
    for (uint32_t i = 0; i < req->count && mqtt_sub_next(sub, &off, &filter, &opts); i++) {
        const struct mgate_filter *f = &req->filters[i];
        if (f->denied)
            continue;
        uint32_t n = f->filter.len + (m ? m->len : 0);
        *w++ = (uint8_t)(n >> 8);
        *w++ = (uint8_t)n;
        if (m)
            mount_put_filter(m, f->filter, w);
        else
            memcpy(w, f->filter.p, f->filter.len);
        w += n;
        *w++ = (uint8_t)((opts & ~3u) | (f->qos & 3u));
        kept++;
    }
    struct mqtt_packet np = h->pkt;
    np.subscribe.list = list;
    np.subscribe.list_len = (uint32_t)(w - list);
    np.subscribe.count = kept;
    int rc = pass_emit_packet(ps, &np);
    free(list);
    return rc;
}

/* A filter a handler rewrote into one no SUBSCRIBE may carry (a wildcard
 * out of place, bad UTF-8, over 65535 bytes: its two-byte length would let
 * the client's own bytes be read as more filters), or a QoS over 2, is
 * refused (0x8F), not sent. */
static bool filter_sendable(struct mgate_session *s, const struct mgate_filter *f, mqtt_str as_sent, uint32_t i)
{
    if (f->qos <= 2 && (bytes_same(f->filter, as_sent) ||
                        (f->filter.p && mqtt_topic_filter_valid(f->filter.p, f->filter.len))))
        return true;
    session_log(s, LOGL_WARN, "SUBSCRIBE: filter %u was rewritten to one no SUBSCRIBE may carry; refused", i + 1);
    return false;
}

static bool filters_changed(struct mgate_session *s, struct held *h, uint32_t *denied)
{
    struct mgate_subscribe_req *req = &h->ask.req.subscribe;
    uint32_t off = 0;
    mqtt_str filter;
    uint8_t opts;
    bool changed = false;
    *denied = 0;
    for (uint32_t i = 0; i < req->count && mqtt_sub_next(&h->pkt.subscribe, &off, &filter, &opts); i++) {
        if (h->ask.verdict != MGATE_ALLOW || (s->mount && !mount_fits(s->mount, req->filters[i].filter)))
            req->filters[i].denied = true;
        if (!req->filters[i].denied && !filter_sendable(s, &req->filters[i], filter, i))
            req->filters[i] = (struct mgate_filter){.filter = req->filters[i].filter, .denied = true,
                                                    .reason = MQTT_RC_TOPIC_FILTER_INVALID};
        if (req->filters[i].denied)
            (*denied)++;
        else if (s->mount || !bytes_same(req->filters[i].filter, filter) || req->filters[i].qos != (opts & 3u))
            changed = true; /* mounted filters are always re-encoded */
    }
    return changed;
}

static int answer_all_refused(struct mgate_session *s, struct held *h)
{
    struct mgate_subscribe_req *req = &h->ask.req.subscribe;
    struct mqtt_packet np = {.type = MQTT_SUBACK};
    np.suback.id = h->pkt.subscribe.id;
    np.suback.count = req->count;
    size_t need = 0;
    uint8_t *codes = malloc(req->count), *out = NULL;
    if (codes) {
        for (uint32_t i = 0; i < req->count; i++)
            codes[i] = filter_refusal_code(s, req, i);
        np.suback.codes = codes;
        need = mqtt_encode(&np, s->version, NULL, 0);
        out = malloc(need);
    }
    int rc = out ? 0 : -1;
    if (out) {
        mqtt_encode(&np, s->version, out, need);
        conn_write(s->client, out, need);
    }
    free(out);
    free(codes);
    return rc;
}

static enum pkt_result finish_subscribe(struct pass *ps, struct held *h)
{
    struct mgate_session *s = ps->s;
    struct mgate_subscribe_req *req = &h->ask.req.subscribe;
    uint32_t denied;
    bool changed = filters_changed(s, h, &denied);
    METRIC_ADD(session_metrics(s)->subscribe_refused, denied);
    if (denied && s->p->refusal_close) {
        session_close_as(s, CONN_END_POLICY, CONN_END_NORMAL, "SUBSCRIBE refused");
        return PKT_CLOSE;
    }
    if (denied)
        session_log(s, LOGL_INFO, "SUBSCRIBE: %u of %u filters refused", denied, req->count);
    if (denied == req->count) {
        if (answer_all_refused(s, h) == 0)
            return PKT_HANDLED;
        session_close_as(s, CONN_END_INTERNAL, CONN_END_INTERNAL, "out of memory");
        return PKT_CLOSE;
    }
    enum pkt_result r = PKT_FORWARD;
    if (denied || changed) {
        /* Not sent (no memory, or a rewrite the broker cannot take): the
         * client would wait for a SUBACK forever, so the session ends. */
        if ((denied && remember_merge(s, h->pkt.subscribe.id, req) < 0) ||
            emit_filtered_subscribe(ps, h) != 0) {
            session_close_as(s, CONN_END_INTERNAL, CONN_END_INTERNAL, "the SUBSCRIBE cannot be forwarded");
            return PKT_CLOSE;
        }
        r = PKT_HANDLED;
    }
    chain_subscribe(s, req);
    return r;
}

/* ---- UNSUBSCRIBE ------------------------------------------------------ */

/* Whether a handler pointed any filter elsewhere; *bad: the first rewritten
 * one that is not a valid filter (index + 1, 0 when none). */
static bool unsub_changed(const struct mqtt_subscribe *u, const struct mgate_unsubscribe_req *req, uint32_t *bad)
{
    uint32_t off = 0;
    mqtt_str filter;
    bool changed = false;
    *bad = 0;
    for (uint32_t i = 0; i < req->count && mqtt_unsub_next(u, &off, &filter); i++) {
        if (bytes_same(req->topics[i], filter))
            continue;
        changed = true;
        if (!*bad && (!req->topics[i].p || !mqtt_topic_filter_valid(req->topics[i].p, req->topics[i].len)))
            *bad = i + 1;
    }
    return changed;
}

/* The UNSUBSCRIBE as the broker must get it: the filters the handlers left,
 * each with the mount point, as they were subscribed.  0, -1 (no memory),
 * PASS_DROPPED (not encodable, over the broker's maximum), or
 * UNSUB_TOO_LONG when the mount point makes a filter too long (it could
 * not have been subscribed either). */
#define UNSUB_TOO_LONG (PASS_DROPPED + 1)
static int emit_unsubscribe(struct pass *ps, const struct mqtt_packet *pkt, const struct mgate_unsubscribe_req *req)
{
    const struct mount *m = ps->s->mount;
    size_t size = 0;
    for (uint32_t i = 0; i < req->count; i++) {
        if (m && !mount_fits(m, req->topics[i]))
            return UNSUB_TOO_LONG;
        size += 2u + (m ? m->len : 0) + req->topics[i].len;
    }
    uint8_t *list = malloc(size ? size : 1), *w = list;
    if (!list)
        return -1;
    for (uint32_t i = 0; i < req->count; i++) {
        uint32_t n = (m ? m->len : 0) + req->topics[i].len;
        *w++ = (uint8_t)(n >> 8);
        *w++ = (uint8_t)n;
        if (m)
            mount_put_filter(m, req->topics[i], w);
        else
            memcpy(w, req->topics[i].p, req->topics[i].len);
        w += n;
    }
    struct mqtt_packet np = *pkt;
    np.subscribe.list = list;
    np.subscribe.list_len = (uint32_t)size;
    np.subscribe.count = req->count;
    int rc = pass_emit_packet(ps, &np);
    free(list);
    return rc;
}

/* A rewrite that cannot be sent ends the session, as for a SUBSCRIBE: the
 * original filter would leave the rewritten subscription on the broker,
 * and no answer would leave the client waiting for its UNSUBACK. */
static enum pkt_result forward_unsubscribe(struct pass *ps, const struct mqtt_packet *pkt,
                                           const struct mgate_unsubscribe_req *req, uint32_t bad)
{
    struct mgate_session *s = ps->s;
    if (bad) {
        const mgate_bytes *t = &req->topics[bad - 1];
        session_log(s, LOGL_WARN, "UNSUBSCRIBE: filter %u was rewritten to \"%.*s\", not a valid topic filter", bad,
                    (int)(t->len > 200 ? 200 : t->len), t->p ? (const char *)t->p : "");
        session_close_as(s, CONN_END_INTERNAL, CONN_END_NORMAL, "a handler rewrote an UNSUBSCRIBE filter to an invalid one");
        return PKT_CLOSE;
    }
    int rc = emit_unsubscribe(ps, pkt, req);
    if (rc == UNSUB_TOO_LONG) {
        session_protocol_error(s, MGATE_UP, MQTT_TOO_LARGE);
        return PKT_CLOSE;
    }
    if (rc != 0) {
        session_close_as(s, CONN_END_INTERNAL, CONN_END_INTERNAL, "the UNSUBSCRIBE cannot be forwarded");
        return PKT_CLOSE;
    }
    return PKT_HANDLED;
}

/* The filters go to the handlers that rewrite them (rewrite_unsubscribe),
 * then get the mount point, then the handlers hear of them (unsubscribe);
 * with neither handlers nor a mount point the packet goes as it came. */
static enum pkt_result up_unsubscribe(struct pass *ps, struct mqtt_packet *pkt)
{
    struct mgate_session *s = ps->s;
    if (!s->mount && !chain_wants_unsubscribe(s))
        return PKT_FORWARD;
    struct mqtt_subscribe *u = &pkt->subscribe;
    mgate_bytes *topics = calloc(u->count, sizeof(*topics));
    if (!topics) { /* the handlers' view of the subscriptions would go stale */
        session_close_as(s, CONN_END_INTERNAL, CONN_END_INTERNAL, "out of memory");
        return PKT_CLOSE;
    }
    struct mgate_unsubscribe_req req = {topics, 0};
    uint32_t off = 0, bad;
    mqtt_str filter;
    while (req.count < u->count && mqtt_unsub_next(u, &off, &filter))
        topics[req.count++] = to_bytes(filter);
    uint32_t n = req.count;
    chain_rewrite_unsubscribe(s, &req);
    req.count = n; /* filters may be pointed elsewhere, never added or removed */
    enum pkt_result r = PKT_FORWARD;
    if (unsub_changed(u, &req, &bad) || s->mount)
        r = forward_unsubscribe(ps, pkt, &req, bad);
    if (r != PKT_CLOSE)
        chain_unsubscribe(s, &req);
    free(topics);
    return r;
}

/* ---- dispatch --------------------------------------------------------- */

enum pkt_result up_finish(struct pass *ps, struct held *h, const uint8_t *raw, uint32_t len)
{
    switch (h->type) {
    case MQTT_CONNECT:
        return finish_connect(ps, h);
    case MQTT_PUBLISH:
        return finish_publish(ps, h, raw, len);
    default:
        return finish_subscribe(ps, h);
    }
}

/* Enhanced authentication (only then is the client read before its CONNACK,
 * flow.c): AUTH continues it, DISCONNECT gives up; anything else breaks
 * [MQTT-3.1.2-30] and is refused as the Protocol Error it is, never held:
 * the broker could not have answered it before its CONNACK either. */
static enum pkt_result up_before_connack(struct mgate_session *s, const struct mqtt_packet *pkt)
{
    if (pkt->type == MQTT_AUTH || pkt->type == MQTT_DISCONNECT)
        return PKT_FORWARD;
    reply_connack(s, MQTT_RC_PROTOCOL_ERROR);
    session_close_as(s, CONN_END_PROTOCOL, CONN_END_NORMAL, "packet other than AUTH before the CONNACK");
    return PKT_CLOSE;
}

enum pkt_result up_packet(struct pass *ps, const uint8_t *raw, uint32_t len, struct mqtt_packet *pkt)
{
    struct mgate_session *s = ps->s;
    if (s->state == SESSION_AWAIT_CONNECT) {
        if (pkt->type == MQTT_CONNECT)
            return up_connect(ps, raw, len, pkt);
        session_close_as(s, CONN_END_PROTOCOL, CONN_END_NORMAL, "first packet is not CONNECT");
        return PKT_CLOSE;
    }
    if (s->state == SESSION_AWAIT_CONNACK)
        return up_before_connack(s, pkt);
    switch (pkt->type) {
    case MQTT_CONNECT:
        session_protocol_error(s, MGATE_UP, MQTT_PROTOCOL_ERROR); /* a second CONNECT */
        return PKT_CLOSE;
    case MQTT_PUBLISH:
        return up_publish(ps, raw, len, pkt);
    case MQTT_SUBSCRIBE:
        return up_subscribe(ps, raw, len, pkt);
    case MQTT_UNSUBSCRIBE:
        return up_unsubscribe(ps, pkt);
    default:
        return PKT_FORWARD;
    }
}
