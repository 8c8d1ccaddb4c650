#!/bin/sh
# bench/tunnel.sh [BUILD_DIR]: `mgate tunnel` throughput through a mosquitto on
# loopback (reliable mode), one stream of 64 MiB and 10 streams of 16 MiB, each
# echoed back, against the echo server reached directly; and mgate's CPU per MB
# (both sides' user+system time over the bytes carried one way).
set -eu
B=${1:-build}/mgate
D=$(mktemp -d)
BP=${BENCH_BROKER_PORT:-18861} EP=${BENCH_ECHO_PORT:-18862} LP=${BENCH_LOCAL_PORT:-18863}
here=$(dirname "$0")
cleanup() { for f in "$D"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done; rm -rf "$D"; }
trap cleanup EXIT
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$BP" > "$D/mosq.conf"
mosquitto -c "$D/mosq.conf" > "$D/mosq.log" 2>&1 & echo $! > "$D/mosq.pid"
python3 -c "
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $EP)); s.listen(64)
def h(c):
    while (d := c.recv(262144)): c.sendall(d)
    c.shutdown(socket.SHUT_WR); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=h, args=(c,), daemon=True).start()
" & echo $! > "$D/echo.pid"
printf '{"host":"127.0.0.1","port":%s,"control":"bench/t/control","allow":[%s],"clientId":"bench-remote"}\n' "$BP" "$EP" > "$D/r.json"
printf '{"host":"127.0.0.1","port":%s,"control":"bench/t/control","clientId":"bench-local"}\n' "$BP" > "$D/l.json"
sleep 0.5
"$B" tunnel -c "$D/r.json" 2> "$D/r.log" & echo $! > "$D/r.pid"
"$B" tunnel -c "$D/l.json" -l "$LP" -r "$EP" 2> "$D/l.log" & echo $! > "$D/l.pid"
sleep 1
cpu() { awk '{print $14 + $15}' "/proc/$(cat "$D/$1.pid")/stat"; }
hz=$(getconf CLK_TCK)
run() { # label port streams size
    c0=$(( $(cpu r) + $(cpu l) ))
    out=$(python3 "$here/tunnel_load.py" "$2" "$3" "$4")
    c1=$(( $(cpu r) + $(cpu l) ))
    mb=$(( $3 * $4 / 1000000 ))
    if [ "$2" = "$LP" ]; then
        echo "$1 $out mgate_cpu_ms_per_MB=$(( (c1 - c0) * 1000 / hz * 1000 / mb / 1000 ))"
    else
        echo "$1 $out"
    fi
}
run direct-1  "$EP" 1 67108864
run tunnel-1  "$LP" 1 67108864
run direct-10 "$EP" 10 16777216
run tunnel-10 "$LP" 10 16777216
