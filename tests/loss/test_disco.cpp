// Distance correlation (DisCo): check values, weights as replication, invariances, the
// background-only penalty, gradient checks.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/loss/disco.hpp>

#include "support/gradcheck.hpp"

using namespace tapir;
using namespace tapir_test;

namespace {
double dcorr(const std::vector<double>& x, const std::vector<double>& y) {
    Tape<double> t;
    const std::size_t n = x.size();
    return loss::distance_correlation_sq(t.constant(Td(Shape{n}, x)), t.constant(Td(Shape{n}, y))).item();
}
/// Textbook dCorr^2 (Szekely et al.) with plain loops, unweighted.
double dcorr_ref(const std::vector<double>& x, const std::vector<double>& y) {
    const std::size_t n = x.size();
    auto centred = [n](const std::vector<double>& v) {
        std::vector<double> a(n * n), row(n, 0.0);
        double all = 0;
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j) {
                a[i * n + j] = std::abs(v[i] - v[j]);
                row[i] += a[i * n + j] / static_cast<double>(n);
                all += a[i * n + j] / static_cast<double>(n * n);
            }
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j) a[i * n + j] += all - row[i] - row[j];
        return a;
    };
    const auto a = centred(x), b = centred(y);
    double xy = 0, xx = 0, yy = 0;
    for (std::size_t k = 0; k < n * n; ++k) {
        xy += a[k] * b[k];
        xx += a[k] * a[k];
        yy += b[k] * b[k];
    }
    return xy / std::sqrt(xx * yy);
}
} // namespace

TEST_CASE("distance correlation: check values") {
    const std::vector<double> x{-2, -1, 0, 1, 2};
    std::vector<double> x2;
    for (double v : x) x2.push_back(v * v);
    CHECK(dcorr(x, x) == doctest::Approx(1.0).epsilon(1e-14));
    CHECK(dcorr(x, x2) == doctest::Approx(0.266177).epsilon(2e-6));
    CHECK(dcorr_ref(x, x2) == doctest::Approx(0.266177).epsilon(2e-6));
    // Random data: equals the textbook loops; invariant under affine maps; symmetric.
    const Td a = rnd(Shape{40}, 1), b = rnd(Shape{40}, 2);
    std::vector<double> av(a.begin(), a.end()), bv(b.begin(), b.end()), dep, aff;
    for (std::size_t i = 0; i < 40; ++i) {
        dep.push_back(av[i] * av[i] + 0.3 * bv[i]);
        aff.push_back(-3.0 * av[i] + 7.0);
    }
    CHECK(dcorr(av, dep) == doctest::Approx(dcorr_ref(av, dep)).epsilon(1e-12));
    CHECK(dcorr(aff, dep) == doctest::Approx(dcorr(av, dep)).epsilon(1e-12));
    CHECK(dcorr(dep, av) == doctest::Approx(dcorr(av, dep)).epsilon(1e-12));
    CHECK(dcorr(av, aff) == doctest::Approx(1.0).epsilon(1e-12));
    // Independent samples: small (bias ~ 1/sqrt(N)); dependent: clearly larger.
    const Td c = rnd(Shape{400}, 3), d = rnd(Shape{400}, 4);
    std::vector<double> cv(c.begin(), c.end()), dv(d.begin(), d.end()), cd;
    for (std::size_t i = 0; i < 400; ++i) cd.push_back(cv[i] * cv[i]);
    const double indep = dcorr(cv, dv), depend = dcorr(cv, cd);
    CHECK(indep < 0.02);
    CHECK(depend > 0.2);
    // A constant variable gives 0, not NaN.
    CHECK(dcorr(av, std::vector<double>(40, 1.5)) == 0.0);
}

TEST_CASE("distance correlation: integer weights equal replicated events") {
    const std::vector<double> x{0.3, -1.2, 2.0, 0.7, -0.4, 1.1}, y{1.0, 0.2, -0.5, 0.9, 0.0, -1.3};
    const std::vector<double> w{2, 1, 3, 1, 1, 2};
    std::vector<double> xr, yr;
    for (std::size_t i = 0; i < x.size(); ++i)
        for (int k = 0; k < static_cast<int>(w[i]); ++k) {
            xr.push_back(x[i]);
            yr.push_back(y[i]);
        }
    Tape<double> t;
    const V wv = t.constant(Td(Shape{6}, w));
    const double weighted = loss::distance_correlation_sq(t.constant(Td(Shape{6}, x)), t.constant(Td(Shape{6}, y)), &wv).item();
    CHECK(weighted == doctest::Approx(dcorr_ref(xr, yr)).epsilon(1e-12));
    // Scale of the weights is irrelevant (they are normalised to sum N); zero weights drop events.
    const V w10 = t.constant(Td(Shape{6}, {20, 10, 30, 10, 10, 20}));
    CHECK(loss::distance_correlation_sq(t.constant(Td(Shape{6}, x)), t.constant(Td(Shape{6}, y)), &w10).item() ==
          doctest::Approx(weighted).epsilon(1e-12));
    const V w0 = t.constant(Td(Shape{6}, {1, 1, 0, 1, 1, 1}));
    const std::vector<double> xs{0.3, -1.2, 0.7, -0.4, 1.1}, ys{1.0, 0.2, 0.9, 0.0, -1.3};
    CHECK(loss::distance_correlation_sq(t.constant(Td(Shape{6}, x)), t.constant(Td(Shape{6}, y)), &w0).item() ==
          doctest::Approx(dcorr_ref(xs, ys)).epsilon(1e-12));
}

TEST_CASE("DisCo penalty uses background events only") {
    Tape<double> t;
    const Td m = rnd(Shape{8, 1}, 5), f = rnd(Shape{8, 1}, 6, 0, 1);
    const Td lab(Shape{8}, {1, 0, 0, 1, 0, 0, 1, 0});
    std::vector<double> mb, fb;
    for (std::size_t i = 0; i < 8; ++i)
        if (lab[i] == 0) {
            mb.push_back(m[i]);
            fb.push_back(f[i]);
        }
    const V pen = loss::disco_penalty(t.constant(m), t.constant(f), t.constant(lab), 10.0);
    CHECK(pen.item() == doctest::Approx(10 * dcorr_ref(mb, fb)).epsilon(1e-12));
    // Weights: background weights enter; signal weights are irrelevant.
    const V w1 = t.constant(Td(Shape{8}, {5, 1, 1, 7, 1, 1, 9, 1}));
    CHECK(loss::disco_penalty(t.constant(m), t.constant(f), t.constant(lab), 10.0, &w1).item() == doctest::Approx(pen.item()).epsilon(1e-12));
    // The full DisCo loss: BCE + penalty on sigmoid(logits).
    const Td z = rnd(Shape{8, 1}, 7);
    Td p(Shape{8, 1});
    for (std::size_t i = 0; i < 8; ++i) p[i] = 1 / (1 + std::exp(-z[i]));
    const double l = loss::disco_loss(t.constant(z), t.constant(lab), t.constant(m), 3.0).item();
    const double expect = loss::binary_cross_entropy_with_logits(t.constant(z), t.constant(lab)).item() +
                          loss::disco_penalty(t.constant(m), t.constant(p), t.constant(lab), 3.0).item();
    CHECK(l == doctest::Approx(expect).epsilon(1e-12));
    // Errors.
    CHECK_THROWS_WITH_AS(loss::disco_penalty(t.constant(m), t.constant(f), t.constant(Td(Shape{8}, 1.0)), 1.0), doctest::Contains("background"),
                         value_error);
    CHECK_THROWS_AS(loss::disco_penalty(t.constant(m), t.constant(rnd(Shape{7}, 1)), t.constant(lab), 1.0), shape_error);
    CHECK_THROWS_AS(loss::distance_correlation_sq(t.constant(Td(Shape{1}, 1.0)), t.constant(Td(Shape{1}, 1.0))), shape_error);
    CHECK_THROWS_AS(loss::distance_correlation_sq(t.constant(rnd(Shape{4, 2}, 1)), t.constant(rnd(Shape{4}, 1))), shape_error);
}

TEST_CASE("distance correlation: gradcheck and gradgradcheck, weighted and not; float") {
    const Td x = rnd(Shape{7}, 11), y = rnd(Shape{7, 1}, 12), w = rnd(Shape{7}, 13, 0.2, 2.0);
    const GradcheckFn f = [](Tape<double>&, const Vs& v) { return loss::distance_correlation_sq(v[0], v[1]); };
    const GradcheckFn fw = [&](Tape<double>& t, const Vs& v) {
        const V wv = t.view(w);
        return loss::distance_correlation_sq(v[0], v[1], &wv);
    };
    const Td lab(Shape{7}, {0, 1, 0, 0, 1, 0, 0});
    const GradcheckFn fp = [&](Tape<double>& t, const Vs& v) {
        const V wv = t.view(w);
        return loss::disco_loss(v[1], t.view(lab), v[0], 5.0, &wv);
    };
    for (const auto* fn : {&f, &fw, &fp}) {
        const auto r1 = gradcheck(*fn, {x, y});
        INFO(r1.message());
        CHECK(r1.passed);
        const auto r2 = gradgradcheck(*fn, {x, y});
        INFO(r2.message());
        CHECK(r2.passed);
    }
    Tape<float> tf;
    Tape<double> td;
    const Td a = rnd(Shape{50}, 14), b = rnd(Shape{50}, 15);
    Td c(Shape{50});
    for (std::size_t i = 0; i < 50; ++i) c[i] = a[i] * a[i] + 0.5 * b[i];
    CHECK(loss::distance_correlation_sq(tf.constant(a.cast<float>()), tf.constant(c.cast<float>())).item() ==
          doctest::Approx(loss::distance_correlation_sq(td.constant(a), td.constant(c)).item()).epsilon(1e-5));
}
