#pragma once
/// The module base: a tree of layers with named parameters, train/eval modes, parameter counts
/// and a Keras-like summary().
///
/// A module lists its own parameters, buffers and children through virtual collectors instead
/// of storing pointers to its members, so layers stay copyable (clone()) without dangling
/// registrations. Forward passes record on the tape of their input; parameters enter the tape
/// through use(), which is tape.param(p) unless functional_call() has bound a Var in its place.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../tensor/shape.hpp"
#include "../tensor/tensor.hpp"

namespace tapir {
namespace nn {

/// What a layer is, for code that walks a model (export to fixed-size inference, printing).
/// A module reporting `dense` is a Dense<T>, `activation` an ActivationLayer<T>, `softmax` a
/// Softmax<T>, `dropout` a Dropout<T>, `batch_norm` a BatchNorm<T>, `layer_norm` a LayerNorm<T>,
/// `sequential` a Sequential<T>: a static_cast to that type is safe.
enum class LayerKind : std::uint8_t { dense, activation, softmax, dropout, batch_norm, layer_norm, sequential, custom };

inline const char* layer_kind_name(LayerKind k) noexcept {
    switch (k) {
    case LayerKind::dense: return "dense";
    case LayerKind::activation: return "activation";
    case LayerKind::softmax: return "softmax";
    case LayerKind::dropout: return "dropout";
    case LayerKind::batch_norm: return "batch_norm";
    case LayerKind::layer_norm: return "layer_norm";
    case LayerKind::sequential: return "sequential";
    case LayerKind::custom: return "custom";
    }
    return "?";
}

template <class T>
class Module;

template <class T>
using NamedParameter = std::pair<std::string, Parameter<T>*>;
template <class T>
using NamedBuffer = std::pair<std::string, Tensor<T>*>;
template <class T>
using NamedModule = std::pair<std::string, Module<T>*>;

/// One line of summary(): "name (type)", output shape, parameter count.
struct SummaryRow {
    std::string name;
    std::string type;
    Shape output;
    std::size_t params = 0;
};

namespace detail {
/// Parameters replaced by Vars for the duration of a functional_call (per thread).
template <class T>
struct ParamBinding {
    const Parameter<T>* param;
    Var<T> var;
};
template <class T>
struct BindingState {
    static thread_local const std::vector<ParamBinding<T>>* current;
};
template <class T>
thread_local const std::vector<ParamBinding<T>>* BindingState<T>::current = nullptr;

inline std::string join_name(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : (name.empty() ? prefix : prefix + "." + name);
}
inline std::string pad_right(const std::string& s, std::size_t w) { return s.size() >= w ? s : s + std::string(w - s.size(), ' '); }
inline std::string pad_left(const std::string& s, std::size_t w) { return s.size() >= w ? s : std::string(w - s.size(), ' ') + s; }
} // namespace detail

template <class T>
class Module {
public:
    using value_type = T;
    virtual ~Module() = default;

    /// Records the layer on x's tape and returns its output.
    virtual Var<T> forward(const Var<T>& x) = 0;
    Var<T> operator()(const Var<T>& x) { return forward(x); }

    /// Class name as shown by summary(): "Dense", "ReLU", ...
    virtual std::string type_name() const = 0;
    /// Type with its defining hyper-parameters ("Dense(relu)", "Dropout(0.2)").
    virtual std::string describe() const { return type_name(); }
    virtual LayerKind kind() const { return LayerKind::custom; }
    /// A deep copy (parameters, buffers, mode) of the same dynamic type.
    virtual std::unique_ptr<Module> clone() const = 0;

    /// Output shape for an input shape, checking the input as forward() would. The default runs
    /// forward() in eval mode on a scratch tape without gradients; layers override it.
    virtual Shape output_shape(const Shape& input) const {
        Module& self = const_cast<Module&>(*this);
        const std::vector<bool> modes = self.training_modes();
        self.eval();
        Tape<T> t;
        NoGradGuard<T> guard(t);
        Shape out;
        try {
            out = self.forward(t.constant(Tensor<T>(input))).shape();
        } catch (...) {
            self.set_training_modes(modes);
            throw;
        }
        self.set_training_modes(modes);
        return out;
    }

    /// Fusion hooks for Sequential: an activation layer reports its activation here; a layer that
    /// can apply an activation inside its own node says so and implements forward_fused().
    virtual Activation fusable_activation() const noexcept { return Activation::none; }
    virtual T activation_alpha() const noexcept { return T(0); }
    virtual bool can_fuse_activation() const noexcept { return false; }
    virtual Var<T> forward_fused(const Var<T>& x, Activation, T) { return forward(x); }

    // ---- modes ---------------------------------------------------------------------------------
    /// Training mode (the default) for this module and all below it; eval() for inference.
    void train(bool on = true) {
        training_ = on;
        for (auto& c : named_children()) c.second->train(on);
    }
    void eval() { train(false); }
    bool is_training() const noexcept { return training_; }
    /// This module's own flag only (children keep theirs), e.g. to freeze one BatchNorm.
    void set_training_flag(bool on) noexcept { training_ = on; }

    /// Mode flags of every module, depth first; set_training_modes() puts them back.
    std::vector<bool> training_modes() {
        std::vector<bool> out;
        for (Module* m : modules()) out.push_back(m->training_);
        return out;
    }
    void set_training_modes(const std::vector<bool>& modes) {
        const std::vector<Module*> ms = modules();
        if (ms.size() != modes.size())
            throw value_error("Module::set_training_modes: " + std::to_string(modes.size()) + " flags given for " +
                              std::to_string(ms.size()) + " modules");
        for (std::size_t i = 0; i < ms.size(); ++i) ms[i]->training_ = modes[i];
    }

    // ---- the tree ------------------------------------------------------------------------------
    std::vector<NamedModule<T>> named_children() {
        std::vector<NamedModule<T>> out;
        collect_children(out);
        return out;
    }
    /// This module and every module below it, depth first (this one first).
    std::vector<Module*> modules() {
        std::vector<Module*> out;
        add_modules(out);
        return out;
    }
    /// Parameters with dotted paths, PyTorch style: "0.weight", "2.bias", "encoder.0.weight".
    std::vector<NamedParameter<T>> named_parameters(const std::string& prefix = "") {
        std::vector<NamedParameter<T>> out;
        add_named_parameters(prefix, out);
        return out;
    }
    std::vector<Parameter<T>*> parameters() {
        std::vector<Parameter<T>*> out;
        for (auto& p : named_parameters()) out.push_back(p.second);
        return out;
    }
    /// Non-trained state (BatchNorm running statistics), to be saved with the parameters.
    std::vector<NamedBuffer<T>> named_buffers(const std::string& prefix = "") {
        std::vector<NamedBuffer<T>> out;
        add_named_buffers(prefix, out);
        return out;
    }

    std::size_t num_parameters() const {
        std::size_t n = 0;
        for (auto& p : mut().named_parameters()) n += p.second->size();
        return n;
    }
    std::size_t num_trainable_parameters() const {
        std::size_t n = 0;
        for (auto& p : mut().named_parameters())
            if (p.second->requires_grad) n += p.second->size();
        return n;
    }
    std::size_t num_buffer_elements() const {
        std::size_t n = 0;
        for (auto& b : mut().named_buffers()) n += b.second->size();
        return n;
    }

    void zero_grad() {
        for (auto& p : named_parameters()) p.second->zero_grad();
    }

    /// Sets every Parameter::name to its path from this module ("0.weight"), so that optimiser
    /// state and anomaly messages name parameters the way named_parameters() does.
    void update_parameter_names() {
        for (auto& p : named_parameters()) p.second->name = p.first;
    }

    // ---- summary -------------------------------------------------------------------------------
    /// Rows of summary() for this module; containers list their layers.
    virtual void summary_rows(const Shape& input, std::vector<SummaryRow>& rows) const {
        rows.push_back(SummaryRow{"model", describe(), output_shape(input), num_parameters()});
    }

    /// Keras-like table of layers, output shapes and parameter counts for an input shape that
    /// includes the batch axis, e.g. summary(Shape{32, 8}).
    std::string summary(const Shape& input) const {
        std::vector<SummaryRow> rows;
        summary_rows(input, rows);
        std::vector<std::string> c0, c1, c2;
        const std::string h0 = "Layer (type)", h1 = "Output shape", h2 = "Param #";
        std::size_t w0 = h0.size(), w1 = h1.size(), w2 = h2.size();
        for (const auto& r : rows) {
            c0.push_back(r.name + " (" + r.type + ")");
            c1.push_back(r.output.str());
            c2.push_back(std::to_string(r.params));
            w0 = c0.back().size() > w0 ? c0.back().size() : w0;
            w1 = c1.back().size() > w1 ? c1.back().size() : w1;
            w2 = c2.back().size() > w2 ? c2.back().size() : w2;
        }
        w0 += 2;
        w1 += 2;
        const std::string rule(w0 + w1 + w2, '=');
        std::string s = "Model: " + describe() + ", input shape " + input.str() + "\n";
        s += detail::pad_right(h0, w0) + detail::pad_right(h1, w1) + detail::pad_left(h2, w2) + "\n" + rule + "\n";
        for (std::size_t i = 0; i < rows.size(); ++i)
            s += detail::pad_right(c0[i], w0) + detail::pad_right(c1[i], w1) + detail::pad_left(c2[i], w2) + "\n";
        const std::size_t total = num_parameters(), trainable = num_trainable_parameters();
        s += rule + "\n";
        s += "Total params: " + std::to_string(total) + "\n";
        s += "Trainable params: " + std::to_string(trainable) + "\n";
        s += "Non-trainable params: " + std::to_string(total - trainable) + "\n";
        const std::size_t nb = num_buffer_elements();
        if (nb) s += "Buffers (running statistics, not parameters): " + std::to_string(nb) + "\n";
        return s;
    }

protected:
    Module() = default;
    Module(const Module&) = default;
    Module& operator=(const Module&) = default;

    /// Overridden by layers and user modules: own parameters and buffers (local names) and
    /// direct children.
    virtual void collect_parameters(std::vector<NamedParameter<T>>&) {}
    virtual void collect_buffers(std::vector<NamedBuffer<T>>&) {}
    virtual void collect_children(std::vector<NamedModule<T>>&) {}

    /// A parameter as a value on tape t: tape.param(p), or the Var bound by functional_call().
    Var<T> use(Tape<T>& t, Parameter<T>& p) const {
        if (TAPIR_UNLIKELY(detail::BindingState<T>::current != nullptr)) {
            for (const auto& b : *detail::BindingState<T>::current)
                if (b.param == &p) return b.var;
        }
        return t.param(p);
    }

private:
    Module& mut() const { return const_cast<Module&>(*this); }
    void add_modules(std::vector<Module*>& out) {
        out.push_back(this);
        for (auto& c : named_children()) c.second->add_modules(out);
    }
    void add_named_parameters(const std::string& prefix, std::vector<NamedParameter<T>>& out) {
        std::vector<NamedParameter<T>> own;
        collect_parameters(own);
        for (auto& p : own) out.emplace_back(detail::join_name(prefix, p.first), p.second);
        for (auto& c : named_children()) c.second->add_named_parameters(detail::join_name(prefix, c.first), out);
    }
    void add_named_buffers(const std::string& prefix, std::vector<NamedBuffer<T>>& out) {
        std::vector<NamedBuffer<T>> own;
        collect_buffers(own);
        for (auto& b : own) out.emplace_back(detail::join_name(prefix, b.first), b.second);
        for (auto& c : named_children()) c.second->add_named_buffers(detail::join_name(prefix, c.first), out);
    }

    bool training_ = true;
};

/// Runs m on x with its parameters replaced by the given Vars (in parameters() order), like
/// torch.func.functional_call: gradients then flow into those Vars instead of Parameter::grad.
/// Used to gradcheck layers with respect to their weights, and for meta-learning.
template <class T>
Var<T> functional_call(Module<T>& m, const Var<T>& x, const std::vector<Var<T>>& params) {
    const std::vector<NamedParameter<T>> named = m.named_parameters();
    if (named.size() != params.size())
        throw value_error("functional_call: " + std::to_string(params.size()) + " values given for " +
                          std::to_string(named.size()) + " parameters of " + m.describe());
    std::vector<detail::ParamBinding<T>> bindings;
    for (std::size_t i = 0; i < named.size(); ++i) {
        if (params[i].shape() != named[i].second->shape())
            tapir::detail::throw_shape(("functional_call: parameter '" + named[i].first + "' vs value given").c_str(),
                                named[i].second->shape(), params[i].shape());
        bindings.push_back(detail::ParamBinding<T>{named[i].second, params[i]});
    }
    struct Restore {
        const std::vector<detail::ParamBinding<T>>* prev;
        ~Restore() { detail::BindingState<T>::current = prev; }
    } restore{detail::BindingState<T>::current};
    detail::BindingState<T>::current = &bindings;
    return m(x);
}

} // namespace nn
} // namespace tapir
