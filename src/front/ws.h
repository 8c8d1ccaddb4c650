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

#include "config/config.h"
#include "core/loop.h"
#include "session/session.h"

/* The listeners' front end is front_ws (front/front.h). */

/* TARGET_PROTOCOL ws, wss behind any MQTT front end: set p->broker_layer to
 * the upgrade to TARGET_PATH over the broker connection (TLS already
 * started for wss), with its settings in p->broker_settings; ws_broker_free
 * frees them (a p without them is fine). */
int ws_broker_prepare(const struct listener_config *lc, struct session_params *p, char *err, size_t errlen);
void ws_broker_free(struct session_params *p);

#endif
