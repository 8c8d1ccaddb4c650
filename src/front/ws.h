/*
 * MQTT over WebSocket (ws://): libwebsockets on the worker's loop (through
 * front/uvloop.c) adopts the sockets our listener accepted, speaks HTTP and
 * WebSocket, and each established WebSocket becomes a connection
 * (conn_virtual) that the session layer treats exactly like a TCP one:
 * MQTT bytes in binary messages, in any split, both ways.
 */
#ifndef MGATE_WS_H
#define MGATE_WS_H

#include <sys/socket.h>

#include "core/loop.h"
#include "net/tls.h"
#include "session/session.h"

/* Take an accepted socket of a WebSocket listener.  The socket is closed on
 * any failure. */
void ws_accept(struct loop *l, int fd, const struct session_params *p, struct session_list *list);
/* Who is really at the other end of a bridged socket. */
struct ws_origin {
    struct sockaddr_storage peer;
    bool has_cert;
    struct tls_peer cert;
};
/* The same for a socket whose peer is not the client (the TLS bridge's
 * socketpair): the session gets the client's address and certificate. */
void ws_accept_peer(struct loop *l, int fd, const struct ws_origin *origin, const struct session_params *p,
                    struct session_list *list);
/* wss:// listeners: mgate's TLS, then libwebsockets over a socketpair. */
void ws_accept_tls(struct loop *l, int fd, const struct sockaddr *peer, socklen_t plen,
                   const struct session_params *p, struct session_list *list);

/* Dial the broker's WebSocket listener (session_params.dial): a connection
 * in CONN_CONNECTING until the upgrade is done. */
struct conn *ws_dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner);

/* Close every WebSocket and free libwebsockets' state (after loop_run). */
void ws_loop_free(struct loop *l);

#endif
