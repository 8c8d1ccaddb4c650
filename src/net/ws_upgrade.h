/*
 * The HTTP/1.1 head of a WebSocket upgrade (RFC 6455 section 4), both
 * ways: the request a client sends and the 101 a server answers.  Pure
 * functions: no I/O, no allocation; what they return points into the
 * caller's buffer.  (llhttp is the HTTP listener's parser; an upgrade head
 * is small and fixed enough to read here, and net/ must not depend on the
 * front end.)
 */
#ifndef MGATE_NET_WS_UPGRADE_H
#define MGATE_NET_WS_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>

/* Every header line of an upgrade request or answer, together: browsers
 * send about 1 KiB. */
#define WS_MAX_HEAD 4096

struct ws_str {
    const char *p; /* NULL: absent */
    size_t n;
};

struct ws_head {
    struct ws_str method, target; /* a request's */
    unsigned status;              /* an answer's */
    struct ws_str host, upgrade, connection, key, version, protocol, origin, authorization, accept,
        extensions;
    unsigned origins; /* how many Origin lines (several are refused where origins are checked) */
};

/* The length of the head (up to and including the blank line) at the start
 * of p, or 0 when it is not all there yet. */
size_t ws_head_len(const char *p, size_t n);

/* Read a head of len bytes (ws_head_len): a request (response false) or an
 * answer.  -1 when it is not HTTP/1.1 as RFC 6455 needs it. */
int ws_head_parse(const char *p, size_t len, bool response, struct ws_head *h);

/* Whether a comma-separated header value has token t (any case). */
bool ws_has_token(struct ws_str v, const char *t);

/* Whether the request head p (len bytes, ws_head_len) offers subprotocol
 * proto, exactly, in any of its Sec-WebSocket-Protocol lines (RFC 6455
 * 4.1: a client fails an answer that names one it did not offer). */
bool ws_head_offers(const char *p, size_t len, struct ws_str proto);

/* The first entry of protos (NULL-terminated) that the client's
 * Sec-WebSocket-Protocol offers, in the client's order; "" when it offers
 * none (the answer names none); NULL when it offers only others. */
const char *ws_pick_protocol(struct ws_str offer, const char *const *protos);

/* Why a request cannot be upgraded at all, as an HTTP status and a reason
 * (0 when it can): a plain request (404), a method other than GET or an
 * Upgrade other than websocket (400), a key or version RFC 6455 does not
 * allow (400, 426). */
unsigned ws_request_check(const struct ws_head *h, const char **why);

#endif
