/*
 * A short memory of successful costly password checks (acl_cache.c), so a
 * client that reconnects does not cost a second PBKDF2 run and does not
 * wait behind a flood of CONNECTs in the check queue.
 *
 * An entry is HMAC-SHA256(per-process random key, username, password): the
 * cache holds no password and no hash an attacker could test guesses
 * against without the key, and a lookup finds an entry only with the very
 * username and password that passed.  Only successes are stored; a wrong
 * password or an unknown user never is, so the cache tells an attacker
 * nothing it did not know (a hit needs the right password).  Entries live
 * ACL_CACHE_TTL_MS from the check that made them (a hit does not extend
 * it) and belong to one rule-set generation: SIGHUP makes them all stale.
 *
 * Pure logic; the caller serialises access (acl.c holds a mutex).
 */
#ifndef MGATE_HANDLERS_ACL_CACHE_H
#define MGATE_HANDLERS_ACL_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Two minutes: a reconnect storm after a broker restart or a network blip
 * (clients back off up to a minute or so) is served from it, while a
 * credential's MAC stays in memory no longer than that after its check. */
#define ACL_CACHE_TTL_MS 120000u
#define ACL_CACHE_SETS 256u /* a power of two */
#define ACL_CACHE_WAYS 4u   /* 1024 entries, 48 KiB */
#define ACL_CACHE_SECRET 32u

struct acl_cache_key {
    uint8_t mac[32];
};

struct acl_cache_entry {
    struct acl_cache_key key;
    uint64_t generation;
    uint64_t expires_ms; /* 0: empty */
};

struct acl_cache {
    struct acl_cache_entry e[ACL_CACHE_SETS][ACL_CACHE_WAYS];
};

/* The key of a (username, password) pair; the username's length is part of
 * the MAC, so ("ab", "c") and ("a", "bc") differ.  false if OpenSSL failed. */
bool acl_cache_key_of(const uint8_t secret[ACL_CACHE_SECRET], const uint8_t *user, size_t ulen,
                      const uint8_t *password, size_t plen, struct acl_cache_key *out);

/* Whether a live entry of this generation holds key. */
bool acl_cache_hit(const struct acl_cache *c, const struct acl_cache_key *key, uint64_t generation,
                   uint64_t now_ms);
/* Remember a successful check of this generation, ACL_CACHE_TTL_MS from now;
 * a full set gives up its entry closest to expiring. */
void acl_cache_put(struct acl_cache *c, const struct acl_cache_key *key, uint64_t generation, uint64_t now_ms);
/* Forget everything (SIGHUP, stop), wiping the MACs. */
void acl_cache_clear(struct acl_cache *c);

#endif
