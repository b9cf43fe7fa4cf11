// The optimiser base: argument checks with clear messages, all-or-nothing steps, no allocation
// after the first step, and the vector kernels against a plain loop on every instruction set.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <tapir/random.hpp>
#include <tapir/optim/optim.hpp>
#include <tapir/simd/arch.hpp>
#include <vector>

#include "support/alloc_counter.hpp"

using namespace tapir;
using namespace tapir::optim;

namespace {
template <class T>
std::vector<std::unique_ptr<Optimizer<T>>> all_optimizers(std::vector<Parameter<T>*> ps) {
    std::vector<std::unique_ptr<Optimizer<T>>> v;
    v.emplace_back(new SGD<T>(ps, T(0.01)));
    v.emplace_back(new SGD<T>(ps, T(0.01), T(0.9), T(0), T(1e-4), true));
    v.emplace_back(new Adam<T>(ps, T(0.01)));
    v.emplace_back(new Adam<T>(ps, T(0.01), T(0.9), T(0.999), T(1e-7), AdamEps::keras, T(1e-3)));
    v.emplace_back(new AdamW<T>(ps, T(0.01)));
    v.emplace_back(new RMSprop<T>(ps, T(0.01), T(0.99), T(1e-8), T(0), T(0.9), true));
    v.emplace_back(new Adagrad<T>(ps, T(0.01), T(0.1), T(1e-3)));
    return v;
}

template <class T>
void fill(Tensor<T>& t, Rng& r, double scale) {
    for (auto& x : t) x = static_cast<T>(r.normal() * scale);
}
} // namespace

TEST_CASE("A zero, negative, NaN or infinite learning rate is rejected with a clear message") {
    Parameter<double> w("w", Tensor<double>(Shape{2}, {1.0, 2.0}));
    std::vector<Parameter<double>*> ps{&w};
    const double nan = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_WITH_AS(SGD<double>(ps, 0.0), "SGD: learning rate must be positive and finite, got 0", value_error);
    CHECK_THROWS_WITH_AS(Adam<double>(ps, -1e-3), "Adam: learning rate must be positive and finite, got -0.001", value_error);
    CHECK_THROWS_WITH_AS(AdamW<double>(ps, nan), "AdamW: learning rate must be positive and finite, got NaN", value_error);
    CHECK_THROWS_WITH_AS(RMSprop<double>(ps, HUGE_VAL), "RMSprop: learning rate must be positive and finite, got inf", value_error);
    CHECK_THROWS_WITH_AS(Adagrad<double>(ps, -0.0), "Adagrad: learning rate must be positive and finite, got -0", value_error);
    CHECK_THROWS_WITH_AS(Adam<float>({}, -1.0f), "Adam: learning rate must be positive and finite, got -1", value_error);

    Adam<double> opt(ps, 1e-3);
    CHECK_THROWS_WITH_AS(opt.set_learning_rate(0.0), "Adam: learning rate must be positive and finite, got 0", value_error);
    CHECK_THROWS_WITH_AS(opt.set_learning_rate(nan), "Adam: learning rate must be positive and finite, got NaN", value_error);
    CHECK_THROWS_WITH_AS(opt.set_scheduled_learning_rate(-1.0),
                         "Adam: scheduled learning rate must be non-negative and finite, got -1", value_error);
    CHECK(opt.learning_rate() == 1e-3);
    opt.set_learning_rate(2e-3);
    CHECK(opt.learning_rate() == 2e-3);
}

TEST_CASE("Hyper-parameters out of range are rejected, naming the optimiser and the value") {
    Parameter<double> w("w", Tensor<double>(Shape{2}));
    std::vector<Parameter<double>*> ps{&w};
    CHECK_THROWS_WITH_AS(Adam<double>(ps, 1e-3, 1.0), "Adam: beta1 must be in [0, 1), got 1", value_error);
    CHECK_THROWS_WITH_AS(Adam<double>(ps, 1e-3, 0.9, -0.5), "Adam: beta2 must be in [0, 1), got -0.5", value_error);
    CHECK_THROWS_WITH_AS(Adam<double>(ps, 1e-3, 0.9, 0.999, -1e-8), "Adam: eps must be in [0, inf), got -1e-08", value_error);
    CHECK_THROWS_WITH_AS(AdamW<double>(ps, 1e-3, 0.9, 0.999, 1e-8, -0.01), "AdamW: weight_decay must be in [0, inf), got -0.01",
                         value_error);
    CHECK_THROWS_WITH_AS(SGD<double>(ps, 0.1, 1.5), "SGD: momentum must be in [0, 1], got 1.5", value_error);
    CHECK_THROWS_WITH_AS(SGD<double>(ps, 0.1, 0.0, 0.0, 0.0, true),
                         "SGD: Nesterov momentum requires momentum > 0 and dampening = 0, got momentum 0 and dampening 0", value_error);
    CHECK_THROWS_WITH_AS(SGD<double>(ps, 0.1, 0.9, 0.1, 0.0, true),
                         "SGD: Nesterov momentum requires momentum > 0 and dampening = 0, got momentum 0.9 and dampening 0.1", value_error);
    CHECK_THROWS_WITH_AS(RMSprop<double>(ps, 0.01, 1.01), "RMSprop: alpha must be in [0, 1], got 1.01", value_error);
    CHECK_THROWS_WITH_AS(Adagrad<double>(ps, 0.01, -0.1), "Adagrad: lr_decay must be in [0, inf), got -0.1", value_error);
}

TEST_CASE("Parameter lists: null and duplicate entries rejected") {
    Parameter<double> w("w", Tensor<double>(Shape{2}));
    CHECK_THROWS_WITH_AS(SGD<double>({&w, nullptr}, 0.1), "SGD: parameter #1 is a null pointer", value_error);
    CHECK_THROWS_WITH_AS(Adam<double>({&w, &w}, 0.1), "Adam: parameter 'w' is listed twice (#0 and #1); it would be updated twice",
                         value_error);
}

TEST_CASE("A gradient of the wrong shape fails the step before any parameter changes") {
    Parameter<double> a("a", Tensor<double>(Shape{2}, {1.0, 2.0}));
    Parameter<double> b("b", Tensor<double>(Shape{3}, {1.0, 2.0, 3.0}));
    a.grad.fill(1.0);
    b.grad = Tensor<double>(Shape{1, 3}, 1.0);
    Adam<double> opt({&a, &b}, 0.1);
    CHECK_THROWS_WITH_AS(opt.step(), "Adam: parameter 'b' (#1) has a gradient of shape (1, 3) but a value of shape (3,)", shape_error);
    CHECK(a.value[0] == 1.0);
    CHECK(opt.iterations() == 0);
}

TEST_CASE("check_finite names the first non-finite gradient; off by default") {
    Parameter<double> a("a", Tensor<double>(Shape{3}, {1.0, 2.0, 3.0}));
    a.grad[2] = std::numeric_limits<double>::quiet_NaN();
    SGD<double> opt({&a}, 0.1);
    opt.set_check_finite(true);
    CHECK_THROWS_WITH_AS(opt.step(), "SGD: gradient of parameter 'a' is NaN at element 2", value_error);
    CHECK(a.value[2] == 3.0);
    opt.set_check_finite(false);
    opt.step();
    CHECK(std::isnan(a.value[2]));
}

TEST_CASE_TEMPLATE("No heap allocation in step() after the first call; zero_grad clears", T, float, double) {
    Rng rng(7);
    Parameter<T> w("w", Tensor<T>(Shape{17, 5})), b("b", Tensor<T>(Shape{5}));
    fill(w.value, rng, 1.0);
    for (auto& opt : all_optimizers<T>({&w, &b})) {
        INFO(opt->name());
        fill(w.grad, rng, 1.0);
        fill(b.grad, rng, 1.0);
        opt->step();
        tapir_test::AllocationScope scope;
        for (int s = 0; s < 5; ++s) {
            opt->step();
            clip_grad_norm(opt->parameters(), T(1));
        }
        CHECK(scope.count() == 0);
        opt->zero_grad();
        CHECK(w.grad[3] == T(0));
        CHECK(b.grad[4] == T(0));
        for (const T x : w.value) REQUIRE(std::isfinite(x));
    }
}

namespace {
/// Plain double loops of the update rules, independent of the kernels.
void ref_adam(std::vector<double>& p, const std::vector<double>& g, std::vector<double>& m, std::vector<double>& v, int t,
              double lr, double wd, bool keras, bool decoupled) {
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    for (std::size_t i = 0; i < p.size(); ++i) {
        double d = g[i];
        if (!decoupled) d += wd * p[i];
        if (decoupled) p[i] *= 1 - lr * wd;
        m[i] = b1 * m[i] + (1 - b1) * d;
        v[i] = b2 * v[i] + (1 - b2) * d * d;
        const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
        if (keras)
            p[i] -= lr * std::sqrt(bc2) / bc1 * m[i] / (std::sqrt(v[i]) + eps);
        else
            p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i] / bc2) + eps);
    }
}
void ref_rmsprop(std::vector<double>& p, const std::vector<double>& g, std::vector<double>& sq, std::vector<double>& ga,
                 std::vector<double>& buf) {
    const double lr = 0.01, alpha = 0.9, eps = 1e-8, mu = 0.5;
    for (std::size_t i = 0; i < p.size(); ++i) {
        sq[i] = alpha * sq[i] + (1 - alpha) * g[i] * g[i];
        ga[i] = alpha * ga[i] + (1 - alpha) * g[i];
        buf[i] = mu * buf[i] + g[i] / (std::sqrt(sq[i] - ga[i] * ga[i]) + eps);
        p[i] -= lr * buf[i];
    }
}
void ref_adagrad(std::vector<double>& p, const std::vector<double>& g, std::vector<double>& s, double clr) {
    for (std::size_t i = 0; i < p.size(); ++i) {
        s[i] += g[i] * g[i];
        p[i] -= clr * g[i] / (std::sqrt(s[i]) + 1e-10);
    }
}
void ref_sgd_nesterov(std::vector<double>& p, const std::vector<double>& g, std::vector<double>& buf, bool first) {
    for (std::size_t i = 0; i < p.size(); ++i) {
        const double d = g[i] + 1e-3 * p[i];
        buf[i] = first ? d : 0.9 * buf[i] + d;
        p[i] -= 0.05 * (d + 0.9 * buf[i]);
    }
}
} // namespace

TEST_CASE("Vector kernels match plain loops on every instruction set (lengths with tails)") {
    const simd::isa saved = simd::active_isa();
    for (simd::isa which : {simd::isa::scalar, simd::isa::avx2, simd::isa::avx512, simd::isa::neon}) {
        if (!simd::isa_supported(which)) continue;
        simd::set_active_isa(which);
        for (std::size_t n : {1u, 7u, 16u, 37u, 1001u}) {
            INFO(simd::isa_name(which) << ", n = " << n);
            Rng rng(n);
            std::vector<double> p0(n), gs(5 * n);
            for (auto& x : p0) x = rng.normal();
            for (auto& x : gs) x = rng.normal();
            for (int variant = 0; variant < 6; ++variant) {
                Parameter<double> w("w", Tensor<double>(Shape{n}, p0));
                std::unique_ptr<Optimizer<double>> opt;
                if (variant == 0) opt.reset(new Adam<double>({&w}, 0.01, 0.9, 0.999, 1e-8, AdamEps::pytorch, 0.01));
                if (variant == 1) opt.reset(new Adam<double>({&w}, 0.01, 0.9, 0.999, 1e-8, AdamEps::keras));
                if (variant == 2) opt.reset(new AdamW<double>({&w}, 0.01, 0.9, 0.999, 1e-8, 0.1));
                if (variant == 3) opt.reset(new RMSprop<double>({&w}, 0.01, 0.9, 1e-8, 0.0, 0.5, true));
                if (variant == 4) opt.reset(new Adagrad<double>({&w}, 0.1, 0.5));
                if (variant == 5) opt.reset(new SGD<double>({&w}, 0.05, 0.9, 0.0, 1e-3, true));
                std::vector<double> p = p0, s1(n, 0.0), s2(n, 0.0), s3(n, 0.0);
                for (int t = 1; t <= 5; ++t) {
                    std::vector<double> g(gs.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(t - 1) * n),
                                          gs.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(t) * n));
                    for (std::size_t i = 0; i < n; ++i) w.grad[i] = g[i];
                    opt->step();
                    if (variant == 0) ref_adam(p, g, s1, s2, t, 0.01, 0.01, false, false);
                    if (variant == 1) ref_adam(p, g, s1, s2, t, 0.01, 0.0, true, false);
                    if (variant == 2) ref_adam(p, g, s1, s2, t, 0.01, 0.1, false, true);
                    if (variant == 3) ref_rmsprop(p, g, s1, s2, s3);
                    if (variant == 4) ref_adagrad(p, g, s1, 0.1 / (1 + (t - 1) * 0.5));
                    if (variant == 5) ref_sgd_nesterov(p, g, s1, t == 1);
                }
                double worst = 0;
                for (std::size_t i = 0; i < n; ++i) worst = std::fmax(worst, std::fabs(w.value[i] - p[i]));
                INFO("variant " << variant);
                CHECK(worst < 1e-12);
            }
        }
    }
    simd::set_active_isa(saved);
}
