#!/usr/bin/env bash
# WebSockets through mgate's HTTP listeners (examples/demo.sh: 8086 ws, 8087 wss,
# 8088 wss with a client certificate), echoed by examples/server/http-echo.
# The demo's handler (log) allows everything; with mgate-example, the payload
# deny-payload is dropped, a path with "forbidden" gets 403 and the token
# deny-password 401 (tests/integration/test_http_ws.py).  websocket.py is the client.
#   MGATE_HOST  localhost     MGATE_SSL_DIR  ssl/certs
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ssl=${MGATE_SSL_DIR:-$here/../../../ssl/certs}
host=${MGATE_HOST:-localhost}
ws="$here/websocket.py"
path=/mgate-http/messages/ws

echo "== ws://: two messages back"
"$ws" "ws://$host:8086$path" "Hello mGate" '{"t": 21.5}'
echo; echo "== outside PATH_PREFIX: 404 at the upgrade"
"$ws" "ws://$host:8086/elsewhere/ws"
echo; echo "== wss://"
"$ws" "wss://$host:8087$path" "Hello over TLS" --cacert "$ssl/ca.crt"
echo; echo "== wss:// with a client certificate"
"$ws" "wss://$host:8088$path" "Hello over mTLS" --cacert "$ssl/ca.crt" --cert "$ssl/client.crt" --key "$ssl/client.key"
