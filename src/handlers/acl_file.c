/*
 * Reading mosquitto's password_file and acl_file into an acl_db.  Strict:
 * anything the loader does not understand is an error naming the file and
 * line, because a line skipped in an access-control file is a hole nobody
 * sees.
 *
 * password_file: "user:$7$ITERATIONS$SALT$HASH" (PBKDF2-HMAC-SHA512) or
 * "user:$6$SALT$HASH" (SHA-512 of the password then the salt), SALT and HASH
 * in standard base64, as mosquitto_passwd writes them; blank lines and lines
 * starting with '#' are skipped.
 *
 * acl_file: "user NAME", "topic [read|write|readwrite|deny] FILTER",
 * "pattern [read|write|readwrite|deny] FILTER"; no access word means
 * readwrite; the filter is the rest of the line (it may hold spaces).  Topic
 * lines before the first user line are for anonymous clients.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "handlers/acl.h"
#include "handlers/rules_file.h"
#include "mqtt/mqtt.h"

#define MAX_ITERATIONS 10000000u

/* ---- password hashes --------------------------------------------------- */

int acl_password_parse(const char *s, struct acl_password *pw, char *err, size_t errlen)
{
    memset(pw, 0, sizeof(*pw));
    const char *p = s;
    if (strncmp(p, "$7$", 3) == 0) {
        p += 3;
        char *end;
        errno = 0;
        unsigned long it = strtoul(p, &end, 10);
        if (end == p || *end != '$' || *p < '0' || *p > '9' || errno || it < 1 || it > MAX_ITERATIONS)
            return rules_failf(err, errlen, "$7$ hash: the iteration count is not a number from 1 to %u", MAX_ITERATIONS);
        pw->iterations = (uint32_t)it;
        pw->kind = ACL_HASH_PBKDF2_SHA512;
        p = end + 1;
    } else if (strncmp(p, "$6$", 3) == 0) {
        pw->kind = ACL_HASH_SHA512;
        p += 3;
    } else {
        return rules_failf(err, errlen,
                     "not a mosquitto password hash (expected $7$ or $6$ as mosquitto_passwd writes them; "
                     "plain-text passwords are not accepted)");
    }
    const char *dollar = strchr(p, '$');
    int salt = dollar ? base64_decode(p, (size_t)(dollar - p), pw->salt, sizeof(pw->salt)) : -1;
    if (salt < 1)
        return rules_failf(err, errlen, "$%u$ hash: the salt is not base64 of 1 to %u bytes", pw->kind, ACL_SALT_MAX);
    pw->salt_len = (uint8_t)salt;
    uint8_t hash[ACL_HASH_LEN + 3];
    int hl = base64_decode(dollar + 1, strlen(dollar + 1), hash, sizeof(hash));
    if (hl != ACL_HASH_LEN)
        return rules_failf(err, errlen,
                     "$%u$ hash: the hash is not base64 of 64 bytes (a crypt(3) \"$6$\" line, as openssl "
                     "passwd -6 writes, is another format)",
                     pw->kind);
    memcpy(pw->hash, hash, ACL_HASH_LEN);
    return 0;
}

/* ---- the user table ---------------------------------------------------- */

static uint32_t name_hash(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a: the table holds only names from our files */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static uint32_t *slot_of(const struct acl_db *db, const uint8_t *name, size_t n)
{
    uint32_t mask = db->index_size - 1;
    for (uint32_t i = name_hash(name, n) & mask;; i = (i + 1) & mask) {
        uint32_t *slot = &db->index[i];
        if (!*slot)
            return slot;
        const struct acl_user *u = &db->users[*slot - 1];
        if (u->name_len == n && memcmp(u->name, name, n) == 0)
            return slot;
    }
}

const struct acl_user *acl_db_user(const struct acl_db *db, const uint8_t *name, size_t len)
{
    if (!db->index_size)
        return NULL;
    uint32_t slot = *slot_of(db, name, len);
    return slot ? &db->users[slot - 1] : NULL;
}

static int grow_index(struct acl_db *db)
{
    uint32_t size = db->index_size ? db->index_size * 2 : 64;
    uint32_t *index = calloc(size, sizeof(*index));
    if (!index)
        return -1;
    free(db->index);
    db->index = index;
    db->index_size = size;
    for (uint32_t i = 0; i < db->nusers; i++)
        *slot_of(db, (const uint8_t *)db->users[i].name, db->users[i].name_len) = i + 1;
    return 0;
}

/* The user called name, added if new; *added tells which.  NULL: out of memory. */
static struct acl_user *user_get(struct acl_db *db, const char *name, bool *added)
{
    size_t n = strlen(name);
    *added = false;
    if ((db->nusers + 1) * 2 > db->index_size && grow_index(db) < 0)
        return NULL;
    uint32_t *slot = slot_of(db, (const uint8_t *)name, n);
    if (*slot)
        return &db->users[*slot - 1];
    if (db->nusers == db->cap) {
        uint32_t cap = db->cap ? db->cap * 2 : 16;
        struct acl_user *users = realloc(db->users, cap * sizeof(*users));
        if (!users)
            return NULL;
        db->users = users;
        db->cap = cap;
    }
    struct acl_user *u = &db->users[db->nusers];
    memset(u, 0, sizeof(*u));
    if (!(u->name = strdup(name)))
        return NULL;
    u->name_len = (uint32_t)n;
    *slot = ++db->nusers;
    *added = true;
    return u;
}

int acl_rules_add(struct acl_rules *rs, const char *topic, uint8_t access, bool pattern)
{
    if (rs->n == rs->cap) {
        uint32_t cap = rs->cap ? rs->cap * 2 : 4;
        struct acl_rule *v = realloc(rs->v, cap * sizeof(*v));
        if (!v)
            return -1;
        rs->v = v;
        rs->cap = cap;
    }
    struct acl_rule *r = &rs->v[rs->n];
    if (!(r->topic = strdup(topic)))
        return -1;
    r->len = (uint32_t)strlen(topic);
    r->access = access;
    r->pattern = pattern;
    rs->n++;
    return 0;
}

void acl_rules_free(struct acl_rules *rs)
{
    for (uint32_t i = 0; i < rs->n; i++)
        free(rs->v[i].topic);
    free(rs->v);
}

void acl_db_free(struct acl_db *db)
{
    if (!db)
        return;
    for (uint32_t i = 0; i < db->nusers; i++) {
        free(db->users[i].name);
        acl_rules_free(&db->users[i].rules);
    }
    free(db->users);
    free(db->index);
    acl_rules_free(&db->anonymous);
    acl_rules_free(&db->patterns);
    free(db);
}

/* ---- password_file ------------------------------------------------------ */

static int load_passwords(struct acl_db *db, const char *path, char *err, size_t errlen)
{
    struct rules_file r;
    if (rules_file_open(&r, path, err, errlen) < 0)
        return -1;
    int rc;
    char *line;
    while ((rc = rules_file_next(&r, &line)) > 0) {
        if (!*line || *line == '#')
            continue;
        char *colon = strchr(line, ':');
        if (!colon || colon == line) {
            rc = rules_file_fail(&r, "expected user:hash");
            break;
        }
        *colon = '\0';
        char why[200];
        struct acl_password pw;
        if (acl_password_parse(colon + 1, &pw, why, sizeof(why)) < 0) {
            rc = rules_file_fail(&r, "user \"%s\": %s", line, why);
            break;
        }
        bool added;
        struct acl_user *u = user_get(db, line, &added);
        if (!u) {
            rc = rules_file_fail(&r, "out of memory");
            break;
        }
        if (!added) {
            rc = rules_file_fail(&r, "user \"%s\" is listed twice", line);
            break;
        }
        u->pw = pw;
        if (pw.iterations > db->max_iterations)
            db->max_iterations = pw.iterations;
        if (!db->dummy.kind)
            db->dummy = pw; /* an unknown user costs what the first entry costs */
    }
    rules_file_close(&r);
    return rc < 0 ? -1 : 0;
}

/* ---- acl_file ----------------------------------------------------------- */

static const struct {
    const char *word;
    uint8_t access;
} access_words[] = {{"read", ACL_READ}, {"write", ACL_WRITE}, {"readwrite", ACL_READWRITE}, {"deny", ACL_DENY}};

/* "[access] filter" -> access and filter; false when the filter is missing. */
static bool split_access(char *rest, uint8_t *access, char **filter)
{
    *access = ACL_READWRITE;
    *filter = rest;
    size_t n = strcspn(rest, " \t");
    for (size_t i = 0; i < sizeof(access_words) / sizeof(access_words[0]); i++) {
        if (strlen(access_words[i].word) != n || strncmp(rest, access_words[i].word, n) != 0)
            continue;
        *access = access_words[i].access;
        rest += n;
        while (*rest == ' ' || *rest == '\t')
            rest++;
        *filter = rest;
        break;
    }
    return **filter != '\0';
}

/* %u and %c only as a whole level of a pattern. */
bool acl_substitution_ok(const char *filter)
{
    for (const char *p = filter; (p = strchr(p, '%')); p++) {
        if (p[1] != 'u' && p[1] != 'c')
            continue;
        bool starts = p == filter || p[-1] == '/';
        bool ends = p[2] == '\0' || p[2] == '/';
        if (!starts || !ends)
            return false;
    }
    return true;
}

/* The keyword at the start of line: its length when it is `word` followed
 * by a blank or the end, else 0. */
static size_t keyword(const char *line, const char *word)
{
    size_t n = strlen(word);
    return strncmp(line, word, n) == 0 && (line[n] == ' ' || line[n] == '\t' || !line[n]) ? n : 0;
}

/* *current: the user block the line is in, as an index + 1 (0: none yet);
 * an index, because user_get may move the array. */
static int acl_line(struct rules_file *r, struct acl_db *db, char *line, uint32_t *current)
{
    size_t k;
    bool pattern = false;
    if ((k = keyword(line, "user"))) {
        char *name = line + k;
        while (*name == ' ' || *name == '\t')
            name++;
        if (!*name)
            return rules_file_fail(r, "user without a name");
        bool added;
        struct acl_user *u = user_get(db, name, &added);
        if (!u)
            return rules_file_fail(r, "out of memory");
        *current = (uint32_t)(u - db->users) + 1;
        return 0;
    }
    if (!(k = keyword(line, "topic")) && !(pattern = (k = keyword(line, "pattern"))))
        return rules_file_fail(r, "expected user, topic or pattern at the start of the line");
    char *rest = line + k, *filter;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    uint8_t access;
    if (!split_access(rest, &access, &filter))
        return rules_file_fail(r, "%s without a topic", pattern ? "pattern" : "topic");
    if (!mqtt_topic_filter_valid((const uint8_t *)filter, strlen(filter)))
        return rules_file_fail(r, "\"%s\" is not a valid topic filter ('+' and '#' must be whole levels, '#' the last)",
                         filter);
    if (pattern && !acl_substitution_ok(filter))
        return rules_file_fail(r, "\"%s\": %%u and %%c must be a whole topic level (e.g. dt/%%u/#)", filter);
    struct acl_rules *rs = pattern ? &db->patterns : *current ? &db->users[*current - 1].rules : &db->anonymous;
    if (acl_rules_add(rs, filter, access, pattern) < 0)
        return rules_file_fail(r, "out of memory");
    return 0;
}

static int load_acl(struct acl_db *db, const char *path, char *err, size_t errlen)
{
    struct rules_file r;
    if (rules_file_open(&r, path, err, errlen) < 0)
        return -1;
    int rc;
    char *line;
    uint32_t current = 0;
    while ((rc = rules_file_next(&r, &line)) > 0) {
        if (!*line || *line == '#')
            continue;
        if ((rc = acl_line(&r, db, line, &current)) < 0)
            break;
    }
    rules_file_close(&r);
    return rc < 0 ? -1 : 0;
}

int acl_db_load(const char *password_file, const char *acl_file, struct acl_db **out, char *err, size_t errlen)
{
    struct acl_db *db = calloc(1, sizeof(*db));
    if (!db)
        return rules_failf(err, errlen, "out of memory");
    db->have_passwords = password_file && *password_file;
    db->have_acl = acl_file && *acl_file;
    int rc = db->have_passwords && load_passwords(db, password_file, err, errlen) < 0 ? -1
             : db->have_acl && load_acl(db, acl_file, err, errlen) < 0        ? -2
                                                                               : 0;
    if (rc < 0) {
        acl_db_free(db);
        return rc;
    }
    *out = db;
    return 0;
}
