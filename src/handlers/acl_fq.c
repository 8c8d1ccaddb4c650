/*
 * Round-robin queues of password checks per source address (acl_fq.h).
 * A source exists only while it has checks waiting; its slot comes from a
 * fixed array, so queueing never allocates and never fails for memory.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <string.h>

#include "handlers/acl_fq.h"

void acl_fq_init(struct acl_fq *q)
{
    memset(q, 0, sizeof(*q));
    for (uint32_t i = ACL_FQ_MAX; i-- > 0;) {
        q->pool[i].hnext = q->free;
        q->free = &q->pool[i];
    }
}

struct acl_fq_addr acl_fq_addr_of(const char *peer)
{
    struct acl_fq_addr a = {{0}};
    char host[64];
    const char *end;
    if (peer[0] == '[') { /* "[v6]:port" */
        end = strchr(peer, ']');
        peer++;
    } else {
        end = strrchr(peer, ':');
    }
    if (!end || (size_t)(end - peer) >= sizeof(host))
        return a;
    memcpy(host, peer, (size_t)(end - peer));
    host[end - peer] = 0;
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (inet_pton(AF_INET, host, &a.b[12]) == 1) {
        memcpy(a.b, v4mapped, sizeof(v4mapped)); /* the same key as ::ffff:a.b.c.d */
    } else if (inet_pton(AF_INET6, host, a.b) == 1) {
        if (memcmp(a.b, v4mapped, sizeof(v4mapped)) != 0)
            memset(&a.b[8], 0, 8); /* the /64 */
    } else {
        memset(a.b, 0, sizeof(a.b));
    }
    return a;
}

static uint32_t bucket_of(const struct acl_fq_addr *a)
{
    uint32_t h = 2166136261u; /* FNV-1a; sources are few, chains short */
    for (int i = 0; i < 16; i++)
        h = (h ^ a->b[i]) * 16777619u;
    return h & (ACL_FQ_BUCKETS - 1);
}

static struct acl_fq_source *find(struct acl_fq *q, const struct acl_fq_addr *a)
{
    for (struct acl_fq_source *s = q->bucket[bucket_of(a)]; s; s = s->hnext)
        if (!memcmp(s->addr.b, a->b, sizeof(a->b)))
            return s;
    return NULL;
}

/* A new source joins the ring just before the cursor: it is served at the
 * end of the current round, after everyone already waiting. */
static struct acl_fq_source *source_new(struct acl_fq *q, const struct acl_fq_addr *a)
{
    struct acl_fq_source *s = q->free;
    assert(s); /* sources <= queued < ACL_FQ_MAX */
    q->free = s->hnext;
    memset(s, 0, sizeof(*s));
    s->addr = *a;
    uint32_t b = bucket_of(a);
    s->hnext = q->bucket[b];
    q->bucket[b] = s;
    if (!q->cursor) {
        s->ring_next = s->ring_prev = s;
        q->cursor = s;
    } else {
        s->ring_next = q->cursor;
        s->ring_prev = q->cursor->ring_prev;
        s->ring_prev->ring_next = s;
        q->cursor->ring_prev = s;
    }
    q->sources++;
    return s;
}

static void source_free(struct acl_fq *q, struct acl_fq_source *s)
{
    assert(!s->queued && list_empty(&s->items));
    struct acl_fq_source **pp = &q->bucket[bucket_of(&s->addr)];
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    if (s->ring_next == s) {
        q->cursor = NULL;
    } else {
        s->ring_prev->ring_next = s->ring_next;
        s->ring_next->ring_prev = s->ring_prev;
        if (q->cursor == s)
            q->cursor = s->ring_next;
    }
    s->hnext = q->free;
    q->free = s;
    q->sources--;
}

static void unlink_item(struct acl_fq *q, struct acl_fq_item *it)
{
    struct acl_fq_source *s = it->src;
    list_remove(&it->node);
    s->queued--;
    q->queued--;
    if (!s->queued)
        source_free(q, s);
}

static struct acl_fq_source *longest(const struct acl_fq *q)
{
    struct acl_fq_source *best = q->cursor, *s = q->cursor;
    if (!s)
        return NULL;
    do {
        if (s->queued > best->queued)
            best = s;
        s = s->ring_next;
    } while (s != q->cursor);
    return best;
}

struct acl_fq_item *acl_fq_push(struct acl_fq *q, const struct acl_fq_addr *addr, struct acl_fq_item *it)
{
    struct acl_fq_item *out = NULL;
    struct acl_fq_source *s = find(q, addr);
    if (q->queued >= ACL_FQ_MAX) {
        struct acl_fq_source *victim = longest(q);
        uint32_t mine = s ? s->queued : 0;
        if (mine + 1 >= victim->queued)
            return it; /* the newcomer's source would be (one of) the longest */
        out = container_of(list_last(&victim->items), struct acl_fq_item, node);
        unlink_item(q, out); /* the victim keeps more than s: neither is freed */
    }
    if (!s)
        s = source_new(q, addr);
    it->src = s;
    list_push_back(&s->items, &it->node);
    s->queued++;
    q->queued++;
    assert(q->queued <= ACL_FQ_MAX);
    return out;
}

struct acl_fq_item *acl_fq_pop(struct acl_fq *q)
{
    struct acl_fq_source *s = q->cursor;
    if (!s)
        return NULL;
    struct acl_fq_item *it = list_entry(list_first(&s->items), struct acl_fq_item, node);
    assert(it);
    q->cursor = s->ring_next; /* next round's turn goes to the next source */
    unlink_item(q, it);       /* frees s when it was its last */
    return it;
}

uint32_t acl_fq_remove_if(struct acl_fq *q, bool (*drop)(const struct acl_fq_item *, void *), void *ctx,
                          struct list_node *out)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < ACL_FQ_MAX; i++) {
        struct acl_fq_source *s = &q->pool[i];
        /* A slot is in use while it has checks; a free one has none. */
        struct list_node *pos, *next;
        if (!s->queued)
            continue;
        list_for_each_safe(pos, next, &s->items) {
            struct acl_fq_item *it = container_of(pos, struct acl_fq_item, node);
            if (!drop(it, ctx))
                continue;
            bool last = s->queued == 1;
            unlink_item(q, it);
            list_push_back(out, &it->node);
            n++;
            if (last)
                break; /* s went back to the free list */
        }
    }
    return n;
}
