#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.cpp) with clang in build/fuzz (or FUZZ_BUILD_DIR) and runs each for
# the given number of seconds (default 30) on a copy of its seed corpus (tests/fuzz/corpus/<name>/).
# Exits non-zero on any finding (crash, sanitizer report, leak, timeout); the reproducer is left
# in build/fuzz/artifacts/<name>/. Environment: CXX (default clang++), JOBS (build parallelism),
# FUZZ_ARGS (extra libFuzzer flags, e.g. "-jobs=4 -workers=4"), FUZZ_OPT (optimisation flags, default "-O2 -g").
#   .ci/fuzz.sh            # CI smoke run: 30 s each
#   .ci/fuzz.sh 3600       # an hour each
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
jobs=${JOBS:-2}
dir=${FUZZ_BUILD_DIR:-build/fuzz}
fuzzers=(csv model_file npy npz onnx)

cmake -S . -B "$dir" -DCMAKE_CXX_COMPILER="${CXX:-clang++}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="${FUZZ_OPT:--O2 -g}" \
  -DTAPIR_BUILD_FUZZERS=ON -DTAPIR_BUILD_EXAMPLES=OFF -DTAPIR_BUILD_BENCH=OFF >/dev/null
targets=()
for f in "${fuzzers[@]}"; do targets+=(--target "fuzz_$f"); done
cmake --build "$dir" -j "$jobs" "${targets[@]}"

status=0
for f in "${fuzzers[@]}"; do
  exe="$dir/tests/fuzz/fuzz_$f" corpus="$dir/corpus/$f" art="$dir/artifacts/$f"
  [ -x "$exe" ] || { echo "fuzz_$f was not built ($exe missing)"; exit 2; }
  rm -rf "$corpus" && mkdir -p "$corpus" "$art"
  cp tests/fuzz/corpus/"$f"/* "$corpus"/
  echo "== fuzz_$f for ${secs}s"
  # shellcheck disable=SC2086
  if ! "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$art/" ${FUZZ_ARGS:-} "$corpus" >"$dir/fuzz_$f.log" 2>&1; then
    tail -n 60 "$dir/fuzz_$f.log"
    echo "fuzz_$f: FINDING (reproducer in $art/, log in $dir/fuzz_$f.log)"
    status=1
    continue
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$dir/fuzz_$f.log" || true
  echo "fuzz_$f: no finding, corpus $(ls "$corpus" | wc -l) files"
done
exit $status
