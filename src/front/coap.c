/*
 * CoAP over UDP (MGATE_COAP_WITHOUT_DTLS_): the front end's listening
 * socket, its clients by source address, and mgate's own answers.  A
 * client's relay to the CoAP server is front/coap_relay.c, its bridge to
 * an MQTT broker (TARGET_PROTOCOL mqtt, mqtts) front/coap_bridge.c; the
 * datagram codec is coap/.  docs/COAP.md says what a client and a handler see.
 *
 * The socket is read here for every client of this worker (SO_REUSEPORT
 * spreads clients over the workers by address, so a client stays on one).
 * A datagram from a known address goes to its peer; from a new one, only a
 * request that decodes makes a peer, and only when the worker admits it
 * (MAX_CONNECTIONS, CONNECTION_RATE_LIMIT) and the listener has room
 * (max_peers): anything else is answered statelessly (RST, 5.03) or
 * dropped, so a flood of spoofed sources costs no memory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "front/coap_int.h"
#include "front/front.h"

#define READ_BATCH 64
#define UDP_PAYLOAD_MAX 65507u

/* ---- clients by address ---------------------------------------------------------------- */

uint32_t coap_addr_hash(const union coap_addr *a)
{
    const uint8_t *p;
    size_t n;
    uint16_t port;
    if (a->sa.sa_family == AF_INET6) {
        p = (const uint8_t *)&a->in6.sin6_addr, n = sizeof(a->in6.sin6_addr), port = a->in6.sin6_port;
    } else {
        p = (const uint8_t *)&a->in.sin_addr, n = sizeof(a->in.sin_addr), port = a->in.sin_port;
    }
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    h = (h ^ (port & 0xFF)) * 16777619u;
    return (h ^ (port >> 8)) * 16777619u;
}

bool coap_addr_equal(const union coap_addr *a, const union coap_addr *b)
{
    if (a->sa.sa_family != b->sa.sa_family)
        return false;
    if (a->sa.sa_family == AF_INET6)
        return a->in6.sin6_port == b->in6.sin6_port && a->in6.sin6_scope_id == b->in6.sin6_scope_id &&
               !memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr));
    return a->in.sin_port == b->in.sin_port && a->in.sin_addr.s_addr == b->in.sin_addr.s_addr;
}

static struct coap_peer *find(struct coap_server *srv, const union coap_addr *a, uint32_t hash)
{
    for (struct coap_peer *p = srv->table[hash & (srv->table_size - 1)]; p; p = p->hnext)
        if (p->hash == hash && coap_addr_equal(&p->addr, a))
            return p;
    return NULL;
}

/* Twice the buckets once there are more peers than buckets (out of memory:
 * the chains just grow longer). */
static void grow(struct coap_server *srv)
{
    uint32_t size = srv->table_size * 2;
    struct coap_peer **t = calloc(size, sizeof(*t));
    if (!t)
        return;
    for (uint32_t i = 0; i < srv->table_size; i++)
        for (struct coap_peer *p = srv->table[i], *next; p; p = next) {
            next = p->hnext;
            p->hnext = t[p->hash & (size - 1)];
            t[p->hash & (size - 1)] = p;
        }
    free(srv->table);
    srv->table = t;
    srv->table_size = size;
}

void coap_server_add(struct coap_server *srv, struct coap_peer *peer)
{
    uint32_t slot = peer->hash & (srv->table_size - 1);
    peer->hnext = srv->table[slot];
    srv->table[slot] = peer;
    if (++srv->peers > srv->table_size)
        grow(srv);
}

void coap_server_unlink(struct coap_server *srv, struct coap_peer *peer)
{
    for (struct coap_peer **pp = &srv->table[peer->hash & (srv->table_size - 1)]; *pp; pp = &(*pp)->hnext)
        if (*pp == peer) {
            *pp = peer->hnext;
            srv->peers--;
            return;
        }
    ASSERT(!"a peer that is not in its table");
}

/* ---- mgate's own datagrams ----------------------------------------------------------------- */

static void send_to(struct coap_server *srv, const union coap_addr *to, socklen_t len, const uint8_t *data,
                    size_t n)
{
    if (srv->io.fd >= 0) /* UDP: a full socket buffer loses the datagram, as the network may */
        (void)!sendto(srv->io.fd, data, n, MSG_DONTWAIT, &to->sa, len);
}

void coap_to_client(struct coap_peer *peer, const uint8_t *data, size_t len)
{
    if (peer->srv->dtls) /* never in the clear */
        coap_dtls_to_client(peer, data, len);
    else
        send_to(peer->srv, &peer->addr, peer->addr_len, data, len);
}

#define ANSWER_MAX 64

/* mgate's own answer to req into out[ANSWER_MAX]: its length, or <= 0. */
static ssize_t answer_encode(struct coap_server *srv, const struct coap_msg *req, uint8_t code,
                             const struct coap_opt *opts, size_t nopts, uint8_t *out)
{
    struct coap_msg m = coap_answer(req, code, srv->next_mid++);
    METRIC_INC(loop_metrics(srv->loop)->coap_answers[COAP_CODE_CLASS(code) % 6]);
    return coap_encode(&m, opts, nopts, out, ANSWER_MAX);
}

static void answer(struct coap_server *srv, const union coap_addr *to, socklen_t len, const struct coap_msg *req,
                   uint8_t code, const struct coap_opt *opts, size_t nopts)
{
    uint8_t out[ANSWER_MAX];
    ssize_t n = answer_encode(srv, req, code, opts, nopts, out);
    if (n > 0)
        send_to(srv, to, len, out, (size_t)n);
}

void coap_answer_client(struct coap_peer *peer, const struct coap_msg *req, uint8_t code)
{
    uint8_t out[ANSWER_MAX];
    ssize_t n = answer_encode(peer->srv, req, code, NULL, 0, out);
    if (n > 0)
        coap_to_client(peer, out, (size_t)n);
}

static void reset(struct coap_server *srv, const union coap_addr *to, socklen_t len, uint16_t mid)
{
    uint8_t out[COAP_HEADER_LEN];
    struct coap_msg m = coap_empty(COAP_RST, mid);
    if (coap_encode(&m, NULL, 0, out, sizeof(out)) == COAP_HEADER_LEN)
        send_to(srv, to, len, out, sizeof(out));
}

/* A datagram over max_datagram (MSG_TRUNC told its size): a request whose
 * header and token arrived gets 4.13 with Size1, the most mgate takes
 * (RFC 7252 5.9.2.9); anything else is dropped. */
static void too_big(struct coap_server *srv, const union coap_addr *from, socklen_t len, const uint8_t *d,
                    size_t have)
{
    struct coap_msg m;
    coap_err e = coap_decode(d, have, &m);
    if (e != COAP_OK && e != COAP_ERR_TRUNCATED)
        return;
    if (COAP_CODE_CLASS(m.code) != 0 || m.code == COAP_EMPTY || m.tkl > COAP_TOKEN_MAX ||
        COAP_HEADER_LEN + (size_t)m.tkl > have || (m.type != COAP_CON && m.type != COAP_NON))
        return;
    m.token = d + COAP_HEADER_LEN;
    uint8_t size1[4];
    struct coap_opt opt = {COAP_OPT_SIZE1, size1, (uint32_t)coap_uint_put(size1, srv->cs->max_datagram)};
    answer(srv, from, len, &m, COAP_TOO_LARGE, &opt, 1);
}

/* ---- new clients ------------------------------------------------------------------------- */

void coap_log_refusal(struct coap_server *srv, const union coap_addr *from, const char *why)
{
    if (loop_now(srv->loop) < srv->next_refusal_log)
        return;
    srv->next_refusal_log = loop_now(srv->loop) + 1000;
    char addr[64];
    sockaddr_format(&from->sa, addr, sizeof(addr));
    log_msgf(LOGL_WARN, "%s: refusing %s: %s", srv->p->listener, addr, why);
}

/* The first datagram from an address: only a request that decodes may
 * make a peer; the rest is answered the stateless way or dropped. */
static void from_stranger(struct coap_server *srv, const union coap_addr *from, socklen_t len, uint32_t hash,
                          const uint8_t *d, size_t n)
{
    struct coap_msg m;
    coap_err e = coap_decode(d, n, &m);
    if (e != COAP_OK) {
        METRIC_INC(loop_metrics(srv->loop)->coap_dropped);
        if (coap_reject_how(&m, e) != COAP_REJECT_DROP)
            reset(srv, from, len, m.mid); /* a CON with a bad option is reset too: there is no server yet */
        return;
    }
    if (m.code == COAP_EMPTY) { /* a ping (CON) is answered with RST (RFC 7252 4.3); ACK, RST: nothing to do */
        if (m.type == COAP_CON)
            reset(srv, from, len, m.mid);
        return;
    }
    if (COAP_CODE_CLASS(m.code) != 0) { /* a response to nothing mgate sent */
        if (m.type == COAP_CON)
            reset(srv, from, len, m.mid);
        return;
    }
    const char *why = NULL;
    if (srv->stopped)
        why = "shutting down";
    else if (srv->peers >= srv->cs->max_peers)
        why = "the listener's peers are at their bound (MAX_CONNECTIONS, or per worker 4096 and a quarter of "
              "the descriptor limit)";
    else if (!srv->admit(srv->admit_ctx, &from->sa))
        why = ""; /* the worker counted and logged it */
    struct coap_peer *peer = why ? NULL : coap_peer_new(srv, from, len, hash);
    if (!peer) {
        if (why && *why)
            coap_log_refusal(srv, from, why);
        if (m.type == COAP_CON) /* stateless, and no bigger than the request */
            answer(srv, from, len, &m, COAP_SERVICE_UNAVAILABLE, NULL, 0);
        return;
    }
    coap_server_add(srv, peer);
    coap_peer_from_client(peer, d, n);
}

static void on_readable(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)l;
    (void)events;
    struct coap_server *srv = (struct coap_server *)io;
    for (int i = 0; i < READ_BATCH && srv->io.fd >= 0; i++) {
        union coap_addr from;
        socklen_t len = sizeof(from);
        ssize_t n = recvfrom(io->fd, srv->buf, srv->cs->max_datagram, MSG_TRUNC, &from.sa, &len);
        if (n < 0)
            return; /* EAGAIN; an ICMP error for an answer of ours is nothing to act on */
        if (from.sa.sa_family != AF_INET && from.sa.sa_family != AF_INET6)
            continue;
        if ((size_t)n > srv->cs->max_datagram) {
            too_big(srv, &from, len, srv->buf, srv->cs->max_datagram);
            continue;
        }
        uint32_t hash = coap_addr_hash(&from);
        struct coap_peer *peer = find(srv, &from, hash);
        if (peer)
            coap_peer_from_client(peer, srv->buf, (size_t)n);
        else
            from_stranger(srv, &from, len, hash, srv->buf, (size_t)n);
    }
}

/* ---- the front end ----------------------------------------------------------------------- */

int coap_server_init(struct coap_server *srv, struct loop *l, int fd, const struct session_params *p,
                     struct session_list *list, bool (*admit)(void *, const struct sockaddr *), void *admit_ctx,
                     loop_io_cb readable)
{
    srv->io.fd = -1;
    srv->loop = l;
    srv->p = p;
    srv->cs = p->front_settings;
    srv->list = list;
    srv->admit = admit;
    srv->admit_ctx = admit_ctx;
    srv->table_size = 64;
    srv->next_mid = (uint16_t)(random() & 0xFFFF);
    srv->table = calloc(srv->table_size, sizeof(*srv->table));
    srv->buf = malloc(srv->cs->max_datagram);
    if (!srv->table || !srv->buf || loop_io_add(l, &srv->io, fd, EPOLLIN, readable) < 0) {
        close(fd);
        free(srv->table);
        free(srv->buf);
        return -1;
    }
    return 0;
}

void coap_server_fini(struct coap_server *srv)
{
    ASSERT(srv->peers == 0); /* every session ended before the worker's loop was freed */
    if (srv->io.fd >= 0)
        close(srv->io.fd); /* the loop is gone: no epoll set to leave */
    free(srv->table);
    free(srv->buf);
}

static void *coap_serve(struct loop *l, int fd, const struct session_params *p, struct session_list *list,
                        bool (*admit)(void *, const struct sockaddr *), void *admit_ctx)
{
    struct coap_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        close(fd);
        return NULL;
    }
    if (coap_server_init(srv, l, fd, p, list, admit, admit_ctx, on_readable) < 0) {
        free(srv);
        return NULL;
    }
    return srv;
}

/* At the drain: new addresses are refused; the socket stays open for the
 * peers still finishing (their session list drain ends them). */
static void coap_stop(void *server)
{
    struct coap_server *srv = server;
    srv->stopped = true;
}

static void coap_unserve(void *server)
{
    coap_server_fini(server);
    free(server);
}

/* Each peer that got in holds a socket to the server: without MAX_CONNECTIONS,
 * a worker keeps at most COAP_DEFAULT_MAX_PEERS, and no more than a quarter
 * of the descriptors the process may open, so that a flood of CoAP clients
 * cannot take every descriptor from the other listeners. */
static uint32_t default_max_peers(void)
{
    struct rlimit rl;
    uint32_t n = COAP_DEFAULT_MAX_PEERS;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 4 < n)
        n = rl.rlim_cur / 4 > 16 ? (uint32_t)(rl.rlim_cur / 4) : 16;
    return n;
}

static int coap_prepare(const struct listener_config *lc, struct session_params *p, char *err, size_t errlen)
{
    bool bridge = lc->target_protocol == TARGET_MQTT || lc->target_protocol == TARGET_MQTTS;
    if (lc->target_protocol != TARGET_COAP && !bridge) {
        snprintf(err, errlen, "%sTARGET_PROTOCOL: \"%s\" is not available on a CoAP listener (use coap, mqtt or mqtts)",
                 lc->prefix, target_protocol_name(lc->target_protocol));
        return -1;
    }
    if (lc->proxy_protocol || lc->target_proxy_protocol) {
        snprintf(err, errlen, "%s%sPROXY_PROTOCOL: not possible on a CoAP listener (UDP has no such header)",
                 lc->prefix, lc->proxy_protocol ? "" : "TARGET_");
        return -1;
    }
    struct coap_settings *cs = calloc(1, sizeof(*cs));
    if (!cs) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    cs->max_datagram = lc->max_packet_size < UDP_PAYLOAD_MAX ? lc->max_packet_size : UDP_PAYLOAD_MAX;
    cs->idle_ms = lc->idle_timeout_ms;
    cs->ack_ms = lc->ack_timeout_ms;
    cs->max_peers = lc->max_connections ? lc->max_connections : default_max_peers();
    cs->bridge = bridge;
    p->front_settings = cs;
    return 0;
}

static void coap_free(struct session_params *p)
{
    free((void *)p->front_settings);
    p->front_settings = NULL;
}

const struct front_ops front_coap = {
    .name = "CoAP",
    .prepare = coap_prepare,
    .free = coap_free,
    .datagram = true,
    .serve = coap_serve,
    .stop = coap_stop,
    .unserve = coap_unserve,
};
