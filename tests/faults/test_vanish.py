#!/usr/bin/python3
"""A peer that vanishes without a FIN (issue 20, Faults): the broker, then a client.

client ns <-> mgate ns <-> broker ns (tests/faults/netlink.py). A hop made to drop
every packet in both directions is a peer gone without a word: no FIN, no RST,
no ICMP, while mosquitto (or the client) itself stays alive.

The clients here use MQTT keepalive 0, so neither MQTT keepalive (mosquitto's
1.5 x keepalive, the client library's PINGRESP wait) can find the dead peer:
only mgate's own TCP settings do. mgate bounds a vanished peer at
VANISH_BOUND_S: TCP keepalive (30 s idle, probes every 10 s) on an idle
connection, TCP_USER_TIMEOUT (60 s) on one with data unacknowledged
(src/net/conn.c, conn_tcp_liveness). The test allows SLACK_S more for a
loaded machine.

Checked, for each of: an idle pair (a subscriber), and a pair with data queued
towards the dead peer (a QoS 1 PUBLISH to a dead broker; deliveries to a dead
client):
- the surviving side is closed by mgate within the bound (the client sees its
  connection end; the broker logs the client gone);
- mgate's admin endpoint counts no open session (mgate_connections 0) and `ss`
  in mgate's namespace shows no ESTABLISHED socket left.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netlink  # noqa: E402
from netlink import harness  # noqa: E402

VANISH_BOUND_S = 60  # mgate's documented bound (docs/TESTING.md, src/net/conn.c)
SLACK_S = 25         # timer rounding, retransmission back-off, a loaded 2-core machine


def established(topo, g):
    """mgate's own ESTABLISHED TCP sockets on the MQTT port, either way (the admin ones and the
    test's own sockets in that namespace excluded)."""
    return [line for line in netlink.ss(topo.mgate, "-p", "state", "established")
            if ":1883" in line and f"pid={g.pid}," in line]


def wait_closed(clients, limit):
    """{name: seconds until that client saw its connection end, or None}, waited for in parallel."""
    t0 = time.monotonic()
    out = {}

    def one(name, c):
        out[name] = time.monotonic() - t0 if c.expect_closed(limit) else None

    threads = [threading.Thread(target=one, args=kv) for kv in clients.items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join(limit + 10)
    return out


def broker_vanishes(t, topo, broker, g):
    idle = netlink.raw_client(topo)
    t.eq(idle.connect(4, "vb-idle", keepalive=0), 0, "idle subscriber (keepalive 0) connected through mgate")
    t.eq(idle.subscribe(1, [("v/b/idle", 1)]), [1], "it subscribed")
    busy = netlink.raw_client(topo)
    t.eq(busy.connect(4, "vb-busy", keepalive=0), 0, "publisher (keepalive 0) connected through mgate")
    t.check(harness.wait_until(lambda: g.metric("mgate_connections") == 2, 10), "mgate counts 2 sessions")
    t.eq(len(harness.wait_until(lambda: len(established(topo, g)) == 4 and established(topo, g), 10) or []), 4,
         "mgate holds 4 ESTABLISHED sockets (2 pairs)")

    topo.set("mb", netlink.DEAD)
    busy.publish("v/b/busy", "to a dead broker", qos=1, pid=1)  # queued towards the broker, never acknowledged
    took = wait_closed({"idle": idle, "busy": busy}, VANISH_BOUND_S + SLACK_S)
    for name, s in sorted(took.items()):
        print(f"  figure: broker vanished -> {name} client's connection ended after "
              f"{'never (waited %d s)' % (VANISH_BOUND_S + SLACK_S) if s is None else '%.1f s' % s}", flush=True)
        t.check(s is not None and s <= VANISH_BOUND_S + SLACK_S,
                f"{name} client learns the broker vanished within {VANISH_BOUND_S}+{SLACK_S} s", f"{s}")
    t.check(harness.wait_until(lambda: g.metric("mgate_connections") == 0, 10),
            "mgate's admin endpoint counts no open session", f"{g.metric('mgate_connections')}")
    left = harness.wait_until(lambda: not established(topo, g), 10) or established(topo, g)
    t.check(left is True, "no ESTABLISHED socket left in mgate's namespace (no half-open pair)", f"{left}")
    print(f"  mosquitto's side (its own keepalive 0 peers, not mgate's): {netlink.ss(topo.broker, 'state', 'established')}",
          flush=True)
    idle.close()
    busy.close()
    topo.set("mb", netlink.CLEAN)


def client_vanishes(t, topo, broker, g):
    idle = netlink.raw_client(topo)
    t.eq(idle.connect(4, "vc-idle", keepalive=0), 0, "idle subscriber (keepalive 0) connected through mgate")
    t.eq(idle.subscribe(1, [("v/c/idle", 1)]), [1], "it subscribed")
    recv = netlink.raw_client(topo)
    t.eq(recv.connect(4, "vc-recv", keepalive=0), 0, "receiving subscriber (keepalive 0) connected through mgate")
    t.eq(recv.subscribe(1, [("v/c/data", 1)]), [1], "it subscribed")
    # a publisher next to mgate, straight to the broker: its messages go to the dead client
    pub = netlink.raw_client(topo, host=netlink.BROKER_ADDR, ns=topo.mgate)
    t.eq(pub.connect(4, "vc-pub", keepalive=0), 0, "publisher connected to the broker directly")
    t.check(harness.wait_until(lambda: g.metric("mgate_connections") == 2, 10), "mgate counts 2 sessions")
    t.eq(len(harness.wait_until(lambda: len(established(topo, g)) == 4 and established(topo, g), 10) or []), 4,
         "mgate holds 4 ESTABLISHED sockets (2 pairs)")
    mark = broker.log.mark()

    topo.set("cm", netlink.DEAD)
    t0 = time.monotonic()
    for i in range(5):
        t.eq(pub.publish_wait("v/c/data", f"to a dead client {i}", 1, i + 1), 0, f"message {i} accepted by the broker")

    gone = {}
    limit = VANISH_BOUND_S + SLACK_S

    def both_gone():
        for cid in ("vc-idle", "vc-recv"):
            if cid not in gone and broker.log.search(r"Client " + cid + r" (closed its connection|disconnected)", mark):
                gone[cid] = time.monotonic() - t0
        return len(gone) == 2
    harness.wait_until(both_gone, limit, step=0.2)
    for cid in ("vc-idle", "vc-recv"):
        s = gone.get(cid)
        print(f"  figure: client {cid} vanished -> its broker connection closed after "
              f"{'never (waited %d s)' % limit if s is None else '%.1f s' % s}", flush=True)
        t.check(s is not None and s <= limit, f"mgate closes {cid}'s pair within {VANISH_BOUND_S}+{SLACK_S} s", f"{s}")
    t.check(harness.wait_until(lambda: g.metric("mgate_connections") == 0, 10),
            "mgate's admin endpoint counts no open session", f"{g.metric('mgate_connections')}")
    left = harness.wait_until(lambda: not established(topo, g), 10) or established(topo, g)
    t.check(left is True, "no ESTABLISHED socket left in mgate's namespace (no half-open pair)", f"{left}")
    for c in (idle, recv, pub):
        c.close()
    topo.set("cm", netlink.CLEAN)


def main():
    binary = os.environ.get("MGATE_BIN", "")
    if not os.access(binary, os.X_OK):
        print("MGATE_BIN must name the built binary (ctest sets it)", file=sys.stderr)
        return 1
    topo = netlink.Topology()
    t = harness.Checks("faults.vanish")
    broker = netlink.NsBroker(topo)
    g = netlink.NsMgate(topo, binary)
    t.case("the broker vanishes (its link drops every packet, mosquitto alive)", broker_vanishes, t, topo, broker, g)
    t.case("a client vanishes (its link drops every packet)", client_vanishes, t, topo, broker, g)
    t.section("end")
    t.eq(g.stop(), 0, "mgate exits 0 on SIGTERM")
    t.eq(harness.sanitizer_lines(g.log.text()), [], "no sanitizer report")
    return t.done()


if __name__ == "__main__":
    harness.run_main(main)
