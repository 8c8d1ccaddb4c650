/*
 * CLIENT_ID_POLICY's grammar: the checks config_load runs on the settings
 * and the match the session runs at CONNECT, in one place so that what is
 * accepted at start-up is exactly what is understood at CONNECT.
 *
 * The point of every rule here: a client id belongs to one identity.  An
 * id that two identities could both claim (bob and bobby under "%u*",
 * bob and bob-x under "%u-*") would let one take over the other's session
 * on the broker, which is what the policy is there to stop.
 */
#include <stddef.h>
#include <string.h>

#include "config/config.h"

#define PATTERN_MAX 256    /* bytes; a client id pattern is short */
#define SEPARATORS_MAX 16

enum tok { T_END, T_CHAR, T_USER, T_CN, T_STAR, T_BAD };

static bool is_placeholder(enum tok t) { return t == T_USER || t == T_CN; }

/* The token at *q, which it passes; *c is the character of a T_CHAR. */
static enum tok next_tok(const char **q, char *c)
{
    const char *p = *q;
    if (!*p)
        return T_END;
    if (*p == '*') {
        *q = p + 1;
        return T_STAR;
    }
    if (*p != '%') {
        *c = *p;
        *q = p + 1;
        return T_CHAR;
    }
    if (p[1] == '%') {
        *c = '%';
        *q = p + 2;
        return T_CHAR;
    }
    if (p[1] == 'u') {
        *q = p + 2;
        return T_USER;
    }
    if (p[1] == 'c' && p[2] == 'n') {
        *q = p + 3;
        return T_CN;
    }
    return T_BAD;
}

/* Why the token t, after prev, cannot be there; NULL when it can. */
static const char *tok_problem(enum tok t, enum tok prev, char c, const char *rest)
{
    if (t == T_BAD)
        return "is not a client id pattern (after % expected u, cn or %)";
    if (t == T_CHAR && ((unsigned char)c < 0x20 || c == 0x7f))
        return "is not a client id pattern (it holds a control character)";
    if (t == T_STAR && *rest)
        return "is not a client id pattern (a * may only be its last character)";
    if (t == T_STAR && is_placeholder(prev))
        return "is not a client id pattern (a * right after %u or %cn would let bob take bobby's ids; "
               "put a separator between, e.g. %u-*)";
    if (is_placeholder(t) && is_placeholder(prev))
        return "is not a client id pattern (two placeholders side by side are ambiguous; put a "
               "separator between them)";
    return NULL;
}

const char *config_check_client_id_pattern(const char *s)
{
    if (strlen(s) > PATTERN_MAX)
        return "is not a client id pattern (at most 256 bytes)";
    bool placeholder = false;
    enum tok prev = T_END;
    for (const char *q = s;;) {
        char c = 0;
        enum tok t = next_tok(&q, &c);
        if (t == T_END)
            break;
        const char *why = tok_problem(t, prev, c, q);
        if (why)
            return why;
        placeholder |= is_placeholder(t);
        prev = t;
    }
    return placeholder ? NULL : "is not a client id pattern (expected %u or %cn in it: without one it binds no identity)";
}

const char *config_check_client_id_separators(const char *s)
{
    size_t n = strlen(s);
    if (n > SEPARATORS_MAX)
        return "is not a list of separators (at most 16 characters)";
    /* Letters and digits are what usernames are made of: as separators
     * they would refuse nearly everyone (see prefix_matches). */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))
            return "is not a list of separators (expected ASCII punctuation, e.g. - or -_:)";
    }
    return NULL;
}

bool client_id_pattern_uses_cn(const char *pattern)
{
    for (const char *q = pattern;;) {
        char c;
        enum tok t = next_tok(&q, &c);
        if (t == T_END || t == T_BAD)
            return false;
        if (t == T_CN)
            return true;
    }
}

/* An identity a placeholder stands for. */
struct ident {
    const uint8_t *p;
    size_t n;
};

/* Every identity the pattern names is there, and none holds the character
 * that follows its placeholder (that character is where it ends). */
static bool identities_ok(const char *pat, const struct ident *user, const struct ident *cn, const char **why)
{
    for (const char *q = pat;;) {
        char c, stop;
        enum tok t = next_tok(&q, &c);
        if (t == T_END)
            return true;
        if (!is_placeholder(t))
            continue;
        const struct ident *v = t == T_USER ? user : cn;
        if (!v->n) {
            *why = t == T_USER ? "no username" : "no certificate CN";
            return false;
        }
        const char *peek = q;
        if (next_tok(&peek, &stop) == T_CHAR && memchr(v->p, (unsigned char)stop, v->n)) {
            *why = t == T_USER ? "the username holds the character that follows %u in CLIENT_ID_PATTERN"
                               : "the certificate CN holds the character that follows %cn in CLIENT_ID_PATTERN";
            return false;
        }
    }
}

static bool pattern_matches(const char *pat, const struct ident *user, const struct ident *cn, const uint8_t *id,
                            size_t n)
{
    size_t at = 0;
    for (const char *q = pat;;) {
        char c = 0;
        enum tok t = next_tok(&q, &c);
        if (t == T_END)
            return at == n;
        if (t == T_STAR)
            return true; /* the last token: any rest, even none */
        if (t == T_CHAR) {
            if (at == n || id[at] != (uint8_t)c)
                return false;
            at++;
            continue;
        }
        if (t == T_BAD)
            return false; /* config_load refuses it: never here */
        const struct ident *v = t == T_USER ? user : cn;
        if (n - at < v->n || memcmp(id + at, v->p, v->n) != 0)
            return false;
        at += v->n;
    }
}

/* The id's part before its first separator is the username: a username
 * holding a separator is refused, else bob could take ids of bob-x. */
static bool prefix_matches(const char *seps, const struct ident *user, const uint8_t *id, size_t n,
                           const char **why)
{
    size_t ns = strlen(seps);
    for (size_t i = 0; i < user->n; i++)
        if (memchr(seps, user->p[i], ns)) {
            *why = "the username holds one of CLIENT_ID_SEPARATORS";
            return false;
        }
    if (n > user->n && memcmp(id, user->p, user->n) == 0 && memchr(seps, id[user->n], ns))
        return true;
    *why = "the client id is not the username followed by a separator";
    return false;
}

bool client_id_check(const struct client_id_policy *p, mgate_bytes client_id, mgate_bytes username,
                     const char *cn, const char **why)
{
    const char *unused;
    if (!why)
        why = &unused;
    if (!p || p->mode == CLIENT_ID_ANY)
        return true;
    /* The broker would make one up: an id nobody's identity vouches for. */
    if (!client_id.len) {
        *why = "an empty client id (one the broker assigns) is bound to no identity";
        return false;
    }
    struct ident user = {username.p, username.len}, c = {(const uint8_t *)(cn ? cn : ""), cn ? strlen(cn) : 0};
    if (p->mode == CLIENT_ID_PATTERN) {
        /* no pattern (a caller's bug) is "": it matches no id left here */
        const char *pat = p->pattern ? p->pattern : "";
        if (!identities_ok(pat, &user, &c, why))
            return false;
        if (pattern_matches(pat, &user, &c, client_id.p, client_id.len))
            return true;
        *why = "the client id does not match CLIENT_ID_PATTERN";
        return false;
    }
    if (!user.n) {
        *why = "no username";
        return false;
    }
    if (p->mode == CLIENT_ID_PREFIX) /* no separators: nothing matches */
        return prefix_matches(p->separators ? p->separators : "", &user, client_id.p, client_id.len, why);
    if (client_id.len == user.n && memcmp(client_id.p, user.p, user.n) == 0)
        return true;
    *why = "the client id is not the username";
    return false;
}
