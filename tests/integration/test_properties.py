#!/usr/bin/python3
"""MQTT 5 properties in the handler API, through mgate-example with MGATE_EXAMPLE_PROPERTIES=1
(it reads every PUBLISH's properties, refuses one carrying "x-mgate-deny", and on topics
"props/..." stamps "x-mgate-user: <username>" on a client's PUBLISH, removing "x-strip", and
"x-mgate-to: <client id>" on a delivery) and MGATE_EXAMPLE_REFUSE_AUTH_METHOD=forbidden.

Against mosquitto: mosquitto_pub/sub -V mqttv5 see the stamped user properties; a delivery
whose properties were read but not changed arrives byte for byte as mosquitto sent it; a
PUBLISH that grows past the receiver's Maximum Packet Size is refused with 0x83 (client side)
or acknowledged to the broker and dropped (broker side), and so is a topic rewrite that grows
past it; the auth method refused with 0x8C. Against a recording broker (fake_broker.py): an
unchanged PUBLISH with properties reaches it byte for byte, a stamped one with every other
property kept in order, and topic aliases stay right when the packet is re-encoded."""
import http.client as http_client
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402
import fake_broker as fb  # noqa: E402

MAX_PACKET = 300  # mosquitto's max_packet_size: advertised in its CONNACK


def users(props):
    return [v for k, v in props if k == h.P_USER]


def sized_publish(topic, size, qos=1, pid=1, props=()):
    """(packet, payload) of a v5 PUBLISH exactly `size` bytes long."""
    n = size
    while True:
        payload = b"p" * n
        pkt = h.publish_packet(5, topic, payload, qos, pid, props)
        if len(pkt) == size:
            return pkt, payload
        n -= len(pkt) - size


def cli_stamp(t, gate, broker):
    mark = broker.log.mark()
    sub = h.spawn(["mosquitto_sub", "-h", h.HOST, "-p", str(gate.port), "-V", "mqttv5", "-i", "cli-props-sub",
                   "-t", "props/#", "-q", "1", "-C", "2", "-W", "10", "-F", "%t %P"],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t.check(broker.log.wait(r"Sending SUBACK to cli-props-sub\b", 5.0, mark) is not None,
            "mosquitto_sub -V mqttv5 subscribes through mgate")
    for topic, user in (("props/a", "alice"), ("props/b", None)):
        argv = ["mosquitto_pub", "-h", h.HOST, "-p", str(gate.port), "-V", "mqttv5", "-t", topic, "-m", "m",
                "-q", "1", "-D", "publish", "user-property", "x-strip", "gone",
                "-D", "publish", "user-property", "keep", "me",
                "-D", "publish", "user-property", "x-mgate-user", "forged"]
        if user:
            argv += ["-u", user]
        pub = subprocess.run(argv, capture_output=True, timeout=10)
        t.eq(pub.returncode, 0, f"mosquitto_pub -V mqttv5 on {topic} exits 0")
    try:
        out, _ = sub.communicate(timeout=12)
    except subprocess.TimeoutExpired:
        sub.kill()
        out, _ = sub.communicate()
    lines = out.decode().splitlines()
    t.check(len(lines) == 2, "mosquitto_sub prints both messages", lines)
    for line, user in zip(lines, ("alice", "anonymous")):
        fields = line.split()
        t.check("keep:me" in fields, f"{fields[0]}: the client's other user property is kept", line)
        t.check(not any(f.startswith("x-strip:") for f in fields), f"{fields[0]}: x-strip was removed", line)
        t.eq([f for f in fields if f.startswith("x-mgate-user:")], [f"x-mgate-user:{user}"],
             f"{fields[0]}: one x-mgate-user, the session's ({user}), not the forged one")
        t.eq([f for f in fields if f.startswith("x-mgate-to:")], ["x-mgate-to:cli-props-sub"],
             f"{fields[0]}: the delivery is stamped with the subscriber's client id")


def read_and_refuse(t, gate):
    c = h.raw_client(gate.port, 5, "prop-refusal")
    t.eq(c.publish_wait("any/t", b"x", 1, 1, props=[(h.P_USER, ("x-mgate-deny", ""))]), 0x87,
         "a PUBLISH carrying user property x-mgate-deny (empty value): PUBACK 0x87")
    rc = c.publish_wait("any/t", b"x", 1, 2, props=[(h.P_USER, ("other", "x-mgate-deny"))])
    t.check(rc in (0, 0x10), "one with that text only as a value: PUBACK 0 (or 0x10, no subscribers)", rc)
    t.eq(c.subscribe(3, [("a/b", 1), ("c/d", 0)], props=[(h.P_USER, ("x-mgate-deny", "1"))]), [0x87, 0x87],
         "a SUBSCRIBE carrying it: every filter refused (SUBACK 0x87 0x87)")
    t.eq(c.subscribe(4, [("a/b", 1)], props=[(h.P_SUB_ID, 5), (h.P_USER, ("k", "v"))]), [1],
         "one with other properties: granted")
    c.close()
    # auth_connect reads the CONNECT's properties first (the auth-method rule): the will's
    # must still be the will's own
    w = h.RawClient(gate.port)
    will = {"topic": "will/t", "payload": b"bye", "props": [(h.P_USER, ("x-mgate-deny", ""))]}
    t.eq(w.connect(5, "prop-will", will=will, props=[(h.P_USER, ("k", "v"))]), 0x87,
         "a will carrying x-mgate-deny: its CONNECT refused (CONNACK 0x87)")
    w.close()
    w = h.RawClient(gate.port)
    will["props"] = [(h.P_USER, ("k", "v"))]
    t.eq(w.connect(5, "prop-will-2", will=will, props=[(h.P_USER, ("x-mgate-deny", ""))]), 0,
         "x-mgate-deny on the CONNECT, not its will: CONNACK 0 (the will's own properties were read)")
    w.close()
    old = h.raw_client(gate.port, 4, "props-311")
    w = h.raw_client(gate.port, 4, "props-311-watch")
    w.subscribe(1, [("props/old", 1)])
    t.eq(old.publish_wait("props/old", b"v3", 1, 1), 0, "3.1.1 (no properties): PUBACK")
    m = w.recv_publish()
    t.eq((m.topic, m.payload), ("props/old", b"v3"), "and delivered as it was")
    old.close()
    w.close()


def delivery_unchanged(t, gate, broker):
    """The handler reads every delivery's properties; unchanged, the PUBLISH must be what
    mosquitto sent (compared with a subscriber of mosquitto's own)."""
    direct = h.raw_client(broker.port, 5, "direct-watch")
    proxied = h.raw_client(gate.port, 5, "proxied-watch")
    direct.subscribe(1, [("raw/#", 1)], props=[(h.P_SUB_ID, 9)])
    proxied.subscribe(1, [("raw/#", 1)], props=[(h.P_SUB_ID, 9)])
    p = h.raw_client(broker.port, 5, "raw-pub")
    props = [(h.P_CONTENT_TYPE, "text/plain"), (h.P_USER, ("k", "1")), (h.P_USER, ("k", "2")),
             (h.P_USER, ("", "")), (h.P_RESPONSE_TOPIC, "re/ply"), (h.P_CORRELATION, b"\x00\x01"),
             (h.P_PAYLOAD_FORMAT, 1), (h.P_MESSAGE_EXPIRY, 3600)]
    p.publish_wait("raw/x", b"payload", 1, 1, props=props)
    got = [c.expect(h.PUBLISH) for c in (direct, proxied)]
    t.eq(h.packet(got[1].type, got[1].flags, got[1].body), h.packet(got[0].type, got[0].flags, got[0].body),
         "a delivery whose properties were read, not changed, arrives as mosquitto sent it")
    t.check(len(users(h.parse_publish(5, got[1]).props)) == 3, "with its three user properties",
            h.parse_publish(5, got[1]).props)
    for c in (direct, proxied, p):
        c.close()


def too_large_up(t, gate, broker):
    c = h.raw_client(gate.port, 5, "big-pub", username="alice")
    t.eq(h.prop(c.connack_props, h.P_MAX_PACKET), MAX_PACKET, "mosquitto's CONNACK says Maximum Packet Size 300")
    w = h.raw_client(broker.port, 5, "big-watch")
    w.subscribe(1, [("#", 1)])
    pkt, payload = sized_publish("raw/big", MAX_PACKET)
    c.send(pkt)
    t.eq(h.ack_reason(5, c.expect(h.PUBACK)), 0, "an unchanged PUBLISH of exactly 300 bytes: PUBACK 0")
    pkt, _ = sized_publish("props/big", MAX_PACKET, pid=2)
    c.send(pkt)
    t.eq(h.ack_reason(5, c.expect(h.PUBACK)), 0x83,
         "300 bytes stamped with x-mgate-user (past 300): PUBACK 0x83, not silence")
    pkt, _ = sized_publish("props/big", MAX_PACKET, qos=2, pid=3)
    c.send(pkt)
    t.eq(h.ack_reason(5, c.expect(h.PUBREC)), 0x83, "at QoS 2: PUBREC 0x83")
    pkt, _ = sized_publish("rewrite/big", MAX_PACKET, pid=4)
    c.send(pkt)
    t.eq(h.ack_reason(5, c.expect(h.PUBACK)), 0x83, "a topic rewrite (rewrite/ -> rewritten/) past 300: PUBACK 0x83")
    pkt, _ = sized_publish("props/big0", MAX_PACKET, qos=0)
    c.send(pkt)
    t.check(c.ping(), "at QoS 0 it is dropped and the session goes on")
    c.publish_wait("props/small", b"s", 1, 5)
    got = [m.topic for m in w.collect_until(lambda m: m.topic == "props/small", 5.0)[0]]
    t.eq(got, ["raw/big", "props/small"], "the broker published only what fit")
    small = [m for m in w.stash if m.type == h.PUBLISH]
    t.eq(small, [], "nothing else")
    c.close()
    w.close()


def too_large_down(t, gate, broker):
    limit = 200
    s = h.raw_client(gate.port, 5, "small-sub", props=[(h.P_MAX_PACKET, limit)])
    s.subscribe(1, [("props/#", 1)])
    p = h.raw_client(broker.port, 5, "down-pub")
    mark = broker.log.mark()
    pkt, payload = sized_publish("props/d1", limit)
    p.send(pkt)
    p.expect(h.PUBACK)
    p.publish_wait("props/d2", b"small", 1, 2)
    m = s.recv_publish()
    t.eq((m.topic, m.payload), ("props/d2", b"small"),
         "a 200-byte delivery grown past the client's Maximum Packet Size 200 is not sent; the next one is")
    t.eq(users(m.props), [("x-mgate-to", "small-sub")], "the small one stamped")
    t.check(broker.log.wait(r"Received PUBACK from small-sub \(Mid: 1\b", 3.0, mark) is not None,
            "mgate acknowledged the dropped one to the broker (Mid 1)", broker.log.text(mark)[-800:])
    t.check(s.ping(), "the client's session goes on")
    p.publish_wait("props/latedown", b"late", 1, 3, props=[(h.P_USER, ("k", "v")), (h.P_CONTENT_TYPE, "c")])
    m = s.recv_publish()
    t.eq((m.topic, m.payload, [x for x in m.props if x[0] != h.P_SUB_ID]),
         ("props/latedown", b"late", [(h.P_USER, ("k", "v")), (h.P_USER, ("x-mgate-to", "small-sub")),
                                      (h.P_CONTENT_TYPE, "c")]),
         "a delivery stamped then held for a late verdict: properties intact")
    s.close()
    p.close()


def auth_method(t, gate, broker):
    mark = broker.log.mark()
    c = h.RawClient(gate.port)
    rc = c.connect(5, "auth-forbidden", props=[(0x15, "forbidden"), (0x16, b"data")])
    t.eq(rc, 0x8C, "a CONNECT with Authentication Method 'forbidden': CONNACK 0x8C (Bad authentication method)")
    c.close()
    time.sleep(0.2)
    t.check(not broker.saw_client("auth-forbidden", mark), "it never reached mosquitto")


def recorded(t, gate, fake):
    c = h.RawClient(gate.port)
    c.version = 5
    c.send(h.connect_packet(5, "rec-1", username="bob"))
    peer = fake.accept()
    peer.read_raw()
    peer.send(fb.connack(0, [(h.P_TOPIC_ALIAS_MAX, 5)]))
    t.eq(c.read_packet().type, h.CONNACK, "connected through mgate to the recording broker")
    props = [(h.P_MESSAGE_EXPIRY, 60), (h.P_USER, ("a", "1")), (h.P_CONTENT_TYPE, "ct"), (h.P_USER, ("b", "")),
             (h.P_CORRELATION, b"\xff")]
    pub = h.publish_packet(5, "raw/r", b"r", 1, 1, props=props)
    c.send(pub)
    t.eq(peer.read_raw(), pub, "a PUBLISH whose properties the handler read reaches the broker byte for byte")
    stamped = [(h.P_MESSAGE_EXPIRY, 60), (h.P_USER, ("x-strip", "1")), (h.P_CONTENT_TYPE, "ct"),
               (h.P_USER, ("b", "")), (h.P_CORRELATION, b"\xff"), (h.P_TOPIC_ALIAS, 1)]
    c.send(h.publish_packet(5, "props/r", b"s", 1, 2, props=stamped))
    got = h.parse_publish(5, h.Packet(*split(peer.read_raw())))
    want = [(h.P_MESSAGE_EXPIRY, 60), (h.P_USER, ("b", "")), (h.P_USER, ("x-mgate-user", "bob")),
            (h.P_CONTENT_TYPE, "ct"), (h.P_CORRELATION, b"\xff"), (h.P_TOPIC_ALIAS, 1)]
    t.eq((got.topic, got.props), ("props/r", want),
         "a stamped one: x-strip gone, x-mgate-user added, every other property kept in order")
    c.send(h.publish_packet(5, "", b"t", 1, 3, props=[(h.P_TOPIC_ALIAS, 1)]))
    got = h.parse_publish(5, h.Packet(*split(peer.read_raw())))
    # The broker was told alias 1 = props/r by the stamped PUBLISH above:
    # the re-encoded one may go with the alias alone, or with the topic again.
    alias = [v for k, v in got.props if k == h.P_TOPIC_ALIAS]
    t.eq((got.topic or ("props/r" if alias == [1] else ""), got.payload, users(got.props)),
         ("props/r", b"t", [("x-mgate-user", "bob")]),
         "an alias-only PUBLISH stamped: re-encoded, its topic (or alias) still props/r at the broker")
    # stamped, then held 100 ms for a late verdict ("/slow/"): the views move with the packet
    late = [(h.P_USER, ("k", "v")), (h.P_USER, ("x-strip", "")), (h.P_RESPONSE_TOPIC, "re/t")]
    c.send(h.publish_packet(5, "props/slow/x", b"late", 1, 4, props=late))
    got = h.parse_publish(5, h.Packet(*split(peer.read_raw())))
    t.eq((got.topic, got.payload, got.props),
         ("props/slow/x", b"late", [(h.P_USER, ("k", "v")), (h.P_USER, ("x-mgate-user", "bob")),
                                   (h.P_RESPONSE_TOPIC, "re/t")]),
         "a PUBLISH stamped, then held for a late verdict: properties intact")
    c.close()
    peer.close()


def many_user_properties(t, gate, fake):
    """A handler is shown at most MGATE_MAX_USER_PROPERTIES (1024) user properties: with more,
    mgate_properties gives NULL (the view would cost 64 bytes for each 5 on the wire, held while a
    verdict pends) and the example handler refuses, so a forged x-mgate-user cannot pass unstamped."""
    c = h.RawClient(gate.port)
    c.version = 5
    c.send(h.connect_packet(5, "many-props", username="bob"))
    peer = fake.accept()
    peer.read_raw()
    peer.send(fb.connack(0))
    t.eq(c.read_packet().type, h.CONNACK, "connected through mgate to the recording broker")
    forged = [(h.P_USER, ("x-mgate-user", "admin"))]
    c.send(h.publish_packet(5, "props/many", b"1024", 1, 1, props=forged + [(h.P_USER, ("", ""))] * 1023))
    got = h.parse_publish(5, h.Packet(*split(peer.read_raw())))
    t.eq([u for u in users(got.props) if u[0] == "x-mgate-user"], [("x-mgate-user", "bob")],
         "1024 user properties: shown, the forged x-mgate-user replaced by mgate's")
    t.eq(len(users(got.props)), 1024, "... and the other 1023 kept")
    peer.send(h.ack_packet(5, h.PUBACK, 1))
    c.expect(h.PUBACK)
    t.eq(c.publish_wait("props/many", b"1025", 1, 2, props=forged + [(h.P_USER, ("", ""))] * 1024), 0x87,
         "1025: not shown to the handler, which refuses it (PUBACK 0x87)")
    try:
        peer.read_raw(timeout=0.5)
        t.check(False, "and the broker never gets it")
    except TimeoutError:
        t.check(True, "and the broker never gets it")
    c.close()
    peer.close()


def http_bridge(t, tmp, broker, env):
    """HTTP requests have asks of their own, with no MQTT packet: mgate_properties gives the
    handler NULL (the example then stamps nothing), never another struct read as a packet."""
    http = "MGATE_HTTP_WITHOUT_TLS_"
    port = h.free_port()
    gate = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None,
                   **{http + "HOST": h.HOST, http + "PORT": port, http + "PATH_PREFIX": "/mqtt",
                      http + "TARGET_HOST": h.HOST, http + "TARGET_PORT": broker.port,
                      http + "TARGET_PROTOCOL": "mqtt"}, **env)
    w = h.raw_client(broker.port, 5, "http-watch")
    w.subscribe(1, [("props/#", 1)])
    c = http_client.HTTPConnection(h.HOST, port, timeout=10)
    c.request("POST", "/mqtt/props/h", body=b"hb")
    status = c.getresponse().status
    c.close()
    t.eq(status, 200, "a POST on props/h through the HTTP bridge: 200")
    m = w.recv_publish()
    t.eq((m.topic, m.payload, users(m.props)), ("props/h", b"hb", []), "published, with no properties stamped")
    w.close()
    t.check(gate.alive(), "that mgate still runs")


def split(pkt):
    """(type, flags, body) of whole packet bytes."""
    _, off = h.read_varint(pkt, 1)
    return pkt[0] >> 4, pkt[0] & 0x0F, pkt[off:]


def main():
    h.need_binaries()
    t = h.Checks("properties")
    env = {"MGATE_LOG_LEVEL": "debug", "MGATE_EXAMPLE_PROPERTIES": "1",
           "MGATE_EXAMPLE_REFUSE_AUTH_METHOD": "forbidden"}
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.Broker(tmp, f"max_packet_size {MAX_PACKET}\n")
        gate = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, **env)
        t.case("mosquitto_pub/sub: user properties stamped and removed", cli_stamp, t, gate, broker)
        t.case("properties read: refused by one, 3.1.1 untouched", read_and_refuse, t, gate)
        t.case("a delivery read, not changed: byte for byte", delivery_unchanged, t, gate, broker)
        t.case("grown past the broker's Maximum Packet Size", too_large_up, t, gate, broker)
        t.case("grown past the client's Maximum Packet Size", too_large_down, t, gate, broker)
        t.case("CONNECT properties: an auth method refused", auth_method, t, gate, broker)
        fake = fb.FakeBroker()
        gate2 = h.Mgate(tmp, fake.port, binary=h.EXAMPLE_BIN, **env)
        t.case("what the broker gets: unchanged and stamped", recorded, t, gate2, fake)
        t.case("more user properties than a handler is shown", many_user_properties, t, gate2, fake)
        t.case("an HTTP request: no properties", http_bridge, t, tmp, broker, env)
        t.section("mgate")
        t.check(gate.alive() and gate2.alive(), "mgate still runs")
        fake.close()
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
