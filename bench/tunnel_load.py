#!/usr/bin/env python3
"""bench/tunnel_load.py: the TCP ends of bench/tunnel.sh (standard library only).

  tunnel_load.py freeport N             N free loopback ports, one a line
  tunnel_load.py sink PORT              a sink on 127.0.0.1:PORT: each connection is read to EOF,
                                        then answered with the byte count (8 bytes, big-endian)
                                        and closed; runs until killed
  tunnel_load.py send PORT MB STREAMS [TIMEOUT]
                                        STREAMS connections to PORT at once, MB MiB in all split
                                        between them; each sends its share, half-closes and waits
                                        for the sink's count.  Prints one line:
                                        "bytes=N secs=S mbs=X ok=K/STREAMS"; exit 0 only when every
                                        count matched, 2 when some did not, 1 on a timeout
  tunnel_load.py ready PORT SECONDS     send 1 KiB through PORT until it is counted (the tunnel is
                                        up) or SECONDS passed (exit 1)

MB/s is the bytes sent over the seconds from the first connect to the last count received, so a
tunnel is measured end to end (its buffers full and flushed, the FIN carried through).
"""
import socket
import struct
import sys
import threading
import time

HOST = "127.0.0.1"
MIB = 1 << 20


def freeport(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    for s in socks:
        print(s.getsockname()[1])
        s.close()


def sink(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((HOST, port))
    ls.listen(512)

    def serve(c):
        n = 0
        try:
            while True:
                b = c.recv(1 << 20)
                if not b:
                    break
                n += len(b)
            c.sendall(struct.pack(">Q", n))
            c.shutdown(socket.SHUT_WR)
            c.settimeout(10)
            while c.recv(65536):
                pass
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def one(port, nbytes, buf, out, i, deadline):
    try:
        s = socket.create_connection((HOST, port), timeout=max(1.0, deadline - time.monotonic()))
        s.settimeout(max(1.0, deadline - time.monotonic()))
        mv = memoryview(buf)
        left = nbytes
        while left > 0:
            k = min(left, len(buf))
            s.sendall(mv[:k])
            left -= k
        s.shutdown(socket.SHUT_WR)
        got = b""
        while len(got) < 8:
            b = s.recv(8 - len(got))
            if not b:
                break
            got += b
        s.close()
        out[i] = len(got) == 8 and struct.unpack(">Q", got)[0] == nbytes
    except OSError as e:
        out[i] = None if isinstance(e, socket.timeout) else False
        print(f"stream {i}: {type(e).__name__}: {e}", file=sys.stderr)


def send(port, mb, streams, timeout):
    total = int(mb * MIB)
    share = total // streams
    buf = bytes(range(256)) * 4096  # 1 MiB
    out = [None] * streams
    deadline = time.monotonic() + timeout
    t0 = time.monotonic()
    ths = [threading.Thread(target=one, args=(port, share, buf, out, i, deadline), daemon=True)
           for i in range(streams)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(max(0.0, deadline - time.monotonic()))
    secs = time.monotonic() - t0
    ok = sum(1 for x in out if x)
    sent = share * streams
    print(f"bytes={sent} secs={secs:.3f} mbs={sent / MIB / secs:.1f} ok={ok}/{streams}", flush=True)
    if any(x is None for x in out) or any(th.is_alive() for th in ths):
        return 1
    return 0 if ok == streams else 2


def ready(port, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out = [None]
        one(port, 1024, b"r" * 1024, out, 0, min(deadline, time.monotonic() + 3))
        if out[0]:
            return 0
        time.sleep(0.2)
    return 1


def main(argv):
    if len(argv) >= 2 and argv[0] == "freeport":
        freeport(int(argv[1]))
        return 0
    if len(argv) == 2 and argv[0] == "sink":
        sink(int(argv[1]))
        return 0
    if len(argv) in (4, 5) and argv[0] == "send":
        return send(int(argv[1]), float(argv[2]), int(argv[3]), float(argv[4]) if len(argv) == 5 else 120.0)
    if len(argv) == 3 and argv[0] == "ready":
        return ready(int(argv[1]), float(argv[2]))
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
