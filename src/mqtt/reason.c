/* Which return / reason codes each packet may carry (MQTT 5 section 2.4 and
 * the per-packet tables; 3.1.1 sections 3.2.2.3 and 3.9.3). */
#include <string.h>

#include "mqtt/mqtt.h"

#define S(lit) {(const uint8_t *)(lit), sizeof(lit) - 1}

static const mqtt_str v5_codes[16] = {
    [MQTT_CONNACK] = S("\x00\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8A\x8C\x90\x95\x97"
                       "\x99\x9A\x9B\x9C\x9D\x9F"),
    [MQTT_PUBACK] = S("\x00\x10\x80\x83\x87\x90\x91\x97\x99"),
    [MQTT_PUBREC] = S("\x00\x10\x80\x83\x87\x90\x91\x97\x99"),
    [MQTT_PUBREL] = S("\x00\x92"),
    [MQTT_PUBCOMP] = S("\x00\x92"),
    [MQTT_SUBACK] = S("\x00\x01\x02\x80\x83\x87\x8F\x91\x97\x9E\xA1\xA2"),
    [MQTT_UNSUBACK] = S("\x00\x11\x80\x83\x87\x8F\x91"),
    [MQTT_DISCONNECT] = S("\x00\x04\x80\x81\x82\x83\x87\x89\x8B\x8D\x8E\x8F\x90\x93\x94\x95"
                          "\x96\x97\x98\x99\x9A\x9B\x9C\x9D\x9E\x9F\xA0\xA1\xA2"),
    [MQTT_AUTH] = S("\x00\x18\x19"),
};

bool mqtt_reason_valid(uint8_t type, uint8_t version, uint8_t rc)
{
    if (version < MQTT_V5) {
        if (type == MQTT_CONNACK)
            return rc <= MQTT3_NOT_AUTHORIZED;
        /* 3.1 had no failure code; 3.1.1 brokers send 0x80 to 3.1 clients too. */
        if (type == MQTT_SUBACK)
            return rc <= 2 || rc == 0x80;
        return false; /* nothing else carries a code before v5 */
    }
    if (type >= 16 || !v5_codes[type].p)
        return false;
    return memchr(v5_codes[type].p, rc, v5_codes[type].len) != NULL;
}
