#!/usr/bin/python3
"""A CONNECT's will is a publish the client causes: the handler chain judges it.

The attack (issue 14): a client whose rules allow only `dev/out/#` connects with a will on any
topic, drops the connection, and the broker publishes the will there. mosquitto lets everyone in
here, so mgate is the only gate.

* acl: a will outside the client's write rules refuses the CONNECT (3.1.1 CONNACK 5, 5.0 0x87),
  the client never reaches the broker, and no will is ever published; a will inside them is
  published when the client vanishes.
* The example handler: a will on a "forbidden" topic or on "alerts/" is refused; a will on
  "rewrite/x" is published on "rewritten/x" (the CONNECT re-encoded, 5.0 will properties kept);
  a will judged later ("slow/") holds the CONNECT and the packets behind it, in order.
* http (the webhook): the request says "will": true with the CONNECT's username and client id;
  a "deny" answer refuses the CONNECT.
"""
import os
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402
import test_webhook  # noqa: E402  (its HTTP auth service)

ACL = """\
user dev
topic write dev/out/#
user watcher
topic read #
"""


def make_password_file(path, users):
    for i, (user, password) in enumerate(users.items()):
        args = ["mosquitto_passwd", "-H", "sha512"] + (["-c"] if i == 0 else []) + ["-b", path, user, password]
        subprocess.run(args, check=True, capture_output=True, timeout=10)


def watcher(broker_port):
    """A v5 subscriber to everything, straight at the broker: it sees every will published."""
    w = h.raw_client(broker_port, 5, f"watch-{time.monotonic_ns() % 10**9}")
    if w.subscribe(1, [("#", 0)]) != [0]:
        raise AssertionError("watcher could not subscribe")
    return w


def published(w, timeout):
    """Topics (and payloads) the watcher receives within timeout seconds."""
    got = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            p = w.read_packet(max(0.05, end - time.monotonic()))
        except (TimeoutError, OSError, h.Closed):
            break
        if p is not None and p.type == h.PUBLISH:
            got.append(h.parse_publish(5, p))
    return got


def connect_with_will(port, version, cid, will, **kw):
    c = h.RawClient(port)
    rc = c.connect(version, cid, will=will, **kw)
    return c, rc


def acl_cases(t, tmp, broker):
    pwfile, aclfile = os.path.join(tmp, "pw"), os.path.join(tmp, "acl")
    make_password_file(pwfile, {"dev": "devpw", "watcher": "watchpw"})
    with open(aclfile, "w") as f:
        f.write(ACL)
    g = h.Mgate(tmp, broker.port, MGATE_HANDLER="acl", MGATE_ACL_PASSWORD_FILE=pwfile, MGATE_ACL_FILE=aclfile)
    w = watcher(broker.port)
    mark = broker.log.mark()
    for version, want in ((4, 5), (5, 0x87), (3, 5)):
        cid = f"will-evil-{version}"
        c, rc = connect_with_will(g.port, version, cid, {"topic": "admin/alarm", "payload": b"pwned", "qos": 1},
                                  username="dev", password=b"devpw")
        t.eq(rc, want, f"v{version}: a will on a topic the user may not write refuses the CONNECT")
        c.abort()
    time.sleep(0.2)
    t.check(not any(broker.saw_client(f"will-evil-{v}", mark) for v in (3, 4, 5)),
            "a client with a refused will never reaches the broker")
    got = published(w, 1.0)
    t.eq([p.topic for p in got], [], "no refused will is ever published")

    c, rc = connect_with_will(g.port, 5, "will-ok", {"topic": "dev/out/gone", "payload": b"bye", "qos": 1},
                              username="dev", password=b"devpw")
    t.eq(rc, 0, "a will inside the user's write rules: CONNACK 0")
    c.abort()
    got = published(w, 3.0)
    t.eq([(p.topic, p.payload) for p in got], [("dev/out/gone", b"bye")],
         "that will is published when the client vanishes")
    refused = [j for j in g.json_lines() if "will was refused" in str(j.get("msg", ""))]
    t.check(refused and refused[0].get("username") == "dev", "the refusal is logged with the user", refused[:1])
    w.close()
    g.stop()


def example_cases(t, tmp, broker):
    g = h.Mgate(tmp, broker.port, binary=os.environ.get("MGATE_EXAMPLE_BIN"))
    w = watcher(broker.port)
    for version, want in ((4, 5), (5, 0x87)):
        for topic in ("x/forbidden/y", "alerts/fire"):
            c, rc = connect_with_will(g.port, version, f"ex-{version}", {"topic": topic, "payload": b"p"})
            t.eq(rc, want, f"v{version}: a will on {topic} is refused by the example handler")
            c.abort()
    t.eq([p.topic for p in published(w, 0.8)], [], "none of those wills was published")

    props = [(h.P_USER, ("k", "v")), (h.P_CONTENT_TYPE, "text/plain")]
    c, rc = connect_with_will(g.port, 5, "ex-rw", {"topic": "rewrite/dev1", "payload": b"gone", "qos": 1,
                                                  "retain": False, "props": props})
    t.eq(rc, 0, "v5: a will on rewrite/dev1 is allowed")
    c.abort()
    got = published(w, 3.0)
    t.eq([(p.topic, p.payload) for p in got], [("rewritten/dev1", b"gone")],
         "the rewritten will is what the broker publishes")
    if got:
        t.check((h.P_USER, ("k", "v")) in got[0].props and (h.P_CONTENT_TYPE, "text/plain") in got[0].props,
                "the will's v5 properties survive the re-encoding", got[0].props)

    c, rc = connect_with_will(g.port, 4, "ex-rw4", {"topic": "rewrite/dev2", "payload": b"gone4"})
    t.eq(rc, 0, "3.1.1: a will on rewrite/dev2 is allowed")
    c.abort()
    t.eq([(p.topic, p.payload) for p in published(w, 3.0)], [("rewritten/dev2", b"gone4")],
         "3.1.1: the rewritten will is published")

    # A will judged later: the CONNECT waits, and a PUBLISH right behind it keeps its place.
    c = h.RawClient(g.port)
    c.version = 5
    start = time.monotonic()
    c.send(h.connect_packet(5, "ex-slow", will={"topic": "slow/will", "payload": b"late"}) +
           h.publish_packet(5, "after/connect", b"first", qos=1, pid=7))
    ack = c.expect(h.CONNACK)
    t.check(ack.body[1] == 0 and time.monotonic() - start >= 0.09,
            "a will judged later (100 ms): CONNACK 0 after the verdict", ack.body)
    p = c.expect(h.PUBACK)
    t.eq((h.ack_id(p), h.ack_reason(5, p)), (7, 0), "the PUBLISH behind it is forwarded after the CONNACK")
    got = published(w, 1.0)
    t.eq([p.topic for p in got], ["after/connect"], "the broker got that PUBLISH")
    c.abort()
    t.eq([(p.topic, p.payload) for p in published(w, 3.0)], [("slow/will", b"late")],
         "the late-allowed will is published when the client vanishes")
    w.close()
    g.stop()


def webhook_cases(t, tmp, broker):
    svc = test_webhook.Service()
    try:
        g = test_webhook.gate(tmp, broker, svc.url)
        c, rc = connect_with_will(g.port, 5, "wh-1", {"topic": "w/denyme", "payload": b"x", "qos": 1, "retain": True},
                                  username="allow-u", password=b"pw")
        t.eq(rc, 0x87, "http: the webhook denies the will: CONNACK 0x87")
        c.abort()
        req = svc.last(lambda r: r.get("action") == "publish" and r.get("will"))
        t.check(req is not None and req.get("topic") == "w/denyme" and req.get("qos") == 1 and
                req.get("retain") is True and req.get("username") == "allow-u" and req.get("client_id") == "wh-1",
                "the webhook got the will as a publish with \"will\": true, topic, qos, retain and the identity", req)
        c, rc = connect_with_will(g.port, 4, "wh-2", {"topic": "w/allowme", "payload": b"x"},
                                  username="allow-u", password=b"pw")
        t.eq(rc, 0, "http: an allowed will: CONNACK 0")
        c.close()
        n = svc.count(lambda r: r.get("action") == "publish" and not r.get("will") and r.get("topic") == "w/allowme")
        t.eq(n, 0, "a will is never sent as an ordinary publish")
        g.stop()
    finally:
        svc.stop()


def main():
    h.need_binaries()
    t = h.Checks("will")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.start_mosquitto(tmp)
        t.case("acl: wills outside the rules", acl_cases, t, tmp, broker)
        t.case("example handler: refused, rewritten, late wills", example_cases, t, tmp, broker)
        t.case("http handler: the will in the webhook request", webhook_cases, t, tmp, broker)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
