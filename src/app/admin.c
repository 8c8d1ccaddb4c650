#include "app/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/list.h"
#include "core/log.h"
#include "net/listener.h"

#define ADMIN_MAX_REQUEST 4096
#define ADMIN_MAX_CONNS 32
#define ADMIN_TIMEOUT_MS 5000

struct admin_conn {
    struct loop_io io;
    struct loop_timer timer;
    struct admin *a;
    struct list_node node; /* in a->conns */
    struct buf out;
    uint32_t len;
    char req[ADMIN_MAX_REQUEST + 1];
};

struct admin {
    struct listener ls;
    struct loop *l;
    admin_route route;
    void *ctx;
    struct list_node conns;
    unsigned nconns;
};

static void conn_free(struct admin_conn *c)
{
    struct admin *a = c->a;
    loop_io_del(a->l, &c->io);
    loop_timer_stop(a->l, &c->timer);
    close(c->io.fd);
    buf_release(&c->out);
    list_remove(&c->node);
    ASSERT(a->nconns > 0);
    a->nconns--;
    free(c);
}

static void flush(struct admin_conn *c)
{
    while (c->out.len) {
        ssize_t n = send(c->io.fd, buf_head(&c->out), c->out.len, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) {
            loop_io_set(c->a->l, &c->io, EPOLLOUT);
            return;
        }
        if (n <= 0)
            break;
        buf_consume(&c->out, (size_t)n);
    }
    conn_free(c);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

static void respond(struct admin_conn *c, int status, const char *ctype, const struct buf *body, bool head)
{
    char hdr[256];
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %u\r\nConnection: close\r\n"
                     "Cache-Control: no-store\r\n\r\n",
                     status, reason(status), ctype, body ? body->len : 0);
    if (buf_append(&c->out, hdr, (size_t)n) < 0 ||
        (body && body->len && !head && buf_append(&c->out, buf_head(body), body->len) < 0)) {
        conn_free(c);
        return;
    }
    loop_io_set(c->a->l, &c->io, 0);
    flush(c);
}

static void simple(struct admin_conn *c, int status, const char *text)
{
    struct buf b = {0};
    buf_append(&b, text, strlen(text));
    respond(c, status, "text/plain; charset=utf-8", &b, false);
    buf_release(&b);
}

/* "GET /metrics?x HTTP/1.1" once the head is in; the rest of it is ignored. */
static void handle(struct admin_conn *c)
{
    char *sp1 = strchr(c->req, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strncmp(sp2 + 1, "HTTP/1.", 7)) {
        simple(c, 400, "bad request\n");
        return;
    }
    *sp1 = *sp2 = '\0';
    bool head = !strcmp(c->req, "HEAD");
    if (!head && strcmp(c->req, "GET")) {
        simple(c, 405, "only GET and HEAD\n");
        return;
    }
    char *path = sp1 + 1;
    path[strcspn(path, "?#")] = '\0';
    struct buf body = {0};
    const char *ctype = "text/plain; charset=utf-8";
    int status = c->a->route(c->a->ctx, path, &body, &ctype);
    respond(c, status, ctype, &body, head);
    buf_release(&body);
}

static void on_conn(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)l;
    struct admin_conn *c = (struct admin_conn *)io;
    if (c->out.len) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            flush(c);
        return;
    }
    ssize_t n = recv(io->fd, c->req + c->len, ADMIN_MAX_REQUEST - c->len, 0);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        conn_free(c);
        return;
    }
    c->len += (uint32_t)n;
    c->req[c->len] = '\0';
    if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n"))
        handle(c);
    else if (c->len == ADMIN_MAX_REQUEST)
        simple(c, 431, "request too large\n");
}

static void on_timeout(struct loop *l, struct loop_timer *t)
{
    (void)l;
    conn_free((struct admin_conn *)((char *)t - offsetof(struct admin_conn, timer)));
}

static void on_accept(struct listener *ls, int fd, const struct sockaddr *peer, socklen_t len)
{
    (void)peer, (void)len;
    struct admin *a = ls->ctx;
    struct admin_conn *c = a->nconns < ADMIN_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
    if (!c || loop_io_add(a->l, &c->io, fd, EPOLLIN, on_conn) < 0) {
        free(c);
        close(fd);
        return;
    }
    c->a = a;
    list_push_front(&a->conns, &c->node);
    a->nconns++;
    loop_timer_start(a->l, &c->timer, ADMIN_TIMEOUT_MS, on_timeout);
}

struct admin *admin_start(struct loop *l, const char *host, uint16_t port, admin_route route, void *ctx,
                          char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof(*a));
    int fd = a ? listener_bind(host, port, err, errlen) : -1;
    if (fd < 0) {
        free(a);
        return NULL;
    }
    a->l = l;
    a->route = route;
    a->ctx = ctx;
    if (listener_start(&a->ls, l, fd, "admin", on_accept, a) < 0) {
        snprintf(err, errlen, "cannot listen: %s", strerror(errno));
        close(fd);
        free(a);
        return NULL;
    }
    return a;
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    struct list_node *n;
    while ((n = list_first(&a->conns)))
        conn_free(container_of(n, struct admin_conn, node));
    listener_close(&a->ls);
    free(a);
}
