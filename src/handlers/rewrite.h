/*
 * The `rewrite` handler's parts (internal; the unit tests and the fuzzer use
 * them): a rules file (MGATE_REWRITE_FILE) loaded into one immutable rule
 * set that SIGHUP replaces as a whole, the first-match search, and the
 * expansion of a rule's template.  docs/HANDLERS.md ("The rewrite handler")
 * is the user's description; the file format in short:
 *
 *   # direction  topic filter  regular expression     template
 *   publish      x/#           ^x/y/(.+)$             z/y/$1
 *   subscribe    dev/+/cfg     ^dev/([^/]+)/cfg$      cfg/%u/$1
 *   both         "a b/#"       "^a b/(.*)$"           ab/$1
 *
 * Four fields separated by blanks; a field in double quotes may hold blanks
 * (a quote inside it is written twice, nothing else is an escape, so a
 * regex's backslashes are its own).  The regex is POSIX extended (regcomp,
 * REG_EXTENDED) with at most 9 groups.  In the template: $1..$9 a group
 * ($$ a dollar sign), %u the username, %c the client id, %cn the CN of the
 * client's certificate (%% a percent sign); any other $ or % is itself.
 */
#ifndef MGATE_HANDLERS_REWRITE_H
#define MGATE_HANDLERS_REWRITE_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mgate.h"

enum rewrite_dir {
    REWRITE_PUBLISH = 1,   /* client PUBLISH, and the CONNECT's will */
    REWRITE_SUBSCRIBE = 2, /* SUBSCRIBE filters, and the same UNSUBSCRIBE filters */
    REWRITE_BOTH = 3,
};

#define REWRITE_MAX_GROUPS 9
#define REWRITE_MAX_TOPIC 65535u

enum rewrite_piece_kind { RW_TEXT, RW_GROUP, RW_USER, RW_CLIENT, RW_CN };

/* A template is a list of pieces: literal text, or what stands in for a
 * substitution. */
struct rewrite_piece {
    uint8_t kind;     /* enum rewrite_piece_kind */
    uint8_t group;    /* RW_GROUP: 1..9 */
    uint32_t off, len; /* RW_TEXT: its bytes in rule->text */
};

struct rewrite_rule {
    unsigned line; /* in the file, for logs */
    uint8_t dir;   /* enum rewrite_dir */
    bool needs_cn; /* the template holds %cn */
    uint32_t filter_len;
    char *filter; /* NUL-terminated */
    regex_t re;
    char *text; /* the template's literal text, unescaped */
    struct rewrite_piece *pieces;
    uint32_t npieces;
};

struct rewrite_rules {
    char *path; /* as the file was named, for logs */
    struct rewrite_rule *v;
    uint32_t n, cap;
};

/* Who is asking: what %u, %c and %cn stand for (has_cn false: no
 * certificate). */
struct rewrite_who {
    mgate_bytes user, client, cn;
    bool has_cn;
};

/* Why an expansion gave no topic (rewrite_expand's negative results). */
enum rewrite_refusal {
    REWRITE_BAD_IDENTITY = -1, /* %u/%c/%cn empty, holding + # /, or a leading $ at the start */
    REWRITE_NO_CERT = -2,      /* %cn and no client certificate */
};

/* ---- the file (rewrite_rules.c) ---- */

/* The rules of a file; -1 with "path:line: what is wrong" in err. */
int rewrite_rules_load(const char *path, struct rewrite_rules **out, char *err, size_t errlen);
/* The same from text in memory; `name` stands for the path in errors. */
int rewrite_rules_parse(const char *name, const char *text, size_t len, struct rewrite_rules **out, char *err,
                        size_t errlen);
void rewrite_rules_free(struct rewrite_rules *rs);

/* ---- applying them (rewrite_apply.c) ---- */

/* The first rule of direction `dir` (REWRITE_PUBLISH or REWRITE_SUBSCRIBE)
 * whose filter covers t (a topic name or filter of len bytes, with a NUL
 * after them: regexec reads to it, REG_STARTEND is not understood by the
 * sanitizers) and whose regex matches it, with its groups in m; NULL when
 * none does. */
const struct rewrite_rule *rewrite_match(const struct rewrite_rules *rs, unsigned dir, const char *t, size_t len,
                                         regmatch_t m[REWRITE_MAX_GROUPS + 1]);

/* r's template for t (matched as m) into out[0..cap): the result's length,
 * which when larger than cap was not written (call again with that room),
 * or a negative enum rewrite_refusal.  Nothing is allocated. */
long rewrite_expand(const struct rewrite_rule *r, const uint8_t *t, const regmatch_t *m,
                    const struct rewrite_who *who, uint8_t *out, size_t cap);

/* Whether a substituted identity may stand where it lands: not empty, no
 * '+', '#' or '/', and no '$' first when it starts the topic. */
bool rewrite_identity_ok(mgate_bytes v, bool at_start);

#endif
