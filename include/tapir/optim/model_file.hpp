#pragma once
/// An optimiser's state in a model file, written and read by the optimiser's side: the state
/// goes to io/ as a plain io::OptimizerState (io/ knows no optimiser), and what the file holds
/// comes back into the optimiser only after io has validated the whole file.
///
///     optim::save_model("run.tpr", model.named_parameters(), &adam);  // or unqualified: found
///     optim::load_model("run.tpr", model.named_parameters(), &adam);  // by argument lookup
///
/// The functions mirror io's (save_model, save_model_to_string/_bytes, load_model,
/// load_model_from_string/_bytes), with or without buffers (named_buffers()); a null
/// optimiser saves or loads the parameters (and buffers) only.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../io/model_file.hpp"
#include "optimizer.hpp"

namespace tapir {
namespace optim {

/// The optimiser's section as io writes it: name, iteration count, (scheduled) learning rate and
/// the named state tensors (allocated on first use, so a fresh optimiser can receive a state).
template <class T>
io::OptimizerState<T> file_state(Optimizer<T>& opt) {
    io::OptimizerState<T> s;
    s.name = opt.name();
    s.iterations = opt.iterations();
    s.learning_rate = static_cast<double>(opt.learning_rate());
    s.tensors = opt.state();
    return s;
}

namespace detail {
/// After io has filled the tensors: the iteration count and learning rate (validated by io).
template <class T>
void apply_file_state(Optimizer<T>& opt, const io::OptimizerState<T>& s) {
    opt.set_iterations(static_cast<std::size_t>(s.iterations));
    opt.set_scheduled_learning_rate(static_cast<T>(s.learning_rate));
}

template <class T, class Load>
void load_with(Optimizer<T>* opt, const Load& load) {
    if (!opt) {
        load(static_cast<io::OptimizerState<T>*>(nullptr));
        return;
    }
    io::OptimizerState<T> s = file_state(*opt);
    load(&s);
    apply_file_state(*opt, s);
}
} // namespace detail

template <class T>
std::string save_model_to_string(const io::NamedParameters<T>& params, Optimizer<T>* optimizer) {
    if (!optimizer) return io::save_model_to_string(params);
    const io::OptimizerState<T> s = file_state(*optimizer);
    return io::save_model_to_string(params, &s);
}
template <class T>
std::vector<std::uint8_t> save_model_to_bytes(const io::NamedParameters<T>& params, Optimizer<T>* optimizer) {
    if (!optimizer) return io::save_model_to_bytes(params);
    const io::OptimizerState<T> s = file_state(*optimizer);
    return io::save_model_to_bytes(params, &s);
}
/// The parameters and the optimiser's name, iteration count, learning rate and state, written
/// atomically (io::save_model).
template <class T>
void save_model(const std::string& path, const io::NamedParameters<T>& params, Optimizer<T>* optimizer) {
    if (!optimizer) return io::save_model(path, params);
    const io::OptimizerState<T> s = file_state(*optimizer);
    io::save_model(path, params, &s);
}

/// Loads parameters and optimiser state; all or nothing, as io::load_model.
template <class T>
void load_model_from_bytes(const void* data, std::size_t size, const io::NamedParameters<T>& params, Optimizer<T>* optimizer,
                           const std::string& source = "<memory>") {
    detail::load_with(optimizer, [&](io::OptimizerState<T>* s) { io::load_model_from_bytes(data, size, params, s, source); });
}
template <class T>
void load_model_from_bytes(const std::vector<std::uint8_t>& data, const io::NamedParameters<T>& params, Optimizer<T>* optimizer,
                           const std::string& source = "<memory>") {
    detail::load_with(optimizer, [&](io::OptimizerState<T>* s) { io::load_model_from_bytes(data, params, s, source); });
}
template <class T>
void load_model_from_string(const std::string& data, const io::NamedParameters<T>& params, Optimizer<T>* optimizer,
                            const std::string& source = "<memory>") {
    detail::load_with(optimizer, [&](io::OptimizerState<T>* s) { io::load_model_from_string(data, params, s, source); });
}
template <class T>
void load_model(const std::string& path, const io::NamedParameters<T>& params, Optimizer<T>* optimizer) {
    detail::load_with(optimizer, [&](io::OptimizerState<T>* s) { io::load_model(path, params, s); });
}

// ---- with buffers (BatchNorm running statistics): format version 2 when there are any ----------
template <class T>
std::string save_model_to_string(const io::NamedParameters<T>& params, const io::NamedBuffers<T>& buffers, Optimizer<T>* optimizer) {
    if (!optimizer) return io::save_model_to_string(params, buffers);
    const io::OptimizerState<T> s = file_state(*optimizer);
    return io::save_model_to_string(params, buffers, &s);
}
template <class T>
void save_model(const std::string& path, const io::NamedParameters<T>& params, const io::NamedBuffers<T>& buffers, Optimizer<T>* optimizer) {
    if (!optimizer) return io::save_model(path, params, buffers);
    const io::OptimizerState<T> s = file_state(*optimizer);
    io::save_model(path, params, buffers, &s);
}
template <class T>
void load_model_from_string(const std::string& data, const io::NamedParameters<T>& params, const io::NamedBuffers<T>& buffers,
                            Optimizer<T>* optimizer, const std::string& source = "<memory>") {
    detail::load_with(optimizer, [&](io::OptimizerState<T>* s) { io::load_model_from_string(data, params, buffers, s, source); });
}
template <class T>
void load_model(const std::string& path, const io::NamedParameters<T>& params, const io::NamedBuffers<T>& buffers, Optimizer<T>* optimizer) {
    detail::load_with(optimizer, [&](io::OptimizerState<T>* s) { io::load_model(path, params, buffers, s); });
}

} // namespace optim
} // namespace tapir
