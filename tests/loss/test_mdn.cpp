// Mixture density NLL: equals a direct sum of Gaussian densities on random inputs (with and
// without truncation), normalisation of the truncated mixture, the ln sqrt(2 pi e) bound,
// stability for extreme inputs, gradient checks.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/loss/mdn.hpp>

#include "support/gradcheck.hpp"

using namespace tapir;
using namespace tapir_test;

namespace {
const double pi = 3.14159265358979323846;
double softplus_d(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }
double phi(double x) { return 0.5 * (1 + std::erf(x / std::sqrt(2.0))); }

/// -mean log sum_k pi_k N(m; mu_k, s_k) / Z_k, straight from the definition.
double direct_nll(const Td& logits, const Td& mu, const Td& raw, const Td& m, const Td* w, double floor, bool trunc, double lo,
                  double hi) {
    const std::size_t n = logits.dim(0), k = logits.dim(1);
    double acc = 0, wsum = 0;
    for (std::size_t i = 0; i < n; ++i) {
        double norm = 0;
        for (std::size_t j = 0; j < k; ++j) norm += std::exp(logits(i, j));
        double p = 0;
        for (std::size_t j = 0; j < k; ++j) {
            const double s = softplus_d(raw(i, j)) + floor;
            double dens = std::exp(-0.5 * std::pow((m[i] - mu(i, j)) / s, 2)) / (s * std::sqrt(2 * pi));
            if (trunc) dens /= phi((hi - mu(i, j)) / s) - phi((lo - mu(i, j)) / s);
            p += std::exp(logits(i, j)) / norm * dens;
        }
        const double wi = w ? (*w)[i] : 1.0;
        acc += -std::log(p) * wi;
        wsum += wi;
    }
    return acc / wsum;
}
} // namespace

TEST_CASE("MDN NLL equals the direct sum of Gaussian densities on random inputs") {
    for (std::uint64_t seed = 0; seed < 5; ++seed) {
        const Td logits = rnd(Shape{20, 5}, 10 * seed + 1), mu = rnd(Shape{20, 5}, 10 * seed + 2, -0.5, 1.5);
        const Td raw = rnd(Shape{20, 5}, 10 * seed + 3, -3, 1), m = rnd(Shape{20, 1}, 10 * seed + 4, 0, 1);
        const Td w = rnd(Shape{20}, 10 * seed + 5, -0.2, 1.0);
        Tape<double> t;
        const V l = t.constant(logits), u = t.constant(mu), r = t.constant(raw), mv = t.constant(m), wv = t.constant(w);
        loss::MdnOptions<double> opt;
        CHECK(loss::mdn_nll(l, u, r, mv).item() == doctest::Approx(direct_nll(logits, mu, raw, m, nullptr, 1e-4, false, 0, 1)).epsilon(1e-12));
        CHECK(loss::mdn_nll(l, u, r, mv, &wv).item() == doctest::Approx(direct_nll(logits, mu, raw, m, &w, 1e-4, false, 0, 1)).epsilon(1e-11));
        opt.truncate = true;
        CHECK(loss::mdn_nll(l, u, r, mv, nullptr, opt).item() ==
              doctest::Approx(direct_nll(logits, mu, raw, m, nullptr, 1e-4, true, 0, 1)).epsilon(1e-12));
        opt.lo = -0.3;
        opt.hi = 1.2;
        opt.sigma_floor = 0.01;
        CHECK(loss::mdn_nll(l, u, r, mv, &wv, opt).item() ==
              doctest::Approx(direct_nll(logits, mu, raw, m, &w, 0.01, true, -0.3, 1.2)).epsilon(1e-11));
        // m as (N,) works the same.
        CHECK(loss::mdn_nll(l, u, r, t.constant(m.reshaped(Shape{20}))).item() == doctest::Approx(loss::mdn_nll(l, u, r, mv).item()));
    }
}

TEST_CASE("MDN: truncated mixture is normalised on its interval; bound ln sqrt(2 pi e)") {
    // One event's mixture evaluated on a grid over [lo, hi]: integral 1 with truncation.
    const Td logits = rnd(Shape{1, 5}, 1), mu = rnd(Shape{1, 5}, 2, -0.5, 1.5), raw = rnd(Shape{1, 5}, 3, -3, 0);
    const std::size_t grid = 20001;
    Tape<double> t;
    Td lg(Shape{grid, 5}), ug(Shape{grid, 5}), rg(Shape{grid, 5}), mg(Shape{grid, 1});
    for (std::size_t i = 0; i < grid; ++i) {
        for (std::size_t j = 0; j < 5; ++j) {
            lg(i, j) = logits[j];
            ug(i, j) = mu[j];
            rg(i, j) = raw[j];
        }
        mg[i] = static_cast<double>(i) / (grid - 1);
    }
    loss::MdnOptions<double> opt;
    opt.truncate = true;
    const V lp = loss::mdn_log_prob(t.constant(lg), t.constant(ug), t.constant(rg), t.constant(mg), opt);
    double integral = 0;  // trapezoid
    for (std::size_t i = 0; i < grid; ++i) integral += std::exp(lp[i]) * (i == 0 || i + 1 == grid ? 0.5 : 1.0) / (grid - 1);
    CHECK(integral == doctest::Approx(1.0).epsilon(1e-6));

    // m ~ N(0, 1) modelled by N(0, 1) components: NLL -> ln sqrt(2 pi e) = 1.4189 nats.
    const std::size_t n = 20000;
    Rng rng(3);
    Td m(Shape{n, 1}), zeros(Shape{n, 3}, 0.0), rawone(Shape{n, 3}, std::log(std::expm1(1.0 - 1e-4)));
    for (auto& v : m) v = rng.normal();
    t.clear();
    const double nll = loss::mdn_nll(t.constant(zeros), t.constant(zeros), t.constant(rawone), t.constant(m)).item();
    CHECK(nll == doctest::Approx(0.5 * std::log(2 * pi * std::exp(1.0))).epsilon(0.01));
    CHECK(0.5 * std::log(2 * pi * std::exp(1.0)) == doctest::Approx(1.4189).epsilon(1e-4));
}

TEST_CASE("MDN: extreme inputs stay finite") {
    Tape<double> t;
    // Target 60 widths from every component: direct densities underflow to 0, log-sum-exp does not.
    const V l = t.constant(Td(Shape{1, 2}, {500.0, -500.0})), u = t.constant(Td(Shape{1, 2}, {0.0, 0.1}));
    const V r = t.constant(Td(Shape{1, 2}, {std::log(std::expm1(0.01 - 1e-4)), 0.0}));
    const V m = t.constant(Td(Shape{1, 1}, {0.6}));
    const double nll = loss::mdn_nll(l, u, r, m).item();
    CHECK(std::isfinite(nll));
    const double s2 = std::log(2.0) + 1e-4;  // softplus(0) + floor
    const double t1 = -0.5 * 60 * 60 - std::log(0.01) - 0.5 * std::log(2 * pi);
    const double t2 = -1000.0 - 0.5 * std::pow(0.5 / s2, 2) - std::log(s2) - 0.5 * std::log(2 * pi);
    CHECK(nll == doctest::Approx(-(t2 + std::log1p(std::exp(t1 - t2)))).epsilon(1e-12));
    // A truncated component lying entirely outside [0, 1]: finite (its Z is floored).
    loss::MdnOptions<double> opt;
    opt.truncate = true;
    const V far = t.constant(Td(Shape{1, 2}, {30.0, -1.0}));
    const V v = loss::mdn_nll(t.constant(Td(Shape{1, 2}, {0.0, 0.0})), far, r, m, nullptr, opt);
    CHECK(std::isfinite(v.item()));
    // float: large logits and a narrow component.
    Tape<float> tf;
    const Var<float> lf = tf.constant(Tensor<float>(Shape{1, 2}, {80.f, -80.f}));
    const Var<float> uf = tf.constant(Tensor<float>(Shape{1, 2}, {0.f, 1.f}));
    const Var<float> rf = tf.constant(Tensor<float>(Shape{1, 2}, {-8.f, -8.f}));
    CHECK(std::isfinite(loss::mdn_nll(lf, uf, rf, tf.constant(Tensor<float>(Shape{1}, {0.5f}))).item()));
    // Errors.
    CHECK_THROWS_AS(loss::mdn_nll(l, t.constant(Td(Shape{1, 3}, 0.0)), r, m), shape_error);
    CHECK_THROWS_AS(loss::mdn_nll(l, u, r, t.constant(Td(Shape{2, 1}, 0.0))), shape_error);
    opt.lo = 1.0;
    CHECK_THROWS_AS(loss::mdn_nll(l, u, r, m, nullptr, opt), value_error);
}

TEST_CASE("MDN NLL: gradcheck and gradgradcheck") {
    const Td logits = rnd(Shape{6, 3}, 41), mu = rnd(Shape{6, 3}, 42, -0.5, 1.5), raw = rnd(Shape{6, 3}, 43, -2, 1);
    const Td m = rnd(Shape{6, 1}, 44, 0, 1), w = rnd(Shape{6}, 45, -0.2, 1);
    for (bool trunc : {false, true}) {
        INFO("truncated " << trunc);
        const GradcheckFn f = [&](Tape<double>& t, const Vs& x) {
            loss::MdnOptions<double> opt;
            opt.truncate = trunc;
            const V wv = t.view(w);
            return loss::mdn_nll(x[0], x[1], x[2], x[3], &wv, opt);
        };
        const auto r1 = gradcheck(f, {logits, mu, raw, m});
        INFO(r1.message());
        CHECK(r1.passed);
        const auto r2 = gradgradcheck(f, {logits, mu, raw, m});
        INFO(r2.message());
        CHECK(r2.passed);
    }
}
