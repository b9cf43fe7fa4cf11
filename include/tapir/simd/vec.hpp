#pragma once
/// Thin vector wrappers, one per instruction set, with one interface so that every kernel is written
/// once as a template over the wrapper and instantiated per ISA inside a target-attributed entry.
///
/// Contract of a wrapper V (all static): value_type, reg (W lanes), mask (lane predicate), ireg
/// (same-width unsigned integer lanes), load/store (unaligned), load_partial/store_partial (first n < W
/// lanes, others zero), set1, zero, add, sub, mul, div, sqrt (correctly rounded, as std::sqrt),
/// fma(a,b,c)=a*b+c, fnma(a,b,c)=c-a*b, min, max
/// (max(a,b) returns b when either is NaN, so max(0,x) keeps a NaN x), lt, gt, le, ge, eq, isnan,
/// select(m,a,b) = m ? a : b, hsum, evens(a,b)/odds(a,b) (the even/odd lanes of a then b read as one
/// vector of 2W lanes: a deinterleave), and bit access: bits, from_bits, iadd, isub, iset1, iand, ior,
/// ixor, shl<N>, shr<N> (logical).
///
/// Wrapper functions are `inline` with the ISA's target attribute and deliberately NOT always_inline:
/// generic kernels carry no attribute, so GCC and Clang would reject always_inline calls into them;
/// once the generic kernel is inlined into its attributed entry the wrappers inline normally.
///
/// The wrappers are internal; code outside simd/ writes a kernel K (value_type and a static
/// `template <class V> run(args...)` over the contract above) and runs it with simd::dispatch<K>
/// (the active instruction set, arch.hpp) or simd::dispatch_to<K>(isa, ...) (a given one).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "isa.hpp"
#include "detail/x86_builtins.hpp"

TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd::detail {

template <class T> struct int_of;
template <> struct int_of<float> { using type = std::uint32_t; };
template <> struct int_of<double> { using type = std::uint64_t; };

/// Bit-exact float <-> integer view without aliasing violations.
template <class T> TAPIR_ALWAYS_INLINE typename int_of<T>::type bits_of(T x) noexcept {
    typename int_of<T>::type u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
template <class T> TAPIR_ALWAYS_INLINE T from_bits_of(typename int_of<T>::type u) noexcept {
    T x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

// ------------------------------------------------------------------------------------------------
/// Whether the scalar family fuses multiply-adds: where the target has FMA (aarch64; x86 built with
/// -mfma). Left to the compiler, a * b + c is contracted at some call sites and not at others, and
/// paths that must agree bit for bit (gemm's tiled and one-column paths, deployed models) would not.
#if defined(__FP_FAST_FMA) && defined(__FP_FAST_FMAF)
#define TAPIR_SIMD_SCALAR_FUSED 1
#else
#define TAPIR_SIMD_SCALAR_FUSED 0
#endif

/// Portable path: one lane. The compiler may still auto-vectorise the loops around it. Fused picks
/// fma = std::fma (true) or a * b + c (false); the scalar family is vscalar<T> (the default).
template <class T, bool Fused = TAPIR_SIMD_SCALAR_FUSED != 0> struct vscalar {
    using value_type = T;
    using reg = T;
    using mask = bool;
    using ireg = typename int_of<T>::type;
    static constexpr std::size_t W = 1;
    static constexpr isa id = isa::scalar;

    static reg load(const T* p) { return *p; }
    static void store(T* p, reg v) { *p = v; }
    static reg load_partial(const T* p, std::size_t n) { return n ? *p : T(0); }
    static void store_partial(T* p, reg v, std::size_t n) {
        if (n) *p = v;
    }
    static reg set1(T x) { return x; }
    static reg zero() { return T(0); }
    static reg add(reg a, reg b) { return a + b; }
    static reg sub(reg a, reg b) { return a - b; }
    static reg mul(reg a, reg b) { return a * b; }
    static reg div(reg a, reg b) { return a / b; }
    static constexpr bool fused_madd = Fused;
    static reg fma(reg a, reg b, reg c) {
        if constexpr (Fused) return fused(a, b, c);
        else return a * b + c;
    }
    static reg fnma(reg a, reg b, reg c) {
        if constexpr (Fused) return fused(-a, b, c);
        else return c - a * b;
    }
    static reg fused(reg a, reg b, reg c) {
        if constexpr (std::is_same<T, float>::value) return __builtin_fmaf(a, b, c);
        else return __builtin_fma(a, b, c);
    }
    static reg sqrt(reg a) {
        if constexpr (std::is_same<T, float>::value) return __builtin_sqrtf(a);
        else return __builtin_sqrt(a);
    }
    static reg min(reg a, reg b) { return a < b ? a : b; }
    static reg max(reg a, reg b) { return a > b ? a : b; }
    static mask lt(reg a, reg b) { return a < b; }
    static mask gt(reg a, reg b) { return a > b; }
    static mask le(reg a, reg b) { return a <= b; }
    static mask ge(reg a, reg b) { return a >= b; }
    static mask eq(reg a, reg b) { return a == b; }
    static mask isnan(reg a) { return a != a; }
    static mask mask_or(mask a, mask b) { return a || b; }
    static reg select(mask m, reg a, reg b) { return m ? a : b; }
    static T hsum(reg v) { return v; }
    static reg evens(reg a, reg) { return a; }
    static reg odds(reg, reg b) { return b; }
    static ireg bits(reg v) { return bits_of<T>(v); }
    static reg from_bits(ireg v) { return from_bits_of<T>(v); }
    static ireg iadd(ireg a, ireg b) { return static_cast<ireg>(a + b); }
    static ireg isub(ireg a, ireg b) { return static_cast<ireg>(a - b); }
    static ireg iset1(ireg x) { return x; }
    static ireg iand(ireg a, ireg b) { return a & b; }
    static ireg ior(ireg a, ireg b) { return a | b; }
    static ireg ixor(ireg a, ireg b) { return a ^ b; }
    template <int N> static ireg shl(ireg a) { return static_cast<ireg>(a << N); }
    template <int N> static ireg shr(ireg a) { return static_cast<ireg>(a >> N); }
    static void prefetch(const void*) {}
};

#if TAPIR_SIMD_X86
// ------------------------------------------------------------------------------------------------
/// x86 registers travel boxed in a struct: a raw 256/512-bit vector crossing from a generic
/// (unattributed) kernel into an attributed wrapper is a hard error in Clang and a -Wpsabi warning
/// in GCC, while a struct is not; both compilers always inline the generic kernel into its
/// attributed entry, so the boxed value never actually crosses an ABI boundary. The boxed values
/// are GCC/Clang vector types (simd/detail/x86_builtins.hpp), not <immintrin.h>'s: arithmetic and
/// bit operations are the vector-extension operators (the same instructions the intrinsics emit).
namespace x86 = tapir::detail::x86;
template <class R> struct box { R v; };

/// Per element type: the register types, the lane indices of the tail masks, the integer broadcasts.
template <class T> struct x86_lanes;
template <> struct x86_lanes<float> {
    using r256 = x86::f32x8;
    using i256 = x86::u32x8;
    using r512 = x86::f32x16;
    using i512 = x86::u32x16;
    using mask512 = x86::mask16;
    using bits_type = std::uint32_t;
    /// Lanes below n all ones (vpcmpgtd against the lane indices).
    TAPIR_TARGET_AVX2 static inline x86::i32x8 tail256(std::size_t n) {
        return x86::set1_i32x8(static_cast<int>(n)) > x86::i32x8{0, 1, 2, 3, 4, 5, 6, 7};
    }
    TAPIR_TARGET_AVX2 static inline i256 iset256(std::uint32_t x) { return i256{x, x, x, x, x, x, x, x}; }
    TAPIR_TARGET_AVX512 static inline i512 iset512(std::uint32_t x) {
        return i512{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
    }
};
template <> struct x86_lanes<double> {
    using r256 = x86::f64x4;
    using i256 = x86::u64x4;
    using r512 = x86::f64x8;
    using i512 = x86::u64x8;
    using mask512 = x86::mask8;
    using bits_type = std::uint64_t;
    /// Lanes below n all ones (vpcmpgtq against the lane indices).
    TAPIR_TARGET_AVX2 static inline x86::i64x4 tail256(std::size_t n) {
        const long long k = static_cast<long long>(n);
        return x86::i64x4{k, k, k, k} > x86::i64x4{0, 1, 2, 3};
    }
    TAPIR_TARGET_AVX2 static inline i256 iset256(std::uint64_t x) {
        const unsigned long long u = x;
        return i256{u, u, u, u};
    }
    TAPIR_TARGET_AVX512 static inline i512 iset512(std::uint64_t x) {
        const unsigned long long u = x;
        return i512{u, u, u, u, u, u, u, u};
    }
};

#define TAPIR_V2 TAPIR_TARGET_AVX2 static inline
template <class T> struct vavx2 {
    using L = x86_lanes<T>;
    using value_type = T;
    using reg = box<typename L::r256>;
    using mask = reg;
    using ireg = box<typename L::i256>;
    static constexpr std::size_t W = 32 / sizeof(T);
    static constexpr isa id = isa::avx2;
    static constexpr bool fused_madd = true;

    TAPIR_V2 reg load(const T* p) { return {x86::loadu256(p)}; }
    TAPIR_V2 void store(T* p, reg v) { x86::storeu(p, v.v); }
    TAPIR_V2 reg load_partial(const T* p, std::size_t n) { return {x86::maskload(p, L::tail256(n))}; }
    TAPIR_V2 void store_partial(T* p, reg v, std::size_t n) { x86::maskstore(p, L::tail256(n), v.v); }
    TAPIR_V2 reg set1(T x) { return {x86::set1_256(x)}; }
    TAPIR_V2 reg zero() { return {typename L::r256{}}; }
    TAPIR_V2 reg add(reg a, reg b) { return {a.v + b.v}; }
    TAPIR_V2 reg sub(reg a, reg b) { return {a.v - b.v}; }
    TAPIR_V2 reg mul(reg a, reg b) { return {a.v * b.v}; }
    TAPIR_V2 reg div(reg a, reg b) { return {a.v / b.v}; }
    TAPIR_V2 reg sqrt(reg a) { return {x86::sqrt(a.v)}; }
    TAPIR_V2 reg fma(reg a, reg b, reg c) { return {x86::fmadd(a.v, b.v, c.v)}; }
    TAPIR_V2 reg fnma(reg a, reg b, reg c) { return {x86::fnmadd(a.v, b.v, c.v)}; }
    TAPIR_V2 reg min(reg a, reg b) { return {x86::min(a.v, b.v)}; }
    TAPIR_V2 reg max(reg a, reg b) { return {x86::max(a.v, b.v)}; }
    TAPIR_V2 mask lt(reg a, reg b) { return {x86::cmp<x86::cmp_lt_oq>(a.v, b.v)}; }
    TAPIR_V2 mask gt(reg a, reg b) { return {x86::cmp<x86::cmp_gt_oq>(a.v, b.v)}; }
    TAPIR_V2 mask le(reg a, reg b) { return {x86::cmp<x86::cmp_le_oq>(a.v, b.v)}; }
    TAPIR_V2 mask ge(reg a, reg b) { return {x86::cmp<x86::cmp_ge_oq>(a.v, b.v)}; }
    TAPIR_V2 mask eq(reg a, reg b) { return {x86::cmp<x86::cmp_eq_oq>(a.v, b.v)}; }
    TAPIR_V2 mask isnan(reg a) { return {x86::cmp<x86::cmp_unord_q>(a.v, a.v)}; }
    TAPIR_V2 mask mask_or(mask a, mask b) { return from_bits(ior(bits(a), bits(b))); }
    TAPIR_V2 reg select(mask m, reg a, reg b) { return {x86::blendv(b.v, a.v, m.v)}; }
    TAPIR_V2 T hsum(reg v) { return x86::hsum(v.v); }
    TAPIR_V2 reg evens(reg a, reg b) { return {x86::evens(a.v, b.v)}; }
    TAPIR_V2 reg odds(reg a, reg b) { return {x86::odds(a.v, b.v)}; }
    TAPIR_V2 ireg bits(reg v) { return {reinterpret_cast<typename L::i256>(v.v)}; }
    TAPIR_V2 reg from_bits(ireg v) { return {reinterpret_cast<typename L::r256>(v.v)}; }
    TAPIR_V2 ireg iadd(ireg a, ireg b) { return {a.v + b.v}; }
    TAPIR_V2 ireg isub(ireg a, ireg b) { return {a.v - b.v}; }
    TAPIR_V2 ireg iset1(typename L::bits_type x) { return {L::iset256(x)}; }
    TAPIR_V2 ireg iand(ireg a, ireg b) { return {a.v & b.v}; }
    TAPIR_V2 ireg ior(ireg a, ireg b) { return {a.v | b.v}; }
    TAPIR_V2 ireg ixor(ireg a, ireg b) { return {a.v ^ b.v}; }
    template <int N> TAPIR_V2 ireg shl(ireg a) { return {a.v << N}; }
    template <int N> TAPIR_V2 ireg shr(ireg a) { return {a.v >> N}; }
    TAPIR_V2 void prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }
};
#undef TAPIR_V2

// ------------------------------------------------------------------------------------------------
/// AVX-512 min, max and sqrt are GCC's masked builtins over all lanes with a zero or self source:
/// the unmasked intrinsics of GCC 12 start from an undefined vector, which trips
/// -Wmaybe-uninitialized once inlined (GCC PR 105593).
#define TAPIR_V5 TAPIR_TARGET_AVX512 static inline
template <class T> struct vavx512 {
    using L = x86_lanes<T>;
    using value_type = T;
    using reg = box<typename L::r512>;
    using mask = typename L::mask512;
    using ireg = box<typename L::i512>;
    static constexpr std::size_t W = 64 / sizeof(T);
    static constexpr isa id = isa::avx512;
    static constexpr bool fused_madd = true;
    static constexpr mask all = static_cast<mask>((1u << W) - 1u);

    TAPIR_V5 reg load(const T* p) { return {x86::loadu512(p)}; }
    TAPIR_V5 void store(T* p, reg v) { x86::storeu(p, v.v); }
    TAPIR_V5 mask tail_mask(std::size_t n) { return static_cast<mask>((1u << n) - 1u); }
    TAPIR_V5 reg load_partial(const T* p, std::size_t n) { return {x86::maskz_loadu(tail_mask(n), p)}; }
    TAPIR_V5 void store_partial(T* p, reg v, std::size_t n) { x86::mask_storeu(p, tail_mask(n), v.v); }
    TAPIR_V5 reg set1(T x) { return {x86::set1_512(x)}; }
    TAPIR_V5 reg zero() { return {typename L::r512{}}; }
    TAPIR_V5 reg add(reg a, reg b) { return {a.v + b.v}; }
    TAPIR_V5 reg sub(reg a, reg b) { return {a.v - b.v}; }
    TAPIR_V5 reg mul(reg a, reg b) { return {a.v * b.v}; }
    TAPIR_V5 reg div(reg a, reg b) { return {a.v / b.v}; }
    TAPIR_V5 reg sqrt(reg a) { return {x86::sqrt(a.v)}; }
    TAPIR_V5 reg fma(reg a, reg b, reg c) { return {x86::fmadd(a.v, b.v, c.v)}; }
    TAPIR_V5 reg fnma(reg a, reg b, reg c) { return {x86::fnmadd(a.v, b.v, c.v)}; }
    TAPIR_V5 reg min(reg a, reg b) { return {x86::min(a.v, b.v)}; }
    TAPIR_V5 reg max(reg a, reg b) { return {x86::max(a.v, b.v)}; }
    TAPIR_V5 mask lt(reg a, reg b) { return x86::cmp_mask<x86::cmp_lt_oq>(a.v, b.v); }
    TAPIR_V5 mask gt(reg a, reg b) { return x86::cmp_mask<x86::cmp_gt_oq>(a.v, b.v); }
    TAPIR_V5 mask le(reg a, reg b) { return x86::cmp_mask<x86::cmp_le_oq>(a.v, b.v); }
    TAPIR_V5 mask ge(reg a, reg b) { return x86::cmp_mask<x86::cmp_ge_oq>(a.v, b.v); }
    TAPIR_V5 mask eq(reg a, reg b) { return x86::cmp_mask<x86::cmp_eq_oq>(a.v, b.v); }
    TAPIR_V5 mask isnan(reg a) { return x86::cmp_mask<x86::cmp_unord_q>(a.v, a.v); }
    TAPIR_V5 mask mask_or(mask a, mask b) { return static_cast<mask>(a | b); }
    TAPIR_V5 reg select(mask m, reg a, reg b) { return {x86::blend(m, b.v, a.v)}; }
    TAPIR_V5 T hsum(reg v) { return x86::hsum(v.v); }
    TAPIR_V5 reg evens(reg a, reg b) { return {x86::evens(a.v, b.v)}; }
    TAPIR_V5 reg odds(reg a, reg b) { return {x86::odds(a.v, b.v)}; }
    TAPIR_V5 ireg bits(reg v) { return {reinterpret_cast<typename L::i512>(v.v)}; }
    TAPIR_V5 reg from_bits(ireg v) { return {reinterpret_cast<typename L::r512>(v.v)}; }
    TAPIR_V5 ireg iadd(ireg a, ireg b) { return {a.v + b.v}; }
    TAPIR_V5 ireg isub(ireg a, ireg b) { return {a.v - b.v}; }
    TAPIR_V5 ireg iset1(typename L::bits_type x) { return {L::iset512(x)}; }
    TAPIR_V5 ireg iand(ireg a, ireg b) { return {a.v & b.v}; }
    TAPIR_V5 ireg ior(ireg a, ireg b) { return {a.v | b.v}; }
    TAPIR_V5 ireg ixor(ireg a, ireg b) { return {a.v ^ b.v}; }
    template <int N> TAPIR_V5 ireg shl(ireg a) { return {a.v << N}; }
    template <int N> TAPIR_V5 ireg shr(ireg a) { return {a.v >> N}; }
    TAPIR_V5 void prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }
};
#undef TAPIR_V5
#endif // TAPIR_SIMD_X86

#if TAPIR_SIMD_NEON
// ------------------------------------------------------------------------------------------------
template <class T> struct vneon;

template <> struct vneon<float> {
    using value_type = float;
    using reg = float32x4_t;
    using mask = uint32x4_t;
    using ireg = uint32x4_t;
    static constexpr std::size_t W = 4;
    static constexpr isa id = isa::neon;
    static constexpr bool fused_madd = true;

    static inline reg load(const float* p) { return vld1q_f32(p); }
    static inline void store(float* p, reg v) { vst1q_f32(p, v); }
    static inline reg load_partial(const float* p, std::size_t n) {
        float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        std::memcpy(t, p, n * sizeof(float));
        return vld1q_f32(t);
    }
    static inline void store_partial(float* p, reg v, std::size_t n) {
        float t[4];
        vst1q_f32(t, v);
        std::memcpy(p, t, n * sizeof(float));
    }
    static inline reg set1(float x) { return vdupq_n_f32(x); }
    static inline reg zero() { return vdupq_n_f32(0.0f); }
    static inline reg add(reg a, reg b) { return vaddq_f32(a, b); }
    static inline reg sub(reg a, reg b) { return vsubq_f32(a, b); }
    static inline reg mul(reg a, reg b) { return vmulq_f32(a, b); }
    static inline reg div(reg a, reg b) { return vdivq_f32(a, b); }
    static inline reg sqrt(reg a) { return vsqrtq_f32(a); }
    static inline reg fma(reg a, reg b, reg c) { return vfmaq_f32(c, a, b); }
    static inline reg fnma(reg a, reg b, reg c) { return vfmsq_f32(c, a, b); }
    static inline reg min(reg a, reg b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
    /// Same NaN rule as x86 maxps: b unless a > b.
    static inline reg max(reg a, reg b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
    static inline mask lt(reg a, reg b) { return vcltq_f32(a, b); }
    static inline mask gt(reg a, reg b) { return vcgtq_f32(a, b); }
    static inline mask le(reg a, reg b) { return vcleq_f32(a, b); }
    static inline mask ge(reg a, reg b) { return vcgeq_f32(a, b); }
    static inline mask eq(reg a, reg b) { return vceqq_f32(a, b); }
    static inline mask isnan(reg a) { return vmvnq_u32(vceqq_f32(a, a)); }
    static inline mask mask_or(mask a, mask b) { return vorrq_u32(a, b); }
    static inline reg select(mask m, reg a, reg b) { return vbslq_f32(m, a, b); }
    static inline float hsum(reg v) { return vaddvq_f32(v); }
    static inline reg evens(reg a, reg b) { return vuzp1q_f32(a, b); }
    static inline reg odds(reg a, reg b) { return vuzp2q_f32(a, b); }
    static inline ireg bits(reg v) { return vreinterpretq_u32_f32(v); }
    static inline reg from_bits(ireg v) { return vreinterpretq_f32_u32(v); }
    static inline ireg iadd(ireg a, ireg b) { return vaddq_u32(a, b); }
    static inline ireg isub(ireg a, ireg b) { return vsubq_u32(a, b); }
    static inline ireg iset1(std::uint32_t x) { return vdupq_n_u32(x); }
    static inline ireg iand(ireg a, ireg b) { return vandq_u32(a, b); }
    static inline ireg ior(ireg a, ireg b) { return vorrq_u32(a, b); }
    static inline ireg ixor(ireg a, ireg b) { return veorq_u32(a, b); }
    template <int N> static inline ireg shl(ireg a) { return vshlq_n_u32(a, N); }
    template <int N> static inline ireg shr(ireg a) { return vshrq_n_u32(a, N); }
    static inline void prefetch(const void* p) { __builtin_prefetch(p); }
};

template <> struct vneon<double> {
    using value_type = double;
    using reg = float64x2_t;
    using mask = uint64x2_t;
    using ireg = uint64x2_t;
    static constexpr std::size_t W = 2;
    static constexpr isa id = isa::neon;
    static constexpr bool fused_madd = true;

    static inline reg load(const double* p) { return vld1q_f64(p); }
    static inline void store(double* p, reg v) { vst1q_f64(p, v); }
    static inline reg load_partial(const double* p, std::size_t n) {
        return n ? vsetq_lane_f64(p[0], vdupq_n_f64(0.0), 0) : vdupq_n_f64(0.0);
    }
    static inline void store_partial(double* p, reg v, std::size_t n) {
        if (n) p[0] = vgetq_lane_f64(v, 0);
    }
    static inline reg set1(double x) { return vdupq_n_f64(x); }
    static inline reg zero() { return vdupq_n_f64(0.0); }
    static inline reg add(reg a, reg b) { return vaddq_f64(a, b); }
    static inline reg sub(reg a, reg b) { return vsubq_f64(a, b); }
    static inline reg mul(reg a, reg b) { return vmulq_f64(a, b); }
    static inline reg div(reg a, reg b) { return vdivq_f64(a, b); }
    static inline reg sqrt(reg a) { return vsqrtq_f64(a); }
    static inline reg fma(reg a, reg b, reg c) { return vfmaq_f64(c, a, b); }
    static inline reg fnma(reg a, reg b, reg c) { return vfmsq_f64(c, a, b); }
    static inline reg min(reg a, reg b) { return vbslq_f64(vcltq_f64(a, b), a, b); }
    static inline reg max(reg a, reg b) { return vbslq_f64(vcgtq_f64(a, b), a, b); }
    static inline mask lt(reg a, reg b) { return vcltq_f64(a, b); }
    static inline mask gt(reg a, reg b) { return vcgtq_f64(a, b); }
    static inline mask le(reg a, reg b) { return vcleq_f64(a, b); }
    static inline mask ge(reg a, reg b) { return vcgeq_f64(a, b); }
    static inline mask eq(reg a, reg b) { return vceqq_f64(a, b); }
    static inline mask isnan(reg a) {
        return vreinterpretq_u64_u32(vmvnq_u32(vreinterpretq_u32_u64(vceqq_f64(a, a))));
    }
    static inline mask mask_or(mask a, mask b) { return vorrq_u64(a, b); }
    static inline reg select(mask m, reg a, reg b) { return vbslq_f64(m, a, b); }
    static inline double hsum(reg v) { return vaddvq_f64(v); }
    static inline reg evens(reg a, reg b) { return vuzp1q_f64(a, b); }
    static inline reg odds(reg a, reg b) { return vuzp2q_f64(a, b); }
    static inline ireg bits(reg v) { return vreinterpretq_u64_f64(v); }
    static inline reg from_bits(ireg v) { return vreinterpretq_f64_u64(v); }
    static inline ireg iadd(ireg a, ireg b) { return vaddq_u64(a, b); }
    static inline ireg isub(ireg a, ireg b) { return vsubq_u64(a, b); }
    static inline ireg iset1(std::uint64_t x) { return vdupq_n_u64(x); }
    static inline ireg iand(ireg a, ireg b) { return vandq_u64(a, b); }
    static inline ireg ior(ireg a, ireg b) { return vorrq_u64(a, b); }
    static inline ireg ixor(ireg a, ireg b) { return veorq_u64(a, b); }
    template <int N> static inline ireg shl(ireg a) { return vshlq_n_u64(a, N); }
    template <int N> static inline ireg shr(ireg a) { return vshrq_n_u64(a, N); }
    static inline void prefetch(const void* p) { __builtin_prefetch(p); }
};
#endif // TAPIR_SIMD_NEON

// ------------------------------------------------------------------------------------------------
// Entries: K::template run<V>(args...) is an always_inline generic kernel; each entry compiles it for
// one ISA. dispatch<K>() picks the entry for active_isa().

template <class K, class... A> inline auto run_scalar(A... args) {
    return K::template run<vscalar<typename K::value_type>>(args...);
}
#if TAPIR_SIMD_X86
template <class K, class... A> TAPIR_TARGET_AVX2 inline auto run_avx2(A... args) {
    return K::template run<vavx2<typename K::value_type>>(args...);
}
template <class K, class... A> TAPIR_TARGET_AVX512 inline auto run_avx512(A... args) {
    return K::template run<vavx512<typename K::value_type>>(args...);
}
#endif
#if TAPIR_SIMD_NEON
template <class K, class... A> inline auto run_neon(A... args) {
    return K::template run<vneon<typename K::value_type>>(args...);
}
#endif

} // namespace tapir::simd::detail

namespace tapir::simd {

/// Runs the kernel K (K::value_type, and `template <class V> static run(args...)` written over the
/// wrapper contract above, always_inline) compiled for the instruction set `which`; an ISA this
/// build lacks runs the scalar family. The caller checks isa_supported(which) (an unsupported
/// one would fault): this is the unchecked, exception-free entry.
template <class K, class... A> inline auto dispatch_to(isa which, A... args) {
    switch (which) {
#if TAPIR_SIMD_X86
    case isa::avx512: return detail::run_avx512<K>(args...);
    case isa::avx2: return detail::run_avx2<K>(args...);
#endif
#if TAPIR_SIMD_NEON
    case isa::neon: return detail::run_neon<K>(args...);
#endif
    default: return detail::run_scalar<K>(args...);
    }
}

/// Depth of simd::gemm's K blocks per kernel family and element size: sums longer than this are
/// split into equal blocks (gemm_k_block), each a fresh multiply-add chain added to C in order.
/// Deployed models restart their chains at the same places to reproduce the bits.
constexpr std::size_t gemm_kc(isa which, std::size_t elem_size) noexcept {
    switch (which) {
    case isa::avx2: return elem_size == 4 ? 384 : 256;
    case isa::avx512: return elem_size == 4 ? 512 : 384;
    default: return 256;
    }
}

/// The block depth gemm uses for a sum of k terms: k itself up to kc, else equal blocks no deeper
/// than kc (depends on k only, so results do not depend on how a product is split or threaded).
constexpr std::size_t gemm_k_block(std::size_t k, std::size_t kc) noexcept {
    if (k <= kc) return k;
    const std::size_t nb = (k + kc - 1) / kc;
    return (k + nb - 1) / nb;
}

/// The step of every register-blocked product: acc[i][j] = fma(a[i lda], b[j], acc[i][j]) for an
/// MR x NV tile of vectors, each a[i lda] broadcast once. simd::gemm's microkernels and the
/// deployed dense and convolution kernels share it, so their multiply-add chains round alike.
template <class V, std::size_t MR, std::size_t NV>
TAPIR_ALWAYS_INLINE void fma_broadcast(const typename V::value_type* a, std::size_t lda, const typename V::reg (&b)[NV],
                                       typename V::reg (&acc)[MR][NV]) noexcept {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < MR; ++i) {
        const typename V::reg av = V::set1(a[i * lda]);
#pragma GCC unroll 16
        for (std::size_t j = 0; j < NV; ++j) acc[i][j] = V::fma(av, b[j], acc[i][j]);
    }
}

/// The same with b the NV consecutive vectors at b (a row of a packed or padded matrix).
template <class V, std::size_t MR, std::size_t NV>
TAPIR_ALWAYS_INLINE void fma_broadcast(const typename V::value_type* a, std::size_t lda, const typename V::value_type* b,
                                       typename V::reg (&acc)[MR][NV]) noexcept {
    typename V::reg bv[NV];
#pragma GCC unroll 16
    for (std::size_t j = 0; j < NV; ++j) bv[j] = V::load(b + j * V::W);
    fma_broadcast<V>(a, lda, bv, acc);
}

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
