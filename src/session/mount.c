/*
 * Mount points, the pure part (see mount.h).  The session calls these from
 * the few places topics cross it (upstream.c, downstream.c); a session
 * without a mount point never gets here.
 */
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"
#include "session/mount.h"

#define SHARE "$share/"
#define SHARE_LEN 7u

const char *mount_template_error(const char *tmpl)
{
    size_t n = strlen(tmpl);
    if (n == 0)
        return NULL;
    if (n > MOUNT_MAX_LEN)
        return "longer than 1024 bytes";
    if (!utf8_valid((const uint8_t *)tmpl, n, false))
        return "not valid UTF-8";
    if (tmpl[0] == '$')
        return "starts with '$' (the broker's own topics)";
    if (tmpl[n - 1] != '/')
        return "does not end with '/' (a tenant's prefix must be whole topic levels)";
    bool var_in_level = false;
    for (size_t i = 0; i < n; i++) {
        char c = tmpl[i];
        if (c == '+' || c == '#')
            return "contains a wildcard ('+' or '#')";
        if (c == '/') {
            var_in_level = false;
            continue;
        }
        if (c != '%')
            continue;
        if (tmpl[i + 1] != 'u' && tmpl[i + 1] != 'c')
            return "'%' is not followed by 'u' (username) or 'c' (client id)";
        /* Two values in one level could be told apart by no one: alice+b
         * and alic+eb would share a prefix. */
        if (var_in_level)
            return "has two of %u and %c in one topic level";
        var_in_level = true;
        i++;
    }
    return NULL;
}

/* A value a template may take: one whole, non-empty topic level. */
static bool level_ok(mgate_bytes v)
{
    if (v.len == 0 || !utf8_valid(v.p, v.len, false))
        return false;
    for (uint32_t i = 0; i < v.len; i++)
        if (v.p[i] == '+' || v.p[i] == '#' || v.p[i] == '/')
            return false;
    return true;
}

enum mount_expand_rc mount_expand(const char *tmpl, mgate_bytes username, mgate_bytes client_id,
                                  struct mount **out)
{
    *out = NULL;
    size_t need = 0;
    for (const char *t = tmpl; *t; t++) {
        if (*t != '%') {
            need++;
            continue;
        }
        t++;
        mgate_bytes v = *t == 'u' ? username : client_id;
        if (!level_ok(v))
            return *t == 'u' ? MOUNT_BAD_USERNAME : MOUNT_BAD_CLIENT_ID;
        need += v.len;
    }
    if (need == 0)
        return MOUNT_OK;
    if (need > MOUNT_MAX_LEN)
        return MOUNT_BAD_RESULT;
    struct mount *m = malloc(sizeof(*m) + need);
    if (!m)
        return MOUNT_NO_MEMORY;
    uint8_t *w = m->p;
    for (const char *t = tmpl; *t; t++) {
        if (*t != '%') {
            *w++ = (uint8_t)*t;
            continue;
        }
        t++;
        mgate_bytes v = *t == 'u' ? username : client_id;
        memcpy(w, v.p, v.len);
        w += v.len;
    }
    m->len = (uint32_t)need;
    /* "%u/" and a user "$SYS" would reach into the broker's own topics. */
    if (m->p[0] == '$') {
        free(m);
        return MOUNT_BAD_RESULT;
    }
    *out = m;
    return MOUNT_OK;
}

bool mount_prefix_valid(mgate_bytes prefix)
{
    if (!prefix.len) /* none: p may be NULL, which memchr must not get */
        return true;
    if (prefix.len > MOUNT_MAX_LEN || !utf8_valid(prefix.p, prefix.len, false))
        return false;
    return !memchr(prefix.p, '+', prefix.len) && !memchr(prefix.p, '#', prefix.len);
}

struct mount *mount_new(mgate_bytes prefix)
{
    if (!prefix.len)
        return NULL;
    struct mount *m = malloc(sizeof(*m) + prefix.len);
    if (!m)
        return NULL;
    m->len = prefix.len;
    memcpy(m->p, prefix.p, prefix.len);
    return m;
}

void mount_put_topic(const struct mount *m, mgate_bytes topic, uint8_t *out)
{
    memcpy(out, m->p, m->len);
    if (topic.len)
        memcpy(out + m->len, topic.p, topic.len);
}

/* Length of "$share/GROUP/" at the start of filter, or 0. */
static uint32_t share_head(mgate_bytes f)
{
    if (f.len <= SHARE_LEN || memcmp(f.p, SHARE, SHARE_LEN) != 0)
        return 0;
    const uint8_t *slash = memchr(f.p + SHARE_LEN, '/', f.len - SHARE_LEN);
    return slash ? (uint32_t)(slash - f.p) + 1 : 0;
}

void mount_put_filter(const struct mount *m, mgate_bytes filter, uint8_t *out)
{
    uint32_t head = share_head(filter);
    memcpy(out, filter.p, head);
    mount_put_topic(m, (mgate_bytes){filter.p + head, filter.len - head}, out + head);
}

uint8_t *mount_dup(const struct mount *m, mgate_bytes x, bool filter, mgate_bytes *out)
{
    size_t n = (size_t)m->len + x.len;
    uint8_t *p = n <= 0xFFFFu ? malloc(n) : NULL;
    if (!p)
        return NULL;
    if (filter)
        mount_put_filter(m, x, p);
    else
        mount_put_topic(m, x, p);
    *out = (mgate_bytes){p, (uint32_t)n};
    return p;
}

bool mount_strip(const struct mount *m, mgate_bytes topic, mgate_bytes *out)
{
    if (topic.len <= m->len || memcmp(topic.p, m->p, m->len) != 0)
        return false;
    *out = (mgate_bytes){topic.p + m->len, topic.len - m->len};
    return true;
}
