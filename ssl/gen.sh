#!/bin/sh
# Make a throwaway PKI for mgate's TLS and mTLS tests and examples, with the
# openssl command line only.  docs/TLS-CERTIFICATES.md lists every file.
#
#   ssl/gen.sh OUTDIR [--responder-url URL] [--crl-url URL] [--ca-issuers-url URL]
#                     [--int-responder-url URL] [--int-crl-url URL]
#                     [--int-ca-issuers-url URL]
#
# OUTDIR is emptied of earlier output and filled again.  Keys are EC P-256,
# readable by the running user only; certificates, CRLs and the CA databases
# are world-readable.  Serial numbers are fixed, key material is not.
# Not for production: the keys are unencrypted and the serials predictable.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

usage() {
  echo "usage: $0 OUTDIR [--responder-url URL] [--crl-url URL] [--ca-issuers-url URL]" >&2
  echo "       [--int-responder-url URL] [--int-crl-url URL] [--int-ca-issuers-url URL]" >&2
  exit 2
}

[ $# -ge 1 ] || usage
out=$1
shift
responder_url=http://127.0.0.1:8080/ocsp
crl_url=http://127.0.0.1:8081/crl.der
ca_issuers_url=http://127.0.0.1:8081/ca.der
int_responder_url=http://127.0.0.1:8082/ocsp
int_crl_url=
int_ca_issuers_url=
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case $1 in
    --responder-url) responder_url=$2 ;;
    --crl-url) crl_url=$2 ;;
    --ca-issuers-url) ca_issuers_url=$2 ;;
    --int-responder-url) int_responder_url=$2 ;;
    --int-crl-url) int_crl_url=$2 ;;
    --int-ca-issuers-url) int_ca_issuers_url=$2 ;;
    *) usage ;;
  esac
  shift 2
done
# The intermediate's CRL and certificate sit next to the root's by default,
# in the same form (DER, as RFC 5280 asks, unless the root's URL ends in .pem).
pem_or_der() { case $1 in *.pem) echo pem ;; *) echo der ;; esac; }
[ -n "$int_crl_url" ] || int_crl_url=${crl_url%/*}/int-crl.$(pem_or_der "$crl_url")
[ -n "$int_ca_issuers_url" ] ||
  int_ca_issuers_url=${ca_issuers_url%/*}/int-ca.$(pem_or_der "$ca_issuers_url")
for u in "$responder_url" "$crl_url" "$ca_issuers_url" \
         "$int_responder_url" "$int_crl_url" "$int_ca_issuers_url"; do
  case $u in
    *[!A-Za-z0-9:/._~%?=\&@+\[\]-]*) echo "$0: unexpected character in URL: $u" >&2; exit 2 ;;
  esac
done

case $PWD/$out in
  *[\$\#\"\\]*) echo "$0: OUTDIR may not contain \$ # \" or \\ (openssl.cnf syntax)" >&2; exit 2 ;;
esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$out"
# Regenerate only over an earlier output (or into an empty directory), and
# delete only the kinds of file this script makes.
if [ -n "$(ls -A)" ] && ! grep -qs '^# Written by ssl/gen.sh' openssl.cnf; then
  echo "$0: $out is not empty and not an earlier output of this script" >&2
  exit 1
fi
rm -rf db www ./*.crt ./*.key ./*.pem ./index*.txt* openssl.cnf
mkdir -p db/newcerts www
chmod 755 . db db/newcerts www

# A UTC time N seconds before now, in the form openssl ca takes (GNU date,
# then BSD date, then a fixed past date good enough for "in the past").
utc_ago() {
  t=$(( $(date -u +%s) - $1 ))
  date -u -d "@$t" +%Y%m%d%H%M%SZ 2>/dev/null ||
    date -u -r "$t" +%Y%m%d%H%M%SZ 2>/dev/null ||
    echo 20200101000000Z
}

# ca_section NAME DATABASE STATE CERT: an `openssl ca` section; its serial
# and CRL number are db/STATE.serial and db/STATE.crlnumber, its certificate
# and key CERT.crt and CERT.key.
ca_section() {
  cat <<EOF

[ $1 ]
database = \$out/$2
new_certs_dir = \$out/db/newcerts
serial = \$out/db/$3.serial
crlnumber = \$out/db/$3.crlnumber
certificate = \$out/$4.crt
private_key = \$out/$4.key
default_md = sha256
default_days = 825
default_crl_days = 30
policy = policy_any
preserve = yes
unique_subject = no
email_in_dn = no
copy_extensions = none
crl_extensions = crl_ext
EOF
}

# ext SECTION BASIC_CONSTRAINTS KEY_USAGE [LINE...]: an extension section.
ext() {
  printf '\n[ %s ]\nbasicConstraints = critical, %s\n' "$1" "$2"
  printf 'keyUsage = critical, %s\nsubjectKeyIdentifier = hash\n' "$3"
  shift 3
  for line in "$@"; do printf '%s\n' "$line"; done
}

aki="authorityKeyIdentifier = keyid:always"
root_aia="authorityInfoAccess = OCSP;URI:$responder_url, caIssuers;URI:$ca_issuers_url"
root_cdp="crlDistributionPoints = URI:$crl_url"
int_aia="authorityInfoAccess = OCSP;URI:$int_responder_url, caIssuers;URI:$int_ca_issuers_url"
int_cdp="crlDistributionPoints = URI:$int_crl_url"
{
  printf '# Written by ssl/gen.sh for %s; used by ssl/revoke.sh.\nout = %s\n' "$out" "$out"
  printf '\n[ req ]\ndistinguished_name = req_dn\nprompt = no\n[ req_dn ]\n'
  printf '\n[ policy_any ]\norganizationName = optional\ncommonName = supplied\n'
  printf '\n[ crl_ext ]\n%s\n' "$aki"
  ca_section ca_root index.txt root ca
  ca_section ca_int int-index.txt int int-ca
  # The root's database in a world where the intermediate CA has been revoked.
  ca_section ca_root_int_revoked index-int-revoked.txt root-int-revoked ca
  ext v3_root CA:true "keyCertSign, cRLSign"
  ext v3_int "CA:true, pathlen:0" "keyCertSign, cRLSign" "$aki" "$root_aia" "$root_cdp"
  ext v3_server CA:false digitalSignature "$aki" "extendedKeyUsage = serverAuth" \
    "subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1"
  ext v3_client CA:false digitalSignature "$aki" "extendedKeyUsage = clientAuth" \
    "$root_aia" "$root_cdp"
  ext v3_int_client CA:false digitalSignature "$aki" "extendedKeyUsage = clientAuth" \
    "$int_aia" "$int_cdp"
  ext v3_ocsp CA:false digitalSignature "$aki" "extendedKeyUsage = critical, OCSPSigning" \
    "noCheck = ignored"
  # The unknown CA's client certificate: no AIA, no CRL distribution point.
  ext v3_plain_client CA:false digitalSignature "$aki" "extendedKeyUsage = clientAuth"
} > openssl.cnf
export OPENSSL_CONF="$out/openssl.cnf"

: > index.txt
: > int-index.txt
echo 1000 > db/root.serial
echo 2000 > db/int.serial
echo 01 > db/root.crlnumber
echo 01 > db/int.crlnumber

# key NAME: a new P-256 key in NAME.key, mode 600 from the start.
key() {
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -pkeyopt ec_param_enc:named_curve -out "$1.key" 2>/dev/null)
}

# selfsigned NAME SUBJECT SERIAL: a root CA certificate valid for 10 years.
selfsigned() {
  key "$1"
  openssl req -new -x509 -key "$1.key" -subj "$2" -set_serial "$3" -days 3650 \
    -sha256 -extensions v3_root -out "$1.crt"
}

# issue CA_SECTION NAME SUBJECT EXTENSIONS [openssl ca options...]
issue() {
  s=$1 n=$2 subj=$3 ext=$4
  shift 4
  key "$n"
  openssl req -new -key "$n.key" -subj "$subj" -out "db/$n.csr"
  openssl ca -batch -notext -name "$s" -extensions "$ext" -in "db/$n.csr" \
    -out "$n.crt" "$@" 2>/dev/null
  rm -f "db/$n.csr"
}

# offdb CA_NAME NAME SUBJECT EXTENSIONS SERIAL: signed by CA_NAME.crt without
# going through its database, so its responder does not know it.
offdb() {
  key "$2"
  openssl req -new -key "$2.key" -subj "$3" -out "db/$2.csr"
  openssl x509 -req -in "db/$2.csr" -CA "$1.crt" -CAkey "$1.key" -set_serial "$5" \
    -days 825 -sha256 -extfile "$OPENSSL_CONF" -extensions "$4" -out "$2.crt" 2>/dev/null
  rm -f "db/$2.csr"
}

o="/O=mgate test"
selfsigned ca "$o/CN=mgate test root CA" 1
issue ca_root ocsp "$o/CN=mgate test root OCSP responder" v3_ocsp                  # 1000
issue ca_root server "$o/CN=localhost" v3_server                                   # 1001
issue ca_root client "$o/CN=dev00001" v3_client                                    # 1002
issue ca_root revoked "$o/CN=revoked-device" v3_client                             # 1003
issue ca_root expired "$o/CN=expired-device" v3_client \
  -startdate "$(utc_ago 259200)" -enddate "$(utc_ago 86400)"                      # 1004
issue ca_root int-ca "$o/CN=mgate test intermediate CA" v3_int -days 1825          # 1005
issue ca_root server2 "$o/CN=localhost" v3_server                                  # 1006
offdb ca unlisted "$o/CN=unlisted-device" v3_client 0x1fff
issue ca_int int-ocsp "$o/CN=mgate test intermediate OCSP responder" v3_ocsp       # 2000
issue ca_int int-client "$o/CN=dev00002" v3_int_client                             # 2001
issue ca_int int-revoked "$o/CN=int-revoked-device" v3_int_client                  # 2002
selfsigned unknown-ca "/O=somebody else/CN=unknown test CA" 1
offdb unknown-ca unknown "/O=somebody else/CN=unknown-device" v3_plain_client 0x3001

cat int-client.crt int-ca.crt > int-client-chain.crt
cat int-revoked.crt int-ca.crt > int-revoked-chain.crt
cat int-ca.crt ca.crt > ca-chain.crt

# The variant database starts as a copy, before any revocation.
cp index.txt index-int-revoked.txt
cp db/root.serial db/root-int-revoked.serial
echo 01 > db/root-int-revoked.crlnumber
for c in revoked int-ca; do
  openssl ca -name ca_root_int_revoked -revoke $c.crt -crl_reason keyCompromise 2>/dev/null
done
openssl ca -name ca_root_int_revoked -gencrl -crldays 30 -out crl-int-revoked.pem 2>/dev/null

openssl ca -name ca_root -revoke revoked.crt -crl_reason keyCompromise 2>/dev/null
openssl ca -name ca_int -revoke int-revoked.crt -crl_reason keyCompromise 2>/dev/null
openssl ca -name ca_root -gencrl -crl_lastupdate "$(utc_ago 172800)" \
  -crl_nextupdate "$(utc_ago 86400)" -out crl-expired.pem 2>/dev/null

# crl.pem, int-crl.pem, crl-chain.pem, www/, modes.
"$here/revoke.sh" "$out"
