/*
 * The options mgate knows and their rules (RFC 7252 §5.4, §5.10 and the
 * RFCs that registered the others).  Only critical options can make a
 * message fail here: an elective one that is unknown, repeated or of the
 * wrong length is to be ignored by the recipient (§5.4.1, §5.4.5).
 */
#include "coap/coap.h"

struct opt_rule {
    uint16_t num;
    uint16_t min, max; /* value length in bytes */
    bool repeat;
};

static const struct opt_rule rules[] = {
    {.num = COAP_OPT_IF_MATCH, .min = 0, .max = 8, .repeat = true},
    {.num = COAP_OPT_URI_HOST, .min = 1, .max = 255},
    {.num = COAP_OPT_ETAG, .min = 1, .max = 8, .repeat = true},
    {.num = COAP_OPT_IF_NONE_MATCH, .min = 0, .max = 0},
    {.num = COAP_OPT_OBSERVE, .min = 0, .max = 3},
    {.num = COAP_OPT_URI_PORT, .min = 0, .max = 2},
    {.num = COAP_OPT_LOCATION_PATH, .min = 0, .max = 255, .repeat = true},
    {.num = COAP_OPT_OSCORE, .min = 0, .max = 255},
    {.num = COAP_OPT_URI_PATH, .min = 0, .max = 255, .repeat = true},
    {.num = COAP_OPT_CONTENT_FORMAT, .min = 0, .max = 2},
    {.num = COAP_OPT_MAX_AGE, .min = 0, .max = 4},
    {.num = COAP_OPT_URI_QUERY, .min = 0, .max = 255, .repeat = true},
    {.num = COAP_OPT_HOP_LIMIT, .min = 1, .max = 1},
    {.num = COAP_OPT_ACCEPT, .min = 0, .max = 2},
    {.num = COAP_OPT_LOCATION_QUERY, .min = 0, .max = 255, .repeat = true},
    {.num = COAP_OPT_BLOCK2, .min = 0, .max = 3},
    {.num = COAP_OPT_BLOCK1, .min = 0, .max = 3},
    {.num = COAP_OPT_SIZE2, .min = 0, .max = 4},
    {.num = COAP_OPT_PROXY_URI, .min = 1, .max = 1034},
    {.num = COAP_OPT_PROXY_SCHEME, .min = 1, .max = 255},
    {.num = COAP_OPT_SIZE1, .min = 0, .max = 4},
    {.num = COAP_OPT_ECHO, .min = 1, .max = 40},
    {.num = COAP_OPT_NO_RESPONSE, .min = 0, .max = 1},
    {.num = COAP_OPT_REQUEST_TAG, .min = 0, .max = 8, .repeat = true},
};

static const struct opt_rule *rule_of(uint16_t num)
{
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (rules[i].num == num)
            return &rules[i];
    return NULL;
}

bool coap_opt_known(uint16_t num) { return rule_of(num) != NULL; }

/* Whether a recipient that knows the rules may use this occurrence;
 * repeated: the same number came just before (options are sorted). */
static bool usable(const struct coap_opt *o, bool repeated)
{
    const struct opt_rule *r = rule_of(o->num);

    if (!r)
        return false;
    if (repeated && !r->repeat)
        return false;
    return o->len >= r->min && o->len <= r->max;
}

coap_err coap_check_options(const struct coap_msg *m, uint16_t *bad)
{
    struct coap_opt_iter it;
    struct coap_opt o;
    bool first = true;
    uint16_t prev = 0;

    coap_opt_begin(m, &it);
    while (coap_opt_next(&it, &o)) {
        bool repeated = !first && o.num == prev;
        if (coap_opt_critical(o.num) && !usable(&o, repeated)) {
            *bad = o.num;
            return COAP_ERR_BAD_OPTION;
        }
        first = false;
        prev = o.num;
    }
    return COAP_OK;
}
