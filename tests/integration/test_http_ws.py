#!/usr/bin/python3
"""WebSocket on the HTTP listener: the test peers for the coming WebSocket proxy, and what an
upgrade request does today.

* The echo target's WebSocket side (examples/server/http-echo) against a hand-framed RFC 6455
  client: 101 with the right Sec-WebSocket-Accept, text, binary, 200 KiB and fragmented
  messages back byte-exact, ping answered, close answered.
* An upgrade request on an MGATE_HTTP_* listener is, until the proxy is built (docs/HTTP.md,
  "Not done yet"), a plain request: authorised, forwarded without Upgrade/Connection, answered
  by the target as HTTP; the target never sees a WebSocket.
"""
import base64
import hashlib
import json
import os
import struct
import tempfile

import harness as h
from test_http import BASE, Echo, gate
from test_ws import RawWs

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsClient(RawWs):
    """test_ws's hand-framed client, with the answer's headers (and body, when not 101) parsed."""

    def __init__(self, port, path, headers=()):
        super().__init__(port, path, protocol=None, headers=headers)
        self.s.settimeout(10)
        lines = self.head.split("\r\n")
        self.code = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        self.body = b""
        if self.code != 101 and "content-length" in self.headers:
            self._need(int(self.headers["content-length"]))
            self.body = self.buf

    def accept_ok(self):
        want = base64.b64encode(hashlib.sha1(self.key.encode() + GUID).digest()).decode()
        return self.headers.get("sec-websocket-accept") == want

    def close(self):
        self.s.close()


def echo_target(t, echo):
    c = WsClient(echo.port, "/messages/ws")
    t.eq(c.code, 101, "the echo target answers an upgrade 101")
    t.check(c.accept_ok(), "with the Sec-WebSocket-Accept of the client's key", str(c.headers))
    c.send_frame("héllo".encode(), 0x1)
    t.eq(c.recv_frame_bits(), (True, 0x1, "héllo".encode(), False), "a text message comes back byte-exact, unmasked")
    blob = bytes(range(256)) * 3
    c.send_frame(blob, 0x2)
    t.eq(c.recv_frame_bits(), (True, 0x2, blob, False), "a binary message comes back byte-exact")
    big = os.urandom(200 * 1024)
    c.send_frame(big, 0x2)
    f = c.recv_frame_bits()
    t.check(f[1] == 0x2 and f[2] == big, "a 200 KiB message comes back byte-exact", f"op {f[1]} len {len(f[2])}")
    c.send_frame(b"one ", 0x1, fin=False)
    c.send_frame(b"p", 0x9)  # a ping between the fragments
    c.send_frame(b"two ", 0x0, fin=False)
    c.send_frame(b"three", 0x0)
    t.eq(c.recv_frame_bits(), (True, 0xA, b"p", False), "a ping between fragments is answered with a pong")
    t.eq(c.recv_frame_bits(), (True, 0x1, b"one two three", False), "a fragmented message comes back whole")
    c.send_frame(struct.pack("!H", 1000) + b"bye", 0x8)
    t.eq(c.recv_frame_bits(), (True, 0x8, struct.pack("!H", 1000) + b"bye", False), "a close is answered with the same close")
    c.close()
    t.eq(echo.stats().get("ws:/messages/ws"), 1, "the target counted the WebSocket")


def upgrade_today(t, g, echo):
    c = WsClient(g.port, f"{BASE}/ws", headers=[("Authorization", "TOKEN")])
    t.eq(c.code, 200, "an upgrade on the HTTP listener is answered as plain HTTP (no WebSocket proxy yet)")
    e = json.loads(c.body or b"{}")
    got = {k.lower(): v for k, v in e.get("headers", {}).items()}
    t.eq((e.get("method"), e.get("path")), ("GET", "/messages/ws"), "the target got the request")
    t.check("upgrade" not in got and "upgrade" not in got.get("connection", "").lower(),
            "forwarded without Upgrade and without Connection: upgrade", str(got))
    c.close()
    seen = echo.stats()
    t.eq(seen.get("ws:/messages/ws"), 1, "the target never saw a WebSocket from mgate (only the direct one)")
    c = WsClient(g.port, f"{BASE}/ws", headers=[("Authorization", "Basic " + base64.b64encode(b"baduser:pw").decode())])
    t.eq(c.code, 401, "an upgrade whose credentials auth_connect refuses: 401")
    c.close()


def main():
    h.need_binaries()
    t = h.Checks("http_ws")
    with tempfile.TemporaryDirectory() as tmp:
        echo = Echo(tmp)
        g = gate(tmp, echo.port)
        t.case("the echo target's WebSocket", echo_target, t, echo)
        t.case("an upgrade on the HTTP listener today", upgrade_today, t, g, echo)
        t.check(g.alive(), "mgate still runs")
        rc = h.finish(t)
        echo.stop()
        return rc


if __name__ == "__main__":
    h.run_main(main)
