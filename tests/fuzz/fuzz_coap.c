/*
 * Fuzzing the CoAP codec: decode arbitrary datagrams and, for every one the
 * decoder accepts, require that its views lie inside the input and tile it,
 * that the option walk agrees with decode, that encoding what was found
 * gives back the same bytes (the wire form of a valid message is unique)
 * and that those decode to the same message.  The helpers the front end
 * uses run on every accepted message too.  Any disagreement aborts.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
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
