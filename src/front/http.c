/*
 * The HTTP front end.  One struct http_conn per client connection (plain
 * or TLS, from net/conn and net/tls), with one mgate_session that the
 * worker's session list counts, drains and closes; one struct http_req per
 * request, answered before the next one is read (pipelined requests wait,
 * in order, in the connection's buffer or the kernel).
 *
 * A request's life:
 *   head complete (inside the parser) -> route: PATH_PREFIX (404),
 *     ALLOWED_ORIGINS (403), BYPASS_PATHS, TARGET_PATH (404), topic (400)
 *     -> credentials -> auth_connect (401), then 100 Continue if asked
 *   body complete -> auth_publish (403) -> forward with libcurl
 *   target's status line and headers -> our head; its body streams through,
 *     re-framed (Content-Length kept, else chunked for 1.1 clients)
 *   done -> publish hook, next request or close.
 * A WebSocket upgrade (no body): the RFC 6455 checks at the head (426,
 *   400), auth_connect, then auth_subscribe on the path (403); allowed, the
 *   connection goes to the relay (http_ws.c) and this file keeps only the
 *   session's context until the relay ends.
 * Either verdict may be pending (mgate_resume); the connection then reads
 * nothing more until it comes.  The request the handler sees is the
 * struct ask in struct http_req (the session's verdict engine, which finds
 * it again by pointer); a request whose connection went away meanwhile
 * stays allocated until that resume.
 *
 * Timers (one per connection, by phase): IDLE_TIMEOUT between requests,
 * REQUEST_TIMEOUT for a request's head and body (408) and for a pending
 * verdict (503), TARGET_TIMEOUT for the target's answer (504) and for each
 * pause in its body (the connection is cut: the head went out already).
 */
#include "front/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "core/metrics.h"
#include "front/front.h"
#include "front/http_parse.h"
#include "front/http_mqtt.h"
#include "front/http_util.h"
#include "front/http_ws.h"
#include "net/ws_frame.h"
#include "mqtt/mqtt.h"
#include "net/conn.h"
#include "net/fetch.h"
#include "net/tls.h"

#define HTTP_LINGER_MS 2000        /* a closing connection's time to flush */

enum hc_phase {
    HC_IDLE,     /* between requests */
    HC_READING,  /* a request is arriving */
    HC_BUSY,     /* it is in: verdicts, the target */
    HC_FLUSHING, /* closing after the last answer */
    HC_UPGRADED, /* a WebSocket relay (http_ws.c) has the connection */
};

enum req_stage { RQ_CONNECT, RQ_BODY, RQ_PUBLISH, RQ_SUBSCRIBE, RQ_FORWARD };

struct http_conn;

struct http_req {
    struct ask ask; /* what the handler is shown, and its verdict (session/verdict.h) */
    struct http_conn *hc; /* NULL once the connection is gone while a verdict is pending */
    struct mgate_session *s;
    uint8_t stage; /* enum req_stage */
    bool bypass, message_done;
    bool ws;                  /* a WebSocket upgrade */
    char ws_key[25];          /* its Sec-WebSocket-Key */
    struct mgate_filter filter; /* its auth_subscribe: the path */
    int refuse; /* a status decided before the body was in */
    const char *refuse_why;
    char *mem;                /* the decoded path and credentials */
    const char *path;         /* decoded, below PATH_PREFIX: the topic */
    size_t path_len;
    const char *query;        /* raw, after '?' */
    size_t query_len;
    uint8_t qos;              /* the bridge's (TARGET_PROTOCOL mqtt): ?qos=, MQTT-QoS */
    bool retain, bridging;    /* bridging: with the broker (http_mqtt.c) */
    uint8_t *body;
    size_t body_len;
    struct fetch *f;
    char **lines; /* header lines for the target (one allocation) */
    /* the target's answer */
    int status;
    bool head_sent, chunked, no_body, in_1xx, paused;
    char *rh; /* our head, while the target's arrives */
    size_t rh_len, rh_cap;
    uint64_t started, bytes;
};

struct http_conn {
    struct conn *c;
    struct mgate_session *s;
    const struct session_params *p;
    const struct http_settings *hs;
    struct loop *loop;
    struct http_parser *hp;
    struct loop_timer timer;
    struct http_req *req;
    struct http_ws *ws; /* after an upgrade */
    struct http_mqtt *link; /* the bridge's broker connection, or NULL */
    char gen_id[28];        /* the bridge's generated client id, made on first use */
    uint8_t phase; /* enum hc_phase */
    bool close_after; /* the answer being given is the last one */
    bool draining, cert_done;
};

static void advance(struct http_req *r);
static void request_done(struct http_conn *hc);

/* ---- settings ------------------------------------------------------------------ */

static void http_settings_free(struct http_settings *hs);

/* NULL with a message naming the variable (a BYPASS_PATHS entry that is not
 * a regular expression). */
static struct http_settings *http_settings_new(const struct listener_config *lc, char *err, size_t errlen)
{
    struct http_settings *hs = calloc(1, sizeof(*hs));
    if (!hs) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    hs->https = lc->target_protocol == TARGET_HTTPS;
    hs->mqtt = lc->target_protocol == TARGET_MQTT || lc->target_protocol == TARGET_MQTTS;
    hs->path_prefix = lc->path_prefix;
    hs->allowed_origins = lc->allowed_origins;
    hs->target_path = lc->target_path;
    bool v6 = strchr(lc->target_host, ':') && lc->target_host[0] != '[';
    snprintf(hs->authority, sizeof(hs->authority), "%s%s%s:%u", v6 ? "[" : "", lc->target_host, v6 ? "]" : "",
             lc->target_port);
    snprintf(hs->base_url, sizeof(hs->base_url), "%s://%s", hs->https ? "https" : "http", hs->authority);
    hs->max_header = lc->max_header_size;
    hs->max_body = lc->max_body_size;
    hs->request_timeout_ms = lc->request_timeout_ms;
    hs->idle_timeout_ms = lc->idle_timeout_ms;
    hs->target_timeout_ms = lc->target_timeout_ms;
    hs->ca_file = *lc->target_ca_file ? lc->target_ca_file : NULL;
    hs->cert_file = *lc->target_cert_file ? lc->target_cert_file : NULL;
    hs->key_file = *lc->target_key_file ? lc->target_key_file : NULL;
    hs->no_verify = !lc->target_tls_verify;
    /* BYPASS_PATHS: comma-separated; each must compile now, not at the first request. */
    const char *list = lc->bypass_paths;
    unsigned n = 0;
    for (const char *q = list; *q; q++)
        n += *q == ',';
    if (*list && !(hs->bypass = calloc(n + 1, sizeof(*hs->bypass)))) {
        free(hs);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (const char *q = list; *q;) {
        q += strspn(q, " ,");
        size_t len = strcspn(q, ",");
        while (len && q[len - 1] == ' ')
            len--;
        if (!len)
            continue;
        char pat[256];
        int rc = len < sizeof(pat) ? 0 : REG_ESIZE;
        if (!rc) {
            memcpy(pat, q, len);
            pat[len] = '\0';
            rc = regcomp(&hs->bypass[hs->nbypass], pat, REG_EXTENDED | REG_NOSUB);
        }
        if (rc) {
            char why[128] = "longer than 255 bytes";
            if (rc != REG_ESIZE || len < sizeof(pat))
                regerror(rc, NULL, why, sizeof(why));
            snprintf(err, errlen, "%sBYPASS_PATHS: \"%.*s\" is not a regular expression (%s)", lc->prefix,
                     (int)(len > 200 ? 200 : len), q, why);
            http_settings_free(hs);
            return NULL;
        }
        hs->nbypass++;
        q += strcspn(q, ",");
    }
    return hs;
}

static void http_settings_free(struct http_settings *hs)
{
    if (!hs)
        return;
    for (unsigned i = 0; i < hs->nbypass; i++)
        regfree(&hs->bypass[i]);
    free(hs->bypass);
    free(hs);
}

/* ---- answers of our own ------------------------------------------------------------ */

static const struct http_head *head_of(const struct http_conn *hc) { return http_parser_head(hc->hp); }

/* Answer with status and a JSON body saying why, then go on to the next
 * request (or close: close, or the connection was closing anyway). */
static void respond(struct http_conn *hc, int status, const char *why, bool close)
{
    const struct http_head *h = head_of(hc);
    if (close || !h->keep_alive)
        hc->close_after = true;
    if (hc->req)
        hc->req->status = status;
    char out[1024];
    const char *extra = status == 401 ? "WWW-Authenticate: Basic realm=\"mgate\"\r\n"
                        : status == 426 ? "Sec-WebSocket-Version: 13\r\n"
                        : status == 405 ? "Allow: POST\r\n"
                                        : "";
    const char *conn = hc->close_after ? "Connection: close\r\n" : h->minor == 0 ? "Connection: keep-alive\r\n" : "";
    size_t n = http_error_answer(out, sizeof(out), status, why, extra, conn, !h->is_head);
    conn_write(hc->c, out, n);
    /* a client can cause these at will: within the session's and listener's log budgets
     * (a success, the bridge's 200, is request_done's debug line) */
    if (status >= 400)
        session_log(hc->s, status >= 500 ? LOGL_WARN : LOGL_INFO, "http %d: %s (%s %s)", status, why,
                    h->method ? h->method : "-", h->target ? h->target : "-");
    request_done(hc);
}

/* ---- connection life ---------------------------------------------------------------- */

static void req_free(struct http_req *r)
{
    ASSERT(!r->ask.pending); /* the handler would hold freed memory */
    free(r->mem);
    free(r->body);
    free(r->lines);
    free(r->rh);
    free(r);
}

/* The connection is done with r: free it, unless the handler still holds it. */
static void req_release(struct http_req *r)
{
    if (r->f) {
        fetch_cancel(r->f);
        r->f = NULL;
    }
    r->hc = NULL;
    if (r->ask.pending) /* the handler holds it: on_verdict frees it */
        verdict_drop(&r->ask);
    else
        req_free(r);
}

static void hc_free(struct http_conn *hc)
{
    loop_timer_stop(hc->loop, &hc->timer);
    if (hc->req)
        req_release(hc->req);
    hc->req = NULL;
    http_parser_free(hc->hp);
    http_mqtt_close(&hc->link);
    session_front_end(hc->s);
    free(hc);
}

static void on_timer(struct loop *l, struct loop_timer *t);

static void arm(struct http_conn *hc, uint32_t ms) { loop_timer_start(hc->loop, &hc->timer, ms, on_timer); }

static void close_gracefully(struct http_conn *hc)
{
    hc->phase = HC_FLUSHING;
    arm(hc, HTTP_LINGER_MS);
    conn_close_after_flush(hc->c); /* on_close follows */
}

/* Close the connection now, without its on_close: a connection that failed
 * already has that call queued, which then only frees it. */
static const struct conn_cbs quiet_cbs = {NULL, NULL, NULL, NULL};
static void close_now(struct http_conn *hc)
{
    if (hc->c) {
        hc->c->cbs = &quiet_cbs;
        conn_close(hc->c);
    }
    hc->c = NULL;
    hc_free(hc);
}

/* Cut the connection now (an answer that broke off half-way). */
static void abort_conn(struct http_conn *hc) { close_now(hc); }

static void request_done(struct http_conn *hc)
{
    struct http_req *r = hc->req;
    hc->req = NULL;
    if (r && r->status >= 100 && r->status <= 599)
        METRIC_INC(loop_metrics(hc->loop)->http_responses[r->status / 100]);
    if (r) {
        if (log_enabled(LOGL_DEBUG))
            mgate_log(LOGL_DEBUG, hc->s, "http %s %s: %d, %llu bytes, %llu ms", head_of(hc)->method,
                      head_of(hc)->target, r->status, (unsigned long long)r->bytes,
                      (unsigned long long)(loop_now(hc->loop) - r->started));
        req_release(r);
    }
    session_front_reset(hc->s);
    http_parser_next(hc->hp);
    if (hc->close_after || hc->draining) {
        close_gracefully(hc);
        return;
    }
    hc->phase = HC_IDLE;
    arm(hc, hc->hs->idle_timeout_ms);
    if (!conn_over_high_water(hc->c)) /* else on_drain: answers nobody reads do not pile up */
        conn_resume_read(hc->c);
}

static void on_timer(struct loop *l, struct loop_timer *t)
{
    (void)l;
    struct http_conn *hc = container_of(t, struct http_conn, timer);
    struct http_req *r = hc->req;
    switch (hc->phase) {
    case HC_IDLE:
        mgate_log(LOGL_DEBUG, hc->s, "http: idle keep-alive connection closed");
        close_gracefully(hc);
        break;
    case HC_READING:
        respond(hc, 408, "the request did not arrive in time (REQUEST_TIMEOUT)", true);
        break;
    case HC_BUSY:
        if (r && r->f && r->head_sent) {
            session_log(hc->s, LOGL_WARN, "http: the answer stalled for TARGET_TIMEOUT (%s); connection cut",
                        r->paused ? "the client does not read" : "the target sends nothing");
            abort_conn(hc);
        } else if (r && r->f) {
            fetch_cancel(r->f);
            r->f = NULL;
            respond(hc, 504, "the target did not answer in time (TARGET_TIMEOUT)", false);
        } else if (r && r->bridging) {
            r->bridging = false;
            http_mqtt_close(&hc->link); /* its done is not called; the next POST dials again */
            respond(hc, 504, "the broker did not answer in time (TARGET_TIMEOUT)", false);
        } else {
            respond(hc, 503, "the handler did not answer in time (REQUEST_TIMEOUT)", false);
        }
        break;
    default:
        abort_conn(hc); /* the linger ran out */
    }
}

/* ---- the target's answer, streamed ---------------------------------------------------- */

static int rh_add(struct http_req *r, const char *p, size_t n)
{
    if (r->rh_len + n > r->rh_cap) {
        size_t cap = r->rh_cap ? r->rh_cap * 2 : 1024;
        while (cap < r->rh_len + n)
            cap *= 2;
        if (cap > 1u << 20)
            return -1; /* a target's head larger than 1 MiB: refused */
        char *b = realloc(r->rh, cap);
        if (!b)
            return -1;
        r->rh = b;
        r->rh_cap = cap;
    }
    memcpy(r->rh + r->rh_len, p, n);
    r->rh_len += n;
    return 0;
}

static bool name_in(const char *line, size_t len, const char *const *names)
{
    const char *colon = memchr(line, ':', len);
    size_t n = colon ? (size_t)(colon - line) : len;
    for (; *names; names++)
        if (strlen(*names) == n && !strncasecmp(line, *names, n))
            return true;
    return false;
}

/* Hop-by-hop headers (RFC 9110 7.6.1) and the framing we redo ourselves. */
static const char *const hop_by_hop[] = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
                                         "transfer-encoding", "upgrade", "proxy-authenticate",
                                         "proxy-authorization", NULL};

static int head_complete(struct http_req *r)
{
    struct http_conn *hc = r->hc;
    const struct http_head *h = head_of(hc);
    char framing[96] = "";
    bool has_length = false;
    /* the target's Content-Length, found again among the kept lines */
    for (size_t off = 0; off < r->rh_len;) {
        const char *line = r->rh + off, *end = memchr(line, '\n', r->rh_len - off);
        size_t len = end ? (size_t)(end - line) + 1 : r->rh_len - off;
        if (off && len > 15 && !strncasecmp(line, "content-length:", 15))
            has_length = true;
        off += len;
    }
    r->no_body = h->is_head || r->status == 204 || r->status == 304;
    if (!r->no_body && !has_length) {
        if (h->minor >= 1)
            snprintf(framing, sizeof(framing), "Transfer-Encoding: chunked\r\n"), r->chunked = true;
        else
            hc->close_after = true; /* an HTTP/1.0 client reads to the end */
    }
    if (hc->draining)
        hc->close_after = true;
    const char *conn_hdr = hc->close_after ? "Connection: close\r\n" : h->minor == 0 ? "Connection: keep-alive\r\n" : "";
    if (rh_add(r, framing, strlen(framing)) < 0 || rh_add(r, conn_hdr, strlen(conn_hdr)) < 0 ||
        rh_add(r, "\r\n", 2) < 0)
        return -1;
    r->head_sent = true;
    int rc = conn_write(hc->c, r->rh, r->rh_len);
    free(r->rh);
    r->rh = NULL;
    r->rh_len = r->rh_cap = 0;
    arm(hc, hc->hs->target_timeout_ms); /* now: the longest pause in the body */
    return rc;
}

static int on_target_header(void *ctx, const char *line, size_t len)
{
    struct http_req *r = ctx;
    if (!r->hc || r->head_sent)
        return r->hc ? 0 : -1; /* trailers are not passed on */
    if (len >= 5 && !memcmp(line, "HTTP/", 5)) {
        const char *sp = memchr(line, ' ', len);
        int status = sp && (size_t)(sp - line) + 4 <= len ? atoi(sp + 1) : 0;
        if (status < 100 || status > 999)
            return -1;
        r->in_1xx = status < 200; /* 100 Continue and friends: not passed on */
        if (r->in_1xx)
            return 0;
        r->status = status;
        r->rh_len = 0;
        return rh_add(r, "HTTP/1.1", 8) < 0 || rh_add(r, sp, len - (size_t)(sp - line)) < 0 ? -1 : 0;
    }
    if (len <= 2 && (line[0] == '\r' || line[0] == '\n')) {
        if (r->in_1xx || !r->status) {
            r->in_1xx = false;
            return 0;
        }
        return head_complete(r);
    }
    if (r->in_1xx || name_in(line, len, hop_by_hop))
        return 0;
    return rh_add(r, line, len);
}

static enum fetch_take on_target_body(void *ctx, const uint8_t *p, size_t len)
{
    struct http_req *r = ctx;
    struct http_conn *hc = r->hc;
    if (!hc || !r->head_sent)
        return FETCH_ABORT;
    if (r->no_body || !len)
        return FETCH_TAKEN;
    if (conn_over_high_water(hc->c)) {
        r->paused = true; /* on_drain resumes it */
        return FETCH_PAUSE;
    }
    int rc = 0;
    if (r->chunked) {
        char size[24];
        int n = snprintf(size, sizeof(size), "%zx\r\n", len);
        rc = conn_write(hc->c, size, (size_t)n);
        rc = rc ? rc : conn_write(hc->c, p, len);
        rc = rc ? rc : conn_write(hc->c, "\r\n", 2);
    } else {
        rc = conn_write(hc->c, p, len);
    }
    r->bytes += len;
    arm(hc, hc->hs->target_timeout_ms);
    return rc ? FETCH_ABORT : FETCH_TAKEN;
}

static const struct fetch_stream target_stream = {on_target_header, on_target_body};

static void on_target_done(void *ctx, const struct fetch_result *res)
{
    struct http_req *r = ctx;
    struct http_conn *hc = r->hc;
    r->f = NULL;
    if (!hc)
        return;
    if (res->error && !r->head_sent) {
        respond(hc, res->timed_out ? 504 : 502, res->error, false);
        return;
    }
    if (res->error) {
        mgate_log(LOGL_WARN, hc->s, "http: the target's answer broke off (%s); connection cut", res->error);
        abort_conn(hc);
        return;
    }
    if (!r->head_sent) {
        respond(hc, 502, "the target's answer had no head", false);
        return;
    }
    if (r->chunked)
        conn_write(hc->c, "0\r\n\r\n", 5);
    if (!r->bypass)
        session_front_published(hc->s, &r->ask.req.publish);
    request_done(hc);
}

/* ---- forwarding ----------------------------------------------------------------------- */

/* The headers for the target: the client's, less hop-by-hop ones and those
 * its Connection header names, plus X-Forwarded-*; "Name:" lines stop
 * libcurl from adding headers of its own the client did not send. */
static int build_lines(struct http_req *r, const struct http_head *h)
{
    static const char *const dropped[] = {"host", "content-length", "expect", "x-forwarded-for",
                                          "x-forwarded-host", "x-forwarded-proto", "sec-websocket-key",
                                          "sec-websocket-version", "sec-websocket-extensions",
                                          "sec-websocket-accept", NULL};
    struct http_conn *hc = r->hc;
    const struct http_hdr *conn_h = http_head_find(h, "connection");
    const struct http_hdr *xff = http_head_find(h, "x-forwarded-for");
    const struct http_hdr *host = http_head_find(h, "host");
    char ip[64];
    const char *peer = mgate_session_peer(hc->s);
    size_t iplen = strrchr(peer, ':') ? (size_t)(strrchr(peer, ':') - peer) : strlen(peer);
    if (iplen >= sizeof(ip))
        iplen = sizeof(ip) - 1;
    memcpy(ip, peer[0] == '[' ? peer + 1 : peer, iplen);
    ip[peer[0] == '[' && iplen >= 2 ? iplen - 2 : iplen] = '\0';

    size_t size = 256 + (xff ? xff->value_len : 0) + (host ? host->value_len : 0) + sizeof(ip);
    for (uint32_t i = 0; i < h->nhdrs; i++)
        size += h->hdrs[i].name_len + h->hdrs[i].value_len + 4;
    size_t nptr = h->nhdrs + 8;
    char **lines = malloc(nptr * sizeof(char *) + size);
    if (!lines)
        return -1;
    char *mem = (char *)(lines + nptr), *end = mem + size;
    size_t n = 0;
    bool accept = false, agent = false, ctype = false;
    for (uint32_t i = 0; i < h->nhdrs; i++) {
        const struct http_hdr *x = &h->hdrs[i];
        char name[64];
        if (x->name_len < sizeof(name)) {
            memcpy(name, x->name, x->name_len);
            name[x->name_len] = '\0';
        } else {
            name[0] = '\0';
        }
        if (name_in(x->name, x->name_len, hop_by_hop) || name_in(x->name, x->name_len, dropped) ||
            (conn_h && name[0] && http_value_has_token(conn_h->value, conn_h->value_len, name)))
            continue;
        accept |= !strcasecmp(name, "accept");
        agent |= !strcasecmp(name, "user-agent");
        ctype |= !strcasecmp(name, "content-type");
        lines[n++] = mem;
        /* an empty value needs libcurl's "Name;" form, "Name:" would remove it */
        mem += snprintf(mem, (size_t)(end - mem), x->value_len ? "%.*s: %.*s" : "%.*s;", (int)x->name_len,
                        x->name, (int)x->value_len, x->value) + 1;
    }
    lines[n++] = mem;
    mem += snprintf(mem, (size_t)(end - mem), "X-Forwarded-For: %.*s%s%s", xff ? (int)xff->value_len : 0,
                    xff ? xff->value : "", xff ? ", " : "", ip) + 1;
    if (host) {
        lines[n++] = mem;
        mem += snprintf(mem, (size_t)(end - mem), "X-Forwarded-Host: %.*s", (int)host->value_len, host->value) + 1;
    }
    lines[n++] = mem;
    mem += snprintf(mem, (size_t)(end - mem), "X-Forwarded-Proto: %s", hc->p->tls ? "https" : "http") + 1;
    if (!accept)
        lines[n++] = "Accept:";
    if (!agent)
        lines[n++] = "User-Agent:";
    if (!ctype)
        lines[n++] = "Content-Type:";
    lines[n] = NULL;
    r->lines = lines;
    return 0;
}

static void forward(struct http_req *r)
{
    struct http_conn *hc = r->hc;
    const struct http_head *h = head_of(hc);
    const struct http_settings *hs = hc->hs;
    r->stage = RQ_FORWARD;
    /* the path the handler allowed: its topic, rewritten or not */
    const char *path = r->path;
    size_t plen = r->path_len;
    const uint8_t *body = r->body;
    size_t blen = r->body_len;
    if (!r->bypass) {
        path = (const char *)r->ask.req.publish.topic.p;
        plen = r->ask.req.publish.topic.len;
        body = r->ask.req.publish.payload.p;
        blen = r->ask.req.publish.payload.len;
    }
    size_t ulen = strlen(hs->base_url) + 3 * plen + r->query_len + 4;
    char *url = malloc(ulen);
    char target[64], connect_to[400];
    if (!url || build_lines(r, h) < 0) {
        free(url);
        respond(hc, 503, "out of memory", true);
        return;
    }
    size_t o = (size_t)snprintf(url, ulen, "%s%s", hs->base_url, plen && path[0] == '/' ? "" : "/");
    o += http_pct_encode_path(path, plen, url + o);
    if (r->query_len)
        snprintf(url + o, ulen - o, "?%.*s", (int)r->query_len, r->query);
    /* the address resolved at start (or on SIGHUP): libcurl looks nothing up */
    sockaddr_format((const struct sockaddr *)&hc->p->target, target, sizeof(target));
    snprintf(connect_to, sizeof(connect_to), "%s:%s", hs->authority, target);
    bool framed = h->has_length || h->chunked || blen;
    struct fetch_request fr = {
        .url = url, .method = h->method, .body = h->is_head || !framed ? NULL : body ? body : (const uint8_t *)"",
        .body_len = h->is_head || !framed ? 0 : blen, .body_borrowed = true, .headers = (const char *const *)r->lines,
        .no_timeout = true, .connect_timeout_ms = hs->target_timeout_ms, .connect_to = connect_to,
        .ca_file = hs->ca_file, .cert_file = hs->cert_file, .key_file = hs->key_file, .no_verify = hs->no_verify,
        .stream = &target_stream,
    };
    r->f = fetch_start(hc->loop, &fr, on_target_done, r);
    free(url);
    if (!r->f) {
        respond(hc, errno == EINVAL ? 400 : 503,
                errno == EINVAL ? "a header cannot be forwarded" : "cannot start the request to the target", false);
        return;
    }
    arm(hc, hs->target_timeout_ms);
}

/* ---- a WebSocket upgrade ------------------------------------------------------------------ */

/* The upgrade request for the target (without its key and the empty
 * line): the path allowed, the client's end-to-end headers as for a POST. */
static char *ws_request(struct http_req *r, const struct http_head *h, const char *path, size_t plen,
                        size_t *len)
{
    if (build_lines(r, h) < 0)
        return NULL;
    const struct http_settings *hs = r->hc->hs;
    size_t size = 160 + strlen(hs->authority) + 3 * plen + r->query_len;
    for (char **l = r->lines; *l; l++)
        size += strlen(*l) + 3;
    char *b = malloc(size);
    if (!b)
        return NULL;
    size_t o = (size_t)snprintf(b, size, "GET %s", plen && path[0] == '/' ? "" : "/");
    o += http_pct_encode_path(path, plen, b + o);
    if (r->query_len)
        o += (size_t)snprintf(b + o, size - o, "?%.*s", (int)r->query_len, r->query);
    o += (size_t)snprintf(b + o, size - o,
                          " HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Version: 13\r\n",
                          hs->authority);
    for (char **l = r->lines; *l; l++) {
        size_t n = strlen(*l);
        if (!strstr(*l, ": ") && (*l)[n - 1] == ':')
            continue; /* libcurl's "remove this header": nothing to send */
        bool empty = (*l)[n - 1] == ';' && !strstr(*l, ": ");
        o += (size_t)snprintf(b + o, size - o, "%.*s%s\r\n", (int)(empty ? n - 1 : n), *l, empty ? ":" : "");
    }
    *len = o;
    return b;
}

static void ws_ended(void *ctx)
{
    struct http_conn *hc = ctx;
    hc->ws = NULL;
    hc_free(hc);
}

/* Authorised: the relay takes the connection (its answer, 101 or an error, follows). */
static void upgrade(struct http_req *r)
{
    struct http_conn *hc = r->hc;
    const char *topic = r->bypass ? NULL : (const char *)r->filter.filter.p;
    size_t tlen = r->bypass ? 0 : r->filter.filter.len, n = 0;
    char *req = ws_request(r, head_of(hc), topic ? topic : r->path, topic ? tlen : r->path_len, &n);
    struct http_ws_start a = {
        .loop = hc->loop, .client = hc->c, .s = hc->s, .p = hc->p, .hs = hc->hs, .topic = topic,
        .topic_len = tlen, .request = req, .request_len = n, .client_key = r->ws_key,
        .draining = hc->draining, .ended = ws_ended, .ctx = hc,
    };
    errno = ENOMEM;
    struct http_ws *w = req ? http_ws_start(&a) : NULL;
    free(req);
    if (!w) {
        char why[128];
        snprintf(why, sizeof(why), "the target cannot be reached (%s)", strerror(errno));
        respond(hc, errno == ENOMEM ? 503 : 502, why, true);
        return;
    }
    hc->ws = w;
    hc->c = NULL;
    hc->phase = HC_UPGRADED;
    loop_timer_stop(hc->loop, &hc->timer);
    hc->req = NULL;
    req_release(r);
    http_parser_free(hc->hp); /* what follows the request is the relay's */
    hc->hp = NULL;
    session_front_reset(hc->s);
}

/* The upgrade's checks (RFC 6455 4.2.1), before any handler: 0 or a status. */
static int ws_check(struct http_req *r, const struct http_head *h)
{
    const struct http_hdr *v = http_head_find(h, "sec-websocket-version");
    const struct http_hdr *k = http_head_find(h, "sec-websocket-key");
    char accept[29];
    if (strcmp(h->method, "GET") || h->minor < 1)
        return r->refuse_why = "a WebSocket upgrade is a GET in HTTP/1.1", 400;
    if (!v || v->value_len != 2 || memcmp(v->value, "13", 2))
        return r->refuse_why = "only WebSocket version 13 is spoken", 426;
    if (!k || k->value_len != 24)
        return r->refuse_why = "no valid Sec-WebSocket-Key", 400;
    memcpy(r->ws_key, k->value, 24);
    r->ws_key[24] = '\0';
    if (wsf_accept(r->ws_key, accept) < 0)
        return r->refuse_why = "no valid Sec-WebSocket-Key", 400;
    return 0;
}

static bool wants_websocket(const struct http_head *h)
{
    const struct http_hdr *u = http_head_find(h, "upgrade");
    return h->upgrade && u && http_value_has_token(u->value, u->value_len, "websocket");
}

static void subscribe_decided(struct http_req *r, bool ok)
{
    if (!ok) {
        respond(r->hc, 403, "refused by the handler (auth_subscribe)", true);
        return;
    }
    session_front_subscribed(r->s, &r->ask.req.subscribe);
    upgrade(r);
}

/* ---- verdicts ------------------------------------------------------------------------------ */

static void on_verdict(struct ask *a);

/* The handler chain's verdict (a late one comes to on_verdict). */
static enum mgate_verdict ask(struct http_req *r, enum req_stage stage)
{
    r->stage = (uint8_t)stage;
    enum ask_kind kind = stage == RQ_PUBLISH ? ASK_PUBLISH : stage == RQ_SUBSCRIBE ? ASK_SUBSCRIBE : ASK_CONNECT;
    if (kind == ASK_CONNECT)
        session_mount_begin(r->s); /* a mount point only this request's auth_connect chooses */
    return verdict_ask(r->s, &r->ask, kind, on_verdict);
}

/* auth_connect has spoken.  Returns 0, or the refusal's status. */
static int connect_decided(struct http_req *r, bool ok)
{
    struct http_conn *hc = r->hc;
    if (!ok) {
        r->refuse = r->ask.req.connect.reason == MGATE_REASON_SERVER_BUSY ? 503 : 401;
        r->refuse_why = "refused by the handler (auth_connect)";
        return r->refuse;
    }
    session_front_credentials(r->s, &r->ask.req.connect);
    if (hc->hs->mqtt && !session_client_id_allowed(r->s)) { /* the bridge's ?clientid= is not this user's */
        r->refuse_why = "client id not allowed by CLIENT_ID_POLICY";
        return r->refuse = 403;
    }
    if (hc->hs->mqtt && session_mount_settle(r->s, mgate_session_username(r->s), mgate_session_client_id(r->s))) {
        r->refuse_why = "MOUNT_POINT cannot take this username or client id (empty, or with + # /)";
        return r->refuse = 403;
    }
    session_front_connected(r->s);
    r->stage = RQ_BODY;
    if (head_of(hc)->expect_continue && !r->message_done)
        conn_write(hc->c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

/* The broker's answer to the bridge's PUBLISH (http_mqtt.c, from the loop). */
static void bridged(void *ctx, int status, const char *why)
{
    struct http_req *r = ctx;
    r->bridging = false;
    if (status == 200)
        session_front_published(r->s, &r->ask.req.publish);
    respond(r->hc, status, why, false);
}

/* TARGET_PROTOCOL mqtt, mqtts: the message the handler allowed, as a PUBLISH. */
static void bridge(struct http_req *r)
{
    struct http_conn *hc = r->hc;
    const struct mgate_publish_req *p = &r->ask.req.publish;
    r->stage = RQ_FORWARD;
    r->bridging = true;
    mgate_bytes topic = p->topic, mount = mgate_session_mount_point(hc->s);
    if (mount.len) { /* the handlers saw the device's topic; the broker sees the tenant's */
        size_t n = (size_t)mount.len + topic.len;
        uint8_t *t = n <= 0xFFFFu ? mgate_session_alloc(hc->s, n) : NULL; /* lives until the answer */
        if (t) {
            memcpy(t, mount.p, mount.len);
            if (topic.len)
                memcpy(t + mount.len, topic.p, topic.len);
        }
        topic = (mgate_bytes){t, t ? (uint32_t)n : 0}; /* none: http_mqtt_publish answers 400 */
    }
    int st = http_mqtt_publish(&hc->link, hc->s, topic, p->payload, p->qos > 2 ? 2 : p->qos, p->retain,
                               hc->hs->target_timeout_ms, bridged, r);
    if (st) {
        r->bridging = false;
        respond(hc, st, st == 400   ? "the topic is not a valid topic name"
                        : st == 502 ? "the broker cannot be reached"
                                    : "out of memory",
                false);
        return;
    }
    arm(hc, hc->hs->target_timeout_ms);
}

static void publish_decided(struct http_req *r, bool ok)
{
    if (!ok) {
        respond(r->hc, 403, "refused by the handler (auth_publish)", false);
        return;
    }
    if (r->hc->hs->mqtt)
        bridge(r);
    else
        forward(r);
}

/* Everything that waits for the whole body. */
static void advance(struct http_req *r)
{
    struct http_conn *hc = r->hc;
    if (!r->message_done || r->ask.pending)
        return;
    if (r->refuse) {
        respond(hc, r->refuse, r->refuse_why, r->ws);
        return;
    }
    if (r->bypass) {
        if (r->ws)
            upgrade(r);
        else
            forward(r);
        return;
    }
    if (r->stage != RQ_BODY)
        return;
    if (r->ws) { /* auth_subscribe on the path, without the publish hook */
        struct mgate_subscribe_req *sr = &r->ask.req.subscribe;
        memset(sr, 0, sizeof(*sr));
        r->filter = (struct mgate_filter){.filter = {(const uint8_t *)r->path, (uint32_t)r->path_len}};
        sr->dir = MGATE_UP;
        sr->filters = &r->filter;
        sr->count = 1;
        enum mgate_verdict v = ask(r, RQ_SUBSCRIBE);
        if (v != MGATE_PENDING)
            subscribe_decided(r, v == MGATE_ALLOW && !r->filter.denied);
        return;
    }
    struct mgate_publish_req *p = &r->ask.req.publish;
    memset(p, 0, sizeof(*p));
    p->dir = MGATE_UP;
    p->topic = (mgate_bytes){(const uint8_t *)r->path, (uint32_t)r->path_len};
    p->payload = (mgate_bytes){r->body ? r->body : (const uint8_t *)"", (uint32_t)r->body_len};
    p->qos = r->qos;
    p->retain = r->retain;
    enum mgate_verdict v = ask(r, RQ_PUBLISH);
    if (v != MGATE_PENDING)
        publish_decided(r, v == MGATE_ALLOW);
}

/* A late verdict (the engine asked past any pass): carry on where the
 * request stopped, or free it if its connection went away meanwhile. */
static void on_verdict(struct ask *a)
{
    struct http_req *r = container_of(a, struct http_req, ask);
    struct http_conn *hc = r->hc;
    if (!hc) {
        req_free(r);
        return;
    }
    bool ok = a->verdict == MGATE_ALLOW;
    if (r->stage == RQ_CONNECT) {
        if (connect_decided(r, ok) && !r->message_done) {
            if (head_of(hc)->expect_continue) /* the client waits for a word before its body */
                respond(hc, r->refuse, r->refuse_why, true);
            else
                http_parser_discard(hc->hp); /* the body is read, not kept */
        } else {
            advance(r);
        }
    } else if (r->stage == RQ_SUBSCRIBE) {
        subscribe_decided(r, ok && !r->filter.denied);
    } else {
        publish_decided(r, ok);
    }
}

/* ---- a request's head ------------------------------------------------------------------- */

/* Where the request goes: 0, or a refusal status with r->refuse_why. */
static int route(struct http_conn *hc, struct http_req *r, const struct http_head *h, char *mem)
{
    const char *t = h->target;
    size_t tl = h->target_len;
    if (tl && t[0] != '/') { /* absolute-form: "http://host/path?q" */
        size_t skip = !strncasecmp(t, "http://", 7) ? 7 : !strncasecmp(t, "https://", 8) ? 8 : 0;
        if (!skip)
            return r->refuse_why = "the request target is not a path", tl == 1 && t[0] == '*' ? 404 : 400;
        t += skip, tl -= skip;
        size_t auth = strcspn(t, "/?");
        t += auth, tl -= auth;
        if (!tl || t[0] == '?') /* no path: "/" */
            t = "/", tl = 1;
    }
    const char *q = memchr(t, '?', tl);
    size_t raw = q ? (size_t)(q - t) : tl;
    if (q) {
        r->query = q + 1;
        r->query_len = tl - raw - 1;
    }
    const char *rest;
    int st = http_path_check(t, raw, hc->hs->path_prefix, mem, &rest, &r->refuse_why);
    if (st)
        return st;
    r->path = *rest ? rest : "/";
    r->path_len = strlen(r->path);
    const struct http_hdr *o = http_head_find(h, "origin");
    if (!http_origin_allowed(hc->hs->allowed_origins, http_head_count(h, "origin"), o ? o->value : "",
                             o ? o->value_len : 0))
        return r->refuse_why = "origin not allowed (ALLOWED_ORIGINS)", 403;
    for (unsigned i = 0; i < hc->hs->nbypass; i++)
        if (regexec(&hc->hs->bypass[i], r->path, 0, NULL, 0) == 0) {
            r->bypass = true;
            return 0;
        }
    const char *tp = hc->hs->target_path ? hc->hs->target_path : "";
    const char *below;
    if (*tp && !http_path_under(r->path, r->path_len, tp, &below))
        return r->refuse_why = "outside TARGET_PATH", 404;
    if (hc->hs->mqtt) { /* the bridge's topic: the path below the prefix, without its first '/' */
        r->path++;
        r->path_len--;
    }
    if (!mqtt_topic_name_valid((const uint8_t *)r->path, r->path_len))
        return r->refuse_why = "the path is not a valid topic (UTF-8, no + or #)", 400;
    return 0;
}

/* Basic credentials, else the whole Authorization header as the password,
 * else ?authorization= (the Go mGate's order; http_credentials, the rule of
 * every HTTP-based listener).  Returns 0 or 400 with r->refuse_why. */
static int credentials(struct http_req *r, const struct http_head *h, char *mem)
{
    struct mgate_connect_req *c = &r->ask.req.connect;
    const struct http_hdr *a = http_head_find(h, "authorization");
    struct http_cred cr;
    int st = http_credentials(a ? a->value : NULL, a ? a->value_len : 0, r->query, r->query ? r->query_len : 0,
                              false, mem, &cr, &r->refuse_why);
    if (st)
        return st;
    c->username = (mgate_bytes){(const uint8_t *)cr.user, cr.user_len};
    c->password = (mgate_bytes){(const uint8_t *)cr.pass, cr.pass_len};
    c->has_username = cr.has_user;
    c->has_password = cr.has_pass;
    return 0;
}

/* USE_CN_AS_USERNAME: the certificate's CN, or a refusal. */
static bool cn_username(struct http_req *r)
{
    struct mgate_cert cert;
    const char *cn = mgate_session_cert(r->s, &cert) ? cert.cn : "";
    size_t n = strlen(cn);
    char *p = n ? mgate_session_alloc(r->s, n) : NULL;
    if (!p)
        return false;
    memcpy(p, cn, n);
    r->ask.req.connect.username = (mgate_bytes){(const uint8_t *)p, (uint32_t)n};
    r->ask.req.connect.has_username = true;
    return true;
}

/* The bridge takes a POST only; its qos and retain. */
static int bridge_check(struct http_req *r, const struct http_head *h)
{
    if (strcmp(h->method, "POST"))
        return r->refuse_why = "only POST is bridged to the broker", 405;
    return http_mqtt_options(r->query, r->query_len, h, &r->qos, &r->retain, &r->refuse_why);
}

/* The client id auth_connect sees: ?clientid=, else the connection's own. */
static int bridge_client_id(struct http_req *r)
{
    char *mem = mgate_session_alloc(r->s, r->query_len + 1);
    if (!mem)
        return r->refuse_why = "out of memory", 503;
    return http_mqtt_client_id(r->query, r->query_len, mem, r->hc->gen_id, &r->ask.req.connect.client_id,
                               &r->refuse_why);
}

/* A refusal known before the body: answer now and close when the client
 * waits for 100 Continue, else read the body, drop it, answer after. */
static int refuse_early(struct http_req *r, const struct http_head *h, int status)
{
    r->refuse = status;
    return h->expect_continue && (h->chunked || h->content_length) ? status : HTTP_BODY_DISCARD;
}

static int on_head(void *ctx, const struct http_head *h)
{
    struct http_conn *hc = ctx;
    if (!hc->cert_done && hc->p->tls) {
        struct tls_peer peer;
        if (tls_peer_info(hc->c, &peer))
            session_set_cert(hc->s, &peer);
        hc->cert_done = true;
    }
    if (!h->keep_alive || hc->draining)
        hc->close_after = true;
    struct http_req *r = calloc(1, sizeof(*r));
    size_t memlen = h->target_len + 1;
    const struct http_hdr *a = http_head_find(h, "authorization");
    memlen += (a ? a->value_len : 0) + h->target_len + 1;
    char *mem = r ? malloc(memlen) : NULL;
    if (!mem) {
        free(r);
        return 503;
    }
    r->hc = hc;
    r->s = hc->s;
    r->mem = mem;
    r->started = loop_now(hc->loop);
    hc->req = r;
    r->ws = wants_websocket(h); /* refused or not, the connection ends after it */
    int st = route(hc, r, h, mem);
    if (!st && hc->hs->mqtt)
        st = bridge_check(r, h);
    if (!st && r->ws)
        st = ws_check(r, h);
    if (st)
        return refuse_early(r, h, st);
    if (r->bypass) {
        r->stage = RQ_BODY;
        return HTTP_BODY_KEEP;
    }
    char *cred = mem + h->target_len + 1; /* after the decoded path */
    if ((st = credentials(r, h, cred)))
        return refuse_early(r, h, st);
    r->ask.req.connect.client_id = (mgate_bytes){(const uint8_t *)"", 0};
    r->ask.req.connect.clean_start = true;
    if (hc->hs->mqtt && (st = bridge_client_id(r)))
        return refuse_early(r, h, st);
    enum mgate_verdict v = MGATE_DENY;
    if (!hc->p->cn_as_username || cn_username(r))
        v = ask(r, RQ_CONNECT);
    else
        r->stage = RQ_CONNECT;
    if (v == MGATE_PENDING)
        return HTTP_BODY_KEEP;
    st = connect_decided(r, v == MGATE_ALLOW);
    return st ? refuse_early(r, h, st) : HTTP_BODY_KEEP;
}

/* ---- the connection --------------------------------------------------------------------- */

static size_t on_data(struct conn *c, const uint8_t *data, size_t len)
{
    struct http_conn *hc = c->owner;
    size_t off = 0;
    while (off < len && (hc->phase == HC_IDLE || hc->phase == HC_READING)) {
        if (hc->phase == HC_IDLE && conn_over_high_water(c)) {
            /* Our own answers (401, 404...) count against OUTPUT_HIGH_WATER like
             * the target's: a client that pipelines and never reads gets no
             * next request parsed until it drains (on_drain), or its answers
             * would pile up here without bound.  (Between requests: a request
             * begun is read to its end, adding at most one answer.) */
            conn_pause_read(c);
            break;
        }
        if (hc->phase == HC_IDLE) { /* the first byte of a request starts its clock */
            hc->phase = HC_READING;
            arm(hc, hc->hs->request_timeout_ms);
        }
        enum http_event ev;
        off += http_parser_feed(hc->hp, data + off, len - off, &ev);
        if (ev == HTTP_EV_ERROR) {
            const char *why;
            int status = http_parser_status(hc->hp, &why);
            struct http_req *r = hc->req;
            respond(hc, status, r && r->refuse == status ? r->refuse_why : why, true);
            return len;
        }
        if (ev == HTTP_EV_MESSAGE) {
            struct http_req *r = hc->req;
            hc->phase = HC_BUSY;
            arm(hc, hc->hs->request_timeout_ms); /* for the verdicts; the target has its own */
            if (!r) { /* cannot happen: a message has a head */
                respond(hc, 500, "no request", true);
                return len;
            }
            r->message_done = true;
            r->body = http_parser_body(hc->hp, &r->body_len, true);
            advance(r);
        }
    }
    if (hc->phase == HC_BUSY)
        conn_pause_read(c); /* the next request waits its turn */
    return off;
}

static void on_drain(struct conn *c)
{
    struct http_conn *hc = c->owner;
    struct http_req *r = hc->req;
    if (r && r->paused && r->f) {
        r->paused = false;
        fetch_resume(r->f);
    } else if (hc->phase == HC_IDLE) {
        conn_resume_read(c); /* paused by on_data or request_done at the high-water mark */
    }
}

static void on_close(struct conn *c, int err)
{
    struct http_conn *hc = c->owner;
    if (err && err != ECONNRESET && err != EPIPE)
        mgate_log(LOGL_DEBUG, hc->s, "http: connection closed: %s", err == EPROTO ? "TLS failure" : strerror(err));
    hc->c = NULL;
    hc_free(hc);
}

static const struct conn_cbs http_cbs = {on_data, on_drain, NULL, on_close};

/* ---- the session list's view ----------------------------------------------------------- */

static void front_drain(struct mgate_session *s)
{
    struct http_conn *hc = session_front_ctx(s);
    if (hc->ws) {
        http_ws_drain(hc->ws);
        return;
    }
    hc->draining = true;
    hc->close_after = true;
    if (hc->phase == HC_IDLE)
        close_gracefully(hc); /* the rest finish their request first, with Connection: close */
}

static void front_close(struct mgate_session *s)
{
    struct http_conn *hc = session_front_ctx(s);
    if (hc->ws)
        http_ws_close(hc->ws); /* ws_ended frees hc */
    else
        close_now(hc);
}

static const struct session_front http_front = {.drain = front_drain, .close = front_close};

static void http_accept(struct loop *l, int fd, const struct sockaddr *peer, const struct session_params *p,
                        struct session_list *list)
{
    const struct http_settings *hs = p->front_settings;
    const struct http_limits lim = {hs->max_header, hs->max_body};
    struct conn *c = front_conn_accept(l, fd, p, list);
    if (!c)
        return;
    struct http_conn *hc = calloc(1, sizeof(*hc));
    if (!hc || !(hc->hp = http_parser_new(&lim, on_head, hc)) ||
        !(hc->s = session_front_start(l, peer, p, list, &http_front, hc))) {
        conn_close(c);
        if (hc)
            http_parser_free(hc->hp);
        free(hc);
        front_accept_failed(l, p);
        return;
    }
    c->cbs = &http_cbs;
    c->owner = hc;
    c->high_water = p->output_high_water;
    hc->c = c;
    hc->p = p;
    hc->hs = hs;
    hc->loop = l;
    /* the TLS handshake and the first request within REQUEST_TIMEOUT */
    hc->phase = HC_IDLE;
    arm(hc, hc->hs->request_timeout_ms);
}

/* ---- the front end ------------------------------------------------------------ */

static int http_prepare(const struct listener_config *lc, struct session_params *p, char *err, size_t errlen)
{
    bool mqtt = lc->target_protocol == TARGET_MQTT || lc->target_protocol == TARGET_MQTTS;
    if (lc->target_protocol != TARGET_HTTP && lc->target_protocol != TARGET_HTTPS && !mqtt) {
        snprintf(err, errlen,
                 "%sTARGET_PROTOCOL: \"%s\" is not available in this version (use http, https, mqtt or mqtts)",
                 lc->prefix, target_protocol_name(lc->target_protocol));
        return -1;
    }
    if (mqtt && *lc->bypass_paths) {
        snprintf(err, errlen, "%sBYPASS_PATHS: not possible with TARGET_PROTOCOL %s (there is no HTTP target "
                              "to pass requests to)", lc->prefix, target_protocol_name(lc->target_protocol));
        return -1;
    }
    if (!(p->front_settings = http_settings_new(lc, err, errlen)))
        return -1;
    if (lc->target_proxy_protocol) {
        snprintf(err, errlen, "%sTARGET_PROXY_PROTOCOL: not possible with TARGET_PROTOCOL %s (HTTP targets get "
                              "X-Forwarded-For instead; the bridge's broker connection carries no header)", lc->prefix,
                 target_protocol_name(lc->target_protocol));
        return -1;
    }
    return 0;
}

static void http_free(struct session_params *p)
{
    http_settings_free((struct http_settings *)p->front_settings);
    p->front_settings = NULL;
}

const struct front_ops front_http = {
    .name = "HTTP",
    .prepare = http_prepare,
    .accept = http_accept,
    .free = http_free,
};
