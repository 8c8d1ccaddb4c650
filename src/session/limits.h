/*
 * Per-client PUBLISH limits (PUBLISH_RATE_LIMIT messages/s and
 * PUBLISH_BANDWIDTH_LIMIT bytes/s, client to broker): token buckets on the
 * loop clock, allocated only for listeners that set a limit.  Over a limit,
 * an MQTT 5 client's QoS 1/2 PUBLISH is refused with PUBACK/PUBREC 0x97
 * Quota exceeded (0x96 Message rate too high is not a PUBACK code, only a
 * DISCONNECT's); everything else (QoS 0, MQTT
 * 3.1.1) waits: mgate stops reading that client until the bucket refills,
 * so TCP slows it down and nothing is lost.
 */
#ifndef MGATE_SESSION_LIMITS_H
#define MGATE_SESSION_LIMITS_H

#include <stdint.h>

struct mgate_session;
struct conn;

enum limit_verdict { LIMIT_OK, LIMIT_WAIT, LIMIT_REFUSED };

/* Set up s->limits when its listener has limits. 0, or -1 out of memory. */
int limits_start(struct mgate_session *s);
void limits_free(struct mgate_session *s);
/* One client PUBLISH of len bytes (raw: the whole packet) arriving on c.
 * LIMIT_REFUSED: it was answered and must be dropped.  LIMIT_WAIT: reading
 * c stopped; it resumes on its own, and the packet is to be kept. */
enum limit_verdict limits_publish(struct mgate_session *s, struct conn *c, const uint8_t *raw, uint32_t len);

#endif
