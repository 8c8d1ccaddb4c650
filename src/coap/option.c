/*
 * CoAP options on the wire (§3.1): a byte of delta and length nibbles,
 * their extended forms (13: one more byte, plus 13; 14: two more bytes,
 * plus 269; 15: reserved), then the value.  Decode validates with the same
 * step the iterator uses, so a decoded message always walks cleanly.
 */
#include "core/util.h"
#include "coap/coap.h"

/* One nibble and its extension at *p (which it moves past the extension). */
static coap_err ext_value(unsigned nib, const uint8_t **p, const uint8_t *end, uint32_t *v)
{
    if (nib < 13) {
        *v = nib;
        return COAP_OK;
    }
    if (nib == 15)
        return COAP_ERR_OPT_RESERVED;
    size_t need = nib == 13 ? 1 : 2;
    if ((size_t)(end - *p) < need)
        return COAP_ERR_TRUNCATED;
    *v = nib == 13 ? 13u + (*p)[0] : 269u + ((uint32_t)(*p)[0] << 8 | (*p)[1]);
    *p += need;
    return COAP_OK;
}

coap_err coap_opt_parse(const uint8_t *p, const uint8_t *end, uint16_t prev, struct coap_opt *opt,
                        size_t *used)
{
    const uint8_t *start = p;
    uint32_t delta, len;
    coap_err err;

    if (p >= end)
        return COAP_ERR_TRUNCATED;
    unsigned byte = *p++;
    /* the delta's nibble first: 0xF? is the payload marker to the caller,
     * and a length nibble of 15 is reserved whatever the delta */
    if ((err = ext_value(byte >> 4, &p, end, &delta)) != COAP_OK)
        return err;
    if ((err = ext_value(byte & 0xF, &p, end, &len)) != COAP_OK)
        return err;
    if (prev + delta > UINT16_MAX)
        return COAP_ERR_OPT_NUMBER;
    if ((size_t)(end - p) < len)
        return COAP_ERR_TRUNCATED;
    *opt = (struct coap_opt){.num = (uint16_t)(prev + delta), .val = p, .len = len};
    *used = (size_t)(p + len - start);
    return COAP_OK;
}

void coap_opt_begin(const struct coap_msg *m, struct coap_opt_iter *it)
{
    *it = (struct coap_opt_iter){
        .p = m->options.p,
        .end = m->options.p + m->options.len,
        .num = 0,
    };
}

bool coap_opt_next(struct coap_opt_iter *it, struct coap_opt *opt)
{
    size_t used;

    if (it->p >= it->end)
        return false;
    /* decode accepted these bytes: a failure here is a caller's bug (an
     * iterator over bytes that did not come from coap_decode); outside the
     * sanitizer build the walk just ends */
    coap_err err = coap_opt_parse(it->p, it->end, it->num, opt, &used);
    ASSERT(err == COAP_OK);
    if (err != COAP_OK) {
        it->p = it->end;
        return false;
    }
    it->p += used;
    it->num = opt->num;
    return true;
}

bool coap_opt_next_of(struct coap_opt_iter *it, uint16_t num, struct coap_opt *opt)
{
    while (coap_opt_next(it, opt)) {
        if (opt->num == num)
            return true;
        if (opt->num > num) { /* sorted: none can come later */
            it->p = it->end;
            return false;
        }
    }
    return false;
}

bool coap_opt_find(const struct coap_msg *m, uint16_t num, struct coap_opt *opt)
{
    struct coap_opt_iter it;

    coap_opt_begin(m, &it);
    return coap_opt_next_of(&it, num, opt);
}

ssize_t coap_opt_collect(const struct coap_msg *m, struct coap_opt *out, size_t cap)
{
    struct coap_opt_iter it;
    struct coap_opt o;
    size_t n = 0;

    coap_opt_begin(m, &it);
    while (coap_opt_next(&it, &o)) {
        if (n == cap)
            return -1;
        out[n++] = o;
    }
    return (ssize_t)n;
}
