// One Adam training step of a recurrent classifier: an LSTM or a GRU (7 features, 20 steps, hidden
// 64, batch 128, float32), its last hidden state into Dense(64 -> 1), binary cross-entropy from
// logits, single thread. Side by side with the same step in PyTorch (bench/torch_recurrent.py
// under /usr/bin/python3, one thread: torch.nn.LSTM/GRU with batch_first), in the settings of
// bench_train (as installed, SkylakeX OpenBLAS, malloc tuned, both); the ratio is against the
// fastest. Target (issue 18): at least 3x.
//
// tapir's step: tape.clear(), the layer (one fused recurrent node, one GEMM per step) and the
// Dense head on a view of the batch, bce_with_logits, backward (the fused BPTT kernel), opt.step(),
// opt.zero_grad(). Also reported: heap allocations per step in steady state (target 0).
// Times are medians of samples of about 20 ms in process CPU time (or wall time, --wall); tapir's
// samples are taken in rounds between the PyTorch runs, so both see the same spread of load.
// Usage: bench_recurrent [--quick] [--wall] [--json FILE] [--python PYTHON] [--no-torch]
//        bench_recurrent --profile lstm|gru STEPS   (runs only the steps, e.g. under valgrind --tool=callgrind)
#include <algorithm>
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
#include <tapir/autodiff/tape.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/recurrent.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/random.hpp>

#include "alloc_count.hpp"
#include "harness.hpp"
#include "peer.hpp"

namespace {

using namespace tapir;

constexpr std::size_t kSteps = 20, kFeatures = 7, kHidden = 64, kBatch = 128;

struct Options : bench::PeerOptions {
    std::string profile_cell;
    std::size_t profile_steps = 0;
};

std::unique_ptr<nn::RecurrentLayer<float>> make_layer(const std::string& cell, Rng& rng) {
    if (cell == "lstm") return std::make_unique<nn::LSTM<float>>(kFeatures, kHidden, rng);
    return std::make_unique<nn::GRU<float>>(kFeatures, kHidden, rng);
}

struct TapirBench {
    std::string cell;
    Rng rng;
    std::unique_ptr<nn::RecurrentLayer<float>> rec;
    nn::Dense<float> head;
    std::vector<Parameter<float>*> params;
    optim::Adam<float> opt;
    Tensor<float> x, y;
    Tape<float> tape;
    float sink = 0.0f;
    long inner = 1;
    std::vector<double> samples;
    bench::Sample t;
    long long allocs_per_step = -1;

    static std::vector<Parameter<float>*> all(nn::Module<float>& a, nn::Module<float>& b) {
        std::vector<Parameter<float>*> p = a.parameters();
        for (auto* q : b.parameters()) p.push_back(q);
        return p;
    }
    explicit TapirBench(const std::string& c)
        : cell(c), rng(7), rec(make_layer(c, rng)), head(kHidden, 1, rng), params(all(*rec, head)), opt(params, 1e-3f),
          x(Shape{kBatch, kSteps, kFeatures}), y(Shape{kBatch, 1}) {
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal());
        for (std::size_t i = 0; i < y.size(); ++i) y[i] = rng.uniform() < 0.5 ? 1.0f : 0.0f;
    }
    void step() {
        tape.clear();
        const Var<float> logits = head(rec->forward(tape.view(x)));
        const Var<float> l = bce_with_logits(logits, tape.view(y));
        backward(l);
        opt.step();
        opt.zero_grad();
        sink += l.item();
    }
    void prepare(const Options& o) {
        for (int i = 0; i < 5; ++i) step();
        const int n = 20;
        const bench::AllocationScope scope;
        for (int i = 0; i < n; ++i) step();
        const long long count = scope.count();
        allocs_per_step = count / n + (count % n ? 1 : 0);
        inner = bench::calibrate_inner([this] { step(); }, o.quick ? 0.005 : 0.02, o.wall);
    }
    void round(int repeats, const Options& o) { bench::add_samples([this] { step(); }, inner, repeats, o.wall, samples); }
};

struct TorchRun {
    std::string label, version;
    std::map<std::string, bench::Sample> t;  // by cell
};

TorchRun run_torch(const bench::TorchSetting& s, const Options& o) {
    TorchRun r;
    r.label = s.label;
    const std::string args = "--cells lstm,gru --steps " + std::to_string(kSteps) + " --features " + std::to_string(kFeatures) +
                             " --hidden " + std::to_string(kHidden) + " --batch " + std::to_string(kBatch) + " --repeats " +
                             std::to_string(o.repeats) + " --target " + (o.quick ? "0.005" : "0.02") + (o.wall ? " --wall" : "");
    for (const bench::PeerLine& p : bench::run_peer(o.python, "torch_recurrent.py", args, s)) {
        r.t[p.key] = p.t;  // by cell
        r.version = p.version;
    }
    return r;
}

} // namespace

int main(int argc, char** argv) {
    Options o;
    const bool args_ok = o.parse_args(argc, argv,
                                      "usage: bench_recurrent [--quick] [--wall] [--json FILE] [--python PYTHON] [--no-torch]\n"
                                      "       bench_recurrent --profile lstm|gru STEPS   (only runs the steps: for callgrind)\n",
                                      [&](const std::string& a, int& i) {
                                          if (a != "--profile" || i + 2 >= argc) return false;
                                          o.profile_cell = argv[i + 1];
                                          o.profile_steps = std::strtoul(argv[i + 2], nullptr, 10);
                                          i += 2;
                                          return true;
                                      });
    if (!args_ok) return 2;
    if (o.profile_steps) {
        TapirBench b(o.profile_cell);
        for (std::size_t i = 0; i < o.profile_steps; ++i) b.step();
        return b.sink == 12345.0f ? 1 : 0;
    }
    bench::print_machine();
    std::printf("# load average %s; medians of about %d samples, %s time\n", bench::load_average().c_str(), o.repeats,
                o.wall ? "wall" : "process CPU");
    std::fflush(stdout);

    std::vector<std::unique_ptr<TapirBench>> benches;
    for (const char* c : {"lstm", "gru"}) {
        benches.push_back(std::make_unique<TapirBench>(c));
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
        TorchRun r = run_torch(s, o);
        if (r.t.empty()) {
            std::printf("PyTorch (%s): not run (%s cannot import torch, or bench/torch_recurrent.py is missing)\n", s.label.c_str(),
                        o.python.c_str());
            break;
        }
        torch.push_back(r);
        tapir_round();
    }
    for (auto& b : benches) b->t = bench::summarize(b->samples);

    std::printf("\nRecurrent classifier training step (%zu steps x %zu features, hidden %zu, batch %zu, last state -> Dense 1, "
                "Adam, BCE with logits), 1 thread; time per step [us]; ratio = best PyTorch / tapir\n",
                kSteps, kFeatures, kHidden, kBatch);
    std::printf("%-6s %12s %8s", "cell", "tapir", "allocs");
    for (const TorchRun& r : torch) std::printf(" %24s", ("PyTorch " + r.label).c_str());
    std::printf(" %10s %12s\n", "speedup", "target");
    std::ostringstream js;
    js << "{\"machine\": " << bench::machine_json() << ", \"load\": \"" << bench::load_average() << "\", \"clock\": \""
       << (o.wall ? "wall" : "process_cpu") << "\", \"torch\": \"" << (torch.empty() ? "" : torch.front().version) << "\", \"results\": [";
    bool all_met = true;
    const double target = 3.0;
    for (std::size_t k = 0; k < benches.size(); ++k) {
        const TapirBench& b = *benches[k];
        double best = NAN;
        std::string best_label;
        std::printf("%-6s %12.1f %8lld", b.cell.c_str(), b.t.median * 1e6, b.allocs_per_step);
        for (const TorchRun& r : torch) {
            const auto it = r.t.find(b.cell);
            if (it == r.t.end()) {
                std::printf(" %24s", "-");
                continue;
            }
            std::printf(" %24.1f", it->second.median * 1e6);
            if (!(it->second.median >= best)) best = it->second.median, best_label = r.label;
        }
        const double speedup = best / b.t.median;
        char tgt[32] = "-";
        if (!std::isnan(best)) {
            std::snprintf(tgt, sizeof tgt, ">=%.0fx %s", target, speedup >= target ? "met" : "MISSED");
            all_met = all_met && speedup >= target;
        }
        std::printf(" %9.2fx %12s\n", speedup, tgt);
        js << (k ? ", " : "") << "{\"cell\": \"" << b.cell << "\", \"steps\": " << kSteps << ", \"features\": " << kFeatures
           << ", \"hidden\": " << kHidden << ", \"batch\": " << kBatch << ", \"tapir_s\": {\"median\": " << b.t.median
           << ", \"min\": " << b.t.min << ", \"max\": " << b.t.max << "}, \"heap_allocations_per_step\": " << b.allocs_per_step
           << ", \"torch_s\": {";
        bool first = true;
        for (const TorchRun& r : torch) {
            const auto it = r.t.find(b.cell);
            if (it == r.t.end()) continue;
            js << (first ? "" : ", ") << "\"" << r.label << "\": {\"median\": " << it->second.median << ", \"min\": " << it->second.min
               << ", \"max\": " << it->second.max << "}";
            first = false;
        }
        js << "}";
        if (!std::isnan(best)) js << ", \"torch_best\": \"" << best_label << "\", \"speedup\": " << speedup;
        js << ", \"target\": " << target << "}";
    }
    js << "], \"peak_rss_mib\": " << bench::peak_rss_mib() << "}\n";
    if (!torch.empty()) std::printf("speed targets: %s\n", all_met ? "all met" : "NOT all met");
    if (!o.json.empty()) std::ofstream(o.json) << js.str();
    return 0;
}
