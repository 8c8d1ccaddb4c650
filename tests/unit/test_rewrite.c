/* The rewrite handler's parts: the rules file's grammar and every error it
 * names (file:line), quoting, first-match-wins, template expansion with
 * groups, %u/%c/%cn and the identities that must not be substituted, the
 * load-time check of templates that can never give a valid topic, and a
 * file read from disk; the cost of a match and expansion, printed. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "handlers/rewrite.h"

static struct rewrite_rules *parse(const char *text, char *err, size_t errlen)
{
    struct rewrite_rules *rs = NULL;
    err[0] = 0;
    if (rewrite_rules_parse("rules", text, strlen(text), &rs, err, errlen) < 0)
        return NULL;
    return rs;
}

/* The file's error for text, or "" when it loads. */
static const char *error_of(const char *text)
{
    static char err[600];
    struct rewrite_rules *rs = parse(text, err, sizeof(err));
    rewrite_rules_free(rs);
    return rs ? "" : err;
}

static bool error_has(const char *text, const char *want)
{
    const char *e = error_of(text);
    bool ok = strstr(e, want) != NULL;
    if (!ok)
        fprintf(stderr, "  error for %s: \"%s\", want \"%s\"\n", text, e, want);
    return ok;
}

static mgate_bytes B(const char *s) { return (mgate_bytes){(const uint8_t *)s, s ? (uint32_t)strlen(s) : 0}; }

/* The rewrite of topic t by rs for dir as a string: "-" no rule matched,
 * "!bad" / "!cert" refused, else "LINE:result". */
static const char *apply(const struct rewrite_rules *rs, unsigned dir, const char *t, const struct rewrite_who *who)
{
    static char out[1024];
    regmatch_t m[REWRITE_MAX_GROUPS + 1];
    const struct rewrite_rule *r = rewrite_match(rs, dir, t, strlen(t), m);
    if (!r)
        return "-";
    long n = rewrite_expand(r, (const uint8_t *)t, m, who, NULL, 0);
    if (n == REWRITE_BAD_IDENTITY)
        return "!bad";
    if (n == REWRITE_NO_CERT)
        return "!cert";
    int k = snprintf(out, sizeof(out), "%u:", r->line);
    if (n < 0 || (size_t)n + (size_t)k >= sizeof(out))
        return "!?";
    long again = rewrite_expand(r, (const uint8_t *)t, m, who, (uint8_t *)out + k, (size_t)n);
    if (again != n)
        return "!again";
    out[k + n] = 0;
    return out;
}

static const struct rewrite_who alice = {.user = {(const uint8_t *)"alice", 5},
                                         .client = {(const uint8_t *)"dev-1", 5},
                                         .cn = {(const uint8_t *)"sensor.example", 14},
                                         .has_cn = true};

static void test_grammar(void)
{
    CHECK_EQ_STR(error_of(""), "");
    CHECK_EQ_STR(error_of("# only a comment\n\n   \t\n   # indented comment\n"), "");
    CHECK_EQ_STR(error_of("publish a/# ^a/(.*)$ b/$1\r\n"), "");
    CHECK_EQ_STR(error_of("  subscribe\ta/+\t\t^a/(.*)$   b/$1   \n"), "");
    CHECK(error_has("\n\npublosh a/# ^a/(.*)$ b/$1\n", "rules:3: unknown direction \"publosh\" (publish, subscribe or both)"));
    CHECK(error_has("publish a/# ^a/(.*)$\n", "rules:1: expected 4 fields"));
    CHECK(error_has("publish a/# ^a/(.*)$\n", "(found 3)"));
    CHECK(error_has("publish a/# ^a/(.*)$ b/$1 extra\n", "rules:1: more than 4 fields"));
    CHECK(error_has("publish a/#/b ^a$ b\n", "\"a/#/b\" is not a valid topic filter"));
    CHECK(error_has("publish a+ ^a$ b\n", "\"a+\" is not a valid topic filter"));
    CHECK(error_has("publish a/# ^a/(.*$ b/$1\n", "rules:1: regular expression \"^a/(.*$\": "));
    CHECK(error_has("publish a/# ^a/(.*$ b/$1\n", "Unmatched ( or")); /* regerror's own text */
    CHECK(error_has("publish a/# \"\" b\n", "empty regular expression"));
    CHECK(error_has("publish a/# ^(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)$ b\n", "has 10 groups; at most 9"));
    /* what would make glibc's regcomp exhaust memory is refused first */
    CHECK(error_has("publish a/# ^a/++++++++++++++++++++++++++++++++++++++++++++++++(.*)$ b\n",
                    "two repetition operators in a row"));
    CHECK(error_has("publish a/# ^a/((b{100}){100}){100}$ b\n", "more than 20000 times"));
    CHECK(error_has("publish a/# ^a/b{99999999999999999999999}$ b\n", "more than 20000 times"));
    CHECK(error_has("publish a/# ^((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))$ b\n",
                    "nested deeper than 31"));
    CHECK_EQ_STR(error_of("publish a/# ^a/(b{100}){100}$ b\n"), "");
    CHECK_EQ_STR(error_of("publish a/# \"^a/[]+*{}(]{2}\\+?[[:alpha:]]*\\{([^/]+)?$\" b/$1\n"), "");
    CHECK_EQ_STR(error_of("publish a/# ^(a)(b)(c)(d)(e)(f)(g)(h)(i)$ b/$9\n"), "");
    CHECK(error_has("publish a/# ^a/(.*)$ b/$2\n", "template: $2, but the regular expression has 1 group"));
    CHECK(error_has("publish a/# ^a/.*$ b/$1\n", "template: $1, but the regular expression has 0 groups"));
    CHECK(error_has("publish a/# ^a/(.*)$ b/$0\n", "$0 is not supported"));
    CHECK(error_has("publish a/# ^a$ \"\"\n", "empty template"));
    /* wildcards in a template: never for publish; for subscribe only as whole levels */
    CHECK(error_has("publish a/# ^a$ b/+\n", "a wildcard ('+') is never part of a topic name"));
    CHECK(error_has("both a/# ^a$ b/#\n", "this both rule"));
    CHECK_EQ_STR(error_of("subscribe a/# ^a/(.*)$ b/+/$1\n"), "");
    CHECK_EQ_STR(error_of("subscribe a/# ^a/(.*)$ $1/#\n"), "");
    CHECK(error_has("subscribe a/# ^a$ b+/c\n", "'+' is not a whole topic level"));
    CHECK(error_has("subscribe a/# ^a$ b/#/c\n", "'#' is not a whole topic level and the last"));
    CHECK(error_has("subscribe a/# ^a$ b/#c\n", "'#' is not a whole topic level"));
    CHECK(error_has("subscribe a/# ^a$ \"b/\xff\"\n", "not valid UTF-8"));
    /* the error names the line of the bad rule, after good ones and comments */
    CHECK(error_has("# c\npublish a/# ^a$ b\n\nsubscribe a/# ^a$ b\nboth x ^x$ y/$3\n", "rules:5: template: $3"));
}

static void test_quoting(void)
{
    char err[600];
    struct rewrite_rules *rs = parse("both \"a b/#\" \"^a b/(.*)$\" \"c \"\"d\"\"/$1\"\n", err, sizeof(err));
    CHECK(rs != NULL);
    if (rs) {
        CHECK_EQ_STR(rs->v[0].filter, "a b/#");
        CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "a b/x", &alice), "1:c \"d\"/x");
        rewrite_rules_free(rs);
    }
    /* a regex's backslashes are its own: no escape but the doubled quote */
    rs = parse("publish a/# \"^a/([0-9]+)\\.([a-z]+)$\" b/$2/$1\n", err, sizeof(err));
    CHECK(rs != NULL);
    if (rs) {
        CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "a/12.xy", &alice), "1:b/xy/12");
        CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "a/12x", &alice), "-");
        rewrite_rules_free(rs);
    }
    CHECK(error_has("publish \"a/# ^a$ b\n", "field 2: the double quote is not closed"));
    CHECK(error_has("publish a/# ^a\"b$ b\n", "field 3: a double quote inside an unquoted field"));
    CHECK(error_has("publish \"a/#\"x ^a$ b\n", "field 2: a blank must follow the closing quote"));
}

static void test_first_match(void)
{
    char err[600];
    const char *text = "# the Azure-like example of EMQX's docs\n"
                       "publish x/# ^x/y/(.+)$ z/y/$1\n"
                       "publish x/# ^x/(.+)$ x/all/$1\n"
                       "subscribe y/+/z/# ^y/(.+)/z/(.+)$ y/z/$2\n"
                       "both sensors/# ^sensors/([^/]+)/(.*)$ s/$1/%u/$2\n"
                       "publish id/# ^id/(.*)$ %c/$1\n"
                       "subscribe cert/# ^cert/(.*)$ by-cn/%cn/$1\n"
                       "publish $lit/# ^\\$lit/(.*)$ $$x/%%/$1$\n";
    struct rewrite_rules *rs = parse(text, err, sizeof(err));
    CHECK(rs != NULL);
    if (!rs) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK_EQ_INT(rs->n, 7);
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "x/y/1", &alice), "2:z/y/1");  /* the first that matches */
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "x/q/1", &alice), "3:x/all/q/1"); /* regex of line 2 fails: next */
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "x", &alice), "-");                /* filter covers, no regex does */
    CHECK_EQ_STR(apply(rs, REWRITE_SUBSCRIBE, "x/y/1", &alice), "-");          /* publish rules only */
    CHECK_EQ_STR(apply(rs, REWRITE_SUBSCRIBE, "y/a/z/b", &alice), "4:y/z/b");
    CHECK_EQ_STR(apply(rs, REWRITE_SUBSCRIBE, "y/+/z/#", &alice), "4:y/z/#");  /* a filter the rule covers */
    CHECK_EQ_STR(apply(rs, REWRITE_SUBSCRIBE, "y/#", &alice), "-");            /* not covered by y/+/z/# */
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "y/a/z/b", &alice), "-");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "sensors/t1/temp", &alice), "5:s/t1/alice/temp");
    CHECK_EQ_STR(apply(rs, REWRITE_SUBSCRIBE, "sensors/t1/#", &alice), "5:s/t1/alice/#");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "id/a", &alice), "6:dev-1/a");
    CHECK_EQ_STR(apply(rs, REWRITE_SUBSCRIBE, "cert/a", &alice), "7:by-cn/sensor.example/a");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "$lit/q", &alice), "8:$x/%/q$");   /* $$, %%, a lone $ */
    /* a leading wildcard in a rule's filter does not reach $-topics */
    rewrite_rules_free(rs);
    rs = parse("publish # ^(.*)$ all/$1\n", err, sizeof(err));
    CHECK(rs != NULL);
    if (rs) {
        CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "$SYS/x", &alice), "-");
        CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "a/b", &alice), "1:all/a/b");
        rewrite_rules_free(rs);
    }
}

static void test_identities(void)
{
    char err[600];
    struct rewrite_rules *rs = parse("publish u/# ^u/(.*)$ u/%u/$1\n"
                                     "publish c/# ^c/(.*)$ c/%c/$1\n"
                                     "publish n/# ^n/(.*)$ n/%cn/$1\n"
                                     "publish s/# ^s/(.*)$ %u/$1\n"
                                     "publish g/# ^g/(.*)?$ g/$1x\n",
                                     err, sizeof(err));
    CHECK(rs != NULL);
    if (!rs)
        return;
    struct rewrite_who who = alice;
    const char *bad[] = {"", "+", "#", "a/b", "x+y", "a#", "/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        who.user = B(bad[i]);
        CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "u/t", &who), "!bad");
        who.user = alice.user;
        who.client = B(bad[i]);
        CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "c/t", &who), "!bad");
        who.client = alice.client;
        who.cn = B(bad[i]);
        CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "n/t", &who), "!bad");
        who.cn = alice.cn;
    }
    who.user = (mgate_bytes){NULL, 0}; /* no username at all */
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "u/t", &who), "!bad");
    /* '$' first only matters where the identity starts the topic */
    who.user = B("$SYS");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "u/t", &who), "1:u/$SYS/t");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "s/t", &who), "!bad");
    who = alice;
    who.has_cn = false; /* no certificate: the rule does not fall through, it refuses */
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "n/t", &who), "!cert");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "u/t", &who), "1:u/alice/t"); /* no %cn: no certificate needed */
    /* a group that did not take part is empty */
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "g/", &alice), "5:g/x");
    CHECK(rs->v[2].needs_cn && !rs->v[0].needs_cn);
    rewrite_rules_free(rs);
    CHECK(rewrite_identity_ok(B("a"), true));
    CHECK(!rewrite_identity_ok(B("$a"), true));
    CHECK(rewrite_identity_ok(B("$a"), false));
}

/* docs/HANDLERS.md's example, and its table. */
static void test_docs_example(void)
{
    char err[600];
    struct rewrite_rules *rs = parse("# /etc/mgate/rewrite: direction  topic filter  regular expression   template\n"
                                     "publish     x/#              ^x/y/(.+)$                 z/y/$1\n"
                                     "publish     x/#              ^x/(.+)$                   x/all/$1\n"
                                     "subscribe   y/+/z/#          ^y/(.+)/z/(.+)$            y/z/$2\n"
                                     "both        sensors/#        ^sensors/([^/]+)/(.*)$     tenants/%u/$1/$2\n"
                                     "publish     cert/#           ^cert/(.*)$                by-cn/%cn/$1\n"
                                     "both        \"my topic/#\"     \"^my topic/(.*)$\"          mine/$1\n",
                                     err, sizeof(err));
    CHECK(rs != NULL);
    if (!rs)
        return;
    struct rewrite_who who = alice;
    who.cn = B("dev7");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "x/y/temp", &who), "2:z/y/temp");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "x/q/temp", &who), "3:x/all/q/temp");
    CHECK_EQ_STR(apply(rs, REWRITE_SUBSCRIBE, "y/a/z/b", &who), "4:y/z/b");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "sensors/t1/temp", &who), "5:tenants/alice/t1/temp");
    CHECK_EQ_STR(apply(rs, REWRITE_SUBSCRIBE, "sensors/t1/temp", &who), "5:tenants/alice/t1/temp");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "cert/x", &who), "6:by-cn/dev7/x");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "my topic/x", &who), "7:mine/x");
    CHECK_EQ_STR(apply(rs, REWRITE_PUBLISH, "a/b", &who), "-");
    rewrite_rules_free(rs);
}

static void test_file(void)
{
    char dir[] = "/tmp/test_rewrite.XXXXXX", path[64], err[600];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/rules", dir);
    check_write_file(path, "# rules\npublish a/# ^a/(.*)$ b/$1\nsubscribe a/# ^a/(.*)$ b/$1\nboth c ^c$ d\n");
    struct rewrite_rules *rs = NULL;
    CHECK_EQ_INT(rewrite_rules_load(path, &rs, err, sizeof(err)), 0);
    if (rs) {
        CHECK_EQ_INT(rs->n, 3);
        CHECK_EQ_STR(rs->path, path);
        CHECK_EQ_INT(rs->v[2].line, 4);
        CHECK_EQ_INT(rs->v[2].dir, REWRITE_BOTH);
        rewrite_rules_free(rs);
    }
    check_write_file(path, "publish a/# ^a/(.*)$ b/$1\nsubscribe a/# ^a/(.*$ b/$1\n");
    CHECK_EQ_INT(rewrite_rules_load(path, &rs, err, sizeof(err)), -1);
    char want[100];
    snprintf(want, sizeof(want), "%s:2: regular expression", path);
    CHECK(strstr(err, want) != NULL);
    unlink(path);
    CHECK_EQ_INT(rewrite_rules_load(path, &rs, err, sizeof(err)), -1);
    CHECK(strstr(err, "cannot open") != NULL);
    rmdir(dir);
}

static void print_costs(void)
{
    char err[600];
    struct rewrite_rules *rs = parse("publish x/# ^x/y/(.+)$ z/y/$1\n"
                                     "publish dev/+/data/# ^dev/([^/]+)/data/(.*)$ tenants/%u/dev/$1/$2\n",
                                     err, sizeof(err));
    if (!rs)
        return;
    const char *t = "dev/d1234/data/temperature/room7";
    uint8_t out[256];
    struct timespec a, b;
    enum { N = 200000 };
    long total = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < N; i++) {
        regmatch_t m[REWRITE_MAX_GROUPS + 1];
        const struct rewrite_rule *r = rewrite_match(rs, REWRITE_PUBLISH, t, strlen(t), m);
        total += r ? rewrite_expand(r, (const uint8_t *)t, m, &alice, out, sizeof(out)) : 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / N;
    printf("second-rule match and expansion: %.0f ns (result %ld bytes)\n", ns, total / N);
    CHECK_EQ_INT(total / N, (long)strlen("tenants/alice/dev/d1234/temperature/room7"));
    rewrite_rules_free(rs);
}

int main(void)
{
    test_grammar();
    test_quoting();
    test_first_match();
    test_identities();
    test_docs_example();
    test_file();
    print_costs();
    return check_done("test_rewrite");
}
