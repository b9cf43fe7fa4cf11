// Significance losses: the Asimov Z_A check values, its r -> 0 limit (value and gradient, at
// r = 0 exactly and r = 1e-12), agreement with the double-precision metric over a grid that
// crosses the series switch, soft yields, gradient checks, and the pretraining scheme on a toy.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/loss/significance.hpp>
#include <tapir/metrics/significance.hpp>
#include <tapir/optim/adam.hpp>

using namespace tapir;
using V = Var<double>;
using Vs = std::vector<V>;
using Td = Tensor<double>;

namespace {
/// The textbook formula, for r > 0 (it divides by sigma_b^2).
double za_naive(double s, double b, double r) {
    const double sb2 = r * r * b * b;
    return std::sqrt(2 * ((s + b) * std::log((s + b) * (b + sb2) / (b * b + (s + b) * sb2)) - b * b / sb2 * std::log(1 + sb2 * s / (b * (b + sb2)))));
}
double za0(double s, double b) { return std::sqrt(2 * ((s + b) * std::log(1 + s / b) - s)); }

struct ZGrad {
    double z, ds, db;
};
ZGrad z_and_grad(double s, double b, double r) {
    Tape<double> t;
    const V sv = t.variable(Td::scalar(s)), bv = t.variable(Td::scalar(b));
    const V z = loss::asimov_significance(sv, bv, r);
    const auto g = grad(z, Vs{sv, bv});
    return ZGrad{z.item(), g[0].item(), g[1].item()};
}
} // namespace

TEST_CASE("Asimov significance: check values") {
    CHECK(z_and_grad(14, 5, 0.3).z == doctest::Approx(3.6149635).epsilon(1e-8));
    CHECK(z_and_grad(100, 1000, 0.0).z == doctest::Approx(3.11165).epsilon(2e-6));
    CHECK(za0(100, 1000) == doctest::Approx(3.11165).epsilon(2e-6));
    // Elementwise over vectors of yields.
    Tape<double> t;
    const V z = loss::asimov_significance(t.constant(Td(Shape{2}, {14.0, 100.0})), t.constant(Td(Shape{2}, {5.0, 1000.0})), 0.3);
    CHECK(z[0] == doctest::Approx(3.6149635).epsilon(1e-8));
    CHECK(z[1] == doctest::Approx(za_naive(100, 1000, 0.3)).epsilon(1e-10));
}

TEST_CASE("AMS: check value, agreement with the metric, gradients") {
    Tape<double> t;
    CHECK(loss::ams(t.constant(Td::scalar(100)), t.constant(Td::scalar(1000))).item() == doctest::Approx(3.09669).epsilon(2e-6));
    for (double s : {0.5, 20.0, 300.0})
        for (double b : {0.0, 3.0, 5000.0})
            CHECK(loss::ams(t.constant(Td::scalar(s)), t.constant(Td::scalar(b))).item() == doctest::Approx(metrics::ams(s, b)).epsilon(1e-11));
    const GradcheckFn f = [](Tape<double>&, const Vs& x) { return loss::ams(x[0], x[1]); };
    CHECK(gradcheck(f, {Td(Shape{1}, {20.0}), Td(Shape{1}, {3.0})}).passed);
    CHECK(gradgradcheck(f, {Td(Shape{1}, {20.0}), Td(Shape{1}, {3.0})}, 1e-5, 1e-5).passed);
    CHECK_THROWS_AS(loss::ams(t.scalar(1.0), t.scalar(1.0), -1.0), value_error);
}

TEST_CASE("Asimov significance: continuous as r -> 0, in value and gradient") {
    for (const auto& sb : std::vector<std::pair<double, double>>{{100, 1000}, {14, 5}, {1, 1e4}, {0.01, 3}}) {
        const double s = sb.first, b = sb.second;
        INFO("s = " << s << ", b = " << b);
        const double z = za0(s, b);
        // Analytic gradient of sqrt(2((s+b) ln(1+s/b) - s)).
        const double ds = std::log1p(s / b) / z, db = (std::log1p(s / b) - s / b) / z;
        for (double r : {0.0, 1e-12, 1e-9}) {
            const ZGrad g = z_and_grad(s, b, r);
            INFO("r = " << r);
            CHECK(std::isfinite(g.z));
            CHECK(g.z == doctest::Approx(z).epsilon(1e-9));
            CHECK(g.ds == doctest::Approx(ds).epsilon(1e-7));
            CHECK(g.db == doctest::Approx(db).epsilon(1e-7));
        }
    }
    // Small s: Z_A -> s / sqrt(b + sigma_b^2).
    CHECK(z_and_grad(1e-3, 100, 0.2).z == doctest::Approx(1e-3 / std::sqrt(100 + 400.0)).epsilon(1e-4));
}

TEST_CASE("Asimov significance agrees with the textbook formula and the metric across the series switch") {
    double worst = 0;
    for (double s : {0.5, 3.0, 14.0, 99.0, 100.0, 101.0, 1e4}) {
        for (double b : {0.2, 5.0, 1000.0, 1e5}) {
            for (double r : {0.0, 1e-6, 0.01, 0.1, 0.3, 0.5, 2.0}) {
                const double z = z_and_grad(s, b, r).z;
                const double m = metrics::asimov_significance(s, b, r);
                worst = std::max(worst, std::abs(z - m) / m);
                if (r >= 0.01) {
                    const double n = za_naive(s, b, r);
                    if (n > 1e-3) CHECK(z == doctest::Approx(n).epsilon(1e-7));
                }
            }
        }
    }
    // Worst case r = 2, b = 1e5: h(x) - h(y) cancels to 1/(1 + r^2 b), in both implementations.
    CHECK(worst < 1e-9);
    // Around the switch at s/b = 0.1 (and r^2 s/(1 + r^2 b) = 0.1): no jump.
    const double below = z_and_grad(100 * (1 - 1e-12), 1000, 0).z, above = z_and_grad(100 * (1 + 1e-12), 1000, 0).z;
    CHECK(std::abs(below - above) < 1e-10);
    const ZGrad gl = z_and_grad(0.1 * 2000 * (1 - 1e-9), 2000, 0.0), gh = z_and_grad(0.1 * 2000 * (1 + 1e-9), 2000, 0.0);
    CHECK(gl.ds == doctest::Approx(gh.ds).epsilon(1e-6));
    CHECK(gl.db == doctest::Approx(gh.db).epsilon(1e-6));
    // y = r^2 s / (1 + r^2 b) crosses 0.1 at s = 0.1 (1 + r^2 b) / r^2.
    const double r = 0.5, b = 4.0, sw = 0.1 * (1 + r * r * b) / (r * r);
    const ZGrad yl = z_and_grad(sw * (1 - 1e-9), b, r), yh = z_and_grad(sw * (1 + 1e-9), b, r);
    CHECK(yl.z == doctest::Approx(yh.z).epsilon(1e-8));
    CHECK(yl.ds == doctest::Approx(yh.ds).epsilon(1e-6));
}

TEST_CASE("Asimov and s/sqrt(s+b) losses: values, gradcheck, gradgradcheck") {
    Tape<double> t;
    const V s = t.constant(Td::scalar(14)), b = t.constant(Td::scalar(5));
    CHECK(loss::asimov_loss(s, b, 0.3).item() == doctest::Approx(1 / 3.6149635).epsilon(1e-7));
    CHECK(loss::asimov_loss(s, b, 0.3, true).item() == doctest::Approx(1 / (3.6149635 * 3.6149635)).epsilon(1e-7));
    CHECK(loss::s_over_sqrt_sb_loss(s, b).item() == doctest::Approx(19 / (196 + 1e-7)));

    // Points in both branches of both series: (s/b, y) large/small.
    const std::vector<std::pair<double, double>> pts{{14, 5}, {5, 1000}, {100, 1000}, {0.3, 20}, {300, 2}};
    for (double r : {0.0, 1e-12, 0.1, 0.5}) {
        for (const auto& p : pts) {
            INFO("r = " << r << ", s = " << p.first << ", b = " << p.second);
            const std::vector<Td> in{Td(Shape{1}, {p.first}), Td(Shape{1}, {p.second})};
            const GradcheckFn fz = [r](Tape<double>&, const Vs& x) { return loss::asimov_significance(x[0], x[1], r); };
            const GradcheckFn fl = [r](Tape<double>&, const Vs& x) { return loss::asimov_loss(x[0], x[1], r); };
            const GradcheckFn fl2 = [r](Tape<double>&, const Vs& x) { return loss::asimov_loss(x[0], x[1], r, true); };
            for (const auto* f : {&fz, &fl, &fl2}) {
                const auto r1 = gradcheck(*f, in, 1e-6 * p.first, 2e-5);  // FD noise: 1/Z^2 ~ 1e4 at (5, 1000)
                INFO(r1.message());
                CHECK(r1.passed);
                const auto r2 = gradgradcheck(*f, in, 1e-5 * p.first, 1e-5);
                INFO(r2.message());
                CHECK(r2.passed);
            }
        }
    }
    const GradcheckFn fs = [](Tape<double>&, const Vs& x) { return loss::s_over_sqrt_sb_loss(x[0], x[1]); };
    CHECK(gradcheck(fs, {Td(Shape{1}, {3.0}), Td(Shape{1}, {7.0})}).passed);
    CHECK(gradgradcheck(fs, {Td(Shape{1}, {3.0}), Td(Shape{1}, {7.0})}).passed);
}

TEST_CASE("soft yields: values, weights, gradients") {
    Tape<double> t;
    const Td yhat(Shape{5}, {0.9, 0.2, 0.6, 0.1, 0.5}), y(Shape{5}, {1, 0, 1, 0, 0}), w(Shape{5}, {2.0, 1.0, 1.0, -0.5, 3.0});
    const auto sy = loss::soft_yields(t.constant(yhat), t.constant(y), 50.0, 1000.0);
    CHECK(sy.s.item() == doctest::Approx(50 * (0.9 + 0.6) / 2));
    CHECK(sy.b.item() == doctest::Approx(1000 * (0.2 + 0.1 + 0.5) / 3));
    const V wv = t.constant(w);
    const auto sw = loss::soft_yields(t.constant(yhat), t.constant(y), 50.0, 1000.0, &wv);
    CHECK(sw.s.item() == doctest::Approx(50 * (2 * 0.9 + 0.6) / 3));
    CHECK(sw.b.item() == doctest::Approx(1000 * (0.2 - 0.05 + 1.5) / 3.5));
    // The whole chain: yields -> Z_A loss, checked against finite differences in the outputs.
    const GradcheckFn f = [&](Tape<double>& tt, const Vs& x) {
        const V wl = tt.view(w);
        const auto yl = loss::soft_yields(sigmoid(x[0]), tt.view(y), 50.0, 1000.0, &wl);
        return loss::asimov_loss(yl.s, yl.b, 0.3);
    };
    const Td logits(Shape{5}, {1.0, -0.5, 0.3, -2.0, 0.1});
    const auto r1 = gradcheck(f, {logits});
    INFO(r1.message());
    CHECK(r1.passed);
    const auto r2 = gradgradcheck(f, {logits});
    INFO(r2.message());
    CHECK(r2.passed);
    // Errors.
    CHECK_THROWS_WITH_AS(loss::soft_yields(t.constant(yhat), t.constant(Td(Shape{5}, 0.0)), 1.0, 1.0), doctest::Contains("no signal"),
                         value_error);
    CHECK_THROWS_WITH_AS(loss::soft_yields(t.constant(yhat), t.constant(Td(Shape{5}, 1.0)), 1.0, 1.0), doctest::Contains("no background"),
                         value_error);
    CHECK_THROWS_WITH_AS(loss::soft_yields(t.constant(yhat), t.constant(Td(Shape{5}, 0.5)), 1.0, 1.0), doctest::Contains("expected 0 or 1"),
                         value_error);
    CHECK_THROWS_AS(loss::soft_yields(t.constant(yhat), t.constant(Td(Shape{4}, 1.0)), 1.0, 1.0), shape_error);
    CHECK_THROWS_WITH_AS(loss::asimov_loss(t.scalar(1.0), t.scalar(0.0), 0.1), doctest::Contains("background yield"), value_error);
    CHECK_THROWS_WITH_AS(loss::asimov_loss(t.scalar(-1.0), t.scalar(2.0), 0.1), doctest::Contains("signal yield"), value_error);
    CHECK_THROWS_AS(loss::asimov_loss(t.scalar(1.0), t.scalar(2.0), -0.1), value_error);
    // s = 0: finite (huge) loss, no NaN.
    CHECK(std::isfinite(loss::asimov_loss(t.scalar(0.0), t.scalar(2.0), 0.1).item()));
}

TEST_CASE("Asimov significance in float") {
    Tape<float> t;
    const Var<float> s = t.constant(Tensor<float>::scalar(14.f)), b = t.constant(Tensor<float>::scalar(5.f));
    CHECK(loss::asimov_significance(s, b, 0.3f).item() == doctest::Approx(3.6149635).epsilon(1e-5));
    const Var<float> s2 = t.variable(Tensor<float>::scalar(100.f)), b2 = t.variable(Tensor<float>::scalar(1000.f));
    const Var<float> z = loss::asimov_significance(s2, b2, 0.0f);
    CHECK(z.item() == doctest::Approx(3.11165).epsilon(1e-5));
    const auto g = grad(z, std::vector<Var<float>>{s2, b2});
    CHECK(g[0].item() == doctest::Approx(std::log1p(0.1) / 3.11165).epsilon(1e-4));
    // Small s/b in float: the series keeps the precision the closed form would lose.
    const Var<float> z3 = loss::asimov_significance(t.constant(Tensor<float>::scalar(1.f)), t.constant(Tensor<float>::scalar(1e4f)), 0.0f);
    CHECK(z3.item() == doctest::Approx(za0(1, 1e4)).epsilon(1e-5));
}

TEST_CASE("significance schedule: (s+b)/s^2 first, then Asimov; trains a toy selection") {
    loss::SignificanceSchedule<double> sched;
    sched.pretrain_epochs = 2;
    sched.systematic = 0.3;
    Tape<double> t;
    const V s = t.constant(Td::scalar(14)), b = t.constant(Td::scalar(5));
    CHECK(sched.pretraining(1));
    CHECK(!sched.pretraining(2));
    CHECK(sched(0, s, b).item() == doctest::Approx(19 / 196.0).epsilon(1e-6));
    CHECK(sched(2, s, b).item() == doctest::Approx(1 / 3.6149635).epsilon(1e-7));

    // Toy: signal ~ N((1, 1), I), background ~ N((-1, -1), I), S_exp = 30, B_exp = 1000, r = 0.3.
    // A linear selection trained with the schedule must beat the untrained (flat 1/2) selection
    // and end near the best cut on the optimal direction x1 + x2.
    Rng rng(2024);
    const std::size_t n = 2000;
    Td x(Shape{n, 2}), y(Shape{n});
    for (std::size_t i = 0; i < n; ++i) {
        y[i] = i % 2 == 0 ? 1.0 : 0.0;
        const double mu = y[i] > 0 ? 1.0 : -1.0;
        x(i, 0) = rng.normal(mu, 1.0);
        x(i, 1) = rng.normal(mu, 1.0);
    }
    Parameter<double> w("w", Td(Shape{2, 1}, 0.0)), bias("b", Td(Shape{1}, 0.0));
    optim::Adam<double> opt({&w, &bias}, 0.1);
    loss::SignificanceSchedule<double> schedule;
    schedule.pretrain_epochs = 5;
    schedule.systematic = 0.3;
    auto yields = [&](Tape<double>& tt) {
        const V out = sigmoid(reshape(dense(tt.view(x), tt.param(w), tt.param(bias)), Shape{n}));
        return loss::soft_yields(out, tt.view(y), 30.0, 1000.0);
    };
    double z_init = 0, z_pre = 0;
    for (std::size_t epoch = 0; epoch < 40; ++epoch) {
        for (int step = 0; step < 20; ++step) {
            t.clear();
            const auto yl = yields(t);
            if (epoch == 0 && step == 0) z_init = metrics::asimov_significance(yl.s.item(), yl.b.item(), 0.3);
            const V l = schedule(epoch, yl);
            CHECK(std::isfinite(l.item()));
            opt.zero_grad();
            backward(l);
            opt.step();
        }
        if (epoch + 1 == schedule.pretrain_epochs) {
            t.clear();
            const auto yl = yields(t);
            z_pre = metrics::asimov_significance(yl.s.item(), yl.b.item(), 0.3);
        }
    }
    t.clear();
    const auto yl = yields(t);
    const double z_final = metrics::asimov_significance(yl.s.item(), yl.b.item(), 0.3);
    // Best hard cuts on the trained score and on x1 + x2 (the Bayes-optimal direction), as the
    // paper compares losses: at the optimal threshold.
    const Td wv = w.value;
    auto best_cut = [&](auto&& score) {
        double best = 0;
        for (double c = -4; c < 6; c += 0.02) {
            double ss = 0, bb = 0;
            for (std::size_t i = 0; i < n; ++i)
                if (score(i) > c) (y[i] > 0 ? ss : bb) += 1;
            if (bb > 0) best = std::max(best, metrics::asimov_significance(30 * ss / (n / 2.0), 1000 * bb / (n / 2.0), 0.3));
        }
        return best;
    };
    const double best = best_cut([&](std::size_t i) { return x(i, 0) + x(i, 1); });
    const double norm = std::hypot(wv[0], wv[1]);
    const double trained = best_cut([&](std::size_t i) { return (wv[0] * x(i, 0) + wv[1] * x(i, 1)) / norm; });
    MESSAGE("toy Z_A: untrained " << z_init << ", after pretraining " << z_pre << ", final (soft) " << z_final
            << ", best cut on trained score " << trained << ", on x1 + x2 " << best);
    CHECK(z_init < 0.3);
    CHECK(z_final > 3 * z_init);
    CHECK(z_final > z_pre);
    CHECK(trained > 0.95 * best);
}
