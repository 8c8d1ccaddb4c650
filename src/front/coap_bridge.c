/*
 * One CoAP client's bridge to the MQTT broker (TARGET_PROTOCOL mqtt or
 * mqtts): its requests become MQTT, the broker's messages Observe
 * notifications.  docs/COAP.md "The bridge" says what a client sees.
 *
 * URIs as EMQX's CoAP gateway has them: `ps/{topic}` with the Uri-Query
 * parameters clientid/c, username/u, password/p or token/t (or the Go
 * mGate's auth=), qos/q and retain/r.  POST and PUT publish (2.04 once
 * written at QoS 0, after the CONNACK; once acknowledged at QoS 1 and 2); GET with Observe 0
 * subscribes (2.05 with Observe once SUBACKed), Observe 1 unsubscribes.
 *
 * Requests are judged one at a time, in order, through the relay's
 * holding (coap_relay.c leg_take, leg_done): auth_connect when the client
 * shows credentials it did not get in with, then auth_publish or
 * auth_subscribe.  Only then is the broker dialled, with the identity the
 * handlers approved (one MQTT session per peer, session/mqtt_client.h);
 * the broker's answer comes later, so the next request is judged meanwhile.
 * The answers of the last BR_EXCHANGES confirmable requests are kept by
 * message id: a retransmission is answered again, never published twice
 * (while its answer is still to come, it is ignored).
 *
 * Each broker message, for each observation whose filter it matches, is
 * one notification: queued (at most BR_QUEUE_MAX; then the broker is not
 * read, and QoS 0 messages beyond it are dropped), judged by auth_subscribe
 * going down, sent NON at QoS 0 and CON at QoS 1 and 2.  One CON is
 * outstanding at a time (NSTART 1), retransmitted as RFC 7252 4.2 says; no
 * ACK after MAX_RETRANSMIT, or a RST, cancels the observation and
 * unsubscribes.
 */
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "front/coap_int.h"
#include "mqtt/mqtt.h"
#include "session/mount.h"
#include "session/mqtt_client.h"

#define BR_KEEPALIVE 60             /* seconds */
#define BR_PING_TIMEOUT_MS 150000u  /* longer than a hold can last (93 s of retransmissions at ACK_TIMEOUT's most, 2 s) */
#define BR_INFLIGHT 8               /* PUBLISH, SUBSCRIBE, UNSUBSCRIBE waiting for the broker */
#define BR_EXCHANGES 8              /* requests remembered by message id */
#define BR_EXCHANGE_LIFETIME_MS 247000u /* RFC 7252 4.8.2 */
#define BR_ANSWER_MAX 32            /* header, token, Observe: mgate's answers have no payload */
#define BR_QUEUE_MAX 16             /* notifications waiting */
#define BR_MAX_RETRANSMIT 4
#define BR_OBSERVE_MASK 0xFFFFFFu   /* RFC 7641 4.4: 24 bits */

enum { BS_CONNECT = 1, BS_ACCESS }; /* legs[MGATE_UP].stage */
enum ex_state { EX_FREE, EX_BUSY, EX_DONE };

/* A request: its answer to come (BUSY), or sent and kept (DONE, CON only). */
struct br_exchange {
    struct coap_bridge *br;
    uint64_t at; /* when answered */
    uint16_t mid;
    uint8_t state, type, tkl, qos, len;
    bool retain;
    bool wait_ready; /* a QoS 0 PUBLISH written behind the CONNECT: answered on the CONNACK */
    uint8_t token[COAP_TOKEN_MAX];
    uint8_t answer[BR_ANSWER_MAX];
    char *filter; /* a registration's, until its SUBACK */
};

/* A filter to unsubscribe once the client has a slot free. */
struct br_unsub {
    struct br_unsub *next;
    char filter[];
};

struct br_observe {
    uint8_t tkl;
    uint8_t token[COAP_TOKEN_MAX];
    uint16_t last_mid; /* the last notification's: a RST for it cancels */
    uint32_t seq;
    char *filter;
};

/* A broker message for one observation. */
struct br_note {
    struct br_note *next;
    uint8_t qos, tkl;
    uint8_t token[COAP_TOKEN_MAX];
    uint16_t topic_len;
    uint32_t payload_len;
    uint8_t data[]; /* topic, NUL, payload */
};

struct coap_bridge {
    struct coap_peer *peer;
    struct mqtt_client *mc; /* NULL: none now (the next request dials) */
    struct mount *mount;    /* MOUNT_POINT as mc was dialled with (session/mount.h); NULL: none */
    bool held;              /* the broker is not read: the queue is full */
    bool judging;           /* the queue's head is with the handler (legs[MGATE_DOWN].ask) */
    char gen_id[28];        /* the client id when the client names none */
    struct br_exchange *cur; /* the request being judged */
    struct br_exchange ex[BR_EXCHANGES];
    unsigned ex_next;
    struct br_observe obs[COAP_OBSERVE_MAX];
    uint8_t nobs;
    struct br_unsub *unsubs; /* UNSUBSCRIBEs the client could not send yet (all its slots busy) */
    struct br_note *head, **tail;
    uint32_t queued;
    struct mgate_filter note_filter;
    /* the confirmable notification not acknowledged yet */
    uint8_t *con; /* NULL: none */
    size_t con_len;
    uint16_t con_mid;
    uint8_t con_tkl, con_tries;
    uint8_t con_token[COAP_TOKEN_MAX];
    uint32_t con_wait;
    struct loop_timer rtx;
};

static void pump(struct coap_bridge *br);

static struct metrics *metrics_of(struct coap_bridge *br) { return loop_metrics(br->peer->srv->loop); }
static struct loop *loop_of(struct coap_bridge *br) { return br->peer->srv->loop; }

static void empty_to_client(struct coap_peer *peer, enum coap_type type, uint16_t mid)
{
    uint8_t d[COAP_HEADER_LEN];
    struct coap_msg m = coap_empty(type, mid);
    if (coap_encode(&m, NULL, 0, d, sizeof(d)) == COAP_HEADER_LEN)
        coap_to_client(peer, d, sizeof(d));
}

/* ---- topics ------------------------------------------------------------------------- */

/* Whether MQTT filter f matches topic name t (a wildcard first level does
 * not match a $-topic). */
static bool filter_matches(const char *f, size_t flen, const uint8_t *t, size_t tlen)
{
    if (tlen && t[0] == '$' && flen && (f[0] == '+' || f[0] == '#'))
        return false;
    for (size_t i = 0, j = 0;; i++, j++) { /* i, j: the level's start in f, in t */
        if (flen - i == 1 && f[i] == '#')
            return true;
        size_t fe = i, te = j;
        while (fe < flen && f[fe] != '/')
            fe++;
        while (te < tlen && t[te] != '/')
            te++;
        bool plus = fe - i == 1 && f[i] == '+';
        if (!plus && (fe - i != te - j || memcmp(f + i, t + j, fe - i)))
            return false;
        bool fend = fe == flen, tend = te == tlen;
        if (tend && !fend) /* "a/#" matches "a" too */
            return flen - fe == 2 && f[fe + 1] == '#';
        if (fend || tend)
            return fend && tend;
        i = fe, j = te;
    }
}

/* ---- exchanges: requests by message id ------------------------------------------------- */

static struct br_exchange *exchange_find(struct coap_bridge *br, uint16_t mid)
{
    uint64_t now = loop_now(loop_of(br));
    for (unsigned i = 0; i < BR_EXCHANGES; i++) {
        struct br_exchange *x = &br->ex[i];
        if (x->type == COAP_CON && x->mid == mid &&
            (x->state == EX_BUSY || (x->state == EX_DONE && now - x->at < BR_EXCHANGE_LIFETIME_MS)))
            return x;
    }
    return NULL;
}

/* A slot for request m: the oldest one whose answer went; NULL when every
 * one waits for the broker. */
static struct br_exchange *exchange_new(struct coap_bridge *br, const struct coap_msg *m)
{
    for (unsigned k = 0; k < BR_EXCHANGES; k++) {
        struct br_exchange *x = &br->ex[br->ex_next++ % BR_EXCHANGES];
        if (x->state == EX_BUSY)
            continue;
        *x = (struct br_exchange){.br = br, .mid = m->mid, .state = EX_BUSY, .type = m->type, .tkl = m->tkl};
        memcpy(x->token, m->token, m->tkl);
        return x;
    }
    return NULL;
}

/* The request's answer: sent, and kept for a retransmission of a CON. */
static void answer(struct br_exchange *x, uint8_t code, const uint32_t *observe)
{
    struct coap_bridge *br = x->br;
    struct coap_msg req = {.type = x->type, .code = COAP_GET, .mid = x->mid, .tkl = x->tkl, .token = x->token};
    struct coap_msg m = coap_answer(&req, code, br->peer->next_mid++);
    uint8_t v[4];
    struct coap_opt opt = {COAP_OPT_OBSERVE, v, observe ? (uint32_t)coap_uint_put(v, *observe) : 0};
    ssize_t n = coap_encode(&m, &opt, observe ? 1 : 0, x->answer, sizeof(x->answer));
    x->len = n > 0 ? (uint8_t)n : 0;
    if (x->len)
        coap_to_client(br->peer, x->answer, x->len);
    if (COAP_CODE_CLASS(code) >= 4) /* the metric counts refusals */
        METRIC_INC(metrics_of(br)->coap_answers[COAP_CODE_CLASS(code) % 6]);
    free(x->filter);
    x->filter = NULL;
    x->at = loop_now(loop_of(br));
    x->state = x->type == COAP_CON ? EX_DONE : EX_FREE;
}

/* ---- observations ----------------------------------------------------------------------- */

static struct br_observe *observe_of(struct coap_bridge *br, uint8_t tkl, const uint8_t *token)
{
    for (unsigned i = 0; i < br->nobs; i++)
        if (br->obs[i].tkl == tkl && !memcmp(br->obs[i].token, token, tkl))
            return &br->obs[i];
    return NULL;
}

/* ---- the mount point ------------------------------------------------------------------------ */

/* *t as the broker knows it: the link's mount point before it, in *mem
 * (freed by the caller after the request is made); false when it cannot
 * be (over 65535 bytes, out of memory). */
static bool mounted(const struct coap_bridge *br, mgate_bytes *t, bool filter, uint8_t **mem)
{
    *mem = NULL;
    return !br->mount || (*mem = mount_dup(br->mount, *t, filter, t)) != NULL;
}

static enum mqc_status br_unsubscribe(struct coap_bridge *br, const char *filter, mqc_done_fn done, void *arg)
{
    mgate_bytes f = {(const uint8_t *)filter, (uint32_t)strlen(filter)};
    uint8_t *mem;
    if (!mounted(br, &f, true, &mem))
        return MQC_INVALID;
    enum mqc_status st = mqtt_client_unsubscribe(br->mc, &f, 1, done, arg);
    free(mem);
    return st;
}

/* Whether the link was dialled with the mount point the session has now. */
static bool same_mount(const struct coap_bridge *br)
{
    mgate_bytes now = mgate_session_mount_point(br->peer->s);
    return br->mount ? now.len == br->mount->len && !memcmp(now.p, br->mount->p, now.len) : !now.len;
}

static bool filter_used(const struct coap_bridge *br, const char *filter)
{
    for (unsigned i = 0; i < br->nobs; i++)
        if (!strcmp(br->obs[i].filter, filter))
            return true;
    return false;
}

/* The notifications waiting for an observation that ended go too (but the
 * one with the handler: its verdict finds no observation). */
static void queue_drop(struct coap_bridge *br, uint8_t tkl, const uint8_t *token)
{
    struct br_note **pp = br->judging ? &br->head->next : &br->head;
    while (*pp) {
        struct br_note *n = *pp;
        if (n->tkl == tkl && !memcmp(n->token, token, tkl)) {
            *pp = n->next;
            free(n);
            br->queued--;
        } else {
            pp = &n->next;
        }
    }
    br->tail = &br->head;
    while (*br->tail)
        br->tail = &(*br->tail)->next;
}

/* The observation ends: its filter is unsubscribed unless another one
 * uses it.  Returns its filter (the caller frees it). */
static char *observe_remove(struct coap_bridge *br, struct br_observe *o)
{
    char *filter = o->filter;
    uint8_t tkl = o->tkl, token[COAP_TOKEN_MAX];
    memcpy(token, o->token, tkl);
    *o = br->obs[--br->nobs];
    queue_drop(br, tkl, token);
    mgate_bytes t = {(const uint8_t *)filter, (uint32_t)strlen(filter)};
    struct mgate_unsubscribe_req u = {.topics = &t, .count = 1};
    session_front_unsubscribed(br->peer->s, &u);
    return filter;
}

/* The broker stops sending filter's messages, unless another observation
 * still uses it; when the client has no slot free now, as soon as it has
 * (unsub_retry), so that no subscription is left behind on the broker. */
static void unsubscribe(struct coap_bridge *br, const char *filter)
{
    if (!br->mc || filter_used(br, filter))
        return;
    if (br_unsubscribe(br, filter, NULL, NULL) != MQC_BUSY)
        return;
    size_t n = strlen(filter);
    struct br_unsub *u = malloc(sizeof(*u) + n + 1);
    if (!u) {
        session_log(br->peer->s, LOGL_ERROR, "coap: out of memory: %s stays subscribed until the session ends", filter);
        return;
    }
    memcpy(u->filter, filter, n + 1);
    u->next = br->unsubs;
    br->unsubs = u;
}

/* A slot may have come free: send the UNSUBSCRIBEs that waited for one. */
static void unsub_retry(struct coap_bridge *br)
{
    while (br->unsubs && br->mc) {
        struct br_unsub *u = br->unsubs;
        if (!filter_used(br, u->filter) && br_unsubscribe(br, u->filter, NULL, NULL) == MQC_BUSY)
            return;
        br->unsubs = u->next;
        free(u);
    }
}

static void unsubs_free(struct coap_bridge *br)
{
    for (struct br_unsub *u = br->unsubs, *next; u; u = next) {
        next = u->next;
        free(u);
    }
    br->unsubs = NULL;
}

/* Registrations sent and not SUBACKed yet: they take a place too. */
static unsigned subscribing(const struct coap_bridge *br)
{
    unsigned n = 0;
    for (unsigned i = 0; i < BR_EXCHANGES; i++)
        n += br->ex[i].state == EX_BUSY && br->ex[i].filter;
    return n;
}

/* Cancelled by the client (RST, no ACK): unsubscribed without an answer. */
static void observe_cancel(struct coap_bridge *br, struct br_observe *o, const char *why)
{
    char *filter = observe_remove(br, o);
    session_log(br->peer->s, LOGL_INFO, "coap: the observation of %s ends (%s)", filter, why);
    unsubscribe(br, filter);
    free(filter);
}

/* Every observation ends with a 5.03 notification (RFC 7641 3.2: an error
 * ends it at the client): the broker session is gone, or the peer is. */
static void observe_end_all(struct coap_bridge *br)
{
    while (br->nobs) {
        struct br_observe *o = &br->obs[br->nobs - 1];
        struct coap_msg req = {.type = COAP_NON, .code = COAP_GET, .tkl = o->tkl, .token = o->token};
        struct coap_msg m = coap_answer(&req, COAP_SERVICE_UNAVAILABLE, br->peer->next_mid++);
        uint8_t d[COAP_HEADER_LEN + COAP_TOKEN_MAX];
        ssize_t n = coap_encode(&m, NULL, 0, d, sizeof(d));
        if (n > 0)
            coap_to_client(br->peer, d, (size_t)n);
        free(observe_remove(br, o));
    }
}

/* ---- notifications ------------------------------------------------------------------------- */

static void con_clear(struct coap_bridge *br)
{
    free(br->con);
    br->con = NULL;
    loop_timer_stop(loop_of(br), &br->rtx);
}

static void hold(struct coap_bridge *br, bool on)
{
    if (br->held != on && br->mc)
        mqtt_client_hold(br->mc, on);
    br->held = on && br->mc;
}

static void on_rtx(struct loop *l, struct loop_timer *t)
{
    struct coap_bridge *br = container_of(t, struct coap_bridge, rtx);
    if (br->con_tries < BR_MAX_RETRANSMIT) {
        br->con_tries++;
        br->con_wait *= 2;
        coap_to_client(br->peer, br->con, br->con_len);
        br->peer->last_seen = loop_now(l); /* the peer stays until this ends one way or the other */
        loop_timer_start(l, t, br->con_wait, on_rtx);
        return;
    }
    struct br_observe *o = observe_of(br, br->con_tkl, br->con_token);
    con_clear(br);
    METRIC_INC(metrics_of(br)->coap_dropped);
    if (o)
        observe_cancel(br, o, "the client acknowledged no notification");
    pump(br);
}

/* One broker message to the client, as a notification of its observation
 * (gone meanwhile: nothing). */
static void notify(struct coap_bridge *br, const struct br_note *n)
{
    struct br_observe *o = observe_of(br, n->tkl, n->token);
    if (!o)
        return;
    struct coap_peer *peer = br->peer;
    o->seq = (o->seq + 1) & BR_OBSERVE_MASK;
    /* QoS 1 and 2 are confirmable; a stream of NON ones is too, now and then:
     * once the client has said nothing for half IDLE_TIMEOUT (RFC 7641 4.5),
     * so that a client that is gone, or an address that was spoofed, stops
     * getting them after the retransmissions rather than never */
    bool check = !br->con && loop_now(loop_of(br)) - peer->last_heard >= peer->srv->cs->idle_ms / 2;
    struct coap_msg m = {.type = n->qos || check ? COAP_CON : COAP_NON, .code = COAP_CONTENT,
                         .mid = peer->next_mid++, .tkl = o->tkl, .token = o->token,
                         .payload = {n->data + n->topic_len + 1, n->payload_len}};
    uint8_t v[4];
    struct coap_opt opt = {COAP_OPT_OBSERVE, v, (uint32_t)coap_uint_put(v, o->seq)};
    size_t cap = COAP_HEADER_LEN + COAP_TOKEN_MAX + 8 + n->payload_len;
    uint8_t *d = malloc(cap);
    ssize_t len = d ? coap_encode(&m, &opt, 1, d, cap) : -1;
    if (len < 0 || (size_t)len > peer->srv->cs->max_datagram) {
        free(d);
        METRIC_INC(metrics_of(br)->coap_dropped);
        session_log(peer->s, LOGL_WARN, "coap: a message on %s does not fit a datagram (MAX_PACKET_SIZE); dropped",
                    (const char *)n->data);
        return;
    }
    coap_to_client(peer, d, (size_t)len);
    METRIC_INC(metrics_of(br)->coap_datagrams[MGATE_DOWN]);
    METRIC_ADD(metrics_of(br)->coap_bytes[MGATE_DOWN], (size_t)len);
    o->last_mid = m.mid;
    peer->last_seen = loop_now(loop_of(br)); /* an observation in use keeps the peer */
    if (m.type == COAP_NON) {
        free(d);
        return;
    }
    br->con = d;
    br->con_len = (size_t)len;
    br->con_mid = m.mid;
    br->con_tkl = o->tkl;
    memcpy(br->con_token, o->token, o->tkl);
    br->con_tries = 0;
    uint32_t r = 0;
    RAND_bytes((uint8_t *)&r, sizeof(r)); /* failed: the shortest wait */
    uint32_t ack = br->peer->srv->cs->ack_ms; /* ACK_TIMEOUT, RFC 7252 4.8 */
    br->con_wait = ack + r % (ack / 2 + 1);  /* ACK_RANDOM_FACTOR 1.5 */
    loop_timer_start(loop_of(br), &br->rtx, br->con_wait, on_rtx);
}

/* The queue's head was judged. */
static void note_decided(struct coap_bridge *br, bool ok)
{
    struct br_note *n = br->head;
    if (!(br->head = n->next))
        br->tail = &br->head;
    br->queued--;
    if (ok)
        notify(br, n);
    else
        METRIC_INC(metrics_of(br)->publish_refused[MGATE_DOWN]);
    free(n);
    leg_done(br->peer, &br->peer->legs[MGATE_DOWN]);
}

static void on_verdict(struct ask *a);

/* Judge and send what waits, in order, until a verdict or a client's ACK
 * is awaited; below half the queue, the broker is read again. */
static void pump(struct coap_bridge *br)
{
    struct coap_peer *peer = br->peer;
    while (!peer->ended && !br->judging && !br->con && br->head) {
        struct br_note *n = br->head;
        struct coap_leg *leg = &peer->legs[MGATE_DOWN];
        br->note_filter = (struct mgate_filter){.filter = {n->data, n->topic_len}, .qos = n->qos};
        leg->ask.req.subscribe = (struct mgate_subscribe_req){.dir = MGATE_DOWN, .filters = &br->note_filter,
                                                              .count = 1};
        enum mgate_verdict v = verdict_ask(peer->s, &leg->ask, ASK_SUBSCRIBE, on_verdict);
        if (v == MGATE_PENDING) {
            br->judging = true;
            return;
        }
        note_decided(br, v == MGATE_ALLOW && !br->note_filter.denied);
    }
    if (br->held && br->queued <= BR_QUEUE_MAX / 2)
        hold(br, false);
}

static void on_message(struct mqtt_client *mc, void *ctx, const struct mqtt_publish *pub)
{
    (void)mc;
    struct coap_bridge *br = ctx;
    if (pub->qos == 0 && br->queued >= BR_QUEUE_MAX) { /* the client is behind: QoS 0 may be lost */
        METRIC_INC(metrics_of(br)->coap_dropped);
        return;
    }
    mgate_bytes topic = {pub->topic.p, pub->topic.len};
    if (br->mount && !mount_strip(br->mount, topic, &topic)) { /* never the client's: acked, dropped */
        METRIC_INC(metrics_of(br)->mount_dropped);
        session_log(br->peer->s, LOGL_WARN, "coap: a broker PUBLISH outside the mount point dropped");
        return;
    }
    for (unsigned i = 0; i < br->nobs; i++) {
        struct br_observe *o = &br->obs[i];
        if (!filter_matches(o->filter, strlen(o->filter), topic.p, topic.len))
            continue;
        struct br_note *n = malloc(sizeof(*n) + topic.len + 1u + pub->payload.len);
        if (!n) {
            METRIC_INC(metrics_of(br)->coap_dropped);
            continue;
        }
        *n = (struct br_note){.qos = pub->qos, .tkl = o->tkl, .topic_len = (uint16_t)topic.len,
                              .payload_len = pub->payload.len};
        memcpy(n->token, o->token, o->tkl);
        memcpy(n->data, topic.p, topic.len);
        n->data[topic.len] = '\0';
        if (pub->payload.len)
            memcpy(n->data + topic.len + 1, pub->payload.p, pub->payload.len);
        *br->tail = n;
        br->tail = &n->next;
        br->queued++;
    }
    if (br->queued >= BR_QUEUE_MAX) /* QoS 1 and 2 wait at the broker (one message may pass it by the observations) */
        hold(br, true);
    pump(br);
}

/* ---- the broker connection ------------------------------------------------------------------- */

static void link_gone(struct coap_bridge *br)
{
    con_clear(br);
    observe_end_all(br); /* and what waits for them, but for a notification with the handler */
    br->held = false;
}

/* The CONNACK came (ok) or the connection ended first: the QoS 0
 * PUBLISHes written behind the CONNECT are answered. */
static void settle_written(struct coap_bridge *br, bool ok)
{
    for (unsigned i = 0; i < BR_EXCHANGES; i++)
        if (br->ex[i].state == EX_BUSY && br->ex[i].wait_ready)
            answer(&br->ex[i], ok ? COAP_CHANGED : COAP_SERVICE_UNAVAILABLE, NULL);
}

static void on_ready(struct mqtt_client *mc, void *ctx)
{
    (void)mc;
    settle_written(ctx, true);
}

static void on_closed(struct mqtt_client *mc, void *ctx, enum mqc_end why, uint8_t code)
{
    (void)mc;
    struct coap_bridge *br = ctx;
    settle_written(br, false);
    br->mc = NULL; /* the requests waiting were answered 5.03 (MQC_FAILED) */
    session_log(br->peer->s, why == MQC_END_LOST ? LOGL_DEBUG : LOGL_WARN,
                "coap: the broker connection ended (%s%u); observations end with 5.03",
                why == MQC_END_REFUSED ? "CONNECT refused, code " : "reason ", why == MQC_END_REFUSED ? code : why);
    link_gone(br);
}

static const struct mqtt_client_cbs link_cbs = {.on_ready = on_ready, .on_closed = on_closed, .on_message = on_message};

/* The broker connection, dialled now when there is none. */
static bool link_up(struct coap_bridge *br)
{
    if (br->mc)
        return true;
    struct mgate_session *s = br->peer->s;
    mgate_bytes id = mgate_session_client_id(s), user = mgate_session_username(s), pass = mgate_session_password(s);
    mgate_bytes mount = mgate_session_mount_point(s);
    free(br->mount);
    if (!(br->mount = mount_new(mount)) && mount.len) {
        session_log(s, LOGL_WARN, "coap: out of memory keeping the mount point");
        return false;
    }
    struct mqtt_client_opts o = {
        .p = br->peer->srv->p, .s = s, .client_id = id, .username = user, .password = pass,
        .has_username = user.len > 0,
        .has_password = pass.len > 0 && user.len > 0, /* 3.1.1: no password without a username */
        .clean_session = true, .version = MQTT_V311, .keepalive = BR_KEEPALIVE,
        .ping_timeout_ms = BR_PING_TIMEOUT_MS, .max_inflight = BR_INFLIGHT, .cbs = &link_cbs, .ctx = br};
    if (!(br->mc = mqtt_client_open(loop_of(br), &o)))
        session_log(s, LOGL_WARN, "coap: cannot open a broker connection: %s", strerror(errno));
    return br->mc != NULL;
}

static void link_close(struct coap_bridge *br)
{
    if (!br->mc)
        return;
    mqtt_client_close(br->mc); /* no callback any more: what waits for the broker is answered here */
    br->mc = NULL;
    unsubs_free(br); /* a clean session: its subscriptions go with it */
    for (unsigned i = 0; i < BR_EXCHANGES; i++)
        if (br->ex[i].state == EX_BUSY && &br->ex[i] != br->cur)
            answer(&br->ex[i], COAP_SERVICE_UNAVAILABLE, NULL);
    link_gone(br);
}

/* ---- the broker's answers ------------------------------------------------------------------- */

static uint8_t code_of(enum mqc_status st, uint8_t ok)
{
    return st == MQC_OK ? ok : st == MQC_REFUSED ? COAP_FORBIDDEN : COAP_SERVICE_UNAVAILABLE;
}

static void pub_done(void *arg, enum mqc_status st, uint8_t code, const uint8_t *codes, uint32_t n)
{
    (void)code, (void)codes, (void)n;
    struct br_exchange *x = arg;
    unsub_retry(x->br);
    if (st == MQC_OK && !mqtt_client_ready(x->br->mc)) /* QoS 0: written, but the broker may refuse us */
        x->wait_ready = true;
    else
        answer(x, code_of(st, COAP_CHANGED), NULL);
}

static void sub_done(void *arg, enum mqc_status st, uint8_t code, const uint8_t *codes, uint32_t n)
{
    (void)code;
    struct br_exchange *x = arg;
    struct coap_bridge *br = x->br;
    unsub_retry(br);
    if (st == MQC_OK && (!n || codes[0] >= 0x80))
        st = MQC_REFUSED;
    struct br_observe *o = st == MQC_OK ? observe_of(br, x->tkl, x->token) : NULL;
    char *old = o ? o->filter : NULL; /* registered again: the same token, maybe another filter */
    if (st == MQC_OK && !o && br->nobs < COAP_OBSERVE_MAX) {
        o = &br->obs[br->nobs++];
        *o = (struct br_observe){.tkl = x->tkl};
        memcpy(o->token, x->token, x->tkl);
    } else if (st == MQC_OK && !o) { /* subscribed, but no room to observe it: not left behind */
        st = MQC_BUSY;
        unsubscribe(br, x->filter);
    }
    if (!o)
        return answer(x, code_of(st, 0), NULL);
    o->filter = x->filter;
    x->filter = NULL;
    o->seq = (o->seq + 1) & BR_OBSERVE_MASK;
    if (old && strcmp(old, o->filter))
        unsubscribe(br, old);
    free(old);
    answer(x, COAP_CONTENT, &o->seq);
}

static void unsub_done(void *arg, enum mqc_status st, uint8_t code, const uint8_t *codes, uint32_t n)
{
    (void)code, (void)codes, (void)n;
    struct br_exchange *x = arg;
    unsub_retry(x->br);
    answer(x, code_of(st, COAP_CONTENT), NULL);
}

/* ---- requests ------------------------------------------------------------------------------ */

static void request_done(struct coap_bridge *br, uint8_t code)
{
    if (code)
        answer(br->cur, code, NULL);
    br->cur = NULL;
    leg_done(br->peer, &br->peer->legs[MGATE_UP]);
}

static void refuse(struct coap_bridge *br, uint8_t code, const char *why)
{
    session_log(br->peer->s, LOGL_INFO, "coap: refused (%s)", why);
    request_done(br, code);
}

static mgate_bytes topic_of(struct coap_leg *leg)
{
    const char *t = (const char *)leg->cur->data + leg->cur->len + 3; /* after "ps/" */
    return (mgate_bytes){(const uint8_t *)t, (uint32_t)strlen(t)};
}

static uint8_t mqtt_status_code(struct coap_bridge *br, enum mqc_status st)
{
    return st == MQC_INVALID && br->mc && mqtt_client_ready(br->mc) ? COAP_BAD_REQUEST : COAP_SERVICE_UNAVAILABLE;
}

static void access_decided(struct coap_bridge *br, bool ok)
{
    struct coap_peer *peer = br->peer;
    struct coap_leg *leg = &peer->legs[MGATE_UP];
    struct ask *a = &leg->ask;
    struct br_exchange *x = br->cur;
    enum mqc_status st;
    if (a->kind == ASK_PUBLISH) {
        struct mgate_publish_req *r = &a->req.publish;
        if (!ok) {
            METRIC_INC(metrics_of(br)->publish_refused[MGATE_UP]);
            return refuse(br, refusal_code(r->reason, COAP_FORBIDDEN), "auth_publish");
        }
        mgate_bytes topic = r->topic;
        uint8_t *mem = NULL;
        if (!link_up(br))
            st = MQC_FAILED;
        else if (!mounted(br, &topic, false, &mem))
            st = MQC_INVALID;
        else
            st = mqtt_client_publish(br->mc, topic, r->payload, r->qos > 2 ? 2 : r->qos, r->retain, pub_done, x);
        free(mem);
        if (st != MQC_OK)
            return refuse(br, mqtt_status_code(br, st), "the PUBLISH cannot be sent");
        METRIC_INC(metrics_of(br)->coap_datagrams[MGATE_UP]);
        METRIC_ADD(metrics_of(br)->coap_bytes[MGATE_UP], leg->cur->len);
        session_front_published(peer->s, r);
        br->cur = NULL; /* pub_done answers */
        return request_done(br, 0);
    }
    struct mgate_filter *f = &a->req.subscribe.filters[0];
    if (!ok || f->denied) {
        METRIC_INC(metrics_of(br)->subscribe_refused);
        return refuse(br, refusal_code(a->req.subscribe.reason, COAP_FORBIDDEN), "auth_subscribe");
    }
    uint8_t qos = f->qos > 2 ? 2 : f->qos;
    if (!(x->filter = malloc(f->filter.len + 1u)))
        return refuse(br, COAP_SERVICE_UNAVAILABLE, "out of memory");
    memcpy(x->filter, f->filter.p, f->filter.len);
    x->filter[f->filter.len] = '\0';
    mgate_bytes filter = f->filter;
    uint8_t *mem = NULL;
    st = !link_up(br)                        ? MQC_FAILED
         : !mounted(br, &filter, true, &mem) ? MQC_INVALID
                                             : mqtt_client_subscribe(br->mc, &filter, &qos, 1, sub_done, x);
    free(mem);
    if (st != MQC_OK)
        return refuse(br, mqtt_status_code(br, st), "the SUBSCRIBE cannot be sent");
    session_front_subscribed(peer->s, &a->req.subscribe);
    br->cur = NULL; /* sub_done answers */
    request_done(br, 0);
}

static void ask_access(struct coap_bridge *br)
{
    struct coap_peer *peer = br->peer;
    struct coap_leg *leg = &peer->legs[MGATE_UP];
    struct ask *a = &leg->ask;
    enum mgate_verdict v;
    leg->stage = BS_ACCESS;
    if (leg->msg.code != COAP_GET) {
        a->req.publish = (struct mgate_publish_req){
            .dir = MGATE_UP, .topic = topic_of(leg), .qos = br->cur->qos, .retain = br->cur->retain,
            .payload = {leg->msg.payload.p, (uint32_t)leg->msg.payload.len}};
        v = verdict_ask(peer->s, a, ASK_PUBLISH, on_verdict);
    } else {
        leg->filter = (struct mgate_filter){.filter = topic_of(leg), .qos = br->cur->qos};
        a->req.subscribe = (struct mgate_subscribe_req){.dir = MGATE_UP, .filters = &leg->filter, .count = 1};
        v = verdict_ask(peer->s, a, ASK_SUBSCRIBE, on_verdict);
    }
    if (v != MGATE_PENDING)
        access_decided(br, v == MGATE_ALLOW);
}

/* The client's credentials, the bridge's way: token/t is a password too,
 * and a client naming no client id gets one of mgate's. */
static void bridge_cred(struct coap_bridge *br, const struct coap_msg *m, struct coap_cred *c)
{
    cred_of(m, c);
    if (!c->has_pass)
        c->has_pass = coap_uri_query(m, "token", &c->pass) || coap_uri_query(m, "t", &c->pass);
    if (!c->cid.len)
        c->cid = (coap_view){(const uint8_t *)br->gen_id, strlen(br->gen_id)};
}

/* The session's identity, as the handlers left it, as one byte string
 * (coap_relay.c cred_key): its length, 0 when too long to compare. */
static size_t identity_key(const struct coap_bridge *br, uint8_t *out)
{
    const struct mgate_session *s = br->peer->s;
    mgate_bytes id = mgate_session_client_id(s), user = mgate_session_username(s), pass = mgate_session_password(s);
    struct coap_cred c = {.user = {user.p, user.len}, .pass = {pass.p, pass.len}, .cid = {id.p, id.len},
                          .has_user = user.len > 0, .has_pass = pass.len > 0};
    return cred_key(&c, out, COAP_CRED_KEY_MAX);
}

static void connect_decided(struct coap_bridge *br, bool ok)
{
    struct coap_peer *peer = br->peer;
    struct coap_leg *leg = &peer->legs[MGATE_UP];
    struct mgate_connect_req *c = &leg->ask.req.connect;
    if (!ok) {
        coap_auth_refused(peer);
        return refuse(br, refusal_code(c->reason, COAP_UNAUTHORIZED), "auth_connect");
    }
    uint8_t mount_refused = session_mount_settle(peer->s, c->has_username ? c->username : (mgate_bytes){NULL, 0},
                                                 c->client_id);
    if (mount_refused) { /* as a refused auth_connect: the identity the client had stands, with its link */
        coap_auth_refused(peer);
        return refuse(br, mount_refused == MQTT_RC_SERVER_BUSY ? COAP_SERVICE_UNAVAILABLE : COAP_UNAUTHORIZED,
                      "MOUNT_POINT cannot take this username or client id");
    }
    struct coap_cred cred;
    bridge_cred(br, &leg->msg, &cred);
    uint8_t before[COAP_CRED_KEY_MAX], after[COAP_CRED_KEY_MAX];
    size_t nb = identity_key(br, before); /* what the broker session (if any) was opened with */
    if (!coap_auth_accept(peer, &cred, c)) { /* CLIENT_ID_POLICY */
        link_close(br); /* its broker session may be another identity's */
        return refuse(br, COAP_UNAUTHORIZED, "CLIENT_ID_POLICY");
    }
    size_t na = identity_key(br, after);
    if (!nb || nb != na || memcmp(before, after, na) || !same_mount(br))
        link_close(br); /* another identity (or tenant): another MQTT session */
    session_front_connected(peer->s);
    ask_access(br);
}

static void on_verdict(struct ask *a)
{
    struct coap_leg *leg = container_of(a, struct coap_leg, ask); /* the session no longer knows an ended peer */
    struct coap_peer *peer = container_of(leg - leg->dir, struct coap_peer, legs[0]);
    if (peer->ended) {
        free(leg->cur);
        leg->cur = NULL;
        if (leg->dir == MGATE_DOWN && peer->br) { /* the bridge waited for this (coap_bridge_end) */
            free(peer->br->head);
            unsubs_free(peer->br);
            free(peer->br->mount);
            free(peer->br);
            peer->br = NULL;
        }
        coap_peer_unpend(peer);
        return;
    }
    struct coap_bridge *br = peer->br;
    bool ok = a->verdict == MGATE_ALLOW;
    if (leg->dir == MGATE_DOWN) {
        br->judging = false;
        note_decided(br, ok && !br->note_filter.denied);
        return pump(br);
    }
    if (leg->stage == BS_CONNECT)
        connect_decided(br, ok);
    else
        access_decided(br, ok);
}

/* GET with Observe 1: the observation (by token, else by filter) ends. */
static void deregister(struct coap_bridge *br, mgate_bytes topic)
{
    struct coap_msg *m = &br->peer->legs[MGATE_UP].msg;
    struct br_observe *o = observe_of(br, m->tkl, m->token);
    for (unsigned i = 0; !o && i < br->nobs; i++)
        if (strlen(br->obs[i].filter) == topic.len && !memcmp(br->obs[i].filter, topic.p, topic.len))
            o = &br->obs[i];
    if (!o)
        return request_done(br, COAP_CONTENT); /* nothing observed: nothing to do */
    char *filter = observe_remove(br, o);
    enum mqc_status st = br->mc && !filter_used(br, filter) ? br_unsubscribe(br, filter, unsub_done, br->cur)
                                                            : MQC_INVALID;
    if (st == MQC_BUSY)
        unsubscribe(br, filter); /* no slot now: sent as soon as one is free */
    free(filter);
    if (st != MQC_OK)
        return request_done(br, COAP_CONTENT);
    br->cur = NULL; /* unsub_done answers */
    request_done(br, 0);
}

static bool query(const struct coap_msg *m, const char *name, const char *brief, coap_view *v)
{
    return coap_uri_query(m, name, v) || coap_uri_query(m, brief, v);
}

static bool is(coap_view v, const char *word) { return v.len == strlen(word) && !memcmp(v.p, word, v.len); }

/* A request the exchange x was made for, its copy in legs[MGATE_UP]. */
static void request(struct coap_bridge *br, size_t n)
{
    struct coap_peer *peer = br->peer;
    struct coap_leg *leg = &peer->legs[MGATE_UP];
    struct coap_msg *m = &leg->msg;
    char *path = (char *)leg->cur->data + n;
    if (coap_uri_path(m, path, n + 1) < 0)
        return refuse(br, COAP_BAD_REQUEST, "a Uri-Path segment holds '/' or NUL, or is . or ..");
    if (strncmp(path, "ps/", 3))
        return refuse(br, COAP_NOT_FOUND, "the path is not under ps/");
    mgate_bytes topic = topic_of(leg);
    coap_view v;
    if (query(m, "qos", "q", &v)) {
        if (v.len != 1 || v.p[0] < '0' || v.p[0] > '2')
            return refuse(br, COAP_BAD_REQUEST, "qos is 0, 1 or 2");
        br->cur->qos = (uint8_t)(v.p[0] - '0');
    }
    if (query(m, "retain", "r", &v)) {
        if (!is(v, "true") && !is(v, "1") && !is(v, "false") && !is(v, "0"))
            return refuse(br, COAP_BAD_REQUEST, "retain is true or false");
        br->cur->retain = is(v, "true") || is(v, "1");
    }
    uint32_t obs = 0;
    if (m->code == COAP_GET) {
        if (!coap_opt_uint(m, COAP_OPT_OBSERVE, &obs) || obs > 1)
            return refuse(br, COAP_BAD_REQUEST, "a GET is an Observe registration (0) or deregistration (1)");
        if (obs == 1)
            return deregister(br, topic);
        if (!mqtt_topic_filter_valid(topic.p, topic.len))
            return refuse(br, COAP_BAD_REQUEST, "not a topic filter");
        if (coap_shared_prefix((const char *)topic.p, topic.len)) /* its messages would not match it here */
            return refuse(br, COAP_BAD_REQUEST, "a shared subscription");
        if (br->nobs + subscribing(br) >= COAP_OBSERVE_MAX && !observe_of(br, m->tkl, m->token))
            return refuse(br, COAP_SERVICE_UNAVAILABLE, "too many observations");
    } else if (!mqtt_topic_name_valid(topic.p, topic.len)) {
        return refuse(br, COAP_BAD_REQUEST, "not a topic name (empty, a wildcard, not UTF-8)");
    }
    struct coap_cred cred;
    bridge_cred(br, m, &cred);
    if (same_cred(peer, &cred))
        return ask_access(br);
    if (coap_auth_wait(peer))
        return refuse(br, COAP_UNAUTHORIZED, "new credentials a moment after refused ones");
    coap_connect_req(peer, &cred, &leg->ask.req.connect);
    leg->stage = BS_CONNECT;
    session_mount_begin(peer->s);
    enum mgate_verdict verdict = verdict_ask(peer->s, &leg->ask, ASK_CONNECT, on_verdict);
    if (verdict != MGATE_PENDING)
        connect_decided(br, verdict == MGATE_ALLOW);
}

/* An empty message: the ACK or RST of a notification, or a ping. */
static void empty_from_client(struct coap_bridge *br, const struct coap_msg *m)
{
    if (m->type == COAP_CON) { /* a ping: RST (RFC 7252 4.3) */
        empty_to_client(br->peer, COAP_RST, m->mid);
        return;
    }
    bool con = br->con && br->con_mid == m->mid;
    struct br_observe *o = con ? observe_of(br, br->con_tkl, br->con_token) : NULL;
    for (unsigned i = 0; !con && i < br->nobs; i++)
        if (br->obs[i].last_mid == m->mid)
            o = &br->obs[i];
    if (con)
        con_clear(br);
    if (m->type == COAP_RST && o)
        observe_cancel(br, o, "the client reset a notification");
    pump(br);
}

static struct coap_bridge *bridge_new(struct coap_peer *peer)
{
    struct coap_bridge *br = calloc(1, sizeof(*br));
    uint8_t r[8];
    if (!br || RAND_bytes(r, sizeof(r)) != 1) {
        unsubs_free(br);
        free(br);
        return NULL;
    }
    br->peer = peer;
    br->tail = &br->head;
    int o = snprintf(br->gen_id, sizeof(br->gen_id), "mgate-coap-");
    for (size_t i = 0; i < sizeof(r); i++)
        o += snprintf(br->gen_id + o, sizeof(br->gen_id) - (size_t)o, "%02x", r[i]);
    return br;
}

void coap_bridge_datagram(struct coap_peer *peer, const uint8_t *d, size_t n)
{
    struct coap_bridge *br = peer->br ? peer->br : (peer->br = bridge_new(peer));
    struct coap_msg m;
    uint16_t bad;
    coap_err e = coap_decode(d, n, &m);
    if (e == COAP_OK && m.code != COAP_EMPTY && COAP_CODE_CLASS(m.code) == 0 && coap_check_options(&m, &bad))
        e = COAP_ERR_BAD_OPTION;
    if (!br || e != COAP_OK) {
        enum coap_reject how = br ? coap_reject_how(&m, e) : COAP_REJECT_DROP;
        if (how == COAP_REJECT_BAD_OPTION)
            coap_answer_client(peer, &m, COAP_BAD_OPTION);
        else if (how == COAP_REJECT_RST)
            empty_to_client(peer, COAP_RST, m.mid);
        METRIC_INC(loop_metrics(peer->srv->loop)->coap_dropped);
        session_log(peer->s, LOGL_INFO, "coap: a datagram from the client refused (%s)",
                    br ? coap_err_name(e) : "out of memory");
        return;
    }
    if (m.code == COAP_EMPTY)
        return empty_from_client(br, &m);
    if (COAP_CODE_CLASS(m.code) != 0) { /* a response: mgate asked the client nothing but ACKs */
        METRIC_INC(metrics_of(br)->coap_dropped);
        return;
    }
    struct br_exchange *x = m.type == COAP_CON ? exchange_find(br, m.mid) : NULL;
    if (x) { /* a retransmission: answered again, or its answer is still to come */
        if (x->state == EX_DONE && x->len)
            coap_to_client(peer, x->answer, x->len);
        return;
    }
    if (m.code != COAP_GET && m.code != COAP_POST && m.code != COAP_PUT) {
        coap_answer_client(peer, &m, COAP_METHOD_NOT_ALLOWED);
        return;
    }
    if (!(br->cur = exchange_new(br, &m))) {
        session_log(peer->s, LOGL_WARN, "coap: %u requests wait for the broker; one more refused", BR_EXCHANGES);
        coap_answer_client(peer, &m, COAP_SERVICE_UNAVAILABLE);
        return;
    }
    if (!leg_take(peer, &peer->legs[MGATE_UP], d, n, n + 1)) { /* the path is at most the datagram's length */
        br->cur->state = EX_FREE;
        br->cur = NULL;
        return;
    }
    request(br, n);
}

void coap_bridge_end(struct coap_peer *peer)
{
    struct coap_bridge *br = peer->br;
    if (!br)
        return;
    br->cur = NULL;
    link_close(br);
    observe_end_all(br);
    con_clear(br);
    for (unsigned i = 0; i < BR_EXCHANGES; i++)
        free(br->ex[i].filter);
    if (br->judging) /* the handler may read the note and its filter until its verdict, which frees them */
        return;
    free(br->head); /* observe_end_all dropped the rest */
    unsubs_free(br);
    free(br->mount);
    free(br);
    peer->br = NULL;
}
