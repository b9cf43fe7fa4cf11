#pragma once
/// Compile-time-sized inference for trained MLPs: Mlp<float, 8, 24, 16, 8, 1>.
///
/// Built for trigger and embedded code: forward() is const, noexcept, allocates nothing (weights
/// live inside the object, scratch on the stack), shares no mutable state (thread-safe), and this
/// header compiles with -fno-exceptions -fno-rtti. It includes no tapir header that can throw;
/// conversion from a dynamic model or a model file (with error messages) is in convert.hpp.
///
/// Numbers: each output is act(sum_p x[p] W[p][j] + b[j]) with the sum a chain of fused
/// multiply-adds in increasing p, exactly the order of tapir::simd::gemm (including its split of
/// long sums into blocks, 256 to 512 terms by kernel family), then the bias, then the
/// activation; tanh and sigmoid replicate
/// tapir::simd's polynomial kernels operation by operation. On the same instruction set the
/// outputs are therefore bitwise those of the dynamic model's dense op.
///
/// Kernels: AVX-512 and AVX2+FMA (GCC/Clang target attributes, chosen at run time by cpuid, no
/// -march needed), NEON on aarch64, and a portable scalar path. Large models (3 x 256 is 0.5 MB
/// of weights) belong in static storage or on the heap, not on a small stack.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../simd/detail/x86_builtins.hpp"

/// The x86 kernels use simd/detail/x86_builtins.hpp rather than <immintrin.h> (0.7 s of compile time).
#if TAPIR_X86_BUILTINS && !defined(TAPIR_SIMD_NO_X86)
#define TAPIR_DEPLOY_X86 1
#define TAPIR_DEPLOY_AVX2 TAPIR_X86_AVX2
#define TAPIR_DEPLOY_AVX512 TAPIR_X86_AVX512
#else
#define TAPIR_DEPLOY_X86 0
#endif

#if defined(__aarch64__) && defined(__ARM_NEON) && !defined(TAPIR_SIMD_NO_NEON)
#define TAPIR_DEPLOY_NEON 1
#include <arm_neon.h>
#else
#define TAPIR_DEPLOY_NEON 0
#endif

// Boxed vector registers cross always-inlined generic code only; the ABI note is moot.
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace tapir::deploy {

/// Activation after a dense layer; same values and order as tapir::Activation.
enum class Act : std::uint8_t { none, relu, leaky_relu, elu, tanh, sigmoid, softplus };

inline const char* act_name(Act a) noexcept {
    switch (a) {
    case Act::none: return "linear";
    case Act::relu: return "relu";
    case Act::leaky_relu: return "leaky_relu";
    case Act::elu: return "elu";
    case Act::tanh: return "tanh";
    case Act::sigmoid: return "sigmoid";
    case Act::softplus: return "softplus";
    }
    return "?";
}

/// Kernel family of the fixed-size path.
enum class Isa : std::uint8_t { scalar, avx2, avx512, neon };

inline const char* isa_name(Isa i) noexcept {
    switch (i) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::neon: return "neon";
    }
    return "?";
}

/// Whether this CPU and this build can run a kernel family (cpuid via the compiler's builtins,
/// which also check that the OS saves the vector state; __builtin_cpu_init makes them valid in
/// static constructors too).
inline bool isa_supported(Isa i) noexcept {
    switch (i) {
    case Isa::scalar: return true;
#if TAPIR_DEPLOY_X86
    case Isa::avx2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    case Isa::avx2:
    case Isa::avx512: return false;
#endif
    case Isa::neon: return TAPIR_DEPLOY_NEON != 0;
    }
    return false;
}

inline Isa best_isa() noexcept {
    if (isa_supported(Isa::avx512)) return Isa::avx512;
    if (isa_supported(Isa::avx2)) return Isa::avx2;
    if (isa_supported(Isa::neon)) return Isa::neon;
    return Isa::scalar;
}

/// Outcome of loading or configuring a model (no exceptions in this header).
enum class Status : std::uint8_t { ok, layer_count, shape, null_pointer, non_finite, bad_scale, unsupported_isa };

inline const char* status_message(Status s) noexcept {
    switch (s) {
    case Status::ok: return "ok";
    case Status::layer_count: return "the number of layers differs from the model's";
    case Status::shape: return "a layer's input or output size differs from the model's";
    case Status::null_pointer: return "a weight or bias pointer is null";
    case Status::non_finite: return "a weight, bias or scale is NaN or infinite";
    case Status::bad_scale: return "an input scale is not positive";
    case Status::unsupported_isa: return "this CPU or build does not support the requested instruction set";
    }
    return "?";
}

/// One trained dense layer, read-only: weight (in x out, row-major, as tapir::nn::Dense and Keras
/// store it), bias (out values, or null for none), activation and its alpha (leaky slope, ELU scale).
template <class T>
struct LayerView {
    const T* weight = nullptr;
    const T* bias = nullptr;
    std::size_t in = 0, out = 0;
    Act act = Act::none;
    T alpha = T(0);
};

namespace detail {

constexpr std::size_t round_up(std::size_t x, std::size_t r) noexcept { return (x + r - 1) / r * r; }
constexpr std::size_t cmax(std::size_t a, std::size_t b) noexcept { return a > b ? a : b; }

/// simd::gemm's K blocking: equal blocks of at most kc terms (kc depends on the kernel family),
/// each a fresh chain added to C in order.
constexpr std::size_t k_block(std::size_t k, std::size_t kc) noexcept {
    return k <= kc ? k : (k + (k + kc - 1) / kc - 1) / ((k + kc - 1) / kc);
}

template <class T>
inline bool finite(T x) noexcept {
    return x - x == x - x;
}

// ---- scalar replicas of tapir::simd's exp/tanh/sigmoid ------------------------------------
// F = true: multiply-adds are fused (the AVX2/AVX-512/NEON kernels); false: a * b + c as the
// scalar kernels write it. The constants are simd::detail::math_consts' (this header cannot
// include simd/, which throws); convert.hpp static_asserts that they agree.

template <class T>
struct mconst;
template <>
struct mconst<float> {
    using U = std::uint32_t;
    static constexpr int mant_bits = 23, bias = 127, exp_terms = 8;
    /// ln2 = hi + lo, hi on 16 bits (Cody-Waite).
    static constexpr float log2e = 1.44269502163f, ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187e-06f;
    static constexpr float shifter = 12582912.0f, exp_hi = 89.0f, exp_lo = -104.0f, tanh_clamp = 10.0f;
};
template <>
struct mconst<double> {
    using U = std::uint64_t;
    static constexpr int mant_bits = 52, bias = 1023, exp_terms = 14;
    /// hi on 32 bits.
    static constexpr double log2e = 1.4426950408889634, ln2_hi = 0.6931471806019545, ln2_lo = -4.2009150726810846e-11;
    static constexpr double shifter = 6755399441055744.0, exp_hi = 710.0, exp_lo = -746.0, tanh_clamp = 20.0;
};

template <class T>
constexpr T inv_factorial(int k) noexcept {
    double f = 1.0;
    for (int i = 2; i <= k; ++i) f *= i;
    return static_cast<T>(1.0 / f);
}

template <bool F, class T>
TAPIR_ALWAYS_INLINE T mad(T a, T b, T c) noexcept {
    if constexpr (F) return std::fma(a, b, c);
    else return a * b + c;
}

/// 2^n for an integer-valued n in the normal exponent range, exactly.
template <class T>
TAPIR_ALWAYS_INLINE T pow2i(T n) noexcept {
    using C = mconst<T>;
    using U = typename C::U;
    const U e = static_cast<U>(static_cast<std::int64_t>(n) + C::bias) << C::mant_bits;
    T out;
    std::memcpy(&out, &e, sizeof out);
    return out;
}

template <bool F, class T>
TAPIR_ALWAYS_INLINE void reduce_ln2(T y, T& n, T& r) noexcept {
    using C = mconst<T>;
    n = mad<F>(y, C::log2e, C::shifter) - C::shifter;
    r = mad<F>(-n, C::ln2_hi, y);
    r = mad<F>(-n, C::ln2_lo, r);
}

/// e^r - 1 = r + r^2 q(r), Horner over 1/k! from the top term down to 1/2!.
template <bool F, class T>
TAPIR_ALWAYS_INLINE T expm1_reduced(T r) noexcept {
    constexpr int top = mconst<T>::exp_terms - 1;
    T q = inv_factorial<T>(top);
    for (int k = top - 1; k >= 2; --k) q = mad<F>(q, r, inv_factorial<T>(k));
    return mad<F>(r * r, q, r);
}

template <bool F, class T>
inline T exp_r(T x) noexcept {
    using C = mconst<T>;
    if (x != x) return x + x;
    T xc = x > C::exp_lo ? x : C::exp_lo;
    xc = xc < C::exp_hi ? xc : C::exp_hi;
    T n, r;
    reduce_ln2<F>(xc, n, r);
    const T p = expm1_reduced<F>(r) + T(1);
    const T n1 = mad<F>(n, T(0.5), C::shifter) - C::shifter;
    const T n2 = n - n1;
    return (p * pow2i(n1)) * pow2i(n2);
}

template <bool F, class T>
inline T tanh_r(T x) noexcept {
    using C = mconst<T>;
    if (x != x) return x + x;
    T a = std::fabs(x);
    a = a < C::tanh_clamp ? a : C::tanh_clamp;
    const T y = a + a;
    T n, r;
    reduce_ln2<F>(y, n, r);
    const T s = pow2i(n);
    const T em = mad<F>(s, expm1_reduced<F>(r), s - T(1));
    const T t = em / (em + T(2));
    return std::signbit(x) ? -t : t;
}

template <bool F, class T>
inline T sigmoid_r(T x) noexcept {
    if (x != x) return x + x;
    const T e = exp_r<F>(-std::fabs(x));
    return (std::signbit(x) ? e : T(1)) / (T(1) + e);
}

template <bool F, class T>
inline T activate(Act a, T z, T alpha) noexcept {
    switch (a) {
    case Act::none: return z;
    case Act::relu: return T(0) > z ? T(0) : z;
    case Act::leaky_relu: return z > T(0) ? z : alpha * z;
    case Act::elu: return z > T(0) ? z : alpha * std::expm1(z);
    case Act::tanh: return tanh_r<F>(z);
    case Act::sigmoid: return sigmoid_r<F>(z);
    case Act::softplus: return (z > T(0) ? z : T(0)) + std::log1p(std::exp(-std::abs(z)));
    }
    return z;
}

// ---- vector wrappers ----------------------------------------------------------------------
// Blocking: U1 vectors per pass at batch 1 (enough chains to hide the FMA latency), R rows x UB
// vectors per pass in batches (weights loaded once for R rows). KC mirrors the K block depth of
// simd::gemm for the same family and type (convert.hpp static_asserts it), which decides where
// the dynamic model restarts its multiply-add chains.

template <class T>
struct vscalar {
    using reg = T;
    static constexpr std::size_t W = 1, U1 = 8, R = 4, UB = 2, KC = 256;
#if defined(__FP_FAST_FMA) && defined(__FP_FAST_FMAF)
    /// As tapir::simd's scalar family: fused where the target has FMA (aarch64, x86 with -mfma),
    /// since the compiler would contract a * b + c at some sites and not at others.
    static constexpr bool fused = true;
    static reg fma(reg a, reg b, reg c) noexcept { return std::fma(a, b, c); }
#else
    static constexpr bool fused = false;
    static reg fma(reg a, reg b, reg c) noexcept { return a * b + c; }
#endif
    static reg load(const T* p) noexcept { return *p; }
    static void store(T* p, reg v) noexcept { *p = v; }
    static reg set1(T x) noexcept { return x; }
    static reg zero() noexcept { return T(0); }
    static reg add(reg a, reg b) noexcept { return a + b; }
    static reg relu(reg x) noexcept { return T(0) > x ? T(0) : x; }
};

#if TAPIR_DEPLOY_X86
namespace x86 = tapir::detail::x86;
/// A vector register in a struct: the generic code passes it by value like a scalar.
template <class R>
struct box { R v; };

template <class T>
struct vavx2 {
    using raw = std::conditional_t<std::is_same<T, float>::value, x86::f32x8, x86::f64x4>;
    using reg = box<raw>;
    static constexpr std::size_t W = 32 / sizeof(T), U1 = 8, R = 4, UB = 2, KC = sizeof(T) == 4 ? 384 : 256;
    static constexpr bool fused = true;
    TAPIR_DEPLOY_AVX2 static inline reg load(const T* p) noexcept { return {x86::loadu256(p)}; }
    TAPIR_DEPLOY_AVX2 static inline void store(T* p, reg v) noexcept { x86::storeu(p, v.v); }
    TAPIR_DEPLOY_AVX2 static inline reg set1(T x) noexcept { return {x86::set1_256(x)}; }
    TAPIR_DEPLOY_AVX2 static inline reg zero() noexcept { return {raw{}}; }
    TAPIR_DEPLOY_AVX2 static inline reg fma(reg a, reg b, reg c) noexcept { return {x86::fmadd(a.v, b.v, c.v)}; }
    TAPIR_DEPLOY_AVX2 static inline reg add(reg a, reg b) noexcept { return {a.v + b.v}; }
    TAPIR_DEPLOY_AVX2 static inline reg relu(reg x) noexcept { return {x86::max(raw{}, x.v)}; }
};

template <class T>
struct vavx512 {
    using raw = std::conditional_t<std::is_same<T, float>::value, x86::f32x16, x86::f64x8>;
    using reg = box<raw>;
    static constexpr std::size_t W = 64 / sizeof(T), U1 = 8, R = 4, UB = 4, KC = sizeof(T) == 4 ? 512 : 384;
    static constexpr bool fused = true;
    TAPIR_DEPLOY_AVX512 static inline reg load(const T* p) noexcept { return {x86::loadu512(p)}; }
    TAPIR_DEPLOY_AVX512 static inline void store(T* p, reg v) noexcept { x86::storeu(p, v.v); }
    TAPIR_DEPLOY_AVX512 static inline reg set1(T x) noexcept { return {x86::set1_512(x)}; }
    TAPIR_DEPLOY_AVX512 static inline reg zero() noexcept { return {raw{}}; }
    TAPIR_DEPLOY_AVX512 static inline reg fma(reg a, reg b, reg c) noexcept { return {x86::fmadd(a.v, b.v, c.v)}; }
    TAPIR_DEPLOY_AVX512 static inline reg add(reg a, reg b) noexcept { return {a.v + b.v}; }
    TAPIR_DEPLOY_AVX512 static inline reg relu(reg x) noexcept { return {x86::max(raw{}, x.v)}; }
};
#endif

#if TAPIR_DEPLOY_NEON
template <class T>
struct vneon;
template <>
struct vneon<float> {
    using reg = float32x4_t;
    static constexpr std::size_t W = 4, U1 = 8, R = 4, UB = 4, KC = 256;
    static constexpr bool fused = true;
    static inline reg load(const float* p) noexcept { return vld1q_f32(p); }
    static inline void store(float* p, reg v) noexcept { vst1q_f32(p, v); }
    static inline reg set1(float x) noexcept { return vdupq_n_f32(x); }
    static inline reg zero() noexcept { return vdupq_n_f32(0.0f); }
    static inline reg fma(reg a, reg b, reg c) noexcept { return vfmaq_f32(c, a, b); }
    static inline reg add(reg a, reg b) noexcept { return vaddq_f32(a, b); }
    /// x86's max(0, x): x unless 0 > x (keeps NaN and -0).
    static inline reg relu(reg x) noexcept {
        const reg z = vdupq_n_f32(0.0f);
        return vbslq_f32(vcgtq_f32(z, x), z, x);
    }
};
template <>
struct vneon<double> {
    using reg = float64x2_t;
    static constexpr std::size_t W = 2, U1 = 8, R = 4, UB = 4, KC = 256;
    static constexpr bool fused = true;
    static inline reg load(const double* p) noexcept { return vld1q_f64(p); }
    static inline void store(double* p, reg v) noexcept { vst1q_f64(p, v); }
    static inline reg set1(double x) noexcept { return vdupq_n_f64(x); }
    static inline reg zero() noexcept { return vdupq_n_f64(0.0); }
    static inline reg fma(reg a, reg b, reg c) noexcept { return vfmaq_f64(c, a, b); }
    static inline reg add(reg a, reg b) noexcept { return vaddq_f64(a, b); }
    static inline reg relu(reg x) noexcept {
        const reg z = vdupq_n_f64(0.0);
        return vbslq_f64(vcgtq_f64(z, x), z, x);
    }
};
#endif

/// acc[r][u] = sum_{p0 <= p < p1} x[r][p] W[p][u-th vector], one fused chain per lane in p order.
template <class V, class T, std::size_t R, std::size_t U>
TAPIR_ALWAYS_INLINE void dense_chain(const T* TAPIR_RESTRICT x, std::size_t ldx, const T* TAPIR_RESTRICT w, std::size_t ldw,
                                     std::size_t p0, std::size_t p1, typename V::reg (&acc)[R][U]) noexcept {
    using reg = typename V::reg;
    constexpr std::size_t W = V::W;
#pragma GCC unroll 4
    for (std::size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (std::size_t u = 0; u < U; ++u) acc[r][u] = V::zero();
    for (std::size_t p = p0; p < p1; ++p) {
        const T* wp = w + p * ldw;
        if constexpr (R == 1) {
            const reg xv = V::set1(x[p]);
#pragma GCC unroll 16
            for (std::size_t u = 0; u < U; ++u) acc[0][u] = V::fma(xv, V::load(wp + u * W), acc[0][u]);
        } else {
            reg wv[U];
#pragma GCC unroll 16
            for (std::size_t u = 0; u < U; ++u) wv[u] = V::load(wp + u * W);
#pragma GCC unroll 4
            for (std::size_t r = 0; r < R; ++r) {
                const reg xv = V::set1(x[r * ldx + p]);
#pragma GCC unroll 16
                for (std::size_t u = 0; u < U; ++u) acc[r][u] = V::fma(xv, wv[u], acc[r][u]);
            }
        }
    }
}

/// y[r][0 .. U*W) = x[r][0 .. K) W[0 .. K)[same columns] + b for R rows: one fused chain per
/// output over each K block (simd::gemm's order), blocks added in order, then the bias.
template <class V, class T, std::size_t K, std::size_t R, std::size_t U>
TAPIR_ALWAYS_INLINE void dense_tile(const T* TAPIR_RESTRICT x, std::size_t ldx, const T* TAPIR_RESTRICT w, std::size_t ldw,
                                    const T* TAPIR_RESTRICT b, T* TAPIR_RESTRICT y, std::size_t ldy, bool relu) noexcept {
    using reg = typename V::reg;
    constexpr std::size_t W = V::W, kcb = k_block(K, V::KC);
    reg c[R][U];
    dense_chain<V, T, R, U>(x, ldx, w, ldw, 0, kcb, c);
    for (std::size_t p0 = kcb; p0 < K; p0 += kcb) {
        reg acc[R][U];
        dense_chain<V, T, R, U>(x, ldx, w, ldw, p0, p0 + kcb < K ? p0 + kcb : K, acc);
#pragma GCC unroll 4
        for (std::size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
            for (std::size_t u = 0; u < U; ++u) c[r][u] = V::add(acc[r][u], c[r][u]);
    }
#pragma GCC unroll 4
    for (std::size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (std::size_t u = 0; u < U; ++u) {
            reg v = V::add(c[r][u], V::load(b + u * W));
            if (relu) v = V::relu(v);
            V::store(y + r * ldy + u * W, v);
        }
}

} // namespace detail

/// A dense layer with compile-time sizes: weight (In x Out, row-major, rows padded to a multiple
/// of 64 bytes with zeros), bias, activation.
template <class T, std::size_t In, std::size_t Out>
struct Dense {
    static_assert(In > 0 && Out > 0, "Dense: sizes must be positive");
    using value_type = T;
    static constexpr std::size_t in = In, out = Out;
    static constexpr std::size_t lanes = 64 / sizeof(T);
    static constexpr std::size_t out_padded = detail::round_up(Out, lanes);

    alignas(64) T weight[In][out_padded] = {};
    alignas(64) T bias[out_padded] = {};
    Act act = Act::none;
    T alpha = T(0);

    /// Weight element (p, j), as in the (in, out) trained matrix.
    T w(std::size_t p, std::size_t j) const noexcept { return weight[p][j]; }

    /// Whether v fits this layer (sizes, pointers, finite values).
    static Status check(const LayerView<T>& v) noexcept {
        if (v.in != In || v.out != Out) return Status::shape;
        if (!v.weight) return Status::null_pointer;
        for (std::size_t k = 0; k < In * Out; ++k)
            if (!detail::finite(v.weight[k])) return Status::non_finite;
        if (v.bias)
            for (std::size_t j = 0; j < Out; ++j)
                if (!detail::finite(v.bias[j])) return Status::non_finite;
        if (!detail::finite(v.alpha)) return Status::non_finite;
        return Status::ok;
    }

    Status set(const LayerView<T>& v) noexcept {
        const Status s = check(v);
        if (s != Status::ok) return s;
        for (std::size_t p = 0; p < In; ++p)
            for (std::size_t j = 0; j < out_padded; ++j) weight[p][j] = j < Out ? v.weight[p * Out + j] : T(0);
        for (std::size_t j = 0; j < out_padded; ++j) bias[j] = (v.bias && j < Out) ? v.bias[j] : T(0);
        act = v.act;
        alpha = v.alpha;
        return Status::ok;
    }

    /// This layer on R rows (x: R x In with leading dimension ldx) into y (R x out_padded).
    template <class V, std::size_t R>
    TAPIR_ALWAYS_INLINE void run(const T* x, std::size_t ldx, T* y) const noexcept {
        constexpr std::size_t W = V::W, nvec = (Out + W - 1) / W;
        constexpr std::size_t U = R == 1 ? V::U1 : V::UB;
        constexpr std::size_t U_ = U < nvec ? U : nvec;
        constexpr std::size_t full = nvec / U_;
        const bool relu = act == Act::relu;
        for (std::size_t t = 0; t < full; ++t)
            detail::dense_tile<V, T, In, R, U_>(x, ldx, &weight[0][0] + t * U_ * W, out_padded, bias + t * U_ * W,
                                               y + t * U_ * W, out_padded, relu);
        for (std::size_t v = full * U_; v < nvec; ++v)
            detail::dense_tile<V, T, In, R, 1>(x, ldx, &weight[0][0] + v * W, out_padded, bias + v * W, y + v * W,
                                              out_padded, relu);
        if (act != Act::none && act != Act::relu)
            for (std::size_t r = 0; r < R; ++r)
                for (std::size_t j = 0; j < Out; ++j)
                    y[r * out_padded + j] = detail::activate<V::fused>(act, y[r * out_padded + j], alpha);
    }
};

namespace detail {
/// The i-th of a pack of sizes.
template <std::size_t... S>
constexpr std::size_t size_at(std::size_t i) noexcept {
    constexpr std::size_t a[] = {S...};
    return a[i];
}

template <class T, std::size_t... S>
struct mlp_layers {
    template <std::size_t... I>
    static std::tuple<Dense<T, size_at<S...>(I), size_at<S...>(I + 1)>...> make(std::index_sequence<I...>);
    using type = decltype(make(std::make_index_sequence<sizeof...(S) - 1>{}));
};
} // namespace detail

/// A multilayer perceptron of compile-time sizes: Mlp<float, 8, 24, 16, 8, 1> has inputs 8,
/// hidden layers 24, 16, 8 and one output. Activations come with the loaded weights.
///
///     static tapir::deploy::Mlp<float, 8, 24, 16, 8, 1> net;      // or from deploy::to_fixed()
///     net.load(views, 4);                                           // Status::ok
///     float x[8] = {...}, y[1];
///     net.forward(x, y);                                            // batch 1
///     net.forward(xs, ys, n);                                       // n rows, row-major
///
/// Optional input standardisation z = (x - mean) / scale is computed in double and rounded to T,
/// exactly as tapir::data::StandardScaler::transform.
template <class T, std::size_t... S>
class Mlp {
    static_assert(sizeof...(S) >= 2, "Mlp: give at least the input and output sizes");
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "Mlp: float or double");

public:
    using value_type = T;
    using layers_type = typename detail::mlp_layers<T, S...>::type;
    static constexpr std::size_t sizes[] = {S...};
    static constexpr std::size_t num_layers = sizeof...(S) - 1;
    static constexpr std::size_t inputs = detail::size_at<S...>(0);
    static constexpr std::size_t outputs = detail::size_at<S...>(sizeof...(S) - 1);

    Mlp() noexcept : isa_(best_isa()) {}

    /// Copies trained layers in (count must be num_layers; sizes must match). All or nothing:
    /// on an error the model is unchanged.
    Status load(const LayerView<T>* views, std::size_t count) noexcept {
        if (count != num_layers) return Status::layer_count;
        if (!views) return Status::null_pointer;
        const Status s = check_from<0>(views);
        if (s != Status::ok) return s;
        return load_from<0>(views);
    }

    /// Standardise inputs first: z = (x - mean) / scale (inputs values each). Null pointers turn it off.
    Status set_input_scaling(const double* mean, const double* scale) noexcept {
        if (!mean || !scale) {
            scaled_ = false;
            return Status::ok;
        }
        for (std::size_t i = 0; i < inputs; ++i) {
            if (!detail::finite(mean[i]) || !detail::finite(scale[i])) return Status::non_finite;
            if (!(scale[i] > 0.0)) return Status::bad_scale;
        }
        for (std::size_t i = 0; i < inputs; ++i) {
            mean_[i] = mean[i];
            scale_[i] = scale[i];
        }
        scaled_ = true;
        return Status::ok;
    }
    bool input_scaling() const noexcept { return scaled_; }
    const double* input_mean() const noexcept { return mean_; }
    const double* input_scale() const noexcept { return scale_; }

    /// Kernel family used by forward (best_isa() by default).
    Isa isa() const noexcept { return isa_; }
    Status set_isa(Isa i) noexcept {
        if (!isa_supported(i)) return Status::unsupported_isa;
        isa_ = i;
        return Status::ok;
    }

    /// Longest multiply-add chain of a kernel family before it restarts (simd::gemm's K block).
    static std::size_t sum_block(Isa i) noexcept {
        switch (i) {
#if TAPIR_DEPLOY_X86
        case Isa::avx512: return detail::vavx512<T>::KC;
        case Isa::avx2: return detail::vavx2<T>::KC;
#endif
#if TAPIR_DEPLOY_NEON
        case Isa::neon: return detail::vneon<T>::KC;
#endif
        default: return detail::vscalar<T>::KC;
        }
    }

    template <std::size_t I>
    const std::tuple_element_t<I, layers_type>& layer() const noexcept {
        return std::get<I>(layers_);
    }
    template <std::size_t I>
    std::tuple_element_t<I, layers_type>& layer() noexcept {
        return std::get<I>(layers_);
    }

    /// One event: x (inputs values) -> y (outputs values).
    void forward(const T* x, T* y) const noexcept { forward(x, y, 1); }

    /// n events, row-major: x (n x inputs) -> y (n x outputs).
    void forward(const T* x, T* y, std::size_t n) const noexcept {
        switch (isa_) {
#if TAPIR_DEPLOY_X86
        case Isa::avx512: run_avx512(*this, x, y, n); return;
        case Isa::avx2: run_avx2(*this, x, y, n); return;
#endif
#if TAPIR_DEPLOY_NEON
        case Isa::neon: run_with<detail::vneon<T>>(x, y, n); return;
#endif
        default: run_with<detail::vscalar<T>>(x, y, n); return;
        }
    }

    /// Single-output convenience: the output for one event.
    T operator()(const T* x) const noexcept {
        static_assert(outputs == 1, "Mlp::operator(): the model has several outputs, use forward(x, y)");
        T y[1];
        forward(x, y);
        return y[0];
    }

private:
    /// Widest row a layer reads or writes, padded: the ping-pong scratch size.
    static constexpr std::size_t max_width() noexcept {
        std::size_t m = detail::round_up(inputs, 64 / sizeof(T));
        for (std::size_t i = 1; i <= num_layers; ++i) m = detail::cmax(m, detail::round_up(detail::size_at<S...>(i), 64 / sizeof(T)));
        return m;
    }

    template <std::size_t I>
    static Status check_from(const LayerView<T>* views) noexcept {
        if constexpr (I == num_layers) {
            return Status::ok;
        } else {
            const Status s = std::tuple_element_t<I, layers_type>::check(views[I]);
            return s != Status::ok ? s : check_from<I + 1>(views);
        }
    }
    template <std::size_t I>
    Status load_from(const LayerView<T>* views) noexcept {
        if constexpr (I == num_layers) {
            return Status::ok;
        } else {
            const Status s = std::get<I>(layers_).set(views[I]);
            if (s != Status::ok) return s;
            return load_from<I + 1>(views);
        }
    }

    template <class V, std::size_t R, std::size_t I>
    TAPIR_ALWAYS_INLINE void run_layers(const T* in, std::size_t ldin, T* buf0, T* buf1, T* y) const noexcept {
        using L = std::tuple_element_t<I, layers_type>;
        T* out = (I % 2 == 0) ? buf0 : buf1;
        std::get<I>(layers_).template run<V, R>(in, ldin, out);
        if constexpr (I + 1 < num_layers) {
            run_layers<V, R, I + 1>(out, L::out_padded, buf0, buf1, y);
        } else {
            for (std::size_t r = 0; r < R; ++r)
                for (std::size_t j = 0; j < outputs; ++j) y[r * outputs + j] = out[r * L::out_padded + j];
        }
    }

    template <class V, std::size_t R>
    TAPIR_ALWAYS_INLINE void run_rows(const T* x, T* y) const noexcept {
        constexpr std::size_t mw = max_width();
        alignas(64) T buf0[R * mw];
        alignas(64) T buf1[R * mw];
        if (scaled_) {
            for (std::size_t r = 0; r < R; ++r)
                for (std::size_t i = 0; i < inputs; ++i)
                    buf1[r * inputs + i] = static_cast<T>((static_cast<double>(x[r * inputs + i]) - mean_[i]) / scale_[i]);
            run_layers<V, R, 0>(buf1, inputs, buf0, buf1, y);
        } else {
            run_layers<V, R, 0>(x, inputs, buf0, buf1, y);
        }
    }

    template <class V>
    TAPIR_ALWAYS_INLINE void run_with(const T* x, T* y, std::size_t n) const noexcept {
        std::size_t i = 0;
        for (; i + V::R <= n; i += V::R) run_rows<V, V::R>(x + i * inputs, y + i * outputs);
        for (; i < n; ++i) run_rows<V, 1>(x + i * inputs, y + i * outputs);
    }

#if TAPIR_DEPLOY_X86
    TAPIR_DEPLOY_AVX2 static void run_avx2(const Mlp& m, const T* x, T* y, std::size_t n) noexcept {
        m.run_with<detail::vavx2<T>>(x, y, n);
    }
    TAPIR_DEPLOY_AVX512 static void run_avx512(const Mlp& m, const T* x, T* y, std::size_t n) noexcept {
        m.run_with<detail::vavx512<T>>(x, y, n);
    }
#endif

    layers_type layers_{};
    double mean_[inputs] = {};
    double scale_[inputs] = {};
    bool scaled_ = false;
    Isa isa_;
};

} // namespace tapir::deploy

#if defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
