/*
 * A connection is one byte stream with a transport underneath (plain TCP,
 * or TLS with its own conn_ops) and optionally a layer over the transport
 * (a WebSocket, net/ws.h: it frames what is written and unframes what is
 * read, so the owner still sees a byte stream).  Its owner (a
 * session) sees only bytes in, bytes out, drain and close.
 *
 * Input is read into the loop's shared scratch buffer and handed to
 * on_data; only the bytes on_data leaves unconsumed (a partial packet, or
 * everything after a packet waiting for a verdict) are copied into the
 * connection's own buffer.  Output is written at once when possible; only the
 * unsent rest is buffered.  Both buffers are freed as soon as they empty.
 */
#ifndef MGATE_CONN_H
#define MGATE_CONN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "core/buf.h"
#include "core/loop.h"

struct conn;

/* A transport.  read/writev behave like recv/sendmsg (-1 with errno
 * EAGAIN when they must wait; a transport that needs the socket writable to
 * make progress sets c->want_write).  handshake is optional: it is called
 * on every event until it returns 1 (done); 0 means not yet, -1 failed. */
struct conn_ops {
    ssize_t (*read)(struct conn *c, void *buf, size_t len);
    ssize_t (*writev)(struct conn *c, const struct iovec *iov, int n);
    void (*close)(struct conn *c);
    int (*handshake)(struct conn *c);
    /* Transports without a descriptor of ours: what the connection wants
     * now (EPOLLIN, EPOLLOUT). */
    void (*interest)(struct conn *c, uint32_t events);
    /* close() closes c->io.fd, which takes it out of the epoll set. */
    bool closes_fd;
};

/* A layer between the transport and the owner (a WebSocket).  It reads and
 * writes through c->ops (conn_raw_read/conn_raw_writev) and gives the owner
 * what the transport would: read and writev with recv/sendmsg conventions
 * in bytes of the owner's stream.  handshake runs after the transport's own,
 * until it returns 1; flush sends what the layer itself queued (a pong)
 * before the owner's output; close runs before the transport closes (a
 * close frame) and frees the layer's state. */
struct conn_layer {
    ssize_t (*read)(struct conn *c, void *buf, size_t len);
    ssize_t (*writev)(struct conn *c, const struct iovec *iov, int n);
    int (*handshake)(struct conn *c);
    int (*flush)(struct conn *c);
    void (*close)(struct conn *c);
};

struct conn_cbs {
    /* Bytes arrived; return how many were consumed (the rest is kept). */
    size_t (*on_data)(struct conn *c, const uint8_t *data, size_t len);
    /* Unsent output fell below the low-water mark. */
    void (*on_drain)(struct conn *c);
    /* An outgoing connection is established. */
    void (*on_connected)(struct conn *c);
    /* The peer closed, or an error happened (err = errno, 0 for EOF).  The
     * connection is already closed; it is freed after the callback. */
    void (*on_close)(struct conn *c, int err);
    /* For an owner that half-closes (a tunnelled TCP connection), else
     * NULL: the peer's EOF calls it instead of ending the connection
     * (on_close with 0); reading stops for good and writing goes on until
     * the owner closes. */
    void (*on_eof)(struct conn *c);
};

enum conn_state { CONN_CONNECTING, CONN_HANDSHAKE, CONN_OPEN, CONN_FLUSHING, CONN_CLOSED };

/* Why the owner ends a connection, for transports that can tell the peer
 * (a WebSocket close code); TCP and TLS ignore it. */
enum conn_end {
    CONN_END_NORMAL = 0,
    CONN_END_GOING_AWAY, /* shutting down */
    CONN_END_PROTOCOL,   /* the peer broke the protocol */
    CONN_END_TOO_BIG,    /* the peer sent more than the limit */
    CONN_END_POLICY,     /* refused: authentication, authorization, deadline */
    CONN_END_UPSTREAM,   /* the other side (the broker) failed */
    CONN_END_INTERNAL,   /* out of memory */
};

struct conn {
    struct loop_io io;
    struct loop *loop;
    const struct conn_ops *ops;
    void *transport; /* the transport's own state (an SSL *) */
    const struct conn_layer *layer; /* NULL: the owner reads the transport */
    void *layer_state;
    const struct conn_cbs *cbs;
    void *owner;
    struct buf in, out;
    uint32_t high_water; /* output size at which the owner should stop feeding us */
    uint32_t want;       /* bytes the owner needs before on_data can progress (a hint) */
    int err;             /* why it failed, for on_close */
    uint8_t state;       /* enum conn_state */
    uint8_t end;         /* enum conn_end, set by the owner before closing */
    bool read_paused;
    bool want_write;     /* the transport needs EPOLLOUT to progress */
    bool in_callback;    /* on_data is running: do not re-enter */
    bool hs_waiting;     /* the handshake waits for something other than the peer */
    bool hs_woken;       /* ... and its answer came: the next step is deferred */
    bool transport_ready; /* the transport's handshake is done (the layer's may not be) */
    bool corked;         /* conn_write queues: conn_uncork writes what came meanwhile at once */
    bool eof_pending; /* cbs->on_eof: the peer's FIN is in c->in's wake, told once it is consumed */
    bool eof_told;
    struct loop_defer defer; /* re-delivery after a resume, and the final free */
};

/* TCP keepalive and TCP_USER_TIMEOUT so that a peer gone without a FIN, or
 * one that takes no data, is given up 60 s after its last segment (dialled
 * sockets get it here, the listening ones in listener_bind, whose accepted
 * sockets inherit it). */
void conn_tcp_liveness(int fd);
/* Wrap an accepted socket (already non-blocking). */
struct conn *conn_tcp_accept(struct loop *l, int fd, const struct conn_cbs *cbs, void *owner);
/* Start a non-blocking connect; on_connected or on_close follows. */
struct conn *conn_tcp_dial(struct loop *l, const struct sockaddr *sa, socklen_t salen,
                           const struct conn_cbs *cbs, void *owner, int *err);

/* Put a transport with a handshake on an open connection; bytes flow only
 * once the handshake is done (writes queue meanwhile). */
void conn_start_handshake(struct conn *c, const struct conn_ops *ops, void *transport);

/* Put a layer over the transport (after conn_start_handshake, if any): the
 * connection is in CONN_HANDSHAKE until the layer's handshake is done. */
void conn_set_layer(struct conn *c, const struct conn_layer *layer, void *state);
/* Put a layer whose handshake the owner did over an open connection: it
 * stays CONN_OPEN, so what it writes and a close after flush go at once. */
void conn_set_layer_open(struct conn *c, const struct conn_layer *layer, void *state);
/* For a layer: the transport's read and writev under it. */
static inline ssize_t conn_raw_read(struct conn *c, void *buf, size_t len) { return c->ops->read(c, buf, len); }
static inline ssize_t conn_raw_writev(struct conn *c, const struct iovec *iov, int n)
{
    return c->ops->writev(c, iov, n);
}
/* End the connection from below (a layer's timeout): the owner gets
 * on_close(err) from a deferred call, as for a transport failure. */
void conn_fail(struct conn *c, int err);

/* A transport's handshake waits for an answer from elsewhere (a revocation
 * check): stop polling the socket until conn_handshake_wake, which runs the
 * handshake again from a deferred call. */
void conn_handshake_wait(struct conn *c);
void conn_handshake_wake(struct conn *c);

/* Queue bytes for the peer; writes at once when nothing is queued.  Returns
 * 0, or -1 when the connection is closed or memory ran out. */
int conn_write(struct conn *c, const void *p, size_t n);
/* Between conn_cork and conn_uncork, conn_write only queues; conn_uncork
 * then writes it all in one call (packets an owner made one by one, e.g.
 * re-encoded ones, go out together as a run of input does). */
static inline void conn_cork(struct conn *c)
{
    if (c->state == CONN_OPEN && !c->out.len) /* else conn_write queues anyway, for the loop to write */
        c->corked = true;
}
void conn_uncork(struct conn *c);
static inline size_t conn_pending(const struct conn *c) { return c->out.len; }
static inline bool conn_over_high_water(const struct conn *c) { return c->out.len >= c->high_water; }

void conn_pause_read(struct conn *c);
/* Resume reading; bytes already buffered are delivered from a deferred call,
 * never from inside the caller. */
void conn_resume_read(struct conn *c);
/* Read what is there now instead of waiting for the loop to report it (a
 * socket accepted with TCP_DEFER_ACCEPT has its first bytes waiting). */
void conn_read_now(struct conn *c);

/* Close now, dropping unsent output. The owner gets no on_close. */
void conn_close(struct conn *c);
/* Stop reading, send what is queued, then close (bounded by the caller's
 * timer; conn_close ends it early).  The owner gets on_close at the end. */
void conn_close_after_flush(struct conn *c);

/* A connection over a transport that is not a descriptor of ours (a test's
 * virtual connection): open at once; the transport feeds input with
 * conn_deliver. */
struct conn *conn_virtual(struct loop *l, const struct conn_ops *ops, void *transport,
                          const struct conn_cbs *cbs, void *owner);

/* For transports that are not read from a descriptor: feed bytes as if
 * they had been read. */
void conn_deliver(struct conn *c, const uint8_t *data, size_t len);

/* "1.2.3.4:5" or "[::1]:5" into buf. */
void sockaddr_format(const struct sockaddr *sa, char *buf, size_t len);

#endif
