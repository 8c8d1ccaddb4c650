#include "front/http_util.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/base64.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int http_pct_decode(const char *s, size_t n, char *out, size_t *outlen, bool form)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (n - i < 3)
                return -1;
            int hi = hexval(s[i + 1]);
            int lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0 || (hi | lo) == 0)
                return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && form) {
            c = ' ';
        } else if (c == '\0') {
            return -1;
        }
        out[o++] = c;
    }
    *outlen = o;
    return 0;
}

size_t http_pct_encode_path(const char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~!$&'()*+,;=:@/", c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return o;
}

bool http_path_has_dot_segment(const char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        size_t len = j - i;
        if ((len == 1 && p[i] == '.') || (len == 2 && p[i] == '.' && p[i + 1] == '.'))
            return true;
        i = j + 1;
    }
    return false;
}

/* The next byte of a query parameter's name as a form decoder reads it:
 * "%XX" decoded, '+' a space; a broken escape stands as it is, as lenient
 * decoders (Python's, browsers') leave it. */
static unsigned char form_byte(const char *s, size_t n, size_t *i)
{
    unsigned char c = (unsigned char)s[(*i)++];
    if (c == '+')
        return ' ';
    if (c == '%' && n - *i >= 2) {
        int hi = hexval(s[*i]), lo = hexval(s[*i + 1]);
        if (hi >= 0 && lo >= 0) {
            *i += 2;
            return (unsigned char)(hi << 4 | lo);
        }
    }
    return c;
}

/* The letters outside ASCII whose simple case mapping is an ASCII letter
 * (in UTF-8): Java's equalsIgnoreCase and .NET's case-blind comparisons take
 * "authorızation" (dotless i) for "authorization". */
static const struct {
    char ascii;
    const char *utf8;
} fold[] = {{'i', "\xC4\xB0"}, {'i', "\xC4\xB1"}, {'k', "\xE2\x84\xAA"}, {'s', "\xC5\xBF"}};

/* Does the decoded name at *i go on with c (a lower-case ASCII key byte),
 * in either case or as one of the letters above?  Moves *i past it. */
static bool name_has(const char *s, size_t n, size_t *i, char c)
{
    size_t at = *i;
    unsigned char b = form_byte(s, n, i);
    if ((b >= 'A' && b <= 'Z' ? b + 32 : b) == (unsigned char)c)
        return true;
    for (size_t f = 0; f < sizeof(fold) / sizeof(fold[0]); f++) {
        if (fold[f].ascii != c)
            continue;
        const char *u = fold[f].utf8;
        size_t j = at;
        while (*u && j < n && form_byte(s, n, &j) == (unsigned char)*u)
            u++;
        if (!*u) {
            *i = j;
            return true;
        }
    }
    return false;
}

bool http_query_name_is(const char *s, size_t n, const char *key)
{
    size_t i = 0, was = 0;
    while (i < n && form_byte(s, n, &i) == ' ')
        was = i; /* PHP drops the spaces a name starts with */
    i = was;
    for (; *key; key++)
        if (i >= n || !name_has(s, n, &i, *key))
            return false;
    return i == n || form_byte(s, n, &i) == '\0'; /* a C target's name ends at an encoded NUL */
}

/* The query segment (between '&' or ';') at q[*i]: its raw name and value
 * (none without '='); *i moves past its separator, *sep is that separator
 * ('\0' at the end). */
static void query_segment(const char *q, size_t n, size_t *i, size_t *nlen, const char **val, size_t *vlen,
                          char *sep)
{
    size_t start = *i, end = start;
    while (end < n && q[end] != '&' && q[end] != ';')
        end++;
    const char *eq = memchr(q + start, '=', end - start);
    *nlen = eq ? (size_t)(eq - q) - start : end - start;
    *val = eq ? eq + 1 : q + end;
    *vlen = (size_t)(q + end - *val);
    *sep = end < n ? q[end] : '\0';
    *i = end + 1;
}

enum http_qparam http_query_param(const char *q, size_t n, const char *key, char *out, size_t *outlen)
{
    unsigned seen = 0;
    const char *val = NULL;
    size_t vlen = 0;
    char end = '\0';
    for (size_t i = 0; i < n;) {
        const char *v;
        size_t nlen, vl, at = i;
        char sep;
        query_segment(q, n, &i, &nlen, &v, &vl, &sep);
        if (http_query_name_is(q + at, nlen, key))
            seen++, val = v, vlen = vl, end = sep;
    }
    if (seen != 1)
        return seen ? HTTP_QPARAM_MANY : HTTP_QPARAM_NONE;
    if (end == ';')
        return HTTP_QPARAM_AMBIGUOUS;
    return http_pct_decode(val, vlen, out, outlen, true) < 0 ? HTTP_QPARAM_BROKEN : HTTP_QPARAM_ONE;
}

/* Basic credentials in a header value ("Basic dTpw"): user and password
 * decoded into mem (room for n bytes); false when it is none. */
static bool basic_credentials(const char *v, size_t n, char *mem, struct http_cred *out)
{
    if (n <= 6 || strncasecmp(v, "basic ", 6))
        return false;
    v += 6, n -= 6;
    while (n && *v == ' ')
        v++, n--;
    int decoded = base64_decode(v, n, (uint8_t *)mem, n);
    char *colon = decoded >= 0 ? memchr(mem, ':', (size_t)decoded) : NULL;
    if (!colon)
        return false;
    *out = (struct http_cred){.user = mem, .user_len = (uint32_t)(colon - mem), .pass = colon + 1,
                              .pass_len = (uint32_t)((size_t)decoded - (size_t)(colon - mem) - 1),
                              .has_user = true, .has_pass = true};
    return true;
}

int http_credentials(const char *auth, size_t auth_len, const char *query, size_t query_len, bool bearer,
                     char *mem, struct http_cred *out, const char **why)
{
    static const char *const query_why[] = {
        [HTTP_QPARAM_MANY] = "more than one authorization query parameter (in any spelling)",
        [HTTP_QPARAM_AMBIGUOUS] = "the authorization query parameter ends at ';' (targets disagree on its value)",
        [HTTP_QPARAM_BROKEN] = "a broken escape or an encoded NUL in the authorization query parameter",
    };
    char *qmem = mem + auth_len; /* after what Basic may decode */
    size_t qn = 0;
    enum http_qparam q = query ? http_query_param(query, query_len, "authorization", qmem, &qn) : HTTP_QPARAM_NONE;
    *out = (struct http_cred){0};
    if (q > HTTP_QPARAM_ONE)
        return *why = query_why[q], 400;
    const char *token = auth;
    size_t token_len = auth_len;
    bool is_basic = auth && auth_len > 6 && !strncasecmp(auth, "basic ", 6);
    if (auth && bearer && !is_basic && auth_len >= 7 && !strncasecmp(auth, "bearer ", 7))
        token += 7, token_len -= 7;
    if (auth && q == HTTP_QPARAM_ONE && (qn != token_len || memcmp(qmem, token, qn)))
        return *why = "the Authorization header and the authorization parameter disagree", 400;
    if (auth && basic_credentials(auth, auth_len, mem, out))
        return 0;
    if (auth)
        *out = (struct http_cred){.pass = token, .pass_len = (uint32_t)token_len, .has_pass = true};
    else if (q == HTTP_QPARAM_ONE)
        *out = (struct http_cred){.pass = qmem, .pass_len = (uint32_t)qn, .has_pass = true};
    return 0;
}

int http_path_check(const char *raw, size_t n, const char *prefix, char *mem, const char **rest, const char **why)
{
    size_t dlen;
    if (http_pct_decode(raw, n, mem, &dlen, false) < 0)
        return *why = "bad percent-encoding in the path", 400;
    mem[dlen] = '\0';
    if (http_path_has_dot_segment(mem, dlen))
        return *why = "\".\" or \"..\" segments in the path", 400;
    if (!http_path_under(mem, dlen, prefix ? prefix : "", rest))
        return *why = "outside PATH_PREFIX", 404;
    return 0;
}

bool http_path_under(const char *path, size_t n, const char *prefix, const char **rest)
{
    size_t pl = strlen(prefix);
    while (pl && prefix[pl - 1] == '/')
        pl--; /* "/a/" and "/a" both mean the subtree /a */
    if (n < pl || memcmp(path, prefix, pl) != 0 || (n > pl && path[pl] != '/'))
        return false;
    *rest = path + pl;
    return true;
}

bool http_list_has(const char *list, size_t len, const char *item, size_t n)
{
    for (size_t i = 0; i < len;) {
        while (i < len && (list[i] == ' ' || list[i] == '\t' || list[i] == ','))
            i++;
        size_t start = i;
        while (i < len && list[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (list[end - 1] == ' ' || list[end - 1] == '\t'))
            end--;
        if (end > start && end - start == n && !strncasecmp(list + start, item, n))
            return true;
    }
    return false;
}

bool http_origin_allowed(const char *list, unsigned count, const char *origin, size_t n)
{
    if (!list || !*list || !count)
        return true;
    return count == 1 && n && http_list_has(list, strlen(list), origin, n);
}

const char *http_reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* A JSON string's content: quotes, backslashes and control characters escaped. */
static void json_text(char *out, size_t size, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            out[o++] = '\\', out[o++] = (char)c;
        else if (c < 0x20)
            o += (size_t)snprintf(out + o, size - o, "\\u%04x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}

size_t http_error_answer(char *out, size_t size, int status, const char *why, const char *extra,
                         const char *conn, bool body)
{
    char text[256], json[384];
    json_text(text, sizeof(text), why);
    int blen = status < 400 ? snprintf(json, sizeof(json), "{\"status\":%d,\"message\":\"%s\"}\n", status, text)
                            : snprintf(json, sizeof(json), "{\"status\":%d,\"error\":\"%s\",\"message\":\"%s\"}\n",
                                       status, http_reason_phrase(status), text);
    int n = snprintf(out, size, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n%s",
                     status, http_reason_phrase(status), blen, extra, conn, body ? json : "");
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}
