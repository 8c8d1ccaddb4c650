#!/usr/bin/env bash
# Start mgate with a local mosquitto behind it, using the example
# configuration and certificates (made in ssl/certs if missing), and the
# example OCSP/CRL responder on 127.0.0.1:8080-8082 for the mTLS listener:
# installs what is missing, builds, runs everything in the foreground until
# Ctrl-C.  Then, from another terminal:
#   examples/client/mqtt/without_tls.sh
#   examples/client/mqtt/with_tls.sh
#   examples/client/mqtt/with_mtls.sh
#   examples/client/websocket/without_tls.sh
#   examples/client/websocket/with_tls.sh
#   examples/client/websocket/with_mtls.sh
#   examples/client/http/without_tls.sh (and with_tls.sh, with_mtls.sh, websocket.sh)
#   examples/client/coap/without_dtls.sh (and with_dtls.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

tests/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target mgate
[ -r ssl/certs/server.key ] || make -C ssl >/dev/null

broker_port=1883
if (exec 3<>/dev/tcp/127.0.0.1/$broker_port) 2>/dev/null; then
  echo "demo: a broker already listens on 127.0.0.1:$broker_port; using it"
  broker=""
else
  examples/server/mosquitto/server.sh &
  broker=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$broker_port) 2>/dev/null && break; sleep 0.1; done
fi

# The responder answers for the certificates of ssl/certs; reqin mode binds
# 127.0.0.1 only.
OCSP_MODE=reqin examples/server/ocsp/responder.sh ssl/certs &
responder=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break; sleep 0.1; done

# The HTTP listeners' target: the echo server on 8888.
examples/server/http-echo/http_echo.py --port 8888 &
echo_server=$!

# The CoAP listeners' target: libcoap's example server on 5683 (its clock at
# /time, and resources made by PUT), built without DTLS so that it leaves 5684
# (its DTLS port) to mgate's CoAP over DTLS listener.
coap-server-notls -A 127.0.0.1 -p 5683 -d 20 &
coap_server=$!

set -a
# shellcheck source=examples/config/mgate.env
. examples/config/mgate.env
set +a
build/mgate &
mgate=$!
stop() {
  trap - INT TERM EXIT
  kill -TERM "$mgate" 2>/dev/null || true
  wait "$mgate" 2>/dev/null || true
  kill -TERM "$responder" 2>/dev/null && wait "$responder" 2>/dev/null
  kill -TERM "$echo_server" 2>/dev/null && wait "$echo_server" 2>/dev/null
  kill -TERM "$coap_server" 2>/dev/null && wait "$coap_server" 2>/dev/null
  [ -n "$broker" ] && kill -TERM "$broker" 2>/dev/null && wait "$broker" 2>/dev/null
  exit 0
}
# EXIT too: a Ctrl-C reaches mgate as well, and its end must not leave the
# responder, the echo server and the CoAP server (which ignore SIGINT as
# background jobs) behind.
trap stop INT TERM EXIT
echo "demo: mgate on 127.0.0.1:${MGATE_MQTT_WITHOUT_TLS_PORT} (MQTT), ${MGATE_MQTT_WITH_TLS_PORT} (TLS), ${MGATE_MQTT_WITH_MTLS_PORT} (mTLS + OCSP), ${MGATE_MQTT_WS_WITHOUT_TLS_PORT} (WebSocket), ${MGATE_MQTT_WS_WITH_TLS_PORT} (WebSocket + TLS), ${MGATE_MQTT_WS_WITH_MTLS_PORT} (WebSocket + mTLS + OCSP) -> mosquitto on 127.0.0.1:$broker_port; metrics on http://127.0.0.1:${MGATE_ADMIN_PORT}/metrics; HTTP ${MGATE_HTTP_WITHOUT_TLS_PORT}/${MGATE_HTTP_WITH_TLS_PORT}/${MGATE_HTTP_WITH_MTLS_PORT} -> http-echo on 127.0.0.1:8888; CoAP ${MGATE_COAP_WITHOUT_DTLS_PORT}/udp, DTLS ${MGATE_COAP_WITH_DTLS_PORT}/udp -> coap-server on 127.0.0.1:5683 (Ctrl-C stops all)"
wait "$mgate"
