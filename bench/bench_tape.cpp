// Cost of one recorded op on a one-element tensor, forward plus backward, in nanoseconds, with
// PyTorch's cost for the same workload side by side (bench/torch_tape.py under /usr/bin/python3,
// as installed and with the malloc tunables that suit it best here), when torch is importable.
// Usage: bench_tape [--quick] [--json FILE] [--python PYTHON] [--no-torch]
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>

#include "harness.hpp"
#include "peer.hpp"

int main(int argc, char** argv) {
    bench::PeerOptions o;  // --quick: fewer samples; --wall: no effect (this one is timed on the wall clock)
    if (!o.parse_args(argc, argv, "usage: bench_tape [--quick] [--json FILE] [--python PYTHON] [--no-torch]\n")) return 2;
    using namespace tapir;
    Tape<float> tape;
    Parameter<float> w("w", Tensor<float>(Shape{1}, {0.999f}));
    const int ops = 1000;  // per sample: 500 mul + 500 add on one-element values
    const auto step = [&] {
        tape.clear();
        const Var<float> wv = tape.param(w);
        Var<float> y = tape.constant(Tensor<float>::scalar(1.0f));
        for (int i = 0; i < ops / 2; ++i) y = add(mul(y, wv), wv);
        backward(sum(y));
        w.grad[0] = 0.0f;
    };
    const auto st = bench::measure(step, o.quick ? 11 : 31, bench::calibrate(step));
    const double ns = st.median / ops * 1e9;
    bench::print_machine();
    std::printf("%-52s %10s %10s %10s\n", "workload", "median", "min", "max");
    std::printf("%-52s %7.1f ns %7.1f ns %7.1f ns\n", "tapir: tape op (1 element, forward + backward)", ns, st.min / ops * 1e9,
                st.max / ops * 1e9);
    bench::PeerLine best;
    bool have_best = false;
    const std::vector<bench::TorchSetting> settings = {
        {"PyTorch as installed", ""},
        {"PyTorch, malloc tunables", "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"}};
    for (std::size_t k = 0; o.torch && k < settings.size(); ++k) {
        const auto lines = bench::peer_lines(bench::run_peer_script(o.python, "torch_tape.py", "", settings[k]), "torch_tape_op_ns");
        if (lines.empty()) {
            std::printf("PyTorch: not run (%s -c 'import torch' fails or bench/torch_tape.py missing)\n", o.python.c_str());
            break;
        }
        const bench::PeerLine& p = lines.front();
        std::printf("%-52s %7.1f ns %7.1f ns %7.1f ns\n", (settings[k].label + " " + p.version).c_str(), p.t.median, p.t.min, p.t.max);
        if (!have_best || p.t.median < best.t.median) best = p, have_best = true;
    }
    if (have_best) std::printf("tapir is %.1fx faster per op than PyTorch at its best (medians)\n", best.t.median / ns);
    if (!o.json.empty()) {
        std::ofstream f(o.json);
        f << "{\"machine\": " << bench::machine_json() << ", \"tape_op_ns\": {\"median\": " << ns << ", \"min\": " << st.min / ops * 1e9
          << ", \"max\": " << st.max / ops * 1e9 << "}";
        if (have_best) f << ", \"torch_tape_op_ns\": {\"median\": " << best.t.median << ", \"min\": " << best.t.min << ", \"max\": " << best.t.max
                       << ", \"version\": \"" << best.version << "\"}, \"speedup\": " << best.t.median / ns;
        f << "}\n";
    }
    return 0;
}
