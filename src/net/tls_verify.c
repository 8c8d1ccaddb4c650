/*
 * Client certificate revocation, inside the handshake, without blocking.
 *
 * OpenSSL 3.0 cannot pause a server handshake from the verify callback
 * (SSL_set_retry_verify is client-side only), so the handshake runs as an
 * ASYNC job (SSL_MODE_ASYNC): when an answer is not cached, the callback
 * starts a fetch on the loop and pauses the job; SSL_do_handshake returns
 * SSL_ERROR_WANT_ASYNC and the connection stops polling its socket.  The
 * fetch's completion wakes every handshake waiting for it, the job resumes
 * in the callback, and a revoked certificate fails the handshake with the
 * proper alert (certificate_revoked), as if the answer had been there.
 *
 * The chain is checked leaf first, one item (certificate x method) at a
 * time; an item that passed is not asked again after a pause.
 */
#include <openssl/async.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"
#include "core/log.h"
#include "core/list.h"
#include "net/fetch.h"
#include "net/tls_int.h"

enum { CHECK_OCSP, CHECK_CRL };

/* Reasons quote URLs of any length: cut them to fit, on purpose. */
static void __attribute__((format(printf, 3, 4))) whyf(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

/* One fetch and the handshakes waiting for it, on one loop. */
struct tls_wait {
    struct list_node node; /* in its loop's waits */
    struct loop *loop;
    struct tls_ctx *ctx;
    int kind; /* CHECK_* */
    uint8_t key[REV_KEY_LEN];
    struct fetch *f;
    struct tls_conn *waiters;
    char url[512];
    X509 *issuer;       /* signs the answer (or its responder) */
    X509_STORE *store;  /* trusted roots for OCSP responder certificates */
    OCSP_REQUEST *req;  /* OCSP: for the nonce */
    OCSP_CERTID *id;
    struct rev_entry old; /* CRL: the one being refreshed, used if the refresh fails */
    struct fetch_request http; /* started from a deferred call (see start) */
    uint8_t *http_body;
    struct loop_defer starter;
};

/* Per-loop state, in a loop slot under &waits_key: the fetches under way. */
struct tls_loop {
    struct list_node waits;
};

static const char waits_key; /* only its address matters */

static struct tls_loop *tls_loop_of(struct loop *l) { return loop_slot_get(l, &waits_key); }

static void wait_free(struct tls_wait *w)
{
    list_remove(&w->node);
    if (w->f)
        fetch_cancel(w->f);
    loop_defer_cancel(w->loop, &w->starter);
    free(w->http_body);
    X509_free(w->issuer);
    X509_STORE_free(w->store);
    OCSP_REQUEST_free(w->req);
    OCSP_CERTID_free(w->id);
    rev_entry_clear(&w->old);
    free(w);
}

/* The slot's destructor (after loop_run has returned): cancel the fetches. */
static void tls_loop_destroy(struct loop *l, void *value)
{
    (void)l;
    struct tls_loop *tl = value;
    struct list_node *n;
    while ((n = list_first(&tl->waits)))
        wait_free(container_of(n, struct tls_wait, node));
    free(tl);
}

/* Made on the first check: the fetcher first, so that this slot, registered
 * after it, is freed before it (core/loop.h) and its fetches are cancelled
 * while libcurl's state is still there. */
static struct tls_loop *tls_loop_get(struct loop *l)
{
    struct tls_loop *tl = tls_loop_of(l);
    if (tl)
        return tl;
    if (fetch_loop_prepare(l) < 0 || !(tl = calloc(1, sizeof(*tl))))
        return NULL;
    if (loop_slot_set(l, &waits_key, tl, tls_loop_destroy) < 0) {
        free(tl);
        return NULL;
    }
    return tl;
}

/* ---- answers arriving --------------------------------------------------- */

/* A failed fetch is remembered briefly: while a responder is down, a storm
 * of handshakes is refused (or soft-failed) at once instead of each waiting
 * for REVOCATION_TIMEOUT. */
#define FAILURE_TTL 10

static void remember_failure(struct rev_cache *c, struct rev_entry *e)
{
    e->expires = time(NULL) + FAILURE_TTL;
    rev_cache_put(c, e);
}

static void ocsp_answer(struct tls_wait *w, const struct fetch_result *r, struct rev_entry *e)
{
    if (r->error || r->status != 200) {
        e->status = REV_UNAVAILABLE;
        if (r->error)
            whyf(e->why, sizeof(e->why), "OCSP responder %s: %s", w->url, r->error);
        else
            whyf(e->why, sizeof(e->why), "OCSP responder %s answered HTTP %d", w->url, r->status);
        remember_failure(&w->ctx->pol.ocsp, e);
        return;
    }
    ocsp_parse_response(r->body, r->len, w->req, w->id, w->issuer, w->store, e);
    if (e->status == REV_UNAVAILABLE)
        remember_failure(&w->ctx->pol.ocsp, e);
    else if (e->expires > time(NULL))
        rev_cache_put(&w->ctx->pol.ocsp, e);
}

/* Keep a verified CRL until its nextUpdate; fetch it again a little before. */
static void crl_times(X509_CRL *crl, struct rev_entry *e)
{
    time_t now = time(NULL), next = now + 3600;
    struct tm tm;
    const ASN1_TIME *nu = X509_CRL_get0_nextUpdate(crl);
    if (nu && ASN1_TIME_to_tm(nu, &tm))
        next = timegm(&tm);
    if (next <= now + 60) { /* expired or about to: say so, ask again soon */
        e->expires = e->refresh = now + 60;
        return;
    }
    e->expires = next;
    e->refresh = now + (next - now) * 9 / 10;
    if (e->refresh > now + 3600)
        e->refresh = now + 3600;
}

static void crl_answer(struct tls_wait *w, const struct fetch_result *r, struct rev_entry *e)
{
    X509_CRL *crl = NULL;
    if (r->error)
        whyf(e->why, sizeof(e->why), "CRL %s: %s", w->url, r->error);
    else if (r->status != 200)
        whyf(e->why, sizeof(e->why), "CRL %s: HTTP %d", w->url, r->status);
    else if (!(crl = crl_parse(r->body, r->len)))
        whyf(e->why, sizeof(e->why), "CRL %s: not a CRL (DER or PEM)", w->url);
    else if (crl_check_issuer(crl, w->issuer, e->why, sizeof(e->why)) < 0) {
        X509_CRL_free(crl);
        crl = NULL;
    } else if (w->old.crl && crl_older(crl, w->old.crl)) {
        /* an older CRL than the one we hold could hide a revocation (a replay) */
        whyf(e->why, sizeof(e->why), "CRL %s: older than the one already held", w->url);
        X509_CRL_free(crl);
        crl = NULL;
    }
    if (crl) {
        e->crl = crl;
        crl_times(crl, e);
        rev_cache_put(&w->ctx->pol.crl, e);
        return;
    }
    if (w->old.crl && !crl_expired(w->old.crl, time(NULL))) {
        /* a refresh failed: the CRL we have is still valid, try again later */
        log_msgf(LOGL_WARN, "%s; keeping the CRL fetched earlier", e->why);
        rev_entry_clear(e);
        *e = w->old;
        X509_CRL_up_ref(e->crl);
        e->refresh = time(NULL) + 60;
        rev_cache_put(&w->ctx->pol.crl, e);
        return;
    }
    remember_failure(&w->ctx->pol.crl, e);
}

static void wait_done(void *arg, const struct fetch_result *r)
{
    struct tls_wait *w = arg;
    w->f = NULL;
    METRIC_INC(loop_metrics(w->loop)->rev_fetches[w->kind == CHECK_OCSP ? METRIC_REV_OCSP : METRIC_REV_CRL][!!r->error]);
    struct rev_entry e = {.status = REV_UNAVAILABLE};
    memcpy(e.key, w->key, REV_KEY_LEN);
    if (w->kind == CHECK_OCSP)
        ocsp_answer(w, r, &e);
    else
        crl_answer(w, r, &e);
    for (struct tls_conn *t = w->waiters, *next; t; t = next) {
        next = t->chk->next_wait;
        t->chk->wait = NULL;
        rev_entry_clear(&t->chk->answer);
        t->chk->answer = e;
        if (e.crl)
            X509_CRL_up_ref(e.crl);
        t->chk->has_answer = true;
        conn_handshake_wake(t->c);
    }
    w->waiters = NULL;
    rev_entry_clear(&e);
    wait_free(w);
}

/* ---- asking ------------------------------------------------------------- */

static void join(struct tls_wait *w, struct tls_conn *t)
{
    if (t->chk->wait == w)
        return; /* already waiting for it: joining twice would make a loop of the list */
    t->chk->wait = w;
    t->chk->next_wait = w->waiters;
    w->waiters = t;
}

/* The fetch for key already under way on this loop for this listener (its
 * responder URL, trust store and caches are its own), if any. */
static struct tls_wait *find_wait(const struct tls_conn *t, const uint8_t *key)
{
    struct tls_loop *tl = tls_loop_of(t->c->loop);
    struct list_node *n, *next;
    if (!tl)
        return NULL;
    list_for_each_safe(n, next, &tl->waits) {
        struct tls_wait *w = container_of(n, struct tls_wait, node);
        if (w->ctx == t->ctx && !memcmp(w->key, key, REV_KEY_LEN))
            return w;
    }
    return NULL;
}

static struct tls_wait *wait_new(struct tls_conn *t, int kind, const uint8_t *key, const char *url, X509 *issuer)
{
    struct tls_loop *tl = tls_loop_get(t->c->loop);
    struct tls_wait *w = tl ? calloc(1, sizeof(*w)) : NULL;
    if (!w)
        return NULL;
    w->loop = t->c->loop;
    w->ctx = t->ctx;
    w->kind = kind;
    memcpy(w->key, key, REV_KEY_LEN);
    snprintf(w->url, sizeof(w->url), "%s", url);
    X509_up_ref(issuer);
    w->issuer = issuer;
    pthread_mutex_lock(&t->ctx->lock); /* a reload may swap the store */
    w->store = t->ctx->store;
    X509_STORE_up_ref(w->store);
    pthread_mutex_unlock(&t->ctx->lock);
    list_push_front(&tl->waits, &w->node);
    return w;
}

static void start_deferred(struct loop *l, struct loop_defer *d)
{
    (void)l;
    struct tls_wait *w = (struct tls_wait *)((char *)d - offsetof(struct tls_wait, starter));
    w->f = fetch_start(w->loop, &w->http, wait_done, w);
    free(w->http_body); /* fetch_start copied it */
    w->http_body = NULL;
    if (!w->f) {
        struct fetch_result r = {.body = (const uint8_t *)"", .error = "cannot start the request"};
        wait_done(w, &r);
    }
}

/* The verify callback runs on the small stack of an ASYNC job: libcurl is
 * started from a deferred call on the loop's own stack instead. */
static enum rev_status start(struct tls_wait *w, struct tls_conn *t, const struct fetch_request *req)
{
    w->http = *req;
    w->http.url = w->url;
    if (req->body_len && !(w->http_body = malloc(req->body_len))) {
        whyf(t->chk->why, sizeof(t->chk->why), "out of memory");
        wait_free(w);
        return REV_UNAVAILABLE;
    }
    if (req->body_len)
        memcpy(w->http_body, req->body, req->body_len);
    w->http.body = w->http_body;
    loop_defer(w->loop, &w->starter, start_deferred);
    join(w, t);
    return REV_WAIT;
}

static enum rev_status ask_ocsp(struct tls_conn *t, X509 *cert, X509 *issuer, OCSP_CERTID *id, const uint8_t *key)
{
    const struct tls_policy *pol = &t->ctx->pol;
    char *aia = *pol->ocsp_url ? NULL : ocsp_url_of(cert);
    const char *url = *pol->ocsp_url ? pol->ocsp_url : aia;
    if (!url) {
        whyf(t->chk->why, sizeof(t->chk->why), "no OCSP responder URL (set OCSP_RESPONDER_URL)");
        return REV_UNAVAILABLE;
    }
    struct tls_wait *w = wait_new(t, CHECK_OCSP, key, url, issuer);
    free(aia);
    unsigned char *der = NULL;
    int len = 0;
    if (!w || !(w->id = OCSP_CERTID_dup(id)) || !(w->req = ocsp_request(id, &der, &len))) {
        if (w)
            wait_free(w);
        whyf(t->chk->why, sizeof(t->chk->why), "cannot build an OCSP request");
        return REV_UNAVAILABLE;
    }
    struct fetch_request req = {.url = w->url, .body = der, .body_len = (size_t)len,
                                .content_type = "application/ocsp-request",
                                .accept = "application/ocsp-response", .timeout_ms = pol->timeout_ms,
                                .max_body = 64 * 1024};
    enum rev_status st = start(w, t, &req);
    OPENSSL_free(der);
    return st;
}

/* An answer this handshake was handed after a wait, for this key. */
static bool take_answer(struct tls_check *chk, const uint8_t *key, struct rev_entry *out)
{
    if (!chk->has_answer || memcmp(chk->answer.key, key, REV_KEY_LEN))
        return false;
    *out = chk->answer; /* ownership of the CRL reference moves to out */
    chk->answer.crl = NULL;
    chk->has_answer = false;
    return true;
}

static enum rev_status check_ocsp(struct tls_conn *t, X509 *cert, X509 *issuer)
{
    uint8_t key[REV_KEY_LEN];
    OCSP_CERTID *id = ocsp_cert_id(cert, issuer, key);
    if (!id) {
        whyf(t->chk->why, sizeof(t->chk->why), "cannot make an OCSP certificate id");
        return REV_UNAVAILABLE;
    }
    struct rev_entry e = {0};
    enum rev_status st;
    if (take_answer(t->chk, key, &e) || (rev_cache_get(&t->ctx->pol.ocsp, key, &e) &&
                                         (METRIC_INC(loop_metrics(t->c->loop)->rev_cache_hits[METRIC_REV_OCSP]), 1))) {
        st = e.status;
        if (st == REV_UNAVAILABLE)
            whyf(t->chk->why, sizeof(t->chk->why), "%s", e.why);
    } else {
        struct tls_wait *w = find_wait(t, key);
        st = w ? (join(w, t), REV_WAIT) : ask_ocsp(t, cert, issuer, id, key);
    }
    OCSP_CERTID_free(id);
    return st;
}

/* ---- CRLs --------------------------------------------------------------- */

static enum rev_status judge_crl(struct tls_conn *t, X509_CRL *crl, X509 *cert)
{
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(cert))) {
        whyf(t->chk->why, sizeof(t->chk->why), "the CRL is not from the certificate's issuer");
        return REV_UNAVAILABLE;
    }
    if (crl_expired(crl, time(NULL)))
        return REV_CRL_EXPIRED;
    return crl_revokes(crl, cert) ? REV_REVOKED : REV_GOOD;
}

/* The offline CRL, when it is the issuer's: signature checked by the
 * configured issuer at load, else by the chain's issuer here. */
static bool offline_crl(struct tls_conn *t, X509 *cert, X509 *issuer, enum rev_status *st)
{
    struct tls_policy *pol = &t->ctx->pol;
    pthread_mutex_lock(&pol->offline_lock);
    X509_CRL *crl = pol->offline_crl;
    bool mine = crl && !X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(cert));
    if (mine)
        X509_CRL_up_ref(crl);
    bool checked = pol->offline_checked;
    pthread_mutex_unlock(&pol->offline_lock);
    if (!mine)
        return false;
    if (!checked && crl_check_issuer(crl, issuer, t->chk->why, sizeof(t->chk->why)) < 0)
        *st = REV_UNAVAILABLE;
    else
        *st = judge_crl(t, crl, cert);
    X509_CRL_free(crl);
    return true;
}

static enum rev_status fetch_crl(struct tls_conn *t, const char *url, const uint8_t *key, X509 *issuer,
                                 struct rev_entry *old)
{
    const struct tls_policy *pol = &t->ctx->pol;
    X509 *signer = *pol->crl_url && pol->crl_url_issuer ? pol->crl_url_issuer : issuer;
    struct tls_wait *w = wait_new(t, CHECK_CRL, key, url, signer);
    if (!w) {
        whyf(t->chk->why, sizeof(t->chk->why), "out of memory");
        return REV_UNAVAILABLE;
    }
    w->old = *old;
    old->crl = NULL;
    struct fetch_request req = {.url = w->url, .timeout_ms = pol->timeout_ms, .max_body = 16u << 20};
    return start(w, t, &req);
}

static enum rev_status check_crl(struct tls_conn *t, X509 *cert, X509 *issuer)
{
    enum rev_status st;
    if (offline_crl(t, cert, issuer, &st))
        return st;
    const struct tls_policy *pol = &t->ctx->pol;
    char *cdp = *pol->crl_url ? NULL : crl_url_of(cert);
    const char *url = *pol->crl_url ? pol->crl_url : cdp;
    if (!url) {
        whyf(t->chk->why, sizeof(t->chk->why), "no CRL distribution point (set CRL_DISTRIBUTION_POINTS or OFFLINE_CRL_FILE)");
        return REV_UNAVAILABLE;
    }
    uint8_t key[REV_KEY_LEN];
    rev_key(url, strlen(url), key);
    struct rev_entry e = {0};
    bool answered = take_answer(t->chk, key, &e);
    if (answered || (rev_cache_get(&t->ctx->pol.crl, key, &e) &&
                     (METRIC_INC(loop_metrics(t->c->loop)->rev_cache_hits[METRIC_REV_CRL]), 1))) {
        if (!answered && e.crl && e.refresh <= time(NULL) && !find_wait(t, key)) {
            st = fetch_crl(t, url, key, issuer, &e); /* refresh; e's CRL is the fallback */
        } else if (e.crl) {
            st = judge_crl(t, e.crl, cert);
        } else {
            whyf(t->chk->why, sizeof(t->chk->why), "%s", e.why);
            st = REV_UNAVAILABLE;
        }
    } else {
        struct tls_wait *w = find_wait(t, key);
        st = w ? (join(w, t), REV_WAIT) : fetch_crl(t, url, key, issuer, &e);
    }
    rev_entry_clear(&e);
    free(cdp);
    return st;
}

/* ---- the callback ------------------------------------------------------- */

/* Walk the chain from where the last pause left off.  *depth: where it stopped. */
static enum rev_status evaluate(struct tls_conn *t, STACK_OF(X509) *chain, int *depth)
{
    const struct tls_policy *pol = &t->ctx->pol;
    int n = sk_X509_num(chain);
    for (; t->chk->pos < 2u * (unsigned)(n - 1); t->chk->pos++) {
        int d = (int)(t->chk->pos / 2), kind = (int)(t->chk->pos % 2);
        *depth = d;
        X509 *cert = sk_X509_value(chain, d), *issuer = sk_X509_value(chain, d + 1);
        enum rev_status st = REV_GOOD;
        if (kind == CHECK_OCSP && (pol->methods & TLS_CHECK_OCSP) && (!pol->ocsp_depth || (unsigned)d < pol->ocsp_depth))
            st = check_ocsp(t, cert, issuer);
        else if (kind == CHECK_CRL && (pol->methods & TLS_CHECK_CRL) && (!pol->crl_depth || (unsigned)d < pol->crl_depth))
            st = check_crl(t, cert, issuer);
        if (st == REV_UNAVAILABLE && pol->soft_fail) {
            log_msgf(LOGL_WARN, "%s: revocation status unavailable, allowed (REVOCATION_SOFT_FAIL): %s",
                     t->ctx->name, t->chk->why);
            st = REV_GOOD;
        }
        if (st != REV_GOOD)
            return st;
    }
    return REV_GOOD;
}

static int refuse(struct tls_conn *t, X509_STORE_CTX *x, STACK_OF(X509) *chain, int depth, enum rev_status st)
{
    static const int err[] = {
        [REV_REVOKED] = X509_V_ERR_CERT_REVOKED,
        [REV_UNKNOWN] = X509_V_ERR_OCSP_CERT_UNKNOWN,
        [REV_UNAVAILABLE] = X509_V_ERR_UNABLE_TO_GET_CRL,
        [REV_CRL_EXPIRED] = X509_V_ERR_CRL_HAS_EXPIRED,
    };
    struct tls_check *chk = t->chk;
    X509 *cert = sk_X509_value(chain, depth);
    const char *how = depth == 0 ? "" : " (an issuing CA of the chain)";
    char detail[REV_WHY_LEN];
    snprintf(detail, sizeof(detail), "%s", chk->why);
    if (st == REV_REVOKED)
        whyf(chk->why, sizeof(chk->why), "certificate revoked (%s)%s",
                 chk->pos % 2 == CHECK_OCSP ? "OCSP" : "CRL", how);
    else if (st == REV_UNKNOWN)
        whyf(chk->why, sizeof(chk->why), "certificate status unknown to the OCSP responder%s", how);
    else if (st == REV_CRL_EXPIRED)
        whyf(chk->why, sizeof(chk->why), "CRL has expired");
    else
        whyf(chk->why, sizeof(chk->why), "revocation status unavailable: %s", detail);
    cert_cn(cert, chk->cn, sizeof(chk->cn));
    cert_serial(cert, chk->serial, sizeof(chk->serial));
    X509_STORE_CTX_set_error_depth(x, depth);
    X509_STORE_CTX_set_current_cert(x, cert);
    bool ocsp = chk->pos % 2 == CHECK_OCSP;
    X509_STORE_CTX_set_error(x, st == REV_UNAVAILABLE && ocsp ? X509_V_ERR_OCSP_VERIFY_FAILED : err[st]);
    return 0;
}

static struct tls_check *check_of(struct tls_conn *t)
{
    if (!t->chk)
        t->chk = calloc(1, sizeof(*t->chk));
    return t->chk;
}

/* A chain that did not verify: remember whose certificate, for the log. */
static void chain_failed(struct tls_conn *t, X509_STORE_CTX *x)
{
    X509 *cert = X509_STORE_CTX_get_current_cert(x);
    if (cert && check_of(t)) {
        cert_cn(cert, t->chk->cn, sizeof(t->chk->cn));
        cert_serial(cert, t->chk->serial, sizeof(t->chk->serial));
    }
}

/* Pause the handshake's job until the fetch it joined has answered.  A
 * resume without an answer (a stray wake) pauses again.  false: closing,
 * or not running as a job. */
static bool pause_for_answer(struct tls_conn *t)
{
    while (t->chk->wait && !t->chk->has_answer) {
        if (!ASYNC_get_current_job())
            return false;
        ERR_clear_error(); /* a leftover error would turn WANT_ASYNC into a failure */
        t->paused = true;
        conn_handshake_wait(t->c);
        int ok = ASYNC_pause_job();
        t->paused = false;
        if (t->cancelled || !ok)
            return false;
    }
    return true;
}

int tls_verify_cb(X509_STORE_CTX *x, void *arg)
{
    struct tls_ctx *ctx = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_conn *t = SSL_get_ex_data(ssl, tls_conn_index());
    int ok = X509_verify_cert(x);
    if (ok <= 0 && t)
        chain_failed(t, x);
    if (ok <= 0 || !ctx->pol.methods)
        return ok;
    if (!t) { /* not one of our connections: no way to wait, so no way to check */
        X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (!check_of(t)) {
        X509_STORE_CTX_set_error(x, X509_V_ERR_OUT_OF_MEM);
        return 0;
    }
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(x);
    for (;;) {
        int depth = 0;
        enum rev_status st = evaluate(t, chain, &depth);
        if (st == REV_GOOD)
            return 1;
        if (st != REV_WAIT)
            return refuse(t, x, chain, depth, st);
        if (!pause_for_answer(t)) {
            if (t->cancelled) {
                X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
                return 0;
            }
            whyf(t->chk->why, sizeof(t->chk->why), "cannot wait for the answer");
            return refuse(t, x, chain, depth, REV_UNAVAILABLE);
        }
    }
}

void tls_check_end(struct tls_conn *t)
{
    struct tls_check *chk = t->chk;
    if (!chk)
        return;
    if (chk->wait) {
        for (struct tls_conn **p = &chk->wait->waiters; *p; p = &(*p)->chk->next_wait)
            if (*p == t) {
                *p = chk->next_wait;
                break;
            }
    }
    rev_entry_clear(&chk->answer);
    free(chk);
    t->chk = NULL;
}
