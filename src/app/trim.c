#include "app/trim.h"

#include <malloc.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/metrics.h"

#define TRIM_EVERY_MS 5000
#define TRIM_MIN_GONE 1000 /* sessions closed since the last look before a trim is worth it */

struct trim {
    struct loop_timer timer;
    struct loop *l;
    struct worker *workers;
    unsigned n;
    uint64_t closed_seen; /* sessions closed, as of the last look */
};

static void count(const struct trim *t, uint64_t *open, uint64_t *closed)
{
    *open = *closed = 0;
    for (unsigned w = 0; w < t->n; w++) {
        const struct metrics *m = loop_metrics(t->workers[w].loop);
        for (int i = 0; i < METRIC_LISTENERS; i++) {
            uint64_t c = metric_get(&m->sessions_closed[i]);
            *open += metric_get(&m->sessions_opened[i]) - c;
            *closed += c;
        }
    }
}

/* A wave went (more sessions closed since the last look than are open
 * now), not the steady coming and going of a busy listener. */
static void on_timer(struct loop *l, struct loop_timer *lt)
{
    struct trim *t = (struct trim *)lt;
    uint64_t open, closed;
    count(t, &open, &closed);
    uint64_t gone = closed - t->closed_seen;
    if (gone >= TRIM_MIN_GONE) {
        if (open < gone) {
            int gave = malloc_trim(0);
            log_msgf(LOGL_DEBUG, "memory: %llu sessions closed, %llu open: malloc_trim %s",
                     (unsigned long long)gone, (unsigned long long)open, gave ? "returned memory" : "found none");
        }
        t->closed_seen = closed;
    }
    loop_timer_start(l, &t->timer, TRIM_EVERY_MS, on_timer);
}

struct trim *trim_start(struct loop *ctl, struct worker *workers, unsigned n)
{
    struct trim *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->l = ctl;
    t->workers = workers;
    t->n = n;
    loop_timer_start(ctl, &t->timer, TRIM_EVERY_MS, on_timer);
    return t;
}

void trim_stop(struct trim *t)
{
    if (t) {
        loop_timer_stop(t->l, &t->timer);
        free(t);
    }
}
