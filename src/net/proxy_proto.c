#include "net/proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

#define V1_MAX 107 /* "PROXY TCP6 " + two full IPv6 addresses + two ports + CRLF */

enum { PP2_CMD_LOCAL = 0x0, PP2_CMD_PROXY = 0x1 };
enum { PP2_FAM_UNSPEC = 0x00, PP2_FAM_TCP4 = 0x11, PP2_FAM_TCP6 = 0x21 };
enum { PP2_TYPE_SSL = 0x20, PP2_SUBTYPE_SSL_VERSION = 0x21, PP2_SUBTYPE_SSL_CN = 0x22 };
enum { PP2_CLIENT_SSL = 0x01, PP2_CLIENT_CERT_CONN = 0x02 };

static int fail(const char **why, const char *what)
{
    *why = what;
    return -1;
}

/* ---- version 1: "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n" --------------- */

static bool v1_port(const char *s, uint16_t *out)
{
    if (!*s || strlen(s) > 5 || (s[0] == '0' && s[1]))
        return false;
    unsigned long n = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        n = n * 10 + (unsigned long)(*p - '0');
    }
    if (n > 65535)
        return false;
    *out = (uint16_t)n;
    return true;
}

static bool v1_addr(int family, const char *host, const char *port, struct sockaddr_storage *ss)
{
    uint16_t p;
    if (!v1_port(port, &p))
        return false;
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(p);
        return inet_pton(AF_INET, host, &in->sin_addr) == 1;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(p);
    return inet_pton(AF_INET6, host, &in6->sin6_addr) == 1;
}

static int parse_v1(const uint8_t *buf, size_t len, struct proxy_info *out, const char **why)
{
    const uint8_t *end = memchr(buf, '\n', len < V1_MAX ? len : V1_MAX);
    if (!end)
        return len < V1_MAX ? 0 : fail(why, "PROXY v1 line longer than 107 bytes");
    size_t n = (size_t)(end - buf) + 1;
    if (n < 2 || buf[n - 2] != '\r')
        return fail(why, "PROXY v1 line does not end with CRLF");
    char line[V1_MAX + 1];
    memcpy(line, buf, n - 2);
    line[n - 2] = '\0';
    char *f[7], *save = NULL;
    int k = 0;
    for (char *t = strtok_r(line, " ", &save); t && k < 7; t = strtok_r(NULL, " ", &save))
        f[k++] = t;
    memset(out, 0, sizeof(*out));
    out->version = 1;
    if (k >= 2 && !strcmp(f[1], "UNKNOWN")) {
        out->local = true; /* the rest of the line is to be ignored */
        return (int)n;
    }
    if (k != 6)
        return fail(why, "PROXY v1 line does not have 6 fields");
    int family = !strcmp(f[1], "TCP4") ? AF_INET : !strcmp(f[1], "TCP6") ? AF_INET6 : 0;
    if (!family)
        return fail(why, "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN");
    if (!v1_addr(family, f[2], f[4], &out->src) || !v1_addr(family, f[3], f[5], &out->dst))
        return fail(why, "PROXY v1 address or port is not valid");
    out->len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    return (int)n;
}

/* ---- version 2: binary --------------------------------------------------- */

static int parse_v2(const uint8_t *buf, size_t len, struct proxy_info *out, const char **why)
{
    if (len < 16)
        return 0;
    size_t body = (size_t)buf[14] << 8 | buf[15];
    if (16 + body > PROXY_MAX_HEADER)
        return fail(why, "PROXY v2 header longer than we accept");
    if (len < 16 + body)
        return 0;
    if ((buf[12] >> 4) != 2)
        return fail(why, "PROXY v2 header with an unknown version");
    memset(out, 0, sizeof(*out));
    out->version = 2;
    uint8_t cmd = buf[12] & 0x0F, fam = buf[13];
    if (cmd == PP2_CMD_LOCAL) {
        out->local = true;
        return (int)(16 + body);
    }
    if (cmd != PP2_CMD_PROXY)
        return fail(why, "PROXY v2 header with an unknown command");
    const uint8_t *a = buf + 16;
    if (fam == PP2_FAM_TCP4 && body >= 12) {
        struct sockaddr_in *s = (struct sockaddr_in *)&out->src, *d = (struct sockaddr_in *)&out->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&d->sin_addr, a + 4, 4);
        memcpy(&s->sin_port, a + 8, 2);
        memcpy(&d->sin_port, a + 10, 2);
        out->len = sizeof(struct sockaddr_in);
    } else if (fam == PP2_FAM_TCP6 && body >= 36) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src, *d = (struct sockaddr_in6 *)&out->dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, a, 16);
        memcpy(&d->sin6_addr, a + 16, 16);
        memcpy(&s->sin6_port, a + 32, 2);
        memcpy(&d->sin6_port, a + 34, 2);
        out->len = sizeof(struct sockaddr_in6);
    } else if (fam == PP2_FAM_UNSPEC) {
        out->local = true; /* PROXY with no address we could use */
    } else {
        return fail(why, "PROXY v2 header for a stream that is not TCP over IPv4 or IPv6");
    }
    return (int)(16 + body);
}

int proxy_parse(const uint8_t *buf, size_t len, struct proxy_info *out, const char **why)
{
    size_t n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
    if (!memcmp(buf, v2_sig, n))
        return len < sizeof(v2_sig) ? 0 : parse_v2(buf, len, out, why);
    n = len < 6 ? len : 6;
    if (!memcmp(buf, "PROXY ", n))
        return len < 6 ? 0 : parse_v1(buf, len, out, why);
    return fail(why, "no PROXY protocol header");
}

/* ---- building v2 ---------------------------------------------------------- */

static uint8_t *put_tlv(uint8_t *p, uint8_t type, const void *v, size_t n)
{
    p[0] = type;
    p[1] = (uint8_t)(n >> 8);
    p[2] = (uint8_t)n;
    memcpy(p + 3, v, n);
    return p + 3 + n;
}

/* PP2_TYPE_SSL: client flags, verify result, then the version and CN. */
static uint8_t *put_ssl(uint8_t *p, const struct proxy_tls *tls)
{
    size_t vlen = tls->version ? strnlen(tls->version, 32) : 0, clen = tls->cn ? strnlen(tls->cn, 255) : 0;
    size_t n = 5 + (vlen ? 3 + vlen : 0) + (clen ? 3 + clen : 0);
    p[0] = PP2_TYPE_SSL;
    p[1] = (uint8_t)(n >> 8);
    p[2] = (uint8_t)n;
    p[3] = PP2_CLIENT_SSL | (clen ? PP2_CLIENT_CERT_CONN : 0);
    memset(p + 4, 0, 4); /* verify: 0, the certificate (if any) was verified */
    uint8_t *q = vlen ? put_tlv(p + 8, PP2_SUBTYPE_SSL_VERSION, tls->version, vlen) : p + 8;
    return clen ? put_tlv(q, PP2_SUBTYPE_SSL_CN, tls->cn, clen) : q;
}

/* An IPv4 address as IPv6 (::ffff:a.b.c.d), for a header whose two ends
 * are of different families. */
static const struct sockaddr *as_v6(const struct sockaddr *sa, struct sockaddr_in6 *tmp)
{
    if (sa->sa_family != AF_INET)
        return sa;
    const struct sockaddr_in *in = (const void *)sa;
    memset(tmp, 0, sizeof(*tmp));
    tmp->sin6_family = AF_INET6;
    tmp->sin6_port = in->sin_port;
    tmp->sin6_addr.s6_addr[10] = tmp->sin6_addr.s6_addr[11] = 0xff;
    memcpy(&tmp->sin6_addr.s6_addr[12], &in->sin_addr, 4);
    return (const struct sockaddr *)tmp;
}

size_t proxy_build_v2(uint8_t *buf, size_t cap, const struct sockaddr *src, const struct sockaddr *dst,
                      const struct proxy_tls *tls)
{
    struct sockaddr_in6 s6, d6;
    if (src->sa_family != dst->sa_family) {
        src = as_v6(src, &s6);
        dst = as_v6(dst, &d6);
    }
    size_t need = 16 + 36 + (tls && tls->tls ? 8 + 3 + 32 + 3 + 255 : 0);
    if (cap < need)
        return 0;
    memcpy(buf, v2_sig, sizeof(v2_sig));
    buf[12] = 0x20 | PP2_CMD_PROXY;
    uint8_t *p = buf + 16;
    if (src->sa_family == AF_INET && dst->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;
        buf[13] = PP2_FAM_TCP4;
        memcpy(p, &s->sin_addr, 4);
        memcpy(p + 4, &d->sin_addr, 4);
        memcpy(p + 8, &s->sin_port, 2);
        memcpy(p + 10, &d->sin_port, 2);
        p += 12;
    } else if (src->sa_family == AF_INET6 && dst->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;
        buf[13] = PP2_FAM_TCP6;
        memcpy(p, &s->sin6_addr, 16);
        memcpy(p + 16, &d->sin6_addr, 16);
        memcpy(p + 32, &s->sin6_port, 2);
        memcpy(p + 34, &d->sin6_port, 2);
        p += 36;
    } else {
        buf[13] = PP2_FAM_UNSPEC; /* not IP (a unix socket): no address to give */
    }
    if (tls && tls->tls)
        p = put_ssl(p, tls);
    size_t body = (size_t)(p - buf) - 16;
    buf[14] = (uint8_t)(body >> 8);
    buf[15] = (uint8_t)body;
    return (size_t)(p - buf);
}
