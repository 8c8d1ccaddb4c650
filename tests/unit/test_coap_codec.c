/*
 * CoAP codec: the RFC 7252 examples, datagrams captured from libcoap's
 * tools, every format error with its exact verdict, the extended option
 * forms at their boundaries, option rules, uint and Block values, the URI
 * helpers, and mgate's own answers byte for byte.
 *
 * Messages are written as hex (spaces ignored) so they read like the wire.
 */
#include <ctype.h>
#include <stdlib.h>

#include "check.h"
#include "coap/coap.h"
#include "coap_captured.h"

static size_t hex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;

    while (*s) {
        if (isspace((unsigned char)*s)) {
            s++;
            continue;
        }
        unsigned v;
        if (n == cap || sscanf(s, "%2x", &v) != 1 || !isxdigit((unsigned char)s[1])) {
            fprintf(stderr, "bad test hex at: %s\n", s);
            exit(2);
        }
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

/* Decode, collect the options and encode again: must give the same bytes. */
static void roundtrip(const uint8_t *p, size_t n, const char *what)
{
    struct coap_msg m;
    struct coap_opt opts[64];
    uint8_t out[2048];
    coap_err err = coap_decode(p, n, &m);

    if (err != COAP_OK) {
        fprintf(stderr, "%s: %s\n", what, coap_err_name(err));
        CHECK(!"decodes");
        return;
    }
    ssize_t k = coap_opt_collect(&m, opts, 64);
    CHECK(k >= 0);
    CHECK_EQ_INT(k, m.opt_count);
    ssize_t len = coap_encode(&m, opts, (size_t)k, out, sizeof out);
    CHECK_EQ_INT(len, n);
    if (len == (ssize_t)n && memcmp(out, p, n) != 0) {
        fprintf(stderr, "%s: re-encoded bytes differ\n", what);
        CHECK(!"byte-identical");
    }
    /* one byte less never fits */
    CHECK_EQ_INT(coap_encode(&m, opts, (size_t)k, out, n - 1), -1);
}

static coap_err decode_hex(const char *s, struct coap_msg *m, uint8_t *buf, size_t cap)
{
    return coap_decode(buf, hex(s, buf, cap), m);
}

/* RFC 7252 Appendix A, figures 16 and 17. */
static void test_rfc_examples(void)
{
    static const char *get = "40 01 7d 34 bb 74 65 6d 70 65 72 61 74 75 72 65";
    static const char *ans = "60 45 7d 34 ff 32 32 2e 33 20 43";
    static const char *get_tok = "41 01 7d 35 20 bb 74 65 6d 70 65 72 61 74 75 72 65";
    static const char *ans_tok = "61 45 7d 35 20 ff 32 32 2e 33 20 43";
    uint8_t buf[64], out[64];
    struct coap_msg m;
    char path[32];

    CHECK_EQ_INT(decode_hex(get, &m, buf, sizeof buf), COAP_OK);
    CHECK_EQ_INT(m.type, COAP_CON);
    CHECK_EQ_INT(m.code, COAP_GET);
    CHECK_EQ_INT(m.mid, 0x7d34);
    CHECK_EQ_INT(m.tkl, 0);
    CHECK_EQ_INT(m.opt_count, 1);
    CHECK_EQ_INT(m.payload.len, 0);
    CHECK_EQ_INT(coap_uri_path(&m, path, sizeof path), 11);
    CHECK_EQ_STR(path, "temperature");

    /* the answer written from its parts */
    struct coap_msg a = coap_answer(&m, COAP_CONTENT, 0);
    a.payload = (coap_view){.p = (const uint8_t *)"22.3 C", .len = 6};
    size_t n = hex(ans, buf, sizeof buf);
    CHECK_EQ_INT(coap_encode(&a, NULL, 0, out, sizeof out), n);
    CHECK(memcmp(out, buf, n) == 0);
    CHECK_EQ_INT(coap_decode(buf, n, &m), COAP_OK);
    CHECK_EQ_INT(m.type, COAP_ACK);
    CHECK_EQ_INT(m.payload.len, 6);
    CHECK(memcmp(m.payload.p, "22.3 C", 6) == 0);

    CHECK_EQ_INT(decode_hex(get_tok, &m, buf, sizeof buf), COAP_OK);
    CHECK_EQ_INT(m.tkl, 1);
    CHECK_EQ_INT(m.token[0], 0x20);
    a = coap_answer(&m, COAP_CONTENT, 0);
    a.payload = (coap_view){.p = (const uint8_t *)"22.3 C", .len = 6};
    n = hex(ans_tok, buf, sizeof buf);
    CHECK_EQ_INT(coap_encode(&a, NULL, 0, out, sizeof out), n);
    CHECK(memcmp(out, buf, n) == 0);
    roundtrip(buf, n, "figure 17 answer");
}

static void test_captured(void)
{
    for (size_t i = 0; i < sizeof captured / sizeof captured[0]; i++) {
        uint8_t buf[1024];
        size_t n = hex(captured[i].hex, buf, sizeof buf);
        struct coap_msg m;
        uint16_t bad;

        roundtrip(buf, n, captured[i].what);
        if (coap_decode(buf, n, &m) == COAP_OK)
            CHECK_EQ_INT(coap_check_options(&m, &bad), COAP_OK);
    }
}

static const uint8_t *captured_msg(size_t i, uint8_t *buf, size_t cap, struct coap_msg *m)
{
    size_t n = hex(captured[i].hex, buf, cap);

    CHECK_EQ_INT(coap_decode(buf, n, m), COAP_OK);
    return buf;
}

/* What the front end will read from those captured requests. */
static void test_captured_fields(void)
{
    uint8_t buf[1024];
    struct coap_msg m;
    struct coap_block b;
    struct coap_opt o;
    coap_view v;
    uint32_t u;
    char path[64];

    captured_msg(4, buf, sizeof buf, &m); /* POST /ps/sensors/t1?auth=TOKEN */
    CHECK_EQ_INT(m.code, COAP_POST);
    CHECK_EQ_INT(coap_uri_path(&m, path, sizeof path), 13);
    CHECK_EQ_STR(path, "ps/sensors/t1");
    CHECK(coap_uri_query(&m, "auth", &v));
    CHECK(v.len == 5 && memcmp(v.p, "TOKEN", 5) == 0);
    CHECK(!coap_uri_query(&m, "aut", &v));
    CHECK(m.payload.len == 3 && memcmp(m.payload.p, "p=1", 3) == 0);
    /* the path needs its 14 bytes with the NUL */
    CHECK_EQ_INT(coap_uri_path(&m, path, 14), 13);
    CHECK_EQ_INT(coap_uri_path(&m, path, 13), -1);

    captured_msg(8, buf, sizeof buf, &m); /* PUT Block1 0, M, 64 bytes, Size1 */
    CHECK(coap_opt_find(&m, COAP_OPT_BLOCK1, &o));
    CHECK(coap_block_get(o.val, o.len, &b));
    CHECK(b.num == 0 && b.more && COAP_BLOCK_SIZE(b.szx) == 64);
    CHECK(coap_opt_uint(&m, COAP_OPT_SIZE1, &u));
    CHECK_EQ_INT(u, 700);
    CHECK_EQ_INT(m.payload.len, 64);

    captured_msg(11, buf, sizeof buf, &m); /* last Block1 */
    CHECK(coap_opt_find(&m, COAP_OPT_BLOCK1, &o));
    CHECK(coap_block_get(o.val, o.len, &b));
    CHECK(b.num == 10 && !b.more && b.szx == 2);
    CHECK_EQ_INT(m.payload.len, 700 - 640);

    captured_msg(16, buf, sizeof buf, &m); /* GET /time, Observe 0 */
    CHECK(coap_opt_uint(&m, COAP_OPT_OBSERVE, &u));
    CHECK_EQ_INT(u, 0);
    CHECK(coap_opt_find(&m, COAP_OPT_OBSERVE, &o));
    CHECK_EQ_INT(o.len, 0);
    captured_msg(20, buf, sizeof buf, &m); /* Observe 1: deregistration */
    CHECK(coap_opt_uint(&m, COAP_OPT_OBSERVE, &u));
    CHECK_EQ_INT(u, 1);
    captured_msg(18, buf, sizeof buf, &m); /* a CON notification */
    CHECK_EQ_INT(m.type, COAP_CON);
    CHECK_EQ_INT(m.code, COAP_CONTENT);
    captured_msg(19, buf, sizeof buf, &m); /* its empty ACK */
    CHECK_EQ_INT(m.type, COAP_ACK);
    CHECK_EQ_INT(m.code, COAP_EMPTY);
    captured_msg(23, buf, sizeof buf, &m); /* token of 8 */
    CHECK_EQ_INT(m.tkl, 8);
    CHECK(memcmp(m.token, "cafe0002", 8) == 0);
    CHECK(coap_opt_uint(&m, COAP_OPT_ACCEPT, &u));
    CHECK_EQ_INT(u, 50);
    CHECK_EQ_INT(coap_uri_path(&m, path, sizeof path), 16);
    CHECK_EQ_STR(path, ".well-known/core");
}

static void test_format_errors(void)
{
    static const struct {
        const char *hex;
        coap_err err;
    } cases[] = {
        {"", COAP_ERR_SHORT},
        {"40 01 00", COAP_ERR_SHORT},
        {"00 01 00 00", COAP_ERR_VERSION},
        {"80 01 00 00", COAP_ERR_VERSION},
        {"c0 00 00 00", COAP_ERR_VERSION},
        {"48 01 00 01 01 02 03 04 05 06 07 08", COAP_OK},
        {"49 01 00 01 01 02 03 04 05 06 07 08 09", COAP_ERR_TOKEN_LEN},
        {"4f 01 00 01 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f", COAP_ERR_TOKEN_LEN},
        {"48 01 00 01 01 02 03 04 05 06 07", COAP_ERR_TRUNCATED},
        {"40 01 00 00 f1 aa", COAP_ERR_OPT_RESERVED},
        {"40 01 00 00 1f", COAP_ERR_OPT_RESERVED},
        {"40 01 00 00 d0", COAP_ERR_TRUNCATED},
        {"40 01 00 00 e0 00", COAP_ERR_TRUNCATED},
        {"40 01 00 00 0d", COAP_ERR_TRUNCATED},
        {"40 01 00 00 03 aa bb", COAP_ERR_TRUNCATED},
        {"40 01 00 00 ff", COAP_ERR_EMPTY_PAYLOAD},
        {"40 01 00 00 b1 61 ff", COAP_ERR_EMPTY_PAYLOAD},
        {"40 01 00 00 b1 61 ff 00", COAP_OK},
        {"40 01 00 00 e0 ff ff", COAP_ERR_OPT_NUMBER},
        {"40 01 00 00 e0 fe f2", COAP_OK}, /* 269 + 0xfef2 = 65535 */
        {"40 01 00 00 e0 fe f2 10", COAP_ERR_OPT_NUMBER},
        {"40 00 00 00", COAP_OK},
        {"60 00 00 00", COAP_OK},
        {"70 00 00 00", COAP_OK},
        {"41 00 00 00 aa", COAP_ERR_EMPTY_MSG},
        {"40 00 00 00 ff 00", COAP_ERR_EMPTY_MSG},
        {"40 00 00 00 b1 61", COAP_ERR_EMPTY_MSG},
        {"40 00 00 00 ff", COAP_ERR_EMPTY_MSG},
        {"40 20 00 00", COAP_ERR_CODE_CLASS},
        {"40 c0 00 00", COAP_ERR_CODE_CLASS},
        {"40 e0 00 00", COAP_ERR_CODE_CLASS},
        {"70 45 00 00", COAP_ERR_TYPE_CODE},
        {"60 01 00 00", COAP_ERR_TYPE_CODE},
        {"50 00 00 00", COAP_ERR_TYPE_CODE},
        {"60 45 00 00", COAP_OK},
        {"50 45 00 00", COAP_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[64];
        struct coap_msg m;
        coap_err err = decode_hex(cases[i].hex, &m, buf, sizeof buf);
        if (err != cases[i].err)
            fprintf(stderr, "case \"%s\": got %s, want %s\n", cases[i].hex, coap_err_name(err),
                    coap_err_name(cases[i].err));
        CHECK_EQ_INT(err, cases[i].err);
        /* from a token length error on, the header is there to answer */
        if (err >= COAP_ERR_TOKEN_LEN)
            CHECK_EQ_INT(m.type, buf[0] >> 4 & 3);
    }
}

/* One option numbered num with a value of len bytes: the bytes of its
 * header after the message header must be `want`. */
static void check_option_form(uint16_t num, uint32_t len, const char *want)
{
    static uint8_t val[400], out[512];
    uint8_t w[8];
    size_t wn = hex(want, w, sizeof w);
    struct coap_msg m = {.type = COAP_CON, .code = COAP_GET, .mid = 7};
    struct coap_opt o = {.num = num, .val = val, .len = len};

    memset(val, 'v', sizeof val);
    ssize_t n = coap_encode(&m, &o, 1, out, sizeof out);
    CHECK_EQ_INT(n, 4 + wn + len);
    CHECK(memcmp(out + 4, w, wn) == 0);
    roundtrip(out, (size_t)n, want);
    struct coap_msg d;
    struct coap_opt got;
    CHECK_EQ_INT(coap_decode(out, (size_t)n, &d), COAP_OK);
    CHECK(coap_opt_find(&d, num, &got));
    CHECK_EQ_INT(got.num, num);
    CHECK_EQ_INT(got.len, len);
}

static void test_extended_forms(void)
{
    check_option_form(12, 0, "c0");
    check_option_form(13, 0, "d0 00");
    check_option_form(268, 0, "d0 ff");
    check_option_form(269, 0, "e0 00 00");
    check_option_form(65535, 0, "e0 fe f2");
    check_option_form(1, 12, "1c");
    check_option_form(1, 13, "1d 00");
    check_option_form(1, 268, "1d ff");
    check_option_form(1, 269, "1e 00 00");
    check_option_form(300, 300, "ee 00 1f 00 1f");
    check_option_form(14, 13, "dd 01 00");
}

static void test_option_order(void)
{
    uint8_t out[64];
    struct coap_msg m = {.type = COAP_NON, .code = COAP_POST, .mid = 1};
    struct coap_opt sorted[] = {
        {.num = 11, .val = (const uint8_t *)"a", .len = 1},
        {.num = 11, .val = (const uint8_t *)"b", .len = 1},
        {.num = 15, .val = (const uint8_t *)"q", .len = 1},
    };
    struct coap_opt unsorted[] = {sorted[2], sorted[0]};

    ssize_t n = coap_encode(&m, sorted, 3, out, sizeof out);
    CHECK_EQ_INT(n, 4 + 6);
    uint8_t want[] = {0x50, 0x02, 0x00, 0x01, 0xb1, 'a', 0x01, 'b', 0x41, 'q'};
    CHECK(memcmp(out, want, sizeof want) == 0);
    CHECK_EQ_INT(coap_encode(&m, unsorted, 2, out, sizeof out), -1);

    /* repeats come back in the order sent */
    struct coap_msg d;
    struct coap_opt_iter it;
    struct coap_opt o;
    char path[8];
    CHECK_EQ_INT(coap_decode(out, (size_t)n, &d), COAP_OK);
    coap_opt_begin(&d, &it);
    CHECK(coap_opt_next(&it, &o) && o.num == 11 && o.val[0] == 'a');
    CHECK(coap_opt_next(&it, &o) && o.num == 11 && o.val[0] == 'b');
    CHECK(coap_opt_next(&it, &o) && o.num == 15);
    CHECK(!coap_opt_next(&it, &o));
    CHECK_EQ_INT(coap_uri_path(&d, path, sizeof path), 3);
    CHECK_EQ_STR(path, "a/b");

    /* what no receiver could read back the same */
    struct coap_msg bad = {.type = COAP_CON, .code = COAP_EMPTY, .tkl = 1, .token = out};
    CHECK_EQ_INT(coap_encode(&bad, NULL, 0, out, sizeof out), -1);
    bad = (struct coap_msg){.type = COAP_CON, .code = COAP_GET, .tkl = 9, .token = out};
    CHECK_EQ_INT(coap_encode(&bad, NULL, 0, out, sizeof out), -1);
    bad = (struct coap_msg){.type = COAP_CON, .code = COAP_EMPTY};
    CHECK_EQ_INT(coap_encode(&bad, sorted, 1, out, sizeof out), -1);
    bad = coap_empty(COAP_NON, 1);
    CHECK_EQ_INT(coap_encode(&bad, NULL, 0, out, sizeof out), -1);
    bad = (struct coap_msg){.type = COAP_RST, .code = COAP_CONTENT};
    CHECK_EQ_INT(coap_encode(&bad, NULL, 0, out, sizeof out), -1);
    bad = (struct coap_msg){.type = COAP_ACK, .code = COAP_GET};
    CHECK_EQ_INT(coap_encode(&bad, NULL, 0, out, sizeof out), -1);
    bad = (struct coap_msg){.type = COAP_CON, .code = COAP_CODE(7, 1)};
    CHECK_EQ_INT(coap_encode(&bad, NULL, 0, out, sizeof out), -1);
}

static void test_option_bits(void)
{
    CHECK(coap_opt_critical(COAP_OPT_URI_PATH));
    CHECK(!coap_opt_critical(COAP_OPT_OBSERVE));
    CHECK(coap_opt_critical(COAP_OPT_BLOCK2));
    CHECK(coap_opt_unsafe(COAP_OPT_URI_PATH));
    CHECK(!coap_opt_unsafe(COAP_OPT_ETAG));
    CHECK(coap_opt_unsafe(COAP_OPT_BLOCK1));
    CHECK(coap_opt_no_cache_key(COAP_OPT_SIZE1));
    CHECK(coap_opt_no_cache_key(COAP_OPT_SIZE2)); /* 28: safe but not a cache key */
    CHECK(!coap_opt_no_cache_key(COAP_OPT_URI_QUERY));
    CHECK(coap_opt_known(COAP_OPT_PROXY_URI));
    CHECK(!coap_opt_known(2049));
}

/* A GET with the options given as hex after the header. */
static coap_err check_opts_hex(const char *opts, uint16_t *bad)
{
    char s[128];
    uint8_t buf[64];
    struct coap_msg m;

    snprintf(s, sizeof s, "40 01 00 01 %s", opts);
    CHECK_EQ_INT(decode_hex(s, &m, buf, sizeof buf), COAP_OK);
    return coap_check_options(&m, bad);
}

static void test_check_options(void)
{
    uint16_t bad = 0;

    CHECK_EQ_INT(check_opts_hex("b1 61 41 71", &bad), COAP_OK);
    /* 2049 (critical, unknown): e0 06 f4 is delta 269 + 0x06f4 = 2049 */
    CHECK_EQ_INT(check_opts_hex("e0 06 f4", &bad), COAP_ERR_BAD_OPTION);
    CHECK_EQ_INT(bad, 2049);
    /* 2048 is elective: ignored */
    CHECK_EQ_INT(check_opts_hex("e0 06 f3", &bad), COAP_OK);
    /* Uri-Host twice, and empty */
    CHECK_EQ_INT(check_opts_hex("31 61 01 62", &bad), COAP_ERR_BAD_OPTION);
    CHECK_EQ_INT(bad, COAP_OPT_URI_HOST);
    CHECK_EQ_INT(check_opts_hex("30", &bad), COAP_ERR_BAD_OPTION);
    /* If-None-Match takes no value; Accept (critical) at most 2 bytes */
    CHECK_EQ_INT(check_opts_hex("51 00", &bad), COAP_ERR_BAD_OPTION);
    CHECK_EQ_INT(check_opts_hex("d3 04 01 02 03", &bad), COAP_ERR_BAD_OPTION);
    CHECK_EQ_INT(bad, COAP_OPT_ACCEPT);
    /* Content-Format (elective) too long, Observe twice: ignored */
    CHECK_EQ_INT(check_opts_hex("c3 01 02 03", &bad), COAP_OK);
    CHECK_EQ_INT(check_opts_hex("60 60", &bad), COAP_OK);
    /* Uri-Path repeats */
    CHECK_EQ_INT(check_opts_hex("b1 61 01 62 01 63", &bad), COAP_OK);
}

static void test_uint(void)
{
    static const struct {
        uint32_t v;
        size_t n;
    } cases[] = {{0, 0}, {1, 1}, {255, 1}, {256, 2}, {65535, 2}, {65536, 3}, {0xFFFFFF, 3},
                 {0x1000000, 4}, {UINT32_MAX, 4}};
    uint8_t out[4];
    uint32_t v;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = coap_uint_put(out, cases[i].v);
        CHECK_EQ_INT(n, cases[i].n);
        CHECK(n == 0 || out[0] != 0);
        CHECK(coap_uint_get(out, n, &v));
        CHECK_EQ_INT(v, cases[i].v);
    }
    uint8_t lead[] = {0, 0, 1, 2, 3};
    CHECK(coap_uint_get(lead, 4, &v)); /* leading zeros are read */
    CHECK_EQ_INT(v, 0x102);
    CHECK(!coap_uint_get(lead, 5, &v));
}

static void test_block(void)
{
    static const struct {
        struct coap_block b;
        const char *hex;
    } cases[] = {
        {{.num = 0, .more = false, .szx = 0}, ""},
        {{.num = 0, .more = true, .szx = 2}, "0a"},
        {{.num = 1, .more = false, .szx = 6}, "16"},
        {{.num = 15, .more = true, .szx = 6}, "fe"},
        {{.num = 16, .more = false, .szx = 0}, "01 00"},
        {{.num = 4095, .more = true, .szx = 1}, "ff f9"},
        {{.num = 4096, .more = false, .szx = 0}, "01 00 00"},
        {{.num = COAP_BLOCK_NUM_MAX, .more = true, .szx = 6}, "ff ff fe"},
    };
    uint8_t out[3], want[3];
    struct coap_block b;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t wn = hex(cases[i].hex, want, sizeof want);
        CHECK(coap_block_valid(&cases[i].b));
        size_t n = coap_block_put(out, &cases[i].b);
        CHECK_EQ_INT(n, wn);
        CHECK(memcmp(out, want, n) == 0);
        CHECK(coap_block_get(out, n, &b));
        CHECK(b.num == cases[i].b.num && b.more == cases[i].b.more && b.szx == cases[i].b.szx);
    }
    uint8_t szx7[] = {0x07}, four[] = {0, 0, 0, 0x10};
    CHECK(!coap_block_get(szx7, 1, &b));
    CHECK(!coap_block_get(four, 4, &b));
    CHECK(!coap_block_valid(&(struct coap_block){.num = COAP_BLOCK_NUM_MAX + 1}));
    CHECK(!coap_block_valid(&(struct coap_block){.szx = 7}));
    CHECK_EQ_INT(COAP_BLOCK_SIZE(0), 16);
    CHECK_EQ_INT(COAP_BLOCK_SIZE(6), 1024);
}

static void test_uri(void)
{
    uint8_t buf[64];
    struct coap_msg m;
    coap_view v;
    char path[16];

    /* no Uri-Path: the empty topic */
    CHECK_EQ_INT(decode_hex("40 01 00 01", &m, buf, sizeof buf), COAP_OK);
    CHECK_EQ_INT(coap_uri_path(&m, path, sizeof path), 0);
    CHECK_EQ_STR(path, "");
    CHECK_EQ_INT(coap_uri_path(&m, path, 0), -1);
    /* a segment with '/' or NUL is refused */
    CHECK_EQ_INT(decode_hex("40 01 00 01 b3 61 2f 62", &m, buf, sizeof buf), COAP_OK);
    CHECK_EQ_INT(coap_uri_path(&m, path, sizeof path), -1);
    CHECK_EQ_INT(decode_hex("40 01 00 01 b1 00", &m, buf, sizeof buf), COAP_OK);
    CHECK_EQ_INT(coap_uri_path(&m, path, sizeof path), -1);
    /* dot segments: "a/../b" is refused, "a/./b" too; "..." and ".x" are names */
    CHECK_EQ_INT(decode_hex("40 01 00 01 b1 61 02 2e 2e 01 62", &m, buf, sizeof buf), COAP_OK);
    CHECK_EQ_INT(coap_uri_path(&m, path, sizeof path), -1);
    CHECK_EQ_INT(decode_hex("40 01 00 01 b1 61 01 2e 01 62", &m, buf, sizeof buf), COAP_OK);
    CHECK_EQ_INT(coap_uri_path(&m, path, sizeof path), -1);
    CHECK_EQ_INT(decode_hex("40 01 00 01 b3 2e 2e 2e 02 2e 78", &m, buf, sizeof buf), COAP_OK);
    CHECK_EQ_INT(coap_uri_path(&m, path, sizeof path), 6);
    CHECK_EQ_STR(path, ".../.x");
    /* queries: name=value, a bare name, a longer name that shares the prefix */
    CHECK_EQ_INT(decode_hex("40 01 00 01 d3 02 71 3d 31 06 72 65 74 61 69 6e 01 71 "
                            "06 71 6f 73 3d 32 31",
                            &m, buf, sizeof buf),
                 COAP_OK);
    CHECK(coap_uri_query(&m, "q", &v) && v.len == 1 && v.p[0] == '1');
    CHECK(coap_uri_query(&m, "retain", &v) && v.len == 0);
    CHECK(coap_uri_query(&m, "qos", &v) && v.len == 2 && memcmp(v.p, "21", 2) == 0);
    CHECK(!coap_uri_query(&m, "x", &v));
}

static void test_answers(void)
{
    uint8_t buf[64], out[64], want[64];
    struct coap_msg req, m;

    /* CON GET with token 0xAB, mid 0x1234 -> piggybacked 4.01 */
    CHECK_EQ_INT(decode_hex("41 01 12 34 ab b1 61", &req, buf, sizeof buf), COAP_OK);
    m = coap_answer(&req, COAP_UNAUTHORIZED, 99);
    size_t wn = hex("61 81 12 34 ab", want, sizeof want);
    CHECK_EQ_INT(coap_encode(&m, NULL, 0, out, sizeof out), wn);
    CHECK(memcmp(out, want, wn) == 0);
    /* 4.13 with Size1 = 1024 */
    uint8_t sz[4];
    struct coap_opt size1 = {.num = COAP_OPT_SIZE1, .val = sz, .len = 0};
    size1.len = (uint32_t)coap_uint_put(sz, 1024);
    m = coap_answer(&req, COAP_TOO_LARGE, 99);
    wn = hex("61 8d 12 34 ab d2 2f 04 00", want, sizeof want);
    CHECK_EQ_INT(coap_encode(&m, &size1, 1, out, sizeof out), wn);
    CHECK(memcmp(out, want, wn) == 0);
    /* NON request: NON answer with mgate's id */
    CHECK_EQ_INT(decode_hex("51 02 12 35 ab", &req, buf, sizeof buf), COAP_OK);
    m = coap_answer(&req, COAP_SERVICE_UNAVAILABLE, 0x0102);
    wn = hex("51 a3 01 02 ab", want, sizeof want);
    CHECK_EQ_INT(coap_encode(&m, NULL, 0, out, sizeof out), wn);
    CHECK(memcmp(out, want, wn) == 0);
    /* RST and empty ACK */
    m = coap_empty(COAP_RST, 0xbeef);
    wn = hex("70 00 be ef", want, sizeof want);
    CHECK_EQ_INT(coap_encode(&m, NULL, 0, out, sizeof out), wn);
    CHECK(memcmp(out, want, wn) == 0);
    m = coap_empty(COAP_ACK, 0xbeef);
    CHECK_EQ_INT(coap_encode(&m, NULL, 0, out, sizeof out), 4);
    CHECK_EQ_INT(out[0], 0x60);
    /* too small a buffer, at every size */
    m = coap_answer(&req, COAP_FORBIDDEN, 1);
    m.payload = (coap_view){.p = (const uint8_t *)"no", .len = 2};
    for (size_t cap = 0; cap < 8; cap++)
        CHECK_EQ_INT(coap_encode(&m, NULL, 0, out, cap), -1);
    CHECK_EQ_INT(coap_encode(&m, NULL, 0, out, 8), 8);
}

static void test_reject(void)
{
    uint8_t buf[64] = {0x40, 0x01};
    struct coap_msg m;
    uint16_t bad;

    CHECK_EQ_INT(coap_reject_how(&m, coap_decode(buf, 2, &m)), COAP_REJECT_DROP);
    CHECK_EQ_INT(coap_reject_how(&m, decode_hex("00 01 00 00", &m, buf, sizeof buf)), COAP_REJECT_DROP);
    /* format errors: RST a CON, ignore the rest */
    CHECK_EQ_INT(coap_reject_how(&m, decode_hex("49 01 00 00", &m, buf, sizeof buf)), COAP_REJECT_RST);
    CHECK_EQ_INT(coap_reject_how(&m, decode_hex("40 01 00 00 ff", &m, buf, sizeof buf)), COAP_REJECT_RST);
    CHECK_EQ_INT(coap_reject_how(&m, decode_hex("50 01 00 00 ff", &m, buf, sizeof buf)), COAP_REJECT_DROP);
    CHECK_EQ_INT(coap_reject_how(&m, decode_hex("60 45 00 00 ff", &m, buf, sizeof buf)), COAP_REJECT_DROP);
    CHECK_EQ_INT(coap_reject_how(&m, decode_hex("70 45 00 00", &m, buf, sizeof buf)), COAP_REJECT_DROP);
    CHECK_EQ_INT(coap_reject_how(&m, decode_hex("40 e0 00 00", &m, buf, sizeof buf)), COAP_REJECT_RST);
    /* an unknown critical option: 4.02 to a CON request, RST to a CON
     * response, nothing to a NON */
    CHECK_EQ_INT(decode_hex("40 01 00 00 e0 06 f4", &m, buf, sizeof buf), COAP_OK);
    CHECK_EQ_INT(coap_reject_how(&m, coap_check_options(&m, &bad)), COAP_REJECT_BAD_OPTION);
    CHECK_EQ_INT(decode_hex("40 45 00 00 e0 06 f4", &m, buf, sizeof buf), COAP_OK);
    CHECK_EQ_INT(coap_reject_how(&m, coap_check_options(&m, &bad)), COAP_REJECT_RST);
    CHECK_EQ_INT(decode_hex("50 01 00 00 e0 06 f4", &m, buf, sizeof buf), COAP_OK);
    CHECK_EQ_INT(coap_reject_how(&m, coap_check_options(&m, &bad)), COAP_REJECT_DROP);
}

int main(void)
{
    test_rfc_examples();
    test_captured();
    test_captured_fields();
    test_format_errors();
    test_extended_forms();
    test_option_order();
    test_option_bits();
    test_check_options();
    test_uint();
    test_block();
    test_uri();
    test_answers();
    test_reject();
    return check_done("test_coap_codec");
}
