#!/usr/bin/env bash
# CoAP through mgate's CoAP relay (5682 by default) to the demo's CoAP server,
# with libcoap's client: PUT a value, GET it back, POST with the Go mGate's
# auth= query, then observe the server's clock for a few seconds.
set -euo pipefail
host=${MGATE_HOST:-127.0.0.1}
port=${MGATE_PORT:-5682}
uri=coap://$host:$port
client=coap-client-openssl

$client -B 5 -m put -e "21.5" "$uri/mgate/demo/temperature"
echo "GET  /mgate/demo/temperature: $($client -B 5 "$uri/mgate/demo/temperature")"
$client -B 5 -m post -e "hello over CoAP through mgate" -O 15,auth=demo-token "$uri/mgate/demo/messages"
echo "Observe /time for 4 s:"
$client -B 6 -s 4 "$uri/time"
echo
