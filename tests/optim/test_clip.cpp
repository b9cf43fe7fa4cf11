// Gradient clipping (by global norm, by value) and L1/L2 regularisation, hand-computed cases.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <tapir/autodiff/ops.hpp>
#include <tapir/optim/clip.hpp>
#include <tapir/optim/regularization.hpp>
#include <vector>

#include "support/alloc_counter.hpp"

using namespace tapir;
using namespace tapir::optim;

namespace {
/// Gradients (3, -4) and (12): global norm 13.
template <class T>
struct Grads {
    Parameter<T> a{"a", Tensor<T>(Shape{2}, {T(1), T(-2)})};
    Parameter<T> b{"b", Tensor<T>(Shape{1, 2}, {T(0.5), T(0)})};
    Grads() {
        a.grad[0] = T(3);
        a.grad[1] = T(-4);
        b.grad[0] = T(12);
        b.grad[1] = T(0);
    }
    std::vector<Parameter<T>*> params() { return {&a, &b}; }
};
} // namespace

TEST_CASE_TEMPLATE("clip_grad_norm scales to max_norm and returns the norm before clipping", T, float, double) {
    Grads<T> g;
    CHECK(grad_norm(g.params()) == T(13));
    SUBCASE("above the threshold: scale 6.5 / 13 = 0.5") {
        CHECK(clip_grad_norm(g.params(), T(6.5)) == T(13));
        CHECK(g.a.grad[0] == T(1.5));
        CHECK(g.a.grad[1] == T(-2));
        CHECK(g.b.grad[0] == T(6));
        CHECK(grad_norm(g.params()) == doctest::Approx(6.5));
    }
    SUBCASE("below the threshold: unchanged") {
        CHECK(clip_grad_norm(g.params(), T(20)) == T(13));
        CHECK(g.a.grad[1] == T(-4));
        CHECK(g.b.grad[0] == T(12));
    }
    SUBCASE("frozen parameters are neither counted nor clipped") {
        g.b.requires_grad = false;
        CHECK(clip_grad_norm(g.params(), T(2.5)) == T(5));
        CHECK(g.a.grad[0] == T(1.5));
        CHECK(g.b.grad[0] == T(12));
    }
}

TEST_CASE_TEMPLATE("clip_grad_value clamps elementwise and returns the norm before clipping", T, float, double) {
    Grads<T> g;
    CHECK(clip_grad_value(g.params(), T(3.5)) == T(13));
    CHECK(g.a.grad[0] == T(3));
    CHECK(g.a.grad[1] == T(-3.5));
    CHECK(g.b.grad[0] == T(3.5));
    CHECK(g.b.grad[1] == T(0));
}

TEST_CASE("clipping: long gradients (vector paths and tails), no allocation") {
    Parameter<float> p("p", Tensor<float>(Shape{1003}));
    for (std::size_t i = 0; i < p.grad.size(); ++i) p.grad[i] = (i % 2 ? 1.0f : -1.0f) * static_cast<float>(i % 7);
    double want = 0;
    for (std::size_t i = 0; i < p.grad.size(); ++i) want += static_cast<double>(p.grad[i]) * p.grad[i];
    want = std::sqrt(want);
    std::vector<Parameter<float>*> ps{&p};
    tapir_test::AllocationScope scope;
    const float n = clip_grad_value(ps, 2.5f);
    CHECK(scope.count() == 0);
    CHECK(n == doctest::Approx(want).epsilon(1e-6));
    for (std::size_t i = 0; i < p.grad.size(); ++i) {
        const float e = std::fmin(2.5f, std::fmax(-2.5f, (i % 2 ? 1.0f : -1.0f) * static_cast<float>(i % 7)));
        if (p.grad[i] != e) FAIL("element " << i << ": " << p.grad[i] << " != " << e);
    }
}

TEST_CASE("clipping: overflow-safe norm, non-finite gradients named") {
    SUBCASE("float gradients whose squares overflow float") {
        Parameter<float> p("big", Tensor<float>(Shape{2}));
        p.grad[0] = 3e30f;
        p.grad[1] = 4e30f;
        std::vector<Parameter<float>*> ps{&p};
        CHECK(clip_grad_norm(ps, 1.0f) == doctest::Approx(5e30).epsilon(1e-6));
        CHECK(p.grad[0] == doctest::Approx(0.6).epsilon(1e-6));
        CHECK(p.grad[1] == doctest::Approx(0.8).epsilon(1e-6));
    }
    SUBCASE("NaN: error by default, or untouched gradients and a NaN norm") {
        Grads<double> g;
        g.b.grad[1] = std::numeric_limits<double>::quiet_NaN();
        CHECK_THROWS_WITH_AS(clip_grad_norm(g.params(), 1.0),
                             "clip_grad_norm: the gradient of parameter 'b' is NaN at element 1; the gradient norm is not finite",
                             value_error);
        CHECK(g.a.grad[0] == 3.0);
        CHECK(std::isnan(clip_grad_value(g.params(), 1.0, false)));
        CHECK(g.a.grad[1] == -4.0);
    }
    SUBCASE("infinite gradient") {
        Grads<double> g;
        g.a.grad[0] = -HUGE_VAL;
        CHECK_THROWS_WITH_AS(clip_grad_value(g.params(), 1.0),
                             "clip_grad_value: the gradient of parameter 'a' is -inf at element 0; the gradient norm is not finite",
                             value_error);
    }
    SUBCASE("bad thresholds") {
        Grads<double> g;
        CHECK_THROWS_WITH_AS(clip_grad_norm(g.params(), 0.0), "clip_grad_norm: max_norm must be in (0, inf), got 0", value_error);
        CHECK_THROWS_WITH_AS(clip_grad_value(g.params(), -1.0), "clip_grad_value: clip_value must be in (0, inf), got -1", value_error);
    }
}

TEST_CASE_TEMPLATE("L1 and L2 regularisation (Keras conventions)", T, float, double) {
    // w = (1, -2) and (0.5, 0).
    Grads<T> g;
    for (auto* p : g.params()) p->zero_grad();
    CHECK(l1_penalty(g.params(), T(0.1)) == doctest::Approx(0.35).epsilon(1e-6));
    CHECK(l2_penalty(g.params(), T(0.1)) == doctest::Approx(0.525).epsilon(1e-6));
    SUBCASE("L1 gradient: lambda sign(w), 0 at 0") {
        add_l1_gradient(g.params(), T(0.1));
        CHECK(g.a.grad[0] == T(0.1));
        CHECK(g.a.grad[1] == T(-0.1));
        CHECK(g.b.grad[0] == T(0.1));
        CHECK(g.b.grad[1] == T(0));
    }
    SUBCASE("L2 gradient: 2 lambda w") {
        add_l2_gradient(g.params(), T(0.1));
        CHECK(g.a.grad[0] == doctest::Approx(0.2).epsilon(1e-6));
        CHECK(g.a.grad[1] == doctest::Approx(-0.4).epsilon(1e-6));
        CHECK(g.b.grad[0] == doctest::Approx(0.1).epsilon(1e-6));
        CHECK(g.b.grad[1] == T(0));
    }
    SUBCASE("as loss terms on the tape (their gradients are the tape's ops')") {
        Tape<T> tape;
        const Var<T> l2 = l2_loss(tape, g.params(), T(0.1));
        CHECK(l2.item() == doctest::Approx(0.525).epsilon(1e-6));
        CHECK(l2.requires_grad());
        const Var<T> l1 = l1_loss(tape, g.params(), T(0.1));
        CHECK(l1.item() == doctest::Approx(0.35).epsilon(1e-6));
        g.b.requires_grad = false;
        CHECK(l1_loss(tape, std::vector<Parameter<T>*>{&g.b}, T(0.1)).item() == doctest::Approx(0.05).epsilon(1e-6));
    }
}

TEST_CASE("regularisation: long vectors, errors") {
    Parameter<double> p("p", Tensor<double>(Shape{37}));
    double l1 = 0, l2 = 0;
    for (std::size_t i = 0; i < 37; ++i) {
        p.value[i] = (static_cast<double>(i) - 18.0) * 0.25;
        l1 += std::fabs(p.value[i]);
        l2 += p.value[i] * p.value[i];
    }
    std::vector<Parameter<double>*> ps{&p};
    CHECK(l1_penalty(ps, 0.5) == doctest::Approx(0.5 * l1).epsilon(1e-14));
    CHECK(l2_penalty(ps, 0.5) == doctest::Approx(0.5 * l2).epsilon(1e-14));
    add_l1_gradient(ps, 0.5);
    CHECK(p.grad[0] == -0.5);
    CHECK(p.grad[18] == 0.0);
    CHECK(p.grad[36] == 0.5);
    CHECK_THROWS_WITH_AS(l2_penalty(ps, -1.0), "l2_penalty: lambda must be in [0, inf), got -1", value_error);
    Parameter<double> bad("bad", Tensor<double>(Shape{3}));
    bad.grad = Tensor<double>(Shape{2});
    std::vector<Parameter<double>*> pb{&bad};
    CHECK_THROWS_WITH_AS(add_l2_gradient(pb, 0.1), "add_l2_gradient: parameter 'bad' has a gradient of shape (2,) but a value of shape (3,)",
                         shape_error);
}
