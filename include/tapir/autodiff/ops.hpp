#pragma once
/// Differentiable operations. Each op is written in one place: its recorded forward (a kernel
/// from kernels.hpp plus a node) and, right below it, its backward rule.
///
/// A backward rule is a template over a context `o` that offers the same ops in two modes:
/// eager (computes into the arena, records nothing: the fast first-order path) and recording
/// (creates nodes: used by grad(..., create_graph) so that gradients are differentiable again).
/// One rule therefore serves first and higher orders alike. In a rule, `o.in(n, k)` is the k-th
/// input's value, `o.out(n)` the node's value, `o.needs(n, k)` tells whether input k wants a
/// gradient, and `o.acc(n, k, v)` adds v to its gradient.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels.hpp"
#include "tape.hpp"

namespace tapir {

namespace detail {
template <class T>
Tape<T>& same_tape(const Var<T>& a, const Var<T>& b, const char* op) {
    Tape<T>& t = a.tape();
    if (&b.tape() != &t) throw tape_error(std::string(op) + ": operands are recorded on different tapes");
    return t;
}
template <class T>
Var<T> record1(Op op, const Var<T>& a, const Ref<T>& out, T a0 = T(0), T a1 = T(0)) {
    Tape<T>& t = a.tape();
    Var<T> v = t.record(op, out, a.index());
    Node<T>& n = t.node_mut(v.index());
    n.a0 = a0;
    n.a1 = a1;
    return v;
}
template <class T>
Var<T> record_axis(Op op, const Var<T>& a, const Ref<T>& out, std::size_t axis, bool keepdim) {
    Tape<T>& t = a.tape();
    Var<T> v = t.record(op, out, a.index());
    Node<T>& n = t.node_mut(v.index());
    n.axis = static_cast<std::int32_t>(axis);
    n.flags = keepdim ? 1 : 0;
    return v;
}
/// Shape of a reduced value with the reduced axis kept as 1, for broadcasting a gradient back.
inline Shape keepdim_shape(const Shape& in, std::int32_t axis) { return reduced_shape(in, static_cast<std::size_t>(axis), true); }
} // namespace detail

// ---- add, sub, mul, div: broadcasting binary ops ---------------------------------------------

template <class T>
Var<T> add(const Var<T>& a, const Var<T>& b) {
    Tape<T>& t = detail::same_tape(a, b, "add");
    return t.record(Op::add, detail::k_add(t, t.node(a.index()).out, t.node(b.index()).out), a.index(), b.index());
}
template <class O, class T, class V>
void backward_add(O& o, const Node<T>& n, const V& g) {
    if (o.needs(n, 0)) o.acc(n, 0, o.sum_to(g, o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, o.sum_to(g, o.shape(n, 1)));
}

template <class T>
Var<T> sub(const Var<T>& a, const Var<T>& b) {
    Tape<T>& t = detail::same_tape(a, b, "sub");
    return t.record(Op::sub, detail::k_sub(t, t.node(a.index()).out, t.node(b.index()).out), a.index(), b.index());
}
template <class O, class T, class V>
void backward_sub(O& o, const Node<T>& n, const V& g) {
    if (o.needs(n, 0)) o.acc(n, 0, o.sum_to(g, o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, o.sum_to(o.neg(g), o.shape(n, 1)));
}

template <class T>
Var<T> mul(const Var<T>& a, const Var<T>& b) {
    Tape<T>& t = detail::same_tape(a, b, "mul");
    return t.record(Op::mul, detail::k_mul(t, t.node(a.index()).out, t.node(b.index()).out), a.index(), b.index());
}
template <class O, class T, class V>
void backward_mul(O& o, const Node<T>& n, const V& g) {
    if (o.needs(n, 0)) o.acc(n, 0, o.sum_to(o.mul(g, o.in(n, 1)), o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, o.sum_to(o.mul(g, o.in(n, 0)), o.shape(n, 1)));
}

template <class T>
Var<T> div(const Var<T>& a, const Var<T>& b) {
    Tape<T>& t = detail::same_tape(a, b, "div");
    return t.record(Op::div, detail::k_div(t, t.node(a.index()).out, t.node(b.index()).out), a.index(), b.index());
}
template <class O, class T, class V>
void backward_div(O& o, const Node<T>& n, const V& g) {
    const V gb = o.div(g, o.in(n, 1));  // d(a/b)/da = 1/b, d(a/b)/db = -(a/b)/b
    if (o.needs(n, 0)) o.acc(n, 0, o.sum_to(gb, o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, o.sum_to(o.neg(o.mul(gb, o.out(n))), o.shape(n, 1)));
}

// ---- scalar ops ---------------------------------------------------------------------------

template <class T>
Var<T> neg(const Var<T>& a) {
    Tape<T>& t = a.tape();
    return t.record(Op::neg, detail::k_unary(t, a.ref(), [](T x) { return -x; }), a.index());
}
template <class O, class T, class V>
void backward_neg(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.neg(g));
}

/// a * c for a constant c.
template <class T>
Var<T> scale(const Var<T>& a, T c) {
    Tape<T>& t = a.tape();
    return detail::record1(Op::scale, a, detail::k_unary(t, a.ref(), [c](T x) { return x * c; }), c);
}
template <class O, class T, class V>
void backward_scale(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.scale(g, n.a0));
}

/// a + c for a constant c.
template <class T>
Var<T> add_scalar(const Var<T>& a, T c) {
    Tape<T>& t = a.tape();
    return detail::record1(Op::add_scalar, a, detail::k_unary(t, a.ref(), [c](T x) { return x + c; }), c);
}
template <class O, class T, class V>
void backward_add_scalar(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, g);
}

/// c / a for a constant c.
template <class T>
Var<T> rdiv_scalar(T c, const Var<T>& a) {
    Tape<T>& t = a.tape();
    return detail::record1(Op::rdiv_scalar, a, detail::k_unary(t, a.ref(), [c](T x) { return c / x; }), c);
}
template <class O, class T, class V>
void backward_rdiv_scalar(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.neg(o.div(o.mul(g, o.out(n)), o.in(n, 0))));  // d(c/a)/da = -(c/a)/a
}

// ---- linear algebra and shapes --------------------------------------------------------------

/// op(a) * op(b) for 2-D values; op transposes when the flag is set (by packing, not copying).
template <class T>
Var<T> matmul(const Var<T>& a, const Var<T>& b, bool transpose_a = false, bool transpose_b = false) {
    Tape<T>& t = detail::same_tape(a, b, "matmul");
    Var<T> v = t.record(Op::matmul, detail::k_matmul(t, a.ref(), b.ref(), transpose_a, transpose_b), a.index(), b.index());
    t.node_mut(v.index()).flags = static_cast<std::uint8_t>((transpose_a ? 1 : 0) | (transpose_b ? 2 : 0));
    return v;
}
template <class O, class T, class V>
void backward_matmul(O& o, const Node<T>& n, const V& g) {
    const bool ta = n.flags & 1, tb = (n.flags & 2) != 0;
    const V a = o.in(n, 0), b = o.in(n, 1);
    // C = op(A) op(B): dop(A) = G op(B)^T, dop(B) = op(A)^T G, then undo the op on each side.
    if (o.needs(n, 0)) o.acc(n, 0, ta ? o.matmul(b, g, tb, true) : o.matmul(g, b, false, !tb));
    if (o.needs(n, 1)) o.acc(n, 1, tb ? o.matmul(g, a, true, ta) : o.matmul(a, g, !ta, false));
}

template <class T>
Var<T> transpose(const Var<T>& a) {
    Tape<T>& t = a.tape();
    return t.record(Op::transpose, detail::k_transpose(t, a.ref()), a.index());
}
template <class O, class T, class V>
void backward_transpose(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.transpose(g));
}

template <class T>
Var<T> reshape(const Var<T>& a, const Shape& s) {
    Tape<T>& t = a.tape();
    return t.record(Op::reshape, detail::k_reshape(a.ref(), s), a.index());
}
template <class O, class T, class V>
void backward_reshape(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.reshape(g, o.shape(n, 0)));
}

template <class T>
Var<T> broadcast_to(const Var<T>& a, const Shape& s) {
    Tape<T>& t = a.tape();
    return t.record(Op::broadcast_to, detail::k_broadcast_to(t, a.ref(), s), a.index());
}
template <class O, class T, class V>
void backward_broadcast_to(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.sum_to(g, o.shape(n, 0)));
}

/// Sums over the axes along which `s` broadcasts to a's shape; sum_to(a, Shape{}) sums everything.
template <class T>
Var<T> sum_to(const Var<T>& a, const Shape& s) {
    Tape<T>& t = a.tape();
    return t.record(Op::sum_to, detail::k_sum_to(t, a.ref(), s), a.index());
}
template <class O, class T, class V>
void backward_sum_to(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.broadcast_to(g, o.shape(n, 0)));
}

// ---- reductions -----------------------------------------------------------------------------

/// Sum of all elements (a scalar of shape ()).
template <class T>
Var<T> sum(const Var<T>& a) { return sum_to(a, Shape{}); }

template <class T>
Var<T> sum(const Var<T>& a, std::int64_t axis, bool keepdim = false) {
    Tape<T>& t = a.tape();
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "sum");
    return detail::record_axis(Op::sum_axis, a, detail::k_sum_axis(t, a.ref(), ax, keepdim), ax, keepdim);
}
template <class O, class T, class V>
void backward_sum_axis(O& o, const Node<T>& n, const V& g) {
    const Shape& in = o.shape(n, 0);
    o.acc(n, 0, o.broadcast_to(o.reshape(g, detail::keepdim_shape(in, n.axis)), in));
}

template <class T>
Var<T> mean(const Var<T>& a) {
    const std::size_t n = a.size();
    if (n == 0) throw shape_error("mean: empty value of shape " + a.shape().str());
    return scale(sum(a), T(1) / static_cast<T>(n));
}
template <class T>
Var<T> mean(const Var<T>& a, std::int64_t axis, bool keepdim = false) {
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "mean");
    const std::size_t len = a.shape()[ax];
    if (len == 0) throw shape_error("mean: empty axis in shape " + a.shape().str());
    return scale(sum(a, axis, keepdim), T(1) / static_cast<T>(len));
}

template <class T>
Var<T> max(const Var<T>& a, std::int64_t axis, bool keepdim = false) {
    Tape<T>& t = a.tape();
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "max");
    return detail::record_axis(Op::max_axis, a, detail::k_extreme_axis(t, a.ref(), ax, keepdim, true), ax, keepdim);
}
template <class T>
Var<T> min(const Var<T>& a, std::int64_t axis, bool keepdim = false) {
    Tape<T>& t = a.tape();
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "min");
    return detail::record_axis(Op::min_axis, a, detail::k_extreme_axis(t, a.ref(), ax, keepdim, false), ax, keepdim);
}
/// The gradient goes to the first extreme element along the axis (as PyTorch's max(dim)).
template <class O, class T, class V>
void backward_extreme_axis(O& o, const Node<T>& n, const V& g) {
    const Shape& in = o.shape(n, 0);
    const V mask = o.extreme_mask(o.in(n, 0), n.axis, n.op == Op::max_axis);
    o.acc(n, 0, o.mul(mask, o.broadcast_to(o.reshape(g, detail::keepdim_shape(in, n.axis)), in)));
}

// ---- elementwise math -------------------------------------------------------------------------

template <class T>
Var<T> exp(const Var<T>& a) {
    Tape<T>& t = a.tape();
    Ref<T> out = t.alloc(a.shape());
    simd::exp(a.data(), out.data, a.size());
    return t.record(Op::exp, out, a.index());
}
template <class O, class T, class V>
void backward_exp(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.mul(g, o.out(n)));
}

template <class T>
Var<T> log(const Var<T>& a) {
    Tape<T>& t = a.tape();
    Ref<T> out = t.alloc(a.shape());
    simd::log(a.data(), out.data, a.size());
    return t.record(Op::log, out, a.index());
}
template <class O, class T, class V>
void backward_log(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.div(g, o.in(n, 0)));
}

template <class T>
Var<T> log1p(const Var<T>& a) {
    Tape<T>& t = a.tape();
    return t.record(Op::log1p, detail::k_unary(t, a.ref(), [](T x) { return std::log1p(x); }), a.index());
}
template <class O, class T, class V>
void backward_log1p(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.div(g, o.add_scalar(o.in(n, 0), T(1))));
}

template <class T>
Var<T> sqrt(const Var<T>& a) {
    Tape<T>& t = a.tape();
    return t.record(Op::sqrt, detail::k_unary(t, a.ref(), [](T x) { return std::sqrt(x); }), a.index());
}
template <class O, class T, class V>
void backward_sqrt(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.div(o.scale(g, T(0.5)), o.out(n)));
}

/// a^p for a constant exponent p.
template <class T>
Var<T> pow(const Var<T>& a, T p) {
    Tape<T>& t = a.tape();
    return detail::record1(Op::pow, a, detail::k_unary(t, a.ref(), [p](T x) { return std::pow(x, p); }), p);
}
template <class O, class T, class V>
void backward_pow(O& o, const Node<T>& n, const V& g) {
    if (n.a0 == T(0)) return;
    const V d = n.a0 == T(1) ? g : o.mul(g, o.scale(o.pow(o.in(n, 0), n.a0 - T(1)), n.a0));
    o.acc(n, 0, d);
}

template <class T>
Var<T> abs(const Var<T>& a) {
    Tape<T>& t = a.tape();
    return t.record(Op::abs, detail::k_unary(t, a.ref(), [](T x) { return std::abs(x); }), a.index());
}
template <class O, class T, class V>
void backward_abs(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.mul(g, o.sign(o.in(n, 0))));
}

template <class T>
Var<T> square(const Var<T>& a) {
    Tape<T>& t = a.tape();
    return t.record(Op::square, detail::k_unary(t, a.ref(), [](T x) { return x * x; }), a.index());
}
template <class O, class T, class V>
void backward_square(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.scale(o.mul(g, o.in(n, 0)), T(2)));
}

/// Clamp to [lo, hi]; the gradient passes where lo <= a <= hi.
template <class T>
Var<T> clamp(const Var<T>& a, T lo, T hi) {
    if (!(lo <= hi)) throw value_error("clamp: lower bound " + std::to_string(lo) + " exceeds upper bound " + std::to_string(hi));
    Tape<T>& t = a.tape();
    return detail::record1(Op::clamp, a, detail::k_unary(t, a.ref(), [lo, hi](T x) { return x < lo ? lo : (x > hi ? hi : x); }), lo, hi);
}
template <class O, class T, class V>
void backward_clamp(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.mul(g, o.inrange_mask(o.in(n, 0), n.a0, n.a1)));
}

/// cond ? a : b elementwise (cond is a constant of 0s and 1s, e.g. from a comparison).
template <class T>
Var<T> where(const Var<T>& cond, const Var<T>& a, const Var<T>& b) {
    Tape<T>& t = detail::same_tape(a, b, "where");
    detail::same_tape(cond, a, "where");
    return t.record(Op::where, detail::k_where(t, cond.ref(), a.ref(), b.ref()), a.index(), b.index(), cond.index());
}
template <class O, class T, class V>
void backward_where(O& o, const Node<T>& n, const V& g) {
    const V c = o.in(n, 2);
    if (o.needs(n, 0)) o.acc(n, 0, o.sum_to(o.mul(g, c), o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, o.sum_to(o.sub(g, o.mul(g, c)), o.shape(n, 1)));
}

template <class T>
Var<T> tanh(const Var<T>& a) {
    Tape<T>& t = a.tape();
    Ref<T> out = t.alloc(a.shape());
    simd::tanh(a.data(), out.data, a.size());
    return t.record(Op::tanh, out, a.index());
}
template <class O, class T, class V>
void backward_tanh(O& o, const Node<T>& n, const V& g) {
    const V y = o.out(n);
    o.acc(n, 0, o.sub(g, o.mul(g, o.mul(y, y))));
}

template <class T>
Var<T> sigmoid(const Var<T>& a) {
    Tape<T>& t = a.tape();
    Ref<T> out = t.alloc(a.shape());
    simd::sigmoid(a.data(), out.data, a.size());
    return t.record(Op::sigmoid, out, a.index());
}
template <class O, class T, class V>
void backward_sigmoid(O& o, const Node<T>& n, const V& g) {
    const V y = o.out(n);
    o.acc(n, 0, o.mul(g, o.sub(y, o.mul(y, y))));
}

template <class T>
Var<T> relu(const Var<T>& a) {
    Tape<T>& t = a.tape();
    Ref<T> out = t.alloc(a.shape());
    simd::relu(a.data(), out.data, a.size());
    return t.record(Op::relu, out, a.index());
}
template <class O, class T, class V>
void backward_relu(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.mul(g, o.positive_mask(o.in(n, 0))));
}

template <class T>
Var<T> leaky_relu(const Var<T>& a, T alpha = T(0.01)) {
    Tape<T>& t = a.tape();
    return detail::record1(Op::leaky_relu, a, detail::k_unary(t, a.ref(), [alpha](T x) { return x > T(0) ? x : alpha * x; }), alpha);
}
template <class O, class T, class V>
void backward_leaky_relu(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.mul(g, o.leaky_slope(o.in(n, 0), n.a0)));
}

template <class T>
Var<T> elu(const Var<T>& a, T alpha = T(1)) {
    Tape<T>& t = a.tape();
    return detail::record1(Op::elu, a, detail::k_unary(t, a.ref(), [alpha](T x) { return x > T(0) ? x : alpha * std::expm1(x); }), alpha);
}
template <class O, class T, class V>
void backward_elu(O& o, const Node<T>& n, const V& g) {
    // elu'(x) = 1 for x > 0, alpha*exp(x) = elu(x) + alpha otherwise.
    const V pos = o.positive_mask(o.in(n, 0));
    const V slope = o.add(pos, o.mul(o.add_scalar(o.neg(pos), T(1)), o.add_scalar(o.out(n), n.a0)));
    o.acc(n, 0, o.mul(g, slope));
}

/// log(1 + exp(a)), exact for large |a|.
template <class T>
Var<T> softplus(const Var<T>& a) {
    Tape<T>& t = a.tape();
    return t.record(Op::softplus, detail::k_unary(t, a.ref(), [](T x) { return detail::stable_softplus(x); }), a.index());
}
template <class O, class T, class V>
void backward_softplus(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.mul(g, o.sigmoid(o.in(n, 0))));
}

/// log(sigmoid(a)) = -softplus(-a), finite for all a.
template <class T>
Var<T> log_sigmoid(const Var<T>& a) {
    Tape<T>& t = a.tape();
    return t.record(Op::log_sigmoid, detail::k_unary(t, a.ref(), [](T x) { return -detail::stable_softplus(-x); }), a.index());
}
template <class O, class T, class V>
void backward_log_sigmoid(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.mul(g, o.sigmoid(o.neg(o.in(n, 0)))));
}

template <class T>
Var<T> erf(const Var<T>& a) {
    Tape<T>& t = a.tape();
    return t.record(Op::erf, detail::k_unary(t, a.ref(), [](T x) { return std::erf(x); }), a.index());
}
template <class O, class T, class V>
void backward_erf(O& o, const Node<T>& n, const V& g) {
    const V x = o.in(n, 0);
    o.acc(n, 0, o.mul(g, o.scale(o.exp(o.neg(o.mul(x, x))), T(1.1283791670955126))));  // 2/sqrt(pi)
}

// ---- softmax family ------------------------------------------------------------------------

template <class T>
Var<T> softmax(const Var<T>& a, std::int64_t axis = -1) {
    Tape<T>& t = a.tape();
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "softmax");
    return detail::record_axis(Op::softmax, a, detail::k_softmax_family(t, a.ref(), ax, detail::SoftmaxKind::softmax, false), ax, false);
}
template <class O, class T, class V>
void backward_softmax(O& o, const Node<T>& n, const V& g) {
    const V y = o.out(n);
    o.acc(n, 0, o.mul(y, o.sub(g, o.sum_keep(o.mul(g, y), n.axis))));
}

template <class T>
Var<T> log_softmax(const Var<T>& a, std::int64_t axis = -1) {
    Tape<T>& t = a.tape();
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "log_softmax");
    return detail::record_axis(Op::log_softmax, a, detail::k_softmax_family(t, a.ref(), ax, detail::SoftmaxKind::log_softmax, false), ax, false);
}
template <class O, class T, class V>
void backward_log_softmax(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.sub(g, o.mul(o.exp(o.out(n)), o.sum_keep(g, n.axis))));
}

template <class T>
Var<T> logsumexp(const Var<T>& a, std::int64_t axis = -1, bool keepdim = false) {
    Tape<T>& t = a.tape();
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "logsumexp");
    return detail::record_axis(Op::logsumexp, a, detail::k_softmax_family(t, a.ref(), ax, detail::SoftmaxKind::logsumexp, keepdim), ax, keepdim);
}
template <class O, class T, class V>
void backward_logsumexp(O& o, const Node<T>& n, const V& g) {
    const Shape& in = o.shape(n, 0);
    const Shape keep = detail::keepdim_shape(in, n.axis);
    const V p = o.exp(o.sub(o.in(n, 0), o.reshape(o.out(n), keep)));  // softmax of the input
    o.acc(n, 0, o.mul(p, o.reshape(g, keep)));
}

// ---- joining and indexing ------------------------------------------------------------------

template <class T>
Var<T> concat(const Var<T>& a, const Var<T>& b, std::int64_t axis = 0) {
    Tape<T>& t = detail::same_tape(a, b, "concat");
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "concat");
    Var<T> v = t.record(Op::concat, detail::k_concat(t, a.ref(), b.ref(), ax), a.index(), b.index());
    t.node_mut(v.index()).axis = static_cast<std::int32_t>(ax);
    return v;
}
template <class T>
Var<T> concat(const std::vector<Var<T>>& parts, std::int64_t axis = 0) {
    if (parts.empty()) throw value_error("concat: no values given");
    Var<T> out = parts[0];
    for (std::size_t i = 1; i < parts.size(); ++i) out = concat(out, parts[i], axis);
    return out;
}
template <class O, class T, class V>
void backward_concat(O& o, const Node<T>& n, const V& g) {
    const auto ax = static_cast<std::size_t>(n.axis);
    const std::size_t la = o.shape(n, 0)[ax], lb = o.shape(n, 1)[ax];
    if (o.needs(n, 0)) o.acc(n, 0, o.slice(g, ax, 0, la));
    if (o.needs(n, 1)) o.acc(n, 1, o.slice(g, ax, la, lb));
}

/// Elements [start, start+len) along an axis.
template <class T>
Var<T> slice(const Var<T>& a, std::int64_t axis, std::size_t start, std::size_t len) {
    Tape<T>& t = a.tape();
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "slice");
    Var<T> v = detail::record_axis(Op::slice, a, detail::k_slice(t, a.ref(), ax, start, len), ax, false);
    t.node_mut(v.index()).i0 = start;
    return v;
}
template <class O, class T, class V>
void backward_slice(O& o, const Node<T>& n, const V& g) {
    const auto ax = static_cast<std::size_t>(n.axis);
    o.acc(n, 0, o.pad(g, ax, n.i0, o.shape(n, 0)[ax]));
}

/// The adjoint of slice: a placed at offset `start` of an axis of length `total`, zeros elsewhere.
template <class T>
Var<T> pad(const Var<T>& a, std::int64_t axis, std::size_t start, std::size_t total) {
    Tape<T>& t = a.tape();
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "pad");
    if (start + a.shape()[ax] > total)
        throw shape_error("pad: value of shape " + a.shape().str() + " does not fit at offset " + std::to_string(start) +
                          " of an axis of length " + std::to_string(total));
    Var<T> v = detail::record_axis(Op::pad, a, detail::k_pad(t, a.ref(), ax, start, total), ax, false);
    t.node_mut(v.index()).i0 = start;
    return v;
}
template <class O, class T, class V>
void backward_pad(O& o, const Node<T>& n, const V& g) {
    const auto ax = static_cast<std::size_t>(n.axis);
    o.acc(n, 0, o.slice(g, ax, n.i0, o.shape(n, 0)[ax]));
}

namespace detail {
template <class T>
const std::int64_t* copy_indices(Tape<T>& t, const std::vector<std::size_t>& idx, std::size_t limit, const char* op) {
    auto* p = static_cast<std::int64_t*>(t.arena().allocate(idx.size() * sizeof(std::int64_t) + 1));
    for (std::size_t i = 0; i < idx.size(); ++i) {
        if (idx[i] >= limit)
            throw value_error(std::string(op) + ": index " + std::to_string(idx[i]) + " at position " + std::to_string(i) +
                              " is out of range for " + std::to_string(limit) + " rows");
        p[i] = static_cast<std::int64_t>(idx[i]);
    }
    return p;
}
} // namespace detail

/// Rows of a (first axis) at the given indices, in order; indices may repeat.
template <class T>
Var<T> gather_rows(const Var<T>& a, const std::vector<std::size_t>& idx) {
    Tape<T>& t = a.tape();
    if (a.shape().rank() == 0) throw shape_error("gather_rows: expects at least 1-D, got shape " + a.shape().str());
    const std::int64_t* p = detail::copy_indices(t, idx, a.shape()[0], "gather_rows");
    Var<T> v = t.record(Op::gather_rows, detail::k_gather_rows(t, a.ref(), p, idx.size()), a.index());
    t.node_mut(v.index()).index = p;
    return v;
}
template <class T>
Var<T> gather_rows_raw(const Var<T>& a, const std::int64_t* p, std::size_t n) {
    Tape<T>& t = a.tape();
    Var<T> v = t.record(Op::gather_rows, detail::k_gather_rows(t, a.ref(), p, n), a.index());
    t.node_mut(v.index()).index = p;
    return v;
}
template <class O, class T, class V>
void backward_gather_rows(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.scatter_rows(g, n.index, o.shape(n, 0)[0]));
}

template <class T>
Var<T> scatter_rows_raw(const Var<T>& g, const std::int64_t* p, std::size_t nrows) {
    Tape<T>& t = g.tape();
    Var<T> v = t.record(Op::scatter_rows, detail::k_scatter_rows(t, g.ref(), p, nrows), g.index());
    t.node_mut(v.index()).index = p;
    return v;
}
template <class O, class T, class V>
void backward_scatter_rows(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.gather_rows(g, n.index, o.shape(n, 0)[0]));
}

// ---- adversarial training helpers ------------------------------------------------------------

/// Identity forward, gradient times -lambda backward (Ganin & Lempitsky): the classifier
/// maximises what the adversary after this layer minimises.
template <class T>
Var<T> grad_reverse(const Var<T>& a, T lambda = T(1)) {
    return detail::record1(Op::grad_reverse, a, a.ref(), lambda);
}
template <class O, class T, class V>
void backward_grad_reverse(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, o.scale(g, -n.a0));
}

/// The same value, cut from the graph.
template <class T>
Var<T> detach(const Var<T>& a) {
    return a.tape().leaf(a.ref(), false);
}

// ---- fused dense layer ------------------------------------------------------------------------

/// act(x W + b) as one node: x (batch, in), W (in, out), b (out,) optional.
template <class T>
Var<T> dense(const Var<T>& x, const Var<T>& w, const Var<T>* b, Activation act = Activation::none, T alpha = T(0.01)) {
    Tape<T>& t = detail::same_tape(x, w, "dense");
    if (b) detail::same_tape(x, *b, "dense");
    const Ref<T> bref = b ? b->ref() : Ref<T>{};
    Var<T> v = t.record(Op::dense, detail::k_dense(t, x.ref(), w.ref(), b ? &bref : nullptr, act, alpha), x.index(), w.index(),
                        b ? b->index() : -1);
    Node<T>& n = t.node_mut(v.index());
    n.act = static_cast<std::uint8_t>(act);
    n.a0 = alpha;
    return v;
}
template <class T>
Var<T> dense(const Var<T>& x, const Var<T>& w, const Var<T>& b, Activation act = Activation::none, T alpha = T(0.01)) {
    return dense(x, w, &b, act, alpha);
}
template <class T>
Var<T> dense(const Var<T>& x, const Var<T>& w, std::nullptr_t, Activation act = Activation::none, T alpha = T(0.01)) {
    return dense(x, w, static_cast<const Var<T>*>(nullptr), act, alpha);
}
template <class O, class T, class V>
void backward_dense(O& o, const Node<T>& n, const V& g) {
    const V gz = o.act_grad(g, o.out(n), static_cast<Activation>(n.act), n.a0);
    if (o.needs(n, 0)) o.acc(n, 0, o.matmul(gz, o.in(n, 1), false, true));
    if (o.needs(n, 1)) o.acc(n, 1, o.matmul(o.in(n, 0), gz, true, false));
    if (n.in[2] >= 0 && o.needs(n, 2)) o.acc(n, 2, o.sum_to(gz, o.shape(n, 2)));
}

// ---- fused binary cross-entropy from logits ------------------------------------------------

/// sum_i w_i (softplus(z_i) - y_i z_i) / sum_i w_i as one node (the mean when w is absent).
/// Never forms log(sigmoid(z)), so it is finite for any logit. Weights may be negative (Monte
/// Carlo weights) but must not sum to zero; they are constants (no gradient flows into them).
template <class T>
Var<T> bce_with_logits(const Var<T>& logits, const Var<T>& targets, const Var<T>* weights = nullptr) {
    Tape<T>& t = detail::same_tape(logits, targets, "bce_with_logits");
    if (logits.size() != targets.size())
        detail::throw_shape("bce_with_logits: logits vs targets", logits.shape(), targets.shape());
    if (logits.size() == 0) throw shape_error("bce_with_logits: empty batch (logits of shape " + logits.shape().str() + ")");
    const T* z = logits.data();
    const T* y = targets.data();
    const T* w = nullptr;
    const std::size_t n = logits.size();
    T norm = static_cast<T>(n);
    if (weights) {
        detail::same_tape(logits, *weights, "bce_with_logits");
        if (weights->size() != n) detail::throw_shape("bce_with_logits: logits vs weights", logits.shape(), weights->shape());
        w = weights->data();
        norm = T(0);
        for (std::size_t i = 0; i < n; ++i) norm += w[i];
        if (norm == T(0)) throw value_error("bce_with_logits: the event weights sum to zero");
    }
    T acc = T(0);
    for (std::size_t i = 0; i < n; ++i) acc += (w ? w[i] : T(1)) * (detail::stable_softplus(z[i]) - y[i] * z[i]);
    Ref<T> out = t.alloc(Shape{});
    out.data[0] = acc / norm;
    Var<T> v = t.record(Op::bce_logits, out, logits.index(), targets.index(), weights ? weights->index() : -1);
    Node<T>& nd = t.node_mut(v.index());
    nd.a0 = T(1) / norm;
    if (weights && weights->requires_grad()) nd.requires_grad = logits.requires_grad() || targets.requires_grad();
    return v;
}
template <class T>
Var<T> bce_with_logits(const Var<T>& logits, const Var<T>& targets, const Var<T>& weights) {
    return bce_with_logits(logits, targets, &weights);
}
template <class O, class T, class V>
void backward_bce_logits(O& o, const Node<T>& n, const V& g) {
    const V z = o.in(n, 0), y = o.in(n, 1);
    const auto weighted = [&](const V& v) {
        const V scaled = o.scale(o.reshape(v, o.shape(n, 0)), n.a0);
        return n.in[2] >= 0 ? o.mul(scaled, o.reshape(o.in(n, 2), o.shape(n, 0))) : scaled;
    };
    if (o.needs(n, 0)) o.acc(n, 0, o.mul(g, weighted(o.sub(o.sigmoid(z), o.reshape(y, o.shape(n, 0))))));
    if (o.needs(n, 1)) o.acc(n, 1, o.reshape(o.mul(g, weighted(o.neg(z))), o.shape(n, 1)));
}

// ---- non-differentiable masks used by backward rules ------------------------------------------

template <class T>
Var<T> positive_mask(const Var<T>& a) {
    Tape<T>& t = a.tape();
    Var<T> v = t.record(Op::positive_mask, detail::k_unary(t, a.ref(), [](T x) { return x > T(0) ? T(1) : T(0); }), a.index());
    t.node_mut(v.index()).requires_grad = false;
    return v;
}
template <class T>
Var<T> sign(const Var<T>& a) {
    Tape<T>& t = a.tape();
    Var<T> v = t.record(Op::sign, detail::k_unary(t, a.ref(), [](T x) { return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0)); }), a.index());
    t.node_mut(v.index()).requires_grad = false;
    return v;
}
template <class T>
Var<T> inrange_mask(const Var<T>& a, T lo, T hi) {
    Tape<T>& t = a.tape();
    Var<T> v = detail::record1(Op::inrange_mask, a, detail::k_unary(t, a.ref(), [lo, hi](T x) { return x >= lo && x <= hi ? T(1) : T(0); }), lo, hi);
    t.node_mut(v.index()).requires_grad = false;
    return v;
}
template <class T>
Var<T> leaky_slope(const Var<T>& a, T alpha) {
    Tape<T>& t = a.tape();
    Var<T> v = detail::record1(Op::leaky_slope, a, detail::k_unary(t, a.ref(), [alpha](T x) { return x > T(0) ? T(1) : alpha; }), alpha);
    t.node_mut(v.index()).requires_grad = false;
    return v;
}
template <class T>
Var<T> extreme_mask(const Var<T>& a, std::int32_t axis, bool is_max) {
    Tape<T>& t = a.tape();
    Var<T> v = detail::record_axis(Op::extreme_mask, a, detail::k_extreme_mask(t, a.ref(), static_cast<std::size_t>(axis), is_max),
                                   static_cast<std::size_t>(axis), false);
    t.node_mut(v.index()).requires_grad = false;
    return v;
}

// ---- operators ------------------------------------------------------------------------------

template <class T> Var<T> operator+(const Var<T>& a, const Var<T>& b) { return add(a, b); }
template <class T> Var<T> operator-(const Var<T>& a, const Var<T>& b) { return sub(a, b); }
template <class T> Var<T> operator*(const Var<T>& a, const Var<T>& b) { return mul(a, b); }
template <class T> Var<T> operator/(const Var<T>& a, const Var<T>& b) { return div(a, b); }
template <class T> Var<T> operator-(const Var<T>& a) { return neg(a); }
template <class T> Var<T> operator+(const Var<T>& a, T c) { return add_scalar(a, c); }
template <class T> Var<T> operator+(T c, const Var<T>& a) { return add_scalar(a, c); }
template <class T> Var<T> operator-(const Var<T>& a, T c) { return add_scalar(a, -c); }
template <class T> Var<T> operator-(T c, const Var<T>& a) { return add_scalar(neg(a), c); }
template <class T> Var<T> operator*(const Var<T>& a, T c) { return scale(a, c); }
template <class T> Var<T> operator*(T c, const Var<T>& a) { return scale(a, c); }
template <class T> Var<T> operator/(const Var<T>& a, T c) { return scale(a, T(1) / c); }
template <class T> Var<T> operator/(T c, const Var<T>& a) { return rdiv_scalar(c, a); }

} // namespace tapir
