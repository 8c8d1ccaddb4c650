/*
 * The mqtunnel-compatible mode (docs/TUNNEL.md, the facts in
 * shared/reference/mqtunnel-README.md): mqtunnel's control JSON and topics,
 * raw bytes at QoS 0, so that an mgate tunnel and an mqtunnel can be the
 * two ends.  Lossy as mqtunnel is; of our additions only the allow list
 * applies (mqtunnel has no key and no reset).
 *
 * Each side of a tunnel publishes on its own "local" topic and subscribes
 * its "remote" one; the remote side's view is the local side's swapped.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "net/conn.h"
#include "tunnel/internal.h"

#define COMPAT_CHUNK 4096 /* bytes per PUBLISH, as mqtunnel reads */
#define COMPAT_MAX_QUEUED (4u << 20) /* a TCP side that does not read: past this, the tunnel is reset */
#define ID_LEN 16
#define TOPIC_LETTERS 8

struct cstream {
    struct compat *m;
    struct cstream *next;
    struct conn *c; /* NULL once closed */
    char id[ID_LEN + 1];
    uint16_t local_port, remote_port;         /* this side's view */
    char local_topic[TUNNEL_MAX_TOPIC + 1];   /* we publish here */
    char remote_topic[TUNNEL_MAX_TOPIC + 1];  /* we subscribe here */
    bool ready;  /* local: connect_ack came; remote: connected */
    bool paused; /* reads stopped for MQTT's output */
};

struct compat {
    struct tunnel *t;
    struct cstream *streams;
};

static const struct conn_cbs quiet_cbs = {0};

/* ---- control messages --------------------------------------------------------------- */

/* A JSON string as Go's encoding/json writes it (<, >, & escaped). */
static size_t put_json_str(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    out[n++] = '"';
    for (; *s && n + 8 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            out[n++] = '\\', out[n++] = (char)ch;
        else if (ch < 0x20 || ch == '<' || ch == '>' || ch == '&')
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
        else
            out[n++] = (char)ch;
    }
    out[n++] = '"';
    out[n] = 0;
    return n;
}

/* mqtunnel's control message, Go's field order, no spaces. */
static size_t control_encode(const struct cstream *s, const char *type, char *out, size_t cap)
{
    char lt[2 * TUNNEL_MAX_TOPIC], rt[2 * TUNNEL_MAX_TOPIC];
    put_json_str(lt, sizeof(lt), s->local_topic);
    put_json_str(rt, sizeof(rt), s->remote_topic);
    int n = snprintf(out, cap,
                     "{\"type\":\"%s\",\"TunnelID\":\"%s\",\"local_port\":%u,\"local_topic\":%s,"
                     "\"remote_port\":%u,\"remote_topic\":%s}",
                     type, s->id, s->local_port, lt, s->remote_port, rt);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void send_control(struct cstream *s, const char *type, uint8_t qos)
{
    char msg[6 * TUNNEL_MAX_TOPIC];
    size_t n = control_encode(s, type, msg, sizeof(msg));
    struct tunnel *t = s->m->t;
    if (!n || !tunnel_publish(t, t->cfg->control, msg, n, qos))
        log_msgf(LOGL_WARN, "tunnel: could not send \"%s\" for tunnel %s (no connection?)", type, s->id);
}

struct control {
    const char *type, *id, *local_topic, *remote_topic;
    long long local_port, remote_port;
};

/* The fields of a control message (views into root); false when malformed. */
static bool control_decode(json_t *root, struct control *c)
{
    json_t *lp = json_object_get(root, "local_port"), *rp = json_object_get(root, "remote_port");
    c->type = json_string_value(json_object_get(root, "type"));
    c->id = json_string_value(json_object_get(root, "TunnelID"));
    c->local_topic = json_string_value(json_object_get(root, "local_topic"));
    c->remote_topic = json_string_value(json_object_get(root, "remote_topic"));
    c->local_port = json_is_integer(lp) ? json_integer_value(lp) : -1;
    c->remote_port = json_is_integer(rp) ? json_integer_value(rp) : -1;
    return c->type && c->id && strlen(c->id) <= ID_LEN && *c->id && c->local_topic && c->remote_topic &&
           c->local_port >= 0 && c->local_port <= 65535 && c->remote_port >= 0 && c->remote_port <= 65535;
}

/* ---- streams ------------------------------------------------------------------------ */

static struct cstream *find_by(struct compat *m, const char *id, const char *topic, size_t tlen)
{
    for (struct cstream *s = m->streams; s; s = s->next)
        if (id ? !strcmp(s->id, id)
               : strlen(s->remote_topic) == tlen && !memcmp(s->remote_topic, topic, tlen))
            return s;
    return NULL;
}

static struct cstream *cstream_new(struct compat *m)
{
    struct cstream *s = calloc(1, sizeof(*s));
    if (!s) {
        log_msgf(LOGL_ERROR, "tunnel: out of memory for a tunnel");
        return NULL;
    }
    s->m = m;
    s->next = m->streams;
    m->streams = s;
    m->t->stats.streams_open++;
    m->t->stats.streams_total++;
    return s;
}

/* The end of a tunnel: TCP closed after what is queued, and forgotten. */
static void cstream_free(struct cstream *s)
{
    struct compat *m = s->m;
    if (s->c) {
        s->c->cbs = &quiet_cbs; /* we go; its end needs nobody */
        conn_close_after_flush(s->c);
    }
    tunnel_unsubscribe(m->t, s->remote_topic);
    for (struct cstream **p = &m->streams; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    m->t->stats.streams_open--;
    log_msgf(LOGL_INFO, "tunnel: tunnel %s closed", s->id);
    free(s);
}

static size_t tcp_data(struct conn *c, const uint8_t *p, size_t n)
{
    struct cstream *s = c->owner;
    size_t used = 0;
    while (used < n) {
        size_t k = n - used < COMPAT_CHUNK ? n - used : COMPAT_CHUNK;
        if (!tunnel_publish(s->m->t, s->local_topic, p + used, k, 0)) {
            conn_pause_read(c); /* MQTT's output is full: on_drain resumes */
            s->paused = true;
            break;
        }
        used += k;
    }
    s->m->t->stats.bytes_out += used;
    return used;
}

static void tcp_closed(struct conn *c, int err)
{
    struct cstream *s = c->owner;
    (void)err;
    s->c = NULL;
    send_control(s, "closed", 0); /* QoS 0, as mqtunnel sends it */
    cstream_free(s);
}

static void tcp_connected(struct conn *c)
{
    struct cstream *s = c->owner;
    s->ready = true;
    send_control(s, "connect_ack", 1);
}

static const struct conn_cbs tcp_cbs = {.on_data = tcp_data, .on_connected = tcp_connected, .on_close = tcp_closed};

/* ---- the local side ----------------------------------------------------------------- */

static void compat_accept(struct tunnel *t, int fd)
{
    struct compat *m = t->mode_state;
    struct cstream *s = cstream_new(m);
    if (!s || !(s->c = conn_tcp_accept(t->loop, fd, &tcp_cbs, s))) {
        if (s)
            cstream_free(s);
        close(fd);
        return;
    }
    conn_pause_read(s->c); /* until connect_ack: the remote side subscribes first */
    char a[TOPIC_LETTERS + 1], b[TOPIC_LETTERS + 1];
    tunnel_random_letters(s->id, ID_LEN, TUNNEL_LETTERS);
    tunnel_random_letters(a, TOPIC_LETTERS, TUNNEL_LETTERS);
    tunnel_random_letters(b, TOPIC_LETTERS, TUNNEL_LETTERS);
    s->local_port = t->lport, s->remote_port = t->rport;
    /* the root is short enough (config.c): these fit */
    int n1 = snprintf(s->local_topic, sizeof(s->local_topic), "%.216s/%u-%s", t->root, t->lport, a);
    int n2 = snprintf(s->remote_topic, sizeof(s->remote_topic), "%.216s/%u-%s", t->root, t->rport, b);
    ASSERT(n1 > 0 && n2 > 0 && (size_t)n1 < sizeof(s->local_topic) && (size_t)n2 < sizeof(s->remote_topic));
    (void)n1, (void)n2;
    tunnel_subscribe(t, s->remote_topic);
    log_msgf(LOGL_INFO, "tunnel: tunnel %s opened to the remote port %u", s->id, s->remote_port);
    send_control(s, "connect", 1);
}

static void on_connect_ack(struct compat *m, const struct control *c)
{
    struct cstream *s = find_by(m, c->id, NULL, 0);
    if (!s || s->ready || !s->c)
        return;
    s->ready = true;
    conn_resume_read(s->c);
}

/* ---- the remote side ---------------------------------------------------------------- */

static void refuse(struct compat *m, const char *why, const struct control *c)
{
    m->t->stats.refused++;
    struct logline l;
    if (log_begin(&l, LOGL_WARN, "tunnel open refused")) {
        log_str(&l, "reason", why);
        log_int(&l, "port", c->remote_port);
        log_end(&l);
    }
}

static void on_connect(struct compat *m, const struct control *c)
{
    struct tunnel *t = m->t;
    if (find_by(m, c->id, NULL, 0))
        return; /* a redelivered connect */
    if (!tunnel_topic_ok(t, c->local_topic, strlen(c->local_topic)) ||
        !tunnel_topic_ok(t, c->remote_topic, strlen(c->remote_topic)))
        return refuse(m, "topics not at the control topic's level", c);
    if (!tunnel_config_allows(t->cfg, (uint16_t)c->remote_port))
        return refuse(m, "port not allowed", c);
    struct cstream *s = cstream_new(m);
    if (!s)
        return;
    snprintf(s->id, sizeof(s->id), "%s", c->id); /* the opener's view, swapped */
    s->local_port = (uint16_t)c->remote_port, s->remote_port = (uint16_t)c->local_port;
    snprintf(s->local_topic, sizeof(s->local_topic), "%s", c->remote_topic);
    snprintf(s->remote_topic, sizeof(s->remote_topic), "%s", c->local_topic);
    tunnel_subscribe(t, s->remote_topic);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(s->local_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int err = 0;
    log_msgf(LOGL_INFO, "tunnel: tunnel %s to 127.0.0.1:%u", s->id, s->local_port);
    if (!(s->c = conn_tcp_dial(t->loop, (struct sockaddr *)&sa, sizeof(sa), &tcp_cbs, s, &err))) {
        send_control(s, "closed", 0);
        cstream_free(s);
    }
}

static void on_closed_msg(struct compat *m, const struct control *c)
{
    struct cstream *s = find_by(m, c->id, NULL, 0);
    if (s)
        cstream_free(s);
}

/* ---- messages ----------------------------------------------------------------------- */

static void on_control(struct compat *m, const struct mqtt_publish *pub)
{
    json_t *root = json_loadb((const char *)pub->payload.p, pub->payload.len, 0, NULL);
    struct control c;
    if (!root || !control_decode(root, &c))
        log_msgf(LOGL_DEBUG, "tunnel: a malformed control message dropped");
    else if (!strcmp(c.type, "connect") && !m->t->local)
        on_connect(m, &c);
    else if (!strcmp(c.type, "connect_ack") && m->t->local)
        on_connect_ack(m, &c);
    else if (!strcmp(c.type, "closed"))
        on_closed_msg(m, &c);
    json_decref(root);
}

static void compat_message(struct tunnel *t, const struct mqtt_publish *pub)
{
    struct compat *m = t->mode_state;
    const char *ctl = t->cfg->control;
    if (pub->topic.len == strlen(ctl) && !memcmp(pub->topic.p, ctl, pub->topic.len))
        return on_control(m, pub);
    struct cstream *s = find_by(m, NULL, (const char *)pub->topic.p, pub->topic.len);
    if (!s || !s->c)
        return;
    /* mqtunnel's protocol has no window to stop the peer: memory is bounded
     * by ending a tunnel whose TCP side does not read what comes. */
    if (conn_pending(s->c) + pub->payload.len > COMPAT_MAX_QUEUED) {
        log_msgf(LOGL_WARN, "tunnel: tunnel %s reset: its TCP side took nothing of the last 4 MiB", s->id);
        t->stats.resets++;
        struct conn *c = s->c;
        c->cbs = &quiet_cbs;
        s->c = NULL;
        tunnel_conn_reset(c);
        send_control(s, "closed", 0);
        return cstream_free(s);
    }
    conn_write(s->c, pub->payload.p, pub->payload.len);
    t->stats.bytes_in += pub->payload.len;
}

static void compat_drain(struct tunnel *t)
{
    struct compat *m = t->mode_state;
    for (struct cstream *s = m ? m->streams : NULL; s; s = s->next)
        if (s->paused && s->c && mqtt_client_writable(t->mc)) {
            s->paused = false;
            conn_resume_read(s->c);
        }
}

static void compat_ready(struct tunnel *t)
{
    struct compat *m = t->mode_state;
    tunnel_subscribe(t, t->cfg->control); /* both sides: connect, connect_ack, closed */
    for (struct cstream *s = m->streams; s; s = s->next)
        tunnel_subscribe(t, s->remote_topic);
    compat_drain(t);
}

static int compat_start(struct tunnel *t)
{
    struct compat *m = calloc(1, sizeof(*m));
    if (!m)
        return log_msgf(LOGL_ERROR, "tunnel: out of memory"), -1;
    m->t = t;
    t->mode_state = m;
    log_msgf(LOGL_WARN, "tunnel: mqtunnel mode: data at QoS 0, bytes can be lost (docs/TUNNEL.md)");
    return 0;
}

static void compat_stop(struct tunnel *t)
{
    struct compat *m = t->mode_state;
    if (!m)
        return;
    while (m->streams) {
        send_control(m->streams, "closed", 0);
        cstream_free(m->streams);
    }
    free(m);
    t->mode_state = NULL;
}

const struct tunnel_mode tunnel_compat = {
    .name = "mqtunnel", .start = compat_start, .stop = compat_stop, .on_ready = compat_ready,
    .on_message = compat_message, .on_drain = compat_drain, .on_accept = compat_accept};
