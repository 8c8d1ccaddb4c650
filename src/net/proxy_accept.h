/*
 * Listeners behind a load balancer that speaks the PROXY protocol: an
 * accepted socket waits here, on the loop, until its PROXY header is in;
 * then the header is taken off the stream and the socket goes on to the
 * front end with the client's real address.  A socket without a valid
 * header within the deadline is closed and logged.
 */
#ifndef MGATE_PROXY_ACCEPT_H
#define MGATE_PROXY_ACCEPT_H

#include <stdint.h>
#include <sys/socket.h>

#include "core/list.h"
#include "core/loop.h"

/* The sockets still waiting for their header, owned by the worker (zeroed:
 * empty). */
struct proxy_list {
    struct list_node waiting; /* of struct proxy_wait */
};

typedef void (*proxy_done_cb)(void *ctx, int fd, const struct sockaddr *peer, socklen_t len);

/* Take fd (accepted from peer); call done(ctx, fd, the client's address)
 * once the header is read, or close fd.  listener names it in logs. */
void proxy_accept(struct loop *l, struct proxy_list *list, int fd, const struct sockaddr *peer,
                  socklen_t len, uint32_t timeout_ms, const char *listener, proxy_done_cb done, void *ctx);
/* Close every socket still waiting (drain, teardown). */
void proxy_list_close(struct loop *l, struct proxy_list *list);

#endif
