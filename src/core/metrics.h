/*
 * Counters for /metrics.  Every loop has one struct metrics; only that
 * loop's thread writes it (a plain add, no lock, no atomic read-modify-
 * write on the data path), and the admin listener on the control thread
 * reads every loop's and sums them.  Relaxed atomic loads and stores keep
 * those reads well defined without costing the writer anything on x86-64
 * or arm64.
 */
#ifndef MGATE_METRICS_H
#define MGATE_METRICS_H

#include <stdint.h>

#define METRIC_LISTENERS 16
#define METRIC_JWT_RESULTS 16 /* at least JWT_RESULT_COUNT (checked in jwt.c) */
#define METRIC_BUCKETS 9 /* verdict latency: <= 1, 5, 25, 100, 250, 1000, 2500, 10000 ms, +Inf */

enum metric_call { METRIC_AUTH_CONNECT, METRIC_AUTH_PUBLISH, METRIC_AUTH_SUBSCRIBE, METRIC_CALLS };
enum metric_by { METRIC_BY_MGATE, METRIC_BY_BROKER };
enum metric_tls_fail {
    METRIC_TLS_REVOKED,
    METRIC_TLS_UNKNOWN_CA,
    METRIC_TLS_NO_CERT,
    METRIC_TLS_EXPIRED,
    METRIC_TLS_REVOCATION_UNAVAILABLE,
    METRIC_TLS_OTHER,
    METRIC_TLS_FAILS
};
enum metric_rev { METRIC_REV_OCSP, METRIC_REV_CRL };

struct metrics {
    /* sessions, per listener (index = enum listener_id) */
    uint64_t sessions_opened[METRIC_LISTENERS], sessions_closed[METRIC_LISTENERS];
    uint64_t connect_accepted;
    uint64_t connect_refused[2][256]; /* [enum metric_by][MQTT 5 reason code] */
    /* MQTT traffic: [direction: 0 client->broker, 1 broker->client] */
    uint64_t packets[2][16]; /* by packet type */
    uint64_t bytes[2];
    uint64_t publish_refused[2];
    uint64_t subscribe_refused; /* filters */
    uint64_t rewrites[2];       /* the rewrite handler's topics: [0] rewritten, [1] failed to (refused) */
    uint64_t backpressure_pauses[2];
    uint64_t broker_dial_failures;
    /* handler verdicts */
    uint64_t verdicts[METRIC_CALLS][METRIC_BUCKETS];
    uint64_t verdict_ms_sum[METRIC_CALLS];
    /* TLS with clients */
    uint64_t tls_handshakes, tls_failures[METRIC_TLS_FAILS];
    uint64_t rev_fetches[2][2]; /* [enum metric_rev][0 answered, 1 failed] */
    uint64_t rev_cache_hits[2];
    uint64_t proxy_refused;
    /* limits */
    uint64_t limit_hits[2];     /* PUBLISH over [0] PUBLISH_RATE_LIMIT, [1] PUBLISH_BANDWIDTH_LIMIT */
    uint64_t conns_refused[2];  /* [0] MAX_CONNECTIONS, [1] CONNECTION_RATE_LIMIT */
    /* the HTTP front end */
    uint64_t http_responses[6]; /* by status class: [2] 2xx ... [5] 5xx */
    uint64_t ws_opened;         /* WebSockets relayed (101 given) */
    uint64_t ws_messages[2], ws_bytes[2]; /* relayed, by direction; refused ones are publish_refused */
    /* the CoAP front end */
    uint64_t coap_datagrams[2], coap_bytes[2]; /* relayed, by direction */
    uint64_t coap_answers[6];                  /* mgate's own answers, by code class: [4] 4.xx, [5] 5.xx */
    uint64_t coap_dropped;                     /* datagrams dropped: malformed, unjudgeable, over a bound */
    uint64_t sessions_expired;   /* ended by mgate_session_expire_at */
    uint64_t webhook_requests;   /* sent to MGATE_WEBHOOK_URL */
    uint64_t webhook_cache_hits; /* answered from the per-worker cache instead */
    uint64_t mount_dropped; /* broker PUBLISHes outside the session's mount point: never delivered */
    /* the jwt handler */
    uint64_t jwt_verified;                   /* tokens accepted */
    uint64_t jwt_refused[METRIC_JWT_RESULTS]; /* by enum jwt_result (handlers/jwt.h) */
    uint64_t jwt_jwks_fetches[3];            /* MGATE_JWT_JWKS_URL fetches: [0] ok, [1] error, [2] invalid */
};

#define METRIC_ADD(field, n) __atomic_store_n(&(field), (field) + (uint64_t)(n), __ATOMIC_RELAXED)
#define METRIC_INC(field) METRIC_ADD(field, 1)
static inline uint64_t metric_get(const uint64_t *f) { return __atomic_load_n(f, __ATOMIC_RELAXED); }

static inline unsigned metric_bucket(uint64_t ms)
{
    static const uint32_t le[METRIC_BUCKETS - 1] = {1, 5, 25, 100, 250, 1000, 2500, 10000};
    unsigned i = 0;
    while (i < METRIC_BUCKETS - 1 && ms > le[i])
        i++;
    return i;
}

#endif
