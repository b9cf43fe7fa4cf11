// Classification losses: hand-computed values, weights (including negative ones), first- and
// second-order gradient checks, float builds, and errors on bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/loss/classification.hpp>

#include "support/gradcheck.hpp"

using namespace tapir;
using namespace tapir_test;

namespace {
double softplus_d(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }
} // namespace

TEST_CASE("binary cross-entropy from logits: values, weights, extreme logits") {
    Tape<double> t;
    const Td z(Shape{4}, {0.3, -1.2, 2.5, -0.1});
    const Td y(Shape{4}, {1, 0, 1, 0});
    const Td w(Shape{4}, {1.0, 2.0, -0.5, 0.7});
    double plain = 0, weighted = 0, wsum = 0;
    for (std::size_t i = 0; i < 4; ++i) {
        const double l = softplus_d(z[i]) - y[i] * z[i];
        plain += l / 4;
        weighted += w[i] * l;
        wsum += w[i];
    }
    const V zv = t.constant(z), yv = t.constant(y), wv = t.constant(w);
    CHECK(loss::binary_cross_entropy_with_logits(zv, yv).item() == doctest::Approx(plain).epsilon(1e-14));
    CHECK(loss::binary_cross_entropy_with_logits(zv, yv, &wv).item() == doctest::Approx(weighted / wsum).epsilon(1e-14));
    // (N, 1) logits with (N,) targets: no (N, N) broadcast.
    const V z2 = t.constant(z.reshaped(Shape{4, 1}));
    CHECK(loss::binary_cross_entropy_with_logits(z2, yv).item() == doctest::Approx(plain).epsilon(1e-14));
    // Multi-column predictions: mean over columns per event, weights per event.
    const Td zz = rnd(Shape{4, 3}, 3), yy = rnd(Shape{4, 3}, 4, 0, 1);
    double multi = 0;
    for (std::size_t i = 0; i < 4; ++i)
        for (std::size_t j = 0; j < 3; ++j) multi += w[i] * (softplus_d(zz(i, j)) - yy(i, j) * zz(i, j)) / 3 / wsum;
    CHECK(loss::binary_cross_entropy_with_logits(t.constant(zz), t.constant(yy), &wv).item() == doctest::Approx(multi).epsilon(1e-13));
    // Logits of +-1000 stay finite in float too.
    Tape<float> tf;
    const Var<float> zf = tf.constant(Tensor<float>(Shape{2}, {1000.f, -1000.f}));
    const Var<float> yf = tf.constant(Tensor<float>(Shape{2}, {0.f, 1.f}));
    CHECK(loss::binary_cross_entropy_with_logits(zf, yf).item() == doctest::Approx(1000.0));
}

TEST_CASE("binary cross-entropy from probabilities follows Keras' clipping") {
    Tape<double> t;
    const double eps = 1e-7;
    const Td p(Shape{4}, {0.8, 0.0, 1.0, 0.3});
    const Td y(Shape{4}, {1, 1, 1, 0});
    auto keras = [&](double pi, double yi) {
        const double c = std::min(std::max(pi, eps), 1 - eps);
        return -(yi * std::log(c + eps) + (1 - yi) * std::log(1 - c + eps));
    };
    double expect = 0;
    for (std::size_t i = 0; i < 4; ++i) expect += keras(p[i], y[i]) / 4;
    const V l = loss::binary_cross_entropy(t.constant(p), t.constant(y));
    CHECK(l.item() == doctest::Approx(expect).epsilon(1e-12));
    // p = 0 with y = 1 gives -ln(2e-7) = 15.42, not infinity.
    CHECK(keras(0.0, 1.0) == doctest::Approx(-std::log(2e-7)));
    // Away from the clip, it equals the logit form at logit(p).
    const Td q = rnd(Shape{5}, 11, 0.05, 0.95), yy = rnd(Shape{5}, 12, 0, 1);
    Td logit(Shape{5});
    for (std::size_t i = 0; i < 5; ++i) logit[i] = std::log(q[i] / (1 - q[i]));
    const double a = loss::binary_cross_entropy(t.constant(q), t.constant(yy)).item();
    const double b = loss::binary_cross_entropy_with_logits(t.constant(logit), t.constant(yy)).item();
    CHECK(a == doctest::Approx(b).epsilon(1e-5));  // differs by the eps inside the logs only
    // Gradient is zero where clipped, as in Keras.
    const V pv = t.variable(Td(Shape{2}, {0.0, 0.5}));
    const V gl = grad(loss::binary_cross_entropy(pv, t.constant(Td(Shape{2}, {1.0, 1.0}))), pv);
    CHECK(gl[0] == 0.0);
    CHECK(gl[1] == doctest::Approx(-0.5 / (0.5 + eps)));
}

TEST_CASE("MSE, MAE and categorical cross-entropy: values") {
    Tape<double> t;
    const Td p(Shape{3, 2}, {1, 2, 3, 4, 5, 6});
    const Td y(Shape{3, 2}, {1, 0, 0, 4, 7, 7});
    const Td w(Shape{3}, {1, -1, 3});
    // per-event MSE: (0+4)/2 = 2, (9+0)/2 = 4.5, (4+1)/2 = 2.5; MAE: 1, 1.5, 1.5
    CHECK(loss::mse(t.constant(p), t.constant(y)).item() == doctest::Approx(3.0));
    CHECK(loss::mae(t.constant(p), t.constant(y)).item() == doctest::Approx(4.0 / 3));
    const V wv = t.constant(w);
    CHECK(loss::mse(t.constant(p), t.constant(y), &wv).item() == doctest::Approx((2 - 4.5 + 7.5) / 3));
    CHECK(loss::mae(t.constant(p), t.constant(y), &wv).item() == doctest::Approx((1 - 1.5 + 4.5) / 3));

    const Td z(Shape{2, 3}, {1, 2, 3, 0, 0, 1000});
    const std::vector<std::size_t> lab{2, 0};
    const double l0 = -(3 - std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)));
    const double l1 = 1000.0;  // -log_softmax = logsumexp - 0 = 1000 (+ 2 e^-1000)
    CHECK(loss::categorical_cross_entropy_with_logits(t.constant(z), lab).item() == doctest::Approx((l0 + l1) / 2));
    const V w2 = t.constant(Td(Shape{2}, {3.0, 1.0}));
    CHECK(loss::categorical_cross_entropy_with_logits(t.constant(z), lab, &w2).item() == doctest::Approx((3 * l0 + l1) / 4));
    const Td soft(Shape{2, 3}, {0.2, 0.3, 0.5, 1, 0, 0});
    const double ls = -(0.2 * (1 - 3 - std::log(std::exp(-2.0) + std::exp(-1.0) + 1.0)) + 0.3 * (2 - 3 - std::log(std::exp(-2.0) + std::exp(-1.0) + 1.0)) +
                        0.5 * (-std::log(std::exp(-2.0) + std::exp(-1.0) + 1.0)));
    CHECK(loss::categorical_cross_entropy_with_logits(t.constant(z), t.constant(soft)).item() == doctest::Approx((ls + l1) / 2));
}

TEST_CASE("classification losses: gradcheck and gradgradcheck") {
    const Td z = rnd(Shape{5}, 1), y = rnd(Shape{5}, 2, 0, 1), w(Shape{5}, {1.0, 0.5, -0.3, 2.0, 0.8});
    const Td p = rnd(Shape{5, 2}, 3, 0.05, 0.95), yp = rnd(Shape{5, 2}, 4, 0, 1);
    const Td zk = rnd(Shape{5, 3}, 5), q = rnd(Shape{5, 3}, 6, 0, 1);
    check_both([&](Tape<double>& t, const Vs& x) { return loss::binary_cross_entropy_with_logits(x[0], t.view(y)); }, {z});
    check_both([&](Tape<double>& t, const Vs& x) {
        const V wv = t.view(w);
        return loss::binary_cross_entropy_with_logits(x[0], t.view(y), &wv);
    }, {z});
    // gradient with respect to the (soft) targets too
    check_both([&](Tape<double>& t, const Vs& x) {
        const V wv = t.view(w);
        return loss::binary_cross_entropy_with_logits(x[0], x[1], &wv);
    }, {z, y});
    check_both([&](Tape<double>& t, const Vs& x) {
        const V wv = t.view(w);
        return loss::binary_cross_entropy_with_logits(x[0], t.view(yp), &wv);
    }, {rnd(Shape{5, 2}, 7)});
    check_both([&](Tape<double>& t, const Vs& x) {
        const V wv = t.view(w);
        return loss::binary_cross_entropy(x[0], t.view(yp), &wv);
    }, {p});
    check_both([&](Tape<double>& t, const Vs& x) {
        const V wv = t.view(w);
        return loss::mse(x[0], x[1], &wv);
    }, {p, yp});
    check_both([&](Tape<double>& t, const Vs& x) {
        const V wv = t.view(w);
        return loss::mae(x[0], t.view(yp), &wv);
    }, {p});
    check_both([&](Tape<double>& t, const Vs& x) {
        const V wv = t.view(w);
        return loss::categorical_cross_entropy_with_logits(x[0], t.view(q), &wv);
    }, {zk});
    check_both([&](Tape<double>&, const Vs& x) {
        return loss::categorical_cross_entropy_with_logits(x[0], std::vector<std::size_t>{0, 2, 1, 1, 0});
    }, {zk});
}

TEST_CASE("classification losses compile and agree in float") {
    Tape<float> tf;
    Tape<double> td;
    const Td z = rnd(Shape{6}, 21), y = rnd(Shape{6}, 22, 0, 1), w = rnd(Shape{6}, 23, 0.1, 2);
    const Var<float> zf = tf.constant(z.cast<float>()), yf = tf.constant(y.cast<float>()), wf = tf.constant(w.cast<float>());
    const V zd = td.constant(z), yd = td.constant(y), wd = td.constant(w);
    CHECK(loss::binary_cross_entropy_with_logits(zf, yf, &wf).item() ==
          doctest::Approx(loss::binary_cross_entropy_with_logits(zd, yd, &wd).item()).epsilon(1e-5));
    CHECK(loss::mse(zf, yf, &wf).item() == doctest::Approx(loss::mse(zd, yd, &wd).item()).epsilon(1e-5));
    CHECK(loss::mae(zf, yf, &wf).item() == doctest::Approx(loss::mae(zd, yd, &wd).item()).epsilon(1e-5));
    const Var<float> pf = tf.constant(Tensor<float>(Shape{2}, {0.3f, 0.9f}));
    CHECK(std::isfinite(loss::binary_cross_entropy(pf, tf.constant(Tensor<float>(Shape{2}, {1.f, 0.f}))).item()));
}

TEST_CASE("classification losses reject bad input with clear errors") {
    Tape<double> t;
    const V z = t.constant(rnd(Shape{4}, 1)), y3 = t.constant(rnd(Shape{3}, 2));
    CHECK_THROWS_AS(loss::mse(z, y3), shape_error);
    CHECK_THROWS_WITH_AS(loss::binary_cross_entropy_with_logits(z, y3), doctest::Contains("(3,)"), shape_error);
    const V w0 = t.constant(Td(Shape{4}, {1, -1, 0.5, -0.5}));
    CHECK_THROWS_WITH_AS(loss::mse(z, z, &w0), doctest::Contains("sum to zero"), value_error);
    const V w3 = t.constant(Td(Shape{3}, 1.0));
    CHECK_THROWS_AS(loss::mae(z, z, &w3), shape_error);
    const V wn = t.constant(Td(Shape{4}, {1, std::numeric_limits<double>::quiet_NaN(), 1, 1}));
    CHECK_THROWS_AS(loss::mse(z, z, &wn), value_error);
    CHECK_THROWS_AS(loss::mse(t.scalar(1.0), t.scalar(1.0)), shape_error);
    const V zk = t.constant(rnd(Shape{2, 3}, 3));
    CHECK_THROWS_WITH_AS(loss::categorical_cross_entropy_with_logits(zk, std::vector<std::size_t>{0, 3}), doctest::Contains("label 3"),
                         value_error);
    CHECK_THROWS_AS(loss::categorical_cross_entropy_with_logits(zk, t.constant(rnd(Shape{3, 2}, 4))), shape_error);
    CHECK_THROWS_AS(loss::binary_cross_entropy(z, z, nullptr, 0.7), value_error);
}

TEST_CASE("binary losses refuse constant labels outside [0, 1] with the row and value; soft labels pass") {
    Tape<double> t;
    const V z = t.constant(Td(Shape{4}, {0.3, -1.2, 2.5, -0.1}));
    const V bad = t.constant(Td(Shape{4}, {1, 0, 2, 0}));
    CHECK_THROWS_WITH_AS(loss::binary_cross_entropy_with_logits(z, bad),
                         "binary_cross_entropy_with_logits: target 2 in row 2 is not in [0, 1] (binary labels are 0 or 1, soft labels lie between)",
                         value_error);
    const V p = t.constant(Td(Shape{4}, {0.6, 0.2, 0.9, 0.4}));
    CHECK_THROWS_WITH_AS(loss::binary_cross_entropy(p, bad), doctest::Contains("binary_cross_entropy: target 2 in row 2"), value_error);
    const V neg = t.constant(Td(Shape{2, 2}, {0, 1, 1, -0.5}));
    CHECK_THROWS_WITH_AS(loss::binary_cross_entropy_with_logits(t.constant(Td(Shape{2, 2}, 0.0)), neg),
                         doctest::Contains("target -0.5 in row 1, column 1"), value_error);
    const V nan = t.constant(Td(Shape{4}, {0, std::numeric_limits<double>::quiet_NaN(), 1, 0}));
    CHECK_THROWS_WITH_AS(loss::binary_cross_entropy_with_logits(z, nan), doctest::Contains("target nan in row 1"), value_error);
    // Soft labels are accepted on purpose (label smoothing, teacher probabilities).
    const V soft = t.constant(Td(Shape{4}, {0.9, 0.1, 1.0, 0.0}));
    CHECK(std::isfinite(loss::binary_cross_entropy_with_logits(z, soft).item()));
    CHECK(std::isfinite(loss::binary_cross_entropy(p, soft).item()));
    // Targets that carry a gradient are outputs, not labels: not checked.
    const V learned = t.variable(Td(Shape{4}, {1.5, 0, 0, 0}));
    CHECK(std::isfinite(loss::binary_cross_entropy_with_logits(z, learned).item()));
}

TEST_CASE("multi-column BCE without weights is the mean over all elements; MSE the weighted mean per event") {
    Tape<double> t;
    const Td zz(Shape{2, 3}, {0.3, -1.0, 2.0, 0.5, -0.2, 1.1}), yy(Shape{2, 3}, {1, 0, 1, 0, 0.5, 1});
    double all = 0;
    for (std::size_t i = 0; i < 6; ++i) all += std::max(zz[i], 0.0) + std::log1p(std::exp(-std::abs(zz[i]))) - yy[i] * zz[i];
    CHECK(loss::binary_cross_entropy_with_logits(t.constant(zz), t.constant(yy)).item() == doctest::Approx(all / 6).epsilon(1e-14));
    const Td w(Shape{2}, {1.0, 3.0});
    const V wv = t.constant(w);
    double m = 0;
    for (std::size_t i = 0; i < 2; ++i)
        for (std::size_t j = 0; j < 3; ++j) m += w[i] * (zz(i, j) - yy(i, j)) * (zz(i, j) - yy(i, j)) / 3 / 4;
    CHECK(loss::mse(t.constant(zz), t.constant(yy), &wv).item() == doctest::Approx(m).epsilon(1e-14));
    const V w1 = t.constant(Td(Shape{2, 1}, {1.0, 3.0}));  // (N, 1) weights, (N,) predictions
    const Td p1(Shape{2}, {0.5, 2.0}), y1(Shape{2}, {1.0, 1.0});
    CHECK(loss::mse(t.constant(p1), t.constant(y1), &w1).item() == doctest::Approx((0.25 + 3.0) / 4).epsilon(1e-14));
}
