/*
 * Turning a message down and answering it, as RFC 7252 asks of a
 * recipient (§4.2 confirmable, §4.3 non-confirmable, §5.4.1 options).
 */
#include "coap/coap.h"

enum coap_reject coap_reject_how(const struct coap_msg *m, coap_err err)
{
    /* without a header there is no id to answer; an unknown version must
     * be ignored silently (§3) */
    if (err <= COAP_ERR_VERSION)
        return COAP_REJECT_DROP;
    /* ACK and RST are never answered (§4.2); a NON may be reset but need
     * not, and not answering spoofed sources is the safer choice */
    if (m->type != COAP_CON)
        return COAP_REJECT_DROP;
    /* an unknown critical option in a confirmable request is 4.02; in a
     * confirmable response it is a rejection like a format error */
    if (err == COAP_ERR_BAD_OPTION && COAP_CODE_CLASS(m->code) == 0 && m->code != COAP_EMPTY)
        return COAP_REJECT_BAD_OPTION;
    return COAP_REJECT_RST;
}

struct coap_msg coap_answer(const struct coap_msg *req, uint8_t code, uint16_t non_mid)
{
    bool con = req->type == COAP_CON;

    return (struct coap_msg){
        .type = con ? COAP_ACK : COAP_NON,
        .code = code,
        .mid = con ? req->mid : non_mid,
        .tkl = req->tkl,
        .token = req->token,
    };
}

struct coap_msg coap_empty(enum coap_type type, uint16_t mid)
{
    return (struct coap_msg){.type = (uint8_t)type, .code = COAP_EMPTY, .mid = mid};
}
