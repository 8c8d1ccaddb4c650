/* Packets mgate itself sends: refusals and shutdown notices. */
#include "core/log.h"
#include "session/internal.h"

/* 3.1/3.1.1 CONNACK has six codes; map v5 reasons onto them. */
static uint8_t v3_connack_code(uint8_t v5_reason)
{
    switch (v5_reason) {
    case MQTT_RC_UNSUPPORTED_VERSION:
        return MQTT3_BAD_VERSION;
    case MQTT_RC_BAD_CLIENT_ID:
        return MQTT3_ID_REJECTED;
    case MQTT_RC_SERVER_UNAVAILABLE:
    case MQTT_RC_SERVER_BUSY:
        return MQTT3_SERVER_UNAVAILABLE;
    case MQTT_RC_BAD_USER_OR_PASSWORD:
        return MQTT3_BAD_USER_OR_PASSWORD;
    default:
        return MQTT3_NOT_AUTHORIZED;
    }
}

void reply_connack(struct mgate_session *s, uint8_t v5_reason)
{
    if (!s->client)
        return;
    bool v5 = s->version == MQTT_V5;
    uint8_t rc = v5 ? v5_reason : v3_connack_code(v5_reason);
    METRIC_INC(session_metrics(s)->connect_refused[METRIC_BY_MGATE][v5_reason]);
    uint8_t buf[16];
    size_t n = mqtt_encode_connack(v5 ? MQTT_V5 : MQTT_V311, false, rc, buf, sizeof(buf));
    conn_write(s->client, buf, n);
    struct logline l;
    if (session_log_begin(s, &l, LOGL_INFO, "CONNECT refused")) { /* a flood of CONNECTs: within the budget */
        log_int(&l, "reason", rc);
        log_end(&l);
    }
}

void reply_ack(struct conn *to, uint8_t type, uint8_t version, uint16_t id, uint8_t rc)
{
    if (!to)
        return;
    uint8_t buf[8];
    size_t n = mqtt_encode_ack(type, version, id, rc, buf, sizeof(buf));
    conn_write(to, buf, n);
}

void reply_disconnect(struct mgate_session *s, uint8_t reason)
{
    /* 3.1.1 servers must not send DISCONNECT, nor a 5.0 server before
     * its successful CONNACK [MQTT-3.14.0-1] (a bad AUTH while the broker's
     * CONNACK is awaited just closes) */
    if (!s->client || s->version != MQTT_V5 || s->state != SESSION_OPEN)
        return;
    uint8_t buf[8];
    size_t n = mqtt_encode_disconnect(MQTT_V5, reason, buf, sizeof(buf));
    conn_write(s->client, buf, n);
}
