/*
 * HTTP requests on the loop: libcurl's multi-socket API with its sockets in
 * the loop's epoll set and its timeout on a loop timer.  Nothing here waits:
 * fetch_start returns at once and the callback runs later from the loop.
 * Used for OCSP queries, CRL downloads, the `http` handler's webhook and
 * the HTTP front end's requests to its target.
 *
 * One fetcher per loop, made on first use (in a loop slot, core/loop.h) and
 * freed with the loop's slots: what is still in flight then is cancelled.
 * Use IP literals in URLs where possible: libcurl resolves names in a
 * thread of its own, never in the loop, but a literal needs no lookup.
 *
 * Every request: http and https only, no redirects followed, no proxy (the
 * environment's *_proxy is ignored), User-Agent "mgate", no signals.  https
 * uses libcurl's own TLS settings (system CA store, peer verified).
 * Connections may be kept alive between requests of one loop.
 */
#ifndef MGATE_FETCH_H
#define MGATE_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"

struct fetch;

/* Check error first: a request that failed after the status line came
 * (too large, timed out mid-body) has error set and keeps that status. */
struct fetch_result {
    int status;          /* HTTP status; 0 when no answer came (see error) */
    const uint8_t *body; /* the response body (valid only during the callback);
                            never NULL, empty ("", len 0) on error */
    size_t len;
    const char *error;   /* NULL on an HTTP answer (any status, 404 too); else libcurl's
                            message ("Failed to connect to ...", "Operation timed out
                            ...") or "response too large"; valid during the callback */
    double seconds;      /* total time */
    bool timed_out;      /* error is a timeout (connecting, or the whole request) */
    long max_age;        /* with want_max_age: the answer's Cache-Control max-age in seconds
                            (at most a day), 0 for no-store / no-cache, -1 when it says neither */
};

/* Called exactly once per started request unless fetch_cancel came first,
 * always from the loop (never from inside fetch_start).  It may start and
 * cancel requests, and free ctx. */
typedef void (*fetch_cb)(void *ctx, const struct fetch_result *r);

struct fetch_request {
    const char *url;
    const char *method;       /* NULL: GET, or POST when body is set; "HEAD" and others too */
    const uint8_t *body;      /* copied; may be NULL */
    size_t body_len;
    const char *content_type; /* for a body, e.g. "application/ocsp-request";
                                 NULL with a body: application/octet-stream */
    const char *accept;       /* Accept header, may be NULL */
    uint32_t timeout_ms;      /* whole request; 0 = 5000 */
    size_t max_body;          /* larger answers fail with error "response too large"; 0 = 1 MiB */

    /* For proxying (the HTTP front end); all optional. */
    const char *const *headers; /* NULL-terminated "Name: value" lines sent as they are
                                   ("Name:" removes one libcurl would add); with headers,
                                   content_type and accept get no defaults */
    bool body_borrowed;         /* body is not copied: it stays valid until the callback
                                   runs or fetch_cancel */
    bool no_timeout;            /* no whole-request limit (timeout_ms ignored): the caller
                                   bounds the request with timers of its own */
    uint32_t connect_timeout_ms; /* 0: libcurl's */
    const char *connect_to;     /* "HOST:PORT:ADDRESS:PORT": connect there instead of
                                   resolving (an address resolved at start: no lookup) */
    const char *ca_file;        /* https: CA bundle for the target; NULL: the system's */
    const char *cert_file, *key_file; /* https: our client certificate, or NULL */
    bool no_verify;             /* https: do not verify the target's certificate */
    const struct fetch_stream *stream; /* the response goes there as it arrives */
    bool want_max_age;          /* read the answer's Cache-Control into max_age */
};

/* A Cache-Control value's max-age (see fetch_result.max_age); exported for tests. */
long fetch_cache_control_max_age(const char *value);

/*
 * A streamed response: the status line and headers, then the body, are
 * handed over as they arrive instead of being collected (max_body does not
 * apply); the final fetch_cb still runs once, with an empty body.  These
 * run from inside libcurl: they must not start, cancel or resume fetches.
 */
enum fetch_take { FETCH_TAKEN = 0, FETCH_PAUSE = 1, FETCH_ABORT = 2 };
struct fetch_stream {
    /* One header line as received, CRLF included: the status line (again
     * for each 1xx answer), each header, then the empty line.  0 or -1
     * (abort the transfer). */
    int (*on_header)(void *ctx, const char *line, size_t len);
    /* Body bytes, de-chunked.  FETCH_PAUSE: not taken; they come again
     * after fetch_resume. */
    enum fetch_take (*on_body)(void *ctx, const uint8_t *p, size_t len);
};

/* Let a paused stream go on (its on_body may run from inside this call). */
void fetch_resume(struct fetch *f);

/* Once per process, before any thread starts (libcurl's global init is not
 * thread-safe).  Returns 0 or -1. */
int fetch_global_init(void);

/* Start a request on loop l.  Returns a handle (valid until the callback
 * returns or fetch_cancel), or NULL with errno set (EINVAL: no url or cb, a
 * body_len without body, CR/LF in a header value; ENOMEM).  A bad URL or an
 * unsupported scheme is reported through the callback. */
struct fetch *fetch_start(struct loop *l, const struct fetch_request *req, fetch_cb cb, void *ctx);

/* Abandon a request: its callback will not run.  NULL, or the request whose
 * callback is running, is a no-op. */
void fetch_cancel(struct fetch *f);

/* Requests started on l and not finished yet (for tests and metrics). */
unsigned fetch_in_flight(struct loop *l);

/* Make l's fetcher now if it is not made yet; -1 when out of memory.  A
 * layer whose per-loop state holds fetches calls it before registering its
 * own loop slot: slots are freed newest first, so that state is freed (its
 * fetches cancelled) while the fetcher still exists.  After
 * loop_slots_free, a later fetch_start on l makes a new fetcher. */
int fetch_loop_prepare(struct loop *l);

#endif
