/* Walking SUBSCRIBE / UNSUBSCRIBE payloads.  mqtt_decode validated them; the
 * bounds checks still hold for lists a caller built by hand. */
#include "mqtt/mqtt.h"

static bool next_filter(const struct mqtt_subscribe *s, uint32_t *off, mqtt_str *filter,
                        uint32_t extra)
{
    uint32_t left = *off <= s->list_len ? s->list_len - *off : 0;

    if (left < 2)
        return false;
    const uint8_t *p = s->list + *off;
    uint32_t n = (uint32_t)(p[0] << 8 | p[1]);
    if (n + 2 + extra > left)
        return false;
    filter->p = p + 2;
    filter->len = n;
    *off += n + 2 + extra;
    return true;
}

bool mqtt_sub_next(const struct mqtt_subscribe *s, uint32_t *off, mqtt_str *filter,
                   uint8_t *options)
{
    if (!next_filter(s, off, filter, 1))
        return false;
    *options = s->list[*off - 1];
    return true;
}

bool mqtt_unsub_next(const struct mqtt_subscribe *s, uint32_t *off, mqtt_str *filter)
{
    return next_filter(s, off, filter, 0);
}
