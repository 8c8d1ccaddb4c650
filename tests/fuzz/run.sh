#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz_*) of the fuzz build, one at a time, and
# reports each one's figures as a table (TSV).
#
#   tests/fuzz/run.sh --seconds 60          CI: a minute in all, shared out
#   tests/fuzz/run.sh --minutes 120         a long campaign: two hours in all
#   tests/fuzz/run.sh --runs 10000000       a fixed number of executions per target
#   --only decode,proxy    these targets only (names without fuzz_)
#   --build DIR            the fuzz build (default build-fuzz; relative to the
#                          source tree; configured with clang when missing)
#   --out FILE             the TSV (default DIR/fuzz-results.tsv)
#
# Targets are found in DIR/tests/fuzz, so one added later (fuzz_session from
# session.cmake) runs without a change here.  The time is shared by weight
# (SHARE below; a target not listed gets DEFAULT_SHARE).  Each target runs with
# its dictionary when there is one, on a scratch corpus outside the source
# tree (DIR/fuzz-corpus/NAME) seeded from the committed tests/fuzz/corpus_NAME
# (libFuzzer adds new inputs to the first directory only).  A crashing input
# is kept in DIR/fuzz-artifacts/; libFuzzer's output is in DIR/fuzz-logs/.
# Exits 1 when any target crashed (after running the others), 2 on bad usage.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=tests/fuzz

# Weights of the total time: peer input first (the MQTT decoder most), an
# operator's files least.
declare -A SHARE=([decode]=6 [session]=6 [coap]=3 [ws_frame]=3 [ws_upgrade]=3 [http_parse]=3 [jwt]=3 [tunnel]=3
                  [proxy]=3 [webhook]=3 [rewrite_rules]=1 [jwks]=1 [config]=1 [acl]=1)
DEFAULT_SHARE=3
# Dictionaries not named after their target.
declare -A DICT=([decode]=mqtt [jwks]=jwt)
# libFuzzer options of a target's own: the session fuzzer's programs are
# worth little beyond 2 KiB and slow down with size.
declare -A ARGS=([session]=-max_len=2048)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

seconds=0 runs=0 only="" build=build-fuzz out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?}; shift 2 ;;
    --minutes) seconds=$(( ${2:?} * 60 )); shift 2 ;;
    --runs) runs=${2:?}; shift 2 ;;
    --only) only=${2:?}; shift 2 ;;
    --build) build=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown option $1" >&2; usage ;;
  esac
done
[[ "$seconds$runs" =~ ^[0-9]+$ ]] || usage
[ "$seconds" -eq 0 ] && [ "$runs" -eq 0 ] && seconds=60
build=$(realpath -m "$build") # a relative DIR is taken from the top of the source tree
out=${out:-$build/fuzz-results.tsv}

if [ ! -f "$build/CMakeCache.txt" ]; then
  echo "== configuring $build with clang"
  CC=clang cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DMGATE_FUZZ=ON -DMGATE_TESTS=OFF >/dev/null
fi
# Makefile generators list "... fuzz_x", Ninja "fuzz_x: phony"
mapfile -t all < <(cmake --build "$build" --target help |
                   sed -n 's/^\.\.\. \(fuzz_[a-z0-9_]*\)$/\1/p; s/^\(fuzz_[a-z0-9_]*\): .*/\1/p' | sort -u)
[ ${#all[@]} -gt 0 ] || { echo "run.sh: no fuzz_* target in $build (configured with -DMGATE_FUZZ=ON?)" >&2; exit 2; }
targets=()
for t in "${all[@]}"; do
  name=${t#fuzz_}
  if [ -n "$only" ]; then
    [[ ",$only," == *",$name,"* ]] && targets+=("$name")
  # X_fast (X without ASan/UBSan, for long campaigns) and the session fuzzer's
  # broken-on-purpose selftest builds run only when named; fuzz_session_core*
  # are the libraries under fuzz_session, not fuzzers
  elif [[ "$name" != *_fast && "$name" != *selftest* && "$name" != session_core* ]]; then
    targets+=("$name")
  fi
done
if [ -n "$only" ]; then
  for n in ${only//,/ }; do
    [[ " ${targets[*]} " == *" $n "* ]] || { echo "run.sh: no target fuzz_$n in $build" >&2; exit 2; }
  done
fi
echo "== building ${targets[*]/#/fuzz_}"
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null

total_share=0
for n in "${targets[@]}"; do total_share=$(( total_share + ${SHARE[${n%_fast}]:-$DEFAULT_SHARE} )); done

mkdir -p "$build/fuzz-corpus" "$build/fuzz-artifacts" "$build/fuzz-logs"
printf 'target\texecutions\texec_per_s\tcov\tft\tcorpus\tcrashes\tseconds\n' >"$out"
failed=()
for n in "${targets[@]}"; do
  base=${n%_fast} # X_fast has X's dictionary, seeds and options
  args=(-print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/${n}-" ${ARGS[$base]:-})
  limit=""
  if [ "$seconds" -gt 0 ]; then
    t=$(( seconds * ${SHARE[$base]:-$DEFAULT_SHARE} / total_share ))
    [ "$t" -ge 1 ] || t=1
    args+=(-max_total_time="$t")
    limit="${t}s"
  fi
  [ "$runs" -gt 0 ] && { args+=(-runs="$runs"); limit="${limit:+$limit or }$runs runs"; }
  dict="$src/${DICT[$base]:-$base}.dict"
  [ -f "$dict" ] && args+=(-dict="$dict")
  corpus=("$build/fuzz-corpus/$n")
  mkdir -p "${corpus[0]}"
  [ -d "$src/corpus_$base" ] && corpus+=("$src/corpus_$base")
  log="$build/fuzz-logs/$n.log"
  before=$(find "$build/fuzz-artifacts" -name "${n}-*" | wc -l)
  echo "== fuzz_$n: $limit$([ -f "$dict" ] && echo ", dictionary $dict")"
  start=$(date +%s)
  rc=0
  nice -n 10 "$build/tests/fuzz/fuzz_$n" "${args[@]}" "${corpus[@]}" >"$log" 2>&1 || rc=$?
  elapsed=$(( $(date +%s) - start ))
  crashes=$(( $(find "$build/fuzz-artifacts" -name "${n}-*" | wc -l) - before ))
  [ $rc -ne 0 ] && [ $crashes -eq 0 ] && crashes=1 # a failure that left no input (e.g. at start-up)
  # Figures: libFuzzer's final stats, cov/ft/corp from its last status line.
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  status=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$status")
  if [ -z "$execs" ]; then # no final stats (a crash): the last status line's count
    execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$status")
  fi
  row=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "fuzz_$n" "${execs:-0}" "${rate:-0}" "${cov:-?}" "${ft:-?}" \
        "${corp:-?}" "$crashes" "$elapsed")
  printf '%s\n' "$row" >>"$out"
  printf '   %s\n' "$row"
  if [ $crashes -gt 0 ]; then
    failed+=("fuzz_$n")
    grep -E 'ERROR|SUMMARY|^fuzz_|Test unit written' "$log" | head -n 8 | sed 's/^/   /'
  fi
done

echo
column -t -s $'\t' "$out" 2>/dev/null || cat "$out"
echo "results: $out; logs: $build/fuzz-logs; corpora: $build/fuzz-corpus"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}; inputs kept in $build/fuzz-artifacts:" >&2
  ls "$build/fuzz-artifacts" >&2
  exit 1
fi
echo "fuzz: no crash"
