#!/usr/bin/env bash
# Subscribe and publish through mgate's MQTT-over-WebSocket TLS listener
# (wss://127.0.0.1:8084/mgate-ws by default) with paho-mqtt, in MQTT 3.1.1 and
# 5.0.  paho checks mgate's certificate against the test CA of ssl/ (make -C
# ssl) and the host name; it sends no certificate of its own.
#   MGATE_HOST      127.0.0.1 (the server certificate is for localhost,
#                   127.0.0.1 and ::1; another name fails the check)
#   MGATE_WSS_PORT  8084
#   MGATE_WS_PATH   /mgate-ws
#   MGATE_SSL_DIR   ssl/certs
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ssl=${MGATE_SSL_DIR:-$here/../../../ssl/certs}
[ -r "$ssl/ca.crt" ] || { echo "$0: no $ssl/ca.crt: run make -C ssl" >&2; exit 1; }
exec /usr/bin/python3 - "${MGATE_HOST:-127.0.0.1}" "${MGATE_WSS_PORT:-8084}" \
  "${MGATE_WS_PATH:-/mgate-ws}" "$ssl/ca.crt" <<'PY'
import queue
import sys

import paho.mqtt.client as mqtt

host, port, path, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
failed = 0
for version, proto in (("311", mqtt.MQTTv311), ("5", mqtt.MQTTv5)):
    topic = f"mgate/demo/wss/{version}"
    events = queue.Queue()
    c = mqtt.Client(f"wss-demo-{version}", protocol=proto, transport="websockets")
    c.ws_set_options(path=path)
    c.tls_set(ca_certs=ca)  # verifies mgate's certificate and that it is for `host`
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(topic, 1)
    c.on_subscribe = lambda cl, u, mid, granted, p=None: events.put("subscribed")
    c.on_message = lambda cl, u, m: events.put(m)
    try:
        c.connect(host, port, 30)
        c.loop_start()
        if events.get(timeout=5) == "subscribed":
            c.publish(topic, f"hello over MQTT {version} and WebSocket over TLS through mgate", 1)
            m = events.get(timeout=5)
            print(m.topic, m.payload.decode())
    except (OSError, queue.Empty) as e:
        print(f"MQTT {version} over wss://{host}:{port}{path}: no message came back ({e or 'timeout'})",
              file=sys.stderr)
        failed = 1
    c.disconnect()
    c.loop_stop()
sys.exit(failed)
PY
