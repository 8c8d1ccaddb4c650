#include "net/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define CONN_READ_CHUNK (16 * 1024)

static void on_io(struct loop *l, struct loop_io *io, uint32_t events);

/* ---- plain TCP transport ---------------------------------------------- */

static ssize_t tcp_read(struct conn *c, void *buf, size_t len) { return recv(c->io.fd, buf, len, 0); }

static ssize_t tcp_writev(struct conn *c, const struct iovec *iov, int n)
{
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    return sendmsg(c->io.fd, &msg, MSG_NOSIGNAL);
}

static void tcp_close(struct conn *c) { close(c->io.fd); }

static const struct conn_ops tcp_ops = {
    .read = tcp_read,
    .writev = tcp_writev,
    .close = tcp_close,
    .closes_fd = true,
};

/* What the owner reads and writes: the layer's stream if there is one. */
static ssize_t io_read(struct conn *c, void *buf, size_t len)
{
    return c->layer ? c->layer->read(c, buf, len) : c->ops->read(c, buf, len);
}

static ssize_t io_writev(struct conn *c, const struct iovec *iov, int n)
{
    return c->layer ? c->layer->writev(c, iov, n) : c->ops->writev(c, iov, n);
}

/* ---- life cycle ------------------------------------------------------- */

static void set_events(struct conn *c, uint32_t ev)
{
    if (c->io.fd >= 0)
        loop_io_set(c->loop, &c->io, ev);
    else if (c->ops->interest) /* a transport without a descriptor of ours (a WebSocket) */
        c->ops->interest(c, ev);
}

static void update_events(struct conn *c)
{
    uint32_t ev = 0;
    if (c->state == CONN_CLOSED)
        return;
    if (c->hs_waiting) {
        set_events(c, 0); /* the handshake waits for an answer, not for the peer */
        return;
    }
    if ((c->state == CONN_OPEN && !c->read_paused) || c->state == CONN_HANDSHAKE)
        ev |= EPOLLIN;
    if (c->state == CONN_CONNECTING || c->want_write || (c->out.len && c->state != CONN_HANDSHAKE))
        ev |= EPOLLOUT;
    set_events(c, ev);
}

static void free_conn(struct loop *l, struct loop_defer *d)
{
    (void)l;
    struct conn *c = (struct conn *)((char *)d - offsetof(struct conn, defer));
    buf_release(&c->in);
    buf_release(&c->out);
    free(c);
}

static void shut(struct conn *c)
{
    /* Closing the fd takes it out of the epoll set (nothing else holds it):
     * no EPOLL_CTL_DEL needed, except for a transport that keeps it open. */
    if (c->io.fd >= 0 && !c->ops->closes_fd)
        loop_io_del(c->loop, &c->io);
    if (c->layer)
        c->layer->close(c); /* its last words (a close frame) go before the transport's */
    c->layer = NULL;
    c->ops->close(c);
    c->io.fd = -1;
    c->state = CONN_CLOSED;
    loop_defer_cancel(c->loop, &c->defer);
}

/* Tell the owner from a deferred call: a failure found while the owner is
 * busy writing to us must not tear the pair down under its feet. */
static void notify_closed(struct loop *l, struct loop_defer *d)
{
    struct conn *c = (struct conn *)((char *)d - offsetof(struct conn, defer));
    if (c->cbs->on_close)
        c->cbs->on_close(c, c->err);
    free_conn(l, d);
}

static void fail(struct conn *c, int err)
{
    if (c->state == CONN_CLOSED)
        return;
    shut(c);
    c->err = err;
    loop_defer(c->loop, &c->defer, notify_closed);
}

void conn_fail(struct conn *c, int err) { fail(c, err); }

void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    shut(c);
    loop_defer(c->loop, &c->defer, free_conn);
}

static struct conn *conn_new(struct loop *l, int fd, const struct conn_cbs *cbs, void *owner,
                             enum conn_state state)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = l;
    c->ops = &tcp_ops;
    c->cbs = cbs;
    c->owner = owner;
    c->state = (uint8_t)state;
    c->high_water = 64 * 1024;
    uint32_t ev = state == CONN_CONNECTING ? EPOLLOUT : EPOLLIN;
    if (loop_io_add(l, &c->io, fd, ev, on_io) < 0) {
        free(c);
        return NULL;
    }
    return c;
}

static void flush_out(struct conn *c);

struct conn *conn_virtual(struct loop *l, const struct conn_ops *ops, void *transport,
                          const struct conn_cbs *cbs, void *owner)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = l;
    c->io.fd = -1;
    c->ops = ops;
    c->transport = transport;
    c->cbs = cbs;
    c->owner = owner;
    c->state = CONN_OPEN;
    c->high_water = 64 * 1024;
    return c;
}

/*
 * A peer that vanishes without a FIN (power cut, a NAT or firewall that
 * forgot the flow, a broker behind a dead link) must not hold its pair open
 * for ever.  MQTT keepalive does not cover it: a client may set keepalive 0,
 * and a broker's keepalive check only ends its own side.  The kernel's
 * defaults are no better: keepalive probes start after 2 hours, and data
 * nobody acknowledges is retransmitted for about 15 minutes (tcp_retries2).
 * So every TCP socket of mgate's finds a silent peer within
 * LIVENESS_TIMEOUT_MS of the last segment it got from it: an idle one by
 * keepalive probes (KEEPIDLE of silence, then KEEPCNT probes KEEPINTVL
 * apart), one with data unacknowledged by TCP_USER_TIMEOUT (which also ends
 * the probing at the same bound).  TCP_USER_TIMEOUT also ends a peer that is
 * there but takes nothing: its window shut for that long (a stopped broker,
 * a client that no longer reads) while we have data for it.  A pair that
 * moved no byte for a minute is given up as a dead one is, and the client
 * reconnects; the other pairs are not touched.  A probe is one empty segment
 * per idle half-minute per connection; a live peer's kernel answers it
 * without waking the application.
 */
#define LIVENESS_KEEPIDLE_S 30
#define LIVENESS_KEEPINTVL_S 10
#define LIVENESS_KEEPCNT 3
#define LIVENESS_TIMEOUT_MS ((LIVENESS_KEEPIDLE_S + LIVENESS_KEEPCNT * LIVENESS_KEEPINTVL_S) * 1000)

void conn_tcp_liveness(int fd)
{
    int one = 1, idle = LIVENESS_KEEPIDLE_S, intvl = LIVENESS_KEEPINTVL_S, cnt = LIVENESS_KEEPCNT;
    unsigned int timeout = LIVENESS_TIMEOUT_MS;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof(timeout));
}

static void tune_socket(int fd)
{
    int one = 1;
    /* MQTT is request/response and latency-bound; we batch writes ourselves. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn_tcp_liveness(fd);
}

struct conn *conn_tcp_accept(struct loop *l, int fd, const struct conn_cbs *cbs, void *owner)
{
    /* tune_socket's options came from the listening socket (listener_bind) */
    return conn_new(l, fd, cbs, owner, CONN_OPEN);
}

struct conn *conn_tcp_dial(struct loop *l, const struct sockaddr *sa, socklen_t salen,
                           const struct conn_cbs *cbs, void *owner, int *err)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    tune_socket(fd);
    if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
        *err = errno;
        close(fd);
        return NULL;
    }
    struct conn *c = conn_new(l, fd, cbs, owner, CONN_CONNECTING);
    if (!c) {
        *err = ENOMEM;
        close(fd);
    }
    return c;
}

/* ---- input ------------------------------------------------------------ */

/* Hand bytes to the owner; keep what it did not consume. */
static void feed_scratch(struct conn *c, const uint8_t *data, size_t len)
{
    c->in_callback = true;
    size_t used = c->cbs->on_data(c, data, len);
    c->in_callback = false;
    if (c->state == CONN_CLOSED || used >= len)
        return;
    if (buf_append(&c->in, data + used, len - used) < 0)
        fail(c, ENOMEM);
}

static void feed_buffered(struct conn *c)
{
    c->in_callback = true;
    size_t used = c->cbs->on_data(c, buf_head(&c->in), c->in.len);
    c->in_callback = false;
    if (c->state != CONN_CLOSED)
        buf_consume(&c->in, used);
}

void conn_deliver(struct conn *c, const uint8_t *data, size_t len)
{
    if (c->state == CONN_CLOSED)
        return;
    if (c->in.len || c->read_paused) {
        if (buf_append(&c->in, data, len) < 0) {
            fail(c, ENOMEM);
            return;
        }
        if (!c->read_paused)
            feed_buffered(c);
        return;
    }
    feed_scratch(c, data, len);
}

/* Room to read into while a partial packet is buffered.  The packet's
 * announced size (`want`) is a peer's claim, not bytes it sent: reserving
 * all of it at once would let a peer make us hold MAX_PACKET_SIZE for a
 * few header bytes.  The room grows with what arrived instead (at most
 * doubling), so what we hold stays within twice what the peer sent plus a
 * chunk, and a large packet still costs only a few reallocations. */
static size_t read_room(const struct conn *c)
{
    size_t need = c->want > c->in.len ? c->want - c->in.len : 0;
    size_t grow = c->in.len > CONN_READ_CHUNK ? c->in.len : CONN_READ_CHUNK;
    return need > CONN_READ_CHUNK ? (need < grow ? need : grow) : CONN_READ_CHUNK;
}

static void on_readable(struct conn *c)
{
    ssize_t n;
    /* Buffered input waits for its redelivery (conn_resume_read defers it,
     * and this turn's I/O runs first): read nothing more before the owner
     * has seen it.  Else an owner that pauses again at once (the next
     * packet's verdict is pending too) would find one more read in the
     * buffer each time, and the buffer would grow with every resume; the
     * socket stays readable, so the next turn reads. */
    if (c->in.len && c->defer.queued)
        return;
    if (c->in.len) {
        if (buf_reserve(&c->in, read_room(c)) < 0) {
            fail(c, ENOMEM);
            return;
        }
        n = io_read(c, buf_tail(&c->in), buf_room(&c->in));
        if (n > 0) {
            c->in.len += (uint32_t)n;
            feed_buffered(c);
            return;
        }
    } else {
        size_t size;
        uint8_t *scratch = loop_scratch(c->loop, &size);
        n = io_read(c, scratch, size);
        if (n > 0) {
            feed_scratch(c, scratch, (size_t)n);
            return;
        }
    }
    if (n == 0 && c->cbs->on_eof) {
        c->read_paused = true; /* the owner never resumes an ended input */
        c->eof_told = true;
        update_events(c);
        c->cbs->on_eof(c);
    } else if (n == 0)
        fail(c, 0);
    else if (errno != EAGAIN && errno != EINTR)
        fail(c, errno);
    else if (c->want_write)
        update_events(c);
}

void conn_pause_read(struct conn *c)
{
    c->read_paused = true;
    update_events(c);
}

static void redeliver(struct loop *l, struct loop_defer *d)
{
    (void)l;
    struct conn *c = (struct conn *)((char *)d - offsetof(struct conn, defer));
    if (c->state == CONN_OPEN && !c->read_paused && c->in.len)
        feed_buffered(c);
    if (c->state == CONN_OPEN && !c->read_paused && !c->in.len && c->eof_pending) {
        c->eof_pending = false, c->eof_told = true, c->read_paused = true;
        c->cbs->on_eof(c);
    }
}

/* A half-closing owner (on_eof) paused its reads and the socket reports
 * HUP (the peer's FIN came and ours went): level-triggered, it would be
 * reported on every turn.  Take what the kernel holds for us into the
 * input buffer, stop polling (nothing more can come or go), and hand the
 * rest and then the EOF over as the owner resumes. */
static void take_rest(struct conn *c)
{
    while (!c->eof_told && !c->eof_pending) {
        if (buf_reserve(&c->in, CONN_READ_CHUNK) < 0) {
            fail(c, ENOMEM);
            return;
        }
        ssize_t n = io_read(c, buf_tail(&c->in), buf_room(&c->in));
        if (n > 0)
            c->in.len += (uint32_t)n;
        else if (n == 0 || (errno != EINTR && errno != EAGAIN))
            c->eof_pending = true;
        else if (errno == EAGAIN)
            break; /* HUP without the FIN read yet: cannot be; treat the rest as gone */
    }
    c->eof_pending = !c->eof_told;
    loop_io_del(c->loop, &c->io);
}

void conn_read_now(struct conn *c)
{
    if (c->state == CONN_OPEN && !c->read_paused)
        on_readable(c);
}

void conn_resume_read(struct conn *c)
{
    if (!c->read_paused || c->state == CONN_CLOSED)
        return;
    c->read_paused = false;
    update_events(c);
    if (c->in.len || c->eof_pending)
        loop_defer(c->loop, &c->defer, redeliver);
}

/* ---- output ----------------------------------------------------------- */

static void flush_out(struct conn *c)
{
    c->want_write = false;
    if (c->layer && c->layer->flush && c->layer->flush(c) < 0) {
        fail(c, errno);
        return;
    }
    while (c->out.len) {
        struct iovec iov = {buf_head(&c->out), c->out.len};
        ssize_t n = io_writev(c, &iov, 1);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            fail(c, errno);
            return;
        }
        buf_consume(&c->out, (size_t)n);
    }
    if (!c->out.len && c->state == CONN_FLUSHING) {
        fail(c, 0);
        return;
    }
    update_events(c);
    if (c->out.len <= c->high_water / 2 && c->cbs->on_drain)
        c->cbs->on_drain(c);
}

int conn_write(struct conn *c, const void *p, size_t n)
{
    if (c->state == CONN_CLOSED)
        return -1;
    if (c->out.len || c->corked || c->state == CONN_CONNECTING || c->state == CONN_HANDSHAKE) {
        if (buf_append(&c->out, p, n) < 0) {
            fail(c, ENOMEM);
            return -1;
        }
        return 0;
    }
    struct iovec iov = {(void *)p, n};
    ssize_t w = io_writev(c, &iov, 1);
    if (w < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            fail(c, errno);
            return -1;
        }
        w = 0;
    }
    if ((size_t)w == n)
        return 0;
    if (buf_append(&c->out, (const uint8_t *)p + w, n - (size_t)w) < 0) {
        fail(c, ENOMEM);
        return -1;
    }
    update_events(c);
    return 0;
}

void conn_uncork(struct conn *c)
{
    if (!c->corked)
        return;
    c->corked = false;
    if (c->state != CONN_OPEN || !c->out.len) {
        update_events(c); /* flushing to close (or failed): the loop writes it, or nothing */
        return;
    }
    /* All of it came while corked (conn_cork asks for an empty buffer), as
     * conn_write would have written it at once. */
    struct iovec iov = {buf_head(&c->out), c->out.len};
    ssize_t w = io_writev(c, &iov, 1);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
        fail(c, errno);
        return;
    }
    if (w > 0)
        buf_consume(&c->out, (size_t)w);
    update_events(c);
}

void conn_close_after_flush(struct conn *c)
{
    if (c->state == CONN_CLOSED || c->state == CONN_FLUSHING)
        return;
    if (c->state == CONN_CONNECTING || c->state == CONN_HANDSHAKE) {
        fail(c, 0); /* nothing was sent yet; the owner still hears of the end */
        return;
    }
    c->state = CONN_FLUSHING;
    if (c->io.fd >= 0)
        shutdown(c->io.fd, SHUT_RD);
    if (!c->out.len) {
        fail(c, 0);
        return;
    }
    update_events(c);
}

static void on_connected(struct conn *c, uint32_t events)
{
    /* Writable without an error is connected: ask why only when it failed. */
    if (events & (EPOLLERR | EPOLLHUP)) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            fail(c, err);
            return;
        } /* connected, and already closed by the peer: reading will tell */
    }
    c->state = CONN_OPEN;
    if (c->cbs->on_connected)
        c->cbs->on_connected(c);
    if (c->state == CONN_OPEN)
        flush_out(c); /* else a transport's handshake started: it flushes when done */
}


static void run_handshake(struct conn *c);

void conn_handshake_wait(struct conn *c)
{
    c->hs_waiting = true;
    update_events(c);
}

static void rehandshake(struct loop *l, struct loop_defer *d)
{
    (void)l;
    struct conn *c = (struct conn *)((char *)d - offsetof(struct conn, defer));
    c->hs_woken = false;
    if (c->state == CONN_HANDSHAKE && !c->hs_waiting)
        run_handshake(c);
}

/* The first step runs from a deferred call: a client speaks first, and a
 * server's peer may have sent its hello already. */
void conn_start_handshake(struct conn *c, const struct conn_ops *ops, void *transport)
{
    c->ops = ops;
    c->transport = transport;
    c->state = CONN_HANDSHAKE;
    update_events(c);
    loop_defer(c->loop, &c->defer, rehandshake);
}

void conn_set_layer(struct conn *c, const struct conn_layer *layer, void *state)
{
    c->layer = layer;
    c->layer_state = state;
    if (c->state == CONN_HANDSHAKE)
        return; /* the transport's handshake runs first, then the layer's */
    c->transport_ready = true;
    c->state = CONN_HANDSHAKE;
    update_events(c);
    loop_defer(c->loop, &c->defer, rehandshake);
}

void conn_set_layer_open(struct conn *c, const struct conn_layer *layer, void *state)
{
    c->layer = layer;
    c->layer_state = state;
    update_events(c);
}

void conn_handshake_wake(struct conn *c)
{
    if (c->state != CONN_HANDSHAKE || !c->hs_waiting)
        return;
    c->hs_waiting = false;
    c->hs_woken = true; /* the deferred step runs it, not a socket event before it */
    loop_defer(c->loop, &c->defer, rehandshake);
}

/* The transport's handshake, then the layer's: 1 when both are done. */
static int handshake_step(struct conn *c)
{
    if (!c->transport_ready) {
        int r = c->ops->handshake ? c->ops->handshake(c) : 1;
        if (r != 1)
            return r;
        c->transport_ready = true;
    }
    return c->layer && c->layer->handshake ? c->layer->handshake(c) : 1;
}

static void run_handshake(struct conn *c)
{
    c->want_write = false;
    int r = handshake_step(c);
    if (r < 0) {
        fail(c, errno ? errno : EPROTO);
        return;
    }
    if (r == 0) {
        update_events(c);
        return;
    }
    c->state = CONN_OPEN;
    flush_out(c);
    /* The last handshake flight may have carried application data, which
     * the transport holds and epoll cannot see. */
    if (c->state == CONN_OPEN && !c->read_paused)
        on_readable(c);
}

static void on_io(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)l;
    struct conn *c = (struct conn *)io;
    if (c->state == CONN_CLOSED)
        return;
    if (c->state == CONN_HANDSHAKE) {
        if (!c->hs_waiting && !c->hs_woken)
            run_handshake(c);
        else if (events & (EPOLLHUP | EPOLLERR))
            fail(c, ECONNRESET); /* gone while its certificate was being checked */
        return;
    }
    if (c->state == CONN_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            on_connected(c, events);
        return;
    }
    if (events & EPOLLOUT) {
        if (c->want_write && !c->out.len && !c->read_paused) {
            c->want_write = false; /* a read that waited for the socket to drain */
            on_readable(c);
        } else {
            flush_out(c);
        }
    }
    if (c->state == CONN_CLOSED)
        return;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (c->state == CONN_FLUSHING) {
            if (events & (EPOLLHUP | EPOLLERR))
                fail(c, EPIPE);
            return;
        }
        if (!c->read_paused)
            on_readable(c);
        else if (c->cbs->on_eof && (events & (EPOLLHUP | EPOLLERR)) == EPOLLHUP)
            take_rest(c);
        else if (events & (EPOLLHUP | EPOLLERR))
            fail(c, (events & EPOLLERR) ? ECONNRESET : 0);
    }
}

void sockaddr_format(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, len, "unix");
    }
}
