/*
 * Session life cycle: accept, CONNECT deadline, dialling the broker, closing
 * both sides together, and the public accessors of mgate.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/list.h"
#include "core/log.h"
#include "core/util.h"
#include "net/proxy_proto.h"
#include "net/tls.h"
#include "session/internal.h"
#include "session/limits.h"

#define LINGER_MS 2000 /* how long a closing side may take to flush */
/*
 * A client's packet that started arriving must be complete within
 * CONNECT_TIMEOUT plus its size at PACKET_MIN_RATE.  Without a deadline a
 * client with keepalive 0 may trickle one packet forever (the broker sees
 * nothing, so no keepalive of its own fires), holding a buffer up to
 * MAX_PACKET_SIZE.  CONNECT_TIMEOUT is already what the operator allows for
 * a client to get one packet across; the rate term lets a large packet cross
 * a slow link: 1 KiB/s is below the uplink of the slowest cellular IoT links
 * (NB-IoT: tens of kbit/s), and a client that holds a buffer must keep
 * paying for it at that rate.
 */
#define PACKET_MIN_RATE 1024 /* bytes/s */

static void on_drain(struct conn *c);
static void on_conn_closed(struct conn *c, int err);
static void on_broker_connected(struct conn *c);

static const struct conn_cbs client_cbs = {session_on_data, on_drain, NULL, on_conn_closed};
static const struct conn_cbs broker_cbs = {session_on_data, on_drain, on_broker_connected,
                                           on_conn_closed};

/* ---- list ------------------------------------------------------------- */

static void session_list_add(struct session_list *list, struct mgate_session *s)
{
    s->list = list;
    list_push_front(&list->sessions, &s->node);
    list->count++;
}

static void session_list_remove(struct session_list *list, struct mgate_session *s)
{
    list_remove(&s->node);
    ASSERT(list->count > 0);
    list->count--;
    if (list->draining && !list->count && list->on_empty)
        list->on_empty(list);
}

/* ---- end of life ------------------------------------------------------ */

static void alloc_free_all(struct mgate_session *s);

static void session_free(struct mgate_session *s)
{
    ASSERT(!s->asks && !s->asking && !s->held[0] && !s->held[1]); /* each pending ask holds a reference */
    while (s->merges) {
        struct suback_merge *m = s->merges;
        s->merges = m->next;
        free(m);
    }
    for (int d = 0; d < 2; d++) {
        if (s->aliases) {
            alias_free(&s->aliases->in[d]);
            alias_free(&s->aliases->out[d]);
        }
    }
    free(s->refused_qos2.ids);
    alloc_free_all(s);
    free(s->cred_mem);
    free(s->front_cred);
    free(s->cert);
    free(s->peer_addr);
    free(s->aliases);
    free(s->mount);
    limits_free(s);
    session_expiry_free(s);
    session_handler_data_free(s);
    free(s);
}

void session_unref(struct mgate_session *s)
{
    ASSERT(s->refs > 0);
    if (--s->refs == 0)
        session_free(s);
}

static void session_fields(struct logline *l, const mgate_session *s);

/*
 * "session closed" is the audit line of a session the handler let in: it
 * is always written.  A client that never got in (refused, silent, gone
 * before its CONNECT) cost nothing but a socket, so a churn of them would
 * write a line per connection: theirs take from the listener's budget,
 * a budget of their own on the listener (LISTENER_LOG_BURST a second, so
 * the refusal lines keep theirs), and what is left out is counted there.
 */
static void log_session_closed(struct mgate_session *s)
{
    if (!log_enabled(LOGL_INFO))
        return;
    uint32_t closed = 0;
    struct log_limit *budget = s->p->close_log_budget;
    if (!s->connect_called && budget && !log_limit_take(budget, loop_now(s->loop), LISTENER_LOG_BURST, &closed)) {
        /* its own left-out lines are told by the listener's next line instead */
        if (s->p->log_budget)
            s->p->log_budget->left_out += s->log_budget.left_out;
        return;
    }
    struct logline l;
    log_begin(&l, LOGL_INFO, "session closed");
    session_fields(&l, s);
    if (s->log_budget.left_out) /* lines this session caused that were never written */
        log_uint(&l, "left_out", s->log_budget.left_out);
    if (closed) /* "session closed" lines of clients that never got in, left out since the last */
        log_uint(&l, "closed_left_out", closed);
    log_end(&l);
}

static void session_end(struct mgate_session *s)
{
    if (s->ended)
        return;
    s->ended = true;
    s->state = SESSION_CLOSING;
    loop_timer_stop(s->loop, &s->timer);
    if (s->connect_called)
        chain_disconnect(s);
    log_session_closed(s);
    METRIC_INC(session_metrics(s)->sessions_closed[s->p->listener_id % METRIC_LISTENERS]);
    if (s->p->open_sessions)
        __atomic_fetch_sub(s->p->open_sessions, 1, __ATOMIC_RELAXED);
    session_list_remove(s->list, s);
    session_unref(s); /* the reference of being alive */
}

static void hard_close(struct mgate_session *s)
{
    if (s->front) {
        s->front->close(s);
        return;
    }
    /* A side that failed this turn already has its on_close queued (conn_close
     * then does nothing): it must not reach the session freed here. */
    static const struct conn_cbs quiet_cbs = {NULL, NULL, NULL, NULL};
    if (s->client) {
        s->client->cbs = &quiet_cbs;
        conn_close(s->client);
    }
    if (s->broker) {
        s->broker->cbs = &quiet_cbs;
        conn_close(s->broker);
    }
    s->client = s->broker = NULL;
    session_end(s);
}

static void on_timer(struct loop *l, struct loop_timer *t);

static uint32_t packet_bound_ms(const struct mgate_session *s)
{
    uint64_t want = s->client ? s->client->want : 0; /* the packet's size once its header is in */
    uint64_t ms = s->p->connect_timeout_ms + want * 1000 / PACKET_MIN_RATE;
    return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

/* Lazy: the timer is armed once while a packet is in progress and, when it
 * fires, measures from the start of the packet in progress then. */
void session_packet_progress(struct mgate_session *s, bool partial, size_t consumed)
{
    if (s->state != SESSION_OPEN)
        return; /* before OPEN the CONNECT deadline bounds everything */
    if (!partial) {
        s->packet_since = 0; /* an armed timer finds nothing and rests */
        return;
    }
    if (consumed || !s->packet_since) /* a new packet began in this pass */
        s->packet_since = loop_now(s->loop);
    if (!loop_timer_armed(&s->timer))
        loop_timer_start(s->loop, &s->timer, packet_bound_ms(s), on_timer);
}

static void packet_deadline(struct mgate_session *s)
{
    if (!s->packet_since || !s->client)
        return;
    uint64_t now = loop_now(s->loop), bound = packet_bound_ms(s);
    if (s->client->read_paused)
        s->packet_since = now; /* we do not read it: its packet cannot move */
    if (now - s->packet_since < bound) {
        loop_timer_start(s->loop, &s->timer, (uint32_t)(bound - (now - s->packet_since)), on_timer);
        return;
    }
    reply_disconnect(s, MQTT_RC_KEEPALIVE_TIMEOUT); /* 5.0's nearest: no packet in time */
    session_close_as(s, CONN_END_POLICY, CONN_END_NORMAL, "a packet was not complete before its deadline");
}

static void on_timer(struct loop *l, struct loop_timer *t)
{
    (void)l;
    struct mgate_session *s = container_of(t, struct mgate_session, timer);
    switch (s->state) {
    case SESSION_AWAIT_CONNECT:
        session_close_as(s, CONN_END_POLICY, CONN_END_NORMAL, "no CONNECT before the deadline");
        break;
    case SESSION_AUTH_CONNECT:
    case SESSION_AWAIT_CONNACK:
        reply_connack(s, MQTT_RC_SERVER_UNAVAILABLE);
        session_close_as(s, CONN_END_UPSTREAM, CONN_END_NORMAL, "CONNECT not answered before the deadline");
        break;
    case SESSION_OPEN:
        packet_deadline(s);
        break;
    default:
        hard_close(s); /* the linger ran out */
    }
}

static void tell_why(struct mgate_session *s, enum conn_end client, enum conn_end broker)
{
    if (s->state == SESSION_CLOSING)
        return; /* the first reason stands */
    if (s->client)
        s->client->end = (uint8_t)client;
    if (s->broker)
        s->broker->end = (uint8_t)broker;
}

void session_refused_quietly(struct mgate_session *s)
{
    if (s->state == SESSION_AWAIT_CONNECT)
        s->state = SESSION_CLOSING; /* its connection's end then ends it without a line */
}

void session_close_as(struct mgate_session *s, enum conn_end client, enum conn_end broker, const char *why)
{
    tell_why(s, client, broker);
    session_close(s, why);
}

void session_close(struct mgate_session *s, const char *why)
{
    if (s->state != SESSION_CLOSING) {
        s->state = SESSION_CLOSING;
        session_log(s, LOGL_INFO, "closing: %s", why); /* clients cause these: within the budget */
        loop_timer_start(s->loop, &s->timer, LINGER_MS, on_timer);
    }
    /* Each side sends what it was given, then reports back through
     * on_conn_closed; the linger timer bounds a peer that stops reading. */
    if (s->client)
        conn_close_after_flush(s->client);
    if (s->broker)
        conn_close_after_flush(s->broker);
    if (!s->client && !s->broker)
        session_end(s);
}

void session_protocol_error(struct mgate_session *s, int dir, mqtt_rc rc)
{
    uint8_t reason = rc == MQTT_TOO_LARGE ? MQTT_RC_PACKET_TOO_LARGE
                     : rc == MQTT_MALFORMED ? MQTT_RC_MALFORMED
                                            : MQTT_RC_PROTOCOL_ERROR;
    char why[96];
    snprintf(why, sizeof(why), "%s from the %s", mqtt_rc_name(rc), dir == MGATE_UP ? "client" : "broker");
    if (dir == MGATE_UP && s->state >= SESSION_AUTH_CONNECT)
        reply_disconnect(s, reason);
    enum conn_end culprit = rc == MQTT_TOO_LARGE ? CONN_END_TOO_BIG : CONN_END_PROTOCOL;
    if (dir == MGATE_UP)
        session_close_as(s, culprit, CONN_END_NORMAL, why);
    else
        session_close_as(s, CONN_END_UPSTREAM, culprit, why);
}

/* ---- connection callbacks -------------------------------------------- */

static void on_conn_closed(struct conn *c, int err)
{
    struct mgate_session *s = c->owner;
    bool broker = c == s->broker;
    if (broker)
        s->broker = NULL;
    else
        s->client = NULL;
    if (s->state == SESSION_CLOSING) {
        session_close(s, "");
        return;
    }
    char why[96];
    /* EPROTO: a handshake failed, TLS's or (past TLS, to a ws/wss broker) the WebSocket upgrade */
    bool upgrade = broker && s->state == SESSION_AWAIT_CONNACK && s->p->broker_layer && c->transport_ready;
    snprintf(why, sizeof(why), "%s %s%s%s", broker ? "broker" : "client",
             s->state == SESSION_AWAIT_CONNACK && broker ? "unreachable" : "closed", err ? ": " : "",
             err != EPROTO ? (err ? strerror(err) : "")
             : upgrade     ? "WebSocket upgrade failure (logged above)"
                           : "TLS failure (logged above)");
    bool unreachable = broker && s->state == SESSION_AWAIT_CONNACK;
    if (unreachable) {
        METRIC_INC(session_metrics(s)->broker_dial_failures);
        reply_connack(s, MQTT_RC_SERVER_UNAVAILABLE);
    }
    session_close_as(s, unreachable ? CONN_END_UPSTREAM : CONN_END_NORMAL, CONN_END_NORMAL, why);
}

/* c's output fell to half its mark: the other side, which was not read
 * because c could not take more, and c itself, which was not read because
 * it did not take what we answered, may both be read again. */
static void on_drain(struct conn *c)
{
    session_resume_reading(c->owner);
}

/* TARGET_PROXY_PROTOCOL: the client's address, and its TLS facts, go
 * before anything else on the fresh socket (before TLS to the broker too). */
static int send_proxy_header(struct mgate_session *s, struct conn *c)
{
    struct sockaddr_storage dst;
    socklen_t dlen = sizeof(dst);
    int fd = s->client && s->client->io.fd >= 0 ? s->client->io.fd : c->io.fd; /* the address the client reached */
    if (!s->peer_addr || getsockname(fd, (struct sockaddr *)&dst, &dlen) < 0)
        return -1;
    struct mgate_cert cert;
    struct proxy_tls t = {.tls = s->cert || (s->client && tls_is_tls(s->client))};
    if (t.tls) {
        t.version = s->client ? tls_version(s->client) : NULL;
        t.cn = mgate_session_cert(s, &cert) && cert.cn[0] ? cert.cn : NULL;
    }
    uint8_t hdr[PROXY_MAX_HEADER];
    size_t n = proxy_build_v2(hdr, sizeof(hdr), (const struct sockaddr *)s->peer_addr,
                              (const struct sockaddr *)&dst, &t);
    /* A fresh socket's send buffer takes a few hundred bytes whole. */
    return n && send(c->io.fd, hdr, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static void on_broker_connected(struct conn *c)
{
    struct mgate_session *s = c->owner;
    mgate_log(LOGL_DEBUG, s, "broker connection established");
    if (s->p->target_proxy_protocol && send_proxy_header(s, c) < 0) {
        session_log(s, LOGL_WARN, "cannot send the PROXY protocol header to the broker");
        conn_close_after_flush(c);
        return;
    }
    /* TARGET_PROTOCOL mqtts, wss: the CONNECT already queued goes out once
     * the handshake (and a WebSocket's upgrade) is done; a failed handshake
     * ends like a refused dial. */
    if (broker_connected(c, s->p) < 0)
        conn_close_after_flush(c);
}

int broker_connected(struct conn *c, const struct session_params *p)
{
    if (p->upstream_tls && tls_connect(c, p->upstream_tls, p->target_server_name) < 0)
        return -1;
    return p->broker_layer && p->broker_layer(c, p) < 0 ? -1 : 0;
}

struct conn *broker_dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner,
                         int *err)
{
    struct conn *c;
    *err = 0;
    if (p->dial)
        c = p->dial(l, p, cbs, owner), *err = c ? 0 : ENOMEM;
    else
        c = conn_tcp_dial(l, (const struct sockaddr *)&p->target, p->target_len, cbs, owner, err);
    if (c)
        c->high_water = p->output_high_water;
    return c;
}

int session_dial(struct mgate_session *s)
{
    int err = 0;
    if (s->state == SESSION_CLOSING)
        return -1; /* closed on the way (out of memory saving its identity): never dial */
    s->broker = broker_dial(s->loop, s->p, &broker_cbs, s, &err);
    if (!s->broker) {
        METRIC_INC(session_metrics(s)->broker_dial_failures);
        session_log(s, LOGL_WARN, "cannot dial the broker: %s", strerror(err)); /* once per client: a flood of them is budgeted */
        return -1;
    }
    return 0;
}

/* ---- start ------------------------------------------------------------ */

/* A zeroed session with room for its peer's address as text. */
static struct mgate_session *session_new(const struct sockaddr *peer)
{
    char text[64];
    sockaddr_format(peer, text, sizeof(text));
    size_t n = strlen(text) + 1;
    struct mgate_session *s = calloc(1, sizeof(*s) + n);
    if (s)
        memcpy(s->peer, text, n);
    return s;
}

struct mgate_session *session_start(struct loop *l, struct conn *client, const struct sockaddr *peer,
                                    const struct session_params *p, struct session_list *list)
{
    struct mgate_session *s = session_new(peer);
    if (!s)
        return NULL;
    s->loop = l;
    s->p = p;
    s->client = client;
    s->refs = 1;
    s->id = ++list->next_id;
    client->cbs = &client_cbs;
    client->owner = s;
    client->high_water = p->output_high_water;
    if (p->target_proxy_protocol && (s->peer_addr = calloc(1, sizeof(*s->peer_addr))))
        memcpy(s->peer_addr, peer, peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                   : peer->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                                : sizeof(struct sockaddr));
    if (limits_start(s) < 0) {
        free(s->peer_addr);
        free(s);
        return NULL;
    }
    session_list_add(list, s);
    if (p->open_sessions)
        __atomic_fetch_add(p->open_sessions, 1, __ATOMIC_RELAXED);
    METRIC_INC(loop_metrics(l)->sessions_opened[p->listener_id % METRIC_LISTENERS]);
    loop_timer_start(l, &s->timer, p->connect_timeout_ms, on_timer);
    mgate_log(LOGL_DEBUG, s, "accepted");
    return s;
}

void session_list_drain(struct session_list *list)
{
    list->draining = true;
    struct list_node *n, *next;
    list_for_each_safe(n, next, &list->sessions) {
        struct mgate_session *s = container_of(n, struct mgate_session, node);
        if (s->front)
            s->front->drain(s);
        else if (s->version == MQTT_V5 && s->state == SESSION_OPEN) {
            reply_disconnect(s, MQTT_RC_SERVER_SHUTTING_DOWN);
            session_close_as(s, CONN_END_GOING_AWAY, CONN_END_GOING_AWAY, "shutting down");
        } else if (s->state == SESSION_AWAIT_CONNECT) {
            session_close_as(s, CONN_END_GOING_AWAY, CONN_END_GOING_AWAY, "shutting down");
        }
    }
    if (!list->count && list->on_empty)
        list->on_empty(list);
}

void session_list_close_all(struct session_list *list)
{
    struct list_node *n;
    while ((n = list_first(&list->sessions))) {
        struct mgate_session *s = container_of(n, struct mgate_session, node);
        tell_why(s, CONN_END_GOING_AWAY, CONN_END_GOING_AWAY);
        hard_close(s);
    }
}

/* ---- sessions of other front ends ------------------------------------ */

struct mgate_session *session_front_start(struct loop *l, const struct sockaddr *peer, const struct session_params *p,
                                          struct session_list *list, const struct session_front *front, void *ctx)
{
    struct mgate_session *s = session_new(peer);
    if (!s)
        return NULL;
    s->loop = l;
    s->p = p;
    s->refs = 1;
    s->id = ++list->next_id;
    s->state = SESSION_OPEN;
    s->front = front;
    s->front_ctx = ctx;
    session_list_add(list, s);
    if (p->open_sessions) /* session_end gives it back */
        __atomic_fetch_add(p->open_sessions, 1, __ATOMIC_RELAXED);
    METRIC_INC(loop_metrics(l)->sessions_opened[p->listener_id % METRIC_LISTENERS]);
    mgate_log(LOGL_DEBUG, s, "accepted");
    return s;
}

void *session_front_ctx(const struct mgate_session *s) { return s->front_ctx; }

void session_front_connected(struct mgate_session *s)
{
    if (s->connect_called || s->ended)
        return;
    s->connect_called = true;
    chain_connect(s);
}

void session_front_published(struct mgate_session *s, const struct mgate_publish_req *req) { chain_publish(s, req); }

void session_front_subscribed(struct mgate_session *s, const struct mgate_subscribe_req *req)
{
    chain_subscribe(s, req);
}

void session_front_unsubscribed(struct mgate_session *s, const struct mgate_unsubscribe_req *req)
{
    chain_unsubscribe(s, req);
}

static int save_credentials(struct mgate_session *s, const struct mgate_connect_req *req);
static void lose_identity(struct mgate_session *s);

/* A front end's session is the front end's to end: out of memory it is
 * not closed here, every later request of it is refused instead. */
void session_front_credentials(struct mgate_session *s, const struct mgate_connect_req *req)
{
    if (save_credentials(s, req) < 0)
        lose_identity(s);
}

void session_front_end(struct mgate_session *s)
{
    s->front_ctx = NULL;
    session_end(s);
}

void session_front_reset(struct mgate_session *s) { session_alloc_reset(s); }

/* ---- credentials and scratch memory ---------------------------------- */

/* Out of memory keeping what proves who the client is (its credentials, a
 * token, a certificate): going on would let the handlers judge it as a
 * client without them, so an MQTT pair closes and a front end's session
 * has every later request refused (verdict.c). */
static void lose_identity(struct mgate_session *s)
{
    s->identity_lost = true;
    if (!s->front)
        session_close_as(s, CONN_END_INTERNAL, CONN_END_INTERNAL, "out of memory keeping the client's identity");
}

void session_set_cert(struct mgate_session *s, const struct tls_peer *cert)
{
    free(s->cert);
    if ((s->cert = malloc(sizeof(*s->cert))))
        *s->cert = *cert;
    else
        lose_identity(s);
}

void session_set_credentials(struct mgate_session *s, const char *user, size_t user_len, const char *pass,
                             size_t pass_len)
{
    free(s->front_cred);
    s->front_cred = NULL;
    if (!user && !pass_len)
        return; /* an empty token is no credential */
    struct front_cred *fc = malloc(sizeof(*fc) + user_len + pass_len);
    if (!fc) {
        lose_identity(s);
        return;
    }
    *fc = (struct front_cred){.user_len = (uint32_t)user_len, .pass_len = (uint32_t)pass_len,
                              .has_user = user != NULL, .has_pass = true};
    if (user_len)
        memcpy(fc->mem, user, user_len);
    if (pass_len)
        memcpy(fc->mem + user_len, pass, pass_len);
    s->front_cred = fc;
}

int session_save_credentials(struct mgate_session *s, const struct mgate_connect_req *req)
{
    if (save_credentials(s, req) == 0)
        return 0;
    lose_identity(s);
    return -1;
}

static int save_credentials(struct mgate_session *s, const struct mgate_connect_req *req)
{
    uint32_t ul = req->has_username ? req->username.len : 0;
    uint32_t pl = req->has_password ? req->password.len : 0;
    size_t total = (size_t)req->client_id.len + ul + pl;
    uint8_t *mem = malloc(total ? total : 1);
    if (!mem)
        return -1; /* the old identity (none, at CONNECT) must not stand in: the caller fails closed */
    memcpy(mem, req->client_id.p, req->client_id.len);
    if (ul)
        memcpy(mem + req->client_id.len, req->username.p, ul);
    if (pl)
        memcpy(mem + req->client_id.len + ul, req->password.p, pl);
    free(s->cred_mem);
    s->cred_mem = mem;
    s->client_id = (mgate_bytes){mem, req->client_id.len};
    s->username = (mgate_bytes){mem + req->client_id.len, ul};
    s->password = (mgate_bytes){mem + req->client_id.len + ul, pl};
    return 0;
}

void *mgate_session_alloc(mgate_session *s, size_t n)
{
    struct alloc_block *b = malloc(sizeof(*b) + n);
    if (!b)
        return NULL;
    b->next = s->allocs;
    s->allocs = b;
    return b->data;
}

/* While any ask of the session is pending, a handler's rewrite in it may
 * point into these blocks (a late verdict in one direction while packets
 * flow the other way, or a front end's other leg): they go with the next
 * reset that finds nothing pending, or with the session. */
void session_alloc_reset(struct mgate_session *s)
{
    if (!s->asks)
        alloc_free_all(s);
}

static void alloc_free_all(struct mgate_session *s)
{
    while (s->allocs) {
        struct alloc_block *b = s->allocs;
        s->allocs = b->next;
        free(b);
    }
}

/* ---- public accessors ------------------------------------------------- */

mgate_bytes mgate_session_client_id(const mgate_session *s) { return s->client_id; }
mgate_bytes mgate_session_username(const mgate_session *s) { return s->username; }
mgate_bytes mgate_session_password(const mgate_session *s) { return s->password; }
uint8_t mgate_session_version(const mgate_session *s) { return s->version; }
const char *mgate_session_peer(const mgate_session *s) { return s->peer; }

bool mgate_session_cert(const mgate_session *s, struct mgate_cert *out)
{
    struct tls_peer p = {0};
    bool ok = s->cert ? (p = *s->cert, true) : s->client && tls_peer_info(s->client, &p);
    _Static_assert(sizeof(p) == sizeof(*out), "struct tls_peer and struct mgate_cert differ");
    memcpy(out, &p, sizeof(*out));
    return ok;
}
const char *mgate_session_listener(const mgate_session *s) { return s->p->listener; }
bool session_username_from_cert(const struct mgate_session *s) { return s->p->cn_as_username; }
struct loop *session_loop(const struct mgate_session *s) { return s->loop; }
const struct session_params *session_params_of(const struct mgate_session *s) { return s->p; }
uint64_t mgate_session_id(const mgate_session *s) { return s->id; }
bool mgate_session_closed(const mgate_session *s) { return s->state == SESSION_CLOSING; }

mgate_bytes mgate_session_mount_point(const mgate_session *s)
{
    return s->mount ? (mgate_bytes){s->mount->p, s->mount->len} : (mgate_bytes){(const uint8_t *)"", 0};
}

void session_mount_begin(struct mgate_session *s) { s->mount_chosen = false; }

uint8_t session_mount_settle(struct mgate_session *s, mgate_bytes username, mgate_bytes client_id)
{
    if (s->mount_chosen)
        return 0;
    if (!s->p->mount_point) { /* none for this identity: not the one an earlier request's handler chose */
        free(s->mount);
        s->mount = NULL;
        return 0;
    }
    struct mount *m;
    enum mount_expand_rc rc = mount_expand(s->p->mount_point, username, client_id, &m);
    static const struct {
        uint8_t reason;
        const char *why;
    } refusals[] = {
        [MOUNT_BAD_USERNAME] = {MQTT_RC_BAD_USER_OR_PASSWORD,
                                "refused: MOUNT_POINT needs a username without + # / (and not empty)"},
        [MOUNT_BAD_CLIENT_ID] = {MQTT_RC_BAD_CLIENT_ID,
                                 "refused: MOUNT_POINT needs a client id without + # / (and not empty)"},
        [MOUNT_BAD_RESULT] = {MQTT_RC_NOT_AUTHORIZED, "refused: the mount point would start with '$' or be too long"},
        [MOUNT_NO_MEMORY] = {MQTT_RC_SERVER_BUSY, "refused: out of memory making the mount point"},
    };
    if (rc != MOUNT_OK) {
        session_log(s, LOGL_INFO, "%s", refusals[rc].why);
        return refusals[rc].reason;
    }
    free(s->mount);
    s->mount = m;
    return 0;
}

/* Only while the identity is being settled: a mount point that changed
 * under an open MQTT session would leave its subscriptions in the old
 * tenant.  A front end's session (HTTP, a CoAP bridge) settles it on each
 * request's auth_connect. */
int mgate_session_set_mount_point(mgate_session *s, mgate_bytes prefix)
{
    if (!mount_prefix_valid(prefix) || (!s->front && s->state > SESSION_AUTH_CONNECT))
        return -1;
    struct mount *m = mount_new(prefix);
    if (prefix.len && !m)
        return -1;
    free(s->mount);
    s->mount = m;
    s->mount_chosen = true;
    return 0;
}

/* mgate_after's timers, and the session layer's own (session_after), on a
 * list per loop (a slot): one still pending when the loop is freed (at
 * exit) runs then, as the slots' rule says, so the handler gives its answer
 * and what that answer keeps (a session, a relay held by a pending verdict)
 * is freed too, and a closing MQTT client (mqtt_client.c) is let go. */
static const char afters_key;

static void after_run(struct after *a)
{
    bool owned = a->owned; /* fn may free an after it does not own */
    a->fn(a->arg);
    if (owned)
        free(a);
}

static void after_fired(struct loop *l, struct loop_timer *t)
{
    (void)l;
    struct after *a = container_of(t, struct after, t);
    if (list_linked(&a->node))
        list_remove(&a->node);
    after_run(a);
}

static void afters_destroy(struct loop *l, void *value)
{
    struct list_node *head = value, *n;
    while ((n = list_pop_front(head))) {
        struct after *a = container_of(n, struct after, node);
        loop_timer_stop(l, &a->t);
        after_run(a);
    }
    free(head);
}

void session_after(struct loop *l, struct after *a, uint32_t ms, void (*fn)(void *arg), void *arg)
{
    session_after_stop(l, a);
    a->fn = fn;
    a->arg = arg;
    struct list_node *head = loop_slot_get(l, &afters_key);
    if (!head && (head = calloc(1, sizeof(*head))) && loop_slot_set(l, &afters_key, head, afters_destroy) < 0) {
        free(head);
        head = NULL;
    }
    if (head)
        list_push_back(head, &a->node);
    loop_timer_start(l, &a->t, ms, after_fired);
}

void session_after_stop(struct loop *l, struct after *a)
{
    loop_timer_stop(l, &a->t);
    if (list_linked(&a->node))
        list_remove(&a->node);
}

int mgate_after(mgate_session *s, uint32_t ms, void (*fn)(void *arg), void *arg)
{
    struct after *a = calloc(1, sizeof(*a));
    if (!a)
        return -1;
    a->owned = true;
    session_after(s->loop, a, ms, fn, arg);
    return 0;
}

static void session_fields(struct logline *l, const mgate_session *s)
{
    log_uint(l, "session", s->id);
    log_str(l, "listener", s->p->listener);
    log_str(l, "peer", s->peer);
    if (s->client_id.len)
        log_bytes(l, "client_id", s->client_id.p, s->client_id.len);
    if (s->username.len)
        log_bytes(l, "username", s->username.p, s->username.len);
}

void mgate_log(int level, const mgate_session *s, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    struct logline l;
    log_begin(&l, level, text);
    if (s)
        session_fields(&l, s);
    log_end(&l);
}

/* Two budgets: the session's (one client cannot fill the disk) and the
 * listener's on this worker (nor can many clients together).  The counts
 * left out ride on the next line let through; metrics keep exact counts. */
bool session_log_begin(struct mgate_session *s, struct logline *l, int level, const char *msg)
{
    if (!log_enabled(level))
        return false;
    uint64_t now = loop_now(s->loop);
    uint32_t mine = 0, listener = 0;
    if (!log_limit_take(&s->log_budget, now, SESSION_LOG_BURST, &mine))
        return false;
    if (s->p->log_budget && !log_limit_take(s->p->log_budget, now, LISTENER_LOG_BURST, &listener)) {
        s->log_budget.left_out += mine; /* the count it carried waits; the listener counted this line */
        return false;
    }
    log_begin(l, level, msg);
    session_fields(l, s);
    if (mine)
        log_uint(l, "left_out", mine);
    if (listener)
        log_uint(l, "listener_left_out", listener);
    return true;
}

void session_log(struct mgate_session *s, int level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    struct logline l;
    if (!s) { /* a line of no session's: nothing to budget it by */
        log_begin(&l, level, text);
        log_end(&l);
    } else if (session_log_begin(s, &l, level, text)) {
        log_end(&l);
    }
}
