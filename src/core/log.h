/*
 * Structured logs: one JSON object per line on stderr, with a stable schema:
 *   {"ts":"2026-11-22T10:00:00.123Z","level":"info","msg":"...", <fields>}
 * Fields use fixed names (listener, session, client_id, username, peer,
 * topic, bytes, reason, error...) documented in docs/LOGGING.md.
 *
 * Build a line with log_begin/log_*()/log_end; log_begin returns false when
 * the level is filtered out, so a disabled line costs one comparison.
 */
#ifndef MGATE_LOG_H
#define MGATE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { LOGL_DEBUG, LOGL_INFO, LOGL_WARN, LOGL_ERROR, LOGL_OFF };

struct logline {
    char buf[2048];
    size_t len;
    bool truncated;
};

/* Set once at start, before any worker thread runs. */
void log_set_level(int level);
static inline bool log_enabled(int level)
{
    extern int log_threshold;
    return level >= log_threshold;
}

bool log_begin(struct logline *l, int level, const char *msg);
void log_str(struct logline *l, const char *key, const char *val);
void log_bytes(struct logline *l, const char *key, const uint8_t *p, size_t len);
void log_int(struct logline *l, const char *key, long long v);
void log_uint(struct logline *l, const char *key, unsigned long long v);
void log_end(struct logline *l);

/* One-call form for messages without fields but a formatted text. */
void log_msgf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsgf(int level, const char *extra_key, const char *extra_val, const char *fmt, va_list ap);

/*
 * A budget for the lines a peer can cause (refusals, bad input): `burst`
 * lines a second go out in full, the rest are only counted.  The first line
 * let through in a later second carries the count of those left out, so a
 * flood costs one summary a second instead of a line per packet.  Owned by
 * one loop thread: no locking.
 */
struct log_limit {
    uint64_t second;   /* loop ms / 1000 of the window being counted */
    uint32_t passed;   /* lines let through in that second */
    uint32_t left_out; /* lines left out since the last one let through */
};
/* Whether a line may be written now; when it may, *left_out is how many
 * were left out before it (the caller reports them once, then zero). */
bool log_limit_take(struct log_limit *ll, uint64_t now_ms, uint32_t burst, uint32_t *left_out);

#endif
