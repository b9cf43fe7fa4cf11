#!/bin/bash
# Builds tapir's benchmarks (Release, one job unless -j N), runs them all with their JSON output
# into RESULTS (default build/bench-results under the source tree), and writes the markdown of the
# README's performance section to RESULTS/performance.md (and prints it).
# PyTorch and OpenBLAS peers run when installed (see each benchmark's header comment).
# Usage: bench/run_all.sh [--build DIR] [--results DIR] [-j N] [--quick] [--no-build]
# On a shared machine, run it under nice: nice -n 10 bench/run_all.sh
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build="$src/build/bench"
results="$src/build/bench-results"
jobs=1
quick=
do_build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=$2; shift 2 ;;
        --results) results=$2; shift 2 ;;
        -j) jobs=$2; shift 2 ;;
        --quick) quick=--quick; shift ;;
        --no-build) do_build=; shift ;;
        *) echo "usage: bench/run_all.sh [--build DIR] [--results DIR] [-j N] [--quick] [--no-build]" >&2; exit 2 ;;
    esac
done
benches="bench_tape bench_train bench_wgan bench_inference bench_gemm bench_sets bench_recurrent bench_attention bench_conv bench_parallel"
if [ -n "$do_build" ]; then
    gen=()
    if command -v ninja > /dev/null; then gen=(-G Ninja); fi
    cmake -S "$src" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DTAPIR_BUILD_BENCH=ON -DTAPIR_BUILD_TESTS=OFF \
        -DTAPIR_BUILD_EXAMPLES=OFF > /dev/null
    # shellcheck disable=SC2086
    cmake --build "$build" -j "$jobs" --target $benches
fi
mkdir -p "$results"
bin="$build/bench"
run() {  # name, then the command; its output goes to the terminal and to RESULTS/name.txt
    local name=$1
    shift
    echo "== $name"
    "$@" | tee "$results/$name.txt"
}
# The machine first: every figure below belongs to it.
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores" | tee "$results/machine.txt"
"$bin/bench_gemm" --peak | tee -a "$results/machine.txt"
run tape "$bin/bench_tape" --json "$results/tape.json"
run train "$bin/bench_train" $quick --json "$results/train.json"
run train_same_batch "$bin/bench_train" $quick --same-batch --json "$results/train_same.json"
run wgan "$bin/bench_wgan" $quick --json "$results/wgan.json"
run conv "$bin/bench_conv" $quick --json "$results/conv.json"
run inference "$bin/bench_inference" $quick --json "$results/inference.json"
run sets "$bin/bench_sets" $quick --json "$results/sets.json"
run recurrent "$bin/bench_recurrent" $quick --json "$results/recurrent.json"
run attention "$bin/bench_attention" $quick --json "$results/attention.json"
run gemm env OPENBLAS_NUM_THREADS=1 "$bin/bench_gemm"
run gemm_skylakex env OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX "$bin/bench_gemm"
run gemm_threads2 "$bin/bench_gemm" --threads 2
run parallel "$bin/bench_parallel" $quick --json "$results/parallel.json"
run compile "$src/bench/bench_compile.sh" --json "$results/compile.json"
if command -v python3 > /dev/null; then
    python3 "$src/bench/report.py" "$results" > "$results/performance.md"
    echo
    echo "== markdown for the README's performance section ($results/performance.md)"
    cat "$results/performance.md"
else
    echo "python3 not found: no markdown written (the JSON files are in $results)"
fi
