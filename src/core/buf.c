#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

int buf_reserve(struct buf *b, size_t n)
{
    if (buf_room(b) >= n)
        return 0;
    if (b->off && b->cap - b->len >= n) {
        memmove(b->data, buf_head(b), b->len);
        b->off = 0;
        return 0;
    }
    size_t need = (size_t)b->len + n;
    if (need > UINT32_MAX)
        return -1;
    size_t cap = b->cap ? b->cap : 512;
    while (cap < need)
        cap *= 2;
    if (cap > UINT32_MAX)
        cap = need;
    uint8_t *p = malloc(cap);
    if (!p)
        return -1;
    if (b->len)
        memcpy(p, buf_head(b), b->len);
    free(b->data);
    b->data = p;
    b->off = 0;
    b->cap = (uint32_t)cap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(buf_tail(b), p, n);
    b->len += (uint32_t)n;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        buf_release(b);
        return;
    }
    b->off += (uint32_t)n;
    b->len -= (uint32_t)n;
}

void buf_release(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}
