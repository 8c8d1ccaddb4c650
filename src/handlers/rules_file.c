/* A handler's rules file, line by line (rules_file.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "handlers/rules_file.h"

int rules_failf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int rules_file_fail(struct rules_file *r, const char *fmt, ...)
{
    int n = snprintf(r->err, r->errlen, "%s:%u: ", r->path, r->line);
    if (n >= 0 && (size_t)n < r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int rules_file_next(struct rules_file *r, char **out)
{
    ssize_t n = getline(&r->buf, &r->cap, r->f);
    if (n < 0)
        return ferror(r->f) ? rules_failf(r->err, r->errlen, "%s: cannot read: %s", r->path, strerror(errno)) : 0;
    r->line++;
    if ((size_t)n > RULES_FILE_MAX_LINE)
        return rules_file_fail(r, "line longer than %u bytes", RULES_FILE_MAX_LINE);
    if (memchr(r->buf, '\0', (size_t)n))
        return rules_file_fail(r, "a NUL byte (not a text file?)");
    while (n && (r->buf[n - 1] == '\n' || r->buf[n - 1] == '\r' || r->buf[n - 1] == ' ' || r->buf[n - 1] == '\t'))
        r->buf[--n] = '\0';
    char *p = r->buf;
    while (*p == ' ' || *p == '\t')
        p++;
    *out = p;
    return 1;
}

static void rules_file_init(struct rules_file *r, const char *path, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->path = path;
    r->err = err;
    r->errlen = errlen;
}

int rules_file_open(struct rules_file *r, const char *path, char *err, size_t errlen)
{
    rules_file_init(r, path, err, errlen);
    if (!(r->f = fopen(path, "r")))
        return rules_failf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return 0;
}

int rules_file_open_mem(struct rules_file *r, const char *name, const char *text, size_t len, char *err,
                        size_t errlen)
{
    rules_file_init(r, name, err, errlen);
    /* fmemopen refuses a zero-length buffer: an empty text is an empty file */
    static const char nothing[1];
    if (!(r->f = fmemopen((void *)(len ? text : nothing), len ? len : 1, "r")))
        return rules_failf(err, errlen, "%s: cannot open: %s", name, strerror(errno));
    if (!len)
        fgetc(r->f); /* past the one byte that stands for nothing */
    return 0;
}

void rules_file_close(struct rules_file *r)
{
    if (r->f)
        fclose(r->f);
    free(r->buf);
    r->f = NULL;
    r->buf = NULL;
}
