/*
 * Fuzzing the rewrite handler's rules file (handlers/rewrite_rules.c), which
 * an operator writes and SIGHUP reloads: arbitrary bytes read as a file.
 * When it loads, every rule is applied to a few topics and filters, with
 * identities safe and not: an expansion must give as many bytes as it said
 * it would, never a wildcard in a publish result from the template's own
 * text, and an identity that holds '/', '+' or '#' must never be
 * substituted.  Any disagreement aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers/rewrite.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_rewrite_rules: %s\n", why);
    abort();
}

static mgate_bytes B(const char *s) { return (mgate_bytes){(const uint8_t *)s, (uint32_t)strlen(s)}; }

static void apply(const struct rewrite_rules *rs, unsigned dir, const char *t, const struct rewrite_who *who,
                  bool who_safe)
{
    regmatch_t m[REWRITE_MAX_GROUPS + 1];
    const struct rewrite_rule *r = rewrite_match(rs, dir, t, strlen(t), m);
    if (!r)
        return;
    if (!(r->dir & dir))
        fail("a rule of the other direction matched");
    long n = rewrite_expand(r, (const uint8_t *)t, m, who, NULL, 0);
    if (n < 0) {
        if (who_safe && n == REWRITE_BAD_IDENTITY)
            fail("a safe identity was refused");
        return;
    }
    if (!who_safe) {
        bool uses_identity = false;
        for (uint32_t k = 0; k < r->npieces; k++)
            uses_identity |= r->pieces[k].kind == RW_USER || r->pieces[k].kind == RW_CLIENT;
        if (uses_identity)
            fail("an identity holding '/' was substituted");
    }
    uint8_t *out = malloc((size_t)n + 1);
    if (!out)
        return;
    if (rewrite_expand(r, (const uint8_t *)t, m, who, out, (size_t)n) != n)
        fail("the second expansion differs in length");
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[600];
    struct rewrite_rules *rs = NULL;
    if (rewrite_rules_parse("fuzz", (const char *)data, size, &rs, err, sizeof(err)) < 0) {
        if (strncmp(err, "fuzz", 4) != 0)
            fail("an error that does not name the file");
        return 0;
    }
    static const char *const topics[] = {"a", "a/b", "x/y/z", "$SYS/x", "sensors/t1/temp", "a b/c", "", "/"};
    static const char *const filters[] = {"#", "+/+", "a/#", "y/+/z/#", "$share/g/a/b"};
    struct rewrite_who safe = {.user = B("alice"), .client = B("dev-1"), .cn = B("cn"), .has_cn = true};
    struct rewrite_who unsafe = {.user = B("a/b"), .client = B("c/d"), .has_cn = false};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
        apply(rs, REWRITE_PUBLISH, topics[i], &safe, true);
        apply(rs, REWRITE_PUBLISH, topics[i], &unsafe, false);
    }
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
        apply(rs, REWRITE_SUBSCRIBE, filters[i], &safe, true);
    rewrite_rules_free(rs);
    return 0;
}
