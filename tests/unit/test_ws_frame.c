/* The RFC 6455 framing for the HTTP listener's WebSocket upgrade: headers in
 * all three length forms, masking, the refusals (RSV, opcodes, control
 * frames, non-minimal lengths, masks on the wrong side, limits), the
 * fragmentation rules and the accept key (the RFC's own example). */
#include <stdint.h>

#include "check.h"
#include "net/ws_frame.h"

static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Write a header, parse it back byte by byte: 0 until the last byte. */
static void roundtrip(uint64_t len, const uint8_t *mask, size_t want_head)
{
    uint8_t b[WSF_MAX_HEAD];
    struct wsf_head h;
    int code = -1;
    size_t n = wsf_write_head(b, 1, WSF_BINARY, len, mask);
    CHECK_EQ_INT(n, want_head);
    for (size_t i = 0; i < n; i++)
        CHECK_EQ_INT(wsf_parse_head(b, i, mask != NULL, UINT64_MAX >> 1, &h, &code), 0);
    CHECK_EQ_INT(wsf_parse_head(b, n, mask != NULL, UINT64_MAX >> 1, &h, &code), 1);
    CHECK_EQ_INT(h.len, len);
    CHECK_EQ_INT(h.head_len, n);
    CHECK_EQ_INT(h.op, WSF_BINARY);
    CHECK(h.fin);
    CHECK_EQ_INT(h.masked, mask != NULL);
    if (mask)
        CHECK(memcmp(h.mask, mask, 4) == 0);
}

static int refused(const uint8_t *b, size_t n, int want_masked, uint64_t max)
{
    struct wsf_head h;
    int code = 0;
    int r = wsf_parse_head(b, n, want_masked, max, &h, &code);
    return r == -1 ? code : 0;
}

int main(void)
{
    roundtrip(0, NULL, 2);
    roundtrip(125, NULL, 2);
    roundtrip(126, NULL, 4);
    roundtrip(65535, NULL, 4);
    roundtrip(65536, NULL, 10);
    roundtrip(200 * 1024, key, 14);
    roundtrip(5, key, 6);

    /* RFC 6455 5.7: a masked "Hello" from a client */
    {
        const uint8_t wire[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
        struct wsf_head h;
        int code;
        CHECK_EQ_INT(wsf_parse_head(wire, sizeof(wire), 1, 1000, &h, &code), 1);
        CHECK_EQ_INT(h.op, WSF_TEXT);
        CHECK_EQ_INT(h.len, 5);
        uint8_t pl[5];
        memcpy(pl, wire + h.head_len, 5);
        wsf_mask(pl, 2, h.mask, 0); /* in two pieces: the offset carries the key's phase */
        wsf_mask(pl + 2, 3, h.mask, 2);
        CHECK(memcmp(pl, "Hello", 5) == 0);
        /* and the unmasked one from a server is 81 05 "Hello" */
        uint8_t b[WSF_MAX_HEAD];
        CHECK_EQ_INT(wsf_write_head(b, 1, WSF_TEXT, 5, NULL), 2);
        CHECK(b[0] == 0x81 && b[1] == 0x05);
        /* the same frame where no mask belongs, and unmasked where one must be */
        CHECK_EQ_INT(refused(wire, sizeof(wire), 0, 1000), WSF_CLOSE_PROTOCOL);
        CHECK_EQ_INT(refused(b, 2, 1, 1000), WSF_CLOSE_PROTOCOL);
    }

    /* refusals */
    {
        const uint8_t rsv[] = {0xC1, 0x00};
        const uint8_t op3[] = {0x83, 0x00};
        const uint8_t opB[] = {0x8B, 0x00};
        const uint8_t frag_ping[] = {0x09, 0x00};
        const uint8_t long_ping[] = {0x89, 0x7E, 0x00, 0x7E};
        const uint8_t short16[] = {0x82, 0x7E, 0x00, 0x7D};
        const uint8_t short64[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
        const uint8_t top64[] = {0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0};
        const uint8_t big[] = {0x82, 0x7E, 0x01, 0x00};
        const uint8_t ok[] = {0x82, 0x7E, 0x00, 0xFF};
        CHECK_EQ_INT(refused(rsv, 2, 0, 1000), WSF_CLOSE_PROTOCOL);
        CHECK_EQ_INT(refused(op3, 2, 0, 1000), WSF_CLOSE_PROTOCOL);
        CHECK_EQ_INT(refused(opB, 2, 0, 1000), WSF_CLOSE_PROTOCOL);
        CHECK_EQ_INT(refused(frag_ping, 2, 0, 1000), WSF_CLOSE_PROTOCOL);
        CHECK_EQ_INT(refused(long_ping, 4, 0, 1000), WSF_CLOSE_PROTOCOL);
        CHECK_EQ_INT(refused(short16, 4, 0, 1000), WSF_CLOSE_PROTOCOL);
        CHECK_EQ_INT(refused(short64, 10, 0, 1000), WSF_CLOSE_PROTOCOL);
        CHECK_EQ_INT(refused(top64, 10, 0, UINT64_MAX), WSF_CLOSE_PROTOCOL);
        CHECK_EQ_INT(refused(big, 4, 0, 255), WSF_CLOSE_TOO_BIG);
        CHECK_EQ_INT(refused(ok, 4, 0, 255), 0);
    }

    /* fragmentation: TEXT(no FIN) PING CONT CONT(FIN), then the errors */
    {
        struct wsf_seq s = {0};
        enum wsf_op op;
        int code;
        struct wsf_head t = {.fin = 0, .op = WSF_TEXT, .len = 10};
        struct wsf_head ping = {.fin = 1, .op = WSF_PING, .len = 3};
        struct wsf_head c1 = {.fin = 0, .op = WSF_CONT, .len = 10};
        struct wsf_head c2 = {.fin = 1, .op = WSF_CONT, .len = 5};
        struct wsf_head b = {.fin = 1, .op = WSF_BINARY, .len = 1};
        CHECK_EQ_INT(wsf_seq_frame(&s, &t, 100, &op, &code), 0);
        CHECK_EQ_INT(op, WSF_TEXT);
        CHECK_EQ_INT(wsf_seq_frame(&s, &ping, 100, &op, &code), 0);
        CHECK_EQ_INT(op, WSF_PING);
        CHECK_EQ_INT(wsf_seq_frame(&s, &b, 100, &op, &code), -1); /* a new message inside one */
        CHECK_EQ_INT(code, WSF_CLOSE_PROTOCOL);
        CHECK_EQ_INT(wsf_seq_frame(&s, &c1, 100, &op, &code), 0);
        CHECK_EQ_INT(op, WSF_TEXT);
        CHECK_EQ_INT(wsf_seq_frame(&s, &c2, 100, &op, &code), 0);
        CHECK_EQ_INT(op, WSF_TEXT);
        CHECK_EQ_INT(s.msg_len, 25);
        CHECK(!s.in_message);
        CHECK_EQ_INT(wsf_seq_frame(&s, &c2, 100, &op, &code), -1); /* CONT with no message */
        CHECK_EQ_INT(code, WSF_CLOSE_PROTOCOL);
        CHECK_EQ_INT(wsf_seq_frame(&s, &b, 100, &op, &code), 0);
        CHECK_EQ_INT(op, WSF_BINARY);
        /* the message limit counts all the fragments */
        struct wsf_seq s2 = {0};
        CHECK_EQ_INT(wsf_seq_frame(&s2, &t, 24, &op, &code), 0);
        CHECK_EQ_INT(wsf_seq_frame(&s2, &c1, 24, &op, &code), 0);
        CHECK_EQ_INT(wsf_seq_frame(&s2, &c2, 24, &op, &code), -1);
        CHECK_EQ_INT(code, WSF_CLOSE_TOO_BIG);
    }

    /* accept key: RFC 6455 1.3's example, and keys that are not 16 bytes */
    {
        char out[29];
        CHECK_EQ_INT(wsf_accept("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
        CHECK_EQ_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        CHECK_EQ_INT(wsf_accept("dGhlIHNhbXBsZSBub25jZQ=", out), -1);
        CHECK_EQ_INT(wsf_accept("dGhlIHNhbXBsZSBub25jZQ===", out), -1);
        CHECK_EQ_INT(wsf_accept("dGhlIHNhbXBsZSBub25jZ*==", out), -1);
    }

    /* masking, 8 bytes a step, against the definition: any start, length and phase */
    {
        static const uint8_t mkey[4] = {0x37, 0xfa, 0x21, 0x3d};
        uint8_t buf[80], ref[80];
        int bad = 0;
        for (size_t start = 0; start < 8; start++)
            for (size_t n = 0; n + start <= 64; n++)
                for (uint64_t off = 0; off < 5; off++) {
                    for (size_t i = 0; i < sizeof(buf); i++)
                        buf[i] = ref[i] = (uint8_t)(i * 7 + 3);
                    for (size_t i = 0; i < n; i++)
                        ref[start + i] ^= mkey[(off + i) % 4];
                    wsf_mask(buf + start, n, mkey, off);
                    bad += memcmp(buf, ref, sizeof(buf)) != 0;
                }
        CHECK_EQ_INT(bad, 0);
    }

    /* masking into another place: apart, and moved down over (a frame head) */
    {
        static const uint8_t mkey[4] = {0x37, 0xfa, 0x21, 0x3d};
        uint8_t buf[160], ref[160], src[160];
        int bad = 0;
        for (size_t gap = 0; gap < 15; gap++) /* dst = src - gap in one buffer; 0: in place */
            for (size_t n = 0; n + gap <= 140; n++)
                for (uint64_t off = 0; off < 5; off++) {
                    for (size_t i = 0; i < sizeof(buf); i++)
                        buf[i] = ref[i] = src[i] = (uint8_t)(i * 11 + 5);
                    for (size_t i = 0; i < n; i++)
                        ref[3 + i] = (uint8_t)(src[3 + gap + i] ^ mkey[(off + i) % 4]);
                    wsf_mask_to(buf + 3, buf + 3 + gap, n, mkey, off);
                    bad += memcmp(buf, ref, 3 + n) != 0; /* beyond 3 + n: what the move left */
                    uint8_t out[160];
                    memset(out, 0xAA, sizeof(out));
                    wsf_mask_to(out + 1, src + gap, n, mkey, off);
                    for (size_t i = 0; i < n; i++)
                        bad += out[1 + i] != (uint8_t)(src[gap + i] ^ mkey[(off + i) % 4]);
                    bad += out[0] != 0xAA || out[1 + n] != 0xAA;
                }
        CHECK_EQ_INT(bad, 0);
    }

    /* close payload */
    {
        uint8_t p[125];
        CHECK_EQ_INT(wsf_close_payload(p, 1002, "bad"), 5);
        CHECK(p[0] == 0x03 && p[1] == 0xEA && memcmp(p + 2, "bad", 3) == 0);
        char longr[300];
        memset(longr, 'x', sizeof(longr) - 1);
        longr[sizeof(longr) - 1] = 0;
        CHECK_EQ_INT(wsf_close_payload(p, 1000, longr), 125);
    }

    return check_done("test_ws_frame");
}
