// deploy::load_onnx (deploy/onnx.hpp): ONNX graphs into ModelTs. Files written by tapir
// (nn::to_onnx, no Python needed) load into ModelTs that compute the trained model's outputs;
// models exported by torch.onnx.export (skipped with a message without onnx/torch) give PyTorch's
// outputs within 1e-5 and the nn::Model import's; graphs that disagree with the ModelT are
// refused naming the node and both shapes.
#include <doctest/doctest.h>

// GCC 12 for aarch64 dies in the loop vectoriser on the deploy tests at -O3 (see test_threads.cpp).
#if defined(__aarch64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC optimize("no-tree-vectorize")
#endif

#include <cstddef>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <tapir/autodiff/tape.hpp>
#include <tapir/deploy/onnx.hpp>
#include <tapir/nn/conv.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/model.hpp>
#include <tapir/nn/onnx.hpp>
#include <tapir/nn/recurrent.hpp>
#include <tapir/nn/sequential.hpp>

#include "support/onnx_helpers.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
namespace dp = tapir::deploy;
using tapir_test::grid_input;
using tapir_test::kTorchGruOnLastState;
using tapir_test::kTorchLstmOnLastStep;

namespace {

/// The ModelT on each sample of x (B, ...): (B, outputs).
template <class M>
Tensor<double> run_fixed(const M& m, const Tensor<double>& x) {
    using V = typename M::value_type;
    const std::size_t B = x.shape()[0];
    REQUIRE(x.size() == B * M::inputs);
    std::vector<V> in(x.size()), y(B * M::outputs);
    for (std::size_t i = 0; i < x.size(); ++i) in[i] = static_cast<V>(x.data()[i]);
    m.forward(in.data(), y.data(), B);
    Tensor<double> out(Shape{B, M::outputs});
    for (std::size_t i = 0; i < y.size(); ++i) out.data()[i] = static_cast<double>(y[i]);
    return out;
}

/// A dynamic model's output on x as (B, features).
Tensor<double> run_dynamic(nn::Module<double>& m, const Tensor<double>& x) {
    m.eval();
    Tape<double> t;
    const Tensor<double> y = m(t.constant(x)).value();
    const std::size_t B = y.shape()[0];
    Tensor<double> out(Shape{B, y.size() / B});
    for (std::size_t i = 0; i < y.size(); ++i) out.data()[i] = y.data()[i];
    return out;
}

/// Exports a tapir Sequential, loads it into M (double) and compares with the Sequential.
template <class M>
void check_tapir(nn::Sequential<double>& net, const Tensor<double>& x, double tol = 1e-9) {
    const io::onnx::ModelProto p = nn::to_onnx(net, x.shape());
    M fixed;
    dp::load_onnx(fixed, p);
    const Tensor<double> want = run_dynamic(net, x), got = run_fixed(fixed, x);
    INFO("tapir: " << want << "\ndeploy: " << got);
    CHECK(tapir_test::max_abs_diff(got, want) < tol);
}

/// A model exported by torch.onnx.export into M: PyTorch's outputs within 1e-5, the nn::Model
/// import's within 1e-9.
template <class M>
void check_torch(const std::string& build, const Tensor<double>& x) {
    const std::string path = tapir_test::onnx_temp_path("deploy");
    const auto r = tapir_test::torch_export(build, x, path);
    if (!r.ran) return;
    const std::unique_ptr<M> fixed = dp::load_onnx<M>(path);
    nn::Model<double> dynamic = nn::import_onnx<double>(path);
    const Tensor<double> got = run_fixed(*fixed, x), imported = run_dynamic(dynamic, x);
    const Tensor<double>& torch = r["y"];
    Tensor<double> want(got.shape());
    REQUIRE(torch.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) want.data()[i] = torch.data()[i];
    INFO("torch: " << want << "\ndeploy: " << got << "\nnn import: " << imported);
    CHECK(tapir_test::max_abs_diff(got, want) < 1e-5);
    CHECK(tapir_test::max_abs_diff(got, imported) < 1e-9);
    std::remove(path.c_str());
}

void set_stats(nn::BatchNorm<double>& bn) {
    for (std::size_t j = 0; j < bn.features(); ++j) {
        bn.running_mean[j] = 0.1 * static_cast<double>(j) - 0.3;
        bn.running_var[j] = 0.5 + 0.25 * static_cast<double>(j);
        bn.weight.value[j] = 1.0 + 0.1 * static_cast<double>(j);
        bn.bias.value[j] = -0.05 * static_cast<double>(j);
    }
}

nn::Sequential<double> mlp_with_batch_norms(Rng& rng) {
    nn::Sequential<double> m;
    m.add<nn::Dense<double>>(6, 8, rng);
    set_stats(m.emplace<nn::BatchNorm<double>>(8, 0.1, 1e-3));  // before the activation: folds into the Dense before it
    m.add<nn::ReLU<double>>().add<nn::Dense<double>>(8, 8, rng, Activation::tanh);
    set_stats(m.emplace<nn::BatchNorm<double>>(8));  // after an activation: folds into the Dense after it
    m.add<nn::Dropout<double>>(0.5).add<nn::Dense<double>>(8, 3, rng).add<nn::Sigmoid<double>>();
    return m;
}

} // namespace

TEST_CASE("deploy::load_onnx: a tapir MLP whose BatchNorms fold into the Dense before and after them") {
    Rng rng(1);
    nn::Sequential<double> m = mlp_with_batch_norms(rng);
    const Tensor<double> x = grid_input(Shape{5, 6}, 1);
    check_tapir<dp::ModelT<double, dp::DenseT<double, 6, 8>, dp::DenseT<double, 8, 8>, dp::DenseT<double, 8, 3>>>(m, x);
    // float: within float rounding of the double model.
    using F = dp::ModelT<float, dp::DenseT<float, 6, 8>, dp::DenseT<float, 8, 8>, dp::DenseT<float, 8, 3>>;
    F f;
    dp::load_onnx(f, nn::to_onnx(m, x.shape()));
    CHECK(tapir_test::max_abs_diff(run_fixed(f, x), run_dynamic(m, x)) < 1e-5);
    const std::vector<dp::OnnxLayer> layers = dp::onnx_layers(nn::to_onnx(m, x.shape()));
    REQUIRE(layers.size() == 3);
    CHECK(layers[0].act == Activation::relu);
    CHECK(layers[1].act == Activation::tanh);
    CHECK(layers[2].act == Activation::sigmoid);
    CHECK(layers[1].where == "node '3' (Gemm)");
}

TEST_CASE("deploy::load_onnx: tapir CNNs (Conv2d, Conv1d, pools, global pooling) and recurrent stacks") {
    Rng rng(2);
    nn::ConvOptions pad;
    pad.padding = Pad2d(1);
    nn::Sequential<double> cnn;
    cnn.add<nn::Conv2d<double>>(2, 4, Size2(3, 3), rng, pad).add<nn::ReLU<double>>().add<nn::MaxPool2d<double>>(Size2(2, 2));
    cnn.add<nn::Conv2d<double>>(4, 3, Size2(2, 2), rng).add<nn::GlobalAvgPool<double>>().add<nn::Dense<double>>(3, 2, rng, Activation::elu);
    check_tapir<dp::ModelT<double, dp::Conv2dT<double, 2, 8, 6, 4, 3, 3, 1, 1, 1, 1>, dp::MaxPool2dT<double, 4, 8, 6, 2, 2>,
                           dp::Conv2dT<double, 4, 4, 3, 3, 2, 2>, dp::AvgPool2dT<double, 3, 3, 2, 3, 2>, dp::FlattenT<double, 3>,
                           dp::DenseT<double, 3, 2>>>(cnn, grid_input(Shape{3, 2, 8, 6}, 2));

    nn::Sequential<double> c1;
    c1.add<nn::Conv1d<double>>(3, 4, 3, rng).add<nn::Tanh<double>>().add<nn::AvgPool1d<double>>(Size2(1, 2));
    c1.add<nn::Flatten<double>>().add<nn::Dense<double>>(16, 2, rng);
    check_tapir<dp::ModelT<double, dp::Conv1dT<double, 3, 10, 4, 3>, dp::AvgPool1dT<double, 4, 8, 2>, dp::FlattenT<double, 16>,
                           dp::DenseT<double, 16, 2>>>(c1, grid_input(Shape{2, 3, 10}, 3));

    nn::RecurrentOptions seq;
    seq.return_sequences = true;
    nn::Sequential<double> rnn;
    rnn.add<nn::LSTM<double>>(3, 5, rng, seq).add<nn::GRU<double>>(5, 4, rng).add<nn::Dense<double>>(4, 2, rng);
    check_tapir<dp::ModelT<double, dp::LstmT<double, 3, 5, 6, true>, dp::GruT<double, 5, 4, 6>, dp::DenseT<double, 4, 2>>>(
        rnn, grid_input(Shape{2, 6, 3}, 4));
}

TEST_CASE("deploy::load_onnx: an MLP exported by torch.onnx.export (BatchNorm1d after an activation)") {
    check_torch<dp::ModelT<double, dp::DenseT<double, 6, 16>, dp::DenseT<double, 16, 8>, dp::DenseT<double, 8, 8>, dp::DenseT<double, 8, 8>,
                           dp::DenseT<double, 8, 8>, dp::DenseT<double, 8, 3>>>(
        "model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.Tanh(),\n"
        "    torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 8), torch.nn.LeakyReLU(0.1), torch.nn.Linear(8, 8), torch.nn.ELU(),\n"
        "    torch.nn.Linear(8, 8), torch.nn.Softplus(), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3), torch.nn.Sigmoid())\n"
        "model[4].running_mean.uniform_(-0.5, 0.5); model[4].running_var.uniform_(0.5, 2.0)\n",
        grid_input(Shape{4, 6}, 11));
}

TEST_CASE("deploy::load_onnx: CNNs exported by torch.onnx.export (BatchNorm2d, strides, global pooling)") {
    check_torch<dp::ModelT<double, dp::Conv2dT<double, 2, 16, 14, 4, 3, 3, 1, 1, 1, 1>, dp::MaxPool2dT<double, 4, 16, 14, 2, 2>,
                           dp::Conv2dT<double, 4, 8, 7, 6, 3, 3, 2, 2>, dp::AvgPool2dT<double, 6, 3, 3, 2, 2, 1, 1>, dp::FlattenT<double, 24>,
                           dp::DenseT<double, 24, 3>>>(
        "model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),\n"
        "    torch.nn.Conv2d(4, 6, 3, stride=2), torch.nn.Sigmoid(), torch.nn.AvgPool2d(2, stride=1), torch.nn.Flatten(),\n"
        "    torch.nn.Linear(24, 3))\n"
        "model[1].running_mean.uniform_(-0.5, 0.5); model[1].running_var.uniform_(0.5, 2.0)\n",
        grid_input(Shape{2, 2, 16, 14}, 12));
    check_torch<dp::ModelT<double, dp::Conv1dT<double, 3, 10, 4, 3, 1, 1>, dp::MaxPool1dT<double, 4, 10, 2>, dp::Conv1dT<double, 4, 5, 5, 3>,
                           dp::AvgPool1dT<double, 5, 3, 3>, dp::FlattenT<double, 5>, dp::DenseT<double, 5, 2>>>(
        "model = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.MaxPool1d(2),\n"
        "    torch.nn.Conv1d(4, 5, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(5, 2))\n",
        grid_input(Shape{3, 3, 10}, 13));
}

TEST_CASE("deploy::load_onnx: LSTM and GRU models exported by torch.onnx.export") {
    check_torch<dp::ModelT<double, dp::LstmT<double, 4, 8, 7>, dp::DenseT<double, 8, 2>>>(kTorchLstmOnLastStep, grid_input(Shape{3, 7, 4}, 14));
    check_torch<dp::ModelT<double, dp::GruT<double, 4, 6, 5>, dp::DenseT<double, 6, 1>>>(kTorchGruOnLastState, grid_input(Shape{2, 5, 4}, 15));
    check_torch<dp::ModelT<double, dp::LstmT<double, 3, 4, 5, true>, dp::FlattenT<double, 20>, dp::DenseT<double, 20, 2>>>(
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.rnn = torch.nn.LSTM(3, 4, batch_first=True); self.fc = torch.nn.Linear(20, 2)\n"
        "    def forward(self, x):\n"
        "        y, _ = self.rnn(x)\n"
        "        return self.fc(torch.flatten(y, 1))\n"
        "model = M()\n",
        grid_input(Shape{2, 5, 3}, 16));
}

TEST_CASE("deploy::load_onnx names the node, the fixed-size layer and both shapes when they disagree") {
    Rng rng(3);
    nn::Sequential<double> m = mlp_with_batch_norms(rng);
    const io::onnx::ModelProto p = nn::to_onnx(m, Shape{1, 6});
    dp::ModelT<double, dp::DenseT<double, 6, 8>, dp::DenseT<double, 8, 3>> two;
    CHECK_THROWS_WITH_AS(dp::load_onnx(two, p), "deploy::load_onnx: <memory> has 3 deployable layers (Dense, Dense, Dense) but the fixed-size model has 2",
                         shape_error);
    dp::ModelT<double, dp::DenseT<double, 6, 8>, dp::DenseT<double, 8, 4>, dp::DenseT<double, 4, 3>> wide;
    CHECK_THROWS_WITH_AS(dp::load_onnx(wide, p),
                         "deploy::load_onnx: node '3' (Gemm) vs fixed-size layer 1 (Dense): ONNX weight (8, 8), fixed-size weight (8, 4)", shape_error);
    dp::ModelT<double, dp::DenseT<double, 7, 8>, dp::DenseT<double, 8, 8>, dp::DenseT<double, 8, 3>> input;
    CHECK_THROWS_WITH_AS(dp::load_onnx(input, p), "deploy::load_onnx: <memory>: the graph input has features (6) (6 values), the fixed-size model takes 7",
                         shape_error);
    dp::ModelT<double, dp::DenseT<double, 6, 8>, dp::DenseT<double, 8, 8>, dp::ActivationT<double, 8, Activation::relu>> act;
    CHECK_THROWS_WITH_AS(dp::load_onnx(act, p), "deploy::load_onnx: node '6' (Gemm) vs fixed-size layer 2 (Activation): the ONNX layer is Dense, the fixed-size layer relu",
                         shape_error);

    nn::ConvOptions grouped;
    grouped.groups = 2;
    nn::Sequential<double> g;
    g.add<nn::Conv2d<double>>(2, 4, Size2(3, 3), rng, grouped);
    dp::ModelT<double, dp::Conv2dT<double, 2, 5, 5, 4, 3, 3>> conv;
    CHECK_THROWS_WITH_AS(dp::load_onnx(conv, nn::to_onnx(g, Shape{1, 2, 5, 5})),
                         "deploy::load_onnx: node '0' (Conv) vs fixed-size layer 0 (Conv2d): ONNX weight (4, 1, 3, 3), fixed-size weight (4, 2, 3, 3) "
                         "(the ONNX convolution has 2 groups)",
                         shape_error);

    nn::RecurrentOptions seq;
    seq.return_sequences = true;
    nn::Sequential<double> r;
    r.add<nn::GRU<double>>(2, 3, rng, seq);
    dp::ModelT<double, dp::GruT<double, 2, 3, 4>> last;
    CHECK_THROWS_WITH_AS(dp::load_onnx(last, nn::to_onnx(r, Shape{1, 4, 2})),
                         "deploy::load_onnx: node '0' (GRU) vs fixed-size layer 0 (GRU): the ONNX layer gives every step, the fixed-size layer the last step",
                         shape_error);
}

TEST_CASE("deploy::load_onnx refuses what no fixed-size layer expresses, naming the node") {
    Rng rng(4);
    const auto refused = [](const io::onnx::ModelProto& p) {
        try {
            (void)dp::onnx_layers(p);
        } catch (const format_error& e) {
            return std::string(e.what());
        }
        return std::string("accepted");
    };
    nn::Sequential<double> sm;
    sm.add<nn::Dense<double>>(3, 2, rng).add<nn::Softmax<double>>();
    CHECK(refused(nn::to_onnx(sm, Shape{1, 3})).find("<memory>: deploy::load_onnx: unsupported ONNX operator 'Softmax' in node '1'") == 0);

    nn::Model<double> res;
    auto x = res.input("x", Shape{3});
    res.output(res.add(x, res.call(res.layer("fc", nn::Dense<double>(3, 3, rng)), x)));
    CHECK(refused(nn::to_onnx(res, std::vector<Shape>{Shape{1, 3}})) ==
          "<memory>: deploy::load_onnx: node 'add_0' (Add): combines two computed values (a residual or a concatenation); deploy models are chains of layers");

    nn::Sequential<double> pool;
    pool.add<nn::AvgPool2d<double>>(Size2(2, 2), Size2(1, 1), Size2(1, 1));
    CHECK(refused(nn::to_onnx(pool, Shape{1, 1, 4, 4})) ==
          "<memory>: deploy::load_onnx: node '0' (AveragePool): padded pooling is not supported by Pool2dT (pads must be 0)");

    nn::Sequential<double> lstm;
    lstm.add<nn::LSTM<double>>(2, 3, rng);
    io::onnx::ModelProto bi = nn::to_onnx(lstm, Shape{1, 4, 2});
    tapir_test::make_bidirectional(bi);
    CHECK(refused(bi) == "<memory>: deploy::load_onnx: node '0' (LSTM): direction 'bidirectional' is not supported (forward only)");

    nn::Sequential<double> bn;
    bn.add<nn::Dense<double>>(3, 2, rng).add<nn::Tanh<double>>().add<nn::BatchNorm<double>>(2);
    CHECK(refused(nn::to_onnx(bn, Shape{1, 3})) ==
          "<memory>: deploy::load_onnx: the graph ends with a BatchNormalization that follows an activation; nothing can absorb it");

    const std::string dir = TAPIR_SOURCE_DIR "/tests/fuzz/corpus/onnx/";
    CHECK(refused(io::onnx::load(dir + "cyclic.onnx")) ==
          "<memory>: deploy::load_onnx: node 'fc' (Gemm): reads 'y', which no input, initializer or earlier node defines (a cyclic or unsorted graph)");
}

TEST_CASE("deploy::load_onnx: the fuzz seeds shaped like ModelTs load and equal the nn::Model import") {
    const std::string dir = TAPIR_SOURCE_DIR "/tests/fuzz/corpus/onnx/";
    const auto compare = [&](const auto& fixed, const std::string& file, const Shape& in) {
        INFO(file);
        nn::Model<double> m = nn::import_onnx<double>(dir + file);
        const Tensor<double> x = grid_input(in, 40);
        CHECK(tapir_test::max_abs_diff(run_fixed(fixed, x), run_dynamic(m, x)) < 1e-9);
    };
    // A Conv with its BatchNormalization (N, C, H, W) folded in and the ReLU fused, then pooled.
    auto cnn = dp::load_onnx<dp::ModelT<double, dp::Conv2dT<double, 1, 6, 6, 2, 3, 3, 1, 1, 1, 1>, dp::MaxPool2dT<double, 2, 6, 6, 2, 2>,
                                        dp::AvgPool2dT<double, 2, 3, 3, 3, 3>, dp::FlattenT<double, 2>,
                                        dp::ActivationT<double, 2, Activation::tanh>>>(dir + "deploy_cnn.onnx");
    compare(*cnn, "deploy_cnn.onnx", Shape{3, 1, 6, 6});
    auto c1 = dp::load_onnx<dp::ModelT<double, dp::Conv1dT<double, 2, 8, 3, 3>, dp::MaxPool1dT<double, 3, 6, 2>, dp::FlattenT<double, 9>,
                                       dp::DenseT<double, 9, 1>>>(dir + "deploy_conv1d.onnx");  // MatMul + Add
    compare(*c1, "deploy_conv1d.onnx", Shape{2, 2, 8});
    auto mlp = dp::load_onnx<dp::ModelT<double, dp::DenseT<double, 3, 4>, dp::DenseT<double, 4, 2>>>(dir + "deploy_mlp_bn.onnx");
    compare(*mlp, "deploy_mlp_bn.onnx", Shape{2, 3});
    // PyTorch's zero initial state from Shape, Gather, Unsqueeze, Concat, ConstantOfShape.
    auto gru = dp::load_onnx<dp::ModelT<double, dp::GruT<double, 2, 3, 5, true>, dp::FlattenT<double, 15>, dp::DenseT<double, 15, 1>>>(
        dir + "deploy_gru_seq.onnx");
    compare(*gru, "deploy_gru_seq.onnx", Shape{2, 5, 2});
    auto lstm = dp::load_onnx<dp::ModelT<double, dp::LstmT<double, 2, 3, 5>, dp::DenseT<double, 3, 1>>>(dir + "lstm.onnx");
    compare(*lstm, "lstm.onnx", Shape{2, 5, 2});
}
