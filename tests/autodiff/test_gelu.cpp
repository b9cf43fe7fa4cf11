// gelu and gelu_grad: values against PyTorch float64, gradients of first and second order.
#include <doctest/doctest.h>

#include <cmath>
#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gelu.hpp>
#include <tapir/autodiff/gradcheck.hpp>

#include "support/gradcheck.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir_test;

TEST_CASE("gelu: values by hand and against torch, gradients of first and second order") {
    Tape<double> t;
    const Td x = rnd(Shape{3, 7}, 1, -4.0, 4.0);
    const Td y = gelu(t.constant(x)).value();
    for (std::size_t i = 0; i < x.size(); ++i)
        CHECK(y.data()[i] == doctest::Approx(0.5 * x.data()[i] * (1.0 + std::erf(x.data()[i] / std::sqrt(2.0)))).epsilon(1e-15));
    auto r = torch_eval({{"x", x}}, "out['y'] = torch.nn.functional.gelu(x)\n");
    if (r.ran) CHECK(max_abs_diff(y, r["y"]) < 1e-10);
    check_both([](Tape<double>&, const Vs& v) { return gelu(v[0]); }, {rnd(Shape{4, 5}, 2)});
    check_both([](Tape<double>&, const Vs& v) { return mul(gelu(v[0]), v[1]); }, {rnd(Shape{4, 5}, 3), rnd(Shape{4, 5}, 4)});
    check_both([](Tape<double>&, const Vs& v) { return gelu_grad(v[0], v[1]); }, {rnd(Shape{2, 3}, 5), rnd(Shape{2, 3}, 6)});
    CHECK_THROWS_WITH(gelu_grad(t.constant(Td(Shape{2, 3})), t.constant(Td(Shape{3, 2}))), "gelu_grad: shapes do not match: (2, 3) vs (3, 2)");
}
