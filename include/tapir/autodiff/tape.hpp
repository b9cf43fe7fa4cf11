#pragma once
/// The tape: nodes in recording order, values in an arena, parameters outside.
///
/// A Var is two words (tape pointer, node index) plus a generation counter that catches use
/// after clear(). Nodes live in one vector whose capacity survives clear(); backward walks them
/// in reverse index order, which is already topological, so there is no recursion and no sort.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "../tensor/tensor.hpp"
#include "../simd/activation.hpp"
#include "arena.hpp"
#include "parameter.hpp"

namespace tapir {

template <class T>
class Tape;
template <class T>
class Var;

/// A value on the tape: a pointer into the arena (or a parameter) and a shape. Immutable once written.
template <class T>
struct Ref {
    T* data = nullptr;
    Shape shape{};
    std::size_t size() const noexcept { return shape.numel(); }
};

/// A value computed by the eager backward pass: arena data, no node. Backward rules are written
/// once over the value type V (Var<T> or Eager<T>) and every op accepts both.
template <class T>
struct Eager {
    Ref<T> r;  // first, where a Ref is copied from, so that copies move whole 16-byte words
    Tape<T>* t;
    const Shape& shape() const noexcept { return r.shape; }
    std::size_t size() const noexcept { return r.shape.numel(); }
};

namespace detail {
template <class T>
struct EagerContext;
template <class T>
struct RecordContext;
} // namespace detail
template <class T>
struct Node;

/// An op's identity: its name and the two instantiations of its backward rule (eager values for
/// the first-order pass, recorded values for create_graph). Defined by TAPIR_OP beside the op;
/// a node points to its op's descriptor, so the tape needs no list of ops.
template <class T>
struct OpDef {
    const char* name;
    void (*eager)(detail::EagerContext<T>&, const Node<T>&, const Eager<T>&);
    void (*record)(detail::RecordContext<T>&, const Node<T>&, const Var<T>&);
};

/// Leaves: constants and variables (data in the arena or the user's), and parameters (gradient
/// accumulates into Parameter::grad). They have no rule: the backward pass ends at them.
template <class T>
inline constexpr OpDef<T> op_leaf{"leaf", nullptr, nullptr};
template <class T>
inline constexpr OpDef<T> op_param{"param", nullptr, nullptr};

/// Where backward() accumulates parameter gradients instead of Parameter::grad: a data-parallel
/// worker (nn/data_parallel.hpp) records on its own tape with the shared parameters and keeps its
/// gradients in its own buffers, so that threads never write the same memory.
template <class T>
struct GradSink {
    virtual Tensor<T>& grad_of(Parameter<T>& p) = 0;

protected:
    ~GradSink() = default;
};

template <class T>
struct Node {
    Ref<T> out;
    std::int32_t in[3] = {-1, -1, -1};
    const OpDef<T>* op = &op_leaf<T>;
    bool requires_grad = false;
    std::uint8_t flags = 0;  // matmul: bit0 = transpose a, bit1 = transpose b; sum: keepdim; dense: has bias
    std::uint8_t act = 0;    // dense: Activation
    std::int32_t axis = 0;
    T a0 = T(0), a1 = T(0);  // scalar attributes (exponent, alpha, bounds, offsets)
    std::size_t i0 = 0;  // integer attribute (slice and pad offset)
    Parameter<T>* param = nullptr;
    const std::int64_t* index = nullptr;  // gather/scatter row indices (in the arena)
};

namespace detail {
[[noreturn]] inline void throw_stale_var() {
    throw tape_error("Var used after its tape was cleared (or on a different tape generation)");
}
} // namespace detail

template <class T>
class Var {
public:
    using value_type = T;
    Var() = default;
    Var(Tape<T>* t, std::int32_t idx, std::uint32_t gen) noexcept : tape_(t), idx_(idx), gen_(gen) {}

    bool valid() const noexcept { return tape_ != nullptr; }
    Tape<T>& tape() const {
        check();
        return *tape_;
    }
    std::int32_t index() const noexcept { return idx_; }
    const Node<T>& node() const {
        check();
        return tape_->node(idx_);
    }
    const Ref<T>& ref() const { return node().out; }  ///< valid until the next op is recorded
    Shape shape() const { return ref().shape; }       ///< a copy: recording moves the node storage
    std::size_t size() const { return ref().shape.numel(); }
    const T* data() const { return ref().data; }
    bool requires_grad() const { return node().requires_grad; }
    T item() const {
        const Ref<T>& r = ref();
        if (r.shape.numel() != 1) throw shape_error("Var::item: value of shape " + r.shape.str() + " is not a single value");
        return r.data[0];
    }
    T operator[](std::size_t i) const { return ref().data[i]; }
    /// Copy of the value as a Tensor.
    Tensor<T> value() const {
        const Ref<T>& r = ref();
        return Tensor<T>(r.shape, r.data, r.shape.numel());
    }
    /// Gradient left by the last backward() on a leaf variable (grad() calls do not touch it). A
    /// parameter leaf's gradient may have gone straight into Parameter::grad (a dense layer's
    /// weight): then this throws tape_error saying so; read Parameter::grad.
    Tensor<T> grad() const { return tape().leaf_grad(idx_); }

private:
    void check() const {
        if (TAPIR_UNLIKELY(tape_ == nullptr)) throw tape_error("Var: empty handle");
        if (TAPIR_UNLIKELY(gen_ != tape_->generation())) detail::throw_stale_var();
    }
    Tape<T>* tape_ = nullptr;
    std::int32_t idx_ = -1;
    std::uint32_t gen_ = 0;
};

template <class T>
class Tape {
public:
    using value_type = T;

    Tape() { nodes_.reserve(256); }
    Tape(const Tape&) = delete;
    Tape& operator=(const Tape&) = delete;

    // ---- leaves ----------------------------------------------------------------------------
    /// A constant copied into the arena (no gradient).
    Var<T> constant(const Tensor<T>& t) { return constant(t.data(), t.shape()); }
    Var<T> constant(const T* data, const Shape& s) {
        Ref<T> r = alloc(s);
        const std::size_t n = s.numel();
        for (std::size_t i = 0; i < n; ++i) r.data[i] = data[i];
        return leaf(r, false);
    }
    Var<T> scalar(T v) { return full(Shape{}, v); }
    Var<T> full(const Shape& s, T v) {
        Ref<T> r = alloc(s);
        const std::size_t n = s.numel();
        for (std::size_t i = 0; i < n; ++i) r.data[i] = v;
        return leaf(r, false);
    }
    /// A constant that aliases the caller's storage: no copy; the tensor must outlive the step.
    Var<T> view(const Tensor<T>& t) { return leaf(Ref<T>{const_cast<T*>(t.data()), t.shape()}, false); }
    /// A leaf that requires a gradient (copied into the arena); read it with Var::grad().
    Var<T> variable(const Tensor<T>& t) {
        Var<T> v = constant(t);
        nodes_[static_cast<std::size_t>(v.index())].requires_grad = grad_enabled_;
        return v;
    }
    /// A parameter's storage as a leaf; gradients accumulate into p.grad.
    Var<T> param(Parameter<T>& p) {
        Node<T> n;
        n.out = Ref<T>{p.value.data(), p.value.shape()};
        n.op = &op_param<T>;
        n.requires_grad = p.requires_grad && grad_enabled_;
        n.param = &p;
        return push_node(n);
    }

    /// Drop every node and arena value; keeps capacity so the next step does not allocate.
    void clear() noexcept {
        nodes_.clear();
        sent_to_param_.clear();
        labels_.clear();
        arena_.reset();
        ++generation_;
    }

    std::size_t size() const noexcept { return nodes_.size(); }
    std::uint32_t generation() const noexcept { return generation_; }
    const Node<T>& node(std::int32_t i) const noexcept { return nodes_[static_cast<std::size_t>(i)]; }
    Node<T>& node_mut(std::int32_t i) noexcept { return nodes_[static_cast<std::size_t>(i)]; }
    Var<T> var(std::int32_t i) noexcept { return Var<T>(this, i, generation_); }
    Arena& arena() noexcept { return arena_; }

    /// Parameter gradients of backward() go to sink (null: into Parameter::grad, the default).
    void set_grad_sink(GradSink<T>* sink) noexcept { grad_sink_ = sink; }
    GradSink<T>* grad_sink() const noexcept { return grad_sink_; }
    /// The buffer backward() accumulates p's gradient into.
    Tensor<T>& param_grad(Parameter<T>& p) { return grad_sink_ ? grad_sink_->grad_of(p) : p.grad; }

    bool grad_enabled() const noexcept { return grad_enabled_; }
    void set_grad_enabled(bool on) noexcept { grad_enabled_ = on; }

    /// Anomaly mode: the first op whose forward or backward value is not finite throws anomaly_error.
    void set_detect_anomaly(bool on) noexcept { detect_anomaly_ = on; }
    bool detect_anomaly() const noexcept { return detect_anomaly_; }
    /// A label recorded with subsequent nodes, named by anomaly errors (e.g. the layer name).
    void set_label(const char* label) noexcept { label_ = label; }
    const char* label() const noexcept { return label_; }

    // ---- recording (used by ops) ------------------------------------------------------------
    Ref<T> alloc(const Shape& s) { return Ref<T>{arena_.allocate_array<T>(s.numel()), s}; }

    Var<T> push_node(const Node<T>& n) {
        if (TAPIR_UNLIKELY(detect_anomaly_)) note_forward(*n.op, n.out);
        nodes_.push_back(n);
        return Var<T>(this, static_cast<std::int32_t>(nodes_.size() - 1), generation_);
    }

    /// Records an op with up to three inputs; requires_grad follows its inputs.
    Var<T> record(const OpDef<T>& op, const Ref<T>& out, std::int32_t a, std::int32_t b = -1, std::int32_t c = -1) {
        const Node<T>* nd = nodes_.data();
        const bool rg = grad_enabled_ && ((a >= 0 && nd[a].requires_grad) || (b >= 0 && nd[b].requires_grad) ||
                                          (c >= 0 && nd[c].requires_grad));
        if (TAPIR_UNLIKELY(detect_anomaly_)) note_forward(op, out);
        Node<T>& n = nodes_.emplace_back();
        n.out = out;
        n.op = &op;
        n.in[0] = a;
        n.in[1] = b;
        n.in[2] = c;
        n.requires_grad = rg;
        return Var<T>(this, static_cast<std::int32_t>(nodes_.size() - 1), generation_);
    }
    Var<T> leaf(const Ref<T>& r, bool requires_grad) {
        Node<T> n;
        n.out = r;
        n.requires_grad = requires_grad;
        return push_node(n);
    }

    /// Backward scratch, kept here so that its capacity survives between steps: grad_refs for
    /// backward() (read by Var::grad() until the next backward), grad_scratch for grad().
    std::vector<Ref<T>>& grad_refs() noexcept { return grad_refs_; }
    std::vector<Ref<T>>& grad_scratch() noexcept { return grad_scratch_; }
    std::vector<std::int32_t>& grad_vars() noexcept { return grad_vars_; }

    /// Parameter leaves whose gradient backward() added straight into the parameter's gradient
    /// buffer (EagerContext::acc_matmul): Var::grad() of them refuses rather than return a part.
    std::vector<std::int32_t>& sent_to_param() noexcept { return sent_to_param_; }

    Tensor<T> leaf_grad(std::int32_t i) const {
        const auto k = static_cast<std::size_t>(i);
        if (TAPIR_UNLIKELY(!sent_to_param_.empty()) && std::find(sent_to_param_.begin(), sent_to_param_.end(), i) != sent_to_param_.end())
            throw tape_error("Var::grad: backward() added the gradient of this leaf of parameter '" + nodes_[k].param->name +
                             "' into the parameter's gradient buffer; read it there (Parameter::grad, or the data-parallel shard's grad())");
        if (k >= grad_refs_.size() || grad_refs_[k].data == nullptr) {
            if (!nodes_[k].requires_grad) throw tape_error("Var::grad: this value does not require a gradient");
            return Tensor<T>(nodes_[k].out.shape);
        }
        return Tensor<T>(grad_refs_[k].shape, grad_refs_[k].data, grad_refs_[k].shape.numel());
    }

    /// Anomaly check of one value produced by node `index` (its output, or a gradient its rule made).
    void check_finite(std::size_t index, const OpDef<T>& op, const char* phase, const Ref<T>& r) const {
        const std::size_t m = r.shape.numel();
        for (std::size_t i = 0; i < m; ++i) {
            const T v = r.data[i];
            if (v - v == v - v) continue;  // finite
            std::string where = "node #" + std::to_string(index);
            const char* lab = index < labels_.size() ? labels_[index] : label_;
            if (lab && *lab) where += std::string(" in '") + lab + "'";
            throw anomaly_error(std::string("anomaly: ") + phase + " of op '" + op.name + "' (" + where + ", " +
                                (phase[0] == 'f' ? "output" : "gradient") + " shape " + r.shape.str() + ") produced " +
                                (v != v ? "NaN" : (v > 0 ? "+inf" : "-inf")) + " at element " + std::to_string(i));
        }
    }

private:
    void note_forward(const OpDef<T>& op, const Ref<T>& out) {
        check_finite(nodes_.size(), op, "forward", out);
        labels_.resize(nodes_.size() + 1, nullptr);
        labels_.back() = label_;
    }
    std::vector<Node<T>> nodes_;
    Arena arena_;
    std::vector<Ref<T>> grad_refs_, grad_scratch_;
    std::vector<std::int32_t> grad_vars_, sent_to_param_;
    std::vector<const char*> labels_;
    const char* label_ = nullptr;
    GradSink<T>* grad_sink_ = nullptr;
    std::uint32_t generation_ = 1;
    bool grad_enabled_ = true;
    bool detect_anomaly_ = false;
};

/// Disables gradient recording on a tape for its lifetime (inference, target networks).
template <class T>
class NoGradGuard {
public:
    explicit NoGradGuard(Tape<T>& t) noexcept : tape_(t), prev_(t.grad_enabled()) { t.set_grad_enabled(false); }
    ~NoGradGuard() { tape_.set_grad_enabled(prev_); }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    Tape<T>& tape_;
    bool prev_;
};

} // namespace tapir
