// tapir/distributed/mpi.hpp on 2 MPI ranks (mpirun -np 2, from ctest): 2 ranks with global batch B
// train to the parameters of 1 process with batch B (SGD, Adam), the gradient all-reduce options,
// metrics, the sampler, errors on one rank stopping both, checkpoints resumed on 1 rank,
// synchronised BatchNorm against 1 process, and the collectives' timeout.
#include <tapir/distributed/mpi.hpp>  // first: the header compiles alone

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include <tapir/autodiff/backward.hpp>
#include <tapir/data/dataset.hpp>
#include <tapir/loss/classification.hpp>
#include <tapir/nn/data_parallel.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/optim/sgd.hpp>

#include "support/course_classifier.hpp"

using namespace tapir;
using namespace tapir::distributed;

namespace {

using Data = tapir_test::ClassifierData;
using tapir_test::max_param_diff;

Data make_data(std::size_t n, std::uint64_t seed) { return tapir_test::classifier_data(n, seed); }

nn::Sequential<float> mlp(std::uint64_t seed) { return tapir_test::classifier_mlp(seed); }

/// Largest |a.grad - b.grad| over all parameters, relative to the largest |a.grad|.
double max_grad_diff(nn::Module<float>& a, nn::Module<float>& b) {
    double scale = 0.0, diff = 0.0;
    const auto pa = a.parameters(), pb = b.parameters();
    for (std::size_t k = 0; k < pa.size(); ++k)
        for (std::size_t i = 0; i < pa[k]->size(); ++i) {
            scale = std::max(scale, static_cast<double>(std::abs(pa[k]->grad[i])));
            diff = std::max(diff, static_cast<double>(std::abs(pa[k]->grad[i] - pb[k]->grad[i])));
        }
    return diff / scale;
}

/// The mean BCE of the rows idx[0..n) and its gradient into Parameter::grad; returns the loss.
float local_step(nn::Module<float>& m, const Data& d, const std::size_t* idx, std::size_t n) {
    Tensor<float> xb, yb;
    data::gather_rows(d.x, idx, n, xb);
    data::gather_rows(d.y, idx, n, yb);
    Tape<float> t;
    const Var<float> l = loss::binary_cross_entropy_with_logits(m(t.view(xb)), t.view(yb));
    backward(l);
    return l.item();
}

template <class Opt>
void check_equivalence(const char* name, float lr) {
    Communicator world;
    REQUIRE(world.size() == 2);
    const Data d = make_data(512, 17);
    const std::size_t batch = 64, epochs = 2;

    // One process, global batch B (every rank computes it alone, without MPI).
    nn::Sequential<float> ref = mlp(5);
    Opt oref(ref.parameters(), lr);
    DistributedSampler one(512, batch, 0, 1, 7);
    for (std::size_t e = 0; e < epochs; ++e) {
        one.set_epoch(e);
        for (std::size_t s = 0; s < one.steps(); ++s) {
            const auto b = one.global_batch(s);
            ref.zero_grad();
            local_step(ref, d, b.first, b.second);
            oref.step();
        }
    }

    // Two ranks, B/2 each; rank 1 starts from other weights, which the broadcast replaces.
    nn::Sequential<float> m = mlp(world.rank() == 0 ? 5 : 6);
    DistributedDataParallel<float> ddp(world, m);
    Opt opt(m.parameters(), lr);
    DistributedSampler sampler(512, batch, world, 7);
    float last = 0.0f;
    for (std::size_t e = 0; e < epochs; ++e) {
        sampler.set_epoch(e);
        for (std::size_t s = 0; s < sampler.steps(); ++s) {
            const auto b = sampler.local_batch(s);
            CHECK(b.second == batch / 2);
            m.zero_grad();
            last = ddp.step(b.second, sampler.global_size(s), [&] { return local_step(m, d, b.first, b.second); });
            opt.step();
        }
    }
    const double diff = max_param_diff(ref, m);
    MESSAGE(name << ": rank " << world.rank() << ", largest relative parameter difference to one process " << diff);
    CHECK(diff < 1e-5);
    nn::Sequential<float> start = mlp(5);
    CHECK(max_param_diff(start, m) > 1e-3);  // trained: the comparison is not between initial models
    // Both ranks hold the same bits, and the same global loss.
    const double mine = max_param_diff(start, m);
    CHECK(world.max(mine) == mine);
    CHECK(world.max(static_cast<double>(last)) == static_cast<double>(last));
}

} // namespace

TEST_CASE("mpi: 2 ranks with global batch B give the parameters of 1 process with batch B (SGD)") {
    check_equivalence<optim::SGD<float>>("SGD", 0.05f);
}

TEST_CASE("mpi: 2 ranks with global batch B give the parameters of 1 process with batch B (Adam)") {
    check_equivalence<optim::Adam<float>>("Adam", 1e-3f);
}

TEST_CASE("mpi: threads inside ranks: DataParallel computes each rank's gradient") {
    Communicator world;
    const Data d = make_data(256, 3);
    nn::Sequential<float> ref = mlp(9), m = mlp(9);
    ref.zero_grad();
    std::vector<std::size_t> all(256);
    for (std::size_t i = 0; i < 256; ++i) all[i] = i;
    local_step(ref, d, all.data(), 256);
    DistributedDataParallel<float> ddp(world, m);
    nn::DataParallel<float> dp(m, 2);
    m.zero_grad();
    const std::size_t* mine = all.data() + 128 * static_cast<std::size_t>(world.rank());
    ddp.step(128, 256, [&] {
        return dp.run(128, [&](nn::Shard<float>& s) {
            Tape<float>& t = s.tape();
            Tensor<float> xb, yb;
            data::gather_rows(d.x, mine + s.begin(), s.size(), xb);
            data::gather_rows(d.y, mine + s.begin(), s.size(), yb);
            s.backward(loss::binary_cross_entropy_with_logits(m(t.constant(xb)), t.constant(yb)));
        });
    });
    CHECK(max_grad_diff(ref, m) < 1e-5);
}

TEST_CASE("mpi: gradient all-reduce: sum, average, weights, fp64 on the wire, several buckets") {
    Communicator world;
    const float r = static_cast<float>(world.rank());
    std::vector<Parameter<float>> ps;
    ps.emplace_back("a", Tensor<float>(Shape{3}));
    ps.emplace_back("b", Tensor<float>(Shape{5}));
    ps.emplace_back("c", Tensor<float>(Shape{2}));
    std::vector<Parameter<float>*> ptrs{&ps[0], &ps[1], &ps[2]};
    auto fill = [&] {
        for (auto& p : ps)
            for (std::size_t i = 0; i < p.size(); ++i) p.grad[i] = (r + 1.0f) * static_cast<float>(i + 1);
    };
    AllReduceOptions o;
    o.bucket_bytes = 6 * sizeof(float);  // a (3) fits, a + b (8) does not: buckets {a}, {b}, {c}
    GradientAllReduce<float> sum(world, ptrs, o);
    CHECK(sum.buckets() == 3);
    fill();
    sum();
    CHECK(ps[1].grad[4] == doctest::Approx(5.0 * (1 + 2)));
    fill();
    sum(0.5f);
    CHECK(ps[0].grad[2] == doctest::Approx(0.5 * 3.0 * (1 + 2)));
    o.reduction = Reduction::average;
    o.wire = Wire::fp64;
    GradientAllReduce<float> avg(world, ptrs, o);
    fill();
    avg();
    CHECK(ps[2].grad[1] == doctest::Approx(2.0 * 1.5));
    CHECK_THROWS_WITH_AS(GradientAllReduce<float>(world, ptrs, AllReduceOptions{Reduction::sum, Wire::native, 0}),
                         "GradientAllReduce: bucket_bytes must be positive", value_error);
}

TEST_CASE("mpi: metrics reduced across ranks") {
    Communicator world;
    // rank 0: mean 1 over 1 event; rank 1: mean 4 over 2 events -> (1 + 8) / 3
    const double m = world.weighted_mean(world.rank() == 0 ? 1.0 : 4.0, world.rank() == 0 ? 1.0 : 2.0);
    CHECK(m == doctest::Approx(3.0));
    CHECK(world.sum(1.0) == 2.0);
    std::vector<double> v{1.0, static_cast<double>(world.rank())};
    world.sum(v);
    CHECK(v[0] == 2.0);
    CHECK(v[1] == 1.0);
    CHECK_THROWS_WITH_AS(world.weighted_mean(1.0, 0.0), "distributed weighted_mean: the weights sum to 0.000000 over the ranks", value_error);
}

TEST_CASE("mpi: the sampler shares each global batch out by rank; the permutation ignores the rank count") {
    Communicator world;
    DistributedSampler a(103, 20, 0, 2, 5), b(103, 20, 1, 2, 5), one(103, 20, 0, 1, 5), three(103, 20, 2, 3, 5);
    for (std::uint64_t e = 0; e < 2; ++e) {
        a.set_epoch(e);
        b.set_epoch(e);
        one.set_epoch(e);
        three.set_epoch(e);
        CHECK(a.steps() == 6);
        std::set<std::size_t> seen;
        for (std::size_t s = 0; s < a.steps(); ++s) {
            const auto la = a.local_batch(s), lb = b.local_batch(s), g = one.global_batch(s);
            CHECK(la.second + lb.second == g.second);
            for (std::size_t i = 0; i < la.second; ++i) CHECK(la.first[i] == g.first[i]);
            for (std::size_t i = 0; i < lb.second; ++i) CHECK(lb.first[i] == g.first[la.second + i]);
            const auto l3 = three.local_batch(s);
            CHECK(l3.first[l3.second - 1] == g.first[g.second - 1]);  // the last rank ends the batch
            seen.insert(g.first, g.first + g.second);
        }
        CHECK(seen.size() == 103);  // every event once per epoch
    }
    DistributedSampler e0(103, 20, 0, 1, 5), e1(103, 20, 0, 1, 5);
    e1.set_epoch(1);
    CHECK(std::memcmp(e0.global_batch(0).first, e1.global_batch(0).first, 20 * sizeof(std::size_t)) != 0);
    CHECK(a.global_size(5) == 3);
    CHECK_THROWS_WITH_AS(a.local_batch(6), "DistributedSampler: step 6 out of range for 6 steps per epoch", value_error);
    CHECK_THROWS_WITH_AS(DistributedSampler(10, 2, 2, 2), "DistributedSampler: rank 2 is not in [0, 2)", value_error);
    CHECK_THROWS_WITH_AS(DistributedSampler(10, 0, world), "DistributedSampler: the global batch size must be positive", value_error);
}

TEST_CASE("mpi: a rank that throws stops every rank with its message, without a hang") {
    Communicator world;
    const Data d = make_data(64, 4);
    nn::Sequential<float> m = mlp(2);
    DistributedDataParallel<float> ddp(world, m);
    std::vector<std::size_t> idx(32);
    for (std::size_t i = 0; i < 32; ++i) idx[i] = 32 * static_cast<std::size_t>(world.rank()) + i;
    const auto t0 = std::chrono::steady_clock::now();
    m.zero_grad();
    CHECK_THROWS_WITH_AS(ddp.step(32, 64,
                                  [&]() -> float {
                                      if (world.rank() == 1) throw value_error("event 17 of rank 1's shard has a NaN feature");
                                      return local_step(m, d, idx.data(), 32);
                                  }),
                         "rank 1 failed: event 17 of rank 1's shard has a NaN feature", distributed_error);
    CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 30.0);
    // Both ranks are still in step: the next step runs.
    m.zero_grad();
    const float l = ddp.step(32, 64, [&] { return local_step(m, d, idx.data(), 32); });
    CHECK(std::isfinite(l));
    CHECK(world.max(static_cast<double>(l)) == static_cast<double>(l));
    CHECK_THROWS_WITH_AS(ddp.step(33, 32, [] { return 0.0f; }), "DistributedDataParallel::step: 33 local events in a global batch of 32",
                         value_error);
}

namespace {
nn::Sequential<float> bn_mlp(std::uint64_t seed) {
    Rng rng(seed);
    nn::Sequential<float> m;
    m.add<nn::Dense<float>>(8, 16, rng).add<nn::BatchNorm<float>>(16).add<nn::ReLU<float>>().add<nn::Dense<float>>(16, 1, rng);
    return m;
}

/// BCE of the rows [begin, begin + n) of d through the BatchNorm MLP, backward; the BatchNorm
/// outputs are kept in z. Returns the loss.
float bn_step(nn::Sequential<float>& m, const Data& d, std::size_t begin, std::size_t n, Tensor<float>& z) {
    std::vector<std::size_t> idx(n);
    for (std::size_t i = 0; i < n; ++i) idx[i] = begin + i;
    Tensor<float> xb, yb;
    data::gather_rows(d.x, idx.data(), n, xb);
    data::gather_rows(d.y, idx.data(), n, yb);
    Tape<float> t;
    const Var<float> zv = m[1](m[0](t.view(xb)));
    z = zv.value();
    const Var<float> l = loss::binary_cross_entropy_with_logits(m[3](m[2](zv)), t.view(yb));
    backward(l);
    return l.item();
}

} // namespace

TEST_CASE("mpi: synchronised BatchNorm: 2 ranks with unequal shares of B compute 1 process's outputs, gradients and statistics") {
    Communicator world;
    const Data d = make_data(64, 23);
    // rank 0 takes rows [0, 24), rank 1 rows [24, 64): unequal loss weights 24/64 and 40/64.
    const std::size_t begin = world.rank() == 0 ? 0 : 24, n = world.rank() == 0 ? 24 : 40;
    nn::Sequential<float> ref = bn_mlp(31), m = bn_mlp(31);
    optim::SGD<float> oref(ref.parameters(), 0.1f);
    const auto group = sync_batch_norm(m, world);
    DistributedDataParallel<float> ddp(world, m);
    CHECK(ddp.synchronised_batch_norm());
    optim::SGD<float> opt(m.parameters(), 0.1f);
    for (int step = 0; step < 3; ++step) {
        Tensor<float> z_ref, z;
        ref.zero_grad();
        const float l_ref = bn_step(ref, d, 0, 64, z_ref);
        m.zero_grad();
        const float l = ddp.step(n, 64, [&] { return bn_step(m, d, begin, n, z); });
        CHECK(group->loss_weight() == static_cast<float>(n) / 64.0f);
        CHECK(l == doctest::Approx(l_ref).epsilon(1e-5));
        double zdiff = 0.0;
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < 16; ++j) zdiff = std::max(zdiff, static_cast<double>(std::abs(z(i, j) - z_ref(begin + i, j))));
        CHECK(zdiff < 1e-5);
        const double gdiff = max_grad_diff(ref, m);
        MESSAGE("step " << step << ": BatchNorm outputs differ by " << zdiff << ", gradients by " << gdiff << " (relative)");
        CHECK(gdiff < 1e-5);
        oref.step();
        opt.step();
    }
    CHECK(max_param_diff(ref, m) < 1e-5);
    const auto& bn_ref = static_cast<nn::BatchNorm<float>&>(ref[1]);
    const auto& bn = static_cast<nn::BatchNorm<float>&>(m[1]);
    CHECK(bn.batches_tracked() == 3);
    for (std::size_t j = 0; j < 16; ++j) {
        CHECK(bn.running_mean[j] == doctest::Approx(bn_ref.running_mean[j]).epsilon(1e-5));
        CHECK(bn.running_var[j] == doctest::Approx(bn_ref.running_var[j]).epsilon(1e-5));
    }
    // Unsynchronised, the same rows would be normalised with this rank's own statistics: the
    // comparison above can fail.
    nn::Sequential<float> plain = bn_mlp(31);
    Tensor<float> z_plain, z_ref;
    bn_step(plain, d, begin, n, z_plain);
    nn::Sequential<float> ref0 = bn_mlp(31);
    bn_step(ref0, d, 0, 64, z_ref);
    double pdiff = 0.0;
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < 16; ++j) pdiff = std::max(pdiff, static_cast<double>(std::abs(z_plain(i, j) - z_ref(begin + i, j))));
    CHECK(pdiff > 1e-2);
}

TEST_CASE("mpi: synchronised BatchNorm: bad input") {
    Communicator world;
    nn::Sequential<float> none = mlp(1);
    CHECK_THROWS_WITH_AS(sync_batch_norm(none, world), "sync_batch_norm: the model has no BatchNorm layer", value_error);
    nn::Sequential<float> m = bn_mlp(2);
    sync_batch_norm(m, world);
    DistributedDataParallel<float> ddp(world, m);
    const Data d = make_data(64, 2);
    Tensor<float> z;
    const std::size_t n = world.rank() == 0 ? 0 : 64;
    CHECK_THROWS_WITH_AS(ddp.step(n, 64, [&] { return bn_step(m, d, 0, n, z); }),
                         "rank 0 failed: DistributedDataParallel::step: with synchronised BatchNorm every rank needs events; rank 0 has none "
                         "of the global batch of 64",
                         distributed_error);
    // Inside nn::DataParallel workers the group would be called from several threads: refused.
    nn::Sequential<float> solo = bn_mlp(3);
    MPI_Comm alone;
    MPI_Comm_split(world.comm(), world.rank(), 0, &alone);
    {
        Communicator one(alone);
        sync_batch_norm(solo, one);
        nn::DataParallel<float> dp(solo, 2);
        CHECK_THROWS_WITH_AS(dp.run(64,
                                    [&](nn::Shard<float>& s) {
                                        Tensor<float> xb(Shape{s.size(), 8}, 0.5f);
                                        s.backward(sum(solo(s.tape().constant(xb))));
                                    }),
                             "BatchNorm(16): synchronised statistics cannot run inside nn::DataParallel workers (one thread per process calls the group)",
                             value_error);
    }
    MPI_Comm_free(&alone);
}

TEST_CASE("mpi: the collectives' timeout: the same results through the non-blocking path; bad values refused") {
    Communicator world;
    Communicator timed(world.comm());
    CHECK(timed.timeout() == 0.0);
    timed.set_timeout(30.0);
    CHECK(timed.timeout() == 30.0);
    std::vector<double> v{1.0, static_cast<double>(world.rank())};
    timed.sum(v);
    CHECK(v[1] == 1.0);
    CHECK(timed.max(static_cast<double>(world.rank())) == 1.0);
    std::string text = world.rank() == 0 ? "from rank 0" : "";
    timed.broadcast(text, 0);
    CHECK(text == "from rank 0");
    timed.barrier();
    // DDP through the timed communicator: the same gradients as through the plain one.
    const Data d = make_data(64, 5);
    nn::Sequential<float> a = mlp(3), b = mlp(3);
    DistributedDataParallel<float> pa(world, a), pb(timed, b);
    std::vector<std::size_t> idx(32);
    for (std::size_t i = 0; i < 32; ++i) idx[i] = 32 * static_cast<std::size_t>(world.rank()) + i;
    a.zero_grad();
    b.zero_grad();
    const float la = pa.step(32, 64, [&] { return local_step(a, d, idx.data(), 32); });
    const float lb = pb.step(32, 64, [&] { return local_step(b, d, idx.data(), 32); });
    CHECK(la == lb);
    CHECK(max_grad_diff(a, b) == 0.0);
    CHECK_THROWS_WITH_AS(timed.set_timeout(-1.0), "Communicator: the timeout must be a finite number of seconds >= 0, got -1.000000", value_error);
    ::setenv("TAPIR_MPI_TIMEOUT", "ten", 1);
    CHECK_THROWS_WITH_AS(Communicator(world.comm()), "Communicator: TAPIR_MPI_TIMEOUT must be a number of seconds, got 'ten'", value_error);
    ::setenv("TAPIR_MPI_TIMEOUT", "7.5", 1);
    CHECK(Communicator(world.comm()).timeout() == 7.5);
    ::unsetenv("TAPIR_MPI_TIMEOUT");
}

TEST_CASE("mpi: checkpoints: written by rank 0, resumed on another number of ranks, bad files refused on every rank") {
    Communicator world;
    const Data d = make_data(128, 8);
    nn::Sequential<float> m = mlp(3);
    DistributedDataParallel<float> ddp(world, m);
    optim::Adam<float> opt(m.parameters(), 1e-3f);
    std::vector<std::size_t> idx(64);
    for (std::size_t i = 0; i < 64; ++i) idx[i] = 64 * static_cast<std::size_t>(world.rank()) + i;
    for (int s = 0; s < 3; ++s) {
        m.zero_grad();
        ddp.step(64, 128, [&] { return local_step(m, d, idx.data(), 64); });
        opt.step();
    }
    // Rank 0's path (its pid), sent to rank 1 so that both name the same file.
    std::string path = (std::filesystem::temp_directory_path() / ("tapir_mpi_" + std::to_string(::getpid()) + ".tpr")).string();
    world.broadcast(path, 0);
    save_checkpoint(world, path, m, &opt);
    if (world.rank() == 0) CHECK(std::filesystem::exists(path));

    // Resume on one rank per communicator (each rank alone): the same model and optimiser state.
    MPI_Comm alone;
    MPI_Comm_split(world.comm(), world.rank(), 0, &alone);
    {
        Communicator solo(alone);
        CHECK(solo.size() == 1);
        nn::Sequential<float> r = mlp(99);
        optim::Adam<float> ropt(r.parameters(), 1e-3f);
        if (world.rank() == 0) {
            load_checkpoint(solo, path, r, &ropt);
            CHECK(max_param_diff(m, r) == 0.0);
            CHECK(ropt.iterations() == 3);
        }
    }
    MPI_Comm_free(&alone);

    // Resume on the 2 ranks: rank 0 reads, both load.
    nn::Sequential<float> r2 = mlp(98);
    optim::Adam<float> opt2(r2.parameters(), 1e-3f);
    load_checkpoint(world, path, r2, &opt2);
    CHECK(max_param_diff(m, r2) == 0.0);
    CHECK(opt2.iterations() == 3);

    // A corrupt file and a missing one: every rank gets rank 0's error.
    if (world.rank() == 0) {
        std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(40);
        f.put('\x7f');
    }
    world.barrier();
    try {
        load_checkpoint(world, path, r2, &opt2);
        FAIL("a corrupt checkpoint was accepted");
    } catch (const distributed_error& e) {
        const std::string what = e.what();
        MESSAGE("corrupt checkpoint: " << what);
        CHECK(what.rfind("rank 0 failed: ", 0) == 0);
        CHECK(what.find(path) != std::string::npos);
    }
    world.barrier();
    if (world.rank() == 0) std::filesystem::remove(path);
    CHECK_THROWS_WITH_AS(load_checkpoint(world, path, r2, &opt2), ("rank 0 failed: load_checkpoint: cannot open '" + path + "'").c_str(),
                         distributed_error);
}

int main(int argc, char** argv) {
    Environment env(argc, argv);
    doctest::Context ctx(argc, argv);
    const int rc = ctx.run();
    int worst = 0;
    MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return worst;
}
