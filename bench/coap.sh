#!/usr/bin/env bash
# bench/coap.sh: CoAP requests through mgate's CoAP relay (MGATE_COAP_WITHOUT_DTLS_*,
# TARGET_PROTOCOL=coap) and through its CoAP bridge (TARGET_PROTOCOL=mqtt, to a
# mosquitto started here) side by side with the same load sent to libcoap's
# coap-server-openssl directly, and the memory of an idle CoAP session in mgate
# (issue 16, "Speed").  See docs/PERFORMANCE.md, "CoAP relay and bridge (issue 16)".
#
#   bench/coap.sh             the full run (3 rounds), ~1 minute
#   bench/coap.sh --smoke     everything tiny (< 20 s): checks the harness still runs
#   bench/coap.sh --perf      also where mgate's CPU goes (perf record during a CON load)
#   bench/coap.sh --help      every option
#
# The load generator is bench/coapload: N UDP clients (each its own source
# port, so each is one peer and session in mgate), each keeping W POSTs with a
# small payload in flight to /bench (the server runs with -d, so the first POST
# creates the resource and the rest get 2.04), confirmable (CON) and, as a
# second load, non-confirmable (NON).  mgate runs one worker, handler noop,
# log level warn.  The bridge gets the same load as POSTs to
# ps/bench/coap?qos=0 (path bridge0) and ?qos=1 (bridge1), each client with a
# client id of its own (so its own MQTT session to mosquitto, which has no
# subscriber: it drops what it gets); its "server" is mosquitto.  A second
# mgate process runs the bridge.  CPU is each process's utime+stime (/proc/PID/stat) over a
# whole load run, per request answered.  Paths are measured interleaved (each
# round starts with the other path); each figure is the median over rounds
# with min-max, each ratio the median of the ratios within a round.
# Everything listens on 127.0.0.1 on free ports; every process this script
# starts is stopped by its PID.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

rounds=3 duration=3 warmup=0.5 clients=16 window=4 size=32
idle=2000 idle_parallel=64 do_perf=0
settle=1 # seconds given to a process to finish what a run started
loads="con non"
mgate_bin=${MGATE_BIN:-$top/build/mgate}
outdir=$here/out

usage() {
    cat <<EOF
usage: bench/coap.sh [options]
  --smoke              tiny and fast (1 round, 0.3 s runs, 50 idle clients); for CI
  --rounds N           rounds of interleaved measurements ($rounds)
  --duration SEC       measured seconds of each load run ($duration; plus ${warmup}s warm-up)
  --clients N          CoAP clients (source ports) of a load run ($clients)
  --window N           requests in flight per client ($window)
  --size BYTES         payload of each POST ($size)
  --loads LIST         from: con non ("$loads")
  --idle N             idle CoAP sessions for the memory figure ($idle; 0: none)
  --perf               also perf record mgate during one CON load
  --mgate PATH         the mgate binary ($mgate_bin, built (RelWithDebInfo) if missing)
  --out DIR            where results go ($outdir)
EOF
}

bench_options coap.sh "rounds=1 duration=0.3 warmup=0.1 idle=50 settle=0.2" \
    "--rounds=rounds --duration=duration --clients=clients --window=window --size=size --loads=loads --idle=idle --perf=do_perf=1" "$@"

need_tools bench/coap.sh "libcoap3-bin mosquitto iproute2 gawk make coreutils" coap-server-openssl mosquitto ss awk make timeout
if ((do_perf)) && ! command -v perf >/dev/null; then
    echo "bench/coap.sh: --perf needs perf" >&2; exit 1
fi

# One descriptor per idle client here and one per session in mgate (its socket to the server
# or its MQTT connection to mosquitto).
fit_fd_limit bench/coap.sh

# ---- build --------------------------------------------------------------

make -s -C "$here" OUT="$here/out" coap >/dev/null
cl=$here/out/coapload
build_mgate_if_missing bench/coap.sh

stamp=$(date +%Y%m%d-%H%M%S)
run=$outdir/coap-run-$stamp
mkdir -p "$run"
results=$run/results.tsv # metric <tab> path <tab> round <tab> value
: >"$results"

# ---- processes ----------------------------------------------------------

server_pid="" mgate_pid="" broker_pid="" bridge_pid=""
cleanup() {
    stop_pid "$mgate_pid"
    stop_pid "$bridge_pid"
    stop_pid "$server_pid"
    stop_pid "$broker_pid"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ports=$("$cl" freeport 6) || { echo "bench/coap.sh: no free ports" >&2; exit 1; }
read -r s_port m_port admin_port b_port g_port admin2_port <<<"$(echo $ports)"

cat >"$run/mosquitto.conf" <<EOF
listener $b_port 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
EOF

# -d: POST to /bench creates it (2.01), later ones change it (2.04).  The
# server listens on TCP too, which wait_listen sees.
start_server() {
    coap-server-openssl -A 127.0.0.1 -p "$s_port" -d 10 -v 3 >>"$run/coap-server.log" 2>&1 &
    server_pid=$!
    wait_listen "$s_port" "$server_pid" || { log "coap-server-openssl did not start (see $run/coap-server.log)"; exit 1; }
}

start_broker() {
    mosquitto -c "$run/mosquitto.conf" 2>>"$run/mosquitto.log" &
    broker_pid=$!
    wait_listen "$b_port" "$broker_pid" || { log "mosquitto did not start (see $run/mosquitto.log)"; exit 1; }
}

# mgate runs in $run (no .env of the caller's is read), with no MGATE_* from
# the caller's environment: one CoAP listener to the server (the relay) or to
# mosquitto (the bridge), sessions that outlive the run (IDLE_TIMEOUT 1h) and
# room for every idle client; its admin listener tells when it is up.  Sets
# $launched to its PID.
launch_mgate() { # name coap-port admin-port target-protocol target-port
    local c=MGATE_COAP_WITHOUT_DTLS_
    # shellcheck disable=SC2046
    env -C "$run" $(unset_mgate_vars) \
        ${c}HOST=127.0.0.1 ${c}PORT="$2" ${c}TARGET_PROTOCOL="$4" ${c}TARGET_HOST=127.0.0.1 ${c}TARGET_PORT="$5" \
        ${c}IDLE_TIMEOUT=1h ${c}MAX_CONNECTIONS=$((idle + 1000)) MGATE_ADMIN_PORT="$3" \
        MGATE_HANDLER=noop MGATE_WORKERS=1 MGATE_LOG_LEVEL=warn "$mgate_bin" 2>>"$run/$1.log" &
    launched=$!
    wait_listen "$3" "$launched" || { log "$1 did not start (see $run/$1.log)"; exit 1; }
    [[ $(cat "/proc/$launched/comm") == mgate ]] || log "warning: pid $launched is not mgate: CPU and RSS readings are wrong"
}
start_mgate() { launch_mgate mgate "$m_port" "$admin_port" coap "$s_port"; mgate_pid=$launched; }
start_bridge() { launch_mgate bridge "$g_port" "$admin2_port" mqtt "$b_port"; bridge_pid=$launched; }

# Per path: the port the load goes to, the mgate process (none directly) and
# the server behind it, the request's path and query.
port_of() { case $1 in direct) echo "$s_port" ;; mgate) echo "$m_port" ;; bridge*) echo "$g_port" ;; esac; }
mgate_of() { case $1 in direct) echo "" ;; mgate) echo "$mgate_pid" ;; bridge*) echo "$bridge_pid" ;; esac; }
server_of() { case $1 in bridge*) echo "$broker_pid" ;; *) echo "$server_pid" ;; esac; }
pid_of() { case $1 in direct) echo "$server_pid" ;; *) mgate_of "$1" ;; esac; }
uri_opts() { case $1 in bridge[01]) echo "-P ps/bench/coap -Q qos=${1#bridge}&clientid=bench-%n" ;; *) echo "-P bench" ;; esac; }
load_opts() { case $1 in con) echo "" ;; non) echo "-N" ;; esac; }

# A process that died is a finding: logged (with its log's tail), then restarted.
check_alive() { # path what
    local pid rc name
    for name in coap-server mosquitto mgate bridge; do
        case $name in coap-server) pid=$server_pid ;; mosquitto) pid=$broker_pid ;; mgate) pid=$mgate_pid ;; bridge) pid=$bridge_pid ;; esac
        kill -0 "$pid" 2>/dev/null && continue
        wait "$pid" 2>/dev/null && rc=0 || rc=$?
        log "BUG? $name (pid $pid) exited with status $rc during $1 $2; restarting it"
        tail -5 "$run/$name.log" | sed 's/^/    /' >&2
        case $name in coap-server) start_server ;; mosquitto) start_broker ;; mgate) start_mgate ;; bridge) start_bridge ;; esac
    done
}

# Datagrams the kernel dropped for a full receive buffer, all UDP sockets of the machine.
udp_drops() { awk '/^Udp:/ && ++n == 1 {for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") k = i} /^Udp:/ && n == 2 {print $k}' /proc/net/snmp; }

us_per() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$hz" 'BEGIN {printf "%.2f", n ? (b - a) / hz / n * 1e6 : 0}'; } # CPU-µs each

# ---- measurements -------------------------------------------------------

measure_load() { # path load round
    local path=$1 l=$2 r=$3 m0=0 m1=0 s0 s1 d0 d1 line total mpid spid
    mpid=$(mgate_of "$path") spid=$(server_of "$path")
    [[ -n $mpid ]] && m0=$(cpu_ticks "$mpid")
    s0=$(cpu_ticks "$spid") d0=$(udp_drops)
    # shellcheck disable=SC2046
    line=$(bounded "$(sum "$duration" "$warmup" 20)" "$cl" load -p "$(port_of "$path")" $(load_opts "$l") \
        -n "$clients" -W "$window" -s "$size" $(uri_opts "$path") -d "$duration" -w "$warmup") || { check_alive "$path" "load $l"; return 0; }
    [[ -n $mpid ]] && m1=$(cpu_ticks "$mpid")
    s1=$(cpu_ticks "$spid") d1=$(udp_drops)
    total=$(kv recv_total "$line")
    record "thr_$l" "$path" "$r" "$(kv rate "$line")"
    record "p50_$l" "$path" "$r" "$(kv p50_us "$line")"
    record "p99_$l" "$path" "$r" "$(kv p99_us "$line")"
    if ((${total:-0} > 0)); then
        record "scpu_$l" "$path" "$r" "$(us_per "$s0" "$s1" "$total")"
        record "lcpu_$l" "$path" "$r" "$(awk -v c="$(kv cpu_s "$line")" -v n="$(kv recv "$line")" 'BEGIN {printf "%.2f", n ? c / n * 1e6 : 0}')"
        [[ -n $mpid ]] && record "cpu_$l" "$path" "$r" "$(us_per "$m0" "$m1" "$total")"
    fi
    log "  $path $l: $(kv rate "$line") req/s, p50 $(kv p50_us "$line") µs, p99 $(kv p99_us "$line") µs; mgate $((m1 - m0)) ticks, server $((s1 - s0)) ticks for $total requests (timeouts $(kv timeouts "$line"), lost $(kv lost "$line"), not 2.xx $(kv not_2xx "$line"), errors $(kv errors "$line"); UDP receive-buffer drops $((d1 - d0)))"
    check_alive "$path" "load $l"
}

# A fresh mgate (a previous run's memory in the allocator would hide the
# growth), 20 clients through it first (allocator state, the server's first
# resource), then RSS and descriptors before and after $idle more clients
# have each had one POST answered and gone quiet (their sessions stay:
# IDLE_TIMEOUT is 1h).  The same for the server directly, for reference.
# The bridge (bridge0: QoS 0) with a fresh mosquitto too, whose growth
# (its side of each client's MQTT session) is recorded as well.
measure_idle() { # path round
    local path=$1 r=$2 pid rss0 rss1 fd0 fd1 b0=0 b1=0 ready reply
    case $path in
    direct) stop_pid "$server_pid"; start_server ;;
    mgate) stop_pid "$mgate_pid"; start_mgate ;;
    bridge*) stop_pid "$bridge_pid"; stop_pid "$broker_pid"; start_broker; start_bridge ;;
    esac
    pid=$(pid_of "$path")
    # shellcheck disable=SC2046
    timeout -k 5 60 "$cl" idle -p "$(port_of "$path")" $(uri_opts "$path") -n 20 -c 20 -s "$size" </dev/null >/dev/null 2>>"$run/coapload.log" || true
    sleep "$settle"
    rss0=$(rss_kib "$pid") fd0=$(ls "/proc/$pid/fd" | wc -l)
    [[ $path == bridge* ]] && b0=$(rss_kib "$broker_pid")
    # shellcheck disable=SC2046
    coproc IDLE { exec timeout -k 5 120 "$cl" idle -p "$(port_of "$path")" $(uri_opts "$path") -n "$idle" -c "$idle_parallel" -s "$size" 2>>"$run/coapload.log"; }
    local clpid=$IDLE_PID
    ask_idle "" 90
    ready=$reply
    sleep "$settle"
    rss1=$(rss_kib "$pid") fd1=$(ls "/proc/$pid/fd" | wc -l)
    [[ $path == bridge* ]] && b1=$(rss_kib "$broker_pid")
    ask_idle close 30
    wait "$clpid" 2>/dev/null || true
    check_alive "$path" "idle"
    # The idle sessions out of the way of the next round's loads: the server's
    # too (libcoap keeps a session per client address for 300 s, and with
    # 2000 of them it served ~23 k instead of ~98 k req/s, at 4x the CPU).
    case $path in
    direct) stop_pid "$server_pid"; start_server ;;
    mgate) stop_pid "$mgate_pid"; stop_pid "$server_pid"; start_server; start_mgate ;;
    bridge*) stop_pid "$bridge_pid"; start_bridge ;;
    esac
    if [[ $(kv ok "$ready") != "$idle" ]]; then
        log "  idle $path: not every client was answered: $ready"
        return 0
    fi
    record idle_kib "$path" "$r" "$(per_each "$rss0" "$rss1" "$idle")"
    record idle_fds "$path" "$r" "$(per_each "$fd0" "$fd1" "$idle")"
    [[ $path == bridge* ]] && record idle_kib_broker "$path" "$r" "$(per_each "$b0" "$b1" "$idle")"
    log "  idle $path: RSS $rss0 -> $rss1 KiB, descriptors $fd0 -> $fd1 with $idle clients ($(kv open_s "$ready") s to open)$([[ $path == bridge* ]] && echo "; mosquitto RSS $b0 -> $b1 KiB")"
}

# ---- the run ------------------------------------------------------------

log_run_start coap
log "ports: coap-server $s_port, mgate CoAP $m_port, admin $admin_port; mosquitto $b_port, bridge CoAP $g_port, admin $admin2_port"
start_server
start_mgate
start_broker
start_bridge

all_paths=(direct mgate bridge0 bridge1)
t_start=$(date +%s)
for ((r = 1; r <= rounds; r++)); do
    log "round $r of $rounds"
    k=$(((r - 1) % ${#all_paths[@]}))
    paths=("${all_paths[@]:k}" "${all_paths[@]:0:k}")
    for l in $loads; do
        for p in "${paths[@]}"; do measure_load "$p" "$l" "$r"; done
    done
    if ((idle > 0)); then
        for p in "${paths[@]}"; do [[ $p == bridge1 ]] || measure_idle "$p" "$r"; done
    fi
done
run_s=$(($(date +%s) - t_start))

# ---- where mgate's time goes (perf) --------------------------------------

if ((do_perf)); then
    log "perf: mgate, CON load"
    perf record -g -p "$mgate_pid" -o "$run/perf.data" -- sleep "$duration" 2>>"$run/perf.log" &
    perf_pid=$!
    bounded "$(sum "$duration" "$warmup" 20)" "$cl" load -p "$m_port" -n "$clients" -W "$window" -s "$size" -P bench \
        -d "$duration" -w 0.2 >/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf report -i "$run/perf.data" --no-children --sort sym --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -25 >"$run/perf-self.txt" || true
    perf report -i "$run/perf.data" --stdio 2>/dev/null | head -60 >"$run/perf-report.txt" || true
fi

# ---- the report ---------------------------------------------------------

report=$run/report.md
{
    echo "# CoAP relay and bridge: mgate against libcoap's server directly, $(date -u +'%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $machine; shared with other engineers' builds and tests while it ran."
    echo "Nothing pinned: load generator, server and mgate share the CPUs."
    echo "The machine was ${busy_before}% busy (all CPUs) in the second before the run; the run took ${run_s} s."
    echo "mgate $mgate_rev ($(basename "$(dirname "$mgate_bin")")), one CoAP listener (relay, TARGET_PROTOCOL=coap), handler \`noop\`, MGATE_LOG_LEVEL=warn, 1 worker."
    echo "Bridge: a second mgate, the same but TARGET_PROTOCOL=mqtt to mosquitto $(mosquitto -h 2>/dev/null | awk 'NR==1 {print $3}') (no subscriber); POST ps/bench/coap?qos=0 (bridge QoS 0) or ?qos=1 (bridge QoS 1)&clientid=bench-PID-K: one MQTT session per client."
    echo "Server: coap-server-openssl $(coap-server-openssl -? 2>&1 | awk '/^coap-server-openssl v[0-9]/ {print $2; exit}') (-d 10: POST /bench creates it, then changes it)."
    echo "Load: bench/coapload load -n $clients -W $window -s $size -P bench (bridge: -P ps/bench/coap -Q ...): $clients clients (source ports), $window POSTs in flight each,"
    echo "${warmup}s warm-up then ${duration}s measured; con: confirmable (piggybacked 2.04 ACK), non: non-confirmable (NON 2.04)."
    echo "CPU: utime+stime (/proc/PID/stat) of mgate and of the server (the bridge's: mosquitto) over each whole load run, per request answered, in CPU-µs."
    echo "Idle: RSS and descriptors before and after $idle clients ($idle_parallel at a time) each had one POST answered, then stayed quiet; a fresh process each time (the bridge: QoS 0, with a fresh mosquitto)."
    echo "Rounds: $rounds, interleaved. Each cell: median (min–max) over rounds; a ratio: the median of the ratios within each round."
    echo
    awk -F'\t' -v loads="$loads" -f "$here/stats.awk" -f "$here/coap_report.awk" "$results"
    if [[ -s $run/perf-self.txt ]]; then
        echo
        echo "mgate's top functions, CON load (perf, self time, whole process):"
        echo
        echo '```'
        cat "$run/perf-self.txt"
        echo '```'
    fi
    echo
    for name in mgate bridge; do
        warns=$(grep -c . "$run/$name.log" 2>/dev/null || true)
        echo "$name log (level warn): ${warns:-0} lines$( ((warns)) && echo "; first: $(head -1 "$run/$name.log")")."
    done
} >"$report"

cat "$report"
cp "$report" "$outdir/coap-latest.md"
log "report: $report (and $outdir/coap-latest.md)"
