/*
 * Revocation answers shared by every worker: OCSP answers keyed by
 * (issuer, serial), CRLs keyed by where they came from.  A small array
 * under a mutex: it is touched once per handshake, never per packet, and a
 * linear scan of a few thousand keys costs less than the signature check
 * the handshake does anyway.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "net/tls_int.h"

void rev_key(const void *data, size_t len, uint8_t key[REV_KEY_LEN])
{
    unsigned int n = REV_KEY_LEN;
    EVP_Digest(data, len, key, &n, EVP_sha256(), NULL);
}

int rev_cache_init(struct rev_cache *c, uint32_t cap)
{
    memset(c, 0, sizeof(*c));
    c->cap = cap;
    return pthread_mutex_init(&c->lock, NULL) ? -1 : 0;
}

void rev_entry_clear(struct rev_entry *e)
{
    X509_CRL_free(e->crl);
    e->crl = NULL;
}

void rev_cache_free(struct rev_cache *c)
{
    for (uint32_t i = 0; i < c->n; i++)
        rev_entry_clear(&c->e[i]);
    free(c->e);
    pthread_mutex_destroy(&c->lock);
}

static struct rev_entry *find(struct rev_cache *c, const uint8_t *key)
{
    for (uint32_t i = 0; i < c->n; i++)
        if (!memcmp(c->e[i].key, key, REV_KEY_LEN))
            return &c->e[i];
    return NULL;
}

static void copy_entry(struct rev_entry *dst, const struct rev_entry *src)
{
    *dst = *src;
    if (dst->crl)
        X509_CRL_up_ref(dst->crl);
}

bool rev_cache_get(struct rev_cache *c, const uint8_t key[REV_KEY_LEN], struct rev_entry *out)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&c->lock);
    struct rev_entry *e = find(c, key);
    bool ok = e && e->expires > now;
    if (ok)
        copy_entry(out, e);
    ok ? c->hits++ : c->misses++;
    pthread_mutex_unlock(&c->lock);
    return ok;
}

/* Make room: drop what expired; if nothing did, the entry expiring first. */
static struct rev_entry *slot(struct rev_cache *c, time_t now)
{
    if (c->n < c->cap) {
        if (c->n % 64 == 0) {
            void *p = realloc(c->e, (c->n + 64) * sizeof(*c->e));
            if (!p)
                return NULL;
            c->e = p;
        }
        return &c->e[c->n++];
    }
    uint32_t victim = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->e[i].expires <= now) {
            victim = i;
            break;
        }
        if (c->e[i].expires < c->e[victim].expires)
            victim = i;
    }
    rev_entry_clear(&c->e[victim]);
    return &c->e[victim];
}

void rev_cache_put(struct rev_cache *c, const struct rev_entry *e)
{
    pthread_mutex_lock(&c->lock);
    struct rev_entry *dst = find(c, e->key);
    if (dst)
        rev_entry_clear(dst);
    else
        dst = slot(c, time(NULL));
    if (dst)
        copy_entry(dst, e);
    pthread_mutex_unlock(&c->lock);
}
