#!/usr/bin/python3
"""accept() under EMFILE must not spin the loop, and mgate must recover.

mgate runs with a 40-descriptor limit; 60 clients connect. The ones beyond
the limit wait in the listen queue (or are answered "server unavailable" when
the broker cannot be dialled). While they wait, mgate's CPU use must stay
near zero. Once they leave, a new client is served normally.
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

import harness as h


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    t = h.Checks("emfile")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.start_mosquitto(tmp)
        port = h.free_port()
        env = h.mgate_env(port, broker.port, MGATE_LOG_LEVEL="warn")
        proc = subprocess.Popen(["prlimit", "--nofile=40:40", os.environ["MGATE_BIN"]], env=env,
                                cwd=tmp, stderr=open(os.path.join(tmp, "mgate.log"), "wb"))
        h.register(proc)
        h.wait_port(port)
        clients = []
        for i in range(60):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(h.connect_packet(4, f"emfile{i}"))
            clients.append(s)
        time.sleep(0.5)  # let mgate reach the limit
        before = cpu_seconds(proc.pid)
        time.sleep(2.0)
        used = cpu_seconds(proc.pid) - before
        t.check(used < 0.3, f"mgate used {used:.2f} CPU-s in 2 s at the descriptor limit (< 0.3: not spinning)")
        log = open(os.path.join(tmp, "mgate.log")).read()
        t.check("cannot accept" in log or "Too many open files" in log, "the descriptor shortage is logged",
                log[-400:])
        for s in clients:
            s.close()
        time.sleep(0.5)
        c = h.RawClient(port)
        t.check(c.connect(4, "after-emfile") == 0, "a new client is accepted after the others left")
        c.close()
        t.check(proc.poll() is None, "mgate is still running")
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
