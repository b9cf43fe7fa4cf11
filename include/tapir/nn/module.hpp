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
#include "../random.hpp"
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

/// One line of summary(): "name (type)", output shape, parameter count; a graph also fills the
/// nodes it is connected to, and trainable ("Y", "N", "partly") is shown once a module is frozen.
struct SummaryRow {
    std::string name;
    std::string type;
    Shape output;
    std::size_t params = 0;
    std::string inputs;
    std::string trainable;

    SummaryRow() = default;
    SummaryRow(std::string n, std::string t, Shape out, std::size_t p, std::string in = {}, std::string tr = {})
        : name(std::move(n)), type(std::move(t)), output(std::move(out)), params(p), inputs(std::move(in)), trainable(std::move(tr)) {}
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

/// The data-parallel worker running on this thread (nn/data_parallel.hpp), if any. Layers whose
/// forward pass changes their own state read it, so that workers never write shared memory:
/// Dropout draws its masks from the worker's stream, BatchNorm updates its running statistics on
/// worker 0 only.
struct Replica {
    std::size_t index = 0;
    Rng* rng = nullptr;
};
inline Replica*& current_replica() noexcept {
    thread_local Replica* r = nullptr;
    return r;
}

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

    /// The entry of several inputs (features and a mask; jet-level and constituent-level), which
    /// nn::Model and multi-input training call. A layer of several inputs overrides it and
    /// num_inputs(); the default takes exactly one input and calls forward(x). (A separate name,
    /// not a forward overload, so that layers overriding forward(x) do not hide it.)
    virtual Var<T> forward_many(const std::vector<Var<T>>& inputs) {
        if (inputs.size() != 1)
            throw value_error(describe() + ": takes 1 input, got " + std::to_string(inputs.size()));
        return forward(inputs[0]);
    }
    /// How many inputs forward_many() takes; 0 = any number (forward_many checks).
    virtual std::size_t num_inputs() const { return 1; }
    Var<T> operator()(const std::vector<Var<T>>& inputs) { return forward_many(inputs); }
    /// m(x, mask), m(jets, constituents, mask): forward_many of the arguments.
    template <class... Rest>
    Var<T> operator()(const Var<T>& a, const Var<T>& b, const Rest&... rest) {
        return forward_many(std::vector<Var<T>>{a, b, rest...});
    }

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
        return scratch_run([&](Tape<T>& t) { return mut().forward(t.constant(Tensor<T>(input))).shape(); });
    }

    /// Output shape for several input shapes; the default runs forward_many() on a scratch tape
    /// (inputs filled with ones, so that masks count every entry).
    virtual Shape output_shape_many(const std::vector<Shape>& inputs) const {
        if (inputs.size() == 1) return output_shape(inputs[0]);
        return scratch_run([&](Tape<T>& t) {
            std::vector<Var<T>> xs;
            for (const Shape& s : inputs) xs.push_back(t.full(s, T(1)));
            return mut().forward_many(xs).shape();
        });
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

    // ---- transfer learning ---------------------------------------------------------------------
    /// Keras' layer.trainable = False: this module and every module below it are marked frozen
    /// and their parameters get requires_grad = false, so the tape records no gradient for them
    /// and optimisers, clipping and regularisers skip them. Modes are separate: a frozen
    /// BatchNorm still updates its running statistics in training mode (PyTorch's behaviour);
    /// call eval() on the frozen part as well to fix them (fit() keeps each module's mode).
    void freeze() { set_trainable(false); }
    /// Undoes freeze() for this module and every module below it.
    void unfreeze() { set_trainable(true); }
    void set_trainable(bool on) {
        for (Module* m : modules()) m->trainable_ = on;
        for (auto& p : named_parameters()) p.second->requires_grad = on;
    }
    /// This module's own flag (false after freeze()).
    bool is_trainable() const noexcept { return trainable_; }
    /// For summary(): "N" when frozen or when no parameter trains, "partly" when some do, else "Y".
    std::string trainable_mark() const {
        if (!trainable_) return "N";
        const std::size_t n = num_parameters(), t = num_trainable_parameters();
        return t == n ? "Y" : (t == 0 ? "N" : "partly");
    }
    /// Whether this module or one below it is frozen.
    bool any_frozen() const {
        for (Module* m : mut().modules())
            if (!m->trainable_) return true;
        return false;
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
        rows.push_back(SummaryRow{"model", describe(), output_shape(input), num_parameters(), "", trainable_mark()});
    }
    /// Rows for several inputs (an nn::Model lists its nodes); the default is one row for the module.
    virtual void summary_rows_many(const std::vector<Shape>& inputs, std::vector<SummaryRow>& rows) const {
        if (inputs.size() == 1) return summary_rows(inputs[0], rows);
        rows.push_back(SummaryRow{"model", describe(), output_shape_many(inputs), num_parameters(), "", trainable_mark()});
    }

    /// Keras-like table of layers, output shapes and parameter counts for an input shape that
    /// includes the batch axis, e.g. summary(Shape{32, 8}). A "Trainable" column (Keras'
    /// show_trainable) appears when asked for or when some module is frozen; a graph adds
    /// "Connected to".
    std::string summary(const Shape& input, bool show_trainable = false) const {
        return summary(std::vector<Shape>{input}, show_trainable);
    }
    /// The summary of a model of several inputs: summary({Shape{32, 16, 4}, Shape{32, 16}}).
    std::string summary(const std::vector<Shape>& inputs, bool show_trainable = false) const {
        std::vector<SummaryRow> rows;
        summary_rows_many(inputs, rows);
        bool connected = false;
        for (const auto& r : rows) connected = connected || !r.inputs.empty();
        const bool trainable_col = show_trainable || any_frozen();
        std::vector<std::string> c0, c1, c2, c3, c4;
        const std::string h0 = "Layer (type)", h1 = "Output shape", h2 = "Param #", h3 = "Connected to", h4 = "Trainable";
        std::size_t w0 = h0.size(), w1 = h1.size(), w2 = h2.size(), w3 = h3.size();
        for (const auto& r : rows) {
            c0.push_back(r.name + " (" + r.type + ")");
            c1.push_back(r.output.str());
            c2.push_back(std::to_string(r.params));
            c3.push_back(r.inputs);
            c4.push_back(r.trainable.empty() ? "-" : r.trainable);
            w0 = c0.back().size() > w0 ? c0.back().size() : w0;
            w1 = c1.back().size() > w1 ? c1.back().size() : w1;
            w2 = c2.back().size() > w2 ? c2.back().size() : w2;
            w3 = c3.back().size() > w3 ? c3.back().size() : w3;
        }
        w0 += 2;
        w1 += 2;
        const std::size_t width = w0 + w1 + w2 + (connected ? 2 + w3 : 0) + (trainable_col ? 2 + h4.size() : 0);
        const std::string rule(width, '=');
        std::string shapes;
        for (std::size_t i = 0; i < inputs.size(); ++i) shapes += (i ? ", " : "") + inputs[i].str();
        std::string s = "Model: " + describe() + (inputs.size() == 1 ? ", input shape " : ", input shapes ") + shapes + "\n";
        auto line = [&](const std::string& a, const std::string& b, const std::string& c, const std::string& d, const std::string& e) {
            std::string l = detail::pad_right(a, w0) + detail::pad_right(b, w1) + detail::pad_left(c, w2);
            if (connected) l += "  " + detail::pad_right(d, w3);
            if (trainable_col) l += "  " + e;
            while (!l.empty() && l.back() == ' ') l.pop_back();
            return l + "\n";
        };
        s += line(h0, h1, h2, h3, h4) + rule + "\n";
        for (std::size_t i = 0; i < rows.size(); ++i) s += line(c0[i], c1[i], c2[i], c3[i], c4[i]);
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

    /// For layers whose forward_many takes lo to hi inputs: the error naming the layer otherwise.
    void check_input_count(const std::vector<Var<T>>& inputs, std::size_t lo, std::size_t hi) const {
        if (inputs.size() < lo || inputs.size() > hi)
            throw value_error(describe() + ": takes " + std::to_string(lo) + " to " + std::to_string(hi) + " inputs, got " +
                              std::to_string(inputs.size()));
    }
    /// forward_many of a layer whose forward takes Lo to Hi values: forward(x), forward(x, a) or
    /// forward(x, a, b) by the number given (a mask, an interaction bias, ...).
    template <std::size_t Lo, std::size_t Hi, class L>
    static Var<T> forward_by_arity(L& layer, const std::vector<Var<T>>& in) {
        static_cast<const Module&>(layer).check_input_count(in, Lo, Hi);
        if constexpr (Hi >= 3) {
            if (in.size() == 3) return layer.forward(in[0], in[1], in[2]);
        }
        if constexpr (Hi >= 2) {
            if (in.size() == 2) return layer.forward(in[0], in[1]);
        }
        return layer.forward(in[0]);
    }

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

    /// f(tape) on a scratch tape without gradients, every module in eval mode; modes restored.
    template <class F>
    auto scratch_run(F f) const -> decltype(f(std::declval<Tape<T>&>())) {
        const std::vector<bool> modes = mut().training_modes();
        mut().eval();
        decltype(f(std::declval<Tape<T>&>())) out;
        try {
            Tape<T> t;
            NoGradGuard<T> guard(t);
            out = f(t);
        } catch (...) {
            mut().set_training_modes(modes);
            throw;
        }
        mut().set_training_modes(modes);
        return out;
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
    bool trainable_ = true;
};

/// clone() for a layer whose copy constructor is its deep copy (parameters, buffers and options
/// held by value), the curiously recurring template way: `class Dense : public Cloneable<Dense<T>,
/// Module<T>>`. Base is Module or a layer base between (ConvLayer, RecurrentLayer, ...), whose
/// constructors it inherits. The clone has the dynamic type Derived.
template <class Derived, class Base>
class Cloneable : public Base {
public:
    using Base::Base;
    std::unique_ptr<Module<typename Base::value_type>> clone() const override {
        return std::make_unique<Derived>(static_cast<const Derived&>(*this));
    }
};

namespace detail {
/// A layer whose one parameter is a weight matrix (rows, cols), as Embedding and CoLa: the matrix,
/// checked non-empty at construction (`what` names the sizes in the error), and its collection.
template <class Derived, class T>
class WeightMatrixLayer : public Cloneable<Derived, Module<T>> {
public:
    Parameter<T> weight;  ///< (rows, cols)

protected:
    WeightMatrixLayer(const char* layer, const char* what, std::size_t rows, std::size_t cols)
        : weight("weight", Tensor<T>(Shape{rows, cols})) {
        if (rows == 0 || cols == 0)
            throw value_error(std::string(layer) + ": " + what + " must be positive, got " + std::to_string(rows) + " x " +
                              std::to_string(cols));
    }
    std::size_t rows() const noexcept { return weight.value.shape()[0]; }
    std::size_t cols() const noexcept { return weight.value.shape()[1]; }
    void collect_parameters(std::vector<NamedParameter<T>>& out) override { out.emplace_back("weight", &weight); }
};

template <class T, class Run>
Var<T> call_with_params(Module<T>& m, const std::vector<Var<T>>& params, Run run) {
    const std::vector<NamedParameter<T>> named = m.named_parameters();
    if (named.size() != params.size())
        throw value_error("functional_call: " + std::to_string(params.size()) + " values given for " +
                          std::to_string(named.size()) + " parameters of " + m.describe());
    std::vector<ParamBinding<T>> bindings;
    for (std::size_t i = 0; i < named.size(); ++i) {
        if (params[i].shape() != named[i].second->shape())
            tapir::detail::throw_shape(("functional_call: parameter '" + named[i].first + "' vs value given").c_str(),
                                named[i].second->shape(), params[i].shape());
        bindings.push_back(ParamBinding<T>{named[i].second, params[i]});
    }
    struct Restore {
        const std::vector<ParamBinding<T>>* prev;
        ~Restore() { BindingState<T>::current = prev; }
    } restore{BindingState<T>::current};
    BindingState<T>::current = &bindings;
    return run();
}
} // namespace detail

/// Runs m on x with its parameters replaced by the given Vars (in parameters() order), like
/// torch.func.functional_call: gradients then flow into those Vars instead of Parameter::grad.
/// Used to gradcheck layers with respect to their weights, and for meta-learning.
template <class T>
Var<T> functional_call(Module<T>& m, const Var<T>& x, const std::vector<Var<T>>& params) {
    return detail::call_with_params(m, params, [&] { return m(x); });
}
/// The same for a model of several inputs (forward_many).
template <class T>
Var<T> functional_call(Module<T>& m, const std::vector<Var<T>>& inputs, const std::vector<Var<T>>& params) {
    return detail::call_with_params(m, params, [&] { return m.forward_many(inputs); });
}

} // namespace nn
} // namespace tapir
