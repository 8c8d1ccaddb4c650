#!/usr/bin/python3
"""WebSocket on the HTTP listener (MGATE_HTTP_*): mgate-example in front of examples/server/http-echo,
driven by a hand-framed RFC 6455 client (test_ws.RawWs, over TCP or TLS).

* The echo target's own WebSocket side, straight: 101, text, binary, 200 KiB, fragmented, ping, close.
* Through mgate: 101 with the accept of the client's key; text (non-ASCII), binary, 200 KiB and
  fragmented messages both ways byte-exact, each as one frame; a ping between fragments and an
  unsolicited pong handled by mgate (never seen by the target); frames sent right behind the
  upgrade request relayed after the 101; the subprotocol the target chose; what the target's
  upgrade request held (path and query, Authorization, Origin, the offered subprotocols, other
  headers, X-Forwarded-*, its own key, no Sec-WebSocket-Extensions).
* Refused at the upgrade, and never a WebSocket at the target: 401 (the three credential
  sources, and a late refusal; a late allowance gives 101), 403 (auth_subscribe on the path,
  Origin), 404 (PATH_PREFIX, TARGET_PATH), 426 (version), 400 (key missing or not 16 bytes), each
  with a JSON body and the connection closed after it; a BYPASS_PATHS path without any handler call.
* The relay: a message auth_publish refuses (payload deny-payload) dropped, the next one passes in
  order; messages down refused by auth_subscribe (a path with "secret") while pings are answered;
  order of 20 messages behind late verdicts ("/slow/"); the target's ping answered by mgate.
* Endings: close from the client and from the target (code and reason passed on both ways), the
  target dropping the TCP connection (1001 to the client), the client leaving (1001 to the target),
  bad frames from the client (unmasked, RSV, opcode, long or fragmented ping, lone CONT,
  non-minimal length, bad close: 1002 to it, 1001 to the target) and from the target (masked:
  1002 to it, 1001 to the client), a message over MAX_BODY_SIZE (1009, exactly the limit passes),
  IDLE_TIMEOUT (1001; messages and pings keep it open), SIGTERM (1001 both ways, 503 to an
  upgrade still waiting for the target, exit 0).
* The target refusing the upgrade: down (502), not 101 (502), a wrong accept (502), too slow
  (TARGET_TIMEOUT, 504).
* The TLS listener (MGATE_HTTP_WITH_TLS_*): the same round trip, X-Forwarded-Proto https.
* TARGET_PROTOCOL https (the echo target serving TLS): a round trip; a target certificate mgate
  cannot verify gives 502.

The example handler (examples/handler/custom_handler.c) decides: Basic user "baduser" and password
"deny-password" are refused at auth_connect, a path with "forbidden" at auth_subscribe (403), a
message whose payload is "deny-payload" at auth_publish, a message down on a path with "secret"
at delivery; "/slow/" makes auth_publish answer 100 ms later. The echo target's commands
(headers?, close-me, drop-me, ping-me, mask-me), special paths, /stats keys and HTTPS mode are
in its docstring; the first case checks them against the echo directly.
"""
import base64
import hashlib
import json
import os
import signal
import socket
import struct
import tempfile
import threading
import time

import harness as h
from test_admin import metrics
from test_http import BASE, PREFIX, Echo, gate
from test_http_tls import TLS, listener
from test_ws import RawWs, fake_ws_peer, upgraded

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def close_payload(code, reason=""):
    return struct.pack("!H", code) + reason.encode()


def wire(payload, b0, mask=None):
    """One masked frame as bytes, its first byte (FIN, RSV, opcode) as given; lengths under 126."""
    mask = os.urandom(4) if mask is None else mask
    return bytes([b0, 0x80 | len(payload)]) + mask + bytes(x ^ mask[i & 3] for i, x in enumerate(payload))


class WsClient(RawWs):
    """test_ws's hand-framed client, over TCP or TLS (tls: a client SSLContext), with the
    answer's headers (and body, when not 101) parsed. key=False and version=None leave those
    headers out; key and version given as strings are sent as they are. early: bytes sent in the
    same write, right behind the request head (frames before the 101)."""

    def __init__(self, port, path, headers=(), key=None, version="13", tls=None, timeout=5.0, early=b""):
        s = socket.create_connection((h.HOST, port), timeout=timeout)
        self.s = tls.wrap_socket(s, server_hostname="localhost") if tls else s
        self.key = base64.b64encode(os.urandom(16)).decode() if key is None else key
        req = [f"GET {path} HTTP/1.1", f"Host: localhost:{port}", "Upgrade: websocket", "Connection: Upgrade"]
        if self.key is not False:
            req.append(f"Sec-WebSocket-Key: {self.key}")
        if version is not None:
            req.append(f"Sec-WebSocket-Version: {version}")
        req += [f"{k}: {v}" for k, v in headers]
        self.s.sendall(("\r\n".join(req) + "\r\n\r\n").encode() + early)
        self.buf = b""
        while b"\r\n\r\n" not in self.buf and (chunk := self.s.recv(4096)):
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.head = head.decode(errors="replace")
        lines = self.head.split("\r\n")
        self.code = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        self.body = b""
        if self.code != 101 and "content-length" in self.headers:
            self._need(int(self.headers["content-length"]))
            self.body, self.buf = self.buf[:int(self.headers["content-length"])], b""

    def accept_ok(self):
        want = base64.b64encode(hashlib.sha1(self.key.encode() + GUID).digest()).decode()
        return self.headers.get("sec-websocket-accept") == want

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return {}

    def frame(self, seconds=5.0):
        """(fin, opcode, payload, masked) of the next frame, or "eof", or "timeout"."""
        self.s.settimeout(seconds)
        try:
            return self.recv_frame_bits()
        except socket.timeout:
            return "timeout"
        except (h.Closed, OSError):
            return "eof"

    def ended(self, seconds=3.0):
        """True when the connection ends (EOF or reset) within seconds; what comes before is read and dropped."""
        self.s.settimeout(seconds)
        try:
            while self.s.recv(65536):
                pass
            return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        self.s.close()


def basic(user):
    """The headers of HTTP Basic credentials for user (password pw)."""
    return [("Authorization", "Basic " + base64.b64encode(f"{user}:pw".encode()).decode())]


def ws_ok(c):
    """The checks of a good 101 to the client, as one value to compare: (code, accept ok,
    Upgrade, Connection has upgrade)."""
    return (c.code, c.accept_ok(), c.headers.get("upgrade", "").lower(),
            "upgrade" in c.headers.get("connection", "").lower())


GOOD_101 = (101, True, "websocket", True)


def echo_value(echo, key, timeout=3.0):
    """The echo target's /stats value for key, waiting up to timeout for it to appear."""
    return h.wait_until(lambda: echo.stats().get(key), timeout)


def data(payload, op=TEXT):
    """A whole unmasked frame from mgate, as recv_frame_bits gives it."""
    return (True, op, payload, False)


def short(f):
    """A frame (or "eof"/"timeout") for a failure's detail: long payloads as their length."""
    if isinstance(f, tuple) and len(f[2]) > 64:
        return f[:2] + (f"{len(f[2])} bytes {f[2][:16]!r}...",) + f[3:]
    return f


def frame_eq(t, got, want, what):
    """Check one frame (or a list of frames) against what was expected."""
    if isinstance(got, list):
        return t.check(got == want, what, f"got {[short(f) for f in got]!r}, want {[short(f) for f in want]!r}")
    return t.check(got == want, what, f"got {short(got)!r}, want {short(want)!r}")


def close_code(f):
    """The code of a close frame f; anything else as it came (short)."""
    if isinstance(f, tuple) and f[1] == CLOSE and len(f[2]) >= 2:
        return struct.unpack("!H", f[2][:2])[0]
    return short(f)


# ---------------------------------------------------------------------------


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
    # the echo's own commands, straight, so that a failure through mgate is mgate's
    c = WsClient(echo.port, "/messages/cmd?q=1", headers=[("Sec-WebSocket-Protocol", "chat, superchat"), ("X-A", "b")])
    t.eq(c.headers.get("sec-websocket-protocol"), "chat", "the echo chooses the first subprotocol offered")
    c.send_frame(b"headers?", TEXT)
    f = c.frame()
    up = json.loads(f[2]) if isinstance(f, tuple) else {}
    t.eq((up.get("path"), up.get("query"), up.get("headers", {}).get("X-A")), ("/messages/cmd", "q=1", "b"),
         "headers?: the echo answers the JSON of the upgrade request")
    c.send_frame(b"ping-me", TEXT)
    frame_eq(t, c.frame(), data(b"from-target", PING), "ping-me: the echo pings")
    c.send_frame(b"from-target", PONG)
    frame_eq(t, c.frame(), data(b"pong:from-target"), "... and reports the pong")
    c.send_frame(b"mask-me", TEXT)
    frame_eq(t, c.frame(), (True, TEXT, b"masked", True), "mask-me: the echo sends a masked frame")
    c.send_frame(b"close-me", TEXT)
    frame_eq(t, c.frame(), data(close_payload(1000, "bye"), CLOSE), "close-me: the echo closes 1000 bye")
    c.send_frame(close_payload(1000, "bye"), CLOSE)
    t.check(c.ended(), "... and ends after the answer")
    seen = echo.stats()
    t.eq([seen.get(k + ":/messages/cmd") for k in ("ws-msg", "ws-pong", "ws-ping", "ws-bad", "ws-close")],
         [4, 1, None, None, "1000 bye"], "the echo's stats for it")
    c = WsClient(echo.port, "/messages/cmd-drop")
    c.send_frame(b"drop-me", TEXT)
    t.eq(c.frame(), "eof", "drop-me: the echo drops the connection without a close")
    c = WsClient(echo.port, "/messages/no-upgrade")
    t.eq(c.code, 403, "an upgrade on /no-upgrade: 403 as plain HTTP")
    c = WsClient(echo.port, "/messages/bad-accept")
    t.check(c.code == 101 and not c.accept_ok(), "an upgrade on /bad-accept: 101 with a wrong accept", c.head)
    c.close()


def round_trip(t, port, echo, path, tls=None, proto="http"):
    """101 and messages both ways through mgate on port; path is below BASE."""
    c = WsClient(port, f"{BASE}/{path}", tls=tls)
    t.eq(ws_ok(c), GOOD_101, f"{proto}: 101 Switching Protocols, the accept of the client's own key, "
                             "Upgrade: websocket, Connection: Upgrade")
    t.check("sec-websocket-protocol" not in c.headers and "sec-websocket-extensions" not in c.headers,
            f"{proto}: no subprotocol offered, none chosen; no extension", c.head)
    t.eq(echo.stats().get(f"ws:/messages/{path}"), 1, f"{proto}: the target got one WebSocket, on the path below PATH_PREFIX")
    text = "héllo wörld ✓ 🙂".encode()
    c.send_frame(text, TEXT)
    frame_eq(t, c.frame(), data(text), f"{proto}: a text message (non-ASCII) comes back byte-exact, unmasked, one frame")
    blob = bytes(range(256)) * 3
    c.send_frame(blob, BINARY)
    frame_eq(t, c.frame(), data(blob, BINARY), f"{proto}: a binary message comes back byte-exact, still binary")
    big = os.urandom(200 * 1024)
    c.send_frame(big, BINARY)
    f = c.frame(10)
    t.check(f not in ("eof", "timeout") and f[:2] == (True, BINARY) and f[2] == big and not f[3],
            f"{proto}: a 200 KiB message comes back byte-exact as one frame",
            f if isinstance(f, str) else f"fin {f[0]} op {f[1]} len {len(f[2])}")
    c.send_frame(b"one ", TEXT, fin=False)
    c.send_frame(b"ping-between", PING)
    c.send_frame(b"two ", CONT, fin=False)
    c.send_frame(b"three", CONT)
    frame_eq(t, c.frame(), data(b"ping-between", PONG), f"{proto}: a ping between fragments: mgate answers the pong")
    frame_eq(t, c.frame(), data(b"one two three"), f"{proto}: the fragmented message comes back whole, as one text frame")
    c.send_frame(b"unasked", PONG)
    c.send_frame(b"after-pong", TEXT)
    frame_eq(t, c.frame(), data(b"after-pong"), f"{proto}: an unsolicited pong is dropped, the next message passes")
    seen = echo.stats()
    t.eq([seen.get(f"ws-{k}:/messages/{path}") for k in ("msg", "ping", "pong", "bad")], [5, None, None, None],
         f"{proto}: the target got the 5 messages, each as one masked frame, and no ping or pong")
    c.send_frame(close_payload(4000, "client-bye"), CLOSE)
    frame_eq(t, c.frame(), data(close_payload(4000, "client-bye"), CLOSE),
             f"{proto}: a close from the client is answered with the same code and reason")
    t.check(c.ended(), f"{proto}: then the connection ends")
    t.eq(echo_value(echo, f"ws-close:/messages/{path}"), "4000 client-bye",
         f"{proto}: the target got a close with the client's code and reason")
    c.close()


def early_frames(t, g):
    c = WsClient(g.port, f"{BASE}/early", early=wire(b"early-1", 0x81) + wire(b"early-2", 0x82))
    t.eq(c.code, 101, "frames sent right behind the upgrade request: 101")
    frame_eq(t, [c.frame(), c.frame()], [data(b"early-1"), data(b"early-2", BINARY)],
             "... and those frames are relayed after it, in order")
    c.close()


def headers_and_subprotocol(t, g, echo):
    c = WsClient(g.port, f"{BASE}/hd?a=1&b=two", headers=[
        ("Authorization", "Bearer tok-1"), ("Origin", "https://app.example"),
        ("Sec-WebSocket-Protocol", "chat, superchat"), ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ("X-Custom", "yes")])
    t.eq(ws_ok(c), GOOD_101, "an upgrade offering subprotocols and an extension: 101")
    t.eq(c.headers.get("sec-websocket-protocol"), "chat", "the 101 carries the subprotocol the target chose")
    t.check("sec-websocket-extensions" not in c.headers, "and no extension", c.head)
    c.send_frame(b"headers?", TEXT)
    f = c.frame()
    up = json.loads(f[2]) if f not in ("eof", "timeout") and f[1] == TEXT else {}
    hd = {k.lower(): v for k, v in up.get("headers", {}).items()}
    t.eq((up.get("path"), up.get("query")), ("/messages/hd", "a=1&b=two"),
         "the target's upgrade: the path below PATH_PREFIX and the same query")
    t.eq((hd.get("authorization"), hd.get("origin"), hd.get("sec-websocket-protocol"), hd.get("x-custom")),
         ("Bearer tok-1", "https://app.example", "chat, superchat", "yes"),
         "the target got the client's Authorization, Origin, offered subprotocols and other headers")
    t.eq((hd.get("x-forwarded-for"), hd.get("x-forwarded-proto"), bool(hd.get("x-forwarded-host"))),
         (h.HOST, "http", True), "the target got X-Forwarded-For, X-Forwarded-Proto http, X-Forwarded-Host")
    t.check("sec-websocket-extensions" not in hd, "the target got no Sec-WebSocket-Extensions", str(hd))
    t.check(hd.get("sec-websocket-version") == "13" and hd.get("sec-websocket-key") not in (None, c.key)
            and len(base64.b64decode(hd.get("sec-websocket-key", ""))) == 16,
            "the target got version 13 and mgate's own 16-byte key, not the client's", str(hd))
    t.check(hd.get("upgrade", "").lower() == "websocket" and "upgrade" in hd.get("connection", "").lower(),
            "the target got Upgrade: websocket, Connection: Upgrade", str(hd))
    c.close()


def refused_at_upgrade(t, g, g_lim, echo):
    before = {k for k in echo.stats() if k.startswith("ws:")}
    key15, key17 = (base64.b64encode(b"x" * n).decode() for n in (15, 17))
    for what, gw, path, kw, code in [
            ("credentials auth_connect refuses (Authorization header deny-password)", g, f"{BASE}/r401a",
             {"headers": [("Authorization", "deny-password")]}, 401),
            ("credentials auth_connect refuses (Basic user baduser)", g, f"{BASE}/r401b", {"headers": basic("baduser")}, 401),
            ("credentials auth_connect refuses (?authorization=deny-password)", g,
             f"{BASE}/r401c?authorization=deny-password", {}, 401),
            ("auth_connect refusing 200 ms later", g, f"{BASE}/late-deny", {"headers": basic("slowdeny")}, 401),
            ("a path auth_subscribe refuses (forbidden)", g, f"{BASE}/forbidden/ws",
             {"headers": [("Authorization", "TOKEN")]}, 403),
            ("an Origin outside ALLOWED_ORIGINS", g_lim, f"{BASE}/evil", {"headers": [("Origin", "https://evil.example")]}, 403),
            ("a path outside PATH_PREFIX", g, "/elsewhere/ws", {}, 404),
            ("a path under PATH_PREFIX but outside TARGET_PATH", g, f"{PREFIX}/other/ws", {}, 404),
            ("Sec-WebSocket-Version 8", g, f"{BASE}/v8", {"version": "8"}, 426),
            ("Sec-WebSocket-Key missing", g, f"{BASE}/key", {"key": False}, 400),
            ("Sec-WebSocket-Key not base64", g, f"{BASE}/key", {"key": "not base64 at all!"}, 400),
            ("Sec-WebSocket-Key base64 of 15 bytes", g, f"{BASE}/key", {"key": key15}, 400),
            ("Sec-WebSocket-Key base64 of 17 bytes", g, f"{BASE}/key", {"key": key17}, 400)]:
        c = WsClient(gw.port, path, **kw)
        t.eq((c.code, c.json().get("status")), (code, code), f"upgrade with {what}: {code}, JSON body")
        if code == 426:
            t.eq(c.headers.get("sec-websocket-version"), "13", "... (426) with Sec-WebSocket-Version: 13")
        t.check(c.ended(), f"... ({what}) and the connection is closed")
    c = WsClient(g.port, f"{BASE}/nov", version=None)
    t.check(c.code in (400, 426), "no Sec-WebSocket-Version: refused (426 or 400)", str(c.code))
    c.close()
    t0 = time.monotonic()
    c = WsClient(g.port, f"{BASE}/late-allow", headers=basic("slow"))
    t.check(c.code == 101 and time.monotonic() - t0 >= 0.19, "auth_connect allowing 200 ms later: 101",
            f"{c.code} after {time.monotonic() - t0:.2f} s")
    c.close()
    c = WsClient(g_lim.port, f"{BASE}/good", headers=[("Origin", "https://good.example")])
    t.eq(c.code, 101, "upgrade with an allowed Origin: 101")
    c.close()
    after = {k for k in echo.stats() if k.startswith("ws:")}
    t.eq(after - before, {"ws:/messages/good", "ws:/messages/late-allow"},
         "none of the refused upgrades became a WebSocket at the target")
    t.check(g.alive() and g_lim.alive(), "mgate still runs")


def bypass(t, g_lim, echo):
    c = WsClient(g_lim.port, f"{PREFIX}/open/secret/by",
                 headers=basic("baduser"))
    t.eq(ws_ok(c), GOOD_101, "a BYPASS_PATHS path: 101 without asking the handler (baduser, outside TARGET_PATH)")
    c.send_frame(b"deny-payload", TEXT)
    frame_eq(t, c.frame(), data(b"deny-payload"),
             "a bypass path's relay checks no message: deny-payload goes up, and comes down on a 'secret' path")
    c.send_frame(close_payload(1000), CLOSE)
    frame_eq(t, c.frame(), data(close_payload(1000), CLOSE), "... and closes normally")
    c.close()
    c = WsClient(g_lim.port, f"{PREFIX}/open/x")
    t.eq(c.code, 101, "a BYPASS_PATHS path needs no credentials at all")
    c.close()


def refused_up(t, g, echo):
    path = "/messages/up"
    c = WsClient(g.port, f"{PREFIX}{path}")
    t.eq(c.code, 101, "a WebSocket for the refusals up: 101")
    c.send_frame(b"m1", TEXT)
    c.send_frame(b"deny-payload", TEXT)
    c.send_frame(b"m2", TEXT)
    c.send_frame(b"deny-payload", BINARY)
    c.send_frame(b"deny-", TEXT, fin=False)
    c.send_frame(b"payload", CONT)
    c.send_frame(b"m3", BINARY)
    got = [c.frame() for _ in range(3)]
    frame_eq(t, got, [data(b"m1"), data(b"m2"), data(b"m3", BINARY)],
             "messages auth_publish refuses (deny-payload: text, binary, fragmented) are dropped; the others pass in order")
    t.eq(echo.stats().get(f"ws-msg:{path}"), 3, "the target got only the 3 allowed messages")
    c.send_frame(b"still", TEXT)
    frame_eq(t, c.frame(), data(b"still"), "the connection stays after refusals")
    c.close()


SESSION_LOG_BURST = 5  # src/session/session.h: lines a second per session


def refusal_flood_up(t, tmp, echo):
    """A flood of refused messages on one WebSocket is logged within the session's budget
    (session_log: SESSION_LOG_BURST lines a second), the lines left out counted on a later one;
    /metrics counts every refused message."""
    admin, n = h.free_port(), 2000
    g = gate(tmp, echo.port, MGATE_ADMIN_PORT=admin, MGATE_WORKERS=1)
    before = metrics(admin)
    mark = g.log.mark()
    c = WsClient(g.port, f"{PREFIX}/messages/flood", timeout=20)
    t.eq(c.code, 101, "a WebSocket for a flood of refusals: 101")
    t0 = time.monotonic()
    c.s.sendall(wire(b"deny-payload", 0x80 | TEXT) * n + wire(b"marker", 0x80 | TEXT))
    frame_eq(t, c.frame(), data(b"marker"), f"{n} refused messages dropped, the next one relayed")
    secs = time.monotonic() - t0
    refusal = r'"msg":"websocket: a message up refused'
    lines = g.log.count(refusal, mark)
    bound = SESSION_LOG_BURST * (int(secs) + 2)
    t.check(lines <= bound, f"{n} refusals in {secs:.1f} s: at most {bound} log lines", f"{lines} lines")
    time.sleep(1.05)  # a later second: its first line says how many were left out
    c.send_frame(b"deny-payload", TEXT)
    c.send_frame(b"marker2", TEXT)
    frame_eq(t, c.frame(), data(b"marker2"), "one more refusal a second later, then a message relayed")
    every = [json.loads(x) for x in g.log.text(mark).splitlines() if "websocket: a message up refused" in x]
    told = sum(j.get("left_out", 0) for j in every[:lines + 1])  # each line: those left out since the last
    t.eq(lines + told, n, "the lines written plus the counts later lines give: every refused message")
    key = 'mgate_publish_refused_total{direction="client_to_broker"}'
    t.eq(metrics(admin).get(key, 0) - before.get(key, 0), n + 1, "/metrics counts every refused message")
    c.close()


def refused_down(t, g, echo):
    path = "/messages/secret/x"
    c = WsClient(g.port, f"{PREFIX}{path}")
    t.eq(c.code, 101, "a path with 'secret' (auth_subscribe refuses deliveries only): 101")
    c.send_frame(b"s1", TEXT)
    c.send_frame(b"s2", BINARY)
    h.wait_until(lambda: echo.stats().get(f"ws-msg:{path}") == 2, 3.0)
    t.eq(echo.stats().get(f"ws-msg:{path}"), 2, "messages up still reach the target (it echoed both)")
    time.sleep(0.3)  # let the echoes reach mgate: they must not come out
    c.send_frame(b"still-here", PING)
    frame_eq(t, c.frame(), data(b"still-here", PONG), "the messages down are dropped; a ping is still answered")
    c.send_frame(close_payload(1000, "done"), CLOSE)
    frame_eq(t, c.frame(), data(close_payload(1000, "done"), CLOSE), "nothing but the close came down")
    c.close()


def order_slow(t, g, echo):
    c = WsClient(g.port, f"{BASE}/slow/order")
    t.eq(c.code, 101, "a '/slow/' path (auth_publish answers 100 ms later): 101")
    want = [f"n{i}".encode() for i in range(20)]
    t0 = time.monotonic()
    for m in want:
        c.send_frame(m, TEXT)
    got = [c.frame(10) for _ in want]
    took = time.monotonic() - t0
    t.eq([f[2] if isinstance(f, tuple) else f for f in got], want,
         "20 messages behind late verdicts come back all, in order")
    t.check(took >= 0.1, "... after the verdicts (not before 100 ms)", f"{took:.2f} s")
    c.close()


def target_ping(t, g, echo):
    c = WsClient(g.port, f"{BASE}/tping")
    c.send_frame(b"ping-me", TEXT)
    frame_eq(t, c.frame(), data(b"pong:from-target"),
             "a ping from the target is answered by mgate (the target got its pong), the client sees no ping")
    c.close()


def endings(t, g, echo):
    c = WsClient(g.port, f"{BASE}/tclose")
    c.send_frame(b"close-me", TEXT)
    frame_eq(t, c.frame(), data(close_payload(1000, "bye"), CLOSE),
             "a close from the target: the client gets its code and reason")
    c.send_frame(close_payload(1000, "bye"), CLOSE)
    t.check(c.ended(), "... then the connection ends")
    t.eq(echo_value(echo, "ws-close:/messages/tclose"), "1000 bye", "... and the target's close was answered with the same")
    c.close()
    c = WsClient(g.port, f"{BASE}/tdrop")
    c.send_frame(b"drop-me", TEXT)
    t.eq(close_code(c.frame()), 1001, "the target drops the TCP connection without a close: the client gets close 1001")
    c.send_frame(close_payload(1001), CLOSE)
    t.check(c.ended(), "... then, the client's close answered, the connection ends")
    c.close()
    c = WsClient(g.port, f"{BASE}/cgone")
    c.send_frame(b"x", TEXT)
    c.frame()
    c.close()
    v = echo_value(echo, "ws-close:/messages/cgone")
    t.check(isinstance(v, str) and v.startswith("1001"), "the client leaves without a close: the target gets close 1001", v)


def target_bad_frame(t, g, echo):
    c = WsClient(g.port, f"{BASE}/tmask")
    c.send_frame(b"mask-me", TEXT)
    t.eq(close_code(c.frame()), 1001, "a masked frame from the target: close 1001 to the client")
    v = echo_value(echo, "ws-close:/messages/tmask")
    t.check(isinstance(v, str) and v.startswith("1002"), "... and close 1002 to the target", v)
    c.close()


def bad_frames(t, g, echo):
    for what, path, bad in [
            ("an unmasked frame", "bad-unmasked", b"\x81\x02hi"),
            ("RSV1 set", "bad-rsv", wire(b"hi", 0xC1)),
            ("an unknown opcode (3)", "bad-op", wire(b"hi", 0x83)),
            ("a ping of 126 bytes", "bad-ping", b"\x89\xfe" + struct.pack("!H", 126) + b"\0\0\0\0" + b"p" * 126),
            ("a fragmented ping", "bad-fping", wire(b"p", 0x09)),
            ("CONT without a message", "bad-cont", wire(b"hi", 0x80)),
            ("a length in 16 bits that fits in 7", "bad-len", b"\x81\xfe\x00\x02\0\0\0\0hi"),
            ("a close of 1 byte", "bad-close1", wire(b"\x03", 0x88)),
            ("a close with code 1005 (never sent)", "bad-close1005", wire(close_payload(1005), 0x88))]:
        c = WsClient(g.port, f"{BASE}/{path}")
        c.s.sendall(bad)
        t.eq(close_code(c.frame()), 1002, f"{what} from the client: close 1002")
        t.check(c.ended(), f"... ({what}) then the connection ends")
        v = echo_value(echo, f"ws-close:/messages/{path}")
        t.check(isinstance(v, str) and v.startswith("1001"), f"... ({what}) and the target gets close 1001", v)
        t.eq(echo.stats().get(f"ws-msg:/messages/{path}"), None, f"... ({what}) and no message")
        c.close()


def oversize(t, g_lim, echo):
    c = WsClient(g_lim.port, f"{BASE}/size")
    t.eq(c.code, 101, "MAX_BODY_SIZE 4KiB: 101")
    c.send_frame(b"s" * 4096, BINARY)
    frame_eq(t, c.frame(), data(b"s" * 4096, BINARY), "a message of exactly MAX_BODY_SIZE passes")
    c.send_frame(b"s" * 4097, BINARY)
    t.eq(close_code(c.frame()), 1009, "a message of MAX_BODY_SIZE + 1: close 1009")
    t.check(c.ended(), "... then the connection ends")
    v = echo_value(echo, "ws-close:/messages/size")
    t.check(isinstance(v, str) and v.startswith("1001"), "... and the target gets close 1001", v)
    c.close()
    c = WsClient(g_lim.port, f"{BASE}/size2")
    for i in range(3):
        c.send_frame(b"f" * 2000, BINARY if i == 0 else CONT, fin=False)
    t.eq(close_code(c.frame()), 1009, "a fragmented message growing over MAX_BODY_SIZE: close 1009")
    c.close()


def target_refuses(t, tmp, g, g_idle, echo):
    down = gate(tmp, h.free_port())
    offer = [("Sec-WebSocket-Protocol", "chat, superchat")]
    for what, port, path, code, hd in [
            ("the target down", down.port, "down", 502, ()),
            ("the target answering 403 as plain HTTP", g.port, "no-upgrade", 502, ()),
            ("the target's 101 with a wrong Sec-WebSocket-Accept", g.port, "bad-accept", 502, ()),
            ("the target's 101 naming a subprotocol the client did not offer (RFC 6455 4.1)", g.port,
             "bad-protocol", 502, offer),
            ("the target's 101 naming a subprotocol when the client offered none", g.port, "bad-protocol", 502, ())]:
        c = WsClient(port, f"{BASE}/{path}", headers=hd)
        t.eq((c.code, c.json().get("status"), c.headers.get("connection", "").lower()), (code, code, "close"),
             f"{what}: {code}, JSON, Connection: close")
        t.check(c.ended(), f"... ({what}) and the connection is closed")
        c.close()
    t0 = time.monotonic()
    c = WsClient(g_idle.port, f"{BASE}/slow-upgrade?ms=3000")
    took = time.monotonic() - t0
    t.check(c.code == 504 and c.headers.get("connection", "").lower() == "close" and took < 2.5,
            "the target's 101 later than TARGET_TIMEOUT (1 s): 504, Connection: close", f"{c.code} after {took:.2f} s")
    c.close()
    down.stop()


def target_greets_and_closes(t, tmp):
    """A target whose 101, a message and its close frame come in one read (a "server full, bye"):
    the client gets the 101, the message and the close, in that order."""
    bye = close_payload(1013, "full")
    ls = fake_ws_peer(lambda accept: upgraded(accept, b"\x81\x05hello" + b"\x88" + bytes([len(bye)]) + bye))
    g = gate(tmp, ls.getsockname()[1])
    c = WsClient(g.port, f"{BASE}/greet")
    t.eq(ws_ok(c), GOOD_101, "a target's 101, message and close in one read: the client gets its 101")
    frame_eq(t, [c.frame(), c.frame()], [data(b"hello"), data(bye, CLOSE)], "... then the message and the close")
    c.close()
    g.stop()
    ls.close()


def idle(t, g_idle, echo):
    c = WsClient(g_idle.port, f"{BASE}/idle")
    t.eq(c.code, 101, "IDLE_TIMEOUT 1s: 101")
    got = []
    for i in range(6):  # a message or a ping every 0.4 s for 2.4 s: never idle for 1 s
        c.send_frame(b"i%d" % i, TEXT if i % 2 else PING)
        got.append(c.frame())
        time.sleep(0.4)
    frame_eq(t, got, [data(b"i%d" % i, TEXT if i % 2 else PONG) for i in range(6)],
             "messages and pings more often than IDLE_TIMEOUT keep the WebSocket open")
    t0 = time.monotonic()
    f = c.frame(5)
    took = time.monotonic() - t0
    t.check(close_code(f) == 1001 and took < 3, "no frame for IDLE_TIMEOUT: close 1001 to the client",
            f"{close_code(f)!r} after {took:.2f} s")
    c.send_frame(close_payload(1001), CLOSE)
    v = echo_value(echo, "ws-close:/messages/idle")
    t.check(isinstance(v, str) and v.startswith("1001"), "... and close 1001 to the target", v)
    c.close()


def verdict_timeout(t, g_idle, echo):
    c = WsClient(g_idle.port, f"{BASE}/late")
    t.eq(c.code, 101, "REQUEST_TIMEOUT 1s: 101")
    t0 = time.monotonic()
    c.send_frame(b"late-payload", TEXT)  # the example handler answers 2 s later
    f = c.frame(5)
    took = time.monotonic() - t0
    t.check(close_code(f) == 1011 and 0.8 < took < 1.8, "a verdict pending longer than REQUEST_TIMEOUT: close 1011",
            f"{close_code(f)!r} after {took:.2f} s")
    c.send_frame(close_payload(1011), CLOSE)
    v = echo_value(echo, "ws-close:/messages/late")
    t.check(isinstance(v, str) and v.startswith("1001"), "... and close 1001 to the target", v)
    t.eq(echo.stats().get("ws-msg:/messages/late", 0), 0, "... which never got the message")
    c.close()
    time.sleep(1.5)  # the verdict arrives after the relay is gone: freed, nothing sent
    t.check(g_idle.alive(), "mgate takes the late verdict of a closed WebSocket")
    c = WsClient(g_idle.port, f"{BASE}/after-late")
    c.send_frame(b"next", TEXT)
    frame_eq(t, c.frame(), data(b"next"), "... and serves the next WebSocket")
    c.close()


def send_for(c, blob, seconds):
    """Send blob until the socket stays blocked for `seconds` (mgate stopped reading): bytes sent."""
    c.s.settimeout(seconds)
    sent = 0
    try:
        while sent < 64 << 20:
            c.s.sendall(blob)
            sent += len(blob)
    except (socket.timeout, BlockingIOError):
        pass
    return sent


def reader_stops(t, g, echo):
    base = g.rss_kib()
    c = WsClient(g.port, f"{BASE}/stalled")
    msg = os.urandom(64 * 1024)
    n = 0
    c.s.settimeout(2)
    try:  # messages whose echoes nobody reads: mgate stops reading the target, the target the client
        while n < 400:
            c.send_frame(msg, BINARY)
            n += 1
    except (socket.timeout, BlockingIOError):
        pass
    grown = g.rss_kib() - base
    t.check(20 < n < 400 and grown < 8 * 1024,
            "a client that sends 64 KiB messages and reads nothing is stopped; mgate's memory stays bounded",
            f"{n} messages sent before the block, RSS +{grown} KiB")
    c.s.settimeout(10)
    got = 0
    while got < n:  # now read: every message sent comes back, whole
        f = c.frame(10)
        if not (isinstance(f, tuple) and f[1] == BINARY and f[2] == msg):
            break
        got += 1
    t.eq(got, n, "... and once it reads, all of them come back, byte-exact")
    c.close()
    c = WsClient(g.port, f"{BASE}/ping-flood")
    sent = send_for(c, wire(b"p" * 125, 0x80 | PING) * 500, 2)
    grown = g.rss_kib() - base
    t.check(sent < 32 << 20 and grown < 8 * 1024,
            "a client that sends pings and reads no pong is stopped too; memory stays bounded",
            f"{sent >> 10} KiB of pings sent before the block, RSS +{grown} KiB")
    c.close()
    c = WsClient(g.port, f"{BASE}/after-flood")
    c.send_frame(b"still", TEXT)
    frame_eq(t, c.frame(), data(b"still"), "mgate serves the next WebSocket")
    c.close()


def counted(t, admin, before):
    """What the cases above did, in /metrics (test_admin's scraper)."""
    m = metrics(admin)
    d = {k: m.get(k, 0) - before.get(k, 0) for k in m}
    up, down = 'direction="client_to_broker"', 'direction="broker_to_client"'
    t.check(d.get("mgate_http_websockets_total", 0) >= 10, "/metrics: the WebSockets opened are counted",
            str(d.get("mgate_http_websockets_total")))
    t.check(d.get(f"mgate_http_websocket_messages_total{{{up}}}", 0) >= 20 and
            d.get(f"mgate_http_websocket_messages_total{{{down}}}", 0) >= 20 and
            d.get(f"mgate_http_websocket_bytes_total{{{up}}}", 0) >= 200 * 1024,
            "/metrics: messages and bytes relayed both ways", str({k: v for k, v in d.items() if "websocket" in k}))
    t.check(d.get(f"mgate_publish_refused_total{{{up}}}", 0) >= 3 and
            d.get(f"mgate_publish_refused_total{{{down}}}", 0) >= 2,
            "/metrics: messages refused up (deny-payload) and down (secret) are counted",
            str({k: v for k, v in d.items() if "refused" in k}))
    t.check(d.get('mgate_http_responses_total{code="4xx"}', 0) >= 5 and
            d.get('mgate_http_responses_total{code="5xx"}', 0) >= 2,
            "/metrics: refused upgrades (4xx) and failed targets (5xx) are counted",
            str({k: v for k, v in d.items() if "responses" in k}))


def drain(t, tmp, echo):
    g = gate(tmp, echo.port, MGATE_SHUTDOWN_GRACE="5s")
    c = WsClient(g.port, f"{BASE}/drain")
    c.send_frame(b"d", TEXT)
    frame_eq(t, c.frame(), data(b"d"), "a WebSocket before SIGTERM")
    waiting = []
    th = threading.Thread(target=lambda: waiting.append(WsClient(g.port, f"{BASE}/slow-upgrade?ms=1500").code))
    th.start()
    time.sleep(0.3)  # the upgrade is at the target (which answers after 1.5 s)
    t0 = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)
    t.eq(close_code(c.frame(3)), 1001, "SIGTERM: close 1001 to the client")
    c.send_frame(close_payload(1001), CLOSE)
    v = echo_value(echo, "ws-close:/messages/drain")
    t.check(isinstance(v, str) and v.startswith("1001"), "SIGTERM: close 1001 to the target", v)
    th.join(5)
    t.eq(waiting, [503], "SIGTERM: an upgrade still waiting for the target's 101 gets 503")
    try:
        rc = g.proc.wait(10)
    except Exception:  # noqa: BLE001 - reported below
        rc = None
    t.check(rc == 0 and time.monotonic() - t0 < 3, "... and mgate exits 0 before the grace period",
            f"rc {rc} after {time.monotonic() - t0:.2f} s")
    c.close()


def drain_verdict_pending(t, tmp, echo):
    """SIGTERM while messages wait for a late verdict (the example handler answers "/slow/" with
    mgate_after): the pending answer runs at shutdown, so neither the relay nor its session is
    left held (ASan builds: no leak report)."""
    g = gate(tmp, echo.port)
    c = WsClient(g.port, f"{BASE}/slow/drain")
    c.send_frame(b"a", TEXT)
    c.send_frame(b"b", TEXT)
    time.sleep(0.02)  # read, and its verdict asked (the handler answers 100 ms later)
    rc = g.stop()
    c.close()
    t.eq(rc, 0, "SIGTERM with a message's verdict pending: mgate exits 0")
    t.eq(h.sanitizer_lines(g.log.text()), [], "... and holds no sanitizer report (nothing left held)")


def tls_listener(t, tmp, pki, echo):
    port = h.free_port()
    env = listener(TLS, port, echo, pki)
    env["MGATE_MQTT_WITHOUT_TLS_PORT"] = None
    g = h.Mgate(tmp, 1, binary=h.EXAMPLE_BIN, port=port, **env)
    ctx = pki.tls_context()
    round_trip(t, g.port, echo, "tls-rt", tls=ctx, proto="TLS")
    c = WsClient(g.port, f"{BASE}/tls-hd", tls=ctx)
    c.send_frame(b"headers?", TEXT)
    f = c.frame()
    up = json.loads(f[2]) if isinstance(f, tuple) and f[1] == TEXT else {}
    t.eq({k.lower(): v for k, v in up.get("headers", {}).items()}.get("x-forwarded-proto"), "https",
         "TLS: the target got X-Forwarded-Proto https")
    c.close()
    t.check(g.alive(), "the TLS listener's mgate still runs")


def https_target(t, tmp, pki):
    echo = Echo(tmp, pki)
    port = echo.port
    g = gate(tmp, port, TARGET_PROTOCOL="https", TARGET_CA_FILE=pki["ca.crt"])
    c = WsClient(g.port, f"{BASE}/to-wss?x=1")
    t.eq(ws_ok(c), GOOD_101, "TARGET_PROTOCOL https: 101 once the target's 101 came over TLS")
    c.send_frame("über".encode(), TEXT)
    frame_eq(t, c.frame(), data("über".encode()), "https target: a message there and back")
    c.send_frame(b"headers?", TEXT)
    f = c.frame()
    up = json.loads(f[2]) if isinstance(f, tuple) and f[1] == TEXT else {}
    t.eq((up.get("path"), up.get("query")), ("/messages/to-wss", "x=1"), "https target: it got the path and query")
    c.send_frame(close_payload(1000), CLOSE)
    frame_eq(t, c.frame(), data(close_payload(1000), CLOSE), "https target: closed normally")
    c.close()
    untrusted = gate(tmp, port, TARGET_PROTOCOL="https")  # the system's CAs: not the test CA
    c = WsClient(untrusted.port, f"{BASE}/to-wss-untrusted")
    t.eq(c.code, 502, "an https target whose certificate mgate cannot verify: 502")
    c.close()
    echo.stop()


def main():
    h.need_binaries()
    t = h.Checks("http_ws")
    with tempfile.TemporaryDirectory() as tmp:
        echo = Echo(tmp)
        admin = h.free_port()
        g = gate(tmp, echo.port, MGATE_ADMIN_PORT=admin)
        before = metrics(admin)
        g_lim = gate(tmp, echo.port, MAX_BODY_SIZE="4KiB", BYPASS_PATHS="^/open/", ALLOWED_ORIGINS="https://good.example")
        g_idle = gate(tmp, echo.port, IDLE_TIMEOUT="1s", TARGET_TIMEOUT="1s", REQUEST_TIMEOUT="1s")
        t.case("the echo target's WebSocket", echo_target, t, echo)
        t.case("101 and messages both ways", round_trip, t, g.port, echo, "rt")
        t.case("frames right behind the upgrade request", early_frames, t, g)
        t.case("what the target's upgrade got, subprotocol", headers_and_subprotocol, t, g, echo)
        t.case("refused at the upgrade: 401, 403, 404, 426, 400", refused_at_upgrade, t, g, g_lim, echo)
        t.case("bypass path", bypass, t, g_lim, echo)
        t.case("messages refused up (auth_publish)", refused_up, t, g, echo)
        t.case("messages refused down (auth_subscribe)", refused_down, t, g, echo)
        t.case("a flood of refused messages: log lines bounded", refusal_flood_up, t, tmp, echo)
        t.case("order behind late verdicts", order_slow, t, g, echo)
        t.case("a ping from the target", target_ping, t, g, echo)
        t.case("close from either side, a leg gone", endings, t, g, echo)
        t.case("bad frames from the client: 1002", bad_frames, t, g, echo)
        t.case("a bad frame from the target", target_bad_frame, t, g, echo)
        t.case("a message over MAX_BODY_SIZE: 1009", oversize, t, g_lim, echo)
        t.case("the target refuses the upgrade: 502, 504", target_refuses, t, tmp, g, g_idle, echo)
        t.case("a target's 101, message and close in one read", target_greets_and_closes, t, tmp)
        t.case("a client that reads nothing", reader_stops, t, g, echo)
        t.case("counted in /metrics", counted, t, admin, before)
        t.case("idle timeout", idle, t, g_idle, echo)
        t.case("a verdict later than REQUEST_TIMEOUT: 1011", verdict_timeout, t, g_idle, echo)
        t.case("drain", drain, t, tmp, echo)
        t.case("drain with a verdict pending", drain_verdict_pending, t, tmp, echo)
        pki = h.Pki(tmp)
        t.case("the TLS listener", tls_listener, t, tmp, pki, echo)
        t.case("an https target", https_target, t, tmp, pki)
        t.check(g.alive() and g_lim.alive() and g_idle.alive(), "mgate still runs")
        rc = h.finish(t)
        echo.stop()
        return rc


if __name__ == "__main__":
    h.run_main(main)
