#!/usr/bin/python3
"""The CoAP bridge: a CoAP listener with TARGET_PROTOCOL=mqtt in front of a real mosquitto, with
libcoap's coap-client-openssl and raw datagrams (exact types, codes, message ids) as clients.

* POST ps/{topic}?clientid=&qos=&retain= arrives at a mosquitto_sub subscriber at QoS 0 and 1, topic
  and payload exact; r=true leaves a retained message a later subscriber gets, a POST without does
  not; the answer is 2.04 (piggybacked on the ACK of a CON); the broker sees the client id.
* Observe: GET ps/{filter} with Observe 0 is 2.05 with Observe once SUBACKed; what mosquitto_pub
  publishes arrives, in order, none lost: CON notifications at QoS 1 (acknowledged by the client),
  NON at QoS 0, the Observe number rising, a retained message first; libcoap's client (-s) gets them too; Observe 1
  unsubscribes (mosquitto logs the UNSUBSCRIBE, nothing more arrives); a RST for a notification
  cancels the observation and unsubscribes.
* The acl handler: 2.04 where the rules allow, 4.03 elsewhere (and for an Observe it refuses), 4.01
  for a wrong or no password, and the broker never sees a refused client; a broker message under a
  deny rule is not notified (auth_subscribe going down).
* Verdicts given later (the example handler): a CONNECT allowed or refused late, requests behind a
  late verdict in order, notifications judged late in order, SIGTERM while one is out.
* A CON POST sent three times with the same message id is published once, each copy answered 2.04
  with that id.
* A client that never acknowledges confirmable notifications: one CON at a time, retransmitted 4
  times with doubling waits, then the observation ends and is unsubscribed; mgate's memory stays
  bounded and another client is served meanwhile.
* IDLE_TIMEOUT ends a quiet observer (a 5.03 notification, DISCONNECT on the broker) but not one
  that is getting notifications.
* Bad requests: a wildcard, an empty or non-UTF-8 topic 4.00; a path not under ps/ 4.04; DELETE
  4.05; an unknown critical option 4.02; a GET without Observe 4.00.  Broker down, refusing the
  CONNECT, or silent past CONNECT_TIMEOUT: 5.03.
* TARGET_PROTOCOL=mqtts (TARGET_CA_FILE): POST and Observe through TLS; the wrong CA is 5.03 and
  the broker sees no session.
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402
from test_acl import make_password_file, write  # noqa: E402
from test_coap import (ACK, CON, DELETE, GET, NON, OBSERVE, POST, RST, URI_PATH, URI_QUERY, Raw, code,  # noqa: E402
                       encode, gate, readyz, tool)
from test_admin import metrics  # noqa: E402
from test_http_bridge import Sub, connects  # noqa: E402
from test_tls_upstream import TlsBroker  # noqa: E402

CHANGED, CONTENT = code(2, 4), code(2, 5)


def bridge(tmp, broker_port, **settings):
    return gate(tmp, broker_port, binary=h.MGATE_BIN, TARGET_PROTOCOL="mqtt", **settings)


def query(**q):
    return [(URI_QUERY, f"{k}={v}") for k, v in q.items()]


def answer_of(c, mid, timeout=5.0):
    """The first datagram with message id mid (others are dropped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.recv(max(0.05, deadline - time.monotonic()))
        if r and r[2] == mid:
            return r
    return None


def pub(broker, topic, payloads, qos=1):
    """mosquitto_pub each payload on topic, in order, one connection."""
    subprocess.run(["mosquitto_pub", "-h", h.HOST, "-p", str(broker.port), "-q", str(qos), "-t", topic, "-l"],
                   input="".join(p + "\n" for p in payloads).encode(), timeout=20, check=True)


def notifications(c, n, timeout=10.0, ack=True):
    """Up to n notifications (2.05) in arrival order; CON ones are acknowledged when ack."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        r = c.recv(0.2)
        if r and r[1] == CONTENT:
            got.append(r)
            if ack and r[0] == CON:
                c.send(encode(ACK, 0, r[2]))
    return got


def seq(r):
    return int.from_bytes(r[4][OBSERVE][0], "big")


def publish(t, g, broker, tmp):
    t.check(h.wait_until(lambda: readyz(g.admin)[0] == 200, 8.0), "/readyz: 200, the broker accepts TCP",
            readyz(g.admin)[1])
    sub = Sub(tmp, broker, "coap/#")
    rc, out = tool(g.coap, "ps/coap/q0?clientid=coap-q0", "-m", "post", "-e", "21.5")
    t.check(rc == 0 and "4." not in out and "5." not in out, "coap-client POST at QoS 0: no error", out)
    rc, out = tool(g.coap, "ps/coap/q1?c=coap-q1&q=1", "-m", "put", "-e", "hello")
    t.check(rc == 0 and "4." not in out and "5." not in out, "coap-client PUT at QoS 1 (short names): no error", out)
    c = Raw(g.coap)
    mid = c.request(CON, POST, "ps/coap/raw/x", b"\x00bin\xff", token=b"\x21",
                    opts=query(clientid="coap-raw", qos=1))
    r = answer_of(c, mid)
    t.check(r and r[0] == ACK and r[1] == CHANGED and r[3] == b"\x21",
            "a raw CON POST at QoS 1: 2.04 piggybacked on its ACK, its token", r)
    mid = c.request(NON, POST, "ps/coap/raw/non", b"non", token=b"\x22", opts=query(clientid="coap-raw"))
    r = c.recv()
    t.check(r and r[0] == NON and r[1] == CHANGED and r[3] == b"\x22", "a NON POST: a NON 2.04 with its token", r)
    sub.wait(4)
    lines = sub.lines()
    sub.stop()
    t.check("coap/q0|0|0|21.5" in lines, "the subscriber got the QoS 0 message, topic and payload exact", lines)
    t.check("coap/q1|0|1|hello" in lines, "the subscriber got the QoS 1 message at QoS 1", lines)
    t.check(any(x.startswith("coap/raw/x|0|1|") for x in lines), "... and the raw one", lines)
    t.check("coap/raw/non|0|0|non" in lines, "... and the NON one", lines)
    t.eq(connects(broker, "coap-q0"), 1, "the broker saw ?clientid=coap-q0")
    t.eq(connects(broker, "coap-raw"), 1, "one raw client, two requests: one MQTT connection")

    rc, out = tool(g.coap, "ps/coap/kept?clientid=coap-r&qos=1&retain=true", "-m", "post", "-e", "kept value")
    t.check(rc == 0 and "4." not in out, "POST ?retain=true: no error", out)
    tool(g.coap, "ps/coap/notkept?clientid=coap-nr&qos=1", "-m", "post", "-e", "gone")
    got = subprocess.run(["mosquitto_sub", "-h", h.HOST, "-p", str(broker.port), "-t", "coap/kept", "-C", "1",
                          "-W", "5", "-F", "%r %p"], capture_output=True, timeout=10)
    t.eq(got.stdout.strip(), b"1 kept value", "a later subscriber gets the retained message")
    got = subprocess.run(["mosquitto_sub", "-h", h.HOST, "-p", str(broker.port), "-t", "coap/notkept", "-C", "1",
                          "-W", "1", "-F", "%r %p"], capture_output=True, timeout=10)
    t.eq(got.stdout, b"", "a POST without retain left no retained message")
    c.close()


def observe(t, g, broker, tmp):
    c = Raw(g.coap)
    mark = broker.log.mark()
    mid = c.request(CON, GET, "ps/obs/+/v", token=b"\x31", opts=[(OBSERVE, b"")] + query(clientid="obs-1", qos=1))
    r = answer_of(c, mid)
    t.check(r and r[0] == ACK and r[1] == CONTENT and OBSERVE in r[4], "Observe 0: 2.05 with Observe", r)
    t.check(broker.log.search(r"Received SUBSCRIBE from obs-1", mark), "mosquitto got the SUBSCRIBE")
    n = 30
    pub(broker, "obs/a/v", [f"m{i}" for i in range(n)], qos=1)
    got = notifications(c, n)
    t.eq([r[5] for r in got], [f"m{i}".encode() for i in range(n)], f"{n} QoS 1 messages: all notified, in order")
    t.check(all(r[0] == CON and r[3] == b"\x31" for r in got), "as CON notifications with the registration's token")
    seqs = [seq(r) for r in got]
    t.check(all(b > a for a, b in zip(seqs, seqs[1:])), "the Observe number rises", seqs)
    pub(broker, "obs/b/other", ["not for the filter"], qos=1)
    pub(broker, "obs/b/v", ["q0"], qos=0)
    got = notifications(c, 2, timeout=2.0)
    t.check(len(got) == 1 and got[0][0] == NON and got[0][5] == b"q0",
            "a QoS 0 message is a NON notification; a topic the filter does not match is none", got)
    # registered again with the same token on another filter: the old one is unsubscribed
    mark = broker.log.mark()
    mid = c.request(CON, GET, "ps/obs/again", token=b"\x31", opts=[(OBSERVE, b"")] + query(clientid="obs-1", qos=1))
    r = answer_of(c, mid)
    t.check(r and r[1] == CONTENT and seq(r) > seqs[-1], "registered again (same token, another filter): 2.05, "
            "a fresh Observe number", r)
    t.check(broker.log.wait(r"Received UNSUBSCRIBE from obs-1", 5.0, mark), "the old filter is unsubscribed")
    pub(broker, "obs/a/v", ["old filter"], qos=1)
    pub(broker, "obs/again", ["new filter"], qos=1)
    t.eq([x[5] for x in notifications(c, 2, timeout=2.0)], [b"new filter"], "only the new filter's messages come")
    mid = c.request(CON, GET, "ps/obs/+/v", token=b"\x31", opts=[(OBSERVE, b"")] + query(clientid="obs-1", qos=1))
    t.check((answer_of(c, mid) or [0, 0])[1] == CONTENT, "and back to obs/+/v")
    # deregistration
    mark = broker.log.mark()
    mid = c.request(CON, GET, "ps/obs/+/v", token=b"\x31", opts=[(OBSERVE, b"\x01")] + query(clientid="obs-1", qos=1))
    r = answer_of(c, mid)
    t.check(r and r[1] == CONTENT, "Observe 1: 2.05", r)
    t.check(broker.log.wait(r"Received UNSUBSCRIBE from obs-1", 5.0, mark), "mosquitto got the UNSUBSCRIBE")
    pub(broker, "obs/a/v", ["after"], qos=1)
    t.eq(notifications(c, 1, timeout=1.5), [], "nothing after the deregistration")

    # RST cancels
    mid = c.request(CON, GET, "ps/rst/t", token=b"\x32", opts=[(OBSERVE, b"")] + query(clientid="obs-1"))
    t.check((answer_of(c, mid) or [0, 0])[1] == CONTENT, "another registration (QoS 0): 2.05")
    pub(broker, "rst/t", ["one"], qos=0)
    got = notifications(c, 1)
    t.check(len(got) == 1 and got[0][0] == NON, "its NON notification", got)
    mark = broker.log.mark()
    if got:
        c.send(encode(RST, 0, got[0][2]))
    t.check(broker.log.wait(r"Received UNSUBSCRIBE from obs-1", 5.0, mark), "a RST for it: UNSUBSCRIBE")
    pub(broker, "rst/t", ["two"], qos=0)
    t.eq(notifications(c, 1, timeout=1.5), [], "nothing after the RST")
    c.close()

    # a retained message (the publish case left one on coap/kept) is the first notification
    k = Raw(g.coap)
    mid = k.request(CON, GET, "ps/coap/kept", token=b"\x33", opts=[(OBSERVE, b"")] + query(clientid="obs-kept", q=1))
    r = answer_of(k, mid)
    got = notifications(k, 1)
    t.check(r and r[1] == CONTENT and len(got) == 1 and got[0][5] == b"kept value",
            "observing a topic with a retained message: 2.05, then the retained message", (r, got))
    k.close()

    # libcoap's own client observing for 4 s
    out = os.path.join(tmp, "observer.out")
    with open(out, "wb") as f:
        p = h.spawn(["coap-client-openssl", "-B", "6", "-s", "4", f"coap://{h.HOST}:{g.coap}/ps/lib/t?c=lib-obs&q=1"],
                    stdout=f, stderr=subprocess.STDOUT)
    broker.wait_client("lib-obs")
    time.sleep(0.5)
    pub(broker, "lib/t", ["first", "second"], qos=1)
    p.wait(timeout=15)
    text = open(out, "rb").read().decode(errors="replace")
    t.check("first" in text and "second" in text and text.index("first") < text.index("second"),
            "coap-client -s: both notifications, in order", text)


def acl(t, tmp, broker):
    pwfile, aclfile = os.path.join(tmp, "bridge.passwd"), os.path.join(tmp, "bridge.acl")
    make_password_file(pwfile, {"dev1": ("dev1-secret", "sha512-pbkdf2")})
    write(aclfile, "user dev1\ntopic readwrite dev/dev1/#\ntopic deny dev/dev1/secret\n")
    g = bridge(tmp, broker.port, MGATE_HANDLER="acl", MGATE_ACL_PASSWORD_FILE=pwfile, MGATE_ACL_FILE=aclfile)
    sub = Sub(tmp, broker, "dev/#")
    mark = broker.log.mark()
    c = Raw(g.coap)
    cred = query(u="dev1", p="dev1-secret", c="acl-ok", q=1)
    r = answer_of(c, c.request(CON, POST, "ps/dev/dev1/temp", b"21", opts=cred))
    t.check(r and r[1] == CHANGED, "dev1 on dev/dev1/temp: 2.04", r)
    r = answer_of(c, c.request(CON, POST, "ps/dev/dev2/temp", b"22", opts=cred))
    t.check(r and r[1] == code(4, 3), "dev1 on dev/dev2/temp: 4.03", r)
    r = answer_of(c, c.request(CON, GET, "ps/dev/dev2/#", opts=[(OBSERVE, b"")] + cred))
    t.check(r and r[1] == code(4, 3), "dev1 observing dev/dev2/#: 4.03", r)
    for cid, q in (("acl-wrong", query(u="dev1", p="wrong", c="acl-wrong")), ("acl-none", query(c="acl-none"))):
        w = Raw(g.coap)
        r = answer_of(w, w.request(CON, POST, "ps/dev/dev1/temp", b"23", opts=q))
        t.check(r and r[1] == code(4, 1), f"{cid}: 4.01", r)
        w.close()
    # each broker message is judged going down: the filter only overlaps the deny, so it is granted,
    # and the messages under the deny are not notified
    r = answer_of(c, c.request(CON, GET, "ps/dev/dev1/#", token=b"\x91", opts=[(OBSERVE, b"")] + cred))
    t.check(r and r[1] == CONTENT, "dev1 observing dev/dev1/#: 2.05", r)
    pub(broker, "dev/dev1/secret", ["hidden"], qos=1)
    pub(broker, "dev/dev1/open", ["shown"], qos=1)
    got = notifications(c, 2, timeout=3.0)
    t.eq([x[5] for x in got], [b"shown"], "a message on dev/dev1/secret (denied) is not notified, the next one is")
    # one request with a wrong password, then the right one again: the same identity keeps its MQTT
    # session and its observation
    r = answer_of(c, c.request(CON, POST, "ps/dev/dev1/temp", b"x", opts=query(u="dev1", p="wrong", c="acl-ok")))
    t.check(r and r[1] == code(4, 1), "the observer sends a wrong password once: 4.01", r)
    r = answer_of(c, c.request(CON, POST, "ps/dev/dev1/again", b"again", opts=cred))
    t.check(r and r[1] == CHANGED, "then the right one: 2.04", r)
    pub(broker, "dev/dev1/open", ["still"], qos=1)
    got = notifications(c, 2, timeout=3.0)
    t.eq([x[5] for x in got], [b"again", b"still"], "its observation goes on (its own message, then the next)")
    t.eq(connects(broker, "acl-ok", mark), 1, "on one MQTT session (one CONNECT)")
    sub.wait(1)
    time.sleep(0.3)
    t.eq(sub.lines()[:1], ["dev/dev1/temp|0|1|21"], "the subscriber got the allowed message")
    t.check("dev/dev1/again|0|1|again" in sub.lines(), "and the one after the wrong password", sub.lines())
    t.check(not any(x.startswith("dev/dev2") for x in sub.lines()), "and none of the refused ones", sub.lines())
    t.check(broker.saw_client("acl-ok", mark), "the broker saw the allowed client")
    for cid in ("acl-wrong", "acl-none"):
        t.check(not broker.saw_client(cid, mark), f"the broker never saw {cid}")
    sub.stop()
    c.close()


def dedupe(t, g, broker, tmp):
    sub = Sub(tmp, broker, "dup/#")
    c = Raw(g.coap)
    data = encode(CON, POST, 0x4242, b"\x41", [(URI_PATH, "ps"), (URI_PATH, "dup"), (URI_PATH, "x")]
                  + query(clientid="dup-1", qos=1), b"once")
    answers = []
    for _ in range(3):
        c.send(data)
        answers.append(answer_of(c, 0x4242, 3.0))
    t.check(all(a and a[0] == ACK and a[1] == CHANGED and a[3] == b"\x41" for a in answers),
            "a CON POST sent three times with one message id: 2.04 each time", answers)
    time.sleep(0.5)
    t.eq(sub.lines(), ["dup/x|0|1|once"], "published once")
    # a later request with another id publishes again
    answer_of(c, c.request(CON, POST, "ps/dup/x", b"twice", opts=query(clientid="dup-1")))
    sub.wait(2)
    t.eq(len(sub.lines()), 2, "another message id: another PUBLISH")
    sub.stop()
    c.close()


def deaf(t, broker, tmp):
    ack = 0.25  # the listener's ACK_TIMEOUT (RFC 7252's 2 s would make this case last 62 to 93 s)
    g = bridge(tmp, broker.port, IDLE_TIMEOUT="300s", ACK_TIMEOUT=f"{int(ack * 1000)}ms")
    c = Raw(g.coap)
    mid = c.request(CON, GET, "ps/deaf/t", token=b"\x51", opts=[(OBSERVE, b"")] + query(clientid="deaf-1", qos=1))
    t.check((answer_of(c, mid) or [0, 0])[1] == CONTENT, "a deaf client registers (QoS 1)")
    rss0 = g.rss_kib()
    # the deaf client's datagrams are timed from the start, while another client is served meanwhile
    mark = broker.log.mark()
    times, mids, start = [], set(), time.monotonic()

    def listen():
        while time.monotonic() - start < 50 * ack + 10 and not broker.log.search(r"Received UNSUBSCRIBE from deaf-1",
                                                                                  mark):
            r = c.recv(0.2)
            if r and r[1] == CONTENT:
                times.append(time.monotonic() - start)
                mids.add(r[2])
    deaf_reader = threading.Thread(target=listen, daemon=True)
    deaf_reader.start()
    pub(broker, "deaf/t", ["x" * 1000 + str(i) for i in range(200)], qos=1)
    other = Raw(g.coap)
    mid = other.request(CON, GET, "ps/live/t", token=b"\x52", opts=[(OBSERVE, b"")] + query(clientid="live", qos=1))
    t.check((answer_of(other, mid) or [0, 0])[1] == CONTENT, "another client registers meanwhile")
    pub(broker, "live/t", ["a", "b"], qos=1)
    got = notifications(other, 2)
    t.eq([r[5] for r in got], [b"a", b"b"], "... and gets its notifications")
    deaf_reader.join()
    t.eq(len(mids), 1, "one CON notification outstanding at a time (all copies have one message id)")
    t.eq(len(times), 5, "sent once and retransmitted 4 times (MAX_RETRANSMIT)")
    gaps = [b - a for a, b in zip(times, times[1:])]
    t.check(len(gaps) == 4 and all(0.8 * ack <= gaps[i] / 2 ** i <= 1.7 * ack for i in range(4)),
            "waits of ACK_TIMEOUT to 1.5 times it, doubling each time", gaps)
    t.check(broker.log.search(r"Received UNSUBSCRIBE from deaf-1", mark), "then the observation is unsubscribed")
    m = metrics(g.admin)
    t.check(m.get("mgate_coap_dropped_total", 0) >= 1, "/metrics: the unacknowledged notification counted as dropped",
            {k: v for k, v in m.items() if "coap" in k})
    t.check(m.get('mgate_coap_datagrams_total{direction="broker_to_client"}', 0) >= 3,
            "/metrics: the notifications counted (3: retransmissions are not)",
            {k: v for k, v in m.items() if "coap" in k})
    t.eq(notifications(c, 1, timeout=1.5, ack=False), [], "and nothing more is sent to the deaf client")
    t.check(g.rss_kib() - rss0 < 4096, f"mgate's memory stayed bounded ({rss0} -> {g.rss_kib()} KiB)")
    pub(broker, "live/t", ["c"], qos=1)
    t.eq([r[5] for r in notifications(other, 1)], [b"c"], "the other client is still served")
    mark = broker.log.mark()
    t.eq(g.stop(), 0, "that mgate exits 0 on SIGTERM with a client observing")
    t.check(broker.log.search(r"Client live disconnected\.", mark), "the observer's MQTT session ends with DISCONNECT")
    c.close()
    other.close()


def bad(t, g, broker, tmp):
    c = Raw(g.coap)
    q = query(clientid="bad-1")

    def ask(method, path_opts, opts=(), payload=b"x"):
        mid = c.mid = c.mid + 1
        c.send(encode(CON, method, mid, b"\x61", list(path_opts) + q + list(opts), payload))
        r = answer_of(c, mid)
        return r and r[1]

    seg = lambda *s: [(URI_PATH, x) for x in s]  # noqa: E731
    t.eq(ask(POST, seg("ps", "a", "+")), code(4, 0), "POST on a wildcard topic: 4.00")
    t.eq(ask(POST, seg("ps", "")), code(4, 0), "POST on an empty topic: 4.00")
    t.eq(ask(POST, seg("ps", b"\xff\xfe")), code(4, 0), "POST on a topic that is not UTF-8: 4.00")
    t.eq(ask(POST, seg("other", "x")), code(4, 4), "a path not under ps/: 4.04")
    t.eq(ask(DELETE, seg("ps", "x")), code(4, 5), "DELETE: 4.05")
    t.eq(ask(POST, seg("ps", "x"), [(2049, b"1")]), code(4, 2), "an unknown critical option: 4.02")
    t.eq(ask(GET, seg("ps", "x")), code(4, 0), "GET without Observe: 4.00")
    t.eq(ask(POST, seg("ps", "x"), query(qos=3)), code(4, 0), "qos=3: 4.00")
    t.eq(ask(POST, seg("ps", "x")), CHANGED, "... and a good request after them: 2.04")
    m = metrics(g.admin)
    t.check(m.get('mgate_coap_answers_total{code="4.xx"}', 0) >= 8, "/metrics: the 4.xx answers counted",
            {k: v for k, v in m.items() if "coap" in k})
    c.close()


def broker_down(t, tmp):
    port = h.free_port()  # nobody listens
    g = bridge(tmp, port)
    c = Raw(g.coap)
    r = answer_of(c, c.request(CON, POST, "ps/down/x", b"x", opts=query(clientid="down", qos=1)))
    t.check(r and r[1] == code(5, 3), "broker down: 5.03", r)
    t.check(h.wait_until(lambda: readyz(g.admin)[0] == 503, 8.0), "/readyz: 503, the broker's port is closed",
            readyz(g.admin)[1])
    c.close()

    closed = h.Broker(tmp, "allow_anonymous false\n")  # no password file either: every CONNECT refused
    g = bridge(tmp, closed.port)
    c = Raw(g.coap)
    for q in (0, 1):
        r = answer_of(c, c.request(CON, POST, "ps/refused/x", b"x", opts=query(clientid="refused", q=q)))
        t.check(r and r[1] == code(5, 3), f"a broker that refuses the CONNECT: 5.03 at QoS {q}", r)
    r = answer_of(c, c.request(CON, GET, "ps/refused/x", opts=[(OBSERVE, b"")] + query(clientid="refused")))
    t.check(r and r[1] == code(5, 3), "... and to an Observe registration", r)
    c.close()
    closed.stop()

    silent = socket.socket()
    silent.bind((h.HOST, 0))
    silent.listen(16)  # the kernel completes the handshake; nobody ever answers
    g = bridge(tmp, silent.getsockname()[1], CONNECT_TIMEOUT="1s")
    c = Raw(g.coap)
    t0 = time.monotonic()
    mid = c.request(CON, POST, "ps/silent/x", b"x", opts=query(clientid="silent", q=1))
    r = answer_of(c, mid)
    took = time.monotonic() - t0
    t.check(r and r[1] == code(5, 3) and 0.8 <= took < 3.0,
            f"a broker that never sends its CONNACK: 5.03 after CONNECT_TIMEOUT (1 s; took {took:.2f} s)", r)
    c.send(encode(CON, POST, mid, b"\x01", [(URI_PATH, "ps"), (URI_PATH, "silent"), (URI_PATH, "x")]
                  + query(clientid="silent", q=1), b"x"))
    r2 = answer_of(c, mid)
    t.check(r2 and r2[1] == code(5, 3), "its retransmission gets the same answer from the cache", r2)
    c.close()
    silent.close()


def over_tls(t, tmp):
    """TARGET_PROTOCOL=mqtts to mosquitto's TLS listener."""
    pki = h.Pki(tmp)
    broker = TlsBroker(tmp, pki)
    sub = Sub(tmp, broker, "tls/#")
    g = gate(tmp, broker.tls_port, binary=h.MGATE_BIN, TARGET_PROTOCOL="mqtts", TARGET_CA_FILE=pki["ca.crt"])
    c = Raw(g.coap)
    mid = c.request(CON, GET, "ps/tls/obs", token=b"\x81", opts=[(OBSERVE, b"")] + query(clientid="over-tls", q=1))
    t.check((answer_of(c, mid) or [0, 0])[1] == CONTENT, "mqtts: Observe 0: 2.05")
    r = answer_of(c, c.request(CON, POST, "ps/tls/pub", b"secret", opts=query(clientid="over-tls", q=1)))
    t.check(r and r[1] == CHANGED, "mqtts: POST at QoS 1: 2.04", r)
    sub.wait(1)
    t.eq(sub.lines(), ["tls/pub|0|1|secret"], "mqtts: the subscriber got it")
    pub(broker, "tls/obs", ["down"], qos=1)
    t.eq([x[5] for x in notifications(c, 1)], [b"down"], "mqtts: the observer got what mosquitto_pub published")
    c.close()
    mark = broker.log.mark()
    g = gate(tmp, broker.tls_port, binary=h.MGATE_BIN, TARGET_PROTOCOL="mqtts", TARGET_CA_FILE=pki["unknown-ca.crt"])
    c = Raw(g.coap)
    r = answer_of(c, c.request(CON, POST, "ps/tls/x", b"x", opts=query(clientid="wrong-ca", q=1)))
    t.check(r and r[1] == code(5, 3), "mqtts with the wrong TARGET_CA_FILE: 5.03", r)
    t.check(not broker.saw_client("wrong-ca", mark), "... and the broker saw no session")
    c.close()
    sub.stop()
    broker.stop()


def late(t, tmp, broker):
    """The example handler: verdicts given later, either way; the peer ending while one is out."""
    g = gate(tmp, broker.port, binary=h.EXAMPLE_BIN, TARGET_PROTOCOL="mqtt", IDLE_TIMEOUT="300s")
    sub = Sub(tmp, broker, "late/#")
    c = Raw(g.coap)
    r = answer_of(c, c.request(CON, POST, "ps/late/who", b"w", opts=query(u="slow", c="late-slow")))
    t.check(r and r[1] == CHANGED, "a CONNECT allowed 200 ms later: 2.04", r)
    d = Raw(g.coap)
    r = answer_of(d, d.request(CON, POST, "ps/late/who", b"d", opts=query(u="slowdeny", c="late-deny")))
    t.check(r and r[1] == code(4, 1), "a CONNECT refused 200 ms later: 4.01", r)
    d.close()
    # requests behind a late verdict (slow/...: 100 ms) wait for it, in order
    m1 = c.request(CON, POST, "ps/late/slow/1", b"first", opts=query(u="slow", c="late-slow", q=1))
    m2 = c.request(CON, POST, "ps/late/2", b"second", opts=query(u="slow", c="late-slow", q=1))
    a1, a2 = answer_of(c, m1), answer_of(c, m2)
    t.check(a1 and a2 and a1[1] == CHANGED and a2[1] == CHANGED, "two POSTs, the first one judged late: 2.04 each")
    sub.wait(3)
    t.eq([x.split("|")[3] for x in sub.lines()], ["w", "first", "second"], "published in order; the refused one not")
    sub.stop()
    # notifications judged late (latedown: 100 ms) keep their order; "secret" is refused
    mid = c.request(CON, GET, "ps/late/latedown/+", token=b"\xa1", opts=[(OBSERVE, b"")]
                    + query(u="slow", c="late-slow", q=1))
    t.check((answer_of(c, mid) or [0, 0])[1] == CONTENT, "an observation whose notifications are judged late")
    pub(broker, "late/latedown/a", [f"n{i}" for i in range(5)], qos=1)
    pub(broker, "late/latedown/secret", ["hidden"], qos=1)
    pub(broker, "late/latedown/b", ["last"], qos=1)
    got = notifications(c, 6, timeout=5.0)
    t.eq([x[5] for x in got], [f"n{i}".encode() for i in range(5)] + [b"last"],
         "notified in order once judged; the one the handler refuses is not")
    # SIGTERM while a notification waits for its verdict
    mid = c.request(CON, GET, "ps/late/stuckdown", token=b"\xa2", opts=[(OBSERVE, b"")]
                    + query(u="slow", c="late-slow", q=1))
    t.check((answer_of(c, mid) or [0, 0])[1] == CONTENT, "an observation whose notifications are judged 2 s late")
    mark = broker.log.mark()
    pub(broker, "late/stuckdown", ["pending"], qos=1)
    t.check(broker.log.wait(r"Sending PUBLISH to late-slow", 2.0, mark), "a message for the observer went out")
    time.sleep(0.3)  # at mgate, with the handler
    t.eq(g.stop(), 0, "SIGTERM while its verdict is out: exit 0")
    c.close()


def idle(t, broker, tmp):
    g = bridge(tmp, broker.port, IDLE_TIMEOUT="2s")
    quiet, busy = Raw(g.coap), Raw(g.coap)
    for c, cid in ((quiet, "idle-quiet"), (busy, "idle-busy")):
        mid = c.request(CON, GET, f"ps/{cid}/t", token=b"\x71", opts=[(OBSERVE, b"")] + query(clientid=cid))
        t.check((answer_of(c, mid) or [0, 0])[1] == CONTENT, f"{cid} registers")
    mark = broker.log.mark()
    start, ended = time.monotonic(), None
    while time.monotonic() - start < 5:
        pub(broker, "idle-busy/t", ["tick"], qos=0)
        r = quiet.recv(0.5)
        if r and r[1] == code(5, 3) and ended is None:
            ended = time.monotonic() - start
        while (b := busy.recv(0.01)):  # the busy one acknowledges what is confirmable (RFC 7641 4.5 checks)
            if b[0] == CON:
                busy.send(encode(ACK, 0, b[2]))
    t.check(ended is not None and ended < 3.5, f"the quiet observer idles out (IDLE_TIMEOUT 2s): its observation "
            f"ends with 5.03 ({ended})")
    t.check(broker.log.search(r"Client idle-quiet disconnected\.", mark), "and its MQTT session ends with DISCONNECT")
    t.check(not broker.log.search(r"Client idle-busy disconnected", mark),
            "an observer getting notifications stays past IDLE_TIMEOUT")
    pub(broker, "idle-busy/t", ["tock"], qos=0)
    got = notifications(busy, 1)
    t.check(len(got) == 1 and got[0][5] == b"tock", "and still gets them", got)
    quiet.close()
    busy.close()


def attack_round(t, tmp, broker):
    """What the second attack round found, each checked."""
    g = bridge(tmp, broker.port, MAX_PACKET_SIZE=1200, IDLE_TIMEOUT="4s")
    c = Raw(g.coap)
    for i, f in enumerate(("ar/big/#", "ar/other/#")):
        mid = c.request(CON, GET, "ps/" + f, token=bytes([0xA0 + i]), opts=[(OBSERVE, b"")] + query(clientid="ar-1"))
        t.eq((answer_of(c, mid) or [0, 0])[1], CONTENT, f"setup: observing {f}")
    pub(broker, "ar/big/x", ["B" * 2000], qos=1)  # over the listener's MAX_PACKET_SIZE
    pub(broker, "ar/other/y", ["small"], qos=1)
    got = notifications(c, 1, timeout=4.0)
    t.eq([x[5] for x in got], [b"small"], "a broker message over MAX_PACKET_SIZE is dropped; the session and the "
         "other observation go on (both ended with 5.03 before)")
    mid = c.request(CON, GET, "ps/$share/g/ar/#", opts=[(OBSERVE, b"")] + query(clientid="ar-1"))
    t.eq((answer_of(c, mid) or [0, 0])[1], code(4, 0), "observing a $share/ filter: 4.00 (its messages would "
         "be taken from the group and dropped)")
    c.close()

    # registrations sent at once past the 16 a client may have leave no subscription behind
    c = Raw(g.coap)
    mark = broker.log.mark()
    for i in range(12):
        mid = c.request(CON, GET, f"ps/ar/many/{i}", token=bytes([i]), opts=[(OBSERVE, b"")] + query(clientid="ar-2"))
        answer_of(c, mid)
    mids = [c.request(CON, GET, f"ps/ar/many/{i}", token=bytes([i]), opts=[(OBSERVE, b"")] + query(clientid="ar-2"))
            for i in range(12, 20)]
    answers = {}
    deadline = time.monotonic() + 8.0
    while len(answers) < len(mids) and time.monotonic() < deadline:  # in any order
        r = c.recv(0.2)
        if r and r[2] in mids:
            answers[r[2]] = r[1]
    codes = [answers.get(m_, 0) for m_ in mids]
    t.check(codes.count(CONTENT) == 4 and codes.count(code(5, 3)) == 4,
            f"12 observations, then 8 registrations at once: 4 taken (16 in all), 4 get 5.03 ({codes})")
    for i in range(20):
        pub(broker, f"ar/many/{i}", ["m"], qos=0)
    time.sleep(0.5)
    sent = broker.log.count(r"Sending PUBLISH to ar-2 .*'ar/many/\d+'", mark)
    t.eq(sent, 16, "the broker sends the client only the 16 observed topics (no subscription left behind)")
    c.close()

    # a client that says nothing gets a NON stream confirmed now and then (RFC 7641 4.5)
    c = Raw(g.coap)
    mid = c.request(CON, GET, "ps/ar/non/#", token=b"\xB1", opts=[(OBSERVE, b"")] + query(clientid="ar-3"))
    t.eq((answer_of(c, mid) or [0, 0])[1], CONTENT, "setup: observing at QoS 0")
    types = []
    start = time.monotonic()
    while time.monotonic() - start < 3.5:
        pub(broker, "ar/non/t", ["n"], qos=0)
        r = c.recv(0.3)
        if r and r[1] == CONTENT:
            types.append(r[0])
    t.check(NON in types and CON in types[types.index(NON):],
            f"QoS 0 notifications are NON, until the client has been silent for half IDLE_TIMEOUT: then CON ({types})")
    c.close()
    g.stop()


def main():
    h.need_binaries()
    t = h.Checks("coap_bridge")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.start_mosquitto(tmp)
        g = bridge(tmp, broker.port, IDLE_TIMEOUT="300s")
        t.case("publish", publish, t, g, broker, tmp)
        t.case("observe", observe, t, g, broker, tmp)
        t.case("deduplication", dedupe, t, g, broker, tmp)
        t.case("bad requests", bad, t, g, broker, tmp)
        t.case("acl", acl, t, tmp, broker)
        t.case("broker down", broker_down, t, tmp)
        t.case("idle timeout", idle, t, broker, tmp)
        t.case("late verdicts", late, t, tmp, broker)
        t.case("mqtts", over_tls, t, tmp)
        t.case("a client that never acknowledges", deaf, t, broker, tmp)
        t.case("the second attack round", attack_round, t, tmp, broker)
        t.check(g.alive(), "mgate still runs")
        mark = broker.log.mark()
        t.eq(g.stop(), 0, "mgate exits 0 on SIGTERM with bridged clients (one observing)")
        t.check(broker.log.search(r"Client obs-kept disconnected\.", mark),
                "an observer's MQTT session ends with DISCONNECT")
        broker.stop()
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
