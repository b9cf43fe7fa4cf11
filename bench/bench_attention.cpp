// One Adam training step of a 2-block Particle-Transformer-like tagger, single thread, side by side
// with the same step in PyTorch (bench/torch_attention.py under /usr/bin/python3, one thread).
//
// The model: 50 particles x 8 features, batch 32, padding mask (every jet has 20..50 particles),
// a constant pairwise bias (B, 8, 50, 50) standing in for ParT's interaction embedding; per-particle
// embedding Dense 8 -> 64 (GELU), two ParticleBlocks (E = 64, 8 heads, MLP 64-256-64), masked mean
// over the particles, Dense 64 -> 1, BCE from logits, Adam. Also reported: heap allocations per
// step in steady state (a counting global operator new; target 0).
// Times are medians of samples of about 50 ms in process CPU time; tapir's samples are taken in
// rounds between the PyTorch runs, so that both see the same spread of load.
// Usage: bench_attention [--quick] [--wall] [--json FILE] [--python PYTHON] [--no-torch] [--profile STEPS]
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gelu.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/nn/attention.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/random.hpp>

#include "alloc_count.hpp"
#include "harness.hpp"
#include "peer.hpp"

namespace {
using namespace tapir;

constexpr std::size_t kBatch = 32, kParticles = 50, kFeatures = 8, kEmbed = 64, kHeads = 8, kHidden = 256;

struct Model {
    nn::Dense<float> embed;
    nn::ParticleBlock<float> b1, b2;
    nn::Dense<float> head;
    explicit Model(Rng& rng)
        : embed(kFeatures, kEmbed, rng), b1(kEmbed, kHeads, kHidden, rng), b2(kEmbed, kHeads, kHidden, rng), head(kEmbed, 1, rng) {}
    std::vector<Parameter<float>*> parameters() {
        std::vector<Parameter<float>*> ps;
        for (nn::Module<float>* m : std::vector<nn::Module<float>*>{&embed, &b1, &b2, &head})
            for (auto* p : m->parameters()) ps.push_back(p);
        return ps;
    }
};

struct Bench {
    Rng rng{2202};
    Model model{rng};
    optim::Adam<float> opt{model.parameters(), 1e-3f};
    Tensor<float> x{Shape{kBatch, kParticles, kFeatures}}, mask{Shape{kBatch, kParticles}}, count{Shape{kBatch, 1}},
        bias{Shape{kBatch, kHeads, kParticles, kParticles}}, y{Shape{kBatch, 1}};
    Tape<float> tape;
    float sink = 0.0f;

    Bench() {
        for (auto& v : x) v = static_cast<float>(rng.normal());
        for (auto& v : bias) v = static_cast<float>(0.1 * rng.normal());
        for (std::size_t b = 0; b < kBatch; ++b) {
            const std::size_t n = 20 + static_cast<std::size_t>(rng.uniform_int(kParticles - 20 + 1));
            for (std::size_t i = 0; i < kParticles; ++i) mask(b, i) = i < n ? 1.0f : 0.0f;
            count(b, 0) = static_cast<float>(n);
            y(b, 0) = rng.uniform() < 0.5 ? 1.0f : 0.0f;
        }
    }
    void step() {
        tape.clear();
        const Var<float> m = tape.view(mask), u = tape.view(bias);
        Var<float> h = gelu(model.embed(reshape(tape.view(x), Shape{kBatch * kParticles, kFeatures})));
        h = reshape(h, Shape{kBatch, kParticles, kEmbed});
        h = model.b1.forward(h, m, u);
        h = model.b2.forward(h, m, u);
        const Var<float> pooled = div(sum(mul(h, reshape(m, Shape{kBatch, kParticles, 1})), 1), tape.view(count));  // (B, E)
        const Var<float> l = bce_with_logits(model.head(pooled), tape.view(y));
        backward(l);
        opt.step();
        opt.zero_grad();
        sink += l.item();
    }
};
} // namespace

int main(int argc, char** argv) {
    bench::PeerOptions o;
    long profile = 0;
    const bool args_ok = o.parse_args(argc, argv,
                                      "usage: bench_attention [--quick] [--wall] [--json FILE] [--python PYTHON] [--no-torch] "
                                      "[--profile STEPS]\n",
                                      [&](const std::string& a, int& i) {
                                          if (a != "--profile" || i + 1 >= argc) return false;
                                          profile = std::atol(argv[++i]);
                                          return true;
                                      });
    if (!args_ok) return 2;
    const bool quick = o.quick;
    Bench b;
    if (profile > 0) {
        for (long i = 0; i < profile; ++i) b.step();
        return b.sink == 12345.0f ? 1 : 0;
    }
    bench::print_machine();
    std::printf("# load average %s; process CPU time\n", bench::load_average().c_str());
    for (int i = 0; i < 3; ++i) b.step();
    long long allocs = 0;
    {
        const bench::AllocationScope scope;
        for (int i = 0; i < 5; ++i) b.step();
        allocs = scope.count();
    }
    const int repeats = quick ? 5 : 11;
    const double target = quick ? 0.02 : 0.05;
    const long inner = bench::calibrate_inner([&] { b.step(); }, target, o.wall);
    std::vector<double> samples;
    const auto round = [&] { bench::add_samples([&] { b.step(); }, inner, repeats / 2 + 1, o.wall, samples); };
    round();
    double best_torch = 0;
    std::string best_label;
    if (o.torch) {
        for (const bench::TorchSetting& s : bench::torch_settings(true)) {
            const std::string args = "--repeats " + std::to_string(repeats) + " --target " + std::to_string(target);
            for (const bench::PeerLine& p : bench::run_peer(o.python, "torch_attention.py", args, s)) {
                std::printf("PyTorch (%s): median %.1f us (min %.1f, max %.1f)\n", s.label.c_str(), p.t.median * 1e6, p.t.min * 1e6,
                            p.t.max * 1e6);
                if (best_torch == 0 || p.t.median < best_torch) best_torch = p.t.median, best_label = s.label;
            }
            round();
        }
    }
    const bench::Sample t = bench::summarize(samples);
    std::printf("tapir: median %.1f us (min %.1f, max %.1f) over %zu samples; heap allocations per step %lld\n", t.median * 1e6,
                t.min * 1e6, t.max * 1e6, samples.size(), (allocs + 4) / 5);
    if (best_torch > 0)
        std::printf("ParT-like 2 blocks, 50 x 8, batch 32: PyTorch best (%s) / tapir = %.2fx\n", best_label.c_str(), best_torch / t.median);
    else if (o.torch)
        std::printf("PyTorch: not run (%s cannot import torch)\n", o.python.c_str());
    if (!o.json.empty()) {
        std::ofstream js(o.json);
        js << "{\"machine\": " << bench::machine_json() << ", \"tapir_us\": " << t.median * 1e6 << ", \"torch_best_us\": " << best_torch * 1e6
           << ", \"torch_best\": \"" << best_label << "\", \"allocs_per_step\": " << (allocs + 4) / 5 << "}\n";
        if (!js) {
            std::fprintf(stderr, "cannot write %s\n", o.json.c_str());
            return 1;
        }
    }
    return 0;
}
