// Custom ops defined outside the library (autodiff/custom.hpp): first and second derivatives by
// gradcheck and gradgradcheck, forward values against PyTorch, a wrong rule caught, attributes,
// a rule that records a custom op, and shape errors.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/custom.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/autodiff/ops.hpp>

#include "support/gradcheck.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir_test;

namespace user {
/// softsign(x) = x / (1 + |x|); d/dx = 1 / (1 + |x|)^2.
struct Softsign {
    static constexpr const char* name = "softsign";
    template <class T>
    static void forward(const CustomInputs<T>& in, T* out) {
        for (std::size_t i = 0; i < in.size(0); ++i) out[i] = in.data(0)[i] / (T(1) + std::abs(in.data(0)[i]));
    }
    template <class O, class T, class V>
    static void backward(O& o, const Node<T>& n, const V& g) {
        o.acc(n, 0, div(g, square(add_scalar(abs(o.in(n, 0)), 1))));
    }
};

/// The same op with the square forgotten in its rule: gradcheck must catch it.
struct BrokenSoftsign : Softsign {
    static constexpr const char* name = "broken_softsign";
    template <class O, class T, class V>
    static void backward(O& o, const Node<T>& n, const V& g) {
        o.acc(n, 0, div(g, add_scalar(abs(o.in(n, 0)), 1)));
    }
};

/// Transverse momentum pT = sqrt(px^2 + py^2) of two inputs of one shape; the rule uses the output.
struct TransverseMomentum {
    static constexpr const char* name = "pt";
    template <class T>
    static Shape output_shape(const CustomInputs<T>& in) {
        if (in.shape(0) != in.shape(1))
            throw shape_error("pt: px vs py: shapes do not match: " + in.shape(0).str() + " vs " + in.shape(1).str());
        return in.shape(0);
    }
    template <class T>
    static void forward(const CustomInputs<T>& in, T* out) {
        for (std::size_t i = 0; i < in.size(0); ++i) out[i] = std::sqrt(in.data(0)[i] * in.data(0)[i] + in.data(1)[i] * in.data(1)[i]);
    }
    template <class O, class T, class V>
    static void backward(O& o, const Node<T>& n, const V& g) {
        const V go = div(g, o.out(n));
        if (o.needs(n, 0)) o.acc(n, 0, mul(go, o.in(n, 0)));
        if (o.needs(n, 1)) o.acc(n, 1, mul(go, o.in(n, 1)));
    }
};

/// sqrt(x^2 + a0^2), a smooth |x| with its width as an attribute.
struct SmoothAbs {
    static constexpr const char* name = "smooth_abs";
    template <class T>
    static void forward(const CustomInputs<T>& in, T* out) {
        for (std::size_t i = 0; i < in.size(0); ++i) out[i] = std::sqrt(in.data(0)[i] * in.data(0)[i] + in.a0 * in.a0);
    }
    template <class O, class T, class V>
    static void backward(O& o, const Node<T>& n, const V& g) {
        o.acc(n, 0, mul(div(g, o.out(n)), o.in(n, 0)));
    }
};

/// 3 x^2, the derivative of Cube, as a custom op of its own (d/dx = 6 x).
struct ThreeSquare {
    static constexpr const char* name = "three_square";
    template <class T>
    static void forward(const CustomInputs<T>& in, T* out) {
        for (std::size_t i = 0; i < in.size(0); ++i) out[i] = T(3) * in.data(0)[i] * in.data(0)[i];
    }
    template <class O, class T, class V>
    static void backward(O& o, const Node<T>& n, const V& g) {
        o.acc(n, 0, scale(mul(g, o.in(n, 0)), 6));
    }
};
/// x^3, whose rule records the custom op ThreeSquare (eagerly in backward(), as nodes under create_graph).
struct Cube {
    static constexpr const char* name = "cube";
    template <class T>
    static void forward(const CustomInputs<T>& in, T* out) {
        for (std::size_t i = 0; i < in.size(0); ++i) out[i] = in.data(0)[i] * in.data(0)[i] * in.data(0)[i];
    }
    template <class O, class T, class V>
    static void backward(O& o, const Node<T>& n, const V& g) {
        o.acc(n, 0, mul(g, custom_op<ThreeSquare>(o.in(n, 0))));
    }
};
} // namespace user

TEST_CASE("a custom op: forward values, first and second derivatives") {
    const Td x = rnd_away(Shape{3, 4}, 11);
    check_both([](Tape<double>&, const Vs& v) { return custom_op<user::Softsign>(v[0]); }, {x});
    // Inside a larger expression, and twice on one value.
    check_both([](Tape<double>&, const Vs& v) { return custom_op<user::Softsign>(v[0] * custom_op<user::Softsign>(v[0])); }, {x});

    Tape<double> t;
    const V y = custom_op<user::Softsign>(t.constant(x));
    REQUIRE(y.shape() == x.shape());
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(y[i] == x[i] / (1.0 + std::abs(x[i])));
    CHECK(std::string(y.node().op->name) == "softsign");
    CHECK_FALSE(y.requires_grad());  // a constant in, no gradient out

    const auto r = torch_eval({{"x", x}}, "out['y'] = torch.nn.functional.softsign(x)\n");
    if (r.ran) CHECK(max_abs_diff(r["y"], y.value()) < 1e-10);
}

TEST_CASE("a custom op whose backward rule is wrong is caught by gradcheck") {
    const Td x = rnd_away(Shape{5}, 12);
    const GradcheckResult good = gradcheck([](Tape<double>&, const Vs& v) { return custom_op<user::Softsign>(v[0]); }, std::vector<Td>{x});
    CHECK(good.passed);
    const GradcheckResult bad = gradcheck([](Tape<double>&, const Vs& v) { return custom_op<user::BrokenSoftsign>(v[0]); }, std::vector<Td>{x});
    CHECK_FALSE(bad.passed);
    CHECK(bad.max_error > 0.05);
    CHECK(bad.message().find("FAILED") == 0);
}

TEST_CASE("a custom op of two inputs that uses its output; attributes; a rule that records a custom op") {
    const Td px = rnd_away(Shape{2, 3}, 13), py = rnd_away(Shape{2, 3}, 14);
    check_both([](Tape<double>&, const Vs& v) { return custom_op<user::TransverseMomentum>(v[0], v[1]); }, {px, py});
    Tape<double> t;
    const V pt = custom_op<user::TransverseMomentum>(t.constant(px), t.constant(py));
    for (std::size_t i = 0; i < px.size(); ++i) CHECK(pt[i] == std::sqrt(px[i] * px[i] + py[i] * py[i]));
    const auto r = torch_eval({{"px", px}, {"py", py}}, "out['pt'] = torch.hypot(px, py)\n");
    if (r.ran) CHECK(max_abs_diff(r["pt"], pt.value()) < 1e-10);

    // Gradient with respect to one input only.
    const V a = t.variable(px);
    const V b = t.constant(py);
    backward(sum(custom_op<user::TransverseMomentum>(a, b)));
    const Td ga = a.grad();
    for (std::size_t i = 0; i < px.size(); ++i) CHECK(ga[i] == doctest::Approx(px[i] / std::hypot(px[i], py[i])).epsilon(1e-14));

    // Attributes: n.a0 in the rule, in.a0 in the kernel.
    const Td x = rnd(Shape{4, 2}, 15);
    check_both([](Tape<double>&, const Vs& v) { return custom_op<user::SmoothAbs>(CustomAttributes<double>{0.3, 0.0}, v[0]); }, {x});
    const V s = custom_op<user::SmoothAbs>(CustomAttributes<double>{0.3, 0.0}, t.constant(x));
    CHECK(s.node().a0 == 0.3);
    CHECK(s[0] == std::sqrt(x[0] * x[0] + 0.09));

    // Cube's rule records ThreeSquare: third derivatives through two custom ops.
    check_both([](Tape<double>&, const Vs& v) { return custom_op<user::Cube>(v[0]); }, {x});
    const V c = t.variable(x);
    const V g = grad(sum(custom_op<user::Cube>(c)), c, true);
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(g[i] == doctest::Approx(3 * x[i] * x[i]).epsilon(1e-14));
    const V gg = grad(sum(g), c);
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(gg[i] == doctest::Approx(6 * x[i]).epsilon(1e-14));
}

TEST_CASE("custom op errors: shapes named by the op, operands on different tapes") {
    Tape<double> t, u;
    CHECK_THROWS_WITH_AS(custom_op<user::TransverseMomentum>(t.constant(Td(Shape{2, 3})), t.constant(Td(Shape{3, 2}))),
                         "pt: px vs py: shapes do not match: (2, 3) vs (3, 2)", shape_error);
    CHECK_THROWS_WITH_AS(custom_op<user::TransverseMomentum>(t.constant(Td(Shape{2})), u.constant(Td(Shape{2}))),
                         "pt: operands are recorded on different tapes", tape_error);
}
