#!/usr/bin/env bash
# bench/mqtt_ws.sh: MQTT over WebSocket through mgate, side by side with HAProxy
# (mode http, relaying the WebSocket to mosquitto's own WebSocket listener) and
# with a direct WebSocket connection to that listener (issue 15).  See
# docs/PERFORMANCE.md, "MQTT over WebSocket against HAProxy (issue 15)".
#
#   bench/mqtt_ws.sh             the full run (3 rounds), ~8 minutes
#   bench/mqtt_ws.sh --smoke     everything tiny (< 30 s): checks the harness still runs
#   bench/mqtt_ws.sh --perf      also where mgate's CPU goes on ws:// and wss:// (perf record)
#   bench/mqtt_ws.sh --rounds 0 --perf   only that
#   bench/mqtt_ws.sh --help      every option
#
# The broker side is the same for both proxies: mosquitto's WebSocket listener
# (plain ws://, path /mqtt); mgate runs with TARGET_PROTOCOL=ws.  For wss:// the
# proxy terminates TLS (HAProxy `bind ... ssl crt`, mgate's MQTT_WS_WITH_TLS
# listener) and speaks plain ws:// to the broker; "direct" wss:// is mosquitto's
# own TLS WebSocket listener.  The load generator is bench/loadgen (--ws, --tls):
# 4 publishers -> 4 subscribers, one masked binary frame per MQTT packet.
# Paths are measured interleaved (each round starts one path later); each
# figure is the median over rounds with min-max, each ratio the median of the
# ratios within a round.  Everything listens on 127.0.0.1 on free ports; every
# process this script starts is stopped by its PID.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

rounds=3 duration=3 warmup=0.5 window=200
idle=1000 idle_parallel=64 smoke=0 pin=0 do_perf=0
settle=1 # seconds given to a process to finish what a run started
only="thr idle"
transports="ws wss"
loads=("0 64" "0 1024" "1 64" "1 1024") # QoS, payload bytes
mgate_bin=${MGATE_BIN:-$top/build/mgate}
outdir=$here/out
wspath=/mqtt

usage() {
    cat <<EOF
usage: bench/mqtt_ws.sh [options]
  --smoke              tiny and fast (1 round, 0.3 s runs, 50 idle clients); for CI
  --rounds N           rounds of interleaved measurements ($rounds)
  --duration SEC       measured seconds of each throughput run ($duration; plus ${warmup}s warm-up)
  --window N           QoS messages in flight per publisher ($window)
  --idle N             idle clients for the memory and descriptor figures ($idle)
  --idle-parallel N    of which this many upgrade at a time ($idle_parallel)
  --only LIST          metrics to run, from: thr idle ("$only")
  --pin                pin each proxy to CPU 1 and the broker and load generator to CPU 0
  --perf               also perf record mgate during one QoS 0 run of 64 B and of 1 KiB on ws:// and on wss://
  --mgate PATH         the mgate binary ($mgate_bin, built (RelWithDebInfo) if missing)
  --out DIR            where results go ($outdir)
EOF
}

bench_options mqtt_ws.sh "smoke=1 rounds=1 duration=0.3 warmup=0.1 idle=50 settle=0.2" \
    "--rounds=rounds --duration=duration --window=window --idle=idle --idle-parallel=idle_parallel --only=only --pin=pin=1 --perf=do_perf=1" "$@"

need_tools bench/mqtt_ws.sh "mosquitto haproxy openssl iproute2 gawk make coreutils" mosquitto haproxy openssl ss awk make timeout
if ((do_perf)) && ! command -v perf >/dev/null; then
    echo "bench/mqtt_ws.sh: --perf needs perf" >&2; exit 1
fi
if ((pin)) && { ! command -v taskset >/dev/null || (($(nproc) < 2)); }; then
    echo "bench/mqtt_ws.sh: --pin needs taskset and 2 CPUs" >&2; exit 1
fi

fit_fd_limit bench/mqtt_ws.sh

# ---- build --------------------------------------------------------------

make -s -C "$here" OUT="$here/out" >/dev/null
lg=$here/out/loadgen
build_mgate_if_missing bench/mqtt_ws.sh

stamp=$(date +%Y%m%d-%H%M%S)
run=$outdir/mqtt-ws-run-$stamp
mkdir -p "$run"
chmod 755 "$run" # mosquitto reads its certificate after dropping to user mosquitto
results=$run/results.tsv # metric <tab> path <tab> round <tab> value
: >"$results"

# One self-signed P-256 certificate for every TLS listener (HAProxy wants it
# and its key in one file).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$run/key.pem" -out "$run/crt.pem" 2>>"$run/openssl.log"
cat "$run/crt.pem" "$run/key.pem" >"$run/haproxy.pem"
chmod 644 "$run/key.pem" "$run/crt.pem"

# ---- processes ----------------------------------------------------------

broker_pid="" haproxy_pid="" mgate_pid=""
cpu_proxy=() cpu_rest=()
if ((pin)); then cpu_proxy=(taskset -c 1) cpu_rest=(taskset -c 0); fi

cleanup() {
    local pid
    for pid in "$mgate_pid" "$haproxy_pid" "$broker_pid"; do
        stop_pid "$pid"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ports=$("$lg" freeport 9) || { echo "bench/mqtt_ws.sh: no free ports" >&2; exit 1; }
read -r b_tcp b_ws b_wss h_ws h_wss m_ws m_wss m_mqtt m_mqtts <<<"$(echo $ports)"

# user root: mosquitto keeps root and can read its certificate wherever the
# run directory is (dropping to user mosquitto, it could not pass a parent
# that is not world-searchable, such as a clean clone under mktemp -d).
cat >"$run/mosquitto.conf" <<EOF
user root
per_listener_settings false
allow_anonymous true
persistence false
set_tcp_nodelay true
max_queued_messages 10000
log_dest stderr
log_type error
log_type warning
listener $b_tcp 127.0.0.1
listener $b_ws 127.0.0.1
protocol websockets
socket_domain ipv4
listener $b_wss 127.0.0.1
protocol websockets
socket_domain ipv4
certfile $run/crt.pem
keyfile $run/key.pem
EOF

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
frontend mqtt_ws
    bind 127.0.0.1:$h_ws
    bind 127.0.0.1:$h_wss ssl crt $run/haproxy.pem
    default_backend broker_ws
backend broker_ws
    server mosquitto 127.0.0.1:$b_ws
EOF

start_broker() {
    "${cpu_rest[@]}" mosquitto -c "$run/mosquitto.conf" 2>>"$run/mosquitto.log" &
    broker_pid=$!
    wait_listen "$b_wss" "$broker_pid" || { log "mosquitto did not start (see $run/mosquitto.log)"; exit 1; }
    wait_listen "$b_ws" "$broker_pid" || { log "mosquitto did not start (see $run/mosquitto.log)"; exit 1; }
}

start_haproxy() {
    "${cpu_proxy[@]}" haproxy -db -f "$run/haproxy.cfg" 2>>"$run/haproxy.log" &
    haproxy_pid=$!
    wait_listen "$h_wss" "$haproxy_pid" || { log "haproxy did not start (see $run/haproxy.log)"; exit 1; }
}

# mgate runs in $run (no .env of the caller's is read), with no MGATE_* from
# the caller's environment: ws:// and wss:// listeners to the broker's
# WebSocket listener, and mqtt:// and mqtts:// ones to its TCP listener (only
# for the idle figures: what TLS itself costs per client).  With
# mgate_ws_target=mqtt (only for one idle figure) the ws:// listener goes to
# the broker's TCP listener instead.
mgate_ws_target=ws
start_mgate() {
    local w=MGATE_MQTT_WS_WITHOUT_TLS_ ws=MGATE_MQTT_WS_WITH_TLS_ m=MGATE_MQTT_WITHOUT_TLS_ ms=MGATE_MQTT_WITH_TLS_
    local wtarget="${w}TARGET_PORT=$b_ws ${w}TARGET_PROTOCOL=ws ${w}TARGET_PATH=$wspath"
    [[ $mgate_ws_target == mqtt ]] && wtarget="${w}TARGET_PORT=$b_tcp ${w}TARGET_PROTOCOL=mqtt"
    # shellcheck disable=SC2046,SC2086
    env -C "$run" $(unset_mgate_vars) \
        ${w}HOST=127.0.0.1 ${w}PORT="$m_ws" ${w}TARGET_HOST=127.0.0.1 $wtarget \
        ${ws}HOST=127.0.0.1 ${ws}PORT="$m_wss" ${ws}TARGET_HOST=127.0.0.1 ${ws}TARGET_PORT="$b_ws" \
        ${ws}TARGET_PROTOCOL=ws ${ws}TARGET_PATH="$wspath" ${ws}CERT_FILE="$run/crt.pem" ${ws}KEY_FILE="$run/key.pem" \
        ${m}HOST=127.0.0.1 ${m}PORT="$m_mqtt" ${m}TARGET_HOST=127.0.0.1 ${m}TARGET_PORT="$b_tcp" \
        ${ms}HOST=127.0.0.1 ${ms}PORT="$m_mqtts" ${ms}TARGET_HOST=127.0.0.1 ${ms}TARGET_PORT="$b_tcp" \
        ${ms}CERT_FILE="$run/crt.pem" ${ms}KEY_FILE="$run/key.pem" \
        MGATE_HANDLER=noop MGATE_WORKERS=1 MGATE_LOG_LEVEL=warn "${cpu_proxy[@]}" "$mgate_bin" 2>>"$run/mgate.log" &
    mgate_pid=$!
    wait_listen "$m_mqtts" "$mgate_pid" || { log "mgate did not start (see $run/mgate.log)"; exit 1; }
    [[ $(cat "/proc/$mgate_pid/comm") == mgate ]] || log "warning: pid $mgate_pid is not mgate: CPU and RSS readings are wrong"
}

port_of() { # path transport
    case $1-$2 in
    direct-ws) echo "$b_ws" ;; direct-wss) echo "$b_wss" ;;
    haproxy-ws) echo "$h_ws" ;; haproxy-wss) echo "$h_wss" ;;
    mgate-ws | mgate-wstcp) echo "$m_ws" ;; mgate-wss) echo "$m_wss" ;;
    mgate-mqtt) echo "$m_mqtt" ;; mgate-mqtts) echo "$m_mqtts" ;;
    esac
}
pid_of() { case $1 in direct) echo "$broker_pid" ;; haproxy) echo "$haproxy_pid" ;; mgate) echo "$mgate_pid" ;; esac; }
# loadgen's transport options for a transport
lg_opts() { case $1 in ws | wstcp) echo "--ws $wspath" ;; wss) echo "--ws $wspath --tls" ;; mqtt) echo "" ;; mqtts) echo "--tls" ;; esac; }

# A process that died is a finding: logged (with its log's tail), then restarted.
check_alive() { # path what
    local pid rc
    pid=$(pid_of "$1")
    kill -0 "$pid" 2>/dev/null && return 0
    wait "$pid" 2>/dev/null && rc=0 || rc=$?
    log "BUG? $1 (pid $pid) exited with status $rc during $2; restarting it"
    case $1 in direct) tail -5 "$run/mosquitto.log" ;; haproxy) tail -5 "$run/haproxy.log" ;; mgate) tail -5 "$run/mgate.log" ;; esac | sed 's/^/    /' >&2
    case $1 in direct) start_broker ;; haproxy) start_haproxy ;; mgate) start_mgate ;; esac
}

per_m() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$hz" 'BEGIN {printf "%.3f", n ? (b - a) / hz / n * 1e6 : 0}'; } # CPU-s per 1M

# ---- measurements -------------------------------------------------------

measure_thr() { # path transport qos size round
    local path=$1 t=$2 q=$3 size=$4 r=$5 pid m c0 c1 b0 b1 line total u0 s0 u1 s1
    pid=$(pid_of "$path") m=${t}_q${q}_${size}
    c0=$(cpu_split "$pid") b0=$(cpu_ticks "$broker_pid")
    # shellcheck disable=SC2046
    line=$(bounded "$(sum "$duration" "$warmup" 30)" "${cpu_rest[@]}" "$lg" throughput -p "$(port_of "$path" "$t")" \
        $(lg_opts "$t") -q "$q" -s "$size" -W "$window" -d "$duration" -w "$warmup") || { check_alive "$path" "thr $m"; return 0; }
    c1=$(cpu_split "$pid") b1=$(cpu_ticks "$broker_pid")
    total=$(kv recv "$line")
    record "thr_$m" "$path" "$r" "$(kv rate "$line")"
    if ((${total:-0} > 0)); then
        record "bcpu_$m" "$path" "$r" "$(per_m "$b0" "$b1" "$total")"
        record "lcpu_$m" "$path" "$r" "$(awk -v c="$(kv cpu_s "$line")" -v n="$total" 'BEGIN {printf "%.3f", c / n * 1e6}')"
        if [[ $path != direct ]]; then
            read -r u0 s0 <<<"$c0"
            read -r u1 s1 <<<"$c1"
            record "cpu_$m" "$path" "$r" "$(per_m $((u0 + s0)) $((u1 + s1)) "$total")"
            record "sys_$m" "$path" "$r" "$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) 'BEGIN {printf "%.0f", u + s ? 100 * s / (u + s) : 0}')"
        fi
    fi
    log "  thr $path $t QoS $q ${size} B: $(kv rate "$line") msg/s, proxy $(awk -v a="$c0" -v b="$c1" 'BEGIN {split(a, x, " "); split(b, y, " "); print y[1] + y[2] - x[1] - x[2]}') ticks for $total msgs (lost $(kv lost "$line"), bad $(kv bad "$line"), errors $(kv errors "$line"))"
    check_alive "$path" "thr $m"
}

# A fresh proxy for each idle measurement (a previous run's memory in the
# allocator would hide the growth), 20 clients opened and closed first (the
# first TLS handshake and allocator state), then RSS and descriptors before
# and with $idle clients connected and CONNACKed, silent.  Transport wstcp:
# ws:// through an mgate whose ws:// listener goes to the broker's TCP listener.
measure_idle() { # path transport round
    local path=$1 t=$2 r=$3 pid rss0 rss1 fd0 fd1 ready closed reply
    [[ $t == wstcp ]] && mgate_ws_target=mqtt
    case $path in haproxy) stop_pid "$haproxy_pid"; start_haproxy ;; mgate) stop_pid "$mgate_pid"; start_mgate ;; esac
    mgate_ws_target=ws
    pid=$(pid_of "$path")
    # shellcheck disable=SC2046
    timeout -k 5 60 "$lg" idle -p "$(port_of "$path" "$t")" $(lg_opts "$t") -n 20 -c 20 -H 0 </dev/null >/dev/null 2>>"$run/loadgen.log" || true
    sleep "$settle"
    rss0=$(rss_kib "$pid") fd0=$(ls "/proc/$pid/fd" | wc -l)
    # shellcheck disable=SC2046
    coproc IDLE { exec timeout -k 5 200 "${cpu_rest[@]}" "$lg" idle -p "$(port_of "$path" "$t")" $(lg_opts "$t") -n "$idle" -c "$idle_parallel" 2>>"$run/loadgen.log"; }
    local lgpid=$IDLE_PID
    ask_idle "" 120
    ready=$reply
    sleep "$settle"
    rss1=$(rss_kib "$pid") fd1=$(ls "/proc/$pid/fd" | wc -l)
    ask_idle close 30
    closed=$reply
    wait "$lgpid" 2>/dev/null || true
    check_alive "$path" "idle $t"
    if [[ $t == wstcp ]]; then # back to the mgate every other measurement uses
        stop_pid "$mgate_pid"
        start_mgate
    fi
    if [[ $(kv ok "$ready") != "$idle" ]]; then
        log "  idle $path $t: not every client connected: $ready / $closed"
        return 0
    fi
    record "idle_${t}_kib" "$path" "$r" "$(per_each "$rss0" "$rss1" "$idle")"
    record "fds_${t}" "$path" "$r" "$(per_each "$fd0" "$fd1" "$idle")"
    log "  idle $path $t: RSS $rss0 -> $rss1 KiB, descriptors $fd0 -> $fd1 with $idle clients ($(kv open_s "$ready") s to open)"
}

# ---- the run ------------------------------------------------------------

log_run_start mqtt_ws
log "ports: broker tcp $b_tcp ws $b_ws wss $b_wss, haproxy ws $h_ws wss $h_wss, mgate ws $m_ws wss $m_wss mqtt $m_mqtt mqtts $m_mqtts"
start_broker
start_haproxy
start_mgate

all_paths=(direct haproxy mgate)
t_start=$(date +%s)
busy_samples=()
for ((r = 1; r <= rounds; r++)); do
    log "round $r of $rounds"
    k=$(((r - 1) % 3))
    paths=("${all_paths[@]:k}" "${all_paths[@]:0:k}")
    for what in $only; do
        case $what in
        thr)
            for t in $transports; do
                for l in "${loads[@]}"; do
                    read -r q s <<<"$l"
                    for p in "${paths[@]}"; do measure_thr "$p" "$t" "$q" "$s" "$r"; done
                done
            done ;;
        idle)
            for p in "${paths[@]}"; do
                case $p in
                haproxy) for t in ws wss; do measure_idle haproxy "$t" "$r"; done ;;
                mgate) for t in ws wss mqtt mqtts wstcp; do measure_idle mgate "$t" "$r"; done ;;
                esac
            done ;;
        *) log "unknown metric $what (thr idle)"; exit 64 ;;
        esac
    done
done
run_s=$(($(date +%s) - t_start))

# ---- where mgate's time goes (perf) --------------------------------------

if ((do_perf)); then
    for ts in ws-64 wss-64 ws-1024 wss-1024; do
        t=${ts%-*} size=${ts#*-}
        log "perf: mgate, $t QoS 0 $size B"
        perf record -g -F 2000 -p "$mgate_pid" -o "$run/perf-$ts.data" 2>>"$run/perf.log" &
        perf_pid=$!
        sleep 0.3
        # shellcheck disable=SC2046
        bounded "$(sum "$duration" "$warmup" 30)" "$lg" throughput -p "$(port_of mgate "$t")" $(lg_opts "$t") \
            -q 0 -s "$size" -W "$window" -d "$duration" -w "$warmup" >/dev/null || true
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        perf report -i "$run/perf-$ts.data" --no-children --sort sym --stdio 2>/dev/null |
            grep -E '^ +[0-9.]+%' | head -25 >"$run/perf-$ts.txt" || true
    done
fi

# ---- the report ---------------------------------------------------------

report=$run/report.md
{
    echo "# MQTT over WebSocket: mgate against HAProxy, $(date -u +'%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $machine; shared with other engineers' builds and tests while it ran."
    if ((pin)); then
        echo "Pinned: the proxies on CPU 1, mosquitto and the load generator on CPU 0 (taskset)."
    else
        echo "Nothing pinned: load generator, broker and proxy share the CPUs."
    fi
    echo "The machine was ${busy_before}% busy (all CPUs) in the second before the run; the run took ${run_s} s."
    echo "mgate $mgate_rev ($(basename "$(dirname "$mgate_bin")")), MQTT_WS listeners with TARGET_PROTOCOL=ws to mosquitto's WebSocket listener, handler \`noop\`, MGATE_LOG_LEVEL=warn, 1 worker."
    echo "HAProxy $(haproxy -v 2>/dev/null | awk 'NR==1 {print $3}') mode http (the upgraded WebSocket is tunnelled), nbthread 1, same broker listener."
    echo "mosquitto $(mosquitto -h 2>/dev/null | awk 'NR==1 {print $3}'): ws:// listener (direct and both proxies' broker side), its own wss:// listener for direct wss://."
    echo "TLS: one self-signed P-256 certificate; the load generator negotiates what OpenSSL offers (TLS 1.3)."
    echo "Load: bench/loadgen --ws $wspath [--tls]: 4 publishers -> 4 subscribers (topic bench/i each), $window messages in flight per publisher,"
    echo "${warmup}s warm-up then ${duration}s measured; one masked binary frame per MQTT packet. Rounds: $rounds, interleaved, each starting one path later."
    echo "CPU: the proxy's utime+stime (/proc/PID/stat) over the whole run, per message delivered, in CPU-seconds per million messages"
    echo "(each message crosses the proxy twice: publisher -> broker, broker -> subscriber). Idle: $idle clients past CONNACK ($idle_parallel upgrading at a time), on a fresh proxy."
    echo "Each cell: median (min–max) over rounds; a ratio: the median of the ratios within each round."
    echo
    awk -F'\t' -v transports="$transports" -v loads="${loads[*]}" -f "$here/stats.awk" -f "$here/mqtt_ws_report.awk" "$results"
    for ts in ws-64 wss-64 ws-1024 wss-1024; do
        if [[ -s $run/perf-$ts.txt ]]; then
            echo
            echo "mgate's top functions, ${ts%-*}:// QoS 0 ${ts#*-} B (perf, self time, whole process):"
            echo
            echo '```'
            cat "$run/perf-$ts.txt"
            echo '```'
        fi
    done
    warns=$(grep -c . "$run/mgate.log" || true)
    echo
    echo "mgate log (level warn): $warns lines$( ((warns)) && echo "; first: $(head -1 "$run/mgate.log")")."
} >"$report"

cat "$report"
cp "$report" "$outdir/mqtt-ws-latest.md"
log "report: $report (and $outdir/mqtt-ws-latest.md)"
