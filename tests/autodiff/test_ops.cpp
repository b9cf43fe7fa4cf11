// Every differentiable op: gradcheck and gradgradcheck in double, plus forward values and edges.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/random.hpp>

#include "support/gradcheck.hpp"

using namespace tapir;
using namespace tapir_test;

TEST_CASE("binary ops with broadcasting: gradients of first and second order") {
    const Td a = rnd(Shape{3, 4}, 1), b = rnd(Shape{3, 4}, 2), row = rnd(Shape{4}, 3), col = rnd(Shape{3, 1}, 4);
    const Td s = Td::scalar(0.7), pos = rnd(Shape{3, 4}, 5, 0.5, 2.0), prow = rnd(Shape{4}, 6, 0.5, 2.0);
    check_both([](Tape<double>&, const Vs& x) { return x[0] + x[1]; }, {a, b});
    check_both([](Tape<double>&, const Vs& x) { return x[0] + x[1]; }, {a, row});
    check_both([](Tape<double>&, const Vs& x) { return x[0] - x[1]; }, {col, row});
    check_both([](Tape<double>&, const Vs& x) { return x[0] * x[1]; }, {a, b});
    check_both([](Tape<double>&, const Vs& x) { return x[0] * x[1]; }, {s, a});
    check_both([](Tape<double>&, const Vs& x) { return x[0] * x[1]; }, {col, row});
    check_both([](Tape<double>&, const Vs& x) { return x[0] / x[1]; }, {a, pos});
    check_both([](Tape<double>&, const Vs& x) { return x[0] / x[1]; }, {a, prow});
    check_both([](Tape<double>&, const Vs& x) { return x[0] * x[0]; }, {a});
}

TEST_CASE("general 4-D broadcasting in forward and backward") {
    const Td a = rnd(Shape{2, 1, 3, 1}, 7), b = rnd(Shape{4, 1, 2}, 8);
    Tape<double> t;
    const V y = t.variable(a) * t.variable(b);
    CHECK(y.shape() == Shape{2, 4, 3, 2});
    CHECK(y.value()(1, 2, 0, 1) == doctest::Approx(a(1, 0, 0, 0) * b(2, 0, 1)));
    check_both([](Tape<double>&, const Vs& x) { return x[0] * x[1]; }, {a, b});
    check_both([](Tape<double>&, const Vs& x) { return broadcast_to(x[0], Shape{2, 3, 4}); }, {rnd(Shape{3, 1}, 9)});
    check_both([](Tape<double>&, const Vs& x) { return sum_to(x[0], Shape{1, 4}); }, {rnd(Shape{2, 3, 4}, 10)});
}

TEST_CASE("scalar ops and operators") {
    const Td a = rnd(Shape{5}, 11), pos = rnd(Shape{5}, 12, 0.5, 3.0);
    check_both([](Tape<double>&, const Vs& x) { return -x[0]; }, {a});
    check_both([](Tape<double>&, const Vs& x) { return x[0] * 3.0 + 1.5; }, {a});
    check_both([](Tape<double>&, const Vs& x) { return 2.0 - x[0] / 4.0; }, {a});
    check_both([](Tape<double>&, const Vs& x) { return 2.0 / x[0]; }, {pos});
    Tape<double> t;
    const V v = t.variable(Td(Shape{2}, {1.0, 4.0}));
    const V y = 2.0 / v;
    CHECK(y[0] == 2.0);
    CHECK(y[1] == 0.5);
}

TEST_CASE("matmul in all transpose combinations, transpose, reshape") {
    const Td a = rnd(Shape{3, 4}, 13), at = rnd(Shape{4, 3}, 14), b = rnd(Shape{4, 2}, 15), bt = rnd(Shape{2, 4}, 16);
    check_both([](Tape<double>&, const Vs& x) { return matmul(x[0], x[1]); }, {a, b});
    check_both([](Tape<double>&, const Vs& x) { return matmul(x[0], x[1], true, false); }, {at, b});
    check_both([](Tape<double>&, const Vs& x) { return matmul(x[0], x[1], false, true); }, {a, bt});
    check_both([](Tape<double>&, const Vs& x) { return matmul(x[0], x[1], true, true); }, {at, bt});
    check_both([](Tape<double>&, const Vs& x) { return transpose(x[0]); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return reshape(x[0], Shape{2, 6}) * reshape(x[0], Shape{2, 6}); }, {a});
    Tape<double> t;
    const V c = matmul(t.constant(Td(Shape{2, 2}, {1, 2, 3, 4})), t.constant(Td(Shape{2, 2}, {5, 6, 7, 8})), true, false);
    CHECK(c.value()(0, 0) == 1 * 5 + 3 * 7);
    CHECK(c.value()(1, 1) == 2 * 6 + 4 * 8);
    try {
        matmul(t.constant(Td(Shape{2, 3})), t.constant(Td(Shape{2, 3})));
        FAIL("expected shape_error");
    } catch (const shape_error& e) {
        CHECK(std::string(e.what()) == "matmul: inner dimensions differ: (2, 3) x (2, 3)");
    }
}

TEST_CASE("reductions: sum, mean, max, min, logsumexp") {
    const Td a = rnd_away(Shape{3, 4}, 17), c = rnd_away(Shape{2, 3, 4}, 18);
    check_both([](Tape<double>&, const Vs& x) { return sum(x[0]); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return mean(x[0]) * mean(x[0]); }, {a});
    for (int axis = 0; axis < 3; ++axis) {
        check_both([axis](Tape<double>&, const Vs& x) { return square(sum(x[0], axis)); }, {c});
        check_both([axis](Tape<double>&, const Vs& x) { return mean(x[0], axis, true) * x[0]; }, {c});
        check_both([axis](Tape<double>&, const Vs& x) { return square(max(x[0], axis)); }, {c});
        check_both([axis](Tape<double>&, const Vs& x) { return square(min(x[0], axis, true)); }, {c});
        check_both([axis](Tape<double>&, const Vs& x) { return logsumexp(x[0], axis); }, {c});
    }
    Tape<double> t;
    const V m = max(t.constant(Td(Shape{2, 3}, {1, 5, 2, 7, 0, 7})), 1);
    CHECK(m.shape() == Shape{2});
    CHECK(m[0] == 5);
    CHECK(m[1] == 7);
    // The gradient of a tie goes to the first maximum only.
    const V v = t.variable(Td(Shape{1, 3}, {7, 7, 1}));
    backward(sum(max(v, 1)));
    CHECK(v.grad()[0] == 1);
    CHECK(v.grad()[1] == 0);
    CHECK_THROWS_WITH_AS(sum(v, 2), "sum: axis 2 is out of range for shape (1, 3)", shape_error);
}

TEST_CASE("elementwise math functions") {
    const Td a = rnd_away(Shape{2, 5}, 19), pos = rnd(Shape{2, 5}, 20, 0.3, 3.0), small = rnd(Shape{2, 5}, 21, -0.9, 2.0);
    check_both([](Tape<double>&, const Vs& x) { return exp(x[0]); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return log(x[0]); }, {pos});
    check_both([](Tape<double>&, const Vs& x) { return log1p(x[0]); }, {small});
    check_both([](Tape<double>&, const Vs& x) { return sqrt(x[0]); }, {pos});
    check_both([](Tape<double>&, const Vs& x) { return pow(x[0], 2.5); }, {pos});
    check_both([](Tape<double>&, const Vs& x) { return pow(x[0], -1.5); }, {pos});
    check_both([](Tape<double>&, const Vs& x) { return abs(x[0]) * x[0]; }, {a});
    check_both([](Tape<double>&, const Vs& x) { return square(x[0]); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return square(clamp(x[0], -1.0, 1.0)); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return tanh(x[0]); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return sigmoid(x[0]); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return relu(x[0]) * x[0]; }, {a});
    check_both([](Tape<double>&, const Vs& x) { return leaky_relu(x[0], 0.1) * x[0]; }, {a});
    check_both([](Tape<double>&, const Vs& x) { return elu(x[0], 1.3); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return softplus(x[0]); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return log_sigmoid(x[0]); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return erf(x[0]); }, {a});
}

TEST_CASE("atan: values, first and second derivatives against std, hand and PyTorch float64 values") {
    check_both([](Tape<double>&, const Vs& x) { return atan(x[0]); }, {rnd(Shape{2, 5}, 33, -3.0, 3.0)});
    check_both([](Tape<double>&, const Vs& x) { return atan(x[0] * x[1]); }, {rnd(Shape{4}, 34), rnd(Shape{4}, 35)});
    // PyTorch 1.13, float64: atan, its gradient and the gradient of the gradient's sum.
    const Td xs(Shape{6}, {-2.5, -1.0, 0.0, 0.3, 1.0, 4.0});
    const double value[] = {-1.1902899496825317, -0.7853981633974483, 0.0, 0.2914567944778671, 0.7853981633974483, 1.3258176636680326};
    const double d1[] = {0.13793103448275862, 0.5, 1.0, 0.9174311926605504, 0.5, 0.058823529411764705};
    const double d2[] = {0.09512485136741973, 0.5, -0.0, -0.505007995959936, -0.5, -0.02768166089965398};
    Tape<double> t;
    const V x = t.variable(xs);
    const V y = atan(x);
    const V g = grad(sum(y), x, /*create_graph=*/true);
    const V h = grad(sum(g), x);
    for (std::size_t i = 0; i < 6; ++i) {
        CHECK(y[i] == std::atan(xs[i]));
        CHECK(y[i] == doctest::Approx(value[i]).epsilon(1e-15));
        CHECK(g[i] == doctest::Approx(1.0 / (1.0 + xs[i] * xs[i])).epsilon(1e-15));
        CHECK(g[i] == doctest::Approx(d1[i]).epsilon(1e-15));
        CHECK(h[i] == doctest::Approx(-2.0 * xs[i] / ((1.0 + xs[i] * xs[i]) * (1.0 + xs[i] * xs[i]))).epsilon(1e-14));
        CHECK(h[i] == doctest::Approx(d2[i]).epsilon(1e-14));
    }
    CHECK(y[4] == doctest::Approx(std::acos(-1.0) / 4).epsilon(1e-15));  // atan(1) = pi/4
    backward(sum(y));
    CHECK(x.grad()[1] == 0.5);  // 1 / (1 + 1)
    CHECK(std::string(t.node(y.index()).op->name) == "atan");
    Tape<float> tf;  // float and literals
    CHECK(atan(tf.constant(Tensor<float>(Shape{1}, {1.0f})) * 2)[0] == std::atan(2.0f));
}

TEST_CASE("sin and cos: values, first and second derivatives") {
    const Td xs = rnd(Shape{2, 5}, 41, -7.0, 7.0);
    check_both([](Tape<double>&, const Vs& x) { return sin(x[0]); }, {xs});
    check_both([](Tape<double>&, const Vs& x) { return cos(x[0]); }, {xs});
    Tape<double> t;
    const V x = t.variable(xs);
    const V y = sin(x);
    const V g = grad(sum(y), x, /*create_graph=*/true);
    const V h = grad(sum(g), x);
    for (std::size_t i = 0; i < xs.size(); ++i) {
        CHECK(y[i] == std::sin(xs[i]));
        CHECK(g[i] == doctest::Approx(std::cos(xs[i])).epsilon(1e-15));
        CHECK(h[i] == doctest::Approx(-std::sin(xs[i])).epsilon(1e-15));
        CHECK(cos(x)[i] == std::cos(xs[i]));
    }
    CHECK(std::string(t.node(y.index()).op->name) == "sin");
    // PyTorch 1.13, float64: sin and cos, their gradients and the gradients of the gradients' sums.
    const Td xp(Shape{6}, {-2.5, -1.0, 0.0, 0.3, 1.0, 4.0});
    const double sin_v[] = {-0.5984721441039564, -0.8414709848078965, 0.0, 0.29552020666133955, 0.8414709848078965, -0.7568024953079282};
    const double cos_v[] = {-0.8011436155469337, 0.5403023058681398, 1.0, 0.955336489125606, 0.5403023058681398, -0.6536436208636119};
    Tape<double> tp;
    const V xv = tp.variable(xp);
    const V s1 = sin(xv), c1 = cos(xv);
    const V gs = grad(sum(s1), xv, /*create_graph=*/true), gc = grad(sum(c1), xv, /*create_graph=*/true);
    const V hs = grad(sum(gs), xv), hc = grad(sum(gc), xv);
    for (std::size_t i = 0; i < 6; ++i) {
        CHECK(s1[i] == doctest::Approx(sin_v[i]).epsilon(1e-15));
        CHECK(c1[i] == doctest::Approx(cos_v[i]).epsilon(1e-15));
        CHECK(gs[i] == doctest::Approx(cos_v[i]).epsilon(1e-15));   // torch: d sin = cos
        CHECK(gc[i] == doctest::Approx(-sin_v[i]).epsilon(1e-15));  // torch: d cos = -sin
        CHECK(hs[i] == doctest::Approx(-sin_v[i]).epsilon(1e-15));
        CHECK(hc[i] == doctest::Approx(-cos_v[i]).epsilon(1e-15));
    }
}

TEST_CASE("softmax family along every axis") {
    const Td c = rnd(Shape{2, 3, 4}, 22);
    for (int axis = 0; axis < 3; ++axis) {
        check_both([axis](Tape<double>&, const Vs& x) { return softmax(x[0], axis); }, {c});
        check_both([axis](Tape<double>&, const Vs& x) { return log_softmax(x[0], axis); }, {c});
        check_both([axis](Tape<double>&, const Vs& x) { return logsumexp(x[0], axis, true); }, {c});
    }
    Tape<double> t;
    const V p = softmax(t.constant(Td(Shape{1, 3}, {1, 2, 3})));
    const double z = std::exp(1) + std::exp(2) + std::exp(3);
    CHECK(p[2] == doctest::Approx(std::exp(3) / z).epsilon(1e-14));
}

TEST_CASE("where, concat, slice, pad, gather_rows") {
    const Td a = rnd(Shape{3, 4}, 23), b = rnd(Shape{3, 4}, 24), c2 = rnd(Shape{3, 2}, 25);
    check_both([](Tape<double>& t, const Vs& x) {
        const V cond = t.constant(Td(Shape{3, 4}, {1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0}));
        return where(cond, x[0] * x[0], x[1] * x[0]);
    }, {a, b});
    check_both([](Tape<double>&, const Vs& x) { return concat(x[0], x[1], 1) * concat(x[1], x[0], 1); }, {a, c2});
    check_both([](Tape<double>&, const Vs& x) { return concat(x[0], x[1], 0); }, {a, b});
    check_both([](Tape<double>&, const Vs& x) { return square(slice(x[0], 1, 1, 2)); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return square(pad(x[0], 0, 1, 5)); }, {a});
    check_both([](Tape<double>&, const Vs& x) { return square(gather_rows(x[0], {2, 0, 2, 1})); }, {a});
    Tape<double> t;
    const V g = gather_rows(t.constant(a), {2, 0});
    CHECK(g.shape() == Shape{2, 4});
    CHECK(g.value()(0, 3) == a(2, 3));
    CHECK_THROWS_WITH_AS(gather_rows(t.constant(a), {3}), "gather_rows: index 3 at position 0 is out of range for 3 rows",
                         value_error);
    CHECK_THROWS_WITH_AS(slice(t.constant(a), 1, 3, 2), "slice: range [3, 5) exceeds axis 1 of shape (3, 4)", shape_error);
}

TEST_CASE("fused dense matches the unfused ops, to first and second order") {
    const Td x = rnd(Shape{5, 3}, 26), w = rnd(Shape{3, 4}, 27), b = rnd(Shape{4}, 28);
    const Activation acts[] = {Activation::none, Activation::relu, Activation::leaky_relu, Activation::elu,
                               Activation::tanh, Activation::sigmoid, Activation::softplus};
    for (Activation act : acts) {
        INFO("activation " << std::string(activation_name(act)));
        check_both([act](Tape<double>&, const Vs& v) { return dense(v[0], v[1], v[2], act, 0.2); }, {x, w, b});
        Tape<double> t;
        const V xv = t.constant(x), wv = t.constant(w), bv = t.constant(b);
        const V fused = dense(xv, wv, bv, act, 0.2);
        const V z = matmul(xv, wv) + bv;
        V ref = z;
        switch (act) {
        case Activation::none: break;
        case Activation::relu: ref = relu(z); break;
        case Activation::leaky_relu: ref = leaky_relu(z, 0.2); break;
        case Activation::elu: ref = elu(z, 0.2); break;
        case Activation::tanh: ref = tanh(z); break;
        case Activation::sigmoid: ref = sigmoid(z); break;
        case Activation::softplus: ref = softplus(z); break;
        }
        for (std::size_t i = 0; i < fused.size(); ++i) CHECK(fused[i] == doctest::Approx(ref[i]).epsilon(1e-12));
    }
    check_both([](Tape<double>&, const Vs& v) { return dense(v[0], v[1], nullptr, Activation::tanh); }, {x, w});
}

namespace {
const Activation all_acts[] = {Activation::none, Activation::relu, Activation::leaky_relu, Activation::elu,
                               Activation::tanh, Activation::sigmoid, Activation::softplus};

/// Gradients of sum(dense(x, w, b, act) * r) for x, w, b, eagerly or recorded (create_graph).
template <class T>
std::vector<Tensor<T>> dense_grads(Activation act, bool create_graph) {
    const auto as = [](const Td& d) {
        Tensor<T> out(d.shape());
        for (std::size_t i = 0; i < d.size(); ++i) out.data()[i] = static_cast<T>(d.data()[i]);
        return out;
    };
    // 7 x 13 outputs: full vectors and a tail on every instruction set.
    Tape<T> t;
    const Var<T> x = t.variable(as(rnd(Shape{7, 5}, 40))), w = t.variable(as(rnd(Shape{5, 13}, 41)));
    const Var<T> b = t.variable(as(rnd(Shape{13}, 42)));
    const Var<T> loss = sum(dense(x, w, b, act, T(0.2)) * t.constant(as(rnd(Shape{7, 13}, 43))));
    std::vector<Tensor<T>> out;
    for (const Var<T>& g : grad(loss, {x, w, b}, create_graph)) out.push_back(g.value());
    return out;
}

template <class T>
void check_recorded_equals_eager() {
    for (Activation act : all_acts) {
        INFO("activation " << std::string(activation_name(act)) << ", " << sizeof(T) << "-byte values");
        const auto eager = dense_grads<T>(act, false), recorded = dense_grads<T>(act, true);
        REQUIRE(eager.size() == 3);
        for (std::size_t k = 0; k < eager.size(); ++k) {
            REQUIRE(eager[k].size() == recorded[k].size());
            CHECK(std::memcmp(eager[k].data(), recorded[k].data(), eager[k].size() * sizeof(T)) == 0);
        }
    }
}

/// act(z) with the standalone activation ops (alpha 0.2).
V unfused_activation(Activation act, const V& z) {
    switch (act) {
    case Activation::none: return z;
    case Activation::relu: return relu(z);
    case Activation::leaky_relu: return leaky_relu(z, 0.2);
    case Activation::elu: return elu(z, 0.2);
    case Activation::tanh: return tanh(z);
    case Activation::sigmoid: return sigmoid(z);
    case Activation::softplus: return softplus(z);
    }
    return z;
}

/// The order-th directional derivative along u of sum(act(x w + b) * r) with respect to x, each
/// order from a recorded grad(), through the fused dense op or the standalone ops.
double dense_directional(Activation act, const Td& x, const Td& u, int order, bool fused = true) {
    Tape<double> t;
    const V xv = t.variable(x), uv = t.constant(u), w = t.constant(rnd(Shape{3, 4}, 51)), b = t.constant(rnd(Shape{4}, 52));
    const V y = fused ? dense(xv, w, b, act, 0.2) : unfused_activation(act, matmul(xv, w) + b);
    V f = sum(y * t.constant(rnd(Shape{2, 4}, 53)));
    // allow_unused: for the piecewise linear activations the second derivative does not depend on x.
    for (int k = 0; k < order; ++k) f = sum(grad(f, xv, /*create_graph=*/true, /*allow_unused=*/true) * uv);
    return f.item();
}
} // namespace

TEST_CASE("dense: the recorded first-order gradient equals the eager one bit for bit") {
    check_recorded_equals_eager<double>();
    check_recorded_equals_eager<float>();
}

TEST_CASE("dense: third derivatives against differences of the recorded second derivative") {
    const Td x = rnd(Shape{2, 3}, 54), u = rnd(Shape{2, 3}, 50);
    for (Activation act : all_acts) {
        INFO("activation " << std::string(activation_name(act)));
        // d/dh of the second derivative at x + h u, by central differences.
        const double h = 1e-5;
        Td xp = x, xm = x;
        for (std::size_t i = 0; i < x.size(); ++i) {
            xp.data()[i] += h * u.data()[i];
            xm.data()[i] -= h * u.data()[i];
        }
        const double numeric = (dense_directional(act, xp, u, 2) - dense_directional(act, xm, u, 2)) / (2 * h);
        const double analytic = dense_directional(act, x, u, 3);
        INFO("analytic " << analytic << ", numeric " << numeric);
        CHECK(std::abs(analytic - numeric) < 1e-6 * std::max(1.0, std::abs(numeric)));
        CHECK(analytic == doctest::Approx(dense_directional(act, x, u, 3, false)).epsilon(1e-12));
        if (act == Activation::none || act == Activation::relu || act == Activation::leaky_relu) CHECK(analytic == 0.0);
        else CHECK(std::abs(analytic) > 1e-3);
    }
    // One value by hand: the third derivative of tanh(w x + b) is w^3 (1 - y^2) (6 y^2 - 2), y = tanh(w x + b).
    Tape<double> t;
    const V xv = t.variable(Td(Shape{1, 1}, {0.3}));
    const V y = dense(xv, t.constant(Td(Shape{1, 1}, {1.7})), t.constant(Td(Shape{1}, {-0.4})), Activation::tanh);
    const V d1 = grad(sum(y), xv, true), d2 = grad(sum(d1), xv, true), d3 = grad(sum(d2), xv);
    const double yy = std::tanh(1.7 * 0.3 - 0.4);
    CHECK(d3[0] == doctest::Approx(1.7 * 1.7 * 1.7 * (1 - yy * yy) * (6 * yy * yy - 2)).epsilon(1e-12));
}

TEST_CASE("bce_with_logits: value, weights, gradients") {
    Tape<double> t;
    const V z = t.constant(Td(Shape{3}, {0.5, -1.0, 2.0}));
    const V y = t.constant(Td(Shape{3}, {1, 0, 1}));
    const double expect = (std::log1p(std::exp(-0.5)) + std::log1p(std::exp(-1.0)) + std::log1p(std::exp(-2.0))) / 3;
    CHECK(bce_with_logits(z, y).item() == doctest::Approx(expect).epsilon(1e-14));
    const V w = t.constant(Td(Shape{3}, {2.0, -0.5, 1.0}));
    const double we = (2 * std::log1p(std::exp(-0.5)) - 0.5 * std::log1p(std::exp(-1.0)) + std::log1p(std::exp(-2.0))) / 2.5;
    CHECK(bce_with_logits(z, y, w).item() == doctest::Approx(we).epsilon(1e-14));
    // Finite at |logit| = 1000 where log(sigmoid) would be -inf.
    const V big = t.constant(Td(Shape{2}, {1000.0, -1000.0}));
    CHECK(bce_with_logits(big, t.constant(Td(Shape{2}, {0, 1}))).item() == doctest::Approx(1000.0));
    const Td labels(Shape{4, 1}, {1, 0, 0, 1});
    const Td weights(Shape{4}, {1.0, 2.0, -0.3, 0.5});
    check_both([&](Tape<double>& tt, const Vs& x) { return bce_with_logits(x[0], tt.view(labels)); }, {rnd(Shape{4, 1}, 29)});
    check_both([&](Tape<double>& tt, const Vs& x) { return bce_with_logits(x[0], x[1], tt.view(weights)); },
               {rnd(Shape{4, 1}, 30), rnd(Shape{4, 1}, 31, 0.0, 1.0)});
    CHECK_THROWS_WITH_AS(bce_with_logits(z, t.constant(Td(Shape{2}))), "bce_with_logits: logits vs targets: shapes do not match: (3,) vs (2,)",
                         shape_error);
}

TEST_CASE("grad_reverse flips and scales the gradient") {
    // Deliberately not the true derivative, so it is checked by hand below; two reversals whose
    // factors multiply to one must give back the true derivative, to first and second order.
    check_both([](Tape<double>&, const Vs& x) { return square(grad_reverse(grad_reverse(x[0], 2.0), 0.5)) * x[0]; },
               {rnd(Shape{3}, 32)});
    Tape<double> t;
    const V x = t.variable(Td(Shape{2}, {1.5, -2.0}));
    const V y = grad_reverse(x, 3.0);
    CHECK(y[0] == 1.5);
    backward(sum(square(y)));
    CHECK(x.grad()[0] == doctest::Approx(-3.0 * 2 * 1.5));
    CHECK(x.grad()[1] == doctest::Approx(-3.0 * 2 * -2.0));
}

TEST_CASE("numerically stable forms at |x| = 1000") {
    Tape<double> t;
    Tape<float> tf;
    const Td big(Shape{2}, {1000.0, -1000.0});
    const V x = t.variable(big);
    const auto fin = [](const V& v) {
        for (std::size_t i = 0; i < v.size(); ++i)
            if (!std::isfinite(v[i])) return false;
        return true;
    };
    CHECK(fin(softplus(x)));
    CHECK(softplus(x)[0] == 1000.0);
    CHECK(softplus(x)[1] == doctest::Approx(0.0));
    CHECK(fin(sigmoid(x)));
    CHECK(sigmoid(x)[0] == 1.0);
    CHECK(sigmoid(x)[1] == 0.0);
    CHECK(fin(log_sigmoid(x)));
    CHECK(log_sigmoid(x)[1] == -1000.0);
    CHECK(fin(logsumexp(x, 0)));
    CHECK(logsumexp(x, 0).item() == 1000.0);
    CHECK(fin(tanh(x)));
    CHECK(fin(softmax(x, 0)));
    CHECK(fin(log_softmax(x, 0)));
    const V all = sum(softplus(x) + sigmoid(x) + log_sigmoid(x) + tanh(x) + logsumexp(x, 0) + log_softmax(x, 0));
    backward(all);
    CHECK(std::isfinite(x.grad()[0]));
    CHECK(std::isfinite(x.grad()[1]));
    const Tensor<float> bigf(Shape{2}, {1000.0f, -1000.0f});
    const auto xf = tf.variable(bigf);
    const auto sf = softplus(xf) + sigmoid(xf) + log_sigmoid(xf) + logsumexp(xf, 0);
    for (std::size_t i = 0; i < sf.size(); ++i) CHECK(std::isfinite(sf[i]));
}
