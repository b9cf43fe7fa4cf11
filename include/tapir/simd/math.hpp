#pragma once
/// Vectorised exp, log, tanh and sigmoid over arrays on the active instruction set; the kernels
/// themselves (one register of any wrapper) are in vmath.hpp.

#include <cstddef>

#include "arch.hpp"
#include "vmath.hpp"

TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd {

/// out[i] = e^x[i]. Max error 1.5 ulp (float and double, every ISA), gradual underflow included;
/// exp(x) = +inf above the overflow threshold, 0 below the underflow one, NaN propagates.
template <class T> void exp(const T* x, T* out, std::size_t n) {
    dispatch<detail::map1_kernel<T, detail::exp_f>>(x, out, n);
}
/// out[i] = ln x[i]. Max error 1.5 ulp; denormal inputs are rescaled exactly; log(0) = -inf,
/// log(x<0) = NaN, log(+inf) = +inf.
template <class T> void log(const T* x, T* out, std::size_t n) {
    dispatch<detail::map1_kernel<T, detail::log_f>>(x, out, n);
}
/// out[i] = tanh x[i]. Max error 3 ulp; odd, exactly +-1 for |x| >= 10 (float) / 20 (double).
template <class T> void tanh(const T* x, T* out, std::size_t n) {
    dispatch<detail::map1_kernel<T, detail::tanh_f>>(x, out, n);
}
/// out[i] = 1/(1+e^-x[i]). Max error 3 ulp; tends to exactly 1 and to the (denormal) e^x tail,
/// never NaN for finite or infinite input.
template <class T> void sigmoid(const T* x, T* out, std::size_t n) {
    dispatch<detail::map1_kernel<T, detail::sigmoid_f>>(x, out, n);
}

/// The gates of a recurrent step in one pass over (rows, n): out = sigmoid((a + b) + bias) with
/// bias one row, and on columns [g0, g1) the tanh of the same sum written 2 sigmoid(2 x) - 1 (an
/// LSTM's cell candidate, so that all four gates are one sigmoid). The same bits as the separate
/// passes: add, add_row, doubling, sigmoid, 2 s - 1. out may alias a or b when the strides agree.
template <class T>
void gate_sigmoid(std::size_t rows, std::size_t n, std::size_t g0, std::size_t g1, const T* a, std::size_t lda, const T* b,
                  std::size_t ldb, const T* bias, T* out, std::size_t ldo) {
    using K = detail::gate_sigmoid_kernel<T>;
    dispatch<K>(typename K::Args{rows, n, g0, g1, a, lda, b, ldb, bias, out, ldo});
}

/// Compiled once per program under TAPIR_EXTERN_TEMPLATES, like gemm() (see simd/gemm.hpp).
#define TAPIR_MATH_INSTANTIATIONS(X, T)                                                                 \
    X void exp<T>(const T*, T*, std::size_t);                                                           \
    X void log<T>(const T*, T*, std::size_t);                                                           \
    X void tanh<T>(const T*, T*, std::size_t);                                                          \
    X void sigmoid<T>(const T*, T*, std::size_t);
#if defined(TAPIR_INSTANTIATE_KERNELS)
TAPIR_MATH_INSTANTIATIONS(template, float)
TAPIR_MATH_INSTANTIATIONS(template, double)
#elif defined(TAPIR_EXTERN_TEMPLATES)
TAPIR_MATH_INSTANTIATIONS(extern template, float)
TAPIR_MATH_INSTANTIATIONS(extern template, double)
#endif
#undef TAPIR_MATH_INSTANTIATIONS

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
