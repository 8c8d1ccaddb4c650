#!/bin/sh
# Shows that each invariant of fuzz_session fires: builds the harness with
# MGATE_FUZZ_SESSION_SELFTEST=1..6 (each breaks the session on purpose, see
# fuzz_session.c) and replays the seed corpus through each; every one must
# abort with its own invariant's message (or LeakSanitizer's), and the
# unbroken fuzz_session must not.
#   tests/fuzz/session_selftest.sh [BUILD_DIR]   (a -DMGATE_FUZZ=ON build; default build-fuzz)
set -u
src=$(cd "$(dirname "$0")" && pwd)
build=${1:-build-fuzz}
corpus=$src/corpus_session
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail=0
expect() { # n, the message it must print
    if ! cmake --build "$build" --target "fuzz_session_selftest_$1" >"$out/build$1" 2>&1; then
        echo "selftest $1: build failed"; cat "$out/build$1"; fail=1; return
    fi
    "$build/tests/fuzz/fuzz_session_selftest_$1" -runs=0 -artifact_prefix="$out/" "$corpus" >"$out/log$1" 2>&1
    if grep -q "$2" "$out/log$1"; then
        echo "selftest $1: caught ($2)"
    else
        echo "selftest $1: NOT caught (expected: $2)"; tail -5 "$out/log$1"; fail=1
    fi
}
expect 1 "INVARIANT I1 (nothing before auth_connect allows)"
expect 2 "INVARIANT I2 (valid packets)"
expect 3 "INVARIANT I3 (a denied PUBLISH never reaches the broker)"
expect 4 "INVARIANT I3 (a denied delivery never reaches the client)"
expect 5 "INVARIANT I4 (memory per pair)"
expect 6 "LeakSanitizer: detected memory leaks"
if ! "$build/tests/fuzz/fuzz_session" -runs=0 "$corpus" >"$out/clean" 2>&1; then
    echo "fuzz_session itself fails on the seeds:"; tail -5 "$out/clean"; fail=1
fi
exit $fail
