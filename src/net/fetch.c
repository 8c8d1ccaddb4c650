/*
 * libcurl's multi-socket API driven by the loop.  libcurl tells us which
 * sockets to watch (on_curl_socket) and when it next wants to run
 * (on_curl_timer); we tell it what happened with curl_multi_socket_action
 * and then collect finished transfers with curl_multi_info_read.
 *
 * Re-entrancy rules this file keeps:
 *  - User callbacks run only from fetcher_collect, after
 *    curl_multi_socket_action has returned, so a callback may start or cancel
 *    fetches: curl_multi_add_handle / curl_multi_remove_handle are never
 *    called from inside one of libcurl's own callbacks.
 *  - A socket record may still be named by an event later in the loop's
 *    current epoll batch, so a removed record is only marked dead and freed
 *    by a deferred call, which runs after the batch.
 *  - The loop's "cancel a deferred call" cannot take back one that is already
 *    in the pass being run, so the "run libcurl now" deferral is never
 *    cancelled: it checks a flag instead.
 */
#include "net/fetch.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>

#include "core/list.h"

#define FETCH_DEFAULT_TIMEOUT_MS 5000u
#define FETCH_DEFAULT_MAX_BODY ((size_t)1024 * 1024)
#define FETCH_BODY_FIRST_ALLOC ((size_t)4096)
#define FETCH_MAX_IDLE_CONNECTIONS 64

struct fetcher;

/* A socket libcurl asked us to watch. */
struct fetch_sock {
    struct loop_io io; /* first: the loop hands us &io */
    struct fetcher *fr;
    struct fetch_sock *next;
    bool dead; /* libcurl is done with it; freed by fetcher_reap */
};

struct fetch {
    struct fetcher *fr;
    struct list_node node; /* in fr->fetches while in flight */
    CURL *easy;
    struct curl_slist *headers;
    struct curl_slist *connect_to;
    const struct fetch_stream *stream; /* NULL: the body is collected */
    fetch_cb cb;
    void *ctx;
    uint8_t *body;
    size_t len, cap, max_body;
    bool too_large;  /* the write callback refused more bytes */
    bool delivering; /* inside its own callback: fetch_cancel is a no-op */
    bool paused;     /* the stream's on_body said FETCH_PAUSE */
    bool want_max_age;
    char errbuf[CURL_ERROR_SIZE];
};

/* Per-loop state, in the loop's slot under &fetcher_key. */
struct fetcher {
    struct loop *loop;
    CURLM *multi;
    struct loop_timer timer; /* libcurl's timeout */
    struct loop_defer kick;  /* libcurl's "timeout 0": run it after this batch */
    bool kick_wanted;
    struct loop_defer reap; /* frees dead socket records */
    struct fetch_sock *socks;
    struct list_node fetches;
    unsigned in_flight;
};

int fetch_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1; }

/* ---- driving libcurl ---------------------------------------------------- */

static void fetcher_drive(struct fetcher *fr, curl_socket_t s, int mask);

static void on_timer(struct loop *l, struct loop_timer *t)
{
    (void)l;
    struct fetcher *fr = (struct fetcher *)((char *)t - offsetof(struct fetcher, timer));
    fetcher_drive(fr, CURL_SOCKET_TIMEOUT, 0);
}

static void on_kick(struct loop *l, struct loop_defer *d)
{
    (void)l;
    struct fetcher *fr = (struct fetcher *)((char *)d - offsetof(struct fetcher, kick));
    if (!fr->kick_wanted)
        return;
    fr->kick_wanted = false;
    fetcher_drive(fr, CURL_SOCKET_TIMEOUT, 0);
}

/* The loop arms timers from its clock as of the start of the turn, which may
 * be some milliseconds behind; libcurl measures from the real time and skips
 * the timer callback when its deadline has not changed, so a timer that
 * fired early could leave it asleep.  Add the lag (same clock as the loop's)
 * and a millisecond for libcurl's rounding. */
static uint32_t delay_after_now(const struct fetcher *fr, long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t real = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    uint64_t now = loop_now(fr->loop);
    uint64_t d = (uint64_t)ms + (real > now ? real - now : 0) + 1;
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

static void fetcher_arm(struct fetcher *fr, long ms)
{
    fr->kick_wanted = ms == 0;
    if (ms <= 0) {
        loop_timer_stop(fr->loop, &fr->timer);
        if (ms == 0)
            loop_defer(fr->loop, &fr->kick, on_kick);
        return;
    }
    loop_timer_start(fr->loop, &fr->timer, delay_after_now(fr, ms), on_timer);
}

static int on_curl_timer(CURLM *multi, long ms, void *userp)
{
    (void)multi;
    fetcher_arm(userp, ms);
    return 0;
}

/* Belt and braces for the early-timer case above: if libcurl has a deadline
 * and nothing of ours will wake it, arm for it again. */
static void fetcher_keep_timer(struct fetcher *fr)
{
    long ms = -1;
    if (loop_timer_armed(&fr->timer) || fr->kick_wanted)
        return;
    if (curl_multi_timeout(fr->multi, &ms) == CURLM_OK && ms >= 0)
        fetcher_arm(fr, ms);
}

/* ---- sockets ------------------------------------------------------------ */

static void fetcher_reap(struct loop *l, struct loop_defer *d)
{
    (void)l;
    struct fetcher *fr = (struct fetcher *)((char *)d - offsetof(struct fetcher, reap));
    struct fetch_sock **pp = &fr->socks;
    while (*pp) {
        struct fetch_sock *fs = *pp;
        if (fs->dead) {
            *pp = fs->next;
            free(fs);
        } else {
            pp = &fs->next;
        }
    }
}

/* still_open: the descriptor is still in the epoll set (libcurl said
 * REMOVE before closing).  A descriptor that was closed already left the
 * set by itself, and its number may belong to someone else by now. */
static void sock_retire(struct fetcher *fr, struct fetch_sock *fs, bool still_open)
{
    if (still_open)
        loop_io_del(fr->loop, &fs->io);
    fs->dead = true;
    loop_defer(fr->loop, &fr->reap, fetcher_reap);
}

static int csel_mask(uint32_t ev)
{
    return (ev & EPOLLIN ? CURL_CSELECT_IN : 0) | (ev & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
           (ev & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
}

static void on_sock_ready(struct loop *l, struct loop_io *io, uint32_t events)
{
    (void)l;
    struct fetch_sock *fs = (struct fetch_sock *)io;
    if (fs->dead) /* a stale event from this batch */
        return;
    fetcher_drive(fs->fr, io->fd, csel_mask(events));
}

static struct fetch_sock *sock_watch(struct fetcher *fr, curl_socket_t s, uint32_t events)
{
    /* A live record with this number means libcurl closed that socket
     * without telling us and the number came back for a new one. */
    for (struct fetch_sock *old = fr->socks; old; old = old->next)
        if (!old->dead && old->io.fd == s)
            sock_retire(fr, old, false);
    struct fetch_sock *fs = calloc(1, sizeof(*fs));
    if (!fs)
        return NULL;
    fs->fr = fr;
    if (loop_io_add(fr->loop, &fs->io, s, events, on_sock_ready) != 0) {
        free(fs);
        return NULL;
    }
    fs->next = fr->socks;
    fr->socks = fs;
    return fs;
}

static uint32_t poll_events(int what)
{
    return (what & CURL_POLL_IN ? (uint32_t)EPOLLIN : 0) | (what & CURL_POLL_OUT ? (uint32_t)EPOLLOUT : 0);
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct fetcher *fr = userp;
    struct fetch_sock *fs = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (fs && !fs->dead)
            sock_retire(fr, fs, true);
        return 0;
    }
    if (fs && !fs->dead)
        return loop_io_set(fr->loop, &fs->io, poll_events(what)) == 0 ? 0 : -1;
    fs = sock_watch(fr, s, poll_events(what));
    if (!fs)
        return -1; /* libcurl fails the transfers on this socket */
    curl_multi_assign(fr->multi, s, fs);
    return 0;
}

/* ---- requests ----------------------------------------------------------- */

static void fetch_free(struct fetch *f)
{
    if (f->easy)
        curl_easy_cleanup(f->easy);
    curl_slist_free_all(f->headers);
    curl_slist_free_all(f->connect_to);
    free(f->body);
    free(f);
}

static void fetch_unlink(struct fetch *f)
{
    struct fetcher *fr = f->fr;
    list_remove(&f->node);
    ASSERT(fr->in_flight > 0);
    fr->in_flight--;
}

static const char *fetch_error(struct fetch *f, CURLcode rc)
{
    if (f->too_large || rc == CURLE_FILESIZE_EXCEEDED)
        return "response too large";
    return f->errbuf[0] ? f->errbuf : curl_easy_strerror(rc);
}

/* Directives split at commas, names without case: "no-store" and
 * "no-cache" win over a max-age (nothing to keep), a max-age past a day
 * is a day. */
long fetch_cache_control_max_age(const char *v)
{
    long age = -1;
    while (v && *v) {
        v += strspn(v, " \t,");
        size_t n = strcspn(v, ",");
        if ((n == 8 && strncasecmp(v, "no-store", 8) == 0) || (n == 8 && strncasecmp(v, "no-cache", 8) == 0))
            return 0;
        if (n > 8 && strncasecmp(v, "max-age=", 8) == 0 && v[8] >= '0' && v[8] <= '9') {
            char *end;
            unsigned long long a = strtoull(v + 8, &end, 10);
            if ((size_t)(end - v) == n || strspn(end, " \t") == (size_t)(v + n - end))
                age = a > 86400 ? 86400 : (long)a;
        }
        v += n;
    }
    return age;
}

static long answer_max_age(struct fetch *f)
{
    struct curl_header *h;
    long age = -1;
    for (size_t i = 0; curl_easy_header(f->easy, "Cache-Control", i, CURLH_HEADER, -1, &h) == CURLHE_OK; i++) {
        long a = fetch_cache_control_max_age(h->value);
        if (a == 0)
            return 0;
        if (a > 0 && (age < 0 || a < age))
            age = a;
        if (i + 1 >= h->amount)
            break;
    }
    return age;
}

static void fetch_finish(struct fetch *f, CURLcode rc)
{
    long status = 0;
    curl_off_t us = 0;
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(f->easy, CURLINFO_TOTAL_TIME_T, &us);
    long max_age = rc == CURLE_OK && f->want_max_age ? answer_max_age(f) : -1; /* before the handle leaves */
    curl_multi_remove_handle(f->fr->multi, f->easy);
    fetch_unlink(f);

    struct fetch_result r = {.status = (int)status, .seconds = (double)us / 1e6, .max_age = max_age};
    if (rc == CURLE_OK) {
        r.body = f->body ? f->body : (const uint8_t *)"";
        r.len = f->len;
    } else {
        r.body = (const uint8_t *)"";
        r.error = fetch_error(f, rc);
        r.timed_out = rc == CURLE_OPERATION_TIMEDOUT;
    }
    f->delivering = true;
    f->cb(f->ctx, &r); /* may free ctx, start or cancel other fetches */
    fetch_free(f);
}

/* Runs only outside libcurl's callbacks (see the top of the file). */
static void fetcher_collect(struct fetcher *fr)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(fr->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        CURLcode rc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        fetch_finish((struct fetch *)priv, rc);
    }
}

static void fetcher_drive(struct fetcher *fr, curl_socket_t s, int mask)
{
    int running;
    curl_multi_socket_action(fr->multi, s, mask, &running);
    fetcher_collect(fr);
    fetcher_keep_timer(fr);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct fetch *f = userp;
    size_t n = size * nmemb;
    if (n > f->max_body - f->len) {
        f->too_large = true;
        return 0; /* anything but n aborts the transfer */
    }
    if (f->len + n > f->cap) {
        size_t cap = f->cap ? f->cap * 2 : FETCH_BODY_FIRST_ALLOC;
        if (cap < f->len + n)
            cap = f->len + n;
        if (cap > f->max_body)
            cap = f->max_body;
        uint8_t *b = realloc(f->body, cap);
        if (!b)
            return 0;
        f->body = b;
        f->cap = cap;
    }
    memcpy(f->body + f->len, data, n);
    f->len += n;
    return n;
}

/* A streamed response, as libcurl hands it over (see fetch.h). */
static size_t on_stream_header(char *data, size_t size, size_t nmemb, void *userp)
{
    struct fetch *f = userp;
    size_t n = size * nmemb;
    return f->stream->on_header(f->ctx, data, n) == 0 ? n : 0;
}

static size_t on_stream_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct fetch *f = userp;
    size_t n = size * nmemb;
    switch (f->stream->on_body(f->ctx, (const uint8_t *)data, n)) {
    case FETCH_TAKEN:
        return n;
    case FETCH_PAUSE:
        f->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    default:
        return 0; /* anything but n aborts the transfer */
    }
}

void fetch_resume(struct fetch *f)
{
    if (!f || !f->paused)
        return;
    f->paused = false;
    /* libcurl may hand over what it kept from inside this call, and arms its
     * timer (a "timeout 0": our kick) to go on reading. */
    curl_easy_pause(f->easy, CURLPAUSE_CONT);
}

static bool header_value_ok(const char *v) { return !v || strpbrk(v, "\r\n") == NULL; }

static int add_header(struct fetch *f, const char *name, const char *value)
{
    char *line;
    if (asprintf(&line, "%s: %s", name, value) < 0)
        return -1;
    struct curl_slist *h = curl_slist_append(f->headers, line);
    free(line);
    if (!h)
        return -1;
    f->headers = h;
    return 0;
}

static int set_headers(struct fetch *f, const struct fetch_request *req, bool has_body)
{
    /* No "Expect: 100-continue" wait before sending a body: our bodies are
     * small and some servers never answer it. */
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    if (!h)
        return -1;
    f->headers = h;
    if (req->headers) {
        for (const char *const *line = req->headers; *line; line++) {
            if (!(h = curl_slist_append(f->headers, *line)))
                return -1;
            f->headers = h;
        }
    }
    const char *ctype = req->content_type;
    if (!ctype && has_body && !req->headers)
        ctype = "application/octet-stream"; /* not libcurl's form-urlencoded */
    if (ctype && add_header(f, "Content-Type", ctype) != 0)
        return -1;
    if (req->accept && add_header(f, "Accept", req->accept) != 0)
        return -1;
    return curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER, f->headers) == CURLE_OK ? 0 : -1;
}

static CURLcode set_method(CURL *e, const struct fetch_request *req, bool has_body)
{
    const char *m = req->method ? req->method : has_body ? "POST" : "GET";
    CURLcode rc = CURLE_OK;
    if (has_body || strcmp(m, "POST") == 0) {
        rc = curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        if (rc == CURLE_OK && req->body_borrowed)
            rc = curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body ? (const char *)req->body : "");
        else if (rc == CURLE_OK) /* copied: the caller's buffer may go away now */
            rc = curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body ? (const char *)req->body : "");
        if (rc == CURLE_OK && strcmp(m, "POST") != 0)
            rc = curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    } else if (strcmp(m, "HEAD") == 0) {
        rc = curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "GET") != 0) {
        rc = curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    }
    return rc;
}

/* The limits every request gets, whatever the caller asked. */
static CURLcode set_policy(struct fetch *f, uint32_t timeout_ms, bool stream)
{
    CURL *e = f->easy;
    CURLcode rc = curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
#define FETCH_SET(opt, val)                                                            \
    do {                                                                               \
        if (rc == CURLE_OK)                                                            \
            rc = curl_easy_setopt(e, opt, val);                                        \
    } while (0)
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    FETCH_SET(CURLOPT_PROTOCOLS_STR, "http,https");
    FETCH_SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    FETCH_SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    FETCH_SET(CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
#if LIBCURL_VERSION_NUM >= 0x075700 /* 7.87.0 */
    /* Cancelling during a name lookup would otherwise join the resolver
     * thread, blocking the loop until getaddrinfo returns. */
    FETCH_SET(CURLOPT_QUICK_EXIT, 1L);
#endif
    FETCH_SET(CURLOPT_FOLLOWLOCATION, 0L);
    FETCH_SET(CURLOPT_NOPROXY, "*");
    FETCH_SET(CURLOPT_USERAGENT, "mgate");
    FETCH_SET(CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    if (!stream)
        FETCH_SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->max_body);
    FETCH_SET(CURLOPT_ERRORBUFFER, f->errbuf);
    FETCH_SET(CURLOPT_WRITEFUNCTION, stream ? on_stream_body : on_body);
    FETCH_SET(CURLOPT_WRITEDATA, f);
    if (stream) {
        FETCH_SET(CURLOPT_HEADERFUNCTION, on_stream_header);
        FETCH_SET(CURLOPT_HEADERDATA, f);
    }
    FETCH_SET(CURLOPT_PRIVATE, f);
#undef FETCH_SET
    return rc;
}

/* Where and how to reach a proxied target (all optional). */
static CURLcode set_target(struct fetch *f, const struct fetch_request *req)
{
    CURL *e = f->easy;
    CURLcode rc = CURLE_OK;
    if (req->connect_timeout_ms)
        rc = curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)req->connect_timeout_ms);
    if (rc == CURLE_OK && req->connect_to) {
        if (!(f->connect_to = curl_slist_append(NULL, req->connect_to)))
            return CURLE_OUT_OF_MEMORY;
        rc = curl_easy_setopt(e, CURLOPT_CONNECT_TO, f->connect_to);
    }
    if (rc == CURLE_OK && req->ca_file)
        rc = curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
    if (rc == CURLE_OK && req->cert_file)
        rc = curl_easy_setopt(e, CURLOPT_SSLCERT, req->cert_file);
    if (rc == CURLE_OK && req->key_file)
        rc = curl_easy_setopt(e, CURLOPT_SSLKEY, req->key_file);
    if (rc == CURLE_OK && req->no_verify) {
        rc = curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (rc == CURLE_OK && req->headers) { /* a proxied request goes as the client wrote it */
        rc = curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    }
    return rc;
}

static int fetch_setup(struct fetch *f, const struct fetch_request *req)
{
    bool has_body = req->body != NULL || req->body_len > 0;
    if ((req->body_len > 0 && !req->body) || !header_value_ok(req->content_type) ||
        !header_value_ok(req->accept) || (req->method && !header_value_ok(req->method))) {
        errno = EINVAL;
        return -1;
    }
    if (req->headers)
        for (const char *const *line = req->headers; *line; line++)
            if (!header_value_ok(*line)) {
                errno = EINVAL;
                return -1;
            }
    f->max_body = req->max_body ? req->max_body : FETCH_DEFAULT_MAX_BODY;
    f->stream = req->stream;
    f->want_max_age = req->want_max_age;
    uint32_t timeout = req->no_timeout ? 0 : req->timeout_ms ? req->timeout_ms : FETCH_DEFAULT_TIMEOUT_MS;
    CURLcode rc = set_policy(f, timeout, req->stream != NULL);
    if (rc == CURLE_OK)
        rc = set_target(f, req);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(f->easy, CURLOPT_URL, req->url);
    if (rc == CURLE_OK)
        rc = set_method(f->easy, req, has_body);
    if (rc != CURLE_OK) {
        errno = rc == CURLE_OUT_OF_MEMORY ? ENOMEM : EINVAL;
        return -1;
    }
    if (set_headers(f, req, has_body) != 0) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

/* ---- the per-loop fetcher ----------------------------------------------- */

/* The key of the fetcher's loop slot: only its address matters. */
static const char fetcher_key;

static void fetcher_destroy(struct loop *l, void *value);

static struct fetcher *fetcher_get(struct loop *l)
{
    struct fetcher *fr = loop_slot_get(l, &fetcher_key);
    if (fr)
        return fr;
    if (!(fr = calloc(1, sizeof(*fr))))
        return NULL;
    fr->loop = l;
    fr->multi = curl_multi_init();
    if (!fr->multi || loop_slot_set(l, &fetcher_key, fr, fetcher_destroy) < 0) {
        if (fr->multi)
            curl_multi_cleanup(fr->multi);
        free(fr);
        return NULL;
    }
    curl_multi_setopt(fr->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(fr->multi, CURLMOPT_SOCKETDATA, fr);
    curl_multi_setopt(fr->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(fr->multi, CURLMOPT_TIMERDATA, fr);
    /* Idle connections kept for reuse: enough for a busy target, and not one
     * per request of the last burst (libcurl's default is 4 per handle). */
    curl_multi_setopt(fr->multi, CURLMOPT_MAXCONNECTS, (long)FETCH_MAX_IDLE_CONNECTIONS);
    return fr;
}

struct fetch *fetch_start(struct loop *l, const struct fetch_request *req, fetch_cb cb, void *ctx)
{
    if (!l || !req || !req->url || !cb) {
        errno = EINVAL;
        return NULL;
    }
    struct fetcher *fr = fetcher_get(l);
    struct fetch *f = fr ? calloc(1, sizeof(*f)) : NULL;
    if (!f || !(f->easy = curl_easy_init())) {
        free(f);
        errno = ENOMEM;
        return NULL;
    }
    f->fr = fr;
    f->cb = cb;
    f->ctx = ctx;
    if (fetch_setup(f, req) != 0) {
        int saved = errno;
        fetch_free(f);
        errno = saved;
        return NULL;
    }
    /* Adding only arms libcurl's timer (through on_curl_timer); the transfer
     * starts from the loop, so cb never runs before we return. */
    if (curl_multi_add_handle(fr->multi, f->easy) != CURLM_OK) {
        fetch_free(f);
        errno = ENOMEM;
        return NULL;
    }
    list_push_front(&fr->fetches, &f->node);
    fr->in_flight++;
    return f;
}

void fetch_cancel(struct fetch *f)
{
    if (!f || f->delivering)
        return;
    curl_multi_remove_handle(f->fr->multi, f->easy);
    fetch_unlink(f);
    fetch_free(f);
}

unsigned fetch_in_flight(struct loop *l)
{
    struct fetcher *fr = loop_slot_get(l, &fetcher_key);
    return fr ? fr->in_flight : 0;
}

int fetch_loop_prepare(struct loop *l) { return fetcher_get(l) ? 0 : -1; }

/* The slot's destructor (after loop_run has returned): cancel everything
 * and free libcurl's state. */
static void fetcher_destroy(struct loop *l, void *value)
{
    struct fetcher *fr = value;
    while (!list_empty(&fr->fetches))
        fetch_cancel(container_of(list_first(&fr->fetches), struct fetch, node));
    ASSERT(fr->in_flight == 0);
    for (struct fetch_sock *fs = fr->socks; fs; fs = fs->next)
        if (!fs->dead)
            sock_retire(fr, fs, true);
    curl_multi_cleanup(fr->multi); /* closes cached connections */
    loop_timer_stop(l, &fr->timer);
    loop_defer_cancel(l, &fr->kick);
    loop_defer_cancel(l, &fr->reap);
    fetcher_reap(l, &fr->reap); /* every record is dead by now */
    free(fr);
}
