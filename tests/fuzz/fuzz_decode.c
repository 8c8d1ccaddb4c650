/*
 * Fuzzing the MQTT codec: frame arbitrary bytes as a stream, decode each
 * packet at every protocol level in both directions, and for every packet
 * the decoder accepts require that encoding it gives back the same bytes
 * and that those decode again.  Any disagreement aborts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/mqtt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why, const uint8_t *p, size_t n, uint8_t v, bool c)
{
    fprintf(stderr, "fuzz_decode: %s (v%u, from %s, %zu bytes)\n", why, v,
            c ? "client" : "server", n);
    for (size_t i = 0; i < n && i < 64; i++)
        fprintf(stderr, "%02x%s", p[i], i + 1 < n ? " " : "\n");
    abort();
}

/* What decode found must be consistent with the helpers built on it. */
static bool walks_agree(const struct mqtt_packet *pkt)
{
    const struct mqtt_subscribe *s = &pkt->subscribe;
    uint32_t off = 0, n = 0;
    mqtt_str f;
    uint8_t o;

    if (pkt->type == MQTT_SUBSCRIBE)
        while (mqtt_sub_next(s, &off, &f, &o))
            n++;
    else if (pkt->type == MQTT_UNSUBSCRIBE)
        while (mqtt_unsub_next(s, &off, &f))
            n++;
    else
        return true;
    return n == s->count && off == s->list_len;
}

static void roundtrip(const uint8_t *p, size_t n, uint8_t v, bool c)
{
    struct mqtt_packet pkt, again;
    mqtt_rc rc = mqtt_decode(p, n, v, c, &pkt);

    if (rc == MQTT_NEED_MORE || rc == MQTT_TOO_LARGE)
        fail("decode answered like frame", p, n, v, c);
    if (rc == MQTT_BAD_VERSION && pkt.type != MQTT_CONNECT)
        fail("bad version outside CONNECT", p, n, v, c);
    if (rc != MQTT_OK)
        return;
    if (!walks_agree(&pkt))
        fail("list walk disagrees with count", p, n, v, c);
    if (mqtt_encode(&pkt, v, NULL, 0) != n)
        fail("encoded size differs", p, n, v, c);
    uint8_t *out = malloc(n);
    if (!out)
        abort();
    if (mqtt_encode(&pkt, v, out, n) != n || memcmp(out, p, n) != 0)
        fail("encode(decode(x)) != x", p, n, v, c);
    if (mqtt_decode(out, n, v, c, &again) != MQTT_OK)
        fail("re-encoded packet does not decode", p, n, v, c);
    free(out);
}

static void one_packet(const uint8_t *p, size_t n)
{
    size_t total;

    /* one byte short is never a packet; a limit one below is too large */
    if (mqtt_frame(p, n - 1, n, &total) != MQTT_NEED_MORE)
        fail("frame of a prefix", p, n, 0, true);
    if (mqtt_frame(p, n, n - 1, &total) != MQTT_TOO_LARGE || total != n)
        fail("frame under a lower limit", p, n, 0, true);
    for (uint8_t v = MQTT_V31; v <= MQTT_V5; v++) {
        roundtrip(p, n, v, true);
        roundtrip(p, n, v, false);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0, total;

    while (off < size && mqtt_frame(data + off, size - off, size, &total) == MQTT_OK) {
        one_packet(data + off, total);
        off += total;
    }
    return 0;
}
