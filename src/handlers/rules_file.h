/*
 * Reading a handler's rules file line by line (acl_file.c, rewrite_rules.c):
 * the line without its end and surrounding blanks, and errors that name the
 * file and line ("path:12: what is wrong"), because a rules file that loads
 * with a line skipped is a hole nobody sees.
 */
#ifndef MGATE_HANDLERS_RULES_FILE_H
#define MGATE_HANDLERS_RULES_FILE_H

#include <stddef.h>
#include <stdio.h>

#define RULES_FILE_MAX_LINE 65536u

struct rules_file {
    FILE *f;
    const char *path; /* as it is named in errors */
    unsigned line;    /* of the line last read, from 1 */
    char *buf;
    size_t cap;
    char *err;
    size_t errlen;
};

/* 0, or -1 with "path: cannot open: why" in err. */
int rules_file_open(struct rules_file *r, const char *path, char *err, size_t errlen);
/* The same over text in memory (tests, fuzzing); `name` stands for the path. */
int rules_file_open_mem(struct rules_file *r, const char *name, const char *text, size_t len, char *err,
                        size_t errlen);
/* The next line without its end (CR LF or LF) and trailing blanks, leading
 * blanks skipped: 1, 0 at the end of the file, -1 on an error (err set). */
int rules_file_next(struct rules_file *r, char **out);
/* "path:line: " and the message into err; returns -1. */
int rules_file_fail(struct rules_file *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rules_file_close(struct rules_file *r);

/* The message into err; returns -1. */
int rules_failf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
