// The tape itself: training, allocation-free steady state, long chains, higher order, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/random.hpp>

#include "support/alloc_counter.hpp"

using namespace tapir;

namespace {
template <class T>
Tensor<T> glorot(std::size_t in, std::size_t out, Rng& r) {
    Tensor<T> t(Shape{in, out});
    const double lim = std::sqrt(6.0 / static_cast<double>(in + out));
    for (auto& v : t) v = static_cast<T>(r.uniform(-lim, lim));
    return t;
}

struct Mlp {
    Parameter<float> w1, b1, w2, b2;
    explicit Mlp(Rng& r, std::size_t hidden = 8)
        : w1("w1", glorot<float>(2, hidden, r)), b1("b1", Tensor<float>(Shape{hidden})), w2("w2", glorot<float>(hidden, 1, r)),
          b2("b2", Tensor<float>(Shape{1})) {}
    Var<float> forward(Tape<float>& t, const Var<float>& x) {
        const Var<float> h = dense(x, t.param(w1), t.param(b1), Activation::tanh);
        return dense(h, t.param(w2), t.param(b2));
    }
    void sgd(float lr) {
        for (Parameter<float>* p : {&w1, &b1, &w2, &b2}) {
            for (std::size_t i = 0; i < p->size(); ++i) p->value[i] -= lr * p->grad[i];
            p->zero_grad();
        }
    }
};
} // namespace

TEST_CASE("a two-layer MLP learns XOR with plain SGD") {
    Rng rng(5);
    Mlp net(rng);
    const Tensor<float> x(Shape{4, 2}, {0, 0, 0, 1, 1, 0, 1, 1});
    const Tensor<float> y(Shape{4, 1}, {0, 1, 1, 0});
    Tape<float> t;
    float loss = 0;
    for (int step = 0; step < 2000; ++step) {
        t.clear();
        const Var<float> l = bce_with_logits(net.forward(t, t.view(x)), t.view(y));
        loss = l.item();
        backward(l);
        net.sgd(0.5f);
    }
    t.clear();
    const Var<float> out = net.forward(t, t.view(x));
    int correct = 0;
    for (std::size_t i = 0; i < 4; ++i) correct += ((out[i] > 0) == (y[i] > 0.5f)) ? 1 : 0;
    CHECK(correct == 4);
    CHECK(loss < 0.05f);
}

TEST_CASE("a steady-state training step makes no heap allocation") {
    Rng rng(6);
    Mlp net(rng, 32);
    Tensor<float> x(Shape{64, 2}), y(Shape{64, 1});
    for (auto& v : x) v = static_cast<float>(rng.uniform(-1, 1));
    for (std::size_t i = 0; i < 64; ++i) y[i] = x(i, 0) * x(i, 1) > 0 ? 1.0f : 0.0f;
    Tape<float> t;
    const auto step = [&] {
        t.clear();
        const Var<float> l = bce_with_logits(net.forward(t, t.view(x)), t.view(y));
        backward(l);
        net.sgd(0.1f);
    };
    step();
    step();
    tapir_test::AllocationScope scope;
    for (int i = 0; i < 10; ++i) step();
    CHECK(scope.count() == 0);
}

TEST_CASE("a shape read from a Var stays valid while more ops are recorded") {
    // Recording moves the node storage when it grows; shape() is a copy, so holding it is safe
    // (it was a reference into the nodes: AddressSanitizer reported the read below).
    Tape<double> t;
    const Var<double> x = t.variable(Tensor<double>(Shape{3, 2}, {1, 2, 3, 4, 5, 6}));
    const Shape& s = x.shape();
    Var<double> y = x;
    for (int i = 0; i < 5000; ++i) y = add_scalar(y, 1.0);
    REQUIRE(t.size() > 5000);
    CHECK(s == Shape{3, 2});
    CHECK(s.numel() == 6);
    CHECK(y.shape() == s);
}

TEST_CASE("a chain of a million nodes backpropagates without recursion") {
    Tape<double> t;
    const Var<double> x = t.variable(Tensor<double>::scalar(0.5));
    Var<double> y = x;
    const int n = 1000000;
    for (int i = 0; i < n / 2; ++i) y = add_scalar(scale(y, 1.000001), 1e-7);
    CHECK(t.size() >= static_cast<std::size_t>(n));
    backward(y);
    CHECK(x.grad()[0] == doctest::Approx(std::pow(1.000001, n / 2)).epsilon(1e-9));
}

TEST_CASE("higher-order gradients: d3/dx3 of x^4 and a Hessian-vector product") {
    Tape<double> t;
    const Var<double> x = t.variable(Tensor<double>::scalar(1.5));
    const Var<double> y = pow(x, 4.0);
    const Var<double> g1 = grad(y, x, true);
    const Var<double> g2 = grad(g1, x, true);
    const Var<double> g3 = grad(g2, x, true);
    CHECK(g1.item() == doctest::Approx(4 * 1.5 * 1.5 * 1.5));
    CHECK(g2.item() == doctest::Approx(12 * 1.5 * 1.5));
    CHECK(g3.item() == doctest::Approx(24 * 1.5));
    // f(a, b) = a^2 b + sin-free cubic: H = [[2b, 2a], [2a, 0]] at (a, b) = (2, 3).
    const Var<double> a = t.variable(Tensor<double>::scalar(2.0)), b = t.variable(Tensor<double>::scalar(3.0));
    const Var<double> f = a * a * b;
    const auto g = grad(f, {a, b}, true);
    const auto ha = grad(g[0], {a, b});
    const auto hb = grad(g[1], {a, b}, false, /*allow_unused=*/true);  // g[1] = a^2 does not depend on b
    CHECK(ha[0].item() == doctest::Approx(6.0));
    CHECK(ha[1].item() == doctest::Approx(4.0));
    CHECK(hb[0].item() == doctest::Approx(4.0));
    CHECK(hb[1].item() == doctest::Approx(0.0));
}

namespace {
/// WGAN-GP penalty of a one-hidden-layer critic: mean_i (||grad_x D(xhat_i)|| - 1)^2.
Var<double> gradient_penalty_of(Tape<double>& t, const std::vector<Var<double>>& p, Activation act, const Tensor<double>& xhat) {
    const Var<double> x = t.variable(xhat);
    const Var<double> d = dense(dense(x, p[0], p[1], act), p[2], p[3]);
    const Var<double> gx = grad(sum(d), x, true);
    const Var<double> norm = sqrt(sum(square(gx), 1));
    return mean(square(add_scalar(norm, -1.0)));
}
} // namespace

TEST_CASE("WGAN-GP gradient penalty: gradient with respect to the critic weights matches finite differences") {
    Rng rng(9);
    const std::size_t batch = 6, features = 3, hidden = 5;
    Tensor<double> real(Shape{batch, features}), fake(Shape{batch, features}), xhat(Shape{batch, features});
    for (std::size_t i = 0; i < batch; ++i) {
        const double a = rng.uniform();
        for (std::size_t j = 0; j < features; ++j) {
            real(i, j) = rng.normal();
            fake(i, j) = rng.normal(1.0, 0.5);
            xhat(i, j) = a * real(i, j) + (1 - a) * fake(i, j);
        }
    }
    std::vector<Tensor<double>> params;
    params.push_back(Tensor<double>(Shape{features, hidden}));
    params.push_back(Tensor<double>(Shape{hidden}));
    params.push_back(Tensor<double>(Shape{hidden, 1}));
    params.push_back(Tensor<double>(Shape{1}));
    for (auto& p : params)
        for (auto& v : p) v = rng.normal(0.0, 0.8);
    for (Activation act : {Activation::relu, Activation::tanh}) {
        INFO("critic activation " << std::string(activation_name(act)));
        const auto res = gradcheck([&](Tape<double>& t, const std::vector<Var<double>>& p) { return gradient_penalty_of(t, p, act, xhat); },
                                   params);
        INFO(res.message());
        CHECK(res.passed);
        CHECK(res.checked == 3 * hidden + hidden + hidden + 1);
        Tape<double> t;
        std::vector<Var<double>> vars;
        for (auto& p : params) vars.push_back(t.variable(p));
        CHECK(gradient_penalty_of(t, vars, act, xhat).item() > 0.0);
    }
}

TEST_CASE("parameters accumulate gradients and are not copied onto the tape") {
    Parameter<double> w("w", Tensor<double>(Shape{2}, {1.0, 2.0}));
    Tape<double> t;
    const Var<double> wv = t.param(w);
    CHECK(wv.data() == w.value.data());
    backward(sum(square(wv)));
    backward(sum(wv * 3.0));
    CHECK(w.grad[0] == doctest::Approx(2.0 + 3.0));
    CHECK(w.grad[1] == doctest::Approx(4.0 + 3.0));
    w.zero_grad();
    CHECK(w.grad[0] == 0.0);
}

TEST_CASE("no-grad scope, detach and constants cut the graph") {
    Tape<double> t;
    const Var<double> x = t.variable(Tensor<double>::scalar(2.0));
    {
        NoGradGuard<double> guard(t);
        CHECK_FALSE((x * x).requires_grad());
    }
    CHECK((x * x).requires_grad());
    const Var<double> y = detach(x) * x;
    backward(y);
    CHECK(x.grad()[0] == doctest::Approx(2.0));
    const Var<double> c = t.constant(Tensor<double>::scalar(1.0));
    CHECK_THROWS_WITH_AS(grad(x * c, c), "grad: input #0 does not require a gradient (a constant or detached value)", tape_error);
}

TEST_CASE("misuse of the tape gives clear errors") {
    Tape<double> t, other;
    const Var<double> a = t.variable(Tensor<double>(Shape{2, 3}));
    const Var<double> b = other.variable(Tensor<double>(Shape{2, 3}));
    CHECK_THROWS_WITH_AS(a + b, "add: operands are recorded on different tapes", tape_error);
    CHECK_THROWS_WITH_AS(a + t.constant(Tensor<double>(Shape{4})), "add: shapes cannot be broadcast: (2, 3) vs (4,)", shape_error);
    CHECK_THROWS_AS(backward(a), shape_error);
    t.clear();
    CHECK_THROWS_AS(a.item(), tape_error);
    CHECK_THROWS_AS(a + a, tape_error);
}

TEST_CASE("anomaly mode names the first op that produced a non-finite value") {
    Tape<double> t;
    t.set_detect_anomaly(true);
    t.set_label("layer 2");
    const Var<double> x = t.variable(Tensor<double>(Shape{2}, {1.0, -1.0}));
    try {
        (void)log(x);
        FAIL("expected an anomaly_error");
    } catch (const anomaly_error& e) {
        CHECK(std::string(e.what()) == "anomaly: forward of op 'log' (node #1 in 'layer 2', output shape (2,)) produced NaN at element 1");
    }
    t.clear();
    t.set_label(nullptr);
    const Var<double> z = t.variable(Tensor<double>(Shape{1}, {0.0}));
    const Var<double> s = sqrt(z);  // finite forward, infinite derivative at 0
    try {
        backward(sum(s));
        FAIL("expected an anomaly_error");
    } catch (const anomaly_error& e) {
        CHECK(std::string(e.what()) == "anomaly: backward of op 'sqrt' (node #1, gradient shape (1,)) produced +inf at element 0");
    }
    Tape<double> quiet;
    const Var<double> q = quiet.variable(Tensor<double>(Shape{1}, {-1.0}));
    CHECK(std::isnan(log(q)[0]));  // off by default: no check, no throw
}
