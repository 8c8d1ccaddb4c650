#!/usr/bin/python3
"""MQTT.js (node, tests/js/client.mjs) through mgate's WebSocket listeners.

ws:// and wss:// to mosquitto's TCP listener (TARGET_PROTOCOL=mqtt) and to its WebSocket
listener (TARGET_PROTOCOL=ws), MQTT 3.1.1 and 5.0, QoS 0/1/2: every message arrives once (in
order at QoS 1 and 2), the broker has them too (a direct TCP subscriber) and logged the client
with its protocol level; MQTT.js refuses mgate's certificate without the test CA; wss with client
certificates (good, unknown CA, none); the example handler's refusal codes as MQTT.js reports
them (CONNACK, SUBACK, PUBACK, 3.1.1's close), refused clients never at the broker.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
import harness as h  # noqa: E402

JS_DIR = os.path.join(h.REPO, "tests", "js")
CLIENT = os.path.join(JS_DIR, "client.mjs")
N = 200
WS, WSS, MTLS = "MGATE_MQTT_WS_WITHOUT_TLS_", "MGATE_MQTT_WS_WITH_TLS_", "MGATE_MQTT_WS_WITH_MTLS_"


def need_node():
    node = shutil.which("node")
    if not node or not os.path.isfile(os.path.join(JS_DIR, "node_modules", "mqtt", "package.json")):
        print(f"node and {JS_DIR}/node_modules/mqtt are needed: run tests/deps.sh", file=sys.stderr)
        sys.exit(1)
    return node


NODE = None


def js(spec, timeout=60):
    """Run client.mjs with spec; its JSON answer (a dict)."""
    p = h.spawn([NODE, CLIENT, json.dumps(spec)], cwd=JS_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        h.stop(p)
        raise AssertionError(f"client.mjs {spec.get('mode')} did not end in {timeout} s") from None
    lines = out.strip().splitlines()
    if p.returncode != 0 or not lines:
        raise AssertionError(f"client.mjs exited {p.returncode}: {err.strip()[-800:]}")
    return json.loads(lines[-1])


def listener(prefix, port, broker_port, target="mqtt", pki=None, client_ca=False, **keys):
    """MGATE_* variables for one WebSocket listener (PATH_PREFIX /mqtt)."""
    env = {"HOST": h.HOST, "PORT": port, "TARGET_HOST": h.HOST, "TARGET_PORT": broker_port,
           "TARGET_PROTOCOL": target, "PATH_PREFIX": "/mqtt", **keys}
    if pki:
        env.update(CERT_FILE=pki["server.crt"], KEY_FILE=pki["server.key"])
    if client_ca:
        env["CLIENT_CA_FILE"] = pki["ca.crt"]
    return {prefix + k: v for k, v in env.items()}


class Gate:
    """An mgate (or mgate-example) with one WebSocket listener, kind "ws", "wss" or "mtls", and
    no other. (One per process: this version of mgate gives every WebSocket upgrade of a process
    the settings of the WebSocket listener that took the first connection, so two listeners of one
    process would not be tested apart.)"""

    PREFIX = {"ws": WS, "wss": WSS, "mtls": MTLS}

    def __init__(self, tmp, broker, kind, pki=None, target="mqtt", binary=None, **keys):
        port = h.free_port()
        env = listener(self.PREFIX[kind], port, broker.port, target, pki=pki if kind != "ws" else None,
                       client_ca=kind == "mtls", **keys)
        self.g = h.Mgate(tmp, broker.port, binary=binary, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **env)
        self.log = self.g.log
        self.kind = kind
        self.listener = "mqtt_" + self.PREFIX[kind][len("MGATE_MQTT_"):-1].lower()
        self.url = f"{'ws' if kind == 'ws' else 'wss'}://localhost:{port}/mqtt"


class Watch:
    """A raw MQTT client straight on the broker's TCP listener, subscribed to js/# at QoS 0:
    what reached the broker, whatever the client said."""

    def __init__(self, broker):
        self.c = h.raw_client(broker.port, 4, f"js-watch-{broker.port}", keepalive=0)  # it never pings
        if self.c.subscribe(1, [("js/#", 0)]) != [0]:
            raise AssertionError("the watcher could not subscribe")

    def topics(self, n, timeout=10.0):
        """The topics of the next n messages (fewer if they do not come)."""
        return [m.topic for m in self.c.collect(n, timeout)]


def pubsub(t, watch, broker, gate, version, tls=None, qos=(0, 1, 2), n=N, what=None):
    """MQTT.js publishes n messages at each QoS through gate to itself; every one must come back
    once (in order above QoS 0), the broker must have had them and must have logged both clients
    with the protocol level, and mgate's listener must have logged the session."""
    cid = f"js-{re.sub(r'[^a-z0-9]+', '-', what.lower()).strip('-')}"
    topic = f"js/{cid}"
    mark = broker.log.mark()
    gmark = gate.log.mark()
    r = js({"mode": "pubsub", "url": gate.url, "version": version, "id": cid, "topic": topic,
            "qos": list(qos), "n": n, **(tls or {})})
    if not t.check("results" in r, f"{what}: MQTT.js connects, subscribes and publishes", r):
        return
    for res in r["results"]:
        q = res["qos"]
        got = res["received"]
        t.eq(res["granted"], [q], f"{what}, QoS {q}: SUBACK grants QoS {q}")
        missing = sorted(set(range(n)) - set(got))
        twice = sorted({x for x in got if got.count(x) > 1})
        t.check(sorted(got) == list(range(n)), f"{what}, QoS {q}: all {n} messages arrive, once each "
                f"({len(got)} in {res['ms']} ms)", f"missing {missing[:10]}, more than once {twice[:10]}, "
                f"unexpected {sorted(set(got) - set(range(n)))[:10]}")
        if q:
            wrong = next((i for i, x in enumerate(got) if x != i), None)
            t.check(got == list(range(n)), f"{what}, QoS {q}: in the order they were published",
                    f"position {wrong} holds {got[wrong] if wrong is not None and wrong < len(got) else None}")
    seen = watch.topics(n * len(qos))
    t.eq({q: seen.count(f"{topic}/q{q}") for q in qos}, {q: n for q in qos},
         f"{what}: the broker had all {n} of each QoS (a subscriber on its TCP listener)")
    level = {4: 2, 5: 5}[version]
    for role in ("sub", "pub"):
        t.check(broker.log.search(rf"New client connected from \S+ as {re.escape(cid)}-{role} \(p{level},", mark),
                f"{what}: mosquitto logged {cid}-{role} with protocol p{level}")
    lines = [j for j in gate.g.json_since(gmark) if j.get("msg") == "connect" and j.get("client_id") == f"{cid}-sub"]
    t.eq([(j.get("listener"), j.get("protocol")) for j in lines], [(gate.listener, version)],
         f"{what}: mgate's {gate.listener} listener logged the session with protocol {version}")


def to_tcp(t, tmp, broker, watch, pki):
    """TARGET_PROTOCOL=mqtt: ws:// and wss:// to mosquitto's TCP listener."""
    for kind in ("ws", "wss"):
        gate = Gate(tmp, broker, kind, pki)
        for version in (4, 5):
            pubsub(t, watch, broker, gate, version, tls={"ca": pki["ca.crt"]} if kind == "wss" else None,
                   what=f"{kind} -> TCP, v{version}")
        if kind == "wss":
            # Without the test CA MQTT.js refuses mgate's certificate: the runs above did check it.
            r = js({"mode": "connect", "url": gate.url, "version": 4, "id": "js-no-ca"})
            t.check(r.get("connack") is None and re.search(r"certificate", r.get("error", ""), re.I),
                    "wss without the test CA: MQTT.js refuses mgate's certificate", r)


def mtls(t, tmp, broker, watch, pki):
    """wss with client certificates: the test CA's client certificate gets in, one from an unknown
    CA and none do not (mgate logs the failed handshake; the broker never sees the client)."""
    gate = Gate(tmp, broker, "mtls", pki)
    for version in (4, 5):
        pubsub(t, watch, broker, gate, version,
               tls={"ca": pki["ca.crt"], "cert": pki["client.crt"], "key": pki["client.key"]},
               n=50, what=f"wss+mTLS, client certificate, v{version}")
    for cert, cid in (("unknown", "js-mtls-unknown"), (None, "js-mtls-none")):
        mark, gmark = broker.log.mark(), gate.log.mark()
        tls = {"ca": pki["ca.crt"]}
        if cert:
            tls.update(cert=pki[f"{cert}.crt"], key=pki[f"{cert}.key"])
        r = js({"mode": "connect", "url": gate.url, "version": 5, "id": cid, "timeout": 5000, **tls})
        what = f"wss+mTLS, {'certificate from an unknown CA' if cert else 'no certificate'}"
        t.check(r.get("connack") is None and r.get("error"), f"{what}: MQTT.js cannot connect", r)
        t.check(gate.log.wait(r'"msg":"TLS handshake failed"', 3.0, gmark), f"{what}: mgate logs the failed handshake")
        t.check(not broker.saw_client(cid, mark), f"{what}: the broker never sees {cid}")


def to_ws(t, tmp, pki):
    """TARGET_PROTOCOL=ws: mgate dials mosquitto's WebSocket listener. mgate knows only that port,
    so every message that comes back went client -ws-> mgate -ws-> broker."""
    wsport = h.free_port()
    broker = h.start_mosquitto(tmp, f"listener {wsport} {h.HOST}\nprotocol websockets\nsocket_domain ipv4\n"
                                    "allow_anonymous true\n")
    watch = Watch(broker)
    gates = [Gate(tmp, broker, kind, pki, target="ws", TARGET_PORT=wsport, TARGET_PATH="/mqtt")
             for kind in ("ws", "wss")]
    for gate in gates:
        for version in (4, 5):
            pubsub(t, watch, broker, gate, version, tls={"ca": pki["ca.crt"]} if gate.kind == "wss" else None,
                   n=100, what=f"{gate.kind} -> mosquitto's WebSocket listener, v{version}")
    broker.stop()
    r = js({"mode": "connect", "url": gates[0].url, "version": 4, "id": "js-ws-broker-down", "timeout": 5000})
    t.eq(r.get("code"), 3, "the broker's WebSocket listener is gone: MQTT.js gets CONNACK 3")


def refusals(t, tmp, broker, pki):
    """The example handler (mgate-example) over ws:// and wss://: its refusals reach MQTT.js with
    the core's codes, and refused clients never reach the broker."""
    cases = ((4, "deny-js-4", None, 5, "client id deny*: CONNACK 5"),
             (5, "deny-js-5", None, 0x87, "client id deny*: CONNACK 0x87"),
             (4, "js-baduser-4", "baduser", 4, "username baduser: CONNACK 4"),
             (5, "js-baduser-5", "baduser", 0x86, "username baduser: CONNACK 0x86"))
    ca = {"ca": pki["ca.crt"]}
    for kind in ("ws", "wss"):
        gate = Gate(tmp, broker, kind, pki, binary=h.EXAMPLE_BIN)
        for version, cid, user, want, what in cases:
            cid = f"{cid}-{kind}"
            mark = broker.log.mark()
            spec = {"mode": "connect", "url": gate.url, "version": version, "id": cid, **ca}
            if user:
                spec.update(username=user, password="pw")
            r = js(spec)
            t.eq(r.get("code"), want, f"{kind} v{version} {what} (MQTT.js's error code)")
            t.check(not broker.saw_client(cid, mark), f"{kind} v{version}: the broker never sees {cid}")
        ok = js({"mode": "connect", "url": gate.url, "version": 5, "id": f"js-allowed-{kind}", **ca})
        t.eq(ok, {"connack": 0}, f"{kind}: the same handler lets another client in")

        topic = f"js/refusals/{kind}"
        forbidden = f"{topic}/forbidden"
        r = js({"mode": "refusals", "url": gate.url, "version": 5, "id": f"js-refusals-5-{kind}", "topic": topic, **ca})
        t.eq(r.get("granted"), {topic: 1, forbidden: 0x87},
             f"{kind} v5: one SUBACK grants the allowed filter and refuses the forbidden one with 0x87")
        t.eq((r.get("publish") or {}).get("code"), 0x87, f"{kind} v5: PUBLISH to a forbidden topic: PUBACK 0x87")
        t.eq(r.get("received"), [[topic, "marker"]],
             f"{kind} v5: the marker published after it comes back, and nothing else")
        r = js({"mode": "refusals", "url": gate.url, "version": 4, "id": f"js-refusals-4-{kind}", "topic": topic, **ca})
        t.eq(r.get("granted"), {topic: 1, forbidden: 0x80},
             f"{kind} v3.1.1: one SUBACK grants the allowed filter and refuses the forbidden one with 0x80")
        t.eq(r.get("publish"), {"closed": True},
             f"{kind} v3.1.1: PUBLISH to a forbidden topic closes the connection (3.1.1 has no refusal code)")


def main():
    global NODE
    h.need_binaries()
    NODE = need_node()
    t = h.Checks("ws_js")
    with tempfile.TemporaryDirectory() as tmp:
        pki = h.Pki(tmp)
        broker = h.start_mosquitto(tmp)
        watch = Watch(broker)
        t.case("ws:// and wss:// to mosquitto's TCP listener", to_tcp, t, tmp, broker, watch, pki)
        t.case("wss with client certificates", mtls, t, tmp, broker, watch, pki)
        t.case("ws:// and wss:// to mosquitto's WebSocket listener", to_ws, t, tmp, pki)
        t.case("the example handler's refusals", refusals, t, tmp, broker, pki)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
