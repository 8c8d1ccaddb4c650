/*
 * TLS for every front end and for the broker side: one place builds
 * SSL_CTXs from a listener's settings, wraps connections and checks peers.
 * The handshake runs on the loop like any other I/O (conn_ops.handshake).
 *
 * Revocation (OCSP, CRL) is checked inside the handshake without blocking:
 * the handshake runs in an OpenSSL ASYNC job, the verify callback starts a
 * fetch on the loop (net/fetch.h) and pauses the job; the answer resumes it,
 * so a revoked certificate still ends the handshake with a TLS alert.
 * Answers are cached for every worker of the process.
 */
#ifndef MGATE_TLS_H
#define MGATE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/conn.h"

#define TLS_CHECK_OCSP 1u
#define TLS_CHECK_CRL 2u

struct tls_settings {
    const char *name;                 /* for log lines: the listener */
    const char *cert_file, *key_file; /* ours: the server's chain and key (optional for a client) */
    const char *ca_file;              /* peers' CA: client certificates, or the broker's CA */
    bool client_cert_optional;        /* a server asks for a certificate but does not insist */
    unsigned min_version;             /* 0x0303 (1.2) or 0x0304 (1.3); 0 = 1.2 */
    const char *ciphers, *ciphersuites;
    bool no_tickets;
    /* revocation of client certificates */
    unsigned methods; /* TLS_CHECK_* */
    unsigned ocsp_depth, crl_depth;
    const char *ocsp_url, *crl_url, *crl_url_issuer_file;
    const char *offline_crl_file, *offline_crl_issuer_file;
    bool soft_fail;
    uint32_t timeout_ms;
    /* client side: verify the broker's certificate for this name */
    bool verify_peer;
    /* DTLS 1.2 instead of TLS (a CoAP listener): net/tls_dtls.c */
    bool dtls;
    const char *psk_file; /* DTLS: pre-shared keys, lines "identity:hexkey"; optional */
};

struct tls_ctx;

/* Returns NULL with a message naming the setting, the file and OpenSSL's reason. */
struct tls_ctx *tls_ctx_new(const struct tls_settings *t, char *err, size_t errlen);
struct tls_ctx *tls_client_ctx_new(const struct tls_settings *t, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);

/* Read certificates, keys, CAs and the offline CRL again (SIGHUP).  On any
 * error the old ones stay and err says why; connections already open keep
 * what they started with.  Called on the control thread. 0 or -1. */
int tls_ctx_reload(struct tls_ctx *ctx, char *err, size_t errlen);

/* Start a server-side handshake on an accepted connection. 0 or -1. */
int tls_accept(struct conn *c, struct tls_ctx *ctx);
/* Start a client-side handshake (SNI and verified name: server_name). */
int tls_connect(struct conn *c, struct tls_ctx *ctx, const char *server_name);

/*
 * DTLS (net/tls_dtls.c).  One UDP socket per listener and worker takes new
 * clients: tls_dtls_listen answers each ClientHello with a cookie (an HMAC
 * of the client's address under a per-process secret), keeps no state for
 * a client until it comes back with a valid cookie, and then hands the
 * handshake over (*pending) to tls_dtls_accept on a socket of the client's
 * own (connected to it).
 */
enum tls_listen_result {
    TLS_LISTEN_AGAIN,   /* nothing more to read now */
    TLS_LISTEN_HANDLED, /* one datagram dealt with (a cookie sent, or dropped): call again */
    TLS_LISTEN_CLIENT,  /* a ClientHello with a valid cookie from *peer: call tls_dtls_accept */
};
struct tls_dtls_pending;
enum tls_listen_result tls_dtls_listen(struct tls_ctx *ctx, struct tls_dtls_pending **pending, int fd,
                                       struct sockaddr_storage *peer, socklen_t *peer_len);
/* Continue the handshake tls_dtls_listen began, on c (its socket connected
 * to the client); *pending is taken either way.  0 or -1. */
int tls_dtls_accept(struct conn *c, struct tls_ctx *ctx, struct tls_dtls_pending **pending);
void tls_dtls_pending_free(struct tls_dtls_pending *pending);
/* During a handshake: resend our last flight if its timer ran out.  The
 * milliseconds until the next check (0: no timer running). */
uint32_t tls_dtls_timer(struct conn *c);
/* DTLS: records already read from the socket and not yet returned (a
 * datagram may carry several; epoll cannot see them). */
bool tls_dtls_has_pending(const struct conn *c);
/* The identity a client's pre-shared key was found for, or NULL. */
const char *tls_psk_identity(const struct conn *c);

/* The verified peer certificate, for handlers and logs. */
struct tls_peer {
    char cn[128];
    char serial[96];      /* upper-case hex */
    char fingerprint[96]; /* SHA-256, lower-case hex */
    char sans[512];       /* "DNS:a,IP:1.2.3.4,email:x,URI:y", cut to fit */
};
/* false when c is not TLS or the peer sent no certificate. */
bool tls_peer_info(const struct conn *c, struct tls_peer *out);
void tls_peer_cn(const struct conn *c, char *buf, size_t len);
bool tls_is_tls(const struct conn *c);
/* "TLSv1.3", or NULL when c is not TLS. A static string. */
const char *tls_version(const struct conn *c);

#endif
