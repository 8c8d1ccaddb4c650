/*
 * CoAP over DTLS 1.2 (MGATE_COAP_WITH_DTLS_): the same relay as plain CoAP
 * (front/coap_relay.c), behind a DTLS session per client.  docs/COAP.md
 * tells why it is built this way.
 *
 * The listener's UDP socket (one per worker, SO_REUSEPORT) only takes new
 * clients: tls_dtls_listen answers a ClientHello with a cookie and keeps
 * nothing, so spoofed sources cost no memory.  A client that comes back
 * with a valid cookie gets a socket of its own, bound to the listener's
 * address (SO_REUSEPORT) and connected to the client: the kernel delivers
 * that client's datagrams to it from then on, so clients are told apart by
 * the kernel and none waits for another.  The socket is a struct conn with
 * the listener's TLS context (net/tls.c), so the handshake, the client
 * certificate's checks (OCSP and CRL without blocking the loop) and the
 * failure logs are those of every TLS listener.  Each DTLS record read is
 * one CoAP datagram for the client's peer; the first one makes the peer
 * (one session, as over plain UDP), whose username is the PSK identity or,
 * with USE_CN_AS_USERNAME, the certificate's CN.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "front/coap_int.h"
#include "front/front.h"
#include "net/conn.h"
#include "net/tls.h"

#define LISTEN_BATCH 64
/* A DTLS record carries at most this much (RFC 6347 4.1). */
#define DTLS_PLAIN_MAX 16384u

struct dtls_client;

struct dtls_server {
    struct coap_server srv; /* first: its io is the listening socket */
    struct tls_dtls_pending *pending;
    struct dtls_client *clients; /* every client with a connection */
    uint32_t handshaking;        /* of them, without a peer yet */
    union coap_addr local;
    socklen_t local_len;
};

struct dtls_client {
    struct dtls_client *next, **pprev;
    struct dtls_server *ds;
    struct conn *c;
    struct coap_peer *peer; /* from its first datagram on */
    union coap_addr addr;
    socklen_t addr_len;
    struct loop_timer timer; /* until the peer: DTLS retransmissions and CONNECT_TIMEOUT */
    uint64_t deadline;
    bool handshaking;        /* counted in ds->handshaking: no peer yet */
};

static void client_free(struct dtls_client *dc)
{
    struct dtls_server *ds = dc->ds;
    if (dc->handshaking)
        ds->handshaking--;
    loop_timer_stop(ds->srv.loop, &dc->timer);
    *dc->pprev = dc->next;
    if (dc->next)
        dc->next->pprev = dc->pprev;
    free(dc);
}

/* End a client that has no peer: its connection closed (a close_notify if
 * the handshake finished). */
static void client_close(struct dtls_client *dc)
{
    struct conn *c = dc->c;
    client_free(dc);
    conn_close(c);
}

/* ---- datagrams ------------------------------------------------------------------------------ */

void coap_dtls_to_client(struct coap_peer *peer, const uint8_t *data, size_t len)
{
    struct dtls_client *dc = peer->dtls;
    if (!dc || dc->c->state != CONN_OPEN)
        return;
    if (len > DTLS_PLAIN_MAX) {
        session_log(peer->s, LOGL_WARN, "coap: %zu bytes for the client do not fit a DTLS record; dropped", len);
        METRIC_INC(loop_metrics(peer->srv->loop)->coap_dropped);
        return;
    }
    struct iovec iov = {(void *)data, len};
    (void)conn_raw_writev(dc->c, &iov, 1); /* a record, or lost as a datagram may be */
}

void coap_dtls_peer_end(struct coap_peer *peer)
{
    struct dtls_client *dc = peer->dtls;
    peer->dtls = NULL;
    dc->peer = NULL;
    client_close(dc);
}

/* The username the handshake proved: the PSK identity, or the certificate's
 * CN when USE_CN_AS_USERNAME (none: the client is refused).  *user NULL:
 * the query's username stays. */
static int proven_username(struct dtls_client *dc, char **user)
{
    const char *psk = tls_psk_identity(dc->c);
    char cn[128] = "";
    *user = NULL;
    if (!psk && dc->ds->srv.p->cn_as_username)
        tls_peer_cn(dc->c, cn, sizeof(cn));
    const char *name = psk ? psk : cn;
    if (!*name && !psk && dc->ds->srv.p->cn_as_username) {
        char addr[64];
        sockaddr_format(&dc->addr.sa, addr, sizeof(addr));
        log_msgf(LOGL_INFO, "%s: refusing %s: USE_CN_AS_USERNAME and no usable certificate CN",
                 dc->ds->srv.p->listener, addr);
        return -1;
    }
    if (*name && !(*user = strdup(name)))
        return -1;
    return 0;
}

/* The first datagram: the client becomes a peer, as a new address does on
 * plain UDP. */
static bool start_peer(struct dtls_client *dc)
{
    struct coap_server *srv = &dc->ds->srv;
    char *user;
    if (proven_username(dc, &user) < 0)
        return false;
    struct coap_peer *peer = coap_peer_new(srv, &dc->addr, dc->addr_len, coap_addr_hash(&dc->addr));
    if (!peer) {
        free(user);
        return false;
    }
    struct tls_peer cert;
    if (tls_peer_info(dc->c, &cert))
        session_set_cert(peer->s, &cert);
    peer->dtls = dc;
    peer->username = user;
    coap_server_add(srv, peer);
    dc->peer = peer;
    dc->handshaking = false;
    dc->ds->handshaking--;
    loop_timer_stop(srv->loop, &dc->timer);
    return true;
}

/* One record: one datagram for the peer.  false: the client is gone (dc
 * freed; c stays readable until the loop frees it). */
static bool from_client(struct dtls_client *dc, struct conn *c, const uint8_t *data, size_t len)
{
    struct coap_server *srv = &dc->ds->srv;
    if (!dc->peer && !start_peer(dc)) {
        client_close(dc);
        return false;
    }
    if (len > srv->cs->max_datagram) {
        METRIC_INC(loop_metrics(srv->loop)->coap_dropped);
        session_log(dc->peer->s, LOGL_INFO, "coap: %zu bytes from the client, over MAX_PACKET_SIZE; dropped", len);
        return true;
    }
    memcpy(srv->buf, data, len); /* where the relay expects a client's datagram */
    coap_peer_from_client(dc->peer, srv->buf, len);
    return c->state != CONN_CLOSED; /* the relay may have ended the peer, and the client with it */
}

static size_t on_data(struct conn *c, const uint8_t *data, size_t len)
{
    struct dtls_client *dc = c->owner;
    if (!from_client(dc, c, data, len))
        return len;
    /* The other records of the same datagram: the connection reads one a
     * time and epoll will not report them.  data (the loop's scratch) is
     * done with, so they are read into it. */
    size_t room;
    uint8_t *buf = loop_scratch(c->loop, &room);
    while (tls_dtls_has_pending(c)) {
        ssize_t n = conn_raw_read(c, buf, room);
        if (n > 0) {
            if (!from_client(dc, c, buf, (size_t)n))
                break;
        } else {
            if (n == 0 || errno != EAGAIN)
                conn_fail(c, n == 0 ? 0 : errno); /* a close_notify or an error after the record */
            break;
        }
    }
    return len;
}

static void on_close(struct conn *c, int err)
{
    (void)err;
    struct dtls_client *dc = c->owner;
    struct coap_peer *peer = dc->peer;
    if (peer) { /* the client said goodbye, or its address went away */
        peer->dtls = NULL;
        dc->peer = NULL;
        client_free(dc);
        coap_peer_end(peer);
    } else {
        client_free(dc);
    }
}

static const struct conn_cbs client_cbs = {.on_data = on_data, .on_close = on_close};

/* Until the first datagram: resend our flight when DTLS's timer says so,
 * and give up at CONNECT_TIMEOUT. */
static void on_timer(struct loop *l, struct loop_timer *t)
{
    struct dtls_client *dc = (struct dtls_client *)((char *)t - offsetof(struct dtls_client, timer));
    uint64_t now = loop_now(l);
    if (now >= dc->deadline) {
        char addr[64];
        sockaddr_format(&dc->addr.sa, addr, sizeof(addr));
        log_msgf(LOGL_INFO, "%s: %s: no DTLS handshake and request within CONNECT_TIMEOUT; closed",
                 dc->ds->srv.p->listener, addr);
        client_close(dc);
        return;
    }
    uint32_t ms = tls_dtls_timer(dc->c);
    uint64_t left = dc->deadline - now;
    loop_timer_start(l, t, (uint32_t)(ms && ms < left ? ms : left), on_timer);
}

/* ---- new clients ---------------------------------------------------------------------------- */

/* The client's own socket: the listener's address, connected to the client.
 * Anything the kernel queued on it before connect() (another client's
 * datagram: it was in the listener's SO_REUSEPORT group for that moment) is
 * dropped; their senders send again, as over a lossy network. */
static int client_socket(struct dtls_server *ds, const union coap_addr *to, socklen_t len)
{
    int fd = socket(to->sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, &ds->local.sa, ds->local_len) < 0 || connect(fd, &to->sa, len) < 0) {
        close(fd);
        return -1;
    }
    char drop[1];
    while (recv(fd, drop, sizeof(drop), MSG_DONTWAIT | MSG_TRUNC) >= 0)
        ;
    return fd;
}

/* A client whose ClientHello came again before its socket was connected
 * (clients send it twice; the second one reached the listener) already has
 * its socket: a second one would take its datagrams. */
static bool known(const struct dtls_server *ds, const union coap_addr *a)
{
    for (const struct dtls_client *dc = ds->clients; dc; dc = dc->next)
        if (coap_addr_equal(&dc->addr, a))
            return true;
    return false;
}

static void new_client(struct dtls_server *ds, const union coap_addr *from, socklen_t len)
{
    struct coap_server *srv = &ds->srv;
    const char *why = NULL;
    if (known(ds, from)) {
        tls_dtls_pending_free(ds->pending);
        ds->pending = NULL;
        return;
    }
    if (srv->stopped)
        why = "shutting down";
    else if (srv->peers + ds->handshaking >= srv->cs->max_peers)
        why = "the listener's peers are at their bound (MAX_CONNECTIONS or 4096 per worker)";
    else if (!srv->admit(srv->admit_ctx, &from->sa))
        why = ""; /* the worker counted and logged it */
    struct dtls_client *dc = why ? NULL : calloc(1, sizeof(*dc));
    int fd = dc ? client_socket(ds, from, len) : -1;
    struct conn *c = fd >= 0 ? conn_tcp_accept(srv->loop, fd, &client_cbs, dc) : NULL;
    if (!c) {
        if (why && *why)
            coap_log_refusal(srv, from, why);
        else if (!why)
            log_msgf(LOGL_WARN, "%s: cannot take a DTLS client: %s", srv->p->listener, strerror(errno));
        if (fd >= 0 && !c)
            close(fd);
        free(dc);
        tls_dtls_pending_free(ds->pending); /* its handshake is abandoned; the client may try again */
        ds->pending = NULL;
        return;
    }
    dc->ds = ds;
    dc->c = c;
    dc->addr = *from;
    dc->addr_len = len;
    dc->next = ds->clients;
    dc->pprev = &ds->clients;
    if (ds->clients)
        ds->clients->pprev = &dc->next;
    ds->clients = dc;
    dc->handshaking = true;
    ds->handshaking++;
    if (tls_dtls_accept(c, srv->p->tls, &ds->pending) < 0) {
        client_close(dc);
        return;
    }
    dc->deadline = loop_now(srv->loop) + srv->p->connect_timeout_ms;
    loop_timer_start(srv->loop, &dc->timer, 1000 < srv->p->connect_timeout_ms ? 1000 : srv->p->connect_timeout_ms,
                     on_timer);
}

static void on_listen(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)l;
    (void)events;
    struct dtls_server *ds = (struct dtls_server *)io;
    for (int i = 0; i < LISTEN_BATCH; i++) {
        union coap_addr from;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        switch (tls_dtls_listen(ds->srv.p->tls, &ds->pending, io->fd, &ss, &len)) {
        case TLS_LISTEN_AGAIN:
            return;
        case TLS_LISTEN_HANDLED:
            continue;
        case TLS_LISTEN_CLIENT:
            memcpy(&from, &ss, len < sizeof(from) ? len : sizeof(from));
            new_client(ds, &from, len);
            continue;
        }
    }
}

/* ---- the front end -------------------------------------------------------------------------- */

static void *dtls_serve(struct loop *l, int fd, const struct session_params *p, struct session_list *list,
                        bool (*admit)(void *, const struct sockaddr *), void *admit_ctx)
{
    struct dtls_server *ds = calloc(1, sizeof(*ds));
    if (!ds) {
        close(fd);
        return NULL;
    }
    ds->local_len = sizeof(ds->local);
    if (getsockname(fd, &ds->local.sa, &ds->local_len) < 0 ||
        coap_server_init(&ds->srv, l, fd, p, list, admit, admit_ctx, on_listen) < 0) {
        free(ds);
        return NULL;
    }
    ds->srv.dtls = true;
    return ds;
}

/* At the drain: no new clients, and handshakes end (peers are drained as
 * sessions, and their connections close with them). */
static void dtls_stop(void *server)
{
    struct dtls_server *ds = server;
    front_coap.stop(&ds->srv);
    for (struct dtls_client *dc = ds->clients, *next; dc; dc = next) {
        next = dc->next;
        if (dc->handshaking)
            client_close(dc);
    }
}

static void dtls_unserve(void *server)
{
    struct dtls_server *ds = server;
    ASSERT(!ds->clients); /* peers ended with their sessions, handshakes at stop */
    tls_dtls_pending_free(ds->pending);
    coap_server_fini(&ds->srv);
    free(ds);
}

static int dtls_prepare(const struct listener_config *lc, struct session_params *p, char *err, size_t errlen)
{
    return front_coap.prepare(lc, p, err, errlen);
}

static void dtls_free(struct session_params *p) { front_coap.free(p); }

const struct front_ops front_coap_dtls = {
    .name = "CoAP over DTLS",
    .prepare = dtls_prepare,
    .free = dtls_free,
    .datagram = true,
    .serve = dtls_serve,
    .stop = dtls_stop,
    .unserve = dtls_unserve,
};
