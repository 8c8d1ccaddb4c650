#include "net/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

struct tls_ctx {
    SSL_CTX *ssl;
    char name[64];
};

static void openssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown error");
    ERR_clear_error();
}

struct tls_ctx *tls_ctx_new(const struct tls_settings *t, char *err, size_t errlen)
{
    char why[256];
    struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
    SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
    if (!ctx || !ssl) {
        snprintf(err, errlen, "cannot create a TLS context");
        goto fail;
    }
    snprintf(ctx->name, sizeof(ctx->name), "%s", t->name);
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    /* Writes resume from our output buffer, which may move between tries. */
    SSL_CTX_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ssl, t->cert_file) != 1) {
        openssl_reason(why, sizeof(why));
        snprintf(err, errlen, "CERT_FILE \"%s\": %s", t->cert_file, why);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ssl, t->key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ssl) != 1) {
        openssl_reason(why, sizeof(why));
        snprintf(err, errlen, "KEY_FILE \"%s\": %s", t->key_file, why);
        goto fail;
    }
    if (t->client_ca_file && *t->client_ca_file) {
        if (SSL_CTX_load_verify_locations(ssl, t->client_ca_file, NULL) != 1) {
            openssl_reason(why, sizeof(why));
            snprintf(err, errlen, "CLIENT_CA_FILE \"%s\": %s", t->client_ca_file, why);
            goto fail;
        }
        SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    ctx->ssl = ssl;
    return ctx;
fail:
    SSL_CTX_free(ssl);
    free(ctx);
    return NULL;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

/* ---- the transport ---------------------------------------------------- */

/* Map an OpenSSL result onto recv/send conventions. */
static ssize_t io_result(struct conn *c, int n)
{
    SSL *ssl = c->transport;
    switch (SSL_get_error(ssl, n)) {
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
        ERR_clear_error();
        errno = EPROTO;
        return -1;
    }
}

static ssize_t tls_read(struct conn *c, void *buf, size_t len)
{
    int n = SSL_read(c->transport, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    return n > 0 ? n : io_result(c, n);
}

static ssize_t tls_writev(struct conn *c, const struct iovec *iov, int cnt)
{
    (void)cnt; /* the connection writes one buffer at a time */
    size_t len = iov[0].iov_len > INT32_MAX ? INT32_MAX : iov[0].iov_len;
    int n = SSL_write(c->transport, iov[0].iov_base, (int)len);
    return n > 0 ? n : io_result(c, n);
}

static void tls_close(struct conn *c)
{
    SSL *ssl = c->transport;
    if (ssl && SSL_is_init_finished(ssl))
        SSL_shutdown(ssl); /* one close_notify, no waiting for the answer */
    SSL_free(ssl);
    c->transport = NULL;
    close(c->io.fd);
}

static void log_handshake_failure(SSL *ssl)
{
    char why[256];
    long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK)
        snprintf(why, sizeof(why), "certificate: %s", X509_verify_cert_error_string(verify));
    else
        openssl_reason(why, sizeof(why));
    struct tls_ctx *ctx = SSL_get_app_data(ssl);
    struct logline l;
    if (log_begin(&l, LOGL_INFO, "TLS handshake failed")) {
        log_str(&l, "listener", ctx ? ctx->name : "");
        log_str(&l, "error", why);
        log_end(&l);
    }
}

static int tls_handshake(struct conn *c)
{
    SSL *ssl = c->transport;
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_WRITE:
        c->want_write = true;
        return 0;
    case SSL_ERROR_WANT_READ:
        return 0;
    default:
        log_handshake_failure(ssl); /* reads, then clears, OpenSSL's error queue */
        errno = EPROTO;
        return -1;
    }
}

static const struct conn_ops tls_ops = {tls_read, tls_writev, tls_close, tls_handshake};

int tls_accept(struct conn *c, struct tls_ctx *ctx)
{
    SSL *ssl = SSL_new(ctx->ssl);
    if (!ssl || SSL_set_fd(ssl, c->io.fd) != 1) {
        SSL_free(ssl);
        return -1;
    }
    SSL_set_app_data(ssl, ctx);
    SSL_set_accept_state(ssl);
    conn_start_handshake(c, &tls_ops, ssl);
    return 0;
}

void tls_peer_cn(const struct conn *c, char *buf, size_t len)
{
    buf[0] = 0;
    if (c->ops != &tls_ops || !c->transport)
        return;
    X509 *cert = SSL_get1_peer_certificate(c->transport);
    if (!cert)
        return;
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, (int)len);
    X509_free(cert);
}
