/* A transport for virtual connections in unit tests (conn_virtual with a
 * struct rec as its transport): it takes everything written to it, or
 * nothing while stalled (EAGAIN: the output piles up in the connection),
 * and keeps the first bytes in buf, to see what a peer was told. */
#ifndef MGATE_TEST_REC_CONN_H
#define MGATE_TEST_REC_CONN_H

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "net/conn.h"

struct rec {
    struct conn *c;
    uint8_t buf[8192];
    size_t n;
    bool stall;
    bool closed;   /* the connection closed its transport */
    unsigned writes; /* calls that took bytes: how many writes the peer would have seen */
};

static ssize_t rec_writev(struct conn *c, const struct iovec *iov, int n)
{
    struct rec *r = c->transport;
    if (r->stall) {
        errno = EAGAIN;
        return -1;
    }
    ssize_t t = 0;
    r->writes++;
    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < iov[i].iov_len && r->n < sizeof(r->buf); k++)
            r->buf[r->n++] = ((const uint8_t *)iov[i].iov_base)[k];
        t += (ssize_t)iov[i].iov_len;
    }
    return t;
}
static void rec_close(struct conn *c) { ((struct rec *)c->transport)->closed = true; }
static void rec_interest(struct conn *c, uint32_t ev) { (void)c, (void)ev; }
static const struct conn_ops rec_ops = {NULL, rec_writev, rec_close, NULL, rec_interest, false};

/* A virtual connection writing into r (r->c set). */
static inline struct conn *rec_open(struct loop *l, struct rec *r, const struct conn_cbs *cbs, void *owner)
{
    return r->c = conn_virtual(l, &rec_ops, r, cbs, owner);
}

#endif
