/*
 * DTLS 1.2 for the CoAP listener (tls.h): what a DTLS server context adds
 * to a TLS one, the stateless cookie exchange, pre-shared keys, and the
 * hand-over of a verified ClientHello to a socket of the client's own.
 *
 * Cookies (RFC 6347 4.2.1): an HMAC-SHA256 of the client's address and
 * port under a secret drawn once per process, so any worker verifies any
 * worker's cookie and nothing is stored per client until one comes back.
 *
 * Pre-shared keys: PSK_FILE, one "identity:hexkey" a line ('#' comments and
 * blank lines allowed), read with the context (so a SIGHUP reads it again,
 * and handshakes keep the table of the context they started on).
 *
 * A client that starts a new handshake from the address of an open session
 * is answered on that session's socket (on_client_datagram, below).
 */
#include <ctype.h>
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>

#include "core/log.h"
#include "net/tls_int.h"

/* ---- cookies ------------------------------------------------------------- */

static uint8_t cookie_secret[32];
static bool cookie_secret_ok;
static pthread_once_t cookie_once = PTHREAD_ONCE_INIT;
static void make_secret(void) { cookie_secret_ok = RAND_bytes(cookie_secret, sizeof(cookie_secret)) == 1; }

/* Cookies are good for one to two minutes: the window's number goes into
 * the HMAC, and the current and the previous window are taken, so that a
 * cookie seen once cannot open sessions from that address forever. */
#define COOKIE_WINDOW_S 60

static uint64_t cookie_window(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec / COOKIE_WINDOW_S;
}

/* The cookie for peer's address in a window; 0 or -1. */
static int cookie_for(const BIO_ADDR *peer, uint64_t window, unsigned char *out, size_t cap, size_t *len)
{
    pthread_once(&cookie_once, make_secret);
    uint8_t msg[1 + 16 + 2 + 8];
    size_t alen = 0;
    if (!cookie_secret_ok || !BIO_ADDR_rawaddress(peer, NULL, &alen) || alen > 16 ||
        !BIO_ADDR_rawaddress(peer, msg + 1, &alen))
        return -1;
    unsigned short port = BIO_ADDR_rawport(peer);
    msg[0] = (uint8_t)BIO_ADDR_family(peer);
    memcpy(msg + 1 + alen, &port, 2);
    memcpy(msg + 3 + alen, &window, 8);
    return EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, cookie_secret, sizeof(cookie_secret), msg, 11 + alen, out,
                     cap, len) ? 0 : -1;
}

static bool cookie_is(const BIO_ADDR *peer, uint64_t window, const unsigned char *cookie, size_t cookie_len)
{
    unsigned char want[EVP_MAX_MD_SIZE];
    size_t n;
    return cookie_for(peer, window, want, sizeof(want), &n) == 0 && n == cookie_len &&
           !CRYPTO_memcmp(want, cookie, n);
}

/* Whether cookie is peer's, of this window or the one before. */
static bool cookie_matches(const BIO_ADDR *peer, const unsigned char *cookie, size_t cookie_len)
{
    uint64_t now = cookie_window();
    return cookie_is(peer, now, cookie, cookie_len) || (now && cookie_is(peer, now - 1, cookie, cookie_len));
}

/* The peer the datagram in ssl's BIO came from (free it), or NULL. */
static BIO_ADDR *peer_of(SSL *ssl)
{
    BIO_ADDR *peer = BIO_ADDR_new();
    if (peer && BIO_dgram_get_peer(SSL_get_rbio(ssl), peer) <= 0) {
        BIO_ADDR_free(peer);
        peer = NULL;
    }
    return peer;
}

static int cookie_generate(SSL *ssl, unsigned char *cookie, unsigned int *cookie_len)
{
    size_t n;
    BIO_ADDR *peer = peer_of(ssl);
    int rc = peer ? cookie_for(peer, cookie_window(), cookie, DTLS1_COOKIE_LENGTH, &n) : -1;
    BIO_ADDR_free(peer);
    if (rc < 0)
        return 0;
    *cookie_len = (unsigned int)n;
    return 1;
}

static int cookie_verify(SSL *ssl, const unsigned char *cookie, unsigned int cookie_len)
{
    BIO_ADDR *peer = peer_of(ssl);
    bool ok = peer && cookie_matches(peer, cookie, cookie_len);
    BIO_ADDR_free(peer);
    return ok;
}

/* ---- pre-shared keys ----------------------------------------------------- */

struct psk_entry {
    char *identity;
    unsigned len;
    unsigned char key[PSK_MAX_PSK_LEN];
};

struct psk_table {
    size_t n;
    struct psk_entry *e; /* sorted by identity */
};

static void psk_table_free(struct psk_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        OPENSSL_cleanse(t->e[i].key, sizeof(t->e[i].key));
        free(t->e[i].identity);
    }
    free(t->e);
    free(t);
}

static void psk_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    psk_table_free(ptr);
}

static int psk_index = -1;
static pthread_once_t psk_once = PTHREAD_ONCE_INIT;
static void make_psk_index(void) { psk_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, psk_ex_free); }

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int by_identity(const void *a, const void *b)
{
    return strcmp(((const struct psk_entry *)a)->identity, ((const struct psk_entry *)b)->identity);
}

/* One line, without its end: 0 (an entry in e, or nothing on the line: e->identity NULL) or -1 with why. */
static int psk_line(char *line, struct psk_entry *e, char *why, size_t whylen)
{
    memset(e, 0, sizeof(*e));
    size_t end = strlen(line);
    while (end && isspace((unsigned char)line[end - 1]))
        line[--end] = '\0';
    while (isspace((unsigned char)*line))
        line++;
    if (!*line || *line == '#')
        return 0;
    char *colon = strrchr(line, ':'); /* an identity may hold ':', a hex key cannot */
    if (!colon || colon == line) {
        snprintf(why, whylen, "expected identity:hexkey");
        return -1;
    }
    *colon = '\0';
    const char *hex = colon + 1;
    size_t hl = strlen(hex), idl = strlen(line);
    if (idl > PSK_MAX_IDENTITY_LEN) {
        snprintf(why, whylen, "the identity is longer than %d bytes", PSK_MAX_IDENTITY_LEN);
        return -1;
    }
    if (!hl || hl % 2 || hl / 2 > PSK_MAX_PSK_LEN) {
        snprintf(why, whylen, "the key must be 1 to %d bytes as an even number of hex digits", PSK_MAX_PSK_LEN);
        return -1;
    }
    for (size_t i = 0; i < hl; i += 2) {
        int hi = hexval(hex[i]), lo = hexval(hex[i + 1]);
        if (hi < 0 || lo < 0) {
            snprintf(why, whylen, "the key is not hex");
            return -1;
        }
        e->key[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    e->len = (unsigned)(hl / 2);
    if (!(e->identity = strdup(line))) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    return 0;
}

static struct psk_table *psk_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "PSK_FILE \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    struct psk_table *t = calloc(1, sizeof(*t));
    size_t cap = 0;
    char *line = NULL, why[160] = "out of memory";
    size_t linecap = 0;
    unsigned lineno = 0;
    bool bad = !t;
    while (!bad && getline(&line, &linecap, f) >= 0) {
        lineno++;
        struct psk_entry e;
        if (psk_line(line, &e, why, sizeof(why)) < 0) {
            bad = true;
            break;
        }
        if (!e.identity)
            continue;
        if (t->n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct psk_entry *ne = realloc(t->e, ncap * sizeof(*ne));
            if (!ne) {
                free(e.identity);
                snprintf(why, sizeof(why), "out of memory");
                bad = true;
                break;
            }
            t->e = ne, cap = ncap;
        }
        t->e[t->n++] = e;
    }
    free(line);
    fclose(f);
    if (!bad && t->n) {
        qsort(t->e, t->n, sizeof(*t->e), by_identity);
        for (size_t i = 1; i < t->n && !bad; i++)
            if (!strcmp(t->e[i - 1].identity, t->e[i].identity)) {
                snprintf(err, errlen, "PSK_FILE \"%s\": identity \"%s\" appears twice", path, t->e[i].identity);
                psk_table_free(t);
                return NULL;
            }
    }
    if (!bad && !t->n) {
        snprintf(err, errlen, "PSK_FILE \"%s\": no identity:hexkey line", path);
        bad = true;
        lineno = 0;
    }
    if (bad) {
        if (lineno)
            snprintf(err, errlen, "PSK_FILE \"%s\" line %u: %s", path, lineno, why);
        psk_table_free(t);
        return NULL;
    }
    return t;
}

static unsigned int psk_find(SSL *ssl, const char *identity, unsigned char *psk, unsigned int max_psk_len)
{
    const struct psk_table *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), psk_index);
    if (!t || !identity)
        return 0;
    struct psk_entry key = {.identity = (char *)identity};
    const struct psk_entry *e = bsearch(&key, t->e, t->n, sizeof(*t->e), by_identity);
    if (!e || e->len > max_psk_len)
        return 0; /* an unknown identity fails like a wrong key: a decrypt_error alert */
    memcpy(psk, e->key, e->len);
    return e->len;
}

/* ---- the context --------------------------------------------------------- */

/* Without TLS_CIPHERS: AEAD suites only (see harmless() below), with
 * CoAP's mandatory CCM_8 ones (RFC 7252 9.1.3), which OpenSSL's default
 * list leaves out. */
#define DTLS_DEFAULT_CIPHERS                                                                                     \
    "ECDHE+AESGCM:ECDHE+CHACHA20:PSK+AESGCM:PSK+CHACHA20:ECDHE+AESCCM:PSK+AESCCM:ECDHE+AESCCM8:PSK+AESCCM8"

int dtls_ctx_setup(SSL_CTX *ssl, const struct tls_settings *t, char *err, size_t errlen)
{
    if ((!t->ciphers || !*t->ciphers) && SSL_CTX_set_cipher_list(ssl, DTLS_DEFAULT_CIPHERS) != 1) {
        snprintf(err, errlen, "cannot set the default DTLS cipher list");
        return -1;
    }
    SSL_CTX_set_cookie_generate_cb(ssl, cookie_generate);
    SSL_CTX_set_cookie_verify_cb(ssl, cookie_verify);
    SSL_CTX_set_options(ssl, SSL_OP_COOKIE_EXCHANGE | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_read_ahead(ssl, 1);
    if (!t->psk_file || !*t->psk_file)
        return 0;
    pthread_once(&psk_once, make_psk_index);
    struct psk_table *psk = psk_load(t->psk_file, err, errlen);
    if (!psk)
        return -1;
    if (psk_index < 0 || !SSL_CTX_set_ex_data(ssl, psk_index, psk)) {
        psk_table_free(psk);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    SSL_CTX_set_psk_server_callback(ssl, psk_find);
    return 0;
}

/* ---- new clients ----------------------------------------------------------- */

struct tls_dtls_pending {
    SSL *ssl; /* listening on the shared socket; after a valid cookie, the client's handshake */
    BIO_ADDR *peer;
};

void tls_dtls_pending_free(struct tls_dtls_pending *pd)
{
    if (!pd)
        return;
    SSL_free(pd->ssl);
    BIO_ADDR_free(pd->peer);
    free(pd);
}

static struct tls_dtls_pending *pending_new(struct tls_ctx *ctx, int fd)
{
    struct tls_dtls_pending *pd = calloc(1, sizeof(*pd));
    BIO *bio = pd ? BIO_new_dgram(fd, BIO_NOCLOSE) : NULL;
    if (pd && bio && (pd->ssl = tls_ssl_new(ctx)) && (pd->peer = BIO_ADDR_new())) {
        SSL_set_bio(pd->ssl, bio, bio);
        return pd;
    }
    BIO_free(bio);
    tls_dtls_pending_free(pd);
    return NULL;
}

static bool addr_of(const BIO_ADDR *a, struct sockaddr_storage *ss, socklen_t *len)
{
    size_t n = 0;
    memset(ss, 0, sizeof(*ss));
    if (BIO_ADDR_family(a) == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = BIO_ADDR_rawport(a);
        *len = sizeof(*in);
        return BIO_ADDR_rawaddress(a, NULL, &n) && n == sizeof(in->sin_addr) && BIO_ADDR_rawaddress(a, &in->sin_addr, &n);
    }
    if (BIO_ADDR_family(a) == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = BIO_ADDR_rawport(a);
        *len = sizeof(*in6);
        return BIO_ADDR_rawaddress(a, NULL, &n) && n == sizeof(in6->sin6_addr) &&
               BIO_ADDR_rawaddress(a, &in6->sin6_addr, &n);
    }
    return false;
}

enum tls_listen_result tls_dtls_listen(struct tls_ctx *ctx, struct tls_dtls_pending **pending, int fd,
                                       struct sockaddr_storage *peer, socklen_t *peer_len)
{
    struct tls_dtls_pending *pd = *pending;
    pthread_mutex_lock(&ctx->lock);
    bool stale = pd && SSL_get_SSL_CTX(pd->ssl) != ctx->ssl; /* a SIGHUP brought new certificates */
    pthread_mutex_unlock(&ctx->lock);
    if (stale) {
        tls_dtls_pending_free(pd);
        *pending = pd = NULL;
    }
    if (!pd && !(*pending = pd = pending_new(ctx, fd))) {
        char drop[1]; /* out of memory: drop the datagram rather than spin on it */
        return recv(fd, drop, sizeof(drop), MSG_DONTWAIT) < 0 ? TLS_LISTEN_AGAIN : TLS_LISTEN_HANDLED;
    }
    ERR_clear_error();
    int r = DTLSv1_listen(pd->ssl, pd->peer);
    if (r > 0) {
        if (addr_of(pd->peer, peer, peer_len))
            return TLS_LISTEN_CLIENT;
        tls_dtls_pending_free(pd);
        *pending = NULL;
        return TLS_LISTEN_HANDLED;
    }
    bool again = BIO_should_retry(SSL_get_rbio(pd->ssl));
    ERR_clear_error();
    if (r < 0) { /* a fatal error leaves the object unusable: a fresh one next time */
        tls_dtls_pending_free(pd);
        *pending = NULL;
    }
    return again ? TLS_LISTEN_AGAIN : TLS_LISTEN_HANDLED;
}

/* ---- a client that starts again from the same address ------------------------ */

/*
 * A device that restarts keeps its address and port more often than not
 * (a fixed source port, a NAT mapping), and its new ClientHello reaches the
 * socket of its old session, where DTLS drops it (epoch 0).  RFC 6347
 * 4.2.8: answer it with a cookie, as the listener would, and once it comes
 * back with a valid one, end the old session: the client sends its
 * ClientHello again, and the listener takes it.  A read callback on the
 * client's datagram BIO sees each datagram before DTLS does.
 */

#define REC_HDR 13 /* type, version, epoch, sequence, length */
#define HS_HDR 12  /* type, length, message sequence, fragment offset and length */

/* A ClientHello of epoch 0 at d: its cookie in *cookie (length *clen). */
static bool new_client_hello(const uint8_t *d, size_t n, const uint8_t **cookie, size_t *clen)
{
    if (n < REC_HDR + HS_HDR + 2 + 32 + 1 || d[0] != SSL3_RT_HANDSHAKE || d[3] || d[4] ||
        d[REC_HDR] != SSL3_MT_CLIENT_HELLO)
        return false;
    const uint8_t *body = d + REC_HDR + HS_HDR, *end = d + n;
    const uint8_t *at = body + 2 + 32; /* client_version, random */
    at += 1 + *at;                      /* session id */
    if (at >= end || at + 1 + *at > end)
        return false;
    *clen = *at;
    *cookie = at + 1;
    return true;
}

/* The HelloVerifyRequest for a ClientHello (its record sequence echoed). */
static void send_cookie(BIO *bio, const uint8_t *hello, const unsigned char *cookie, size_t clen)
{
    uint8_t out[REC_HDR + HS_HDR + 3 + EVP_MAX_MD_SIZE];
    size_t body = 3 + clen, rec = HS_HDR + body;
    memcpy(out, hello, 11); /* type, version, epoch, sequence */
    out[1] = DTLS1_VERSION >> 8, out[2] = DTLS1_VERSION & 0xFF;
    out[11] = (uint8_t)(rec >> 8), out[12] = (uint8_t)rec;
    uint8_t *h = out + REC_HDR;
    memset(h, 0, HS_HDR);
    h[0] = DTLS1_MT_HELLO_VERIFY_REQUEST;
    h[3] = h[11] = (uint8_t)body; /* length and fragment length: < 256 */
    h[HS_HDR] = DTLS1_VERSION >> 8, h[HS_HDR + 1] = DTLS1_VERSION & 0xFF, h[HS_HDR + 2] = (uint8_t)clen;
    memcpy(h + HS_HDR + 3, cookie, clen);
    (void)!send(BIO_get_fd(bio, NULL), out, REC_HDR + rec, MSG_DONTWAIT);
}

/* The shortest record the session's cipher can make: the explicit nonce
 * and the tag of an AEAD suite; 0 for others (they are not checked). */
static size_t min_record(const SSL *ssl)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    const char *name = c ? SSL_CIPHER_get_name(c) : "";
    if (strstr(name, "CHACHA20") || strstr(name, "CCM8"))
        return 16;
    return strstr(name, "GCM") || strstr(name, "CCM") ? 24 : 0;
}

/* OpenSSL 3.0 ends a DTLS session on some records it could drop (RFC 6347
 * 4.1.2.1 says drop): an empty datagram (read as the end of the stream),
 * an encrypted record too short for its cipher.  Anyone who can send from
 * the client's address could end its session with one, so such datagrams
 * never reach DTLS.  (A bad MAC under a CBC suite, which OpenSSL 3.0 also
 * treats as fatal, cannot be told here: the default cipher list has none.) */
static bool harmless(const SSL *ssl, const uint8_t *d, size_t n)
{
    size_t min = SSL_is_init_finished(ssl) ? min_record(ssl) : 0;
    for (size_t off = 0; off < n;) {
        if (n - off < REC_HDR)
            return false;
        size_t len = (size_t)d[off + 11] << 8 | d[off + 12];
        bool encrypted = d[off + 3] || d[off + 4]; /* epoch > 0 */
        if (len > n - off - REC_HDR || (encrypted && len < min))
            return false;
        off += REC_HDR + len;
    }
    return n > 0;
}

static long on_client_datagram(BIO *bio, int oper, const char *argp, size_t len, int argi, long argl, int ret,
                               size_t *processed)
{
    (void)len, (void)argi, (void)argl;
    struct tls_conn *t = (struct tls_conn *)BIO_get_callback_arg(bio);
    const uint8_t *cookie;
    size_t clen;
    if (oper != (BIO_CB_READ | BIO_CB_RETURN) || !t || ret < 0)
        return ret;
    if (ret == 0 || !harmless(t->ssl, (const uint8_t *)argp, *processed)) {
        BIO_set_retry_read(bio); /* dropped, as if nothing had come */
        return -1;
    }
    if (!SSL_is_init_finished(t->ssl) || !new_client_hello((const uint8_t *)argp, *processed, &cookie, &clen))
        return ret;
    BIO_ADDR *peer = BIO_ADDR_new();
    bool known = peer && BIO_dgram_get_peer(bio, peer) > 0;
    if (known && cookie_matches(peer, cookie, clen)) {
        BIO_ADDR_free(peer);
        log_msgf(LOGL_INFO, "%s: a DTLS client started a new session from the address of an open one; the "
                 "old one ends", t->ctx->name);
        errno = ECONNRESET; /* the connection fails; the client's next ClientHello reaches the listener */
        return -1;
    }
    unsigned char want[EVP_MAX_MD_SIZE];
    size_t n;
    if (known && cookie_for(peer, cookie_window(), want, sizeof(want), &n) == 0)
        send_cookie(bio, (const uint8_t *)argp, want, n);
    BIO_ADDR_free(peer);
    BIO_set_retry_read(bio); /* as if nothing had come */
    return -1;
}

int tls_dtls_accept(struct conn *c, struct tls_ctx *ctx, struct tls_dtls_pending **pending)
{
    struct tls_dtls_pending *pd = *pending;
    *pending = NULL;
    BIO *bio = SSL_get_rbio(pd->ssl);
    BIO_set_fd(bio, c->io.fd, BIO_NOCLOSE); /* the client's own socket from now on */
    BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_CONNECTED, 0, pd->peer);
    struct tls_conn *t = tls_conn_wrap(c, ctx, pd->ssl);
    if (!t) {
        tls_dtls_pending_free(pd);
        return -1;
    }
    pd->ssl = NULL;
    tls_dtls_pending_free(pd);
    BIO_set_callback_arg(bio, (char *)t);
    BIO_set_callback_ex(bio, on_client_datagram);
    tls_start_accept(c, t);
    return 0;
}

uint32_t tls_dtls_timer(struct conn *c)
{
    if (!tls_is_tls(c))
        return 0;
    struct tls_conn *t = c->transport;
    struct timeval tv;
    if (!t->paused && DTLSv1_get_timeout(t->ssl, &tv) == 1 && tv.tv_sec == 0 && tv.tv_usec == 0) {
        ERR_clear_error();
        (void)DTLSv1_handle_timeout(t->ssl);
        ERR_clear_error();
    }
    if (DTLSv1_get_timeout(t->ssl, &tv) != 1)
        return 0;
    uint64_t ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)(tv.tv_usec + 999) / 1000;
    return ms ? (uint32_t)(ms < 60000 ? ms : 60000) : 1;
}

bool tls_dtls_has_pending(const struct conn *c)
{
    return tls_is_tls(c) && SSL_has_pending(((struct tls_conn *)c->transport)->ssl);
}

const char *tls_psk_identity(const struct conn *c)
{
    return tls_is_tls(c) ? SSL_get_psk_identity(((struct tls_conn *)c->transport)->ssl) : NULL;
}
