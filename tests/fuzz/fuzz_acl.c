/*
 * Fuzzing the acl handler's files (handlers/acl_file.c): mosquitto's
 * password_file and acl_file, read with acl_db_load as the handler reads
 * them at start and on SIGHUP.
 *
 * Input: the first byte says which files are given (bit 0: the password
 * file, bit 1: the acl file; both when neither bit is set); the rest is the
 * password file up to the first NUL and the acl file after it (no NUL: all
 * of it is the one file given, or both read the same text).
 *
 * Checked on a database that loads: every user is found by its name; every
 * hash is of a known kind with a salt of 1-64 bytes (and 1-10^7 iterations
 * for $7$); every rule is a valid filter, and a pattern's %u/%c are whole
 * levels; a database without an acl file allows everything; access checks
 * for a few identities and topics run clean; a $6$ entry re-hashed with a
 * password of our own verifies, and the same entry written back as text
 * parses to the same salt and hash.  An error names the file.  Any
 * disagreement aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "fuzz_memfile.h"
#include "handlers/acl.h"
#include "mqtt/mqtt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why, const char *detail)
{
    fprintf(stderr, "fuzz_acl: %s%s%s\n", why, detail ? ": " : "", detail ? detail : "");
    abort();
}

static void check_rules(const struct acl_rules *rs, bool patterns)
{
    for (uint32_t i = 0; i < rs->n; i++) {
        const struct acl_rule *r = &rs->v[i];
        if (r->len != strlen(r->topic) || !mqtt_topic_filter_valid((const uint8_t *)r->topic, r->len))
            fail("a rule that is not a valid filter", r->topic);
        if (r->access > ACL_READWRITE || r->pattern != patterns)
            fail("a rule with a bad access or kind", r->topic);
        if (patterns && !acl_substitution_ok(r->topic))
            fail("a pattern with %u/%c inside a level", r->topic);
    }
}

/* A $6$ entry's salt with a password of ours: the hash computed here must
 * verify, and the entry as mosquitto_passwd writes it must parse back. */
static void check_sha512(const struct acl_password *pw)
{
    static const uint8_t password[] = "fuzz-password";
    struct acl_password mine = *pw;
    unsigned n = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, password, sizeof(password) - 1) != 1 ||
        EVP_DigestUpdate(ctx, mine.salt, mine.salt_len) != 1 || EVP_DigestFinal_ex(ctx, mine.hash, &n) != 1)
        abort();
    EVP_MD_CTX_free(ctx);
    if (!acl_password_verify(&mine, password, sizeof(password) - 1))
        fail("a $6$ hash of our own that does not verify", NULL);
    if (acl_password_verify(&mine, password, sizeof(password) - 2))
        fail("a $6$ hash that verifies another password", NULL);
    char line[3 + 4 * ((ACL_SALT_MAX + 2) / 3) + 1 + 4 * ((ACL_HASH_LEN + 2) / 3) + 1];
    memcpy(line, "$6$", 3);
    int k = EVP_EncodeBlock((unsigned char *)line + 3, mine.salt, mine.salt_len);
    line[3 + k] = '$';
    EVP_EncodeBlock((unsigned char *)line + 4 + k, mine.hash, ACL_HASH_LEN);
    struct acl_password back;
    char err[256];
    if (acl_password_parse(line, &back, err, sizeof(err)) < 0)
        fail("a $6$ entry written back that does not parse", err);
    if (back.kind != ACL_HASH_SHA512 || back.salt_len != mine.salt_len ||
        memcmp(back.salt, mine.salt, mine.salt_len) || memcmp(back.hash, mine.hash, ACL_HASH_LEN))
        fail("a $6$ entry written back that parses to another", line);
}

static void check_password(const struct acl_password *pw)
{
    if (!pw->kind)
        return;
    if (pw->kind != ACL_HASH_SHA512 && pw->kind != ACL_HASH_PBKDF2_SHA512)
        fail("a hash of no known kind", NULL);
    if (pw->salt_len < 1 || pw->salt_len > ACL_SALT_MAX)
        fail("a salt of a bad length", NULL);
    if (pw->kind == ACL_HASH_PBKDF2_SHA512 && (pw->iterations < 1 || pw->iterations > 10000000))
        fail("a $7$ iteration count out of range", NULL);
    if (pw->kind == ACL_HASH_SHA512)
        check_sha512(pw);
    else if (pw->iterations <= 2 && acl_password_verify(pw, (const uint8_t *)"x", 1) &&
             acl_password_verify(pw, (const uint8_t *)"y", 1))
        fail("a $7$ hash that verifies two passwords", NULL);
}

static void check_db(const struct acl_db *db, bool passwords, bool acl)
{
    if (db->have_passwords != passwords || db->have_acl != acl)
        fail("a database that forgot which files it has", NULL);
    for (uint32_t i = 0; i < db->nusers; i++) {
        const struct acl_user *u = &db->users[i];
        if (acl_db_user(db, (const uint8_t *)u->name, u->name_len) != u)
            fail("a user not found by its name", u->name);
        check_password(&u->pw);
        check_rules(&u->rules, false);
    }
    if (db->nusers && db->index_size < 2 * db->nusers)
        fail("a user index less than twice the users", NULL);
    check_rules(&db->anonymous, false);
    check_rules(&db->patterns, true);
    check_password(&db->dummy);

    static const char *const topics[] = {"a", "a/b", "$SYS/x", "dt/alice/x", "dt/dev-1/y", "#", "+/b",
                                         "$share/g/a/#", "x/+/z"};
    const char *first = db->nusers ? db->users[0].name : "alice";
    const struct acl_who who[] = {
        {0},
        {.user = (const uint8_t *)first, .user_len = (uint32_t)strlen(first), .client = (const uint8_t *)"dev-1",
         .client_len = 5},
        {.user = (const uint8_t *)"a/+", .user_len = 3, .client = (const uint8_t *)"#", .client_len = 1},
    };
    for (size_t w = 0; w < sizeof(who) / sizeof(who[0]); w++)
        for (size_t t = 0; t < sizeof(topics) / sizeof(topics[0]); t++)
            for (unsigned a = ACL_READ; a <= ACL_WRITE; a++) {
                bool ok = acl_allowed(db, &who[w], a, (const uint8_t *)topics[t], strlen(topics[t]));
                if (!acl && !ok)
                    fail("a database without an acl file that refuses", topics[t]);
            }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct memfile pwfile, aclfile;
    if (size < 1 || size > 16384)
        return 0;
    unsigned which = data[0] & 3 ? data[0] & 3 : 3;
    const uint8_t *text = data + 1, *nul = memchr(text, 0, size - 1);
    size_t pw_len = nul ? (size_t)(nul - text) : size - 1;
    const uint8_t *acl_text = nul ? nul + 1 : text;
    memfile_put(&pwfile, "password_file", text, pw_len);
    memfile_put(&aclfile, "acl_file", acl_text, (size_t)(data + size - acl_text));

    bool passwords = which & 1, acl = which & 2;
    struct acl_db *db = NULL;
    char err[512] = "";
    int rc = acl_db_load(passwords ? pwfile.path : NULL, acl ? aclfile.path : "", &db, err, sizeof(err));
    if (rc < 0) {
        const char *path = rc == -1 ? pwfile.path : aclfile.path;
        if ((rc == -1 && !passwords) || (rc == -2 && !acl) || rc < -2)
            fail("an error from a file not given", err);
        if (strncmp(err, path, strlen(path)) != 0)
            fail("an error that does not name its file", err);
        return 0;
    }
    check_db(db, passwords, acl);
    acl_db_free(db);
    return 0;
}
