/*
 * The `jwt` handler's key set (jwt_handler.h): the files, read on the
 * control thread, and MGATE_JWT_JWKS_URL, fetched on the worker loops.
 *
 * Fetching never blocks a loop and never happens at start: mgate must come
 * up while the identity provider is down.  A fetch starts from a loop when
 * a token names a kid the set lacks, or when the set is stale (older than
 * its max-age, or no URL set was fetched yet), and only when the process-
 * wide floor allows: one fetch per MGATE_JWT_JWKS_MIN_INTERVAL, whichever
 * worker wins the compare-and-swap.  That bounds what a flood of made-up
 * kids can cost the identity provider.  A failed fetch or a bad document
 * keeps the old set.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/util.h"
#include "handlers/jwt_handler.h"
#include "handlers/swap.h"
#include "net/fetch.h"

#define JWKS_MAX_DOC (1024u * 1024u)
#define JWKS_MAX_TTL_MS 86400000u /* a max-age is honoured up to a day */

enum fetch_kind { FETCH_OK, FETCH_ERROR, FETCH_INVALID };

static void set_free(void *obj)
{
    struct jwt_set *set = obj;
    jwt_keyset_free(&set->ks);
    free(set);
}

static struct swap sets = SWAP_INIT(set_free);
static _Thread_local struct swap_local mine;

/* What sets are built from; under lock (the control thread's SIGHUP and a
 * worker's finished fetch may build at the same time). */
static struct {
    pthread_mutex_t lock;
    struct jwt_keyset files; /* never installed itself: sets hold copies */
    uint8_t *doc;            /* the last good JWKS from the URL */
    size_t doc_len;
    uint64_t refresh_at;     /* of the set built from doc */
} src = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct {
    char *url, *ca_file, *jwks_file, *pem_file, *secret_file;
    uint32_t refresh_ms, min_interval_ms, timeout_ms;
} cfg;

static _Atomic uint64_t next_fetch; /* monotonic ms: the floor */
static _Atomic unsigned in_flight;
static _Atomic unsigned key_count;
static _Atomic uint64_t next_warn[3]; /* per enum fetch_kind: one line per MIN_INTERVAL */

/* ---- pure parts ------------------------------------------------------- */

bool jwks_floor_take(_Atomic uint64_t *next_allowed, uint64_t now_ms, uint32_t min_interval_ms)
{
    uint64_t n = atomic_load_explicit(next_allowed, memory_order_relaxed);
    if (now_ms < n)
        return false;
    /* Losing the race means another thread took this turn. */
    return atomic_compare_exchange_strong(next_allowed, &n, now_ms + min_interval_ms);
}

uint32_t jwks_ttl_ms(long max_age, uint32_t refresh_ms, uint32_t min_interval_ms)
{
    if (max_age < 0)
        return refresh_ms;
    uint64_t ms = (uint64_t)max_age * 1000u;
    if (ms < min_interval_ms)
        ms = min_interval_ms;
    return ms > JWKS_MAX_TTL_MS ? JWKS_MAX_TTL_MS : (uint32_t)ms;
}

bool jwks_wait_over(uint64_t gen_then, uint64_t gen_now, bool flying, uint64_t now_ms, uint64_t deadline_ms)
{
    return gen_now != gen_then || !flying || now_ms >= deadline_ms;
}

/* ---- building sets ------------------------------------------------------ */

static int key_copy(struct jwt_key *to, const struct jwt_key *from)
{
    *to = *from;
    /* jwt_keyset_free frees a secret with OPENSSL_clear_free */
    to->secret = from->secret ? OPENSSL_memdup(from->secret, from->secret_len ? from->secret_len : 1) : NULL;
    if (from->secret && !to->secret)
        return -1;
    if (to->pkey && EVP_PKEY_up_ref(to->pkey) != 1) {
        OPENSSL_clear_free(to->secret, to->secret_len);
        return -1;
    }
    return 0;
}

static bool has_kid(const struct jwt_keyset *ks, const struct jwt_key *k)
{
    for (unsigned i = 0; k->has_kid && i < ks->n; i++)
        if (ks->v[i].has_kid && strcmp(ks->v[i].kid, k->kid) == 0)
            return true;
    return false;
}

/* from's keys appended to ks, sharing their public keys; one whose kid ks
 * already has is left out (a file key wins over the URL's), counted in
 * *dups.  -1 when out of memory (ks keeps what it had). */
static int keyset_add_copies(struct jwt_keyset *ks, const struct jwt_keyset *from, unsigned *dups)
{
    if (!from->n)
        return 0;
    struct jwt_key *v = realloc(ks->v, (ks->n + from->n) * sizeof(*v));
    if (!v)
        return -1;
    ks->v = v;
    for (unsigned i = 0; i < from->n; i++) {
        if (has_kid(ks, &from->v[i])) {
            ++*dups;
            continue;
        }
        if (key_copy(&ks->v[ks->n], &from->v[i]) < 0)
            return -1;
        ks->n++;
    }
    return 0;
}

/* The URL's document: its keys after the file ones; -1 with why in err. */
static int add_doc(struct jwt_keyset *ks, const uint8_t *doc, size_t len, char *err, size_t errlen)
{
    struct jwt_keyset got = {0};
    unsigned skipped = 0, dups = 0;
    char fault[200];
    if (jwt_jwks_parse(doc, len, &got, &skipped, fault, sizeof(fault)) < 0) {
        snprintf(err, errlen, "%s", fault);
        return -1;
    }
    int rc = keyset_add_copies(ks, &got, &dups);
    if (rc < 0)
        snprintf(err, errlen, "out of memory");
    else if (!got.n) /* a revocation is a valid answer: every key it held is gone */
        log_msgf(LOGL_WARN, "jwt: %s has no usable key (%u skipped%s%s): tokens are checked with the file keys only",
                 cfg.url, skipped, *fault ? "; first fault: " : "", fault);
    else if (skipped || dups)
        log_msgf(LOGL_INFO, "jwt: %s: %u keys skipped (malformed, not for signatures, or of a kind mgate does "
                 "not use%s%s), %u left out for a kid a file key has", cfg.url, skipped,
                 *fault ? "; first fault: " : "", fault, dups);
    jwt_keyset_free(&got);
    return rc;
}

/* A new set: the file keys plus doc (NULL: none); under src.lock.  NULL
 * with why in err. */
static struct jwt_set *set_build(const uint8_t *doc, size_t len, char *err, size_t errlen)
{
    struct jwt_set *set = calloc(1, sizeof(*set));
    unsigned dups = 0;
    if (!set || keyset_add_copies(&set->ks, &src.files, &dups) < 0) {
        if (set)
            set_free(set);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ASSERT(!dups); /* the files loaded into one set, which refuses two keys with one kid */
    if (doc && add_doc(&set->ks, doc, len, err, errlen) < 0) {
        set_free(set);
        return NULL;
    }
    set->fetched = doc != NULL;
    set->refresh_at = !*cfg.url ? 0 : doc ? src.refresh_at : 1; /* 1: long past, fetch soon */
    return set;
}

static int set_install(struct jwt_set *set)
{
    if (swap_install(&sets, set) < 0) {
        set_free(set);
        return -1;
    }
    atomic_store(&key_count, set->ks.n);
    return 0;
}

/* ---- the files ------------------------------------------------------------ */

static int read_whole(const char *path, uint8_t **out, size_t *len, char *why, size_t whylen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, whylen, "%s: %s", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = malloc(JWKS_MAX_DOC + 1);
    size_t n = buf ? fread(buf, 1, JWKS_MAX_DOC + 1, f) : 0;
    bool bad = !buf || ferror(f) || n > JWKS_MAX_DOC;
    fclose(f);
    if (bad) {
        free(buf);
        snprintf(why, whylen, "%s: %s", path, !buf ? "out of memory" : n > JWKS_MAX_DOC ? "larger than 1 MiB"
                                                                                        : "cannot be read");
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

static int load_jwks_file(struct jwt_keyset *ks, char *why, size_t whylen)
{
    uint8_t *doc;
    size_t len;
    unsigned skipped = 0;
    if (read_whole(cfg.jwks_file, &doc, &len, why, whylen) < 0)
        return -1;
    char reason[256];
    unsigned before = ks->n;
    int rc = jwt_jwks_parse(doc, len, ks, &skipped, reason, sizeof(reason));
    free(doc);
    if (rc < 0)
        snprintf(why, whylen, "%s: %s", cfg.jwks_file, reason);
    else if (ks->n == before) { /* an operator's file with nothing usable is a mistake, not a revocation */
        snprintf(why, whylen, "%s: no usable key (%u skipped%s%s)", cfg.jwks_file, skipped,
                 *reason ? "; first fault: " : "", reason);
        rc = -1;
    } else if (*reason)
        log_msgf(LOGL_WARN, "jwt: %s: %u keys skipped; first fault: %s", cfg.jwks_file, skipped, reason);
    return rc;
}

/* Every file into ks (empty); -1 with "MGATE_JWT_X: why". */
static int load_files(struct jwt_keyset *ks, char *err, size_t errlen)
{
    char why[512];
    const char *var = NULL;
    if (*cfg.jwks_file && load_jwks_file(ks, why, sizeof(why)) < 0)
        var = "MGATE_JWT_JWKS_FILE";
    else if (*cfg.pem_file && jwt_pem_load(cfg.pem_file, ks, why, sizeof(why)) < 0)
        var = "MGATE_JWT_PUBLIC_KEY_FILE";
    else if (*cfg.secret_file && jwt_secret_load(cfg.secret_file, ks, why, sizeof(why)) < 0)
        var = "MGATE_JWT_SECRET_FILE";
    if (!var)
        return 0;
    jwt_keyset_free(ks);
    snprintf(err, errlen, "%s: %s", var, why);
    return -1;
}

/* New files: a set from them and the last document, installed; under
 * src.lock.  On failure nothing changes. */
static int files_replace(struct jwt_keyset *files, char *err, size_t errlen)
{
    struct jwt_keyset old = src.files;
    src.files = *files;
    struct jwt_set *set = set_build(src.doc, src.doc_len, err, errlen);
    if (!set || set_install(set) < 0) {
        src.files = old;
        if (set)
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    jwt_keyset_free(&old);
    return 0;
}

/* ---- fetching, on the worker loops ------------------------------------------ */

static const char jwks_key; /* of the loop slot; only its address matters */

/* Per loop: its fetch in flight, if any, and its waiting CONNECTs. */
struct jwks_loop {
    struct loop *loop;
    struct fetch *f;
    struct list_node waits;
};

static const char *const kind_names[] = {"ok", "error", "invalid"};

/* At most one line per kind of failure per MIN_INTERVAL, process-wide: an
 * identity provider that is down must not fill the log.  Never a token. */
static void fetch_warn(enum fetch_kind k, uint64_t now, const char *why)
{
    if (!jwks_floor_take(&next_warn[k], now, cfg.min_interval_ms))
        return;
    log_msgf(LOGL_WARN, "jwt: JWKS fetch from %s: %s: %s; keeping the previous keys", cfg.url, kind_names[k], why);
}

/* A good document: a new set from it and the file keys. */
static enum fetch_kind fetched(const struct fetch_result *r, uint64_t now, char *why, size_t whylen)
{
    uint8_t *doc = malloc(r->len ? r->len : 1);
    if (!doc) {
        snprintf(why, whylen, "out of memory");
        return FETCH_ERROR;
    }
    memcpy(doc, r->body, r->len);
    pthread_mutex_lock(&src.lock);
    uint64_t old_refresh = src.refresh_at;
    src.refresh_at = now + jwks_ttl_ms(r->max_age, cfg.refresh_ms, cfg.min_interval_ms);
    struct jwt_set *set = set_build(doc, r->len, why, whylen);
    bool ok = set && set_install(set) == 0;
    if (ok) {
        free(src.doc);
        src.doc = doc;
        src.doc_len = r->len;
    } else {
        src.refresh_at = old_refresh;
        free(doc);
    }
    unsigned n = ok ? set->ks.n : 0;
    pthread_mutex_unlock(&src.lock);
    if (ok)
        log_msgf(LOGL_INFO, "jwt: JWKS fetched from %s: %u keys in the set", cfg.url, n);
    return ok ? FETCH_OK : FETCH_INVALID;
}

static void on_fetched(void *ctx, const struct fetch_result *r)
{
    struct jwks_loop *jl = ctx;
    jl->f = NULL;
    uint64_t now = loop_now(jl->loop);
    char why[300];
    enum fetch_kind k = FETCH_ERROR;
    if (r->error)
        snprintf(why, sizeof(why), "%s", r->error);
    else if (r->status != 200)
        snprintf(why, sizeof(why), "HTTP status %d", r->status);
    else
        k = fetched(r, now, why, sizeof(why));
    METRIC_INC(loop_metrics(jl->loop)->jwt_jwks_fetches[k]);
    if (k != FETCH_OK)
        fetch_warn(k, now, why);
    /* After the install: a waiting CONNECT sees the new generation first. */
    atomic_fetch_sub(&in_flight, 1);
}

static void jwks_loop_destroy(struct loop *l, void *value)
{
    struct jwks_loop *jl = value;
    if (jl->f) {
        fetch_cancel(jl->f);
        atomic_fetch_sub(&in_flight, 1); /* other workers' CONNECTs stop waiting */
    }
    /* The loop no longer runs: answered now, so their sessions are freed. */
    for (struct list_node *n; (n = list_pop_front(&jl->waits));) {
        struct jwks_wait *w = container_of(n, struct jwks_wait, node);
        loop_timer_stop(l, &w->t);
        w->done(w, true);
    }
    free(jl);
}

/* The fetcher's slot first, so this one is freed before it (loop.h). */
static struct jwks_loop *jwks_loop_get(struct loop *l)
{
    struct jwks_loop *jl = loop_slot_get(l, &jwks_key);
    if (jl)
        return jl;
    if (fetch_loop_prepare(l) < 0 || !(jl = calloc(1, sizeof(*jl))))
        return NULL;
    if (loop_slot_set(l, &jwks_key, jl, jwks_loop_destroy) < 0) {
        free(jl);
        return NULL;
    }
    jl->loop = l;
    list_init(&jl->waits);
    return jl;
}

static void wait_tick(struct loop *l, struct loop_timer *t)
{
    struct jwks_wait *w = container_of(t, struct jwks_wait, t);
    if (!jwks_wait_over(w->generation, jwks_generation(), jwks_in_flight(), loop_now(l), w->deadline)) {
        loop_timer_start(l, t, JWKS_WAIT_TICK_MS, wait_tick);
        return;
    }
    list_remove(&w->node);
    w->done(w, false);
}

int jwks_wait(struct loop *l, struct jwks_wait *w, uint64_t generation, uint32_t timeout_ms,
              void (*done)(struct jwks_wait *w, bool shutdown))
{
    struct jwks_loop *jl = jwks_loop_get(l);
    if (!jl)
        return -1;
    *w = (struct jwks_wait){.generation = generation, .deadline = loop_now(l) + timeout_ms, .done = done};
    list_push_back(&jl->waits, &w->node);
    loop_timer_start(l, &w->t, JWKS_WAIT_TICK_MS, wait_tick);
    return 0;
}

/* Start a fetch on l if this loop has none and the floor allows. */
static bool fetch_maybe(struct loop *l)
{
    struct jwks_loop *jl = jwks_loop_get(l);
    if (!jl || jl->f || !jwks_floor_take(&next_fetch, loop_now(l), cfg.min_interval_ms))
        return false;
    struct fetch_request fr = {.url = cfg.url, .accept = "application/json, application/jwk-set+json",
                               .timeout_ms = cfg.timeout_ms, .max_body = JWKS_MAX_DOC, .want_max_age = true,
                               .ca_file = *cfg.ca_file ? cfg.ca_file : NULL};
    atomic_fetch_add(&in_flight, 1);
    if (!(jl->f = fetch_start(l, &fr, on_fetched, jl))) {
        atomic_fetch_sub(&in_flight, 1);
        fetch_warn(FETCH_ERROR, loop_now(l), "cannot start a request (out of memory)");
        return false;
    }
    return true;
}

bool jwks_unknown_kid(struct loop *l)
{
    if (!*cfg.url)
        return false;
    fetch_maybe(l);
    return jwks_in_flight();
}

void jwks_maybe_refresh(struct loop *l, const struct jwt_set *set)
{
    if (*cfg.url && (!set->fetched || loop_now(l) >= set->refresh_at) && !jwks_in_flight())
        fetch_maybe(l);
}

/* ---- the rest of the interface ----------------------------------------------- */

const struct jwt_set *jwks_current(void) { return swap_get(&sets, &mine); }
uint64_t jwks_generation(void) { return atomic_load_explicit(&sets.generation, memory_order_acquire); }
bool jwks_in_flight(void) { return atomic_load(&in_flight) > 0; }
unsigned jwks_key_count(void) { return atomic_load(&key_count); }

static void cfg_free(void)
{
    free(cfg.url);
    free(cfg.ca_file);
    free(cfg.jwks_file);
    free(cfg.pem_file);
    free(cfg.secret_file);
    memset(&cfg, 0, sizeof(cfg));
}

static int cfg_copy(const struct jwks_config *c)
{
    cfg_free();
    cfg.url = strdup(c->url);
    cfg.ca_file = strdup(c->ca_file);
    cfg.jwks_file = strdup(c->jwks_file);
    cfg.pem_file = strdup(c->pem_file);
    cfg.secret_file = strdup(c->secret_file);
    cfg.refresh_ms = c->refresh_ms;
    cfg.min_interval_ms = c->min_interval_ms;
    cfg.timeout_ms = c->timeout_ms;
    return cfg.url && cfg.ca_file && cfg.jwks_file && cfg.pem_file && cfg.secret_file ? 0 : -1;
}

int jwks_start(const struct jwks_config *c, char *err, size_t errlen)
{
    if (cfg_copy(c) < 0) {
        snprintf(err, errlen, "jwt: out of memory");
        return -1;
    }
    struct jwt_keyset files = {0};
    if (load_files(&files, err, errlen) < 0)
        return -1;
    pthread_mutex_lock(&src.lock);
    char why[256];
    int rc = files_replace(&files, why, sizeof(why));
    pthread_mutex_unlock(&src.lock);
    if (rc < 0) {
        jwt_keyset_free(&files);
        snprintf(err, errlen, "jwt: %s", why);
    }
    return rc;
}

void jwks_reload(void)
{
    char err[600];
    struct jwt_keyset files = {0};
    if (load_files(&files, err, sizeof(err)) < 0) {
        log_msgf(LOGL_ERROR, "SIGHUP: %s; keeping the previous keys", err);
        return;
    }
    pthread_mutex_lock(&src.lock);
    int rc = files_replace(&files, err, sizeof(err));
    unsigned n = rc == 0 ? jwks_key_count() : 0;
    pthread_mutex_unlock(&src.lock);
    if (rc < 0) {
        jwt_keyset_free(&files);
        log_msgf(LOGL_ERROR, "SIGHUP: jwt: %s; keeping the previous keys", err);
        return;
    }
    log_msgf(LOGL_INFO, "SIGHUP: jwt keys reloaded: %u keys in the set", n);
}

void jwks_stop(void)
{
    pthread_mutex_lock(&src.lock);
    swap_clear(&sets, &mine);
    jwt_keyset_free(&src.files);
    free(src.doc);
    src.doc = NULL;
    src.doc_len = 0;
    src.refresh_at = 0;
    pthread_mutex_unlock(&src.lock);
    atomic_store(&next_fetch, 0);
    atomic_store(&key_count, 0);
    cfg_free();
}
