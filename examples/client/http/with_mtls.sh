#!/usr/bin/env bash
# POST through mgate's HTTPS listener with client certificates (8088 by
# default, checked with OCSP against examples/server/ocsp): a good certificate
# gets through; revoked, unknown-CA and no certificate are refused in the TLS
# handshake and never reach the target.
#   MGATE_HOST            localhost
#   MGATE_HTTP_MTLS_PORT  8088
#   MGATE_SSL_DIR         ssl/certs
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ssl=${MGATE_SSL_DIR:-$here/../../../ssl/certs}
host=${MGATE_HOST:-localhost}
port=${MGATE_HTTP_MTLS_PORT:-8088}
[ -r "$ssl/ca.crt" ] || { echo "$0: no $ssl/ca.crt: run make -C ssl" >&2; exit 1; }
url="https://$host:$port/mgate-http/messages/http"
msg='{"message": "Hello mGate"}'
post() { # certificate name (or "none"), then what it shows
  local cert=()
  [ "$1" = none ] || cert=(--cert "$ssl/$1.crt" --key "$ssl/$1.key")
  echo "== $2"
  curl -sS -i --cacert "$ssl/ca.crt" "${cert[@]}" "$url" -H "Content-Type: application/json" \
    -H "Authorization: TOKEN" -d "$msg" 2>&1
  echo
}
post client "good certificate: 200 from the target"
post revoked "revoked certificate: refused in the handshake (OCSP)"
post unknown "certificate from an unknown CA: refused"
post none "no certificate: refused"
