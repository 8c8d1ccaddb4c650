/*
 * An MQTT client inside mgate: one connection to the listener's broker
 * (broker_dial: TCP, TLS for mqtts), speaking MQTT 3.1.1 or 5.0 as a client,
 * for front ends that are not MQTT themselves (the HTTP bridge, later CoAP
 * and the tunnel).  It runs on the loop and never blocks; it allocates
 * once at open, and per PUBLISH only the encoded packet when it does not
 * fit a stack buffer (conn_write copies what the socket does not take).
 *
 * Open it with the identity the handlers approved; it dials at once and
 * sends CONNECT.  Requests (publish, subscribe, unsubscribe) may be made
 * before the CONNACK: they go out behind the CONNECT (MQTT 3.1.1 3.1.4,
 * "the Client MAY send further packets before it receives CONNACK"), and
 * are failed if the broker refuses it.  At most max_inflight requests wait
 * for their acknowledgement, and (5.0) no more QoS 1 and 2 PUBLISHes than
 * the broker's Receive Maximum (known from the CONNACK on); beyond that a
 * request is refused at once (MQC_BUSY).  The client answers the broker's PUBLISHes itself (PUBACK,
 * PUBREC / PUBCOMP; a QoS 2 message is handed over once, on its PUBLISH),
 * sends PINGREQ when it sent nothing for keepalive seconds and ends the
 * connection when PINGRESP does not follow within ping_timeout_ms.
 *
 * Back-pressure: mqtt_client_writable says whether the connection's output
 * is below OUTPUT_HIGH_WATER; past the mark the broker is not read (its
 * messages would add acknowledgements nobody takes) and on_drain tells when
 * it fell to half.
 *
 * Callbacks are never called from inside a call of this API (a QoS 0
 * PUBLISH's done comes from a deferred call in the same loop turn).
 * After on_closed the client is freed.
 */
#ifndef MGATE_MQTT_CLIENT_H
#define MGATE_MQTT_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/loop.h"
#include "mgate.h"
#include "mqtt/mqtt.h"
#include "session/session.h"

struct mqtt_client;

/* How the connection ended (on_closed). */
enum mqc_end {
    MQC_END_UNREACHABLE, /* no TCP/TLS connection, or closed before the CONNACK */
    MQC_END_REFUSED,     /* CONNACK with an error code (code: the CONNACK's) */
    MQC_END_TIMEOUT,     /* no CONNACK within connect_timeout_ms */
    MQC_END_PING_TIMEOUT, /* no PINGRESP within ping_timeout_ms */
    MQC_END_LOST,        /* the broker closed the connection after the CONNACK */
    MQC_END_PROTOCOL,    /* the broker broke the protocol (a malformed or unexpected packet) */
};

/* A request's outcome (its done callback). */
enum mqc_status {
    MQC_OK = 0,      /* acknowledged (QoS 0: written to the connection) */
    MQC_REFUSED,     /* the broker answered with a failure code (5.0 PUBACK/PUBREC >= 0x80) */
    MQC_FAILED,      /* the connection ended first: the broker may or may not have it */
    MQC_BUSY,        /* refused at once: max_inflight requests are waiting */
    MQC_INVALID,     /* refused at once: cannot be encoded (a bad topic, too long) or closing */
};

/* done: status, and the broker's code (5.0 reason of a PUBACK/PUBREC,
 * 0 otherwise); for SUBACK, codes holds one code per filter (valid during
 * the call).  Called once per request accepted (return MQC_OK from the
 * call that made it), never for one refused at once. */
typedef void (*mqc_done_fn)(void *arg, enum mqc_status status, uint8_t code, const uint8_t *codes,
                            uint32_t ncodes);

struct mqtt_client_cbs {
    void (*on_ready)(struct mqtt_client *mc, void *ctx);                            /* CONNACK accepted */
    void (*on_closed)(struct mqtt_client *mc, void *ctx, enum mqc_end why, uint8_t code);
    /* A PUBLISH from the broker (views valid during the call only); the
     * client acknowledges it after the call.  NULL: dropped (and acked). */
    void (*on_message)(struct mqtt_client *mc, void *ctx, const struct mqtt_publish *pub);
    void (*on_drain)(struct mqtt_client *mc, void *ctx); /* output fell below half its mark; may be NULL */
};

struct mqtt_client_opts {
    const struct session_params *p; /* the broker: target, upstream TLS, dial; max_packet_size, high water */
    struct mgate_session *s;        /* for log lines (its fields and log budgets); may be NULL */
    /* The identity, as the handlers approved it (copied at open). */
    mgate_bytes client_id, username, password;
    bool has_username, has_password;
    bool clean_session;
    uint8_t version;            /* MQTT_V311 (0: that) or MQTT_V5 */
    uint16_t keepalive;         /* seconds; 0: no PINGREQ */
    uint32_t connect_timeout_ms; /* dial, TLS and CONNACK; 0: p->connect_timeout_ms */
    uint32_t ping_timeout_ms;   /* 0: keepalive */
    uint16_t max_inflight;      /* requests waiting for their ack; 0: 16 */
    const struct mqtt_client_cbs *cbs;
    void *ctx;
};

/* Dial and send CONNECT.  NULL with errno (ENOMEM, EINVAL for an identity
 * that cannot be encoded, a dial failure's errno): no callback follows. */
struct mqtt_client *mqtt_client_open(struct loop *l, const struct mqtt_client_opts *o);

/* PUBLISH (qos 0, 1, 2); done when sent (0) or acknowledged (PUBACK,
 * PUBCOMP).  Returns MQC_OK (done follows, never from inside this call),
 * MQC_BUSY or MQC_INVALID (no done). */
enum mqc_status mqtt_client_publish(struct mqtt_client *mc, mgate_bytes topic, mgate_bytes payload, uint8_t qos,
                                    bool retain, mqc_done_fn done, void *arg);
/* SUBSCRIBE n filters at one qos each (qos[i]); done with the SUBACK's codes. */
enum mqc_status mqtt_client_subscribe(struct mqtt_client *mc, const mgate_bytes *filters, const uint8_t *qos,
                                      uint32_t n, mqc_done_fn done, void *arg);
/* UNSUBSCRIBE; done on the UNSUBACK (5.0: its codes). */
enum mqc_status mqtt_client_unsubscribe(struct mqtt_client *mc, const mgate_bytes *filters, uint32_t n,
                                        mqc_done_fn done, void *arg);

/* Whether the CONNACK accepted us. */
bool mqtt_client_ready(const struct mqtt_client *mc);
/* Whether its output is below OUTPUT_HIGH_WATER (else wait for on_drain). */
bool mqtt_client_writable(const struct mqtt_client *mc);
/* Requests waiting for an acknowledgement. */
uint32_t mqtt_client_inflight(const struct mqtt_client *mc);

/* The owner's back-pressure (a consumer slower than the broker): while
 * held, no on_message comes (the packet being handed over when it is
 * called ends the turn); the broker's packets wait in TCP and at the
 * broker, so its PINGRESP too: a hold longer than ping_timeout_ms ends the
 * connection (MQC_END_PING_TIMEOUT).  Releasing it reads again, what was
 * read already from a deferred call. */
void mqtt_client_hold(struct mqtt_client *mc, bool hold);

/* End it: DISCONNECT after what is queued (when the CONNACK came), then
 * close (bounded by a 2 s linger).  No callback of any kind follows, not
 * even the waiting requests' done: the owner is going away.  mc is freed
 * by the client when the connection is gone. */
void mqtt_client_close(struct mqtt_client *mc);

#endif
