/*
 * HTTP/1.1 requests from clients, parsed with llhttp: no I/O, no handler,
 * so it can be tested alone.  Bytes go in as they arrive, in any split;
 * what comes out is one request at a time: its head (method, target,
 * headers, framing), then, at the end of the message, its whole body.
 *
 * The parser stops after each message and waits for http_parser_next, so
 * pipelined requests behind it stay unread (in the connection's buffer or
 * the kernel) until the answer to this one is out, and are answered in
 * order.  Everything the client may send is bounded: the head by
 * max_header (431, or 414 when the target alone is too long), the body by
 * max_body (413, at the head when Content-Length says so).  Requests whose
 * framing is ambiguous are refused with 400 before anything is forwarded:
 * Content-Length with Transfer-Encoding, two different Content-Lengths, a
 * Transfer-Encoding other than chunked (last), Transfer-Encoding in
 * HTTP/1.0, a missing or repeated Host in HTTP/1.1, obsolete line folding,
 * bare CR or LF, spaces before a colon.
 *
 * llhttp.h is included only by http_parse.c: its names (HTTP_STATUS_*,
 * ...) stay out of the rest of mgate.
 */
#ifndef MGATE_HTTP_PARSE_H
#define MGATE_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_hdr {
    const char *name, *value; /* not NUL-terminated */
    uint32_t name_len, value_len;
};

struct http_head {
    const char *method, *target; /* NUL-terminated; target as sent ("/a/b?c=d") */
    uint32_t target_len;
    uint8_t major, minor;        /* 1.1, 1.0 */
    const struct http_hdr *hdrs;
    uint32_t nhdrs;
    bool has_length;             /* Content-Length given */
    uint64_t content_length;
    bool chunked;                /* Transfer-Encoding: chunked */
    bool expect_continue;        /* Expect: 100-continue */
    bool keep_alive;             /* what the client asked for (version and Connection) */
    bool upgrade;                /* Connection: upgrade with an Upgrade header, no body */
    bool is_head;                /* method HEAD: an answer without a body */
    uint32_t head_bytes;         /* size of the request line and headers */
};

struct http_limits {
    uint32_t max_header; /* request line and headers together, bytes */
    uint32_t max_body;   /* bytes, after de-chunking */
};

/* What on_head tells the parser to do with the body. */
enum http_body_use {
    HTTP_BODY_KEEP = 0,    /* collect it */
    HTTP_BODY_DISCARD = 1, /* read it (within max_body) but keep nothing: the
                              request is refused, the connection stays usable */
};

enum http_event {
    HTTP_EV_MORE,    /* every byte was taken; send more */
    HTTP_EV_MESSAGE, /* a whole request is in: see http_parser_head/_body */
    HTTP_EV_ERROR,   /* answer http_parser_status() and close */
};

struct http_parser;

/* on_head runs as soon as a request's head is complete (before its body):
 * return an enum http_body_use, or an HTTP status >= 400 to stop here (the
 * parser reports HTTP_EV_ERROR with that status).  It may keep the head
 * pointer until http_parser_next. */
typedef int (*http_head_cb)(void *ctx, const struct http_head *h);

struct http_parser *http_parser_new(const struct http_limits *lim, http_head_cb on_head, void *ctx);
void http_parser_free(struct http_parser *hp);

/* Feed bytes.  Returns how many were used: all of them with HTTP_EV_MORE,
 * up to the end of the message with HTTP_EV_MESSAGE (the rest belongs to
 * the next request), up to the fault with HTTP_EV_ERROR.  After MESSAGE or
 * ERROR, feeding again returns 0 and the same event until
 * http_parser_next (after MESSAGE; an ERROR is final). */
size_t http_parser_feed(struct http_parser *hp, const uint8_t *data, size_t len, enum http_event *ev);
/* The peer closed its side: true when that cut a request short. */
bool http_parser_eof_midway(const struct http_parser *hp);

/* The request waiting since HTTP_EV_MESSAGE (or whose head came). */
const struct http_head *http_parser_head(const struct http_parser *hp);
/* Its body (NULL, 0 when it has none or it was discarded).  take: the caller
 * owns the memory (free()) and the parser forgets it. */
uint8_t *http_parser_body(struct http_parser *hp, size_t *len, bool take);
/* The status to answer after HTTP_EV_ERROR, and why (for the log and the
 * JSON error body). */
int http_parser_status(const struct http_parser *hp, const char **why);
/* Bytes of a request that is not complete yet have arrived (a slow client
 * gets 408 rather than a silent close). */
bool http_parser_busy(const struct http_parser *hp);
/* The request's body is no longer wanted (refused while it was arriving):
 * what came is freed, the rest is read and dropped. */
void http_parser_discard(struct http_parser *hp);
/* Done with this message: forget it (memory freed) and go on with the next. */
void http_parser_next(struct http_parser *hp);

/* A header's value by name (case-insensitive), the first if repeated. */
const struct http_hdr *http_head_find(const struct http_head *h, const char *name);
/* How many times the header is there. */
uint32_t http_head_count(const struct http_head *h, const char *name);
/* Whether a comma-separated header value lists token (case-insensitive):
 * "keep-alive, Upgrade" has "upgrade". */
bool http_value_has_token(const char *value, uint32_t len, const char *token);

#endif
