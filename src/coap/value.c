/*
 * Option values with a structure: uint (§3.2) and Block1/Block2 (RFC 7959
 * §2.2), both big-endian integers of 0 to 4 (Block: 3) bytes.
 */
#include "core/util.h"
#include "coap/coap.h"

bool coap_uint_get(const uint8_t *p, size_t len, uint32_t *v)
{
    uint32_t x = 0;

    if (len > 4)
        return false;
    for (size_t i = 0; i < len; i++)
        x = x << 8 | p[i];
    *v = x;
    return true;
}

size_t coap_uint_put(uint8_t out[4], uint32_t v)
{
    size_t n = 0;

    /* minimal: no leading zero byte, so 0 is the empty value */
    for (uint32_t t = v; t; t >>= 8)
        n++;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return n;
}

bool coap_opt_uint(const struct coap_msg *m, uint16_t num, uint32_t *v)
{
    struct coap_opt o;

    return coap_opt_find(m, num, &o) && coap_uint_get(o.val, o.len, v);
}

bool coap_block_get(const uint8_t *p, size_t len, struct coap_block *b)
{
    uint32_t v;

    if (len > 3 || !coap_uint_get(p, len, &v))
        return false;
    *b = (struct coap_block){.num = v >> 4, .more = (v >> 3) & 1, .szx = v & 7};
    return b->szx != 7;
}

bool coap_block_valid(const struct coap_block *b)
{
    return b->num <= COAP_BLOCK_NUM_MAX && b->szx < 7;
}

size_t coap_block_put(uint8_t out[3], const struct coap_block *b)
{
    uint8_t tmp[4];

    ASSERT(coap_block_valid(b));
    uint32_t v = (b->num & COAP_BLOCK_NUM_MAX) << 4 | (uint32_t)b->more << 3 | (b->szx & 7);
    size_t n = coap_uint_put(tmp, v); /* at most 3: v < 2^24 */
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[i];
    return n;
}
