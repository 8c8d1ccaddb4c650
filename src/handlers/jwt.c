/*
 * The `jwt` handler: a CONNECT's token (its password, or its username with
 * MGATE_JWT_TOKEN_FROM=username) must be a JWT signed by a key mgate
 * knows, with valid claims; docs/HANDLERS.md ("The jwt handler") has the
 * settings.  The pure parts are jwt_keys.c, jwt_token.c, jwt_claims.c
 * (jwt.h); the key set and MGATE_JWT_JWKS_URL are jwt_jwks.c's.
 *
 *   CONNECT    no token, or any fault in it: refused, CONNACK 4 / 0x86.
 *              Never passed on: a gate must not let a client without a
 *              token fall through to "allowed".  A token whose kid the set
 *              lacks waits (pending) for a fetch of the JWKS URL, when one
 *              is in flight or may start (jwt_jwks.c's floor).
 *   identity   the username claim must equal the username sent, or becomes
 *              the username (MGATE_JWT_USERNAME); the client id claim must
 *              equal the client id.
 *   PUBLISH,   checked against the token's acl claim (kept per session);
 *   SUBSCRIBE, a token without one leaves them to the rest of the chain.
 *   delivery
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/utf8.h"
#include "handlers/handlers.h"
#include "handlers/jwt_handler.h"
#include "session/session.h"

_Static_assert(JWT_RESULT_COUNT <= METRIC_JWT_RESULTS, "metrics.h counts every jwt_result");

static struct {
    bool started;
    uint32_t algs; /* JWT_ALG_BIT mask */
    char *issuer, *audience, *username_claim, *client_id_claim, *acl_claim;
    uint32_t leeway_s, wait_ms;
    bool require_exp, token_from_username, username_set, expire_sessions, forward_token;
} jc;

static bool bytes_eq(mgate_bytes b, const char *s, size_t len)
{
    return b.len == len && (!len || memcmp(b.p, s, len) == 0);
}

/* One line per refusal, within the session's log budget; never the token. */
static enum mgate_verdict refuse(mgate_session *s, struct mgate_connect_req *req, enum jwt_result r,
                                 const struct jwt_token *t)
{
    ASSERT(r != JWT_OK && r < JWT_RESULT_COUNT);
    METRIC_INC(loop_metrics(session_loop(s))->jwt_refused[r]);
    struct logline l;
    if (session_log_begin(s, &l, LOGL_INFO, "jwt: CONNECT refused")) {
        log_str(&l, "reason", jwt_result_name(r));
        if (t && t->has_kid)
            log_str(&l, "kid", t->kid);
        log_end(&l);
    }
    req->reason = MGATE_REASON_BAD_USER_OR_PASSWORD;
    return MGATE_DENY;
}

/* The HTTP listener passes the whole Authorization header as the password
 * (the Go mGate's rule, for webhooks): "Bearer " is dropped here.  No JWT
 * holds a space, so nothing else can start that way. */
static mgate_bytes without_bearer(mgate_bytes b)
{
    if (b.len > 7 && strncasecmp((const char *)b.p, "bearer ", 7) == 0)
        return (mgate_bytes){b.p + 7, b.len - 7};
    return b;
}

static bool token_of(const struct mgate_connect_req *req, mgate_bytes *tok)
{
    bool has = jc.token_from_username ? req->has_username : req->has_password;
    *tok = without_bearer(jc.token_from_username ? req->username : req->password);
    return has && tok->len;
}

/* ---- identity and permissions ---------------------------------------------- */

/* MGATE_JWT_USERNAME: match a username the client sent, else (or with
 * `set`) make the claim the username. */
static enum jwt_result identity(mgate_session *s, struct mgate_connect_req *req, const struct jwt_token *t)
{
    if (!*jc.username_claim)
        return JWT_OK;
    size_t len;
    const char *c = jwt_claim_string(t, jc.username_claim, &len);
    if (!c || !len || len > UINT16_MAX || !utf8_mqtt_name((const uint8_t *)c, len))
        return JWT_IDENTITY; /* a name the broker would refuse (a control character) is no identity */
    bool sent = !jc.token_from_username && req->has_username && req->username.len;
    if (sent && !jc.username_set)
        return bytes_eq(req->username, c, len) ? JWT_OK : JWT_IDENTITY;
    uint8_t *p = mgate_session_alloc(s, len);
    if (!p)
        return JWT_IDENTITY; /* out of memory: never let the token's name go unapplied */
    memcpy(p, c, len);
    req->username = (mgate_bytes){p, (uint32_t)len};
    req->has_username = true;
    return JWT_OK;
}

static enum jwt_result client_id_ok(const struct mgate_connect_req *req, const struct jwt_token *t)
{
    if (!*jc.client_id_claim)
        return JWT_OK;
    size_t len;
    const char *c = jwt_claim_string(t, jc.client_id_claim, &len);
    return c && bytes_eq(req->client_id, c, len) ? JWT_OK : JWT_IDENTITY;
}

static void rules_free(void *rs)
{
    acl_rules_free(rs);
    free(rs);
}

/* The acl claim, kept in the session (replacing what an earlier CONNECT of
 * the HTTP or CoAP bridge kept); none: publish and subscribe pass on. */
static enum jwt_result keep_acl(mgate_session *s, const struct jwt_token *t)
{
    struct acl_rules *rs = *jc.acl_claim ? calloc(1, sizeof(*rs)) : NULL;
    bool present = false;
    enum jwt_result r = rs ? jwt_acl_claim(t, jc.acl_claim, rs, &present) : JWT_OK;
    if (*jc.acl_claim && !rs)
        r = JWT_BAD_CLAIM; /* out of memory: refused rather than unchecked */
    if (r != JWT_OK || !present) {
        free(rs); /* empty, or already freed by jwt_acl_claim */
        if (r == JWT_OK)
            mgate_session_set_handler_data(s, &mgate_jwt_handler, NULL, NULL);
        return r;
    }
    if (mgate_session_set_handler_data(s, &mgate_jwt_handler, rs, rules_free) < 0) {
        rules_free(rs);
        return JWT_BAD_CLAIM;
    }
    return JWT_OK;
}

/* A verified token's claims; JWT_OK when the CONNECT is let in. */
static enum jwt_result accept_claims(mgate_session *s, struct mgate_connect_req *req, const struct jwt_token *t)
{
    struct jwt_policy p = {.issuer = jc.issuer, .audience = jc.audience, .leeway_s = jc.leeway_s,
                           .require_exp = jc.require_exp};
    uint64_t exp = 0;
    enum jwt_result r = jwt_check_claims(t, &p, (uint64_t)time(NULL), &exp);
    if (r == JWT_OK)
        r = identity(s, req, t);
    if (r == JWT_OK)
        r = client_id_ok(req, t);
    if (r == JWT_OK)
        r = keep_acl(s, t); /* last: nothing after it refuses */
    if (r != JWT_OK)
        return r;
    if (jc.expire_sessions && exp)
        mgate_session_expire_at(s, exp + jc.leeway_s);
    if (!jc.forward_token && !jc.token_from_username)
        req->has_password = false; /* verified here: the broker never holds a live bearer token */
    METRIC_INC(loop_metrics(session_loop(s))->jwt_verified);
    return JWT_OK;
}

/* ---- the CONNECT ------------------------------------------------------------ */

static enum mgate_verdict judge(mgate_session *s, struct mgate_connect_req *req, bool final);

/* A CONNECT waiting for a fetch (this worker's or another's). */
struct wait {
    struct jwks_wait w;
    mgate_session *s;
    struct mgate_connect_req *req;
};

/* The wait is over: judged once more, for good.  At shutdown, refused. */
static void wait_done(struct jwks_wait *jw, bool shutdown)
{
    struct wait *w = container_of(jw, struct wait, w);
    mgate_session *s = w->s;
    struct mgate_connect_req *req = w->req;
    free(w);
    if (shutdown)
        req->reason = MGATE_REASON_SERVER_UNAVAILABLE;
    mgate_resume(s, req, shutdown ? MGATE_DENY : judge(s, req, true));
}

static enum mgate_verdict wait_for_keys(mgate_session *s, struct mgate_connect_req *req, uint64_t generation)
{
    struct wait *w = malloc(sizeof(*w));
    if (!w)
        return judge(s, req, true);
    w->s = s;
    w->req = req;
    if (jwks_wait(session_loop(s), &w->w, generation, jc.wait_ms, wait_done) < 0) {
        free(w);
        return judge(s, req, true);
    }
    return MGATE_PENDING;
}

/* The token against the current set; a stale set is refreshed meanwhile. */
static enum jwt_result verify(mgate_session *s, const struct jwt_token *t)
{
    const struct jwt_set *set = jwks_current();
    enum jwt_result r = jwt_verify(t, &set->ks, jc.algs);
    if (r != JWT_UNKNOWN_KID)
        jwks_maybe_refresh(session_loop(s), set);
    return r;
}

/* final: no fetch is started or waited for (the wait is over). */
static enum mgate_verdict judge(mgate_session *s, struct mgate_connect_req *req, bool final)
{
    mgate_bytes tok;
    if (!token_of(req, &tok))
        return refuse(s, req, JWT_NO_TOKEN, NULL);
    struct jwt_token t;
    enum jwt_result r = jwt_parse(tok.p, tok.len, &t);
    if (r != JWT_OK)
        return refuse(s, req, r, NULL);
    uint64_t generation = jwks_generation(); /* before: a swap meanwhile ends the wait */
    r = verify(s, &t);
    if (r == JWT_UNKNOWN_KID && !final && jwks_unknown_kid(session_loop(s))) {
        jwt_token_free(&t);
        return wait_for_keys(s, req, generation);
    }
    if (r == JWT_OK)
        r = accept_claims(s, req, &t);
    enum mgate_verdict v = r == JWT_OK ? MGATE_ALLOW : refuse(s, req, r, &t);
    jwt_token_free(&t);
    return v;
}

static enum mgate_verdict auth_connect(mgate_session *s, struct mgate_connect_req *req)
{
    return judge(s, req, false);
}

/* ---- PUBLISH, SUBSCRIBE, deliveries ------------------------------------------ */

static bool permitted(const mgate_session *s, const struct acl_rules *rs, unsigned access, mgate_bytes topic)
{
    mgate_bytes user = mgate_session_username(s), client = mgate_session_client_id(s);
    struct acl_who who = {.user = user.p, .user_len = user.len, .client = client.p, .client_len = client.len};
    return acl_rules_allow(rs, &who, access, topic.p, topic.len);
}

static enum mgate_verdict auth_publish(mgate_session *s, struct mgate_publish_req *req)
{
    const struct acl_rules *rs = mgate_session_handler_data(s, &mgate_jwt_handler);
    if (!rs)
        return MGATE_IGNORE; /* no acl claim: authentication only */
    if (permitted(s, rs, ACL_WRITE, req->topic))
        return MGATE_ALLOW;
    if (log_enabled(LOGL_DEBUG))
        session_log(s, LOGL_DEBUG, "jwt: %s on %.*s refused by the token's acl claim", req->will ? "will" : "PUBLISH",
                    (int)req->topic.len, (const char *)req->topic.p);
    return MGATE_DENY;
}

static enum mgate_verdict auth_subscribe(mgate_session *s, struct mgate_subscribe_req *req)
{
    const struct acl_rules *rs = mgate_session_handler_data(s, &mgate_jwt_handler);
    if (!rs)
        return MGATE_IGNORE;
    if (req->dir == MGATE_DOWN) {
        ASSERT(req->count == 1);
        return permitted(s, rs, ACL_READ, req->filters[0].filter) ? MGATE_ALLOW : MGATE_DENY;
    }
    for (uint32_t i = 0; i < req->count; i++)
        if (!req->filters[i].denied && !permitted(s, rs, ACL_READ, req->filters[i].filter))
            req->filters[i].denied = true;
    return MGATE_ALLOW;
}

const struct mgate_handler mgate_jwt_handler = {
    .name = "jwt",
    .auth_connect = auth_connect,
    .auth_publish = auth_publish,
    .auth_subscribe = auth_subscribe,
};

/* ---- start, SIGHUP, stop ------------------------------------------------------- */

static int pick(const char *var, const char *value, const char *a, const char *b, bool *is_b, char *err,
                size_t errlen)
{
    if (strcmp(value, a) && strcmp(value, b)) {
        snprintf(err, errlen, "%s: \"%s\" is not %s or %s", var, value, a, b);
        return -1;
    }
    *is_b = strcmp(value, b) == 0;
    return 0;
}

/* The settings that are not keys; -1 with a message naming the variable. */
static int check_settings(const struct mgate_config *c, char *err, size_t errlen)
{
    char why[128];
    if (jwt_algs_parse(c->jwt_algorithms, &jc.algs, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "MGATE_JWT_ALGORITHMS: %s", why);
        return -1;
    }
    if (pick("MGATE_JWT_TOKEN_FROM", c->jwt_token_from, "password", "username", &jc.token_from_username, err,
             errlen) < 0 ||
        pick("MGATE_JWT_USERNAME", c->jwt_username, "match", "set", &jc.username_set, err, errlen) < 0)
        return -1;
    if (jc.token_from_username && !jc.username_set && strcmp(c->jwt_username_claim, "none") != 0) {
        snprintf(err, errlen, "MGATE_JWT_USERNAME: \"match\" cannot work with MGATE_JWT_TOKEN_FROM=username (the "
                              "username is the token): set MGATE_JWT_USERNAME=set to make the claim the username");
        return -1;
    }
    const char *url = c->jwt_jwks_url;
    if (*url && strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
        snprintf(err, errlen, "MGATE_JWT_JWKS_URL: \"%s\" is not an http:// or https:// URL", url);
        return -1;
    }
    if (*c->jwt_jwks_ca_file && strncmp(url, "https://", 8)) {
        snprintf(err, errlen, "MGATE_JWT_JWKS_CA_FILE is set, but MGATE_JWT_JWKS_URL is not an https:// URL");
        return -1;
    }
    return 0;
}

static void jc_free(void)
{
    free(jc.issuer);
    free(jc.audience);
    free(jc.username_claim);
    free(jc.client_id_claim);
    free(jc.acl_claim);
    memset(&jc, 0, sizeof(jc));
}

static int jc_copy(const struct mgate_config *c)
{
    jc.issuer = strdup(c->jwt_issuer);
    jc.audience = strdup(c->jwt_audience);
    /* "none" turns a check off: an empty value is the default, as for every variable */
    jc.username_claim = strdup(strcmp(c->jwt_username_claim, "none") ? c->jwt_username_claim : "");
    jc.client_id_claim = strdup(c->jwt_client_id_claim);
    jc.acl_claim = strdup(strcmp(c->jwt_acl_claim, "none") ? c->jwt_acl_claim : "");
    jc.forward_token = c->jwt_forward_token;
    jc.leeway_s = c->jwt_leeway_ms / 1000u;
    jc.wait_ms = c->jwt_jwks_timeout_ms;
    jc.require_exp = c->jwt_require_exp;
    jc.expire_sessions = c->jwt_expire_sessions;
    return jc.issuer && jc.audience && jc.username_claim && jc.client_id_claim && jc.acl_claim ? 0 : -1;
}

static bool has_keys(const struct mgate_config *c)
{
    return *c->jwt_jwks_url || *c->jwt_jwks_file || *c->jwt_public_key_file || *c->jwt_secret_file;
}

int jwt_start(const struct mgate_config *c, char *err, size_t errlen)
{
    jc_free();
    if (!has_keys(c)) {
        snprintf(err, errlen, "MGATE_HANDLER: \"jwt\" needs MGATE_JWT_JWKS_URL, MGATE_JWT_JWKS_FILE, "
                              "MGATE_JWT_PUBLIC_KEY_FILE or MGATE_JWT_SECRET_FILE");
        return -1;
    }
    if (check_settings(c, err, errlen) < 0)
        return -1;
    if (jc_copy(c) < 0) {
        jc_free();
        snprintf(err, errlen, "jwt: out of memory");
        return -1;
    }
    struct jwks_config kc = {.url = c->jwt_jwks_url, .ca_file = c->jwt_jwks_ca_file, .jwks_file = c->jwt_jwks_file,
                             .pem_file = c->jwt_public_key_file, .secret_file = c->jwt_secret_file,
                             .refresh_ms = c->jwt_jwks_refresh_ms, .min_interval_ms = c->jwt_jwks_min_interval_ms,
                             .timeout_ms = c->jwt_jwks_timeout_ms};
    if (jwks_start(&kc, err, errlen) < 0) {
        jc_free();
        return -1;
    }
    jc.started = true;
    log_msgf(LOGL_INFO, "jwt: %u keys from files%s%s%s; token from the %s; username claim \"%s\" (%s)",
             jwks_key_count(), *kc.url ? ", JWKS URL " : "", kc.url, *kc.url ? " (fetched on the workers)" : "",
             jc.token_from_username ? "username" : "password", jc.username_claim, jc.username_set ? "set" : "match");
    return 0;
}

void jwt_reload(void)
{
    if (jc.started)
        jwks_reload();
}

void jwt_stop(void)
{
    if (!jc.started)
        return;
    jwks_stop();
    jc_free();
}

int jwt_keys_gauge(void) { return jc.started ? (int)jwks_key_count() : -1; }

/* The settings only the jwt handler reads: refused when it is not in the
 * chain (a key source nothing checks tokens with would be a silent hole). */
const char *jwt_setting_in_use(const struct mgate_config *c)
{
    return *c->jwt_jwks_url ? "MGATE_JWT_JWKS_URL" : *c->jwt_jwks_file ? "MGATE_JWT_JWKS_FILE"
         : *c->jwt_public_key_file ? "MGATE_JWT_PUBLIC_KEY_FILE" : *c->jwt_secret_file ? "MGATE_JWT_SECRET_FILE"
         : *c->jwt_issuer ? "MGATE_JWT_ISSUER" : *c->jwt_audience ? "MGATE_JWT_AUDIENCE"
         : *c->jwt_algorithms ? "MGATE_JWT_ALGORITHMS" : NULL;
}
