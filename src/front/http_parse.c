/*
 * llhttp under the limits and refusals of http_parse.h.  The head of the
 * request being parsed is kept in one buffer (method, target, then each
 * header's name and value), addressed by offsets while it grows and turned
 * into pointers once it is complete; the body goes to a second buffer.
 * Both are freed between requests: an idle keep-alive connection holds
 * only the parser itself.
 */
#include "front/http_parse.h"
#include "front/http_util.h"

#include <llhttp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HTTP_FIRST_ALLOC 512u

struct hdr_off {
    uint32_t name, name_len, value, value_len;
};

struct http_parser {
    llhttp_t ll;
    struct http_limits lim;
    http_head_cb on_head;
    void *ctx;

    char *hb; /* the head: method \0 target \0 name value name value ... */
    uint32_t hb_len;
    size_t hb_cap;
    uint32_t method_len, target_off, target_len;
    struct hdr_off *offs;
    struct http_hdr *hdrs;
    uint32_t nhdrs, cap_hdrs;
    bool in_value; /* the last data was a header value: a field starts a new header */
    uint8_t scan;  /* enum head_scan: where the head's raw bytes are */
    uint32_t hosts;
    bool expect_other;
    uint64_t raw_head; /* bytes read of the head so far */

    uint8_t *body;
    size_t body_len, body_cap, body_seen;
    bool discard;

    struct http_head head;
    bool started, head_done, done, failed;
    int status;
    const char *why;
};

/* Where the raw bytes of a request's head are, for head_folds. */
enum head_scan {
    SCAN_START,      /* before the request line (llhttp skips empty lines there) */
    SCAN_LINE,       /* inside a line */
    SCAN_LINE_START, /* right after a line's LF */
    SCAN_END_CR,     /* a CR at the start of a line: the empty line that ends the head */
    SCAN_DONE,       /* the head is over */
};

static struct http_parser *of(llhttp_t *ll) { return ll->data; }

static int fail(struct http_parser *hp, int status, const char *why)
{
    if (!hp->status) {
        hp->status = status;
        hp->why = why;
    }
    return -1;
}

/* ---- the head -------------------------------------------------------------- */

/* Make room for n bytes after len in *buf (at least `first` on the first
 * allocation, then doubling), copy p there (the last byte of n may be a
 * terminator the caller counts but p does not have). */
static int append(struct http_parser *hp, void **buf, size_t *cap, size_t len, const void *p, size_t n,
                  size_t first)
{
    if (len + n > *cap) {
        size_t c = *cap ? *cap * 2 : first > HTTP_FIRST_ALLOC ? first : HTTP_FIRST_ALLOC;
        while (c < len + n)
            c *= 2;
        void *b = realloc(*buf, c);
        if (!b)
            return fail(hp, 503, "out of memory");
        *buf = b;
        *cap = c;
    }
    memcpy((char *)*buf + len, p, n);
    return 0;
}

static int hb_append(struct http_parser *hp, const char *p, size_t n)
{
    if ((uint64_t)hp->hb_len + n + 1 > hp->lim.max_header)
        return hp->head_done ? fail(hp, 400, "trailers too large")
               : hp->target_len == 0 && hp->method_len
                   ? fail(hp, 414, "request target too long")
                   : fail(hp, 431, "request header fields too large");
    if (append(hp, (void **)&hp->hb, &hp->hb_cap, hp->hb_len, p, n, 0) < 0)
        return -1;
    hp->hb_len += (uint32_t)n;
    return 0;
}

static int on_message_begin(llhttp_t *ll)
{
    struct http_parser *hp = of(ll);
    hp->started = true;
    return 0;
}

static int on_method(llhttp_t *ll, const char *at, size_t n) { return hb_append(of(ll), at, n); }

static int on_method_complete(llhttp_t *ll)
{
    struct http_parser *hp = of(ll);
    hp->method_len = hp->hb_len;
    if (hb_append(hp, "", 1) < 0)
        return -1;
    hp->target_off = hp->hb_len;
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t n)
{
    struct http_parser *hp = of(ll);
    if (hb_append(hp, at, n) < 0)
        return -1;
    return 0;
}

static int on_url_complete(llhttp_t *ll)
{
    struct http_parser *hp = of(ll);
    hp->target_len = hp->hb_len - hp->target_off;
    return hb_append(hp, "", 1);
}

static int on_header_field(llhttp_t *ll, const char *at, size_t n)
{
    struct http_parser *hp = of(ll);
    if (hp->head_done)
        return 0; /* a trailer: not kept */
    if (hp->in_value || hp->nhdrs == 0 || hp->offs[hp->nhdrs - 1].value_len != UINT32_MAX) {
        if (hp->nhdrs == hp->cap_hdrs) {
            uint32_t cap = hp->cap_hdrs ? hp->cap_hdrs * 2 : 16;
            struct hdr_off *o = realloc(hp->offs, cap * sizeof(*o));
            if (!o)
                return fail(hp, 503, "out of memory");
            hp->offs = o;
            hp->cap_hdrs = cap;
        }
        /* every header costs at least ": \r\n" on the wire: count it */
        if (hb_append(hp, "", 0) < 0 || (uint64_t)hp->hb_len + 4u * (hp->nhdrs + 1) > hp->lim.max_header)
            return fail(hp, 431, "request header fields too large");
        hp->offs[hp->nhdrs++] = (struct hdr_off){hp->hb_len, 0, 0, UINT32_MAX};
        hp->in_value = false;
    }
    return hb_append(hp, at, n);
}

static int on_header_field_complete(llhttp_t *ll)
{
    struct http_parser *hp = of(ll);
    if (hp->head_done)
        return 0;
    /* llhttp lets ": x" through without a name: no field bytes came, so no
     * header was opened (or it is empty) */
    if (hp->in_value || hp->nhdrs == 0 || hp->hb_len == hp->offs[hp->nhdrs - 1].name)
        return fail(hp, 400, "a header without a name");
    struct hdr_off *o = &hp->offs[hp->nhdrs - 1];
    o->name_len = hp->hb_len - o->name;
    o->value = hp->hb_len;
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t n)
{
    struct http_parser *hp = of(ll);
    if (hp->head_done)
        return 0;
    hp->in_value = true;
    return hb_append(hp, at, n);
}

static bool name_is(const struct http_parser *hp, const struct hdr_off *o, const char *name)
{
    return o->name_len == strlen(name) && !strncasecmp(hp->hb + o->name, name, o->name_len);
}

static int on_header_value_complete(llhttp_t *ll)
{
    struct http_parser *hp = of(ll);
    if (hp->head_done)
        return 0;
    hp->in_value = true;
    struct hdr_off *o = &hp->offs[hp->nhdrs - 1];
    uint32_t len = hp->hb_len - o->value;
    while (len && (hp->hb[o->value + len - 1] == ' ' || hp->hb[o->value + len - 1] == '\t'))
        len--; /* trailing whitespace is not part of a field value */
    o->value_len = len;
    if (memchr(hp->hb + o->value, '\r', len) || memchr(hp->hb + o->value, '\n', len))
        return fail(hp, 400, "a CR or LF in a header value");
    if (name_is(hp, o, "host"))
        hp->hosts++;
    else if (name_is(hp, o, "expect"))
        hp->expect_other |= !(len == 12 && !strncasecmp(hp->hb + o->value, "100-continue", 12));
    return 0;
}

/* Offsets become pointers: the buffer does not move any more. */
static void head_build(struct http_parser *hp)
{
    for (uint32_t i = 0; i < hp->nhdrs; i++) {
        const struct hdr_off *o = &hp->offs[i];
        hp->hdrs[i] = (struct http_hdr){hp->hb + o->name, hp->hb + o->value, o->name_len,
                                        o->value_len == UINT32_MAX ? 0 : o->value_len};
    }
    struct http_head *h = &hp->head;
    llhttp_t *ll = &hp->ll;
    *h = (struct http_head){
        .method = hp->hb, .target = hp->hb + hp->target_off, .target_len = hp->target_len,
        .major = ll->http_major, .minor = ll->http_minor, .hdrs = hp->hdrs, .nhdrs = hp->nhdrs,
        .has_length = (ll->flags & F_CONTENT_LENGTH) != 0, .content_length = ll->content_length,
        .chunked = (ll->flags & F_CHUNKED) != 0, .keep_alive = llhttp_should_keep_alive(ll) != 0,
        .upgrade = ll->upgrade != 0, .is_head = ll->method == HTTP_HEAD,
        .head_bytes = hp->hb_len + 4 * hp->nhdrs,
    };
    const struct http_hdr *e = http_head_find(h, "expect");
    h->expect_continue = e && h->minor >= 1 && !hp->expect_other;
    if (!h->has_length)
        h->content_length = 0;
}

static int on_headers_complete(llhttp_t *ll)
{
    struct http_parser *hp = of(ll);
    hp->head_done = true;
    if (hp->nhdrs && !(hp->hdrs = malloc(hp->nhdrs * sizeof(*hp->hdrs))))
        return fail(hp, 503, "out of memory");
    head_build(hp);
    const struct http_head *h = &hp->head;
    if (h->major != 1)
        return fail(hp, 505, "HTTP version not supported");
    if (hp->hosts > 1 || (h->minor >= 1 && hp->hosts == 0))
        return fail(hp, 400, hp->hosts ? "more than one Host header" : "no Host header");
    /* only the first would be judged, and a target reading the last would
     * see an identity nobody verified */
    if (http_head_count(h, "authorization") > 1)
        return fail(hp, 400, "more than one Authorization header");
    if ((ll->flags & F_TRANSFER_ENCODING) && h->minor == 0)
        return fail(hp, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (ll->method == HTTP_CONNECT)
        return fail(hp, 405, "CONNECT is not served here");
    if (hp->expect_other && h->minor >= 1)
        return fail(hp, 417, "only Expect: 100-continue is understood");
    if (h->has_length && h->content_length > hp->lim.max_body)
        return fail(hp, 413, "request body too large");
    int use = hp->on_head ? hp->on_head(hp->ctx, h) : HTTP_BODY_KEEP;
    if (use >= 400)
        return fail(hp, use, "refused");
    hp->discard = use == HTTP_BODY_DISCARD;
    return 0;
}

/* ---- the body -------------------------------------------------------------- */

static int on_body(llhttp_t *ll, const char *at, size_t n)
{
    struct http_parser *hp = of(ll);
    if (n > hp->lim.max_body - hp->body_seen)
        return fail(hp, 413, "request body too large");
    hp->body_seen += n;
    if (hp->discard)
        return 0;
    /* the size is known: one allocation */
    size_t known = hp->head.has_length ? (size_t)hp->head.content_length : 0;
    if (append(hp, (void **)&hp->body, &hp->body_cap, hp->body_len, at, n, known) < 0)
        return -1;
    hp->body_len += n;
    return 0;
}

static int on_message_complete(llhttp_t *ll)
{
    struct http_parser *hp = of(ll);
    hp->done = true;
    return HPE_PAUSED; /* one request at a time */
}

/* ---- the interface ------------------------------------------------------------ */

/* Shared by every parser (llhttp keeps a pointer to it). */
static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_method_complete = on_method_complete,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

struct http_parser *http_parser_new(const struct http_limits *lim, http_head_cb on_head, void *ctx)
{
    struct http_parser *hp = calloc(1, sizeof(*hp));
    if (!hp)
        return NULL;
    hp->lim = *lim;
    hp->on_head = on_head;
    hp->ctx = ctx;
    llhttp_init(&hp->ll, HTTP_REQUEST, &settings);
    hp->ll.data = hp;
    return hp;
}

static void forget(struct http_parser *hp)
{
    free(hp->hb);
    free(hp->offs);
    free(hp->hdrs);
    free(hp->body);
    hp->hb = NULL;
    hp->offs = NULL;
    hp->hdrs = NULL;
    hp->body = NULL;
    hp->hb_len = hp->hb_cap = hp->method_len = hp->target_off = hp->target_len = 0;
    hp->nhdrs = hp->cap_hdrs = hp->hosts = 0;
    hp->body_len = hp->body_cap = hp->body_seen = 0;
    hp->in_value = hp->expect_other = hp->discard = false;
    hp->scan = SCAN_START;
    hp->raw_head = 0;
    memset(&hp->head, 0, sizeof(hp->head));
}

void http_parser_free(struct http_parser *hp)
{
    if (!hp)
        return;
    forget(hp);
    free(hp);
}

static int status_of(llhttp_errno_t e)
{
    switch (e) {
    case HPE_INVALID_VERSION:
        return 505;
    case HPE_INVALID_METHOD:
        return 501;
    default:
        return 400;
    }
}

/* Obsolete line folding (RFC 9112 5.2: a line of the head that begins with
 * a space or a tab) in the head's raw bytes, whatever the split.  llhttp
 * takes some forms of it (a fold after an empty value, a fold whose CRLF
 * and space come in different reads), so the bytes are watched here, from
 * the request line to the empty line that ends the head. */
static bool head_folds(struct http_parser *hp, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n && hp->scan != SCAN_DONE; i++) {
        uint8_t c = p[i];
        switch (hp->scan) {
        case SCAN_START:
            if (c != '\r' && c != '\n')
                hp->scan = SCAN_LINE;
            break;
        case SCAN_LINE:
            if (c == '\n')
                hp->scan = SCAN_LINE_START;
            break;
        case SCAN_LINE_START:
            if (c == ' ' || c == '\t')
                return true;
            hp->scan = c == '\r' ? SCAN_END_CR : c == '\n' ? SCAN_DONE : SCAN_LINE;
            break;
        default: /* SCAN_END_CR */
            hp->scan = c == '\n' ? SCAN_DONE : SCAN_LINE;
        }
    }
    return false;
}

size_t http_parser_feed(struct http_parser *hp, const uint8_t *data, size_t len, enum http_event *ev)
{
    *ev = hp->failed ? HTTP_EV_ERROR : hp->done ? HTTP_EV_MESSAGE : HTTP_EV_MORE;
    if (*ev != HTTP_EV_MORE || !len)
        return 0;
    if (head_folds(hp, data, len)) { /* before llhttp sees any of it */
        fail(hp, 400, "obsolete line folding in a header");
        hp->failed = true;
        *ev = HTTP_EV_ERROR;
        return 0;
    }
    const char *p = (const char *)data;
    bool in_head = !hp->head_done;
    llhttp_errno_t e = llhttp_execute(&hp->ll, p, len);
    size_t used = len;
    while (e == HPE_PAUSED_UPGRADE) {
        /* An upgrade request (no body) is complete: the caller decides at
         * its MESSAGE whether to take the stream over; if it does not, what
         * follows is parsed as HTTP again. */
        used = (size_t)(llhttp_get_error_pos(&hp->ll) - p);
        llhttp_resume_after_upgrade(&hp->ll);
        if (hp->done)
            break;
        e = used < len ? llhttp_execute(&hp->ll, p + used, len - used) : HPE_OK;
        if (e == HPE_OK)
            used = len;
    }
    if (e != HPE_OK && e != HPE_PAUSED_UPGRADE)
        used = (size_t)(llhttp_get_error_pos(&hp->ll) - p);
    if (in_head && !hp->head_done && hp->started) {
        hp->raw_head += used; /* whitespace llhttp skips is counted too */
        if (hp->raw_head > hp->lim.max_header && e == HPE_OK) {
            fail(hp, 431, "request header fields too large");
            e = HPE_USER;
        }
    }
    if (e == HPE_OK || (e == HPE_PAUSED_UPGRADE && !hp->done)) {
        *ev = HTTP_EV_MORE;
        return len;
    }
    if (hp->done && !hp->status) {
        *ev = HTTP_EV_MESSAGE;
        return used;
    }
    hp->failed = true;
    if (!hp->status) {
        hp->status = status_of(e);
        hp->why = llhttp_get_error_reason(&hp->ll);
    }
    *ev = HTTP_EV_ERROR;
    return used;
}

bool http_parser_eof_midway(const struct http_parser *hp) { return hp->started && !hp->done; }
bool http_parser_busy(const struct http_parser *hp) { return hp->started && !hp->done; }
const struct http_head *http_parser_head(const struct http_parser *hp) { return &hp->head; }

uint8_t *http_parser_body(struct http_parser *hp, size_t *len, bool take)
{
    uint8_t *b = hp->body;
    *len = hp->body_len;
    if (take) {
        hp->body = NULL;
        hp->body_len = hp->body_cap = 0;
    }
    return b;
}

int http_parser_status(const struct http_parser *hp, const char **why)
{
    if (why)
        *why = hp->why ? hp->why : "bad request";
    return hp->status;
}

void http_parser_discard(struct http_parser *hp)
{
    hp->discard = true;
    free(hp->body);
    hp->body = NULL;
    hp->body_len = hp->body_cap = 0;
}

void http_parser_next(struct http_parser *hp)
{
    if (hp->failed)
        return;
    forget(hp);
    hp->started = hp->head_done = false;
    if (hp->done) {
        hp->done = false;
        if (llhttp_get_errno(&hp->ll) == HPE_PAUSED)
            llhttp_resume(&hp->ll);
    }
}

static bool hdr_is(const struct http_hdr *x, const char *name, size_t n)
{
    return x->name_len == n && !strncasecmp(x->name, name, n);
}

const struct http_hdr *http_head_find(const struct http_head *h, const char *name)
{
    size_t n = strlen(name);
    for (uint32_t i = 0; i < h->nhdrs; i++)
        if (hdr_is(&h->hdrs[i], name, n))
            return &h->hdrs[i];
    return NULL;
}

uint32_t http_head_count(const struct http_head *h, const char *name)
{
    size_t n = strlen(name);
    uint32_t count = 0;
    for (uint32_t i = 0; i < h->nhdrs; i++)
        count += hdr_is(&h->hdrs[i], name, n);
    return count;
}

bool http_value_has_token(const char *value, uint32_t len, const char *token)
{
    return http_list_has(value, len, token, strlen(token));
}
