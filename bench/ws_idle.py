#!/usr/bin/python3
"""bench/ws_idle.py: mgate's memory and descriptors per idle MQTT-over-WebSocket client.

Opens N WebSocket clients (ws://, or wss:// with --tls) through one mgate (one worker) to
mosquitto's TCP listener, each upgraded and past its CONNECT, then reads mgate's RSS and open
descriptors: (with N) - (before), divided by N. Run with /usr/bin/python3 (the test harness's
paho); MGATE_BIN picks the binary (the old libwebsockets build too: the comparison in
docs/WEBSOCKET.md).

  MGATE_BIN=build/mgate /usr/bin/python3 bench/ws_idle.py -n 1000 [--tls]
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import wsgate  # noqa: E402  (puts tests/integration on the path)
from test_ws import RawWs  # noqa: E402


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--tls", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker, g, port, ctx = wsgate.start(tmp, a.tls, CONNECT_TIMEOUT="60s")
        warm = [RawWs(port, path="/", tls=ctx) for _ in range(20)]  # the first TLS and allocator state
        for i, w in enumerate(warm):
            w.connect(f"warm-{i}")
        time.sleep(0.5)
        rss0, fd0 = g.rss_kib(), fds(g.proc.pid)
        clients = []
        t0 = time.monotonic()
        for i in range(a.n):
            w = RawWs(port, path="/", tls=ctx)
            if w.connect(f"idle-{i}")[:4] != b"\x20\x02\x00\x00":
                raise SystemExit(f"client {i}: no CONNACK 0")
            clients.append(w)
        opened = time.monotonic() - t0
        time.sleep(1.0)
        rss1, fd1 = g.rss_kib(), fds(g.proc.pid)
        kind = "wss://" if a.tls else "ws://"
        print(f"{kind} {a.n} idle clients (opened in {opened:.1f} s): RSS {rss0} -> {rss1} KiB, "
              f"{(rss1 - rss0) / a.n:.2f} KiB per client-broker pair; descriptors {fd0} -> {fd1}, "
              f"{(fd1 - fd0) / a.n:.2f} per client")
        for w in clients + warm:
            w.s.close()
        g.stop()
        broker.stop()


if __name__ == "__main__":
    main()
