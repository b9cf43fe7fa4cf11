#!/bin/bash
# Compile time at -O2 of a file that includes only <tapir/tapir.hpp> (target < 2 s) and of one that
# includes only <tapir/deploy/deploy.hpp> (target < 0.5 s): median of 3 (--repeats N) compilations
# of each to an object file with the C++ compiler $CXX (default c++), -std=c++17. The figure is the
# compiler's CPU time (user + system), which a loaded machine inflates far less than wall time;
# the wall-time median is printed beside it. A file with only an empty main is the baseline.
# Usage: bench/bench_compile.sh [--json FILE] [--repeats N] [--cxx COMPILER]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
include="$here/../include"
cxx=${CXX:-c++}
repeats=3
json=
while [ $# -gt 0 ]; do
    case "$1" in
        --json) json=$2; shift 2 ;;
        --repeats) repeats=$2; shift 2 ;;
        --cxx) cxx=$2; shift 2 ;;
        *) echo "usage: bench_compile.sh [--json FILE] [--repeats N] [--cxx COMPILER]" >&2; exit 2 ;;
    esac
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tapir_bench_compile.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

printf '#include <tapir/tapir.hpp>\nint main() { return tapir::Tensor<float>(tapir::Shape{2}).size() == 2 ? 0 : 1; }\n' > "$tmp/umbrella.cpp"
printf '#include <tapir/deploy/deploy.hpp>\nint main() { return 0; }\n' > "$tmp/deploy.cpp"
printf 'int main() { return 0; }\n' > "$tmp/empty.cpp"

# Prints "median_cpu min_cpu max_cpu median_wall" in seconds over $repeats compilations of $1.
median_compile() {
    local i=0 TIMEFORMAT='%R %U %S'
    : > "$tmp/times"
    while [ "$i" -lt "$repeats" ]; do
        { time "$cxx" -std=c++17 -O2 -I"$include" -c "$1" -o "$tmp/out.o"; } 2>> "$tmp/times"
        i=$((i + 1))
    done
    sort -k1,1g "$tmp/times" | awk '{ w[NR] = $1 } END { print w[int((NR + 1) / 2)] }' > "$tmp/wall"
    awk '{ print $2 + $3 }' "$tmp/times" | sort -g |
        awk -v wall="$(cat "$tmp/wall")" '{ c[NR] = $1 } END { printf "%.3f %.3f %.3f %.3f\n", c[int((NR + 1) / 2)], c[1], c[NR], wall }'
}

ver=$("$cxx" --version | head -n 1)
load=$(cut -d' ' -f1-2 /proc/loadavg)
echo "# compile time at -O2, $ver; median of $repeats; compiler CPU time (user + sys); load average $load (1, 5 min)"
read -r e_med e_min e_max e_wall < <(median_compile "$tmp/empty.cpp")
read -r u_med u_min u_max u_wall < <(median_compile "$tmp/umbrella.cpp")
read -r d_med d_min d_max d_wall < <(median_compile "$tmp/deploy.cpp")
verdict() { awk -v x="$1" -v t="$2" 'BEGIN { print (x < t) ? "met" : "MISSED" }'; }
printf '%-32s %12s %10s %10s %14s %14s\n' "file includes" "median [s]" "min [s]" "max [s]" "wall med [s]" "target"
printf '%-32s %12s %10s %10s %14s %14s\n' "(nothing: empty main)" "$e_med" "$e_min" "$e_max" "$e_wall" "-"
printf '%-32s %12s %10s %10s %14s %14s\n' "<tapir/tapir.hpp>" "$u_med" "$u_min" "$u_max" "$u_wall" "< 2 s $(verdict "$u_med" 2)"
printf '%-32s %12s %10s %10s %14s %14s\n' "<tapir/deploy/deploy.hpp>" "$d_med" "$d_min" "$d_max" "$d_wall" "< 0.5 s $(verdict "$d_med" 0.5)"
if [ -n "$json" ]; then
    cat > "$json" <<JSON
{"compiler": "$ver", "flags": "-std=c++17 -O2", "repeats": $repeats, "load": "$load", "clock": "compiler CPU (user + sys)",
 "empty_s": {"median": $e_med, "min": $e_min, "max": $e_max, "wall_median": $e_wall},
 "tapir_hpp_s": {"median": $u_med, "min": $u_min, "max": $u_max, "wall_median": $u_wall, "target": 2.0},
 "deploy_hpp_s": {"median": $d_med, "min": $d_min, "max": $d_max, "wall_median": $d_wall, "target": 0.5}}
JSON
fi
