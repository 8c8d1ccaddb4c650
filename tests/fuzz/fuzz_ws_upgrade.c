/*
 * Fuzzing the head of a WebSocket upgrade (net/ws_upgrade.c), which a
 * client's bytes reach before anything else on the WebSocket listeners:
 * arbitrary bytes read as a request and as an answer.  Every view the parser
 * returns must lie inside the head, values must come trimmed, and the
 * checks on a parsed head (ws_request_check, the subprotocol, tokens) must
 * hold their contracts.  Any disagreement aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/ws_upgrade.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_ws_upgrade: %s\n", why);
    abort();
}

static void inside(struct ws_str v, const char *p, size_t n)
{
    if (!v.p)
        return;
    if (v.p < p || v.p + v.n > p + n)
        fail("a view outside the head");
    if (v.n && (v.p[0] == ' ' || v.p[0] == '\t' || v.p[v.n - 1] == ' ' || v.p[v.n - 1] == '\t'))
        fail("a value not trimmed");
}

static void one(const char *p, size_t n, bool response)
{
    struct ws_head h;
    if (ws_head_parse(p, n, response, &h) < 0)
        return;
    const struct ws_str all[] = {h.method, h.target, h.host, h.upgrade, h.connection, h.key,
                                 h.version, h.protocol, h.origin, h.authorization, h.accept};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        inside(all[i], p, n);
    if (response && (h.status < 100 || h.status > 599))
        fail("a status outside 100-599");
    if (h.origin.p && !h.origins)
        fail("an Origin not counted");
    const char *why = NULL;
    unsigned st = response ? 0 : ws_request_check(&h, &why);
    if (st && !why)
        fail("a refusal without a reason");
    if (!response && !st && (!h.key.p || h.key.n != 24 || !ws_has_token(h.upgrade, "websocket")))
        fail("an upgrade let through without a key or Upgrade: websocket");
    static const char *const protos[] = {"mqtt", "mqttv3.1", NULL};
    const char *pick = ws_pick_protocol(h.protocol, protos);
    if (pick && *pick && strcmp(pick, "mqtt") && strcmp(pick, "mqttv3.1"))
        fail("a subprotocol we do not speak");
    if (!h.protocol.p && (!pick || *pick))
        fail("no offer must pick none");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    size_t n = ws_head_len((const char *)data, size);
    if (!n)
        return 0;
    char *copy = malloc(n); /* exactly the head: reading past it is caught */
    if (!copy)
        return 0;
    memcpy(copy, data, n);
    one(copy, n, false);
    one(copy, n, true);
    free(copy);
    return 0;
}
