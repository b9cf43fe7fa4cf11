#pragma once
/// The activations a dense layer can fuse: one enum for the tape, the layers, the deployed models
/// and the code generator, and their one definition: value and derivative written once over the
/// vector wrappers of vec.hpp. The tape's dense op and its backward pass, simd::relu, the
/// deployed models (deploy/fixed.hpp, deploy/quantize.hpp) all evaluate these functions, so they
/// agree bit for bit on the same instruction set. deploy/codegen.hpp emits the same operations as
/// text; tests/deploy/test_codegen.cpp compiles its output and compares the bits.

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "isa.hpp"
#include "vec.hpp"
#include "vmath.hpp"

namespace tapir {

/// Activation fused into a dense node.
enum class Activation : std::uint8_t { none, relu, leaky_relu, elu, tanh, sigmoid, softplus };

inline const char* activation_name(Activation a) noexcept {
    switch (a) {
    case Activation::none: return "linear";
    case Activation::relu: return "relu";
    case Activation::leaky_relu: return "leaky_relu";
    case Activation::elu: return "elu";
    case Activation::tanh: return "tanh";
    case Activation::sigmoid: return "sigmoid";
    case Activation::softplus: return "softplus";
    }
    return "?";
}

} // namespace tapir

TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd {
namespace detail {

/// f applied lane by lane through memory: the activations whose only definition is libm's
/// (expm1, log1p), identical on every instruction set.
template <class V, class F> TAPIR_ALWAYS_INLINE typename V::reg lanewise(const typename V::reg& x, F f) {
    typename V::value_type t[V::W];
    V::store(t, x);
    for (std::size_t l = 0; l < V::W; ++l) t[l] = f(t[l]);
    return V::load(t);
}
template <class V, class F>
TAPIR_ALWAYS_INLINE typename V::reg lanewise2(const typename V::reg& x, const typename V::reg& y, F f) {
    typename V::value_type a[V::W], b[V::W];
    V::store(a, x);
    V::store(b, y);
    for (std::size_t l = 0; l < V::W; ++l) a[l] = f(a[l], b[l]);
    return V::load(a);
}

} // namespace detail

/// act(z) on one register of wrapper V (alpha: the leaky slope, the ELU scale).
/// relu is max(0, z): NaN stays NaN, -0 stays -0 (the x86 maxps rule every wrapper follows).
template <Activation A, class V>
TAPIR_ALWAYS_INLINE typename V::reg activation_value(const typename V::reg& z, typename V::value_type alpha) {
    using T = typename V::value_type;
    if constexpr (A == Activation::none) {
        (void)alpha;
        return z;
    } else if constexpr (A == Activation::relu) {
        (void)alpha;
        return V::max(V::zero(), z);
    } else if constexpr (A == Activation::leaky_relu) {
        return V::select(V::gt(z, V::zero()), z, V::mul(V::set1(alpha), z));
    } else if constexpr (A == Activation::elu) {
        return detail::lanewise<V>(z, [alpha](T v) { return v > T(0) ? v : alpha * std::expm1(v); });
    } else if constexpr (A == Activation::tanh) {
        (void)alpha;
        return detail::tanh_v<V>(z);
    } else if constexpr (A == Activation::sigmoid) {
        (void)alpha;
        return detail::sigmoid_v<V>(z);
    } else {
        static_assert(A == Activation::softplus, "activation_value: unknown activation");
        (void)alpha;
        return detail::lanewise<V>(z, [](T v) { return (v > T(0) ? v : T(0)) + std::log1p(std::exp(-std::abs(v))); });
    }
}

/// g * act'(z), written with the activation's output y = act(z) (softplus: sigmoid(z) = 1 - e^-y).
template <Activation A, class V>
TAPIR_ALWAYS_INLINE typename V::reg activation_grad(const typename V::reg& g, const typename V::reg& y,
                                                    typename V::value_type alpha) {
    using T = typename V::value_type;
    if constexpr (A == Activation::none) {
        (void)y;
        (void)alpha;
        return g;
    } else if constexpr (A == Activation::relu) {
        (void)alpha;
        return V::select(V::gt(y, V::zero()), g, V::zero());
    } else if constexpr (A == Activation::leaky_relu) {
        return V::select(V::gt(y, V::zero()), g, V::mul(V::set1(alpha), g));
    } else if constexpr (A == Activation::elu) {
        return V::select(V::gt(y, V::zero()), g, V::mul(g, V::add(y, V::set1(alpha))));
    } else if constexpr (A == Activation::tanh) {
        (void)alpha;
        return V::mul(g, V::sub(V::set1(T(1)), V::mul(y, y)));
    } else if constexpr (A == Activation::sigmoid) {
        (void)alpha;
        return V::mul(V::mul(g, y), V::sub(V::set1(T(1)), y));
    } else {
        static_assert(A == Activation::softplus, "activation_grad: unknown activation");
        (void)alpha;
        return detail::lanewise2<V>(g, y, [](T gi, T yi) { return -gi * std::expm1(-yi); });
    }
}

namespace detail {

/// Calls F::template apply<A>() with the run-time activation turned into a compile-time one.
template <class F, class... Args> TAPIR_ALWAYS_INLINE auto with_activation(Activation a, Args&&... args) {
    switch (a) {
    case Activation::relu: return F::template apply<Activation::relu>(args...);
    case Activation::leaky_relu: return F::template apply<Activation::leaky_relu>(args...);
    case Activation::elu: return F::template apply<Activation::elu>(args...);
    case Activation::tanh: return F::template apply<Activation::tanh>(args...);
    case Activation::sigmoid: return F::template apply<Activation::sigmoid>(args...);
    case Activation::softplus: return F::template apply<Activation::softplus>(args...);
    case Activation::none: break;
    }
    return F::template apply<Activation::none>(args...);
}

/// out = act(x) over an array (out may alias x).
template <class T, Activation A> struct activation_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(const T* x, T* out, std::size_t n, T alpha) {
        constexpr std::size_t W = V::W;
        std::size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            const auto a = V::load(x + i);
            const auto b = V::load(x + i + W);
            V::store(out + i, activation_value<A, V>(a, alpha));
            V::store(out + i + W, activation_value<A, V>(b, alpha));
        }
        for (; i + W <= n; i += W) V::store(out + i, activation_value<A, V>(V::load(x + i), alpha));
        if (i < n) V::store_partial(out + i, activation_value<A, V>(V::load_partial(x + i, n - i), alpha), n - i);
    }
};

/// out = g * act'(z) from y = act(z) over arrays (out may alias g or y).
template <class T, Activation A> struct activation_grad_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(const T* g, const T* y, T* out, std::size_t n, T alpha) {
        constexpr std::size_t W = V::W;
        std::size_t i = 0;
        for (; i + 4 * W <= n; i += 4 * W) {
            const auto g0 = V::load(g + i), g1 = V::load(g + i + W), g2 = V::load(g + i + 2 * W), g3 = V::load(g + i + 3 * W);
            const auto y0 = V::load(y + i), y1 = V::load(y + i + W), y2 = V::load(y + i + 2 * W), y3 = V::load(y + i + 3 * W);
            V::store(out + i, activation_grad<A, V>(g0, y0, alpha));
            V::store(out + i + W, activation_grad<A, V>(g1, y1, alpha));
            V::store(out + i + 2 * W, activation_grad<A, V>(g2, y2, alpha));
            V::store(out + i + 3 * W, activation_grad<A, V>(g3, y3, alpha));
        }
        for (; i + W <= n; i += W) V::store(out + i, activation_grad<A, V>(V::load(g + i), V::load(y + i), alpha));
        if (i < n) {
            const std::size_t r = n - i;
            V::store_partial(out + i, activation_grad<A, V>(V::load_partial(g + i, r), V::load_partial(y + i, r), alpha), r);
        }
    }
};

struct activate_on_f {
    template <Activation A, class T> static void apply(isa which, const T* x, T* out, std::size_t n, T alpha) {
        dispatch_to<activation_kernel<T, A>>(which, x, out, n, alpha);
    }
};
struct activation_grad_f {
    template <Activation A, class T>
    static void apply(isa which, const T* g, const T* y, T* out, std::size_t n, T alpha) {
        /// tanh's 1 - y*y on the scalar family: on an FMA target the compiler may contract it in
        /// vector code (GNU mode's -ffp-contract=fast), which would change the tape's bits. The
        /// other derivatives have no multiply feeding an add and give the same bits on every family.
        dispatch_to<activation_grad_kernel<T, A>>(A == Activation::tanh ? isa::scalar : which, g, y, out, n, alpha);
    }
};
template <bool Fused> struct activation_one_f {
    template <Activation A, class T> static TAPIR_ALWAYS_INLINE T apply(T z, T alpha) {
        return activation_value<A, vscalar<T, Fused>>(z, alpha);
    }
};

} // namespace detail

/// out[i] = act(x[i]) on the instruction set `which` (unchecked: see dispatch_to); out may alias x.
template <class T> void activate_on(isa which, Activation a, const T* x, T* out, std::size_t n, T alpha = T(0)) {
    detail::with_activation<detail::activate_on_f>(a, which, x, out, n, alpha);
}
/// out[i] = g[i] act'(z[i]) from the outputs y[i] = act(z[i]), on the instruction set `which`
/// (tanh's on the scalar family; unchecked, see dispatch_to); out may alias g or y.
template <class T>
void activation_backward_on(isa which, Activation a, const T* g, const T* y, T* out, std::size_t n, T alpha = T(0)) {
    detail::with_activation<detail::activation_grad_f>(a, which, g, y, out, n, alpha);
}
/// act(z) for one value: the scalar family (Fused as in vscalar: the default is this build's
/// scalar kernels; true reproduces the FMA kernel families lane for lane).
template <class T, bool Fused = (TAPIR_SIMD_SCALAR_FUSED != 0)>
TAPIR_ALWAYS_INLINE T activation_scalar(Activation a, T z, T alpha) noexcept {
    return detail::with_activation<detail::activation_one_f<Fused>>(a, z, alpha);
}

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
