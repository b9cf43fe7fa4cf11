// The user-facing derivative API: PyTorch-like behaviour of grad(), scalar literals, and the
// Hessian, Hessian-vector product and Jacobian against hand-derived values.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/functional.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/random.hpp>

using namespace tapir;
using Td = Tensor<double>;

TEST_CASE("Var::grad() after backward() survives a later grad() call") {
    Tape<double> t;
    const Var<double> x = t.variable(Td(Shape{2}, {1.0, 2.0}));
    backward(sum(square(x)));
    const Var<double> g = grad(sum(x * 3.0), x);
    CHECK(g[0] == 3.0);
    CHECK(x.grad()[0] == 2.0);  // 3.0 before: grad() overwrote backward()'s leaf gradients
    CHECK(x.grad()[1] == 4.0);
    backward(sum(x * 5.0));  // a new backward() replaces them
    CHECK(x.grad()[1] == 5.0);
}

TEST_CASE("grad(f, {a}) with one input gives a vector of one gradient") {
    Tape<double> t;
    const Var<double> a = t.variable(Td(Shape{2}, {1.5, -2.0}));
    const auto gs = grad(sum(square(a)), {a});
    static_assert(std::is_same<std::decay_t<decltype(gs)>, std::vector<Var<double>>>::value, "a braced list gives a vector");
    REQUIRE(gs.size() == 1);
    CHECK(gs[0].shape() == Shape{2});
    CHECK(gs[0][0] == 3.0);
    CHECK(gs[0][1] == -4.0);
    const auto g2 = grad(sum(square(a)), {a}, /*create_graph=*/true);
    CHECK(grad(sum(g2[0]), a)[1] == 2.0);
    static_assert(std::is_same<decltype(grad(sum(a), a)), Var<double>>::value, "one input without braces stays a Var");
}

template <class T>
void check_literals() {
    Tape<T> t;
    const Var<T> x = t.variable(Tensor<T>(Shape{2}, {T(2), T(4)}));
    CHECK(pow(x, 3)[0] == T(8));
    CHECK(pow(x, 0.5)[1] == T(2));
    CHECK(pow(x, 2.0f)[1] == T(16));
    CHECK((x * 2)[1] == T(8));
    CHECK((2 * x)[0] == T(4));
    CHECK((x * 0.5)[1] == T(2));
    CHECK((x + 1)[0] == T(3));
    CHECK((1 + x)[1] == T(5));
    CHECK((x - 1)[0] == T(1));
    CHECK((1 - x)[1] == T(-3));
    CHECK((x / 2)[1] == T(2));
    CHECK((8 / x)[0] == T(4));
    CHECK((x / 4.0f)[0] == T(0.5));
    CHECK((x - 0.5)[0] == T(1.5));
    CHECK(clamp(x, 0, 3)[1] == T(3));
    CHECK(leaky_relu(x * -1, 0.5)[0] == T(-1));
    CHECK(scale(x, 3)[0] == T(6));
    CHECK(add_scalar(x, 1u)[0] == T(3));
    backward(sum(pow(x, 3) * 2 + 1));
    CHECK(x.grad()[0] == T(24));  // d/dx 2x^3 = 6x^2
}

TEST_CASE("arithmetic literals of any type work with Var<double> and Var<float>") {
    check_literals<double>();
    check_literals<float>();
}

TEST_CASE("grad() of a non-scalar output needs grad_outputs, as backward() does") {
    Tape<double> t;
    const Var<double> x = t.variable(Td(Shape{2}, {1.0, 2.0}));
    const Var<double> y = square(x);
    CHECK_THROWS_WITH_AS(grad(y, x), "grad: output of shape (2,) is not a single value; pass its gradient: grad(outputs, inputs, grad_outputs)",
                         shape_error);
    CHECK_THROWS_AS(grad(std::vector<Var<double>>{y}, {x}), shape_error);
    CHECK_THROWS_AS(backward(y), shape_error);
    // With the seed: the vector-Jacobian product v^T dy/dx = (v0 2 x0, v1 2 x1).
    const Var<double> v = t.constant(Td(Shape{2}, {10.0, -1.0}));
    const Var<double> g = grad(y, x, v);
    CHECK(g[0] == 20.0);
    CHECK(g[1] == -4.0);
    const auto gs = grad(std::vector<Var<double>>{y, x * 3.0}, {x}, {v, v}, /*create_graph=*/true);
    CHECK(gs[0][0] == 20.0 + 30.0);
    CHECK(gs[0][1] == -4.0 - 3.0);
    CHECK(grad(sum(gs[0]), x)[0] == 20.0);  // recorded: d/dx0 (2 v0 x0) = 2 v0
    CHECK_THROWS_WITH_AS(grad(y, x, t.constant(Td(Shape{3}))), "grad: gradient for output: shapes do not match: (2,) vs (3,)", shape_error);
    CHECK_THROWS_WITH_AS(grad(std::vector<Var<double>>{y}, {x}, std::vector<Var<double>>{}), "grad: 0 grad_outputs for 1 outputs", value_error);
}

TEST_CASE("grad() of an output that does not depend on an input raises unless allow_unused") {
    Tape<double> t;
    const Var<double> x = t.variable(Td(Shape{2}, {1.0, 2.0}));
    const Var<double> w = t.variable(Td(Shape{3}, {1.0, 2.0, 3.0}));
    const Var<double> f = sum(square(x));
    CHECK_THROWS_WITH_AS(grad(f, w), "grad: input #0 (shape (3,)) is not used to compute the outputs; pass allow_unused = true for a zero gradient",
                         tape_error);
    CHECK_THROWS_WITH_AS(grad(f, {x, w}), "grad: input #1 (shape (3,)) is not used to compute the outputs; pass allow_unused = true for a zero gradient",
                         tape_error);
    CHECK_THROWS_AS(grad(f, {x, w}, /*create_graph=*/true), tape_error);
    const auto gs = grad(f, {x, w}, false, /*allow_unused=*/true);
    CHECK(gs[0][1] == 4.0);
    CHECK(gs[1].shape() == Shape{3});
    CHECK(gs[1][2] == 0.0);
    const auto gr = grad(f, {x, w}, /*create_graph=*/true, /*allow_unused=*/true);
    CHECK(gr[1][0] == 0.0);
    // backward() keeps its behaviour for parameters: an unused one simply gets nothing.
    Parameter<double> p("p", Td(Shape{2}, {5.0, 6.0})), q("q", Td(Shape{1}, {7.0}));
    const Var<double> pv = t.param(p);
    t.param(q);
    backward(sum(pv * 2.0));
    CHECK(p.grad[1] == 2.0);
    CHECK(q.grad[0] == 0.0);
}

namespace {
/// f(x) = x0^2 x1 + x1^3: gradient (2 x0 x1, x0^2 + 3 x1^2), Hessian [[2 x1, 2 x0], [2 x0, 6 x1]].
Var<double> cubic(const Var<double>& x) {
    const Var<double> x0 = slice(x, 0, 0, 1), x1 = slice(x, 0, 1, 1);
    return sum(x0 * x0 * x1 + x1 * x1 * x1);
}
} // namespace

TEST_CASE("hessian, hvp and jacobian against hand-derived values") {
    Tape<double> t;
    const Var<double> x = t.variable(Td(Shape{2}, {2.0, 3.0}));
    const Td h = hessian(cubic(x), x);
    REQUIRE(h.shape() == Shape{2, 2});
    CHECK(h(0, 0) == doctest::Approx(6.0));
    CHECK(h(0, 1) == doctest::Approx(4.0));
    CHECK(h(1, 0) == doctest::Approx(4.0));
    CHECK(h(1, 1) == doctest::Approx(18.0));
    const Var<double> hv = hvp(cubic(x), x, t.constant(Td(Shape{2}, {1.0, -1.0})));
    CHECK(hv[0] == doctest::Approx(6.0 - 4.0));
    CHECK(hv[1] == doctest::Approx(4.0 - 18.0));
    // d/dx of (H v) with create_graph: d/dx (2 x1 - 2 x0, 2 x0 - 6 x1) summed = (0, -4).
    const Var<double> hvr = hvp(cubic(x), x, t.constant(Td(Shape{2}, {1.0, -1.0})), /*create_graph=*/true);
    const Var<double> d = grad(sum(hvr), x);
    CHECK(d[0] == doctest::Approx(0.0));
    CHECK(d[1] == doctest::Approx(-4.0));
    // y = (x0^2, x0 x1, 3 x1): J = [[2 x0, 0], [x1, x0], [0, 3]].
    const Var<double> x0 = slice(x, 0, 0, 1), x1 = slice(x, 0, 1, 1);
    const Var<double> y = concat(std::vector<Var<double>>{x0 * x0, x0 * x1, x1 * 3.0}, 0);
    const Td j = jacobian(y, x);
    REQUIRE(j.shape() == Shape{3, 2});
    const double expect[3][2] = {{4.0, 0.0}, {3.0, 2.0}, {0.0, 3.0}};
    for (std::size_t r = 0; r < 3; ++r)
        for (std::size_t c = 0; c < 2; ++c) CHECK(j(r, c) == doctest::Approx(expect[r][c]));
    // A linear function has a zero Hessian; one that ignores x too.
    const Td hz = hessian(sum(x * 2.0), x);
    CHECK(hz(1, 0) == 0.0);
    const Var<double> other = t.variable(Td(Shape{1}, {1.0}));
    CHECK(hessian(sum(other * other), x)(1, 1) == 0.0);
}

namespace {
/// A dense network applied twice on one tape (two leaves of each parameter, as a critic scored on
/// two batches): backward() adds the weight gradients into Parameter::grad with the GEMM itself.
struct TwoCalls {
    tapir::Rng rng{91};
    Parameter<float> w1{"w1", Tensor<float>(Shape{16, 8})}, b1{"b1", Tensor<float>(Shape{8})}, w2{"w2", Tensor<float>(Shape{8, 1})};
    Tensor<float> x1, x2;
    explicit TwoCalls(std::size_t n1 = 32, std::size_t n2 = 20) : x1(Shape{n1, 16}), x2(Shape{n2, 16}) {
        for (Parameter<float>* p : {&w1, &b1, &w2})
            for (std::size_t i = 0; i < p->size(); ++i) p->value[i] = static_cast<float>(rng.normal());
        for (Tensor<float>* x : {&x1, &x2})
            for (std::size_t i = 0; i < x->size(); ++i) (*x)[i] = static_cast<float>(rng.normal());
    }
    /// The loss; the weight leaves of each call in leaves (call 1's w1, w2, then call 2's).
    Var<float> loss(Tape<float>& t, std::vector<Var<float>>& leaves) {
        leaves.clear();
        Var<float> total;
        for (const Tensor<float>* x : {&x1, &x2}) {
            const Var<float> a = t.param(w1), c = t.param(w2);
            leaves.push_back(a);
            leaves.push_back(c);
            const Var<float> h = dense(t.view(*x), a, t.param(b1), Activation::tanh);
            const Var<float> s = sum(square(dense(h, c, nullptr)));
            total = total.valid() ? add(total, s) : s;
        }
        return total;
    }
};
/// The values of gradients (kept past a tape's clear()).
std::vector<std::vector<float>> values_of(const std::vector<Var<float>>& vs) {
    std::vector<std::vector<float>> out;
    for (const Var<float>& v : vs) out.emplace_back(v.data(), v.data() + v.size());
    return out;
}
} // namespace

TEST_CASE("backward() adds dense weight gradients into Parameter::grad with the GEMM: the sums of grad()'s, same bits") {
    for (const bool anomaly : {false, true}) {
        for (const float start : {0.0f, 0.25f}) {
            CAPTURE(anomaly);
            CAPTURE(start);
            TwoCalls m;
            Tape<float> t;
            t.set_detect_anomaly(anomaly);
            std::vector<Var<float>> leaves;
            // Reference: each leaf's gradient from grad() (which returns them, never fuses), added
            // to the starting value in backward()'s order (the later call first).
            const Var<float> l = m.loss(t, leaves);
            const std::vector<std::vector<float>> g = values_of(grad(l, leaves));
            for (Parameter<float>* p : {&m.w1, &m.w2}) p->grad.fill(start);
            t.clear();
            backward(m.loss(t, leaves));
            if (anomaly) {
                CHECK(leaves[0].grad().size() == m.w1.size());  // anomaly mode: the leaves keep their gradients
            } else {
                CHECK_THROWS_WITH_AS(leaves[0].grad(), doctest::Contains("parameter 'w1'"), tape_error);
            }
            for (std::size_t k = 0; k < 2; ++k) {
                Parameter<float>& p = k == 0 ? m.w1 : m.w2;
                std::size_t differ = 0, nonzero = 0;
                for (std::size_t i = 0; i < p.size(); ++i) {
                    const float want = (start + g[2 + k][i]) + g[k][i];
                    differ += std::memcmp(&want, &p.grad[i], sizeof want) != 0;
                    nonzero += g[k][i] != 0.0f;
                }
                CHECK(differ == 0);
                CHECK(nonzero == p.size());
            }
        }
    }
}

TEST_CASE("backward()'s fused weight gradient over several GEMM K blocks equals grad()'s within float rounding") {
    TwoCalls m(1500, 700);  // batches deeper than one K block of the GEMM
    Tape<float> t;
    std::vector<Var<float>> leaves;
    const Var<float> l = m.loss(t, leaves);
    const std::vector<std::vector<float>> g = values_of(grad(l, leaves));
    t.clear();
    backward(m.loss(t, leaves));
    double worst = 0.0;
    for (std::size_t i = 0; i < m.w1.size(); ++i) {
        const double want = static_cast<double>(g[2][i]) + static_cast<double>(g[0][i]);
        worst = std::max(worst, std::abs(static_cast<double>(m.w1.grad[i]) - want) / (std::abs(want) + 1.0));
    }
    CHECK(worst < 1e-5);
}
