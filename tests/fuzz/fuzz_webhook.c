/*
 * Fuzzing the webhook's answer parser (handlers/webhook_json.c,
 * wh_answer_parse), which reads what the auth service sends back: arbitrary
 * bytes read as the answer to each kind of request (CONNECT, PUBLISH,
 * SUBSCRIBE), fresh and from the cache.
 *
 * Checked: the verdict is one of the four; an invalid modifier makes a deny
 * that names it; an allow's modifiers are of the request's kind and within
 * their bounds (topics and filters valid, QoS 0-2, SUBACK refusal codes,
 * MQTT string lengths, the payload only when fresh); an answer read from
 * the cache has the fresh answer's verdict except where the payload made
 * the difference; webhook_parse_answer agrees.  Any disagreement aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers/webhook.h"
#include "mqtt/mqtt.h"

int webhook_parse_answer(const uint8_t *body, size_t len, bool *found);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The request documents (wh_request, not fuzzed here) read the session;
 * these stand in for it so that webhook_json.c links alone. */
mgate_bytes mgate_session_client_id(const mgate_session *s) { (void)s; return (mgate_bytes){0}; }
mgate_bytes mgate_session_username(const mgate_session *s) { (void)s; return (mgate_bytes){0}; }
uint8_t mgate_session_version(const mgate_session *s) { (void)s; return MQTT_V5; }
const char *mgate_session_peer(const mgate_session *s) { (void)s; return ""; }
const char *mgate_session_listener(const mgate_session *s) { (void)s; return ""; }
bool mgate_session_cert(const mgate_session *s, struct mgate_cert *out) { (void)s; (void)out; return false; }

static void fail(const char *why, enum wh_kind kind)
{
    fprintf(stderr, "fuzz_webhook: %s (kind %d)\n", why, (int)kind);
    abort();
}

static void check_string(mgate_bytes b, enum wh_kind kind)
{
    if (b.len > 0xFFFF || (b.len && !b.p))
        fail("a string modifier beyond an MQTT string", kind);
}

static void check_allow(const struct wh_answer *a, enum wh_kind kind, bool from_cache)
{
    bool connect = a->has_client_id || a->has_username || a->has_mount_point || a->has_expire_at;
    bool publish = a->has_topic || a->has_payload || a->has_user_properties || a->qos != -1 || a->retain != -1;
    bool subscribe = a->has_filter || a->filter_qos != -1 || a->refuse;
    if ((connect && kind != WH_CONNECT) || (publish && kind != WH_PUBLISH) || (subscribe && kind != WH_SUBSCRIBE))
        fail("a modifier of another kind of request", kind);
    if (a->has_client_id)
        check_string(a->client_id, kind);
    if (a->has_username)
        check_string(a->username, kind);
    if (a->has_mount_point)
        check_string(a->mount_point, kind);
    if (a->has_topic && (a->topic.len > 0xFFFF || !mqtt_topic_name_valid(a->topic.p, a->topic.len)))
        fail("an invalid topic let through", kind);
    if (a->has_payload && from_cache)
        fail("a payload taken from a cached answer", kind);
    if (a->has_payload && a->payload_len && !a->payload)
        fail("a payload without bytes", kind);
    if (a->qos < -1 || a->qos > 2 || a->retain < -1 || a->retain > 1 || a->filter_qos < -1 || a->filter_qos > 2)
        fail("a QoS or retain flag out of range", kind);
    if (a->has_user_properties) {
        if (a->user_count && !a->user)
            fail("user properties without an array", kind);
        for (uint32_t i = 0; i < a->user_count; i++) {
            check_string(a->user[i].name, kind);
            check_string(a->user[i].value, kind);
        }
    }
    if (a->has_filter && (a->filter.len > 0xFFFF || !mqtt_topic_filter_valid(a->filter.p, a->filter.len)))
        fail("an invalid filter let through", kind);
    if (a->refuse && (a->refuse < 0x80 || !mqtt_reason_valid(MQTT_SUBACK, MQTT_V5, a->refuse)))
        fail("a SUBACK refusal that is no failure code", kind);
}

/* bad: whether the modifier the answer names as invalid is "payload" (the
 * name lives in the answer's JSON, freed here). */
static enum wh_result one(enum wh_kind kind, const uint8_t *p, size_t n, bool from_cache, bool *bad_payload)
{
    struct wh_answer a;
    wh_answer_parse(&a, kind, p, n, from_cache);
    if ((unsigned)a.result > WH_ERROR)
        fail("a verdict out of range", kind);
    if (a.bad && a.result != WH_DENY)
        fail("an invalid modifier that is not a deny", kind);
    if (a.result == WH_ALLOW)
        check_allow(&a, kind, from_cache);
    if (a.result != WH_ERROR && !a.found && a.result != WH_ALLOW && !a.bad)
        fail("a verdict other than allow without a result or a bad modifier", kind);
    *bad_payload = a.bad && !strcmp(a.bad, "payload");
    enum wh_result r = a.result;
    wh_answer_free(&a);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    uint8_t *body = malloc(size ? size : 1); /* exactly the body: reading past it is caught */
    if (!body)
        return 0;
    memcpy(body, data, size);
    for (enum wh_kind k = WH_CONNECT; k <= WH_SUBSCRIBE; k++) {
        bool bad_fresh, bad_cached;
        enum wh_result fresh = one(k, body, size, false, &bad_fresh);
        enum wh_result cached = one(k, body, size, true, &bad_cached);
        bool payload = bad_fresh || bad_cached;
        if (fresh != cached && !payload)
            fail("a cached answer read with another verdict", k);
        if (fresh == WH_ALLOW && cached != WH_ALLOW)
            fail("a cached allow that became something else", k);
        if (k == WH_CONNECT) {
            bool found;
            int r = webhook_parse_answer(body, size, &found);
            if (r != (fresh == WH_ERROR ? 3 : (int)fresh))
                fail("webhook_parse_answer disagrees", k);
        }
    }
    free(body);
    return 0;
}
