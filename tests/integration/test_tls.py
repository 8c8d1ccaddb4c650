#!/usr/bin/python3
"""TLS and mTLS listeners with the real mosquitto clients and openssl s_client.

Certificates are made here with the openssl CLI: a CA, a server certificate
for localhost, a client certificate, and a client certificate from another CA.
"""
import os
import subprocess
import sys
import tempfile

import harness as h


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_certs(d):
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
                "-subj", f"/CN={ca}", cwd=d)

    def leaf(name, cn, ca, ext=None):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
                *(["-addext", ext] if ext else []), cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-copy_extensions", "copy", cwd=d)

    leaf("server", "localhost", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    leaf("client", "dev00001", "ca")
    leaf("stranger", "dev00002", "other-ca")
    return {n: os.path.join(d, n) for n in
            ("ca.crt", "server.crt", "server.key", "client.crt", "client.key", "stranger.crt", "stranger.key")}


def tls_env(prefix, port, broker_port, certs, mtls):
    env = {f"{prefix}HOST": h.HOST, f"{prefix}PORT": port, f"{prefix}TARGET_HOST": h.HOST,
           f"{prefix}TARGET_PORT": broker_port, f"{prefix}CERT_FILE": certs["server.crt"],
           f"{prefix}KEY_FILE": certs["server.key"]}
    if mtls:
        env[f"{prefix}CLIENT_CA_FILE"] = certs["ca.crt"]
    return env


def pub_sub(port, what, tls_args):
    """A subscriber and a publisher through the listener; True when the message arrives."""
    topic = f"tls/{what.replace(' ', '-')}"
    sub = subprocess.Popen(["mosquitto_sub", "-h", "localhost", "-p", str(port), *tls_args, "-t", topic,
                            "-C", "1", "-W", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    h.register(sub)
    # mosquitto_sub prints nothing when it has subscribed: give it a moment,
    # and it must still be running (a failed handshake ends it at once).
    ok = not h.wait_until(lambda: sub.poll() is not None, 0.5)
    pub = subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(port), *tls_args, "-t", topic,
                          "-m", what, "-q", "1"], capture_output=True, text=True, timeout=10)
    out, _ = sub.communicate(timeout=10)
    return ok and pub.returncode == 0 and out.strip() == what


def refused(port, tls_args):
    r = subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(port), *tls_args, "-t", "x", "-m", "x"],
                       capture_output=True, text=True, timeout=10)
    return r.returncode != 0


def eof_without_close_notify(t, m, port, certs):
    """A client that ends its TCP connection without a TLS close_notify (Python's ssl, many device
    stacks): OpenSSL 3 reports "unexpected eof while reading"; it is the client closing, as on a
    plain socket, not a TLS failure (which the log said was "logged above" while nothing was)."""
    import ssl  # noqa: PLC0415
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs["ca.crt"])
    mark = m.log.mark()
    c = h.RawClient(port, tls=ctx)
    t.eq(c.connect(4, "eof-no-close-notify"), 0, "no close_notify: CONNACK 0 over TLS")
    c.sock.close()  # Python sends no close_notify: the TCP FIN comes alone
    line = m.log.wait(r'"closing: [^"]*".*"client_id":"eof-no-close-notify"', 5.0, mark)
    t.check(line is not None, "no close_notify: mgate logs why the session ended")
    if line:
        t.check('"closing: client closed"' in line.group(0),
                "no close_notify: the session ends as \"client closed\", not as a TLS failure", line.group(0))
    t.eq([j for j in m.json_since(mark) if j.get("level") in ("warn", "error")], [],
         "no close_notify: no warning or error logged")

    # A record that does not decrypt, past the handshake: a TLS failure, and the line the session's
    # "TLS failure (logged above)" points to is there.
    import socket  # noqa: PLC0415
    mark = m.log.mark()
    c = h.RawClient(port, tls=ctx)
    t.eq(c.connect(4, "bad-record"), 0, "bad record: CONNACK 0 over TLS")
    peer = "127.0.0.1:%d" % c.sock.getsockname()[1]
    raw = socket.socket(fileno=os.dup(c.sock.fileno()))
    raw.sendall(b"\x17\x03\x03\x00\x20" + os.urandom(32))  # application data nobody encrypted
    line = m.log.wait(r'"closing: [^"]*".*"client_id":"bad-record"', 5.0, mark)
    t.check(line is not None and "TLS failure" in line.group(0),
            "bad record: the session ends as a TLS failure", line and line.group(0))
    errs = [j for j in m.json_since(mark) if j.get("msg") == "TLS error" and j.get("peer") == peer]
    t.check(len(errs) == 1 and errs[0].get("error"), "bad record: one \"TLS error\" line with the peer and "
            "OpenSSL's reason", str(m.json_since(mark))[-600:])
    raw.close()
    c.close()


def main():
    h.need_binaries()
    t = h.Checks("tls")
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(tmp)
        broker = h.start_mosquitto(tmp)
        tls_port, mtls_port = h.free_port(), h.free_port()
        env = {**tls_env("MGATE_MQTT_WITH_TLS_", tls_port, broker.port, certs, False),
               **tls_env("MGATE_MQTT_WITH_MTLS_", mtls_port, broker.port, certs, True)}
        m = h.Mgate(tmp, broker.port, wait=False, **env)
        h.wait_port(tls_port, 5.0, m.proc)
        h.wait_port(mtls_port, 5.0, m.proc)

        ca = ["--cafile", certs["ca.crt"]]
        good = ca + ["--cert", certs["client.crt"], "--key", certs["client.key"]]
        stranger = ca + ["--cert", certs["stranger.crt"], "--key", certs["stranger.key"]]

        t.section("TLS listener")
        t.check(pub_sub(tls_port, "over TLS", ca), "mosquitto_pub/sub over TLS through mgate")
        mark = broker.log.mark()
        t.check(refused(tls_port, []), "a plain MQTT client on the TLS port gets no session")
        t.check(not broker.log.search("New client connected", mark), "and the broker never saw it")
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_port}", "-tls1_1"],
                           input="", capture_output=True, text=True, timeout=10)
        t.check("Cipher is (NONE)" in r.stdout or r.returncode != 0, "TLS 1.1 is refused (minimum 1.2)")
        eof_without_close_notify(t, m, tls_port, certs)

        t.section("mTLS listener")
        t.check(pub_sub(mtls_port, "over mTLS", good), "a client certificate from the CA passes")
        mark, log_mark = broker.log.mark(), m.log.mark()
        t.check(refused(mtls_port, ca), "no client certificate: refused")
        t.check(refused(mtls_port, stranger), "a certificate from an unknown CA: refused")
        t.check(not broker.log.search("New client connected", mark), "the broker never saw the refused clients")
        t.check(m.log.wait("peer did not return a certificate", 3.0, log_mark) is not None,
                "the missing certificate is logged with its reason")
        t.check(m.log.wait("TLS handshake failed.*certificate", 3.0, log_mark) is not None,
                "the unknown CA is logged")
        t.check(m.alive(), "mgate is still running")
        t.check(m.stop() == 0, "mgate exits 0 on SIGTERM")

        t.section("bad TLS configuration")
        bad = dict(env, MGATE_MQTT_WITH_TLS_CERT_FILE=os.path.join(tmp, "missing.crt"))
        r = subprocess.run([h.MGATE_BIN], env=h.mgate_env(h.free_port(), broker.port, **bad), cwd=tmp,
                           capture_output=True, text=True, timeout=10)
        t.eq(r.returncode, 2, "a missing CERT_FILE exits 2")
        t.check("MGATE_MQTT_WITH_TLS_CERT_FILE" in r.stderr, "and names the variable", r.stderr.strip())
        bad = dict(env, MGATE_MQTT_WITH_MTLS_KEY_FILE=certs["client.key"])
        r = subprocess.run([h.MGATE_BIN], env=h.mgate_env(h.free_port(), broker.port, **bad), cwd=tmp,
                           capture_output=True, text=True, timeout=10)
        t.eq(r.returncode, 2, "a key that does not match the certificate exits 2")
        t.check("MGATE_MQTT_WITH_MTLS_KEY_FILE" in r.stderr, "and names the variable", r.stderr.strip())
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
