/*
 * MQTT codec: byte-exact round trips of every packet type in every version,
 * struct round trips, and a table of invalid packets with the exact verdict.
 *
 * Packets are written as text so that lengths cannot drift from contents:
 * hex bytes, 'ascii', s'ascii' (with its two-byte length) and { ... } for a
 * group prefixed with its variable byte length (remaining length, property
 * blocks).
 */
#include <ctype.h>
#include <stdlib.h>

#include "check.h"
#include "mqtt/mqtt.h"

#define C true  /* sent by the client */
#define S false /* sent by the server */

static void die(const char *what, const char *at)
{
    fprintf(stderr, "bad test packet (%s) at: %s\n", what, at);
    exit(2);
}

static void emit(uint8_t *out, size_t *n, size_t cap, const void *p, size_t len)
{
    if (*n + len > cap)
        die("too long", "");
    memcpy(out + *n, p, len);
    *n += len;
}

static size_t parse_seq(const char **sp, uint8_t *out, size_t cap, char close);

static void parse_group(const char **sp, uint8_t *out, size_t *n, size_t cap)
{
    uint8_t inner[1024], len[4];
    size_t m = parse_seq(sp, inner, sizeof inner, '}');

    emit(out, n, cap, len, mqtt_varint_put(len, (uint32_t)m));
    emit(out, n, cap, inner, m);
}

static void parse_text(const char **sp, uint8_t *out, size_t *n, size_t cap, bool prefixed)
{
    const char *end = strchr(*sp, '\'');
    if (!end)
        die("unterminated string", *sp);
    size_t m = (size_t)(end - *sp);
    uint8_t len[2] = {(uint8_t)(m >> 8), (uint8_t)m};
    if (prefixed)
        emit(out, n, cap, len, 2);
    emit(out, n, cap, *sp, m);
    *sp = end + 1;
}

static size_t parse_seq(const char **sp, uint8_t *out, size_t cap, char close)
{
    const char *s = *sp;
    size_t n = 0;

    for (;;) {
        while (*s == ' ')
            s++;
        if (*s == close)
            break;
        if (*s == '\0')
            die("unbalanced", *sp);
        if (*s == '{') {
            s++;
            parse_group(&s, out, &n, cap);
        } else if (*s == '\'' || (s[0] == 's' && s[1] == '\'')) {
            s += s[0] == 's' ? 2 : 1;
            parse_text(&s, out, &n, cap, s[-2] == 's');
        } else if (isxdigit((unsigned char)s[0]) && isxdigit((unsigned char)s[1]) &&
                   strchr(" }", s[2])) { /* strchr also matches the final NUL */
            uint8_t b = (uint8_t)strtoul((char[3]){s[0], s[1], 0}, NULL, 16);
            emit(out, &n, cap, &b, 1);
            s += 2;
        } else {
            die("unknown token", s);
        }
    }
    *sp = close ? s + 1 : s;
    return n;
}

static size_t bytes(const char *text, uint8_t *out, size_t cap)
{
    return parse_seq(&text, out, cap, '\0');
}

/* ---- field comparison ---------------------------------------------------- */

static bool str_eq(mqtt_str a, mqtt_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* `exact`: both sides came from the decoder, so the derived fields (has
 * bits, extracted values, raw flags, wire form) must match too. */
static bool props_eq(const mqtt_props *a, const mqtt_props *b, bool exact)
{
    if (a->raw_len != b->raw_len || (a->raw_len && memcmp(a->raw, b->raw, a->raw_len)))
        return false;
    return !exact || (a->has == b->has && a->topic_alias == b->topic_alias &&
                      a->topic_alias_max == b->topic_alias_max &&
                      a->receive_max == b->receive_max &&
                      a->max_packet_size == b->max_packet_size &&
                      a->session_expiry == b->session_expiry && !a->raw == !b->raw);
}

static bool connect_eq(const struct mqtt_connect *a, const struct mqtt_connect *b, bool exact)
{
    return a->version == b->version && (!exact || a->flags == b->flags) &&
           a->clean_start == b->clean_start && a->has_will == b->has_will &&
           a->will_retain == b->will_retain && a->will_qos == b->will_qos &&
           a->has_username == b->has_username && a->has_password == b->has_password &&
           a->keepalive == b->keepalive && props_eq(&a->props, &b->props, exact) &&
           str_eq(a->client_id, b->client_id) &&
           props_eq(&a->will_props, &b->will_props, exact) &&
           str_eq(a->will_topic, b->will_topic) && str_eq(a->will_payload, b->will_payload) &&
           str_eq(a->username, b->username) && str_eq(a->password, b->password);
}

static bool body_eq(const struct mqtt_packet *a, const struct mqtt_packet *b, bool exact)
{
    switch (a->type) {
    case MQTT_CONNECT:
        return connect_eq(&a->connect, &b->connect, exact);
    case MQTT_CONNACK:
        return a->connack.session_present == b->connack.session_present &&
               a->connack.rc == b->connack.rc &&
               props_eq(&a->connack.props, &b->connack.props, exact);
    case MQTT_PUBLISH:
        return a->publish.qos == b->publish.qos && a->publish.dup == b->publish.dup &&
               a->publish.retain == b->publish.retain &&
               str_eq(a->publish.topic, b->publish.topic) && a->publish.id == b->publish.id &&
               props_eq(&a->publish.props, &b->publish.props, exact) &&
               str_eq(a->publish.payload, b->publish.payload);
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return a->ack.id == b->ack.id && a->ack.rc == b->ack.rc &&
               (!exact || a->ack.form == b->ack.form) &&
               props_eq(&a->ack.props, &b->ack.props, exact);
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        return a->subscribe.id == b->subscribe.id && a->subscribe.count == b->subscribe.count &&
               props_eq(&a->subscribe.props, &b->subscribe.props, exact) &&
               str_eq((mqtt_str){a->subscribe.list, a->subscribe.list_len},
                      (mqtt_str){b->subscribe.list, b->subscribe.list_len});
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        return a->suback.id == b->suback.id &&
               props_eq(&a->suback.props, &b->suback.props, exact) &&
               str_eq((mqtt_str){a->suback.codes, a->suback.count},
                      (mqtt_str){b->suback.codes, b->suback.count});
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        return a->disconnect.rc == b->disconnect.rc &&
               (!exact || a->disconnect.form == b->disconnect.form) &&
               props_eq(&a->disconnect.props, &b->disconnect.props, exact);
    }
    return true; /* PINGREQ, PINGRESP: nothing but the type */
}

static bool pkt_eq(const struct mqtt_packet *a, const struct mqtt_packet *b, bool exact)
{
    return a->type == b->type && (!exact || a->flags == b->flags) && body_eq(a, b, exact);
}

/* ---- decode -> encode -> identical bytes ------------------------------- */

struct wire {
    uint8_t v;
    bool c;
    const char *text;
};

static const struct wire wires[] = {
    /* MQTT 3.1 */
    {3, C, "10 { s'MQIsdp' 03 02 00 3c s'abcd' }"},
    {3, C, "10 { s'MQIsdp' 03 ee 00 0a s'cid' s'will/t' s'bye' s'user' s'pw' }"},
    {3, S, "20 02 00 00"},
    {3, S, "20 02 00 05"},
    {3, C, "30 { s'a/b' 'hi' }"},
    {3, S, "3b { s'a/b' 00 07 'payload' }"},
    {3, C, "40 02 00 01"},
    {3, S, "50 02 00 02"},
    {3, C, "62 02 00 03"},
    {3, S, "70 02 00 04"},
    {3, C, "82 { 00 0a s'a/+' 01 s'#' 02 }"},
    {3, S, "90 { 00 0a 01 80 }"},
    {3, C, "a2 { 00 0b s'a/+' s'b' }"},
    {3, S, "b0 02 00 0b"},
    {3, C, "c0 00"},
    {3, S, "d0 00"},
    {3, C, "e0 00"},
    /* MQTT 3.1.1 */
    {4, C, "10 { s'MQTT' 04 c2 00 3c s'' s'u' s'p' }"},
    {4, C, "10 { s'MQTT' 04 16 00 00 s'id' s'w' s'' }"},
    {4, C, "10 { s'MQTT' 04 80 ff ff s'id' s'user-only' }"},
    {4, S, "20 02 01 00"},
    {4, S, "20 02 00 02"},
    {4, C, "30 { s'a/b' }"},
    {4, S, "34 { s'x' 12 34 }"},
    {4, C, "3d { s'$SYS/x' ff ff 00 01 02 }"},
    {4, C, "40 02 ff ff"},
    {4, S, "50 02 00 02"},
    {4, C, "62 02 00 03"},
    {4, S, "70 02 00 04"},
    {4, C, "82 { 00 01 s'a/b/c' 00 s'+/+' 01 s'/#' 02 }"},
    {4, S, "90 { 00 01 00 01 02 80 }"},
    {4, C, "a2 { 00 02 s'#' }"},
    {4, S, "b0 02 00 02"},
    {4, C, "c0 00"},
    {4, S, "d0 00"},
    {4, C, "e0 00"},
    /* MQTT 5.0 */
    {5, C, "10 { s'MQTT' 05 02 00 3c { 11 00 00 00 0a 21 00 14 22 00 0a 27 00 00 10 00"
           " 26 s'k' s'v' 26 s'k' s'w' 17 01 19 01 15 s'SCRAM' 16 s'data' } s'cid' }"},
    {5, C, "10 { s'MQTT' 05 46 00 00 { } s'c' { 01 01 02 00 00 00 3c 03 s'text/plain'"
           " 08 s'resp/t' 09 s'corr' 18 00 00 00 05 26 s'a' s'b' } s'will' s'msg' s'pw' }"},
    {5, C, "10 { s'MQTT' 05 f6 ff ff { } s'' { } s'w/t' s'' s'u' s'p' }"},
    {5, S, "20 { 01 00 { 11 00 00 00 00 12 s'assigned' 13 00 1e 15 s'm' 16 s'd' 1a s'ri'"
           " 1c s'srv' 1f s'why' 21 00 0a 22 00 05 24 01 25 00 26 s'x' s'y' 27 00 01 00 00"
           " 28 01 29 00 2a 01 } }"},
    {5, S, "20 { 00 87 { 1f s'no' } }"},
    {5, S, "20 03 00 9f 00"},
    {5, S, "32 { s'a/b' 00 05 { 01 01 02 00 00 00 3c 03 s'ct' 08 s'r/t' 09 s'cd'"
           " 26 s'k' s'v' 0b 05 0b 81 01 23 00 07 } 'data' }"},
    {5, C, "30 { s'' { 23 00 01 } 'x' }"},
    {5, C, "30 { s't' 00 }"},
    {5, C, "3c { s't' 00 09 { 23 ff ff } }"},
    {5, C, "40 02 00 01"},
    {5, S, "40 03 00 01 10"},
    {5, C, "40 03 00 01 00"},
    {5, S, "40 04 00 01 00 00"},
    {5, C, "40 { 00 01 80 { 1f s'err' 26 s'a' s'b' } }"},
    {5, S, "50 { 00 02 10 { } }"},
    {5, C, "62 03 00 03 92"},
    {5, S, "62 02 00 03"},
    {5, C, "70 { 00 04 00 { 1f s'ok' } }"},
    {5, C, "82 { 00 01 { 0b 01 26 s'a' s'b' } s'a/#' 2e s'+' 00 s'x' 1c }"},
    {5, C, "82 { 00 02 { 0b ff ff ff 7f } s'a' 02 }"},
    {5, C, "82 { 00 03 00 s'$share/g/a/#' 02 s'$share/g/+' 00 s'$shared/g' 04 s'$share' 04 }"},
    {5, C, "a2 { 00 03 00 s'$share/g/a/#' }"},
    {4, C, "82 { 00 03 s'$share/g' 00 s'$share/+/a' 01 }"},
    {5, S, "90 { 00 01 { 1f s'r' } 00 01 02 80 83 87 8f 91 97 9e a1 a2 }"},
    {5, C, "a2 { 00 02 { 26 s'k' s'v' } s'a' s'b/+' }"},
    {5, S, "b0 { 00 02 { } 00 11 80 83 87 8f 91 }"},
    {5, C, "c0 00"},
    {5, S, "d0 00"},
    {5, C, "e0 00"},
    {5, C, "e0 01 04"},
    {5, C, "e0 01 00"},
    {5, S, "e0 02 00 00"},
    {5, S, "e0 { 8b { 1f s'bye' 1c s'other' } }"},
    {5, C, "e0 { 00 { 11 00 00 00 10 26 s'k' s'v' } }"},
    {5, C, "f0 00"},
    {5, S, "f0 01 00"},
    {5, C, "f0 { 18 { 15 s'SCRAM' 16 s'x' } }"},
    {5, S, "f0 { 19 { 15 s'SCRAM' 1f s'more' } }"},
};

static void wire_roundtrip(const struct wire *w)
{
    uint8_t in[1024], out[1024];
    struct mqtt_packet p, q;
    size_t total = 0, len = bytes(w->text, in, sizeof in);
    int before = check_failures;

    CHECK_EQ_INT(mqtt_frame(in, len, sizeof in, &total), MQTT_OK);
    CHECK_EQ_INT(total, len);
    CHECK_EQ_INT(mqtt_decode(in, len, w->v, w->c, &p), MQTT_OK);
    CHECK_EQ_INT(p.type, in[0] >> 4);
    /* too small: the size it needs, and not a byte written */
    memset(out, 0xA5, sizeof out);
    CHECK_EQ_INT(mqtt_encode(&p, w->v, out, len - 1), len);
    CHECK(out[0] == 0xA5 && out[len - 2] == 0xA5);
    CHECK_EQ_INT(mqtt_encode(&p, w->v, out, sizeof out), len);
    CHECK(memcmp(in, out, len) == 0);
    CHECK_EQ_INT(mqtt_decode(out, len, w->v, w->c, &q), MQTT_OK);
    CHECK(pkt_eq(&p, &q, true));
    if (check_failures != before)
        fprintf(stderr, "  in packet v%u: %s\n", w->v, w->text);
}

/* ---- invalid packets --------------------------------------------------- */

struct bad {
    uint8_t v;
    bool c;
    mqtt_rc want;
    const char *text;
};

#define MAL MQTT_MALFORMED
#define PROTO MQTT_PROTOCOL_ERROR
#define BADV MQTT_BAD_VERSION

static const struct bad bads[] = {
    /* fixed header */
    {4, C, MAL, "00 00"},                         /* reserved type 0 */
    {4, C, MAL, "c0 80 00"},                      /* remaining length not minimal */
    {4, C, MAL, "c0 01"},                         /* remaining length past the end */
    {4, C, MAL, "11 { s'MQTT' 04 02 00 3c s'a' }"}, /* CONNECT flags */
    {4, S, MAL, "21 02 00 00"},
    {4, C, MAL, "32 { s'a' 00 01 } 00"},        /* trailing byte beyond RL */
    {4, C, MAL, "36 { s'a' 00 01 }"},             /* PUBLISH QoS 3 */
    {5, C, MAL, "3e { s'a' 00 01 00 }"},
    {4, C, MAL, "38 { s'a' }"},                   /* DUP with QoS 0 */
    {5, C, MAL, "39 { s'a' 00 }"},
    {4, C, MAL, "42 02 00 01"},                   /* PUBACK flags */
    {4, C, MAL, "58 02 00 01"},
    {4, C, MAL, "60 02 00 01"},                   /* PUBREL must be 0x2 */
    {5, C, MAL, "63 02 00 01"},
    {4, C, MAL, "72 02 00 01"},
    {4, C, MAL, "80 { 00 01 s'a' 00 }"},          /* SUBSCRIBE must be 0x2 */
    {4, C, MAL, "8a { 00 01 s'a' 00 }"},
    {4, S, MAL, "92 { 00 01 00 }"},
    {4, C, MAL, "a0 { 00 01 s'a' }"},             /* UNSUBSCRIBE must be 0x2 */
    {4, S, MAL, "b1 02 00 01"},
    {4, C, MAL, "c1 00"},
    {4, S, MAL, "d8 00"},
    {4, C, MAL, "e2 00"},
    {5, C, MAL, "f4 00"},
    /* direction and version */
    {4, C, PROTO, "20 02 00 00"},
    {4, C, PROTO, "90 03 00 01 00"},
    {4, C, PROTO, "b0 02 00 01"},
    {4, C, PROTO, "d0 00"},
    {5, C, PROTO, "20 03 00 00 00"},
    {4, S, PROTO, "10 { s'MQTT' 04 02 00 3c s'a' }"},
    {4, S, PROTO, "82 { 00 01 s'a' 00 }"},
    {4, S, PROTO, "a2 { 00 01 s'a' }"},
    {4, S, PROTO, "c0 00"},
    {4, S, PROTO, "e0 00"},                       /* servers disconnect only in v5 */
    {4, C, PROTO, "f0 00"},                       /* AUTH before v5 */
    {3, S, PROTO, "f0 00"},
    {0, C, PROTO, "f0 00"},
    /* packet identifiers */
    {4, C, PROTO, "32 { s'a' 00 00 }"},
    {5, C, PROTO, "34 { s'a' 00 00 00 }"},
    {4, C, PROTO, "40 02 00 00"},
    {5, S, PROTO, "50 02 00 00"},
    {3, C, PROTO, "62 02 00 00"},
    {5, S, PROTO, "70 03 00 00 00"},
    {4, C, PROTO, "82 { 00 00 s'a' 00 }"},
    {4, S, PROTO, "90 { 00 00 00 }"},
    {4, C, PROTO, "a2 { 00 00 s'a' }"},
    {4, S, PROTO, "b0 02 00 00"},
    {5, S, PROTO, "b0 { 00 00 00 00 }"},
    /* UTF-8 in every kind of string */
    {4, C, MAL, "30 { 00 02 c0 80 }"},            /* overlong NUL */
    {4, C, MAL, "30 { 00 03 61 00 62 }"},         /* U+0000 */
    {5, C, MAL, "30 { 00 03 ed a0 80 00 }"},      /* surrogate */
    {4, C, MAL, "30 { 00 04 f4 90 80 80 }"},      /* above U+10FFFF */
    {4, C, MAL, "30 { 00 02 e2 82 }"},            /* truncated sequence */
    {4, C, MAL, "10 { s'MQTT' 04 02 00 3c 00 01 ff }"},
    {4, C, MAL, "10 { s'MQTT' 04 06 00 3c s'a' 00 01 80 s'' }"},
    {4, C, MAL, "10 { s'MQTT' 04 82 00 3c s'a' 00 02 c1 bf }"},
    {5, C, MAL, "82 { 00 01 00 00 01 fe 00 }"},
    {4, C, MAL, "a2 { 00 01 00 02 ed bf }"},
    {5, C, MAL, "30 { s'a' { 03 00 01 ff } }"},          /* content type */
    {5, C, MAL, "30 { s'a' { 08 00 01 ff } }"},          /* response topic */
    {5, C, MAL, "30 { s'a' { 26 00 01 ff s'v' } }"},     /* user property name */
    {5, C, MAL, "30 { s'a' { 26 s'k' 00 01 00 } }"},     /* user property value */
    {5, S, MAL, "40 { 00 01 80 { 1f 00 01 ff } }"},      /* reason string */
    {5, C, MAL, "10 { s'MQTT' 05 02 00 00 { 15 00 01 ff } s'a' }"}, /* auth method */
    {5, S, MAL, "20 { 00 00 { 12 00 01 ff } }"},         /* assigned client id */
    {5, S, MAL, "20 { 00 00 { 1a 00 01 ff } }"},         /* response information */
    {5, S, MAL, "e0 { 9c { 1c 00 01 ff } }"},            /* server reference */
    /* topic names */
    {4, C, PROTO, "30 { s'a/+' }"},
    {4, C, PROTO, "30 { s'a/#' }"},
    {5, S, PROTO, "30 { s'+' 00 }"},
    {4, C, PROTO, "30 { s'' 'x' }"},              /* empty topic before v5 */
    {5, C, PROTO, "30 { s'' 00 'x' }"},           /* empty topic, no alias */
    {5, C, PROTO, "30 { s'a' { 23 00 00 } }"},    /* topic alias 0 */
    {4, C, PROTO, "10 { s'MQTT' 04 06 00 3c s'a' s'w/#' s'' }"}, /* will topic */
    {4, C, PROTO, "10 { s'MQTT' 04 06 00 3c s'a' s'' s'' }"},
    {5, C, PROTO, "30 { s'a' { 08 s'r/+' } }"},   /* response topic */
    {5, C, PROTO, "10 { s'MQTT' 05 06 00 00 { } s'a' { 08 s'#' } s'w' s'' }"},
    /* topic filters */
    {4, C, PROTO, "82 { 00 01 s'' 00 }"},
    {4, C, PROTO, "82 { 00 01 s'a/#/b' 00 }"},
    {4, C, PROTO, "82 { 00 01 s'a#' 00 }"},
    {4, C, PROTO, "82 { 00 01 s'a/b+' 00 }"},
    {5, C, PROTO, "82 { 00 01 00 s'ok' 00 s'+a' 00 }"},
    {4, C, PROTO, "a2 { 00 01 s'#/a' }"},
    /* shared subscriptions (v5) */
    {5, C, PROTO, "82 { 00 01 00 s'$share/g' 00 }"},
    {5, C, PROTO, "82 { 00 01 00 s'$share/g/' 00 }"},
    {5, C, PROTO, "82 { 00 01 00 s'$share//a' 00 }"},
    {5, C, PROTO, "82 { 00 01 00 s'$share/+/a' 00 }"},
    {5, C, PROTO, "82 { 00 01 00 s'$share/g/a' 04 }"}, /* No Local */
    {5, C, PROTO, "a2 { 00 01 00 s'$share/g' }"},
    {5, C, PROTO, "a2 { 00 01 00 s'a' s'' }"},
    /* subscription options */
    {4, C, MAL, "82 { 00 01 s'a' 03 }"},          /* QoS 3 */
    {3, C, MAL, "82 { 00 01 s'a' 04 }"},          /* v5 bits before v5 */
    {4, C, MAL, "82 { 00 01 s'a' 80 }"},
    {5, C, PROTO, "82 { 00 01 00 s'a' 03 }"},
    {5, C, PROTO, "82 { 00 01 00 s'a' 30 }"},     /* retain handling 3 */
    {5, C, MAL, "82 { 00 01 00 s'a' 40 }"},       /* reserved bits */
    {5, C, MAL, "82 { 00 01 00 s'a' 80 }"},
    /* filter lists */
    {4, C, PROTO, "82 02 00 01"},                 /* no filter */
    {5, C, PROTO, "82 03 00 01 00"},
    {4, C, PROTO, "a2 02 00 01"},
    {5, C, PROTO, "a2 03 00 01 00"},
    {4, C, MAL, "82 { 00 01 s'a' }"},             /* options byte missing */
    {4, C, MAL, "82 { 00 01 00 05 'ab' }"},       /* filter overruns */
    {4, C, MAL, "a2 { 00 01 s'a' 00 }"},          /* half a length */
    /* properties: structure */
    {5, C, MAL, "30 { s'a' { 05 00 } }"},         /* unknown identifier */
    {5, C, MAL, "30 { s'a' { 80 01 } }"},         /* multi-byte identifier */
    {5, C, MAL, "30 { s'a' 02 02 00 }"},          /* value overruns the block */
    {5, C, MAL, "30 { s'a' 05 02 00 }"},          /* block overruns the packet */
    {5, C, MAL, "30 { s'a' 80 00 }"},             /* block length not minimal */
    {5, S, MAL, "30 { s'a' { 0b 80 00 } }"},      /* varint value not minimal */
    {5, S, MAL, "30 { s'a' { 0b 80 80 80 80 01 } }"},
    {5, C, MAL, "30 { s'a' { 26 s'k' } }"},       /* pair without its value */
    {5, C, MAL, "30 { s'a' { 26 00 } }"},
    {5, C, MAL, "30 { s'a' { 03 00 } }"},         /* half a string length */
    {5, C, MAL, "30 { s'a' { 02 00 00 00 } }"},   /* four-byte integer cut short */
    {4, C, MAL, "c0"},                            /* less than a fixed header */
    {5, S, MAL, "40 03 00 01 00 00"},           /* v5 short form: RL is the truth */
    /* properties: allowed per packet type */
    {5, C, PROTO, "10 { s'MQTT' 05 02 00 00 { 23 00 01 } s'a' }"},
    {5, C, PROTO, "10 { s'MQTT' 05 02 00 00 { 18 00 00 00 01 } s'a' }"},
    {5, C, PROTO, "10 { s'MQTT' 05 06 00 00 { } s'a' { 11 00 00 00 01 } s'w' s'' }"},
    {5, S, PROTO, "20 { 00 00 { 17 01 } }"},
    {5, C, PROTO, "30 { s'a' { 11 00 00 00 01 } }"},
    {5, C, PROTO, "30 { s'a' { 1f s'x' } }"},
    {5, C, PROTO, "40 { 00 01 00 { 15 s'm' } }"},
    {5, C, PROTO, "82 { 00 01 { 23 00 01 } s'a' 00 }"},
    {5, C, PROTO, "a2 { 00 01 { 0b 01 } s'a' }"},
    {5, S, PROTO, "90 { 00 01 { 0b 01 } 00 }"},
    {5, S, PROTO, "b0 { 00 01 { 21 00 01 } 00 }"},
    {5, C, PROTO, "e0 { 00 { 24 01 } }"},
    {5, C, PROTO, "f0 { 18 { 11 00 00 00 01 } }"},
    /* properties: duplicates */
    {5, C, PROTO, "10 { s'MQTT' 05 02 00 00 { 11 00 00 00 01 11 00 00 00 01 } s'a' }"},
    {5, C, PROTO, "30 { s'a' { 23 00 01 23 00 01 } }"},
    {5, S, PROTO, "40 { 00 01 80 { 1f s'x' 1f s'y' } }"},
    {5, C, PROTO, "82 { 00 01 { 0b 01 0b 02 } s'a' 00 }"},
    {5, C, PROTO, "10 { s'MQTT' 05 06 00 00 { } s'a' { 01 00 01 00 } s'w' s'' }"},
    /* properties: values */
    {5, C, PROTO, "82 { 00 01 { 0b 00 } s'a' 00 }"},  /* subscription id 0 */
    {5, S, PROTO, "30 { s'a' { 0b 00 } }"},
    {5, C, PROTO, "30 { s'a' { 0b 01 } }"},           /* client may not send one */
    {5, C, PROTO, "30 { s'a' { 01 02 } }"},           /* payload format */
    {5, C, PROTO, "10 { s'MQTT' 05 02 00 00 { 17 02 } s'a' }"},
    {5, C, PROTO, "10 { s'MQTT' 05 02 00 00 { 19 05 } s'a' }"},
    {5, C, PROTO, "10 { s'MQTT' 05 02 00 00 { 21 00 00 } s'a' }"}, /* receive max 0 */
    {5, C, PROTO, "10 { s'MQTT' 05 02 00 00 { 27 00 00 00 00 } s'a' }"},
    {5, C, PROTO, "10 { s'MQTT' 05 02 00 00 { 16 s'x' } s'a' }"}, /* data, no method */
    {5, S, PROTO, "20 { 00 00 { 24 02 } }"},          /* maximum QoS */
    {5, S, PROTO, "20 { 00 00 { 25 02 } }"},
    {5, S, PROTO, "20 { 00 00 { 28 02 } }"},
    {5, S, PROTO, "20 { 00 00 { 29 02 } }"},
    {5, S, PROTO, "20 { 00 00 { 2a ff } }"},
    {5, S, PROTO, "e0 { 00 { 11 00 00 00 01 } }"},    /* session expiry from server */
    /* CONNECT */
    {4, C, BADV, "10 { s'MQTT' 03 02 00 3c s'a' }"},
    {4, C, BADV, "10 { s'MQIsdp' 04 02 00 3c s'a' }"},
    {4, C, BADV, "10 { s'MQTT' 06 02 00 3c s'a' }"},
    {5, C, BADV, "10 { s'MQTT' 84 02 00 3c s'a' }"},
    {4, C, PROTO, "10 { s'HTTP' 04 02 00 3c s'a' }"},
    {4, C, PROTO, "10 { s'mqtt' 04 02 00 3c s'a' }"},
    {4, C, PROTO, "10 { s'' 04 02 00 3c s'a' }"},
    {4, C, MAL, "10 { 00 04 'MQ' }"},
    {4, C, MAL, "10 { s'MQTT' }"},
    {4, C, MAL, "10 { s'MQTT' 04 03 00 3c s'a' }"}, /* reserved flag */
    {4, C, MAL, "10 { s'MQTT' 04 0a 00 3c s'a' }"}, /* will QoS without will */
    {5, C, MAL, "10 { s'MQTT' 05 22 00 3c { } s'a' }"}, /* will retain without will */
    {4, C, MAL, "10 { s'MQTT' 04 1e 00 3c s'a' s'w' s'' }"}, /* will QoS 3 */
    {4, C, MAL, "10 { s'MQTT' 04 42 00 3c s'a' s'p' }"}, /* password, no username */
    {3, C, MAL, "10 { s'MQIsdp' 03 42 00 3c s'a' s'p' }"},
    {4, C, MAL, "10 { s'MQTT' 04 82 00 3c s'a' }"}, /* username missing */
    {4, C, MAL, "10 { s'MQTT' 04 06 00 3c s'a' s'w' }"}, /* will payload missing */
    {4, C, MAL, "10 { s'MQTT' 04 02 00 3c s'a' 00 }"}, /* trailing */
    {4, C, MAL, "10 { s'MQTT' 04 02 00 }"},
    {5, C, MAL, "10 { s'MQTT' 05 02 00 3c s'a' }"}, /* v5 properties missing */
    /* CONNACK */
    {4, S, MAL, "20 03 00 00 00"},
    {4, S, MAL, "20 01 00"},
    {4, S, MAL, "20 02 02 00"},
    {5, S, MAL, "20 { 80 00 00 }"},
    {5, S, MAL, "20 02 00 00"},
    {4, S, PROTO, "20 02 00 06"},
    {4, S, PROTO, "20 02 01 05"},                 /* session present on refusal */
    {5, S, PROTO, "20 03 00 10 00"},
    {5, S, PROTO, "20 03 01 80 00"},
    /* acknowledgements */
    {4, C, MAL, "40 03 00 01 00"},                /* 3.x acks carry no more */
    {3, S, MAL, "50 04 00 01 00 00"},
    {4, C, MAL, "40 01 00"},
    {5, C, MAL, "40 01 00"},
    {5, C, MAL, "40 { 00 01 00 00 } 00"},
    {5, C, MAL, "40 { 00 01 00 { } 00 }"},        /* after the properties */
    {5, C, PROTO, "40 03 00 01 92"},              /* code not for PUBACK */
    {5, S, PROTO, "50 03 00 01 04"},
    {5, C, PROTO, "62 03 00 01 10"},
    {5, S, PROTO, "70 03 00 01 80"},
    /* SUBACK, UNSUBACK */
    {4, S, PROTO, "90 02 00 01"},                 /* no codes */
    {5, S, PROTO, "90 03 00 01 00"},
    {4, S, PROTO, "90 03 00 01 03"},
    {5, S, PROTO, "90 { 00 01 00 00 11 }"},
    {4, S, MAL, "b0 03 00 01 00"},
    {5, S, PROTO, "b0 03 00 01 00"},
    {5, S, PROTO, "b0 { 00 01 00 01 }"},
    {5, S, MAL, "b0 { 00 01 03 00 }"},
    /* PINGREQ, PINGRESP, DISCONNECT, AUTH */
    {4, C, MAL, "c0 01 00"},
    {5, S, MAL, "d0 01 00"},
    {4, C, MAL, "e0 01 00"},
    {5, C, PROTO, "e0 01 05"},
    {5, C, MAL, "e0 { 00 00 00 }"},
    {5, C, PROTO, "f0 01 01"},
    {5, C, MAL, "f0 { 18 05 }"},
};

static void bad_packet(const struct bad *b)
{
    uint8_t in[1024];
    size_t len = bytes(b->text, in, sizeof in);
    struct mqtt_packet p;
    int before = check_failures;

    CHECK_EQ_INT(mqtt_decode(in, len, b->v, b->c, &p), b->want);
    if (check_failures != before)
        fprintf(stderr, "  in packet v%u %s: %s\n", b->v, b->c ? "C" : "S", b->text);
}

/* The level a rejected CONNECT asked for decides the CONNACK's layout. */
static void bad_version_reports_level(void)
{
    uint8_t in[64];
    struct mqtt_packet p;
    size_t len = bytes("10 { s'MQTT' 07 02 00 3c s'a' }", in, sizeof in);

    CHECK_EQ_INT(mqtt_decode(in, len, 0, C, &p), MQTT_BAD_VERSION);
    CHECK_EQ_INT(p.connect.version, 7);
}

/* ---- decoded values ---------------------------------------------------- */

static void decoded_fields(void)
{
    uint8_t in[256];
    struct mqtt_packet p;
    size_t len = bytes("10 { s'MQTT' 05 ec 01 2c { 11 00 00 01 00 21 00 14 22 00 0a"
                       " 27 00 00 10 00 15 s'm' } s'cid' { } s'w/t' s'msg' s'u' s'pw' }",
                       in, sizeof in);
    const struct mqtt_connect *c = &p.connect;

    CHECK_EQ_INT(mqtt_decode(in, len, 0, C, &p), MQTT_OK);
    CHECK_EQ_INT(c->version, MQTT_V5);
    CHECK(!c->clean_start && c->has_will && c->will_retain && c->has_username &&
          c->has_password);
    CHECK_EQ_INT(c->will_qos, 1);
    CHECK_EQ_INT(c->keepalive, 300);
    CHECK_EQ_INT(c->props.session_expiry, 256);
    CHECK_EQ_INT(c->props.receive_max, 20);
    CHECK_EQ_INT(c->props.topic_alias_max, 10);
    CHECK_EQ_INT(c->props.max_packet_size, 4096);
    CHECK_EQ_INT(c->props.has, 1u << MQTT_PROPBIT_SESSION_EXPIRY | 1u << MQTT_PROPBIT_RECEIVE_MAX |
                                   1u << MQTT_PROPBIT_TOPIC_ALIAS_MAX |
                                   1u << MQTT_PROPBIT_MAX_PACKET_SIZE |
                                   1u << MQTT_PROPBIT_AUTH_METHOD);
    CHECK(c->props.raw == in + 13 && c->props.raw_len == 20);
    CHECK(c->will_props.raw != NULL && c->will_props.raw_len == 0);
    CHECK(str_eq(c->client_id, (mqtt_str){(const uint8_t *)"cid", 3}));
    CHECK(str_eq(c->will_topic, (mqtt_str){(const uint8_t *)"w/t", 3}));
    CHECK(str_eq(c->will_payload, (mqtt_str){(const uint8_t *)"msg", 3}));
    CHECK(str_eq(c->password, (mqtt_str){(const uint8_t *)"pw", 2}));

    len = bytes("3d { s'a' 12 34 { 23 01 02 0b 07 } 'pay' }", in, sizeof in);
    CHECK_EQ_INT(mqtt_decode(in, len, MQTT_V5, S, &p), MQTT_OK);
    CHECK(p.publish.qos == 2 && p.publish.dup && p.publish.retain);
    CHECK_EQ_INT(p.publish.id, 0x1234);
    CHECK_EQ_INT(p.publish.props.topic_alias, 0x0102);
    CHECK_EQ_INT(p.publish.props.has,
                 1u << MQTT_PROPBIT_TOPIC_ALIAS | 1u << MQTT_PROPBIT_SUBSCRIPTION_ID);
    CHECK(str_eq(p.publish.payload, (mqtt_str){(const uint8_t *)"pay", 3}));

    /* the same bytes at 3.1.1: no properties, the rest is payload */
    CHECK_EQ_INT(mqtt_decode(in, len, MQTT_V311, S, &p), MQTT_OK);
    CHECK(p.publish.props.raw == NULL && p.publish.payload.len == 9);

    len = bytes("40 03 00 07 10", in, sizeof in);
    CHECK_EQ_INT(mqtt_decode(in, len, MQTT_V5, C, &p), MQTT_OK);
    CHECK(p.ack.id == 7 && p.ack.rc == 0x10 && p.ack.form == MQTT_FORM_RC);
    CHECK(p.ack.props.raw == NULL);

    len = bytes("b0 02 00 09", in, sizeof in);
    CHECK_EQ_INT(mqtt_decode(in, len, MQTT_V311, S, &p), MQTT_OK);
    CHECK(p.suback.id == 9 && p.suback.count == 0 && p.suback.codes == NULL);
}

/* ---- encode -> decode -> identical fields ------------------------------- */

static mqtt_str S_(const char *s) { return (mqtt_str){(const uint8_t *)s, (uint32_t)strlen(s)}; }

static void struct_roundtrip(const struct mqtt_packet *x, uint8_t version, bool from_client)
{
    uint8_t out[1024];
    struct mqtt_packet y;
    size_t len = mqtt_encode(x, version, out, sizeof out);
    int before = check_failures;

    CHECK(len > 0 && len <= sizeof out);
    CHECK_EQ_INT(mqtt_decode(out, len, version, from_client, &y), MQTT_OK);
    CHECK(pkt_eq(x, &y, false));
    if (check_failures != before)
        fprintf(stderr, "  struct %s at v%u\n", mqtt_type_name(x->type), version);
}

/* A property block holding one of each kind the packet allows. */
static mqtt_props props_for(uint8_t type, uint8_t *buf)
{
    /* a user property is a pair: name "k", then an empty value */
    uint32_t n = mqtt_prop_put_str(buf, MQTT_PROP_USER_PROPERTY, (const uint8_t *)"k", 1);
    buf[n++] = 0;
    buf[n++] = 0;
    if (type == MQTT_CONNECT)
        n += mqtt_prop_put_u16(buf + n, MQTT_PROP_RECEIVE_MAX, 5);
    if (type == MQTT_PUBLISH)
        n += mqtt_prop_put_u32(buf + n, MQTT_PROP_MESSAGE_EXPIRY, 60);
    if (type == MQTT_CONNACK)
        n += mqtt_prop_put_u8(buf + n, MQTT_PROP_MAX_QOS, 1);
    if (type != MQTT_PUBLISH && type != MQTT_CONNECT && type != MQTT_SUBSCRIBE &&
        type != MQTT_UNSUBSCRIBE && type != MQTT_PROPS_WILL)
        n += mqtt_prop_put_str(buf + n, MQTT_PROP_REASON_STRING, (const uint8_t *)"why", 3);
    return (mqtt_props){.raw = buf, .raw_len = n};
}

static void struct_connect(uint8_t v)
{
    uint8_t pb[64], wb[64];
    struct mqtt_packet x = {.type = MQTT_CONNECT};
    struct mqtt_connect *c = &x.connect;

    c->version = v;
    c->clean_start = true;
    c->keepalive = 60;
    c->client_id = S_("client");
    struct_roundtrip(&x, v, C);
    c->has_will = c->will_retain = c->has_username = c->has_password = true;
    c->will_qos = 2;
    c->will_topic = S_("last/will");
    c->will_payload = S_("gone");
    c->username = S_("user");
    c->password = S_("secret");
    if (v == MQTT_V5) {
        c->props = props_for(MQTT_CONNECT, pb);
        c->will_props = props_for(MQTT_PROPS_WILL, wb);
    }
    struct_roundtrip(&x, v, C);
}

static void struct_publish(uint8_t v)
{
    uint8_t pb[64];
    struct mqtt_packet x = {.type = MQTT_PUBLISH};
    struct mqtt_publish *p = &x.publish;

    p->topic = S_("a/b/c");
    p->payload = S_("hello");
    struct_roundtrip(&x, v, C);
    for (uint8_t qos = 1; qos <= 2; qos++) {
        *p = (struct mqtt_publish){.qos = qos, .dup = true, .retain = qos == 2, .id = 300};
        p->topic = S_("t");
        if (v == MQTT_V5)
            p->props = props_for(MQTT_PUBLISH, pb);
        struct_roundtrip(&x, v, S);
    }
    if (v == MQTT_V5) {
        *p = (struct mqtt_publish){.topic = S_("")};
        p->props.raw = pb;
        p->props.raw_len = mqtt_prop_put_u16(pb, MQTT_PROP_TOPIC_ALIAS, 3);
        struct_roundtrip(&x, v, C);
    }
}

static void struct_acks(uint8_t v)
{
    uint8_t pb[64];

    for (uint8_t t = MQTT_PUBACK; t <= MQTT_PUBCOMP; t++) {
        struct mqtt_packet x = {.type = t};
        x.ack.id = 65535;
        struct_roundtrip(&x, v, t % 2 ? C : S);
        if (v == MQTT_V5) {
            x.ack.rc = t == MQTT_PUBREL || t == MQTT_PUBCOMP ? 0x92 : 0x80;
            struct_roundtrip(&x, v, C);
            x.ack.props = props_for(t, pb);
            struct_roundtrip(&x, v, S);
        }
    }
}

static void struct_subscriptions(uint8_t v)
{
    uint8_t pb[64], list[64];
    struct mqtt_packet x = {.type = MQTT_SUBSCRIBE};
    size_t n = bytes("s'a/+' 01 s'#' 02", list, sizeof list);

    x.subscribe = (struct mqtt_subscribe){.id = 1, .list = list, .list_len = (uint32_t)n};
    x.subscribe.count = 2;
    if (v == MQTT_V5)
        x.subscribe.props = props_for(MQTT_SUBSCRIBE, pb);
    struct_roundtrip(&x, v, C);

    x.type = MQTT_UNSUBSCRIBE;
    x.subscribe.list_len = (uint32_t)bytes("s'a/+' s'#' s'x'", list, sizeof list);
    x.subscribe.count = 3;
    struct_roundtrip(&x, v, C);

    x = (struct mqtt_packet){.type = MQTT_SUBACK};
    x.suback = (struct mqtt_suback){.id = 2, .codes = (const uint8_t *)"\x00\x01\x02\x80"};
    x.suback.count = 4;
    if (v == MQTT_V5)
        x.suback.props = props_for(MQTT_SUBACK, pb);
    struct_roundtrip(&x, v, S);

    x.type = MQTT_UNSUBACK;
    x.suback.codes = v == MQTT_V5 ? (const uint8_t *)"\x00\x11" : NULL;
    x.suback.count = v == MQTT_V5 ? 2 : 0;
    struct_roundtrip(&x, v, S);
}

static void struct_others(uint8_t v)
{
    uint8_t pb[64];
    struct mqtt_packet x = {.type = MQTT_CONNACK};

    x.connack.session_present = true;
    if (v == MQTT_V5)
        x.connack.props = props_for(MQTT_CONNACK, pb);
    struct_roundtrip(&x, v, S);
    x.connack.session_present = false;
    x.connack.rc = v == MQTT_V5 ? MQTT_RC_NOT_AUTHORIZED : MQTT3_NOT_AUTHORIZED;
    struct_roundtrip(&x, v, S);

    struct_roundtrip(&(struct mqtt_packet){.type = MQTT_PINGREQ}, v, C);
    struct_roundtrip(&(struct mqtt_packet){.type = MQTT_PINGRESP}, v, S);
    x = (struct mqtt_packet){.type = MQTT_DISCONNECT};
    struct_roundtrip(&x, v, C);
    if (v < MQTT_V5)
        return;
    x.disconnect.rc = MQTT_RC_SERVER_SHUTTING_DOWN;
    struct_roundtrip(&x, v, S);
    x.disconnect.props = props_for(MQTT_DISCONNECT, pb);
    struct_roundtrip(&x, v, S);
    x.type = MQTT_AUTH;
    x.disconnect.rc = 0x18;
    struct_roundtrip(&x, v, C);
    x.disconnect = (struct mqtt_disconnect){0};
    struct_roundtrip(&x, v, S);
}

/* The encoder writes at least the form the struct records, and more when
 * rc or properties need it. */
static void ack_forms(void)
{
    uint8_t out[32];
    struct mqtt_packet x = {.type = MQTT_PUBACK};

    x.ack.id = 1;
    CHECK_EQ_INT(mqtt_encode(&x, MQTT_V5, out, sizeof out), 4); /* AUTO, rc 0 */
    x.ack.form = MQTT_FORM_RC;
    CHECK_EQ_INT(mqtt_encode(&x, MQTT_V5, out, sizeof out), 5);
    x.ack.form = MQTT_FORM_FULL;
    CHECK_EQ_INT(mqtt_encode(&x, MQTT_V5, out, sizeof out), 6);
    x.ack.form = MQTT_FORM_BARE;
    x.ack.rc = 0x10;
    CHECK_EQ_INT(mqtt_encode(&x, MQTT_V5, out, sizeof out), 5);
    x.ack.props = (mqtt_props){.raw = (const uint8_t *)"\x1f\x00\x00", .raw_len = 3};
    CHECK_EQ_INT(mqtt_encode(&x, MQTT_V5, out, sizeof out), 9);
    CHECK_EQ_INT(mqtt_encode(&x, MQTT_V311, out, sizeof out), 4); /* 3.x: id only */
}

int main(void)
{
    for (size_t i = 0; i < sizeof wires / sizeof wires[0]; i++)
        wire_roundtrip(&wires[i]);
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++)
        bad_packet(&bads[i]);
    bad_version_reports_level();
    decoded_fields();
    for (uint8_t v = MQTT_V31; v <= MQTT_V5; v++) {
        struct_connect(v);
        struct_publish(v);
        struct_acks(v);
        struct_subscriptions(v);
        struct_others(v);
    }
    ack_forms();
    printf("%zu wire round trips, %zu invalid packets\n", sizeof wires / sizeof wires[0],
           sizeof bads / sizeof bads[0]);
    return check_done("test_mqtt_codec");
}
