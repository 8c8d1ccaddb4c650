/* The HTTP front end's request parser: requests whole and byte by byte,
 * pipelined, chunked; the limits (431, 414, 413) and the refusals that keep
 * request smuggling out (Content-Length with Transfer-Encoding, duplicate
 * lengths, odd Transfer-Encodings, Host rules, obsolete folding, bare LF). */
#include <stdlib.h>

#include "check.h"
#include "front/http_parse.h"
#include "front/http_util.h"

struct seen {
    int heads;
    int use; /* what on_head answers */
    char method[16], target[256];
};

static int on_head(void *ctx, const struct http_head *h)
{
    struct seen *s = ctx;
    s->heads++;
    snprintf(s->method, sizeof(s->method), "%s", h->method);
    snprintf(s->target, sizeof(s->target), "%s", h->target);
    return s->use;
}

static const struct http_limits lim = {.max_header = 1024, .max_body = 100};

/* Feed all of req (in pieces of step bytes) and return the event it ends on
 * and how much was used. */
static enum http_event run(struct http_parser *hp, const char *req, size_t step, size_t *used)
{
    size_t len = strlen(req), off = 0;
    enum http_event ev = HTTP_EV_MORE;
    while (off < len) {
        size_t n = len - off < step ? len - off : step;
        size_t u = http_parser_feed(hp, (const uint8_t *)req + off, n, &ev);
        off += u;
        if (ev != HTTP_EV_MORE)
            break;
    }
    if (used)
        *used = off;
    return ev;
}

static int status_of(const char *req)
{
    struct seen s = {0};
    struct http_parser *hp = http_parser_new(&lim, on_head, &s);
    enum http_event ev = run(hp, req, 4096, NULL);
    const char *why = NULL;
    int st = ev == HTTP_EV_ERROR ? http_parser_status(hp, &why) : ev == HTTP_EV_MESSAGE ? 200 : 0;
    if (ev == HTTP_EV_ERROR)
        CHECK(why && *why);
    http_parser_free(hp);
    return st;
}

static void test_simple(void)
{
    static const char req[] = "POST /mgate-http/messages/a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
                              "X-Empty:\r\nContent-Length: 5\r\n\r\nhello";
    for (size_t step = 1; step <= sizeof(req); step++) {
        struct seen s = {0};
        struct http_parser *hp = http_parser_new(&lim, on_head, &s);
        size_t used;
        CHECK_EQ_INT(run(hp, req, step, &used), HTTP_EV_MESSAGE);
        CHECK_EQ_INT(used, sizeof(req) - 1);
        CHECK_EQ_INT(s.heads, 1);
        CHECK_EQ_STR(s.method, "POST");
        CHECK_EQ_STR(s.target, "/mgate-http/messages/a?x=1");
        const struct http_head *h = http_parser_head(hp);
        CHECK_EQ_INT(h->nhdrs, 4);
        const struct http_hdr *ct = http_head_find(h, "content-type");
        CHECK(ct && ct->value_len == 10 && !memcmp(ct->value, "text/plain", 10));
        const struct http_hdr *e = http_head_find(h, "x-empty");
        CHECK(e && e->value_len == 0);
        CHECK(h->keep_alive && h->has_length && h->content_length == 5 && !h->chunked);
        size_t len;
        uint8_t *b = http_parser_body(hp, &len, false);
        CHECK(len == 5 && !memcmp(b, "hello", 5));
        http_parser_free(hp);
    }
}

static void test_pipelined_and_chunked(void)
{
    static const char reqs[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                               "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer-X: 1\r\n\r\n"
                               "GET /c HTTP/1.0\r\n\r\n";
    struct seen s = {0};
    struct http_parser *hp = http_parser_new(&lim, on_head, &s);
    const uint8_t *p = (const uint8_t *)reqs;
    size_t left = sizeof(reqs) - 1;
    enum http_event ev;
    size_t u = http_parser_feed(hp, p, left, &ev);
    CHECK_EQ_INT(ev, HTTP_EV_MESSAGE);
    CHECK_EQ_STR(s.target, "/a");
    CHECK(http_parser_head(hp)->keep_alive);
    CHECK_EQ_INT(http_parser_feed(hp, p + u, left - u, &ev), 0); /* stays on this message */
    CHECK_EQ_INT(ev, HTTP_EV_MESSAGE);
    http_parser_next(hp);
    p += u, left -= u;
    u = http_parser_feed(hp, p, left, &ev);
    CHECK_EQ_INT(ev, HTTP_EV_MESSAGE);
    CHECK_EQ_STR(s.target, "/b");
    CHECK(http_parser_head(hp)->chunked);
    size_t len;
    uint8_t *b = http_parser_body(hp, &len, true);
    CHECK(len == 5 && !memcmp(b, "abcde", 5));
    free(b);
    http_parser_next(hp);
    p += u, left -= u;
    u = http_parser_feed(hp, p, left, &ev);
    CHECK_EQ_INT(ev, HTTP_EV_MESSAGE);
    CHECK_EQ_STR(s.target, "/c");
    CHECK(!http_parser_head(hp)->keep_alive); /* 1.0 without keep-alive */
    CHECK_EQ_INT(u, left);
    http_parser_next(hp);
    CHECK(!http_parser_busy(hp));
    CHECK_EQ_INT(s.heads, 3);
    http_parser_free(hp);
}

static void test_limits(void)
{
    char big[2048];
    snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: h\r\nX-Big: %01100d\r\n\r\n", 0);
    CHECK_EQ_INT(status_of(big), 431);
    char many[4096] = "GET / HTTP/1.1\r\nHost: h\r\n";
    for (int i = 0; i < 300; i++)
        strcat(many, "A:\r\n");
    strcat(many, "\r\n");
    CHECK_EQ_INT(status_of(many), 431); /* small headers, too many of them */
    char uri[2048] = "GET /";
    memset(uri + 5, 'a', 1100);
    strcpy(uri + 1105, " HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK_EQ_INT(status_of(uri), 414);
    /* whitespace that is never stored still counts */
    char ws[4096] = "GET / HTTP/1.1\r\nHost: h\r\nA:";
    memset(ws + strlen(ws), ' ', 2000);
    CHECK_EQ_INT(status_of(ws), 431);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n"), 413);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n"), 0); /* waits for it */
    char chunks[512] = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 11; i++)
        strcat(chunks, "a\r\n0123456789\r\n");
    CHECK_EQ_INT(status_of(chunks), 413);
}

static void test_smuggling(void)
{
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "0\r\n\r\n"),
                 400);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
                           "0\r\n\r\n"),
                 400);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"), 400);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\nabcd"), 400);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc"), 400);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc"), 400);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"), 400); /* obs-fold */
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\nHost: h\n\n"), 400);                   /* bare LF */
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n"), 400);        /* bare CR */
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\n\r\n"), 400);                         /* no Host */
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);   /* two */
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n"), 400);           /* no name (fuzz) */
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\n: x\r\nHost: h\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.0\r\n\r\n"), 200);                         /* 1.0 needs none */
    CHECK_EQ_INT(status_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
    CHECK_EQ_INT(status_of("CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n"), 405);
    CHECK_EQ_INT(status_of("POST / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n"), 417);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n"), 400); /* control character */
    CHECK_EQ_INT(status_of("G\x01T / HTTP/1.1\r\nHost: h\r\n\r\n") >= 400, 1);
}

/* The status a request ends on when fed step bytes at a time (as TCP may
 * split it), or 200 for a whole message, 0 when it waits for more. */
static int status_split(const char *req, size_t step)
{
    struct seen s = {0};
    struct http_parser *hp = http_parser_new(&lim, on_head, &s);
    enum http_event ev = run(hp, req, step, NULL);
    int st = ev == HTTP_EV_ERROR ? http_parser_status(hp, NULL) : ev == HTTP_EV_MESSAGE ? 200 : 0;
    http_parser_free(hp);
    return st;
}

/* Obsolete line folding is refused in every form and every split: after a
 * value, after an empty value, with a tab, right behind the request line,
 * the fold's CRLF and its space in different reads. */
static void test_obs_fold(void)
{
    static const char *const folded[] = {
        "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX:\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX: \r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n",
        "GET / HTTP/1.1\r\nX:\r\n Host: h\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n \r\n\r\n",
        "GET / HTTP/1.1\r\n Host: h\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nX: a\r\n  b\r\n\r\nz",
    };
    for (size_t i = 0; i < sizeof(folded) / sizeof(folded[0]); i++)
        for (size_t step = 1; step <= strlen(folded[i]); step++) {
            int st = status_split(folded[i], step);
            CHECK_EQ_INT(st, 400);
            if (st != 400) {
                fprintf(stderr, "  (request %zu fed %zu bytes at a time)\n", i, step);
                break;
            }
        }
    /* what looks like a fold in a body, or before the request line, is not one */
    static const char body[] = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\na\r\n bc";
    static const char lead[] = "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    for (size_t step = 1; step <= sizeof(body); step++) {
        CHECK_EQ_INT(status_split(body, step), 200);
        CHECK_EQ_INT(status_split(lead, step), 200);
    }
}

/* Two credentials: only the first would be judged, the target might read the second. */
static void test_two_authorizations(void)
{
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\nauthorization: a\r\nAUTHORIZATION: a\r\n\r\n"), 400);
    CHECK_EQ_INT(status_of("GET / HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nProxy-Authorization: b\r\n\r\n"),
                 200);
}

static void test_expect_and_refusal(void)
{
    struct seen s = {.use = HTTP_BODY_DISCARD};
    struct http_parser *hp = http_parser_new(&lim, on_head, &s);
    static const char req[] = "POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\nabc";
    size_t used;
    CHECK_EQ_INT(run(hp, req, 7, &used), HTTP_EV_MESSAGE);
    CHECK(http_parser_head(hp)->expect_continue);
    size_t len;
    CHECK(http_parser_body(hp, &len, false) == NULL && len == 0); /* discarded */
    http_parser_next(hp);
    http_parser_free(hp);

    s = (struct seen){.use = 403};
    hp = http_parser_new(&lim, on_head, &s);
    CHECK_EQ_INT(run(hp, req, 4096, &used), HTTP_EV_ERROR);
    CHECK_EQ_INT(http_parser_status(hp, NULL), 403);
    http_parser_free(hp);

    /* an upgrade request that nobody takes over: the next request is HTTP */
    s = (struct seen){0};
    hp = http_parser_new(&lim, on_head, &s);
    static const char up[] = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                             "GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
    enum http_event ev;
    size_t u = http_parser_feed(hp, (const uint8_t *)up, sizeof(up) - 1, &ev);
    CHECK_EQ_INT(ev, HTTP_EV_MESSAGE);
    CHECK(http_parser_head(hp)->upgrade);
    const struct http_hdr *c = http_head_find(http_parser_head(hp), "connection");
    CHECK(c && http_value_has_token(c->value, c->value_len, "upgrade"));
    http_parser_next(hp);
    u += http_parser_feed(hp, (const uint8_t *)up + u, sizeof(up) - 1 - u, &ev);
    CHECK_EQ_INT(ev, HTTP_EV_MESSAGE);
    CHECK_EQ_STR(s.target, "/next");
    CHECK_EQ_INT(u, sizeof(up) - 1);
    http_parser_free(hp);
}

static void test_tokens(void)
{
    CHECK(http_value_has_token("keep-alive, Upgrade", 19, "upgrade"));
    CHECK(!http_value_has_token("upgraded", 8, "upgrade"));
    CHECK(http_value_has_token(" close ", 7, "close"));
    CHECK(!http_value_has_token("", 0, "close"));
}

/* The helpers both listeners share (http_util): PATH_PREFIX by segments, ALLOWED_ORIGINS. */
static void test_shared_rules(void)
{
    const char *rest;
    CHECK(http_path_under("/mqtt", 5, "/mqtt", &rest) && !strcmp(rest, ""));
    CHECK(http_path_under("/mqtt/x", 7, "/mqtt", &rest) && !strcmp(rest, "/x"));
    CHECK(!http_path_under("/mqttx", 6, "/mqtt", &rest));
    CHECK(!http_path_under("/mqtt-evil/x", 12, "/mqtt", &rest));
    CHECK(http_path_under("/mqtt/x", 7, "/mqtt/", &rest) && !strcmp(rest, "/x"));
    CHECK(!http_path_under("/mqttx", 6, "/mqtt/", &rest));
    CHECK(http_path_under("/anything", 9, "", &rest));
    CHECK(http_origin_allowed(NULL, 1, "", 0) && http_origin_allowed("", 2, "x", 1)); /* no list: any */
    CHECK(http_origin_allowed("https://a.example", 0, "", 0));                      /* none sent */
    CHECK(http_origin_allowed(" https://b.example ,https://A.example", 1, "https://a.example", 17));
    CHECK(!http_origin_allowed("https://a.example", 1, "", 0));                     /* empty */
    CHECK(!http_origin_allowed("https://a.example,", 1, "", 0));
    CHECK(!http_origin_allowed("https://a.example", 2, "https://a.example", 17));  /* two */
    CHECK(!http_origin_allowed("https://a.example", 1, "https://a.example.evil", 22));
}

int main(void)
{
    test_simple();
    test_pipelined_and_chunked();
    test_limits();
    test_smuggling();
    test_obs_fold();
    test_two_authorizations();
    test_expect_and_refusal();
    test_tokens();
    test_shared_rules();
    return check_done("test_http_parse");
}
