/*
 * The .env reader: NAME=VALUE lines as docker and the Go mGate (godotenv)
 * write them.  Values are kept in a list, not put in the environment, so
 * the process environment stays what the user gave and precedence is
 * decided when a variable is looked up.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static char *skip_space(char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

static void trim_end(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
}

/* Unquotes in place, *p at the opening quote.  Single quotes are literal;
 * double quotes know \n and a backslash before any other character. */
static char *unquote(char *p, const char **why)
{
    char q = *p++, *out = p, *val = p;
    for (; *p && *p != q; p++) {
        if (q == '"' && *p == '\\' && p[1]) {
            p++;
            *out++ = *p == 'n' ? '\n' : *p;
        } else {
            *out++ = *p;
        }
    }
    if (*p != q) {
        *why = q == '"' ? "no closing double quote (values are one line)"
                        : "no closing single quote (values are one line)";
        return NULL;
    }
    p = skip_space(p + 1);
    if (*p && *p != '#') {
        *why = "text after the closing quote";
        return NULL;
    }
    *out = '\0';
    return val;
}

/* An unquoted value ends at a '#' that follows a space: a comment. */
static char *bare_value(char *p)
{
    for (char *c = p; *c; c++)
        if (*c == '#' && c > p && (c[-1] == ' ' || c[-1] == '\t')) {
            *c = '\0';
            break;
        }
    trim_end(p);
    return p;
}

static char *parse_name(char *p, char **end)
{
    if (!isalpha((unsigned char)*p) && *p != '_')
        return NULL;
    char *name = p;
    while (isalnum((unsigned char)*p) || *p == '_' || *p == '.')
        p++;
    *end = p;
    return name;
}

/* 1 with name and value set, 0 for a blank or comment line, -1 with why. */
static int dotenv_line(char *line, char **name, char **value, const char **why)
{
    char *p = skip_space(line), *end;
    if (*p == '\0' || *p == '#')
        return 0;
    if (strncmp(p, "export", 6) == 0 && (p[6] == ' ' || p[6] == '\t'))
        p = skip_space(p + 6);
    *why = "expected NAME=VALUE";
    if (!(*name = parse_name(p, &end)))
        return -1;
    p = skip_space(end);
    if (*p != '=')
        return -1;
    *end = '\0';
    p = skip_space(p + 1);
    *value = (*p == '"' || *p == '\'') ? unquote(p, why) : bare_value(p);
    return *value ? 1 : -1;
}

static int dotenv_stream(FILE *f, struct config_vars *vs, char *err, size_t errlen)
{
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    int rc = 0;
    while (rc == 0 && getline(&line, &cap, f) >= 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        struct config_var var = {.line = lineno};
        const char *why = NULL;
        int r = dotenv_line(line, &var.name, &var.value, &why);
        if (r < 0) {
            snprintf(err, errlen, "%s:%u: %s", vs->file, lineno, why);
            rc = -1;
        } else if (r > 0 && config_vars_set(vs, &var) < 0) {
            snprintf(err, errlen, "%s:%u: out of memory", vs->file, lineno);
            rc = -1;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", vs->file, strerror(errno));
        rc = -1;
    }
    free(line);
    return rc;
}

int config_read_dotenv(const char *path, struct config_vars *vs, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0; /* like the Go mGate: .env is optional */
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    free(vs->file);
    if (!(vs->file = strdup(path)))
        snprintf(err, errlen, "%s: out of memory", path);
    else
        rc = dotenv_stream(f, vs, err, errlen);
    fclose(f);
    return rc;
}
