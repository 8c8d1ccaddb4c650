/*
 * Fuzzing the HTTP front end's request parser (llhttp under mgate's
 * limits and smuggling rules): the input's first byte picks how the rest is
 * cut into reads and whether bodies are kept; the parser must never take
 * more than it was given, must stop at each message until told to go on,
 * and must answer every error with a status between 400 and 505.  Each
 * head's credentials (http_credentials, the rule of every HTTP-based
 * listener) must lie within the header or the decoding room, or be a 400
 * with a reason.  Any disagreement aborts.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front/http_parse.h"
#include "front/http_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_http_parse: %s\n", why);
    abort();
}

static bool within(const char *p, uint32_t n, const char *base, size_t len)
{
    return !n || (base && p >= base && p + n <= base + len);
}

static void credentials(const struct http_head *h)
{
    const struct http_hdr *a = http_head_find(h, "authorization");
    const char *q = memchr(h->target, '?', h->target_len);
    size_t alen = a ? a->value_len : 0, qlen = q ? h->target_len - (size_t)(q + 1 - h->target) : 0;
    char *mem = malloc(alen + qlen + 1);
    if (!mem)
        return;
    for (int bearer = 0; bearer < 2; bearer++) {
        struct http_cred c;
        const char *why = NULL;
        int st = http_credentials(a ? a->value : NULL, alen, q ? q + 1 : NULL, qlen, bearer, mem, &c, &why);
        if (st && (st != 400 || !why))
            fail("credentials refused without 400 and a reason");
        const char *av = a ? a->value : NULL;
        bool user_ok = within(c.user, c.user_len, mem, alen + qlen) || within(c.user, c.user_len, av, alen);
        bool pass_ok = within(c.pass, c.pass_len, mem, alen + qlen) || within(c.pass, c.pass_len, av, alen);
        if (!st && (!user_ok || !pass_ok))
            fail("credentials outside the header and the decoding room");
    }
    free(mem);
}

static int on_head(void *ctx, const struct http_head *h)
{
    credentials(h);
    unsigned mode = *(const unsigned *)ctx;
    if (!h->method || !h->target || h->target_len != strlen(h->target))
        fail("a head without method or target");
    if (h->keep_alive && h->major != 1)
        fail("keep-alive outside HTTP/1.x");
    for (uint32_t i = 0; i < h->nhdrs; i++)
        if (!h->hdrs[i].name_len)
            fail("a header without a name");
    return mode & 2 ? HTTP_BODY_DISCARD : HTTP_BODY_KEEP;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    size_t step = (mode >> 2) + 1; /* 1..64 bytes a read */
    const struct http_limits lim = {mode & 1 ? 256 : 8192, mode & 1 ? 64 : 65536};
    struct http_parser *hp = http_parser_new(&lim, on_head, &mode);
    if (!hp)
        return 0;
    size_t off = 1, messages = 0;
    while (off < size && messages < 64) {
        size_t n = size - off < step ? size - off : step;
        enum http_event ev;
        size_t used = http_parser_feed(hp, data + off, n, &ev);
        if (used > n)
            fail("took more than it was given");
        off += used;
        if (ev == HTTP_EV_ERROR) {
            const char *why = NULL;
            int status = http_parser_status(hp, &why);
            if (status < 400 || status > 505 || !why)
                fail("an error without a 4xx/5xx status and a reason");
            break;
        }
        if (ev == HTTP_EV_MESSAGE) {
            size_t blen;
            uint8_t *body = http_parser_body(hp, &blen, true);
            if (blen > lim.max_body || (mode & 2 && body))
                fail("a body over the limit, or one that was to be discarded");
            free(body);
            if (http_parser_feed(hp, data + off, size - off, &ev) != 0 || ev != HTTP_EV_MESSAGE)
                fail("went past a message before http_parser_next");
            http_parser_next(hp);
            messages++;
        } else if (used < n) {
            fail("stopped without a message or an error");
        }
    }
    http_parser_free(hp);
    return 0;
}
