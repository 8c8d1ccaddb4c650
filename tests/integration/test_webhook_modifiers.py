#!/usr/bin/python3
"""The `http` handler's answers with modifiers, expire_at and Cache-Control (issue 17).

A local HTTP service answers from a table the test fills: by client id for a CONNECT, by the
topic's last level for a PUBLISH or a SUBSCRIBE filter, each answer a status, a body and headers.
It records every request.  What the broker sees is read from mosquitto's log (client id and
username) and from subscribers connected to mosquitto directly.

* CONNECT: client_id and username rewritten (the broker sees the new ones), mount_point (a
  PUBLISH arrives under the prefix), expire_at (v5: DISCONNECT 0xA0 within a second of it; 3.1.1:
  closed; already past: CONNACK 0x87; the HTTP front end's keep-alive connection: closed then);
  invalid modifiers and unknown keys deny, the log names them.
* PUBLISH: topic, payload (base64), QoS 1 -> 0 and retain rewritten, as a subscriber sees it; the
  request carries the payload and (v5) the user properties, which user_properties replaces (a list of
  pairs or an object; a 3.1.1 PUBLISH has none: allowed as it is); a QoS 3, bad base64, a QoS raised,
  user properties that are no pairs: denied, the field named.
* SUBSCRIBE: VerneMQ's "topics" answer per filter: a rewritten filter, QoS 128 (0x80), a reason
  (v5 SUBACK code; 3.1.1 gets 0x80), kept ones granted.
* Cache-Control: max-age=N keeps an answer (the second identical CONNECT is not sent, its
  modifiers apply again, the debug line and the metric say so); after N s the service is asked
  again; no-store is never kept, even with MGATE_WEBHOOK_CACHE_TTL.
* Answers of before ({"result": "allow"/"deny"}) still work.
"""
import base64
import json
import re
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True
import harness as h  # noqa: E402
import test_http  # noqa: E402
import test_webhook  # noqa: E402


class Service(test_webhook.Service):
    """test_webhook's service, answering from a table instead of by name."""

    def __init__(self):
        self.answers = {}  # key -> (status, body (a dict or text), headers)
        super().__init__()

    @staticmethod
    def key(req):
        if req.get("action") == "connect":  # the HTTP front end's have no client id: their username
            return req.get("client_id") or req.get("username") or ""
        return (req.get("topic") or "").rsplit("/", 1)[-1]

    def decide(self, req):
        with self.lock:
            status, body, headers = self.answers.get(self.key(req), (200, {"result": "allow"}, {}))
        return status, body if isinstance(body, str) else json.dumps(body), headers

    def on(self, key, body, status=200, headers=None):
        with self.lock:
            self.answers[key] = (status, body, headers or {})

    def count(self, key):
        return super().count(lambda r: self.key(r) == key)

    def last(self, key):
        return super().last(lambda r: self.key(r) == key)


def ok(**mods):
    return {"result": "ok", "modifiers": mods}


def b64(data):
    return base64.b64encode(data).decode()


def connack(port, version, cid, user=None):
    c = h.RawClient(port)
    rc = c.connect(version, cid, username=user)
    c.close()
    return rc


def metric(port, name):
    text = urllib.request.urlopen(f"http://{h.HOST}:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def connect_modifiers(t, g, broker, svc):
    svc.on("cm-rewrite", ok(client_id="cm-new", username="u-new"))
    mark = broker.log.mark()
    c = h.raw_client(g.port, 5, "cm-rewrite", username="u-old")
    t.check(broker.wait_client("cm-new", 5.0, mark), "client_id modifier: the broker sees client id cm-new")
    t.check(broker.log.search(r"as cm-new \(.*u'u-new'", mark), "username modifier: ... and username u-new",
            broker.log.text(mark)[-300:])
    t.check(not broker.saw_client("cm-rewrite", mark), "... never the client's own id")
    c.close()

    svc.on("cm-mount", ok(mount_point="tenant7/"))
    sub = h.raw_client(broker.port, 5, "cm-mount-watch")
    sub.subscribe(1, [("tenant7/#", 1)])
    c = h.raw_client(g.port, 5, "cm-mount")
    t.eq(c.publish_wait("m/x", b"mounted", 1, 1), 0, "mount_point modifier: the client publishes m/x")
    got = sub.collect(1, 5.0)
    t.eq([(m.topic, m.payload) for m in got], [("tenant7/m/x", b"mounted")], "... the broker has it at tenant7/m/x")
    c.close()
    sub.close()

    svc.on("cm-old", {"result": "allow"})
    t.eq(connack(g.port, 5, "cm-old"), 0, "an answer of before, {\"result\": \"allow\"}: allowed")
    svc.on("cm-old-deny", {"result": "deny"})
    t.eq(connack(g.port, 4, "cm-old-deny"), 5, "... {\"result\": \"deny\"}: CONNACK 5")
    svc.on("cm-vmq-error", {"result": {"error": "not_allowed"}})
    t.eq(connack(g.port, 5, "cm-vmq-error"), 0x87, "VerneMQ's {\"result\": {\"error\": ...}}: CONNACK 0x87")

    for cid, mods, field in (("cm-bad-type", {"client_id": 5}, "client_id"),
                             ("cm-bad-key", {"colour": "red"}, "colour"),
                             ("cm-bad-mount", {"mount_point": "a/+/"}, "mount_point"),
                             ("cm-bad-expiry", {"expire_at": "soon"}, "expire_at")):
        svc.on(cid, ok(**mods))
        mark = g.log.mark()
        t.eq(connack(g.port, 5, cid), 0x87, f"an invalid modifier {mods}: CONNACK 0x87")
        t.check(g.log.wait(rf'modifier \\"{field}\\"', 3.0, mark), f"... the log names {field}",
                g.log.text(mark)[-300:])


def expire_at(t, g, broker, svc):
    at = int(time.time()) + 2
    svc.on("ex-5", ok(expire_at=at))
    c = h.raw_client(g.port, 5, "ex-5")
    closed, reason = c.expect_disconnect(5.0)
    now = time.time()
    t.check(closed and reason == 0xA0, "expire_at: the v5 client gets DISCONNECT 0xA0 (maximum connect time)",
            (closed, reason))
    t.check(at - 0.05 <= now <= at + 1.0, f"... within a second of expire_at ({now - at:+.2f} s)")
    at = int(time.time()) + 2
    svc.on("ex-4", ok(expire_at=at))
    c = h.raw_client(g.port, 4, "ex-4")
    closed, reason = c.expect_disconnect(5.0)
    now = time.time()
    t.check(closed and reason is None and at - 0.05 <= now <= at + 1.0,
            f"expire_at: the 3.1.1 client is closed, no DISCONNECT ({now - at:+.2f} s)", (closed, reason))
    t.eq(g.log.count(r"time is up"), 2, "each cut is logged once")
    t.eq(metric(int(g.env["MGATE_ADMIN_PORT"]), "mgate_sessions_expired_total"), 2,
         "mgate_sessions_expired_total counts them")
    svc.on("ex-past", ok(expire_at=int(time.time()) - 10))
    t.eq(connack(g.port, 5, "ex-past"), 0x87, "expire_at already past: CONNACK 0x87")
    svc.on("ex-far", ok(expire_at=int(time.time()) + 3600))
    c = h.raw_client(g.port, 5, "ex-far")
    t.check(c.ping(1.0), "expire_at an hour away: the client stays")
    c.close()


def http_front_expiry(t, tmp, svc):
    """A front end's session ends at expire_at too: the HTTP front end's keep-alive connection."""
    echo = test_http.Echo(tmp)
    g = test_http.gate(tmp, echo.port, binary=h.MGATE_BIN, MGATE_HANDLER="http", MGATE_WEBHOOK_URL=svc.url)
    at = int(time.time()) + 2
    svc.on("ex-http", ok(expire_at=at))  # Basic ex-http:pw
    r = test_http.Raw(g.port)
    r.send(f"POST {test_http.BASE}/a HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ZXgtaHR0cDpwdw==\r\n"
           "Content-Length: 2\r\n\r\nhi")
    t.eq(r.response()[0], 200, "HTTP front end: a request whose connect answer has expire_at: 200")
    try:
        r.s.settimeout(5.0)
        r._more()
        closed = False
    except h.Closed:
        closed = True
    now = time.time()
    t.check(closed and at - 0.05 <= now <= at + 1.0, f"... its keep-alive connection is closed at expire_at ({now - at:+.2f} s)")
    g.stop()
    echo.stop()


def publish_modifiers(t, g, broker, svc):
    sub = h.raw_client(broker.port, 5, "pm-watch")
    sub.subscribe(1, [("pm/#", 2)])
    p = h.raw_client(g.port, 5, "pm-pub")
    svc.on("rewrite", ok(topic="pm/rewritten", payload=b64(b"new \x00 bytes"), qos=0, retain=True))
    t.eq(p.publish_wait("pm/rewrite", b"old", 1, 1), 0, "PUBLISH with modifiers: PUBACK 0 (QoS 1 lowered: mgate acks)")
    got = sub.collect(1, 5.0)
    t.eq([(m.topic, m.payload, m.qos) for m in got], [("pm/rewritten", b"new \x00 bytes", 0)],
         "the subscriber gets the new topic, payload and QoS 0")
    late = h.raw_client(broker.port, 5, "pm-late")
    late.subscribe(1, [("pm/rewritten", 1)])
    got = late.collect(1, 3.0)
    t.check(len(got) == 1 and got[0].retain, "retain modifier: a later subscriber gets it as a retained message",
            got)
    late.close()
    r = svc.last("rewrite")
    t.eq(r and r.get("payload"), b64(b"old"), "the publish request carries the payload (base64)")
    for topic, mods, field in (("pm/badqos", {"qos": 3}, "qos"), ("pm/badpayload", {"payload": "%%%"}, "payload"),
                               ("pm/raise", {"qos": 2}, "qos"), ("pm/badtopic", {"topic": "a/#"}, "topic")):
        svc.on(topic.rsplit("/", 1)[-1], ok(**mods))
        mark = g.log.mark()
        q = h.raw_client(g.port, 5, "pm-" + field)  # a session of its own: its log lines are budgeted
        t.eq(q.publish_wait(topic, b"x", 1, 2), 0x87, f"an invalid modifier {mods}: PUBACK 0x87")
        t.check(g.log.wait(rf'modifier \\"{field}\\"', 3.0, mark), f"... the log names {field}")
        q.close()
    got = sub.collect(5, 1.0)
    t.eq([m.topic for m in got], [], "no denied message reaches the subscriber")

    users = lambda m: [tuple(v) for pid, v in m.props if pid == h.P_USER]  # noqa: E731
    svc.on("props", ok(user_properties=[["b", "2"], ["b", "3"]]))
    t.eq(p.publish_wait("pm/props", b"p", 1, 3, props=[(h.P_USER, ("a", "1")), (h.P_USER, ("keep", "x"))]), 0,
         "user_properties modifier: PUBACK 0")
    got = sub.collect(1, 3.0)
    t.eq([users(m) for m in got], [[("b", "2"), ("b", "3")]], "... the subscriber gets the service's user properties only")
    r = svc.last("props")
    t.eq(r and r.get("user_properties"), [["a", "1"], ["keep", "x"]], "the request carries the PUBLISH's user properties")
    svc.on("propobj", ok(user_properties={"c": "4"}))
    p.publish_wait("pm/propobj", b"p", 1, 4)
    got = sub.collect(1, 3.0)
    t.eq([users(m) for m in got], [[("c", "4")]], "... given as an object too")
    old = h.raw_client(g.port, 4, "pm-311")
    t.eq(old.publish_wait("pm/propobj", b"p311", 1, 5), 0, "a 3.1.1 PUBLISH with user_properties: allowed (it has none)")
    old.close()
    got = sub.collect(1, 3.0)
    t.eq([(m.payload, users(m)) for m in got], [(b"p311", [])], "... and forwarded without properties")
    svc.on("propbad", ok(user_properties=[["only-a-name"]]))
    mark = g.log.mark()
    q = h.raw_client(g.port, 5, "pm-propbad")
    t.eq(q.publish_wait("pm/propbad", b"x", 1, 1), 0x87, "user_properties that are no pairs: PUBACK 0x87")
    t.check(g.log.wait(r'modifier \\"user_properties\\"', 3.0, mark), "... the log names user_properties")
    q.close()
    p.close()
    sub.close()


def subscribe_modifiers(t, g, broker, svc):
    svc.on("keep", {"result": "ok"})
    svc.on("refuse128", {"result": "ok", "topics": [{"topic": "sm/refuse128", "qos": 128}]})
    svc.on("reason", {"result": "ok", "topics": [{"reason": 0xA2}]})
    svc.on("rewrite", {"result": "ok", "modifiers": {"topics": [{"topic": "sm/rewritten", "qos": 0}]}})
    c = h.raw_client(g.port, 5, "sm-5")
    codes = c.subscribe(1, [("sm/keep", 1), ("sm/refuse128", 1), ("sm/+/reason", 1), ("sm/rewrite", 1)])
    t.eq(codes, [1, 0x80, 0xA2, 0], "v5 SUBACK: kept 1, qos 128 -> 0x80, reason 0xA2, rewritten at QoS 0")
    pub = h.raw_client(broker.port, 5, "sm-pub")
    pub.publish("sm/rewritten", b"to the new filter", 0)
    pub.publish("sm/rewrite", b"to the old filter", 0)
    got = c.collect(2, 2.0)
    t.eq([m.payload for m in got], [b"to the new filter"], "the rewritten filter is the one subscribed")
    c.close()
    c = h.raw_client(g.port, 4, "sm-4")
    t.eq(c.subscribe(1, [("sm/keep", 1), ("sm/+/reason", 1)]), [1, 0x80], "3.1.1: a filter refused with a reason gets 0x80")
    c.close()
    pub.close()


def cache(t, tmp, broker, svc):
    g = h.Mgate(tmp, broker.port, MGATE_HANDLER="http", MGATE_WEBHOOK_URL=svc.url, MGATE_WORKERS="1",
                MGATE_LOG_LEVEL="debug", MGATE_ADMIN_PORT=h.free_port(), MGATE_WEBHOOK_CACHE_TTL="30s")
    admin = int(g.env["MGATE_ADMIN_PORT"])
    svc.on("ca-1", ok(client_id="ca-1-new"), headers={"Cache-Control": "max-age=2"})
    mark = broker.log.mark()
    t.eq(connack(g.port, 5, "ca-1"), 0, "max-age=2: the first CONNECT is asked")
    t.eq(connack(g.port, 5, "ca-1"), 0, "... the same CONNECT again")
    t.eq(svc.count("ca-1"), 1, "... is answered without a request")
    t.check(g.log.search(r"http: connect answered from the cache: allow"), "the debug line tells the cached answer")
    t.eq(metric(admin, "mgate_webhook_cache_hits_total"), 1, "mgate_webhook_cache_hits_total counts it")
    h.wait_until(lambda: len(re.findall(r"as ca-1-new \(", broker.log.text(mark))) >= 2, 3.0)
    t.eq(len(re.findall(r"as ca-1-new \(", broker.log.text(mark))), 2, "the kept answer's modifiers apply again")
    time.sleep(2.1)
    t.eq(connack(g.port, 5, "ca-1"), 0, "after max-age")
    t.eq(svc.count("ca-1"), 2, "... the service is asked again")

    svc.on("ca-2", {"result": "allow"}, headers={"Cache-Control": "no-store"})
    connack(g.port, 5, "ca-2")
    connack(g.port, 5, "ca-2")
    t.eq(svc.count("ca-2"), 2, "no-store: never kept, even with MGATE_WEBHOOK_CACHE_TTL")
    svc.on("ca-3", {"result": "deny"}, headers={"Cache-Control": "max-age=30"})
    t.eq([connack(g.port, 5, "ca-3") for _ in range(2)], [0x87, 0x87], "a deny with max-age")
    t.eq(svc.count("ca-3"), 1, "... is kept too")
    svc.on("ca-4", {"result": "ignore"}, headers={"Cache-Control": "max-age=30"})
    connack(g.port, 5, "ca-4")
    connack(g.port, 5, "ca-4")
    t.eq(svc.count("ca-4"), 2, "an ignore is never kept")

    sub = h.raw_client(broker.port, 5, "ca-watch")
    sub.subscribe(1, [("ca/#", 0)])
    p = h.raw_client(g.port, 5, "ca-pub")
    svc.on("pay", ok(payload=b64(b"first answer's")), headers={"Cache-Control": "max-age=30"})
    p.publish_wait("ca/pay", b"one", 1, 1)
    p.publish_wait("ca/pay", b"two", 1, 2)
    got = sub.collect(2, 3.0)
    t.eq(svc.count("pay"), 1, "a PUBLISH's answer is kept (its key leaves the payload out)")
    t.eq([m.payload for m in got], [b"first answer's", b"two"], "... but not its payload modifier, as in VerneMQ")
    p.close()
    sub.close()
    g.stop()


def http_bridge_mount(t, tmp, broker, svc):
    """The HTTP bridge asks auth_connect per request: a mount point one request's answer chose must
    not stay for the next request on the same keep-alive connection (found by an attack round: the
    admin's message landed in alice's tenant)."""
    import http.client
    hp = "MGATE_HTTP_WITHOUT_TLS_"
    port = h.free_port()
    g = h.Mgate(tmp, broker.port, binary=h.MGATE_BIN, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None,
                MGATE_HANDLER="http", MGATE_WEBHOOK_URL=svc.url,
                **{hp + "HOST": h.HOST, hp + "PORT": port, hp + "PATH_PREFIX": "/mqtt", hp + "TARGET_HOST": h.HOST,
                   hp + "TARGET_PORT": broker.port, hp + "TARGET_PROTOCOL": "mqtt"})
    svc.on("ka-alice", ok(mount_point="tenants/alice/"))
    d = h.raw_client(broker.port, 5, "ka-watch")
    d.subscribe(1, [("#", 1)])
    c = http.client.HTTPConnection(h.HOST, port, timeout=5)
    for cid, user in (("ka-alice", "alice"), ("ka-admin", "admin")):
        auth = base64.b64encode(f"{user}:pw".encode()).decode()
        c.request("POST", f"/mqtt/ka/status?qos=1&clientid={cid}", body=f"from-{user}".encode(),
                  headers={"Authorization": "Basic " + auth})
        r = c.getresponse()
        r.read()
        t.eq(r.status, 200, f"{user}'s POST on the one keep-alive connection: 200")
    msgs, _ = d.collect_until(lambda m: m.payload == b"from-admin", 5.0)
    got = sorted((m.topic, m.payload) for m in msgs if m.payload in (b"from-alice", b"from-admin"))
    t.eq(got, [("ka/status", b"from-admin"), ("tenants/alice/ka/status", b"from-alice")],
         "alice's message in her tenant, the admin's (no mount point) where it asked, not in alice's")
    c.close()
    d.close()
    g.stop()


def main():
    h.need_binaries()
    t = h.Checks("webhook_modifiers")
    with tempfile.TemporaryDirectory() as tmp:
        svc = Service()
        broker = h.start_mosquitto(tmp)
        g = h.Mgate(tmp, broker.port, MGATE_HANDLER="http", MGATE_WEBHOOK_URL=svc.url, MGATE_ADMIN_PORT=h.free_port())
        t.case("CONNECT modifiers", connect_modifiers, t, g, broker, svc)
        t.case("expire_at", expire_at, t, g, broker, svc)
        t.case("PUBLISH modifiers", publish_modifiers, t, g, broker, svc)
        t.case("SUBSCRIBE topics", subscribe_modifiers, t, g, broker, svc)
        g.stop()
        t.case("expire_at on an HTTP front end's session", http_front_expiry, t, tmp, svc)
        t.case("Cache-Control", cache, t, tmp, broker, svc)
        t.case("the HTTP bridge: a mount point per request", http_bridge_mount, t, tmp, broker, svc)
        code = h.finish(t)
        svc.stop()
        return code


if __name__ == "__main__":
    h.run_main(main)
