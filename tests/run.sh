#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what is missing, build with
# -Werror, run every ctest test, then again under AddressSanitizer +
# UndefinedBehaviorSanitizer, then every libFuzzer target (tests/fuzz/run.sh:
# each parser of hostile input and the stateful session fuzzer) for a short
# while, then smoke runs of the benchmark harnesses (bench/run.sh,
# bench/http_ws.sh, bench/mqtt_ws.sh, bench/coap.sh and bench/tunnel.sh
# --smoke: check that they still run and that every path forwards; their
# figures are not judged).  tests/long.sh runs the long forms.
#
#   tests/run.sh            everything
#   tests/run.sh --quick    one plain build and its tests (no ASan, no fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1
jobs=$(nproc)
fuzz_seconds=${MGATE_FUZZ_SECONDS:-60}

tests/deps.sh

step() { printf '\n==== %s\n' "$*"; }

step "build (RelWithDebInfo, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"

# Two tests at a time: most wait on their peers (a tenth of a core or less);
# those that measure time or memory run alone (RUN_SERIAL in tests.cmake and
# faults/faults.cmake).  The fault tests (faults.*: broker restarts, a lossy
# network in namespaces, a vanished and a stopped broker, the soak, the
# container image) run in their quick forms here; tests/long.sh has the long.
step "tests (with the fault tests' quick forms)"
# faults.container builds and runs the image where podman and its base image
# are already here; setting them up (about five minutes) is tests/long.sh's.
MGATE_CONTAINER_SETUP=0 ctest --test-dir build --output-on-failure --timeout 300 -j"$jobs"

[ $quick -eq 1 ] && exit 0

step "build with AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMGATE_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"

step "tests under ASan + UBSan (with allocation failures injected: faults.failmalloc)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure --timeout 600 -j"$jobs"

step "fuzz every parser of hostile input and the session for ${fuzz_seconds}s in all (libFuzzer, tests/fuzz/run.sh)"
tests/fuzz/run.sh --seconds "$fuzz_seconds"

# Every path of a bench run measured each metric (a value above 0 in results.tsv).
measured() { # results.tsv "metric..." "path..."
  awk -F'\t' -v metrics="$2" -v paths="$3" '$4 > 0 {m[$1, $2]++}
    END {ok = 1; np = split(paths, p, " "); nk = split(metrics, k, " ")
      for (i = 1; i <= np; i++) for (j = 1; j <= nk; j++)
        if (!((k[j], p[i]) in m)) { print "bench smoke: no " k[j] " for " p[i] " in " FILENAME; ok = 0 }
      exit !ok}' "$1"
}

step "benchmark harness smoke run (Release build in build-bench)"
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DMGATE_TESTS=OFF >/dev/null
cmake --build build-bench -j"$jobs" --target mgate
rm -rf build-bench/smoke
bench/run.sh --smoke --workers --callgrind --mgate build-bench/mgate --out build-bench/smoke
# bench/run.sh logs a failed measurement and goes on; here every one must have succeeded.
bench_run=$(echo build-bench/smoke/run-*)
if grep -E 'failed|lost or errors|only [0-9]+ of|did not start' "$bench_run/run.log"; then
  echo "bench smoke: a measurement failed (see $bench_run)"; exit 1
fi
measured "$bench_run/results.tsv" "thr_q0_64 thr_q0_1024 thr_q1_64 thr_q1_1024 lat_p50 connrate idle_open" \
  "direct haproxy mgate"
measured "$bench_run/results.tsv" thr_q0_64 mgate2
[ -s "$bench_run/callgrind.tsv" ] || { echo "bench smoke: no callgrind result"; exit 1; }
echo "bench smoke: every path measured ($bench_run/report.md)"

step "WebSocket relay benchmark smoke run (bench/http_ws.sh)"
rm -rf build-bench/ws-smoke
bench/http_ws.sh --smoke --mgate build-bench/mgate --out build-bench/ws-smoke
ws_run=$(echo build-bench/ws-smoke/ws-run-*)
if grep -E 'failed|did not start|(lost|bad|errors) [1-9]' "$ws_run/run.log"; then
  echo "ws bench smoke: a measurement failed or lost messages (see $ws_run)"; exit 1
fi
measured "$ws_run/results.tsv" "thr_1_64 thr_10_1024 lat_p50" "direct haproxy mgate"
measured "$ws_run/results.tsv" idle_kib mgate
echo "ws bench smoke: every path measured ($ws_run/report.md)"

step "MQTT-over-WebSocket benchmark smoke run (bench/mqtt_ws.sh)"
rm -rf build-bench/mqtt-ws-smoke
bench/mqtt_ws.sh --smoke --mgate build-bench/mgate --out build-bench/mqtt-ws-smoke
mws_run=$(echo build-bench/mqtt-ws-smoke/mqtt-ws-run-*)
if grep -E 'failed|did not start|BUG|not every|(lost|bad|errors) [1-9]' "$mws_run/run.log"; then
  echo "mqtt-ws bench smoke: a measurement failed or lost messages (see $mws_run)"; exit 1
fi
measured "$mws_run/results.tsv" "thr_ws_q0_64 thr_ws_q1_1024 thr_wss_q0_64 thr_wss_q1_1024" "direct haproxy mgate"
measured "$mws_run/results.tsv" "cpu_ws_q0_64 cpu_wss_q1_1024 idle_ws_kib idle_wss_kib fds_wss" "haproxy mgate"
measured "$mws_run/results.tsv" "idle_mqtt_kib idle_mqtts_kib" mgate
echo "mqtt-ws bench smoke: every path measured ($mws_run/report.md)"

step "CoAP relay and bridge benchmark smoke run (bench/coap.sh)"
rm -rf build-bench/coap-smoke
bench/coap.sh --smoke --mgate build-bench/mgate --out build-bench/coap-smoke
coap_run=$(echo build-bench/coap-smoke/coap-run-*)
if grep -E 'failed|did not start|BUG|not every|(timeouts|lost|not 2.xx|errors) [1-9]' "$coap_run/run.log"; then
  echo "coap bench smoke: a measurement failed or lost requests (see $coap_run)"; exit 1
fi
measured "$coap_run/results.tsv" "thr_con thr_non p50_con scpu_con" "direct mgate bridge0 bridge1"
measured "$coap_run/results.tsv" "cpu_con cpu_non" "mgate bridge0 bridge1"
measured "$coap_run/results.tsv" "idle_kib" "mgate bridge0"
measured "$coap_run/results.tsv" "idle_kib_broker" bridge0
echo "coap bench smoke: every path measured ($coap_run/report.md)"

step "mgate tunnel benchmark smoke run (bench/tunnel.sh)"
rm -rf build-bench/tunnel-smoke
bench/tunnel.sh --smoke --mgate build-bench/mgate --out build-bench/tunnel-smoke
tunnel_run=$(echo build-bench/tunnel-smoke/tunnel-run-*)
if grep -E 'failed|did not|died' "$tunnel_run/run.log"; then
  echo "tunnel bench smoke: a measurement failed (see $tunnel_run)"; exit 1
fi
measured "$tunnel_run/results.tsv" "thr_1 thr_10" "direct tunnel"
echo "tunnel bench smoke: every path measured ($tunnel_run/report.md)"
