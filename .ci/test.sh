#!/usr/bin/env bash
# The whole test suite, as the README's second command runs it. On a fresh Debian machine it
# installs what the selected steps need (and only that), then runs, in order:
#   1. the single header must equal a fresh amalgamation of include/tapir/; the README's getting-started
#      program (after the marker <!-- examples/getting_started/main.cpp -->) must equal that example
#   2. meson build + meson test (GCC)
#   3. Clang 14 build of the tests against single_include/tapir/tapir.hpp
#   4. AddressSanitizer + UndefinedBehaviorSanitizer build (GCC), tests
#   5. aarch64 cross build, NEON path, tests under qemu-aarch64
#   7. libFuzzer smoke run of every fuzzer (.ci/fuzz.sh, 30 s each; TAPIR_FUZZ_SECONDS)
#   8. ThreadSanitizer run of the shared-model inference test (.ci/tsan.sh)
#   9. install to a scratch prefix, move it, build a consumer via CMake, pkg-config, meson and add_subdirectory
#      (.ci/integration.sh)
#  10. API reference (Doxygen, the docs target), every warning an error
#   6. GCC Release build: tests, examples in a quick setting (benchmarks too with TAPIR_TEST_BENCH=ON,
#      with their optional peers OpenBLAS, Eigen and PyTorch installed); ends with ctest's summary
# Environment: TAPIR_TEST_STEPS selects steps (default all: "1 2 3 4 5 6 7 8 9 10"; they run in the order
# above, step 6 last); JOBS sets build parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
steps=" ${TAPIR_TEST_STEPS:-1 2 3 4 5 6 7 8 9 10} "
jobs=${JOBS:-$(nproc)}
selected() { [[ $steps == *" $1 "* ]]; }

# Debian packages per step: a run of some steps installs only what those steps use.
base=(cmake ninja-build)
pkgs=(cmake)
selected 2 && pkgs+=(g++ ninja-build meson pkg-config python3 doctest-dev)
selected 3 && pkgs+=("${base[@]}" clang doctest-dev)
selected 4 && pkgs+=("${base[@]}" g++ doctest-dev)
selected 5 && pkgs+=("${base[@]}" g++-aarch64-linux-gnu qemu-user doctest-dev)
selected 7 && pkgs+=(make clang libclang-rt-14-dev doctest-dev)
selected 8 && pkgs+=(clang libclang-rt-14-dev doctest-dev)
selected 9 && pkgs+=("${base[@]}" g++ meson pkg-config)
selected 10 && pkgs+=("${base[@]}" doxygen)
selected 6 && pkgs+=("${base[@]}" g++ doctest-dev)
# The tests' optional peers (each test skips with a message without its peer): PyTorch float64
# reference values, NumPy and ONNX files written by the real tools, FastJet's jets, MPI ranks.
selected 6 && pkgs+=(python3 python3-torch python3-numpy python3-onnx libfastjet-dev libopenmpi-dev openmpi-bin)
# The benchmarks' peers: bench_gemm compiles against OpenBLAS and Eigen when found; the PyTorch
# comparisons (bench/torch_*.py) run when python3 imports torch; bench_inference's libtorch peer
# builds when CMake finds libtorch-dev. No test needs them.
selected 6 && [ "${TAPIR_TEST_BENCH:-OFF}" = ON ] && pkgs+=(libopenblas-dev libeigen3-dev python3-torch python3-numpy libtorch-dev)
missing=()
for p in $(printf '%s\n' "${pkgs[@]}" | sort -u); do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  banner "installing: ${missing[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

flags_cmake=(-G Ninja -DTAPIR_WERROR=ON)
run_ctest() { ctest --test-dir "$1" --output-on-failure -j "$jobs" "${@:2}"; }
# Each step's banner carries the clock, so a slow CI run shows which step took the time.
banner() { echo "== $* [$(date -u +%H:%M:%S)]"; }

if selected 1; then
  banner "1. single header is fresh; the README's getting-started program is the example"
  tmp=$(mktemp)
  cmake -DSRC="$root/include" -DOUT="$tmp" -P single_include/amalgamate.cmake
  if ! cmp -s "$tmp" single_include/tapir/tapir.hpp; then
    diff -u single_include/tapir/tapir.hpp "$tmp" | head -40 || true
    echo "single_include/tapir/tapir.hpp is stale: run 'cmake -DSRC=include -DOUT=single_include/tapir/tapir.hpp -P single_include/amalgamate.cmake'"
    rm -f "$tmp"; exit 1
  fi
  rm -f "$tmp"
  # No header includes the x86 intrinsics headers (<immintrin.h> alone adds ~0.7 s to every file
  # that includes tapir): simd/detail/x86_builtins.hpp and GCC/Clang builtins stand in for them.
  if grep -rnE '#include <[a-z0-9]*intrin\.h>' include; then
    echo "a tapir header includes an intrinsics header (see simd/detail/x86_builtins.hpp)"; exit 1
  fi
  # TAPIR_COMPILED_ONCE (config.hpp): under TAPIR_EXTERN_TEMPLATES the course classifier must only
  # call the CSV parser, ROC sort, model writer and atomic file writer, not compile them (an
  # accidental `inline` on one of them would quietly put its code back into every user file).
  obj=$(mktemp --suffix=.o)
  g++ -std=c++17 -O1 -DTAPIR_EXTERN_TEMPLATES -Iinclude -c bench/compile/course_classifier.cpp -o "$obj"
  syms=$(nm -C "$obj"); rm -f "$obj"
  for f in 'io::detail::read_csv_file<void>' 'metrics::detail::roc_order<void>' 'io::detail::serialise_model<float>' \
           'io::detail::write_file_atomic<void>'; do
    lines=$(grep -F "tapir::$f(" <<<"$syms" || true)
    if [ -z "$lines" ] || grep -qv " U " <<<"$lines"; then
      echo "bench/compile/course_classifier.cpp with TAPIR_EXTERN_TEMPLATES: tapir::$f should be an undefined (extern) symbol:"
      echo "${lines:-  (not referenced at all)}"; exit 1
    fi
  done
  # The README's getting-started program (the fenced block after this marker) is the example CI builds and runs.
  marker='<!-- examples/getting_started/main.cpp -->'
  if grep -qxF "$marker" README.md && ! awk -v m="$marker" '$0 == m {f = 1; next} f && /^```/ {if (g) exit; g = 1; next} g' README.md |
       cmp -s - examples/getting_started/main.cpp; then
    echo "README.md's getting-started program differs from examples/getting_started/main.cpp"; exit 1
  fi
fi

if selected 2; then
  banner "2. meson build and tests"
  rm -rf build/meson
  # -O1: this step checks the meson build files and runs the suites; step 6 builds the same suites at -O3,
  # so here the cheaper optimisation level halves the compile time and still catches every test failure.
  CXX=g++ meson setup build/meson -Doptimization=1 -Ddebug=false -Db_ndebug=true -Dwerror=true >/dev/null
  meson test -C build/meson --num-processes "$jobs" --print-errorlogs
fi

if selected 3; then
  banner "3. clang++ against the single header"
  # -O1: the point is clang's diagnostics and the single header; optimised code is step 6's job.
  cmake -S . -B build/clang-single "${flags_cmake[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
        -DCMAKE_CXX_COMPILER=clang++ \
        -DTAPIR_TEST_SINGLE_HEADER=ON -DTAPIR_BUILD_EXAMPLES=OFF -DTAPIR_BUILD_BENCH=OFF >/dev/null
  cmake --build build/clang-single -j "$jobs"
  run_ctest build/clang-single
fi

if selected 4; then
  banner "4. AddressSanitizer + UndefinedBehaviorSanitizer"
  # -O1 -g1: what the sanitizers need, at about half the compile time of -O2 -g.
  cmake -S . -B build/asan "${flags_cmake[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1" -DTAPIR_SANITIZE=ON \
        -DTAPIR_BUILD_EXAMPLES=OFF -DTAPIR_BUILD_BENCH=OFF >/dev/null
  cmake --build build/asan -j "$jobs"
  TAPIR_TEST_QUICK=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 run_ctest build/asan
fi

if selected 5; then
  banner "5. aarch64 (NEON) under qemu"
  cmake -S . -B build/aarch64 "${flags_cmake[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE="$root/.ci/aarch64.cmake" \
        -DTAPIR_BUILD_EXAMPLES=OFF -DTAPIR_BUILD_BENCH=OFF >/dev/null
  cmake --build build/aarch64 -j "$jobs" --target test_simd $(grep -q "test_deploy" build/aarch64/build.ninja 2>/dev/null && echo test_deploy)
  TAPIR_TEST_QUICK=1 run_ctest build/aarch64 -R "^(simd|deploy)$"
fi

if selected 7; then
  banner "7. fuzzers (libFuzzer, clang), smoke run of ${TAPIR_FUZZ_SECONDS:-30} s each"
  # -O1 -g1 for the smoke run (about half the build time of -O2 -g); long runs use fuzz.sh's default.
  JOBS="$jobs" FUZZ_OPT="-O1 -g1" bash .ci/fuzz.sh "${TAPIR_FUZZ_SECONDS:-30}"
fi

if selected 8; then
  banner "8. ThreadSanitizer: shared-model inference from four threads, the worker pool, data-parallel training"
  bash .ci/tsan.sh
fi

if selected 9; then
  banner "9. install routes: CMake package, pkg-config, meson subproject from a moved prefix; add_subdirectory"
  CXX=g++ bash .ci/integration.sh
fi

if selected 10; then
  banner "10. API reference (Doxygen), warnings as errors"
  cmake -S . -B build/doxygen -G Ninja -DTAPIR_BUILD_TESTS=OFF -DTAPIR_BUILD_EXAMPLES=OFF -DTAPIR_BUILD_BENCH=OFF \
        -DTAPIR_DOCS_WERROR=ON >/dev/null
  cmake --build build/doxygen --target docs
  echo "API reference: build/doxygen/docs/html/index.html"
fi

if selected 6; then
  banner "6. GCC Release: tests, examples, benchmarks"
  cmake -S . -B build/gcc "${flags_cmake[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ \
        -DTAPIR_BUILD_BENCH=${TAPIR_TEST_BENCH:-OFF} >/dev/null
  cmake --build build/gcc -j "$jobs"
  run_ctest build/gcc
fi
