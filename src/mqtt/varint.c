/* MQTT variable byte integers: 7 bits a byte, low group first, at most 4. */
#include "mqtt/mqtt.h"

#define VARINT_MAX 268435455u /* 0xFFFFFFF: four 7-bit groups */

uint32_t mqtt_varint_size(uint32_t v)
{
    if (v < 128u)
        return 1;
    if (v < 16384u)
        return 2;
    if (v < 2097152u)
        return 3;
    return v <= VARINT_MAX ? 4 : 0;
}

uint32_t mqtt_varint_put(uint8_t *out, uint32_t v)
{
    uint32_t n = mqtt_varint_size(v);

    for (uint32_t i = 0; i < n; i++) {
        out[i] = (uint8_t)(v & 0x7F);
        v >>= 7;
        if (i + 1 < n)
            out[i] |= 0x80;
    }
    return n;
}

mqtt_rc mqtt_varint_get(const uint8_t *p, size_t len, uint32_t *v, uint32_t *used)
{
    uint32_t val = 0;

    for (uint32_t i = 0; i < 4; i++) {
        if (i >= len)
            return MQTT_NEED_MORE;
        val |= (uint32_t)(p[i] & 0x7F) << (7 * i);
        if (!(p[i] & 0x80)) {
            /* A longer-than-needed encoding (e.g. 0x80 0x00) could not be
             * reproduced on re-encoding, and MQTT 5 forbids it. */
            if (i + 1 != mqtt_varint_size(val))
                return MQTT_MALFORMED;
            *v = val;
            *used = i + 1;
            return MQTT_OK;
        }
    }
    return MQTT_MALFORMED; /* the 4th byte still says "more" */
}
