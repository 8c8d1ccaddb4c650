#!/usr/bin/python3
"""CoAP over DTLS 1.2 (MGATE_COAP_WITH_DTLS_*) in front of the relay: libcoap's coap-client-openssl
over coaps:// through mgate to coap-server-openssl over plain UDP.

* Certificates (ssl/gen.sh's PKI, CLIENT_CA_FILE set: a client certificate is required): a good
  one works, and with USE_CN_AS_USERNAME its CN is the username the handler sees; one from an
  unknown CA, none at all, and a revoked one (OFFLINE_CRL_FILE; and OCSP, through the same
  non-blocking check as the TLS listeners, with examples/server/ocsp/serve.py) fail the handshake.
  CLIENT_CERT=optional lets in clients without one, still refusing a bad one; a SIGHUP with new
  certificate files serves the new certificate to new handshakes.
* Pre-shared keys (PSK_FILE): the right key works and the identity is the username; a wrong key and
  an unknown identity fail; a SIGHUP reads the file again; a bad file is exit 2 naming the variable
  and the line.
* Many clients at once on the one port, each its own DTLS session; with one worker, a handshake
  paused in an OCSP check (a responder that never answers) while PSK clients are served at once,
  then refused at REVOCATION_TIMEOUT.
* Datagrams from a client's address that are not its (empty, records too short for the cipher,
  random records) do not end its session, under each AEAD suite (CoAP's CCM_8 among them); a
  client offering only CBC is refused (none by default).
* Observe notifications and block-wise transfer over DTLS; two requests as two records in one
  datagram (a client of our own, dtls_psk.py) are both answered.
* A client that starts again from the address and port of its open session: a cookie there, then
  the old session ends and the new one is made; without the cookie back the old one goes on.
* MAX_CONNECTIONS=1 refuses a second client while the first has its session, not after; IDLE_TIMEOUT
  ends a quiet session with a close_notify and leaves no socket.
* SIGTERM with a handshake paused in its OCSP check, one just past its cookie (a ClientHello made
  here with the cookie: it gets a ServerHello) and an Observe session: exit 0, no sanitizer report.
* A ClientHello flood from many source ports that never answers the cookie: each gets a
  HelloVerifyRequest, and mgate keeps nothing (no session, no descriptor, RSS about the same); a
  cookie sent back from another source port is not taken; a real client still gets in. Then
  malformed datagrams (empty, random, truncated or bit-flipped ClientHellos, 65507 bytes): nothing
  breaks.
* The acl handler refusing a PUT over DTLS: 4.03, and the server never sees it.
"""
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import harness as h
from test_acl import make_password_file, write
from test_admin import metrics
from dtls_psk import PskClient
from test_coap import ACL, CON, GET, URI_PATH, Server, decode, encode, free_coap_port, gate, readyz, tool

D = "MGATE_COAP_WITH_DTLS_"
PSK_KEY = "dtls-psk-secret"  # libcoap 4.3.1 takes -k as text; PSK_FILE holds its bytes in hex


def dgate(tmp, server, pki, binary=None, **settings):
    env = {"CERT_FILE": pki["server.crt"], "KEY_FILE": pki["server.key"]}
    env.update(settings)
    return gate(tmp, server.port, binary=binary, prefix=D, **env)


def coaps(g, path, *args, timeout=20):
    return tool(g.coap, path, *args, timeout=timeout, scheme="coaps")


def cert_args(pki, name):
    return ["-c", pki[f"{name}.crt"], "-j", pki[f"{name}.key"], "-C", pki["ca.crt"]]


def psk_args(identity, key=PSK_KEY):
    return ["-u", identity, "-k", key]


def answered_time(rc, out):
    """The server's /time answer and nothing else (libcoap's error lines carry a time too)."""
    return rc == 0 and re.fullmatch(r"\w{3} \d\d \d\d:\d\d:\d\d", out.strip()) is not None


def failures(g, since):
    return [j for j in g.json_since(since) if j.get("msg") == "TLS handshake failed"]


def sessions(g):
    m = metrics(g.admin)
    return m.get('mgate_connections{listener="coap_with_dtls"}', 0)


def certificates(t, tmp, server, pki):
    g = dgate(tmp, server, pki, binary=h.MGATE_BIN, CLIENT_CA_FILE=pki["ca.crt"], USE_CN_AS_USERNAME="true")
    t.check(h.wait_until(lambda: readyz(g.admin)[0] == 200, 8.0), "/readyz: 200, the CoAP server behind the "
            "DTLS listener answers a CoAP ping", readyz(g.admin)[1])
    mark = g.log.mark()
    rc, out = coaps(g, "time", *cert_args(pki, "client"))
    t.check(answered_time(rc, out), "client.crt: GET /time over DTLS is answered by the server", out)
    cn = pki.cn("client.crt")
    t.check(h.wait_until(lambda: any(j.get("msg") == "auth_connect" and j.get("username") == cn
                                     for j in g.json_since(mark)), 3.0),
            f"USE_CN_AS_USERNAME: the handler's auth_connect has the CN {cn!r} as the username")
    tool(g.coap, "example_data", "-m", "put", "-e", "over dtls", *cert_args(pki, "client"), scheme="coaps")
    t.eq(coaps(g, "example_data", *cert_args(pki, "client"))[1], "over dtls", "PUT, then GET over DTLS")

    for name, what, error in (("unknown", "a certificate from an unknown CA", "unable to get local issuer"),
                              (None, "no client certificate", "did not return a certificate")):
        mark = g.log.mark()
        args = cert_args(pki, name) if name else ["-R", pki["ca.crt"]]
        rc, out = coaps(g, "time", *args)
        t.check(not answered_time(rc, out), f"{what}: no answer", out)
        line = h.wait_until(lambda: failures(g, mark), 3.0)
        t.check(line and error in line[0].get("error", ""), f"{what}: mgate logs the handshake failure ({error})",
                str(line))
    t.check(sessions(g) == 0, "no session is left from the refused handshakes")


def optional_and_reload(t, tmp, server, pki):
    """CLIENT_CERT=optional: a client without a certificate and a PSK client get in, a certificate
    that is sent must still verify. SIGHUP with new certificate files: new handshakes see them."""
    path = os.path.join(tmp, "psk-optional.txt")
    psk_file(path, [("dev1", PSK_KEY)])
    certs = os.path.join(tmp, "reload")
    os.makedirs(certs, exist_ok=True)
    crt, key = os.path.join(certs, "server.crt"), os.path.join(certs, "server.key")
    shutil.copy(pki["server.crt"], crt)
    shutil.copy(pki["server.key"], key)
    g = dgate(tmp, server, pki, CERT_FILE=crt, KEY_FILE=key, CLIENT_CA_FILE=pki["ca.crt"], CLIENT_CERT="optional",
              PSK_FILE=path)
    t.check(answered_time(*coaps(g, "time", "-R", pki["ca.crt"])), "CLIENT_CERT=optional: no certificate, let in")
    t.check(answered_time(*coaps(g, "time", *psk_args("dev1"))), "CLIENT_CERT=optional: a PSK client, let in")
    t.check(answered_time(*coaps(g, "time", *cert_args(pki, "client"))), "CLIENT_CERT=optional: client.crt, let in")
    t.check(not answered_time(*coaps(g, "time", *cert_args(pki, "unknown"))),
            "CLIENT_CERT=optional: a certificate from an unknown CA is still refused")

    def served_serial():
        r = h.openssl_out("s_client", "-dtls1_2", "-connect", f"{h.HOST}:{g.coap}", "-CAfile", pki["ca.crt"],
                          input="", timeout=10)
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", r.stdout, re.S)
        return h.openssl_out("x509", "-noout", "-serial", input=m.group(0)).stdout.strip() if m else r.stdout[-200:]
    t.eq(served_serial(), "serial=" + pki.serial("server.crt"), "before SIGHUP: openssl s_client -dtls1_2 sees "
         "server.crt")
    mark = g.log.mark()
    shutil.copy(pki["server2.crt"], crt)
    shutil.copy(pki["server2.key"], key)
    os.kill(g.pid, signal.SIGHUP)
    t.check(g.log.wait(r"coap_with_dtls reloaded", 3.0, mark) is not None, "SIGHUP: the DTLS listener reloads")
    t.eq(served_serial(), "serial=" + pki.serial("server2.crt"), "after SIGHUP: new handshakes see server2.crt")
    t.check(answered_time(*coaps(g, "time", *cert_args(pki, "client"))), "after SIGHUP: client.crt still gets in")


def revocation(t, tmp, server, pki):
    g = dgate(tmp, server, pki, CLIENT_CA_FILE=pki["ca.crt"], CERT_VERIFICATION_METHODS="crl",
              OFFLINE_CRL_FILE=pki["crl.pem"])
    t.check(answered_time(*coaps(g, "time", *cert_args(pki, "client"))), "CRL: client.crt gets in")
    mark = g.log.mark()
    rc, out = coaps(g, "time", *cert_args(pki, "revoked"))
    t.check(not answered_time(rc, out) and "revoked" in out, "CRL: revoked.crt fails with a certificate_revoked "
            "alert", out)
    line = h.wait_until(lambda: failures(g, mark), 3.0)
    t.check(line and "revoked" in line[0].get("error", ""), "CRL: mgate logs \"certificate revoked\"", str(line))

    root = h.Responder.root(tmp, pki)
    try:
        g = dgate(tmp, server, pki, CLIENT_CA_FILE=pki["ca.crt"], CERT_VERIFICATION_METHODS="ocsp")
        rm = root.log.mark()
        t.check(answered_time(*coaps(g, "time", *cert_args(pki, "client"))), "OCSP: client.crt gets in")
        t.check(root.ocsp_requests(rm) >= 1, "OCSP: the responder in the certificate's AIA was asked")
        mark = g.log.mark()
        rc, out = coaps(g, "time", *cert_args(pki, "revoked"))
        t.check(not answered_time(rc, out) and "revoked" in out, "OCSP: revoked.crt fails with certificate_revoked",
                out)
        line = h.wait_until(lambda: failures(g, mark), 3.0)
        t.check(line and "revoked" in line[0].get("error", ""), "OCSP: mgate logs \"certificate revoked\"",
                str(line))
    finally:
        root.stop()


def waiting_check(t, tmp, server, pki):
    """One worker; a client certificate whose OCSP responder never answers (REVOCATION_TIMEOUT=3s):
    while its handshake waits, a PSK client on the same port is served at once, again and again;
    then the waiting one is refused (fail-closed)."""
    path = os.path.join(tmp, "psk-wait.txt")
    psk_file(path, [("dev1", PSK_KEY)])
    silent = h.SilentServer()
    try:
        g = dgate(tmp, server, pki, binary=h.MGATE_BIN, PSK_FILE=path, CLIENT_CA_FILE=pki["ca.crt"],
                  CERT_VERIFICATION_METHODS="ocsp", OCSP_RESPONDER_URL=silent.url, REVOCATION_TIMEOUT="3s",
                  MGATE_WORKERS="1")
        mark = g.log.mark()
        result = {}

        def attempt():
            t0 = time.monotonic()
            result["r"] = coaps(g, "time", *cert_args(pki, "client"))
            result["took"] = time.monotonic() - t0
        th = threading.Thread(target=attempt, daemon=True)
        th.start()
        asked = h.wait_until(lambda: silent.accepted >= 1, 3.0)
        t.check(asked, "OCSP wait: mgate asked the silent responder")
        took, alive = [], []
        for _ in range(3):
            t0 = time.monotonic()
            ok = answered_time(*coaps(g, "time", *psk_args("dev1")))
            took.append(round(time.monotonic() - t0, 2) if ok else 99)
            alive.append(th.is_alive())
        t.check(max(took) < 1.0, "OCSP wait: meanwhile a PSK client is answered at once, three times", str(took))
        t.check(all(alive), "OCSP wait: ... while the certificate's handshake still waited", str(alive))
        th.join(20)
        t.check(not answered_time(*result.get("r", (1, ""))), "OCSP wait: the waiting client is refused "
                "(REVOCATION_TIMEOUT, fail-closed)", str(result))
        line = h.wait_until(lambda: failures(g, mark), 3.0)
        t.check(line and "unavailable" in line[0].get("error", ""),
                "OCSP wait: mgate logs \"revocation status unavailable\"", str(line))
    finally:
        silent.close()


def stop_midway(t, tmp, server, pki):
    """SIGTERM with a handshake paused in its OCSP check, one that has just had its cookie, and a
    session with an Observe running: exit 0, nothing left for a sanitizer to report."""
    path = os.path.join(tmp, "psk-stop.txt")
    psk_file(path, [("dev1", PSK_KEY)])
    silent = h.SilentServer()
    procs = []
    try:
        g = dgate(tmp, server, pki, binary=h.MGATE_BIN, PSK_FILE=path, CLIENT_CA_FILE=pki["ca.crt"],
                  CERT_VERIFICATION_METHODS="ocsp", OCSP_RESPONDER_URL=silent.url, REVOCATION_TIMEOUT="20s",
                  MGATE_WORKERS="1")
        url = f"coaps://{h.HOST}:{g.coap}/time"
        for args in ([*cert_args(pki, "client")], ["-s", "20", *psk_args("dev1")]):
            p = subprocess.Popen(["coap-client-openssl", "-B", "20", *args, url], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            h.register(p)
            procs.append(p)
        t.check(h.wait_until(lambda: silent.accepted >= 1 and sessions(g) == 1, 5.0),
                "stop midway: one handshake waits for OCSP, one Observe session is open")
        hello = client_hello()
        s = udp()
        s.sendto(hello, (h.HOST, g.coap))
        s.sendto(with_cookie(hello, s.recv(4096)), (h.HOST, g.coap))
        t.eq(handshake_type(s), 2, "stop midway: a ClientHello with the cookie gets a ServerHello (its handshake "
             "goes on on a socket of its own)")
        rc = g.stop(timeout=10.0)
        t.eq(rc, 0, "stop midway: SIGTERM, exit 0")
        t.eq(h.sanitizer_lines(g.log.text()), [], "stop midway: no sanitizer report")
        s.close()
    finally:
        silent.close()
        for p in procs:
            h.stop(p)


def observe(t, tmp, server, pki):
    path = os.path.join(tmp, "psk-observe.txt")
    psk_file(path, [("dev1", PSK_KEY)])
    g = dgate(tmp, server, pki, PSK_FILE=path)
    rc, out = coaps(g, "time", "-s", "4", *psk_args("dev1"))
    n = len(re.findall(r"\w{3} \d\d \d\d:\d\d:\d\d(?![.\d])", out))
    t.check(rc == 0 and n >= 3, f"Observe /time for 4 s over DTLS: {n} notifications", out[-300:])
    rc, out = coaps(g, "example_data", "-m", "put", "-b", "64", "-e", "x" * 1000, *psk_args("dev1"))
    rc, out = coaps(g, "example_data", "-b", "64", *psk_args("dev1"))
    t.eq(out, "x" * 1000, "block-wise PUT and GET (64-byte blocks) over DTLS")


def packed(t, tmp, server, pki):
    """Two requests as two records in one datagram (some DTLS stacks pack them): both answered."""
    path = os.path.join(tmp, "psk-packed.txt")
    psk_file(path, [("dev1", PSK_KEY)])
    g = dgate(tmp, server, pki, PSK_FILE=path)
    c = PskClient(h.HOST, g.coap, b"dev1", PSK_KEY.encode())
    try:
        t.check(c.handshake(), "packed: a DTLS PSK handshake of our own (libssl through ctypes)")
        size = c.send_records(encode(CON, GET, 0x101, b"\x01", [(URI_PATH, "time")]),
                              encode(CON, GET, 0x102, b"\x02", [(URI_PATH, "time")]))
        got = sorted(decode(r)[2] for r in (c.recv(), c.recv()) if r)
        t.eq(got, [0x101, 0x102], f"packed: two GETs in one {size}-byte datagram are both answered")
        # garbage into the open session from its own address: ClientHello-shaped records of epoch 0 cut
        # anywhere (read before DTLS sees them), random bytes, empty datagrams
        hello = client_hello()
        rnd = random.Random(7)
        junk = [hello[:n] for n in range(0, len(hello), 3)] + [b""]
        junk += [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 200))) for _ in range(100)]
        for d in junk:
            c.sock.sendto(d, (h.HOST, g.coap))
        time.sleep(0.3)
        while True:  # the cookies for the whole ClientHellos among them
            c.sock.settimeout(0.2)
            try:
                c.sock.recv(4096)
            except socket.timeout:
                break
        c.send_records(encode(CON, GET, 0x103, b"\x03", [(URI_PATH, "time")]))
        r = c.recv()
        t.check(r is not None and decode(r)[2] == 0x103, f"packed: after {len(junk)} malformed datagrams from its "
                "own address the session still answers")
    finally:
        c.close()


def spoofed_records(t, tmp, server, pki):
    """Datagrams from a client's address that are not its (an empty one, records too short for the
    cipher, random records): the session goes on, for each AEAD suite, CoAP's PSK-AES128-CCM8 among
    them; a CBC suite is not offered by default."""
    path = os.path.join(tmp, "psk-spoof.txt")
    psk_file(path, [("dev1", PSK_KEY)])
    g = dgate(tmp, server, pki, PSK_FILE=path)
    get = encode(CON, GET, 0x401, b"\x04", [(URI_PATH, "time")])
    rnd = random.Random(4)
    for suite in (b"PSK-AES128-GCM-SHA256", b"PSK-CHACHA20-POLY1305", b"PSK-AES128-CCM8", b"PSK-AES128-CCM",
                  b"ECDHE-PSK-CHACHA20-POLY1305"):
        c = PskClient(h.HOST, g.coap, b"dev1", PSK_KEY.encode(), ciphers=suite)
        try:
            if not c.handshake():
                t.check(False, f"{suite.decode()}: handshake")
                continue
            for n in (0, 1, 8, 15, 16, 23, 24, 40):
                rec = bytes([23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, rnd.randrange(2, 250), 0, n])
                c.sock.sendto(rec + bytes(rnd.getrandbits(8) for _ in range(n)), (h.HOST, g.coap))
            c.sock.sendto(b"", (h.HOST, g.coap))
            time.sleep(0.1)
            c.send_records(get)
            r = c.recv()
            t.check(r is not None and decode(r)[2] == 0x401, f"{suite.decode()}: after an empty datagram and "
                    "eight forged records from its address, the session still answers")
        finally:
            c.close()
    c = PskClient(h.HOST, g.coap, b"dev1", PSK_KEY.encode(), ciphers=b"PSK-AES128-CBC-SHA256")
    t.check(not c.handshake(), "a client offering only a CBC suite is refused (no CBC suite by default)")
    c.close()


def idle(t, tmp, server, pki):
    """IDLE_TIMEOUT=1s: a quiet session ends with a close_notify to the client, and its socket closes."""
    path = os.path.join(tmp, "psk-idle.txt")
    psk_file(path, [("dev1", PSK_KEY)])
    g = dgate(tmp, server, pki, PSK_FILE=path, IDLE_TIMEOUT="1s", MGATE_WORKERS="1")
    fds0 = open_fds(g.pid)
    c = PskClient(h.HOST, g.coap, b"dev1", PSK_KEY.encode())
    try:
        t.check(c.handshake(), "idle: handshake")
        c.send_records(encode(CON, GET, 0x201, b"\x01", [(URI_PATH, "time")]))
        r = c.recv()
        t.check(r is not None and decode(r)[2] == 0x201, "idle: a GET is answered")
        t.eq(sessions(g), 1, "idle: one session")
        t0 = time.monotonic()
        r = c.recv()  # nothing until mgate ends the session
        t.check(r == b"" and 0.5 < time.monotonic() - t0 < 2.9, "idle: after about IDLE_TIMEOUT the client gets "
                "a close_notify", f"{r!r} after {time.monotonic() - t0:.2f} s")
        t.check(h.wait_until(lambda: sessions(g) == 0 and open_fds(g.pid) == fds0, 2.0),
                "idle: no session and no socket left")
    finally:
        c.close()


def restart(t, tmp, server, pki):
    """A client that starts again from the same address and port while its old session is open (a
    device that rebooted): its new ClientHello gets a cookie on the old session's socket, and with the
    cookie the old session ends and the new one is made; an old session's peer that sends a
    ClientHello without coming back with the cookie keeps its session."""
    path = os.path.join(tmp, "psk-restart.txt")
    psk_file(path, [("dev1", PSK_KEY)])
    g = dgate(tmp, server, pki, PSK_FILE=path, MGATE_WORKERS="1")
    get = encode(CON, GET, 0x301, b"\x01", [(URI_PATH, "time")])
    old = PskClient(h.HOST, g.coap, b"dev1", PSK_KEY.encode())
    port = old.port
    t.check(old.handshake(), "restart: the first session")
    old.send_records(get)
    t.check(old.recv() is not None, "restart: ... answers a GET")
    hello = client_hello()
    old.sock.sendto(hello, (h.HOST, g.coap))  # a ClientHello on the open session's socket
    d = old.sock.recv(4096)
    t.check(d[0] == 22 and d[13] == 3, "restart: a ClientHello from the same address gets a HelloVerifyRequest")
    old.send_records(get)
    r = old.recv()
    t.check(r is not None and decode(r)[2] == 0x301, "restart: without the cookie coming back, the old session "
            "goes on")
    old.sock.close()
    new = PskClient(h.HOST, g.coap, b"dev1", PSK_KEY.encode(), local_port=port)
    try:
        t0 = time.monotonic()
        ok = new.handshake(resends=3)
        t.check(ok, f"restart: a new handshake from the same address and port succeeds "
                f"({time.monotonic() - t0:.1f} s)")
        if ok:
            new.send_records(get)
            r = new.recv()
            t.check(r is not None and decode(r)[2] == 0x301, "restart: ... and its GET is answered")
        t.eq(sessions(g), 1, "restart: one session (the old one ended)")
        t.check(g.log.search(r"started a new session from the address of an open one") is not None,
                "restart: mgate logs that the old session ends")
    finally:
        new.close()


def psk_file(path, entries):
    write(path, "# identity:key in hex\n" + "".join(f"{i}:{k.encode().hex()}\n" for i, k in entries))


def psk(t, tmp, server, pki):
    path = os.path.join(tmp, "psk.txt")
    psk_file(path, [("dev1", PSK_KEY), ("dev2", "another-key")])
    g = dgate(tmp, server, pki, binary=h.MGATE_BIN, PSK_FILE=path)
    mark = g.log.mark()
    rc, out = coaps(g, "time", *psk_args("dev1"))
    t.check(answered_time(rc, out), "PSK dev1 with its key: GET /time is answered", out)
    t.check(h.wait_until(lambda: any(j.get("msg") == "auth_connect" and j.get("username") == "dev1"
                                     for j in g.json_since(mark)), 3.0),
            "PSK: the handler's auth_connect has the identity dev1 as the username")
    rc, out = coaps(g, "time", *psk_args("dev1", "not-the-key"))
    t.check(not answered_time(rc, out), "PSK dev1 with a wrong key: no answer", out)
    rc, out = coaps(g, "time", *psk_args("nobody"))
    t.check(not answered_time(rc, out), "PSK with an unknown identity: no answer", out)

    psk_file(path, [("dev1", "rotated-key")])
    os.kill(g.pid, signal.SIGHUP)
    t.check(g.log.wait(r"coap_with_dtls reloaded", 3.0, mark) is not None, "SIGHUP: the listener reloads")
    t.check(answered_time(*coaps(g, "time", *psk_args("dev1", "rotated-key"))), "after SIGHUP: the new key works")
    t.check(not answered_time(*coaps(g, "time", *psk_args("dev1"))), "after SIGHUP: the old key fails")

    # PSK only: no certificate needed
    g2 = gate(tmp, server.port, prefix=D, PSK_FILE=path)
    t.check(answered_time(*coaps(g2, "time", *psk_args("dev1", "rotated-key"))),
            "PSK_FILE without CERT_FILE: a PSK client gets in")

    # bad files: exit 2, naming the variable and the line
    def start_fails(what, variable, needle, **keys):
        env = h.clean_env()
        env.update({D + "HOST": h.HOST, D + "PORT": str(free_coap_port()), D + "TARGET_HOST": h.HOST,
                    D + "TARGET_PORT": str(server.port), "MGATE_MQTT_WITHOUT_TLS_PORT": ""})
        env.update({D + k: v for k, v in keys.items()})
        r = subprocess.run([h.MGATE_BIN], env=env, capture_output=True, text=True, timeout=10)
        out = r.stdout + r.stderr
        t.check(r.returncode == 2 and D + variable in out and needle in out,
                f"{what}: exit 2 naming {D + variable} and {needle!r}", f"exit {r.returncode}: {out.strip()[-300:]}")

    bad = os.path.join(tmp, "bad-psk.txt")
    for text, why in (("dev1:00ff\nbroken line\n", "line 2"), ("dev1:0g\n", "line 1"),
                      ("dev1:00\ndev1:01\n", "appears twice"), ("# nothing\n", "no identity")):
        write(bad, text)
        start_fails(f"a PSK file with {why}", "PSK_FILE", why, PSK_FILE=bad)
    start_fails("a PSK file that does not exist", "PSK_FILE", "No such file", PSK_FILE=bad + ".missing")
    start_fails("TLS_MIN_VERSION=1.3 (no DTLS 1.3)", "TLS_MIN_VERSION", "DTLS", PSK_FILE=path, TLS_MIN_VERSION="1.3")


def many(t, tmp, server, pki):
    path = os.path.join(tmp, "psk-many.txt")
    psk_file(path, [(f"dev{i}", f"key-{i}") for i in range(8)])
    g = dgate(tmp, server, pki, PSK_FILE=path)
    results = [None] * 8

    def one(i):
        results[i] = coaps(g, "time", *psk_args(f"dev{i}", f"key-{i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ok = sum(1 for r in results if r and answered_time(*r))
    t.eq(ok, 8, "eight PSK clients at once on one port: each is answered")


def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((h.HOST, 0))
    s.settimeout(3)
    return s


def handshake_type(s):
    """The handshake message type of the first record mgate sends s (3 HelloVerifyRequest, 2 ServerHello)."""
    try:
        d = s.recv(4096)
    except socket.timeout:
        return None
    return d[13] if d[:1] == b"\x16" and len(d) > 13 else None


def with_cookie(hello, verify):
    """hello (a first ClientHello, record sequence 0, message sequence 0) sent again with the cookie of
    the HelloVerifyRequest verify, as a client does (RFC 6347 4.2.1)."""
    clen = verify[27]  # record header 13, handshake header 12, server version 2, then the cookie
    cookie = verify[28:28 + clen]
    body = bytearray(hello[25:])  # client version 2, random 32, session id, cookie, ...
    at = 35 + body[34]
    assert body[at] == 0, "a first ClientHello has an empty cookie"
    body = body[:at] + bytes([clen]) + cookie + body[at + 1:]
    n = len(body).to_bytes(3, "big")
    hs = b"\x01" + n + (1).to_bytes(2, "big") + (0).to_bytes(3, "big") + n + bytes(body)
    return hello[:3] + (0).to_bytes(2, "big") + (1).to_bytes(6, "big") + len(hs).to_bytes(2, "big") + hs


def max_connections(t, tmp, server, pki):
    """MAX_CONNECTIONS=1: while one DTLS client has its session, a second is refused after its cookie
    (no handshake: no ServerHello, nothing kept); once the first is gone, the second gets in."""
    path = os.path.join(tmp, "psk-max.txt")
    psk_file(path, [("dev1", PSK_KEY), ("dev2", PSK_KEY)])
    g = dgate(tmp, server, pki, PSK_FILE=path, MAX_CONNECTIONS="1")
    p = subprocess.Popen(["coap-client-openssl", "-B", "20", "-s", "20", *psk_args("dev1"),
                          f"coaps://{h.HOST}:{g.coap}/time"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    h.register(p)
    try:
        t.check(h.wait_until(lambda: sessions(g) == 1, 5.0), "MAX_CONNECTIONS=1: the first client has its session")
        mark = g.log.mark()
        rc, out = coaps(g, "time", *psk_args("dev2"))
        t.check(not answered_time(rc, out), "MAX_CONNECTIONS=1: a second client is not answered", out)
        t.check(g.log.search(r"refusing 127\.0\.0\.1:\d+: (MAX_CONNECTIONS|the listener's peers)", mark) is not None,
                "MAX_CONNECTIONS=1: mgate logs the refusal")
        t.eq(sessions(g), 1, "MAX_CONNECTIONS=1: still one session")
    finally:
        h.stop(p)
    t.check(h.wait_until(lambda: sessions(g) == 0, 5.0), "MAX_CONNECTIONS=1: the first client's session ends with "
            "its close_notify")
    t.check(answered_time(*coaps(g, "time", *psk_args("dev2"))), "MAX_CONNECTIONS=1: then the second gets in")


def client_hello():
    """The first datagram coap-client-openssl sends to a coaps:// server: a ClientHello without cookie."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((h.HOST, 0))
    s.settimeout(5)
    p = subprocess.Popen(["coap-client-openssl", "-B", "2", *psk_args("x"),
                          f"coaps://{h.HOST}:{s.getsockname()[1]}/x"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    h.register(p)
    try:
        data = s.recv(4096)
    finally:
        h.stop(p)
        s.close()
    return data


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def sanitized(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def flood(t, tmp, server, pki):
    path = os.path.join(tmp, "psk-flood.txt")
    psk_file(path, [("dev1", PSK_KEY)])
    g = dgate(tmp, server, pki, PSK_FILE=path)
    t.check(answered_time(*coaps(g, "time", *psk_args("dev1"))), "flood: a client gets in before")
    hello = client_hello()
    t.check(hello[0] == 22 and hello[13] == 1, "flood: a ClientHello captured from coap-client-openssl")
    time.sleep(0.5)
    rss0, fds0 = g.rss_kib(), open_fds(g.pid)
    verify, sent = 0, 0
    for _ in range(10):  # 2000 source ports, 200 at a time
        socks = []
        for _ in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((h.HOST, 0))
            s.sendto(hello, (h.HOST, g.coap))
            socks.append(s)
            sent += 1
        for s in socks:
            s.settimeout(2)
            try:
                d = s.recv(4096)
                verify += d[0] == 22 and d[13] == 3
            except socket.timeout:
                pass
            s.close()
    t.check(verify >= sent * 9 // 10, f"flood: {verify} of {sent} ClientHellos got a HelloVerifyRequest")
    a, b = udp(), udp()
    a.sendto(hello, (h.HOST, g.coap))
    b.sendto(with_cookie(hello, a.recv(4096)), (h.HOST, g.coap))
    t.eq(handshake_type(b), 3, "flood: a cookie given to another source port is not taken (a new "
         "HelloVerifyRequest, no ServerHello)")
    a.close()
    b.close()
    time.sleep(0.5)
    rss1, fds1 = g.rss_kib(), open_fds(g.pid)
    t.eq(sessions(g), 0, "flood: no session was made")
    t.eq(fds1, fds0, "flood: no socket was opened for any of them (mgate's open descriptors)")
    if sanitized(g.pid):  # ASan keeps freed memory in quarantine: RSS says nothing there
        t.check(True, f"flood: RSS not judged under a sanitizer (grew {rss1 - rss0} KiB)")
    else:
        t.check(rss1 - rss0 < 2048, f"flood: mgate's RSS grew {rss1 - rss0} KiB (less than 2 MiB for 2000 hellos)")
    t.check(answered_time(*coaps(g, "time", *psk_args("dev1"))), "flood: a client still gets in after")

    # garbage: empty, short, random, a truncated or bit-flipped ClientHello, the largest UDP payload
    rnd = random.Random(16)
    junk = [b"", b"\x16", b"\x16\xfe\xfd" + bytes(10), hello[:40], hello[:-1], bytes(65507)]
    junk += [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 300))) for _ in range(300)]
    junk += [bytes(b ^ (1 << rnd.randrange(8)) if rnd.random() < 0.02 else b for b in hello) for _ in range(200)]
    s = udp()
    for d in junk:
        s.sendto(d, (h.HOST, g.coap))
    s.close()
    time.sleep(0.5)
    t.check(g.alive() and answered_time(*coaps(g, "time", *psk_args("dev1"))),
            f"garbage: after {len(junk)} malformed datagrams mgate runs and a client gets in")
    t.eq(sessions(g), 0, "garbage: no session was made")


def acl(t, tmp, server, pki):
    pwfile, aclfile, path = (os.path.join(tmp, n) for n in ("dtls.passwd", "dtls.acl", "psk-acl.txt"))
    make_password_file(pwfile, {"dev1": ("dev1-secret", "sha512-pbkdf2")})
    write(aclfile, ACL)
    psk_file(path, [("dev1", PSK_KEY)])
    g = dgate(tmp, server, pki, binary=h.MGATE_BIN, PSK_FILE=path, MGATE_HANDLER="acl",
              MGATE_ACL_PASSWORD_FILE=pwfile, MGATE_ACL_FILE=aclfile)
    mark = server.log.mark()
    pw = ["-O", "15,p=dev1-secret"]
    rc, out = coaps(g, "dev/dev1/temp", "-m", "put", "-e", "21", *psk_args("dev1"), *pw)
    t.check(rc == 0 and server.saw("dev1", mark) and "4." not in out, "acl: PSK dev1 publishes on dev/dev1/temp",
            out)
    rc, out = coaps(g, "dev/dev2/temp", "-m", "put", "-e", "22", *psk_args("dev1"), *pw)
    t.check("4.03" in out, "acl: PSK dev1 on dev/dev2/temp: 4.03 over DTLS", out)
    rc, out = coaps(g, "dev/dev1/other", "-m", "put", "-e", "23", *psk_args("dev1"), "-O", "15,u=dev2",
                    "-O", "15,p=dev1-secret")
    t.check(rc == 0 and server.saw("other", mark) and "4." not in out,
            "acl: a u=dev2 query does not change the PSK identity (still dev1)", out)
    time.sleep(0.2)
    t.check(not server.saw("dev2", mark), "acl: the refused PUT never reached the server")


def bridge(t, tmp, server, pki):
    """The bridge over DTLS: a PSK client publishes on an MQTT broker as its identity, whatever its
    query says (the bridge took the query's username before)."""
    broker = h.start_mosquitto(tmp)
    pwfile, aclfile, path = (os.path.join(tmp, n) for n in ("dtls-br.passwd", "dtls-br.acl", "psk-br.txt"))
    make_password_file(pwfile, {"dev1": ("dev1-secret", "sha512-pbkdf2"), "dev2": ("dev2-secret", "sha512")})
    write(aclfile, "user dev1\ntopic readwrite dev/dev1/#\n\nuser dev2\ntopic readwrite dev/dev2/#\n")
    psk_file(path, [("dev1", PSK_KEY)])
    g = gate(tmp, broker.port, binary=h.MGATE_BIN, prefix=D, PSK_FILE=path, TARGET_PROTOCOL="mqtt",
             MGATE_HANDLER="acl", MGATE_ACL_PASSWORD_FILE=pwfile, MGATE_ACL_FILE=aclfile)
    mark = broker.log.mark()
    sub = subprocess.Popen(["mosquitto_sub", "-h", h.HOST, "-p", str(broker.port), "-t", "dev/#", "-C", "1", "-W", "8",
                            "-v"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    gmark = g.log.mark()
    # coap-client exits 0 with no output when nothing answers in -B seconds:
    # the answer is proved by the broker's side, and given time to come.
    rc, out = coaps(g, "ps/dev/dev1/t?qos=1&clientid=dtls-br", "-m", "post", "-e", "21", *psk_args("dev1"),
                    "-O", "15,p=dev1-secret", "-B", "10")
    t.check(rc == 0 and not re.search(r"\b[45]\.\d\d\b", out), "bridge over DTLS: PSK dev1 publishes on dev/dev1/t",
            out)
    got = sub.communicate(timeout=10)[0].decode().strip()
    t.eq(got, "dev/dev1/t 21", "... and a subscriber on the broker gets it")
    if got != "dev/dev1/t 21":
        print(f"coap-client said: {out!r}\nmgate logged:\n{g.log.text(gmark)}\nthe broker logged:\n"
              f"{broker.log.text(mark)}")
    t.check(broker.log.search(r"as dtls-br \(.*u'dev1'", mark) is not None, "... through an MQTT session as dev1")
    rc, out = coaps(g, "ps/dev/dev2/t?clientid=dtls-br2", "-m", "post", "-e", "22", *psk_args("dev1"),
                    "-O", "15,u=dev2", "-O", "15,p=dev2-secret")
    t.check("4.0" in out, "a u=dev2 query with dev2's password does not make PSK dev1 dev2: refused", out)
    time.sleep(0.2)
    t.check(broker.log.search(r"u'dev2'", mark) is None, "... and the broker never saw dev2")
    g.stop()
    broker.stop()


def main():
    h.need_binaries()
    t = h.Checks("coap_dtls")
    with tempfile.TemporaryDirectory() as tmp:
        pki = h.Pki(tmp)
        server = Server(tmp)
        t.case("certificates", certificates, t, tmp, server, pki)
        t.case("CLIENT_CERT=optional, SIGHUP with new certificates", optional_and_reload, t, tmp, server, pki)
        t.case("revocation", revocation, t, tmp, server, pki)
        t.case("pre-shared keys", psk, t, tmp, server, pki)
        t.case("many clients", many, t, tmp, server, pki)
        t.case("a handshake waiting for OCSP", waiting_check, t, tmp, server, pki)
        t.case("Observe and block-wise", observe, t, tmp, server, pki)
        t.case("two records in one datagram", packed, t, tmp, server, pki)
        t.case("forged datagrams from a client's address", spoofed_records, t, tmp, server, pki)
        t.case("IDLE_TIMEOUT", idle, t, tmp, server, pki)
        t.case("a client restarting from the same address", restart, t, tmp, server, pki)
        t.case("SIGTERM midway", stop_midway, t, tmp, server, pki)
        t.case("MAX_CONNECTIONS", max_connections, t, tmp, server, pki)
        t.case("ClientHello flood", flood, t, tmp, server, pki)
        t.case("acl", acl, t, tmp, server, pki)
        t.case("the bridge over DTLS", bridge, t, tmp, server, pki)
        h.stop(server.proc)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
