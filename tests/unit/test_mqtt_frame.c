/*
 * Framing: a stream of many packets frames the same whether it arrives in
 * one piece, a byte at a time or in odd chunks; oversized packets are
 * refused from the header alone; variable byte integers at their limits.
 */
#include <stdlib.h>

#include "check.h"
#include "mqtt/mqtt.h"

#define MAX_SIZE (1u << 20)

/* Payload sizes around the points where the remaining length grows a byte. */
static const uint32_t sizes[] = {0, 1, 120, 121, 122, 123, 124, 125, 126, 127, 128,
                                 16375, 16376, 16377, 16378, 16380, 16384, 70000};

static size_t put_packet(uint8_t *out, size_t cap, unsigned i, const uint8_t *payload)
{
    struct mqtt_packet p = {.type = MQTT_PUBLISH};

    switch (i % 4) {
    case 0:
        p.publish.topic = (mqtt_str){(const uint8_t *)"t/x", 3};
        p.publish.qos = (uint8_t)(i % 3);
        p.publish.id = p.publish.qos ? (uint16_t)(i + 1) : 0;
        p.publish.payload = (mqtt_str){payload, sizes[(i / 4) % (sizeof sizes / sizeof sizes[0])]};
        break;
    case 1:
        p.type = MQTT_PINGREQ;
        break;
    case 2:
        p.type = MQTT_PUBACK;
        p.ack.id = (uint16_t)(i + 1);
        break;
    case 3:
        p.type = MQTT_SUBSCRIBE;
        p.subscribe = (struct mqtt_subscribe){.id = 9, .list = (const uint8_t *)"\0\1#\1",
                                              .list_len = 4, .count = 1};
        break;
    }
    size_t n = mqtt_encode(&p, MQTT_V311, out, cap);
    return n <= cap ? n : 0;
}

/* Where each packet starts and how long it is, framing the whole stream. */
static size_t frame_all(const uint8_t *s, size_t len, size_t *totals)
{
    size_t n = 0, off = 0, total;

    while (off < len && mqtt_frame(s + off, len - off, MAX_SIZE, &total) == MQTT_OK) {
        totals[n++] = total;
        off += total;
    }
    CHECK_EQ_INT(off, len);
    return n;
}

/* Feed the stream `chunk(i)` bytes at a time into a receive window and frame
 * whatever whole packets the window holds after each read. */
static size_t frame_chunked(const uint8_t *s, size_t len, size_t *totals, size_t (*chunk)(size_t))
{
    size_t n = 0, start = 0, have = 0, total, wrong = 0;

    for (size_t i = 0; start + have < len; i++) {
        size_t c = chunk(i);
        have += c < len - start - have ? c : len - start - have;
        mqtt_rc rc;
        while ((rc = mqtt_frame(s + start, have, MAX_SIZE, &total)) == MQTT_OK) {
            totals[n++] = total;
            start += total;
            have -= total;
        }
        /* once the fixed header is in, the size is known */
        if (rc != MQTT_NEED_MORE || (have >= 5 && total <= have))
            wrong++;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(have, 0);
    return n;
}

static size_t one(size_t i) { return (void)i, 1; }
static size_t odd(size_t i) { return (i * 7919u) % 97u + 1; }
static size_t big(size_t i) { return (i * 104729u) % 40000u + 1; }

static void stream(void)
{
    enum { PACKETS = 400 };
    uint8_t *payload = calloc(70000, 1), *s = malloc(8u << 20);
    size_t len = 0, want[PACKETS], got[PACKETS];
    size_t (*chunks[])(size_t) = {one, odd, big};

    for (unsigned i = 0; i < PACKETS; i++)
        len += put_packet(s + len, (8u << 20) - len, i, payload);
    size_t n = frame_all(s, len, want);
    CHECK_EQ_INT(n, PACKETS);
    for (size_t i = 0, off = 0; i < n; off += want[i++]) {
        struct mqtt_packet p;
        CHECK_EQ_INT(mqtt_decode(s + off, want[i], MQTT_V311, true, &p), MQTT_OK);
    }
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        memset(got, 0, sizeof got);
        CHECK_EQ_INT(frame_chunked(s, len, got, chunks[k]), n);
        CHECK(memcmp(want, got, sizeof got) == 0);
    }
    free(payload);
    free(s);
}

static void frame_case(const char *bytes, size_t len, size_t max, mqtt_rc want_rc,
                       size_t want_total)
{
    size_t total = 12345;

    CHECK_EQ_INT(mqtt_frame((const uint8_t *)bytes, len, max, &total), want_rc);
    CHECK_EQ_INT(total, want_total);
}

static void header_cases(void)
{
    frame_case("", 0, 100, MQTT_NEED_MORE, 0);
    frame_case("\x30", 1, 100, MQTT_NEED_MORE, 0);
    frame_case("\xc0\x00", 2, 100, MQTT_OK, 2);
    frame_case("\x30\x80", 2, 100, MQTT_NEED_MORE, 0);     /* header incomplete */
    frame_case("\x30\x80\x01", 3, 1000, MQTT_NEED_MORE, 131);
    frame_case("\x30\x05\x00\x01", 4, 100, MQTT_NEED_MORE, 7);
    frame_case("\x30\x80\x80\x80", 4, 100, MQTT_NEED_MORE, 0);
    frame_case("\x30\x80\x80\x80\x80", 5, 100, MQTT_MALFORMED, 0); /* 5th byte */
    frame_case("\x30\xff\xff\xff\xff\x7f", 6, 100, MQTT_MALFORMED, 0);
    frame_case("\x30\x80\x00", 3, 100, MQTT_MALFORMED, 0); /* not minimal */
    frame_case("\x30\xff\x80\x00", 4, 1u << 30, MQTT_MALFORMED, 0);
    /* oversized: known and refused as soon as the length is */
    frame_case("\x30\xff\xff\x7f", 4, 1000, MQTT_TOO_LARGE, 1 + 3 + 2097151);
    frame_case("\x30\xff\xff\xff\x7f", 5, SIZE_MAX, MQTT_NEED_MORE, 268435460);
    frame_case("\x30\xff\xff\xff\x7f", 5, 268435459, MQTT_TOO_LARGE, 268435460);
    frame_case("\x30\x08", 2, 9, MQTT_TOO_LARGE, 10);
    frame_case("\x30\x08", 2, 10, MQTT_NEED_MORE, 10);
    frame_case("\xe0\x00\xc0", 3, 2, MQTT_OK, 2);          /* stops at the packet */
    frame_case("\xe0\x00", 2, 1, MQTT_TOO_LARGE, 2);
}

static void varints(void)
{
    static const struct {
        uint32_t v, size;
        const char *enc;
    } cases[] = {
        {0, 1, "\x00"},
        {127, 1, "\x7f"},
        {128, 2, "\x80\x01"},
        {16383, 2, "\xff\x7f"},
        {16384, 3, "\x80\x80\x01"},
        {2097151, 3, "\xff\xff\x7f"},
        {2097152, 4, "\x80\x80\x80\x01"},
        {268435455, 4, "\xff\xff\xff\x7f"},
    };
    uint8_t out[8];
    uint32_t v, used;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(out, 0, sizeof out);
        CHECK_EQ_INT(mqtt_varint_size(cases[i].v), cases[i].size);
        CHECK_EQ_INT(mqtt_varint_put(out, cases[i].v), cases[i].size);
        CHECK(memcmp(out, cases[i].enc, cases[i].size) == 0);
        CHECK_EQ_INT(mqtt_varint_get(out, cases[i].size, &v, &used), MQTT_OK);
        CHECK(v == cases[i].v && used == cases[i].size);
        CHECK_EQ_INT(mqtt_varint_get(out, cases[i].size - 1, &v, &used), MQTT_NEED_MORE);
    }
    CHECK_EQ_INT(mqtt_varint_size(268435456), 0);
    CHECK_EQ_INT(mqtt_varint_put(out, UINT32_MAX), 0);
    CHECK_EQ_INT(mqtt_varint_get((const uint8_t *)"\x80\x80\x80\x80\x01", 5, &v, &used),
                 MQTT_MALFORMED);
    CHECK_EQ_INT(mqtt_varint_get((const uint8_t *)"\xff\x00", 2, &v, &used), MQTT_MALFORMED);
    CHECK_EQ_INT(mqtt_varint_get((const uint8_t *)"\x80\x80\x80\x00", 4, &v, &used),
                 MQTT_MALFORMED);
}

int main(void)
{
    stream();
    header_cases();
    varints();
    return check_done("test_mqtt_frame");
}
