#!/usr/bin/python3
"""Open a WebSocket through mgate's HTTP listener, send text messages, print what comes back.

    websocket.py URL [MESSAGE...] [--token T] [--cacert CA] [--cert C --key K] [--wait S]

URL is ws://host:port/path or wss://host:port/path (e.g. the demo's
ws://127.0.0.1:8086/mgate-http/messages/ws).  mgate checks the upgrade with auth_connect
(the token is sent as the Authorization header) and auth_subscribe on the path, then every
message up with auth_publish and every message down with auth_subscribe; the demo's target
(examples/server/http-echo) sends each message back.  Standard library only: Debian's python3
has no WebSocket module, so the RFC 6455 framing is written out here (client frames masked).
"""
import argparse
import base64
import os
import socket
import ssl
import struct
import sys
from urllib.parse import urlsplit


def frame(opcode, payload):
    n, mask = len(payload), os.urandom(4)
    size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n) if n < 65536 \
        else bytes([0x80 | 127]) + struct.pack("!Q", n)
    return bytes([0x80 | opcode]) + size + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


def read_exact(f, n):
    data = f.read(n)
    if len(data) < n:
        raise EOFError("the connection closed")
    return data


def read_frame(f):
    b0, b1 = read_exact(f, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(f, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(f, 8))[0]
    return b0 & 0x0F, read_exact(f, n)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("messages", nargs="*", default=["Hello mGate"])
    ap.add_argument("--token", default="TOKEN", help="sent as the Authorization header ('' for none)")
    ap.add_argument("--cacert")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--wait", type=float, default=2.0, help="seconds to wait for each answer")
    a = ap.parse_args()
    u = urlsplit(a.url)
    tls = u.scheme == "wss"
    port = u.port or (443 if tls else 80)
    sock = socket.create_connection((u.hostname, port), timeout=a.wait)
    if tls:
        ctx = ssl.create_default_context(cafile=a.cacert)
        if a.cert:
            ctx.load_cert_chain(a.cert, a.key)
        sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
    key = base64.b64encode(os.urandom(16)).decode()
    path = (u.path or "/") + ("?" + u.query if u.query else "")
    head = [f"GET {path} HTTP/1.1", f"Host: {u.netloc}", "Upgrade: websocket", "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if a.token:
        head.append(f"Authorization: {a.token}")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    f = sock.makefile("rb")
    status = f.readline().decode(errors="replace").strip()
    print("<", status)
    while (line := f.readline()) not in (b"\r\n", b""):
        print("<", line.decode(errors="replace").rstrip())
    if " 101 " not in status + " ":
        print(f.read1(4096).decode(errors="replace"))
        return 1
    for m in a.messages:
        sock.sendall(frame(0x1, m.encode()))
        print(">", m)
        try:
            op, data = read_frame(f)
            print("<", data.decode(errors="replace") if op == 0x1 else f"(opcode {op}) {data!r}")
        except (socket.timeout, TimeoutError):
            print("< (nothing: the handler dropped it, or the target did not answer)")
    sock.sendall(frame(0x8, struct.pack("!H", 1000) + b"bye"))
    try:
        op, data = read_frame(f)
        code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        print("< close", code, data[2:].decode(errors="replace"))
    except (EOFError, socket.timeout, TimeoutError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
