/* Packet boundaries in a byte stream, before any decoding. */
#include "mqtt/mqtt.h"

mqtt_rc mqtt_frame(const uint8_t *buf, size_t len, size_t max_size, size_t *total)
{
    uint32_t rl, n;

    *total = 0;
    if (len < 2)
        return MQTT_NEED_MORE;
    mqtt_rc rc = mqtt_varint_get(buf + 1, len - 1, &rl, &n);
    if (rc != MQTT_OK)
        return rc;
    *total = 1 + (size_t)n + rl;
    /* Refuse on the header alone so that an oversized packet never has to
     * be buffered just to be rejected. */
    if (*total > max_size)
        return MQTT_TOO_LARGE;
    return len < *total ? MQTT_NEED_MORE : MQTT_OK;
}
