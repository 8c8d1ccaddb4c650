/* The authorization query parameter (http_query_param, http_query_name_is):
 * found in every spelling a target's decoder reads as it (percent-encoded,
 * any case, ';'-separated, dotless i...), its value decoded, and the forms
 * that cannot be one judged credential told apart: more than one, a value
 * ending at ';', a broken value.  docs/HTTP.md, step 6. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "front/http_util.h"

static const char *K = "authorization";

static bool is(const char *name)
{
    return http_query_name_is(name, strlen(name), K);
}

/* What q holds for the parameter; its decoded value in out. */
static enum http_qparam param(const char *q, char *out)
{
    size_t n = 0;
    enum http_qparam r = http_query_param(q, strlen(q), K, out, &n);
    out[r == HTTP_QPARAM_ONE ? n : 0] = '\0';
    return r;
}

static void test_names(void)
{
    CHECK(is("authorization"));
    CHECK(is("Authorization") && is("AUTHORIZATION") && is("aUtHoRiZaTiOn"));
    CHECK(is("%61uthorization") && is("%41UTHORIZATION") && is("authori%7Aation") && is("authori%7aation"));
    CHECK(is("%61%75%74%68%6f%72%69%7a%61%74%69%6f%6e"));
    CHECK(is("author\xC4\xB1zation") && is("author%C4%B1zation") && is("AUTHOR%C4%B0ZATION")); /* ı, İ */
    CHECK(is("+authorization") && is("%20%20authorization"));                              /* PHP */
    CHECK(is("authorization%00") && is("authorization%00x"));                              /* C */
    CHECK(!is("authorization+") && !is("authorization%20") && !is("authorization_"));
    CHECK(!is("xauthorization") && !is("authorizationx") && !is("authorizatio") && !is(""));
    CHECK(!is("authorizatio%6") && !is("%authorization") && !is("authoriz%C4%B1tion"));
    CHECK(!is("author%C4zation") && !is("author%C4%B2zation"));
}

static void test_found(void)
{
    char out[64];
    CHECK_EQ_INT(param("", out), HTTP_QPARAM_NONE);
    CHECK_EQ_INT(param("a=1&b=2;c", out), HTTP_QPARAM_NONE);
    CHECK_EQ_INT(param("xauthorization=a&authorizationx=b&authorization%3D=c", out), HTTP_QPARAM_NONE);
    CHECK(param("authorization=tok", out) == HTTP_QPARAM_ONE && !strcmp(out, "tok"));
    CHECK(param("x=1&%61uthorization=alice", out) == HTTP_QPARAM_ONE && !strcmp(out, "alice"));
    CHECK(param("AUTHORIZATION=Bearer+a%2Fb", out) == HTTP_QPARAM_ONE && !strcmp(out, "Bearer a/b"));
    CHECK(param("a=1;authorization=alice", out) == HTTP_QPARAM_ONE && !strcmp(out, "alice"));
    CHECK(param("authorization=a=b&x", out) == HTTP_QPARAM_ONE && !strcmp(out, "a=b"));
    CHECK(param("authorization", out) == HTTP_QPARAM_ONE && !strcmp(out, "")); /* Go: "" */
    CHECK(param("authorization=&x=1", out) == HTTP_QPARAM_ONE && !strcmp(out, ""));
}

static void test_refused(void)
{
    char out[64];
    CHECK_EQ_INT(param("authorization=a&authorization=a", out), HTTP_QPARAM_MANY);
    CHECK_EQ_INT(param("authorization=a&%61uthorization=b", out), HTTP_QPARAM_MANY);
    CHECK_EQ_INT(param("Authorization=a;authorization=a", out), HTTP_QPARAM_MANY);
    CHECK_EQ_INT(param("authorization&authorization=x", out), HTTP_QPARAM_MANY);
    CHECK_EQ_INT(param("authorization=a;x=1", out), HTTP_QPARAM_AMBIGUOUS);
    CHECK_EQ_INT(param("authorization=a;", out), HTTP_QPARAM_AMBIGUOUS);
    CHECK_EQ_INT(param("authorization=%zz", out), HTTP_QPARAM_BROKEN);
    CHECK_EQ_INT(param("authorization=a%00b", out), HTTP_QPARAM_BROKEN);
    CHECK_EQ_INT(param("authorization=a%2", out), HTTP_QPARAM_BROKEN);
}

/* The credentials of every HTTP-based listener (http_credentials): Basic
 * split into username and password, a Bearer token (where asked for) or
 * the header whole, else the parameter; two that disagree refused. */
static int cred(const char *auth, const char *query, bool bearer, char *user, char *pass)
{
    char mem[512];
    struct http_cred c;
    const char *why = NULL;
    int st = http_credentials(auth, auth ? strlen(auth) : 0, query, query ? strlen(query) : 0, bearer, mem, &c, &why);
    snprintf(user, 64, "%s%.*s", c.has_user ? "" : "-", (int)c.user_len, c.user ? c.user : "");
    snprintf(pass, 64, "%s%.*s", c.has_pass ? "" : "-", (int)c.pass_len, c.pass ? c.pass : "");
    CHECK(!st || why);
    return st;
}

static void test_credentials(void)
{
    char u[64], p[64];
    CHECK_EQ_INT(cred("Basic dG9rOnMzY3JldA==", NULL, true, u, p), 0); /* tok:s3cret */
    CHECK_EQ_STR(u, "tok");
    CHECK_EQ_STR(p, "s3cret");
    CHECK_EQ_INT(cred("basic   dG9rOnMzY3JldA==", "a=1", false, u, p), 0);
    CHECK_EQ_STR(u, "tok");
    CHECK_EQ_STR(p, "s3cret");
    CHECK_EQ_INT(cred("Basic bm9jb2xvbg==", NULL, true, u, p), 0); /* "nocolon": the header whole */
    CHECK_EQ_STR(u, "-");
    CHECK_EQ_STR(p, "Basic bm9jb2xvbg==");
    CHECK_EQ_INT(cred("Bearer T1", NULL, true, u, p), 0);
    CHECK_EQ_STR(u, "-");
    CHECK_EQ_STR(p, "T1");
    CHECK_EQ_INT(cred("Bearer T1", NULL, false, u, p), 0); /* the HTTP listener's: the whole value */
    CHECK_EQ_STR(p, "Bearer T1");
    CHECK_EQ_INT(cred(NULL, "x=1&authorization=a%20b", true, u, p), 0);
    CHECK_EQ_STR(u, "-");
    CHECK_EQ_STR(p, "a b");
    CHECK_EQ_INT(cred(NULL, NULL, true, u, p), 0);
    CHECK_EQ_STR(u, "-");
    CHECK_EQ_STR(p, "-");
    CHECK_EQ_INT(cred("Bearer T1", "authorization=T1", true, u, p), 0); /* agreeing */
    CHECK_EQ_STR(p, "T1");
    CHECK_EQ_INT(cred("Bearer T1", "authorization=T2", true, u, p), 400);
    CHECK_EQ_INT(cred("T1", "authorization=T1", false, u, p), 0);
    CHECK_EQ_INT(cred(NULL, "authorization=a&authorization=a", true, u, p), 400);
    CHECK_EQ_INT(cred("Basic dG9rOnMzY3JldA==", "authorization=s3cret", true, u, p), 400);
}

int main(void)
{
    test_names();
    test_found();
    test_refused();
    test_credentials();
    return check_done("test_http_query");
}
