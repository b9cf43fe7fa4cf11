#pragma once
/// Reverse-mode passes over a tape: backward() for training (first order, eager, accumulates
/// into parameters) and grad() for gradients as values, optionally recorded (create_graph) so
/// that they can be differentiated again. Each node's descriptor holds its rule instantiated for
/// the two contexts below; a rule sees them only through in/out/shape/needs/acc.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "../simd/fp_mode.hpp"
#include "kernels.hpp"
#include "tape.hpp"

namespace tapir {
namespace detail {

/// The eager first-order pass: values in the arena, gradients in grads[node].
template <class T>
struct EagerContext {
    using value = Eager<T>;
    Tape<T>& t;
    std::vector<Ref<T>>& grads;
    /// backward() (not grad(), which returns gradients of inner values): a rule may hand on a
    /// gradient with its producer's relu derivative already applied, marked here, which the
    /// producer's rule then does not apply again (max pooling after a relu convolution, conv.hpp).
    bool fuse = false;
    const T* relu_applied = nullptr;

    Eager<T> in(const Node<T>& n, int k) const { return Eager<T>{t.node(n.in[k]).out, &t}; }
    Eager<T> out(const Node<T>& n) const { return Eager<T>{n.out, &t}; }
    const Shape& shape(const Node<T>& n, int k) const { return t.node(n.in[k]).out.shape; }
    bool needs(const Node<T>& n, int k) const { return n.in[k] >= 0 && t.node(n.in[k]).requires_grad; }
    void acc(const Node<T>& n, int k, const Eager<T>& v) {
        Ref<T>& g = grads[static_cast<std::size_t>(n.in[k])];
        if (g.data) g = k_add(t, g, v.r);  // out of place: gradient buffers may be shared
        else g = v.r;
    }
    /// acc(n, k, matmul(a, b, ta, tb)); in backward(), when input k is a parameter (a weight
    /// gradient, X^T dZ) the product is added by the GEMM straight into the parameter's gradient
    /// buffer (beta = 1): no product in the arena and no second pass over a weight-sized array,
    /// which at small batches was a large part of a step (each call of a network on a tape makes
    /// its own parameter leaves). The same bits as before when the product is one K block of the
    /// GEMM or the buffer held zeros; otherwise the same sums in another fixed order. Not in
    /// anomaly mode, which checks every slot.
    void acc_matmul(const Node<T>& n, int k, const Eager<T>& a, const Eager<T>& b, bool ta, bool tb) {
        const Node<T>& in = t.node(n.in[k]);
        if (fuse && in.op == &op_param<T> && grads[static_cast<std::size_t>(n.in[k])].data == nullptr && !t.detect_anomaly() &&
            matmul_shape(a.r, b.r, ta, tb) == in.out.shape) {
            Tensor<T>& pg = t.param_grad(*in.param);
            if (pg.shape() != in.out.shape) pg = Tensor<T>(in.out.shape);
            matmul_into(a.r, b.r, ta, tb, T(1), pg.data());
            t.sent_to_param().push_back(n.in[k]);
            return;
        }
        acc(n, k, matmul(a, b, ta, tb));
    }
};

/// The recorded pass: every step is a node, so the gradients it produces are differentiable.
template <class T>
struct RecordContext {
    using value = Var<T>;
    Tape<T>& t;
    std::vector<std::int32_t>& grads;
    std::int32_t current = -1;

    Var<T> in(const Node<T>& n, int k) const { return t.var(n.in[k]); }
    Var<T> out(const Node<T>&) const { return t.var(current); }
    /// By value: the rule records nodes while it holds the shape, and the node storage may move.
    Shape shape(const Node<T>& n, int k) const { return t.node(n.in[k]).out.shape; }
    bool needs(const Node<T>& n, int k) const { return n.in[k] >= 0 && t.node(n.in[k]).requires_grad; }
    void acc(const Node<T>& n, int k, const Var<T>& v) {
        std::int32_t& g = grads[static_cast<std::size_t>(n.in[k])];
        g = g >= 0 ? add(t.var(g), v).index() : v.index();  // tapir::add, found by argument-dependent lookup
    }
    void acc_matmul(const Node<T>& n, int k, const Var<T>& a, const Var<T>& b, bool ta, bool tb) { acc(n, k, matmul(a, b, ta, tb)); }
};

template <class T>
std::int32_t max_index(const Var<T>* vs, std::size_t n) {
    std::int32_t m = -1;
    for (std::size_t i = 0; i < n; ++i) m = vs[i].index() > m ? vs[i].index() : m;
    return m;
}

/// Without seeds every output must be a single value (as backward() and PyTorch require).
template <class T>
void check_seeds(const char* who, const Var<T>* outputs, std::size_t n, const Var<T>* seeds) {
    for (std::size_t k = 0; k < n; ++k) {
        if (seeds && seeds[k].shape() != outputs[k].shape())
            throw_shape((std::string(who) + ": gradient for output").c_str(), outputs[k].shape(), seeds[k].shape());
        if (!seeds && outputs[k].size() != 1)
            throw shape_error(std::string(who) + ": output of shape " + outputs[k].shape().str() + " is not a single value; pass its gradient: " +
                              who + (who[0] == 'b' ? "(output, gradient)" : "(outputs, inputs, grad_outputs)"));
    }
}

/// First-order pass: grads[i] holds the gradient of node i afterwards.
template <class T>
void run_eager(Tape<T>& t, std::vector<Ref<T>>& grads, const Var<T>* outputs, std::size_t n_outputs, const Var<T>* seeds,
               bool into_params) {
    const simd::FlushDenormals flush;  // subnormal gradients stall Intel cores (simd/fp_mode.hpp)
    grads.assign(t.size(), Ref<T>{});
    if (into_params) t.sent_to_param().clear();  // grad() leaves backward()'s marks for Var::grad()
    EagerContext<T> ctx{t, grads};
    ctx.fuse = into_params;
    for (std::size_t k = 0; k < n_outputs; ++k) {
        const Ref<T> seed = seeds ? seeds[k].ref() : t.alloc(outputs[k].shape());
        for (std::size_t i = 0; !seeds && i < seed.size(); ++i) seed.data[i] = T(1);
        Ref<T>& g = grads[static_cast<std::size_t>(outputs[k].index())];
        g = g.data ? k_add(t, g, seed) : seed;
    }
    const bool anomaly = t.detect_anomaly();
    for (std::int32_t i = max_index(outputs, n_outputs); i >= 0; --i) {
        const Node<T>& n = t.node(i);
        const Ref<T>& g = grads[static_cast<std::size_t>(i)];
        if (!n.requires_grad || g.data == nullptr) continue;
        if (n.op == &op_param<T>) {
            if (into_params) {
                Tensor<T>& pg = t.param_grad(*n.param);
                if (pg.shape() != n.out.shape) pg = Tensor<T>(n.out.shape);
                simd::add(pg.data(), g.data, pg.data(), g.size());
            }
            continue;
        }
        if (n.op->eager == nullptr) continue;
        n.op->eager(ctx, n, Eager<T>{g, &t});
        if (TAPIR_UNLIKELY(anomaly)) {
            for (int k = 0; k < 3; ++k)
                if (n.in[k] >= 0 && grads[static_cast<std::size_t>(n.in[k])].data)
                    t.check_finite(static_cast<std::size_t>(i), *n.op, "backward", grads[static_cast<std::size_t>(n.in[k])]);
        }
    }
}

} // namespace detail

/// Backpropagates a single-valued output; parameter gradients accumulate into Parameter::grad and
/// leaf variables' gradients are read with Var::grad().
template <class T>
void backward(const Var<T>& output) {
    detail::check_seeds<T>("backward", &output, 1, nullptr);
    detail::run_eager<T>(output.tape(), output.tape().grad_refs(), &output, 1, nullptr, true);
}
template <class T>
void backward(const Var<T>& output, const Var<T>& gradient) {
    detail::check_seeds<T>("backward", &output, 1, &gradient);
    detail::run_eager<T>(output.tape(), output.tape().grad_refs(), &output, 1, &gradient, true);
}

namespace detail {
/// grad() on arrays: result[k] for inputs[k]. No heap allocation of its own in steady state (the
/// tape's buffers are reused), so a training step that calls the one-input grad() allocates nothing.
template <class T>
void grad_into(const Var<T>* outputs, std::size_t n_out, const Var<T>* inputs, std::size_t n_in, const Var<T>* seeds,
               bool create_graph, bool allow_unused, Var<T>* result) {
    if (n_out == 0) throw tape_error("grad: no outputs given");
    Tape<T>& t = outputs[0].tape();
    for (std::size_t k = 0; k < n_in; ++k) {
        if (&inputs[k].tape() != &t) throw tape_error("grad: input #" + std::to_string(k) + " is on a different tape");
        if (!inputs[k].requires_grad())
            throw tape_error("grad: input #" + std::to_string(k) + " does not require a gradient (a constant or detached value)");
    }
    check_seeds("grad", outputs, n_out, seeds);
    const auto unused = [&](std::size_t k) {
        if (!allow_unused)
            throw tape_error("grad: input #" + std::to_string(k) + " (shape " + inputs[k].shape().str() +
                             ") is not used to compute the outputs; pass allow_unused = true for a zero gradient");
        return t.full(inputs[k].shape(), T(0));
    };
    if (!create_graph) {
        auto& gs = t.grad_scratch();
        run_eager<T>(t, gs, outputs, n_out, seeds, false);
        for (std::size_t k = 0; k < n_in; ++k) {
            const Ref<T> g = gs[static_cast<std::size_t>(inputs[k].index())];
            result[k] = g.data ? t.leaf(g, false) : unused(k);
        }
        return;
    }
    const simd::FlushDenormals flush;
    struct EnableGrad {
        Tape<T>& tape;
        bool was;
        ~EnableGrad() { tape.set_grad_enabled(was); }
    } restore{t, t.grad_enabled()};
    t.set_grad_enabled(true);
    auto& gv = t.grad_vars();
    gv.assign(t.size(), -1);
    RecordContext<T> ctx{t, gv, -1};
    for (std::size_t o = 0; o < n_out; ++o) {
        const Var<T> seed = seeds ? seeds[o] : t.full(outputs[o].shape(), T(1));
        std::int32_t& g = gv[static_cast<std::size_t>(outputs[o].index())];
        g = g >= 0 ? add(t.var(g), seed).index() : seed.index();
    }
    for (std::int32_t i = max_index(outputs, n_out); i >= 0; --i) {
        const std::int32_t gi = gv[static_cast<std::size_t>(i)];
        if (gi < 0) continue;
        const Node<T> n = t.node(i);  // a copy: rules append nodes, which may move the node storage
        if (!n.requires_grad || n.op->record == nullptr) continue;
        ctx.current = i;
        n.op->record(ctx, n, t.var(gi));
    }
    for (std::size_t k = 0; k < n_in; ++k) {
        const std::int32_t gi = gv[static_cast<std::size_t>(inputs[k].index())];
        result[k] = gi >= 0 ? t.var(gi) : unused(k);
    }
}
} // namespace detail

/// Gradients of the sum of `outputs` (each a single value) with respect to `inputs`, as values
/// on the same tape (PyTorch's torch.autograd.grad; functional.hpp adds grad_outputs for outputs
/// of any shape). With create_graph the backward pass is recorded, so the results can be
/// differentiated again (gradient penalties, Hessians). An input the outputs do not depend on is
/// an error unless allow_unused (then its gradient is zero). Parameter::grad and Var::grad() are
/// left untouched.
template <class T>
std::vector<Var<T>> grad(const std::vector<Var<T>>& outputs, const std::vector<Var<T>>& inputs, bool create_graph = false,
                         bool allow_unused = false) {
    std::vector<Var<T>> result(inputs.size());
    detail::grad_into<T>(outputs.data(), outputs.size(), inputs.data(), inputs.size(), nullptr, create_graph, allow_unused, result.data());
    return result;
}
template <class T>
std::vector<Var<T>> grad(const Var<T>& output, const std::vector<Var<T>>& inputs, bool create_graph = false, bool allow_unused = false) {
    std::vector<Var<T>> result(inputs.size());
    detail::grad_into<T>(&output, 1, inputs.data(), inputs.size(), nullptr, create_graph, allow_unused, result.data());
    return result;
}
/// A braced list of inputs, even of one, gives a vector: grad(f, {a})[0] is a's gradient.
template <class T>
std::vector<Var<T>> grad(const Var<T>& output, std::initializer_list<Var<T>> inputs, bool create_graph = false, bool allow_unused = false) {
    std::vector<Var<T>> result(inputs.size());
    detail::grad_into<T>(&output, 1, inputs.begin(), inputs.size(), nullptr, create_graph, allow_unused, result.data());
    return result;
}
/// One output, one input: allocates nothing (the gradient penalty's case, five times per WGAN step).
template <class T>
Var<T> grad(const Var<T>& output, const Var<T>& input, bool create_graph = false, bool allow_unused = false) {
    Var<T> result;
    detail::grad_into<T>(&output, 1, &input, 1, nullptr, create_graph, allow_unused, &result);
    return result;
}
} // namespace tapir
