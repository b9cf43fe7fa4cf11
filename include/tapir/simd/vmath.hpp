#pragma once
/// exp, log, tanh and sigmoid on one register of any vector wrapper (vec.hpp), written once: the
/// array kernels of math.hpp, the activations (activation.hpp) and the deployed models use them.
/// Polynomials are truncated Taylor series (exp, expm1) and the atanh series (log) on reduced
/// arguments; every edge (NaN, +-inf, denormal input or output, overflow) is handled explicitly.
/// Accuracy is measured against a higher-precision reference in tests/simd/test_math.cpp.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "vec.hpp"

TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd {
namespace detail {

/// The constants of the kernels below for T = float or double: the bit layout follows from
/// std::numeric_limits; each tuned number is written once with its float and its double value.
template <class T> struct math_consts {
    static_assert(std::numeric_limits<T>::is_iec559 && (sizeof(T) == 4 || sizeof(T) == 8), "float or double");
    static constexpr bool f32 = sizeof(T) == 4;
    using bits = std::conditional_t<f32, std::uint32_t, std::uint64_t>;
    static constexpr T pick(float f, double d) { return f32 ? static_cast<T>(f) : static_cast<T>(d); }

    static constexpr int mant_bits = std::numeric_limits<T>::digits - 1;
    static constexpr bits bias = std::numeric_limits<T>::max_exponent - 1;
    static constexpr bits mant_mask = (bits(1) << mant_bits) - 1;
    static constexpr bits sign_mask = bits(1) << (8 * sizeof(T) - 1);
    static constexpr bits one_bits = bias << mant_bits;
    static constexpr bits two_pow_mant_bits = (bias + bits(mant_bits)) << mant_bits;  // 2^mant_bits
    static constexpr bits shifter_bits = two_pow_mant_bits | (bits(1) << (mant_bits - 1));  // 1.5 * 2^mant_bits
    static constexpr T two_pow_mant = static_cast<T>(bits(1) << mant_bits);
    static constexpr T shifter = T(1.5) * two_pow_mant;
    static constexpr T log2e = pick(1.44269502163f, 1.4426950408889634);
    /// ln2 = hi + lo, hi on 16 bits (float; n*hi is exact for |n| < 256 even without FMA) or on
    /// 32 bits (double; n*hi exact for |n| < 2^21).
    static constexpr T ln2_hi = pick(0.693145751953125f, 0.6931471806019545);
    static constexpr T ln2_lo = pick(1.428606765330187e-06f, -4.2009150726810846e-11);
    static constexpr T sqrt2 = pick(1.41421353816986083984f, 1.4142135623730951);
    /// exp overflows above 88.72 (709.78) and underflows to 0 below -103.97 (-745.13); clamping
    /// keeps n in range.
    static constexpr T exp_hi = pick(89.0f, 710.0), exp_lo = pick(-104.0f, -746.0);
    /// 1 - tanh(x) < 2^-25 beyond 9.01 (float): tanh rounds to 1 there.
    static constexpr T tanh_clamp = pick(10.0f, 20.0);
    /// Scale of denormal inputs to log: 2^24 (float) or 2^54 (double), and its log2.
    static constexpr T denorm_shift = pick(24.0f, 54.0);
    static constexpr T denorm_scale = pick(16777216.0f, 18014398509481984.0);
    /// Terms of the exp Taylor series (1 .. r^7/7! or r^13/13!) and of log's atanh series
    /// (s^3 .. s^11 or s^21).
    static constexpr int exp_terms = f32 ? 8 : 14;
    static constexpr int log_terms = f32 ? 5 : 10;
};

/// 1/k! and 2/(2k+1) as constants in T, computed at compile time from exact integers.
template <class T> constexpr T inv_factorial(int k) {
    double f = 1.0;
    for (int i = 2; i <= k; ++i) f *= i;
    return static_cast<T>(1.0 / f);
}

/// Round-to-nearest integer part of y/ln2 (as a T holding an integer) and the reduced r = y - n ln2,
/// |r| <= ln2/2 (Cody-Waite: n*hi is exact and y - n*hi is exact by Sterbenz, with or without FMA).
template <class V>
TAPIR_ALWAYS_INLINE void reduce_ln2(const typename V::reg& y, typename V::reg& n, typename V::reg& r) {
    using C = math_consts<typename V::value_type>;
    const auto kd = V::fma(y, V::set1(C::log2e), V::set1(C::shifter));
    n = V::sub(kd, V::set1(C::shifter));
    r = V::fnma(n, V::set1(C::ln2_hi), y);
    r = V::fnma(n, V::set1(C::ln2_lo), r);
}

/// 2^n for an integer-valued n inside the normal exponent range.
template <class V> TAPIR_ALWAYS_INLINE typename V::reg pow2i(const typename V::reg& n) {
    using T = typename V::value_type;
    using C = math_consts<T>;
    using U = typename int_of<T>::type;
    const auto kb = V::bits(V::add(n, V::set1(C::shifter)));
    const auto e = V::iadd(kb, V::iset1(static_cast<U>(C::bias - C::shifter_bits)));
    return V::from_bits(V::template shl<C::mant_bits>(e));
}

/// Horner steps q = q*r + 1/K! for K = Hi down to Lo, unrolled at compile time.
template <class V, int K, int Lo>
TAPIR_ALWAYS_INLINE typename V::reg horner_fact(const typename V::reg& q, const typename V::reg& r) {
    if constexpr (K < Lo) {
        return q;
    } else {
        using T = typename V::value_type;
        return horner_fact<V, K - 1, Lo>(V::fma(q, r, V::set1(inv_factorial<T>(K))), r);
    }
}

/// Sum_{k=2}^{terms-1} r^k/k! = r^2 * q(r); returns q.
template <class V> TAPIR_ALWAYS_INLINE typename V::reg exp_tail(const typename V::reg& r) {
    using T = typename V::value_type;
    constexpr int top = math_consts<T>::exp_terms - 1;
    return horner_fact<V, top - 1, 2>(V::set1(inv_factorial<T>(top)), r);
}

/// Horner steps R = R*z + 2/(2K+1) for K = Hi down to 1 (the atanh series in z = s^2).
template <class V, int K>
TAPIR_ALWAYS_INLINE typename V::reg horner_atanh(const typename V::reg& R, const typename V::reg& z) {
    if constexpr (K < 1) {
        return R;
    } else {
        using T = typename V::value_type;
        constexpr T c = static_cast<T>(2.0 / (2 * K + 1));
        return horner_atanh<V, K - 1>(V::fma(R, z, V::set1(c)), z);
    }
}

template <class V> TAPIR_ALWAYS_INLINE typename V::reg exp_v(const typename V::reg& x) {
    using T = typename V::value_type;
    using C = math_consts<T>;
    const auto xc = V::min(V::max(x, V::set1(C::exp_lo)), V::set1(C::exp_hi));
    typename V::reg n, r;
    reduce_ln2<V>(xc, n, r);
    const auto em = V::fma(V::mul(r, r), exp_tail<V>(r), r); // e^r - 1
    const auto p = V::add(em, V::set1(T(1)));
    /// n may be 129 or -150: split 2^n into two in-range factors so overflow and gradual
    /// underflow happen in the final multiply, rounded once.
    const auto n1 = V::sub(V::fma(n, V::set1(T(0.5)), V::set1(C::shifter)), V::set1(C::shifter));
    const auto n2 = V::sub(n, n1);
    const auto y = V::mul(V::mul(p, pow2i<V>(n1)), pow2i<V>(n2));
    return V::select(V::isnan(x), V::add(x, x), y);
}

/// expm1 for 0 <= y <= 2*tanh_clamp: 2^n (e^r - 1) + (2^n - 1), accurate in relative terms near 0.
template <class V> TAPIR_ALWAYS_INLINE typename V::reg expm1_pos_v(const typename V::reg& y) {
    using T = typename V::value_type;
    typename V::reg n, r;
    reduce_ln2<V>(y, n, r);
    const auto em = V::fma(V::mul(r, r), exp_tail<V>(r), r);
    const auto s = pow2i<V>(n);
    return V::fma(s, em, V::sub(s, V::set1(T(1))));
}

template <class V> TAPIR_ALWAYS_INLINE typename V::reg log_v(const typename V::reg& x) {
    using T = typename V::value_type;
    using C = math_consts<T>;
    const T inf = std::numeric_limits<T>::infinity();
    const auto one = V::set1(T(1));
    // Denormals: scale into the normal range first.
    const auto sub = V::lt(x, V::set1(std::numeric_limits<T>::min()));
    const auto xs = V::select(sub, V::mul(x, V::set1(C::denorm_scale)), x);
    const auto u = V::bits(xs);
    const auto ebits = V::template shr<C::mant_bits>(u);
    auto e = V::sub(V::from_bits(V::ior(ebits, V::iset1(C::two_pow_mant_bits))),
                    V::set1(C::two_pow_mant + static_cast<T>(C::bias)));
    e = V::sub(e, V::select(sub, V::set1(C::denorm_shift), V::zero()));
    auto m = V::from_bits(V::ior(V::iand(u, V::iset1(C::mant_mask)), V::iset1(C::one_bits)));
    const auto big = V::gt(m, V::set1(C::sqrt2));
    m = V::select(big, V::mul(m, V::set1(T(0.5))), m);
    e = V::select(big, V::add(e, one), e);
    /// log(1+f) = f - (f^2/2 - s (f^2/2 + R(s^2))), s = f/(2+f), R the atanh series tail.
    const auto f = V::sub(m, one);
    const auto s = V::div(f, V::add(f, V::set1(T(2))));
    const auto z = V::mul(s, s);
    constexpr T c_top = static_cast<T>(2.0 / (2 * C::log_terms + 1));
    const auto R = V::mul(horner_atanh<V, C::log_terms - 1>(V::set1(c_top), z), z);
    const auto hfsq = V::mul(V::set1(T(0.5)), V::mul(f, f));
    const auto l1p = V::sub(f, V::fnma(s, V::add(hfsq, R), hfsq));
    auto y = V::fma(e, V::set1(C::ln2_hi), V::fma(e, V::set1(C::ln2_lo), l1p));
    y = V::select(V::eq(x, V::set1(inf)), x, y);
    y = V::select(V::eq(x, V::zero()), V::set1(-inf), y);
    y = V::select(V::lt(x, V::zero()), V::set1(std::numeric_limits<T>::quiet_NaN()), y);
    return V::select(V::isnan(x), V::add(x, x), y);
}

template <class V> TAPIR_ALWAYS_INLINE typename V::reg tanh_v(const typename V::reg& x) {
    using T = typename V::value_type;
    using C = math_consts<T>;
    const auto sign = V::iand(V::bits(x), V::iset1(C::sign_mask));
    auto a = V::from_bits(V::ixor(V::bits(x), sign));
    a = V::min(a, V::set1(C::tanh_clamp));
    const auto em = expm1_pos_v<V>(V::add(a, a));
    const auto t = V::div(em, V::add(em, V::set1(T(2))));
    const auto y = V::from_bits(V::ior(V::bits(t), sign));
    return V::select(V::isnan(x), V::add(x, x), y);
}

template <class V> TAPIR_ALWAYS_INLINE typename V::reg sigmoid_v(const typename V::reg& x) {
    using T = typename V::value_type;
    using C = math_consts<T>;
    /// e = exp(-|x|) never overflows: 1/(1+e) for x >= 0, e/(1+e) for x < 0 (exact tails, no NaN).
    const auto nega = V::from_bits(V::ior(V::bits(x), V::iset1(C::sign_mask)));
    const auto e = exp_v<V>(nega);
    const auto d = V::add(V::set1(T(1)), e);
    const auto num = V::select(V::ge(x, V::zero()), V::set1(T(1)), e);
    const auto y = V::div(num, d);
    return V::select(V::isnan(x), V::add(x, x), y);
}

/// Elementwise y = F(x) over arrays; out may alias x.
template <class T, class F> struct map1_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(const T* x, T* out, std::size_t n) {
        constexpr std::size_t W = V::W;
        std::size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            const auto a = V::load(x + i);
            const auto b = V::load(x + i + W);
            V::store(out + i, F::template apply<V>(a));
            V::store(out + i + W, F::template apply<V>(b));
        }
        for (; i + W <= n; i += W) V::store(out + i, F::template apply<V>(V::load(x + i)));
        if (i < n) V::store_partial(out + i, F::template apply<V>(V::load_partial(x + i, n - i)), n - i);
    }
};

struct exp_f {
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg apply(const typename V::reg& x) { return exp_v<V>(x); }
};
struct log_f {
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg apply(const typename V::reg& x) { return log_v<V>(x); }
};
struct tanh_f {
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg apply(const typename V::reg& x) { return tanh_v<V>(x); }
};
struct sigmoid_f {
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg apply(const typename V::reg& x) {
        return sigmoid_v<V>(x);
    }
};

/// The gates of a recurrent step in one pass (math.hpp's gate_sigmoid): per row, the sum (a + b) +
/// bias, doubled on columns [g0, g1), through the sigmoid, and 2 s - 1 there. Each lane does
/// exactly what separate add, add-row, doubling, sigmoid and 2 s - 1 passes do (the doublings are
/// exact), so the bits are theirs.
template <class T> struct gate_sigmoid_kernel {
    using value_type = T;
    struct Args {
        std::size_t rows, n, g0, g1;
        const T* a;
        std::size_t lda;
        const T* b;
        std::size_t ldb;
        const T* bias;
        T* out;
        std::size_t ldo;
    };
    template <class V, bool Partial>
    static TAPIR_ALWAYS_INLINE void block(const T* a, const T* b, const T* bias, T* out, bool twice, std::size_t r) {
        using R = typename V::reg;
        R x;
        if constexpr (Partial) x = V::add(V::add(V::load_partial(a, r), V::load_partial(b, r)), V::load_partial(bias, r));
        else x = V::add(V::add(V::load(a), V::load(b)), V::load(bias));
        if (twice) x = V::add(x, x);
        R y = sigmoid_v<V>(x);
        if (twice) y = V::sub(V::add(y, y), V::set1(T(1)));
        if constexpr (Partial) V::store_partial(out, y, r);
        else (void)r, V::store(out, y);
    }
    /// Columns [j0, j1) of one row, all doubled or none.
    template <class V>
    static TAPIR_ALWAYS_INLINE void span(const Args& g, std::size_t row, std::size_t j0, std::size_t j1, bool twice) {
        constexpr std::size_t W = V::W;
        const T* a = g.a + row * g.lda;
        const T* b = g.b + row * g.ldb;
        T* o = g.out + row * g.ldo;
        std::size_t j = j0;
        for (; j + W <= j1; j += W) block<V, false>(a + j, b + j, g.bias + j, o + j, twice, W);
        if (j < j1) block<V, true>(a + j, b + j, g.bias + j, o + j, twice, j1 - j);
    }
    template <class V> static TAPIR_ALWAYS_INLINE void run(Args g) {
        for (std::size_t row = 0; row < g.rows; ++row) {
            span<V>(g, row, 0, g.g0, false);
            span<V>(g, row, g.g0, g.g1, true);
            span<V>(g, row, g.g1, g.n, false);
        }
    }
};

} // namespace detail

/// The constants of the polynomial kernels above (deploy/codegen.hpp writes the same operations
/// out as text, with these numbers).
template <class T> using math_constants = detail::math_consts<T>;
/// 1/k! rounded to T, as the exp polynomial's Horner steps use it.
template <class T> constexpr T inv_factorial(int k) { return detail::inv_factorial<T>(k); }

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
