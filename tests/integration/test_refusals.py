#!/usr/bin/python3
"""Refusals, rewrites and late verdicts, with the example handler (mgate-example).

What the handler does is in the header comment of examples/handler/custom_handler.c.
Raw sockets show the exact codes: CONNACK 5/4 (3.1, 3.1.1) and 0x87/0x86 (5.0),
PUBACK/PUBREC 0x87, SUBACK 0x80/0x87 merged in the client's order; refused
clients never reach the broker; late verdicts keep packet order; refused
deliveries still complete the broker's QoS 1/2 flows.
"""
import re
import sys
import tempfile
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402

REFUSED_IDS = []  # client ids that must never appear in the broker's log


def watcher(gate, name, version=5, filt="#"):
    """A raw client subscribed to everything (QoS 2); it acknowledges what it gets."""
    w = h.raw_client(gate.port, version, name)
    codes = w.subscribe(1, [(filt, 2)])
    if codes != [2]:
        raise AssertionError(f"watcher SUBACK {codes}")
    return w


def topics_until(w, topic, timeout=5.0):
    """Topics the watcher receives up to and including `topic`; the last is None if it never came."""
    msgs, found = w.collect_until(lambda m: m.topic == topic, timeout)
    return [m.topic for m in msgs] + ([] if found else [None])


def connect_refused(t, gate):
    cases = [
        (4, "deny1", None, 5, "3.1.1 client id deny1: CONNACK 5 (not authorized)"),
        (4, "bad-user-4", "baduser", 4, "3.1.1 username baduser: CONNACK 4 (bad user name or password)"),
        (3, "deny-v31", None, 5, "3.1 client id deny-v31: CONNACK 5"),
        (3, "bad-user-3", "baduser", 4, "3.1 username baduser: CONNACK 4"),
        (5, "deny-v5", None, 0x87, "5.0 client id deny-v5: CONNACK 0x87 (not authorized)"),
        (5, "bad-user-5", "baduser", 0x86, "5.0 username baduser: CONNACK 0x86 (bad user name or password)"),
    ]
    for version, cid, user, want, what in cases:
        REFUSED_IDS.append(cid)
        c = h.RawClient(gate.port)
        t.eq(c.connect(version, cid, username=user, password=b"pw" if user else None), want, what)
        t.check(c.expect_closed(3.0), f"{cid}: then the connection is closed")
        c.close()


def connect_late(t, gate, broker):
    for version, user, want in ((4, "slow", 0), (5, "slow", 0), (4, "slowdeny", 5), (5, "slowdeny", 0x87)):
        cid = f"late-{user}-{version}"
        c = h.RawClient(gate.port)
        t0 = time.monotonic()
        rc = c.connect(version, cid, username=user)
        took = time.monotonic() - t0
        t.eq(rc, want, f"v{version} username {user}: CONNACK {want:#x}")
        t.check(took >= 0.15, f"v{version} username {user}: the answer comes after the late verdict ({took * 1000:.0f} ms >= 150 ms)")
        if want:
            REFUSED_IDS.append(cid)
            t.check(c.expect_closed(3.0), f"{cid}: closed after the refusal")
        else:
            t.check(c.ping(), f"{cid}: the session works (PINGREQ answered)")
            t.check(broker.saw_client(cid), f"{cid}: the broker saw it")
        c.close()

    # Packets sent right behind the CONNECT wait for the verdict and keep their order.
    c = h.RawClient(gate.port)
    c.version = 4
    c.send(h.connect_packet(4, "late-pipelined", username="slow")
           + h.subscribe_packet(4, 1, [("late/pipe", 1)])
           + h.publish_packet(4, "late/pipe", b"behind the connect", 1, 2))
    p = c.read_packet(3.0)
    t.check(p.type == h.CONNACK and p.body[1] == 0, "pipelined SUBSCRIBE+PUBLISH behind a late CONNECT: CONNACK 0 first", p)
    t.check(c.expect(h.SUBACK, 3.0).body[2:] == b"\x01", "then the SUBACK")
    m = c.recv_publish(3.0)
    t.check(m.topic == "late/pipe" and m.payload == b"behind the connect", "and the client gets its own message")
    c.close()


def nothing_before_connack(t, gate):
    """Refusals of packets pipelined behind the CONNECT come after the CONNACK, never before it:
    a server sends nothing before its CONNACK (5.0 and 3.1.1 alike), with an immediate verdict
    and with a late one (username slow); a refused CONNECT gets its CONNACK and nothing else."""
    for user in (None, "slow"):
        who = f"username {user}" if user else "an immediate verdict"
        c = h.RawClient(gate.port)
        c.version = 5
        c.send(h.connect_packet(5, f"nbc-{user}", username=user)
               + h.publish_packet(5, "nbc/forbidden", b"no", 1, 1)
               + h.subscribe_packet(5, 2, [("nbc/ok", 1), ("nbc/forbidden", 1)]))
        got = []
        try:
            for _ in range(3):
                got.append(c.read_packet(3.0))
        except (TimeoutError, h.Closed):
            pass
        order = [h.NAMES.get(p.type) for p in got]
        t.eq(order, ["CONNACK", "PUBACK", "SUBACK"],
             f"v5 CONNECT ({who}) + refused QoS 1 PUBLISH + partly refused SUBSCRIBE in one write: CONNACK first")
        if order == ["CONNACK", "PUBACK", "SUBACK"]:
            t.eq(got[0].body[1], 0, "CONNACK 0")
            t.eq((h.ack_id(got[1]), h.ack_reason(5, got[1])), (1, 0x87), "then PUBACK 1 with 0x87")
            _, off = h.props_decode(got[2].body, 2)
            t.eq((h.ack_id(got[2]), list(got[2].body[off:])), (2, [1, 0x87]), "then SUBACK 2 with [1, 0x87]")
        t.check(c.ping(), "and the session works")
        c.close()
    c = h.RawClient(gate.port)
    c.version = 5
    REFUSED_IDS.append("nbc-slowdeny")
    c.send(h.connect_packet(5, "nbc-slowdeny", username="slowdeny")
           + h.publish_packet(5, "nbc/forbidden", b"no", 1, 1)
           + h.subscribe_packet(5, 2, [("nbc/forbidden", 1)]))
    t.check(c.expect_closed(3.0), "a late refusal of a CONNECT with packets behind it: closed")
    t.eq([(h.NAMES.get(p.type), p.body[1]) for p in c.before_close], [("CONNACK", 0x87)],
         "after its CONNACK 0x87 and nothing else")
    c.close()


def connect_refusal_flood(t, gate):
    """A flood of refused CONNECTs cannot write a line each: "CONNECT refused" and "closing"
    go through the listener's log budget (50 a second per worker), and so does "session closed"
    of these clients, which never got in (a budget of its own); a later line says how many were
    left out."""
    n = 300
    logins = [(f"deny-flood-{i}", None, None) for i in range(n)]
    REFUSED_IDS.extend(cid for cid, _, _ in logins)
    mark = gate.log.mark()
    t0 = time.monotonic()
    codes, _ = h.connect_burst(gate.port, 4, logins)
    t.eq(codes, [5] * n, f"{n} refused CONNECTs at once: each gets CONNACK 5")
    time.sleep(0.5)  # every refusal answered above; their lines written or counted
    budget = 50 * (int(time.monotonic() - t0) + 2)
    for msg in ("CONNECT refused", "closing: CONNECT refused by the handler"):
        got = gate.log.count(f'"msg":"{msg}"', mark)
        t.check(got <= budget, f"'{msg}': {got} lines for {n} refusals (<= {budget}, the listener's budget)")
    time.sleep(1.05)  # a later second: the listener's next line tells what it left out
    t.eq(h.RawClient(gate.port).connect(4, "deny-flood-late"), 5, "a refused CONNECT a second later")
    time.sleep(0.3)
    left = sum(line.get("left_out", 0) + line.get("listener_left_out", 0)
               for line in gate.json_since(mark))
    t.check(left > 0, f"and the lines left out are counted ({left})")


def left_while_pending(t, gate, broker):
    """Clients that go away while their verdict is pending: mgate must survive the late answer."""
    mark = broker.log.mark()
    c = h.RawClient(gate.port)
    c.send(h.connect_packet(4, "gone-slowdeny", username="slowdeny"))
    c.abort()
    c = h.RawClient(gate.port)
    c.send(h.connect_packet(5, "gone-slow", username="slow"))
    c.close()
    c = h.raw_client(gate.port, 5, "gone-pub")
    c.publish("slow/gone", b"x", 1, 1)
    c.close()
    REFUSED_IDS.append("gone-slowdeny")
    time.sleep(0.4)  # the example handler answers after 100-200 ms; no event tells us when it has
    t.check(gate.alive(), "clients that left while a CONNECT or PUBLISH verdict was pending: mgate survives the answer")
    c = h.RawClient(gate.port)
    t.eq(c.connect(4, "after-gone"), 0, "and serves the next client")
    c.close()
    t.check(broker.wait_client("after-gone", 5.0, mark) is not None, "which reaches the broker")


def pipelined_behind_slow(t, gate):
    n = 500
    w = watcher(gate, "watch-pipe", 4, "+/pipe")
    c = h.raw_client(gate.port, 4, "pipe-pub")
    try:
        topics = ["slow/pipe"] + ["fast/pipe"] * n
        c.send(b"".join(h.publish_packet(4, tp, str(i).encode(), 1, i + 1) for i, tp in enumerate(topics)))
        acks = []
        try:
            for _ in topics:
                acks.append(h.ack_id(c.expect(h.PUBACK, 5.0)))
        except (TimeoutError, h.Closed):
            pass
        t.eq(acks, list(range(1, n + 2)), f"{n} QoS 1 PUBLISHes behind a slow one: all acknowledged, in order")
        got = [(m.topic, int(m.payload)) for m in w.collect(n + 1, 10.0)]
        t.eq(got, [(tp, i) for i, tp in enumerate(topics)], "and delivered in order")
    finally:
        c.close()
        w.close()


def verdict_too_late(t, quick):
    """CONNECT_TIMEOUT=100ms, shorter than the example's 200 ms verdict for user "slow"."""
    for version, unavailable in ((4, 3), (5, 0x88)):
        cid = f"too-late-{version}"
        REFUSED_IDS.append(cid)
        c = h.RawClient(quick.port)
        t0 = time.monotonic()
        rc = c.connect(version, cid, username="slow", timeout=3.0)
        closed = rc is None or c.expect_closed(2.0)
        took = time.monotonic() - t0
        t.check(rc in (None, unavailable), f"v{version}: a verdict later than CONNECT_TIMEOUT: no CONNACK 0 "
                                           f"(CONNACK {unavailable:#x} or a close)", rc)
        t.check(closed and took < 1.0, f"v{version}: the connection is closed at the timeout ({took * 1000:.0f} ms)")
        c.close()
    c = h.raw_client(quick.port, 4, "after-too-late")
    time.sleep(0.3)  # let the late verdicts fire on the closed sessions; nothing signals it
    t.check(quick.alive() and c.ping(), "the verdicts that come after the close do no harm")
    c.close()


def rename(t, gate, broker):
    for version in (4, 5):
        mark = broker.log.mark()
        c = h.RawClient(gate.port)
        t.eq(c.connect(version, "rename-me"), 0, f"v{version} client id rename-me: CONNACK 0")
        t.check(broker.wait_client("renamed", 5.0, mark) is not None, f"v{version}: the broker sees it as 'renamed'")
        t.check(not broker.saw_client("rename-me", mark), f"v{version}: the broker never sees 'rename-me'")
        t.check(c.ping(), f"v{version}: the renamed session works")
        c.disconnect()
        c.close()


def publish_refused_v5(t, gate):
    w = watcher(gate, "watch-pub5")
    c = h.raw_client(gate.port, 5, "pub-refused-5")
    try:
        t.eq(c.publish_wait("a/forbidden", b"no", 1, 1), 0x87, "v5 QoS 1 on a/forbidden: PUBACK 0x87")
        t.eq(c.publish_wait("pubref/ok1", b"yes", 1, 2), 0, "the same connection publishes an allowed QoS 1 message: PUBACK 0")
        t.eq(topics_until(w, "pubref/ok1"), ["pubref/ok1"], "the subscriber gets the allowed message and not the refused one")

        t.eq(c.publish_wait("b/forbidden", b"no", 2, 3), 0x87, "v5 QoS 2 on b/forbidden: PUBREC 0x87")
        t.eq(c.publish_wait("pubref/ok2", b"yes", 2, 4), 0, "then an allowed QoS 2 message completes (PUBREC 0, PUBCOMP)")
        t.eq(topics_until(w, "pubref/ok2"), ["pubref/ok2"], "the subscriber gets only the allowed QoS 2 message")

        c.publish("c/forbidden", b"no", 0)
        t.check(c.ping(), "v5 QoS 0 on c/forbidden: the connection stays open (PINGREQ answered)")
        t.eq(c.stash, [], "and the client got nothing but the PINGRESP")
        c.publish("pubref/ok0", b"yes", 0)
        t.eq(topics_until(w, "pubref/ok0"), ["pubref/ok0"], "the QoS 0 refusal is silent: the subscriber never sees it")
    finally:
        c.close()
        w.close()


def publish_refused_v3(t, gate):
    w = watcher(gate, "watch-pub3")
    try:
        for version, qos in ((4, 1), (4, 0), (3, 1)):
            c = h.raw_client(gate.port, version, f"pub-refused-{version}-{qos}")
            c.publish("d/forbidden", b"no", qos, 1 if qos else 0)
            t.check(c.expect_closed(3.0), f"v{'3.1' if version == 3 else '3.1.1'} QoS {qos} on d/forbidden: the connection is closed")
            t.eq([p.type for p in c.before_close], [], "without any answer before the close")
            c.close()
        other = h.raw_client(gate.port, 4, "pub-refused-marker")
        other.publish_wait("pubref/v3-marker", b"m", 1, 1)
        other.close()
        t.eq(topics_until(w, "pubref/v3-marker"), ["pubref/v3-marker"], "none of the refused messages reached a subscriber")
    finally:
        w.close()


def refusal_close(t, gate_close):
    c = h.raw_client(gate_close.port, 5, "close-mode-pub")
    c.publish("e/forbidden", b"no", 1, 1)
    t.check(c.expect_closed(3.0), "REFUSAL=close: a v5 refused QoS 1 PUBLISH closes the connection")
    t.eq([p.type for p in c.before_close], [], "REFUSAL=close: no PUBACK before the close")
    c.close()

    c = h.raw_client(gate_close.port, 5, "close-mode-sub")
    c.send(h.subscribe_packet(5, 1, [("ok/1", 1), ("forbidden/2", 1)]))
    t.check(c.expect_closed(3.0), "REFUSAL=close: a SUBSCRIBE with a refused filter closes the connection")
    t.eq([p.type for p in c.before_close], [], "REFUSAL=close: no SUBACK before the close")
    c.close()

    for version in (4, 5):
        REFUSED_IDS.append(f"deny-close-{version}")
        c = h.RawClient(gate_close.port)
        c.version = version
        c.send(h.connect_packet(version, f"deny-close-{version}"))
        t.check(c.expect_closed(3.0), f"REFUSAL=close: a refused v{version} CONNECT closes the connection")
        t.eq([p.type for p in c.before_close], [], f"REFUSAL=close: v{version} gets no CONNACK, as documented for 'close'")
        c.close()

    c = h.raw_client(gate_close.port, 5, "close-mode-ok")
    rc = c.publish_wait("close/ok", b"fine", 1, 1)  # 0x10: no subscribers, a success
    t.check(rc in (0, 0x10), "REFUSAL=close: allowed publishes still work", f"PUBACK {rc:#x}")
    c.close()


def rewrite(t, gate):
    w = watcher(gate, "watch-rewrite")
    try:
        c4 = h.raw_client(gate.port, 4, "rewriter-4")
        t.eq(c4.publish_wait("rewrite/a", b"one", 1, 1), 0, "3.1.1 QoS 1 on rewrite/a: PUBACK")
        c5 = h.raw_client(gate.port, 5, "rewriter-5")
        c5.publish("rewrite/b", b"two", 0, props=[(h.P_USER, ("keep", "me"))])
        t.eq(c5.publish_wait("rewrite/c/d", b"three", 2, 1), 0, "5.0 QoS 2 on rewrite/c/d completes")
        c5.publish("rewrite-marker", b"end", 0)
        msgs, found = w.collect_until(lambda m: m.topic == "rewrite-marker", 5.0)
        got = [(m.topic, m.payload) for m in msgs]
        t.eq(got, [("rewritten/a", b"one"), ("rewritten/b", b"two"), ("rewritten/c/d", b"three"),
                   ("rewrite-marker", b"end")], "the subscriber of # gets rewritten/... and never rewrite/...")
        t.eq(h.prop(msgs[1].props, h.P_USER) if len(msgs) > 1 else None, ("keep", "me"),
             "a rewritten PUBLISH keeps its user property")
        c4.close()
        c5.close()
    finally:
        w.close()


def rewrite_invalid(t, gate, broker):
    """A handler that rewrites a topic into something no PUBLISH or SUBSCRIBE may carry: mgate checks
    every re-encoded packet like peer input and does not send it (before, the broker got a PUBLISH
    with a wildcard and dropped mgate's connection, taking the client with it)."""
    w = watcher(gate, "watch-badrewrite", 4, "bad/#")
    c = h.raw_client(gate.port, 5, "badrewriter-5")
    mark = broker.log.mark()
    t.eq(c.publish_wait("badrewrite/a", b"x", 1, 1), 0x83, "5.0 QoS 1 rewritten to bad/+/x: PUBACK 0x83")
    t.check(c.publish_wait("ok/after", b"y", 1, 2) < 0x80, "the client goes on: its next PUBLISH is acknowledged")
    t.eq(w.collect(1, 0.5), [], "nothing reached the broker's subscribers")
    t.check(not re.search(r"badrewriter-5.*(disconnected|protocol error|malformed)", broker.log.text(mark), re.I),
            "the broker never saw an invalid packet from mgate")
    c.close()
    c4 = h.raw_client(gate.port, 4, "badrewriter-4")
    c4.publish("badrewrite/b", b"z", 1, 1)
    t.check(c4.expect_closed(5.0), "3.1.1 QoS 1 (no way to refuse a PUBLISH but closing): closed")
    s = h.raw_client(gate.port, 5, "badsubscriber")
    t.eq(s.subscribe(3, [("badrewrite/f", 0), ("fine/f", 1)]), [0x8F, 1],
         "a filter rewritten to bad/#/x is refused (SUBACK 0x8F), the other granted")
    # rewritten past 65535 bytes: its two-byte length would have let the client's own bytes be
    # read by the broker as more filters of the client's choosing (found by an attack round)
    long_filter = "grow/" + "a" * (65535 - 5 - 10)
    t.eq(s.subscribe(4, [(long_filter, 1)]), [0x8F], "a filter a handler grew past 65535 bytes: SUBACK 0x8F")
    t.check(s.ping(), "the session goes on")
    s.close()
    s4 = h.raw_client(gate.port, 4, "badsubscriber-4")
    t.eq(s4.subscribe(3, [("badrewrite/f", 0), ("fine/f", 1)]), [0x80, 1], "3.1.1: 0x80 for it, the other granted")
    s4.close()
    w.close()


def rewrite_while_delivering(t, gate):
    """A rewrite whose verdict comes later (rewrite/slow/...: the handler rewrites, then answers
    100 ms later) while messages flow the other way to the same client: the rewritten topic must
    outlive the deliveries' handling (it was freed by the first delivery: a use after free)."""
    w = watcher(gate, "watch-cross", 4, "rewritten/slow/#")
    c = h.raw_client(gate.port, 5, "cross-rewriter")
    t.eq(c.subscribe(1, [("cross/in", 0)]), [0], "setup: the client subscribes to cross/in")
    p = h.raw_client(gate.port, 4, "cross-feeder")
    c.send(h.publish_packet(5, "rewrite/slow/cross", b"up", 1, 7))
    for i in range(20):  # deliveries to c while its PUBLISH waits for its verdict
        p.publish("cross/in", f"d{i}".encode(), 0)
    got = [m.topic for m in w.collect(1, 5.0)]
    t.eq(got, ["rewritten/slow/cross"], "the late rewritten PUBLISH arrives with its rewritten topic")
    p.close()
    c.close()
    w.close()


def slow_order(t, gate):
    for version in (4, 5):
        w = watcher(gate, f"watch-slow-{version}", 4, "+/order" + str(version) + "/#")
        c = h.raw_client(gate.port, version, f"slow-order-{version}")
        seq = [f"slow/order{version}/1", f"fast/order{version}/2", f"slow/order{version}/3", f"fast/order{version}/4"]
        t0 = time.monotonic()
        c.send(b"".join(h.publish_packet(version, tp, f"m{i}", 1, i + 1) for i, tp in enumerate(seq)))
        acks = [h.ack_id(c.expect(h.PUBACK, 3.0)) for _ in seq]
        took = time.monotonic() - t0
        t.eq(acks, [1, 2, 3, 4], f"v{version}: PUBACKs for slow/1, fast/2, slow/3, fast/4 come in order")
        t.check(took >= 0.15, f"v{version}: the late verdicts were waited for ({took * 1000:.0f} ms)")
        got = [m.topic for m in w.collect(4, 5.0)]
        t.eq(got, seq, f"v{version}: the subscriber receives them in publish order")
        c.close()
        w.close()


def subscribe_refused(t, gate, broker):
    for version, refused in ((4, 0x80), (5, 0x87)):
        mark = broker.log.mark()
        c = h.raw_client(gate.port, version, f"subref-{version}")
        codes = c.subscribe(7, [("ok/1", 1), ("forbidden/2", 1), ("ok/3", 2)])
        t.eq(codes, [1, refused, 2], f"v{version} SUBSCRIBE [ok/1, forbidden/2, ok/3]: one SUBACK [1, {refused:#x}, 2]")
        t.eq(c.stash, [], f"v{version}: and only one SUBACK")
        log = broker.log.text(mark)
        t.check("\tok/1 (QoS 1)" in log and "\tok/3 (QoS 2)" in log, f"v{version}: the broker got ok/1 and ok/3")
        t.check("forbidden/2" not in log, f"v{version}: the broker never got forbidden/2")
        p = h.raw_client(gate.port, 4, f"subref-pub-{version}")
        p.publish_wait("ok/1", b"first", 1, 1)
        p.publish_wait("ok/3", b"third", 1, 2)
        p.close()
        got = sorted((m.topic, m.payload) for m in c.collect(2, 5.0))
        t.eq(got, [("ok/1", b"first"), ("ok/3", b"third")], f"v{version}: messages on ok/1 and ok/3 arrive")
        filters = [(f"many/{i}" if i % 3 else f"many/forbidden/{i}", 1) for i in range(100)]
        codes = c.subscribe(9, filters)
        t.eq(codes, [refused if i % 3 == 0 else 1 for i in range(100)],
             f"v{version}: 100 filters, every third refused: the SUBACK codes in the client's order")
        c.send(h.subscribe_packet(version, 10, [("pipe/forbidden", 1), ("pipe/a", 0)])
               + h.subscribe_packet(version, 11, [("pipe/b", 2), ("pipe/forbidden/too", 0)]))
        acks = {}
        for _ in range(2):
            p = c.expect(h.SUBACK, 3.0)
            acks[h.ack_id(p)] = list(p.body[-2:])
        t.eq(acks, {10: [refused, 0], 11: [2, refused]}, f"v{version}: two pipelined partly refused SUBSCRIBEs: each SUBACK right")
        codes = c.subscribe(8, [("forbidden/a", 0), ("x/forbidden/#", 1)])
        t.eq(codes, [refused, refused], f"v{version}: an all-forbidden SUBSCRIBE gets an all-refused SUBACK")
        t.check(c.ping(), f"v{version}: the connection stays open")
        c.close()


def broker_flows(broker, cid, topic, since=0, timeout=5.0):
    """For the broker's QoS 1/2 deliveries of `topic` to client `cid`: (how many it sent, how many
    flows it saw completed: PUBACK for QoS 1, PUBREC and PUBCOMP for QoS 2), read from its log."""
    def count():
        log = broker.log.text(since)
        sent = re.findall(r"Sending PUBLISH to " + re.escape(cid) + r" \(d\d, q([12]), r\d, m(\d+), '"
                          + re.escape(topic) + "'", log)
        done = 0
        for qos, mid in sent:
            if qos == "1":
                done += f"Received PUBACK from {cid} (Mid: {mid}," in log
            else:
                done += (f"Received PUBREC from {cid} (Mid: {mid})" in log
                         and f"Received PUBCOMP from {cid} (Mid: {mid}," in log)
        return len(sent), done
    h.wait_until(lambda: count()[0] == count()[1], timeout, step=0.05)
    return count()


def delivery(t, gate, broker):
    for version in (4, 5):
        sub = watcher(gate, f"deliv-sub-{version}", version)
        pub = h.raw_client(gate.port, 4, f"deliv-pub-{version}")
        try:
            pub.publish("a/secret/b", b"hidden", 0)
            pub.publish("a/public", b"shown", 0)
            t.eq(topics_until(sub, "a/public"), ["a/public"],
                 f"v{version} subscriber of #: a/public arrives, a/secret/b does not")
            r = h.raw_client(gate.port, 4, f"deliv-ret-{version}")
            r.publish_wait(f"ret{version}/secret", b"hidden", 1, 1, retain=True)
            r.publish_wait(f"ret{version}/public", b"shown", 1, 2, retain=True)
            late = h.raw_client(gate.port, version, f"deliv-late-{version}")
            late.send(h.subscribe_packet(version, 1, [(f"ret{version}/#", 2)]))
            msgs, _ = late.collect_until(lambda m: m.topic == f"ret{version}/public", 5.0)
            t.eq([m.topic for m in msgs], [f"ret{version}/public"],
                 f"v{version}: of two retained messages, the later subscriber gets the public one only")
            t.check(late.ping(), f"v{version}: and its connection goes on")
            late.close()
            for n, tp in enumerate((f"ret{version}/secret", f"ret{version}/public")):
                r.publish_wait(tp, b"", 1, 3 + n, retain=True)
            r.close()
        finally:
            pub.close()
            sub.close()
        for qos in (1, 2):  # a fresh pair each time: the broker's in-flight window starts empty
            cid = f"deliv-sub-{version}-{qos}"
            mark = broker.log.mark()
            sub = watcher(gate, cid, version)
            pub = h.raw_client(gate.port, 4, f"deliv-pub-{version}-{qos}")
            try:
                pid = 1
                ok = 0
                for _ in range(30):  # more than the broker's 20 in flight
                    ok += pub.publish_wait("x/secret", b"hidden", qos, pid) == 0
                    pid += 1
                t.eq(ok, 30, f"v{version} QoS {qos}: 30 publishes to x/secret complete at the publisher")
                for i in range(100):  # one at a time: mosquitto drops QoS 2 beyond 20 in flight
                    pub.publish_wait("x/public", str(i).encode(), qos, pid)
                    pid += 1
                pub.publish_wait("x/end", b"end", qos, pid)
                msgs, found = sub.collect_until(lambda m: m.topic == "x/end", 10.0)
                got = [int(m.payload) for m in msgs if m.topic == "x/public"]
                t.check(found, f"v{version} QoS {qos}: the subscriber keeps working after 30 refused deliveries")
                t.eq(got, list(range(100)), f"v{version} QoS {qos}: the next 100 allowed messages arrive once each, in order")
                t.eq([m.topic for m in msgs if "secret" in m.topic], [], f"v{version} QoS {qos}: no x/secret delivered")
                t.eq(broker_flows(broker, cid, "x/secret", mark), (30, 30),
                     f"v{version} QoS {qos}: the broker sent 30 x/secret and saw each of its flows completed "
                     f"({'PUBACK' if qos == 1 else 'PUBREC, PUBCOMP'}), by mgate in the client's place")
            finally:
                pub.close()
                sub.close()


def delivery_queued(t, gate, broker):
    """A client with a persistent session comes back to a queue mixing allowed and refused messages."""
    cid = "keeper"
    c = h.raw_client(gate.port, 4, cid, clean=False)
    t.eq(c.subscribe(1, [("keep/#", 2)]), [2], "a 3.1.1 client with a persistent session subscribes to keep/#")
    c.disconnect()
    t.check(c.expect_closed(3.0), "and leaves")
    c.close()
    p = h.raw_client(gate.port, 4, "keeper-pub")
    pid = 1
    for i in range(30):
        for topic, qos in (("keep/secret", 2), ("keep/ok", 1), ("keep/secret/1", 1)):
            p.publish_wait(topic, str(i).encode(), qos, pid)
            pid += 1
    p.close()
    mark = broker.log.mark()
    c = h.RawClient(gate.port)
    t.eq(c.connect(4, cid, clean=False), 0, "it comes back")
    msgs, found = c.collect_until(lambda m: m.topic == "keep/ok" and m.payload == b"29", 10.0)
    t.eq([(m.topic, int(m.payload)) for m in msgs], [("keep/ok", i) for i in range(30)],
         "of the 90 queued messages it gets the 30 allowed ones, in order, and no secret one")
    p = h.raw_client(gate.port, 4, "keeper-pub2")
    p.publish_wait("keep/after", b"live", 2, 1)
    p.close()
    m = c.recv_publish(5.0)
    t.check(m.topic == "keep/after", "after the queue, live messages flow", m)
    t.eq(broker_flows(broker, cid, "keep/secret", mark), (30, 30),
         "the 30 refused QoS 2 deliveries from the queue: the broker saw PUBREC and PUBCOMP for each")
    t.eq(broker_flows(broker, cid, "keep/secret/1", mark), (30, 30),
         "the 30 refused QoS 1 deliveries from the queue: the broker saw PUBACK for each")
    c.close()
    c = h.raw_client(gate.port, 4, cid)  # clean session: drop it
    c.close()


def interceptor(t, gate):
    w = watcher(gate, "watch-icpt")
    c = h.raw_client(gate.port, 5, "icpt")
    try:
        c.publish("icpt/t", b"please intercept-drop", 1, 7)
        t.eq(c.publish_wait("icpt/t", b"kept", 1, 8), 0, "a PUBLISH after an intercepted one is acknowledged")
        t.eq(c.stash, [], "the intercepted PUBLISH (id 7) got no PUBACK")
        msgs, _ = w.collect_until(lambda m: m.payload == b"kept", 5.0)
        t.eq([m.payload for m in msgs], [b"kept"], "the intercepted PUBLISH never reaches a subscriber")
        # a post interceptor's replacement is checked like peer input (mgate.h): an invalid one
        # is not sent (before, the broker got a PUBLISH to a/# and dropped the pair)
        for version in (4, 5):
            b = h.raw_client(gate.port, version, f"icpt-bad-{version}")
            b.publish("icpt/t", b"please intercept-bad", 0)
            t.eq(b.publish_wait("icpt/t", f"after-bad-{version}".encode(), 1, 9), 0,
                 f"v{version}: a post interceptor's invalid replacement is not sent; the session goes on")
            msgs, _ = w.collect_until(lambda m: m.payload == f"after-bad-{version}".encode(), 5.0)
            t.eq([m.payload for m in msgs], [f"after-bad-{version}".encode()],
                 f"v{version}: only the next PUBLISH reaches a subscriber")
            b.close()
    finally:
        c.close()
        w.close()


def main():
    h.need_binaries()
    t = h.Checks("refusals")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.Broker(tmp)
        gate = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_LOG_LEVEL="debug")
        gate_close = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_MQTT_WITHOUT_TLS_REFUSAL="close")
        t.case("CONNECT refused", connect_refused, t, gate)
        t.case("CONNECT with a late verdict", connect_late, t, gate, broker)
        t.case("CONNECT rewritten", rename, t, gate, broker)
        t.case("nothing before the CONNACK", nothing_before_connack, t, gate)
        t.case("a flood of refused CONNECTs is logged within a budget", connect_refusal_flood, t, gate)
        quick = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_MQTT_WITHOUT_TLS_CONNECT_TIMEOUT="100ms")
        t.case("CONNECT verdict later than CONNECT_TIMEOUT", verdict_too_late, t, quick)
        t.case("PUBLISH refused, 5.0", publish_refused_v5, t, gate)
        t.case("PUBLISH refused, 3.1 and 3.1.1", publish_refused_v3, t, gate)
        t.case("REFUSAL=close", refusal_close, t, gate_close)
        t.case("PUBLISH rewritten", rewrite, t, gate)
        t.case("a late rewrite while deliveries flow", rewrite_while_delivering, t, gate)
        t.case("a rewrite into an invalid packet is not sent", rewrite_invalid, t, gate, broker)
        t.case("PUBLISH with a late verdict keeps order", slow_order, t, gate)
        t.case("many packets held behind a late verdict", pipelined_behind_slow, t, gate)
        t.case("clients that leave while a verdict is pending", left_while_pending, t, gate, broker)
        t.case("SUBSCRIBE partly refused", subscribe_refused, t, gate, broker)
        t.case("delivery refused", delivery, t, gate, broker)
        t.case("delivery refused in a queued session", delivery_queued, t, gate, broker)
        t.case("interceptor drop", interceptor, t, gate)

        t.section("the broker and mgate")
        mark = broker.log.mark()
        last = h.raw_client(gate.port, 4, "refusals-last")
        t.check(broker.wait_client("refusals-last", 5.0, mark) is not None, "a client after all this is served")
        last.close()
        log = broker.log.text()
        seen = [cid for cid in REFUSED_IDS if cid in log]
        t.eq(seen, [], f"the broker's log never names the {len(REFUSED_IDS)} refused client ids")
        t.check(gate.alive() and gate_close.alive(), "both mgate processes still run")
        t.check(not any(line.get("level") == "error" for line in gate.json_lines()), "no error in mgate's log")
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
