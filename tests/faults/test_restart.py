#!/usr/bin/env python3
"""faults.restart: a broker restarted under persistent sessions loses nothing through mgate.

One mosquitto with persistence on (its database in the test's temporary directory, saved after
every change) is killed several times a round, with SIGTERM and, in some rounds, SIGKILL, and
restarted on the same port. Meanwhile flows publish and subscribe at QoS 1 and 2, MQTT 3.1.1
(clean session off) and 5.0 (session expiry), each flow twice in the same run: directly to
mosquitto and through mgate to the same mosquitto. Every message carries its sequence number in
its topic, so mosquitto's own log (log_type all) says which of them it received and sent on, and
each client keeps a ledger (published, acknowledged, delivered). A message lost is put down to the
hop where it disappeared (where_lost): the publisher (never completed; or refused by a 5.0 PUBREC
it took for a success), mgate (acknowledged to the publisher but never reached the broker; the
broker got an acknowledgement the subscriber never sent; sent by the broker on a connection that
stayed up but never reached the subscriber, which on the direct path is the subscriber's own
loss), or the broker (received but never sent on; sent, then forgotten across a restart).

Clients: our own small client (MiniPublisher/MiniSubscriber below) with the resend ledger the
protocol asks for: unacknowledged PUBLISHes go again with DUP after each reconnect, PUBRELs too,
QoS 2 packet ids received wait for their PUBREL across reconnects. MGATE_RESTART_CLIENT=paho uses
paho-mqtt 1.6.1 as an application commonly does (loop_start, publish(), on_message) instead, to
show what the library itself loses (docs/TESTING.md).

Checks, per round and QoS: nothing lost through mgate in a hop of mgate's; through mgate no more
lost than directly; with only SIGTERM restarts nothing lost on either path and no QoS 2 duplicate.

Quick form (CI): 4 rounds of 250 messages a flow (8 flows). MGATE_LONG=1: 20 rounds of 1000.
Knobs, to reproduce other set-ups: MGATE_RESTART_ROUNDS, MGATE_RESTART_MESSAGES (per flow),
MGATE_RESTART_PUBLISH_S (seconds the messages are spread over), MGATE_RESTART_SEED (kill times),
MGATE_RESTART_QUEUE=default (mosquitto's max_queued_messages left at 1000),
MGATE_RESTART_PAHO_DELAY=default (paho's own reconnect back-off, 1 s doubling),
MGATE_RESTART_KEEP=1 (keep the temporary directory: mosquitto's and mgate's logs).
"""
import collections
import faulthandler
import os
import random
import re
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness as H  # noqa: E402

LONG = os.environ.get("MGATE_LONG") == "1"
ROUNDS = int(os.environ.get("MGATE_RESTART_ROUNDS", "20" if LONG else "4"))
MESSAGES = int(os.environ.get("MGATE_RESTART_MESSAGES", "1000" if LONG else "250"))
PUBLISH_S = float(os.environ.get("MGATE_RESTART_PUBLISH_S", "24" if LONG else "12"))  # messages spread over it
KILLS = 3 if LONG else 2  # broker restarts a round
CLIENT = os.environ.get("MGATE_RESTART_CLIENT", "mini")
WINDOW = 20  # QoS 1/2 messages in flight per publisher (mosquitto's default receive maximum)
SESSION_EXPIRY = 3600
# MGATE_RESTART_QUEUE=default leaves mosquitto's max_queued_messages at its default (1000), as the
# first check of issue 20 did, to show the broker's own drops.
QUEUE_DEFAULT = os.environ.get("MGATE_RESTART_QUEUE") == "default"
KEEP = os.environ.get("MGATE_RESTART_KEEP") == "1"
SEED = int(os.environ.get("MGATE_RESTART_SEED", str(int(time.time()))))

# ---------------------------------------------------------------------------
# the broker, restarted on the same port with the same database


class RestartingBroker:
    """mosquitto on a fixed port whose persistence directory survives its restarts. Each run
    (generation) logs to its own file, so a round's logs can be read whole."""

    def __init__(self, tmpdir):
        self.dir = tempfile.mkdtemp(prefix="mosquitto-", dir=tmpdir)
        os.chmod(self.dir, 0o777)  # mosquitto drops to its own user before writing the database
        self.port = H.free_port()
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write(f"listener {self.port} {H.HOST}\n"
                    "allow_anonymous true\n"
                    "persistence true\n"
                    f"persistence_location {self.dir}/\n"
                    # Saved after every change (at the end of the loop turn that made it): a SIGKILL
                    # then loses at most what the last turn did, which is as durable as mosquitto
                    # gets; a SIGTERM saves everything on the way out.
                    "autosave_on_changes true\n"
                    "autosave_interval 1\n"
                    # A subscriber that is reconnecting must not have its queue cut at the default
                    # 1000 (a loss the test would put on the broker, rightly, but not the point).
                    + ("" if QUEUE_DEFAULT else "max_queued_messages 1000000\n") +
                    "log_type all\n"
                    "log_dest stderr\n"
                    "connection_messages true\n")
        self.proc = None
        self.logs = []
        self.ends = []  # the signal that ended each run (generation)
        self.round = 0

    def start(self):
        path = os.path.join(self.dir, f"mosquitto-r{self.round}-{len(self.logs)}.log")
        self.logs.append(path)
        for attempt in range(50):  # the port of the killed one is released by the kernel at once
            with open(path, "ab") as logf:
                self.proc = H.spawn(["mosquitto", "-c", self.conf], stdout=logf, stderr=logf, cwd=self.dir)
            try:
                H.wait_port(self.port, 10.0, self.proc)
                return
            except RuntimeError:
                if self.proc.poll() is None or attempt == 49:
                    raise
                time.sleep(0.1)

    def kill(self, sig):
        self.ends.append(sig)
        self.proc.send_signal(sig)
        try:
            self.proc.wait(20)
        except Exception:  # noqa: BLE001 - a SIGTERM stuck saving: SIGKILL ends it
            self.proc.kill()
            self.proc.wait(10)

    def wipe(self, rnd):
        """Before a round: no database; the last round's logs go unless MGATE_RESTART_KEEP=1."""
        for name in os.listdir(self.dir):
            if name.startswith("mosquitto.db") or (name.endswith(".log") and not KEEP):
                os.unlink(os.path.join(self.dir, name))
        self.logs = []
        self.ends = []
        self.round = rnd


# ---------------------------------------------------------------------------
# our small MQTT client with a correct resend ledger


class Flow:
    """One publisher and one subscriber on their own topic, at one QoS and protocol version,
    directly (path "direct") or through mgate ("mgate")."""

    def __init__(self, rnd, path, qos, version, port):
        self.path, self.qos, self.version, self.port = path, qos, version, port
        self.name = f"r{rnd}-{path}-q{qos}-v{version}"
        self.topic = f"fr/{self.name}/"
        self.pub_id = f"{self.name}-pub"
        self.sub_id = f"{self.name}-sub"


class Link:
    """One TCP connection speaking MQTT: whole packets in, bytes out."""

    def __init__(self, port):
        self.sock = socket.create_connection((H.HOST, port), timeout=2.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pending = []  # packets read but not yet handled

    def send(self, data):
        self.sock.sendall(data)

    def packets(self, timeout):
        """The packets that arrive within timeout (maybe none); raises H.Closed at end of stream."""
        r, _, _ = select.select([self.sock], [], [], 0 if self.buf else timeout)
        if r:
            data = self.sock.recv(65536)
            if not data:
                raise H.Closed()
            self.buf += data
        out = []
        while (p := H.take_packet(self.buf)) is not None:
            out.append(p)
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Refused(Exception):
    pass


class MiniClient(threading.Thread):
    """Connect, keep the session, reconnect after any end until stopped; subclasses say what to do
    on a connection (on_session) and with each packet (on_packet)."""

    def __init__(self, flow, client_id):
        super().__init__(daemon=True)
        self.flow, self.client_id = flow, client_id
        self.stop_ev = threading.Event()
        self.connects = self.refusals = self.drops = self.session_lost = 0
        self.ever_connected = False
        self.error = None

    def connect(self):
        link = Link(self.flow.port)
        v = self.flow.version
        props = [(H.P_SESSION_EXPIRY, SESSION_EXPIRY)] if v == 5 else ()
        link.send(H.connect_packet(v, self.client_id, clean=False, props=props, keepalive=30))
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            got = link.packets(0.2)
            if got:
                p = got[0]
                if p.type != H.CONNACK:
                    raise AssertionError(f"{self.client_id}: {p!r} before CONNACK")
                if p.body[1] != 0:
                    link.close()
                    raise Refused(p.body[1])
                link.pending = got[1:]  # what came with the CONNACK (a session's messages) is the session's
                return link, bool(p.body[0] & 1)
        link.close()
        raise TimeoutError("no CONNACK")

    def run(self):
        try:
            while not self.stop_ev.is_set() and not self.finished():
                try:
                    link, present = self.connect()
                except Refused:
                    self.refusals += 1
                    time.sleep(0.05)
                    continue
                except (OSError, H.Closed, TimeoutError):
                    time.sleep(0.05)
                    continue
                self.connects += 1
                if self.ever_connected and not present:
                    self.session_lost += 1
                self.ever_connected = True
                try:
                    self.on_session(link, present)
                    for p in link.pending:
                        self.on_packet(link, p)
                    link.pending = []
                    while not self.stop_ev.is_set() and not self.finished():
                        self.step(link)
                        for p in link.packets(0.02):
                            self.on_packet(link, p)
                    if self.finished() or self.stop_ev.is_set():
                        link.send(H.disconnect_packet(self.flow.version))
                except (OSError, H.Closed):
                    self.drops += 1
                finally:
                    link.close()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = f"{type(e).__name__}: {e}"

    def finished(self):
        return False

    def step(self, link):
        pass


class MiniPublisher(MiniClient):
    """Publishes MESSAGES messages at a steady pace, at most WINDOW in flight; after every
    reconnect sends again what was not acknowledged (PUBLISH with DUP, or PUBREL), in order."""

    def __init__(self, flow, n, t0):
        super().__init__(flow, flow.pub_id)
        self.n, self.t0 = n, t0
        self.rate = n / PUBLISH_S
        self.next_seq = 0
        self.next_mid = 1
        self.inflight = collections.OrderedDict()  # mid -> [seq, "ack" | "rec" | "comp"]
        self.acked = {}  # seq -> time
        self.retry = collections.deque()  # seqs the broker refused (5.0 reason >= 0x80): published again
        self.resent = self.refused = 0

    def finished(self):
        return len(self.acked) == self.n

    def _mid(self):
        while self.next_mid in self.inflight or self.next_mid == 0:
            self.next_mid = self.next_mid % 65535 + 1
        mid = self.next_mid
        self.next_mid = self.next_mid % 65535 + 1
        return mid

    def _publish(self, link, mid, seq, dup):
        link.send(H.publish_packet(self.flow.version, f"{self.flow.topic}{seq}", f"{seq}", self.flow.qos, mid,
                                   dup=dup))

    def on_session(self, link, present):
        for mid, (seq, state) in list(self.inflight.items()):
            self.resent += 1
            if state == "comp":
                link.send(H.ack_packet(self.flow.version, H.PUBREL, mid))
            else:
                self._publish(link, mid, seq, True)

    def step(self, link):
        due = int((time.monotonic() - self.t0) * self.rate) + 1
        while len(self.inflight) < WINDOW and (self.retry or self.next_seq < min(self.n, due)):
            mid = self._mid()
            if self.retry:
                seq = self.retry.popleft()
            else:
                seq = self.next_seq
                self.next_seq += 1
            self.inflight[mid] = [seq, "ack" if self.flow.qos == 1 else "rec"]
            self._publish(link, mid, seq, False)

    def on_packet(self, link, p):
        if p.type in (H.PUBACK, H.PUBCOMP, H.PUBREC):
            mid = H.ack_id(p)
            ent = self.inflight.get(mid)
            if ent is None:
                return
            if p.type != H.PUBCOMP and H.ack_reason(self.flow.version, p) >= 0x80:
                # refused (5.0): the flow ends here; an application that wants it delivered sends it again
                del self.inflight[mid]
                self.refused += 1
                self.retry.append(ent[0])
                return
            if p.type == H.PUBREC:
                ent[1] = "comp"
                link.send(H.ack_packet(self.flow.version, H.PUBREL, mid))
                return
            del self.inflight[mid]
            self.acked[ent[0]] = time.monotonic()
        elif p.type == H.DISCONNECT:
            raise H.Closed()


class MiniSubscriber(MiniClient):
    """Subscribes once per session (again only when the broker says the session is gone);
    records each delivery; QoS 2 packet ids stay known until their PUBREL, across reconnects."""

    def __init__(self, flow):
        super().__init__(flow, flow.sub_id)
        self.got = collections.Counter()  # seq -> deliveries
        self.awaiting_rel = set()
        self.subscribed = threading.Event()
        self.dup_flags = 0
        self.swallowed = {}  # seq -> packet id: taken for the one still waiting for its PUBREL

    def on_session(self, link, present):
        if present and self.subscribed.is_set():
            return
        self.awaiting_rel.clear()  # a new session: the broker forgot them too
        link.send(H.subscribe_packet(self.flow.version, 1, [(self.flow.topic + "#", self.flow.qos)]))
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            got = link.pending + link.packets(0.2)
            link.pending = []
            for i, p in enumerate(got):
                if p.type == H.SUBACK:
                    self.subscribed.set()
                    link.pending = got[i + 1:]
                    return
                self.on_packet(link, p)
        raise H.Closed()

    def on_packet(self, link, p):
        v = self.flow.version
        if p.type == H.PUBLISH:
            m = H.parse_publish(v, p)
            seq = int(m.topic.rsplit("/", 1)[1])
            self.dup_flags += m.dup
            if m.qos == 1:
                self.got[seq] += 1
                link.send(H.ack_packet(v, H.PUBACK, m.pid))
            elif m.qos == 2:
                if m.pid not in self.awaiting_rel:
                    self.got[seq] += 1
                    self.awaiting_rel.add(m.pid)
                else:  # the same message again, as MQTT says a packet id before its PUBREL is
                    self.swallowed.setdefault(seq, m.pid)
                link.send(H.ack_packet(v, H.PUBREC, m.pid))
            else:
                self.got[seq] += 1
        elif p.type == H.PUBREL:
            self.awaiting_rel.discard(H.ack_id(p))
            link.send(H.ack_packet(v, H.PUBCOMP, H.ack_id(p)))
        elif p.type == H.DISCONNECT:
            raise H.Closed()


# ---------------------------------------------------------------------------
# paho-mqtt 1.6.1 as an application commonly uses it (MGATE_RESTART_CLIENT=paho)


class PahoSide:
    """A paho client on its own network thread (loop_start: it reconnects by itself)."""

    def __init__(self, flow, client_id):
        mqtt = H.paho()
        self.flow, self.client_id, self.mqtt = flow, client_id, mqtt
        kw = {"protocol": mqtt.MQTTv5 if flow.version == 5 else mqtt.MQTTv311}
        if flow.version != 5:
            kw["clean_session"] = False
        self.c = mqtt.Client(client_id, **kw)
        if os.environ.get("MGATE_RESTART_PAHO_DELAY") != "default":  # paho's own: 1 s doubling to 120 s
            self.c.reconnect_delay_set(0.05, 0.5)
        self.c.max_inflight_messages_set(WINDOW)
        self.connects = self.refusals = self.drops = self.session_lost = 0
        self.ever_connected = False
        self.error = None
        self.connected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *a: self.connected.clear()

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        rc = rc if isinstance(rc, int) else rc.value
        if rc != 0:
            self.refusals += 1
            return
        self.connects += 1
        present = bool(flags.get("session present"))
        if self.ever_connected and not present:
            self.session_lost += 1
        self.ever_connected = True
        self.on_session(present)
        self.connected.set()

    def on_session(self, present):
        pass

    def start(self):
        if self.flow.version == 5:
            from paho.mqtt.properties import Properties  # noqa: PLC0415
            from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY
            self.c.connect_async(H.HOST, self.flow.port, 30, clean_start=False, properties=props)
        else:
            self.c.connect_async(H.HOST, self.flow.port, 30)
        self.c.loop_start()

    def stop_client(self):
        try:
            self.c.disconnect()
        except Exception:  # noqa: BLE001
            pass
        self.c.loop_stop()


class PahoPublisher(PahoSide):
    """publish() at the same pace; paho keeps what is not acknowledged and sends it again after
    reconnecting (its own ledger)."""

    def __init__(self, flow, n, t0):
        super().__init__(flow, flow.pub_id)
        self.n, self.t0 = n, t0
        self.resent = self.refused = 0
        self.mid_seq = {}
        self.acked_mids = {}  # mid -> time; no lock: paho calls on_publish holding its own
        self.c.on_publish = self._on_publish
        self.thread = threading.Thread(target=self._publish_all, daemon=True)
        self.stop_ev = threading.Event()
        self.next_seq = 0

    def _on_publish(self, client, userdata, mid):
        self.acked_mids.setdefault(mid, time.monotonic())

    @property
    def acked(self):
        return {self.mid_seq[m]: t for m, t in list(self.acked_mids.items()) if m in self.mid_seq}

    def _publish_all(self):
        rate = self.n / PUBLISH_S
        for seq in range(self.n):
            if self.stop_ev.is_set():
                return
            wait = self.t0 + seq / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            info = self.c.publish(f"{self.flow.topic}{seq}", f"{seq}", self.flow.qos)
            self.mid_seq[info.mid] = seq  # (mids do not wrap: fewer than 65535 messages)
            self.next_seq = seq + 1

    def start(self):
        super().start()
        self.thread.start()

    def finished(self):
        return len(self.acked) == self.n

    def join(self, timeout=None):
        self.thread.join(timeout)


class PahoSubscriber(PahoSide):
    def __init__(self, flow):
        super().__init__(flow, flow.sub_id)
        self.got = collections.Counter()
        self.subscribed = threading.Event()
        self.dup_flags = 0
        self.stop_ev = threading.Event()
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()

    def on_session(self, present):
        if not (present and self.subscribed.is_set()):
            self.c.subscribe(self.flow.topic + "#", self.flow.qos)

    def _on_message(self, client, userdata, msg):
        self.got[int(msg.topic.rsplit("/", 1)[1])] += 1
        self.dup_flags += bool(msg.dup)


def make_clients(flow, n, t0):
    if CLIENT == "paho":
        return PahoPublisher(flow, n, t0), PahoSubscriber(flow)
    return MiniPublisher(flow, n, t0), MiniSubscriber(flow)


def stop_client(c):
    c.stop_ev.set()
    if isinstance(c, PahoSide):
        c.stop_client()
    else:
        c.join(10)


# ---------------------------------------------------------------------------
# what mosquitto's logs say about each message


LOG_PUB_IN = re.compile(r"Received PUBLISH from (\S+) \(d\d, q\d, r\d, m(\d+), 'fr/[^']*/(\d+)'")
LOG_PUB_OUT = re.compile(r"Sending PUBLISH to (\S+) \(d\d, q\d, r\d, m(\d+), 'fr/[^']*/(\d+)'")
LOG_PUBREC_OUT = re.compile(r"Sending PUBREC to (\S+) \(m(\d+), rc(\d+)\)")
LOG_ACK_IN = re.compile(r"Received (PUBACK|PUBREC) from (\S+) \(Mid: (\d+)")
LOG_DROPPED = re.compile(r"Outgoing messages are being dropped for client (\S+)")


class BrokerView:
    """Per (client id, seq): times mosquitto received it from the publisher, sent it to the
    subscriber, and got the subscriber's PUBACK/PUBREC for it; clients whose queue it cut."""

    def __init__(self, paths):
        self.last_sent_in = {}  # (subscriber, seq) -> generation of the last send
        self.received = collections.Counter()
        self.sent = collections.Counter()
        self.acked = collections.Counter()
        self.dropped = set()
        self.refused = {}  # (publisher, seq) -> reason code of the PUBREC/PUBACK that refused it
        self.save_errors = []
        for gen, path in enumerate(paths):
            mid_seq = {}  # (client, mid) -> seq; mids outlive a restart with the session
            in_seq = {}  # (publisher, mid) -> seq of the PUBLISH last received with that mid
            with open(path, errors="replace") as f:
                for line in f:
                    if "PUBLISH" in line:
                        m = LOG_PUB_IN.search(line)
                        if m:
                            self.received[(m.group(1), int(m.group(3)))] += 1
                            in_seq[(m.group(1), m.group(2))] = int(m.group(3))
                            continue
                        m = LOG_PUB_OUT.search(line)
                        if m:
                            mid_seq[(m.group(1), m.group(2))] = int(m.group(3))
                            self.sent[(m.group(1), int(m.group(3)))] += 1
                            self.last_sent_in[(m.group(1), int(m.group(3)))] = gen
                            continue
                    if line.find("Sending PUBREC") > 0:
                        m = LOG_PUBREC_OUT.search(line)
                        if m and int(m.group(3)) >= 0x80 and (m.group(1), m.group(2)) in in_seq:
                            self.refused[(m.group(1), in_seq[(m.group(1), m.group(2))])] = int(m.group(3))
                        continue
                    m = LOG_ACK_IN.search(line)
                    if m and (m.group(2), m.group(3)) in mid_seq:
                        self.acked[(m.group(2), mid_seq[(m.group(2), m.group(3))])] += 1
                        continue
                    m = LOG_DROPPED.search(line)
                    if m:
                        self.dropped.add(m.group(1))
                    elif "Error saving" in line and len(self.save_errors) < 3:
                        self.save_errors.append(line.strip())


def where_lost(flow, pub, sub, seq, bv, ends):
    """(hop, why) for a message the subscriber never got; ends: the signal that ended each of the
    broker's runs (the last one is the end of the round)."""
    got_by_broker = bv.received[(flow.pub_id, seq)] > 0
    if seq not in pub.acked:
        where = "reached the broker" if got_by_broker else "never reached the broker"
        return "publisher", f"never acknowledged to the publisher ({where})"
    if not got_by_broker:
        if flow.path == "mgate":
            return "mgate", "acknowledged to the publisher, never reached the broker"
        return "broker", "acknowledged to the publisher, no PUBLISH in the broker's log"
    if (flow.pub_id, seq) in bv.refused and bv.sent[(flow.sub_id, seq)] == 0:
        rc = bv.refused[(flow.pub_id, seq)]
        if flow.version == 5:  # told, with the reason code, and the publisher went on as if delivered
            why = " (quota exceeded: more QoS 2 in flight than the receive maximum)" if rc == 0x97 else ""
            return "publisher", f"refused by the broker with PUBREC 0x{rc:02x}{why}, taken as delivered"
        # 3.1.1 has no reason code on a PUBREC (nor a receive maximum): the publisher cannot know
        return "broker", (f"dropped by the broker (its log: PUBREC rc {rc}) but answered with a plain 3.1.1 PUBREC; "
                          "the publisher had more QoS 2 in flight than the broker's max_inflight_messages")
    if bv.sent[(flow.sub_id, seq)] == 0:
        cut = " (its queue was cut)" if flow.sub_id in bv.dropped else ""
        return "broker", f"received, never sent to the subscriber{cut}"
    if seq in getattr(sub, "swallowed", {}):
        # a broker that lost state in a SIGKILL gives out packet ids again: one the subscriber
        # still holds (PUBREC sent, no PUBREL yet) must be taken as the same message [MQTT-4.3.3]
        return "broker", (f"sent with packet id {sub.swallowed[seq]} while the subscriber still waited for the "
                          "PUBREL of the message before it under that id (the broker reused it after losing its state)")
    if bv.acked[(flow.sub_id, seq)] > 0:
        if flow.path == "mgate":
            return "mgate", "the broker got an acknowledgement the subscriber never sent"
        return "subscriber", "acknowledged by the subscriber's library, never handed to the application"
    gen = bv.last_sent_in[(flow.sub_id, seq)]
    if gen == len(ends) - 1:
        # sent on a connection that stayed up to the end: a broker waits for the acknowledgement
        # there and sends nothing again (MQTT resends only on a new connection)
        if flow.path == "mgate":
            return "mgate", "sent by the broker on a connection that stayed up, never reached the subscriber"
        return "subscriber", "sent by the broker on a connection that stayed up, never handed to the application"
    end = signal.Signals(ends[gen]).name
    return "broker", f"sent to the subscriber, not acknowledged, never sent again after the {end} restart"


# ---------------------------------------------------------------------------
# one round


def kill_plan(rnd, rng):
    """[(time from the start of publishing, signal, seconds down)]: SIGKILL in every other round
    (its first or last restart), SIGTERM otherwise."""
    plan = []
    for k in range(KILLS):
        at = PUBLISH_S * (k + 1) / (KILLS + 1) + rng.uniform(-1.0, 1.0)
        sig = signal.SIGTERM
        if rnd % 2 == 1 and k == (rnd // 2) % KILLS:
            sig = signal.SIGKILL
        plan.append((at, sig, rng.uniform(0.2, 1.5)))
    return plan


def run_round(t, rnd, broker, gate, rng):
    broker.wipe(rnd)
    broker.start()
    flows = [Flow(rnd, path, qos, version, broker.port if path == "direct" else gate.port)
             for qos in (1, 2) for version in (4, 5) for path in ("direct", "mgate")]
    t0 = time.monotonic() + 1.0
    pairs = [make_clients(f, MESSAGES, t0) for f in flows]
    for _, sub in pairs:
        sub.start()
    if not all(sub.subscribed.wait(20.0) for _, sub in pairs):
        t.check(False, f"round {rnd}: every subscriber subscribed")
        return None
    t0 = time.monotonic()
    for pub, _ in pairs:
        pub.t0 = t0
        pub.start()
    plan = kill_plan(rnd, rng)
    for at, sig, down in plan:
        wait = t0 + at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        broker.kill(sig)
        time.sleep(down)
        broker.start()
    # every publisher done (all acknowledged), then every subscriber has what was acknowledged;
    # bounded: a stall is reported as what it is, not waited for
    deadline = time.monotonic() + PUBLISH_S + 90.0
    H.wait_until(lambda: all(p.finished() for p, _ in pairs), max(1.0, deadline - time.monotonic()), 0.1)
    settle = time.monotonic() + 30.0

    def all_in():
        return all(all(s.got[q] for q in p.acked) for p, s in pairs)
    H.wait_until(all_in, max(1.0, settle - time.monotonic()), 0.1)
    # a little longer for redeliveries still in flight (duplicates are counted too)
    time.sleep(0.5)
    for pub, sub in pairs:
        stop_client(pub)
        stop_client(sub)
    broker.kill(signal.SIGTERM)
    bv = BrokerView(broker.logs)
    rows = []
    for f, (pub, sub) in zip(flows, pairs):
        lost = [q for q in range(MESSAGES) if not sub.got[q]]
        dups = sum(c - 1 for c in sub.got.values() if c > 1)
        hops = collections.Counter()
        whys = collections.defaultdict(list)
        for q in lost:
            hop, why = where_lost(f, pub, sub, q, bv, broker.ends)
            hops[hop] += 1
            whys[f"{hop}: {why}"].append(q)
        rows.append({"flow": f, "lost": len(lost), "dups": dups, "hops": hops, "whys": whys,
                     "acked": len(pub.acked), "resent": pub.resent, "refused": pub.refused, "pub_connects": pub.connects,
                     "sub_connects": sub.connects, "refusals": pub.refusals + sub.refusals,
                     "session_lost": pub.session_lost + sub.session_lost,
                     "errors": [e for e in (pub.error, sub.error) if e]})
    kills = " ".join(f"{signal.Signals(sig).name[3:]}@{at:.1f}s/{down:.1f}s" for at, sig, down in plan)
    return {"round": rnd, "kills": kills, "save_errors": bv.save_errors, "sigkill": any(sig == signal.SIGKILL for _, sig, _ in plan), "rows": rows}


def report_round(t, res):
    rnd = res["round"]
    print(f"   round {rnd}: broker restarts {res['kills']}", flush=True)
    for r in res["rows"]:
        f = r["flow"]
        hops = ", ".join(f"{h} {n}" for h, n in sorted(r["hops"].items())) or "-"
        print(f"     {f.path:6} q{f.qos} v{f.version}: lost {r['lost']:4} dup {r['dups']:4}  "
              f"(acked {r['acked']}, resent {r['resent']}, refused by 5.0 acks {r['refused']}, connects pub {r['pub_connects']} sub {r['sub_connects']}, "
              f"CONNACK refusals {r['refusals']}, sessions lost {r['session_lost']}; lost in: {hops})", flush=True)
        for why, seqs in r["whys"].items():
            print(f"        {len(seqs):4} x {why}  e.g. seq {seqs[:5]}", flush=True)
        for e in r["errors"]:
            print(f"        client error: {e}", flush=True)
    for qos in (1, 2):
        by = {p: [r for r in res["rows"] if r["flow"].qos == qos and r["flow"].path == p] for p in ("direct", "mgate")}
        lost = {p: sum(r["lost"] for r in rows) for p, rows in by.items()}
        dups = {p: sum(r["dups"] for r in rows) for p, rows in by.items()}
        mgate_hop = sum(r["hops"]["mgate"] for r in by["mgate"])
        t.eq(mgate_hop, 0, f"round {rnd} QoS {qos}: no message lost in a hop of mgate's")
        if res["sigkill"]:
            # mosquitto acknowledges before it saves: a SIGKILL may take a message or a delivery
            # state with it, at random on either path; those are the broker's, put down to it
            # message by message (where_lost), and the rest is compared
            ours = {p: sum(r["lost"] - r["hops"]["broker"] for r in rows) for p, rows in by.items()}
            t.check(ours["mgate"] <= ours["direct"],
                    f"round {rnd} QoS {qos}: through mgate lost no more than directly (SIGKILL's broker losses aside)",
                    f"mgate {ours['mgate']}, direct {ours['direct']}")
        else:
            t.check(lost["mgate"] <= lost["direct"], f"round {rnd} QoS {qos}: through mgate lost no more than directly",
                    f"mgate {lost['mgate']}, direct {lost['direct']}")
            t.eq(lost["direct"] + lost["mgate"], 0, f"round {rnd} QoS {qos}: SIGTERM restarts only: nothing lost")
            if qos == 2:
                t.eq(dups["direct"] + dups["mgate"], 0, f"round {rnd} QoS 2: SIGTERM restarts only: no duplicate")
    t.eq([e for r in res["rows"] for e in r["errors"]], [], f"round {rnd}: no client error")
    t.eq(res["save_errors"], [], f"round {rnd}: mosquitto saved its database without error")
    if not res["sigkill"]:
        t.eq(sum(r["session_lost"] for r in res["rows"]), 0,
             f"round {rnd}: SIGTERM restarts only: every client found its session again")


def totals(t, results):
    t.section("totals")
    print(f"   {len(results)} rounds x {MESSAGES} messages a flow, client {CLIENT}, seed {SEED}", flush=True)
    print("   path   QoS  kills      lost   dup  (lost in: hops)", flush=True)
    for qos in (1, 2):
        for path in ("direct", "mgate"):
            for kind in ("SIGTERM only", "with SIGKILL"):
                rows = [r for res in results if res["sigkill"] == (kind == "with SIGKILL")
                        for r in res["rows"] if r["flow"].qos == qos and r["flow"].path == path]
                if not rows:
                    continue
                hops = collections.Counter()
                for r in rows:
                    hops.update(r["hops"])
                sent = MESSAGES * len(rows)
                print(f"   {path:6} {qos}   {kind:12} {sum(r['lost'] for r in rows):5}/{sent} "
                      f"{sum(r['dups'] for r in rows):5}  ({', '.join(f'{h} {n}' for h, n in sorted(hops.items())) or '-'})",
                      flush=True)


def main():
    H.need_binaries()
    faulthandler.register(signal.SIGUSR1)  # where a stuck run waits: kill -USR1 <pid>
    if not shutil.which("mosquitto"):
        print("SKIP: mosquitto is not installed")
        return 77
    t = H.Checks(f"faults.restart ({'long' if LONG else 'quick'} form, client {CLIENT})")
    rng = random.Random(SEED)
    tmp = tempfile.mkdtemp(prefix="mgate-restart-")
    os.chmod(tmp, 0o711)  # mosquitto, once it is user mosquitto, must reach its database below
    try:
        broker = RestartingBroker(tmp)
        gate = H.start_mgate(tmp, broker.port, MGATE_LOG_LEVEL="debug")
        results = []
        for rnd in range(ROUNDS):
            t.section(f"round {rnd}")
            res = run_round(t, rnd, broker, gate, rng)
            if res is None:
                break
            results.append(res)
            report_round(t, res)
        totals(t, results)
        t.check(gate.alive(), "mgate is still running")
        return H.finish(t)
    finally:
        if not KEEP:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


if __name__ == "__main__":
    H.run_main(main)
