#!/usr/bin/env bash
# Subscribe and publish through mgate's MQTT-over-WebSocket listener
# (ws://127.0.0.1:8083/mgate-ws by default) with paho-mqtt, in MQTT 3.1.1 and
# 5.0.  The mosquitto clients speak no WebSocket; Debian's python3-paho-mqtt
# does (it is importable from /usr/bin/python3).
#   MGATE_HOST, MGATE_WS_PORT, MGATE_WS_PATH, MGATE_WS_TOKEN (sent as
#   "Authorization: Bearer ..."; the handler sees it as the password)
set -euo pipefail
exec /usr/bin/python3 - "${MGATE_HOST:-127.0.0.1}" "${MGATE_WS_PORT:-8083}" \
  "${MGATE_WS_PATH:-/mgate-ws}" "${MGATE_WS_TOKEN:-}" <<'PY'
import sys
import threading

import paho.mqtt.client as mqtt

host, port, path, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
bad = 0
for name, proto in (("311", mqtt.MQTTv311), ("5", mqtt.MQTTv5)):
    got, ready = [], threading.Event()
    c = mqtt.Client(f"ws-demo-{name}", protocol=proto, transport="websockets")
    c.ws_set_options(path=path, headers={"Authorization": f"Bearer {token}"} if token else None)
    c.on_connect = lambda cl, u, f, rc, p=None, t=f"mgate/demo/ws/{name}": cl.subscribe(t, 1)
    c.on_subscribe = lambda cl, u, mid, granted, p=None: ready.set()
    c.on_message = lambda cl, u, m: (got.append(m), ready.set())
    c.connect(host, port, 30)
    c.loop_start()
    if ready.wait(5):
        ready.clear()
        c.publish(f"mgate/demo/ws/{name}", f"hello over MQTT {name} and WebSocket through mgate", 1)
        ready.wait(5)
    c.disconnect()
    c.loop_stop()
    if got:
        print(got[0].topic, got[0].payload.decode())
    else:
        print(f"MQTT {name} over WebSocket: no message came back", file=sys.stderr)
        bad = 1
sys.exit(bad)
PY
