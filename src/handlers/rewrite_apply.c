/*
 * Applying rewrite rules: the first rule that matches, and its template
 * expanded.  Pure and allocation-free (the caller gives the room), so the
 * unit tests and the fuzzer run it without a session.
 */
#include <string.h>

#include "handlers/acl.h"
#include "handlers/rewrite.h"

const struct rewrite_rule *rewrite_match(const struct rewrite_rules *rs, unsigned dir, const char *t, size_t len,
                                         regmatch_t m[REWRITE_MAX_GROUPS + 1])
{
    for (uint32_t i = 0; i < rs->n; i++) {
        const struct rewrite_rule *r = &rs->v[i];
        /* the filter first: it is cheap, and a '+'/'#' rule keeps off $-topics as MQTT's matching does */
        if ((r->dir & dir) && acl_covers(r->filter, r->filter_len, (const uint8_t *)t, len, NULL) &&
            regexec(&r->re, t, REWRITE_MAX_GROUPS + 1, m, 0) == 0)
            return r;
    }
    return NULL;
}

bool rewrite_identity_ok(mgate_bytes v, bool at_start)
{
    if (!v.len || !v.p || (at_start && v.p[0] == '$'))
        return false;
    for (uint32_t i = 0; i < v.len; i++)
        if (v.p[i] == '+' || v.p[i] == '#' || v.p[i] == '/')
            return false;
    return true;
}

/* What piece p stands for; 0, or a negative enum rewrite_refusal.  at: where
 * it lands in the result (an identity may not start it with '$'). */
static int piece_value(const struct rewrite_rule *r, const struct rewrite_piece *p, const uint8_t *t,
                       const regmatch_t *m, const struct rewrite_who *who, size_t at, mgate_bytes *v)
{
    switch (p->kind) {
    case RW_TEXT:
        *v = (mgate_bytes){(const uint8_t *)r->text + p->off, p->len};
        return 0;
    case RW_GROUP: {
        const regmatch_t *g = &m[p->group];
        *v = g->rm_so < 0 ? (mgate_bytes){NULL, 0} : (mgate_bytes){t + g->rm_so, (uint32_t)(g->rm_eo - g->rm_so)};
        return 0;
    }
    case RW_CN:
        if (!who->has_cn)
            return REWRITE_NO_CERT;
        *v = who->cn;
        break;
    default:
        *v = p->kind == RW_USER ? who->user : who->client;
        break;
    }
    /* An identity is one level the client does not choose: one holding a
     * separator or a wildcard would let it name another's topics. */
    return rewrite_identity_ok(*v, at == 0) ? 0 : REWRITE_BAD_IDENTITY;
}

long rewrite_expand(const struct rewrite_rule *r, const uint8_t *t, const regmatch_t *m,
                    const struct rewrite_who *who, uint8_t *out, size_t cap)
{
    size_t n = 0;
    for (uint32_t k = 0; k < r->npieces; k++) {
        mgate_bytes v;
        int rc = piece_value(r, &r->pieces[k], t, m, who, n, &v);
        if (rc < 0)
            return rc;
        if (v.len && n + v.len <= cap)
            memcpy(out + n, v.p, v.len);
        n += v.len;
    }
    return (long)n;
}
