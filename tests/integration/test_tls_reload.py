#!/usr/bin/python3
"""SIGHUP reloads the TLS listener's certificate and key.

CERT_FILE/KEY_FILE are copies of server.crt/key in the test's directory. With a client connected
over TLS and subscribed, they are replaced with server2.crt/key (ssl/gen.sh: same CA, same name,
other serial) and mgate gets SIGHUP: a new `openssl s_client` sees server2's certificate and the
old subscriber still gets a message published after the reload. Then CERT_FILE is broken and
SIGHUP sent again: mgate keeps running, logs a line naming the file, and keeps serving server2.
"""
import json
import os
import shutil
import signal
import tempfile

import harness as h

TLS = "MGATE_MQTT_WITH_TLS_"


def served_fingerprint(port, pki):
    return h.cert_fingerprint(pem=h.s_client_cert(port, "-CAfile", pki["ca.crt"]))


def reload(t, tmp, pki, broker):
    live = os.path.join(tmp, "live")
    os.makedirs(live)
    cert, key = os.path.join(live, "server.crt"), os.path.join(live, "server.key")
    shutil.copyfile(pki["server.crt"], cert)
    shutil.copyfile(pki["server.key"], key)
    fp1, fp2 = pki.fingerprint("server.crt"), pki.fingerprint("server2.crt")
    t.check(fp1 and fp2 and fp1 != fp2, "setup: server.crt and server2.crt differ", f"{fp1} {fp2}")

    g = h.TlsGate(tmp, broker.port, pki, prefix=TLS, client_ca=None, CERT_FILE=cert, KEY_FILE=key)
    t.eq(served_fingerprint(g.tls_port, pki), fp1, "before SIGHUP: s_client sees server.crt")
    sub = h.RawClient(g.tls_port, tls=pki.tls_context(None))
    t.eq(sub.connect(4, "reload-sub"), 0, "a TLS client connects before the reload")
    t.eq(sub.subscribe(1, ["reload/t"]), [0], "... and subscribes")
    pub = h.raw_client(g.port, 4, "reload-pub")

    shutil.copyfile(pki["server2.crt"], cert + ".new")
    shutil.copyfile(pki["server2.key"], key + ".new")
    os.replace(key + ".new", key)
    os.replace(cert + ".new", cert)
    g.proc.send_signal(signal.SIGHUP)
    seen = h.wait_until(lambda: served_fingerprint(g.tls_port, pki) == fp2, 5.0, step=0.1)
    t.check(seen, "after SIGHUP: a new s_client sees server2.crt", served_fingerprint(g.tls_port, pki))
    t.check(g.alive(), "mgate still runs after the reload")
    pub.publish("reload/t", b"after-reload")
    try:
        got = sub.recv_publish(3.0).payload
    except (TimeoutError, h.Closed) as e:
        got = repr(e)
    t.eq(got, b"after-reload", "the subscriber from before the reload gets a message published after it")
    code, err, c = h.tls_mqtt(g.tls_port, pki.tls_context(None), "reload-new")
    t.eq(code, 0, "a new TLS client (verifying against ca.crt) gets CONNACK 0 after the reload")
    if c:
        c.close()

    mark = g.log.mark()
    with open(cert, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    g.proc.send_signal(signal.SIGHUP)

    def names_file():
        for line in g.log.text(mark).splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                if cert in line:
                    return line
                continue
            if j.get("level") in ("warn", "error") and any(cert in str(v) for v in j.values()):
                return line
        return None
    line = h.wait_until(names_file, 5.0)
    t.check(line is not None, "broken CERT_FILE + SIGHUP: mgate logs a warning or error naming the file",
            g.log.text(mark)[-400:])
    t.check(g.alive(), "broken CERT_FILE + SIGHUP: mgate keeps running")
    t.eq(served_fingerprint(g.tls_port, pki), fp2, "broken CERT_FILE + SIGHUP: new connections still get server2.crt")
    pub.publish("reload/t", b"after-broken")
    try:
        got = sub.recv_publish(3.0).payload
    except (TimeoutError, h.Closed) as e:
        got = repr(e)
    t.eq(got, b"after-broken", "broken CERT_FILE + SIGHUP: the old subscriber still gets messages")
    sub.close()
    pub.close()


def main():
    h.need_binaries()
    t = h.Checks("tls_reload")
    with tempfile.TemporaryDirectory() as tmp:
        pki = h.Pki(tmp)
        broker = h.start_mosquitto(tmp)
        t.case("SIGHUP reload", reload, t, tmp, pki, broker)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
