#!/usr/bin/env bash
# Connect to mgate's MQTT-over-WebSocket mutual-TLS listener
# (wss://127.0.0.1:8085/mgate-ws by default) with paho-mqtt and each test
# certificate of ssl/ (make -C ssl), and say what happened against what should
# happen: a good certificate passes, the others are refused.  A subscriber with
# the good certificate shows whose messages got through.
#   MGATE_HOST        127.0.0.1 (the server certificate is for localhost,
#                     127.0.0.1 and ::1)
#   MGATE_WSS_MTLS_PORT  8085
#   MGATE_WS_PATH     /mgate-ws
#   MGATE_SSL_DIR     ssl/certs
#   MGATE_MQTT_WS_WITH_MTLS_CERT_VERIFICATION_METHODS
#                     the listener's revocation checks, which decide what
#                     should happen to revoked and unlisted certificates: ocsp
#                     (the default here, as in examples/demo.sh), crl,
#                     "ocsp,crl", or "" for none.  Revocation needs the
#                     responder: examples/server/ocsp/responder.sh ssl/certs
# Exits 1 if any case did not go as it should.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ssl=${MGATE_SSL_DIR:-$here/../../../ssl/certs}
[ -r "$ssl/client.key" ] || { echo "$0: no $ssl/client.key: run make -C ssl" >&2; exit 1; }
methods=${MGATE_MQTT_WS_WITH_MTLS_CERT_VERIFICATION_METHODS-ocsp}
exec /usr/bin/python3 - "${MGATE_HOST:-127.0.0.1}" "${MGATE_WSS_MTLS_PORT:-8085}" \
  "${MGATE_WS_PATH:-/mgate-ws}" "$ssl" "${methods,,}" <<'PY'
import os
import queue
import sys

import paho.mqtt.client as mqtt

host, port, path, ssl_dir, methods = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
topic = "mgate/demo/wss-mtls"
# What the revocation checks make of a revoked certificate, and of one the CA
# issued but its responder does not know (OCSP "unknown"; no CRL lists it).
revoked = "refused" if "ocsp" in methods or "crl" in methods else "passes"
unlisted = "refused" if "ocsp" in methods else "passes"


def client(cid, cert, key):
    """A paho client over wss with this certificate ("" for none); events go to c.events."""
    c = mqtt.Client(cid, protocol=mqtt.MQTTv311, transport="websockets")
    c.ws_set_options(path=path)
    c.tls_set(ca_certs=os.path.join(ssl_dir, "ca.crt"),
              certfile=os.path.join(ssl_dir, cert) if cert else None,
              keyfile=os.path.join(ssl_dir, key) if key else None)
    c.events = queue.Queue()
    c.on_connect = lambda cl, u, f, rc: cl.events.put(("connack", rc))
    c.on_subscribe = lambda cl, u, mid, granted: cl.events.put(("suback", granted))
    c.on_publish = lambda cl, u, mid: cl.events.put(("puback", mid))
    c.on_message = lambda cl, u, m: cl.events.put(("message", m.payload.decode()))
    c.connect(host, port, 30)  # raises when the TLS handshake (TLS 1.2) or the upgrade fails
    c.loop_start()
    return c


def expect(c, kind, timeout=5.0):
    """The value of the next event, which must be of this kind."""
    got, value = c.events.get(timeout=timeout)
    if got != kind:
        raise RuntimeError(f"{got} {value}, expected {kind}")
    return value


def attempt(name, cert, key):
    """Connect and publish at QoS 1 (so the answer comes from mgate); 'passes' or 'refused'."""
    try:
        c = client(f"wss-mtls-{(cert or 'none').split('.')[0]}", cert, key)
    except (OSError, ValueError) as e:
        return "refused", str(e).splitlines()[0] if str(e) else type(e).__name__
    try:
        rc = expect(c, "connack")
        if rc != 0:
            return "refused", f"CONNACK {rc}"
        c.publish(topic, f"from the {name} certificate", 1)
        expect(c, "puback")
        return "passes", ""
    except (queue.Empty, RuntimeError) as e:
        return "refused", str(e) or "no answer (the TLS connection was closed)"
    finally:
        c.disconnect()
        c.loop_stop()


print(f"WebSocket mTLS listener wss://{host}:{port}{path}, revocation checks: {methods or 'none'}")
bad = 0
try:
    sub = client("wss-mtls-subscriber", "client.crt", "client.key")
    expect(sub, "connack")
    sub.subscribe(topic, 1)
    expect(sub, "suback")
except (OSError, queue.Empty, RuntimeError) as e:
    sys.exit(f"the subscriber with the good certificate cannot subscribe: {e or 'no answer'}")
cases = (("good (dev00001)", "passes", "client.crt", "client.key"),
         # the client sends its intermediate CA along (the listener trusts the root)
         ("intermediate (dev00002)", "passes", "int-client-chain.crt", "int-client.key"),
         ("revoked", revoked, "revoked.crt", "revoked.key"),
         ("revoked under intermediate", revoked, "int-revoked-chain.crt", "int-revoked.key"),
         ("unlisted (OCSP unknown)", unlisted, "unlisted.crt", "unlisted.key"),
         ("expired", "refused", "expired.crt", "expired.key"),
         ("unknown CA", "refused", "unknown.crt", "unknown.key"),
         ("no certificate", "refused", "", ""))
for name, want, cert, key in cases:
    got, why = attempt(name, cert, key)
    ok = got == want
    bad += not ok
    print(f"{'ok   ' if ok else 'WRONG'} {name + ':':28s} {got}{f' ({why})' if why else ''}"
          f"{'' if ok else f', should be {want}'}")

# The subscriber (good certificate) got the messages of exactly the certificates that passed.
want = sorted(f"from the {name} certificate" for name, w, _, _ in cases if w == "passes")
got = []
while True:
    try:
        got.append(expect(sub, "message", 1.0))
    except queue.Empty:
        break
ok = sorted(got) == want
bad += not ok
print(f"{'ok   ' if ok else 'WRONG'} {'the subscriber got:':28s} {'; '.join(sorted(got)) or 'nothing'}"
      f"{'' if ok else f', should be {want}'}")
sub.disconnect()
sub.loop_stop()
print(f"{bad} case(s) went wrong" if bad else "all cases went as they should")
sys.exit(1 if bad else 0)
PY
