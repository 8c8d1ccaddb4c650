/* Standard base64 (RFC 4648 alphabet, '=' padding optional), decoding only:
 * HTTP Basic credentials and mosquitto's password-file salts and hashes;
 * and base64url (RFC 4648 section 5), strictly, for JWTs and JWKs. */
#ifndef MGATE_BASE64_H
#define MGATE_BASE64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decode [s, s + n) into out (at most max bytes).  Returns the length, or
 * -1 when it is not base64 or does not fit. */
int base64_decode(const char *s, size_t n, uint8_t *out, size_t max);

/* Decode base64url [s, s + n) into out (at most max bytes), strictly: the
 * '-' '_' alphabet, no padding, no whitespace, and the unused bits of the
 * last character zero (one encoding per value).  Returns the length, or -1. */
int base64url_decode(const char *s, size_t n, uint8_t *out, size_t max);

#endif
