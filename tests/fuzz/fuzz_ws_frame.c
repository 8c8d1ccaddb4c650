/*
 * Fuzzing the WebSocket framing the HTTP listener's relay reads both legs
 * with: arbitrary bytes as a stream of frames, read as a client's (masked)
 * and as a target's (unmasked) would be.  Every header the parser accepts
 * must be written back byte for byte by wsf_write_head (lengths are only
 * accepted in their shortest form), every prefix of it must ask for more,
 * masking twice must give the payload back, and the message sequence must
 * stay within its limit.  Any disagreement aborts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/ws_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MESSAGE 4096

static void fail(const char *why, const uint8_t *p, size_t n)
{
    fprintf(stderr, "fuzz_ws_frame: %s\n", why);
    for (size_t i = 0; i < n && i < 32; i++)
        fprintf(stderr, "%02x%s", p[i], i + 1 < n ? " " : "\n");
    abort();
}

static void check_head(const uint8_t *p, size_t n, int masked, const struct wsf_head *h)
{
    uint8_t again[WSF_MAX_HEAD];
    struct wsf_head h2;
    int code;
    if (h->head_len > n || h->head_len > WSF_MAX_HEAD || h->masked != masked)
        fail("head length or mask bit wrong", p, n);
    if (wsf_write_head(again, h->fin, h->op, h->len, h->masked ? h->mask : NULL) != h->head_len ||
        memcmp(again, p, h->head_len) != 0)
        fail("write_head(parse_head(x)) != x", p, n);
    for (size_t k = 0; k < h->head_len; k++)
        if (wsf_parse_head(p, k, masked, MAX_MESSAGE, &h2, &code) != 0)
            fail("a prefix of an accepted head did not ask for more", p, n);
}

static void stream(const uint8_t *data, size_t size, int masked)
{
    struct wsf_seq seq = {0};
    size_t off = 0;
    while (off < size) {
        struct wsf_head h;
        int code = 0;
        int rc = wsf_parse_head(data + off, size - off, masked, MAX_MESSAGE, &h, &code);
        if (rc < 0 && code != WSF_CLOSE_PROTOCOL && code != WSF_CLOSE_TOO_BIG)
            fail("refused without a close code", data + off, size - off);
        if (rc <= 0)
            return;
        check_head(data + off, size - off, masked, &h);
        enum wsf_op op;
        if (wsf_seq_frame(&seq, &h, MAX_MESSAGE, &op, &code) < 0)
            return;
        if (seq.msg_len > MAX_MESSAGE)
            fail("a message over its limit was accepted", data + off, size - off);
        off += h.head_len;
        size_t n = h.len < size - off ? (size_t)h.len : size - off;
        uint8_t *copy = malloc(n + 1);
        if (!copy)
            abort();
        memcpy(copy, data + off, n);
        wsf_mask(copy, n, h.mask, 3);
        wsf_mask(copy, n, h.mask, 3);
        if (memcmp(copy, data + off, n) != 0)
            fail("masking twice is not the identity", data + off, n);
        free(copy);
        off += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    stream(data, size, 1);
    stream(data, size, 0);
    if (size >= 24) { /* the accept key of any 24 characters: refused or 28 of base64 */
        char key[25], out[29];
        memcpy(key, data, 24);
        key[24] = '\0';
        if (wsf_accept(key, out) == 0 && strlen(out) != 28)
            fail("an accept key that is not 28 characters", data, 24);
    }
    return 0;
}
