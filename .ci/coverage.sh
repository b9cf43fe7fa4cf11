#!/usr/bin/env bash
# Line coverage of include/ by the test suite (GCC --coverage at -O0, quick mode), with gcovr
# (Debian package gcovr). Prints the summary; the per-file table goes to build/coverage/coverage.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
dpkg -s gcovr >/dev/null 2>&1 || { sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo; $sudo apt-get install -y -q gcovr; }
dir=build/coverage
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS="-O0 --coverage" \
      -DCMAKE_EXE_LINKER_FLAGS="--coverage" -DTAPIR_BUILD_EXAMPLES=OFF -DTAPIR_BUILD_BENCH=OFF >/dev/null
cmake --build "$dir" -j "${JOBS:-$(nproc)}"
find "$dir" -name '*.gcda' -delete
TAPIR_TEST_QUICK=1 ctest --test-dir "$dir" -j "${JOBS:-$(nproc)}" --output-on-failure
# gcov 12 prints negative branch counts for some inlined code; they do not affect line counts.
gcovr -r . --filter include/ --gcov-ignore-parse-errors "$dir" --print-summary -o "$dir/coverage.txt"
