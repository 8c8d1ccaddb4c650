#!/usr/bin/env bash
# bench/run.sh: measure mosquitto directly, through HAProxy (mode tcp) and
# through mgate, side by side on loopback.  See docs/PERFORMANCE.md.
#
#   bench/run.sh                 the full run (3 rounds, 9000 idle connections), ~10 minutes
#   bench/run.sh --smoke         everything tiny (< 30 s): checks the harness still runs
#   bench/run.sh --workers       also mgate with 1 vs 2 workers (throughput, CPU per message)
#   bench/run.sh --callgrind     also instructions per PUBLISH in mgate (valgrind callgrind)
#   bench/run.sh --syscalls      also syscalls per message of each proxy (perf stat tracepoints)
#   bench/run.sh --help          every option
#
# Paths are measured interleaved (direct, haproxy, mgate, direct, ...) per
# metric and round; each figure is the median over rounds with min-max.
# Everything listens on 127.0.0.1 on free ports; every process this script
# starts is stopped by its PID when it exits.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

rounds=3 duration=5 warmup=1 window=200
lat_duration=10 lat_rate=1000
conns=9000 cr_duration=3 cr_parallel=64
handler=noop fanout=0 smoke=0 mount="" jwt_alg=RS256
settle=1 # seconds given to a process to finish what a run started (closes, frees)
after_close=7 # seconds from the idle clients' close to the last RSS reading (mgate trims every 5 s)
do_workers=0 do_callgrind=0 do_syscalls=0 rotate=0
callgrind_msgs=200000
only="thr lat idle connrate"
mgate_bin=${MGATE_BIN:-$top/build-bench/mgate}
outdir=$here/out

usage() {
    cat <<EOF
usage: bench/run.sh [options]
  --smoke              tiny and fast (1 round, 0.3 s runs, 200 idle connections); for CI
  --rounds N           rounds of interleaved measurements ($rounds)
  --duration SEC       measured seconds of each throughput run ($duration; plus ${warmup}s warm-up)
  --lat-duration SEC   seconds of each latency run at $lat_rate msg/s ($lat_duration)
  --conns N            idle connections ($conns; at most (hard fd limit - 200) / 2)
  --connrate-duration SEC  seconds of each connection-rate run ($cr_duration)
  --only LIST          metrics to run, from: thr lat idle connrate ("$only")
  --rotate             start each round with the next path (direct haproxy mgate, haproxy mgate
                       direct, ...) so that no path always runs last; default: the same order
  --fanout             every subscriber subscribes to bench/# (4x deliveries); default: one topic each
  --handler NAME       mgate handler: noop, log (log runs with MGATE_LOG_LEVEL=off as well) or jwt
                       (every client, on every path, sends a token signed with --jwt-alg) ($handler)
  --jwt-alg ALG        with --handler jwt: RS256, ES256 or EdDSA ($jwt_alg)
  --mount PREFIX       mgate with MGATE_MQTT_WITHOUT_TLS_MOUNT_POINT=PREFIX (every PUBLISH re-encoded both ways)
  --mgate PATH         the mgate binary ($mgate_bin, built if missing)
  --workers            also compare mgate with MGATE_WORKERS=1 and 2
  --callgrind [N]      also count mgate's instructions per forwarded PUBLISH over N messages ($callgrind_msgs)
  --syscalls           also count each proxy's syscalls per message (needs perf)
  --out DIR            where results go ($outdir)
EOF
}

bench_options run.sh "smoke=1 rounds=1 duration=0.3 warmup=0.1 lat_duration=0.5 conns=200 cr_duration=0.3 callgrind_msgs=2000 settle=0.2 after_close=0.4" \
    "--rounds=rounds --duration=duration --lat-duration=lat_duration --conns=conns --connrate-duration=cr_duration --only=only --fanout=fanout=1 --rotate=rotate=1 --handler=handler --jwt-alg=jwt_alg --mount=mount --workers=do_workers=1 --callgrind=do_callgrind=1:callgrind_msgs --syscalls=do_syscalls=1" "$@"
case $handler in noop | log | jwt) ;; *) echo "bench/run.sh: --handler is noop, log or jwt" >&2; exit 64 ;; esac
case $jwt_alg in RS256 | ES256 | EdDSA) ;; *) echo "bench/run.sh: --jwt-alg is RS256, ES256 or EdDSA" >&2; exit 64 ;; esac

for tool in mosquitto haproxy ss awk make timeout; do
    command -v "$tool" >/dev/null || { echo "bench/run.sh: $tool is missing (apt-get install mosquitto haproxy iproute2 gawk make coreutils)" >&2; exit 1; }
done
if ((do_callgrind)) && ! command -v valgrind >/dev/null; then
    echo "bench/run.sh: --callgrind needs valgrind" >&2; exit 1
fi
if ((do_syscalls)) && ! command -v perf >/dev/null; then
    echo "bench/run.sh: --syscalls needs perf" >&2; exit 1
fi

# A proxy holds two descriptors per client: raise the soft limit as far as allowed.
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=1048576
want=$((hard < 20000 ? hard : 20000))
ulimit -n "$want"
max_conns=$(((want - 200) / 2))
if ((conns > max_conns)); then
    echo "bench/run.sh: --conns $conns is more than the fd limit allows; using $max_conns" >&2
    conns=$max_conns
fi

# ---- build --------------------------------------------------------------

make -s -C "$here" OUT="$here/out" >/dev/null
lg=$here/out/loadgen
if [[ ! -x $mgate_bin ]]; then
    echo "bench/run.sh: building $mgate_bin" >&2
    cmake -S "$top" -B "$top/build-bench" -DCMAKE_BUILD_TYPE=Release -DMGATE_TESTS=OFF >/dev/null
    cmake --build "$top/build-bench" -j2 >/dev/null
    mgate_bin=$top/build-bench/mgate
fi

stamp=$(date +%Y%m%d-%H%M%S)
run=$outdir/run-$stamp
mkdir -p "$run"
results=$run/results.tsv # metric <tab> path <tab> round <tab> value
: >"$results"

# ---- processes ----------------------------------------------------------

broker_pid="" haproxy_pid="" mgate_pid="" mgate2_pid="" cg_pid=""

cleanup() {
    local pid
    for pid in "$cg_pid" "$mgate2_pid" "$mgate_pid" "$haproxy_pid" "$broker_pid"; do
        stop_pid "$pid"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ports=$("$lg" freeport 5) || { echo "bench/run.sh: no free ports" >&2; exit 1; }
read -r broker_port haproxy_port mgate_port mgate2_port cg_port <<<"$(echo $ports)"

cat >"$run/mosquitto.conf" <<EOF
listener $broker_port 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
max_queued_messages 10000
log_dest stderr
log_type error
log_type warning
EOF

haproxy_conf() { # port threads
    cat <<EOF
global
    nbthread $2
    maxconn $((conns + 100))
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    maxconn $((conns + 100))
frontend mqtt
    bind 127.0.0.1:$1
    default_backend broker
backend broker
    server mosquitto 127.0.0.1:$broker_port
EOF
}

start_broker() {
    mosquitto -c "$run/mosquitto.conf" 2>>"$run/mosquitto.log" &
    broker_pid=$!
    wait_listen "$broker_port" "$broker_pid" || { log "mosquitto did not start (see $run/mosquitto.log)"; exit 1; }
}

start_haproxy() {
    haproxy_conf "$haproxy_port" 1 >"$run/haproxy.cfg"
    haproxy -db -f "$run/haproxy.cfg" 2>>"$run/haproxy.log" &
    haproxy_pid=$!
    wait_listen "$haproxy_port" "$haproxy_pid" || { log "haproxy did not start (see $run/haproxy.log)"; exit 1; }
}

# Runs mgate (or a wrapper such as valgrind, given first) in $run, so no
# .env of the caller's is read, with no MGATE_* from the caller's environment.
mgate_env() { # port workers
    echo env $(unset_mgate_vars) MGATE_MQTT_WITHOUT_TLS_HOST=127.0.0.1 MGATE_MQTT_WITHOUT_TLS_PORT="$1" \
        MGATE_MQTT_WITHOUT_TLS_TARGET_HOST=127.0.0.1 MGATE_MQTT_WITHOUT_TLS_TARGET_PORT="$broker_port" \
        MGATE_HANDLER="$handler" MGATE_LOG_LEVEL=off MGATE_WORKERS="$2" ${mount:+MGATE_MQTT_WITHOUT_TLS_MOUNT_POINT=$mount} \
        ${jwt_token:+MGATE_JWT_JWKS_FILE=$run/jwks.json}
}

# --handler jwt: a key, its JWKS file and one token (a day long) that every
# client of every path sends, so the three paths get the same bytes.
jwt_token=""
jwt_setup() {
    local kind
    case $jwt_alg in RS256) kind=RSA ;; ES256) kind=EC ;; EdDSA) kind=ED25519 ;; esac
    jwt_token=$(python3 - "$top/tests/integration" "$run" "$kind" <<'PY'
import json, sys, time
sys.path.insert(0, sys.argv[1])
import jwt_tools
key = jwt_tools.Key.generate(sys.argv[2], sys.argv[3], kid="bench")
with open(sys.argv[2] + "/jwks.json", "w") as f:
    json.dump(jwt_tools.jwks([key]), f)
print(key.token({"sub": "bench", "exp": int(time.time()) + 86400}))
PY
    ) || { log "could not make the jwt key and token"; exit 1; }
    log "jwt: every CONNECT carries one $jwt_alg token; mgate reads the key from $run/jwks.json"
}

spawn_mgate() { # port workers logname [wrapper...]; sets spawned_pid
    local port=$1 workers=$2 name=$3
    shift 3
    # shellcheck disable=SC2046
    (cd "$run" && exec $(mgate_env "$port" "$workers") "$@" "$mgate_bin") 2>>"$run/$name.log" &
    spawned_pid=$!
}

start_mgate() {
    spawn_mgate "$mgate_port" 1 mgate
    mgate_pid=$spawned_pid
    wait_listen "$mgate_port" "$mgate_pid" || { log "mgate did not start (see $run/mgate.log)"; exit 1; }
}

start_mgate2() {
    spawn_mgate "$mgate2_port" 2 mgate2
    mgate2_pid=$spawned_pid
    wait_listen "$mgate2_port" "$mgate2_pid" || { log "mgate (2 workers) did not start"; exit 1; }
}

port_of() {
    case $1 in
    direct) echo "$broker_port" ;; haproxy) echo "$haproxy_port" ;; mgate | mgate1) echo "$mgate_port" ;;
    mgate2) echo "$mgate2_port" ;;
    esac
}
pid_of() {
    case $1 in
    direct) echo "$broker_pid" ;; haproxy) echo "$haproxy_pid" ;; mgate | mgate1) echo "$mgate_pid" ;;
    mgate2) echo "$mgate2_pid" ;;
    esac
}

# Runs the load generator, bounded in time; prints its result line.
# seconds-bound mode args...; with --handler jwt every CONNECT carries the token
loadgen() { bounded "$1" "$lg" "${@:2}" ${jwt_token:+--user bench --password "$jwt_token"}; }

# ---- measurements -------------------------------------------------------

fan=()
((fanout)) && fan=(--fanout)

measure_thr() { # path qos size round [metric-suffix]
    local path=$1 qos=$2 size=$3 r=$4 port pid c0 c1 b0 b1 line recv rate m u0 s0 u1 s1
    port=$(port_of "$path") pid=$(pid_of "$path")
    m=q${qos}_${size}${5:-}
    c0=$(cpu_split "$pid") b0=$(cpu_ticks "$broker_pid")
    line=$(loadgen "$(sum "$duration" "$warmup" 30)" throughput -p "$port" -q "$qos" -s "$size" \
        -d "$duration" -w "$warmup" -W "$window" "${fan[@]}") || return 0
    c1=$(cpu_split "$pid") b1=$(cpu_ticks "$broker_pid")
    recv=$(kv recv "$line") rate=$(kv rate "$line")
    record "thr_$m" "$path" "$r" "$rate"
    ((recv > 0)) || return 0
    record "bcpu_$m" "$path" "$r" "$(awk -v a="$b0" -v b="$b1" -v n="$recv" -v hz="$hz" 'BEGIN {printf "%.3f", (b - a) / hz / n * 1e6}')"
    record "lcpu_$m" "$path" "$r" "$(awk -v c="$(kv cpu_s "$line")" -v n="$recv" 'BEGIN {printf "%.3f", c / n * 1e6}')"
    if [[ $path != direct ]]; then
        read -r u0 s0 <<<"$c0"
        read -r u1 s1 <<<"$c1"
        record "cpu_$m" "$path" "$r" "$(awk -v a=$((u0 + s0)) -v b=$((u1 + s1)) -v n="$recv" -v hz="$hz" 'BEGIN {printf "%.3f", (b - a) / hz / n * 1e6}')"
        record "sys_$m" "$path" "$r" "$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) 'BEGIN {printf "%.0f", u + s ? 100 * s / (u + s) : 0}')"
    fi
    log "  thr $path qos=$qos size=$size: $rate msg/s (recv $recv, lost $(kv lost "$line"))"
}

measure_lat() { # path round
    local path=$1 r=$2 line p50 p99
    line=$(loadgen "$(sum "$lat_duration" 35)" latency -p "$(port_of "$path")" -q 0 -s 64 \
        -r "$lat_rate" -d "$lat_duration" -w "$settle" "${fan[@]}") || return 0
    p50=$(kv p50_us "$line") p99=$(kv p99_us "$line")
    record lat_p50 "$path" "$r" "$p50"
    record lat_p99 "$path" "$r" "$p99"
    log "  lat $path: p50 $p50 us, p99 $p99 us ($(kv samples "$line") samples)"
}

# A fresh process for each idle measurement: memory a previous round left in
# the allocator would otherwise hide the growth.
restart() {
    case $1 in
    direct) stop_pid "$broker_pid"; start_broker ;;
    haproxy) stop_pid "$haproxy_pid"; start_haproxy ;;
    mgate) stop_pid "$mgate_pid"; start_mgate ;;
    esac
}

measure_idle() { # path round
    local path=$1 r=$2 pid rss0 rss1 rss2 ready closed lgpid reply
    restart "$path"
    pid=$(pid_of "$path")
    sleep "$settle"
    rss0=$(rss_kib "$pid")
    coproc IDLE { exec timeout -k 5 300 "$lg" idle -p "$(port_of "$path")" -n "$conns" -c 256 -H 200 \
        ${jwt_token:+--user bench --password "$jwt_token"} 2>>"$run/loadgen.log"; }
    lgpid=$IDLE_PID
    ask_idle "" 240
    ready=$reply
    sleep "$settle"
    rss1=$(rss_kib "$pid")
    ask_idle go 60
    closed=$reply
    wait "$lgpid" 2>/dev/null || true
    sleep "$after_close"
    rss2=$(rss_kib "$pid")
    local ok
    ok=$(kv ok "$ready")
    if [[ ${ok:-0} != "$conns" ]]; then
        log "  idle $path: only ${ok:-0} of $conns connections opened ($ready)"
        return 0
    fi
    record idle_kib "$path" "$r" "$(awk -v a="$rss0" -v b="$rss1" -v n="$conns" 'BEGIN {printf "%.2f", (b - a) / n}')"
    record idle_after "$path" "$r" "$((rss2 - rss0))"
    record idle_open "$path" "$r" "$(awk -v n="$conns" -v s="$(kv open_s "$ready")" 'BEGIN {printf "%.0f", (s > 0 ? n / s : 0)}')"
    log "  idle $path: RSS $rss0 -> $rss1 -> $rss2 KiB with $conns connections, then after close ($closed)"
}

measure_connrate() { # path round
    local path=$1 r=$2 pid c0 c1 line n_done
    pid=$(pid_of "$path")
    c0=$(cpu_ticks "$pid")
    line=$(loadgen "$(sum "$cr_duration" 30)" connrate -p "$(port_of "$path")" -d "$cr_duration" \
        -c "$cr_parallel") || return 0
    sleep "$settle" # let the proxy finish the closes it is still doing
    c1=$(cpu_ticks "$pid")
    n_done=$(kv completed "$line")
    record connrate "$path" "$r" "$(kv rate "$line")"
    if [[ $path != direct ]] && ((n_done > 0)); then
        record cr_cpu "$path" "$r" "$(awk -v a="$c0" -v b="$c1" -v n="$n_done" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz / n * 1e6}')"
    fi
    log "  connrate $path: $(kv rate "$line")/s ($n_done in $(kv elapsed_s "$line") s, errors $(kv errors "$line"))"
}

# ---- the run ------------------------------------------------------------

machine=$(machine_line)
mgate_rev=$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)
# Busy CPU of the whole machine over a second before we start: anything else
# running here competes with the three processes measured.
busy_before=$(busy_share)
log "bench: $machine; mgate $mgate_bin ($mgate_rev), handler $handler${mount:+, mount point $mount}; results in $run"
if ((busy_before > 10)); then
    log "warning: the machine was ${busy_before}% busy before the run; figures will be noisy"
fi
log "ports: broker $broker_port, haproxy $haproxy_port, mgate $mgate_port"
[[ $handler == jwt ]] && jwt_setup
start_broker
start_haproxy
start_mgate
((do_workers)) && start_mgate2

all_paths=(direct haproxy mgate)
variants=("0 64" "0 1024" "1 64" "1 1024")
for ((r = 1; r <= rounds; r++)); do
    log "round $r of $rounds"
    paths=("${all_paths[@]}")
    if ((rotate)); then
        k=$(((r - 1) % 3))
        paths=("${all_paths[@]:k}" "${all_paths[@]:0:k}")
    fi
    for what in $only; do
        case $what in
        thr)
            for v in "${variants[@]}"; do
                read -r q s <<<"$v"
                for p in "${paths[@]}"; do measure_thr "$p" "$q" "$s" "$r"; done
            done ;;
        lat) for p in "${paths[@]}"; do measure_lat "$p" "$r"; done ;;
        idle) for p in "${paths[@]}"; do measure_idle "$p" "$r"; done ;;
        connrate) for p in "${paths[@]}"; do measure_connrate "$p" "$r"; done ;;
        *) log "unknown metric $what (thr lat idle connrate)"; exit 64 ;;
        esac
    done
    if ((do_workers)); then
        for v in "0 64" "0 1024"; do
            read -r q s <<<"$v"
            for p in mgate1 mgate2; do measure_thr "$p" "$q" "$s" "$r"; done
        done
    fi
done

# ---- syscalls per message (perf stat on tracepoints) ---------------------

if ((do_syscalls)); then
    log "syscalls per message, QoS 0 64 B"
    events=raw_syscalls:sys_enter
    for sc in recvfrom read readv recvmsg sendto sendmsg write writev splice epoll_wait epoll_ctl clock_gettime; do
        events+=",syscalls:sys_enter_$sc"
    done
    for p in haproxy mgate; do
        pid=$(pid_of "$p")
        perf stat -x, -e "$events" -p "$pid" -o "$run/perf-$p.csv" &
        perf_pid=$!
        sleep 0.3
        line=$(loadgen "$(sum "$duration" "$warmup" 30)" throughput -p "$(port_of "$p")" -q 0 -s 64 \
            -d "$duration" -w "$warmup" -W "$window" "${fan[@]}") || line=""
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        recv=$(kv recv "$line")
        ((${recv:-0} > 0)) || continue
        awk -F, -v n="$recv" -v p="$p" '$3 ~ /sys_enter/ && $1 ~ /^[0-9]+$/ {
            name = $3; sub(/.*sys_enter_?/, "", name); if (name == "") name = "all";
            printf "%s\t%s\t%.3f\n", p, name, $1 / n }' "$run/perf-$p.csv" >>"$run/syscalls.tsv"
    done
fi

# ---- callgrind: instructions per forwarded PUBLISH -----------------------

callgrind_run() { # messages out-file; prints total Ir
    local n=$1 out=$2 line
    spawn_mgate "$cg_port" 1 callgrind valgrind --tool=callgrind --callgrind-out-file="$out"
    cg_pid=$spawned_pid
    wait_listen "$cg_port" "$cg_pid" 60 || { log "mgate under valgrind did not start"; exit 1; }
    line=$(loadgen 900 throughput -p "$cg_port" -P 1 -S 1 -q 0 -s 64 -m "$n" -d 600 -w 0 -D 300 -W "$window") || true
    log "  callgrind $n messages: $line"
    stop_pid "$cg_pid"
    cg_pid=""
    awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

if ((do_callgrind)); then
    log "callgrind: $callgrind_msgs QoS 0 64 B messages, 1 publisher -> 1 subscriber, and a run with none"
    ir0=$(callgrind_run 0 "$run/callgrind.base.out")
    irn=$(callgrind_run "$callgrind_msgs" "$run/callgrind.out")
    for f in callgrind callgrind.base; do
        callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$run/$f.out" >"$run/$f.inclusive.txt" 2>/dev/null || true
        callgrind_annotate --auto=no --threshold=100 "$run/$f.out" >"$run/$f.self.txt" 2>/dev/null || true
    done
    printf '%s\t%s\t%s\n' "$ir0" "$irn" "$callgrind_msgs" >"$run/callgrind.tsv"
fi

# ---- the report ---------------------------------------------------------

report=$run/report.md
{
    echo "# mgate benchmark, $(date -u +'%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $machine. mgate $mgate_rev, handler \`$handler\`${mount:+, mount point \`$mount\`}, MGATE_LOG_LEVEL=off, 1 worker;"
    echo "HAProxy $(haproxy -v 2>/dev/null | awk 'NR==1 {print $3}') mode tcp nbthread 1; mosquitto $(mosquitto -h 2>/dev/null | awk 'NR==1 {print $3}')."
    echo "Rounds: $rounds, interleaved: direct, haproxy, mgate$( ((rotate)) && echo ", each round starting one path later"). Throughput: 4 publishers -> 4 subscribers,"
    if ((fanout)); then
        echo "every subscriber on bench/# (each message delivered 4 times),"
    else
        echo "publisher i -> topic bench/i -> subscriber i (one topic each),"
    fi
    echo "${duration}s measured after ${warmup}s warm-up, at most $window messages per publisher in flight."
    echo "Latency: QoS 0 64 B at $lat_rate msg/s for ${lat_duration}s. Idle: $conns connections. Connections/s: $cr_parallel in parallel for ${cr_duration}s."
    echo "Each cell: median (min-max) over rounds; a ratio: the median of the ratios within each round."
    echo "The machine was ${busy_before}% busy (all CPUs) in the second before the run."
    echo
    awk -F'\t' -v workers="$do_workers" -f "$here/stats.awk" -f "$here/report.awk" "$results"
    if [[ -s $run/syscalls.tsv ]]; then
        echo
        echo "Syscalls per message delivered (QoS 0 64 B, one run, perf stat):"
        echo
        echo "| syscall | haproxy | mgate |"
        echo "|---|---|---|"
        awk -F'\t' '{v[$2, $1] = $3; if (!($2 in seen)) {seen[$2] = 1; order[++n] = $2}}
            END {for (i = 1; i <= n; i++) {s = order[i]; if (v[s, "haproxy"] + v[s, "mgate"] > 0)
                printf "| %s | %.3f | %.3f |\n", s, v[s, "haproxy"], v[s, "mgate"]
                if (s != "all") for (p in proxy) named[p] += v[s, p]}
                printf "| (others) | %.3f | %.3f |\n", v["all", "haproxy"] - named["haproxy"], v["all", "mgate"] - named["mgate"]}
            BEGIN {proxy["haproxy"]; proxy["mgate"]}' "$run/syscalls.tsv"
    fi
    if [[ -s $run/callgrind.tsv ]]; then
        read -r ir0 irn n <"$run/callgrind.tsv"
        echo
        awk -v a="$ir0" -v b="$irn" -v n="$n" 'BEGIN {
            printf "Callgrind: %d messages cost %.0f instructions (Ir) in mgate, a run with none %.0f:\n", n, b, a;
            printf "%.0f instructions per message delivered, which mgate forwards twice (publisher -> broker,\n", (b - a) / n;
            printf "broker -> subscriber): %.0f per forwarded PUBLISH. User space only; the kernel is not counted.\n", (b - a) / n / 2 }'
        for kind in self inclusive; do
            echo
            echo "Top functions by $kind cost (Ir per message delivered, both directions; the run with none subtracted):"
            echo
            echo "| Ir/msg | share | function |"
            echo "|---|---|---|"
            awk -v n="$n" -v k=15 -f "$here/callgrind_top.awk" "$run/callgrind.base.$kind.txt" "$run/callgrind.$kind.txt"
        done
        echo
        echo "Calls per message delivered (callgrind call counts, minus the run with none):"
        echo
        join -t$'\t' -1 2 -2 2 -a 2 -e 0 -o 0,1.1,2.1 \
            <(awk -f "$here/callgrind_calls.awk" "$run/callgrind.base.out" | sort -t$'\t' -k2,2) \
            <(awk -f "$here/callgrind_calls.awk" "$run/callgrind.out" | sort -t$'\t' -k2,2) |
            awk -F'\t' -v n="$n" '$1 ~ /^(recv|sendmsg|epoll_wait|epoll_ctl|malloc|calloc|realloc|free|clock_gettime|memset|memcpy|memmove)$/ || $1 ~ /^__mem(cpy|move|set)/ {
                printf "%s %.3f, ", $1, ($3 - $2) / n }' | sed 's/, $/\n/'
    fi
} >"$report"

cat "$report"
cp "$report" "$outdir/latest.md"
log "report: $report (and $outdir/latest.md)"
