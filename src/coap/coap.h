/*
 * CoAP (RFC 7252) message codec.
 *
 * Pure functions over one datagram: no I/O, no allocation, no global state,
 * nothing from the layers above core/.  A decoded message points into the
 * caller's bytes (token, options, payload are views); it stays valid only
 * while those bytes do.  The encoder writes a whole message from a header,
 * a list of options sorted by number and a payload into a caller's buffer,
 * so a forwarded request that a handler rewrote and mgate's own answers
 * (piggybacked error, RST, empty ACK) are written by the same function.
 *
 * The wire form of a valid message is unique (an option delta or length has
 * exactly one encoding, an empty payload has no marker), so for every
 * message coap_decode accepts, encoding what it found gives back the same
 * bytes.  docs/COAP.md says why mgate has its own codec rather than libcoap.
 */
#ifndef MGATE_COAP_H
#define MGATE_COAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define COAP_VERSION 1
#define COAP_HEADER_LEN 4
#define COAP_TOKEN_MAX 8
#define COAP_PAYLOAD_MARKER 0xFF

enum coap_type {
    COAP_CON = 0, /* confirmable: the peer acknowledges or resets it */
    COAP_NON = 1,
    COAP_ACK = 2,
    COAP_RST = 3,
};

/* A code is class.detail packed as class << 5 | detail (2.05 is 0x45). */
#define COAP_CODE(cls, detail) ((uint8_t)((cls) << 5 | (detail)))
#define COAP_CODE_CLASS(code) ((uint8_t)(code) >> 5)
#define COAP_CODE_DETAIL(code) ((uint8_t)(code)&0x1F)

enum coap_code {
    COAP_EMPTY = COAP_CODE(0, 0),
    COAP_GET = COAP_CODE(0, 1),
    COAP_POST = COAP_CODE(0, 2),
    COAP_PUT = COAP_CODE(0, 3),
    COAP_DELETE = COAP_CODE(0, 4),
    COAP_FETCH = COAP_CODE(0, 5),
    COAP_PATCH = COAP_CODE(0, 6),
    COAP_IPATCH = COAP_CODE(0, 7),
    COAP_CREATED = COAP_CODE(2, 1),
    COAP_DELETED = COAP_CODE(2, 2),
    COAP_VALID = COAP_CODE(2, 3),
    COAP_CHANGED = COAP_CODE(2, 4),
    COAP_CONTENT = COAP_CODE(2, 5),
    COAP_CONTINUE = COAP_CODE(2, 31),
    COAP_BAD_REQUEST = COAP_CODE(4, 0),
    COAP_UNAUTHORIZED = COAP_CODE(4, 1),
    COAP_BAD_OPTION = COAP_CODE(4, 2),
    COAP_FORBIDDEN = COAP_CODE(4, 3),
    COAP_NOT_FOUND = COAP_CODE(4, 4),
    COAP_METHOD_NOT_ALLOWED = COAP_CODE(4, 5),
    COAP_NOT_ACCEPTABLE = COAP_CODE(4, 6),
    COAP_REQUEST_INCOMPLETE = COAP_CODE(4, 8),
    COAP_PRECONDITION_FAILED = COAP_CODE(4, 12),
    COAP_TOO_LARGE = COAP_CODE(4, 13),
    COAP_UNSUPPORTED_FORMAT = COAP_CODE(4, 15),
    COAP_INTERNAL_ERROR = COAP_CODE(5, 0),
    COAP_NOT_IMPLEMENTED = COAP_CODE(5, 1),
    COAP_BAD_GATEWAY = COAP_CODE(5, 2),
    COAP_SERVICE_UNAVAILABLE = COAP_CODE(5, 3),
    COAP_GATEWAY_TIMEOUT = COAP_CODE(5, 4),
    COAP_PROXYING_NOT_SUPPORTED = COAP_CODE(5, 5),
};

/* Option numbers (RFC 7252 §5.10, 7641 Observe, 7959 Block, 7967
 * No-Response, 8613 OSCORE, 8768 Hop-Limit, 9175 Echo and Request-Tag). */
enum coap_option_num {
    COAP_OPT_IF_MATCH = 1,
    COAP_OPT_URI_HOST = 3,
    COAP_OPT_ETAG = 4,
    COAP_OPT_IF_NONE_MATCH = 5,
    COAP_OPT_OBSERVE = 6,
    COAP_OPT_URI_PORT = 7,
    COAP_OPT_LOCATION_PATH = 8,
    COAP_OPT_OSCORE = 9,
    COAP_OPT_URI_PATH = 11,
    COAP_OPT_CONTENT_FORMAT = 12,
    COAP_OPT_MAX_AGE = 14,
    COAP_OPT_URI_QUERY = 15,
    COAP_OPT_HOP_LIMIT = 16,
    COAP_OPT_ACCEPT = 17,
    COAP_OPT_LOCATION_QUERY = 20,
    COAP_OPT_BLOCK2 = 23,
    COAP_OPT_BLOCK1 = 27,
    COAP_OPT_SIZE2 = 28,
    COAP_OPT_PROXY_URI = 35,
    COAP_OPT_PROXY_SCHEME = 39,
    COAP_OPT_SIZE1 = 60,
    COAP_OPT_ECHO = 252,
    COAP_OPT_NO_RESPONSE = 258,
    COAP_OPT_REQUEST_TAG = 292,
};

/* What was wrong.  The order matters: up to COAP_ERR_VERSION there is no
 * header to answer; from COAP_ERR_TOKEN_LEN on, type, code and message id
 * of the coap_msg are filled in, so a RST can be sent (coap_reject_how). */
typedef enum coap_err {
    COAP_OK = 0,
    COAP_ERR_SHORT,         /* fewer than 4 bytes: no header */
    COAP_ERR_VERSION,       /* version is not 1: ignored silently (§3) */
    COAP_ERR_TOKEN_LEN,     /* token length 9..15 */
    COAP_ERR_TRUNCATED,     /* the token, an option header or value runs past the end */
    COAP_ERR_OPT_RESERVED,  /* option delta or length nibble 15 that is not the payload marker */
    COAP_ERR_OPT_NUMBER,    /* the deltas add up past 65535 */
    COAP_ERR_EMPTY_PAYLOAD, /* payload marker with no payload after it */
    COAP_ERR_EMPTY_MSG,     /* code 0.00 with a token, options or payload (§4.1) */
    COAP_ERR_CODE_CLASS,    /* code class 1, 6 or 7 (reserved) */
    COAP_ERR_TYPE_CODE,     /* a request in an ACK, a RST that is not empty, an empty NON */
    COAP_ERR_BAD_OPTION,    /* coap_check_options: critical option unknown, repeated or of a bad length */
} coap_err;

/* A view of bytes in someone else's buffer. */
typedef struct coap_view {
    const uint8_t *p;
    size_t len;
} coap_view;

struct coap_opt {
    uint16_t num;
    const uint8_t *val;
    uint32_t len; /* at most 65535 + 269 on the wire */
};

/* A message.  Decoded: every view points into the datagram, and options is
 * the raw option bytes (walk them with coap_opt_begin/coap_opt_next).  To
 * encode, fill the header, token and payload; the options are passed apart
 * as a list and options here is ignored. */
struct coap_msg {
    uint8_t type; /* enum coap_type */
    uint8_t code; /* enum coap_code */
    uint16_t mid;
    uint8_t tkl;
    const uint8_t *token; /* tkl bytes */
    coap_view options;    /* the option bytes, between token and payload marker */
    uint32_t opt_count;
    coap_view payload; /* without the marker */
};

/* decode.c: parse and validate one datagram.  On COAP_OK every field is
 * set; on an error from COAP_ERR_TOKEN_LEN on, type, code, mid and tkl
 * (9..15 with COAP_ERR_TOKEN_LEN) are, enough for coap_reject_how. */
coap_err coap_decode(const uint8_t *p, size_t n, struct coap_msg *m);
const char *coap_err_name(coap_err err);
/* Whether a message of this type may carry this code: COAP_OK, or
 * COAP_ERR_CODE_CLASS or COAP_ERR_TYPE_CODE (§4.2, §4.3, §12.1). */
coap_err coap_check_code(uint8_t type, uint8_t code);

/* option.c: walking the options of a decoded message, in wire order
 * (ascending number, repeats in the order sent). */
struct coap_opt_iter {
    const uint8_t *p, *end;
    uint16_t num;
};
void coap_opt_begin(const struct coap_msg *m, struct coap_opt_iter *it);
bool coap_opt_next(struct coap_opt_iter *it, struct coap_opt *opt);
/* Parse one option header and value at p (the number is prev + delta);
 * *used is the bytes it took.  The shared step of decode and the iterator. */
coap_err coap_opt_parse(const uint8_t *p, const uint8_t *end, uint16_t prev, struct coap_opt *opt,
                        size_t *used);
/* The next option numbered num (options are sorted, so the walk stops at
 * the first larger number); false when there is no more. */
bool coap_opt_next_of(struct coap_opt_iter *it, uint16_t num, struct coap_opt *opt);
/* The first option numbered num; false when there is none. */
bool coap_opt_find(const struct coap_msg *m, uint16_t num, struct coap_opt *opt);
/* Every option into out[cap] (for a rewrite and re-encode); the count, or
 * -1 when there are more than cap. */
ssize_t coap_opt_collect(const struct coap_msg *m, struct coap_opt *out, size_t cap);

/* What the number says about an option (§5.4.6). */
static inline bool coap_opt_critical(uint16_t num) { return num & 1; }
static inline bool coap_opt_unsafe(uint16_t num) { return num & 2; }
static inline bool coap_opt_no_cache_key(uint16_t num) { return (num & 0x1E) == 0x1C; }

/* optcheck.c: the options this codec knows (numbers above), with their
 * length range and whether they may repeat (§5.4.1, §5.4.5, §5.10). */
bool coap_opt_known(uint16_t num);
/* The rules for options a recipient must not ignore: a critical option
 * that is unknown, repeated though not repeatable, or of a length outside
 * its range is COAP_ERR_BAD_OPTION with its number in *bad; elective ones
 * that break a rule are to be ignored (§5.4.1) and pass here. */
coap_err coap_check_options(const struct coap_msg *m, uint16_t *bad);

/* value.c: uint option values (0..4 bytes, big-endian, leading zeros
 * accepted, written minimal: 0 is no bytes). */
bool coap_uint_get(const uint8_t *p, size_t len, uint32_t *v);
size_t coap_uint_put(uint8_t out[4], uint32_t v);
/* The first option num as a uint; false when absent or longer than 4. */
bool coap_opt_uint(const struct coap_msg *m, uint16_t num, uint32_t *v);

/* Block1/Block2 (RFC 7959): NUM (20 bits), M, SZX (size 2^(SZX+4)). */
struct coap_block {
    uint32_t num;
    bool more;
    uint8_t szx;
};
#define COAP_BLOCK_NUM_MAX 0xFFFFFu
#define COAP_BLOCK_SIZE(szx) ((size_t)16 << (szx))
/* False when longer than 3 bytes or SZX is 7 (reserved). */
bool coap_block_get(const uint8_t *p, size_t len, struct coap_block *b);
/* NUM fits in 20 bits and SZX is not 7. */
bool coap_block_valid(const struct coap_block *b);
/* The minimal form of a valid block (0 bytes for NUM 0, M 0, SZX 0). */
size_t coap_block_put(uint8_t out[3], const struct coap_block *b);

/* uri.c: the request's Uri-Path segments joined with '/' ("a/b/c"), NUL
 * terminated in out[cap]: the length, or -1 when it does not fit, a
 * segment holds a '/' or a NUL byte (which would make two topics look
 * alike), or a segment is "." or ".." (which a server may resolve into
 * another resource than the topic names).  No Uri-Path is "" (length 0). */
ssize_t coap_uri_path(const struct coap_msg *m, char *out, size_t cap);
/* The value of the first Uri-Query "name=value" whose name is name; a
 * query "name" alone matches with an empty value. */
bool coap_uri_query(const struct coap_msg *m, const char *name, coap_view *value);

/* encode.c: write m's header, token and payload, and opts (n of them,
 * sorted by number, ascending; repeats in order) into buf[cap].  The
 * length written, or -1 when it does not fit or when coap_decode would
 * refuse the message (token over 8 bytes, options out of order, an empty
 * message with anything after the header, coap_check_code), so that
 * whatever it writes decodes to the same message. */
ssize_t coap_encode(const struct coap_msg *m, const struct coap_opt *opts, size_t n, uint8_t *buf,
                    size_t cap);

/* answer.c: how to turn down a message (§4.2, §4.3, §5.4.1). */
enum coap_reject {
    COAP_REJECT_DROP,       /* say nothing */
    COAP_REJECT_RST,        /* a RST with the message's id */
    COAP_REJECT_BAD_OPTION, /* answer 4.02 (piggybacked in an ACK) */
};
enum coap_reject coap_reject_how(const struct coap_msg *m, coap_err err);
/* The header of mgate's answer to request req with code: a piggybacked
 * ACK (same id) to a CON, a NON with id non_mid to a NON; the token is the
 * request's; no payload (set it after).  Encode it with coap_encode. */
struct coap_msg coap_answer(const struct coap_msg *req, uint8_t code, uint16_t non_mid);
/* An empty message (RST or empty ACK) for id mid. */
struct coap_msg coap_empty(enum coap_type type, uint16_t mid);

#endif
