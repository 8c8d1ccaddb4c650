#!/usr/bin/python3
"""Soak: one mgate with a listener of every kind, a mixed bounded load for a set time, SIGHUP
reloads in the middle; mgate's RSS, open descriptors and CPU sampled all along.

The gate (the plain build's mgate, 2 workers, the acl handler with an ACL file and anonymous
clients allowed) runs these listeners, each to one mosquitto (TCP):
  MQTT over TCP; MQTT over TLS with client certificates checked for revocation by OCSP (the
  certificates' AIA, answers valid one minute so they are asked again) and CRL (their CDP);
  MQTT over WebSocket, ws:// and wss://; HTTP, the bridge (each POST a PUBLISH on the broker);
  HTTP over TLS relaying to examples/server/http-echo (requests and its WebSocket); CoAP, the
  bridge; the admin listener (/metrics).
The load, from threads of this process (niced, each loop at a bounded rate):
  * steady: one publisher (QoS 0, 1, 2 in turn, 10/s) and four subscribers that stay connected
    all along (TCP, mTLS, ws, wss) through every reload; at the end each must have every message
    (QoS 2 exactly once);
  * churn: MQTT 3.1.1 and 5.0 clients that connect, sometimes subscribe and get their own
    message back, publish at QoS 0/1/2, and leave with DISCONNECT or a reset; a v5 client now
    and then publishes where the ACL forbids it and must get PUBACK 0x87 (an expected refusal);
  * retained: a value set and cleared in turn; a new subscriber must get exactly the retained
    value, or nothing once it was cleared;
  * TLS: handshakes with a good certificate (TLS 1.2 and 1.3 in turn), each then publishes;
    now and then the revoked certificate, which must be refused (an expected error);
  * WebSocket churn on ws and wss, a client connecting and publishing each time;
  * HTTP: POSTs to the bridge (keep-alive, ten a connection, QoS in turn; a subscriber counts
    what arrives), and GETs and a WebSocket round trip through the TLS relay;
  * CoAP: POSTs through the bridge from a new source port every few requests (a new MQTT
    session each, ended by IDLE_TIMEOUT);
  * a SIGHUP every RELOAD_EVERY seconds (the ACL file rewritten, the certificates read again):
    each must log its reload lines.

Pass criteria (the numbers are below, with why):
  * after the warm-up (the first WARM_UP_FRACTION of the run, at least WARM_UP_MIN seconds), the
    mean RSS of the last quarter of the samples is at most RSS_TOLERANCE_KIB above the mean of
    the second quarter (growth that continues shows there; allocator noise stays under it);
  * open descriptors: after the warm-up they stay below the first quiet point's count + FD_BAND
    (what the bounded load can hold open at once); and they come back between churn waves: at a
    quiet point (every QUIET_EVERY seconds from the end of the warm-up, and at the end, the
    churn pauses until mgate holds only the steady sessions, /metrics's gauge says so, and its
    descriptor count held still for 3 s) the count is at most the first quiet point's +
    FD_QUIET_SLACK;
  * every client error is an expected one (counted by kind; any unexpected one fails), every
    kind of load did something, every reload was logged, mgate's log holds no warning or error
    but the one expected at start and no "TLS failure (logged above)" without that line above,
    mgate exits 0.

Length: MGATE_SOAK_SECONDS (default 120, the CI form), MGATE_LONG=1 for 3600. Output (CSV of
the samples, a PNG of RSS and descriptors drawn by plot.py, a summary JSON with the counts) in
MGATE_SOAK_DIR, default ./soak-out under the working directory (ctest's: build/tests).
MGATE_SOAK_KEEP=1 keeps the logs (mgate, mosquitto, responders) and prints where.
"""
import csv
import http.client
import json
import os
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import harness as h  # noqa: E402
import plot  # noqa: E402
from test_coap import ACK, CON, POST, URI_QUERY, Raw, code as coap_code  # noqa: E402
from test_http import ECHO  # noqa: E402
from test_ws import RawWs  # noqa: E402

LONG = os.environ.get("MGATE_LONG") == "1"
SECONDS = int(os.environ.get("MGATE_SOAK_SECONDS") or (3600 if LONG else 120))
SAMPLE_EVERY = 2.0 if SECONDS <= 600 else 5.0
RELOAD_EVERY = 25.0
QUIET_EVERY = 30.0 if SECONDS <= 600 else 300.0  # a quiet point (fds back to the baseline?) this often
WARM_UP_FRACTION, WARM_UP_MIN = 0.2, 30.0
# RSS: the last quarter's mean at most this much above the second quarter's (after the warm-up).
# Measured here (docs/TESTING.md, "Soak"): the plain build holds about 13-14 MiB under this load,
# of which ~10 MiB are mapped files (mgate's and its libraries' code) and 2-3 MiB the heap and
# stacks; between the second and last quarter the mean moved by ~0.1 MiB in the 2-minute form and
# ~0.2 MiB in the hour (pages of code and of glibc's arenas touched for the first time, slower
# and slower; heaptrack saw no growth of the heap itself). 1 MiB is five times the hour's figure.
# The quarters' midpoints are ~45 s (CI form, ~900 connections) and ~24 min (the hour, ~29000
# connections) apart: a leak of ~1 KiB a connection fails the CI form, ~40 bytes the hour.
RSS_TOLERANCE_KIB = 1024
# fds: the load holds at most ~12 client connections at once (one or two per thread), each two
# descriptors in mgate, plus CoAP sessions alive for IDLE_TIMEOUT (2 s at 2 new peers a second)
# and the revocation fetches in flight (measured: at most 13 above the first quiet point); 64 is
# well above that and far below a leak of one descriptor per connection (thousands).
FD_BAND = 64
# From one quiet point to the next, libcurl's connection cache in each of the two workers (the
# HTTP relay's keep-alive connections to its target, the revocation fetches') may hold a
# connection more or fewer (measured: the same count at every quiet point); a leak of one
# descriptor per connection would be hundreds.
FD_QUIET_SLACK = 4
FD_SETTLE = 30.0

MTLS = "MGATE_MQTT_WITH_MTLS_"
WS = "MGATE_MQTT_WS_WITHOUT_TLS_"
WSS = "MGATE_MQTT_WS_WITH_TLS_"
HTTP = "MGATE_HTTP_WITHOUT_TLS_"
HTTPS = "MGATE_HTTP_WITH_TLS_"
COAP = "MGATE_COAP_WITHOUT_DTLS_"
CHANGED = coap_code(2, 4)

ACL_TEXT = ("# soak: anonymous clients may use soak/# (and /soak/#, the HTTP relay's paths), nothing else\n"
            "topic readwrite soak/#\ntopic readwrite /soak/#\n")


# ---------------------------------------------------------------------------
# what the clients saw


class Tally:
    """Counts by kind: operations done, expected errors, unexpected errors (with the first few
    details of each kind)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops, self.expected, self.unexpected, self.details = {}, {}, {}, {}

    def ok(self, kind, n=1):
        with self.lock:
            self.ops[kind] = self.ops.get(kind, 0) + n

    def expect(self, kind):
        with self.lock:
            self.expected[kind] = self.expected.get(kind, 0) + 1

    def fail(self, kind, detail):
        with self.lock:
            self.unexpected[kind] = self.unexpected.get(kind, 0) + 1
            d = self.details.setdefault(kind, [])
            if len(d) < 3:
                d.append(f"{time.strftime('%H:%M:%S')} {detail}"[:400])
        print(f"  unexpected: {kind}: {detail}"[:300], flush=True)

    def snapshot(self):
        with self.lock:
            return dict(self.ops), dict(self.expected), dict(self.unexpected)


T = Tally()
STOP = threading.Event()
PAUSE = threading.Event()  # set: the pausable loops finish what they do and wait (a quiet point)
BUSY = [0, threading.Lock()]  # pausable loops inside fn() now


def loop(name, period, fn, pausable=True):
    """Run fn(i) every period seconds until STOP (not while PAUSE, when pausable); an exception is
    an unexpected error of name."""
    def run():
        i = 0
        while not STOP.is_set():
            if pausable and PAUSE.is_set():
                STOP.wait(0.05)
                continue
            t0 = time.monotonic()
            if pausable:
                with BUSY[1]:
                    BUSY[0] += 1
            try:
                fn(i)
            except Exception as e:  # noqa: BLE001 - counted, and the load goes on
                T.fail(f"{name}: {type(e).__name__}", f"{e}")
                if os.environ.get("MGATE_SOAK_TRACE"):
                    traceback.print_exc()
            finally:
                if pausable:
                    with BUSY[1]:
                        BUSY[0] -= 1
            i += 1
            STOP.wait(max(0.0, period - (time.monotonic() - t0)))
    th = threading.Thread(target=run, name=name, daemon=True)
    th.start()
    return th


# ---------------------------------------------------------------------------
# MQTT over a WebSocket, with harness.RawClient's packet code


class WsSock:
    """The socket interface RawClient uses (sendall, recv, fileno, settimeout, close), over a
    WebSocket: each sendall one binary message, recv the payloads of the frames that arrived."""

    def __init__(self, port, tls=None):
        self.ws = RawWs(port, "/mqtt", tls=tls)
        if " 101 " not in self.ws.status + " ":
            raise ConnectionError(f"WebSocket upgrade: {self.ws.status}")

    def fileno(self):
        return self.ws.s.fileno()

    def settimeout(self, t):
        self.ws.s.settimeout(t)

    def sendall(self, data):
        self.ws.send_frame(data, 2)

    def _frame_buffered(self):
        b = self.ws.buf
        if len(b) < 2:
            return False
        n, off = b[1] & 0x7F, 2
        if n == 126:
            n, off = (int.from_bytes(b[2:4], "big") if len(b) >= 4 else 1 << 30), 4
        elif n == 127:
            n, off = (int.from_bytes(b[2:10], "big") if len(b) >= 10 else 1 << 30), 10
        return len(b) >= off + n

    def recv(self, _n):
        out = b""
        while True:
            try:
                op, payload = self.ws.recv_frame()
            except h.Closed:
                return out
            if op == 8:
                return out
            if op in (0, 1, 2):
                out += payload
            elif op == 9:
                self.ws.send_frame(payload, 10)
            tls_pending = isinstance(self.ws.s, ssl.SSLSocket) and self.ws.s.pending() > 0
            if out and not self._frame_buffered() and not tls_pending:
                return out

    def setsockopt(self, *a):
        self.ws.s.setsockopt(*a)

    def close(self):
        self.ws.s.close()


def ws_client(port, tls=None):
    """A RawClient speaking MQTT over a WebSocket to port."""
    c = h.RawClient.__new__(h.RawClient)
    c.sock = WsSock(port, tls)
    c.sock.settimeout(10.0)
    c.tls_error, c.buf, c.stash, c.version, c.connack, c.eof, c.auto_pubcomp = "", bytearray(), [], 4, None, False, True
    return c


# ---------------------------------------------------------------------------
# the steady clients


class Steady:
    """A paho subscriber that stays connected: counts what it gets by (topic, sequence)."""

    def __init__(self, name, port, pki=None, cert=None, ws=False, tls=False, topic="soak/steady/#"):
        mqtt = h.paho()
        self.name, self.lock = name, threading.Lock()
        self.seen = {}
        self.connected = threading.Event()
        self.lost = 0
        self.c = mqtt.Client(f"steady-{name}", protocol=mqtt.MQTTv311, clean_session=True,
                             transport="websockets" if ws else "tcp")
        if ws:
            self.c.ws_set_options(path="/mqtt")
        if tls:
            ctx = pki.tls_context(cert)
            self.c.tls_set_context(ctx)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        self.topic = topic
        self.c.connect(h.HOST, port, 30)
        self.c.loop_start()
        if not self.connected.wait(10):
            raise AssertionError(f"steady {name}: not connected in 10 s")

    def _on_connect(self, client, userdata, flags, rc):
        if rc != 0:
            T.fail(f"steady {self.name}: CONNACK", str(rc))
            return
        client.subscribe(self.topic, 2)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.seen[(msg.topic, msg.payload)] = self.seen.get((msg.topic, msg.payload), 0) + 1

    def _on_disconnect(self, client, userdata, rc):
        if rc != 0 and not STOP.is_set():
            self.lost += 1
            T.fail(f"steady {self.name}: connection lost", f"rc {rc}")

    def count(self, pred=lambda k: True):
        with self.lock:
            return sum(1 for k in self.seen if pred(k)), sum(n for k, n in self.seen.items() if pred(k))

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


# ---------------------------------------------------------------------------
# the loads


class Load:
    def __init__(self, g, pki, ports):
        self.g, self.pki, self.p = g, pki, ports
        self.published = {0: 0, 1: 0, 2: 0}
        self.http_posted = 0
        self.pub = None
        self.good12 = pki.tls_context("client", version="1.2")
        self.good13 = pki.tls_context("client", version="1.3")
        self.revoked = pki.tls_context("revoked")
        self.server_only = pki.tls_context()
        self.retained = {}

    # -- steady publisher: QoS 0, 1, 2 in turn on one connection
    def steady_pub(self, i):
        if self.pub is None:
            self.pub = h.raw_client(self.g.port, 5, "steady-pub", keepalive=0)
        qos = i % 3
        payload = f"{i}".encode()
        if qos == 0:
            self.pub.publish(f"soak/steady/q{qos}", payload)
        else:
            rc = self.pub.publish_wait(f"soak/steady/q{qos}", payload, qos, 1 + i % 60000)
            if rc != 0:
                raise AssertionError(f"steady publish QoS {qos}: reason {rc:#x}")
        self.published[qos] += 1
        T.ok(f"publish steady q{qos}")

    # -- connect/disconnect churn on the TCP listener
    def churn(self, i):
        v = 5 if i % 2 else 4
        cid = f"churn-{i}"
        c = h.RawClient(self.g.port, timeout=10.0)
        try:
            rc = c.connect(v, cid, keepalive=30, timeout=10.0)
            if rc != 0:
                raise AssertionError(f"CONNACK {rc}")
            T.ok("connect tcp")
            qos = i % 3
            if i % 3 == 0:
                codes = c.subscribe(1, [(f"soak/churn/{cid}", 2)], timeout=10.0)
                if codes != [2]:
                    raise AssertionError(f"SUBACK {codes}")
                self._pub(c, f"soak/churn/{cid}", b"echo", qos, 7)
                m = c.recv_publish(10.0)
                if m.payload != b"echo":
                    raise AssertionError(f"own message: {m!r}")
                T.ok(f"delivered own q{qos}")
            else:
                self._pub(c, "soak/sink", os.urandom(32 + i % 300), qos, 9)
            if v == 5 and i % 10 == 1:
                rc = c.publish_wait("forbidden/x", b"no", 1, 11, timeout=10.0)
                if rc != 0x87:
                    raise AssertionError(f"publish outside the ACL: PUBACK {rc:#x}, want 0x87")
                T.expect("publish outside the ACL refused (PUBACK 0x87)")
            if i % 5 == 4:
                c.abort()
                T.ok("reset by client")
            else:
                c.disconnect()
                c.close()
        finally:
            c.close()

    def _pub(self, c, topic, payload, qos, pid):
        if qos == 0:
            c.publish(topic, payload)
            if not c.ping(10.0):
                raise AssertionError("no PINGRESP after a QoS 0 publish")
        else:
            rc = c.publish_wait(topic, payload, qos, pid, timeout=10.0)
            if rc >= 0x80:  # 0x10, no matching subscribers, is a success
                raise AssertionError(f"publish QoS {qos}: reason {rc:#x}")
        T.ok(f"publish q{qos}")

    # -- retained messages: set (a new subscriber gets it), clear (a new subscriber gets nothing)
    def retained_cycle(self, i):
        topic = f"soak/retained/{i // 2 % 8}"
        c = h.raw_client(self.g.port, 4, f"ret-pub-{i}")
        value = f"value-{i}".encode() if i % 2 == 0 else b""
        c.publish_wait(topic, value, 1, 1, retain=True, timeout=10.0)
        c.disconnect()
        c.close()
        T.ok("retained set" if value else "retained cleared")
        s = h.raw_client(self.g.port, 5 if i % 4 < 2 else 4, f"ret-sub-{i}")
        try:
            s.subscribe(1, [(topic, 1)], timeout=10.0)
            s.send(h.packet(h.PINGREQ, 0, b""))
            got = []
            while True:
                p = s.read_packet(10.0)
                if p.type == h.PINGRESP:
                    break
                if p.type == h.PUBLISH:
                    m = h.parse_publish(s.version, p)
                    if m.qos:
                        s.send(h.ack_packet(s.version, h.PUBACK, m.pid))
                    got.append(m)
            want = [(topic, value, True)] if value else []
            have = [(m.topic, m.payload, m.retain) for m in got]
            if have != want:
                raise AssertionError(f"new subscriber to {topic}: got {have}, want {want}")
            T.ok("retained delivered" if value else "retained absent after clear")
            s.disconnect()
        finally:
            s.close()

    # -- TLS handshakes with revocation checks
    def tls(self, i):
        if i % 4 == 3:
            code, err, c = h.tls_mqtt(self.p["mtls"], self.revoked, f"tls-revoked-{i}", timeout=10.0)
            if c:
                c.close()
            if code == 0:
                raise AssertionError("the revoked certificate got CONNACK 0")
            if code is not None or not err:
                raise AssertionError(f"revoked: CONNACK {code}, error {err!r}")
            T.expect("revoked certificate refused")
            return
        ctx = self.good12 if i % 2 else self.good13
        code, err, c = h.tls_mqtt(self.p["mtls"], ctx, f"tls-{i}", version=4, timeout=10.0)
        if code != 0:
            raise AssertionError(f"good certificate (TLS 1.{2 if i % 2 else 3}): CONNACK {code}, {err}")
        try:
            T.ok("tls handshake good")
            self._pub(c, "soak/tls", b"x" * 64, 1, 3)
            c.disconnect()
        finally:
            c.close()

    # -- MQTT over WebSocket, ws and wss in turn
    def ws(self, i):
        secure = i % 2 == 1
        c = ws_client(self.p["wss"] if secure else self.p["ws"], self.server_only if secure else None)
        try:
            rc = c.connect(4 if i % 4 < 2 else 5, f"ws-{i}", timeout=10.0)
            if rc != 0:
                raise AssertionError(f"CONNACK {rc}")
            T.ok("connect wss" if secure else "connect ws")
            self._pub(c, "soak/ws", b"w" * (16 + i % 200), i % 3, 5)
            c.disconnect()
        finally:
            c.close()

    # -- HTTP bridge: ten POSTs a keep-alive connection
    def http(self, i):
        conn = http.client.HTTPConnection(h.HOST, self.p["http"], timeout=15)
        try:
            for k in range(10):
                if STOP.is_set() or PAUSE.is_set():
                    return
                qos = k % 3
                conn.request("POST", f"/mqtt/soak/http/{i}/{k}?qos={qos}", body=f"h{i}.{k}".encode(),
                             headers={"Content-Type": "text/plain"})
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    raise AssertionError(f"POST: {r.status} {body[:200]!r}")
                self.http_posted += 1
                T.ok(f"http post q{qos}")
                STOP.wait(0.2)
        finally:
            conn.close()

    # -- HTTPS relay to the echo target: a GET and a WebSocket round trip
    def https(self, i):
        conn = http.client.HTTPSConnection(h.HOST, self.p["https"], timeout=15, context=self.server_only)
        try:
            conn.request("GET", f"/mgate-http/soak/get-{i}")
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise AssertionError(f"GET through the relay: {r.status}")
            T.ok("https get")
        finally:
            conn.close()
        ws = RawWs(self.p["https"], f"/mgate-http/soak/ws-{i}", protocol=None, tls=self.server_only)
        try:
            if " 101 " not in ws.status + " ":
                raise AssertionError(f"WebSocket on the HTTP listener: {ws.status}")
            ws.s.settimeout(10)
            msg = f"echo-{i}".encode()
            ws.send_frame(msg, 1)
            op, payload = ws.recv_frame()
            if (op, payload) != (1, msg):
                raise AssertionError(f"echo: {op} {payload!r}")
            ws.send_frame(b"\x03\xe8", 8)
            op, _ = ws.recv_frame()
            if op != 8:
                raise AssertionError(f"close answered with opcode {op}")
            T.ok("http websocket round trip")
        finally:
            ws.s.close()

    # -- CoAP bridge: a new source port (a new session) every five POSTs
    def coap(self, i):
        c = Raw(self.p["coap"])
        try:
            for k in range(5):
                if STOP.is_set() or PAUSE.is_set():
                    return
                mid = c.request(CON, POST, f"ps/soak/coap/{k}", f"c{i}.{k}".encode(), token=bytes([k + 1]),
                                opts=[(URI_QUERY, f"clientid=coap-{i}"), (URI_QUERY, f"qos={k % 2}")])
                deadline = time.monotonic() + 10
                r = None
                while time.monotonic() < deadline:
                    r = c.recv(max(0.05, deadline - time.monotonic()))
                    if r and r[2] == mid:
                        break
                if not r or r[2] != mid or r[0] != ACK or r[1] != CHANGED:
                    raise AssertionError(f"CoAP POST: {r}")
                T.ok("coap post")
                STOP.wait(0.3)
        finally:
            c.close()


# ---------------------------------------------------------------------------
# reloads and samples


class Reloader:
    def __init__(self, g, acl_path, pki, cert_copies):
        self.g, self.acl, self.pki, self.copies = g, acl_path, pki, cert_copies
        self.count = 0

    def __call__(self, i):
        if i == 0:
            return  # the first one comes one period in
        with open(self.acl + ".new", "w") as f:
            f.write(ACL_TEXT + f"# reload {i}\n")
        os.replace(self.acl + ".new", self.acl)
        for src, dst in self.copies:  # the same certificates, written again as a renewal would
            with open(src, "rb") as a, open(dst + ".new", "wb") as b:
                b.write(a.read())
            os.replace(dst + ".new", dst)
        mark = self.g.log.mark()
        os.kill(self.g.pid, signal.SIGHUP)
        ok = h.wait_until(lambda: self.g.log.count(r'"SIGHUP: acl reloaded', mark) >= 1
                          and self.g.log.count(r'"SIGHUP: \S+ reloaded its certificates', mark) >= 3, 15.0, 0.2)
        if not ok:
            raise AssertionError(f"reload {i}: no reload lines in 15 s: {self.g.log.text(mark)[-600:]}")
        errs = [j for j in self.g.json_since(mark) if str(j.get("msg", "")).startswith("SIGHUP")
                and j.get("level") in ("error", "warn")]
        if errs:
            raise AssertionError(f"reload {i}: {errs[:2]}")
        self.count += 1
        T.ok("reload")


def rss_parts(pid):
    """(RssAnon, RssFile) in KiB: the heap and stacks, and the mapped files (code of mgate and its
    libraries, paged in as code paths are first used)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out.get("RssAnon", 0), out.get("RssFile", 0)


def proc_sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
    return h.rss_kib(pid), len(os.listdir(f"/proc/{pid}/fd")), cpu


def fd_kinds(pid, names):
    """What mgate's descriptors are, counted: TCP sockets by their peer (names: port -> name; a
    listening socket is "listen", a client's "client"), UDP sockets, and other kinds (eventfd,
    epoll, files). For the report when descriptors do not come back."""
    socks = {}
    for table, proto in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
        try:
            with open(f"/proc/net/{table}") as f:
                next(f)
                for line in f:
                    x = line.split()
                    rport = int(x[2].rsplit(":", 1)[1], 16)
                    if proto == "udp":
                        socks[x[9]] = "udp"
                    elif x[3] == "0A":
                        socks[x[9]] = "tcp listen"
                    else:
                        socks[x[9]] = "tcp " + names.get(rport, "client")
        except OSError:
            pass
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            kind = socks.get(link[8:-1], "socket (other)")
        elif link.startswith("anon_inode:"):
            kind = link
        else:
            kind = "file"
        out[kind] = out.get(kind, 0) + 1
    return dict(sorted(out.items()))


def sessions_gauge(admin_port):
    """The sum of mgate_connections{listener=...} from /metrics, or -1 when it cannot be read."""
    try:
        c = http.client.HTTPConnection(h.HOST, admin_port, timeout=5)
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
        c.close()
    except OSError:
        return -1
    total = 0
    for line in body.splitlines():
        if line.startswith("mgate_connections{"):
            total += int(float(line.split()[-1]))
    return total


class Sampler:
    FIELDS = ["t_s", "rss_kib", "rss_anon_kib", "rss_file_kib", "fds", "cpu_s", "sessions", "ops", "expected",
              "unexpected", "reloads"]

    def __init__(self, g, admin, path, reloader):
        self.g, self.admin, self.path, self.reloader = g, admin, path, reloader
        self.rows = []
        self.t0 = time.monotonic()
        self.f = open(path, "w", newline="")
        self.w = csv.DictWriter(self.f, self.FIELDS)
        self.w.writeheader()

    def __call__(self, _i):
        rss, fds, cpu = proc_sample(self.g.pid)
        ops, exp, unexp = T.snapshot()
        anon, mapped = rss_parts(self.g.pid)
        row = {"t_s": round(time.monotonic() - self.t0, 1), "rss_kib": rss, "rss_anon_kib": anon,
               "rss_file_kib": mapped, "fds": fds, "cpu_s": round(cpu, 2),
               "sessions": sessions_gauge(self.admin), "ops": sum(ops.values()), "expected": sum(exp.values()),
               "unexpected": sum(unexp.values()), "reloads": self.reloader.count}
        self.rows.append(row)
        self.w.writerow(row)
        self.f.flush()
        if LONG or len(self.rows) % 10 == 1:
            if not LONG or len(self.rows) % 12 == 1:
                print(f"  t={row['t_s']:.0f}s rss={rss} KiB (anon {anon}) fds={fds} cpu={cpu:.1f}s "
                      f"sessions={row['sessions']} ops={row['ops']} unexpected={row['unexpected']}", flush=True)


# ---------------------------------------------------------------------------


def start(tmp):
    pki = h.Pki(tmp)
    # mosquitto needs nothing from the PKI: every listener of mgate reaches it over TCP
    broker = h.start_mosquitto(tmp, "max_queued_messages 10000\n")
    root = h.Responder(tmp, "root", [(pki.ocsp_port, pki["index.txt"], pki["ca.crt"], pki["ocsp.crt"],
                                      pki["ocsp.key"])], www=pki["www"], http_port=pki.http_port, nmin=1)
    echo_log = h.LogFile(os.path.join(tmp, "echo.log"))
    echo_port = h.free_port()
    with open(echo_log.path, "ab") as logf:
        echo = h.spawn(["/usr/bin/python3", ECHO, "--port", str(echo_port)], stdout=logf, stderr=logf)
    h.wait_port(echo_port, 10.0, echo)

    # The certificates mgate reads (and reads again on SIGHUP) are copies the reloader rewrites.
    cdir = os.path.join(tmp, "certs")
    os.makedirs(cdir)
    copies = [(pki[n], os.path.join(cdir, n)) for n in ("server.crt", "server.key", "ca.crt")]
    for src, dst in copies:
        with open(src, "rb") as a, open(dst, "wb") as b:
            b.write(a.read())
    cert, key, ca = (os.path.join(cdir, n) for n in ("server.crt", "server.key", "ca.crt"))
    acl = os.path.join(tmp, "acl")
    with open(acl, "w") as f:
        f.write(ACL_TEXT)

    for attempt in range(3):  # a free port can be taken before mgate binds it
        mtls, ws, wss, http_p, https_p, admin = h.free_ports(6)
        from test_coap import free_coap_port  # noqa: PLC0415
        coap = free_coap_port()
        ports = {"echo": echo_port, "broker": broker.port, "mtls": mtls, "ws": ws, "wss": wss, "http": http_p,
                 "https": https_p, "coap": coap, "admin": admin}
        env = {"MGATE_HANDLER": "acl", "MGATE_ACL_FILE": acl, "MGATE_ACL_ALLOW_ANONYMOUS": "true",
               "MGATE_ADMIN_PORT": admin, "MGATE_WORKERS": 2, "MGATE_SHUTDOWN_GRACE": "5s"}

        def lst(prefix, port, **kw):
            env.update({prefix + "HOST": h.HOST, prefix + "PORT": port, prefix + "TARGET_HOST": h.HOST,
                        prefix + "TARGET_PORT": broker.port})
            env.update({prefix + k: v for k, v in kw.items()})
        lst(MTLS, mtls, CERT_FILE=cert, KEY_FILE=key, CLIENT_CA_FILE=ca, CERT_VERIFICATION_METHODS="ocsp,crl",
            REVOCATION_TIMEOUT="5s")
        lst(WS, ws, PATH_PREFIX="/mqtt", TARGET_PROTOCOL="mqtt")
        lst(WSS, wss, PATH_PREFIX="/mqtt", TARGET_PROTOCOL="mqtt", CERT_FILE=cert, KEY_FILE=key)
        lst(HTTP, http_p, PATH_PREFIX="/mqtt", TARGET_PROTOCOL="mqtt")
        lst(HTTPS, https_p, PATH_PREFIX="/mgate-http", TARGET_PORT=echo_port, CERT_FILE=cert, KEY_FILE=key)
        lst(COAP, coap, TARGET_PROTOCOL="mqtt", IDLE_TIMEOUT="2s")
        g = h.Mgate(tmp, broker.port, wait=False, **env)
        try:
            for p in (g.port, mtls, ws, wss, http_p, https_p, admin):
                h.wait_port(p, 10.0, g.proc)
            break
        except RuntimeError:
            if attempt == 2 or "cannot listen" not in g.log.text():
                raise RuntimeError(f"mgate did not start: {g.log.text()[-800:]}") from None
            h._gates.remove(g)
    return pki, broker, root, echo, g, ports, acl, copies


def slope_kib_per_hour(rows):
    n = len(rows)
    if n < 2:
        return 0.0
    xs = [r["t_s"] for r in rows]
    ys = [r["rss_kib"] for r in rows]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return 0.0 if sxx == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx * 3600


# The one warning mgate logs here, at start: the acl handler runs without a password file.
EXPECTED_WARNINGS = ("acl: MGATE_ACL_PASSWORD_FILE is not set",)


def log_audit(path):
    """Read mgate's log once: messages counted by (level, msg), the warnings and errors that are
    not EXPECTED_WARNINGS, and the sessions closed as a "TLS failure (logged above)" whose peer
    has no "TLS handshake failed" or "TLS error" line before (a closing line that lies)."""
    counts, bad, unexplained, failed_peers = {}, [], [], set()
    with open(path, errors="replace") as f:
        for line in f:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            msg, level = str(j.get("msg", "")), j.get("level")
            key = f"{level} {msg.split(':')[0] if msg.startswith(('closing', 'SIGHUP')) else msg}"
            counts[key] = counts.get(key, 0) + 1
            if level in ("warn", "error") and not msg.startswith(EXPECTED_WARNINGS):
                bad.append(line.strip()[:300])
            if msg in ("TLS handshake failed", "TLS error"):
                failed_peers.add(j.get("peer"))
            elif "TLS failure (logged above)" in msg and j.get("peer") not in failed_peers:
                unexplained.append(line.strip()[:300])
    return counts, bad, unexplained


def quiet_point(g, admin, steady_sessions, t0, names):
    """Pause the churn (not the steady publisher, the sampler): once no pausable loop is inside a
    request, wait until mgate holds only the steady sessions and its descriptor count has not
    moved for 3 s; note that count, then let the load go on."""
    PAUSE.set()
    try:
        idle = h.wait_until(lambda: BUSY[0] == 0, 30.0, 0.05)
        last = [None, time.monotonic()]

        def settled():
            f = proc_sample(g.pid)[1]
            if f != last[0]:
                last[0], last[1] = f, time.monotonic()
                return False
            return time.monotonic() - last[1] >= 3.0 and sessions_gauge(admin) == steady_sessions
        ok = h.wait_until(settled, FD_SETTLE, 0.25)
        # the count that held still, not a new one: the /metrics request settled() just made may
        # not be closed in mgate yet
        rss, fds = proc_sample(g.pid)[0], last[0]
        q = {"t_s": round(time.monotonic() - t0, 1), "fds": fds, "rss_kib": rss, "settled": bool(idle and ok),
             "sessions": sessions_gauge(admin), "kinds": fd_kinds(g.pid, names)}
    finally:
        PAUSE.clear()
    print(f"  quiet point at {q['t_s']:.0f} s: fds={fds} rss={rss} KiB sessions={q['sessions']}"
          f"{'' if q['settled'] else ' (NOT SETTLED)'}", flush=True)
    return q


def judge(t, rows, warm, quiet):
    """The pass criteria on the samples after the warm-up and on the quiet points."""
    after = [r for r in rows if r["t_s"] >= warm]
    t.check(len(after) >= 8, f"at least 8 samples after the warm-up ({warm:.0f} s)", f"{len(after)}")
    t.check(len(quiet) >= 2, f"at least 2 quiet points after the warm-up ({len(quiet)})")
    if len(after) < 8 or len(quiet) < 2:
        return {}
    q = len(after) // 4
    second, last = after[q:2 * q], after[-q:]
    m2 = sum(r["rss_kib"] for r in second) / len(second)
    m4 = sum(r["rss_kib"] for r in last) / len(last)
    slope = slope_kib_per_hour(after)
    t.check(m4 - m2 <= RSS_TOLERANCE_KIB,
            f"RSS after the warm-up: last quarter's mean {m4 / 1024:.2f} MiB is at most {RSS_TOLERANCE_KIB} KiB "
            f"above the second quarter's {m2 / 1024:.2f} MiB (least-squares slope {slope / 1024:.2f} MiB/h)",
            f"grew {m4 - m2:.0f} KiB")
    base = quiet[0]["fds"]
    fmax = max(r["fds"] for r in after)
    fmin = min(r["fds"] for r in after)
    t.check(fmax <= base + FD_BAND,
            f"open fds after the warm-up stay below the first quiet point's {base} + {FD_BAND} (max {fmax})")
    for qp in quiet:
        t.check(qp["settled"], f"quiet point at {qp['t_s']:.0f} s: the churn's sessions all ended and the fd "
                f"count held still for 3 s (within {FD_SETTLE:.0f} s)", f"sessions {qp['sessions']}")
    qmax = max(qp["fds"] for qp in quiet)
    t.check(qmax <= base + FD_QUIET_SLACK,
            f"open fds come back between churn waves: every quiet point holds at most the first one's {base} "
            f"+ {FD_QUIET_SLACK} (max {qmax}: {[qp['fds'] for qp in quiet]})",
            f"first {quiet[0]['kinds']}, worst {max(quiet, key=lambda qp: qp['fds'])['kinds']}")
    a2 = sum(r["rss_anon_kib"] for r in second) / len(second)
    a4 = sum(r["rss_anon_kib"] for r in last) / len(last)
    print(f"  RSS after the warm-up, second and last quarter means: {m2:.0f} and {m4:.0f} KiB; of which anonymous "
          f"(heap, stacks) {a2:.0f} and {a4:.0f} KiB", flush=True)
    return {"rss_anon_q2_kib": round(a2), "rss_anon_q4_kib": round(a4), "rss_q2_kib": round(m2),
            "rss_q4_kib": round(m4), "rss_slope_kib_per_h": round(slope),
            "fds_min_after_warmup": fmin, "fds_max_after_warmup": fmax,
            "quiet_points": [{k: qp[k] for k in ("t_s", "fds", "rss_kib", "kinds")} for qp in quiet]}


def run(t, tmp, out_dir):
    pki, broker, root, echo, g, ports, acl, copies = start(tmp)
    t.check(g.alive(), f"mgate runs with its listeners: {ports}")
    # mgate, mosquitto and the responders were started at normal priority; the load yields to them.
    os.nice(5)

    steady = [Steady("tcp", g.port), Steady("mtls", ports["mtls"], pki, "client", tls=True),
              Steady("ws", ports["ws"], ws=True), Steady("wss", ports["wss"], pki, None, ws=True, tls=True)]
    http_sub = Steady("http-sub", g.port, topic="soak/http/#")
    steady.append(http_sub)
    time.sleep(1.0)  # their SUBACKs (paho subscribes in on_connect)
    rss0, fds0, cpu0 = proc_sample(g.pid)
    names = {broker.port: "broker", pki.ocsp_port: "ocsp responder", pki.http_port: "crl server",
             ports["echo"]: "echo target"}
    kinds0 = fd_kinds(g.pid, names)
    print(f"  quiet, before the load: rss={rss0} KiB fds={fds0} (5 steady clients): {kinds0}", flush=True)

    load = Load(g, pki, ports)
    reloader = Reloader(g, acl, pki, copies)
    sampler = Sampler(g, ports["admin"], os.path.join(out_dir, "samples.csv"), reloader)
    threads = [loop("sample", SAMPLE_EVERY, sampler, False), loop("steady-pub", 0.1, load.steady_pub, False),
               loop("churn", 0.2, load.churn), loop("churn2", 0.25, lambda i: load.churn(100000000 + i)),
               loop("retained", 0.5, load.retained_cycle), loop("tls", 0.5, load.tls), loop("ws", 0.5, load.ws),
               loop("http", 0.1, load.http), loop("https", 1.0, load.https), loop("coap", 0.5, load.coap),
               loop("reload", RELOAD_EVERY, reloader)]
    print(f"  load for {SECONDS} s (sample every {SAMPLE_EVERY:.0f} s, SIGHUP every {RELOAD_EVERY:.0f} s)",
          flush=True)
    warm = max(WARM_UP_MIN, WARM_UP_FRACTION * SECONDS)
    t0 = sampler.t0
    deadline = t0 + SECONDS
    next_quiet = t0 + warm
    quiet = []
    while g.alive():
        now = time.monotonic()
        if now >= next_quiet or now >= deadline:
            quiet.append(quiet_point(g, ports["admin"], len(steady) + 1, t0, names))
            next_quiet += QUIET_EVERY
            if now >= deadline:
                break
            continue
        time.sleep(min(1.0, max(0.0, min(deadline, next_quiet) - now)))
    STOP.set()
    for th in threads:
        th.join(30)
    t.check(g.alive(), "mgate still runs after the load")
    t.check(not any(th.is_alive() for th in threads), "every load thread ended")
    if load.pub:
        load.pub.disconnect()
        load.pub.close()

    # every steady subscriber has every message
    for s in steady[:4]:
        for qos in (0, 1, 2):
            want = load.published[qos]
            topic = f"soak/steady/q{qos}".encode()
            h.wait_until(lambda: s.count(lambda k: k[0] == topic.decode())[0] >= want, 20.0, 0.2)
            distinct, total = s.count(lambda k: k[0] == topic.decode())
            t.eq(distinct, want, f"steady {s.name}: every QoS {qos} message arrived ({want})")
            if qos == 2:
                t.eq(total, want, f"steady {s.name}: no QoS 2 message twice")
    h.wait_until(lambda: http_sub.count()[0] >= load.http_posted, 20.0, 0.2)
    t.eq(http_sub.count()[0], load.http_posted, "every POST answered 200 was published (the HTTP subscriber's count)")

    # quiet again: the steady clients only
    sess = h.wait_until(lambda: sessions_gauge(ports["admin"]) == len(steady), 15.0, 0.5)
    t.check(sess, f"/metrics: mgate_connections comes back to the {len(steady)} steady clients",
            f"{sessions_gauge(ports['admin'])}")
    rss1, fds1, cpu1 = proc_sample(g.pid)
    kinds1 = fd_kinds(g.pid, names)
    print(f"  quiet, after the load: rss={rss1} KiB fds={fds1}: {kinds1}", flush=True)
    if os.environ.get("MGATE_SOAK_HOLD"):  # to look at mgate's descriptors by hand
        print(f"  holding mgate (pid {g.pid}) for {os.environ['MGATE_SOAK_HOLD']} s", flush=True)
        time.sleep(float(os.environ["MGATE_SOAK_HOLD"]))
    for s in steady:
        s.stop()

    rows = sampler.rows
    figures = judge(t, rows, warm, quiet)
    ops, exp, unexp = T.snapshot()
    for kind in ("connect tcp", "publish q0", "publish q1", "publish q2", "retained delivered",
                 "retained absent after clear", "tls handshake good", "connect ws", "connect wss", "http post q1",
                 "https get", "http websocket round trip", "coap post", "reload"):
        t.check(ops.get(kind, 0) > 0, f"load kind {kind!r} happened ({ops.get(kind, 0)})")
    t.check(exp.get("revoked certificate refused", 0) > 0, "the revoked certificate was tried and refused "
            f"({exp.get('revoked certificate refused', 0)})")
    t.check(reloader.count >= int(SECONDS // RELOAD_EVERY) - 1,
            f"{reloader.count} SIGHUP reloads, each logged (one every {RELOAD_EVERY:.0f} s)")
    t.eq(unexp, {}, "no client saw an unexpected error")
    log_counts, bad, unexplained = log_audit(g.log.path)
    t.eq(bad[:5], [], "mgate logged no warning or error but the expected one (acl without a password file)")
    t.eq(unexplained[:5], [], "every session closed as a \"TLS failure (logged above)\" has that TLS failure "
         "logged above (a client closing TCP without close_notify is not one)")
    for kind, d in T.details.items():
        print(f"    {kind}: {d}")

    summary = {
        "seconds": SECONDS, "warm_up_s": warm, "samples": len(rows), "ops": ops, "expected_errors": exp,
        "unexpected_errors": unexp, "reloads": reloader.count,
        "steady_published": load.published, "http_posted": load.http_posted,
        "rss_kib": {"quiet_start": rss0, "start": rows[0]["rss_kib"] if rows else None,
                    "end": rows[-1]["rss_kib"] if rows else None,
                    "max": max((r["rss_kib"] for r in rows), default=None),
                    "quiet_end": rss1},
        "fds": {"quiet_start": fds0, "min": min((r["fds"] for r in rows), default=None),
                "max": max((r["fds"] for r in rows), default=None), "quiet_end": fds1,
                "kinds_quiet_start": kinds0, "kinds_quiet_end": kinds1},
        "cpu_s": round(cpu1 - cpu0, 1), "mgate_log": log_counts, **figures,
    }
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    print(json.dumps(summary, sort_keys=True), flush=True)
    if rows:
        with open(os.path.join(out_dir, "soak.png"), "wb") as f:
            f.write(plot.render(rows, f"MGATE SOAK {SECONDS}S: RSS AND FDS", warm))
    print(f"  output in {out_dir}: samples.csv, soak.png, summary.json", flush=True)


def main():
    h.need_binaries()
    out_dir = os.environ.get("MGATE_SOAK_DIR") or os.path.join(os.getcwd(), "soak-out")
    os.makedirs(out_dir, exist_ok=True)
    t = h.Checks(f"faults.soak ({SECONDS} s)")
    tmp = tempfile.mkdtemp(prefix="mgate-soak-")
    os.chmod(tmp, 0o755)
    t.case("soak", run, t, tmp, out_dir)
    code = h.finish(t)
    if os.environ.get("MGATE_SOAK_KEEP"):
        print(f"  logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    h.run_main(main)
