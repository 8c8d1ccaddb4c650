"""Impaired links between network namespaces, for the fault tests (issue 20).

Three namespaces, made by the test and deleted when it ends (atexit, and stale
ones of dead test processes at the next start):

    client ns (10.77.1.1) <-hop "cm"-> mgate ns (10.77.1.2 | 10.77.2.1) <-hop "mb"-> broker ns (10.77.2.2)

Each hop is impaired per direction: delay (mean and jitter, uniform), loss,
an explicit reorder share, or "drop everything" (a peer that vanished without
a FIN: no RST, no ICMP, nothing).

Two ways to build a hop:
- "netem": a veth pair with `tc qdisc ... netem` on each end's egress, when the
  kernel has sch_netem (so the tests mean the same on machines that have it);
- "relay": when it does not (this VM's 6.18 kernel has none), each end is a TUN
  device and a small userspace relay (relay_main below, its own process) reads
  the IP packets from one end and writes them to the other after applying the
  impairment. The relay's figures follow netem's: a packet's delay is
  mean +- jitter (uniform), so packets closer together than the jitter come out
  reordered; a "reorder" share of packets goes out at once, ahead of the
  delayed ones (netem's reorder); "loss" drops at random.

Tests run a process in a namespace with ns_spawn() (ip netns exec: the PID is
the program's own), and open client sockets in one with `with in_ns(name):`
(a socket belongs to the namespace of the thread that made it).
"""
import atexit
import ctypes
import heapq
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402

SKIP = 77
CLONE_NEWNET = 0x40000000
PREFIX = "mgfault"

# addresses inside the test's own namespaces only
CLIENT_ADDR, MGATE_CLIENT_ADDR = "10.77.1.1", "10.77.1.2"
MGATE_BROKER_ADDR, BROKER_ADDR = "10.77.2.1", "10.77.2.2"

# the figures: 50 ms +- 20 ms, 2 % loss, some reordering
IMPAIRED = {"delay_ms": 50, "jitter_ms": 20, "loss": 0.02, "reorder": 0.05}
CLEAN = {"delay_ms": 0, "jitter_ms": 0, "loss": 0.0, "reorder": 0.0}
DEAD = {"drop": True}

_libc = ctypes.CDLL(None, use_errno=True)


def skip(reason):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP)


def run(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


_ns_lock = threading.Lock()


class in_ns:
    """`with in_ns(name):` the calling thread is in namespace name; sockets made inside stay there."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)

    def __exit__(self, *exc):
        try:
            _setns(self.home)
        finally:
            os.close(self.home)


def ns_spawn(ns, argv, **kw):
    """A process in namespace ns, registered with the harness (killed by PID at exit)."""
    return harness.spawn(["ip", "netns", "exec", ns, *argv], **kw)


def wait_listen(proc, port, timeout=10.0, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}: {log.text()[-600:] if log else ''}")
        if harness.listens(proc.pid, port, own_ns=True):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args} does not listen on {port} after {timeout} s")


def ss(ns, *args):
    """`ss` in namespace ns: the lines after the header."""
    out = run("ip", "netns", "exec", ns, "ss", "-Htn", *args, check=False).stdout
    return [line for line in out.splitlines() if line.strip()]


def has_netem():
    """True when `tc qdisc add ... netem` works here (tried on a dummy in a scratch namespace)."""
    name = f"{PREFIX}-{os.getpid()}-probe"
    if run("ip", "netns", "add", name, check=False).returncode != 0:
        return False
    try:
        run("ip", "-n", name, "link", "add", "d0", "type", "dummy", check=False)
        return run("tc", "-n", name, "qdisc", "add", "dev", "d0", "root", "netem", "delay", "1ms",
                   check=False).returncode == 0
    finally:
        run("ip", "netns", "del", name, check=False)


def _reap_stale():
    """Namespaces left by test processes that died without cleaning up (SIGKILL)."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return
    for n in names:
        parts = n.split("-")
        if len(parts) >= 3 and parts[0] == PREFIX and parts[1].isdigit():
            if not os.path.exists(f"/proc/{parts[1]}"):
                run("ip", "netns", "del", n, check=False)


class Topology:
    """client <-> mgate <-> broker, two impaired hops. mode "auto" picks netem when the kernel has it.
    Attributes: client, mgate, broker (namespace names), mode ("netem" or "relay")."""

    def __init__(self, mode="auto"):
        if os.geteuid() != 0:
            skip("network namespaces need root")
        for tool in ("ip", "tc", "ss"):
            if subprocess.run(["which", tool], capture_output=True).returncode != 0:
                skip(f"no `{tool}` command")
        _reap_stale()
        tag = f"{PREFIX}-{os.getpid()}"
        self.client, self.mgate, self.broker = f"{tag}-c", f"{tag}-m", f"{tag}-b"
        self.made = []
        atexit.register(self.close)
        for ns in (self.client, self.mgate, self.broker):
            r = run("ip", "netns", "add", ns, check=False)
            if r.returncode != 0:
                skip(f"cannot make a network namespace: {r.stderr.strip()}")
            self.made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        if mode == "auto":
            mode = "netem" if has_netem() else "relay"
        self.mode = mode
        # hop name -> (ns a, dev a, addr a, ns b, dev b, addr b)
        self.hops = {
            "cm": (self.client, "fc0", CLIENT_ADDR, self.mgate, "fm0", MGATE_CLIENT_ADDR),
            "mb": (self.mgate, "fm1", MGATE_BROKER_ADDR, self.broker, "fb0", BROKER_ADDR),
        }
        self.params = {f"{h}:{d}": dict(CLEAN) for h in self.hops for d in ("ab", "ba")}
        self.relay = None
        if mode == "netem":
            self._make_veth()
        else:
            self._make_relay()
        print(f"  links: {mode} ({'tc netem on veth pairs' if mode == 'netem' else 'TUN devices + userspace relay'})",
              flush=True)

    # -- netem
    def _make_veth(self):
        for h, (na, da, aa, nb, db, ab) in self.hops.items():
            run("ip", "link", "add", f"{h}{os.getpid()}a", "type", "veth", "peer", "name", f"{h}{os.getpid()}b")
            for tmp, ns, dev in ((f"{h}{os.getpid()}a", na, da), (f"{h}{os.getpid()}b", nb, db)):
                run("ip", "link", "set", tmp, "netns", ns)
                run("ip", "-n", ns, "link", "set", tmp, "name", dev)
            for ns, dev, addr, peer in ((na, da, aa, ab), (nb, db, ab, aa)):
                run("ip", "-n", ns, "addr", "add", addr, "peer", peer, "dev", dev)
                run("ip", "-n", ns, "link", "set", dev, "up")
        self._apply_netem()

    def _apply_netem(self):
        for h, (na, da, _, nb, db, _) in self.hops.items():
            for d, ns, dev in (("ab", na, da), ("ba", nb, db)):
                p = self.params[f"{h}:{d}"]
                if p.get("drop"):
                    args = ["loss", "100%"]
                else:
                    args = ["delay", f"{p['delay_ms']}ms"]
                    if p["jitter_ms"]:
                        args += [f"{p['jitter_ms']}ms"]  # uniform, netem's default without a table
                    if p["loss"]:
                        args += ["loss", f"{p['loss'] * 100:g}%"]
                    if p["reorder"] and p["delay_ms"]:
                        args += ["reorder", f"{p['reorder'] * 100:g}%"]
                run("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "netem", "limit", "100000", *args)

    # -- relay
    def _make_relay(self):
        if not os.path.exists("/dev/net/tun"):
            skip("no /dev/net/tun and no sch_netem: cannot impair a link")
        self.ctl = os.path.join(harness.tempfile.mkdtemp(prefix="netlink-"), "params.json")
        self._write_params()
        spec = json.dumps({h: [na, da, nb, db] for h, (na, da, _, nb, db, _) in self.hops.items()})
        self.relay_log = harness.LogFile(self.ctl + ".log")
        with open(self.relay_log.path, "wb") as logf:
            self.relay = harness.spawn([sys.executable, os.path.abspath(__file__), "--relay", spec, self.ctl],
                                       stdout=logf, stderr=logf)
        ok = harness.wait_until(lambda: "ready" in self.relay_log.text() or self.relay.poll() is not None, 15)
        if not ok or self.relay.poll() is not None:
            skip(f"the TUN relay did not start: {self.relay_log.text().strip()[-400:]}")
        for h, (na, da, aa, nb, db, ab) in self.hops.items():
            for ns, dev, addr, peer in ((na, da, aa, ab), (nb, db, ab, aa)):
                run("ip", "-n", ns, "addr", "add", addr, "peer", peer, "dev", dev)
                run("ip", "-n", ns, "link", "set", dev, "up")

    def _write_params(self):
        tmp = self.ctl + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.params, f)
        os.replace(tmp, self.ctl)

    # -- both
    def set(self, hop, params, direction="both"):
        """Impair hop ("cm" or "mb", or "all") with params (IMPAIRED, CLEAN, DEAD or a dict of
        delay_ms, jitter_ms, loss, reorder) in direction "ab" (towards the broker), "ba" or "both"."""
        for h in (self.hops if hop == "all" else [hop]):
            for d in (("ab", "ba") if direction == "both" else (direction,)):
                self.params[f"{h}:{d}"] = dict(CLEAN, **params)
        if self.mode == "netem":
            self._apply_netem()
        else:
            self._write_params()
            gen = self.params_gen = getattr(self, "params_gen", 1) + 1
            os.kill(self.relay.pid, signal.SIGUSR1)
            # the relay logs each reload: wait until it took this one
            harness.wait_until(lambda: self.relay_log.count(r"^params ") >= gen, 5)

    def stats(self):
        """The relay's counters per hop direction (forwarded, dropped, reordered), or {} with netem."""
        if self.mode != "relay":
            return {}
        mark = self.relay_log.mark()
        os.kill(self.relay.pid, signal.SIGUSR2)
        m = self.relay_log.wait(r"^stats (.*)$", 5, since=mark)
        return json.loads(m.group(1)) if m else {}

    def close(self):
        if self.relay is not None:
            harness.stop(self.relay)
            self.relay = None
        for ns in reversed(self.made):
            run("ip", "netns", "del", ns, check=False)
        self.made = []


# ---------------------------------------------------------------------------
# the relay process

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def _open_tun(ns, dev):
    """A TUN device named dev made inside namespace ns (it lives as long as the descriptor)."""
    with in_ns(ns):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        import fcntl  # noqa: PLC0415
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def relay_main(spec_json, ctl):
    """Carry IP packets between the TUN ends of each hop, impaired as ctl's JSON says;
    SIGUSR1 reloads ctl, SIGUSR2 prints the counters."""
    spec = json.loads(spec_json)
    ends = {}  # fd -> (key "hop:dir", out fd)
    for h, (na, da, nb, db) in spec.items():
        a, b = _open_tun(na, da), _open_tun(nb, db)
        ends[a] = (f"{h}:ab", b)
        ends[b] = (f"{h}:ba", a)
    params = {}
    counts = {k: {"forwarded": 0, "dropped": 0, "reordered": 0} for k, _ in ends.values()}
    flags = {"reload": True, "stats": False}
    signal.signal(signal.SIGUSR1, lambda *_: flags.__setitem__("reload", True))
    signal.signal(signal.SIGUSR2, lambda *_: flags.__setitem__("stats", True))
    rng = random.Random(int(os.environ.get("NETLINK_SEED", "0")) or None)
    heap = []  # (due, seq, out fd, packet)
    seq = 0
    print("ready", flush=True)
    poller = select.epoll()
    for fd in ends:
        poller.register(fd, select.EPOLLIN)
    while True:
        if flags["reload"]:
            flags["reload"] = False
            with open(ctl) as f:
                params = json.load(f)
            print(f"params {json.dumps(params)}", flush=True)
        if flags["stats"]:
            flags["stats"] = False
            print(f"stats {json.dumps(counts)}", flush=True)
        now = time.monotonic()
        timeout = max(0.0, heap[0][0] - now) if heap else 1.0
        try:
            events = poller.poll(min(timeout, 1.0))
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd, _ in events:
            key, out = ends[fd]
            p = params.get(key, {})
            for _ in range(64):  # a bounded batch per wakeup, so the other ends are served too
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                c = counts[key]
                if p.get("drop") or rng.random() < p.get("loss", 0):
                    c["dropped"] += 1
                    continue
                delay = p.get("delay_ms", 0) / 1000.0
                if delay and rng.random() < p.get("reorder", 0):
                    delay = 0.0  # ahead of the packets already waiting
                    c["reordered"] += 1
                elif delay:
                    j = p.get("jitter_ms", 0) / 1000.0
                    delay = max(0.0, delay + rng.uniform(-j, j))
                c["forwarded"] += 1
                if delay:
                    seq += 1
                    heapq.heappush(heap, (now + delay, seq, out, pkt))
                else:
                    _write(out, pkt)
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, _, out, pkt = heapq.heappop(heap)
            _write(out, pkt)


def _write(fd, pkt):
    try:
        os.write(fd, pkt)
    except OSError:
        pass  # the device is down (a test took the link down): the packet is lost, as on a wire


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--relay":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    relay_main(sys.argv[2], sys.argv[3])


# ---------------------------------------------------------------------------
# mosquitto and mgate in the namespaces


class NsBroker:
    """mosquitto in the broker namespace on BROKER_ADDR:port (the namespace is the test's own, so
    the port is free), logging to a file."""

    def __init__(self, topo, port=1883, extra_conf="", ns=None, addr=BROKER_ADDR):
        self.ns, self.port, self.addr = ns or topo.broker, port, addr
        self.dir = harness.tempfile.mkdtemp(prefix="mosquitto-")
        os.chmod(self.dir, 0o755)
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} {addr}\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 100000\nlog_type all\nlog_dest stderr\nconnection_messages true\n"
                    + extra_conf)
        self.log = harness.LogFile(os.path.join(self.dir, "mosquitto.log"))
        with open(self.log.path, "wb") as logf:
            self.proc = ns_spawn(self.ns, ["mosquitto", "-c", conf], stdout=logf, stderr=logf, cwd=self.dir)
        wait_listen(self.proc, port, 10, self.log)
        self.pid = self.proc.pid


class NsMgate:
    """mgate in the mgate namespace: its MQTT listener on MGATE_CLIENT_ADDR:port to the broker at
    BROKER_ADDR:broker_port, the admin listener on 127.0.0.1:admin_port there. env: more MGATE_*."""

    def __init__(self, topo, binary, port=1883, broker_port=1883, admin_port=9090, **env):
        self.topo, self.port, self.admin_port = topo, port, admin_port
        self.cwd = harness.tempfile.mkdtemp(prefix="mgate-")
        e = harness.mgate_env(port, broker_port, MGATE_MQTT_WITHOUT_TLS_HOST=MGATE_CLIENT_ADDR,
                              MGATE_MQTT_WITHOUT_TLS_TARGET_HOST=BROKER_ADDR, MGATE_ADMIN_PORT=admin_port,
                              MGATE_ADMIN_HOST="127.0.0.1", MGATE_WORKERS=1)
        e.update({k: str(v) for k, v in env.items()})
        self.log = harness.LogFile(os.path.join(self.cwd, "mgate.log"))
        with open(self.log.path, "wb") as logf:
            self.proc = ns_spawn(topo.mgate, [binary], env=e, cwd=self.cwd, stdout=logf, stderr=logf)
        self.pid = self.proc.pid
        wait_listen(self.proc, port, 10, self.log)
        wait_listen(self.proc, admin_port, 10, self.log)

    def get(self, path, timeout=5.0):
        """(status, body) of GET path on the admin listener, or (None, error text)."""
        import http.client  # noqa: PLC0415
        try:
            with in_ns(self.topo.mgate):
                conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
                conn.connect()
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read().decode(errors="replace")
            conn.close()
            return r.status, body
        except OSError as ex:
            return None, str(ex)

    def metric(self, name, default=None):
        """The sum of a /metrics sample's values over its label sets (None when absent)."""
        status, body = self.get("/metrics")
        if status != 200:
            return default
        total, seen = 0.0, False
        for line in body.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
        return total if seen else default

    def stop(self, timeout=10.0):
        return harness.stop(self.proc, signal.SIGTERM, timeout)


def raw_client(topo, port=1883, host=MGATE_CLIENT_ADDR, ns=None, timeout=10.0):
    """A harness.RawClient whose socket lives in the client namespace (or ns)."""
    with in_ns(ns or topo.client):
        return harness.RawClient(port, host=host, timeout=timeout)


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]
