#!/bin/sh
# Self-test of the example responder against fresh ssl/gen.sh certificates,
# in both OCSP modes, inside a loopback-only network namespace (it re-runs
# itself under netns-run.sh).  Needs root or unprivileged user namespaces,
# curl and python3.  Prints one line per check; exits 1 if one failed.
#   examples/server/ocsp/check.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${MGATE_OCSP_CHECK_NETNS:-}" ]; then
  MGATE_OCSP_CHECK_NETNS=1 exec "$here/netns-run.sh" "$0" "$@"
fi

tmp=$(mktemp -d)
rpid=
cleanup() {
  [ -z "$rpid" ] || { kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null || true; }
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
d=$tmp/pki
"$here/../../../ssl/gen.sh" "$d"
fails=0

say() {
  if [ "$1" = ok ]; then echo "ok    $2"; else echo "FAIL  $2"; fails=$((fails + 1)); fi
}

# status ISSUER CERT URL WANT: an `openssl ocsp` query with a nonce must
# verify and report WANT (good, revoked, unknown).
status() {
  out=$(openssl ocsp -issuer "$d/$1.crt" -cert "$d/$2.crt" -url "$3" -CAfile "$d/ca.crt" \
    -nonce -timeout 5 2>&1) || true
  case $out in
    *"Response verify OK"*"$d/$2.crt: $4"*) say ok "$2 via $3: $4" ;;
    *) say FAIL "$2 via $3: want $4, got: $(echo "$out" | tr '\n' ' ')" ;;
  esac
}

start() {
  log=$tmp/responder-$1.log
  OCSP_MODE=$1 OCSP_INDEX=${2:-$d/index.txt} OCSP_NMIN=5 "$here/responder.sh" "$d" >"$log" 2>&1 &
  rpid=$!
  i=0
  until grep -q '^responder: ready' "$log"; do
    i=$((i + 1))
    if [ $i -ge 100 ] || ! kill -0 $rpid 2>/dev/null; then
      cat "$log"
      say FAIL "$1: start"
      return 1
    fi
    sleep 0.1
  done
  say ok "$1: $(grep '^responder: ready' "$log")"
}

stop() {
  kill $rpid
  wait $rpid || true
  rpid=
  n=$(grep -c 'ocsp: Received request' "$log" || true)
  say ok "$1: stopped; the responders logged $n OCSP requests"
}

for mode in port reqin; do
  start $mode
  root_url=$(openssl x509 -in "$d/client.crt" -noout -ocsp_uri)
  int_url=$(openssl x509 -in "$d/int-client.crt" -noout -ocsp_uri)
  status ca client "$root_url" good
  status ca revoked "$root_url" revoked
  status ca unlisted "$root_url" unknown
  status ca expired "$root_url" good
  status ca int-ca "$root_url" good
  status int-ca int-client "$int_url" good
  status int-ca int-revoked "$int_url" revoked

  # GET (RFC 6960 A.1): the base64 DER request as the path (`openssl ocsp
  # -port` takes it only right after the first slash).
  openssl ocsp -issuer "$d/ca.crt" -cert "$d/revoked.crt" -no_nonce -reqout "$tmp/req.der" >/dev/null 2>&1
  b64=$(openssl base64 -A -in "$tmp/req.der" | sed 's/+/%2B/g; s/\//%2F/g; s/=/%3D/g')
  if curl -sf -o "$tmp/resp.der" "${root_url%/ocsp}/$b64" &&
     openssl ocsp -respin "$tmp/resp.der" -issuer "$d/ca.crt" -cert "$d/revoked.crt" \
       -CAfile "$d/ca.crt" -no_nonce 2>&1 | grep -q ': revoked'; then
    say ok "$mode: OCSP over GET: revoked"
  else
    say FAIL "$mode: OCSP over GET"
  fi

  # The CRL from the distribution point and the CA from caIssuers (DER).
  crl_url=$(openssl x509 -in "$d/client.crt" -noout -ext crlDistributionPoints | sed -n 's/.*URI://p')
  ca_url=$(openssl x509 -in "$d/client.crt" -noout -ext authorityInfoAccess | sed -n 's/.*CA Issuers - URI://p')
  curl -sf -o "$tmp/crl.der" "$crl_url" || say FAIL "$mode: download $crl_url"
  curl -sf -o "$tmp/ca.der" "$ca_url" || say FAIL "$mode: download $ca_url"
  openssl x509 -inform DER -in "$tmp/ca.der" -out "$tmp/ca.pem" 2>/dev/null || true
  if openssl verify -crl_check -CRLfile "$tmp/crl.der" -CAfile "$tmp/ca.pem" "$d/revoked.crt" 2>&1 |
     grep -q 'certificate revoked'; then
    say ok "$mode: $crl_url and $ca_url: revoked.crt is revoked"
  else
    say FAIL "$mode: CRL from $crl_url"
  fi
  for f in crl.pem ca.pem int-crl.der int-ca.der crl-expired.der; do
    curl -sf -o /dev/null "http://127.0.0.1:8081/$f" || say FAIL "$mode: download $f"
  done

  # Revoking while it runs: the next answer says revoked.
  # `openssl ocsp -port` looks at its index before it waits for a
  # connection, so its first answer after the change is still the old one.
  "$here/../../../ssl/revoke.sh" "$d" client
  [ $mode = reqin ] || status ca client "$root_url" good
  status ca client "$root_url" revoked
  stop $mode
  "$here/../../../ssl/gen.sh" "$d"
done

# The variant where the root has revoked the intermediate CA.
start reqin "$d/index-int-revoked.txt"
status ca int-ca "$(openssl x509 -in "$d/int-ca.crt" -noout -ocsp_uri)" revoked
status int-ca int-client "$(openssl x509 -in "$d/int-client.crt" -noout -ocsp_uri)" good
stop reqin

# With nothing listening, a client gets an error, not an answer.
if openssl ocsp -issuer "$d/ca.crt" -cert "$d/client.crt" -url http://127.0.0.1:8080/ocsp \
     -CAfile "$d/ca.crt" -timeout 2 >/dev/null 2>&1; then
  say FAIL "responder down: the query succeeded"
else
  say ok "responder down: the query fails"
fi

if [ $fails -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
