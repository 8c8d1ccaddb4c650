/* The PROXY protocol: v1 and v2 headers parsed whole, in pieces and broken;
 * the v2 header mgate builds for the broker read back by the same parser
 * and checked byte by byte where the spec fixes the layout. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "check.h"
#include "net/conn.h"
#include "net/proxy_proto.h"

static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static int parse(const void *buf, size_t len, struct proxy_info *pi)
{
    const char *why = NULL;
    int n = proxy_parse(buf, len, pi, &why);
    if (n < 0)
        CHECK(why && *why); /* every refusal says why */
    return n;
}

static const char *addr(const struct sockaddr_storage *ss)
{
    static char buf[2][64];
    static int i;
    i ^= 1;
    sockaddr_format((const struct sockaddr *)ss, buf[i], sizeof(buf[i]));
    return buf[i];
}

/* Every proper prefix of a complete header asks for more. */
static void check_prefixes(const void *hdr, size_t len)
{
    struct proxy_info pi;
    for (size_t i = 1; i < len; i++)
        CHECK_EQ_INT(parse(hdr, i, &pi), 0);
}

static void test_v1(void)
{
    struct proxy_info pi;
    const char *h4 = "PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883\r\nMQTT...";
    CHECK_EQ_INT(parse(h4, strlen(h4), &pi), 42);
    CHECK_EQ_INT(pi.version, 1);
    CHECK(!pi.local);
    CHECK_EQ_STR(addr(&pi.src), "192.0.2.7:56324");
    CHECK_EQ_STR(addr(&pi.dst), "10.0.0.1:1883");
    check_prefixes(h4, 42);
    const char *h6 = "PROXY TCP6 2001:db8::1 ::1 65535 8883\r\n";
    CHECK_EQ_INT(parse(h6, strlen(h6), &pi), (int)strlen(h6));
    CHECK_EQ_STR(addr(&pi.src), "[2001:db8::1]:65535");
    const char *unk = "PROXY UNKNOWN whatever follows\r\n";
    CHECK_EQ_INT(parse(unk, strlen(unk), &pi), (int)strlen(unk));
    CHECK(pi.local);
    const char *bad[] = {
        "PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883\n",     /* LF only */
        "PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n",        /* a field missing */
        "PROXY TCP4 192.0.2.7 10.0.0.1 56324 1883 9\r\n", /* one too many */
        "PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",        /* wrong family */
        "PROXY TCP4 192.0.2.300 10.0.0.1 1 2\r\n",        /* not an address */
        "PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",      /* port too large */
        "PROXY TCP4 192.0.2.7 10.0.0.1 -1 2\r\n",
        "PROXY TCP4 192.0.2.7 10.0.0.1 01 2\r\n",         /* leading zero */
        "PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
        "GET / HTTP/1.1\r\n",
        "\x10\x0c\x00\x04MQTT",                           /* a CONNECT: no header at all */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_EQ_INT(parse(bad[i], strlen(bad[i]), &pi), -1);
    char longline[200];
    memset(longline, ' ', sizeof(longline));
    memcpy(longline, "PROXY TCP4 ", 11);
    CHECK_EQ_INT(parse(longline, sizeof(longline), &pi), -1); /* no CRLF within 107 bytes */
    CHECK_EQ_INT(parse(longline, 100, &pi), 0);
}

static size_t v2(uint8_t *b, uint8_t cmd, uint8_t fam, const void *body, uint16_t len)
{
    memcpy(b, sig, 12);
    b[12] = 0x20 | cmd;
    b[13] = fam;
    b[14] = (uint8_t)(len >> 8);
    b[15] = (uint8_t)len;
    memcpy(b + 16, body, len);
    return 16u + len;
}

static void test_v2(void)
{
    struct proxy_info pi;
    uint8_t b[2048];
    /* TCP4 with a TLV after the addresses (AWS adds some): skipped */
    const uint8_t a4[] = {192, 0, 2, 7, 10, 0, 0, 1, 0xDC, 0x04, 0x07, 0x5B, 0x04, 0x00, 0x02, 'h', 'i'};
    size_t n = v2(b, 1, 0x11, a4, sizeof(a4));
    memcpy(b + n, "\x10rest", 5);
    CHECK_EQ_INT(parse(b, n + 5, &pi), (int)n);
    CHECK_EQ_INT(pi.version, 2);
    CHECK_EQ_STR(addr(&pi.src), "192.0.2.7:56324");
    CHECK_EQ_STR(addr(&pi.dst), "10.0.0.1:1883");
    check_prefixes(b, n);
    uint8_t a6[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1, [31] = 1, [32] = 0x12, [33] = 0x34, [35] = 0x50};
    n = v2(b, 1, 0x21, a6, sizeof(a6));
    CHECK_EQ_INT(parse(b, n, &pi), (int)n);
    CHECK_EQ_STR(addr(&pi.src), "[2001:db8::1]:4660");
    n = v2(b, 0, 0x00, "", 0); /* LOCAL: the balancer's own health check */
    CHECK_EQ_INT(parse(b, n, &pi), 16);
    CHECK(pi.local);
    n = v2(b, 1, 0x00, "", 0); /* PROXY, UNSPEC */
    CHECK_EQ_INT(parse(b, n, &pi), 16);
    CHECK(pi.local);
    n = v2(b, 1, 0x12, a4, 12); /* UDP */
    CHECK_EQ_INT(parse(b, n, &pi), -1);
    n = v2(b, 1, 0x11, a4, 8); /* TCP4 without room for its addresses */
    CHECK_EQ_INT(parse(b, n, &pi), -1);
    n = v2(b, 2, 0x11, a4, 12); /* unknown command */
    CHECK_EQ_INT(parse(b, n, &pi), -1);
    n = v2(b, 1, 0x11, a4, 12);
    b[12] = 0x31; /* version 3 */
    CHECK_EQ_INT(parse(b, n, &pi), -1);
    uint8_t big[PROXY_MAX_HEADER] = {0};
    n = v2(b, 1, 0x11, big, PROXY_MAX_HEADER - 15); /* one byte over the limit */
    CHECK_EQ_INT(parse(b, 16, &pi), -1); /* refused from the length alone */
    n = v2(b, 1, 0x11, big, PROXY_MAX_HEADER - 16);
    CHECK_EQ_INT(parse(b, n, &pi), PROXY_MAX_HEADER);
    CHECK_EQ_INT(parse(sig, 11, &pi), 0); /* the signature, not yet whole */
}

static void test_build(void)
{
    struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(40000)}, d = s;
    inet_pton(AF_INET, "198.51.100.9", &s.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
    d.sin_port = htons(1883);
    uint8_t b[PROXY_MAX_HEADER];
    size_t n = proxy_build_v2(b, sizeof(b), (struct sockaddr *)&s, (struct sockaddr *)&d, NULL);
    CHECK_EQ_INT(n, 28);
    CHECK(!memcmp(b, sig, 12));
    CHECK_EQ_INT(b[12], 0x21);
    CHECK_EQ_INT(b[13], 0x11);
    struct proxy_info pi;
    CHECK_EQ_INT(parse(b, n, &pi), 28);
    CHECK_EQ_STR(addr(&pi.src), "198.51.100.9:40000");
    CHECK_EQ_STR(addr(&pi.dst), "127.0.0.1:1883");

    /* TLS with a client certificate: PP2_TYPE_SSL with version and CN */
    struct proxy_tls t = {.tls = true, .version = "TLSv1.3", .cn = "dev00001"};
    n = proxy_build_v2(b, sizeof(b), (struct sockaddr *)&s, (struct sockaddr *)&d, &t);
    const uint8_t ssl[] = {0x20, 0x00, 5 + 3 + 7 + 3 + 8, 0x03, 0, 0, 0, 0, 0x21, 0x00, 7, 'T', 'L', 'S', 'v', '1',
                           '.', '3', 0x22, 0x00, 8, 'd', 'e', 'v', '0', '0', '0', '0', '1'};
    CHECK_EQ_INT(n, 28 + sizeof(ssl));
    CHECK(!memcmp(b + 28, ssl, sizeof(ssl)));
    CHECK_EQ_INT(b[14] << 8 | b[15], 12 + sizeof(ssl));
    CHECK_EQ_INT(parse(b, n, &pi), (int)n);

    /* IPv4 client, IPv6 listener: both as IPv6 (::ffff:198.51.100.9) */
    struct sockaddr_in6 d6 = {.sin6_family = AF_INET6, .sin6_port = htons(1883)};
    inet_pton(AF_INET6, "::1", &d6.sin6_addr);
    n = proxy_build_v2(b, sizeof(b), (struct sockaddr *)&s, (struct sockaddr *)&d6, NULL);
    CHECK_EQ_INT(b[13], 0x21);
    CHECK_EQ_INT(parse(b, n, &pi), (int)n);
    CHECK_EQ_STR(addr(&pi.src), "[::ffff:198.51.100.9]:40000");
    CHECK_EQ_INT(proxy_build_v2(b, 40, (struct sockaddr *)&s, (struct sockaddr *)&d, NULL), 0); /* too small */
}

int main(void)
{
    test_v1();
    test_v2();
    test_build();
    return check_done("test_proxy_proto");
}
