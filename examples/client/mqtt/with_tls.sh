#!/usr/bin/env bash
# Subscribe and publish through mgate's MQTT-over-TLS listener (8883 by
# default) with the mosquitto clients, in MQTT 3.1.1 and 5.0.  The clients
# check mgate's certificate against the test CA of ssl/ (make -C ssl) and the
# host name; they send no certificate of their own.
#   MGATE_HOST      127.0.0.1 (the server certificate is for localhost,
#                   127.0.0.1 and ::1; another name fails the check)
#   MGATE_TLS_PORT  8883
#   MGATE_SSL_DIR   ssl/certs
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ssl=${MGATE_SSL_DIR:-$here/../../../ssl/certs}
host=${MGATE_HOST:-127.0.0.1}
port=${MGATE_TLS_PORT:-8883}
[ -r "$ssl/ca.crt" ] || { echo "$0: no $ssl/ca.crt: run make -C ssl" >&2; exit 1; }
tls=(--cafile "$ssl/ca.crt")

for v in 311 5; do
  mosquitto_sub -h "$host" -p "$port" "${tls[@]}" -V "$v" -t "mgate/demo/tls/$v" -C 1 -W 5 -v &
  sub=$!
  sleep 0.5
  mosquitto_pub -h "$host" -p "$port" "${tls[@]}" -V "$v" -q 1 -t "mgate/demo/tls/$v" \
    -m "hello over MQTT $v and TLS through mgate"
  wait "$sub"
done
