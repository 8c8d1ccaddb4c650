#!/usr/bin/env bash
# POST readings through mgate's HTTP listener (8086 by default, examples/demo.sh)
# with curl: each credential source, a refused one, a path outside the prefix.
# The target is examples/server/http-echo, which answers with what it got.
#   MGATE_HOST       127.0.0.1
#   MGATE_HTTP_PORT  8086
set -uo pipefail
host=${MGATE_HOST:-127.0.0.1}
port=${MGATE_HTTP_PORT:-8086}
url="http://$host:$port/mgate-http/messages/http"
msg='{"message": "Hello mGate"}'

echo "== Authorization header"
curl -sS -i -X POST "$url" -H "Content-Type: application/json" -H "Authorization: TOKEN" -d "$msg"
echo; echo "== HTTP Basic"
curl -sS -i -u username:password "$url" -H "Content-Type: application/json" -d "$msg"
echo; echo "== ?authorization= query parameter"
curl -sS -i "$url?authorization=TOKEN" -H "Content-Type: application/json" -d "$msg"
echo; echo "== chunked upload"
printf '%s' "$msg" | curl -sS -i "$url" -H "Authorization: TOKEN" -H "Transfer-Encoding: chunked" --data-binary @-
echo; echo "== a bypass path (BYPASS_PATHS=^/health\$): no handler call"
curl -sS -i "http://$host:$port/mgate-http/health"
echo; echo "== outside PATH_PREFIX: 404"
curl -sS -i "http://$host:$port/invalid_path" -H "Authorization: TOKEN" -d "$msg"
