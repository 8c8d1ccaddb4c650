#!/usr/bin/python3
"""MQTT 5 enhanced authentication through mgate-example: a scripted broker (fake_broker.py)
that speaks a SCRAM-like exchange and a raw-socket client. CONNECT, AUTH, AUTH, CONNACK must
pass intact, in order, both ways (before the CONNACK too, when mgate otherwise reads nothing
more from a client), then a PUBLISH, then a re-authentication started by the client.
A client that sends anything but AUTH or DISCONNECT before its CONNACK breaks
[MQTT-3.1.2-30]: CONNACK 0x82 and closed, never forwarded. Without an authentication method
a broker's AUTH before the CONNACK still ends the session."""
import sys
import tempfile

sys.dont_write_bytecode = True
import harness as h  # noqa: E402
import fake_broker as fb  # noqa: E402

P_AUTH_METHOD, P_AUTH_DATA = 0x15, 0x16
METHOD = "SCRAM-SHA-1"


def raw(p):
    """A packet read by RawClient as its bytes (the fake broker writes minimal lengths)."""
    return h.packet(p.type, p.flags, p.body)


def auth_props(data):
    return [(P_AUTH_METHOD, METHOD), (P_AUTH_DATA, data)]


def open_exchange(t, gate, broker, cid, what):
    """A client's CONNECT with the method reaches the broker unchanged; returns (client, peer)."""
    c = h.RawClient(gate.port)
    c.version = 5
    connect = h.connect_packet(5, cid, username="u", props=auth_props(b"client-first") + [(h.P_USER, ("k", "v"))])
    c.send(connect)
    peer = broker.accept()
    t.check(peer is not None, f"{what}: mgate dials the broker")
    t.eq(peer.read_raw(), connect, f"{what}: the broker gets the CONNECT byte for byte (method, data, properties)")
    return c, peer


def up(t, c, peer, pkt, what):
    """The client sends pkt: the broker must get it byte for byte."""
    c.send(pkt)
    t.eq(peer.read_raw(), pkt, what)


def down(t, c, peer, pkt, what):
    """The broker sends pkt: the client must get it byte for byte."""
    peer.send(pkt)
    t.eq(raw(c.read_packet()), pkt, what)


def client_auth(reason, data):
    return h.packet(h.AUTH, 0, bytes([reason]) + h.props_encode(auth_props(data)))


def exchange(t, gate, broker):
    c, peer = open_exchange(t, gate, broker, "scram-1", "exchange")
    down(t, c, peer, fb.auth(0x18, auth_props(b"server-first")),
         "the broker's AUTH 0x18 (continue) reaches the client intact")
    up(t, c, peer, client_auth(0x18, b"client-final"),
       "the client's AUTH 0x18 before any CONNACK reaches the broker intact")
    down(t, c, peer, fb.connack(0, auth_props(b"server-final") + [(h.P_TOPIC_ALIAS_MAX, 0)]),
         "the CONNACK with the server's final data reaches the client intact")
    up(t, c, peer, h.publish_packet(5, "after/auth", b"hello", 1, 7, props=[(h.P_USER, ("a", "b"))]),
       "then a PUBLISH passes byte for byte")
    down(t, c, peer, h.ack_packet(5, h.PUBACK, 7), "and its PUBACK comes back")
    up(t, c, peer, client_auth(0x19, b"re-first"),
       "re-authentication: the client's AUTH 0x19 reaches the broker intact")
    down(t, c, peer, fb.auth(0x18, auth_props(b"re-challenge")), "the broker's AUTH 0x18 reaches the client")
    up(t, c, peer, client_auth(0x18, b"re-final"), "the client's AUTH 0x18 reaches the broker")
    down(t, c, peer, fb.auth(0x00, auth_props(b"re-ok")), "the broker's AUTH 0x00 (success) reaches the client")
    up(t, c, peer, h.packet(h.PINGREQ, 0, b""), "the session goes on: a PINGREQ reaches the broker")
    down(t, c, peer, h.packet(h.PINGRESP, 0, b""), "and its PINGRESP the client")
    c.close()
    peer.close()


def client_gives_up(t, gate, broker):
    c, peer = open_exchange(t, gate, broker, "scram-2", "give up")
    peer.send(fb.auth(0x18, auth_props(b"server-first")))
    t.eq(c.read_packet().type, h.AUTH, "the challenge reaches the client")
    up(t, c, peer, h.disconnect_packet(5, 0x80), "a DISCONNECT before the CONNACK reaches the broker")
    c.close()
    peer.close()


def publish_before_connack(t, gate, broker):
    c, peer = open_exchange(t, gate, broker, "scram-3", "out of turn")
    c.send(h.publish_packet(5, "too/early", b"x", 0))
    try:
        p = c.read_packet(3.0)
        got = (p.type, p.body[1] if p.type == h.CONNACK and len(p.body) > 1 else None)
    except (h.Closed, TimeoutError) as e:
        got = repr(e)
    t.eq(got, (h.CONNACK, 0x82), "a PUBLISH before the CONNACK: CONNACK 0x82 (Protocol Error)")
    t.check(c.expect_closed(3.0), "then the client is closed")
    t.check(peer.closed(3.0), "and the broker connection too, the PUBLISH never sent")
    c.close()
    peer.close()


def auth_without_method(t, gate, broker):
    c = h.RawClient(gate.port)
    c.version = 5
    c.send(h.connect_packet(5, "plain-1"))
    peer = broker.accept()
    peer.read_raw()
    peer.send(fb.auth(0x18, auth_props(b"unasked")))
    t.check(c.expect_closed(3.0), "a broker's AUTH before the CONNACK of a CONNECT without a method ends it")
    t.check(all(p.type != h.AUTH for p in c.before_close), "the AUTH never reaches the client", c.before_close)
    c.close()
    peer.close()


def main():
    h.need_binaries()
    t = h.Checks("enhanced_auth")
    with tempfile.TemporaryDirectory() as tmp:
        broker = fb.FakeBroker()
        gate = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_LOG_LEVEL="debug",
                       MGATE_EXAMPLE_PROPERTIES="1", MGATE_EXAMPLE_REFUSE_AUTH_METHOD="forbidden")
        t.case("CONNECT, AUTH, AUTH, CONNACK, PUBLISH, re-authentication", exchange, t, gate, broker)
        t.case("a client that gives up before the CONNACK", client_gives_up, t, gate, broker)
        t.case("a PUBLISH before the CONNACK", publish_before_connack, t, gate, broker)
        t.case("AUTH from the broker without a method", auth_without_method, t, gate, broker)
        t.section("mgate")
        t.check(gate.alive(), "mgate still runs")
        broker.close()
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
