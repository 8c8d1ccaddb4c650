/*
 * The WebSocket proxy behind an upgrade on an HTTP listener (the Go
 * mGate's): http.c authorises the upgrade (auth_connect, auth_subscribe on
 * the path) and hands over the client's connection; the relay dials the
 * target, does the upgrade there with a key of its own, and only on the
 * target's 101 answers the client's.  Then every whole message up goes to
 * auth_publish (topic: the path, payload: the message) and every whole
 * message down to auth_subscribe; refused messages are dropped, the rest
 * re-framed (one frame per message, masked towards the target).  Pings are
 * answered on their own leg, closes passed on, and each leg's reading
 * stops while the other's output is over its bound or a verdict is
 * pending, so order is kept and memory stays bounded.  Both legs are
 * net/ws.c WebSockets in message mode; docs/HTTP.md says it all.
 */
#ifndef MGATE_HTTP_WS_H
#define MGATE_HTTP_WS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/loop.h"
#include "mgate.h"
#include "net/conn.h"
#include "session/session.h"

struct http_settings;
struct http_ws;

struct http_ws_start {
    struct loop *loop;
    struct conn *client; /* taken over: its callbacks become the relay's */
    struct mgate_session *s;
    const struct session_params *p;
    const struct http_settings *hs;
    const char *topic; /* the messages' topic; NULL: a bypass path, nothing checked */
    size_t topic_len;
    /* The upgrade request for the target, request line and headers, each
     * line ending in CRLF, without the key and the final empty line. */
    const char *request;
    size_t request_len;
    const char *client_key; /* the client's Sec-WebSocket-Key, checked */
    bool draining;          /* shutdown began: close (1001) as soon as it is open */
    /* Both legs are closed: the caller ends the session. Called once. */
    void (*ended)(void *ctx);
    void *ctx;
};

/* Start the relay (the answer to the client, 101 or an error, follows).
 * NULL when it cannot start (out of memory, no socket): nothing was taken,
 * the caller answers. */
struct http_ws *http_ws_start(const struct http_ws_start *a);
/* Shutdown: close 1001 both ways, then ended. */
void http_ws_drain(struct http_ws *w);
/* Close both legs now, then ended (from inside this call). */
void http_ws_close(struct http_ws *w);

#endif
