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

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../io/model_file.hpp"
#include "../optim/model_file.hpp"
#include "../optim/optimizer.hpp"
#include "module.hpp"

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

} // namespace nn
} // namespace tapir
