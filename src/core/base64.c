/* base64 decoding: standard (lenient about padding) and base64url (strict). */
#include "core/base64.h"

static int value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static int url_value(char c)
{
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return c == '+' || c == '/' ? -1 : value(c);
}

/* [s, s + n) (no padding) through the alphabet `digit`; with `canonical`,
 * the last character's unused bits must be zero (else "AB" and "AC" would
 * both be one byte). */
static int decode(int (*digit)(char), bool canonical, const char *s, size_t n, uint8_t *out, size_t max)
{
    if (n % 4 == 1)
        return -1;
    size_t len = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = digit(s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (len == max)
                return -1;
            out[len++] = (uint8_t)(acc >> bits);
        }
    }
    if (canonical && (acc & ((1u << bits) - 1)))
        return -1;
    return (int)len;
}

int base64_decode(const char *s, size_t n, uint8_t *out, size_t max)
{
    while (n && s[n - 1] == '=')
        n--;
    return decode(value, false, s, n, out, max);
}

int base64url_decode(const char *s, size_t n, uint8_t *out, size_t max)
{
    return decode(url_value, true, s, n, out, max);
}
