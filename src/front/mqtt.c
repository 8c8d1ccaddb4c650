/*
 * MQTT over TCP or TLS (MGATE_MQTT_WITHOUT_TLS_, _WITH_TLS_, _WITH_MTLS_):
 * an accepted socket becomes a plain or TLS conn with a session on it at
 * once.  The session layer does the rest; this front end has no settings of
 * its own.  Also the broker side every MQTT front end shares (TARGET_PROTOCOL
 * mqtt, mqtts, ws, wss).
 */
#include <stdio.h>

#include "front/front.h"
#include "front/ws.h"
#include "net/conn.h"
#include "net/tls.h"

int mqtt_target_prepare(const struct listener_config *lc, struct session_params *p, char *err, size_t errlen)
{
    switch (lc->target_protocol) {
    case TARGET_MQTT:
    case TARGET_MQTTS: /* run.c makes the TLS client context of every target */
        return 0;
    case TARGET_WS:
    case TARGET_WSS:
        return ws_broker_prepare(lc, p, err, errlen);
    default:
        snprintf(err, errlen, "%sTARGET_PROTOCOL: \"%s\" is not available in this version (use mqtt, mqtts, ws or wss)",
                 lc->prefix, target_protocol_name(lc->target_protocol));
        return -1;
    }
}

void mqtt_target_free(struct session_params *p) { ws_broker_free(p); }

static void mqtt_accept(struct loop *l, int fd, const struct sockaddr *peer, const struct session_params *p,
                        struct session_list *list)
{
    struct conn *c = front_conn_accept(l, fd, p, list);
    if (!c)
        return;
    /* The CONNECT deadline starts now, so it bounds a slow handshake too. */
    if (!session_start(l, c, peer, p, list)) {
        conn_close(c);
        front_accept_failed(l, p);
    } else if (!p->tls)
        conn_read_now(c); /* CONNECT is usually there already (TCP_DEFER_ACCEPT) */
}

const struct front_ops front_mqtt = {
    .name = "MQTT",
    .prepare = mqtt_target_prepare,
    .accept = mqtt_accept,
    .free = mqtt_target_free,
};
