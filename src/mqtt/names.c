/* Names for logs. */
#include "mqtt/mqtt.h"

const char *mqtt_type_name(uint8_t type)
{
    static const char *const names[16] = {
        "RESERVED", "CONNECT",  "CONNACK",     "PUBLISH",  "PUBACK",      "PUBREC",
        "PUBREL",   "PUBCOMP",  "SUBSCRIBE",   "SUBACK",   "UNSUBSCRIBE", "UNSUBACK",
        "PINGREQ",  "PINGRESP", "DISCONNECT", "AUTH",
    };
    return type < 16 ? names[type] : "UNKNOWN";
}

const char *mqtt_rc_name(mqtt_rc rc)
{
    switch (rc) {
    case MQTT_OK:
        return "ok";
    case MQTT_NEED_MORE:
        return "need more";
    case MQTT_MALFORMED:
        return "malformed packet";
    case MQTT_PROTOCOL_ERROR:
        return "protocol error";
    case MQTT_TOO_LARGE:
        return "packet too large";
    case MQTT_BAD_VERSION:
        return "unsupported protocol version";
    }
    return "unknown";
}
