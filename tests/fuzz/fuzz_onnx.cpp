/// libFuzzer target for the ONNX readers: the protobuf parser (io/onnx.hpp), the import into an
/// nn::Model (nn/onnx.hpp) and the import into deploy ModelTs (deploy/onnx.hpp). Every input must
/// parse and import or throw one of tapir's errors (format_error for the file, value_error or
/// shape_error from a layer refusing its hyper-parameters or a ModelT refusing the layers);
/// anything else (a crash, a sanitizer report, another exception, a hang) is a finding.
#include <tapir/deploy/onnx.hpp>
#include <tapir/io/onnx.hpp>
#include <tapir/nn/onnx.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace {
template <class T>
void import(const tapir::io::onnx::ModelProto& m) {
    try {
        tapir::nn::Model<T> model = tapir::nn::import_onnx<T>(m, "fuzz.onnx");
        (void)model.num_parameters();
    } catch (const tapir::format_error&) {
    } catch (const tapir::value_error&) {
    } catch (const tapir::shape_error&) {
    }
}

namespace dp = tapir::deploy;
// ModelTs shaped like the seeds (an MLP, a CNN with global pooling, a 1-D CNN, LSTM and GRU
// stacks), so that inputs near them reach every layer's loader.
using Mlp = dp::ModelT<float, dp::DenseT<float, 3, 4>, dp::DenseT<float, 4, 2>>;
using Cnn = dp::ModelT<float, dp::Conv2dT<float, 1, 6, 6, 2, 3, 3, 1, 1, 1, 1>, dp::MaxPool2dT<float, 2, 6, 6, 2, 2>,
                       dp::AvgPool2dT<float, 2, 3, 3, 3, 3>, dp::FlattenT<float, 2>, dp::ActivationT<float, 2, tapir::Activation::tanh>>;
using Cnn1 = dp::ModelT<double, dp::Conv1dT<double, 2, 8, 3, 3>, dp::MaxPool1dT<double, 3, 6, 2>, dp::FlattenT<double, 9>, dp::DenseT<double, 9, 1>>;
using Lstm = dp::ModelT<float, dp::LstmT<float, 2, 3, 5>, dp::DenseT<float, 3, 1>>;
using Gru = dp::ModelT<double, dp::GruT<double, 2, 3, 5, true>, dp::FlattenT<double, 15>, dp::DenseT<double, 15, 1>>;

template <class M>
void deploy(const tapir::io::onnx::ModelProto& m) {
    try {
        static M fixed;  // large; loaded in place
        dp::load_onnx(fixed, m, "fuzz.onnx");
    } catch (const tapir::format_error&) {
    } catch (const tapir::value_error&) {
    } catch (const tapir::shape_error&) {
    }
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    tapir::io::onnx::ModelProto m;
    try {
        m = tapir::io::onnx::parse(reinterpret_cast<const char*>(data), size, "fuzz.onnx");
    } catch (const tapir::format_error&) {
        return 0;
    }
    // What parses serialises again, or names what it cannot write (int8 tensors, untyped attributes).
    try {
        (void)tapir::io::onnx::serialise(m);
    } catch (const tapir::value_error&) {
    }
    import<float>(m);
    import<double>(m);
    try {
        (void)dp::onnx_layers(m, "fuzz.onnx");
    } catch (const tapir::format_error&) {
        return 0;  // every ModelT would refuse it the same way
    }
    deploy<Mlp>(m);
    deploy<Cnn>(m);
    deploy<Cnn1>(m);
    deploy<Lstm>(m);
    deploy<Gru>(m);
    return 0;
}
