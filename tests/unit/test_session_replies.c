/* Packets mgate itself sends a client must be ones MQTT lets a server send
 * there (found by tests/fuzz/fuzz_session.c, which decodes everything a
 * client is sent).  A session on two recording virtual connections, no
 * handler (everything allowed). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rec_conn.h"
#include "session/internal.h"

static struct rec client, broker;
static struct loop *loop;
static struct session_list list;
static struct session_params params;
static const struct sockaddr_in peer = {.sin_family = AF_INET};

static struct conn *rec_dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner)
{
    (void)p;
    return rec_open(l, &broker, cbs, owner);
}

static uint32_t rate; /* PUBLISH_RATE_LIMIT of the next start() */
static struct mgate_session *start(void)
{
    memset(&client, 0, sizeof(client));
    memset(&broker, 0, sizeof(broker));
    loop = loop_new();
    list = (struct session_list){0};
    params = (struct session_params){.listener = "test", .connect_timeout_ms = 5000, .output_high_water = 65536,
                                     .max_packet_size = 1 << 20, .dial = rec_dial, .publish_rate = rate};
    rec_open(loop, &client, NULL, NULL);
    return session_start(loop, client.c, (const struct sockaddr *)&peer, &params, &list);
}

static void stop(struct loop *l, struct loop_timer *t)
{
    (void)t;
    loop_stop(l);
}

static void finish(void)
{
    session_list_close_all(&list);
    struct loop_timer t = {0};
    loop_timer_start(loop, &t, 10, stop);
    loop_run(loop);
    CHECK_EQ_INT(list.count, 0);
    loop_free(loop);
    free(list.spare);
}

/* A 5.0 CONNECT with an Authentication Method has the client read while the
 * broker's CONNACK is awaited (for its AUTH packets).  A malformed packet
 * then closes the pair, without a DISCONNECT: a server must not send one
 * before its CONNACK [MQTT-3.14.0-1]. */
static void test_no_disconnect_before_connack(void)
{
    static const uint8_t connect_auth[] = {0x10, 18, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60,
                                           4, 0x15, 0, 1, 'm', 0, 1, 'c'};
    static const uint8_t bad_auth[] = {0xF1, 0}; /* AUTH with reserved flag bits: malformed */
    struct mgate_session *s = start();
    conn_deliver(client.c, connect_auth, sizeof(connect_auth));
    CHECK_EQ_INT(s->state, SESSION_AWAIT_CONNACK);
    CHECK_EQ_INT(broker.n, sizeof(connect_auth));
    conn_deliver(client.c, bad_auth, sizeof(bad_auth));
    CHECK(mgate_session_closed(s));
    CHECK_EQ_INT(client.n, 0); /* no DISCONNECT 0x81 */
    finish();
}

/* PUBLISH_RATE_LIMIT: a 5.0 QoS 1 PUBLISH over the limit is refused with
 * PUBACK 0x97 (Quota exceeded): 0x96 (Message rate too high) is a
 * DISCONNECT reason, not a PUBACK one [MQTT-3.4.2.1]. */
static void test_rate_limit_code(void)
{
    static const uint8_t connect5[] = {0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 1, 'c'};
    static const uint8_t connack5[] = {0x20, 3, 0, 0, 0};
    static const uint8_t pub1[] = {0x32, 7, 0, 1, 't', 0, 1, 0, 'x'};
    static const uint8_t pub2[] = {0x32, 7, 0, 1, 't', 0, 2, 0, 'y'};
    static const uint8_t puback_quota[] = {0x40, 3, 0, 2, 0x97};
    rate = 1;
    struct mgate_session *s = start();
    conn_deliver(client.c, connect5, sizeof(connect5));
    conn_deliver(broker.c, connack5, sizeof(connack5));
    CHECK_EQ_INT(s->state, SESSION_OPEN);
    conn_deliver(client.c, pub1, sizeof(pub1)); /* the bucket's one token */
    conn_deliver(client.c, pub2, sizeof(pub2)); /* over the limit: refused */
    CHECK_EQ_INT(broker.n, sizeof(connect5) + sizeof(pub1));
    CHECK_EQ_INT(client.n, sizeof(connack5) + sizeof(puback_quota));
    CHECK(client.n >= sizeof(puback_quota) &&
          !memcmp(client.buf + client.n - sizeof(puback_quota), puback_quota, sizeof(puback_quota)));
    finish();
}

/* A CONNECT of a protocol level mgate does not speak is answered CONNACK 1
 * (in 3.1.1's form: the client's own is unknown) and the connection is
 * closed, as for any refusal: before, the session stayed waiting for a
 * CONNECT, and one sent after the refusal went to the broker (found by
 * fuzz_session). */
static void test_bad_version_closes(void)
{
    static const uint8_t connect7[] = {0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 7, 0x02, 0, 60, 0, 1, 'c'};
    static const uint8_t connect5[] = {0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 1, 'c'};
    static const uint8_t connack_version[] = {0x20, 2, 0, 1};
    struct mgate_session *s = start();
    conn_deliver(client.c, connect7, sizeof(connect7));
    CHECK(client.n == sizeof(connack_version) && !memcmp(client.buf, connack_version, sizeof(connack_version)));
    bool closed = mgate_session_closed(s);
    CHECK(closed);
    if (!closed) /* what the old code did with the next CONNECT */
        conn_deliver(client.c, connect5, sizeof(connect5));
    CHECK_EQ_INT(broker.n, 0);
    CHECK(!broker.c); /* never dialled */
    finish();
}

int main(void)
{
    test_no_disconnect_before_connack();
    test_bad_version_closes();
    test_rate_limit_code();
    return check_done("test_session_replies");
}
