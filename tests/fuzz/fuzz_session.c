/*
 * The stateful session fuzzer (issue 20): the real session, verdict engine,
 * connection and codec code (src/session, src/net/conn.c, src/mqtt, the
 * loop's timers and deferred calls) driven in-process.  The client and the
 * broker are virtual connections (conn_virtual, the broker's through
 * session_params.dial) whose transports behave like sockets: the peer's
 * bytes wait "in the kernel" until the connection asks to read (EPOLLIN
 * interest), come in pieces of a size the input chooses, and a peer may
 * stall (writes get EAGAIN), take only part of a write, close (FIN) or
 * reset.  The loop is turned by hand (this file includes core/loop.c and
 * net/conn.c to reach their static turn and event functions), on a
 * virtual clock the input advances, so timers (CONNECT deadline, linger,
 * packet deadline, rate limits) fire when the input says.
 *
 * The input is a program: a few parameter bytes (protocol version, max
 * packet size, high water, refusal mode, mount point, rate limit), then
 * operations (see enum op): packets from either peer, built well-formed
 * from input bytes or raw, read chunk sizes, stalls, closes, loop turns,
 * time, the handlers' verdict modes, and late verdicts (mgate_resume) in
 * any order.  The chain is h0, h1 (both asking the input what to answer:
 * pass, allow, deny, pending, answered inside the call, not a verdict;
 * optionally rewriting topics, marking filters denied, touching v5
 * properties) and a third handler with no callbacks.
 *
 * Invariants, checked on every run (abort() with a message naming it):
 *  - I1 nothing reaches the broker (not even a dial) before the chain
 *    allowed the CONNECT (and its will, when it has one);
 *  - I2 every byte sent to the broker is a sequence of valid MQTT packets
 *    of the client's version, starting with the CONNECT (a partial last
 *    packet only once the connection closed); the same for what the client
 *    is sent (from the server's side, starting with CONNACK);
 *  - I3 a PUBLISH (or a will) the chain denied never reaches the broker,
 *    and a delivery the chain denied never reaches the client: per payload,
 *    what a peer receives is at most what the chain allowed;
 *  - I4 memory per pair: the bytes both connections buffer (in and out)
 *    plus the held packets stay within MAX_PACKET_SIZE + read chunk +
 *    OUTPUT_HIGH_WATER per direction (see mem_check);
 *  - no crash, no undefined behaviour, no leak (ASan, UBSan, LSan; the
 *    session is torn down and every pending verdict answered at the end of
 *    each input, then the loop must be idle: no timer, no deferred call).
 *
 * MGATE_FUZZ_SESSION_SELFTEST=N builds a harness that breaks the session
 * on purpose (see selftest below), to show that each check fires.
 */
#include "../../src/core/loop.c"
#include "../../src/net/conn.c"

#include <stdarg.h>
#include <stdio.h>

#include "core/log.h"
#include "mqtt/mqtt.h"
#include "session/internal.h"

#ifndef MGATE_FUZZ_SESSION_SELFTEST
#define MGATE_FUZZ_SESSION_SELFTEST 0
#endif
#define SELFTEST MGATE_FUZZ_SESSION_SELFTEST

static void violation(const char *inv, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void violation(const char *inv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\nfuzz_session: INVARIANT %s VIOLATED: ", inv);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

/* ---- the input reader ------------------------------------------------- */

struct rd {
    const uint8_t *p;
    size_t n;
};
static struct rd in;

static uint8_t u8(void)
{
    if (!in.n)
        return 0;
    in.n--;
    return *in.p++;
}
/* Up to max bytes of the input (fewer at its end). */
static size_t take(const uint8_t **p, size_t max)
{
    size_t n = u8() % (max + 1);
    if (n > in.n)
        n = in.n;
    *p = in.p;
    in.p += n, in.n -= n;
    return n;
}

/* ---- per-payload counters (I3) ---------------------------------------- */

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h | 1; /* 0 marks a free slot */
}

#define COUNTS 512
struct counts {
    uint64_t key[COUNTS];
    int32_t n[COUNTS];
    uint32_t used;
};
static struct counts up_allowed, down_allowed; /* by payload: what the chain let through */

static int32_t *count_slot(struct counts *c, uint64_t key)
{
    for (uint32_t i = (uint32_t)key % COUNTS, k = 0; k < COUNTS; i = (i + 1) % COUNTS, k++) {
        if (c->key[i] == key)
            return &c->n[i];
        if (!c->key[i]) {
            if (c->used == COUNTS - 1)
                violation("harness", "payload table full");
            c->used++;
            c->key[i] = key;
            c->n[i] = 0;
            return &c->n[i];
        }
    }
    violation("harness", "payload table full");
}
static void counts_reset(struct counts *c)
{
    if (c->used)
        memset(c, 0, sizeof(*c));
}

/* ---- virtual peers ---------------------------------------------------- */

#define QUEUE 8192
#define STREAM 16384
struct vpeer {
    const char *name;
    struct conn *c;      /* NULL: none yet, or closed */
    bool had_conn, closed_by_mgate;
    uint32_t interest;   /* what the connection last asked for (EPOLLIN, EPOLLOUT) */
    /* what the peer sent, not read yet ("the kernel's") */
    uint8_t q[QUEUE];
    size_t qn, qoff;
    size_t chunk;        /* at most this much per read */
    bool fin, reset;     /* the peer closed: FIN after its bytes, or a reset */
    bool stall;          /* writes get EAGAIN */
    size_t take;         /* at most this much per write (0: all) */
    /* what mgate sent it, decoded as it comes (I2) */
    uint8_t s[STREAM];
    size_t sn;
    uint64_t total;
    unsigned packets;
    bool from_client;    /* the direction of what it receives */
};
static struct vpeer client, broker;
static size_t read_max; /* the largest read a transport gave in this input */
static bool trace;      /* FUZZ_SESSION_TRACE=1: each operation and read, on stderr */
static struct loop *L; /* one loop for every input: idle between them (checked) */
static uint64_t vnow;  /* the virtual clock, ms */

static uint8_t version;        /* the client's CONNECT's, for decoding (0: unknown) */
static bool connect_allowed;   /* the chain allowed auth_connect */
static int will_state;         /* 0 none asked, 1 asked, 2 allowed, 3 denied */
static unsigned dials;

static void check_stream(struct vpeer *v);

static ssize_t v_read(struct conn *c, void *buf, size_t len)
{
    struct vpeer *v = c->transport;
    if (v->reset) {
        errno = ECONNRESET;
        return -1;
    }
    size_t have = v->qn - v->qoff;
    if (!have) {
        if (v->fin)
            return 0;
        errno = EAGAIN;
        return -1;
    }
    size_t n = have < len ? have : len;
    if (v->chunk && n > v->chunk)
        n = v->chunk;
    memcpy(buf, v->q + v->qoff, n);
    if (n > read_max)
        read_max = n; /* the read chunk of the bound (I4): the largest read so far */
    if (trace)
        fprintf(stderr, "  %s: read %zu of %zu (room %zu, conn in %u, held %d %d)\n", v->name, n, have, len, c->in.len,
                ((struct mgate_session *)c->owner)->held[0] != NULL, ((struct mgate_session *)c->owner)->held[1] != NULL);
    v->qoff += n;
    if (v->qoff == v->qn)
        v->qoff = v->qn = 0;
    return (ssize_t)n;
}

static ssize_t v_writev(struct conn *c, const struct iovec *iov, int n)
{
    struct vpeer *v = c->transport;
    if (v == &broker && !(connect_allowed && (will_state == 0 || will_state == 2)))
        violation("I1 (nothing before auth_connect allows)", "bytes written to the broker before the chain allowed "
                  "the CONNECT (connect allowed %d, will state %d)", connect_allowed, will_state);
    if (v->reset || v->fin) { /* a peer that closed takes nothing more (EPIPE, as a reset socket) */
        errno = EPIPE;
        return -1;
    }
    if (v->stall) {
        if (trace)
            fprintf(stderr, "  %s: stalled (conn out %u)\n", v->name, c->out.len);
        errno = EAGAIN;
        return -1;
    }
    size_t room = v->take ? v->take : SIZE_MAX, t = 0;
    for (int i = 0; i < n && room; i++) {
        size_t k = iov[i].iov_len < room ? iov[i].iov_len : room;
        if (v->sn + k > sizeof(v->s))
            violation("I2 (valid packets)", "%s stream: over %zu bytes without a whole packet", v->name, sizeof(v->s));
        memcpy(v->s + v->sn, iov[i].iov_base, k);
        v->sn += k, t += k, room -= k;
    }
    v->total += t;
    if (trace)
        fprintf(stderr, "  %s: took %zu (conn out %u)\n", v->name, t, c->out.len);
    check_stream(v);
    if (!t) {
        errno = EAGAIN;
        return -1;
    }
    return (ssize_t)t;
}

static void v_close(struct conn *c)
{
    struct vpeer *v = c->transport;
    v->c = NULL;
    v->closed_by_mgate = true;
}
static void v_interest(struct conn *c, uint32_t ev) { ((struct vpeer *)c->transport)->interest = ev; }
static const struct conn_ops v_ops = {
    .read = v_read, .writev = v_writev, .close = v_close, .interest = v_interest, .closes_fd = false};

static struct conn *v_open(struct vpeer *v, const struct conn_cbs *cbs, void *owner)
{
    v->c = conn_virtual(L, &v_ops, v, cbs, owner);
    v->had_conn = v->c != NULL;
    v->interest = EPOLLIN;
    return v->c;
}

/* ---- I2 and I3: what each peer receives ------------------------------- */

/* The session's version as it stands (the client's CONNECT decided it). */
static uint8_t version_of(const struct conn *c)
{
    const struct mgate_session *s = c ? c->owner : NULL;
    return s ? s->version : 0;
}

static void received(struct vpeer *v, const struct mqtt_packet *pkt)
{
    if (v == &broker && pkt->type == MQTT_PUBLISH) {
        int32_t *n = count_slot(&up_allowed, hash_bytes(pkt->publish.payload.p, pkt->publish.payload.len));
        if (--*n < 0)
            violation("I3 (a denied PUBLISH never reaches the broker)",
                      "the broker got a PUBLISH (payload of %u bytes) the chain did not allow", pkt->publish.payload.len);
    } else if (v == &broker && pkt->type == MQTT_CONNECT && pkt->connect.has_will) {
        int32_t *n = count_slot(&up_allowed, hash_bytes(pkt->connect.will_payload.p, pkt->connect.will_payload.len));
        if (--*n < 0)
            violation("I3 (a denied will never reaches the broker)", "the broker got a CONNECT whose will the chain "
                      "did not allow");
    } else if (v == &client && pkt->type == MQTT_PUBLISH) {
        int32_t *n = count_slot(&down_allowed, hash_bytes(pkt->publish.payload.p, pkt->publish.payload.len));
        if (--*n < 0)
            violation("I3 (a denied delivery never reaches the client)",
                      "the client got a PUBLISH (payload of %u bytes) the chain did not allow", pkt->publish.payload.len);
    }
}

/* Decode every whole packet v was sent (what it got last is in v->s). */
static void check_stream(struct vpeer *v)
{
    size_t off = 0;
    while (off < v->sn) {
        size_t total;
        mqtt_rc rc = mqtt_frame(v->s + off, v->sn - off, sizeof(v->s), &total);
        if (rc == MQTT_NEED_MORE)
            break;
        if (rc != MQTT_OK)
            violation("I2 (valid packets)", "%s was sent bytes that do not frame (%s) after %u packets", v->name,
                      mqtt_rc_name(rc), v->packets);
        struct mqtt_packet pkt;
        uint8_t type = v->s[off] >> 4;
        /* the server speaks first with CONNACK, or AUTH for enhanced authentication */
        if (v->packets == 0 && (v == &broker ? type != MQTT_CONNECT : type != MQTT_CONNACK && type != MQTT_AUTH))
            violation("I2 (valid packets)", "%s's first packet is a %s", v->name, mqtt_type_name(type));
        uint8_t ver = version_of(v->c);
        if (v == &broker && type == MQTT_CONNECT) {
            rc = mqtt_decode(v->s + off, total, 4, true, &pkt);
            if (rc == MQTT_OK && ver && pkt.connect.version != ver)
                violation("I2 (valid packets)", "the broker's CONNECT is version %u, the client's %u",
                          pkt.connect.version, ver);
        } else if (ver >= MQTT_V31 && ver <= MQTT_V5) {
            rc = mqtt_decode(v->s + off, total, ver, v->from_client, &pkt);
        } else {
            rc = MQTT_OK; /* a CONNACK refusing a CONNECT of no version we know: its layout is checked by unit tests */
            pkt.type = 0;
        }
        if (rc != MQTT_OK) {
            char hex[3 * 32 + 1] = "";
            for (size_t i = 0; i < total && i < 32; i++)
                snprintf(hex + 3 * i, 4, " %02x", v->s[off + i]);
            violation("I2 (valid packets)", "%s was sent a %s of %zu bytes that does not decode as version %u (%s):%s",
                      v->name, mqtt_type_name(type), total, ver, mqtt_rc_name(rc), hex);
        }
        if (pkt.type)
            received(v, &pkt);
        v->packets++;
        off += total;
    }
    if (off) {
        memmove(v->s, v->s + off, v->sn - off);
        v->sn -= off;
    }
}

/* ---- the handler chain ----------------------------------------------- */

enum mode { M_PASS, M_ALLOW, M_DENY, M_PEND, M_IN_ALLOW, M_IN_DENY, M_IN_PASS, M_BAD, M_MODES };
enum kind { K_CONNECT, K_PUBLISH, K_WILL, K_SUB, K_DELIVER, K_KINDS };
#define NH 2 /* h0, h1; then `silent` */
static uint8_t mode[NH][K_KINDS];
static uint8_t extra[NH]; /* 1 rewrite a PUBLISH topic, 2 deny a filter, 4 v5 properties (and a user property) */

struct pend {
    const void *req;
    mgate_session *s;
    uint8_t h, kind;
    uint64_t key; /* the payload's hash (PUBLISH, will, delivery) */
};
#define MAX_PEND 8
static struct pend pend[MAX_PEND];
static unsigned npend;
static const void *stale[4]; /* requests answered before: resumed again, they must be ignored */
static unsigned nstale;
static unsigned calls;

/* The payload a delivery's auth_subscribe is about (the packet's holder,
 * session/internal.h: the handler API shows only the topic). */
static mgate_bytes delivery_payload(const struct mgate_subscribe_req *r)
{
    const struct held *h = container_of(r, const struct held, ask.req.subscribe);
    return (mgate_bytes){h->pkt.publish.payload.p, h->pkt.publish.payload.len};
}

/* h answered v (now, from inside its call, or late) about req: what the
 * chain then allows.  An ALLOW, or a pass from the last handler that has a
 * say (h1: `silent` passes too), lets it through. */
static void answered(unsigned h, unsigned kind, const void *req, uint64_t key, enum mgate_verdict v)
{
    bool allow = v == MGATE_ALLOW || (v == MGATE_IGNORE && h == NH - 1);
    bool deny = !allow && v != MGATE_IGNORE;
    switch (kind) {
    case K_CONNECT:
        if (allow)
            connect_allowed = true;
        break;
    case K_WILL:
        if (allow)
            will_state = 2, (*count_slot(&up_allowed, key))++;
        else if (deny)
            will_state = 3;
        break;
    case K_PUBLISH:
        if (allow)
            (*count_slot(&up_allowed, key))++;
        break;
    case K_DELIVER:
        if (allow && !((const struct mgate_subscribe_req *)req)->filters[0].denied)
            (*count_slot(&down_allowed, key))++;
        break;
    default:
        break;
    }
}

static void forget(unsigned i)
{
    stale[nstale++ % 4] = pend[i].req;
    pend[i] = pend[--npend];
}

static enum mgate_verdict decide(unsigned h, unsigned kind, mgate_session *s, void *req, uint64_t key)
{
    calls++;
    switch (mode[h][kind]) {
    case M_PASS:
        answered(h, kind, req, key, MGATE_IGNORE);
        return MGATE_IGNORE;
    case M_ALLOW:
        answered(h, kind, req, key, MGATE_ALLOW);
        return MGATE_ALLOW;
    case M_DENY:
        answered(h, kind, req, key, MGATE_DENY);
        return MGATE_DENY;
    case M_PEND:
        if (npend == MAX_PEND)
            violation("harness", "more than %d pending asks", MAX_PEND);
        pend[npend++] = (struct pend){req, s, (uint8_t)h, (uint8_t)kind, key};
        return MGATE_PENDING;
    case M_IN_ALLOW:
    case M_IN_DENY:
    case M_IN_PASS: {
        enum mgate_verdict v = mode[h][kind] == M_IN_ALLOW ? MGATE_ALLOW
                               : mode[h][kind] == M_IN_DENY ? MGATE_DENY : MGATE_IGNORE;
        answered(h, kind, req, key, v);
        mgate_resume(s, req, v);
        return MGATE_PENDING;
    }
    default:
        answered(h, kind, req, key, MGATE_DENY);
        return (enum mgate_verdict)42; /* a handler bug: denies */
    }
}

static const uint8_t rw_topic[] = "rw/t";
static const uint8_t up_name[] = "fz", up_value[] = "1";

static void touch_props(unsigned h, mgate_session *s, const void *req, bool add)
{
    if (!(extra[h] & 4) || mgate_session_version(s) != MQTT_V5)
        return;
    struct mgate_properties *p = mgate_properties(s, req);
    if (p && add)
        mgate_user_property_add(s, p, (mgate_bytes){up_name, 2}, (mgate_bytes){up_value, 1});
}

/*
 * MGATE_FUZZ_SESSION_SELFTEST=N: the harness breaks the session the way a
 * bug would, through the session's own internals, so that each invariant
 * is shown to fire (tests/fuzz/session.cmake builds fuzz_session_selftest_N):
 *   1 I1: the broker is dialled while auth_connect is still being asked;
 *   2 I2: the broker is sent a packet of the wrong direction (a CONNACK);
 *   3 I3: a PUBLISH the chain denies is forwarded to the broker anyway;
 *   4 I3: a delivery the chain denies is sent to the client anyway;
 *   5 I4: no back-pressure (a side paused while its input waits for nothing
 *     but output to drain is read again at once);
 *   6 leak: auth_connect takes a reference on the session that nobody drops.
 */
static void selftest_forward(struct conn *to, mgate_bytes topic, mgate_bytes payload)
{
    struct mqtt_packet pkt = {.type = MQTT_PUBLISH};
    pkt.publish.topic = (mqtt_str){topic.len ? topic.p : (const uint8_t *)"x", topic.len ? topic.len : 1};
    pkt.publish.payload = (mqtt_str){payload.p, payload.len};
    uint8_t buf[512];
    size_t n = mqtt_encode(&pkt, version ? version : MQTT_V311, buf, sizeof(buf));
    if (to && n && n <= sizeof(buf))
        conn_write(to, buf, n);
}

static enum mgate_verdict on_connect(unsigned h, mgate_session *s, struct mgate_connect_req *r)
{
    if (SELFTEST == 1 && h == 0 && !s->broker)
        session_dial(s);
    if (SELFTEST == 6 && h == 0)
        s->refs++; /* a reference nobody drops: the session is never freed */
    touch_props(h, s, r, false);
    return decide(h, K_CONNECT, s, r, 0);
}
static enum mgate_verdict on_publish(unsigned h, mgate_session *s, struct mgate_publish_req *r)
{
    unsigned kind = r->will ? K_WILL : K_PUBLISH;
    if (r->will && will_state == 0)
        will_state = 1;
    if ((extra[h] & 1) && !r->will)
        r->topic = (mgate_bytes){rw_topic, 4};
    touch_props(h, s, r, !r->will);
    if (SELFTEST == 2 && s->broker)
        conn_write(s->broker, (const uint8_t[]){0x20, 2, 0, 0}, 4);
    if (SELFTEST == 3 && !r->will && mode[h][kind] == M_DENY)
        selftest_forward(s->broker, r->topic, r->payload);
    return decide(h, kind, s, r, hash_bytes(r->payload.p, r->payload.len));
}
static enum mgate_verdict on_subscribe(unsigned h, mgate_session *s, struct mgate_subscribe_req *r)
{
    if (r->dir == MGATE_DOWN) {
        if (extra[h] & 2)
            r->filters[0].denied = true;
        touch_props(h, s, r, true);
        mgate_bytes pl = delivery_payload(r);
        if (SELFTEST == 4 && mode[h][K_DELIVER] == M_DENY)
            selftest_forward(s->client, r->filters[0].filter, pl);
        return decide(h, K_DELIVER, s, r, hash_bytes(pl.p, pl.len));
    }
    if ((extra[h] & 2) && r->count > 1)
        r->filters[1].denied = true;
    touch_props(h, s, r, false);
    return decide(h, K_SUB, s, r, 0);
}

#define HANDLER(i)                                                                                            \
    static enum mgate_verdict c##i(mgate_session *s, struct mgate_connect_req *r) { return on_connect(i, s, r); } \
    static enum mgate_verdict p##i(mgate_session *s, struct mgate_publish_req *r) { return on_publish(i, s, r); } \
    static enum mgate_verdict s##i(mgate_session *s, struct mgate_subscribe_req *r) { return on_subscribe(i, s, r); } \
    static const struct mgate_handler h##i = {.name = "h" #i, .auth_connect = c##i, .auth_publish = p##i,  \
                                              .auth_subscribe = s##i};
HANDLER(0)
HANDLER(1)
static const struct mgate_handler silent = {.name = "silent"}; /* every auth_* NULL: passes */
static const struct mgate_handler *const chain[] = {&h0, &h1, &silent};

/* ---- the session ----------------------------------------------------- */

static struct session_list list;
static struct session_params params;
static bool dial_fails;
static const struct sockaddr_in peer_addr = {.sin_family = AF_INET};

static struct conn *v_dial(struct loop *l, const struct session_params *p, const struct conn_cbs *cbs, void *owner)
{
    (void)l, (void)p;
    dials++;
    if (!(connect_allowed && (will_state == 0 || will_state == 2)))
        violation("I1 (nothing before auth_connect allows)", "the broker was dialled before the chain allowed the "
                  "CONNECT (connect allowed %d, will state %d)", connect_allowed, will_state);
    if (dial_fails || broker.had_conn)
        return NULL;
    return v_open(&broker, cbs, owner);
}

static struct mgate_session *live_session(void)
{
    struct list_node *n = list.count ? list_first(&list.sessions) : NULL;
    return n ? container_of(n, struct mgate_session, node) : NULL;
}

/* I4: per direction, what the pair buffers: the sender's unread input, the
 * packet held for a verdict, the receiver's unsent output. */
static uint64_t mem_max_dir, mem_max_pair; /* the largest seen, for the figures */
static size_t closing_total;              /* what the pair buffered when last seen closing */
static double mem_max_share;              /* the largest direction's share of its bound */
static uint8_t extra_seen;                /* every rewrite a handler made in this input (I4's growth) */
static uint64_t growth_seen;              /* the most a packet could have grown in this input */
static void mem_check(void)
{
    struct mgate_session *s = live_session();
    if (!s)
        return;
    size_t dir[2];
    if (s->state == SESSION_CLOSING) {
        /* Nothing is read any more: what the pair buffers only shrinks, as
         * each side flushes, until the linger ends. */
        size_t total = (s->client ? s->client->in.len + s->client->out.len : 0) +
                       (s->broker ? s->broker->in.len + s->broker->out.len : 0) +
                       (s->held[0] ? s->held[0]->raw_len : 0) + (s->held[1] ? s->held[1]->raw_len : 0);
        if (closing_total != SIZE_MAX && total > closing_total)
            violation("I4 (memory per pair)", "the pair buffers %zu bytes while closing, after %zu", total,
                      closing_total);
        closing_total = total;
        return;
    }
    for (int d = 0; d < 2; d++) {
        const struct conn *from = d == MGATE_UP ? s->client : s->broker;
        const struct conn *to = d == MGATE_UP ? s->broker : s->client;
        dir[d] = (from ? from->in.len : 0) + (s->held[d] ? s->held[d]->raw_len : 0) + (to ? to->out.len : 0);
    }
    /* A pass writes what one read brought, re-encoded: packets that grew (a
     * mount point's prefix, a rewritten topic, an added user property) can
     * make it more than the read.  Per packet (5 bytes at least) it grows by
     * at most the prefix plus what the handlers add, plus 3 bytes of lengths. */
    uint64_t grow = 0;
    if (mgate_session_mount_point(s).len)
        grow += mgate_session_mount_point(s).len + 3;
    if ((extra_seen & 1) != 0)
        grow += sizeof(rw_topic) + 3;
    if ((extra_seen & 4) != 0 && s->version == MQTT_V5)
        grow += 2 + 2 + sizeof(up_name) + 2 + sizeof(up_value) + 3;
    if (grow > growth_seen)
        growth_seen = grow; /* grown packets may still be queued after a mount point or a rewrite ended */
    uint64_t chunk = (uint64_t)params.max_packet_size + read_max;
    uint64_t bound = chunk + params.output_high_water + (chunk + 4) / 5 * growth_seen;
    for (int d = 0; d < 2; d++) {
        if (dir[d] > mem_max_dir)
            mem_max_dir = dir[d];
        if ((double)dir[d] / (double)bound > mem_max_share)
            mem_max_share = (double)dir[d] / (double)bound;
        if (dir[d] > bound) {
            const struct conn *from = d == MGATE_UP ? s->client : s->broker;
            const struct conn *to = d == MGATE_UP ? s->broker : s->client;
            violation("I4 (memory per pair)", "%s: %zu bytes buffered (input %u, held %u, output %u, receiver state %d "
                      "corked %d) > max packet %u + read chunk %zu + high water %u (+ growth %llu a packet)",
                      d == MGATE_UP ? "client->broker" : "broker->client", dir[d], from ? from->in.len : 0,
                      s->held[d] ? s->held[d]->raw_len : 0, to ? to->out.len : 0, to ? to->state : -1,
                      to ? to->corked : -1, params.max_packet_size, read_max,
                      params.output_high_water, (unsigned long long)growth_seen);
        }
    }
    if (dir[0] + dir[1] > mem_max_pair)
        mem_max_pair = dir[0] + dir[1];
}

/* ---- turning the loop ------------------------------------------------ */

static void io_events(struct vpeer *v)
{
    struct conn *c = v->c;
    if (!c || c->state == CONN_CLOSED)
        return;
    uint32_t ev = 0;
    if (v->reset)
        ev |= EPOLLERR | EPOLLHUP; /* epoll reports these whatever was asked */
    if ((v->interest & EPOLLIN) && (v->qn > v->qoff || v->fin))
        ev |= EPOLLIN;
    if ((v->interest & EPOLLOUT) && !v->stall)
        ev |= EPOLLOUT;
    if (ev)
        on_io(L, &c->io, ev);
    if (ev && trace && v->c && v->c->in.len) {
        fprintf(stderr, "  %s: after events %x: conn in %u paused %d want %u:", v->name, ev, c->in.len, c->read_paused,
                c->want);
        for (uint32_t i = 0; i < c->in.len && i < 24; i++)
            fprintf(stderr, " %02x", buf_head(&c->in)[i]);
        fprintf(stderr, "\n");
    }
}

/* I2's "a partial last packet only if the connection closed": an open
 * connection with nothing left to write has sent whole packets only. */
static void partial_check(const struct vpeer *v)
{
    if (v->c && v->c->state == CONN_OPEN && !v->c->out.len && !v->c->corked && v->sn)
        violation("I2 (valid packets)", "%s got %zu bytes of a packet and nothing more is queued for it", v->name,
                  v->sn);
}

/* One turn as loop_run makes it: I/O, expired timers, deferred calls. */
static void turn(void)
{
    L->now = vnow;
    io_events(&client);
    io_events(&broker);
    run_timers(L);
    run_deferred(L);
    mem_check();
    partial_check(&client);
    partial_check(&broker);
    struct mgate_session *s = live_session();
    if (s && s->version)
        version = s->version;
}

/* ---- building packets from the input --------------------------------- */

static void send_bytes(struct vpeer *v, const uint8_t *p, size_t n)
{
    if (v->fin || v->reset)
        return; /* a closed peer sends nothing more */
    if (v->qoff && v->qn + n > QUEUE) {
        memmove(v->q, v->q + v->qoff, v->qn - v->qoff);
        v->qn -= v->qoff, v->qoff = 0;
    }
    if (v->qn + n > QUEUE)
        n = QUEUE - v->qn; /* the kernel's buffer is full: the rest is cut (a raw stream anyway) */
    memcpy(v->q + v->qn, p, n);
    v->qn += n;
}

static void send_packet(struct vpeer *v, const struct mqtt_packet *pkt, uint8_t ver)
{
    uint8_t buf[2048];
    size_t n = mqtt_encode(pkt, ver, buf, sizeof(buf));
    if (n && n <= sizeof(buf) && v->qn - v->qoff + n <= QUEUE)
        send_bytes(v, buf, n);
}

static const char *const topics[] = {"a", "a/b", "t/x", "rw/t", "$SYS/x", "+/x", "a/#", "#", "", "mp/c/a", "x/y/z"};
#define NTOPICS (sizeof(topics) / sizeof(topics[0]))
static mqtt_str str_in(size_t max)
{
    uint8_t b = u8();
    if (b < 200)
        return (mqtt_str){(const uint8_t *)topics[b % NTOPICS], (uint32_t)strlen(topics[b % NTOPICS])};
    const uint8_t *p;
    size_t n = take(&p, max);
    return (mqtt_str){p, (uint32_t)n};
}
static mqtt_str bytes_in(size_t max)
{
    const uint8_t *p;
    size_t n = take(&p, max);
    return (mqtt_str){p, (uint32_t)n};
}

/* v5 property blocks the peers may send, by packet. */
struct pblock {
    const uint8_t *p;
    uint8_t n;
};
#define PB(...) {(const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})}
static const struct pblock connect_props[] = {
    PB(0x22, 0, 2),          /* topic alias maximum 2 */
    PB(0x27, 0, 0, 0, 60),   /* maximum packet size 60 */
    PB(0x21, 0, 1),          /* receive maximum 1 */
    PB(0x15, 0, 1, 'm'),     /* authentication method: enhanced authentication */
    PB(0x11, 0, 0, 0, 9),    /* session expiry */
    PB(0x22, 0, 1, 0x27, 0, 0, 1, 0),
};
static const struct pblock connack_props[] = {
    PB(0x22, 0, 2),        /* topic alias maximum 2 */
    PB(0x27, 0, 0, 0, 60), /* maximum packet size 60 */
    PB(0x21, 0, 1),
    PB(0x24, 0),           /* maximum QoS 0 */
    PB(0x12, 0, 1, 'z'),   /* assigned client identifier */
    PB(0x22, 0, 1, 0x27, 0, 0, 0, 40),
};
static const struct pblock publish_props[] = {
    PB(0x23, 0, 1),                  /* topic alias 1 */
    PB(0x23, 0, 2),                  /* topic alias 2 */
    PB(0x26, 0, 1, 'k', 0, 1, 'v'),  /* a user property */
    PB(0x08, 0, 1, 'r'),             /* response topic */
    PB(0x0B, 7),                     /* subscription identifier (broker to client only) */
    PB(0x01, 1, 0x03, 0, 1, 't'),    /* payload format, content type */
};
static const struct pblock sub_props[] = {PB(0x0B, 5), PB(0x26, 0, 1, 'k', 0, 0)};
static const struct pblock auth_props[] = {PB(0x15, 0, 1, 'm'), PB(0x15, 0, 1, 'm', 0x16, 0, 1, 'd')};

static mqtt_props props_in(const struct pblock *t, size_t n)
{
    uint8_t b = u8();
    if (b % 4 == 0 || !n)
        return (mqtt_props){0};
    const struct pblock *pb = &t[(b >> 2) % n];
    return (mqtt_props){.raw = pb->p, .raw_len = pb->n};
}
#define PROPS(t) props_in(t, sizeof(t) / sizeof(t[0]))

static uint8_t client_version; /* what this input's client speaks (parameters) */

static void client_packet(void)
{
    uint8_t ver = client_version;
    uint8_t k = u8();
    struct mqtt_packet pkt = {.type = (uint8_t)(k % 15 + 1)};
    uint8_t f = u8();
    uint8_t fl[256];
    size_t ln = 0;
    switch (pkt.type) {
    case MQTT_CONNECT: {
        struct mqtt_connect *c = &pkt.connect;
        c->version = (f & 0x80) && (f & 0x40) ? MQTT_V31 : ver;
        c->clean_start = f & 1;
        c->keepalive = (uint16_t)(f & 2 ? 0 : 30);
        c->client_id = str_in(12);
        c->has_will = f & 4;
        c->will_qos = (uint8_t)((f >> 3) % 3);
        c->will_retain = f & 0x20;
        if (c->has_will) {
            c->will_topic = str_in(12);
            c->will_payload = bytes_in(24);
            if (ver == MQTT_V5)
                c->will_props = PROPS(publish_props);
        }
        c->has_username = u8() & 1;
        if (c->has_username)
            c->username = str_in(8);
        c->has_password = c->has_username && (f & 0x10);
        if (c->has_password)
            c->password = bytes_in(8);
        if (ver == MQTT_V5)
            c->props = PROPS(connect_props);
        break;
    }
    case MQTT_PUBLISH: {
        struct mqtt_publish *p = &pkt.publish;
        p->qos = (uint8_t)(f % 3);
        p->retain = f & 4;
        p->dup = p->qos && (f & 8);
        p->id = p->qos ? (uint16_t)(u8() % 4 + 1) : 0;
        p->topic = str_in(12);
        if (ver == MQTT_V5)
            p->props = PROPS(publish_props);
        p->payload = bytes_in(40);
        break;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        pkt.ack.id = (uint16_t)(f % 4 + 1);
        pkt.ack.rc = (f & 0x80) ? 0x10 : 0;
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE: {
        unsigned n = f % 3 + 1;
        for (unsigned i = 0; i < n; i++) {
            mqtt_str t = str_in(10);
            fl[ln++] = (uint8_t)(t.len >> 8), fl[ln++] = (uint8_t)t.len;
            memcpy(fl + ln, t.p, t.len), ln += t.len;
            if (pkt.type == MQTT_SUBSCRIBE)
                fl[ln++] = (uint8_t)(u8() % 3);
        }
        pkt.subscribe = (struct mqtt_subscribe){.id = (uint16_t)(u8() % 4 + 1), 
                                                .list = fl, .list_len = (uint32_t)ln,
                                                .count = n};
        if (ver == MQTT_V5)
            pkt.subscribe.props = PROPS(sub_props);
        break;
    }
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        pkt.disconnect.rc = pkt.type == MQTT_AUTH ? (f & 1 ? 0x18 : 0x19) : (f & 1 ? 0x04 : 0);
        if (pkt.type == MQTT_AUTH)
            pkt.disconnect.props = PROPS(auth_props);
        break;
    case MQTT_CONNACK: /* not a client's: sent anyway */
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
    case MQTT_PINGRESP:
        pkt.type = MQTT_PINGREQ;
        break;
    default:
        break;
    }
    send_packet(&client, &pkt, ver);
}

static void broker_packet(void)
{
    uint8_t ver = version ? version : client_version;
    uint8_t k = u8();
    uint8_t f = u8();
    static const uint8_t types[] = {MQTT_CONNACK, MQTT_PUBLISH, MQTT_PUBLISH, MQTT_SUBACK, MQTT_UNSUBACK, MQTT_PUBACK,
                                    MQTT_PUBREC,  MQTT_PUBREL,  MQTT_PUBCOMP, MQTT_PINGRESP, MQTT_DISCONNECT, MQTT_AUTH};
    struct mqtt_packet pkt = {.type = types[k % sizeof(types)]};
    uint8_t codes[4];
    switch (pkt.type) {
    case MQTT_CONNACK:
        pkt.connack.session_present = f & 1;
        pkt.connack.rc = (f & 6) == 6 ? (ver == MQTT_V5 ? 0x87 : 5) : 0;
        if (ver == MQTT_V5)
            pkt.connack.props = PROPS(connack_props);
        break;
    case MQTT_PUBLISH: {
        struct mqtt_publish *p = &pkt.publish;
        p->qos = (uint8_t)(f % 3);
        p->retain = f & 4;
        p->dup = p->qos && (f & 8);
        p->id = p->qos ? (uint16_t)(u8() % 4 + 1) : 0;
        p->topic = str_in(12);
        if (ver == MQTT_V5)
            p->props = PROPS(publish_props);
        p->payload = bytes_in(40);
        break;
    }
    case MQTT_SUBACK:
    case MQTT_UNSUBACK: {
        unsigned n = f % 3 + 1;
        for (unsigned i = 0; i < n; i++)
            codes[i] = (uint8_t[]){0, 1, 2, 0x80}[u8() % 4];
        pkt.suback = (struct mqtt_suback){.id = (uint16_t)(u8() % 4 + 1), .codes = codes, .count = n};
        if (pkt.type == MQTT_UNSUBACK)
            for (unsigned i = 0; i < n; i++)
                codes[i] = codes[i] == 0x80 ? 0x80 : 0;
        break;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        pkt.ack.id = (uint16_t)(f % 4 + 1);
        break;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        pkt.disconnect.rc = pkt.type == MQTT_AUTH ? 0x18 : (f & 1 ? 0x8B : 0);
        if (pkt.type == MQTT_AUTH)
            pkt.disconnect.props = PROPS(auth_props);
        break;
    default:
        break;
    }
    send_packet(&broker, &pkt, ver);
}

/* ---- late verdicts ---------------------------------------------------- */

static void resume_one(unsigned i, enum mgate_verdict v)
{
    struct pend p = pend[i];
    forget(i);
    answered(p.h, p.kind, p.req, p.key, v);
    mgate_resume(p.s, p.req, v);
}

static bool is_pending(const void *req)
{
    for (unsigned i = 0; i < npend; i++)
        if (pend[i].req == req)
            return true;
    return false;
}

/* A resume mgate must ignore: a request it does not know, or one answered
 * before (unless its holder is pending again: that would be a real answer). */
static void resume_stale(uint8_t b)
{
    static int dummy;
    struct mgate_session *s = npend ? pend[0].s : live_session();
    if (!s)
        return;
    const void *req = b % 3 == 0 ? NULL : b % 3 == 1 ? (const void *)&dummy : stale[b % 4];
    if (req && is_pending(req))
        return;
    if (s->asking && (const void *)&s->asking->req == req)
        return;
    mgate_resume(s, req, MGATE_ALLOW);
}

/* ---- the program ------------------------------------------------------ */

enum op {
    OP_CLIENT_PACKET,
    OP_CLIENT_RAW,
    OP_BROKER_PACKET,
    OP_BROKER_RAW,
    OP_CHUNK,    /* a peer's read size */
    OP_STALL,    /* a peer stops taking output, or takes it again (at most n bytes a write) */
    OP_CLOSE,    /* a peer closes: FIN, or reset */
    OP_TURN,
    OP_TIME,     /* the clock moves on */
    OP_RESUME,   /* a late verdict, for any pending ask */
    OP_MODE,     /* what a handler answers next, for one kind */
    OP_EXTRA,    /* a handler's rewrites */
    OP_STALE,    /* a resume mgate must ignore */
    OP_COUNT
};

static const uint32_t max_packets[] = {128, 256, 512, 2048};
static const uint32_t high_waters[] = {64, 256, 1024, 4096};
static const size_t chunks[] = {1, 2, 3, 7, 16, 64, 512, 4096};

static void setup(void)
{
    uint8_t a = u8(), b = u8();
    client_version = (a & 1) ? MQTT_V5 : MQTT_V311;
    params = (struct session_params){
        .listener = "fuzz",
        .connect_timeout_ms = 1000,
        .max_packet_size = max_packets[(a >> 1) & 3],
        .output_high_water = high_waters[(a >> 3) & 3],
        .refusal_close = a & 0x20,
        .mount_point = (a & 0x40) ? "mp/%c/" : NULL,
        .publish_rate = (a & 0x80) ? 2 : 0,
        .handlers = chain,
        .handler_count = 3,
        .dial = v_dial,
    };
    dial_fails = (b & 7) == 7;
    memset(mode, 0, sizeof(mode));
    memset(extra, 0, sizeof(extra));
    mode[0][K_CONNECT] = (uint8_t)((b >> 3) % M_MODES); /* the first CONNECT's fate, cheaply reached */
}

static void reset_peer(struct vpeer *v, const char *name, bool from_client)
{
    memset(v, 0, offsetof(struct vpeer, q));
    v->qn = v->qoff = 0;
    v->chunk = 0;
    v->fin = v->reset = v->stall = false;
    v->take = 0;
    v->sn = 0;
    v->total = 0;
    v->packets = 0;
    v->name = name;
    v->from_client = from_client;
}

static void trace_op(uint8_t o)
{
    static const char *const names[] = {"client packet", "client raw", "broker packet", "broker raw", "chunk",
                                        "stall", "close", "turn", "time", "resume", "mode", "extra", "stale"};
    struct mgate_session *s = live_session();
    fprintf(stderr, "op %-13s %-6s| state %d client in %u out %u, broker in %u out %u, held %u %u, pending %u\n",
            names[o % OP_COUNT], o & 0x80 ? "broker" : "client", s ? s->state : -1,
            s && s->client ? s->client->in.len : 0, s && s->client ? s->client->out.len : 0,
            s && s->broker ? s->broker->in.len : 0, s && s->broker ? s->broker->out.len : 0,
            s && s->held[0] ? s->held[0]->raw_len : 0, s && s->held[1] ? s->held[1]->raw_len : 0, npend);
}

static void run_op(void)
{
    uint8_t o = u8();
    if (trace)
        trace_op(o);
    struct vpeer *v = (o & 0x80) ? &broker : &client;
    switch (o % OP_COUNT) {
    case OP_CLIENT_PACKET:
        client_packet();
        break;
    case OP_CLIENT_RAW: {
        const uint8_t *p;
        size_t n = take(&p, 64);
        send_bytes(&client, p, n);
        break;
    }
    case OP_BROKER_PACKET:
        broker_packet();
        break;
    case OP_BROKER_RAW: {
        const uint8_t *p;
        size_t n = take(&p, 64);
        send_bytes(&broker, p, n);
        break;
    }
    case OP_CHUNK:
        v->chunk = chunks[u8() % 8];
        break;
    case OP_STALL: {
        uint8_t b = u8();
        v->stall = b & 1;
        v->take = (b >> 1) % 4 == 0 ? 0 : chunks[(b >> 3) % 8];
        break;
    }
    case OP_CLOSE:
        if (v->had_conn || v == &client)
            *(u8() & 1 ? &v->reset : &v->fin) = true;
        break;
    case OP_TURN:
        for (unsigned n = u8() % 4 + 1; n; n--)
            turn();
        break;
    case OP_TIME:
        vnow += (uint64_t[]){5, 100, 600, 1100, 2100, 5000, 60000, 1}[u8() % 8];
        turn();
        break;
    case OP_RESUME: {
        uint8_t b = u8();
        if (npend)
            resume_one(b % npend, (enum mgate_verdict[]){MGATE_ALLOW, MGATE_DENY, MGATE_IGNORE,
                                                         (enum mgate_verdict)7}[(b >> 4) % 4]);
        break;
    }
    case OP_MODE: {
        uint8_t b = u8();
        mode[(b >> 7) & 1][(b >> 3) % K_KINDS] = (uint8_t)(b % M_MODES);
        break;
    }
    case OP_EXTRA: {
        uint8_t b = u8();
        extra[b & 1] = (uint8_t)(b >> 1);
        extra_seen |= extra[b & 1];
        break;
    }
    case OP_STALE:
        resume_stale(u8());
        break;
    }
    struct mgate_session *s = live_session();
    if (SELFTEST == 5 && s && s->state == SESSION_OPEN) {
        for (int d = 0; d < 2; d++) {
            struct conn *c = d == MGATE_UP ? s->client : s->broker;
            if (c && c->read_paused && !s->held[d] && !s->merges && !s->limits)
                conn_resume_read(c);
        }
    }
    mem_check();
}

/* The end of an input: the session is closed now, every verdict still
 * pending is answered (a handler must answer each exactly once), and the
 * loop turns until nothing is left.  Then nothing may remain: no session,
 * no timer, no deferred call (the next input reuses the loop). */
static void teardown(void)
{
    session_list_close_all(&list);
    for (int i = 0; i < 64 && (npend || L->defer_head); i++) {
        while (npend)
            resume_one(0, i & 1 ? MGATE_ALLOW : MGATE_IGNORE);
        turn();
    }
    if (npend || L->defer_head || L->timers || list.count || client.c || broker.c)
        violation("teardown", "not idle after the end: %u pending, deferred %d, timers %d, %u sessions, conns %d %d",
                  npend, L->defer_head != NULL, L->timers != NULL, list.count, client.c != NULL, broker.c != NULL);
    free(list.spare);
    list.spare = NULL;
}

/* FUZZ_SESSION_STATS=1: at exit, the largest buffers seen (replay a corpus
 * with -runs=0 to measure it). */
static void print_stats(void)
{
    fprintf(stderr, "fuzz_session: largest buffered: %llu bytes one direction, %llu the pair, %.0f%% of the bound\n",
            (unsigned long long)mem_max_dir, (unsigned long long)mem_max_pair, 100 * mem_max_share);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_set_level(LOGL_OFF); /* nothing: the sessions' lines would cost more than the session */
    trace = getenv("FUZZ_SESSION_TRACE") != NULL;
    if (getenv("FUZZ_SESSION_STATS"))
        atexit(print_stats);
    L = loop_new();
    vnow = L->now;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    in = (struct rd){data, size};
    reset_peer(&client, "the client", false);
    reset_peer(&broker, "the broker", true);
    counts_reset(&up_allowed);
    counts_reset(&down_allowed);
    npend = nstale = 0;
    memset(stale, 0, sizeof(stale));
    version = 0;
    connect_allowed = false;
    will_state = 0;
    dials = 0;
    setup();
    read_max = 0;
    closing_total = SIZE_MAX;
    extra_seen = 0;
    growth_seen = 0;
    list = (struct session_list){0};
    vnow += 1;
    L->now = vnow;
    if (!v_open(&client, NULL, NULL))
        return 0;
    if (!session_start(L, client.c, (const struct sockaddr *)&peer_addr, &params, &list)) {
        conn_close(client.c);
        run_deferred(L);
        return 0;
    }
    for (unsigned ops = 0; in.n && ops < 400; ops++)
        run_op();
    for (int i = 0; i < 3; i++)
        turn();
    teardown();
    return 0;
}
