#!/bin/sh
# The OCSP responders and CRL/CA file server that the certificates of
# ssl/gen.sh point at, on loopback only.  Runs in the foreground until
# SIGINT/SIGTERM, then stops what it started.
#
#   responder.sh OUTDIR [PORT_OCSP [PORT_HTTP [PORT_OCSP_INT]]]
#
#   PORT_OCSP      root CA's responder (answers for client, revoked, int-ca...)  8080
#   PORT_HTTP      OUTDIR/www: ca.pem, crl.pem, int-ca.pem, int-crl.pem, ...     8081
#   PORT_OCSP_INT  intermediate CA's responder (int-client, int-revoked); 0: none 8082
#
# Environment:
#   OCSP_MODE   port:  the real `openssl ocsp -port` daemon.  It listens on
#                      every interface, so it is started only when this network
#                      namespace has no address outside lo (run this under
#                      netns-run.sh).  It serves one connection at a time, and a
#                      connection closed before it sends a request makes it spin
#                      forever (OpenSSL 3.0): never probe its port.
#               reqin: serve.py on 127.0.0.1 runs `openssl ocsp -reqin` per
#                      request: the same answers, any namespace, any number of
#                      clients, probes are harmless.
#               auto (default): port in a loopback-only namespace, else reqin.
#   OCSP_NMIN   minutes until the nextUpdate of each answer (default 60; 0: no
#               nextUpdate, so answers cannot be cached).
#   OCSP_INDEX  the root responder's database (default OUTDIR/index.txt; use
#               OUTDIR/index-int-revoked.txt for "the intermediate is revoked").
#
# Once everything listens it prints "responder: ready"; wait for that line
# (or sleep) rather than connecting to the ports to see whether they are up.
# Both modes log "ocsp: Received request" once per OCSP request; the file
# server logs one line per download.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ] || [ $# -gt 4 ]; then
  echo "usage: $0 OUTDIR [PORT_OCSP [PORT_HTTP [PORT_OCSP_INT]]]" >&2
  exit 2
fi
dir=$(cd "$1" && pwd)
port_ocsp=${2:-8080}
port_http=${3:-8081}
port_int=${4:-8082}
index=${OCSP_INDEX:-$dir/index.txt}
nmin=${OCSP_NMIN:-60}
mode=${OCSP_MODE:-auto}
for f in "$index" "$dir/int-index.txt" "$dir/ca.crt" "$dir/ocsp.crt" "$dir/ocsp.key" "$dir/www"; do
  [ -e "$f" ] || { echo "$0: $f is missing (run ssl/gen.sh $dir)" >&2; exit 1; }
done

# True when no interface but lo has an address in this network namespace.
loopback_only() {
  [ -z "$(ip -o addr show 2>/dev/null | awk '$2 != "lo"')" ] &&
    ip -o addr show dev lo 2>/dev/null | grep -q 'inet 127\.0\.0\.1/'
}

case $mode in
  auto) if loopback_only; then mode=port; else mode=reqin; fi ;;
  port)
    if ! loopback_only; then
      echo "$0: OCSP_MODE=port would listen on every interface here; run under" >&2
      echo "  $here/netns-run.sh, or use OCSP_MODE=reqin" >&2
      exit 1
    fi ;;
  reqin) ;;
  *) echo "$0: OCSP_MODE must be auto, port or reqin" >&2; exit 2 ;;
esac

pids=
sleeper=
stop() {
  trap - INT TERM EXIT
  for p in $pids $sleeper; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' INT TERM

# Whether something listens on TCP port $1, from /proc (a connection would
# stall `openssl ocsp -port`).
listening() {
  hex=$(printf ':%04X' "$1")
  awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

root="$index,$dir/ca.crt,$dir/ocsp.crt,$dir/ocsp.key"
int="$dir/int-index.txt,$dir/int-ca.crt,$dir/int-ocsp.crt,$dir/int-ocsp.key"
nmin_opt=
[ "$nmin" -gt 0 ] && nmin_opt="-nmin $nmin"
if [ "$mode" = port ]; then
  # shellcheck disable=SC2086 # $nmin_opt is zero or two words
  openssl ocsp -index "$index" -CA "$dir/ca.crt" -rsigner "$dir/ocsp.crt" \
    -rkey "$dir/ocsp.key" -port "$port_ocsp" $nmin_opt -ignore_err &
  pids="$pids $!"
  if [ "$port_int" != 0 ]; then
    # shellcheck disable=SC2086
    openssl ocsp -index "$dir/int-index.txt" -CA "$dir/int-ca.crt" -rsigner "$dir/int-ocsp.crt" \
      -rkey "$dir/int-ocsp.key" -port "$port_int" $nmin_opt -ignore_err &
    pids="$pids $!"
  fi
  python3 "$here/serve.py" --www "$dir/www" --http-port "$port_http" &
  pids="$pids $!"
else
  set -- --ocsp "$port_ocsp,$root"
  [ "$port_int" != 0 ] && set -- "$@" --ocsp "$port_int,$int"
  python3 "$here/serve.py" --www "$dir/www" --http-port "$port_http" --nmin "$nmin" "$@" &
  pids="$pids $!"
fi

ports="$port_ocsp $port_http"
[ "$port_int" != 0 ] && ports="$ports $port_int"
for p in $ports; do
  i=0
  until listening "$p"; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "$0: nothing listens on port $p after 10 s" >&2; exit 1; }
    for q in $pids; do
      kill -0 "$q" 2>/dev/null || { echo "$0: a server exited (port taken?)" >&2; exit 1; }
    done
    sleep 0.1
  done
done
echo "responder: ready ($mode mode; OCSP on $port_ocsp, intermediate OCSP on $port_int, files on 127.0.0.1:$port_http)"

# Until a signal, or until one of them dies.
while :; do
  for q in $pids; do
    kill -0 "$q" 2>/dev/null || { echo "$0: process $q exited" >&2; exit 1; }
  done
  sleep 1 &
  sleeper=$!
  wait $sleeper || true
done
