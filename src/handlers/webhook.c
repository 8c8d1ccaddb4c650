/*
 * The `http` handler: an auth webhook.  For each CONNECT, PUBLISH and
 * SUBSCRIBE filter it POSTs a JSON description to MGATE_WEBHOOK_URL and
 * leaves the verdict pending until the answer comes; the request runs on
 * the worker's loop (libcurl multi-socket, net/fetch.c), so other clients
 * are never held up.  docs/HANDLERS.md ("http") has the documents.
 *
 *   answer    2xx with {"result":"allow"|"ok"|"deny"|"ignore"|"next"|{"error":...}}
 *             and, for an allow, "modifiers" that rewrite the request
 *             (webhook_json.c reads them, webhook_apply.c applies them);
 *             2xx without a result: allow; 4xx: deny; anything else (5xx,
 *             a timeout, no connection, an unreadable answer):
 *             MGATE_WEBHOOK_ON_ERROR.
 *   ignore    passes the request to the next handler of the chain.
 *
 * Per worker: at most MGATE_WEBHOOK_CONCURRENCY requests in flight, the rest
 * wait in order; allow and deny answers are kept (webhook_cache.c) for the
 * answer's Cache-Control max-age, else MGATE_WEBHOOK_CACHE_TTL (off by
 * default), and a kept answer is applied again, modifiers and all, without
 * a request.  Deliveries from the broker are not sent to the webhook (one
 * request per message would be too much): they are passed on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/loop.h"
#include "handlers/handlers.h"
#include "handlers/webhook.h"
#include "mqtt/mqtt.h"
#include "net/fetch.h"
#include "session/session.h"

/* An answer may carry a rewritten payload (base64): a few hundred KiB. */
#define MAX_ANSWER (1024u * 1024u)

enum result { R_ALLOW = WH_ALLOW, R_DENY = WH_DENY, R_IGNORE = WH_IGNORE, R_ERROR = WH_ERROR };

static struct {
    char *url;
    uint32_t timeout_ms, cache_ttl_ms;
    unsigned concurrency;
    enum result on_error;
} cfg;

struct item;

/* Per worker loop. */
struct webhook {
    struct loop *loop;
    unsigned inflight;
    /* Requests with items waiting for a free slot, served in turn: one item
     * of each a round, so one client's large SUBSCRIBE (an item a filter)
     * delays its own answer, not every other client's CONNECT. */
    struct group *queue, **queue_tail;
    struct list_node active;          /* items in flight */
    struct wh_cache *cache;           /* made on the first answer to keep */
};

enum kind { K_CONNECT = WH_CONNECT, K_PUBLISH = WH_PUBLISH, K_SUBSCRIBE = WH_SUBSCRIBE };

struct group;

/* One HTTP request: the CONNECT, the PUBLISH, or one filter of a SUBSCRIBE. */
struct item {
    struct group *g;
    uint32_t filter; /* SUBSCRIBE: its index */
    struct fetch *f;
    struct list_node node; /* in the active list while in flight */
    uint8_t key[WH_KEY_LEN];
    char *body;
    size_t len;
};

/* Everything one auth_* call waits for. */
struct group {
    struct webhook *wh;
    mgate_session *s;
    void *req;
    enum kind kind;
    uint32_t remaining; /* items still waiting */
    bool any_ignore;
    enum result single; /* CONNECT, PUBLISH: the answer */
    uint32_t n;
    uint32_t unsent;    /* items[unsent...]: the next to send, when queued */
    struct group *qnext; /* in wh->queue */
    struct item items[];
};

/* A SUBSCRIBE is one request a filter: beyond this many, the filters are
 * refused unasked (0x87), so one packet cannot make a client hold
 * hundreds of requests' memory (a 1 MiB SUBSCRIBE carries 200,000
 * filters).  Real clients subscribe a handful at a time. */
#define MAX_FILTERS_ASKED 1024u

/* ---- per-worker state -------------------------------------------------- */

static const char webhook_key; /* of the loop slot; only its address matters */

static void webhook_destroy(struct loop *l, void *value);

/* Made on the first request: the fetcher first, so that this slot,
 * registered after it, is freed before it (core/loop.h) and its requests
 * are cancelled while libcurl's state is still there. */
static struct webhook *webhook_get(struct loop *l)
{
    struct webhook *wh = loop_slot_get(l, &webhook_key);
    if (wh)
        return wh;
    if (fetch_loop_prepare(l) < 0 || !(wh = calloc(1, sizeof(*wh))))
        return NULL;
    if (loop_slot_set(l, &webhook_key, wh, webhook_destroy) < 0) {
        free(wh);
        return NULL;
    }
    wh->loop = l;
    wh->queue_tail = &wh->queue;
    return wh;
}

/* Keep an answer: for its own Cache-Control max-age when it gave one,
 * else MGATE_WEBHOOK_CACHE_TTL. */
static void cache_put(struct webhook *wh, const uint8_t *key, long max_age, enum result r, const uint8_t *body,
                      size_t len)
{
    uint32_t ttl = max_age >= 0 ? (uint32_t)max_age * 1000u : cfg.cache_ttl_ms;
    if (!ttl || (r != R_ALLOW && r != R_DENY))
        return;
    if (!wh->cache && !(wh->cache = wh_cache_new()))
        return; /* out of memory: the next request asks again */
    wh_cache_put(wh->cache, key, loop_now(wh->loop), ttl, (enum wh_result)r, body, len);
}

/* ---- verdicts ---------------------------------------------------------- */

static const char *const result_names[] = {"allow", "deny", "ignore", "error"};
static const char *const kind_names[] = {"connect", "publish", "subscribe"};

static enum mgate_verdict group_verdict(struct group *g)
{
    if (g->kind == K_SUBSCRIBE)
        return g->any_ignore ? MGATE_IGNORE : MGATE_ALLOW;
    enum result r = g->single == R_ERROR ? cfg.on_error : g->single;
    if (r == R_ALLOW)
        return MGATE_ALLOW;
    if (r == R_IGNORE)
        return MGATE_IGNORE;
    if (g->kind == K_CONNECT)
        ((struct mgate_connect_req *)g->req)->reason =
            g->single == R_ERROR ? MGATE_REASON_SERVER_UNAVAILABLE : MGATE_REASON_NOT_AUTHORIZED;
    return MGATE_DENY;
}

/* Record one item's answer in its request: an answer's modifiers (a, or
 * NULL when there is no body to read) are applied first, and may turn
 * an allow into a deny. */
static void item_answer(struct item *it, enum result r, struct wh_answer *a)
{
    struct group *g = it->g;
    if (a && r == R_ALLOW)
        r = mgate_session_closed(g->s) ? R_DENY : (enum result)wh_apply(g->s, (enum wh_kind)g->kind, g->req, it->filter, a);
    else if (a && a->bad) /* a deny all the same; still worth a line */
        wh_apply(g->s, (enum wh_kind)g->kind, g->req, it->filter, a);
    if (g->kind != K_SUBSCRIBE) {
        g->single = r;
        return;
    }
    if (r == R_ERROR)
        r = cfg.on_error;
    struct mgate_subscribe_req *req = g->req;
    if (r == R_DENY)
        req->filters[it->filter].denied = true;
    else if (r == R_IGNORE)
        g->any_ignore = true;
}

static void group_free(struct group *g)
{
    for (uint32_t i = 0; i < g->n; i++)
        free(g->items[i].body);
    free(g);
}

static void start_next(struct webhook *wh);

/* A request finished (or was never sent): when it was the group's last,
 * resume the session. */
static void item_done(struct item *it, enum result r, struct wh_answer *a)
{
    struct group *g = it->g;
    item_answer(it, r, a);
    free(it->body);
    it->body = NULL;
    if (--g->remaining)
        return;
    mgate_resume(g->s, g->req, group_verdict(g));
    group_free(g);
}

static void on_answer(void *ctx, const struct fetch_result *res)
{
    struct item *it = ctx;
    struct webhook *wh = it->g->wh;
    it->f = NULL;
    list_remove(&it->node);
    ASSERT(wh->inflight > 0);
    wh->inflight--;
    enum result r = R_ERROR;
    struct wh_answer a = {0};
    bool read = !res->error && res->status >= 200 && res->status < 300;
    if (read) {
        wh_answer_parse(&a, (enum wh_kind)it->g->kind, res->body, res->len, false);
        r = (enum result)a.result;
    } else if (!res->error && res->status >= 400 && res->status < 500) {
        r = R_DENY;
    }
    if (r == R_ERROR || log_enabled(LOGL_DEBUG)) {
        /* budgeted: a client's flood while the service is down is one line per request */
        session_log(it->g->s, r == R_ERROR ? LOGL_WARN : LOGL_DEBUG, "http: %s %s: %s (%.0f ms)%s",
                  kind_names[it->g->kind], res->error ? res->error : "answered", result_names[r], res->seconds * 1000,
                  res->error || (res->status >= 200 && res->status < 500) ? "" : " (status not 2xx/4xx)");
    }
    if (r != R_ERROR)
        cache_put(wh, it->key, res->max_age, r, read ? res->body : NULL, read ? res->len : 0);
    item_done(it, r, read ? &a : NULL);
    wh_answer_free(&a);
    start_next(wh);
}

static void send_item(struct webhook *wh, struct item *it)
{
    if (mgate_session_closed(it->g->s)) { /* nobody to answer any more */
        item_done(it, R_DENY, NULL);
        return;
    }
    struct fetch_request fr = {.url = cfg.url, .method = "POST", .body = (const uint8_t *)it->body,
                               .body_len = it->len, .content_type = "application/json",
                               .accept = "application/json", .timeout_ms = cfg.timeout_ms, .max_body = MAX_ANSWER,
                               .want_max_age = true};
    it->f = fetch_start(wh->loop, &fr, on_answer, it);
    if (!it->f) {
        mgate_log(LOGL_WARN, it->g->s, "http: cannot start a request: out of memory");
        item_done(it, R_ERROR, NULL);
        return;
    }
    wh->inflight++;
    METRIC_INC(loop_metrics(wh->loop)->webhook_requests);
    list_push_front(&wh->active, &it->node);
}

static void queue_push(struct webhook *wh, struct group *g)
{
    g->qnext = NULL;
    *wh->queue_tail = g;
    wh->queue_tail = &g->qnext;
}

/* The next unsent item of g (the cache answered some), or NULL. */
static struct item *next_unsent(struct group *g)
{
    while (g->unsent < g->n && !g->items[g->unsent].body)
        g->unsent++;
    return g->unsent < g->n ? &g->items[g->unsent++] : NULL;
}

static void start_next(struct webhook *wh)
{
    while (wh->queue && wh->inflight < cfg.concurrency) {
        struct group *g = wh->queue;
        if (!(wh->queue = g->qnext))
            wh->queue_tail = &wh->queue;
        struct item *it = next_unsent(g);
        bool more = g->unsent < g->n;
        if (more) /* to the back of the line before sending: sending may free g */
            queue_push(wh, g);
        if (it)
            send_item(wh, it);
    }
}

/* ---- requests ---------------------------------------------------------- */

/* The JSON body of one item, and its cache key (webhook_json.c). */
static int item_build(struct item *it, mgate_session *s, const struct wh_doc *d)
{
    it->body = wh_request(s, d, it->key, &it->len);
    return it->body ? 0 : -1;
}

static struct group *group_new(mgate_session *s, void *req, enum kind kind, uint32_t n)
{
    struct webhook *wh = webhook_get(session_loop(s));
    struct group *g = wh ? calloc(1, sizeof(*g) + n * sizeof(struct item)) : NULL;
    if (!g)
        return NULL;
    *g = (struct group){.wh = wh, .s = s, .req = req, .kind = kind, .n = n};
    for (uint32_t i = 0; i < n; i++)
        g->items[i].g = g;
    return g;
}

/* An answer kept for it->key, applied as if it had just come (an allow's
 * modifiers read again from its body, without a payload): whether one was
 * kept. */
static bool cache_answer(struct group *g, struct item *it)
{
    struct webhook *wh = g->wh;
    enum wh_result r;
    const uint8_t *body;
    size_t len;
    if (!wh->cache || !wh_cache_get(wh->cache, it->key, loop_now(wh->loop), &r, &body, &len))
        return false;
    METRIC_INC(loop_metrics(wh->loop)->webhook_cache_hits);
    if (log_enabled(LOGL_DEBUG))
        session_log(g->s, LOGL_DEBUG, "http: %s answered from the cache: %s", kind_names[g->kind], result_names[r]);
    struct wh_answer a = {0};
    if (r == WH_ALLOW)
        wh_answer_parse(&a, (enum wh_kind)g->kind, body, len, true);
    item_answer(it, r == WH_ALLOW ? (enum result)a.result : (enum result)r, r == WH_ALLOW ? &a : NULL);
    wh_answer_free(&a);
    return true;
}

/* Answer from the cache what it holds; send or queue the rest.  Returns the
 * verdict when nothing is left to wait for, else MGATE_PENDING. */
static enum mgate_verdict group_run(struct group *g)
{
    struct webhook *wh = g->wh;
    /* One more than the items: nothing answered while we are still here
     * (a request that cannot start) may resume the session, which has no
     * pending verdict yet; we return that verdict instead. */
    g->remaining = g->n + 1;
    for (uint32_t i = 0; i < g->n; i++) {
        struct item *it = &g->items[i];
        if (!cache_answer(g, it))
            continue;
        free(it->body);
        it->body = NULL;
        g->remaining--;
    }
    if (g->remaining > 1)
        queue_push(wh, g);
    start_next(wh);
    if (--g->remaining)
        return MGATE_PENDING; /* fetch callbacks come later, from the loop */
    enum mgate_verdict v = group_verdict(g);
    group_free(g);
    return v;
}

static enum mgate_verdict no_memory(mgate_session *s, struct group *g)
{
    mgate_log(LOGL_WARN, s, "http: out of memory");
    if (g)
        group_free(g);
    return MGATE_DENY;
}

static enum mgate_verdict auth_connect(mgate_session *s, struct mgate_connect_req *req)
{
    struct group *g = group_new(s, req, K_CONNECT, 1);
    struct wh_doc d = {.kind = WH_CONNECT, .connect = req};
    if (!g || item_build(&g->items[0], s, &d) < 0)
        return no_memory(s, g);
    return group_run(g);
}

/* A v5 PUBLISH's user properties go in its request, for the service to
 * judge and rewrite (the "user_properties" modifier). */
static int request_user_properties(mgate_session *s, struct mgate_publish_req *req, struct wh_doc *d)
{
    if (mgate_session_version(s) != 5)
        return 0;
    struct mgate_properties *p = mgate_properties(s, req);
    if (!p) /* cannot be shown (too many, no memory): the service would judge what it does not see */
        return -1;
    d->user = p->user;
    d->user_count = p->user_count;
    return 0;
}

static enum mgate_verdict auth_publish(mgate_session *s, struct mgate_publish_req *req)
{
    struct group *g = group_new(s, req, K_PUBLISH, 1);
    struct wh_doc d = {.kind = WH_PUBLISH, .publish = req, .topic = req->topic, .qos = req->qos};
    if (g && request_user_properties(s, req, &d) < 0) {
        group_free(g);
        return MGATE_DENY; /* why was logged (within the session's budget) where they were not shown */
    }
    if (!g || item_build(&g->items[0], s, &d) < 0)
        return no_memory(s, g);
    return group_run(g);
}

static enum mgate_verdict auth_subscribe(mgate_session *s, struct mgate_subscribe_req *req)
{
    if (req->dir == MGATE_DOWN)
        return MGATE_IGNORE;
    uint32_t n = 0;
    for (uint32_t i = 0; i < req->count; i++) {
        if (!req->filters[i].denied && n == MAX_FILTERS_ASKED)
            req->filters[i].denied = true;
        n += !req->filters[i].denied;
    }
    if (!n)
        return MGATE_IGNORE;
    struct group *g = group_new(s, req, K_SUBSCRIBE, n);
    if (!g)
        return no_memory(s, g);
    for (uint32_t i = 0, k = 0; i < req->count; i++) {
        if (req->filters[i].denied)
            continue;
        g->items[k].filter = i;
        struct wh_doc d = {.kind = WH_SUBSCRIBE, .topic = req->filters[i].filter, .qos = req->filters[i].qos};
        if (item_build(&g->items[k++], s, &d) < 0)
            return no_memory(s, g);
    }
    return group_run(g);
}

const struct mgate_handler mgate_http_handler = {
    .name = "http",
    .auth_connect = auth_connect,
    .auth_publish = auth_publish,
    .auth_subscribe = auth_subscribe,
};

/* ---- life -------------------------------------------------------------- */

int webhook_start(const struct mgate_config *c, char *err, size_t errlen)
{
    if (strncmp(c->webhook_url, "http://", 7) != 0 && strncmp(c->webhook_url, "https://", 8) != 0) {
        snprintf(err, errlen, *c->webhook_url ? "MGATE_WEBHOOK_URL: \"%s\" is not an http:// or https:// URL"
                                              : "MGATE_HANDLER: \"http\" needs MGATE_WEBHOOK_URL%s",
                 c->webhook_url);
        return -1;
    }
    int on_error = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(c->webhook_on_error, result_names[i]) == 0)
            on_error = i;
    if (on_error < 0) {
        snprintf(err, errlen, "MGATE_WEBHOOK_ON_ERROR: \"%s\" is not allow, deny or ignore", c->webhook_on_error);
        return -1;
    }
    free(cfg.url);
    if (!(cfg.url = strdup(c->webhook_url))) {
        snprintf(err, errlen, "http: out of memory");
        return -1;
    }
    cfg.timeout_ms = c->webhook_timeout_ms;
    cfg.cache_ttl_ms = c->webhook_cache_ttl_ms;
    cfg.concurrency = c->webhook_concurrency;
    cfg.on_error = (enum result)on_error;
    log_msgf(LOGL_INFO, "http: webhook %s, timeout %u ms, %u requests at once per worker, cache %u ms, on error %s",
             cfg.url, cfg.timeout_ms, cfg.concurrency, cfg.cache_ttl_ms, result_names[cfg.on_error]);
    return 0;
}

/* Deny g's requests not sent yet; how many.  Its last frees g. */
static unsigned group_deny_unsent(struct group *g)
{
    unsigned n = 0;
    for (struct item *it; (it = next_unsent(g)); ) {
        bool last = g->remaining == 1;
        item_done(it, R_DENY, NULL);
        n++;
        if (last)
            break;
    }
    return n;
}

/* The slot's destructor (after loop_run has returned).  The loop no longer
 * runs, so no answer will come: every request is denied now, which resumes
 * (and so releases) its session through the deferred calls loop_free runs
 * after the slots; a request just dropped would keep its session for ever. */
static void webhook_destroy(struct loop *l, void *value)
{
    (void)l;
    struct webhook *wh = value;
    unsigned n = 0;
    /* Unsent items first: a group freed here has none in flight (its
     * remaining count holds both), so the active list never sees it. */
    for (struct group *g = wh->queue, *next; g; g = next) {
        next = g->qnext;
        n += group_deny_unsent(g);
    }
    /* A group is freed with its last item here, so the next item (read
     * before) is never in a freed group. */
    struct list_node *pos, *tmp;
    list_for_each_safe(pos, tmp, &wh->active) {
        struct item *it = container_of(pos, struct item, node);
        fetch_cancel(it->f);
        it->f = NULL;
        item_done(it, R_DENY, NULL);
        n++;
    }
    if (n)
        log_msgf(LOGL_WARN, "http: %u webhook requests denied at shutdown (no answer came)", n);
    wh_cache_free(wh->cache);
    free(wh);
}
