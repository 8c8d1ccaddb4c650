/* The v5 property values a handler sees (mqtt_prop_values) and a PUBLISH's
 * block with user properties / content type / response topic replaced
 * (mqtt_props_edit). */
#include "check.h"
#include "mqtt/mqtt.h"

#define B(lit) (const uint8_t *)(lit), (uint32_t)(sizeof(lit) - 1)
#define S(lit) ((mqtt_str){(const uint8_t *)(lit), (uint32_t)(sizeof(lit) - 1)})

static bool same(mqtt_str a, const char *s) { return a.len == strlen(s) && memcmp(a.p, s, a.len) == 0; }

/* user k=v, payload format 1, content type "t/j", user k=w (a repeat),
 * subscription ids 300 and 2, response topic "r", user ""="" (empty),
 * correlation data 00 01, message expiry 60, topic alias 7 */
static const char pub_block[] = "\x26\x00\x01k\x00\x01v"
                                "\x01\x01"
                                "\x03\x00\x03t/j"
                                "\x26\x00\x01k\x00\x01w"
                                "\x0b\xac\x02"
                                "\x0b\x02"
                                "\x08\x00\x01r"
                                "\x26\x00\x00\x00\x00"
                                "\x09\x00\x02\x00\x01"
                                "\x02\x00\x00\x00\x3c"
                                "\x23\x00\x07";

static void values_of_a_publish(void)
{
    struct mqtt_prop_values v;
    struct mqtt_user_prop user[4];
    uint32_t ids[4];

    /* sizing: caps 0 count everything and write nothing */
    CHECK(mqtt_prop_values(B(pub_block), &v, NULL, 0, NULL, 0));
    CHECK_EQ_INT(v.user_count, 3);
    CHECK_EQ_INT(v.sub_id_count, 2);

    CHECK(mqtt_prop_values(B(pub_block), &v, user, 4, ids, 4));
    CHECK_EQ_INT(v.user_count, 3);
    CHECK(same(user[0].name, "k") && same(user[0].value, "v"));
    CHECK(same(user[1].name, "k") && same(user[1].value, "w")); /* repeated names kept, in order */
    CHECK(user[2].name.len == 0 && user[2].value.len == 0);    /* empty name and value */
    CHECK_EQ_INT(ids[0], 300);
    CHECK_EQ_INT(ids[1], 2);
    CHECK(MQTT_PROP_HAS(&v, MQTT_PROP_PAYLOAD_FORMAT) && v.payload_format == 1);
    CHECK(MQTT_PROP_HAS(&v, MQTT_PROP_CONTENT_TYPE) && same(v.content_type, "t/j"));
    CHECK(MQTT_PROP_HAS(&v, MQTT_PROP_RESPONSE_TOPIC) && same(v.response_topic, "r"));
    CHECK(MQTT_PROP_HAS(&v, MQTT_PROP_CORRELATION_DATA) && v.correlation_data.len == 2 &&
          v.correlation_data.p[1] == 1);
    CHECK(MQTT_PROP_HAS(&v, MQTT_PROP_MESSAGE_EXPIRY) && v.message_expiry == 60);
    CHECK(!MQTT_PROP_HAS(&v, MQTT_PROP_AUTH_METHOD));

    /* a cap smaller than the count: no write past it, the count is whole */
    struct mqtt_user_prop one[2] = {{S("x"), S("x")}, {S("guard"), S("guard")}};
    CHECK(mqtt_prop_values(B(pub_block), &v, one, 1, ids, 1));
    CHECK_EQ_INT(v.user_count, 3);
    CHECK(same(one[0].value, "v") && same(one[1].name, "guard"));
    CHECK_EQ_INT(v.sub_id_count, 2);
}

static void values_of_a_connect(void)
{
    /* session expiry 10, receive max 5, max packet 1000, topic alias max 3,
     * auth method "SCRAM", auth data 01 02 03 */
    static const char blk[] = "\x11\x00\x00\x00\x0a"
                              "\x21\x00\x05"
                              "\x27\x00\x00\x03\xe8"
                              "\x22\x00\x03"
                              "\x15\x00\x05SCRAM"
                              "\x16\x00\x03\x01\x02\x03";
    struct mqtt_prop_values v;
    CHECK(mqtt_prop_values(B(blk), &v, NULL, 0, NULL, 0));
    CHECK(v.session_expiry == 10 && v.receive_max == 5 && v.max_packet_size == 1000 && v.topic_alias_max == 3);
    CHECK(MQTT_PROP_HAS(&v, MQTT_PROP_AUTH_METHOD) && same(v.auth_method, "SCRAM"));
    CHECK(MQTT_PROP_HAS(&v, MQTT_PROP_AUTH_DATA) && v.auth_data.len == 3 && v.auth_data.p[2] == 3);
    CHECK_EQ_INT(v.user_count, 0);

    /* will delay 5 */
    CHECK(mqtt_prop_values(B("\x18\x00\x00\x00\x05"), &v, NULL, 0, NULL, 0));
    CHECK(MQTT_PROP_HAS(&v, MQTT_PROP_WILL_DELAY) && v.will_delay == 5);
    /* empty block */
    CHECK(mqtt_prop_values(NULL, 0, &v, NULL, 0, NULL, 0));
    CHECK(v.has == 0);
}

static void values_malformed(void)
{
    struct mqtt_prop_values v;
    struct mqtt_user_prop user[2];
    CHECK(!mqtt_prop_values(B("\x26\x00\x01k\x00\x05v"), &v, user, 2, NULL, 0)); /* value overruns */
    CHECK(!mqtt_prop_values(B("\x26\x00\x01k"), &v, user, 2, NULL, 0));          /* pair cut after name */
    CHECK(!mqtt_prop_values(B("\x7f\x00"), &v, user, 2, NULL, 0));               /* unknown identifier */
    CHECK(!mqtt_prop_values(B("\x03\x00\x03" "ab"), &v, user, 2, NULL, 0));        /* string cut */
    CHECK(!mqtt_prop_values(B("\x0b\x80\x80"), &v, user, 2, NULL, 0));          /* varint cut */
    /* what parsed before the bad property is there */
    CHECK(!mqtt_prop_values(B("\x26\x00\x01k\x00\x01v\x02\x00"), &v, user, 2, NULL, 0));
    CHECK(v.user_count == 1 && same(user[0].value, "v"));
}

static size_t edit(const char *raw, uint32_t raw_len, const struct mqtt_prop_edit *e, uint8_t *out, size_t cap,
                   bool *bad)
{
    return mqtt_props_edit((const uint8_t *)raw, raw_len, e, out, cap, bad);
}

static void edit_nothing_changes_nothing(void)
{
    struct mqtt_prop_values v;
    struct mqtt_user_prop user[4];
    uint32_t ids[4];
    uint8_t out[128];
    bool bad;
    CHECK(mqtt_prop_values(B(pub_block), &v, user, 4, ids, 4));
    struct mqtt_prop_edit e = {user, v.user_count, true, true, v.content_type, v.response_topic};
    /* the user properties move together to the first one's place */
    size_t n = edit(pub_block, sizeof pub_block - 1, &e, out, sizeof out, &bad);
    CHECK(!bad);
    CHECK_EQ_INT(n, sizeof pub_block - 1);
    static const char regrouped[] = "\x26\x00\x01k\x00\x01v"
                                    "\x26\x00\x01k\x00\x01w"
                                    "\x26\x00\x00\x00\x00"
                                    "\x01\x01"
                                    "\x03\x00\x03t/j"
                                    "\x0b\xac\x02"
                                    "\x0b\x02"
                                    "\x08\x00\x01r"
                                    "\x09\x00\x02\x00\x01"
                                    "\x02\x00\x00\x00\x3c"
                                    "\x23\x00\x07";
    CHECK(memcmp(out, regrouped, n) == 0);
    /* a block whose user properties are together comes back byte for byte */
    CHECK_EQ_INT(edit(regrouped, sizeof regrouped - 1, &e, out, sizeof out, &bad), sizeof regrouped - 1);
    CHECK(memcmp(out, regrouped, sizeof regrouped - 1) == 0);
    /* the empty block stays empty */
    struct mqtt_prop_edit none = {0};
    CHECK_EQ_INT(edit("", 0, &none, out, sizeof out, &bad), 0);
    CHECK(!bad);
}

static void edit_replaces(void)
{
    uint8_t out[128];
    bool bad;
    /* topic alias 7, content type "a", user k=v, correlation 00 */
    static const char blk[] = "\x23\x00\x07"
                              "\x03\x00\x01" "a"
                              "\x26\x00\x01k\x00\x01v"
                              "\x09\x00\x01\x00";
    struct mqtt_user_prop nu[] = {{S("x-mgate-user"), S("bob")}, {S("k"), S("")}};
    struct mqtt_prop_edit e = {.user = nu, .user_count = 2, .has_content_type = false,
                               .has_response_topic = true, .response_topic = S("re/ply")};
    size_t n = edit(blk, sizeof blk - 1, &e, out, sizeof out, &bad);
    static const char want[] = "\x23\x00\x07"
                               "\x26\x00\x0cx-mgate-user\x00\x03" "bob"
                               "\x26\x00\x01k\x00\x00"
                               "\x09\x00\x01\x00"
                               "\x08\x00\x06re/ply";
    CHECK(!bad);
    CHECK_EQ_INT(n, sizeof want - 1);
    CHECK(memcmp(out, want, sizeof want - 1) == 0);

    /* every user property removed, content type kept, a new one appended last */
    struct mqtt_prop_edit rm = {.has_content_type = true, .content_type = S("b")};
    n = edit(blk, sizeof blk - 1, &rm, out, sizeof out, &bad);
    static const char want_rm[] = "\x23\x00\x07"
                                  "\x03\x00\x01" "b"
                                  "\x09\x00\x01\x00";
    CHECK_EQ_INT(n, sizeof want_rm - 1);
    CHECK(memcmp(out, want_rm, n) == 0);

    /* into an empty block: content type, response topic, then users */
    struct mqtt_prop_edit add = {.user = nu, .user_count = 1, .has_content_type = true,
                                 .content_type = S(""), .has_response_topic = true, .response_topic = S("r")};
    n = edit("", 0, &add, out, sizeof out, &bad);
    static const char want_add[] = "\x03\x00\x00"
                                   "\x08\x00\x01r"
                                   "\x26\x00\x0cx-mgate-user\x00\x03" "bob";
    CHECK_EQ_INT(n, sizeof want_add - 1);
    CHECK(memcmp(out, want_add, n) == 0);
}

/* A mount point moves just the response topic: user properties and the
 * content type stay where and as they were. */
static void edit_response_topic_only(void)
{
    uint8_t out[128];
    bool bad;
    static const char blk[] = "\x26\x00\x01k\x00\x01v"
                              "\x08\x00\x01r"
                              "\x03\x00\x01" "a"
                              "\x26\x00\x01k\x00\x01w";
    struct mqtt_prop_edit e = {.has_response_topic = true, .response_topic = S("t/r"), .response_topic_only = true};
    size_t n = edit(blk, sizeof blk - 1, &e, out, sizeof out, &bad);
    static const char want[] = "\x26\x00\x01k\x00\x01v"
                               "\x08\x00\x03t/r"
                               "\x03\x00\x01" "a"
                               "\x26\x00\x01k\x00\x01w";
    CHECK(!bad);
    CHECK_EQ_INT(n, sizeof want - 1);
    CHECK(memcmp(out, want, sizeof want - 1) == 0);
}

static void edit_limits(void)
{
    uint8_t out[64];
    bool bad;
    struct mqtt_user_prop nu[] = {{S("name"), S("value")}};
    struct mqtt_prop_edit e = {.user = nu, .user_count = 1};
    /* growth past the buffer: the size needed, nothing written */
    memset(out, 0xee, sizeof out);
    size_t n = edit("\x23\x00\x07", 3, &e, out, 10, &bad);
    CHECK(!bad);
    CHECK_EQ_INT(n, 3 + 1 + 2 + 4 + 2 + 5);
    CHECK(out[0] == 0xee && out[9] == 0xee);
    /* sizing with no buffer */
    CHECK_EQ_INT(edit("\x23\x00\x07", 3, &e, NULL, 0, &bad), n);
    /* a value over 65535 bytes cannot be encoded */
    static uint8_t big[70000];
    struct mqtt_user_prop huge[] = {{S("k"), {big, sizeof big}}};
    struct mqtt_prop_edit eh = {.user = huge, .user_count = 1};
    CHECK_EQ_INT(edit("", 0, &eh, out, sizeof out, &bad), 0);
    CHECK(bad);
    /* a view with a length but no bytes */
    struct mqtt_prop_edit en = {.has_content_type = true, .content_type = {NULL, 3}};
    CHECK_EQ_INT(edit("", 0, &en, out, sizeof out, &bad), 0);
    CHECK(bad);
    /* a malformed source block is refused, not half copied */
    CHECK_EQ_INT(edit("\x23\x00\x07\x26\x00", 5, &e, out, sizeof out, &bad), 0);
    CHECK(bad);
}

int main(void)
{
    edit_response_topic_only();
    values_of_a_publish();
    values_of_a_connect();
    values_malformed();
    edit_nothing_changes_nothing();
    edit_replaces();
    edit_limits();
    return check_done("mqtt_props_view");
}
