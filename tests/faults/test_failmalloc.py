#!/usr/bin/python3
"""Allocation failures: mgate's allocations fail at chosen points while clients come and go.

The sanitizer build links tests/failmalloc/failmalloc.c into mgate (the top-level
CMakeLists.txt): FAILMALLOC="every=N" fails every Nth allocation mgate's own code makes
(malloc, calloc, realloc, strdup, strndup, asprintf, getline), counted from the first accepted
connection on; "every=K,limit=1" fails only the Kth. For each N of a range, one mgate (one
worker, a plain MQTT listener and a WebSocket one) serves a fixed scene against a real
mosquitto: subscribers in 5.0 (TCP) and 3.1.1 (WebSocket), publishers in 3.1.1 (TCP, with a
will, a 200 kB packet, leaving without DISCONNECT) and 5.0 (WebSocket, a topic alias) at QoS
0, 1 and 2; the plain listener has a publish rate limit (never reached) for its per-session
state. Then SIGTERM.

Passes when, for every N: no client call waits past its deadline (a connection the failure
hits is refused or closed, never left hanging); a subscriber that was never cut off got every
message of each publisher that was never cut off (and the will of one that was not); mgate
exits 0 on SIGTERM (no signal death, no failed ASSERT) with no ASan/UBSan report and no leak
(LeakSanitizer at exit); and a run where a call failed has a line in mgate's log that says so
("out of memory", ENOMEM's text in the reason a connection ended, or with "ssl" OpenSSL's
error in "TLS handshake failed").

Then the same over a TLS listener (a 5.0 subscriber, a 3.1.1 publisher, QoS 1 and 2) with
OpenSSL's allocations failing too ("ssl").

Quick form (CI): N = 1..40 and some larger primes, then each single failure K = 1..C (C: the
calls counted in a run without failures), then TLS with N from 1 to 4181. MGATE_LONG=1: each
mgate serves the scene 4 times in turn (state left by failures is used again), N = 1..200 and
every third prime to 2000, K = 1..C, TLS with N = 1..100 and every sixth prime to 6000.
FM_ONLY="every=3,trace every=7,limit=1 tls:every=5,ssl" runs only those (trace: the stack of
each failed call in mgate's log, which is kept when a run fails).
"""
import base64
import os
import re
import select
import shutil
import socket
import struct
import sys
import tempfile
import time

SRC = os.environ.get("MGATE_SOURCE_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
sys.dont_write_bytecode = True
import harness as h  # noqa: E402

LONG = os.environ.get("MGATE_LONG") == "1"
ROUNDS = 4 if LONG else 1  # scenes one mgate serves in turn
DEADLINE = 8.0  # seconds any one client call may wait (a loaded 2-core machine, ASan)
WS = "MGATE_MQTT_WS_WITHOUT_TLS_"
TLS = "MGATE_MQTT_WITH_TLS_"
OPENSSL_SUPP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "failmalloc-openssl.supp")
OOM = re.compile(r"out of memory|Cannot allocate memory|malloc failure")  # mgate, strerror(ENOMEM), OpenSSL


def primes(lo, hi):
    return [p for p in range(lo, hi) if p > 1 and all(p % d for d in range(2, int(p ** 0.5) + 1))]


if os.environ.get("FM_ONLY"):  # a few values by hand while debugging: FM_ONLY="every=3 every=5,limit=1"
    EVERY, SINGLE, TLS_EVERY = [], None, []
elif LONG:
    EVERY = list(range(1, 201)) + primes(201, 2000)[::3]
    TLS_EVERY = list(range(1, 101)) + primes(101, 6000)[::6]
    SINGLE = None  # K = 1 to the calls counted in the run without failures
else:
    EVERY = list(range(1, 41)) + [53, 79, 127, 211, 397, 631, 997]
    TLS_EVERY = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181]
    SINGLE = None


class Hang(Exception):
    """A client call got no answer within its deadline on a connection still open."""


class WsClient(h.RawClient):
    """RawClient's MQTT over a WebSocket (binary messages, subprotocol mqtt)."""

    def __init__(self, port, path="/mqtt", timeout=DEADLINE):
        self.sock = socket.create_connection((h.HOST, port), timeout=timeout)
        self.buf, self.raw, self.stash = bytearray(), bytearray(), []
        self.version, self.connack, self.eof, self.auto_pubcomp, self.tls_error = 4, None, False, True, ""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {h.HOST}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Protocol: mqtt\r\n\r\n").encode())
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            self._recv(deadline)
        head, _, rest = bytes(self.raw).partition(b"\r\n\r\n")
        self.raw = bytearray(rest)
        self.status = head.split(b"\r\n")[0].decode(errors="replace")
        if " 101 " not in self.status + " ":
            raise Refused(self.status)

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.sock], [], [], left)[0]:
            raise TimeoutError("no data in time")
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            raise h.Closed()
        self.raw += data

    def send(self, data):
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _fill(self, deadline):
        """Unframe the server's (unmasked) frames into self.buf until some MQTT bytes came."""
        had = len(self.buf)
        while True:
            while len(self.raw) >= 2:
                op, n, off = self.raw[0] & 0x0F, self.raw[1] & 0x7F, 2
                if n == 126:
                    if len(self.raw) < 4:
                        break
                    n, off = struct.unpack("!H", self.raw[2:4])[0], 4
                elif n == 127:
                    if len(self.raw) < 10:
                        break
                    n, off = struct.unpack("!Q", self.raw[2:10])[0], 10
                if len(self.raw) < off + n:
                    break
                payload = bytes(self.raw[off:off + n])
                del self.raw[:off + n]
                if op == 8:
                    self.eof = True
                    raise h.Closed()
                if op in (0, 2):
                    self.buf += payload
            if len(self.buf) > had:
                return
            self._recv(deadline)


class Refused(Exception):
    pass


class Client:
    """One client of the scene: runs its steps and remembers how it ended.
    state: "ok" (every step answered), "refused" (CONNACK or upgrade refused, or a refusal
    code), "closed" (mgate closed it), "hang" (a deadline passed on an open connection)."""

    def __init__(self, name, make, version):
        self.name, self.make, self.version = name, make, version
        self.c, self.state, self.why, self.got = None, "ok", "", []

    def step(self, what, fn):
        """Run fn(client) unless this client already ended; True when it went through."""
        if self.state != "ok":
            return False
        try:
            if self.c is None:
                self.c = self.make()
            fn(self.c)
            return True
        except Refused as e:
            self.state, self.why = "refused", f"{what}: {e}"
        except (h.Closed, ConnectionError, BrokenPipeError) as e:
            self.state, self.why = "closed", f"{what}: {type(e).__name__}"
        except (TimeoutError, socket.timeout) as e:
            self.state, self.why = "hang", f"{what}: {e}"
        except OSError as e:
            self.state, self.why = "closed", f"{what}: {e}"
        return False

    def connect(self, cid, **kw):
        def go(c):
            rc = c.connect(self.version, cid, timeout=DEADLINE, **kw)
            if rc is None:
                raise h.Closed()
            if rc != 0:
                raise Refused(f"CONNACK {rc:#x}")
        return self.step("CONNECT", go)

    def subscribe(self, filters):
        def go(c):
            codes = c.subscribe(1, filters, timeout=DEADLINE)
            if any(code >= 0x80 for code in codes):
                raise Refused(f"SUBACK {codes}")
        return self.step("SUBSCRIBE", go)

    def publish(self, topic, payload, qos, pid, props=()):
        def go(c):
            if qos == 0:
                c.publish(topic, payload, props=props)
                if not c.ping(DEADLINE):  # the PINGRESP says the QoS 0 PUBLISH was read
                    raise h.Closed() if c.eof else TimeoutError("no PINGRESP")
            else:
                rc = c.publish_wait(topic, payload, qos, pid, props=props, timeout=DEADLINE)
                if rc >= 0x80:
                    raise Refused(f"ack {rc:#x}")
        return self.step(f"PUBLISH QoS {qos}", go)

    def collect(self, want):
        """Read PUBLISHes until every payload of want arrived (or the deadline: not a hang,
        the check on what arrived judges it)."""
        def go(c):
            deadline = time.monotonic() + DEADLINE
            while not want <= set(self.got) and time.monotonic() < deadline:
                try:
                    m = c.recv_publish(max(0.05, deadline - time.monotonic()))
                except TimeoutError:
                    break
                self.got.append(bytes(m.payload))
        return self.step("collect", go)

    def leave(self, clean):
        def go(c):
            if clean:
                c.disconnect()
                c.close()
            else:
                c.abort()
        self.step("leave", go)
        if self.c is not None:
            self.c.close()


def scene(n, plain_port, ws_port):
    """The clients of one run; returns them, and what each subscriber must have got."""
    top = f"fm/{n}"
    sub5 = Client("sub 5.0 tcp", lambda: h.RawClient(plain_port, timeout=DEADLINE), 5)
    subws = Client("sub 3.1.1 ws", lambda: WsClient(ws_port), 4)
    pub4 = Client("pub 3.1.1 tcp+will", lambda: h.RawClient(plain_port, timeout=DEADLINE), 4)
    pubws = Client("pub 5.0 ws", lambda: WsClient(ws_port), 5)
    sub5.connect(f"fm-sub5-{n}")
    sub5.subscribe([(f"{top}/#", 2), (f"{top}-other/+", 1)])
    subws.connect(f"fm-subws-{n}")
    subws.subscribe([(f"{top}/#", 1)])
    pub4.connect(f"fm-pub4-{n}", will={"topic": f"{top}/will", "payload": b"will", "qos": 1})
    pubws.connect(f"fm-pubws-{n}")
    sent = {pub4: [], pubws: []}
    for q in (0, 1, 2):
        for pub, tag in ((pub4, "p4"), (pubws, "pw")):
            payload = f"{tag}-q{q}".encode()
            if pub.publish(f"{top}/{tag}", payload, q, 10 + q):
                sent[pub].append(payload)
    # A packet larger than a read (kept in the connection's buffer until whole), and a 5.0
    # topic alias set, then used with an empty topic (the pair's alias map).
    big = b"B" * 200000
    if pub4.publish(f"{top}/big", big, 1, 20):
        sent[pub4].append(big)
    for i, topic in enumerate((f"{top}/alias", "")):
        payload = f"pw-alias-{i}".encode()
        if pubws.publish(topic, payload, 1, 30 + i, props=[(h.P_TOPIC_ALIAS, 1)]):
            sent[pubws].append(payload)
    pubws.leave(clean=True)
    will = pub4.state == "ok"
    pub4.leave(clean=False)
    want = set()
    for pub, payloads in sent.items():
        if pub.state == "ok":  # a publisher cut off may have had its last message dropped
            want |= set(payloads)
    if will and pub4.state == "ok":
        want.add(b"will")
    for sub in (sub5, subws):
        sub.collect(want)
        sub.leave(clean=True)
    return [sub5, subws, pub4, pubws], want


def tls_scene(n, port, ctx):
    """Over MQTT on TLS: a 5.0 subscriber and a 3.1.1 publisher at QoS 1 and 2."""
    top = f"fmtls/{n}"
    sub = Client("sub 5.0 tls", lambda: h.RawClient(port, timeout=DEADLINE, tls=ctx), 5)
    pub = Client("pub 3.1.1 tls", lambda: h.RawClient(port, timeout=DEADLINE, tls=ctx), 4)
    sub.connect(f"fm-tlssub-{n}")
    sub.subscribe([(f"{top}/#", 2)])
    pub.connect(f"fm-tlspub-{n}")
    sent = [p for q, p in ((1, b"t-q1"), (2, b"t-q2")) if pub.publish(f"{top}/x", p, q, q)]
    pub.leave(clean=True)
    want = set(sent) if pub.state == "ok" else set()
    sub.collect(want)
    sub.leave(clean=True)
    return [sub, pub], want


def one_run(t, tmp, broker, spec, tally, pki=None):
    """One mgate with FAILMALLOC=spec through one scene: plain MQTT and WebSocket, or with pki
    MQTT over TLS."""
    # Both ports chosen at once: two free_port() calls can return the same port, and mgate's
    # two listeners would then share it (SO_REUSEPORT), each taking the other's clients.
    port1, port2 = h.free_ports(2)
    env = {"MGATE_WORKERS": 1, "FAILMALLOC": spec, "MGATE_SHUTDOWN_GRACE": "1s",
           "MGATE_MQTT_WITHOUT_TLS_PUBLISH_RATE_LIMIT": 1000,  # never reached: its per-session state
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=1"}  # LeakSanitizer at exit
    if pki:
        # OpenSSL's known leak (failmalloc-openssl.supp), matched on frames inside libcrypto,
        # which only the slow unwinder sees (libcrypto has no frame pointers)
        env["LSAN_OPTIONS"] = f"suppressions={OPENSSL_SUPP}:" + os.environ.get("LSAN_OPTIONS", "")
        env["ASAN_OPTIONS"] += ":fast_unwind_on_malloc=0"
        env.update({TLS + "HOST": h.HOST, TLS + "PORT": port2, TLS + "TARGET_HOST": h.HOST,
                    TLS + "TARGET_PORT": broker.port, TLS + "CERT_FILE": pki["server.crt"],
                    TLS + "KEY_FILE": pki["server.key"]})
    else:
        env.update({WS + "HOST": h.HOST, WS + "PORT": port2, WS + "TARGET_HOST": h.HOST,
                    WS + "TARGET_PORT": broker.port, WS + "TARGET_PROTOCOL": "mqtt", WS + "PATH_PREFIX": "/mqtt"})
    try:
        g = h.Mgate(tmp, broker.port, port=port1, **env)
    except RuntimeError as e:
        return t.check(False, f"{spec}: mgate starts", str(e))
    h.wait_port(port2, 10.0, g.proc)
    n = spec.replace("=", "").replace(",", "-")
    clients, lost = [], []
    for r in range(ROUNDS):  # the scene again on the same mgate: its state after failures is used
        if pki:
            cl, want = tls_scene(f"{n}-{r}", port2, pki.tls_context())
            subs = cl[:1]
        else:
            cl, want = scene(f"{n}-{r}", g.port, port2)
            subs = cl[:2]
        clients += cl
        lost += [f"{c.name} missed {sorted(want - set(c.got))[:3]}" for c in subs
                 if c.state == "ok" and not want <= set(c.got)]
    alive = g.alive()
    rc = g.stop(timeout=30.0)
    text = g.log.text()
    states = {}
    for c in clients:
        states.setdefault(c.name, []).append(c.state)
    for c in clients:
        tally[c.state] = tally.get(c.state, 0) + 1
    m = re.search(r"failmalloc: counted=(\d+) failed=(\d+)", text)
    counted, failed = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    tally["counted"] += counted
    tally["failed"] += failed
    oom_lines = len(OOM.findall(text))
    must_say = failed > 0
    if pki:
        # OpenSSL's own failures are logged in OpenSSL's words, which do not always say memory;
        # and OpenSSL copes with some without an error (a cache entry not kept): a line is
        # required only when a client was cut off.
        oom_lines += text.count("TLS handshake failed")
        must_say = must_say and any(c.state != "ok" for c in clients)
        if "Suppressions used:" in text:
            tally["OpenSSL leaks suppressed"] = tally.get("OpenSSL leaks suppressed", 0) + 1
    tally["oom lines"] += oom_lines
    hung = [f"{c.name} ({c.why})" for c in clients if c.state == "hang"]
    san = h.sanitizer_lines(text)
    ok = alive and rc == 0 and not san and not hung and not lost and m is not None and (oom_lines or not must_say)
    summary = f"{spec}: {failed} of {counted} calls failed; " + ", ".join(f"{k} {'/'.join(v)}" for k, v in states.items())
    if ok:
        t.check(True, summary)
        shutil.rmtree(g.cwd, ignore_errors=True)
        return True
    t.check(alive, f"{spec}: mgate still running after the scene", text[-3000:])
    t.eq(rc, 0, f"{spec}: mgate exits 0 on SIGTERM")
    t.eq(san, [], f"{spec}: no sanitizer report or leak")
    t.eq(hung, [], f"{spec}: no client call left without an answer")
    t.eq(lost, [], f"{spec}: subscribers never cut off got every message of publishers never cut off")
    t.check(m is not None, f"{spec}: the failmalloc line at exit (the injection was active)")
    t.check(oom_lines or not must_say, f"{spec}: mgate's log says a connection ended for want of memory")
    print(f"  log kept in {g.log.path}; its last lines:\n" + "\n".join(text.splitlines()[-40:]), flush=True)
    return False


def has_failmalloc(path):
    with open(path, "rb") as f:
        return b"failmalloc: counted=" in f.read()


def main():
    h.need_binaries()
    if not has_failmalloc(h.MGATE_BIN):
        print("skipped: this mgate has no allocation-failure injection (only the -DMGATE_SANITIZE=ON build)")
        return 77
    t = h.Checks("failmalloc" + (" (long)" if LONG else ""))
    tmp = tempfile.mkdtemp(prefix="mgate-failmalloc-")
    broker = h.start_mosquitto(tmp)
    tally = {"counted": 0, "failed": 0, "oom lines": 0}
    t0 = time.monotonic()

    pki = h.Pki(tmp)
    for spec in os.environ.get("FM_ONLY", "").split():
        tls = spec.startswith("tls:")
        one_run(t, tmp, broker, spec[4:] if tls else spec, tally, pki if tls else None)
    if not EVERY:
        return t.done()
    t.section("no injection: the scene passes (the yardstick)")
    one_run(t, tmp, broker, "every=1000000000", tally)
    clean = tally["counted"]
    t.section(f"every Nth call fails, N = {EVERY[0]}..{EVERY[-1]} ({len(EVERY)} values)")
    for n in EVERY:
        one_run(t, tmp, broker, f"every={n}", tally)
    single = SINGLE or list(range(1, clean + 1))
    t.section(f"one call fails, the Kth, K = {single[0]}..{single[-1]} ({clean} calls in the run without failures)")
    for k in single:
        one_run(t, tmp, broker, f"every={k},limit=1", tally)
    t.section(f"MQTT over TLS, OpenSSL's allocations failing too: N = {', '.join(map(str, TLS_EVERY))}")
    for n in TLS_EVERY:
        one_run(t, tmp, broker, f"every={n},ssl", tally, pki)

    print(f"  totals: {tally} in {time.monotonic() - t0:.0f} s", flush=True)
    t.check(tally["failed"] > 0, "some allocations were failed")
    broker.stop()
    rc = t.done()
    if rc == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
