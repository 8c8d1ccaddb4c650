#!/usr/bin/python3
"""A lossy, slow network (issue 20, Faults).

client ns <-> mgate ns <-> broker ns (tests/faults/netlink.py): both hops get
50 ms +- 20 ms of delay (so packets reorder), 2 % loss and 5 % of packets sent
ahead of the others, in each direction: `tc netem` where the kernel has it, the
TUN relay where it does not. The same flows run twice in one run, first over
clean links (the same devices and relay, no impairment), then impaired:

- QoS 1 and QoS 2, each with one paho publisher and one paho subscriber in the
  client namespace, both through mgate:
  - a burst (max_inflight 20, as a real client): throughput in messages/s,
    from the first publish to the last delivery;
  - a paced flow (50 messages/s, max_inflight high enough never to queue in
    the client): latency publish -> delivery, p50 and p99.
- Checked: every flow completes; QoS 1 loses nothing (duplicates are allowed
  and counted); QoS 2 delivers each message exactly once; with the relay, the
  impairment really happened (packets dropped and reordered on both hops).

Quick form: 300 messages per burst, 300 paced (~60-90 s in all).
MGATE_LONG=1: 1000 per burst, 1000 paced (~3-4 min: the impaired QoS 2 burst
alone runs at ~20 msgs/s).
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netlink  # noqa: E402
from netlink import harness  # noqa: E402

LONG = os.environ.get("MGATE_LONG") == "1"
BURST = 1000 if LONG else 300
PACED = 1000 if LONG else 300
RATE = 50.0  # paced messages per second
DEADLINE_S = 300 if LONG else 120


class Client:
    """A paho client in the client namespace, through mgate; records each message's arrival."""

    def __init__(self, topo, client_id, inflight):
        mqtt = harness.paho()
        self.c = mqtt.Client(client_id, protocol=mqtt.MQTTv311, clean_session=True)
        self.c.max_inflight_messages_set(inflight)
        self.c.max_queued_messages_set(0)
        self.cond = threading.Condition()
        self.got = []  # (payload, arrival)
        self.connected = threading.Event()
        self.disconnects = 0
        self.c.on_connect = lambda *a: self.connected.set()
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        with netlink.in_ns(topo.client):  # the socket is made in connect()
            self.c.connect(netlink.MGATE_CLIENT_ADDR, 1883, 60)
        self.c.loop_start()
        if not self.connected.wait(30):
            raise AssertionError(f"{client_id}: no CONNACK in 30 s")

    def _on_message(self, client, userdata, msg):
        now = time.monotonic()
        with self.cond:
            self.got.append((msg.payload.decode(), now))
            self.cond.notify_all()

    def _on_disconnect(self, *a):
        self.disconnects += 1

    def subscribe(self, topic, qos):
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos)
        if not done.wait(30):
            raise AssertionError(f"subscribe {topic}: no SUBACK in 30 s")

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def flow(t, topo, label, qos, kind, n):
    """One flow of n messages at qos through mgate; returns its figures (a dict)."""
    topic = f"net/{label}/{kind}/q{qos}"
    sub = Client(topo, f"sub-{label}-{kind}-{qos}", 1000)
    pub = Client(topo, f"pub-{label}-{kind}-{qos}", 20 if kind == "burst" else 1000)
    try:
        sub.subscribe(topic, qos)
        sent = {}
        t0 = time.monotonic()
        for i in range(n):
            if kind == "paced":  # on a schedule, not after a sleep, so the rate holds
                delay = t0 + i / RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            sent[str(i)] = time.monotonic()
            pub.c.publish(topic, str(i), qos)

        def delivered():
            with sub.cond:
                return len({p for p, _ in sub.got}) >= n
        complete = harness.wait_until(delivered, DEADLINE_S, 0.05)
        time.sleep(0.5 if complete else 0)  # a late duplicate would show up now
        with sub.cond:
            got = list(sub.got)
        ids = [p for p, _ in got]
        lost = n - len(set(ids) & set(sent))
        dups = len(ids) - len(set(ids))
        first = {}
        for p, at in got:
            first.setdefault(p, at)
        lat = [(first[p] - sent[p]) * 1000 for p in first if p in sent]
        span = max(first.values()) - t0 if first else float("nan")
        fig = {"label": label, "qos": qos, "kind": kind, "n": n, "lost": lost, "dups": dups,
               "msgs_s": len(first) / span if first else 0.0,
               "p50_ms": netlink.percentile(lat, 50), "p99_ms": netlink.percentile(lat, 99),
               "reconnects": pub.disconnects + sub.disconnects}
        print(f"  figure: {label:9} QoS {qos} {kind:5}: {n} msgs, {fig['msgs_s']:7.1f} msgs/s, "
              f"latency p50 {fig['p50_ms']:7.1f} ms p99 {fig['p99_ms']:7.1f} ms, lost {lost}, duplicates {dups}",
              flush=True)
        t.check(complete, f"{label} QoS {qos} {kind}: all {n} messages delivered", f"lost {lost}")
        t.eq(lost, 0, f"{label} QoS {qos} {kind}: none lost")
        if qos == 2:
            t.eq(dups, 0, f"{label} QoS 2 {kind}: none duplicated (exactly once)")
        t.eq(fig["reconnects"], 0, f"{label} QoS {qos} {kind}: no client lost its connection")
        return fig
    finally:
        pub.stop()
        sub.stop()


def phase(t, topo, label):
    figs = []
    for qos in (1, 2):
        figs.append(flow(t, topo, label, qos, "burst", BURST))
        figs.append(flow(t, topo, label, qos, "paced", PACED))
    return figs


def main():
    binary = os.environ.get("MGATE_BIN", "")
    if not os.access(binary, os.X_OK):
        print("MGATE_BIN must name the built binary (ctest sets it)", file=sys.stderr)
        return 1
    topo = netlink.Topology()
    t = harness.Checks("faults.network")
    netlink.NsBroker(topo, extra_conf="max_inflight_messages 1000\nmax_queued_messages 0\n")
    g = netlink.NsMgate(topo, binary)
    figs = []
    t.section("clean links (same devices, no impairment)")
    topo.set("all", netlink.CLEAN)
    figs += phase(t, topo, "clean")

    t.section(f"impaired links, both hops, both directions: {netlink.IMPAIRED}")
    before = topo.stats()
    topo.set("all", netlink.IMPAIRED)
    figs += phase(t, topo, "impaired")
    after = topo.stats()
    if topo.mode == "relay":
        for key in sorted(after):
            d = {k: after[key][k] - before.get(key, {}).get(k, 0) for k in after[key]}
            print(f"  figure: relay {key}: {d}", flush=True)
        for hop in ("cm", "mb"):
            dropped = sum(after[f"{hop}:{d}"]["dropped"] - before[f"{hop}:{d}"]["dropped"] for d in ("ab", "ba"))
            reordered = sum(after[f"{hop}:{d}"]["reordered"] - before[f"{hop}:{d}"]["reordered"]
                            for d in ("ab", "ba"))
            t.check(dropped > 0 and reordered > 0, f"hop {hop}: packets were dropped and reordered",
                    f"dropped {dropped}, reordered {reordered}")
    topo.set("all", netlink.CLEAN)

    t.section("summary: impaired vs clean")
    for q in (1, 2):
        c = {f["kind"]: f for f in figs if f["label"] == "clean" and f["qos"] == q}
        i = {f["kind"]: f for f in figs if f["label"] == "impaired" and f["qos"] == q}
        print(f"  figure: QoS {q}: throughput (burst, inflight 20) {c['burst']['msgs_s']:.1f} -> "
              f"{i['burst']['msgs_s']:.1f} msgs/s; latency (paced {RATE:g}/s) p50 {c['paced']['p50_ms']:.1f} -> "
              f"{i['paced']['p50_ms']:.1f} ms, p99 {c['paced']['p99_ms']:.1f} -> {i['paced']['p99_ms']:.1f} ms",
              flush=True)
    t.section("end")
    t.check(g.proc.poll() is None, "mgate is alive")
    t.eq(g.stop(), 0, "mgate exits 0 on SIGTERM")
    t.eq(harness.sanitizer_lines(g.log.text()), [], "no sanitizer report")
    return t.done()


if __name__ == "__main__":
    harness.run_main(main)
