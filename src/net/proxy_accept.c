#include "net/proxy_accept.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "net/conn.h"
#include "net/proxy_proto.h"

struct proxy_wait {
    struct loop_io io;
    struct loop_timer timer;
    struct list_node node; /* in its proxy_list */
    struct sockaddr_storage peer; /* the balancer's address, for logs */
    socklen_t peer_len;
    const char *listener;
    proxy_done_cb done;
    void *ctx;
};

static void unlink_wait(struct loop *l, struct proxy_wait *w)
{
    loop_io_del(l, &w->io);
    loop_timer_stop(l, &w->timer);
    list_remove(&w->node);
}

static void refuse(struct loop *l, struct proxy_wait *w, const char *why)
{
    char peer[64];
    sockaddr_format((const struct sockaddr *)&w->peer, peer, sizeof(peer));
    log_msgf(LOGL_WARN, "%s: closing a connection from %s: %s", w->listener, peer, why);
    METRIC_INC(loop_metrics(l)->proxy_refused);
    unlink_wait(l, w);
    close(w->io.fd);
    free(w);
}

static void on_timeout(struct loop *l, struct loop_timer *t)
{
    struct proxy_wait *w = (struct proxy_wait *)((char *)t - offsetof(struct proxy_wait, timer));
    refuse(l, w, "no PROXY protocol header in time");
}

/* Peek, so that nothing past the header is taken from the stream: what
 * follows (a TLS ClientHello, an HTTP upgrade, CONNECT) is the front end's. */
static void on_readable(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)events;
    struct proxy_wait *w = (struct proxy_wait *)io;
    uint8_t buf[PROXY_MAX_HEADER];
    ssize_t n = recv(io->fd, buf, sizeof(buf), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        refuse(l, w, n ? strerror(errno) : "closed before its PROXY protocol header");
        return;
    }
    struct proxy_info pi;
    const char *why = NULL;
    int hdr = proxy_parse(buf, (size_t)n, &pi, &why);
    if (hdr == 0)
        return; /* more to come */
    if (hdr < 0 || recv(io->fd, buf, (size_t)hdr, 0) != hdr) {
        refuse(l, w, hdr < 0 ? why : "cannot read the PROXY protocol header");
        return;
    }
    unlink_wait(l, w);
    int fd = io->fd;
    if (pi.local) /* a health check of the balancer itself: the socket's own peer */
        w->done(w->ctx, fd, (const struct sockaddr *)&w->peer, w->peer_len);
    else
        w->done(w->ctx, fd, (const struct sockaddr *)&pi.src, pi.len);
    free(w);
}

void proxy_accept(struct loop *l, struct proxy_list *list, int fd, const struct sockaddr *peer,
                  socklen_t len, uint32_t timeout_ms, const char *listener, proxy_done_cb done, void *ctx)
{
    struct proxy_wait *w = calloc(1, sizeof(*w));
    if (!w || loop_io_add(l, &w->io, fd, EPOLLIN, on_readable) < 0) {
        free(w);
        close(fd);
        return;
    }
    memcpy(&w->peer, peer, len < sizeof(w->peer) ? len : sizeof(w->peer));
    w->peer_len = len;
    w->listener = listener;
    w->done = done;
    w->ctx = ctx;
    list_push_front(&list->waiting, &w->node);
    loop_timer_start(l, &w->timer, timeout_ms, on_timeout);
}

void proxy_list_close(struct loop *l, struct proxy_list *list)
{
    struct list_node *n;
    while ((n = list_first(&list->waiting))) {
        struct proxy_wait *w = container_of(n, struct proxy_wait, node);
        unlink_wait(l, w);
        close(w->io.fd);
        free(w);
    }
}
