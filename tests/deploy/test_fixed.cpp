// Fixed-size inference (deploy/fixed.hpp, deploy/convert.hpp): outputs against the dynamic model
// (bitwise on the instruction set the dynamic kernels use, within 1e-6 relative on every other),
// batch-1 against batched, zero heap allocations, concurrent use, conversion from Sequential and
// from model files, BatchNorm folding, and every error path.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <tapir/deploy/convert.hpp>
#include <tapir/deploy/fixed.hpp>
#include <tapir/io/model_file.hpp>

#include "deploy/deploy_fixture.hpp"
#include "support/alloc_counter.hpp"

using namespace tapir;
using Isa = simd::isa;
using deploy::Status;
using deploy_test::count_different;
using deploy_test::max_rel_diff;

namespace {

constexpr Isa all_isas[] = {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon};

/// Whether kernels of `isa` round like the dynamic model's default kernels (both fused or both not).
bool same_rounding(Isa isa) { return (isa == Isa::scalar) == (deploy_test::matching_isa() == Isa::scalar); }

/// Runs a random MLP through the dynamic model and the fixed-size model M on every supported ISA.
template <class M, class T>
void check_random_mlp(const std::vector<std::size_t>& sizes, const std::vector<Activation>& acts, std::uint64_t seed) {
    nn::Sequential<T> net = deploy_test::random_mlp<T>(sizes, acts, seed);
    const std::size_t n = 37;  // not a multiple of the 4-row tiles
    const Tensor<T> x = deploy_test::random_inputs<T>(n, sizes.front(), seed + 1);
    const std::vector<T> ref = deploy_test::dynamic_forward(net, x);
    const auto m = deploy::to_fixed<M>(net);
    const deploy::ModelSpec<T> spec = deploy::spec_from(net);
    CAPTURE(spec.describe());
    for (const Isa isa : all_isas) {
        if (m->set_isa(isa) != Status::ok) continue;
        const std::string kernels = simd::isa_name(isa);
        CAPTURE(kernels);
        std::vector<T> y(n * M::outputs), y1(n * M::outputs);
        m->forward(x.data(), y.data(), n);
        for (std::size_t i = 0; i < n; ++i) m->forward(x.data() + i * M::inputs, y1.data() + i * M::outputs);
        CHECK(count_different(y, y1) == 0);  // batch-1 and batched compute alike
        // The dynamic model on the same instruction set: bitwise the same numbers.
        const std::vector<T> same = deploy_test::dynamic_forward_on(isa, net, x);
        if (!same.empty()) CHECK(count_different(y, same) == 0);
        // Against the dynamic model on its default kernels: rounding differences only, within
        // 1e-6 when both fuse multiply-adds or neither does (fused against unfused: 2e-6).
        const double rel = max_rel_diff(y, ref);
        MESSAGE(spec.describe() << " [" << std::string(sizeof(T) == 4 ? "float" : "double") << ", " << kernels
                                << "]: max relative difference to the dynamic model on its default kernels " << rel);
        CHECK(rel <= (sizeof(T) == 4 ? (same_rounding(isa) ? 1e-6 : 2e-6) : 1e-14));
    }
}

} // namespace

static_assert(deploy::Mlp<float, 8, 24, 16, 8, 1>::inputs == 8 && deploy::Mlp<float, 8, 24, 16, 8, 1>::outputs == 1 &&
                  deploy::Mlp<float, 8, 24, 16, 8, 1>::num_layers == 4,
              "compile-time sizes");
static_assert(deploy::Dense<float, 3, 24>::out_padded == 32 && deploy::Dense<double, 3, 9>::out_padded == 16,
              "rows padded to 64 bytes");
static_assert(simd::gemm_k_block(256, 256) == 256 && simd::gemm_k_block(300, 256) == 150 &&
                  simd::gemm_k_block(513, 256) == 171 && simd::gemm_k_block(513, 512) == 257,
              "simd::gemm's K blocks");

TEST_CASE("fixed-size MLPs equal the dynamic model on random networks (all activations, float and double)") {
    using A = Activation;
    check_random_mlp<deploy::Mlp<float, 8, 64, 64, 64, 1>, float>({8, 64, 64, 64, 1}, {A::relu, A::relu, A::relu, A::none}, 11);
    // K = 300 > 256: the dynamic GEMM sums two blocks of 150 on some kernels; the fixed path must too.
    check_random_mlp<deploy::Mlp<float, 5, 24, 300, 16, 3>, float>({5, 24, 300, 16, 3}, {A::relu, A::tanh, A::elu, A::sigmoid}, 12);
    check_random_mlp<deploy::Mlp<float, 3, 7, 1>, float>({3, 7, 1}, {A::leaky_relu, A::softplus}, 13);
    check_random_mlp<deploy::Mlp<double, 6, 33, 17, 2>, double>({6, 33, 17, 2}, {A::tanh, A::sigmoid, A::none}, 14);
}

TEST_CASE("Higgs classifier: the fixed-size model reproduces the dynamic model on the test events") {
    const deploy_test::Higgs& h = deploy_test::higgs();
    using Net = deploy::Mlp<float, 8, 24, 16, 8, 1>;
    const auto m = deploy::to_fixed<Net>(h.spec);  // input standardisation inside
    CHECK(m->input_scaling());
    const std::size_t n = h.y_test.size();
    nn::Sequential<float> net = h.net;
    const Tensor<float> z = h.scaler.transform(h.x_test);
    for (const Isa isa : all_isas) {
        if (m->set_isa(isa) != Status::ok) continue;
        const std::string kernels = simd::isa_name(isa);
        CAPTURE(kernels);
        std::vector<float> y(n);
        m->forward(h.x_test.data(), y.data(), n);
        const std::vector<float> same = deploy_test::dynamic_forward_on(isa, net, z);
        const double rel = max_rel_diff(y, h.p_test);
        MESSAGE("Higgs classifier, fixed-size [" << kernels << "]: " << count_different(y, same) << " of " << n
                                                 << " outputs differ from the dynamic model on the same kernels; max relative "
                                                    "difference to its default kernels "
                                                 << rel);
        if (!same.empty()) CHECK(count_different(y, same) == 0);
        if (isa == deploy_test::matching_isa()) CHECK(count_different(y, h.p_test) == 0);
        CHECK(rel <= (same_rounding(isa) ? 1e-6 : 2e-6));  // fused vs unfused rounding, relative to tiny probabilities
        CHECK((*m)(h.x_test.data() + 8 * 5) == y[5]);
    }
    // The classifier learned something: the fixed model is not comparing two constant functions.
    CHECK(deploy_test::auc(h.p_test, h.y_test) > 0.7);
}

TEST_CASE("ModelSpec::forward is the reference order: equal to the fixed-size model with fused multiply-adds") {
    if (deploy_test::matching_isa() == Isa::scalar) return;  // the reference is fused; scalar is not
    using A = Activation;
    nn::Sequential<float> net = deploy_test::random_mlp<float>({4, 40, 300, 5}, {A::tanh, A::relu, A::sigmoid}, 21);
    const auto spec = deploy::spec_from(net);
    const auto m = deploy::to_fixed<deploy::Mlp<float, 4, 40, 300, 5>>(spec);
    REQUIRE(m->set_isa(deploy_test::matching_isa()) == Status::ok);
    const Tensor<float> x = deploy_test::random_inputs<float>(9, 4, 22);
    std::vector<float> a(45), b(45);
    m->forward(x.data(), a.data(), 9);
    spec.forward(x.data(), b.data(), 9, m->sum_block(m->isa()));
    CHECK(count_different(a, b) == 0);
}

TEST_CASE("forward allocates nothing and is usable from several threads at once") {
    using A = Activation;
    nn::Sequential<float> net = deploy_test::random_mlp<float>({8, 64, 64, 64, 1}, {A::relu, A::relu, A::relu, A::sigmoid}, 31);
    using Net = deploy::Mlp<float, 8, 64, 64, 64, 1>;
    const std::unique_ptr<const Net> m = deploy::to_fixed<Net>(net);
    const std::size_t n = 64;
    const Tensor<float> x = deploy_test::random_inputs<float>(n, 8, 32);
    std::vector<float> y(n), ref(n);
    m->forward(x.data(), ref.data(), n);
    {
        tapir_test::AllocationScope scope;
        for (std::size_t i = 0; i < n; ++i) m->forward(x.data() + 8 * i, y.data() + i);
        m->forward(x.data(), y.data(), n);
        float s = 0.0f;
        for (std::size_t i = 0; i < n; ++i) s += (*m)(x.data() + 8 * i);
        CHECK(s > 0.0f);
        CHECK(scope.count() == 0);
    }
    CHECK(count_different(y, ref) == 0);

    // Two threads share the const model; each writes its own half.
    std::vector<float> yt(n);
    std::thread t1([&] {
        for (int rep = 0; rep < 50; ++rep) m->forward(x.data(), yt.data(), n / 2);
    });
    std::thread t2([&] {
        for (int rep = 0; rep < 50; ++rep)
            for (std::size_t i = n / 2; i < n; ++i) m->forward(x.data() + 8 * i, yt.data() + i);
    });
    t1.join();
    t2.join();
    CHECK(count_different(yt, ref) == 0);
}

TEST_CASE("load reports bad layers with a Status and leaves the model unchanged") {
    using Net = deploy::Mlp<float, 3, 4, 2>;
    Net m;
    std::vector<float> w0(12, 0.5f), b0(4, 0.25f), w1(8, -1.0f), b1(2, 0.0f);
    deploy::LayerView<float> v[2];
    v[0] = {w0.data(), b0.data(), 3, 4, Activation::relu, 0.0f};
    v[1] = {w1.data(), b1.data(), 4, 2, Activation::none, 0.0f};
    REQUIRE(m.load(v, 2) == Status::ok);
    const float x[3] = {1.0f, 2.0f, 3.0f};
    float y[2];
    m.forward(x, y);
    // relu(0.5 * 6 + 0.25) = 3.25 in each of 4 units, then -4 * 3.25 = -13.
    CHECK(y[0] == -13.0f);
    CHECK(y[1] == -13.0f);

    CHECK(m.load(v, 1) == Status::layer_count);
    CHECK(m.load(nullptr, 2) == Status::null_pointer);
    deploy::LayerView<float> bad[2] = {v[0], v[1]};
    bad[1].out = 3;
    CHECK(m.load(bad, 2) == Status::shape);
    bad[1] = v[1];
    bad[1].weight = nullptr;
    CHECK(m.load(bad, 2) == Status::null_pointer);
    std::vector<float> w1nan = w1;
    w1nan[5] = std::nanf("");
    bad[1] = v[1];
    bad[1].weight = w1nan.data();
    std::vector<float> w0changed(12, 9.0f);
    bad[0].weight = w0changed.data();
    CHECK(m.load(bad, 2) == Status::non_finite);
    m.forward(x, y);
    CHECK(y[0] == -13.0f);  // layer 0 was not replaced by the failed load
    CHECK(std::string(deploy::status_message(Status::non_finite)).find("NaN") != std::string::npos);

    const double mean[3] = {0, 0, 0}, zero_scale[3] = {1, 0, 1}, nan_mean[3] = {0, std::nan(""), 0};
    CHECK(m.set_input_scaling(mean, zero_scale) == Status::bad_scale);
    CHECK(m.set_input_scaling(nan_mean, zero_scale) == Status::non_finite);
    CHECK_FALSE(m.input_scaling());
    CHECK(m.set_isa(Isa::scalar) == Status::ok);
    CHECK(m.isa() == Isa::scalar);
#if !defined(__aarch64__)
    CHECK(m.set_isa(Isa::neon) == Status::unsupported_isa);
#endif
}

TEST_CASE("conversion errors name the layer and both architectures") {
    using A = Activation;
    nn::Sequential<float> net = deploy_test::random_mlp<float>({8, 24, 1}, {A::relu, A::sigmoid}, 41);
    try {
        deploy::to_fixed<deploy::Mlp<float, 8, 16, 1>>(net);
        FAIL("expected shape_error");
    } catch (const shape_error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("8 -> 24 (relu) -> 1 (sigmoid)") != std::string::npos);
        CHECK(msg.find("8 -> 16 -> 1") != std::string::npos);
    }
    using Deeper = deploy::Mlp<float, 8, 24, 1, 1>;
    CHECK_THROWS_AS(deploy::to_fixed<Deeper>(net), shape_error);

    Rng rng(1);
    nn::Sequential<float> sm;
    sm.add<nn::Dense<float>>(4, 3, rng).add<nn::Softmax<float>>();
    try {
        deploy::spec_from(sm);
        FAIL("expected value_error");
    } catch (const value_error& e) {
        CHECK(std::string(e.what()).find("Softmax") != std::string::npos);
    }
    nn::Sequential<float> act_first;
    act_first.add<nn::Tanh<float>>().add<nn::Dense<float>>(4, 3, rng);
    CHECK_THROWS_WITH_AS(deploy::spec_from(act_first), doctest::Contains("layer 0 (Tanh)"), value_error);
    nn::Sequential<float> two_acts;
    two_acts.add<nn::Dense<float>>(4, 3, rng).add<nn::ReLU<float>>().add<nn::Sigmoid<float>>();
    CHECK_THROWS_WITH_AS(deploy::spec_from(two_acts), doctest::Contains("layer 2 (Sigmoid)"), value_error);
    nn::Sequential<float> empty;
    CHECK_THROWS_AS(deploy::spec_from(empty), value_error);

    deploy::ModelSpec<float> spec;
    CHECK_THROWS_WITH_AS(spec.add(3, 2, std::vector<float>(5), {}), doctest::Contains("expected 3 x 2 = 6"), shape_error);
    spec.layers.clear();
    spec.add(3, 2, std::vector<float>(6, 1.0f), {1.0f, 2.0f});
    CHECK_THROWS_WITH_AS(spec.add(3, 1, std::vector<float>(3), {}), doctest::Contains("takes 3 inputs but layer 0 gives 2"),
                         shape_error);
    spec.layers.pop_back();
    CHECK_THROWS_AS(spec.set_input_scaling({0.0, 0.0, 0.0}, {1.0, -1.0, 1.0}), value_error);
    CHECK_THROWS_AS(spec.set_input_scaling({0.0, 0.0}, {1.0, 1.0}), shape_error);
    spec.input_mean.clear();
    spec.input_scale.clear();
    spec.layers[0].weight[2] = std::numeric_limits<float>::infinity();
    CHECK_THROWS_WITH_AS(spec.validate(), doctest::Contains("weight (1, 0) is not finite"), value_error);
}

TEST_CASE("Dropout is dropped and BatchNorm after Dense is folded") {
    Rng rng(51);
    nn::Sequential<float> net;
    net.add<nn::Dense<float>>(5, 6, rng).add<nn::BatchNorm<float>>(6).add<nn::ReLU<float>>().add<nn::Dropout<float>>(0.3);
    net.add<nn::Dense<float>>(6, 2, rng);
    auto& bn = static_cast<nn::BatchNorm<float>&>(net[1]);
    for (std::size_t j = 0; j < 6; ++j) {
        bn.running_mean[j] = static_cast<float>(0.1 * static_cast<double>(j) - 0.2);
        bn.running_var[j] = static_cast<float>(0.5 + 0.3 * static_cast<double>(j));
        bn.weight.value[j] = static_cast<float>(1.5 - 0.2 * static_cast<double>(j));
        bn.bias.value[j] = static_cast<float>(0.05 * static_cast<double>(j));
    }
    const Tensor<float> x = deploy_test::random_inputs<float>(20, 5, 52);
    const std::vector<float> ref = deploy_test::dynamic_forward(net, x);  // eval mode
    const auto spec = deploy::spec_from(net);
    CHECK(spec.describe() == "5 -> 6 (relu) -> 2");
    const auto m = deploy::to_fixed<deploy::Mlp<float, 5, 6, 2>>(spec);
    std::vector<float> y(40);
    m->forward(x.data(), y.data(), 20);
    for (std::size_t i = 0; i < y.size(); ++i) CHECK(y[i] == doctest::Approx(ref[i]).epsilon(1e-5));

    nn::Sequential<float> bn_after_act;
    bn_after_act.add<nn::Dense<float>>(5, 6, rng, Activation::tanh).add<nn::BatchNorm<float>>(6);
    CHECK_THROWS_WITH_AS(deploy::spec_from(bn_after_act), doctest::Contains("layer 1 (BatchNorm)"), value_error);
}

TEST_CASE("nested Sequentials are walked") {
    Rng rng(61);
    nn::Sequential<float> inner;
    inner.add<nn::Dense<float>>(4, 5, rng).add<nn::ELU<float>>(0.5f);
    nn::Sequential<float> net;
    net.add(inner).add<nn::Dense<float>>(5, 2, rng, Activation::leaky_relu);
    const auto spec = deploy::spec_from(net);
    REQUIRE(spec.layers.size() == 2);
    CHECK(spec.layers[0].act == Activation::elu);
    CHECK(spec.layers[0].alpha == 0.5f);
    CHECK(spec.layers[1].alpha == doctest::Approx(0.01f));
    const Tensor<float> x = deploy_test::random_inputs<float>(7, 4, 62);
    const std::vector<float> ref = deploy_test::dynamic_forward(net, x);
    const auto m = deploy::to_fixed<deploy::Mlp<float, 4, 5, 2>>(spec);
    std::vector<float> y(14);
    m->forward(x.data(), y.data(), 7);
    CHECK(max_rel_diff(y, ref) <= 1e-6);
}

TEST_CASE("a model file becomes a fixed-size model") {
    using A = Activation;
    nn::Sequential<float> net = deploy_test::random_mlp<float>({8, 24, 16, 8, 1}, {A::relu, A::relu, A::relu, A::sigmoid}, 71);
    const std::filesystem::path dir = deploy_test::scratch_dir("modelfile");
    const std::string path = (dir / "higgs.tapir").string();
    io::save_model(path, net.named_parameters());

    const auto spec = deploy::spec_from_model_file<float>(path, {A::relu, A::relu, A::relu, A::sigmoid});
    const auto direct = deploy::spec_from(net);
    REQUIRE(spec.layers.size() == 4);
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(spec.layers[i].weight == direct.layers[i].weight);
        CHECK(spec.layers[i].bias == direct.layers[i].bias);
    }
    const Tensor<float> x = deploy_test::random_inputs<float>(33, 8, 72);
    const std::vector<float> ref = deploy_test::dynamic_forward(net, x);
    const auto m = deploy::to_fixed<deploy::Mlp<float, 8, 24, 16, 8, 1>>(spec);
    REQUIRE(m->set_isa(deploy_test::matching_isa()) == Status::ok);
    std::vector<float> y(33);
    m->forward(x.data(), y.data(), 33);
    CHECK(count_different(y, ref) == 0);

    CHECK_THROWS_WITH_AS(deploy::spec_from_model_file<float>(path, {A::relu, A::relu}),
                         doctest::Contains("holds 4 dense layers but 2 activations"), value_error);
    CHECK_THROWS_WITH_AS(deploy::spec_from_model_file<double>(path, {A::relu, A::relu, A::relu, A::sigmoid}),
                         doctest::Contains("float32"), format_error);
    CHECK_THROWS_AS(deploy::spec_from_model_file<float>((dir / "missing.tapir").string(), {A::relu}), format_error);

    nn::Sequential<float> with_bn;
    Rng rng(73);
    with_bn.add<nn::Dense<float>>(3, 4, rng).add<nn::BatchNorm<float>>(4);
    const std::string bn_path = (dir / "bn.tapir").string();
    io::save_model(bn_path, with_bn.named_parameters());
    CHECK_THROWS_WITH_AS(deploy::spec_from_model_file<float>(bn_path, {A::none, A::none}),
                         doctest::Contains("'1.weight' of shape (4,)"), format_error);
    std::filesystem::remove_all(dir);
}
