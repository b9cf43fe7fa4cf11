// Cost of one recorded op on a one-element tensor, forward plus backward, in nanoseconds.
// Usage: bench_tape [--json FILE]
#include <cstdio>
#include <cstring>
#include <fstream>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>

#include "harness.hpp"

int main(int argc, char** argv) {
    const char* json = nullptr;
    for (int i = 1; i + 1 < argc; ++i)
        if (!std::strcmp(argv[i], "--json")) json = argv[i + 1];
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
    std::printf("%-44s %10s %10s %10s\n", "workload", "median", "min", "max");
    std::printf("%-44s %8.1f ns %7.1f ns %7.1f ns\n", "tape op (1 element, forward + backward)", ns, st.min / ops * 1e9,
                st.max / ops * 1e9);
    if (json) {
        std::ofstream f(json);
        f << "{\"machine\": " << bench::machine_json() << ", \"tape_op_ns\": {\"median\": " << ns
          << ", \"min\": " << st.min / ops * 1e9 << ", \"max\": " << st.max / ops * 1e9 << "}}\n";
    }
    return 0;
}
