/*
 * One tunnelled TCP connection in reliable mode (stream.h): a sender that
 * keeps every byte until the peer acknowledges it, and a receiver that
 * writes each byte once and in order.
 *
 * Callbacks: any io callback may be called from inside any tunnel_stream_*
 * call.  A callback must neither free the stream (the runtime frees it only
 * after checking tunnel_stream_done / tunnel_stream_reset, outside the
 * stream's calls) nor call back into the same stream: it reports through
 * its return value (send, write) or through a later call (drained, pump).
 *
 * io->send returning false never loses anything: what has to go is state
 * (snd_nxt, ack_due, fin_due, rst_due), sent again by pump, poll and
 * resend.
 */
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/util.h"
#include "tunnel/stream.h"

#define DEFAULT_WINDOW (256u * 1024u)
#define DEFAULT_CHUNK (32u * 1024u)
#define DEFAULT_ACK_DELAY_MS 20u
#define DEFAULT_RTO_MS 3000u
#define DEFAULT_GIVE_UP_MS 60000u
/* The smallest window a side may advertise (config.c's minimum): what a
 * sender assumes of its peer until the peer's first ACK says more. */
#define MIN_PEER_WINDOW 4096u

struct tunnel_stream {
    uint64_t id;
    struct tunnel_stream_cfg cfg;
    struct tunnel_stream_io io;
    void *ctx;

    /* Sending: snd holds the bytes [snd_una, snd_una + snd.len). */
    struct buf snd;
    uint64_t snd_una;     /* acknowledged by the peer */
    uint64_t snd_nxt;     /* the next offset to send (back to snd_una on a resend) */
    uint64_t snd_max;     /* the highest offset ever sent: an ACK beyond it breaks the rules */
    uint32_t peer_window; /* the peer's last advertised window */
    bool eof;             /* TCP EOF: the final length is snd_una + snd.len */
    bool fin_due;         /* a FIN has to go (after the last byte) */
    bool fin_sent;        /* a FIN went at least once */
    bool fin_acked;       /* an ACK with TF_FIN_SEEN came */
    bool paused;          /* TCP reads paused: the window is full */
    uint64_t rto_base;    /* the retransmission timer counts from here */
    uint64_t alive_base;  /* the give-up timer counts from here (the peer's last ACK) */

    /* Receiving. */
    uint64_t rcv_nxt;   /* bytes received in order and written to TCP */
    uint64_t ack_limit; /* what an ACK may say: rcv_nxt, except while TCP output is over its mark */
    uint64_t ack_sent;  /* the offset of the last ACK that went */
    bool ack_sent_once;
    bool ack_due;       /* an ACK has to go now */
    uint64_t ack_at;    /* a delayed ACK's time (0: none) */
    bool blocked;       /* io->write returned false, not drained yet */
    bool peer_fin;      /* the peer's FIN came; its final length is peer_fin_off */
    uint64_t peer_fin_off;
    bool fin_taken;     /* shutdown_write was called */

    /* Ending. */
    bool reset;
    bool rst_due; /* the RST frame has to go */
    char rst_reason[TUNNEL_MAX_REASON + 1];

    struct tunnel_stream_stats stats;
};

static uint32_t or_default(uint32_t v, uint32_t def) { return v ? v : def; }

struct tunnel_stream *tunnel_stream_new(uint64_t id, const struct tunnel_stream_cfg *cfg,
                                        const struct tunnel_stream_io *io, void *ctx)
{
    ASSERT(id != 0 && io && io->send && io->write && io->shutdown_write && io->read_pause && io->reset);
    struct tunnel_stream_cfg c = cfg ? *cfg : (struct tunnel_stream_cfg){0};
    struct tunnel_stream *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    uint32_t chunk = or_default(c.chunk, DEFAULT_CHUNK);
    *st = (struct tunnel_stream){
        .id = id,
        .cfg = {
            .window = or_default(c.window, DEFAULT_WINDOW),
            .chunk = chunk < TUNNEL_MAX_CHUNK ? chunk : TUNNEL_MAX_CHUNK,
            .ack_delay_ms = or_default(c.ack_delay_ms, DEFAULT_ACK_DELAY_MS),
            .rto_ms = or_default(c.rto_ms, DEFAULT_RTO_MS),
            .give_up_ms = or_default(c.give_up_ms, DEFAULT_GIVE_UP_MS),
        },
        .io = *io,
        .ctx = ctx,
    };
    /* Until the first ACK: the least any peer takes (windows are configured
     * per side, so ours says nothing of the peer's), never more than ours. */
    st->peer_window = st->cfg.window < MIN_PEER_WINDOW ? st->cfg.window : MIN_PEER_WINDOW;
    return st;
}

void tunnel_stream_free(struct tunnel_stream *st)
{
    if (!st)
        return;
    buf_release(&st->snd);
    free(st);
}

uint64_t tunnel_stream_id(const struct tunnel_stream *st) { return st->id; }
bool tunnel_stream_done(const struct tunnel_stream *st) { return !st->reset && st->fin_acked && st->fin_taken; }
bool tunnel_stream_reset(const struct tunnel_stream *st) { return st->reset; }
void tunnel_stream_get_stats(const struct tunnel_stream *st, struct tunnel_stream_stats *out) { *out = st->stats; }

bool tunnel_stream_flushed(const struct tunnel_stream *st)
{
    return !st->rst_due && !st->ack_due && st->ack_at == 0;
}

/* ---- invariants, limits ---------------------------------------------------- */

static void check(const struct tunnel_stream *st)
{
    ASSERT(st->snd_una <= st->snd_nxt && st->snd_nxt <= st->snd_una + st->snd.len);
    ASSERT(st->snd_max <= st->snd_una + st->snd.len && st->snd_una <= st->snd_max);
    ASSERT(st->ack_limit <= st->rcv_nxt && st->ack_sent <= st->ack_limit);
    ASSERT(st->rcv_nxt <= st->ack_sent + st->cfg.window); /* rcv_limit */
    ASSERT(!st->fin_acked || (st->eof && st->snd.len == 0));
    ASSERT(!st->fin_taken || (st->peer_fin && st->peer_fin_off == st->rcv_nxt));
    (void)st;
}

/* The bytes the peer lets us have unacknowledged: its window, never more
 * than ours.  Both sides agree exactly on this rule: the receiver resets a
 * stream whose DATA ends past its last ACK plus its window (rcv_limit), so
 * there is no "at least one chunk" floor (a window smaller than a chunk
 * just means shorter frames: send_data_frame cuts them at the window, and
 * the receiver ACKs whatever it took, so nothing stalls).  The sender's
 * snd_una is always an ACK the receiver sent, never more than its last one,
 * so snd_una + send_window never passes the receiver's limit. */
static uint32_t send_window(const struct tunnel_stream *st)
{
    return st->peer_window < st->cfg.window ? st->peer_window : st->cfg.window;
}

/* The receiver's limit: the offset it last told the peer (ack_sent: an ACK
 * that actually went, 0 before any; not ack_limit nor rcv_nxt, which may be
 * further while ACKs are withheld or delayed) plus the window it advertises
 * in every ACK (cfg.window; before any ACK the peer assumes at most
 * MIN_PEER_WINDOW, never more than cfg.window: see tunnel_stream_new).
 * A conforming sender never passes it, so past it is a violation, and the
 * bytes given to the TCP side beyond what it consumed stay within one
 * window. */
static uint64_t rcv_limit(const struct tunnel_stream *st) { return st->ack_sent + st->cfg.window; }

/* Something was sent that the peer has not acknowledged yet. */
static bool waiting(const struct tunnel_stream *st)
{
    return st->snd_max > st->snd_una || (st->fin_sent && !st->fin_acked);
}

static uint64_t final_length(const struct tunnel_stream *st) { return st->snd_una + st->snd.len; }

/* ---- reset ----------------------------------------------------------------- */

static bool send_rst(struct tunnel_stream *st)
{
    struct tunnel_frame f = {
        .type = TF_RST, .stream = st->id, .payload = (const uint8_t *)st->rst_reason, .len = strlen(st->rst_reason)};
    st->rst_due = !st->io.send(st->ctx, &f);
    return !st->rst_due;
}

/* The stream is dead: nothing but a pending RST frame goes any more.
 * tell_peer: the peer did not send the RST itself. */
static void die(struct tunnel_stream *st, const uint8_t *why, size_t n, bool tell_peer, bool tell_tcp)
{
    if (st->reset)
        return;
    st->reset = true;
    st->ack_due = false;
    st->ack_at = 0;
    n = n < TUNNEL_MAX_REASON ? n : TUNNEL_MAX_REASON;
    /* The peer's reason goes to logs: printable ASCII only. */
    for (size_t i = 0; i < n; i++)
        st->rst_reason[i] = why[i] >= 0x20 && why[i] < 0x7f ? (char)why[i] : '?';
    st->rst_reason[n] = '\0';
    if (tell_tcp)
        st->io.reset(st->ctx, st->rst_reason);
    if (tell_peer)
        send_rst(st);
}

/* A frame that breaks the rules: the peer is confused or hostile. */
static void violation(struct tunnel_stream *st, const char *why)
{
    die(st, (const uint8_t *)why, strlen(why), true, true);
}

/* ---- sending ---------------------------------------------------------------- */

static bool send_data_frame(struct tunnel_stream *st, uint64_t limit, uint64_t now_ms)
{
    uint64_t left = limit - st->snd_nxt;
    size_t n = left < st->cfg.chunk ? (size_t)left : st->cfg.chunk;
    struct tunnel_frame f = {
        .type = TF_DATA,
        .stream = st->id,
        .offset = st->snd_nxt,
        .payload = buf_head(&st->snd) + (st->snd_nxt - st->snd_una),
        .len = n,
    };
    bool was_waiting = waiting(st);
    if (!st->io.send(st->ctx, &f))
        return false;
    if (!was_waiting) /* the timers start with the first byte in flight */
        st->rto_base = st->alive_base = now_ms;
    if (st->snd_nxt < st->snd_max)
        st->stats.resent++;
    st->snd_nxt += n;
    st->snd_max = st->snd_nxt > st->snd_max ? st->snd_nxt : st->snd_max;
    return true;
}

/* DATA from snd_nxt while the peer's window allows, then the FIN after the
 * last byte.  false: send refused, try again later. */
static bool send_data(struct tunnel_stream *st, uint64_t now_ms)
{
    uint64_t end = final_length(st), win_end = st->snd_una + send_window(st);
    uint64_t limit = end < win_end ? end : win_end;
    while (st->snd_nxt < limit)
        if (!send_data_frame(st, limit, now_ms))
            return false;
    if (!st->fin_due || st->snd_nxt != end)
        return true;
    struct tunnel_frame f = {.type = TF_FIN, .stream = st->id, .offset = end};
    bool was_waiting = waiting(st);
    if (!st->io.send(st->ctx, &f))
        return false;
    if (!was_waiting)
        st->rto_base = st->alive_base = now_ms;
    st->stats.resent += st->fin_sent;
    st->fin_sent = true;
    st->fin_due = false;
    return true;
}

static void send_ack(struct tunnel_stream *st)
{
    bool fin_seen = st->fin_taken && st->ack_limit == st->peer_fin_off;
    struct tunnel_frame f = {
        .type = TF_ACK,
        .flags = fin_seen ? TF_FIN_SEEN : 0,
        .stream = st->id,
        .offset = st->ack_limit,
        .window = st->cfg.window,
    };
    st->ack_at = 0;
    st->ack_due = !st->io.send(st->ctx, &f);
    if (!st->ack_due) {
        st->ack_sent = st->ack_limit;
        st->ack_sent_once = true;
    }
}

/* Everything that has to go now, in order: a dead stream only its RST. */
static void flush(struct tunnel_stream *st, uint64_t now_ms)
{
    if (st->reset) {
        if (st->rst_due)
            send_rst(st);
        return;
    }
    if (st->ack_due)
        send_ack(st);
    send_data(st, now_ms);
    check(st);
}

/* ---- the TCP side ---------------------------------------------------------- */

static void update_pause(struct tunnel_stream *st)
{
    uint32_t w = send_window(st);
    if (!st->paused && st->snd.len >= w) {
        st->paused = true;
        st->io.read_pause(st->ctx, true);
    } else if (st->paused && st->snd.len <= w / 2) {
        st->paused = false; /* resume only once half is free: fewer pause/resume flips */
        st->io.read_pause(st->ctx, false);
    }
}

void tunnel_stream_input(struct tunnel_stream *st, const uint8_t *p, size_t n, uint64_t now_ms)
{
    ASSERT(!st->eof);
    if (st->reset || n == 0)
        return;
    if (n > UINT32_MAX - st->snd.len || buf_append(&st->snd, p, n) < 0) {
        violation(st, "out of memory");
        return;
    }
    update_pause(st);
    flush(st, now_ms);
}

void tunnel_stream_input_eof(struct tunnel_stream *st, uint64_t now_ms)
{
    if (st->reset || st->eof)
        return;
    st->eof = true;
    st->fin_due = true;
    flush(st, now_ms);
}

/* ACKs may say everything written again; one goes at once so the sender's
 * window opens without waiting for its next frame. */
void tunnel_stream_drained(struct tunnel_stream *st, uint64_t now_ms)
{
    if (st->reset || !st->blocked)
        return;
    st->blocked = false;
    st->ack_limit = st->rcv_nxt;
    if (st->ack_limit != st->ack_sent || !st->ack_sent_once)
        st->ack_due = true;
    flush(st, now_ms);
}

void tunnel_stream_abort(struct tunnel_stream *st, const char *why, uint64_t now_ms)
{
    (void)now_ms;
    /* The runtime saw its TCP side fail: only the peer needs telling. */
    die(st, (const uint8_t *)why, strlen(why), true, false);
}

/* ---- the peer's frames ------------------------------------------------------ */

/* An ACK at once (a duplicate: our last ACK may be lost), or after
 * ack_delay_ms unless a quarter window waits for it. */
static void schedule_ack(struct tunnel_stream *st, bool now, uint64_t now_ms)
{
    if (now || st->ack_limit - st->ack_sent >= st->cfg.window / 4)
        st->ack_due = true;
    else if (st->ack_at == 0 && st->ack_limit != st->ack_sent)
        st->ack_at = now_ms + st->cfg.ack_delay_ms;
}

/* The peer's FIN once everything before it is written: half-close TCP. */
static void take_fin(struct tunnel_stream *st)
{
    if (!st->peer_fin || st->fin_taken || st->rcv_nxt != st->peer_fin_off)
        return;
    st->fin_taken = true;
    st->ack_due = true;
    st->io.shutdown_write(st->ctx);
}

static void write_tcp(struct tunnel_stream *st, const uint8_t *p, size_t n)
{
    st->rcv_nxt += n;
    st->stats.bytes_in += n;
    /* Over its mark: ACKs stop at what was acknowledgeable before, so the
     * sender's window closes and this side buffers at most one window. */
    if (!st->io.write(st->ctx, p, n))
        st->blocked = true;
    if (!st->blocked)
        st->ack_limit = st->rcv_nxt;
}

static void on_data(struct tunnel_stream *st, const struct tunnel_frame *f, uint64_t now_ms)
{
    uint64_t end = f->offset + f->len;
    if (end < f->offset || (st->peer_fin && end > st->peer_fin_off)) {
        violation(st, "data past the end of the stream");
        return;
    }
    if (end > rcv_limit(st)) {
        /* A peer that ignores our window: taking the bytes would grow the
         * TCP side's output without bound (while it does not read). */
        violation(st, "data past the advertised window");
        return;
    }
    if (end <= st->rcv_nxt) {
        st->stats.dups++;
        schedule_ack(st, true, now_ms);
        return;
    }
    if (f->offset > st->rcv_nxt)
        return; /* past a gap: the sender resends it after what is missing */
    size_t skip = (size_t)(st->rcv_nxt - f->offset);
    st->stats.dups += skip > 0;
    write_tcp(st, f->payload + skip, f->len - skip);
    take_fin(st);
    schedule_ack(st, false, now_ms);
}

static void on_fin(struct tunnel_stream *st, const struct tunnel_frame *f, uint64_t now_ms)
{
    if ((st->peer_fin && f->offset != st->peer_fin_off) || f->offset < st->rcv_nxt) {
        violation(st, "a FIN that contradicts the stream");
        return;
    }
    if (st->fin_taken) {
        st->stats.dups++;
        schedule_ack(st, true, now_ms);
        return;
    }
    st->peer_fin = true;
    st->peer_fin_off = f->offset;
    take_fin(st);
}

/* The peer wrote up to f->offset: drop those bytes, restart the timers. */
static void ack_progress(struct tunnel_stream *st, uint64_t acked, uint64_t now_ms)
{
    uint64_t n = acked - st->snd_una;
    buf_consume(&st->snd, (size_t)n);
    st->snd_una = acked;
    st->snd_nxt = st->snd_nxt > acked ? st->snd_nxt : acked;
    st->stats.bytes_out += n;
    st->rto_base = now_ms;
}

static void on_ack(struct tunnel_stream *st, const struct tunnel_frame *f, uint64_t now_ms)
{
    bool fin_seen = f->flags & TF_FIN_SEEN;
    if (f->offset > st->snd_max || (fin_seen && (!st->fin_sent || f->offset != final_length(st)))) {
        violation(st, "an ACK of what was not sent");
        return;
    }
    st->alive_base = now_ms; /* the peer answers: it is alive, only perhaps slow to write */
    if (f->offset < st->snd_una)
        return; /* an old ACK, overtaken */
    if (f->offset > st->snd_una)
        ack_progress(st, f->offset, now_ms);
    if (f->window) /* 0: no window news (the ACK of an ended stream's memory, reliable.c) */
        st->peer_window = f->window;
    if (fin_seen && !st->fin_acked) {
        st->fin_acked = true;
        st->fin_due = false;
    }
    update_pause(st);
}

void tunnel_stream_frame(struct tunnel_stream *st, const struct tunnel_frame *f, uint64_t now_ms)
{
    ASSERT(f->stream == st->id);
    if (st->reset)
        return;
    switch (f->type) {
    case TF_DATA:
        on_data(st, f, now_ms);
        break;
    case TF_FIN:
        on_fin(st, f, now_ms);
        break;
    case TF_ACK:
        on_ack(st, f, now_ms);
        break;
    case TF_RST:
        if (f->len)
            die(st, f->payload, f->len, false, true);
        else
            die(st, (const uint8_t *)"reset by the peer", strlen("reset by the peer"), false, true);
        return;
    default:
        return; /* ACCEPT is the runtime's */
    }
    flush(st, now_ms);
}

/* ---- timers, pump, resend ---------------------------------------------------- */

void tunnel_stream_pump(struct tunnel_stream *st, uint64_t now_ms) { flush(st, now_ms); }

/* Everything unacknowledged goes again from the last ACK. */
static void rewind_send(struct tunnel_stream *st, uint64_t now_ms)
{
    st->snd_nxt = st->snd_una;
    st->fin_due = st->eof && !st->fin_acked;
    st->rto_base = now_ms;
}

void tunnel_stream_resend(struct tunnel_stream *st, uint64_t now_ms)
{
    if (!st->reset) {
        rewind_send(st, now_ms);
        if (st->ack_sent_once || st->rcv_nxt > 0 || st->fin_taken)
            st->ack_due = true; /* the last ACK may have died with the connection */
    }
    flush(st, now_ms);
}

static uint64_t earliest(uint64_t a, uint64_t b) { return a == 0 ? b : b == 0 ? a : a < b ? a : b; }

uint64_t tunnel_stream_poll(struct tunnel_stream *st, uint64_t now_ms)
{
    if (st->reset) {
        flush(st, now_ms);
        return 0;
    }
    if (waiting(st) && now_ms >= st->alive_base + st->cfg.give_up_ms) {
        violation(st, "no answer from the peer");
        return 0;
    }
    if (waiting(st) && now_ms >= st->rto_base + st->cfg.rto_ms)
        rewind_send(st, now_ms);
    if (st->ack_at != 0 && now_ms >= st->ack_at)
        st->ack_due = true;
    flush(st, now_ms);
    if (st->reset)
        return 0;
    uint64_t next = st->ack_at;
    if (waiting(st))
        next = earliest(earliest(next, st->rto_base + st->cfg.rto_ms), st->alive_base + st->cfg.give_up_ms);
    return next;
}
