/*
 * A session pairs one client connection with one broker connection and
 * moves MQTT packets between them, showing each to the handler.  This is the
 * interface the front ends (MQTT over TCP or TLS, over WebSocket, HTTP) and
 * the worker use.
 */
#ifndef MGATE_SESSION_H
#define MGATE_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/list.h"
#include "core/log.h"
#include "core/loop.h"
#include "mgate.h"
#include "net/conn.h"
#include "net/tls.h"
#include "session/verdict.h"

#define SESSION_MAX_HANDLERS 8 /* in one MGATE_HANDLER chain */

/* What a session needs from its listener; owned by the worker, immutable
 * while sessions use it. */
struct admission;
struct session_params {
    const char *listener;
    struct sockaddr_storage target;
    socklen_t target_len;
    uint32_t max_packet_size;
    uint32_t connect_timeout_ms;
    uint32_t output_high_water;
    bool refusal_close; /* close instead of answering with a reason code */
    /* CLIENT_ID_POLICY (config/config.h), owned by the configuration;
     * NULL: any client id (today's behaviour) */
    const struct client_id_policy *client_id_policy;
    /* MOUNT_POINT, a checked template (session/mount.h); NULL: none */
    const char *mount_point;
    /* MGATE_HANDLER: the chain, asked in order (see mgate.h) */
    const struct mgate_handler *const *handlers;
    unsigned handler_count;
    const struct mgate_interceptor *interceptor;
    struct tls_ctx *tls;          /* NULL: plain TCP */
    bool cn_as_username;          /* the client certificate's CN replaces the username */
    struct tls_ctx *upstream_tls; /* NULL: plain TCP to the broker */
    const char *target_server_name;
    uint8_t listener_id;        /* enum listener_id, for per-listener counters */
    uint32_t publish_rate;      /* PUBLISH_RATE_LIMIT, messages/s per client; 0: none */
    uint32_t publish_bandwidth; /* PUBLISH_BANDWIDTH_LIMIT, bytes/s per client; 0: none */
    uint32_t *open_sessions;    /* the listener's sessions on every worker (atomic), for MAX_CONNECTIONS */
    uint32_t max_connections;   /* MAX_CONNECTIONS; 0: none */
    struct admission *admission; /* CONNECTION_RATE_LIMIT (app/admission.h); NULL: none */
    bool proxy_protocol;        /* clients arrive with a PROXY header (read before we get them) */
    bool target_proxy_protocol; /* send the broker a PROXY v2 header with the client's address */
    /* How to reach the broker other than TCP to target: a test's virtual
     * connection; NULL: TCP (then TLS, broker_layer). */
    struct conn *(*dial)(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs,
                         void *owner);
    /* A layer over the broker connection once TCP (and the PROXY header,
     * and TLS) are on their way: a WebSocket broker's upgrade (TARGET_PROTOCOL
     * ws, wss, behind any MQTT front end); NULL: none.  broker_settings is
     * the layer's own (front/ws.c). */
    int (*broker_layer)(struct conn *c, const struct session_params *p);
    const void *broker_settings;
    /* The listener's front end's own settings, made by its prepare and read
     * only by it (front/front.h); NULL: it has none (MQTT). */
    const void *front_settings;
    /* The listener's log budget on this worker (owned and written by its
     * loop, like the sessions); NULL: only each session's own. */
    struct log_limit *log_budget;
    struct log_limit *close_log_budget; /* "session closed" of clients that never got in */
};

/* Every live session of a worker, for shutdown and counting. */
struct session_list {
    struct list_node sessions; /* newest first; zeroed: empty */
    uint32_t count;
    uint64_t next_id;
    bool draining;
    void (*on_empty)(struct session_list *list); /* during a drain */
    struct held *spare; /* one request holder kept for reuse: no malloc per packet */
};

struct held;
struct mgate_session *session_start(struct loop *l, struct conn *client, const struct sockaddr *peer,
                                    const struct session_params *p, struct session_list *list);

/* A front end's credentials from outside MQTT (a WebSocket upgrade's
 * Authorization header or query, front/http_util.c's http_credentials):
 * the handler sees them as the username and password of a CONNECT that
 * carries none (each filled in only where the CONNECT has none).  user
 * NULL: a token alone (the password); no user and an empty token: none. */
void session_set_credentials(struct mgate_session *s, const char *user, size_t user_len, const char *pass,
                             size_t pass_len);
/* Whether the session's username is its certificate's CN
 * (USE_CN_AS_USERNAME): an identity the TLS handshake proved. */
bool session_username_from_cert(const struct mgate_session *s);
/* The front end refused the client before any MQTT (a WebSocket upgrade)
 * and logged why itself: the session ends when the client's connection
 * does, without a line of its own (which would take a second place in the
 * listener's log budget for one refusal). */
void session_refused_quietly(struct mgate_session *s);
/* The listener's settings the session was started with. */
const struct session_params *session_params_of(const struct mgate_session *s);
/* The loop the session runs on (a handler that answers from another
 * thread wakes it). */
struct loop *session_loop(const struct mgate_session *s);

/* The client's verified certificate when TLS ended in front of the
 * session's own connection. */
void session_set_cert(struct mgate_session *s, const struct tls_peer *cert);

/*
 * Sessions of front ends that are not MQTT pairs (an HTTP connection): the
 * front end asks the handler chain itself, through the verdict engine
 * (verdict_ask with a struct ask of its own, session/verdict.h, which also
 * takes mgate_resume), and the session layer keeps it listed (counted,
 * drained, closed at the end of the grace period).
 */
struct session_front {
    /* Shutdown began: finish what is in flight, then session_front_end. */
    void (*drain)(struct mgate_session *s);
    /* Close now (grace period over, teardown): must call session_front_end. */
    void (*close)(struct mgate_session *s);
};
struct mgate_session *session_front_start(struct loop *l, const struct sockaddr *peer, const struct session_params *p,
                                          struct session_list *list, const struct session_front *front, void *ctx);
void *session_front_ctx(const struct mgate_session *s);
/* The front end's request went through auth_connect: the handler's connect
 * hook runs the first time, so that disconnect follows at the end. */
void session_front_connected(struct mgate_session *s);
/* The request was forwarded: every handler's publish (subscribe) hook. */
void session_front_published(struct mgate_session *s, const struct mgate_publish_req *req);
void session_front_subscribed(struct mgate_session *s, const struct mgate_subscribe_req *req);
void session_front_unsubscribed(struct mgate_session *s, const struct mgate_unsubscribe_req *req);
/* CLIENT_ID_POLICY against the session's client id and username (after
 * session_front_credentials); false is logged. */
bool session_client_id_allowed(struct mgate_session *s);
/* The identity is settled (auth_connect allowed username and client_id):
 * the listener's MOUNT_POINT with %u and %c expanded becomes the session's,
 * unless a handler chose one in auth_connect.  0, or the v5 CONNACK reason
 * to refuse the client with (logged; the session's mount point is then
 * unchanged): 0x86 a username, 0x85 a client id the template cannot take
 * (empty, or with + # /), 0x87 a prefix that would start with '$', 0x89
 * out of memory.  A front end asking auth_connect again (the bridges)
 * calls session_mount_begin first, so that only this ask's choice counts. */
uint8_t session_mount_settle(struct mgate_session *s, mgate_bytes username, mgate_bytes client_id);
void session_mount_begin(struct mgate_session *s);
/* Take the credentials an auth_connect left (for the accessors and logs). */
void session_front_credentials(struct mgate_session *s, const struct mgate_connect_req *req);
/* The session is over (disconnect hook, unlisted); it stays allocated while
 * one of its asks is pending (verdict.h). */
void session_front_end(struct mgate_session *s);
/* A request is over: free what mgate_session_alloc gave for it. */
void session_front_reset(struct mgate_session *s);

/*
 * Log lines a client can cause again and again (refusals, bad input): each
 * session may write SESSION_LOG_BURST a second and the listener, on each
 * worker, LISTENER_LOG_BURST; the rest are counted, and the next line let
 * through (or the session's "session closed") says how many were left out.
 * session_log_begin starts such a line with the session's fields, or
 * returns false (filtered by level or over budget); finish it with log_end.
 */
#define SESSION_LOG_BURST 5
#define LISTENER_LOG_BURST 50
bool session_log_begin(struct mgate_session *s, struct logline *l, int level, const char *msg);
/* The same in one call; s NULL: a plain line (no session fields, no budget). */
void session_log(struct mgate_session *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Shutdown: tell 5.0 clients (DISCONNECT 0x8B) and close their pairs now;
 * older clients have no way to be told, they keep going until the grace
 * period ends and session_close_all runs. */
void session_list_drain(struct session_list *list);
void session_list_close_all(struct session_list *list);

#endif
