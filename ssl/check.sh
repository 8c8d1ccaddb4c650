#!/bin/sh
# Check the files of ssl/gen.sh offline with `openssl verify`: every
# certificate chains (or fails) the way docs/TLS-CERTIFICATES.md says.
#   ssl/check.sh OUTDIR
# Prints one line per check and exits 1 if any check did not go as expected.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
cd "$1"
fails=0

# expect WANT DESCRIPTION openssl-verify-arguments...
# WANT is "OK" or the error text openssl verify must print.
expect() {
  want=$1 what=$2
  shift 2
  got=$(openssl verify "$@" 2>&1) || true
  case $want in
    OK) case $got in *": OK") ok=1 ;; *) ok=0 ;; esac ;;
    *) case $got in *"error "*"$want"*) ok=1 ;; *) ok=0 ;; esac ;;
  esac
  if [ $ok -eq 1 ]; then
    echo "ok    $what: $want"
  else
    echo "FAIL  $what: want $want, got: $(echo "$got" | tr '\n' ' ')"
    fails=$((fails + 1))
  fi
}

# The same, trusting the root CA.
expect_ca() {
  want=$1 what=$2
  shift 2
  expect "$want" "$what" -CAfile ca.crt "$@"
}

expect_ca OK "server, SAN localhost" -purpose sslserver -verify_hostname localhost server.crt
expect_ca OK "server, SAN 127.0.0.1" -purpose sslserver -verify_ip 127.0.0.1 server.crt
expect_ca OK "server, SAN ::1" -purpose sslserver -verify_ip ::1 server.crt
expect_ca OK "second server certificate" -purpose sslserver -verify_hostname localhost server2.crt
expect_ca OK "client" -purpose sslclient client.crt
expect_ca OK "client with CRL" -purpose sslclient -crl_check -CRLfile crl.pem client.crt
expect_ca "certificate revoked" "revoked with CRL" -crl_check -CRLfile crl.pem revoked.crt
expect_ca OK "revoked without CRL" revoked.crt
expect_ca "CRL has expired" "client with expired CRL" -crl_check -CRLfile crl-expired.pem client.crt
expect_ca "certificate has expired" "expired" expired.crt
expect_ca OK "unlisted (OCSP: unknown)" -crl_check -CRLfile crl.pem unlisted.crt
expect_ca "unable to get local issuer certificate" "unknown CA" unknown.crt
expect OK "unknown with its own CA" -CAfile unknown-ca.crt unknown.crt
expect_ca OK "OCSP signer" -purpose ocsphelper ocsp.crt
expect_ca OK "intermediate OCSP signer" -untrusted int-ca.crt int-ocsp.crt
expect_ca OK "intermediate client, chain file" -untrusted int-client-chain.crt int-client.crt
expect OK "intermediate client, ca-chain.crt" -CAfile ca-chain.crt int-client.crt
expect_ca "unable to get local issuer certificate" "intermediate client without chain" int-client.crt
expect_ca OK "intermediate client, CRL depth all" -untrusted int-ca.crt -crl_check_all \
  -CRLfile crl-chain.pem int-client.crt
expect_ca "certificate revoked" "int-revoked, CRL leaf" -untrusted int-ca.crt -crl_check \
  -CRLfile int-crl.pem int-revoked.crt
expect_ca OK "intermediate client, root revoked int, leaf CRL only" -untrusted int-ca.crt \
  -crl_check -CRLfile int-crl.pem int-client.crt
expect_ca "certificate revoked" "intermediate client, root revoked int, CRL depth all" \
  -untrusted int-ca.crt -crl_check_all -CRLfile int-crl.pem -CRLfile crl-int-revoked.pem int-client.crt

for k in *.key; do
  [ "$(stat -c %a "$k")" = 600 ] || { echo "FAIL  $k is not mode 600"; fails=$((fails + 1)); }
done
if [ $fails -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
