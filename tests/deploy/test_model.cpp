// deploy::ModelT and its layers (model.hpp), loaded from trained models (convert_model.hpp): each
// model equals the trained model's output bit for bit on the same instruction set (BatchNorm
// folding: a few ulp), forward allocates nothing, streaming steps equal the whole sequence, and
// mismatched layers give errors that name the layer and both shapes.
#include <doctest/doctest.h>

// GCC 12 for aarch64 (Debian 12.2) dies with an internal compiler error in the loop vectoriser
// on the deploy tests at -O3 (see test_threads.cpp); the kernels under test are vectorised by hand.
#if defined(__aarch64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC optimize("no-tree-vectorize")
#endif

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <tapir/autodiff/conv.hpp>
#include <tapir/autodiff/tape.hpp>
#include <tapir/deploy/convert_model.hpp>
#include <tapir/nn/conv.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/model_file.hpp>
#include <tapir/nn/recurrent.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/nn/sets.hpp>

#include "support/alloc_counter.hpp"

using namespace tapir;
namespace dp = tapir::deploy;

namespace {

Tensor<float> random_input(Shape s, std::uint64_t seed) {
    Rng rng(seed);
    Tensor<float> x(s);
    for (auto& v : x) v = static_cast<float>(rng.normal());
    return x;
}

std::vector<float> trained_forward(nn::Sequential<float>& net, const Tensor<float>& x) {
    Tape<float> tape;
    NoGradGuard<float> guard(tape);
    net.eval();
    const Var<float> y = net(tape.view(x));
    return std::vector<float>(y.data(), y.data() + y.size());
}

template <class M>
std::vector<float> fixed_forward(const M& m, const Tensor<float>& x) {
    const std::size_t n = x.size() / M::inputs;
    std::vector<float> y(n * M::outputs);
    m.forward(x.data(), y.data(), n);
    return y;
}

/// The deployed model's output on x, computed with the allocation counter watching (it must read 0).
template <class M>
std::vector<float> counted_forward(const M& m, const Tensor<float>& x, std::size_t batch, std::size_t outputs) {
    std::vector<float> got(outputs);
    tapir_test::AllocationScope scope;
    m.forward(x.data(), got.data(), batch);
    CHECK(scope.count() == 0);
    return got;
}

/// Elements whose bits differ.
std::size_t bit_differences(const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    std::size_t d = 0;
    for (std::size_t i = 0; i < a.size(); ++i) d += std::memcmp(&a[i], &b[i], sizeof(float)) != 0 ? 1 : 0;
    return d;
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
    double scale = 0.0, m = 0.0;
    for (const float v : b) scale = std::fmax(scale, std::fabs(static_cast<double>(v)));
    for (std::size_t i = 0; i < a.size(); ++i) m = std::fmax(m, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    return m / scale;
}

nn::ConvOptions opts(std::size_t stride, std::size_t pad, bool same = false) {
    nn::ConvOptions o;
    o.stride = stride;
    o.padding = pad;
    o.same = same;
    return o;
}

/// A top-tagging-style CNN on 40 x 40 images: every convolution and pooling variant.
nn::Sequential<float> make_cnn() {
    Rng rng(11);
    nn::Sequential<float> m;
    m.add<nn::Conv2d<float>>(1, 8, 3, rng, opts(1, 0, true))
        .add<nn::ReLU<float>>()
        .add<nn::MaxPool2d<float>>(2)
        .add<nn::Conv2d<float>>(8, 16, 3, rng)
        .add<nn::ReLU<float>>()
        .add<nn::AvgPool2d<float>>(2)
        .add<nn::Conv2d<float>>(16, 8, 3, rng, opts(2, 1))
        .add<nn::Tanh<float>>()
        .add<nn::Flatten<float>>()
        .add<nn::Dense<float>>(8 * 5 * 5, 10, rng)
        .add<nn::ReLU<float>>()
        .add<nn::Dense<float>>(10, 1, rng);
    return m;
}
using Cnn = dp::ModelT<float, dp::Conv2dT<float, 1, 40, 40, 8, 3, 3, 1, 1, 1, 1>, dp::MaxPool2dT<float, 8, 40, 40, 2, 2>,
                       dp::Conv2dT<float, 8, 20, 20, 16, 3, 3>, dp::AvgPool2dT<float, 16, 18, 18, 2, 2>,
                       dp::Conv2dT<float, 16, 9, 9, 8, 3, 3, 2, 2, 1, 1>, dp::FlattenT<float, 200>, dp::DenseT<float, 200, 10>,
                       dp::DenseT<float, 10, 1>>;

/// Conv1d stack: 'same' padding, a long sum (64 x 3 = 192 taps), pooling, a dense head whose sum
/// (64 x 15 = 960 terms) is split into simd::gemm's K blocks.
nn::Sequential<float> make_conv1d() {
    Rng rng(12);
    nn::Sequential<float> m;
    m.add<nn::Conv1d<float>>(4, 64, 3, rng, opts(1, 0, true))
        .add<nn::ReLU<float>>()
        .add<nn::Conv1d<float>>(64, 64, 3, rng)
        .add<nn::ReLU<float>>()
        .add<nn::MaxPool1d<float>>(2)
        .add<nn::Flatten<float>>()
        .add<nn::Dense<float>>(64 * 15, 1, rng);
    return m;
}
using Conv1dNet = dp::ModelT<float, dp::Conv1dT<float, 4, 32, 64, 3, 1, 1>, dp::Conv1dT<float, 64, 32, 64, 3>, dp::MaxPool1dT<float, 64, 30, 2>,
                             dp::FlattenT<float, 64 * 15>, dp::DenseT<float, 64 * 15, 1>>;

template <class Layer>
nn::Sequential<float> make_recurrent(bool sequences) {
    Rng rng(13);
    nn::RecurrentOptions o;
    o.return_sequences = sequences;
    nn::Sequential<float> m;
    m.add<Layer>(8, 64, rng, o);
    if (sequences) m.add<nn::Flatten<float>>();
    m.add<nn::Dense<float>>(sequences ? 64 * 10 : 64, 1, rng);
    return m;
}

} // namespace

TEST_CASE("deploy::ModelT of dense layers (MlpT) is bitwise Mlp and the trained model") {
    Rng rng(3);
    nn::Sequential<float> net;
    net.add<nn::Dense<float>>(8, 24, rng).add<nn::ReLU<float>>().add<nn::Dense<float>>(24, 16, rng).add<nn::Tanh<float>>();
    net.add<nn::Dense<float>>(16, 1, rng).add<nn::Sigmoid<float>>();
    const Tensor<float> x = random_input(Shape{37, 8}, 4);
    const auto mlp = dp::to_fixed<dp::Mlp<float, 8, 24, 16, 1>>(net);
    const auto model = dp::to_model<dp::MlpT<float, 8, 24, 16, 1>>(net);
    const std::vector<float> ref = trained_forward(net, x);
    CHECK(bit_differences(fixed_forward(*model, x), ref) == 0);
    CHECK(bit_differences(fixed_forward(*model, x), fixed_forward(*mlp, x)) == 0);
    CHECK(ref[0] > 0.0f);
    CHECK(ref[0] < 1.0f);
}

TEST_CASE("deploy::Conv2dT, pooling and flatten: a CNN on 40 x 40 images is bitwise the trained model") {
    nn::Sequential<float> net = make_cnn();
    const auto cnn = dp::to_model<Cnn>(net);
    const Tensor<float> x = random_input(Shape{6, 1, 40, 40}, 5);
    const std::vector<float> ref = trained_forward(net, x);
    const std::vector<float> got = fixed_forward(*cnn, x);
    CHECK(bit_differences(got, ref) == 0);
    CHECK(std::fabs(ref[0] - ref[1]) > 0.0f);  // the outputs depend on the image

    // Each instruction set the CPU has, against the trained model run on it.
    for (const simd::isa i : {simd::isa::scalar, simd::isa::avx2, simd::isa::avx512, simd::isa::neon}) {
        if (!simd::isa_supported(i)) continue;
        const simd::isa prev = simd::active_isa();
        simd::set_active_isa(i);
        const std::vector<float> r = trained_forward(net, x);
        simd::set_active_isa(prev);
        Cnn on = *cnn;
        REQUIRE(on.set_isa(i) == dp::Status::ok);
        CAPTURE(static_cast<int>(i));
        CHECK(bit_differences(fixed_forward(on, x), r) == 0);
        CHECK(max_rel(r, ref) < 1e-5);
    }

    // No heap in forward, one image at a time or with a caller-held buffer.
    std::vector<float> work(Cnn::work_size);
    float y = 0.0f, y2 = 0.0f;
    tapir_test::AllocationScope scope;
    cnn->forward(x.data(), &y);
    cnn->forward_with(x.data(), &y2, work.data());
    CHECK(scope.count() == 0);
    CHECK(y == ref[0]);
    CHECK(y2 == ref[0]);
}

TEST_CASE("deploy::Conv1dT: a Conv1d stack with 'same' padding and long sums is bitwise the trained model") {
    nn::Sequential<float> net = make_conv1d();
    const auto m = dp::to_model<Conv1dNet>(net);
    const Tensor<float> x = random_input(Shape{5, 4, 32}, 6);
    CHECK(bit_differences(fixed_forward(*m, x), trained_forward(net, x)) == 0);
}

TEST_CASE("deploy::Conv2dT with asymmetric padding: even kernels with 'same' padding (DeepTop's 4 x 4) are bitwise the trained model") {
    // 'same' with a 4-wide kernel pads 1 before and 2 after: Conv2dT's PB and PR, Conv1dT's PR.
    Rng rng(14);
    nn::Sequential<float> net;
    net.add<nn::Conv2d<float>>(2, 4, 4, rng, opts(1, 0, true))
        .add<nn::ReLU<float>>()
        .add<nn::MaxPool2d<float>>(2)
        .add<nn::Flatten<float>>()
        .add<nn::Dense<float>>(4 * 5 * 5, 3, rng);
    using M = dp::ModelT<float, dp::Conv2dT<float, 2, 10, 10, 4, 4, 4, 1, 1, 1, 1, 2, 2>, dp::MaxPool2dT<float, 4, 10, 10, 2, 2>,
                         dp::FlattenT<float, 100>, dp::DenseT<float, 100, 3>>;
    const auto m = dp::to_model<M>(net);
    const Tensor<float> x = random_input(Shape{4, 2, 10, 10}, 15);
    CHECK(bit_differences(fixed_forward(*m, x), trained_forward(net, x)) == 0);
    using Symmetric = dp::ModelT<float, dp::Conv2dT<float, 2, 10, 10, 4, 4, 4, 1, 1, 2, 2>, dp::MaxPool2dT<float, 4, 11, 11, 2, 2>,
                                 dp::FlattenT<float, 100>, dp::DenseT<float, 100, 3>>;
    Symmetric sym;
    try {
        dp::load_model(sym, net);
        FAIL("a symmetric padding loaded a 'same' 4 x 4 convolution");
    } catch (const shape_error& e) {
        CHECK(std::string(e.what()).find("padding (top, bottom, left, right) (1, 2, 1, 2), fixed-size stride (1, 1) and padding (2, 2, 2, 2)") !=
              std::string::npos);
    }

    nn::Sequential<float> net1;
    net1.add<nn::Conv1d<float>>(3, 5, 4, rng, opts(1, 0, true)).add<nn::Flatten<float>>().add<nn::Dense<float>>(5 * 12, 2, rng);
    using M1 = dp::ModelT<float, dp::Conv1dT<float, 3, 12, 5, 4, 1, 1, 2>, dp::FlattenT<float, 60>, dp::DenseT<float, 60, 2>>;
    const Tensor<float> x1 = random_input(Shape{3, 3, 12}, 16);
    CHECK(bit_differences(fixed_forward(*dp::to_model<M1>(net1), x1), trained_forward(net1, x1)) == 0);
}

namespace {
/// The deployed max pool L and the trained max_pool2d (kernel k, stride s) on one sample x,
/// compared bit for bit on every instruction set this CPU runs.
template <class L>
void check_max_pool_bits(const std::vector<float>& x, Size2 k, Size2 s) {
    Tape<float> t;
    const Tensor<float> xt(Shape{1, L::channels, L::in_h, L::in_w}, x.data(), x.size());
    const Tensor<float> want = max_pool2d(t.constant(xt), k, s).value();
    REQUIRE(want.size() == L::out_size);
    const L layer;
    for (simd::isa i : {simd::isa::scalar, simd::isa::avx2, simd::isa::avx512, simd::isa::neon}) {
        if (!simd::isa_supported(i)) continue;
        CAPTURE(simd::isa_name(i));
        std::vector<float> got(L::out_size + 1, 7.0f);
        layer.forward(i, x.data(), got.data(), nullptr);
        CHECK(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0);
        CHECK(got.back() == 7.0f);
    }
}
} // namespace

TEST_CASE("deploy max pools keep the trained op's ties, signed zeros and NaN payloads bit for bit") {
    // Few distinct values (ties), zeros of both signs and NaNs of two payloads.
    Rng rng(17);
    std::vector<float> x(3 * 9 * 21);
    for (float& v : x) {
        const double u = rng.uniform();
        v = u < 0.06 ? std::nanf(u < 0.03 ? "1" : "2") : u < 0.2 ? (u < 0.13 ? 0.0f : -0.0f) : static_cast<float>(std::floor(rng.uniform(-3, 3)));
    }
    check_max_pool_bits<dp::MaxPool2dT<float, 3, 9, 21, 2, 2>>(x, 2, 2);                 // the SIMD kernel, odd sizes
    check_max_pool_bits<dp::MaxPool2dT<float, 3, 9, 21, 3, 2, 2, 2>>(x, Size2(3, 2), 2);  // three rows per window
    check_max_pool_bits<dp::MaxPool2dT<float, 3, 9, 21, 3, 3, 2, 2>>(x, 3, 2);           // the general unpadded loop
}

TEST_CASE("deploy::Pool2dT with padding: padded max and average pools, 1-D and 2-D, are bitwise the trained layers") {
    Rng rng(41);
    nn::Sequential<float> net;  // no ReLU before the max pool: windows of negative values next to the padding
    net.add<nn::Conv2d<float>>(2, 4, 3, rng)
        .add<nn::MaxPool2d<float>>(3, 2, 1)
        .add<nn::AvgPool2d<float>>(2, 1, 1)
        .add<nn::Flatten<float>>()
        .add<nn::Dense<float>>(4 * 5 * 5, 3, rng);
    using M = dp::ModelT<float, dp::Conv2dT<float, 2, 9, 9, 4, 3, 3>, dp::MaxPool2dT<float, 4, 7, 7, 3, 3, 2, 2, 1, 1>,
                         dp::AvgPool2dT<float, 4, 4, 4, 2, 2, 1, 1, 1, 1>, dp::FlattenT<float, 100>, dp::DenseT<float, 100, 3>>;
    const auto m = dp::to_model<M>(net);
    Tensor<float> x = random_input(Shape{4, 2, 9, 9}, 42);
    const std::vector<float> ref = trained_forward(net, x);
    const std::vector<float> got = counted_forward(*m, x, 4, ref.size());
    CHECK(bit_differences(got, ref) == 0);
    // The pools alone on a hand-made input: a corner window of the padded max pool sees only
    // its real taps (all negative here), and the padded average divides by the whole window.
    dp::MaxPool2dT<float, 1, 2, 2, 2, 2, 2, 2, 1, 1> max_pool;
    dp::AvgPool2dT<float, 1, 2, 2, 2, 2, 2, 2, 1, 1> avg_pool;
    const float in[4] = {-1.0f, -2.0f, -3.0f, -4.0f};
    float out[4];
    max_pool.forward(simd::detected_isa(), in, out, nullptr);
    CHECK(out[0] == -1.0f);
    CHECK(out[1] == -2.0f);
    CHECK(out[2] == -3.0f);
    CHECK(out[3] == -4.0f);
    avg_pool.forward(simd::detected_isa(), in, out, nullptr);
    CHECK(out[0] == -0.25f);
    CHECK(out[3] == -1.0f);

    nn::Sequential<float> net1;
    net1.add<nn::Conv1d<float>>(3, 5, 3, rng)
        .add<nn::MaxPool1d<float>>(3, 1, 1)
        .add<nn::AvgPool1d<float>>(3, 2, 1)
        .add<nn::Flatten<float>>()
        .add<nn::Dense<float>>(5 * 5, 2, rng);
    using M1 = dp::ModelT<float, dp::Conv1dT<float, 3, 12, 5, 3>, dp::MaxPool1dT<float, 5, 10, 3, 1, 1>, dp::AvgPool1dT<float, 5, 10, 3, 2, 1>,
                          dp::FlattenT<float, 25>, dp::DenseT<float, 25, 2>>;
    const Tensor<float> x1 = random_input(Shape{3, 3, 12}, 43);
    CHECK(bit_differences(fixed_forward(*dp::to_model<M1>(net1), x1), trained_forward(net1, x1)) == 0);

    using Unpadded = dp::ModelT<float, dp::Conv2dT<float, 2, 9, 9, 4, 3, 3>, dp::MaxPool2dT<float, 4, 7, 7, 3, 3, 2, 2>,
                                dp::AvgPool2dT<float, 4, 3, 3, 2, 2, 1, 1, 1, 1>, dp::FlattenT<float, 64>, dp::DenseT<float, 64, 3>>;
    CHECK_THROWS_WITH_AS(dp::to_model<Unpadded>(net),
                         "deploy::load_model: layer 1 (MaxPool2d(3x3, stride 2x2, pad 1x1)) vs fixed-size layer 1 (MaxPool): trained window "
                         "(3, 3) stride (2, 2) padding (1, 1), fixed-size window (3, 3) stride (2, 2) padding (0, 0)",
                         shape_error);
}

TEST_CASE("deploy::GroupedConv2dT: grouped and depthwise convolutions, 1-D and 2-D, are bitwise the trained layers") {
    Rng rng(51);
    nn::ConvOptions g2 = opts(1, 1);
    g2.groups = 2;
    nn::ConvOptions dw = opts(2, 0);
    dw.groups = 6;
    nn::Sequential<float> net;
    net.add<nn::Conv2d<float>>(4, 6, 3, rng, g2)
        .add<nn::ReLU<float>>()
        .add<nn::Conv2d<float>>(6, 6, 3, rng, dw)
        .add<nn::Flatten<float>>()
        .add<nn::Dense<float>>(6 * 4 * 4, 2, rng);
    using M = dp::ModelT<float, dp::GroupedConv2dT<float, 2, 4, 9, 9, 6, 3, 3, 1, 1, 1, 1>, dp::GroupedConv2dT<float, 6, 6, 9, 9, 6, 3, 3, 2, 2>,
                         dp::FlattenT<float, 96>, dp::DenseT<float, 96, 2>>;
    const auto m = dp::to_model<M>(net);
    const Tensor<float> x = random_input(Shape{3, 4, 9, 9}, 52);
    const std::vector<float> ref = trained_forward(net, x);
    const std::vector<float> got = counted_forward(*m, x, 3, ref.size());
    CHECK(bit_differences(got, ref) == 0);

    nn::ConvOptions g3 = opts(1, 0);
    g3.groups = 3;
    nn::Sequential<float> net1;
    net1.add<nn::Conv1d<float>>(6, 9, 3, rng, g3).add<nn::Flatten<float>>().add<nn::Dense<float>>(9 * 10, 1, rng);
    using M1 = dp::ModelT<float, dp::GroupedConv1dT<float, 3, 6, 12, 9, 3>, dp::FlattenT<float, 90>, dp::DenseT<float, 90, 1>>;
    const Tensor<float> x1 = random_input(Shape{2, 6, 12}, 53);
    CHECK(bit_differences(fixed_forward(*dp::to_model<M1>(net1), x1), trained_forward(net1, x1)) == 0);

    using Ungrouped = dp::ModelT<float, dp::Conv2dT<float, 4, 9, 9, 6, 3, 3, 1, 1, 1, 1>, dp::GroupedConv2dT<float, 6, 6, 9, 9, 6, 3, 3, 2, 2>,
                                 dp::FlattenT<float, 96>, dp::DenseT<float, 96, 2>>;
    CHECK_THROWS_WITH_AS(dp::to_model<Ungrouped>(net),
                         "deploy::load_model: layer 0 (Conv2d(4->6, 3x3, pad 1x1, groups 2)) vs fixed-size layer 0 (Conv2d): trained groups 2, "
                         "fixed-size groups 1 (a grouped convolution deploys as GroupedConv2dT)",
                         shape_error);
    using WrongChannels = dp::ModelT<float, dp::GroupedConv2dT<float, 2, 4, 9, 9, 8, 3, 3, 1, 1, 1, 1>,
                                     dp::GroupedConv2dT<float, 8, 8, 9, 9, 8, 3, 3, 2, 2>, dp::FlattenT<float, 128>, dp::DenseT<float, 128, 2>>;
    CHECK_THROWS_WITH_AS(dp::to_model<WrongChannels>(net),
                         "deploy::load_model: layer 0 (Conv2d(4->6, 3x3, pad 1x1, groups 2)) vs fixed-size layer 0 (Conv2d): trained weight "
                         "(6, 2, 3, 3), fixed-size weight (8, 2, 3, 3)",
                         shape_error);
}

TEST_CASE("deploy::Conv2dT, Conv1dT and GroupedConv2dT with dilation are bitwise the trained layers") {
    Rng rng(61);
    nn::ConvOptions d2 = opts(1, 2);
    d2.dilation = 2;
    nn::ConvOptions gd = opts(2, 0);  // grouped, strided, dilated 2 rows by 1 column
    gd.groups = 2;
    gd.dilation = Size2(2, 1);
    nn::Sequential<float> net;
    net.add<nn::Conv2d<float>>(2, 4, 3, rng, d2)
        .add<nn::ReLU<float>>()
        .add<nn::Conv2d<float>>(4, 4, 3, rng, gd)
        .add<nn::Flatten<float>>()
        .add<nn::Dense<float>>(4 * 4 * 5, 2, rng);
    // 11 x 11 padded by 2 under a 5 x 5 dilated window: 11 x 11; then (11 - 5) / 2 + 1 = 4 rows, (11 - 3) / 2 + 1 = 5 columns.
    using M = dp::ModelT<float, dp::Conv2dT<float, 2, 11, 11, 4, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2>,
                         dp::GroupedConv2dT<float, 2, 4, 11, 11, 4, 3, 3, 2, 2, 0, 0, 0, 0, 2, 1>, dp::FlattenT<float, 80>, dp::DenseT<float, 80, 2>>;
    using L1 = std::tuple_element_t<1, M::layers_type>::group_type;
    static_assert(std::tuple_element_t<0, M::layers_type>::OH == 11 && L1::OH == 4 && L1::OW == 5, "dilated sizes");
    const auto m = dp::to_model<M>(net);
    const Tensor<float> x = random_input(Shape{3, 2, 11, 11}, 62);
    const std::vector<float> ref = trained_forward(net, x);
    CHECK(bit_differences(counted_forward(*m, x, 3, ref.size()), ref) == 0);

    // 'same' with a dilated kernel: 3 taps 3 apart pad 3 on each side.
    nn::ConvOptions d3 = opts(1, 0, true);
    d3.dilation = 3;
    nn::Sequential<float> net1;
    net1.add<nn::Conv1d<float>>(3, 5, 3, rng, d3).add<nn::Tanh<float>>().add<nn::Flatten<float>>().add<nn::Dense<float>>(5 * 16, 1, rng);
    using M1 = dp::ModelT<float, dp::Conv1dT<float, 3, 16, 5, 3, 1, 3, 3, 3>, dp::FlattenT<float, 80>, dp::DenseT<float, 80, 1>>;
    const Tensor<float> x1 = random_input(Shape{4, 3, 16}, 63);
    const std::vector<float> ref1 = trained_forward(net1, x1);
    CHECK(bit_differences(counted_forward(*dp::to_model<M1>(net1), x1, 4, ref1.size()), ref1) == 0);

    // A dilated layer loaded into an undilated one (of the same output size) is refused by name.
    using Undilated = dp::ModelT<float, dp::Conv2dT<float, 2, 11, 11, 4, 3, 3, 1, 1, 2, 2, 2, 2>,
                                 dp::GroupedConv2dT<float, 2, 4, 13, 13, 4, 3, 3, 2, 2, 0, 0, 0, 0, 2, 1>, dp::FlattenT<float, 120>,
                                 dp::DenseT<float, 120, 2>>;
    CHECK_THROWS_WITH_AS(dp::to_model<Undilated>(net),
                         "deploy::load_model: layer 0 (Conv2d(2->4, 3x3, pad 2x2, dilation 2x2)) vs fixed-size layer 0 (Conv2d): trained "
                         "dilation (2, 2), fixed-size dilation (1, 1)",
                         shape_error);
    using Undilated1 = dp::ModelT<float, dp::Conv1dT<float, 3, 16, 5, 3, 1, 3, 3>, dp::FlattenT<float, 100>, dp::DenseT<float, 100, 1>>;
    CHECK_THROWS_WITH_AS(dp::to_model<Undilated1>(net1), "deploy::load_model: layer 0 (Conv1d(3->5, 3, same, dilation 3)) vs fixed-size layer 0 (Conv2d): "
                                                         "trained dilation (1, 3), fixed-size dilation (1, 1)",
                         shape_error);
}

/// A recurrent layer (LSTM or GRU, hidden 64) with a dense head: the whole sequence, every step's
/// outputs, and ten streaming steps of sequence b with a caller-held state, against the trained model.
template <class Layer, class Fixed>
void check_recurrent(const Tensor<float>& x, std::size_t b) {
    nn::Sequential<float> net = make_recurrent<Layer>(false);
    using M = dp::ModelT<float, Fixed, dp::DenseT<float, 64, 1>>;
    const auto m = dp::to_model<M>(net);
    const std::vector<float> ref = trained_forward(net, x);
    CHECK(bit_differences(fixed_forward(*m, x), ref) == 0);
    float state[Fixed::state_size] = {};
    float y[dp::DenseT<float, 64, 1>::out_buffer] = {};  // a layer writes whole vectors
    tapir_test::AllocationScope scope;
    for (std::size_t t = 0; t < 10; ++t) m->template layer<0>().step(x.data() + b * 80 + t * 8, state);
    m->template layer<1>().forward(m->isa(), state, y, nullptr);
    CHECK(scope.count() == 0);
    CHECK(y[0] == ref[b]);

    nn::Sequential<float> seq = make_recurrent<Layer>(true);
    using S = dp::ModelT<float, dp::RecurrentT<float, Fixed::cell, 8, 64, 10, true>, dp::FlattenT<float, 640>, dp::DenseT<float, 640, 1>>;
    CHECK(bit_differences(fixed_forward(*dp::to_model<S>(seq), x), trained_forward(seq, x)) == 0);
}

TEST_CASE("deploy::LstmT and GruT: whole sequences and streaming steps are bitwise the trained layers") {
    const Tensor<float> x = random_input(Shape{4, 10, 8}, 7);
    SUBCASE("LSTM") { check_recurrent<nn::LSTM<float>, dp::LstmT<float, 8, 64, 10>>(x, 0); }
    SUBCASE("GRU") { check_recurrent<nn::GRU<float>, dp::GruT<float, 8, 64, 10>>(x, 1); }
}

/// The trained recurrent net of make_recurrent with a (B, T) mask: the layer with the mask, then the rest.
std::vector<float> trained_masked(nn::Sequential<float>& net, const Tensor<float>& x, const Tensor<float>& mask) {
    Tape<float> tape;
    NoGradGuard<float> guard(tape);
    net.eval();
    Var<float> y = static_cast<nn::RecurrentLayer<float>&>(net.at(0)).forward(tape.view(x), tape.view(mask));
    for (std::size_t i = 1; i < net.size(); ++i) y = net.at(i)(y);
    return std::vector<float>(y.data(), y.data() + y.size());
}

/// Variable-length sequences (a mask with holes, a prefix, an empty one and a full one) through the
/// last-step and every-step models, against the trained layer with the same mask.
template <class Layer, class Fixed>
void check_masked(const Tensor<float>& x) {
    constexpr std::size_t B = 4, T = 10;
    Tensor<float> mask(Shape{B, T});
    for (std::size_t t = 0; t < T; ++t) {
        mask[0 * T + t] = t < 6 && t != 2 ? 1.0f : 0.0f;
        mask[1 * T + t] = t < 3 ? 1.0f : 0.0f;
        mask[2 * T + t] = 0.0f;
        mask[3 * T + t] = 1.0f;
    }
    nn::Sequential<float> net = make_recurrent<Layer>(false);
    using M = dp::ModelT<float, Fixed, dp::DenseT<float, 64, 1>>;
    const auto m = dp::to_model<M>(net);
    const std::vector<float> ref = trained_masked(net, x, mask);
    const std::vector<float> unmasked = trained_forward(net, x);
    nn::Sequential<float> seq = make_recurrent<Layer>(true);
    using S = dp::ModelT<float, dp::RecurrentT<float, Fixed::cell, 8, 64, 10, true>, dp::FlattenT<float, 640>, dp::DenseT<float, 640, 1>>;
    const auto ms = dp::to_model<S>(seq);
    const std::vector<float> ref_seq = trained_masked(seq, x, mask);
    for (std::size_t b = 0; b < B; ++b) {
        float y = 0.0f, ys = 0.0f;
        {
            tapir_test::AllocationScope scope;
            m->forward(x.data() + b * T * 8, mask.data() + b * T, &y);
            ms->forward(x.data() + b * T * 8, mask.data() + b * T, &ys);
            CHECK(scope.count() == 0);
        }
        CHECK(std::memcmp(&y, &ref[b], sizeof(float)) == 0);
        CHECK(std::memcmp(&ys, &ref_seq[b], sizeof(float)) == 0);
        if (b < 3) CHECK(y != unmasked[b]);  // the mask changes the result
        else CHECK(std::memcmp(&y, &unmasked[b], sizeof(float)) == 0);
    }
    // The last state of a sequence with holes is the state of the present steps run in a row.
    float state[Fixed::state_size] = {};
    const std::size_t present[] = {0, 1, 3, 4, 5};  // mask row 0
    for (const std::size_t t : present) m->template layer<0>().step(x.data() + t * 8, state);
    float h[64];
    float masked_state[Fixed::state_size];
    m->template layer<0>().forward_masked(m->isa(), x.data(), mask.data(), h, masked_state);
    CHECK(std::memcmp(h, state, sizeof(h)) == 0);
}

TEST_CASE("deploy::LstmT and GruT: masked (variable-length) sequences are bitwise the trained layers with the mask") {
    const Tensor<float> x = random_input(Shape{4, 10, 8}, 17);
    SUBCASE("LSTM") { check_masked<nn::LSTM<float>, dp::LstmT<float, 8, 64, 10>>(x); }
    SUBCASE("GRU") { check_masked<nn::GRU<float>, dp::GruT<float, 8, 64, 10>>(x); }
}

TEST_CASE("deploy::DeepSetT: a particle flow network with a mask is bitwise the trained one") {
    Rng rng(21);
    for (const bool mean : {false, true}) {
        nn::DeepSet<float> pfn(4, {32, 32, 16}, {32, 1}, rng, Activation::relu, mean ? nn::SetPooling::mean : nn::SetPooling::sum);
        constexpr std::size_t B = 3, N = 20;
        const Tensor<float> x = random_input(Shape{B, N, 4}, 8);
        Tensor<float> mask(Shape{B, N});
        for (std::size_t b = 0; b < B; ++b)
            for (std::size_t i = 0; i < N; ++i) mask[b * N + i] = i < 7 + 5 * b && i != 3 ? 1.0f : 0.0f;
        Tape<float> tape;
        NoGradGuard<float> guard(tape);
        pfn.eval();
        const Var<float> ref = pfn.forward(tape.view(x), tape.view(mask));
        using Sum = dp::DeepSetT<float, N, dp::Mlp<float, 4, 32, 32, 16>, dp::Mlp<float, 16, 32, 1>, false>;
        using Mean = dp::DeepSetT<float, N, dp::Mlp<float, 4, 32, 32, 16>, dp::Mlp<float, 16, 32, 1>, true>;
        auto check = [&](auto& fixed) {
            dp::load_model(fixed, pfn);
            for (std::size_t b = 0; b < B; ++b) {
                float y = 0.0f;
                tapir_test::AllocationScope scope;
                fixed.forward(x.data() + b * N * 4, mask.data() + b * N, &y);
                CHECK(scope.count() == 0);
                CHECK(std::memcmp(&y, ref.data() + b, sizeof(float)) == 0);
            }
        };
        if (mean) {
            auto fixed = std::make_unique<Mean>();
            check(*fixed);
            auto wrong = std::make_unique<Sum>();
            CHECK_THROWS_WITH(dp::load_model(*wrong, pfn), "deploy::load_model: the trained DeepSet pools by mean, the fixed-size one by sum");
        } else {
            auto fixed = std::make_unique<Sum>();
            check(*fixed);
        }
    }
}

TEST_CASE("deploy::EnergyFlowT: an energy flow network, with a mask and without, is bitwise the trained one") {
    Rng rng(22);
    nn::EnergyFlowNetwork<float> efn(2, {32, 32, 16}, {32, 1}, rng);
    constexpr std::size_t B = 3, N = 20;
    Tensor<float> x = random_input(Shape{B, N, 3}, 23);
    Tensor<float> mask(Shape{B, N});
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t i = 0; i < N; ++i) {
            x[(b * N + i) * 3] = std::fabs(x[(b * N + i) * 3]) * 0.1f;  // energy fractions
            if (i % 4 == 2) x[(b * N + i) * 3] = 0.0f;                   // padding without a mask
            mask[b * N + i] = i < 6 + 6 * b && i != 1 ? 1.0f : 0.0f;
        }
    Tape<float> tape;
    NoGradGuard<float> guard(tape);
    efn.eval();
    const Var<float> ref_masked = efn.forward(tape.view(x), tape.view(mask));
    const Var<float> ref_all = efn.forward(tape.view(x));
    using Efn = dp::EnergyFlowT<float, N, dp::Mlp<float, 2, 32, 32, 16>, dp::Mlp<float, 16, 32, 1>>;
    static_assert(Efn::features == 3 && Efn::angular == 2 && Efn::latent == 16, "EnergyFlowT sizes");
    auto fixed = std::make_unique<Efn>();
    dp::load_model(*fixed, efn);
    for (std::size_t b = 0; b < B; ++b) {
        float y_masked = 0.0f, y_all = 0.0f;
        {
            tapir_test::AllocationScope scope;
            fixed->forward(x.data() + b * N * 3, mask.data() + b * N, &y_masked);
            fixed->forward(x.data() + b * N * 3, &y_all);
            CHECK(scope.count() == 0);
        }
        CHECK(std::memcmp(&y_masked, ref_masked.data() + b, sizeof(float)) == 0);
        CHECK(std::memcmp(&y_all, ref_all.data() + b, sizeof(float)) == 0);
        CHECK(y_masked != y_all);  // the mask matters: the two differ
    }
    // Every particle masked: rho of a zero latent vector, as the trained network gives.
    const Tensor<float> none(Shape{1, N});
    const Tensor<float> first(Shape{1, N, 3}, x.data(), N * 3);
    const Var<float> ref_none = efn.forward(tape.view(first), tape.view(none));
    float y_none = 1.0f;
    fixed->forward(x.data(), none.data(), &y_none);
    CHECK(std::memcmp(&y_none, ref_none.data(), sizeof(float)) == 0);

    using WrongAngles = dp::EnergyFlowT<float, N, dp::Mlp<float, 3, 32, 32, 16>, dp::Mlp<float, 16, 32, 1>>;
    CHECK_THROWS_WITH_AS(dp::load_model(*std::make_unique<WrongAngles>(), efn),
                         "deploy::load_model: the trained EnergyFlowNetwork takes particles of 3 features (z and 2 angles), the fixed-size "
                         "one 4 (z and 3 angles)",
                         shape_error);
    using WrongLatent = dp::EnergyFlowT<float, N, dp::Mlp<float, 2, 32, 32, 8>, dp::Mlp<float, 8, 32, 1>>;
    CHECK_THROWS_WITH_AS(dp::load_model(*std::make_unique<WrongLatent>(), efn),
                         "deploy::load_model: EnergyFlowNetwork phi: deploy::load: the trained model is 2 -> 32 (relu) -> 32 (relu) -> 16 "
                         "(relu) but the fixed-size model is 2 -> 32 -> 32 -> 8",
                         shape_error);
}

TEST_CASE("deploy::load_model folds a BatchNorm into the Dense before it (within 1e-6 of the unfolded model)") {
    Rng rng(31);
    nn::Sequential<float> net;
    net.add<nn::Conv2d<float>>(1, 4, 3, rng).add<nn::ReLU<float>>().add<nn::Flatten<float>>();
    net.add<nn::Dense<float>>(4 * 6 * 6, 8, rng).add<nn::BatchNorm<float>>(8).add<nn::Tanh<float>>().add<nn::Dense<float>>(8, 1, rng);
    for (const std::size_t i : {std::size_t(4)}) {
        auto* bn = &static_cast<nn::BatchNorm<float>&>(net.at(i));
        for (std::size_t j = 0; j < bn->features(); ++j) {
            bn->running_mean[j] = 0.1f * static_cast<float>(j) - 0.2f;
            bn->running_var[j] = 0.5f + 0.25f * static_cast<float>(j);
            bn->weight.value[j] = 1.5f - 0.1f * static_cast<float>(j);
            bn->bias.value[j] = 0.05f * static_cast<float>(j);
        }
    }
    using M = dp::ModelT<float, dp::Conv2dT<float, 1, 8, 8, 4, 3, 3>, dp::FlattenT<float, 144>, dp::DenseT<float, 144, 8>,
                         dp::DenseT<float, 8, 1>>;
    const Tensor<float> x = random_input(Shape{9, 1, 8, 8}, 9);
    const std::vector<float> ref = trained_forward(net, x);
    const std::vector<float> got = fixed_forward(*dp::to_model<M>(net), x);
    CHECK(max_rel(got, ref) < 1e-6);
}

TEST_CASE("deploy::load_model from a model file equals the trained model") {
    nn::Sequential<float> net = make_cnn();
    const std::string path = (std::filesystem::temp_directory_path() / "tapir_test_deploy_model_cnn.tpr").string();
    nn::save_model(path, net);
    nn::Sequential<float> architecture = make_cnn();
    Rng rng(99);
    for (auto& v : static_cast<nn::Conv2d<float>&>(architecture.at(0)).weight.value) v = static_cast<float>(rng.normal());
    const auto m = dp::to_model<Cnn>(path, architecture);
    std::remove(path.c_str());
    const Tensor<float> x = random_input(Shape{2, 1, 40, 40}, 10);
    CHECK(bit_differences(fixed_forward(*m, x), trained_forward(net, x)) == 0);
}

TEST_CASE("deploy::load_model names the layer and both shapes when they disagree") {
    nn::Sequential<float> net = make_cnn();
    using WrongChannels = dp::ModelT<float, dp::Conv2dT<float, 1, 40, 40, 16, 3, 3, 1, 1, 1, 1>, dp::MaxPool2dT<float, 16, 40, 40, 2, 2>,
                                     dp::Conv2dT<float, 16, 20, 20, 16, 3, 3>, dp::AvgPool2dT<float, 16, 18, 18, 2, 2>,
                                     dp::Conv2dT<float, 16, 9, 9, 8, 3, 3, 2, 2, 1, 1>, dp::FlattenT<float, 200>,
                                     dp::DenseT<float, 200, 10>, dp::DenseT<float, 10, 1>>;
    CHECK_THROWS_WITH_AS(dp::to_model<WrongChannels>(net),
                         "deploy::load_model: layer 0 (Conv2d(1->8, 3x3, same)) vs fixed-size layer 0 (Conv2d): trained weight (8, 1, 3, 3), "
                         "fixed-size weight (16, 1, 3, 3)",
                         shape_error);
    using WrongStride = dp::ModelT<float, dp::Conv2dT<float, 1, 40, 40, 8, 3, 3, 1, 1, 1, 1>, dp::MaxPool2dT<float, 8, 40, 40, 2, 2>,
                                   dp::Conv2dT<float, 8, 20, 20, 16, 3, 3>, dp::AvgPool2dT<float, 16, 18, 18, 2, 2>,
                                   dp::Conv2dT<float, 16, 9, 9, 8, 3, 3, 1, 1, 1, 1>, dp::FlattenT<float, 648>,
                                   dp::DenseT<float, 648, 10>, dp::DenseT<float, 10, 1>>;
    CHECK_THROWS_WITH_AS(dp::to_model<WrongStride>(net),
                         "deploy::load_model: layer 6 (Conv2d(16->8, 3x3, stride 2x2, pad 1x1)) vs fixed-size layer 4 (Conv2d): trained stride "
                         "(2, 2) and padding (top, bottom, left, right) (1, 1, 1, 1), fixed-size stride (1, 1) and padding (1, 1, 1, 1)",
                         shape_error);
    using TooShort = dp::ModelT<float, dp::Conv2dT<float, 1, 40, 40, 8, 3, 3, 1, 1, 1, 1>, dp::FlattenT<float, 8 * 40 * 40>>;
    CHECK_THROWS_WITH_AS(dp::to_model<TooShort>(net),
                         "deploy::load_model: the trained model has 8 deployable layers (Conv2d, MaxPool2d, Conv2d, AvgPool2d, Conv2d, "
                         "Flatten, Dense, Dense) but the fixed-size model has 2",
                         shape_error);
    nn::Sequential<float> lstm = make_recurrent<nn::LSTM<float>>(false);
    using WrongHidden = dp::ModelT<float, dp::LstmT<float, 8, 32, 10>, dp::DenseT<float, 32, 1>>;
    CHECK_THROWS_WITH_AS(dp::to_model<WrongHidden>(lstm),
                         "deploy::load_model: layer 0 (LSTM(8 -> 64)) vs fixed-size layer 0 (LSTM): trained weight_ih (256, 8), fixed-size (128, 8)",
                         shape_error);
}

TEST_CASE("deploy::ModelT is thread-safe: threads sharing one CNN compute what one thread does") {
    nn::Sequential<float> net = make_cnn();
    const auto cnn = dp::to_model<Cnn>(net);
    const Tensor<float> x = random_input(Shape{8, 1, 40, 40}, 12);
    const std::vector<float> one = fixed_forward(*cnn, x);
    std::vector<std::vector<float>> out(4);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < 4; ++t) threads.emplace_back([&, t] { out[t] = fixed_forward(*cnn, x); });
    for (auto& t : threads) t.join();
    for (const auto& o : out) CHECK(bit_differences(o, one) == 0);
}
