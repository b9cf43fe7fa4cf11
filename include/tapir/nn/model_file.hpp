#pragma once
/// Saving and loading whole modules: parameters AND buffers (BatchNorm running statistics), and
/// optionally an optimiser's state, in io's model file (format version 2 when there are
/// buffers). Also loading a pretrained part into a larger model by name, for transfer learning.
///
///     tapir::nn::save_model("tagger.tpr", model);           // parameters + buffers
///     tapir::nn::load_model("tagger.tpr", model);           // all or nothing
///     tapir::nn::save_model("run.tpr", model, &adam);        // + the optimiser, to resume
///     // The encoder of a saved autoencoder into the encoder of a classifier:
///     tapir::nn::load_pretrained("ae.tpr", classifier.layer("encoder"), "encoder.");
///     classifier.layer("encoder").freeze();
///
/// Whole-model files (format version 3) also hold the architecture, so that loading needs no
/// code that rebuilds the model (Keras' model.save and load_model), and optionally the input
/// scaler and an optimiser's state:
///
///     tapir::nn::save(model, "tagger.tpr", &scaler);              // + &adam to resume later
///     auto m = tapir::nn::load_model<float>("tagger.tpr", &scaler);  // unique_ptr<Module<float>>, eval mode
///     tapir::nn::Sequential<float> s = tapir::nn::load_sequential<float>("tagger.tpr");
///     tapir::nn::load_model("tagger.tpr", *m, &adam);             // resume: weights + optimiser
///
/// The architecture is the text of nn/serialize.hpp in the file's "architecture" section, the
/// scaler the same kind of text in "input_scaler". The weights-only loaders above (and deploy's
/// to_model) read these files too.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../data/dataset.hpp"
#include "../error.hpp"
#include "../io/model_file.hpp"
#include "../optim/model_file.hpp"
#include "../optim/optimizer.hpp"
#include "module.hpp"
#include "sequential.hpp"
#include "serialize.hpp"

namespace tapir {
namespace nn {

template <class T>
std::string save_model_to_string(Module<T>& model, optim::Optimizer<T>* optimizer = nullptr) {
    return optim::save_model_to_string(model.named_parameters(), model.named_buffers(), optimizer);
}
/// Parameters, buffers and (with an optimiser) its state, written atomically.
template <class T>
void save_model(const std::string& path, Module<T>& model, optim::Optimizer<T>* optimizer = nullptr) {
    optim::save_model(path, model.named_parameters(), model.named_buffers(), optimizer);
}
/// Names, order, shapes and dtype must match; nothing changes unless everything fits. A
/// version-1 file (written before buffers were saved) loads the parameters and leaves the
/// buffers as they are.
template <class T>
void load_model_from_string(const std::string& data, Module<T>& model, optim::Optimizer<T>* optimizer = nullptr,
                            const std::string& source = "<memory>") {
    optim::load_model_from_string(data, model.named_parameters(), model.named_buffers(), optimizer, source);
}
template <class T>
void load_model(const std::string& path, Module<T>& model, optim::Optimizer<T>* optimizer = nullptr) {
    optim::load_model(path, model.named_parameters(), model.named_buffers(), optimizer);
}

namespace detail {
template <class T>
using FileTensors = std::vector<std::pair<std::string, Tensor<T>>>;

/// Matches the module's named tensors (parameters or buffers) with the file's under prefix;
/// fills `plan` with (destination, source) pairs. Every file entry under the prefix must be used.
template <class T, class Named, class Get>
void match_pretrained(const std::string& src, const char* what, const Named& mine, const FileTensors<T>& file, const std::string& prefix,
                      Get get, std::vector<std::pair<Tensor<T>*, const Tensor<T>*>>& plan) {
    std::vector<bool> used(file.size(), false);
    for (const auto& m : mine) {
        const std::string want = prefix + m.first;
        std::size_t k = 0;
        while (k < file.size() && file[k].first != want) ++k;
        if (k == file.size()) {
            std::string have;
            for (const auto& f : file)
                if (f.first.compare(0, prefix.size(), prefix) == 0) have += (have.empty() ? "" : ", ") + f.first;
            throw format_error(src + ": load_pretrained: the file has no " + what + " '" + want + "' (its " + what + "s under '" + prefix +
                               "': " + (have.empty() ? "none" : have) + ")");
        }
        Tensor<T>& dst = get(m.second);
        if (file[k].second.shape() != dst.shape())
            throw format_error(src + ": load_pretrained: " + what + " '" + want + "' has shape " + file[k].second.shape().str() +
                               " in the file but " + dst.shape().str() + " in the model ('" + m.first + "')");
        used[k] = true;
        plan.emplace_back(&dst, &file[k].second);
    }
    for (std::size_t k = 0; k < file.size(); ++k)
        if (!used[k] && file[k].first.compare(0, prefix.size(), prefix) == 0)
            throw format_error(src + ": load_pretrained: the file's " + what + " '" + file[k].first + "' has no counterpart '" +
                               file[k].first.substr(prefix.size()) + "' in the model");
}
} // namespace detail

/// Transfer learning: fills `part` (a module or a sub-module of a larger model) from the entries
/// of a model file whose names are prefix + the part's own names, e.g. prefix "encoder." puts
/// the file's "encoder.0.weight" into the part's "0.weight". Buffers load the same way when the
/// file has them (version 2). Every name must be found, every file entry under the prefix used
/// and every shape equal (the error names both shapes); nothing changes otherwise.
template <class T>
void load_pretrained(const io::ModelTensors<T>& file, Module<T>& part, const std::string& prefix, const std::string& source) {
    std::vector<std::pair<Tensor<T>*, const Tensor<T>*>> plan;
    detail::match_pretrained<T>(source, "parameter", part.named_parameters(), file.parameters, prefix,
                                [](Parameter<T>* p) -> Tensor<T>& { return p->value; }, plan);
    if (file.version >= 2)
        detail::match_pretrained<T>(source, "buffer", part.named_buffers(), file.buffers, prefix, [](Tensor<T>* b) -> Tensor<T>& { return *b; },
                                    plan);
    for (auto& p : plan) std::copy(p.second->data(), p.second->data() + p.second->size(), p.first->data());
}
template <class T>
void load_pretrained_from_string(const std::string& data, Module<T>& part, const std::string& prefix = "",
                                 const std::string& source = "<memory>") {
    load_pretrained(io::read_model_tensors_from_string<T>(data, source), part, prefix, source);
}
template <class T>
void load_pretrained(const std::string& path, Module<T>& part, const std::string& prefix = "") {
    load_pretrained(io::read_model_tensors<T>(path), part, prefix, path);
}

// ---- whole-model files: the architecture with the weights --------------------------------------

/// The sections a whole-model file adds to the weights.
constexpr const char* architecture_section = "architecture";
constexpr const char* input_scaler_section = "input_scaler";

namespace detail {
inline std::string scaler_text(const data::StandardScaler& s) {
    if (!s.fitted()) throw value_error("nn::save: the input scaler is not fitted");
    LayerConfig c("StandardScaler");
    c.set_doubles("mean", s.mean()).set_doubles("scale", s.scale());
    return config_text(c);
}
inline data::StandardScaler scaler_from_text(const std::string& text, const std::string& source) {
    const LayerConfig c = parse_config_text(text, source + ": " + input_scaler_section);
    if (c.type() != "StandardScaler") c.fail("unknown scaler type (this build reads StandardScaler)");
    if (!c.children().empty()) c.fail("a scaler has no children");
    std::vector<double> mean = c.get_doubles("mean"), scale = c.get_doubles("scale");
    const std::vector<std::string> unread = c.unread_keys();
    if (!unread.empty()) c.fail("unknown key '" + unread[0] + "'");
    try {
        return data::StandardScaler(std::move(mean), std::move(scale));
    } catch (const value_error& e) {
        c.fail(e.what());
    }
}
/// Builds the model back from its configuration and compares parameter and buffer names and
/// shapes: a codec that misses part of a layer's configuration fails at save time, not when
/// the file is loaded.
template <class T>
void check_rebuilds(Module<T>& model, const LayerConfig& arch) {
    std::unique_ptr<Module<T>> copy;
    try {
        copy = build_layer<T>(arch);
    } catch (const format_error& e) {
        throw value_error(std::string("nn::save: the model's architecture does not build: ") + e.what());
    }
    const auto compare = [](const char* what, const auto& mine, const auto& rebuilt, const auto& shape) {
        const std::size_t n = mine.size() < rebuilt.size() ? mine.size() : rebuilt.size();
        for (std::size_t i = 0; i < n; ++i)
            if (mine[i].first != rebuilt[i].first || shape(mine[i]) != shape(rebuilt[i]))
                throw value_error(std::string("nn::save: the architecture does not rebuild the model: ") + what + " #" + std::to_string(i) +
                                  " is '" + mine[i].first + "' " + shape(mine[i]).str() + " in the model but '" + rebuilt[i].first + "' " +
                                  shape(rebuilt[i]).str() + " when rebuilt (a layer's codec misses part of its configuration)");
        if (mine.size() != rebuilt.size())
            throw value_error(std::string("nn::save: the architecture does not rebuild the model: ") + std::to_string(mine.size()) + " " +
                              what + "s in the model but " + std::to_string(rebuilt.size()) + " when rebuilt");
    };
    compare("parameter", model.named_parameters(), copy->named_parameters(), [](const auto& p) { return p.second->value.shape(); });
    compare("buffer", model.named_buffers(), copy->named_buffers(), [](const auto& b) { return b.second->shape(); });
}
template <class T>
std::vector<io::ModelSection> whole_model_sections(Module<T>& model, const data::StandardScaler* scaler) {
    const LayerConfig arch = layer_config<T>(model);
    check_rebuilds(model, arch);
    std::vector<io::ModelSection> out{io::ModelSection{architecture_section, config_text(arch)}};
    if (scaler) out.push_back(io::ModelSection{input_scaler_section, scaler_text(*scaler)});
    return out;
}
template <class T>
std::string whole_model_bytes(Module<T>& model, const data::StandardScaler* scaler, optim::Optimizer<T>* optimizer) {
    const std::vector<io::ModelSection> sections = whole_model_sections(model, scaler);
    if (!optimizer) return io::save_model_to_string(model.named_parameters(), model.named_buffers(), nullptr, sections);
    const io::OptimizerState<T> s = optim::file_state(*optimizer);
    return io::save_model_to_string(model.named_parameters(), model.named_buffers(), &s, sections);
}
} // namespace detail

/// A whole-model file as bytes: architecture, parameters, buffers and, when given, the input
/// scaler and an optimiser's state. Throws value_error naming a layer type that has no codec
/// (nn::register_layer) and for an unfitted scaler.
template <class T>
std::string save_to_string(Module<T>& model, const data::StandardScaler* scaler = nullptr, optim::Optimizer<T>* optimizer = nullptr) {
    return detail::whole_model_bytes(model, scaler, optimizer);
}
template <class T>
std::vector<std::uint8_t> save_to_bytes(Module<T>& model, const data::StandardScaler* scaler = nullptr, optim::Optimizer<T>* optimizer = nullptr) {
    const std::string s = detail::whole_model_bytes(model, scaler, optimizer);
    return std::vector<std::uint8_t>(s.begin(), s.end());
}
/// Writes a whole-model file atomically (a temporary file, then a rename).
template <class T>
void save(Module<T>& model, const std::string& path, const data::StandardScaler* scaler = nullptr, optim::Optimizer<T>* optimizer = nullptr) {
    const std::vector<io::ModelSection> sections = detail::whole_model_sections(model, scaler);
    if (!optimizer) return io::save_model(path, model.named_parameters(), model.named_buffers(), nullptr, sections);
    const io::OptimizerState<T> s = optim::file_state(*optimizer);
    io::save_model(path, model.named_parameters(), model.named_buffers(), &s, sections);
}

/// Rebuilds the model a whole-model file holds and loads its weights and buffers; the model
/// comes back in eval mode (train() to go on training), with the freeze() marks it was saved
/// with. The scaler, when asked for, is the file's, or an unfitted one when the file has none.
/// Throws format_error naming the problem (and the layer and its line in the architecture):
/// a weights-only file, a damaged file, an unknown layer type, a missing or malformed key, a
/// configuration the weights do not fit.
template <class T>
std::unique_ptr<Module<T>> load_model_from_bytes(const void* data, std::size_t size, data::StandardScaler* scaler = nullptr,
                                                 const std::string& source = "<memory>") {
    const io::ModelFileInfo info = io::inspect_model_bytes(data, size, source);
    const char* want = sizeof(T) == 4 ? "float32" : "float64";
    if (info.dtype != want) throw format_error(source + ": the file holds " + info.dtype + " values but " + want + " were asked for");
    const std::vector<io::ModelSection> sections = io::read_model_sections_from_bytes(data, size, source);
    const io::ModelSection* arch_text = nullptr;
    const io::ModelSection* scaler_section = nullptr;
    for (const io::ModelSection& s : sections) {
        if (s.name == architecture_section) arch_text = &s;
        if (s.name == input_scaler_section) scaler_section = &s;
    }
    if (!arch_text)
        throw format_error(source + ": the file holds weights only, no architecture (it was written by save_model, format version " +
                           std::to_string(info.version) + "); build the model in code and load it with nn::load_model(path, model)");
    data::StandardScaler sc;
    if (scaler && scaler_section) sc = detail::scaler_from_text(scaler_section->data, source);
    LayerConfig arch = parse_config_text(arch_text->data, source + ": " + architecture_section);
    // Every configuration claims its values from those the file holds before it allocates them.
    std::size_t budget = 0;
    const auto add = [&budget](const std::vector<std::pair<std::string, Shape>>& ts) {
        for (const auto& t : ts) budget = tapir::nn::detail::config_sum(budget, t.second.numel());
    };
    add(info.parameters);
    add(info.buffers);
    arch.set_budget(&budget);
    std::unique_ptr<Module<T>> m = build_layer<T>(arch);
    arch.set_budget(nullptr);
    io::load_model_from_bytes(data, size, m->named_parameters(), m->named_buffers(), nullptr, source);
    apply_frozen(*m, arch);
    m->eval();
    if (scaler) *scaler = std::move(sc);
    return m;
}
template <class T>
std::unique_ptr<Module<T>> load_model_from_string(const std::string& data, data::StandardScaler* scaler = nullptr,
                                                  const std::string& source = "<memory>") {
    return load_model_from_bytes<T>(data.data(), data.size(), scaler, source);
}
/// Keras' load_model: the model a whole-model file (nn::save) holds.
template <class T>
std::unique_ptr<Module<T>> load_model(const std::string& path, data::StandardScaler* scaler = nullptr) {
    const std::string data = io::read_model_bytes(path, "nn::load_model");
    return load_model_from_bytes<T>(data.data(), data.size(), scaler, path);
}
/// The same for a file whose model is a Sequential (for code that walks its layers, such as
/// deploy::to_model); format_error when it is another layer.
template <class T>
Sequential<T> load_sequential(const std::string& path, data::StandardScaler* scaler = nullptr) {
    std::unique_ptr<Module<T>> m = load_model<T>(path, scaler);
    auto* s = dynamic_cast<Sequential<T>*>(m.get());
    if (!s) throw format_error(path + ": the model is a " + m->type_name() + ", not a Sequential (use nn::load_model)");
    return std::move(*s);
}

} // namespace nn
} // namespace tapir
