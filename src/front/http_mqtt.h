/*
 * The HTTP bridge (an HTTP listener with TARGET_PROTOCOL mqtt or mqtts): a
 * POST under PATH_PREFIX, once the handler chain allowed it (auth_connect,
 * auth_publish, as for every HTTP request), becomes a PUBLISH on the broker
 * through the session layer's MQTT client (session/mqtt_client.h).  Each
 * HTTP connection has at most one broker connection (a "link"), dialled at
 * its first allowed POST with the identity auth_connect left on the session
 * (client id, username, password) and kept for the next POSTs while that
 * identity stays the same; it closes with the HTTP connection.
 * docs/HTTP.md says what the client sends and gets.
 */
#ifndef MGATE_HTTP_MQTT_H
#define MGATE_HTTP_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "front/http_parse.h"
#include "mgate.h"

struct http_mqtt;

/* The request's answer: 200 (sent at QoS 0, PUBACKed at 1, PUBCOMPed at
 * 2), 502 (broker unreachable, CONNECT or PUBLISH refused, connection
 * lost), 504 (no CONNACK in time), with why. */
typedef void (*http_mqtt_done_fn)(void *ctx, int status, const char *why);

/* What the client asked besides topic and payload: ?qos= (0, 1, 2) and
 * ?retain= (true, false, 1, 0), or the headers MQTT-QoS and MQTT-Retain;
 * both given and differing is a 400.  Defaults: QoS 0, no retain.  Returns
 * 0, or 400 with *why. */
int http_mqtt_options(const char *query, size_t query_len, const struct http_head *h, uint8_t *qos, bool *retain,
                      const char **why);

/* The client id for auth_connect: ?clientid= (form-decoded into mem, which
 * has room for query_len bytes), else gen (a per-connection generated one,
 * made on first use: "mgate-http-" and 16 hex digits; room for 28 bytes).
 * Returns 0, or 400 with *why (given twice, or broken). */
int http_mqtt_client_id(const char *query, size_t query_len, char *mem, char *gen, mgate_bytes *out,
                        const char **why);

/* PUBLISH on *link (made, or replaced when the session's identity changed):
 * 0 and done follows from the loop, never from inside; or a status to
 * answer now (400: the topic the handler left is not a topic name; 503: out
 * of memory or the broker cannot be dialled at all). */
int http_mqtt_publish(struct http_mqtt **link, struct mgate_session *s, mgate_bytes topic, mgate_bytes payload,
                      uint8_t qos, bool retain, uint32_t timeout_ms, http_mqtt_done_fn done, void *ctx);
/* Close the link (DISCONNECT when it was up), no done: the HTTP connection
 * ends, or its request was answered otherwise (TARGET_TIMEOUT: a broker
 * that did not answer is not asked again). */
void http_mqtt_close(struct http_mqtt **link);

#endif
