#ifndef MGATE_CORE_UTF8_H
#define MGATE_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whether p[0..len) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF); allow_nul: whether U+0000 may
 * appear (MQTT forbids it in its strings, WebSocket text allows it). */
bool utf8_valid(const uint8_t *p, size_t len, bool allow_nul);
/* utf8_valid without U+0000, and without what MQTT says a string SHOULD
 * NOT hold and brokers refuse (mosquitto closes the connection): control
 * characters (U+0001..U+001F, U+007F..U+009F) and noncharacters
 * (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF).  For a name mgate itself puts in a
 * packet (a username taken from a token's claim). */
bool utf8_mqtt_name(const uint8_t *p, size_t len);

#endif
