#pragma once
/// Vectorised elementwise ops and reductions used by the tape. Arrays are contiguous; an output may
/// be the same array as an input (exact aliasing), not a shifted view of it.

#include <algorithm>
#include <cstddef>

#include "activation.hpp"
#include "arch.hpp"
#include "math.hpp"
#include "vec.hpp"

TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd {
namespace detail {

/// out = F(a, b) lane-wise.
template <class T, class F> struct map2_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(const T* a, const T* b, T* out, std::size_t n) {
        constexpr std::size_t W = V::W;
        std::size_t i = 0;
        for (; i + 4 * W <= n; i += 4 * W) {
            const auto a0 = V::load(a + i), a1 = V::load(a + i + W), a2 = V::load(a + i + 2 * W),
                       a3 = V::load(a + i + 3 * W);
            const auto b0 = V::load(b + i), b1 = V::load(b + i + W), b2 = V::load(b + i + 2 * W),
                       b3 = V::load(b + i + 3 * W);
            V::store(out + i, F::template apply<V>(a0, b0));
            V::store(out + i + W, F::template apply<V>(a1, b1));
            V::store(out + i + 2 * W, F::template apply<V>(a2, b2));
            V::store(out + i + 3 * W, F::template apply<V>(a3, b3));
        }
        for (; i + W <= n; i += W) V::store(out + i, F::template apply<V>(V::load(a + i), V::load(b + i)));
        if (i < n) {
            const std::size_t r = n - i;
            V::store_partial(out + i, F::template apply<V>(V::load_partial(a + i, r), V::load_partial(b + i, r)), r);
        }
    }
};

/// out = F(a, s) with a broadcast scalar s.
template <class T, class F> struct map_scalar_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(const T* a, T s, T* out, std::size_t n) {
        constexpr std::size_t W = V::W;
        const auto sv = V::set1(s);
        std::size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            const auto a0 = V::load(a + i), a1 = V::load(a + i + W);
            V::store(out + i, F::template apply<V>(a0, sv));
            V::store(out + i + W, F::template apply<V>(a1, sv));
        }
        for (; i + W <= n; i += W) V::store(out + i, F::template apply<V>(V::load(a + i), sv));
        if (i < n) V::store_partial(out + i, F::template apply<V>(V::load_partial(a + i, n - i), sv), n - i);
    }
};

/// The four lane-wise arithmetic operations as map2/map_scalar functors.
enum class arith_op { add, sub, mul, div };
template <arith_op Op>
struct arith_f {
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg apply(const typename V::reg& a, const typename V::reg& b) {
        if constexpr (Op == arith_op::add) return V::add(a, b);
        else if constexpr (Op == arith_op::sub) return V::sub(a, b);
        else if constexpr (Op == arith_op::mul) return V::mul(a, b);
        else return V::div(a, b);
    }
};
using add_f = arith_f<arith_op::add>;
using sub_f = arith_f<arith_op::sub>;
using mul_f = arith_f<arith_op::mul>;
using div_f = arith_f<arith_op::div>;

template <class T> struct axpy_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE void run(T alpha, const T* x, T* y, std::size_t n) {
        constexpr std::size_t W = V::W;
        const auto av = V::set1(alpha);
        std::size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            const auto x0 = V::load(x + i), x1 = V::load(x + i + W);
            const auto y0 = V::load(y + i), y1 = V::load(y + i + W);
            V::store(y + i, V::fma(av, x0, y0));
            V::store(y + i + W, V::fma(av, x1, y1));
        }
        for (; i + W <= n; i += W) V::store(y + i, V::fma(av, V::load(x + i), V::load(y + i)));
        if (i < n) V::store_partial(y + i, V::fma(av, V::load_partial(x + i, n - i), V::load_partial(y + i, n - i)), n - i);
    }
};

/// sum (Dot = false) or dot product (Dot = true) with four independent vector accumulators.
template <class T, bool Dot> struct reduce_kernel {
    using value_type = T;
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg term(const T* a, const T* b, std::size_t i) {
        if constexpr (Dot) {
            return V::mul(V::load(a + i), V::load(b + i));
        } else {
            (void)b;
            return V::load(a + i);
        }
    }
    template <class V> static TAPIR_ALWAYS_INLINE T run(const T* a, const T* b, std::size_t n) {
        constexpr std::size_t W = V::W;
        auto s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
        std::size_t i = 0;
        for (; i + 4 * W <= n; i += 4 * W) {
            if constexpr (Dot) {
                s0 = V::fma(V::load(a + i), V::load(b + i), s0);
                s1 = V::fma(V::load(a + i + W), V::load(b + i + W), s1);
                s2 = V::fma(V::load(a + i + 2 * W), V::load(b + i + 2 * W), s2);
                s3 = V::fma(V::load(a + i + 3 * W), V::load(b + i + 3 * W), s3);
            } else {
                s0 = V::add(s0, V::load(a + i));
                s1 = V::add(s1, V::load(a + i + W));
                s2 = V::add(s2, V::load(a + i + 2 * W));
                s3 = V::add(s3, V::load(a + i + 3 * W));
            }
        }
        for (; i + W <= n; i += W) s0 = V::add(s0, term<V>(a, b, i));
        if (i < n) {
            const auto x = V::load_partial(a + i, n - i);
            if constexpr (Dot) {
                s1 = V::fma(x, V::load_partial(b + i, n - i), s1);
            } else {
                s1 = V::add(s1, x);
            }
        }
        return V::hsum(V::add(V::add(s0, s1), V::add(s2, s3)));
    }
};

/// C[i, :] += row for i < m.
template <class T> struct add_row_kernel {
    using value_type = T;
    template <class V>
    static TAPIR_ALWAYS_INLINE void run(T* c, std::size_t m, std::size_t n, std::size_t ldc, const T* row) {
        if (n == 1) { // a one-output layer's bias: one add per row, not one kernel call per row
            const T r = row[0];
            for (std::size_t i = 0; i < m; ++i) c[i * ldc] += r;
            return;
        }
        for (std::size_t i = 0; i < m; ++i) map2_kernel<T, add_f>::template run<V>(c + i * ldc, row, c + i * ldc, n);
    }
};

/// out[j] = sum_i G[i, j], column blocks of 4 vectors kept in registers. Rows go in blocks of
/// 32 that stay in L1 while every column block passes over them (the partial sums wait in out),
/// so a matrix wider than four vectors is read from memory once, not once per column block; each
/// column is still summed from zero in row order, so the bits do not depend on the blocking.
template <class T> struct sum_rows_kernel {
    using value_type = T;
    static constexpr std::size_t RB = 32;
    template <class V> static TAPIR_ALWAYS_INLINE typename V::reg start(const T* out, std::size_t j, bool first) {
        return first ? V::zero() : V::load(out + j);
    }
    template <class V>
    static TAPIR_ALWAYS_INLINE void run(const T* g, std::size_t m, std::size_t n, std::size_t ldg, T* out) {
        constexpr std::size_t W = V::W;
        const std::size_t rb = n > 4 * W ? RB : m;  // one column block: no row blocks needed
        for (std::size_t i0 = 0;; i0 += rb) {  // once even when m == 0: out is then zeros
            const std::size_t i1 = std::min(m, i0 + rb);
            const bool first = i0 == 0;
            std::size_t j = 0;
            for (; j + 4 * W <= n; j += 4 * W) {
                auto s0 = start<V>(out, j, first), s1 = start<V>(out, j + W, first), s2 = start<V>(out, j + 2 * W, first),
                     s3 = start<V>(out, j + 3 * W, first);
                for (std::size_t i = i0; i < i1; ++i) {
                    const T* p = g + i * ldg + j;
                    s0 = V::add(s0, V::load(p));
                    s1 = V::add(s1, V::load(p + W));
                    s2 = V::add(s2, V::load(p + 2 * W));
                    s3 = V::add(s3, V::load(p + 3 * W));
                }
                V::store(out + j, s0);
                V::store(out + j + W, s1);
                V::store(out + j + 2 * W, s2);
                V::store(out + j + 3 * W, s3);
            }
            for (; j + W <= n; j += W) {
                auto s = start<V>(out, j, first);
                for (std::size_t i = i0; i < i1; ++i) s = V::add(s, V::load(g + i * ldg + j));
                V::store(out + j, s);
            }
            if (j < n) {
                const std::size_t r = n - j;
                auto s = first ? V::zero() : V::load_partial(out + j, r);
                for (std::size_t i = i0; i < i1; ++i) s = V::add(s, V::load_partial(g + i * ldg + j, r));
                V::store_partial(out + j, s, r);
            }
            if (i1 == m) break;
        }
    }
};

} // namespace detail

template <class T> void add(const T* a, const T* b, T* out, std::size_t n) {
    dispatch<detail::map2_kernel<T, detail::add_f>>(a, b, out, n);
}
template <class T> void sub(const T* a, const T* b, T* out, std::size_t n) {
    dispatch<detail::map2_kernel<T, detail::sub_f>>(a, b, out, n);
}
template <class T> void mul(const T* a, const T* b, T* out, std::size_t n) {
    dispatch<detail::map2_kernel<T, detail::mul_f>>(a, b, out, n);
}
template <class T> void div(const T* a, const T* b, T* out, std::size_t n) {
    dispatch<detail::map2_kernel<T, detail::div_f>>(a, b, out, n);
}
template <class T> void add_scalar(const T* a, T s, T* out, std::size_t n) {
    dispatch<detail::map_scalar_kernel<T, detail::add_f>>(a, s, out, n);
}
template <class T> void mul_scalar(const T* a, T s, T* out, std::size_t n) {
    dispatch<detail::map_scalar_kernel<T, detail::mul_f>>(a, s, out, n);
}
/// y += alpha * x (fused multiply-add on SIMD paths).
template <class T> void axpy(T alpha, const T* x, T* y, std::size_t n) {
    dispatch<detail::axpy_kernel<T>>(alpha, x, y, n);
}
/// out = max(0, x); NaN stays NaN (simd/activation.hpp's relu).
template <class T> void relu(const T* x, T* out, std::size_t n) {
    dispatch<detail::activation_kernel<T, Activation::relu>>(x, out, n, T(0));
}
/// out = y > 0 ? g : 0 (y is the relu output; simd/activation.hpp's relu derivative).
template <class T> void relu_backward(const T* g, const T* y, T* out, std::size_t n) {
    dispatch<detail::activation_grad_kernel<T, Activation::relu>>(g, y, out, n, T(0));
}
/// Sum with several independent partial sums: the rounding (not the value) depends on the ISA.
template <class T> T sum(const T* x, std::size_t n) {
    return dispatch<detail::reduce_kernel<T, false>>(x, static_cast<const T*>(nullptr), n);
}
template <class T> T dot(const T* a, const T* b, std::size_t n) {
    return dispatch<detail::reduce_kernel<T, true>>(a, b, n);
}
/// C[i, :] += row[:] for the m rows of a row-major m x n matrix with leading dimension ldc.
template <class T> void add_row(T* c, std::size_t m, std::size_t n, std::size_t ldc, const T* row) {
    dispatch<detail::add_row_kernel<T>>(c, m, n, ldc, row);
}
/// out[j] = sum_i G[i, j]; out is overwritten (zero when m == 0).
template <class T> void sum_rows(const T* g, std::size_t m, std::size_t n, std::size_t ldg, T* out) {
    dispatch<detail::sum_rows_kernel<T>>(g, m, n, ldg, out);
}

/// Compiled once per program under TAPIR_EXTERN_TEMPLATES, like gemm() (see simd/gemm.hpp).
#define TAPIR_ELEMENTWISE_INSTANTIATIONS(X, T)                                                          \
    X void add<T>(const T*, const T*, T*, std::size_t);                                                 \
    X void sub<T>(const T*, const T*, T*, std::size_t);                                                 \
    X void mul<T>(const T*, const T*, T*, std::size_t);                                                 \
    X void div<T>(const T*, const T*, T*, std::size_t);                                                 \
    X void add_scalar<T>(const T*, T, T*, std::size_t);                                                 \
    X void mul_scalar<T>(const T*, T, T*, std::size_t);                                                 \
    X void axpy<T>(T, const T*, T*, std::size_t);                                                       \
    X void relu<T>(const T*, T*, std::size_t);                                                          \
    X void relu_backward<T>(const T*, const T*, T*, std::size_t);                                       \
    X T sum<T>(const T*, std::size_t);                                                                  \
    X T dot<T>(const T*, const T*, std::size_t);                                                        \
    X void add_row<T>(T*, std::size_t, std::size_t, std::size_t, const T*);                            \
    X void sum_rows<T>(const T*, std::size_t, std::size_t, std::size_t, T*);
#if defined(TAPIR_INSTANTIATE_KERNELS)
TAPIR_ELEMENTWISE_INSTANTIATIONS(template, float)
TAPIR_ELEMENTWISE_INSTANTIATIONS(template, double)
#elif defined(TAPIR_EXTERN_TEMPLATES)
TAPIR_ELEMENTWISE_INSTANTIATIONS(extern template, float)
TAPIR_ELEMENTWISE_INSTANTIATIONS(extern template, double)
#endif
#undef TAPIR_ELEMENTWISE_INSTANTIATIONS

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
