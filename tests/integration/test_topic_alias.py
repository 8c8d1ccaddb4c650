#!/usr/bin/python3
"""MQTT 5 topic aliases through the example handler (mgate-example).

The handler sees resolved topics, so an alias-only PUBLISH is rewritten and
refused exactly like one that carries its topic, and rebinding an alias
changes what it resolves to. Packets are built by hand on a raw socket (paho
1.6.1 cannot send an alias-only PUBLISH).
"""
import sys
import tempfile

sys.dont_write_bytecode = True
import harness as h  # noqa: E402


def alias(n):
    return [(h.P_TOPIC_ALIAS, n)]


def received(w, last_payload, timeout=5.0):
    """(topic, payload) pairs the watcher gets, up to the one with last_payload."""
    msgs, found = w.collect_until(lambda m: m.payload == last_payload, timeout)
    return [(m.topic, m.payload) for m in msgs] + ([] if found else [("<missing>", last_payload)])


def aliases(t, gate):
    w = h.raw_client(gate.port, 5, "alias-watch")
    t.eq(w.subscribe(1, [("#", 2)]), [2], "a v5 watcher subscribes to #")
    c = h.raw_client(gate.port, 5, "alias-pub")
    limit = h.prop(c.connack_props, h.P_TOPIC_ALIAS_MAX, 0)
    t.check(limit >= 3, f"CONNACK allows topic aliases (Topic Alias Maximum {limit})")
    try:
        t.eq(c.publish_wait("rewrite/t", b"r0", 1, 1, alias(1)), 0, "PUBLISH rewrite/t with alias 1: PUBACK 0")
        rcs = [c.publish_wait("", f"r{i}".encode(), 1, 1 + i, alias(1)) for i in (1, 2, 3)]
        t.eq(rcs, [0, 0, 0], "three alias-only PUBLISHes with alias 1: PUBACK 0")
        c.publish("", b"r4", 0, props=alias(1))
        want = [("rewritten/t", f"r{i}".encode()) for i in range(5)]
        t.eq(received(w, b"r4"), want, "the subscriber receives all five on rewritten/t")

        t.eq(c.publish_wait("plain/t", b"p0", 1, 10, alias(1)), 0, "PUBLISH plain/t rebinding alias 1: PUBACK 0")
        rcs = [c.publish_wait("", f"p{i}".encode(), 1, 10 + i, alias(1)) for i in (1, 2)]
        t.eq(rcs, [0, 0], "alias-only PUBLISHes with alias 1: PUBACK 0")
        t.eq(received(w, b"p2"), [("plain/t", b"p0"), ("plain/t", b"p1"), ("plain/t", b"p2")],
             "after rebinding, the subscriber receives them on plain/t")

        t.eq(c.publish_wait("alias/forbidden", b"f0", 1, 20, alias(2)), 0x87,
             "PUBLISH alias/forbidden with alias 2: PUBACK 0x87")
        t.eq(c.publish_wait("", b"f1", 1, 21, alias(2)), 0x87,
             "an alias-only PUBLISH resolving to alias/forbidden: PUBACK 0x87")
        t.eq(c.publish_wait("", b"f2", 2, 22, alias(2)), 0x87, "... at QoS 2: PUBREC 0x87")
        c.publish("", b"f3", 0, props=alias(2))
        t.eq(c.publish_wait("", b"p3", 1, 23, alias(1)), 0, "alias 1 still resolves to plain/t")
        t.eq(received(w, b"p3"), [("plain/t", b"p3")], "nothing on alias/forbidden reached the subscriber")

        # The broker knows alias 4 as ok/b; mgate must not let it stand for a refused topic.
        t.eq(c.publish_wait("ok/b", b"b0", 1, 40, alias(4)), 0, "PUBLISH ok/b with alias 4: PUBACK 0")
        t.eq(c.publish_wait("b/forbidden", b"bf0", 1, 41, alias(4)), 0x87,
             "rebinding alias 4 to b/forbidden: PUBACK 0x87")
        t.eq(c.publish_wait("", b"bf1", 1, 42, alias(4)), 0x87, "alias-only with alias 4 now: PUBACK 0x87")
        c.publish("", b"bf2", 0, props=alias(4))
        t.eq(c.publish_wait("ok/b", b"b1", 1, 43, alias(4)), 0, "rebinding alias 4 to ok/b again: PUBACK 0")
        t.eq(c.publish_wait("", b"b2", 1, 44, alias(4)), 0, "alias-only with alias 4: PUBACK 0")
        t.eq(received(w, b"b2"), [("ok/b", b"b0"), ("ok/b", b"b1"), ("ok/b", b"b2")],
             "the refused ones never arrive, not even as the broker's old ok/b")

        t.eq(c.publish_wait("rewrite/u", b"u0", 1, 30, alias(1)), 0, "rebinding alias 1 to rewrite/u")
        t.eq(c.publish_wait("", b"u1", 2, 31, alias(1)), 0, "alias-only at QoS 2 completes")
        c.publish("plain/x", b"x0", 0, props=alias(3))
        c.publish("", b"x1", 0, props=alias(3))
        t.eq(c.publish_wait("", b"u2", 1, 32, alias(1)), 0, "aliases 1 and 3 used side by side")
        t.eq(received(w, b"u2"), [("rewritten/u", b"u0"), ("rewritten/u", b"u1"), ("plain/x", b"x0"),
                                  ("plain/x", b"x1"), ("rewritten/u", b"u2")],
             "each alias resolves to its own topic, rewritten where the handler says so")
        # A late verdict (slow/...) holds the packets behind it; aliases still resolve in order.
        c.send(h.publish_packet(5, "slow/a", b"s0", 1, 50, alias(6))
               + h.publish_packet(5, "", b"s1", 1, 51, alias(6))
               + h.publish_packet(5, "plain/z", b"z0", 1, 52, alias(6))
               + h.publish_packet(5, "", b"z1", 1, 53, alias(6)))
        acks = [(h.ack_id(p), h.ack_reason(5, p)) for p in (c.expect(h.PUBACK, 3.0) for _ in range(4))]
        t.eq(acks, [(50, 0), (51, 0), (52, 0), (53, 0)], "pipelined alias PUBLISHes behind a late verdict: PUBACKs in order")
        t.eq(received(w, b"z1"), [("slow/a", b"s0"), ("slow/a", b"s1"), ("plain/z", b"z0"), ("plain/z", b"z1")],
             "... and they arrive in order on the topics their alias meant when they were sent")

        c.publish("plain/y", b"y0", 0, props=[(h.P_USER, ("a", "b"))] + alias(3))
        c.publish("", b"y1", 0, props=alias(3) + [(h.P_USER, ("c", "d"))])
        msgs, _ = w.collect_until(lambda m: m.payload == b"y1", 5.0)
        t.eq([(m.topic, h.prop(m.props, h.P_USER)) for m in msgs], [("plain/y", ("a", "b")), ("plain/y", ("c", "d"))],
             "other properties of alias PUBLISHes are kept")
        t.check(c.ping(), "the publisher's connection is still open")
    finally:
        c.close()
        w.close()


def bad_aliases(t, gate, broker):
    mark = broker.log.mark()
    c = h.raw_client(gate.port, 5, "alias-unknown")
    c.publish("", b"z", 1, 1, alias(7))
    closed, reason = c.expect_disconnect(3.0)
    t.check(reason in (0x82, 0x94), "an alias-only PUBLISH with an alias never set: DISCONNECT 0x82 or 0x94",
            c.before_close)
    t.check(closed, "then the connection is closed")
    c.close()
    for bad in (0, 11):
        c = h.raw_client(gate.port, 5, f"alias-bad-{bad}")
        c.publish("bad/alias", b"z", 1, 1, alias(bad))
        closed, reason = c.expect_disconnect(3.0)
        t.check(reason in (0x82, 0x94), f"topic alias {bad} (0 or above the maximum 10): DISCONNECT 0x94 or 0x82",
                c.before_close)
        t.check(closed, "then the connection is closed")
        c.close()
    t.check("bad/alias" not in broker.log.text(mark), "the broker never got those PUBLISHes")


def main():
    h.need_binaries()
    t = h.Checks("topic_alias")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.Broker(tmp)
        gate = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_LOG_LEVEL="debug")
        t.case("aliases resolved, rewritten, rebound and refused", aliases, t, gate)
        t.case("invalid aliases", bad_aliases, t, gate, broker)
        t.section("mgate")
        t.check(gate.alive(), "mgate still runs")
        t.check(not any(line.get("level") == "error" for line in gate.json_lines()), "no error in mgate's log")
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
