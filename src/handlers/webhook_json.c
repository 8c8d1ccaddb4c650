/*
 * The webhook's JSON, both ways, with jansson (docs/ARCHITECTURE.md says
 * why that library): the request documents mgate sends, and the answers
 * it reads with their modifiers (docs/HANDLERS.md, "http").
 *
 * Answers are read strictly: duplicate keys (JSON_REJECT_DUPLICATES: which
 * "result" would count?), U+0000 in strings and anything after the value
 * are errors; jansson bounds nesting depth.  A modifier of the wrong type or
 * out of range makes the answer a deny naming it, never a partial rewrite.
 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/base64.h"
#include "handlers/handlers.h"
#include "handlers/webhook.h"
#include "mqtt/mqtt.h"

/* ---- request documents ------------------------------------------------- */

/* A string field; bytes that are not UTF-8 (a password, a front end's
 * username) go as NAME_base64 instead. */
static int set_bytes(json_t *o, const char *name, mgate_bytes v)
{
    if (utf8_valid(v.p, v.len, true))
        return json_object_set_new(o, name, json_stringn((const char *)v.p, v.len));
    size_t n = 4 * ((v.len + 2) / 3) + 1;
    char *enc = malloc(n), key[64];
    if (!enc)
        return -1;
    int len = EVP_EncodeBlock((unsigned char *)enc, v.p, (int)v.len);
    snprintf(key, sizeof(key), "%s_base64", name);
    int rc = json_object_set_new(o, key, json_stringn(enc, len > 0 ? (size_t)len : 0));
    OPENSSL_cleanse(enc, n);
    free(enc);
    return rc;
}

static int set_text(json_t *o, const char *name, const char *v)
{
    return json_object_set_new(o, name, v ? json_string(v) : json_null());
}

static int set_maybe(json_t *o, const char *name, mgate_bytes v, bool present)
{
    return present ? set_bytes(o, name, v) : json_object_set_new(o, name, json_null());
}

static int set_base64(json_t *o, const char *name, mgate_bytes v)
{
    size_t n = 4 * ((v.len + 2) / 3) + 1;
    char *enc = malloc(n);
    if (!enc)
        return -1;
    int len = EVP_EncodeBlock((unsigned char *)enc, v.p, (int)v.len);
    int rc = json_object_set_new(o, name, json_stringn(enc, len > 0 ? (size_t)len : 0));
    free(enc);
    return rc;
}

/* [[name, value], ...]: the order and repeats of MQTT 5 user properties. */
static json_t *user_properties(const struct mgate_user_property *u, uint32_t n)
{
    json_t *list = json_array();
    for (uint32_t i = 0; list && i < n; i++) {
        json_t *pair = json_array();
        if (!pair || json_array_append_new(list, pair) < 0 ||
            json_array_append_new(pair, json_stringn((const char *)u[i].name.p, u[i].name.len)) < 0 ||
            json_array_append_new(pair, json_stringn((const char *)u[i].value.p, u[i].value.len)) < 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

static const char *const actions[] = {"connect", "publish", "subscribe"};

/* Who asks: the same for every kind. */
static int put_identity(json_t *o, mgate_session *s, const struct wh_doc *d)
{
    int rc = set_text(o, "action", actions[d->kind]) | set_text(o, "listener", mgate_session_listener(s));
    const struct mgate_connect_req *c = d->connect;
    if (c) {
        rc |= set_bytes(o, "client_id", c->client_id) | set_maybe(o, "username", c->username, c->has_username) |
              set_maybe(o, "password", c->password, c->has_password);
    } else {
        mgate_bytes user = mgate_session_username(s);
        rc |= set_bytes(o, "client_id", mgate_session_client_id(s)) | set_maybe(o, "username", user, user.len > 0);
    }
    struct mgate_cert cert;
    rc |= set_text(o, "cn", mgate_session_cert(s, &cert) ? cert.cn : NULL);
    return rc | json_object_set_new(o, "protocol", json_integer(c ? c->version : mgate_session_version(s)));
}

/* What is asked about: the topic (or filter), QoS, and a PUBLISH's flags. */
static int put_subject(json_t *o, const struct wh_doc *d)
{
    if (d->kind == WH_CONNECT)
        return 0;
    int rc = set_bytes(o, "topic", d->topic) | json_object_set_new(o, "qos", json_integer(d->qos));
    const struct mgate_publish_req *p = d->publish;
    if (!p)
        return rc;
    rc |= json_object_set_new(o, "retain", json_boolean(p->retain));
    if (p->will) /* a CONNECT's will, judged with the CONNECT (mgate.h) */
        rc |= json_object_set_new(o, "will", json_true());
    if (d->user)
        rc |= json_object_set_new(o, "user_properties", user_properties(d->user, d->user_count));
    return rc;
}

char *wh_request(mgate_session *s, const struct wh_doc *d, uint8_t key[WH_KEY_LEN], size_t *len)
{
    json_t *o = json_object();
    char *text = NULL;
    if (!o || put_identity(o, s, d) < 0 || put_subject(o, d) < 0)
        goto out;
    /* The key: everything so far, which decides the answer. */
    if (!(text = json_dumps(o, JSON_COMPACT)))
        goto out;
    SHA256((const uint8_t *)text, strlen(text), key);
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    text = NULL;
    if ((d->publish && set_base64(o, "payload", d->publish->payload) < 0) ||
        set_text(o, "peer", mgate_session_peer(s)) < 0)
        goto out;
    if ((text = json_dumps(o, JSON_COMPACT)))
        *len = strlen(text);
out:
    json_decref(o);
    return text;
}

/* ---- answers ------------------------------------------------------------ */

/* "result": the words of mgate's first answers, and VerneMQ's ("ok",
 * "next", {"error": ...}). */
static enum wh_result result_of(const json_t *v)
{
    static const char *const words[][2] = {{"allow", "ok"}, {"deny", NULL}, {"ignore", "next"}};
    if (json_is_object(v) && json_object_get(v, "error"))
        return WH_DENY;
    const char *w = json_string_value(v);
    for (int i = 0; w && i < 3; i++)
        if (strcmp(w, words[i][0]) == 0 || (words[i][1] && strcmp(w, words[i][1]) == 0))
            return (enum wh_result)i;
    return WH_ERROR;
}

static bool get_string(const json_t *v, mgate_bytes *out)
{
    if (!json_is_string(v))
        return false;
    *out = (mgate_bytes){(const uint8_t *)json_string_value(v), (uint32_t)json_string_length(v)};
    return json_string_length(v) <= 0xFFFF; /* an MQTT string's bound */
}

static bool get_int(const json_t *v, json_int_t lo, json_int_t hi, json_int_t *out)
{
    if (!json_is_integer(v))
        return false;
    *out = json_integer_value(v);
    return *out >= lo && *out <= hi;
}

static bool connect_modifier(struct wh_answer *a, const char *k, const json_t *v)
{
    json_int_t n;
    if (strcmp(k, "client_id") == 0)
        return (a->has_client_id = get_string(v, &a->client_id));
    if (strcmp(k, "username") == 0)
        return (a->has_username = get_string(v, &a->username));
    if (strcmp(k, "mount_point") == 0 || strcmp(k, "mountpoint") == 0) /* VerneMQ spells it "mountpoint" */
        return (a->has_mount_point = get_string(v, &a->mount_point));
    if (strcmp(k, "expire_at") == 0) {
        if (!get_int(v, 0, (json_int_t)(UINT64_MAX / 2000u), &n))
            return false;
        a->expire_at = (uint64_t)n;
        return (a->has_expire_at = true);
    }
    return false;
}

static bool payload_modifier(struct wh_answer *a, const json_t *v, bool from_cache)
{
    if (!json_is_string(v))
        return false;
    if (from_cache)
        return true; /* the answer to one message's payload: not for another */
    size_t n = json_string_length(v);
    if (!(a->payload = malloc(n / 4 * 3 + 3)))
        return false;
    int len = base64_decode(json_string_value(v), n, a->payload, n / 4 * 3 + 3);
    a->payload_len = len > 0 ? (uint32_t)len : 0;
    return (a->has_payload = len >= 0);
}

/* [[name, value], ...] or {name: value, ...}. */
static bool user_properties_modifier(struct wh_answer *a, const json_t *v)
{
    size_t n = json_is_array(v) ? json_array_size(v) : json_is_object(v) ? json_object_size(v) : (size_t)-1;
    if (n == (size_t)-1 || n > 65535 || !(a->user = calloc(n ? n : 1, sizeof(*a->user))))
        return false;
    a->user_count = (uint32_t)n;
    a->has_user_properties = true;
    if (json_is_object(v)) {
        const char *name;
        json_t *val;
        size_t i = 0;
        json_object_foreach((json_t *)v, name, val) {
            a->user[i].name = (mgate_bytes){(const uint8_t *)name, (uint32_t)strlen(name)};
            if (!get_string(val, &a->user[i++].value) || a->user[i - 1].name.len > 0xFFFF)
                return false;
        }
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *pair = json_array_get(v, i);
        if (json_array_size(pair) != 2 || !get_string(json_array_get(pair, 0), &a->user[i].name) ||
            !get_string(json_array_get(pair, 1), &a->user[i].value))
            return false;
    }
    return true;
}

static bool publish_modifier(struct wh_answer *a, const char *k, const json_t *v, bool from_cache)
{
    json_int_t n;
    if (strcmp(k, "topic") == 0)
        return (a->has_topic = get_string(v, &a->topic) && mqtt_topic_name_valid(a->topic.p, a->topic.len));
    if (strcmp(k, "payload") == 0)
        return payload_modifier(a, v, from_cache);
    if (strcmp(k, "qos") == 0)
        return get_int(v, 0, 2, &n) && ((a->qos = (int)n), true);
    if (strcmp(k, "retain") == 0)
        return json_is_boolean(v) && ((a->retain = json_is_true(v)), true);
    if (strcmp(k, "user_properties") == 0)
        return user_properties_modifier(a, v);
    return false;
}

/* One entry of "topics": {"topic": ..., "qos": 0..2 or 128, "reason": a SUBACK failure code}. */
static bool filter_entry(struct wh_answer *a, const json_t *e, const char **bad)
{
    json_int_t n;
    const json_t *t = json_object_get(e, "topic"), *q = json_object_get(e, "qos"), *r = json_object_get(e, "reason");
    *bad = "topics";
    if (!json_is_object(e) || json_object_size(e) != (size_t)(!!t + !!q + !!r))
        return false; /* not an object, or a key we do not know */
    *bad = "topics[].topic";
    if (t && !(a->has_filter = get_string(t, &a->filter) && mqtt_topic_filter_valid(a->filter.p, a->filter.len)))
        return false;
    *bad = "topics[].qos";
    if (q && !(get_int(q, 0, 128, &n) && (n <= 2 || n == 128)))
        return false;
    if (q && n == 128) /* VerneMQ's refusal: SUBACK 0x80 */
        a->refuse = MQTT_RC_UNSPECIFIED;
    else if (q)
        a->filter_qos = (int)n;
    *bad = "topics[].reason";
    if (r && !(get_int(r, 0x80, 0xFF, &n) && mqtt_reason_valid(MQTT_SUBACK, MQTT_V5, (uint8_t)n)))
        return false;
    if (r)
        a->refuse = (uint8_t)n;
    return true;
}

/* "topics": the request's filters in order (one: a request a filter). */
static bool topics_modifier(struct wh_answer *a, const json_t *v, const char **bad)
{
    *bad = "topics";
    return json_array_size(v) == 1 && filter_entry(a, json_array_get(v, 0), bad);
}

/* Every modifier known and well formed, else *bad names the first that is not. */
static bool read_modifiers(struct wh_answer *a, enum wh_kind kind, const json_t *mods, bool from_cache,
                           const char **bad)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)mods, k, v) {
        *bad = k;
        bool ok = kind == WH_CONNECT   ? connect_modifier(a, k, v)
                  : kind == WH_PUBLISH ? publish_modifier(a, k, v, from_cache)
                                       : strcmp(k, "topics") == 0 && topics_modifier(a, v, bad);
        if (!ok)
            return false;
    }
    return true;
}

/* The modifiers of an allow: "modifiers": {...}; a SUBSCRIBE's "topics" may
 * also stand beside "result", as VerneMQ has it. */
static void answer_modifiers(struct wh_answer *a, enum wh_kind kind, bool from_cache)
{
    json_t *mods = json_object_get(a->root, "modifiers");
    json_t *topics = kind == WH_SUBSCRIBE ? json_object_get(a->root, "topics") : NULL;
    const char *bad = "modifiers";
    bool ok = !mods || (json_is_object(mods) && read_modifiers(a, kind, mods, from_cache, &bad));
    if (ok && topics) { /* given twice is one too many */
        bad = "topics";
        ok = !(mods && json_object_get(mods, "topics")) && topics_modifier(a, topics, &bad);
    }
    if (!ok) {
        a->result = WH_DENY;
        a->bad = bad;
    }
}

void wh_answer_parse(struct wh_answer *a, enum wh_kind kind, const uint8_t *body, size_t len, bool from_cache)
{
    *a = (struct wh_answer){.result = WH_ERROR, .qos = -1, .retain = -1, .filter_qos = -1};
    size_t i = 0;
    while (i < len && memchr(" \t\r\n", body[i], 4))
        i++;
    if (i == len) { /* an empty 2xx allows */
        a->result = WH_ALLOW;
        return;
    }
    json_error_t err;
    a->root = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(a->root))
        return;
    json_t *r = json_object_get(a->root, "result");
    a->found = r != NULL;
    a->result = r ? result_of(r) : WH_ALLOW;
    if (a->result == WH_ALLOW)
        answer_modifiers(a, kind, from_cache);
}

void wh_answer_free(struct wh_answer *a)
{
    json_decref(a->root);
    free(a->payload);
    free(a->user);
    *a = (struct wh_answer){0};
}

int webhook_parse_answer(const uint8_t *body, size_t len, bool *found)
{
    struct wh_answer a;
    wh_answer_parse(&a, WH_CONNECT, body, len, false);
    int r = a.result == WH_ERROR ? 3 : (int)a.result;
    *found = a.found && a.result != WH_ERROR;
    wh_answer_free(&a);
    return r;
}
