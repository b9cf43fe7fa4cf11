// Quantised inference (deploy/quantize.hpp): the ap_fixed<W, I> arithmetic on hand-derived
// values, int8 rounding and an exactly representable layer, allocation-free forward, identical
// int8 outputs on every instruction set, and the accuracy cost on the Higgs classifier (test AUC
// of float, int8 and several fixed-point formats; int8 within 0.005 of float). The quantised
// ModelT layers (quantize_model.hpp): exact integer convolutions, ap_fixed by hand, error bounds
// against float, calibration, the same bits on every instruction set.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <tapir/deploy/convert.hpp>
#include <tapir/deploy/convert_model.hpp>
#include <tapir/deploy/quantize.hpp>
#include <tapir/deploy/quantize_model.hpp>
#include <tapir/nn/conv.hpp>

#include "deploy/deploy_fixture.hpp"
#include "support/alloc_counter.hpp"

using namespace tapir;
using deploy::Status;

TEST_CASE("FixedPoint follows ap_fixed<W, I>: truncation, rounding, wrap and saturation") {
    using F83 = deploy::FixedPoint<8, 3>;  // 5 fractional bits: lsb 1/32, range [-4, 4 - 1/32]
    static_assert(F83::frac_bits == 5 && F83::raw_max == 127 && F83::raw_min == -128, "ap_fixed<8,3>");
    CHECK(F83::lsb() == 1.0 / 32);
    CHECK(F83::max_value() == 3.96875);
    CHECK(F83::min_value() == -4.0);
    CHECK(F83::from_double(1.3).to_double() == 1.28125);    // floor(41.6) = 41
    CHECK(F83::from_double(-1.3).to_double() == -1.3125);   // floor(-41.6) = -42 (AP_TRN: toward -inf)
    using R83 = deploy::FixedPoint<8, 3, deploy::Quant::rnd>;
    CHECK(R83::from_double(1.3).to_double() == 1.3125);     // 41.6 -> 42
    CHECK(R83::from_double(-1.3).to_double() == -1.3125);   // -41.6 -> -42
    CHECK(R83::from_double(1.296875).to_double() == 1.3125);  // 41.5: half up
    CHECK(F83::from_double(4.0).to_double() == -4.0);       // raw 128 wraps to -128
    CHECK(F83::from_double(5.5).to_double() == -2.5);       // 176 - 256 = -80
    using S83 = deploy::FixedPoint<8, 3, deploy::Quant::trn, deploy::Ovf::sat>;
    CHECK(S83::from_double(4.0).to_double() == 3.96875);
    CHECK(S83::from_double(-100.0).to_double() == -4.0);
    CHECK(S83::from_double(1e300).to_double() == 3.96875);
    CHECK(F83::from_double(std::nan("")).raw() == 0);

    const F83 a = F83::from_double(1.5), b = F83::from_double(-0.75);
    CHECK((a + b).to_double() == 0.75);
    CHECK((a - b).to_double() == 2.25);
    CHECK((a * b).to_double() == -1.125);
    CHECK((F83::from_double(0.09375) * F83::from_double(0.15625)).raw() == 0);  // 3/32 * 5/32 = 15/1024 -> floor = 0
    CHECK((F83::from_double(-0.09375) * F83::from_double(0.15625)).raw() == -1);  // floor(-15/32 lsb) = -1
    CHECK((F83::from_double(3.0) + F83::from_double(2.0)).to_double() == -3.0);  // 5 wraps to -3
    CHECK(deploy::FixedPoint<16, 6>::from_scaled(-1, 20).raw() == -1);             // floor toward -inf
    CHECK(deploy::FixedPoint<16, 6, deploy::Quant::rnd>::from_scaled(-512, 20).raw() == 0);  // -0.5 lsb rounds up
}

TEST_CASE("int8 quantisation rounds half to even, clamps, and is exact on representable layers") {
    CHECK(deploy::detail::quantize_i8(2.5f) == 2);
    CHECK(deploy::detail::quantize_i8(3.5f) == 4);
    CHECK(deploy::detail::quantize_i8(-2.5f) == -2);
    CHECK(deploy::detail::quantize_i8(-2.6f) == -3);
    CHECK(deploy::detail::quantize_i8(200.0f) == 127);
    CHECK(deploy::detail::quantize_i8(-1e9f) == -127);
    CHECK(deploy::detail::quantize_i8(std::nanf("")) == 0);

    // Input range 127 and max |W| 127 make both scales 1: integer inputs and weights are exact.
    const float w[6] = {127, -3, 2, 5, -1, 0}, b[2] = {10, -20};
    deploy::LayerView<float> v[1];
    v[0] = {w, b, 3, 2, Activation::none, 0.0f};
    const float range[1] = {127.0f};
    deploy::Int8Mlp<3, 2> q;
    REQUIRE(q.load(v, 1, range) == Status::ok);
    CHECK(q.layer<0>().in_scale == 1.0f);
    CHECK(q.layer<0>().w_scale == 1.0f);
    const float x[3] = {1, 2, 3};
    float y[2];
    q.forward(x, y);
    CHECK(y[0] == 138.0f);  // 127 + 4 - 3 + 10
    CHECK(y[1] == -13.0f);  // -3 + 10 + 0 - 20
    v[0].act = Activation::relu;
    REQUIRE(q.load(v, 1, range) == Status::ok);
    q.forward(x, y);
    CHECK(y[1] == 0.0f);

    const float bad_range[1] = {-1.0f};
    CHECK(q.load(v, 1, bad_range) == Status::bad_scale);
    CHECK(q.load(v, 2, range) == Status::layer_count);
    v[0].in = 4;
    CHECK(q.load(v, 1, range) == Status::shape);
}

TEST_CASE("Higgs classifier: accuracy cost of int8 and fixed point (test AUC), allocation-free forward") {
    const deploy_test::Higgs& h = deploy_test::higgs();
    const std::size_t n = h.y_test.size();
    const double auc_float = deploy_test::auc(h.p_test, h.y_test);

    const auto q = deploy::to_int8<deploy::Int8Mlp<8, 24, 16, 8, 1>>(h.spec, h.x_train.data(), h.x_train.dim(0));
    std::vector<float> p_int8(n);
    q->forward(h.x_test.data(), p_int8.data(), n);
    const double auc_int8 = deploy_test::auc(p_int8, h.y_test);

    // The same int8 outputs on every kernel family (integer sums are exact).
    for (const simd::isa isa : {simd::isa::scalar, simd::isa::avx2, simd::isa::neon}) {
        if (q->set_isa(isa) != Status::ok) continue;
        std::vector<float> p(n);
        q->forward(h.x_test.data(), p.data(), n);
        CHECK_MESSAGE(deploy_test::count_different(p, p_int8) == 0, std::string(simd::isa_name(isa)));
    }

    auto fixed_auc = [&](auto tag, std::vector<float>& p) {
        using M = decltype(tag);
        const auto m = std::make_unique<M>();
        deploy::load(*m, h.spec);
        p.resize(n);
        m->forward(h.x_test.data(), p.data(), n);
        {
            tapir_test::AllocationScope scope;
            float y = 0.0f;
            m->forward(h.x_test.data(), &y);
            CHECK(scope.count() == 0);
        }
        return deploy_test::auc(p, h.y_test);
    };
    std::vector<float> p16, p12, p8;
    const double auc_16_6 = fixed_auc(deploy::FixedMlp<deploy::FixedPoint<16, 6>, 8, 24, 16, 8, 1>{}, p16);
    const double auc_12_5 = fixed_auc(deploy::FixedMlp<deploy::FixedPoint<12, 5>, 8, 24, 16, 8, 1>{}, p12);
    const double auc_8_4 = fixed_auc(deploy::FixedMlp<deploy::FixedPoint<8, 4, deploy::Quant::rnd, deploy::Ovf::sat>, 8, 24, 16, 8, 1>{}, p8);

    MESSAGE("Higgs classifier test AUC (" << n << " events, " << h.epochs << " epochs): float " << auc_float << ", int8 "
                                          << auc_int8 << " (drop " << auc_float - auc_int8 << "), ap_fixed<16,6> " << auc_16_6
                                          << " (drop " << auc_float - auc_16_6 << "), ap_fixed<12,5> " << auc_12_5 << " (drop "
                                          << auc_float - auc_12_5 << "), ap_fixed<8,4,RND,SAT> " << auc_8_4 << " (drop "
                                          << auc_float - auc_8_4 << ")");
    auto max_abs = [](const std::vector<float>& a, const std::vector<float>& b) {
        double m = 0.0;
        for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
        return m;
    };
    MESSAGE("max |p - p_float|: int8 " << max_abs(p_int8, h.p_test) << ", ap_fixed<16,6> " << max_abs(p16, h.p_test)
                                       << ", ap_fixed<12,5> " << max_abs(p12, h.p_test));
    CHECK(auc_float > 0.7);
    CHECK(std::fabs(auc_float - auc_int8) < 0.005);
    CHECK(std::fabs(auc_float - auc_16_6) < 0.005);
    CHECK(std::fabs(auc_float - auc_12_5) < 0.02);
    CHECK(auc_8_4 > 0.6);  // 4 fractional bits still classify, at a visible cost

    {
        tapir_test::AllocationScope scope;
        float y = 0.0f;
        q->forward(h.x_test.data(), &y);
        q->forward(h.x_test.data(), p_int8.data(), 16);
        CHECK(scope.count() == 0);
    }

    using Q = deploy::Int8Mlp<8, 24, 16, 8, 1>;
    using Wrong = deploy::Int8Mlp<8, 16, 1>;
    CHECK_THROWS_AS(deploy::to_int8<Q>(h.spec, h.x_train.data(), 0), value_error);
    CHECK_THROWS_AS(deploy::to_int8<Wrong>(h.spec, h.x_train.data(), 10), shape_error);
}

TEST_CASE("int8 kernels agree on every instruction set for odd sizes and wide layers, and track the float model") {
    // Odd input counts (the 16-bit input pairs end in a zero pad), outputs not multiples of 32,
    // and layers wide enough for several passes of the AVX2 kernel's accumulator registers.
    using A = Activation;
    nn::Sequential<float> net = deploy_test::random_mlp<float>({7, 33, 65, 96, 3}, {A::relu, A::tanh, A::relu, A::none}, 81);
    const deploy::ModelSpec<float> spec = deploy::spec_from(net);
    const std::size_t n = 50;
    const Tensor<float> x = deploy_test::random_inputs<float>(n, 7, 82);
    const std::vector<float> ref = deploy_test::dynamic_forward(net, x);
    using Q = deploy::Int8Mlp<7, 33, 65, 96, 3>;
    const auto q = deploy::to_int8<Q>(spec, x.data(), n, 1.0);
    std::vector<float> y0;
    double max_err = 0.0, max_ref = 0.0;
    for (const simd::isa isa : {simd::isa::scalar, simd::isa::avx2, simd::isa::neon}) {
        if (q->set_isa(isa) != Status::ok) continue;
        CAPTURE(std::string(simd::isa_name(isa)));
        std::vector<float> y(n * 3), y1(n * 3);
        q->forward(x.data(), y.data(), n);
        for (std::size_t i = 0; i < n; ++i) q->forward(x.data() + 7 * i, y1.data() + 3 * i);
        CHECK(deploy_test::count_different(y, y1) == 0);
        if (y0.empty()) y0 = y;
        CHECK(deploy_test::count_different(y, y0) == 0);
    }
    for (std::size_t i = 0; i < ref.size(); ++i) {
        max_err = std::max(max_err, std::fabs(static_cast<double>(y0[i]) - static_cast<double>(ref[i])));
        max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
    }
    MESSAGE("int8 7-33-65-96-3: max |y - y_float| = " << max_err << " (max |y_float| = " << max_ref << ")");
    CHECK(max_ref > 0.1);
    CHECK(max_err < 0.05 * max_ref);  // four layers of 8-bit rounding: a few percent of the output range
    CHECK(max_err > 0.0);             // and it is a quantised model, not the float one
}

// ---- quantised ModelT layers (quantize_model.hpp) -------------------------------------------------

namespace {

/// Every kernel family this CPU and build run.
std::vector<simd::isa> runnable_isas() {
    std::vector<simd::isa> out;
    for (const simd::isa i : {simd::isa::scalar, simd::isa::avx2, simd::isa::avx512, simd::isa::neon})
        if (simd::isa_supported(i)) out.push_back(i);
    return out;
}

template <class M>
std::vector<float> model_outputs(const M& m, const std::vector<float>& x) {
    const std::size_t n = x.size() / M::inputs;
    std::vector<float> y(n * M::outputs);
    m.forward(x.data(), y.data(), n);
    return y;
}

/// n random images of (C, H, W) in [0, 1) with a third of the pixels zero, as jet images.
std::vector<float> random_images(std::size_t n, std::size_t size, std::uint64_t seed) {
    Rng rng(seed);
    std::vector<float> x(n * size);
    for (float& v : x) v = rng.uniform() < 0.33 ? 0.0f : static_cast<float>(rng.uniform());
    return x;
}

} // namespace

TEST_CASE("int8 QConv2dT: integer weights and inputs with unit scales give the float convolution exactly; saturation; per channel") {
    // Padding 1 above and left, 2 below and right, stride 2: weights integers in [-127, 127]
    // (max 127: weight scale 1), inputs integers with range 127 (input scale 1): every product
    // and sum is an exact integer, so the int8 layer equals the float one bit for bit.
    using F = deploy::Conv2dT<float, 2, 5, 6, 3, 3, 2, 2, 2, 1, 1, 2, 2>;
    using M = deploy::ModelT<float, F>;
    using Q = deploy::QuantizedT<deploy::Int8, M>;
    static_assert(std::is_same<Q, deploy::ModelT<float, deploy::QConv2dT<deploy::Int8, 2, 5, 6, 3, 3, 2, 2, 2, 1, 1, 2, 2>>>::value,
                  "QuantizedT maps Conv2dT to QConv2dT");
    M f;
    Rng rng(31);
    for (std::size_t oc = 0; oc < 3; ++oc) {
        for (std::size_t p = 0; p < F::K; ++p) f.layer<0>().weight[oc][p] = static_cast<float>(static_cast<int>(rng.uniform() * 255.0) - 127);
        f.layer<0>().bias[oc] = static_cast<float>(oc * 7) - 5.0f;
    }
    f.layer<0>().weight[0][0] = f.layer<0>().weight[1][3] = 127.0f;  // the largest |weight| of channels 0 and 1
    std::vector<float> x(60);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i * 37 % 255) - 127);
    x[4] = 127.0f;  // the calibrated range (coverage 1): 127
    deploy::QuantizeOptions opt;
    opt.coverage = 1.0;
    Q q;
    REQUIRE(deploy::quantize_model(q, f, x.data(), 1, opt) == Status::ok);
    CHECK(q.layer<0>().in_scale == 1.0f);
    CHECK(q.layer<0>().w_scale == 1.0f);
    CHECK(q.layer<0>().in_min == -127.0f);
    const std::vector<float> yf = model_outputs(f, x), yq = model_outputs(q, x);
    CHECK(yf.size() == 3 * 3 * 4);
    CHECK(deploy_test::count_different(yq, yf) == 0);

    // A hand-derived output: channel 0 at (0, 0) sees rows -1..1, columns -1..0 of each channel;
    // only rows 0..1, column 0 are inside: taps (c, 1, 1) and (c, 2, 1) -> x[c][0][0], x[c][1][0].
    const auto& w = f.layer<0>().weight[0];
    const float by_hand = w[3] * x[0] + w[5] * x[6] + w[9] * x[30] + w[11] * x[36] + f.layer<0>().bias[0];
    CHECK(yq[0] == by_hand);

    // Saturation: inputs beyond the range clamp to the largest code.
    std::vector<float> big = x, clamped = x;
    big[7] = 1000.0f, clamped[7] = 127.0f;
    big[8] = -1e30f, clamped[8] = -127.0f;
    CHECK(deploy_test::count_different(model_outputs(q, big), model_outputs(f, clamped)) == 0);
    CHECK(deploy_test::count_different(model_outputs(q, big), model_outputs(f, big)) > 0);

    // Per channel: channel 2 with weights 63.5 has scale 0.5 (codes 127), exact; one scale for
    // the layer (1) rounds them to 64.
    for (std::size_t p = 0; p < F::K; ++p) f.layer<0>().weight[2][p] = 63.5f;
    REQUIRE(deploy::quantize_model(q, f, x.data(), 1, opt) == Status::ok);
    CHECK(q.layer<0>().weight[2][0] == 64);
    const std::vector<float> y_layer = model_outputs(q, x);
    opt.per_channel = true;
    REQUIRE(deploy::quantize_model(q, f, x.data(), 1, opt) == Status::ok);
    CHECK(q.layer<0>().weight[2][0] == 127);
    CHECK(q.layer<0>().out_scales[2] == 0.5f);
    CHECK(q.layer<0>().out_scales[0] == 1.0f);
    CHECK(q.layer<0>().out_scales[1] == 1.0f);
    const std::vector<float> y_channel = model_outputs(q, x), y_float = model_outputs(f, x);
    CHECK(deploy_test::count_different(y_channel, y_float) == 0);
    std::size_t off = 0;
    for (std::size_t i = 24; i < 36; ++i) off += y_layer[i] != y_float[i] ? 1 : 0;
    CHECK(off > 0);
    for (std::size_t i = 0; i < 24; ++i) CHECK(y_layer[i] == y_float[i]);  // channels 0 and 1 are exact either way
}

TEST_CASE("int8 QConv1dT with 576 taps (integer sums: beyond the float kernel's exact range) equals the float layer on integer data") {
    using F = deploy::Conv1dT<float, 64, 12, 3, 9, 1, 4>;
    using M = deploy::ModelT<float, F>;
    using Q = deploy::QuantizedT<deploy::Int8, M>;
    static_assert(!std::tuple_element_t<0, Q::layers_type>::float_sums, "576 x 127 x 255 exceeds 2^24: the integer loops");
    static M f;
    static Q q;
    Rng rng(33);
    for (std::size_t oc = 0; oc < 3; ++oc) {
        for (std::size_t p = 0; p < F::K; ++p) f.layer<0>().weight[oc][p] = static_cast<float>(static_cast<int>(rng.uniform() * 255.0) - 127);
        f.layer<0>().weight[oc][oc] = 127.0f;
        f.layer<0>().bias[oc] = static_cast<float>(oc) * 1000.0f - 1000.0f;
    }
    f.layer<0>().act = Activation::relu;
    std::vector<float> x(64 * 12);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(rng.uniform() * 255.0) - 127);
    x[5] = -127.0f;
    deploy::QuantizeOptions opt;
    opt.coverage = 1.0;
    REQUIRE(deploy::quantize_model(q, f, x.data(), 1, opt) == Status::ok);
    REQUIRE(q.layer<0>().in_scale == 1.0f);
    const std::vector<float> yf = model_outputs(f, x);  // |sums| < 576 x 127 x 127 < 2^24: exact in float too
    for (const simd::isa isa : runnable_isas()) {
        CAPTURE(std::string(simd::isa_name(isa)));
        REQUIRE(q.set_isa(isa) == Status::ok);
        CHECK(deploy_test::count_different(model_outputs(q, x), yf) == 0);
    }
    std::size_t positive = 0;
    for (const float v : yf) positive += v > 0.0f ? 1 : 0;
    CHECK(positive > 0);
    CHECK(positive < yf.size());
}

TEST_CASE("ap_fixed QConv1dT: hand-derived truncation, wrap and saturation") {
    using F = deploy::Conv1dT<float, 1, 3, 1, 2>;
    using M = deploy::ModelT<float, F>;
    M f;
    f.layer<0>().weight[0][0] = 0.5f, f.layer<0>().weight[0][1] = -0.25f, f.layer<0>().bias[0] = 0.1f;
    // ap_fixed<8, 3>: lsb 1/32. x -> raw 41, -42, 22 (floor); w -> 16, -8; b 0.1 -> 3.
    // Output 0: (3 * 32 + 16 * 41 + (-8) (-42)) / 32 = 1088 / 32 = 34 -> 1.0625 (float: 1.075).
    // Output 1: (96 - 672 - 176) / 32 = -23.5 -> floor -24 -> -0.75 (float: -0.725).
    deploy::QuantizedT<deploy::FixedPoint<8, 3>, M> q;
    REQUIRE(deploy::quantize_model(q, f, nullptr, 0) == Status::ok);  // fixed point needs no calibration
    const float x[3] = {1.3f, -1.3f, 0.7f};
    float y[2];
    q.forward(x, y);
    CHECK(y[0] == 1.0625f);
    CHECK(y[1] == -0.75f);
    // 5 is out of range: raw 160 wraps to -96 (-3.0): (96 - 1536) / 32 = -45 -> -1.40625;
    // saturated to 127 instead: (96 + 2032) / 32 = 66.5 -> 66 -> 2.0625.
    const float big[3] = {5.0f, 0.0f, 0.0f};
    q.forward(big, y);
    CHECK(y[0] == -1.40625f);
    deploy::QuantizedT<deploy::FixedPoint<8, 3, deploy::Quant::trn, deploy::Ovf::sat>, M> s;
    REQUIRE(deploy::quantize_model(s, f, nullptr, 0) == Status::ok);
    s.forward(big, y);
    CHECK(y[0] == 2.0625f);
}

namespace {

/// A small jet-image CNN: 'same' 3 x 3 and 4 x 4 (asymmetric padding) convolutions, pooling,
/// a dense head with a sigmoid-free logit.
nn::Sequential<float> small_cnn(std::uint64_t seed) {
    Rng rng(seed);
    nn::ConvOptions same;
    same.same = true;
    nn::Sequential<float> m;
    m.add<nn::Conv2d<float>>(1, 6, 3, rng, same)
        .add<nn::ReLU<float>>()
        .add<nn::MaxPool2d<float>>(2)
        .add<nn::Conv2d<float>>(6, 8, 4, rng, same)
        .add<nn::ReLU<float>>()
        .add<nn::MaxPool2d<float>>(2)
        .add<nn::Flatten<float>>()
        .add<nn::Dense<float>>(8 * 4 * 4, 16, rng, Activation::relu)
        .add<nn::Dense<float>>(16, 1, rng);
    return m;
}
using SmallCnn = deploy::ModelT<float, deploy::Conv2dT<float, 1, 16, 16, 6, 3, 3, 1, 1, 1, 1>, deploy::MaxPool2dT<float, 6, 16, 16, 2, 2>,
                                deploy::Conv2dT<float, 6, 8, 8, 8, 4, 4, 1, 1, 1, 1, 2, 2>, deploy::MaxPool2dT<float, 8, 8, 8, 2, 2>,
                                deploy::FlattenT<float, 128>, deploy::DenseT<float, 128, 16>, deploy::DenseT<float, 16, 1>>;

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double m = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    return m;
}

} // namespace

TEST_CASE("quantised CNN: error bounds against float for random weights, the same outputs on every instruction set, no heap") {
    nn::Sequential<float> net = small_cnn(41);
    const auto f = deploy::to_model<SmallCnn>(net);
    const std::size_t n = 64;
    const std::vector<float> x = random_images(n, 256, 42), calib = random_images(200, 256, 43);
    const std::vector<float> yf = model_outputs(*f, x);
    double range = 0.0;
    for (const float v : yf) range = std::max(range, std::fabs(static_cast<double>(v)));
    REQUIRE(range > 0.01);

    using Q8 = deploy::QuantizedT<deploy::Int8, SmallCnn>;
    using Q16 = deploy::QuantizedT<deploy::FixedPoint<16, 6>, SmallCnn>;
    using Q16r = deploy::QuantizedT<deploy::FixedPoint<16, 6, deploy::Quant::rnd>, SmallCnn>;
    using Q12 = deploy::QuantizedT<deploy::FixedPoint<12, 4, deploy::Quant::rnd, deploy::Ovf::sat>, SmallCnn>;
    const auto q8 = std::make_unique<Q8>(), q8c = std::make_unique<Q8>();
    const auto q16 = std::make_unique<Q16>();
    const auto q16r = std::make_unique<Q16r>();
    const auto q12 = std::make_unique<Q12>();
    deploy::QuantizeOptions opt;
    opt.non_negative_input = true;
    REQUIRE(deploy::quantize_model(*q8, *f, calib.data(), 200, opt) == Status::ok);
    opt.per_channel = true;
    REQUIRE(deploy::quantize_model(*q8c, *f, calib.data(), 200, opt) == Status::ok);
    REQUIRE(deploy::quantize_model(*q16, *f, nullptr, 0) == Status::ok);
    REQUIRE(deploy::quantize_model(*q16r, *f, nullptr, 0) == Status::ok);
    REQUIRE(deploy::quantize_model(*q12, *f, nullptr, 0) == Status::ok);

    const double e8 = max_abs_diff(model_outputs(*q8, x), yf), e8c = max_abs_diff(model_outputs(*q8c, x), yf);
    const double e16 = max_abs_diff(model_outputs(*q16, x), yf), e12 = max_abs_diff(model_outputs(*q12, x), yf);
    const double e16r = max_abs_diff(model_outputs(*q16r, x), yf);
    MESSAGE("small CNN, max |y - y_float| / max |y_float| (" << range << "): int8 " << e8 / range << ", int8 per channel " << e8c / range
                                                            << ", ap_fixed<16,6> " << e16 / range << ", ap_fixed<16,6,RND> " << e16r / range
                                                            << ", ap_fixed<12,4,RND,SAT> " << e12 / range);
    // Four layers of 8-bit rounding: a few percent of the output range. ap_fixed truncation
    // (AP_TRN, the default) always rounds down: its bias adds up over the layers (measured: 20
    // lsb of 2^-10 at the output); rounding (AP_RND) leaves a few lsb, fewer than 4 fewer bits.
    CHECK(e8 < 0.06 * range);
    CHECK(e8c < 0.06 * range);
    CHECK(e8 > 0.0);
    CHECK(e16 < 0.1 * range);
    CHECK(e16r > 0.0);
    CHECK(e16r < 0.25 * e16);
    CHECK(e16r < 0.01);
    CHECK(e12 > e16r);
    CHECK(e12 < 0.1 * range);

    // Integer sums are exact: every kernel family gives the same bits.
    const std::vector<float> y8 = model_outputs(*q8c, x), y16 = model_outputs(*q16, x);
    for (const simd::isa isa : runnable_isas()) {
        CAPTURE(std::string(simd::isa_name(isa)));
        REQUIRE(q8c->set_isa(isa) == Status::ok);
        REQUIRE(q16->set_isa(isa) == Status::ok);
        CHECK(deploy_test::count_different(model_outputs(*q8c, x), y8) == 0);
        CHECK(deploy_test::count_different(model_outputs(*q16, x), y16) == 0);
    }

    tapir_test::AllocationScope scope;
    float y = 0.0f;
    q8->forward(x.data(), &y);
    q8c->forward(x.data(), &y);
    q16->forward(x.data(), &y);
    CHECK(scope.count() == 0);
}

TEST_CASE("quantize_model calibration: coverage sets the int8 input scales, uint8 codes after non-negative layers, clear errors") {
    nn::Sequential<float> net = small_cnn(51);
    const auto f = deploy::to_model<SmallCnn>(net);
    const std::vector<float> calib = random_images(50, 256, 52);
    float xmax = 0.0f;
    for (const float v : calib) xmax = std::max(xmax, v);
    using Q8 = deploy::QuantizedT<deploy::Int8, SmallCnn>;
    const auto q = std::make_unique<Q8>();
    deploy::QuantizeOptions opt;
    opt.coverage = 1.0;
    REQUIRE(deploy::quantize_model(*q, *f, calib.data(), 50, opt) == Status::ok);
    // Coverage 1: the largest |input|; signed inputs by default.
    CHECK(q->layer<0>().in_scale == xmax / 127.0f);
    CHECK(q->layer<0>().in_min == -127.0f);
    // After ReLU and max-pool, and after the ReLU dense layer: uint8 codes.
    CHECK(q->layer<2>().in_min == 0.0f);
    CHECK(q->layer<2>().in_max == 255.0f);
    CHECK(q->layer<5>().q.in_min == 0.0f);
    CHECK(q->layer<6>().q.in_max == 255.0f);
    const float s2 = q->layer<2>().in_scale, s5 = q->layer<5>().q.in_scale;
    opt.non_negative_input = true;
    REQUIRE(deploy::quantize_model(*q, *f, calib.data(), 50, opt) == Status::ok);
    CHECK(q->layer<0>().in_scale == xmax / 255.0f);
    CHECK(q->layer<0>().in_max == 255.0f);
    // A lower coverage clips the rarest inputs: smaller scales.
    opt.coverage = 0.9;
    REQUIRE(deploy::quantize_model(*q, *f, calib.data(), 50, opt) == Status::ok);
    CHECK(q->layer<0>().in_scale < xmax / 255.0f);
    CHECK(q->layer<0>().in_scale > 0.0f);
    CHECK(q->layer<2>().in_scale < s2);
    CHECK(q->layer<5>().q.in_scale < s5);

    CHECK(deploy::quantize_model(*q, *f, calib.data(), 0, opt) == Status::no_calibration);
    CHECK(deploy::quantize_model(*q, *f, nullptr, 10, opt) == Status::null_pointer);
    opt.coverage = 0.0;
    CHECK(deploy::quantize_model(*q, *f, calib.data(), 50, opt) == Status::bad_coverage);
    opt.coverage = 1.0;
    std::vector<float> bad = calib;
    bad[17] = std::nanf("");
    CHECK(deploy::quantize_model(*q, *f, bad.data(), 50, opt) == Status::non_finite);
    CHECK(std::string(deploy::status_message(Status::no_calibration)) == "int8 calibration needs at least one sample");
    CHECK(std::string(deploy::status_message(Status::bad_coverage)) == "the calibration coverage must be in (0, 1]");
}
