/*
 * A handler's rule set that SIGHUP replaces as a whole (acl, rewrite): one
 * immutable object, `current`, that workers read without locking.  Each
 * worker thread keeps the snapshot it last used (a `swap_local` of its own,
 * _Thread_local in the handler) with a reference on it; a reload installs a
 * new one and bumps the generation, every worker moves to the new one at
 * its next check, and the old one is freed when the last worker has left
 * it.  A check costs one atomic load when nothing changed.
 */
#ifndef MGATE_HANDLERS_SWAP_H
#define MGATE_HANDLERS_SWAP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct swap_snapshot {
    void *obj;
    unsigned refs; /* under swap.lock */
    struct swap_snapshot *next;
};

struct swap {
    pthread_mutex_t lock;
    struct swap_snapshot *current; /* holds one reference */
    struct swap_snapshot *all;     /* every snapshot still referenced */
    _Atomic uint64_t generation;
    void (*free_obj)(void *obj);
};
#define SWAP_INIT(free_fn) {.lock = PTHREAD_MUTEX_INITIALIZER, .free_obj = (free_fn)}

/* A thread's view: the snapshot it holds and the generation it was current in. */
struct swap_local {
    struct swap_snapshot *mine;
    uint64_t generation;
};

/* The newest object (never NULL once one was installed, until swap_clear). */
void *swap_get(struct swap *sw, struct swap_local *tl);
/* Make obj the current one; 0, or -1 when out of memory (obj is not taken). */
int swap_install(struct swap *sw, void *obj);
/* Free every snapshot, after the threads that held them are gone; tl, the
 * caller's own view, is forgotten too. */
void swap_clear(struct swap *sw, struct swap_local *tl);

#endif
