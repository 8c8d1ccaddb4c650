/*
 * Encoding a message (RFC 7252 §3).  Each option's delta and length take
 * the one form their size allows (under 13 in the nibble, under 269 in one
 * extra byte, else two), so the output of an encode of what decode found
 * is the input again.
 */
#include <string.h>

#include "core/util.h"
#include "coap/coap.h"

/* A bounded writer: once something did not fit, ok stays false. */
struct wr {
    uint8_t *p, *end;
    bool ok;
};

static void put(struct wr *w, const void *src, size_t n)
{
    if (!w->ok || (size_t)(w->end - w->p) < n) {
        w->ok = false;
        return;
    }
    if (n)
        memcpy(w->p, src, n);
    w->p += n;
}

static void put_u8(struct wr *w, uint8_t v) { put(w, &v, 1); }

/* The nibble for v and its extension bytes in ext (0, 1 or 2 of them). */
static unsigned nibble(uint32_t v, uint8_t ext[2], size_t *next)
{
    if (v < 13) {
        *next = 0;
        return v;
    }
    if (v < 269) {
        ext[0] = (uint8_t)(v - 13);
        *next = 1;
        return 13;
    }
    v -= 269;
    ext[0] = (uint8_t)(v >> 8);
    ext[1] = (uint8_t)v;
    *next = 2;
    return 14;
}

static void put_option(struct wr *w, uint32_t delta, const struct coap_opt *o)
{
    uint8_t dext[2], lext[2];
    size_t dn, ln;
    unsigned dnib = nibble(delta, dext, &dn), lnib = nibble(o->len, lext, &ln);

    put_u8(w, (uint8_t)(dnib << 4 | lnib));
    put(w, dext, dn);
    put(w, lext, ln);
    put(w, o->val, o->len);
}

/* What no receiver could decode back to the same message. */
static bool encodable(const struct coap_msg *m, const struct coap_opt *opts, size_t n)
{
    if (m->tkl > COAP_TOKEN_MAX || m->type > COAP_RST)
        return false;
    if (m->code == COAP_EMPTY && (m->tkl || n || m->payload.len))
        return false;
    if (coap_check_code(m->type, m->code) != COAP_OK)
        return false;
    for (size_t i = 0; i < n; i++) {
        ASSERT(opts[i].val || !opts[i].len);
        if (i && opts[i].num < opts[i - 1].num)
            return false;
        if (opts[i].len > UINT16_MAX + 269u)
            return false;
    }
    return true;
}

ssize_t coap_encode(const struct coap_msg *m, const struct coap_opt *opts, size_t n, uint8_t *buf,
                    size_t cap)
{
    struct wr w = {.p = buf, .end = buf + cap, .ok = true};
    uint16_t prev = 0;

    ASSERT(m->token || !m->tkl);
    ASSERT(m->payload.p || !m->payload.len);
    if (!encodable(m, opts, n))
        return -1;
    put_u8(&w, (uint8_t)(COAP_VERSION << 6 | m->type << 4 | m->tkl));
    put_u8(&w, m->code);
    put_u8(&w, (uint8_t)(m->mid >> 8));
    put_u8(&w, (uint8_t)m->mid);
    put(&w, m->token, m->tkl);
    for (size_t i = 0; i < n; i++) {
        put_option(&w, (uint32_t)(opts[i].num - prev), &opts[i]);
        prev = opts[i].num;
    }
    if (m->payload.len) {
        put_u8(&w, COAP_PAYLOAD_MARKER);
        put(&w, m->payload.p, m->payload.len);
    }
    return w.ok ? (ssize_t)(w.p - buf) : -1;
}
