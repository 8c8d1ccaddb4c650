/* The one map from listener kind to front end (front.h).  A new front end
 * is its file with a struct front_ops, and a line here. */
#include "front/front.h"

#include <unistd.h>

#include "core/log.h"
#include "net/conn.h"
#include "net/tls.h"

static const struct front_ops *const fronts[LISTENER_COUNT] = {
    [LISTENER_MQTT] = &front_mqtt,
    [LISTENER_MQTT_TLS] = &front_mqtt,
    [LISTENER_MQTT_MTLS] = &front_mqtt,
    [LISTENER_WS] = &front_ws,
    [LISTENER_WS_TLS] = &front_ws,
    [LISTENER_WS_MTLS] = &front_ws,
    [LISTENER_HTTP] = &front_http,
    [LISTENER_HTTP_TLS] = &front_http,
    [LISTENER_HTTP_MTLS] = &front_http,
    [LISTENER_COAP] = &front_coap,
    [LISTENER_COAP_DTLS] = &front_coap_dtls,
};

struct conn *front_conn_accept(struct loop *l, int fd, const struct session_params *p, struct session_list *list)
{
    if (list->draining) {
        close(fd);
        return NULL;
    }
    struct conn *c = conn_tcp_accept(l, fd, NULL, NULL);
    if (!c) {
        close(fd);
        front_accept_failed(l, p);
        return NULL;
    }
    if (p->tls && tls_accept(c, p->tls) < 0) {
        conn_close(c);
        front_accept_failed(l, p);
        return NULL;
    }
    return c;
}

void front_accept_failed(struct loop *l, const struct session_params *p)
{
    uint32_t left_out = 0;
    if (!log_enabled(LOGL_WARN) ||
        (p->log_budget && !log_limit_take(p->log_budget, loop_now(l), LISTENER_LOG_BURST, &left_out)))
        return;
    struct logline ll;
    log_begin(&ll, LOGL_WARN, "connection dropped at accept: out of memory");
    log_str(&ll, "listener", p->listener);
    if (left_out)
        log_uint(&ll, "listener_left_out", left_out);
    log_end(&ll);
}

const struct front_ops *front_of(enum listener_id id)
{
    return (unsigned)id < LISTENER_COUNT ? fronts[id] : NULL;
}
