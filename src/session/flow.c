/*
 * The data path: frame the bytes one side sent, decode each packet, let the
 * direction's logic decide, and write unchanged packets to the other side in
 * runs straight from the input buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "session/internal.h"
#include "session/limits.h"

void pass_flush(struct pass *ps)
{
    if (!ps->run_len)
        return;
    if (ps->to)
        conn_write(ps->to, ps->run, ps->run_len);
    ps->run_len = 0;
}

/* An interceptor's replacement is peer input: one whole packet, valid for
 * the session's version from that side (mgate.h). */
static bool replacement_valid(struct pass *ps, const uint8_t *p, size_t len, const char *which)
{
    size_t total;
    struct mqtt_packet pkt;
    mqtt_rc rc = mqtt_frame(p, len, len, &total);
    if (rc == MQTT_OK && total != len)
        rc = MQTT_MALFORMED;
    if (rc == MQTT_OK)
        rc = mqtt_decode(p, len, ps->s->version, ps->dir == MGATE_UP, &pkt);
    if (rc == MQTT_OK || (rc == MQTT_BAD_VERSION && pkt.type == MQTT_CONNECT))
        return true;
    session_log(ps->s, LOGL_WARN, "the %s interceptor's replacement is not a valid packet (%s); not sent", which,
                mqtt_rc_name(rc));
    return false;
}

void pass_end(struct pass *ps)
{
    pass_flush(ps);
    if (ps->corked)
        conn_uncork(ps->corked);
    ps->corked = NULL;
}

/* Every packet that reaches a peer goes through here or through a run.
 * Packets made one by one (re-encoded, answered) are queued on `to`,
 * corked, and pass_end writes them with whatever followed in one call:
 * a stream whose every packet is re-encoded (a mount point) costs a write
 * per read, as an unchanged one does, not one per packet. */
int pass_emit(struct pass *ps, const uint8_t *pkt, size_t len)
{
    pass_flush(ps);
    if (!ps->corked && ps->to) {
        conn_cork(ps->to);
        ps->corked = ps->to;
    }
    const struct mgate_interceptor *ic = ps->s->p->interceptor;
    if (ic && ic->post) {
        mgate_bytes b = {pkt, (uint32_t)len};
        enum mgate_intercept r = ic->post(ps->s, (enum mgate_direction)ps->dir, &b);
        if (r == MGATE_DROP)
            return 0;
        if (r == MGATE_REPLACE) {
            pkt = b.p;
            len = b.len;
            if (!replacement_valid(ps, pkt, len, "post"))
                return 0; /* never sent: the interceptor's bug must not reach the peer */
        }
    }
    return ps->to ? conn_write(ps->to, pkt, len) : -1;
}

int pass_emit_packet(struct pass *ps, const struct mqtt_packet *pkt)
{
    uint8_t *buf = NULL;
    size_t need = mqtt_encode(pkt, ps->s->version, NULL, 0);
    if (need == 0) {
        /* A rewrite the protocol cannot carry (e.g. a topic over 64 KiB). */
        session_log(ps->s, LOGL_WARN, "rewritten %s cannot be encoded; dropped", mqtt_type_name(pkt->type));
        return PASS_DROPPED;
    }
    uint32_t limit = ps->dir == MGATE_UP ? ps->s->broker_max_packet : ps->s->client_max_packet;
    if (limit && need > limit) {
        /* v5: the receiver said it cannot take this; sending it would get the
         * connection closed, so the rewritten packet is dropped instead. */
        session_log(ps->s, LOGL_WARN, "rewritten %s of %zu bytes exceeds the peer's maximum packet size %u; dropped",
                    mqtt_type_name(pkt->type), need, limit);
        return PASS_DROPPED;
    }
    if (!(buf = malloc(need)))
        return -1;
    mqtt_encode(pkt, ps->s->version, buf, need);
    /* Checked like peer input: whatever a handler wrote into it, what mgate
     * sends is a packet the receiver must take (only re-encoded packets pay). */
    struct mqtt_packet check;
    mqtt_rc v = mqtt_decode(buf, need, ps->s->version, ps->dir == MGATE_UP, &check);
    bool lists = pkt->type == MQTT_SUBSCRIBE || pkt->type == MQTT_UNSUBSCRIBE;
    if (v == MQTT_OK && lists && check.subscribe.count != pkt->subscribe.count)
        v = MQTT_MALFORMED; /* the list's bytes do not say what mgate meant to send */
    if (v != MQTT_OK) {
        session_log(ps->s, LOGL_WARN, "rewritten %s is not a valid packet (%s); dropped", mqtt_type_name(pkt->type),
                    mqtt_rc_name(v));
        free(buf);
        return PASS_INVALID;
    }
    int rc = pass_emit(ps, buf, need);
    free(buf);
    return rc;
}

static void pass_forward(struct pass *ps, const uint8_t *raw, size_t len, bool in_input)
{
    if (!in_input || (ps->s->p->interceptor && ps->s->p->interceptor->post)) {
        pass_emit(ps, raw, len);
        return;
    }
    if (ps->run_len && ps->run + ps->run_len == raw) {
        ps->run_len += len;
        return;
    }
    pass_flush(ps);
    ps->run = raw;
    ps->run_len = len;
}

/* ---- request holders -------------------------------------------------- */

/* The decoded packet is copied in whole; only what follows it needs zeroing
 * (most of the holder's size is the packet: no memset of all of it per packet). */
static struct held *held_get(struct mgate_session *s, int dir, const struct mqtt_packet *pkt)
{
    struct held *h = s->list->spare;
    if (h)
        s->list->spare = NULL;
    else if (!(h = malloc(sizeof(*h))))
        return NULL;
    h->raw = NULL;
    h->raw_len = 0;
    h->pkt = *pkt;
    memset(&h->ask, 0, sizeof(*h) - offsetof(struct held, ask));
    h->dir = (uint8_t)dir;
    h->type = pkt->type;
    h->will_stage = false;
    return h;
}

void held_put(struct mgate_session *s, struct held *h)
{
    if (!h)
        return;
    ASSERT(!h->ask.pending); /* the handler may still hold it: never reused nor freed */
    if (h->raw) /* only a held (pending) packet has a copy: no free(NULL) per packet */
        free(h->raw);
    if (h->type == MQTT_SUBSCRIBE)
        free(h->ask.req.subscribe.filters);
    h->raw = NULL;
    if (!s->list->spare)
        s->list->spare = h;
    else
        free(h);
}

struct held *held_begin(struct pass *ps, const struct mqtt_packet *pkt)
{
    struct held *h = held_get(ps->s, ps->dir, pkt);
    if (!h)
        session_close_as(ps->s, CONN_END_INTERNAL, CONN_END_INTERNAL, "out of memory");
    return h;
}

/* mgate_handler_verdict_seconds: an answer given at once is in the first
 * bucket (timing every packet would cost more than the handler); a pending
 * one is timed on the loop clock. */
static inline enum metric_call call_of(const struct held *h)
{
    return h->type == MQTT_CONNECT                              ? METRIC_AUTH_CONNECT
           : h->type == MQTT_PUBLISH && h->dir == MGATE_UP ? METRIC_AUTH_PUBLISH
                                                           : METRIC_AUTH_SUBSCRIBE;
}

static void count_verdict(struct mgate_session *s, const struct held *h, uint64_t ms)
{
    struct metrics *m = session_metrics(s);
    METRIC_INC(m->verdicts[call_of(h)][metric_bucket(ms)]);
    METRIC_ADD(m->verdict_ms_sum[call_of(h)], ms);
}

static void held_done(struct ask *a);
bool held_owns(const struct ask *a) { return a->done == held_done; }
static enum pkt_result held_pend(struct pass *ps, struct held *h, const uint8_t *raw, uint32_t len);

static inline enum pkt_result held_finish_now(struct pass *ps, struct held *h, const uint8_t *raw, uint32_t len)
{
    METRIC_INC(ps->m->verdicts[call_of(h)][0]); /* answered now: the first bucket, nothing to add */
    enum pkt_result r = ps->dir == MGATE_UP ? up_finish(ps, h, raw, len) : down_finish(ps, h, raw, len);
    held_put(ps->s, h);
    return r;
}

/* The hot path: a PUBLISH either way, a SUBSCRIBE. */
enum pkt_result held_ask(struct pass *ps, struct held *h, enum ask_kind kind, const uint8_t *raw, uint32_t len)
{
    if (verdict_ask(ps->s, &h->ask, kind, held_done) == MGATE_PENDING)
        return held_pend(ps, h, raw, len);
    return held_finish_now(ps, h, raw, len);
}

/* A CONNECT: auth_connect, then its will (up_connect_will). */
enum pkt_result held_ask_connect(struct pass *ps, struct held *h, const uint8_t *raw, uint32_t len)
{
    enum mgate_verdict v = verdict_ask(ps->s, &h->ask, ASK_CONNECT, held_done);
    if (v == MGATE_ALLOW)
        v = up_connect_will(ps->s, h);
    return held_decide(ps, h, v, raw, len);
}

enum pkt_result held_decide(struct pass *ps, struct held *h, enum mgate_verdict v, const uint8_t *raw,
                            uint32_t len)
{
    if (v == MGATE_PENDING)
        return held_pend(ps, h, raw, len);
    return held_finish_now(ps, h, raw, len);
}

/* A view into the packet follows it to its copy; with no copy (out of
 * memory) it becomes empty, since the input it pointed into is reused. */
static void rebase(mgate_bytes *b, const uint8_t *from, uint32_t len, const uint8_t *to)
{
    if (b->p >= from && b->p < from + len)
        *b = to ? (mgate_bytes){to + (b->p - from), b->len} : (mgate_bytes){(const uint8_t *)"", 0};
}

static void rebase_req(struct held *h, const uint8_t *raw, uint32_t len, const uint8_t *copy)
{
    struct ask *a = &h->ask;
    rebase(&h->one_filter.filter, raw, len, copy);
    if (h->type == MQTT_CONNECT) {
        rebase(&a->req.connect.client_id, raw, len, copy);
        rebase(&a->req.connect.username, raw, len, copy);
        rebase(&a->req.connect.password, raw, len, copy);
        rebase(&a->will.topic, raw, len, copy);
        rebase(&a->will.payload, raw, len, copy);
        rebase(&a->will.will_properties, raw, len, copy);
    } else if (h->type == MQTT_PUBLISH && h->dir == MGATE_UP) {
        rebase(&a->req.publish.topic, raw, len, copy);
        rebase(&a->req.publish.payload, raw, len, copy);
    } else {
        for (uint32_t i = 0; i < a->req.subscribe.count; i++)
            rebase(&a->req.subscribe.filters[i].filter, raw, len, copy);
    }
    if (h->props)
        session_props_rebase(h, raw, len, copy);
}

/* Keep the packet: its bytes move out of the input buffer (which the
 * connection will reuse), so every field that pointed into them follows.
 * The handler holds the request until its resume, whatever happens here:
 * out of memory the session closes and the holder waits for it empty. */
static enum pkt_result held_pend(struct pass *ps, struct held *h, const uint8_t *raw, uint32_t len)
{
    struct mgate_session *s = ps->s;
    ASSERT(h->ask.pending && !s->held[ps->dir]);
    uint8_t *copy = malloc(len);
    s->held[ps->dir] = h;
    rebase_req(h, raw, len, copy);
    if (!copy) {
        session_close_as(s, CONN_END_INTERNAL, CONN_END_INTERNAL, "out of memory");
        return PKT_CLOSE;
    }
    memcpy(copy, raw, len);
    h->raw = copy;
    h->raw_len = len;
    mqtt_decode(copy, len, s->version, ps->dir == MGATE_UP, &h->pkt);
    if (h->resolved_topic.p >= raw && h->resolved_topic.p < raw + len)
        h->resolved_topic.p = copy + (h->resolved_topic.p - raw);
    pass_flush(ps);
    return PKT_HOLD;
}

/* The late verdict (verdict.c's completion): a CONNECT allowed goes on to
 * its will, maybe pending again; else the packet is finished now. */
static void held_done(struct ask *a)
{
    struct held *h = container_of(a, struct held, ask);
    struct mgate_session *s = a->s;
    int dir = h->dir;
    if (a->kind == ASK_CONNECT && a->verdict == MGATE_ALLOW && s->state != SESSION_CLOSING) {
        uint64_t since = a->since; /* the CONNECT's verdict is timed as one */
        if (up_connect_will(s, h) == MGATE_PENDING) {
            a->since = since;
            return; /* the packet stays held, reading stays paused */
        }
    }
    s->held[dir] = NULL;
    count_verdict(s, h, loop_now(s->loop) - a->since);
    if (s->state != SESSION_CLOSING) {
        struct pass ps = {s, dir, dir == MGATE_UP ? s->client : s->broker,
                          dir == MGATE_UP ? s->broker : s->client, NULL, 0, session_metrics(s)};
        enum pkt_result r = dir == MGATE_UP ? up_finish(&ps, h, h->raw, h->raw_len)
                                            : down_finish(&ps, h, h->raw, h->raw_len);
        if (r == PKT_FORWARD)
            pass_emit(&ps, h->raw, h->raw_len);
        pass_end(&ps);
        session_alloc_reset(s);
        if (r != PKT_CLOSE)
            session_resume_reading(s); /* unless another reason still holds it (a CONNACK to wait for) */
    }
    held_put(s, h);
}

/* ---- when a side is read -------------------------------------------- */

/*
 * A partly refused SUBSCRIBE leaves an entry (about 40 bytes, and one byte a
 * filter) until the broker's SUBACK comes back; a client that sends them
 * faster than the broker answers would grow the list without end.  32
 * entries cost about 1 KiB, and the walk of the list for each SUBACK stays
 * short; since reading resumes at the first SUBACK back (downstream.c), a
 * client that reads its answers keeps the speed it had without a bound.
 * One SUBSCRIBE may carry a quarter of MAX_PACKET_SIZE in filters, so the
 * filters they hold are bounded too: 64 Ki bytes, one packet's worth over.
 */
static bool merges_full(const struct mgate_session *s)
{
    if (s->merge_count >= SESSION_MAX_MERGES)
        return true;
    uint32_t filters = 0;
    for (const struct suback_merge *m = s->merges; m; m = m->next)
        filters += m->count;
    return filters >= SESSION_MAX_MERGE_FILTERS;
}

/* Output at or under half the mark: what the back-pressure waits for. */
static inline bool drained(const struct conn *c) { return c->out.len <= c->high_water / 2; }

/*
 * A side is not read while
 *  - a packet of its direction waits for a verdict (the rest wait in order);
 *  - the client's CONNECT waits for the broker's CONNACK: the server sends
 *    nothing before its CONNACK, so no answer to a pipelined packet may be
 *    made before it (but with enhanced authentication the client's AUTH
 *    packets must reach the broker before it: up_packet takes only those);
 *  - SUBSCRIBEs waiting for their SUBACK merge reached the bound (merges_full);
 *  - its own output is over the mark (what we send it, forwarded or our own
 *    answers, is not being read: taking more from it would make more);
 *  - the other side's output is over the mark (it cannot take what we read).
 * Pausing happens where the reason arises (session_on_data, held_pend); the
 * places that remove one call session_resume_reading, which asks all of them.
 */
bool session_may_read(const struct mgate_session *s, const struct conn *c)
{
    if (!c || s->state == SESSION_CLOSING)
        return false;
    bool up = c == s->client;
    const struct conn *to = up ? s->broker : s->client;
    if (s->held[up ? MGATE_UP : MGATE_DOWN] || !drained(c) || (to && !drained(to)))
        return false;
    return !up || (s->state != SESSION_AUTH_CONNECT && (s->state != SESSION_AWAIT_CONNACK || s->enhanced_auth) &&
                   !(s->merges && merges_full(s)));
}

void session_resume_reading(struct mgate_session *s)
{
    if (s->client && s->client->read_paused && session_may_read(s, s->client)) {
        if (s->packet_since) /* its packet in progress could not move while we did not read */
            s->packet_since = loop_now(s->loop);
        conn_resume_read(s->client);
    }
    if (s->broker && s->broker->read_paused && session_may_read(s, s->broker))
        conn_resume_read(s->broker);
}

/* After a client's packet of this type: must reading stop before the next?
 * Only a CONNECT (now waiting for the CONNACK) and a SUBSCRIBE (one more
 * merge) can make it so; other packets cost one compare. */
static inline bool client_must_wait(const struct mgate_session *s, uint8_t type)
{
    return (type == MQTT_CONNECT && s->state == SESSION_AWAIT_CONNACK && !s->enhanced_auth) ||
           (type == MQTT_SUBSCRIBE && s->merges && merges_full(s));
}

/* ---- the pass over one side's bytes ---------------------------------- */

/* A SUBSCRIBE whose id is that of one still waiting for its SUBACK merge:
 * the client reused an id in use ([MQTT-2.2.1-3]), and the two SUBACKs
 * could not be told apart. */
static bool merge_waits(const struct mgate_session *s, uint16_t id)
{
    for (const struct suback_merge *m = s->merges; m; m = m->next)
        if (m->id == id)
            return true;
    return false;
}

static enum pkt_result one_packet(struct pass *ps, const uint8_t *raw, uint32_t len)
{
    struct mgate_session *s = ps->s;
    const struct mgate_interceptor *ic = s->p->interceptor;
    bool in_input = true;
    if (ic && ic->pre) {
        mgate_bytes b = {raw, len};
        enum mgate_intercept r = ic->pre(s, (enum mgate_direction)ps->dir, &b);
        if (r == MGATE_DROP)
            return PKT_HANDLED;
        size_t total;
        if (r == MGATE_REPLACE) {
            if (mqtt_frame(b.p, b.len, b.len, &total) != MQTT_OK || total != b.len) {
                session_protocol_error(s, ps->dir, MQTT_MALFORMED);
                return PKT_CLOSE;
            }
            raw = b.p;
            len = b.len;
            in_input = false;
        }
    }
    struct mqtt_packet pkt;
    mqtt_rc rc = mqtt_decode(raw, len, s->version, ps->dir == MGATE_UP, &pkt);
    if (rc != MQTT_OK && !(rc == MQTT_BAD_VERSION && pkt.type == MQTT_CONNECT)) {
        session_protocol_error(s, ps->dir, rc);
        return PKT_CLOSE;
    }
    if (rc == MQTT_BAD_VERSION) { /* answered (so the client knows why), then closed as any refusal */
        reply_connack(s, MQTT_RC_UNSUPPORTED_VERSION);
        session_close_as(s, CONN_END_PROTOCOL, CONN_END_NORMAL, "CONNECT refused: unsupported protocol version");
        return PKT_CLOSE;
    }
    if (s->merges && pkt.type == MQTT_SUBSCRIBE && ps->dir == MGATE_UP && merge_waits(s, pkt.subscribe.id)) {
        session_protocol_error(s, MGATE_UP, MQTT_PROTOCOL_ERROR);
        return PKT_CLOSE;
    }
    enum pkt_result r = ps->dir == MGATE_UP ? up_packet(ps, raw, len, &pkt)
                                            : down_packet(ps, raw, len, &pkt);
    if (r == PKT_FORWARD)
        pass_forward(ps, raw, len, in_input);
    if (r != PKT_HOLD && s->allocs) {
        pass_flush(ps); /* a run may point into memory about to be freed */
        session_alloc_reset(s);
    }
    return r;
}

/*
 * Until its CONNECT was judged a client has proved nothing, so what it can
 * make mgate hold is bounded by far less than MAX_PACKET_SIZE (1 MiB by
 * default, per socket, for CONNECT_TIMEOUT).  64 KiB holds a CONNECT with a
 * long client id, a JWT for a password and a will of tens of KiB.
 */
#define CONNECT_MAX_SIZE (64u * 1024u)
static inline uint32_t frame_limit(const struct mgate_session *s, int dir)
{
    uint32_t max = s->p->max_packet_size;
    return dir == MGATE_UP && s->state == SESSION_AWAIT_CONNECT && max > CONNECT_MAX_SIZE ? CONNECT_MAX_SIZE : max;
}

size_t session_on_data(struct conn *c, const uint8_t *data, size_t len)
{
    struct mgate_session *s = c->owner;
    int dir = c == s->client ? MGATE_UP : MGATE_DOWN;
    if (s->state == SESSION_CLOSING)
        return len; /* nobody to give it to */
    if (s->held[dir])
        return 0;
    if (dir == MGATE_UP && s->state == SESSION_AWAIT_CONNACK && !s->enhanced_auth) {
        conn_pause_read(c); /* nothing is answered before the CONNACK (session_may_read) */
        return 0;
    }
    struct pass ps = {s, dir, c, dir == MGATE_UP ? s->broker : s->client, NULL, 0, session_metrics(s)};
    size_t off = 0;
    bool partial = false;
    while (off < len) {
        size_t total;
        mqtt_rc rc = mqtt_frame(data + off, len - off, frame_limit(s, dir), &total);
        if (rc == MQTT_NEED_MORE) {
            c->want = (uint32_t)total;
            partial = true;
            break;
        }
        if (rc != MQTT_OK) {
            pass_end(&ps);
            session_protocol_error(s, dir, rc);
            return len;
        }
        if (s->limits && dir == MGATE_UP && data[off] >> 4 == MQTT_PUBLISH && s->state == SESSION_OPEN) {
            enum limit_verdict v = limits_publish(s, c, data + off, (uint32_t)total);
            if (v == LIMIT_WAIT)
                break; /* the packet stays in c's input until the limit lets it through */
            if (v == LIMIT_REFUSED) {
                off += total;
                continue;
            }
        }
        uint8_t type = data[off] >> 4;
        METRIC_INC(ps.m->packets[dir][type]);
        METRIC_ADD(ps.m->bytes[dir], total);
        enum pkt_result r = one_packet(&ps, data + off, (uint32_t)total);
        off += total;
        if (r == PKT_CLOSE || s->state == SESSION_CLOSING) {
            pass_end(&ps);
            return len;
        }
        ps.to = dir == MGATE_UP ? s->broker : s->client; /* CONNECT dials the broker */
        if (r == PKT_HOLD || (dir == MGATE_UP && client_must_wait(s, type))) {
            conn_pause_read(c);
            break;
        }
    }
    pass_end(&ps);
    if (off == len)
        c->want = 0;
    /* Back-pressure: this side's own output (what we forwarded to it and
     * what we answered it ourselves) or the other side's is over its mark,
     * so stop reading this side until it drains (session_resume_reading).
     * Checked once per pass: a pass adds at most one read's worth of answers. */
    if (!c->read_paused && (conn_over_high_water(c) || (ps.to && conn_over_high_water(ps.to)))) {
        METRIC_INC(session_metrics(s)->backpressure_pauses[dir]);
        conn_pause_read(c);
    }
    if (dir == MGATE_UP && (partial || s->packet_since))
        session_packet_progress(s, partial, off);
    return off;
}
