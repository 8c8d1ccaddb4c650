/*
 * The `acl` handler: mosquitto's password_file and acl_file, enforced by
 * mgate in front of a broker that lets everyone in.
 *
 *   CONNECT    no username (or an empty one): MGATE_ACL_ALLOW_ANONYMOUS
 *              decides (refused: CONNACK 5 / 0x87);
 *              username from the certificate (USE_CN_AS_USERNAME): allowed,
 *              the handshake proved it;
 *              otherwise, with a password file: the user must be in it and
 *              the password must match (refused: CONNACK 4 / 0x86); an
 *              entry costlier than ACL_INLINE_MAX_ITERATIONS is checked on
 *              acl_pool.c's threads while the verdict is pending, in
 *              fair turns per source address (acl_fq.c; the address that
 *              waits for the most when the queue is full: CONNACK 3 /
 *              0x89, server busy); a username and password that passed
 *              such a check lately are let in from acl_cache.c;
 *              without one: passed on (MGATE_IGNORE), so a later handler
 *              may authenticate; if none does, the name is believed, as
 *              mosquitto believes it without a password_file.
 *   PUBLISH    write access to its topic, else refused.
 *   SUBSCRIBE  read access to each filter (a rule must cover all the filter
 *              can match), else that filter is refused.
 *   delivery   read access to the topic of every broker PUBLISH, else it is
 *              not delivered (a rule may grant a filter only in part, and a
 *              deny may carve a topic out of a granted filter).
 *   Without an acl file, publish and subscribe are passed on (allowed when
 *   no later handler objects), as mosquitto allows everything without one.
 *
 * The rules live in one immutable database.  SIGHUP loads both files into a
 * new one and swaps it in only when both load; every worker moves to the
 * new one at its next check and the old one is freed when the last worker
 * has left it.  A check costs one atomic load when nothing changed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "core/log.h"
#include "core/loop.h"
#include "handlers/acl.h"
#include "handlers/handlers.h"
#include "handlers/swap.h"
#include "session/session.h"

static void db_free(void *db) { acl_db_free(db); }

/* The database; workers' thread caches (swap.h). */
static struct swap dbs = SWAP_INIT(db_free);
static _Thread_local struct swap_local mine;

static struct {
    char *password_file, *acl_file;
    bool allow_anonymous;
} acl;

/* The database this thread checks against: the newest, one atomic load when
 * it has not changed since the thread's last check. */
static const struct acl_db *db_get(void) { return swap_get(&dbs, &mine); }

/* ---- the cache of successful costly checks (acl_cache.h) ------------- */

static struct {
    pthread_mutex_t lock;
    struct acl_cache c;
    uint8_t secret[ACL_CACHE_SECRET]; /* per process, from acl_start */
    bool ready;
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static bool cache_hit(const struct acl_cache_key *k, uint64_t generation, uint64_t now_ms)
{
    pthread_mutex_lock(&cache.lock);
    bool hit = cache.ready && acl_cache_hit(&cache.c, k, generation, now_ms);
    pthread_mutex_unlock(&cache.lock);
    return hit;
}

static void cache_put(const struct acl_cache_key *k, uint64_t generation, uint64_t now_ms)
{
    pthread_mutex_lock(&cache.lock);
    if (cache.ready)
        acl_cache_put(&cache.c, k, generation, now_ms);
    pthread_mutex_unlock(&cache.lock);
}

static int cache_start(void)
{
    pthread_mutex_lock(&cache.lock);
    acl_cache_clear(&cache.c);
    cache.ready = RAND_bytes(cache.secret, sizeof(cache.secret)) == 1;
    pthread_mutex_unlock(&cache.lock);
    return cache.ready ? 0 : -1;
}

static void cache_clear(bool forget_secret)
{
    pthread_mutex_lock(&cache.lock);
    acl_cache_clear(&cache.c);
    if (forget_secret) {
        OPENSSL_cleanse(cache.secret, sizeof(cache.secret));
        cache.ready = false;
    }
    pthread_mutex_unlock(&cache.lock);
}

/* ---- the handler ------------------------------------------------------- */

/* Within the session's share of the log (session_log): a flood of refused
 * CONNECTs writes a bounded number of lines, the rest are counted. */
static enum mgate_verdict refuse_connect(mgate_session *s, struct mgate_connect_req *req, uint8_t reason,
                                         const char *why)
{
    session_log(s, LOGL_INFO, "acl: CONNECT refused: %s", why);
    req->reason = reason;
    return MGATE_DENY;
}

enum check { CHECK_PASSWORD, CHECK_UNKNOWN, CHECK_NO_PASSWORD };

static enum mgate_verdict verdict(mgate_session *s, struct mgate_connect_req *req, enum check check, bool ok)
{
    if (check == CHECK_UNKNOWN)
        return refuse_connect(s, req, MGATE_REASON_BAD_USER_OR_PASSWORD, "unknown user");
    if (check == CHECK_NO_PASSWORD)
        return refuse_connect(s, req, MGATE_REASON_BAD_USER_OR_PASSWORD, "no password");
    if (!ok)
        return refuse_connect(s, req, MGATE_REASON_BAD_USER_OR_PASSWORD, "wrong password");
    return MGATE_ALLOW;
}

static enum mgate_verdict busy(mgate_session *s, struct mgate_connect_req *req)
{
    return refuse_connect(s, req, MGATE_REASON_SERVER_BUSY, "too many password checks waiting from this address");
}

/* A costly hash checked on the pool: back on the session's loop. */
static void verified(const struct acl_check *c, enum acl_check_result r)
{
    mgate_session *s = c->s;
    struct mgate_connect_req *req = c->req;
    if (r == ACL_CHECK_BUSY) {
        mgate_resume(s, req, busy(s, req));
        return;
    }
    bool ok = r == ACL_CHECK_OK;
    if (ok && c->cacheable) /* only successes, never a refusal */
        cache_put(&c->key, c->generation, loop_now(session_loop(s)));
    mgate_resume(s, req, verdict(s, req, (enum check)c->tag, ok));
}

static bool costly(const struct acl_password *pw)
{
    return pw->kind == ACL_HASH_PBKDF2_SHA512 && pw->iterations > ACL_INLINE_MAX_ITERATIONS;
}

/* A costly check: answered from the cache when this very username and
 * password passed lately, else queued on the pool (its source's turn). */
static enum mgate_verdict check_costly(mgate_session *s, struct mgate_connect_req *req, enum check check,
                                       const struct acl_password *pw, uint32_t len)
{
    struct acl_check c = {.s = s, .req = req, .tag = (int)check, .done = verified, .pw = pw,
                          .password = req->password.p, .len = len, .simulate = check == CHECK_UNKNOWN,
                          .source = acl_fq_addr_of(mgate_session_peer(s)), .generation = mine.generation};
    /* Looked up for every costly check, known user or not: the same work. */
    bool keyed = acl_cache_key_of(cache.secret, req->username.p, req->username.len, req->password.p, len, &c.key);
    bool hit = keyed && cache_hit(&c.key, c.generation, loop_now(session_loop(s)));
    c.cacheable = keyed && check == CHECK_PASSWORD; /* never an all-zero key that OpenSSL failed to make */
    int queued = hit && check == CHECK_PASSWORD ? 1 : acl_pool_verify(session_loop(s), &c); /* the job has a copy */
    OPENSSL_cleanse(&c.key, sizeof(c.key));
    return queued > 0 ? MGATE_ALLOW : queued == 0 ? MGATE_PENDING : busy(s, req);
}

static enum mgate_verdict auth_connect(mgate_session *s, struct mgate_connect_req *req)
{
    const struct acl_db *db = db_get();
    mgate_bytes user = req->has_username ? req->username : (mgate_bytes){NULL, 0};
    if (!user.len) {
        if (acl.allow_anonymous)
            return MGATE_ALLOW;
        return refuse_connect(s, req, MGATE_REASON_NOT_AUTHORIZED,
                              "no username, and MGATE_ACL_ALLOW_ANONYMOUS is off");
    }
    if (session_username_from_cert(s))
        return MGATE_ALLOW; /* the CN of a verified certificate */
    if (!db->have_passwords)
        return MGATE_IGNORE;
    const struct acl_user *u = acl_db_user(db, user.p, user.len);
    bool known = u && u->pw.kind;
    /* An unknown user costs the time a known one does: timing tells no
     * names (on the pool, that time is slept rather than computed). */
    const struct acl_password *pw = known ? &u->pw : &db->dummy;
    enum check check = !known ? CHECK_UNKNOWN : !req->has_password ? CHECK_NO_PASSWORD : CHECK_PASSWORD;
    uint32_t len = req->has_password ? req->password.len : 0;
    if (costly(pw))
        return check_costly(s, req, check, pw, len);
    return verdict(s, req, check, acl_password_verify(pw, req->password.p, len));
}

static struct acl_who who_of(const mgate_session *s)
{
    mgate_bytes u = mgate_session_username(s), c = mgate_session_client_id(s);
    return (struct acl_who){u.p, u.len, c.p, c.len};
}

static enum mgate_verdict auth_publish(mgate_session *s, struct mgate_publish_req *req)
{
    const struct acl_db *db = db_get();
    if (!db->have_acl)
        return MGATE_IGNORE;
    struct acl_who who = who_of(s);
    return acl_allowed(db, &who, ACL_WRITE, req->topic.p, req->topic.len) ? MGATE_ALLOW : MGATE_DENY;
}

static enum mgate_verdict auth_subscribe(mgate_session *s, struct mgate_subscribe_req *req)
{
    const struct acl_db *db = db_get();
    if (!db->have_acl)
        return MGATE_IGNORE;
    struct acl_who who = who_of(s);
    if (req->dir == MGATE_DOWN) {
        const struct mgate_filter *f = &req->filters[0];
        if (acl_allowed(db, &who, ACL_READ, f->filter.p, f->filter.len))
            return MGATE_ALLOW;
        session_log(s, LOGL_DEBUG, "acl: delivery on %.*s refused", (int)f->filter.len, (const char *)f->filter.p);
        return MGATE_DENY;
    }
    for (uint32_t i = 0; i < req->count; i++) {
        struct mgate_filter *f = &req->filters[i];
        if (!f->denied && !acl_allowed(db, &who, ACL_READ, f->filter.p, f->filter.len))
            f->denied = true;
    }
    return MGATE_ALLOW;
}

const struct mgate_handler mgate_acl_handler = {
    .name = "acl",
    .auth_connect = auth_connect,
    .auth_publish = auth_publish,
    .auth_subscribe = auth_subscribe,
};

/* ---- start, SIGHUP, stop ---------------------------------------------- */

/* Both files into a new database; -1 with "MGATE_X: file:line: why". */
static int load(struct acl_db **out, char *err, size_t errlen)
{
    char why[512];
    int rc = acl_db_load(acl.password_file, acl.acl_file, out, why, sizeof(why));
    if (rc < 0)
        snprintf(err, errlen, "%s: %s", rc == -1 ? "MGATE_ACL_PASSWORD_FILE" : "MGATE_ACL_FILE", why);
    return rc < 0 ? -1 : 0;
}

static void describe(const struct acl_db *db, const char *what)
{
    uint32_t with_pw = 0, blocks = 0, rules = db->anonymous.n + db->patterns.n;
    for (uint32_t i = 0; i < db->nusers; i++) {
        with_pw += db->users[i].pw.kind != 0;
        blocks += db->users[i].rules.n != 0;
        rules += db->users[i].rules.n;
    }
    log_msgf(LOGL_INFO,
             "%s: %u users with passwords (PBKDF2 iterations up to %u), %u user blocks, %u anonymous rules, "
             "%u patterns, %u rules in all; anonymous clients %s",
             what, with_pw, db->max_iterations, blocks, db->anonymous.n, db->patterns.n, rules,
             acl.allow_anonymous ? "allowed" : "refused");
}

int acl_start(const struct mgate_config *cfg, char *err, size_t errlen)
{
    if (!*cfg->acl_password_file && !*cfg->acl_file) {
        snprintf(err, errlen, "MGATE_HANDLER: \"acl\" needs MGATE_ACL_PASSWORD_FILE, MGATE_ACL_FILE or both");
        return -1;
    }
    free(acl.password_file);
    free(acl.acl_file);
    acl.password_file = strdup(cfg->acl_password_file);
    acl.acl_file = strdup(cfg->acl_file);
    acl.allow_anonymous = cfg->acl_allow_anonymous;
    struct acl_db *db;
    if (!acl.password_file || !acl.acl_file) {
        snprintf(err, errlen, "acl: out of memory");
        return -1;
    }
    if (load(&db, err, errlen) < 0)
        return -1;
    if (cache_start() < 0) {
        acl_db_free(db);
        snprintf(err, errlen, "acl: no random key for the cache of password checks (RAND_bytes failed)");
        return -1;
    }
    if (swap_install(&dbs, db) < 0) {
        acl_db_free(db);
        snprintf(err, errlen, "acl: out of memory");
        return -1;
    }
    describe(db, "acl");
    if (!db->have_passwords)
        log_msgf(LOGL_WARN, "acl: MGATE_ACL_PASSWORD_FILE is not set: usernames are not checked by acl (a "
                            "certificate's CN with USE_CN_AS_USERNAME is); CONNECT is left to the next handler");
    return 0;
}

void acl_reload(void)
{
    char err[600];
    struct acl_db *db;
    if (load(&db, err, sizeof(err)) < 0) {
        log_msgf(LOGL_ERROR, "SIGHUP: %s; keeping the previous rules", err);
        return;
    }
    if (swap_install(&dbs, db) < 0) { /* a new generation: the cache's entries no longer hit */
        acl_db_free(db);
        log_msgf(LOGL_ERROR, "SIGHUP: acl: out of memory; keeping the previous rules");
        return;
    }
    cache_clear(false);
    describe(db, "SIGHUP: acl reloaded");
}

/* After the workers are gone: their thread caches die with them. */
void acl_stop(void)
{
    acl_pool_stop();
    cache_clear(true);
    swap_clear(&dbs, &mine);
    free(acl.password_file);
    free(acl.acl_file);
    acl.password_file = acl.acl_file = NULL;
}
