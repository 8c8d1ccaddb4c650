/*
 * MQTT 3.1 / 3.1.1 / 5.0 codec.
 *
 * Pure functions over byte buffers: no I/O, no allocation, no global state.
 * Decoded fields point into the caller's buffer (zero copy); they stay valid
 * only while that buffer is unchanged.  The encoder writes into a caller
 * buffer, snprintf style: it returns the size it needs and writes nothing
 * when the buffer is too small.
 *
 * Framing is separate from decoding so that the session can find packet
 * boundaries in a stream (split or coalesced at any byte) before it decodes.
 */
#ifndef MGATE_MQTT_H
#define MGATE_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/utf8.h"

enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
    MQTT_AUTH = 15,
};

/* Protocol levels as carried in CONNECT. */
enum mqtt_version {
    MQTT_V31 = 3,  /* protocol name "MQIsdp" */
    MQTT_V311 = 4, /* protocol name "MQTT" */
    MQTT_V5 = 5,   /* protocol name "MQTT" */
};

/* Result of framing and decoding. */
typedef enum mqtt_rc {
    MQTT_OK = 0,
    MQTT_NEED_MORE,      /* frame: not a whole packet yet */
    MQTT_MALFORMED,      /* v5 reason 0x81 */
    MQTT_PROTOCOL_ERROR, /* v5 reason 0x82 (e.g. duplicated property, wrong direction) */
    MQTT_TOO_LARGE,      /* v5 reason 0x95 */
    MQTT_BAD_VERSION,    /* CONNECT with unknown name/level pair: CONNACK 0x01 / 0x84 */
} mqtt_rc;

/* v5 reason codes mgate emits or inspects (3.1.1 CONNACK codes are 0..5). */
enum mqtt_reason {
    MQTT_RC_SUCCESS = 0x00,
    MQTT_RC_GRANTED_QOS1 = 0x01,
    MQTT_RC_GRANTED_QOS2 = 0x02,
    MQTT_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
    MQTT_RC_UNSPECIFIED = 0x80,
    MQTT_RC_MALFORMED = 0x81,
    MQTT_RC_PROTOCOL_ERROR = 0x82,
    MQTT_RC_IMPL_SPECIFIC = 0x83,
    MQTT_RC_UNSUPPORTED_VERSION = 0x84,
    MQTT_RC_BAD_CLIENT_ID = 0x85,
    MQTT_RC_BAD_USER_OR_PASSWORD = 0x86,
    MQTT_RC_NOT_AUTHORIZED = 0x87,
    MQTT_RC_SERVER_UNAVAILABLE = 0x88,
    MQTT_RC_SERVER_BUSY = 0x89,
    MQTT_RC_SERVER_SHUTTING_DOWN = 0x8B,
    MQTT_RC_KEEPALIVE_TIMEOUT = 0x8D,
    MQTT_RC_TOPIC_FILTER_INVALID = 0x8F,
    MQTT_RC_TOPIC_NAME_INVALID = 0x90,
    MQTT_RC_PACKET_TOO_LARGE = 0x95,
    MQTT_RC_MESSAGE_RATE_TOO_HIGH = 0x96,
    MQTT_RC_QUOTA_EXCEEDED = 0x97,
    MQTT_RC_TOPIC_ALIAS_INVALID = 0x94,
    MQTT_RC_MAXIMUM_CONNECT_TIME = 0xA0,
};

/* 3.1 / 3.1.1 CONNACK return codes. */
enum mqtt_v3_connack {
    MQTT3_ACCEPTED = 0,
    MQTT3_BAD_VERSION = 1,
    MQTT3_ID_REJECTED = 2,
    MQTT3_SERVER_UNAVAILABLE = 3,
    MQTT3_BAD_USER_OR_PASSWORD = 4,
    MQTT3_NOT_AUTHORIZED = 5,
};

/* v5 property identifiers. */
enum mqtt_prop_id {
    MQTT_PROP_PAYLOAD_FORMAT = 0x01,
    MQTT_PROP_MESSAGE_EXPIRY = 0x02,
    MQTT_PROP_CONTENT_TYPE = 0x03,
    MQTT_PROP_RESPONSE_TOPIC = 0x08,
    MQTT_PROP_CORRELATION_DATA = 0x09,
    MQTT_PROP_SUBSCRIPTION_ID = 0x0B,
    MQTT_PROP_SESSION_EXPIRY = 0x11,
    MQTT_PROP_ASSIGNED_CLIENT_ID = 0x12,
    MQTT_PROP_SERVER_KEEPALIVE = 0x13,
    MQTT_PROP_AUTH_METHOD = 0x15,
    MQTT_PROP_AUTH_DATA = 0x16,
    MQTT_PROP_REQUEST_PROBLEM_INFO = 0x17,
    MQTT_PROP_WILL_DELAY = 0x18,
    MQTT_PROP_REQUEST_RESPONSE_INFO = 0x19,
    MQTT_PROP_RESPONSE_INFO = 0x1A,
    MQTT_PROP_SERVER_REFERENCE = 0x1C,
    MQTT_PROP_REASON_STRING = 0x1F,
    MQTT_PROP_RECEIVE_MAX = 0x21,
    MQTT_PROP_TOPIC_ALIAS_MAX = 0x22,
    MQTT_PROP_TOPIC_ALIAS = 0x23,
    MQTT_PROP_MAX_QOS = 0x24,
    MQTT_PROP_RETAIN_AVAILABLE = 0x25,
    MQTT_PROP_USER_PROPERTY = 0x26,
    MQTT_PROP_MAX_PACKET_SIZE = 0x27,
    MQTT_PROP_WILDCARD_SUB_AVAILABLE = 0x28,
    MQTT_PROP_SUB_ID_AVAILABLE = 0x29,
    MQTT_PROP_SHARED_SUB_AVAILABLE = 0x2A,
};

/* A length-delimited byte string inside a buffer (not NUL-terminated). */
typedef struct mqtt_str {
    const uint8_t *p;
    uint32_t len;
} mqtt_str;

/*
 * A v5 property block.  `raw`/`raw_len` is the block without its length
 * prefix, kept so that unchanged properties are re-emitted byte for byte.
 * raw is NULL when the packet carries no block at all (3.x, v5 short forms).
 * The few values the proxy acts on are also extracted; `has` is a bitmask of
 * (1u << MQTT_PROPBIT_x) telling which of them were present.
 */
enum mqtt_propbit {
    MQTT_PROPBIT_TOPIC_ALIAS,
    MQTT_PROPBIT_TOPIC_ALIAS_MAX,
    MQTT_PROPBIT_RECEIVE_MAX,
    MQTT_PROPBIT_MAX_PACKET_SIZE,
    MQTT_PROPBIT_SESSION_EXPIRY,
    MQTT_PROPBIT_AUTH_METHOD,
    MQTT_PROPBIT_SUBSCRIPTION_ID, /* at least one; values stay in raw */
};
typedef struct mqtt_props {
    const uint8_t *raw;
    uint32_t raw_len;
    uint32_t has;
    uint16_t topic_alias;
    uint16_t topic_alias_max;
    uint16_t receive_max;
    uint32_t max_packet_size;
    uint32_t session_expiry;
} mqtt_props;

struct mqtt_connect {
    uint8_t version;     /* MQTT_V31, MQTT_V311, MQTT_V5 */
    uint8_t flags;       /* raw connect flags byte */
    bool clean_start;
    bool has_will, will_retain;
    uint8_t will_qos;
    bool has_username, has_password;
    uint16_t keepalive;
    mqtt_props props;
    mqtt_str client_id;
    mqtt_props will_props;
    mqtt_str will_topic;
    mqtt_str will_payload;
    mqtt_str username;
    mqtt_str password;
};

struct mqtt_connack {
    bool session_present;
    uint8_t rc; /* 3.1.1 return code or v5 reason code */
    mqtt_props props;
};

struct mqtt_publish {
    uint8_t qos;
    bool dup, retain;
    mqtt_str topic; /* may be empty in v5 when props.topic_alias is set */
    uint16_t id;    /* 0 when qos == 0 */
    mqtt_props props;
    mqtt_str payload;
};

/*
 * How much of an optional v5 tail (reason code, then property length) is on
 * the wire in PUBACK..PUBCOMP, DISCONNECT and AUTH.  The spec allows several
 * encodings of "success, no properties"; the decoder records which one it
 * saw so that re-encoding reproduces the packet.  The encoder treats `form`
 * as a minimum: it writes at least what rc and props need, so a zeroed
 * struct (MQTT_FORM_AUTO) gets the shortest form.
 */
enum mqtt_form {
    MQTT_FORM_AUTO = 0, /* shortest form that carries rc and props */
    MQTT_FORM_BARE,     /* no reason code, no properties */
    MQTT_FORM_RC,       /* reason code, no property length */
    MQTT_FORM_FULL,     /* reason code and property block (maybe empty) */
};

/* PUBACK, PUBREC, PUBREL, PUBCOMP. rc is 0 when absent (v5 short form). */
struct mqtt_ack {
    uint16_t id;
    uint8_t rc;
    uint8_t form; /* enum mqtt_form, v5 only */
    mqtt_props props;
};

/*
 * SUBSCRIBE and UNSUBSCRIBE.  `list` spans the payload: for SUBSCRIBE a
 * sequence of (string filter, options byte), for UNSUBSCRIBE of strings.
 * Walk it with mqtt_sub_next / mqtt_unsub_next.  `count` >= 1.
 */
struct mqtt_subscribe {
    uint16_t id;
    mqtt_props props;
    const uint8_t *list;
    uint32_t list_len;
    uint32_t count;
};

/* SUBACK and UNSUBACK: one code per filter (UNSUBACK in 3.1.1 has none). */
struct mqtt_suback {
    uint16_t id;
    mqtt_props props;
    const uint8_t *codes;
    uint32_t count;
};

/* DISCONNECT and AUTH. rc is 0 when absent. */
struct mqtt_disconnect {
    uint8_t rc;
    uint8_t form; /* enum mqtt_form, v5 only */
    mqtt_props props;
};

struct mqtt_packet {
    uint8_t type;  /* enum mqtt_type */
    uint8_t flags; /* low nibble of the fixed header */
    union {
        struct mqtt_connect connect;
        struct mqtt_connack connack;
        struct mqtt_publish publish;
        struct mqtt_ack ack;
        struct mqtt_subscribe subscribe; /* SUBSCRIBE, UNSUBSCRIBE */
        struct mqtt_suback suback;       /* SUBACK, UNSUBACK */
        struct mqtt_disconnect disconnect; /* DISCONNECT, AUTH */
    };
};

/* ---- framing ---------------------------------------------------------- */

/*
 * Find the first packet in buf[0..len).  On MQTT_OK, *total is the whole
 * packet's size (fixed header included).  MQTT_NEED_MORE: not enough bytes
 * yet (*total is set when the header is complete, else 0).  MQTT_MALFORMED:
 * a remaining length longer than 4 bytes or not in its shortest encoding
 * (MQTT 5 requires it, and re-encoding could not reproduce it).
 * MQTT_TOO_LARGE (*total set): total would
 * exceed max_size (checked as soon as the header is known, so an oversized
 * packet is refused before it is buffered).
 */
mqtt_rc mqtt_frame(const uint8_t *buf, size_t len, size_t max_size, size_t *total);

/* ---- decoding --------------------------------------------------------- */

/*
 * Decode one whole packet (as framed by mqtt_frame).  `version` is the
 * session's protocol level (ignored for CONNECT, which carries its own).
 * `from_client` tells the direction: packet types a peer may not send in
 * that direction (CONNACK from a client, CONNECT from a server, AUTH before
 * v5, ...) are MQTT_PROTOCOL_ERROR.  Validates everything the specs require:
 * reserved flag bits, QoS 3, DUP on QoS 0, zero packet identifiers, UTF-8
 * (well formed, no U+0000, no surrogates), wildcards in PUBLISH topics,
 * filter syntax and subscription options, properties allowed for the packet
 * type and not duplicated, protocol name/level pairs, no trailing bytes.
 *
 * Which error: where the spec names the class (e.g. reserved bits, bad UTF-8,
 * QoS 3 in PUBLISH are Malformed; QoS 3 in v5 subscription options is a
 * Protocol Error) it is followed.  Otherwise bytes that do not parse as the
 * packet's grammar (lengths, truncation, trailing bytes, varints, flag bits,
 * the CONNECT flags byte, unknown property ids) are MQTT_MALFORMED, and a
 * well-formed packet that breaks a rule (direction, zero packet identifier,
 * property not allowed / duplicated / out of range, wildcards, filter
 * syntax, empty filter list, reason code not defined for the packet, a
 * protocol name that is not MQTT's) is MQTT_PROTOCOL_ERROR.
 * MQTT_BAD_VERSION still fills connect.version with the requested level, so
 * the caller can pick the CONNACK layout.
 */
mqtt_rc mqtt_decode(const uint8_t *buf, size_t total, uint8_t version, bool from_client,
                    struct mqtt_packet *out);

/* Iterate a SUBSCRIBE payload; *off starts at 0. Returns false at the end. */
bool mqtt_sub_next(const struct mqtt_subscribe *s, uint32_t *off, mqtt_str *filter,
                   uint8_t *options);
/* Iterate an UNSUBSCRIBE payload; *off starts at 0. Returns false at the end. */
bool mqtt_unsub_next(const struct mqtt_subscribe *s, uint32_t *off, mqtt_str *filter);

/* Validation helpers shared with handlers and ACL code. */
static inline bool mqtt_utf8_valid(const uint8_t *p, size_t len) { return utf8_valid(p, len, false); }
bool mqtt_topic_name_valid(const uint8_t *p, size_t len);   /* no wildcards, non-empty */
bool mqtt_topic_filter_valid(const uint8_t *p, size_t len); /* wildcard placement */

/* Find a property in a raw block. Returns true and sets *val (pointer to the
 * value bytes, after the identifier) for the first occurrence. */
bool mqtt_props_find(const uint8_t *raw, uint32_t raw_len, uint8_t id, const uint8_t **val);

/* Size of the one property (identifier and value) at p[0..left), 0 when
 * its identifier is unknown or its value overruns: to walk a raw block. */
uint32_t mqtt_prop_size(const uint8_t *p, uint32_t left);

/*
 * Every value of a raw property block (one mqtt_decode accepted), for code
 * that shows them (the handler API's mgate_properties).  Strings point into
 * the block.  User properties and subscription identifiers go to caller
 * arrays: at most user_cap / ids_cap are written, the counts are always
 * the whole counts (call with caps 0 to size them).  `has` has bit
 * (1ull << id) for each property identifier present.
 */
struct mqtt_user_prop {
    mqtt_str name, value;
};
struct mqtt_prop_values {
    uint64_t has;
    struct mqtt_user_prop *user;
    uint32_t user_count;
    uint32_t *sub_ids;
    uint32_t sub_id_count;
    uint8_t payload_format;
    uint16_t receive_max, topic_alias_max;
    uint32_t message_expiry, will_delay, session_expiry, max_packet_size;
    mqtt_str content_type, response_topic, correlation_data, auth_method, auth_data;
};
#define MQTT_PROP_HAS(v, id) (((v)->has >> (id)) & 1u)
/* false: the block does not parse (out is then partly filled). */
bool mqtt_prop_values(const uint8_t *raw, uint32_t raw_len, struct mqtt_prop_values *out,
                      struct mqtt_user_prop *user, uint32_t user_cap, uint32_t *ids, uint32_t ids_cap);

/*
 * A PUBLISH's (or will's) property block with its user properties, content
 * type and response topic replaced: every other property is copied as it
 * came, in order; the new user properties take the place of the first old
 * one (or go last), a content type or response topic the place of the old
 * one (or last), so an edit that changes nothing gives the block back byte
 * for byte.  Returns the new block's size (without its length prefix) and
 * writes it to out only when cap is enough; 0 with *bad set when it cannot
 * be encoded (a string over 65535 bytes).  out must not overlap raw.
 * With response_topic_only, the user properties and content type stay as
 * they came too (a mount point moves just the response topic).
 */
struct mqtt_prop_edit {
    const struct mqtt_user_prop *user;
    uint32_t user_count;
    bool has_content_type, has_response_topic;
    mqtt_str content_type, response_topic;
    bool response_topic_only;
};
size_t mqtt_props_edit(const uint8_t *raw, uint32_t raw_len, const struct mqtt_prop_edit *e, uint8_t *out,
                       size_t cap, bool *bad);

/* Building blocks of mqtt_decode, usable on their own. */

/* Read a variable byte integer from p[0..len): MQTT_OK with *v and *used,
 * MQTT_NEED_MORE when it runs past len, MQTT_MALFORMED when longer than 4
 * bytes or not minimally encoded. */
mqtt_rc mqtt_varint_get(const uint8_t *p, size_t len, uint32_t *v, uint32_t *used);

/* Parse and validate a v5 property block starting at its length prefix,
 * for packet type `type` (or MQTT_PROPS_WILL for CONNECT's will properties).
 * On MQTT_OK fills *out and sets *used to the bytes taken, prefix included. */
enum { MQTT_PROPS_WILL = 0 };
mqtt_rc mqtt_props_parse(const uint8_t *p, size_t len, uint8_t type, mqtt_props *out,
                         uint32_t *used);

/* Is rc a return/reason code that packet `type` may carry at `version`?
 * (CONNACK, PUBACK..PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH.) */
bool mqtt_reason_valid(uint8_t type, uint8_t version, uint8_t rc);

/* ---- encoding --------------------------------------------------------- */

/*
 * Each encoder returns the number of bytes the packet needs and writes it
 * to out only when cap is large enough.  `version` selects 3.1/3.1.1 or 5.0
 * layout (properties, reason codes).  Properties are written from the
 * mqtt_props raw block (raw_len 0 writes an empty block).  CONNECT uses its
 * own connect.version (`version` when that is 0) and builds the flags byte
 * from the booleans.  Returns 0 for a packet that cannot be encoded (unknown
 * type, AUTH before v5, PUBLISH QoS 3, a string over 65535 bytes, a packet
 * over 256 MB).
 */
size_t mqtt_encode(const struct mqtt_packet *pkt, uint8_t version, uint8_t *out, size_t cap);

/* Copy a property block, leaving out every property with identifier `drop`.
 * Returns the bytes written (never more than raw_len); out may be raw. */
uint32_t mqtt_props_without(const uint8_t *raw, uint32_t raw_len, uint8_t drop, uint8_t *out);

/* Write one property into out (which must have room: at most 7 + len bytes
 * for strings). Return bytes written. */
uint32_t mqtt_prop_put_u8(uint8_t *out, uint8_t id, uint8_t v);
uint32_t mqtt_prop_put_u16(uint8_t *out, uint8_t id, uint16_t v);
uint32_t mqtt_prop_put_u32(uint8_t *out, uint8_t id, uint32_t v);
uint32_t mqtt_prop_put_str(uint8_t *out, uint8_t id, const uint8_t *p, uint16_t len);

/* Variable byte integer: size of, and write (returns bytes written); both
 * return 0 for values above 268435455, which have no encoding. */
uint32_t mqtt_varint_size(uint32_t v);
uint32_t mqtt_varint_put(uint8_t *out, uint32_t v);

/* Convenience encoders for packets the proxy originates. */
size_t mqtt_encode_connack(uint8_t version, bool session_present, uint8_t rc, uint8_t *out,
                           size_t cap);
size_t mqtt_encode_ack(uint8_t type, uint8_t version, uint16_t id, uint8_t rc, uint8_t *out,
                       size_t cap); /* PUBACK/PUBREC/PUBREL/PUBCOMP */
size_t mqtt_encode_disconnect(uint8_t version, uint8_t rc, uint8_t *out, size_t cap);

/* Names for logs. */
const char *mqtt_type_name(uint8_t type);
const char *mqtt_rc_name(mqtt_rc rc);

#endif
