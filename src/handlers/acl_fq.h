/*
 * Fair queueing of password checks by source address (acl_fq.c): pure
 * logic, no threads, no allocation (the caller holds a lock around it).
 *
 * Each source address with checks waiting has its own FIFO; sources are
 * served round-robin, one check each per round, so one address that sends
 * hundreds of CONNECTs gets one check in N (N: addresses waiting) and
 * everyone else waits for at most one round, not behind the whole flood.
 *
 * The queue holds at most ACL_FQ_MAX checks in all.  When it is full, the
 * newcomer takes the place of the newest check of the longest queue (that
 * check is handed back to be refused as "server busy"), unless the
 * newcomer's own source has the longest queue: then the newcomer is refused.
 * So a flood can only push out its own checks, never those of an address
 * that waits for fewer.
 */
#ifndef MGATE_HANDLERS_ACL_FQ_H
#define MGATE_HANDLERS_ACL_FQ_H

#include <stdbool.h>
#include <stdint.h>

#include "core/list.h"

/* Checks waiting at once (not counting the ones running); the bound that
 * acl_pool.c had before fair queueing. */
#define ACL_FQ_MAX 256u
#define ACL_FQ_BUCKETS 64u /* hash chains of sources; a power of two */

/* A source: an IPv4 address, or an IPv6 /64 (one host usually has all of
 * its /64, so a finer key would give it as many queues as it likes).
 * IPv4-mapped IPv6 addresses are keyed as the IPv4 address. */
struct acl_fq_addr {
    uint8_t b[16];
};

struct acl_fq_source;

/* Embedded in what is queued. */
struct acl_fq_item {
    struct list_node node; /* in its source's FIFO; zeroed while not queued */
    struct acl_fq_source *src;
};

struct acl_fq_source {
    struct acl_fq_addr addr;
    struct list_node items; /* oldest first */
    uint32_t queued;
    struct acl_fq_source *ring_next, *ring_prev; /* sources with checks waiting */
    struct acl_fq_source *hnext;                 /* hash chain; free list when unused */
};

struct acl_fq {
    struct acl_fq_source *bucket[ACL_FQ_BUCKETS];
    struct acl_fq_source *cursor; /* the next source to serve; NULL when empty */
    struct acl_fq_source *free;
    uint32_t queued, sources;
    /* At most one source per queued check, so ACL_FQ_MAX of them suffice. */
    struct acl_fq_source pool[ACL_FQ_MAX];
};

void acl_fq_init(struct acl_fq *q);

/* The key of a peer as mgate_session_peer() writes it ("1.2.3.4:5",
 * "[::1]:5"); anything else (a Unix socket) is the all-zero key. */
struct acl_fq_addr acl_fq_addr_of(const char *peer);

/* Queue it from addr.  Returns NULL when it is queued and nothing was
 * pushed out; otherwise the check to refuse as busy: `it` itself (not
 * queued), or another source's newest check that was taken out for it. */
struct acl_fq_item *acl_fq_push(struct acl_fq *q, const struct acl_fq_addr *addr, struct acl_fq_item *it);

/* The next check to run (round-robin over sources), or NULL. */
struct acl_fq_item *acl_fq_pop(struct acl_fq *q);

/* Take out every queued check for which drop(it, ctx) is true and put them
 * on `out` (a list of acl_fq_item.node); returns how many. */
uint32_t acl_fq_remove_if(struct acl_fq *q, bool (*drop)(const struct acl_fq_item *, void *), void *ctx,
                          struct list_node *out);

#endif
