/*
 * mgate: an MQTT proxy.  This header is the whole public API: write a handler,
 * register it, and run mgate with it.
 *
 * A handler sees every client's CONNECT (and its will, through auth_publish),
 * PUBLISH, SUBSCRIBE and UNSUBSCRIBE (and every broker->client PUBLISH,
 * through auth_subscribe) and may allow,
 * deny, or rewrite them.  Every callback runs on the event loop thread that
 * owns the session: never block in one.
 *
 * Verdicts now or later:
 *   - return MGATE_ALLOW or MGATE_DENY to answer at once;
 *   - return MGATE_IGNORE to have no opinion: the next handler decides;
 *   - return MGATE_PENDING to answer later, then call mgate_resume(s, req,
 *     verdict) exactly once with the same request pointer, from the same loop
 *     thread (a timer, an I/O callback..., or even the auth_* call itself
 *     before it returns MGATE_PENDING).  The late verdict may be
 *     MGATE_ALLOW, MGATE_DENY or MGATE_IGNORE.  mgate finds the request by
 *     its address among the session's pending ones: a pointer it does not
 *     know (never pending, or already resumed) is logged and ignored.
 *     Until then the session holds that direction's later packets, in order,
 *     and stops reading from that peer, so memory stays bounded.  The request
 *     structure stays valid (and writable) until mgate_resume; the session
 *     stays allocated too, even if the client went away meanwhile
 *     (mgate_session_closed() tells), so resuming is always safe.
 *
 * The chain: MGATE_HANDLER may name several handlers ("acl,log").  Each
 * auth_* call goes to them in that order until one answers MGATE_ALLOW or
 * MGATE_DENY (now or, after MGATE_PENDING, later); MGATE_IGNORE and a NULL
 * auth_* pass the request on, unchanged or as the handler rewrote it.  When
 * every handler passes, the packet is allowed (so a lone handler that only
 * observes, like `log`, lets everything through).  Filters a handler marks
 * denied in a SUBSCRIBE stay denied whatever a later handler answers.  The
 * hooks that run after forwarding (connect, publish, ..., disconnect) go to
 * every handler of the chain, in order.
 *
 * Rewriting: set the request's mgate_bytes fields to new values.  The bytes
 * must stay valid until the callback returns (or, for a pending verdict,
 * until mgate_resume returns); mgate_session_alloc() gives memory that lives
 * that long.  Only a packet whose fields changed is re-encoded; everything
 * else is forwarded byte for byte.  A re-encoded packet (and an
 * interceptor's replacement) is checked like peer input before it is sent:
 * one a handler made invalid (a wildcard in a PUBLISH topic, a filter that
 * is not one or is over 65535 bytes, bad UTF-8) is not sent: a PUBLISH is
 * refused (v5 PUBACK/PUBREC 0x83; 3.1.1 closed), a SUBSCRIBE filter gets
 * SUBACK 0x8F (3.1.1 0x80), an interceptor's packet is dropped.
 */
#ifndef MGATE_H
#define MGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mgate_session mgate_session;

/* A byte string that is not NUL-terminated. */
typedef struct mgate_bytes {
    const uint8_t *p;
    uint32_t len;
} mgate_bytes;

enum mgate_verdict {
    MGATE_ALLOW = 0,
    MGATE_DENY = 1,
    MGATE_PENDING = 2,
    MGATE_IGNORE = 3, /* pass: the next handler of the chain decides */
};

enum mgate_direction {
    MGATE_UP = 0,   /* client -> broker */
    MGATE_DOWN = 1, /* broker -> client */
};

/* Denial reasons a handler may pick (set `reason` before returning DENY).
 * 0 lets mgate choose: not authorized. */
enum mgate_reason {
    MGATE_REASON_DEFAULT = 0,
    MGATE_REASON_NOT_AUTHORIZED = 0x87,       /* 3.1.1 CONNACK 5 */
    MGATE_REASON_BAD_USER_OR_PASSWORD = 0x86, /* 3.1.1 CONNACK 4 */
    MGATE_REASON_BAD_CLIENT_ID = 0x85,        /* 3.1.1 CONNACK 2 */
    MGATE_REASON_SERVER_BUSY = 0x89,          /* 3.1.1 CONNACK 3 */
    MGATE_REASON_SERVER_UNAVAILABLE = 0x88,   /* 3.1.1 CONNACK 3 */
};

struct mgate_connect_req {
    mgate_bytes client_id;
    mgate_bytes username; /* valid when has_username */
    mgate_bytes password; /* valid when has_password */
    bool has_username, has_password;
    uint8_t version; /* 3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0 */
    bool clean_start;
    uint16_t keepalive;
    uint8_t reason; /* enum mgate_reason, on DENY */
};

/*
 * A PUBLISH, or a CONNECT's will (`will` set).  The will is a message the
 * broker publishes for the client later, when it vanishes without a
 * DISCONNECT: it is judged when the CONNECT is, right after auth_connect
 * allowed it (the session's username and client id are then those
 * auth_connect settled on), by every handler's auth_publish, and a refused
 * will refuses the CONNECT (CONNACK 5 / 0x87, or `reason`).  Its topic,
 * payload, qos and retain may be rewritten like a PUBLISH's; the CONNECT is
 * then re-encoded.  No publish hook follows: the will may never be sent.
 */
struct mgate_publish_req {
    enum mgate_direction dir;
    mgate_bytes topic; /* an alias is already resolved */
    mgate_bytes payload;
    uint8_t qos;
    bool retain;
    uint8_t reason; /* on DENY (v5 PUBACK/PUBREC code; CONNACK code for a will) */
    bool will;      /* a CONNECT's will, not a PUBLISH (dir is MGATE_UP) */
    /* 5.0 wills: the will properties as the client encoded them (the
     * property list without its length; read-only), else empty. */
    mgate_bytes will_properties;
};

struct mgate_filter {
    mgate_bytes filter;
    uint8_t qos;
    bool denied; /* set by auth_subscribe to refuse just this filter */
    uint8_t reason; /* with denied: this filter's SUBACK code (v5), 0: the request's reason */
};

/*
 * SUBSCRIBE (dir MGATE_UP) or, for a broker->client PUBLISH, a one-entry list
 * holding its topic (dir MGATE_DOWN).  Return MGATE_DENY to refuse every
 * filter, or MGATE_ALLOW after marking some filters denied.
 */
struct mgate_subscribe_req {
    enum mgate_direction dir;
    struct mgate_filter *filters;
    uint32_t count;
    uint8_t reason;
};

/* An UNSUBSCRIBE: rewrite_unsubscribe may point topics[i] at new filters. */
struct mgate_unsubscribe_req {
    mgate_bytes *topics;
    uint32_t count;
};

/*
 * MQTT 5 properties of the request a handler is looking at (a CONNECT, its
 * will, a PUBLISH either way, a SUBSCRIBE): mgate_properties(s, req) decodes
 * them on first call (nothing is decoded for a handler that never asks).
 * Fields a packet type does not carry stay zero.  The bytes point into the
 * packet and live as long as the request.
 *
 * A PUBLISH's user properties, content type and response topic may be
 * changed (either direction): with the mgate_user_property_* helpers, or by
 * pointing `user` at a new array (memory from mgate_session_alloc) and
 * setting content_type / response_topic with their has_ flags.  The packet
 * is then re-encoded with the other properties as they came; one that would
 * grow past what its receiver takes (its Maximum Packet Size) is not sent:
 * a client's is refused with 0x83 (Implementation specific error: a PUBACK
 * cannot say 0x95, Packet too large), a broker's is
 * acknowledged to the broker and dropped, as MQTT 5 has a server do.
 * Everything else is read-only.
 */
struct mgate_user_property {
    mgate_bytes name, value;
};

struct mgate_properties {
    struct mgate_user_property *user; /* in the order sent (names may repeat) */
    uint32_t user_count;
    /* PUBLISH and will */
    bool has_payload_format, has_message_expiry, has_content_type, has_response_topic,
        has_correlation_data;
    uint8_t payload_format; /* 0 bytes, 1 UTF-8 */
    uint32_t message_expiry; /* seconds */
    mgate_bytes content_type, response_topic, correlation_data;
    /* PUBLISH from the broker, SUBSCRIBE */
    const uint32_t *subscription_ids;
    uint32_t subscription_id_count;
    /* will */
    bool has_will_delay;
    uint32_t will_delay;
    /* CONNECT (enhanced authentication: the method, and its first data) */
    bool has_session_expiry, has_auth_method, has_auth_data, has_receive_maximum,
        has_maximum_packet_size, has_topic_alias_maximum;
    uint32_t session_expiry, maximum_packet_size;
    uint16_t receive_maximum, topic_alias_maximum;
    mgate_bytes auth_method, auth_data;
};

/* The properties of `req` (what an auth_* callback was given, while it is
 * being judged), or NULL: not MQTT 5, a request that is no MQTT packet
 * (HTTP, CoAP), out of memory, or a packet with more than
 * MGATE_MAX_USER_PROPERTIES user properties (what one packet may make mgate
 * allocate is bounded).  In an MQTT 5 session NULL means the properties
 * cannot be shown: a handler that relies on them (one that stamps or checks
 * a user property) must refuse the request then, or a client could send
 * its own. */
#define MGATE_MAX_USER_PROPERTIES 1024
struct mgate_properties *mgate_properties(mgate_session *s, const void *req);
/* Append a user property (names may repeat); replace every one named
 * `name` by one with this value (appended when there was none); remove
 * every one named `name` (returns how many).  The set/add ones return 0,
 * or -1 when out of memory.  The bytes must live as long as the request
 * (mgate_session_alloc).  `p` is what mgate_properties returned; set keeps
 * the first one's place, and the order of the others is kept.  Only a
 * PUBLISH's changes are sent (CONNECT, will and SUBSCRIBE properties are
 * read-only); a PUBLISH that reads but changes nothing goes byte for byte. */
int mgate_user_property_add(mgate_session *s, struct mgate_properties *p, mgate_bytes name, mgate_bytes value);
int mgate_user_property_set(mgate_session *s, struct mgate_properties *p, mgate_bytes name, mgate_bytes value);
uint32_t mgate_user_property_remove(struct mgate_properties *p, mgate_bytes name);

struct mgate_handler {
    const char *name;
    void *ctx; /* the handler's own state; mgate never touches it */

    /* Any of these may be NULL: a NULL auth_* passes (MGATE_IGNORE), which
     * allows when no other handler decides; NULL hooks do nothing. */
    enum mgate_verdict (*auth_connect)(mgate_session *s, struct mgate_connect_req *req);
    enum mgate_verdict (*auth_publish)(mgate_session *s, struct mgate_publish_req *req);
    enum mgate_verdict (*auth_subscribe)(mgate_session *s, struct mgate_subscribe_req *req);

    /* After the packet was forwarded. */
    void (*connect)(mgate_session *s);
    void (*publish)(mgate_session *s, const struct mgate_publish_req *req);
    void (*subscribe)(mgate_session *s, const struct mgate_subscribe_req *req);
    void (*unsubscribe)(mgate_session *s, const struct mgate_unsubscribe_req *req);
    /* When the pair ends, if connect was called. */
    void (*disconnect)(mgate_session *s);

    /* Before an UNSUBSCRIBE is forwarded (before the unsubscribe hook), in
     * chain order: a handler that rewrites SUBSCRIBE filters rewrites the
     * same filters here, so the client can unsubscribe what it subscribed.
     * No verdict: unsubscribing is always allowed. */
    void (*rewrite_unsubscribe)(mgate_session *s, struct mgate_unsubscribe_req *req);
};

/*
 * Interceptors see every packet in both directions, as raw bytes, before
 * (pre) and after (post) the handler.  Return MGATE_KEEP, MGATE_DROP, or
 * MGATE_REPLACE after pointing *pkt at a whole new packet (validated like
 * peer input; memory from mgate_session_alloc).
 */
enum mgate_intercept { MGATE_KEEP = 0, MGATE_DROP = 1, MGATE_REPLACE = 2 };
struct mgate_interceptor {
    enum mgate_intercept (*pre)(mgate_session *s, enum mgate_direction dir, mgate_bytes *pkt);
    enum mgate_intercept (*post)(mgate_session *s, enum mgate_direction dir, mgate_bytes *pkt);
};

/* Complete a pending verdict (see the top of this file); `req` is the request
 * the auth_* callback was given (for a CONNECT's will, the will's request).
 * MGATE_IGNORE hands it to the next handler of the chain (which may answer
 * at once or pend again).  The verdict takes effect after the caller
 * returns, on the same loop turn; any other value than the three counts as
 * MGATE_DENY. */
void mgate_resume(mgate_session *s, const void *req, enum mgate_verdict v);

/* Session facts. Strings are valid for the session's life. */
mgate_bytes mgate_session_client_id(const mgate_session *s);
mgate_bytes mgate_session_username(const mgate_session *s);
mgate_bytes mgate_session_password(const mgate_session *s);
uint8_t mgate_session_version(const mgate_session *s);
const char *mgate_session_peer(const mgate_session *s);     /* "127.0.0.1:5555" */
const char *mgate_session_listener(const mgate_session *s); /* "mqtt_without_tls" */
uint64_t mgate_session_id(const mgate_session *s);

/* The client's verified TLS certificate (mTLS listeners).  Returns false
 * when the client sent none.  Computed on each call: call it once. */
struct mgate_cert {
    char cn[128];          /* subject common name */
    char serial[96];       /* upper-case hex, as `openssl x509 -serial` prints it */
    char fingerprint[96];  /* SHA-256 of the DER certificate, lower-case hex */
    char sans[512];        /* subject alternative names: "DNS:a,IP:1.2.3.4,email:b,URI:c" */
};
bool mgate_session_cert(const mgate_session *s, struct mgate_cert *out);
bool mgate_session_closed(const mgate_session *s);

/*
 * The mount point: a prefix mgate puts before every topic the client
 * publishes or subscribes to and removes from every message delivered to
 * it (MGATE_<LISTENER>_MOUNT_POINT, with %u and %c expanded when the
 * CONNECT was allowed).  Handlers always see topics as the client names
 * them: the mount point is the last thing done on the way to the broker and
 * the first on the way back.  auth_connect may set one (it replaces the
 * listener's; "" removes it); returns -1 for a prefix with a wildcard,
 * U+0000 or bad UTF-8, longer than 1024 bytes, after the CONNECT was
 * settled (the HTTP and CoAP bridges ask auth_connect per new credentials:
 * any time there), or out of memory.  The
 * listener's is expanded after auth_connect and the will's auth_publish:
 * until then mgate_session_mount_point returns "" unless a handler set one.
 */
mgate_bytes mgate_session_mount_point(const mgate_session *s);
int mgate_session_set_mount_point(mgate_session *s, mgate_bytes prefix);

/* End the session at this time (seconds since the epoch; the earliest of
 * every call wins): MQTT 5 clients get DISCONNECT 0xA0 (Maximum connect
 * time), earlier versions are closed.  For credentials that expire. */
void mgate_session_expire_at(mgate_session *s, uint64_t unix_seconds);
/* One pointer per session for a handler that runs alone.  In a chain,
 * use mgate_session_handler_data: this one is shared by every handler. */
void *mgate_session_data(const mgate_session *s);
void mgate_session_set_data(mgate_session *s, void *data);

/*
 * Per-handler memory: each handler of a chain keeps its own pointer in a
 * session, keyed by its struct mgate_handler (the address it registered).
 * free_fn (may be NULL) is called with data when it is replaced or when
 * the session is freed: after the disconnect hook, and for a session that
 * never got one (a refused CONNECT), so nothing leaks whatever the path.
 * Returns 0, or -1 when out of memory (data is then still the caller's).
 * Setting NULL frees what was kept.
 */
struct mgate_handler;
void *mgate_session_handler_data(const mgate_session *s, const struct mgate_handler *h);
int mgate_session_set_handler_data(mgate_session *s, const struct mgate_handler *h, void *data,
                                   void (*free_fn)(void *data));

/* Memory that lives until the current packet is forwarded or refused. */
void *mgate_session_alloc(mgate_session *s, size_t n);

/* Run fn(arg) after ms milliseconds on the session's loop (for handlers that
 * answer later); one still pending when mgate exits runs then, so its answer
 * frees what it holds.  Returns 0, or -1 when out of memory. */
int mgate_after(mgate_session *s, uint32_t ms, void (*fn)(void *arg), void *arg);

/* Logging in mgate's JSON-lines format; level: 0 debug, 1 info, 2 warn, 3 error. */
void mgate_log(int level, const mgate_session *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Run mgate: parse argv and the MGATE_* configuration, serve until SIGTERM or
 * SIGINT.  `handlers` is a NULL-terminated list of extra handlers that
 * MGATE_HANDLER may name, alone or chained with the built-in "log", "noop",
 * "acl", "http", "rewrite" and "jwt";
 * `interceptor` may be NULL.  Returns the process exit status.
 */
int mgate_main(int argc, char **argv, const struct mgate_handler *const *handlers,
               const struct mgate_interceptor *interceptor);

#ifdef __cplusplus
}
#endif
#endif
