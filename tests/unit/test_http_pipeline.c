/* Pipelined HTTP requests with late verdicts, on the real HTTP front end
 * (front_http, its session and the verdict engine) and no network: the
 * client is one end of a socketpair, the handler a table of answers by
 * topic (the request's path), given now or later, step by step.
 *
 * Nothing is forwarded (that would need a target): every request here is
 * answered by mgate, which is what shows the order.  The client sends four
 * requests in one write; the answers must come in that order, each request
 * asked only once the one before it is answered, whatever order the late
 * verdicts come in. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "config/config.h"
#include "front/front.h"
#include "session/internal.h"

/* ---- the handler: auth_connect by username, auth_publish by topic ------ */

static int connects, publishes;
static char asked[8][16]; /* the topics auth_publish saw, in order */
static void *kept;        /* the request a late answer holds */

static enum mgate_verdict auth_connect(mgate_session *s, struct mgate_connect_req *r)
{
    (void)s;
    connects++;
    return r->username.len == 3 && !memcmp(r->username.p, "bad", 3) ? MGATE_DENY : MGATE_ALLOW;
}

static enum mgate_verdict auth_publish(mgate_session *s, struct mgate_publish_req *r)
{
    (void)s;
    if (publishes < 8)
        snprintf(asked[publishes], sizeof(asked[0]), "%.*s", (int)r->topic.len, (const char *)r->topic.p);
    publishes++;
    if (r->topic.len >= 6 && !memcmp(r->topic.p, "/late/", 6)) { /* the path is the topic */
        kept = r;
        return MGATE_PENDING;
    }
    return MGATE_DENY;
}

static const struct mgate_handler judge = {.name = "judge", .auth_connect = auth_connect,
                                           .auth_publish = auth_publish};
static const struct mgate_handler *const chain[] = {&judge};

/* ---- the run: a step each time the loop has nothing due ---------------- */

static struct loop *loop;
static struct session_list list;
static int peer_fd = -1;
static mgate_session *sess;
typedef void (*step_fn)(void);
static const step_fn *steps;
static bool closing;

static int next_step(void *ctx, int timeout_ms)
{
    (void)ctx;
    if (timeout_ms == 0)
        return 0; /* work is due now (a readable socket is seen by this poll) */
    if (*steps) {
        (*steps++)();
    } else if (!closing) {
        closing = true;
        session_list_close_all(&list);
    } else {
        loop_stop(loop);
    }
    return 0;
}

/* What the client has been sent so far, appended to got. */
static char got[8192];
static size_t got_len;
static void drain_peer(void)
{
    ssize_t n;
    while (got_len < sizeof(got) - 1 && (n = read(peer_fd, got + got_len, sizeof(got) - 1 - got_len)) > 0)
        got_len += (size_t)n;
    got[got_len] = 0;
}

/* The status lines the client got, "403 401 ..." */
static const char *statuses(void)
{
    static char out[64];
    size_t o = 0;
    out[0] = 0;
    for (const char *p = got; (p = strstr(p, "HTTP/1.1 ")) && o + 5 < sizeof(out); p += 9)
        o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%.3s", o ? " " : "", p + 9);
    return out;
}

/* mgate_resume needs the session the request belongs to: the only one. */
static mgate_session *only_session(void)
{
    return list.count == 1 ? container_of(list.sessions.next, struct mgate_session, node) : NULL;
}

#define POST(path, auth) \
    "POST " path " HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " auth "\r\nContent-Length: 2\r\n\r\nhi"
#define GOOD "Z29vZDpwdw==" /* good:pw */
#define BAD "YmFkOnB3"      /* bad:pw */

static void send_four(void)
{
    static const char reqs[] = POST("/late/one", GOOD) POST("/deny", GOOD) POST("/x", BAD) POST("/late/four", GOOD);
    CHECK_EQ_INT(write(peer_fd, reqs, sizeof(reqs) - 1), (ssize_t)(sizeof(reqs) - 1));
}
static void first_waits(void)
{
    drain_peer();
    CHECK_EQ_INT(publishes, 1); /* the first is with the handler; nothing behind it was asked */
    CHECK_EQ_STR(asked[0], "/late/one");
    CHECK_EQ_INT(got_len, 0); /* and nothing answered */
    CHECK(kept != NULL);
    sess = only_session();
    CHECK(sess != NULL);
}
static void resume_first(void)
{
    mgate_resume(sess, kept, MGATE_DENY);
    kept = NULL;
}
static void rest_until_fourth(void)
{
    drain_peer();
    CHECK_EQ_STR(statuses(), "403 403 401"); /* one, two (denied at once), three (auth_connect) */
    CHECK_EQ_INT(publishes, 3);                /* three never reached auth_publish */
    CHECK_EQ_STR(asked[1], "/deny");
    CHECK_EQ_STR(asked[2], "/late/four");
    CHECK(kept != NULL);
}
static void resume_fourth(void) { mgate_resume(sess, kept, MGATE_DENY); }
static void all_answered(void)
{
    drain_peer();
    CHECK_EQ_STR(statuses(), "403 403 401 403");
    CHECK_EQ_INT(connects, 4);
}

/* A late verdict for a client that has gone: nothing is written, the
 * session is ended at once and freed after the verdict (ASan). */
static void send_one_late(void)
{
    static const char req[] = POST("/late/gone", GOOD);
    CHECK_EQ_INT(write(peer_fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
}
static void client_leaves(void)
{
    sess = only_session();
    CHECK(kept != NULL && sess != NULL);
    close(peer_fd);
    peer_fd = -1;
}
static void ended(void) { CHECK_EQ_INT(list.count, 0); }
static void resume_gone(void) { mgate_resume(sess, kept, MGATE_ALLOW); }

/* ---- setup ------------------------------------------------------------ */

static const char *const env[] = {
    "MGATE_HTTP_WITHOUT_TLS_PORT", "8086", "MGATE_HTTP_WITHOUT_TLS_TARGET_HOST", "127.0.0.1",
    "MGATE_HTTP_WITHOUT_TLS_TARGET_PORT", "9", NULL,
};
static const char *table_env(void *ctx, const char *name)
{
    for (const char *const *p = ctx; p && *p; p += 2)
        if (strcmp(*p, name) == 0)
            return p[1];
    return NULL;
}

static void run(const struct session_params *p, const step_fn *s)
{
    connects = publishes = 0;
    kept = NULL;
    got_len = 0;
    closing = false;
    steps = s;
    loop = loop_new();
    list = (struct session_list){0};
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    peer_fd = sv[1];
    static const struct sockaddr_in peer = {.sin_family = AF_INET};
    front_http.accept(loop, sv[0], (const struct sockaddr *)&peer, p, &list);
    struct loop_hook hook = {.before_poll = next_step};
    loop_hook_add(loop, &hook);
    loop_run(loop);
    CHECK_EQ_INT(list.count, 0);
    loop_free(loop);
    free(list.spare);
    if (peer_fd >= 0)
        close(peer_fd);
}

int main(void)
{
    struct mgate_config cfg;
    char err[512] = "";
    struct config_source src = {table_env, (void *)env, NULL, NULL};
    if (config_load(&cfg, &src, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        return 1;
    }
    struct session_params p = {0};
    CHECK_EQ_INT(front_http.prepare(&cfg.listeners[LISTENER_HTTP], &p, err, sizeof(err)), 0);
    p.listener = "test";
    p.connect_timeout_ms = 5000;
    p.output_high_water = 65536;
    p.max_packet_size = 1 << 20;
    p.handlers = chain;
    p.handler_count = 1;

    static const step_fn pipelined[] = {send_four, first_waits, resume_first, rest_until_fourth, resume_fourth,
                                        all_answered, NULL};
    run(&p, pipelined);

    static const step_fn gone[] = {send_one_late, client_leaves, ended, resume_gone, NULL};
    run(&p, gone);
    CHECK_EQ_INT(publishes, 1);

    front_http.free(&p);
    config_free(&cfg);
    return check_done("test_http_pipeline");
}
