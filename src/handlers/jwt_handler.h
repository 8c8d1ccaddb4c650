/*
 * The `jwt` handler's own glue (internal): jwt.c judges tokens, jwt_jwks.c
 * owns the key set that every worker reads (swap.h: immutable, replaced as
 * a whole) and fetches MGATE_JWT_JWKS_URL on the worker loops.
 *
 * The key set is the file keys (JWKS_FILE, PUBLIC_KEY_FILE, SECRET_FILE;
 * read on the control thread at start and on SIGHUP) plus the last JWKS the
 * URL gave.  A fetch builds a new set from copies of the file keys and the
 * document; SIGHUP builds one from the new files and the last document.
 */
#ifndef MGATE_HANDLERS_JWT_HANDLER_H
#define MGATE_HANDLERS_JWT_HANDLER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/list.h"
#include "core/loop.h"
#include "handlers/jwt.h"

/* One installed key set (read-only once installed). */
struct jwt_set {
    struct jwt_keyset ks;
    bool fetched;        /* holds a JWKS the URL gave */
    uint64_t refresh_at; /* monotonic ms: from then on, refresh in the background; 0: never (no URL) */
};

struct jwks_config {
    const char *url, *ca_file;                     /* url "": none */
    const char *jwks_file, *pem_file, *secret_file; /* "": none */
    uint32_t refresh_ms, min_interval_ms, timeout_ms;
};

/* Control thread: load the files (-1 with "MGATE_JWT_X: why"), install the
 * first set (without URL keys: fetching starts on the loops, never here). */
int jwks_start(const struct jwks_config *c, char *err, size_t errlen);
/* SIGHUP: the files again; swapped in only when every one loads. */
void jwks_reload(void);
/* After the workers are gone. */
void jwks_stop(void);

/* The set this thread verifies against (one atomic load when unchanged). */
const struct jwt_set *jwks_current(void);
uint64_t jwks_generation(void);
bool jwks_in_flight(void);
/* Keys in the current set, for the gauge. */
unsigned jwks_key_count(void);

/* A token's kid is not in the set: start a fetch on l when the floor
 * allows.  True when a fetch is now in flight somewhere (wait for it),
 * false when none is and none may start (refuse at once). */
bool jwks_unknown_kid(struct loop *l);
/* The set is stale (or no URL set was fetched yet): a background fetch on l
 * when the floor allows; tokens keep being verified against set. */
void jwks_maybe_refresh(struct loop *l, const struct jwt_set *set);

/* A CONNECT waiting for a fetch (this loop's or another worker's): looked
 * at every JWKS_WAIT_TICK_MS until the set changes, no fetch is in flight
 * any more, or timeout_ms passed; then done(w, false).  When the loop goes
 * away first, done(w, true) from its slot's destructor (answer, do not
 * wait).  -1 when out of memory: done will not be called. */
#define JWKS_WAIT_TICK_MS 20u
struct jwks_wait {
    struct list_node node;
    struct loop_timer t;
    uint64_t generation, deadline;
    void (*done)(struct jwks_wait *w, bool shutdown);
};
int jwks_wait(struct loop *l, struct jwks_wait *w, uint64_t generation, uint32_t timeout_ms,
              void (*done)(struct jwks_wait *w, bool shutdown));

/* ---- pure parts (unit-tested) ---- */

/* The process-wide floor between two fetches: true (and the next allowed
 * time moved to now + min_interval) for exactly one of the threads that
 * race at a time the floor allows. */
bool jwks_floor_take(_Atomic uint64_t *next_allowed, uint64_t now_ms, uint32_t min_interval_ms);
/* How long a fetched set is fresh: the answer's max-age (seconds, -1 none)
 * within [min_interval, 1 day], else refresh_ms. */
uint32_t jwks_ttl_ms(long max_age, uint32_t refresh_ms, uint32_t min_interval_ms);
/* Whether a CONNECT waiting for another worker's fetch stops waiting. */
bool jwks_wait_over(uint64_t gen_then, uint64_t gen_now, bool in_flight, uint64_t now_ms, uint64_t deadline_ms);

#endif
