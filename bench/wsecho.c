/*
 * wsecho: the WebSocket echo target of bench/http_ws.sh.
 *
 * One thread, one epoll loop, RFC 6455 framed by hand.  Answers any GET with
 * Upgrade: websocket by 101 and the right Sec-WebSocket-Accept (SHA-1 from
 * OpenSSL's libcrypto), then echoes every frame back unmasked with the same
 * FIN bit and opcode: data and continuation frames as they came, a ping as a
 * pong, a close as a close (then the connection ends once it is written).
 * Frames are taken masked or not.  Whatever one read brings is answered with
 * one write.  Nothing is logged per frame; SIGTERM or SIGINT end it.
 *
 *   wsecho -p PORT [-a ADDR]        listen on ADDR:PORT (ADDR 127.0.0.1)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wsutil.h"

#define RBUF_START 4096
#define MAX_FRAME (16u << 20)   /* a larger frame ends the connection */
#define MAX_HEAD 8192           /* the upgrade request's head */
#define WBUF_PAUSE (4u << 20)   /* unsent bytes over this: stop reading until they are out */

struct conn {
    int fd;
    bool open;    /* the 101 went out */
    bool closing; /* a close was echoed: end once written */
    bool paused;  /* not reading: the output is over WBUF_PAUSE */
    uint32_t ev;  /* the events epoll watches */
    uint8_t *r;
    size_t rlen, rcap;
    uint8_t *w;
    size_t woff, wlen, wcap;
};

static volatile sig_atomic_t stop;
static int ep;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int out(struct conn *c, const void *p, size_t n)
{
    if (ws_reserve(&c->w, &c->wcap, c->wlen + n, RBUF_START) < 0)
        return -1;
    memcpy(c->w + c->wlen, p, n);
    c->wlen += n;
    return 0;
}

static void conn_free(struct conn *c)
{
    close(c->fd);
    free(c->r);
    free(c->w);
    free(c);
}

static void watch(struct conn *c)
{
    uint32_t ev = (c->paused ? 0 : EPOLLIN) | (c->woff < c->wlen ? EPOLLOUT : 0);
    if (ev == c->ev)
        return;
    c->ev = ev;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Writes what is queued; -1: the connection is done (error, or closed after a close). */
static int flush(struct conn *c)
{
    if (ws_send_queued(c->fd, c->w, &c->woff, c->wlen) < 0)
        return -1;
    if (c->woff == c->wlen) {
        c->woff = c->wlen = 0;
        if (c->closing)
            return -1;
        if (c->wcap > (1u << 20)) { /* a burst's buffer is not kept */
            free(c->w);
            c->w = NULL;
            c->wcap = 0;
        }
    }
    c->paused = c->wlen - c->woff > WBUF_PAUSE;
    watch(c);
    return 0;
}

/* The upgrade request in r (its head complete): the 101, or -1. */
static int handshake(struct conn *c, size_t head)
{
    char *h = (char *)c->r, key[64] = "", accept[WS_ACCEPT_LEN + 1];
    h[head - 1] = '\0';
    if (strncmp(h, "GET ", 4))
        return -1;
    for (char *l = strstr(h, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
        if (!strncasecmp(l + 2, "sec-websocket-key:", 18)) {
            char *v = l + 20;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t n = strcspn(v, " \t\r\n");
            if (n >= sizeof(key))
                return -1;
            memcpy(key, v, n);
            key[n] = '\0';
        }
    }
    if (!key[0] || ws_accept(key, accept) < 0)
        return -1;
    char ans[256];
    int n = snprintf(ans, sizeof(ans),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    c->open = true;
    return out(c, ans, (size_t)n);
}

/* Echoes every whole frame in r; returns the bytes used, or -1. */
static ssize_t frames(struct conn *c)
{
    size_t off = 0;
    while (!c->closing) {
        struct ws_head f;
        int rc = ws_parse_head(c->r + off, c->rlen - off, &f);
        if (rc == 0)
            break;
        if (rc < 0 || f.len > MAX_FRAME)
            return -1;
        if (c->rlen - off < f.head_len + f.len)
            break;
        uint8_t *p = c->r + off + f.head_len;
        if (f.masked)
            ws_mask(p, (size_t)f.len, f.mask, 0);
        uint8_t op = f.op == WS_PING ? WS_PONG : f.op;
        if (f.op == WS_PONG) { /* nothing to answer */
            off += f.head_len + (size_t)f.len;
            continue;
        }
        uint8_t hb[WS_MAX_HEAD];
        size_t hl = ws_write_head(hb, f.fin, op, f.len, NULL);
        if (out(c, hb, hl) < 0 || out(c, p, (size_t)f.len) < 0)
            return -1;
        if (f.op == WS_CLOSE)
            c->closing = true;
        off += f.head_len + (size_t)f.len;
    }
    return (ssize_t)off;
}

/* Reads what is there and answers it; -1: the connection is done. */
static int on_read(struct conn *c)
{
    for (;;) {
        if (ws_reserve(&c->r, &c->rcap, c->rlen + RBUF_START, RBUF_START) < 0)
            return -1;
        size_t room = c->rcap - c->rlen;
        ssize_t k = ws_recv(c->fd, c->r + c->rlen, room);
        if (k < 0 && errno == EAGAIN)
            break;
        if (k <= 0)
            return -1;
        c->rlen += (size_t)k;
        size_t used = 0;
        if (!c->open) {
            uint8_t *e = memmem(c->r, c->rlen, "\r\n\r\n", 4);
            if (!e)
                used = 0;
            else if (handshake(c, (size_t)(e - c->r) + 4) < 0)
                return -1;
            else
                used = (size_t)(e - c->r) + 4;
            if (!e && c->rlen > MAX_HEAD)
                return -1;
        }
        if (c->open) {
            memmove(c->r, c->r + used, c->rlen - used);
            c->rlen -= used;
            ssize_t f = frames(c);
            if (f < 0)
                return -1;
            used = (size_t)f;
        }
        memmove(c->r, c->r + used, c->rlen - used);
        c->rlen -= used;
        if ((size_t)k < room || c->closing)
            break; /* a short read: the socket is empty */
    }
    if (!c->rlen && c->rcap > 64 * 1024) { /* an idle connection keeps no large buffer */
        free(c->r);
        c->r = NULL;
        c->rcap = 0;
    }
    return flush(c);
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->ev = EPOLLIN;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
            conn_free(c);
    }
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1";
    int port = 0, opt;
    while ((opt = getopt(argc, argv, "a:p:")) != -1) {
        if (opt == 'a')
            addr = optarg;
        else if (opt == 'p')
            port = atoi(optarg);
        else
            goto usage;
    }
    if (port <= 0 || port > 65535)
        goto usage;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &a.sin_addr) != 1)
        goto usage;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 4096) < 0) {
        fprintf(stderr, "wsecho: %s:%d: %s\n", addr, port, strerror(errno));
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 1000);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                on_accept(lfd);
                continue;
            }
            int rc = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                rc = on_read(c);
            else if (evs[i].events & EPOLLOUT)
                rc = flush(c);
            if (rc < 0)
                conn_free(c); /* close() takes it out of the epoll set */
        }
    }
    return 0;
usage:
    fprintf(stderr, "usage: wsecho -p PORT [-a ADDR]\n");
    return 64;
}
