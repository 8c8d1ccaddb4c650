#!/usr/bin/python3
"""mgate's own answers have back-pressure (issue 14), with the example handler (mgate-example).

A client with a valid login that never reads floods mgate with packets mgate answers itself:
refused v5 QoS 1 PUBLISHes (PUBACK 0x87), refused SUBSCRIBEs (5.0 and 3.1.1, SUBACK 0x87/0x80),
and SUBSCRIBEs with one allowed and one refused filter (the broker's SUBACK merged with mgate's
code). Each flood runs until mgate stops taking the client's bytes (or a volume is sent), while
mgate's RSS (/proc/PID/status VmRSS) is sampled: its growth must stay under GROWTH_BOUND_KIB (ASAN_GROWTH_BOUND_KIB under ASan).
Meanwhile other clients keep working (a publish/subscribe round trip), and once the flooder
reads it gets every answer, in full, and its session still works.

Also here: a packet in progress has a deadline (a trickle is cut, a slow but complete flow is
not), and a client reusing the id of a SUBSCRIBE still waiting for its SUBACK is refused.

EXHAUSTION_MB (default 32) is the most a flood sends; EXHAUSTION_FULL=1 keeps flooding past
the bound (for measuring the code before the fix; by default a flood stops at 8x the bound).
"""
import os
import select
import socket
import sys
import tempfile
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402

# mgate holds at most OUTPUT_HIGH_WATER (64 KiB) of output per connection, plus one read's
# worth of answers (a 64 KiB read of the smallest packets), the unconsumed input (a read and
# a partial packet) and 32 SUBACK merges: a few hundred KiB. The bound leaves room for the
# allocator's own rounding and for what the round trip of the other clients costs.
GROWTH_BOUND_KIB = 1024
# Under ASan the same floods stop as early but measure 1-4 MiB: its allocator keeps per-size-class
# caches, every allocation carries redzones and RSS includes the shadow of what was touched.
ASAN_GROWTH_BOUND_KIB = 8192
BUDGET = int(os.environ.get("EXHAUSTION_MB", "32")) << 20
FULL = os.environ.get("EXHAUSTION_FULL") == "1"
STUCK_S = 1.5  # no byte taken for this long: mgate stopped reading the flooder
MAX_FLOOD_S = 30.0


def parse_all(buf):
    """Every whole packet in buf as (type, body) and the number of bytes they took."""
    out, i, n = [], 0, len(buf)
    while i + 2 <= n:
        rl, mul, j = 0, 1, i + 1
        while j < n:
            b = buf[j]
            rl += (b & 0x7F) * mul
            mul *= 128
            j += 1
            if not b & 0x80:
                break
        else:
            break
        if j + rl > n:
            break
        out.append((buf[i] >> 4, bytes(buf[j:j + rl])))
        i = j + rl
    return out, i


class Flooder:
    """A logged-in raw client with a tiny receive buffer that sends without reading."""

    def __init__(self, port, version, cid):
        self.version = version
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(5.0)
        self.sock.connect((h.HOST, port))
        self.sock.sendall(h.connect_packet(version, cid))
        got = b""
        while True:
            pkts, used = parse_all(got)
            if pkts:
                break
            got += self.sock.recv(64)
        if pkts[0][0] != h.CONNACK or pkts[0][1][1] != 0:
            raise AssertionError(f"{cid}: no CONNACK 0: {pkts[0]}")
        self.inbuf = bytearray(got[used:])
        self.sock.setblocking(False)
        self.sent = 0
        self.pending = b""

    def flood(self, gate, make, rss0, budget, bound):
        """Send packets from make(i) (all of one length) until mgate takes no more for STUCK_S,
        the budget is sent or (unless FULL) the growth passed 8x the bound. Returns the peak
        RSS growth in KiB and the number of whole packets sent."""
        plen = len(make(1))
        batch = 4096
        i, peak = 0, 0
        t0 = last_progress = time.monotonic()
        chunk = b""
        while self.sent < budget and time.monotonic() - t0 < MAX_FLOOD_S:
            if not chunk:
                chunk = b"".join(make(i + k) for k in range(batch))
                i += batch
            _, w, _ = select.select([], [self.sock], [], 0.05)
            if w:
                try:
                    n = self.sock.send(chunk)
                except BlockingIOError:
                    n = 0
                if n:
                    self.sent += n
                    chunk = chunk[n:]
                    last_progress = time.monotonic()
            peak = max(peak, gate.rss_kib() - rss0)
            if time.monotonic() - last_progress > STUCK_S:
                break
            if not FULL and peak > 8 * bound:
                break
        self.pending = chunk[:(plen - self.sent % plen) % plen]  # the rest of a packet cut in two
        self.count = self.sent // plen
        peak = max(peak, gate.rss_kib() - rss0)
        return peak, self.count

    def drain(self, want, timeout=30.0):
        """Read (and finish the packet cut in two) until `want` packets came; returns them."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            wl = [self.sock] if self.pending else []
            r, w, _ = select.select([self.sock], wl, [], 0.2)
            if w:
                n = self.sock.send(self.pending)
                self.pending = self.pending[n:]
            if r:
                data = self.sock.recv(1 << 20)
                if not data:
                    break
                self.inbuf += data
                pkts, used = parse_all(self.inbuf)
                del self.inbuf[:used]
                got += pkts
        return got

    def ping(self):
        self.sock.setblocking(True)
        self.sock.settimeout(5.0)
        self.sock.sendall(h.packet(h.PINGREQ, 0, b""))
        got = b""
        while True:
            pkts, _ = parse_all(got)
            if pkts:
                return pkts[0][0] == h.PINGRESP
            data = self.sock.recv(64)
            if not data:
                return False
            got += data

    def close(self):
        self.sock.close()


def round_trip(gate, tag):
    """Another client's message reaches another subscriber (QoS 1) within 5 s."""
    sub = h.raw_client(gate.port, 5, f"rt-sub-{tag}")
    pub = h.raw_client(gate.port, 5, f"rt-pub-{tag}")
    try:
        if sub.subscribe(1, [(f"rt/{tag}", 1)]) != [1]:
            return False
        if pub.publish_wait(f"rt/{tag}", b"round trip", 1, 1) != 0:
            return False
        m = sub.recv_publish(5.0)
        return m.topic == f"rt/{tag}" and m.payload == b"round trip"
    except (TimeoutError, h.Closed, AssertionError):
        return False
    finally:
        sub.close()
        pub.close()


def settle(gate):
    """RSS after a round trip has warmed the allocator (the baseline)."""
    round_trip(gate, "warm")
    time.sleep(0.2)  # let the warm-up sessions' buffers go; nothing signals it
    return gate.rss_kib()


def pid16(i):
    return i % 65535 + 1


def sanitized(binary):
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def flood_env():
    """Under ASan, freed memory waits in a quarantine instead of being reused: without it, RSS
    measures what mgate holds, as in a plain build (redzones still make allocations larger)."""
    if not sanitized(h.EXAMPLE_BIN):
        return {}
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=0"}


def run_flood(t, tmp, broker, name, version, make, answer_ok):
    """One flood, on an mgate of its own (a heap grown by an earlier flood would hide growth):
    bounded growth, others served, every answer once the flooder reads."""
    gate = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_LOG_LEVEL="warn", **flood_env())
    bound = ASAN_GROWTH_BOUND_KIB if sanitized(h.EXAMPLE_BIN) else GROWTH_BOUND_KIB
    rss0 = settle(gate)
    f = Flooder(gate.port, version, f"flood-{name}")
    try:
        peak, count = f.flood(gate, make, rss0, BUDGET, bound)
        print(f"    {name}: sent {f.sent / 1048576:.1f} MiB ({count} packets), RSS {rss0} KiB, "
              f"peak growth {peak} KiB")
        t.check(peak < bound,
                f"{name}: mgate's RSS grew {peak} KiB (< {bound} KiB) for "
                f"{f.sent / 1048576:.1f} MiB sent by a client that never reads")
        t.check(round_trip(gate, name), f"{name}: meanwhile other clients publish and subscribe")
        if peak >= 8 * bound:
            return  # the flooder's answers would take long to read; the bound already failed
        got = f.drain(count)
        t.eq(len(got), count, f"{name}: once it reads, the flooder gets an answer for each packet")
        bad = [p for p in got if not answer_ok(p)]
        t.eq(bad[:3], [], f"{name}: each answer is the expected refusal")
        t.check(f.ping(), f"{name}: and its session still works (PINGREQ answered)")
    finally:
        f.close()
    t.check(gate.alive(), f"{name}: mgate still runs")


def suback_codes(version, body):
    off = 2
    if version == 5:
        _, off = h.props_decode(body, off)
    return list(body[off:])


def floods(t, tmp, broker):
    topic = "flood/forbidden"
    run_flood(t, tmp, broker, "v5 refused QoS 1 PUBLISH", 5,
              lambda i: h.publish_packet(5, topic, b"", 1, pid16(i)),
              lambda p: p[0] == h.PUBACK and p[1][2:3] == b"\x87")
    run_flood(t, tmp, broker, "v5 refused SUBSCRIBE", 5,
              lambda i: h.subscribe_packet(5, pid16(i), [(topic, 1)]),
              lambda p: p[0] == h.SUBACK and suback_codes(5, p[1]) == [0x87])
    run_flood(t, tmp, broker, "3.1.1 refused SUBSCRIBE", 4,
              lambda i: h.subscribe_packet(4, pid16(i), [(topic, 1)]),
              lambda p: p[0] == h.SUBACK and suback_codes(4, p[1]) == [0x80])
    run_flood(t, tmp, broker, "v5 SUBSCRIBE one allowed, one refused", 5,
              lambda i: h.subscribe_packet(5, pid16(i), [("flood/ok", 1), (topic, 1)]),
              lambda p: p[0] == h.SUBACK and suback_codes(5, p[1]) == [1, 0x87])


def merge_id_reused(t, gate):
    """A SUBSCRIBE reusing the id of one still waiting for its merged SUBACK: a protocol error."""
    c = h.raw_client(gate.port, 5, "merge-reuse")
    try:
        both = h.subscribe_packet(5, 7, [("reuse/ok", 1), ("reuse/forbidden", 1)])
        c.send(both + both)  # the second arrives before the broker's SUBACK for the first
        closed, reason = c.expect_disconnect(3.0)
        t.check(closed, "a SUBSCRIBE reusing a pending SUBSCRIBE's id: the connection is closed")
        codes = [suback_codes(5, p.body) for p in c.before_close if p.type == h.SUBACK]
        t.check(codes in ([], [[1, 0x87]]), "with at most the first SUBACK before", c.before_close)
        disc = [p.body[0] for p in c.before_close if p.type == h.DISCONNECT]
        t.eq(disc, [0x82], "and DISCONNECT 0x82 (protocol error)")
    finally:
        c.close()
    c = h.raw_client(gate.port, 5, "merge-sequential")
    try:
        for _ in range(3):
            t.eq(c.subscribe(7, [("reuse/ok", 1), ("reuse/forbidden", 1)]), [1, 0x87],
                 "the same id again after its SUBACK: answered")
    finally:
        c.close()


def trickle(t, slow):
    """CONNECT_TIMEOUT=1s: a packet in progress must be complete within 1 s + its size at 1 KiB/s."""
    c = h.raw_client(slow.port, 5, "trickle", keepalive=0)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        pkt = h.publish_packet(5, "trickle/t", b"x" * 20, 1, 1)
        t0 = time.monotonic()
        for b in pkt:
            try:
                c.send(bytes([b]))
            except OSError:
                break
            r, _, _ = select.select([c.sock], [], [], 0.4)  # a pause under the 1 s deadline
            if r:
                break
        closed, reason = c.expect_disconnect(3.0)
        cut = time.monotonic() - t0
        t.check(closed and cut < 2.5, f"keepalive 0, a PUBLISH sent a byte every 0.4 s: cut after {cut:.1f} s "
                                      f"(deadline 1 s + 38 bytes at 1 KiB/s)")
        t.eq(reason, 0x8D, "with DISCONNECT 0x8D")
    finally:
        c.close()

    c = h.raw_client(slow.port, 5, "slow-but-complete", keepalive=0)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each byte its own segment, now
    w = h.raw_client(slow.port, 5, "slow-watch")
    try:
        w.subscribe(1, [("slowok/#", 1)])
        for k in range(4):
            for b in h.publish_packet(5, f"slowok/{k}", b"y" * 10, 1, k + 1):
                c.send(bytes([b]))
                time.sleep(0.02)  # each packet takes about 0.5 s: under its deadline
            time.sleep(1.3)  # idle longer than the deadline between whole packets: no packet in progress
        acks = [h.ack_reason(5, c.expect(h.PUBACK, 3.0)) for _ in range(4)]
        t.eq(acks, [0] * 4, "byte-at-a-time packets, each complete in time, with idle pauses: all acknowledged")
        t.eq([m.topic for m in w.collect(4, 5.0)], [f"slowok/{k}" for k in range(4)], "and delivered")
        t.check(c.ping(), "the slow client's session is still open")
    finally:
        c.close()
        w.close()


def vm_data_kib(pid):
    """Memory mgate asked for (VmData), touched or not: an allocation made for a claimed size
    shows here before any byte fills it."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1])
    return 0


def send_until_closed(s, data):
    try:
        s.sendall(data)
        return False
    except OSError:
        return True


def announced(t, tmp, broker):
    """A packet's announced size is a claim, not bytes sent: mgate holds what arrived, and before
    its CONNECT was judged a client cannot make it hold more than 64 KiB."""
    gate = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_LOG_LEVEL="warn", **flood_env())
    rss0 = settle(gate)
    socks = []
    head = bytes([h.CONNECT << 4]) + h.varint((1 << 20) - 16)  # a CONNECT just under MAX_PACKET_SIZE, announced
    try:
        cut = 0
        for _ in range(100):
            s = socket.create_connection((h.HOST, gate.port))
            s.settimeout(2.0)
            socks.append(s)
            cut += send_until_closed(s, head + b"\0" * (200 * 1024))
        time.sleep(0.5)
        grown = gate.rss_kib() - rss0
        t.check(grown < 4096, f"100 unauthenticated clients sending 200 KiB of a 1 MiB CONNECT: RSS +{grown} KiB "
                              f"(bound 4096; held, it would be 20 MiB)")
        for s in socks:
            s.settimeout(0.05)
            try:
                cut += s.recv(1) == b""
            except socket.timeout:
                pass  # still open: mgate holds what it sent
            except OSError:
                cut += 1
        t.eq(cut, 100, "each of them was closed (a CONNECT over 64 KiB is refused)")
    finally:
        for s in socks:
            s.close()

    clients = []
    try:
        vm0 = vm_data_kib(gate.proc.pid)
        pub = bytes([h.PUBLISH << 4]) + h.varint((1 << 20) - 100) + b"\0\x03a/b"
        for i in range(100):
            c = h.raw_client(gate.port, 5, f"claim-{i}")
            clients.append(c)
            c.send(pub + b"x" * 200)
        time.sleep(0.3)
        for c in clients:
            c.send(b"x" * 200)  # a second read: the packet in progress is buffered
        time.sleep(0.5)
        grown = vm_data_kib(gate.proc.pid) - vm0
        t.check(grown < 16384, f"100 clients announcing a 1 MiB PUBLISH and sending 400 bytes: mgate asked for "
                               f"+{grown} KiB (bound 16384; the claims would be 100 MiB)")
    finally:
        for c in clients:
            c.close()

    will = {"topic": "big/will", "payload": b"w" * 50000}
    c = h.RawClient(gate.port)
    t.eq(c.connect(5, "big-will", will=will), 0, "a CONNECT of 50 KiB (a large will) is still accepted")
    c.close()
    t.check(gate.alive(), "mgate still runs")
    gate.stop()


def main():
    h.need_binaries()
    t = h.Checks("exhaustion")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.Broker(tmp)
        t.case("floods of answers mgate makes itself", floods, t, tmp, broker)
        t.case("announced sizes: memory follows what arrived", announced, t, tmp, broker)
        gate = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_LOG_LEVEL="warn")
        t.case("SUBSCRIBE id reused while its SUBACK is pending", merge_id_reused, t, gate)
        slow = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_MQTT_WITHOUT_TLS_CONNECT_TIMEOUT="1s")
        t.case("a packet in progress has a deadline", trickle, t, slow)
        t.check(gate.alive() and slow.alive(), "mgate still runs")
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
