#!/usr/bin/python3
"""bench/ws_cpu.py: mgate's CPU per MQTT message over WebSocket (ws://, or wss:// with --tls).

One publisher and one subscriber, both WebSocket clients of one mgate (one worker) in front of
mosquitto's TCP listener: N QoS 0 PUBLISHes of --size bytes, one per WebSocket frame, go
client -> mgate -> broker -> mgate -> client. mgate's user+system CPU time (from /proc) over the
run, divided by N, is the figure: each message crosses mgate twice. The clients are Python, so
throughput here says nothing; CPU per message does. MGATE_BIN picks the binary (the old
libwebsockets build too).

  MGATE_BIN=build/mgate /usr/bin/python3 bench/ws_cpu.py -n 100000 --size 64 [--tls]
"""
import argparse
import os
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import wsgate  # noqa: E402  (puts tests/integration on the path)
import harness as h  # noqa: E402
from test_ws import RawWs  # noqa: E402


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def frame(payload):
    """A masked binary frame (a zero key: the bytes stay as they are, mgate still unmasks)."""
    n = len(payload)
    hdr = b"\x82" + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    return hdr + b"\0\0\0\0" + payload


def drain(w, want, timeout):
    """Read server frames until want bytes of MQTT came (the broker's PUBLISHes)."""
    got, buf = 0, b""
    w.s.settimeout(timeout)
    while got < want:
        buf += w.s.recv(1 << 20)
        i = 0  # walk the frames by offset: slicing per frame would cost the client more than mgate
        while len(buf) - i >= 2:
            n, off = buf[i + 1] & 0x7F, 2
            if n == 126:
                if len(buf) - i < 4:
                    break
                n, off = struct.unpack("!H", buf[i + 2:i + 4])[0], 4
            elif n == 127:
                if len(buf) - i < 10:
                    break
                n, off = struct.unpack("!Q", buf[i + 2:i + 10])[0], 10
            if len(buf) - i < off + n:
                break
            got += n
            i += off + n
        buf = buf[i:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--tls", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker, g, port, ctx = wsgate.start(tmp, a.tls)
        sub, pub = RawWs(port, path="/", tls=ctx), RawWs(port, path="/", tls=ctx)
        sub.connect("bench-sub")
        pub.connect("bench-pub")
        sub.send_frame(h.subscribe_packet(4, 1, [("bench/ws", 0)]))
        sub.recv_mqtt()
        packet = h.publish_packet(4, "bench/ws", os.urandom(a.size))
        one = frame(packet)
        batch = 500
        c0, t0 = cpu_s(g.proc.pid), time.monotonic()
        sent = 0
        while sent < a.n:
            k = min(batch, a.n - sent)
            pub.s.sendall(one * k)
            sent += k
            drain(sub, k * len(packet), 30.0)
        c1, t1 = cpu_s(g.proc.pid), time.monotonic()
        kind = "wss://" if a.tls else "ws://"
        print(f"{kind} {a.n} x {a.size} B QoS 0 in {t1 - t0:.1f} s: mgate CPU {c1 - c0:.2f} s, "
              f"{(c1 - c0) / a.n * 1e6:.2f} us per message ({(c1 - c0) / a.n * 1e6:.2f} s per million)")
        g.stop()
        broker.stop()


if __name__ == "__main__":
    main()
