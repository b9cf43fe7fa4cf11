#pragma once
// Shared by the ONNX tests (tests/nn/test_onnx.cpp, tests/deploy/test_onnx.cpp): whether
// /usr/bin/python3 has onnx and torch, temporary file names, exact inputs, and models exported by
// torch.onnx.export.
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include <unistd.h>

#include <tapir/io/onnx.hpp>
#include <tapir/tensor/tensor.hpp>

#include "support/torch_ref.hpp"

namespace tapir_test {

inline bool onnx_available() {
    static const int ok = std::system("/usr/bin/python3 -c 'import onnx, torch' >/dev/null 2>&1") == 0 ? 1 : 0;
    if (!ok) MESSAGE("skipped: /usr/bin/python3 has no onnx or torch (Debian: apt-get install python3-onnx python3-torch)");
    return ok == 1;
}

inline std::string onnx_temp_path(const std::string& tag) {
    static int counter = 0;
    const char* tmp = std::getenv("TMPDIR");
    return std::string(tmp ? tmp : "/tmp") + "/tapir_onnx_" + std::to_string(static_cast<long>(::getpid())) + "_" + std::to_string(counter++) + "_" +
           tag + ".onnx";
}

/// Inputs in [-2, 2) on a grid of 1/64, exact in float32.
inline tapir::Tensor<double> grid_input(const tapir::Shape& s, unsigned seed) {
    tapir::Tensor<double> x(s);
    unsigned v = seed * 2654435761u + 12345u;
    for (std::size_t i = 0; i < x.size(); ++i) {
        v = v * 1103515245u + 12345u;
        x.data()[i] = static_cast<double>(static_cast<int>((v >> 8) % 256) - 128) / 64.0;
    }
    return x;
}

/// A PyTorch LSTM(4, 8) whose last step feeds a Linear(8, 2), for inputs (B, T, 4); both ONNX
/// importers (nn and deploy) read its export.
inline const char* const kTorchLstmOnLastStep = "class M(torch.nn.Module):\n"
                                                "    def __init__(self):\n"
                                                "        super().__init__(); self.rnn = torch.nn.LSTM(4, 8, batch_first=True); self.fc = torch.nn.Linear(8, 2)\n"
                                                "    def forward(self, x):\n"
                                                "        y, _ = self.rnn(x)\n"
                                                "        return self.fc(y[:, -1])\n"
                                                "model = M()\n";
/// A PyTorch GRU(4, 6) whose last hidden state feeds a Linear(6, 1) and a sigmoid, inputs (B, T, 4).
inline const char* const kTorchGruOnLastState = "class M(torch.nn.Module):\n"
                                                "    def __init__(self):\n"
                                                "        super().__init__(); self.rnn = torch.nn.GRU(4, 6, batch_first=True); self.fc = torch.nn.Linear(6, 1)\n"
                                                "    def forward(self, x):\n"
                                                "        _, h = self.rnn(x)\n"
                                                "        return torch.sigmoid(self.fc(h[-1]))\n"
                                                "model = M()\n";

/// Runs a snippet that builds `model` (made float32, eval mode), exports it to `path` at opset 13
/// and sets out['y'] to its output on x. ran is false (and a message printed) without onnx/torch.
inline TorchResult torch_export(const std::string& build, const tapir::Tensor<double>& x, const std::string& path) {
    if (!onnx_available()) return TorchResult{};
    return torch_eval({{"x", x}}, "torch.manual_seed(0)\n" + build +
                                      "model = model.float().eval()\n"
                                      "xf = x.float()\n"
                                      "torch.onnx.export(model, (xf,), '" + path +
                                      "', opset_version=13, input_names=['x'], output_names=['y'])\n"
                                      "with torch.no_grad():\n"
                                      "    out['y'] = model(xf)\n");
}

/// Makes every LSTM, GRU and RNN node of p bidirectional (which tapir refuses).
inline void make_bidirectional(tapir::io::onnx::ModelProto& p) {
    for (auto& n : p.graph.node)
        if (n.op_type == "LSTM" || n.op_type == "GRU" || n.op_type == "RNN") {
            tapir::io::onnx::AttributeProto a;
            a.name = "direction", a.type = tapir::io::onnx::kAttrString, a.s = "bidirectional";
            n.attribute.push_back(a);
        }
}

} // namespace tapir_test
