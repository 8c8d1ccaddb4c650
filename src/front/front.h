/*
 * Front ends: what a listener kind does with the sockets it accepts.  Each
 * front end is one struct front_ops (designated initialisers, in its own
 * file) and one entry in front.c's table, which is the only place that maps
 * a listener kind to its front end: app/run.c prepares and frees through
 * it, app/worker.c accepts through it.  A front end keeps its own settings
 * behind session_params.front_settings; session_params holds only what
 * every session needs (and the broker side: target, TLS, broker_layer).
 *
 * No front end has a drain of its own: each session is drained through the
 * worker's session list (an MQTT pair by the session layer, any other
 * through its struct session_front, session/session.h).
 */
#ifndef MGATE_FRONT_H
#define MGATE_FRONT_H

#include <stddef.h>
#include <sys/socket.h>

#include "config/config.h"
#include "core/loop.h"
#include "session/session.h"

struct front_ops {
    const char *name; /* for messages: "MQTT", "MQTT over WebSocket", "HTTP" */
    /* At start, on the control thread: check what config_load cannot (the
     * TARGET_PROTOCOL this front end can speak, its own keys) and make the
     * front end's settings (p->front_settings, and p->broker_layer with its
     * p->broker_settings for a WebSocket broker).  -1 with a message naming
     * the variable; free is called for p either way. */
    int (*prepare)(const struct listener_config *lc, struct session_params *p, char *err, size_t errlen);
    /* On a worker: take an accepted socket (peer: the client, from the
     * PROXY header if there was one); close it on any failure. */
    void (*accept)(struct loop *l, int fd, const struct sockaddr *peer, const struct session_params *p,
                   struct session_list *list);
    /* Datagram front ends (CoAP) instead of accept: the listener's socket is
     * UDP (listener_bind_udp) and the front end reads it itself.  serve
     * takes it on a worker and returns the front end's state for it (NULL:
     * failed, socket closed); admit(admit_ctx, peer) is the worker's
     * MAX_CONNECTIONS and CONNECTION_RATE_LIMIT check for a new client.
     * stop, at the drain, takes no new clients; unserve, once the worker's
     * loop is freed (every session gone), closes the socket and frees. */
    bool datagram;
    void *(*serve)(struct loop *l, int fd, const struct session_params *p, struct session_list *list,
                   bool (*admit)(void *admit_ctx, const struct sockaddr *peer), void *admit_ctx);
    void (*stop)(void *server);
    void (*unserve)(void *server);
    /* At exit, after every worker is gone: free what prepare made (also
     * after a prepare that failed half way, or never ran: fields NULL). */
    void (*free)(struct session_params *p);
};

extern const struct front_ops front_mqtt; /* front/mqtt.c: MQTT over TCP or TLS */
extern const struct front_ops front_ws;   /* front/ws.c: MQTT over WebSocket (ws://, wss://) */
extern const struct front_ops front_http; /* front/http.c: HTTP requests and their WebSocket relay */
extern const struct front_ops front_coap; /* front/coap.c: CoAP over UDP */
extern const struct front_ops front_coap_dtls; /* front/coap_dtls.c: CoAP over DTLS */

/* The front end of a listener kind; NULL: not a listener kind at all. */
const struct front_ops *front_of(enum listener_id id);

/* What every front end does first with an accepted socket: a conn (no
 * callbacks yet) with the listener's TLS handshake started on it when
 * p->tls; NULL (the socket closed) when the worker is draining or out of
 * memory. */
struct conn *front_conn_accept(struct loop *l, int fd, const struct session_params *p, struct session_list *list);
/* A connection accepted and then dropped because what it needs could not
 * be allocated: one warning within the listener's log budget. */
void front_accept_failed(struct loop *l, const struct session_params *p);

/* For the front ends that carry MQTT (front_mqtt, front_ws): TARGET_PROTOCOL
 * mqtt, mqtts, ws or wss, and for ws and wss the broker's WebSocket layer
 * (front/ws.c).  mqtt_target_free undoes it. */
int mqtt_target_prepare(const struct listener_config *lc, struct session_params *p, char *err, size_t errlen);
void mqtt_target_free(struct session_params *p);

#endif
