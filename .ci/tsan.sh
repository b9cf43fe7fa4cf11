#!/usr/bin/env bash
# Opt-in ThreadSanitizer check: builds tests/deploy/test_threads.cpp (four threads running
# inference on one shared model), tests/simd/test_thread_pool.cpp (the GEMM worker pool) and
# tests/nn/test_data_parallel.cpp (data-parallel training on threads)
# with -fsanitize=thread in build/tsan and runs them. Fails on any
# data race or wrong result. Environment: CXX (default clang++; g++ works too).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${TSAN_BUILD_DIR:-build/tsan}
cxx=${CXX:-clang++}
mkdir -p "$dir"
flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=thread -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Werror
       -Iinclude -Itests)
# Its own doctest main: tests/main.cpp replaces operator new, which clang's static TSan runtime
# also defines.
printf '#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN\n#include <doctest/doctest.h>\n#include <atomic>\nnamespace tapir_test { std::atomic<long long> g_allocations{0}; }\n' >"$dir/main.cpp"
# One object per source, compiled JOBS at a time (default: the number of cores).
srcs=("$dir/main.cpp" tests/deploy/test_threads.cpp tests/simd/test_thread_pool.cpp tests/nn/test_data_parallel.cpp)
printf '%s\n' "${srcs[@]}" | xargs -P "${JOBS:-$(nproc)}" -I{} sh -c \
  'f="$1"; shift; o="$0/$(basename "$f" .cpp).o"; "$@" -c "$f" -o "$o"' "$dir" {} "$cxx" "${flags[@]}"
objs=()
for f in "${srcs[@]}"; do objs+=("$dir/$(basename "$f" .cpp).o"); done
"$cxx" "${flags[@]}" "${objs[@]}" -o "$dir/test_threads" -pthread
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" "$dir/test_threads"
