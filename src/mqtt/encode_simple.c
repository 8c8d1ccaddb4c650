/* Encoders for the packets the proxy itself originates. */
#include "mqtt/mqtt.h"

size_t mqtt_encode_connack(uint8_t version, bool session_present, uint8_t rc, uint8_t *out,
                           size_t cap)
{
    struct mqtt_packet pkt = {.type = MQTT_CONNACK};

    pkt.connack.session_present = session_present;
    pkt.connack.rc = rc;
    return mqtt_encode(&pkt, version, out, cap);
}

size_t mqtt_encode_ack(uint8_t type, uint8_t version, uint16_t id, uint8_t rc, uint8_t *out,
                       size_t cap)
{
    struct mqtt_packet pkt = {.type = type, .flags = type == MQTT_PUBREL ? 2 : 0};

    if (type < MQTT_PUBACK || type > MQTT_PUBCOMP)
        return 0;
    pkt.ack.id = id;
    pkt.ack.rc = rc;
    return mqtt_encode(&pkt, version, out, cap);
}

size_t mqtt_encode_disconnect(uint8_t version, uint8_t rc, uint8_t *out, size_t cap)
{
    struct mqtt_packet pkt = {.type = MQTT_DISCONNECT};

    pkt.disconnect.rc = rc;
    return mqtt_encode(&pkt, version, out, cap);
}
