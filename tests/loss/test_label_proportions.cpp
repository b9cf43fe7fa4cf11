// Learning from label proportions: values of both distance forms, grouped batches, weights,
// gradient checks, and a toy where only proportions are known.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/loss/label_proportions.hpp>
#include <tapir/optim/adam.hpp>

using namespace tapir;
using V = Var<double>;
using Vs = std::vector<V>;
using Td = Tensor<double>;

TEST_CASE("label proportion loss: values") {
    Tape<double> t;
    const V y = t.constant(Td(Shape{4}, {0.9, 0.1, 0.6, 0.2}));  // mean 0.45
    CHECK(loss::label_proportion_loss(y, 0.25).item() == doctest::Approx(0.04));
    CHECK(loss::label_proportion_loss(y, 0.25, loss::ProportionDistance::absolute).item() == doctest::Approx(0.2));
    const V w = t.constant(Td(Shape{4}, {1, 0, 1, -0.5}));  // weighted mean (0.9 + 0.6 - 0.1) / 1.5
    CHECK(loss::label_proportion_loss(y, 0.5, loss::ProportionDistance::absolute, &w).item() == doctest::Approx(1.4 / 1.5 - 0.5));
    // Two groups: {0, 2} mean 0.75 vs 0.7; {1, 3} mean 0.15 vs 0.3.
    const std::vector<std::size_t> g{0, 1, 0, 1};
    CHECK(loss::label_proportion_loss(y, g, std::vector<double>{0.7, 0.3}).item() == doctest::Approx(0.05 * 0.05 + 0.15 * 0.15));
    CHECK(loss::label_proportion_loss(y, g, std::vector<double>{0.7, 0.3}, loss::ProportionDistance::absolute).item() ==
          doctest::Approx(0.2));
    const V w2 = t.constant(Td(Shape{4}, {3, 1, 1, 1}));  // group 0 mean (2.7 + 0.6)/4 = 0.825
    CHECK(loss::label_proportion_loss(y, g, std::vector<double>{0.7, 0.3}, loss::ProportionDistance::squared, &w2).item() ==
          doctest::Approx(0.125 * 0.125 + 0.15 * 0.15));
    // Errors.
    CHECK_THROWS_AS(loss::label_proportion_loss(y, 1.5), value_error);
    CHECK_THROWS_WITH_AS(loss::label_proportion_loss(y, std::vector<std::size_t>{0, 0, 0, 0}, std::vector<double>{0.7, 0.3}),
                         doctest::Contains("group 1 has no events"), value_error);
    CHECK_THROWS_AS(loss::label_proportion_loss(y, std::vector<std::size_t>{0, 2, 0, 1}, std::vector<double>{0.7, 0.3}), value_error);
    CHECK_THROWS_AS(loss::label_proportion_loss(y, std::vector<std::size_t>{0, 1}, std::vector<double>{0.7, 0.3}), shape_error);
}

TEST_CASE("label proportion loss: gradient checks") {
    const Td p(Shape{6}, {0.2, 0.7, 0.4, 0.9, 0.1, 0.55}), w(Shape{6}, {1, 2, 0.5, -0.3, 1, 1});
    const std::vector<std::size_t> g{0, 1, 2, 0, 1, 2};
    for (auto kind : {loss::ProportionDistance::squared, loss::ProportionDistance::absolute}) {
        const GradcheckFn f1 = [&](Tape<double>& t, const Vs& x) {
            const V wv = t.view(w);
            return loss::label_proportion_loss(x[0], 0.3, kind, &wv);
        };
        const GradcheckFn f2 = [&](Tape<double>& t, const Vs& x) {
            const V wv = t.view(w);
            return loss::label_proportion_loss(x[0], g, std::vector<double>{0.1, 0.8, 0.45}, kind, &wv);
        };
        for (const auto* f : {&f1, &f2}) {
            const auto r1 = gradcheck(*f, {p});
            INFO(r1.message());
            CHECK(r1.passed);
            const auto r2 = gradgradcheck(*f, {p});
            INFO(r2.message());
            CHECK(r2.passed);
        }
    }
}

TEST_CASE("label proportions alone train a classifier (toy)") {
    // Two groups of 200 events with signal fractions 0.2 and 0.8; signal ~ N(+1, 1), background
    // ~ N(-1, 1) in one feature. Labels are never used: the batch means are fitted to the fractions.
    Rng rng(5);
    const std::size_t n = 400;
    Td x(Shape{n, 1});
    std::vector<std::size_t> group(n);
    std::vector<double> label(n);
    for (std::size_t i = 0; i < n; ++i) {
        group[i] = i < n / 2 ? 0 : 1;
        label[i] = rng.bernoulli(group[i] == 0 ? 0.2 : 0.8) ? 1.0 : 0.0;
        x[i] = rng.normal(label[i] > 0 ? 1.0 : -1.0, 1.0);
    }
    Parameter<double> w("w", Td(Shape{1, 1}, 0.0)), b("b", Td(Shape{1}, 0.0));
    optim::Adam<double> opt({&w, &b}, 0.05);
    Tape<double> t;
    for (int step = 0; step < 300; ++step) {
        t.clear();
        const V yhat = sigmoid(dense(t.view(x), t.param(w), t.param(b)));
        const V l = loss::label_proportion_loss(yhat, group, std::vector<double>{0.2, 0.8});
        opt.zero_grad();
        backward(l);
        opt.step();
    }
    // The learnt direction separates signal from background: positive slope, accuracy > 75%.
    CHECK(w.value[0] > 0.5);
    std::size_t correct = 0;
    for (std::size_t i = 0; i < n; ++i) correct += ((w.value[0] * x[i] + b.value[0] > 0) == (label[i] > 0)) ? 1 : 0;
    CHECK(static_cast<double>(correct) / n > 0.75);
}
