// Data-parallel training on threads (nn/data_parallel.hpp, FitOptions::threads): equivalence with
// one thread (SGD, Adam), bitwise repeatability, BatchNorm per-shard statistics, a WGAN-GP critic
// step with a gradient penalty, GEMMs kept on the worker threads, errors, and no allocation per step.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/loss/classification.hpp>
#include <tapir/loss/gan.hpp>
#include <tapir/nn/data_parallel.hpp>
#include <tapir/nn/fit.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/optim/sgd.hpp>
#include <tapir/random.hpp>
#include <tapir/simd/arch.hpp>
#include <tapir/simd/gemm.hpp>
#include <tapir/simd/thread_pool.hpp>

#include "support/alloc_counter.hpp"
#include "support/course_classifier.hpp"

using namespace tapir;
using namespace tapir::nn;

namespace {

using Data = tapir_test::ClassifierData;
using tapir_test::max_param_diff;

Data make_data(std::size_t n, std::uint64_t seed) { return tapir_test::classifier_data(n, seed); }

Sequential<float> mlp(std::uint64_t seed) { return tapir_test::classifier_mlp(seed); }

bool same_bits(Module<float>& a, Module<float>& b) {
    const auto pa = a.parameters(), pb = b.parameters();
    for (std::size_t k = 0; k < pa.size(); ++k)
        if (std::memcmp(pa[k]->value.data(), pb[k]->value.data(), pa[k]->size() * sizeof(float)) != 0) return false;
    return true;
}

template <class Opt>
Sequential<float> train(std::size_t threads, const Data& d, std::size_t epochs, std::unique_ptr<Opt> (*make)(Sequential<float>&)) {
    Sequential<float> m = mlp(11);
    std::unique_ptr<Opt> opt = make(m);
    FitOptions<float> o;
    o.epochs = epochs;
    o.batch_size = 64;
    o.threads = threads;
    o.verbose = Verbosity::quiet;
    fit(m, d.x, d.y, *opt, o);
    return m;
}

std::unique_ptr<optim::SGD<float>> make_sgd(Sequential<float>& m) {
    return std::make_unique<optim::SGD<float>>(m.parameters(), 0.05f, 0.9f);
}
std::unique_ptr<optim::Adam<float>> make_adam(Sequential<float>& m) { return std::make_unique<optim::Adam<float>>(m.parameters(), 1e-3f); }

/// fit on 1 and on 2 threads, 3 epochs of 8 batches: the same parameters up to float rounding,
/// and trained (moved by more than `moved` from the start).
template <class Opt>
void check_fit_equivalence(const char* name, const Data& d, std::unique_ptr<Opt> (*make)(Sequential<float>&), double moved) {
    Sequential<float> one = train<Opt>(1, d, 3, make);
    Sequential<float> two = train<Opt>(2, d, 3, make);
    const double diff = max_param_diff(one, two);
    MESSAGE(name << ", 24 steps: largest relative parameter difference " << diff);
    CHECK(diff < 1e-4);
    Sequential<float> start = mlp(11);
    CHECK(max_param_diff(one, start) > moved);
}

/// Full-batch gradient of the mean BCE on rows [0, n) with one tape, into Parameter::grad.
void serial_grad(Module<float>& m, const Data& d, std::size_t begin, std::size_t end) {
    Tape<float> t;
    const std::size_t n = end - begin;
    const Var<float> x = t.constant(d.x.data() + begin * 8, Shape{n, 8});
    const Var<float> y = t.constant(d.y.data() + begin, Shape{n, 1});
    backward(loss::binary_cross_entropy_with_logits(m(x), y));
}

std::vector<std::vector<float>> grads_of(Module<float>& m) {
    std::vector<std::vector<float>> g;
    for (Parameter<float>* p : m.parameters()) g.emplace_back(p->grad.data(), p->grad.data() + p->size());
    return g;
}

double max_rel_diff(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
    double scale = 0.0, d = 0.0;
    for (std::size_t k = 0; k < a.size(); ++k)
        for (std::size_t i = 0; i < a[k].size(); ++i) {
            scale = std::max(scale, static_cast<double>(std::abs(a[k][i])));
            d = std::max(d, static_cast<double>(std::abs(a[k][i] - b[k][i])));
        }
    return d / scale;
}

/// The shard step of the lower-level API: mean BCE over the shard's rows.
void bce_shard(Module<float>& m, const Data& d, Shard<float>& s) {
    Tape<float>& t = s.tape();
    const Var<float> x = t.constant(d.x.data() + s.begin() * 8, Shape{s.size(), 8});
    const Var<float> y = t.constant(d.y.data() + s.begin(), Shape{s.size(), 1});
    s.backward(loss::binary_cross_entropy_with_logits(m(x), y));
}

} // namespace

TEST_CASE("data parallel: two shards give the full-batch gradient and loss within float rounding") {
    const Data d = make_data(96, 3);
    Sequential<float> a = mlp(5), b = mlp(5);
    a.zero_grad();
    serial_grad(a, d, 0, 96);
    b.zero_grad();
    DataParallel<float> dp(b, 2);
    const float l = dp.run(96, [&](Shard<float>& s) {
        CHECK(s.weight() == doctest::Approx(0.5));
        bce_shard(b, d, s);
    });
    const double rel = max_rel_diff(grads_of(a), grads_of(b));
    CHECK(rel < 1e-5);
    CHECK(rel > 0.0);  // another summation order: not the same bits, only the same value
    Tape<float> t;
    const float full = loss::binary_cross_entropy_with_logits(a(t.view(d.x)), t.view(d.y)).item();
    CHECK(l == doctest::Approx(full).epsilon(1e-5));

    // Uneven shards (97 events on 3 threads: 32, 32, 33) are weighted by their sizes.
    const Data e = make_data(97, 4);
    a.zero_grad();
    serial_grad(a, e, 0, 97);
    b.zero_grad();
    DataParallel<float> dp3(b, 3);
    dp3.run(97, [&](Shard<float>& s) { bce_shard(b, e, s); });
    CHECK(dp3.shard(2).size() == 33);
    CHECK(max_rel_diff(grads_of(a), grads_of(b)) < 1e-5);

    // Fewer events than threads: the idle worker records nothing.
    b.zero_grad();
    a.zero_grad();
    serial_grad(a, e, 0, 2);
    dp3.run(2, [&](Shard<float>& s) { bce_shard(b, e, s); });
    CHECK(dp3.shard(0).size() == 0);
    CHECK(max_rel_diff(grads_of(a), grads_of(b)) < 1e-5);
}

TEST_CASE("data parallel: fit with 2 threads equals 1 thread within float rounding, SGD and Adam") {
    const Data d = make_data(512, 7);
    SUBCASE("SGD with momentum") { check_fit_equivalence<optim::SGD<float>>("SGD", d, make_sgd, 1e-2); }
    SUBCASE("Adam") { check_fit_equivalence<optim::Adam<float>>("Adam", d, make_adam, 1e-3); }
}

TEST_CASE("data parallel: the same thread count gives the same bits on every run") {
    const Data d = make_data(512, 8);
    Sequential<float> r1 = train<optim::Adam<float>>(2, d, 2, make_adam);
    Sequential<float> r2 = train<optim::Adam<float>>(2, d, 2, make_adam);
    CHECK(same_bits(r1, r2));
    Sequential<float> r3 = train<optim::Adam<float>>(3, d, 2, make_adam);
    Sequential<float> r4 = train<optim::Adam<float>>(3, d, 2, make_adam);
    CHECK(same_bits(r3, r4));
}

TEST_CASE("data parallel: BatchNorm normalises each shard with its own statistics; worker 0 keeps the running ones") {
    const Data d = make_data(64, 9);
    auto make = [] {
        Rng rng(3);
        Sequential<float> m;
        m.add<Dense<float>>(8, 16, rng).add<BatchNorm<float>>(16).add<ReLU<float>>().add<Dense<float>>(16, 1, rng);
        return m;
    };
    Sequential<float> par = make(), ref = make(), shard0 = make();
    // Expected gradient: the mean of the two shards' gradients, each with its own batch statistics.
    ref.zero_grad();
    {
        Tape<float> t;
        const Var<float> l0 = loss::binary_cross_entropy_with_logits(ref(t.constant(d.x.data(), Shape{32, 8})), t.constant(d.y.data(), Shape{32, 1}));
        const Var<float> l1 =
            loss::binary_cross_entropy_with_logits(ref(t.constant(d.x.data() + 32 * 8, Shape{32, 8})), t.constant(d.y.data() + 32, Shape{32, 1}));
        backward(scale(add(l0, l1), 0.5f));
    }
    {  // the running statistics of one training forward pass on shard 0
        Tape<float> t;
        shard0(t.constant(d.x.data(), Shape{32, 8}));
    }
    par.zero_grad();
    DataParallel<float> dp(par, 2);
    dp.run(64, [&](Shard<float>& s) { bce_shard(par, d, s); });
    CHECK(max_rel_diff(grads_of(ref), grads_of(par)) < 1e-5);

    // Against the full-batch gradient: different (the statistics differ), as in DDP without SyncBN.
    Sequential<float> full = make();
    full.zero_grad();
    serial_grad(full, d, 0, 64);
    CHECK(max_rel_diff(grads_of(full), grads_of(par)) > 1e-3);

    auto& bn = static_cast<BatchNorm<float>&>(par[1]);
    auto& bn0 = static_cast<BatchNorm<float>&>(shard0[1]);
    CHECK(bn.batches_tracked() == 1);
    for (std::size_t j = 0; j < 16; ++j) {
        CHECK(bn.running_mean[j] == doctest::Approx(bn0.running_mean[j]).epsilon(1e-6));
        CHECK(bn.running_var[j] == doctest::Approx(bn0.running_var[j]).epsilon(1e-6));
    }
    CHECK(std::abs(bn.running_mean[0]) > 1e-4);  // the statistics did move
}

TEST_CASE("data parallel: a WGAN-GP critic step (gradient penalty through grad with create_graph) on 2 threads") {
    // The critic step of examples/wgan_gp on fixed real, fake and interpolated events:
    //   L = <C(fake)> - <C(real)> + 10 <(|grad_x C(x_hat)| - 1)^2>, every term a mean over events.
    const std::size_t n = 48, f = 6;
    Rng rng(21);
    Tensor<float> real(Shape{n, f}), fake(Shape{n, f}), xhat(Shape{n, f});
    for (std::size_t i = 0; i < n * f; ++i) {
        real[i] = static_cast<float>(rng.normal());
        fake[i] = static_cast<float>(rng.normal(0.5, 1.5));
        xhat[i] = 0.3f * real[i] + 0.7f * fake[i];
    }
    auto make = [f] {
        Rng r(8);
        Sequential<float> c;
        c.add<Dense<float>>(f, 32, r).add<Tanh<float>>().add<Dense<float>>(32, 32, r).add<Tanh<float>>().add<Dense<float>>(32, 1, r);
        return c;
    };
    auto critic_loss = [&](Sequential<float>& c, Tape<float>& t, std::size_t b, std::size_t m) {
        auto rows = [&](const Tensor<float>& src) { return Tensor<float>(Shape{m, f}, src.data() + b * f, m * f); };
        const Var<float> xh = t.variable(rows(xhat));
        const Var<float> gp = loss::gradient_penalty_at(c, xh, 10.0f);
        return add(loss::wgan_critic_loss(c(t.constant(rows(real))), c(t.constant(rows(fake)))), gp);
    };
    Sequential<float> one = make(), two = make();
    one.zero_grad();
    Tape<float> t;
    const Var<float> l = critic_loss(one, t, 0, n);
    const float l1 = l.item();
    backward(l);
    two.zero_grad();
    DataParallel<float> dp(two, 2);
    const float l2 = dp.run(n, [&](Shard<float>& s) { s.backward(critic_loss(two, s.tape(), s.begin(), s.size())); });
    CHECK(l2 == doctest::Approx(l1).epsilon(1e-5));
    CHECK(max_rel_diff(grads_of(one), grads_of(two)) < 1e-5);
    // An Adam step on the reduced gradients moves both critics alike.
    optim::Adam<float> o1(one.parameters(), 1e-3f), o2(two.parameters(), 1e-3f);
    o1.step();
    o2.step();
    CHECK(max_param_diff(one, two) < 1e-6);
}

TEST_CASE("data parallel: GEMMs inside the workers stay on their thread, and the bits do not depend on simd threads") {
    const Data d = make_data(256, 12);
    Sequential<float> a = mlp(2), b = mlp(2);
    DataParallel<float> dpa(a, 2), dpb(b, 2);
    bool inside[2] = {false, false};
    a.zero_grad();
    dpa.run(256, [&](Shard<float>& s) {
        inside[s.worker()] = simd::in_parallel_region();
        bce_shard(a, d, s);
    });
    CHECK(inside[0]);
    CHECK(inside[1]);
    CHECK_FALSE(simd::in_parallel_region());
    const unsigned threads = simd::num_threads();
    const std::size_t threshold = simd::set_gemm_parallel_threshold(1);  // every product would split
    simd::set_num_threads(2);
    b.zero_grad();
    dpb.run(256, [&](Shard<float>& s) { bce_shard(b, d, s); });
    simd::set_num_threads(threads);
    simd::set_gemm_parallel_threshold(threshold);
    const auto ga = grads_of(a), gb = grads_of(b);
    for (std::size_t k = 0; k < ga.size(); ++k) CHECK(ga[k] == gb[k]);
}

TEST_CASE("data parallel: the gradient reduction, split over the workers, adds grad + g_0 + g_1 + ... in worker order") {
    // 8 -> 300 -> 200 -> 1: 63,101 gradient elements, above the size at which the reduction is
    // split, with parameters that straddle the split points.
    Rng rng(5);
    Sequential<float> m;
    m.add<Dense<float>>(8, 300, rng, Activation::relu).add<Dense<float>>(300, 200, rng, Activation::relu).add<Dense<float>>(200, 1, rng);
    const Data d = make_data(96, 13);
    for (std::size_t threads : {std::size_t(2), std::size_t(3)}) {
        CAPTURE(threads);
        DataParallel<float> dp(m, threads);
        // Parameter::grad holds something already: run() accumulates into it.
        std::vector<std::vector<float>> before;
        for (Parameter<float>* p : m.parameters()) {
            for (std::size_t i = 0; i < p->size(); ++i) p->grad[i] = 0.001f * static_cast<float>(i % 7);
            before.emplace_back(p->grad.data(), p->grad.data() + p->size());
        }
        dp.run(96, [&](Shard<float>& s) { bce_shard(m, d, s); });
        const auto params = m.parameters();
        std::size_t differ = 0, nonzero = 0;
        for (std::size_t i = 0; i < params.size(); ++i)
            for (std::size_t e = 0; e < params[i]->size(); ++e) {
                float want = before[i][e];
                for (std::size_t k = 0; k < threads; ++k) want += dp.shard(k).grad(i)[e];
                differ += std::memcmp(&want, &params[i]->grad[e], sizeof(float)) != 0;
                nonzero += dp.shard(threads - 1).grad(i)[e] != 0.0f;
            }
        CHECK(differ == 0);
        CHECK(nonzero > 10000);  // the last worker's gradients are real, so the check can fail
    }
}

TEST_CASE("data parallel: an Adam step split over simd threads after a two-thread step gives the one-thread bits") {
    // 8 -> 300 -> 300 -> 200 -> 1: 153,701 parameters, above the size at which a step is split.
    auto make = [] {
        Rng rng(6);
        Sequential<float> m;
        m.add<Dense<float>>(8, 300, rng, Activation::relu)
            .add<Dense<float>>(300, 300, rng, Activation::relu)
            .add<Dense<float>>(300, 200, rng, Activation::relu)
            .add<Dense<float>>(200, 1, rng);
        return m;
    };
    const Data d = make_data(64, 14);
    Sequential<float> a = make(), b = make();
    optim::Adam<float> oa(a.parameters(), 1e-3f), ob(b.parameters(), 1e-3f);
    DataParallel<float> da(a, 2), db(b, 2);
    const unsigned threads = simd::num_threads();
    for (int step = 0; step < 3; ++step) {
        oa.zero_grad();
        ob.zero_grad();
        da.run(64, [&](Shard<float>& s) { bce_shard(a, d, s); });
        db.run(64, [&](Shard<float>& s) { bce_shard(b, d, s); });
        oa.step();
        simd::set_num_threads(2);
        ob.step();
        simd::set_num_threads(threads);
    }
    CHECK(same_bits(a, b));
    Sequential<float> fresh = make();
    CHECK_FALSE(same_bits(a, fresh));  // the steps moved the weights
}

TEST_CASE("data parallel: an exception in one worker reaches the caller with its message; the pool stays usable") {
    const Data d = make_data(64, 13);
    Sequential<float> m = mlp(4);
    DataParallel<float> dp(m, 2);
    m.zero_grad();
    CHECK_THROWS_WITH_AS(dp.run(64,
                                [&](Shard<float>& s) {
                                    bce_shard(m, d, s);
                                    if (s.worker() == 1) throw std::runtime_error("worker 1: the shard's file is unreadable");
                                }),
                         "worker 1: the shard's file is unreadable", std::runtime_error);
    for (Parameter<float>* p : m.parameters())
        for (std::size_t i = 0; i < p->size(); ++i) REQUIRE(p->grad[i] == 0.0f);  // nothing reduced
    // The next step runs normally and gives the full-batch gradient.
    dp.run(64, [&](Shard<float>& s) { bce_shard(m, d, s); });
    Sequential<float> ref = mlp(4);
    ref.zero_grad();
    serial_grad(ref, d, 0, 64);
    CHECK(max_rel_diff(grads_of(ref), grads_of(m)) < 1e-5);

    // A parameter the workers were not given, a loss on a foreign tape, bad options.
    Parameter<float> stray("stray", Tensor<float>(Shape{1}, 1.0f));
    CHECK_THROWS_WITH_AS(dp.run(64, [&](Shard<float>& s) { s.backward(mul(sum(s.tape().param(stray)), s.tape().scalar(1.0f))); }),
                         "DataParallel: parameter 'stray' is used on worker 0's tape but is not among the parameters given to DataParallel",
                         value_error);
    CHECK_THROWS_WITH_AS(dp.run(64,
                                [&](Shard<float>& s) {
                                    Tape<float> other;
                                    s.backward(sum(other.param(stray)));
                                }),
                         "DataParallel: the shard loss was recorded on a tape that does not send its gradients to worker 0 (use "
                         "shard.tape(), or attach the tape with shard.attach(tape))",
                         value_error);
    CHECK_THROWS_WITH_AS(DataParallel<float>(m, 0), "DataParallel: the number of threads must be at least 1", value_error);
    CHECK_THROWS_WITH_AS(dp.run(0, [](Shard<float>&) {}), "DataParallel: empty batch", value_error);
    optim::SGD<float> sgd(m.parameters(), 0.1f);
    FitOptions<float> o;
    o.threads = 0;
    o.verbose = Verbosity::quiet;
    CHECK_THROWS_WITH_AS(fit(m, d.x, d.y, sgd, o), "fit: threads must be at least 1", value_error);
}

TEST_CASE("data parallel: Dropout draws from the workers' streams, the same masks on every run") {
    const Data d = make_data(64, 14);
    auto run = [&] {
        Rng rng(6);
        Sequential<float> m;
        m.add<Dense<float>>(8, 32, rng).add<ReLU<float>>().add<Dropout<float>>(0.5).add<Dense<float>>(32, 1, rng);
        m.zero_grad();
        DataParallel<float> dp(m, 2, 99);
        dp.run(64, [&](Shard<float>& s) { bce_shard(m, d, s); });
        return grads_of(m);
    };
    const auto g1 = run(), g2 = run();
    for (std::size_t k = 0; k < g1.size(); ++k) CHECK(g1[k] == g2[k]);
}

TEST_CASE("data parallel: a steady-state ParallelTrainer step allocates nothing, with weights and outputs") {
    const Data d = make_data(256, 15);
    Tensor<float> w(Shape{256});
    for (std::size_t i = 0; i < 256; ++i) w[i] = 0.5f + static_cast<float>(i % 3);
    Sequential<float> m = mlp(3);
    optim::Adam<float> opt(m.parameters(), 1e-3f);
    ParallelTrainer<float> tr(m, opt, 2);
    std::vector<std::size_t> idx(256);
    std::iota(idx.begin(), idx.end(), std::size_t(0));
    Tensor<float> pred;
    tr.step(d.x, d.y, &w, idx.data(), 64, &pred);
    tr.step(d.x, d.y, &w, idx.data() + 64, 64, &pred);
    tapir_test::AllocationScope scope;
    float total = 0.0f;
    for (std::size_t s = 0; s < 12; ++s) total += tr.step(d.x, d.y, &w, idx.data() + (s % 4) * 64, s == 11 ? 40 : 64, &pred);
    CHECK(scope.count() == 0);
    CHECK(std::isfinite(total));

    // Weighted shards: the step's gradient is the full batch's weighted-mean gradient.
    Sequential<float> a = mlp(3), b = mlp(3);
    optim::SGD<float> sa(a.parameters(), 1e-3f), sb(b.parameters(), 1e-3f);  // the gradients stay after the step
    Trainer<float> ta(a, sa);
    ParallelTrainer<float> tb(b, sb, 2);
    std::vector<std::size_t> rows(idx.begin(), idx.begin() + 90);
    const float la = ta.step(d.x, d.y, &w, rows.data(), 90);
    const float lb = tb.step(d.x, d.y, &w, rows.data(), 90);
    CHECK(lb == doctest::Approx(la).epsilon(1e-5));
    CHECK(max_rel_diff(grads_of(a), grads_of(b)) < 1e-5);
}
