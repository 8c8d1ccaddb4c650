/*
 * One CoAP client's relay to the CoAP server (TARGET_PROTOCOL=coap): what
 * the handler chain is shown, and what is forwarded either way.
 *
 * Client -> server.  Every request is judged: auth_connect when the client
 * has no accepted credentials yet or shows other ones (its `auth=` query is
 * the password, as in the Go mGate), then auth_publish for POST, PUT,
 * DELETE, PATCH and iPATCH (topic: the Uri-Path, payload: the body) or
 * auth_subscribe for GET and FETCH (one filter: the Uri-Path); a GET with
 * Observe=1 (deregistration) is forwarded and shown to the unsubscribe
 * hook.  A refusal is a CoAP answer (4.01, 4.03; 5.03 when a handler says
 * busy), piggybacked on an ACK for a CON, a NON for a NON.  A rewritten
 * topic or payload is re-encoded; anything else goes as it came.  Empty
 * messages (ACKs and RSTs of notifications, pings) pass; responses from
 * the client are dropped (a relay's server asks the client nothing).
 *
 * Server -> client.  Answers pass; an Observe notification is judged by
 * auth_subscribe (direction down, the registration's topic) each time, and
 * a refused one is dropped (acknowledged to the server when confirmable);
 * a notification for no registration of this client is reset.  The
 * server's own requests are dropped.
 *
 * While a verdict is pending, that direction's later datagrams wait behind
 * it, in order, up to COAP_HELD_MAX (then they are dropped: a CON is sent
 * again by its sender).  The datagram being judged is the peer's own copy,
 * so the handler may keep pointers into it until its verdict.
 */
#include <errno.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "front/coap_int.h"

enum stage { ST_IDLE, ST_CONNECT, ST_ACCESS };

static void leg_next(struct coap_peer *peer, struct coap_leg *leg);
static void up_datagram(struct coap_peer *peer, const uint8_t *d, size_t n);
static void down_datagram(struct coap_peer *peer, const uint8_t *d, size_t n);
static void peer_free(struct coap_peer *peer);

static struct coap_peer *peer_of_leg(struct coap_leg *leg)
{
    return (struct coap_peer *)((char *)(leg - leg->dir) - offsetof(struct coap_peer, legs));
}

static bool pending(const struct coap_peer *peer) { return peer->legs[0].ask.pending || peer->legs[1].ask.pending; }

/* ---- the socket to the server ---------------------------------------------------------- */

static void remember_outstanding(struct coap_peer *peer, const struct coap_msg *m)
{
    struct coap_outstanding *o = &peer->out[m->mid % COAP_OUTSTANDING];
    *o = (struct coap_outstanding){.mid = m->mid, .type = m->type, .tkl = m->tkl, .used = true};
    memcpy(o->token, m->token, m->tkl);
}

/* An answer (or its ACK) came: the request is no longer the server's debt. */
static void settle_outstanding(struct coap_peer *peer, const struct coap_msg *m)
{
    for (unsigned i = 0; i < COAP_OUTSTANDING; i++) {
        struct coap_outstanding *o = &peer->out[i];
        if (o->used && ((m->type == COAP_ACK || m->type == COAP_RST) ? o->mid == m->mid
                                                                      : o->tkl == m->tkl && !memcmp(o->token, m->token, m->tkl)))
            o->used = false;
    }
}

/* The server's port is closed (ICMP): what it owes the client is 5.03. */
static void unreachable(struct coap_peer *peer)
{
    for (unsigned i = 0; i < COAP_OUTSTANDING; i++) {
        struct coap_outstanding *o = &peer->out[i];
        if (!o->used)
            continue;
        o->used = false;
        struct coap_msg req = {.type = o->type, .code = COAP_GET, .mid = o->mid, .tkl = o->tkl, .token = o->token};
        coap_answer_client(peer, &req, COAP_SERVICE_UNAVAILABLE);
    }
    session_log(peer->s, LOGL_WARN, "coap: the server is unreachable (port closed); answered 5.03");
}

static void on_server(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)events;
    struct coap_peer *peer = (struct coap_peer *)((char *)io - offsetof(struct coap_peer, up));
    struct coap_server *srv = peer->srv;
    for (int i = 0; i < 16 && !peer->ended; i++) {
        ssize_t n = recv(io->fd, srv->buf, srv->cs->max_datagram, MSG_TRUNC);
        if (n < 0) {
            if (errno == ECONNREFUSED)
                unreachable(peer);
            return;
        }
        if ((size_t)n > srv->cs->max_datagram) {
            session_log(peer->s, LOGL_WARN, "coap: the server sent %zd bytes, over MAX_PACKET_SIZE; dropped", n);
            continue;
        }
        peer->last_seen = loop_now(l);
        struct coap_leg *leg = &peer->legs[MGATE_DOWN];
        if (leg->cur || leg->head)
            leg_hold(peer, leg, srv->buf, (size_t)n);
        else
            down_datagram(peer, srv->buf, (size_t)n);
    }
}

/* The client's own socket to the server, made before its first request
 * goes, so that the server's first answer has a reader (the Go mGate's
 * "first message failure"). */
static int open_upstream(struct coap_peer *peer)
{
    if (peer->up.fd >= 0)
        return 0;
    const struct session_params *p = peer->srv->p;
    int fd = socket(p->target.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)&p->target, p->target_len) < 0 ||
        loop_io_add(peer->srv->loop, &peer->up, fd, EPOLLIN, on_server) < 0) {
        close(fd);
        peer->up.fd = -1;
        return -1;
    }
    return 0;
}

static struct metrics *metrics_of(struct coap_peer *peer) { return loop_metrics(peer->srv->loop); }

static void dropped(struct coap_peer *peer) { METRIC_INC(metrics_of(peer)->coap_dropped); }

/* A datagram of the client's or the server's passed on, not one of mgate's. */
static void relayed(struct coap_peer *peer, int dir, size_t n)
{
    METRIC_INC(metrics_of(peer)->coap_datagrams[dir]);
    METRIC_ADD(metrics_of(peer)->coap_bytes[dir], n);
}

static void to_server(struct coap_peer *peer, const uint8_t *d, size_t n)
{
    if (peer->up.fd >= 0 && send(peer->up.fd, d, n, MSG_DONTWAIT) < 0 && errno == ECONNREFUSED)
        unreachable(peer);
}

/* An empty message (RST, or ACK) for mid, to the client or to the server. */
static void send_empty(struct coap_peer *peer, enum coap_type type, uint16_t mid, bool to_client)
{
    uint8_t d[COAP_HEADER_LEN];
    struct coap_msg m = coap_empty(type, mid);
    if (coap_encode(&m, NULL, 0, d, sizeof(d)) != COAP_HEADER_LEN)
        return;
    if (to_client)
        coap_to_client(peer, d, sizeof(d));
    else
        to_server(peer, d, sizeof(d));
}

/* ---- holding datagrams behind a verdict ------------------------------------------------------- */

static struct coap_held *held_new(const uint8_t *d, size_t n, size_t extra)
{
    struct coap_held *h = malloc(sizeof(*h) + n + extra);
    if (h) {
        h->next = NULL;
        h->len = (uint32_t)n;
        memcpy(h->data, d, n);
    }
    return h;
}

void leg_hold(struct coap_peer *peer, struct coap_leg *leg, const uint8_t *d, size_t n)
{
    struct coap_server *srv = peer->srv;
    bool room = leg->held < COAP_HELD_MAX && leg->held_bytes + n <= COAP_HELD_BYTES &&
                srv->held_bytes + n <= COAP_HELD_SERVER_BYTES;
    struct coap_held *h = room ? held_new(d, n, 0) : NULL;
    if (!h) {
        dropped(peer);
        session_log(peer->s, LOGL_WARN, "coap: %u datagrams (%u bytes) wait for a verdict; one more dropped", leg->held,
                    leg->held_bytes);
        return;
    }
    *leg->tail = h;
    leg->tail = &h->next;
    leg->held++;
    leg->held_bytes += (uint32_t)n;
    srv->held_bytes += n;
}

/* The first held datagram, taken out of the count. */
static struct coap_held *held_pop(struct coap_peer *peer, struct coap_leg *leg)
{
    struct coap_held *h = leg->head;
    if (!(leg->head = h->next))
        leg->tail = &leg->head;
    leg->held--;
    leg->held_bytes -= h->len;
    peer->srv->held_bytes -= h->len;
    return h;
}

static void held_free_all(struct coap_peer *peer, struct coap_leg *leg)
{
    while (leg->head)
        free(held_pop(peer, leg));
}

/* The datagram being judged is done with: the next ones waiting behind it
 * go, until one has to wait again. */
void leg_done(struct coap_peer *peer, struct coap_leg *leg)
{
    free(leg->cur);
    leg->cur = NULL;
    leg->stage = ST_IDLE;
    session_front_reset(peer->s);
    leg_next(peer, leg);
}

static void leg_next(struct coap_peer *peer, struct coap_leg *leg)
{
    while (!peer->ended && !leg->cur && leg->head) {
        struct coap_held *h = held_pop(peer, leg);
        if (leg->dir == MGATE_UP)
            up_datagram(peer, h->data, h->len);
        else
            down_datagram(peer, h->data, h->len);
        free(h);
    }
}

/* Keep a copy of the datagram to judge (with room after it for its topic)
 * and decode it again there. */
bool leg_take(struct coap_peer *peer, struct coap_leg *leg, const uint8_t *d, size_t n, size_t extra)
{
    ASSERT(!leg->cur);
    if (!(leg->cur = held_new(d, n, extra))) {
        session_log(peer->s, LOGL_ERROR, "coap: out of memory; datagram dropped");
        return false;
    }
    coap_err e = coap_decode(leg->cur->data, n, &leg->msg);
    ASSERT(e == COAP_OK); /* the same bytes decoded before */
    (void)e;
    return true;
}

/* ---- Observe registrations ------------------------------------------------------------------- */

static struct coap_observe *observe_find(struct coap_peer *peer, const struct coap_msg *m)
{
    for (unsigned i = 0; i < peer->nobs; i++)
        if (peer->obs[i].tkl == m->tkl && !memcmp(peer->obs[i].token, m->token, m->tkl))
            return &peer->obs[i];
    return NULL;
}

static void observe_drop(struct coap_peer *peer, struct coap_observe *o)
{
    free(o->topic);
    free(o->asked);
    *o = peer->obs[--peer->nobs];
    if (!peer->nobs) {
        free(peer->obs);
        peer->obs = NULL;
    }
}

static char *dup_bytes(mgate_bytes b)
{
    char *s = malloc(b.len + 1u);
    if (s) {
        if (b.len)
            memcpy(s, b.p, b.len);
        s[b.len] = '\0';
    }
    return s;
}

/* A registration (or its refresh: the same token, the same resource) was
 * forwarded: notifications with its token are judged on topic.  Out of
 * memory it is not kept, and its notifications are reset (down_datagram). */
static void observe_add(struct coap_peer *peer, const struct coap_msg *m, mgate_bytes topic, mgate_bytes asked)
{
    struct coap_observe *o = observe_find(peer, m);
    if (o)
        observe_drop(peer, o);
    if (!peer->obs && !(peer->obs = calloc(COAP_OBSERVE_MAX, sizeof(*peer->obs))))
        return;
    o = &peer->obs[peer->nobs];
    *o = (struct coap_observe){.tkl = m->tkl, .topic = dup_bytes(topic), .asked = dup_bytes(asked)};
    memcpy(o->token, m->token, m->tkl);
    if (!o->topic || !o->asked) {
        free(o->topic);
        free(o->asked);
        return;
    }
    o->topic_len = (uint16_t)topic.len;
    peer->nobs++;
}

/* ---- client -> server ------------------------------------------------------------------------ */

static void on_verdict(struct ask *a);

static bool is_publish(uint8_t code)
{
    return code == COAP_POST || code == COAP_PUT || code == COAP_DELETE || code == COAP_PATCH ||
           code == COAP_IPATCH;
}

/* The topic (Uri-Path) and where the copy keeps it. */
static mgate_bytes topic_of(struct coap_leg *leg)
{
    char *t = (char *)leg->cur->data + leg->cur->len;
    return (mgate_bytes){(const uint8_t *)t, (uint32_t)strlen(t)};
}

/* The request as a handler changed it, re-encoded: its Uri-Path options
 * from the new topic, its payload; the rest as it came.  -1: does not fit. */
static ssize_t reencode(struct coap_leg *leg, mgate_bytes topic, mgate_bytes payload, uint8_t *out, size_t cap)
{
    struct coap_opt opts[256];
    ssize_t n = coap_opt_collect(&leg->msg, opts, 128);
    if (n < 0)
        return -1;
    struct coap_opt all[256];
    size_t k = 0, i = 0;
    for (; i < (size_t)n && opts[i].num < COAP_OPT_URI_PATH; i++)
        all[k++] = opts[i];
    for (uint32_t at = 0; at <= topic.len && k < 250;) { /* one Uri-Path per segment */
        uint32_t end = at;
        while (end < topic.len && topic.p[end] != '/')
            end++;
        if (topic.len)
            all[k++] = (struct coap_opt){COAP_OPT_URI_PATH, topic.p + at, end - at};
        at = end + 1;
    }
    for (; i < (size_t)n; i++)
        if (opts[i].num != COAP_OPT_URI_PATH && k < 256)
            all[k++] = opts[i];
    struct coap_msg m = leg->msg;
    m.payload = (coap_view){payload.p, payload.len};
    return coap_encode(&m, all, k, out, cap);
}

/* Allowed: forward (re-encoded when a handler changed the request).  false:
 * it could not go, and the client was answered. */
static bool forward_request(struct coap_peer *peer, struct coap_leg *leg, mgate_bytes topic, mgate_bytes payload)
{
    mgate_bytes orig = topic_of(leg);
    const uint8_t *d = leg->cur->data;
    size_t n = leg->cur->len;
    uint8_t *re = NULL;
    bool changed = topic.len != orig.len || memcmp(topic.p, orig.p, orig.len) ||
                   payload.p != leg->msg.payload.p || payload.len != leg->msg.payload.len;
    if (changed) {
        size_t cap = n + topic.len + payload.len + 64;
        ssize_t r = (re = malloc(cap)) ? reencode(leg, topic, payload, re, cap) : -1;
        if (r < 0) {
            free(re);
            session_log(peer->s, LOGL_WARN, "coap: the handler's rewrite does not make a CoAP message; refused");
            coap_answer_client(peer, &leg->msg, COAP_INTERNAL_ERROR);
            return false;
        }
        d = re, n = (size_t)r;
    }
    bool sent = open_upstream(peer) == 0;
    if (!sent) {
        session_log(peer->s, LOGL_WARN, "coap: cannot open a socket to the server: %s", strerror(errno));
        coap_answer_client(peer, &leg->msg, COAP_SERVICE_UNAVAILABLE);
    } else {
        remember_outstanding(peer, &leg->msg);
        to_server(peer, d, n);
        relayed(peer, MGATE_UP, n);
    }
    free(re);
    return sent;
}

static void refuse(struct coap_peer *peer, struct coap_leg *leg, uint8_t code, const char *why)
{
    session_log(peer->s, LOGL_INFO, "coap: %s refused (%s)", topic_of(leg).len ? (const char *)topic_of(leg).p : "/",
                why);
    coap_answer_client(peer, &leg->msg, code);
}

uint8_t refusal_code(uint8_t reason, uint8_t otherwise)
{
    return reason == MGATE_REASON_SERVER_BUSY || reason == MGATE_REASON_SERVER_UNAVAILABLE ? COAP_SERVICE_UNAVAILABLE
                                                                                          : otherwise;
}

static void access_decided(struct coap_peer *peer, struct coap_leg *leg, bool ok)
{
    struct ask *a = &leg->ask;
    if (a->kind == ASK_PUBLISH) {
        if (!ok) {
            METRIC_INC(metrics_of(peer)->publish_refused[MGATE_UP]);
            refuse(peer, leg, refusal_code(a->req.publish.reason, COAP_FORBIDDEN), "auth_publish");
            return leg_done(peer, leg);
        }
        if (forward_request(peer, leg, a->req.publish.topic, a->req.publish.payload))
            session_front_published(peer->s, &a->req.publish);
        return leg_done(peer, leg);
    }
    struct mgate_filter *f = &a->req.subscribe.filters[0];
    if (!ok || f->denied) {
        METRIC_INC(metrics_of(peer)->subscribe_refused);
        refuse(peer, leg, refusal_code(a->req.subscribe.reason, COAP_FORBIDDEN), "auth_subscribe");
        return leg_done(peer, leg);
    }
    if (!forward_request(peer, leg, f->filter, (mgate_bytes){leg->msg.payload.p, (uint32_t)leg->msg.payload.len}))
        return leg_done(peer, leg);
    uint32_t obs;
    if (!coap_opt_uint(&leg->msg, COAP_OPT_OBSERVE, &obs) || obs > 1) {
        session_front_subscribed(peer->s, &a->req.subscribe);
    } else if (obs == 0) {
        observe_add(peer, &leg->msg, f->filter, topic_of(leg));
        session_front_subscribed(peer->s, &a->req.subscribe);
    } else { /* a deregistration: still a GET, judged as one, and the end of an observation */
        struct coap_observe *o = observe_find(peer, &leg->msg);
        struct mgate_unsubscribe_req u = {.topics = &f->filter, .count = 1};
        if (o)
            observe_drop(peer, o);
        session_front_unsubscribed(peer->s, &u);
    }
    leg_done(peer, leg);
}

/* Credentials accepted: the request itself. */
static void ask_access(struct coap_peer *peer, struct coap_leg *leg)
{
    struct ask *a = &leg->ask;
    mgate_bytes topic = topic_of(leg);
    uint8_t qos = leg->msg.type == COAP_CON ? 1 : 0;
    enum mgate_verdict v;
    leg->stage = ST_ACCESS;
    if (is_publish(leg->msg.code)) {
        a->req.publish = (struct mgate_publish_req){
            .dir = MGATE_UP, .topic = topic, .qos = qos,
            .payload = {leg->msg.payload.p, (uint32_t)leg->msg.payload.len}};
        v = verdict_ask(peer->s, a, ASK_PUBLISH, on_verdict);
    } else {
        leg->filter = (struct mgate_filter){.filter = topic, .qos = qos};
        a->req.subscribe = (struct mgate_subscribe_req){.dir = MGATE_UP, .filters = &leg->filter, .count = 1};
        v = verdict_ask(peer->s, a, ASK_SUBSCRIBE, on_verdict);
    }
    if (v != MGATE_PENDING)
        access_decided(peer, leg, v == MGATE_ALLOW);
}

static bool query(const struct coap_msg *m, const char *name, const char *brief, coap_view *v)
{
    return coap_uri_query(m, name, v) || coap_uri_query(m, brief, v);
}

void cred_of(const struct coap_msg *m, struct coap_cred *c)
{
    *c = (struct coap_cred){0};
    c->has_pass = coap_uri_query(m, "auth", &c->pass) || query(m, "password", "p", &c->pass);
    c->has_user = query(m, "username", "u", &c->user);
    query(m, "clientid", "c", &c->cid);
}

/* The credentials as one byte string, to keep and compare: the length, or
 * 0 when they do not fit out[cap] (then they never count as the same). */
size_t cred_key(const struct coap_cred *c, uint8_t *out, size_t cap)
{
    const coap_view parts[3] = {c->user, c->pass, c->cid};
    size_t n = 1;
    if (cap < 1)
        return 0;
    out[0] = (uint8_t)(c->has_user | c->has_pass << 1);
    for (int i = 0; i < 3; i++) {
        if (n + 2 + parts[i].len > cap)
            return 0;
        out[n++] = (uint8_t)(parts[i].len >> 8);
        out[n++] = (uint8_t)parts[i].len;
        if (parts[i].len) /* an absent part has no pointer */
            memcpy(out + n, parts[i].p, parts[i].len);
        n += parts[i].len;
    }
    return n;
}

bool same_cred(const struct coap_peer *peer, const struct coap_cred *c)
{
    uint8_t key[COAP_CRED_KEY_MAX];
    size_t n = cred_key(c, key, sizeof(key));
    return peer->connected && n && n == peer->auth_len && !memcmp(key, peer->auth, n);
}

/* After refused credentials, new ones from the same client wait a moment
 * (1 s, doubling to 30 s while refusals go on), so that a client cannot
 * guess passwords at the rate it sends datagrams; the credentials it got in
 * with still stand (a refusal changes nothing the session had), so a
 * datagram spoofed from its address cannot lock it out. */
#define AUTH_RETRY_MS 1000u
#define AUTH_RETRY_MAX_MS 30000u

bool coap_auth_wait(const struct coap_peer *peer) { return loop_now(peer->srv->loop) < peer->auth_retry_at; }

void coap_auth_refused(struct coap_peer *peer)
{
    uint32_t ms = AUTH_RETRY_MS << (peer->auth_refusals < 5 ? peer->auth_refusals : 5);
    peer->auth_retry_at = loop_now(peer->srv->loop) + (ms < AUTH_RETRY_MAX_MS ? ms : AUTH_RETRY_MAX_MS);
    if (peer->auth_refusals < UINT8_MAX)
        peer->auth_refusals++;
}

void coap_connect_req(const struct coap_peer *peer, const struct coap_cred *cred, struct mgate_connect_req *c)
{
    *c = (struct mgate_connect_req){
        .client_id = {cred->cid.p ? cred->cid.p : (const uint8_t *)"", (uint32_t)cred->cid.len},
        .username = {cred->user.p, (uint32_t)cred->user.len}, .has_username = cred->has_user,
        .password = {cred->pass.p, (uint32_t)cred->pass.len}, .has_password = cred->has_pass,
        .clean_start = true};
    if (peer->username) { /* DTLS: the identity the handshake proved, whatever the query says */
        c->username = (mgate_bytes){(const uint8_t *)peer->username, (uint32_t)strlen(peer->username)};
        c->has_username = true;
    }
}

bool coap_auth_accept(struct coap_peer *peer, const struct coap_cred *cred, const struct mgate_connect_req *c)
{
    accept_cred(peer, cred);
    session_front_credentials(peer->s, c);
    if (!session_client_id_allowed(peer->s)) { /* CLIENT_ID_POLICY: the id is not this user's */
        coap_auth_refused(peer);
        peer->connected = false; /* the session took these credentials: nothing it had before stands */
        free(peer->auth);
        peer->auth = NULL;
        peer->auth_len = 0;
        return false;
    }
    peer->auth_refusals = 0;
    return true;
}

void accept_cred(struct coap_peer *peer, const struct coap_cred *c)
{
    uint8_t key[COAP_CRED_KEY_MAX];
    size_t n = cred_key(c, key, sizeof(key));
    free(peer->auth);
    peer->auth = n ? malloc(n) : NULL;
    peer->auth_len = peer->auth ? (uint16_t)n : 0;
    if (peer->auth)
        memcpy(peer->auth, key, n);
    peer->connected = true;
}

static void connect_decided(struct coap_peer *peer, struct coap_leg *leg, bool ok)
{
    struct mgate_connect_req *c = &leg->ask.req.connect;
    if (!ok) {
        coap_auth_refused(peer);
        refuse(peer, leg, refusal_code(c->reason, COAP_UNAUTHORIZED), "auth_connect");
        return leg_done(peer, leg);
    }
    struct coap_cred cred;
    cred_of(&leg->msg, &cred);
    if (!coap_auth_accept(peer, &cred, c)) {
        refuse(peer, leg, COAP_UNAUTHORIZED, "CLIENT_ID_POLICY");
        return leg_done(peer, leg);
    }
    session_front_connected(peer->s);
    ask_access(peer, leg);
}

static void on_verdict(struct ask *a)
{
    struct coap_leg *leg = (struct coap_leg *)((char *)a - offsetof(struct coap_leg, ask));
    struct coap_peer *peer = peer_of_leg(leg);
    if (peer->ended) {
        free(leg->cur);
        leg->cur = NULL;
        if (!pending(peer))
            peer_free(peer);
        return;
    }
    bool ok = a->verdict == MGATE_ALLOW;
    if (leg->dir == MGATE_DOWN) {
        if (ok) {
            coap_to_client(peer, leg->cur->data, leg->cur->len);
            relayed(peer, MGATE_DOWN, leg->cur->len);
            return leg_done(peer, leg);
        }
        METRIC_INC(metrics_of(peer)->publish_refused[MGATE_DOWN]);
        if (leg->msg.type == COAP_CON) /* a refused notification: the server is done with it */
            send_empty(peer, COAP_ACK, leg->msg.mid, false);
        return leg_done(peer, leg);
    }
    if (leg->stage == ST_CONNECT)
        connect_decided(peer, leg, ok);
    else
        access_decided(peer, leg, ok);
}

bool coap_shared_prefix(const char *topic, size_t len)
{
    return len >= 7 && (!memcmp(topic, "$share/", 7) || !memcmp(topic, "$queue/", 7));
}

/* A request: judged, then forwarded or answered. */
static void up_request(struct coap_peer *peer, const uint8_t *d, size_t n, const struct coap_msg *m)
{
    struct coap_leg *leg = &peer->legs[MGATE_UP];
    if (!is_publish(m->code) && m->code != COAP_GET && m->code != COAP_FETCH) {
        coap_answer_client(peer, m, COAP_METHOD_NOT_ALLOWED);
        return;
    }
    struct coap_opt proxy;
    if (coap_opt_find(m, COAP_OPT_PROXY_URI, &proxy) || coap_opt_find(m, COAP_OPT_PROXY_SCHEME, &proxy)) {
        /* the resource would be named by the option, not the Uri-Path the handler judges */
        coap_answer_client(peer, m, COAP_PROXYING_NOT_SUPPORTED);
        return;
    }
    if (!leg_take(peer, leg, d, n, n + 1)) /* the topic is at most the datagram's length */
        return;
    char *topic = (char *)leg->cur->data + n;
    if (coap_uri_path(&leg->msg, topic, n + 1) < 0) {
        *topic = '\0';
        refuse(peer, leg, COAP_BAD_REQUEST, "a Uri-Path segment holds '/' or NUL, or is . or ..");
        return leg_done(peer, leg);
    }
    uint32_t obs;
    bool observe = coap_opt_uint(&leg->msg, COAP_OPT_OBSERVE, &obs) && !is_publish(m->code);
    const char *bad = coap_shared_prefix(topic, strlen(topic)) ? "a path that an MQTT handler would read as a shared subscription" : NULL;
    struct coap_observe *o = observe ? observe_find(peer, &leg->msg) : NULL;
    if (!bad && o && obs == 0 && strcmp(o->asked, topic))
        bad = "an Observe token that names another registration";
    if (bad) {
        refuse(peer, leg, COAP_BAD_REQUEST, bad);
        return leg_done(peer, leg);
    }
    if (observe && obs == 0 && peer->nobs >= COAP_OBSERVE_MAX && !o) {
        refuse(peer, leg, COAP_SERVICE_UNAVAILABLE, "too many Observe registrations");
        return leg_done(peer, leg);
    }
    struct coap_cred cred;
    cred_of(&leg->msg, &cred);
    if (same_cred(peer, &cred))
        return ask_access(peer, leg);
    if (coap_auth_wait(peer)) {
        refuse(peer, leg, COAP_UNAUTHORIZED, "new credentials a moment after refused ones");
        return leg_done(peer, leg);
    }
    coap_connect_req(peer, &cred, &leg->ask.req.connect);
    leg->stage = ST_CONNECT;
    enum mgate_verdict v = verdict_ask(peer->s, &leg->ask, ASK_CONNECT, on_verdict);
    if (v != MGATE_PENDING)
        connect_decided(peer, leg, v == MGATE_ALLOW);
}

static void up_datagram(struct coap_peer *peer, const uint8_t *d, size_t n)
{
    if (peer->srv->cs->bridge)
        return coap_bridge_datagram(peer, d, n);
    struct coap_msg m;
    coap_err e = coap_decode(d, n, &m);
    if (e != COAP_OK) {
        if (coap_reject_how(&m, e) != COAP_REJECT_DROP)
            send_empty(peer, COAP_RST, m.mid, true);
        dropped(peer);
        session_log(peer->s, LOGL_INFO, "coap: a bad datagram from the client (%s)", coap_err_name(e));
        return;
    }
    if (m.code == COAP_EMPTY) { /* ACK or RST of a notification, a ping: the server's business */
        if (peer->up.fd >= 0) {
            to_server(peer, d, n);
            relayed(peer, MGATE_UP, n);
        } else if (m.type == COAP_CON) /* a ping, and no server yet: the answer to a ping is a RST */
            send_empty(peer, COAP_RST, m.mid, true);
        return;
    }
    if (COAP_CODE_CLASS(m.code) != 0) {
        dropped(peer);
        session_log(peer->s, LOGL_INFO, "coap: a response from the client dropped (the server asks it nothing)");
        return;
    }
    if (m.opt_count > COAP_OPTIONS_MAX) { /* each is walked several times: bound the work */
        coap_answer_client(peer, &m, COAP_BAD_REQUEST);
        return;
    }
    up_request(peer, d, n, &m);
}

/* ---- server -> client --------------------------------------------------------------------------- */

static void down_datagram(struct coap_peer *peer, const uint8_t *d, size_t n)
{
    struct coap_msg m;
    if (coap_decode(d, n, &m) != COAP_OK) {
        dropped(peer);
        session_log(peer->s, LOGL_WARN, "coap: a bad datagram from the server dropped");
        return;
    }
    settle_outstanding(peer, &m);
    if (m.code != COAP_EMPTY && COAP_CODE_CLASS(m.code) == 0) {
        dropped(peer);
        session_log(peer->s, LOGL_INFO, "coap: a request from the server dropped (a relay forwards only answers)");
        return;
    }
    uint32_t seq;
    struct coap_observe *o = m.code != COAP_EMPTY && m.type != COAP_RST ? observe_find(peer, &m) : NULL;
    bool notification = m.code != COAP_EMPTY && coap_opt_uint(&m, COAP_OPT_OBSERVE, &seq);
    if (o && (!notification || COAP_CODE_CLASS(m.code) != 2)) { /* the registration is over */
        observe_drop(peer, o);
        o = NULL;
    } else if (notification && o) {
        struct coap_leg *leg = &peer->legs[MGATE_DOWN];
        if (!leg_take(peer, leg, d, n, o->topic_len + 1u))
            return;
        char *topic = (char *)leg->cur->data + n;
        memcpy(topic, o->topic, o->topic_len);
        topic[o->topic_len] = '\0';
        leg->filter = (struct mgate_filter){.filter = topic_of(leg), .qos = m.type == COAP_CON};
        leg->ask.req.subscribe = (struct mgate_subscribe_req){.dir = MGATE_DOWN, .filters = &leg->filter, .count = 1};
        leg->stage = ST_ACCESS;
        enum mgate_verdict v = verdict_ask(peer->s, &leg->ask, ASK_SUBSCRIBE, on_verdict);
        if (v != MGATE_PENDING)
            on_verdict(&leg->ask);
        return;
    } else if (notification && COAP_CODE_CLASS(m.code) == 2) {
        /* a notification for no registration of this client's: nobody judged it, and
         * a RST tells the server to stop (RFC 7641 3.6) */
        if (m.type == COAP_CON || m.type == COAP_NON)
            send_empty(peer, COAP_RST, m.mid, false);
        return;
    }
    coap_to_client(peer, d, n);
    relayed(peer, MGATE_DOWN, n);
}

/* ---- the peer ------------------------------------------------------------------------------------ */

static void on_idle(struct loop *l, struct loop_timer *t)
{
    struct coap_peer *peer = (struct coap_peer *)((char *)t - offsetof(struct coap_peer, idle));
    const struct session_params *p = peer->srv->p;
    /* A client no handler let in has CONNECT_TIMEOUT; one that got in, IDLE_TIMEOUT. */
    uint32_t limit = peer->connected ? peer->srv->cs->idle_ms : p->connect_timeout_ms;
    uint64_t quiet = loop_now(l) - peer->last_seen;
    if (quiet < limit) {
        loop_timer_start(l, t, (uint32_t)(limit - quiet), on_idle);
        return;
    }
    if (pending(peer)) { /* a verdict is still out: its answer decides */
        loop_timer_start(l, t, limit, on_idle);
        return;
    }
    mgate_log(LOGL_DEBUG, peer->s, "coap: idle for %u ms; session ended", limit);
    coap_peer_end(peer);
}

static void front_drain(struct mgate_session *s)
{
    struct coap_peer *peer = session_front_ctx(s);
    coap_peer_end(peer); /* a CoAP client has no connection to finish; a pending verdict's answer is dropped */
}

static void front_close(struct mgate_session *s) { coap_peer_end(session_front_ctx(s)); }

static const struct session_front coap_front = {.drain = front_drain, .close = front_close};

struct coap_peer *coap_peer_new(struct coap_server *srv, const union coap_addr *addr, socklen_t len, uint32_t hash)
{
    struct coap_peer *peer = calloc(1, sizeof(*peer));
    if (!peer)
        return NULL;
    peer->srv = srv;
    peer->addr = *addr;
    peer->addr_len = len;
    peer->hash = hash;
    peer->up.fd = -1;
    for (int d = 0; d < 2; d++) {
        peer->legs[d].dir = (uint8_t)d;
        peer->legs[d].tail = &peer->legs[d].head;
    }
    if (!(peer->s = session_front_start(srv->loop, &addr->sa, srv->p, srv->list, &coap_front, peer))) {
        free(peer);
        return NULL;
    }
    peer->last_seen = peer->last_heard = loop_now(srv->loop);
    if (RAND_bytes((uint8_t *)&peer->next_mid, sizeof(peer->next_mid)) != 1)
        peer->next_mid = (uint16_t)random();
    uint32_t first = srv->p->connect_timeout_ms < srv->cs->idle_ms ? srv->p->connect_timeout_ms : srv->cs->idle_ms;
    loop_timer_start(srv->loop, &peer->idle, first, on_idle); /* on_idle knows which applies */
    return peer;
}

void coap_peer_from_client(struct coap_peer *peer, const uint8_t *data, size_t len)
{
    struct coap_leg *leg = &peer->legs[MGATE_UP];
    peer->last_seen = peer->last_heard = loop_now(peer->srv->loop);
    if (leg->cur || leg->head)
        leg_hold(peer, leg, data, len);
    else
        up_datagram(peer, data, len);
}

static void peer_free(struct coap_peer *peer)
{
    ASSERT(peer->ended && !pending(peer));
    for (int d = 0; d < 2; d++) {
        free(peer->legs[d].cur);
        held_free_all(peer, &peer->legs[d]);
    }
    while (peer->nobs)
        observe_drop(peer, &peer->obs[0]);
    free(peer->auth);
    free(peer->username);
    free(peer);
}

void coap_peer_end(struct coap_peer *peer)
{
    if (peer->ended)
        return;
    peer->ended = true;
    struct loop *l = peer->srv->loop;
    coap_server_unlink(peer->srv, peer);
    loop_timer_stop(l, &peer->idle);
    if (peer->up.fd >= 0) {
        loop_io_del(l, &peer->up);
        close(peer->up.fd);
        peer->up.fd = -1;
    }
    if (peer->dtls)
        coap_dtls_peer_end(peer);
    coap_bridge_end(peer);
    session_front_end(peer->s);
    for (int d = 0; d < 2; d++) {
        held_free_all(peer, &peer->legs[d]);
        if (peer->legs[d].ask.pending)
            verdict_drop(&peer->legs[d].ask);
    }
    if (!pending(peer))
        peer_free(peer);
}

void coap_peer_unpend(struct coap_peer *peer)
{
    if (peer->ended && !pending(peer))
        peer_free(peer);
}
