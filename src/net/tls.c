#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/async.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "net/tls_int.h"

#define OCSP_CACHE_ENTRIES 4096
#define CRL_CACHE_ENTRIES 64

static void openssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown error");
    ERR_clear_error();
}

static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static int conn_index = -1; /* written once, before any handshake */
static void make_index(void) { conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL); }
int tls_conn_index(void)
{
    pthread_once(&index_once, make_index);
    return conn_index;
}

/* ---- building contexts -------------------------------------------------- */

static int fail_with(char *err, size_t errlen, const char *what, const char *file)
{
    char why[256];
    openssl_reason(why, sizeof(why));
    snprintf(err, errlen, "%s \"%s\": %s", what, file, why);
    return -1;
}

static int load_own_cert(SSL_CTX *ssl, const struct tls_settings *t, char *err, size_t errlen)
{
    if (!t->cert_file || !*t->cert_file)
        return 0;
    if (SSL_CTX_use_certificate_chain_file(ssl, t->cert_file) != 1)
        return fail_with(err, errlen, "CERT_FILE", t->cert_file);
    if (SSL_CTX_use_PrivateKey_file(ssl, t->key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ssl) != 1)
        return fail_with(err, errlen, "KEY_FILE", t->key_file);
    return 0;
}

static int set_protocol(SSL_CTX *ssl, const struct tls_settings *t, char *err, size_t errlen)
{
    if (t->dtls) { /* DTLS 1.2 only: OpenSSL has no DTLS 1.3 */
        if (t->min_version > TLS1_2_VERSION) {
            snprintf(err, errlen, "TLS_MIN_VERSION: DTLS has no version above 1.2");
            return -1;
        }
        SSL_CTX_set_min_proto_version(ssl, DTLS1_2_VERSION);
    } else {
        SSL_CTX_set_min_proto_version(ssl, t->min_version ? (int)t->min_version : TLS1_2_VERSION);
    }
    if (t->ciphers && *t->ciphers && SSL_CTX_set_cipher_list(ssl, t->ciphers) != 1)
        return fail_with(err, errlen, "TLS_CIPHERS", t->ciphers);
    if (t->ciphersuites && *t->ciphersuites && SSL_CTX_set_ciphersuites(ssl, t->ciphersuites) != 1)
        return fail_with(err, errlen, "TLS_CIPHERSUITES", t->ciphersuites);
    if (t->no_tickets) {
        SSL_CTX_set_options(ssl, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ssl, 0);
    }
    /* Writes resume from our output buffer, which may move between tries. */
    SSL_CTX_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    return 0;
}

static int set_client_verify(SSL_CTX *ssl, struct tls_ctx *ctx, const struct tls_settings *t, char *err,
                             size_t errlen)
{
    if (!t->ca_file || !*t->ca_file)
        return 0;
    if (SSL_CTX_load_verify_locations(ssl, t->ca_file, NULL) != 1)
        return fail_with(err, errlen, "CLIENT_CA_FILE", t->ca_file);
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->ca_file);
    if (names)
        SSL_CTX_set_client_CA_list(ssl, names); /* tells clients which certificate to send */
    SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | (t->client_cert_optional ? 0 : SSL_VERIFY_FAIL_IF_NO_PEER_CERT), NULL);
    SSL_CTX_set_cert_verify_callback(ssl, tls_verify_cb, ctx);
    /* Resumed sessions skip certificate checks: they need a context to be
     * resumed at all, and a short life so a revocation is seen soon. */
    SSL_CTX_set_session_id_context(ssl, (const unsigned char *)ctx->name, (unsigned)strlen(ctx->name));
    SSL_CTX_set_timeout(ssl, 300);
    if (t->methods) {
        /* A TLS 1.3 resumption issues a fresh ticket each time, so a lifetime
         * does not bound how long one revocation check lasts: no resumption. */
        SSL_CTX_set_options(ssl, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ssl, 0);
        SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_OFF);
    }
    return 0;
}

static SSL_CTX *server_ssl_ctx(struct tls_ctx *ctx, const struct tls_settings *t, char *err, size_t errlen)
{
    SSL_CTX *ssl = SSL_CTX_new(t->dtls ? DTLS_server_method() : TLS_server_method());
    if (!ssl) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    if (set_protocol(ssl, t, err, errlen) < 0 || load_own_cert(ssl, t, err, errlen) < 0 ||
        set_client_verify(ssl, ctx, t, err, errlen) < 0 || (t->dtls && dtls_ctx_setup(ssl, t, err, errlen) < 0)) {
        SSL_CTX_free(ssl);
        return NULL;
    }
    return ssl;
}

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

static int copy_settings(struct tls_settings *dst, const struct tls_settings *src)
{
    *dst = *src;
    const char **fields[] = {&dst->name, &dst->cert_file, &dst->key_file, &dst->ca_file, &dst->ciphers,
                             &dst->ciphersuites, &dst->ocsp_url, &dst->crl_url, &dst->crl_url_issuer_file,
                             &dst->offline_crl_file, &dst->offline_crl_issuer_file, &dst->psk_file};
    int rc = 0;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (!(*fields[i] = dup_or_empty(*fields[i])))
            rc = -1;
    return rc;
}

static void free_settings(struct tls_settings *t)
{
    const char *fields[] = {t->name, t->cert_file, t->key_file, t->ca_file, t->ciphers, t->ciphersuites,
                            t->ocsp_url, t->crl_url, t->crl_url_issuer_file, t->offline_crl_file,
                            t->offline_crl_issuer_file, t->psk_file};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        free((char *)fields[i]);
}

/* The offline CRL (and its issuer, when given, checked now). */
static int load_offline_crl(const struct tls_settings *t, X509_CRL **out, bool *checked, char *err, size_t errlen)
{
    char why[256];
    *out = NULL;
    *checked = false;
    if (!*t->offline_crl_file)
        return 0;
    X509_CRL *crl = crl_load(t->offline_crl_file, why, sizeof(why));
    if (!crl) {
        snprintf(err, errlen, "OFFLINE_CRL_FILE %s", why);
        return -1;
    }
    if (*t->offline_crl_issuer_file) {
        X509 *issuer = cert_load(t->offline_crl_issuer_file, why, sizeof(why));
        int bad = !issuer || crl_check_issuer(crl, issuer, why, sizeof(why)) < 0;
        X509_free(issuer);
        if (bad) {
            X509_CRL_free(crl);
            snprintf(err, errlen, "OFFLINE_CRL_ISSUER_CERT_FILE \"%s\": %s", t->offline_crl_issuer_file, why);
            return -1;
        }
        *checked = true;
    } else {
        /* most offline CRLs are the root's: check once here rather than per handshake */
        *checked = *t->ca_file && crl_signed_by_one_of(crl, t->ca_file);
    }
    if (crl_expired(crl, time(NULL)))
        log_msgf(LOGL_WARN, "%s: OFFLINE_CRL_FILE \"%s\" has expired: certificates it covers are refused",
                 t->name, t->offline_crl_file);
    *out = crl;
    return 0;
}

static int policy_init(struct tls_policy *p, const struct tls_settings *t, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    p->methods = t->methods;
    p->ocsp_depth = t->ocsp_depth;
    p->crl_depth = t->crl_depth;
    p->ocsp_url = (char *)t->ocsp_url;
    p->crl_url = (char *)t->crl_url;
    p->soft_fail = t->soft_fail;
    p->timeout_ms = t->timeout_ms ? t->timeout_ms : 5000;
    if (pthread_mutex_init(&p->offline_lock, NULL) || rev_cache_init(&p->ocsp, OCSP_CACHE_ENTRIES) < 0 ||
        rev_cache_init(&p->crl, CRL_CACHE_ENTRIES) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char why[256];
    if (*t->crl_url_issuer_file && !(p->crl_url_issuer = cert_load(t->crl_url_issuer_file, why, sizeof(why)))) {
        snprintf(err, errlen, "CRL_DISTRIBUTION_POINTS_ISSUER_CERT_FILE %s", why);
        return -1;
    }
    return load_offline_crl(t, &p->offline_crl, &p->offline_checked, err, errlen);
}

static void policy_free(struct tls_policy *p)
{
    X509_free(p->crl_url_issuer);
    X509_CRL_free(p->offline_crl);
    rev_cache_free(&p->ocsp);
    rev_cache_free(&p->crl);
    pthread_mutex_destroy(&p->offline_lock);
}

static struct tls_ctx *ctx_alloc(const struct tls_settings *t, bool client)
{
    struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->client = client;
    snprintf(ctx->name, sizeof(ctx->name), "%s", t->name ? t->name : "");
    if (pthread_mutex_init(&ctx->lock, NULL) || copy_settings(&ctx->set, t) < 0) {
        free_settings(&ctx->set);
        free(ctx);
        return NULL;
    }
    return ctx;
}

struct tls_ctx *tls_ctx_new(const struct tls_settings *t, char *err, size_t errlen)
{
    tls_conn_index();
    if (t->methods && !ASYNC_is_capable()) {
        snprintf(err, errlen, "CERT_VERIFICATION_METHODS: revocation checks need OpenSSL's ASYNC jobs, "
                              "which this platform's OpenSSL lacks");
        return NULL;
    }
    struct tls_ctx *ctx = ctx_alloc(t, false);
    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (policy_init(&ctx->pol, &ctx->set, err, errlen) < 0 || !(ctx->ssl = server_ssl_ctx(ctx, &ctx->set, err, errlen))) {
        tls_ctx_free(ctx);
        return NULL;
    }
    ctx->store = SSL_CTX_get_cert_store(ctx->ssl);
    X509_STORE_up_ref(ctx->store);
    return ctx;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl);
    X509_STORE_free(ctx->store);
    if (!ctx->client)
        policy_free(&ctx->pol);
    free_settings(&ctx->set);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

/* ---- the client side (mgate -> broker) ---------------------------------- */

static int client_verify(SSL_CTX *ssl, const struct tls_settings *t, char *err, size_t errlen)
{
    if (!t->verify_peer) {
        SSL_CTX_set_verify(ssl, SSL_VERIFY_NONE, NULL);
        return 0;
    }
    int ok = *t->ca_file ? SSL_CTX_load_verify_locations(ssl, t->ca_file, NULL) : SSL_CTX_set_default_verify_paths(ssl);
    if (ok != 1)
        return fail_with(err, errlen, "TARGET_CA_FILE", *t->ca_file ? t->ca_file : "(system default)");
    SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    return 0;
}

struct tls_ctx *tls_client_ctx_new(const struct tls_settings *t, char *err, size_t errlen)
{
    tls_conn_index();
    struct tls_ctx *ctx = ctx_alloc(t, true);
    SSL_CTX *ssl = SSL_CTX_new(TLS_client_method());
    if (!ctx || !ssl) {
        snprintf(err, errlen, "cannot create a TLS context");
        goto fail;
    }
    if (set_protocol(ssl, &ctx->set, err, errlen) < 0 || client_verify(ssl, &ctx->set, err, errlen) < 0)
        goto fail;
    if (*ctx->set.cert_file && load_own_cert(ssl, &ctx->set, err, errlen) < 0) {
        /* name the broker-side keys, not the listener's */
        char why[384];
        snprintf(why, sizeof(why), "TARGET_%s", err);
        snprintf(err, errlen, "%s", why);
        goto fail;
    }
    ctx->ssl = ssl;
    return ctx;
fail:
    SSL_CTX_free(ssl);
    tls_ctx_free(ctx);
    return NULL;
}

/* ---- reload ------------------------------------------------------------- */

int tls_ctx_reload(struct tls_ctx *ctx, char *err, size_t errlen)
{
    if (ctx->client)
        return 0;
    SSL_CTX *ssl = server_ssl_ctx(ctx, &ctx->set, err, errlen);
    if (!ssl)
        return -1;
    X509_CRL *crl;
    bool checked;
    if (load_offline_crl(&ctx->set, &crl, &checked, err, errlen) < 0) {
        SSL_CTX_free(ssl);
        return -1;
    }
    X509_STORE *store = SSL_CTX_get_cert_store(ssl);
    X509_STORE_up_ref(store);
    pthread_mutex_lock(&ctx->lock);
    SSL_CTX *old = ctx->ssl;
    X509_STORE *old_store = ctx->store;
    ctx->ssl = ssl;
    ctx->store = store;
    pthread_mutex_unlock(&ctx->lock);
    /* a fetch in flight may still check a signature against the old store */
    pthread_mutex_lock(&ctx->pol.offline_lock);
    X509_CRL *old_crl = ctx->pol.offline_crl;
    ctx->pol.offline_crl = crl;
    ctx->pol.offline_checked = checked;
    pthread_mutex_unlock(&ctx->pol.offline_lock);
    SSL_CTX_free(old); /* connections hold their own references */
    X509_STORE_free(old_store);
    X509_CRL_free(old_crl);
    return 0;
}

/* ---- the transport ------------------------------------------------------ */

static SSL *ssl_of(const struct conn *c) { return ((struct tls_conn *)c->transport)->ssl; }

static void peer_address(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        sockaddr_format((struct sockaddr *)&ss, buf, len);
    else
        snprintf(buf, len, "?");
}

/* OpenSSL 3 reports a peer that ends its TCP connection without a
 * close_notify as an error; most MQTT clients do just that after DISCONNECT.
 * MQTT frames its own packets (a cut one is never taken for a whole one), so
 * this is an end of stream, as on a plain socket, not a TLS failure. */
static bool unexpected_eof(void)
{
    unsigned long e = ERR_peek_last_error();
    return ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

/* Any other TLS error past the handshake (a bad record, an alert from the
 * peer, memory OpenSSL could not get) ends the connection: say which, since
 * the session's closing line points here ("TLS failure (logged above)"). */
static int io_failure(struct conn *c)
{
    struct tls_conn *t = c->transport;
    char why[256], peer[64];
    openssl_reason(why, sizeof(why));
    peer_address(c->io.fd, peer, sizeof(peer));
    struct logline l;
    if (log_begin(&l, t->ctx->client ? LOGL_WARN : LOGL_INFO, "TLS error")) {
        log_str(&l, "listener", t->ctx->name);
        if (t->ctx->client)
            log_str(&l, "side", "broker");
        log_str(&l, "peer", peer);
        log_str(&l, "error", why);
        log_end(&l);
    }
    return EPROTO;
}

/* Map an OpenSSL result onto recv/send conventions. */
static ssize_t io_result(struct conn *c, int n)
{
    switch (SSL_get_error(ssl_of(c), n)) {
    case SSL_ERROR_WANT_WRITE:
        c->want_write = true;
        /* fall through */
    case SSL_ERROR_WANT_READ:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (!errno)
            errno = ECONNRESET;
        return -1;
    default:
        if (unexpected_eof()) { /* only a read meets it: the peer's end of stream */
            ERR_clear_error();
            return 0;
        }
        errno = io_failure(c);
        return -1;
    }
}

static ssize_t tls_read(struct conn *c, void *buf, size_t len)
{
    errno = 0; /* SSL_ERROR_SYSCALL reads it: a stale EAGAIN would hide a dead socket */
    int n = SSL_read(ssl_of(c), buf, len > INT32_MAX ? INT32_MAX : (int)len);
    return n > 0 ? n : io_result(c, n);
}

static ssize_t tls_writev(struct conn *c, const struct iovec *iov, int cnt)
{
    (void)cnt; /* the connection writes one buffer at a time */
    size_t len = iov[0].iov_len > INT32_MAX ? INT32_MAX : iov[0].iov_len;
    errno = 0;
    int n = SSL_write(ssl_of(c), iov[0].iov_base, (int)len);
    return n > 0 ? n : io_result(c, n);
}

static void tls_close(struct conn *c)
{
    struct tls_conn *t = c->transport;
    if (t) {
        if (t->paused) { /* let the paused verify callback return, so its job ends */
            t->cancelled = true;
            tls_check_end(t);
            (void)SSL_do_handshake(t->ssl);
        } else {
            tls_check_end(t);
        }
        if (SSL_is_init_finished(t->ssl))
            SSL_shutdown(t->ssl); /* one close_notify, no waiting for the answer */
        SSL_free(t->ssl);
        free(t);
        c->transport = NULL;
    }
    ERR_clear_error();
    close(c->io.fd);
}

/* For mgate_tls_handshake_failures_total{reason}. */
static enum metric_tls_fail failure_kind(const struct tls_conn *t, long verify, unsigned long err)
{
    if (t->chk && strstr(t->chk->why, "revocation status unavailable"))
        return METRIC_TLS_REVOCATION_UNAVAILABLE;
    if ((t->chk && strstr(t->chk->why, "revoked")) || verify == X509_V_ERR_CERT_REVOKED)
        return METRIC_TLS_REVOKED;
    switch (verify) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        return METRIC_TLS_UNKNOWN_CA;
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return METRIC_TLS_EXPIRED;
    default:
        break;
    }
    return ERR_GET_REASON(err) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ? METRIC_TLS_NO_CERT : METRIC_TLS_OTHER;
}

static void log_handshake_failure(struct conn *c)
{
    struct tls_conn *t = c->transport;
    char why[256], peer[64];
    long verify = SSL_get_verify_result(t->ssl);
    if (!t->ctx->client)
        METRIC_INC(loop_metrics(c->loop)->tls_failures[failure_kind(t, verify, ERR_peek_error())]);
    if (t->chk && *t->chk->why)
        snprintf(why, sizeof(why), "%s", t->chk->why);
    else if (verify != X509_V_OK)
        snprintf(why, sizeof(why), "certificate: %s", X509_verify_cert_error_string(verify));
    else
        openssl_reason(why, sizeof(why));
    ERR_clear_error();
    peer_address(c->io.fd, peer, sizeof(peer));
    /* a device with a bad certificate is routine; a broker we cannot verify is not */
    struct logline l;
    if (log_begin(&l, t->ctx->client ? LOGL_WARN : LOGL_INFO, "TLS handshake failed")) {
        log_str(&l, "listener", t->ctx->name);
        if (t->ctx->client)
            log_str(&l, "side", "broker");
        log_str(&l, "peer", peer);
        log_str(&l, "error", why);
        if (t->chk && *t->chk->cn)
            log_str(&l, "cn", t->chk->cn);
        if (t->chk && *t->chk->serial)
            log_str(&l, "serial", t->chk->serial);
        log_end(&l);
    }
}

static int tls_handshake(struct conn *c)
{
    struct tls_conn *t = c->transport;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        if (!t->ctx->client)
            METRIC_INC(loop_metrics(c->loop)->tls_handshakes);
        tls_check_end(t);
        SSL_clear_mode(t->ssl, SSL_MODE_ASYNC); /* jobs only while a check may wait */
        return 1;
    }
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_WRITE:
        c->want_write = true;
        return 0;
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_ASYNC: /* the verify callback waits for an answer (conn_handshake_wait) */
        return 0;
    default:
        log_handshake_failure(c);
        errno = EPROTO;
        return -1;
    }
}

static const struct conn_ops tls_ops = {tls_read, tls_writev, tls_close, tls_handshake, NULL, true};

SSL *tls_ssl_new(struct tls_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    SSL *ssl = SSL_new(ctx->ssl); /* takes its own reference to the current context */
    pthread_mutex_unlock(&ctx->lock);
    return ssl;
}

struct tls_conn *tls_conn_wrap(struct conn *c, struct tls_ctx *ctx, SSL *ssl)
{
    struct tls_conn *t = calloc(1, sizeof(*t));
    if (!t || !SSL_set_ex_data(ssl, tls_conn_index(), t)) {
        free(t);
        return NULL;
    }
    t->ssl = ssl;
    t->c = c;
    t->ctx = ctx;
    return t;
}

static struct tls_conn *tls_conn_new(struct conn *c, struct tls_ctx *ctx)
{
    SSL *ssl = tls_ssl_new(ctx);
    struct tls_conn *t = ssl && SSL_set_fd(ssl, c->io.fd) == 1 ? tls_conn_wrap(c, ctx, ssl) : NULL;
    if (!t)
        SSL_free(ssl);
    return t;
}

void tls_start_accept(struct conn *c, struct tls_conn *t)
{
    if (t->ctx->pol.methods)
        SSL_set_mode(t->ssl, SSL_MODE_ASYNC);
    conn_start_handshake(c, &tls_ops, t);
}

int tls_accept(struct conn *c, struct tls_ctx *ctx)
{
    struct tls_conn *t = tls_conn_new(c, ctx);
    if (!t)
        return -1;
    SSL_set_accept_state(t->ssl);
    tls_start_accept(c, t);
    return 0;
}

int tls_connect(struct conn *c, struct tls_ctx *ctx, const char *server_name)
{
    struct tls_conn *t = tls_conn_new(c, ctx);
    if (!t)
        return -1;
    if (server_name && *server_name) {
        unsigned char ip[16];
        bool literal = inet_pton(AF_INET, server_name, ip) == 1 || inet_pton(AF_INET6, server_name, ip) == 1;
        if (!literal) /* SNI carries host names only (RFC 6066); an address is still verified below */
            SSL_set_tlsext_host_name(t->ssl, server_name);
        if (ctx->set.verify_peer && SSL_set1_host(t->ssl, server_name) != 1) {
            SSL_free(t->ssl);
            free(t);
            return -1;
        }
    }
    SSL_set_connect_state(t->ssl);
    conn_start_handshake(c, &tls_ops, t);
    return 0;
}

/* ---- the peer's certificate --------------------------------------------- */

bool tls_is_tls(const struct conn *c) { return c->ops == &tls_ops && c->transport; }

const char *tls_version(const struct conn *c)
{
    return tls_is_tls(c) ? SSL_get_version(((struct tls_conn *)c->transport)->ssl) : NULL;
}

static void append_san(char *buf, size_t len, const char *kind, const char *val)
{
    size_t used = strlen(buf);
    if (used + strlen(kind) + strlen(val) + 3 < len)
        snprintf(buf + used, len - used, "%s%s:%s", used ? "," : "", kind, val);
}

static void ip_text(const ASN1_OCTET_STRING *ip, char *buf, size_t len)
{
    const unsigned char *p = ASN1_STRING_get0_data(ip);
    int n = ASN1_STRING_length(ip);
    if (n == 4)
        snprintf(buf, len, "%u.%u.%u.%u", p[0], p[1], p[2], p[3]);
    else if (n == 16)
        inet_ntop(AF_INET6, p, buf, (socklen_t)len);
    else
        snprintf(buf, len, "?");
}

static void sans_of(X509 *cert, char *buf, size_t len)
{
    buf[0] = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        char ip[64];
        switch (g->type) {
        case GEN_DNS: append_san(buf, len, "DNS", (const char *)ASN1_STRING_get0_data(g->d.dNSName)); break;
        case GEN_EMAIL: append_san(buf, len, "email", (const char *)ASN1_STRING_get0_data(g->d.rfc822Name)); break;
        case GEN_URI: append_san(buf, len, "URI", (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier)); break;
        case GEN_IPADD: ip_text(g->d.iPAddress, ip, sizeof(ip)); append_san(buf, len, "IP", ip); break;
        default: break;
        }
    }
    GENERAL_NAMES_free(names);
}

bool tls_peer_info(const struct conn *c, struct tls_peer *out)
{
    memset(out, 0, sizeof(*out));
    if (!tls_is_tls(c))
        return false;
    X509 *cert = SSL_get0_peer_certificate(ssl_of(c));
    if (!cert)
        return false;
    cert_cn(cert, out->cn, sizeof(out->cn));
    cert_serial(cert, out->serial, sizeof(out->serial));
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (X509_digest(cert, EVP_sha256(), md, &n))
        for (unsigned i = 0; i < n && 2 * i + 2 < sizeof(out->fingerprint); i++)
            snprintf(out->fingerprint + 2 * i, 3, "%02x", md[i]);
    sans_of(cert, out->sans, sizeof(out->sans));
    return true;
}

void tls_peer_cn(const struct conn *c, char *buf, size_t len)
{
    buf[0] = 0;
    X509 *cert = tls_is_tls(c) ? SSL_get0_peer_certificate(ssl_of(c)) : NULL;
    if (cert)
        cert_cn(cert, buf, len);
}
