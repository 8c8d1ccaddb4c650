/* The codec's smaller entry points: property blocks, list iterators,
 * reason code tables, convenience encoders, encoder refusals, names. */
#include "check.h"
#include "mqtt/mqtt.h"

#define B(lit) (const uint8_t *)(lit), (uint32_t)(sizeof(lit) - 1)

/* user property k=v, topic alias 7, subscription id 300, user property a=b */
static const char block[] = "\x26\x00\x01k\x00\x01v"
                            "\x23\x00\x07"
                            "\x0b\xac\x02"
                            "\x26\x00\x01" "a" "\x00\x01" "b";

static void props_walk(void)
{
    const uint8_t *val = NULL;
    uint8_t out[64];

    CHECK(mqtt_props_find(B(block), MQTT_PROP_TOPIC_ALIAS, &val));
    CHECK(val == (const uint8_t *)block + 8 && val[0] == 0 && val[1] == 7);
    CHECK(mqtt_props_find(B(block), MQTT_PROP_USER_PROPERTY, &val));
    CHECK(val == (const uint8_t *)block + 1); /* the first one */
    CHECK(mqtt_props_find(B(block), MQTT_PROP_SUBSCRIPTION_ID, &val));
    CHECK(val[0] == 0xac && val[1] == 0x02);
    CHECK(!mqtt_props_find(B(block), MQTT_PROP_CONTENT_TYPE, &val));
    CHECK(!mqtt_props_find(B("\x23\x00"), MQTT_PROP_TOPIC_ALIAS, &val)); /* truncated */
    CHECK(!mqtt_props_find(NULL, 0, MQTT_PROP_TOPIC_ALIAS, &val));

    CHECK_EQ_INT(mqtt_props_without(B(block), MQTT_PROP_TOPIC_ALIAS, out), sizeof block - 4);
    CHECK(memcmp(out, block, 7) == 0 && memcmp(out + 7, block + 10, sizeof block - 11) == 0);
    CHECK_EQ_INT(mqtt_props_without(B(block), MQTT_PROP_USER_PROPERTY, out), 6);
    CHECK(memcmp(out, "\x23\x00\x07\x0b\xac\x02", 6) == 0);
    CHECK_EQ_INT(mqtt_props_without(B(block), MQTT_PROP_CONTENT_TYPE, out), sizeof block - 1);
    CHECK(memcmp(out, block, sizeof block - 1) == 0);
    /* in place */
    memcpy(out, block, sizeof block - 1);
    CHECK_EQ_INT(mqtt_props_without(out, sizeof block - 1, MQTT_PROP_USER_PROPERTY, out), 6);
    CHECK(memcmp(out, "\x23\x00\x07\x0b\xac\x02", 6) == 0);
    /* copies up to what does not parse */
    CHECK_EQ_INT(mqtt_props_without(B("\x23\x00\x07\x05\x00"), MQTT_PROP_USER_PROPERTY, out), 3);
}

static void props_build_and_parse(void)
{
    uint8_t raw[64], blk[80];
    uint32_t n = 0, used = 0;
    mqtt_props p;

    n += mqtt_prop_put_u8(raw + n, MQTT_PROP_PAYLOAD_FORMAT, 1);
    n += mqtt_prop_put_u16(raw + n, MQTT_PROP_TOPIC_ALIAS, 0x1234);
    n += mqtt_prop_put_u32(raw + n, MQTT_PROP_MESSAGE_EXPIRY, 0xA1B2C3D4);
    n += mqtt_prop_put_str(raw + n, MQTT_PROP_CONTENT_TYPE, (const uint8_t *)"json", 4);
    n += mqtt_prop_put_str(raw + n, MQTT_PROP_CORRELATION_DATA, NULL, 0);
    CHECK_EQ_INT(n, 2 + 3 + 5 + 7 + 3);
    CHECK(memcmp(raw, "\x01\x01\x23\x12\x34\x02\xa1\xb2\xc3\xd4\x03\x00\x04json\x09\x00\x00",
                 n) == 0);

    uint32_t h = mqtt_varint_put(blk, n);
    memcpy(blk + h, raw, n);
    blk[h + n] = 0xEE; /* what follows the block is not the block's */
    CHECK_EQ_INT(mqtt_props_parse(blk, h + n + 1, MQTT_PUBLISH, &p, &used), MQTT_OK);
    CHECK_EQ_INT(used, h + n);
    CHECK(p.raw == blk + h && p.raw_len == n);
    CHECK_EQ_INT(p.topic_alias, 0x1234);
    CHECK_EQ_INT(p.has, 1u << MQTT_PROPBIT_TOPIC_ALIAS);
    /* the same block is no will block (topic alias), no CONNECT block */
    CHECK_EQ_INT(mqtt_props_parse(blk, h + n, MQTT_PROPS_WILL, &p, &used), MQTT_PROTOCOL_ERROR);
    CHECK_EQ_INT(mqtt_props_parse(blk, h + n, MQTT_CONNECT, &p, &used), MQTT_PROTOCOL_ERROR);
    CHECK_EQ_INT(mqtt_props_parse(blk, h + n - 1, MQTT_PUBLISH, &p, &used), MQTT_MALFORMED);
    CHECK_EQ_INT(mqtt_props_parse(blk, 0, MQTT_PUBLISH, &p, &used), MQTT_MALFORMED);
    /* will delay: will properties only */
    n = mqtt_prop_put_u32(raw + 1, MQTT_PROP_WILL_DELAY, 5);
    raw[0] = (uint8_t)n;
    CHECK_EQ_INT(mqtt_props_parse(raw, n + 1, MQTT_PROPS_WILL, &p, &used), MQTT_OK);
    CHECK_EQ_INT(mqtt_props_parse(raw, n + 1, MQTT_PUBLISH, &p, &used), MQTT_PROTOCOL_ERROR);
    CHECK_EQ_INT(mqtt_props_parse(raw, n + 1, MQTT_PINGREQ, &p, &used), MQTT_PROTOCOL_ERROR);
    CHECK_EQ_INT(mqtt_props_parse(raw, n + 1, 16, &p, &used), MQTT_MALFORMED);
}

static void iterators(void)
{
    const uint8_t list[] = {0, 3, 'a', '/', '+', 1, 0, 1, '#', 2};
    struct mqtt_subscribe s = {.list = list, .list_len = sizeof list};
    uint32_t off = 0;
    mqtt_str f;
    uint8_t o = 0xFF;

    CHECK(mqtt_sub_next(&s, &off, &f, &o));
    CHECK(f.len == 3 && memcmp(f.p, "a/+", 3) == 0 && o == 1 && off == 6);
    CHECK(mqtt_sub_next(&s, &off, &f, &o));
    CHECK(f.len == 1 && f.p[0] == '#' && o == 2 && off == 10);
    CHECK(!mqtt_sub_next(&s, &off, &f, &o));
    CHECK_EQ_INT(off, 10);

    /* unsubscribe lists have no options byte */
    off = 0;
    s.list_len = 5;
    CHECK(mqtt_unsub_next(&s, &off, &f));
    CHECK(f.len == 3 && off == 5);
    CHECK(!mqtt_unsub_next(&s, &off, &f));

    /* a truncated entry stops the walk without moving */
    off = 0;
    s.list_len = 4;
    CHECK(!mqtt_unsub_next(&s, &off, &f));
    CHECK_EQ_INT(off, 0);
    s.list_len = 5;
    CHECK(!mqtt_sub_next(&s, &off, &f, &o)); /* options byte missing */
    CHECK_EQ_INT(off, 0);
    s = (struct mqtt_subscribe){0};
    CHECK(!mqtt_sub_next(&s, &off, &f, &o));
}

static void reasons(void)
{
    CHECK(mqtt_reason_valid(MQTT_CONNACK, MQTT_V311, MQTT3_NOT_AUTHORIZED));
    CHECK(!mqtt_reason_valid(MQTT_CONNACK, MQTT_V311, 6));
    CHECK(mqtt_reason_valid(MQTT_SUBACK, MQTT_V31, 0x80));
    CHECK(!mqtt_reason_valid(MQTT_SUBACK, MQTT_V311, 0x03));
    CHECK(!mqtt_reason_valid(MQTT_PUBACK, MQTT_V311, 0));
    CHECK(mqtt_reason_valid(MQTT_CONNACK, MQTT_V5, MQTT_RC_UNSUPPORTED_VERSION));
    CHECK(!mqtt_reason_valid(MQTT_CONNACK, MQTT_V5, MQTT3_BAD_VERSION));
    CHECK(mqtt_reason_valid(MQTT_PUBACK, MQTT_V5, MQTT_RC_NO_MATCHING_SUBSCRIBERS));
    CHECK(mqtt_reason_valid(MQTT_PUBREC, MQTT_V5, MQTT_RC_QUOTA_EXCEEDED));
    CHECK(!mqtt_reason_valid(MQTT_PUBREL, MQTT_V5, MQTT_RC_NO_MATCHING_SUBSCRIBERS));
    CHECK(mqtt_reason_valid(MQTT_PUBCOMP, MQTT_V5, 0x92));
    CHECK(mqtt_reason_valid(MQTT_SUBACK, MQTT_V5, MQTT_RC_GRANTED_QOS2));
    CHECK(mqtt_reason_valid(MQTT_UNSUBACK, MQTT_V5, 0x11));
    CHECK(!mqtt_reason_valid(MQTT_UNSUBACK, MQTT_V5, MQTT_RC_GRANTED_QOS1));
    CHECK(mqtt_reason_valid(MQTT_DISCONNECT, MQTT_V5, MQTT_RC_TOPIC_ALIAS_INVALID));
    CHECK(mqtt_reason_valid(MQTT_DISCONNECT, MQTT_V5, MQTT_RC_KEEPALIVE_TIMEOUT));
    CHECK(!mqtt_reason_valid(MQTT_DISCONNECT, MQTT_V5, MQTT_RC_BAD_CLIENT_ID));
    CHECK(mqtt_reason_valid(MQTT_AUTH, MQTT_V5, 0x19));
    CHECK(!mqtt_reason_valid(MQTT_AUTH, MQTT_V5, 0x80));
    CHECK(!mqtt_reason_valid(MQTT_PUBLISH, MQTT_V5, 0));
    CHECK(!mqtt_reason_valid(200, MQTT_V5, 0));
}

static void convenience(void)
{
    uint8_t out[16];

    memset(out, 0xEE, sizeof out);
    CHECK_EQ_INT(mqtt_encode_connack(MQTT_V311, true, 0, out, sizeof out), 4);
    CHECK(memcmp(out, "\x20\x02\x01\x00", 4) == 0);
    CHECK_EQ_INT(mqtt_encode_connack(MQTT_V31, false, MQTT3_BAD_VERSION, out, sizeof out), 4);
    CHECK(memcmp(out, "\x20\x02\x00\x01", 4) == 0);
    CHECK_EQ_INT(mqtt_encode_connack(MQTT_V5, false, MQTT_RC_UNSUPPORTED_VERSION, out, 16), 5);
    CHECK(memcmp(out, "\x20\x03\x00\x84\x00", 5) == 0);

    CHECK_EQ_INT(mqtt_encode_ack(MQTT_PUBACK, MQTT_V311, 0x0102, 0x10, out, sizeof out), 4);
    CHECK(memcmp(out, "\x40\x02\x01\x02", 4) == 0);
    CHECK_EQ_INT(mqtt_encode_ack(MQTT_PUBREL, MQTT_V5, 7, 0, out, sizeof out), 4);
    CHECK(memcmp(out, "\x62\x02\x00\x07", 4) == 0);
    CHECK_EQ_INT(mqtt_encode_ack(MQTT_PUBREC, MQTT_V5, 7, 0x10, out, sizeof out), 5);
    CHECK(memcmp(out, "\x50\x03\x00\x07\x10", 5) == 0);
    CHECK_EQ_INT(mqtt_encode_ack(MQTT_PUBCOMP, MQTT_V5, 7, 0x92, out, sizeof out), 5);
    CHECK(memcmp(out, "\x70\x03\x00\x07\x92", 5) == 0);
    CHECK_EQ_INT(mqtt_encode_ack(MQTT_SUBACK, MQTT_V5, 7, 0, out, sizeof out), 0);

    CHECK_EQ_INT(mqtt_encode_disconnect(MQTT_V5, 0, out, sizeof out), 2);
    CHECK(memcmp(out, "\xe0\x00", 2) == 0);
    CHECK_EQ_INT(mqtt_encode_disconnect(MQTT_V5, MQTT_RC_SERVER_SHUTTING_DOWN, out, 16), 3);
    CHECK(memcmp(out, "\xe0\x01\x8b", 3) == 0);
    CHECK_EQ_INT(mqtt_encode_disconnect(MQTT_V311, MQTT_RC_PROTOCOL_ERROR, out, 16), 2);
    CHECK(memcmp(out, "\xe0\x00", 2) == 0);

    /* too small: the size, and nothing written */
    memset(out, 0xEE, sizeof out);
    CHECK_EQ_INT(mqtt_encode_disconnect(MQTT_V5, 0x8b, out, 2), 3);
    CHECK_EQ_INT(mqtt_encode_connack(MQTT_V311, false, 0, NULL, 0), 4);
    CHECK(out[0] == 0xEE && out[1] == 0xEE);
}

static void refusals(void)
{
    static uint8_t big[70000];
    uint8_t out[16];
    struct mqtt_packet p = {.type = 0};

    CHECK_EQ_INT(mqtt_encode(&p, MQTT_V5, out, sizeof out), 0);
    p.type = MQTT_AUTH;
    CHECK_EQ_INT(mqtt_encode(&p, MQTT_V311, out, sizeof out), 0);
    CHECK_EQ_INT(mqtt_encode(&p, MQTT_V5, out, sizeof out), 2);
    p = (struct mqtt_packet){.type = MQTT_PUBLISH};
    p.publish.topic = (mqtt_str){big, 65536};
    CHECK_EQ_INT(mqtt_encode(&p, MQTT_V311, out, sizeof out), 0);
    p.publish.topic = (mqtt_str){big, 1};
    p.publish.qos = 3;
    CHECK_EQ_INT(mqtt_encode(&p, MQTT_V311, out, sizeof out), 0);
    p.publish.qos = 0;
    p.publish.payload = (mqtt_str){NULL, 5};
    CHECK_EQ_INT(mqtt_encode(&p, MQTT_V311, out, sizeof out), 0);
    p.publish.payload = (mqtt_str){big, 268435455}; /* one byte over 256 MB */
    CHECK_EQ_INT(mqtt_encode(&p, MQTT_V311, out, sizeof out), 0);
    p.publish.payload.len = 268435455 - 3; /* exactly the maximum */
    CHECK_EQ_INT(mqtt_encode(&p, MQTT_V311, out, sizeof out), 268435460);
    p.publish.props = (mqtt_props){.raw = NULL, .raw_len = 3};
    CHECK_EQ_INT(mqtt_encode(&p, MQTT_V5, out, sizeof out), 0);
    p = (struct mqtt_packet){.type = MQTT_CONNECT};
    CHECK_EQ_INT(mqtt_encode(&p, 0, out, sizeof out), 0); /* no version anywhere */
    CHECK_EQ_INT(mqtt_encode(&p, MQTT_V311, out, sizeof out), 14);
    p.connect.version = 9;
    CHECK_EQ_INT(mqtt_encode(&p, MQTT_V311, out, sizeof out), 0);
}

static void names(void)
{
    CHECK_EQ_STR(mqtt_type_name(MQTT_CONNECT), "CONNECT");
    CHECK_EQ_STR(mqtt_type_name(MQTT_UNSUBACK), "UNSUBACK");
    CHECK_EQ_STR(mqtt_type_name(MQTT_AUTH), "AUTH");
    CHECK_EQ_STR(mqtt_type_name(0), "RESERVED");
    CHECK_EQ_STR(mqtt_type_name(16), "UNKNOWN");
    CHECK_EQ_STR(mqtt_rc_name(MQTT_MALFORMED), "malformed packet");
    CHECK_EQ_STR(mqtt_rc_name(MQTT_BAD_VERSION), "unsupported protocol version");
    CHECK_EQ_STR(mqtt_rc_name((mqtt_rc)99), "unknown");
}

int main(void)
{
    props_walk();
    props_build_and_parse();
    iterators();
    reasons();
    convenience();
    refusals();
    names();
    return check_done("test_mqtt_helpers");
}
