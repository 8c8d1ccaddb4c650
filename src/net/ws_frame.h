/* RFC 6455 framing shared by every WebSocket (net/ws.c, the HTTP listener's relay): pure
 * functions (no I/O, no allocation) that the proxy in http.c is to use on
 * both legs, the client's (frames in masked, out unmasked) and the
 * target's (frames out masked, in unmasked). No extensions are offered, so
 * every RSV bit must be 0. */
#ifndef MGATE_NET_WS_FRAME_H
#define MGATE_NET_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum wsf_op {
    WSF_CONT = 0x0,
    WSF_TEXT = 0x1,
    WSF_BINARY = 0x2,
    WSF_CLOSE = 0x8,
    WSF_PING = 0x9,
    WSF_PONG = 0xA,
};

/* Close codes (RFC 6455 7.4.1) the codec answers a bad peer with. */
enum {
    WSF_CLOSE_NORMAL = 1000,
    WSF_CLOSE_PROTOCOL = 1002,
    WSF_CLOSE_UNSUPPORTED = 1003,
    WSF_CLOSE_BAD_DATA = 1007,
    WSF_CLOSE_TOO_BIG = 1009,
};

#define WSF_MAX_HEAD 14 /* 2 + 8 (length) + 4 (mask) */

struct wsf_head {
    int fin;
    enum wsf_op op;
    int masked;
    uint8_t mask[4];
    uint64_t len;   /* payload length */
    size_t head_len; /* bytes of the header itself */
};

/* Parse a frame header from the first n bytes of p. Returns 1 and fills *h
 * when the header is complete, 0 when more bytes are needed, and -1 with
 * *close_code set when the frame is against the RFC or our limits:
 * RSV bits set, unknown opcode, a fragmented or long (> 125) control frame,
 * a length not in its shortest form or with the top bit set, a mask where
 * none belongs or none where one must be (want_masked), a payload longer
 * than max_payload. */
int wsf_parse_head(const uint8_t *p, size_t n, int want_masked, uint64_t max_payload, struct wsf_head *h,
                   int *close_code);

/* Write a frame header into out (WSF_MAX_HEAD bytes) and return its length;
 * mask is NULL for an unmasked frame. */
size_t wsf_write_head(uint8_t *out, int fin, enum wsf_op op, uint64_t len, const uint8_t mask[4]);

/* XOR n bytes at p with the key, p being at byte offset of the payload. */
void wsf_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset);

/* The same from src into dst, in one pass (a copy and a mask, or a move
 * over a frame head and an unmask): dst is src, or before it (they may
 * overlap), or apart from it. */
void wsf_mask_to(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4], uint64_t offset);

/* The sequence of data frames in one direction: a message is a TEXT or
 * BINARY frame and the CONT frames after it up to FIN; control frames may
 * come between them. */
struct wsf_seq {
    int in_message;
    enum wsf_op msg_op; /* TEXT or BINARY of the message in progress */
    uint64_t msg_len;   /* bytes so far */
};

/* Take the header of the next frame in the direction. Returns 0 when it
 * fits the sequence (for a data frame, *msg_op is the message's opcode),
 * -1 with *close_code when it does not: CONT with no message, TEXT/BINARY
 * inside one, a message longer than max_message. */
int wsf_seq_frame(struct wsf_seq *s, const struct wsf_head *h, uint64_t max_message, enum wsf_op *msg_op,
                  int *close_code);

/* The Sec-WebSocket-Accept value for a Sec-WebSocket-Key: 28 characters and
 * a NUL into out. Returns -1 when the key is not 24 characters of base64 for
 * 16 bytes. */
int wsf_accept(const char *key, char out[29]);

/* A client's fresh Sec-WebSocket-Key (16 random bytes in base64: 24
 * characters and a NUL) and the Sec-WebSocket-Accept its server must answer
 * with.  -1 when no random bytes could be had. */
int wsf_new_key(char key[25], char accept[29]);

/* The payload of a close frame: the code (big-endian), then the reason cut
 * to fit 125 bytes. Returns its length. */
size_t wsf_close_payload(uint8_t out[125], int code, const char *reason);

#endif
