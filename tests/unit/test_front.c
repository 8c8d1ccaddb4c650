/* The front-end table (front/front.c): every listener kind that is built
 * has a complete struct front_ops, the others (CoAP) and anything that is
 * not a kind have none; each front end's prepare takes only the
 * TARGET_PROTOCOLs it speaks, with the message users get, and its free
 * undoes prepare (ASan's leak check runs over this too). */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "config/config.h"
#include "front/coap_int.h"
#include "front/front.h"
#include "front/http.h"

static const char *table_env(void *ctx, const char *name)
{
    for (const char *const *p = ctx; p && *p; p += 2)
        if (strcmp(*p, name) == 0)
            return p[1];
    return NULL;
}

static void test_lookup(void)
{
    static const struct {
        enum listener_id id;
        const struct front_ops *ops;
    } want[] = {
        {LISTENER_MQTT, &front_mqtt}, {LISTENER_MQTT_TLS, &front_mqtt}, {LISTENER_MQTT_MTLS, &front_mqtt},
        {LISTENER_WS, &front_ws},     {LISTENER_WS_TLS, &front_ws},     {LISTENER_WS_MTLS, &front_ws},
        {LISTENER_HTTP, &front_http}, {LISTENER_HTTP_TLS, &front_http}, {LISTENER_HTTP_MTLS, &front_http},
        {LISTENER_COAP, &front_coap}, {LISTENER_COAP_DTLS, &front_coap_dtls}, {LISTENER_COUNT, NULL},
        {(enum listener_id)-1, NULL}, {(enum listener_id)1000, NULL},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        CHECK(front_of(want[i].id) == want[i].ops);
    for (int id = 0; id < LISTENER_COUNT; id++) {
        const struct front_ops *f = front_of((enum listener_id)id);
        if (f) /* a stream front end accepts; a datagram one serves its socket */
            CHECK(f->name && *f->name && f->prepare && f->free &&
                  (f->datagram ? !f->accept && f->serve && f->stop && f->unserve : f->accept && !f->serve));
    }
}

/* Every listener enabled, each with a target protocol it may have. */
static const char *const env[] = {
    "MGATE_MQTT_WITHOUT_TLS_PORT", "1884", "MGATE_MQTT_WITHOUT_TLS_TARGET_HOST", "127.0.0.1",
    "MGATE_MQTT_WITHOUT_TLS_TARGET_PORT", "8083", "MGATE_MQTT_WITHOUT_TLS_TARGET_PROTOCOL", "ws",
    "MGATE_MQTT_WITHOUT_TLS_TARGET_PATH", "/mqtt",
    "MGATE_MQTT_WS_WITHOUT_TLS_PORT", "8080", "MGATE_MQTT_WS_WITHOUT_TLS_TARGET_HOST", "127.0.0.1",
    "MGATE_MQTT_WS_WITHOUT_TLS_TARGET_PORT", "1883", "MGATE_MQTT_WS_WITHOUT_TLS_TARGET_PROTOCOL", "mqtt",
    "MGATE_HTTP_WITHOUT_TLS_PORT", "8086", "MGATE_HTTP_WITHOUT_TLS_TARGET_HOST", "127.0.0.1",
    "MGATE_HTTP_WITHOUT_TLS_TARGET_PORT", "8000", "MGATE_HTTP_WITHOUT_TLS_BYPASS_PATHS", "^/health$",
    "MGATE_COAP_WITHOUT_DTLS_PORT", "5682", "MGATE_COAP_WITHOUT_DTLS_TARGET_HOST", "127.0.0.1",
    "MGATE_COAP_WITHOUT_DTLS_TARGET_PORT", "5683", "MGATE_COAP_WITHOUT_DTLS_MAX_PACKET_SIZE", "1MiB",
    NULL,
};

static void test_prepare(void)
{
    struct mgate_config cfg;
    char err[512] = "";
    struct config_source src = {table_env, (void *)env, NULL, NULL};
    if (config_load(&cfg, &src, err, sizeof(err)) < 0) {
        fprintf(stderr, "config: %s\n", err);
        CHECK(0);
        return;
    }
    struct listener_config *mqtt = &cfg.listeners[LISTENER_MQTT], *ws = &cfg.listeners[LISTENER_WS],
                           *http = &cfg.listeners[LISTENER_HTTP];

    /* MQTT to a WebSocket broker: the broker's layer, no settings of its own */
    struct session_params p = {0};
    CHECK_EQ_INT(front_mqtt.prepare(mqtt, &p, err, sizeof(err)), 0);
    CHECK(p.broker_layer && p.broker_settings && !p.front_settings);
    front_mqtt.free(&p);
    CHECK(!p.broker_layer && !p.broker_settings);

    /* WebSocket listener to an MQTT broker: its settings, no broker layer */
    p = (struct session_params){0};
    CHECK_EQ_INT(front_ws.prepare(ws, &p, err, sizeof(err)), 0);
    CHECK(!p.broker_layer && p.front_settings);
    front_ws.free(&p);
    CHECK(!p.front_settings);

    p = (struct session_params){0};
    CHECK_EQ_INT(front_http.prepare(http, &p, err, sizeof(err)), 0);
    CHECK(!p.broker_layer && p.front_settings);
    front_http.free(&p);
    CHECK(!p.front_settings);

    /* What config_load lets through only by mistake: each front end checks
     * the target protocol itself. */
    mqtt->target_protocol = TARGET_HTTP;
    p = (struct session_params){0};
    CHECK_EQ_INT(front_mqtt.prepare(mqtt, &p, err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "MGATE_MQTT_WITHOUT_TLS_TARGET_PROTOCOL: \"http\" is not available in this version "
                      "(use mqtt, mqtts, ws or wss)");
    front_mqtt.free(&p);
    ws->target_protocol = TARGET_HTTPS;
    CHECK_EQ_INT(front_ws.prepare(ws, &p, err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "MGATE_MQTT_WS_WITHOUT_TLS_TARGET_PROTOCOL: \"https\" is not available in this version "
                      "(use mqtt, mqtts, ws or wss)");
    front_ws.free(&p);
    http->target_protocol = TARGET_WS;
    CHECK_EQ_INT(front_http.prepare(http, &p, err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "MGATE_HTTP_WITHOUT_TLS_TARGET_PROTOCOL: \"ws\" is not available in this version "
                      "(use http, https, mqtt or mqtts)");
    front_http.free(&p);

    /* the bridge to an MQTT broker: no HTTP target for BYPASS_PATHS */
    http->target_protocol = TARGET_MQTT;
    CHECK_EQ_INT(front_http.prepare(http, &p, err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "MGATE_HTTP_WITHOUT_TLS_BYPASS_PATHS: not possible with TARGET_PROTOCOL mqtt (there is no "
                      "HTTP target to pass requests to)");
    front_http.free(&p);
    char *bypass = http->bypass_paths;
    http->bypass_paths = "";
    CHECK_EQ_INT(front_http.prepare(http, &p, err, sizeof(err)), 0);
    CHECK(p.front_settings && ((const struct http_settings *)p.front_settings)->mqtt);
    front_http.free(&p);
    http->bypass_paths = bypass;

    /* libcurl dials HTTP targets: no PROXY header; what prepare made is
     * freed all the same. */
    http->target_protocol = TARGET_HTTP;
    http->target_proxy_protocol = true;
    CHECK_EQ_INT(front_http.prepare(http, &p, err, sizeof(err)), -1);
    CHECK(strstr(err, "MGATE_HTTP_WITHOUT_TLS_TARGET_PROXY_PROTOCOL: not possible with TARGET_PROTOCOL http") == err);
    front_http.free(&p);
    CHECK(!p.front_settings);

    /* CoAP: the relay, its datagrams at most a UDP payload; mqtt and mqtts make the bridge, the
     * rest is refused */
    struct listener_config *coap = &cfg.listeners[LISTENER_COAP];
    CHECK_EQ_INT(front_coap.prepare(coap, &p, err, sizeof(err)), 0);
    CHECK(p.front_settings && ((const struct coap_settings *)p.front_settings)->max_datagram == 65507);
    CHECK(!((const struct coap_settings *)p.front_settings)->bridge);
    front_coap.free(&p);
    CHECK(!p.front_settings);
    coap->target_protocol = TARGET_MQTT;
    CHECK_EQ_INT(front_coap.prepare(coap, &p, err, sizeof(err)), 0);
    CHECK(p.front_settings && ((const struct coap_settings *)p.front_settings)->bridge);
    front_coap.free(&p);
    coap->target_protocol = TARGET_MQTTS;
    CHECK_EQ_INT(front_coap.prepare(coap, &p, err, sizeof(err)), 0);
    CHECK(p.front_settings && ((const struct coap_settings *)p.front_settings)->bridge);
    front_coap.free(&p);
    coap->target_protocol = TARGET_HTTP;
    CHECK_EQ_INT(front_coap.prepare(coap, &p, err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "MGATE_COAP_WITHOUT_DTLS_TARGET_PROTOCOL: \"http\" is not available on a CoAP listener (use coap, "
                      "mqtt or mqtts)");
    coap->target_protocol = TARGET_COAP;
    coap->proxy_protocol = true;
    CHECK_EQ_INT(front_coap.prepare(coap, &p, err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "MGATE_COAP_WITHOUT_DTLS_PROXY_PROTOCOL: not possible on a CoAP listener (UDP has no such header)");
    front_coap.free(&p);

    /* free is safe on what no prepare touched */
    p = (struct session_params){0};
    front_mqtt.free(&p);
    front_ws.free(&p);
    front_http.free(&p);
    front_coap.free(&p);
    config_free(&cfg);
}

int main(void)
{
    test_lookup();
    test_prepare();
    return check_done("test_front");
}
