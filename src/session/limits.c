#include "session/limits.h"

#include <stdlib.h>

#include "session/internal.h"

struct bucket {
    double tokens; /* may go below 0: a packet larger than a second's worth still passes, then waits */
    uint64_t last; /* loop ms of the last refill */
};

struct session_limits {
    struct bucket msgs, bytes;
    struct loop_timer resume;
    struct mgate_session *s;
    struct conn *paused;
};

static void refill(struct bucket *b, uint32_t rate, uint64_t now)
{
    b->tokens += (double)(now - b->last) * rate / 1000.0;
    if (b->tokens > rate)
        b->tokens = rate; /* a burst of at most one second's worth */
    b->last = now;
}

int limits_start(struct mgate_session *s)
{
    if (!s->p->publish_rate && !s->p->publish_bandwidth)
        return 0;
    struct session_limits *lim = calloc(1, sizeof(*lim));
    if (!lim)
        return -1;
    uint64_t now = loop_now(s->loop);
    lim->msgs = (struct bucket){s->p->publish_rate, now};
    lim->bytes = (struct bucket){s->p->publish_bandwidth, now};
    lim->s = s;
    s->limits = lim;
    return 0;
}

void limits_free(struct mgate_session *s)
{
    if (s->limits) {
        loop_timer_stop(s->loop, &s->limits->resume);
        free(s->limits);
        s->limits = NULL;
    }
}

static void on_resume(struct loop *l, struct loop_timer *t)
{
    (void)l;
    struct session_limits *lim = (struct session_limits *)((char *)t - offsetof(struct session_limits, resume));
    struct mgate_session *s = lim->s;
    if (s->state != SESSION_CLOSING && s->client == lim->paused)
        session_resume_reading(s); /* unless another reason holds it */
}

/* v5 QoS 1/2: PUBACK/PUBREC with the reason, and the PUBLISH is dropped. */
static bool refuse(struct mgate_session *s, const uint8_t *raw, uint32_t len, uint8_t reason)
{
    uint8_t qos = (raw[0] >> 1) & 3;
    struct mqtt_packet pkt;
    if (s->version != MQTT_V5 || !qos || mqtt_decode(raw, len, s->version, true, &pkt) != MQTT_OK)
        return false;
    reply_ack(s->client, qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, s->version, pkt.publish.id, reason);
    METRIC_INC(session_metrics(s)->publish_refused[MGATE_UP]);
    return true;
}

enum limit_verdict limits_publish(struct mgate_session *s, struct conn *c, const uint8_t *raw, uint32_t len)
{
    struct session_limits *lim = s->limits;
    uint64_t now = loop_now(s->loop);
    uint32_t rate = s->p->publish_rate, bw = s->p->publish_bandwidth;
    double wait_ms = 0;
    uint8_t reason = 0;
    if (rate) {
        refill(&lim->msgs, rate, now);
        if (lim->msgs.tokens < 1)
            wait_ms = (1 - lim->msgs.tokens) * 1000.0 / rate, reason = MQTT_RC_MESSAGE_RATE_TOO_HIGH;
    }
    if (bw) {
        refill(&lim->bytes, bw, now);
        if (lim->bytes.tokens < 0 && -lim->bytes.tokens * 1000.0 / bw > wait_ms)
            wait_ms = -lim->bytes.tokens * 1000.0 / bw, reason = MQTT_RC_QUOTA_EXCEEDED;
    }
    if (!reason) {
        lim->msgs.tokens -= 1;
        lim->bytes.tokens -= len;
        return LIMIT_OK;
    }
    METRIC_INC(session_metrics(s)->limit_hits[reason == MQTT_RC_QUOTA_EXCEEDED]);
    /* 0x96 (Message rate too high) is a DISCONNECT reason only: a PUBACK or
     * PUBREC may not carry it [MQTT-3.4.2.1, 3.5.2.1], so both limits are
     * refused as 0x97 (Quota exceeded); the counter above tells them apart. */
    if (refuse(s, raw, len, MQTT_RC_QUOTA_EXCEEDED))
        return LIMIT_REFUSED;
    conn_pause_read(c);
    lim->paused = c;
    loop_timer_start(s->loop, &lim->resume, (uint32_t)wait_ms + 1, on_resume);
    return LIMIT_WAIT;
}
