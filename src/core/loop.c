#include "core/loop.h"
#include "core/metrics.h"
#include "core/util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256
#define LOOP_SCRATCH_SIZE (64 * 1024)

struct loop_slot {
    const void *key; /* the address of a static object of the owning layer */
    void *value;
    loop_slot_destroy destroy;
};

struct loop {
    int epfd;
    bool stopping;
    uint64_t now;
    struct loop_timer *timers; /* the root of a pairing heap on ->when: the next to expire */
    struct loop_defer *defer_head, *defer_tail;
    struct loop_defer *pass_head, *pass_tail; /* the deferred calls running now */
    struct loop_hook *hooks;
    void *owner;
    struct loop_slot slots[LOOP_SLOTS]; /* in the order of registration */
    unsigned nslots;

    struct loop_io sigio;
    void (*sig_cb)(struct loop *, int, void *);
    void *sig_ctx;

    struct metrics metrics;
    uint8_t scratch[LOOP_SCRATCH_SIZE];
};

struct metrics *loop_metrics(struct loop *l) { return &l->metrics; }

static uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct loop *loop_new(void)
{
    struct loop *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        free(l);
        return NULL;
    }
    l->sigio.fd = -1;
    l->now = clock_ms();
    return l;
}

#define LOOP_FREE_PASSES 64
static void run_deferred(struct loop *l);

void loop_free(struct loop *l)
{
    if (!l)
        return;
    loop_slots_free(l); /* first: their destructors still use the loop */
    /* A destructor answers what its layer can no longer do (a password
     * check, a webhook request): those answers, and what they set off
     * (a session's end, its connections' frees), are deferred calls.  Run
     * them, each pass queueing fewer; the bound only guards against a
     * callback that requeues itself for ever. */
    for (int pass = 0; l->defer_head && pass < LOOP_FREE_PASSES; pass++)
        run_deferred(l);
    if (l->sigio.fd >= 0)
        close(l->sigio.fd);
    close(l->epfd);
    free(l);
}

void loop_stop(struct loop *l) { l->stopping = true; }
uint64_t loop_now(const struct loop *l) { return l->now; }
void loop_set_owner(struct loop *l, void *owner) { l->owner = owner; }
void *loop_owner(const struct loop *l) { return l->owner; }

/* ---- slots of upper layers -------------------------------------------- */

void *loop_slot_get(struct loop *l, const void *key)
{
    for (unsigned i = 0; i < l->nslots; i++)
        if (l->slots[i].key == key)
            return l->slots[i].value;
    return NULL;
}

int loop_slot_set(struct loop *l, const void *key, void *value, loop_slot_destroy destroy)
{
    ASSERT(key && !loop_slot_get(l, key)); /* a layer registers its state once */
    if (l->nslots == LOOP_SLOTS)
        return -1;
    l->slots[l->nslots++] = (struct loop_slot){.key = key, .value = value, .destroy = destroy};
    return 0;
}

unsigned loop_slot_count(const struct loop *l) { return l->nslots; }

/* Newest first, each taken off before its destructor runs: the ones it may
 * use (registered earlier) are still there, and its own is gone, so a
 * destructor that reaches its own layer's state finds none.  A destructor
 * that registers a slot (it should not) has it freed in turn here. */
void loop_slots_free(struct loop *l)
{
    while (l->nslots) {
        struct loop_slot s = l->slots[--l->nslots];
        if (s.destroy)
            s.destroy(l, s.value);
    }
}

uint8_t *loop_scratch(struct loop *l, size_t *size)
{
    *size = sizeof(l->scratch);
    return l->scratch;
}

/* ---- descriptors ------------------------------------------------------ */

int loop_io_add(struct loop *l, struct loop_io *io, int fd, uint32_t events, loop_io_cb cb)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};
    io->fd = fd;
    io->events = events;
    io->cb = cb;
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int loop_io_set(struct loop *l, struct loop_io *io, uint32_t events)
{
    if (io->events == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = io};
    io->events = events;
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev);
}

void loop_io_del(struct loop *l, struct loop_io *io)
{
    if (io->fd >= 0)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

/* ---- timers ----------------------------------------------------------- */

/* A pairing heap (Fredman, Sedgewick, Sleator, Tarjan 1986) whose links are
 * in the timers: unlike an array heap, arming a timer never has to grow
 * anything, so it cannot fail for want of memory (it used to abort). */

/* One tree from two roots (either may be NULL): the later becomes the first
 * child of the earlier. */
static struct loop_timer *meld(struct loop_timer *a, struct loop_timer *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    if (b->when < a->when) {
        struct loop_timer *t = a;
        a = b;
        b = t;
    }
    b->prev = a;
    b->next = a->child;
    if (a->child)
        a->child->prev = b;
    a->child = b;
    return a;
}

/* One tree from a list of siblings: meld them in pairs left to right, then
 * the pairs right to left (what keeps the heap's operations O(log n)
 * amortised).  The result's next and prev are NULL. */
static struct loop_timer *merge_pairs(struct loop_timer *first)
{
    struct loop_timer *pairs = NULL; /* a stack, linked through ->next */
    while (first) {
        struct loop_timer *a = first, *b = first->next;
        first = b ? b->next : NULL;
        a->next = a->prev = NULL;
        if (b)
            b->next = b->prev = NULL;
        struct loop_timer *m = meld(a, b);
        m->next = pairs;
        pairs = m;
    }
    struct loop_timer *root = NULL;
    while (pairs) {
        struct loop_timer *m = pairs;
        pairs = m->next;
        m->next = NULL;
        root = meld(root, m);
    }
    return root;
}

void loop_timer_stop(struct loop *l, struct loop_timer *t)
{
    if (!t->armed)
        return;
    t->armed = false;
    struct loop_timer *children = merge_pairs(t->child);
    if (t == l->timers) {
        l->timers = children;
    } else {
        if (t->prev->child == t)
            t->prev->child = t->next; /* t was its parent's first child */
        else
            t->prev->next = t->next;
        if (t->next)
            t->next->prev = t->prev;
        l->timers = meld(l->timers, children);
    }
    t->child = t->next = t->prev = NULL;
}

void loop_timer_start(struct loop *l, struct loop_timer *t, uint32_t ms, loop_timer_cb cb)
{
    loop_timer_stop(l, t);
    t->when = l->now + ms;
    t->cb = cb;
    t->armed = true;
    t->child = t->next = t->prev = NULL;
    l->timers = meld(l->timers, t);
}

static void run_timers(struct loop *l)
{
    while (l->timers && l->timers->when <= l->now) {
        struct loop_timer *t = l->timers;
        loop_timer_stop(l, t);
        t->cb(l, t);
    }
}

static int next_timeout(const struct loop *l)
{
    if (l->defer_head)
        return 0;
    if (!l->timers)
        return -1;
    uint64_t when = l->timers->when;
    return when <= l->now ? 0 : (int)(when - l->now > 60000 ? 60000 : when - l->now);
}

/* ---- deferred calls --------------------------------------------------- */

void loop_defer(struct loop *l, struct loop_defer *d, loop_defer_cb cb)
{
    d->cb = cb;
    if (d->queued)
        return;
    d->queued = true;
    d->next = NULL;
    if (l->defer_tail)
        l->defer_tail->next = d;
    else
        l->defer_head = d;
    l->defer_tail = d;
}

/* Take d out of the list head..tail if it is there. */
static bool defer_unlink(struct loop_defer **head, struct loop_defer **tail, struct loop_defer *d)
{
    struct loop_defer **pp = head, *prev = NULL;
    while (*pp && *pp != d) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return false;
    *pp = d->next;
    if (*tail == d)
        *tail = prev;
    return true;
}

void loop_defer_cancel(struct loop *l, struct loop_defer *d)
{
    if (!d->queued)
        return;
    /* queued for the next pass, or still waiting in the pass running now */
    if (!defer_unlink(&l->defer_head, &l->defer_tail, d))
        defer_unlink(&l->pass_head, &l->pass_tail, d);
    d->queued = false;
}

static void run_deferred(struct loop *l)
{
    /* Only what was queued before this pass runs now; what the callbacks
     * queue waits for the next turn, so a callback that requeues itself
     * cannot starve I/O.  The pass is a list of its own so that a callback
     * may cancel a call still waiting in it. */
    l->pass_head = l->defer_head;
    l->pass_tail = l->defer_tail;
    l->defer_head = l->defer_tail = NULL;
    struct loop_defer *d;
    while ((d = l->pass_head)) {
        l->pass_head = d->next;
        if (!l->pass_head)
            l->pass_tail = NULL;
        d->queued = false;
        d->cb(l, d);
    }
}

/* ---- hooks and signals ------------------------------------------------ */

void loop_hook_add(struct loop *l, struct loop_hook *h)
{
    h->next = l->hooks;
    l->hooks = h;
}

static void on_signalfd(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)events;
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        l->sig_cb(l, (int)si.ssi_signo, l->sig_ctx);
}

int loop_signals(struct loop *l, const int *signals, int n, void (*cb)(struct loop *, int, void *),
                 void *ctx)
{
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < n; i++)
        sigaddset(&set, signals[i]);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -1;
    l->sig_cb = cb;
    l->sig_ctx = ctx;
    return loop_io_add(l, &l->sigio, fd, EPOLLIN, on_signalfd);
}

/* ---- the loop --------------------------------------------------------- */

int loop_run(struct loop *l)
{
    struct epoll_event events[LOOP_MAX_EVENTS];
    while (!l->stopping) {
        int timeout = next_timeout(l);
        for (struct loop_hook *h = l->hooks; h; h = h->next)
            if (h->before_poll)
                timeout = h->before_poll(h->ctx, timeout);
        int n = epoll_wait(l->epfd, events, LOOP_MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR)
            return -1;
        l->now = clock_ms();
        for (int i = 0; i < n; i++) {
            struct loop_io *io = events[i].data.ptr;
            io->cb(l, io, events[i].events);
        }
        run_timers(l);
        run_deferred(l);
        for (struct loop_hook *h = l->hooks; h; h = h->next)
            if (h->after_poll)
                h->after_poll(h->ctx);
    }
    l->stopping = false; /* it may be run again */
    return 0;
}
