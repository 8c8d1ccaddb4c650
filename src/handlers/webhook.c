/*
 * The `http` handler: an auth webhook.  For each CONNECT, PUBLISH and
 * SUBSCRIBE filter it POSTs a JSON description to MGATE_WEBHOOK_URL and
 * leaves the verdict pending until the answer comes; the request runs on
 * the worker's loop (libcurl multi-socket, net/fetch.c), so other clients
 * are never held up.
 *
 *   request   {"action":"connect"|"publish"|"subscribe", "listener", "client_id",
 *              "username", "password" (connect only; "password_base64" when it is
 *              not UTF-8), "cn" (a verified client certificate's), "protocol",
 *              "topic", "qos", "retain" (publish), "will" (true for a CONNECT's
 *              will, asked as a publish right after its connect), "peer"}
 *   answer    2xx with {"result":"allow"|"deny"|"ignore"}: that; 2xx without a
 *             result: allow; 4xx: deny; anything else (5xx, a timeout, no
 *             connection, an unreadable answer): MGATE_WEBHOOK_ON_ERROR.
 *   ignore    passes the request to the next handler of the chain.
 *
 * Per worker: at most MGATE_WEBHOOK_CONCURRENCY requests in flight, the rest
 * wait in order; answers "allow" and "deny" are cached for
 * MGATE_WEBHOOK_CACHE_TTL (off by default) under a SHA-256 of the request
 * without its peer address.  Deliveries from the broker are not sent to the
 * webhook (one request per message would be too much): they are passed on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "core/list.h"
#include "core/log.h"
#include "core/loop.h"
#include "handlers/handlers.h"
#include "mqtt/mqtt.h"
#include "net/fetch.h"
#include "session/session.h"

#define CACHE_SLOTS 4096u /* per worker, direct-mapped */
#define MAX_ANSWER 4096u

enum result { R_ALLOW, R_DENY, R_IGNORE, R_ERROR };

static struct {
    char *url;
    uint32_t timeout_ms, cache_ttl_ms;
    unsigned concurrency;
    enum result on_error;
} cfg;

struct cache_entry {
    uint8_t key[SHA256_DIGEST_LENGTH];
    uint64_t expires; /* loop ms; 0: empty */
    uint8_t result;
};

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
    struct cache_entry *cache;        /* CACHE_SLOTS, when a TTL is set */
};

enum kind { K_CONNECT, K_PUBLISH, K_SUBSCRIBE };

struct group;

/* One HTTP request: the CONNECT, the PUBLISH, or one filter of a SUBSCRIBE. */
struct item {
    struct group *g;
    uint32_t filter; /* SUBSCRIBE: its index */
    struct fetch *f;
    struct list_node node; /* in the active list while in flight */
    uint8_t key[SHA256_DIGEST_LENGTH];
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

/* ---- JSON out ---------------------------------------------------------- */

struct jbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void put(struct jbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(struct jbuf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string: UTF-8 passes through, '"', '\' and control characters are escaped. */
static void put_string(struct jbuf *b, const uint8_t *p, size_t n)
{
    put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
            continue;
        put(b, (const char *)p + run, i - run);
        char esc[8];
        snprintf(esc, sizeof(esc), c == '"' ? "\\\"" : c == '\\' ? "\\\\" : "\\u%04x", c);
        puts_(b, esc);
        run = i + 1;
    }
    put(b, (const char *)p + run, n - run);
    put(b, "\"", 1);
}

static void put_field(struct jbuf *b, const char *name, mgate_bytes v, bool present)
{
    put(b, ",\"", 2);
    puts_(b, name);
    put(b, "\":", 2);
    if (present)
        put_string(b, v.p, v.len);
    else
        puts_(b, "null");
}

static void put_password(struct jbuf *b, mgate_bytes pw, bool present)
{
    if (!present || mqtt_utf8_valid(pw.p, pw.len)) {
        put_field(b, "password", pw, present);
        return;
    }
    size_t n = 4 * ((pw.len + 2) / 3) + 1;
    unsigned char *enc = malloc(n);
    if (!enc) {
        b->oom = true;
        return;
    }
    int len = EVP_EncodeBlock(enc, pw.p, (int)pw.len);
    put_field(b, "password_base64", (mgate_bytes){enc, (uint32_t)(len > 0 ? len : 0)}, true);
    OPENSSL_cleanse(enc, n);
    free(enc);
}

/* ---- JSON in: the answer's top-level "result" ------------------------- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Past one string starting at *p == '"'; NULL when unterminated. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Past one value of any type (containers with what they hold); NULL when
 * malformed. */
static const char *skip_value(const char *p, const char *end)
{
    char open[64]; /* the closers expected, innermost last */
    int depth = 0;
    for (;;) {
        p = skip_ws(p, end);
        if (p >= end)
            return NULL;
        char c = *p;
        if (c == '{' || c == '[') {
            if (depth == (int)sizeof(open))
                return NULL;
            open[depth++] = c == '{' ? '}' : ']';
            p++;
            continue;
        }
        if (c == ',' || c == ':') {
            if (!depth)
                return NULL;
            p++;
            continue;
        }
        if (c == '"') {
            if (!(p = skip_string(p, end)))
                return NULL;
        } else if (c == '}' || c == ']') {
            if (!depth || open[--depth] != c)
                return NULL;
            p++;
        } else { /* a number, true, false, null */
            const char *start = p;
            while (p < end && !memchr(",:}] \t\r\n", *p, 8))
                p++;
            if (p == start)
                return NULL;
        }
        if (!depth)
            return p;
    }
}

/* R_ALLOW/R_DENY/R_IGNORE from {"result":"..."}; R_ERROR when the body is
 * not such an object; *found false when it has no "result". */
static enum result parse_answer(const uint8_t *body, size_t len, bool *found)
{
    const char *p = (const char *)body, *end = p + len;
    *found = false;
    p = skip_ws(p, end);
    if (p == end)
        return R_ALLOW; /* an empty 2xx */
    if (*p++ != '{')
        return R_ERROR;
    enum result r = R_ALLOW;
    for (bool first = true;; first = false) {
        p = skip_ws(p, end);
        if (p < end && *p == '}' && first)
            return skip_ws(p + 1, end) == end ? r : R_ERROR;
        if (p >= end || *p != '"')
            return R_ERROR;
        const char *key = p + 1, *kend = skip_string(p, end);
        if (!kend)
            return R_ERROR;
        p = skip_ws(kend, end);
        if (p >= end || *p++ != ':')
            return R_ERROR;
        p = skip_ws(p, end);
        bool is_result = kend - 1 - key == 6 && memcmp(key, "result", 6) == 0;
        const char *v = p;
        if (!(p = skip_value(p, end)))
            return R_ERROR;
        if (is_result) {
            static const char *const words[] = {"\"allow\"", "\"deny\"", "\"ignore\""};
            size_t n = (size_t)(p - v);
            r = R_ERROR;
            for (int i = 0; i < 3; i++)
                if (n == strlen(words[i]) && memcmp(v, words[i], n) == 0)
                    r = (enum result)i;
            if (r == R_ERROR)
                return R_ERROR;
            *found = true;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}')
            return skip_ws(p + 1, end) == end ? r : R_ERROR;
        return R_ERROR;
    }
}

int webhook_parse_answer(const uint8_t *body, size_t len, bool *found)
{
    return (int)parse_answer(body, len, found);
}

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
    if ((cfg.cache_ttl_ms && !(wh->cache = calloc(CACHE_SLOTS, sizeof(*wh->cache)))) ||
        loop_slot_set(l, &webhook_key, wh, webhook_destroy) < 0) {
        free(wh->cache);
        free(wh);
        return NULL;
    }
    wh->loop = l;
    wh->queue_tail = &wh->queue;
    return wh;
}

static struct cache_entry *cache_slot(struct webhook *wh, const uint8_t *key)
{
    uint32_t i;
    memcpy(&i, key, sizeof(i));
    return &wh->cache[i % CACHE_SLOTS];
}

static bool cache_get(struct webhook *wh, const uint8_t *key, enum result *r)
{
    if (!wh->cache)
        return false;
    struct cache_entry *e = cache_slot(wh, key);
    if (!e->expires || e->expires <= loop_now(wh->loop) || memcmp(e->key, key, sizeof(e->key)) != 0)
        return false;
    *r = (enum result)e->result;
    return true;
}

static void cache_put(struct webhook *wh, const uint8_t *key, enum result r)
{
    if (!wh->cache || (r != R_ALLOW && r != R_DENY))
        return;
    struct cache_entry *e = cache_slot(wh, key);
    memcpy(e->key, key, sizeof(e->key));
    e->expires = loop_now(wh->loop) + cfg.cache_ttl_ms;
    e->result = (uint8_t)r;
}

/* ---- verdicts ---------------------------------------------------------- */

static const char *const result_names[] = {"allow", "deny", "ignore", "error"};

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

/* Record one item's answer in its request. */
static void item_answer(struct item *it, enum result r)
{
    struct group *g = it->g;
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
static void item_done(struct item *it, enum result r)
{
    struct group *g = it->g;
    item_answer(it, r);
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
    bool found = false;
    if (!res->error && res->status >= 200 && res->status < 300)
        r = parse_answer(res->body, res->len, &found);
    else if (!res->error && res->status >= 400 && res->status < 500)
        r = R_DENY;
    if (r == R_ERROR || log_enabled(LOGL_DEBUG)) {
        /* budgeted: a client's flood while the service is down is one line per request */
        session_log(it->g->s, r == R_ERROR ? LOGL_WARN : LOGL_DEBUG, "http: %s %s: %s (%.0f ms)%s",
                  it->g->kind == K_CONNECT ? "connect" : it->g->kind == K_PUBLISH ? "publish" : "subscribe",
                  res->error ? res->error : "answered", result_names[r], res->seconds * 1000,
                  res->error || (res->status >= 200 && res->status < 500) ? "" : " (status not 2xx/4xx)");
    }
    if (r != R_ERROR)
        cache_put(wh, it->key, r);
    item_done(it, r);
    start_next(wh);
}

static void send_item(struct webhook *wh, struct item *it)
{
    if (mgate_session_closed(it->g->s)) { /* nobody to answer any more */
        item_done(it, R_DENY);
        return;
    }
    struct fetch_request fr = {.url = cfg.url, .method = "POST", .body = (const uint8_t *)it->body,
                               .body_len = it->len, .content_type = "application/json",
                               .accept = "application/json", .timeout_ms = cfg.timeout_ms, .max_body = MAX_ANSWER};
    it->f = fetch_start(wh->loop, &fr, on_answer, it);
    if (!it->f) {
        mgate_log(LOGL_WARN, it->g->s, "http: cannot start a request: out of memory");
        item_done(it, R_ERROR);
        return;
    }
    wh->inflight++;
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

/* The JSON body of one item, and its cache key (everything but the peer). */
static int item_build(struct item *it, mgate_session *s, const char *action, const struct mgate_connect_req *c,
                      mgate_bytes topic, int qos, int retain, bool will)
{
    struct jbuf b = {0};
    puts_(&b, "{\"action\":\"");
    puts_(&b, action);
    puts_(&b, "\"");
    put_field(&b, "listener", (mgate_bytes){(const uint8_t *)mgate_session_listener(s),
                                            (uint32_t)strlen(mgate_session_listener(s))},
              true);
    if (c) {
        put_field(&b, "client_id", c->client_id, true);
        put_field(&b, "username", c->username, c->has_username);
        put_password(&b, c->password, c->has_password);
    } else {
        mgate_bytes id = mgate_session_client_id(s), user = mgate_session_username(s);
        put_field(&b, "client_id", id, true);
        put_field(&b, "username", user, user.len > 0);
    }
    struct mgate_cert cert;
    bool has_cert = mgate_session_cert(s, &cert);
    put_field(&b, "cn", (mgate_bytes){(const uint8_t *)cert.cn, (uint32_t)strlen(has_cert ? cert.cn : "")}, has_cert);
    char num[64];
    snprintf(num, sizeof(num), ",\"protocol\":%u", c ? c->version : mgate_session_version(s));
    puts_(&b, num);
    if (topic.p) {
        put_field(&b, "topic", topic, true);
        snprintf(num, sizeof(num), ",\"qos\":%d", qos);
        puts_(&b, num);
        if (retain >= 0)
            puts_(&b, retain ? ",\"retain\":true" : ",\"retain\":false");
        if (will) /* a CONNECT's will, judged with the CONNECT (mgate.h) */
            puts_(&b, ",\"will\":true");
    }
    if (!b.oom)
        SHA256((const uint8_t *)b.p, b.len, it->key);
    put_field(&b, "peer", (mgate_bytes){(const uint8_t *)mgate_session_peer(s), (uint32_t)strlen(mgate_session_peer(s))},
              true);
    puts_(&b, "}");
    if (b.oom) {
        if (b.p)
            OPENSSL_cleanse(b.p, b.cap);
        free(b.p);
        return -1;
    }
    it->body = b.p;
    it->len = b.len;
    return 0;
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
        enum result r;
        if (!cache_get(wh, it->key, &r))
            continue;
        item_answer(it, r);
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
    if (!g || item_build(&g->items[0], s, "connect", req, (mgate_bytes){NULL, 0}, 0, -1, false) < 0)
        return no_memory(s, g);
    return group_run(g);
}

static enum mgate_verdict auth_publish(mgate_session *s, struct mgate_publish_req *req)
{
    struct group *g = group_new(s, req, K_PUBLISH, 1);
    if (!g || item_build(&g->items[0], s, "publish", NULL, req->topic, req->qos, req->retain, req->will) < 0)
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
        if (item_build(&g->items[k++], s, "subscribe", NULL, req->filters[i].filter, req->filters[i].qos, -1, false) < 0)
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
        item_done(it, R_DENY);
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
        item_done(it, R_DENY);
        n++;
    }
    if (n)
        log_msgf(LOGL_WARN, "http: %u webhook requests denied at shutdown (no answer came)", n);
    free(wh->cache);
    free(wh);
}
