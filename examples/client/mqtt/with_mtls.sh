#!/usr/bin/env bash
# Connect to mgate's mutual-TLS listener (8884 by default) with each test
# certificate of ssl/ (make -C ssl) and say what happened against what
# should happen: a good certificate passes, the others are refused.
#   MGATE_HOST       127.0.0.1 (the server certificate is for localhost,
#                    127.0.0.1 and ::1)
#   MGATE_MTLS_PORT  8884
#   MGATE_SSL_DIR    ssl/certs
#   MGATE_MQTT_WITH_MTLS_CERT_VERIFICATION_METHODS
#                    the listener's revocation checks, which decide what
#                    should happen to revoked and unlisted certificates:
#                    ocsp (the default here, as in the Go mGate's demo), crl,
#                    "ocsp,crl", or "" for none.  Revocation needs the
#                    responder: examples/server/ocsp/responder.sh ssl/certs
# Exits 1 if any case did not go as it should.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ssl=${MGATE_SSL_DIR:-$here/../../../ssl/certs}
host=${MGATE_HOST:-127.0.0.1}
port=${MGATE_MTLS_PORT:-8884}
methods=${MGATE_MQTT_WITH_MTLS_CERT_VERIFICATION_METHODS-ocsp}
methods=${methods,,}
[ -r "$ssl/client.key" ] || { echo "$0: no $ssl/client.key: run make -C ssl" >&2; exit 1; }
topic=mgate/demo/mtls
bad=0

# What the revocation checks make of a revoked certificate, and of one the
# CA issued but its responder does not know (OCSP "unknown"; no CRL lists it).
revoked=passes unlisted=passes
[[ $methods == *ocsp* || $methods == *crl* ]] && revoked=refused
[[ $methods == *ocsp* ]] && unlisted=refused

# try NAME WANT CERT KEY: publish at QoS 1 (so the client waits for the
# server's answer) with that client certificate ("" for none).
try() {
  local name=$1 want=$2 cert=$3 key=$4 got out
  local args=(-h "$host" -p "$port" --cafile "$ssl/ca.crt" -q 1 -t "$topic"
    -m "from the $name certificate")
  [ -z "$cert" ] || args+=(--cert "$ssl/$cert" --key "$ssl/$key")
  if out=$(timeout 15 mosquitto_pub "${args[@]}" 2>&1); then got=passes; else got=refused; fi
  if [ "$got" = "$want" ]; then
    printf 'ok    %-28s %s\n' "$name:" "$got${out:+ ($out)}"
  else
    printf 'WRONG %-28s %s, should be %s\n' "$name:" "$got${out:+ ($out)}" "$want"
    bad=$((bad + 1))
  fi
}

echo "mTLS listener $host:$port, revocation checks: ${methods:-none}"

# The good device, end to end: a subscriber sees the message.
subout=$(mktemp)
trap 'rm -f "$subout"' EXIT
mosquitto_sub -h "$host" -p "$port" --cafile "$ssl/ca.crt" --cert "$ssl/client.crt" \
  --key "$ssl/client.key" -t "$topic" -C 1 -W 5 -v > "$subout" 2>&1 &
sub=$!
sleep 0.5
try "good (dev00001)" passes client.crt client.key
if wait "$sub"; then
  printf 'ok    %-28s %s\n' "good, the subscriber got:" "$(cat "$subout")"
else
  printf 'WRONG %-28s %s\n' "good, the subscriber:" "$(cat "$subout")"
  bad=$((bad + 1))
fi

# The client sends its intermediate CA along (the listener trusts the root).
try "intermediate (dev00002)" passes int-client-chain.crt int-client.key
try "revoked" "$revoked" revoked.crt revoked.key
try "revoked under intermediate" "$revoked" int-revoked-chain.crt int-revoked.key
try "unlisted (OCSP unknown)" "$unlisted" unlisted.crt unlisted.key
try "expired" refused expired.crt expired.key
try "unknown CA" refused unknown.crt unknown.key
try "no certificate" refused "" ""

if [ "$bad" -ne 0 ]; then
  echo "$bad case(s) went wrong"
  exit 1
fi
echo "all cases went as they should"
