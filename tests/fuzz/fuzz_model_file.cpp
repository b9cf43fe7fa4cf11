/// libFuzzer target for the model-file loaders: the weights-only loader and the whole-model
/// loader (nn::load_model_from_bytes, which parses the architecture text and builds the layers).
/// Each input is tried twice: as it is, and with its size field and CRC-32 repaired, so that
/// mutations reach the record parser behind the integrity checks. Loading must either succeed or
/// throw format_error, and a failed load must leave the model untouched (all or nothing).
#include <tapir/data/dataset.hpp>
#include <tapir/io/model_file.hpp>
#include <tapir/nn/model_file.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/optim/model_file.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

template <class T>
struct Model {
    tapir::Parameter<T> w{"layer0.weight", tapir::Tensor<T>(tapir::Shape{3, 2}, T(0.25))};
    tapir::Parameter<T> b{"layer0.bias", tapir::Tensor<T>(tapir::Shape{2}, T(-0.5))};
    tapir::Tensor<T> mean{tapir::Shape{2}, T(0.75)};
    tapir::io::NamedParameters<T> named() { return {{"layer0.weight", &w}, {"layer0.bias", &b}}; }
    tapir::io::NamedBuffers<T> buffers() { return {{"layer1.running_mean", &mean}}; }
};

template <class T>
bool unchanged(const Model<T>& m) {
    for (std::size_t i = 0; i < m.w.value.size(); ++i)
        if (m.w.value.data()[i] != T(0.25)) return false;
    for (std::size_t i = 0; i < m.b.value.size(); ++i)
        if (m.b.value.data()[i] != T(-0.5)) return false;
    for (std::size_t i = 0; i < m.mean.size(); ++i)
        if (m.mean.data()[i] != T(0.75)) return false;
    return true;
}

template <class T>
void load_into_model(const std::uint8_t* data, std::size_t size) {
    Model<T> m;
    try {
        tapir::io::load_model_from_bytes(data, size, m.named());
    } catch (const tapir::format_error&) {
        if (!unchanged(m)) std::abort();
    }
    Model<T> mb;  // with buffers (format version 2)
    try {
        tapir::io::load_model_from_bytes(data, size, mb.named(), mb.buffers());
    } catch (const tapir::format_error&) {
        if (!unchanged(mb)) std::abort();
    }
    Model<T> m2;
    tapir::optim::Adam<T> opt({&m2.w, &m2.b}, T(1e-3));
    try {
        tapir::optim::load_model_from_bytes(data, size, m2.named(), &opt);
        if (!(opt.learning_rate() >= T(0))) std::abort();
    } catch (const tapir::format_error&) {
        if (!unchanged(m2)) std::abort();
    }
}

/// The whole-model loader: a model (in eval mode) and a scaler, or format_error.
template <class T>
void load_whole_model(const std::uint8_t* data, std::size_t size) {
    tapir::data::StandardScaler scaler;
    try {
        const std::unique_ptr<tapir::nn::Module<T>> m = tapir::nn::load_model_from_bytes<T>(data, size, &scaler, "fuzz.tapir");
        if (!m || m->is_training()) std::abort();
    } catch (const tapir::format_error&) {
        if (scaler.fitted()) std::abort();
    }
}

void try_bytes(const std::uint8_t* data, std::size_t size) {
    try {
        const tapir::io::ModelFileInfo info = tapir::io::inspect_model_bytes(data, size, "fuzz.tapir");
        if (info.version < 1 || info.version > tapir::io::model_format_version) std::abort();
        if (info.version == 1 && !info.buffers.empty()) std::abort();
        if (info.dtype != "float32" && info.dtype != "float64") std::abort();
    } catch (const tapir::format_error&) {
    }
    load_into_model<float>(data, size);
    load_into_model<double>(data, size);
    load_whole_model<float>(data, size);
    load_whole_model<double>(data, size);
}

void put_le(std::uint8_t* p, std::uint64_t v, int bytes) {
    for (int k = 0; k < bytes; ++k) p[k] = static_cast<std::uint8_t>(v >> (8 * k));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try_bytes(data, size);
    if (size >= tapir::io::detail::model_header_size + 4) {
        std::vector<std::uint8_t> fixed(data, data + size);
        std::memcpy(fixed.data(), tapir::io::detail::model_magic, sizeof tapir::io::detail::model_magic);
        put_le(fixed.data() + 11, size, 8);
        put_le(fixed.data() + size - 4, tapir::io::crc32(fixed.data(), size - 4), 4);
        try_bytes(fixed.data(), fixed.size());
    }
    return 0;
}
