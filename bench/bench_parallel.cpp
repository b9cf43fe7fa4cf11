// Scaling of data-parallel training on 1 and 2 workers: tapir threads (nn::DataParallel), tapir
// MPI ranks (distributed/mpi.hpp, when built with MPI: this program starts itself under mpirun
// -np 1 and -np 2), and PyTorch (bench/torch_ddp.py: 1 process with 1 thread, then
// DistributedDataParallel with the gloo backend on 2 processes of 1 thread each). Two steps:
//   mlp:  one Adam step of the 3x256 Higgs MLP (8 -> 256 -> 256 -> 256 -> 1, ReLU, BCE with
//         logits) at global batch 1024;
//   wgan: the WGAN-GP step of bench_wgan (bench/wgan_gp.hpp: 5 critic steps with the gradient
//         penalty, then 1 generator step) at global batch 128, each worker generating, scoring
//         and penalising its share of the events; the critic's gradients from the generator step
//         are computed and not reduced (as on one worker).
// Efficiency = speed-up / workers = t(1) / (workers t(workers)). Wall time (CPU time would count
// both workers): medians of samples of about 20 ms (mlp) or 200 ms (wgan), so the figures need
// a quiet machine.
// Usage: bench_parallel [--quick] [--json FILE] [--python PYTHON] [--no-torch] [--no-mpi] [--step mlp|wgan|both]
//        bench_parallel --mpi-worker STEP REPEATS TARGET   (one rank of the MPI measurement; run by mpirun)
#include <algorithm>
#include <cmath>
#include <cstdint>
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
#include <tapir/simd/arch.hpp>
#if TAPIR_BENCH_MPI
#include <tapir/distributed/mpi.hpp>
#endif

#include "harness.hpp"
#include "higgs_mlp.hpp"
#include "peer.hpp"
#include "wgan_gp.hpp"

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

/// Seconds per timed sample: about 20 ms for the MLP step, 200 ms for the WGAN-GP step.
std::string target(const std::string& which, const bench::PeerOptions& o) {
    if (which == "wgan") return o.quick ? "0.05" : "0.2";
    return o.quick ? "0.005" : "0.02";
}

bench::Sample time_step(const std::function<void()>& step, const bench::PeerOptions& o) {
    return bench::time_calls(step, o.repeats, o.quick ? 0.005 : 0.02, true);
}

/// simd::num_threads() = n while it lives: the workers' optimiser step (elementwise, the same
/// bits on any thread count) is then split over the same threads as the data-parallel step.
struct ThreadsFor {
    unsigned before = simd::num_threads();
    explicit ThreadsFor(std::size_t n) { simd::set_num_threads(static_cast<unsigned>(n)); }
    ~ThreadsFor() { simd::set_num_threads(before); }
    ThreadsFor(const ThreadsFor&) = delete;
    ThreadsFor& operator=(const ThreadsFor&) = delete;
};

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
    const ThreadsFor simd_threads(threads);  // the optimiser step too
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

/// The WGAN-GP step's state: networks, optimisers, pool, and one set of rows per worker (the
/// shares of a global batch of wgan_batch events).
struct Wgan {
    Rng rng{2002};
    bench::WganNets nets{rng};
    optim::Adam<float> opt_g{nets.gen.parameters(), bench::wgan_lr, 0.5f, 0.9f}, opt_c{nets.critic.parameters(), bench::wgan_lr, 0.5f, 0.9f};
    Tensor<float> pool{Shape{bench::wgan_pool, bench::wgan_features}};
    std::vector<bench::WganRows> rows;
    float sink = 0.0f;

    /// `parts` shares of the batch (threads), or only share `only` of them (one MPI rank).
    Wgan(std::size_t parts, std::size_t only = SIZE_MAX) {
        for (std::size_t i = 0; i < pool.size(); ++i) pool[i] = static_cast<float>(rng.uniform());
        for (std::size_t p = 0; p < parts; ++p)
            if (only == SIZE_MAX || p == only) rows.emplace_back(bench::wgan_batch * (p + 1) / parts - bench::wgan_batch * p / parts);
    }
};

bench::Sample time_wgan(const std::function<void()>& step, const bench::PeerOptions& o) {
    return bench::time_calls(step, o.repeats, o.quick ? 0.05 : 0.2, true);
}

/// The WGAN-GP step on `threads` threads (1: bench_wgan's single-tape step).
bench::Sample wgan_threads(std::size_t threads, const bench::PeerOptions& o) {
    Wgan w(threads);
    if (threads == 1) {
        Tape<float> tape;
        bench::WganRows& r = w.rows[0];
        return time_wgan(
            [&] {
                for (std::size_t k = 0; k < bench::wgan_critic_steps; ++k) {
                    r.draw(w.pool, w.rng);
                    tape.clear();
                    const Var<float> l = bench::wgan_critic_loss(tape, w.nets, r);
                    backward(l);
                    w.opt_c.step();
                    w.opt_c.zero_grad();
                    w.sink += l.item();
                }
                r.draw_latent(w.rng);
                tape.clear();
                const Var<float> l = bench::wgan_generator_loss(tape, w.nets, r.z);
                backward(l);
                w.opt_g.step();
                w.opt_g.zero_grad();
                w.opt_c.zero_grad();
                w.sink += l.item();
            },
            o);
    }
    // The generator step records the critic's parameters too: its workers keep their gradients
    // (added, then dropped with opt_c.zero_grad(), as on one thread).
    std::vector<Parameter<float>*> both = w.nets.gen.parameters();
    for (Parameter<float>* p : w.nets.critic.parameters()) both.push_back(p);
    nn::DataParallel<float> dp_c(w.nets.critic, threads), dp_g(both, threads);
    const ThreadsFor simd_threads(threads);  // the optimiser steps too
    return time_wgan(
        [&] {
            for (std::size_t k = 0; k < bench::wgan_critic_steps; ++k) {
                for (bench::WganRows& r : w.rows) r.draw(w.pool, w.rng);
                w.sink += dp_c.run(bench::wgan_batch,
                                   [&](nn::Shard<float>& sh) { sh.backward(bench::wgan_critic_loss(sh.tape(), w.nets, w.rows[sh.worker()])); });
                w.opt_c.step();
                w.opt_c.zero_grad();
            }
            for (bench::WganRows& r : w.rows) r.draw_latent(w.rng);
            w.sink += dp_g.run(bench::wgan_batch,
                               [&](nn::Shard<float>& sh) { sh.backward(bench::wgan_generator_loss(sh.tape(), w.nets, w.rows[sh.worker()].z)); });
            w.opt_g.step();
            w.opt_g.zero_grad();
            w.opt_c.zero_grad();
        },
        o);
}

#if TAPIR_BENCH_MPI
/// Times a step on every rank: the same number of steps per sample everywhere (rank 0's
/// calibration), the sample is the slowest rank's time per step; rank 0 prints
/// "mpi RANKS MEDIAN MIN MAX".
int time_mpi(const distributed::Communicator& world, const std::function<void()>& step, int repeats, double target) {
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
    if (world.rank() == 0) std::printf("mpi %d %.9g %.9g %.9g\n", world.size(), smp.median, smp.min, smp.max);
    return 0;
}

/// One rank of the WGAN-GP measurement: its share of each global batch (its own random rows),
/// the critic's and then the generator's gradients all-reduced.
int mpi_wgan_worker(const distributed::Communicator& world, int repeats, double target) {
    const auto ranks = static_cast<std::size_t>(world.size()), rank = static_cast<std::size_t>(world.rank());
    Wgan w(ranks, rank);
    Rng data_rng(77 + rank);
    distributed::DistributedDataParallel<float> ddp_c(world, w.nets.critic), ddp_g(world, w.nets.gen);
    Tape<float> tape;
    bench::WganRows& r = w.rows[0];
    const std::size_t local = r.rows();
    return time_mpi(
        world,
        [&] {
            for (std::size_t k = 0; k < bench::wgan_critic_steps; ++k) {
                r.draw(w.pool, data_rng);
                w.sink += ddp_c.step(local, bench::wgan_batch, [&] {
                    tape.clear();
                    const Var<float> l = bench::wgan_critic_loss(tape, w.nets, r);
                    backward(l);
                    return l.item();
                });
                w.opt_c.step();
                w.opt_c.zero_grad();
            }
            r.draw_latent(data_rng);
            w.sink += ddp_g.step(local, bench::wgan_batch, [&] {
                tape.clear();
                const Var<float> l = bench::wgan_generator_loss(tape, w.nets, r.z);
                backward(l);
                return l.item();
            });
            w.opt_g.step();
            w.opt_g.zero_grad();
            w.opt_c.zero_grad();
        },
        repeats, target);
}

/// One rank of the MPI measurement: its shard of each global batch, gradients all-reduced.
int mpi_worker(int argc, char** argv, const std::string& which, int repeats, double target) {
    distributed::Environment env(argc, argv);
    distributed::Communicator world;
    if (which == "wgan") return mpi_wgan_worker(world, repeats, target);
    const auto ranks = static_cast<std::size_t>(world.size()), rank = static_cast<std::size_t>(world.rank());
    Setup s(ranks);
    distributed::DistributedDataParallel<float> ddp(world, s.net);
    Tape<float> tape;
    const std::size_t local = batch * (rank + 1) / ranks - batch * rank / ranks;
    return time_mpi(
        world,
        [&] {
            const std::size_t k = s.take();
            s.sink += ddp.step(local, batch, [&] {
                tape.clear();
                const Var<float> l = bce_with_logits(s.net(tape.view(s.xs[k][rank])), tape.view(s.ys[k][rank]));
                backward(l);
                return l.item();
            });
            s.opt.step();
            s.opt.zero_grad();
        },
        repeats, target);
}

bench::Sample run_mpi(const std::string& which, int ranks, const bench::PeerOptions& o) {
    char self[4096] = {0};
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return {};
    const std::string cmd = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np " + std::to_string(ranks) +
                            " --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 '" + std::string(self) + "' --mpi-worker " + which + " " +
                            std::to_string(o.repeats) + " " + target(which, o) + " 2>/dev/null";
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
    std::string step, who, family;  // family: rows compared with the 1-worker row of its step
    std::size_t workers;
    bench::Sample t;
};

} // namespace

int main(int argc, char** argv) {
    bench::PeerOptions o;
    bool mpi = true;
    std::vector<std::string> steps{"mlp", "wgan"};
    for (int i = 1; i < argc; ++i) {
        if (o.parse(i, argc, argv)) continue;
        const std::string a = argv[i];
        if (a == "--no-mpi") mpi = false;
        else if (a == "--step" && i + 1 < argc && (std::string(argv[i + 1]) == "mlp" || std::string(argv[i + 1]) == "wgan"))
            steps = {argv[++i]};
        else if (a == "--step" && i + 1 < argc && std::string(argv[i + 1]) == "both") ++i;
#if TAPIR_BENCH_MPI
        else if (a == "--mpi-worker" && i + 3 < argc) return mpi_worker(argc, argv, argv[i + 1], std::atoi(argv[i + 2]), std::atof(argv[i + 3]));
#endif
        else {
            std::fprintf(stderr, "usage: bench_parallel [--quick] [--json FILE] [--python PYTHON] [--no-torch] [--no-mpi] [--step mlp|wgan|both]\n");
            return 2;
        }
    }
    bench::print_machine();
    std::printf("# load average %s; wall time, medians of %d samples; mlp: 3x%zu MLP, Adam, global batch %zu; wgan: WGAN-GP 5+1 step, "
                "global batch %zu\n",
                bench::load_average().c_str(), o.repeats, hidden, batch, bench::wgan_batch);
    std::fflush(stdout);
    std::vector<Row> rows;
    std::string torch_version;
    for (const std::string& step : steps) {
        for (std::size_t w : {std::size_t(1), std::size_t(2)})
            rows.push_back({step, "tapir threads", "threads", w, step == "wgan" ? wgan_threads(w, o) : tapir_threads(w, o)});
#if TAPIR_BENCH_MPI
        if (mpi)
            for (int w : {1, 2}) {
                const bench::Sample s = run_mpi(step, w, o);
                if (std::isnan(s.median)) {
                    std::printf("tapir MPI: not run (mpirun failed)\n");
                    break;
                }
                rows.push_back({step, "tapir MPI ranks", "mpi", static_cast<std::size_t>(w), s});
            }
#else
        if (mpi) std::printf("tapir MPI: not built (no MPI found by CMake)\n");
#endif
        if (o.torch)
            for (int w : {1, 2}) {
                bench::Sample smp;
                char ver[128] = {0};
                int got = 0;
                const std::string args = "--model " + step + " --workers " + std::to_string(w) + " --hidden " + std::to_string(hidden) +
                                         " --batch " + std::to_string(step == "wgan" ? bench::wgan_batch : batch) + " --repeats " +
                                         std::to_string(o.repeats) + " --target " + target(step, o);
                for (const std::string& line : bench::run_peer_script(o.python, "torch_ddp.py", args, bench::TorchSetting{"as installed", ""})) {
                    unsigned long ww = 0;
                    if (std::sscanf(line.c_str(), "torch_ddp %lu %lf %lf %lf %127s", &ww, &smp.median, &smp.min, &smp.max, ver) == 5) got = 1;
                }
                if (!got) {
                    std::printf("PyTorch: not run (%s cannot import torch, or torch_ddp.py failed)\n", o.python.c_str());
                    break;
                }
                torch_version = ver;
                rows.push_back({step, w == 1 ? "PyTorch" : "PyTorch DDP gloo", "torch", static_cast<std::size_t>(w), smp});
            }
    }

    std::ostringstream js;
    js << "{\"machine\": " << bench::machine_json() << ", \"load\": \"" << bench::load_average() << "\", \"clock\": \"wall\", \"torch\": \""
       << torch_version << "\", \"hidden\": " << hidden << ", \"batch\": " << batch << ", \"wgan_batch\": " << bench::wgan_batch
       << ", \"results\": [";
    std::string shown;
    for (std::size_t k = 0; k < rows.size(); ++k) {
        const Row& r = rows[k];
        if (r.step != shown) {
            std::printf("\n%s step\n%-18s %8s %14s %10s %11s\n", r.step == "wgan" ? "WGAN-GP (5+1)" : "MLP 3x256", "", "workers", "step [ms]",
                        "speed-up", "efficiency");
            shown = r.step;
        }
        double t1 = NAN;
        for (const Row& q : rows)
            if (q.workers == 1 && q.family == r.family && q.step == r.step) t1 = q.t.median;
        const double speedup = t1 / r.t.median, eff = speedup / static_cast<double>(r.workers);
        std::printf("%-18s %8zu %14.2f %9.2fx %10.0f%%\n", r.who.c_str(), r.workers, r.t.median * 1e3, speedup, eff * 100);
        js << (k ? ", " : "") << "{\"step\": \"" << r.step << "\", \"who\": \"" << r.who << "\", \"workers\": " << r.workers
           << ", \"median_s\": " << r.t.median << ", \"min_s\": " << r.t.min << ", \"max_s\": " << r.t.max << ", \"efficiency\": " << eff << "}";
    }
    js << "]}\n";
    std::printf("\n");
    for (const std::string& step : steps) {
        double tapir1 = NAN, tapir2 = NAN, torch2 = NAN;
        for (const Row& r : rows) {
            if (r.step != step) continue;
            if (r.workers == 1 && r.who == "tapir threads") tapir1 = r.t.median;
            if (r.workers == 2 && r.who == "tapir threads") tapir2 = r.t.median;
            if (r.workers == 2 && r.who == "PyTorch DDP gloo") torch2 = r.t.median;
        }
        const double eff2 = tapir1 / (2 * tapir2);
        std::printf("targets (%s): efficiency at 2 threads >= 85%%: %s (%.0f%%); faster than PyTorch DDP at 2 workers: %s\n", step.c_str(),
                    eff2 >= 0.85 ? "met" : "MISSED", eff2 * 100, std::isnan(torch2) ? "not measured" : (tapir2 < torch2 ? "met" : "MISSED"));
    }
    if (!o.json.empty()) std::ofstream(o.json) << js.str();
    return 0;
}
