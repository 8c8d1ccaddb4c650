/* Topic names and topic filters (MQTT 5 section 4.7). */
#include <string.h>

#include "mqtt/mqtt.h"

bool mqtt_topic_name_valid(const uint8_t *p, size_t len)
{
    return len > 0 && len <= 0xFFFF && !memchr(p, '+', len) && !memchr(p, '#', len) &&
           mqtt_utf8_valid(p, len);
}

/* '+' must be a whole level; '#' a whole level and the last one. */
bool mqtt_topic_filter_valid(const uint8_t *p, size_t len)
{
    if (len == 0 || len > 0xFFFF || !mqtt_utf8_valid(p, len))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '+' && p[i] != '#')
            continue;
        bool starts_level = i == 0 || p[i - 1] == '/';
        bool ends_level = i + 1 == len || p[i + 1] == '/';
        if (!starts_level || !ends_level)
            return false;
        if (p[i] == '#' && i + 1 != len)
            return false;
    }
    return true;
}
