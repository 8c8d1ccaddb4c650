/*
 * The cache of successful password checks (acl_cache.h): a set-associative
 * table of MACs, ACL_CACHE_WAYS entries per set, fixed size.
 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

#include "handlers/acl_cache.h"

_Static_assert((ACL_CACHE_SETS & (ACL_CACHE_SETS - 1)) == 0, "ACL_CACHE_SETS is a power of two");

bool acl_cache_key_of(const uint8_t secret[ACL_CACHE_SECRET], const uint8_t *user, size_t ulen,
                      const uint8_t *password, size_t plen, struct acl_cache_key *out)
{
    uint8_t lenbuf[4] = {(uint8_t)(ulen >> 24), (uint8_t)(ulen >> 16), (uint8_t)(ulen >> 8), (uint8_t)ulen};
    static const uint8_t empty[1];
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_END};
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    size_t n = 0;
    bool ok = ctx && EVP_MAC_init(ctx, secret, ACL_CACHE_SECRET, params) == 1 &&
              EVP_MAC_update(ctx, lenbuf, sizeof(lenbuf)) == 1 && EVP_MAC_update(ctx, user ? user : empty, ulen) == 1 &&
              EVP_MAC_update(ctx, password ? password : empty, plen) == 1 &&
              EVP_MAC_final(ctx, out->mac, &n, sizeof(out->mac)) == 1 && n == sizeof(out->mac);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    if (!ok)
        OPENSSL_cleanse(out, sizeof(*out));
    return ok;
}

static struct acl_cache_entry *set_of(const struct acl_cache *c, const struct acl_cache_key *key)
{
    uint32_t h = (uint32_t)key->mac[0] | (uint32_t)key->mac[1] << 8 | (uint32_t)key->mac[2] << 16;
    return (struct acl_cache_entry *)c->e[h & (ACL_CACHE_SETS - 1)];
}

static bool live(const struct acl_cache_entry *e, uint64_t generation, uint64_t now_ms)
{
    return e->expires_ms > now_ms && e->generation == generation;
}

bool acl_cache_hit(const struct acl_cache *c, const struct acl_cache_key *key, uint64_t generation,
                   uint64_t now_ms)
{
    const struct acl_cache_entry *set = set_of(c, key);
    bool hit = false;
    for (unsigned i = 0; i < ACL_CACHE_WAYS; i++) /* every way compared: no early exit */
        hit |= live(&set[i], generation, now_ms) && CRYPTO_memcmp(set[i].key.mac, key->mac, sizeof(key->mac)) == 0;
    return hit;
}

void acl_cache_put(struct acl_cache *c, const struct acl_cache_key *key, uint64_t generation, uint64_t now_ms)
{
    struct acl_cache_entry *set = set_of(c, key), *slot = &set[0];
    for (unsigned i = 0; i < ACL_CACHE_WAYS; i++) {
        struct acl_cache_entry *e = &set[i];
        if (!memcmp(e->key.mac, key->mac, sizeof(key->mac)) || !live(e, generation, now_ms)) {
            slot = e; /* the same credential again, or a dead entry */
            break;
        }
        if (e->expires_ms < slot->expires_ms)
            slot = e;
    }
    slot->key = *key;
    slot->generation = generation;
    slot->expires_ms = now_ms + ACL_CACHE_TTL_MS;
}

void acl_cache_clear(struct acl_cache *c) { OPENSSL_cleanse(c, sizeof(*c)); }
