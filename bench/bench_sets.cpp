// One Adam training step of a Particle Flow Network and of an EdgeConv block, single thread,
// float32, side by side with the same steps in PyTorch (bench/torch_sets.py, one thread, in each
// of peer.hpp's settings; the ratio is against the fastest).
//
// pfn: 128 events of up to 100 particles x 4 features with a (B, N) mask (20 to 100 real),
// Phi 100-100-64 (ReLU), masked sum, F 100-100-1, BCE with logits (arXiv:1810.05165). Target >= 3x.
// edgeconv: 32 events of up to 100 particles (20 to 100 real), 2 coordinates and 7 features, one
// EdgeConv block (k = 16, edge network 64-64-64, mean, shortcut; arXiv:1801.07829), masked mean,
// Dense 64-1, BCE with logits. Target >= 1.5x.
// Also reported: heap allocations per steady-state step (target 0).
// Times are medians of samples of about 20 ms in process CPU time (or wall time with --wall);
// tapir is timed before and after the PyTorch runs, its samples pooled.
// Usage: bench_sets [--quick] [--wall] [--json FILE] [--python PYTHON] [--no-torch]
//        bench_sets --profile pfn|edgeconv STEPS   (runs only the steps, e.g. under callgrind)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/autodiff/sets.hpp>
#include <tapir/nn/graph.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sets.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/random.hpp>

#include "alloc_count.hpp"
#include "harness.hpp"
#include "peer.hpp"

namespace {

using namespace tapir;

struct Options : bench::PeerOptions {
    std::string profile;
    long profile_steps = 0;
};

Tensor<float> make_mask(std::size_t b, std::size_t n, Rng& rng) {
    Tensor<float> m(Shape{b, n});
    for (std::size_t e = 0; e < b; ++e) {
        const auto len = static_cast<std::size_t>(rng.uniform(20.0, static_cast<double>(n) + 0.999));
        for (std::size_t i = 0; i < n; ++i) m(e, i) = i < len ? 1.0f : 0.0f;
    }
    return m;
}
Tensor<float> randn(const Shape& s, Rng& rng) {
    Tensor<float> t(s);
    for (auto& v : t) v = static_cast<float>(rng.normal());
    return t;
}
Tensor<float> labels(std::size_t b, Rng& rng) {
    Tensor<float> y(Shape{b, 1});
    for (auto& v : y) v = rng.uniform() < 0.5 ? 1.0f : 0.0f;
    return y;
}

struct Bench {
    virtual ~Bench() = default;
    virtual void step() = 0;
    std::vector<double> samples;
    long inner = 1;
    long long allocs = -1;
    void prepare(const Options& o) {
        for (int i = 0; i < 5; ++i) step();
        const int n = 20;
        const bench::AllocationScope scope;
        for (int i = 0; i < n; ++i) step();
        allocs = scope.count() / n + (scope.count() % n ? 1 : 0);
        inner = bench::calibrate_inner([this] { step(); }, o.quick ? 0.005 : 0.02, o.wall);
    }
};

struct PfnBench : Bench {
    Rng rng{1};
    nn::ParticleFlowNetwork<float> net{4, {100, 100, 64}, {100, 100, 1}, rng};
    optim::Adam<float> opt{net.parameters(), 1e-3f};
    Tensor<float> x = randn(Shape{128, 100, 4}, rng), m = make_mask(128, 100, rng), y = labels(128, rng);
    Tape<float> tape;
    float sink = 0;
    void step() override {
        tape.clear();
        const Var<float> l = bce_with_logits(net.forward(tape.view(x), tape.view(m)), tape.view(y));
        backward(l);
        opt.step();
        opt.zero_grad();
        sink += l.item();
    }
};

struct EdgeConvBench : Bench {
    Rng rng{2};
    nn::EdgeConv<float> block{7, {64, 64, 64}, 16, rng};
    nn::Dense<float> head{64, 1, rng};
    std::vector<Parameter<float>*> params = [this] {
        std::vector<Parameter<float>*> p = block.parameters();
        for (auto* q : head.parameters()) p.push_back(q);
        return p;
    }();
    optim::Adam<float> opt{params, 1e-3f};
    Tensor<float> pts = randn(Shape{32, 100, 2}, rng), x = randn(Shape{32, 100, 7}, rng), m = make_mask(32, 100, rng),
                  y = labels(32, rng);
    Tape<float> tape;
    float sink = 0;
    void step() override {
        tape.clear();
        const Var<float> mv = tape.view(m);
        const Var<float> h = block.forward(tape.view(pts), tape.view(x), mv);
        const Var<float> l = bce_with_logits(head(masked_mean(h, mv)), tape.view(y));
        backward(l);
        opt.step();
        opt.zero_grad();
        sink += l.item();
    }
};

} // namespace

int main(int argc, char** argv) {
    Options o;
    const bool args_ok = o.parse_args(argc, argv,
                                      "usage: bench_sets [--quick] [--wall] [--json FILE] [--python PYTHON] [--no-torch]\n"
                                      "       bench_sets --profile pfn|edgeconv STEPS\n",
                                      [&](const std::string& a, int& i) {
                                          if (a != "--profile" || i + 2 >= argc) return false;
                                          o.profile = argv[i + 1];
                                          o.profile_steps = std::strtol(argv[i + 2], nullptr, 10);
                                          i += 2;
                                          return true;
                                      });
    if (!args_ok) return 2;
    if (o.profile_steps) {
        std::unique_ptr<Bench> b;
        if (o.profile == "pfn") b = std::make_unique<PfnBench>();
        else b = std::make_unique<EdgeConvBench>();
        for (long i = 0; i < o.profile_steps; ++i) b->step();
        return 0;
    }
    bench::print_machine();
    std::printf("# load average %s; medians of about %d samples, %s time\n", bench::load_average().c_str(), o.repeats,
                o.wall ? "wall" : "process CPU");
    std::fflush(stdout);
    const std::vector<std::string> names = {"pfn", "edgeconv"};
    const std::map<std::string, double> targets = {{"pfn", 3.0}, {"edgeconv", 1.5}};
    std::vector<std::unique_ptr<Bench>> benches;
    benches.push_back(std::make_unique<PfnBench>());
    benches.push_back(std::make_unique<EdgeConvBench>());
    for (auto& b : benches) b->prepare(o);
    const int half = (o.repeats + 1) / 2;
    const auto tapir_round = [&] {
        for (auto& b : benches) bench::add_samples([&b] { b->step(); }, b->inner, half, o.wall, b->samples);
    };
    tapir_round();
    std::map<std::string, bench::Sample> best;
    std::map<std::string, std::string> best_label;
    std::string version;
    if (o.torch) {
        const std::string args = "--repeats " + std::to_string(o.repeats) + " --target " + (o.quick ? "0.005" : "0.02") + (o.wall ? " --wall" : "");
        for (const bench::TorchSetting& s : bench::torch_settings(o.quick)) {
            const auto lines = bench::run_peer(o.python, "torch_sets.py", args, s);
            for (const bench::PeerLine& p : lines) {
                version = p.version;
                std::printf("# PyTorch (%s) %s: %.1f us\n", s.label.c_str(), p.key.c_str(), p.t.median * 1e6);
                if (!(best.count(p.key) && best[p.key].median <= p.t.median)) best[p.key] = p.t, best_label[p.key] = s.label;
            }
            if (lines.empty()) {
                std::printf("PyTorch: not run (%s cannot import torch, or bench/torch_sets.py is missing)\n", o.python.c_str());
                break;
            }
        }
    }
    tapir_round();
    std::printf("\nSet and graph training steps (Adam, BCE with logits), 1 thread; time per step [us]; ratio = best PyTorch / tapir\n");
    std::printf("%-10s %12s %8s %14s %10s %10s\n", "model", "tapir", "allocs", "best PyTorch", "speedup", "target");
    std::ostringstream js;
    js << "{\"machine\": " << bench::machine_json() << ", \"load\": \"" << bench::load_average() << "\", \"clock\": \""
       << (o.wall ? "wall" : "process_cpu") << "\", \"torch\": \"" << version << "\", \"results\": [";
    for (std::size_t k = 0; k < benches.size(); ++k) {
        const bench::Sample t = bench::summarize(benches[k]->samples);
        const std::string& n = names[k];
        const double tb = best.count(n) ? best[n].median : NAN, speedup = tb / t.median, target = targets.at(n);
        std::printf("%-10s %12.1f %8lld %14.1f %9.2fx %6s%.1fx %s\n", n.c_str(), t.median * 1e6, benches[k]->allocs, tb * 1e6, speedup, ">=",
                    target, std::isnan(speedup) ? "" : (speedup >= target ? "met" : "MISSED"));
        js << (k ? ", " : "") << "{\"model\": \"" << n << "\", \"tapir_s\": {\"median\": " << t.median << ", \"min\": " << t.min
           << ", \"max\": " << t.max << "}, \"heap_allocations_per_step\": " << benches[k]->allocs << ", \"target\": " << target;
        if (!std::isnan(tb)) js << ", \"torch_best\": \"" << best_label[n] << "\", \"torch_s\": " << tb << ", \"speedup\": " << speedup;
        js << "}";
    }
    js << "], \"peak_rss_mib\": " << bench::peak_rss_mib() << "}\n";
    if (!o.json.empty()) std::ofstream(o.json) << js.str();
    return 0;
}
