#!/usr/bin/env bash
# The main job, as the README's first command runs it: trains the Higgs classifier and the
# adversarial (mass-decorrelated) classifier on generated events and writes results and plots.
# On a fresh Debian machine it installs a compiler and CMake first. Arguments go to the program
# (e.g. --data ../shared/data/higgs_diphoton_50k.csv, --events 100000, --lambda 10, --scan-lambda).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for p in g++ cmake ninja-build; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DTAPIR_BUILD_TESTS=OFF -DTAPIR_BUILD_BENCH=OFF >/dev/null
cmake --build build/release --target higgs
out=${TAPIR_OUT:-build/higgs}
mkdir -p "$out"
./build/release/examples/higgs --out "$out" "$@"
