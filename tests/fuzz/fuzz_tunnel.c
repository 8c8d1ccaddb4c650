/*
 * Fuzzing the reliable tunnel (tunnel/frame.c, tunnel/stream.c): the whole
 * input is decoded as a frame and as an open message (without a key, and
 * with a fixed key at a fixed time); whatever decodes must encode back to
 * something that decodes the same.  Then the input is read as a script of
 * operations on one stream (the peer's frames, TCP reads, EOF, drains,
 * pumps, resends, time passing, sends refused) while the stream's own
 * ASSERTs (MGATE_ASSERTS) and the checks on its callbacks watch it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tunnel/frame.h"
#include "tunnel/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ID 0x0123456789abcdefull
#define FUZZ_NOW 1700000000u

static const uint8_t key[32] = "fuzz-tunnel-key-fuzz-tunnel-key!";

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_tunnel: %s\n", why);
    abort();
}

static void frame_roundtrip(const uint8_t *data, size_t size)
{
    struct tunnel_frame f, g;
    if (!tunnel_frame_decode(data, size, &f))
        return;
    static uint8_t out[TUNNEL_FRAME_HEAD + TUNNEL_MAX_CHUNK];
    size_t n = tunnel_frame_encode(&f, out);
    if (n != size || memcmp(out, data, n) != 0 || !tunnel_frame_decode(out, n, &g))
        fail("a decoded frame does not encode back to itself");
}

static void open_roundtrip(const uint8_t *data, size_t size, const uint8_t *k, size_t klen)
{
    struct tunnel_open o, p;
    enum tunnel_open_result r = tunnel_open_decode(data, size, k, klen, FUZZ_NOW, &o);
    if (r != TUNNEL_OPEN_OK)
        return;
    if (o.stream == 0 || o.port == 0 || strlen(o.reply) == 0 || strlen(o.reply) > TUNNEL_MAX_TOPIC)
        fail("an accepted open message with a bad field");
    char out[2048];
    size_t n = tunnel_open_encode(&o, k, klen, out, sizeof(out));
    if (n == 0 || tunnel_open_decode((const uint8_t *)out, n, k, klen, FUZZ_NOW, &p) != TUNNEL_OPEN_OK ||
        p.stream != o.stream || p.port != o.port || p.ts != o.ts || strcmp(p.reply, o.reply) != 0)
        fail("an accepted open message does not encode back");
}

/* ---- a stream driven by the input ---------------------------------------------- */

struct fake {
    struct tunnel_stream *st;
    bool refuse_send, refuse_write, paused, eof;
    uint64_t input, written, shutdowns, resets;
};

static bool fake_send(void *ctx, const struct tunnel_frame *f)
{
    struct fake *x = ctx;
    if (x->refuse_send)
        return false;
    if (tunnel_stream_reset(x->st) && f->type != TF_RST)
        fail("a reset stream sent something other than its RST");
    if (f->type == TF_DATA && (f->len == 0 || f->len > TUNNEL_MAX_CHUNK || f->offset + f->len > x->input))
        fail("DATA that was never read");
    if (f->type == TF_FIN && (!x->eof || f->offset != x->input))
        fail("a FIN at the wrong length");
    static uint8_t out[TUNNEL_FRAME_HEAD + TUNNEL_MAX_CHUNK];
    struct tunnel_frame g;
    if (!tunnel_frame_decode(out, tunnel_frame_encode(f, out), &g))
        fail("the stream sent a frame that does not decode");
    return true;
}

static bool fake_write(void *ctx, const uint8_t *p, size_t n)
{
    struct fake *x = ctx;
    (void)p;
    if (x->shutdowns)
        fail("a write after shutdown_write");
    x->written += n;
    return !x->refuse_write;
}

static void fake_shutdown(void *ctx)
{
    if (((struct fake *)ctx)->shutdowns++)
        fail("shutdown_write twice");
}

static void fake_pause(void *ctx, bool pause) { ((struct fake *)ctx)->paused = pause; }
static void fake_reset(void *ctx, const char *why)
{
    (void)why;
    if (((struct fake *)ctx)->resets++)
        fail("reset twice");
}

static const struct tunnel_stream_io fake_io = {
    .send = fake_send, .write = fake_write, .shutdown_write = fake_shutdown, .read_pause = fake_pause, .reset = fake_reset};

/* One operation: op byte, then its argument from the input.  Returns the
 * bytes used. */
static size_t step(struct fake *x, const uint8_t *p, size_t n, uint64_t *now)
{
    static const uint8_t zeros[1024];
    if (n < 2)
        return n; /* every operation has its argument byte */
    size_t arg = p[1], used = 2;
    switch (p[0] % 10) {
    case 0: { /* a frame from the peer: length byte, then the frame */
        size_t len = arg < n - 2 ? arg : n - 2;
        struct tunnel_frame f;
        if (tunnel_frame_decode(p + 2, len, &f) && f.type != TF_ACCEPT) {
            f.stream = FUZZ_ID; /* the runtime routes by id: give it to ours */
            tunnel_stream_frame(x->st, &f, *now);
        }
        return 2 + len;
    }
    case 1: /* TCP reads arg * 4 bytes */
        if (!x->eof && arg && !tunnel_stream_reset(x->st)) {
            x->input += arg * 4; /* first: the stream sends from inside the call */
            tunnel_stream_input(x->st, zeros, arg * 4, *now);
        }
        break;
    case 2:
        if (!x->eof && !tunnel_stream_reset(x->st)) {
            x->eof = true; /* first: the FIN may go from inside the call */
            tunnel_stream_input_eof(x->st, *now);
        }
        break;
    case 3:
        x->refuse_write = false;
        tunnel_stream_drained(x->st, *now);
        break;
    case 4:
        tunnel_stream_pump(x->st, *now);
        break;
    case 5:
        tunnel_stream_resend(x->st, *now);
        break;
    case 6: /* time passes */
        *now += arg * arg * 4;
        tunnel_stream_poll(x->st, *now);
        break;
    case 7:
        x->refuse_send = arg & 1;
        x->refuse_write = arg & 2;
        break;
    case 8:
        tunnel_stream_abort(x->st, "fuzz", *now);
        break;
    default: /* an operation without argument */
        used = 1;
        tunnel_stream_poll(x->st, *now);
    }
    return used;
}

static void drive_stream(const uint8_t *data, size_t size)
{
    struct tunnel_stream_cfg cfg = {.window = 4096, .chunk = 512, .ack_delay_ms = 20, .rto_ms = 300, .give_up_ms = 5000};
    struct fake x = {0};
    x.st = tunnel_stream_new(FUZZ_ID, &cfg, &fake_io, &x);
    if (!x.st)
        return;
    uint64_t now = 1000;
    for (size_t i = 0; i < size;)
        i += step(&x, data + i, size - i, &now);
    struct tunnel_stream_stats st;
    tunnel_stream_get_stats(x.st, &st);
    if (st.bytes_in != x.written || st.bytes_out > x.input)
        fail("the counters disagree with the callbacks");
    if (tunnel_stream_done(x.st) && (x.resets || x.shutdowns != 1 || !x.eof))
        fail("done without both FINs");
    tunnel_stream_pump(x.st, now);
    if (tunnel_stream_reset(x.st) && !x.refuse_send && !tunnel_stream_flushed(x.st))
        fail("a reset stream whose RST could go still holds it");
    tunnel_stream_free(x.st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    frame_roundtrip(data, size);
    open_roundtrip(data, size, NULL, 0);
    open_roundtrip(data, size, key, sizeof(key));
    drive_stream(data, size);
    return 0;
}
