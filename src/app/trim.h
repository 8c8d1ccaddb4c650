/*
 * Giving memory back after a wave of clients has gone: freed sessions stay
 * in the workers' malloc arenas, which glibc shrinks only from their top.
 * The control thread looks every 5 s and, when more sessions closed since
 * its last look than are open now (a wave left, not the steady churn of a
 * busy listener), calls malloc_trim(0), which returns the free pages in
 * the middle of the arenas too.  Never on a
 * worker: a trim of a large heap takes milliseconds.
 */
#ifndef MGATE_TRIM_H
#define MGATE_TRIM_H

#include "app/worker.h"
#include "core/loop.h"

struct trim;
struct trim *trim_start(struct loop *ctl, struct worker *workers, unsigned n);
void trim_stop(struct trim *t);

#endif
