// Scaling of data-parallel training: one Adam step of the 3x256 Higgs MLP (8 -> 256 -> 256 -> 256
// -> 1, ReLU, BCE with logits) at global batch 1024, on 1 and 2 workers: tapir threads
// (nn::DataParallel), tapir MPI ranks (distributed/mpi.hpp, when built with MPI: this program
// starts itself under mpirun -np 1 and -np 2), and PyTorch (bench/torch_ddp.py: 1 process with
// 1 thread, then DistributedDataParallel with the gloo backend on 2 processes of 1 thread each).
// Efficiency = speed-up / workers = t(1) / (workers t(workers)). Wall time (CPU time would count
// both workers): medians of samples of about 20 ms, so the figures need a quiet machine.
// Usage: bench_parallel [--quick] [--json FILE] [--python PYTHON] [--no-torch] [--no-mpi]
//        bench_parallel --mpi-worker REPEATS TARGET   (one rank of the MPI measurement; run by mpirun)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/autodiff/tape.hpp>
#include <tapir/loss/classification.hpp>
#include <tapir/nn/data_parallel.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#if TAPIR_BENCH_MPI
#include <tapir/distributed/mpi.hpp>
#endif

#include "harness.hpp"
#include "higgs_mlp.hpp"
#include "peer.hpp"

namespace {

using namespace tapir;

constexpr std::size_t hidden = 256, batch = 1024, batches = 16;

/// The network, optimiser and 16 batches, each cut into `parts` contiguous shards of rows.
struct Setup {
    Rng rng{1000 + hidden + batch};
    nn::Sequential<float> net = bench::higgs_mlp(hidden, rng);
    optim::Adam<float> opt{net.parameters(), 1e-3f};
    std::vector<std::vector<Tensor<float>>> xs, ys;  // [batch][shard]
    std::size_t next = 0;
    float sink = 0.0f;

    explicit Setup(std::size_t parts) {
        for (std::size_t k = 0; k < batches; ++k) {
            Tensor<float> x(Shape{batch, 8}), y(Shape{batch, 1});
            for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal());
            for (std::size_t i = 0; i < y.size(); ++i) y[i] = rng.uniform() < 0.5 ? 1.0f : 0.0f;
            xs.emplace_back();
            ys.emplace_back();
            for (std::size_t p = 0; p < parts; ++p) {
                const std::size_t b = batch * p / parts, e = batch * (p + 1) / parts;
                xs.back().emplace_back(Shape{e - b, 8}, x.data() + b * 8, (e - b) * 8);
                ys.back().emplace_back(Shape{e - b, 1}, y.data() + b, e - b);
            }
        }
    }
    std::size_t take() {
        const std::size_t k = next;
        next = next + 1 == batches ? 0 : next + 1;
        return k;
    }
};

bench::Sample time_step(const std::function<void()>& step, const bench::PeerOptions& o) {
    return bench::time_calls(step, o.repeats, o.quick ? 0.005 : 0.02, true);
}

/// tapir on `threads` threads (1: the plain single-tape step of bench_train).
bench::Sample tapir_threads(std::size_t threads, const bench::PeerOptions& o) {
    Setup s(threads);
    if (threads == 1) {
        Tape<float> tape;
        return time_step(
            [&] {
                const std::size_t k = s.take();
                tape.clear();
                const Var<float> l = bce_with_logits(s.net(tape.view(s.xs[k][0])), tape.view(s.ys[k][0]));
                backward(l);
                s.opt.step();
                s.opt.zero_grad();
                s.sink += l.item();
            },
            o);
    }
    nn::DataParallel<float> dp(s.net, threads);
    return time_step(
        [&] {
            const std::size_t k = s.take();
            s.sink += dp.run(batch, [&](nn::Shard<float>& sh) {
                Tape<float>& t = sh.tape();
                sh.backward(bce_with_logits(s.net(t.view(s.xs[k][sh.worker()])), t.view(s.ys[k][sh.worker()])));
            });
            s.opt.step();
            s.opt.zero_grad();
        },
        o);
}

#if TAPIR_BENCH_MPI
/// One rank of the MPI measurement: its shard of each global batch, gradients all-reduced.
/// Every rank runs the same number of steps (fixed by rank 0's calibration); rank 0 prints
/// "mpi RANKS MEDIAN MIN MAX".
int mpi_worker(int argc, char** argv, int repeats, double target) {
    distributed::Environment env(argc, argv);
    distributed::Communicator world;
    const auto ranks = static_cast<std::size_t>(world.size()), rank = static_cast<std::size_t>(world.rank());
    Setup s(ranks);
    distributed::DistributedDataParallel<float> ddp(world, s.net);
    Tape<float> tape;
    const std::size_t local = batch * (rank + 1) / ranks - batch * rank / ranks;
    auto step = [&] {
        const std::size_t k = s.take();
        s.sink += ddp.step(local, batch, [&] {
            tape.clear();
            const Var<float> l = bce_with_logits(s.net(tape.view(s.xs[k][rank])), tape.view(s.ys[k][rank]));
            backward(l);
            return l.item();
        });
        s.opt.step();
        s.opt.zero_grad();
    };
    double inner = static_cast<double>(bench::calibrate_inner(step, target, true));
    inner = world.max(inner);  // the same count on every rank
    std::vector<double> samples;
    for (int r = 0; r < repeats; ++r) {
        world.barrier();
        const double t0 = bench::clock_seconds(true);
        for (long i = 0; i < static_cast<long>(inner); ++i) step();
        samples.push_back(world.max(bench::clock_seconds(true) - t0) / inner);
    }
    const bench::Sample smp = bench::summarize(samples);
    if (rank == 0) std::printf("mpi %zu %.9g %.9g %.9g\n", ranks, smp.median, smp.min, smp.max);
    return 0;
}

bench::Sample run_mpi(int ranks, const bench::PeerOptions& o) {
    char self[4096] = {0};
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return {};
    const std::string cmd = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np " + std::to_string(ranks) +
                            " --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 '" + std::string(self) + "' --mpi-worker " + std::to_string(o.repeats) + " " +
                            (o.quick ? "0.005" : "0.02") + " 2>/dev/null";
    bench::Sample smp;
    if (std::FILE* p = popen(cmd.c_str(), "r")) {
        char buf[512];
        int r = 0;
        while (std::fgets(buf, sizeof buf, p))
            if (std::sscanf(buf, "mpi %d %lf %lf %lf", &r, &smp.median, &smp.min, &smp.max) == 4) break;
        pclose(p);
    }
    return smp;
}
#endif

struct Row {
    std::string who, family;  // family: rows compared with its 1-worker row
    std::size_t workers;
    bench::Sample t;
};

} // namespace

int main(int argc, char** argv) {
    bench::PeerOptions o;
    bool mpi = true;
    for (int i = 1; i < argc; ++i) {
        if (o.parse(i, argc, argv)) continue;
        const std::string a = argv[i];
        if (a == "--no-mpi") mpi = false;
#if TAPIR_BENCH_MPI
        else if (a == "--mpi-worker" && i + 2 < argc) return mpi_worker(argc, argv, std::atoi(argv[i + 1]), std::atof(argv[i + 2]));
#endif
        else {
            std::fprintf(stderr, "usage: bench_parallel [--quick] [--json FILE] [--python PYTHON] [--no-torch] [--no-mpi]\n");
            return 2;
        }
    }
    bench::print_machine();
    std::printf("# load average %s; wall time, medians of %d samples; 3x%zu MLP, Adam, global batch %zu\n", bench::load_average().c_str(),
                o.repeats, hidden, batch);
    std::fflush(stdout);
    std::vector<Row> rows;
    for (std::size_t w : {std::size_t(1), std::size_t(2)}) rows.push_back({"tapir threads", "threads", w, tapir_threads(w, o)});
#if TAPIR_BENCH_MPI
    if (mpi)
        for (int w : {1, 2}) {
            const bench::Sample s = run_mpi(w, o);
            if (std::isnan(s.median)) {
                std::printf("tapir MPI: not run (mpirun failed)\n");
                break;
            }
            rows.push_back({"tapir MPI ranks", "mpi", static_cast<std::size_t>(w), s});
        }
#else
    if (mpi) std::printf("tapir MPI: not built (no MPI found by CMake)\n");
#endif
    std::string torch_version;
    if (o.torch)
        for (int w : {1, 2}) {
            bench::Sample smp;
            char ver[128] = {0};
            int got = 0;
            const std::string args = "--workers " + std::to_string(w) + " --hidden " + std::to_string(hidden) + " --batch " +
                                     std::to_string(batch) + " --repeats " + std::to_string(o.repeats) + " --target " + (o.quick ? "0.005" : "0.02");
            for (const std::string& line : bench::run_peer_script(o.python, "torch_ddp.py", args, bench::TorchSetting{"as installed", ""})) {
                unsigned long ww = 0;
                if (std::sscanf(line.c_str(), "torch_ddp %lu %lf %lf %lf %127s", &ww, &smp.median, &smp.min, &smp.max, ver) == 5) got = 1;
            }
            if (!got) {
                std::printf("PyTorch: not run (%s cannot import torch, or torch_ddp.py failed)\n", o.python.c_str());
                break;
            }
            torch_version = ver;
            rows.push_back({w == 1 ? "PyTorch" : "PyTorch DDP gloo", "torch", static_cast<std::size_t>(w), smp});
        }

    std::printf("\n%-18s %8s %14s %10s %11s\n", "", "workers", "step [ms]", "speed-up", "efficiency");
    std::ostringstream js;
    js << "{\"machine\": " << bench::machine_json() << ", \"load\": \"" << bench::load_average() << "\", \"clock\": \"wall\", \"torch\": \""
       << torch_version << "\", \"hidden\": " << hidden << ", \"batch\": " << batch << ", \"results\": [";
    for (std::size_t k = 0; k < rows.size(); ++k) {
        const Row& r = rows[k];
        double t1 = NAN;
        for (const Row& q : rows)
            if (q.workers == 1 && q.family == r.family) t1 = q.t.median;
        const double speedup = t1 / r.t.median, eff = speedup / static_cast<double>(r.workers);
        std::printf("%-18s %8zu %14.2f %9.2fx %10.0f%%\n", r.who.c_str(), r.workers, r.t.median * 1e3, speedup, eff * 100);
        js << (k ? ", " : "") << "{\"who\": \"" << r.who << "\", \"workers\": " << r.workers << ", \"median_s\": " << r.t.median
           << ", \"min_s\": " << r.t.min << ", \"max_s\": " << r.t.max << ", \"efficiency\": " << eff << "}";
    }
    js << "]}\n";
    double tapir2 = NAN, torch2 = NAN, eff2 = NAN;
    for (const Row& r : rows) {
        if (r.workers == 2 && r.who == "tapir threads") tapir2 = r.t.median;
        if (r.workers == 2 && r.who == "PyTorch DDP gloo") torch2 = r.t.median;
    }
    for (const Row& r : rows)
        if (r.workers == 1 && r.who == "tapir threads") eff2 = r.t.median / (2 * tapir2);
    std::printf("\ntargets: efficiency at 2 threads >= 85%%: %s (%.0f%%); faster than PyTorch DDP at 2 workers: %s\n",
                eff2 >= 0.85 ? "met" : "MISSED", eff2 * 100,
                std::isnan(torch2) ? "not measured" : (tapir2 < torch2 ? "met" : "MISSED"));
    if (!o.json.empty()) std::ofstream(o.json) << js.str();
    return 0;
}
