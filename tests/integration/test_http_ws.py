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
import socket
import struct
import tempfile

import harness as h
from test_http import BASE, Echo, gate

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsClient:
    """A client socket that sends an upgrade request and then masked frames."""

    def __init__(self, port, path, headers=(), timeout=10.0):
        self.s = socket.create_connection((h.HOST, port), timeout=timeout)
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.buf = b""
        req = (f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n")
        self.s.sendall(req.encode())

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self):
        """(status, {header: value}) of the answer to the upgrade; for a non-101 also the body."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
        hd = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if status != 101 and "content-length" in hd:
            self.body = self._read(int(hd["content-length"]))
        return status, hd

    def accept_ok(self, hd):
        want = base64.b64encode(hashlib.sha1(self.key.encode() + GUID).digest()).decode()
        return hd.get("sec-websocket-accept") == want

    def send(self, opcode, data, fin=True):
        mask = os.urandom(4)
        n = len(data)
        size = (struct.pack("!B", 0x80 | n) if n < 126 else struct.pack("!BH", 0x80 | 126, n) if n < 65536
                else struct.pack("!BQ", 0x80 | 127, n))
        body = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
        self.s.sendall(bytes([(0x80 if fin else 0) | opcode]) + size + mask + body)

    def frame(self):
        """(fin, opcode, payload, masked) of the next frame."""
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        key = self._read(4) if b1 & 0x80 else None
        data = self._read(n)
        if key:
            data = bytes(b ^ key[i & 3] for i, b in enumerate(data))
        return bool(b0 & 0x80), b0 & 0x0F, data, key is not None

    def close(self):
        self.s.close()


def echo_target(t, echo):
    c = WsClient(echo.port, "/messages/ws")
    st, hd = c.head()
    t.eq(st, 101, "the echo target answers an upgrade 101")
    t.check(c.accept_ok(hd), "with the Sec-WebSocket-Accept of the client's key", str(hd))
    c.send(0x1, "héllo".encode())
    t.eq(c.frame(), (True, 0x1, "héllo".encode(), False), "a text message comes back byte-exact, unmasked")
    blob = bytes(range(256)) * 3
    c.send(0x2, blob)
    t.eq(c.frame(), (True, 0x2, blob, False), "a binary message comes back byte-exact")
    big = os.urandom(200 * 1024)
    c.send(0x2, big)
    f = c.frame()
    t.check(f[1] == 0x2 and f[2] == big, "a 200 KiB message comes back byte-exact", f"op {f[1]} len {len(f[2])}")
    c.send(0x1, b"one ", fin=False)
    c.send(0x9, b"p")  # a ping between the fragments
    c.send(0x0, b"two ", fin=False)
    c.send(0x0, b"three")
    t.eq(c.frame(), (True, 0xA, b"p", False), "a ping between fragments is answered with a pong")
    t.eq(c.frame(), (True, 0x1, b"one two three", False), "a fragmented message comes back whole")
    c.send(0x8, struct.pack("!H", 1000) + b"bye")
    t.eq(c.frame(), (True, 0x8, struct.pack("!H", 1000) + b"bye", False), "a close is answered with the same close")
    c.close()
    t.eq(echo.stats().get("ws:/messages/ws"), 1, "the target counted the WebSocket")


def upgrade_today(t, g, echo):
    c = WsClient(g.port, f"{BASE}/ws", headers=[("Authorization", "TOKEN")])
    st, hd = c.head()
    t.eq(st, 200, "an upgrade on the HTTP listener is answered as plain HTTP (no WebSocket proxy yet)")
    e = json.loads(getattr(c, "body", b"{}") or b"{}")
    got = {k.lower(): v for k, v in e.get("headers", {}).items()}
    t.eq((e.get("method"), e.get("path")), ("GET", "/messages/ws"), "the target got the request")
    t.check("upgrade" not in got and "upgrade" not in got.get("connection", "").lower(),
            "forwarded without Upgrade and without Connection: upgrade", str(got))
    c.close()
    seen = echo.stats()
    t.eq(seen.get("ws:/messages/ws"), 1, "the target never saw a WebSocket from mgate (only the direct one)")
    c = WsClient(g.port, f"{BASE}/ws", headers=[("Authorization", "Basic " + base64.b64encode(b"baduser:pw").decode())])
    st, _ = c.head()
    t.eq(st, 401, "an upgrade whose credentials auth_connect refuses: 401")
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
