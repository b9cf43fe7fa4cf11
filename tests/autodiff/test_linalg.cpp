// bmm and permute: gradients of first and second order, values against PyTorch float64, errors.
#include <doctest/doctest.h>

#include <string>
#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/autodiff/linalg.hpp>

#include "support/gradcheck.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir_test;

TEST_CASE("bmm: rank 3 and rank 4 in every transpose combination, first and second order") {
    const Td a = rnd(Shape{2, 3, 4}, 1), b = rnd(Shape{2, 4, 5}, 2);
    const Td at = rnd(Shape{2, 4, 3}, 3), bt = rnd(Shape{2, 5, 4}, 4);
    check_both([](Tape<double>&, const Vs& x) { return bmm(x[0], x[1]); }, {a, b});
    check_both([](Tape<double>&, const Vs& x) { return bmm(x[0], x[1], true, false); }, {at, b});
    check_both([](Tape<double>&, const Vs& x) { return bmm(x[0], x[1], false, true); }, {a, bt});
    check_both([](Tape<double>&, const Vs& x) { return bmm(x[0], x[1], true, true); }, {at, bt});
    const Td a4 = rnd(Shape{2, 2, 3, 4}, 5), b4 = rnd(Shape{2, 2, 3, 4}, 6);
    check_both([](Tape<double>&, const Vs& x) { return bmm(x[0], x[1], false, true); }, {a4, b4});
    check_both([](Tape<double>&, const Vs& x) { return bmm(x[0], x[1], true, false); }, {a4, b4});
    // The same operand on both sides (attention's q k^T with q = k), where the two gradients add.
    check_both([](Tape<double>&, const Vs& x) { return bmm(x[0], x[0], false, true); }, {a4});
}

TEST_CASE("bmm: hand-computed values of one batch item") {
    Tape<double> t;
    Td a(Shape{2, 2, 2}), b(Shape{2, 2, 1});
    const double av[] = {1, 2, 3, 4, 0, 1, -1, 0}, bv[] = {1, 1, 2, -1};
    for (std::size_t i = 0; i < 8; ++i) a.data()[i] = av[i];
    for (std::size_t i = 0; i < 4; ++i) b.data()[i] = bv[i];
    const Td y = bmm(t.constant(a), t.constant(b)).value();
    CHECK(y.shape() == Shape{2, 2, 1});
    CHECK(y(0, 0, 0) == 3.0);   // 1 + 2
    CHECK(y(0, 1, 0) == 7.0);   // 3 + 4
    CHECK(y(1, 0, 0) == -1.0);  // 0*2 + 1*(-1)
    CHECK(y(1, 1, 0) == -2.0);  // -1*2 + 0
    const Td yt = bmm(t.constant(a), t.constant(a), true, false).value();  // a^T a of item 1: [[1, 0], [0, 1]]
    CHECK(yt(1, 0, 0) == 1.0);
    CHECK(yt(1, 0, 1) == 0.0);
    CHECK(yt(1, 1, 1) == 1.0);
}

TEST_CASE("bmm equals torch.matmul in float64 (rank 3 and 4, transposed operands)") {
    const Td a = rnd(Shape{3, 5, 7}, 11), b = rnd(Shape{3, 7, 4}, 12), bt = rnd(Shape{3, 4, 7}, 13);
    const Td q = rnd(Shape{2, 3, 6, 5}, 14), k = rnd(Shape{2, 3, 6, 5}, 15);
    auto r = torch_eval({{"a", a}, {"b", b}, {"bt", bt}, {"q", q}, {"k", k}},
                        "out['ab'] = torch.bmm(a, b)\n"
                        "out['abt'] = torch.bmm(a, bt.transpose(1, 2))\n"
                        "out['atb'] = torch.bmm(a.transpose(1, 2), a)\n"
                        "out['qk'] = torch.matmul(q, k.transpose(-1, -2))\n"
                        "out['qtk'] = torch.matmul(q.transpose(-1, -2), k)\n");
    if (!r.ran) return;
    Tape<double> t;
    const V va = t.constant(a), vb = t.constant(b), vbt = t.constant(bt), vq = t.constant(q), vk = t.constant(k);
    CHECK(max_abs_diff(bmm(va, vb).value(), r["ab"]) < 1e-10);
    CHECK(max_abs_diff(bmm(va, vbt, false, true).value(), r["abt"]) < 1e-10);
    CHECK(max_abs_diff(bmm(va, va, true, false).value(), r["atb"]) < 1e-10);
    CHECK(max_abs_diff(bmm(vq, vk, false, true).value(), r["qk"]) < 1e-10);
    CHECK(max_abs_diff(bmm(vq, vk, true, false).value(), r["qtk"]) < 1e-10);
}

TEST_CASE("bmm: bad shapes name both operands") {
    {
        Tape<double> t;
        CHECK_THROWS_WITH(bmm(t.constant(Td(Shape{2, 3, 4})), t.constant(Td(Shape{3, 4, 5}))), "bmm: batch axes differ: (2, 3, 4) vs (3, 4, 5)");
    }
    {
        Tape<double> t;
        CHECK_THROWS_WITH(bmm(t.constant(Td(Shape{2, 3, 4})), t.constant(Td(Shape{2, 3, 5}))), "bmm: inner dimensions differ: (2, 3, 4) vs (2, 3, 5)");
    }
    {
        Tape<double> t;
        CHECK_THROWS_WITH(bmm(t.constant(Td(Shape{2, 3, 4})), t.constant(Td(Shape{2, 3, 5})), false, true), "bmm: inner dimensions differ: (2, 3, 4) vs (2, 3, 5)^T");
    }
    {
        Tape<double> t;
        CHECK_THROWS_WITH(bmm(t.constant(Td(Shape{3, 4})), t.constant(Td(Shape{2, 4, 5}))), "bmm: expects two rank-3 or two rank-4 operands: (3, 4) vs (2, 4, 5)");
    }
}

TEST_CASE("permute: values, inverse, gradients, torch equality, bad permutations") {
    const Td x = rnd(Shape{2, 3, 4, 5}, 21);
    Tape<double> t;
    const V vx = t.constant(x);
    const Td p = permute(vx, {0, 2, 1, 3}).value();
    CHECK(p.shape() == Shape{2, 4, 3, 5});
    CHECK(p(1, 3, 2, 4) == x(1, 2, 3, 4));
    const Td q = permute(vx, {3, 1, 0, 2}).value();
    CHECK(q.shape() == Shape{5, 3, 2, 4});
    CHECK(q(4, 2, 1, 3) == x(1, 2, 3, 4));
    CHECK(max_abs_diff(permute(permute(vx, {3, 1, 0, 2}), {2, 1, 3, 0}).value(), x) == 0.0);
    const Td y = rnd(Shape{3, 4, 2}, 22);
    CHECK(permute(t.constant(y), {0, 2, 1}).value()(2, 1, 3) == y(2, 3, 1));
    check_both([](Tape<double>&, const Vs& v) { return permute(v[0], {0, 2, 1, 3}); }, {rnd(Shape{2, 3, 2, 2}, 23)});
    check_both([](Tape<double>&, const Vs& v) { return permute(v[0], {2, 0, 1}) * permute(v[0], {2, 0, 1}); }, {y});
    auto r = torch_eval({{"x", x}}, "out['p'] = x.permute(3, 1, 0, 2)\n");
    if (r.ran) CHECK(max_abs_diff(q, r["p"]) == 0.0);
    {
        Tape<double> t2;
        CHECK_THROWS_WITH(permute(t2.constant(Td(Shape{2, 3, 4})), {0, 1, 1}), "permute: (0, 1, 1) is not a permutation of the axes of shape (2, 3, 4)");
    }
    {
        Tape<double> t2;
        CHECK_THROWS_WITH(permute(t2.constant(Td(Shape{2, 3, 4})), {1, 0}), "permute: (1, 0) is not a permutation of the axes of shape (2, 3, 4)");
    }
}

TEST_CASE("masked_softmax: values against torch, masked entries exactly 0, first and second order") {
    const Td x = rnd(Shape{2, 3, 4, 5}, 31);
    Td mask(Shape{2, 5});
    for (std::size_t j = 0; j < 5; ++j) mask(0, j) = 1.0, mask(1, j) = j < 3 ? 1.0 : 0.0;
    auto r = torch_eval({{"x", x}, {"mask", mask}},
                        "out['p'] = torch.softmax(x, -1)\n"
                        "out['pm'] = torch.softmax(x.masked_fill((mask == 0)[:, None, None, :], float('-inf')), -1)\n");
    Tape<double> t;
    const V vx = t.constant(x), vm = t.constant(mask);
    const Td p = masked_softmax(vx).value(), pm = masked_softmax(vx, vm).value();
    CHECK(max_abs_diff(p, softmax(vx, -1).value()) < 1e-15);
    for (std::size_t h = 0; h < 3; ++h)
        for (std::size_t i = 0; i < 4; ++i) {
            CHECK(pm(1, h, i, 3) == 0.0);
            CHECK(pm(1, h, i, 4) == 0.0);
            CHECK(pm(1, h, i, 0) + pm(1, h, i, 1) + pm(1, h, i, 2) == doctest::Approx(1.0).epsilon(1e-15));
            CHECK(pm(0, h, i, 4) == p(0, h, i, 4));
        }
    if (r.ran) {
        CHECK(max_abs_diff(p, r["p"]) < 1e-10);
        CHECK(max_abs_diff(pm, r["pm"]) < 1e-10);
    }
    // A row with every entry masked is all zero.
    Td none(Shape{2, 5});
    for (std::size_t j = 0; j < 5; ++j) none(0, j) = 1.0;
    const Td pz = masked_softmax(vx, t.constant(none)).value();
    CHECK(pz(1, 2, 3, 0) == 0.0);
    CHECK(pz(1, 2, 3, 4) == 0.0);

    const Td xs = rnd(Shape{2, 2, 3, 4}, 32);
    Td ms(Shape{2, 4});
    for (std::size_t j = 0; j < 4; ++j) ms(0, j) = 1.0, ms(1, j) = j == 2 ? 0.0 : 1.0;
    check_both([](Tape<double>&, const Vs& v) { return masked_softmax(v[0]); }, {xs});
    check_both([&ms](Tape<double>& tp, const Vs& v) { return masked_softmax(v[0], tp.constant(ms)); }, {xs});
    // Through a product, so that the second-order terms of softmax_grad in both its inputs are used.
    check_both([&ms](Tape<double>& tp, const Vs& v) { return bmm(masked_softmax(v[0], tp.constant(ms)), v[1]); },
               {rnd(Shape{2, 3, 4}, 33), rnd(Shape{2, 4, 3}, 34)});
    check_both([](Tape<double>&, const Vs& v) { return softmax_grad(v[0], v[1]); }, {rnd(Shape{3, 4}, 35), rnd(Shape{3, 4}, 36, 0.1, 1.0)});

    {
        Tape<double> t2;
        CHECK_THROWS_WITH(masked_softmax(t2.constant(Td(Shape{2, 3, 4})), t2.constant(Td(Shape{2, 3}))), "masked_softmax: expected a mask of shape (first axis, last axis): (2, 3, 4) vs (2, 3)");
    }
}
