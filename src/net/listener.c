#include "net/listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/log.h"
#include "net/conn.h"

#define ACCEPT_BATCH 64
#define EMFILE_BACKOFF_MS 100

int resolve_address(const char *host, uint16_t port, struct sockaddr_storage *out, socklen_t *outlen,
                    char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    if (!*host)
        hints.ai_flags |= AI_PASSIVE;
    int rc = getaddrinfo(*host ? host : NULL, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve \"%s\": %s", host, gai_strerror(rc));
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *outlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* A socket of type bound to host:port, SO_REUSEPORT so that each worker has
 * its own (the kernel spreads clients over them by their addresses). */
static int bind_socket(const char *host, uint16_t port, int type, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (resolve_address(host, port, &ss, &sslen, err, errlen) < 0)
        return -1;
    int fd = socket(ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sslen) < 0) {
        snprintf(err, errlen, "cannot listen on %s:%u: %s", *host ? host : "*", port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int listener_bind(const char *host, uint16_t port, char *err, size_t errlen)
{
    int fd = bind_socket(host, port, SOCK_STREAM, err, errlen);
    if (fd < 0)
        return -1;
    int one = 1;
    /* Accepted sockets inherit these on Linux: fewer syscalls per client. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn_tcp_liveness(fd);
    /* Every protocol here has the client speak first (CONNECT, a TLS hello,
     * an HTTP request, a PROXY header): accept once it has, and read at once. */
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof(one));
    if (listen(fd, 1024) < 0) {
        snprintf(err, errlen, "cannot listen on %s:%u: %s", *host ? host : "*", port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int listener_bind_udp(const char *host, uint16_t port, char *err, size_t errlen)
{
    return bind_socket(host, port, SOCK_DGRAM, err, errlen);
}

static void resume_accepting(struct loop *l, struct loop_timer *t)
{
    struct listener *ls = (struct listener *)((char *)t - offsetof(struct listener, backoff));
    loop_io_set(l, &ls->io, EPOLLIN);
}

static void on_acceptable(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)events;
    struct listener *ls = (struct listener *)io;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(io->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            ls->accepted++;
            ls->on_accept(ls, fd, (struct sockaddr *)&peer, plen);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* The pending connection stays queued; retrying now would spin. */
            if (ls->emfile_events++ % 100 == 0)
                log_msgf(LOGL_WARN, "%s: cannot accept: %s; pausing accepts for %d ms", ls->name,
                         strerror(errno), EMFILE_BACKOFF_MS);
            loop_io_set(l, io, 0);
            loop_timer_start(l, &ls->backoff, EMFILE_BACKOFF_MS, resume_accepting);
        }
        return; /* EAGAIN, or a per-connection error such as ECONNABORTED */
    }
}

int listener_start(struct listener *ls, struct loop *l, int fd, const char *name,
                   listener_accept_cb cb, void *ctx)
{
    ls->loop = l;
    ls->name = name;
    ls->on_accept = cb;
    ls->ctx = ctx;
    return loop_io_add(l, &ls->io, fd, EPOLLIN, on_acceptable);
}

void listener_close(struct listener *ls)
{
    if (ls->io.fd < 0)
        return;
    loop_timer_stop(ls->loop, &ls->backoff);
    loop_io_del(ls->loop, &ls->io);
    close(ls->io.fd);
    ls->io.fd = -1;
}
