#!/usr/bin/python3
"""The HTTP bridge: an HTTP listener with TARGET_PROTOCOL=mqtt in front of a real mosquitto, the acl
handler deciding (a password file made with mosquitto_passwd, an ACL file).  A POST under PATH_PREFIX
is a PUBLISH on the broker, which a mosquitto_sub subscriber receives:

* QoS 0, 1 and 2 arrive with the topic (the path below the prefix, percent-decoded) and the payload
  (the body) exact; ?retain=true and the MQTT-Retain header leave a retained message a later
  subscriber gets, a POST without does not; the answer is 200 with a JSON body.
* A request the acl handler refuses is 403 (auth_publish) or 401 (auth_connect) and never reaches
  the broker: the subscriber gets nothing on that topic and mosquitto logs no CONNECT for its id.
* One keep-alive HTTP connection with several POSTs uses one MQTT connection (one CONNECT in
  mosquitto's log); another client id on the same HTTP connection is another MQTT connection.
* Bad requests: wildcards (raw or percent-encoded), an empty topic, qos 3, query and header that
  disagree: 400; GET: 405 with Allow: POST.
* Broker down: 502; a broker that accepts TCP and never answers: 504 within TARGET_TIMEOUT; a
  broker that refuses the CONNECT: 502 with its code, at QoS 0 too.
* TARGET_PROTOCOL=mqtts: to mosquitto's TLS listener (TARGET_CA_FILE), to one that requires a
  client certificate (TARGET_CERT_FILE), and with the wrong CA (502, the broker sees nothing).
* SIGTERM with a bridged keep-alive connection idle, and with a request waiting for a silent broker:
  exit 0, the idle one's broker connection ends with DISCONNECT, no sanitizer report.
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402
from test_acl import make_password_file, write  # noqa: E402
from test_tls_upstream import TlsBroker  # noqa: E402

HTTP = "MGATE_HTTP_WITHOUT_TLS_"
PREFIX = "/mqtt"

PASSWORDS = {"alice": ("alice-pw", "sha512-pbkdf2"), "bob": ("bob-pw", "sha512")}
ACL = """\
user alice
topic readwrite sensors/#

user bob
topic write bob/#
"""


def gate(tmp, broker_port, pwfile, aclfile, **settings):
    """An mgate with one HTTP listener bridging to broker_port, the acl handler deciding."""
    port = h.free_port()
    env = {HTTP + "HOST": h.HOST, HTTP + "PORT": port, HTTP + "PATH_PREFIX": PREFIX,
           HTTP + "TARGET_HOST": h.HOST, HTTP + "TARGET_PORT": broker_port, HTTP + "TARGET_PROTOCOL": "mqtt",
           "MGATE_MQTT_WITHOUT_TLS_PORT": None, "MGATE_HANDLER": "acl", "MGATE_ACL_PASSWORD_FILE": pwfile,
           "MGATE_ACL_FILE": aclfile}
    env.update({(k if k.startswith("MGATE_") else HTTP + k): v for k, v in settings.items()})
    return h.Mgate(tmp, broker_port, binary=h.MGATE_BIN, port=port, **env)


def basic(user, password):
    import base64
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ALICE = basic("alice", "alice-pw")


def post(port, path, body=b"", headers=None, conn=None, method="POST"):
    """(status, parsed JSON body or raw bytes, headers) of one request, on conn when given."""
    c = conn or http.client.HTTPConnection(h.HOST, port, timeout=15)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    if not conn:
        c.close()
    try:
        data = json.loads(data)
    except ValueError:
        pass
    return r.status, data, dict(r.getheaders())


class Sub:
    """mosquitto_sub on the broker, printing "topic|retain|qos|payload" lines into a file."""

    def __init__(self, tmp, broker, topic="#", cid=None, count=None):
        self.cid = cid or f"sub-{time.monotonic_ns() % 10**9}"
        self.path = os.path.join(tmp, self.cid + ".out")
        mark = broker.log.mark()
        args = ["mosquitto_sub", "-h", h.HOST, "-p", str(broker.port), "-i", self.cid, "-q", "2", "-t", topic,
                "-F", "%t|%r|%q|%p"] + (["-C", str(count)] if count else [])
        with open(self.path, "wb") as out:
            self.proc = h.spawn(args, stdout=out, stderr=subprocess.STDOUT)
        broker.log.wait(r"\b" + self.cid + r" 2 " + topic.replace("#", r"\#").replace("+", r"\+"), 5.0, mark)

    def lines(self):
        with open(self.path, "rb") as f:
            return f.read().decode("utf-8", "replace").splitlines()

    def wait(self, n, timeout=5.0):
        return h.wait_until(lambda: len(self.lines()) >= n, timeout)

    def stop(self):
        h.stop(self.proc)


def connects(broker, cid, since=0):
    """How many CONNECTs with client id cid mosquitto logged."""
    return broker.log.count(r"New client connected from \S+ as " + cid + r" \(", since)


def publish(t, g, broker, sub):
    port = g.port
    st, body, _ = post(port, PREFIX + "/sensors/t1?clientid=dev-q0", b"21.5", {"Authorization": ALICE})
    t.eq(st, 200, "QoS 0 POST: 200")
    t.check(isinstance(body, dict) and body.get("status") == 200 and "error" not in body,
            "its body is JSON with status 200 and no error", repr(body))
    st, _, _ = post(port, PREFIX + "/sensors/t2?qos=1&clientid=dev-q1", b"\x00\x01binary\xff", {"Authorization": ALICE})
    t.eq(st, 200, "QoS 1 POST: 200 once PUBACKed")
    st, _, _ = post(port, PREFIX + "/sensors/t3?clientid=dev-q2", b"two", {"Authorization": ALICE, "MQTT-QoS": "2"})
    t.eq(st, 200, "QoS 2 (MQTT-QoS header) POST: 200 once PUBCOMPed")
    st, _, _ = post(port, PREFIX + "/sensors/%C3%A9t%C3%A9%20x?qos=1", b"percent", {"Authorization": ALICE})
    t.eq(st, 200, "a percent-encoded path (space, UTF-8): 200")
    sub.wait(4)
    lines = sub.lines()
    t.check("sensors/t1|0|0|21.5" in lines, "the subscriber got the QoS 0 message: topic and payload exact", lines)
    t.check(any(line.startswith("sensors/t2|0|1|") for line in lines), "the subscriber got the QoS 1 message at QoS 1",
            lines)
    t.check("sensors/t3|0|2|two" in lines, "the subscriber got the QoS 2 message at QoS 2", lines)
    t.check("sensors/été x|0|1|percent" in lines, "the topic is the path below the prefix, percent-decoded", lines)
    for cid in ("dev-q0", "dev-q1", "dev-q2"):
        t.eq(connects(broker, cid), 1, f"the broker saw the CONNECT of ?clientid={cid}")


def retained(t, g, broker, tmp):
    port = g.port
    st, _, _ = post(port, PREFIX + "/sensors/kept?retain=true&qos=1", b"kept \x00 value", {"Authorization": ALICE})
    t.eq(st, 200, "POST ?retain=true: 200")
    st, _, _ = post(port, PREFIX + "/sensors/hdr", b"by header", {"Authorization": ALICE, "MQTT-Retain": "true"})
    t.eq(st, 200, "POST with MQTT-Retain: true: 200")
    st, _, _ = post(port, PREFIX + "/sensors/notkept?qos=1", b"gone", {"Authorization": ALICE})
    t.eq(st, 200, "POST without retain: 200")
    got = subprocess.run(["mosquitto_sub", "-h", h.HOST, "-p", str(broker.port), "-t", "sensors/kept", "-C", "1",
                          "-W", "5", "-N", "-F", "%r %p"], capture_output=True, timeout=10)
    t.eq(got.stdout, b"1 kept \x00 value", "a later subscriber gets the retained message, payload byte for byte")
    later = Sub(tmp, broker, "sensors/+")
    time.sleep(0.5)
    lines = later.lines()
    later.stop()
    t.check("sensors/hdr|1|0|by header" in lines, "MQTT-Retain: true left a retained message", lines)
    t.check(not any(line.startswith("sensors/notkept") for line in lines), "a POST without retain left none", lines)


def refused(t, g, broker, sub):
    port = g.port
    mark = broker.log.mark()
    before = len(sub.lines())
    st, body, _ = post(port, PREFIX + "/secret/x?clientid=refused-pub", b"nope", {"Authorization": ALICE})
    t.eq(st, 403, "a topic the ACL does not give alice: 403")
    t.check(isinstance(body, dict) and "auth_publish" in body.get("message", ""), "its body names auth_publish", body)
    st, _, heads = post(port, PREFIX + "/sensors/x?clientid=refused-con", b"nope",
                        {"Authorization": basic("alice", "wrong")})
    t.eq(st, 401, "a wrong password: 401")
    t.check("WWW-Authenticate" in heads, "with WWW-Authenticate", heads)
    st, _, _ = post(port, PREFIX + "/sensors/x?clientid=refused-anon", b"nope")
    t.eq(st, 401, "no credentials (MGATE_ACL_ALLOW_ANONYMOUS off): 401")
    # a message that does pass, after them: when it arrived, the refused ones would have too
    st, _, _ = post(port, PREFIX + "/sensors/after?qos=1&clientid=after-refusals", b"ok", {"Authorization": ALICE})
    t.eq(st, 200, "an allowed POST after them: 200")
    sub.wait(before + 1)
    new = sub.lines()[before:]
    t.eq(new, ["sensors/after|0|1|ok"], "the subscriber got only the allowed message")
    for cid in ("refused-pub", "refused-con", "refused-anon"):
        t.eq(connects(broker, cid, mark), 0, f"mosquitto logged no CONNECT for {cid}")
    t.eq(connects(broker, "after-refusals", mark), 1, "... and one for the allowed one (the log is read right)")


def keepalive(t, g, broker, sub):
    mark = broker.log.mark()
    before = len(sub.lines())
    c = http.client.HTTPConnection(h.HOST, g.port, timeout=15)
    statuses = [post(g.port, PREFIX + f"/sensors/ka/{i}?qos=1&clientid=ka-one", str(i).encode(),
                     {"Authorization": ALICE}, conn=c)[0] for i in range(5)]
    t.eq(statuses, [200] * 5, "five POSTs on one keep-alive connection: 200 each")
    sub.wait(before + 5)
    t.eq(sub.lines()[before:], [f"sensors/ka/{i}|0|1|{i}" for i in range(5)], "all five arrived, in order")
    t.eq(connects(broker, "ka-one", mark), 1, "one MQTT connection (one CONNECT) for the five")
    st = post(g.port, PREFIX + "/sensors/ka/other?clientid=ka-two", b"x", {"Authorization": ALICE}, conn=c)[0]
    t.eq(st, 200, "a POST with another client id on the same connection: 200")
    t.eq(connects(broker, "ka-two", mark), 1, "another identity: another MQTT connection")
    t.check(broker.log.wait(r"Client ka-one disconnected\.", 5.0, mark),
            "the first one ended with a DISCONNECT (mosquitto: \"disconnected.\")")
    c.close()
    t.check(broker.log.wait(r"Client ka-two disconnected\.", 5.0, mark),
            "closing the HTTP connection ends its MQTT connection cleanly")


def bad_requests(t, g, broker):
    port = g.port
    mark = broker.log.mark()
    for path, what in ((PREFIX + "/sensors/+", "a + in the topic"), (PREFIX + "/sensors/%23", "an encoded #"),
                       (PREFIX + "/", "an empty topic"), (PREFIX, "the prefix itself (no topic)"),
                       (PREFIX + "/sensors/x?qos=3", "qos=3"), (PREFIX + "/sensors/x?retain=maybe", "retain=maybe"),
                       (PREFIX + "/sensors/x?qos=1&clientid=bad-qos", "?qos=1 with MQTT-QoS: 0")):
        st, body, _ = post(port, path + ("&" if "?" in path else "?") + "clientid=bad-req", b"x",
                           {"Authorization": ALICE, **({"MQTT-QoS": "0"} if "bad-qos" in path else {})})
        t.eq(st, 400, f"{what}: 400")
    st, _, heads = post(port, PREFIX + "/sensors/x?clientid=bad-req", method="GET", headers={"Authorization": ALICE})
    t.eq(st, 405, "GET: 405")
    t.eq(heads.get("Allow"), "POST", "with Allow: POST")
    st, _, _ = post(port, "/elsewhere/x", b"x", {"Authorization": ALICE})
    t.eq(st, 404, "outside PATH_PREFIX: 404")
    t.eq(connects(broker, "bad-req", mark), 0, "none of them reached the broker")


def broker_down_and_slow(t, tmp, pwfile, aclfile):
    dead = h.free_port()
    g = gate(tmp, dead, pwfile, aclfile)
    t0 = time.monotonic()
    st, body, _ = post(g.port, PREFIX + "/sensors/x", b"x", {"Authorization": ALICE})
    t.eq(st, 502, "broker down: 502")
    t.check(isinstance(body, dict) and "cannot be reached" in body.get("message", ""), "saying why", body)
    t.check(time.monotonic() - t0 < 3.0, "at once")
    g.stop()

    silent = socket.socket()
    silent.bind((h.HOST, 0))
    silent.listen(16)  # the kernel completes the handshake; nobody ever answers
    g = gate(tmp, silent.getsockname()[1], pwfile, aclfile, TARGET_TIMEOUT="1s")
    t0 = time.monotonic()
    st, body, _ = post(g.port, PREFIX + "/sensors/x?qos=1", b"x", {"Authorization": ALICE})
    took = time.monotonic() - t0
    t.eq(st, 504, "a broker that never answers: 504")
    t.check(0.8 <= took < 3.0, f"after TARGET_TIMEOUT (1 s; took {took:.2f} s)")
    t.check(g.alive(), "mgate still runs")
    g.stop()
    silent.close()


def broker_refuses(t, tmp, pwfile, aclfile):
    closed = h.Broker(tmp, "allow_anonymous false\n")  # no password file either: every CONNECT refused
    g = gate(tmp, closed.port, pwfile, aclfile)
    for qos in (0, 1):
        st, body, _ = post(g.port, PREFIX + f"/sensors/x?qos={qos}", b"x", {"Authorization": ALICE})
        t.eq(st, 502, f"a broker that refuses the CONNECT: 502 at QoS {qos}")
        t.check(isinstance(body, dict) and "refused the CONNECT (return code 5)" in body.get("message", ""),
                "saying so, with the CONNACK's code", body)
    g.stop()
    closed.stop()


def over_tls(t, tmp, pwfile, aclfile):
    """TARGET_PROTOCOL=mqtts: the broker's TLS listener (test_tls_upstream's mosquitto)."""
    pki = h.Pki(tmp)
    broker = TlsBroker(tmp, pki)
    sub = Sub(tmp, broker, "sensors/#")
    g = gate(tmp, broker.tls_port, pwfile, aclfile, TARGET_PROTOCOL="mqtts", TARGET_CA_FILE=pki["ca.crt"])
    st, _, _ = post(g.port, PREFIX + "/sensors/tls?qos=1&clientid=over-tls", b"secret", {"Authorization": ALICE})
    t.eq(st, 200, "mqtts: POST at QoS 1: 200")
    sub.wait(1)
    t.eq(sub.lines(), ["sensors/tls|0|1|secret"], "mqtts: the subscriber got it")
    g = gate(tmp, broker.mtls_port, pwfile, aclfile, TARGET_PROTOCOL="mqtts", TARGET_CA_FILE=pki["ca.crt"],
             TARGET_CERT_FILE=pki["client.crt"], TARGET_KEY_FILE=pki["client.key"])
    st, _, _ = post(g.port, PREFIX + "/sensors/mtls?qos=1", b"with cert", {"Authorization": ALICE})
    t.eq(st, 200, "mqtts to a broker that requires a client certificate, TARGET_CERT_FILE: 200")
    mark = broker.log.mark()
    g = gate(tmp, broker.tls_port, pwfile, aclfile, TARGET_PROTOCOL="mqtts", TARGET_CA_FILE=pki["unknown-ca.crt"])
    st, body, _ = post(g.port, PREFIX + "/sensors/x?clientid=wrong-ca", b"x", {"Authorization": ALICE})
    t.eq(st, 502, "mqtts with the wrong TARGET_CA_FILE: 502")
    t.check(not broker.saw_client("wrong-ca", mark), "... and the broker saw no session")
    sub.wait(2)
    t.eq(sub.lines()[1:], ["sensors/mtls|0|1|with cert"], "the subscriber got the mTLS one and nothing else")
    sub.stop()
    broker.stop()


def drain(t, tmp, broker, pwfile, aclfile):
    """SIGTERM with an idle keep-alive connection that holds a broker connection, and with a request
    waiting for a broker that never answers: both end, mgate exits 0 (finish() checks the sanitizer)."""
    g = gate(tmp, broker.port, pwfile, aclfile)
    mark = broker.log.mark()
    c = http.client.HTTPConnection(h.HOST, g.port, timeout=15)
    st = post(g.port, PREFIX + "/sensors/drain?qos=1&clientid=drain-idle", b"x", {"Authorization": ALICE}, conn=c)[0]
    t.eq(st, 200, "a POST on a connection left open: 200")
    silent = socket.socket()
    silent.bind((h.HOST, 0))
    silent.listen(16)
    g2 = gate(tmp, silent.getsockname()[1], pwfile, aclfile)
    c2 = http.client.HTTPConnection(h.HOST, g2.port, timeout=15)
    c2.request("POST", PREFIX + "/sensors/drain?qos=1", body=b"x", headers={"Authorization": ALICE})
    time.sleep(0.3)
    t.eq(g.stop(), 0, "SIGTERM with an idle bridged connection: exit 0")
    t.check(broker.log.wait(r"Client drain-idle disconnected\.", 5.0, mark), "its broker connection ended with DISCONNECT")
    t.eq(g2.stop(), 0, "SIGTERM with a request waiting for a silent broker: exit 0")
    c.close()
    c2.close()
    silent.close()


def client_id_policy(t, tmp, broker, pwfile, aclfile):
    """CLIENT_ID_POLICY on the bridge: ?clientid= must be the user's (else broker ACLs on %c could
    be borrowed by naming another client's id)."""
    g = gate(tmp, broker.port, pwfile, aclfile, CLIENT_ID_POLICY="prefix")
    mark = broker.log.mark()
    st, _, _ = post(g.port, PREFIX + "/sensors/p?clientid=alice-phone", b"mine", {"Authorization": ALICE})
    t.eq(st, 200, "CLIENT_ID_POLICY=prefix: alice as alice-phone: 200")
    st, _, _ = post(g.port, PREFIX + "/sensors/p?clientid=bob-phone", b"not mine", {"Authorization": ALICE})
    t.eq(st, 403, "alice as bob-phone: 403")
    time.sleep(0.2)
    t.eq(connects(broker, "bob-phone", mark), 0, "... and the broker never saw bob-phone")
    g.stop()


def main():
    h.need_binaries()
    t = h.Checks("http_bridge")
    with tempfile.TemporaryDirectory() as tmp:
        pwfile, aclfile = os.path.join(tmp, "passwd"), os.path.join(tmp, "acl")
        make_password_file(pwfile, PASSWORDS)
        write(aclfile, ACL)
        broker = h.Broker(tmp)
        sub = Sub(tmp, broker)
        g = gate(tmp, broker.port, pwfile, aclfile)
        t.case("QoS 0, 1 and 2", publish, t, g, broker, sub)
        t.case("retain", retained, t, g, broker, tmp)
        t.case("refused requests never reach the broker", refused, t, g, broker, sub)
        t.case("one MQTT connection per keep-alive connection and identity", keepalive, t, g, broker, sub)
        t.case("bad requests", bad_requests, t, g, broker)
        t.case("broker down, broker silent", broker_down_and_slow, t, tmp, pwfile, aclfile)
        t.case("broker refuses the CONNECT", broker_refuses, t, tmp, pwfile, aclfile)
        t.case("mqtts", over_tls, t, tmp, pwfile, aclfile)
        t.case("CLIENT_ID_POLICY", client_id_policy, t, tmp, broker, pwfile, aclfile)
        t.case("drain", drain, t, tmp, broker, pwfile, aclfile)
        t.check(g.alive(), "mgate still runs")
        sub.stop()
        rc = h.finish(t)
        broker.stop()
        return rc


if __name__ == "__main__":
    h.run_main(main)
