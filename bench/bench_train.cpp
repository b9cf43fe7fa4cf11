// One Adam training step of the Higgs MLPs (8 inputs, 3 hidden ReLU layers of 64 or of 256, one
// logit), at batch 32, 128 and 1024, single thread: forward, binary cross-entropy from logits,
// backward, optimiser step. Side by side with the same step in PyTorch (bench/torch_train.py
// under /usr/bin/python3, one thread), run as installed and tuned (OPENBLAS_CORETYPE=SkylakeX;
// glibc malloc thresholds raised; both); every ratio is against the fastest setting.
//
// tapir's step: tape.clear(), the Sequential of Dense layers (ReLU fused) on a view of the batch,
// bce_with_logits, backward, opt.step(), opt.zero_grad(). Each step takes the next of 16 batches
// (random inputs and labels, made once): the regime of real training, where the loss stays
// finite. --same-batch reuses one batch, as the benchmark did until 2026-12: the model then fits
// it, its gradients and Adam's moments go subnormal after ~1000 steps (the long-run regime). Also reported: heap allocations per
// step in steady state (a counting global operator new; target 0) and the process's peak RSS (all
// six configurations alive at once).
// Times are medians of samples of about 20 ms, in process CPU time (robust on a loaded machine;
// PyTorch is timed the same way) or wall time (--wall); tapir's samples are taken in rounds
// between the PyTorch runs, so that both see the same spread of load.
// Usage: bench_train [--quick] [--wall] [--json FILE] [--python PYTHON] [--no-torch]
//        bench_train --profile HIDDEN BATCH STEPS   (runs only the steps, e.g. under valgrind --tool=callgrind)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/autodiff/tape.hpp>
#include <tapir/data/random.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>

#include "alloc_count.hpp"
#include "harness.hpp"
#include "higgs_mlp.hpp"
#include "peer.hpp"

namespace {

using namespace tapir;

struct Options : bench::PeerOptions {
    bool same_batch = false;
    std::size_t profile_hidden = 0, profile_batch = 0, profile_steps = 0;  // --profile: steps only, for callgrind
};

struct Config {
    std::size_t hidden = 64, batch = 128;
    std::string key() const { return std::to_string(hidden) + "/" + std::to_string(batch); }
};

struct TapirResult {
    bench::Sample t;
    long long allocs_per_step = -1;
};

/// One configuration's network, optimiser, batch and tape, kept across the timing rounds.
struct TapirBench {
    Config c;
    Rng rng;
    nn::Sequential<float> net;
    optim::Adam<float> opt;
    std::vector<Tensor<float>> xs, ys;  // the batches, used in turn
    std::size_t next = 0;
    Tape<float> tape;
    float sink = 0.0f;
    long inner = 1;
    std::vector<double> samples;
    TapirResult r;

    TapirBench(const Config& cfg, std::size_t batches)
        : c(cfg), rng(1000 + cfg.hidden + cfg.batch), net(bench::higgs_mlp(cfg.hidden, rng)), opt(net.parameters(), 1e-3f) {
        for (std::size_t k = 0; k < batches; ++k) {
            Tensor<float> x(Shape{cfg.batch, 8}), y(Shape{cfg.batch, 1});
            for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal());
            for (std::size_t i = 0; i < y.size(); ++i) y[i] = rng.uniform() < 0.5 ? 1.0f : 0.0f;
            xs.push_back(std::move(x));
            ys.push_back(std::move(y));
        }
    }
    void step() {
        tape.clear();
        const Tensor<float>& x = xs[next];
        const Tensor<float>& y = ys[next];
        next = next + 1 == xs.size() ? 0 : next + 1;
        const Var<float> logits = net(tape.view(x));
        const Var<float> l = bce_with_logits(logits, tape.view(y));
        backward(l);
        opt.step();
        opt.zero_grad();
        sink += l.item();
    }
    /// Warm-up, heap allocations per steady-state step, and the calls per timing sample.
    void prepare(const Options& o) {
        for (int i = 0; i < 5; ++i) step();  // steady state: the tape's arena and Adam's moments exist
        const int n = 20;
        const bench::AllocationScope scope;
        for (int i = 0; i < n; ++i) step();
        const long long count = scope.count();
        r.allocs_per_step = count / n + (count % n ? 1 : 0);  // round up: any allocation shows
        inner = bench::calibrate_inner([this] { step(); }, o.quick ? 0.005 : 0.02, o.wall);
    }
    void round(int repeats, const Options& o) {
        bench::add_samples([this] { step(); }, inner, repeats, o.wall, samples);
    }
};

struct TorchRun {
    std::string label, version;
    std::map<std::string, bench::Sample> t;  // by config key
};

/// torch_train.py prints "torch_train HIDDEN BATCH MEDIAN MIN MAX VERSION" per configuration.
TorchRun run_torch(const bench::TorchSetting& s, const std::vector<Config>& cs, const Options& o) {
    TorchRun r;
    r.label = s.label;
    std::set<std::size_t> hs, bs;
    for (const Config& c : cs) hs.insert(c.hidden), bs.insert(c.batch);
    std::string hidden, batch;
    for (std::size_t h : hs) hidden += (hidden.empty() ? "" : ",") + std::to_string(h);
    for (std::size_t b : bs) batch += (batch.empty() ? "" : ",") + std::to_string(b);
    const std::string args = "--hidden " + hidden + " --batch " + batch + " --repeats " + std::to_string(o.repeats) +
                             " --target " + (o.quick ? "0.005" : "0.02") + (o.wall ? " --wall" : "") +
                             (o.same_batch ? " --same-batch" : "");
    for (const bench::PeerLine& p : bench::run_peer(o.python, "torch_train.py", args, s)) {
        r.t[p.key] = p.t;  // "hidden/batch"
        r.version = p.version;
    }
    return r;
}

} // namespace

int main(int argc, char** argv) {
    Options o;
    const bool args_ok = o.parse_args(
        argc, argv,
        "usage: bench_train [--quick] [--wall] [--same-batch] [--json FILE] [--python PYTHON] [--no-torch]\n"
        "       bench_train --profile HIDDEN BATCH STEPS   (only runs the steps: for callgrind)\n",
        [&](const std::string& a, int& i) {
            if (a == "--same-batch") return o.same_batch = true;
            if (a != "--profile" || i + 3 >= argc) return false;
            o.profile_hidden = std::strtoul(argv[i + 1], nullptr, 10);
            o.profile_batch = std::strtoul(argv[i + 2], nullptr, 10);
            o.profile_steps = std::strtoul(argv[i + 3], nullptr, 10);
            i += 3;
            return true;
        });
    if (!args_ok) return 2;
    if (o.profile_steps) {
        TapirBench t(Config{o.profile_hidden, o.profile_batch}, o.same_batch ? 1 : 16);
        for (std::size_t i = 0; i < o.profile_steps; ++i) t.step();
        return t.sink == 12345.0f ? 1 : 0;
    }
    std::vector<Config> cs;
    for (std::size_t h : {std::size_t(64), std::size_t(256), std::size_t(1024)})
        for (std::size_t b : {std::size_t(32), std::size_t(128), std::size_t(1024)}) cs.push_back(Config{h, b});

    bench::print_machine();
    std::printf("# load average %s; medians of about %d samples, %s time; %s\n", bench::load_average().c_str(), o.repeats,
                o.wall ? "wall" : "process CPU",
                o.same_batch ? "one batch reused (the long-run regime: subnormal gradients)" : "16 batches in turn");
    std::fflush(stdout);

    // tapir is timed in rounds interleaved with the PyTorch runs (before the first, between them,
    // after the last), its samples pooled: both sides then see the same spread of machine load.
    std::vector<std::unique_ptr<TapirBench>> benches;
    for (const Config& c : cs) {
        benches.push_back(std::make_unique<TapirBench>(c, o.same_batch ? 1 : 16));
        benches.back()->prepare(o);
    }
    const std::vector<bench::TorchSetting> settings = o.torch ? bench::torch_settings(o.quick) : std::vector<bench::TorchSetting>{};
    const int rounds = static_cast<int>(settings.size()) + 1;
    const int per_round = std::max(3, (o.repeats + rounds - 1) / rounds);
    const auto tapir_round = [&] {
        for (auto& b : benches) b->round(per_round, o);
    };
    tapir_round();
    std::vector<TorchRun> torch;
    for (const bench::TorchSetting& s : settings) {
        TorchRun r = run_torch(s, cs, o);
        if (r.t.empty()) {
            std::printf("PyTorch (%s): not run (%s cannot import torch, or bench/torch_train.py is missing)\n", s.label.c_str(),
                        o.python.c_str());
            break;
        }
        torch.push_back(r);
        tapir_round();
    }
    std::map<std::string, TapirResult> tp;
    for (auto& b : benches) {
        b->r.t = bench::summarize(b->samples);
        tp[b->c.key()] = b->r;
    }
    std::printf("# tapir: %zu samples per configuration, in %zu rounds interleaved with the PyTorch runs\n",
                benches.front()->samples.size(), torch.size() + 1);

    std::printf("\nHiggs MLP training step (Adam, BCE with logits), 1 thread; time per step [us]; ratio = best PyTorch / tapir\n");
    std::printf("%-12s %6s %12s %10s", "model", "batch", "tapir", "allocs");
    for (const TorchRun& r : torch) std::printf(" %24s", ("PyTorch " + r.label).c_str());
    std::printf(" %10s %8s\n", "speedup", "target");
    std::ostringstream js;
    js << "{\"machine\": " << bench::machine_json() << ", \"load\": \"" << bench::load_average() << "\", \"clock\": \""
       << (o.wall ? "wall" : "process_cpu") << "\", \"batches\": \"" << (o.same_batch ? "same" : "16 in turn")
       << "\", \"torch\": \"" << (torch.empty() ? "" : torch.front().version) << "\", \"results\": [";
    bool all_met = true;
    for (std::size_t k = 0; k < cs.size(); ++k) {
        const Config& c = cs[k];
        const TapirResult& t = tp[c.key()];
        double best = NAN;
        std::string best_label;
        std::printf("%-12s %6zu %12.1f %10lld", ("3x" + std::to_string(c.hidden)).c_str(), c.batch, t.t.median * 1e6,
                    t.allocs_per_step);
        for (const TorchRun& r : torch) {
            const auto it = r.t.find(c.key());
            if (it == r.t.end()) {
                std::printf(" %24s", "-");
                continue;
            }
            std::printf(" %24.1f", it->second.median * 1e6);
            if (!(it->second.median >= best)) best = it->second.median, best_label = r.label;
        }
        double target = 0;
        if (c.hidden == 64 && c.batch == 128) target = 8;
        if (c.hidden == 64 && c.batch == 1024) target = 2;
        if (c.hidden == 256 && c.batch == 1024) target = 1.2;
        if (c.hidden == 1024 && c.batch == 1024) target = 1.2;
        if (o.same_batch) target = 0;  // the targets are for the regime of real training
        const double speedup = best / t.t.median;
        char tgt[32] = "-";
        if (target > 0 && !std::isnan(best)) {
            std::snprintf(tgt, sizeof tgt, ">=%.1fx %s", target, speedup >= target ? "met" : "MISSED");
            all_met = all_met && speedup >= target;
        }
        std::printf(" %9.2fx %8s\n", speedup, tgt);
        js << (k ? ", " : "") << "{\"hidden\": " << c.hidden << ", \"layers\": 3, \"batch\": " << c.batch
           << ", \"tapir_s\": {\"median\": " << t.t.median << ", \"min\": " << t.t.min << ", \"max\": " << t.t.max
           << "}, \"heap_allocations_per_step\": " << t.allocs_per_step << ", \"torch_s\": {";
        bool first = true;
        for (const TorchRun& r : torch) {
            const auto it = r.t.find(c.key());
            if (it == r.t.end()) continue;
            js << (first ? "" : ", ") << "\"" << r.label << "\": {\"median\": " << it->second.median << ", \"min\": " << it->second.min
               << ", \"max\": " << it->second.max << "}";
            first = false;
        }
        js << "}";
        if (!std::isnan(best)) js << ", \"torch_best\": \"" << best_label << "\", \"speedup\": " << speedup;
        if (target > 0) js << ", \"target\": " << target;
        js << "}";
    }
    js << "], \"peak_rss_mib\": " << bench::peak_rss_mib() << "}\n";
    long long max_allocs = 0;
    for (const auto& kv : tp) max_allocs = std::max(max_allocs, kv.second.allocs_per_step);
    std::printf("\nheap allocations per steady-state step (target 0): %lld at most; peak RSS of this process %.1f MiB\n", max_allocs,
                bench::peak_rss_mib());
    if (!torch.empty()) std::printf("speed targets: %s\n", all_met ? "all met" : "NOT all met");
    if (!o.json.empty()) std::ofstream(o.json) << js.str();
    return 0;
}
