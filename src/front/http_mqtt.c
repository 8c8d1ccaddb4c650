/*
 * The HTTP bridge's broker side (http_mqtt.h): one link per HTTP
 * connection, a session/mqtt_client.h client under it, the request in
 * progress (HTTP answers one request at a time per connection) and the
 * identity the link was opened with, to tell when it changed.
 */
#include "front/http_mqtt.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "front/http_util.h"
#include "session/mqtt_client.h"
#include "session/session.h"

#define LINK_KEEPALIVE 60 /* seconds: PINGREQ on an idle keep-alive connection's link */
#define LINK_INFLIGHT 2   /* one request at a time; room for a second while the first one's ack is late */

struct http_mqtt {
    struct mqtt_client *mc; /* NULL: none now (the broker closed it); the next POST dials again */
    struct mgate_session *s;
    /* the request in progress: done NULL when there is none */
    http_mqtt_done_fn done;
    void *ctx;
    mgate_bytes topic, payload;
    uint8_t qos;
    bool retain, waiting; /* waiting: to be published once the CONNACK came */
    char why[128];
    /* the identity the link was opened with: client id, username, password */
    uint32_t id_len, user_len, pass_len;
    uint8_t ident[];
};

/* ---- the request's query and headers ------------------------------------------------- */

/* One parameter's value from the query (into mem) or the header: 0 with
 * *v (NULL: neither), or 400. */
static int option(const char *query, size_t qlen, const struct http_head *h, const char *key, const char *header,
                  char *mem, const char **v, size_t *vlen, const char **why)
{
    size_t n = 0;
    enum http_qparam q = query ? http_query_param(query, qlen, key, mem, &n) : HTTP_QPARAM_NONE;
    if (q != HTTP_QPARAM_NONE && q != HTTP_QPARAM_ONE)
        return *why = "a query parameter is given twice or cannot be decoded (qos, retain)", 400;
    const struct http_hdr *hd = http_head_find(h, header);
    if (http_head_count(h, header) > 1)
        return *why = "the MQTT-QoS or MQTT-Retain header is given twice", 400;
    if (q == HTTP_QPARAM_ONE && hd && (hd->value_len != n || memcmp(hd->value, mem, n)))
        return *why = "the query and the headers disagree (qos, retain)", 400;
    *v = q == HTTP_QPARAM_ONE ? mem : hd ? hd->value : NULL;
    *vlen = q == HTTP_QPARAM_ONE ? n : hd ? hd->value_len : 0;
    return 0;
}

static bool is(const char *v, size_t n, const char *word) { return n == strlen(word) && !strncasecmp(v, word, n); }

int http_mqtt_options(const char *query, size_t query_len, const struct http_head *h, uint8_t *qos, bool *retain,
                      const char **why)
{
    char *mem = malloc(query_len + 1);
    if (!mem)
        return *why = "out of memory", 503;
    const char *v;
    size_t n;
    int st = option(query, query_len, h, "qos", "mqtt-qos", mem, &v, &n, why);
    *qos = 0;
    if (!st && v) {
        if (n != 1 || v[0] < '0' || v[0] > '2')
            st = 400, *why = "qos is 0, 1 or 2";
        else
            *qos = (uint8_t)(v[0] - '0');
    }
    *retain = false;
    if (!st && !(st = option(query, query_len, h, "retain", "mqtt-retain", mem, &v, &n, why)) && v) {
        if (is(v, n, "true") || is(v, n, "1"))
            *retain = true;
        else if (!is(v, n, "false") && !is(v, n, "0"))
            st = 400, *why = "retain is true or false";
    }
    free(mem);
    return st;
}

int http_mqtt_client_id(const char *query, size_t query_len, char *mem, char *gen, mgate_bytes *out,
                        const char **why)
{
    size_t n = 0;
    switch (query ? http_query_param(query, query_len, "clientid", mem, &n) : HTTP_QPARAM_NONE) {
    case HTTP_QPARAM_ONE:
        *out = (mgate_bytes){(const uint8_t *)mem, (uint32_t)n};
        return 0;
    case HTTP_QPARAM_NONE:
        break;
    default:
        return *why = "clientid is given twice or cannot be decoded", 400;
    }
    if (!gen[0]) {
        uint8_t r[8] = {0};
        if (RAND_bytes(r, sizeof(r)) != 1)
            return *why = "no random bytes for a client id", 503;
        int o = snprintf(gen, 28, "mgate-http-");
        for (size_t i = 0; i < sizeof(r); i++)
            o += snprintf(gen + o, (size_t)(28 - o), "%02x", r[i]);
    }
    *out = (mgate_bytes){(const uint8_t *)gen, (uint32_t)strlen(gen)};
    return 0;
}

/* ---- the link ---------------------------------------------------------------------- */

static void finish(struct http_mqtt *k, int status, const char *why)
{
    http_mqtt_done_fn done = k->done;
    k->done = NULL;
    k->waiting = false;
    k->topic = k->payload = (mgate_bytes){0};
    if (done)
        done(k->ctx, status, why); /* may close the link: k is not touched after */
}

static void pub_done(void *arg, enum mqc_status st, uint8_t code, const uint8_t *codes, uint32_t n)
{
    (void)codes, (void)n;
    struct http_mqtt *k = arg;
    if (st == MQC_OK) {
        finish(k, 200, "published");
    } else if (st == MQC_REFUSED) {
        snprintf(k->why, sizeof(k->why), "the broker refused the PUBLISH (reason 0x%02x)", code);
        finish(k, 502, k->why);
    } /* MQC_FAILED: the connection ended, on_closed says why */
}

static int send_now(struct http_mqtt *k)
{
    k->waiting = false;
    switch (mqtt_client_publish(k->mc, k->topic, k->payload, k->qos, k->retain, pub_done, k)) {
    case MQC_OK:
        return 0;
    case MQC_INVALID:
        return mqtt_client_ready(k->mc) ? 400 : 502;
    default:
        return 503;
    }
}

static void on_ready(struct mqtt_client *mc, void *ctx)
{
    (void)mc;
    struct http_mqtt *k = ctx;
    int st = k->waiting ? send_now(k) : 0;
    if (st)
        finish(k, st, st == 400 ? "the topic is not a valid topic name" : "the PUBLISH cannot be sent");
}

static void on_closed(struct mqtt_client *mc, void *ctx, enum mqc_end why, uint8_t code)
{
    (void)mc;
    struct http_mqtt *k = ctx;
    k->mc = NULL;
    int status = why == MQC_END_TIMEOUT ? 504 : 502;
    switch (why) {
    case MQC_END_UNREACHABLE:
        snprintf(k->why, sizeof(k->why), "the broker cannot be reached");
        break;
    case MQC_END_REFUSED:
        snprintf(k->why, sizeof(k->why), "the broker refused the CONNECT (return code %u)", code);
        break;
    case MQC_END_TIMEOUT:
        snprintf(k->why, sizeof(k->why), "the broker did not answer the CONNECT in time (TARGET_TIMEOUT)");
        break;
    default:
        snprintf(k->why, sizeof(k->why), "the connection to the broker was lost");
    }
    if (k->done)
        finish(k, status, k->why);
}

static const struct mqtt_client_cbs link_cbs = {.on_ready = on_ready, .on_closed = on_closed};

static bool same_bytes(const uint8_t *kept, uint32_t len, mgate_bytes b)
{
    return len == b.len && (!len || !memcmp(kept, b.p, len)); /* b.p may be NULL when empty */
}

static bool same_identity(const struct http_mqtt *k, mgate_bytes id, mgate_bytes user, mgate_bytes pass)
{
    return same_bytes(k->ident, k->id_len, id) && same_bytes(k->ident + k->id_len, k->user_len, user) &&
           same_bytes(k->ident + k->id_len + k->user_len, k->pass_len, pass);
}

static void link_free(struct http_mqtt *k)
{
    if (!k)
        return;
    mqtt_client_close(k->mc); /* no callback any more */
    free(k);
}

int http_mqtt_publish(struct http_mqtt **link, struct mgate_session *s, mgate_bytes topic, mgate_bytes payload,
                      uint8_t qos, bool retain, uint32_t timeout_ms, http_mqtt_done_fn done, void *ctx)
{
    mgate_bytes id = mgate_session_client_id(s), user = mgate_session_username(s),
                pass = mgate_session_password(s);
    struct http_mqtt *k = *link;
    if (k && !same_identity(k, id, user, pass)) {
        mgate_log(LOGL_DEBUG, s, "http: another identity, another broker connection");
        link_free(k);
        k = *link = NULL;
    }
    if (!k) {
        if (!(k = calloc(1, sizeof(*k) + id.len + user.len + pass.len)))
            return 503;
        k->s = s;
        k->id_len = id.len, k->user_len = user.len, k->pass_len = pass.len;
        if (id.len)
            memcpy(k->ident, id.p, id.len);
        if (user.len)
            memcpy(k->ident + id.len, user.p, user.len);
        if (pass.len)
            memcpy(k->ident + id.len + user.len, pass.p, pass.len);
        *link = k;
    }
    /* field by field: a struct assignment would write its tail padding over ident */
    k->s = s, k->done = done, k->ctx = ctx, k->topic = topic, k->payload = payload;
    k->qos = qos, k->retain = retain, k->waiting = false;
    if (!k->mc) {
        struct mqtt_client_opts o = {
            .p = session_params_of(s), .s = s, .client_id = id, .username = user, .password = pass,
            .has_username = user.len > 0,
            .has_password = pass.len > 0 && user.len > 0, /* 3.1.1: no password without a username */
            .clean_session = true, .version = MQTT_V311, .keepalive = LINK_KEEPALIVE, .connect_timeout_ms = timeout_ms,
            .max_inflight = LINK_INFLIGHT, .cbs = &link_cbs, .ctx = k};
        if (!(k->mc = mqtt_client_open(session_loop(s), &o))) {
            k->done = NULL;
            return errno == ENOMEM || errno == EINVAL ? 503 : 502;
        }
    }
    if (!mqtt_client_ready(k->mc)) {
        k->waiting = true;
        return 0;
    }
    int st = send_now(k);
    if (st)
        k->done = NULL;
    return st;
}

void http_mqtt_close(struct http_mqtt **link)
{
    link_free(*link);
    *link = NULL;
}
