/* UTF-8 (RFC 3629) validation: one implementation for MQTT's strings (no
 * U+0000) and WebSocket close reasons (any code point). */
#include "core/utf8.h"

static bool cont(uint8_t b) { return (b & 0xC0) == 0x80; }

/* Length of the well-formed sequence at p[0..left), or 0.  The second byte's
 * range is what rules out overlong forms (E0, F0), surrogates (ED) and code
 * points above U+10FFFF (F4); the lead byte rules out C0, C1 and F5..FF. */
static size_t seq_len(const uint8_t *p, size_t left)
{
    uint8_t b = p[0];
    uint8_t lo = 0x80, hi = 0xBF;
    size_t n;

    if (b >= 0xC2 && b <= 0xDF)
        n = 2;
    else if (b >= 0xE0 && b <= 0xEF)
        n = 3;
    else if (b >= 0xF0 && b <= 0xF4)
        n = 4;
    else
        return 0;
    if (b == 0xE0)
        lo = 0xA0;
    else if (b == 0xED)
        hi = 0x9F;
    else if (b == 0xF0)
        lo = 0x90;
    else if (b == 0xF4)
        hi = 0x8F;
    if (n > left || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (!cont(p[i]))
            return 0;
    return n;
}

bool utf8_valid(const uint8_t *p, size_t len, bool allow_nul)
{
    size_t i = 0;

    while (i < len) {
        if (p[i] >= 0x01 && p[i] < 0x80) { /* topics are mostly ASCII */
            i++;
            continue;
        }
        if (p[i] == 0) {
            if (!allow_nul)
                return false;
            i++;
            continue;
        }
        size_t n = seq_len(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* The code point of a well-formed sequence of n bytes. */
static uint32_t code_point(const uint8_t *p, size_t n)
{
    uint32_t c = n == 1 ? p[0] : p[0] & (0x7Fu >> n);
    for (size_t i = 1; i < n; i++)
        c = c << 6 | (p[i] & 0x3Fu);
    return c;
}

static bool unwelcome(uint32_t c)
{
    return c < 0x20 || (c >= 0x7F && c <= 0x9F) || (c >= 0xFDD0 && c <= 0xFDEF) || (c & 0xFFFE) == 0xFFFE;
}

bool utf8_mqtt_name(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t n = p[i] < 0x80 ? 1 : seq_len(p + i, len - i);
        if (n == 0 || unwelcome(code_point(p + i, n)))
            return false;
        i += n;
    }
    return true;
}
