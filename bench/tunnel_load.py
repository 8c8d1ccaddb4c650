#!/usr/bin/env python3
"""Throughput of N parallel echo streams to a port (the tunnel's local side, or
the echo server directly): each stream writes SIZE random bytes, half-closes,
reads the echo back and checks its SHA-256.  Prints one line:
streams=N bytes=B secs=S MBps=X ok=K (MBps counts one direction)."""
import hashlib, os, socket, sys, threading, time

def one(port, size, res):
    data = os.urandom(size)
    c = socket.create_connection(("127.0.0.1", port))
    def w():
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
    threading.Thread(target=w, daemon=True).start()
    h = hashlib.sha256()
    while True:
        d = c.recv(262144)
        if not d:
            break
        h.update(d)
    res.append(h.digest() == hashlib.sha256(data).digest())

def main():
    port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    res = []
    t0 = time.time()
    ts = [threading.Thread(target=one, args=(port, size, res)) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.time() - t0
    print(f"streams={n} bytes={n * size} secs={dt:.2f} MBps={n * size / dt / 1e6:.1f} ok={sum(res)}")

if __name__ == "__main__":
    main()
