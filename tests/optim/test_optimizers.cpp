// The first three updates of every optimiser on a fixed quadratic, against values computed by an
// independent implementation of the published update rules (Python floats, i.e. double):
//   f(w) = 0.5 w0^2 + 1 w1^2 + 2 w2^2,  w = (1, -2, 0.5),  gradient (w0, 2 w1, 4 w2)
// with w0, w1 in one parameter x of shape (2,) and w2 in a parameter y of shape (1,).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <tapir/optim/adagrad.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/optim/rmsprop.hpp>
#include <tapir/optim/schedule.hpp>
#include <tapir/optim/sgd.hpp>
#include <tapir/random.hpp>
#include <tapir/simd/arch.hpp>
#include <vector>

using namespace tapir;
using namespace tapir::optim;

namespace {
using Rows = std::vector<std::vector<double>>;

template <class T>
struct Quad {
    Parameter<T> x{"x", Tensor<T>(Shape{2}, {T(1), T(-2)})};
    Parameter<T> y{"y", Tensor<T>(Shape{1}, {T(0.5)})};
    std::vector<Parameter<T>*> params() { return {&x, &y}; }
    void compute_grad() {
        x.grad[0] = x.value[0];
        x.grad[1] = T(2) * x.value[1];
        y.grad[0] = T(4) * y.value[0];
    }
    double w(std::size_t i) const { return static_cast<double>(i < 2 ? x.value[i] : y.value[0]); }
};

/// Runs opt for expect.size() steps and compares after each.
template <class T>
void check_steps(Optimizer<T>& opt, Quad<T>& q, const Rows& expect, double tol) {
    for (std::size_t s = 0; s < expect.size(); ++s) {
        q.compute_grad();
        opt.step();
        CHECK(opt.iterations() == s + 1);
        for (std::size_t i = 0; i < 3; ++i) {
            INFO("step " << s + 1 << ", w" << i);
            CHECK(q.w(i) == doctest::Approx(expect[s][i]).epsilon(tol));
        }
    }
}

constexpr double tol_d = 1e-13;
constexpr double tol_f = 2e-6;
} // namespace

TEST_CASE_TEMPLATE("SGD: plain, momentum with dampening, Nesterov, weight decay", T, float, double) {
    const double tol = sizeof(T) == 8 ? tol_d : tol_f;
    SUBCASE("plain, lr 0.1") {
        Quad<T> q;
        SGD<T> opt(q.params(), T(0.1));
        CHECK(opt.name() == "SGD");
        check_steps<T>(opt, q, {{0.9, -1.6, 0.3}, {0.81, -1.28, 0.18}, {0.7290000000000001, -1.024, 0.108}}, tol);
    }
    SUBCASE("momentum 0.9, dampening 0.1: the first step ignores dampening (buf = g)") {
        Quad<T> q;
        SGD<T> opt(q.params(), T(0.1), T(0.9), T(0.1));
        check_steps<T>(opt, q, {{0.9, -1.6, 0.3}, {0.729, -0.952, 0.01200000000000001}, {0.50949, -0.19743999999999984, -0.25152}}, tol);
        CHECK(opt.state().size() == 2);
        CHECK(opt.state()[0].first == "momentum_buffer[0]");
    }
    SUBCASE("Nesterov, momentum 0.9") {
        Quad<T> q;
        SGD<T> opt(q.params(), T(0.1), T(0.9), T(0), T(0), true);
        check_steps<T>(opt, q,
                       {{0.81, -1.24, 0.12},
                        {0.5751000000000001, -0.4448, -0.13320000000000004},
                        {0.32732100000000003, 0.216704, -0.21664800000000006}},
                       tol);
    }
    SUBCASE("weight decay 0.01 with momentum 0.9") {
        Quad<T> q;
        SGD<T> opt(q.params(), T(0.1), T(0.9), T(0), T(0.01));
        check_steps<T>(opt, q,
                       {{0.899, -1.598, 0.2995},
                        {0.717301, -0.9150020000000001, -0.0010495000000000365},
                        {0.48132449899999996, -0.116388398, -0.2711232005}},
                       sizeof(T) == 8 ? tol_d : 1e-5);
    }
    SUBCASE("no momentum: no state") {
        Quad<T> q;
        SGD<T> opt(q.params(), T(0.1));
        CHECK(opt.state().empty());
    }
}

TEST_CASE_TEMPLATE("Adam: PyTorch and Keras epsilon conventions, L2 weight decay", T, float, double) {
    const double tol = sizeof(T) == 8 ? tol_d : tol_f;
    SUBCASE("PyTorch convention, lr 0.1, default betas and eps") {
        Quad<T> q;
        Adam<T> opt(q.params(), T(0.1));
        CHECK(opt.name() == "Adam");
        CHECK(opt.eps_convention() == AdamEps::pytorch);
        check_steps<T>(opt, q,
                       {{0.900000001, -1.90000000025, 0.4000000005},
                        {0.8004122297123382, -1.8001664861157012, 0.30118742062343007},
                        {0.701586274504415, -1.7006233920464653, 0.2048712509707239}},
                       tol);
    }
    SUBCASE("PyTorch convention, eps 0.1: eps added to sqrt(v_hat)") {
        Quad<T> q;
        Adam<T> opt(q.params(), T(0.1), T(0.9), T(0.999), T(0.1), AdamEps::pytorch);
        check_steps<T>(opt, q,
                       {{0.9090909090909091, -1.9024390243902438, 0.40476190476190477},
                        {0.8188911023806642, -1.8050942613321663, 0.31101000771443155},
                        {0.7296875678278203, -1.7080844028336488, 0.219888594646847}},
                       tol);
    }
    SUBCASE("Keras convention, eps 0.1: epsilon hat, added to sqrt(v)") {
        Quad<T> q;
        Adam<T> opt(q.params(), T(0.1), T(0.9), T(0.999), T(0.1), AdamEps::keras);
        CHECK(opt.eps_convention() == AdamEps::keras);
        check_steps<T>(opt, q,
                       {{0.9759746926647958, -1.9441518440112253, 0.4612574113277207},
                        {0.9453560073608631, -1.8803900083498308, 0.4151485068860841},
                        {0.9106551289848094, -1.8125429498795191, 0.3654267108013976}},
                       tol);
    }
    SUBCASE("L2 weight decay 0.1 (added to the gradient)") {
        Quad<T> q;
        Adam<T> opt(q.params(), T(0.1), T(0.9), T(0.999), T(1e-8), AdamEps::pytorch, T(0.1));
        check_steps<T>(opt, q,
                       {{0.9000000009090909, -1.9000000002380952, 0.4000000004878049},
                        {0.8004122295267845, -1.8001664860916349, 0.30118742059816817},
                        {0.7015862742210723, -1.7006233920100058, 0.20487125093195369}},
                       tol);
    }
    SUBCASE("state: first and second moments per parameter") {
        Quad<T> q;
        Adam<T> opt(q.params(), T(0.1));
        q.compute_grad();
        opt.step();
        auto st = opt.state();
        REQUIRE(st.size() == 4);
        CHECK(st[0].first == "exp_avg[0]");
        CHECK(st[3].first == "exp_avg_sq[1]");
        // m = 0.1 g, v = 0.001 g^2 after one step with g = (1, -4, 2).
        CHECK(static_cast<double>((*st[0].second)[1]) == doctest::Approx(-0.4).epsilon(tol));
        CHECK(static_cast<double>((*st[3].second)[0]) == doctest::Approx(0.004).epsilon(tol));
    }
}

TEST_CASE("Adam: the two epsilon conventions coincide when eps = 0") {
    Quad<double> a, b;
    Adam<double> pa(a.params(), 0.05, 0.8, 0.99, 0.0, AdamEps::pytorch);
    Adam<double> pb(b.params(), 0.05, 0.8, 0.99, 0.0, AdamEps::keras);
    for (int s = 0; s < 5; ++s) {
        a.compute_grad();
        b.compute_grad();
        pa.step();
        pb.step();
    }
    for (std::size_t i = 0; i < 3; ++i) CHECK(a.w(i) == doctest::Approx(b.w(i)).epsilon(1e-14));
    CHECK(a.w(0) != doctest::Approx(1.0));
}

TEST_CASE("Adam with Keras epsilon and an inverse-time schedule reproduces Keras' legacy decay") {
    // Keras 2 Adam(lr=1e-3, decay=3e-4, epsilon=1e-7): update k uses lr / (1 + decay * k), k = 0, 1, ...
    Quad<double> q;
    Adam<double> opt(q.params(), 1e-3, 0.9, 0.999, 1e-7, AdamEps::keras);
    InverseTimeLR<double> sched(opt, 3e-4);
    const Rows expect = {{0.9990000031622677, -1.9990000007905688, 0.49900000158113633},
                         {0.9980003315051963, -1.998000314323146, 0.49800035527882947},
                         {0.9970010027661904, -1.997000949216148, 0.49700109622803956}};
    for (std::size_t s = 0; s < 3; ++s) {
        q.compute_grad();
        opt.step();
        sched.step();
        for (std::size_t i = 0; i < 3; ++i) CHECK(q.w(i) == doctest::Approx(expect[s][i]).epsilon(tol_d));
        // Without the decay w0 would be 0.9980000316036992 after the second update.
        if (s == 1) CHECK(std::fabs(q.w(0) - 0.9980000316036992) > 2e-7);
    }
    CHECK(opt.learning_rate() == doctest::Approx(1e-3 / (1 + 3 * 3e-4)).epsilon(1e-15));
}

TEST_CASE_TEMPLATE("AdamW: decoupled weight decay (PyTorch)", T, float, double) {
    Quad<T> q;
    AdamW<T> opt(q.params(), T(0.1), T(0.9), T(0.999), T(1e-8), T(0.1));
    CHECK(opt.name() == "AdamW");
    check_steps<T>(opt, q,
                   {{0.890000001, -1.88000000025, 0.3950000005},
                    {0.7815718569541611, -1.7614089505845592, 0.29233870322270744},
                    {0.6751012231892007, -1.6443686835605893, 0.19341560270340274}},
                   sizeof(T) == 8 ? tol_d : tol_f);
}

TEST_CASE("AdamW differs from Adam with L2 decay, and with weight_decay 0 equals Adam") {
    Quad<double> a, b, c;
    Adam<double> adam_l2(a.params(), 0.1, 0.9, 0.999, 1e-8, AdamEps::pytorch, 0.1);
    AdamW<double> adamw(b.params(), 0.1, 0.9, 0.999, 1e-8, 0.1);
    AdamW<double> adamw0(c.params(), 0.1, 0.9, 0.999, 1e-8, 0.0);
    Quad<double> d;
    Adam<double> adam(d.params(), 0.1);
    for (int s = 0; s < 3; ++s) {
        for (Quad<double>* qq : {&a, &b, &c, &d}) qq->compute_grad();
        adam_l2.step();
        adamw.step();
        adamw0.step();
        adam.step();
    }
    CHECK(std::fabs(a.w(0) - b.w(0)) > 1e-3);
    for (std::size_t i = 0; i < 3; ++i) CHECK(c.w(i) == d.w(i));
}

TEST_CASE_TEMPLATE("RMSprop (PyTorch): plain; centered with momentum and weight decay", T, float, double) {
    const double tol = sizeof(T) == 8 ? tol_d : tol_f;
    SUBCASE("plain, lr 0.01, alpha 0.99") {
        Quad<T> q;
        RMSprop<T> opt(q.params(), T(0.01));
        CHECK(opt.name() == "RMSprop");
        check_steps<T>(opt, q,
                       {{0.9000000099999991, -1.9000000025, 0.40000000499999977},
                        {0.8329179752650593, -1.8309433291098638, 0.3373391709792283},
                        {0.7799822819823541, -1.7753494456014602, 0.2904332182895075}},
                       tol);
        CHECK(opt.state().size() == 2);
    }
    SUBCASE("centered, momentum 0.5, alpha 0.9, weight decay 0.1") {
        Quad<T> q;
        RMSprop<T> opt(q.params(), T(0.01), T(0.9), T(1e-8), T(0.1), T(0.5), true);
        check_steps<T>(opt, q,
                       {{0.9666666676767677, -1.966666666931217, 0.46666666720867206},
                        {0.924923477968252, -1.9247134863721067, 0.42536169617269476},
                        {0.882418367273596, -1.8816602313950654, 0.38402966953667794}},
                       tol);
        auto st = opt.state();
        REQUIRE(st.size() == 6);
        CHECK(st[0].first == "square_avg[0]");
        CHECK(st[2].first == "grad_avg[0]");
        CHECK(st[4].first == "momentum_buffer[0]");
    }
}

TEST_CASE_TEMPLATE("Adagrad (PyTorch): plain; lr decay, weight decay, initial accumulator", T, float, double) {
    const double tol = sizeof(T) == 8 ? tol_d : tol_f;
    SUBCASE("plain, lr 0.1") {
        Quad<T> q;
        Adagrad<T> opt(q.params(), T(0.1));
        CHECK(opt.name() == "Adagrad");
        check_steps<T>(opt, q,
                       {{0.90000000001, -1.9000000000025, 0.400000000005},
                        {0.8331035268523168, -1.8311250538122312, 0.33753049525152046},
                        {0.7804561813655163, -1.775821515013063, 0.2908991767882513}},
                       tol);
    }
    SUBCASE("lr_decay 0.5, weight decay 0.1, initial accumulator 0.1") {
        Quad<T> q;
        Adagrad<T> opt(q.params(), T(0.1), T(0.5), T(0.1), T(0.1));
        check_steps<T>(opt, q,
                       {{0.9038925537756828, -1.9002822472488825, 0.4011689472423762},
                        {0.8601718764343107, -1.854430284351194, 0.3597472656901701},
                        {0.8336997208367397, -1.8265655740379578, 0.3354111909380999}},
                       tol);
        auto st = opt.state();
        REQUIRE(st.size() == 2);
        CHECK(st[0].first == "sum[0]");
    }
}

TEST_CASE("Frozen parameters (requires_grad = false) are not updated") {
    Quad<double> q;
    q.y.requires_grad = false;
    Adam<double> opt(q.params(), 0.1);
    q.compute_grad();
    opt.step();
    CHECK(q.w(0) == doctest::Approx(0.900000001).epsilon(tol_d));
    CHECK(q.w(2) == 0.5);
}

namespace {
/// Parameters of uneven sizes (over the parallel threshold in total, one frozen), random values
/// and gradients from a seed: the state of a step that may be split over threads.
struct Bank {
    std::vector<std::unique_ptr<Parameter<float>>> ps;
    explicit Bank(std::uint64_t seed) {
        tapir::Rng rng(seed);
        for (std::size_t n : {std::size_t(3), std::size_t(70000), std::size_t(17), std::size_t(90001), std::size_t(40000), std::size_t(5)}) {
            ps.push_back(std::make_unique<Parameter<float>>("p" + std::to_string(ps.size()), Tensor<float>(Shape{n})));
            for (std::size_t i = 0; i < n; ++i) ps.back()->value[i] = static_cast<float>(rng.normal());
        }
        ps[2]->requires_grad = false;
    }
    std::vector<Parameter<float>*> list() {
        std::vector<Parameter<float>*> v;
        for (auto& p : ps) v.push_back(p.get());
        return v;
    }
    void gradients(tapir::Rng& rng) {
        for (auto& p : ps)
            for (std::size_t i = 0; i < p->size(); ++i) p->grad[i] = static_cast<float>(rng.normal());
    }
};

/// Three steps of the optimiser `make` builds, on simd::num_threads() = threads; the values after.
std::vector<std::vector<float>> three_steps(unsigned threads, const std::function<std::unique_ptr<Optimizer<float>>(std::vector<Parameter<float>*>)>& make) {
    Bank b(77);
    std::unique_ptr<Optimizer<float>> opt = make(b.list());
    tapir::Rng rng(78);
    const unsigned before = tapir::simd::num_threads();
    tapir::simd::set_num_threads(threads);
    for (int s = 0; s < 3; ++s) {
        b.gradients(rng);
        opt->step();
    }
    tapir::simd::set_num_threads(before);
    std::vector<std::vector<float>> out;
    for (auto& p : b.ps) out.emplace_back(p->value.data(), p->value.data() + p->size());
    return out;
}
} // namespace

TEST_CASE("Optimiser steps split over simd threads give the same bits as one thread; frozen parameters stay") {
    const std::vector<std::pair<const char*, std::function<std::unique_ptr<Optimizer<float>>(std::vector<Parameter<float>*>)>>> makers{
        {"SGD momentum", [](std::vector<Parameter<float>*> p) { return std::unique_ptr<Optimizer<float>>(new SGD<float>(p, 0.01f, 0.9f)); }},
        {"Adam", [](std::vector<Parameter<float>*> p) { return std::unique_ptr<Optimizer<float>>(new Adam<float>(p, 0.01f)); }},
        {"RMSprop", [](std::vector<Parameter<float>*> p) { return std::unique_ptr<Optimizer<float>>(new RMSprop<float>(p, 0.01f)); }},
        {"Adagrad", [](std::vector<Parameter<float>*> p) { return std::unique_ptr<Optimizer<float>>(new Adagrad<float>(p, 0.01f)); }},
    };
    const Bank fresh(77);
    for (const auto& m : makers) {
        CAPTURE(m.first);
        const auto one = three_steps(1, m.second), two = three_steps(2, m.second), three = three_steps(3, m.second);
        for (std::size_t k = 0; k < one.size(); ++k) {
            CAPTURE(k);
            CHECK(std::memcmp(one[k].data(), two[k].data(), one[k].size() * sizeof(float)) == 0);
            CHECK(std::memcmp(one[k].data(), three[k].data(), one[k].size() * sizeof(float)) == 0);
            // Every trainable parameter moved (none was skipped by the split), the frozen one did not.
            const bool moved = std::memcmp(one[k].data(), fresh.ps[k]->value.data(), one[k].size() * sizeof(float)) != 0;
            CHECK(moved == (k != 2));
        }
    }
}
