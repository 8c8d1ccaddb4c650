/*
 * The `http` handler's parts (not a public API): webhook.c sends the
 * requests and resumes the sessions, webhook_json.c writes the request
 * documents and reads the answers (jansson), webhook_cache.c keeps answers
 * per worker, webhook_apply.c carries an answer's modifiers into the
 * request being judged.
 */
#ifndef MGATE_WEBHOOK_H
#define MGATE_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "mgate.h"

struct loop;


enum wh_kind { WH_CONNECT, WH_PUBLISH, WH_SUBSCRIBE };
enum wh_result { WH_ALLOW, WH_DENY, WH_IGNORE, WH_ERROR };

#define WH_KEY_LEN SHA256_DIGEST_LENGTH

/* ---- request documents (webhook_json.c) -------------------------------- */

/* What one request describes: a CONNECT (connect set), a PUBLISH or will
 * (topic set, publish set), or one SUBSCRIBE filter (topic set). */
struct wh_doc {
    enum wh_kind kind;
    const struct mgate_connect_req *connect;
    const struct mgate_publish_req *publish;
    mgate_bytes topic;
    int qos;
    /* MQTT 5 user properties of the PUBLISH, or none (user NULL) */
    const struct mgate_user_property *user;
    uint32_t user_count;
};

/* The JSON body (malloc'd, *len bytes, NUL-terminated) and its cache key:
 * a SHA-256 of the document without "peer" and "payload" (one client's
 * answer serves another from another port; a payload rewrite is never
 * cached, as in VerneMQ).  NULL when out of memory. */
char *wh_request(mgate_session *s, const struct wh_doc *d, uint8_t key[WH_KEY_LEN], size_t *len);

/* ---- answers (webhook_json.c) ------------------------------------------ */

/* A 2xx answer read: its verdict and, for an allow, its modifiers, checked
 * (types, topics, QoS, base64...).  Strings borrow from root. */
struct wh_answer {
    enum wh_result result;
    bool found;      /* it had a "result" */
    const char *bad; /* an invalid modifier (its name): result is then WH_DENY */
    json_t *root;
    /* CONNECT */
    bool has_client_id, has_username, has_mount_point, has_expire_at;
    mgate_bytes client_id, username, mount_point;
    uint64_t expire_at; /* seconds since the epoch */
    /* PUBLISH */
    bool has_topic, has_payload, has_user_properties;
    mgate_bytes topic;
    uint8_t *payload; /* malloc'd, payload_len bytes */
    uint32_t payload_len;
    int qos, retain; /* -1: unchanged */
    struct mgate_user_property *user; /* malloc'd array, strings in root */
    uint32_t user_count;
    /* SUBSCRIBE (one filter a request): the filter's new form */
    bool has_filter;
    mgate_bytes filter;
    int filter_qos;      /* -1: unchanged */
    uint8_t refuse;      /* a SUBACK failure code: refuse just this filter; 0: not */
};

/* Reads body (len bytes) as the answer to a request of this kind; from_cache:
 * a payload modifier is left out (it was the answer to one message).
 * Always fills a: WH_ERROR when the body is no JSON object or its result no
 * known word.  Free with wh_answer_free. */
void wh_answer_parse(struct wh_answer *a, enum wh_kind kind, const uint8_t *body, size_t len, bool from_cache);
void wh_answer_free(struct wh_answer *a);

/* ---- the answer applied (webhook_apply.c) ------------------------------ */

/* Carry a's modifiers into req (the request of that kind being judged;
 * for a SUBSCRIBE, filter req->filters[filter]).  Returns a's verdict, or
 * WH_DENY when one cannot be applied (logged, naming the field). */
enum wh_result wh_apply(mgate_session *s, enum wh_kind kind, void *req, uint32_t filter, struct wh_answer *a);

/* ---- the per-worker cache (webhook_cache.c) ---------------------------- */

/* Bounds per worker: entries, and bytes of answers kept. */
#define WH_CACHE_ENTRIES 4096u
#define WH_CACHE_BYTES (4u * 1024u * 1024u)
#define WH_CACHE_MAX_ANSWER (64u * 1024u) /* a larger answer is not kept */

struct wh_cache;
struct wh_cache *wh_cache_new(void);
void wh_cache_free(struct wh_cache *c);
/* The answer kept under key, when it has not expired (now: loop ms):
 * its result and body (valid until the next put). */
bool wh_cache_get(struct wh_cache *c, const uint8_t key[WH_KEY_LEN], uint64_t now, enum wh_result *r,
                  const uint8_t **body, size_t *len);
/* Keep an allow or deny answer for ttl_ms (0: not kept). */
void wh_cache_put(struct wh_cache *c, const uint8_t key[WH_KEY_LEN], uint64_t now, uint32_t ttl_ms, enum wh_result r,
                  const uint8_t *body, size_t len);

#endif
