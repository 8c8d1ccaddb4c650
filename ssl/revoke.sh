#!/bin/sh
# Revoke certificates of an ssl/gen.sh output and publish fresh CRLs.
#   ssl/revoke.sh OUTDIR [NAME...]
# NAME is a certificate in OUTDIR, with or without ".crt" (client, int-client,
# ...).  Each is marked revoked (reason $REASON, default keyCompromise) in the
# database of the CA that issued it: index.txt (root) or int-index.txt
# (intermediate).  A running `openssl ocsp` responder rereads its index and
# answers "revoked" from its next request on.  Then crl.pem, int-crl.pem
# (30 days) and crl-chain.pem are issued again and www/ is refreshed.
# With no NAME, only the CRLs and www/ are made again.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [NAME...]" >&2; exit 2; }
cd "$1"
shift
[ -f openssl.cnf ] || { echo "$0: no openssl.cnf here: run ssl/gen.sh first" >&2; exit 1; }
export OPENSSL_CONF="$PWD/openssl.cnf"
int_hash=$(openssl x509 -in int-ca.crt -noout -subject_hash)

for n in "$@"; do
  crt=${n%.crt}.crt
  if [ "$(openssl x509 -in "$crt" -noout -issuer_hash)" = "$int_hash" ]; then
    section=ca_int
  else
    section=ca_root
  fi
  openssl ca -name $section -revoke "$crt" -crl_reason "${REASON:-keyCompromise}" 2>/dev/null ||
    { echo "$0: cannot revoke $crt (already revoked, or not issued from the database)" >&2; exit 1; }
done

for s in root int; do
  [ $s = root ] && crl=crl.pem || crl=int-crl.pem
  openssl ca -name ca_$s -gencrl -crldays 30 -out "$crl.new" 2>/dev/null
  mv "$crl.new" "$crl"
done
cat int-crl.pem crl.pem > crl-chain.pem

# www/: only public files, PEM as named in the certificates, DER beside them.
mkdir -p www
for f in ca int-ca; do
  cp $f.crt www/$f.pem
  openssl x509 -in $f.crt -outform DER -out www/$f.der
done
for f in crl int-crl crl-expired crl-int-revoked; do
  [ -f $f.pem ] || continue
  cp $f.pem www/$f.pem
  openssl crl -in $f.pem -outform DER -out www/$f.der
done

chmod 600 ./*.key
chmod 644 ./*.crt ./*.pem ./index*.txt* openssl.cnf www/*
rm -f ./*.old db/*.old
