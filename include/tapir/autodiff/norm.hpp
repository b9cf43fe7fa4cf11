#pragma once
/// Layer normalisation as one op (Ba, Kiros, Hinton, arXiv:1607.06450): y = (x - mean) / sqrt(var + eps)
/// over the last axis, the biased variance as PyTorch's layer_norm. The affine part (weight, bias)
/// stays with ordinary broadcasting ops in nn::LayerNorm. Composed of ordinary ops the same
/// normalisation records 9 nodes and its gradient some 20 passes over the activations; here the
/// forward is one node and the first-order backward one fused pass (layer_norm_grad), whose own rule
/// is written in ordinary ops so that every higher order still follows.

#include <cmath>
#include <cstddef>
#include <string>

#include "../simd/elementwise.hpp"
#include "kernels.hpp"
#include "ops.hpp"
#include "tape.hpp"

namespace tapir {

namespace detail {
/// Mean and 1 / sqrt(var + eps) of a row (two passes: the variance of the centred values, which
/// are left in scratch, n values).
template <class T>
void row_moments(const T* x, std::size_t n, T eps, T* scratch, T& mean, T& rstd) noexcept {
    mean = simd::sum(x, n) / static_cast<T>(n);
    simd::add_scalar(x, -mean, scratch, n);
    rstd = T(1) / std::sqrt(simd::dot(scratch, scratch, n) / static_cast<T>(n) + eps);
}

template <class T>
Ref<T> k_layer_norm(Tape<T>& t, const Ref<T>& a, T eps) {
    const std::size_t r = a.shape.rank();
    if (r == 0 || a.shape[r - 1] == 0) throw shape_error("layer_norm: expects a non-empty last axis, got shape " + a.shape.str());
    const std::size_t n = a.shape[r - 1], rows = a.size() / n;
    Ref<T> out = t.alloc(a.shape);
    for (std::size_t i = 0; i < rows; ++i) {
        const T* x = a.data + i * n;
        T* y = out.data + i * n;
        T mean, rstd;
        row_moments(x, n, eps, y, mean, rstd);
        simd::mul_scalar(y, rstd, y, n);
    }
    return out;
}

/// rstd (g - mean(g) - y mean(g y)) per row, rstd recomputed from x.
template <class T>
Ref<T> k_layer_norm_grad(Tape<T>& t, const Ref<T>& g, const Ref<T>& a, const Ref<T>& y, T eps) {
    if (g.shape != a.shape || y.shape != a.shape) throw_shape("layer_norm_grad", g.shape, a.shape);
    const std::size_t n = a.shape[a.shape.rank() - 1], rows = a.size() / n;
    const T inv_n = T(1) / static_cast<T>(n);
    Ref<T> out = t.alloc(a.shape);
    for (std::size_t i = 0; i < rows; ++i) {
        const T* gr = g.data + i * n;
        const T* yr = y.data + i * n;
        T* o = out.data + i * n;
        T mean, rstd;
        row_moments(a.data + i * n, n, eps, o, mean, rstd);
        const T mg = simd::sum(gr, n) * inv_n, mgy = simd::dot(gr, yr, n) * inv_n;
        for (std::size_t l = 0; l < n; ++l) o[l] = rstd * (gr[l] - mg - yr[l] * mgy);
    }
    return out;
}
} // namespace detail

/// The rule of layer_norm_grad for higher orders. With r = rstd(x), h = g - mean(g) - y mean(g y)
/// and out = r h (n entries per row): d/dg is layer_norm_grad again (linear in g);
/// d/dy_k = -r (gbar_k mean(g y) + g_k mean(gbar y)); and through r, dr/dx_k = -r^3 (x_k - mean) / n,
/// so d/dx_k = -r^3 (x_k - mean) mean(gbar h).
template <class O, class T, class V>
void backward_layer_norm_grad(O& o, const Node<T>& n, const V& gbar) {
    const V g = o.in(n, 0), x = o.in(n, 1), y = o.in(n, 2);
    if (o.needs(n, 0)) o.acc(n, 0, layer_norm_grad(gbar, x, y, n.a0));
    if (!o.needs(n, 1) && !o.needs(n, 2)) return;
    const auto row_mean = [](const V& v) { return mean_last(v); };
    const V xc = sub(x, row_mean(x));
    const V r = pow(add_scalar(row_mean(square(xc)), n.a0), T(-0.5));
    const V mgy = row_mean(mul(g, y));
    if (o.needs(n, 2)) o.acc(n, 2, neg(mul(r, add(mul(gbar, mgy), mul(g, row_mean(mul(gbar, y)))))));
    if (o.needs(n, 1)) {
        const V h = sub(sub(g, row_mean(g)), mul(y, mgy));
        o.acc(n, 1, neg(mul(mul(pow(r, T(3)), xc), row_mean(mul(gbar, h)))));
    }
}
TAPIR_OP(layer_norm_grad, "layer_norm_grad", backward_layer_norm_grad);
/// The gradient through y = layer_norm(x, eps) for an upstream gradient g, fused.
template <class T, template <class> class V>
detail::val<V, T> layer_norm_grad(const V<T>& g, const V<T>& x, const V<T>& y, T eps) {
    Tape<T>& t = detail::same_tape(g, x, "layer_norm_grad");
    detail::same_tape(g, y, "layer_norm_grad");
    return detail::emit(t, op_layer_norm_grad<T>, detail::k_layer_norm_grad(t, detail::ref(t, g), detail::ref(t, x), detail::ref(t, y), eps),
                        detail::set_a(eps), g, x, y);
}

/// Mean over the last axis, kept as an axis of length 1 (the rows' means in the rules above).
template <class T, template <class> class V>
detail::val<V, T> mean_last(const V<T>& a) {
    const Shape s = a.shape();
    return scale(sum(a, -1, true), T(1) / static_cast<T>(s[s.rank() - 1]));
}

template <class O, class T, class V>
void backward_layer_norm(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, layer_norm_grad(g, o.in(n, 0), o.out(n), n.a0));
}
TAPIR_OP(layer_norm, "layer_norm", backward_layer_norm);
/// (x - mean) / sqrt(var + eps) over the last axis (biased variance), one node; the values of
/// torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps) without weight and bias.
template <class T, template <class> class V, class S = T, detail::if_scalar<S> = 0>
detail::val<V, T> layer_norm(const V<T>& x, S eps = S(1e-5)) {
    const T e = static_cast<T>(eps);
    if (!(e > T(0))) throw value_error("layer_norm: eps must be positive, got " + std::to_string(static_cast<double>(e)));
    Tape<T>& t = detail::tape_of(x);
    return detail::emit(t, op_layer_norm<T>, detail::k_layer_norm(t, detail::ref(x), e), detail::set_a(e), x);
}

} // namespace tapir
