#!/usr/bin/env bash
# bench/http_ws.sh: the cost of mgate's WebSocket relay on the HTTP listener
# (src/front/http_ws.c), side by side with a direct connection to the echo
# target and with HAProxy (mode http, which tunnels the upgraded connection).
# See docs/PERFORMANCE.md, "WebSocket relay on the HTTP listener".
#
#   bench/http_ws.sh             the full run (3 rounds), ~4 minutes
#   bench/http_ws.sh --smoke     everything tiny (< 20 s): checks the harness still runs
#   bench/http_ws.sh --syscalls  also syscalls per message of each proxy and the target (perf stat)
#   bench/http_ws.sh --help      every option
#
# The target is bench/wsecho, the load generator bench/wsload (make -C bench
# ws).  mgate runs with MGATE_HANDLER=noop and one worker, HAProxy with
# nbthread 1.  Paths are measured interleaved (each round starts one path
# later); each figure is the median over rounds with min-max, each ratio the
# median of the ratios within a round.  Everything listens on 127.0.0.1 on
# free ports; every process this script starts is stopped by its PID.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

rounds=3 duration=3 warmup=0.5 window=100
lat_duration=5 lat_rate=1000
idle=1000 smoke=0
settle=1      # seconds given to a process to finish what a run started
after_close=6 # seconds from the idle WebSockets' close to the last RSS reading (mgate trims every 5 s)
only="thr lat idle"
do_syscalls=0
variants=("1 64" "1 1024" "10 64" "10 1024") # WebSockets, message bytes
mgate_bin=${MGATE_BIN:-$top/build-rel/mgate}
outdir=$here/out
prefix=/ws

usage() {
    cat <<EOF
usage: bench/http_ws.sh [options]
  --smoke              tiny and fast (1 round, 0.3 s runs, 100 idle WebSockets); for CI
  --rounds N           rounds of interleaved measurements ($rounds)
  --duration SEC       measured seconds of each throughput run ($duration; plus ${warmup}s warm-up)
  --window N           messages in flight per WebSocket in throughput runs ($window)
  --lat-duration SEC   seconds of each latency run at $lat_rate msg/s ($lat_duration)
  --idle N             idle WebSockets ($idle; at most (hard fd limit - 200) / 2)
  --only LIST          metrics to run, from: thr lat idle ("$only")
  --syscalls           also count syscalls per message (1 WS x 64 B) of each proxy and the target (needs perf)
  --mgate PATH         the mgate binary ($mgate_bin, built (Release) if missing)
  --out DIR            where results go ($outdir)
EOF
}

bench_options http_ws.sh "smoke=1 rounds=1 duration=0.3 warmup=0.1 lat_duration=0.5 idle=100 settle=0.2 after_close=0.3" \
    "--rounds=rounds --duration=duration --window=window --lat-duration=lat_duration --idle=idle --only=only --syscalls=do_syscalls=1" "$@"

for tool in haproxy ss awk make timeout; do
    command -v "$tool" >/dev/null || { echo "bench/http_ws.sh: $tool is missing (apt-get install haproxy iproute2 gawk make coreutils)" >&2; exit 1; }
done
if ((do_syscalls)) && ! command -v perf >/dev/null; then
    echo "bench/http_ws.sh: --syscalls needs perf" >&2; exit 1
fi

fit_fd_limit bench/http_ws.sh

# ---- build --------------------------------------------------------------

make -s -C "$here" ws OUT="$here/out" >/dev/null
lg=$here/out/loadgen wsload=$here/out/wsload wsecho=$here/out/wsecho
if [[ ! -x $mgate_bin ]]; then
    echo "bench/http_ws.sh: building $mgate_bin" >&2
    cmake -S "$top" -B "$top/build-rel" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$top/build-rel" -j2 --target mgate >/dev/null
    mgate_bin=$top/build-rel/mgate
fi

stamp=$(date +%Y%m%d-%H%M%S)
run=$outdir/ws-run-$stamp
mkdir -p "$run"
results=$run/results.tsv # metric <tab> path <tab> round <tab> value
: >"$results"

# ---- processes ----------------------------------------------------------

echo_pid="" haproxy_pid="" mgate_pid=""

cleanup() {
    local pid rc
    for pid in "$mgate_pid" "$haproxy_pid" "$echo_pid"; do
        stop_pid "$pid"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ports=$("$lg" freeport 3) || { echo "bench/http_ws.sh: no free ports" >&2; exit 1; }
read -r echo_port haproxy_port mgate_port <<<"$(echo $ports)"

cat >"$run/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $((idle + 100))
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    maxconn $((idle + 100))
frontend ws
    bind 127.0.0.1:$haproxy_port
    default_backend echo
backend echo
    server echo 127.0.0.1:$echo_port
EOF

start_echo() {
    "$wsecho" -p "$echo_port" 2>>"$run/wsecho.log" &
    echo_pid=$!
    wait_listen "$echo_port" "$echo_pid" || { log "wsecho did not start (see $run/wsecho.log)"; exit 1; }
}

start_haproxy() {
    haproxy -db -f "$run/haproxy.cfg" 2>>"$run/haproxy.log" &
    haproxy_pid=$!
    wait_listen "$haproxy_port" "$haproxy_pid" || { log "haproxy did not start (see $run/haproxy.log)"; exit 1; }
}

# mgate runs in $run (no .env of the caller's is read), with no MGATE_* from
# the caller's environment: only its HTTP listener, relaying WebSockets under
# $prefix to the echo target.
start_mgate() {
    local h=MGATE_HTTP_WITHOUT_TLS_
    # shellcheck disable=SC2046
    env -C "$run" $(unset_mgate_vars) MGATE_MQTT_WITHOUT_TLS_PORT= \
        ${h}HOST=127.0.0.1 ${h}PORT="$mgate_port" ${h}PATH_PREFIX="$prefix" \
        ${h}TARGET_HOST=127.0.0.1 ${h}TARGET_PORT="$echo_port" ${h}TARGET_PROTOCOL=http ${h}IDLE_TIMEOUT=1h \
        MGATE_HANDLER=noop MGATE_WORKERS=1 MGATE_LOG_LEVEL=warn "$mgate_bin" 2>>"$run/mgate.log" &
    mgate_pid=$!
    wait_listen "$mgate_port" "$mgate_pid" || { log "mgate did not start (see $run/mgate.log)"; exit 1; }
    [[ $(cat "/proc/$mgate_pid/comm") == mgate ]] || log "warning: pid $mgate_pid is not mgate: CPU and RSS readings are wrong"
}

port_of() { case $1 in direct) echo "$echo_port" ;; haproxy) echo "$haproxy_port" ;; mgate) echo "$mgate_port" ;; esac; }
pid_of() { case $1 in direct) echo "$echo_pid" ;; haproxy) echo "$haproxy_pid" ;; mgate) echo "$mgate_pid" ;; esac; }

# A proxy that died is a finding: logged (with its log's tail), then restarted.
check_alive() { # path what
    local pid rc
    pid=$(pid_of "$1")
    kill -0 "$pid" 2>/dev/null && return 0
    wait "$pid" 2>/dev/null && rc=0 || rc=$?
    log "BUG? $1 (pid $pid) exited with status $rc during $2; restarting it"
    [[ $1 == mgate ]] && tail -5 "$run/mgate.log" | sed 's/^/    /' >&2
    case $1 in direct) start_echo ;; haproxy) start_haproxy ;; mgate) start_mgate ;; esac
}

wsload() { bounded "$1" "$wsload" "${@:2}"; } # seconds-bound mode args...

now() { date +%s.%N; }
per_msg() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$hz" 'BEGIN {printf "%.3f", (b - a) / hz / n * 1e6}'; }

# ---- measurements -------------------------------------------------------

measure_thr() { # path conns size round
    local path=$1 n=$2 size=$3 r=$4 pid m c0 c1 e0 e1 t0 t1 line recv total u0 s0 u1 s1
    pid=$(pid_of "$path") m=${n}_${size}
    c0=$(cpu_split "$pid") e0=$(cpu_ticks "$echo_pid") t0=$(now)
    line=$(wsload "$(sum "$duration" "$warmup" 30)" throughput -p "$(port_of "$path")" -P "$prefix/echo" \
        -n "$n" -s "$size" -W "$window" -d "$duration" -w "$warmup") || { check_alive "$path" "thr $m"; return 0; }
    c1=$(cpu_split "$pid") e1=$(cpu_ticks "$echo_pid") t1=$(now)
    recv=$(kv recv "$line") total=$(kv recv_total "$line")
    record "thr_$m" "$path" "$r" "$(kv rate "$line")"
    if ((${total:-0} > 0)); then
        record "ecpu_$m" "$path" "$r" "$(per_msg "$e0" "$e1" "$total")"
        record "lcpu_$m" "$path" "$r" "$(awk -v c="$(kv cpu_s "$line")" -v n="$recv" 'BEGIN {printf "%.3f", n ? c / n * 1e6 : 0}')"
        if [[ $path != direct ]]; then
            read -r u0 s0 <<<"$c0"
            read -r u1 s1 <<<"$c1"
            record "cpu_$m" "$path" "$r" "$(per_msg $((u0 + s0)) $((u1 + s1)) "$total")"
            record "sys_$m" "$path" "$r" "$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) 'BEGIN {printf "%.0f", u + s ? 100 * s / (u + s) : 0}')"
            record "busy_$m" "$path" "$r" "$(awk -v c=$((u1 + s1 - u0 - s0)) -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN {printf "%.0f", 100 * c / hz / (b - a)}')"
        fi
    fi
    log "  thr $path ${n}x${size} B: $(kv rate "$line") msg/s (lost $(kv lost "$line"), bad $(kv bad "$line"), errors $(kv errors "$line"))"
    check_alive "$path" "thr $m"
}

measure_lat() { # path round
    local path=$1 r=$2 line
    line=$(wsload "$(sum "$lat_duration" "$settle" 30)" latency -p "$(port_of "$path")" -P "$prefix/echo" \
        -s 64 -r "$lat_rate" -d "$lat_duration" -w "$settle") || { check_alive "$path" lat; return 0; }
    record lat_p50 "$path" "$r" "$(kv p50_us "$line")"
    record lat_p99 "$path" "$r" "$(kv p99_us "$line")"
    log "  lat $path: p50 $(kv p50_us "$line") us, p99 $(kv p99_us "$line") us ($(kv samples "$line") samples, lost $(kv lost "$line"))"
    check_alive "$path" lat
}

# A fresh proxy for each idle measurement: memory a previous run left in the
# allocator would otherwise hide the growth.  Readings: before, with $idle
# upgraded and silent WebSockets, after one 64 B echo on each, and
# $after_close s after they closed.
measure_idle() { # path round
    local path=$1 r=$2 pid rss0 rss1 rss2 rss3 ready echoed closed lgpid reply
    case $path in haproxy) stop_pid "$haproxy_pid"; start_haproxy ;; mgate) stop_pid "$mgate_pid"; start_mgate ;; esac
    pid=$(pid_of "$path")
    sleep "$settle"
    rss0=$(rss_kib "$pid")
    coproc IDLE { exec timeout -k 5 200 "$wsload" idle -p "$(port_of "$path")" -P "$prefix/echo" -n "$idle" -c 64 -s 64 2>>"$run/wsload.log"; }
    lgpid=$IDLE_PID
    ask_idle "" 90
    ready=$reply
    sleep "$settle"
    rss1=$(rss_kib "$pid")
    ask_idle msg 60
    echoed=$reply
    sleep "$settle"
    rss2=$(rss_kib "$pid")
    ask_idle close 30
    closed=$reply
    wait "$lgpid" 2>/dev/null || true
    sleep "$after_close"
    rss3=$(rss_kib "$pid" 2>/dev/null || echo 0)
    check_alive "$path" idle
    if [[ $(kv ok "$ready") != "$idle" || $(kv ok "$echoed") != "$idle" || $(kv bad "$echoed") != 0 ]]; then
        log "  idle $path: not every WebSocket opened or echoed: $ready / $echoed / $closed"
        return 0
    fi
    record idle_kib "$path" "$r" "$(awk -v a="$rss0" -v b="$rss1" -v n="$idle" 'BEGIN {printf "%.2f", (b - a) / n}')"
    record idle_msg_kib "$path" "$r" "$(awk -v a="$rss0" -v b="$rss2" -v n="$idle" 'BEGIN {printf "%.2f", (b - a) / n}')"
    record idle_after "$path" "$r" "$((rss3 - rss0))"
    log "  idle $path: RSS $rss0 -> $rss1 (open) -> $rss2 (one echo each) -> $rss3 KiB ${after_close}s after close ($closed)"
}

# ---- the run ------------------------------------------------------------

machine=$(machine_line)
mgate_rev=$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)
busy_before=$(busy_share)
log "bench http_ws: $machine; mgate $mgate_bin ($mgate_rev); results in $run"
if ((busy_before > 10)); then
    log "warning: the machine was ${busy_before}% busy before the run; figures will be noisy"
fi
log "ports: echo $echo_port, haproxy $haproxy_port, mgate $mgate_port"
start_echo
start_haproxy
start_mgate

all_paths=(direct haproxy mgate)
for ((r = 1; r <= rounds; r++)); do
    log "round $r of $rounds"
    k=$(((r - 1) % 3))
    paths=("${all_paths[@]:k}" "${all_paths[@]:0:k}")
    for what in $only; do
        case $what in
        thr)
            for v in "${variants[@]}"; do
                read -r n s <<<"$v"
                for p in "${paths[@]}"; do measure_thr "$p" "$n" "$s" "$r"; done
            done ;;
        lat) for p in "${paths[@]}"; do measure_lat "$p" "$r"; done ;;
        idle) for p in "${paths[@]}"; do [[ $p == direct ]] || measure_idle "$p" "$r"; done ;;
        *) log "unknown metric $what (thr lat idle)"; exit 64 ;;
        esac
    done
done

# ---- syscalls per message (perf stat on tracepoints) ---------------------

# One run of 1 WS x 64 B per path, perf stat on the proxy and on the echo
# target: rows "who path syscall count-per-message" in syscalls.tsv.
if ((do_syscalls)); then
    log "syscalls per message, 1 WS x 64 B"
    events=raw_syscalls:sys_enter
    for sc in recvfrom read recvmsg sendto sendmsg write writev epoll_wait epoll_ctl getpid; do
        events+=",syscalls:sys_enter_$sc"
    done
    for p in "${all_paths[@]}"; do
        perf_pids=()
        for who in proxy echo; do
            [[ $who == proxy && $p == direct ]] && continue
            pid=$([[ $who == echo ]] && echo "$echo_pid" || pid_of "$p")
            perf stat -x, -e "$events" -p "$pid" -o "$run/perf-$p-$who.csv" &
            perf_pids+=($!)
        done
        sleep 0.3
        line=$(wsload "$(sum "$duration" "$warmup" 30)" throughput -p "$(port_of "$p")" -P "$prefix/echo" \
            -n 1 -s 64 -W "$window" -d "$duration" -w "$warmup") || line=""
        kill -INT "${perf_pids[@]}" 2>/dev/null || true
        wait "${perf_pids[@]}" 2>/dev/null || true
        total=$(kv recv_total "$line")
        ((${total:-0} > 0)) || continue
        for who in proxy echo; do
            [[ -s $run/perf-$p-$who.csv ]] || continue
            awk -F, -v n="$total" -v p="$p" -v w="$who" '$3 ~ /sys_enter/ && $1 ~ /^[0-9]+$/ {
                name = $3; sub(/.*sys_enter_?/, "", name); if (name == "") name = "all";
                printf "%s\t%s\t%s\t%.3f\n", w, p, name, $1 / n }' "$run/perf-$p-$who.csv" >>"$run/syscalls.tsv"
        done
    done
fi

# ---- the report ---------------------------------------------------------

report=$run/report.md
{
    echo "# mgate WebSocket relay benchmark, $(date -u +'%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $machine (nothing pinned: load generator, echo target and proxy share the CPUs)."
    echo "mgate $mgate_rev, HTTP listener, handler \`noop\`, MGATE_LOG_LEVEL=warn, 1 worker;"
    echo "HAProxy $(haproxy -v 2>/dev/null | awk 'NR==1 {print $3}') mode http (WebSocket tunnelled), nbthread 1. Target: bench/wsecho."
    echo "Rounds: $rounds, interleaved (direct, haproxy, mgate; each round starts one path later)."
    echo "Throughput: N WebSockets × W=$window binary messages in flight each, ${duration}s measured after ${warmup}s warm-up; messages echoed/s."
    echo "CPU: utime+stime from /proc/PID/stat over the whole run per message echoed (each message crosses a proxy twice)."
    echo "Latency: one WebSocket, 64 B at $lat_rate msg/s for ${lat_duration}s, round trip. Idle: $idle WebSockets (64 opening at once)."
    echo "Each cell: median (min-max) over rounds; a ratio: the median of the ratios within each round."
    echo "The machine was ${busy_before}% busy (all CPUs) in the second before the run."
    echo
    awk -F'\t' -v variants="${variants[*]}" -f "$here/stats.awk" -f "$here/http_ws_report.awk" "$results"
    if [[ -s $run/syscalls.tsv ]]; then
        echo
        echo "Syscalls per message echoed (1 WS × 64 B, one run, perf stat; the target's as each path feeds it):"
        echo
        echo "| syscall | HAProxy | mgate | target, direct | target via HAProxy | target via mgate |"
        echo "|---|---|---|---|---|---|"
        awk -F'\t' '{v[$1, $2, $3] = $4; if (!($3 in seen)) {seen[$3] = 1; order[++n] = $3}}
            END {for (i = 1; i <= n; i++) {s = order[i]
                if (v["proxy", "haproxy", s] + v["proxy", "mgate", s] + v["echo", "direct", s] + v["echo", "mgate", s] == 0) continue
                printf "| %s | %.3f | %.3f | %.3f | %.3f | %.3f |\n", s, v["proxy", "haproxy", s], v["proxy", "mgate", s],
                    v["echo", "direct", s], v["echo", "haproxy", s], v["echo", "mgate", s]}}' "$run/syscalls.tsv"
    fi
    warns=$(grep -c . "$run/mgate.log" || true)
    echo
    echo "mgate log (level warn): $warns lines$( ((warns)) && echo "; first: $(head -1 "$run/mgate.log")")."
} >"$report"

cat "$report"
cp "$report" "$outdir/ws-latest.md"
log "report: $report (and $outdir/ws-latest.md)"
