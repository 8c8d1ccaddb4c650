/*
 * The CoAP front end's inside (front/coap.c: the listening socket and its
 * clients by address; front/coap_relay.c: one client's relay to the CoAP
 * server; front/coap_bridge.c: one client's bridge to an MQTT broker).
 * Not for other files.
 *
 * UDP has no connections, so a CoAP client is its source address: the
 * first request from a new address makes a peer (one session, counted and
 * drained like any other), and the peer ends IDLE_TIMEOUT after the last
 * datagram either way.  Each peer that got a request through has its own
 * UDP socket connected to the server, so the server sees each client as a
 * distinct endpoint (its Observe and deduplication state are per endpoint)
 * and its answers come back on a socket that names the client.  In a
 * bridge (TARGET_PROTOCOL mqtt, mqtts) the peer has no such socket but an
 * MQTT session on the broker instead (front/coap_bridge.c, peer->br).
 */
#ifndef MGATE_FRONT_COAP_INT_H
#define MGATE_FRONT_COAP_INT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "coap/coap.h"
#include "core/loop.h"
#include "session/session.h"
#include "session/verdict.h"

/* Per peer: datagrams held behind one waiting for a verdict, per direction
 * (more are dropped: UDP may lose them, and a CON is sent again), and the
 * Observe registrations it may have (more get 5.03). */
#define COAP_HELD_MAX 16
#define COAP_HELD_BYTES (64u << 10)         /* ... and bytes, per direction of a peer */
#define COAP_HELD_SERVER_BYTES (16u << 20)  /* ... and bytes, all peers of a worker's listener */
#define COAP_OBSERVE_MAX 16
/* Requests sent to the server and not answered yet that mgate remembers,
 * to answer them 5.03 when the server turns out unreachable. */
#define COAP_OUTSTANDING 4
/* Without MAX_CONNECTIONS, a worker keeps at most this many peers per
 * listener (a flood of new source addresses must stay bounded). */
#define COAP_DEFAULT_MAX_PEERS 4096
/* A request with more options is refused (4.00): the relay walks them a few times. */
#define COAP_OPTIONS_MAX 256
/* Credentials longer than this are asked about with every request. */
#define COAP_CRED_KEY_MAX 512

/* What prepare makes from the listener's keys (session_params.front_settings). */
struct coap_settings {
    uint32_t max_datagram; /* MAX_PACKET_SIZE, at most a UDP payload (65507) */
    uint32_t idle_ms;      /* IDLE_TIMEOUT */
    uint32_t ack_ms;       /* ACK_TIMEOUT: the bridge's first wait for a CON notification's ACK */
    uint32_t max_peers;    /* per worker: MAX_CONNECTIONS's guard is the worker's admit */
    bool bridge;           /* TARGET_PROTOCOL mqtt or mqtts: coap_bridge.c, not the relay */
};

union coap_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

struct coap_server;
struct coap_peer;

/* A datagram kept for later: behind a pending verdict, or being judged. */
struct coap_held {
    struct coap_held *next;
    uint32_t len;
    uint8_t data[];
};

/* One direction of a peer: the datagram the handler is judging (owned:
 * the handler may keep pointers into it until its verdict) and the ones
 * held behind it, in order. */
struct coap_leg {
    struct ask ask;
    struct coap_held *cur;   /* being judged; NULL: idle */
    struct coap_msg msg;     /* cur decoded */
    struct coap_held *head, **tail;
    uint32_t held, held_bytes;
    struct mgate_filter filter; /* a GET's or a notification's one filter */
    uint8_t stage;           /* enum in coap_relay.c */
    uint8_t dir;             /* enum mgate_direction */
};

struct coap_observe {
    uint8_t tkl;
    uint8_t token[COAP_TOKEN_MAX];
    uint16_t topic_len;
    char *topic; /* as forwarded: what notifications are judged on */
    char *asked; /* as the client asked (before a rewrite): a token names one resource */
};

struct coap_outstanding {
    uint16_t mid;
    uint8_t type, tkl;
    uint8_t token[COAP_TOKEN_MAX];
    bool used;
};

struct coap_peer {
    struct coap_peer *hnext; /* in the server's table */
    struct coap_server *srv;
    struct mgate_session *s;
    union coap_addr addr;
    socklen_t addr_len;
    uint32_t hash;
    struct loop_io up;       /* connected to the server; fd -1 until the first request goes */
    struct loop_timer idle;
    uint64_t last_seen;      /* the last datagram either way (IDLE_TIMEOUT) */
    uint16_t next_mid;       /* mgate's own messages to this client: from a random start, so that an
                              * address spoofer cannot guess them (and RST a notification) */
    uint64_t last_heard;     /* the last from the client: proof that it is there (the bridge's NON notifications) */
    struct coap_leg legs[2]; /* [MGATE_UP] client -> server, [MGATE_DOWN] back */
    struct coap_observe *obs;
    uint8_t nobs;
    bool connected;          /* auth_connect allowed this client's credentials: */
    uint16_t auth_len;       /* ... its credentials (coap_relay.c cred_key), kept to see whether */
    uint8_t *auth;           /* the next request shows the same: then auth_connect is not asked */
    bool ended;              /* gone from the table: freed once no verdict is pending */
    uint8_t auth_refusals;   /* refused credentials in a row: new ones wait until auth_retry_at */
    uint64_t auth_retry_at;
    struct coap_outstanding out[COAP_OUTSTANDING];
    void *dtls;              /* over DTLS: its connection (front/coap_dtls.c); NULL once ended */
    char *username;          /* over DTLS: the PSK identity or the certificate's CN, which auth_connect
                              * sees instead of the query's username; owned */
    struct coap_bridge *br;  /* the bridge's state (coap_bridge.c); NULL in a relay */
};

struct coap_server {
    struct loop_io io;
    struct loop *loop;
    const struct session_params *p;
    const struct coap_settings *cs;
    struct session_list *list;
    bool (*admit)(void *ctx, const struct sockaddr *peer);
    void *admit_ctx;
    struct coap_peer **table;
    uint32_t table_size; /* a power of two */
    uint32_t peers;
    size_t held_bytes;   /* every peer's held datagrams (COAP_HELD_SERVER_BYTES) */
    uint8_t *buf;        /* max_datagram + 1: a bigger datagram is seen as too big */
    uint16_t next_mid;   /* mgate's own NON answers */
    bool stopped;
    bool dtls;           /* front/coap_dtls.c reads the socket; peers' datagrams go through DTLS */
    uint64_t next_refusal_log;
};

/* coap.c */
/* The server's table and buffer, and fd read by on_readable; -1 (fd closed). */
int coap_server_init(struct coap_server *srv, struct loop *l, int fd, const struct session_params *p,
                     struct session_list *list, bool (*admit)(void *, const struct sockaddr *), void *admit_ctx,
                     loop_io_cb on_readable);
/* Once every peer is gone (the loop is freed): close the socket, free the table. */
void coap_server_fini(struct coap_server *srv);
/* List a new peer under its address. */
void coap_server_add(struct coap_server *srv, struct coap_peer *peer);
uint32_t coap_addr_hash(const union coap_addr *a);
bool coap_addr_equal(const union coap_addr *a, const union coap_addr *b);
/* A new client refused (at most one line a second). */
void coap_log_refusal(struct coap_server *srv, const union coap_addr *from, const char *why);
void coap_server_unlink(struct coap_server *srv, struct coap_peer *peer);
/* Send to the client (mgate's own answers and what the server sent). */
void coap_to_client(struct coap_peer *peer, const uint8_t *data, size_t len);
/* Answer msg (a request) with code and no payload. */
void coap_answer_client(struct coap_peer *peer, const struct coap_msg *req, uint8_t code);

/* coap_relay.c */
struct coap_peer *coap_peer_new(struct coap_server *srv, const union coap_addr *addr, socklen_t len,
                                uint32_t hash);
/* A datagram from the peer's client, in the server's buffer. */
void coap_peer_from_client(struct coap_peer *peer, const uint8_t *data, size_t len);
/* Keep a datagram behind the one being judged (bounded: COAP_HELD_MAX). */
void leg_hold(struct coap_peer *peer, struct coap_leg *leg, const uint8_t *d, size_t n);
/* End now: unlisted, the socket closed; freed once no verdict is pending. */
void coap_peer_end(struct coap_peer *peer);
/* A verdict for an ended peer came: free it once none is pending. */
void coap_peer_unpend(struct coap_peer *peer);
/* The datagram being judged is done with: the ones held behind it go. */
void leg_done(struct coap_peer *peer, struct coap_leg *leg);
/* Keep a copy of the datagram to judge in leg->cur, with extra bytes after
 * it, decoded again into leg->msg.  False: out of memory (logged). */
bool leg_take(struct coap_peer *peer, struct coap_leg *leg, const uint8_t *d, size_t n, size_t extra);
/* "$share/..." and "$queue/...": an MQTT handler (acl) reads them as a shared
 * subscription and judges the rest, while a CoAP server serves the path as
 * it is, and the bridge could not match the messages to it: refused. */
bool coap_shared_prefix(const char *topic, size_t len);
/* The code for a refusal: 5.03 when a handler said the server is busy or
 * unavailable, otherwise `otherwise`. */
uint8_t refusal_code(uint8_t reason, uint8_t otherwise);

/* The credentials a request carries in its Uri-Query: `auth=` (the Go
 * mGate's: the password), or EMQX's `username`/`u`, `password`/`p` and
 * `clientid`/`c`. */
struct coap_cred {
    coap_view user, pass, cid;
    bool has_user, has_pass;
};
void cred_of(const struct coap_msg *m, struct coap_cred *c);
/* The credentials as one byte string, to keep and compare: the length, or
 * 0 when they do not fit out[cap] (then they never count as the same). */
size_t cred_key(const struct coap_cred *c, uint8_t *out, size_t cap);
/* Whether the peer got in with these very credentials. */
bool same_cred(const struct coap_peer *peer, const struct coap_cred *c);
/* auth_connect allowed them: the peer is in, with them (peer->auth). */
void accept_cred(struct coap_peer *peer, const struct coap_cred *c);
/* The auth_connect request for these credentials; over DTLS the username
 * is the identity the handshake proved, whatever the query says. */
void coap_connect_req(const struct coap_peer *peer, const struct coap_cred *cred, struct mgate_connect_req *c);
/* Refused credentials: new ones from this client wait (1 s, doubling to
 * 30 s), so that it cannot guess at the rate it sends; coap_auth_wait says
 * whether they must still wait (then answer 4.01 without asking). */
void coap_auth_refused(struct coap_peer *peer);
bool coap_auth_wait(const struct coap_peer *peer);
/* auth_connect allowed c: accept the credentials, give them to the session
 * and check CLIENT_ID_POLICY; false (refused, and counted as such): the
 * client id is not this user's. */
bool coap_auth_accept(struct coap_peer *peer, const struct coap_cred *cred, const struct mgate_connect_req *c);

/* coap_bridge.c (TARGET_PROTOCOL mqtt, mqtts) */
/* A datagram from the client when no verdict is pending (the relay's
 * holding keeps the order). */
void coap_bridge_datagram(struct coap_peer *peer, const uint8_t *d, size_t n);
/* The peer ends: its broker connection is closed, its state freed. */
void coap_bridge_end(struct coap_peer *peer);

/* coap_dtls.c: a DTLS peer's datagram to its client (encrypted), and its
 * connection closed when the peer ends. */
void coap_dtls_to_client(struct coap_peer *peer, const uint8_t *data, size_t len);
void coap_dtls_peer_end(struct coap_peer *peer);

#endif
