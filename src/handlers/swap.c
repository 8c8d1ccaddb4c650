/* Rule sets replaced as a whole, read by workers without locking (swap.h). */
#include <stdlib.h>

#include "handlers/swap.h"

static void unref_locked(struct swap *sw, struct swap_snapshot *sn)
{
    if (--sn->refs)
        return;
    struct swap_snapshot **pp = &sw->all;
    while (*pp != sn)
        pp = &(*pp)->next;
    *pp = sn->next;
    sw->free_obj(sn->obj);
    free(sn);
}

void *swap_get(struct swap *sw, struct swap_local *tl)
{
    uint64_t g = atomic_load_explicit(&sw->generation, memory_order_acquire);
    if (tl->mine && g == tl->generation)
        return tl->mine->obj;
    pthread_mutex_lock(&sw->lock);
    struct swap_snapshot *sn = sw->current;
    sn->refs++;
    if (tl->mine)
        unref_locked(sw, tl->mine);
    tl->generation = atomic_load_explicit(&sw->generation, memory_order_relaxed);
    pthread_mutex_unlock(&sw->lock);
    tl->mine = sn;
    return sn->obj;
}

int swap_install(struct swap *sw, void *obj)
{
    struct swap_snapshot *sn = calloc(1, sizeof(*sn));
    if (!sn)
        return -1;
    sn->obj = obj;
    sn->refs = 1;
    pthread_mutex_lock(&sw->lock);
    struct swap_snapshot *old = sw->current;
    sn->next = sw->all;
    sw->all = sn;
    sw->current = sn;
    atomic_fetch_add_explicit(&sw->generation, 1, memory_order_release);
    if (old)
        unref_locked(sw, old);
    pthread_mutex_unlock(&sw->lock);
    return 0;
}

void swap_clear(struct swap *sw, struct swap_local *tl)
{
    pthread_mutex_lock(&sw->lock);
    while (sw->all) {
        struct swap_snapshot *sn = sw->all;
        sw->all = sn->next;
        sw->free_obj(sn->obj);
        free(sn);
    }
    sw->current = NULL;
    atomic_fetch_add_explicit(&sw->generation, 1, memory_order_release);
    pthread_mutex_unlock(&sw->lock);
    tl->mine = NULL;
}
