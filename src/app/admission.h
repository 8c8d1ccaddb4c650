/*
 * Who may open a connection at all, decided when it is accepted (after its
 * PROXY header, so the real client address counts): MAX_CONNECTIONS per
 * listener, and CONNECTION_RATE_LIMIT new connections per second per
 * source address (a token bucket per address, in a bounded table shared by
 * the workers: one short lock per accepted connection, none per packet).
 */
#ifndef MGATE_ADMISSION_H
#define MGATE_ADMISSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct admission;
struct admission *admission_new(uint32_t per_second);
void admission_free(struct admission *a);
/* Take one token for this source; false when it has none left. */
bool admission_rate_ok(struct admission *a, const struct sockaddr *peer, uint64_t now_ms);

#endif
