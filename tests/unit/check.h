/* Minimal assertions for unit tests: a failed CHECK prints where and why and
 * makes the test exit non-zero at the end; the test keeps running so one run
 * shows every failure. */
#ifndef MGATE_CHECK_H
#define MGATE_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        check_count++;                                                                 \
        if (!(cond)) {                                                                 \
            check_failures++;                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                              \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                             \
    do {                                                                               \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                \
        check_count++;                                                                 \
        if (check_a_ != check_b_) {                                                    \
            check_failures++;                                                          \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__,        \
                    __LINE__, #a, #b, check_a_, check_b_);                             \
        }                                                                              \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                             \
    do {                                                                               \
        const char *check_a_ = (a), *check_b_ = (b);                                   \
        check_count++;                                                                 \
        if (strcmp(check_a_, check_b_) != 0) {                                         \
            check_failures++;                                                          \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__,    \
                    __LINE__, #a, #b, check_a_, check_b_);                             \
        }                                                                              \
    } while (0)

/* A test's input file: path holds text afterwards, or the test exits. */
static inline void check_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static inline int check_done(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
