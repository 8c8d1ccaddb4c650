/*
 * What the tunnel's files share (docs/TUNNEL.md): the configuration
 * (config.c), the runtime with its one MQTT connection (tunnel.c), the
 * counters (stats.c), and the two modes that carry streams over it
 * (reliable.c, compat.c).  Everything here is owned by the mode's one loop.
 */
#ifndef MGATE_TUNNEL_INTERNAL_H
#define MGATE_TUNNEL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"
#include "mqtt/mqtt.h"
#include "net/listener.h"
#include "session/mqtt_client.h"
#include "session/session.h"
#include "tunnel/frame.h"

#define TUNNEL_EXIT_CONFIG 2
#define TUNNEL_MAX_ALLOW 64
#define TUNNEL_MAX_KEY 256

/* The JSON config file: mqtunnel's keys and ours (config.c). */
struct tunnel_config {
    const char *path;
    char *host;
    uint16_t port;
    char *username, *password, *client_id;
    char *ca_cert, *client_cert, *private_key;
    char *control;
    bool compat;   /* "compat": "mqtunnel" */
    uint16_t allow[TUNNEL_MAX_ALLOW];
    unsigned nallow;
    uint8_t key[TUNNEL_MAX_KEY];
    size_t keylen; /* 0: no key */
    bool tls, insecure;
    uint32_t window, chunk; /* 0: stream.h's defaults */
    uint32_t give_up_s;     /* "giveUp": a stream without progress this long is reset, an open
                               unanswered half as long; 0: stream.h's default (60 s) */
    uint8_t mqtt_version;   /* 4 or 5 */
    uint16_t keepalive;
};

/* 0, or -1 with a message naming the file and the field (exit 2). */
int tunnel_config_load(struct tunnel_config *c, const char *path, char *err, size_t errlen);
void tunnel_config_free(struct tunnel_config *c);
bool tunnel_config_allows(const struct tunnel_config *c, uint16_t port);

/* Counters (stats.c): one "tunnel stats" line every 60 s and at exit. */
struct tunnel_stats {
    uint64_t streams_open, streams_total;
    uint64_t bytes_out, bytes_in; /* TCP bytes sent to the peer, received from it */
    uint64_t resends, resets, refused;
};
void tunnel_stats_log(const struct tunnel_stats *s, const char *msg);

struct tunnel;

/* One way of carrying streams (reliable.c, compat.c). */
struct tunnel_mode {
    const char *name;
    int (*start)(struct tunnel *t);          /* 0 or -1 (logged) */
    void (*stop)(struct tunnel *t);          /* every stream ends; state freed */
    void (*on_ready)(struct tunnel *t);      /* (re)connected: subscribed, resend */
    void (*on_message)(struct tunnel *t, const struct mqtt_publish *pub);
    void (*on_drain)(struct tunnel *t);      /* MQTT output may take more */
    void (*on_accept)(struct tunnel *t, int fd); /* local side: a TCP client */
};
extern const struct tunnel_mode tunnel_reliable, tunnel_compat;

struct tunnel {
    struct loop *loop;
    const struct tunnel_config *cfg;
    const struct tunnel_mode *mode;
    void *mode_state;
    bool local; /* -l/-r given: the side that listens */
    uint16_t lport, rport;
    bool stopping;
    struct session_params params; /* the broker (resolved once), upstream TLS */
    struct mqtt_client *mc;       /* NULL between connections */
    char client_id[72]; /* a clientId of up to 63 characters, "-" and a port */
    char root[TUNNEL_MAX_TOPIC + 1]; /* the control topic without its last level */
    uint32_t backoff_ms;
    struct loop_timer reconnect, stats_timer, exit_timer;
    struct listener ls;
    bool listening;
    struct tunnel_stats stats;
};

/* The MQTT connection (tunnel.c).  tunnel_publish: false when it cannot be
 * sent now (no connection, output over its mark, every slot taken). */
bool tunnel_connected(const struct tunnel *t);
bool tunnel_publish(struct tunnel *t, const char *topic, const void *p, size_t n, uint8_t qos);
bool tunnel_publish_done(struct tunnel *t, const char *topic, const void *p, size_t n, uint8_t qos,
                         mqc_done_fn done, void *arg);
bool tunnel_subscribe(struct tunnel *t, const char *filter);
void tunnel_unsubscribe(struct tunnel *t, const char *filter);
/* n random letters from set (NUL-terminated into out). */
void tunnel_random_letters(char *out, size_t n, const char *set);
uint64_t tunnel_random_u64(void);
/* Close an accepted or dialled TCP socket with a RST (SO_LINGER 0). */
struct conn;
void tunnel_conn_reset(struct conn *c);
bool tunnel_topic_ok(const struct tunnel *t, const char *topic, size_t len);

#define TUNNEL_LETTERS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define TUNNEL_LOWER "abcdefghijklmnopqrstuvwxyz"

#endif
