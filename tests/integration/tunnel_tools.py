"""Helpers for test_tunnel.py: TCP services, streams with their SHA-256,
a threaded MQTT peer on harness.RawClient, a small CA made with openssl, mqtunnel's control
messages and the reliable mode's frames (src/tunnel/frame.h), all with the standard library.

Everything listens on 127.0.0.1 on free ports; every thread is a daemon and every wait has a
deadline.
"""
import hashlib
import hmac
import json
import os
import queue
import random
import re
import socket
import string
import struct
import subprocess
import threading
import time

import harness as h

HOST = h.HOST


# ---------------------------------------------------------------------------
# data


def data_for(seed, n):
    """n pseudo-random bytes, the same for the same seed (fast: random.randbytes)."""
    return random.Random(seed).randbytes(n)


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------------------
# TCP services


class Server:
    """A threaded TCP server on 127.0.0.1:<free port>. mode:
      echo    every byte read is written back; EOF from the client half-closes the answer
      sink    reads everything, keeps the SHA-256 and the count per connection
      source  writes `source_bytes` bytes of data_for(seed) then closes; counts what it wrote
      stall   accepts and never reads (the client's writes pile up)
    accepted counts connections; conns holds per-connection records (dicts)."""

    def __init__(self, mode, source_bytes=0, seed=1):
        self.mode = mode
        self.source_bytes = source_bytes
        self.seed = seed
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns = []
        self.lock = threading.Lock()
        self._stop = False
        self._socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            rec = {"bytes_in": 0, "bytes_out": 0, "sha_in": hashlib.sha256(), "done": False, "error": ""}
            with self.lock:
                self.accepted += 1
                self.conns.append(rec)
                self._socks.append(c)
            threading.Thread(target=self._serve, args=(c, rec), daemon=True).start()

    def _serve(self, c, rec):
        try:
            if self.mode == "echo":
                while True:
                    b = c.recv(262144)
                    if not b:
                        c.shutdown(socket.SHUT_WR)
                        break
                    rec["bytes_in"] += len(b)
                    c.sendall(b)
                    rec["bytes_out"] += len(b)
            elif self.mode == "sink":
                while True:
                    b = c.recv(262144)
                    if not b:
                        break
                    rec["bytes_in"] += len(b)
                    rec["sha_in"].update(b)
                c.shutdown(socket.SHUT_WR)
            elif self.mode == "source":
                data = data_for(self.seed, min(self.source_bytes, 16 << 20))
                sent = 0
                while sent < self.source_bytes and not self._stop:
                    off = sent % len(data)
                    n = min(65536, self.source_bytes - sent, len(data) - off)
                    c.sendall(data[off:off + n])
                    sent += n
                    rec["bytes_out"] = sent
                c.shutdown(socket.SHUT_WR)
            elif self.mode == "stall":
                while not self._stop:
                    time.sleep(0.1)
        except OSError as e:
            rec["error"] = f"{type(e).__name__}: {e}"
        finally:
            rec["done"] = True
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self._socks:
                try:
                    c.close()
                except OSError:
                    pass


def transfer(port, up, timeout=120.0, expect_down=None, chunk=262144, on_progress=None, half_close=True):
    """Connect to 127.0.0.1:port, send `up` (then half-close) while reading until EOF.
    Returns a dict: down_sha, down_len, error ('' when EOF came cleanly), took.
    on_progress(sent_bytes) is called from the sender as it goes.
    half_close=False: no half-close after sending; the reading stops once expect_down bytes (default
    len(up)) came, error is then '' (the data phase only), and the socket is simply closed: for
    cases about the bytes, not about how a stream ends."""
    if expect_down is None:
        expect_down = len(up)
    out = {"down_len": 0, "error": "", "sent": 0}
    t0 = time.monotonic()
    deadline = t0 + timeout
    s = socket.create_connection((HOST, port), timeout=10)
    s.settimeout(1.0)
    hs = hashlib.sha256()

    def sender():
        try:
            off = 0
            while off < len(up):
                if time.monotonic() > deadline:
                    out["send_error"] = "timeout"
                    return
                try:
                    n = s.send(up[off:off + chunk])
                except socket.timeout:
                    continue
                off += n
                out["sent"] = off
                if on_progress:
                    on_progress(off)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError as e:
            out["send_error"] = f"{type(e).__name__}: {e}"

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    try:
        while True:
            if time.monotonic() > deadline:
                out["error"] = f"timeout after {timeout} s ({out['down_len']} bytes down, {out['sent']} up)"
                break
            try:
                b = s.recv(262144)
            except socket.timeout:
                continue
            except OSError as e:
                out["error"] = f"{type(e).__name__}: {e}"
                break
            if not b:
                if not half_close:
                    out["error"] = f"EOF after {out['down_len']} bytes"
                break
            hs.update(b)
            out["down_len"] += len(b)
            if not half_close and out["down_len"] >= expect_down:
                break
    finally:
        th.join(max(0.0, min(5.0, deadline - time.monotonic())))
        s.close()
    if out.get("send_error") and (not out["error"] or out["error"].startswith("EOF after")):
        # a reset can reach the sender's send() first; recv() then sees a plain end of stream
        out["error"] = f"send: {out['send_error']}" + (f" ({out['error']})" if out["error"] else "")
    out["down_sha"] = hs.hexdigest()
    out["took"] = time.monotonic() - t0
    return out


# ---------------------------------------------------------------------------
# a CA and certificates (openssl)


def openssl(*args, cwd=None):
    r = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {r.stderr.strip()[-400:]}")
    return r


def make_ca(d, name):
    """A self-signed CA in d: NAME-ca.crt, NAME-ca.key."""
    os.makedirs(d, exist_ok=True)
    key, crt = os.path.join(d, f"{name}-ca.key"), os.path.join(d, f"{name}-ca.crt")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
            "-out", crt, "-days", "2", "-subj", f"/CN=mgate tunnel test {name} CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def make_server_cert(d, name, ca_crt, ca_key, client=False, san="DNS:localhost,IP:127.0.0.1"):
    """A server certificate for localhost and 127.0.0.1 signed by the CA: NAME.crt, NAME.key
    (client=True: a client certificate with CN=NAME)."""
    key, csr, crt = (os.path.join(d, f"{name}.{e}") for e in ("key", "csr", "crt"))
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        if client:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
        else:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                    f"extendedKeyUsage=serverAuth\nsubjectAltName={san}\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
            "-subj", f"/CN={name}" if client else f"/CN={san.split(',')[0].split(':', 1)[1]}")
    openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
            "-days", "2", "-extfile", ext)
    return crt, key


# ---------------------------------------------------------------------------
# MQTT peer: a RawClient with a reader thread (QoS 1 deliveries acknowledged)


class Peer:
    """An MQTT 3.1.1 client for the tests' own ends (the mqtunnel peer, forged control messages).
    Every PUBLISH received goes to self.q as harness.Publish (acknowledged); sends are locked."""

    def __init__(self, port, client_id, tls=None):
        self.c = h.RawClient(port, timeout=5.0, tls=tls)
        rc = self.c.connect(4, client_id)
        if rc != 0:
            raise AssertionError(f"{client_id}: CONNACK {rc}")
        self.lock = threading.Lock()
        self.q = queue.Queue()
        self.acks = queue.Queue()
        self.pid = 0
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _next_pid(self):
        self.pid = self.pid % 65535 + 1
        return self.pid

    def _run(self):
        while not self.closed:
            try:
                p = self.c._read_one(time.monotonic() + 0.3)
            except TimeoutError:
                continue
            except (h.Closed, OSError):
                self.closed = True
                return
            if p.type == h.PUBLISH:
                m = h.parse_publish(4, p)
                if m.qos == 1:
                    self.send(h.ack_packet(4, h.PUBACK, m.pid))
                self.q.put(m)
            else:
                self.acks.put(p)

    def send(self, data):
        with self.lock:
            self.c.send(data)

    def subscribe(self, topics, qos=1, timeout=5.0):
        pid = self._next_pid()
        self.send(h.subscribe_packet(4, pid, [(t, qos) for t in topics]))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                p = self.acks.get(timeout=0.2)
            except queue.Empty:
                continue
            if p.type == h.SUBACK and h.ack_id(p) == pid:
                return list(p.body[2:])
        raise AssertionError(f"no SUBACK for {topics}")

    def publish(self, topic, payload, qos=0):
        pid = self._next_pid() if qos else 0
        self.send(h.publish_packet(4, topic, payload, qos, pid))

    def get(self, timeout, pred=None):
        """The next PUBLISH (matching pred, others dropped) within timeout, or None."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                m = self.q.get(timeout=left)
            except queue.Empty:
                return None
            if pred is None or pred(m):
                return m

    def close(self):
        self.closed = True
        try:
            self.send(h.disconnect_packet(4))
        except OSError:
            pass
        self.thread.join(2)
        self.c.close()


# ---------------------------------------------------------------------------
# mqtunnel's control messages (../shared/reference/mqtunnel-README.md)

LETTERS = string.ascii_letters


def letters(n):
    return "".join(random.choice(LETTERS) for _ in range(n))


def mqtunnel_control(typ, tunnel_id, local_port, local_topic, remote_port, remote_topic):
    """The JSON as Go's encoding/json writes mqtunnel's struct: field order, no spaces."""
    return (f'{{"type":"{typ}","TunnelID":"{tunnel_id}","local_port":{local_port},'
            f'"local_topic":"{local_topic}","remote_port":{remote_port},"remote_topic":"{remote_topic}"}}')


def mqtunnel_connect_regex(typ, root, local_port, remote_port):
    """The exact shape of a control message from a local side for these ports."""
    r = re.escape(root)
    return re.compile(r'\{"type":"' + typ + r'","TunnelID":"([A-Za-z]{16})","local_port":' + str(local_port)
                      + r',"local_topic":"(' + r + "/" + str(local_port) + r'-[A-Za-z]{8})","remote_port":'
                      + str(remote_port) + r',"remote_topic":"(' + r + "/" + str(remote_port)
                      + r'-[A-Za-z]{8})"\}')


MQTUNNEL_ANY = re.compile(r'\{"type":"(connect|connect_ack|closed)","TunnelID":"([A-Za-z]{16})","local_port":(\d+),'
                          r'"local_topic":"([^"]+)","remote_port":(\d+),"remote_topic":"([^"]+)"\}')


# ---------------------------------------------------------------------------
# the reliable mode's frames and open message (src/tunnel/frame.h)

TF_DATA, TF_ACK, TF_FIN, TF_RST, TF_ACCEPT = 1, 2, 3, 4, 5
FRAME_HEAD = 22


def frame(ftype, stream, offset=0, window=0, payload=b"", flags=0):
    return struct.pack(">BBQQI", (1 << 4) | ftype, flags, stream, offset, window) + payload


def accept_topic(payload, stream, key=None):
    """The data topic an ACCEPT's payload names; with key (bytes), only when its MAC (HMAC-SHA256
    of b"accept", the stream id and the topic, frame.h) is right, else None."""
    if key is None:
        return payload.split(b".", 1)[1].decode() if len(payload) > 65 and payload[64:65] == b"." else payload.decode()
    if len(payload) <= 65 or payload[64:65] != b".":
        return None
    topic = payload[65:]
    want = hmac.new(key, b"accept" + stream.to_bytes(8, "big") + topic, hashlib.sha256).hexdigest().encode()
    return topic.decode() if hmac.compare_digest(want, payload[:64]) else None


def unframe(b):
    """(type, flags, stream, offset, window, payload) or None when it is no version-1 frame."""
    if len(b) < FRAME_HEAD or b[0] >> 4 != 1:
        return None
    vt, flags, stream, offset, window = struct.unpack_from(">BBQQI", b, 0)
    return vt & 0x0F, flags, stream, offset, window, bytes(b[FRAME_HEAD:])


def open_message(stream, port, reply, ts=None, key=None):
    """The control message that asks for a stream (frame.h), with its MAC when key (bytes) is given."""
    j = (f'{{"type":"open","v":1,"stream":"{stream:016x}","port":{port},"reply":"{reply}",'
         f'"ts":{int(time.time()) if ts is None else ts}}}')
    if key is None:
        return j.encode()
    mac = hmac.new(key, j.encode(), hashlib.sha256).hexdigest()
    return f"{mac}.{j}".encode()


# ---------------------------------------------------------------------------
# mgate tunnel processes


class Tunnel:
    """One `mgate tunnel` process: remote side (no ports) or local side (-l/-r), its config in a
    file, its stderr in a log file."""

    def __init__(self, tmpdir, name, config, local=None, remote=None, wait=True, binary=None):
        self.dir = os.path.join(tmpdir, f"tunnel-{name}")
        os.makedirs(self.dir, exist_ok=True)
        self.name = name
        self.config = config
        self.conf_path = os.path.join(self.dir, "config.json")
        with open(self.conf_path, "w") as f:
            json.dump(config, f)
        self.local, self.remote = local, remote
        argv = [binary or h.MGATE_BIN, "tunnel", "-c", self.conf_path]
        if local is not None:
            argv += ["-l", str(local), "-r", str(remote)]
        self.argv = argv
        self.log = h.LogFile(os.path.join(self.dir, "tunnel.log"))
        with open(self.log.path, "ab") as logf:
            self.proc = h.spawn(argv, env=h.clean_env(), cwd=self.dir, stdout=logf, stderr=logf)
        self.pid = self.proc.pid
        if wait and local is not None:
            h.wait_port(local, 10.0, self.proc)

    @property
    def mqtt_id(self):
        """The client id the broker sees: clientId, and on a local side "-LOCALPORT" after it
        (docs/TUNNEL.md: one config file may serve both sides)."""
        cid = self.config.get("clientId")
        return f"{cid}-{self.local}" if cid and self.local is not None else cid

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        return h.rss_kib(self.pid)

    def cpu_ticks(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def json_lines(self, since=0):
        out = []
        for line in self.log.text(since).splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if isinstance(j, dict):
                out.append(j)
        return out

    def stats(self, since=0):
        """The last "tunnel stats" line (a dict), or None."""
        found = None
        for j in self.json_lines(since):
            if any(isinstance(v, str) and v == "tunnel stats" for v in j.values()):
                found = j
        return found

    def stop(self, sig=None, timeout=10.0):
        import signal as _s
        return h.stop(self.proc, sig or _s.SIGTERM, timeout)


def stat_value(stats, *words):
    """The first numeric field of a stats line whose key contains every word (case-insensitive),
    or None: the contract names the counters (streams, bytes each way, resends, resets, refused
    opens) but not their exact keys."""
    if not stats:
        return None

    def walk(d, prefix=""):
        for k, v in d.items():
            key = f"{prefix}{k}".lower()
            if isinstance(v, dict):
                yield from walk(v, key + ".")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                yield key, v

    for key, v in walk(stats):
        if all(w in key for w in words):
            return v
    return None
