/*
 * ACL topic matching: a rule against a topic name or filter, level by level,
 * without copying or substituting anything (see acl.h for the rules).
 */
#include <string.h>

#include "handlers/acl.h"

/* One topic level: [p, p + n). */
struct level {
    const uint8_t *p;
    size_t n;
};

/* The next level of [*s, end); false when the string is used up.  `*done`
 * tracks the end: "a/" has a second, empty level, which a plain "end of
 * string" test would lose. */
static bool next_level(const uint8_t **s, const uint8_t *end, bool *done, struct level *out)
{
    if (*done)
        return false;
    const uint8_t *slash = memchr(*s, '/', (size_t)(end - *s));
    out->p = *s;
    if (slash) {
        out->n = (size_t)(slash - *s);
        *s = slash + 1;
    } else {
        out->n = (size_t)(end - *s);
        *s = end;
        *done = true;
    }
    return true;
}

static bool is(struct level l, char c) { return l.n == 1 && l.p[0] == (uint8_t)c; }

/* A pattern's %u or %c level becomes the value it stands for.  False when
 * that value may not stand in a level: absent, empty, holding a wildcard or
 * a separator, or (as the first level) starting with '$', which would reach
 * the broker's $-topics.  Such a level matches nothing. */
static bool substitute(struct level *r, const struct acl_who *who, bool first)
{
    if (!who || r->n != 2 || r->p[0] != '%' || (r->p[1] != 'u' && r->p[1] != 'c'))
        return true;
    bool user = r->p[1] == 'u';
    r->p = user ? who->user : who->client;
    r->n = user ? who->user_len : who->client_len;
    if (!r->n || (first && r->p[0] == '$'))
        return false;
    for (size_t i = 0; i < r->n; i++)
        if (r->p[i] == '+' || r->p[i] == '#' || r->p[i] == '/')
            return false;
    return true;
}

bool acl_covers(const char *rule, size_t rlen, const uint8_t *f, size_t flen, const struct acl_who *who)
{
    const uint8_t *r = (const uint8_t *)rule, *rend = r + rlen, *fend = f + flen;
    bool rdone = false, fdone = false;
    struct level rl, fl;
    /* $-topics: a rule that starts with a wildcard does not reach them
     * (a filter that starts with one cannot ask for them either). */
    if (flen && f[0] == '$' && rlen && (r[0] == '+' || r[0] == '#'))
        return false;
    for (bool first = true;; first = false) {
        if (!next_level(&r, rend, &rdone, &rl))
            return !next_level(&f, fend, &fdone, &fl); /* both used up */
        if (is(rl, '#'))
            return true; /* the rest, and the parent level itself ("a/#" covers "a") */
        if (!next_level(&f, fend, &fdone, &fl))
            return false;
        if (is(fl, '#'))
            return false; /* only '#' covers '#' */
        if (is(rl, '+'))
            continue; /* any one level, '+' included */
        if (is(fl, '+'))
            return false; /* a fixed level never covers '+' */
        if (!substitute(&rl, who, first) || rl.n != fl.n || memcmp(rl.p, fl.p, fl.n) != 0)
            return false;
    }
}

static bool covered_by(const struct acl_rules *rs, bool deny, unsigned access, const struct acl_who *who,
                       const uint8_t *t, size_t len)
{
    for (uint32_t i = 0; i < rs->n; i++) {
        const struct acl_rule *r = &rs->v[i];
        if (deny ? r->access != ACL_DENY : !(r->access & access))
            continue;
        if (acl_covers(r->topic, r->len, t, len, r->pattern ? who : NULL))
            return true;
    }
    return false;
}

/* "$share/GROUP/filter" -> "filter" (MQTT 5 shared subscriptions): what the
 * client will receive is what filter matches. */
static void strip_share(const uint8_t **t, size_t *len)
{
    static const char share[] = "$share/";
    size_t n = sizeof(share) - 1;
    if (*len <= n || memcmp(*t, share, n) != 0)
        return;
    const uint8_t *group = *t + n, *slash = memchr(group, '/', *len - n);
    if (!slash || slash == group)
        return;
    *len -= (size_t)(slash + 1 - *t);
    *t = slash + 1;
}

bool acl_allowed(const struct acl_db *db, const struct acl_who *who, unsigned access, const uint8_t *t,
                 size_t len)
{
    if (!db->have_acl)
        return true;
    if (access == ACL_READ)
        strip_share(&t, &len);
    const struct acl_rules *own = &db->anonymous;
    if (who->user_len) {
        const struct acl_user *u = acl_db_user(db, who->user, who->user_len);
        own = u ? &u->rules : NULL;
    }
    /* An explicit deny wins over every grant, wherever each stands. */
    if ((own && covered_by(own, true, access, who, t, len)) || covered_by(&db->patterns, true, access, who, t, len))
        return false;
    return (own && covered_by(own, false, access, who, t, len)) ||
           covered_by(&db->patterns, false, access, who, t, len);
}

bool acl_rules_allow(const struct acl_rules *rs, const struct acl_who *who, unsigned access, const uint8_t *t,
                     size_t len)
{
    if (access == ACL_READ)
        strip_share(&t, &len);
    return !covered_by(rs, true, access, who, t, len) && covered_by(rs, false, access, who, t, len);
}
