#!/usr/bin/python3
"""A broker stopped with SIGSTOP under load (issue 20, Faults).

On loopback: mgate with a plain MQTT listener to mosquitto A, a WebSocket
listener to mosquitto B, and the admin listener. Publishers keep publishing
through mgate to A: QoS 1 (paho, a numbered sequence each) and QoS 0 (raw
sockets writing 1 KiB PUBLISHes as fast as the socket takes them); a paho
subscriber through mgate counts the QoS 1 messages. Then A gets SIGSTOP: it
neither reads nor answers, but its sockets stay open (no FIN, no RST).

Checked:
- mgate's RSS stays within its bound while A is stopped: per pair max packet
  size + read chunk + high water (docs/ARCHITECTURE.md), here
  MAX_PACKET_SIZE 64 KiB + 16 KiB + OUTPUT_HIGH_WATER 64 KiB, times the pairs
  open, over the RSS measured before the load, plus RSS_TOLERANCE_KIB for the
  allocator (glibc keeps freed chunks in its arenas) and stacks; and it levels
  off (the second half of the stop grows by less than PLATEAU_KIB);
- other listeners keep answering while A is stopped: /healthz (200 within
  2 s) and a publish/subscribe round trip over the WebSocket listener to B;
- on SIGCONT everything resumes: every QoS 1 message published before, during
  and after the stop reaches the subscriber (none lost; duplicates, which
  QoS 1 allows, are counted and printed), the QoS 0 publishers' sockets move
  again.
A stop longer than mgate's bound for a peer that takes no data (60 s:
TCP_USER_TIMEOUT, src/net/conn.c; see test_vanish.py) ends the pairs whose
data waits for the stopped broker (its window shut): the long form checks that
too, with a last stop of 90 s (the QoS 0 pairs are closed within 60 + 25 s,
the rest as above).

Quick form: one stop of 15 s (~25 s in all). MGATE_LONG=1: stops of 15, 45 and
90 s (~3 min, 174 s measured).
"""
import os
import select
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness as h  # noqa: E402

LONG = os.environ.get("MGATE_LONG") == "1"
STOPS_S = [15, 45, 90] if LONG else [15]
LIVENESS_S, SLACK_S = 60, 25  # mgate's bound for a peer that takes no data, as in test_vanish.py
Q1_PUBS, Q0_PUBS = 4, 4
Q1_INTERVAL = 0.01          # s between one QoS 1 publisher's messages (100/s each)
MAX_PACKET_KIB, READ_CHUNK_KIB, HIGH_WATER_KIB = 64, 16, 64
PAIR_BOUND_KIB = MAX_PACKET_KIB + READ_CHUNK_KIB + HIGH_WATER_KIB
RSS_TOLERANCE_KIB = 2048    # allocator arenas and thread stacks touched under load
PLATEAU_KIB = 512
WS = "MGATE_MQTT_WS_WITHOUT_TLS_"


class Q1Publisher:
    """A paho client through mgate publishing ("stall/q1/<n>", "<n>:<seq>") at QoS 1 until stopped."""

    def __init__(self, port, n):
        mqtt = h.paho()
        self.n, self.seq, self.infos = n, 0, []
        self.c = mqtt.Client(f"stall-q1-{n}", protocol=mqtt.MQTTv311, clean_session=True)
        self.c.max_inflight_messages_set(20)
        self.c.max_queued_messages_set(0)  # unlimited: paho keeps what the stopped broker cannot take
        self.c.connect(h.HOST, port, 60)
        self.c.loop_start()
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_flag.is_set():
            self.infos.append(self.c.publish(f"stall/q1/{self.n}", f"{self.n}:{self.seq}", 1))
            self.seq += 1
            time.sleep(Q1_INTERVAL)

    def acked(self):
        return sum(1 for i in self.infos if i.is_published())


class Q0Blaster:
    """A raw client writing QoS 0 PUBLISHes of 1 KiB as fast as its socket takes them, without
    ever blocking (a partial write is continued, so the stream stays framed)."""

    def __init__(self, port, n):
        self.c = h.RawClient(port, timeout=10.0)
        assert self.c.connect(4, f"stall-q0-{n}", keepalive=0) == 0, "QoS 0 publisher: no CONNACK 0"
        self.c.sock.setblocking(False)
        self.chunk = h.publish_packet(4, f"stall/q0/{n}", b"z" * 1000) * 64
        self.sent = 0
        self.closed_at = None  # monotonic time its connection ended
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        off = 0
        while not self.stop_flag.is_set():
            _, w, _ = select.select([], [self.c.sock], [], 0.2)
            if not w:
                continue
            try:
                n = self.c.sock.send(self.chunk[off:])
            except BlockingIOError:
                continue
            except OSError:
                self.closed_at = time.monotonic()
                return
            self.sent += n
            off = (off + n) % len(self.chunk)
            time.sleep(0.001)  # leave the CPU to the others on a 2-core machine


def ws_round_trip(port, n):
    """A fresh paho client over the WebSocket listener publishes to itself at QoS 1; returns ""
    or what went wrong."""
    mqtt = h.paho()
    try:
        c = h.PahoClient(port, f"stall-ws-{n}", mqtt.MQTTv311, ws_path="/mqtt")
    except AssertionError as e:
        return str(e)
    try:
        c.subscribe("ws/check", 1)
        c.publish_wait("ws/check", f"ws {n}", 1)
        got = c.wait_messages(1, 5.0)
        return "" if got and got[0].payload == f"ws {n}".encode() else f"got {got}"
    except AssertionError as e:
        return str(e)
    finally:
        c.stop()


def metric(admin_port, name):
    """The sum of a /metrics sample over its label sets (0 when absent, None when no answer)."""
    import http.client  # noqa: PLC0415
    try:
        conn = http.client.HTTPConnection(h.HOST, admin_port, timeout=5.0)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
        conn.close()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def healthz(admin_port):
    import http.client  # noqa: PLC0415
    t0 = time.monotonic()
    try:
        conn = http.client.HTTPConnection(h.HOST, admin_port, timeout=2.0)
        conn.request("GET", "/healthz")
        status = conn.getresponse().status
        conn.close()
    except OSError:
        status = None
    return status, time.monotonic() - t0


def main():
    h.need_binaries()
    t = h.Checks("faults.stall")
    tmp = h.tempfile.mkdtemp(prefix="stall-")
    a = h.start_mosquitto(tmp, "max_queued_messages 0\nmax_inflight_messages 100\n")
    b = h.start_mosquitto(tmp)
    ws_port, admin_port = h.free_ports(2)
    g = h.start_mgate(tmp, a.port, **{
        "MGATE_ADMIN_PORT": admin_port, "MGATE_WORKERS": 1,
        "MGATE_MQTT_WITHOUT_TLS_MAX_PACKET_SIZE": f"{MAX_PACKET_KIB}KiB",
        "MGATE_MQTT_WITHOUT_TLS_OUTPUT_HIGH_WATER": f"{HIGH_WATER_KIB}KiB",
        WS + "HOST": h.HOST, WS + "PORT": ws_port, WS + "TARGET_HOST": h.HOST, WS + "TARGET_PORT": b.port,
        WS + "TARGET_PROTOCOL": "mqtt", WS + "PATH_PREFIX": "/mqtt"})
    h.wait_port(ws_port, 5.0, g.proc)
    h.wait_port(admin_port, 5.0, g.proc)
    mqtt = h.paho()

    sub = h.PahoClient(g.port, "stall-sub", mqtt.MQTTv311)
    sub.c.max_inflight_messages_set(100)
    t.eq(sub.subscribe("stall/q1/#", 1), [1], "subscriber (QoS 1, through mgate) subscribed")
    q1 = [Q1Publisher(g.port, n) for n in range(Q1_PUBS)]
    q0 = [Q0Blaster(g.port, n) for n in range(Q0_PUBS)]
    t.check(h.wait_until(lambda: all(p.c.is_connected() for p in q1), 10), "QoS 1 publishers connected")
    rss0 = g.rss_kib()
    pairs = 1 + Q1_PUBS + Q0_PUBS
    bound = rss0 + pairs * PAIR_BOUND_KIB + RSS_TOLERANCE_KIB
    print(f"  figure: RSS before the load {rss0} KiB; bound while stopped {bound} KiB "
          f"({pairs} pairs x {PAIR_BOUND_KIB} KiB + {RSS_TOLERANCE_KIB} KiB tolerance)", flush=True)
    for p in q1 + q0:
        p.thread.start()
    time.sleep(3)  # the load runs a while before the first stop (nothing to wait for: it is the load)

    for k, stop_s in enumerate(STOPS_S):
        cut = stop_s > LIVENESS_S + SLACK_S
        t.section(f"stop {k + 1} of {len(STOPS_S)}: mosquitto A gets SIGSTOP for {stop_s} s")
        acked0 = sum(p.acked() for p in q1)
        os.kill(a.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        samples, health, ws_errors, n = [], [], [], 0
        half_sent = None
        while time.monotonic() - t0 < stop_s:
            if half_sent is None and time.monotonic() - t0 > stop_s / 2:
                half_sent = sum(p.sent for p in q0)
            samples.append((time.monotonic() - t0, g.rss_kib()))
            if n % 8 == 0:  # every ~2 s
                health.append(healthz(admin_port))
            if n % 20 == 10:  # a few WebSocket round trips per stop
                err = ws_round_trip(ws_port, f"{k}-{n}")
                if err:
                    ws_errors.append(err)
            n += 1
            time.sleep(0.25)
        peak = max(r for _, r in samples)
        mid = max(r for s, r in samples if s <= stop_s / 2)
        late = max(r for s, r in samples if s > stop_s / 2)
        sent_stopped = [p.sent for p in q0]
        q1_during = sum(p.seq for p in q1)
        print(f"  figure: RSS while stopped: peak {peak} KiB (+{peak - rss0} KiB), first half max {mid}, "
              f"second half max {late}; {len(samples)} samples", flush=True)
        print(f"  figure: QoS 1 acknowledged before the stop {acked0}, published so far {q1_during}; "
              f"QoS 0 bytes written so far {sum(sent_stopped)}", flush=True)
        pauses = metric(admin_port, "mgate_backpressure_pauses_total")
        moved = sum(sent_stopped) - half_sent
        print(f"  figure: backpressure pauses so far {pauses:.0f}; QoS 0 bytes the publishers "
              f"could still write in the stop's second half {moved}", flush=True)
        t.check(pauses and pauses > 0, "mgate stopped reading the publishers (backpressure pauses counted)")
        t.check(moved < 1024 * 1024, "the publishers were held back (< 1 MiB written in the stop's second half)")
        if cut:
            ends = [None if p.closed_at is None else round(p.closed_at - t0, 1) for p in q0]
            print(f"  figure: QoS 0 pairs closed by mgate after {ends} s of the stop", flush=True)
            t.check(all(e is not None and e <= LIVENESS_S + SLACK_S for e in ends),
                    f"a stop longer than {LIVENESS_S} s: the pairs with data waiting are closed within "
                    f"{LIVENESS_S}+{SLACK_S} s", f"{ends}")
            t.check("broker closed: Connection timed out" in g.log.text(), "mgate logs why (Connection timed out)")
        t.check(peak <= bound, f"RSS stays within the bound while the broker is stopped ({peak} <= {bound} KiB)")
        t.check(late - mid <= PLATEAU_KIB, f"RSS levels off (second half grows {late - mid} KiB <= {PLATEAU_KIB})")
        t.check(health and all(s == 200 and d < 2.0 for s, d in health),
                f"/healthz answers 200 within 2 s while the broker is stopped ({len(health)} probes)", f"{health}")
        t.eq(ws_errors, [], "the WebSocket listener (to mosquitto B) keeps working while A is stopped")
        t.check(g.alive(), "mgate is alive")

        os.kill(a.proc.pid, signal.SIGCONT)
        t1 = time.monotonic()
        if not cut:
            t.check(h.wait_until(lambda: all(p.sent > s + 64 * 1024 for p, s in zip(q0, sent_stopped)), 30, 0.1),
                    "after SIGCONT every QoS 0 publisher's socket moves again",
                    f"{[p.sent - s for p, s in zip(q0, sent_stopped)]}")
        caught = h.wait_until(lambda: sum(p.acked() for p in q1) >= q1_during, 60, 0.1)
        print(f"  figure: QoS 1 backlog of the stop acknowledged {time.monotonic() - t1:.1f} s after SIGCONT", flush=True)
        t.check(caught, "after SIGCONT the QoS 1 messages published during the stop are acknowledged")
        time.sleep(3)  # the load runs on between stops

    t.section("the end: every QoS 1 message delivered")
    for p in q1 + q0:
        p.stop_flag.set()
    for p in q1 + q0:
        p.thread.join(10)
    total = sum(p.seq for p in q1)
    t.check(h.wait_until(lambda: all(p.acked() == p.seq for p in q1), 60, 0.1),
            f"all {total} QoS 1 publishes acknowledged")
    want = {f"{p.n}:{i}" for p in q1 for i in range(p.seq)}

    def got():
        with sub.cond:
            return [m.payload.decode() for m in sub.messages]
    h.wait_until(lambda: want <= set(got()), 60, 0.2)
    msgs = got()
    lost = want - set(msgs)
    dups = len(msgs) - len(set(msgs))
    print(f"  figure: QoS 1: {total} published, {len(set(msgs))} delivered, {len(lost)} lost, {dups} duplicates; "
          f"QoS 0 bytes written {sum(p.sent for p in q0)}; RSS at the end {g.rss_kib()} KiB", flush=True)
    t.eq(len(lost), 0, "no QoS 1 message lost (before, during and after the stops)")
    for p in q1:
        p.c.disconnect()
        p.c.loop_stop()
    for p in q0:
        p.c.close()
    sub.stop()
    return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
