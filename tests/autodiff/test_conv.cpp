// Convolution, transposed convolution, pooling and upsampling: gradcheck and gradgradcheck in
// double, forward values against PyTorch (float64, within 1e-10), and the shape errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/conv.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/random.hpp>

#include "support/gradcheck.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir_test;

namespace {
/// A direct (loop) 2-D convolution, the definition the im2col kernels must reproduce.
Td direct_conv2d(const Td& x, const Td& w, const Td* b, Size2 s, Pad2d p, Size2 d, std::size_t groups) {
    const std::size_t n = x.shape()[0], c = x.shape()[1], h = x.shape()[2], wd = x.shape()[3];
    const std::size_t o = w.shape()[0], cg = w.shape()[1], kh = w.shape()[2], kw = w.shape()[3], og = o / groups;
    const std::size_t oh = (h + p.top + p.bottom - d.h * (kh - 1) - 1) / s.h + 1;
    const std::size_t ow = (wd + p.left + p.right - d.w * (kw - 1) - 1) / s.w + 1;
    Td y(Shape{n, o, oh, ow});
    for (std::size_t b0 = 0; b0 < n; ++b0)
        for (std::size_t oc = 0; oc < o; ++oc)
            for (std::size_t i = 0; i < oh; ++i)
                for (std::size_t j = 0; j < ow; ++j) {
                    double acc = b ? (*b)[oc] : 0.0;
                    for (std::size_t ci = 0; ci < cg; ++ci)
                        for (std::size_t u = 0; u < kh; ++u)
                            for (std::size_t v = 0; v < kw; ++v) {
                                const long yy = static_cast<long>(i * s.h + u * d.h) - static_cast<long>(p.top);
                                const long xx = static_cast<long>(j * s.w + v * d.w) - static_cast<long>(p.left);
                                if (yy < 0 || xx < 0 || yy >= static_cast<long>(h) || xx >= static_cast<long>(wd)) continue;
                                acc += x(b0, (oc / og) * cg + ci, static_cast<std::size_t>(yy), static_cast<std::size_t>(xx)) * w(oc, ci, u, v);
                            }
                    y(b0, oc, i, j) = acc;
                }
    (void)c;
    return y;
}
} // namespace

TEST_CASE("conv2d equals the direct loop for stride, asymmetric padding, dilation and groups") {
    const Td x = rnd(Shape{2, 4, 7, 6}, 1), w = rnd(Shape{6, 2, 3, 2}, 2), b = rnd(Shape{6}, 3);
    struct Case {
        Size2 s;
        Pad2d p;
        Size2 d;
        std::size_t g;
    };
    // Stride 1 runs as an implicit GEMM over the padded input (padding wider than the kernel too).
    const Case cases[] = {{1, 0, 1, 1},
                          {2, 1, 1, 2},
                          {Size2(2, 1), Pad2d(1, 2, 0, 1), Size2(1, 2), 2},
                          {Size2(1, 3), Pad2d(0, 1), 2, 1},
                          {1, Pad2d(3, 0, 1, 3), 1, 1},
                          {1, Pad2d(0, 2, 2, 0), Size2(2, 1), 2}};
    for (const Case& k : cases) {
        const Td wk = k.g == 1 ? rnd(Shape{6, 4, 3, 2}, 4) : w;
        Tape<double> t;
        const V y = conv2d(t.constant(x), t.constant(wk), t.constant(b), k.s, k.p, k.d, k.g);
        CHECK(max_abs_diff(y.value(), direct_conv2d(x, wk, &b, k.s, k.p, k.d, k.g)) < 1e-12);
    }
}

TEST_CASE("conv2d: first and second order gradients for stride, padding, dilation, groups, bias") {
    const Td x = rnd(Shape{2, 4, 5, 5}, 11), w2 = rnd(Shape{4, 2, 3, 2}, 12), w1 = rnd(Shape{3, 4, 2, 2}, 13), b4 = rnd(Shape{4}, 14),
             b3 = rnd(Shape{3}, 15);
    check_both([](Tape<double>&, const Vs& v) { return conv2d(v[0], v[1], v[2]); }, {x, w1, b3});
    check_both([](Tape<double>&, const Vs& v) { return conv2d(v[0], v[1], v[2], 2, 1); }, {x, w1, b3});
    check_both([](Tape<double>&, const Vs& v) { return conv2d(v[0], v[1], nullptr, Size2(2, 1), Pad2d(1, 2, 0, 1), Size2(1, 2), 2); }, {x, w2});
    check_both([](Tape<double>&, const Vs& v) { return conv2d(v[0], v[1], v[2], 1, 2, 2, 2); }, {x, w2, b4});
    // Through a nonlinearity, so the second order mixes the three convolution kernels with tanh's.
    check_both([](Tape<double>&, const Vs& v) { return tanh(conv2d(tanh(v[0]), v[1], v[2], 1, 1)); }, {x, w1, b3});
    // Stride 1 with padding beyond the kernel's reach: the input gradient is then no stride-1
    // convolution of the padded gradient and takes the unfolding path; the forward stays implicit.
    check_both([](Tape<double>&, const Vs& v) { return conv2d(v[0], v[1], v[2], 1, Pad2d(2, 0, 1, 3)); }, {x, w1, b3});
    // 1x1, stride 1: the pointwise path (no unfolding).
    check_both([](Tape<double>&, const Vs& v) { return conv2d(v[0], v[1], v[2]); }, {x, rnd(Shape{3, 4, 1, 1}, 16), b3});
}

TEST_CASE("conv1d and conv_transpose2d: gradients of first and second order") {
    const Td x1 = rnd(Shape{2, 4, 9}, 21), w1 = rnd(Shape{6, 2, 3}, 22), b1 = rnd(Shape{6}, 23);
    check_both([](Tape<double>&, const Vs& v) { return conv1d(v[0], v[1], v[2], 2, 1, 2, 2); }, {x1, w1, b1});
    check_both([](Tape<double>&, const Vs& v) { return conv1d(v[0], v[1], nullptr); }, {x1, rnd(Shape{3, 4, 4}, 24)});
    const Td x = rnd(Shape{2, 4, 3, 3}, 25), wt = rnd(Shape{4, 3, 3, 2}, 26), bt = rnd(Shape{3}, 27), wg = rnd(Shape{4, 1, 2, 3}, 28);
    check_both([](Tape<double>&, const Vs& v) { return conv_transpose2d(v[0], v[1], v[2]); }, {x, wt, bt});
    check_both([](Tape<double>&, const Vs& v) { return conv_transpose2d(v[0], v[1], v[2], 2, 1, 1); }, {x, wt, bt});
    check_both([](Tape<double>&, const Vs& v) { return conv_transpose2d(v[0], v[1], nullptr, Size2(2, 3), Size2(0, 1), Size2(1, 2), 2, Size2(2, 1)); },
               {x, wg});
}

TEST_CASE("pooling, upsampling, flatten: gradients of first and second order") {
    const Td x = rnd_away(Shape{2, 3, 6, 5}, 31), x1 = rnd_away(Shape{2, 3, 7}, 32);
    check_both([](Tape<double>&, const Vs& v) { return max_pool2d(v[0], 2); }, {x});
    check_both([](Tape<double>&, const Vs& v) { return max_pool2d(v[0], Size2(3, 2), Size2(2, 1), Pad2d(1, 1)); }, {x});
    check_both([](Tape<double>&, const Vs& v) { return max_pool2d(v[0] * v[0], 2); }, {x});  // second order through the argmax
    check_both([](Tape<double>&, const Vs& v) { return avg_pool2d(v[0], 2); }, {x});
    check_both([](Tape<double>&, const Vs& v) { return avg_pool2d(v[0] * v[0], Size2(3, 2), Size2(2, 1), Pad2d(1, 1)); }, {x});
    check_both([](Tape<double>&, const Vs& v) { return max_pool1d(v[0], 3, 2, 1); }, {x1});
    check_both([](Tape<double>&, const Vs& v) { return avg_pool1d(v[0] * v[0], 3, 2, 1); }, {x1});
    check_both([](Tape<double>&, const Vs& v) { return global_avg_pool(v[0] * v[0]); }, {x});
    check_both([](Tape<double>&, const Vs& v) { return global_max_pool(v[0] * v[0]); }, {x});
    check_both([](Tape<double>&, const Vs& v) { return global_max_pool(v[0]); }, {x1});
    check_both([](Tape<double>&, const Vs& v) { return upsample_nearest2d(v[0] * v[0], Size2(2, 3)); }, {x});
    check_both([](Tape<double>&, const Vs& v) { return flatten(v[0] * v[0]); }, {x});
}

TEST_CASE("max pooling sends the gradient to each window's maximum, padding never wins") {
    Tape<double> t;
    const Td x(Shape{1, 1, 2, 3}, {1, 5, 2, 4, 3, 6});
    const V xv = t.variable(x);
    const V y = max_pool2d(xv, 2, 1, 0);
    REQUIRE(y.shape() == Shape{1, 1, 1, 2});
    CHECK(y[0] == 5);
    CHECK(y[1] == 6);
    backward(sum(y));
    const Td g = xv.grad();
    const double want[] = {0, 1, 0, 0, 0, 1};
    for (std::size_t i = 0; i < 6; ++i) CHECK(g[i] == want[i]);
    const Td neg(Shape{1, 1, 1, 2}, {-3, -4});
    const V p = max_pool2d(t.constant(neg), Size2(1, 2), Size2(1, 1), Pad2d(0, 0, 1, 1));
    REQUIRE(p.shape() == Shape{1, 1, 1, 3});
    CHECK(p[0] == -3);  // the zero padding does not win over negative values
    CHECK(p[2] == -4);
}

TEST_CASE("relu convolutions: backward() applies the relu's derivative in the next pooling or convolution rule, with the bits of two passes") {
    // backward() fuses the relu derivative into the pooling's rule and into the next
    // convolution's input gradient; grad() runs them as separate passes. Inputs of few distinct
    // values give ties, zero outputs and windows whose maximum is 0 (the relu's kink), where a
    // wrong fusion would differ.
    for (const bool one_d : {false, true}) {
        CAPTURE(one_d);
        Rng rng(3);
        Tape<float> t;
        const Shape xs = one_d ? Shape{3, 2, 1, 12} : Shape{3, 2, 8, 10};
        Tensor<float> x(xs), w(one_d ? Shape{4, 2, 1, 3} : Shape{4, 2, 3, 3}), b(Shape{4}), w2(one_d ? Shape{4, 4, 1, 3} : Shape{4, 4, 3, 3}),
            b2(Shape{4}), gy(one_d ? Shape{3, 4, 1, 6} : Shape{3, 4, 4, 5});
        for (auto& v : x) v = static_cast<float>(std::floor(rng.uniform(-2, 3)));
        for (auto* p : {&w, &w2})
            for (auto& v : *p) v = static_cast<float>(std::floor(rng.uniform(-2, 2))) * 0.5f;
        for (auto* p : {&b, &b2, &gy})
            for (auto& v : *p) v = static_cast<float>(rng.uniform(-1, 1));
        const Var<float> xv = t.variable(x), wv = t.variable(w), bv = t.variable(b), w2v = t.variable(w2), b2v = t.variable(b2);
        const Pad2d pad = one_d ? Pad2d(0, 0, 1, 1) : Pad2d(1);
        const Var<float> z1 = conv2d(xv, wv, bv, 1, pad, 1, 1, Activation::relu);
        const Var<float> z = conv2d(z1, w2v, b2v, 1, pad, 1, 1, Activation::relu);
        const Var<float> p = one_d ? max_pool2d(z, Size2(1, 2)) : max_pool2d(z, 2);
        const Var<float> loss = sum(p * t.constant(gy));
        const std::vector<Var<float>> g2 = grad(loss, {xv, wv, bv, w2v, b2v});  // separate passes
        backward(loss);
        const Var<float>* vars[] = {&xv, &wv, &bv, &w2v, &b2v};
        std::size_t zeros = 0;
        for (std::size_t k = 0; k < 5; ++k) {
            const Tensor<float> a = vars[k]->grad(), r = g2[k].value();
            REQUIRE(a.shape() == r.shape());
            CHECK(std::memcmp(a.data(), r.data(), a.size() * sizeof(float)) == 0);
        }
        for (std::size_t i = 0; i < p.shape().numel(); ++i) zeros += p[i] == 0.0f;
        CHECK(zeros > 0);  // windows at the relu's kink were exercised
    }
}

TEST_CASE("convolution and pooling: errors name both shapes") {
    Tape<double> t;
    const V x = t.constant(Td(Shape{2, 3, 5, 5})), w = t.constant(Td(Shape{4, 2, 3, 3}));
    CHECK_THROWS_WITH_AS(conv2d(x, w, nullptr),
                         "conv2d: input (2, 3, 5, 5) vs weight (4, 2, 3, 3): the input has 3 channels, the weight expects 2 (2 per group x 1 groups)",
                         shape_error);
    CHECK_THROWS_WITH_AS(conv2d(x, t.constant(Td(Shape{4, 3, 7, 3})), nullptr, 1, 0, Size2(1, 2)),
                         "conv2d: input (2, 3, 5, 5) vs weight (4, 3, 7, 3): the kernel (dilated to 7 x 5) is larger than the padded input (5 x 5)",
                         shape_error);
    CHECK_THROWS_WITH_AS(conv2d(x, t.constant(Td(Shape{4, 3, 3, 3})), t.constant(Td(Shape{3}))),
                         "conv2d: bias (3,) vs weight (4, 3, 3, 3): expected a bias of shape (4,)", shape_error);
    CHECK_THROWS_WITH_AS(conv2d(x, t.constant(Td(Shape{4, 1, 3, 3})), nullptr, 1, 0, 1, 3),
                         "conv2d: input (2, 3, 5, 5) vs weight (4, 1, 3, 3): 4 channels are not divisible by 3 groups", shape_error);
    CHECK_THROWS_WITH_AS(conv2d(t.constant(Td(Shape{3, 5, 5})), w, nullptr),
                         "conv2d: input (3, 5, 5) vs weight (4, 2, 3, 3): expected a 4-D input (N, C, H, W) and a 4-D weight", shape_error);
    CHECK_THROWS_WITH_AS(conv1d(t.constant(Td(Shape{2, 3, 5})), t.constant(Td(Shape{4, 2, 3})), nullptr),
                         "conv1d: input (2, 3, 5) vs weight (4, 2, 3): the input has 3 channels, the weight expects 2 (2 per group x 1 groups)",
                         shape_error);
    CHECK_THROWS_WITH_AS(conv1d(t.constant(Td(Shape{2, 3, 2})), t.constant(Td(Shape{4, 3, 3})), nullptr),
                         "conv1d: input (2, 3, 2) vs weight (4, 3, 3): the kernel (dilated to 3) is larger than the padded input (2)",
                         shape_error);
    CHECK_THROWS_WITH_AS(conv_transpose2d(x, t.constant(Td(Shape{4, 2, 3, 3})), nullptr),
                         "conv_transpose2d: input (2, 3, 5, 5) vs weight (4, 2, 3, 3): the input has 3 channels, the weight expects 4", shape_error);
    CHECK_THROWS_WITH_AS(max_pool2d(x, 6), "max_pool2d: input (2, 3, 5, 5) vs kernel (6, 6): the kernel is larger than the padded input (5 x 5)",
                         shape_error);
    CHECK_THROWS_WITH_AS(avg_pool2d(x, 2, 2, 2), "avg_pool2d: padding must be at most half the kernel 2 x 2 (input (2, 3, 5, 5))", value_error);
    CHECK_THROWS_WITH_AS(max_pool1d(t.constant(Td(Shape{2, 3, 2})), 3),
                         "max_pool1d: input (2, 3, 2) vs kernel (3): the kernel is larger than the padded input (2)", shape_error);
    CHECK_THROWS_WITH_AS(upsample_nearest2d(t.constant(Td(Shape{2, 3, 5})), 2),
                         "upsample_nearest2d: expected a 4-D input (N, C, H, W), got (2, 3, 5)", shape_error);
}

TEST_CASE("conv1d, conv2d, conv_transpose2d, pooling and upsampling equal PyTorch (float64)") {
    const Td x = rnd(Shape{2, 4, 7, 6}, 41), w = rnd(Shape{6, 2, 3, 2}, 42), wf = rnd(Shape{6, 4, 3, 2}, 43), b = rnd(Shape{6}, 44);
    const Td x1 = rnd(Shape{2, 4, 11}, 45), w1 = rnd(Shape{6, 2, 3}, 46);
    const Td xt = rnd(Shape{2, 4, 3, 4}, 47), wt = rnd(Shape{4, 3, 3, 2}, 48), bt = rnd(Shape{6}, 49);
    auto r = torch_eval({{"x", x}, {"w", w}, {"wf", wf}, {"b", b}, {"x1", x1}, {"w1", w1}, {"xt", xt}, {"wt", wt}, {"bt", bt}},
                        "F = torch.nn.functional\n"
                        "out['c0'] = F.conv2d(x, wf, b)\n"
                        "out['c1'] = F.conv2d(x, w, b, stride=2, padding=1, groups=2)\n"
                        "out['c2'] = F.conv2d(x, wf, None, stride=(1, 2), padding=(2, 1), dilation=(2, 1))\n"
                        "out['c3'] = F.conv2d(x, wf, b, padding='same')\n"
                        "out['c4'] = F.conv2d(x, w, None, stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)\n"
                        "out['d0'] = F.conv1d(x1, w1, b, stride=2, padding=1, dilation=2, groups=2)\n"
                        "out['t0'] = F.conv_transpose2d(xt, wt, bt[:3])\n"
                        "out['t1'] = F.conv_transpose2d(xt, wt, bt[:3], stride=2, padding=1, output_padding=1)\n"
                        "out['t2'] = F.conv_transpose2d(xt, wt[:, :1].repeat(1, 1, 1, 1), None, stride=(2, 3), padding=(0, 1), output_padding=(1, 2), groups=2, dilation=(2, 1))\n"
                        "out['m0'] = F.max_pool2d(x, 2)\n"
                        "out['m1'] = F.max_pool2d(x, (3, 2), stride=(2, 1), padding=1)\n"
                        "out['a0'] = F.avg_pool2d(x, 2)\n"
                        "out['a1'] = F.avg_pool2d(x, (3, 2), stride=(2, 1), padding=1)\n"
                        "out['m2'] = F.max_pool1d(x1, 3, stride=2, padding=1)\n"
                        "out['a2'] = F.avg_pool1d(x1, 3, stride=2, padding=1)\n"
                        "out['g0'] = F.adaptive_avg_pool2d(x, 1).flatten(1)\n"
                        "out['g1'] = F.adaptive_max_pool2d(x, 1).flatten(1)\n"
                        "out['u0'] = F.interpolate(x, scale_factor=(2, 3), mode='nearest')\n");
    if (!r.ran) return;
    Tape<double> t;
    const V X = t.constant(x), W = t.constant(w), WF = t.constant(wf), B = t.constant(b), X1 = t.constant(x1), W1 = t.constant(w1);
    const V XT = t.constant(xt), WT = t.constant(wt), BT = slice(t.constant(bt), 0, 0, 3);
    CHECK(max_abs_diff(conv2d(X, WF, B).value(), r["c0"]) < 1e-10);
    CHECK(max_abs_diff(conv2d(X, W, B, 2, 1, 1, 2).value(), r["c1"]) < 1e-10);
    CHECK(max_abs_diff(conv2d(X, WF, nullptr, Size2(1, 2), Pad2d(2, 1), Size2(2, 1)).value(), r["c2"]) < 1e-10);
    CHECK(max_abs_diff(conv2d(X, WF, B, 1, Pad2d::same(Size2(3, 2))).value(), r["c3"]) < 1e-10);
    CHECK(max_abs_diff(conv2d(X, W, nullptr, Size2(2, 1), Pad2d(1, 0), Size2(1, 2), 2).value(), r["c4"]) < 1e-10);
    CHECK(max_abs_diff(conv1d(X1, W1, B, 2, 1, 2, 2).value(), r["d0"]) < 1e-10);
    CHECK(max_abs_diff(conv_transpose2d(XT, WT, BT).value(), r["t0"]) < 1e-10);
    CHECK(max_abs_diff(conv_transpose2d(XT, WT, BT, 2, 1, 1).value(), r["t1"]) < 1e-10);
    const V WT1 = slice(WT, 1, 0, 1);
    CHECK(max_abs_diff(conv_transpose2d(XT, WT1, nullptr, Size2(2, 3), Size2(0, 1), Size2(1, 2), 2, Size2(2, 1)).value(), r["t2"]) < 1e-10);
    CHECK(max_abs_diff(max_pool2d(X, 2).value(), r["m0"]) < 1e-10);
    CHECK(max_abs_diff(max_pool2d(X, Size2(3, 2), Size2(2, 1), 1).value(), r["m1"]) < 1e-10);
    CHECK(max_abs_diff(avg_pool2d(X, 2).value(), r["a0"]) < 1e-10);
    CHECK(max_abs_diff(avg_pool2d(X, Size2(3, 2), Size2(2, 1), 1).value(), r["a1"]) < 1e-10);
    CHECK(max_abs_diff(max_pool1d(X1, 3, 2, 1).value(), r["m2"]) < 1e-10);
    CHECK(max_abs_diff(avg_pool1d(X1, 3, 2, 1).value(), r["a2"]) < 1e-10);
    CHECK(max_abs_diff(global_avg_pool(X).value(), r["g0"]) < 1e-10);
    CHECK(max_abs_diff(global_max_pool(X).value(), r["g1"]) < 1e-10);
    CHECK(max_abs_diff(upsample_nearest2d(X, Size2(2, 3)).value(), r["u0"]) < 1e-10);
}

TEST_CASE("conv2d gradients equal PyTorch's (float64)") {
    const Td x = rnd(Shape{2, 4, 6, 5}, 51), w = rnd(Shape{6, 2, 3, 3}, 52), b = rnd(Shape{6}, 53), gy = rnd(Shape{2, 6, 3, 3}, 54);
    auto r = torch_eval({{"x", x}, {"w", w}, {"b", b}, {"gy", gy}},
                        "x.requires_grad_(); w.requires_grad_(); b.requires_grad_()\n"
                        "y = torch.nn.functional.conv2d(x, w, b, stride=2, padding=1, groups=2)\n"
                        "gx, gw, gb = torch.autograd.grad(y, (x, w, b), gy)\n"
                        "out['gx'] = gx; out['gw'] = gw; out['gb'] = gb\n");
    if (!r.ran) return;
    Tape<double> t;
    const V X = t.variable(x), W = t.variable(w), B = t.variable(b);
    const V y = conv2d(X, W, B, 2, 1, 1, 2);
    REQUIRE(y.shape() == gy.shape());
    backward(y, t.constant(gy));
    CHECK(max_abs_diff(X.grad(), r["gx"]) < 1e-10);
    CHECK(max_abs_diff(W.grad(), r["gw"]) < 1e-10);
    CHECK(max_abs_diff(B.grad(), r["gb"]) < 1e-10);
}

TEST_CASE("conv2d on maps larger than one unfolded chunk: forward equals the direct loop, backward is its adjoint") {
    // 8 x 3 x 3 taps in double: chunks of 224 output positions, which end in the middle of rows.
    struct Case {
        Shape x, w;
        Size2 s;
        Pad2d p;
        Size2 d;
        std::size_t g;
    };
    const Case cases[] = {{Shape{2, 8, 30, 31}, Shape{4, 8, 3, 3}, 1, 1, 1, 1},
                          {Shape{1, 8, 41, 37}, Shape{6, 4, 3, 3}, Size2(2, 1), Pad2d(1, 2, 0, 1), Size2(1, 2), 2},
                          {Shape{1, 1, 60, 60}, Shape{3, 1, 4, 4}, 1, Pad2d::same(4), 1, 1}};
    for (const Case& k : cases) {
        const Td x = rnd(k.x, 61), w = rnd(k.w, 62), b = rnd(Shape{k.w[0]}, 63);
        Tape<double> t;
        const V X = t.variable(x), W = t.variable(w);
        const V y = conv2d(X, W, t.constant(b), k.s, k.p, k.d, k.g);
        CHECK(max_abs_diff(y.value(), direct_conv2d(x, w, &b, k.s, k.p, k.d, k.g)) < 1e-11);
        // <conv(x, w), r> = <x, dL/dx> = <w, dL/dw> for L = <conv(x, w) - b, r>.
        const Td r = rnd(y.shape(), 64);
        backward(sum(mul(y, t.constant(r))));
        double lhs = 0, via_x = 0, via_w = 0;
        for (std::size_t i = 0; i < r.size(); ++i) lhs += (y.value()[i] - b[(i / (y.shape()[2] * y.shape()[3])) % k.w[0]]) * r[i];
        const Td gx = X.grad(), gw = W.grad();
        for (std::size_t i = 0; i < x.size(); ++i) via_x += x[i] * gx[i];
        for (std::size_t i = 0; i < w.size(); ++i) via_w += w[i] * gw[i];
        CHECK(std::fabs(via_x - lhs) < 1e-9 * (1 + std::fabs(lhs)));
        CHECK(std::fabs(via_w - lhs) < 1e-9 * (1 + std::fabs(lhs)));
    }
}
