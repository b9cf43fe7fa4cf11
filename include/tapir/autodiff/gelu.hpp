#pragma once
/// GELU, x Phi(x) with Phi the standard normal CDF (Hendrycks, Gimpel, arXiv:1606.08415), the exact
/// erf form of PyTorch's nn.GELU default and the transformers' MLP activation. One node forward and
/// one fused pass backward (gelu_grad), whose own rule is in ordinary ops for higher orders.

#include <cmath>
#include <cstddef>

#include "../simd/math.hpp"
#include "kernels.hpp"
#include "ops.hpp"
#include "tape.hpp"

namespace tapir {

namespace detail {
template <class T>
T std_normal_cdf(T x) noexcept {
    return T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
}
} // namespace detail

/// The rule of gelu_grad: out = g D(x) with D(x) = Phi(x) + x phi(x) is linear in g (d/dg is
/// gelu_grad again) and D'(x) = phi(x) (2 - x^2).
template <class O, class T, class V>
void backward_gelu_grad(O& o, const Node<T>& n, const V& gbar) {
    const V x = o.in(n, 1);
    if (o.needs(n, 0)) o.acc(n, 0, gelu_grad(gbar, x));
    if (o.needs(n, 1)) {
        const V pdf = scale(exp(scale(square(x), T(-0.5))), T(0.39894228040143267794));
        o.acc(n, 1, mul(mul(gbar, o.in(n, 0)), mul(pdf, add_scalar(neg(square(x)), T(2)))));
    }
}
TAPIR_OP(gelu_grad, "gelu_grad", backward_gelu_grad);
/// g (Phi(x) + x phi(x)): the gradient through gelu(x) for an upstream gradient g, fused.
template <class T, template <class> class V>
detail::val<V, T> gelu_grad(const V<T>& g, const V<T>& x) {
    Tape<T>& t = detail::same_tape(g, x, "gelu_grad");
    const Ref<T>& gr = detail::ref(t, g);
    const Ref<T>& xr = detail::ref(t, x);
    if (gr.shape != xr.shape) detail::throw_shape("gelu_grad", gr.shape, xr.shape);
    Ref<T> out = t.alloc(xr.shape);
    const std::size_t n = xr.size();
    const T* xv = xr.data;
    T* o = out.data;
    for (std::size_t i = 0; i < n; ++i) o[i] = T(-0.5) * xv[i] * xv[i];
    simd::exp(o, o, n);  // phi(x) up to its constant, on the SIMD exp
    for (std::size_t i = 0; i < n; ++i) o[i] = gr.data[i] * (detail::std_normal_cdf(xv[i]) + xv[i] * T(0.39894228040143267794) * o[i]);
    return detail::emit(t, op_gelu_grad<T>, out, detail::no_attrs{}, g, x);
}

template <class O, class T, class V>
void backward_gelu(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, gelu_grad(g, o.in(n, 0)));
}
TAPIR_OP(gelu, "gelu", backward_gelu);
/// x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, elementwise (torch.nn.functional.gelu, approximate='none').
template <class T, template <class> class V>
detail::val<V, T> gelu(const V<T>& a) { return detail::unary(op_gelu<T>, a, [](T x) { return x * detail::std_normal_cdf(x); }); }

} // namespace tapir
