#include "app/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "app/admission.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "front/front.h"
#include "handlers/acl.h"
#include "handlers/handlers.h"
#include "net/fetch.h"
#include "net/tls.h"

/* MAX_CONNECTIONS and CONNECTION_RATE_LIMIT: a refused client is closed at
 * once (before any TLS or MQTT work), counted, and logged at most once a
 * second per listener so a flood does not flood the log too. */
static bool admitted(struct worker *w, struct worker_listener *wl, const struct sockaddr *peer)
{
    const struct session_params *p = &wl->params;
    int kind = -1;
    if (p->max_connections && __atomic_load_n(p->open_sessions, __ATOMIC_RELAXED) >= p->max_connections)
        kind = 0;
    else if (p->admission && !admission_rate_ok(p->admission, peer, loop_now(w->loop)))
        kind = 1;
    if (kind < 0)
        return true;
    METRIC_INC(loop_metrics(w->loop)->conns_refused[kind]);
    if (loop_now(w->loop) >= wl->next_refusal_log) {
        char addr[64];
        sockaddr_format(peer, addr, sizeof(addr));
        log_msgf(LOGL_WARN, "%s: refusing %s: %s", p->listener, addr,
                 kind ? "over CONNECTION_RATE_LIMIT for its address" : "MAX_CONNECTIONS reached");
        wl->next_refusal_log = loop_now(w->loop) + 1000;
    }
    return false;
}

/* A datagram front end's new client (its first datagram). */
static bool admit_datagram(void *ctx, const struct sockaddr *peer)
{
    struct worker_listener *wl = ctx;
    return admitted(wl->ls.ctx, wl, peer);
}

/* A client's socket, its PROXY header (if any) read: to its front end. */
static void dispatch(void *ctx, int fd, const struct sockaddr *peer, socklen_t len)
{
    struct worker_listener *wl = ctx;
    struct worker *w = wl->ls.ctx;
    if (!admitted(w, wl, peer)) {
        close(fd);
        return;
    }
    (void)len;
    wl->front->accept(w->loop, fd, peer, &wl->params, &w->sessions);
}

static void on_accept(struct listener *ls, int fd, const struct sockaddr *peer, socklen_t len)
{
    struct worker_listener *wl = (struct worker_listener *)ls;
    struct worker *w = ls->ctx;
    if (wl->params.proxy_protocol)
        proxy_accept(w->loop, &w->proxied, fd, peer, len, wl->params.connect_timeout_ms, wl->params.listener,
                     dispatch, wl);
    else
        dispatch(wl, fd, peer, len);
}

static void on_all_closed(struct session_list *list)
{
    struct worker *w = (struct worker *)((char *)list - offsetof(struct worker, sessions));
    loop_stop(w->loop);
}

static void on_grace_over(struct loop *l, struct loop_timer *t)
{
    struct worker *w = (struct worker *)((char *)t - offsetof(struct worker, grace));
    if (w->sessions.count)
        log_msgf(LOGL_INFO, "worker %u: grace period over, closing %u sessions", w->index,
                 w->sessions.count);
    session_list_close_all(&w->sessions);
    loop_stop(l);
}

/* Take no new clients (at the drain, and at the end). */
static void stop_listening(struct worker *w)
{
    for (unsigned i = 0; i < w->nlisteners; i++) {
        struct worker_listener *wl = &w->listeners[i];
        if (wl->server)
            wl->front->stop(wl->server);
        else
            listener_close(&wl->ls);
    }
}

static void drain(struct worker *w)
{
    if (w->sessions.draining)
        return;
    stop_listening(w);
    proxy_list_close(w->loop, &w->proxied);
    w->sessions.on_empty = on_all_closed;
    loop_timer_start(w->loop, &w->grace, w->grace_ms, on_grace_over);
    session_list_drain(&w->sessions);
}

/* Sessions read params.target only when they dial, on this thread, so
 * updating it here is safe; sessions already connected keep their broker. */
static void apply_targets(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    for (unsigned i = 0; i < w->nlisteners; i++) {
        struct worker_listener *wl = &w->listeners[i];
        wl->params.target = w->targets.addr[wl->id];
        wl->params.target_len = w->targets.len[wl->id];
    }
    pthread_mutex_unlock(&w->lock);
}

static void on_ctl(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)l;
    (void)events;
    struct worker *w = (struct worker *)((char *)io - offsetof(struct worker, ctl));
    uint64_t v;
    if (read(io->fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
        return;
    if (v & WORKER_RETARGET)
        apply_targets(w);
    if (v & WORKER_DRAIN)
        drain(w);
}

void worker_retarget(struct worker *w, const struct worker_targets *t)
{
    pthread_mutex_lock(&w->lock);
    w->targets = *t;
    pthread_mutex_unlock(&w->lock);
    worker_send(w, WORKER_RETARGET);
}

int worker_init(struct worker *w, unsigned index, uint32_t grace_ms)
{
    memset(w, 0, sizeof(*w));
    w->ctl.fd = -1;
    w->index = index;
    w->grace_ms = grace_ms;
    pthread_mutex_init(&w->lock, NULL);
    if (!(w->loop = loop_new()))
        return -1;
    loop_set_owner(w->loop, w);
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -1;
    return loop_io_add(w->loop, &w->ctl, fd, EPOLLIN, on_ctl);
}

int worker_add_listener(struct worker *w, int fd, enum listener_id id,
                        const struct session_params *params)
{
    struct worker_listener *wl = &w->listeners[w->nlisteners++];
    wl->id = id;
    wl->front = front_of(id);
    ASSERT(wl->front); /* run.c prepared only listeners that have one */
    wl->params = *params;
    wl->params.log_budget = &wl->log_budget;
    wl->params.close_log_budget = &wl->close_log_budget;
    wl->ls.io.fd = -1;
    wl->ls.ctx = w;
    if (wl->front->datagram)
        return (wl->server = wl->front->serve(w->loop, fd, &wl->params, &w->sessions, admit_datagram, wl)) ? 0 : -1;
    return listener_start(&wl->ls, w->loop, fd, wl->params.listener, on_accept, w);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (loop_run(w->loop) < 0)
        log_msgf(LOGL_ERROR, "worker %u: event loop failed: %s", w->index, strerror(errno));
    __atomic_store_n(&w->finished, true, __ATOMIC_RELEASE);
    return NULL;
}

int worker_start(struct worker *w)
{
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return -1;
    w->started = true;
    return 0;
}

void worker_send(struct worker *w, enum worker_cmd cmd)
{
    uint64_t v = (uint64_t)cmd;
    ssize_t rc = write(w->ctl.fd, &v, sizeof(v));
    (void)rc;
}

void worker_join(struct worker *w)
{
    if (w->started)
        pthread_join(w->thread, NULL);
    stop_listening(w);
    proxy_list_close(w->loop, &w->proxied);
    pthread_mutex_destroy(&w->lock);
    if (w->ctl.fd >= 0)
        close(w->ctl.fd);
    /* The layers' per-loop state goes first, newest first (core/loop.h):
     * revocation checks, webhook requests and password checks in flight,
     * each answered, so the sessions they kept end here too (and may give
     * a request holder back to the spare). */
    loop_free(w->loop);
    w->loop = NULL;
    for (unsigned i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].server)
            w->listeners[i].front->unserve(w->listeners[i].server);
    free(w->sessions.spare);
    w->sessions.spare = NULL;
}
