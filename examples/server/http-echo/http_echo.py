#!/usr/bin/python3
"""A small HTTP echo server: the target the HTTP front end's tests and demo forward to.

    http_echo.py [--host 127.0.0.1] [--port 8888] [--cert FILE --key FILE]

With --cert and --key it serves HTTPS (and wss) instead of HTTP.

Every request is answered 200 with a JSON description of what arrived (method, path, query,
headers, body), so a client can see what mgate forwarded.  A few paths behave differently:

    /slow?ms=N        answer after N milliseconds (gateway timeouts)
    /stream?n=N&ms=M  N chunks of "chunk i\\n", M ms apart, with Transfer-Encoding: chunked
    /big?n=N          N bytes of 'x' with a Content-Length (back-pressure, large answers)
    /status/NNN       answer with that status
    /stats            how many requests arrived so far, by path (refused ones never should)
    /health           "ok"

A GET with "Upgrade: websocket" (any path) is answered 101 and becomes a WebSocket (RFC 6455,
hand-rolled: no module needed) that sends every message back whole, with its opcode, as one
frame; pings are answered, a close is answered with the same close and ends the connection.
When the client offers Sec-WebSocket-Protocol, the first one offered is chosen.  A few text
messages are commands instead of being sent back:

    headers?   a text message with the JSON of the upgrade request: {"path", "query", "headers"}
    close-me   a close 1000 "bye" from the echo; then it waits for the peer's close and ends
    drop-me    the TCP connection is closed without a close frame
    ping-me    a ping "from-target"; its pong comes back as the text message "pong:<payload>"
    mask-me    the text message "masked" in a masked frame (which a server must not send)

and a few upgrade paths are answered otherwise:

    .../no-upgrade...     403 as plain HTTP (no WebSocket)
    .../bad-accept...     101 with a wrong Sec-WebSocket-Accept
    .../bad-protocol...   101 naming the subprotocol "not-offered", whatever was offered
    .../slow-upgrade?ms=N the 101 after N milliseconds

/stats counts, per path: "ws:PATH" WebSockets opened, "ws-msg:PATH" whole messages received,
"ws-ping:PATH" and "ws-pong:PATH" pings and pongs received, "ws-bad:PATH" data frames that came
unmasked or not as one frame (FIN not set); and "ws-close:PATH" is how the last WebSocket on
PATH ended: "CODE REASON" of the close frame it got ("" for a close without a code), "eof"
when the peer left without one, "dropped" after drop-me.

HTTP/1.1 with keep-alive, one thread per connection.  Logs one line per request to stderr.
"""
import argparse
import base64
import hashlib
import json
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

seen = {}
seen_lock = threading.Lock()


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "http-echo"
    disable_nagle_algorithm = True  # the head and the body go out in two writes

    def log_message(self, fmt, *args):
        sys.stderr.write("http-echo: %s %s\n" % (self.address_string(), fmt % args))

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _count(self, key):
        with seen_lock:
            seen[key] = seen.get(key, 0) + 1

    def _frame(self):
        """(fin, opcode, payload, masked) of the next frame from the client, None at EOF."""
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        n = head[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.rfile.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.rfile.read(8))[0]
        key = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = bytearray(self.rfile.read(n))
        if len(data) < n:
            return None
        for i in range(len(data)):
            data[i] ^= key[i & 3]
        return head[0] & 0x80, head[0] & 0x0F, bytes(data), bool(head[1] & 0x80)

    def _send_frame(self, opcode, data):
        n = len(data)
        size = struct.pack("!B", n) if n < 126 else struct.pack("!BH", 126, n) if n < 65536 else struct.pack("!BQ", 127, n)
        self.wfile.write(bytes([0x80 | opcode]) + size + data)
        self.wfile.flush()

    def _websocket(self, url):
        path, q = url.path, parse_qs(url.query)
        if "/no-upgrade" in path:
            self._send(403, b'{"status":"no WebSocket here"}\n', extra=[("Connection", "close")])
            self.close_connection = True
            return
        if "/slow-upgrade" in path:
            time.sleep(int(q.get("ms", ["1000"])[0]) / 1000)
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if "/bad-accept" in path:
            accept = base64.b64encode(hashlib.sha1(b"not the key").digest())
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        upgrade = {"path": path, "query": url.query, "headers": dict(self.headers.items())}
        self._count("ws:" + path)
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        if "/bad-protocol" in path:
            self.send_header("Sec-WebSocket-Protocol", "not-offered")
        elif offered:
            self.send_header("Sec-WebSocket-Protocol", offered[0])
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        msg_op, parts, closing, ended = None, [], False, "eof"
        while True:
            try:
                f = self._frame()
            except OSError:
                f = None
            if f is None:
                break
            fin, op, data, masked = f
            if op < 0x8 and not (masked and fin):
                self._count("ws-bad:" + path)
            if op == 0x9:
                self._count("ws-ping:" + path)
                self._send_frame(0xA, data)
            elif op == 0xA:
                self._count("ws-pong:" + path)
                if data == b"from-target":
                    self._send_frame(0x1, b"pong:" + data)
            elif op == 0x8:
                ended = "%d %s" % (struct.unpack("!H", data[:2])[0], data[2:].decode("utf-8", "replace")) \
                    if len(data) >= 2 else ""
                if not closing:
                    self._send_frame(0x8, data)
                break
            elif op in (0x0, 0x1, 0x2):
                msg_op = op if op else msg_op
                parts.append(data)
                if not fin:
                    continue
                msg, parts = b"".join(parts), []
                self._count("ws-msg:" + path)
                if msg_op == 0x1 and msg == b"headers?":
                    self._send_frame(0x1, json.dumps(upgrade).encode())
                elif msg_op == 0x1 and msg == b"close-me":
                    self._send_frame(0x8, struct.pack("!H", 1000) + b"bye")
                    closing = True
                elif msg_op == 0x1 and msg == b"drop-me":
                    ended = "dropped"
                    break
                elif msg_op == 0x1 and msg == b"ping-me":
                    self._send_frame(0x9, b"from-target")
                elif msg_op == 0x1 and msg == b"mask-me":
                    self.wfile.write(b"\x81\x86" + b"\0\0\0\0" + b"masked")  # a zero mask: the bytes as they are
                    self.wfile.flush()
                else:
                    self._send_frame(msg_op, msg)
        with seen_lock:
            seen["ws-close:" + path] = ended

    def _handle(self):
        url = urlsplit(self.path)
        if self.command == "GET" and self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket(url)
            return
        q = parse_qs(url.query)
        body = self._body()
        self._count(url.path)
        if url.path.endswith("/slow"):
            time.sleep(int(q.get("ms", ["1000"])[0]) / 1000)
        if url.path.endswith("/stream"):
            n, ms = int(q.get("n", ["5"])[0]), int(q.get("ms", ["50"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                data = b"chunk %d\n" % i
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(ms / 1000)
            self.wfile.write(b"0\r\n\r\n")
            return
        if url.path.endswith("/big"):
            self._send(200, b"x" * int(q.get("n", ["1048576"])[0]), "application/octet-stream")
            return
        if "/status/" in url.path:
            self._send(int(url.path.rsplit("/", 1)[1]), b'{"status":"as asked"}\n')
            return
        if url.path.endswith("/stats"):
            with seen_lock:
                self._send(200, json.dumps(seen).encode())
            return
        if url.path.endswith("/health"):
            self._send(200, b"ok\n", "text/plain")
            return
        echo = {
            "method": self.command,
            "path": url.path,
            "query": url.query,
            "headers": {k: v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
            "length": len(body),
        }
        self._send(200, (json.dumps(echo) + "\n").encode(), extra=[("X-Echo", "1"), ("Access-Control-Allow-Origin", "*")])

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: many clients at once (the default is 5)


def main():
    ap = argparse.ArgumentParser(description="HTTP echo server for mgate's HTTP front end")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8888)
    ap.add_argument("--cert", help="serve HTTPS with this certificate (PEM) ...")
    ap.add_argument("--key", help="... and this key")
    a = ap.parse_args()
    srv = Server((a.host, a.port), Echo)
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)  # in the thread
    sys.stderr.write(f"http-echo: listening on {a.host}:{a.port}\n")
    sys.stderr.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
