#!/usr/bin/python3
"""TLS from mgate to the broker (TARGET_PROTOCOL=mqtts, and wss:// brokers: the same TLS, then the WebSocket upgrade).

mosquitto gets two TLS listeners on 127.0.0.1 with server.crt from ssl/gen.sh: one that asks for
nothing, one that requires a client certificate from ca.crt; and the same two as WebSocket
listeners (wss). mgate's plain listener forwards to them over TLS, with the same settings and
the same outcomes whichever code speaks TLS. A broker that cannot be verified (wrong TARGET_CA_FILE, wrong TARGET_SERVER_NAME)
is a broker that cannot be reached: CONNACK 3 (3.1.1) / 0x88 (5.0), and the log says why.
"""
import os
import subprocess
import tempfile

import harness as h


class TlsBroker(h.Broker):
    """mosquitto with its plain listener plus two TLS listeners (tls_port, mtls_port) and two
    wss listeners (wss_port, wss_mtls_port)."""

    def __init__(self, tmp, pki):
        os.chmod(tmp, 0o711)  # mosquitto reads the certificates after dropping to user mosquitto
        files = os.path.join(tmp, "mosquitto-tls")
        ca, crt, key = (h.readable_copy(pki[n], files) for n in ("ca.crt", "server.crt", "server.key"))
        self.tls_port, self.mtls_port, self.wss_port, self.wss_mtls_port = h.free_ports(4)
        tls = f"cafile {ca}\ncertfile {crt}\nkeyfile {key}\n"
        ws = "protocol websockets\nsocket_domain ipv4\n"
        conf = (f"listener {self.tls_port} {h.HOST}\n{tls}"
                f"listener {self.mtls_port} {h.HOST}\n{tls}require_certificate true\n"
                f"listener {self.wss_port} {h.HOST}\n{ws}{tls}"
                f"listener {self.wss_mtls_port} {h.HOST}\n{ws}{tls}require_certificate true\n")
        super().__init__(tmp, conf)
        for p in (self.tls_port, self.mtls_port, self.wss_port, self.wss_mtls_port):
            h.wait_port(p, 5.0, self.proc)


def upstream_gate(tmp, port, protocol="mqtts", **settings):
    env = {"MGATE_MQTT_WITHOUT_TLS_TARGET_PROTOCOL": protocol, "MGATE_MQTT_WITHOUT_TLS_TARGET_PATH": "/mqtt"}
    env.update({"MGATE_MQTT_WITHOUT_TLS_" + k: v for k, v in settings.items()})
    return h.Mgate(tmp, port, **env)


def why_logged(g, since):
    """A warn/error line after since that speaks of the certificate or its verification."""
    for j in g.json_since(since):
        text = " ".join(str(v) for v in j.values()).lower()
        if j.get("level") in ("warn", "error") and ("certificate" in text or "verif" in text):
            return j
    return None


def unreachable(t, g, broker, what):
    """The client gets CONNACK 3 (3.1.1) and 0x88 (5.0); the broker never sees it; mgate says why."""
    mark, bmark = g.log.mark(), broker.log.mark()
    c = h.RawClient(g.port)
    code = c.connect(4, f"up-{g.port}-v4")
    c.close()
    t.eq(code, 3, f"{what}: CONNACK 3 (server unavailable) for 3.1.1")
    c = h.RawClient(g.port)
    code = c.connect(5, f"up-{g.port}-v5")
    c.close()
    t.eq(code, 0x88, f"{what}: CONNACK 0x88 for 5.0")
    t.check(not broker.saw_client(f"up-{g.port}-v4", bmark), f"{what}: the broker never saw a session")
    line = h.wait_until(lambda: why_logged(g, mark), 3.0)
    t.check(line is not None, f"{what}: mgate logs a warning/error about the broker's certificate",
            g.log.text(mark)[-400:])
    t.check(g.alive(), f"{what}: mgate still runs")


def pub_sub_through(t, g, broker, what):
    bmark = broker.log.mark()
    sub = h.raw_client(g.port, 4, f"up-sub-{g.port}")
    t.eq(sub.subscribe(1, [("up/t", 1)]), [1], f"{what}: a subscriber through mgate subscribes")
    pub = h.raw_client(g.port, 5, f"up-pub-{g.port}")
    t.eq(pub.publish_wait("up/t", b"over mqtts", 1, 7), 0, f"{what}: a v5 publisher gets PUBACK 0")
    try:
        got = sub.recv_publish(3.0).payload
    except (TimeoutError, h.Closed) as e:
        got = repr(e)
    t.eq(got, b"over mqtts", f"{what}: the subscriber gets the message")
    t.check(broker.saw_client(f"up-sub-{g.port}", bmark), f"{what}: the broker saw the session")
    sub.close()
    pub.close()


def scenarios(t, tmp, pki, broker, proto):
    tls_port, mtls_port = (broker.tls_port, broker.mtls_port) if proto == "mqtts" else \
        (broker.wss_port, broker.wss_mtls_port)

    def good(what, port, **settings):
        g = upstream_gate(tmp, port, proto, **settings)
        pub_sub_through(t, g, broker, what)

    def bad(what, port, **settings):
        g = upstream_gate(tmp, port, proto, **settings)
        unreachable(t, g, broker, what)

    def no_client_cert():
        g = upstream_gate(tmp, mtls_port, proto, TARGET_CA_FILE=pki["ca.crt"])
        bmark = broker.log.mark()
        c = h.RawClient(g.port)
        code = c.connect(4, "up-nocert")
        c.close()
        t.eq(code, 3, f"{proto}: broker requiring a client certificate, none configured: CONNACK 3")
        t.check(not broker.saw_client("up-nocert", bmark), "... and the broker never saw a session")

    ca, other = pki["ca.crt"], pki["unknown-ca.crt"]
    t.case(f"{proto}: TARGET_CA_FILE=ca.crt", good, f"{proto} with TARGET_CA_FILE=ca.crt", tls_port, TARGET_CA_FILE=ca)
    t.case(f"{proto}: TARGET_SERVER_NAME=localhost", good, f"{proto} with TARGET_SERVER_NAME=localhost", tls_port,
           TARGET_CA_FILE=ca, TARGET_SERVER_NAME="localhost")
    t.case(f"{proto}: wrong TARGET_CA_FILE", bad, f"{proto}: TARGET_CA_FILE=unknown-ca.crt", tls_port, TARGET_CA_FILE=other)
    t.case(f"{proto}: wrong TARGET_SERVER_NAME", bad, f"{proto}: TARGET_SERVER_NAME not in the broker's certificate", tls_port,
           TARGET_CA_FILE=ca, TARGET_SERVER_NAME="not-this-broker.test")
    t.case(f"{proto}: TARGET_TLS_VERIFY=false", good, f"{proto}: TARGET_TLS_VERIFY=false with the wrong CA", tls_port,
           TARGET_CA_FILE=other, TARGET_TLS_VERIFY="false")
    t.case(f"{proto}: TARGET_CERT_FILE", good, f"{proto}: broker requiring a client certificate, TARGET_CERT_FILE=client.crt",
           mtls_port, TARGET_CA_FILE=ca, TARGET_CERT_FILE=pki["client.crt"], TARGET_KEY_FILE=pki["client.key"])
    t.case(f"{proto}: no TARGET_CERT_FILE", no_client_cert)


def main():
    h.need_binaries()
    t = h.Checks("tls_upstream")
    with tempfile.TemporaryDirectory() as tmp:
        pki = h.Pki(tmp)
        broker = TlsBroker(tmp, pki)
        r = h.s_client(broker.tls_port, "-CAfile", pki["ca.crt"], "-verify_return_error")
        t.check(r.returncode == 0 and "Verify return code: 0" in r.out, "setup: mosquitto's TLS listener speaks TLS")
        r = subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(broker.mtls_port), *pki.mosq_args("client"),
                              "-t", "setup", "-m", "x", "-q", "1"], capture_output=True, text=True, timeout=10)
        t.check(r.returncode == 0, "setup: mosquitto's mTLS listener takes client.crt", r.stderr.strip())
        r = subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(broker.mtls_port), *pki.mosq_args(None),
                              "-t", "setup", "-m", "x", "-q", "1"], capture_output=True, text=True, timeout=10)
        t.check(r.returncode != 0, "setup: ... and refuses a client without a certificate")
        scenarios(t, tmp, pki, broker, "mqtts")
        scenarios(t, tmp, pki, broker, "wss")
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
