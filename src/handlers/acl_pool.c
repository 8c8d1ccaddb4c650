/*
 * Password checks too costly for the loop ($7$ entries with many PBKDF2
 * iterations: 10000 take ~4.5 ms) run on a few threads of their own.  The
 * CONNECT's verdict is pending meanwhile, so the worker goes on serving
 * everyone else; the answer comes back to the session's loop through an
 * eventfd per loop (LOOP_SLOT_ACL), where the callback resumes the session.
 *
 * Bounded: at most ACL_POOL_MAX_JOBS checks queued or running, process-wide;
 * the caller refuses a CONNECT beyond that (server busy) instead of letting
 * a flood of costly logins queue without end.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "core/log.h"
#include "core/loop.h"
#include "handlers/acl.h"

#define MAX_THREADS 4

struct waker;

struct job {
    struct job *next;
    struct waker *w;
    void *s, *req;
    int tag;
    acl_verified_fn *done;
    struct acl_password pw;
    bool ok;
    size_t len;
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
    struct job *head, **tail;
    unsigned jobs; /* queued or running, for the bound */
    pthread_t threads[MAX_THREADS];
    unsigned nthreads;
    bool stopping;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER};

static void job_free(struct job *j)
{
    OPENSSL_cleanse(j->password, j->len);
    free(j);
}

static void *pool_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (!pool.head && !pool.stopping)
            pthread_cond_wait(&pool.work, &pool.lock);
        if (pool.stopping)
            break;
        struct job *j = pool.head;
        if (!(pool.head = j->next))
            pool.tail = &pool.head;
        j->w->running++;
        pthread_mutex_unlock(&pool.lock);
        j->ok = acl_password_verify(&j->pw, j->password, j->len);
        pthread_mutex_lock(&pool.lock);
        struct waker *w = j->w;
        w->running--;
        j->next = w->done;
        w->done = j;
        uint64_t one = 1;
        if (write(w->io.fd, &one, sizeof(one)) < 0) { /* a full eventfd counter is still readable */
        }
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
    for (struct job *j = list; j; j = j->next)
        pool.jobs--;
    pthread_mutex_unlock(&pool.lock);
    while (list) {
        struct job *j = list;
        list = j->next;
        j->done(j->s, j->req, j->tag, j->ok);
        job_free(j);
    }
}

static struct waker *waker_get(struct loop *l)
{
    struct waker **slot = (struct waker **)loop_slot(l, LOOP_SLOT_ACL);
    if (*slot)
        return *slot;
    struct waker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0 || loop_io_add(l, &w->io, fd, EPOLLIN, on_done) < 0) {
        if (fd >= 0)
            close(fd);
        free(w);
        return NULL;
    }
    w->loop = l;
    return *slot = w;
}

/* Under pool.lock: one more thread while there are fewer than CPUs (at most
 * MAX_THREADS).  Threads made from a worker inherit its blocked signals. */
static void grow_locked(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned want = cpus < 1 ? 1 : cpus > MAX_THREADS ? MAX_THREADS : (unsigned)cpus;
    if (pool.nthreads >= want || pool.nthreads >= pool.jobs)
        return;
    if (pthread_create(&pool.threads[pool.nthreads], NULL, pool_main, NULL) == 0)
        pool.nthreads++;
    else if (!pool.nthreads)
        log_msgf(LOGL_ERROR, "acl: cannot start a password-check thread");
}

int acl_pool_verify(struct loop *l, void *s, void *req, int tag, const struct acl_password *pw,
                    const uint8_t *password, size_t len, acl_verified_fn *done)
{
    struct waker *w = waker_get(l);
    struct job *j = w ? malloc(sizeof(*j) + len) : NULL;
    if (!j)
        return -1;
    *j = (struct job){.w = w, .s = s, .req = req, .tag = tag, .done = done, .pw = *pw, .len = len};
    if (len)
        memcpy(j->password, password, len);
    pthread_mutex_lock(&pool.lock);
    if (pool.jobs >= ACL_POOL_MAX_JOBS || pool.stopping) {
        pthread_mutex_unlock(&pool.lock);
        job_free(j);
        return -1;
    }
    if (!pool.tail)
        pool.tail = &pool.head;
    *pool.tail = j;
    pool.tail = &j->next;
    pool.jobs++;
    grow_locked();
    bool ok = pool.nthreads > 0;
    if (ok)
        pthread_cond_signal(&pool.work);
    else { /* no thread at all: take the job back */
        pool.head = NULL;
        pool.tail = &pool.head;
        pool.jobs--;
    }
    pthread_mutex_unlock(&pool.lock);
    if (!ok)
        job_free(j);
    return ok ? 0 : -1;
}

void acl_loop_free(struct loop *l)
{
    struct waker **slot = (struct waker **)loop_slot(l, LOOP_SLOT_ACL);
    struct waker *w = *slot;
    if (!w)
        return;
    *slot = NULL;
    pthread_mutex_lock(&pool.lock);
    /* Queued jobs of this loop go; running ones are waited for (a few ms). */
    struct job **pp = &pool.head, *drop = NULL;
    while (*pp) {
        struct job *j = *pp;
        if (j->w != w) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        j->next = drop;
        drop = j;
    }
    pool.tail = pp;
    while (w->running)
        pthread_cond_wait(&pool.idle, &pool.lock);
    for (struct job *j = w->done; j;) {
        struct job *next = j->next;
        j->next = drop;
        drop = j;
        j = next;
    }
    for (struct job *j = drop; j; j = j->next)
        pool.jobs--;
    pthread_mutex_unlock(&pool.lock);
    /* The loop no longer runs: these sessions cannot be resumed. */
    unsigned n = 0;
    while (drop) {
        struct job *j = drop;
        drop = j->next;
        job_free(j);
        n++;
    }
    if (n)
        log_msgf(LOGL_WARN, "acl: %u password checks dropped at shutdown", n);
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
