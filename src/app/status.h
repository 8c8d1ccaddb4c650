/*
 * What the admin listener serves: /healthz, /readyz (listeners up, not
 * draining, and every broker answering a TCP connect, probed every few
 * seconds from the control loop) and /metrics (every worker's counters,
 * summed, in Prometheus' text format).
 */
#ifndef MGATE_STATUS_H
#define MGATE_STATUS_H

#include <stdbool.h>

#include "app/worker.h"
#include "config/config.h"
#include "core/buf.h"
#include "core/loop.h"

struct status;
struct status_src {
    const struct mgate_config *cfg;
    const struct session_params *params; /* [LISTENER_COUNT]: where each listener's broker is */
    struct worker *workers;
    unsigned nworkers;
    const bool *stopping;
};

struct status *status_start(struct loop *ctl, const struct status_src *src);
void status_stop(struct status *st);
/* admin_route: GET path. */
int status_route(void *ctx, const char *path, struct buf *body, const char **content_type);

#endif
