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
"$cxx" "${flags[@]}" -c "$dir/main.cpp" -o "$dir/main.o"
"$cxx" "${flags[@]}" tests/deploy/test_threads.cpp tests/simd/test_thread_pool.cpp tests/nn/test_data_parallel.cpp "$dir/main.o" -o "$dir/test_threads" -pthread
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" "$dir/test_threads"
