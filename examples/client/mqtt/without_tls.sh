#!/usr/bin/env bash
# Subscribe and publish through mgate's plain MQTT listener (1884 by default)
# with the mosquitto clients, in MQTT 3.1.1 and 5.0.
set -euo pipefail
host=${MGATE_HOST:-127.0.0.1}
port=${MGATE_PORT:-1884}

for v in 311 5; do
  mosquitto_sub -h "$host" -p "$port" -V "$v" -t "mgate/demo/$v" -C 1 -W 5 -v &
  sub=$!
  sleep 0.5
  mosquitto_pub -h "$host" -p "$port" -V "$v" -t "mgate/demo/$v" -m "hello over MQTT $v through mgate"
  wait "$sub"
done
