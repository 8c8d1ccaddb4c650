/*
 * Inside the TLS module: shared between tls.c (contexts, the transport),
 * tls_verify.c (the verify callback and waiting handshakes), tls_cache.c
 * (revocation answers shared by every worker), tls_ocsp.c and tls_crl.c.
 * Nothing outside src/net/tls*.c includes this.
 */
#ifndef MGATE_TLS_INT_H
#define MGATE_TLS_INT_H

#include <openssl/ocsp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "net/tls.h"

/* ---- revocation answers, shared by every worker ------------------------ */

enum rev_status {
    REV_GOOD,
    REV_REVOKED,
    REV_UNKNOWN,     /* OCSP "unknown": the responder does not know the certificate */
    REV_UNAVAILABLE, /* no answer: responder or distribution point down, bad answer */
    REV_CRL_EXPIRED,
    REV_WAIT, /* not known yet: a fetch is on its way */
};

#define REV_KEY_LEN 32
#define REV_WHY_LEN 200

struct rev_entry {
    uint8_t key[REV_KEY_LEN];
    uint8_t status;  /* enum rev_status (OCSP); CRLs use crl or why */
    time_t expires;  /* wall clock: the answer is not used after this */
    time_t refresh;  /* CRLs: fetch again after this, keep using the old one meanwhile */
    X509_CRL *crl;   /* a verified CRL, or NULL */
    char why[REV_WHY_LEN];
};

struct rev_cache {
    pthread_mutex_t lock;
    struct rev_entry *e;
    uint32_t n, cap;
    uint64_t hits, misses; /* for tests and metrics */
};

int rev_cache_init(struct rev_cache *c, uint32_t cap);
void rev_cache_free(struct rev_cache *c);
/* Copy the entry for key into out if present and not expired (the copy holds
 * its own reference to the CRL: free it with rev_entry_clear).  true if found. */
bool rev_cache_get(struct rev_cache *c, const uint8_t key[REV_KEY_LEN], struct rev_entry *out);
/* Store a copy (takes a new reference to e->crl).  Evicts expired entries,
 * then the one closest to expiring, when full. */
void rev_cache_put(struct rev_cache *c, const struct rev_entry *e);
void rev_entry_clear(struct rev_entry *e);
void rev_key(const void *data, size_t len, uint8_t key[REV_KEY_LEN]);

/* ---- the per-listener policy ------------------------------------------- */

struct tls_policy {
    unsigned methods; /* TLS_CHECK_OCSP | TLS_CHECK_CRL */
    unsigned ocsp_depth, crl_depth;
    char *ocsp_url, *crl_url;
    bool soft_fail;
    uint32_t timeout_ms;
    X509 *crl_url_issuer;   /* CRL_DISTRIBUTION_POINTS_ISSUER_CERT_FILE, or NULL */
    pthread_mutex_t offline_lock;
    X509_CRL *offline_crl;  /* OFFLINE_CRL_FILE; swapped on reload */
    bool offline_checked;   /* its signature was checked by OFFLINE_CRL_ISSUER_CERT_FILE */
    struct rev_cache ocsp, crl;
};

struct tls_ctx {
    pthread_mutex_t lock; /* guards ssl: swapped by a reload on the control thread */
    SSL_CTX *ssl;
    X509_STORE *store; /* the trust store of ssl (client CAs), for OCSP signatures */
    struct tls_settings set; /* strings owned: what a reload reads again */
    struct tls_policy pol;
    bool client;  /* a context for dialling (the broker), not accepting */
    char name[64];
};

/* What a handshake learnt while checking revocation; allocated by the
 * verify callback, freed when the handshake ends. */
struct tls_check {
    struct tls_wait *wait;      /* the fetch this handshake waits for, or NULL */
    struct tls_conn *next_wait; /* other handshakes waiting for the same fetch */
    unsigned pos;               /* checks before this one passed (depth * 2 + method) */
    bool has_answer;            /* answer: what the last fetch said (it may not be cacheable) */
    struct rev_entry answer;
    char cn[128], serial[96];   /* the certificate that failed */
    char why[REV_WHY_LEN];      /* why, when it failed */
};

/* A TLS connection's own state: conn->transport. */
struct tls_conn {
    SSL *ssl;
    struct conn *c;
    struct tls_ctx *ctx;
    struct tls_check *chk;
    bool paused;    /* inside a paused verify callback (an ASYNC job) */
    bool cancelled; /* closing: the paused callback must give up */
};

int tls_conn_index(void); /* SSL ex_data index of the struct tls_conn */
/* The transport's state for an SSL made elsewhere (DTLS), and the start of
 * a server-side handshake on it (in the accept state already).  NULL / -1: ssl is not taken. */
struct tls_conn *tls_conn_wrap(struct conn *c, struct tls_ctx *ctx, SSL *ssl);
void tls_start_accept(struct conn *c, struct tls_conn *t);
/* SSL_new on the context's current SSL_CTX (a reload swaps it). */
SSL *tls_ssl_new(struct tls_ctx *ctx);

/* DTLS (tls_dtls.c): what a DTLS server context adds (cookies, pre-shared
 * keys from t->psk_file, no renegotiation).  -1 with err naming the key. */
int dtls_ctx_setup(SSL_CTX *ssl, const struct tls_settings *t, char *err, size_t errlen);

/* The cert_verify_callback of every server context (arg: the tls_ctx). */
int tls_verify_cb(X509_STORE_CTX *x, void *arg);
/* Detach a closing connection from the fetch it waits for; free its check. */
void tls_check_end(struct tls_conn *t);

/* OCSP (tls_ocsp.c). */
OCSP_CERTID *ocsp_cert_id(X509 *cert, X509 *issuer, uint8_t key[REV_KEY_LEN]);
/* Build a request with a nonce; its DER in *der (OPENSSL_free). */
OCSP_REQUEST *ocsp_request(OCSP_CERTID *id, unsigned char **der, int *len);
/* Check a response (signature against store + issuer, nonce, validity) and
 * fill e: status, expires (nextUpdate; 0 when it has none), why. */
void ocsp_parse_response(const uint8_t *p, size_t len, OCSP_REQUEST *req, OCSP_CERTID *id, X509 *issuer,
                         X509_STORE *store, struct rev_entry *e);
char *ocsp_url_of(X509 *cert); /* the AIA OCSP URL, malloc'd, or NULL */

/* CRLs (tls_crl.c). */
X509_CRL *crl_parse(const uint8_t *p, size_t len);        /* DER or PEM */
X509_CRL *crl_load(const char *path, char *err, size_t errlen);
/* Signature by issuer (and issuer names match). 0 or -1 with why. */
int crl_check_issuer(X509_CRL *crl, X509 *issuer, char *why, size_t len);
bool crl_expired(X509_CRL *crl, time_t now);
/* crl was issued before than (CRL number, else thisUpdate): a replay. */
bool crl_older(X509_CRL *crl, X509_CRL *than);
/* Signed by one of the certificates of a PEM file (the client CAs)? */
bool crl_signed_by_one_of(X509_CRL *crl, const char *ca_file);
bool crl_revokes(X509_CRL *crl, X509 *cert);
char *crl_url_of(X509 *cert); /* the first http(s) CDP URI, malloc'd, or NULL */
X509 *cert_load(const char *path, char *err, size_t errlen);

/* Describe a certificate for a log line. */
void cert_cn(X509 *cert, char *buf, size_t len);
void cert_serial(X509 *cert, char *buf, size_t len); /* upper-case hex, as openssl x509 -serial */

#endif
