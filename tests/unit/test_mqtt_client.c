/* The MQTT client of the session layer (session/mqtt_client.c) without
 * sockets: the broker is a virtual connection from a fake dial that records
 * what the client writes; the test plays the broker's packets into it and
 * runs the loop for the timers and deferred calls. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rec_conn.h"
#include "session/internal.h"
#include "session/mqtt_client.h"

/* ---- the broker's side: a recording virtual connection ------------------ */

static struct rec broker;

static struct conn *rec_dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner)
{
    (void)p;
    return rec_open(l, &broker, cbs, owner);
}

/* Whether the client's output, from byte *at on, starts with pkt; moves *at past it. */
static bool sent(size_t *at, const uint8_t *pkt, size_t len)
{
    bool ok = broker.n >= *at + len && !memcmp(broker.buf + *at, pkt, len);
    if (ok)
        *at += len;
    return ok;
}

/* ---- the owner's side: what the callbacks saw --------------------------- */

static int ready, closed, messages, drains;
static enum mqc_end closed_why;
static uint8_t closed_code;
static char msg_topic[64], msg_payload[64];
static uint8_t msg_qos;
static bool msg_retain;
static struct mqtt_client *mc;
static bool close_in_message; /* the owner closes from inside on_message */
static bool hold_in_message;  /* the owner holds the reading from inside on_message */

static void on_ready(struct mqtt_client *m, void *ctx) { (void)m, (void)ctx, ready++; }
static void on_closed(struct mqtt_client *m, void *ctx, enum mqc_end why, uint8_t code)
{
    (void)m, (void)ctx;
    closed++;
    closed_why = why;
    closed_code = code;
    mc = NULL;
}
static void on_message(struct mqtt_client *m, void *ctx, const struct mqtt_publish *pub)
{
    (void)ctx;
    messages++;
    snprintf(msg_topic, sizeof(msg_topic), "%.*s", (int)pub->topic.len, (const char *)pub->topic.p);
    snprintf(msg_payload, sizeof(msg_payload), "%.*s", (int)pub->payload.len, (const char *)pub->payload.p);
    msg_qos = pub->qos;
    msg_retain = pub->retain;
    if (close_in_message) {
        mqtt_client_close(m);
        mc = NULL;
    }
    if (hold_in_message)
        mqtt_client_hold(m, true);
}
static void on_drain(struct mqtt_client *m, void *ctx) { (void)m, (void)ctx, drains++; }
static const struct mqtt_client_cbs cbs = {on_ready, on_closed, on_message, on_drain};

struct result {
    int calls;
    enum mqc_status st;
    uint8_t code;
    uint8_t codes[4];
    uint32_t n;
};
static void done(void *arg, enum mqc_status st, uint8_t code, const uint8_t *codes, uint32_t n)
{
    struct result *r = arg;
    r->calls++;
    r->st = st;
    r->code = code;
    r->n = n;
    if (codes && n <= sizeof(r->codes))
        memcpy(r->codes, codes, n);
}

/* ---- running ------------------------------------------------------------ */

static struct loop *loop;
static struct session_params params;
static struct loop_timer stop_timer;

static void stop(struct loop *l, struct loop_timer *t) { (void)t, loop_stop(l); }
/* Run the loop for ms (deferred calls and timers due meanwhile). */
static void spin(uint32_t ms)
{
    loop_timer_start(loop, &stop_timer, ms, stop);
    loop_run(loop);
}

static uint8_t version; /* of the next start(); 0: 3.1.1 */

static struct mqtt_client *start(uint16_t keepalive, uint16_t max_inflight, uint32_t connect_timeout_ms)
{
    loop = loop_new();
    stop_timer = (struct loop_timer){0};
    broker = (struct rec){0};
    ready = closed = messages = drains = 0;
    close_in_message = false;
    params = (struct session_params){.listener = "test", .connect_timeout_ms = 5000, .output_high_water = 256,
                                     .max_packet_size = 1 << 20, .dial = rec_dial};
    struct mqtt_client_opts o = {
        .p = &params, .client_id = {(const uint8_t *)"dev", 3}, .username = {(const uint8_t *)"u", 1},
        .password = {(const uint8_t *)"pw", 2}, .has_username = true, .has_password = true,
        .clean_session = true, .keepalive = keepalive, .connect_timeout_ms = connect_timeout_ms,
        .ping_timeout_ms = 100, .max_inflight = max_inflight, .version = version, .cbs = &cbs};
    mc = mqtt_client_open(loop, &o);
    return mc;
}

static void finish(void)
{
    if (mc)
        mqtt_client_close(mc);
    mc = NULL;
    spin(10);
    loop_timer_stop(loop, &stop_timer);
    loop_free(loop);
}

static const uint8_t connect_pkt[] = {0x10, 22, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2, 0, 30,
                                      0, 3, 'd', 'e', 'v', 0, 1, 'u', 0, 2, 'p', 'w'};
static const uint8_t connack_ok[] = {0x20, 2, 0, 0};
static const mgate_bytes topic = {(const uint8_t *)"a/b", 3}, payload = {(const uint8_t *)"hi", 2};

/* ---- tests -------------------------------------------------------------- */

/* CONNECT with the identity; requests before the CONNACK go out behind it;
 * QoS 0 is done after the call, QoS 1 on its PUBACK, QoS 2 on PUBCOMP. */
static void test_publish(void)
{
    start(30, 4, 0);
    CHECK(mc != NULL);
    size_t at = 0;
    CHECK(sent(&at, connect_pkt, sizeof(connect_pkt)));
    struct result r0 = {0}, r1 = {0}, r2 = {0}, stray = {0};
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 0, true, done, &r0), MQC_OK);
    CHECK_EQ_INT(r0.calls, 0); /* never from inside the call */
    static const uint8_t pub0[] = {0x31, 7, 0, 3, 'a', '/', 'b', 'h', 'i'};
    CHECK(sent(&at, pub0, sizeof(pub0)));
    CHECK(!mqtt_client_ready(mc));
    conn_deliver(broker.c, connack_ok, sizeof(connack_ok));
    CHECK_EQ_INT(ready, 1);
    CHECK(mqtt_client_ready(mc));
    spin(5);
    CHECK_EQ_INT(r0.calls, 1);
    CHECK_EQ_INT(r0.st, MQC_OK);

    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 1, false, done, &r1), MQC_OK);
    static const uint8_t pub1[] = {0x32, 9, 0, 3, 'a', '/', 'b', 0, 1, 'h', 'i'};
    CHECK(sent(&at, pub1, sizeof(pub1)));
    CHECK_EQ_INT(mqtt_client_inflight(mc), 1);
    static const uint8_t puback_other[] = {0x40, 2, 0, 9};
    conn_deliver(broker.c, puback_other, sizeof(puback_other)); /* not ours: ignored */
    CHECK_EQ_INT(r1.calls, 0);
    static const uint8_t puback1[] = {0x40, 2, 0, 1};
    conn_deliver(broker.c, puback1, sizeof(puback1));
    CHECK_EQ_INT(r1.calls, 1);
    CHECK_EQ_INT(r1.st, MQC_OK);
    CHECK_EQ_INT(mqtt_client_inflight(mc), 0);

    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 2, false, done, &r2), MQC_OK);
    static const uint8_t pub2[] = {0x34, 9, 0, 3, 'a', '/', 'b', 0, 2, 'h', 'i'};
    CHECK(sent(&at, pub2, sizeof(pub2)));
    static const uint8_t pubrec2[] = {0x50, 2, 0, 2}, pubrel2[] = {0x62, 2, 0, 2}, pubcomp2[] = {0x70, 2, 0, 2};
    conn_deliver(broker.c, pubrec2, sizeof(pubrec2));
    CHECK(sent(&at, pubrel2, sizeof(pubrel2)));
    CHECK_EQ_INT(r2.calls, 0);
    conn_deliver(broker.c, pubcomp2, sizeof(pubcomp2));
    CHECK_EQ_INT(r2.calls, 1);
    CHECK_EQ_INT(r2.st, MQC_OK);

    /* refused at once: no done */
    CHECK_EQ_INT(mqtt_client_publish(mc, (mgate_bytes){(const uint8_t *)"a/#", 3}, payload, 1, false, done, &stray),
                 MQC_INVALID);
    CHECK_EQ_INT(mqtt_client_publish(mc, (mgate_bytes){(const uint8_t *)"", 0}, payload, 0, false, done, &stray),
                 MQC_INVALID);
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 3, false, done, &stray), MQC_INVALID);
    spin(5);
    CHECK_EQ_INT(stray.calls, 0);

    /* the owner's close: DISCONNECT, and no callback any more */
    mqtt_client_close(mc);
    mc = NULL;
    static const uint8_t disconnect[] = {0xE0, 0};
    CHECK(sent(&at, disconnect, sizeof(disconnect)));
    CHECK_EQ_INT(at, broker.n);
    spin(5);
    CHECK_EQ_INT(closed, 0);
    finish();
}

/* At most max_inflight requests wait; more are refused at once. */
static void test_inflight_bound(void)
{
    start(0, 2, 0);
    conn_deliver(broker.c, connack_ok, sizeof(connack_ok));
    struct result r[3] = {{0}};
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 1, false, done, &r[0]), MQC_OK);
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 1, false, done, &r[1]), MQC_OK);
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 1, false, done, &r[2]), MQC_BUSY);
    static const uint8_t puback2[] = {0x40, 2, 0, 2};
    conn_deliver(broker.c, puback2, sizeof(puback2));
    CHECK_EQ_INT(r[1].calls, 1);
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 1, false, done, &r[2]), MQC_OK);
    /* the id still waiting (1) is not given out again */
    static const uint8_t pub3[] = {0x32, 9, 0, 3, 'a', '/', 'b', 0, 3, 'h', 'i'};
    CHECK(broker.n >= sizeof(pub3) && !memcmp(broker.buf + broker.n - sizeof(pub3), pub3, sizeof(pub3)));
    /* the broker goes away: the waiting ones fail, then on_closed */
    conn_fail(broker.c, 0);
    spin(5);
    CHECK_EQ_INT(r[0].calls, 1);
    CHECK_EQ_INT(r[0].st, MQC_FAILED);
    CHECK_EQ_INT(r[2].st, MQC_FAILED);
    CHECK_EQ_INT(closed, 1);
    CHECK_EQ_INT(closed_why, MQC_END_LOST);
    finish();
}

/* The broker's PUBLISHes: handed over and acknowledged; a QoS 2 one once. */
static void test_incoming(void)
{
    start(0, 0, 0);
    conn_deliver(broker.c, connack_ok, sizeof(connack_ok));
    size_t at = sizeof(connect_pkt);
    static const uint8_t in1[] = {0x33, 10, 0, 3, 'x', '/', 'y', 0, 7, 'o', 'n', 'e'};
    conn_deliver(broker.c, in1, sizeof(in1));
    CHECK_EQ_INT(messages, 1);
    CHECK_EQ_STR(msg_topic, "x/y");
    CHECK_EQ_STR(msg_payload, "one");
    CHECK_EQ_INT(msg_qos, 1);
    CHECK(msg_retain);
    static const uint8_t puback7[] = {0x40, 2, 0, 7};
    CHECK(sent(&at, puback7, sizeof(puback7)));
    static const uint8_t in2[] = {0x34, 10, 0, 3, 'x', '/', 'y', 0, 8, 't', 'w', 'o'};
    static const uint8_t in2dup[] = {0x3C, 10, 0, 3, 'x', '/', 'y', 0, 8, 't', 'w', 'o'};
    static const uint8_t pubrec8[] = {0x50, 2, 0, 8}, pubrel8[] = {0x62, 2, 0, 8}, pubcomp8[] = {0x70, 2, 0, 8};
    conn_deliver(broker.c, in2, sizeof(in2));
    CHECK_EQ_INT(messages, 2);
    CHECK(sent(&at, pubrec8, sizeof(pubrec8)));
    conn_deliver(broker.c, in2dup, sizeof(in2dup)); /* before its PUBREL: not handed over again */
    CHECK_EQ_INT(messages, 2);
    CHECK(sent(&at, pubrec8, sizeof(pubrec8)));
    conn_deliver(broker.c, pubrel8, sizeof(pubrel8));
    CHECK(sent(&at, pubcomp8, sizeof(pubcomp8)));
    conn_deliver(broker.c, in2, sizeof(in2)); /* after it: a new message with a reused id */
    CHECK_EQ_INT(messages, 3);

    /* SUBSCRIBE and UNSUBSCRIBE with their acks; two packets in one read */
    struct result rs = {0}, ru = {0};
    mgate_bytes f[2] = {{(const uint8_t *)"s/+", 3}, {(const uint8_t *)"t/#", 3}};
    uint8_t q[2] = {1, 2};
    CHECK_EQ_INT(mqtt_client_subscribe(mc, f, q, 2, done, &rs), MQC_OK);
    CHECK_EQ_INT(mqtt_client_unsubscribe(mc, f, 1, done, &ru), MQC_OK);
    at = broker.n - 9 - 16;
    static const uint8_t sub[] = {0x82, 14, 0, 1, 0, 3, 's', '/', '+', 1, 0, 3, 't', '/', '#', 2};
    static const uint8_t unsub[] = {0xA2, 7, 0, 2, 0, 3, 's', '/', '+'};
    CHECK(sent(&at, sub, sizeof(sub)));
    CHECK(sent(&at, unsub, sizeof(unsub)));
    static const uint8_t acks[] = {0x90, 4, 0, 1, 1, 0x80, 0xB0, 2, 0, 2};
    conn_deliver(broker.c, acks, sizeof(acks));
    CHECK_EQ_INT(rs.calls, 1);
    CHECK_EQ_INT(rs.n, 2);
    CHECK_EQ_INT(rs.codes[0], 1);
    CHECK_EQ_INT(rs.codes[1], 0x80);
    CHECK_EQ_INT(ru.calls, 1);
    CHECK_EQ_INT(mqtt_client_subscribe(mc, (mgate_bytes[]){{(const uint8_t *)"a/#/b", 5}}, q, 1, done, &rs),
                 MQC_INVALID);

    /* the owner may close from inside on_message: no ack, no callback after */
    close_in_message = true;
    size_t before = broker.n;
    conn_deliver(broker.c, in1, sizeof(in1));
    CHECK_EQ_INT(messages, 4);
    static const uint8_t disconnect[] = {0xE0, 0};
    CHECK(broker.n == before + 2 && !memcmp(broker.buf + before, disconnect, 2));
    spin(5);
    CHECK_EQ_INT(closed, 0);
    finish();
}

/* A PUBLISH over MAX_PACKET_SIZE from the broker is acknowledged and read
 * past, in pieces, without ending the session; the next one is taken. */
static void test_oversized(void)
{
    start(0, 0, 0);
    params.max_packet_size = 64;
    conn_deliver(broker.c, connack_ok, sizeof(connack_ok));
    size_t at = sizeof(connect_pkt);
    uint8_t big[2 + 98] = {0x32, 98, 0, 3, 'b', '/', 'g', 0x12, 0x34}; /* QoS 1, id 0x1234, 89 payload bytes */
    conn_deliver(broker.c, big, 6); /* the topic has not all come */
    CHECK_EQ_INT(closed, 0);
    conn_deliver(broker.c, big + 6, 20);
    static const uint8_t puback[] = {0x40, 2, 0x12, 0x34};
    CHECK(sent(&at, puback, sizeof(puback)));
    static const uint8_t in1[] = {0x30, 8, 0, 3, 'x', '/', 'y', 'o', 'k', '!'};
    uint8_t rest[sizeof(big) - 26 + sizeof(in1)];
    memcpy(rest, big + 26, sizeof(big) - 26);
    memcpy(rest + sizeof(big) - 26, in1, sizeof(in1));
    conn_deliver(broker.c, rest, sizeof(rest)); /* its last bytes and the next PUBLISH in one read */
    CHECK_EQ_INT(closed, 0);
    CHECK_EQ_INT(messages, 1);
    CHECK_EQ_STR(msg_topic, "x/y");
    CHECK_EQ_STR(msg_payload, "ok!");
    CHECK(mqtt_client_ready(mc));
    finish();
}

/* A CONNACK with an error: on_closed REFUSED with its code; what was asked
 * before it fails. */
static void test_refused(void)
{
    start(0, 0, 0);
    struct result r = {0};
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 1, false, done, &r), MQC_OK);
    static const uint8_t connack_5[] = {0x20, 2, 0, 5};
    conn_deliver(broker.c, connack_5, sizeof(connack_5));
    spin(5);
    CHECK_EQ_INT(ready, 0);
    CHECK_EQ_INT(closed, 1);
    CHECK_EQ_INT(closed_why, MQC_END_REFUSED);
    CHECK_EQ_INT(closed_code, 5);
    CHECK_EQ_INT(r.calls, 1);
    CHECK_EQ_INT(r.st, MQC_FAILED);
    finish();
}

/* No CONNACK within the connect timeout; a broker that is not MQTT. */
static void test_timeouts_and_garbage(void)
{
    start(0, 0, 50);
    spin(150);
    CHECK_EQ_INT(closed, 1);
    CHECK_EQ_INT(closed_why, MQC_END_TIMEOUT);
    finish();

    start(0, 0, 0);
    static const uint8_t bad_connack[] = {0x20, 3, 0, 0, 0}; /* a byte too many: malformed */
    conn_deliver(broker.c, bad_connack, sizeof(bad_connack));
    spin(5);
    CHECK_EQ_INT(closed, 1);
    CHECK_EQ_INT(closed_why, MQC_END_PROTOCOL);
    finish();

    start(0, 0, 0); /* a PUBACK before the CONNACK */
    static const uint8_t puback1[] = {0x40, 2, 0, 1};
    conn_deliver(broker.c, puback1, sizeof(puback1));
    spin(5);
    CHECK_EQ_INT(closed_why, MQC_END_PROTOCOL);
    finish();
}

/* PINGREQ after keepalive seconds of silence; no PINGRESP within
 * ping_timeout_ms ends it; a PINGRESP keeps it. */
static void test_keepalive(void)
{
    start(1, 0, 0);
    conn_deliver(broker.c, connack_ok, sizeof(connack_ok));
    size_t at = sizeof(connect_pkt);
    static const uint8_t pingreq[] = {0xC0, 0}, pingresp[] = {0xD0, 0};
    spin(1050);
    CHECK(sent(&at, pingreq, sizeof(pingreq)));
    conn_deliver(broker.c, pingresp, sizeof(pingresp));
    spin(200);
    CHECK_EQ_INT(closed, 0);
    spin(1000); /* the second PINGREQ goes unanswered */
    CHECK(sent(&at, pingreq, sizeof(pingreq)));
    spin(150);
    CHECK_EQ_INT(closed, 1);
    CHECK_EQ_INT(closed_why, MQC_END_PING_TIMEOUT);
    finish();
}

/* Back-pressure: past OUTPUT_HIGH_WATER the client is not writable and the
 * broker is not read; on_drain when it empties. */
static void test_backpressure(void)
{
    start(0, 0, 0);
    conn_deliver(broker.c, connack_ok, sizeof(connack_ok));
    broker.stall = true;
    uint8_t big[300] = {0};
    struct result r = {0};
    CHECK(mqtt_client_writable(mc));
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, (mgate_bytes){big, sizeof(big)}, 0, false, done, &r), MQC_OK);
    CHECK(!mqtt_client_writable(mc));
    static const uint8_t in0[] = {0x30, 6, 0, 3, 'x', '/', 'y', '!'};
    conn_deliver(broker.c, in0, sizeof(in0));
    CHECK_EQ_INT(messages, 0); /* kept in the input */
    broker.stall = false;
    buf_consume(&broker.c->out, broker.c->out.len); /* the socket took it: what the loop then does */
    broker.c->cbs->on_drain(broker.c);
    spin(5);
    CHECK_EQ_INT(drains, 1);
    CHECK_EQ_INT(messages, 1);
    finish();
}

/* The owner's hold: asked from inside on_message, the next message waits
 * (its predecessor is still acknowledged), a drain does not end it, the
 * release hands it over from a deferred call. */
static void test_hold(void)
{
    start(0, 0, 0);
    conn_deliver(broker.c, connack_ok, sizeof(connack_ok));
    size_t at = sizeof(connect_pkt);
    hold_in_message = true;
    static const uint8_t two[] = {0x32, 8, 0, 3, 'x', '/', 'y', 0, 9, '1', 0x30, 6, 0, 3, 'x', '/', 'y', '2'};
    conn_deliver(broker.c, two, sizeof(two));
    hold_in_message = false;
    CHECK_EQ_INT(messages, 1);
    CHECK_EQ_STR(msg_payload, "1");
    static const uint8_t puback9[] = {0x40, 2, 0, 9};
    CHECK(sent(&at, puback9, sizeof(puback9)));
    broker.c->cbs->on_drain(broker.c);
    spin(5);
    CHECK_EQ_INT(messages, 1); /* still held */
    mqtt_client_hold(mc, false);
    CHECK_EQ_INT(messages, 1); /* not from inside the call */
    spin(5);
    CHECK_EQ_INT(messages, 2);
    CHECK_EQ_STR(msg_payload, "2");
    finish();
}

/* 5.0: our Receive Maximum in the CONNECT, the broker's honoured, a
 * PUBACK's failure code, the broker's DISCONNECT. */
static void test_v5(void)
{
    version = MQTT_V5;
    start(30, 4, 0);
    version = 0;
    size_t at = 0;
    static const uint8_t connect5[] = {0x10, 26, 0, 4, 'M', 'Q', 'T', 'T', 5, 0xC2, 0, 30, 3, 0x21, 0, 24,
                                       0, 3, 'd', 'e', 'v', 0, 1, 'u', 0, 2, 'p', 'w'};
    CHECK(sent(&at, connect5, sizeof(connect5)));
    static const uint8_t connack_rm1[] = {0x20, 6, 0, 0, 3, 0x21, 0, 1}; /* Receive Maximum 1 */
    conn_deliver(broker.c, connack_rm1, sizeof(connack_rm1));
    CHECK_EQ_INT(ready, 1);
    struct result r1 = {0}, r2 = {0}, r0 = {0};
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 1, false, done, &r1), MQC_OK);
    static const uint8_t pub1[] = {0x32, 10, 0, 3, 'a', '/', 'b', 0, 1, 0, 'h', 'i'};
    CHECK(sent(&at, pub1, sizeof(pub1)));
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 2, false, done, &r2), MQC_BUSY);
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, payload, 0, false, done, &r0), MQC_OK); /* QoS 0 is not counted */
    static const uint8_t puback_refused[] = {0x40, 3, 0, 1, 0x87};
    conn_deliver(broker.c, puback_refused, sizeof(puback_refused));
    CHECK_EQ_INT(r1.calls, 1);
    CHECK_EQ_INT(r1.st, MQC_REFUSED);
    CHECK_EQ_INT(r1.code, 0x87);
    static const uint8_t disconnect[] = {0xE0, 2, 0x8B, 0};
    conn_deliver(broker.c, disconnect, sizeof(disconnect));
    spin(5);
    CHECK_EQ_INT(closed, 1);
    CHECK_EQ_INT(closed_why, MQC_END_LOST);
    CHECK_EQ_INT(closed_code, 0x8B);
    finish();
}

/* A closed client whose DISCONNECT cannot leave waits out its linger; the
 * loop freed meanwhile (exit) ends it then (ASan: nothing leaks). */
static void test_exit_while_closing(void)
{
    start(0, 0, 0);
    conn_deliver(broker.c, connack_ok, sizeof(connack_ok));
    broker.stall = true;
    uint8_t big[300] = {0};
    CHECK_EQ_INT(mqtt_client_publish(mc, topic, (mgate_bytes){big, sizeof(big)}, 0, false, NULL, NULL), MQC_OK);
    mqtt_client_close(mc);
    mc = NULL;
    spin(20);
    CHECK(!broker.closed); /* still flushing */
    loop_timer_stop(loop, &stop_timer);
    loop_free(loop);
    CHECK(broker.closed);
}

int main(void)
{
    test_publish();
    test_inflight_bound();
    test_incoming();
    test_oversized();
    test_refused();
    test_timeouts_and_garbage();
    test_keepalive();
    test_backpressure();
    test_hold();
    test_v5();
    test_exit_while_closing();
    return check_done("test_mqtt_client");
}
