#!/usr/bin/python3
"""The mgate process: command line, configuration sources and errors, signals.

--help, --version, --check-config; exit 2 with a message naming the variable
for a bad configuration; exit 1 when the port is taken; .env in the working
directory (the environment wins over it); an INI file with -c or MGATE_CONFIG;
SIGTERM and SIGINT drain (v5 clients get DISCONNECT 0x8B, older ones are
closed after MGATE_SHUTDOWN_GRACE) and exit 0; SIGHUP keeps serving.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
import harness as h  # noqa: E402


OUTPUTS = []  # what every mgate run here printed, checked for sanitizer reports at the end


def run(args, env, cwd, timeout=10):
    """Run mgate to completion; returns (exit status, stdout + stderr)."""
    p = subprocess.run([h.MGATE_BIN] + args, env=env, cwd=cwd, capture_output=True, timeout=timeout)
    out = (p.stdout + p.stderr).decode(errors="replace")
    OUTPUTS.append(out)
    return p.returncode, out


def start(args, env, cwd):
    """Start mgate in the background, its output in a log file; returns (process, log)."""
    log = h.LogFile(os.path.join(cwd, f"mgate-{len(OUTPUTS)}.log"))
    OUTPUTS.append(log)
    with open(log.path, "wb") as f:
        return h.spawn([h.MGATE_BIN] + args, env=env, cwd=cwd, stdout=f, stderr=f), log


def workdir(tmp, name, dotenv=None):
    d = os.path.join(tmp, name)
    os.mkdir(d)
    if dotenv is not None:
        with open(os.path.join(d, ".env"), "w") as f:
            f.write(dotenv)
    return d


def serves(port):
    """True when a 3.1.1 client gets CONNACK 0 through port."""
    try:
        c = h.RawClient(port, timeout=3.0)
    except OSError:
        return False
    try:
        return c.connect(4, f"probe-{port}") == 0
    except (OSError, AssertionError, TimeoutError):
        return False
    finally:
        c.close()


def command_line(t, tmp):
    cwd = workdir(tmp, "cli")
    rc, out = run(["--help"], h.clean_env(), cwd)
    t.eq(rc, 0, "--help exits 0")
    t.check("MGATE" in out, "--help mentions the MGATE_* configuration")
    rc, out = run(["--version"], h.clean_env(), cwd)
    t.eq(rc, 0, "--version exits 0")
    t.check(re.search(r"\b\d+\.\d+\.\d+\b", out) is not None, f"--version prints a version ({out.strip()!r})")
    rc, out = run(["--no-such-option"], h.clean_env(), cwd)
    t.eq(rc, 2, "an unknown option exits 2")


def bad_config(t, tmp, broker):
    cwd = workdir(tmp, "bad")
    port = h.free_port()
    base = dict(port=port, broker_port=broker.port)
    cases = [
        ({"MGATE_MQTT_WITHOUT_TLS_PORT": "70000"}, "MGATE_MQTT_WITHOUT_TLS_PORT"),
        ({"MGATE_LOG_LEVEL": "loud"}, "MGATE_LOG_LEVEL"),
        ({"MGATE_HANDLER": "nope"}, "MGATE_HANDLER"),
        ({"MGATE_MQTT_WITHOUT_TLS_TARGET_HOST": None}, "MGATE_MQTT_WITHOUT_TLS_TARGET_HOST"),
        ({"MGATE_MQTT_WITHOUT_TLS_TARGET_PORT": None}, "MGATE_MQTT_WITHOUT_TLS_TARGET_PORT"),
        ({"MGATE_MQTT_WITHOUT_TLS_CONNECT_TIMEOUT": "0"}, "MGATE_MQTT_WITHOUT_TLS_CONNECT_TIMEOUT"),
        ({"MGATE_MQTT_WITHOUT_TLS_MAX_PACKET_SIZE": "1.5K"}, "MGATE_MQTT_WITHOUT_TLS_MAX_PACKET_SIZE"),
        ({"MGATE_MQTT_WITHOUT_TLS_REFUSAL": "maybe"}, "MGATE_MQTT_WITHOUT_TLS_REFUSAL"),
        ({"MGATE_SHUTDOWN_GRACE": "-1s"}, "MGATE_SHUTDOWN_GRACE"),
    ]
    for extra, var in cases:
        env = h.mgate_env(base["port"], base["broker_port"], **extra)
        shown = ", ".join(f"{k}={v}" if v is not None else f"no {k}" for k, v in extra.items())
        rc, out = run([], env, cwd)
        lines = [line for line in out.splitlines() if line.startswith("mgate: ")]
        t.eq(rc, 2, f"{shown}: exits 2")
        t.check(len(lines) == 1 and var in lines[0], f"{shown}: one 'mgate: ...' line naming {var}", out.strip())
        rc, out = run(["--check-config"], env, cwd)
        t.eq(rc, 2, f"{shown}: --check-config exits 2 too")
    t.check(not h.port_open(port), "none of them listened")

    env = h.clean_env()
    rc, out = run([], env, cwd)
    t.eq(rc, 2, "no listener configured: exits 2")
    t.check(out.startswith("mgate: "), "with an 'mgate: ...' message", out.strip())

    env = h.mgate_env(port, broker.port)
    rc, out = run(["--check-config"], env, cwd)
    t.eq(rc, 0, "--check-config on a good configuration exits 0")
    t.eq(len(out.strip().splitlines()), 1, "and prints one line")
    t.check(not h.port_open(port), "--check-config does not listen")

    rc, out = run(["-c", os.path.join(cwd, "missing.ini")], h.clean_env(), cwd)
    t.eq(rc, 2, "-c with a missing file exits 2")
    t.check("missing.ini" in out, "and names the file", out.strip())

    with socket.socket() as blocker:
        blocker.bind((h.HOST, port))
        blocker.listen()
        rc, out = run([], h.mgate_env(port, broker.port), cwd)
        t.eq(rc, 1, "the port is taken: exits 1 (cannot start)")
        t.check("MGATE_MQTT_WITHOUT_TLS_PORT" in out, "and says which listener", out.strip())


def dotenv(t, tmp, broker):
    p1, p2 = h.free_port(), h.free_port()
    cwd = workdir(tmp, "dotenv", "# from .env\n"
                  f"export MGATE_MQTT_WITHOUT_TLS_PORT={p1}\n"
                  f"MGATE_MQTT_WITHOUT_TLS_HOST = {h.HOST}\n"
                  f"MGATE_MQTT_WITHOUT_TLS_TARGET_HOST='{h.HOST}'\n"
                  f"MGATE_MQTT_WITHOUT_TLS_TARGET_PORT=\"{broker.port}\"\n")
    env = h.clean_env()
    g, _ = start([], env, cwd)
    try:
        h.wait_port(p1, 5.0, g)
        t.check(serves(p1), f".env in the working directory is read: mgate serves on its port {p1}")
    except RuntimeError as e:
        t.check(False, ".env in the working directory is read", str(e))
    t.eq(h.stop(g), 0, "SIGTERM: exit 0")

    env["MGATE_MQTT_WITHOUT_TLS_PORT"] = str(p2)
    g, _ = start([], env, cwd)
    try:
        h.wait_port(p2, 5.0, g)
        t.check(serves(p2), f"the environment overrides .env: mgate serves on {p2}")
        t.check(not h.port_open(p1), f"and not on the .env port {p1}")
    except RuntimeError as e:
        t.check(False, "the environment overrides .env", str(e))
    t.eq(h.stop(g), 0, "SIGTERM: exit 0")


def ini(t, tmp, broker):
    p3, p4 = h.free_port(), h.free_port()
    cwd = workdir(tmp, "ini")
    path = os.path.join(cwd, "mgate.ini")
    with open(path, "w") as f:
        f.write("; mgate test\n[mgate]\nlog_level = debug\nhandler = log\n\n"
                f"[mqtt_without_tls]\nhost = {h.HOST}\nport = {p3}\ntarget_host = {h.HOST}\n"
                f"target_port: {broker.port}\nconnect_timeout = 5s\n")
    for how, args, env, port in (
            ("-c FILE", ["-c", path], h.clean_env(), p3),
            ("MGATE_CONFIG=FILE", [], dict(h.clean_env(), MGATE_CONFIG=path), p3),
            ("-c FILE with the port in the environment", ["-c", path],
             dict(h.clean_env(), MGATE_MQTT_WITHOUT_TLS_PORT=str(p4)), p4)):
        g, log = start(args, env, cwd)
        try:
            h.wait_port(port, 5.0, g)
            t.check(serves(port), f"INI via {how}: mgate serves on {port}")
            if port == p4:
                t.check(not h.port_open(p3), "the environment's port wins over the INI file's")
        except RuntimeError as e:
            t.check(False, f"INI via {how}", str(e))
        t.eq(h.stop(g), 0, f"INI via {how}: SIGTERM exits 0")
        t.check('"level":"debug"' in log.text(), f"INI via {how}: log_level = debug from the file applies")


def drain(t, tmp, broker, sig):
    name = signal.Signals(sig).name
    g = h.Mgate(tmp, broker.port, MGATE_SHUTDOWN_GRACE="1s")
    c5 = h.raw_client(g.port, 5, f"drain5-{name}")
    c4 = h.raw_client(g.port, 4, f"drain4-{name}")
    c3 = h.raw_client(g.port, 3, f"drain3-{name}")
    t0 = time.monotonic()
    g.proc.send_signal(sig)
    p = c5.read_packet(2.0)
    took5 = time.monotonic() - t0
    t.check(p.type == h.DISCONNECT and p.body[:1] == b"\x8b",
            f"{name}: the v5 client gets DISCONNECT 0x8B (server shutting down) at once ({took5 * 1000:.0f} ms)", p)
    t.check(c5.expect_closed(2.0), f"{name}: then its connection is closed")
    t.check(c4.ping(0.5), f"{name}: during the grace period the 3.1.1 client is still served")
    # When c4 closes is timed from its own thread: the refusal check below may itself take up
    # to its timeout on a loaded machine, and must not count as mgate's delay.
    closed4 = {}

    def watch4():
        closed4["ok"] = c4.expect_closed(3.0)
        closed4["at"] = time.monotonic()
    watcher = threading.Thread(target=watch4)
    watcher.start()
    refused = False
    try:
        n = h.RawClient(g.port, timeout=1.0)
        refused = n.connect(4, "too-late", timeout=1.0) is None
        n.close()
    except OSError:
        refused = True
    t.check(refused, f"{name}: new connections are not served any more")
    watcher.join()
    t.check(closed4["ok"], f"{name}: the 3.1.1 client is closed after the grace period")
    took4 = closed4["at"] - t0
    t.check(0.8 <= took4 <= 2.5, f"{name}: ... at about MGATE_SHUTDOWN_GRACE=1s ({took4:.2f} s)")
    t.check(c3.expect_closed(1.0), f"{name}: so is the 3.1 client")
    try:
        rc = g.proc.wait(max(0.1, 3.0 - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        rc = None
    took = time.monotonic() - t0
    t.eq(rc, 0, f"{name}: mgate exits 0 within grace + 2 s ({took:.2f} s)")
    for c in (c5, c4, c3):
        c.close()


def sighup_and_workers(t, tmp, broker):
    g = h.Mgate(tmp, broker.port, MGATE_WORKERS="2", MGATE_MQTT_WITHOUT_TLS_PROT="1")
    clients = [h.raw_client(g.port, 4, f"w{i}") for i in range(8)]
    t.check(len(clients) == 8, "MGATE_WORKERS=2: eight clients connect")
    clients[0].subscribe(1, [("workers/t", 1)])
    for c in clients[1:]:
        c.publish_wait("workers/t", b"hi", 1, 1)
    got = clients[0].collect(7, 5.0)
    t.eq(len(got), 7, "they exchange messages")
    mark = g.log.mark()
    g.proc.send_signal(signal.SIGHUP)
    t.check(g.log.wait(r"SIGHUP", 3.0, mark) is not None, "SIGHUP is logged")
    t.check(g.alive() and serves(g.port), "after SIGHUP mgate still serves")
    t.check(all(c.ping() for c in clients), "and the existing clients still work")
    t.check(g.log.search(r"unknown variables.*MGATE_MQTT_WITHOUT_TLS_PROT\b") is not None,
            "an unknown MGATE_* variable (a typo) is warned about")
    for c in clients:
        c.close()
    t.eq(g.stop(), 0, "SIGTERM with two workers: exit 0")


def main():
    h.need_binaries()
    t = h.Checks("lifecycle")
    with tempfile.TemporaryDirectory() as tmp:
        broker = h.Broker(tmp)
        t.case("command line", command_line, t, tmp)
        t.case("configuration errors", bad_config, t, tmp, broker)
        t.case(".env", dotenv, t, tmp, broker)
        t.case("INI file", ini, t, tmp, broker)
        t.case("SIGTERM", drain, t, tmp, broker, signal.SIGTERM)
        t.case("SIGINT", drain, t, tmp, broker, signal.SIGINT)
        t.case("SIGHUP, two workers", sighup_and_workers, t, tmp, broker)
        found = [line for out in OUTPUTS for line in h.sanitizer_lines(out if isinstance(out, str) else out.text())]
        t.eq(found, [], f"no sanitizer report from the {len(OUTPUTS)} other mgate runs")
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
