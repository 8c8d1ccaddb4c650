#ifndef MGATE_CORE_UTF8_H
#define MGATE_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whether p[0..len) is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF); allow_nul: whether U+0000 may
 * appear (MQTT forbids it in its strings, WebSocket text allows it). */
bool utf8_valid(const uint8_t *p, size_t len, bool allow_nul);

#endif
