#!/usr/bin/python3
"""`mgate tunnel` (issue 19): TCP carried over an MQTT broker, reliable by default, and
compatible with mqtunnel's wire format on demand.

Everything runs on 127.0.0.1: mosquitto (with persistence in a temp dir), TCP services written
here (echo, sink), the remote side (`mgate tunnel -c remote.json`) and local sides
(`mgate tunnel -c local.json -l LPORT -r RPORT`), each with its own client id and log file.

Cases: a big transfer both ways through an echo server (identical SHA-256) through a plain and a
TLS broker; a broker certificate from another CA refused, accepted with "insecure": true; the
broker stopped (SIGTERM, then SIGKILL) and restarted on the same port in the middle of a
transfer (byte-identical, reconnection and resends in the logs and stats); 50 parallel streams;
a stream whose TCP reader stops (RSS bounded, other streams move); the remote side killed and
restarted (the stream is reset, never a clean EOF after truncated data); a port outside `allow`;
forged open messages without the key (and a correctly signed one as the control); bad configs
(exit 2 naming the field); mqtunnel compatibility with a peer written here from the facts file
(mgate as local, then as remote), the control JSON checked byte for byte.

Sizes (env): MGATE_TUNNEL_MIB (64: the big transfer), MGATE_TUNNEL_RESTART_MIB (24),
MGATE_TUNNEL_STREAMS (50), MGATE_TUNNEL_STREAM_KIB (512), MGATE_TUNNEL_STALL_MIB (256).
About 70 s (the cases that wait for a local side's give-up set "giveUp": 6, not the default 60 s).
MGATE_TUNNEL_ONLY=word,word runs only the cases whose title holds one of the words (the cases on
the plain broker's rig need "plain" too).
"""
import json
import os
import re
import signal
import socket
import struct
import tempfile
import threading
import time

import harness as h
import tunnel_tools as tt

MIB = 1 << 20
BIG = int(os.environ.get("MGATE_TUNNEL_MIB", "64")) * MIB
RESTART = int(os.environ.get("MGATE_TUNNEL_RESTART_MIB", "24")) * MIB
STREAMS = int(os.environ.get("MGATE_TUNNEL_STREAMS", "50"))
STREAM_BYTES = int(os.environ.get("MGATE_TUNNEL_STREAM_KIB", "512")) * 1024
STALL = int(os.environ.get("MGATE_TUNNEL_STALL_MIB", "256")) * MIB
KEY = "7b2f0c9e61d84a35b0e4c1f2a9d3e6b85c7a1f0e2d4b6a8c9e0f1a2b3c4d5e6f"  # 32 bytes, hex
KEY_BYTES = bytes.fromhex(KEY)
BIG_TIMEOUT = max(60.0, BIG / MIB * 1.5)


class PersistentBroker:
    """mosquitto with persistence in a fixed directory, restartable on the same port."""

    def __init__(self, tmp, extra=""):
        self.tmp = tmp
        self.pdir = tempfile.mkdtemp(prefix="persist-", dir=tmp)
        os.chmod(self.pdir, 0o777)  # mosquitto drops to user mosquitto
        self.extra = extra
        self.conf = (f"persistence true\npersistence_location {self.pdir}/\nautosave_interval 1\n" + extra)
        self.b = h.Broker(tmp, self.conf)
        self.port = self.b.port
        self.logs = [self.b.log]

    @property
    def log(self):
        return self.b.log

    def restart(self, sig, down_s=1.0):
        """Stop it with sig, wait down_s, start it again on the same port."""
        h.stop(self.b.proc, sig, 5.0)
        time.sleep(down_s)  # the broker is away for a while, as in an outage
        self.b = h.Broker(self.tmp, self.conf, port=self.port)
        self.logs.append(self.b.log)

    def all_text(self):
        return "".join(lg.text() for lg in self.logs)


def config(broker_port, control, cid, **extra):
    c = {"host": "127.0.0.1", "port": broker_port, "control": control, "clientId": cid}
    c.update(extra)
    return c


class Rig:
    """A remote side with `allow`, plus local sides made on demand (one per remote port)."""

    def __init__(self, t, tmp, broker_port, broker_log, name, allow, remote_extra=None, local_extra=None):
        self.t, self.tmp, self.broker_port, self.broker_log, self.name = t, tmp, broker_port, broker_log, name
        self.root = f"mgt-test/{name}-{tt.letters(6)}"
        self.control = f"{self.root}/control"
        self.remote_extra = dict(remote_extra or {})
        self.local_extra = dict(local_extra or {})
        self.allow = allow
        self.locals = []
        self.remote = None
        self.start_remote()

    def start_remote(self, log=None):
        mark = (log or self.broker_log()).mark()
        cfg = config(self.broker_port, self.control, f"{self.name}-remote", allow=self.allow, **self.remote_extra)
        self.remote = tt.Tunnel(self.tmp, f"{self.name}-remote-{int(time.monotonic() * 1000) % 100000}", cfg)
        ok = (log or self.broker_log()).wait(r"Received SUBSCRIBE from " + re.escape(f"{self.name}-remote") + r"\b",
                                            10.0, mark)
        if not ok:
            raise RuntimeError(f"{self.name}: the remote side never subscribed; its log: "
                               f"{self.remote.log.text()[-800:]}")
        return self.remote

    def local(self, rport, tag=""):
        lport = h.free_port()
        n = len(self.locals)
        cfg = config(self.broker_port, self.control, f"{self.name}-local{n}{tag}", **self.local_extra)
        loc = tt.Tunnel(self.tmp, f"{self.name}-local{n}{tag}", cfg, local=lport, remote=rport)
        self.locals.append(loc)
        return loc

    def tunnels(self):
        return [self.remote] + self.locals


def stop_and_check(t, tunnels, what):
    """SIGTERM each: it exits 0, logs a final "tunnel stats" line, no sanitizer report."""
    out = {}
    for tn in tunnels:
        running = tn.alive()
        rc = tn.stop(signal.SIGTERM, 10.0)
        if running:
            t.eq(rc, 0, f"{what}: {tn.name} exits 0 on SIGTERM")
        st = tn.stats()
        t.check(st is not None, f"{what}: {tn.name} logged a \"tunnel stats\" line", tn.log.text()[-600:])
        t.eq(h.sanitizer_lines(tn.log.text()), [], f"{what}: {tn.name}: no sanitizer report")
        out[tn.name] = st
    return out


def show_resets(tunnels, since=None):
    """Print the tunnel's reset lines (for the report of a failed check)."""
    for tn in tunnels:
        lines = [ln for ln in tn.log.text((since or {}).get(tn.name, 0)).splitlines() if "reset" in ln]
        for ln in lines[-4:]:
            print(f"    {tn.name}: {ln}")


def big_transfer(t, loc, echo, size, what, timeout):
    up = tt.data_for(size ^ 0x5A5A, size)
    acc0 = echo.accepted
    r = tt.transfer(loc.local, up, timeout=timeout, half_close=False)
    mbs = 2 * size / MIB / r["took"] if r["took"] else 0
    print(f"    {what}: {size // MIB} MiB each way in {r['took']:.1f} s ({mbs:.1f} MB/s both ways together)")
    t.eq(r["error"], "", f"{what}: no error while the bytes flow")
    t.eq(r["down_len"], size, f"{what}: {size // MIB} MiB came back")
    t.check(r["down_sha"] == tt.sha(up), f"{what}: identical SHA-256 both ways")
    t.eq(echo.accepted - acc0, 1, f"{what}: one TCP connection reached the echo server")
    if r["error"]:
        show_resets([loc])
    return r


# ---------------------------------------------------------------------------
# cases


def case_plain(t, tmp, broker, echo, allow):
    rig = Rig(t, tmp, broker.port, lambda: broker.log, "plain", allow, {"key": KEY}, {"key": KEY})
    loc = rig.local(echo.port)
    big_transfer(t, loc, echo, BIG, "plain broker", BIG_TIMEOUT)
    text = broker.all_text()
    for tn in rig.tunnels():
        cid = tn.mqtt_id
        m = re.search(r"New client connected from \S+ as " + re.escape(cid) + r" \(p(\d), c(\d)", text)
        t.check(m and m.group(2) == "0", f"{cid}: a persistent session (clean session 0)", m.group(0) if m else "")
    subs = re.findall(r"^\d+: \t(\S+) \(QoS (\d)\)", text, re.M)
    data_topics = [s for s in subs if s[0].startswith(rig.root + "/mgt-")]
    t.check(len(data_topics) >= 2 and all(re.fullmatch(re.escape(rig.root) + r"/mgt-[A-Za-z]{16}", s[0])
                                          and s[1] == "1" for s in data_topics),
            "data topics are <root>/mgt-<16 letters>, subscribed at QoS 1", f"{subs}")
    pubs = re.findall(r"Received PUBLISH from " + re.escape(loc.mqtt_id)
                      + r" \(d\d, q(\d), r\d, m\d+, '" + re.escape(rig.root) + r"/mgt-", text)
    t.check(pubs and set(pubs) == {"1"}, "the local side publishes its frames at QoS 1", f"{set(pubs)}")
    return rig


def case_parallel(t, rig, echo):
    loc = rig.locals[0]
    acc0 = echo.accepted
    results = [None] * STREAMS
    datas = [tt.data_for(1000 + i, STREAM_BYTES + i * 37) for i in range(STREAMS)]

    def one(i):
        results[i] = tt.transfer(loc.local, datas[i], timeout=90, half_close=False)

    ths = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(STREAMS)]
    t0 = time.monotonic()
    for th in ths:
        th.start()
    for th in ths:
        th.join(100)
    took = time.monotonic() - t0
    good = [i for i in range(STREAMS) if results[i] and results[i]["error"] == ""
            and results[i]["down_sha"] == tt.sha(datas[i])]
    bad = [(i, results[i] and {k: results[i][k] for k in ("error", "down_len")}) for i in range(STREAMS)
           if i not in good]
    print(f"    {STREAMS} streams x ~{STREAM_BYTES // 1024} KiB each way in {took:.1f} s")
    t.eq(len(good), STREAMS, f"{STREAMS} parallel streams: each gets its own bytes back (SHA-256)", )
    if bad:
        print(f"    failed streams: {bad[:5]}")
        show_resets(rig.tunnels())
    t.eq(echo.accepted - acc0, STREAMS, f"{STREAMS} parallel streams: {STREAMS} connections at the echo server")


def case_stall(t, rig, echo):
    """A client that sends but never reads: through the echo server the stall reaches back both ways."""
    loc, rem = rig.locals[0], rig.remote
    rss0 = {tn.name: tn.rss_kib() for tn in (loc, rem)}
    s = socket.create_connection((h.HOST, loc.local), timeout=5)
    s.setblocking(False)
    chunk = tt.data_for(77, 1 << 20)
    offered = [0]
    stop = threading.Event()

    def offer():  # try to push STALL bytes; count what the tunnel's TCP side took
        deadline = time.monotonic() + 60
        while offered[0] < STALL and not stop.is_set() and time.monotonic() < deadline:
            try:
                offered[0] += s.send(chunk[: min(len(chunk), STALL - offered[0])])
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                return

    th = threading.Thread(target=offer, daemon=True)
    th.start()
    # wait until the writes stop moving (the windows are full), at most 30 s
    last, still_since = -1, time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and offered[0] < STALL:
        if offered[0] != last:
            last, still_since = offered[0], time.monotonic()
        elif time.monotonic() - still_since > 2.0:
            break
        time.sleep(0.1)
    rss1 = {tn.name: tn.rss_kib() for tn in (loc, rem)}
    print(f"    stalled stream: {offered[0] / MIB:.1f} MiB of {STALL // MIB} MiB taken; RSS KiB before {rss0}, "
          f"stalled {rss1}")
    t.check(offered[0] < STALL, "a reader that stops: the tunnel stops taking bytes (not all 256 MiB taken)",
            f"{offered[0]} bytes taken")
    # another stream keeps moving meanwhile
    other = tt.data_for(4242, 8 * MIB)
    r = tt.transfer(loc.local, other, timeout=60, half_close=False)
    t.check(r["error"] == "" and r["down_sha"] == tt.sha(other),
            "a reader that stops: another stream moves 8 MiB each way meanwhile", f"{r['error']} {r['down_len']}")
    rss2 = {tn.name: tn.rss_kib() for tn in (loc, rem)}
    for n in rss0:
        grow = max(rss1[n], rss2[n]) - rss0[n]
        t.check(grow < 64 * 1024, f"a reader that stops: {n} RSS grows < 64 MiB ({grow // 1024} MiB)",
                f"{rss0[n]} -> {rss1[n]} -> {rss2[n]} KiB")
    stop.set()
    th.join(5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # a reset from the client: the tunnel must free the stream
    small = tt.data_for(99, 256 * 1024)
    r = tt.transfer(loc.local, small, timeout=30, half_close=False)
    t.check(r["error"] == "" and r["down_sha"] == tt.sha(small), "after the stalled client reset, streams still work",
            r["error"])
    t.check(loc.alive() and rem.alive(), "both sides still running after the stall")


def case_close(t, rig, echo, source, sink):
    """How a stream ends: a FIN goes through after the last byte, both ways, and the other
    direction keeps flowing after a half-close."""
    # the client half-closes; the echo server answers everything, then closes
    up = tt.data_for(404, 2 * MIB)
    r = tt.transfer(rig.locals[0].local, up, timeout=60)
    t.check(r["error"] == "" and r["down_len"] == len(up) and r["down_sha"] == tt.sha(up),
            "the client half-closes after 2 MiB: all 2 MiB come back, then a clean EOF",
            f"error {r['error']!r}, {r['down_len']} bytes")
    # the server sends and closes first (the client never half-closes before EOF)
    loc = rig.local(source.port, tag="-source")
    want = tt.data_for(source.seed, source.source_bytes)
    r = tt.transfer(loc.local, b"", timeout=60, half_close=False, expect_down=source.source_bytes + 1)
    t.check(r["down_len"] == len(want) and r["down_sha"] == tt.sha(want)
            and r["error"] == f"EOF after {len(want)} bytes",
            f"the server sends {len(want) // MIB} MiB and closes: the client gets them all, then a clean EOF",
            f"error {r['error']!r}, {r['down_len']} bytes")
    # upload only, then half-close: the sink gets every byte, its EOF answer comes back
    loc = rig.local(sink.port, tag="-sink")
    up = tt.data_for(505, 4 * MIB)
    n0 = len(sink.conns)
    r = tt.transfer(loc.local, up, timeout=60)
    done = h.wait_until(lambda: len(sink.conns) > n0 and sink.conns[n0]["done"], 10.0)
    rec = sink.conns[n0] if len(sink.conns) > n0 else None
    t.check(done and rec["bytes_in"] == len(up) and rec["sha_in"].hexdigest() == tt.sha(up),
            "the client sends 4 MiB and half-closes: the sink gets every byte, then EOF",
            f"{rec and rec['bytes_in']} bytes at the sink, done {done}")
    t.check(r["error"] == "" and r["down_len"] == 0, "... and the client then sees the sink's close as a clean EOF",
            f"error {r['error']!r}")


def case_allow(t, rig):
    denied = tt.Server("echo")
    try:
        loc = rig.local(denied.port, tag="-denied")
        mark = rig.remote.log.mark()
        got, err, s = b"", "", None
        try:
            # the refusal's reset can come before connect() returns on a busy machine: a reset too
            s = socket.create_connection((h.HOST, loc.local), timeout=5)
            s.settimeout(15)
            s.sendall(b"hello through a port that is not allowed\n")
            while True:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        except OSError as e:
            err = f"{type(e).__name__}: {e}"
        if s:
            s.close()
        t.check(not err.startswith("timeout") and "timed out" not in err,
                "a port not in allow: the local TCP client is closed or reset", err)
        t.eq(got, b"", "a port not in allow: no byte comes back")
        t.eq(denied.accepted, 0, "a port not in allow: nothing connects to it on the remote side")
        line = rig.remote.log.wait(r"(?i)(allow|refus|not permitted|denied|forbidden).*\b%d\b|\b%d\b.*(allow|refus|"
                                   r"not permitted|denied|forbidden)" % (denied.port, denied.port), 5.0, mark)
        t.check(line, "a port not in allow: the remote side logs the refusal with the port",
                rig.remote.log.text(mark)[-600:])
    finally:
        denied.close()


def case_forged(t, rig, echo, broker):
    """Open messages published on the control topic by a client without the key open nothing;
    one signed with the key (the control) opens a stream."""
    peer = tt.Peer(broker.port, "forger-" + tt.letters(6))
    try:
        reply = f"{rig.root}/mgt-{tt.letters(16).lower()}"  # the shape of a data topic
        peer.subscribe([reply], 1)
        acc0 = echo.accepted
        mark = rig.remote.log.mark()
        now = int(time.time())
        forged = [
            ("no MAC", tt.open_message(0x1111222233334444, echo.port, reply, now)),
            ("a wrong MAC", b"0" * 64 + b"." + tt.open_message(0x1111222233334445, echo.port, reply, now)),
            ("a MAC from another key", tt.open_message(0x1111222233334446, echo.port, reply, now, key=b"k" * 32)),
            ("a stale ts, correctly signed", tt.open_message(0x1111222233334447, echo.port, reply, now - 3600,
                                                             key=KEY_BYTES)),
        ]
        for _, msg in forged:
            peer.publish(rig.control, msg, qos=1)
        m = peer.get(3.0)
        t.check(m is None, "forged opens: no ACCEPT (nor anything) on the reply topic", repr(m))
        t.eq(echo.accepted - acc0, 0, "forged opens: no TCP connection on the remote side")
        text = rig.remote.log.text(mark)
        t.check(re.search(r"(?i)mac|auth|stale|refus|malformed", text),
                "forged opens: the remote side logs why it refused them", text[-600:])
        # the control: the same message signed with the key opens a stream
        sid = 0x0DDBA11C0FFEE001
        peer.publish(rig.control, tt.open_message(sid, echo.port, reply, int(time.time()), key=KEY_BYTES), qos=1)
        m = peer.get(5.0)
        f = tt.unframe(m.payload) if m else None
        t.check(f is not None and f[0] == tt.TF_ACCEPT and f[2] == sid,
                "control: a correctly signed open gets an ACCEPT for its stream", repr(m))
        topic = tt.accept_topic(f[5], sid, KEY_BYTES) if f and f[0] == tt.TF_ACCEPT else None
        t.check(topic is not None and topic.startswith(rig.root + "/mgt-"),
                "control: the ACCEPT carries the remote's data topic under the key's MAC", repr(f))
        t.check(h.wait_until(lambda: echo.accepted - acc0 == 1, 5.0),
                "control: a correctly signed open reaches the echo server")
        if topic:
            peer.publish(topic, tt.frame(tt.TF_RST, sid, payload=b"test done"), qos=1)
    finally:
        peer.close()


def case_attack_round(t, rig, echo, broker):
    """What the attack round found: a reply topic with a control character (mosquitto drops the
    publisher: the remote reconnected and published there again, forever), a signed open from before
    the remote started (a replay its memory cannot catch), and an ACCEPT forged by a client that
    reads the control topic (the local side took it and sent the client's bytes to the forger)."""
    peer = tt.Peer(broker.port, "attacker-" + tt.letters(6))
    try:
        mark, bmark = rig.remote.log.mark(), broker.log.mark()
        now = int(time.time())
        bad = f"{rig.root}/mgt-{tt.letters(15).lower()}\\u0001"  # JSON's escape: the decoded topic holds U+0001
        peer.publish(rig.control, tt.open_message(0x0A77AC0000000001, echo.port, bad, now, key=KEY_BYTES), qos=1)
        time.sleep(2.0)
        t.eq(broker.log.count(r"Client " + re.escape(rig.remote.mqtt_id) + r" disconnected", bmark), 0,
             "a reply topic with a control character: the remote side is never dropped by the broker")
        t.check(rig.remote.log.search(r"tunnel open refused", mark),
                "... and logs the open as refused", rig.remote.log.text(mark)[-400:])
        reply = f"{rig.root}/mgt-{tt.letters(16).lower()}"
        peer.subscribe([reply], 1)
        acc0 = echo.accepted
        old_ts = now - 120  # inside the 300 s skew, but before this remote side started
        peer.publish(rig.control, tt.open_message(0x0A77AC0000000002, echo.port, reply, old_ts, key=KEY_BYTES), qos=1)
        m = peer.get(3.0, lambda p: tt.unframe(p.payload) and tt.unframe(p.payload)[0] == tt.TF_ACCEPT)
        t.check(m is None and echo.accepted == acc0,
                "a signed open from before the remote side started (a replay it cannot remember) opens nothing")
        t.check(rig.remote.log.search(r"before this side started", mark), "... and is logged as such")
    finally:
        peer.close()
    # a local side whose remote is away: a client that reads the control topic answers its open
    ctl = f"{rig.root}-away/control"
    cfg = config(broker.port, ctl, "away-local", key=KEY)
    spy = tt.Peer(broker.port, "spy-" + tt.letters(6))
    lport = h.free_port()
    loc = tt.Tunnel(rig.tmp, "away-local", cfg, local=lport, remote=echo.port)
    try:
        spy.subscribe([ctl, f"{rig.root}-away/#"], 1)
        cl = socket.create_connection((h.HOST, lport), timeout=5)
        cl.sendall(b"GET /secret")
        m = spy.get(5.0, lambda p: p.topic == ctl)
        o = json.loads(m.payload.split(b".", 1)[1]) if m else {}
        evil = f"{rig.root}-away/mgt-{tt.letters(16).lower()}"
        spy.subscribe([evil], 1)
        if o:
            spy.publish(o["reply"], tt.frame(tt.TF_ACCEPT, int(o["stream"], 16), payload=evil.encode()), qos=1)
        got = spy.get(3.0, lambda p: p.topic == evil)
        t.check(o and got is None, "a forged ACCEPT without the key's MAC: the local side sends the forger nothing",
                repr(got))
        t.check(loc.log.search(r"ACCEPT with a wrong MAC"), "... and logs the ACCEPT it dropped",
                loc.log.text()[-400:])
        cl.close()
    finally:
        spy.close()
        loc.stop(signal.SIGTERM, 10.0)


def case_bad_config(t, tmp, broker_port):
    base = {"host": "127.0.0.1", "port": broker_port, "control": "mgt-test/bad/control"}
    cases = [
        ("port", {"port": "1883"}),
        ("hostt", {"hostt": "127.0.0.1"}),
        ("compat", {"compat": "mqtunel"}),
        ("allow", {"allow": "22"}),
        ("allow", {"allow": [22, "x"]}),
        ("key", {"key": "00ff00ff"}),
        ("key", {"key": "zz" * 32}),
        ("mqttVersion", {"mqttVersion": 6}),
        ("window", {"window": "big"}),
        ("insecure", {"insecure": "yes"}),
        ("tls", {"tls": 1}),
        ("keepalive", {"keepalive": "60"}),
        ("giveUp", {"giveUp": 1}),
        ("control", {"control": None}),
    ]
    d = os.path.join(tmp, "badconf")
    os.makedirs(d, exist_ok=True)
    for i, (field, change) in enumerate(cases):
        cfg = dict(base)
        for k, v in change.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        p = os.path.join(d, f"c{i}.json")
        with open(p, "w") as f:
            import json
            json.dump(cfg, f)
        try:
            r = h.subprocess.run([h.MGATE_BIN, "tunnel", "-c", p], capture_output=True, text=True, timeout=10,
                                 env=h.clean_env(), cwd=d)
            rc, err = r.returncode, r.stderr
        except h.subprocess.TimeoutExpired:
            rc, err = None, "still running after 10 s"
        t.check(rc == 2 and field in err, f"bad config {change}: exit 2 naming {field}", f"rc {rc}: {err.strip()[-300:]}")
    # not JSON at all
    p = os.path.join(d, "garbage.json")
    with open(p, "w") as f:
        f.write("{host: nope")
    r = h.subprocess.run([h.MGATE_BIN, "tunnel", "-c", p], capture_output=True, text=True, timeout=10,
                         env=h.clean_env(), cwd=d)
    t.eq(r.returncode, 2, "a config file that is not JSON: exit 2")


def case_restart(t, tmp, sig, size, extra=None):
    extra = extra or {}
    what = f"broker {signal.Signals(sig).name} and restarted" + (f" ({extra})" if extra else "")
    broker = PersistentBroker(tmp)
    echo = tt.Server("echo")
    try:
        conf = {"key": KEY, **extra}
        rig = Rig(t, tmp, broker.port, lambda: broker.log, f"rs{sig}{len(extra)}", [echo.port], conf, conf)
        loc = rig.local(echo.port)
        up = tt.data_for(sig * 7919, size)
        res = {}
        fired = threading.Event()
        marks = {}

        def progress(sent):
            if sent >= size // 3 and not fired.is_set():
                fired.set()

        th = threading.Thread(target=lambda: res.update(tt.transfer(loc.local, up, timeout=120, on_progress=progress,
                                                                     half_close=False)), daemon=True)
        th.start()
        if not fired.wait(60):
            t.check(False, f"{what}: the transfer got a third of the way", f"{res}")
            return
        for tn in rig.tunnels():
            marks[tn.name] = tn.log.mark()
        broker.restart(sig, 1.5)
        th.join(130)
        t.eq(res.get("error"), "", f"{what}: no error while the bytes flow")
        t.eq(res.get("down_len"), size, f"{what}: all {size // MIB} MiB came back")
        t.check(res.get("down_sha") == tt.sha(up), f"{what}: byte-identical (SHA-256)")
        if res.get("error"):
            show_resets(rig.tunnels(), marks)
        for tn in rig.tunnels():
            cid = tn.mqtt_id
            t.check(broker.log.search(r"New client connected from \S+ as " + re.escape(cid) + r" \(p\d, c0"),
                    f"{what}: {cid} reconnected to the new broker with its persistent session")
            after = tn.log.text(marks[tn.name])
            t.check(re.search(r"(?i)reconnect|connection (lost|closed)|disconnected|broker.*(down|lost|gone)", after),
                    f"{what}: {tn.name} logs the lost connection / reconnection", after[-500:])
        # the client closed: the stream ends on both sides with both FINs acknowledged, not reset
        for tn in rig.tunnels():
            m = tn.log.wait(r'"msg":"tunnel stream ended".*"reason":"(\w+)"', 15.0, marks[tn.name])
            t.check(m and m.group(1) == "done", f"{what}: {tn.name}: the stream ends done (not reset) after the "
                    "client's close", m.group(0) if m else "no \"tunnel stream ended\" line in 15 s")
        stats = stop_and_check(t, rig.tunnels(), what)
        resends = [tt.stat_value(st, "resen") for st in stats.values()]
        print(f"    stats: {stats}")
        t.check(any(v and v > 0 for v in resends), f"{what}: the stats count resends (> 0 on a side)", f"{resends}")
        resets = [tt.stat_value(st, "reset") for st in stats.values()]
        t.eq(resets, [0, 0], f"{what}: the stats count no reset (the stream survived the restart)")
    finally:
        echo.close()
        broker.b.stop()


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            break
        out += b
    return out


def case_remote_dies(t, tmp, broker, echo):
    """The remote side is killed in the middle of a stream and comes back with the same client id:
    the stream cannot be resumed, so the local TCP client sees a reset, never a clean EOF.
    The client's own writes are over before the reset can come (else its send() could take the
    ECONNRESET and leave recv() a plain 0)."""
    rig = Rig(t, tmp, broker.port, lambda: broker.log, "rdie", [echo.port], {"key": KEY},
              {"key": KEY, "giveUp": 6})  # the give-up time, 60 s by default: the test waits for it
    loc = rig.local(echo.port)
    s = socket.create_connection((h.HOST, loc.local), timeout=5)
    s.settimeout(20)
    first = tt.data_for(31337, MIB)
    s.sendall(first)
    t.check(recv_exact(s, MIB) == first, "remote killed: setup: 1 MiB echoed before")
    rig.remote.stop(signal.SIGKILL)
    time.sleep(0.5)  # the remote is away for a moment
    s.sendall(tt.data_for(31338, 2 * MIB))  # never acknowledged now; the buffers on the way take it at once
    rig.start_remote()
    s.settimeout(90)
    t0 = time.monotonic()
    got, err = 0, ""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                err = f"clean EOF after {got} more bytes"
                break
            got += len(b)
    except OSError as e:
        err = f"{type(e).__name__}: {e}"
    s.close()
    took = time.monotonic() - t0
    print(f"    remote killed mid-stream: the client got {got} more bytes, then {err!r} after {took:.1f} s")
    if not t.check(re.search(r"ConnectionReset", err), "remote killed: the local TCP client sees a reset, not a "
                   "clean EOF after truncated data", f"{err!r}"):
        for ln in loc.log.text().splitlines()[-6:]:
            print(f"    {loc.name}: {ln}")
    small = tt.data_for(5, 128 * 1024)
    r = tt.transfer(loc.local, small, timeout=30, half_close=False)
    t.check(r["error"] == "" and r["down_sha"] == tt.sha(small), "remote restarted: a new stream works", r["error"])
    stats = stop_and_check(t, rig.tunnels(), "remote killed")
    v = tt.stat_value(stats.get(loc.name), "reset")
    t.check(v is not None and v >= 1, "remote killed: the local side's stats count the reset", f"{stats.get(loc.name)}")

def case_tls(t, tmp, echo):
    d = os.path.join(tmp, "certs")
    os.chmod(tmp, 0o711)
    ca, ca_key = tt.make_ca(d, "good")
    crt, key = tt.make_server_cert(d, "server", ca, ca_key)
    rogue_ca, rogue_key = tt.make_ca(d, "rogue")
    rcrt, rkey = tt.make_server_cert(d, "rogue-server", rogue_ca, rogue_key)
    files = os.path.join(tmp, "mosquitto-tls")
    ca_m, crt_m, key_m, rcrt_m, rkey_m = (h.readable_copy(p, files) for p in (ca, crt, key, rcrt, rkey))
    ccrt, ckey = tt.make_server_cert(d, "tunnel-client", ca, ca_key, client=True)
    wcrt, wkey = tt.make_server_cert(d, "wrong-name", ca, ca_key, san="DNS:wrong.example")
    wcrt_m, wkey_m = (h.readable_copy(p, files) for p in (wcrt, wkey))
    tls_port, rogue_port, mtls_port, wrong_port = h.free_ports(4)
    conf = (f"listener {tls_port} {h.HOST}\ncafile {ca_m}\ncertfile {crt_m}\nkeyfile {key_m}\n"
            f"listener {rogue_port} {h.HOST}\ncafile {ca_m}\ncertfile {rcrt_m}\nkeyfile {rkey_m}\n"
            f"listener {mtls_port} {h.HOST}\ncafile {ca_m}\ncertfile {crt_m}\nkeyfile {key_m}\n"
            "require_certificate true\n"
            f"listener {wrong_port} {h.HOST}\ncafile {ca_m}\ncertfile {wcrt_m}\nkeyfile {wkey_m}\n")
    broker = h.Broker(tmp, conf)
    for p in (tls_port, rogue_port, mtls_port, wrong_port):
        h.wait_port(p, 5.0, broker.proc)
    r = h.s_client(tls_port, "-CAfile", ca)
    t.check("Verify return code: 0" in r.out, "setup: the TLS listener verifies with the test CA")
    # a big transfer through the TLS broker, caCert given (tls on, verified)
    rig = Rig(t, tmp, tls_port, lambda: broker.log, "tls", [echo.port], {"key": KEY, "caCert": ca},
              {"key": KEY, "caCert": ca})
    loc = rig.local(echo.port)
    big_transfer(t, loc, echo, BIG, "TLS broker", BIG_TIMEOUT)
    stop_and_check(t, rig.tunnels(), "TLS broker")
    # a broker certificate not from caCert: refused by default
    mark = broker.log.mark()
    cid = "rogue-refused"
    bad = tt.Tunnel(tmp, "rogue-refused", config(rogue_port, "mgt-test/rogue/control", cid, caCert=ca,
                                                     allow=[echo.port]))
    time.sleep(4)  # the time to try (and retry) connecting; nothing may get through meanwhile
    t.check(not broker.saw_client(cid, mark),
            "a broker certificate from another CA: refused (the client never gets to CONNECT)")
    t.check(re.search(r"(?i)certif|verif|tls|handshake", bad.log.text()),
            "a broker certificate from another CA: the log says why", bad.log.text()[-500:])
    bad.stop()
    # a certificate from caCert but for another name (wrong.example, not 127.0.0.1): refused by default
    mark = broker.log.mark()
    bad = tt.Tunnel(tmp, "wrong-name", config(wrong_port, "mgt-test/wrong/control", "wrong-name", caCert=ca,
                                              allow=[echo.port]))
    time.sleep(3)  # the time to try connecting; nothing may get through meanwhile
    t.check(not broker.saw_client("wrong-name", mark),
            "a broker certificate from caCert for another host name: refused (the name is verified)")
    bad.stop()
    # ... accepted with "insecure": true
    rig2 = Rig(t, tmp, rogue_port, lambda: broker.log, "insecure", [echo.port],
               {"key": KEY, "caCert": ca, "insecure": True}, {"key": KEY, "caCert": ca, "insecure": True})
    loc2 = rig2.local(echo.port)
    small = tt.data_for(8883, 2 * MIB)
    r = tt.transfer(loc2.local, small, timeout=60, half_close=False)
    t.check(r["error"] == "" and r["down_sha"] == tt.sha(small),
            "\"insecure\": true: the same broker is accepted and 2 MiB go both ways", r["error"])
    stop_and_check(t, rig2.tunnels(), "insecure")
    # a broker that requires a client certificate: clientCert/privateKey are used
    mark = broker.log.mark()
    nocert = tt.Tunnel(tmp, "mtls-nocert", config(mtls_port, "mgt-test/mtls0/control", "mtls-nocert", caCert=ca,
                                                      allow=[echo.port]))
    time.sleep(3)  # the time to try connecting; nothing may get through meanwhile
    t.check(not broker.saw_client("mtls-nocert", mark),
            "a broker requiring a client certificate: refused without clientCert")
    nocert.stop()
    certs = {"key": KEY, "caCert": ca, "clientCert": ccrt, "privateKey": ckey}
    rig3 = Rig(t, tmp, mtls_port, lambda: broker.log, "mtls", [echo.port], certs, certs)
    loc3 = rig3.local(echo.port)
    r = tt.transfer(loc3.local, small, timeout=60, half_close=False)
    t.check(r["error"] == "" and r["down_sha"] == tt.sha(small),
            "clientCert/privateKey: accepted by the broker that requires them, 2 MiB go both ways", r["error"])
    stop_and_check(t, rig3.tunnels(), "mTLS")
    broker.stop()


def case_password(t, tmp, echo):
    """username and password are used (mqtunnel parsed them and never sent them)."""
    pdir = tempfile.mkdtemp(prefix="pw-", dir=tmp)
    os.chmod(pdir, 0o755)
    pw = os.path.join(pdir, "passwd")
    r = h.subprocess.run(["mosquitto_passwd", "-b", "-c", pw, "tunnel-user", "s3cret-pass"], capture_output=True,
                         text=True, timeout=20)
    if r.returncode != 0:
        t.check(False, "setup: mosquitto_passwd", r.stderr)
        return
    os.chmod(pw, 0o644)
    broker = h.Broker(tmp, f"allow_anonymous false\npassword_file {pw}\n")
    try:
        mark = broker.log.mark()
        bad = tt.Tunnel(tmp, "pw-wrong", config(broker.port, "mgt-test/pw0/control", "pw-wrong",
                                                username="tunnel-user", password="wrong", allow=[echo.port]))
        time.sleep(3)  # the time to try connecting; it must not get in
        t.check(not broker.saw_client("pw-wrong", mark), "a wrong password: the broker refuses the tunnel")
        t.check(re.search(r"(?i)not authori[sz]ed|refused|bad user|password|connack", bad.log.text()),
                "a wrong password: the tunnel logs the refusal", bad.log.text()[-400:])
        bad.stop()
        auth = {"key": KEY, "username": "tunnel-user", "password": "s3cret-pass"}
        rig = Rig(t, tmp, broker.port, lambda: broker.log, "pw", [echo.port], auth, auth)
        loc = rig.local(echo.port)
        small = tt.data_for(1883, MIB)
        r = tt.transfer(loc.local, small, timeout=60, half_close=False)
        t.check(r["error"] == "" and r["down_sha"] == tt.sha(small),
                "username/password: both sides get in and 1 MiB goes both ways", r["error"])
        stop_and_check(t, rig.tunnels(), "password")
    finally:
        broker.stop()


def case_shared_config(t, tmp, broker, echo):
    """mqtunnel's usage: the SAME config file on both sides (README: "with same config.json")."""
    for with_id in (False, True):
        root = f"mgt-test/shared-{tt.letters(6)}"
        cfg = {"host": "127.0.0.1", "port": broker.port, "control": f"{root}/control", "allow": [echo.port]}
        what = "one config file for both sides" + (" with a clientId" if with_id else " (no clientId)")
        if with_id:
            cfg["clientId"] = "shared-" + tt.letters(6)
        mark = broker.log.mark()
        rem = tt.Tunnel(tmp, f"shared-remote-{int(with_id)}", cfg, wait=False)
        ok = broker.log.wait(r"Received SUBSCRIBE from \S+", 10.0, mark)
        lport = h.free_port()
        loc = tt.Tunnel(tmp, f"shared-local-{int(with_id)}", cfg, local=lport, remote=echo.port)
        data = tt.data_for(2024 + with_id, MIB)
        r = tt.transfer(lport, data, timeout=20, half_close=False) if ok else {"error": "remote never subscribed"}
        t.check(r["error"] == "" and r.get("down_sha") == tt.sha(data), f"{what}: 1 MiB goes both ways",
                r["error"])
        if with_id:
            takeovers = broker.log.count(r"already connected, closing old connection", mark)
            t.eq(takeovers, 0, f"{what}: the two sides do not take each other's MQTT session over")
        stop_and_check(t, [rem, loc], what)


def case_options(t, tmp, broker, echo, later):
    """mqttVersion 5, keyFile, a small window and chunk; a key mismatch and a missing key refused."""
    echo = tt.Server("echo")  # its own: its connections are counted while other cases run
    kf = os.path.join(tmp, "tunnel.key")
    with open(kf, "w") as f:
        f.write(KEY + "\n")
    opts = {"mqttVersion": 5, "window": 65536, "chunk": 8192, "keepalive": 20}
    mark = broker.log.mark()
    rig = Rig(t, tmp, broker.port, lambda: broker.log, "opts", [echo.port], {"keyFile": kf, **opts},
              {"key": KEY, **opts})
    loc = rig.local(echo.port)
    data = tt.data_for(55, 4 * MIB)
    r = tt.transfer(loc.local, data, timeout=60, half_close=False)
    t.check(r["error"] == "" and r["down_sha"] == tt.sha(data),
            "mqttVersion 5, keyFile on one side and key on the other, window 64 KiB, chunk 8 KiB: 4 MiB both ways",
            r["error"])
    for tn in rig.tunnels():
        cid = tn.mqtt_id
        m = broker.log.search(r"New client connected from \S+ as " + re.escape(cid) + r" \(p(\d), c(\d), k(\d+)", mark)
        t.check(m and m.groups() == ("5", "0", "20"), f"{cid}: MQTT 5, clean start 0, keepalive 20",
                m.group(0) if m else "")
    sizes = [int(x) for x in re.findall(r"Received PUBLISH from " + re.escape(loc.mqtt_id)
                                        + r" \(d\d, q\d, r\d, m\d+, '[^']*/mgt-[^']*', \.\.\. \((\d+) bytes\)\)",
                                        broker.log.text(mark))]
    t.check(sizes and max(sizes) <= 8192 + 22, "chunk 8192: no frame carries more than 8 KiB of data",
            f"max {max(sizes or [0])} bytes")
    # a local side with another key, and one with none: the remote refuses their opens (both at once:
    # the local side may wait its give-up time, 60 s by default, for an answer that never comes)
    acc0 = echo.accepted
    rmark = rig.remote.log.mark()
    tries = []
    for name, extra in (("another key", {"key": "ab" * 32}), ("no key", {})):
        lport = h.free_port()
        other = tt.Tunnel(tmp, f"opts-{name.replace(' ', '-')}",
                          config(broker.port, rig.control, f"opts-{name.replace(' ', '')}", giveUp=6, **extra),
                          local=lport, remote=echo.port)
        tries.append((name, other, {}))

    def attempt(port, out):
        t0 = time.monotonic()
        got, err = b"", ""
        try:
            s = socket.create_connection((h.HOST, port), timeout=5)
            s.settimeout(75)
            s.sendall(b"x" * 1000)
            while True:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        except OSError as e:
            err = f"{type(e).__name__}: {e}"
        try:
            s.close()
        except (OSError, UnboundLocalError):
            pass
        out.update(got=got, err=err, took=time.monotonic() - t0)

    ths = [threading.Thread(target=attempt, args=(o.local, out), daemon=True) for _, o, out in tries]
    for th in ths:
        th.start()
    later.append(lambda: finish_options(t, rig, echo, acc0, rmark, tries, ths))


def finish_options(t, rig, echo, acc0, rmark, tries, ths):
    """The end of case_options, run after other cases: the refused opens' clients may wait for the
    local side's give-up time."""
    for th in ths:
        th.join(80)
    for name, other, out in tries:
        ticks = other.cpu_ticks() if other.alive() else 0
        t.check(ticks < 200, f"a local side with {name}: under 2 s of CPU in all while its open waits (no spin)",
                f"{ticks} ticks")
        print(f"    a local side with {name}: the client ended after {out.get('took', 0):.1f} s "
              f"({out.get('err') or 'EOF'})")
        t.check(out.get("got") == b"" and "timed out" not in out.get("err", "timed out"),
                f"a local side with {name}: its client is closed or reset (within 75 s), nothing comes back",
                f"{len(out.get('got', b''))} bytes, {out.get('err')}")
        stop_and_check(t, [other], name)
    t.eq(echo.accepted - acc0, 0, "local sides with another key or none: nothing connects on the remote side")
    t.eq(rig.remote.log.count(r"open refused", rmark), 2, "local sides with another key or none: the remote logs "
         "two refused opens")
    stop_and_check(t, rig.tunnels(), "options")
    echo.close()


def case_mqtunnel_local(t, tmp, broker):
    """mgate is the local side in mqtunnel mode; the peer here is mqtunnel's remote side."""
    root = f"mgt-test/mqt-{tt.letters(6)}"
    control = f"{root}/control"
    rport = 2222  # the port the peer (remote) would dial: it only has to appear in the messages
    peer = tt.Peer(broker.port, "mqtunnel-remote-" + tt.letters(6))
    try:
        peer.subscribe([control], 1)
        lport = h.free_port()
        loc = tt.Tunnel(tmp, "mqt-local", config(broker.port, control, "mqt-local", compat="mqtunnel"),
                        local=lport, remote=rport)
        s = socket.create_connection((h.HOST, lport), timeout=5)
        s.settimeout(10)
        m = peer.get(5.0, lambda m: m.topic == control)
        raw = m.payload.decode(errors="replace") if m else ""
        rx = tt.mqtunnel_connect_regex("connect", root, lport, rport)
        mm = rx.fullmatch(raw)
        t.check(mm, "mqtunnel local: the connect message is byte for byte mqtunnel's (field order, no spaces, "
                    "topics <root>/<port>-<8 letters>)", raw)
        t.eq(m.qos if m else None, 1, "mqtunnel local: the connect message goes at QoS 1")
        if not mm:
            s.close()
            return
        tid, ltopic, rtopic = mm.group(1), mm.group(2), mm.group(3)
        # as mqtunnel's remote: subscribe to the local side's topic, then answer connect_ack (swapped, as it does)
        peer.subscribe([ltopic], 1)
        peer.publish(control, tt.mqtunnel_control("connect_ack", tid, rport, rtopic, lport, ltopic), qos=1)
        up = tt.data_for(11, 256 * 1024)
        down = tt.data_for(12, 200 * 1024)
        s.sendall(up)
        got_up, sizes, qoses = b"", [], set()
        deadline = time.monotonic() + 15
        while len(got_up) < len(up) and time.monotonic() < deadline:
            x = peer.get(0.5, lambda m: m.topic == ltopic)
            if x:
                got_up += x.payload
                sizes.append(len(x.payload))
                qoses.add(x.qos)
        t.check(got_up == up, "mqtunnel local: the bytes written to the local port arrive on local_topic",
                f"{len(got_up)} of {len(up)} bytes")
        t.check(sizes and max(sizes) <= 4096, "mqtunnel local: at most 4 KiB per PUBLISH", f"max {max(sizes or [0])}")
        t.eq(qoses, {0}, "mqtunnel local: data at QoS 0 (mqtunnel's format)")
        for off in range(0, len(down), 4096):
            peer.publish(rtopic, down[off:off + 4096], qos=0)
            if off % (64 * 1024) == 0:
                time.sleep(0.01)  # QoS 0 is lossy: do not overrun anything on the way
        got_down = b""
        try:
            while len(got_down) < len(down):
                b = s.recv(65536)
                if not b:
                    break
                got_down += b
        except OSError as e:
            print(f"    read: {e}")
        t.check(got_down == down, "mqtunnel local: bytes published on remote_topic reach the TCP client",
                f"{len(got_down)} of {len(down)} bytes")
        s.close()
        m = peer.get(5.0, lambda m: m.topic == control)
        raw = m.payload.decode(errors="replace") if m else ""
        mm = tt.MQTUNNEL_ANY.fullmatch(raw)
        t.check(mm and mm.group(1) == "closed" and mm.group(2) == tid,
                "mqtunnel local: closing the TCP client sends closed for the tunnel, in mqtunnel's format", raw)
        stop_and_check(t, [loc], "mqtunnel local")
    finally:
        peer.close()


def case_mqtunnel_remote(t, tmp, broker, echo):
    """mgate is the remote side in mqtunnel mode; the peer here is mqtunnel's local side."""
    root = f"mgt-test/mqr-{tt.letters(6)}"
    control = f"{root}/control"
    mark = broker.log.mark()
    rem = tt.Tunnel(tmp, "mqt-remote", config(broker.port, control, "mqt-remote", compat="mqtunnel",
                                              allow=[echo.port]))
    if not broker.log.wait(r"Received SUBSCRIBE from mqt-remote\b", 10.0, mark):
        t.check(False, "mqtunnel remote: it subscribes to the control topic", rem.log.text()[-500:])
        return
    peer = tt.Peer(broker.port, "mqtunnel-local-" + tt.letters(6))
    try:
        lport = 40022
        tid = tt.letters(16)
        ltopic = f"{root}/{lport}-{tt.letters(8)}"
        rtopic = f"{root}/{echo.port}-{tt.letters(8)}"
        peer.subscribe([control, rtopic], 1)
        acc0 = echo.accepted
        msg = tt.mqtunnel_control("connect", tid, lport, ltopic, echo.port, rtopic)
        peer.publish(control, msg, qos=1)
        m = peer.get(5.0, lambda m: m.topic == control and b"connect_ack" in m.payload)
        raw = m.payload.decode(errors="replace") if m else ""
        mm = tt.MQTUNNEL_ANY.fullmatch(raw)
        t.check(mm and mm.group(1) == "connect_ack" and mm.group(2) == tid,
                "mqtunnel remote: connect_ack for the tunnel, in mqtunnel's format (field order, no spaces)", raw)
        if mm:
            t.eq({(int(mm.group(3)), mm.group(4)), (int(mm.group(5)), mm.group(6))},
                 {(lport, ltopic), (echo.port, rtopic)}, "mqtunnel remote: connect_ack names the tunnel's ports and topics")
        t.check(h.wait_until(lambda: echo.accepted - acc0 == 1, 5.0), "mqtunnel remote: it dials the remote port")
        up = tt.data_for(21, 200 * 1024)
        for off in range(0, len(up), 4096):
            peer.publish(ltopic, up[off:off + 4096], qos=0)
            if off % (64 * 1024) == 0:
                time.sleep(0.01)  # QoS 0 is lossy: do not overrun anything on the way
        got, sizes = b"", []
        deadline = time.monotonic() + 15
        while len(got) < len(up) and time.monotonic() < deadline:
            x = peer.get(0.5, lambda m: m.topic == rtopic)
            if x:
                got += x.payload
                sizes.append(len(x.payload))
        t.check(got == up, "mqtunnel remote: bytes published on local_topic reach the service and come back on "
                "remote_topic", f"{len(got)} of {len(up)} bytes")
        t.check(sizes and max(sizes) <= 4096, "mqtunnel remote: at most 4 KiB per PUBLISH", f"max {max(sizes or [0])}")
        peer.publish(control, tt.mqtunnel_control("closed", tid, lport, ltopic, echo.port, rtopic), qos=1)
        t.check(h.wait_until(lambda: echo.conns and echo.conns[-1]["done"], 5.0),
                "mqtunnel remote: closed ends the TCP connection to the service")
        stop_and_check(t, [rem], "mqtunnel remote")
    finally:
        peer.close()


def main():
    h.need_binaries()
    t = h.Checks("tunnel")
    with tempfile.TemporaryDirectory(prefix="mgate-tunnel-") as tmp:
        os.chmod(tmp, 0o711)
        echo = tt.Server("echo")
        source = tt.Server("source", source_bytes=3 * MIB + 12345, seed=606)
        sink = tt.Server("sink")
        broker = PersistentBroker(tmp)
        rig = None
        only = [w.strip() for w in os.environ.get("MGATE_TUNNEL_ONLY", "").split(",") if w.strip()]

        def case(title, fn, *args):
            if not only or any(w in title for w in only):
                t.case(title, fn, *args)

        def plain():
            nonlocal rig
            rig = case_plain(t, tmp, broker, echo, [echo.port, source.port, sink.port])

        case("bad configs exit 2 naming the field", case_bad_config, t, tmp, broker.port)
        case(f"{BIG // MIB} MiB both ways through a plain broker", plain)
        if rig:
            case("how a stream ends (FIN both ways, half-close)", case_close, t, rig, echo, source, sink)
            case(f"{STREAMS} parallel streams", case_parallel, t, rig, echo)
            case("a reader that stops", case_stall, t, rig, echo)
            case("a port not in allow", case_allow, t, rig)
            case("forged open messages", case_forged, t, rig, echo, broker)
            case("the attack round: topics, replays, forged ACCEPTs", case_attack_round, t, rig, echo, broker)
            t.section("plain rig: stop")
            stats = stop_and_check(t, rig.tunnels(), "plain rig")
            v = tt.stat_value(stats.get(rig.remote.name), "refus")
            if not only or any(w in "a port not in allow" for w in only):
                t.check(v is not None and v >= 1, "the remote side's stats count the refused opens",
                        f"{stats.get(rig.remote.name)}")
        case("TLS broker", case_tls, t, tmp, echo)
        case("username and password", case_password, t, tmp, echo)
        case("one config file for both sides", case_shared_config, t, tmp, broker, echo)
        case("broker SIGTERM + restart mid-transfer", case_restart, t, tmp, signal.SIGTERM, RESTART)
        case("broker SIGKILL + restart mid-transfer", case_restart, t, tmp, signal.SIGKILL, RESTART)
        case("broker SIGTERM + restart mid-transfer, MQTT 5", case_restart, t, tmp, signal.SIGTERM, RESTART // 2,
             {"mqttVersion": 5})
        later = []
        case("options: MQTT 5, keyFile, window, chunk; wrong or no key", case_options, t, tmp, broker, echo, later)
        case("remote side killed mid-stream", case_remote_dies, t, tmp, broker, echo)
        case("mqtunnel compat: mgate local, python remote", case_mqtunnel_local, t, tmp, broker)
        case("mqtunnel compat: mgate remote, python local", case_mqtunnel_remote, t, tmp, broker, echo)
        for fn in later:
            t.case("options: the local sides with another key or none (their clients waited meanwhile)", fn)
        for srv in (echo, source, sink):
            srv.close()
        return t.done()


if __name__ == "__main__":
    h.run_main(main)
