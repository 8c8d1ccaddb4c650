#!/usr/bin/python3
"""The PROXY protocol, in and out.

In: HAProxy (`mode tcp`, `send-proxy` and `send-proxy-v2`) in front of mgate listeners with
PROXY_PROTOCOL=true (MQTT, MQTT over TLS, WebSocket). Clients connect from 127.0.0.x addresses of
their own, so the address mgate logs can only have come from the header. A listener that expects
the header refuses connections without one, or with a broken or unfinished one, and says so.

Out: TARGET_PROXY_PROTOCOL=true makes mgate send a v2 header to the broker. A test peer decodes it
(addresses, and the TLS TLVs with the client certificate's CN), then answers CONNECT like a broker;
over mqtts the header comes before the TLS handshake.
"""
import base64
import hashlib
import os
import re
import socket
import ssl
import struct
import tempfile
import threading
import time

import harness as h
import test_ws as tw

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


class Haproxy:
    """HAProxy in mode tcp: one frontend per (port, mgate port, send-proxy option)."""

    def __init__(self, tmp, routes):
        self.ports = h.free_ports(len(routes))
        cfg = ["global", "  nbthread 1", "defaults", "  mode tcp", "  timeout connect 2s",
               "  timeout client 30s", "  timeout server 30s"]
        for i, ((target, option), port) in enumerate(zip(routes, self.ports)):
            cfg += [f"listen l{i}", f"  bind {h.HOST}:{port}", f"  server s {h.HOST}:{target} {option}"]
        path = os.path.join(tmp, f"haproxy-{self.ports[0]}.cfg")
        with open(path, "w") as f:
            f.write("\n".join(cfg) + "\n")
        self.log = h.LogFile(os.path.join(tmp, f"haproxy-{self.ports[0]}.log"))
        with open(self.log.path, "wb") as logf:
            self.proc = h.spawn(["haproxy", "-db", "-f", path], stdout=logf, stderr=logf)
        for p in self.ports:
            h.wait_port(p, 5.0, self.proc)

    def stop(self):
        h.stop(self.proc)


def proxied_peer(g, client_id, mark):
    m = g.log.wait(r'"peer":"([0-9.:]+)","client_id":"' + re.escape(client_id) + '"', 3.0, mark)
    return m.group(1) if m else None


def inbound(t, tmp, broker, pki):
    mqtt_port, tls_port, ws_port = h.free_ports(3)
    tls = "MGATE_MQTT_WITH_TLS_"
    g = h.Mgate(tmp, broker.port, port=mqtt_port, MGATE_MQTT_WITHOUT_TLS_PROXY_PROTOCOL="true", **{
        tls + "HOST": h.HOST, tls + "PORT": tls_port, tls + "TARGET_HOST": h.HOST, tls + "TARGET_PORT": broker.port,
        tls + "CERT_FILE": pki["server.crt"], tls + "KEY_FILE": pki["server.key"], tls + "PROXY_PROTOCOL": "true",
        **tw.ws_env(broker.port, ws_port), tw.WS + "PROXY_PROTOCOL": "true", tw.WS + "CONNECT_TIMEOUT": "2s"})
    hp = Haproxy(tmp, [(mqtt_port, "send-proxy"), (mqtt_port, "send-proxy-v2"), (tls_port, "send-proxy-v2"),
                       (ws_port, "send-proxy"), (mqtt_port, "")])
    v1, v2, v2tls, v1ws, none = hp.ports
    for name, port, source, ctx in (("v1", v1, "127.0.0.11", None), ("v2", v2, "127.0.0.12", None),
                                    ("v2 + TLS", v2tls, "127.0.0.13", pki.tls_context())):
        mark, bmark = g.log.mark(), broker.log.mark()
        cid = f"pp-{name.replace(' ', '').replace('+', '')}"
        c = h.RawClient(port, source=source, tls=ctx)
        local = c.sock.getsockname()
        t.eq(c.connect(4, cid), 0, f"PROXY {name} from HAProxy: CONNACK 0")
        t.eq(proxied_peer(g, cid, mark), f"{source}:{local[1]}",
             f"PROXY {name}: the session's peer is the client's own address and port, not HAProxy's")
        t.check(broker.saw_client(cid, bmark), f"PROXY {name}: the broker has the client")
        c.close()
    mark = g.log.mark()
    s = socket.create_connection((h.HOST, v1ws), source_address=("127.0.0.14", 0), timeout=5)
    s.sendall(f"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Protocol: mqtt\r\n\r\n".encode())
    head = s.recv(4096)
    t.check(b" 101" in head.split(b"\r\n")[0], "PROXY v1 + WebSocket: upgraded", head[:80])
    w = tw.RawWs.__new__(tw.RawWs)
    w.s, w.buf = s, b""
    t.eq(w.connect("pp-ws")[:4], b"\x20\x02\x00\x00", "PROXY v1 + WebSocket: CONNACK 0")
    t.eq(proxied_peer(g, "pp-ws", mark), f"127.0.0.14:{s.getsockname()[1]}",
         "PROXY v1 + WebSocket: the session's peer is the client's address")
    s.close()

    # refusals: no header (straight, or through HAProxy without send-proxy), a broken one, a stalled one
    for what, connect in (("no header", lambda: h.RawClient(mqtt_port)),
                          ("HAProxy without send-proxy", lambda: h.RawClient(none))):
        mark, bmark = g.log.mark(), broker.log.mark()
        c = connect()
        t.eq(c.connect(4, "pp-none"), None, f"PROXY_PROTOCOL listener, {what}: closed without CONNACK")
        t.check(g.log.wait(r"closing a connection from .*no PROXY protocol header", 3.0, mark) is not None,
                f"PROXY_PROTOCOL listener, {what}: mgate logs why")
        t.check(not broker.saw_client("pp-none", bmark), f"PROXY_PROTOCOL listener, {what}: the broker never saw it")
        c.close()
    mark = g.log.mark()
    s = socket.create_connection((h.HOST, mqtt_port), timeout=5)
    s.sendall(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n")
    t.check(tw.closed_within(s, 3.0), "a PROXY v1 header with a bad port: closed")
    t.check(g.log.wait(r"PROXY v1 address or port is not valid", 2.0, mark) is not None, "... and logged as such")
    s.close()
    mark = g.log.mark()
    s = socket.create_connection((h.HOST, ws_port), timeout=5)
    s.sendall(SIG[:8])
    t0 = time.monotonic()
    t.check(tw.closed_within(s, 5.0), "half a PROXY v2 header, then nothing: closed")
    t.check(time.monotonic() - t0 < 3.5, f"... at CONNECT_TIMEOUT (2 s; {time.monotonic() - t0:.1f} s)")
    t.check(g.log.search(r"no PROXY protocol header in time", mark) is not None, "... and logged")
    s.close()
    hp.stop()
    t.check(g.alive(), "mgate still runs")


class PeerBroker:
    """Decodes the v2 header mgate sends, then answers CONNECT with CONNACK 0 (over TLS when
    given a server context, after the header)."""

    def __init__(self, tls=None, ws=False):
        self.ws = ws  # a WebSocket broker: the upgrade, then MQTT in binary frames
        self.srv = socket.socket()
        self.srv.bind((h.HOST, 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.tls = tls
        self.headers = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(s,), daemon=True).start()

    def read(self, s, n):
        b = b""
        while len(b) < n:
            d = s.recv(n - len(b))
            if not d:
                raise EOFError
            b += d
        return b

    def one(self, s):
        try:
            s.settimeout(5)
            head = self.read(s, 16)
            body = self.read(s, struct.unpack("!H", head[14:16])[0])
            self.headers.append(decode_v2(head, body))
            if self.tls:
                s = self.tls.wrap_socket(s, server_side=True)
            if self.ws:
                self.upgrade(s)
                frame = self.read(s, 2)  # a masked binary frame of a CONNECT shorter than 126 bytes
                self.headers[-1]["ws_frame"] = (frame[0], frame[1] & 0x80)
                self.read(s, 4 + (frame[1] & 0x7F))
                s.sendall(b"\x82\x04\x20\x02\x00\x00")
                nxt = self.read(s, 2)  # a ping (WS_PING_INTERVAL), or the close frame
                self.headers[-1]["ws_next"] = (nxt[0], nxt[1] & 0x80)
                if nxt[0] == 0x89:  # answer it, unmasked, with its payload
                    body = self.read(s, 4 + (nxt[1] & 0x7F))
                    s.sendall(bytes([0x8A, len(body) - 4]) + bytes(b ^ body[i % 4] for i, b in enumerate(body[4:])))
            else:
                first = self.read(s, 2)
                self.read(s, first[1])  # a CONNECT shorter than 128 bytes
                s.sendall(b"\x20\x02\x00\x00")
            s.recv(100)
        except (OSError, EOFError, ssl.SSLError) as e:
            self.headers.append({"error": repr(e)})
        finally:
            s.close()

    def upgrade(self, s):
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.read(s, 1)
        text = head.decode()
        self.headers[-1]["upgrade"] = text.split("\r\n")[0]
        key = re.search(r"(?im)^Sec-WebSocket-Key: *(\S+)", text).group(1)
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n")

    def stop(self):
        self.srv.close()


def decode_v2(head, body):
    out = {"sig": head[:12] == SIG, "ver_cmd": head[12], "fam": head[13]}
    if head[13] == 0x11:
        out["src"] = f"{socket.inet_ntoa(body[0:4])}:{struct.unpack('!H', body[8:10])[0]}"
        out["dst"] = f"{socket.inet_ntoa(body[4:8])}:{struct.unpack('!H', body[10:12])[0]}"
        tlvs = body[12:]
    else:
        tlvs = b""
    out["tlvs"] = {}
    while len(tlvs) >= 3:
        typ, n = tlvs[0], struct.unpack("!H", tlvs[1:3])[0]
        val, tlvs = tlvs[3:3 + n], tlvs[3 + n:]
        if typ == 0x20:
            out["ssl_client"], out["ssl_verify"] = val[0], struct.unpack("!I", val[1:5])[0]
            sub = val[5:]
            while len(sub) >= 3:
                st, sn = sub[0], struct.unpack("!H", sub[1:3])[0]
                out["tlvs"][st], sub = sub[3:3 + sn].decode(), sub[3 + sn:]
        else:
            out["tlvs"][typ] = val
    return out


def outbound(t, tmp, pki):
    peer = PeerBroker()
    mtls, port = "MGATE_MQTT_WITH_MTLS_", h.free_port()
    h.Mgate(tmp, peer.port, MGATE_MQTT_WITHOUT_TLS_TARGET_PROXY_PROTOCOL="true", **{
        mtls + "HOST": h.HOST, mtls + "PORT": port, mtls + "TARGET_HOST": h.HOST, mtls + "TARGET_PORT": peer.port,
        mtls + "CERT_FILE": pki["server.crt"], mtls + "KEY_FILE": pki["server.key"],
        mtls + "CLIENT_CA_FILE": pki["ca.crt"], mtls + "TARGET_PROXY_PROTOCOL": "true"})
    g = h._gates[-1]
    c = h.RawClient(g.port, source="127.0.0.21")
    src = f"127.0.0.21:{c.sock.getsockname()[1]}"
    t.eq(c.connect(4, "pp-out"), 0, "TARGET_PROXY_PROTOCOL: CONNACK 0 from the peer")
    c.close()
    hdr = h.wait_until(lambda: peer.headers[:1], 3.0)
    hdr = hdr[0] if hdr else {}
    t.check(hdr.get("sig") and hdr.get("ver_cmd") == 0x21 and hdr.get("fam") == 0x11,
            "TARGET_PROXY_PROTOCOL: a v2 PROXY TCP4 header comes first", hdr)
    t.eq((hdr.get("src"), hdr.get("dst")), (src, f"{h.HOST}:{g.port}"),
         "TARGET_PROXY_PROTOCOL: source = the client, destination = the listener it reached")
    t.eq(hdr.get("ssl_client"), None, "TARGET_PROXY_PROTOCOL, plain client: no SSL TLV")
    c = h.RawClient(port, source="127.0.0.22", tls=pki.tls_context("client", version="1.3"))
    src = f"127.0.0.22:{c.sock.getsockname()[1]}"
    t.eq(c.connect(4, "pp-out-tls"), 0, "TARGET_PROXY_PROTOCOL, mTLS client: CONNACK 0")
    c.close()
    hdr = h.wait_until(lambda: peer.headers[1:2], 3.0)
    hdr = hdr[0] if hdr else {}
    t.eq(hdr.get("src"), src, "TARGET_PROXY_PROTOCOL, mTLS client: source = the client")
    t.eq((hdr.get("ssl_client"), hdr.get("ssl_verify")), (0x03, 0),
         "... PP2_TYPE_SSL: client used TLS with a certificate, verified")
    t.eq(hdr.get("tlvs", {}).get(0x21), "TLSv1.3", "... PP2_SUBTYPE_SSL_VERSION TLSv1.3")
    t.eq(hdr.get("tlvs", {}).get(0x22), pki.cn("client.crt"), "... PP2_SUBTYPE_SSL_CN is the certificate's CN")
    peer.stop()

    # mqtts: the header goes first, in clear, then the TLS handshake
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki["server.crt"], pki["server.key"])
    peer = PeerBroker(tls=sctx)
    g = h.Mgate(tmp, peer.port, MGATE_MQTT_WITHOUT_TLS_TARGET_PROXY_PROTOCOL="true",
                MGATE_MQTT_WITHOUT_TLS_TARGET_PROTOCOL="mqtts", MGATE_MQTT_WITHOUT_TLS_TARGET_CA_FILE=pki["ca.crt"])
    c = h.RawClient(g.port)
    t.eq(c.connect(4, "pp-out-mqtts"), 0, "TARGET_PROXY_PROTOCOL + mqtts: CONNACK 0 over TLS after the header")
    c.close()
    hdr = h.wait_until(lambda: peer.headers[:1], 3.0)
    t.check(hdr and hdr[0].get("sig") and hdr[0].get("src", "").startswith("127.0.0.1:"),
            "TARGET_PROXY_PROTOCOL + mqtts: the peer read the header before the handshake", hdr)
    peer.stop()


def outbound_ws(t, tmp, pki):
    """TARGET_PROXY_PROTOCOL with a WebSocket broker (ws and wss): the header first, in clear, then
    TLS for wss, then the upgrade to TARGET_PATH, then CONNECT in a masked binary frame."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki["server.crt"], pki["server.key"])
    for proto, tls in (("ws", None), ("wss", sctx)):
        peer = PeerBroker(tls=tls, ws=True)
        g = h.Mgate(tmp, peer.port, MGATE_MQTT_WITHOUT_TLS_TARGET_PROXY_PROTOCOL="true",
                    MGATE_MQTT_WITHOUT_TLS_TARGET_PROTOCOL=proto, MGATE_MQTT_WITHOUT_TLS_TARGET_PATH="/mqtt",
                    MGATE_MQTT_WITHOUT_TLS_TARGET_CA_FILE=pki["ca.crt"], MGATE_MQTT_WITHOUT_TLS_WS_PING_INTERVAL="1s")
        c = h.RawClient(g.port, source="127.0.0.23")
        src = f"127.0.0.23:{c.sock.getsockname()[1]}"
        t.eq(c.connect(4, f"pp-out-{proto}"), 0, f"TARGET_PROXY_PROTOCOL + {proto}: CONNACK 0 through the upgrade")
        time.sleep(1.5)  # WS_PING_INTERVAL=1s: mgate pings the broker meanwhile
        c.close()
        hdr = h.wait_until(lambda: peer.headers[:1], 3.0)
        hdr = hdr[0] if hdr else {}
        t.check(hdr.get("sig") and hdr.get("src") == src,
                f"TARGET_PROXY_PROTOCOL + {proto}: the v2 header comes first, with the client's address", hdr)
        t.eq(hdr.get("upgrade"), "GET /mqtt HTTP/1.1", f"... then the upgrade to TARGET_PATH")
        t.eq(hdr.get("ws_frame"), (0x82, 0x80), "... then CONNECT in a masked binary frame")
        t.eq(h.wait_until(lambda: hdr.get("ws_next"), 2.0), (0x89, 0x80),
             f"WS_PING_INTERVAL=1s towards a {proto} broker: a masked ping")
        peer.stop()
        g.stop()


def main():
    h.need_binaries()
    t = h.Checks("proxy")
    with tempfile.TemporaryDirectory() as tmp:
        pki = h.Pki(tmp)
        broker = h.start_mosquitto(tmp)
        t.case("inbound", inbound, t, tmp, broker, pki)
        t.case("outbound", outbound, t, tmp, pki)
        t.case("outbound to a WebSocket broker", outbound_ws, t, tmp, pki)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
