/*
 * A listening TCP socket on the loop.  Accepts in batches; when the process
 * runs out of descriptors (EMFILE/ENFILE) it stops accepting for a moment
 * instead of spinning on a socket that stays readable.
 */
#ifndef MGATE_LISTENER_H
#define MGATE_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/loop.h"

struct listener;
typedef void (*listener_accept_cb)(struct listener *ls, int fd, const struct sockaddr *peer,
                                   socklen_t peerlen);

struct listener {
    struct loop_io io;
    struct loop *loop;
    struct loop_timer backoff;
    listener_accept_cb on_accept;
    void *ctx;
    const char *name;
    uint64_t accepted;
    uint64_t emfile_events;
};

/* Bind and listen on host:port ("" = every address).  SO_REUSEPORT lets each
 * worker have its own socket.  Returns the fd or -1 with a message. */
int listener_bind(const char *host, uint16_t port, char *err, size_t errlen);
/* The same for a datagram front end (CoAP): a bound UDP socket, which the
 * front end reads itself (front/front.h, serve). */
int listener_bind_udp(const char *host, uint16_t port, char *err, size_t errlen);
int listener_start(struct listener *ls, struct loop *l, int fd, const char *name,
                   listener_accept_cb cb, void *ctx);
void listener_close(struct listener *ls);

/* Resolve host:port once (at start and on reload: never on the data path).
 * Returns 0 or -1 with a message. */
int resolve_address(const char *host, uint16_t port, struct sockaddr_storage *out, socklen_t *outlen,
                    char *err, size_t errlen);

#endif
