/*
 * The webhook's answers kept per worker (in the handler's loop slot: no
 * locks), under the SHA-256 of their request (webhook_json.c says what it
 * covers).  An answer is kept with its body, so a hit applies the same
 * modifiers the service gave (minus a payload).
 *
 * Bounded twice: WH_CACHE_ENTRIES slots, direct-mapped (a new key takes
 * its slot from whatever was there), and WH_CACHE_BYTES of bodies: when a
 * new one would pass that, the expired entries are dropped, and if that is
 * not enough the new one is not kept.  Expired entries are also dropped as
 * a lookup meets them.
 */
#include <stdlib.h>
#include <string.h>

#include "handlers/webhook.h"

struct entry {
    uint8_t key[WH_KEY_LEN];
    uint64_t expires; /* loop ms */
    uint8_t result;
    size_t len;
    uint8_t body[];
};

struct wh_cache {
    size_t bytes; /* of the bodies kept */
    struct entry *slot[WH_CACHE_ENTRIES];
};

struct wh_cache *wh_cache_new(void) { return calloc(1, sizeof(struct wh_cache)); }

static struct entry **slot_of(struct wh_cache *c, const uint8_t *key)
{
    uint32_t i;
    memcpy(&i, key, sizeof(i));
    return &c->slot[i % WH_CACHE_ENTRIES];
}

static void drop(struct wh_cache *c, struct entry **e)
{
    if (!*e)
        return;
    c->bytes -= (*e)->len;
    free(*e);
    *e = NULL;
}

static void drop_expired(struct wh_cache *c, uint64_t now)
{
    for (uint32_t i = 0; i < WH_CACHE_ENTRIES; i++)
        if (c->slot[i] && c->slot[i]->expires <= now)
            drop(c, &c->slot[i]);
}

void wh_cache_free(struct wh_cache *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < WH_CACHE_ENTRIES; i++)
        free(c->slot[i]);
    free(c);
}

bool wh_cache_get(struct wh_cache *c, const uint8_t key[WH_KEY_LEN], uint64_t now, enum wh_result *r,
                  const uint8_t **body, size_t *len)
{
    if (!c)
        return false;
    struct entry **e = slot_of(c, key);
    if (*e && (*e)->expires <= now)
        drop(c, e);
    if (!*e || memcmp((*e)->key, key, WH_KEY_LEN) != 0)
        return false;
    *r = (enum wh_result)(*e)->result;
    *body = (*e)->body;
    *len = (*e)->len;
    return true;
}

void wh_cache_put(struct wh_cache *c, const uint8_t key[WH_KEY_LEN], uint64_t now, uint32_t ttl_ms, enum wh_result r,
                  const uint8_t *body, size_t len)
{
    if (!c || !ttl_ms || (r != WH_ALLOW && r != WH_DENY) || len > WH_CACHE_MAX_ANSWER)
        return;
    struct entry **e = slot_of(c, key);
    drop(c, e);
    if (c->bytes + len > WH_CACHE_BYTES)
        drop_expired(c, now);
    if (c->bytes + len > WH_CACHE_BYTES || !(*e = malloc(sizeof(**e) + len)))
        return;
    memcpy((*e)->key, key, WH_KEY_LEN);
    (*e)->expires = now + ttl_ms;
    (*e)->result = (uint8_t)r;
    (*e)->len = len;
    if (len)
        memcpy((*e)->body, body, len);
    c->bytes += len;
}
