#!/usr/bin/python3
"""The admin listener (MGATE_ADMIN_PORT): /metrics, /healthz, /readyz, scraped with curl.

Counters move as a real mosquitto_pub/sub run says they should (connections, CONNECT accepted and
refused by reason, packets and bytes by type and direction, PUBLISH refusals, handler verdicts);
/readyz turns 503 when the broker stops and 200 when it is back, and 503 while mgate drains, when
/healthz still answers 200.
"""
import re
import signal
import subprocess
import tempfile
import time

import harness as h


def curl(port, path, *args):
    r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args, f"http://{h.HOST}:{port}{path}"],
                       capture_output=True, text=True, timeout=10)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def metrics(port):
    code, body = curl(port, "/metrics")
    out = {}
    for line in body.splitlines():
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def run(t, tmp):
    broker = h.start_mosquitto(tmp)
    admin = h.free_port()
    g = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, MGATE_ADMIN_PORT=admin)
    code, body = curl(admin, "/healthz")
    t.eq((code, body), (200, "ok\n"), "/healthz: 200 ok")
    t.check(h.wait_until(lambda: curl(admin, "/readyz")[0] == 200, 3.0), "/readyz: 200 once the broker answered")
    code, body = curl(admin, "/metrics")
    t.check(code == 200 and "# TYPE mgate_connections gauge" in body, "/metrics: 200 in Prometheus text format")
    t.eq(curl(admin, "/nope")[0], 404, "an unknown path: 404")
    t.eq(curl(admin, "/metrics", "-X", "POST")[0], 405, "POST: 405")
    before = metrics(admin)

    sub = subprocess.Popen(["mosquitto_sub", "-h", h.HOST, "-p", str(g.port), "-t", "adm/#", "-q", "1", "-C", "10",
                            "-i", "adm-sub", "-W", "10"], stdout=subprocess.PIPE, text=True)
    h.register(sub)
    time.sleep(0.5)
    for i in range(10):
        subprocess.run(["mosquitto_pub", "-h", h.HOST, "-p", str(g.port), "-t", f"adm/{i}", "-m", "x" * 10,
                        "-q", "1", "-i", f"adm-pub-{i}"], check=True, timeout=10)
    out, _ = sub.communicate(timeout=15)
    t.eq(out.count("xxxxxxxxxx"), 10, "setup: the subscriber got the 10 messages through mgate")
    r = subprocess.run(["mosquitto_pub", "-h", h.HOST, "-p", str(g.port), "-t", "adm/x", "-m", "x", "-i", "deny-me"],
                       capture_output=True, timeout=10)
    t.check(r.returncode != 0, "setup: the example handler refuses client id deny-me")
    r = subprocess.run(["mosquitto_pub", "-V", "5", "-h", h.HOST, "-p", str(g.port), "-t", "forbidden/x", "-m", "x",
                        "-q", "1", "-i", "adm-forbidden"], capture_output=True, timeout=10)
    m = metrics(admin)

    def delta(name):
        return m.get(name, 0) - before.get(name, 0)
    L = '{listener="mqtt_without_tls"}'
    t.eq(delta("mgate_connections_total" + L), 13, "mgate_connections_total: 13 clients (1 sub, 10 pub, 2 more)")
    t.eq(m.get("mgate_connections" + L), 0, "mgate_connections: 0 open after they left")
    t.eq(delta("mgate_connect_accepted_total"), 12, "mgate_connect_accepted_total: 12")
    t.eq(delta('mgate_connect_refused_total{reason="0x87",by="mgate"}'), 1,
         "mgate_connect_refused_total{reason=0x87,by=mgate}: deny-me")
    t.eq(delta('mgate_packets_total{direction="client_to_broker",type="publish"}'), 11,
         "mgate_packets_total client_to_broker publish: 11 (10 + the refused one)")
    t.eq(delta('mgate_packets_total{direction="broker_to_client",type="publish"}'), 10,
         "mgate_packets_total broker_to_client publish: 10")
    t.eq(delta('mgate_packets_total{direction="client_to_broker",type="subscribe"}'), 1, "... subscribe: 1")
    t.eq(delta('mgate_packets_total{direction="broker_to_client",type="puback"}'), 10,
         "... broker_to_client puback: 10 (the refused PUBLISH was answered by mgate)")
    t.eq(delta('mgate_publish_refused_total{direction="client_to_broker"}'), 1,
         "mgate_publish_refused_total client_to_broker: 1 (forbidden/x)")
    t.check(delta('mgate_bytes_total{direction="client_to_broker"}') >= 10 * 10,
            "mgate_bytes_total client_to_broker counts at least the payloads")
    t.eq(delta('mgate_handler_verdict_seconds_count{call="auth_connect"}'), 13, "verdict histogram: 13 auth_connect")
    t.eq(delta('mgate_handler_verdict_seconds_count{call="auth_publish"}'), 11, "verdict histogram: 11 auth_publish")
    t.eq(m.get("mgate_ready"), 1, "mgate_ready 1")

    broker.stop()
    t0 = time.monotonic()
    t.check(h.wait_until(lambda: curl(admin, "/readyz")[0] == 503, 8.0),
            f"broker stopped: /readyz turns 503 ({time.monotonic() - t0:.1f} s)")
    t.check("unreachable" in curl(admin, "/readyz")[1], "... and says the broker is unreachable")
    t.check(g.log.search(r"readiness: the broker of mqtt_without_tls is unreachable") is not None, "... and logs it")
    c = h.RawClient(g.port)
    t.eq(c.connect(4, "adm-nobroker"), 3, "broker stopped: CONNACK 3")
    c.close()
    t.check(h.wait_until(lambda: metrics(admin).get("mgate_broker_dial_failures_total", 0) >= 1, 2.0),
            "mgate_broker_dial_failures_total counts it")
    broker = h.start_mosquitto(tmp, port=broker.port)
    t0 = time.monotonic()
    t.check(h.wait_until(lambda: curl(admin, "/readyz")[0] == 200, 8.0),
            f"broker back: /readyz 200 again ({time.monotonic() - t0:.1f} s)")

    held = h.raw_client(g.port, 4, "adm-held")  # 3.1.1: kept until the grace period ends
    g.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    t.eq(curl(admin, "/readyz")[0], 503, "draining: /readyz 503")
    t.eq(curl(admin, "/healthz")[0], 200, "draining: /healthz still 200")
    t.check(h.wait_until(lambda: g.proc.poll() is not None, 5.0), "mgate exits when the grace period ends")
    held.close()
    broker.stop()


def tls_counters(t, tmp):
    """mgate_tls_handshakes_total and mgate_tls_handshake_failures_total{reason}."""
    pki = h.Pki(tmp)
    broker = h.start_mosquitto(tmp)
    admin, port = h.free_ports(2)
    mtls = "MGATE_MQTT_WITH_MTLS_"
    h.Mgate(tmp, broker.port, MGATE_ADMIN_PORT=admin, **{
        mtls + "HOST": h.HOST, mtls + "PORT": port, mtls + "TARGET_HOST": h.HOST, mtls + "TARGET_PORT": broker.port,
        mtls + "CERT_FILE": pki["server.crt"], mtls + "KEY_FILE": pki["server.key"],
        mtls + "CLIENT_CA_FILE": pki["ca.crt"]})
    for name in ("client", "client", "unknown", None):
        try:
            c = h.RawClient(port, tls=pki.tls_context(name, version="1.2"))
            c.connect(4, f"adm-tls-{name}")
            c.close()
        except (OSError, TimeoutError):
            pass
    m = h.wait_until(lambda: (lambda x: x if x.get("mgate_tls_handshakes_total") == 2 else None)(metrics(admin)), 3.0)
    m = m or metrics(admin)
    t.eq(m.get("mgate_tls_handshakes_total"), 2, "mgate_tls_handshakes_total: the two good clients")
    t.eq(m.get('mgate_tls_handshake_failures_total{reason="unknown_ca"}'), 1, "... failures{reason=unknown_ca}: 1")
    t.eq(m.get('mgate_tls_handshake_failures_total{reason="no_certificate"}'), 1,
         "... failures{reason=no_certificate}: 1")
    broker.stop()


def main():
    h.need_binaries()
    t = h.Checks("admin")
    with tempfile.TemporaryDirectory() as tmp:
        t.case("admin", run, t, tmp)
        t.case("TLS counters", tls_counters, t, tmp)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
