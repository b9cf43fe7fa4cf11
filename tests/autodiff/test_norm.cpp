// layer_norm and layer_norm_grad: values against PyTorch float64, gradients of first and second order.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/autodiff/norm.hpp>

#include "support/gradcheck.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir_test;

TEST_CASE("layer_norm: values by hand and against torch, gradients of first and second order") {
    Tape<double> t;
    const Td x(Shape{2, 4}, {1, 2, 3, 4, -2, 0, 2, 8});
    const Td y = layer_norm(t.constant(x), 1e-5).value();
    // row 0: mean 2.5, biased var 1.25; row 1: mean 2, var 14
    CHECK(y(0, 0) == doctest::Approx(-1.5 / std::sqrt(1.25 + 1e-5)).epsilon(1e-14));
    CHECK(y(1, 3) == doctest::Approx(6.0 / std::sqrt(14.0 + 1e-5)).epsilon(1e-14));
    const Td x3 = rnd(Shape{2, 3, 7}, 1);
    auto r = torch_eval({{"x", x3}}, "out['y'] = torch.nn.functional.layer_norm(x, x.shape[-1:], eps=1e-3)\n");
    if (r.ran) CHECK(max_abs_diff(layer_norm(t.constant(x3), 1e-3).value(), r["y"]) < 1e-10);
    check_both([](Tape<double>&, const Vs& v) { return layer_norm(v[0], 1e-5); }, {rnd(Shape{3, 5}, 2)});
    check_both([](Tape<double>&, const Vs& v) { return layer_norm(v[0], 0.1); }, {rnd(Shape{2, 2, 4}, 3)});
    // A product after it, so that second derivatives through both rules are exercised.
    check_both([](Tape<double>&, const Vs& v) { return mul(layer_norm(v[0], 1e-5), v[1]); }, {rnd(Shape{3, 4}, 4), rnd(Shape{3, 4}, 5)});
    // The fused gradient on its own, with all three inputs free.
    check_both([](Tape<double>&, const Vs& v) { return layer_norm_grad(v[0], v[1], v[2], 0.01); },
               {rnd(Shape{2, 5}, 6), rnd(Shape{2, 5}, 7), rnd(Shape{2, 5}, 8)});
}

TEST_CASE("layer_norm: errors") {
    Tape<double> t;
    CHECK_THROWS_WITH(layer_norm(t.constant(Td(Shape{2, 3})), 0.0), "layer_norm: eps must be positive, got 0.000000");
    CHECK_THROWS_WITH(layer_norm(t.constant(Td(Shape{2, 0}))), "layer_norm: expects a non-empty last axis, got shape (2, 0)");
    CHECK_THROWS_WITH(layer_norm_grad(t.constant(Td(Shape{2, 3})), t.constant(Td(Shape{3, 2})), t.constant(Td(Shape{3, 2})), 1e-5),
                      "layer_norm_grad: shapes do not match: (2, 3) vs (3, 2)");
}
