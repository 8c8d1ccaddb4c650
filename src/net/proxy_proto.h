/*
 * The PROXY protocol (HAProxy's, versions 1 and 2): the header a load
 * balancer puts in front of a TCP stream to say whose stream it is, and the
 * one mgate puts in front of its own stream to the broker.  Pure functions:
 * no I/O here (net/proxy_accept.c reads it off accepted sockets).
 */
#ifndef MGATE_PROXY_PROTO_H
#define MGATE_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest header we take: v1's is at most 107 bytes; v2 carries TLVs
 * (AWS and GCP add a few dozen bytes), so allow generously but bounded. */
#define PROXY_MAX_HEADER 1024

struct proxy_info {
    bool local; /* v2 LOCAL or v1 UNKNOWN: a health check, keep the socket's own addresses */
    struct sockaddr_storage src, dst;
    socklen_t len; /* of src and dst; 0 when local */
    uint8_t version;
};

/* Parse the start of a stream.  Returns the header's length (> 0) with *out
 * filled, 0 when more bytes are needed to decide, or -1 when it is not a
 * PROXY header or a broken one (*why says which). */
int proxy_parse(const uint8_t *buf, size_t len, struct proxy_info *out, const char **why);

/* TLS facts about the client, for the v2 header mgate sends the broker. */
struct proxy_tls {
    bool tls;            /* the client used TLS */
    const char *version; /* "TLSv1.3", or NULL when not known */
    const char *cn;      /* the verified client certificate's CN; NULL or "": none */
};

/* Build a v2 PROXY header for a stream from src to dst.  Returns its length,
 * or 0 if it does not fit in cap (PROXY_MAX_HEADER always fits). */
size_t proxy_build_v2(uint8_t *buf, size_t cap, const struct sockaddr *src, const struct sockaddr *dst,
                      const struct proxy_tls *tls);

#endif
