/*
 * Small pure helpers of the HTTP front end: percent-encoding, Basic
 * credentials, query parameters, path checks.  No I/O, no allocation
 * except where said.
 */
#ifndef MGATE_HTTP_UTIL_H
#define MGATE_HTTP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Percent-decode n bytes of s into out (room for n bytes); form: '+' is a
 * space (query strings).  -1 for a broken escape or an encoded NUL. */
int http_pct_decode(const char *s, size_t n, char *out, size_t *outlen, bool form);
/* Percent-encode a decoded path for a request line: every byte but the
 * unreserved ones, sub-delims, ':', '@' and '/'.  out has room for 3n + 1;
 * returns the length (out is NUL-terminated). */
size_t http_pct_encode_path(const char *s, size_t n, char *out);
/* A "." or ".." segment: the target would resolve it, the handler would not. */
bool http_path_has_dot_segment(const char *p, size_t n);
/* Is a query parameter's raw name (n bytes, before its '=') key (lower-case
 * ASCII) as some target would read it?  Percent-decoded with '+' a space,
 * compared case-blind (also the non-ASCII letters that Java and .NET fold
 * to ASCII: dotless i...), leading spaces dropped (PHP), ended by an
 * encoded NUL (C).  Matching too many spellings is safe, too few is not:
 * a spelling mgate missed is a credential nobody judged. */
bool http_query_name_is(const char *s, size_t n, const char *key);
/* What a query holds for the parameter key, '&' and ';' both separating
 * (some targets split on ';' too).  The one lookup of the credential
 * parameter, so that what mgate judges is what a target reads. */
enum http_qparam {
    HTTP_QPARAM_NONE,      /* absent */
    HTTP_QPARAM_ONE,       /* once: its value form-decoded into out (room for n bytes) */
    HTTP_QPARAM_MANY,      /* more than once, in whatever spellings */
    HTTP_QPARAM_AMBIGUOUS, /* once, ending at ';': a target splitting on '&' only reads more */
    HTTP_QPARAM_BROKEN,    /* once, its value with a broken escape or an encoded NUL */
};
enum http_qparam http_query_param(const char *q, size_t n, const char *key, char *out, size_t *outlen);
/* The client's credentials on every HTTP-based listener (HTTP requests,
 * their WebSocket upgrades, MQTT over WebSocket), from three sources in
 * this order: the Authorization header with Basic credentials (username
 * and password); else the header's value as the password (with bearer, a
 * "Bearer T" gives T; without, the whole value, the Go mGate's HTTP
 * listener); else the authorization query parameter (http_query_param).
 * Two that could disagree are refused, since only one would be judged: the
 * parameter twice, or beside a header with another value (compared with
 * the password the header gives when it is no Basic one, with the whole
 * value when it is).  auth (auth_len bytes) is the header's value, NULL
 * when there is none; query (without '?') NULL when there is none; mem has
 * room for auth_len + query_len bytes.  What *out points to lies in auth
 * or mem.  Returns 0, or 400 with *why. */
struct http_cred {
    const char *user, *pass;
    uint32_t user_len, pass_len;
    bool has_user, has_pass;
};
int http_credentials(const char *auth, size_t auth_len, const char *query, size_t query_len, bool bearer,
                     char *mem, struct http_cred *out, const char **why);
/* Does the path (decoded, without its query) lie at or below prefix?
 * Segment-aware: "/mqtt" covers "/mqtt" and "/mqtt/x", never "/mqttx"; a
 * prefix ending in '/' means the same subtree.  Sets *rest to what follows
 * the prefix (starting with '/', or "" when it is the prefix itself).  The
 * one PATH_PREFIX rule of the HTTP and WebSocket listeners. */
bool http_path_under(const char *path, size_t n, const char *prefix, const char **rest);
/*
 * The path rule of every HTTP-based listener: the raw path (n bytes, no
 * query) is percent-decoded into mem (room for n + 1; NUL-terminated), must
 * hold no "." or ".." segment (a target would resolve it, PATH_PREFIX would
 * not) and must lie under prefix.  Returns 0 with *rest set (see
 * http_path_under), or 400 / 404 with *why.
 */
int http_path_check(const char *raw, size_t n, const char *prefix, char *mem, const char **rest, const char **why);

/* Whether a comma-separated list ("a, B,c") has item (n bytes), compared
 * case-insensitively, spaces and tabs around each entry ignored. */
bool http_list_has(const char *list, size_t len, const char *item, size_t n);
/* ALLOWED_ORIGINS (list; NULL or "": any origin): may a request go on whose
 * Origin header is origin (n bytes)?  count: how many Origin headers it had.
 * A request without Origin passes (devices send none: Origin protects
 * browsers); an empty Origin is not an allowed origin, nor are several
 * (whose joined value no listed origin equals).  The one rule of the HTTP
 * and WebSocket listeners. */
bool http_origin_allowed(const char *list, unsigned count, const char *origin, size_t n);

/* "Not Found" for 404, ... ("Error" for a status we do not answer). */
const char *http_reason_phrase(int status);
/* One of our own answers: the status line, extra and conn (header lines,
 * each ending in CRLF, or ""), and a JSON body saying why ({"status",
 * "error", "message"}; no "error" below 400: the bridge's 200) (left out,
 * its length kept, when !body: HEAD).  Returns its length (< size). */
size_t http_error_answer(char *out, size_t size, int status, const char *why, const char *extra,
                         const char *conn, bool body);

#endif
