// One Adam training step of the notes' jet-image CNN (40x40x1 images; conv 8@4x4, conv 8@4x4,
// max-pool 2, conv 8@4x4, conv 8@4x4, max-pool 2, dense 64, 1; ReLU; padding 'same'), batch 128,
// single thread: forward, binary cross-entropy from logits, backward, optimiser step. Side by side
// with the same step in PyTorch (bench/torch_conv.py under /usr/bin/python3, one thread) in the
// settings of bench_train (as installed, OpenBLAS SkylakeX kernels, malloc thresholds raised, both)
// and both memory formats (contiguous, channels_last); the ratio is against the fastest.
//
// Also reported: heap allocations per steady-state step (target 0), and each convolution layer's
// GFLOP/s over its forward and backward kernels (conv, conv_dx, conv_dw; 2 flops per multiply-add;
// the first layer has no input gradient), timed alone on the same shapes.
// Times are medians of samples of about 0.2 s in process CPU time (--wall: wall time), tapir's
// samples taken in rounds between the PyTorch runs so that both see the same spread of load.
// Usage: bench_conv [--quick] [--wall] [--json FILE] [--python PYTHON] [--no-torch]
//        bench_conv --profile STEPS   (runs only the steps, e.g. under valgrind --tool=callgrind or perf)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/conv.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/autodiff/tape.hpp>
#include <tapir/nn/conv.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/random.hpp>

#include "alloc_count.hpp"
#include "harness.hpp"
#include "peer.hpp"

namespace {

using namespace tapir;

constexpr std::size_t batch = 128, side = 40;

struct Options : bench::PeerOptions {
    std::size_t profile_steps = 0;
};

nn::Sequential<float> make_cnn(Rng& rng) {
    nn::ConvOptions same;
    same.same = true;
    nn::Sequential<float> m;
    m.add<nn::Conv2d<float>>(1, 8, 4, rng, same).add<nn::ReLU<float>>();
    m.add<nn::Conv2d<float>>(8, 8, 4, rng, same).add<nn::ReLU<float>>().add<nn::MaxPool2d<float>>(2);
    m.add<nn::Conv2d<float>>(8, 8, 4, rng, same).add<nn::ReLU<float>>();
    m.add<nn::Conv2d<float>>(8, 8, 4, rng, same).add<nn::ReLU<float>>().add<nn::MaxPool2d<float>>(2);
    m.add<nn::Flatten<float>>().add<nn::Dense<float>>(8 * 10 * 10, 64, rng, Activation::relu).add<nn::Dense<float>>(64, 1, rng);
    return m;
}

struct TapirBench {
    Rng rng{1234};
    nn::Sequential<float> net = make_cnn(rng);
    optim::Adam<float> opt{net.parameters(), 1e-3f};
    Tensor<float> x{Shape{batch, 1, side, side}}, y{Shape{batch, 1}};
    Tape<float> tape;
    float sink = 0.0f;
    long inner = 1;
    long long allocs_per_step = -1;
    std::vector<double> samples;

    TapirBench() {
        for (auto& v : x) v = static_cast<float>(rng.uniform());
        for (auto& v : y) v = rng.uniform() < 0.5 ? 1.0f : 0.0f;
    }
    void step() {
        tape.clear();
        const Var<float> l = bce_with_logits(net(tape.view(x)), tape.view(y));
        backward(l);
        opt.step();
        opt.zero_grad();
        sink += l.item();
    }
    void prepare(const Options& o) {
        for (int i = 0; i < 3; ++i) step();
        const int n = 5;
        const bench::AllocationScope scope;
        for (int i = 0; i < n; ++i) step();
        const long long c = scope.count();
        allocs_per_step = c / n + (c % n ? 1 : 0);
        inner = bench::calibrate_inner([this] { step(); }, o.quick ? 0.05 : 0.2, o.wall);
    }
};

/// One convolution layer's kernels alone: forward, and backward into the weight, bias and (unless
/// the first layer) the input.
struct ConvLayerTiming {
    std::size_t cin, hw;
    double gflop = 0, seconds = 0;
};

ConvLayerTiming time_conv_layer(std::size_t cin, std::size_t hw, bool input_grad, const Options& o) {
    Rng rng(7);
    Tensor<float> x(Shape{batch, cin, hw, hw}), w(Shape{8, cin, 4, 4}), b(Shape{8}), g(Shape{batch, 8, hw, hw});
    for (auto* t : {&x, &w, &b, &g})
        for (auto& v : *t) v = static_cast<float>(rng.uniform(-1, 1));
    Tape<float> tape;
    const auto call = [&] {
        tape.clear();
        const Var<float> xv = input_grad ? tape.variable(x) : tape.view(x);
        const Var<float> wv = tape.variable(w), bv = tape.variable(b);
        const Var<float> yv = conv2d(xv, wv, bv, 1, Pad2d::same(4));
        backward(yv, tape.view(g));
    };
    const bench::Sample s = bench::time_calls(call, o.quick ? 5 : 9, o.quick ? 0.05 : 0.2, o.wall);
    const double fwd = 2.0 * static_cast<double>(batch * 8 * hw * hw * cin * 16);
    return ConvLayerTiming{cin, hw, (input_grad ? 3.0 : 2.0) * fwd * 1e-9, s.median};
}

struct TorchRun {
    std::string label, version;
    bench::Sample t;
};

} // namespace

int main(int argc, char** argv) {
    Options o;
    const bool args_ok = o.parse_args(argc, argv,
                                      "usage: bench_conv [--quick] [--wall] [--json FILE] [--python PYTHON] [--no-torch]\n"
                                      "       bench_conv --profile STEPS   (only runs the steps: for callgrind or perf)\n",
                                      [&](const std::string& a, int& i) {
                                          if (a != "--profile" || i + 1 >= argc) return false;
                                          o.profile_steps = std::strtoul(argv[++i], nullptr, 10);
                                          return true;
                                      });
    if (!args_ok) return 2;
    if (o.profile_steps) {
        TapirBench t;
        for (std::size_t i = 0; i < o.profile_steps; ++i) t.step();
        return t.sink == 12345.0f ? 1 : 0;
    }
    bench::print_machine();
    std::printf("# load average %s; medians, %s time\n", bench::load_average().c_str(), o.wall ? "wall" : "process CPU");
    std::fflush(stdout);

    TapirBench tb;
    tb.prepare(o);
    std::vector<bench::TorchSetting> settings;
    if (o.torch)
        for (const bench::TorchSetting& s : bench::torch_settings(o.quick))
            for (const char* fmt : {"", " --channels-last"}) settings.push_back({s.label + (fmt[0] ? ", channels_last" : ""), s.env + "\t" + fmt});
    const int rounds = static_cast<int>(settings.size()) + 1;
    const int per_round = std::max(2, (o.repeats + rounds - 1) / rounds);
    const auto tapir_round = [&] { bench::add_samples([&] { tb.step(); }, tb.inner, per_round, o.wall, tb.samples); };
    tapir_round();
    std::vector<TorchRun> torch;
    for (const bench::TorchSetting& s : settings) {
        const std::size_t tab = s.env.find('\t');
        const bench::TorchSetting env{s.label, s.env.substr(0, tab)};
        const std::string args = "--batch " + std::to_string(batch) + " --repeats " + std::to_string(o.repeats) + " --target " +
                                 (o.quick ? "0.05" : "0.2") + (o.wall ? " --wall" : "") + s.env.substr(tab + 1);
        TorchRun r;
        r.label = s.label;
        for (const bench::PeerLine& p : bench::run_peer(o.python, "torch_conv.py", args, env)) r.t = p.t, r.version = p.version;
        if (r.version.empty()) {
            std::printf("PyTorch (%s): not run (%s cannot import torch, or bench/torch_conv.py is missing)\n", s.label.c_str(), o.python.c_str());
            break;
        }
        torch.push_back(r);
        tapir_round();
    }
    const bench::Sample ts = bench::summarize(tb.samples);

    std::printf("\nJet-image CNN training step (batch %zu, 40x40x1, Adam, BCE with logits), 1 thread; time per step [ms]\n", batch);
    std::printf("%-36s %10s %10s %10s\n", "", "median", "min", "max");
    std::printf("%-36s %10.2f %10.2f %10.2f   (%zu samples; heap allocations per step: %lld)\n", "tapir", ts.median * 1e3, ts.min * 1e3,
                ts.max * 1e3, tb.samples.size(), tb.allocs_per_step);
    double best = NAN;
    std::string best_label;
    for (const TorchRun& r : torch) {
        std::printf("%-36s %10.2f %10.2f %10.2f\n", ("PyTorch " + r.version + ", " + r.label).c_str(), r.t.median * 1e3, r.t.min * 1e3,
                    r.t.max * 1e3);
        if (!(r.t.median >= best)) best = r.t.median, best_label = r.label;
    }
    const double speedup = best / ts.median;
    if (!torch.empty())
        std::printf("speedup over the fastest PyTorch (%s): %.2fx (target >= 2x: %s)\n", best_label.c_str(), speedup,
                    speedup >= 2.0 ? "met" : "MISSED");

    std::printf("\nconvolution layers alone (forward + backward kernels, batch %zu), GFLOP/s\n", batch);
    std::vector<ConvLayerTiming> layers;
    layers.push_back(time_conv_layer(1, 40, false, o));
    layers.push_back(time_conv_layer(8, 40, true, o));
    layers.push_back(time_conv_layer(8, 20, true, o));
    layers.push_back(time_conv_layer(8, 20, true, o));
    double fl = 0, sec = 0;
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const ConvLayerTiming& l = layers[i];
        std::printf("  conv%zu %zu->8 @ %zux%zu: %7.3f GFLOP in %7.2f ms = %6.1f GFLOP/s\n", i + 1, l.cin, l.hw, l.hw, l.gflop, l.seconds * 1e3,
                    l.gflop / l.seconds);
        fl += l.gflop, sec += l.seconds;
    }
    std::printf("  all four: %.3f GFLOP in %.2f ms = %.1f GFLOP/s (%.0f%% of the step's median)\n", fl, sec * 1e3, fl / sec, 100.0 * sec / ts.median);

    if (!o.json.empty()) {
        std::ostringstream js;
        js << "{\"machine\": " << bench::machine_json() << ", \"load\": \"" << bench::load_average() << "\", \"clock\": \""
           << (o.wall ? "wall" : "process_cpu") << "\", \"batch\": " << batch << ", \"tapir_s\": {\"median\": " << ts.median
           << ", \"min\": " << ts.min << ", \"max\": " << ts.max << "}, \"heap_allocations_per_step\": " << tb.allocs_per_step
           << ", \"torch_s\": {";
        for (std::size_t i = 0; i < torch.size(); ++i)
            js << (i ? ", " : "") << "\"" << torch[i].label << "\": {\"median\": " << torch[i].t.median << ", \"min\": " << torch[i].t.min
               << ", \"max\": " << torch[i].t.max << "}";
        js << "}";
        if (!torch.empty()) js << ", \"torch\": \"" << torch.front().version << "\", \"torch_best\": \"" << best_label << "\", \"speedup\": " << speedup << ", \"target\": 2";
        js << ", \"conv_gflops\": " << fl / sec << "}\n";
        std::ofstream(o.json) << js.str();
    }
    return 0;
}
