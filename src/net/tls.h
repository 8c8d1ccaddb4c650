/*
 * TLS for every front end: one place builds SSL_CTXs from a listener's
 * settings and wraps accepted connections.  The handshake runs on the loop
 * like any other I/O (conn_ops.handshake); nothing here blocks.
 */
#ifndef MGATE_TLS_H
#define MGATE_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "net/conn.h"

struct tls_settings {
    const char *cert_file, *key_file; /* the server's chain and key */
    const char *client_ca_file;       /* set: a client certificate is required and verified */
    const char *name;                 /* for log lines: the listener */
};

struct tls_ctx;

/* Returns NULL with a message naming the file and OpenSSL's reason. */
struct tls_ctx *tls_ctx_new(const struct tls_settings *t, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);

/* Start a server-side handshake on an accepted connection. 0 or -1. */
int tls_accept(struct conn *c, struct tls_ctx *ctx);

/* The verified client certificate's subject CN into buf ("" if none). */
void tls_peer_cn(const struct conn *c, char *buf, size_t len);

#endif
