#!/usr/bin/python3
"""A flood of refusals cannot fill the disk: log lines a client causes have a budget.

Each session may write 5 such lines a second and each listener (per worker) 50; the rest are
counted, and the next line let through (or the session's "session closed") carries "left_out".
/metrics still counts every refusal.

* One v5 client sends refused QoS 0 PUBLISHes (the example handler refuses topics with
  "forbidden") for about 2 s: at most 5 "PUBLISH refused" lines per second of flood, the
  counts left out add up with the lines written to what /metrics counted, and the log holds far
  fewer bytes than the client sent (the issue's run wrote 12-19 times more).
* Twenty clients do it at once: the listener's budget bounds them together.
* A refused SUBSCRIBE flood is bounded the same way.
* An ordinary client in between still gets its refusal logged in full.
"""
import os
import sys
import tempfile
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402
import test_admin  # noqa: E402  (metrics())

FLOOD_SECONDS = 2.0


def flood_publish(port, cid, seconds, batch=200):
    """Refused QoS 0 PUBLISHes (no answer to wait for) for `seconds`; returns (packets, bytes)."""
    c = h.raw_client(port, 5, cid)
    pkt = h.publish_packet(5, "x/forbidden/y", b"0123456789")
    n = sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        c.send(pkt * batch)
        n += batch
        sent += len(pkt) * batch
    # a PINGREQ answered means mgate has read (and judged) everything before it
    c.send(h.packet(h.PINGREQ, 0, b""))
    c.expect(h.PINGRESP, 10.0)
    c.close()
    return n, sent


def lines(g, msg, since=0):
    return [j for j in g.json_since(since) if j.get("msg") == msg]


def one_client(t, g, admin):
    mark = g.log.mark()
    before = test_admin.metrics(admin).get('mgate_publish_refused_total{direction="client_to_broker"}', 0)
    start = time.monotonic()
    n, sent = flood_publish(g.port, "flood-1", FLOOD_SECONDS)
    took = time.monotonic() - start
    time.sleep(0.3)
    refused = test_admin.metrics(admin).get('mgate_publish_refused_total{direction="client_to_broker"}', 0) - before
    t.eq(refused, n, f"/metrics counts every one of the {n} refused PUBLISHes")
    got = lines(g, "PUBLISH refused", mark)
    bound = 5 * (int(took) + 2)
    t.check(0 < len(got) <= bound, f"at most 5 'PUBLISH refused' lines a second ({len(got)} for {took:.1f} s, bound {bound})")
    closed = [j for j in g.json_since(mark) if j.get("msg") == "session closed" and j.get("client_id") == "flood-1"]
    left = sum(int(j.get("left_out", 0)) for j in got) + sum(int(j.get("left_out", 0)) for j in closed)
    # left_out counts every line the session caused (its closing line too), so a few more at most
    t.check(n <= left + len(got) <= n + 3, "the lines written plus the counts left out add up to every refusal",
            f"{left} + {len(got)} for {n}")
    logged = g.log.mark() - mark
    t.check(logged * 10 < sent, f"the log grew by {logged} bytes for {sent} bytes sent (less than a tenth)")
    print(f"    measured: {n} refused PUBLISHes ({sent} bytes) in {took:.1f} s -> {len(got)} lines, {logged} log bytes")


def many_clients(t, g):
    import threading
    mark = g.log.mark()
    results = []
    start = time.monotonic()
    threads = [threading.Thread(target=lambda i=i: results.append(flood_publish(g.port, f"many-{i}", FLOOD_SECONDS, 50)))
               for i in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    took = time.monotonic() - start
    got = lines(g, "PUBLISH refused", mark)
    bound = 50 * (int(took) + 2)
    t.eq(len(results), 20, "twenty clients flooded")
    t.check(len(got) <= bound, f"twenty clients together: at most 50 lines a second ({len(got)} in {took:.1f} s)")
    t.check(any("listener_left_out" in j for j in got) or len(got) < 5 * 20,
            "the listener's budget reports what it left out", got[-1:] if got else None)


def subscribe_flood(t, g):
    mark = g.log.mark()
    c = h.raw_client(g.port, 5, "sub-flood")
    n = 0
    end = time.monotonic() + FLOOD_SECONDS
    pid = 1
    while time.monotonic() < end:
        for _ in range(50):
            assert c.subscribe(pid, [("a/forbidden", 0)]) == [0x87]
            pid = pid % 65535 + 1
            n += 1
    c.close()
    time.sleep(0.3)
    got = [j for j in g.json_since(mark) if str(j.get("msg", "")).startswith("SUBSCRIBE:")]
    t.check(0 < len(got) <= 5 * (int(FLOOD_SECONDS) + 2), f"{n} refused SUBSCRIBEs: {len(got)} log lines")


def ordinary(t, g):
    mark = g.log.mark()
    c = h.raw_client(g.port, 5, "calm")
    t.eq(c.publish_wait("calm/forbidden", b"x", 1, 3), 0x87, "a single refused PUBLISH: PUBACK 0x87")
    c.close()
    time.sleep(0.2)
    got = lines(g, "PUBLISH refused", mark)
    t.check(len(got) == 1 and got[0].get("topic") == "calm/forbidden" and got[0].get("client_id") == "calm"
            and "left_out" not in got[0], "it is logged in full, with its topic and client id", got)


def connection_churn(t, g):
    """Clients that never get in (a DISCONNECT as the first packet, a refused CONNECT): their
    'session closed' lines take from the listener's budget; a session that got in keeps its line."""
    import socket
    mark = g.log.mark()
    n = 0
    start = time.monotonic()
    bye = h.packet(h.DISCONNECT, 0, b"")
    refused = h.connect_packet(4, "deny-churn")  # the example handler refuses client ids "deny..."
    while time.monotonic() - start < FLOOD_SECONDS and n < 3000:
        s = socket.create_connection((h.HOST, g.port))
        s.sendall(bye if n % 2 else refused)
        s.close()
        n += 1
    took = time.monotonic() - start
    c = h.raw_client(g.port, 4, "churn-legit")
    c.send(h.disconnect_packet(4))
    c.close()
    time.sleep(0.5)
    got = g.json_since(mark)
    closed = [j for j in got if j.get("msg") == "session closed"]
    bound = 50 * (int(took) + 2)
    t.check(len(got) <= 2 * bound, f"{n} connections that never got in: {len(got)} log lines in {took:.1f} s "
                                   f"(bound {2 * bound}: 'closing' and 'session closed', 50 a second each at most)")
    t.check(any(j.get("client_id") == "churn-legit" for j in closed),
            "the session that got in still has its 'session closed' line")
    print(f"    measured: {n} connections in {took:.1f} s -> {len(got)} lines")


def main():
    h.need_binaries()
    t = h.Checks("log_flood")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.start_mosquitto(tmp)
        admin = h.free_port()
        g = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_ADMIN_PORT=str(admin), MGATE_WORKERS="1")
        t.case("one client's refusal flood", one_client, t, g, admin)
        t.case("an ordinary refusal", ordinary, t, g)
        t.case("twenty clients at once", many_clients, t, g)
        t.case("a refused SUBSCRIBE flood", subscribe_flood, t, g)
        t.case("a churn of connections that never get in", connection_churn, t, g)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
