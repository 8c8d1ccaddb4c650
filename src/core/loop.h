/*
 * One event loop per worker thread: epoll for descriptors, a pairing heap for
 * timers (linked through the timers: arming one never allocates), a queue of
 * deferred calls run after each batch of events, and signalfd for signals.  Level-triggered: a callback that leaves data unread
 * is called again on the next turn, so back-pressure is just "stop asking for
 * EPOLLIN".
 *
 * Hooks let a foreign event library (libcurl's multi-socket API) share the
 * loop: before_poll may shorten the wait, and
 * after_poll runs at the end of every turn.
 */
#ifndef MGATE_LOOP_H
#define MGATE_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;

struct loop_io;
typedef void (*loop_io_cb)(struct loop *l, struct loop_io *io, uint32_t events);
struct loop_io {
    int fd;
    uint32_t events; /* EPOLLIN / EPOLLOUT currently asked for */
    loop_io_cb cb;
};

struct loop_timer;
typedef void (*loop_timer_cb)(struct loop *l, struct loop_timer *t);
/* An armed timer is a node of its loop's pairing heap, linked through the
 * timer itself: arming one allocates nothing, so it cannot fail. */
struct loop_timer {
    uint64_t when; /* ms, loop clock */
    loop_timer_cb cb;
    struct loop_timer *child; /* the first of its children */
    struct loop_timer *next;  /* its next sibling */
    struct loop_timer *prev;  /* its previous sibling, or its parent when it is the first child */
    bool armed;
};

struct loop_defer;
typedef void (*loop_defer_cb)(struct loop *l, struct loop_defer *d);
struct loop_defer {
    struct loop_defer *next;
    loop_defer_cb cb;
    bool queued;
};

struct loop_hook {
    void *ctx;
    int (*before_poll)(void *ctx, int timeout_ms); /* returns the (maybe shorter) timeout */
    void (*after_poll)(void *ctx);
    struct loop_hook *next;
};

struct loop *loop_new(void);
void loop_free(struct loop *l);
int loop_run(struct loop *l); /* until loop_stop (then it may run again); 0, or -1 on epoll failure */
void loop_stop(struct loop *l);
uint64_t loop_now(const struct loop *l); /* monotonic ms, updated once per turn */

int loop_io_add(struct loop *l, struct loop_io *io, int fd, uint32_t events, loop_io_cb cb);
int loop_io_set(struct loop *l, struct loop_io *io, uint32_t events); /* no syscall if unchanged */
void loop_io_del(struct loop *l, struct loop_io *io);

void loop_timer_start(struct loop *l, struct loop_timer *t, uint32_t ms, loop_timer_cb cb);
void loop_timer_stop(struct loop *l, struct loop_timer *t);
static inline bool loop_timer_armed(const struct loop_timer *t) { return t->armed; }

void loop_defer(struct loop *l, struct loop_defer *d, loop_defer_cb cb);
void loop_defer_cancel(struct loop *l, struct loop_defer *d);

void loop_hook_add(struct loop *l, struct loop_hook *h);

/* Block the signals in this thread and deliver them through the loop. */
int loop_signals(struct loop *l, const int *signals, int n, void (*cb)(struct loop *l, int signo, void *ctx),
                 void *ctx);

/* A read buffer shared by every connection of the loop: data is read here,
 * handled, and only what is left over is copied into a connection's own
 * buffer.  This is why an idle connection holds no buffer. */
uint8_t *loop_scratch(struct loop *l, size_t *size);

/* This loop's counters (core/metrics.h): written by its thread only. */
struct metrics *loop_metrics(struct loop *l);

/* The worker this loop belongs to (opaque to the loop). */
void loop_set_owner(struct loop *l, void *owner);
void *loop_owner(const struct loop *l);

/*
 * Per-loop state of an upper layer, made on first use (libcurl's multi
 * handle, the TLS module's pending checks, the webhook's requests): the
 * owning layer registers it under a key of its own, the address of a static
 * object in its file, so the loop names no layer and no global table is
 * written.  At most LOOP_SLOTS of them.
 *
 * The destructors run when the loop is freed (or at loop_slots_free), in the
 * reverse order of registration, each while the slots registered before it
 * still exist.  So a layer whose state uses another's (the webhook's and the
 * TLS checks' requests are fetches, cancelled through the fetcher) gets that
 * one's slot made before registering its own, and is torn down first by
 * construction.  A slot's own key reads NULL while its destructor runs.
 * A destructor answers what its layer can no longer do (a session's pending
 * check, with a refusal) rather than drop it: loop_free runs the deferred
 * calls those answers queue, after the destructors, so what they kept (the
 * session) is freed too.
 */
#define LOOP_SLOTS 8
typedef void (*loop_slot_destroy)(struct loop *l, void *value);
void *loop_slot_get(struct loop *l, const void *key); /* NULL when not registered */
/* Register value under key (once); -1 when every slot is taken. */
int loop_slot_set(struct loop *l, const void *key, void *value, loop_slot_destroy destroy);
unsigned loop_slot_count(const struct loop *l);
/* Run every slot's destructor, newest first, and empty the slots (the loop
 * may register new ones afterwards). */
void loop_slots_free(struct loop *l);

#endif
