// The WGAN-GP training step of examples/wgan_gp (bench/wgan_gp.hpp), single thread: generator 16 -> 512 -> 1024 -> 512 -> 18 and
// critic 18 -> 512 -> 512 -> 512 -> 1 (ReLU), batch 128; 5 critic steps, each with the gradient
// penalty at random interpolates (the critic's input gradient recorded with create_graph and
// differentiated again: double backprop), then 1 generator step; Adam, lr 1e-4, betas (0.5, 0.9),
// lambda_gp 10. The same step as examples/wgan_gp, on a fixed pool of 4096 uniform "events"
// (timing does not depend on the data). Side by side with the same step in PyTorch
// (bench/torch_wgan.py under /usr/bin/python3, one thread), run as installed and tuned
// (OPENBLAS_CORETYPE=SkylakeX; glibc malloc thresholds raised; both); the ratio is against the
// fastest setting. Also reported: heap allocations per 5+1 step in steady state, peak RSS.
// Times are medians in process CPU time (or wall time with --wall).
// Usage: bench_wgan [--quick] [--wall] [--json FILE] [--python PYTHON] [--no-torch]
//        bench_wgan --profile STEPS   (runs only the steps, e.g. under valgrind --tool=callgrind)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/autodiff/tape.hpp>
#include <tapir/data/random.hpp>
#include <tapir/loss/gan.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>

#include "alloc_count.hpp"
#include "harness.hpp"
#include "peer.hpp"
#include "wgan_gp.hpp"

namespace {

using namespace tapir;
constexpr std::size_t kBatch = bench::wgan_batch, kFeatures = bench::wgan_features, kPool = bench::wgan_pool, kCritic = bench::wgan_critic_steps;
constexpr float kLr = bench::wgan_lr;

struct Options : bench::PeerOptions {
    int profile_steps = 0;  // --profile N: only run N steps (for callgrind)
};

struct TorchRun {
    std::string label, version;
    bench::Sample t;
    bool ok = false;
};

} // namespace

int main(int argc, char** argv) {
    Options o;
    const bool args_ok = o.parse_args(argc, argv,
                                      "usage: bench_wgan [--quick] [--wall] [--json FILE] [--python PYTHON] [--no-torch] | --profile STEPS\n",
                                      [&](const std::string& a, int& i) {
                                          if (a != "--profile" || i + 1 >= argc) return false;
                                          o.profile_steps = std::atoi(argv[++i]);
                                          return true;
                                      });
    if (!args_ok) return 2;
    bench::print_machine();
    std::printf("# load average %s; medians of about %d samples, %s time\n", bench::load_average().c_str(), o.repeats,
                o.wall ? "wall" : "process CPU");
    std::fflush(stdout);

    Rng rng(2002);
    bench::WganNets nets(rng);
    optim::Adam<float> opt_g(nets.gen.parameters(), kLr, 0.5f, 0.9f), opt_c(nets.critic.parameters(), kLr, 0.5f, 0.9f);
    Tensor<float> pool(Shape{kPool, kFeatures});
    for (std::size_t i = 0; i < pool.size(); ++i) pool[i] = static_cast<float>(rng.uniform());
    Tape<float> tape;
    bench::WganRows rows(kBatch);
    volatile float sink = 0.0f;

    const auto step = [&] {
        for (std::size_t k = 0; k < kCritic; ++k) {
            rows.draw(pool, rng);
            tape.clear();
            const Var<float> l = bench::wgan_critic_loss(tape, nets, rows);
            backward(l);
            opt_c.step();
            opt_c.zero_grad();
            sink = sink + l.item();
        }
        rows.draw_latent(rng);
        tape.clear();
        const Var<float> l_gen = bench::wgan_generator_loss(tape, nets, rows.z);
        backward(l_gen);
        opt_g.step();
        opt_g.zero_grad();
        // The critic's gradients from the generator pass are not used. Through its optimiser:
        // Module::zero_grad() builds the named parameter list (15 heap allocations per call).
        opt_c.zero_grad();
        sink = sink + l_gen.item();
    };

    if (o.profile_steps > 0) {
        for (int i = 0; i < o.profile_steps; ++i) step();
        return 0;
    }
    for (int i = 0; i < 3; ++i) step();
    long long allocs = 0;
    {
        const bench::AllocationScope scope;
        for (int i = 0; i < 3; ++i) step();
        allocs = (scope.count() + 2) / 3;
    }
    // tapir is timed in rounds interleaved with the PyTorch runs (before the first, between them,
    // after the last), its samples pooled: both sides then see the same spread of machine load.
    const std::vector<bench::TorchSetting> settings = o.torch ? bench::torch_settings(o.quick) : std::vector<bench::TorchSetting>{};
    const int rounds = static_cast<int>(settings.size()) + 1;
    const int per_round = std::max(3, (o.repeats + rounds - 1) / rounds);
    const long inner = bench::calibrate_inner(step, o.quick ? 0.05 : 0.2, o.wall);
    std::vector<double> samples;
    bench::add_samples(step, inner, per_round, o.wall, samples);
    std::vector<TorchRun> torch;
    for (const bench::TorchSetting& s : settings) {
        TorchRun r;
        r.label = s.label;
        const std::string args = "--repeats " + std::to_string(o.repeats) + " --target " + (o.quick ? "0.05" : "0.2") + (o.wall ? " --wall" : "");
        for (const bench::PeerLine& p : bench::run_peer(o.python, "torch_wgan.py", args, s)) r.ok = true, r.t = p.t, r.version = p.version;
        if (!r.ok) {
            std::printf("PyTorch (%s): not run (%s cannot import torch, or bench/torch_wgan.py is missing)\n", s.label.c_str(),
                        o.python.c_str());
            break;
        }
        torch.push_back(r);
        bench::add_samples(step, inner, per_round, o.wall, samples);
    }
    const bench::Sample t = bench::summarize(samples);
    const double rss = bench::peak_rss_mib();
    std::printf("# tapir: %zu samples in %zu rounds interleaved with the PyTorch runs\n", samples.size(), torch.size() + 1);

    std::printf("\nWGAN-GP (examples/wgan_gp): 5 critic steps with gradient penalty + 1 generator step, batch 128, 1 thread\n");
    std::printf("%-40s %12s %12s %12s\n", "path", "median [ms]", "min [ms]", "max [ms]");
    std::printf("%-40s %12.2f %12.2f %12.2f\n", "tapir", t.median * 1e3, t.min * 1e3, t.max * 1e3);
    double best = NAN;
    std::string best_label;
    for (const TorchRun& r : torch) {
        std::printf("%-40s %12.2f %12.2f %12.2f\n", ("PyTorch " + r.version + " (" + r.label + ")").c_str(), r.t.median * 1e3, r.t.min * 1e3,
                    r.t.max * 1e3);
        if (!(r.t.median >= best)) best = r.t.median, best_label = r.label;
    }
    std::printf("\nheap allocations per 5+1 step in steady state: %lld; peak RSS %.1f MiB\n", allocs, rss);
    if (!std::isnan(best))
        std::printf("tapir is %.2fx faster than PyTorch at its best (%s) (target >= 1.3x): %s\n", best / t.median, best_label.c_str(),
                    best / t.median >= 1.3 ? "met" : "MISSED");

    if (!o.json.empty()) {
        std::ofstream f(o.json);
        f << "{\"machine\": " << bench::machine_json() << ", \"load\": \"" << bench::load_average() << "\", \"clock\": \""
          << (o.wall ? "wall" : "process_cpu") << "\", \"tapir_s\": {\"median\": " << t.median << ", \"min\": " << t.min
          << ", \"max\": " << t.max << "}, \"heap_allocations_per_step\": " << allocs << ", \"peak_rss_mib\": " << rss << ", \"torch_s\": {";
        for (std::size_t i = 0; i < torch.size(); ++i)
            f << (i ? ", " : "") << "\"" << torch[i].label << "\": {\"median\": " << torch[i].t.median << ", \"min\": " << torch[i].t.min
              << ", \"max\": " << torch[i].t.max << "}";
        f << "}";
        if (!torch.empty()) f << ", \"torch\": \"" << torch.front().version << "\"";
        if (!std::isnan(best)) f << ", \"torch_best\": \"" << best_label << "\", \"speedup\": " << best / t.median << ", \"target\": 1.3";
        f << "}\n";
    }
    return 0;
}
