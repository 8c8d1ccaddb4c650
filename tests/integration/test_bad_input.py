#!/usr/bin/python3
"""Malformed and hostile input, slow peers and a missing broker (handler "log").

Raw sockets send what no real client would: garbage, an impossible remaining
length, oversized packets, a PUBLISH before CONNECT, a second CONNECT, no
CONNECT at all, a wildcard in a PUBLISH topic. A subscriber that never reads
must not make mgate's memory grow while a publisher floods, nor stop other
clients. With the broker down, clients get "server unavailable". mgate serves
normal clients after all of it.
"""
import os
import select
import socket
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402

NEW_CONN = r"New connection from "


def closes(t, gate, data, what, version=4, timeout=3.0):
    c = h.RawClient(gate.port)
    c.version = version
    c.send(data)
    t.check(c.expect_closed(timeout), f"{what}: connection closed")
    c.close()
    return c.before_close


def still_serves(t, gate, what):
    c = h.RawClient(gate.port)
    ok = c.connect(4, f"check-{time.monotonic_ns() % 10**9}") == 0 and c.ping()
    t.check(ok, f"{what}: mgate still serves a normal client")
    c.close()


def garbage(t, gate):
    got = closes(t, gate, b"\xde\xad\xbe\xef" * 8, "garbage bytes as the first packet")
    t.eq([p.type for p in got], [], "nothing is answered to garbage")
    still_serves(t, gate, "after garbage")
    closes(t, gate, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "an HTTP request")
    closes(t, gate, b"\x10\xff\xff\xff\xff\x7f", "a remaining length of 5 bytes")
    c = h.raw_client(gate.port, 4, "long-length")
    c.send(b"\x30\xff\xff\xff\xff\x01")
    t.check(c.expect_closed(3.0), "a remaining length of 5 bytes after CONNECT: connection closed")
    c.close()
    got = closes(t, gate, h.packet(h.CONNECT, 0, h.utf8("MQTT") + bytes([9, 2, 0, 60]) + h.utf8("v9")),
                 "CONNECT with protocol level 9")
    t.check(all(p.type == h.CONNACK and p.body[1] in (1, 0x84) for p in got),
            "protocol level 9: at most a CONNACK 'unacceptable protocol version'", got)
    still_serves(t, gate, "after malformed packets")


def oversized(t, small, broker):
    mark = broker.log.mark()
    c = h.raw_client(small.port, 5, "big-v5")
    c.publish("big/v5", os.urandom(4096), 0)
    closed, reason = c.expect_disconnect(3.0)
    t.check(reason == 0x95, "MAX_PACKET_SIZE=1024, 4 KiB PUBLISH from a v5 client: DISCONNECT 0x95 (packet too large)",
            c.before_close)
    t.check(closed, "then the connection is closed")
    c.close()

    c = h.raw_client(small.port, 4, "big-v4")
    c.publish("big/v4", os.urandom(4096), 1, 1)
    t.check(c.expect_closed(3.0), "4 KiB PUBLISH from a 3.1.1 client: connection closed")
    t.eq([p.type for p in c.before_close], [], "3.1.1: nothing is sent before the close")
    c.close()

    sub = h.raw_client(small.port, 5, "big-down")
    t.eq(sub.subscribe(1, [("bigdown/t", 0)]), [0], "a subscriber through the 1024-byte mgate")
    direct = h.raw_client(broker.port, 4, "big-direct")  # straight to the broker
    direct.publish_wait("bigdown/t", os.urandom(4096), 1, 1)
    direct.close()
    closed = sub.expect_closed(3.0)
    t.check(closed, "a 4 KiB PUBLISH from the broker: the subscriber's connection is closed (limit on either side)")
    t.eq([p.type for p in sub.before_close if p.type == h.PUBLISH], [], "the oversized PUBLISH is not delivered")
    sub.close()

    c = h.raw_client(small.port, 4, "fits-v4")
    rc = c.publish_wait("big/fits", os.urandom(900), 1, 1)
    t.eq(rc, 0, "a 900-byte PUBLISH (under 1024) goes through")
    c.close()
    log = broker.log.text(mark)
    t.check("big/v5" not in log and "big/v4" not in log, "the broker never got an oversized PUBLISH")
    t.check("'big/fits'" in log, "the broker got the one that fits")


MALFORMED = [
    ("PUBLISH QoS 1 with packet id 0", lambda v: h.publish_packet(v, "bad/pid0", b"x", 1, 0)),
    ("PUBLISH with QoS 3", lambda v: h.packet(h.PUBLISH, 0b0110, h.publish_packet(v, "bad/qos3", b"x", 1, 1)[2:])),
    ("PUBLISH topic with invalid UTF-8", lambda v: h.publish_packet(v, b"bad/\xff\xfe", b"x", 0)),
    ("PUBLISH topic with a NUL", lambda v: h.publish_packet(v, "bad/\x00nul", b"x", 0)),
    ("SUBSCRIBE without any filter", lambda v: h.subscribe_packet(v, 1, [])),
    ("SUBSCRIBE with flags 0 instead of 2", lambda v: b"\x80" + h.subscribe_packet(v, 1, [("bad/flags", 0)])[1:]),
    ("SUBSCRIBE with QoS 3", lambda v: h.subscribe_packet(v, 1, [("bad/subqos", 3)])),
    ("SUBSCRIBE to a/#/b", lambda v: h.subscribe_packet(v, 1, [("bad/#/b", 0)])),
    ("PUBLISH whose topic length runs past the packet", lambda v: h.packet(h.PUBLISH, 0, b"\x00\x40bad/short")),
]


def malformed_after_connect(t, gate, broker):
    mark = broker.log.mark()
    for what, build in MALFORMED:
        for version in (4, 5):
            c = h.raw_client(gate.port, version, f"malformed-{version}")
            c.send(build(version))
            closed, reason = c.expect_disconnect(3.0)
            if version == 5:
                t.check(reason in (0x81, 0x82), f"v5 {what}: DISCONNECT 0x81 or 0x82", c.before_close)
            else:
                t.eq(c.before_close, [], f"v4 {what}: nothing sent back")
            t.check(closed, f"v{version} {what}: connection closed")
            c.close()
    log = broker.log.text(mark)
    t.check("bad/" not in log, "the broker never got any of them", [line for line in log.splitlines() if "bad/" in line][:3])


def broker_not_reading(t, tmp):
    sink = FakeBroker("sink")
    try:
        g = h.Mgate(tmp, sink.port)
        c = h.raw_client(g.port, 4, "into-the-sink")
        rss0 = g.rss_kib()
        c.sock.setblocking(False)
        msg = h.publish_packet(4, "sink/x", b"s" * 1024, 0)
        sent, deadline = 0, time.monotonic() + 5.0
        while sent < 20000 and time.monotonic() < deadline:
            try:
                c.sock.send(msg)  # a whole packet fits or nothing does, while the buffer has room
                sent += 1
            except BlockingIOError:
                if not select.select([], [c.sock], [], 1.0)[1]:
                    break  # nothing taken for 1 s: the backpressure reached the client
        rss1 = g.rss_kib()
        t.check(sent < 20000, f"a broker that stops reading: mgate stops reading the client too ({sent} of 20000 x 1 KiB taken)")
        t.check((rss1 - rss0) / 1024 < 20, f"mgate's RSS stays bounded (+{(rss1 - rss0) / 1024:.1f} MiB)")
        other = h.RawClient(g.port)
        t.eq(other.connect(4, "beside-the-sink"), 0, "another client is still served meanwhile")
        other.close()
        c.close()
    finally:
        sink.close()


def publish_of_size(version, topic, size, qos=1, pid=1):
    """A PUBLISH whose whole encoding (fixed header included) is exactly size bytes."""
    payload_len = size
    while True:
        p = h.publish_packet(version, topic, b"s" * payload_len, qos, pid)
        if len(p) == size:
            return p
        payload_len -= len(p) - size


def size_limit(t, small):
    for version in (4, 5):
        c = h.raw_client(small.port, version, f"exact-{version}")
        c.send(publish_of_size(version, "size/exact", 1024))
        p = c.expect(h.PUBACK, 3.0)
        t.check(h.ack_reason(version, p) < 0x80, f"v{version}: a PUBLISH of exactly MAX_PACKET_SIZE (1024 bytes) is accepted")
        c.send(publish_of_size(version, "size/over", 1025, pid=2))
        closed, reason = c.expect_disconnect(3.0)
        if version == 5:
            t.eq(reason, 0x95, "v5: one byte more (1025): DISCONNECT 0x95")
        else:
            t.eq(c.before_close, [], "v4: one byte more (1025): closed without an answer")
        t.check(closed, f"v{version}: 1025 bytes: connection closed")
        c.close()


def byte_by_byte(t, gate):
    c = h.RawClient(gate.port)
    c.version = 5
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = (h.connect_packet(5, "dribble", props=[(h.P_USER, ("k", "v"))])
            + h.subscribe_packet(5, 1, [("dribble/t", 1)])
            + h.publish_packet(5, "dribble/t", b"one byte at a time", 1, 2, [(h.P_USER, ("x", "y"))]))
    for i in range(len(data)):
        c.send(data[i:i + 1])
        time.sleep(0.001)  # one segment per byte, so mgate reads them apart
    p = c.read_packet(3.0)
    t.check(p.type == h.CONNACK and p.body[1] == 0, "CONNECT, SUBSCRIBE and PUBLISH sent one byte at a time: CONNACK 0", p)
    t.eq(c.expect(h.SUBACK, 3.0).body[-1], 1, "SUBACK")
    m = c.recv_publish(3.0)
    t.check(m.topic == "dribble/t" and m.payload == b"one byte at a time" and h.prop(m.props, h.P_USER) == ("x", "y"),
            "the message comes back intact", m)
    t.eq(h.ack_id(c.expect(h.PUBACK, 3.0)), 2, "PUBACK")
    c.close()


def publish_first(t, gate, broker):
    mark = broker.log.mark()
    got = closes(t, gate, h.publish_packet(4, "early/t", b"too early", 0), "PUBLISH before CONNECT")
    t.eq([p.type for p in got], [], "nothing answered")
    c = h.raw_client(gate.port, 4, "after-early")
    t.check(broker.wait_client("after-early", 5.0, mark) is not None, "a later client reaches the broker")
    c.close()
    t.eq(broker.log.count(NEW_CONN, mark), 1,
         "the broker saw one connection (the later client), none for the PUBLISH-first one")
    t.check("early/t" not in broker.log.text(mark), "the early PUBLISH never reached the broker")


def second_connect(t, gate):
    c = h.raw_client(gate.port, 4, "twice-4")
    c.send(h.connect_packet(4, "twice-4b"))
    t.check(c.expect_closed(3.0), "3.1.1 second CONNECT: connection closed")
    t.eq([p.type for p in c.before_close], [], "3.1.1: nothing sent before the close")
    c.close()
    c = h.raw_client(gate.port, 5, "twice-5")
    c.send(h.connect_packet(5, "twice-5b"))
    closed, reason = c.expect_disconnect(3.0)
    t.check(reason == 0x82, "5.0 second CONNECT: DISCONNECT 0x82 (protocol error)", c.before_close)
    t.check(closed, "5.0: then the connection is closed")
    c.close()


def connect_timeout(t, gate, broker):
    mark = broker.log.mark()
    silent = h.RawClient(gate.port)
    partial = h.RawClient(gate.port)
    t0 = time.monotonic()
    partial.send(h.connect_packet(4, "partial")[:6])
    closed = silent.expect_closed(5.0)
    took = time.monotonic() - t0
    t.check(closed, "a client that never sends CONNECT is closed (CONNECT_TIMEOUT=1s)")
    t.check(0.9 <= took <= 3.0, f"after about the timeout ({took:.2f} s, expected 1-3 s)")
    closed = partial.expect_closed(max(0.1, 3.5 - (time.monotonic() - t0)))
    took = time.monotonic() - t0
    t.check(closed and took <= 3.5, f"a client that sent half a CONNECT is closed too ({took:.2f} s)")
    silent.close()
    partial.close()
    t.eq(broker.log.count(NEW_CONN, mark), 0, "neither reached the broker")


def wildcard_publish(t, gate, broker):
    mark = broker.log.mark()
    c = h.raw_client(gate.port, 5, "wild-5")
    c.publish("wild/+/card", b"x", 1, 1)
    closed, reason = c.expect_disconnect(3.0)
    t.check(reason in (0x81, 0x82), "5.0 PUBLISH to wild/+/card: DISCONNECT 0x81 or 0x82", c.before_close)
    t.check(closed, "then the connection is closed")
    c.close()
    c = h.raw_client(gate.port, 4, "wild-4")
    c.publish("wild/#", b"x", 0)
    t.check(c.expect_closed(3.0), "3.1.1 PUBLISH to wild/#: connection closed")
    c.close()
    t.check("'wild/" not in broker.log.text(mark),
            "the broker never got a wildcard PUBLISH")


def flood(t, gate, broker):
    other_sub = h.raw_client(gate.port, 4, "other-sub")
    t.eq(other_sub.subscribe(1, [("other/#", 1)]), [1], "another subscriber on other/#")
    other_pub = h.raw_client(gate.port, 4, "other-pub")
    stalled = h.RawClient(gate.port, rcvbuf=4096)
    t.eq(stalled.connect(4, "stalled"), 0, "the never-reading subscriber connects (SO_RCVBUF 4 KiB)")
    t.eq(stalled.subscribe(1, [("flood/#", 0)]), [0], "and subscribes to flood/#; then it stops reading")
    flooder = h.raw_client(gate.port, 4, "flooder")
    flooder.sock.settimeout(30.0)

    rss0 = gate.rss_kib()
    peak = [rss0]
    sampling = threading.Event()

    def sample():  # every 5 ms, from the first byte of the flood to a second after its end
        while not sampling.wait(0.005):
            peak[0] = max(peak[0], gate.rss_kib())

    sampler = threading.Thread(target=sample)
    sampler.start()
    mark = broker.log.mark()
    payload = b"f" * 1024
    batch = b"".join(h.publish_packet(4, "flood/x", payload, 0) for _ in range(1000))
    rounds, rounds_ok, lag = 0, 0, 0.0
    t0 = time.monotonic()
    for b in range(20):
        flooder.send(batch)
        if b % 4 == 3:  # meanwhile, the other pair keeps working
            rounds += 1
            s = time.monotonic()
            other_pub.publish_wait("other/t", f"r{b}", 1, b + 1)
            m = other_sub.recv_publish(5.0)
            lag = max(lag, time.monotonic() - s)
            rounds_ok += m.topic == "other/t" and m.payload == f"r{b}".encode()
    took = time.monotonic() - t0
    t.check(flooder.ping(10.0), f"20000 x 1 KiB QoS 0 published ({took:.1f} s) and the publisher is still served")
    t.check(broker.log.wait(r"Outgoing messages are being dropped for client stalled", 5.0, mark) is not None,
            "the stall reached the broker (it drops what mgate does not take): mgate did not buffer the flood")
    rounds += 1  # and once more now that the stall is complete
    other_pub.publish_wait("other/t", b"stalled", 1, 100)
    m = other_sub.recv_publish(5.0)
    rounds_ok += m.topic == "other/t" and m.payload == b"stalled"
    time.sleep(1.0)  # keep sampling while the broker pushes what it still holds
    sampling.set()
    sampler.join()
    peak = peak[0]
    t.eq(rounds_ok, rounds, f"meanwhile another pub/sub pair worked {rounds} times (slowest {lag * 1000:.0f} ms)")
    growth = (peak - rss0) / 1024
    t.check(growth < 20, f"mgate's RSS stayed bounded: {rss0 / 1024:.1f} MiB -> peak {peak / 1024:.1f} MiB "
                         f"(+{growth:.1f} MiB, limit +20)")
    # The stalled subscriber wakes up: its connection still works.
    m = stalled.recv_publish(5.0)
    t.check(m.topic == "flood/x" and len(m.payload) == 1024, "the stalled subscriber, reading again, gets flood messages")
    for c in (stalled, flooder, other_pub, other_sub):
        c.close()


class FakeBroker:
    """A TCP server on loopback that misbehaves. 'silent' reads and never answers; 'garbage' answers
    CONNECT with bytes that are not MQTT; 'sink' answers a (3.1.1) CONNECT with CONNACK 0, then
    never reads again, with a tiny receive buffer."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        if mode == "sink":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind((h.HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        answer = {"garbage": b"\xff\xff\xff\xff\xff garbage", "sink": b"\x20\x02\x00\x00"}.get(self.mode)
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if answer:
                try:
                    conn.settimeout(5.0)
                    conn.recv(64)  # the CONNECT
                    conn.sendall(answer)
                except OSError:
                    pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def bad_brokers(t, tmp):
    silent, garbage = FakeBroker("silent"), FakeBroker("garbage")
    try:
        g = h.Mgate(tmp, silent.port, MGATE_MQTT_WITHOUT_TLS_CONNECT_TIMEOUT="1s")
        for version, want in ((4, 3), (5, 0x88)):
            c = h.RawClient(g.port)
            t0 = time.monotonic()
            rc = c.connect(version, f"unanswered-{version}", timeout=4.0)
            took = time.monotonic() - t0
            t.eq(rc, want, f"a broker that never answers CONNECT: v{version} gets CONNACK {want:#x} (server unavailable)")
            t.check(0.9 <= took <= 3.0, f"... after CONNECT_TIMEOUT=1s ({took:.2f} s)")
            t.check(c.expect_closed(3.0), "then the connection is closed")
            c.close()
        g = h.Mgate(tmp, garbage.port)
        for version in (4, 5):
            c = h.RawClient(g.port)
            rc = c.connect(version, f"garbage-{version}", timeout=4.0)
            t.check(rc is None or rc != 0, f"a broker answering garbage: v{version} is not told it is connected", rc)
            t.check(c.expect_closed(3.0), f"v{version}: the connection is closed")
            c.close()
        t.check(g.alive() and h.port_open(g.port), "mgate survives a broker that sends garbage")
    finally:
        silent.close()
        garbage.close()


def broker_restart(t, tmp):
    b = h.Broker(tmp)
    g = h.Mgate(tmp, b.port)
    c4 = h.raw_client(g.port, 4, "restart-4")
    c5 = h.raw_client(g.port, 5, "restart-5")
    b.stop()
    t.check(c4.expect_closed(3.0), "the broker goes away: the 3.1.1 client is closed")
    t.check(c5.expect_closed(3.0), "the broker goes away: the 5.0 client is closed")
    c = h.RawClient(g.port)
    t.eq(c.connect(4, "restart-none"), 3, "while it is away, a new client gets CONNACK 3")
    c.close()
    b2 = h.Broker(tmp, port=b.port)
    c = h.RawClient(g.port)
    t.eq(c.connect(4, "restart-back"), 0, "once it is back on its port, a new client connects again")
    t.check(b2.wait_client("restart-back", 5.0) is not None, "through the new broker")
    c.close()
    b2.stop()


def broker_down(t, down):
    for version, want in ((4, 3), (3, 3), (5, 0x88)):
        c = h.RawClient(down.port)
        t.eq(c.connect(version, f"nobroker-{version}"), want,
             f"broker down: v{version} gets CONNACK {want:#x} (server unavailable)")
        t.check(c.expect_closed(3.0), f"v{version}: then the connection is closed")
        c.close()


def final(t, gate):
    mqtt = h.paho()
    sub = h.PahoClient(gate.port, "final-sub", mqtt.MQTTv311)
    pub = h.PahoClient(gate.port, "final-pub", mqtt.MQTTv5)
    try:
        sub.subscribe("final/t", 1)
        pub.publish_wait("final/t", b"still here", 1)
        msgs = sub.wait_messages(1, 5.0)
        t.eq([m.payload for m in msgs], [b"still here"], "after everything, a normal pub/sub works")
    finally:
        pub.stop()
        sub.stop()


def main():
    h.need_binaries()
    t = h.Checks("bad_input")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.Broker(tmp)
        gate = h.Mgate(tmp, broker.port, MGATE_HANDLER="log", MGATE_MQTT_WITHOUT_TLS_CONNECT_TIMEOUT="1s")
        small = h.Mgate(tmp, broker.port, MGATE_HANDLER="log", MGATE_MQTT_WITHOUT_TLS_MAX_PACKET_SIZE="1024")
        down = h.Mgate(tmp, h.free_port(), MGATE_HANDLER="log")
        t.case("garbage and impossible lengths", garbage, t, gate)
        t.case("oversized packets", oversized, t, small, broker)
        t.case("MAX_PACKET_SIZE boundary", size_limit, t, small)
        t.case("packets one byte at a time", byte_by_byte, t, gate)
        t.case("PUBLISH before CONNECT", publish_first, t, gate, broker)
        t.case("malformed packets after CONNECT", malformed_after_connect, t, gate, broker)
        t.case("second CONNECT", second_connect, t, gate)
        t.case("no CONNECT in time", connect_timeout, t, gate, broker)
        t.case("wildcard in a PUBLISH topic", wildcard_publish, t, gate, broker)
        t.case("a subscriber that never reads", flood, t, gate, broker)
        t.case("broker down", broker_down, t, down)
        t.case("brokers that misbehave", bad_brokers, t, tmp)
        t.case("broker restart", broker_restart, t, tmp)
        t.case("a broker that stops reading", broker_not_reading, t, tmp)
        t.section("mgate after all of it")
        t.check(gate.alive() and small.alive() and down.alive(), "all three mgate processes still run")
        t.case("normal service", final, t, gate)
        for g in (gate, small, down):
            errors = [line for line in g.json_lines() if line.get("level") == "error"]
            t.eq(errors, [], f"no error in the log of mgate :{g.port}")
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
