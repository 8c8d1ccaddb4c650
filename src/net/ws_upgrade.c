/* The head of a WebSocket upgrade: see ws_upgrade.h. */
#include "net/ws_upgrade.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

size_t ws_head_len(const char *p, size_t n)
{
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    return end ? (size_t)(end - p) + 4 : 0;
}

static struct ws_str trim(const char *p, size_t n)
{
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return (struct ws_str){p, n};
}

static bool is(struct ws_str name, const char *want)
{
    return name.n == strlen(want) && !strncasecmp(name.p, want, name.n);
}

/* One "Name: value" line into the field it names (others are ignored). */
static int header(struct ws_head *h, const char *p, size_t n)
{
    const char *colon = memchr(p, ':', n);
    if (!colon || colon == p || memchr(p, ' ', (size_t)(colon - p)) || memchr(p, '\t', (size_t)(colon - p)))
        return -1; /* no name, or whitespace before the colon (RFC 7230 3.2.4) */
    struct ws_str name = {p, (size_t)(colon - p)};
    struct ws_str v = trim(colon + 1, n - (size_t)(colon - p) - 1);
    static const struct {
        const char *name;
        size_t off;
    } known[] = {
        {"Host", offsetof(struct ws_head, host)},
        {"Upgrade", offsetof(struct ws_head, upgrade)},
        {"Connection", offsetof(struct ws_head, connection)},
        {"Sec-WebSocket-Key", offsetof(struct ws_head, key)},
        {"Sec-WebSocket-Version", offsetof(struct ws_head, version)},
        {"Sec-WebSocket-Protocol", offsetof(struct ws_head, protocol)},
        {"Sec-WebSocket-Accept", offsetof(struct ws_head, accept)},
        {"Origin", offsetof(struct ws_head, origin)},
        {"Authorization", offsetof(struct ws_head, authorization)},
        {"Sec-WebSocket-Extensions", offsetof(struct ws_head, extensions)},
    };
    if (is(name, "Origin"))
        h->origins++;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (!is(name, known[i].name))
            continue;
        struct ws_str *f = (struct ws_str *)((char *)h + known[i].off);
        if (!f->p) /* the first one counts (several Origins are counted above) */
            *f = v;
        return 0;
    }
    return 0;
}

static int start_line(struct ws_head *h, const char *p, size_t n, bool response)
{
    if (response) { /* "HTTP/1.1 101 Switching Protocols" */
        if (n < 12 || memcmp(p, "HTTP/1.1 ", 9) || p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' ||
            p[11] < '0' || p[11] > '9' || (n > 12 && p[12] != ' '))
            return -1;
        h->status = (unsigned)(p[9] - '0') * 100 + (unsigned)(p[10] - '0') * 10 + (unsigned)(p[11] - '0');
        return 0;
    }
    const char *sp1 = memchr(p, ' ', n);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - p)) : NULL;
    if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1 || (size_t)(p + n - sp2 - 1) != 8 ||
        (memcmp(sp2 + 1, "HTTP/1.1", 8) && memcmp(sp2 + 1, "HTTP/1.0", 8)))
        return -1;
    for (const char *c = p; c < sp2; c++) /* no whitespace or control byte in a method or target */
        if ((c != sp1 && (unsigned char)*c <= ' ') || *c == 0x7f)
            return -1;
    h->method = (struct ws_str){p, (size_t)(sp1 - p)};
    h->target = (struct ws_str){sp1 + 1, (size_t)(sp2 - sp1 - 1)};
    return 0;
}

int ws_head_parse(const char *p, size_t len, bool response, struct ws_head *h)
{
    memset(h, 0, sizeof(*h));
    if (len < 4 || memcmp(p + len - 4, "\r\n\r\n", 4))
        return -1;
    len -= 2; /* every line, the last one too, now ends in CRLF */
    for (size_t off = 0, line = 0; off < len - 2; line++) {
        const char *eol = memmem(p + off, len - off, "\r\n", 2);
        size_t n = (size_t)(eol - (p + off));
        if (memchr(p + off, '\0', n) || memchr(p + off, '\n', n) || memchr(p + off, '\r', n))
            return -1;
        if (line == 0 ? start_line(h, p + off, n, response) < 0 : header(h, p + off, n) < 0)
            return -1;
        off += n + 2;
    }
    return (response ? h->status != 0 : h->method.p != NULL) ? 0 : -1; /* an empty head has no start line */
}

/* Whether comma-separated value v has the item t (tn bytes), in any case
 * or exactly. */
static bool has_item(struct ws_str v, const char *t, size_t tn, bool any_case)
{
    for (size_t i = 0; v.p && i <= v.n;) {
        const char *comma = memchr(v.p + i, ',', v.n - i);
        size_t end = comma ? (size_t)(comma - v.p) : v.n;
        struct ws_str item = trim(v.p + i, end - i);
        if (item.n == tn && !(any_case ? strncasecmp(item.p, t, tn) : memcmp(item.p, t, tn)))
            return true;
        i = end + 1;
    }
    return false;
}

bool ws_has_token(struct ws_str v, const char *t) { return has_item(v, t, strlen(t), true); }

bool ws_head_offers(const char *p, size_t len, struct ws_str proto)
{
    const char *end = p + len, *line = memchr(p, '\n', len);
    while (line && ++line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        size_t n = eol ? (size_t)(eol - line) : (size_t)(end - line);
        const char *colon = memchr(line, ':', n);
        if (colon && is((struct ws_str){line, (size_t)(colon - line)}, "Sec-WebSocket-Protocol") &&
            has_item(trim(colon + 1, n - (size_t)(colon + 1 - line) - (n && line[n - 1] == '\r')), proto.p,
                     proto.n, false))
            return true;
        line = eol;
    }
    return false;
}

const char *ws_pick_protocol(struct ws_str offer, const char *const *protos)
{
    if (!offer.p)
        return "";
    for (size_t i = 0; i <= offer.n;) { /* the client's order */
        const char *comma = memchr(offer.p + i, ',', offer.n - i);
        size_t end = comma ? (size_t)(comma - offer.p) : offer.n;
        struct ws_str item = trim(offer.p + i, end - i);
        for (const char *const *p = protos; *p; p++)
            if (item.n == strlen(*p) && !memcmp(item.p, *p, item.n))
                return *p;
        i = end + 1;
    }
    return NULL;
}

unsigned ws_request_check(const struct ws_head *h, const char **why)
{
    if (!h->upgrade.p) {
        *why = "only WebSocket upgrades here";
        return 404; /* a plain HTTP request: nothing here to GET */
    }
    if (!is(h->method, "GET") || !ws_has_token(h->upgrade, "websocket") || !ws_has_token(h->connection, "upgrade")) {
        *why = "only WebSocket upgrades here";
        return 400;
    }
    if (!h->version.p || h->version.n != 2 || memcmp(h->version.p, "13", 2)) {
        *why = "Sec-WebSocket-Version must be 13";
        return 426;
    }
    if (!h->key.p || h->key.n != 24) {
        *why = "no valid Sec-WebSocket-Key";
        return 400;
    }
    *why = NULL;
    return 0;
}
