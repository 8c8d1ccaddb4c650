/*
 * The admin listener (MGATE_ADMIN_PORT): a small HTTP/1.1 server on the
 * control thread's loop for /metrics, /healthz and /readyz.  It serves one
 * request per connection (what Prometheus and kubelet do), answers GET and
 * HEAD, and bounds everything: request size, time, open connections.
 * What a path returns is the caller's (app/status.c).
 */
#ifndef MGATE_ADMIN_H
#define MGATE_ADMIN_H

#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"

/* Fill body for path; set *content_type; return the HTTP status. */
typedef int (*admin_route)(void *ctx, const char *path, struct buf *body, const char **content_type);

struct admin;
/* Returns NULL with a message in err (the bind failed, ...). */
struct admin *admin_start(struct loop *l, const char *host, uint16_t port, admin_route route, void *ctx,
                          char *err, size_t errlen);
void admin_stop(struct admin *a);

#endif
