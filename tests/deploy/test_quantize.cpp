// Quantised inference (deploy/quantize.hpp): the ap_fixed<W, I> arithmetic on hand-derived
// values, int8 rounding and an exactly representable layer, allocation-free forward, identical
// int8 outputs on every instruction set, and the accuracy cost on the Higgs classifier (test AUC
// of float, int8 and several fixed-point formats; int8 within 0.005 of float).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <tapir/deploy/convert.hpp>
#include <tapir/deploy/quantize.hpp>

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
