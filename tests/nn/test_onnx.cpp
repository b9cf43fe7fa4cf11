// ONNX export and import (nn/onnx.hpp): round trips in tapir, files checked by onnx.checker and
// evaluated independently in PyTorch (tests/support/onnx_eval.py), and models exported by
// torch.onnx.export imported into tapir. The Python parts skip with a message when
// /usr/bin/python3 lacks onnx or torch.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include <tapir/autodiff/backward.hpp>
#include <tapir/nn/conv.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/onnx.hpp>
#include <tapir/nn/recurrent.hpp>
#include <tapir/nn/sequential.hpp>

#include "support/torch_ref.hpp"

using namespace tapir;

namespace {

bool onnx_available() {
    static const int ok = std::system("/usr/bin/python3 -c 'import onnx, torch' >/dev/null 2>&1") == 0 ? 1 : 0;
    if (!ok) MESSAGE("skipped: /usr/bin/python3 has no onnx or torch (Debian: apt-get install python3-onnx python3-torch)");
    return ok == 1;
}

std::string temp_path(const std::string& tag) {
    static int counter = 0;
    const char* tmp = std::getenv("TMPDIR");
    return std::string(tmp ? tmp : "/tmp") + "/tapir_onnx_" + std::to_string(static_cast<long>(::getpid())) + "_" + std::to_string(counter++) + "_" +
           tag + ".onnx";
}

/// Inputs in [-2, 2) on a grid of 1/64, exact in float32.
Tensor<double> grid_input(const Shape& s, unsigned seed) {
    Tensor<double> x(s);
    unsigned v = seed * 2654435761u + 12345u;
    for (std::size_t i = 0; i < x.size(); ++i) {
        v = v * 1103515245u + 12345u;
        x.data()[i] = static_cast<double>(static_cast<int>((v >> 8) % 256) - 128) / 64.0;
    }
    return x;
}

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

/// A snippet that builds `model` (float32) and exports it; the test compares tapir's import.
void check_import(const std::string& build, const Tensor<double>& x, double tol = 1e-5) {
    if (!onnx_available()) return;
    const std::string path = temp_path("torch");
    const auto r = tapir_test::torch_eval({{"x", x}}, "torch.manual_seed(0)\n" + build +
                                                          "model = model.float().eval()\n"
                                                          "xf = x.float()\n"
                                                          "torch.onnx.export(model, (xf,), '" + path +
                                                          "', opset_version=13, input_names=['x'], output_names=['y'])\n"
                                                          "with torch.no_grad():\n"
                                                          "    out['y'] = model(xf)\n");
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
    check_import("class M(torch.nn.Module):\n"
                 "    def __init__(self):\n"
                 "        super().__init__(); self.rnn = torch.nn.LSTM(4, 8, batch_first=True); self.fc = torch.nn.Linear(8, 2)\n"
                 "    def forward(self, x):\n"
                 "        y, _ = self.rnn(x)\n"
                 "        return self.fc(y[:, -1])\n"
                 "model = M()\n",
                 grid_input(Shape{3, 7, 4}, 14));
}

TEST_CASE("onnx import: a GRU exported by torch.onnx.export") {
    check_import("class M(torch.nn.Module):\n"
                 "    def __init__(self):\n"
                 "        super().__init__(); self.rnn = torch.nn.GRU(4, 6, batch_first=True); self.fc = torch.nn.Linear(6, 1)\n"
                 "    def forward(self, x):\n"
                 "        _, h = self.rnn(x)\n"
                 "        return torch.sigmoid(self.fc(h[-1]))\n"
                 "model = M()\n",
                 grid_input(Shape{2, 5, 4}, 15));
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
                       {"torch_mlp.onnx", Shape{1, 3}, Shape{1, 2}}};
    for (const Seed& s : ok) {
        INFO(s.file);
        nn::Model<float> m = nn::import_onnx<float>(dir + s.file);
        m.eval();
        Tape<float> t;
        const Tensor<float> y = m(t.constant(Tensor<float>(s.in, 0.25f))).value();
        CHECK(y.shape() == s.out);
        for (std::size_t i = 0; i < y.size(); ++i) CHECK(std::isfinite(y.data()[i]));
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
