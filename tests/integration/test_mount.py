#!/usr/bin/python3
"""Mount points: MGATE_<LISTENER>_MOUNT_POINT=tenants/%u/ keeps tenants apart on one broker.

Two tenants, alice and bob, use the same topic names on one anonymous mosquitto and must
never read or write each other's messages, by any route: `#`, `$share/g/#`, wills, retained
messages, v5 topic aliases both ways (the broker->client way against a fake broker, as
mosquitto sends none), UNSUBSCRIBE, MQTT 3.1.1 and 5.0, over TCP and WebSocket. A direct
subscriber on the broker sees the prefixed topics. Usernames the template cannot take
(empty, none, with + # /) are refused with CONNACK 0x86 (3.1.1: 4). A handler's
mgate_session_set_mount_point (the example handler, client id mount-me) replaces the
listener's; a wildcard in it is refused. Raw sockets for exact packets, paho for WebSocket.
"""
import socket
import struct
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402

WS = "MGATE_MQTT_WS_WITHOUT_TLS_"
MOUNT = "tenants/%u/"


def gate_env(broker_port, ws_port):
    return {"MGATE_MQTT_WITHOUT_TLS_MOUNT_POINT": MOUNT,
            WS + "HOST": h.HOST, WS + "PORT": ws_port, WS + "TARGET_HOST": h.HOST,
            WS + "TARGET_PORT": broker_port, WS + "TARGET_PROTOCOL": "mqtt", WS + "PATH_PREFIX": "/mqtt",
            WS + "MOUNT_POINT": MOUNT, "MGATE_LOG_LEVEL": "debug"}


def until(c, last, timeout=5.0, extra=0.3):
    """(topic, payload) c receives up to the one with payload last, and whatever follows
    within `extra` seconds (anything a tenant must not see would come before or with it)."""
    msgs, found = c.collect_until(lambda m: m.payload == last, timeout)
    msgs += c.collect(50, extra)
    return [(m.topic, m.payload) for m in msgs] + ([] if found else [("<missing>", last)])


def tenant(port, version, name, user=None, **kw):
    return h.raw_client(port, version, name, username=user if user is not None else name.split("-")[0], **kw)


def isolation(t, gate, direct, version):
    v = f"v{version}"
    a = tenant(gate.port, version, f"alice-{v}")
    b = tenant(gate.port, version, f"bob-{v}")
    try:
        t.eq(a.subscribe(1, [("#", 1)]), [1], f"{v}: alice subscribes to #")
        t.eq(b.subscribe(1, [("#", 1)]), [1], f"{v}: bob subscribes to #")
        b.publish_wait("room/1", f"b-{v}", 1, 2)
        a.publish_wait("room/1", f"a-{v}", 1, 2)
        t.eq(until(a, f"a-{v}".encode()), [("room/1", f"a-{v}".encode())],
             f"{v}: alice gets her own room/1 (unprefixed) and not bob's")
        t.eq(until(b, f"b-{v}".encode()), [("room/1", f"b-{v}".encode())], f"{v}: bob gets only his own room/1")
        got = until(direct, f"a-{v}".encode())
        t.check(("tenants/bob/room/1", f"b-{v}".encode()) in got and
                ("tenants/alice/room/1", f"a-{v}".encode()) in got,
                f"{v}: the direct subscriber sees tenants/alice/room/1 and tenants/bob/room/1", got)
        # $SYS from a tenant is the tenant's own topic
        a.publish_wait("$SYS/fake", f"sys-{v}", 1, 3)
        t.eq(until(direct, f"sys-{v}".encode()), [(f"tenants/alice/$SYS/fake", f"sys-{v}".encode())],
             f"{v}: alice's $SYS/fake reaches the broker as tenants/alice/$SYS/fake")
        t.eq(until(a, f"sys-{v}".encode()), [("$SYS/fake", f"sys-{v}".encode())],
             f"{v}: ... and comes back to alice's # as $SYS/fake")
        # UNSUBSCRIBE takes the mount point too (else the broker keeps the subscription)
        t.eq(b.subscribe(4, [("u/x", 1)]), [1], f"{v}: bob subscribes to u/x")
        b.send(h.packet(h.UNSUBSCRIBE, 2, struct.pack(">H", 5) + (b"\x00" if version == 5 else b"")
                        + struct.pack(">H", 1) + b"#"))
        b.expect(h.UNSUBACK)
        b.send(h.packet(h.UNSUBSCRIBE, 2, struct.pack(">H", 6) + (b"\x00" if version == 5 else b"")
                        + struct.pack(">H", 3) + b"u/x"))
        b.expect(h.UNSUBACK)
        b.publish_wait("u/x", f"unsub-{v}", 1, 7)
        b.publish_wait("unsub/marker", f"unsub-mark-{v}", 1, 8)
        t.eq(until(direct, f"unsub-mark-{v}".encode())[0], ("tenants/bob/u/x", f"unsub-{v}".encode()),
             f"{v}: bob's u/x reached the broker")
        t.eq(b.collect(5, 0.5), [], f"{v}: after UNSUBSCRIBE # and u/x bob receives nothing")
    finally:
        a.close()
        b.close()


def shared(t, gate, version):
    v = f"v{version}"
    a = tenant(gate.port, version, f"alice-share-{v}")
    b = tenant(gate.port, version, f"bob-share-{v}")
    try:
        t.eq(a.subscribe(1, [("$share/g/#", 1)]), [1], f"{v}: alice subscribes to $share/g/#")
        t.eq(b.subscribe(1, [("$share/g/#", 1)]), [1], f"{v}: bob subscribes to $share/g/# (same group name)")
        for i in range(4):
            b.publish_wait("s/t", f"bs{i}-{v}", 1, 10 + i)
        a.publish_wait("s/t", f"as-{v}", 1, 20)
        t.eq(until(a, f"as-{v}".encode()), [("s/t", f"as-{v}".encode())],
             f"{v}: alice's share group gets none of bob's four messages, only hers")
        t.eq(until(b, f"bs3-{v}".encode()), [("s/t", f"bs{i}-{v}".encode()) for i in range(4)],
             f"{v}: bob's share group gets all his own")
    finally:
        a.close()
        b.close()


def wills(t, gate, direct, version):
    v = f"v{version}"
    a = tenant(gate.port, version, f"alice-willw-{v}")
    b = tenant(gate.port, version, f"bob-willw-{v}")
    try:
        a.subscribe(1, [("status/#", 1)])
        b.subscribe(1, [("status/#", 1)])
        w = h.RawClient(gate.port)
        rc = w.connect(version, f"alice-will-{v}", username="alice",
                       will={"topic": "status/gone", "payload": f"will-{v}", "qos": 1})
        t.eq(rc, 0, f"{v}: alice connects with a will on status/gone")
        w.abort()
        t.eq(until(a, f"will-{v}".encode()), [("status/gone", f"will-{v}".encode())],
             f"{v}: the will arrives at alice's tenant as status/gone")
        t.eq([m for m in until(direct, f"will-{v}".encode()) if m[1] == f"will-{v}".encode()],
             [("tenants/alice/status/gone", f"will-{v}".encode())],
             f"{v}: the broker had it as tenants/alice/status/gone")
        t.eq(b.collect(5, 0.5), [], f"{v}: bob's status/# gets nothing")
    finally:
        a.close()
        b.close()


def response_topic(t, gate, direct):
    """The v5 Response Topic is the tenant's too: on the way up it gets the mount point (a responder
    on the broker answers into the requester's tenant, and alice cannot point one at bob's), on the
    way down it loses it; a will's too. Other properties stay as they came."""
    a = tenant(gate.port, 5, "alice-rt")
    try:
        t.eq(a.subscribe(1, [("reply/#", 1)]), [1], "alice subscribes to reply/#")
        props = [(h.P_RESPONSE_TOPIC, "reply/alice"), (h.P_USER, ("k", "v")), (h.P_CORRELATION, b"\x01")]
        a.publish_wait("req/1", b"rt-up", 1, 2, props=props)
        msgs, _ = direct.collect_until(lambda m: m.payload == b"rt-up", 5.0)
        got = [(m.topic, h.prop(m.props, h.P_RESPONSE_TOPIC), h.prop(m.props, h.P_USER),
                h.prop(m.props, h.P_CORRELATION)) for m in msgs if m.payload == b"rt-up"]
        t.eq(got, [("tenants/alice/req/1", "tenants/alice/reply/alice", ("k", "v"), b"\x01")],
             "the broker gets alice's response topic as tenants/alice/reply/alice, the rest as sent")
        a.publish_wait("req/2", b"rt-cross", 1, 3, props=[(h.P_RESPONSE_TOPIC, "tenants/bob/inbox")])
        msgs, _ = direct.collect_until(lambda m: m.payload == b"rt-cross", 5.0)
        t.eq([h.prop(m.props, h.P_RESPONSE_TOPIC) for m in msgs if m.payload == b"rt-cross"],
             ["tenants/alice/tenants/bob/inbox"], "a response topic naming bob's tenant stays in alice's")
        direct.publish_wait("tenants/alice/reply/alice", b"rt-down", 1, 9,
                            props=[(h.P_RESPONSE_TOPIC, "tenants/alice/next"), (h.P_USER, ("r", "1"))])
        msgs, _ = a.collect_until(lambda m: m.payload == b"rt-down", 5.0)
        got = [(m.topic, h.prop(m.props, h.P_RESPONSE_TOPIC), h.prop(m.props, h.P_USER))
               for m in msgs if m.payload == b"rt-down"]
        t.eq(got, [("reply/alice", "next", ("r", "1"))], "a responder's answer reaches alice with its response "
             "topic unmounted")
        w = h.RawClient(gate.port)
        rc = w.connect(5, "alice-rt-will", username="alice",
                       will={"topic": "status/rt", "payload": "rt-will", "qos": 1,
                             "props": [(h.P_RESPONSE_TOPIC, "status/ack")]})
        t.eq(rc, 0, "alice connects with a will carrying a response topic")
        w.abort()
        msgs, _ = direct.collect_until(lambda m: m.payload == b"rt-will", 5.0)
        t.eq([(m.topic, h.prop(m.props, h.P_RESPONSE_TOPIC)) for m in msgs if m.payload == b"rt-will"],
             [("tenants/alice/status/rt", "tenants/alice/status/ack")], "the will's response topic is mounted too")
    finally:
        a.close()


def retained(t, gate, version):
    v = f"v{version}"
    for user in ("bob", "alice"):
        p = tenant(gate.port, version, f"{user}-ret-{v}")
        p.publish_wait(f"cfg/{v}", f"{user}-cfg", 1, 1, retain=True)
        p.close()
    for user in ("alice", "bob"):
        c = tenant(gate.port, version, f"{user}-retsub-{v}")
        c.subscribe(1, [("cfg/#", 1)])
        msgs = c.collect(5, 1.0)
        t.eq([(m.topic, m.payload, m.retain) for m in msgs], [(f"cfg/{v}", f"{user}-cfg".encode(), True)],
             f"{v}: {user} gets only the retained message of her/his own tenant")
        c.publish_wait(f"cfg/{v}", b"", 1, 2, retain=True)  # clear it
        c.close()


def aliases_up(t, gate, direct):
    a = tenant(gate.port, 5, "alice-alias")
    b = tenant(gate.port, 5, "bob-alias")
    try:
        a.subscribe(1, [("al/#", 1)])
        b.subscribe(1, [("al/#", 1)])
        limit = h.prop(a.connack_props, h.P_TOPIC_ALIAS_MAX, 0)
        t.check(limit >= 2, f"mgate offers topic aliases (Topic Alias Maximum {limit})")
        alias = [(h.P_TOPIC_ALIAS, 1)]
        t.eq(b.publish_wait("al/t", b"b0", 1, 1, alias), 0, "bob binds alias 1 to al/t")
        t.eq(a.publish_wait("al/u", b"a0", 1, 1, alias), 0, "alice binds alias 1 to al/u")
        t.eq(a.publish_wait("", b"a1", 1, 2, alias), 0, "alice: alias-only PUBLISH")
        t.eq(b.publish_wait("", b"b1", 1, 2, alias), 0, "bob: alias-only PUBLISH")
        t.eq(a.publish_wait("al/v", b"a2", 1, 3, alias), 0, "alice rebinds alias 1 to al/v")
        t.eq(a.publish_wait("", b"a3", 1, 4, alias), 0, "alice: alias-only PUBLISH")
        t.eq(until(a, b"a3"), [("al/u", b"a0"), ("al/u", b"a1"), ("al/v", b"a2"), ("al/v", b"a3")],
             "alice receives her aliased messages on her topics, none of bob's")
        t.eq(until(b, b"b1"), [("al/t", b"b0"), ("al/t", b"b1")], "bob receives his, none of alice's")
        got = until(direct, b"a3")
        t.eq([m for m in got if m[0].startswith("tenants/alice/al/")],
             [("tenants/alice/al/u", b"a0"), ("tenants/alice/al/u", b"a1"), ("tenants/alice/al/v", b"a2"),
              ("tenants/alice/al/v", b"a3")], "the broker resolved alice's aliases to her prefixed topics")
    finally:
        a.close()
        b.close()


def bad_users(t, gate, broker):
    mark = broker.log.mark()
    for version, want in ((5, 0x86), (4, 4)):
        for i, user in enumerate(("a+b", "a#", "a/b", "", None)):
            c = h.RawClient(gate.port)
            rc = c.connect(version, f"badu-{version}-{i}", username=user)
            t.eq(rc, want, f"v{version}: username {user!r} refused with CONNACK {want:#x}")
            t.check(c.expect_closed(3.0), "... and closed")
            c.close()
    t.check("badu-" not in broker.log.text(mark), "the broker never saw any of them")


def handler_mount(t, gate, direct):
    c = h.raw_client(gate.port, 5, "mount-me", username="alice")
    try:
        c.subscribe(1, [("h/#", 1)])
        c.publish_wait("h/1", b"hm", 1, 2)
        t.eq([m for m in until(direct, b"hm") if m[1] == b"hm"], [("by-handler/h/1", b"hm")],
             "a handler's mount point (by-handler/) replaces the listener's")
        t.eq(until(c, b"hm"), [("h/1", b"hm")], "... and is stripped on delivery")
    finally:
        c.close()
    c = h.RawClient(gate.port)
    t.eq(c.connect(5, "mount-bad", username="alice"), 0x87,
         "a handler's mount point with a wildcard is refused (the example denies then)")
    c.close()


def websocket(t, gate, ws_port, direct):
    mqtt = h.paho()
    for proto, v in ((mqtt.MQTTv311, 4), (mqtt.MQTTv5, 5)):
        a = h.PahoClient(ws_port, f"alice-ws-{v}", proto, username="alice", ws_path="/mqtt")
        b = h.PahoClient(ws_port, f"bob-ws-{v}", proto, username="bob", ws_path="/mqtt")
        try:
            a.subscribe("#", 1)
            b.subscribe("#", 1)
            b.publish_wait("ws/t", f"wsb{v}".encode())
            a.publish_wait("ws/t", f"wsa{v}".encode())
            got = a.wait_messages(1, 5.0, lambda m: m.payload == f"wsa{v}".encode())
            time.sleep(0.3)
            t.eq([(m.topic, m.payload) for m in a.messages], [("ws/t", f"wsa{v}".encode())],
                 f"WebSocket v{v}: alice gets her ws/t only")
            b.wait_messages(1, 5.0, lambda m: m.payload == f"wsb{v}".encode())
            t.eq([(m.topic, m.payload) for m in b.messages], [("ws/t", f"wsb{v}".encode())],
                 f"WebSocket v{v}: bob gets his ws/t only")
            t.check(got, f"WebSocket v{v}: alice's own message arrived")
            d = until(direct, f"wsa{v}".encode())
            t.check(("tenants/alice/ws/t", f"wsa{v}".encode()) in d, "the broker had it as tenants/alice/ws/t", d)
        finally:
            a.stop()
            b.stop()


class FakeBroker:
    """A v5 broker on loopback that records what mgate sends and, once told, sends PUBLISHes with
    topic aliases and one outside the client's mount point."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((h.HOST, 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.packets = []
        self.conn = None
        self.ready = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    @staticmethod
    def read_packet(conn):
        head = conn.recv(1)
        if not head:
            raise EOFError
        n, mult = 0, 1
        while True:
            byte = conn.recv(1)[0]
            n += (byte & 127) * mult
            mult *= 128
            if byte < 128:
                break
        body = b""
        while len(body) < n:
            chunk = conn.recv(n - len(body))
            if not chunk:
                raise EOFError
            body += chunk
        return h.Packet(head[0] >> 4, head[0] & 15, body)

    def serve(self):
        while True:  # mgate's readiness probe connects and leaves without a byte: the session is the one with a CONNECT
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(10.0)
            try:
                first = self.read_packet(conn)
                break
            except (EOFError, OSError):
                conn.close()
        self.conn = conn
        try:
            self.packets.append(first)  # CONNECT
            self.conn.sendall(h.packet(h.CONNACK, 0, b"\x00\x00" + h.props_encode([(h.P_TOPIC_ALIAS_MAX, 5)])))
            self.ready.set()
            while True:
                p = self.read_packet(self.conn)
                self.packets.append(p)
                if p.type == h.SUBSCRIBE:
                    self.conn.sendall(h.packet(h.SUBACK, 0, p.body[:2] + b"\x00\x01"))
        except (EOFError, OSError):
            pass

    def send(self, data):
        self.conn.sendall(data)

    def close(self):
        self.sock.close()
        if self.conn:
            self.conn.close()


def connect_will_topic(body):
    """The will topic of a v5 CONNECT's body."""
    off = 2 + struct.unpack_from(">H", body, 0)[0] + 4  # protocol name, level, flags, keepalive
    _, off = h.props_decode(body, off)
    off += 2 + struct.unpack_from(">H", body, off)[0]  # client id
    _, off = h.props_decode(body, off)  # will properties
    tl = struct.unpack_from(">H", body, off)[0]
    return body[off + 2:off + 2 + tl].decode()


def resolve(msgs):
    """(topic, payload) of PUBLISHes as their receiver resolves topic aliases."""
    bound, out = {}, []
    for m in msgs:
        alias = h.prop(m.props, h.P_TOPIC_ALIAS)
        if m.topic and alias:
            bound[alias] = m.topic
        out.append((m.topic or bound.get(alias, "<unknown alias>"), m.payload))
    return out


def aliases_down(t, tmp):
    fb = FakeBroker()
    try:
        admin = h.free_port()
        g = h.Mgate(tmp, fb.port, binary=h.EXAMPLE_BIN, MGATE_MQTT_WITHOUT_TLS_MOUNT_POINT=MOUNT,
                    MGATE_LOG_LEVEL="debug", MGATE_ADMIN_PORT=admin)
        c = h.RawClient(g.port)
        rc = c.connect(5, "alice-down", username="alice", props=[(h.P_TOPIC_ALIAS_MAX, 5)],
                       will={"topic": "w/t", "payload": b"x"})
        t.eq(rc, 0, "alice connects through mgate to the fake broker")
        t.check(fb.ready.wait(5.0), "the fake broker got the CONNECT")
        t.eq(connect_will_topic(fb.packets[0].body), "tenants/alice/w/t",
             "the CONNECT reaches the broker with the will topic prefixed")
        c.subscribe(1, [("d/#", 1), ("$share/g/e/+", 1)])
        sub = fb.packets[-1]
        t.eq(sub.type, h.SUBSCRIBE, "the broker got the SUBSCRIBE")
        filters, off = [], 3  # packet id, empty properties
        while off < len(sub.body):
            n = struct.unpack_from(">H", sub.body, off)[0]
            filters.append(sub.body[off + 2:off + 2 + n].decode())
            off += 3 + n
        t.eq(filters, ["tenants/alice/d/#", "$share/g/tenants/alice/e/+"],
             "the SUBSCRIBE's filters carry the mount point ($share: after the group)")
        fb.send(h.publish_packet(5, "tenants/alice/d/1", b"m1", 1, 1, [(h.P_TOPIC_ALIAS, 1)])
                + h.publish_packet(5, "", b"m2", 1, 2, [(h.P_TOPIC_ALIAS, 1)])
                + h.publish_packet(5, "tenants/bob/d/1", b"bob", 1, 3)
                + h.publish_packet(5, "tenants/alice", b"bare", 1, 4)
                + h.publish_packet(5, "tenants/alice/d/2", b"m3", 0, props=[(h.P_TOPIC_ALIAS, 1)])
                + h.publish_packet(5, "", b"m4", 0, props=[(h.P_TOPIC_ALIAS, 1)]))
        msgs = c.collect(10, 2.0)
        t.eq(resolve(msgs), [("d/1", b"m1"), ("d/1", b"m2"), ("d/2", b"m3"), ("d/2", b"m4")],
             "broker aliases resolve to the stripped topics; what lies outside tenants/alice/ never arrives")
        t.eq([m.topic for m in msgs], ["d/1", "", "d/2", ""],
             "alias 1 is rebound to the stripped topics and then sent alone, as the broker did")
        time.sleep(0.3)
        acks = sorted(h.ack_id(p) for p in fb.packets if p.type == h.PUBACK)
        t.eq(acks, [1, 2, 3, 4], "the broker gets a PUBACK for each QoS 1, the refused ones from mgate")
        t.check(g.log.search(r"outside the mount point") is not None, "mgate logs the dropped deliveries")
        # QoS 2 outside the mount point: mgate completes the broker's flow (PUBREC, then PUBCOMP)
        fb.send(h.publish_packet(5, "tenants/bob/q2", b"bob2", 2, 7))
        t.check(h.wait_until(lambda: any(p.type == h.PUBREC and h.ack_id(p) == 7 for p in fb.packets), 3.0),
                "a QoS 2 PUBLISH outside it: mgate answers PUBREC")
        fb.send(h.ack_packet(5, h.PUBREL, 7))
        t.check(h.wait_until(lambda: any(p.type == h.PUBCOMP and h.ack_id(p) == 7 for p in fb.packets), 3.0),
                "... and PUBCOMP to the broker's PUBREL")
        t.eq(c.collect(5, 0.5), [], "the client gets none of it")
        from test_admin import metrics
        m = metrics(admin)
        t.eq(m.get("mgate_mount_dropped_total"), 3.0, "/metrics: mgate_mount_dropped_total 3")
        t.eq(m.get('mgate_publish_refused_total{direction="broker_to_client"}'), 0.0,
             "... not counted as refused by a handler")
        # client -> broker: the broker learns the mounted topic once, then the alias alone
        n = len(fb.packets)
        for i, topic in enumerate(("p/1", "", "p/2", "")):
            c.publish(topic, f"u{i}".encode(), 0, props=[(h.P_TOPIC_ALIAS, 2)])
        h.wait_until(lambda: len([p for p in fb.packets[n:] if p.type == h.PUBLISH]) >= 4, 5.0)
        ups = [h.parse_publish(5, p) for p in fb.packets[n:] if p.type == h.PUBLISH]
        t.eq(resolve(ups), [("tenants/alice/p/1", b"u0"), ("tenants/alice/p/1", b"u1"),
                            ("tenants/alice/p/2", b"u2"), ("tenants/alice/p/2", b"u3")],
             "the client's aliases reach the broker bound to the mounted topics")
        t.eq([m.topic for m in ups], ["tenants/alice/p/1", "", "tenants/alice/p/2", ""],
             "... each topic sent once, then the alias alone")
        c.close()
    finally:
        fb.close()


def config_errors(t, tmp, broker):
    for bad, why in (("tenants/%u", "end with '/'"), ("t/+/", "wildcard"), ("$SYS/%u/", "'\\$'"),
                     ("t/%x/", "'%'"), ("t/%u%c/", "two of")):
        g = h.Mgate(tmp, broker.port, wait=False, MGATE_MQTT_WITHOUT_TLS_MOUNT_POINT=bad)
        rc = g.proc.wait(5.0)
        text = g.log.text()
        t.check(rc != 0 and "MGATE_MQTT_WITHOUT_TLS_MOUNT_POINT" in text, f"MOUNT_POINT={bad!r}: a config error "
                "naming the variable", text[-300:])
    g = h.Mgate(tmp, broker.port, wait=False, MGATE_COAP_WITHOUT_DTLS_PORT=h.free_port(),
                MGATE_COAP_WITHOUT_DTLS_TARGET_HOST=h.HOST, MGATE_COAP_WITHOUT_DTLS_TARGET_PORT=5683,
                MGATE_COAP_WITHOUT_DTLS_MOUNT_POINT="t/%u/")
    rc = g.proc.wait(5.0)
    t.check(rc != 0 and "MGATE_COAP_WITHOUT_DTLS_MOUNT_POINT" in g.log.text(),
            "MOUNT_POINT on the CoAP relay (no MQTT topics): a config error", g.log.text()[-300:])


def coap_bridge(t, tmp, broker, direct):
    from test_coap import ACK, CON, GET, OBSERVE, POST, URI_QUERY, Raw, code, gate
    from test_coap_bridge import answer_of, notifications

    def q(**kw):
        return [(URI_QUERY, f"{k}={v}") for k, v in kw.items()]

    def notes(c, n, timeout):
        """Payloads of the notifications c gets, a retransmission (the same message id) once."""
        seen, out = set(), []
        for r in notifications(c, n, timeout=timeout):
            if r[2] not in seen:
                seen.add(r[2])
                out.append(r[5])
        return out

    g = gate(tmp, broker.port, binary=h.MGATE_BIN, TARGET_PROTOCOL="mqtt", MOUNT_POINT=MOUNT)
    a, b = Raw(g.coap), Raw(g.coap)
    try:
        mark = broker.log.mark()
        for c, user in ((a, "alice"), (b, "bob")):
            mid = c.request(CON, GET, "ps/c/+", token=b"\x41", opts=[(OBSERVE, b"")] + q(u=user, c=f"coap-{user}", q=1))
            r = answer_of(c, mid)
            t.check(r and r[1] == code(2, 5), f"CoAP bridge: {user} observes ps/c/+ (2.05)", r)
        t.check(broker.log.search(r"coap-alice 1 tenants/alice/c/\+", mark) is not None,
                "the broker got alice's observation as tenants/alice/c/+")
        direct.publish_wait("tenants/bob/c/1", b"to-bob", 1, 90)
        direct.publish_wait("tenants/alice/c/1", b"to-alice", 1, 91)
        t.eq(notes(a, 3, 2.0), [b"to-alice"],
             "CoAP bridge: alice is notified of her tenant's c/1 only")
        t.eq(notes(b, 3, 1.0), [b"to-bob"], "CoAP bridge: bob of his only")
        a2 = Raw(g.coap)  # another peer of alice's (the observer's answer_of would drop the notification)
        mid = a2.request(CON, POST, "ps/c/2", b"from-alice", token=b"\x42", opts=q(u="alice", c="coap-alice2", q=1))
        r = answer_of(a2, mid)
        a2.close()
        t.check(r and r[1] == code(2, 4), "CoAP bridge: alice POSTs ps/c/2 from another device (2.04)", r)
        t.check(("tenants/alice/c/2", b"from-alice") in until(direct, b"from-alice"),
                "... which the broker has as tenants/alice/c/2")
        t.eq(notes(a, 3, 2.0), [b"from-alice"], "... and alice's observation gets it")
        t.eq([p for p in notes(b, 3, 0.5) if p != b"to-bob"], [], "... and bob's does not")
        for user in ("a+b", "a/b", None):
            c = Raw(g.coap)
            mid = c.request(CON, POST, "ps/c/3", b"bad", token=b"\x43",
                            opts=q(c="coap-bad", q=1, **({"u": user} if user is not None else {})))
            r = answer_of(c, mid)
            t.check(r and r[1] == code(4, 1), f"CoAP bridge: username {user!r} refused (4.01)", r)
            c.close()
        t.check("coap-bad" not in broker.log.text(mark), "the broker never saw those clients")
        mark = broker.log.mark()
        mid = a.request(CON, GET, "ps/c/+", token=b"\x41", opts=[(OBSERVE, b"\x01")] + q(u="alice", c="coap-alice"))
        t.check((answer_of(a, mid) or [0, 0])[1] == code(2, 5), "CoAP bridge: alice deregisters (2.05)")
        t.check(broker.log.wait(r"UNSUBSCRIBE from coap-alice", 5.0, mark), "the broker got the UNSUBSCRIBE")
        direct.publish_wait("tenants/alice/c/4", b"after", 1, 92)
        t.eq(notifications(a, 1, timeout=1.0), [], "nothing for alice after it")
        t.check(broker.log.search(r"Sending PUBLISH to coap-alice .*tenants/alice/c/4", mark) is None,
                "... the broker itself no longer sends alice's bridge tenants/alice/c/4 (the filter was mounted)")
    finally:
        a.close()
        b.close()
        g.stop()


def http_bridge(t, tmp, broker, direct):
    from test_http_bridge import basic, post
    port = h.free_port()
    hp = "MGATE_HTTP_WITHOUT_TLS_"
    h.Mgate(tmp, broker.port, binary=h.MGATE_BIN, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None,
            **{hp + "HOST": h.HOST, hp + "PORT": port, hp + "PATH_PREFIX": "/mqtt", hp + "TARGET_HOST": h.HOST,
               hp + "TARGET_PORT": broker.port, hp + "TARGET_PROTOCOL": "mqtt", hp + "MOUNT_POINT": MOUNT})
    st, _, _ = post(port, "/mqtt/h/1?qos=1&clientid=http-alice", b"http-alice", {"Authorization": basic("alice", "x")})
    t.eq(st, 200, "HTTP bridge: alice POSTs /mqtt/h/1 (200)")
    st, _, _ = post(port, "/mqtt/h/1?qos=1&clientid=http-bob", b"http-bob", {"Authorization": basic("bob", "x")})
    t.eq(st, 200, "HTTP bridge: bob POSTs /mqtt/h/1 (200)")
    got = until(direct, b"http-bob")
    t.check(("tenants/alice/h/1", b"http-alice") in got and ("tenants/bob/h/1", b"http-bob") in got,
            "the broker has them as tenants/alice/h/1 and tenants/bob/h/1", got)
    st, _, _ = post(port, "/mqtt/h/1?qos=1&clientid=http-bad", b"bad", {"Authorization": basic("a+b", "x")})
    t.eq(st, 403, "HTTP bridge: username a+b refused (403)")
    st, _, _ = post(port, "/mqtt/h/1?qos=1&clientid=http-anon", b"anon")
    t.eq(st, 403, "HTTP bridge: no username refused (403)")


def max_packet(t, tmp):
    """A prefix that grows a PUBLISH past the broker's Maximum Packet Size: never sent to it (mosquitto
    would end the connection); the session goes on."""
    small = h.Broker(tmp, "max_packet_size 200\n")
    g = h.Mgate(tmp, small.port, binary=h.MGATE_BIN, MGATE_MQTT_WITHOUT_TLS_MOUNT_POINT=MOUNT)
    w = h.raw_client(small.port, 5, "max-watch")
    w.subscribe(1, [("#", 1)])
    c = tenant(g.port, 5, "alice-max")
    try:
        t.eq(h.prop(c.connack_props, h.P_MAX_PACKET), 200, "the broker's Maximum Packet Size 200 reaches the client")
        # type 1, length 2, topic 2 + 7, id 2, properties 1: 200 bytes as the client sends it
        payload = b"x" * (200 - 1 - 2 - 9 - 2 - 1)
        t.eq(len(h.publish_packet(5, "big/one", payload, 1, 1)), 200, "the test's PUBLISH is 200 bytes")
        d = h.raw_client(small.port, 5, "max-direct")
        d.publish_wait("big/two", payload, 1, 1)
        d.close()
        t.eq([m[0] for m in until(w, payload)], ["big/two"], "the broker takes it from a direct client")
        t.eq(c.publish_wait("big/one", payload, 1, 1), 0x83, "mgate answers it PUBACK 0x83 (not 0x95: no PUBACK code)")
        c.publish_wait("small/one", b"after", 1, 2)
        got = until(w, b"after")
        t.eq([m[0] for m in got], ["tenants/alice/small/one"],
             "the 200-byte PUBLISH, 214 bytes once mounted, never reaches the broker; the next one does")
        t.check(g.log.search(r"exceeds the peer's maximum packet size") is not None, "mgate logs why it was not sent")
        t.check(c.ping(), "the client's session goes on")
    finally:
        c.close()
        w.close()


def main():
    h.need_binaries()
    t = h.Checks("mount")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.Broker(tmp)
        ws_port = h.free_port()
        gate = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, **gate_env(broker.port, ws_port))
        h.wait_port(ws_port, 5.0, gate.proc)
        direct = h.raw_client(broker.port, 5, "direct-watch")
        direct.subscribe(1, [("#", 1)])
        for version in (4, 5):
            t.case(f"v{version}: tenants apart by #, $SYS, UNSUBSCRIBE", isolation, t, gate, direct, version)
            t.case(f"v{version}: $share groups", shared, t, gate, version)
            t.case(f"v{version}: wills", wills, t, gate, direct, version)
            t.case(f"v{version}: retained messages", retained, t, gate, version)
        t.case("v5 topic aliases, client to broker", aliases_up, t, gate, direct)
        t.case("v5 Response Topic", response_topic, t, gate, direct)
        t.case("usernames the template cannot take", bad_users, t, gate, broker)
        t.case("a handler's mount point", handler_mount, t, gate, direct)
        t.case("over WebSocket", websocket, t, gate, ws_port, direct)
        t.case("v5 topic aliases both ways on the wire, deliveries outside the mount point", aliases_down, t, tmp)
        t.case("MOUNT_POINT configuration errors", config_errors, t, tmp, broker)
        t.case("Maximum Packet Size", max_packet, t, tmp)
        t.case("the CoAP bridge", coap_bridge, t, tmp, broker, direct)
        t.case("the HTTP bridge", http_bridge, t, tmp, broker, direct)
        direct.close()
        t.section("mgate")
        t.check(gate.alive(), "mgate still runs")
        t.check(not any(line.get("level") == "error" for line in gate.json_lines()), "no error in mgate's log")
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
