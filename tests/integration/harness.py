"""Shared pieces of the integration tests: processes, ports, checks, and a raw MQTT client.

Everything runs on 127.0.0.1. Every process a test starts is registered and is
killed by PID when the test ends, whatever way it ends (atexit, and
PR_SET_PDEATHSIG so that a test killed by ctest's timeout takes its children
with it). Every wait has a deadline.

The raw client (RawClient) writes MQTT packets byte by byte, so tests can send
malformed input and see the exact reason codes mgate answers with.
"""
import atexit
import ctypes
import json
import os
import re
import select
import signal
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HOST = "127.0.0.1"

# ---------------------------------------------------------------------------
# checks and reporting


class Checks:
    """Counts assertions; each prints one line. done() prints the summary and
    returns the exit status (0 only when nothing failed)."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.failures = []
        self.t0 = time.monotonic()
        print(f"== {name}", flush=True)

    def check(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            print(f"  ok    {what}", flush=True)
        else:
            self.failed += 1
            self.failures.append(what)
            print(f"  FAIL  {what}" + (f"  [{detail}]" if detail else ""), flush=True)
        return bool(cond)

    def eq(self, got, want, what):
        return self.check(got == want, what, f"got {got!r}, want {want!r}")

    def section(self, title):
        print(f"-- {title}", flush=True)

    def case(self, title, fn, *args, **kwargs):
        """Run one group of checks; an exception in it is one failure, and the
        other groups still run."""
        self.section(title)
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - report and go on
            traceback.print_exc()
            self.check(False, f"{title}: no exception", f"{type(e).__name__}: {e}")

    def done(self):
        took = time.monotonic() - self.t0
        if self.failures:
            print("failed checks:")
            for f in self.failures:
                print(f"  - {f}")
        print(f"{self.name}: {self.passed} passed, {self.failed} failed ({took:.1f} s)", flush=True)
        return 0 if self.failed == 0 and self.passed > 0 else 1


def wait_until(pred, timeout, step=0.02):
    """Poll pred() until it is true or timeout seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


# ---------------------------------------------------------------------------
# processes

_procs = []
_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def register(proc):
    """Remember a process started by the test so it is killed at exit."""
    _procs.append(proc)
    return proc


def spawn(argv, **kw):
    kw.setdefault("preexec_fn", _die_with_parent)
    return register(subprocess.Popen(argv, **kw))


def stop(proc, sig=signal.SIGTERM, timeout=3.0):
    """Stop one process by its PID; SIGKILL if it does not go in time."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        except ProcessLookupError:
            pass
    return proc.returncode


@atexit.register
def _cleanup():
    for p in reversed(_procs):
        try:
            stop(p, signal.SIGTERM, 2.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _sigterm(signum, frame):
    sys.exit(128 + signum)  # runs atexit


signal.signal(signal.SIGTERM, _sigterm)


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port, host=HOST):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def listens(pid, port, own_ns=False):
    """True when process pid has a listening TCP socket on port (from /proc, so a socket of some
    other process on the same port does not count). own_ns: read the socket tables of pid's own
    network namespace (a process the test started in a namespace of its own)."""
    inodes = set()
    net = f"/proc/{pid}/net" if own_ns else "/proc/net"
    for table in (f"{net}/tcp", f"{net}/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except (FileNotFoundError, ProcessLookupError):
            pass
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def wait_port(port, timeout=5.0, proc=None):
    """Wait until something accepts on port (with proc: until that very process listens on it);
    raise if not in time or if proc died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode} before listening on {port}")
        if listens(proc.pid, port) if proc is not None else port_open(port):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class LogFile:
    """A log file some process writes; read it, wait for a regular expression in it.
    Positions (mark, since) are byte offsets, so a test can look only at what came later."""

    def __init__(self, path):
        self.path = path

    def text(self, since=0):
        try:
            with open(self.path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self):
        try:
            return os.path.getsize(self.path)
        except FileNotFoundError:
            return 0

    def search(self, pattern, since=0):
        return re.search(pattern, self.text(since), re.M)

    def count(self, pattern, since=0):
        return len(re.findall(pattern, self.text(since), re.M))

    def wait(self, pattern, timeout=5.0, since=0):
        """The first match of pattern, waiting for it; None when it did not appear in time."""
        return wait_until(lambda: self.search(pattern, since), timeout)


class Broker:
    """mosquitto on 127.0.0.1:<free port>, logging everything to a file."""

    def __init__(self, tmpdir, extra_conf="", port=None):
        for attempt in range(3):  # a free port can be taken before mosquitto binds it
            self.dir = tempfile.mkdtemp(prefix="mosquitto-", dir=tmpdir)
            os.chmod(self.dir, 0o755)
            self.port = port or free_port()
            self.conf = os.path.join(self.dir, "mosquitto.conf")
            with open(self.conf, "w") as f:
                f.write(f"listener {self.port} {HOST}\n"
                        "allow_anonymous true\n"
                        "persistence false\n"
                        "log_type all\n"
                        "log_dest stderr\n"
                        "connection_messages true\n"
                        + extra_conf)
            self.log = LogFile(os.path.join(self.dir, "mosquitto.log"))
            with open(self.log.path, "wb") as logf:
                self.proc = spawn(["mosquitto", "-c", self.conf], stdout=logf, stderr=logf, cwd=self.dir)
            try:
                wait_port(self.port, 5.0, self.proc)
                return
            except RuntimeError:
                if port or attempt == 2 or self.proc.poll() is None:
                    raise

    def saw_client(self, client_id, since=0):
        """True when the broker logged a client connecting with exactly this id."""
        return self.log.search(r"New client connected from \S+ as " + re.escape(client_id) + r" \(", since) is not None

    def wait_client(self, client_id, timeout=5.0, since=0):
        return self.log.wait(r"New client connected from \S+ as " + re.escape(client_id) + r" \(", timeout, since)

    def stop(self):
        stop(self.proc)


def start_mosquitto(tmpdir, extra_conf="", port=None):
    return Broker(tmpdir, extra_conf, port)


MGATE_BIN = os.environ.get("MGATE_BIN", "")
EXAMPLE_BIN = os.environ.get("MGATE_EXAMPLE_BIN", "")


def need_binaries():
    for name in ("MGATE_BIN", "MGATE_EXAMPLE_BIN"):
        if not os.environ.get(name) or not os.access(os.environ[name], os.X_OK):
            print(f"{name} must name the built binary (ctest sets it)", file=sys.stderr)
            sys.exit(1)


def clean_env():
    """The environment without any MGATE_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MGATE_")}


def mgate_env(port, broker_port, **extra):
    """Environment for an mgate with one plain MQTT listener on 127.0.0.1:port.
    extra: more MGATE_* variables; a value of None removes the variable."""
    env = clean_env()
    env.update({
        "MGATE_MQTT_WITHOUT_TLS_HOST": HOST,
        "MGATE_MQTT_WITHOUT_TLS_PORT": str(port),
        "MGATE_MQTT_WITHOUT_TLS_TARGET_HOST": HOST,
        "MGATE_MQTT_WITHOUT_TLS_TARGET_PORT": str(broker_port),
        "MGATE_LOG_LEVEL": "info",
        "MGATE_SHUTDOWN_GRACE": "2s",  # bounds the stop at the end of a test
    })
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


SANITIZER = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|UndefinedBehaviorSanitizer")


def sanitizer_lines(text):
    """Lines of a process's output that report a sanitizer finding (ASan, LSan, UBSan builds)."""
    return [line for line in text.splitlines() if SANITIZER.search(line)]


_gates = []


class Mgate:
    """A running mgate (or the example binary) with its log in a file.
    It runs in its own empty working directory (it reads ./.env)."""

    def __init__(self, tmpdir, broker_port, binary=None, port=None, wait=True, **env):
        self.binary = binary or MGATE_BIN
        for attempt in range(3):  # a free port can be taken before mgate binds it
            self.port = port or free_port()
            self.cwd = tempfile.mkdtemp(prefix="mgate-", dir=tmpdir)
            self.env = mgate_env(self.port, broker_port, **env)
            self.log = LogFile(os.path.join(self.cwd, "mgate.log"))
            with open(self.log.path, "wb") as logf:
                self.proc = spawn([self.binary], env=self.env, cwd=self.cwd, stdout=logf, stderr=logf)
            self.pid = self.proc.pid
            if not wait:
                break
            try:
                wait_port(self.port, 5.0, self.proc)
                break
            except RuntimeError as e:
                taken = self.proc.poll() == 1 and "cannot listen" in self.log.text()
                if port or attempt == 2 or not taken:
                    raise RuntimeError(f"{e}; its log: {self.log.text().strip()[-500:]}") from None
        _gates.append(self)

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        return rss_kib(self.pid)

    def json_lines(self):
        out = []
        for line in self.log.text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def json_since(self, since=0):
        """The JSON log lines after byte offset since (from log.mark()), parsed."""
        out = []
        for line in self.log.text(since).splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        return stop(self.proc, sig, timeout)


def start_mgate(tmpdir, broker_port, binary=None, **env):
    return Mgate(tmpdir, broker_port, binary, **env)


def stop_with_connects_in_flight(t, g, connects, wait_s, line, what):
    """Send each (client id, username, password) as a v5 CONNECT, wait wait_s for the handler to
    have them pending, then SIGTERM g: it must exit 0, log line (the pending answers given at
    shutdown) and hold no sanitizer report (a pending answer dropped leaks its session)."""
    clients = [RawClient(g.port, timeout=5.0) for _ in connects]
    for c, (cid, user, password) in zip(clients, connects):
        c.send(connect_packet(5, cid, username=user, password=password))
    time.sleep(wait_s)
    rc = g.stop()
    for c in clients:
        c.close()
    text = g.log.text()
    t.eq(rc, 0, f"mgate exits 0 on SIGTERM with {what} in flight")
    t.check(line in text, f"the {what} still in flight were answered at shutdown", text[-2000:])
    t.eq(sanitizer_lines(text), [], f"no sanitizer report (no session left held by one of the {what})")


def finish(t):
    """End a test: stop every mgate it started with SIGTERM, check that each one that was still
    running exits 0 and that no log holds a sanitizer report; then print the summary.
    Returns the exit status."""
    t.section("mgate processes at the end")
    for g in _gates:
        running = g.alive()
        rc = g.stop(signal.SIGTERM, 10.0)
        if running:
            t.eq(rc, 0, f"{os.path.basename(g.binary)} :{g.port} exits 0 on SIGTERM")
        t.eq(sanitizer_lines(g.log.text()), [], f"{os.path.basename(g.binary)} :{g.port}: no sanitizer report")
    return t.done()


# ---------------------------------------------------------------------------
# MQTT packets, by hand

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15
NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP",
         8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
         14: "DISCONNECT", 15: "AUTH"}

# v5 property identifiers
P_PAYLOAD_FORMAT, P_MESSAGE_EXPIRY, P_CONTENT_TYPE, P_RESPONSE_TOPIC, P_CORRELATION = 0x01, 0x02, 0x03, 0x08, 0x09
P_SUB_ID, P_SESSION_EXPIRY, P_ASSIGNED_ID, P_SERVER_KEEPALIVE = 0x0B, 0x11, 0x12, 0x13
P_REASON_STRING, P_RECEIVE_MAX, P_TOPIC_ALIAS_MAX, P_TOPIC_ALIAS = 0x1F, 0x21, 0x22, 0x23
P_USER, P_MAX_PACKET = 0x26, 0x27
_PROP_KIND = {
    0x01: "b", 0x17: "b", 0x19: "b", 0x24: "b", 0x25: "b", 0x28: "b", 0x29: "b", 0x2A: "b",
    0x13: "h", 0x21: "h", 0x22: "h", 0x23: "h",
    0x02: "i", 0x11: "i", 0x18: "i", 0x27: "i",
    0x0B: "v",
    0x03: "s", 0x08: "s", 0x12: "s", 0x15: "s", 0x1A: "s", 0x1C: "s", 0x1F: "s",
    0x09: "d", 0x16: "d",
    0x26: "p",
}


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bin(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


utf8 = _bin


def props_encode(props):
    """props: a list of (identifier, value); strings may be str, pairs are (k, v)."""
    body = bytearray()
    for pid, val in props or ():
        kind = _PROP_KIND[pid]
        body += varint(pid)
        if kind == "b":
            body += bytes([val])
        elif kind == "h":
            body += struct.pack(">H", val)
        elif kind == "i":
            body += struct.pack(">I", val)
        elif kind == "v":
            body += varint(val)
        elif kind in "sd":
            body += _bin(val)
        else:
            body += _bin(val[0]) + _bin(val[1])
    return varint(len(body)) + bytes(body)


def read_varint(buf, off):
    n, mul = 0, 1
    for i in range(4):
        b = buf[off + i]
        n += (b & 0x7F) * mul
        mul *= 128
        if not b & 0x80:
            return n, off + i + 1
    raise ValueError("varint longer than 4 bytes")


def props_decode(buf, off):
    """Returns ([(identifier, value)...], offset after the block). Strings come back as str."""
    n, off = read_varint(buf, off)
    end = off + n
    out = []
    while off < end:
        pid, off = read_varint(buf, off)
        kind = _PROP_KIND.get(pid)
        if kind == "b":
            val = buf[off]
            off += 1
        elif kind == "h":
            val = struct.unpack_from(">H", buf, off)[0]
            off += 2
        elif kind == "i":
            val = struct.unpack_from(">I", buf, off)[0]
            off += 4
        elif kind == "v":
            val, off = read_varint(buf, off)
        elif kind in ("s", "d"):
            ln = struct.unpack_from(">H", buf, off)[0]
            val = bytes(buf[off + 2:off + 2 + ln])
            if kind == "s":
                val = val.decode()
            off += 2 + ln
        elif kind == "p":
            k = struct.unpack_from(">H", buf, off)[0]
            key = bytes(buf[off + 2:off + 2 + k]).decode()
            off += 2 + k
            v = struct.unpack_from(">H", buf, off)[0]
            val = (key, bytes(buf[off + 2:off + 2 + v]).decode())
            off += 2 + v
        else:
            raise ValueError(f"unknown property 0x{pid:02x}")
        out.append((pid, val))
    return out, end


def prop(props, pid, default=None):
    for k, v in props:
        if k == pid:
            return v
    return default


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + bytes(body)


def connect_packet(version, client_id, username=None, password=None, props=(), will=None,
                   clean=True, keepalive=60):
    """CONNECT for version 3 (3.1), 4 (3.1.1) or 5. will: dict(topic, payload, qos=0, retain=False, props=())."""
    name = b"MQIsdp" if version == 3 else b"MQTT"
    flags = 0x02 if clean else 0
    if will:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = _bin(name) + bytes([version, flags]) + struct.pack(">H", keepalive)
    if version == 5:
        body += props_encode(props)
    body += _bin(client_id)
    if will:
        if version == 5:
            body += props_encode(will.get("props", ()))
        body += _bin(will["topic"]) + _bin(will["payload"])
    if username is not None:
        body += _bin(username)
    if password is not None:
        body += _bin(password)
    return packet(CONNECT, 0, body)


def publish_packet(version, topic, payload, qos=0, pid=0, props=(), retain=False, dup=False):
    if isinstance(payload, str):
        payload = payload.encode()
    body = _bin(topic)
    if qos:
        body += struct.pack(">H", pid)
    if version == 5:
        body += props_encode(props)
    body += payload
    return packet(PUBLISH, (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0), body)


def subscribe_packet(version, pid, filters, props=()):
    """filters: [(filter, options)] where options holds the QoS in its low bits."""
    body = struct.pack(">H", pid)
    if version == 5:
        body += props_encode(props)
    for f, opts in filters:
        body += _bin(f) + bytes([opts])
    return packet(SUBSCRIBE, 2, body)


def ack_packet(version, ptype, pid, reason=0):
    """PUBACK, PUBREC, PUBREL or PUBCOMP."""
    flags = 2 if ptype == PUBREL else 0
    body = struct.pack(">H", pid)
    if version == 5 and reason:
        body += bytes([reason])
    return packet(ptype, flags, body)


def disconnect_packet(version, reason=0):
    if version == 5 and reason:
        return packet(DISCONNECT, 0, bytes([reason]))
    return packet(DISCONNECT, 0, b"")


class Packet:
    def __init__(self, ptype, flags, body):
        self.type, self.flags, self.body = ptype, flags, bytes(body)

    def __repr__(self):
        return f"<{NAMES.get(self.type, self.type)} flags={self.flags:#x} body={self.body[:40].hex()}>"


class Publish:
    def __init__(self, topic, payload, qos, retain, dup, pid, props):
        self.topic, self.payload, self.qos, self.retain, self.dup, self.pid, self.props = \
            topic, payload, qos, retain, dup, pid, props

    def __repr__(self):
        return f"<PUBLISH {self.topic!r} qos={self.qos} {self.payload[:30]!r}>"


def parse_publish(version, p):
    b = p.body
    tl = struct.unpack_from(">H", b, 0)[0]
    topic = b[2:2 + tl].decode()
    off = 2 + tl
    qos = (p.flags >> 1) & 3
    pid = 0
    if qos:
        pid = struct.unpack_from(">H", b, off)[0]
        off += 2
    props = []
    if version == 5:
        props, off = props_decode(b, off)
    return Publish(topic, b[off:], qos, bool(p.flags & 1), bool(p.flags & 8), pid, props)


def ack_reason(version, p):
    """The reason code of a PUBACK/PUBREC/PUBREL/PUBCOMP (0 when absent)."""
    return p.body[2] if version == 5 and len(p.body) > 2 else 0


def ack_id(p):
    return struct.unpack_from(">H", p.body, 0)[0]


def take_packet(buf):
    """The first whole MQTT packet in buf (a bytearray), taken out of it; None while incomplete."""
    if len(buf) < 2:
        return None
    n, mul, i = 0, 1, 1
    while i < len(buf) and i <= 4:
        b = buf[i]
        n += (b & 0x7F) * mul
        mul *= 128
        i += 1
        if not b & 0x80:
            if len(buf) < i + n:
                return None
            p = Packet(buf[0] >> 4, buf[0] & 0x0F, bytes(buf[i:i + n]))
            del buf[:i + n]
            return p
    return None


class Closed(Exception):
    pass


class RawClient:
    """A minimal MQTT client on a plain socket, to see exactly what mgate sends."""

    def __init__(self, port, host=HOST, timeout=5.0, rcvbuf=None, tls=None, server_hostname="localhost",
                 source=None):
        """tls: an ssl.SSLContext to speak MQTT over TLS (the handshake is done here; it raises
        ssl.SSLError when the server refuses during the handshake). A TLS error met later
        (TLS 1.3: the server judges the client certificate after the client's handshake is over)
        ends the stream like a close, and its text is kept in self.tls_error.
        source: the local address to connect from (another 127.x.y.z, to tell clients apart)."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source:
            self.sock.bind((source, 0))
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.tls_error = ""
        if tls is not None:
            try:
                self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
            except BaseException:
                self.sock.close()
                raise
        self.buf = bytearray()
        self.stash = []  # packets read while waiting for another kind
        self.version = 4
        self.connack = None
        self.eof = False
        self.auto_pubcomp = True

    # -- bytes
    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no packet in time")
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0
        if not pending:
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                raise TimeoutError("no packet in time")
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as e:
            self.tls_error = self.tls_error or str(e)
            data = b""
        except ssl.SSLError as e:
            self.tls_error = str(e)
            data = b""
        if not data:
            self.eof = True
            raise Closed()
        self.buf += data

    def read_packet(self, timeout=5.0):
        """The next packet; raises Closed at end of stream, TimeoutError when none in time.
        A PUBREL is answered with PUBCOMP here, as a client must, and not returned."""
        if self.stash:
            return self.stash.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            p = self._read_one(deadline)
            if p.type == PUBREL and self.auto_pubcomp:
                try:
                    self.send(ack_packet(self.version, PUBCOMP, ack_id(p)))
                except OSError:
                    pass  # the peer is closing; the next read says so
                continue
            return p

    def _read_one(self, deadline):
        while True:
            p = take_packet(self.buf)
            if p:
                return p
            self._fill(deadline)

    def expect(self, ptype, timeout=5.0):
        """Read until a packet of this type; others are kept for later reads."""
        for i, p in enumerate(self.stash):
            if p.type == ptype:
                return self.stash.pop(i)
        deadline = time.monotonic() + timeout
        kept = []
        try:
            while True:
                if self.stash:
                    p = self.stash.pop(0)
                else:
                    p = self.read_packet(max(0.0, deadline - time.monotonic()))
                if p.type == ptype:
                    return p
                kept.append(p)
        finally:
            self.stash = kept + self.stash

    def expect_closed(self, timeout=5.0):
        """True when the peer closes within timeout; packets read meanwhile go to self.before_close."""
        self.before_close = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.before_close.append(self.read_packet(max(0.0, deadline - time.monotonic())))
        except Closed:
            return True
        except TimeoutError:
            return False

    def expect_disconnect(self, timeout=5.0):
        """Wait for the peer to close. Returns (closed, reason): reason is the DISCONNECT reason code
        when exactly one DISCONNECT came before the close (0 when it has none), else None."""
        closed = self.expect_closed(timeout)
        got = self.before_close
        reason = None
        if len(got) == 1 and got[0].type == DISCONNECT:
            reason = got[0].body[0] if got[0].body else 0
        return closed, reason

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Close with RST (no DISCONNECT, no FIN handshake)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    # -- MQTT
    def connect(self, version, client_id, username=None, password=None, props=(), will=None,
                clean=True, keepalive=60, timeout=5.0):
        """Send CONNECT; return the CONNACK code, or None when the connection closed without one."""
        self.version = version
        try:
            self.send(connect_packet(version, client_id, username, password, props, will, clean, keepalive))
        except ssl.SSLError as e:
            self.tls_error = str(e)
            return None
        try:
            p = self.read_packet(timeout)
        except Closed:
            return None
        if p.type != CONNACK:
            raise AssertionError(f"expected CONNACK, got {p!r}")
        self.connack = p
        self.connack_props = props_decode(p.body, 2)[0] if version == 5 and len(p.body) > 2 else []
        return p.body[1]

    def publish(self, topic, payload, qos=0, pid=0, props=(), retain=False, dup=False):
        self.send(publish_packet(self.version, topic, payload, qos, pid, props, retain, dup))

    def publish_wait(self, topic, payload, qos, pid, props=(), retain=False, timeout=5.0):
        """Publish at QoS 1 or 2 and finish the flow; returns the PUBACK or PUBREC reason code."""
        self.publish(topic, payload, qos, pid, props, retain)
        p = self.expect(PUBACK if qos == 1 else PUBREC, timeout)
        if ack_id(p) != pid:
            raise AssertionError(f"ack for {ack_id(p)}, expected {pid}")
        rc = ack_reason(self.version, p)
        if qos == 2 and rc < 0x80:
            self.send(ack_packet(self.version, PUBREL, pid))
            c = self.expect(PUBCOMP, timeout)
            if ack_id(c) != pid:
                raise AssertionError(f"PUBCOMP for {ack_id(c)}, expected {pid}")
        return rc

    def subscribe(self, pid, filters, props=(), timeout=5.0):
        """filters: [(filter, options)] or [filter] (QoS 0); returns the SUBACK codes."""
        filters = [(f, 0) if isinstance(f, str) else f for f in filters]
        self.send(subscribe_packet(self.version, pid, filters, props))
        p = self.expect(SUBACK, timeout)
        if ack_id(p) != pid:
            raise AssertionError(f"SUBACK for {ack_id(p)}, expected {pid}")
        off = 2
        if self.version == 5:
            _, off = props_decode(p.body, off)
        return list(p.body[off:])

    def ping(self, timeout=5.0):
        """True when a PINGREQ gets its PINGRESP."""
        self.send(packet(PINGREQ, 0, b""))
        try:
            self.expect(PINGRESP, timeout)
            return True
        except (Closed, TimeoutError):
            return False

    def disconnect(self, reason=0):
        self.send(disconnect_packet(self.version, reason))

    def recv_publish(self, timeout=5.0):
        """The next PUBLISH, acknowledged as a client must (PUBACK, or PUBREC; read_packet answers
        the PUBREL). Other packets wait in the stash."""
        deadline = time.monotonic() + timeout
        kept = []
        try:
            while True:
                p = self.read_packet(max(0.0, deadline - time.monotonic()))
                if p.type != PUBLISH:
                    kept.append(p)
                    continue
                m = parse_publish(self.version, p)
                if m.qos == 1:
                    self.send(ack_packet(self.version, PUBACK, m.pid))
                elif m.qos == 2:
                    self.send(ack_packet(self.version, PUBREC, m.pid))
                return m
        finally:
            self.stash = self.stash + kept

    def collect(self, n, timeout=10.0):
        """Up to n PUBLISHes within timeout (acknowledged)."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.recv_publish(max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                break
        return out

    def collect_until(self, pred, timeout=10.0):
        """PUBLISHes until one satisfies pred (it is included), or timeout."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.recv_publish(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return out, False
            out.append(m)
            if pred(m):
                return out, True


def connect_burst(port, version, logins, timeout=10.0, between=None):
    """One connection per (client_id, username, password) of logins, every CONNECT sent before any
    answer is read. between(), if given, runs after the last CONNECT went out. Returns the CONNACK
    codes in order (None for a connection closed without one) and the seconds from the first
    CONNECT to the last answer."""
    clients = [RawClient(port) for _ in logins]
    t0 = time.monotonic()
    for c, (cid, user, password) in zip(clients, logins):
        c.version = version
        c.send(connect_packet(version, cid, username=user, password=password))
    if between:
        between()
    codes = []
    for c in clients:
        try:
            p = c.read_packet(timeout)
            codes.append(p.body[1] if p.type == CONNACK else None)
        except (TimeoutError, Closed):
            codes.append(None)
    took = time.monotonic() - t0
    for c in clients:
        c.close()
    return codes, took


def raw_client(port, version, client_id, **kw):
    """A connected RawClient; raises when CONNACK is not 0."""
    c = RawClient(port)
    rc = c.connect(version, client_id, **kw)
    if rc != 0:
        c.close()
        raise AssertionError(f"{client_id}: CONNACK {rc}")
    return c


# ---------------------------------------------------------------------------
# paho-mqtt (1.6.1, from /usr/bin/python3)


def paho():
    import paho.mqtt.client as mqtt  # noqa: PLC0415 - only tests that need it import it
    return mqtt


class PahoClient:
    """A paho client on its own network thread, with blocking helpers that wait for events."""

    def __init__(self, port, client_id, protocol, clean=True, will=None, username=None, keepalive=60,
                 connect_props=None, ws_path=None):
        """ws_path: MQTT over WebSocket at that path instead of TCP."""
        mqtt = paho()
        self.mqtt = mqtt
        kw = {"protocol": protocol}
        if protocol != mqtt.MQTTv5:
            kw["clean_session"] = clean
        if ws_path:
            kw["transport"] = "websockets"
        self.c = mqtt.Client(client_id, **kw)
        if ws_path:
            self.c.ws_set_options(path=ws_path)
        self.cond = threading.Condition()
        self.messages = []
        self.connect_rc = None
        self.subacks = {}
        self.disconnected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_disconnect = self._on_disconnect
        self.c.max_inflight_messages_set(20)
        if will:
            self.c.will_set(**will)
        if username:
            self.c.username_pw_set(username)
        if protocol == mqtt.MQTTv5:
            self.c.connect(HOST, port, keepalive, clean_start=clean, properties=connect_props)
        else:
            self.c.connect(HOST, port, keepalive)
        self.c.loop_start()
        with self.cond:
            self.cond.wait_for(lambda: self.connect_rc is not None, 5.0)
        if self.connect_rc is None:
            self.stop()
            raise AssertionError(f"{client_id}: no CONNACK in 5 s")
        if self.connect_rc != 0:
            self.stop()
            raise AssertionError(f"{client_id}: CONNACK {self.connect_rc}")

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        with self.cond:
            self.connect_rc = rc if isinstance(rc, int) else rc.value
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        with self.cond:
            self.subacks[mid] = [g if isinstance(g, int) else g.value for g in granted]
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        self.disconnected.set()

    def subscribe(self, topic, qos=0, timeout=5.0, **kw):
        """Subscribe and wait for the SUBACK; returns its codes."""
        rc, mid = self.c.subscribe(topic, qos, **kw)
        if rc != 0:
            raise AssertionError(f"subscribe {topic}: rc {rc}")
        with self.cond:
            if not self.cond.wait_for(lambda: mid in self.subacks, timeout):
                raise AssertionError(f"subscribe {topic}: no SUBACK in {timeout} s")
            return self.subacks[mid]

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        return self.c.publish(topic, payload, qos, retain, properties)

    def publish_wait(self, topic, payload, qos=1, retain=False, properties=None, timeout=5.0):
        info = self.c.publish(topic, payload, qos, retain, properties)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise AssertionError(f"publish {topic}: not acknowledged in {timeout} s")

    def wait_messages(self, n, timeout=10.0, pred=None):
        """Wait until at least n messages (matching pred) arrived; returns them."""
        def matching():
            return [m for m in self.messages if pred is None or pred(m)]
        with self.cond:
            self.cond.wait_for(lambda: len(matching()) >= n, timeout)
            return matching()

    def stop(self):
        try:
            self.c.disconnect()
        except Exception:  # noqa: BLE001
            pass
        self.c.loop_stop()


# ---------------------------------------------------------------------------
# TLS: the test PKI (ssl/gen.sh), the OCSP responders and CRL file server
# (examples/server/ocsp/serve.py), mTLS listeners, TLS clients

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GEN_SH = os.path.join(REPO, "ssl", "gen.sh")
SERVE_PY = os.path.join(REPO, "examples", "server", "ocsp", "serve.py")


def free_ports(n):
    """n different loopback ports nobody listens on right now (all held at once while choosing,
    so no two are the same)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def openssl_out(*args, input=None, timeout=10):
    """Run the openssl command line; returns the CompletedProcess (text)."""
    return subprocess.run(["openssl", *args], input=input, capture_output=True, text=True, timeout=timeout)


class Pki:
    """A fresh test PKI from ssl/gen.sh (docs/TLS-CERTIFICATES.md lists the files) whose
    certificates point at this test's own ports: the root's OCSP responder (ocsp_port), the
    intermediate's (int_ocsp_port) and the CRL/CA file server (http_port). pki["client.crt"] is
    the path of a file."""

    def __init__(self, tmpdir, crl_name="crl.der"):
        self.ocsp_port, self.http_port, self.int_ocsp_port = free_ports(3)
        self.dir = os.path.join(tmpdir, "pki")
        self.responder_url = f"http://{HOST}:{self.ocsp_port}/ocsp"
        self.int_responder_url = f"http://{HOST}:{self.int_ocsp_port}/ocsp"
        self.files_url = f"http://{HOST}:{self.http_port}"
        r = subprocess.run([GEN_SH, self.dir, "--responder-url", self.responder_url,
                            "--crl-url", f"{self.files_url}/{crl_name}",
                            "--ca-issuers-url", f"{self.files_url}/ca.der",
                            "--int-responder-url", self.int_responder_url],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"ssl/gen.sh failed: {r.stderr.strip()}")

    def __getitem__(self, name):
        return os.path.join(self.dir, name)

    def serial(self, name):
        """The serial number as `openssl x509 -serial` prints it (hex)."""
        out = openssl_out("x509", "-in", self[name], "-noout", "-serial").stdout.strip()
        return out.split("=", 1)[1]

    def cn(self, name):
        out = openssl_out("x509", "-in", self[name], "-noout", "-subject", "-nameopt", "RFC2253").stdout
        m = re.search(r"CN=([^,\n]+)", out)
        return m.group(1) if m else ""

    def fingerprint(self, name_or_path):
        return cert_fingerprint(path=name_or_path if os.path.isabs(name_or_path) else self[name_or_path])

    def ocsp_status(self, cert, issuer="ca.crt", url=None):
        """Ask a responder with `openssl ocsp` (to check the test's setup); returns "good",
        "revoked", "unknown", or the error text."""
        r = openssl_out("ocsp", "-issuer", self[issuer], "-cert", self[cert], "-url", url or self.responder_url,
                        "-CAfile", self["ca.crt"], "-timeout", "5", timeout=15)
        m = re.search(r"^" + re.escape(self[cert]) + r": (\w+)", r.stdout, re.M)
        return m.group(1) if m and "Response verify OK" in r.stderr + r.stdout else (r.stdout + r.stderr).strip()

    def tls_context(self, name=None, ca="ca.crt", version=None):
        """A client context trusting ca, presenting NAME.crt/NAME.key when name is given
        (a name ending in -chain presents NAME.crt, which holds the chain, with the leaf's key).
        version "1.2" or "1.3" pins the protocol version."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self[ca])
        if name:
            key = name[:-len("-chain")] if name.endswith("-chain") else name
            ctx.load_cert_chain(self[f"{name}.crt"], self[f"{key}.key"])
        if version == "1.2":
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        elif version == "1.3":
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        return ctx

    def mosq_args(self, name=None, ca="ca.crt"):
        """mosquitto_pub/sub options for the same."""
        args = ["--cafile", self[ca]]
        if name:
            key = name[:-len("-chain")] if name.endswith("-chain") else name
            args += ["--cert", self[f"{name}.crt"], "--key", self[f"{key}.key"]]
        return args


def cert_fingerprint(path=None, pem=None):
    """SHA-256 fingerprint of a certificate (file or PEM text), as openssl prints it."""
    args = ["x509", "-noout", "-fingerprint", "-sha256"] + (["-in", path] if path else [])
    out = openssl_out(*args, input=pem).stdout.strip()
    return out.split("=", 1)[1] if "=" in out else ""


class Responder:
    """examples/server/ocsp/serve.py on 127.0.0.1 in reqin mode: any number of OCSP responders
    (each `openssl ocsp -reqin` per request, so the index is read again every time) and/or a file
    server, in one process with its log in a file. Each OCSP request logs an
    `ocsp: Received request` line, each download a `serve.py:PORT: "GET /path ...` line."""

    def __init__(self, tmpdir, name, ocsp=(), www=None, http_port=None, nmin=60):
        """ocsp: [(port, index, ca, signer, key)]; nmin: minutes to the answers' nextUpdate (0: none)."""
        self.name = name
        self.log = LogFile(os.path.join(tmpdir, f"serve-{name}.log"))
        argv = ["/usr/bin/python3", SERVE_PY, "--bind", HOST, "--nmin", str(nmin)]
        ports = []
        if www:
            argv += ["--www", www, "--http-port", str(http_port)]
            ports.append(http_port)
        for spec in ocsp:
            argv += ["--ocsp", ",".join(str(x) for x in spec)]
            ports.append(spec[0])
        self.ports = ports
        with open(self.log.path, "ab") as logf:
            self.proc = spawn(argv, stdout=logf, stderr=logf)
        for p in ports:
            wait_port(p, 10.0, self.proc)

    @classmethod
    def root(cls, tmpdir, pki, port=None, index=None, nmin=60, name="root"):
        """The root CA's responder (for client, revoked, unlisted, int-ca...), by default on the
        port the certificates' AIA names."""
        return cls(tmpdir, name, [(port or pki.ocsp_port, index or pki["index.txt"], pki["ca.crt"],
                                   pki["ocsp.crt"], pki["ocsp.key"])], nmin=nmin)

    @classmethod
    def intermediate(cls, tmpdir, pki, port=None, nmin=60, name="intermediate"):
        return cls(tmpdir, name, [(port or pki.int_ocsp_port, pki["int-index.txt"], pki["int-ca.crt"],
                                   pki["int-ocsp.crt"], pki["int-ocsp.key"])], nmin=nmin)

    @classmethod
    def files(cls, tmpdir, pki, port=None, name="files"):
        """The file server for pki/www (crl.der, crl.pem, crl-expired.der, ca.der...)."""
        return cls(tmpdir, name, www=pki["www"], http_port=port or pki.http_port)

    def ocsp_requests(self, since=0):
        return self.log.count(r"^ocsp: Received request", since)

    def downloads(self, path, since=0):
        """How many GETs of path (e.g. "/crl.der") the file server logged."""
        return self.log.count(r'^serve\.py:\d+: "GET ' + re.escape(path) + r" ", since)

    def stop(self):
        stop(self.proc)


class SilentServer:
    """A TCP listener on 127.0.0.1 that takes connections and never answers: a hung responder.
    accepted counts the connections taken."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}/ocsp"
        self.conns = []
        self.accepted = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            self.accepted += 1

    def close(self):
        self._stop = True
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def tls_listener_env(prefix, port, broker_port, pki, client_ca="ca.crt", **settings):
    """MGATE_* variables for one TLS listener (prefix MGATE_MQTT_WITH_MTLS_ or MGATE_MQTT_WITH_TLS_)
    with server.crt/key from pki; settings are more keys of that listener without the prefix
    (CERT_VERIFICATION_METHODS="ocsp"); a value of None leaves the key out."""
    env = {"HOST": HOST, "PORT": port, "TARGET_HOST": HOST, "TARGET_PORT": broker_port,
           "CERT_FILE": pki["server.crt"], "KEY_FILE": pki["server.key"]}
    if client_ca:
        env["CLIENT_CA_FILE"] = pki[client_ca]
    env.update(settings)
    return {prefix + k: v for k, v in env.items() if v is not None}


class TlsGate(Mgate):
    """An mgate with its plain listener (self.port) and one TLS listener (self.tls_port):
    mTLS by default. Extra global variables (MGATE_LOG_LEVEL...) go in glob."""

    def __init__(self, tmpdir, broker_port, pki, prefix="MGATE_MQTT_WITH_MTLS_", glob=None, **settings):
        for attempt in range(3):  # a free port can be taken before mgate binds it
            self.tls_port = free_port()
            env = tls_listener_env(prefix, self.tls_port, broker_port, pki, **settings)
            env.update(glob or {})
            super().__init__(tmpdir, broker_port, wait=False, **env)
            try:
                wait_port(self.tls_port, 5.0, self.proc)
                wait_port(self.port, 5.0, self.proc)
                return
            except RuntimeError:
                taken = self.proc.poll() == 1 and "cannot listen" in self.log.text()
                if attempt == 2 or not taken:
                    raise RuntimeError(f"mgate did not start: {self.log.text().strip()[-600:]}") from None

    def handshake_failures(self, since=0):
        return [j for j in self.json_since(since) if j.get("msg") == "TLS handshake failed"]

    def wait_failure(self, since=0, timeout=3.0, cn=None):
        """The first "TLS handshake failed" line after since (with that cn, when given)."""
        def find():
            for j in self.handshake_failures(since):
                if cn is None or j.get("cn") == cn:
                    return j
            return None
        return wait_until(find, timeout)


def tls_mqtt(port, ctx, client_id, version=4, timeout=5.0, **connect):
    """One MQTT session over TLS: handshake, CONNECT, CONNACK. Returns (code, error, client):
    code is the CONNACK code or None when there was none; error the TLS or socket error text ("" if
    none); client the connected RawClient when code is 0 (close it), else None."""
    t0 = time.monotonic()
    try:
        c = RawClient(port, timeout=timeout, tls=ctx)
    except (ssl.SSLError, OSError) as e:
        return None, str(e) or type(e).__name__, None
    try:
        code = c.connect(version, client_id, timeout=max(0.1, timeout - (time.monotonic() - t0)), **connect)
    except TimeoutError:
        code = None
        c.tls_error = c.tls_error or "no CONNACK in time"
    except (ssl.SSLError, OSError) as e:
        code = None
        c.tls_error = c.tls_error or str(e) or type(e).__name__
    if code is None and not c.tls_error:
        c.tls_error = "closed without CONNACK"
    if code != 0:
        c.close()
        return code, c.tls_error, None
    return code, c.tls_error, c


_mosq_ids = [0]


def mosq_pub_sub(port, broker, args, what, timeout=8.0):
    """mosquitto_sub, then mosquitto_pub (QoS 1), both through port with the same TLS options.
    Returns "" when the subscriber got the message, else what went wrong."""
    _mosq_ids[0] += 1
    n = _mosq_ids[0]
    topic = f"it/{what.replace(' ', '-')}/{n}"
    sub_id, pub_id = f"sub-{os.getpid()}-{n}", f"pub-{os.getpid()}-{n}"
    mark = broker.log.mark()
    sub = spawn(["mosquitto_sub", "-h", "localhost", "-p", str(port), *args, "-i", sub_id, "-t", topic,
                 "-q", "1", "-C", "1", "-W", str(int(timeout))],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait_until(lambda: broker.log.search(r"Received SUBSCRIBE from " + re.escape(sub_id) + r"\b", mark)
                      or sub.poll() is not None, timeout):
        stop(sub)
        return "the subscriber never subscribed"
    if sub.poll() is not None:
        return f"mosquitto_sub exited {sub.returncode}: {sub.stderr.read().strip()}"
    pub = subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(port), *args, "-i", pub_id, "-t", topic,
                          "-m", what, "-q", "1"], capture_output=True, text=True, timeout=timeout + 2)
    try:
        out, err = sub.communicate(timeout=timeout + 2)
    except subprocess.TimeoutExpired:
        stop(sub)
        out, err = "", "mosquitto_sub did not end"
    if pub.returncode != 0:
        return f"mosquitto_pub exited {pub.returncode}: {pub.stderr.strip()}"
    if out.strip() != what:
        return f"subscriber got {out.strip()!r} ({err.strip()})"
    return ""


def mosq_pub(port, args, client_id="pub", topic="it/x", timeout=8.0):
    """One QoS 1 mosquitto_pub (it waits for the server: with TLS 1.3 a QoS 0 publish can
    "succeed" on a connection the server is about to refuse). Returns (exit status, stderr)."""
    r = subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(port), *args, "-i", client_id, "-t", topic,
                        "-m", "x", "-q", "1"], capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stderr.strip()


def s_client(port, *args, timeout=10):
    """`openssl s_client` to 127.0.0.1:port with stdin at end of file (it ends after the
    handshake). Returns the CompletedProcess; stdout and stderr together in .out."""
    r = openssl_out("s_client", "-connect", f"{HOST}:{port}", "-servername", "localhost", *args, input="",
                    timeout=timeout)
    r.out = r.stdout + r.stderr
    return r


def s_client_cert(port, *args):
    """The server certificate (PEM) a new s_client connection sees, or ""."""
    r = s_client(port, *args)
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", r.stdout, re.S)
    return m.group(0) if m else ""


def readable_copy(src, dst_dir, mode=0o644):
    """Copy a file for a process that drops privileges (mosquitto runs as user mosquitto after
    reading its config): into dst_dir, world-readable. Returns the new path."""
    os.makedirs(dst_dir, exist_ok=True)
    os.chmod(dst_dir, 0o755)
    dst = os.path.join(dst_dir, os.path.basename(src))
    shutil.copyfile(src, dst)
    os.chmod(dst, mode)
    return dst


def run_main(main):
    """Call main(); an uncaught exception is a failure, reported with its traceback."""
    try:
        code = main()
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 1
    sys.exit(code)

