#!/usr/bin/python3
"""The `rewrite` handler (MGATE_HANDLER=rewrite, MGATE_REWRITE_FILE) in front of mosquitto.

What the broker receives is watched by a client of mosquitto's own (subscribed to everything
on the broker directly, `watch`), so each check sees the topic the broker was really given.

* A table of rules against mosquitto_pub/mosquitto_sub in 3.1.1 and 5.0: PUBLISH rewritten,
  SUBSCRIBE rewritten (the delivery keeps the broker's topic: not reversed).
* UNSUBSCRIBE after a rewritten SUBSCRIBE: the broker's subscription goes (a message published
  after it is not received, a marker published after that is).
* First match wins; %u and %c (an identity with '/', '+' or '#' refuses the PUBLISH); %cn on an
  mTLS listener, refused without a certificate.
* v5 topic aliases (the alias resolved, then rewritten); retained messages (a later subscriber
  gets the rewritten retained message); wills (published on the rewritten topic); shared
  subscriptions ($share/GROUP/ kept, the filter after it rewritten).
* A result that is no valid topic: PUBLISH refused (v5 0x87, 3.1.1 closed), SUBSCRIBE filter
  refused (0x80 / 0x87), the log naming the rule's file and line.
* rewrite,acl: acl judges the rewritten topic; acl,rewrite: acl's verdict ends the chain, so
  nothing it allows is rewritten.
* SIGHUP: a broken file keeps the old rules (logged with file and line), a good one applies.
* Start-up errors name MGATE_REWRITE_FILE (and the file and line).
"""
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True
import harness as h  # noqa: E402

RULES = """\
# direction  filter        regex                       template
publish      pub/#         ^pub/(.+)$                  rewritten/$1
publish      order/#       ^order/a/(.+)$              first/$1
publish      order/#       ^order/(.+)$                second/$1
subscribe    sub/#         ^sub/(.+)$                  rewritten/$1
publish      me/#          ^me/(.+)$                   users/%u/$1
publish      cid/#         ^cid/(.+)$                  clients/%c/$1
publish      cn/#          ^cn/(.+)$                   certs/%cn/$1
# a result that is no topic: an empty one, a '#' where a level goes
publish      empty/#       ^empty/(.*)x$               $1
subscribe    bad/#         ^bad/(.*)$                  bad2/$1/x
publish      secret/#      ^secret/(.+)$               forbidden/$1
"""
BAD_LINE = RULES.splitlines().index("publish      empty/#       ^empty/(.*)x$               $1") + 1
BADSUB_LINE = RULES.splitlines().index("subscribe    bad/#         ^bad/(.*)$                  bad2/$1/x") + 1

ACL = """\
topic readwrite rewritten/#
topic readwrite secret/#
topic readwrite mark/#
"""

_n = [0]


def uniq(prefix):
    _n[0] += 1
    return f"{prefix}-{os.getpid()}-{_n[0]}"


def write(path, text):
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)


class Watch:
    """A client of the broker itself, subscribed to everything: what did the broker get?"""

    def __init__(self, broker):
        self.broker = broker
        self.c = h.raw_client(broker.port, 4, uniq("watch"))
        self.c.subscribe(1, [("#", 1)])

    def _upto_marker(self):
        """Publish a marker on the broker: what the broker delivered before it, or None."""
        marker = uniq("mark/w")
        p = h.raw_client(self.broker.port, 4, uniq("marker"))
        p.publish_wait(marker, b"m", 1, 1)
        p.close()
        got, ok = self.c.collect_until(lambda m: m.topic == marker, 8.0)
        return [m for m in got if m.topic != marker] if ok else None

    def after(self, action):
        """What the broker delivered while action() ran (and nothing from before it)."""
        self._upto_marker()
        action()
        return self._upto_marker()

    def topics(self, action):
        got = self.after(action)
        return None if got is None else [m.topic for m in got]


def broker_publish(broker, topic, payload=b"x", retain=False):
    p = h.raw_client(broker.port, 4, uniq("bpub"))
    p.publish_wait(topic, payload, 1, 1, retain=retain)
    p.close()


def unsubscribe(c, pid, filters):
    body = struct.pack(">H", pid) + (h.props_encode(()) if c.version == 5 else b"")
    for f in filters:
        body += h.utf8(f)
    c.send(h.packet(h.UNSUBSCRIBE, 2, body))
    p = c.expect(h.UNSUBACK)
    return h.ack_id(p) == pid


def mosq(version):
    return ["-V", "311" if version == 4 else "5"]


# ---------------------------------------------------------------------------


def table_mosquitto_clients(t, g, broker, w):
    for version in (4, 5):
        topic = uniq("pub/t")
        got = w.topics(lambda: subprocess.run(["mosquitto_pub", "-h", h.HOST, "-p", str(g.port), *mosq(version),
                                               "-i", uniq("mp"), "-t", topic, "-m", "hello", "-q", "1"],
                                              check=True, timeout=10, capture_output=True))
        t.eq(got, ["rewritten/" + topic[len("pub/"):]], f"v{version} mosquitto_pub on {topic}: the broker gets it "
                                                       "rewritten (publish rule)")
        leaf = uniq("s")
        sub_id = uniq("ms")
        mark = broker.log.mark()
        sub = h.spawn(["mosquitto_sub", "-h", h.HOST, "-p", str(g.port), *mosq(version), "-i", sub_id, "-t",
                       "sub/" + leaf, "-v", "-q", "1", "-C", "1", "-W", "8"], stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
        t.check(broker.log.wait(r"\brewritten/" + leaf + r" \(QoS 1\)", 5.0, mark),
                f"v{version} mosquitto_sub -t sub/{leaf}: the broker's subscription is rewritten/{leaf}")
        broker_publish(broker, "rewritten/" + leaf, b"for-sub")
        out, _ = sub.communicate(timeout=10)
        t.eq(out.strip(), f"rewritten/{leaf} for-sub",
             f"v{version} mosquitto_sub gets the message on the broker's topic (deliveries are not reversed)")


def unsubscribe_after_rewrite(t, g, broker, version):
    c = h.raw_client(g.port, version, uniq("unsub"))
    leaf = uniq("u")
    t.eq(c.subscribe(1, [("sub/" + leaf, 1), ("mark/" + leaf, 1)]), [1, 1], f"v{version}: SUBSCRIBE granted")
    broker_publish(broker, "rewritten/" + leaf, b"before")
    m = c.recv_publish(5.0)
    t.eq((m.topic, m.payload), ("rewritten/" + leaf, b"before"), f"v{version}: subscribed through the rewrite")
    mark = broker.log.mark()
    t.check(unsubscribe(c, 2, ["sub/" + leaf]), f"v{version}: UNSUBACK for the UNSUBSCRIBE of sub/{leaf}")
    t.check(broker.log.search(r"\brewritten/" + leaf + r"\b", mark),
            f"v{version}: the broker was asked to unsubscribe rewritten/{leaf}", broker.log.text(mark)[-400:])
    broker_publish(broker, "rewritten/" + leaf, b"after")
    broker_publish(broker, "mark/" + leaf, b"marker")
    got, ok = c.collect_until(lambda x: x.topic == "mark/" + leaf, 5.0)
    t.check(ok and [x.payload for x in got] == [b"marker"],
            f"v{version}: after UNSUBSCRIBE the message on rewritten/{leaf} is not received", repr(got))
    c.close()


def first_match_and_identities(t, g, w, version):
    c = h.raw_client(g.port, version, "dev-7", username="alice")

    def pubs(*topics):
        def run():
            for i, topic in enumerate(topics):
                c.publish_wait(topic, b"x", 1, i + 1)
        return run
    long = "L" * 300  # past the handler's stack copy of the topic
    got = w.topics(pubs("order/a/1", "order/b/1", "me/t", "cid/t", "other/t", "pub/" + long))
    t.eq(got, ["first/1", "second/b/1", "users/alice/t", "clients/dev-7/t", "other/t", "rewritten/" + long],
         f"v{version}: first match wins (order/a/1 by line 3, order/b/1 by line 4), %u, %c, no rule: unchanged, "
         "a long topic")
    c.close()
    for user, cid, topic in (("a/b", "ok-id", "me/t"), ("+", "ok-id", "me/t"), ("u", "c/d", "cid/t"),
                             ("u", "x#", "cid/t")):
        c = h.raw_client(g.port, version, cid, username=user)
        if version == 5:
            got = w.topics(lambda: t.eq(c.publish_wait(topic, b"x", 1, 1), 0x87,
                                        f"v5: {topic} with username {user!r}, client id {cid!r}: PUBACK 0x87"))
            t.eq(got, [], "v5: and the broker got nothing")
        else:
            c.publish(topic, b"x", 1, 1)
            t.check(c.expect_closed(5.0),
                    f"3.1.1: {topic} with username {user!r}, client id {cid!r}: the client is closed")
        c.close()


def alias_retain_will_share(t, g, broker, w):
    # v5 topic alias: the second PUBLISH names only the alias
    c = h.raw_client(g.port, 5, uniq("alias"))
    leaf = uniq("al")

    def aliased():
        c.publish_wait("pub/" + leaf, b"1", 1, 1, props=[(h.P_TOPIC_ALIAS, 1)])
        c.publish_wait("", b"2", 1, 2, props=[(h.P_TOPIC_ALIAS, 1)])
    got = w.after(aliased)
    t.eq([(m.topic, m.payload) for m in got or []], [("rewritten/" + leaf, b"1"), ("rewritten/" + leaf, b"2")],
         "v5 topic alias: the message sent with the alias alone is rewritten too")
    c.close()
    # retained: a later subscriber gets it on the rewritten topic
    for version in (4, 5):
        leaf = uniq("ret")
        c = h.raw_client(g.port, version, uniq("retpub"))
        c.publish_wait("pub/" + leaf, b"kept", 1, 1, retain=True)
        c.close()
        s = h.raw_client(g.port, version, uniq("retsub"))
        s.subscribe(1, [("rewritten/" + leaf, 1)])
        m = s.recv_publish(5.0)
        t.check(m.topic == "rewritten/" + leaf and m.payload == b"kept" and m.retain,
                f"v{version}: a retained PUBLISH on pub/{leaf} is kept as rewritten/{leaf}", repr(m))
        s.close()
    # will: published by the broker on the rewritten topic
    for version in (4, 5):
        leaf = uniq("will")

        def vanish():
            c = h.RawClient(g.port)
            t.eq(c.connect(version, uniq("willer"), will={"topic": "pub/" + leaf, "payload": b"gone", "qos": 1}),
                 0, f"v{version}: CONNECT with a will on pub/{leaf} accepted")
            c.abort()
            broker.log.wait(r"Client willer\S* closed its connection|Socket error on client willer", 3.0)
            time.sleep(0.3)
        got = w.topics(vanish)
        t.check(got is not None and "rewritten/" + leaf in got and "pub/" + leaf not in got,
                f"v{version}: the will is published on rewritten/{leaf}", repr(got))
    # will that the rules cannot rewrite: the CONNECT is refused
    c = h.RawClient(g.port)
    t.eq(c.connect(5, uniq("badwill"), will={"topic": "empty/x", "payload": b"w"}), 0x87,
         "v5: a will on a topic whose rewrite is invalid refuses the CONNECT (0x87)")
    c.close()
    # shared subscription: the prefix is kept, the filter after it rewritten
    for version in (4, 5):
        leaf = uniq("sh")
        s = h.raw_client(g.port, version, uniq("share"))
        mark = broker.log.mark()
        t.eq(s.subscribe(1, [(f"$share/grp/sub/{leaf}", 1)]), [1], f"v{version}: SUBSCRIBE $share/grp/sub/{leaf}")
        t.check(broker.log.search(r"\$share/grp/rewritten/" + leaf + r"\b", mark),
                f"v{version}: the broker got $share/grp/rewritten/{leaf}", broker.log.text(mark)[-300:])
        broker_publish(broker, "rewritten/" + leaf, b"shared")
        m = s.recv_publish(5.0)
        t.eq((m.topic, m.payload), ("rewritten/" + leaf, b"shared"), f"v{version}: the shared subscriber gets it")
        mark = broker.log.mark()
        t.check(unsubscribe(s, 2, [f"$share/grp/sub/{leaf}"]), f"v{version}: and unsubscribes it")
        t.check(broker.log.wait(r"\$share/grp/rewritten/" + leaf + r"\b", 3.0, mark),
                f"v{version}: the broker was asked to unsubscribe $share/grp/rewritten/{leaf}",
                broker.log.text(mark)[-300:])
        s.close()


def invalid_results(t, g, w, rules_path):
    mark = g.log.mark()
    c = h.raw_client(g.port, 5, uniq("inv5"))
    got = w.topics(lambda: t.eq(c.publish_wait("empty/x", b"x", 1, 1), 0x87,
                                "v5: a PUBLISH whose rewrite is an empty topic: PUBACK 0x87"))
    t.eq(got, [], "v5: the broker got nothing")
    t.eq(c.subscribe(2, [("bad/#", 0), ("sub/fine", 0)]), [0x87, 0],
         "v5: SUBSCRIBE bad/# (rewritten to bad2/#/x, no filter) refused with 0x87, the other filter granted")
    t.check(unsubscribe(c, 3, ["bad/#"]), "v5: its UNSUBSCRIBE is answered (sent as it came)")
    t.check(c.ping(), "v5: the session goes on")
    c.close()
    c = h.raw_client(g.port, 4, uniq("inv4"))
    t.eq(c.subscribe(1, [("bad/x/#", 0)]), [0x80], "3.1.1: the refused filter gets 0x80")
    c.publish("empty/x", b"x", 1, 2)
    t.check(c.expect_closed(5.0), "3.1.1: a PUBLISH whose rewrite is no topic closes the client")
    c.close()
    lines = [j.get("msg", "") for j in g.json_since(mark)]
    t.check(any(f"rule {rules_path}:{BAD_LINE} gives \"\", not a valid topic name" in m for m in lines),
            "the log names the rule's file and line and the invalid result", repr(lines[-6:]))
    t.check(any(f"rule {rules_path}:{BADSUB_LINE} gives \"bad2/#/x\", not a valid topic filter" in m for m in lines),
            "the log names the subscribe rule's file and line", repr(lines[-6:]))


def metrics(t, admin):
    with urllib.request.urlopen(f"http://{h.HOST}:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    got = {m.group(1): int(m.group(2)) for m in re.finditer(r'^mgate_rewrite_topics_total\{result="(\w+)"\} (\d+)$',
                                                            text, re.M)}
    t.check(got.get("rewritten", 0) >= 20 and got.get("failed", 0) >= 10,
            f"/metrics counts the topics rewritten and those that could not be ({got})")


def tls_cn(t, tmp, broker, rules_path):
    pki = h.Pki(tmp)
    g = h.TlsGate(tmp, broker.port, pki, glob={"MGATE_HANDLER": "rewrite", "MGATE_REWRITE_FILE": rules_path})
    w = Watch(broker)
    cn = pki.cn("client.crt")
    t.check(cn != "", "client.crt has a CN", cn)
    code, err, c = h.tls_mqtt(g.tls_port, pki.tls_context("client"), uniq("cn"), version=5)
    t.check(code == 0, "mTLS client connects", f"{code} {err}")
    if c:
        got = w.topics(lambda: c.publish_wait("cn/t", b"x", 1, 1))
        t.eq(got, [f"certs/{cn}/t"], f"%cn: the certificate's CN ({cn}) is substituted")
        c.close()
    c = h.raw_client(g.port, 5, uniq("nocert"))
    got = w.topics(lambda: t.eq(c.publish_wait("cn/t", b"x", 1, 1), 0x87,
                                "%cn without a client certificate (plain listener): PUBACK 0x87"))
    t.eq(got, [], "and the broker got nothing (fail closed)")
    c.close()
    g.stop()


def ordering(t, tmp, broker, w, rules_path):
    acl = os.path.join(tmp, "acl")
    write(acl, ACL)
    for chain in ("rewrite,acl", "acl,rewrite"):
        g = h.Mgate(tmp, broker.port, MGATE_HANDLER=chain, MGATE_REWRITE_FILE=rules_path, MGATE_ACL_FILE=acl,
                    MGATE_ACL_ALLOW_ANONYMOUS="true")
        c = h.raw_client(g.port, 5, uniq("order"))
        codes = []
        got = w.topics(lambda: codes.extend([c.publish_wait("pub/o", b"x", 1, 1),
                                             c.publish_wait("secret/o", b"x", 1, 2)]))
        if chain == "rewrite,acl":
            t.eq(codes, [0, 0x87], "rewrite,acl: pub/o (sent as rewritten/o, granted) allowed; secret/o (sent as "
                                   "forbidden/o, not granted) refused")
            t.eq(got, ["rewritten/o"], "rewrite,acl: the broker only gets the authorised, rewritten topic")
        else:
            t.eq(codes, [0x87, 0], "acl,rewrite: acl judges the topic as sent by the client (pub/o refused, "
                                   "secret/o allowed)")
            t.eq(got, ["secret/o"], "acl,rewrite: acl's allow ends the chain: secret/o reaches the broker "
                                    "unrewritten")
        c.close()
        g.stop()


def sighup(t, tmp, broker, w):
    path = os.path.join(tmp, "hup.rules")
    write(path, "publish hup/# ^hup/(.+)$ old/$1\n")
    g = h.Mgate(tmp, broker.port, MGATE_HANDLER="rewrite", MGATE_REWRITE_FILE=path)
    c = h.raw_client(g.port, 5, uniq("hup"))
    t.eq(w.topics(lambda: c.publish_wait("hup/a", b"x", 1, 1)), ["old/a"], "before SIGHUP: the first rules")
    write(path, "publish hup/# ^hup/(.+)$ new/$1\n\nsubscribe hup/# ^hup/((.+)$ x/$1\n")
    mark = g.log.mark()
    os.kill(g.pid, signal.SIGHUP)
    line = g.log.wait(r"keeping the previous rewrite rules", 5.0, mark)
    t.check(line and f"{path}:3: regular expression" in g.log.text(mark),
            "SIGHUP with a broken file: logged with its file and line, old rules kept", g.log.text(mark)[-400:])
    t.eq(w.topics(lambda: c.publish_wait("hup/b", b"x", 1, 2)), ["old/b"],
         "after the broken file: the old rule still applies (not half of the new file)")
    write(path, "publish hup/# ^hup/(.+)$ new/$1\n")
    mark = g.log.mark()
    os.kill(g.pid, signal.SIGHUP)
    t.check(g.log.wait(r"SIGHUP: rewrite reloaded: 1 rules", 5.0, mark), "SIGHUP with a good file: reloaded")
    t.eq(w.topics(lambda: c.publish_wait("hup/c", b"x", 1, 3)), ["new/c"],
         "after the good file: the new rule applies to the open session")
    c.close()
    g.stop()


def startup_errors(t, tmp, broker, rules_path):
    bad = os.path.join(tmp, "bad.rules")
    write(bad, "# ok\npublish a/# ^a/(.*)$ b/$1\nboth a/# ^a/(.*)$ b/$2\n")
    cases = [
        ({"MGATE_HANDLER": "log", "MGATE_REWRITE_FILE": rules_path}, "MGATE_REWRITE_FILE is set, but MGATE_HANDLER",
         "does not name rewrite"),
        ({"MGATE_HANDLER": "rewrite"}, "MGATE_HANDLER: \"rewrite\" needs MGATE_REWRITE_FILE", ""),
        ({"MGATE_HANDLER": "rewrite", "MGATE_REWRITE_FILE": bad}, f"MGATE_REWRITE_FILE: {bad}:3: ",
         "$2, but the regular expression has 1 group"),
        ({"MGATE_HANDLER": "rewrite", "MGATE_REWRITE_FILE": "/nonexistent.rules"},
         "MGATE_REWRITE_FILE: /nonexistent.rules: cannot open", "No such file"),
    ]
    for env, want1, want2 in cases:
        e = h.mgate_env(h.free_port(), broker.port, **env)
        r = subprocess.run([h.MGATE_BIN, "--check-config"], env=e, cwd=tmp, capture_output=True, text=True, timeout=10)
        what = ", ".join(f"{k}={v}" for k, v in env.items())
        t.check(r.returncode == 2 and want1 in r.stderr and want2 in r.stderr,
                f"{what}: exit 2 naming {want1.strip()}", f"{r.returncode} {r.stderr.strip()}")


def coap_bridge(t, tmp, broker, w, rules):
    """The CoAP bridge asks the same chain: a POST's topic and an observation's filter are rewritten
    by the same rules (with %u from the device's credentials), and a notification comes back."""
    from test_coap import CON, GET, OBSERVE, POST, URI_QUERY, Raw, code, gate
    from test_coap_bridge import answer_of, notifications
    g = gate(tmp, broker.port, binary=h.MGATE_BIN, TARGET_PROTOCOL="mqtt", MGATE_HANDLER="rewrite",
             MGATE_REWRITE_FILE=rules)
    c = Raw(g.coap)
    try:
        def post():
            mid = c.request(CON, POST, "ps/me/temp", b"21", token=b"\x51",
                            opts=[(URI_QUERY, "u=dev1"), (URI_QUERY, "c=coap-rw"), (URI_QUERY, "q=1")])
            r = answer_of(c, mid)
            t.check(r and r[1] == code(2, 4), "CoAP bridge: POST ps/me/temp (2.04)", r)
        t.eq(w.topics(post), ["users/dev1/temp"], "the broker gets it as users/dev1/temp (%u: the device's username)")
        mark = broker.log.mark()
        mid = c.request(CON, GET, "ps/sub/c/+", token=b"\x52",
                        opts=[(OBSERVE, b""), (URI_QUERY, "u=dev1"), (URI_QUERY, "c=coap-rw")])
        r = answer_of(c, mid)
        t.check(r and r[1] == code(2, 5), "CoAP bridge: observe ps/sub/c/+ (2.05)", r)
        t.check(broker.log.wait(r"coap-rw \d rewritten/c/\+", 5.0, mark) is not None,
                "the broker got the observation as rewritten/c/+")
        broker_publish(broker, "rewritten/c/1", b"note")
        t.eq([n[5] for n in notifications(c, 1, timeout=3.0)], [b"note"], "and the device is notified of rewritten/c/1")
    finally:
        c.close()
        g.stop()


def main():
    h.need_binaries()
    t = h.Checks("rewrite")
    with tempfile.TemporaryDirectory(prefix="mgate-rewrite-") as tmp:
        broker = h.start_mosquitto(tmp)
        rules = os.path.join(tmp, "rules")
        write(rules, RULES)
        admin = h.free_port()
        g = h.Mgate(tmp, broker.port, MGATE_HANDLER="rewrite", MGATE_REWRITE_FILE=rules, MGATE_ADMIN_PORT=admin)
        w = Watch(broker)
        t.case("mosquitto_pub and mosquitto_sub, 3.1.1 and 5.0", table_mosquitto_clients, t, g, broker, w)
        for version in (4, 5):
            t.case(f"UNSUBSCRIBE after a rewritten SUBSCRIBE, v{version}", unsubscribe_after_rewrite, t, g, broker,
                   version)
            t.case(f"first match wins, %u, %c, v{version}", first_match_and_identities, t, g, w, version)
        t.case("topic aliases, retained messages, wills, shared subscriptions", alias_retain_will_share, t, g,
               broker, w)
        t.case("results that are no topic", invalid_results, t, g, w, rules)
        t.case("/metrics", metrics, t, admin)
        t.case("%cn on an mTLS listener", tls_cn, t, tmp, broker, rules)
        t.case("rewrite,acl and acl,rewrite", ordering, t, tmp, broker, w, rules)
        t.case("SIGHUP", sighup, t, tmp, broker, w)
        t.case("the CoAP bridge", coap_bridge, t, tmp, broker, w, rules)
        t.case("start-up errors", startup_errors, t, tmp, broker, rules)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
