/*
 * Fuzzing the CoAP codec: decode arbitrary datagrams and, for every one the
 * decoder accepts, require that its views lie inside the input and tile it,
 * that the option walk agrees with decode, that encoding what was found
 * gives back the same bytes (the wire form of a valid message is unique)
 * and that those decode to the same message.  The helpers the front end
 * uses run on every accepted message too.  The same input is also read as
 * a message to encode (encode_generated), which must decode back to
 * itself.  Any disagreement aborts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coap/coap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why, const uint8_t *p, size_t n)
{
    fprintf(stderr, "fuzz_coap: %s (%zu bytes)\n", why, n);
    for (size_t i = 0; i < n && i < 64; i++)
        fprintf(stderr, "%02x%s", p[i], i + 1 < n ? " " : "\n");
    abort();
}

static bool inside(const uint8_t *p, size_t len, const uint8_t *lo, size_t n)
{
    return p >= lo && p <= lo + n && len <= (size_t)(lo + n - p);
}

/* Token, options and payload follow each other and end at the input's end. */
static void check_views(const struct coap_msg *m, const uint8_t *p, size_t n)
{
    if (m->token != p + COAP_HEADER_LEN || !inside(m->token, m->tkl, p, n))
        fail("token view", p, n);
    if (m->options.p != m->token + m->tkl || !inside(m->options.p, m->options.len, p, n))
        fail("options view", p, n);
    size_t tail = m->payload.len ? m->payload.len + 1 : 0; /* with its marker */
    if (COAP_HEADER_LEN + m->tkl + m->options.len + tail != n)
        fail("views do not tile the datagram", p, n);
    if (!inside(m->payload.p, m->payload.len, p, n))
        fail("payload view", p, n);
    if (m->code == COAP_EMPTY && n != COAP_HEADER_LEN)
        fail("empty message with content", p, n);
}

/* Values with a structure: read, write minimal, read the same again. */
static void check_values(const struct coap_opt *o, const uint8_t *p, size_t n)
{
    uint8_t out[4];
    uint32_t v, w;
    struct coap_block b, c;

    if (coap_uint_get(o->val, o->len, &v)) {
        size_t k = coap_uint_put(out, v);
        if (k > o->len || !coap_uint_get(out, k, &w) || w != v)
            fail("uint round trip", p, n);
    }
    if ((o->num == COAP_OPT_BLOCK1 || o->num == COAP_OPT_BLOCK2) && coap_block_get(o->val, o->len, &b)) {
        if (!coap_block_valid(&b))
            fail("a block read is not valid", p, n);
        size_t k = coap_block_put(out, &b);
        if (k > o->len || !coap_block_get(out, k, &c) || c.num != b.num || c.more != b.more ||
            c.szx != b.szx)
            fail("block round trip", p, n);
    }
}

/* The walk sees opt_count options in ascending order. */
static struct coap_opt *walk(const struct coap_msg *m, const uint8_t *p, size_t n)
{
    struct coap_opt *opts = malloc(sizeof *opts * (m->opt_count + 1));
    struct coap_opt_iter it;
    uint32_t k = 0;

    if (!opts)
        abort();
    coap_opt_begin(m, &it);
    while (coap_opt_next(&it, &opts[k])) {
        if (k && opts[k].num < opts[k - 1].num)
            fail("options out of order", p, n);
        if (!inside(opts[k].val, opts[k].len, m->options.p, m->options.len))
            fail("option value outside the options", p, n);
        check_values(&opts[k], p, n);
        if (++k > m->opt_count)
            fail("walk finds more options than decode", p, n);
    }
    if (k != m->opt_count || coap_opt_collect(m, opts, k) != (ssize_t)k)
        fail("walk and decode disagree", p, n);
    if (k && coap_opt_collect(m, opts, k - 1) != -1)
        fail("collect ignores its bound", p, n);
    return opts;
}

static void same_msg(const struct coap_msg *a, const struct coap_msg *b, const uint8_t *p, size_t n)
{
    if (a->type != b->type || a->code != b->code || a->mid != b->mid || a->tkl != b->tkl ||
        memcmp(a->token, b->token, a->tkl) != 0 || a->opt_count != b->opt_count ||
        a->options.len != b->options.len || memcmp(a->options.p, b->options.p, a->options.len) != 0 ||
        a->payload.len != b->payload.len || memcmp(a->payload.p, b->payload.p, a->payload.len) != 0)
        fail("decode(encode(x)) != x", p, n);
}

static void reencode(const struct coap_msg *m, const struct coap_opt *opts, const uint8_t *p, size_t n)
{
    uint8_t *out = malloc(n); /* exactly n: a write past it is an ASan report */
    struct coap_msg again;

    if (!out)
        abort();
    if (coap_encode(m, opts, m->opt_count, out, n) != (ssize_t)n || memcmp(out, p, n) != 0)
        fail("encode(decode(x)) != x", p, n);
    if (coap_encode(m, opts, m->opt_count, out, n - 1) != -1)
        fail("encode into too small a buffer", p, n);
    if (coap_decode(out, n, &again) != COAP_OK)
        fail("re-encoded message does not decode", p, n);
    same_msg(m, &again, p, n);
    free(out);
}

/* The front end's helpers, and mgate's answer to this message. */
static void helpers(const struct coap_msg *m, const uint8_t *p, size_t n)
{
    char path[64];
    uint8_t out[64];
    coap_view v;
    uint16_t bad;
    struct coap_msg back;

    ssize_t k = coap_uri_path(m, path, sizeof path);
    if (k >= (ssize_t)sizeof path || (k >= 0 && strlen(path) != (size_t)k))
        fail("uri path length", p, n);
    if (coap_uri_query(m, "auth", &v) && !inside(v.p, v.len, m->options.p, m->options.len))
        fail("query value outside the options", p, n);
    coap_err err = coap_check_options(m, &bad);
    if (err != COAP_OK && (err != COAP_ERR_BAD_OPTION || !coap_opt_critical(bad)))
        fail("check_options", p, n);
    /* 4.02 only ever answers a confirmable request */
    enum coap_reject how = coap_reject_how(m, err);
    if (how == COAP_REJECT_BAD_OPTION && (m->type != COAP_CON || COAP_CODE_CLASS(m->code) != 0))
        fail("4.02 to what is not a CON request", p, n);
    if (err == COAP_OK && how != COAP_REJECT_RST && how != COAP_REJECT_DROP)
        fail("reject of a good message", p, n);
    struct coap_msg a = coap_answer(m, COAP_FORBIDDEN, 1);
    ssize_t len = coap_encode(&a, NULL, 0, out, sizeof out);
    if (len != COAP_HEADER_LEN + m->tkl || coap_decode(out, (size_t)len, &back) != COAP_OK)
        fail("answer does not encode and decode", p, n);
}

/*
 * The other direction: the input read as a message to encode (what a
 * handler's rewrite or mgate's own answer hands the encoder), not as wire
 * bytes.  Byte 0: type << 4 | token length (up to 15, to see the encoder
 * refuse 9..15); byte 1: code; bytes 2-3: message id; the token; then
 * options until a 0xFF byte, each one byte x: delta x >> 3 and length
 * x & 7, a delta of 31 taking two more bytes, a length of 7 two more (so
 * the extended forms appear), the value following; the rest is payload.
 */
#define GEN_OPTS 64

struct gen {
    const uint8_t *p, *end;
};

static bool gen_take(struct gen *g, size_t n, const uint8_t **out)
{
    if ((size_t)(g->end - g->p) < n)
        return false;
    *out = g->p;
    g->p += n;
    return true;
}

static bool gen_u16(struct gen *g, uint32_t *v)
{
    const uint8_t *b;

    if (!gen_take(g, 2, &b))
        return false;
    *v = (uint32_t)b[0] << 8 | b[1];
    return true;
}

/* One option after prev; false at the end of the options. */
static bool gen_option(struct gen *g, uint32_t prev, struct coap_opt *o)
{
    const uint8_t *x;
    uint32_t delta, len;

    if (!gen_take(g, 1, &x) || *x == 0xFF)
        return false;
    delta = *x >> 3;
    len = *x & 7;
    if ((delta == 31 && !gen_u16(g, &delta)) || (len == 7 && !gen_u16(g, &len)))
        return false;
    if (prev + delta > UINT16_MAX || !gen_take(g, len, &o->val))
        return false;
    o->num = (uint16_t)(prev + delta);
    o->len = len;
    return true;
}

static void encode_generated(const uint8_t *data, size_t size)
{
    struct gen g = {.p = data, .end = data + size};
    struct coap_opt opts[GEN_OPTS];
    const uint8_t *h;
    size_t n = 0;

    if (!gen_take(&g, 4, &h))
        return;
    struct coap_msg m = {.type = h[0] >> 4 & 3, .tkl = h[0] & 0xF, .code = h[1],
                         .mid = (uint16_t)(h[2] << 8 | h[3])};
    if (!gen_take(&g, m.tkl, &m.token))
        return;
    while (n < GEN_OPTS && gen_option(&g, n ? opts[n - 1].num : 0, &opts[n]))
        n++;
    m.payload = (coap_view){.p = g.p, .len = (size_t)(g.end - g.p)};

    bool valid = m.tkl <= COAP_TOKEN_MAX && coap_check_code(m.type, m.code) == COAP_OK &&
                 (m.code != COAP_EMPTY || (!m.tkl && !n && !m.payload.len));
    size_t cap = COAP_HEADER_LEN + m.tkl + 1 + m.payload.len;
    for (size_t i = 0; i < n; i++)
        cap += 5 + opts[i].len;
    uint8_t *out = malloc(cap);
    if (!out)
        abort();
    ssize_t len = coap_encode(&m, opts, n, out, cap);
    if (!valid) {
        if (len != -1)
            fail("encoded a message decode refuses", data, size);
        free(out);
        return;
    }
    if (len < 0)
        fail("refused to encode a valid message", data, size);
    if (coap_encode(&m, opts, n, out, (size_t)len - 1) != -1)
        fail("encoded into one byte too few", data, size);

    struct coap_msg d;
    struct coap_opt_iter it;
    struct coap_opt o;
    if (coap_decode(out, (size_t)len, &d) != COAP_OK)
        fail("encoded message does not decode", data, size);
    if (d.type != m.type || d.code != m.code || d.mid != m.mid || d.tkl != m.tkl ||
        memcmp(d.token, m.token, m.tkl) != 0 || d.opt_count != n || d.payload.len != m.payload.len ||
        memcmp(d.payload.p, m.payload.p, m.payload.len) != 0)
        fail("decode(encode(x)) != x: header, token or payload", data, size);
    coap_opt_begin(&d, &it);
    for (size_t i = 0; i < n; i++)
        if (!coap_opt_next(&it, &o) || o.num != opts[i].num || o.len != opts[i].len ||
            memcmp(o.val, opts[i].val, o.len) != 0)
            fail("decode(encode(x)) != x: options", data, size);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    encode_generated(data, size);

    struct coap_msg m;
    coap_err err = coap_decode(data, size, &m);

    if (err != COAP_OK) {
        if (err >= COAP_ERR_TOKEN_LEN && (size < COAP_HEADER_LEN || m.type != (data[0] >> 4 & 3)))
            fail("header not filled in on an error", data, size);
        if (coap_reject_how(&m, err) > COAP_REJECT_BAD_OPTION)
            fail("reject out of range", data, size);
        return 0;
    }
    check_views(&m, data, size);
    struct coap_opt *opts = walk(&m, data, size);
    reencode(&m, opts, data, size);
    free(opts);
    helpers(&m, data, size);
    return 0;
}
