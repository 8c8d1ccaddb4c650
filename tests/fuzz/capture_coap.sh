#!/usr/bin/env bash
# Capture real CoAP datagrams between libcoap's coap-client-openssl and
# coap-server-openssl (package libcoap3-bin), on loopback only: the client
# talks to a small UDP forwarder that passes each datagram on and writes it
# to OUT/NNNN_c2s.bin or OUT/NNNN_s2c.bin.  Where the unit test's vectors
# (tests/unit/coap_captured.h) and the libcoap_* fuzz seeds came from;
# message ids, tokens, the port in Uri-Port and the payloads differ per run.
#
#   tests/fuzz/capture_coap.sh OUT
set -euo pipefail
out=${1:?usage: capture_coap.sh OUT}
mkdir -p "$out"
py=/usr/bin/python3

# Two free UDP ports on 127.0.0.1; the server also takes port+1 (DTLS) and TCP.
read -r srv fwd < <($py - <<'PY'
import socket
def free():
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]; s.close()
        try:
            for q in (p, p + 1):
                for t in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    x = socket.socket(socket.AF_INET, t); x.bind(("127.0.0.1", q)); x.close()
            return p
        except OSError:
            pass
print(free(), free())
PY
)

coap-server-openssl -A 127.0.0.1 -p "$srv" -d 10 >"$out/server.log" 2>&1 &
server=$!
$py - "$fwd" "$srv" "$out" <<'PY' &
import os, select, socket, sys
listen_port, server_port, outdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", listen_port))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("127.0.0.1", 0))
b.connect(("127.0.0.1", server_port))
client, n = None, 0
while True:
    for s in select.select([a, b], [], [])[0]:
        if s is a:
            d, client = a.recvfrom(65535); b.send(d); tag = "c2s"
        else:
            d = b.recv(65535); tag = "s2c"
            if client:
                a.sendto(d, client)
        n += 1
        with open(os.path.join(outdir, "%04d_%s.bin" % (n, tag)), "wb") as f:
            f.write(d)
PY
forwarder=$!
trap 'kill $server $forwarder 2>/dev/null' EXIT
sleep 1

u=coap://127.0.0.1:$fwd
c="coap-client-openssl -B 5"
head -c 700 /dev/urandom | base64 -w0 | head -c 700 >"$out/big.txt"
$c "$u/"
$c -m put -e "hello mgate" "$u/example_data"
$c -m post -e "p=1" -O 15,auth=TOKEN "$u/ps/sensors/t1"
$c -N -m post -e non "$u/test"
$c -b 64 -m put -f "$out/big.txt" "$u/example_data"
$c -b 64 "$u/example_data"
$c -s 4 "$u/time"
$c -m delete "$u/example_data"
$c -T cafe0001 -A 50 -O 6,0x00 "$u/.well-known/core"
echo "$(ls "$out"/*.bin | wc -l) datagrams in $out"
