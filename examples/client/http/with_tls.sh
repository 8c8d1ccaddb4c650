#!/usr/bin/env bash
# POST through mgate's HTTPS listener (8087 by default): curl checks mgate's
# certificate against the test CA of ssl/ (make -C ssl) and sends none of its own.
#   MGATE_HOST           localhost (the server certificate is for localhost, 127.0.0.1, ::1)
#   MGATE_HTTP_TLS_PORT  8087
#   MGATE_SSL_DIR        ssl/certs
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ssl=${MGATE_SSL_DIR:-$here/../../../ssl/certs}
host=${MGATE_HOST:-localhost}
port=${MGATE_HTTP_TLS_PORT:-8087}
[ -r "$ssl/ca.crt" ] || { echo "$0: no $ssl/ca.crt: run make -C ssl" >&2; exit 1; }
url="https://$host:$port/mgate-http/messages/http"
msg='{"message": "Hello mGate"}'

echo "== HTTPS, Authorization header"
curl -sS -i --cacert "$ssl/ca.crt" "$url" -H "Content-Type: application/json" -H "Authorization: TOKEN" -d "$msg"
echo; echo "== HTTPS, Basic"
curl -sS -i --cacert "$ssl/ca.crt" -u username:password "$url" -H "Content-Type: application/json" -d "$msg"
echo; echo "== HTTPS, outside PATH_PREFIX: 404"
curl -sS -i --cacert "$ssl/ca.crt" "https://$host:$port/invalid_path" -H "Authorization: TOKEN" -d "$msg"
echo; echo "== without the CA: curl refuses mgate's certificate"
curl -sS -i "$url" -H "Authorization: TOKEN" -d "$msg" 2>&1
