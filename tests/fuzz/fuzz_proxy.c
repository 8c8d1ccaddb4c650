/*
 * Fuzzing the PROXY protocol header parser (net/proxy_proto.c), which reads
 * the first bytes of every connection on a listener with PROXY_PROTOCOL:
 * arbitrary bytes read as the start of a stream, as net/proxy_accept.c does
 * by peeking, byte after byte.  Checked:
 *  - a header's length never exceeds what was given, nor PROXY_MAX_HEADER;
 *  - a verdict, once reached on a prefix, is the same on any longer input
 *    ("need more" only before the verdict), so peeking more bytes can never
 *    turn a refused or accepted header into something else;
 *  - addresses come with the length of their family, local ones with none;
 *  - every parsed address, rebuilt with proxy_build_v2 (with TLS facts
 *    taken from the input), parses back to the same addresses, and the
 *    header built is exactly as long as it says.
 * Any disagreement aborts.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_proxy: %s\n", why);
    abort();
}

static int parse(const uint8_t *p, size_t n, struct proxy_info *out)
{
    const char *why = NULL;
    uint8_t *copy = malloc(n ? n : 1); /* exactly n bytes: reading past them is caught */
    if (!copy)
        abort();
    memcpy(copy, p, n);
    int r = proxy_parse(copy, n, out, &why);
    free(copy);
    if (r < 0 && !why)
        fail("a refusal without a reason");
    if (r > 0 && ((size_t)r > n || r > PROXY_MAX_HEADER))
        fail("a header longer than the input or the limit");
    if (r > 0 && out->version != 1 && out->version != 2)
        fail("a header of no version");
    return r;
}

static void check_addresses(const struct proxy_info *pi)
{
    if (pi->local) {
        if (pi->len)
            fail("a local header with addresses");
        return;
    }
    int fam = pi->src.ss_family;
    if (fam != pi->dst.ss_family || (fam != AF_INET && fam != AF_INET6))
        fail("addresses of no or mixed families");
    if (pi->len != (fam == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)))
        fail("an address length that is not its family's");
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && !memcmp(&x->sin_addr, &y->sin_addr, 4);
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
}

/* A string of at most max bytes from the input's tail, for the TLS facts. */
static const char *take(const uint8_t *data, size_t size, size_t at, size_t max, char *buf)
{
    if (at >= size)
        return NULL;
    size_t n = size - at < max ? size - at : max;
    memcpy(buf, data + at, n);
    buf[n] = '\0'; /* may be shorter: a NUL in the input ends it */
    return buf;
}

static void round_trip(const struct proxy_info *pi, const uint8_t *data, size_t size)
{
    char ver[40], cn[300];
    struct proxy_tls tls = {
        .tls = size & 1,
        .version = take(data, size, size / 2, 39, ver),
        .cn = take(data, size, size / 3, 299, cn),
    };
    uint8_t hdr[PROXY_MAX_HEADER];
    size_t n = proxy_build_v2(hdr, sizeof(hdr), (const struct sockaddr *)&pi->src,
                              (const struct sockaddr *)&pi->dst, &tls);
    if (!n)
        fail("PROXY_MAX_HEADER did not fit a header");
    if (n != 16 + ((size_t)hdr[14] << 8 | hdr[15]))
        fail("a built header whose length field disagrees");
    struct proxy_info back;
    if (parse(hdr, n, &back) != (int)n)
        fail("a built header that does not parse to its length");
    if (back.version != 2 || back.local || back.len != pi->len || !same_addr(&back.src, &pi->src) ||
        !same_addr(&back.dst, &pi->dst))
        fail("a built header that parses to other addresses");
    for (size_t k = 0; k < n; k++) /* every shorter peek must wait for more */
        if (parse(hdr, k, &back) != 0)
            fail("a prefix of a built header that is not 'need more'");
}

/* Mixed families: an IPv4 end becomes ::ffff:a.b.c.d. */
static void mixed(const struct proxy_info *pi)
{
    if (pi->src.ss_family != AF_INET)
        return;
    struct sockaddr_in6 d6 = {.sin6_family = AF_INET6, .sin6_port = 1};
    memcpy(&d6.sin6_addr, "\x20\x01\x0d\xb8", 4);
    uint8_t hdr[PROXY_MAX_HEADER];
    size_t n = proxy_build_v2(hdr, sizeof(hdr), (const struct sockaddr *)&pi->src, (const struct sockaddr *)&d6,
                              NULL);
    struct proxy_info back;
    if (!n || parse(hdr, n, &back) != (int)n || back.len != sizeof(struct sockaddr_in6))
        fail("a mixed-family header that does not parse as IPv6");
    const struct sockaddr_in6 *s6 = (const void *)&back.src;
    const struct sockaddr_in *s4 = (const void *)&pi->src;
    if (memcmp(&s6->sin6_addr.s6_addr[12], &s4->sin_addr, 4) || s6->sin6_addr.s6_addr[10] != 0xff ||
        s6->sin6_port != s4->sin_port)
        fail("an IPv4 end not mapped to ::ffff:a.b.c.d");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * PROXY_MAX_HEADER)
        return 0;
    struct proxy_info pi;
    int r = parse(data, size, &pi);
    /* peeking: every prefix answers "need more" until the verdict, then the
     * verdict.  Every prefix up to 128 bytes (v1's whole line fits), and
     * the ones around a v2 header's end and the whole input. */
    bool decided = false;
    size_t marks[] = {r > 0 ? (size_t)r - 1 : 0, r > 0 ? (size_t)r : 0, size};
    for (size_t k = 0, m = 0; k <= size;) {
        struct proxy_info p2;
        int rk = parse(data, k, &p2);
        if (rk == 0 && (decided || (r > 0 && k >= (size_t)r)))
            fail("'need more' after a verdict, or on a whole header");
        if (rk != 0 && rk != r)
            fail("a verdict on a prefix that differs from the whole input's");
        if (rk > 0 && (p2.local != pi.local || p2.len != pi.len ||
                       (!pi.local && (!same_addr(&p2.src, &pi.src) || !same_addr(&p2.dst, &pi.dst)))))
            fail("a header that parses differently with more bytes behind it");
        decided |= rk != 0;
        if (k < 128) {
            k++;
            continue;
        }
        while (m < 3 && marks[m] <= k)
            m++;
        if (m == 3)
            break;
        k = marks[m];
    }
    if (r <= 0)
        return 0;
    check_addresses(&pi);
    if (!pi.local) {
        round_trip(&pi, data, size);
        mixed(&pi);
    }
    return 0;
}
