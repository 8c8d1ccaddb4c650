/* Writing single v5 properties, for callers that build property blocks. */
#include <string.h>

#include "mqtt/mqtt.h"

uint32_t mqtt_prop_put_u8(uint8_t *out, uint8_t id, uint8_t v)
{
    out[0] = id;
    out[1] = v;
    return 2;
}

uint32_t mqtt_prop_put_u16(uint8_t *out, uint8_t id, uint16_t v)
{
    out[0] = id;
    out[1] = (uint8_t)(v >> 8);
    out[2] = (uint8_t)v;
    return 3;
}

uint32_t mqtt_prop_put_u32(uint8_t *out, uint8_t id, uint32_t v)
{
    out[0] = id;
    for (int i = 0; i < 4; i++)
        out[1 + i] = (uint8_t)(v >> (24 - 8 * i));
    return 5;
}

uint32_t mqtt_prop_put_str(uint8_t *out, uint8_t id, const uint8_t *p, uint16_t len)
{
    mqtt_prop_put_u16(out, id, len);
    if (len)
        memcpy(out + 3, p, len);
    return 3u + len;
}
