#pragma once
/// Fused per-parameter update kernels, one pass over (param, grad, state) each, written once over
/// the SIMD wrappers of simd/vec.hpp and dispatched to the active instruction set.
/// Kernels run through simd::dispatch (public); V::sqrt is the wrappers' correctly rounded square
/// root (a plain std::sqrt loop does not vectorise: errno handling).

#include <cmath>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../simd/arch.hpp"
#include "../simd/fp_mode.hpp"
#include "../simd/vec.hpp"

TAPIR_SIMD_DIAG_PUSH

namespace tapir::optim::detail {

/// Runs Body::block<V, Partial>(args, i, r) over [0, n) in steps of V::W, the tail partially.
template <class V, class Body, class Args>
TAPIR_ALWAYS_INLINE void for_blocks(const Args& a, std::size_t n) {
    constexpr std::size_t W = V::W;
    std::size_t i = 0;
    for (; i + W <= n; i += W) Body::template block<V, false>(a, i, W);
    if (i < n) Body::template block<V, true>(a, i, n - i);
}

template <class V, bool Partial, class T>
TAPIR_ALWAYS_INLINE typename V::reg ld(const T* p, std::size_t r) {
    if constexpr (Partial) {
        return V::load_partial(p, r);
    } else {
        (void)r;
        return V::load(p);
    }
}
template <class V, bool Partial, class T>
TAPIR_ALWAYS_INLINE void st(T* p, const typename V::reg& v, std::size_t r) {
    if constexpr (Partial) {
        V::store_partial(p, v, r);
    } else {
        (void)r;
        V::store(p, v);
    }
}

/// The parameter an update kernel works on: value p, gradient g, n elements.
template <class T>
struct ParamSpan {
    T* p;
    const T* g;
    std::size_t n;
};

/// What every update kernel shares: its value type for simd::dispatch, and run<V>(args) over
/// [0, args.n) with Kernel::block (CRTP).
template <class T, class Kernel>
struct block_kernel {
    using value_type = T;
    template <class V, class Args>
    static TAPIR_ALWAYS_INLINE void run(Args a) {
        const simd::FlushDenormals flush;  // Adam's second moments go subnormal late in training
        for_blocks<V, Kernel>(a, a.n);
    }
};

/// What every optimiser's kernel shares: load the parameter p and its gradient d at element i
/// (plus wd * p when Wd, L2 weight decay), Kernel::update<V, P>(args, i, r, p, d) returns the new
/// p (updating the kernel's state on the way), store it.
template <class T, class Kernel, bool Wd>
struct update_kernel : block_kernel<T, update_kernel<T, Kernel, Wd>> {
    template <class V, bool P, class Args>
    static TAPIR_ALWAYS_INLINE void block(const Args& a, std::size_t i, std::size_t r) {
        const auto p = ld<V, P>(a.p + i, r);
        auto d = ld<V, P>(a.g + i, r);
        if constexpr (Wd) d = V::fma(V::set1(a.wd), p, d);
        st<V, P>(a.p + i, Kernel::template update<V, P>(a, i, r, p, d), r);
    }
};

// ---- SGD ------------------------------------------------------------------------------------
template <class T>
struct SgdArgs : ParamSpan<T> {
    T* buf;
    T lr, wd, mu_buf, c_grad, mu;  // buf = mu_buf * buf + c_grad * d; nesterov adds mu * buf
};

/// d = g + wd p; buf = mu_buf buf + c d; d = Nesterov ? d + mu buf : buf; p -= lr d.
template <class T, bool Wd, bool Momentum, bool Nesterov>
struct sgd_kernel : update_kernel<T, sgd_kernel<T, Wd, Momentum, Nesterov>, Wd> {
    template <class V, bool P, class R>
    static TAPIR_ALWAYS_INLINE R update(const SgdArgs<T>& a, std::size_t i, std::size_t r, const R& p, const R& d) {
        R u = d;
        if constexpr (Momentum) {
            const auto b = V::fma(V::set1(a.mu_buf), ld<V, P>(a.buf + i, r), V::mul(V::set1(a.c_grad), d));
            st<V, P>(a.buf + i, b, r);
            if constexpr (Nesterov) {
                u = V::fma(V::set1(a.mu), b, d);
            } else {
                u = b;
            }
        }
        return V::fnma(V::set1(a.lr), u, p);
    }
};

// ---- Adam / AdamW -----------------------------------------------------------------------------
template <class T>
struct AdamArgs : ParamSpan<T> {
    T* m;
    T* v;
    T b1, c1, b2, c2;  // m = b1 m + c1 g, v = b2 v + c2 g^2
    T step;            // lr / bc1 (PyTorch) or lr sqrt(bc2) / bc1 (Keras)
    T sqrt_bc2;        // divides sqrt(v) (PyTorch); 1 for Keras
    T eps, wd, decay;  // wd: L2 added to the gradient; decay: AdamW's p *= 1 - lr wd
};

template <class T, bool L2, bool Decoupled>
struct adam_kernel : update_kernel<T, adam_kernel<T, L2, Decoupled>, L2> {
    template <class V, bool P, class R>
    static TAPIR_ALWAYS_INLINE R update(const AdamArgs<T>& a, std::size_t i, std::size_t r, const R& p, const R& g) {
        const auto m = V::fma(V::set1(a.b1), ld<V, P>(a.m + i, r), V::mul(V::set1(a.c1), g));
        const auto v = V::fma(V::set1(a.b2), ld<V, P>(a.v + i, r), V::mul(V::mul(V::set1(a.c2), g), g));
        st<V, P>(a.m + i, m, r);
        st<V, P>(a.v + i, v, r);
        R q = p;
        if constexpr (Decoupled) q = V::mul(p, V::set1(a.decay));
        const auto denom = V::add(V::div(V::sqrt(v), V::set1(a.sqrt_bc2)), V::set1(a.eps));
        return V::fnma(V::set1(a.step), V::div(m, denom), q);
    }
};

// ---- RMSprop ----------------------------------------------------------------------------------
template <class T>
struct RmspropArgs : ParamSpan<T> {
    T* sq;
    T* gavg;
    T* buf;
    T lr, alpha, c_alpha, eps, wd, mu;
};

/// sq = a sq + (1-a) d^2; avg = sqrt(sq - gavg^2 (centered)) + eps; p -= lr d / avg (or via momentum).
template <class T, bool Wd, bool Centered, bool Momentum>
struct rmsprop_kernel : update_kernel<T, rmsprop_kernel<T, Wd, Centered, Momentum>, Wd> {
    template <class V, bool P, class R>
    static TAPIR_ALWAYS_INLINE R update(const RmspropArgs<T>& a, std::size_t i, std::size_t r, const R& p, const R& d) {
        const auto alpha = V::set1(a.alpha), ca = V::set1(a.c_alpha);
        const auto sq = V::fma(alpha, ld<V, P>(a.sq + i, r), V::mul(V::mul(ca, d), d));
        st<V, P>(a.sq + i, sq, r);
        typename V::reg var = sq;
        if constexpr (Centered) {
            const auto ga = V::fma(alpha, ld<V, P>(a.gavg + i, r), V::mul(ca, d));
            st<V, P>(a.gavg + i, ga, r);
            // sq >= ga^2 in exact arithmetic; rounding can push the difference below zero.
            var = V::max(V::zero(), V::fnma(ga, ga, sq));
        }
        const auto avg = V::add(V::sqrt(var), V::set1(a.eps));
        const auto q = V::div(d, avg);
        if constexpr (Momentum) {
            const auto b = V::fma(V::set1(a.mu), ld<V, P>(a.buf + i, r), q);
            st<V, P>(a.buf + i, b, r);
            return V::fnma(V::set1(a.lr), b, p);
        } else {
            return V::fnma(V::set1(a.lr), q, p);
        }
    }
};

// ---- Adagrad ----------------------------------------------------------------------------------
template <class T>
struct AdagradArgs : ParamSpan<T> {
    T* sum;
    T clr, eps, wd;
};

template <class T, bool Wd>
struct adagrad_kernel : update_kernel<T, adagrad_kernel<T, Wd>, Wd> {
    template <class V, bool P, class R>
    static TAPIR_ALWAYS_INLINE R update(const AdagradArgs<T>& a, std::size_t i, std::size_t r, const R& p, const R& d) {
        const auto s = V::fma(d, d, ld<V, P>(a.sum + i, r));
        st<V, P>(a.sum + i, s, r);
        const auto std_ = V::add(V::sqrt(s), V::set1(a.eps));
        return V::fnma(V::set1(a.clr), V::div(d, std_), p);
    }
};

// ---- gradient helpers -------------------------------------------------------------------------
/// A gradient g rewritten in place from its parameter p (when the helper needs it) and a constant c.
template <class T>
struct GradArgs {
    const T* p;
    T* g;
    std::size_t n;
    T c;
};

/// g = clamp(g, -c, c).
template <class T>
struct clamp_kernel : block_kernel<T, clamp_kernel<T>> {
    template <class V, bool P>
    static TAPIR_ALWAYS_INLINE void block(const GradArgs<T>& a, std::size_t i, std::size_t r) {
        const auto g = ld<V, P>(a.g + i, r);
        st<V, P>(a.g + i, V::min(V::max(g, V::set1(-a.c)), V::set1(a.c)), r);
    }
};

/// g += c sign(p), sign(0) = 0 (c is the L1 strength lambda).
template <class T>
struct l1_grad_kernel : block_kernel<T, l1_grad_kernel<T>> {
    template <class V, bool P>
    static TAPIR_ALWAYS_INLINE void block(const GradArgs<T>& a, std::size_t i, std::size_t r) {
        const auto p = ld<V, P>(a.p + i, r);
        const auto z = V::zero();
        const auto s = V::select(V::gt(p, z), V::set1(a.c), V::select(V::lt(p, z), V::set1(-a.c), z));
        st<V, P>(a.g + i, V::add(ld<V, P>(a.g + i, r), s), r);
    }
};

/// sum |x| with four independent accumulators.
template <class T>
struct abs_sum_kernel {
    using value_type = T;
    template <class V>
    static TAPIR_ALWAYS_INLINE T run(const T* x, std::size_t n) {
        constexpr std::size_t W = V::W;
        const auto z = V::zero();
        auto s0 = z, s1 = z;
        std::size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            const auto a = V::load(x + i), b = V::load(x + i + W);
            s0 = V::add(s0, V::max(a, V::sub(z, a)));
            s1 = V::add(s1, V::max(b, V::sub(z, b)));
        }
        for (; i + W <= n; i += W) {
            const auto a = V::load(x + i);
            s0 = V::add(s0, V::max(a, V::sub(z, a)));
        }
        if (i < n) {
            const auto a = V::load_partial(x + i, n - i);
            s1 = V::add(s1, V::max(a, V::sub(z, a)));
        }
        return V::hsum(V::add(s0, s1));
    }
};

} // namespace tapir::optim::detail

TAPIR_SIMD_DIAG_POP
