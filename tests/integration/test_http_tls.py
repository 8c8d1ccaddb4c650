#!/usr/bin/python3
"""HTTPS and HTTPS with client certificates on the HTTP front end (MGATE_HTTP_WITH_TLS_*,
MGATE_HTTP_WITH_MTLS_*), with curl and examples/server/http-echo as the target: mgate's TLS module
ends TLS (the same certificate, client-CA and OCSP rules as the MQTT listeners), a revoked client
certificate is refused inside the handshake (OCSP, examples/server/ocsp/serve.py as the responder,
as in test_revocation.py) and never reaches the target, the verified certificate goes with the
session (USE_CN_AS_USERNAME), and keep-alive works over TLS.  And the other side: an https target
(TARGET_PROTOCOL=https, the echo serving TLS), verified with TARGET_CA_FILE, 502 when it cannot be.
"""
import json
import subprocess
import tempfile

import harness as h
from test_http import BASE, PREFIX, Echo, curl as plain_curl, gate

TLS = "MGATE_HTTP_WITH_TLS_"
MTLS = "MGATE_HTTP_WITH_MTLS_"


def curl(port, pki, path, *args, cert=None):
    argv = ["curl", "-s", "-S", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10", "--cacert", pki["ca.crt"]]
    if cert:
        argv += ["--cert", pki[f"{cert}.crt"], "--key", pki[f"{cert}.key"]]
    r = subprocess.run(argv + list(args) + [f"https://localhost:{port}{path}"], capture_output=True, text=True,
                       timeout=20)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body, r.stderr


def listener(prefix, port, echo, pki, **extra):
    env = {"HOST": h.HOST, "PORT": port, "PATH_PREFIX": PREFIX, "TARGET_HOST": h.HOST, "TARGET_PORT": echo.port,
           "TARGET_PATH": "/messages", "CERT_FILE": pki["server.crt"], "KEY_FILE": pki["server.key"]}
    env.update(extra)
    return {prefix + k: v for k, v in env.items()}


def run_cases(t, tmp, pki, echo):
    tls_port, mtls_port = h.free_ports(2)
    env = listener(TLS, tls_port, echo, pki)
    env.update(listener(MTLS, mtls_port, echo, pki, CLIENT_CA_FILE=pki["ca.crt"], CERT_VERIFICATION_METHODS="ocsp",
                        USE_CN_AS_USERNAME="true"))
    env["MGATE_MQTT_WITHOUT_TLS_PORT"] = None
    env["MGATE_HANDLER"] = "log"
    g = h.Mgate(tmp, 1, port=tls_port, **env)
    h.wait_port(mtls_port, 5.0, g.proc)

    st, body, err = curl(tls_port, pki, f"{BASE}/tls", "-H", "Authorization: T", "-d", "over-tls")
    e = json.loads(body) if st == 200 else {}
    t.eq((st, e.get("body"), e.get("headers", {}).get("X-Forwarded-Proto")), (200, "over-tls", "https"),
         "HTTPS: 200, the body forwarded, X-Forwarded-Proto https")
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects} ", "--cacert",
                        pki["ca.crt"], "-d", "a", f"https://localhost:{tls_port}{BASE}/k1", "-d", "b",
                        f"https://localhost:{tls_port}{BASE}/k2"], capture_output=True, text=True, timeout=20)
    t.eq(r.stdout.split(), ["1", "0"], "HTTPS keep-alive: the second request reuses the connection")

    mark = g.log.mark()
    st, body, err = curl(mtls_port, pki, f"{BASE}/mtls", "-d", "with-cert", cert="client")
    t.eq(st, 200, "mTLS with a good certificate (OCSP good): 200")
    cn = pki.cn("client.crt")
    lines = [j for j in g.json_since(mark) if "auth_connect" in j.get("msg", "")]
    t.check(any(j.get("username") == cn for j in lines) or any(cn in json.dumps(j) for j in lines),
            f"USE_CN_AS_USERNAME: auth_connect sees the certificate's CN {cn!r} as the username",
            str(lines)[:400])

    before = echo.stats()
    mark = g.log.mark()
    st, _, err = curl(mtls_port, pki, f"{BASE}/revoked", "-d", "x", cert="revoked")
    t.eq(st, 0, "mTLS with a revoked certificate: no HTTP answer (the handshake fails)")
    line = h.wait_until(lambda: [j for j in g.json_since(mark) if j.get("msg") == "TLS handshake failed"], 3.0)
    t.check(line and "revoked" in line[0].get("error", ""), "mgate logs the handshake failure: certificate revoked",
            str(line)[:300])
    st, _, err = curl(mtls_port, pki, f"{BASE}/nocert", "-d", "x")
    t.eq(st, 0, "mTLS without a certificate: no HTTP answer")
    after = echo.stats()
    before.pop("/stats", None)
    after.pop("/stats", None)
    t.check(after.get("/messages/revoked") is None and after.get("/messages/nocert") is None and before == after,
            "neither reached the target", str(after))
    st, _, err = curl(mtls_port, pki, f"{BASE}/again", "-d", "x", cert="client")
    t.eq(st, 200, "the good certificate still gets in afterwards")
    t.check(g.alive(), "mgate still runs")


def https_target(t, tmp, pki):
    echo = Echo(tmp, pki)
    port = echo.port
    g = gate(tmp, port, TARGET_PROTOCOL="https", TARGET_CA_FILE=pki["ca.crt"], MGATE_HANDLER="log")
    st, body, _ = plain_curl(g.port, f"{BASE}/to-https?q=1", "-H", "Authorization: T", "-d", "over-https")
    e = json.loads(body) if st == 200 else {}
    t.eq((st, e.get("path"), e.get("query"), e.get("body")), (200, "/messages/to-https", "q=1", "over-https"),
         "TARGET_PROTOCOL https: 200, path, query and body reached the target over TLS")
    st, body, _ = plain_curl(g.port, f"{BASE}/stream?n=3&ms=10", "-H", "Authorization: T")
    t.eq((st, body.count("chunk")), (200, 3), "https target: a chunked answer streams back whole")
    untrusted = gate(tmp, port, TARGET_PROTOCOL="https", MGATE_HANDLER="log")  # the system's CAs only
    st, body, _ = plain_curl(untrusted.port, f"{BASE}/to-https", "-H", "Authorization: T", "-d", "x")
    t.eq(st, 502, "an https target whose certificate cannot be verified: 502")
    t.check(g.alive() and untrusted.alive(), "mgate still runs")
    echo.stop()


def main():
    h.need_binaries()
    t = h.Checks("http_tls")
    with tempfile.TemporaryDirectory() as tmp:
        pki = h.Pki(tmp)
        h.Responder.root(tmp, pki)
        echo = Echo(tmp)
        t.case("HTTPS and mTLS", run_cases, t, tmp, pki, echo)
        t.case("an https target", https_target, t, tmp, pki)
        rc = h.finish(t)
        echo.stop()
        return rc


if __name__ == "__main__":
    h.run_main(main)
