/*
 * The reliable tunnel's pure parts: the frame and open-message codecs
 * (tunnel/frame.c) and the stream state machine (tunnel/stream.c).
 *
 * Streams are tested in pairs, back to back through a simulated broker: a
 * queue of encoded frames that drops, duplicates and reorders them from a
 * fixed pseudo-random sequence, refuses sends now and then, and
 * "disconnects" (everything in flight is lost, then both streams get
 * tunnel_stream_resend).  Each side's TCP end is fake: its reads come from
 * a seeded byte generator, its writes are hashed and may be refused (over
 * the mark) until the test drains them.  Time is simulated.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tunnel/frame.h"
#include "tunnel/stream.h"

/* ---- deterministic randomness and hashing ------------------------------------ */

struct rng {
    uint64_t s;
};

static uint64_t rnd(struct rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ull;
}

static uint32_t below(struct rng *r, uint32_t n) { return n ? (uint32_t)(rnd(r) % n) : 0; }

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

#define FNV_START 14695981039346656037ull

/* ---- the simulated broker and TCP ends --------------------------------------- */

struct msg {
    uint8_t *bytes;
    size_t len;
    int to;
};

struct broker {
    struct msg *q;
    size_t n, cap;
    struct rng rng;
    unsigned drop_pct, dup_pct, refuse_pct; /* refuse: send returns false */
    unsigned reorder;                       /* the next message is one of the first `reorder` */
    bool down;
    unsigned rst_frames; /* RST frames sent, either way */
};

struct sim;

struct side {
    struct sim *sim;
    int idx;
    struct tunnel_stream *st;
    struct rng src;               /* the bytes this side's TCP end reads */
    uint64_t total, read, hash_out;
    bool eof_given, paused;
    uint64_t max_buffered;        /* read from TCP and not acknowledged, at most */
    uint64_t received, hash_in;   /* written to this side's TCP end */
    unsigned refuse_pct;          /* write returns false */
    bool blocked;
    int shutdowns, resets, pause_flips;
    bool write_after_shutdown;
};

struct sim {
    struct broker b;
    struct side s[2];
    struct rng rng;
    uint64_t now;
    uint32_t max_read;
    bool whole_streams; /* each side's TCP end reads `total` bytes, then EOF */
    struct tunnel_stream_cfg cfg;
    uint32_t window1; /* side 1's window when its config differs (sim_side_cfg), else 0 */
};

static void push(struct broker *b, const uint8_t *p, size_t len, int to)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->q = realloc(b->q, b->cap * sizeof(*b->q));
        if (!b->q)
            abort();
    }
    uint8_t *copy = malloc(len);
    if (!copy)
        abort();
    memcpy(copy, p, len);
    b->q[b->n++] = (struct msg){.bytes = copy, .len = len, .to = to};
}

static void broker_clear(struct broker *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->q[i].bytes);
    b->n = 0;
}

static bool io_send(void *ctx, const struct tunnel_frame *f)
{
    struct side *s = ctx;
    struct broker *b = &s->sim->b;
    if (b->down || below(&b->rng, 100) < b->refuse_pct)
        return false;
    uint8_t out[TUNNEL_FRAME_HEAD + TUNNEL_MAX_CHUNK];
    CHECK(f->len <= TUNNEL_MAX_CHUNK && f->stream == tunnel_stream_id(s->st));
    size_t n = tunnel_frame_encode(f, out);
    b->rst_frames += f->type == TF_RST;
    push(b, out, n, 1 - s->idx);
    return true;
}

static bool io_write(void *ctx, const uint8_t *p, size_t n)
{
    struct side *s = ctx;
    s->write_after_shutdown |= s->shutdowns > 0;
    s->hash_in = fnv(s->hash_in, p, n);
    s->received += n;
    if (!s->blocked && below(&s->sim->rng, 100) < s->refuse_pct)
        s->blocked = true;
    return !s->blocked;
}

static void io_shutdown(void *ctx)
{
    struct side *s = ctx;
    s->shutdowns++;
    if (s->sim->whole_streams)
        CHECK_EQ_INT(s->received, s->sim->s[1 - s->idx].total); /* after every byte */
}

static void io_pause(void *ctx, bool pause)
{
    struct side *s = ctx;
    CHECK(s->paused != pause); /* only real flips */
    s->paused = pause;
    s->pause_flips++;
}

static void io_reset(void *ctx, const char *why)
{
    CHECK(why && strlen(why) <= TUNNEL_MAX_REASON);
    ((struct side *)ctx)->resets++;
}

static const struct tunnel_stream_io sim_io = {
    .send = io_send, .write = io_write, .shutdown_write = io_shutdown, .read_pause = io_pause, .reset = io_reset};

static void sim_init(struct sim *sim, uint64_t seed, const struct tunnel_stream_cfg *cfg, uint64_t total)
{
    *sim = (struct sim){.rng = {seed}, .b = {.rng = {seed * 31 + 7}, .reorder = 1}, .now = 1000, .max_read = 64 * 1024};
    sim->cfg = cfg ? *cfg : (struct tunnel_stream_cfg){0};
    for (int i = 0; i < 2; i++) {
        struct side *s = &sim->s[i];
        *s = (struct side){.sim = sim, .idx = i, .src = {seed + 1000u * (unsigned)i + 1}, .total = total,
                           .hash_out = FNV_START, .hash_in = FNV_START};
        s->st = tunnel_stream_new(0x1234abcdull, cfg, &sim_io, s);
        CHECK(s->st != NULL);
    }
}

/* Side idx gets its own config (windows and chunks are configured per side). */
static void sim_side_cfg(struct sim *sim, int idx, const struct tunnel_stream_cfg *cfg)
{
    tunnel_stream_free(sim->s[idx].st);
    sim->s[idx].st = tunnel_stream_new(0x1234abcdull, cfg, &sim_io, &sim->s[idx]);
    CHECK(sim->s[idx].st != NULL);
    if (idx == 1)
        sim->window1 = cfg->window ? cfg->window : 256 * 1024;
}

static void sim_free(struct sim *sim)
{
    for (int i = 0; i < 2; i++)
        tunnel_stream_free(sim->s[i].st);
    broker_clear(&sim->b);
    free(sim->b.q);
}

/* ---- driving the simulation ---------------------------------------------------- */

static uint32_t window_of(const struct sim *sim)
{
    uint32_t w = sim->cfg.window ? sim->cfg.window : 256 * 1024;
    return sim->window1 > w ? sim->window1 : w;
}

/* The TCP end reads a random amount, unless paused, then EOF. */
static void feed(struct sim *sim, struct side *s)
{
    if (tunnel_stream_reset(s->st) || s->paused || s->eof_given)
        return;
    if (s->read == s->total) {
        s->eof_given = true;
        tunnel_stream_input_eof(s->st, sim->now);
        return;
    }
    uint8_t buf[64 * 1024];
    uint64_t left = s->total - s->read;
    size_t n = 1 + below(&sim->rng, sim->max_read);
    n = n < left ? n : (size_t)left;
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)rnd(&s->src);
    s->hash_out = fnv(s->hash_out, buf, n);
    s->read += n;
    tunnel_stream_input(s->st, buf, n, sim->now);
    struct tunnel_stream_stats stats;
    tunnel_stream_get_stats(s->st, &stats);
    uint64_t buffered = s->read - stats.bytes_out;
    s->max_buffered = buffered > s->max_buffered ? buffered : s->max_buffered;
}

/* One message out of the queue, perhaps out of order, perhaps lost or
 * delivered twice; decoded as the runtime would. */
static void deliver_one(struct sim *sim)
{
    struct broker *b = &sim->b;
    size_t i = below(&b->rng, b->n < b->reorder ? (uint32_t)b->n : b->reorder);
    struct msg m = b->q[i];
    memmove(b->q + i, b->q + i + 1, (b->n - i - 1) * sizeof(*b->q));
    b->n--;
    if (below(&b->rng, 100) < b->dup_pct)
        push(b, m.bytes, m.len, m.to);
    struct tunnel_frame f;
    bool ok = tunnel_frame_decode(m.bytes, m.len, &f);
    CHECK(ok);
    if (ok && below(&b->rng, 100) >= b->drop_pct)
        tunnel_stream_frame(sim->s[m.to].st, &f, sim->now);
    free(m.bytes);
}

static void deliver(struct sim *sim)
{
    for (size_t n = sim->b.n; n > 0 && sim->b.n > 0; n--)
        deliver_one(sim);
}

/* A new MQTT connection: what was in flight is gone. */
static void reconnect(struct sim *sim)
{
    broker_clear(&sim->b);
    sim->b.down = false;
    for (int i = 0; i < 2; i++)
        tunnel_stream_resend(sim->s[i].st, sim->now);
}

static void tick(struct sim *sim, unsigned disconnect_every)
{
    for (int i = 0; i < 2; i++) {
        struct side *s = &sim->s[i];
        feed(sim, s);
        if (s->blocked && below(&sim->rng, 4) == 0) {
            s->blocked = false;
            tunnel_stream_drained(s->st, sim->now);
        }
    }
    deliver(sim);
    if (disconnect_every && below(&sim->rng, disconnect_every) == 0)
        sim->b.down = true;
    if (sim->b.down && below(&sim->rng, 20) == 0)
        reconnect(sim);
    sim->now += 1 + below(&sim->rng, 3);
    for (int i = 0; i < 2; i++) {
        tunnel_stream_pump(sim->s[i].st, sim->now);
        tunnel_stream_poll(sim->s[i].st, sim->now);
    }
}

static bool both_done(const struct sim *sim)
{
    return tunnel_stream_done(sim->s[0].st) && tunnel_stream_done(sim->s[1].st);
}

/* Runs until both streams are done (or reset, or too long); true if done. */
static bool run(struct sim *sim, unsigned disconnect_every, unsigned max_ticks)
{
    for (unsigned t = 0; t < max_ticks; t++) {
        if (both_done(sim) || tunnel_stream_reset(sim->s[0].st) || tunnel_stream_reset(sim->s[1].st))
            break;
        tick(sim, disconnect_every);
    }
    return both_done(sim);
}

/* ---- the transfers ---------------------------------------------------------------- */

static void check_transfer(struct sim *sim)
{
    for (int i = 0; i < 2; i++) {
        struct side *s = &sim->s[i], *peer = &sim->s[1 - i];
        struct tunnel_stream_stats stats;
        tunnel_stream_get_stats(s->st, &stats);
        CHECK(tunnel_stream_done(s->st));
        CHECK(!tunnel_stream_reset(s->st));
        CHECK_EQ_INT(s->resets, 0);
        CHECK_EQ_INT(s->shutdowns, 1);
        CHECK(!s->write_after_shutdown);
        CHECK_EQ_INT(peer->received, s->total);
        CHECK(peer->hash_in == s->hash_out);
        CHECK_EQ_INT(stats.bytes_out, s->total);
        CHECK_EQ_INT(stats.bytes_in, peer->total);
        /* read_pause keeps what waits for an ACK within a window (plus the read that filled it) */
        CHECK(s->max_buffered <= (uint64_t)window_of(sim) + sim->max_read);
    }
}

static void transfer2(uint64_t seed, const struct tunnel_stream_cfg *cfg, const struct tunnel_stream_cfg *cfg1,
                      uint64_t total, unsigned drop, unsigned dup, unsigned refuse, unsigned disconnect_every)
{
    struct sim sim;
    sim_init(&sim, seed, cfg, total);
    if (cfg1)
        sim_side_cfg(&sim, 1, cfg1);
    sim.b.reorder = drop ? 4 : 1;
    sim.whole_streams = true;
    sim.b.drop_pct = drop;
    sim.b.dup_pct = dup;
    sim.b.refuse_pct = refuse;
    sim.s[0].refuse_pct = sim.s[1].refuse_pct = refuse;
    bool done = run(&sim, disconnect_every, 2000000);
    CHECK(done);
    check_transfer(&sim);
    struct tunnel_stream_stats a, b;
    tunnel_stream_get_stats(sim.s[0].st, &a);
    tunnel_stream_get_stats(sim.s[1].st, &b);
    if (!drop && !disconnect_every)
        CHECK_EQ_INT(a.resent + b.resent, 0);
    else if (total)
        CHECK(a.resent + b.resent > 0);
    if (dup && total)
        CHECK(a.dups + b.dups > 0);
    if (refuse && total)
        CHECK(sim.s[0].pause_flips > 0 && sim.s[1].pause_flips > 0);
    printf("transfer seed %llu: %llu bytes each way at t=%llu ms, resent %llu+%llu, dups %llu+%llu\n",
           (unsigned long long)seed, (unsigned long long)total, (unsigned long long)sim.now,
           (unsigned long long)a.resent, (unsigned long long)b.resent, (unsigned long long)a.dups,
           (unsigned long long)b.dups);
    sim_free(&sim);
}

static void transfer(uint64_t seed, const struct tunnel_stream_cfg *cfg, uint64_t total, unsigned drop, unsigned dup,
                     unsigned refuse, unsigned disconnect_every)
{
    transfer2(seed, cfg, NULL, total, drop, dup, refuse, disconnect_every);
}

static void test_transfers(void)
{
    const uint64_t mib = 1024 * 1024;
    transfer(1, NULL, 5 * mib, 0, 0, 0, 0);                   /* a clean broker */
    transfer(2, NULL, 5 * mib, 5, 3, 5, 3000);                /* lossy, refusing, disconnecting */
    struct tunnel_stream_cfg small = {.window = 16 * 1024, .chunk = 1000, .rto_ms = 200, .ack_delay_ms = 5};
    for (uint64_t seed = 3; seed < 9; seed++)
        transfer(seed, &small, 1 * mib, 10, 5, 10, 2000);     /* many small frames */
    transfer(9, &small, 0, 5, 5, 5, 500);                     /* nothing at all: FIN both ways */
    /* A window smaller than a chunk: frames are cut at the window, and the
     * receiver, which resets past its window, never sees more. */
    struct tunnel_stream_cfg tiny = {.window = 3000, .chunk = 32 * 1024, .rto_ms = 200, .ack_delay_ms = 5};
    transfer(20, &tiny, 256 * 1024, 0, 0, 0, 0);
    transfer(21, &tiny, 256 * 1024, 10, 5, 10, 2000);
    /* Windows and chunks differ per side: each sender keeps within the
     * other's window, from the first byte (before any ACK) on. */
    struct tunnel_stream_cfg big = {.window = 1024 * 1024, .chunk = 64 * 1024, .rto_ms = 200, .ack_delay_ms = 5};
    struct tunnel_stream_cfg least = {.window = 4096, .chunk = 512, .rto_ms = 200, .ack_delay_ms = 5};
    transfer2(22, &big, &least, 1 * mib, 0, 0, 0, 0);
    transfer2(23, &least, &big, 1 * mib, 10, 5, 10, 2000);
    transfer2(24, &big, &small, 1 * mib, 10, 5, 10, 2000);
}

/* ---- directed stream tests ---------------------------------------------------------- */

/* Only deliveries and timers, no TCP reads: for the tests that feed by hand. */
static void settle(struct sim *sim, unsigned ticks)
{
    for (unsigned t = 0; t < ticks; t++) {
        deliver(sim);
        sim->now += 1;
        for (int i = 0; i < 2; i++)
            tunnel_stream_poll(sim->s[i].st, sim->now);
    }
}

static void input_bytes(struct sim *sim, int side, size_t n)
{
    uint8_t buf[4096] = {0};
    while (n) {
        size_t k = n < sizeof(buf) ? n : sizeof(buf);
        tunnel_stream_input(sim->s[side].st, buf, k, sim->now);
        n -= k;
    }
}

static uint64_t acked(const struct sim *sim, int side)
{
    struct tunnel_stream_stats st;
    tunnel_stream_get_stats(sim->s[side].st, &st);
    return st.bytes_out;
}

static void test_abort_resets_both(void)
{
    struct sim sim;
    sim_init(&sim, 11, NULL, 0);
    input_bytes(&sim, 0, 5000);
    settle(&sim, 50);
    tunnel_stream_abort(sim.s[1].st, "connection refused", sim.now);
    settle(&sim, 10);
    CHECK(tunnel_stream_reset(sim.s[0].st) && tunnel_stream_reset(sim.s[1].st));
    CHECK(!tunnel_stream_done(sim.s[0].st));
    CHECK_EQ_INT(sim.s[0].resets, 1); /* the peer's RST closes our TCP side with a RST */
    CHECK_EQ_INT(sim.s[1].resets, 0); /* abort: the runtime's TCP side already failed */
    CHECK_EQ_INT(sim.s[0].shutdowns + sim.s[1].shutdowns, 0);
    CHECK_EQ_INT(sim.b.rst_frames, 1);
    /* dead: later input, frames and timers do nothing */
    input_bytes(&sim, 0, 10);
    CHECK_EQ_INT(tunnel_stream_poll(sim.s[0].st, sim.now + 100000), 0);
    CHECK_EQ_INT(sim.b.n, 0);
    sim_free(&sim);
}

/* A frame that breaks the rules resets the receiver, which tells the peer. */
static void violation(const struct tunnel_frame *bad, int expect_rst_frames)
{
    struct sim sim;
    sim_init(&sim, 12, NULL, 0);
    input_bytes(&sim, 0, 3000);
    settle(&sim, 50);
    tunnel_stream_frame(sim.s[0].st, bad, sim.now);
    settle(&sim, 10);
    CHECK(tunnel_stream_reset(sim.s[0].st) && tunnel_stream_reset(sim.s[1].st));
    CHECK_EQ_INT(sim.s[0].resets, 1);
    CHECK_EQ_INT(sim.s[1].resets, 1);
    CHECK_EQ_INT(sim.s[0].shutdowns + sim.s[1].shutdowns, 0);
    CHECK_EQ_INT(sim.b.rst_frames, expect_rst_frames);
    sim_free(&sim);
}

static void test_violations(void)
{
    uint64_t id = 0x1234abcdull;
    violation(&(struct tunnel_frame){.type = TF_ACK, .stream = id, .offset = 3001, .window = 1000}, 1);
    violation(&(struct tunnel_frame){.type = TF_ACK, .flags = TF_FIN_SEEN, .stream = id, .offset = 3000}, 1);
}

static void test_data_past_fin(void)
{
    struct sim sim;
    sim_init(&sim, 13, NULL, 0);
    uint64_t id = 0x1234abcdull;
    uint8_t x[10] = {0};
    tunnel_stream_frame(sim.s[0].st, &(struct tunnel_frame){.type = TF_FIN, .stream = id, .offset = 5}, sim.now);
    CHECK(!tunnel_stream_reset(sim.s[0].st));
    tunnel_stream_frame(sim.s[0].st, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .payload = x, .len = 10},
                        sim.now);
    CHECK(tunnel_stream_reset(sim.s[0].st));
    CHECK_EQ_INT(sim.s[0].resets, 1);
    CHECK_EQ_INT(sim.s[0].received, 0);
    /* a FIN that moves is refused too */
    struct sim sim2;
    sim_init(&sim2, 14, NULL, 0);
    tunnel_stream_frame(sim2.s[0].st, &(struct tunnel_frame){.type = TF_FIN, .stream = id, .offset = 5}, sim2.now);
    tunnel_stream_frame(sim2.s[0].st, &(struct tunnel_frame){.type = TF_FIN, .stream = id, .offset = 6}, sim2.now);
    CHECK(tunnel_stream_reset(sim2.s[0].st));
    sim_free(&sim);
    sim_free(&sim2);
}

static void test_give_up(void)
{
    struct sim sim;
    struct tunnel_stream_cfg cfg = {.give_up_ms = 10000, .rto_ms = 1000};
    sim_init(&sim, 15, &cfg, 0);
    sim.b.drop_pct = 100; /* the peer is silent */
    uint64_t start = sim.now;
    input_bytes(&sim, 0, 2000);
    uint64_t next = tunnel_stream_poll(sim.s[0].st, sim.now);
    CHECK_EQ_INT(next, start + 1000); /* the retransmission comes first */
    while (sim.now < start + 10000 - 1) {
        settle(&sim, 1);
        CHECK(!tunnel_stream_reset(sim.s[0].st));
    }
    struct tunnel_stream_stats st;
    tunnel_stream_get_stats(sim.s[0].st, &st);
    CHECK(st.resent >= 9); /* every rto_ms */
    settle(&sim, 1);
    CHECK(tunnel_stream_reset(sim.s[0].st));
    CHECK_EQ_INT(sim.s[0].resets, 1);
    CHECK_EQ_INT(sim.b.rst_frames, 1);
    CHECK_EQ_INT(sim.s[0].shutdowns, 0);
    /* the idle peer waits for nothing: it never gives up by itself */
    CHECK(!tunnel_stream_reset(sim.s[1].st));
    CHECK_EQ_INT(tunnel_stream_poll(sim.s[1].st, sim.now), 0);
    sim_free(&sim);
}

/* An RST that cannot go now goes on the next pump. */
static void test_rst_survives_refused_send(void)
{
    struct sim sim;
    sim_init(&sim, 16, NULL, 0);
    sim.b.down = true;
    tunnel_stream_abort(sim.s[0].st, "refused", sim.now);
    CHECK(tunnel_stream_reset(sim.s[0].st) && !tunnel_stream_flushed(sim.s[0].st));
    tunnel_stream_pump(sim.s[0].st, sim.now);
    CHECK_EQ_INT(sim.b.rst_frames, 0);
    sim.b.down = false;
    tunnel_stream_pump(sim.s[0].st, sim.now);
    CHECK_EQ_INT(sim.b.rst_frames, 1);
    CHECK(tunnel_stream_flushed(sim.s[0].st));
    settle(&sim, 2);
    CHECK(tunnel_stream_reset(sim.s[1].st));
    CHECK_EQ_INT(sim.s[1].resets, 1);
    sim_free(&sim);
}

/* While the TCP side is over its mark no ACK advances; drained, it does. */
static void test_ack_withheld_while_blocked(void)
{
    struct sim sim;
    struct tunnel_stream_cfg cfg = {.window = 64 * 1024, .chunk = 4096};
    sim_init(&sim, 17, &cfg, 0);
    sim.s[1].refuse_pct = 100;
    input_bytes(&sim, 0, 4096);
    settle(&sim, 100);
    CHECK_EQ_INT(sim.s[1].received, 4096);
    CHECK_EQ_INT(acked(&sim, 0), 0);
    input_bytes(&sim, 0, 200 * 1024);
    settle(&sim, 5000);
    CHECK(sim.s[0].paused);
    CHECK_EQ_INT(acked(&sim, 0), 0);
    CHECK(sim.s[1].received <= cfg.window); /* the receiver's memory stays one window */
    CHECK(!tunnel_stream_reset(sim.s[0].st));
    sim.s[1].refuse_pct = 0;
    sim.s[1].blocked = false;
    tunnel_stream_drained(sim.s[1].st, sim.now);
    settle(&sim, 5000);
    CHECK_EQ_INT(acked(&sim, 0), 204 * 1024);
    CHECK(!sim.s[0].paused);
    CHECK_EQ_INT(sim.s[1].received, 204 * 1024);
    sim_free(&sim);
}

static bool queue_has(const struct sim *sim, uint8_t type);

/* A peer that ignores the window (or frames injected with a sniffed stream
 * id) while the TCP side does not read: the stream is reset as soon as a
 * frame ends past the last ACK sent plus the window, and the TCP side is
 * given at most that. */
static void test_window_enforced(void)
{
    struct sim sim;
    struct tunnel_stream_cfg cfg = {.window = 16 * 1024, .ack_delay_ms = 20};
    sim_init(&sim, 25, &cfg, 0);
    uint64_t id = 0x1234abcdull;
    static uint8_t x[4096];
    struct tunnel_stream *b = sim.s[1].st;
    sim.s[1].refuse_pct = 100;
    uint64_t off = 0;
    /* before any ACK the limit is 0 + window: 4 frames fill it exactly */
    while (!tunnel_stream_reset(b) && off < 128 * 1024 * 1024) {
        tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .offset = off, .payload = x, .len = 4096},
                            sim.now);
        off += 4096;
    }
    CHECK(tunnel_stream_reset(b));
    CHECK_EQ_INT(off, 16 * 1024 + 4096); /* the frame that crossed it */
    CHECK_EQ_INT(sim.s[1].received, 16 * 1024);
    CHECK_EQ_INT(sim.s[1].resets, 1);
    CHECK_EQ_INT(sim.b.rst_frames, 1);
    CHECK(!queue_has(&sim, TF_ACK)); /* nothing was acknowledged: the TCP side is over its mark */
    sim_free(&sim);

    /* After an ACK at 6000 the limit is 6000 + window; ACKs withheld while
     * blocked (duplicates are answered with the old offset) move nothing. */
    sim_init(&sim, 26, &cfg, 0);
    b = sim.s[1].st;
    tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .payload = x, .len = 4096}, sim.now);
    tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .offset = 4096, .payload = x, .len = 1904},
                        sim.now);
    tunnel_stream_poll(b, sim.now + 20); /* the delayed ACK of 6000 */
    CHECK(queue_has(&sim, TF_ACK));
    broker_clear(&sim.b);
    sim.s[1].refuse_pct = 100;
    off = 6000;
    while (off + 4000 <= 6000 + 16 * 1024) {
        tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .offset = off, .payload = x, .len = 4000},
                            sim.now);
        off += 4000;
        tunnel_stream_poll(b, sim.now + 1000);
    }
    /* a duplicate makes an ACK go, at the withheld offset */
    tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .payload = x, .len = 100}, sim.now);
    CHECK(queue_has(&sim, TF_ACK));
    CHECK(!tunnel_stream_reset(b));
    uint64_t left = 6000 + 16 * 1024 - off;
    CHECK(left > 0 && left < 4096);
    tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .offset = off, .payload = x, .len = left},
                        sim.now);
    CHECK(!tunnel_stream_reset(b)); /* exactly up to the limit */
    CHECK_EQ_INT(sim.s[1].received, 6000 + 16 * 1024);
    tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .offset = off + left, .payload = x, .len = 1},
                        sim.now);
    CHECK(tunnel_stream_reset(b));
    CHECK_EQ_INT(sim.s[1].received, 6000 + 16 * 1024);
    CHECK_EQ_INT(sim.s[1].resets, 1);
    CHECK_EQ_INT(sim.b.rst_frames, 1);
    sim_free(&sim);

    /* a frame past a gap and past the limit is refused too */
    sim_init(&sim, 27, &cfg, 0);
    tunnel_stream_frame(sim.s[1].st,
                        &(struct tunnel_frame){.type = TF_DATA, .stream = id, .offset = 16 * 1024, .payload = x, .len = 1},
                        sim.now);
    CHECK(tunnel_stream_reset(sim.s[1].st));
    CHECK_EQ_INT(sim.s[1].received, 0);
    sim_free(&sim);
}

static bool queue_has(const struct sim *sim, uint8_t type)
{
    for (size_t i = 0; i < sim->b.n; i++)
        if ((sim->b.q[i].bytes[0] & 15) == type)
            return true;
    return false;
}

/* ACKs wait ack_delay_ms after new bytes, go at once past a quarter
 * window and for a duplicate. */
static void test_ack_timing(void)
{
    struct sim sim;
    struct tunnel_stream_cfg cfg = {.window = 64 * 1024, .ack_delay_ms = 20};
    sim_init(&sim, 18, &cfg, 0);
    uint64_t id = 0x1234abcdull;
    uint8_t x[20000] = {0};
    struct tunnel_stream *b = sim.s[1].st;
    tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .payload = x, .len = 100}, sim.now);
    CHECK(!queue_has(&sim, TF_ACK));
    CHECK_EQ_INT(tunnel_stream_poll(b, sim.now), sim.now + 20);
    CHECK(!queue_has(&sim, TF_ACK));
    tunnel_stream_poll(b, sim.now + 20);
    CHECK(queue_has(&sim, TF_ACK));
    broker_clear(&sim.b);
    tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .payload = x, .len = 100}, sim.now);
    CHECK(queue_has(&sim, TF_ACK)); /* a duplicate */
    broker_clear(&sim.b);
    tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .offset = 100, .payload = x, .len = 20000},
                        sim.now);
    CHECK(queue_has(&sim, TF_ACK)); /* past a quarter window */
    broker_clear(&sim.b);
    /* past a gap: dropped, not written */
    tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .offset = 30000, .payload = x, .len = 5},
                        sim.now);
    CHECK_EQ_INT(sim.s[1].received, 20100);
    /* an overlap is trimmed */
    tunnel_stream_frame(b, &(struct tunnel_frame){.type = TF_DATA, .stream = id, .offset = 20000, .payload = x, .len = 200},
                        sim.now);
    CHECK_EQ_INT(sim.s[1].received, 20200);
    struct tunnel_stream_stats st;
    tunnel_stream_get_stats(b, &st);
    CHECK_EQ_INT(st.dups, 2);
    sim_free(&sim);
}

/* A refused send loses nothing: after pump the same frames go. */
static void test_send_refused(void)
{
    struct sim sim;
    sim_init(&sim, 19, NULL, 0);
    sim.b.down = true;
    input_bytes(&sim, 0, 100000);
    tunnel_stream_input_eof(sim.s[0].st, sim.now);
    CHECK_EQ_INT(sim.b.n, 0);
    sim.b.down = false;
    tunnel_stream_pump(sim.s[0].st, sim.now);
    CHECK(queue_has(&sim, TF_DATA)); /* the FIN follows once the peer's window let every byte go */
    settle(&sim, 100);
    CHECK_EQ_INT(sim.s[1].received, 100000);
    CHECK_EQ_INT(sim.s[1].shutdowns, 1);
    CHECK_EQ_INT(acked(&sim, 0), 100000);
    tunnel_stream_input_eof(sim.s[1].st, sim.now);
    settle(&sim, 100);
    CHECK(both_done(&sim));
    CHECK(tunnel_stream_flushed(sim.s[0].st) && tunnel_stream_flushed(sim.s[1].st));
    sim_free(&sim);
}

/* ---- the frame codec ------------------------------------------------------------------- */

static bool frame_ok(const uint8_t *p, size_t len)
{
    struct tunnel_frame f;
    return tunnel_frame_decode(p, len, &f);
}

static size_t enc(uint8_t type, uint8_t flags, uint64_t stream, const void *payload, size_t len, uint8_t *out)
{
    struct tunnel_frame f = {.type = type, .flags = flags, .stream = stream, .payload = payload, .len = len};
    return tunnel_frame_encode(&f, out);
}

static void test_frame_roundtrip(void)
{
    uint8_t out[TUNNEL_FRAME_HEAD + TUNNEL_MAX_CHUNK];
    struct tunnel_frame f = {.type = TF_DATA, .stream = 0x0102030405060708ull, .offset = 0x1112131415161718ull,
                             .payload = (const uint8_t *)"hello", .len = 5};
    size_t n = tunnel_frame_encode(&f, out);
    CHECK_EQ_INT(n, TUNNEL_FRAME_HEAD + 5);
    CHECK(out[0] == 0x11 && out[2] == 1 && out[9] == 8 && out[10] == 0x11 && out[17] == 0x18);
    struct tunnel_frame g;
    CHECK(tunnel_frame_decode(out, n, &g));
    CHECK(g.type == TF_DATA && g.stream == f.stream && g.offset == f.offset && g.len == 5);
    CHECK(memcmp(g.payload, "hello", 5) == 0 && g.payload == out + TUNNEL_FRAME_HEAD);
    f = (struct tunnel_frame){.type = TF_ACK, .flags = TF_FIN_SEEN, .stream = 9, .offset = 77, .window = 0xfffffffe};
    n = tunnel_frame_encode(&f, out);
    CHECK(tunnel_frame_decode(out, n, &g) && g.flags == TF_FIN_SEEN && g.window == 0xfffffffe && g.offset == 77);
    CHECK(out[18] == 0xff && out[21] == 0xfe);
    CHECK(frame_ok(out, enc(TF_FIN, 0, 9, NULL, 0, out)));
    CHECK(frame_ok(out, enc(TF_RST, 0, 9, NULL, 0, out)));
    CHECK(frame_ok(out, enc(TF_RST, 0, 9, "bye", 3, out)));
    CHECK(frame_ok(out, enc(TF_ACCEPT, 0, 9, "t/a", 3, out)));
}

static void test_frame_malformed(void)
{
    uint8_t out[TUNNEL_FRAME_HEAD + TUNNEL_MAX_CHUNK + 1];
    static uint8_t big[TUNNEL_MAX_CHUNK + 1];
    char topic[TUNNEL_MAX_TOPIC + 2];
    memset(topic, 'a', sizeof(topic));
    size_t n = enc(TF_FIN, 0, 9, NULL, 0, out);
    CHECK(!frame_ok(out, n - 1));                               /* short */
    out[0] = 0x23;
    CHECK(!frame_ok(out, n));                                   /* version 2 */
    for (uint8_t t = 0; t < 16; t++) {
        out[0] = (uint8_t)(0x10 | t);
        bool known = t >= TF_DATA && t <= TF_ACCEPT;
        if (!known)
            CHECK(!frame_ok(out, n));                           /* an unknown type */
    }
    CHECK(!frame_ok(out, enc(TF_FIN, 0, 0, NULL, 0, out)));    /* stream 0 */
    CHECK(!frame_ok(out, enc(TF_DATA, 1, 9, "x", 1, out)));    /* flags on DATA */
    CHECK(!frame_ok(out, enc(TF_ACK, 2, 9, NULL, 0, out)));    /* reserved flag on ACK */
    CHECK(!frame_ok(out, enc(TF_FIN, TF_FIN_SEEN, 9, NULL, 0, out)));
    CHECK(!frame_ok(out, enc(TF_ACK, 0, 9, "x", 1, out)));     /* payload on ACK */
    CHECK(!frame_ok(out, enc(TF_FIN, 0, 9, "x", 1, out)));     /* payload on FIN */
    CHECK(!frame_ok(out, enc(TF_DATA, 0, 9, NULL, 0, out)));   /* empty DATA */
    CHECK(frame_ok(out, enc(TF_DATA, 0, 9, big, TUNNEL_MAX_CHUNK, out)));
    CHECK(!frame_ok(out, enc(TF_DATA, 0, 9, big, TUNNEL_MAX_CHUNK + 1, out)));
    CHECK(!frame_ok(out, enc(TF_ACCEPT, 0, 9, NULL, 0, out))); /* empty topic */
    CHECK(frame_ok(out, enc(TF_ACCEPT, 0, 9, topic, TUNNEL_MAX_TOPIC, out)));
    CHECK(!frame_ok(out, enc(TF_ACCEPT, 0, 9, topic, TUNNEL_MAX_TOPIC + 1, out)));
    CHECK(!frame_ok(out, enc(TF_ACCEPT, 0, 9, "a/+", 3, out)));
    CHECK(!frame_ok(out, enc(TF_ACCEPT, 0, 9, "a/#", 3, out)));
    CHECK(!frame_ok(out, enc(TF_ACCEPT, 0, 9, "a\0b", 3, out)));
    CHECK(frame_ok(out, enc(TF_RST, 0, 9, big, TUNNEL_MAX_REASON, out)));
    CHECK(!frame_ok(out, enc(TF_RST, 0, 9, big, TUNNEL_MAX_REASON + 1, out)));
}

/* ---- the open message ---------------------------------------------------------------- */

static const uint8_t key[32] = "0123456789abcdef0123456789abcdef";
#define NOW 1700000000u

static enum tunnel_open_result dec(const char *s, const uint8_t *k, size_t klen, struct tunnel_open *o)
{
    return tunnel_open_decode((const uint8_t *)s, strlen(s), k, klen, NOW, o);
}

static const struct tunnel_open sample = {.stream = 0x00ab00cd00ef0012ull, .port = 22, .reply = "tun/a\"b\\c", .ts = NOW};

static void test_open_roundtrip(void)
{
    char out[1024];
    struct tunnel_open o;
    size_t n = tunnel_open_encode(&sample, NULL, 0, out, sizeof(out));
    CHECK(n > 0 && strlen(out) == n);
    CHECK(strstr(out, "\"stream\":\"00ab00cd00ef0012\"") != NULL);
    CHECK_EQ_INT(dec(out, NULL, 0, &o), TUNNEL_OPEN_OK);
    CHECK(o.stream == sample.stream && o.port == 22 && o.ts == NOW);
    CHECK_EQ_STR(o.reply, sample.reply);
    CHECK_EQ_INT(dec(out, key, sizeof(key), &o), TUNNEL_OPEN_BAD_MAC); /* keyed receiver: MAC missing */
    n = tunnel_open_encode(&sample, key, sizeof(key), out, sizeof(out));
    CHECK(n > 65 && out[64] == '.');
    CHECK_EQ_INT(dec(out, key, sizeof(key), &o), TUNNEL_OPEN_OK);
    CHECK_EQ_STR(o.reply, sample.reply);
    CHECK_EQ_INT(dec(out, NULL, 0, &o), TUNNEL_OPEN_OK); /* a keyless receiver, a keyed sender */
    CHECK(o.stream == sample.stream);
    uint8_t other[32];
    memset(other, 'k', sizeof(other));
    CHECK_EQ_INT(dec(out, other, sizeof(other), &o), TUNNEL_OPEN_BAD_MAC);
    out[70] ^= 1; /* the JSON changed under the MAC */
    CHECK_EQ_INT(dec(out, key, sizeof(key), &o), TUNNEL_OPEN_BAD_MAC);
    CHECK(o.stream == 0);
    out[70] ^= 1;
    out[3] = out[3] == 'a' ? 'b' : 'a'; /* the MAC changed */
    CHECK_EQ_INT(dec(out, key, sizeof(key), &o), TUNNEL_OPEN_BAD_MAC);
    CHECK_EQ_INT(tunnel_open_encode(&sample, key, sizeof(key), out, n), 0); /* no room for the NUL */
    CHECK_EQ_INT(tunnel_open_encode(&sample, key, sizeof(key), out, n + 1), n);
    CHECK_EQ_INT(tunnel_open_encode(&sample, NULL, 0, out, 20), 0);
    struct tunnel_open bad = sample;
    bad.port = 0;
    CHECK_EQ_INT(tunnel_open_encode(&bad, NULL, 0, out, sizeof(out)), 0);
}

static void test_open_mac_case_and_stale(void)
{
    char out[1024];
    struct tunnel_open o, t = sample;
    tunnel_open_encode(&t, key, sizeof(key), out, sizeof(out));
    for (int i = 0; i < 64; i++)
        if (out[i] >= 'a' && out[i] <= 'f')
            out[i] = (char)(out[i] - 'a' + 'A');
    CHECK_EQ_INT(dec(out, key, sizeof(key), &o), TUNNEL_OPEN_BAD_MAC); /* upper-case hex is not the MAC */
    const struct {
        int64_t delta;
        enum tunnel_open_result want;
    } cases[] = {{0, TUNNEL_OPEN_OK}, {300, TUNNEL_OPEN_OK}, {-300, TUNNEL_OPEN_OK},
                 {301, TUNNEL_OPEN_STALE}, {-301, TUNNEL_OPEN_STALE}, {-(int64_t)NOW, TUNNEL_OPEN_STALE}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        t.ts = (uint64_t)((int64_t)NOW + cases[i].delta);
        tunnel_open_encode(&t, key, sizeof(key), out, sizeof(out));
        CHECK_EQ_INT(dec(out, key, sizeof(key), &o), cases[i].want);
        CHECK_EQ_INT(dec(out, NULL, 0, &o), TUNNEL_OPEN_OK); /* no key: no clock */
    }
}

static void test_open_malformed(void)
{
    static const char *const bad[] = {
        "",
        "not json",
        "[1]",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"r\"}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":1,\"x\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":1,\"ts\":1}",
        "{\"type\":\"close\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":2,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":\"1\",\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1.0,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":true,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"0000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"000000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000AB\",\"port\":22,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"0000000000000000\",\"port\":22,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ag\",\"port\":22,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":171,\"port\":22,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":0,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":65536,\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":\"22\",\"reply\":\"r\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"a/+\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"a/#\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"a\\u0000b\",\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":7,\"ts\":1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":-1}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":1.5}",
        "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":22,\"reply\":\"r\",\"ts\":\"1\"}",
        "0000000000000000000000000000000000000000000000000000000000000000.{}",
    };
    struct tunnel_open o;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ_INT(dec(bad[i], NULL, 0, &o), TUNNEL_OPEN_MALFORMED);
        if (dec(bad[i], NULL, 0, &o) != TUNNEL_OPEN_MALFORMED)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
    }
    const char *good = "{\"ts\":1,\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":65535,\"reply\":\"r\"}";
    CHECK_EQ_INT(dec(good, NULL, 0, &o), TUNNEL_OPEN_OK); /* any key order */
    CHECK(o.stream == 0xab && o.port == 65535 && o.ts == 1);
    char topic[TUNNEL_MAX_TOPIC + 2], msg[1024];
    memset(topic, 'a', sizeof(topic));
    topic[TUNNEL_MAX_TOPIC] = '\0';
    snprintf(msg, sizeof(msg), "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":1,\"reply\":\"%s\",\"ts\":1}",
             topic);
    CHECK_EQ_INT(dec(msg, NULL, 0, &o), TUNNEL_OPEN_OK);
    topic[TUNNEL_MAX_TOPIC] = 'a';
    topic[TUNNEL_MAX_TOPIC + 1] = '\0';
    snprintf(msg, sizeof(msg), "{\"type\":\"open\",\"v\":1,\"stream\":\"00000000000000ab\",\"port\":1,\"reply\":\"%s\",\"ts\":1}",
             topic);
    CHECK_EQ_INT(dec(msg, NULL, 0, &o), TUNNEL_OPEN_MALFORMED);
    /* a NUL byte in the message itself */
    CHECK_EQ_INT(tunnel_open_decode((const uint8_t *)"{\"a\0\":1}", 8, NULL, 0, NOW, &o), TUNNEL_OPEN_MALFORMED);
    CHECK_EQ_STR(tunnel_open_result_name(TUNNEL_OPEN_OK), "ok");
    CHECK_EQ_STR(tunnel_open_result_name(TUNNEL_OPEN_MALFORMED), "malformed");
    CHECK_EQ_STR(tunnel_open_result_name(TUNNEL_OPEN_BAD_MAC), "bad_mac");
    CHECK_EQ_STR(tunnel_open_result_name(TUNNEL_OPEN_STALE), "stale");
    CHECK_EQ_STR(tunnel_open_result_name((enum tunnel_open_result)99), "unknown");
}

int main(void)
{
    test_frame_roundtrip();
    test_frame_malformed();
    test_open_roundtrip();
    test_open_mac_case_and_stale();
    test_open_malformed();
    test_ack_timing();
    test_send_refused();
    test_ack_withheld_while_blocked();
    test_window_enforced();
    test_abort_resets_both();
    test_violations();
    test_data_past_fin();
    test_give_up();
    test_rst_survives_refused_send();
    test_transfers();
    return check_done("test_tunnel_stream");
}
