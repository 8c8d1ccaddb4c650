/*
 * wss:// listeners: mgate's own TLS (one policy for every front end:
 * client certificates, OCSP/CRL checks that pause the handshake) in front
 * of libwebsockets, which gets the plaintext over a socketpair.  The pair
 * is made when the first bytes arrive over TLS (the handshake is done by
 * then, so the client's certificate is known and goes with the session).
 * The bridge copies bytes both ways with the usual back-pressure: above the
 * high-water mark of one side it stops reading the other.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "front/ws.h"
#include "net/tls.h"

struct bridge {
    struct conn *side[2]; /* 0: the client's TLS connection, 1: our end of the socketpair */
    struct ws_origin origin;
    const struct session_params *p;
    struct session_list *list;
    unsigned open;
    bool counted; /* holds a place in MAX_CONNECTIONS until lws's socket takes it */
};

static void uncount(struct bridge *b)
{
    if (b->counted)
        __atomic_fetch_sub(b->p->open_sessions, 1, __ATOMIC_RELAXED);
    b->counted = false;
}

static struct conn *other(struct bridge *b, struct conn *c) { return b->side[c == b->side[0]]; }

static const struct conn_cbs bridge_cbs;

/* The TLS side spoke first: make the socketpair and give lws its end. */
static bool open_pair(struct bridge *b, struct loop *l)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return false;
    if (!(b->side[1] = conn_tcp_accept(l, sv[0], &bridge_cbs, b))) {
        close(sv[0]);
        close(sv[1]);
        return false;
    }
    b->open = 2;
    b->side[1]->high_water = b->p->output_high_water;
    b->origin.has_cert = tls_peer_info(b->side[0], &b->origin.cert);
    uncount(b); /* the adopted socket counts itself */
    ws_accept_peer(l, sv[1], &b->origin, b->p, b->list);
    return true;
}

static size_t on_data(struct conn *c, const uint8_t *data, size_t len)
{
    struct bridge *b = c->owner;
    if (c == b->side[0] && b->open == 1 && !open_pair(b, c->loop)) {
        conn_close_after_flush(c);
        return len;
    }
    struct conn *to = other(b, c);
    if (!to || conn_write(to, data, len) < 0)
        return len; /* the other side is gone: its close ends us too */
    if (conn_over_high_water(to))
        conn_pause_read(c);
    return len;
}

static void on_drain(struct conn *c)
{
    struct bridge *b = c->owner;
    struct conn *from = other(b, c);
    if (from)
        conn_resume_read(from);
}

static void on_close(struct conn *c, int err)
{
    (void)err;
    struct bridge *b = c->owner;
    int i = c == b->side[1];
    b->side[i] = NULL;
    if (b->side[!i])
        conn_close_after_flush(b->side[!i]);
    if (--b->open == 0) {
        uncount(b);
        free(b);
    }
}

static const struct conn_cbs bridge_cbs = {on_data, on_drain, NULL, on_close};

void ws_accept_tls(struct loop *l, int fd, const struct sockaddr *peer, socklen_t plen,
                   const struct session_params *p, struct session_list *list)
{
    struct bridge *b = list->draining ? NULL : calloc(1, sizeof(*b));
    if (!b || !(b->side[0] = conn_tcp_accept(l, fd, &bridge_cbs, b))) {
        close(fd);
        free(b);
        return;
    }
    memcpy(&b->origin.peer, peer, plen < sizeof(b->origin.peer) ? plen : sizeof(b->origin.peer));
    b->p = p;
    b->list = list;
    b->open = 1;
    b->side[0]->high_water = p->output_high_water;
    if (p->open_sessions) { /* the TLS handshake counts in MAX_CONNECTIONS too */
        __atomic_fetch_add(p->open_sessions, 1, __ATOMIC_RELAXED);
        b->counted = true;
    }
    if (tls_accept(b->side[0], p->tls) < 0) {
        conn_close(b->side[0]); /* no on_close for this one: we free b here */
        uncount(b);
        free(b);
    }
}
