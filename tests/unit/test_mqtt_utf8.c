/* UTF-8 and topic validation at their edges. */
#include "check.h"
#include "mqtt/mqtt.h"

struct text {
    const char *s;
    size_t len; /* 0: strlen */
    bool ok;
};

static const struct text utf8[] = {
    {"", 0, true},
    {"plain ascii / topic", 0, true},
    {"\x01\x1f\x7f", 0, true}, /* controls are discouraged, not malformed */
    {"\xc2\x80", 0, true},     /* U+0080, smallest 2-byte */
    {"\xc3\xa9t\xc3\xa9", 0, true},
    {"\xdf\xbf", 0, true},         /* U+07FF */
    {"\xe0\xa0\x80", 0, true},     /* U+0800, smallest 3-byte */
    {"\xe2\x82\xac", 0, true},     /* euro sign */
    {"\xed\x9f\xbf", 0, true},     /* U+D7FF, just below the surrogates */
    {"\xee\x80\x80", 0, true},     /* U+E000, just above */
    {"\xef\xbb\xbf", 0, true},     /* BOM is a character like any other */
    {"\xef\xbf\xbf", 0, true},     /* U+FFFF non-character: allowed */
    {"\xf0\x90\x80\x80", 0, true}, /* U+10000, smallest 4-byte */
    {"\xf0\x9f\x98\x80", 0, true},
    {"\xf4\x8f\xbf\xbf", 0, true}, /* U+10FFFF, the last code point */
    {"\x00", 1, false},            /* U+0000 */
    {"a\x00z", 3, false},
    {"\xc0\x80", 0, false},        /* overlong U+0000 */
    {"\xc1\xbf", 0, false},        /* overlong U+007F */
    {"\xe0\x80\x80", 0, false},
    {"\xe0\x9f\xbf", 0, false},    /* overlong U+07FF */
    {"\xf0\x80\x80\x80", 0, false},
    {"\xf0\x8f\xbf\xbf", 0, false}, /* overlong U+FFFF */
    {"\xed\xa0\x80", 0, false},    /* U+D800 */
    {"\xed\xbf\xbf", 0, false},    /* U+DFFF */
    {"\xed\xa0\xbd\xed\xb8\x80", 0, false}, /* CESU-8 surrogate pair */
    {"\xf4\x90\x80\x80", 0, false}, /* U+110000 */
    {"\xf5\x80\x80\x80", 0, false},
    {"\xf8\x88\x80\x80\x80", 0, false},
    {"\xfe", 0, false},
    {"\xff", 0, false},
    {"\x80", 0, false},            /* lone continuation */
    {"a\xbf", 0, false},
    {"\xc3", 0, false},            /* truncated */
    {"\xe2\x82", 0, false},
    {"\xf0\x9f\x98", 0, false},
    {"\xc3\x28", 0, false},        /* bad continuation */
    {"\xe2\x28\xa1", 0, false},
    {"\xe2\x82\x28", 0, false},
    {"\xf0\x9f\x28\x80", 0, false},
    {"\xf0\x9f\x98\x28", 0, false},
    {"ok\xc3\xa9\xc3", 0, false},  /* valid prefix, truncated tail */
};

static const struct text names[] = {
    {"a/b", 0, true},     {"/", 0, true},      {"a//b/", 0, true}, {"$SYS/x", 0, true},
    {"\xc3\xa9", 0, true}, {" ", 0, true},     {"", 0, false},     {"a/+", 0, false},
    {"#", 0, false},      {"a+b", 0, false},   {"a/#", 0, false},  {"\xc0\x80", 0, false},
    {"a\x00", 2, false},
};

static const struct text filters[] = {
    {"#", 0, true},       {"+", 0, true},       {"a/#", 0, true},      {"a/+/b", 0, true},
    {"+/+", 0, true},     {"/#", 0, true},      {"+/#", 0, true},      {"a//b", 0, true},
    {"/", 0, true},       {"a/b/c", 0, true},   {"+/", 0, true},       {"/+", 0, true},
    {"", 0, false},       {"a#", 0, false},     {"a/#/b", 0, false},   {"#/a", 0, false},
    {"#/", 0, false},     {"a+", 0, false},     {"+a", 0, false},      {"a/b+/c", 0, false},
    {"##", 0, false},     {"++", 0, false},     {"a/+#", 0, false},    {"\xed\xa0\x80", 0, false},
    {"\x00", 1, false},
};

typedef bool (*validator)(const uint8_t *, size_t);

static void run(const char *what, const struct text *t, size_t n, validator fn)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = t[i].len ? t[i].len : strlen(t[i].s);
        int before = check_failures;
        CHECK_EQ_INT(fn((const uint8_t *)t[i].s, len), t[i].ok);
        if (check_failures != before)
            fprintf(stderr, "  %s row %zu\n", what, i);
    }
}

/* Every 2- and 3-byte sequence against a slow decoder written from the
 * definition: well formed iff it decodes to a scalar value that needs
 * exactly that many bytes, is not a surrogate and is not U+0000. */
static bool reference(const uint8_t *p, size_t n)
{
    static const uint32_t lead_mask[] = {0, 0, 0x1F, 0x0F, 0x07};
    static const uint32_t min[] = {0, 1, 0x80, 0x800, 0x10000};
    uint8_t lead = n == 2 ? 0xC0 : n == 3 ? 0xE0 : 0xF0;
    if ((p[0] & (lead | lead >> 1)) != lead)
        return false;
    uint32_t cp = p[0] & lead_mask[n];
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return false;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    return cp >= min[n] && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
}

static void exhaustive(void)
{
    uint8_t b[4];
    int wrong = 0;

    for (uint32_t v = 0; v < 1u << 24; v++) {
        b[0] = (uint8_t)(v >> 16);
        b[1] = (uint8_t)(v >> 8);
        b[2] = (uint8_t)v;
        if (b[0] < 0xC0)
            continue; /* single bytes and stray continuations: covered above */
        size_t n = b[0] >= 0xE0 ? 3 : 2;
        if (b[0] >= 0xF0) {
            b[3] = 0x80 | (uint8_t)(v & 0x3F);
            n = 4;
        }
        if (mqtt_utf8_valid(b, n) != reference(b, n))
            wrong++;
    }
    CHECK_EQ_INT(wrong, 0);
}

/* The one validator (core/utf8.c) also serves WebSocket close reasons,
 * where U+0000 is allowed: only that differs. */
static void nul_allowed(void)
{
    static const uint8_t nul[] = {'a', 0x00, 'b'}, bad[] = {'a', 0x00, 0x80};
    CHECK(!utf8_valid(nul, sizeof nul, false));
    CHECK(utf8_valid(nul, sizeof nul, true));
    CHECK(!utf8_valid(bad, sizeof bad, true)); /* a NUL passes, what follows is still checked */
    CHECK(utf8_valid((const uint8_t *)"\xf0\x9f\x98\x80", 4, true));
    CHECK(!utf8_valid((const uint8_t *)"\xed\xa0\x80", 3, true)); /* a surrogate */
}

int main(void)
{
    nul_allowed();
    run("utf8", utf8, sizeof utf8 / sizeof utf8[0], mqtt_utf8_valid);
    run("topic name", names, sizeof names / sizeof names[0], mqtt_topic_name_valid);
    run("topic filter", filters, sizeof filters / sizeof filters[0], mqtt_topic_filter_valid);
    exhaustive();
    return check_done("test_mqtt_utf8");
}
