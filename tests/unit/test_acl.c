/* The acl handler's parts: topic matching and filter coverage, %u/%c
 * substitution and the injection cases, mosquitto's hashes (lines written by
 * the real mosquitto_passwd 2.0.11), the file grammar and its errors; and the
 * cost of a check and of a password verification, printed. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "handlers/acl.h"

static bool covers(const char *rule, const char *f)
{
    return acl_covers(rule, strlen(rule), (const uint8_t *)f, strlen(f), NULL);
}

static bool covers_as(const char *rule, const char *f, const char *user, const char *client)
{
    struct acl_who who = {(const uint8_t *)user, user ? (uint32_t)strlen(user) : 0, (const uint8_t *)client,
                          client ? (uint32_t)strlen(client) : 0};
    return acl_covers(rule, strlen(rule), (const uint8_t *)f, strlen(f), &who);
}

static void test_topic_match(void)
{
    /* MQTT 5 section 4.7.1, the spec's own examples */
    CHECK(covers("sport/tennis/player1/#", "sport/tennis/player1"));
    CHECK(covers("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
    CHECK(covers("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon"));
    CHECK(covers("sport/#", "sport"));
    CHECK(covers("#", "sport/tennis"));
    CHECK(covers("sport/tennis/+", "sport/tennis/player1"));
    CHECK(!covers("sport/tennis/+", "sport/tennis/player1/ranking"));
    CHECK(!covers("sport/+", "sport"));
    CHECK(covers("sport/+", "sport/"));
    CHECK(covers("+/+", "/finance"));
    CHECK(covers("/+", "/finance"));
    CHECK(!covers("+", "/finance"));
    CHECK(covers("+", "finance"));
    CHECK(!covers("sport/tennis", "sport/tennis/x"));
    CHECK(!covers("sport/tennis/x", "sport/tennis"));
    CHECK(covers("a//b", "a//b"));
    CHECK(!covers("a/b", "a//b"));
    CHECK(covers("a/+/b", "a//b"));
    CHECK(!covers("Sport", "sport")); /* case matters */
    /* $-topics: a leading wildcard does not reach them (4.7.2) */
    CHECK(!covers("#", "$SYS/broker/uptime"));
    CHECK(!covers("+/monitor/Clients", "$SYS/monitor/Clients"));
    CHECK(covers("$SYS/#", "$SYS/monitor/Clients"));
    CHECK(covers("$SYS/monitor/+", "$SYS/monitor/Clients"));
    CHECK(covers("$SYS", "$SYS"));
    CHECK(covers("a/#", "a/$x")); /* '$' matters only in the first level */
}

static void test_filter_cover(void)
{
    CHECK(covers("#", "#"));
    CHECK(covers("#", "+/+"));
    CHECK(covers("dt/demo/#", "dt/demo/#"));
    CHECK(covers("dt/demo/#", "dt/demo/+/dev1/#"));
    CHECK(covers("dt/demo/#", "dt/demo"));
    CHECK(!covers("dt/demo/#", "dt/#"));
    CHECK(!covers("dt/demo/#", "#"));
    CHECK(!covers("dt/demo/#", "+/demo/x"));
    CHECK(covers("dt/+/x", "dt/+/x"));
    CHECK(covers("dt/+/x", "dt/a/x"));
    CHECK(!covers("dt/a/x", "dt/+/x"));       /* a fixed level never covers '+' */
    CHECK(!covers("dt/+", "dt/#"));           /* '#' reaches further than '+' */
    CHECK(!covers("dt/+/#", "dt/#"));         /* "dt/#" matches "dt", "dt/+/#" does not */
    CHECK(covers("dt/+/#", "dt/x/#"));
    CHECK(!covers("a", "a/#"));
    CHECK(!covers("#", "$SYS/#"));            /* a leading wildcard rule never covers a $ filter */
    CHECK(covers("$SYS/#", "$SYS/+/x"));
    CHECK(!covers("$SYS/#", "#"));
    CHECK(!covers("+/#", "$share/g/t"));      /* acl_allowed strips $share first; covers itself does not */
}

static void test_substitution(void)
{
    /* %u and %c as whole levels of a pattern */
    CHECK(covers_as("dt/demo/+/%u/#", "dt/demo/1/dev00001/senml", "dev00001", "c1"));
    CHECK(!covers_as("dt/demo/+/%u/#", "dt/demo/1/dev00002/senml", "dev00001", "c1"));
    CHECK(covers_as("c/%c/in", "c/abc/in", "u", "abc"));
    CHECK(!covers_as("c/%c/in", "c/u/in", "u", "abc"));
    CHECK(covers_as("%u/%c", "u1/c1", "u1", "c1"));
    /* without substitution (a `topic` line) %u is the literal text */
    CHECK(covers("dt/%u", "dt/%u"));
    CHECK(!covers("dt/%u", "dt/alice"));
    CHECK(!covers_as("dt/%u", "dt/%u", "alice", "c"));

    /* injection: an identity holding '+', '#' or '/' never widens a pattern */
    CHECK(!covers_as("dt/%u/#", "dt/+/#", "+", "c"));       /* "+" would be every user */
    CHECK(!covers_as("dt/%u/#", "dt/dev1/x", "+", "c"));
    CHECK(!covers_as("dt/%u/#", "dt/#", "#", "c"));
    CHECK(!covers_as("dt/%u/#", "dt/a/b/x", "a/b", "c"));   /* "a/b" would span two levels */
    CHECK(!covers_as("dt/%u/#", "dt/a", "a/b", "c"));
    CHECK(!covers_as("dt/%u/#", "dt/a+/x", "a+", "c"));
    CHECK(!covers_as("c/%c/#", "c/+/x", "u", "+"));
    CHECK(!covers_as("c/%c/#", "c/x/#", "u", "x/#"));
    CHECK(!covers_as("c/%c/#", "c/#", "u", "#"));
    /* an absent or empty identity matches nothing */
    CHECK(!covers_as("dt/%u/#", "dt//x", "", "c"));
    CHECK(!covers_as("dt/%u/#", "dt//x", NULL, "c"));
    CHECK(!covers_as("c/%c", "c/", "u", ""));
    /* a first level that becomes "$..." would reach the broker's $-topics */
    CHECK(!covers_as("%u/#", "$SYS/broker/uptime", "$SYS", "c"));
    CHECK(!covers_as("%c/#", "$SYS/x", "u", "$SYS"));
    CHECK(covers_as("x/%u", "x/$y", "$y", "c")); /* deeper, '$' is an ordinary character */
}

/* ---- files ---- */

static char dir[] = "/tmp/mgate-acl-test-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[4][256];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    check_write_file(p, text);
    return p;
}

/* Lines mosquitto_passwd 2.0.11 wrote: -H sha512-pbkdf2 (default) and -H sha512. */
static const char pw_lines[] =
    "alice:$7$101$4Hn/pRkavuPbxm+j$ovC5rgWlROQdokJJmtrKAKIT3rPmqKz9MM79pI+QFIfPof/5GQhPptRoEDSPjJ2RmLyRpTL4obcbV27dh85cow==\n"
    "bob:$6$ejkIw4A9dqeREInQ$WsHLF8nwudoB2Ic77XMbdGL7o06UCp2p0AvRAKVss9QZNSt6WcMNKGixTrwvVfQ3JIJR0C65cu1LjXkOm45fXg==\n"
    "# a comment, then a blank line\n"
    "\n"
    "carol:$7$101$3sYsJ+vAEJbHlTfc$YdBmTuKCRBbxf4AoV7qVeOMSW+bKLy8yq1y/3pjRebpdW2pGXOvPAhIyPKK5JrGBHr9h8Xp4az4W0iywvXSipA==\r\n"
    "dave:$7$101$rTm0ERqnG/tD0xt3$5V7Lc0vvbiuPUKYdnTAa+8fQ5MZCF81NQj1ogZLK/Z1yCgEHNJJihNs9pFS8zkl3FKiXlJWcSXy+rBY6CKa2QQ==\n";

static bool verify(const struct acl_db *db, const char *user, const char *pw)
{
    const struct acl_user *u = acl_db_user(db, (const uint8_t *)user, strlen(user));
    return u && u->pw.kind && acl_password_verify(&u->pw, (const uint8_t *)pw, strlen(pw));
}

static void test_passwords(void)
{
    struct acl_db *db = NULL;
    char err[512] = "";
    CHECK_EQ_INT(acl_db_load(write_file("pw", pw_lines), NULL, &db, err, sizeof(err)), 0);
    if (!db) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK(verify(db, "alice", "secret"));
    CHECK(!verify(db, "alice", "Secret"));
    CHECK(!verify(db, "alice", "secret "));
    CHECK(!verify(db, "alice", ""));
    CHECK(verify(db, "bob", "hunter2"));
    CHECK(!verify(db, "bob", "hunter"));
    CHECK(verify(db, "carol", "p\xc3\xa4sswörd:with colon"));
    CHECK(!verify(db, "carol", "pässwörd"));
    CHECK(verify(db, "dave", ""));
    CHECK(!verify(db, "dave", "x"));
    CHECK(!verify(db, "eve", "secret"));
    CHECK_EQ_INT(db->nusers, 4);
    CHECK_EQ_INT(db->max_iterations, 101);
    CHECK_EQ_INT(acl_db_user(db, (const uint8_t *)"bob", 3)->pw.kind, ACL_HASH_SHA512);
    CHECK_EQ_INT(acl_db_user(db, (const uint8_t *)"alice", 5)->pw.kind, ACL_HASH_PBKDF2_SHA512);
    CHECK(acl_db_user(db, (const uint8_t *)"alic", 4) == NULL);
    CHECK(acl_db_user(db, (const uint8_t *)"alicee", 6) == NULL);
    acl_db_free(db);

    /* many users: the index grows and every name is still found */
    const char *hash = strchr(pw_lines, '$');
    int hash_len = (int)(strchr(hash, '\n') - hash); /* alice's */
    size_t cap = 3000 * 160, len = 0;
    char *big = malloc(cap);
    for (int i = 0; i < 3000; i++)
        len += (size_t)snprintf(big + len, cap - len, "dev%05d:%.*s\n", i, hash_len, hash);
    db = NULL;
    CHECK_EQ_INT(acl_db_load(write_file("pw-big", big), NULL, &db, err, sizeof(err)), 0);
    if (db) {
        CHECK_EQ_INT(db->nusers, 3000);
        bool all = true;
        for (int i = 0; i < 3000; i++) {
            char name[16];
            snprintf(name, sizeof(name), "dev%05d", i);
            all = all && acl_db_user(db, (const uint8_t *)name, strlen(name));
        }
        CHECK(all);
        CHECK(verify(db, "dev02999", "secret"));
        acl_db_free(db);
    } else {
        fprintf(stderr, "%s\n", err);
    }
    free(big);
}

/* err must hold every piece of want ("a|b": both "a" and "b"). */
static void expect_error(const char *pw, const char *acl, int want_rc, const char *want)
{
    struct acl_db *db = NULL;
    char err[512] = "";
    int rc = acl_db_load(pw ? write_file("pw-bad", pw) : NULL, acl ? write_file("acl-bad", acl) : NULL, &db, err,
                         sizeof(err));
    CHECK_EQ_INT(rc, want_rc);
    CHECK(db == NULL || rc == 0);
    char copy[256];
    snprintf(copy, sizeof(copy), "%s", want);
    for (char *piece = strtok(copy, "|"); piece; piece = strtok(NULL, "|"))
        if (!strstr(err, piece)) {
            check_failures++;
            fprintf(stderr, "error \"%s\" lacks \"%s\"\n", err, piece);
        }
    if (rc == 0)
        acl_db_free(db);
}

static void test_file_errors(void)
{
    expect_error("alice:secret\n", NULL, -1, "pw-bad:1:|user \"alice\"|plain-text");
    expect_error("\n# ok\nalice\n", NULL, -1, "pw-bad:3:|expected user:hash");
    expect_error(":$6$ejkIw4A9dqeREInQ$x\n", NULL, -1, "pw-bad:1:|expected user:hash");
    expect_error("a:$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.\n",
                 NULL, -1, "pw-bad:1:|crypt(3)");
    expect_error("a:$7$0$4Hn/pRkavuPbxm+j$x\n", NULL, -1, "iteration count");
    expect_error("a:$7$x$4Hn/pRkavuPbxm+j$x\n", NULL, -1, "iteration count");
    expect_error("a:$7$99999999999$4Hn/pRkavuPbxm+j$x\n", NULL, -1, "iteration count");
    expect_error("a:$7$101$!!!!$x\n", NULL, -1, "salt");
    expect_error("a:$7$101$4Hn/pRkavuPbxm+j$c2hvcnQ=\n", NULL, -1, "64 bytes");
    expect_error("a:$5$x$y\n", NULL, -1, "not a mosquitto password hash");
    expect_error(
        "alice:$6$ejkIw4A9dqeREInQ$WsHLF8nwudoB2Ic77XMbdGL7o06UCp2p0AvRAKVss9QZNSt6WcMNKGixTrwvVfQ3JIJR0C65cu1LjXkOm45fXg==\n"
        "alice:$6$ejkIw4A9dqeREInQ$WsHLF8nwudoB2Ic77XMbdGL7o06UCp2p0AvRAKVss9QZNSt6WcMNKGixTrwvVfQ3JIJR0C65cu1LjXkOm45fXg==\n",
        NULL, -1, "pw-bad:2:|listed twice");
    expect_error(NULL, "topic read a\nfoo bar\n", -2, "acl-bad:2:|expected user, topic or pattern");
    expect_error(NULL, "topic read\n", -2, "acl-bad:1:|without a topic");
    expect_error(NULL, "topic\n", -2, "acl-bad:1:|without a topic");
    expect_error(NULL, "user\n", -2, "acl-bad:1:|user without a name");
    expect_error(NULL, "topic read a/#/b\n", -2, "acl-bad:1:|not a valid topic filter");
    expect_error(NULL, "topic read a+\n", -2, "not a valid topic filter");
    expect_error(NULL, "pattern read dt/dev-%u/#\n", -2, "acl-bad:1:|whole topic level");
    expect_error(NULL, "pattern read dt/%c%u\n", -2, "whole topic level");
    expect_error(NULL, "topics read a\n", -2, "expected user, topic or pattern");
    expect_error(NULL, "Topic read a\n", -2, "expected user, topic or pattern");
    expect_error("alice:secret\n", "topic read a\n", -1, "pw-bad:1:");  /* the password file is named first */
    expect_error(NULL, NULL, 0, "");
    struct acl_db *db = NULL;
    char err[256] = "";
    CHECK_EQ_INT(acl_db_load("/nonexistent/pw", NULL, &db, err, sizeof(err)), -1);
    CHECK(strstr(err, "/nonexistent/pw: cannot open: No such file") != NULL);
    CHECK_EQ_INT(acl_db_load(NULL, "/nonexistent/acl", &db, err, sizeof(err)), -2);
}

static bool may(const struct acl_db *db, const char *user, const char *client, unsigned access, const char *t)
{
    struct acl_who who = {(const uint8_t *)user, user ? (uint32_t)strlen(user) : 0, (const uint8_t *)client,
                          client ? (uint32_t)strlen(client) : 0};
    return acl_allowed(db, &who, access, (const uint8_t *)t, strlen(t));
}

/* The scenario of the mosquitto-on-Azure README, plus anonymous lines and denies. */
static const char azure_acl[] =
    "# anonymous clients\n"
    "topic read public/#\n"
    "topic   write   public/anon/in\n"
    "\n"
    "user mqttuser\n"
    "topic readwrite #\n"
    "topic deny private/#\n"
    "\n"
    "user mqttservice\n"
    "topic read dt/demo/#\n"
    "topic readwrite cmd/demo/#\n"
    "  topic read $SYS/broker/#\n"
    "\n"
    "pattern write dt/demo/+/%u/#\n"
    "pattern readwrite cmd/demo/+/%u/#\n"
    "pattern read clients/%c/inbox\n"
    "pattern deny dt/demo/blocked/#\n"
    "user spaced\n"
    "topic a topic with spaces/x \n"
    "user mqttuser\n"
    "topic read extra/merged\n";

static void test_rules(void)
{
    struct acl_db *db = NULL;
    char err[512] = "";
    CHECK_EQ_INT(acl_db_load(NULL, write_file("acl", azure_acl), &db, err, sizeof(err)), 0);
    if (!db) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK_EQ_INT(db->anonymous.n, 2);
    CHECK_EQ_INT(db->patterns.n, 4);
    /* devices: write their own data, read and write their own commands */
    CHECK(may(db, "dev00001", "c", ACL_WRITE, "dt/demo/1/dev00001/senml"));
    CHECK(may(db, "dev00001", "c", ACL_WRITE, "dt/demo/1/dev00001"));
    CHECK(!may(db, "dev00001", "c", ACL_WRITE, "dt/demo/1/dev00002/senml"));
    CHECK(!may(db, "dev00001", "c", ACL_WRITE, "dt/demo/dev00001"));
    CHECK(!may(db, "dev00001", "c", ACL_READ, "dt/demo/1/dev00001/senml")); /* write only */
    CHECK(may(db, "dev00001", "c", ACL_READ, "cmd/demo/1/dev00001/req"));
    CHECK(may(db, "dev00001", "c", ACL_READ, "cmd/demo/+/dev00001/#"));
    CHECK(!may(db, "dev00001", "c", ACL_READ, "cmd/demo/+/+/#"));
    CHECK(!may(db, "dev00001", "c", ACL_READ, "cmd/demo/#"));
    CHECK(may(db, "dev00001", "c", ACL_WRITE, "cmd/demo/1/dev00001/res"));
    CHECK(!may(db, "dev00001", "c", ACL_WRITE, "cmd/demo/1/dev00002/req"));
    CHECK(!may(db, "dev00001", "c", ACL_READ, "public/x")); /* anonymous lines are not for users */
    /* the injection cases through the whole check */
    CHECK(!may(db, "+", "c", ACL_WRITE, "dt/demo/1/+/x"));
    CHECK(!may(db, "+", "c", ACL_WRITE, "dt/demo/1/dev00002/x"));
    CHECK(!may(db, "#", "c", ACL_READ, "cmd/demo/1/#"));
    CHECK(!may(db, "a/b", "c", ACL_WRITE, "dt/demo/1/a/b/x"));
    CHECK(!may(db, "u", "+", ACL_READ, "clients/+/inbox"));
    CHECK(!may(db, "u", "x/y", ACL_READ, "clients/x/y/inbox"));
    CHECK(may(db, "u", "me", ACL_READ, "clients/me/inbox"));
    CHECK(!may(db, "u", "me", ACL_READ, "clients/you/inbox"));
    CHECK(!may(db, NULL, NULL, ACL_READ, "clients//inbox"));
    /* a pattern deny wins over the pattern grant */
    CHECK(!may(db, "blocked", "c", ACL_WRITE, "dt/demo/blocked/blocked/x"));
    /* the service */
    CHECK(may(db, "mqttservice", "s", ACL_READ, "dt/demo/#"));
    CHECK(may(db, "mqttservice", "s", ACL_READ, "dt/demo/1/dev00003/senml"));
    CHECK(!may(db, "mqttservice", "s", ACL_WRITE, "dt/demo/1/dev00003/senml"));
    CHECK(may(db, "mqttservice", "s", ACL_WRITE, "cmd/demo/1/dev00003/req"));
    CHECK(may(db, "mqttservice", "s", ACL_READ, "cmd/demo/#"));
    CHECK(!may(db, "mqttservice", "s", ACL_READ, "#"));
    CHECK(may(db, "mqttservice", "s", ACL_READ, "$SYS/broker/uptime"));
    CHECK(!may(db, "mqttservice", "s", ACL_READ, "$SYS/other"));
    /* shared subscriptions are judged by their filter */
    CHECK(may(db, "mqttservice", "s", ACL_READ, "$share/workers/dt/demo/#"));
    CHECK(!may(db, "mqttservice", "s", ACL_READ, "$share/workers/#"));
    CHECK(!may(db, "mqttservice", "s", ACL_WRITE, "$share/workers/cmd/demo/x")); /* not for PUBLISH */
    /* mqttuser: everything but $-topics (a leading '#') and its deny */
    CHECK(may(db, "mqttuser", "t", ACL_READ, "#"));
    CHECK(may(db, "mqttuser", "t", ACL_WRITE, "anything/at/all"));
    CHECK(!may(db, "mqttuser", "t", ACL_READ, "$SYS/broker/uptime"));
    CHECK(!may(db, "mqttuser", "t", ACL_WRITE, "private/x"));
    CHECK(!may(db, "mqttuser", "t", ACL_READ, "private/#"));
    CHECK(may(db, "mqttuser", "t", ACL_READ, "extra/merged")); /* a second block for the same user adds */
    /* a deny inside a granted filter: the SUBSCRIBE passes, deliveries there do not */
    CHECK(may(db, "mqttuser", "t", ACL_READ, "+/x"));
    /* anonymous */
    CHECK(may(db, NULL, "a", ACL_READ, "public/news"));
    CHECK(may(db, NULL, "a", ACL_READ, "public/#"));
    CHECK(!may(db, NULL, "a", ACL_WRITE, "public/news"));
    CHECK(may(db, NULL, "a", ACL_WRITE, "public/anon/in"));
    CHECK(!may(db, NULL, "a", ACL_READ, "#"));
    /* a user with no block of their own: only the patterns */
    CHECK(!may(db, "stranger", "c", ACL_READ, "public/news"));
    CHECK(may(db, "stranger", "c", ACL_WRITE, "dt/demo/1/stranger/x"));
    /* spaces are part of a topic; trailing blanks are not */
    CHECK(may(db, "spaced", "c", ACL_WRITE, "a topic with spaces/x"));
    CHECK(!may(db, "spaced", "c", ACL_WRITE, "a topic with spaces/x "));
    acl_db_free(db);

    /* no acl file: everything allowed (the handler then passes) */
    CHECK_EQ_INT(acl_db_load(write_file("pw", pw_lines), NULL, &db, err, sizeof(err)), 0);
    CHECK(may(db, "alice", "c", ACL_WRITE, "any/thing"));
    acl_db_free(db);
    /* an empty acl file: nothing allowed */
    CHECK_EQ_INT(acl_db_load(NULL, write_file("acl-empty", "# nothing\n"), &db, err, sizeof(err)), 0);
    CHECK(!may(db, "alice", "c", ACL_WRITE, "any/thing"));
    CHECK(!may(db, NULL, NULL, ACL_READ, "#"));
    acl_db_free(db);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Not a pass/fail check: the numbers for docs/HANDLERS.md. */
static void print_costs(void)
{
    struct acl_password pw;
    char err[256];
    static const int iterations[] = {101, 1000, 10000};
    for (size_t k = 0; k < sizeof(iterations) / sizeof(iterations[0]); k++) {
        char line[200];
        snprintf(line, sizeof(line), "$7$%d$4Hn/pRkavuPbxm+j$ovC5rgWlROQdokJJmtrKAKIT3rPmqKz9MM79pI+QFIfPof/5GQhPptRoEDSPjJ2RmLyRpTL4obcbV27dh85cow==",
                 iterations[k]);
        CHECK_EQ_INT(acl_password_parse(line, &pw, err, sizeof(err)), 0);
        int n = iterations[k] > 1000 ? 20 : 200;
        double t0 = now_s();
        for (int i = 0; i < n; i++)
            acl_password_verify(&pw, (const uint8_t *)"secret", 6);
        printf("cost: $7$ PBKDF2-SHA512 verify, %d iterations: %.1f us\n", iterations[k], (now_s() - t0) / n * 1e6);
    }
    CHECK_EQ_INT(acl_password_parse("$6$ejkIw4A9dqeREInQ$WsHLF8nwudoB2Ic77XMbdGL7o06UCp2p0AvRAKVss9QZNSt6WcMNKGixTrwvV"
                                    "fQ3JIJR0C65cu1LjXkOm45fXg==",
                                    &pw, err, sizeof(err)),
                 0);
    double t0 = now_s();
    for (int i = 0; i < 20000; i++)
        acl_password_verify(&pw, (const uint8_t *)"hunter2", 7);
    printf("cost: $6$ SHA-512 verify: %.2f us\n", (now_s() - t0) / 20000 * 1e6);

    struct acl_db *db = NULL;
    CHECK_EQ_INT(acl_db_load(NULL, write_file("acl", azure_acl), &db, err, sizeof(err)), 0);
    if (!db)
        return;
    t0 = now_s();
    int allowed = 0;
    for (int i = 0; i < 1000000; i++)
        allowed += may(db, "dev00001", "c", ACL_WRITE, "dt/demo/1/dev00001/senml");
    printf("cost: acl check (PUBLISH by a device, %u patterns): %.0f ns\n", db->patterns.n, (now_s() - t0) / 1e6 * 1e9);
    CHECK_EQ_INT(allowed, 1000000);
    acl_db_free(db);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_topic_match();
    test_filter_cover();
    test_substitution();
    test_passwords();
    test_file_errors();
    test_rules();
    print_costs();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return check_done("test_acl");
}
