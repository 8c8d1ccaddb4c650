#!/usr/bin/python3
"""Revocation checks of client certificates on the mTLS listener: OCSP (from the certificate's AIA
and from OCSP_RESPONDER_URL), CRLs (distribution point, CRL_DISTRIBUTION_POINTS, OFFLINE_CRL_FILE),
fail-closed and soft-fail, a hung responder with REVOCATION_TIMEOUT (the worker's loop must keep
serving others meanwhile), and the OCSP answer cache.

The PKI comes from ssl/gen.sh with this test's ports in its AIA/CDP URLs; the responders and
the CRL file server are examples/server/ocsp/serve.py (reqin mode, 127.0.0.1 only). Each case
starts its own mgate, so no answer cached by one case helps another.

Alerts are checked over TLS 1.2, where the server judges the client certificate inside the
handshake and the client is sure to read the alert; everything else runs with the clients'
default (TLS 1.3).
"""
import os
import shutil
import subprocess
import tempfile
import threading
import time

import harness as h

MTLS = "MGATE_MQTT_WITH_MTLS_"


def alert_of(pki, port, name):
    """The error a TLS 1.2 client presenting NAME gets (the alert text), "" when none."""
    code, err, c = h.tls_mqtt(port, pki.tls_context(name, version="1.2"), f"alert-{name}")
    if c:
        c.close()
    return err if code is None else f"CONNACK {code}"


def expect_refused(t, pki, broker, g, name, error_has, what, alert=None):
    """NAME is refused: mosquitto_pub fails, the broker never sees the client, mgate logs one
    "TLS handshake failed" line with the error, the certificate's CN and serial."""
    mark, bmark = g.log.mark(), broker.log.mark()
    cid = f"refused-{name}-{g.tls_port}"
    rc, err = h.mosq_pub(g.tls_port, pki.mosq_args(name), cid)
    t.check(rc != 0, f"{what}: mosquitto_pub with {name}.crt fails", f"exit {rc}")
    t.check(not broker.saw_client(cid, bmark), f"{what}: the broker never saw the {name} client")
    leaf = name[:-len("-chain")] if name.endswith("-chain") else name
    cn = pki.cn(f"{leaf}.crt")
    line = g.wait_failure(mark, 3.0, cn=cn)
    t.check(line is not None, f"{what}: mgate logs \"TLS handshake failed\" with cn {cn!r}",
            str(g.handshake_failures(mark))[:400])
    if line:
        t.check(error_has in line.get("error", ""), f"{what}: its error says {error_has!r}", line.get("error"))
        t.check(str(line.get("serial", "")).lower() == pki.serial(f"{leaf}.crt").lower(),
                f"{what}: its serial is {pki.serial(leaf + '.crt')}", f"got {line.get('serial')!r}")
    if alert:
        got = alert_of(pki, g.tls_port, name)
        t.check(alert in got, f"{what}: a TLS 1.2 client gets the alert {alert!r}", got)
    return line


def expect_passes(t, pki, broker, g, name, what):
    t.eq(h.mosq_pub_sub(g.tls_port, broker, pki.mosq_args(name), what), "",
         f"{what}: mosquitto_sub/pub with {name}.crt through mgate")


# ---------------------------------------------------------------------------


def setup_checks(t, tmp, pki, broker, root, inter, files):
    """The pieces work before mgate is involved, so a failure below is mgate's."""
    t.eq(pki.ocsp_status("client.crt"), "good", "setup: the root responder says client.crt is good")
    t.eq(pki.ocsp_status("revoked.crt"), "revoked", "setup: ... revoked.crt is revoked")
    t.eq(pki.ocsp_status("unlisted.crt"), "unknown", "setup: ... unlisted.crt is unknown")
    t.eq(pki.ocsp_status("int-client.crt", "int-ca.crt", pki.int_responder_url), "good",
         "setup: the intermediate's responder says int-client.crt is good")
    r = h.openssl_out("x509", "-in", pki["client.crt"], "-noout", "-ext", "authorityInfoAccess,crlDistributionPoints")
    t.check(pki.responder_url in r.stdout and f"{pki.files_url}/crl.der" in r.stdout,
            "setup: client.crt's AIA and CDP name this test's ports", r.stdout.strip())
    import urllib.request  # noqa: PLC0415
    with urllib.request.urlopen(f"{pki.files_url}/crl.der", timeout=5) as resp:
        der = resp.read()
    r = subprocess.run(["openssl", "crl", "-inform", "DER", "-noout", "-text"], input=der, capture_output=True,
                         timeout=10)
    t.check(b"Serial Number: 1003" in r.stdout, "setup: the file server serves crl.der, which lists 1003")

    # Without revocation checks the same listener takes revoked.crt: a refusal below is the check.
    g = h.TlsGate(tmp, broker.port, pki)
    expect_passes(t, pki, broker, g, "client", "no checks")
    expect_passes(t, pki, broker, g, "revoked", "no checks, revoked.crt")


def ocsp_aia(t, tmp, pki, broker, root, inter):
    g = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="ocsp")
    rm, im = root.log.mark(), inter.log.mark()
    expect_passes(t, pki, broker, g, "client", "OCSP via AIA, good")
    t.check(root.ocsp_requests(rm) >= 1, "OCSP via AIA: the root responder named in the AIA was asked",
            f"{root.ocsp_requests(rm)} requests")
    expect_refused(t, pki, broker, g, "revoked", "certificate revoked", "OCSP via AIA, revoked",
                   alert="alert certificate revoked")
    r = h.s_client(g.tls_port, "-tls1_2", "-CAfile", pki["ca.crt"], "-cert", pki["revoked.crt"],
                   "-key", pki["revoked.key"])
    t.check("alert certificate revoked" in r.out or "alert number 44" in r.out,
            "OCSP via AIA, revoked: openssl s_client -tls1_2 reports alert 44 (certificate revoked)", r.out[-300:])
    expect_refused(t, pki, broker, g, "unlisted", "unknown", "OCSP via AIA, unlisted (status unknown)")
    im = inter.log.mark()
    expect_passes(t, pki, broker, g, "int-client-chain", "OCSP via AIA, device under the intermediate")
    t.check(inter.ocsp_requests(im) >= 1, "OCSP via AIA: the intermediate's responder was asked for int-client",
            f"{inter.ocsp_requests(im)} requests")
    expect_refused(t, pki, broker, g, "int-revoked-chain", "certificate revoked",
                   "OCSP via AIA, revoked under the intermediate")
    t.check(g.alive(), "OCSP via AIA: mgate still runs")


def ocsp_override(t, tmp, pki, broker, root):
    """OCSP_RESPONDER_URL: a second root responder on another port; the one in the AIA must not be asked."""
    port = h.free_port()
    other = h.Responder.root(tmp, pki, port=port, name="root-override")
    g = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="ocsp",
                  OCSP_RESPONDER_URL=f"http://{h.HOST}:{port}/ocsp")
    rm, om = root.log.mark(), other.log.mark()
    expect_passes(t, pki, broker, g, "client", "OCSP_RESPONDER_URL, good")
    expect_refused(t, pki, broker, g, "revoked", "certificate revoked", "OCSP_RESPONDER_URL, revoked",
                   alert="alert certificate revoked")
    t.check(other.ocsp_requests(om) >= 2, "OCSP_RESPONDER_URL: the configured responder answered",
            f"{other.ocsp_requests(om)} requests")
    t.eq(root.ocsp_requests(rm), 0, "OCSP_RESPONDER_URL: the AIA's responder was not asked")


def ocsp_cache(t, tmp, pki, broker, root):
    def two_sessions(g, tag):
        codes = []
        for i in range(2):
            code, err, c = h.tls_mqtt(g.tls_port, pki.tls_context("client"), f"cache-{tag}-{i}")
            codes.append(code if code is not None else err)
            if c:
                c.disconnect()
                c.close()
        return codes

    g = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="ocsp")
    rm = root.log.mark()
    t.eq(two_sessions(g, "nmin60"), [0, 0], "OCSP cache: two sessions with client.crt pass")
    t.eq(root.ocsp_requests(rm), 1, "OCSP cache: answers with a nextUpdate: one OCSP request for both")

    port = h.free_port()
    nonext = h.Responder.root(tmp, pki, port=port, nmin=0, name="root-nmin0")
    t.check("Next Update" not in h.openssl_out("ocsp", "-issuer", pki["ca.crt"], "-cert", pki["client.crt"], "-url",
                                                f"http://{h.HOST}:{port}/ocsp", "-CAfile", pki["ca.crt"],
                                                "-resp_text", timeout=15).stdout,
            "setup: the OCSP_NMIN=0 responder's answers carry no nextUpdate")
    g2 = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="ocsp",
                   OCSP_RESPONDER_URL=f"http://{h.HOST}:{port}/ocsp")
    nm = nonext.log.mark()
    t.eq(two_sessions(g2, "nmin0"), [0, 0], "OCSP without nextUpdate: two sessions pass")
    t.eq(nonext.ocsp_requests(nm), 2, "OCSP without nextUpdate: each session asks again (2 requests)")

    # A resumed TLS session would skip the certificate, and so its revocation check: a listener
    # with revocation checks offers no resumption (TLS 1.3 tickets or 1.2 session ids).
    for version in ("-tls1_3", "-tls1_2"):
        sess = os.path.join(tmp, f"session{version}.pem")
        args = ("-cert", pki["client.crt"], "-key", pki["client.key"], "-CAfile", pki["ca.crt"], version)
        first = h.s_client(g.tls_port, "-sess_out", sess, *args)
        again = h.s_client(g.tls_port, "-sess_in", sess, *args) if os.path.exists(sess) else first
        t.check("Verification: OK" in first.out or "Verify return code: 0" in first.out,
                f"resumption {version}: the first connection is a full handshake that passes", first.out[-300:])
        t.check("Reused," not in again.out, f"resumption {version}: a second connection is not resumed",
                again.out[-300:])


def ocsp_intermediate_revoked(t, tmp, pki, broker, root_index):
    """The root responder's index becomes index-int-revoked.txt: the intermediate CA is revoked."""
    saved = root_index + ".saved"
    shutil.copyfile(root_index, saved)
    shutil.copyfile(pki["index-int-revoked.txt"], root_index)
    try:
        t.eq(pki.ocsp_status("int-ca.crt"), "revoked", "setup: the root responder now says int-ca.crt is revoked")
        g0 = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="ocsp", OCSP_DEPTH=0)
        mark, bmark = g0.log.mark(), broker.log.mark()
        rc, _ = h.mosq_pub(g0.tls_port, pki.mosq_args("int-client-chain"), "intrev-depth0")
        t.check(rc != 0, "OCSP_DEPTH=0, intermediate revoked: int-client-chain.crt is refused", f"exit {rc}")
        t.check(not broker.saw_client("intrev-depth0", bmark), "OCSP_DEPTH=0: the broker never saw it")
        line = g0.wait_failure(mark, 3.0)
        t.check(line is not None and "certificate revoked" in line.get("error", ""),
                "OCSP_DEPTH=0: mgate logs the handshake failure as \"certificate revoked\"", str(line))
        g1 = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="ocsp", OCSP_DEPTH=1)
        expect_passes(t, pki, broker, g1, "int-client-chain", "OCSP_DEPTH=1 (leaf only), intermediate revoked")
    finally:
        shutil.copyfile(saved, root_index)


def crl_cdp(t, tmp, pki, broker, files):
    g = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="crl")
    fm = files.log.mark()
    expect_passes(t, pki, broker, g, "client", "CRL via CDP (DER), good")
    t.check(files.downloads("/crl.der", fm) >= 1, "CRL via CDP: mgate downloaded crl.der from the certificate's CDP",
            files.log.text(fm)[-300:])
    expect_refused(t, pki, broker, g, "revoked", "certificate revoked", "CRL via CDP, revoked",
                   alert="alert certificate revoked")
    expect_passes(t, pki, broker, g, "unlisted", "CRL via CDP, unlisted (on no CRL: passes with crl only)")


def crl_override(t, tmp, pki, broker, files):
    g = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="crl",
                  CRL_DISTRIBUTION_POINTS=f"{pki.files_url}/crl.pem",
                  CRL_DISTRIBUTION_POINTS_ISSUER_CERT_FILE=pki["ca.crt"])
    fm = files.log.mark()
    expect_passes(t, pki, broker, g, "client", "CRL_DISTRIBUTION_POINTS (PEM over HTTP), good")
    expect_refused(t, pki, broker, g, "revoked", "certificate revoked", "CRL_DISTRIBUTION_POINTS, revoked")
    t.check(files.downloads("/crl.pem", fm) >= 1, "CRL_DISTRIBUTION_POINTS: mgate downloaded the configured URL",
            files.log.text(fm)[-300:])
    t.eq(files.downloads("/crl.der", fm), 0, "CRL_DISTRIBUTION_POINTS: the certificate's own CDP was not used")

    g2 = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="crl",
                   CRL_DISTRIBUTION_POINTS=f"{pki.files_url}/crl-expired.der",
                   CRL_DISTRIBUTION_POINTS_ISSUER_CERT_FILE=pki["ca.crt"])
    expect_refused(t, pki, broker, g2, "client", "CRL has expired", "served CRL past its nextUpdate")


def crl_offline(t, tmp, pki, broker):
    """No file server runs any more (the CDP port is closed): OFFLINE_CRL_FILE alone decides."""
    for fmt, crl in (("PEM", pki["crl.pem"]), ("DER", os.path.join(pki["www"], "crl.der"))):
        g = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="crl", OFFLINE_CRL_FILE=crl,
                      OFFLINE_CRL_ISSUER_CERT_FILE=pki["ca.crt"])
        expect_passes(t, pki, broker, g, "client", f"OFFLINE_CRL_FILE ({fmt}), good, no server")
        expect_refused(t, pki, broker, g, "revoked", "certificate revoked", f"OFFLINE_CRL_FILE ({fmt}), revoked")
    g = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="crl", OFFLINE_CRL_FILE=pki["crl-expired.pem"],
                  OFFLINE_CRL_ISSUER_CERT_FILE=pki["ca.crt"])
    expect_refused(t, pki, broker, g, "client", "CRL has expired", "OFFLINE_CRL_FILE past its nextUpdate")


def fail_closed(t, tmp, pki, broker):
    """Runs after the file server stopped: the CDP in the certificates names a closed port."""
    closed = f"http://{h.HOST}:{h.free_port()}/ocsp"
    g = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="ocsp", OCSP_RESPONDER_URL=closed)
    expect_refused(t, pki, broker, g, "client", "unavailable", "OCSP responder port closed")
    g = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="crl")
    expect_refused(t, pki, broker, g, "client", "unavailable", "CRL distribution point port closed")

    g = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="ocsp", OCSP_RESPONDER_URL=closed,
                  REVOCATION_SOFT_FAIL="true")
    mark = g.log.mark()
    expect_passes(t, pki, broker, g, "client", "REVOCATION_SOFT_FAIL=true, responder port closed")
    warn = h.wait_until(lambda: [j for j in g.json_since(mark) if j.get("level") == "warn"
                                 and "unavailable" in json_text(j)], 3.0)
    t.check(bool(warn), "REVOCATION_SOFT_FAIL=true: a warning says the status was unavailable",
            str(g.json_since(mark))[-400:])


def json_text(j):
    return " ".join(str(v) for v in j.values())


def slow_responder(t, tmp, pki, broker):
    """A responder that accepts and never answers, REVOCATION_TIMEOUT=500ms: refused in about half a
    second, and meanwhile a client of the plain listener of the same mgate (one worker) is served
    without delay."""
    silent = h.SilentServer()
    try:
        g = h.TlsGate(tmp, broker.port, pki, CERT_VERIFICATION_METHODS="ocsp", OCSP_RESPONDER_URL=silent.url,
                      REVOCATION_TIMEOUT="500ms", glob={"MGATE_WORKERS": "1"})
        sub = h.raw_client(g.port, 4, "slow-sub")
        t.eq(sub.subscribe(1, ["slow/t"]), [0], "slow responder: a plain-listener subscriber subscribed")
        pub = h.raw_client(g.port, 4, "slow-pub")
        # warm-up: the plain path works before the slow handshake starts
        pub.publish("slow/t", b"warm")
        t.eq(sub.recv_publish(3.0).payload, b"warm", "slow responder: plain path delivers before")

        bmark, mark = broker.log.mark(), g.log.mark()
        result = {}

        def attempt():
            t0 = time.monotonic()
            result["r"] = h.tls_mqtt(g.tls_port, pki.tls_context("client"), "slow-tls", timeout=8.0)
            result["took"] = time.monotonic() - t0
        th = threading.Thread(target=attempt, daemon=True)
        th.start()
        asked = h.wait_until(lambda: silent.accepted >= 1, 3.0)
        t.check(asked, "slow responder: mgate connected to the silent responder")
        rtts = []
        pending = []
        if asked:
            for i in range(5):
                t0 = time.monotonic()
                pub.publish("slow/t", b"during-%d" % i)
                m = sub.recv_publish(3.0)
                rtts.append(time.monotonic() - t0)
                if m.payload != b"during-%d" % i:
                    rtts[-1] = 99.0
                pending.append(th.is_alive())
                time.sleep(0.02)  # spread the round trips over the wait
        t.check(rtts and max(rtts) < 0.2,
                "slow responder: while the handshake waits, plain-listener publishes arrive at once (< 0.2 s)",
                f"round trips {[round(x, 3) for x in rtts]}")
        t.check(pending and all(pending), "slow responder: ... and the TLS handshake was still waiting then",
                f"{pending}")
        th.join(10)
        r, took = result.get("r"), result.get("took", 99)
        t.check(r is not None and r[0] is None, "REVOCATION_TIMEOUT=500ms: the client is refused", f"{r}")
        t.check(took < 2.0, "REVOCATION_TIMEOUT=500ms: refused within 2 s", f"{took:.2f} s")
        t.check(took > 0.35, "REVOCATION_TIMEOUT=500ms: not before the timeout", f"{took:.2f} s")
        t.check(not broker.saw_client("slow-tls", bmark), "slow responder: the broker never saw the TLS client")
        line = g.wait_failure(mark, 3.0)
        t.check(line is not None and "unavailable" in line.get("error", ""),
                "slow responder: mgate logs the failure as \"unavailable\" (docs/TLS.md)", str(line))
        pub.publish("slow/t", b"after")
        t.eq(sub.recv_publish(3.0).payload, b"after", "slow responder: plain path still delivers after")
        sub.close()
        pub.close()
    finally:
        silent.close()


def main():
    h.need_binaries()
    t = h.Checks("revocation")
    with tempfile.TemporaryDirectory() as tmp:
        pki = h.Pki(tmp)
        broker = h.start_mosquitto(tmp)
        # The root responder reads a copy of index.txt, so a case can swap in the variant index.
        root_index = os.path.join(tmp, "root-index.txt")
        shutil.copyfile(pki["index.txt"], root_index)
        shutil.copyfile(pki["index.txt.attr"], root_index + ".attr")
        root = h.Responder.root(tmp, pki, index=root_index)
        inter = h.Responder.intermediate(tmp, pki)
        files = h.Responder.files(tmp, pki)

        t.case("setup", setup_checks, t, tmp, pki, broker, root, inter, files)
        t.case("OCSP from the AIA", ocsp_aia, t, tmp, pki, broker, root, inter)
        t.case("OCSP_RESPONDER_URL", ocsp_override, t, tmp, pki, broker, root)
        t.case("OCSP cache", ocsp_cache, t, tmp, pki, broker, root)
        t.case("OCSP, intermediate revoked", ocsp_intermediate_revoked, t, tmp, pki, broker, root_index)
        t.case("CRL from the CDP", crl_cdp, t, tmp, pki, broker, files)
        t.case("CRL_DISTRIBUTION_POINTS", crl_override, t, tmp, pki, broker, files)
        files.stop()
        t.case("OFFLINE_CRL_FILE", crl_offline, t, tmp, pki, broker)
        t.case("fail closed, soft fail", fail_closed, t, tmp, pki, broker)
        t.case("slow responder", slow_responder, t, tmp, pki, broker)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
