// EdgeConv and ParticleNet-Lite: gradients (input and parameters, first and second order), the
// EdgeConv block equal to a direct PyTorch float64 version on the concatenated edge features,
// permutation equivariance / invariance, padding invariance, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/nn/graph.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/random.hpp>

#include "support/set_fixture.hpp"
#include "support/alloc_counter.hpp"
#include "support/gradcheck.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir::nn;
using namespace tapir_test;
using set_fixture::Bound;
using set_fixture::mask_of;
using set_fixture::pad_particles;
using set_fixture::permute;

TEST_CASE("EdgeConv: gradients of first and second order in input and parameters, given and learned coordinates") {
    Rng rng(1);
    const Td x = rnd_away(Shape{2, 5, 3}, 2), pts = rnd(Shape{2, 5, 2}, 3), m = mask_of(5, {5, 3});
    EdgeConv<double> ec(3, {4, 3}, 2, rng);
    std::uint64_t seed = 30;  // nonzero biases: a dead ReLU row would put the next layer exactly on its kink
    for (auto* p : ec.parameters()) p->value = rnd_away(p->value.shape(), seed++);
    Bound<EdgeConv<double>> given(ec, [&](EdgeConv<double>& e, const V& v) { return e.forward(v.tape().constant(pts), v, v.tape().constant(m)); });
    set_fixture::check_module(given, x);
    set_fixture::check_module(ec, x);  // dynamic graph in x's own space (its selection is locally constant)
}

TEST_CASE("an EdgeConv block equals the direct PyTorch computation on (x_i, x_j - x_i) (float64)") {
    Rng rng(4);
    const std::size_t k = 3;
    EdgeConv<double> ec(3, {5, 4}, k, rng);
    const Td x = rnd(Shape{2, 7, 3}, 5), pts = rnd(Shape{2, 7, 2}, 6), m = mask_of(7, {7, 3});
    Tape<double> t;
    const Td y = ec.forward(t.constant(pts), t.constant(x), t.constant(m)).value();
    CHECK(y.shape() == Shape{2, 7, 4});
    for (std::size_t i = 3; i < 7; ++i) CHECK(y(1, i, 0) == 0.0);  // padded particles output 0
    const auto r = torch_eval({{"x", x},
                               {"pts", pts},
                               {"m", m},
                               {"w0", ec.edge_in.weight.value},
                               {"b0", ec.edge_in.bias.value},
                               {"w1", static_cast<Dense<double>&>(ec.edge[0]).weight.value},
                               {"b1", static_cast<Dense<double>&>(ec.edge[0]).bias.value},
                               {"ws", ec.shortcut.weight.value},
                               {"bs", ec.shortcut.bias.value}},
                              "B, N, F = x.shape\n"
                              "d = torch.cdist(pts, pts) ** 2\n"
                              "bad = (m.unsqueeze(1) == 0) | torch.eye(N, dtype=torch.bool).unsqueeze(0)\n"
                              "v, idx = torch.topk(d.masked_fill(bad, float('inf')), 3, dim=-1, largest=False)\n"
                              "ok = (~torch.isinf(v)).double()\n"
                              "xj = torch.stack([x[b][idx[b]] for b in range(B)])\n"  // (B, N, k, F)
                              "xi = x.unsqueeze(2).expand(-1, -1, 3, -1)\n"
                              "e = torch.cat([xi, xj - xi], -1)\n"
                              "h = torch.relu(torch.relu(e @ w0 + b0) @ w1 + b1)\n"
                              "cnt = ok.sum(-1, keepdim=True)\n"
                              "agg = (h * ok.unsqueeze(-1)).sum(2) / torch.where(cnt > 0, cnt, torch.ones_like(cnt))\n"
                              "out['y'] = torch.relu(agg + x @ ws + bs) * m.unsqueeze(-1)\n");
    if (!r.ran) return;
    CHECK(max_abs_diff(r["y"], y) < 1e-10);
}

TEST_CASE("EdgeConv is permutation equivariant and ParticleNet-Lite permutation invariant; masked padding changes nothing") {
    Rng rng(7);
    EdgeConv<double> ec(4, {8, 6}, 3, rng);
    ParticleNetLite<double> net(2, 4, 2, rng, 3);
    const Td x = rnd(Shape{2, 8, 4}, 8), pts = rnd(Shape{2, 8, 2}, 9), m = mask_of(8, {8, 5});
    const std::vector<std::size_t> perm = {5, 2, 7, 0, 3, 1, 6, 4};
    Tape<double> t;
    const auto edge = [&](const Td& xv, const Td& mv) {
        t.clear();
        return ec.forward(t.constant(xv), t.constant(mv)).value();
    };
    const auto lite = [&](const Td& pv, const Td& xv, const Td& mv) {
        t.clear();
        return net.forward(t.constant(pv), t.constant(xv), t.constant(mv)).value();
    };
    const Td ye = edge(x, m), yl = lite(pts, x, m);
    CHECK(yl.shape() == Shape{2, 2});
    CHECK(max_abs_diff(edge(permute(x, perm), permute(m, perm)), permute(ye, perm)) < 1e-12);
    CHECK(max_abs_diff(lite(permute(pts, perm), permute(x, perm), permute(m, perm)), yl) < 1e-12);
    const Td ype = edge(pad_particles(x, 3, -4.0), pad_particles(m, 3, 0.0));
    for (std::size_t b = 0; b < 2; ++b)
        for (std::size_t i = 0; i < 8; ++i)
            for (std::size_t f = 0; f < 6; ++f) CHECK(ype(b, i, f) == doctest::Approx(ye(b, i, f)).epsilon(1e-12));
    CHECK(max_abs_diff(lite(pad_particles(pts, 3, 0.1), pad_particles(x, 3, 0.2), pad_particles(m, 3, 0.0)), yl) < 1e-12);
    // A real particle moved does change the output.
    Td x2 = x;
    x2(1, 2, 0) += 0.5;
    CHECK(max_abs_diff(lite(pts, x2, m), yl) > 1e-6);
}

TEST_CASE("a ParticleNet-Lite training step makes zero heap allocations in steady state") {
    const std::size_t B = 8, N = 16;
    Rng rng(11);
    Tensor<float> pts(Shape{B, N, 2}), x(Shape{B, N, 4}), m(Shape{B, N}), y(Shape{B, 1});
    for (auto& v : pts) v = static_cast<float>(rng.uniform(-1.0, 1.0));
    for (auto& v : x) v = static_cast<float>(rng.uniform(-1.0, 1.0));
    for (std::size_t b = 0; b < B; ++b) {
        for (std::size_t i = 0; i < N; ++i) m(b, i) = i < 4 + b ? 1.0f : 0.0f;
        y(b, 0) = static_cast<float>(b % 2);
    }
    ParticleNetLite<float> net(2, 4, 1, rng);
    optim::Adam<float> opt(net.parameters(), 1e-3f);
    Tape<float> t;
    float total = 0;
    const auto step = [&] {
        t.clear();
        const Var<float> l = bce_with_logits(net.forward(t.view(pts), t.view(x), t.view(m)), t.view(y));
        backward(l);
        total += l.item();
        opt.step();
        opt.zero_grad();
    };
    step();
    step();
    AllocationScope scope;
    for (int i = 0; i < 5; ++i) step();
    CHECK(scope.count() == 0);
    CHECK(std::isfinite(total));
    CHECK(net.output_shape(Shape{3, 9, 4}) == Shape{3, 1});
}

TEST_CASE("graph layers name both shapes in their errors") {
    Rng rng(12);
    EdgeConv<double> ec(3, {4}, 2, rng);
    Tape<double> t;
    CHECK_THROWS_WITH_AS(ec.forward(t.constant(Td(Shape{2, 6, 2})), t.constant(Td(Shape{2, 5, 3})), t.constant(Td(Shape{2, 5}))),
                         "EdgeConv: points vs features: expects points (B, N, D) and features (B, N, F): (2, 6, 2) vs (2, 5, 3)", shape_error);
    CHECK_THROWS_WITH_AS(ec.forward(t.constant(Td(Shape{2, 5, 3})), t.constant(Td(Shape{5, 2}))),
                         "EdgeConv: set vs mask: expects a mask of shape (B, N): (2, 5, 3) vs (5, 2)", shape_error);
    CHECK_THROWS_WITH_AS(ec.forward(t.constant(Td(Shape{2, 5, 4}))), "EdgeConv: expected a set of shape (B, N, 3), got (2, 5, 4)", shape_error);
}
