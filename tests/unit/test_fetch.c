/* HTTP requests on the loop against a tiny HTTP/1.1 server that runs on the
 * same loop (127.0.0.1, ephemeral port, non-blocking, one request per
 * connection, "Connection: close"). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "core/loop.h"
#include "net/fetch.h"

#define BIG_BODY 8192

/* ---- the server --------------------------------------------------------- */

struct srv_conn {
    struct loop_io io;
    struct srv_conn *next;
    char in[8192];
    size_t inlen;
    char *out;
    size_t outlen, outoff;
    bool answered;
};

struct srv {
    struct loop_io lio;
    int port;
    struct srv_conn *conns;
    int accepted, requests;
    struct srv_conn *held[2]; /* /hold requests, answered together */
    int nheld;
};

static struct srv server;

static void srv_close(struct loop *l, struct srv_conn *c)
{
    struct srv_conn **pp = &server.conns;
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    loop_io_del(l, &c->io);
    close(c->io.fd);
    free(c->out);
    free(c);
}

/* The value of header name in the request head, copied into v. */
static void header_value(const char *head, const char *name, char *v, size_t vsize)
{
    v[0] = '\0';
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, n) != 0 || p[2 + n] != ':')
            continue;
        const char *s = p + 3 + n, *e = strstr(s, "\r\n");
        while (*s == ' ')
            s++;
        snprintf(v, vsize, "%.*s", (int)(e - s), s);
        return;
    }
}

static void srv_reply(struct srv_conn *c, int status, const char *body, size_t len, bool with_length)
{
    char head[256];
    int hl = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nConnection: close\r\n%s", status,
                      status == 200 ? "OK" : "Other", status == 302 ? "Location: /hello\r\n" : "");
    if (with_length)
        hl += snprintf(head + hl, sizeof(head) - (size_t)hl, "Content-Length: %zu\r\n", len);
    hl += snprintf(head + hl, sizeof(head) - (size_t)hl, "\r\n");
    c->out = malloc((size_t)hl + len);
    memcpy(c->out, head, (size_t)hl);
    memcpy(c->out + hl, body, len);
    c->outlen = (size_t)hl + len;
    c->answered = true;
}

/* Routes: /hello, /ua (echoes the User-Agent), /echo (method, Content-Type,
 * Accept and body), /redirect (302 to /hello), /missing (404), /silent (never answers), /big and
 * /big-nolen (BIG_BODY bytes, with and without Content-Length), /n/<i>,
 * /hold (the first two are answered together, in one loop turn). */
static void srv_route(struct srv_conn *c, const char *method, const char *path, const char *body,
                      size_t body_len)
{
    char ct[128], acc[128], buf[1024];
    server.requests++;
    if (strcmp(path, "/hello") == 0) {
        srv_reply(c, 200, "hello world", 11, true);
    } else if (strcmp(path, "/ua") == 0) {
        header_value(c->in, "User-Agent", buf, sizeof(buf));
        srv_reply(c, 200, buf, strlen(buf), true);
    } else if (strcmp(path, "/echo") == 0) {
        header_value(c->in, "Content-Type", ct, sizeof(ct));
        header_value(c->in, "Accept", acc, sizeof(acc));
        int n = snprintf(buf, sizeof(buf), "%s|%s|%s|%.*s", method, ct, acc, (int)body_len, body);
        srv_reply(c, 200, buf, (size_t)n, true);
    } else if (strcmp(path, "/redirect") == 0) {
        srv_reply(c, 302, "moved", 5, true);
    } else if (strcmp(path, "/missing") == 0) {
        srv_reply(c, 404, "not here", 8, true);
    } else if (strcmp(path, "/silent") == 0) {
        c->answered = true; /* and nothing is ever sent */
    } else if (strncmp(path, "/big", 4) == 0) {
        char *big = malloc(BIG_BODY);
        memset(big, 'x', BIG_BODY);
        srv_reply(c, 200, big, BIG_BODY, strcmp(path, "/big") == 0);
        free(big);
    } else if (strcmp(path, "/hold") == 0) {
        c->answered = true;
        server.held[server.nheld++] = c;
    } else if (strncmp(path, "/n/", 3) == 0) {
        srv_reply(c, 200, path + 3, strlen(path + 3), true);
    } else {
        srv_reply(c, 404, "", 0, true);
    }
}

/* Returns true once a whole request (head and Content-Length body) is in. */
static bool srv_parse(struct srv_conn *c)
{
    c->in[c->inlen] = '\0';
    char *end = strstr(c->in, "\r\n\r\n");
    if (!end)
        return false;
    char len[32], method[16], path[256];
    header_value(c->in, "Content-Length", len, sizeof(len));
    size_t body_len = (size_t)strtoul(len, NULL, 10);
    char *body = end + 4;
    if ((size_t)(c->in + c->inlen - body) < body_len)
        return false;
    if (sscanf(c->in, "%15s %255s", method, path) != 2)
        return false;
    srv_route(c, method, path, body, body_len);
    return true;
}

static void srv_flush(struct loop *l, struct srv_conn *c)
{
    while (c->outoff < c->outlen) {
        ssize_t n = write(c->io.fd, c->out + c->outoff, c->outlen - c->outoff);
        if (n < 0) {
            if (errno == EAGAIN)
                loop_io_set(l, &c->io, EPOLLOUT);
            else
                srv_close(l, c);
            return;
        }
        c->outoff += (size_t)n;
    }
    srv_close(l, c); /* "Connection: close" */
}

static void srv_on_conn(struct loop *l, struct loop_io *io, uint32_t events)
{
    struct srv_conn *c = (struct srv_conn *)io;
    if (c->out) {
        srv_flush(l, c);
        return;
    }
    (void)events;
    ssize_t n = read(io->fd, c->in + c->inlen, sizeof(c->in) - 1 - c->inlen);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        srv_close(l, c);
        return;
    }
    if (n < 0 || c->answered)
        return;
    c->inlen += (size_t)n;
    if (srv_parse(c) && c->out)
        srv_flush(l, c);
    if (server.nheld == 2) {
        server.nheld = 3; /* once */
        for (int i = 0; i < 2; i++) {
            srv_reply(server.held[i], 200, "held", 4, true);
            srv_flush(l, server.held[i]);
        }
    }
}

static void srv_on_accept(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)events;
    int fd;
    while ((fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        struct srv_conn *c = calloc(1, sizeof(*c));
        server.accepted++;
        c->next = server.conns;
        server.conns = c;
        loop_io_add(l, &c->io, fd, EPOLLIN, srv_on_conn);
    }
}

/* A listening (or, with listen_too false, just bound) socket on an
 * ephemeral 127.0.0.1 port. */
static int bind_loopback(int *port, bool listen_too)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        (listen_too && listen(fd, 128) != 0) || getsockname(fd, (struct sockaddr *)&a, &alen) != 0)
        abort();
    *port = ntohs(a.sin_port);
    return fd;
}

static void srv_start(struct loop *l)
{
    memset(&server, 0, sizeof(server));
    int fd = bind_loopback(&server.port, true);
    loop_io_add(l, &server.lio, fd, EPOLLIN, srv_on_accept);
}

static void srv_stop(struct loop *l)
{
    while (server.conns)
        srv_close(l, server.conns);
    loop_io_del(l, &server.lio);
    close(server.lio.fd);
}

/* ---- what the callbacks saw --------------------------------------------- */

struct got {
    int calls;
    int status;
    char body[BIG_BODY + 1];
    size_t len;
    bool has_error;
    char error[256];
    double seconds;
};

static struct loop *cur_loop;
static int pending; /* callbacks still expected; the loop stops at 0 */

static void record(void *ctx, const struct fetch_result *r)
{
    struct got *g = ctx;
    g->calls++;
    g->status = r->status;
    g->len = r->len;
    g->seconds = r->seconds;
    CHECK(r->body != NULL);
    if (r->body && r->len < sizeof(g->body)) {
        memcpy(g->body, r->body, r->len);
        g->body[r->len] = '\0';
    }
    g->has_error = r->error != NULL;
    snprintf(g->error, sizeof(g->error), "%s", r->error ? r->error : "");
    if (--pending == 0)
        loop_stop(cur_loop);
}

static void stop_loop(struct loop *l, struct loop_timer *t)
{
    (void)t;
    loop_stop(l);
}

/* Runs a fresh loop until the expected callbacks came or max_ms passed. */
static void run(struct loop *l, uint32_t max_ms)
{
    struct loop_timer dog = {0};
    loop_timer_start(l, &dog, max_ms, stop_loop);
    CHECK_EQ_INT(loop_run(l), 0);
    loop_timer_stop(l, &dog);
}

static struct loop *setup(void)
{
    struct loop *l = loop_new();
    cur_loop = l;
    pending = 0; /* whatever an earlier, failed test left */
    srv_start(l);
    return l;
}

static void teardown(struct loop *l)
{
    loop_slots_free(l);
    CHECK_EQ_INT(loop_slot_count(l), 0);
    CHECK_EQ_INT(fetch_in_flight(l), 0);
    srv_stop(l);
    loop_free(l);
}

static struct fetch *get(struct loop *l, const char *path, struct fetch_request req, struct got *g)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", server.port, path);
    req.url = url;
    struct fetch *f = fetch_start(l, &req, record, g);
    CHECK(f != NULL);
    if (f)
        pending++;
    return f;
}

/* ---- tests -------------------------------------------------------------- */

static void test_get(void)
{
    struct loop *l = setup();
    static struct got hello, ua, missing, moved;
    get(l, "/hello", (struct fetch_request){0}, &hello);
    get(l, "/redirect", (struct fetch_request){0}, &moved);
    get(l, "/ua", (struct fetch_request){0}, &ua);
    get(l, "/missing", (struct fetch_request){0}, &missing);
    CHECK_EQ_INT(fetch_in_flight(l), 4);
    CHECK_EQ_INT(hello.calls, 0); /* never from inside fetch_start */
    run(l, 3000);
    CHECK_EQ_INT(fetch_in_flight(l), 0);
    CHECK_EQ_INT(hello.calls, 1);
    CHECK_EQ_INT(hello.status, 200);
    CHECK(!hello.has_error);
    CHECK_EQ_STR(hello.body, "hello world");
    CHECK(hello.seconds > 0 && hello.seconds < 3);
    CHECK_EQ_INT(ua.status, 200);
    CHECK_EQ_STR(ua.body, "mgate");
    CHECK_EQ_INT(missing.calls, 1);
    CHECK_EQ_INT(missing.status, 404);
    CHECK(!missing.has_error);
    CHECK_EQ_STR(missing.body, "not here");
    CHECK_EQ_INT(moved.status, 302); /* not followed */
    CHECK_EQ_STR(moved.body, "moved");
    CHECK_EQ_INT(server.requests, 4);
    teardown(l);
}

static void test_post(void)
{
    struct loop *l = setup();
    static struct got posted, defaulted;
    uint8_t body[] = "serial=42&x=y";
    struct fetch_request req = {.body = body,
                                .body_len = sizeof(body) - 1,
                                .content_type = "application/ocsp-request",
                                .accept = "application/ocsp-response"};
    get(l, "/echo", req, &posted);
    body[0] = 'S'; /* the body was copied at fetch_start */
    req = (struct fetch_request){.method = "PUT", .body = body, .body_len = 3};
    get(l, "/echo", req, &defaulted);
    run(l, 3000);
    CHECK_EQ_INT(posted.status, 200);
    CHECK_EQ_STR(posted.body, "POST|application/ocsp-request|application/ocsp-response|serial=42&x=y");
    CHECK_EQ_INT(defaulted.status, 200);
    CHECK_EQ_STR(defaulted.body, "PUT|application/octet-stream|*/*|Ser");
    CHECK(fetch_start(l, &(struct fetch_request){.url = "http://127.0.0.1:1/", .accept = "a\r\nX: y"},
                      record, &posted) == NULL);
    CHECK_EQ_INT(errno, EINVAL);
    teardown(l);
}

static void test_refused(void)
{
    struct loop *l = setup();
    static struct got refused, ftp;
    int port;
    close(bind_loopback(&port, false)); /* a port nobody listens on */
    char url[64], ftp_url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    CHECK(fetch_start(l, &(struct fetch_request){.url = url}, record, &refused) != NULL);
    snprintf(ftp_url, sizeof(ftp_url), "ftp://127.0.0.1:%d/", server.port);
    CHECK(fetch_start(l, &(struct fetch_request){.url = ftp_url}, record, &ftp) != NULL);
    pending += 2;
    run(l, 3000);
    CHECK_EQ_INT(refused.calls, 1);
    CHECK_EQ_INT(refused.status, 0);
    CHECK(refused.has_error);
    CHECK(strstr(refused.error, "Failed to connect to 127.0.0.1") != NULL);
    CHECK_EQ_INT(ftp.calls, 1);
    CHECK(strstr(ftp.error, "ftp") != NULL);
    CHECK_EQ_INT(server.accepted, 0); /* http and https only */
    teardown(l);
}

static void test_timeout(void)
{
    struct loop *l = setup();
    static struct got slow;
    uint64_t start = loop_now(l);
    get(l, "/silent", (struct fetch_request){.timeout_ms = 300}, &slow);
    run(l, 3000);
    uint64_t took = loop_now(l) - start;
    CHECK_EQ_INT(slow.calls, 1);
    CHECK_EQ_INT(slow.status, 0);
    CHECK(strstr(slow.error, "timed out") != NULL);
    CHECK(took >= 290 && took < 1000);
    CHECK(slow.seconds >= 0.29 && slow.seconds < 1.0);
    CHECK_EQ_INT(server.requests, 1); /* the request did reach the server */
    teardown(l);
}

/* A request started late in a busy turn: the loop's clock is behind the
 * real time when libcurl arms its deadline; the timeout must still come
 * timeout_ms after the start, neither early nor never. */
static struct got busy_slow;
static uint64_t busy_started;
static void start_after_busy_work(struct loop *l, struct loop_timer *t)
{
    (void)t;
    usleep(80 * 1000);
    busy_started = loop_now(l);
    get(l, "/silent", (struct fetch_request){.timeout_ms = 300}, &busy_slow);
}

static void test_timeout_busy_turn(void)
{
    struct loop *l = setup();
    struct loop_timer t = {0};
    loop_timer_start(l, &t, 10, start_after_busy_work);
    run(l, 3000);
    uint64_t took = loop_now(l) - busy_started; /* includes the 80 ms */
    CHECK_EQ_INT(busy_slow.calls, 1);
    CHECK(strstr(busy_slow.error, "timed out") != NULL);
    CHECK(took >= 370 && took < 1000);
    teardown(l);
}

static void test_too_large(void)
{
    struct loop *l = setup();
    static struct got with_len, no_len, exact;
    get(l, "/big", (struct fetch_request){.max_body = BIG_BODY - 1}, &with_len);
    get(l, "/big-nolen", (struct fetch_request){.max_body = BIG_BODY - 1}, &no_len);
    get(l, "/big-nolen", (struct fetch_request){.max_body = BIG_BODY}, &exact);
    run(l, 3000);
    CHECK_EQ_INT(with_len.calls, 1);
    CHECK_EQ_STR(with_len.error, "response too large");
    CHECK_EQ_INT(with_len.len, 0);
    CHECK_EQ_INT(no_len.calls, 1);
    CHECK_EQ_STR(no_len.error, "response too large");
    CHECK_EQ_INT(exact.calls, 1);
    CHECK(!exact.has_error);
    CHECK_EQ_INT(exact.len, BIG_BODY);
    CHECK_EQ_INT(exact.body[BIG_BODY - 1], 'x');
    teardown(l);
}

static struct fetch *to_cancel;
static struct got cancelled_later, after_cancel;

static void cancel_later(struct loop *l, struct loop_timer *t)
{
    (void)t;
    CHECK_EQ_INT(server.requests, 1); /* the silent request is at the server */
    CHECK_EQ_INT(fetch_in_flight(l), 1);
    fetch_cancel(to_cancel);
    pending--;
    CHECK_EQ_INT(fetch_in_flight(l), 0);
    /* The loop stops when this one is done: by then an uncancelled
     * response would have come too. */
    get(l, "/hello", (struct fetch_request){0}, &after_cancel);
}

static void test_cancel(void)
{
    struct loop *l = setup();
    static struct got at_once;
    struct fetch *f = get(l, "/hello", (struct fetch_request){0}, &at_once);
    fetch_cancel(f);
    pending--;
    CHECK_EQ_INT(fetch_in_flight(l), 0);
    fetch_cancel(NULL);
    to_cancel = get(l, "/silent", (struct fetch_request){0}, &cancelled_later);
    struct loop_timer t = {0};
    loop_timer_start(l, &t, 200, cancel_later);
    run(l, 3000);
    CHECK_EQ_INT(at_once.calls, 0);
    CHECK_EQ_INT(cancelled_later.calls, 0);
    CHECK_EQ_INT(after_cancel.calls, 1);
    CHECK_EQ_INT(after_cancel.status, 200);
    CHECK_EQ_INT(server.requests, 2);
    teardown(l);
}

#define MANY 50

static void test_concurrent(void)
{
    struct loop *l = setup();
    static struct got many[MANY];
    char path[32];
    for (int i = 0; i < MANY; i++) {
        snprintf(path, sizeof(path), "/n/%d", i);
        get(l, path, (struct fetch_request){0}, &many[i]);
    }
    CHECK_EQ_INT(fetch_in_flight(l), MANY);
    run(l, 5000);
    CHECK_EQ_INT(fetch_in_flight(l), 0);
    int right = 0;
    for (int i = 0; i < MANY; i++) {
        snprintf(path, sizeof(path), "%d", i);
        right += many[i].calls == 1 && many[i].status == 200 && strcmp(many[i].body, path) == 0;
    }
    CHECK_EQ_INT(right, MANY);
    CHECK_EQ_INT(server.requests, MANY);
    teardown(l);
}

/* A callback that starts the next request, cancels itself (a no-op) and
 * frees its ctx: the fetcher must touch none of them afterwards. */
struct chain {
    struct fetch *self;
    int left;
    struct got *last;
};

static void chain_step(void *ctx, const struct fetch_result *r)
{
    struct chain *c = ctx;
    CHECK_EQ_INT(r->status, 200);
    CHECK_EQ_INT(fetch_in_flight(cur_loop), 0); /* this one no longer counts */
    fetch_cancel(c->self);
    if (c->left == 0) {
        record(c->last, r);
        free(c);
        return;
    }
    struct chain *next = malloc(sizeof(*next));
    *next = (struct chain){.left = c->left - 1, .last = c->last};
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hello", server.port);
    next->self = fetch_start(cur_loop, &(struct fetch_request){.url = url}, chain_step, next);
    CHECK(next->self != NULL);
    CHECK_EQ_INT(fetch_in_flight(cur_loop), 1);
    free(c);
}

static void test_chain(void)
{
    struct loop *l = setup();
    static struct got last;
    struct chain *c = malloc(sizeof(*c));
    *c = (struct chain){.left = 4, .last = &last};
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hello", server.port);
    c->self = fetch_start(l, &(struct fetch_request){.url = url}, chain_step, c);
    pending = 1;
    run(l, 3000);
    CHECK_EQ_INT(last.calls, 1);
    CHECK_EQ_STR(last.body, "hello world");
    CHECK_EQ_INT(server.requests, 5);
    teardown(l);
}

/* Both answers arrive in one epoll batch; the first callback cancels the
 * other request, whose socket event is then stale in that same batch. */
static struct fetch *held[2];
static int held_calls;
static void cancel_the_other(void *ctx, const struct fetch_result *r)
{
    int i = (int)(intptr_t)ctx;
    held_calls++;
    CHECK_EQ_INT(r->status, 200);
    fetch_cancel(held[1 - i]);
    CHECK_EQ_INT(fetch_in_flight(cur_loop), 0);
}

static void test_cancel_other_in_batch(void)
{
    struct loop *l = setup();
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hold", server.port);
    for (int i = 0; i < 2; i++)
        held[i] = fetch_start(l, &(struct fetch_request){.url = url}, cancel_the_other, (void *)(intptr_t)i);
    struct loop_timer t = {0};
    loop_timer_start(l, &t, 300, stop_loop);
    run(l, 3000);
    CHECK_EQ_INT(server.nheld, 3);
    CHECK_EQ_INT(held_calls, 1);
    teardown(l);
}

static void test_free_in_flight(void)
{
    struct loop *l = setup();
    static struct got silent[3], unstarted;
    for (int i = 0; i < 3; i++)
        get(l, "/silent", (struct fetch_request){0}, &silent[i]);
    struct loop_timer t = {0};
    loop_timer_start(l, &t, 150, stop_loop);
    run(l, 3000);
    CHECK_EQ_INT(server.requests, 3); /* connected and waiting */
    CHECK_EQ_INT(fetch_in_flight(l), 3);
    loop_slots_free(l);
    CHECK_EQ_INT(fetch_in_flight(l), 0);
    CHECK_EQ_INT(loop_slot_count(l), 0);
    /* A new fetcher, freed before its request ever ran. */
    get(l, "/hello", (struct fetch_request){0}, &unstarted);
    CHECK_EQ_INT(fetch_in_flight(l), 1);
    teardown(l);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(silent[i].calls, 0);
    CHECK_EQ_INT(unstarted.calls, 0);
}

/* A layer whose per-loop state holds fetches (as the webhook and the TLS
 * checks do): it makes the fetcher before registering its own slot, so its
 * destructor runs first and cancels its fetch while the fetcher is there. */
static const char user_key;
static struct fetch *user_fetch;
static unsigned user_saw_in_flight;

static void user_destroy(struct loop *l, void *value)
{
    (void)value;
    user_saw_in_flight = fetch_in_flight(l); /* the fetcher is still there */
    fetch_cancel(user_fetch);
    user_fetch = NULL;
}

static void test_slot_order(void)
{
    struct loop *l = setup();
    static struct got silent;
    CHECK_EQ_INT(fetch_loop_prepare(l), 0);
    CHECK_EQ_INT(fetch_loop_prepare(l), 0); /* once made, the same one */
    CHECK_EQ_INT(loop_slot_count(l), 1);
    CHECK_EQ_INT(loop_slot_set(l, &user_key, &user_fetch, user_destroy), 0);
    user_fetch = get(l, "/silent", (struct fetch_request){0}, &silent);
    struct loop_timer t = {0};
    loop_timer_start(l, &t, 150, stop_loop);
    run(l, 3000);
    CHECK_EQ_INT(fetch_in_flight(l), 1);
    user_saw_in_flight = 0;
    loop_slots_free(l);
    CHECK_EQ_INT(user_saw_in_flight, 1);
    CHECK(user_fetch == NULL);
    CHECK_EQ_INT(silent.calls, 0);
    teardown(l);
}

int main(void)
{
    if (fetch_global_init() != 0)
        return 1;
    /* Must be ignored: every request would fail through this proxy. */
    setenv("http_proxy", "http://127.0.0.1:9", 1);
    test_get();
    test_post();
    test_refused();
    test_timeout();
    test_timeout_busy_turn();
    test_too_large();
    test_cancel();
    test_concurrent();
    test_chain();
    test_cancel_other_in_batch();
    test_free_in_flight();
    test_slot_order();
    return check_done("test_fetch");
}
