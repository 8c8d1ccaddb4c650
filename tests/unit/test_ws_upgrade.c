/* The head of a WebSocket upgrade (net/ws_upgrade.c): a browser's request,
 * header names in any case, values trimmed, several Origin lines counted,
 * broken heads refused; an answer's status; what ws_request_check refuses
 * (plain requests 404, other upgrades 400, version 426, no key 400); the
 * subprotocol picked in the client's order, and which ones an answer may
 * name; and the accept key a client
 * expects (RFC 6455's own example, through wsf_accept). */
#include <string.h>

#include "check.h"
#include "net/ws_frame.h"
#include "net/ws_upgrade.h"

static bool eq(struct ws_str s, const char *want) { return s.p && s.n == strlen(want) && !memcmp(s.p, want, s.n); }

static int parse(const char *text, bool response, struct ws_head *h)
{
    size_t n = strlen(text);
    CHECK_EQ_INT(ws_head_len(text, n), n);
    return ws_head_parse(text, n, response, h);
}

static void request(void)
{
    const char *req = "GET /mqtt?x=1 HTTP/1.1\r\nHost: example\r\nupgrade:  WebSocket \r\n"
                      "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: foo, mqtt\r\n"
                      "Origin: https://a.example\r\nORIGIN: https://b.example\r\n"
                      "Authorization: Bearer t0k\r\n\r\n";
    struct ws_head h;
    const char *why = "unset";
    CHECK_EQ_INT(parse(req, false, &h), 0);
    CHECK(eq(h.method, "GET"));
    CHECK(eq(h.target, "/mqtt?x=1"));
    CHECK(eq(h.upgrade, "WebSocket"));
    CHECK(eq(h.origin, "https://a.example"));
    CHECK_EQ_INT(h.origins, 2);
    CHECK(eq(h.authorization, "Bearer t0k"));
    CHECK(ws_has_token(h.connection, "upgrade"));
    CHECK(!ws_has_token(h.connection, "close"));
    CHECK_EQ_INT(ws_request_check(&h, &why), 0);
    CHECK(why == NULL);
    static const char *const protos[] = {"mqtt", "mqttv3.1", NULL};
    CHECK_EQ_STR(ws_pick_protocol(h.protocol, protos), "mqtt");
    CHECK_EQ_STR(ws_pick_protocol((struct ws_str){"mqttv3.1 , mqtt", 15}, protos), "mqttv3.1");
    CHECK_EQ_STR(ws_pick_protocol((struct ws_str){NULL, 0}, protos), "");
    CHECK(ws_pick_protocol((struct ws_str){"foo,mqttx", 9}, protos) == NULL);
    char accept[29];
    CHECK_EQ_INT(wsf_accept("dGhlIHNhbXBsZSBub25jZQ==", accept), 0);
    CHECK_EQ_STR(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    char key[25], key2[25], want[29];
    CHECK_EQ_INT(wsf_new_key(key, accept), 0);
    CHECK_EQ_INT(strlen(key), 24);
    CHECK_EQ_INT(wsf_accept(key, want), 0);
    CHECK_EQ_STR(accept, want);
    CHECK_EQ_INT(wsf_new_key(key2, want), 0);
    CHECK(strcmp(key, key2) != 0); /* fresh each time */
}

static void refusals(void)
{
    struct ws_head h;
    const char *why;
    CHECK_EQ_INT(parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, &h), 0);
    CHECK_EQ_INT(ws_request_check(&h, &why), 404);
    CHECK_EQ_INT(parse("GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", false, &h), 0);
    CHECK_EQ_INT(ws_request_check(&h, &why), 400);
    CHECK_EQ_INT(parse("POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", false, &h), 0);
    CHECK_EQ_INT(ws_request_check(&h, &why), 400);
    CHECK_EQ_INT(parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                       "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                       false, &h),
                 0);
    CHECK_EQ_INT(ws_request_check(&h, &why), 426);
    CHECK_EQ_INT(parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                       "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n",
                       false, &h),
                 0);
    CHECK_EQ_INT(ws_request_check(&h, &why), 400);
    /* broken heads */
    CHECK_EQ_INT(parse("GET /\r\n\r\n", false, &h), -1);
    CHECK_EQ_INT(parse("GET / HTTP/2.0\r\n\r\n", false, &h), -1);
    CHECK_EQ_INT(parse("GET / HTTP/1.1\r\nNo colon here\r\n\r\n", false, &h), -1);
    CHECK_EQ_INT(parse("GET / HTTP/1.1\r\nBad : space\r\n\r\n", false, &h), -1);
    CHECK_EQ_INT(parse("GET / HTTP/1.1\r\nA: b\nc\r\n\r\n", false, &h), -1);
    CHECK_EQ_INT(ws_head_len("GET / HTTP/1.1\r\nHost: x\r\n", 25), 0);
}

static void answer(void)
{
    struct ws_head h;
    CHECK_EQ_INT(parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                       true, &h),
                 0);
    CHECK_EQ_INT(h.status, 101);
    CHECK(eq(h.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    CHECK(eq(h.protocol, "mqtt"));
    CHECK(!h.extensions.p); /* none chosen: a client refuses a 101 that names one it never offered */
    CHECK_EQ_INT(parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                       true, &h),
                 0);
    CHECK(eq(h.extensions, "permessage-deflate"));
    CHECK_EQ_INT(parse("HTTP/1.1 404\r\n\r\n", true, &h), 0);
    CHECK_EQ_INT(h.status, 404);
    CHECK_EQ_INT(parse("HTTP/1.1 10x Bad\r\n\r\n", true, &h), -1);
    CHECK_EQ_INT(parse("SSH-2.0-OpenSSH\r\n\r\n", true, &h), -1);
    CHECK_EQ_INT(parse("\r\n\r\n", true, &h), -1); /* an empty head: no status line (found by fuzz_ws_upgrade) */
    CHECK_EQ_INT(parse("\r\n\r\n", false, &h), -1);
    CHECK_EQ_INT(parse("GET /mqtt\t HTTP/1.1\r\nHost: x\r\n\r\n", false, &h), -1); /* a tab in the target (fuzz) */
}

/* What a client's 101 may name (RFC 6455 4.1): only a subprotocol its
 * request offered, exactly, in any of its Sec-WebSocket-Protocol lines. */
static void offered(void)
{
    const char *req = "GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: chat , superchat\r\n"
                      "X-Sec-WebSocket-Protocol: fake\r\nsec-websocket-protocol:v2\r\n\r\n";
    size_t n = strlen(req);
    CHECK(ws_head_offers(req, n, (struct ws_str){"chat", 4}));
    CHECK(ws_head_offers(req, n, (struct ws_str){"superchat", 9}));
    CHECK(ws_head_offers(req, n, (struct ws_str){"v2", 2})); /* a second line counts too */
    CHECK(!ws_head_offers(req, n, (struct ws_str){"Chat", 4})); /* subprotocols are case-sensitive */
    CHECK(!ws_head_offers(req, n, (struct ws_str){"fake", 4}));
    CHECK(!ws_head_offers(req, n, (struct ws_str){"chat, superchat", 15})); /* one is chosen, not a list */
    CHECK(!ws_head_offers(req, n, (struct ws_str){"", 0}));
    const char *none = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(!ws_head_offers(none, strlen(none), (struct ws_str){"mqtt", 4}));
}

int main(void)
{
    request();
    refusals();
    answer();
    offered();
    return check_done("test_ws_upgrade");
}
