/*
 * The reliable mode's wiring (docs/TUNNEL.md): topics, opens, and the glue
 * between a tunnel_stream (stream.h, the state machine) and its TCP
 * connection and the MQTT connection.
 *
 * Each process has one data topic, <root>/mgt-<16 random letters>, where
 * every frame for it arrives.  The local side opens a stream with a control
 * message (frame.h) on the control topic, carrying its data topic; the
 * remote side answers with TF_ACCEPT carrying its own.  From then on each
 * side sends the stream's frames to the other's data topic at QoS 1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "net/conn.h"
#include "tunnel/internal.h"
#include "tunnel/stream.h"

#define BUCKETS 256 /* streams by id */
#define TOMBS 256   /* ended streams remembered, to answer their late frames */
#define OPEN_WAIT_MS 30000 /* the local side's wait for TF_ACCEPT */
#define REFUSE_LOG_BURST 10
#define FLUSH_WAIT_MS 10000 /* an ended stream's time to send its last frame */
#define MAX_STREAMS 1024    /* open streams per side: each holds a socket and up to two windows */
#define MAX_SEEN 65536      /* keyed opens remembered for their whole time of validity */
#define START_SKEW_S 5      /* a keyed open older than our start (by more than this) is a replay */

struct rstream {
    struct rel *r;
    struct rstream *next; /* in its bucket */
    struct tunnel_stream *st;
    uint64_t id;
    struct conn *c;       /* NULL once the TCP side is gone */
    struct loop_timer timer;
    uint64_t open_deadline; /* local side, until accepted */
    uint64_t over_at;       /* when it was found done or reset */
    struct tunnel_stream_stats seen; /* what the counters took already */
    char peer[TUNNEL_MAX_TOPIC + 1]; /* the peer's data topic; "" until ACCEPT (local side) */
    uint16_t port;
    bool local;        /* we opened it */
    bool accepted;     /* local: TF_ACCEPT came; remote: TCP connected, TF_ACCEPT is due */
    bool accept_owed;  /* remote: TF_ACCEPT not yet handed to MQTT */
    bool heard;        /* a frame came from the peer: its ACCEPT (ours) arrived */
    bool eof, shut_pending;
};

struct tomb {
    uint64_t id;
    bool done; /* finished (else reset) */
    char peer[TUNNEL_MAX_TOPIC + 1];
};

struct rel {
    struct tunnel *t;
    char topic[TUNNEL_MAX_TOPIC + 1]; /* ours */
    struct tunnel_stream_cfg scfg;
    struct rstream *buckets[BUCKETS];
    struct tomb tombs[TOMBS];
    unsigned tomb_next;
    bool blocked; /* a send was refused: pump on the next drain */
    struct seen *seen[BUCKETS]; /* keyed opens taken, until their ts leaves the skew window */
    unsigned nseen;
    uint64_t started; /* unix seconds */
    struct log_limit refuse_budget;
    uint8_t buf[TUNNEL_FRAME_HEAD + TUNNEL_MAX_CHUNK];
};

static uint64_t now_ms(const struct rel *r) { return loop_now(r->t->loop); }

static struct rstream **bucket_of(struct rel *r, uint64_t id) { return &r->buckets[(id ^ id >> 32) % BUCKETS]; }

static struct rstream *find(struct rel *r, uint64_t id)
{
    for (struct rstream *s = *bucket_of(r, id); s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static const struct tomb *tomb_find(const struct rel *r, uint64_t id)
{
    for (unsigned i = 0; i < TOMBS; i++)
        if (r->tombs[i].id == id)
            return &r->tombs[i];
    return NULL;
}

/* ---- sending frames ----------------------------------------------------------------- */

static bool send_frame_to(struct rel *r, const char *topic, const struct tunnel_frame *f)
{
    ASSERT(f->len <= TUNNEL_MAX_CHUNK);
    size_t n = tunnel_frame_encode(f, r->buf);
    if (tunnel_publish(r->t, topic, r->buf, n, 1))
        return true;
    r->blocked = true;
    return false;
}

static void send_rst(struct rel *r, const char *topic, uint64_t id, const char *why)
{
    struct tunnel_frame f = {.type = TF_RST, .stream = id, .payload = (const uint8_t *)why, .len = strlen(why)};
    send_frame_to(r, topic, &f); /* best effort: the peer gives up on its own otherwise */
}

static void send_accept(struct rstream *s)
{
    const struct tunnel_config *cfg = s->r->t->cfg;
    uint8_t payload[TUNNEL_MAX_TOPIC + 65];
    size_t n = tunnel_accept_encode(s->id, s->r->topic, cfg->keylen ? cfg->key : NULL, cfg->keylen, payload,
                                    sizeof(payload));
    ASSERT(n > 0); /* our own topic always fits */
    struct tunnel_frame f = {.type = TF_ACCEPT, .stream = s->id, .payload = payload, .len = n};
    if (send_frame_to(s->r, s->peer, &f))
        s->accept_owed = false;
}

/* The data topic an ACCEPT names, into out: false when its MAC is wrong
 * (with a key), or it is not a peer's data topic under our root. */
static bool accept_topic(const struct rel *r, const struct tunnel_frame *f, char out[TUNNEL_MAX_TOPIC + 1])
{
    const struct tunnel_config *cfg = r->t->cfg;
    long at = tunnel_accept_topic(f->stream, f->payload, f->len, cfg->keylen ? cfg->key : NULL, cfg->keylen);
    if (at < 0 || f->len - (size_t)at > TUNNEL_MAX_TOPIC)
        return false;
    size_t n = f->len - (size_t)at;
    memcpy(out, f->payload + at, n);
    out[n] = 0;
    return tunnel_topic_ok(r->t, out, n) && strcmp(out, r->topic) != 0;
}

/* ---- the stream's life -------------------------------------------------------------- */

static void count(struct rstream *s)
{
    struct tunnel_stream_stats now;
    struct tunnel_stats *ts = &s->r->t->stats;
    tunnel_stream_get_stats(s->st, &now);
    ts->bytes_out += now.bytes_out - s->seen.bytes_out;
    ts->bytes_in += now.bytes_in - s->seen.bytes_in;
    ts->resends += now.resent - s->seen.resent;
    s->seen = now;
}

static void bury(struct rel *r, const struct rstream *s, bool done)
{
    struct tomb *tb = &r->tombs[r->tomb_next++ % TOMBS];
    *tb = (struct tomb){.id = s->id, .done = done};
    memcpy(tb->peer, s->peer, sizeof(tb->peer));
}

static void stream_free(struct rstream *s)
{
    struct rel *r = s->r;
    bool done = tunnel_stream_done(s->st);
    count(s);
    struct logline l;
    if (log_begin(&l, LOGL_INFO, "tunnel stream ended")) {
        log_uint(&l, "stream", s->id);
        log_str(&l, "reason", done ? "done" : "reset");
        log_uint(&l, "bytes_out", s->seen.bytes_out);
        log_uint(&l, "bytes_in", s->seen.bytes_in);
        log_end(&l);
    }
    r->t->stats.resets += !done;
    if (s->c)
        done ? conn_close(s->c) : tunnel_conn_reset(s->c); /* done: our output was flushed (shut_pending) */
    for (struct rstream **p = bucket_of(r, s->id); *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    if (s->peer[0])
        bury(r, s, done);
    loop_timer_stop(r->t->loop, &s->timer);
    tunnel_stream_free(s->st);
    r->t->stats.streams_open--;
    free(s);
}

static void on_stream_timer(struct loop *l, struct loop_timer *tm);

/* Over (done or reset): freed once its last frame (a final ACK, an RST)
 * went, or after FLUSH_WAIT_MS without a connection to send it on. */
static bool over(struct rstream *s, uint64_t now, uint64_t *when)
{
    if (!tunnel_stream_reset(s->st) && !(tunnel_stream_done(s->st) && !s->shut_pending))
        return false;
    if (!s->over_at)
        s->over_at = now;
    if (!tunnel_stream_flushed(s->st)) {
        tunnel_stream_pump(s->st, now);
        *when = tunnel_stream_poll(s->st, now);
    }
    if (tunnel_stream_flushed(s->st) || !s->peer[0] || now - s->over_at >= FLUSH_WAIT_MS)
        return true; /* (with no peer topic yet, nothing can go) */
    if (!*when || *when > s->over_at + FLUSH_WAIT_MS)
        *when = s->over_at + FLUSH_WAIT_MS;
    return false;
}

/* After every call into the stream: its timers, and its end. */
static void settle(struct rstream *s)
{
    uint64_t now = now_ms(s->r);
    bool opening = s->local && !s->accepted && !tunnel_stream_reset(s->st);
    if (opening && now >= s->open_deadline)
        tunnel_stream_abort(s->st, "no answer to the open", now), opening = false;
    uint64_t when = tunnel_stream_poll(s->st, now);
    if (over(s, now, &when)) {
        stream_free(s);
        return;
    }
    count(s);
    if (opening && (!when || when > s->open_deadline))
        when = s->open_deadline;
    if (when)
        loop_timer_start(s->r->t->loop, &s->timer, (uint32_t)(when > now ? when - now : 0), on_stream_timer);
    else
        loop_timer_stop(s->r->t->loop, &s->timer);
}

static void on_stream_timer(struct loop *l, struct loop_timer *tm)
{
    (void)l;
    settle(container_of(tm, struct rstream, timer));
}

/* ---- the stream's io ---------------------------------------------------------------- */

static bool io_send(void *ctx, const struct tunnel_frame *f)
{
    struct rstream *s = ctx;
    if (!s->peer[0] || s->accept_owed) /* the peer first hears of the stream from TF_ACCEPT */
        return s->r->blocked = true, false;
    return send_frame_to(s->r, s->peer, f);
}

static bool io_write(void *ctx, const uint8_t *p, size_t n)
{
    struct rstream *s = ctx;
    if (!s->c)
        return true; /* the TCP side is gone: the stream resets or ends on its own */
    conn_write(s->c, p, n);
    return !conn_over_high_water(s->c);
}

static void io_shutdown_write(void *ctx)
{
    struct rstream *s = ctx;
    if (!s->c)
        return;
    if (conn_pending(s->c))
        s->shut_pending = true; /* after the last byte: on_drain */
    else
        shutdown(s->c->io.fd, SHUT_WR);
}

static void io_read_pause(void *ctx, bool pause)
{
    struct rstream *s = ctx;
    if (!s->c || s->eof || (s->local && !s->accepted))
        return; /* an ended input stays ended; an unanswered open stays held */
    pause ? conn_pause_read(s->c) : conn_resume_read(s->c);
}

static void io_reset(void *ctx, const char *why)
{
    struct rstream *s = ctx;
    struct logline l;
    if (log_begin(&l, LOGL_WARN, "tunnel stream reset")) {
        log_uint(&l, "stream", s->id);
        log_str(&l, "reason", why);
        log_end(&l);
    }
    if (s->c)
        tunnel_conn_reset(s->c);
    s->c = NULL;
}

static const struct tunnel_stream_io stream_io = {
    .send = io_send, .write = io_write, .shutdown_write = io_shutdown_write, .read_pause = io_read_pause,
    .reset = io_reset};

/* ---- the TCP side ------------------------------------------------------------------- */

static size_t tcp_data(struct conn *c, const uint8_t *p, size_t n)
{
    struct rstream *s = c->owner;
    tunnel_stream_input(s->st, p, n, now_ms(s->r));
    settle(s);
    return n;
}

static void tcp_drain(struct conn *c)
{
    struct rstream *s = c->owner;
    if (s->shut_pending && !conn_pending(c)) {
        shutdown(c->io.fd, SHUT_WR);
        s->shut_pending = false;
    }
    tunnel_stream_drained(s->st, now_ms(s->r));
    settle(s);
}

static void tcp_connected(struct conn *c)
{
    struct rstream *s = c->owner;
    s->accepted = s->accept_owed = true;
    send_accept(s);
    tunnel_stream_pump(s->st, now_ms(s->r));
    settle(s);
}

static void tcp_closed(struct conn *c, int err)
{
    struct rstream *s = c->owner;
    log_msgf(LOGL_DEBUG, "tunnel: stream %016llx: TCP closed (%s)", (unsigned long long)s->id,
             err ? strerror(err) : s->eof ? "after EOF" : "EOF");
    s->c = NULL;
    s->shut_pending = false;
    if (err || !s->eof) /* not the end of two half-closes: the TCP side failed */
        tunnel_stream_abort(s->st, err ? strerror(err) : "closed", now_ms(s->r));
    settle(s);
}

static void tcp_eof(struct conn *c)
{
    struct rstream *s = c->owner;
    log_msgf(LOGL_DEBUG, "tunnel: stream %016llx: TCP EOF", (unsigned long long)s->id);
    s->eof = true;
    tunnel_stream_input_eof(s->st, now_ms(s->r));
    settle(s);
}

static const struct conn_cbs tcp_cbs = {
    .on_data = tcp_data, .on_drain = tcp_drain, .on_connected = tcp_connected, .on_close = tcp_closed,
    .on_eof = tcp_eof};

static struct rstream *stream_new(struct rel *r, uint64_t id, bool local)
{
    struct rstream *s = calloc(1, sizeof(*s));
    if (!s || !(s->st = tunnel_stream_new(id, &r->scfg, &stream_io, s))) {
        free(s);
        log_msgf(LOGL_ERROR, "tunnel: out of memory for a stream");
        return NULL;
    }
    s->r = r, s->id = id, s->local = local;
    struct rstream **b = bucket_of(r, id);
    s->next = *b;
    *b = s;
    r->t->stats.streams_open++;
    r->t->stats.streams_total++;
    return s;
}

static void attach(struct rstream *s, struct conn *c)
{
    s->c = c;
    c->high_water = s->r->scfg.window ? s->r->scfg.window : 256 * 1024;
}

/* ---- opening: the local side -------------------------------------------------------- */

static void publish_open(struct rstream *s)
{
    struct rel *r = s->r;
    const struct tunnel_config *cfg = r->t->cfg;
    struct tunnel_open o = {.stream = s->id, .port = s->port, .ts = (uint64_t)time(NULL)};
    memcpy(o.reply, r->topic, sizeof(o.reply));
    char msg[TUNNEL_MAX_TOPIC + 256];
    size_t n = tunnel_open_encode(&o, cfg->keylen ? cfg->key : NULL, cfg->keylen, msg, sizeof(msg));
    ASSERT(n > 0);
    if (!tunnel_publish(r->t, cfg->control, msg, n, 1))
        r->blocked = true; /* again on the next drain or connection, as long as it is not accepted */
}

static void rel_accept(struct tunnel *t, int fd)
{
    struct rel *r = t->mode_state;
    if (t->stats.streams_open >= MAX_STREAMS) {
        t->stats.refused++; /* each holds a socket and windows: past the cap, reset at once */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
        return;
    }
    struct rstream *s = stream_new(r, tunnel_random_u64(), true);
    struct conn *c = s ? conn_tcp_accept(t->loop, fd, &tcp_cbs, s) : NULL;
    if (!c) {
        if (s)
            tunnel_stream_abort(s->st, "out of memory", now_ms(r)), settle(s);
        close(fd);
        return;
    }
    attach(s, c);
    conn_pause_read(c); /* held until the remote side accepts */
    s->port = t->rport;
    s->open_deadline = now_ms(r) + (t->cfg->give_up_s ? t->cfg->give_up_s * 500u : OPEN_WAIT_MS);
    log_msgf(LOGL_INFO, "tunnel: stream %016llx opened to the remote port %u", (unsigned long long)s->id, s->port);
    publish_open(s);
    settle(s);
}

/* TF_ACCEPT on the local side: the remote's data topic, and the reads go. */
static void accepted(struct rstream *s, const struct tunnel_frame *f)
{
    if (!s->local || s->accepted)
        return; /* a duplicate */
    char topic[TUNNEL_MAX_TOPIC + 1];
    if (!accept_topic(s->r, f, topic)) {
        log_msgf(LOGL_WARN, "tunnel: stream %016llx: an ACCEPT with a wrong MAC or no data topic of ours dropped",
                 (unsigned long long)s->id);
        return;
    }
    memcpy(s->peer, topic, sizeof(topic));
    s->accepted = true;
    if (s->c)
        conn_resume_read(s->c);
    tunnel_stream_pump(s->st, now_ms(s->r));
}

/* ---- opening: the remote side ------------------------------------------------------- */

/* A keyed open is valid for TUNNEL_CONTROL_SKEW seconds around its ts:
 * every one taken is remembered that long, so a captured open replayed
 * later opens nothing (the tombs remember only the last TOMBS streams).
 * Opens from before this process started cannot be checked that way and
 * are refused; MAX_SEEN bounds the memory, refusing ("busy") past it. */
struct seen {
    uint64_t id, until;
    struct seen *next;
};

/* Whether o was taken before; else it is remembered now.  -1: no room. */
static int seen_before(struct rel *r, const struct tunnel_open *o, uint64_t now)
{
    struct seen **pp = &r->seen[(o->stream ^ o->stream >> 32) % BUCKETS];
    while (*pp) {
        struct seen *e = *pp;
        if (e->until < now) { /* out of the window: a replay of it is stale anyway */
            *pp = e->next;
            free(e);
            r->nseen--;
            continue;
        }
        if (e->id == o->stream)
            return 1;
        pp = &e->next;
    }
    struct seen *e = r->nseen < MAX_SEEN ? malloc(sizeof(*e)) : NULL;
    if (!e)
        return -1;
    *e = (struct seen){.id = o->stream, .until = o->ts + TUNNEL_CONTROL_SKEW, .next = *pp};
    *pp = e;
    r->nseen++;
    return 0;
}

static void seen_free(struct rel *r)
{
    for (unsigned i = 0; i < BUCKETS; i++)
        while (r->seen[i]) {
            struct seen *e = r->seen[i];
            r->seen[i] = e->next;
            free(e);
        }
    r->nseen = 0;
}

static void refused(struct rel *r, const char *why, const struct tunnel_open *o, const char *rst_to)
{
    r->t->stats.refused++;
    uint32_t left = 0;
    struct logline l;
    if (log_limit_take(&r->refuse_budget, now_ms(r), REFUSE_LOG_BURST, &left) &&
        log_begin(&l, LOGL_WARN, "tunnel open refused")) {
        log_str(&l, "reason", why);
        if (o && o->port)
            log_uint(&l, "port", o->port);
        if (left)
            log_uint(&l, "left_out", left);
        log_end(&l);
    }
    if (rst_to)
        send_rst(r, rst_to, o->stream, why);
}

static void dial(struct rel *r, const struct tunnel_open *o)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(o->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct rstream *s = stream_new(r, o->stream, false);
    if (!s)
        return;
    memcpy(s->peer, o->reply, sizeof(s->peer));
    s->port = o->port;
    int err = 0;
    struct conn *c = conn_tcp_dial(r->t->loop, (struct sockaddr *)&sa, sizeof(sa), &tcp_cbs, s, &err);
    log_msgf(LOGL_INFO, "tunnel: stream %016llx to 127.0.0.1:%u", (unsigned long long)s->id, s->port);
    if (c)
        attach(s, c);
    else { /* the RST tells the opener why */
        s->accept_owed = false;
        tunnel_stream_abort(s->st, err ? strerror(err) : "cannot connect", now_ms(r));
    }
    settle(s);
}

static void on_open(struct rel *r, const struct mqtt_publish *pub)
{
    const struct tunnel_config *cfg = r->t->cfg;
    struct tunnel_open o = {0};
    enum tunnel_open_result res = tunnel_open_decode(pub->payload.p, pub->payload.len, cfg->keylen ? cfg->key : NULL,
                                                     cfg->keylen, (uint64_t)time(NULL), &o);
    bool reply_ok = res != TUNNEL_OPEN_MALFORMED && tunnel_topic_ok(r->t, o.reply, strlen(o.reply)) &&
                    strcmp(o.reply, r->topic) != 0;
    if (res != TUNNEL_OPEN_OK)
        return refused(r, tunnel_open_result_name(res), &o, res == TUNNEL_OPEN_STALE && reply_ok ? o.reply : NULL);
    if (!reply_ok)
        return refused(r, "reply topic not a data topic under the control topic's level", &o, NULL);
    struct rstream *s = find(r, o.stream);
    if (s || tomb_find(r, o.stream)) { /* a redelivered open */
        if (s && s->accepted && !s->heard && !strcmp(s->peer, o.reply))
            s->accept_owed = true, send_accept(s);
        return;
    }
    if (!tunnel_config_allows(cfg, o.port))
        return refused(r, "port not allowed", &o, o.reply);
    if (r->t->stats.streams_open >= MAX_STREAMS)
        return refused(r, "too many streams", &o, o.reply);
    if (cfg->keylen) {
        uint64_t now = (uint64_t)time(NULL);
        if (o.ts + START_SKEW_S < r->started)
            return refused(r, "stale (sent before this side started)", &o, o.reply);
        int seen = seen_before(r, &o, now);
        if (seen != 0)
            return refused(r, seen > 0 ? "replayed" : "busy", &o, seen > 0 ? NULL : o.reply);
    }
    dial(r, &o);
}

/* ---- frames ------------------------------------------------------------------------- */

/* A frame for a stream we do not have: answer what can be answered. */
static void orphan(struct rel *r, const struct tunnel_frame *f)
{
    const struct tomb *tb = tomb_find(r, f->stream);
    if (tb && tb->done && f->type == TF_FIN) { /* our last ACK was lost: the stream did end */
        struct tunnel_frame ack = {.type = TF_ACK, .flags = TF_FIN_SEEN, .stream = f->stream, .offset = f->offset};
        send_frame_to(r, tb->peer, &ack);
    } else if (tb && !tb->done && f->type != TF_RST)
        send_rst(r, tb->peer, f->stream, "stream reset");
    else if (!tb && f->type == TF_ACCEPT) { /* an open we gave up on: the RST only to a genuine peer */
        char topic[TUNNEL_MAX_TOPIC + 1];
        if (accept_topic(r, f, topic))
            send_rst(r, topic, f->stream, "no such stream");
    } else if (!tb)
        log_msgf(LOGL_DEBUG, "tunnel: a frame for an unknown stream %016llx", (unsigned long long)f->stream);
}

static void on_frame(struct rel *r, const struct mqtt_publish *pub)
{
    struct tunnel_frame f;
    if (!tunnel_frame_decode(pub->payload.p, pub->payload.len, &f)) {
        log_msgf(LOGL_DEBUG, "tunnel: a malformed frame (%u bytes) dropped", pub->payload.len);
        return;
    }
    struct rstream *s = find(r, f.stream);
    if (!s)
        return orphan(r, &f);
    if (f.type == TF_ACCEPT)
        accepted(s, &f);
    else {
        s->heard = true;
        tunnel_stream_frame(s->st, &f, now_ms(r));
    }
    settle(s);
}

static bool topic_is(const struct mqtt_publish *pub, const char *topic)
{
    return pub->topic.len == strlen(topic) && !memcmp(pub->topic.p, topic, pub->topic.len);
}

static void rel_message(struct tunnel *t, const struct mqtt_publish *pub)
{
    struct rel *r = t->mode_state;
    if (topic_is(pub, r->topic))
        on_frame(r, pub);
    else if (!t->local && topic_is(pub, t->cfg->control))
        on_open(r, pub);
}

/* ---- the connection ----------------------------------------------------------------- */

/* fn on every stream; fn may free the stream it is given. */
static void each_stream(struct rel *r, void (*fn)(struct rstream *s))
{
    for (unsigned i = 0; i < BUCKETS; i++)
        for (struct rstream *s = r->buckets[i], *next; s; s = next) {
            next = s->next;
            fn(s);
        }
}

static void pump_one(struct rstream *s)
{
    if (s->local && !s->accepted)
        publish_open(s);
    if (s->accept_owed)
        send_accept(s);
    tunnel_stream_pump(s->st, now_ms(s->r));
    settle(s);
}

static void resend_one(struct rstream *s)
{
    if (s->local && !s->accepted)
        publish_open(s);
    if (!s->local && s->accepted && !s->heard)
        s->accept_owed = true; /* it may have died with the last connection */
    if (s->accept_owed)
        send_accept(s);
    tunnel_stream_resend(s->st, now_ms(s->r));
    settle(s);
}

static void rel_drain(struct tunnel *t)
{
    struct rel *r = t->mode_state;
    if (!r || !r->blocked)
        return;
    r->blocked = false;
    each_stream(r, pump_one);
}

static void rel_ready(struct tunnel *t)
{
    struct rel *r = t->mode_state;
    tunnel_subscribe(t, r->topic);
    if (!t->local)
        tunnel_subscribe(t, t->cfg->control);
    r->blocked = false;
    uint64_t before = t->stats.resends, n = t->stats.streams_open;
    each_stream(r, resend_one);
    if (n)
        log_msgf(LOGL_INFO, "tunnel: resending what %llu stream(s) had unacknowledged: %llu frame(s)",
                 (unsigned long long)n, (unsigned long long)(t->stats.resends - before));

}

static int rel_start(struct tunnel *t)
{
    struct rel *r = calloc(1, sizeof(*r));
    if (!r)
        return log_msgf(LOGL_ERROR, "tunnel: out of memory"), -1;
    r->t = t;
    r->started = (uint64_t)time(NULL);
    r->scfg = (struct tunnel_stream_cfg){.window = t->cfg->window, .chunk = t->cfg->chunk,
                                         .give_up_ms = t->cfg->give_up_s * 1000u};
    char node[17];
    tunnel_random_letters(node, 16, TUNNEL_LOWER);
    snprintf(r->topic, sizeof(r->topic), "%.216s/mgt-%s", t->root, node);
    t->mode_state = r;
    if (!t->local && !t->cfg->nallow)
        log_msgf(LOGL_WARN, "tunnel: \"allow\" is empty: every open will be refused");
    log_msgf(LOGL_INFO, "tunnel: data topic %s", r->topic);
    return 0;
}

static void stop_one(struct rstream *s)
{
    if (!tunnel_stream_done(s->st) && !tunnel_stream_reset(s->st))
        tunnel_stream_abort(s->st, "shutting down", now_ms(s->r)); /* an RST to the peer */
    stream_free(s);
}

static void rel_stop(struct tunnel *t)
{
    struct rel *r = t->mode_state;
    if (!r)
        return;
    each_stream(r, stop_one);
    seen_free(r);
    free(r);
    t->mode_state = NULL;
}

const struct tunnel_mode tunnel_reliable = {
    .name = "reliable", .start = rel_start, .stop = rel_stop, .on_ready = rel_ready,
    .on_message = rel_message, .on_drain = rel_drain, .on_accept = rel_accept};
