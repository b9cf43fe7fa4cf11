// Set and graph ops: gather/scatter, weighted and masked set reductions, segment reductions,
// k nearest neighbours. gradcheck and gradgradcheck for each, PyTorch float64 values where
// PyTorch has the op, and errors naming both shapes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/autodiff/sets.hpp>

#include "support/gradcheck.hpp"
#include "support/set_fixture.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir_test;

namespace {
using set_fixture::mask_of;
Td as_tensor(const std::vector<std::int64_t>& v, const Shape& s) {
    Td t(s);
    for (std::size_t i = 0; i < v.size(); ++i) t[i] = static_cast<double>(v[i]);
    return t;
}
} // namespace

TEST_CASE("gather, scatter_add, index_select, index_add: gradients of first and second order") {
    const Td a = rnd(Shape{3, 4}, 1), src = rnd(Shape{2, 4}, 2), r3 = rnd(Shape{2, 3, 2}, 3);
    const std::vector<std::int64_t> gi = {2, 0, 1, 1, 0, 0, 2, 1};  // index (2, 4) on axis 0
    check_both([&](Tape<double>&, const Vs& x) { return square(gather(x[0], 0, Shape{2, 4}, gi)); }, {a});
    check_both([&](Tape<double>&, const Vs& x) { return square(gather(x[0], 1, Shape{3, 2}, {3, 0, 1, 1, 2, 3})); }, {a});
    check_both([&](Tape<double>&, const Vs& x) { return square(scatter_add(x[0], 0, gi, Shape{3, 4})); }, {src});
    check_both([&](Tape<double>&, const Vs& x) { return square(index_select(x[0], 1, {2, 0, 2})); }, {r3});
    check_both([&](Tape<double>&, const Vs& x) { return square(index_add(x[0], 1, {1, 1, 4}, 5)); }, {r3});
}

TEST_CASE("gather, scatter_add, index_add equal PyTorch's (float64)") {
    const Td a = rnd(Shape{3, 4, 2}, 4), src = rnd(Shape{2, 4, 2}, 5);
    std::vector<std::int64_t> gi(16), si(16);
    for (std::size_t i = 0; i < 16; ++i) {
        gi[i] = static_cast<std::int64_t>((i * 7 + 3) % 3);
        si[i] = static_cast<std::int64_t>((i * 5 + 1) % 3);
    }
    Tape<double> t;
    const Td g = gather(t.constant(a), 0, Shape{2, 4, 2}, gi).value();
    const Td s = scatter_add(t.constant(src), 0, si, Shape{3, 4, 2}).value();
    const Td ia = index_add(t.constant(src), 1, {3, 0, 3, 1}, 5).value();
    const Td is = index_select(t.constant(a), 1, {3, 3, 0}).value();
    CHECK(g(1, 2, 1) == a(static_cast<std::size_t>(gi[13]), 2, 1));
    const auto r = torch_eval({{"a", a}, {"src", src}, {"gi", as_tensor(gi, Shape{2, 4, 2})}, {"si", as_tensor(si, Shape{2, 4, 2})}},
                              "out['g'] = torch.gather(a, 0, gi.long())\n"
                              "out['s'] = torch.zeros(3, 4, 2).scatter_add(0, si.long(), src)\n"
                              "out['ia'] = torch.zeros(2, 5, 2).index_add(1, torch.tensor([3, 0, 3, 1]), src)\n"
                              "out['is'] = torch.index_select(a, 1, torch.tensor([3, 3, 0]))\n");
    if (!r.ran) return;
    CHECK(max_abs_diff(r["g"], g) < 1e-10);
    CHECK(max_abs_diff(r["s"], s) < 1e-10);
    CHECK(max_abs_diff(r["ia"], ia) < 1e-10);
    CHECK(max_abs_diff(r["is"], is) < 1e-10);
}

TEST_CASE("set_sum, set_expand, set_dot: the trilinear family, differentiable in every argument") {
    const Td x = rnd(Shape{2, 3, 4}, 6), w = rnd(Shape{2, 3}, 7), g = rnd(Shape{2, 4}, 8);
    check_both([](Tape<double>&, const Vs& v) { return set_sum(v[0], v[1]); }, {x, w});
    check_both([](Tape<double>&, const Vs& v) { return square(set_sum(v[0], v[1])); }, {x, w});
    check_both([](Tape<double>&, const Vs& v) { return square(set_expand(v[0], v[1])); }, {g, w});
    check_both([](Tape<double>&, const Vs& v) { return square(set_dot(v[0], v[1])); }, {x, g});
    Tape<double> t;
    const Td s = set_sum(t.constant(x), t.constant(w)).value();
    CHECK(s(1, 2) == doctest::Approx(w(1, 0) * x(1, 0, 2) + w(1, 1) * x(1, 1, 2) + w(1, 2) * x(1, 2, 2)).epsilon(1e-14));
}

TEST_CASE("masked sum, mean and max: gradients, an all-masked row gives 0 and a finite gradient") {
    const Td x = rnd_away(Shape{3, 4, 2}, 9);
    const Td m = mask_of(4, {4, 2, 0});
    for (int kind = 0; kind < 3; ++kind) {
        INFO("reduction " << kind);
        check_both([&](Tape<double>& t, const Vs& v) {
            const V mv = t.constant(m);
            const V y = kind == 0 ? masked_sum(v[0], mv) : kind == 1 ? masked_mean(v[0], mv) : masked_max(v[0], mv);
            return square(y);
        }, {x});
        Tape<double> t;
        const V xv = t.variable(x);
        const V mv = t.constant(m);
        const V y = kind == 0 ? masked_sum(xv, mv) : kind == 1 ? masked_mean(xv, mv) : masked_max(xv, mv);
        CHECK(y.shape() == Shape{3, 2});
        CHECK(y.value()(2, 0) == 0.0);
        CHECK(y.value()(2, 1) == 0.0);
        backward(sum(square(y) + y));
        const Td gx = xv.grad();
        for (std::size_t i = 0; i < gx.size(); ++i) CHECK(std::isfinite(gx[i]));
        for (std::size_t n = 0; n < 4; ++n) CHECK(gx(2, n, 1) == 0.0);  // the all-masked row
        CHECK(gx(1, 3, 0) == 0.0);                                     // a padded particle
    }
    // Lengths give the same as the equivalent mask.
    Tape<double> t;
    const V xv = t.constant(x);
    const std::vector<std::size_t> len = {4, 2, 0};
    CHECK(max_abs_diff(masked_mean(xv, len).value(), masked_mean(xv, t.constant(m)).value()) == 0.0);
    CHECK(max_abs_diff(masked_max(xv, len).value(), masked_max(xv, t.constant(m)).value()) == 0.0);
    CHECK(max_abs_diff(masked_sum(xv, len).value(), masked_sum(xv, t.constant(m)).value()) == 0.0);
}

TEST_CASE("masked sum, mean and max equal PyTorch's (float64)") {
    const Td x = rnd(Shape{3, 5, 4}, 10);
    const Td m = mask_of(5, {5, 3, 1});
    Tape<double> t;
    const V xv = t.constant(x), mv = t.constant(m);
    const Td s = masked_sum(xv, mv).value(), me = masked_mean(xv, mv).value(), mx = masked_max(xv, mv).value();
    const auto r = torch_eval({{"x", x}, {"m", m}},
                              "mm = m.unsqueeze(-1)\n"
                              "out['s'] = (x * mm).sum(1)\n"
                              "out['me'] = (x * mm).sum(1) / mm.sum(1)\n"
                              "out['mx'] = x.masked_fill(mm == 0, float('-inf')).max(1).values\n");
    if (!r.ran) return;
    CHECK(max_abs_diff(r["s"], s) < 1e-10);
    CHECK(max_abs_diff(r["me"], me) < 1e-10);
    CHECK(max_abs_diff(r["mx"], mx) < 1e-10);
}

TEST_CASE("segment sum, mean and max: values, gradients, an empty segment gives 0") {
    const Td x = rnd_away(Shape{6, 3}, 11);
    const std::vector<std::size_t> off = {0, 2, 2, 6};
    check_both([&](Tape<double>&, const Vs& v) { return square(segment_sum(v[0], off)); }, {x});
    check_both([&](Tape<double>&, const Vs& v) { return square(segment_mean(v[0], off)); }, {x});
    check_both([&](Tape<double>&, const Vs& v) { return square(segment_max(v[0], off)); }, {x});
    Tape<double> t;
    const V xv = t.constant(x);
    const Td s = segment_sum(xv, off).value(), me = segment_mean(xv, off).value(), mx = segment_max(xv, off).value();
    CHECK(s.shape() == Shape{3, 3});
    CHECK(s(0, 1) == x(0, 1) + x(1, 1));
    CHECK(s(1, 2) == 0.0);
    CHECK(me(1, 0) == 0.0);
    CHECK(mx(1, 0) == 0.0);
    CHECK(me(2, 0) == doctest::Approx((x(2, 0) + x(3, 0) + x(4, 0) + x(5, 0)) / 4).epsilon(1e-14));
    CHECK(mx(2, 2) == std::fmax(std::fmax(x(2, 2), x(3, 2)), std::fmax(x(4, 2), x(5, 2))));
    CHECK_THROWS_WITH_AS(segment_sum(xv, {0, 2, 5}), "segment_sum: offsets must run from 0 to the 6 rows of shape (6, 3) (3 offsets given)",
                         value_error);
    CHECK_THROWS_WITH_AS(segment_max(xv, {0, 4, 2, 6}), "segment_max: offsets decrease at position 2 (4 then 2)", value_error);
}

TEST_CASE("set_dense applies one fused dense node to every particle") {
    const Td x = rnd(Shape{2, 3, 4}, 12), w = rnd(Shape{4, 5}, 13), b = rnd(Shape{5}, 14);
    check_both([](Tape<double>&, const Vs& v) { return set_dense(v[0], v[1], v[2], Activation::tanh); }, {x, w, b});
    Tape<double> t;
    const Td y = set_dense(t.constant(x), t.constant(w), t.constant(b), Activation::tanh).value();
    CHECK(y.shape() == Shape{2, 3, 5});
    double z = b[4];
    for (std::size_t f = 0; f < 4; ++f) z += x(1, 2, f) * w(f, 4);
    CHECK(y(1, 2, 4) == doctest::Approx(std::tanh(z)).epsilon(1e-13));
}

TEST_CASE("knn: nearest real points, never itself, never a padded point; equal to PyTorch's") {
    const std::size_t B = 3, N = 9, D = 3, k = 4;
    const Td c = rnd(Shape{B, N, D}, 15);
    const Td m = mask_of(N, {9, 6, 3});
    Tape<double> t;
    const V cv = t.constant(c), mv = t.constant(m);
    const KnnIndex nb = knn(cv, mv, k);
    CHECK(nb.k == k);
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t i = 0; i < N; ++i)
            for (std::size_t j = 0; j < k; ++j) {
                const std::int64_t n = nb.local(b, i, j);
                if (m(b, i) == 0.0) {
                    CHECK(n == -1);
                    continue;
                }
                CHECK(n != static_cast<std::int64_t>(i));
                if (n >= 0) CHECK(m(b, static_cast<std::size_t>(n)) == 1.0);
            }
    CHECK(nb.local(2, 0, 1) >= 0);   // two other real points in event 2 ...
    CHECK(nb.local(2, 0, 2) == -1);  // ... and no third
    Td idx(Shape{B, N, k});
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t i = 0; i < N; ++i)
            for (std::size_t j = 0; j < k; ++j) idx(b, i, j) = static_cast<double>(nb.local(b, i, j));
    const auto r = torch_eval({{"c", c}, {"m", m}},
                              "d = torch.cdist(c, c) ** 2\n"
                              "n = c.shape[1]\n"
                              "bad = (m.unsqueeze(1) == 0) | torch.eye(n, dtype=torch.bool).unsqueeze(0)\n"
                              "d = d.masked_fill(bad, float('inf'))\n"
                              "v, i = torch.topk(d, 4, dim=-1, largest=False, sorted=True)\n"
                              "i = torch.where(torch.isinf(v) | (m.unsqueeze(-1) == 0), torch.full_like(i, -1), i)\n"
                              "out['idx'] = i.double()\n");
    if (!r.ran) return;
    CHECK(max_abs_diff(r["idx"], idx) == 0.0);
}

TEST_CASE("set ops name both shapes in their errors") {
    Tape<double> t;
    const V x = t.constant(Td(Shape{2, 3, 4})), m = t.constant(Td(Shape{2, 5})), g = t.constant(Td(Shape{2, 3}));
    CHECK_THROWS_WITH_AS(masked_sum(x, m), "masked_sum: expects a set of shape (B, N, F) and a mask or weight of shape (B, N): (2, 3, 4) vs (2, 5)",
                         shape_error);
    CHECK_THROWS_WITH_AS(masked_max(x, m), "masked_max: expects a set of shape (B, N, F) and a mask or weight of shape (B, N): (2, 3, 4) vs (2, 5)",
                         shape_error);
    CHECK_THROWS_WITH_AS(set_dot(x, g), "set_dot: expects a set of shape (B, N, F) and an event value of shape (B, F): (2, 3, 4) vs (2, 3)",
                         shape_error);
    CHECK_THROWS_WITH_AS(knn(x, m, 2), "knn: coordinates vs mask: expects coordinates (B, N, D) and a mask (B, N): (2, 3, 4) vs (2, 5)", shape_error);
    CHECK_THROWS_WITH_AS(gather(x, 1, Shape{2, 3}, {0, 0, 0, 0, 0, 0}),
                         "gather: value vs index: index rank differs from the value's rank: (2, 3, 4) vs (2, 3)", shape_error);
    CHECK_THROWS_WITH_AS(gather(x, 1, Shape{3, 1, 1}, {0, 0, 0}),
                         "gather: value vs index: index is larger than the value off the axis: (2, 3, 4) vs (3, 1, 1)", shape_error);
    CHECK_THROWS_WITH_AS(gather(x, 1, Shape{1, 1, 1}, {3}), "gather: value vs index: index 3 at position 0 is out of range for axis 1 of shape (2, 3, 4)",
                         value_error);
    CHECK_THROWS_WITH_AS(scatter_add(g, 0, {0, 1, 0, 1, 0, 1}, Shape{2, 2}),
                         "scatter_add: output vs source: index is larger than the value off the axis: (2, 2) vs (2, 3)", shape_error);
    CHECK_THROWS_WITH_AS(set_dense(g, t.constant(Td(Shape{3, 2})), nullptr), "set_dense: set vs weight: expects a set of shape (B, N, F): (2, 3) vs (3, 2)",
                         shape_error);
}
