/*
 * `mgate tunnel`'s wire format in reliable mode (docs/TUNNEL.md): binary
 * frames on each side's data topic, and JSON control messages on the
 * control topic, optionally authenticated with HMAC-SHA256.  Pure: no I/O,
 * no allocation except where a function says so.  The mqtunnel-compatible
 * mode has its own messages (compat.c).
 *
 * A frame (big-endian), one per MQTT PUBLISH payload:
 *
 *   0  u8   TUNNEL_FRAME_VERSION << 4 | type
 *   1  u8   flags (TF_FIN_SEEN on an ACK); others zero
 *   2  u64  stream id (the opener's random id)
 *   10 u64  offset:  DATA  the stream offset of payload[0]
 *                    ACK   bytes received in order and written (cumulative)
 *                    FIN   the stream's final length (bytes sent in all)
 *                    ACCEPT, RST: 0
 *   18 u32  window:  ACK   bytes the receiver takes beyond offset; else 0
 *   22 ...  payload: DATA  the bytes; ACCEPT the accepter's data topic
 *                    (with a key, MAC-prefixed: tunnel_accept_encode);
 *                    RST   a reason (UTF-8, at most 200 bytes); else none
 */
#ifndef MGATE_TUNNEL_FRAME_H
#define MGATE_TUNNEL_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TUNNEL_FRAME_VERSION 1
#define TUNNEL_FRAME_HEAD 22
#define TUNNEL_MAX_CHUNK (64u * 1024u) /* DATA payload per frame, at most */
#define TUNNEL_MAX_TOPIC 256
#define TUNNEL_MAX_REASON 200

enum tunnel_frame_type {
    TF_DATA = 1,
    TF_ACK = 2,
    TF_FIN = 3,
    TF_RST = 4,
    TF_ACCEPT = 5, /* the answer to an open: the stream exists on the accepting side */
};

#define TF_FIN_SEEN 0x01u /* ACK: the FIN at `offset` was received (the direction is done) */

struct tunnel_frame {
    uint8_t type;  /* enum tunnel_frame_type */
    uint8_t flags;
    uint64_t stream;
    uint64_t offset;
    uint32_t window;
    const uint8_t *payload; /* decode: points into the input */
    size_t len;
};

/* Encode f into out (at least TUNNEL_FRAME_HEAD + f->len bytes); returns
 * the length. */
size_t tunnel_frame_encode(const struct tunnel_frame *f, uint8_t *out);
/* Decode a PUBLISH payload; false for anything malformed (short, another
 * version, an unknown type, reserved flags set, a payload where the type
 * has none, DATA over TUNNEL_MAX_CHUNK or empty, an ACCEPT topic that is
 * empty, over TUNNEL_MAX_TOPIC or holds a wildcard or NUL, a reason over
 * TUNNEL_MAX_REASON, a stream id of 0). */
bool tunnel_frame_decode(const uint8_t *p, size_t len, struct tunnel_frame *f);

/*
 * A control message (the opener's request for a stream), published at
 * QoS 1 on the control topic:
 *
 *   {"type":"open","v":1,"stream":"<16 hex>","port":22,"reply":"<topic>","ts":<unix seconds>}
 *
 * With a shared key it is sent as "<64 hex HMAC-SHA256 of the JSON>.<JSON>"
 * and a receiver with a key refuses anything else: a wrong or missing MAC,
 * or a ts more than TUNNEL_CONTROL_SKEW seconds from its clock (a replay of
 * an old open is refused).  Without a key the JSON goes alone.
 */
#define TUNNEL_CONTROL_SKEW 300
#define TUNNEL_KEY_MIN 16 /* bytes of shared key, at least */

struct tunnel_open {
    uint64_t stream;
    uint16_t port;
    char reply[TUNNEL_MAX_TOPIC + 1]; /* the opener's data topic */
    uint64_t ts;
};

/* The control message for o into out (at most outlen bytes); key may be
 * NULL (keylen 0).  Returns the length, or 0 when it does not fit. */
size_t tunnel_open_encode(const struct tunnel_open *o, const uint8_t *key, size_t keylen, char *out, size_t outlen);

enum tunnel_open_result {
    TUNNEL_OPEN_OK = 0,
    TUNNEL_OPEN_MALFORMED, /* not the JSON above (strict: no unknown or duplicate keys) */
    TUNNEL_OPEN_BAD_MAC,   /* a key is set and the MAC is missing or wrong */
    TUNNEL_OPEN_STALE,     /* a key is set and ts is too far from now */
};
/* Decode and (with a key) authenticate a control message received at
 * unix time now. */
enum tunnel_open_result tunnel_open_decode(const uint8_t *p, size_t len, const uint8_t *key, size_t keylen,
                                           uint64_t now, struct tunnel_open *o);
const char *tunnel_open_result_name(enum tunnel_open_result r);

/*
 * An ACCEPT's payload.  Without a key: the accepter's data topic.  With a
 * shared key: "<64 hex HMAC-SHA256 of "accept", the stream id (8 bytes,
 * big-endian) and the topic>.<topic>", so that a client that can read the
 * control topic (and so sees the open's reply topic and stream id) cannot
 * answer in the remote's place and take the stream over.
 * tunnel_accept_encode: the payload into out, its length (0: no room).
 * tunnel_accept_topic: the topic's offset in p, or -1 when a key is set
 * and the MAC is missing or wrong (without a key a MAC is skipped).
 */
size_t tunnel_accept_encode(uint64_t stream, const char *topic, const uint8_t *key, size_t keylen, uint8_t *out,
                            size_t outlen);
long tunnel_accept_topic(uint64_t stream, const uint8_t *p, size_t len, const uint8_t *key, size_t keylen);

#endif
