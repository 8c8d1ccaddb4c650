/*
 * A growable byte buffer that holds memory only while it holds data: the
 * owner calls buf_release() when it empties, so idle connections cost
 * nothing.  Data lives in [data + off, data + off + len).
 */
#ifndef MGATE_BUF_H
#define MGATE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    uint32_t off, len, cap;
};

static inline uint8_t *buf_head(const struct buf *b) { return b->data + b->off; }
static inline uint8_t *buf_tail(const struct buf *b) { return b->data + b->off + b->len; }
static inline uint32_t buf_room(const struct buf *b) { return b->cap - b->off - b->len; }

/* Make room for n more bytes after the data (compacts, then grows). 0 or -1. */
int buf_reserve(struct buf *b, size_t n);
int buf_append(struct buf *b, const void *p, size_t n);
/* Drop n bytes from the front; frees the memory when the buffer empties. */
void buf_consume(struct buf *b, size_t n);
void buf_release(struct buf *b);

#endif
