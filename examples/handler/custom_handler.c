/*
 * A custom handler compiled into mgate: the shape of a real authorisation
 * handler, and the handler the integration tests use.
 *
 *   CONNECT   client id "deny*"           -> refused (not authorised)
 *             username "baduser"          -> refused (bad user name or password)
 *             username "slow" / "slowdeny" -> verdict 200 ms later: allow / deny
 *             client id "rename-me"       -> forwarded as "renamed"
 *             username "pass-*"           -> no opinion (MGATE_IGNORE): the next handler
 *                                            of the chain decides (MGATE_HANDLER=example,acl)
 *             username "latepass-*"       -> no opinion either, given 150 ms later
 *             password "deny-password"    -> refused (bad user name or password)
 *             client id "mount-me"        -> mount point "by-handler/" (replaces MOUNT_POINT's)
 *             client id "mount-bad"       -> a mount point with a wildcard: refused by mgate,
 *                                            so the CONNECT is denied (not authorised)
 *   PUBLISH   topic containing "forbidden" -> refused
 *             topic "rewrite/X"            -> forwarded as "rewritten/X"
 *             topic "badrewrite/X"         -> rewritten to "bad/+/X", which no PUBLISH may
 *                                            carry: mgate does not send it (5.0: PUBACK 0x83)
 *             topic "slow/..."            -> verdict 100 ms later (allow)
 *             payload "deny-payload"       -> refused (a WebSocket message on the
 *                                            HTTP listener is dropped, the next passes)
 *             payload "late-payload"       -> verdict 2 s later (allow): longer than a
 *                                            short REQUEST_TIMEOUT
 *             (HTTP, whose topics are paths: "/slow/" anywhere does the same)
 *   SUBSCRIBE filters containing "forbidden" are refused, the rest go through;
 *             a filter "badrewrite/X" is rewritten to "bad/#/x", no valid filter,
 *             and "grow/X" to "grown-by-the-handler/grow/X" whatever its length:
 *             mgate refuses such a filter (SUBACK 0x8F) and sends the rest
 *   delivery  broker PUBLISH on a topic containing "secret" is not delivered
 *             topic containing "latedown"  -> verdict 100 ms later (allow), unless "secret" too
 *             topic containing "stuckdown" -> verdict 2 s later (allow)
 *   Any other PUBLISH, SUBSCRIBE or delivery: no opinion (MGATE_IGNORE), so
 *             alone it goes through, and in a chain the next handler decides.
 *   interceptor (before the handler): a client PUBLISH whose payload is
 *             "intercept-drop" is dropped without a trace (no PUBACK either);
 *             (after it): one whose payload ends with "intercept-bad" is
 *             replaced by an invalid packet, which mgate does not send
 *
 * MQTT 5 properties (mgate_properties), when the environment asks:
 *   MGATE_EXAMPLE_REFUSE_AUTH_METHOD=M  a CONNECT whose Authentication Method
 *             is M is refused with 0x8C (Bad authentication method)
 *   MGATE_EXAMPLE_PROPERTIES=1  every v5 PUBLISH's, will's and SUBSCRIBE's
 *             properties are read: one carrying the user property "x-mgate-deny"
 *             is refused (a will: its CONNECT); on topics
 *             "props/...", a client's PUBLISH gets "x-mgate-user: <username>"
 *             (replacing any the client sent; "anonymous" without one) and
 *             loses every "x-strip", and a delivery gets "x-mgate-to: <client
 *             id>" appended.  Other topics go byte for byte.
 *
 * Build:  cmake --build build --target custom_handler_example
 * Run:    MGATE_MQTT_WITHOUT_TLS_PORT=1884 MGATE_MQTT_WITHOUT_TLS_TARGET_HOST=127.0.0.1 \
 *         MGATE_MQTT_WITHOUT_TLS_TARGET_PORT=1883 ./build/mgate-example
 */
#include <stdlib.h>
#include <string.h>

#include "mgate.h"

static bool has_prefix(mgate_bytes b, const char *prefix)
{
    size_t n = strlen(prefix);
    return b.len >= n && memcmp(b.p, prefix, n) == 0;
}

static bool contains(mgate_bytes b, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= b.len; i++)
        if (memcmp(b.p + i, needle, n) == 0)
            return true;
    return false;
}

static bool equals(mgate_bytes b, const char *s) { return b.len == strlen(s) && has_prefix(b, s); }

/* A verdict that arrives later, as from an HTTP call: remember the request. */
struct later {
    mgate_session *s;
    const void *req;
    enum mgate_verdict verdict;
};

static void answer(void *arg)
{
    struct later *l = arg;
    mgate_resume(l->s, l->req, l->verdict);
    free(l);
}

static enum mgate_verdict answer_later(mgate_session *s, const void *req, uint32_t ms,
                                       enum mgate_verdict v)
{
    struct later *l = malloc(sizeof(*l));
    if (!l)
        return MGATE_DENY;
    *l = (struct later){s, req, v};
    if (mgate_after(s, ms, answer, l) < 0) {
        free(l);
        return MGATE_DENY;
    }
    return MGATE_PENDING;
}

static bool env_on(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

static mgate_bytes text(const char *s) { return (mgate_bytes){(const uint8_t *)s, (uint32_t)strlen(s)}; }

/* Enhanced authentication: the method (and its first data) are CONNECT
 * properties; a handler may refuse a method it does not want brokers to
 * see.  The AUTH exchange itself passes between client and broker. */
static bool auth_method_refused(mgate_session *s, struct mgate_connect_req *req)
{
    const char *refused = getenv("MGATE_EXAMPLE_REFUSE_AUTH_METHOD");
    struct mgate_properties *p = refused ? mgate_properties(s, req) : NULL;
    return p && p->has_auth_method && equals(p->auth_method, refused);
}

static bool has_user_property(const struct mgate_properties *p, const char *name)
{
    for (uint32_t i = 0; i < p->user_count; i++)
        if (equals(p->user[i].name, name))
            return true;
    return false;
}

/* MGATE_EXAMPLE_PROPERTIES: whether a request's properties refuse it. */
static bool refused_by_properties(mgate_session *s, const void *req)
{
    if (!env_on("MGATE_EXAMPLE_PROPERTIES"))
        return false;
    struct mgate_properties *p = mgate_properties(s, req);
    if (!p) /* NULL before 5.0; in 5.0 they cannot be shown: refused, as they cannot be checked */
        return mgate_session_version(s) == 5;
    return has_user_property(p, "x-mgate-deny");
}

/* MGATE_EXAMPLE_PROPERTIES: read every PUBLISH's properties, stamp the
 * ones on "props/" topics (a will's are read-only).  Returns false to refuse. */
static bool publish_properties(mgate_session *s, const void *req, mgate_bytes topic, enum mgate_direction dir)
{
    if (refused_by_properties(s, req))
        return false;
    if (!env_on("MGATE_EXAMPLE_PROPERTIES"))
        return true;
    struct mgate_properties *p = mgate_properties(s, req);
    if (!p) /* 5.0 and not shown (too many user properties): a forged x-mgate-user must not pass */
        return mgate_session_version(s) != 5;
    if (!has_prefix(topic, "props/"))
        return true; /* read, not changed: forwarded byte for byte */
    if (dir == MGATE_DOWN)
        return mgate_user_property_add(s, p, text("x-mgate-to"), mgate_session_client_id(s)) == 0;
    mgate_bytes user = mgate_session_username(s);
    mgate_user_property_remove(p, text("x-strip"));
    return mgate_user_property_set(s, p, text("x-mgate-user"), user.len ? user : text("anonymous")) == 0;
}

static enum mgate_verdict auth_connect(mgate_session *s, struct mgate_connect_req *req)
{
    if (auth_method_refused(s, req)) {
        req->reason = 0x8C; /* Bad authentication method */
        return MGATE_DENY;
    }
    if (has_prefix(req->client_id, "deny"))
        return MGATE_DENY;
    if (req->has_username && equals(req->username, "baduser")) {
        req->reason = MGATE_REASON_BAD_USER_OR_PASSWORD;
        return MGATE_DENY;
    }
    if (req->has_username && equals(req->username, "slow"))
        return answer_later(s, req, 200, MGATE_ALLOW);
    if (req->has_username && equals(req->username, "slowdeny"))
        return answer_later(s, req, 200, MGATE_DENY);
    if (req->has_username && has_prefix(req->username, "pass-"))
        return MGATE_IGNORE;
    if (req->has_username && has_prefix(req->username, "latepass-"))
        return answer_later(s, req, 150, MGATE_IGNORE);
    if (req->has_password && equals(req->password, "deny-password")) {
        req->reason = MGATE_REASON_BAD_USER_OR_PASSWORD;
        return MGATE_DENY;
    }
    if (equals(req->client_id, "rename-me"))
        req->client_id = (mgate_bytes){(const uint8_t *)"renamed", 7};
    if (equals(req->client_id, "mount-me"))
        mgate_session_set_mount_point(s, (mgate_bytes){(const uint8_t *)"by-handler/", 11});
    if (equals(req->client_id, "mount-bad") &&
        mgate_session_set_mount_point(s, (mgate_bytes){(const uint8_t *)"t/+/", 4}) < 0)
        return MGATE_DENY;
    return MGATE_ALLOW;
}

static enum mgate_verdict auth_publish(mgate_session *s, struct mgate_publish_req *req)
{
    if (contains(req->topic, "forbidden") || equals(req->payload, "deny-payload"))
        return MGATE_DENY;
    if (req->will ? refused_by_properties(s, req) : !publish_properties(s, req, req->topic, MGATE_UP))
        return MGATE_DENY;
    /* A CONNECT's will comes here too (req->will), right after auth_connect:
     * the broker would publish it later for the client, so it gets the same
     * rules as a PUBLISH, and a refused will refuses the CONNECT.  This
     * handler also keeps wills off its "alerts/" topics altogether. */
    if (req->will && has_prefix(req->topic, "alerts/")) {
        req->reason = MGATE_REASON_NOT_AUTHORIZED;
        return MGATE_DENY;
    }
    if (has_prefix(req->topic, "badrewrite/")) /* a handler's mistake, which mgate must not send */
        req->topic = (mgate_bytes){(const uint8_t *)"bad/+/x", 7};
    if (has_prefix(req->topic, "rewrite/")) {
        /* Memory from mgate_session_alloc lives until the packet is sent. */
        uint32_t rest = req->topic.len - 8;
        uint8_t *t = mgate_session_alloc(s, 10 + rest);
        if (!t)
            return MGATE_DENY;
        memcpy(t, "rewritten/", 10);
        memcpy(t + 10, req->topic.p + 8, rest);
        req->topic = (mgate_bytes){t, 10 + rest};
    }
    if (has_prefix(req->topic, "slow/") || contains(req->topic, "/slow/"))
        return answer_later(s, req, 100, MGATE_ALLOW);
    if (equals(req->payload, "late-payload"))
        return answer_later(s, req, 2000, MGATE_ALLOW);
    return MGATE_IGNORE; /* no opinion: allowed, unless a later handler objects */
}

static enum mgate_verdict auth_subscribe(mgate_session *s, struct mgate_subscribe_req *req)
{
    if (req->dir == MGATE_DOWN && contains(req->filters[0].filter, "secret"))
        return MGATE_DENY;
    if (req->dir == MGATE_DOWN && !publish_properties(s, req, req->filters[0].filter, MGATE_DOWN))
        return MGATE_DENY;
    if (req->dir == MGATE_DOWN && contains(req->filters[0].filter, "stuckdown"))
        return answer_later(s, req, 2000, MGATE_ALLOW);
    if (req->dir == MGATE_DOWN)
        return contains(req->filters[0].filter, "latedown") ? answer_later(s, req, 100, MGATE_ALLOW) : MGATE_IGNORE;
    if (refused_by_properties(s, req))
        return MGATE_DENY;
    for (uint32_t i = 0; i < req->count; i++) {
        if (contains(req->filters[i].filter, "forbidden"))
            req->filters[i].denied = true;
        if (has_prefix(req->filters[i].filter, "badrewrite/"))
            req->filters[i].filter = (mgate_bytes){(const uint8_t *)"bad/#/x", 7};
        if (has_prefix(req->filters[i].filter, "grow/")) { /* unchecked: mgate must catch what is too long */
            mgate_bytes f = req->filters[i].filter;
            uint8_t *p = mgate_session_alloc(s, 21 + (size_t)f.len);
            if (!p)
                return MGATE_DENY;
            memcpy(p, "grown-by-the-handler/", 21);
            memcpy(p + 21, f.p, f.len);
            req->filters[i].filter = (mgate_bytes){p, 21 + f.len};
        }
    }
    return MGATE_IGNORE; /* the rest is up to the next handler, if any */
}

static void on_connect(mgate_session *s)
{
    mgate_bytes id = mgate_session_client_id(s);
    struct mgate_cert cert; /* on an mTLS listener: who the certificate says it is */
    if (mgate_session_cert(s, &cert))
        mgate_log(1, s, "example: %.*s connected with certificate CN=%s serial=%s sha256=%s", (int)id.len,
                  (const char *)id.p, cert.cn, cert.serial, cert.fingerprint);
    else
        mgate_log(1, s, "example: %.*s connected", (int)id.len, (const char *)id.p);
}

static const struct mgate_handler example = {
    .name = "example",
    .auth_connect = auth_connect,
    .auth_publish = auth_publish,
    .auth_subscribe = auth_subscribe,
    .connect = on_connect,
};

/* Interceptors see whole raw packets; this one only looks at how a
 * PUBLISH ends (its payload's last bytes). */
static enum mgate_intercept pre(mgate_session *s, enum mgate_direction dir, mgate_bytes *pkt)
{
    (void)s;
    static const char marker[] = "intercept-drop";
    if (dir != MGATE_UP || (pkt->p[0] >> 4) != 3 || pkt->len < sizeof(marker))
        return MGATE_KEEP;
    return memcmp(pkt->p + pkt->len - (sizeof(marker) - 1), marker, sizeof(marker) - 1) == 0
               ? MGATE_DROP
               : MGATE_KEEP;
}

/* After the handler: a client PUBLISH whose payload ends with "intercept-bad"
 * is replaced by a PUBLISH to a/# (a wildcard no PUBLISH may carry): a
 * buggy interceptor, whose replacement mgate checks like peer input and
 * does not send. */
static enum mgate_intercept post(mgate_session *s, enum mgate_direction dir, mgate_bytes *pkt)
{
    static const char marker[] = "intercept-bad";
    static const uint8_t bad5[] = {0x30, 0x07, 0x00, 0x03, 'a', '/', '#', 0x00, 'x'}; /* empty properties */
    static const uint8_t bad4[] = {0x30, 0x06, 0x00, 0x03, 'a', '/', '#', 'x'};
    if (dir != MGATE_UP || (pkt->p[0] >> 4) != 3 || pkt->len < sizeof(marker) ||
        memcmp(pkt->p + pkt->len - (sizeof(marker) - 1), marker, sizeof(marker) - 1) != 0)
        return MGATE_KEEP;
    *pkt = mgate_session_version(s) == 5 ? (mgate_bytes){bad5, sizeof(bad5)} : (mgate_bytes){bad4, sizeof(bad4)};
    return MGATE_REPLACE;
}

static const struct mgate_interceptor interceptor = {.pre = pre, .post = post};

int main(int argc, char **argv)
{
    static const struct mgate_handler *const handlers[] = {&example, NULL};
    setenv("MGATE_HANDLER", "example", 0); /* the default here; the environment still wins */
    return mgate_main(argc, argv, handlers, &interceptor);
}
