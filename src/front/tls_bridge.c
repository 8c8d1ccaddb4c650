/*
 * wss:// listeners: mgate's own TLS (one policy for every front end:
 * client certificates, OCSP/CRL checks that pause the handshake) in front
 * of libwebsockets, which gets the plaintext over a socketpair.  The
 * bridge copies bytes both ways with the usual back-pressure: above the
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
    unsigned open;
};

static struct conn *other(struct bridge *b, struct conn *c) { return b->side[c == b->side[0]]; }

static size_t on_data(struct conn *c, const uint8_t *data, size_t len)
{
    struct bridge *b = c->owner;
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
    if (--b->open == 0)
        free(b);
}

static const struct conn_cbs bridge_cbs = {on_data, on_drain, NULL, on_close};

void ws_accept_tls(struct loop *l, int fd, const struct sockaddr *peer, socklen_t plen,
                   const struct session_params *p, struct session_list *list)
{
    int sv[2] = {-1, -1};
    struct bridge *b = calloc(1, sizeof(*b));
    if (!b || list->draining || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        goto fail;
    if (!(b->side[0] = conn_tcp_accept(l, fd, &bridge_cbs, b)))
        goto fail;
    fd = -1;
    if (tls_accept(b->side[0], p->tls) < 0 || !(b->side[1] = conn_tcp_accept(l, sv[0], &bridge_cbs, b))) {
        conn_close(b->side[0]); /* no on_close for this one: we free b here */
        goto fail;
    }
    sv[0] = -1;
    b->open = 2;
    b->side[0]->high_water = b->side[1]->high_water = p->output_high_water;
    ws_accept_peer(l, sv[1], peer, plen, p, list);
    return;
fail:
    if (fd >= 0)
        close(fd);
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    free(b);
}
