#!/usr/bin/env bash
# bench/tunnel.sh: throughput of `mgate tunnel` (issue 19, "Speed"): one TCP stream and 10
# parallel streams carried through mosquitto on loopback in reliable mode, against a direct TCP
# connection to the same sink, and mgate tunnel's CPU per MB on both sides.
#
#   bench/tunnel.sh            the full run (3 rounds, 512 MiB per run), under a minute (MB here = MiB)
#   bench/tunnel.sh --smoke    everything tiny (< 30 s): checks the harness still runs
#   bench/tunnel.sh --help     every option
#
# The ends are bench/tunnel_load.py: a sink that reads each connection to EOF and answers with
# the byte count, and a sender that opens N connections at once, sends SIZE MiB split between
# them, half-closes and waits for every count; MB/s = MiB sent / seconds from the first connect
# to the last count (end to end: the tunnel's FIN is carried through).  The tunnel is two
# processes (`mgate tunnel -c remote.json`, allow = the sink's port; `mgate tunnel -c local.json
# -l L -r SINK`) through one mosquitto.  CPU is each side's utime+stime (/proc/PID/stat) over a
# run, per MiB carried.  Paths are measured interleaved (direct, tunnel, direct, ...); each figure
# is the median over rounds with min-max.  Everything listens on 127.0.0.1 on free ports; every
# process this script starts is stopped by its PID.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

rounds=3 size=512 streams_list="1 10" timeout_s=300 window="" chunk=""
mgate_bin=${MGATE_BIN:-$top/build/mgate}
outdir=$here/out

usage() {
    cat <<EOF
usage: bench/tunnel.sh [options]
  --smoke              tiny and fast (1 round, 4 MiB per run); for CI
  --rounds N           rounds of interleaved measurements ($rounds)
  --size MIB           MiB sent per run, split between the streams ($size)
  --streams LIST       parallel stream counts to measure ("$streams_list")
  --window BYTES       the tunnel's "window" (its default when not given)
  --chunk BYTES        the tunnel's "chunk" (its default when not given)
  --mgate PATH         the mgate binary ($mgate_bin, built (RelWithDebInfo) if missing)
  --out DIR            where results go ($outdir)
EOF
}

bench_options tunnel.sh "rounds=1 size=4 timeout_s=60" \
    "--rounds=rounds --size=size --streams=streams_list --window=window --chunk=chunk" "$@"

need_tools bench/tunnel.sh "mosquitto python3 iproute2 gawk coreutils" mosquitto python3 ss awk timeout
build_mgate_if_missing bench/tunnel.sh
load=$here/tunnel_load.py

stamp=$(date +%Y%m%d-%H%M%S)
run=$outdir/tunnel-run-$stamp
mkdir -p "$run"
results=$run/results.tsv # metric <tab> path <tab> round <tab> value
: >"$results"

broker_pid="" sink_pid="" remote_pid="" local_pid=""
cleanup() {
    stop_pid "$local_pid"
    stop_pid "$remote_pid"
    stop_pid "$sink_pid"
    stop_pid "$broker_pid"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r b_port s_port l_port <<<"$(python3 "$load" freeport 3 | tr '\n' ' ')"

cat >"$run/mosquitto.conf" <<EOF
listener $b_port 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
EOF

log_run_start tunnel.sh
mosquitto -c "$run/mosquitto.conf" 2>>"$run/mosquitto.log" &
broker_pid=$!
wait_listen "$b_port" "$broker_pid" || { log "mosquitto did not start (see $run/mosquitto.log)"; exit 1; }

python3 "$load" sink "$s_port" 2>>"$run/sink.log" &
sink_pid=$!
wait_listen "$s_port" "$sink_pid" || { log "the sink did not start (see $run/sink.log)"; exit 1; }

control="bench/tunnel-$stamp-$$/control"
extra=""
[[ -n $window ]] && extra+=", \"window\": $window"
[[ -n $chunk ]] && extra+=", \"chunk\": $chunk"
cat >"$run/remote.json" <<EOF
{"host": "127.0.0.1", "port": $b_port, "control": "$control", "clientId": "bench-remote-$$", "allow": [$s_port]$extra}
EOF
cat >"$run/local.json" <<EOF
{"host": "127.0.0.1", "port": $b_port, "control": "$control", "clientId": "bench-local-$$"$extra}
EOF

# shellcheck disable=SC2046
env -C "$run" $(unset_mgate_vars) "$mgate_bin" tunnel -c "$run/remote.json" 2>>"$run/remote.log" &
remote_pid=$!
# shellcheck disable=SC2046
env -C "$run" $(unset_mgate_vars) "$mgate_bin" tunnel -c "$run/local.json" -l "$l_port" -r "$s_port" \
    2>>"$run/local.log" &
local_pid=$!
wait_listen "$l_port" "$local_pid" || { log "the local side did not start (see $run/local.log)"; exit 1; }
kill -0 "$remote_pid" 2>/dev/null || { log "the remote side did not start (see $run/remote.log)"; exit 1; }
for p in "$remote_pid" "$local_pid"; do
    [[ $(cat "/proc/$p/comm") == mgate ]] || log "warning: pid $p is not mgate: CPU readings are wrong"
done
python3 "$load" ready "$l_port" 20 2>>"$run/load.log" ||
    { log "the tunnel did not carry 1 KiB within 20 s (see $run/local.log, $run/remote.log)"; exit 1; }
log "mosquitto :$b_port, sink :$s_port, tunnel local :$l_port (pid $local_pid) -> remote (pid $remote_pid)"

# One measured run: path direct|tunnel, N streams.
measure() { # path streams round
    local path=$1 n=$2 r=$3 port line rc=0 l0 r0 l1 r1 b0 b1 mbs
    port=$s_port
    [[ $path == tunnel ]] && port=$l_port
    l0=$(cpu_ticks "$local_pid") r0=$(cpu_ticks "$remote_pid") b0=$(cpu_ticks "$broker_pid")
    line=$(timeout -k 5 "$((timeout_s + 10))" python3 "$load" send "$port" "$size" "$n" "$timeout_s" 2>>"$run/load.log") || rc=$?
    l1=$(cpu_ticks "$local_pid") r1=$(cpu_ticks "$remote_pid") b1=$(cpu_ticks "$broker_pid")
    if ((rc != 0)); then
        log "$path $n streams failed (exit $rc): $line"
        return 0
    fi
    mbs=$(kv mbs "$line")
    record "thr_$n" "$path" "$r" "$mbs"
    log "round $r: $path, $n stream(s): $line"
    if [[ $path == tunnel ]]; then
        local mib
        mib=$(awk -v b="$(kv bytes "$line")" 'BEGIN {print b / 1048576}')
        record "cpu_local_$n" tunnel "$r" "$(awk -v t=$((l1 - l0)) -v hz="$hz" -v m="$mib" 'BEGIN {printf "%.2f", 1000 * t / hz / m}')"
        record "cpu_remote_$n" tunnel "$r" "$(awk -v t=$((r1 - r0)) -v hz="$hz" -v m="$mib" 'BEGIN {printf "%.2f", 1000 * t / hz / m}')"
        record "cpu_both_$n" tunnel "$r" "$(awk -v t=$((l1 - l0 + r1 - r0)) -v hz="$hz" -v m="$mib" 'BEGIN {printf "%.2f", 1000 * t / hz / m}')"
        record "cpu_broker_$n" tunnel "$r" "$(awk -v t=$((b1 - b0)) -v hz="$hz" -v m="$mib" 'BEGIN {printf "%.2f", 1000 * t / hz / m}')"
    fi
}

for ((r = 1; r <= rounds; r++)); do
    for n in $streams_list; do
        measure direct "$n" "$r"
        measure tunnel "$n" "$r"
        kill -0 "$local_pid" 2>/dev/null && kill -0 "$remote_pid" 2>/dev/null ||
            { log "a tunnel process died (see $run/local.log, $run/remote.log)"; exit 1; }
    done
done

# the tunnel's own counters at exit
stop_pid "$local_pid"
local_pid=""
stop_pid "$remote_pid"
remote_pid=""
for side in local remote; do
    grep '"tunnel stats"' "$run/$side.log" | tail -n 1 | sed "s/^/$side stats: /" >>"$run/run.log" || true
done

# median (min-max) of a metric for a path
fig() { # metric path
    awk -F'\t' -v m="$1" -v p="$2" '$1 == m && $2 == p {print $4}' "$results" | sort -g |
        awk '{v[++n] = $1}
            END {if (!n) {print "-"; exit}
                 med = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
                 if (n == 1) printf "%.1f", med; else printf "%.1f (%.1f-%.1f)", med, v[1], v[n]}'
}

{
    echo "# mgate tunnel throughput ($(date -u +%F), $machine)"
    echo
    echo "mgate $mgate_rev; mosquitto on loopback; $size MiB per run split between the streams; $rounds round(s);"
    echo "median (min-max). CPU: utime+stime of each mgate tunnel process (and of mosquitto) per MiB carried (ms/MiB)."
    ((busy_before > 10)) && echo "The machine was ${busy_before}% busy before the run: the figures are noisy."
    echo
    echo "| streams | direct TCP MiB/s | tunnel MiB/s | tunnel / direct | CPU local ms/MiB | CPU remote ms/MiB | CPU both ms/MiB | mosquitto ms/MiB |"
    echo "|---|---|---|---|---|---|---|---|"
    for n in $streams_list; do
        d=$(fig "thr_$n" direct) t=$(fig "thr_$n" tunnel)
        ratio=$(awk -v a="${d%% *}" -v b="${t%% *}" 'BEGIN {if (a + 0 > 0 && b != "-") printf "%.3f", b / a; else print "-"}')
        echo "| $n | $d | $t | $ratio | $(fig "cpu_local_$n" tunnel) | $(fig "cpu_remote_$n" tunnel) | $(fig "cpu_both_$n" tunnel) | $(fig "cpu_broker_$n" tunnel) |"
    done
    echo
    grep ' stats: ' "$run/run.log" | sed 's/^/    /' || true
} >"$run/report.md"
cat "$run/report.md"
cp "$run/report.md" "$outdir/tunnel-latest.md"
log "report: $run/report.md (and $outdir/tunnel-latest.md)"
