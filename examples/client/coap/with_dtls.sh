#!/usr/bin/env bash
# CoAP over DTLS through mgate (5684 by default) with libcoap's client: a
# pre-shared key, then each test certificate of ssl/ (make -C ssl), and what
# happened against what should happen (the demo checks certificates with its
# OCSP responder: the revoked one is refused).  Exits 1 if a case went wrong.
#   MGATE_HOST 127.0.0.1, MGATE_DTLS_PORT 5684, MGATE_SSL_DIR ssl/certs
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ssl=${MGATE_SSL_DIR:-$here/../../../ssl/certs}
host=${MGATE_HOST:-127.0.0.1}
port=${MGATE_DTLS_PORT:-5684}
uri=coaps://$host:$port/time
[ -r "$ssl/client.key" ] || { echo "$0: no $ssl/client.key: run make -C ssl" >&2; exit 1; }
bad=0

# try NAME WANT ARGS...: GET /time over DTLS with those credentials.
try() {
  local name=$1 want=$2 got out
  shift 2
  # the answer is the server's clock alone ("Dec 06 08:18:29"); libcoap's own
  # log lines carry milliseconds and a level
  if out=$(timeout 15 coap-client-openssl -B 5 "$@" "$uri" 2>&1) &&
    [[ $out =~ ^[A-Z][a-z]{2}\ [0-9]{2}\ [0-9]{2}:[0-9]{2}:[0-9]{2}$ ]]; then
    got=passes
  else
    got=refused
  fi
  printf '%-28s %-8s (should be %s)\n' "$name" "$got" "$want"
  [ "$got" = "$want" ] || bad=1
}

try "pre-shared key" passes -u demo-device -k demo-secret
try "wrong pre-shared key" refused -u demo-device -k not-the-secret
try "client.crt" passes -c "$ssl/client.crt" -j "$ssl/client.key" -C "$ssl/ca.crt"
try "revoked.crt (OCSP)" refused -c "$ssl/revoked.crt" -j "$ssl/revoked.key" -C "$ssl/ca.crt"
try "unknown-ca.crt" refused -c "$ssl/unknown-ca.crt" -j "$ssl/unknown-ca.key" -C "$ssl/ca.crt"
exit $bad
