/// libFuzzer target for the ONNX reader: the protobuf parser (io/onnx.hpp) and the import into an
/// nn::Model (nn/onnx.hpp). Every input must parse and import or throw one of tapir's errors
/// (format_error for the file, value_error or shape_error from a layer refusing its
/// hyper-parameters); anything else (a crash, a sanitizer report, another exception, a hang) is
/// a finding.
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
    return 0;
}
