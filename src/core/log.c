#include "core/log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Process-wide and written once at start-up, before any worker exists. */
int log_threshold = LOGL_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(int level) { log_threshold = level; }

static void put(struct logline *l, const char *s, size_t n)
{
    /* Keep room for the closing "}\n". */
    if (l->len + n + 2 > sizeof(l->buf)) {
        l->truncated = true;
        n = sizeof(l->buf) - 2 - l->len;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

/* JSON string escaping; bytes that are not printable ASCII are written as
 * \u00XX so a binary client id can never break the line or the schema. */
static void put_escaped(struct logline *l, const uint8_t *p, size_t n)
{
    put(l, "\"", 1);
    for (size_t i = 0; i < n && !l->truncated; i++) {
        uint8_t c = p[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(l, esc, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            put(l, esc, 6);
        } else {
            put(l, (const char *)&c, 1);
        }
    }
    put(l, "\"", 1);
}

static void put_key(struct logline *l, const char *key)
{
    put(l, ",\"", 2);
    put(l, key, strlen(key));
    put(l, "\":", 2);
}

bool log_begin(struct logline *l, int level, const char *msg)
{
    if (level < log_threshold)
        return false;
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    l->truncated = false;
    l->len = (size_t)snprintf(l->buf, sizeof(l->buf),
                              "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"level\":\"%s\",\"msg\":",
                              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                              tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level]);
    put_escaped(l, (const uint8_t *)msg, strlen(msg));
    return true;
}

void log_str(struct logline *l, const char *key, const char *val)
{
    put_key(l, key);
    put_escaped(l, (const uint8_t *)val, strlen(val));
}

void log_bytes(struct logline *l, const char *key, const uint8_t *p, size_t len)
{
    put_key(l, key);
    put_escaped(l, p, len);
}

void log_int(struct logline *l, const char *key, long long v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%lld", v);
    put_key(l, key);
    put(l, num, (size_t)n);
}

void log_uint(struct logline *l, const char *key, unsigned long long v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu", v);
    put_key(l, key);
    put(l, num, (size_t)n);
}

void log_end(struct logline *l)
{
    l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    /* One write per line so lines from several workers never interleave. */
    ssize_t rc = write(STDERR_FILENO, l->buf, l->len);
    (void)rc;
}

void log_vmsgf(int level, const char *extra_key, const char *extra_val, const char *fmt, va_list ap)
{
    struct logline l;
    char text[1024];
    vsnprintf(text, sizeof(text), fmt, ap);
    if (!log_begin(&l, level, text))
        return;
    if (extra_key)
        log_str(&l, extra_key, extra_val);
    log_end(&l);
}

void log_msgf(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsgf(level, NULL, NULL, fmt, ap);
    va_end(ap);
}

bool log_limit_take(struct log_limit *ll, uint64_t now_ms, uint32_t burst, uint32_t *left_out)
{
    uint64_t second = now_ms / 1000;
    if (second != ll->second) {
        ll->second = second;
        ll->passed = 0;
    }
    if (ll->passed >= burst) {
        ll->left_out++;
        return false;
    }
    ll->passed++;
    *left_out = ll->left_out;
    ll->left_out = 0;
    return true;
}
