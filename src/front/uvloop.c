#include "front/uvloop.h"

#include <stdlib.h>
#include <sys/epoll.h>

struct uvloop {
    uv_loop_t uv;
    struct loop_io io;
    struct loop_hook hook;
    struct loop *l;
    bool touched; /* libuv was asked for something it applies only on its next run */
};

static struct uvloop **slot(struct loop *l) { return (struct uvloop **)loop_slot(l, LOOP_SLOT_UV); }

/* Every turn: what uv has due runs now, and our wait is no longer than
 * uv's next timer. */
static int before_poll(void *ctx, int timeout_ms)
{
    struct uvloop *u = ctx;
    u->touched = false;
    uv_run(&u->uv, UV_RUN_NOWAIT);
    /* Its callbacks asked for I/O (a write, a resumed read): libuv applies
     * that on its next run, so do not sleep before it. */
    if (u->touched)
        return 0;
    int t = uv_backend_timeout(&u->uv);
    return t >= 0 && (timeout_ms < 0 || t < timeout_ms) ? t : timeout_ms;
}

static void on_backend(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)l, (void)events;
    struct uvloop *u = (struct uvloop *)((char *)io - offsetof(struct uvloop, io));
    uv_run(&u->uv, UV_RUN_NOWAIT);
}

uv_loop_t *uvloop_get(struct loop *l)
{
    struct uvloop *u = *slot(l);
    if (u)
        return &u->uv;
    if (!(u = calloc(1, sizeof(*u))))
        return NULL;
    if (uv_loop_init(&u->uv) != 0) {
        free(u);
        return NULL;
    }
    if (loop_io_add(l, &u->io, uv_backend_fd(&u->uv), EPOLLIN, on_backend) < 0) {
        uv_loop_close(&u->uv);
        free(u);
        return NULL;
    }
    u->l = l;
    u->hook = (struct loop_hook){.ctx = u, .before_poll = before_poll};
    loop_hook_add(l, &u->hook);
    *slot(l) = u;
    return &u->uv;
}

void uvloop_touch(struct loop *l)
{
    struct uvloop *u = *slot(l);
    if (u)
        u->touched = true;
}

void uvloop_kick(struct loop *l)
{
    struct uvloop *u = *slot(l);
    if (u)
        uv_run(&u->uv, UV_RUN_NOWAIT);
}

/* Handles still open belong to someone who forgot them; closing them here
 * could call into code already unloaded (an lws plugin), so they are left to
 * the process's end rather than risk that. */
void uvloop_free(struct loop *l)
{
    struct uvloop *u = *slot(l);
    if (!u)
        return;
    loop_io_del(l, &u->io);
    uv_run(&u->uv, UV_RUN_NOWAIT);
    *slot(l) = NULL; /* its hook stays listed: the loop is freed next, never run again */
    if (uv_loop_close(&u->uv) == 0)
        free(u);
}
