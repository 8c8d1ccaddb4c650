#!/usr/bin/python3
"""Limits per listener: MAX_CONNECTIONS, CONNECTION_RATE_LIMIT (per source address),
PUBLISH_RATE_LIMIT and PUBLISH_BANDWIDTH_LIMIT (per client).

Over a PUBLISH limit, an MQTT 5 client's QoS 1 PUBLISH gets PUBACK 0x97 (quota exceeded: 0x96 is no
PUBACK code) and is not forwarded; a 3.1.1 client, or QoS 0, is slowed by not reading, and every message still
arrives. Every refusal is counted on /metrics.
"""
import subprocess
import tempfile
import time

import socket

import harness as h
from test_admin import metrics
from test_ws import RawWs, ws_env

P = "MGATE_MQTT_WITHOUT_TLS_"


def connections(t, tmp, broker):
    admin = h.free_port()
    g = h.Mgate(tmp, broker.port, MGATE_ADMIN_PORT=admin, **{P + "MAX_CONNECTIONS": 3,
                                                             P + "CONNECTION_RATE_LIMIT": 5})
    held = [h.raw_client(g.port, 4, f"lim-max-{i}") for i in range(3)]
    c = h.RawClient(g.port)
    t.eq(c.connect(4, "lim-max-4"), None, "MAX_CONNECTIONS=3: a 4th client is closed without CONNACK")
    c.close()
    t.check(g.log.search(r"mqtt_without_tls: refusing 127\.0\.0\.1:\d+: MAX_CONNECTIONS reached") is not None,
            "... and mgate logs why")
    held.pop().close()
    t.check(h.wait_until(lambda: metrics(admin).get('mgate_connections{listener="mqtt_without_tls"}') == 2, 3.0),
            "a client leaves: mgate_connections says 2")
    c = h.RawClient(g.port)
    t.eq(c.connect(4, "lim-max-again"), 0, "... and the next client gets in")
    c.close()
    for c in held:
        c.close()
    time.sleep(1.2)  # the rate buckets refill
    ok = 0
    for i in range(12):
        c = h.RawClient(g.port, source="127.0.0.31")
        ok += c.connect(4, f"lim-rate-{i}", timeout=2.0) == 0
        c.close()
        time.sleep(0.02)
    t.check(4 <= ok <= 7, f"CONNECTION_RATE_LIMIT=5: about 5 of 12 quick connections from one address get in ({ok})")
    c = h.RawClient(g.port, source="127.0.0.32")
    t.eq(c.connect(4, "lim-rate-other"), 0, "... another address is not held back by it")
    c.close()
    m = metrics(admin)
    t.eq(m.get('mgate_connections_refused_total{limit="max_connections"}'), 1, "metrics: 1 refused by MAX_CONNECTIONS")
    t.eq(m.get('mgate_connections_refused_total{limit="connection_rate"}'), 12 - ok,
         "metrics: the rest refused by CONNECTION_RATE_LIMIT")


def publish_rate(t, tmp, broker):
    admin = h.free_port()
    g = h.Mgate(tmp, broker.port, MGATE_ADMIN_PORT=admin, **{P + "PUBLISH_RATE_LIMIT": 20})
    sub = h.raw_client(broker.port, 4, "lim-watch")
    t.eq(sub.subscribe(1, [("lim/#", 0)]), [0], "setup: a direct subscriber")
    pub = h.raw_client(g.port, 5, "lim-v5")
    for i in range(60):
        pub.publish("lim/v5", str(i).encode(), 1, i + 1)
    codes = [h.ack_reason(5, pub.expect(h.PUBACK, 5.0)) for _ in range(60)]
    ok, refused = codes.count(0), codes.count(0x97)
    t.eq(ok + refused, 60, f"PUBLISH_RATE_LIMIT=20, v5 QoS 1 burst of 60: each PUBACK is 0 or 0x97 ({ok} + {refused})")
    t.check(15 <= ok <= 30, f"... about the 20 of the burst allowance pass ({ok})")
    got = []
    while True:
        try:
            got.append(int(sub.recv_publish(1.0).payload))
        except TimeoutError:
            break
    t.eq(len(got), ok, "... and exactly those reach the broker")
    pub.close()
    time.sleep(1.1)
    old = h.raw_client(g.port, 4, "lim-311")
    t0 = time.monotonic()
    for i in range(60):
        old.publish("lim/311", str(i).encode(), 0)
    got = []
    while len(got) < 60:
        try:
            got.append(int(sub.recv_publish(6.0).payload))
        except TimeoutError:
            break
    took = time.monotonic() - t0
    t.eq(got, list(range(60)), "3.1.1 QoS 0 burst of 60 over the limit: all arrive, in order")
    t.check(took >= 1.5, f"... slowed by not reading: (60 - 20) / 20 = 2 s ({took:.1f} s)")
    old.close()
    m = metrics(admin)
    t.check(m.get('mgate_publish_limited_total{limit="rate"}', 0) >= refused + 1,
            "metrics: mgate_publish_limited_total{limit=rate} counts them")
    sub.close()


def bandwidth(t, tmp, broker):
    h.Mgate(tmp, broker.port, **{P + "PUBLISH_BANDWIDTH_LIMIT": "10KiB"})
    g = h._gates[-1]
    sub = h.raw_client(broker.port, 4, "lim-bw-watch")
    sub.subscribe(1, [("bw/#", 0)])
    pub = h.raw_client(g.port, 4, "lim-bw-311")
    t0 = time.monotonic()
    for i in range(40):
        pub.publish("bw/311", bytes([i]) * 1024, 0)
    n = 0
    while n < 40:
        try:
            sub.recv_publish(6.0)
            n += 1
        except TimeoutError:
            break
    took = time.monotonic() - t0
    t.eq(n, 40, "PUBLISH_BANDWIDTH_LIMIT=10KiB, 3.1.1: 40 KiB all arrive")
    t.check(took >= 2.5, f"... at about 10 KiB/s after a 10 KiB burst: ~3 s ({took:.1f} s)")
    pub.close()
    time.sleep(1.1)
    pub = h.raw_client(g.port, 5, "lim-bw-v5")
    for i in range(20):
        pub.publish("bw/v5", b"x" * 1024, 1, i + 1)
    codes = [h.ack_reason(5, pub.expect(h.PUBACK, 5.0)) for _ in range(20)]
    t.check(0x97 in codes and 0 in codes, f"v5 QoS 1 over the bandwidth: some PUBACK 0x97 (quota exceeded) ({codes})")
    pub.close()
    sub.close()


def ws_upgrades(t, tmp, broker):
    """MAX_CONNECTIONS on a WebSocket listener counts sockets still upgrading too, and gives
    their place back however the upgrade ends (refused, timed out, dropped)."""
    port = h.free_port()
    ws = "MGATE_MQTT_WS_WITHOUT_TLS_"
    g = h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None,
                **ws_env(broker.port, port), **{ws + "MAX_CONNECTIONS": 2, ws + "CONNECT_TIMEOUT": "1s"})
    def refused_upgrade(path, protocol):
        s = socket.create_connection((h.HOST, port), timeout=5)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n".encode())
        try:
            answer = s.recv(100)
        except OSError:
            answer = b""
        s.close()
        return answer[:12]

    answers = set()
    for i in range(3):  # upgrades that end badly: each must give its place back
        answers.add(refused_upgrade("/elsewhere", "mqtt"))  # 404
        answers.add(refused_upgrade("/mqtt", "nope"))  # 400
        socket.create_connection((h.HOST, port), timeout=5).close()  # nothing sent
        s = socket.create_connection((h.HOST, port), timeout=5)
        s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # half a request, then gone
        s.close()
    # a socket may be closed at accept while the places of the ones before are still taken
    # (MAX_CONNECTIONS=2): the count, not every answer, is what this case is about
    t.check({b"400", b"404"} <= {a[-3:] for a in answers}, "refused upgrades: 404 (path) and 400 (subprotocol)",
            str(answers))
    time.sleep(0.5)
    ok = []
    for i in range(2):
        c = RawWs(port)
        c.send_frame(h.connect_packet(4, f"lim-ws-{i}"))
        ok.append(c.recv_mqtt()[:2] == b"\x20\x02")
        c.s.close()
    t.eq(ok, [True, True], "MAX_CONNECTIONS=2 on ws://: after 12 failed upgrades, 2 clients still get in")
    time.sleep(0.3)
    waiting = [socket.create_connection((h.HOST, port), timeout=5) for _ in range(2)]
    for s in waiting:  # upgrading: half a request (a silent socket is not even accepted: TCP_DEFER_ACCEPT)
        s.sendall(b"GET /mqtt HTTP/1.1\r\n")
    time.sleep(0.3)
    late = socket.create_connection((h.HOST, port), timeout=5)
    late.settimeout(3)
    try:
        late.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
        refused = late.recv(100) == b""
    except OSError:
        refused = True
    t.check(refused, "two sockets still upgrading fill MAX_CONNECTIONS=2: a third is closed at accept")
    t.check(g.log.search(r"refusing 127\.0\.0\.1:\d+: MAX_CONNECTIONS reached") is not None, "... and logged")
    late.close()
    time.sleep(1.5)  # CONNECT_TIMEOUT (1 s) ends the unfinished upgrades
    c = RawWs(port)
    c.send_frame(h.connect_packet(4, "lim-ws-after"))
    t.eq(c.recv_mqtt()[:2], b"\x20\x02", "once they time out, a client gets in again")
    c.s.close()
    for s in waiting:
        s.close()


def wss_handshakes(t, tmp, broker):
    """On a wss:// listener, MAX_CONNECTIONS counts TLS handshakes in progress too (before the
    WebSocket upgrade), and a handshake that ends gives its place back."""
    pki = h.Pki(tmp)
    port = h.free_port()
    ws = "MGATE_MQTT_WS_WITH_TLS_"
    g = h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None,
                **{ws + "HOST": h.HOST, ws + "PORT": port, ws + "TARGET_HOST": h.HOST, ws + "TARGET_PORT": broker.port,
                   ws + "TARGET_PROTOCOL": "mqtt", ws + "CERT_FILE": pki["server.crt"],
                   ws + "KEY_FILE": pki["server.key"], ws + "MAX_CONNECTIONS": 2})

    def hello():  # a socket in its TLS handshake: the first bytes of a ClientHello record
        s = socket.create_connection((h.HOST, port), timeout=5)
        s.sendall(b"\x16\x03\x01\x02\x00\x01")
        return s

    def kept(s):  # accepted and waiting for the rest, not closed at accept
        s.settimeout(0.5)
        try:
            return s.recv(10) != b""
        except socket.timeout:
            return True
        except OSError:
            return False

    for i in range(4):  # handshakes that end: each gives its place back
        hello().close()
    time.sleep(0.3)
    held = [hello(), hello()]
    t.eq([kept(s) for s in held], [True, True], "MAX_CONNECTIONS=2 on wss://: two TLS handshakes in progress")
    late = hello()
    t.check(not kept(late), "... fill it: a third socket is closed at accept")
    late.close()
    held.pop().close()
    time.sleep(0.3)
    again = hello()
    t.check(kept(again), "one handshake ends: the next socket gets in")
    again.close()
    for s in held:
        s.close()
    t.check(g.alive(), "mgate still runs")


def http_connections(t, tmp, broker):
    """MAX_CONNECTIONS on an HTTP listener: a connection that ends gives its place back (its
    session was not counted when it began, so the first one to end made the count wrap and every
    later connection was refused)."""
    port = h.free_port()
    hp = "MGATE_HTTP_WITHOUT_TLS_"
    g = h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None,
                **{hp + "HOST": h.HOST, hp + "PORT": port, hp + "TARGET_HOST": h.HOST, hp + "TARGET_PORT": 9,
                   hp + "MAX_CONNECTIONS": 2})

    def request(s):
        s.sendall(b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")  # any answer (here 502: nothing listens at the target)
        try:
            return s.recv(100)[:9]
        except OSError:
            return b""

    answers = []
    for _ in range(4):  # one after the other: never more than one open
        with socket.create_connection((h.HOST, port), timeout=5) as s:
            answers.append(request(s))
        time.sleep(0.1)
    t.eq(answers, [b"HTTP/1.1 "] * 4, "MAX_CONNECTIONS=2 on HTTP: four connections in turn are each answered")
    held = [socket.create_connection((h.HOST, port), timeout=5) for _ in range(2)]
    t.eq([request(s) for s in held], [b"HTTP/1.1 "] * 2, "two at once are answered")
    late = socket.create_connection((h.HOST, port), timeout=5)
    t.eq(request(late), b"", "... a third at once is closed at accept")
    late.close()
    held.pop().close()
    time.sleep(0.3)
    with socket.create_connection((h.HOST, port), timeout=5) as s:
        t.eq(request(s), b"HTTP/1.1 ", "one leaves: the next is answered")
    for s in held:
        s.close()


def main():
    h.need_binaries()
    t = h.Checks("limits")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.start_mosquitto(tmp)
        t.case("connections", connections, t, tmp, broker)
        t.case("WebSocket upgrades in MAX_CONNECTIONS", ws_upgrades, t, tmp, broker)
        t.case("wss TLS handshakes in MAX_CONNECTIONS", wss_handshakes, t, tmp, broker)
        t.case("HTTP connections in MAX_CONNECTIONS", http_connections, t, tmp, broker)
        t.case("publish rate", publish_rate, t, tmp, broker)
        t.case("bandwidth", bandwidth, t, tmp, broker)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
