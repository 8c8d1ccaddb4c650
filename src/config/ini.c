/*
 * The INI reader: inih does the parsing, this file feeds it lines and turns
 * [section] key = value into the variable name the environment would use,
 * so that every source is looked up the same way.
 *
 * We give inih our own line reader for two reasons.  inih reads into a fixed
 * buffer and silently splits a longer line into two, the tail becoming a
 * line of its own (misnumbered, and sometimes valid); we stop with an error
 * naming the real line instead.  And inih reads an indented line as the
 * continuation of the previous value; nobody writing `  port = 1884` means
 * that, so leading blanks are dropped before inih sees the line.
 */
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"

struct ini_ctx {
    FILE *f;
    char *raw;
    size_t cap;
    unsigned line;      /* the physical line inih is working on */
    unsigned long_line; /* set when a line did not fit inih's buffer */
    int max_len;        /* that buffer's limit, for the message */
    struct config_vars *vs;
    unsigned err_line; /* first error found by our handler */
    char err[256];
};

static char *read_line(char *str, int num, void *stream)
{
    struct ini_ctx *c = stream;
    if (c->long_line || getline(&c->raw, &c->cap, c->f) < 0)
        return NULL;
    c->line++;
    char *p = c->raw;
    p[strcspn(p, "\r\n")] = '\0';
    while (*p == ' ' || *p == '\t')
        p++;
    size_t len = strlen(p);
    /* inih wants room for "\r\n\0" after the text */
    if (len + 3 > (size_t)num) {
        if (*p == ';' || *p == '#')
            len = 0; /* a long comment is harmless: pass an empty line */
        else {
            c->long_line = c->line;
            c->max_len = num - 3;
            return NULL;
        }
    }
    memcpy(str, p, len);
    memcpy(str + len, "\n", 2);
    return str;
}

static void trimmed_copy(char *dst, size_t size, const char *src)
{
    while (isspace((unsigned char)*src))
        src++;
    size_t n = strlen(src);
    while (n && isspace((unsigned char)src[n - 1]))
        n--;
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void append_upper(char *dst, size_t size, const char *src)
{
    size_t n = strlen(dst);
    for (; *src && n + 1 < size; src++)
        dst[n++] = (char)toupper((unsigned char)*src);
    dst[n] = '\0';
}

/* [mgate] or no section: MGATE_<KEY>; [name]: MGATE_<NAME>_<KEY>. */
static void var_name(char *dst, size_t size, const char *section, const char *key)
{
    snprintf(dst, size, "MGATE_");
    if (*section && strcasecmp(section, "mgate") != 0) {
        append_upper(dst, size, section);
        append_upper(dst, size, "_");
    }
    append_upper(dst, size, key);
}

static int on_value(void *user, const char *section, const char *key, const char *value)
{
    struct ini_ctx *c = user;
    char sec[64], name[192];
    trimmed_copy(sec, sizeof(sec), section);
    var_name(name, sizeof(name), sec, key);
    struct config_var var = {
        .name = name, .value = (char *)value, .section = sec, .key = (char *)key, .line = c->line};
    if (config_vars_set(c->vs, &var) == 0)
        return 1;
    if (!c->err_line) {
        c->err_line = c->line;
        snprintf(c->err, sizeof(c->err), "out of memory");
    }
    return 0;
}

/* inih's result (0, first bad line, -2) into one message. */
static int ini_result(const struct ini_ctx *c, int r, char *err, size_t errlen)
{
    const char *file = c->vs->file;
    if (r == -2)
        snprintf(err, errlen, "%s: out of memory", file);
    else if (r > 0 && (unsigned)r == c->err_line)
        snprintf(err, errlen, "%s:%d: %s", file, r, c->err);
    else if (r > 0)
        snprintf(err, errlen, "%s:%d: expected [section], key = value or a comment", file, r);
    else if (c->long_line)
        snprintf(err, errlen, "%s:%u: line longer than %d bytes (the INI reader's limit)", file,
                 c->long_line, c->max_len);
    else if (ferror(c->f))
        snprintf(err, errlen, "%s: cannot read: %s", file, strerror(errno));
    else
        return 0;
    return -1;
}

int config_read_ini(const char *path, struct config_vars *vs, char *err, size_t errlen)
{
    struct ini_ctx c = {.vs = vs};
    if (!(c.f = fopen(path, "r"))) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    free(vs->file);
    int rc = -1;
    if (!(vs->file = strdup(path)))
        snprintf(err, errlen, "%s: out of memory", path);
    else
        rc = ini_result(&c, ini_parse_stream(read_line, &c, on_value, &c), err, errlen);
    free(c.raw);
    fclose(c.f);
    return rc;
}
