/*
 * Decoding one datagram (RFC 7252 §3): the 4-byte header, the token, the
 * options up to the payload marker, the payload.  Everything the message
 * points to is in the input.  The checks follow the order of the bytes, so
 * the first thing wrong is the one reported.
 */
#include "coap/coap.h"

static coap_err header(const uint8_t *p, size_t n, struct coap_msg *m)
{
    if (n < COAP_HEADER_LEN)
        return COAP_ERR_SHORT;
    if (p[0] >> 6 != COAP_VERSION)
        return COAP_ERR_VERSION;
    m->type = (p[0] >> 4) & 3;
    m->tkl = p[0] & 0xF;
    m->code = p[1];
    m->mid = (uint16_t)(p[2] << 8 | p[3]);
    if (m->tkl > COAP_TOKEN_MAX)
        return COAP_ERR_TOKEN_LEN;
    if (n - COAP_HEADER_LEN < m->tkl)
        return COAP_ERR_TRUNCATED;
    m->token = p + COAP_HEADER_LEN;
    return COAP_OK;
}

/* Options from p until the marker or the end; sets m->options, opt_count
 * and the payload. */
static coap_err options(const uint8_t *p, const uint8_t *end, struct coap_msg *m)
{
    const uint8_t *start = p;
    uint16_t num = 0;
    struct coap_opt o;
    size_t used;
    coap_err err;

    m->opt_count = 0;
    while (p < end && *p != COAP_PAYLOAD_MARKER) {
        if ((err = coap_opt_parse(p, end, num, &o, &used)) != COAP_OK)
            return err;
        num = o.num;
        p += used;
        m->opt_count++;
    }
    m->options = (coap_view){.p = start, .len = (size_t)(p - start)};
    m->payload = (coap_view){.p = end, .len = 0};
    if (p == end)
        return COAP_OK;
    if (end - p == 1) /* §3: a marker followed by nothing */
        return COAP_ERR_EMPTY_PAYLOAD;
    m->payload = (coap_view){.p = p + 1, .len = (size_t)(end - p - 1)};
    return COAP_OK;
}

coap_err coap_check_code(uint8_t type, uint8_t code)
{
    unsigned cls = COAP_CODE_CLASS(code);

    if (code == COAP_EMPTY) /* a NON always carries a request or response (§4.3) */
        return type == COAP_NON ? COAP_ERR_TYPE_CODE : COAP_OK;
    if (cls == 1 || cls >= 6)
        return COAP_ERR_CODE_CLASS;
    /* a RST is always empty, an ACK carries a response or nothing (§4.2) */
    if (type == COAP_RST || (type == COAP_ACK && cls == 0))
        return COAP_ERR_TYPE_CODE;
    return COAP_OK;
}

coap_err coap_decode(const uint8_t *p, size_t n, struct coap_msg *m)
{
    coap_err err;

    *m = (struct coap_msg){0};
    if ((err = header(p, n, m)) != COAP_OK)
        return err;
    /* an empty message is judged on its length alone: its bytes after the
     * header are an error whatever they hold (§4.1) */
    if (m->code == COAP_EMPTY) {
        if (n != COAP_HEADER_LEN)
            return COAP_ERR_EMPTY_MSG;
        m->options = (coap_view){.p = p + n, .len = 0};
        m->payload = (coap_view){.p = p + n, .len = 0};
    } else if ((err = options(p + COAP_HEADER_LEN + m->tkl, p + n, m)) != COAP_OK) {
        return err;
    }
    return coap_check_code(m->type, m->code);
}

const char *coap_err_name(coap_err err)
{
    static const char *const names[] = {
        [COAP_OK] = "ok",
        [COAP_ERR_SHORT] = "shorter than a header",
        [COAP_ERR_VERSION] = "unknown version",
        [COAP_ERR_TOKEN_LEN] = "token length over 8",
        [COAP_ERR_TRUNCATED] = "truncated",
        [COAP_ERR_OPT_RESERVED] = "reserved option nibble",
        [COAP_ERR_OPT_NUMBER] = "option number over 65535",
        [COAP_ERR_EMPTY_PAYLOAD] = "payload marker without payload",
        [COAP_ERR_EMPTY_MSG] = "empty message with content",
        [COAP_ERR_CODE_CLASS] = "reserved code class",
        [COAP_ERR_TYPE_CODE] = "code not allowed in this type",
        [COAP_ERR_BAD_OPTION] = "bad critical option",
    };
    if ((unsigned)err >= sizeof names / sizeof names[0])
        return "?";
    return names[err];
}
