/*
 * The request URI's parts as the front end uses them: the Uri-Path
 * segments as one topic, and a Uri-Query parameter by name.
 */
#include <string.h>

#include "coap/coap.h"

/* A segment that holds '/' would make "a%2Fb" and "a/b" the same topic,
 * and a NUL would cut the string short.  "." and ".." are what a client
 * removes before it makes the options (RFC 7252 6.4, RFC 3986 5.2.4): sent
 * anyway, the topic judged ("a/../b") and the resource a server that
 * resolves them serves ("b") would differ. */
static bool segment_ok(const struct coap_opt *o)
{
    bool dots = (o->len == 1 && o->val[0] == '.') || (o->len == 2 && o->val[0] == '.' && o->val[1] == '.');
    return !dots && !memchr(o->val, '/', o->len) && !memchr(o->val, '\0', o->len);
}

ssize_t coap_uri_path(const struct coap_msg *m, char *out, size_t cap)
{
    struct coap_opt_iter it;
    struct coap_opt o;
    size_t n = 0;
    bool first = true;

    if (cap == 0)
        return -1;
    coap_opt_begin(m, &it);
    while (coap_opt_next_of(&it, COAP_OPT_URI_PATH, &o)) {
        if (!segment_ok(&o))
            return -1;
        size_t sep = first ? 0 : 1;
        if (cap - n <= sep + o.len) /* and room for the NUL */
            return -1;
        if (sep)
            out[n++] = '/';
        memcpy(out + n, o.val, o.len);
        n += o.len;
        first = false;
    }
    out[n] = '\0';
    return (ssize_t)n;
}

bool coap_uri_query(const struct coap_msg *m, const char *name, coap_view *value)
{
    size_t nlen = strlen(name);
    struct coap_opt_iter it;
    struct coap_opt o;

    coap_opt_begin(m, &it);
    while (coap_opt_next_of(&it, COAP_OPT_URI_QUERY, &o)) {
        if (o.len < nlen || memcmp(o.val, name, nlen) != 0)
            continue;
        if (o.len == nlen) {
            *value = (coap_view){.p = o.val + nlen, .len = 0};
            return true;
        }
        if (o.val[nlen] == '=') {
            *value = (coap_view){.p = o.val + nlen + 1, .len = o.len - nlen - 1};
            return true;
        }
    }
    return false;
}
