/*
 * A libuv loop riding on one of mgate's loops, for libwebsockets (whose
 * Debian build has no external-poll mode, only foreign libuv loops).  The uv
 * loop's backend descriptor sits in our epoll set, and it runs without
 * waiting at the start of every turn of ours: no second thread, no second
 * place where the worker sleeps.
 */
#ifndef MGATE_UVLOOP_H
#define MGATE_UVLOOP_H

#include <uv.h>

#include "core/loop.h"

/* The uv loop of l, made on first use; NULL if it cannot be. */
uv_loop_t *uvloop_get(struct loop *l);
/* libwebsockets was asked for I/O (lws_callback_on_writable, rx flow
 * control): make sure libuv runs again before the loop sleeps. */
void uvloop_touch(struct loop *l);
/* Run what is due (after libwebsockets was told something). */
void uvloop_kick(struct loop *l);
/* Close it once nothing uses it any more (after loop_run returned). */
void uvloop_free(struct loop *l);

#endif
