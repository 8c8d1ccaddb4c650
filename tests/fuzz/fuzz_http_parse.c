/*
 * Fuzzing the HTTP front end's request parser (llhttp under mgate's
 * limits and smuggling rules): the input's first byte picks how the rest is
 * cut into reads and whether bodies are kept; the parser must never take
 * more than it was given, must stop at each message until told to go on,
 * and must answer every error with a status between 400 and 505.  Any
 * disagreement aborts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front/http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_http_parse: %s\n", why);
    abort();
}

static int on_head(void *ctx, const struct http_head *h)
{
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
