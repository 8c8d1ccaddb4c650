/* Standard base64 (RFC 4648 alphabet, '=' padding optional), decoding only:
 * HTTP Basic credentials and mosquitto's password-file salts and hashes. */
#ifndef MGATE_BASE64_H
#define MGATE_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Decode [s, s + n) into out (at most max bytes).  Returns the length, or
 * -1 when it is not base64 or does not fit. */
int base64_decode(const char *s, size_t n, uint8_t *out, size_t max);

#endif
