/*
 * wsutil.h: RFC 6455 framing for the bench's WebSocket tools (wsecho.c,
 * wsload.c).  Header only; the accept key needs libcrypto (-lcrypto).
 */
#ifndef BENCH_WSUTIL_H
#define BENCH_WSUTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/evp.h>

enum { WS_CONT = 0, WS_TEXT = 1, WS_BINARY = 2, WS_CLOSE = 8, WS_PING = 9, WS_PONG = 10 };

#define WS_MAX_HEAD 14   /* 2 + 8 (length) + 4 (mask) */
#define WS_ACCEPT_LEN 28 /* base64 of a SHA-1 */

struct ws_head {
    bool fin, masked;
    uint8_t op;
    uint8_t mask[4];
    uint64_t len;
    size_t head_len;
};

/* A frame head from p: 1 (h filled), 0 (more bytes needed), -1 (RSV bits set). */
static inline int ws_parse_head(const uint8_t *p, size_t n, struct ws_head *h)
{
    if (n < 2)
        return 0;
    if (p[0] & 0x70)
        return -1;
    h->fin = p[0] & 0x80;
    h->op = p[0] & 0x0f;
    h->masked = p[1] & 0x80;
    uint64_t len = p[1] & 0x7f;
    size_t hl = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        hl = 10;
    }
    if (h->masked) {
        if (n < hl + 4)
            return 0;
        memcpy(h->mask, p + hl, 4);
        hl += 4;
    }
    h->len = len;
    h->head_len = hl;
    return 1;
}

/* A frame head into p (WS_MAX_HEAD bytes); mask NULL: unmasked.  Returns its length. */
static inline size_t ws_write_head(uint8_t *p, bool fin, uint8_t op, uint64_t len, const uint8_t *mask)
{
    size_t hl = 2;
    p[0] = (uint8_t)((fin ? 0x80 : 0) | (op & 0x0f));
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126) {
        p[1] = (uint8_t)(m | len);
    } else if (len < 65536) {
        p[1] = m | 126;
        p[2] = (uint8_t)(len >> 8);
        p[3] = (uint8_t)len;
        hl = 4;
    } else {
        p[1] = m | 127;
        for (int i = 0; i < 8; i++)
            p[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        hl = 10;
    }
    if (mask) {
        memcpy(p + hl, mask, 4);
        hl += 4;
    }
    return hl;
}

/* XORs p with the mask, p being at offset off of the payload. */
static inline void ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t off)
{
    uint8_t m[8];
    for (int i = 0; i < 8; i++)
        m[i] = mask[(off + (uint64_t)i) & 3];
    uint64_t m8;
    memcpy(&m8, m, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        v ^= m8;
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] ^= m[i & 7];
}

/* Sec-WebSocket-Accept of a key into out (WS_ACCEPT_LEN + 1 bytes); -1 if the key is too long. */
static inline int ws_accept(const char *key, char *out)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[128];
    size_t k = strlen(key);
    if (k + sizeof(guid) > sizeof(buf))
        return -1;
    memcpy(buf, key, k);
    memcpy(buf + k, guid, sizeof(guid) - 1);
    uint8_t sha[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(buf, k + sizeof(guid) - 1, sha, &n, EVP_sha1(), NULL) != 1 || n != 20)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, sha, (int)n);
    return 0;
}

/* Grows the buffer *b (capacity *cap, first size first) to hold need bytes; -1: no memory. */
static inline int ws_reserve(uint8_t **b, size_t *cap, size_t need, size_t first)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : first;
    while (n < need)
        n *= 2;
    uint8_t *p = realloc(*b, n);
    if (!p)
        return -1;
    *b = p;
    *cap = n;
    return 0;
}

/* Sends b[*off..len) until all is out or the socket is full; -1 on an error (errno). */
static inline int ws_send_queued(int fd, const uint8_t *b, size_t *off, size_t len)
{
    while (*off < len) {
        ssize_t k = send(fd, b + *off, len - *off, MSG_NOSIGNAL);
        if (k >= 0)
            *off += (size_t)k;
        else if (errno == EAGAIN)
            return 0;
        else if (errno != EINTR)
            return -1;
    }
    return 0;
}

/* recv, again after EINTR: bytes, 0 at the end, -1 with errno (EAGAIN: nothing yet). */
static inline ssize_t ws_recv(int fd, uint8_t *p, size_t n)
{
    ssize_t k;
    do
        k = recv(fd, p, n, 0);
    while (k < 0 && errno == EINTR);
    return k;
}

#endif
