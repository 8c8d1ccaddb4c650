#!/usr/bin/python3
"""Publish and subscribe through mgate (handler "log") with real clients.

paho-mqtt in MQTT 3.1, 3.1.1 and 5.0 at QoS 0, 1 and 2 (500 messages each:
none lost, none duplicated, in order); a retained message for a later
subscriber; will messages after an abrupt drop (and none after a clean
DISCONNECT); a 512 KiB payload; 200 concurrent clients; v5 properties end to
end; mosquitto_pub / mosquitto_sub in the three versions.
"""
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
import harness as h  # noqa: E402

N = 500


def protocols():
    mqtt = h.paho()
    return [("31", mqtt.MQTTv31), ("311", mqtt.MQTTv311), ("5", mqtt.MQTTv5)]


def counts(t, gate, name, proto, qos):
    topic = f"count/{name}/q{qos}"
    sub = h.PahoClient(gate.port, f"sub-{name}-q{qos}", proto)
    pub = h.PahoClient(gate.port, f"pub-{name}-q{qos}", proto)
    try:
        t.eq(sub.subscribe(topic, qos), [qos], f"v{name} QoS {qos}: SUBACK grants QoS {qos}")
        infos = [pub.publish(topic, str(i).encode(), qos) for i in range(N)]
        for info in infos:
            info.wait_for_publish(20.0)
        acked = sum(1 for i in infos if i.is_published())
        if qos:
            t.eq(acked, N, f"v{name} QoS {qos}: the publisher's {N} flows complete")
        msgs = sub.wait_messages(N, 20.0)
        got = [int(m.payload) for m in msgs]
        t.eq(sorted(set(got)), list(range(N)), f"v{name} QoS {qos}: all {N} messages arrive")
        t.eq(len(got), N, f"v{name} QoS {qos}: no message arrives twice")
        t.check(got == sorted(got), f"v{name} QoS {qos}: in publish order")
        t.check(all(m.qos == qos for m in msgs), f"v{name} QoS {qos}: delivered at QoS {qos}")
    finally:
        pub.stop()
        sub.stop()


def retained(t, gate, name, proto):
    topic = f"retained/{name}"
    pub = h.PahoClient(gate.port, f"ret-pub-{name}", proto)
    pub.publish_wait(topic, f"kept-{name}".encode(), qos=1, retain=True)
    sub = h.PahoClient(gate.port, f"ret-sub-{name}", proto)
    try:
        sub.subscribe(topic, 1)
        msgs = sub.wait_messages(1, 5.0)
        t.check(len(msgs) == 1 and msgs[0].payload == f"kept-{name}".encode(),
                f"v{name}: a later subscriber gets the retained message",
                [m.payload for m in msgs])
        t.check(bool(msgs) and msgs[0].retain, f"v{name}: with the retain flag set")
    finally:
        pub.publish_wait(topic, b"", qos=1, retain=True)  # clear it
        pub.stop()
        sub.stop()


def will(t, gate, broker):
    mqtt = h.paho()
    sub = h.PahoClient(gate.port, "will-watcher", mqtt.MQTTv311)
    try:
        sub.subscribe("will/#", 1)
        for version, how in ((3, "close"), (4, "close"), (5, "close"), (4, "reset")):
            topic = f"will/v{version}-{how}"
            c = h.RawClient(gate.port)
            will_msg = {"topic": topic, "payload": b"gone", "qos": 1}
            if version == 5:
                will_msg["props"] = [(h.P_USER, ("why", "test"))]
            t.eq(c.connect(version, f"will-{version}-{how}", will=will_msg), 0,
                 f"v{version}: client with a will connects")
            if how == "reset":
                c.abort()
            else:
                c.close()  # no DISCONNECT
            msgs = sub.wait_messages(1, 5.0, pred=lambda m, tp=topic: m.topic == tp)
            t.check(len(msgs) == 1 and msgs[0].payload == b"gone",
                    f"v{version}: the will is delivered after the socket {how}s without DISCONNECT",
                    [m.payload for m in msgs])

        # v5 DISCONNECT with reason 0x04 asks the broker to send the will: mgate must pass the reason on.
        topic = "will/v5-0x04"
        c = h.raw_client(gate.port, 5, "will-5-0x04", will={"topic": topic, "payload": b"asked", "qos": 1})
        c.disconnect(0x04)
        c.close()
        msgs = sub.wait_messages(1, 5.0, pred=lambda m: m.topic == topic)
        t.eq([m.payload for m in msgs], [b"asked"], "v5 DISCONNECT 0x04 (with will): the will is delivered")

        # A clean DISCONNECT discards the will.
        topic = "will/graceful"
        mark = broker.log.mark()
        c = h.RawClient(gate.port)
        t.eq(c.connect(4, "will-graceful", will={"topic": topic, "payload": b"gone", "qos": 1}), 0,
             "graceful client connects")
        c.disconnect()
        t.check(c.expect_closed(5.0), "after DISCONNECT, mgate closes the client connection")
        c.close()
        t.check(broker.log.wait(r"Client will-graceful disconnected", 5.0, mark) is not None,
                "the broker saw the DISCONNECT")
        pub = h.PahoClient(gate.port, "will-marker", mqtt.MQTTv311)
        pub.publish_wait(topic, b"marker", 1)
        pub.stop()
        msgs = sub.wait_messages(1, 5.0, pred=lambda m: m.topic == topic)
        t.eq([m.payload for m in msgs], [b"marker"], "no will after a clean DISCONNECT")
    finally:
        sub.stop()


def persistent(t, gate, broker):
    """Messages queued by the broker for an offline client arrive right behind its CONNACK."""
    for version in (4, 5):
        cid = f"persist-{version}"
        topic = f"persist/v{version}"
        props = [(h.P_SESSION_EXPIRY, 300)] if version == 5 else ()
        c = h.raw_client(gate.port, version, cid, clean=False, props=props)
        t.eq(c.subscribe(1, [(topic + "/#", 1)]), [1], f"v{version}: a client with a persistent session subscribes")
        mark = broker.log.mark()
        c.disconnect()
        c.close()
        t.check(broker.log.wait(r"Client " + cid + r" disconnected", 5.0, mark) is not None, "and goes away")
        p = h.raw_client(gate.port, 4, f"persist-pub-{version}")
        for i in range(50):
            p.publish_wait(topic + "/x", str(i).encode(), 1, i + 1)
        p.close()
        c = h.RawClient(gate.port)
        t.eq(c.connect(version, cid, clean=False, props=props), 0, f"v{version}: it comes back")
        t.eq(c.connack.body[0] & 1, 1, f"v{version}: CONNACK says the session is present")
        got = [int(m.payload) for m in c.collect(50, 10.0)]
        t.eq(got, list(range(50)), f"v{version}: the 50 messages queued meanwhile arrive, once each, in order")
        t.check(c.ping(), f"v{version}: and the session goes on")
        c.close()
        c = h.raw_client(gate.port, version, cid)  # clean start: drop the session
        c.close()


def unsubscribe(t, gate):
    for version in (4, 5):
        c = h.raw_client(gate.port, version, f"unsub-{version}")
        topic = f"unsub/v{version}"
        c.subscribe(1, [(topic, 1), (topic + "-marker", 1)])
        body = b"\x00\x02" + (b"\x00" if version == 5 else b"") + h.utf8(topic)
        c.send(h.packet(h.UNSUBSCRIBE, 2, body))
        p = c.expect(h.UNSUBACK, 3.0)
        t.eq(h.ack_id(p), 2, f"v{version}: UNSUBSCRIBE answered by UNSUBACK")
        if version == 5:
            t.eq(p.body[-1], 0, "v5: UNSUBACK reason 0 (success)")
        c.publish_wait(topic, b"after", 1, 3)
        c.publish_wait(topic + "-marker", b"m", 1, 4)
        msgs, _ = c.collect_until(lambda m: m.payload == b"m", 5.0)
        t.eq([m.topic for m in msgs], [topic + "-marker"], f"v{version}: nothing arrives on the unsubscribed topic")
        c.close()


def qos2_retransmit(t, gate):
    sub = h.raw_client(gate.port, 4, "retx-sub")
    sub.subscribe(1, [("retx/#", 2)])
    for version in (4, 5):
        c = h.raw_client(gate.port, version, f"retx-{version}")
        topic = f"retx/v{version}"
        c.publish(topic, b"once", 2, 9)
        first = c.expect(h.PUBREC, 3.0)
        c.publish(topic, b"once", 2, 9, dup=True)  # as after a lost PUBREC
        second = c.expect(h.PUBREC, 3.0)
        c.send(h.ack_packet(version, h.PUBREL, 9))
        comp = c.expect(h.PUBCOMP, 3.0)
        t.check(h.ack_id(first) == h.ack_id(second) == h.ack_id(comp) == 9,
                f"v{version}: a QoS 2 PUBLISH sent twice (DUP) gets two PUBRECs, then PUBCOMP")
        c.publish_wait(topic + "/end", b"end", 1, 10)
        msgs, _ = sub.collect_until(lambda m: m.payload == b"end", 5.0)
        t.eq([m.payload for m in msgs], [b"once", b"end"], f"v{version}: the subscriber gets it once")
        c.close()
    sub.close()


def small_high_water(t, tmp, broker):
    """OUTPUT_HIGH_WATER at its minimum: packets larger than it still flow, in both directions."""
    mqtt = h.paho()
    gate = h.Mgate(tmp, broker.port, MGATE_MQTT_WITHOUT_TLS_OUTPUT_HIGH_WATER="1024")
    sub = h.PahoClient(gate.port, "hw-sub", mqtt.MQTTv5)
    pub = h.PahoClient(gate.port, "hw-pub", mqtt.MQTTv311)
    try:
        sub.subscribe("hw/#", 2)
        big = os.urandom(300 * 1024)
        pub.publish_wait("hw/big", big, qos=2, timeout=10.0)
        infos = [pub.publish("hw/n", str(i).encode(), 1) for i in range(1000)]
        for info in infos:
            info.wait_for_publish(20.0)
        msgs = sub.wait_messages(1001, 20.0)
        # paho hands a QoS 2 message over at PUBREL, so it need not come first: look by topic
        t.eq([m.payload == big for m in msgs if m.topic == "hw/big"], [True],
             "OUTPUT_HIGH_WATER=1024: a 300 KiB QoS 2 message passes, once, intact")
        t.eq([int(m.payload) for m in msgs if m.topic == "hw/n"], list(range(1000)),
             "and 1000 QoS 1 messages after it, in order")
    finally:
        pub.stop()
        sub.stop()


def empty_client_id(t, gate):
    c = h.RawClient(gate.port)
    t.eq(c.connect(5, ""), 0, "v5 with an empty client id: CONNACK 0")
    assigned = h.prop(c.connack_props, h.P_ASSIGNED_ID, "")
    t.check(assigned != "", f"with the broker's Assigned Client Identifier ({assigned!r})")
    c.close()
    c = h.RawClient(gate.port)
    t.eq(c.connect(4, ""), 0, "3.1.1 with an empty client id and a clean session: CONNACK 0")
    c.close()


def big_payload(t, gate):
    mqtt = h.paho()
    payload = os.urandom(512 * 1024)
    sub = h.PahoClient(gate.port, "big-sub", mqtt.MQTTv5)
    pub = h.PahoClient(gate.port, "big-pub", mqtt.MQTTv311)
    try:
        sub.subscribe("big/one", 1)
        pub.publish_wait("big/one", payload, qos=1, timeout=10.0)
        msgs = sub.wait_messages(1, 10.0)
        t.check(len(msgs) == 1 and msgs[0].payload == payload, "a 512 KiB payload arrives intact",
                [len(m.payload) for m in msgs])
    finally:
        pub.stop()
        sub.stop()


def concurrent(t, gate, n=200):
    clients = []
    try:
        for i in range(n):
            c = h.RawClient(gate.port, timeout=10.0)
            c.version = (3, 4, 5)[i % 3]
            c.send(h.connect_packet(c.version, f"conc{i}"))
            clients.append(c)
        codes = []
        for c in clients:
            p = c.read_packet(10.0)
            codes.append(p.body[1] if p.type == h.CONNACK else -1)
        t.eq(sum(1 for rc in codes if rc == 0), n, f"{n} concurrent clients (3.1, 3.1.1, 5.0) all get CONNACK 0")
        for i, c in enumerate(clients):
            c.send(h.subscribe_packet(c.version, 1, [(f"conc/{i}", 1)]))
        subacks = 0
        for c in clients:
            p = c.expect(h.SUBACK, 10.0)
            subacks += p.body[-1] == 1
        t.eq(subacks, n, f"{n} SUBACKs granting QoS 1")
        for i, c in enumerate(clients):
            c.send(h.publish_packet(c.version, f"conc/{i}", f"own-{i}", 1, 2))
        own = 0
        acked = 0
        for i, c in enumerate(clients):
            m = c.recv_publish(10.0)
            own += m.topic == f"conc/{i}" and m.payload == f"own-{i}".encode()
            acked += h.ack_id(c.expect(h.PUBACK, 10.0)) == 2
        t.eq(acked, n, f"{n} PUBACKs")
        t.eq(own, n, f"each of the {n} clients receives its own message")
    finally:
        for c in clients:
            c.close()


def v5_properties(t, gate):
    mqtt = h.paho()
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    sub = h.PahoClient(gate.port, "props-sub", mqtt.MQTTv5)
    pub = h.PahoClient(gate.port, "props-pub", mqtt.MQTTv5)
    try:
        sub.subscribe("props/t", 1)
        p = Properties(PacketTypes.PUBLISH)
        users = [("k1", "v1"), ("k2", "v2 with spaces"), ("k1", "v3"), ("ключ", "значение")]
        p.UserProperty = users
        p.ContentType = "application/json"
        p.CorrelationData = b"\x00\x01corr\xff"
        p.ResponseTopic = "props/reply"
        p.PayloadFormatIndicator = 1
        pub.publish_wait("props/t", b'{"a":1}', qos=1, properties=p)
        msgs = sub.wait_messages(1, 5.0)
        t.eq(len(msgs), 1, "the message with properties arrives")
        if msgs:
            got = msgs[0].properties
            t.eq(list(getattr(got, "UserProperty", [])), users, "user properties intact, in order, repeats kept")
            t.eq(getattr(got, "ContentType", None), "application/json", "content type intact")
            t.eq(getattr(got, "CorrelationData", None), b"\x00\x01corr\xff", "correlation data intact")
            t.eq(getattr(got, "ResponseTopic", None), "props/reply", "response topic intact")
            t.eq(getattr(got, "PayloadFormatIndicator", None), 1, "payload format indicator intact")
            t.eq(msgs[0].payload, b'{"a":1}', "payload intact")
    finally:
        pub.stop()
        sub.stop()


def cli(t, gate, broker):
    for v in ("31", "311", "5"):
        topic = f"cli/v{v}"
        mark = broker.log.mark()
        sub = h.spawn(["mosquitto_sub", "-h", h.HOST, "-p", str(gate.port), "-V", v, "-i", f"cli-sub-{v}",
                       "-t", topic, "-q", "1", "-C", "3", "-W", "10"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready = broker.log.wait(r"Sending SUBACK to cli-sub-" + v + r"\b", 5.0, mark)
        t.check(ready is not None, f"mosquitto_sub -V {v} subscribes through mgate")
        pub = subprocess.run(["mosquitto_pub", "-h", h.HOST, "-p", str(gate.port), "-V", v, "-i", f"cli-pub-{v}",
                              "-t", topic, "-q", "1", "-l"], input=b"one\ntwo\nthree\n",
                             capture_output=True, timeout=10)
        t.eq(pub.returncode, 0, f"mosquitto_pub -V {v} exits 0")
        try:
            out, err = sub.communicate(timeout=12)
        except subprocess.TimeoutExpired:
            sub.kill()
            out, err = sub.communicate()
        t.eq(sub.returncode, 0, f"mosquitto_sub -V {v} -C 3 exits 0")
        t.eq(out.decode().splitlines(), ["one", "two", "three"], f"mosquitto_sub -V {v} prints the 3 messages")


def main():
    h.need_binaries()
    mqtt = h.paho()
    t = h.Checks("pubsub")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.Broker(tmp, "max_queued_messages 10000\n")
        gate = h.Mgate(tmp, broker.port, MGATE_HANDLER="log", MGATE_LOG_LEVEL="debug")
        for name, proto in protocols():
            for qos in (0, 1, 2):
                t.case(f"MQTT v{name}, QoS {qos}, {N} messages", counts, t, gate, name, proto, qos)
        for name, proto in protocols():
            t.case(f"retained message, v{name}", retained, t, gate, name, proto)
        t.case("will messages", will, t, gate, broker)
        t.case("persistent sessions", persistent, t, gate, broker)
        t.case("512 KiB payload", big_payload, t, gate)
        t.case("UNSUBSCRIBE", unsubscribe, t, gate)
        t.case("empty client id", empty_client_id, t, gate)
        t.case("QoS 2 retransmission", qos2_retransmit, t, gate)
        t.case("smallest OUTPUT_HIGH_WATER", small_high_water, t, tmp, broker)
        t.case("200 concurrent clients", concurrent, t, gate)
        t.case("v5 properties", v5_properties, t, gate)
        t.case("mosquitto_pub / mosquitto_sub", cli, t, gate, broker)
        t.section("mgate itself")
        t.check(gate.alive(), "mgate is still running")
        log = gate.json_lines()
        t.check(any(line.get("msg") == "publish" for line in log), "the log handler logged PUBLISHes")
        t.check(not any(line.get("level") == "error" for line in log), "no error in mgate's log")
        del mqtt
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
