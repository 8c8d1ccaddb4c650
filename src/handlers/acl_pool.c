/*
 * Password checks too costly for the loop ($7$ entries with many PBKDF2
 * iterations: 10000 take ~4.5 ms) run on a few threads of their own.  The
 * CONNECT's verdict is pending meanwhile, so the worker goes on serving
 * everyone else; the answer comes back to the session's loop through an
 * eventfd per loop (in a loop slot), where the callback resumes the session.
 *
 * Fair and bounded: checks wait in acl_fq.c's queues, one per source
 * address, served round-robin, at most ACL_FQ_MAX in all; when it is full
 * the source that waits for the most gives up its newest check (refused as
 * busy).  A flood from a few addresses therefore delays everyone else by
 * about one round, and never has them refused.
 *
 * An unknown user's check (its answer is known: refused) is not computed
 * but slept: the thread holds its turn for as long as a real check of that
 * cost takes now (a recent real check's time per iteration, picked at
 * random so the spread matches), so queueing and answer times are what
 * they would be, and a flood of unknown names costs no CPU.  Calibration
 * comes from the real checks; when it is missing or older than
 * ACL_CALIBRATION_MAX_AGE_MS the check is computed for real, which renews it.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "core/log.h"
#include "core/loop.h"
#include "handlers/acl.h"

#define MAX_THREADS 4

struct waker;

struct job {
    struct acl_fq_item q; /* while queued */
    struct job *next;     /* in its waker's done list */
    struct waker *w;
    struct acl_check c; /* c.pw and c.password point into the job */
    struct acl_password pw;
    enum acl_check_result result;
    uint8_t password[]; /* cleansed before it is freed */
};

/* One per worker loop: where finished jobs wait for their loop. */
struct waker {
    struct loop *loop;
    struct loop_io io;
    struct job *done; /* under pool.lock */
    unsigned running; /* jobs of this loop on a pool thread, under pool.lock */
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work, idle;
    struct acl_fq fq;
    bool fq_ready;
    pthread_t threads[MAX_THREADS];
    unsigned nthreads, running;
    bool stopping;
    /* Real checks' nanoseconds per 1024 iterations, newest at [next - 1]. */
    uint64_t ns_per_kiter[ACL_CALIBRATION_SAMPLES];
    unsigned samples, next;
    uint64_t calibrated_ms; /* when the newest sample was taken */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER};

static struct job *job_of(struct acl_fq_item *it) { return (struct job *)((char *)it - offsetof(struct job, q)); }

static void job_free(struct job *j)
{
    OPENSSL_cleanse(j->password, j->c.len);
    OPENSSL_cleanse(&j->c.key, sizeof(j->c.key));
    free(j);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Under pool.lock: a real check of `iterations` took ns. */
static void calibrate_locked(uint32_t iterations, uint64_t ns, uint64_t at_ns)
{
    pool.ns_per_kiter[pool.next] = ns * 1024 / iterations;
    pool.next = (pool.next + 1) % ACL_CALIBRATION_SAMPLES;
    if (pool.samples < ACL_CALIBRATION_SAMPLES)
        pool.samples++;
    pool.calibrated_ms = at_ns / 1000000u;
}

/* Under pool.lock: how long a real check of `iterations` takes now, or 0
 * when that is not known well enough (or too short to sleep for). */
static uint64_t estimate_locked(uint32_t iterations, uint64_t at_ns)
{
    if (pool.samples < ACL_CALIBRATION_MIN_SAMPLES || at_ns / 1000000u > pool.calibrated_ms + ACL_CALIBRATION_MAX_AGE_MS)
        return 0;
    uint32_t pick = 0;
    if (getrandom(&pick, sizeof(pick), GRND_NONBLOCK) != sizeof(pick))
        pick = (uint32_t)at_ns;
    uint64_t ns = pool.ns_per_kiter[pick % pool.samples] * iterations / 1024;
    return ns >= ACL_SIMULATE_MIN_NS ? ns : 0;
}

/* On a pool thread, without the lock: the check, computed or slept. */
static void run(struct job *j)
{
    uint64_t t0 = now_ns();
    pthread_mutex_lock(&pool.lock);
    uint64_t sleep_ns = j->c.simulate ? estimate_locked(j->pw.iterations, t0) : 0;
    pthread_mutex_unlock(&pool.lock);
    if (sleep_ns) {
        uint64_t until = t0 + sleep_ns;
        struct timespec ts = {(time_t)(until / 1000000000u), (long)(until % 1000000000u)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
        } /* EINTR: sleep on to the same deadline */
        j->result = ACL_CHECK_FAIL;
        return;
    }
    bool ok = acl_password_verify(&j->pw, j->password, j->c.len);
    uint64_t t1 = now_ns();
    j->result = ok && !j->c.simulate ? ACL_CHECK_OK : ACL_CHECK_FAIL;
    pthread_mutex_lock(&pool.lock);
    if (j->pw.kind == ACL_HASH_PBKDF2_SHA512 && j->pw.iterations)
        calibrate_locked(j->pw.iterations, t1 - t0, t1);
    pthread_mutex_unlock(&pool.lock);
}

/* Under pool.lock: j is over; its loop hands it to its session. */
static void finish_locked(struct job *j, enum acl_check_result r)
{
    struct waker *w = j->w;
    j->result = r;
    j->next = w->done;
    w->done = j;
    uint64_t one = 1;
    if (write(w->io.fd, &one, sizeof(one)) < 0) { /* a full eventfd counter is still readable */
    }
}

static void *pool_main(void *arg)
{
    (void)arg;
    /* Sleeps stand for real checks: wake on time, not up to 50 us late. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        struct acl_fq_item *it = NULL;
        while (!pool.stopping && !(it = acl_fq_pop(&pool.fq)))
            pthread_cond_wait(&pool.work, &pool.lock);
        if (pool.stopping)
            break; /* what is still queued is dropped by waker_destroy */
        struct job *j = job_of(it);
        j->w->running++;
        pool.running++;
        pthread_mutex_unlock(&pool.lock);
        run(j);
        pthread_mutex_lock(&pool.lock);
        j->w->running--;
        pool.running--;
        finish_locked(j, j->result);
        pthread_cond_broadcast(&pool.idle);
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

/* On the loop: hand the finished jobs to their sessions. */
static void on_done(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)l;
    (void)events;
    struct waker *w = (struct waker *)((char *)io - offsetof(struct waker, io));
    uint64_t n;
    if (read(io->fd, &n, sizeof(n)) < 0) { /* EAGAIN: another turn took it */
    }
    pthread_mutex_lock(&pool.lock);
    struct job *list = w->done;
    w->done = NULL;
    pthread_mutex_unlock(&pool.lock);
    while (list) {
        struct job *j = list;
        list = j->next;
        j->c.done(&j->c, j->result);
        job_free(j);
    }
}

static const char waker_key; /* of the loop slot; only its address matters */

static void waker_destroy(struct loop *l, void *value);

/* The acl's per-loop state uses no other layer's, so where it stands in
 * the order of the loop's slots does not matter. */
static struct waker *waker_get(struct loop *l)
{
    struct waker *w = loop_slot_get(l, &waker_key);
    if (w)
        return w;
    if (!(w = calloc(1, sizeof(*w))))
        return NULL;
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0 || loop_io_add(l, &w->io, fd, EPOLLIN, on_done) < 0) {
        if (fd >= 0)
            close(fd);
        free(w);
        return NULL;
    }
    if (loop_slot_set(l, &waker_key, w, waker_destroy) < 0) {
        loop_io_del(l, &w->io);
        close(fd);
        free(w);
        return NULL;
    }
    w->loop = l;
    return w;
}

/* Under pool.lock: one more thread while there are fewer than CPUs (at most
 * MAX_THREADS) and more checks than threads.  Threads made from a worker
 * inherit its blocked signals. */
static void grow_locked(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned want = cpus < 1 ? 1 : cpus > MAX_THREADS ? MAX_THREADS : (unsigned)cpus;
    if (pool.nthreads >= want || pool.nthreads >= pool.fq.queued + pool.running)
        return;
    if (pthread_create(&pool.threads[pool.nthreads], NULL, pool_main, NULL) == 0)
        pool.nthreads++;
    else if (!pool.nthreads)
        log_msgf(LOGL_ERROR, "acl: cannot start a password-check thread");
}

static struct job *job_new(struct waker *w, const struct acl_check *c)
{
    struct job *j = malloc(sizeof(*j) + c->len);
    if (!j)
        return NULL;
    *j = (struct job){.w = w, .c = *c, .pw = *c->pw};
    if (c->len)
        memcpy(j->password, c->password, c->len);
    j->c.pw = &j->pw;
    j->c.password = j->password;
    return j;
}

static bool is_item(const struct acl_fq_item *it, void *ctx) { return it == ctx; }

int acl_pool_verify(struct loop *l, const struct acl_check *c)
{
    struct waker *w = waker_get(l);
    struct job *j = w ? job_new(w, c) : NULL;
    if (!j)
        return -1;
    pthread_mutex_lock(&pool.lock);
    if (!pool.fq_ready) {
        acl_fq_init(&pool.fq);
        pool.fq_ready = true;
    }
    struct acl_fq_item *out = pool.stopping ? &j->q : acl_fq_push(&pool.fq, &c->source, &j->q);
    bool queued = out != &j->q;
    if (out && queued) /* another source's newest check made room: refused as busy on its loop */
        finish_locked(job_of(out), ACL_CHECK_BUSY);
    if (queued) {
        grow_locked();
        if (pool.nthreads)
            pthread_cond_signal(&pool.work);
        else { /* no thread at all: take the job back */
            struct list_node back = {0};
            queued = !acl_fq_remove_if(&pool.fq, is_item, &j->q, &back);
        }
    }
    pthread_mutex_unlock(&pool.lock);
    if (!queued)
        job_free(j);
    return queued ? 0 : -1;
}

static bool of_waker(const struct acl_fq_item *it, void *ctx)
{
    return ((const struct job *)((const char *)it - offsetof(struct job, q)))->w == ctx;
}

/* The slot's destructor (after loop_run has returned). */
static void waker_destroy(struct loop *l, void *value)
{
    struct waker *w = value;
    pthread_mutex_lock(&pool.lock);
    /* Queued jobs of this loop go; running ones are waited for (a few ms). */
    struct list_node queued = {0};
    if (pool.fq_ready)
        acl_fq_remove_if(&pool.fq, of_waker, w, &queued);
    while (w->running)
        pthread_cond_wait(&pool.idle, &pool.lock);
    struct job *drop = w->done;
    w->done = NULL;
    pthread_mutex_unlock(&pool.lock);
    struct list_node *it;
    while ((it = list_pop_front(&queued))) {
        struct job *j = job_of(container_of(it, struct acl_fq_item, node));
        j->result = ACL_CHECK_BUSY; /* never made */
        j->next = drop;
        drop = j;
    }
    /* The loop no longer runs: each check is answered (made ones with their
     * result, queued ones busy), so its session, which the pending answer
     * keeps, is released by the deferred calls loop_free runs after the
     * slots (a check just dropped would keep it for ever). */
    unsigned n = 0;
    while (drop) {
        struct job *j = drop;
        drop = j->next;
        j->c.done(&j->c, j->result);
        job_free(j);
        n++;
    }
    if (n)
        log_msgf(LOGL_WARN, "acl: %u password checks answered at shutdown (the queued ones as busy)", n);
    loop_io_del(l, &w->io);
    close(w->io.fd);
    free(w);
}

void acl_pool_stop(void)
{
    pthread_mutex_lock(&pool.lock);
    pool.stopping = true;
    pthread_cond_broadcast(&pool.work);
    pthread_mutex_unlock(&pool.lock);
    for (unsigned i = 0; i < pool.nthreads; i++)
        pthread_join(pool.threads[i], NULL);
    pthread_mutex_lock(&pool.lock);
    pool.nthreads = 0;
    pool.stopping = false;
    pthread_mutex_unlock(&pool.lock);
}
