#!/usr/bin/python3
"""MQTT over WebSocket (ws://) through mgate to mosquitto's TCP listener.

paho-mqtt with transport="websockets" in 3.1.1 and 5.0 at QoS 0, 1 and 2 (counts, order);
a 300 KiB payload both ways; MQTT packets split over several WebSocket messages and several
packets in one message (a hand-made WebSocket client); the example handler's refusals arrive
with the core's codes; a wrong path and a plain HTTP request are refused; mgate exits cleanly.
"""
import base64
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import urllib.parse
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402
from test_admin import metrics  # noqa: E402

LISTENER_LOG_BURST = 50  # src/session/session.h: lines a second per listener and worker

WS = "MGATE_MQTT_WS_WITHOUT_TLS_"
N = 200


def ws_env(broker_port, port):
    return {WS + "HOST": h.HOST, WS + "PORT": port, WS + "TARGET_HOST": h.HOST,
            WS + "TARGET_PORT": broker_port, WS + "TARGET_PROTOCOL": "mqtt", WS + "PATH_PREFIX": "/mqtt"}


def ws_client(port, client_id, protocol):
    return h.PahoClient(port, client_id, protocol, ws_path="/mqtt")


def refused_code(port, client_id, protocol):
    """The CONNACK code a WebSocket client gets (PahoClient raises on anything but 0)."""
    try:
        ws_client(port, client_id, protocol).stop()
        return 0
    except AssertionError as e:
        return str(e).rsplit(" ", 1)[-1]


class RawWs:
    """A WebSocket client that frames bytes as the test says (masked, binary)."""

    def __init__(self, port, path="/mqtt", protocol="mqtt", origin=None, host=h.HOST, headers=(), tls=None,
                 early=b""):
        self.s = socket.create_connection((h.HOST, port), timeout=5)
        if tls:
            self.s = tls.wrap_socket(self.s, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if protocol:
            req += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        if origin:
            req += f"Origin: {origin}\r\n"
        req += "".join(f"{k}: {v}\r\n" for k, v in headers)
        self.key = key
        self.s.sendall((req + "\r\n").encode() + early)  # early: frames in the same write
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.head = head.decode(errors="replace")
        self.status = self.head.split("\r\n")[0]

    def send_frame(self, payload, opcode=2, fin=True):
        self.s.sendall(RawWs.frame(payload, opcode, fin))

    @staticmethod
    def frame(payload, opcode=2, fin=True):
        mask = os.urandom(4)
        n = len(payload)
        hdr = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack("!Q", n)
        return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise h.Closed()
            self.buf += chunk

    def recv_frame(self):
        return self.recv_frame_bits()[1:3]

    def recv_frame_bits(self):
        """(fin, opcode, payload unmasked, whether it came masked) of the next frame."""
        self._need(2)
        fin, op, masked, n = bool(self.buf[0] & 0x80), self.buf[0] & 0x0F, bool(self.buf[1] & 0x80), self.buf[1] & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + 4 * masked + n)
        key, off = self.buf[off:off + 4 * masked], off + 4 * masked
        data, self.buf = self.buf[off:off + n], self.buf[off + n:]
        if masked:
            data = bytes(b ^ key[i & 3] for i, b in enumerate(data))
        return fin, op, data, masked

    def close_code(self, seconds=3.0):
        """Read until the close frame: its code (None if it had none), or "eof" when the socket
        ended without one, or "timeout". Pings are answered when pong is true."""
        self.s.settimeout(seconds)
        try:
            while True:
                op, d = self.recv_frame()
                if op == 8:
                    return struct.unpack("!H", d[:2])[0] if len(d) >= 2 else None
        except (h.Closed, ConnectionResetError):
            return "eof"
        except socket.timeout:
            return "timeout"

    def connect(self, client_id, version=4):
        self.send_frame(h.connect_packet(version, client_id))
        return self.recv_mqtt()

    def recv_mqtt(self):
        """Bytes of MQTT from binary frames until one whole packet is in."""
        data = b""
        while True:
            op, d = self.recv_frame()
            if op == 2:
                data += d
            if len(data) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(data) and data[i] & 0x80:
                    n += (data[i] & 0x7F) * mult
                    mult *= 128
                    i += 1
                if i < len(data):
                    n += (data[i] & 0x7F) * mult
                    if len(data) >= i + 1 + n:
                        return data


def counts(t, port, name, proto):
    for qos in (0, 1, 2):
        topic = f"ws/{name}/q{qos}"
        sub = ws_client(port, f"ws-sub-{name}-{qos}", proto)
        pub = ws_client(port, f"ws-pub-{name}-{qos}", proto)
        try:
            t.eq(sub.subscribe(topic, qos), [qos], f"v{name} QoS {qos}: SUBACK grants QoS {qos}")
            infos = [pub.publish(topic, str(i).encode(), qos) for i in range(N)]
            for info in infos:
                info.wait_for_publish(20.0)
            got = [int(m.payload) for m in sub.wait_messages(N, 20.0)]
            t.eq(sorted(set(got)), list(range(N)), f"v{name} QoS {qos}: all {N} messages arrive")
            if qos:
                t.eq(got, list(range(N)), f"v{name} QoS {qos}: once each, in order")
        finally:
            sub.stop()
            pub.stop()


def big(t, port):
    mqtt = h.paho()
    c = ws_client(port, "ws-big", mqtt.MQTTv311)
    try:
        t.eq(c.subscribe("ws/big", 1), [1], "300 KiB: subscribed")
        payload = os.urandom(300 * 1024)
        c.publish_wait("ws/big", payload, 1, timeout=10.0)
        msgs = c.wait_messages(1, 10.0)
        t.check(msgs and msgs[0].payload == payload, "300 KiB: the payload comes back intact over WebSocket")
    finally:
        c.stop()


def framing(t, port, broker):
    sub = h.raw_client(broker.port, 4, "ws-frame-watch")
    t.eq(sub.subscribe(1, [("ws/frame/#", 0)]), [0], "framing: a direct subscriber is ready")
    w = RawWs(port)
    t.check("101" in w.status, "framing: the upgrade is accepted (101)", w.status)
    conn = h.connect_packet(4, "ws-frame")
    w.send_frame(conn[:5])
    w.send_frame(conn[5:])  # one CONNECT in two WebSocket messages
    p = w.recv_mqtt()
    t.eq(p[:4], b"\x20\x02\x00\x00", "framing: CONNECT split over two messages gets CONNACK 0")
    early = RawWs(port, early=RawWs.frame(h.connect_packet(4, "ws-frame-early")))
    t.eq(early.recv_mqtt()[:4], b"\x20\x02\x00\x00",
         "framing: a CONNECT frame in the same write as the upgrade request gets CONNACK 0")
    early.s.close()
    two = h.publish_packet(4, "ws/frame/a", b"one") + h.publish_packet(4, "ws/frame/b", b"two")
    w.send_frame(two[:7])
    w.send_frame(two[7:])  # the first PUBLISH split, the second behind it in the same message
    got = []
    for _ in range(2):
        m = h.parse_publish(4, sub.read_packet(3.0))
        got.append((m.topic, m.payload))
    t.eq(got, [("ws/frame/a", b"one"), ("ws/frame/b", b"two")],
         "framing: two PUBLISH across two messages arrive in order")
    w.s.close()


def refusals(t, tmp, broker):
    port = h.free_port()
    h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None,
                **ws_env(broker.port, port))
    # the gate is stopped, and its exit and log checked, by h.finish
    mqtt = h.paho()
    t.eq(refused_code(port, "deny-me", mqtt.MQTTv311), "5", "refusal over WebSocket, 3.1.1: CONNACK 5 (not authorised)")
    t.eq(refused_code(port, "deny-me-5", mqtt.MQTTv5), "135", "refusal over WebSocket, 5.0: CONNACK 0x87")


def connack(mqtt, port, client_id, path, headers, user):
    """The CONNACK codes a 3.1.1 client gets (the first), with these upgrade headers and CONNECT credentials."""
    c = mqtt.Client(client_id, protocol=mqtt.MQTTv311, transport="websockets")
    c.ws_set_options(path=path, headers=headers)
    if user:
        c.username_pw_set(*user)
    rcs = []
    c.on_connect = lambda client, userdata, flags, rc, props=None: rcs.append(rc)
    c.connect(h.HOST, port, 30)
    c.loop_start()
    h.wait_until(lambda: rcs, 5.0)
    c.loop_stop()
    return rcs[:1]


def token(t, tmp):
    """The upgrade's Authorization token is the CONNECT's password when it has none: a broker with
    a password file lets user tok in with the token, and not without it; Basic credentials are its
    username and password."""
    os.chmod(tmp, 0o711)  # mosquitto reads its password file after dropping to user mosquitto
    d = tempfile.mkdtemp(dir=tmp)
    os.chmod(d, 0o755)
    pwfile = os.path.join(d, "passwd")
    r = subprocess.run(["mosquitto_passwd", "-b", "-c", pwfile, "tok", "s3cret"], capture_output=True, timeout=10)
    t.check(r.returncode == 0, "setup: mosquitto_passwd writes the password file", r.stderr)
    os.chmod(pwfile, 0o644)
    broker = h.start_mosquitto(tmp, f"allow_anonymous false\npassword_file {pwfile}\n")
    port = h.free_port()
    h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **ws_env(broker.port, port))
    mqtt = h.paho()
    try:
        for name, headers, want, path in (("with the token", {"Authorization": "Bearer s3cret"}, 0, "/mqtt"),
                                          ("without a token", None, 5, "/mqtt"),
                                          ("with a wrong token", {"Authorization": "Bearer nope"}, 5, "/mqtt"),
                                          ("with ?authorization=", None, 0, "/mqtt?authorization=s3cret"),
                                          ("with a wrong ?authorization=", None, 5, "/mqtt?authorization=no")):
            t.eq(connack(mqtt, port, f"tok-{want}-{len(name)}", path, headers, ("tok",)), [want],
                 f"Authorization token, user tok {name}: CONNACK {want} from the broker")
        # Basic credentials are split into the username and password of a CONNECT that has none, as on
        # the HTTP listener; what the CONNECT carries wins, field by field.
        basic = lambda cred, scheme="Basic ": {"Authorization": scheme + base64.b64encode(cred).decode()}
        for name, headers, user, want in (("Basic tok:s3cret, CONNECT without credentials", basic(b"tok:s3cret"), None, 0),
                                          ("Basic tok:nope, CONNECT without credentials", basic(b"tok:nope"), None, 5),
                                          ("Basic x:s3cret, CONNECT with user tok", basic(b"x:s3cret"), ("tok",), 0),
                                          ("Basic tok:nope, CONNECT with tok/s3cret", basic(b"tok:nope"), ("tok", "s3cret"), 0),
                                          ("basic (any case) tok:s3cret", basic(b"tok:s3cret", "basic  "), None, 0)):
            t.eq(connack(mqtt, port, f"basic-{want}-{len(name)}", "/mqtt", headers, user), [want],
                 f"Authorization {name}: CONNACK {want} from the broker")
        w = RawWs(port, path="/mqtt?authorization=" + urllib.parse.quote(basic(b"tok:s3cret")["Authorization"]),
                  headers=[("Authorization", basic(b"tok:other")["Authorization"])])
        t.check(" 400" in w.status, "Authorization token: Basic credentials beside another parameter: 400", w.status)
        w.s.close()
        for what, path, hdrs in (("the header and the parameter disagree", "/mqtt?authorization=a",
                                  [("Authorization", "Bearer b")]),
                                 ("the parameter twice", "/mqtt?authorization=a&authorization=b", [])):
            w = RawWs(port, path=path, headers=hdrs)
            t.check(" 400" in w.status, f"Authorization token: {what}: 400", w.status)
            w.s.close()
    finally:
        broker.stop()  # the gate is stopped, and its exit and log checked, by h.finish


def origins(t, tmp, broker):
    port = h.free_port()
    h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **ws_env(broker.port, port),
            **{WS + "ALLOWED_ORIGINS": "https://good.example, https://also.example"})
    for origin, ok in (("https://good.example", True), ("https://also.example", True),
                       ("https://evil.example", False), (None, True)):
        w = RawWs(port, origin=origin)
        t.eq("101" in w.status, ok, f"ALLOWED_ORIGINS: Origin {origin} is {'upgraded' if ok else 'refused'}")
        if not ok:
            t.check(" 403" in w.status, f"ALLOWED_ORIGINS: Origin {origin} gets 403", w.status)
        w.s.close()
    # the HTTP listener's rule (http_origin_allowed): an empty Origin is no allowed origin, and two
    # Origin headers are one joined value, which no listed origin equals
    for what, hdrs in (("an empty Origin", [("Origin", "")]),
                       ("an allowed Origin, then another", [("Origin", "https://good.example"),
                                                            ("Origin", "https://evil.example")])):
        w = RawWs(port, headers=hdrs)
        t.check(" 403" in w.status, f"ALLOWED_ORIGINS: {what} gets 403", w.status)
        w.s.close()


def path_prefix(t, tmp, broker):
    """PATH_PREFIX is segment-aware, as on the HTTP listener (http_path_check, one rule): /mqtt
    admits /mqtt, /mqtt/x and /mqtt?q, never /mqttx or /mqtt-evil/x; a prefix ending in / works as
    written; the path is percent-decoded first and a "." or ".." segment is refused (400)."""
    for prefix, cases in (("/mqtt", [("/mqtt", True), ("/mqtt/x", True), ("/mqtt?a=b", True), ("/mqttx", False),
                                     ("/mqtt-evil/x", False), ("/mq", False), ("/", False),
                                     # the HTTP listener's path rule (http_path_check): decoded, then
                                     # no dot segments (400), then the prefix (404)
                                     ("/%6Dqtt", True), ("//mqtt", False), ("/x/../mqtt", 400),
                                     ("/mqtt/../x", 400), ("/./mqtt", 400), ("/mqtt/%2e%2e/x", 400),
                                     ("/mqtt%zz", 400)]),
                          ("/mqtt/", [("/mqtt/", True), ("/mqtt/x", True), ("/mqttx", False),
                                      ("/mqtt-evil/x", False)])):
        port = h.free_port()
        env = ws_env(broker.port, port)
        env[WS + "PATH_PREFIX"] = prefix
        g = h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **env)
        for path, ok in cases:
            w = RawWs(port, path=path)
            want = "101" if ok is True else f" {ok}" if ok else " 404"
            t.check(want in w.status, f"PATH_PREFIX={prefix}: {path} is "
                    f"{'upgraded' if ok is True else f'refused ({want.strip()})'}", w.status)
            w.s.close()
        w = RawWs(port, path=prefix, headers=[("Origin", "")])
        t.check("101" in w.status, f"PATH_PREFIX={prefix}, no ALLOWED_ORIGINS: an empty Origin is upgraded",
                w.status)
        w.s.close()
        g.stop()


def upgrade_log_flood(t, tmp, broker):
    """Refused upgrades (logged before any session exists) are logged within the listener's budget:
    at most LISTENER_LOG_BURST lines a second on a worker, the lines left out counted on a later one;
    /metrics counts every refused answer (mgate_http_responses_total, 4xx)."""
    port, admin, n = h.free_port(), h.free_port(), 300
    g = h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, MGATE_WORKERS=1,
                MGATE_ADMIN_PORT=admin, **ws_env(broker.port, port))
    before = metrics(admin)
    mark = g.log.mark()
    t0 = time.monotonic()
    statuses = []
    for _ in range(n):
        w = RawWs(port, path="/elsewhere")
        statuses.append(w.status.split(" ")[1] if " " in w.status else w.status)
        w.s.close()
    secs = time.monotonic() - t0
    t.eq(statuses, ["404"] * n, f"{n} upgrades outside PATH_PREFIX: 404 each")
    refusal = r'"msg":"[^"]*WebSocket upgrade from'
    h.wait_until(lambda: g.log.count(refusal, mark) >= 1, 2.0)
    lines = g.log.count(refusal, mark)
    bound = LISTENER_LOG_BURST * (int(secs) + 2)
    print(f"  measured: {n} refused upgrades in {secs:.2f} s: {lines} log lines")
    t.check(lines <= bound, f"{n} refused upgrades in {secs:.1f} s: at most {bound} log lines", f"{lines} lines")
    time.sleep(1.05)  # a later second: the next line says how many were left out
    w = RawWs(port, path="/elsewhere")
    w.s.close()
    every = h.wait_until(lambda: [json.loads(x) for x in g.log.text(mark).splitlines()
                                  if "WebSocket upgrade from" in x][:lines + 1], 3.0)
    told = sum(j.get("listener_left_out", 0) for j in every)  # each line: those left out since the last
    t.eq(lines + told, n, "the lines written plus the counts later lines give: every refused upgrade")
    after = metrics(admin)
    key = 'mgate_http_responses_total{code="4xx"}'
    t.eq(after.get(key, 0) - before.get(key, 0), n + 1, "/metrics counts every refused upgrade")


def closed_within(sock, seconds):
    """True when the peer closes sock (EOF or reset) within seconds, whatever it sends first."""
    sock.settimeout(seconds)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def bad_input(t, tmp, broker):
    port = h.free_port()
    h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **ws_env(broker.port, port),
            **{WS + "CONNECT_TIMEOUT": "2s", WS + "MAX_PACKET_SIZE": "64KiB"})
    s = socket.create_connection((h.HOST, port), timeout=5)
    s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n")
    head = s.recv(4096).split(b"\r\n")[0]
    t.check(b" 101" not in head, "an 8 KiB upgrade request is not upgraded", head)
    s.close()
    # The head's buffer starts small and grows as the head arrives: a 3.5 KiB head in 37 pieces
    # (grown three times) is upgraded and carries MQTT; a 4.1 KiB one, sent in pieces, is 431.
    w = RawWs(port, headers=[(f"X-Pad-{i}", "p" * 90) for i in range(36)])
    t.check(" 101 " in w.status, f"a 3.5 KiB upgrade head is upgraded ({w.status})")
    w.send_frame(h.connect_packet(4, "ws-big-head"))
    t.eq(w.recv_mqtt()[:4], b"\x20\x02\x00\x00", "... and its MQTT goes through")
    w.s.close()
    s = socket.create_connection((h.HOST, port), timeout=5)
    req = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4160 + b"\r\n\r\n"
    for i in range(0, len(req), 300):
        s.sendall(req[i:i + 300])
        time.sleep(0.002)
    head = s.recv(4096).split(b"\r\n")[0]
    t.check(b" 431" in head, f"a head of {len(req)} bytes sent in pieces is refused with 431", head)
    s.close()
    s = socket.create_connection((h.HOST, port), timeout=5)
    s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # never finished
    t0 = time.monotonic()
    t.check(closed_within(s, 6.0), "an upgrade request that never ends is closed")
    t.check(time.monotonic() - t0 < 5.0, f"... within the 2 s limit and a margin ({time.monotonic() - t0:.1f} s)")
    s.close()
    w = RawWs(port)
    w.send_frame(h.connect_packet(4, "ws-oversize"))
    t.eq(w.recv_mqtt()[:4], b"\x20\x02\x00\x00", "oversized: connected first")
    w.send_frame(h.publish_packet(4, "ws/big", b"x" * (100 * 1024)))
    t.check(closed_within(w.s, 3.0), "a 100 KiB PUBLISH over MAX_PACKET_SIZE=64KiB ends the WebSocket")
    w = RawWs(port)
    w.send_frame(b"\xf0\x00garbage")
    t.check(closed_within(w.s, 3.0), "bytes that are not MQTT end the WebSocket")


def slow_reader(t, tmp, broker):
    """A WebSocket client that stops reading: mgate stops reading the broker for it, its memory
    stays bounded, and other clients are not held up."""
    port = h.free_port()
    g = h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **ws_env(broker.port, port))
    lazy = RawWs(port)
    lazy.send_frame(h.connect_packet(4, "ws-lazy"))
    lazy.recv_mqtt()
    lazy.send_frame(h.subscribe_packet(4, 1, [("ws/flood", 0)]))
    lazy.recv_mqtt()
    lazy.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    rss0 = h.rss_kib(g.proc.pid)
    pub = h.raw_client(broker.port, 4, "ws-flooder")
    chunk = os.urandom(10 * 1024)
    for i in range(2000):  # 20 MB toward a client that reads nothing
        pub.publish("ws/flood", chunk, qos=0)
    mqtt = h.paho()
    other = h.PahoClient(port, "ws-other", mqtt.MQTTv311, ws_path="/mqtt")
    t0 = time.monotonic()
    t.eq(other.subscribe("ws/other", 1), [1], "slow reader: another WebSocket client still subscribes")
    other.publish_wait("ws/other", b"hi", 1)
    t.check(other.wait_messages(1, 5.0), "slow reader: ... and gets its message")
    t.check(time.monotonic() - t0 < 3.0, f"slow reader: ... at once ({time.monotonic() - t0:.2f} s)")
    other.stop()
    time.sleep(0.5)
    grew = h.rss_kib(g.proc.pid) - rss0
    t.check(grew < 8 * 1024, f"slow reader: mgate grew {grew} KiB for 20 MB it could not deliver (< 8 MiB)")
    lazy.s.close()
    pub.close()


def ws_broker(t, tmp):
    """TARGET_PROTOCOL=ws: mgate dials the broker's own WebSocket listener (mosquitto's
    `protocol websockets`); what its TCP listener's subscriber sees proves the path."""
    wsport = h.free_port()
    broker = h.start_mosquitto(tmp, f"listener {wsport} {h.HOST}\nprotocol websockets\nsocket_domain ipv4\n"
                                    "allow_anonymous true\n")
    port = h.free_port()
    env = {**ws_env(broker.port, port), WS + "TARGET_PORT": wsport, WS + "TARGET_PROTOCOL": "ws",
           WS + "TARGET_PATH": "/mqtt"}
    h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **env)
    watch = h.raw_client(broker.port, 4, "ws-broker-watch")
    t.eq(watch.subscribe(1, [("wsb/#", 0)]), [0], "WebSocket broker: a direct TCP subscriber is ready")
    mqtt = h.paho()
    for name, proto in (("311", mqtt.MQTTv311), ("5", mqtt.MQTTv5)):
        c = ws_client(port, f"wsb-{name}", proto)
        try:
            t.eq(c.subscribe(f"wsb/{name}", 1), [1], f"WebSocket broker, v{name}: SUBACK through ws -> ws")
            for i in range(50):
                c.publish(f"wsb/{name}", f"{i}".encode(), 1)
            got = [int(m.payload) for m in c.wait_messages(50, 10.0)]
            t.eq(got, list(range(50)), f"WebSocket broker, v{name}: 50 QoS 1 messages come back in order")
        finally:
            c.stop()
        seen = [h.parse_publish(4, watch.read_packet(3.0)).topic for _ in range(50)]
        t.check(all(x == f"wsb/{name}" for x in seen), f"WebSocket broker, v{name}: the broker had them")
    watch.close()
    t.check(broker.log.search(r"New client connected from \S+ as wsb-311") is not None,
            "WebSocket broker: mosquitto logged the client on its WebSocket listener")
    broker.stop()
    # the broker's WebSocket listener is gone: the client hears CONNACK 3
    t.eq(refused_code(port, "wsb-down", mqtt.MQTTv311), "3", "WebSocket broker down: CONNACK 3")


def wss(t, tmp, broker):
    """wss:// and wss with client certificates: mgate's own TLS (the same module, the same checks
    as the MQTT TLS listeners) carrying the WebSocket; the session sees the client's address."""
    pki = h.Pki(tmp)
    mqtt = h.paho()
    for prefix, client_ca in (("MGATE_MQTT_WS_WITH_TLS_", None), ("MGATE_MQTT_WS_WITH_MTLS_", pki["ca.crt"])):
        port = h.free_port()
        env = {prefix + "HOST": h.HOST, prefix + "PORT": port, prefix + "TARGET_HOST": h.HOST,
               prefix + "TARGET_PORT": broker.port, prefix + "TARGET_PROTOCOL": "mqtt",
               prefix + "CERT_FILE": pki["server.crt"], prefix + "KEY_FILE": pki["server.key"]}
        if client_ca:
            env[prefix + "CLIENT_CA_FILE"] = client_ca
            env[prefix + "USE_CN_AS_USERNAME"] = "true"
        g = h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **env)
        kind = "wss+mTLS" if client_ca else "wss"
        cases = (("client", True), ("unknown", False), (None, False)) if client_ca else ((None, True),)
        for cert, ok in cases:
            c = mqtt.Client(f"{kind}-{cert}", transport="websockets")
            c.tls_set(ca_certs=pki["ca.crt"], certfile=pki[f"{cert}.crt"] if cert else None,
                      keyfile=pki[f"{cert}.key"] if cert else None)
            got, rcs = [], []
            c.on_connect = lambda cl, u, f, rc, p=None: (rcs.append(rc), cl.subscribe("wss/t", 1))
            c.on_subscribe = lambda cl, u, mid, granted, p=None: cl.publish("wss/t", b"over wss", 1)
            c.on_message = lambda cl, u, m: got.append(m.payload)
            try:
                c.connect("localhost", port, 30)
                c.loop_start()
                h.wait_until(lambda: got, 3.0)
                c.loop_stop()
            except OSError:
                pass
            what = f"{kind}, certificate {cert}"
            if ok:
                t.eq((rcs[:1], got[:1]), ([0], [b"over wss"]), f"{what}: CONNACK 0 and its message back")
            else:
                t.eq(got, [], f"{what}: refused in the TLS handshake, no MQTT")
        if not client_ca:
            wss_descriptors(t, g, pki)
        if client_ca:
            t.check(g.log.search(r'"peer":"127\.0\.0\.1:\d+","client_id":"wss\+mTLS-client"') is not None,
                    "wss+mTLS: the session logs the client's own address, not the bridge's")
            cn = pki.cn("client.crt")
            t.check(g.log.search(r'"msg":"connect".*"client_id":"wss\+mTLS-client","username":"' + re.escape(cn) + '"')
                    is not None, f"wss+mTLS, USE_CN_AS_USERNAME: the session's username is the certificate's CN {cn!r}")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wss_descriptors(t, g, pki, n=20):
    """A wss:// client costs mgate two descriptors: its own TLS socket, which carries the
    WebSocket, and the broker's (no socketpair behind the TLS)."""
    ctx = ssl.create_default_context(cafile=pki["ca.crt"])
    before = open_fds(g.proc.pid)
    clients = []
    for i in range(n):
        w = RawWs(g.port, path="/", tls=ctx)
        if i == 0:
            t.check("101" in w.status, "wss descriptors: a raw TLS WebSocket client is upgraded", w.status)
        ack = w.connect(f"wss-fd-{i}")[:4]
        if i == 0:
            t.eq(ack, b"\x20\x02\x00\x00", "wss descriptors: ... and gets CONNACK 0")
        clients.append(w)
    h.wait_until(lambda: open_fds(g.proc.pid) - before >= 2 * n, 3.0)
    time.sleep(0.2)  # anything more would have shown up by now
    grown = open_fds(g.proc.pid) - before
    print(f"  measured: {n} wss:// clients: {grown} more descriptors in mgate ({grown / n:.1f} each)")
    t.eq(grown, 2 * n, f"wss:// descriptors: {n} clients hold {2 * n} (2 each: client and broker)")
    for w in clients:
        w.s.close()


def wss_revocation(t, tmp, broker):
    """wss+mTLS with OCSP, then with CRL: the TLS listeners' revocation checks, unchanged; a
    revoked certificate ends in the handshake and the broker never sees the client."""
    pki = h.Pki(tmp)
    h.Responder.root(tmp, pki)
    h.Responder.files(tmp, pki)
    mqtt = h.paho()
    prefix = "MGATE_MQTT_WS_WITH_MTLS_"
    for method in ("ocsp", "crl"):
        port = h.free_port()
        g = h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **{
            prefix + "HOST": h.HOST, prefix + "PORT": port, prefix + "TARGET_HOST": h.HOST,
            prefix + "TARGET_PORT": broker.port, prefix + "TARGET_PROTOCOL": "mqtt",
            prefix + "CERT_FILE": pki["server.crt"], prefix + "KEY_FILE": pki["server.key"],
            prefix + "CLIENT_CA_FILE": pki["ca.crt"], prefix + "CERT_VERIFICATION_METHODS": method})
        for cert, ok in (("client", True), ("revoked", False)):
            mark, bmark = g.log.mark(), broker.log.mark()
            cid = f"wss-{method}-{cert}"
            c = mqtt.Client(cid, transport="websockets")
            c.tls_set(ca_certs=pki["ca.crt"], certfile=pki[f"{cert}.crt"], keyfile=pki[f"{cert}.key"])
            rcs = []
            c.on_connect = lambda cl, u, f, rc, p=None: rcs.append(rc)
            try:
                c.connect("localhost", port, 30)
                c.loop_start()
                h.wait_until(lambda: rcs, 3.0)
                c.loop_stop()
            except OSError:
                pass
            what = f"wss+mTLS, {method.upper()}, {cert}.crt"
            if ok:
                t.eq(rcs[:1], [0], f"{what}: CONNACK 0")
            else:
                t.eq(rcs, [], f"{what}: no CONNACK")
                t.check(g.log.wait(r"TLS handshake failed.*certificate revoked", 3.0, mark) is not None,
                        f"{what}: mgate logs the handshake refused as revoked", g.log.text(mark)[-300:])
                t.check(not broker.saw_client(cid, bmark), f"{what}: the broker never saw it")


def two_listeners(t, tmp):
    """ws:// and wss:// listeners of one process, each to its own broker, with its own
    ALLOWED_ORIGINS: whichever was used first, every connection keeps its own listener's settings
    (whatever the Host header says)."""
    pki = h.Pki(tmp)
    a, b = h.start_mosquitto(tmp), h.start_mosquitto(tmp)
    ws_port, wss_port = h.free_ports(2)
    tls = "MGATE_MQTT_WS_WITH_TLS_"
    g = h.Mgate(tmp, a.port, port=ws_port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **ws_env(a.port, ws_port), **{
        WS + "ALLOWED_ORIGINS": "https://good.example",
        tls + "HOST": h.HOST, tls + "PORT": wss_port, tls + "TARGET_HOST": h.HOST, tls + "TARGET_PORT": b.port,
        tls + "TARGET_PROTOCOL": "mqtt", tls + "PATH_PREFIX": "/other",
        tls + "CERT_FILE": pki["server.crt"], tls + "KEY_FILE": pki["server.key"]})
    mqtt = h.paho()
    for order in (("ws", "wss"), ("wss", "ws")):
        for kind in order:
            cid = f"two-{kind}-{order[0]}"
            c = mqtt.Client(cid, transport="websockets")
            c.ws_set_options(path="/mqtt" if kind == "ws" else "/other",
                             headers={"Origin": "https://good.example"})  # paho sends its own otherwise
            if kind == "wss":
                c.tls_set(ca_certs=pki["ca.crt"])
            rcs = []
            c.on_connect = lambda cl, u, f, rc, p=None: rcs.append(rc)
            c.connect("localhost", ws_port if kind == "ws" else wss_port, 30)
            c.loop_start()
            h.wait_until(lambda: rcs, 3.0)
            c.disconnect()
            c.loop_stop()
            broker, name = (a, "mqtt_ws_without_tls") if kind == "ws" else (b, "mqtt_ws_with_tls")
            t.eq(rcs[:1], [0], f"two listeners, {kind} after {order[0]} first: CONNACK 0")
            t.check(broker.wait_client(cid, 3.0), f"... through its own listener's broker")
            t.check(g.log.search(r'"listener":"' + name + r'","peer":"[^"]+","client_id":"' + cid) is not None,
                    f"... logged on {name}")
    for host in (h.HOST, "mqtt_ws_with_tls"):
        w = RawWs(ws_port, origin="https://evil.example", host=host)
        t.check(" 403" in w.status, f"ws listener after wss use, Host {host}: its own ALLOWED_ORIGINS still refuses",
                w.status)
        w.s.close()
    w = RawWs(ws_port, origin="https://" + "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".example")
    t.check(" 403" in w.status, "an Origin longer than 256 bytes is refused, not taken for none", w.status)
    w.s.close()
    a.stop()
    b.stop()


def bad_requests(t, port):
    w = RawWs(port, path="/elsewhere")
    t.check(" 404" in w.status, "a path outside PATH_PREFIX gets 404", w.status)
    w.s.close()
    s = socket.create_connection((h.HOST, port), timeout=5)
    s.sendall(f"GET /mqtt HTTP/1.1\r\nHost: {h.HOST}\r\n\r\n".encode())
    head = s.recv(4096).split(b"\r\n")[0].decode(errors="replace")
    t.check(" 404" in head, "a plain HTTP request gets 404", head)
    s.close()


def close_codes(t, tmp, broker):
    """Each way mgate ends a WebSocket carries the close code that says why (RFC 6455 7.4.1),
    and a client's close frame is answered and ends the broker side cleanly."""
    port = h.free_port()
    g = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None,
                **ws_env(broker.port, port), **{WS + "MAX_PACKET_SIZE": "64KiB", WS + "CONNECT_TIMEOUT": "1s"})
    w = RawWs(port)
    t.eq(w.connect("deny-me")[:4], b"\x20\x02\x00\x05", "close codes: a refused CONNECT gets CONNACK 5 ...")
    t.eq(w.close_code(), 1008, "... then close 1008 (policy violation)")
    w = RawWs(port)
    w.connect("ws-close-big")
    w.send_frame(h.publish_packet(4, "ws/big", b"x" * (100 * 1024)))
    t.eq(w.close_code(), 1009, "close codes: a PUBLISH over MAX_PACKET_SIZE: 1009 (message too big)")
    w = RawWs(port)
    w.send_frame(b"\xf0\x00garbage")
    t.eq(w.close_code(), 1002, "close codes: bytes that are not MQTT: 1002 (protocol error)")
    w = RawWs(port)
    w.send_frame(h.connect_packet(4, "ws-close-text"), opcode=1)
    t.eq(w.close_code(), 1003, "close codes: a CONNECT in a text frame (MQTT is binary only): 1003")
    w = RawWs(port)
    w.connect("ws-close-text2")
    w.send_frame(h.packet(12, 0, b""), opcode=1)
    t.eq(w.close_code(), 1003, "close codes: a PINGREQ in a text frame after CONNECT: 1003")
    w = RawWs(port)
    t.eq(w.close_code(4.0), 1008, "close codes: no CONNECT within CONNECT_TIMEOUT: 1008")
    w = RawWs(port)
    w.connect("ws-close-disc")
    w.send_frame(h.disconnect_packet(4))
    t.eq(w.close_code(), 1000, "close codes: after the client's DISCONNECT: 1000 (normal)")
    mark = broker.log.mark()
    w = RawWs(port)
    t.eq(w.connect("ws-close-peer")[:4], b"\x20\x02\x00\x00", "client close frame: connected")
    t.check(broker.wait_client("ws-close-peer", 3.0, mark), "client close frame: the broker has the session")
    w.send_frame(struct.pack("!H", 1001) + b"bye", opcode=8)
    t.eq(w.close_code(), 1001, "client close frame 1001: mgate answers with the same code")
    t.check(broker.log.wait(r"Client ws-close-peer (closed its connection|disconnected)", 3.0, mark) is not None,
            "client close frame: the broker side ends too")
    for what, payload in (("of one byte", b"\x03"), ("with code 1005 (never sent)", struct.pack("!H", 1005))):
        w = RawWs(port)
        w.connect(f"ws-close-bad-{len(payload)}")
        w.send_frame(payload, opcode=8)
        t.eq(w.close_code(), 1002, f"a client close frame {what}: answered with 1002 (protocol error)")
    # RFC 6455 8.1: a close reason that is not UTF-8 fails the connection with 1007; a U+0000 or a
    # four-byte character in it is fine.
    for what, reason, want in (("not UTF-8 (a lone continuation byte)", b"bye \x80", 1007),
                               ("not UTF-8 (a surrogate)", b"\xed\xa0\x80", 1007),
                               ("with U+0000 and U+1F600", b"a\x00\xf0\x9f\x98\x80", 1000)):
        w = RawWs(port)
        w.connect(f"ws-close-utf8-{want}-{len(reason)}")
        w.send_frame(struct.pack("!H", 1000) + reason, opcode=8)
        t.eq(w.close_code(), want, f"a client close frame whose reason is {what}: answered with {want}")
    dead = h.free_port()
    port2 = h.free_port()
    h.Mgate(tmp, dead, port=port2, MGATE_MQTT_WITHOUT_TLS_PORT=None, **ws_env(dead, port2))
    w = RawWs(port2)
    t.eq(w.connect("ws-close-nobroker")[:4], b"\x20\x02\x00\x03", "broker down: CONNACK 3 ...")
    t.eq(w.close_code(), 1014, "... then close 1014 (bad gateway)")
    w = RawWs(port)
    w.connect("ws-close-shutdown")
    g.stop()
    t.eq(w.close_code(), 1001, "mgate shutting down: close 1001 (going away)")


def pings(t, tmp, broker, plain_port):
    """WS_PING_INTERVAL: mgate pings a WebSocket that has been silent that long, and closes it
    when no pong comes within WS_PING_TIMEOUT; a client that answers stays."""
    port = h.free_port()
    h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **ws_env(broker.port, port),
            **{WS + "WS_PING_INTERVAL": "1s", WS + "WS_PING_TIMEOUT": "1s"})
    w = RawWs(port)
    w.connect("ws-ping-mute")
    w.s.settimeout(3.0)
    t0 = time.monotonic()
    op, _ = w.recv_frame()
    t.eq(op, 9, f"WS_PING_INTERVAL=1s: a ping comes ({time.monotonic() - t0:.1f} s)")
    t.check(closed_within(w.s, 4.0), "a client that never answers is closed")
    t.check(time.monotonic() - t0 < 3.5, f"... about WS_PING_TIMEOUT after the ping ({time.monotonic() - t0:.1f} s)")
    w = RawWs(port)
    w.connect("ws-ping-polite")
    w.s.settimeout(1.0)
    pings, end = 0, time.monotonic() + 4.5
    try:
        while time.monotonic() < end:
            try:
                op, d = w.recv_frame()
            except socket.timeout:
                continue
            if op == 9:
                pings += 1
                w.send_frame(d, opcode=10)
        w.send_frame(h.packet(12, 0, b""))  # PINGREQ
        w.s.settimeout(3.0)
        alive = w.recv_mqtt()[:2] == b"\xd0\x00"
    except (h.Closed, ConnectionResetError, socket.timeout):
        alive = False
    t.check(pings >= 3, f"a client that answers gets a ping each second ({pings} in 4.5 s)")
    t.check(alive, "... and is still connected after 4.5 s (PINGRESP)")
    w = RawWs(plain_port)
    w.connect("ws-ping-none")
    w.s.settimeout(2.5)
    try:
        op, _ = w.recv_frame()
    except socket.timeout:
        op = None
    t.eq(op, None, "without WS_PING_INTERVAL no ping is sent")
    w.s.close()


def subprotocols(t, g):
    port = g.port
    for proto, want in (("mqtt", "mqtt"), ("mqttv3.1", "mqttv3.1"), ("foo, mqtt", "mqtt"), (None, None)):
        w = RawWs(port, protocol=proto)
        got = re.search(r"(?im)^Sec-WebSocket-Protocol: *(\S+)", w.head)
        t.check("101" in w.status, f"subprotocol {proto}: upgraded", w.status)
        t.eq(got.group(1) if got else None, want, f"subprotocol {proto}: the answer names {want}")
        w.s.close()
    w = RawWs(port, protocol="foo")
    t.check(" 400" in w.status, "a client that offers no MQTT subprotocol gets 400", w.status)
    w.s.close()
    t.check(g.log.wait(r"WebSocket upgrade from 127\.0\.0\.1:\d+ refused \(400\): no supported subprotocol",
                                 2.0) is not None, "... and mgate logs the refusal with the peer and why")


def fake_ws_peer(answer):
    """A fake WebSocket server on a free port, for peers that break the rules: for each
    connection it reads the upgrade request, sends answer(accept) in one write (accept: the right
    Sec-WebSocket-Accept for the request's key; the bytes: a 101 and what follows), waits and
    ends. Returns the listening socket (close it at the end)."""
    import hashlib
    import threading
    ls = socket.create_server((h.HOST, 0))
    ls.settimeout(20)

    def serve():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            with c:
                head = b""
                while b"\r\n\r\n" not in head and (chunk := c.recv(4096)):
                    head += chunk
                key = re.search(rb"(?i)sec-websocket-key: *(\S+)", head).group(1)
                guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
                c.sendall(answer(base64.b64encode(hashlib.sha1(key + guid).digest())))
                time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()
    return ls


def upgraded(accept, tail=b"", more_headers=b""):
    """A 101 with accept (and more_headers), then tail."""
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + more_headers +
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + tail)


def hostile_broker(t, tmp):
    """TARGET_PROTOCOL=ws to a broker that breaks the rules (a fake one): a 101 with a wrong
    accept, the CONNACK in a text frame (MQTT is binary only) or masked (a server never masks):
    each client gets CONNACK 3, the log says why, and mgate goes on."""
    connack = b"\x20\x02\x00\x00"
    tails = {"accept": b"", "text": b"\x81\x04" + connack, "masked": b"\x82\x84\x00\x00\x00\x00" + connack}
    scenario = {"now": ""}
    ls = fake_ws_peer(lambda accept: upgraded(b"A" * 27 + b"=" if scenario["now"] == "accept" else accept,
                                               tails[scenario["now"]], b"Sec-WebSocket-Protocol: mqtt\r\n"))
    port = h.free_port()
    g = h.Mgate(tmp, ls.getsockname()[1], port=port, MGATE_MQTT_WITHOUT_TLS_TARGET_PROTOCOL="ws",
                MGATE_MQTT_WITHOUT_TLS_TARGET_PATH="/mqtt")
    for what, why in (("accept", "the 101 has no matching Sec-WebSocket-Accept"), ("text", None), ("masked", None)):
        scenario["now"] = what
        mark = g.log.mark()
        c = h.RawClient(port)
        c.send(h.connect_packet(4, f"hostile-{what}"))
        try:
            got = c.sock.recv(16)
        except OSError as e:
            got = repr(e)
        t.eq(got, b"\x20\x02\x00\x03", f"a broker's {what} violation: the client gets CONNACK 3")
        c.close()
        if why:
            said = g.log.wait(re.escape("WebSocket broker: " + why), 2.0, mark)
            t.check(said is not None, f"... the log says: {why}")
            m = g.log.wait(r"closing: broker unreachable[^\n]*", 2.0, mark)
            line = m.group(0) if m else ""
            t.check(line and "TLS" not in line, "... and does not blame TLS on a plain ws:// broker", line)
    t.check(g.alive(), "mgate still runs after a hostile broker")
    ls.close()


def main():
    h.need_binaries()
    t = h.Checks("ws")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.start_mosquitto(tmp)
        port = h.free_port()
        g = h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **ws_env(broker.port, port))
        mqtt = h.paho()
        t.case("3.1.1 counts", counts, t, port, "311", mqtt.MQTTv311)
        t.case("5.0 counts", counts, t, port, "5", mqtt.MQTTv5)
        t.case("big payload", big, t, port)
        t.case("framing", framing, t, port, broker)
        t.case("bad requests", bad_requests, t, port)
        t.case("subprotocols", subprotocols, t, g)
        t.case("refusals", refusals, t, tmp, broker)
        t.case("Authorization token", token, t, tmp)
        t.case("allowed origins", origins, t, tmp, broker)
        t.case("PATH_PREFIX by segments", path_prefix, t, tmp, broker)
        t.case("refused upgrades' log lines", upgrade_log_flood, t, tmp, broker)
        t.case("bad input", bad_input, t, tmp, broker)
        t.case("WebSocket broker", ws_broker, t, tmp)
        t.case("a hostile WebSocket broker", hostile_broker, t, tmp)
        t.case("wss", wss, t, tmp, broker)
        t.case("wss revocation", wss_revocation, t, tmp, broker)
        t.case("two listeners", two_listeners, t, tmp)
        t.case("slow reader", slow_reader, t, tmp, broker)
        t.case("close codes", close_codes, t, tmp, broker)
        t.case("pings", pings, t, tmp, broker, port)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
