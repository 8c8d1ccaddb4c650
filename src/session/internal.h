/* Session internals shared by the files of src/session (not a public API). */
#ifndef MGATE_SESSION_INTERNAL_H
#define MGATE_SESSION_INTERNAL_H

#include "core/metrics.h"
#include "mqtt/mqtt.h"
#include "session/alias.h"
#include "session/mount.h"
#include "session/session.h"
#include "session/verdict.h"

enum session_state {
    SESSION_AWAIT_CONNECT, /* nothing received yet */
    SESSION_AUTH_CONNECT,  /* CONNECT is with the handler */
    SESSION_AWAIT_CONNACK, /* CONNECT forwarded, broker has not answered */
    SESSION_OPEN,
    SESSION_CLOSING,
};

/* An MQTT packet shown to the handler chain: borrowed for each call (a
 * per-worker spare, no allocation), kept by the session only while its
 * verdict is pending (see mgate.h), when its bytes are copied out of the
 * input.  A CONNECT is asked in two stages: auth_connect (ASK_CONNECT),
 * then, allowed and carrying a will, auth_publish with the will
 * (ASK_WILL, upstream.c). */
struct held {
    uint8_t type;
    uint8_t dir;
    bool will_stage; /* the CONNECT's will was asked (ask.will is what the handlers left) */
    uint8_t *raw; /* a private copy of the packet; request fields point into it */
    uint32_t raw_len;
    struct mqtt_packet pkt;
    struct ask ask;                 /* the request and its verdict (verdict.h) */
    struct mgate_filter one_filter; /* a broker PUBLISH's topic, for auth_subscribe */
    mqtt_str resolved_topic;        /* PUBLISH: the topic after alias resolution */
    struct session_props *props;    /* v5 properties a handler asked for (properties.c), or NULL */
};

/* A SUBSCRIBE whose refused filters were answered by us: the broker's
 * SUBACK gets our codes merged back in, in the client's order. */
struct suback_merge {
    struct suback_merge *next;
    uint16_t id;
    uint32_t count;
    uint8_t codes[]; /* SUBACK_FROM_BROKER, or our refusal code */
};
#define SUBACK_FROM_BROKER 0xFFu

/* Packet identifiers of broker QoS 2 PUBLISHes we refused and answered with
 * PUBREC ourselves: their PUBREL must be answered by us too. */
struct idset {
    uint16_t *ids;
    uint32_t len, cap;
};

struct alloc_block {
    struct alloc_block *next;
    max_align_t data[];
};

/* Credentials a front end found outside MQTT (session_set_credentials):
 * mem holds the username (user_len bytes) then the password. */
struct front_cred {
    uint32_t user_len, pass_len;
    bool has_user, has_pass;
    char mem[];
};

struct mgate_session {
    struct list_node node; /* in session_list */
    struct session_list *list;
    struct loop *loop;
    const struct session_params *p;
    struct conn *client, *broker;
    uint64_t id;
    uint8_t state;   /* enum session_state */
    uint8_t version; /* from CONNECT */
    bool connect_called;
    bool ended;
    bool identity_lost; /* out of memory keeping it: closed, or (front ends) every request refused */
    bool mount_chosen;  /* a handler set the mount point: the listener's template is not used */
    /* v5 CONNECT with an Authentication Method: AUTH goes both ways before
     * the CONNACK, so the client is read while it is awaited (flow.c) */
    bool enhanced_auth;
    uint32_t refs; /* being alive, and each pending ask (verdict.c) */

    struct loop_timer timer; /* CONNECT deadline, then the closing linger */
    struct held *held[2];    /* by direction: a packet whose verdict is pending */
    struct ask *asks;        /* every pending ask of the session, MQTT or a front end's (verdict.c) */
    struct ask *asking;      /* the ask whose handler runs now */

    /* Credentials as finally sent to the broker (one allocation). */
    uint8_t *cred_mem;
    struct front_cred *front_cred; /* WebSocket: the upgrade's credentials, or NULL */
    struct tls_peer *cert; /* a certificate verified in front of s->client (wss), or NULL */
    mgate_bytes client_id, username, password;

    /* v5 limits each side advertised: 0 = none. */
    uint32_t client_max_packet, broker_max_packet;
    uint16_t client_alias_max, broker_alias_max;
    uint32_t merge_count;        /* entries in merges, at most SESSION_MAX_MERGES */
    struct session_aliases *aliases; /* v5 topic aliases, made on first use (most clients use none) */
    struct mount *mount;             /* the mount point (mount.h), NULL: none (most sessions) */

    struct log_limit log_budget; /* lines this client caused (session_log_begin) */
    struct suback_merge *merges;
    /* OPEN: loop ms at which the client's packet in progress began (its
     * deadline runs on s->timer while one sits in the input); 0: none. */
    uint64_t packet_since;
    struct idset refused_qos2;
    struct alloc_block *allocs;
    struct handler_data *hdata; /* mgate_session_(handler_)data (handler_data.c) */
    struct sockaddr_storage *peer_addr; /* only for TARGET_PROXY_PROTOCOL */
    struct session_limits *limits;      /* only for listeners with PUBLISH_*_LIMIT */
    struct session_expiry *expiry;      /* only after mgate_session_expire_at (expiry.c) */
    /* A front end's session that is not an MQTT pair (HTTP): it calls the
     * handler itself and is told of resumes, drains and closes. */
    const struct session_front *front;
    void *front_ctx;
    char peer[]; /* "127.0.0.1:5555", allocated with the session to its length */
};

/* One pass over bytes from one side: unchanged packets that follow each
 * other in the input are written to the other side in one call. */
struct pass {
    struct mgate_session *s;
    int dir; /* MGATE_UP / MGATE_DOWN */
    struct conn *from, *to;
    const uint8_t *run;
    size_t run_len;
    struct metrics *m; /* the loop's counters, looked up once per pass */
    struct conn *corked; /* `to` once a packet was emitted: what the pass made goes out together */
};

enum pkt_result {
    PKT_FORWARD,  /* forward the input bytes unchanged */
    PKT_HANDLED,  /* already forwarded, answered or dropped */
    PKT_REFUSED,  /* a PUBLISH answered or dropped as refused: as PKT_HANDLED, but no publish hook */
    PKT_HOLD,     /* waiting for a verdict: stop reading this side */
    PKT_CLOSE,    /* the session is closing: stop */
};

/* flow.c */
size_t session_on_data(struct conn *c, const uint8_t *data, size_t len);
/* SUBSCRIBEs whose SUBACK waits to be merged: at this many, or this many
 * filters among them, the client is not read until the broker's SUBACKs
 * bring them down (flow.c says why these numbers). */
#define SESSION_MAX_MERGES 32
#define SESSION_MAX_MERGE_FILTERS 65536
/* Whether c may be read now; every reason to stop reading is asked here. */
bool session_may_read(const struct mgate_session *s, const struct conn *c);
/* A reason to stop reading went away: resume each side that may read now. */
void session_resume_reading(struct mgate_session *s);
void pass_flush(struct pass *ps);
/* The pass is over: its run and what it emitted are written (pass_flush,
 * then the corked connection's queue in one call).  Every pass ends here. */
void pass_end(struct pass *ps);
int pass_emit(struct pass *ps, const uint8_t *pkt, size_t len); /* flushes the run first */
/* Encodes and emits: 0, -1 when out of memory, or, not sent: PASS_DROPPED
 * when the packet (a handler's rewrite) cannot be encoded or exceeds what
 * the peer takes, PASS_INVALID when it is not a valid packet of the
 * session's version from that side (a handler wrote a wildcard into a
 * topic, bad UTF-8, an empty filter...). */
#define PASS_DROPPED 1
#define PASS_INVALID 2
int pass_emit_packet(struct pass *ps, const struct mqtt_packet *pkt);
/* A request holder for this pass and packet (closes the session when out of memory). */
struct held *held_begin(struct pass *ps, const struct mqtt_packet *pkt);
void held_put(struct mgate_session *s, struct held *h);
/* Ask the chain about h->ask (kind, request filled in): the packet is
 * finished now, or held until its verdict comes.  A CONNECT goes on to
 * its will's stage when auth_connect allows. */
enum pkt_result held_ask(struct pass *ps, struct held *h, enum ask_kind kind, const uint8_t *raw, uint32_t len);
enum pkt_result held_ask_connect(struct pass *ps, struct held *h, const uint8_t *raw, uint32_t len);
/* After h->ask.verdict: hold the packet (pending), or finish it now. */
enum pkt_result held_decide(struct pass *ps, struct held *h, enum mgate_verdict v, const uint8_t *raw,
                            uint32_t len);

/* Whether an ask is a struct held's (an MQTT packet's), not a front end's. */
bool held_owns(const struct ask *a);

/* properties.c: mgate_properties' cache in struct held.  A pending packet's
 * bytes move (held_pend): the views follow them. */
void session_props_rebase(struct held *h, const uint8_t *from, uint32_t len, const uint8_t *to);
/* A PUBLISH whose user properties, content type or response topic a
 * handler changed gets its new block in h->pkt.publish.props (outside the
 * packet's bytes, which publish_forward takes as changed): 0, -1 out of
 * memory, PASS_DROPPED when the new block cannot be encoded.  Nothing to do
 * (one compare) when no handler asked. */
int held_props_apply_slow(struct mgate_session *s, struct held *h);
/* A mounted session's Response Topic (a PUBLISH's or a will's props) in
 * the tenant's space: MGATE_UP puts the mount point before it, so a
 * responder answers into the requester's tenant and no tenant can point
 * one into another's; MGATE_DOWN takes it off (one outside stays as it
 * is).  0 (nothing to do, or done: props->raw then points at the new
 * block), -1 out of memory, PASS_DROPPED when it would be too long. */
int session_props_mount(struct mgate_session *s, mqtt_props *props, int dir);
static inline int held_props_apply(struct mgate_session *s, struct held *h)
{
    return h->props ? held_props_apply_slow(s, h) : 0;
}

/* chain.c: MGATE_HANDLER's handlers, in order (see mgate.h); the auth_*
 * calls are the verdict engine's (verdict.c). */
/* The hooks after forwarding, to every handler. */
void chain_connect(struct mgate_session *s);
void chain_publish(struct mgate_session *s, const struct mgate_publish_req *req);
void chain_subscribe(struct mgate_session *s, const struct mgate_subscribe_req *req);
/* Whether any handler has an unsubscribe hook or rewrite_unsubscribe. */
bool chain_wants_unsubscribe(const struct mgate_session *s);
/* rewrite_unsubscribe of every handler that has it, in order. */
void chain_rewrite_unsubscribe(struct mgate_session *s, struct mgate_unsubscribe_req *req);
void chain_unsubscribe(struct mgate_session *s, const struct mgate_unsubscribe_req *req);
void chain_disconnect(struct mgate_session *s);

/* upstream.c / downstream.c */
enum pkt_result up_packet(struct pass *ps, const uint8_t *raw, uint32_t len, struct mqtt_packet *pkt);
enum pkt_result down_packet(struct pass *ps, const uint8_t *raw, uint32_t len, struct mqtt_packet *pkt);
enum pkt_result up_finish(struct pass *ps, struct held *h, const uint8_t *raw, uint32_t len);
/* A CONNECT allowed by auth_connect: its will's stage (ASK_WILL), or
 * MGATE_ALLOW when it has none. */
enum mgate_verdict up_connect_will(struct mgate_session *s, struct held *h);
enum pkt_result down_finish(struct pass *ps, struct held *h, const uint8_t *raw, uint32_t len);
/* v5 topic aliases by direction: what the sender's mean (in), what the
 * receiver has been told (out). */
struct session_aliases {
    struct alias_map in[2], out[2];
};

/* Common: v5 alias resolution and forwarding of a (maybe rewritten) PUBLISH.
 * publish_resolve_alias: 0; -1 when the sender used an alias it may not (a
 * protocol error); PUBLISH_ALIAS_NOMEM when a new alias could not be stored. */
#define PUBLISH_ALIAS_NOMEM (-2)
int publish_resolve_alias(struct pass *ps, struct mqtt_publish *pub, mqtt_str *resolved);
enum pkt_result publish_forward(struct pass *ps, const uint8_t *raw, uint32_t len,
                                struct mqtt_publish *pub, mqtt_str resolved, mgate_bytes topic,
                                mgate_bytes payload);
enum pkt_result publish_oom(struct mgate_session *s); /* closes the session */
/* A PUBLISH allowed but not sent (too large for its receiver as rewritten,
 * or invalid: `why` is PASS_DROPPED or PASS_INVALID): answered to its
 * sender as each direction answers a refused one (0x83 to a v5 client). */
enum pkt_result up_publish_not_sent(struct pass *ps, const struct mqtt_publish *pub, int why);
enum pkt_result down_publish_not_sent(struct pass *ps, const struct mqtt_publish *pub, const char *why);

/* client_id.c: the listener's client-id policy, applied to the client id
 * and identity the handler chain allowed (after session_save_credentials). */

/* reply.c: packets mgate originates */
void reply_connack(struct mgate_session *s, uint8_t v5_reason);
void reply_ack(struct conn *to, uint8_t type, uint8_t version, uint16_t id, uint8_t rc);
void reply_disconnect(struct mgate_session *s, uint8_t reason);

/* A timer whose fn runs at the latest when the loop is freed (at exit):
 * mgate_after's, and a layer's own that must not be dropped there (a
 * closing MQTT client's linger).  Zeroed to start; session_after_stop
 * before its memory goes away. */
struct after {
    struct loop_timer t;
    struct list_node node; /* on the loop's list; on none when no slot was had */
    void (*fn)(void *);
    void *arg;
    bool owned; /* mgate_after's: freed after it ran */
};
void session_after(struct loop *l, struct after *a, uint32_t ms, void (*fn)(void *arg), void *arg);
void session_after_stop(struct loop *l, struct after *a);

/* expiry.c: mgate_session_expire_at's timer, freed with the session */
void session_expiry_free(struct mgate_session *s);
/* handler_data.c: every handler's data, freed with the session */
void session_handler_data_free(struct mgate_session *s);

/* session.c */
void session_close(struct mgate_session *s, const char *why);
static inline struct metrics *session_metrics(const struct mgate_session *s) { return loop_metrics(s->loop); }
/* The same, telling each side why where its transport can (WebSocket close
 * codes); the first reason given wins. */
void session_close_as(struct mgate_session *s, enum conn_end client, enum conn_end broker, const char *why);
void session_protocol_error(struct mgate_session *s, int dir, mqtt_rc rc);
int session_dial(struct mgate_session *s);
/* The listener's broker, for a session and for the MQTT client
 * (mqtt_client.c): p->dial (a test's virtual connection), else a TCP
 * connect to p->target, its output mark OUTPUT_HIGH_WATER; NULL with *err.
 * Once the TCP connect is done (on_connected), broker_connected puts TLS
 * (mqtts, wss) and the broker's layer (ws, wss) on it; -1: they cannot
 * start, close it. */
struct conn *broker_dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner,
                         int *err);
int broker_connected(struct conn *c, const struct session_params *p);
/* Keep the identity the chain allowed; out of memory it closes the session
 * (never an anonymous one instead) and returns -1. */
int session_save_credentials(struct mgate_session *s, const struct mgate_connect_req *req);
/* End of a pass over the client's bytes in OPEN: whether a packet is left
 * in progress (partial) and whether the pass completed any (consumed). */
void session_packet_progress(struct mgate_session *s, bool partial, size_t consumed);
void session_alloc_reset(struct mgate_session *s);
void session_unref(struct mgate_session *s);

static inline bool bytes_same(mgate_bytes a, mqtt_str b)
{
    return a.p == b.p && a.len == b.len;
}
static inline mgate_bytes to_bytes(mqtt_str s) { return (mgate_bytes){s.p, s.len}; }
static inline mqtt_str to_str(mgate_bytes b) { return (mqtt_str){b.p, b.len}; }

#endif
