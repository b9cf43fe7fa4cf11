// Cost of one recorded op on a one-element tensor, forward plus backward, in nanoseconds, with
// PyTorch's cost for the same workload side by side (bench/torch_tape.py under /usr/bin/python3,
// as installed and with the malloc tunables that suit it best here), when torch is importable.
// Usage: bench_tape [--json FILE] [--python PYTHON] [--no-torch]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>

#include "harness.hpp"

namespace {
struct Peer {
    bool ok = false;
    double median = 0, min = 0, max = 0;
    std::string version;
};

/// Runs torch_tape.py with the given environment prefix; parses "torch_tape_op_ns med min max ver".
Peer run_torch(const std::string& python, const std::string& env) {
    Peer r;
    const std::filesystem::path script = std::filesystem::path(__FILE__).parent_path() / "torch_tape.py";
    if (!std::filesystem::exists(script)) return r;
    const std::string cmd = (env.empty() ? std::string() : "env " + env + " ") + python + " '" + script.string() + "' 2>/dev/null";
    std::FILE* p = popen(cmd.c_str(), "r");
    if (!p) return r;
    char line[512], ver[128] = {0};
    while (std::fgets(line, sizeof line, p))
        if (std::sscanf(line, "torch_tape_op_ns %lf %lf %lf %127s", &r.median, &r.min, &r.max, ver) == 4) r.ok = true;
    pclose(p);
    r.version = ver;
    return r;
}
} // namespace

int main(int argc, char** argv) {
    const char* json = nullptr;
    std::string python = "/usr/bin/python3";
    bool torch = true;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!std::strcmp(argv[i], "--python") && i + 1 < argc) python = argv[++i];
        else if (!std::strcmp(argv[i], "--no-torch")) torch = false;
        else {
            std::fprintf(stderr, "usage: bench_tape [--json FILE] [--python PYTHON] [--no-torch]\n");
            return 2;
        }
    }
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
    const auto st = bench::measure(step, 31, bench::calibrate(step));
    const double ns = st.median / ops * 1e9;
    bench::print_machine();
    std::printf("%-52s %10s %10s %10s\n", "workload", "median", "min", "max");
    std::printf("%-52s %7.1f ns %7.1f ns %7.1f ns\n", "tapir: tape op (1 element, forward + backward)", ns, st.min / ops * 1e9,
                st.max / ops * 1e9);
    Peer best;
    const char* envs[2] = {"", "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"};
    const char* names[2] = {"PyTorch as installed", "PyTorch, malloc tunables"};
    for (int k = 0; torch && k < 2; ++k) {
        const Peer p = run_torch(python, envs[k]);
        if (!p.ok) {
            std::printf("PyTorch: not run (%s -c 'import torch' fails or bench/torch_tape.py missing)\n", python.c_str());
            break;
        }
        std::printf("%-52s %7.1f ns %7.1f ns %7.1f ns\n", (std::string(names[k]) + " " + p.version).c_str(), p.median, p.min, p.max);
        if (!best.ok || p.median < best.median) best = p;
    }
    if (best.ok) std::printf("tapir is %.1fx faster per op than PyTorch at its best (medians)\n", best.median / ns);
    if (json) {
        std::ofstream f(json);
        f << "{\"machine\": " << bench::machine_json() << ", \"tape_op_ns\": {\"median\": " << ns << ", \"min\": " << st.min / ops * 1e9
          << ", \"max\": " << st.max / ops * 1e9 << "}";
        if (best.ok) f << ", \"torch_tape_op_ns\": {\"median\": " << best.median << ", \"min\": " << best.min << ", \"max\": " << best.max
                       << ", \"version\": \"" << best.version << "\"}, \"speedup\": " << best.median / ns;
        f << "}\n";
    }
    return 0;
}
