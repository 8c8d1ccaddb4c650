/*
 * The `rewrite` handler: topics rewritten by the rules of
 * MGATE_REWRITE_FILE (rewrite.h; docs/HANDLERS.md), as EMQX's topic
 * rewrite does.
 *
 *   PUBLISH      publish rules, on the topic (an alias already resolved);
 *   will         the same rules on the CONNECT's will topic;
 *   SUBSCRIBE    subscribe rules, on each filter ($share/GROUP/ kept, the
 *                filter after it rewritten);
 *   UNSUBSCRIBE  the subscribe rules again (rewrite_unsubscribe), so the
 *                client unsubscribes what its SUBSCRIBE became.
 *
 * The first rule whose filter covers the topic and whose regex matches it
 * rewrites it; later rules are not tried.  A result that is no valid topic
 * name (filter), or an identity that may not stand in it, refuses the
 * packet (that filter of a SUBSCRIBE); an UNSUBSCRIBE filter is then left
 * as it came.  Otherwise the handler passes (MGATE_IGNORE): the next one
 * of the chain, `acl` in `rewrite,acl`, judges the topic that will be sent.
 * Deliveries from the broker are not touched.
 *
 * The rule set is swapped as a whole on SIGHUP (swap.h), like acl's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "handlers/handlers.h"
#include "handlers/rewrite.h"
#include "handlers/swap.h"
#include "mqtt/mqtt.h"
#include "session/session.h"

static void set_free(void *rs) { rewrite_rules_free(rs); }

static struct swap sets = SWAP_INIT(set_free);
static _Thread_local struct swap_local mine;
static char *rules_path; /* MGATE_REWRITE_FILE, for SIGHUP */

static const struct rewrite_rules *rules_get(void) { return swap_get(&sets, &mine); }

/* What %u, %c and %cn stand for, looked up once per packet, the
 * certificate only for a rule that needs it (it is computed on each call). */
struct who_cache {
    mgate_session *s;
    bool ready, cert_asked;
    struct rewrite_who who;
    struct mgate_cert cert;
};

static const struct rewrite_who *who_get(struct who_cache *wc, bool cn)
{
    if (!wc->ready) {
        wc->who.user = mgate_session_username(wc->s);
        wc->who.client = mgate_session_client_id(wc->s);
        wc->ready = true;
    }
    if (cn && !wc->cert_asked) {
        wc->cert_asked = true;
        wc->who.has_cn = mgate_session_cert(wc->s, &wc->cert);
        wc->who.cn = (mgate_bytes){(const uint8_t *)wc->cert.cn, (uint32_t)strnlen(wc->cert.cn, sizeof(wc->cert.cn))};
    }
    return &wc->who;
}

/* "$share/GROUP/": the length of that prefix of a filter, else 0. */
static size_t share_prefix(mgate_bytes f)
{
    static const char share[] = "$share/";
    size_t n = sizeof(share) - 1;
    if (f.len <= n || memcmp(f.p, share, n) != 0)
        return 0;
    const uint8_t *slash = memchr(f.p + n, '/', f.len - n);
    return slash && slash > f.p + n && (size_t)(slash - f.p) + 1 < f.len ? (size_t)(slash - f.p) + 1 : 0;
}

/* One packet's topic or filter and how to speak of it in the log. */
struct target {
    mgate_session *s;
    unsigned dir;           /* REWRITE_PUBLISH or REWRITE_SUBSCRIBE */
    const char *what;       /* "PUBLISH", "will", "SUBSCRIBE filter", "UNSUBSCRIBE filter" */
    const char *then;       /* what happens on a failed rewrite: "refused" */
    struct who_cache *wc;
};

#define SHOWN(b) (int)((b).len > 120 ? 120 : (b).len), (const char *)(b).p

static void count(mgate_session *s, bool rewritten)
{
    METRIC_INC(loop_metrics(session_loop(s))->rewrites[rewritten ? 0 : 1]);
}

static bool fail(const struct target *tg, const struct rewrite_rules *rs, const struct rewrite_rule *r, mgate_bytes t,
                 const char *why)
{
    count(tg->s, false);
    session_log(tg->s, LOGL_INFO, "rewrite: %s \"%.*s\" %s: rule %s:%u %s", tg->what, SHOWN(t), tg->then, rs->path,
                r->line, why);
    return false;
}

static const char *refusal_text(long rc)
{
    return rc == REWRITE_NO_CERT ? "needs %cn, and the client sent no certificate"
                                 : "substitutes a username, client id or certificate CN that is empty, holds '+', "
                                   "'#' or '/', or would start the topic with '$'";
}

static bool result_valid(unsigned dir, const uint8_t *p, size_t n)
{
    return dir == REWRITE_PUBLISH ? mqtt_topic_name_valid(p, n) : mqtt_topic_filter_valid(p, n);
}

/* regexec wants a NUL after the topic: a copy, in `small` for all but
 * long topics.  NULL when out of memory. */
static char *nul_terminated(mgate_session *s, const uint8_t *f, size_t flen, char *small, size_t room)
{
    char *z = flen < room ? small : mgate_session_alloc(s, flen + 1);
    if (z) {
        memcpy(z, f, flen);
        z[flen] = '\0';
    }
    return z;
}

/* Rewrite *t by the first rule that matches: true when it is as it should
 * be sent (unchanged, or pointed at the result in session memory), false
 * when the rewrite failed (logged; *t unchanged). */
static bool rewrite_one(const struct target *tg, const struct rewrite_rules *rs, mgate_bytes *t)
{
    size_t skip = tg->dir == REWRITE_SUBSCRIBE ? share_prefix(*t) : 0;
    const uint8_t *f = t->p + skip;
    size_t flen = t->len - skip;
    char small[256];
    const char *z = nul_terminated(tg->s, f, flen, small, sizeof(small));
    if (!z) {
        session_log(tg->s, LOGL_WARN, "rewrite: %s \"%.*s\" %s: out of memory", tg->what, SHOWN(*t), tg->then);
        count(tg->s, false);
        return false;
    }
    regmatch_t m[REWRITE_MAX_GROUPS + 1];
    const struct rewrite_rule *r = rewrite_match(rs, tg->dir, z, flen, m);
    if (!r)
        return true;
    const struct rewrite_who *who = who_get(tg->wc, r->needs_cn);
    long n = rewrite_expand(r, f, m, who, NULL, 0);
    if (n < 0)
        return fail(tg, rs, r, *t, refusal_text(n));
    if (skip + (size_t)n > REWRITE_MAX_TOPIC)
        return fail(tg, rs, r, *t, "gives a topic longer than 65535 bytes");
    uint8_t *out = mgate_session_alloc(tg->s, skip + (size_t)n + 1);
    if (!out)
        return fail(tg, rs, r, *t, "could not be applied: out of memory");
    memcpy(out, t->p, skip);
    rewrite_expand(r, f, m, who, out + skip, (size_t)n);
    mgate_bytes res = {out, (uint32_t)(skip + (size_t)n)};
    if (!result_valid(tg->dir, out + skip, (size_t)n)) {
        char why[200];
        snprintf(why, sizeof(why), "gives \"%.*s\", not a valid topic %s", SHOWN(res),
                 tg->dir == REWRITE_PUBLISH ? "name" : "filter");
        return fail(tg, rs, r, *t, why);
    }
    *t = res;
    count(tg->s, true);
    return true;
}

static enum mgate_verdict auth_publish(mgate_session *s, struct mgate_publish_req *req)
{
    if (req->dir != MGATE_UP)
        return MGATE_IGNORE;
    struct who_cache wc = {.s = s};
    struct target tg = {.s = s, .dir = REWRITE_PUBLISH, .what = req->will ? "will" : "PUBLISH",
                        .then = "refused", .wc = &wc};
    return rewrite_one(&tg, rules_get(), &req->topic) ? MGATE_IGNORE : MGATE_DENY;
}

static enum mgate_verdict auth_subscribe(mgate_session *s, struct mgate_subscribe_req *req)
{
    if (req->dir != MGATE_UP)
        return MGATE_IGNORE; /* deliveries keep the broker's topic (docs/HANDLERS.md) */
    const struct rewrite_rules *rs = rules_get();
    struct who_cache wc = {.s = s};
    struct target tg = {.s = s, .dir = REWRITE_SUBSCRIBE, .what = "SUBSCRIBE filter", .then = "refused", .wc = &wc};
    for (uint32_t i = 0; i < req->count; i++) {
        struct mgate_filter *f = &req->filters[i];
        if (!f->denied && !rewrite_one(&tg, rs, &f->filter))
            f->denied = true;
    }
    return MGATE_IGNORE;
}

/* The SUBSCRIBE's rules again; a filter they cannot rewrite was refused
 * when subscribed, so sending it as it came unsubscribes nothing of
 * anyone else's. */
static void rewrite_unsubscribe(mgate_session *s, struct mgate_unsubscribe_req *req)
{
    const struct rewrite_rules *rs = rules_get();
    struct who_cache wc = {.s = s};
    struct target tg = {.s = s, .dir = REWRITE_SUBSCRIBE, .what = "UNSUBSCRIBE filter", .then = "left as sent",
                        .wc = &wc};
    for (uint32_t i = 0; i < req->count; i++)
        rewrite_one(&tg, rs, &req->topics[i]);
}

const struct mgate_handler mgate_rewrite_handler = {
    .name = "rewrite",
    .auth_publish = auth_publish,
    .auth_subscribe = auth_subscribe,
    .rewrite_unsubscribe = rewrite_unsubscribe,
};

/* ---- start, SIGHUP, stop ---------------------------------------------- */

static int load(struct rewrite_rules **out, char *err, size_t errlen)
{
    char why[600];
    if (rewrite_rules_load(rules_path, out, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "MGATE_REWRITE_FILE: %s", why);
        return -1;
    }
    return 0;
}

int rewrite_start(const struct mgate_config *cfg, char *err, size_t errlen)
{
    if (!*cfg->rewrite_file) {
        snprintf(err, errlen, "MGATE_HANDLER: \"rewrite\" needs MGATE_REWRITE_FILE");
        return -1;
    }
    free(rules_path);
    if (!(rules_path = strdup(cfg->rewrite_file))) {
        snprintf(err, errlen, "rewrite: out of memory");
        return -1;
    }
    struct rewrite_rules *rs;
    if (load(&rs, err, errlen) < 0)
        return -1;
    if (swap_install(&sets, rs) < 0) {
        rewrite_rules_free(rs);
        snprintf(err, errlen, "rewrite: out of memory");
        return -1;
    }
    log_msgf(LOGL_INFO, "rewrite: %u rules from %s", rs->n, rules_path);
    return 0;
}

void rewrite_reload(void)
{
    char err[700];
    struct rewrite_rules *rs;
    if (load(&rs, err, sizeof(err)) < 0) {
        log_msgf(LOGL_ERROR, "SIGHUP: %s; keeping the previous rewrite rules", err);
        return;
    }
    if (swap_install(&sets, rs) < 0) {
        rewrite_rules_free(rs);
        log_msgf(LOGL_ERROR, "SIGHUP: rewrite: out of memory; keeping the previous rules");
        return;
    }
    log_msgf(LOGL_INFO, "SIGHUP: rewrite reloaded: %u rules from %s", rs->n, rules_path);
}

void rewrite_stop(void)
{
    swap_clear(&sets, &mine);
    free(rules_path);
    rules_path = NULL;
}
