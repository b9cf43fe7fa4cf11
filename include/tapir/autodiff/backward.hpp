#pragma once
/// Reverse-mode passes over a tape: backward() for training (first order, eager, accumulates
/// into parameters) and grad() for gradients as values, optionally recorded (create_graph) so
/// that they can be differentiated again.

#include <cstdint>
#include <string>
#include <vector>

#include "kernels.hpp"
#include "ops.hpp"
#include "tape.hpp"

namespace tapir {
namespace detail {

/// Rules run here compute into the arena and record nothing.
template <class T>
struct EagerContext {
    using value = Ref<T>;
    Tape<T>& t;
    std::vector<Ref<T>>& grads;

    const Ref<T>& in(const Node<T>& n, int k) const { return t.node(n.in[k]).out; }
    const Ref<T>& out(const Node<T>& n) const { return n.out; }
    const Shape& shape(const Node<T>& n, int k) const { return t.node(n.in[k]).out.shape; }
    bool needs(const Node<T>& n, int k) const { return n.in[k] >= 0 && t.node(n.in[k]).requires_grad; }
    void acc(const Node<T>& n, int k, const Ref<T>& v) {
        Ref<T>& g = grads[static_cast<std::size_t>(n.in[k])];
        g = g.data ? k_add(t, g, v) : v;  // out of place: gradient buffers may be shared
    }

    Ref<T> add(const Ref<T>& a, const Ref<T>& b) { return k_add(t, a, b); }
    Ref<T> sub(const Ref<T>& a, const Ref<T>& b) { return k_sub(t, a, b); }
    Ref<T> mul(const Ref<T>& a, const Ref<T>& b) { return k_mul(t, a, b); }
    Ref<T> div(const Ref<T>& a, const Ref<T>& b) { return k_div(t, a, b); }
    Ref<T> neg(const Ref<T>& a) { return k_unary(t, a, [](T x) { return -x; }); }
    Ref<T> scale(const Ref<T>& a, T c) { return k_unary(t, a, [c](T x) { return x * c; }); }
    Ref<T> add_scalar(const Ref<T>& a, T c) { return k_unary(t, a, [c](T x) { return x + c; }); }
    Ref<T> pow(const Ref<T>& a, T p) { return k_unary(t, a, [p](T x) { return std::pow(x, p); }); }
    Ref<T> exp(const Ref<T>& a) {
        Ref<T> r = t.alloc(a.shape);
        simd::exp(a.data, r.data, a.size());
        return r;
    }
    Ref<T> sigmoid(const Ref<T>& a) {
        Ref<T> r = t.alloc(a.shape);
        simd::sigmoid(a.data, r.data, a.size());
        return r;
    }
    Ref<T> matmul(const Ref<T>& a, const Ref<T>& b, bool ta, bool tb) { return k_matmul(t, a, b, ta, tb); }
    Ref<T> transpose(const Ref<T>& a) { return k_transpose(t, a); }
    Ref<T> reshape(const Ref<T>& a, const Shape& s) { return k_reshape(a, s); }
    Ref<T> broadcast_to(const Ref<T>& a, const Shape& s) { return k_broadcast_to(t, a, s); }
    Ref<T> sum_to(const Ref<T>& a, const Shape& s) { return k_sum_to(t, a, s); }
    Ref<T> sum_keep(const Ref<T>& a, std::int32_t axis) { return k_sum_axis(t, a, static_cast<std::size_t>(axis), true); }
    Ref<T> slice(const Ref<T>& a, std::size_t axis, std::size_t start, std::size_t len) { return k_slice(t, a, axis, start, len); }
    Ref<T> pad(const Ref<T>& a, std::size_t axis, std::size_t start, std::size_t total) { return k_pad(t, a, axis, start, total); }
    Ref<T> gather_rows(const Ref<T>& a, const std::int64_t* idx, std::size_t n) { return k_gather_rows(t, a, idx, n); }
    Ref<T> scatter_rows(const Ref<T>& g, const std::int64_t* idx, std::size_t nrows) { return k_scatter_rows(t, g, idx, nrows); }
    Ref<T> act_grad(const Ref<T>& g, const Ref<T>& y, Activation act, T alpha) { return k_act_grad(t, g, y, act, alpha); }
    Ref<T> positive_mask(const Ref<T>& a) { return k_unary(t, a, [](T x) { return x > T(0) ? T(1) : T(0); }); }
    Ref<T> sign(const Ref<T>& a) { return k_unary(t, a, [](T x) { return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0)); }); }
    Ref<T> inrange_mask(const Ref<T>& a, T lo, T hi) { return k_unary(t, a, [lo, hi](T x) { return x >= lo && x <= hi ? T(1) : T(0); }); }
    Ref<T> leaky_slope(const Ref<T>& a, T alpha) { return k_unary(t, a, [alpha](T x) { return x > T(0) ? T(1) : alpha; }); }
    Ref<T> extreme_mask(const Ref<T>& a, std::int32_t axis, bool is_max) { return k_extreme_mask(t, a, static_cast<std::size_t>(axis), is_max); }
};

/// Rules run here record every step, so the gradients they produce are differentiable.
template <class T>
struct RecordContext {
    using value = Var<T>;
    Tape<T>& t;
    std::vector<std::int32_t>& grads;
    std::int32_t current = -1;

    Var<T> in(const Node<T>& n, int k) const { return t.var(n.in[k]); }
    Var<T> out(const Node<T>&) const { return t.var(current); }
    const Shape& shape(const Node<T>& n, int k) const { return t.node(n.in[k]).out.shape; }
    bool needs(const Node<T>& n, int k) const { return n.in[k] >= 0 && t.node(n.in[k]).requires_grad; }
    void acc(const Node<T>& n, int k, const Var<T>& v) {
        std::int32_t& g = grads[static_cast<std::size_t>(n.in[k])];
        g = g >= 0 ? tapir::add(t.var(g), v).index() : v.index();
    }

    Var<T> add(const Var<T>& a, const Var<T>& b) { return tapir::add(a, b); }
    Var<T> sub(const Var<T>& a, const Var<T>& b) { return tapir::sub(a, b); }
    Var<T> mul(const Var<T>& a, const Var<T>& b) { return tapir::mul(a, b); }
    Var<T> div(const Var<T>& a, const Var<T>& b) { return tapir::div(a, b); }
    Var<T> neg(const Var<T>& a) { return tapir::neg(a); }
    Var<T> scale(const Var<T>& a, T c) { return tapir::scale(a, c); }
    Var<T> add_scalar(const Var<T>& a, T c) { return tapir::add_scalar(a, c); }
    Var<T> pow(const Var<T>& a, T p) { return tapir::pow(a, p); }
    Var<T> exp(const Var<T>& a) { return tapir::exp(a); }
    Var<T> sigmoid(const Var<T>& a) { return tapir::sigmoid(a); }
    Var<T> matmul(const Var<T>& a, const Var<T>& b, bool ta, bool tb) { return tapir::matmul(a, b, ta, tb); }
    Var<T> transpose(const Var<T>& a) { return tapir::transpose(a); }
    Var<T> reshape(const Var<T>& a, const Shape& s) { return tapir::reshape(a, s); }
    Var<T> broadcast_to(const Var<T>& a, const Shape& s) { return tapir::broadcast_to(a, s); }
    Var<T> sum_to(const Var<T>& a, const Shape& s) { return a.shape() == s ? a : tapir::sum_to(a, s); }
    Var<T> sum_keep(const Var<T>& a, std::int32_t axis) { return tapir::sum(a, axis, true); }
    Var<T> slice(const Var<T>& a, std::size_t axis, std::size_t start, std::size_t len) {
        return tapir::slice(a, static_cast<std::int64_t>(axis), start, len);
    }
    Var<T> pad(const Var<T>& a, std::size_t axis, std::size_t start, std::size_t total) {
        return tapir::pad(a, static_cast<std::int64_t>(axis), start, total);
    }
    Var<T> gather_rows(const Var<T>& a, const std::int64_t* idx, std::size_t n) { return tapir::gather_rows_raw(a, idx, n); }
    Var<T> scatter_rows(const Var<T>& g, const std::int64_t* idx, std::size_t nrows) { return tapir::scatter_rows_raw(g, idx, nrows); }
    /// The same derivative as k_act_grad, composed of differentiable ops.
    Var<T> act_grad(const Var<T>& g, const Var<T>& y, Activation act, T alpha) {
        switch (act) {
        case Activation::none: return g;
        case Activation::relu: return tapir::mul(g, tapir::positive_mask(y));
        case Activation::leaky_relu: return tapir::mul(g, tapir::leaky_slope(y, alpha));
        case Activation::elu: {
            const Var<T> pos = tapir::positive_mask(y);
            return tapir::mul(g, tapir::add(pos, tapir::mul(tapir::add_scalar(tapir::neg(pos), T(1)), tapir::add_scalar(y, alpha))));
        }
        case Activation::tanh: return tapir::sub(g, tapir::mul(g, tapir::mul(y, y)));
        case Activation::sigmoid: return tapir::mul(g, tapir::sub(y, tapir::mul(y, y)));
        case Activation::softplus: return tapir::sub(g, tapir::mul(g, tapir::exp(tapir::neg(y))));
        }
        return g;
    }
    Var<T> positive_mask(const Var<T>& a) { return tapir::positive_mask(a); }
    Var<T> sign(const Var<T>& a) { return tapir::sign(a); }
    Var<T> inrange_mask(const Var<T>& a, T lo, T hi) { return tapir::inrange_mask(a, lo, hi); }
    Var<T> leaky_slope(const Var<T>& a, T alpha) { return tapir::leaky_slope(a, alpha); }
    Var<T> extreme_mask(const Var<T>& a, std::int32_t axis, bool is_max) { return tapir::extreme_mask(a, axis, is_max); }
};

/// The one switch from op code to rule.
template <class O, class T, class V>
void dispatch_backward(O& o, const Node<T>& n, const V& g) {
    switch (n.op) {
    case Op::add: backward_add(o, n, g); break;
    case Op::sub: backward_sub(o, n, g); break;
    case Op::mul: backward_mul(o, n, g); break;
    case Op::div: backward_div(o, n, g); break;
    case Op::neg: backward_neg(o, n, g); break;
    case Op::scale: backward_scale(o, n, g); break;
    case Op::add_scalar: backward_add_scalar(o, n, g); break;
    case Op::rdiv_scalar: backward_rdiv_scalar(o, n, g); break;
    case Op::matmul: backward_matmul(o, n, g); break;
    case Op::transpose: backward_transpose(o, n, g); break;
    case Op::reshape: backward_reshape(o, n, g); break;
    case Op::broadcast_to: backward_broadcast_to(o, n, g); break;
    case Op::sum_to: backward_sum_to(o, n, g); break;
    case Op::sum_axis: backward_sum_axis(o, n, g); break;
    case Op::max_axis:
    case Op::min_axis: backward_extreme_axis(o, n, g); break;
    case Op::exp: backward_exp(o, n, g); break;
    case Op::log: backward_log(o, n, g); break;
    case Op::log1p: backward_log1p(o, n, g); break;
    case Op::sqrt: backward_sqrt(o, n, g); break;
    case Op::pow: backward_pow(o, n, g); break;
    case Op::abs: backward_abs(o, n, g); break;
    case Op::square: backward_square(o, n, g); break;
    case Op::clamp: backward_clamp(o, n, g); break;
    case Op::where: backward_where(o, n, g); break;
    case Op::tanh: backward_tanh(o, n, g); break;
    case Op::sigmoid: backward_sigmoid(o, n, g); break;
    case Op::relu: backward_relu(o, n, g); break;
    case Op::leaky_relu: backward_leaky_relu(o, n, g); break;
    case Op::elu: backward_elu(o, n, g); break;
    case Op::softplus: backward_softplus(o, n, g); break;
    case Op::log_sigmoid: backward_log_sigmoid(o, n, g); break;
    case Op::erf: backward_erf(o, n, g); break;
    case Op::softmax: backward_softmax(o, n, g); break;
    case Op::log_softmax: backward_log_softmax(o, n, g); break;
    case Op::logsumexp: backward_logsumexp(o, n, g); break;
    case Op::concat: backward_concat(o, n, g); break;
    case Op::slice: backward_slice(o, n, g); break;
    case Op::pad: backward_pad(o, n, g); break;
    case Op::gather_rows: backward_gather_rows(o, n, g); break;
    case Op::scatter_rows: backward_scatter_rows(o, n, g); break;
    case Op::grad_reverse: backward_grad_reverse(o, n, g); break;
    case Op::dense: backward_dense(o, n, g); break;
    case Op::bce_logits: backward_bce_logits(o, n, g); break;
    case Op::leaf:
    case Op::param:
    case Op::positive_mask:
    case Op::sign:
    case Op::inrange_mask:
    case Op::leaky_slope:
    case Op::extreme_mask:
    case Op::count_: break;
    }
}

template <class T>
std::int32_t max_index(const Var<T>* vs, std::size_t n) {
    std::int32_t m = -1;
    for (std::size_t i = 0; i < n; ++i) m = vs[i].index() > m ? vs[i].index() : m;
    return m;
}

/// First-order pass: grads[i] holds the gradient of node i afterwards.
template <class T>
void run_eager(Tape<T>& t, const Var<T>* outputs, std::size_t n_outputs, const Var<T>* seeds, bool into_params) {
    auto& grads = t.grad_refs();
    grads.assign(t.size(), Ref<T>{});
    EagerContext<T> ctx{t, grads};
    for (std::size_t k = 0; k < n_outputs; ++k) {
        const Var<T>& out = outputs[k];
        Ref<T> seed;
        if (seeds) {
            seed = seeds[k].ref();
            if (seed.shape != out.shape()) throw_shape("backward: gradient for output", out.shape(), seed.shape);
        } else {
            seed = t.alloc(out.shape());
            for (std::size_t i = 0; i < seed.size(); ++i) seed.data[i] = T(1);
        }
        Ref<T>& g = grads[static_cast<std::size_t>(out.index())];
        g = g.data ? k_add(t, g, seed) : seed;
    }
    const bool anomaly = t.detect_anomaly();
    for (std::int32_t i = max_index(outputs, n_outputs); i >= 0; --i) {
        const Node<T>& n = t.node(i);
        const Ref<T>& g = grads[static_cast<std::size_t>(i)];
        if (!n.requires_grad || g.data == nullptr) continue;
        if (n.op == Op::param) {
            if (into_params) {
                Tensor<T>& pg = n.param->grad;
                if (pg.shape() != n.out.shape) pg = Tensor<T>(n.out.shape);
                simd::add(pg.data(), g.data, pg.data(), g.size());
            }
            continue;
        }
        dispatch_backward(ctx, n, g);
        if (TAPIR_UNLIKELY(anomaly)) {
            for (int k = 0; k < 3; ++k)
                if (n.in[k] >= 0 && grads[static_cast<std::size_t>(n.in[k])].data)
                    t.check_finite(static_cast<std::size_t>(i), n.op, "backward", grads[static_cast<std::size_t>(n.in[k])]);
        }
    }
}

} // namespace detail

/// Backpropagates a single-valued output; parameter gradients accumulate into Parameter::grad and
/// leaf variables' gradients are read with Var::grad().
template <class T>
void backward(const Var<T>& output) {
    if (output.size() != 1)
        throw shape_error("backward: output of shape " + output.shape().str() +
                          " is not a single value; pass its gradient: backward(output, gradient)");
    detail::run_eager<T>(output.tape(), &output, 1, nullptr, true);
}
template <class T>
void backward(const Var<T>& output, const Var<T>& gradient) {
    detail::run_eager<T>(output.tape(), &output, 1, &gradient, true);
}

namespace detail {
/// grad() on arrays: result[k] for inputs[k]. No heap allocation of its own in steady state (the
/// tape's buffers are reused), so a training step that calls the one-input grad() allocates nothing.
template <class T>
void grad_into(const Var<T>* outputs, std::size_t n_out, const Var<T>* inputs, std::size_t n_in, bool create_graph,
               Var<T>* result) {
    if (n_out == 0) throw tape_error("grad: no outputs given");
    Tape<T>& t = outputs[0].tape();
    for (std::size_t k = 0; k < n_in; ++k) {
        if (&inputs[k].tape() != &t) throw tape_error("grad: input #" + std::to_string(k) + " is on a different tape");
        if (!inputs[k].requires_grad())
            throw tape_error("grad: input #" + std::to_string(k) + " does not require a gradient (a constant or detached value)");
    }
    if (!create_graph) {
        run_eager<T>(t, outputs, n_out, nullptr, false);
        for (std::size_t k = 0; k < n_in; ++k) {
            const Ref<T> g = t.grad_refs()[static_cast<std::size_t>(inputs[k].index())];
            result[k] = g.data ? t.leaf(g, false) : t.full(inputs[k].shape(), T(0));
        }
        return;
    }
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
        const Var<T> seed = t.full(outputs[o].shape(), T(1));
        std::int32_t& g = gv[static_cast<std::size_t>(outputs[o].index())];
        g = g >= 0 ? add(t.var(g), seed).index() : seed.index();
    }
    for (std::int32_t i = max_index(outputs, n_out); i >= 0; --i) {
        const std::int32_t gi = gv[static_cast<std::size_t>(i)];
        if (gi < 0) continue;
        const Node<T> n = t.node(i);  // a copy: rules append nodes, which may move the node storage
        if (!n.requires_grad || n.op == Op::param || n.op == Op::leaf) continue;
        ctx.current = i;
        dispatch_backward(ctx, n, t.var(gi));
    }
    for (std::size_t k = 0; k < n_in; ++k) {
        const std::int32_t gi = gv[static_cast<std::size_t>(inputs[k].index())];
        result[k] = gi >= 0 ? t.var(gi) : t.full(inputs[k].shape(), T(0));
    }
}
} // namespace detail

/// Gradients of the sum of `outputs` with respect to `inputs`, as values on the same tape.
/// With create_graph the backward pass is recorded, so the results can be differentiated again
/// (gradient penalties, Hessians). Parameter::grad is left untouched. An input the outputs do not
/// depend on gets a zero gradient.
template <class T>
std::vector<Var<T>> grad(const std::vector<Var<T>>& outputs, const std::vector<Var<T>>& inputs, bool create_graph = false) {
    std::vector<Var<T>> result(inputs.size());
    detail::grad_into(outputs.data(), outputs.size(), inputs.data(), inputs.size(), create_graph, result.data());
    return result;
}
template <class T>
std::vector<Var<T>> grad(const Var<T>& output, const std::vector<Var<T>>& inputs, bool create_graph = false) {
    std::vector<Var<T>> result(inputs.size());
    detail::grad_into(&output, 1, inputs.data(), inputs.size(), create_graph, result.data());
    return result;
}
/// One output, one input: allocates nothing (the gradient penalty's case, five times per WGAN step).
template <class T>
Var<T> grad(const Var<T>& output, const Var<T>& input, bool create_graph = false) {
    Var<T> result;
    detail::grad_into(&output, 1, &input, 1, create_graph, &result);
    return result;
}

} // namespace tapir
