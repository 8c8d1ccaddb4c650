/*
 * The `acl` handler's parts (internal; the unit tests use them): mosquitto's
 * password_file ($7$ PBKDF2-SHA512, $6$ SHA-512) and acl_file (user, topic,
 * pattern with %u/%c, deny), loaded into one immutable database that SIGHUP
 * replaces as a whole, and the checks against it.
 *
 * Matching follows MQTT's rules (5.0 section 4.7): '+' one level, '#' the
 * rest including the parent level, and a rule that starts with a wildcard
 * never matches a topic that starts with '$'.  A client asks for a topic name
 * (PUBLISH, a delivery) or a filter (SUBSCRIBE); a rule grants a filter only
 * when it covers every topic the filter can match.
 *
 * %u and %c stand for the client's username and client id, only as a whole
 * topic level of a `pattern` (the loader refuses anything else).  They are
 * compared as one level, never pasted into the rule: a username or client id
 * that is empty, absent or holds '+', '#' or '/' makes such a level match
 * nothing, so no identity can widen what a pattern grants.
 */
#ifndef MGATE_HANDLERS_ACL_H
#define MGATE_HANDLERS_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "handlers/acl_cache.h"
#include "handlers/acl_fq.h"

enum acl_access {
    ACL_DENY = 0, /* `deny`: no access, whatever other rules grant */
    ACL_READ = 1, /* SUBSCRIBE, and deliveries from the broker */
    ACL_WRITE = 2, /* PUBLISH */
    ACL_READWRITE = 3,
};

struct acl_rule {
    char *topic; /* a topic filter as written (NUL-terminated) */
    uint32_t len;
    uint8_t access; /* enum acl_access */
    bool pattern;   /* %u and %c levels are substituted */
};

struct acl_rules {
    struct acl_rule *v;
    uint32_t n, cap;
};

enum acl_hash { ACL_HASH_SHA512 = 6, ACL_HASH_PBKDF2_SHA512 = 7 };

#define ACL_SALT_MAX 64
#define ACL_HASH_LEN 64 /* SHA-512 */

struct acl_password {
    uint8_t kind; /* enum acl_hash; 0: none */
    uint8_t salt_len;
    uint32_t iterations; /* $7$ */
    uint8_t salt[ACL_SALT_MAX];
    uint8_t hash[ACL_HASH_LEN];
};

struct acl_user {
    char *name;
    uint32_t name_len;
    struct acl_password pw; /* kind 0: not in the password file */
    struct acl_rules rules; /* its `user` block(s) of the acl file */
};

struct acl_db {
    bool have_passwords, have_acl; /* which files were given */
    struct acl_user *users;
    uint32_t nusers, cap;
    uint32_t *index; /* open addressing over users: i + 1, 0 = empty */
    uint32_t index_size; /* a power of two, at least twice nusers */
    struct acl_rules anonymous; /* topic lines before the first `user` */
    struct acl_rules patterns;
    uint32_t max_iterations; /* the costliest $7$ entry, for the start-up log */
    struct acl_password dummy; /* verified for unknown users: the first entry's cost */
};

/* Who is asking: len 0 means absent (anonymous, or no client id). */
struct acl_who {
    const uint8_t *user;
    uint32_t user_len;
    const uint8_t *client;
    uint32_t client_len;
};

/* ---- matching (acl_match.c) ---- */

/* Whether rule (a filter; with `who`, its %u/%c levels are substituted)
 * matches every topic that f (a topic name or filter) can match. */
bool acl_covers(const char *rule, size_t rlen, const uint8_t *f, size_t flen, const struct acl_who *who);

/* Whether `who` may `access` (ACL_READ or ACL_WRITE) topic name or filter t:
 * no `deny` rule of theirs covers it, and a rule with that access does.
 * Their rules: the user's block (anonymous: the lines before any `user`) and
 * every pattern.  A SUBSCRIBE to "$share/GROUP/filter" is checked as
 * "filter".  A database without an acl file allows everything. */
bool acl_allowed(const struct acl_db *db, const struct acl_who *who, unsigned access, const uint8_t *t,
                 size_t len);

/* The same check against one rule set of its own (the `jwt` handler's
 * acl claim): no deny rule of rs covers t, and a rule with `access` does;
 * "$share/GROUP/filter" is checked as "filter" for ACL_READ; pattern rules
 * substitute who's %u/%c. */
bool acl_rules_allow(const struct acl_rules *rs, const struct acl_who *who, unsigned access, const uint8_t *t,
                     size_t len);

/* ---- files (acl_file.c) ---- */

/* Read both files (either path may be NULL or "") into a new database.
 * Returns 0, or -1 (password file) or -2 (acl file) with "path:line: what
 * is wrong" in err. */
int acl_db_load(const char *password_file, const char *acl_file, struct acl_db **out, char *err,
                size_t errlen);
void acl_db_free(struct acl_db *db);
/* One rule (topic copied), or -1 when out of memory; every rule of a set. */
int acl_rules_add(struct acl_rules *rs, const char *topic, uint8_t access, bool pattern);
void acl_rules_free(struct acl_rules *rs);
/* Whether each %u and %c of filter is a whole topic level, as patterns need. */
bool acl_substitution_ok(const char *filter);
const struct acl_user *acl_db_user(const struct acl_db *db, const uint8_t *name, size_t len);

/* One line's hash ("$7$101$salt$hash" or "$6$salt$hash") into pw; -1 with
 * the reason in err. */
int acl_password_parse(const char *s, struct acl_password *pw, char *err, size_t errlen);

/* ---- passwords (acl_passwd.c) ---- */

/* Whether password matches pw, in constant time for a given entry. */
bool acl_password_verify(const struct acl_password *pw, const uint8_t *password, size_t len);

/* ---- the handler's life (acl.c), on the control thread ---- */

struct mgate_config;
/* Load MGATE_ACL_* files; -1 with a message naming the variable. */
int acl_start(const struct mgate_config *cfg, char *err, size_t errlen);
/* SIGHUP: both files again, swapped in only when both load (else logged). */
void acl_reload(void);
/* After the workers stopped. */
void acl_stop(void);

/* ---- expensive hashes (acl_pool.c) ---- */

/* $7$ entries with more iterations than this are verified on the pool's
 * threads, not on the loop (101, mosquitto_passwd's count, costs ~45 us). */
#define ACL_INLINE_MAX_ITERATIONS 200u
/* An unknown user's check is only timed, not computed, when it would take
 * at least this long: below, a sleep's wake-up jitter (a few us) would be a
 * noticeable share of it, and the work saved is small. */
#define ACL_SIMULATE_MIN_NS 1000000u
/* The simulated time is a recent real check's time per iteration, picked
 * at random among the last ACL_CALIBRATION_SAMPLES; with fewer samples, or
 * none in the last ACL_CALIBRATION_MAX_AGE_MS, the check is computed. */
#define ACL_CALIBRATION_SAMPLES 16u
#define ACL_CALIBRATION_MIN_SAMPLES 4u
#define ACL_CALIBRATION_MAX_AGE_MS 1000u

enum acl_check_result { ACL_CHECK_FAIL, ACL_CHECK_OK, ACL_CHECK_BUSY };

struct loop;
struct acl_check;
typedef void acl_verified_fn(const struct acl_check *c, enum acl_check_result r);

/* A password check for the pool; copied (with the password) when queued. */
struct acl_check {
    void *s, *req; /* the session and its CONNECT, for done */
    int tag;
    acl_verified_fn *done; /* on the session's loop */
    const struct acl_password *pw;
    const uint8_t *password;
    size_t len;
    /* The answer is known (an unknown user: refused whatever it sent): only
     * the time a real check takes is spent, asleep, not the CPU. */
    bool simulate;
    struct acl_fq_addr source; /* whose queue it waits in */
    struct acl_cache_key key;  /* handed back to done, for the cache */
    bool cacheable;            /* key is good, and a success may be remembered */
    uint64_t generation;       /* of the rule set it was checked against */
};

/* Queue a check, fairly among source addresses (acl_fq.h); done(c, r) is
 * called on loop l with ACL_CHECK_OK or _FAIL, or _BUSY when a source that
 * waits for fewer checks took its place.  0, or -1 when it was not queued
 * (the queue is full and its source waits for the most, or out of memory):
 * nothing will be called.  When l goes away, its jobs are dropped (running
 * ones waited for) by its loop slot's destructor, and done is not called. */
int acl_pool_verify(struct loop *l, const struct acl_check *c);
/* Stop the pool's threads (after the workers are gone). */
void acl_pool_stop(void);

#endif
