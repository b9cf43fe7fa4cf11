#!/bin/bash
# Compile time at -O2 of a file that includes only <tapir/tapir.hpp> (target < 2 s), of one that
# includes only <tapir/deploy/deploy.hpp> (target < 0.5 s), and of the 50-line course classifier
# bench/compile/course_classifier.cpp (CSV, scaler, nn::fit, AUC, save; target < 5 s) with include/
# and with the single header, each header-only (the default) and with -DTAPIR_EXTERN_TEMPLATES
# (kernels and fit/layers/optimisers precompiled once in another file that defines
# TAPIR_INSTANTIATE_KERNELS; that file's one-off cost is printed too). The single header is
# generated from include/ into a temporary folder (cmake -P single_include/amalgamate.cmake), so
# it measures the current sources; the committed one is used if cmake is missing.
# Figures: median of 3 (--repeats N) compilations of each to an object file with the C++ compiler
# $CXX (default c++), -std=c++17; the compiler's CPU time (user + system), which a loaded machine
# inflates far less than wall time; the wall-time median is printed beside it. A file with only an
# empty main is the baseline. --quick skips the course program.
# Usage: bench/bench_compile.sh [--json FILE] [--repeats N] [--cxx COMPILER] [--quick]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
include="$root/include"
cxx=${CXX:-c++}
repeats=3
json=
quick=0
while [ $# -gt 0 ]; do
    case "$1" in
        --json) json=$2; shift 2 ;;
        --repeats) repeats=$2; shift 2 ;;
        --cxx) cxx=$2; shift 2 ;;
        --quick) quick=1; shift ;;
        *) echo "usage: bench_compile.sh [--json FILE] [--repeats N] [--cxx COMPILER] [--quick]" >&2; exit 2 ;;
    esac
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tapir_bench_compile.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

printf '#include <tapir/tapir.hpp>\nint main() { return tapir::Tensor<float>(tapir::Shape{2}).size() == 2 ? 0 : 1; }\n' > "$tmp/umbrella.cpp"
printf '#include <tapir/deploy/deploy.hpp>\nint main() { return 0; }\n' > "$tmp/deploy.cpp"
printf 'int main() { return 0; }\n' > "$tmp/empty.cpp"
printf '#define TAPIR_INSTANTIATE_KERNELS\n#include <tapir/tapir.hpp>\n' > "$tmp/kernels.cpp"
course="$here/compile/course_classifier.cpp"

# Prints "median_cpu min_cpu max_cpu median_wall" in seconds over $repeats compilations of $1
# (further arguments go to the compiler; the default include folder is include/).
median_compile() {
    local i=0 TIMEFORMAT='%R %U %S' src=$1
    shift
    [ $# -gt 0 ] || set -- -I"$include"
    : > "$tmp/times"
    while [ "$i" -lt "$repeats" ]; do
        { time "$cxx" -std=c++17 -O2 "$@" -c "$src" -o "$tmp/out.o"; } 2>> "$tmp/times"
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
row() { printf '%-44s %10s %8s %8s %13s %16s\n' "$@"; }
row "file includes" "median [s]" "min [s]" "max [s]" "wall med [s]" "target"
row "(nothing: empty main)" "$e_med" "$e_min" "$e_max" "$e_wall" "-"
row "<tapir/tapir.hpp>" "$u_med" "$u_min" "$u_max" "$u_wall" "< 2 s $(verdict "$u_med" 2)"
row "<tapir/deploy/deploy.hpp>" "$d_med" "$d_min" "$d_max" "$d_wall" "< 0.5 s $(verdict "$d_med" 0.5)"

course_json=
if [ "$quick" = 0 ]; then
    single="$tmp/single"
    if command -v cmake > /dev/null &&
        cmake -DSRC="$include" -DOUT="$single/tapir/tapir.hpp" -P "$root/single_include/amalgamate.cmake" > /dev/null; then
        single_from="generated from include/"
    else
        single="$root/single_include"
        single_from="committed single_include/"
    fi
    read -r ci_med ci_min ci_max ci_wall < <(median_compile "$course" -I"$include")
    read -r cie_med cie_min cie_max cie_wall < <(median_compile "$course" -DTAPIR_EXTERN_TEMPLATES -I"$include")
    read -r cs_med cs_min cs_max cs_wall < <(median_compile "$course" -I"$single")
    read -r cse_med cse_min cse_max cse_wall < <(median_compile "$course" -DTAPIR_EXTERN_TEMPLATES -I"$single")
    # The precompiled-instantiation file is compiled once per program (and per build type): one run.
    read -r k_med _ _ k_wall < <(repeats=1 median_compile "$tmp/kernels.cpp" -I"$include")
    echo "# course classifier: bench/compile/course_classifier.cpp; single header $single_from"
    row "course, include/, header-only" "$ci_med" "$ci_min" "$ci_max" "$ci_wall" "< 5 s $(verdict "$ci_med" 5)"
    row "course, include/, TAPIR_EXTERN_TEMPLATES" "$cie_med" "$cie_min" "$cie_max" "$cie_wall" "< 5 s $(verdict "$cie_med" 5)"
    row "course, single header, header-only" "$cs_med" "$cs_min" "$cs_max" "$cs_wall" "< 5 s $(verdict "$cs_med" 5)"
    row "course, single header, TAPIR_EXTERN_TEMPLATES" "$cse_med" "$cse_min" "$cse_max" "$cse_wall" "< 5 s $(verdict "$cse_med" 5)"
    row "(once per program: TAPIR_INSTANTIATE_KERNELS)" "$k_med" "-" "-" "$k_wall" "-"
    worst_ext=$(awk -v a="$cie_med" -v b="$cse_med" 'BEGIN { print (a > b) ? a : b }')
    worst_hdr=$(awk -v a="$ci_med" -v b="$cs_med" 'BEGIN { print (a > b) ? a : b }')
    echo "verdict: course classifier < 5 s $(verdict "$worst_ext" 5) with TAPIR_EXTERN_TEMPLATES" \
        "(slower of include/ and single header: $worst_ext s; the kernel file once: $k_med s);" \
        "header-only $(verdict "$worst_hdr" 5) ($worst_hdr s)"
    jrow() { printf '"%s": {"median": %s, "min": %s, "max": %s, "wall_median": %s}' "$@"; }
    course_json=",
 \"course_s\": {$(jrow include "$ci_med" "$ci_min" "$ci_max" "$ci_wall"),
   $(jrow include_extern "$cie_med" "$cie_min" "$cie_max" "$cie_wall"),
   $(jrow single "$cs_med" "$cs_min" "$cs_max" "$cs_wall"),
   $(jrow single_extern "$cse_med" "$cse_min" "$cse_max" "$cse_wall"),
   \"kernels_once\": $k_med, \"target\": 5.0}"
fi
if [ -n "$json" ]; then
    cat > "$json" <<JSON
{"compiler": "$ver", "flags": "-std=c++17 -O2", "repeats": $repeats, "load": "$load", "clock": "compiler CPU (user + sys)",
 "empty_s": {"median": $e_med, "min": $e_min, "max": $e_max, "wall_median": $e_wall},
 "tapir_hpp_s": {"median": $u_med, "min": $u_min, "max": $u_max, "wall_median": $u_wall, "target": 2.0},
 "deploy_hpp_s": {"median": $d_med, "min": $d_min, "max": $d_max, "wall_median": $d_wall, "target": 0.5}$course_json}
JSON
fi
