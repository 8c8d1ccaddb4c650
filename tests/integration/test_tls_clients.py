#!/usr/bin/python3
"""Client-certificate policy on the mTLS listener, and TLS options:

* refused: a certificate from an unknown CA, an expired certificate, no certificate;
* CLIENT_CERT=optional: no certificate is fine (username/password path), a bad one is not;
* USE_CN_AS_USERNAME=true: the broker sees the certificate's CN as the username (checked with a
  mosquitto ACL that lets only user dev00001 publish to only/dev00001/#);
* TLS_MIN_VERSION=1.3: TLS 1.2 is refused, TLS 1.3 works.

The PKI comes from ssl/gen.sh. No revocation checks here (test_revocation.py has them).
"""
import os
import subprocess
import tempfile

import harness as h

MTLS, TLS = "MGATE_MQTT_WITH_MTLS_", "MGATE_MQTT_WITH_TLS_"


def refusals(t, tmp, pki, broker):
    g = h.TlsGate(tmp, broker.port, pki)
    t.eq(h.mosq_pub_sub(g.tls_port, broker, pki.mosq_args("client"), "control"), "",
         "control: client.crt passes the mTLS listener")
    cases = (("unknown", "a certificate from an unknown CA", "unable to get local issuer certificate"),
             ("expired", "an expired certificate", "certificate has expired"),
             (None, "no certificate", "did not return a certificate"))
    for name, what, why in cases:
        mark, bmark = g.log.mark(), broker.log.mark()
        cid = f"refused-{name}"
        rc, err = h.mosq_pub(g.tls_port, pki.mosq_args(name), cid)
        t.check(rc != 0, f"{what}: mosquitto_pub fails", f"exit {rc}")
        code, err, c = h.tls_mqtt(g.tls_port, pki.tls_context(name), cid + "-raw")
        if c:
            c.close()
        t.check(code is None, f"{what}: a TLS client gets no CONNACK", f"CONNACK {code}")
        t.check(not broker.saw_client(cid, bmark) and not broker.saw_client(cid + "-raw", bmark),
                f"{what}: the broker never saw it")
        # The previous case's last refusal may be logged after this case's mark (the log is
        # asynchronous to the client's view): look for this case's reason among the lines.
        line = h.wait_until(lambda: next((j for j in g.handshake_failures(mark)
                                          if why in j.get("error", "")), None), 3.0)
        t.check(line is not None, f"{what}: mgate logs \"TLS handshake failed\" saying {why!r}",
                str(g.handshake_failures(mark))[:400])
    t.check(g.alive(), "mgate still runs")


def optional(t, tmp, pki, broker):
    g = h.TlsGate(tmp, broker.port, pki, CLIENT_CERT="optional")
    bmark = broker.log.mark()
    code, err, c = h.tls_mqtt(g.tls_port, pki.tls_context(None), "opt-nocert", username="alice", password=b"secret")
    t.eq(code, 0, "CLIENT_CERT=optional: no certificate, username/password: CONNACK 0")
    if c:
        t.eq(c.subscribe(1, ["opt/t"]), [0], "CLIENT_CERT=optional: ... it subscribes")
        c.publish("opt/t", b"hello")
        t.eq(c.recv_publish(3.0).payload, b"hello", "CLIENT_CERT=optional: ... and gets its own message back")
        c.close()
    t.check(broker.log.search(r"as opt-nocert \(.*u'alice'", bmark) is not None,
            "CLIENT_CERT=optional: the broker saw username alice")
    t.eq(h.mosq_pub_sub(g.tls_port, broker, pki.mosq_args(None), "optional none"), "",
         "CLIENT_CERT=optional: mosquitto_pub/sub without a certificate")
    t.eq(h.mosq_pub_sub(g.tls_port, broker, pki.mosq_args("client"), "optional good"), "",
         "CLIENT_CERT=optional: mosquitto_pub/sub with client.crt")
    mark, bmark = g.log.mark(), broker.log.mark()
    rc, _ = h.mosq_pub(g.tls_port, pki.mosq_args("unknown"), "opt-unknown")
    t.check(rc != 0, "CLIENT_CERT=optional: a certificate from an unknown CA is still refused", f"exit {rc}")
    code, err, c = h.tls_mqtt(g.tls_port, pki.tls_context("unknown"), "opt-unknown-raw")
    t.check(code is None, "CLIENT_CERT=optional: ... a TLS client with it gets no CONNACK", f"CONNACK {code}")
    t.check(not broker.saw_client("opt-unknown", bmark) and not broker.saw_client("opt-unknown-raw", bmark),
            "CLIENT_CERT=optional: the broker never saw the unknown-CA client")
    t.check(g.wait_failure(mark, 3.0) is not None, "CLIENT_CERT=optional: the refusal is logged")
    code, err, c = h.tls_mqtt(g.tls_port, pki.tls_context("expired"), "opt-expired")
    t.check(code is None, "CLIENT_CERT=optional: an expired certificate is still refused", f"CONNACK {code}")

    g2 = h.TlsGate(tmp, broker.port, pki, CLIENT_CERT="required")
    code, err, c = h.tls_mqtt(g2.tls_port, pki.tls_context(None), "req-nocert", username="alice", password=b"x")
    t.check(code is None, "CLIENT_CERT=required (explicit): no certificate is refused", f"CONNACK {code}")


def cn_as_username(t, tmp, pki):
    acl = os.path.join(tmp, "acl")
    with open(acl, "w") as f:
        # Lines before the first "user" apply to anonymous clients: none here, so they may do nothing.
        f.write("user dev00001\ntopic readwrite only/dev00001/#\n")
    os.chmod(acl, 0o644)
    os.chmod(tmp, 0o711)  # mosquitto reads the ACL after dropping to user mosquitto
    broker = h.start_mosquitto(tmp, f"acl_file {acl}\n")
    sub = h.raw_client(broker.port, 4, "cn-watch", username="dev00001")
    t.eq(sub.subscribe(1, [("only/#", 1)]), [1], "setup: a subscriber directly on the broker as dev00001")
    t.check(broker.log.search(r"as cn-watch \(.*u'dev00001'") is not None,
            "setup: the broker logs a client's username as u'dev00001'")
    # Setup: the ACL really refuses anonymous publishers and lets dev00001 publish.
    anon = h.raw_client(broker.port, 4, "cn-anon")
    anon.publish_wait("only/dev00001/x", b"anon-direct", 1, 1)
    me = h.raw_client(broker.port, 4, "cn-direct", username="dev00001")
    me.publish_wait("only/dev00001/x", b"marker-0", 1, 1)
    got = [m.payload for m in sub.collect_until(lambda m: m.payload.startswith(b"marker"), 3.0)[0]]
    t.eq(got, [b"marker-0"], "setup: the broker drops an anonymous publish and delivers dev00001's")
    anon.close()
    me.close()

    plain = h.TlsGate(tmp, broker.port, pki)  # without USE_CN_AS_USERNAME: the client is anonymous
    g = h.TlsGate(tmp, broker.port, pki, USE_CN_AS_USERNAME="true")
    bmark = broker.log.mark()
    rc, err = h.mosq_pub(plain.tls_port, pki.mosq_args("client"), "cn-off", topic="only/dev00001/x")
    t.check(rc == 0, "USE_CN_AS_USERNAME off: mosquitto_pub with client.crt connects", err)
    me = h.raw_client(broker.port, 4, "cn-direct2", username="dev00001")
    me.publish_wait("only/dev00001/x", b"marker-1", 1, 1)
    got = [m.payload for m in sub.collect_until(lambda m: m.payload.startswith(b"marker"), 3.0)[0]]
    t.eq(got, [b"marker-1"], "USE_CN_AS_USERNAME off: the broker saw no username (publish dropped)")

    r = subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(g.tls_port), *pki.mosq_args("client"),
                          "-i", "cn-on", "-t", "only/dev00001/x", "-m", "via-cn", "-q", "1"],
                         capture_output=True, text=True, timeout=10)
    t.check(r.returncode == 0, "USE_CN_AS_USERNAME=true: mosquitto_pub with client.crt connects", r.stderr)
    m = sub.collect_until(lambda m: True, 3.0)[0]
    t.eq([x.payload for x in m], [b"via-cn"], "USE_CN_AS_USERNAME=true: the ACL of user dev00001 let it publish")
    t.check(broker.log.search(r"as cn-on \(.*u'dev00001'", bmark) is not None,
            "USE_CN_AS_USERNAME=true: the broker logged username dev00001")

    # A username the client sends itself is replaced by the CN.
    code, err, c = h.tls_mqtt(g.tls_port, pki.tls_context("client"), "cn-liar", username="someone-else",
                              password=b"pw")
    t.eq(code, 0, "USE_CN_AS_USERNAME=true: a client sending username someone-else connects")
    if c:
        c.publish_wait("only/dev00001/x", b"liar", 1, 1)
        c.close()
    m = sub.collect_until(lambda m: True, 3.0)[0]
    t.eq([x.payload for x in m], [b"liar"], "USE_CN_AS_USERNAME=true: ... and publishes as dev00001")
    t.check(broker.log.search(r"as cn-liar \(.*u'dev00001'", bmark) is not None,
            "USE_CN_AS_USERNAME=true: the broker logged username dev00001, not someone-else")

    # With optional certificates, a client without one has no CN: it must not keep the
    # username it sent (it would choose its own identity), so it is refused.
    opt = h.TlsGate(tmp, broker.port, pki, USE_CN_AS_USERNAME="true", CLIENT_CERT="optional")
    bmark = broker.log.mark()
    code, err, c = h.tls_mqtt(opt.tls_port, pki.tls_context(None), "cn-imposter", username="dev00001",
                              password=b"pw")
    if c:
        c.close()
    t.eq(code, 4, "USE_CN_AS_USERNAME + CLIENT_CERT=optional, no certificate, username dev00001: CONNACK 4")
    t.check(not broker.saw_client("cn-imposter", bmark), "... and the broker never saw it")
    code, err, c = h.tls_mqtt(opt.tls_port, pki.tls_context("client"), "cn-opt-good")
    if c:
        c.close()
    t.eq(code, 0, "USE_CN_AS_USERNAME + CLIENT_CERT=optional, with client.crt: CONNACK 0")
    sub.close()


def min_version(t, tmp, pki, broker):
    base = h.TlsGate(tmp, broker.port, pki, prefix=TLS, client_ca=None)
    ca = ["-CAfile", pki["ca.crt"], "-verify_return_error"]
    r = h.s_client(base.tls_port, "-tls1_2", *ca)
    t.check(r.returncode == 0 and "TLSv1.2" in r.out, "control: the default TLS listener takes TLS 1.2",
            r.out[-300:])
    g = h.TlsGate(tmp, broker.port, pki, prefix=TLS, client_ca=None, TLS_MIN_VERSION="1.3")
    r = h.s_client(g.tls_port, "-tls1_2", *ca)
    t.check(r.returncode != 0 or "Cipher is (NONE)" in r.out, "TLS_MIN_VERSION=1.3: s_client -tls1_2 fails",
            r.out[-300:])
    r = h.s_client(g.tls_port, "-tls1_3", *ca)
    t.check(r.returncode == 0 and "TLSv1.3" in r.out and "Cipher is (NONE)" not in r.out,
            "TLS_MIN_VERSION=1.3: s_client -tls1_3 works", r.out[-300:])
    t.eq(h.mosq_pub_sub(g.tls_port, broker, pki.mosq_args(None), "min13"), "",
         "TLS_MIN_VERSION=1.3: mosquitto_pub/sub work")


def main():
    h.need_binaries()
    t = h.Checks("tls_clients")
    with tempfile.TemporaryDirectory() as tmp:
        pki = h.Pki(tmp)
        broker = h.start_mosquitto(tmp)
        t.case("refused certificates", refusals, t, tmp, pki, broker)
        t.case("CLIENT_CERT=optional", optional, t, tmp, pki, broker)
        t.case("USE_CN_AS_USERNAME", cn_as_username, t, tmp, pki)
        t.case("TLS_MIN_VERSION", min_version, t, tmp, pki, broker)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
