#!/usr/bin/env bash
# The three ways a project uses an installed or vendored tapir, each tried from scratch (CI step 9):
# installs tapir with `cmake --install --prefix` into a temporary prefix, moves that prefix
# elsewhere (an installed tree must not remember where it was built or installed), then builds and
# runs one small consumer program through
#   a. CMake: find_package(tapir) and the tapir::tapir target,
#   b. pkg-config: `pkg-config --cflags --libs tapir`,
#   c. meson: tapir as a subproject, found by dependency('tapir') (tapir calls meson.override_dependency),
#   d. CMake add_subdirectory of the source tree (no tests, examples or docs target of tapir's own).
# Environment: CXX (default g++), KEEP=1 keeps the temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cxx=${CXX:-g++}
tmp=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] && echo "temporary folder: $tmp" || trap 'rm -rf "$tmp"' EXIT

# The consumer: every header through tapir.hpp, one gradient, the installed version.
mkdir -p "$tmp/app"
cat >"$tmp/app/main.cpp" <<'CPP'
#include <tapir/tapir.hpp>
#include <cstdio>
int main() {
    tapir::Tape<double> tape;
    const tapir::Var<double> x = tape.variable(tapir::Tensor<double>(tapir::Shape{1}, {3.0}));
    const double g = tapir::grad(tapir::sum(tapir::mul(x, x)), x).item();   // d(x^2)/dx at 3
    std::printf("tapir %s: d(x^2)/dx = %g\n", TAPIR_VERSION_STRING, g);
    return g == 6.0 ? 0 : 1;
}
CPP
cat >"$tmp/app/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.20)
project(consumer LANGUAGES CXX)
find_package(tapir 0.1 REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE tapir::tapir)
CMAKE
cat >"$tmp/app/meson.build" <<'MESON'
project('consumer', 'cpp', default_options : ['cpp_std=c++17'])
executable('consumer', 'main.cpp', dependencies : dependency('tapir', fallback : 'tapir'))
MESON

echo "-- install into a scratch prefix, then move it"
cmake -S "$root" -B "$tmp/build" -G Ninja -DTAPIR_BUILD_TESTS=OFF -DTAPIR_BUILD_EXAMPLES=OFF \
      -DTAPIR_BUILD_BENCH=OFF >/dev/null
cmake --install "$tmp/build" --prefix "$tmp/staged" >/dev/null
mkdir -p "$tmp/moved"
mv "$tmp/staged" "$tmp/moved/prefix"
prefix=$tmp/moved/prefix
if grep -rlF -e "$tmp/staged" -e "$tmp/build" -e "$root" "$prefix"; then
  echo "the installed files above name the build, source or install folder: not relocatable"; exit 1
fi

echo "-- a. CMake find_package(tapir)"
cmake -S "$tmp/app" -B "$tmp/app-cmake" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/app-cmake" >/dev/null
"$tmp/app-cmake/consumer"

echo "-- b. pkg-config"
pc_dir=$(dirname "$(find "$prefix" -name tapir.pc)")
flags=$(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs tapir)
inc=$(PKG_CONFIG_PATH="$pc_dir" pkg-config --variable=includedir tapir)
if [ "$(cd "$inc" 2>/dev/null && pwd -P)" != "$(cd "$prefix/include" && pwd -P)" ]; then
  echo "pkg-config's includedir is '$inc', not the moved prefix's $prefix/include"; exit 1
fi
# shellcheck disable=SC2086
"$cxx" "$tmp/app/main.cpp" $flags -o "$tmp/app-pc"
"$tmp/app-pc"

echo "-- c. meson subproject"
mkdir -p "$tmp/app/subprojects"
ln -s "$root" "$tmp/app/subprojects/tapir"
# --force-fallback-for: the subproject even where a system tapir is installed.
CXX="$cxx" meson setup --force-fallback-for=tapir "$tmp/app-meson" "$tmp/app" >/dev/null
meson compile -C "$tmp/app-meson" >/dev/null
"$tmp/app-meson/consumer"
echo "-- d. CMake add_subdirectory"
mkdir -p "$tmp/vendored"
ln -s "$root" "$tmp/vendored/tapir"
cp "$tmp/app/main.cpp" "$tmp/vendored/"
cat >"$tmp/vendored/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.20)
project(consumer LANGUAGES CXX)
add_subdirectory(tapir)
add_custom_target(docs COMMAND ${CMAKE_COMMAND} -E echo "the consumer's own docs target")
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE tapir::tapir)
CMAKE
cmake -S "$tmp/vendored" -B "$tmp/app-vendored" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
cmake --build "$tmp/app-vendored" >/dev/null
"$tmp/app-vendored/consumer"
echo "-- integration: CMake package, pkg-config, meson subproject and add_subdirectory all build and run"
