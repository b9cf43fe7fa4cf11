// ONNX export and import (nn/onnx.hpp): round trips in tapir, files checked by onnx.checker and
// evaluated independently in PyTorch (tests/support/onnx_eval.py), and models exported by
// torch.onnx.export imported into tapir. The Python parts skip with a message when
// /usr/bin/python3 lacks onnx or torch.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <tapir/autodiff/backward.hpp>
#include <tapir/nn/conv.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/model.hpp>
#include <tapir/nn/onnx.hpp>
#include <tapir/nn/recurrent.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/nn/sets.hpp>

#include "support/onnx_helpers.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;

namespace {

using tapir_test::grid_input;
using tapir_test::kTorchGruOnLastState;
using tapir_test::kTorchLstmOnLastStep;
using tapir_test::onnx_available;

std::string temp_path(const std::string& tag) { return tapir_test::onnx_temp_path(tag); }

Tensor<double> run(nn::Module<double>& m, const Tensor<double>& x) {
    m.eval();
    Tape<double> t;
    return m(t.constant(x)).value();
}

/// Exports m, checks the file with onnx.checker and evaluates it in PyTorch; compares with tapir.
void check_export(nn::Sequential<double>& m, const Tensor<double>& x, double tol = 1e-5) {
    const Tensor<double> y = run(m, x);
    const std::string path = temp_path("export");
    nn::export_onnx(m, path, x.shape());
    // tapir reads its own file back to the same outputs (ONNX attributes such as BatchNorm's
    // epsilon are float32, hence not bitwise).
    nn::Model<double> back = nn::import_onnx<double>(path);
    CHECK(tapir_test::max_abs_diff(run(back, x), y) < 1e-9);
    if (onnx_available()) {
        const auto r = tapir_test::torch_eval({{"x", x}}, "sys.path.insert(0, '" TAPIR_SOURCE_DIR "/tests/support')\n"
                                                          "from onnx_eval import run_onnx\n"
                                                          "out['y'] = run_onnx('" + path + "', [x])\n");
        if (r.ran) {
            INFO("tapir: " << y << "\nonnx in torch: " << r["y"]);
            CHECK(tapir_test::max_abs_diff(r["y"], y) < tol);
        }
    }
    std::remove(path.c_str());
}

Tensor<double> run_many(nn::Module<double>& m, const std::vector<Tensor<double>>& xs) {
    m.eval();
    Tape<double> t;
    std::vector<Var<double>> vs;
    for (const auto& x : xs) vs.push_back(t.constant(x));
    return m.forward_many(vs).value();
}

/// check_export for a functional model of one or two inputs (x0, x1 in input order).
void check_export_model(nn::Model<double>& m, const std::vector<Tensor<double>>& xs, double tol = 1e-5) {
    const Tensor<double> y = run_many(m, xs);
    const std::string path = temp_path("model");
    std::vector<Shape> shapes;
    for (const auto& x : xs) shapes.push_back(x.shape());
    nn::export_onnx(m, path, shapes);
    nn::Model<double> back = nn::import_onnx<double>(path);
    CHECK(back.input_names() == m.input_names());
    CHECK(tapir_test::max_abs_diff(run_many(back, xs), y) < 1e-9);
    if (onnx_available()) {
        tapir_test::TorchTensors in{{"x0", xs[0]}};
        if (xs.size() > 1) in.emplace("x1", xs[1]);
        const auto r = tapir_test::torch_eval(in, "sys.path.insert(0, '" TAPIR_SOURCE_DIR "/tests/support')\n"
                                                  "from onnx_eval import run_onnx\n"
                                                  "out['y'] = run_onnx('" + path + "', [x0" + (xs.size() > 1 ? ", x1" : "") + "])\n");
        if (r.ran) {
            INFO("tapir: " << y << "\nonnx in torch: " << r["y"]);
            CHECK(tapir_test::max_abs_diff(r["y"], y) < tol);
        }
    }
    std::remove(path.c_str());
}

/// A (B, N) mask of 1 and 0 with some padded particles and one event without any.
Tensor<double> set_mask(std::size_t B, std::size_t N) {
    Tensor<double> m(Shape{B, N});
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t n = 0; n < N; ++n) m.data()[b * N + n] = (b + 1 < B && (n + b) % 3 != 2) ? 1.0 : 0.0;
    return m;
}

/// A snippet that builds `model` (float32) and exports it; the test compares tapir's import.
void check_import(const std::string& build, const Tensor<double>& x, double tol = 1e-5) {
    if (!onnx_available()) return;
    const std::string path = temp_path("torch");
    const auto r = tapir_test::torch_export(build, x, path);
    if (!r.ran) return;
    nn::Model<double> m = nn::import_onnx<double>(path);
    const Tensor<double> y = run(m, x);
    INFO("torch: " << r["y"] << "\ntapir: " << y << "\n" << m.summary(x.shape()));
    CHECK(tapir_test::max_abs_diff(r["y"], y) < tol);
    // Imported models train: one gradient step changes the output.
    m.train();
    Tape<double> t;
    Var<double> loss = sum(square(m(t.constant(x))));
    backward(loss);
    std::size_t nonzero = 0;
    for (auto* p : m.parameters())
        for (std::size_t i = 0; i < p->grad.size(); ++i) nonzero += p->grad.data()[i] != 0.0;
    CHECK(nonzero > 0);
    std::remove(path.c_str());
}

} // namespace

TEST_CASE("onnx export: an MLP with every activation, BatchNorm, Dropout and Softmax") {
    Rng rng(7);
    nn::Sequential<double> m;
    m.add<nn::Dense<double>>(6, 8, rng).add<nn::ReLU<double>>();
    auto& bn = m.emplace<nn::BatchNorm<double>>(8, 0.2, 1e-3);
    for (std::size_t j = 0; j < 8; ++j) {
        bn.running_mean[j] = 0.1 * static_cast<double>(j) - 0.3;
        bn.running_var[j] = 0.5 + 0.25 * static_cast<double>(j);
        bn.weight.value[j] = 1.0 + 0.1 * static_cast<double>(j);
        bn.bias.value[j] = -0.05 * static_cast<double>(j);
    }
    m.add<nn::Dense<double>>(8, 8, rng, Activation::tanh).add<nn::LeakyReLU<double>>(0.2).add<nn::Dropout<double>>(0.3);
    m.add<nn::Dense<double>>(8, 8, rng).add<nn::ELU<double>>(0.7).add<nn::Sigmoid<double>>().add<nn::Softplus<double>>();
    m.add<nn::Dense<double>>(8, 3, rng).add<nn::Softmax<double>>();
    check_export(m, grid_input(Shape{5, 6}, 1));
}

TEST_CASE("onnx export: a CNN with Conv2d (padding, stride, dilation, groups), pools, Flatten") {
    Rng rng(8);
    nn::ConvOptions pad;
    pad.padding = Pad2d(1, 0, 1, 2);
    nn::ConvOptions grouped;
    grouped.groups = 2, grouped.stride = Size2(1, 2), grouped.dilation = Size2(2, 1);
    nn::Sequential<double> m;
    m.add<nn::Conv2d<double>>(2, 4, Size2(3, 3), rng, pad).add<nn::ReLU<double>>().add<nn::MaxPool2d<double>>(Size2(2, 2));
    m.add<nn::Conv2d<double>>(4, 6, Size2(2, 2), rng, grouped).add<nn::AvgPool2d<double>>(Size2(2, 2), Size2(1, 1), Size2(1, 1));
    m.add<nn::Flatten<double>>();
    const Shape in{3, 2, 10, 12};
    const Shape mid = m.output_shape(in);
    m.add<nn::Dense<double>>(mid[1], 2, rng);
    check_export(m, grid_input(in, 2));

    nn::Sequential<double> one_d;  // Conv1d, 1-D pools, global pooling
    nn::ConvOptions same;
    same.same = true;
    one_d.add<nn::Conv1d<double>>(3, 4, 4, rng, same).add<nn::Tanh<double>>().add<nn::MaxPool1d<double>>(Size2(1, 2));
    one_d.add<nn::Conv1d<double>>(4, 4, 3, rng).add<nn::AvgPool1d<double>>(Size2(1, 3), Size2(1, 1), Size2(0, 1));
    one_d.add<nn::GlobalAvgPool<double>>().add<nn::Dense<double>>(4, 2, rng);
    check_export(one_d, grid_input(Shape{2, 3, 16}, 3));

    nn::Sequential<double> gmax;
    gmax.add<nn::Conv2d<double>>(1, 3, Size2(3, 3), rng).add<nn::GlobalMaxPool<double>>();
    check_export(gmax, grid_input(Shape{2, 1, 6, 5}, 4));
}

TEST_CASE("onnx export: LSTM, GRU and SimpleRNN as time-major ONNX ops with reordered gates") {
    Rng rng(9);
    nn::RecurrentOptions seq;
    seq.return_sequences = true;
    nn::Sequential<double> m;
    m.add<nn::LSTM<double>>(3, 5, rng, seq).add<nn::GRU<double>>(5, 4, rng, seq).add<nn::SimpleRNN<double>>(4, 4, rng);
    m.add<nn::Dense<double>>(4, 2, rng);
    check_export(m, grid_input(Shape{2, 6, 3}, 5));

    nn::Sequential<double> last;  // the last state of each, no bias on one
    nn::RecurrentOptions nobias;
    nobias.bias = false;
    last.add<nn::GRU<double>>(3, 4, rng, nobias);
    check_export(last, grid_input(Shape{3, 4, 3}, 6));
    nn::Sequential<double> lstm;
    lstm.add<nn::LSTM<double>>(2, 3, rng);
    check_export(lstm, grid_input(Shape{2, 5, 2}, 7));
}

TEST_CASE("onnx export: float32 models write float tensors; unsupported layers are named") {
    Rng rng(10);
    nn::Sequential<float> m;
    m.add<nn::Dense<float>>(3, 2, rng, Activation::relu);
    const io::onnx::ModelProto p = nn::to_onnx(m, Shape{1, 3});
    CHECK(p.graph.initializer[0].data_type == io::onnx::kFloat);
    CHECK(p.graph.input[0].elem_type == io::onnx::kFloat);
    CHECK(p.opset() == 13);
    nn::Model<float> back = nn::import_onnx<float>(p);
    back.eval();
    m.eval();
    Tape<float> t;
    const Tensor<float> x(Shape{2, 3}, 0.5f);
    const Tensor<float> a = m(t.constant(x)).value(), b = back(t.constant(x)).value();
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(a.data()[i] == b.data()[i]);

    nn::Sequential<float> ln;
    ln.add<nn::LayerNorm<float>>(3);
    CHECK_THROWS_WITH_AS(nn::to_onnx(ln, Shape{1, 3}), "export_onnx: layer '0' (LayerNorm) has no ONNX counterpart that tapir writes", value_error);
}

TEST_CASE("onnx import: an MLP exported by torch.onnx.export") {
    check_import("model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.Tanh(),\n"
                 "    torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 8), torch.nn.LeakyReLU(0.1), torch.nn.Linear(8, 8), torch.nn.ELU(),\n"
                 "    torch.nn.Linear(8, 8), torch.nn.Softplus(), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3), torch.nn.Sigmoid())\n"
                 "model[4].running_mean.uniform_(-0.5, 0.5); model[4].running_var.uniform_(0.5, 2.0)\n",
                 grid_input(Shape{4, 6}, 11));
}

TEST_CASE("onnx import: a CNN exported by torch.onnx.export") {
    check_import("model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),\n"
                 "    torch.nn.Conv2d(4, 8, 3, stride=2, groups=2, dilation=1), torch.nn.Sigmoid(), torch.nn.AvgPool2d(2, stride=1, padding=1),\n"
                 "    torch.nn.Conv2d(8, 6, 2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 3))\n",
                 grid_input(Shape{2, 2, 16, 14}, 12));
    check_import("model = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.MaxPool1d(2),\n"
                 "    torch.nn.Flatten(), torch.nn.Linear(4 * 5, 2), torch.nn.Softmax(dim=1))\n",
                 grid_input(Shape{3, 3, 10}, 13));
}

TEST_CASE("onnx import: an LSTM exported by torch.onnx.export") {
    check_import(kTorchLstmOnLastStep, grid_input(Shape{3, 7, 4}, 14));
}

TEST_CASE("onnx import: a GRU exported by torch.onnx.export") {
    check_import(kTorchGruOnLastState, grid_input(Shape{2, 5, 4}, 15));
}

TEST_CASE("onnx import: the fuzz seeds import and run; the broken ones name their problem") {
    const std::string dir = TAPIR_SOURCE_DIR "/tests/fuzz/corpus/onnx/";
    struct Seed {
        const char* file;
        Shape in, out;
    };
    // gru_seq runs the plumbing ops: Squeeze, Transpose, Gather, Slice, Unsqueeze, Reshape, Concat, ReduceSum.
    const Seed ok[] = {{"mlp.onnx", Shape{2, 3}, Shape{2, 4}},
                       {"cnn.onnx", Shape{2, 1, 6, 6}, Shape{2, 2}},
                       {"lstm.onnx", Shape{2, 5, 2}, Shape{2, 1}},
                       {"gru_seq.onnx", Shape{2, 5, 2}, Shape{2, 1}},
                       {"torch_mlp.onnx", Shape{1, 3}, Shape{1, 2}},
                       {"deploy_cnn.onnx", Shape{2, 1, 6, 6}, Shape{2, 2}},
                       {"deploy_conv1d.onnx", Shape{2, 2, 8}, Shape{2, 1}},
                       {"deploy_mlp_bn.onnx", Shape{2, 3}, Shape{2, 2}},
                       {"deploy_gru_seq.onnx", Shape{2, 5, 2}, Shape{2, 1}},
                       {"conv_transpose_bn.onnx", Shape{2, 2, 4, 4}, Shape{2, 3, 8, 5}}};
    for (const Seed& s : ok) {
        INFO(s.file);
        nn::Model<float> m = nn::import_onnx<float>(dir + s.file);
        m.eval();
        Tape<float> t;
        const Tensor<float> y = m(t.constant(Tensor<float>(s.in, 0.25f))).value();
        CHECK(y.shape() == s.out);
        for (std::size_t i = 0; i < y.size(); ++i) CHECK(std::isfinite(y.data()[i]));
    }
    {
        // Two inputs (a set and its mask): Reshape, Mul, ReduceSum, Max, Div, Sub.
        nn::Model<float> m = nn::import_onnx<float>(dir + "deepset_mean.onnx");
        CHECK(m.input_names() == std::vector<std::string>{"x", "mask"});
        m.eval();
        Tape<float> t;
        Tensor<float> mask(Shape{2, 4}, 1.0f);
        mask.data()[3] = 0.0f;
        const Tensor<float> y = m.forward_many({t.constant(Tensor<float>(Shape{2, 4, 3}, 0.25f)), t.constant(mask)}).value();
        CHECK(y.shape() == Shape{2, 1});
        // Equal particles: the masked mean is the mean of one particle either way.
        CHECK(y.data()[0] == doctest::Approx(y.data()[1]).epsilon(1e-6));
    }
    const std::pair<const char*, const char*> bad[] = {
        {"truncated.onnx", "truncated file"},
        {"unsupported_op.onnx", "unsupported ONNX operator 'Einsum' in node"},
        {"cyclic.onnx", "cyclic graph: node 'fc' (Gemm) depends on its own output"},
        {"oversized_dims.onnx", "tensor 'w' claims oversized dimensions"},
        {"wrong_dtype.onnx", "tensor 'w' claims 12 elements (dims) but holds 6 (48 raw bytes)"}};
    for (const auto& b : bad) {
        INFO(b.first);
        CHECK_THROWS_WITH_AS(nn::import_onnx<float>(dir + b.first), doctest::Contains(b.second), format_error);
    }
}

TEST_CASE("onnx export: a functional model with two inputs, a shared layer, Add, Mul and Concat") {
    Rng rng(21);
    nn::Model<double> g;
    auto jets = g.input("jets", Shape{3});
    auto parts = g.input("particles", Shape{4});
    auto enc = g.layer("enc", nn::Dense<double>(4, 4, rng, Activation::tanh));
    auto h = g.call(enc, parts);
    auto r = g.add(h, g.call(enc, h));  // enc shared: its weights written for each call
    auto gate = g.call(g.layer("gate", nn::Dense<double>(4, 4, rng, Activation::sigmoid)), parts);
    auto z = g.concat({g.multiply(r, gate), jets});
    nn::Sequential<double> stack;
    stack.add<nn::Dense<double>>(7, 5, rng).add<nn::ELU<double>>(0.5);
    auto body = g.layer("body", std::move(stack));
    g.output(g.call(g.layer("head", nn::Dense<double>(5, 2, rng)), g.call(body, z)));
    check_export_model(g, {grid_input(Shape{4, 3}, 30), grid_input(Shape{4, 4}, 31)});

    const io::onnx::ModelProto p = nn::to_onnx(g, {Shape{1, 3}, Shape{1, 4}});
    REQUIRE(p.graph.input.size() == 2);
    CHECK(p.graph.input[0].name == "jets");
    CHECK(p.graph.input[1].name == "particles");
    std::size_t muls = 0, concats = 0, adds = 0;
    for (const auto& n : p.graph.node) muls += n.op_type == "Mul", concats += n.op_type == "Concat", adds += n.op_type == "Add";
    CHECK(muls == 1);
    CHECK(concats == 1);
    CHECK(adds == 1);
}

TEST_CASE("onnx export: DeepSet and EnergyFlowNetwork with a mask as Mul and ReduceSum") {
    Rng rng(22);
    const std::size_t B = 4, N = 5;
    const Tensor<double> mask = set_mask(B, N);
    for (const nn::SetPooling pool : {nn::SetPooling::sum, nn::SetPooling::mean}) {
        nn::Model<double> g;
        auto x = g.input("particles", Shape{N, 3});
        auto m = g.input("mask", Shape{N});
        g.output(g.call(g.layer("pfn", nn::DeepSet<double>(3, {6, 4}, {5, 2}, rng, Activation::relu, pool)), {x, m}));
        INFO("pooling " << (pool == nn::SetPooling::sum ? "sum" : "mean"));
        check_export_model(g, {grid_input(Shape{B, N, 3}, 32), mask});
        // Without the mask (every particle real), in a Sequential.
        nn::Sequential<double> seq;
        seq.add<nn::DeepSet<double>>(3, std::vector<std::size_t>{4}, std::vector<std::size_t>{2}, rng, Activation::tanh, pool);
        check_export(seq, grid_input(Shape{2, N, 3}, 33));
    }
    nn::Model<double> e;
    auto x = e.input("particles", Shape{N, 3});  // z, then 2 angles
    auto m = e.input("mask", Shape{N});
    e.output(e.call(e.layer("efn", nn::EnergyFlowNetwork<double>(2, {6, 4}, {3}, rng)), {x, m}));
    Tensor<double> xe = grid_input(Shape{B, N, 3}, 34);
    for (std::size_t i = 0; i < B * N; ++i) xe.data()[3 * i] = std::abs(xe.data()[3 * i]) / 4.0;
    check_export_model(e, {xe, mask});

    const io::onnx::ModelProto p = nn::to_onnx(e, {Shape{1, N, 3}, Shape{1, N}});
    std::size_t reduce = 0;
    for (const auto& n : p.graph.node) reduce += n.op_type == "ReduceSum";
    CHECK(reduce == 1);
}

TEST_CASE("onnx export: function nodes and layers without an ONNX form are named") {
    Rng rng(23);
    nn::Model<double> g;
    auto x = g.input("x", Shape{3});
    auto sq = g.apply("square", [](const std::vector<Var<double>>& v) { return square(v[0]); }, {x});
    g.output(g.call(g.layer("fc", nn::Dense<double>(3, 1, rng)), sq));
    CHECK_THROWS_WITH_AS(nn::to_onnx(g, std::vector<Shape>{Shape{1, 3}}),
                         "export_onnx: node 'square' is a function (Model::apply), which has no ONNX counterpart; build it from layers, add, "
                         "multiply and concat",
                         value_error);
    nn::Model<double> ln;
    auto y = ln.input("x", Shape{3});
    ln.output(ln.call(ln.layer("norm", nn::LayerNorm<double>(3)), y));
    CHECK_THROWS_WITH_AS(nn::to_onnx(ln, std::vector<Shape>{Shape{1, 3}}), "export_onnx: layer 'norm' (LayerNorm) has no ONNX counterpart that tapir writes", value_error);
    CHECK_THROWS_WITH_AS(nn::to_onnx(ln, {Shape{1, 3}, Shape{1, 3}}), "export_onnx: the model takes 1 inputs, got 2 shapes", value_error);
}

TEST_CASE("onnx export and import: ConvTranspose2d") {
    Rng rng(24);
    nn::ConvOptions o;
    o.stride = Size2(2, 1), o.padding = Pad2d(1, 1, 0, 0), o.output_padding = Size2(1, 0), o.groups = 2;
    nn::Sequential<double> m;
    m.add<nn::ConvTranspose2d<double>>(4, 6, Size2(3, 2), rng, o).add<nn::ReLU<double>>();
    nn::ConvOptions d;
    d.dilation = Size2(1, 2), d.bias = false;
    m.add<nn::ConvTranspose2d<double>>(6, 2, Size2(2, 2), rng, d);
    check_export(m, grid_input(Shape{2, 4, 5, 4}, 35));
}

TEST_CASE("onnx import: BatchNormalization after a convolution, ConvTranspose, from torch.onnx.export") {
    // PyTorch folds a BatchNorm2d into the Conv before it when exporting in eval mode, not one
    // after a ConvTranspose2d.
    check_import("model = torch.nn.Sequential(torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1), torch.nn.BatchNorm2d(3),\n"
                 "    torch.nn.ReLU(), torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 6, 2))\n"
                 "model[1].running_mean.uniform_(-0.5, 0.5); model[1].running_var.uniform_(0.5, 2.0)\n"
                 "model[1].weight.data.uniform_(0.5, 1.5); model[1].bias.data.uniform_(-0.5, 0.5)\n",
                 grid_input(Shape{2, 2, 5, 4}, 36));
    check_import("model = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.ReLU(), torch.nn.BatchNorm1d(3), torch.nn.Flatten())\n"
                 "model[2].running_mean.uniform_(-0.5, 0.5); model[2].running_var.uniform_(0.5, 2.0)\n",
                 grid_input(Shape{2, 2, 7}, 37));
}

TEST_CASE("onnx import: BatchNormalization on (N, C, H, W) normalises each channel") {
    // Hand-built: x -> BatchNormalization(scale, bias, mean, var) with C = 2, against the formula.
    namespace ox = io::onnx;
    ox::ModelProto p;
    p.opset_import.push_back(ox::OperatorSetId{"", 13});
    auto real = [](const std::string& name, std::vector<double> v) {
        ox::TensorProto t;
        t.name = name, t.data_type = ox::kDouble, t.dims = {static_cast<std::int64_t>(v.size())}, t.values = std::move(v);
        return t;
    };
    p.graph.initializer = {real("s", {2.0, 0.5}), real("b", {0.25, -1.0}), real("m", {0.5, -0.25}), real("v", {4.0, 0.25})};
    p.graph.node.push_back(ox::NodeProto{{"x", "s", "b", "m", "v"}, {"y"}, "bn", "BatchNormalization", "", {}});
    ox::ValueInfoProto in, out;
    in.name = "x", in.elem_type = ox::kDouble, out.name = "y", out.elem_type = ox::kDouble;
    p.graph.input.push_back(in);
    p.graph.output.push_back(out);
    nn::Model<double> m = nn::import_onnx<double>(p);
    const Tensor<double> x = grid_input(Shape{2, 2, 3, 2}, 38);
    const Tensor<double> y = run(m, x);
    REQUIRE(y.shape() == x.shape());
    const double s[2] = {2.0, 0.5}, b[2] = {0.25, -1.0}, mu[2] = {0.5, -0.25}, var[2] = {4.0, 0.25};
    for (std::size_t i = 0; i < x.size(); ++i) {
        const std::size_t c = (i / 6) % 2;
        CHECK(y.data()[i] == doctest::Approx((x.data()[i] - mu[c]) / std::sqrt(var[c] + 1e-5) * s[c] + b[c]).epsilon(1e-12));
    }
}

TEST_CASE("onnx import: bidirectional recurrent layers and unknown operators are refused by name") {
    Rng rng(25);
    nn::Sequential<float> m;
    m.add<nn::LSTM<float>>(2, 3, rng);
    io::onnx::ModelProto p = nn::to_onnx(m, Shape{1, 4, 2});
    tapir_test::make_bidirectional(p);
    CHECK_THROWS_WITH_AS(nn::import_onnx<float>(p), "<memory>: ONNX import: node '0' (LSTM): direction 'bidirectional' is not supported (forward only)",
                         format_error);
    for (auto& n : p.graph.node)
        if (n.op_type == "LSTM") n.op_type = "Scan";
    CHECK_THROWS_WITH_AS(nn::import_onnx<float>(p), doctest::Contains("unsupported ONNX operator 'Scan' in node '0'"), format_error);
    if (!onnx_available()) return;
    const std::string path = temp_path("bidi");
    const auto r = tapir_test::torch_export("class M(torch.nn.Module):\n"
                                            "    def __init__(self):\n"
                                            "        super().__init__(); self.rnn = torch.nn.GRU(3, 4, batch_first=True, bidirectional=True)\n"
                                            "    def forward(self, x):\n"
                                            "        return self.rnn(x)[0]\n"
                                            "model = M()\n",
                                            grid_input(Shape{1, 2, 3}, 39), path);
    if (!r.ran) return;
    CHECK_THROWS_WITH_AS(nn::import_onnx<float>(path), doctest::Contains("(GRU): direction 'bidirectional' is not supported"), format_error);
    std::remove(path.c_str());
}
