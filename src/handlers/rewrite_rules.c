/*
 * Reading MGATE_REWRITE_FILE into a rewrite_rules (the format: rewrite.h).
 * Strict, as acl_file.c is: a line the loader does not understand, a regex
 * regcomp refuses, a $N the regex has no group for, a template that no
 * substitution could ever make a valid topic, all stop the load with the
 * file and line, so a rule is never silently skipped.
 */
#include <stdlib.h>
#include <string.h>

#include "handlers/rewrite.h"
#include "handlers/rules_file.h"
#include "mqtt/mqtt.h"

#define FIELDS 4

/* ---- fields ------------------------------------------------------------- */

/* A double-quoted field at *p, unquoted in place ("" is one quote); *p is
 * left after it.  NULL when the quote is not closed. */
static char *quoted(char **p)
{
    char *start = *p + 1, *w = start;
    for (char *s = start;; s++) {
        if (!*s)
            return NULL;
        if (*s == '"' && s[1] == '"') {
            *w++ = '"';
            s++;
        } else if (*s == '"') {
            *p = s + 1;
            *w = '\0';
            return start;
        } else {
            *w++ = *s;
        }
    }
}

/* Split line into at most FIELDS fields (in place); how many, or -1 with
 * the reason in r. */
static int split_fields(struct rules_file *r, char *line, char *field[FIELDS])
{
    int n = 0;
    for (char *p = line; *p;) {
        if (n == FIELDS)
            return rules_file_fail(r, "more than %d fields (put a field that holds blanks in double quotes)",
                                   FIELDS);
        char *f;
        if (*p == '"') {
            if (!(f = quoted(&p)))
                return rules_file_fail(r, "field %d: the double quote is not closed", n + 1);
            if (*p && *p != ' ' && *p != '\t')
                return rules_file_fail(r, "field %d: a blank must follow the closing quote", n + 1);
        } else {
            f = p;
            p += strcspn(p, " \t\"");
            if (*p == '"')
                return rules_file_fail(r, "field %d: a double quote inside an unquoted field (quote the whole "
                                          "field, with the quote written twice)", n + 1);
        }
        if (*p)
            *p++ = '\0';
        p += strspn(p, " \t");
        field[n++] = f;
    }
    return n;
}

/* ---- the parts of a rule ------------------------------------------------ */

static int direction(struct rules_file *r, const char *word, uint8_t *dir)
{
    static const struct {
        const char *word;
        uint8_t dir;
    } words[] = {{"publish", REWRITE_PUBLISH}, {"subscribe", REWRITE_SUBSCRIBE}, {"both", REWRITE_BOTH}};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcmp(word, words[i].word) == 0) {
            *dir = words[i].dir;
            return 0;
        }
    return rules_file_fail(r, "unknown direction \"%s\" (publish, subscribe or both)", word);
}

/* ---- what a regex costs to compile ---------------------------------- */

/*
 * glibc's regcomp copies a repeated atom or group once per count (a{100}
 * is a hundred a's), so nested counts multiply, and repetition operators
 * in a row (a++, undefined in POSIX EREs) double it each: 60 of them ask
 * for more memory than there is, which would end mgate at start or on
 * SIGHUP instead of refusing the file.  The cost here is that copy count,
 * estimated while walking the regex; a rule that needs more is refused.
 */
#define REGEX_MAX_COST 20000u
#define REGEX_MAX_DEPTH 32

struct cost {
    unsigned long level[REGEX_MAX_DEPTH]; /* what each open group holds so far */
    unsigned long last;                   /* the last atom or group, which a repetition copies */
    int depth;
    bool repeated; /* the last token was a repetition */
};

/* The count a repetition at s asks for, and its length in *used; 0: none. */
static unsigned long repetition(const char *s, size_t *used)
{
    *used = 1;
    if (*s == '*' || *s == '+' || *s == '?')
        return 2;
    if (*s != '{')
        return 0;
    char *end;
    unsigned long m = strtoul(s + 1, &end, 10), n = m;
    if (*end == ',')
        n = end[1] == '}' ? m + 1 : strtoul(end + 1, &end, 10);
    end = strchr(end, '}');
    if (!end)
        return 0; /* regcomp will say what is wrong */
    *used = (size_t)(end - s) + 1;
    n = n > m ? n : m ? m : 1;
    return n > REGEX_MAX_COST ? REGEX_MAX_COST + 1 : n; /* no overflow in the products */
}

/* The end of a bracket expression starting at s ('['), or NULL. */
static const char *bracket_end(const char *s)
{
    s++;
    if (*s == '^')
        s++;
    if (*s == ']')
        s++;
    for (; *s && *s != ']'; s++)
        if (*s == '[' && (s[1] == ':' || s[1] == '.' || s[1] == '=')) {
            const char *close = strstr(s + 2, (char[]){s[1], ']', 0});
            if (!close)
                return NULL;
            s = close + 1;
        }
    return *s ? s : NULL;
}

static void atom(struct cost *c, unsigned long n)
{
    c->level[c->depth] += n;
    c->last = n;
    c->repeated = false;
}

/* The regex's copy count, or 0 when it has repetitions in a row or
 * groups nested too deep (both refused). */
static unsigned long regex_cost(const char *s)
{
    struct cost c = {0};
    while (*s) {
        size_t used;
        unsigned long times = repetition(s, &used);
        if (times) {
            if (c.repeated)
                return 0;
            unsigned long grown = c.last * times;
            c.level[c.depth] += grown - c.last;
            c.last = grown;
            c.repeated = true;
            s += used;
        } else if (*s == '(') {
            if (++c.depth == REGEX_MAX_DEPTH)
                return 0;
            c.level[c.depth] = 0;
            c.repeated = false;
            s++;
        } else if (*s == ')' && c.depth) {
            unsigned long group = c.level[c.depth--] + 1;
            atom(&c, group);
            s++;
        } else {
            const char *end = *s == '[' ? bracket_end(s) : *s == '\\' && s[1] ? s + 1 : s;
            atom(&c, 1);
            s = (end ? end : s) + 1;
        }
        if (c.level[c.depth] > REGEX_MAX_COST || c.last > REGEX_MAX_COST)
            return REGEX_MAX_COST + 1;
    }
    unsigned long total = 0;
    for (int d = 0; d <= c.depth; d++)
        total += c.level[d];
    return total ? total : 1;
}

static int regex(struct rules_file *r, const char *src, regex_t *re)
{
    if (!*src)
        return rules_file_fail(r, "empty regular expression (.* matches every topic)");
    unsigned long cost = regex_cost(src);
    if (!cost)
        return rules_file_fail(r, "regular expression \"%s\": two repetition operators in a row (undefined in "
                                  "POSIX), or groups nested deeper than %d", src, REGEX_MAX_DEPTH - 1);
    if (cost > REGEX_MAX_COST)
        return rules_file_fail(r, "regular expression \"%s\": its counted repetitions would make regcomp copy "
                                  "it more than %u times", src, REGEX_MAX_COST);
    int rc = regcomp(re, src, REG_EXTENDED);
    if (rc) {
        char why[200];
        regerror(rc, re, why, sizeof(why));
        return rules_file_fail(r, "regular expression \"%s\": %s", src, why);
    }
    if (re->re_nsub > REWRITE_MAX_GROUPS) {
        size_t groups = re->re_nsub;
        regfree(re);
        return rules_file_fail(r, "regular expression \"%s\" has %zu groups; at most %d ($1..$%d)", src, groups,
                               REWRITE_MAX_GROUPS, REWRITE_MAX_GROUPS);
    }
    return 0;
}

static int piece_add(struct rewrite_rule *rule, struct rewrite_piece p)
{
    struct rewrite_piece *v = realloc(rule->pieces, (rule->npieces + 1) * sizeof(*v));
    if (!v)
        return -1;
    rule->pieces = v;
    v[rule->npieces++] = p;
    return 0;
}

/* The substitution at s ($N, %u, %c, %cn), its length in *used; kind
 * RW_TEXT when s is a literal character (with $$ and %% one of two). */
static struct rewrite_piece substitution(const char *s, size_t *used)
{
    *used = 2;
    if (s[0] == '$' && s[1] >= '0' && s[1] <= '9')
        return (struct rewrite_piece){.kind = RW_GROUP, .group = (uint8_t)(s[1] - '0')};
    if (s[0] == '%' && s[1] == 'c' && s[2] == 'n') {
        *used = 3;
        return (struct rewrite_piece){.kind = RW_CN};
    }
    if (s[0] == '%' && (s[1] == 'u' || s[1] == 'c'))
        return (struct rewrite_piece){.kind = s[1] == 'u' ? RW_USER : RW_CLIENT};
    *used = (s[0] == '$' || s[0] == '%') && s[1] == s[0] ? 2 : 1;
    return (struct rewrite_piece){.kind = RW_TEXT};
}

static int template_piece(struct rules_file *r, struct rewrite_rule *rule, struct rewrite_piece p)
{
    if (p.kind == RW_GROUP && p.group == 0)
        return rules_file_fail(r, "template: $0 is not supported ($1..$9; put ( ) around the whole regex)");
    if (p.kind == RW_GROUP && p.group > rule->re.re_nsub)
        return rules_file_fail(r, "template: $%u, but the regular expression has %zu group%s", p.group,
                               rule->re.re_nsub, rule->re.re_nsub == 1 ? "" : "s");
    rule->needs_cn |= p.kind == RW_CN;
    return piece_add(rule, p) < 0 ? rules_file_fail(r, "out of memory") : 0;
}

/* The template into pieces; literal text is copied (unescaped) to rule->text. */
static int template_parse(struct rules_file *r, struct rewrite_rule *rule, const char *src)
{
    size_t n = strlen(src), w = 0;
    if (!(rule->text = malloc(n + 1)))
        return rules_file_fail(r, "out of memory");
    for (size_t i = 0; i < n;) {
        size_t used;
        struct rewrite_piece p = substitution(src + i, &used);
        if (p.kind != RW_TEXT) {
            if (template_piece(r, rule, p) < 0)
                return -1;
            i += used;
            continue;
        }
        struct rewrite_piece *last = rule->npieces ? &rule->pieces[rule->npieces - 1] : NULL;
        if (!last || last->kind != RW_TEXT) {
            if (template_piece(r, rule, (struct rewrite_piece){.kind = RW_TEXT, .off = (uint32_t)w}) < 0)
                return -1;
            last = &rule->pieces[rule->npieces - 1];
        }
        rule->text[w++] = src[i];
        last->len++;
        i += used;
    }
    rule->text[w] = '\0';
    return 0;
}

/* A literal character next to a wildcard that makes every result an
 * invalid filter ('+' and '#' must be whole levels, '#' the last). */
static bool wildcard_misplaced(const struct rewrite_rule *rule, uint32_t k, uint32_t i)
{
    const struct rewrite_piece *p = &rule->pieces[k];
    const char *t = rule->text + p->off;
    if (i > 0 && t[i - 1] != '/')
        return true;
    if (i + 1 < p->len && t[i + 1] != '/')
        return true;
    return t[i] == '#' && i + 1 < p->len; /* a substitution after it might be empty */
}

/* Templates that can never give a valid topic are refused at load. */
static int template_check(struct rules_file *r, const struct rewrite_rule *rule, const char *src)
{
    if (!rule->npieces)
        return rules_file_fail(r, "empty template (a topic is never empty)");
    for (uint32_t k = 0; k < rule->npieces; k++) {
        const struct rewrite_piece *p = &rule->pieces[k];
        if (p->kind != RW_TEXT)
            continue;
        const char *t = rule->text + p->off;
        if (!mqtt_utf8_valid((const uint8_t *)t, p->len))
            return rules_file_fail(r, "template \"%s\": not valid UTF-8", src);
        for (uint32_t i = 0; i < p->len; i++) {
            if (t[i] != '+' && t[i] != '#')
                continue;
            if (rule->dir & REWRITE_PUBLISH)
                return rules_file_fail(r, "template \"%s\": a wildcard ('%c') is never part of a topic name, so "
                                          "no PUBLISH could be rewritten by this %s rule", src, t[i],
                                       rule->dir == REWRITE_BOTH ? "both" : "publish");
            if (wildcard_misplaced(rule, k, i))
                return rules_file_fail(r, "template \"%s\": '%c' is not a whole topic level%s, so every result "
                                          "would be an invalid filter", src, t[i], t[i] == '#' ? " and the last" : "");
        }
    }
    return 0;
}

/* ---- lines -------------------------------------------------------------- */

static void rule_free(struct rewrite_rule *rule, bool compiled)
{
    if (compiled)
        regfree(&rule->re);
    free(rule->filter);
    free(rule->text);
    free(rule->pieces);
}

static int rule_parse(struct rules_file *r, char *field[FIELDS], struct rewrite_rule *rule)
{
    if (direction(r, field[0], &rule->dir) < 0)
        return -1;
    size_t flen = strlen(field[1]);
    if (!mqtt_topic_filter_valid((const uint8_t *)field[1], flen))
        return rules_file_fail(r, "\"%s\" is not a valid topic filter ('+' and '#' must be whole levels, '#' the "
                                  "last)", field[1]);
    if (!(rule->filter = strdup(field[1])))
        return rules_file_fail(r, "out of memory");
    rule->filter_len = (uint32_t)flen;
    if (regex(r, field[2], &rule->re) < 0) {
        rule_free(rule, false);
        return -1;
    }
    if (strlen(field[3]) > REWRITE_MAX_TOPIC) {
        rule_free(rule, true);
        return rules_file_fail(r, "template longer than a topic may be (%u bytes)", REWRITE_MAX_TOPIC);
    }
    if (template_parse(r, rule, field[3]) < 0 || template_check(r, rule, field[3]) < 0) {
        rule_free(rule, true);
        return -1;
    }
    rule->line = r->line;
    return 0;
}

static int rules_add(struct rewrite_rules *rs, const struct rewrite_rule *rule)
{
    if (rs->n == rs->cap) {
        uint32_t cap = rs->cap ? rs->cap * 2 : 8;
        struct rewrite_rule *v = realloc(rs->v, cap * sizeof(*v));
        if (!v)
            return -1;
        rs->v = v;
        rs->cap = cap;
    }
    rs->v[rs->n++] = *rule;
    return 0;
}

static int line_parse(struct rules_file *r, struct rewrite_rules *rs, char *line)
{
    char *field[FIELDS];
    int n = split_fields(r, line, field);
    if (n < 0)
        return -1;
    if (n < FIELDS)
        return rules_file_fail(r, "expected 4 fields: direction, topic filter, regular expression, template "
                                  "(found %d)", n);
    struct rewrite_rule rule = {0};
    if (rule_parse(r, field, &rule) < 0)
        return -1;
    if (rules_add(rs, &rule) < 0) {
        rule_free(&rule, true);
        return rules_file_fail(r, "out of memory");
    }
    return 0;
}

static int rules_read(struct rules_file *r, struct rewrite_rules **out)
{
    struct rewrite_rules *rs = calloc(1, sizeof(*rs));
    if (!rs || !(rs->path = strdup(r->path))) {
        free(rs);
        rules_file_close(r);
        return rules_failf(r->err, r->errlen, "out of memory");
    }
    int rc;
    char *line;
    while ((rc = rules_file_next(r, &line)) > 0) {
        if (!*line || *line == '#')
            continue;
        if ((rc = line_parse(r, rs, line)) < 0)
            break;
    }
    rules_file_close(r);
    if (rc < 0) {
        rewrite_rules_free(rs);
        return -1;
    }
    *out = rs;
    return 0;
}

int rewrite_rules_load(const char *path, struct rewrite_rules **out, char *err, size_t errlen)
{
    struct rules_file r;
    if (rules_file_open(&r, path, err, errlen) < 0)
        return -1;
    return rules_read(&r, out);
}

int rewrite_rules_parse(const char *name, const char *text, size_t len, struct rewrite_rules **out, char *err,
                        size_t errlen)
{
    struct rules_file r;
    if (rules_file_open_mem(&r, name, text, len, err, errlen) < 0)
        return -1;
    return rules_read(&r, out);
}

void rewrite_rules_free(struct rewrite_rules *rs)
{
    if (!rs)
        return;
    for (uint32_t i = 0; i < rs->n; i++)
        rule_free(&rs->v[i], true);
    free(rs->v);
    free(rs->path);
    free(rs);
}
