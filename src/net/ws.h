/*
 * A WebSocket (RFC 6455) as a layer of struct conn, over its transport,
 * plain TCP or TLS: the owner sees the byte stream that binary messages
 * carry, as it would over TCP (bytes split across messages, several
 * packets in one, all fine), with the same buffers and back-pressure; or,
 * in message mode (ws_set_messages, the HTTP listener's relay), whole
 * messages with their opcode.
 *
 * The layer does the upgrade (a server reads and checks the request and
 * answers 101; a client sends its request with its own key and checks the
 * 101), frames what the owner writes (one binary frame per write; masked
 * from a client), unframes what it reads (unmasking, continuation frames,
 * a client's frames must be masked and a server's must not: 1002
 * otherwise), answers pings, pings a quiet peer when asked to and gives
 * up on it when no pong comes, and ends with a close frame whose code says
 * why (conn.end, or the peer's own code echoed).
 */
#ifndef MGATE_NET_WS_H
#define MGATE_NET_WS_H

#include <stdint.h>

#include "net/conn.h"
#include "net/ws_upgrade.h"

/* What the owner of a server-side WebSocket decides about an upgrade. */
struct ws_verdict {
    unsigned status;   /* 0: upgrade; else the HTTP status of the refusal */
    const char *why;   /* the refusal's reason, for the answer and the log */
    const char *proto; /* the subprotocol to name in the 101 ("" or NULL: none) */
    char *answer;      /* a refusal's whole HTTP answer goes here ... */
    size_t answer_room, answer_len; /* ... within answer_room bytes */
};

struct ws_server {
    /* Called once per request: h is NULL when the request could not be
     * read (v->status and v->why say why: too big, malformed); v->status is
     * set too when it is no upgrade RFC 6455 allows.  The owner decides
     * (when status is 0), and writes, counts and logs a refusal. */
    void (*check)(struct conn *c, const struct ws_head *h, struct ws_verdict *v);
};

struct ws_client {
    /* The broker refused the upgrade (why): for the owner's log. */
    void (*failed)(struct conn *c, const char *why);
    /* Optional: the peer's 101 (its whole head, len bytes, CRLF CRLF
     * included) passed every check, for an owner that passes its headers
     * on (the HTTP listener's relay).  Bytes behind it come after.  It must
 * not close c (it may write to it: that waits for the upgrade's end). */
    int (*upgraded)(struct conn *c, const char *head, size_t len); /* -1 (errno): fail the upgrade */
};

/* Keep-alive: ping when interval_ms passed without a pong (0: never), give
 * up timeout_ms after a ping. */
struct ws_pings {
    uint32_t interval_ms, timeout_ms;
};

/* Put a WebSocket over c (a freshly accepted or connected conn, its TLS
 * handshake started if any); srv and cli must outlive c.  A client asks
 * for path (with Host: host:port) and subprotocol proto.  -1: no memory
 * (c untouched). */
int ws_server_start(struct conn *c, const struct ws_server *srv, struct ws_pings pings);
int ws_client_start(struct conn *c, const struct ws_client *cli, const char *host, uint16_t port, const char *path,
                    const char *proto, struct ws_pings pings);

/* A client upgrade with the owner's request: head (len bytes) is its
 * request line and header lines, each ending in CRLF, without
 * Sec-WebSocket-Key (ours is added) and the blank line.  Either way the
 * 101 may name only a subprotocol the request offered (RFC 6455 4.1), and
 * no extension.  -1: no memory. */
int ws_client_start_head(struct conn *c, const struct ws_client *cli, const char *head, size_t len);
/* The server side over an open connection whose upgrade request the owner
 * read and judged itself (the HTTP listener): answer (len bytes, the whole
 * 101) is written at once (what the socket does not take waits in the
 * output) and the connection stays open; ws_set_messages must follow
 * before anything else is written.  -1: no memory, or the connection is
 * not open or failed (errno ECONNRESET). */
int ws_server_open(struct conn *c, const char *answer, size_t len, struct ws_pings pings);

/*
 * Message mode (the HTTP listener's relay), set right after a start: the
 * owner gets whole messages instead of a byte stream (on_data is not
 * called) and sends whole messages.  A message over max_message bytes ends
 * the connection with 1009.  Bytes the connection read before and the
 * owner left (frames behind an upgrade head it read) are unframed first.
 */
struct ws_messages {
    /* A whole message (WSF_TEXT or WSF_BINARY), n bytes at p, valid during
     * the call only.  The owner may conn_pause_read(c) (then no message
     * comes until ws_resume_read) and write anywhere, but not close c. */
    void (*on_message)(struct conn *c, int op, const uint8_t *p, size_t n);
    /* Optional: the peer's close frame (its payload: code and reason).
     * The layer answers it with the same payload (unless ours went first)
     * and ends the connection (on_close follows); the owner must not close c. */
    void (*on_close)(struct conn *c, const uint8_t *payload, size_t n);
    /* Optional, for the owner's log: the peer broke the protocol (1002) or
     * a limit (1009), or memory ran out (1011); our close says code, and
     * on_close(EBADMSG) follows.  The owner must not close c. */
    void (*on_broken)(struct conn *c, int code);
};
int ws_set_messages(struct conn *c, const struct ws_messages *ops, uint64_t max_message);
/* One message as one frame (op WSF_TEXT or WSF_BINARY); frames sent in one
 * loop turn leave in one write at its end.  0, or -1 (closed, closing, no
 * memory: the connection may be closed on return). */
int ws_send(struct conn *c, int op, const uint8_t *p, size_t n);
/* Our close frame (a payload as a close frame carries it, or a code and
 * reason), behind what is queued; the connection closes once it is
 * written, and on_close follows.  Once only. */
int ws_close_with(struct conn *c, const uint8_t *payload, size_t n);
int ws_close_as(struct conn *c, int code, const char *reason);
/* Resume reading after conn_pause_read: what was read behind the message
 * the owner paused at comes first (from a deferred call). */
void ws_resume_read(struct conn *c);
/* The loop time of the last bytes read (any frame: a ping too). */
uint64_t ws_last_read(const struct conn *c);

/* The close code (RFC 6455 7.4.1, IANA: 1014 bad gateway) for conn.end. */
uint16_t ws_close_code(uint8_t end);

/* Whether c carries a WebSocket (its upgrade done or not). */
bool ws_is_ws(const struct conn *c);

#endif
