/*
 * MQTT over WebSocket listeners (ws://, wss://, wss:// with client
 * certificates) and WebSocket brokers (TARGET_PROTOCOL ws, wss): a plain or
 * TLS connection with net/ws.c's WebSocket layer over it, under a session
 * that treats it exactly like TCP.  This file holds what is MQTT's and the
 * listener's about it: PATH_PREFIX, ALLOWED_ORIGINS, the subprotocols
 * (mqtt, mqttv3.1), the upgrade's Authorization token, and the refusals'
 * answers, counts and log lines.
 */
#ifndef MGATE_WS_H
#define MGATE_WS_H

#include <sys/socket.h>

#include "core/loop.h"
#include "session/session.h"

/* Take an accepted socket of a WebSocket listener (peer: the client, from
 * the PROXY header if there was one).  The socket is closed on any failure. */
void ws_accept(struct loop *l, int fd, const struct sockaddr *peer, const struct session_params *p,
               struct session_list *list);

/* session_params.broker_layer for a WebSocket broker: the upgrade to
 * TARGET_PATH over the broker connection (TLS already started for wss). */
int ws_broker_layer(struct conn *c, const struct session_params *p);

#endif
