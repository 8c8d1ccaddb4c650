#!/usr/bin/env bash
# The long forms of what tests/run.sh runs briefly (hours; not CI): a fuzzing
# campaign of every libFuzzer target, then every fault test in its long form
# (the broker restarted 60 times under QoS 1/2, the lossy network and the
# stalled broker for longer, allocation failures over a wide range, the soak
# for an hour, the container image built without its layer cache).  Figures
# go to the logs named at the end; docs/TESTING.md says what each measures.
#
#   tests/long.sh                       fuzzing 120 minutes, then the faults
#   tests/long.sh --fuzz-minutes 0      the faults only
#   tests/long.sh --faults none         the fuzzing only
set -euo pipefail
cd "$(dirname "$0")/.."

fuzz_minutes=120 faults=all
while [ $# -gt 0 ]; do
  case "$1" in
    --fuzz-minutes) fuzz_minutes=${2:?}; shift 2 ;;
    --faults) faults=${2:?}; shift 2 ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
jobs=$(nproc)
tests/deps.sh
step() { printf '\n==== %s\n' "$*"; }

if [ "$fuzz_minutes" -gt 0 ]; then
  step "fuzzing campaign, ${fuzz_minutes} minutes in all (tests/fuzz/run.sh)"
  tests/fuzz/run.sh --minutes "$fuzz_minutes" --build build-fuzz
  step "the session fuzzer's invariants fire on sessions broken on purpose (tests/fuzz/session_selftest.sh)"
  sh tests/fuzz/session_selftest.sh build-fuzz
fi
[ "$faults" = none ] && exit 0

# Builds of their own (-DMGATE_LONG=ON: the long forms, hours allowed), so
# that build/ and build-asan/ stay as tests/run.sh leaves them.
step "fault tests, long forms (plain build in build-long)"
cmake -S . -B build-long -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMGATE_LONG=ON >/dev/null
cmake --build build-long -j"$jobs"
rc=0
MGATE_CONTAINER_SETUP=1 ctest --test-dir build-long -L faults --output-on-failure --output-log build-long/faults.log || rc=1
step "fault tests, long forms (ASan + UBSan build in build-long-asan: allocation failures)"
cmake -S . -B build-long-asan -DCMAKE_BUILD_TYPE=Debug -DMGATE_SANITIZE=ON -DMGATE_LONG=ON >/dev/null
cmake --build build-long-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-long-asan -L faults --output-on-failure --output-log build-long-asan/faults.log || rc=1
echo "logs: build-fuzz/fuzz-results.tsv build-long/faults.log build-long-asan/faults.log"
exit $rc
