#pragma once
/// The AVX2/FMA/AVX-512F operations tapir's kernels use (simd/vec.hpp's wrappers, the deploy and
/// optimiser kernels), written with GCC/Clang vector extensions and compiler builtins instead of
/// <immintrin.h>, which alone costs ~0.7 s of compile time in every file that includes it. Each
/// operation is the instruction the intrinsic of the same name emits (same operand order, so the
/// same bits, NaN and signed-zero cases included); plain arithmetic, bit operations and shifts are
/// the vector-extension operators, as in the intrinsics themselves.
/// Every function carries its target attribute: callers compiled for that target (or a superset)
/// inline it, no -march needed. Defines TAPIR_X86_BUILTINS to 1 where available (x86 with GCC or
/// Clang), else to 0 and nothing else.

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define TAPIR_X86_BUILTINS 1
#else
#define TAPIR_X86_BUILTINS 0
#endif

#if TAPIR_X86_BUILTINS

#define TAPIR_X86_AVX2 __attribute__((target("avx2,fma")))
#define TAPIR_X86_AVX512 __attribute__((target("avx512f,avx2,fma")))

// 512-bit vectors in signatures outside an AVX-512 region draw an ABI note; these functions are
// always inlined into code of their own target.
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpsabi"
#else
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace tapir::detail::x86 {

// Register types (the vector_size of the whole register, in bytes).
typedef float f32x8 __attribute__((vector_size(32)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef float f32x16 __attribute__((vector_size(64)));
typedef double f64x8 __attribute__((vector_size(64)));
typedef int i32x8 __attribute__((vector_size(32)));
typedef unsigned u32x8 __attribute__((vector_size(32)));
typedef short i16x16 __attribute__((vector_size(32)));
typedef signed char i8x16 __attribute__((vector_size(16)));
typedef long long i64x4 __attribute__((vector_size(32)));
typedef unsigned long long u64x4 __attribute__((vector_size(32)));
typedef unsigned u32x16 __attribute__((vector_size(64)));
typedef unsigned long long u64x8 __attribute__((vector_size(64)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef double f64x2 __attribute__((vector_size(16)));
/// AVX-512 lane masks (one bit per lane), the types of __mmask16 and __mmask8.
typedef unsigned short mask16;
typedef unsigned char mask8;

/// Memory views for loads and stores: may_alias (any object's bytes), aligned(1) for unaligned
/// access, natural alignment for the aligned forms.
typedef float f32x8_u __attribute__((vector_size(32), aligned(1), may_alias));
typedef double f64x4_u __attribute__((vector_size(32), aligned(1), may_alias));
typedef float f32x16_u __attribute__((vector_size(64), aligned(1), may_alias));
typedef double f64x8_u __attribute__((vector_size(64), aligned(1), may_alias));
typedef int i32x8_a __attribute__((vector_size(32), may_alias));
typedef signed char i8x16_a __attribute__((vector_size(16), may_alias));

/// _MM_FROUND_CUR_DIRECTION: the builtins' rounding operand for "as MXCSR says".
constexpr int cur_direction = 4;

/// Comparison predicates (the _CMP_*_O* immediates): ordered and quiet, or unordered.
constexpr int cmp_eq_oq = 0x00;
constexpr int cmp_unord_q = 0x03;
constexpr int cmp_lt_oq = 0x11;
constexpr int cmp_le_oq = 0x12;
constexpr int cmp_ge_oq = 0x1d;
constexpr int cmp_gt_oq = 0x1e;

// ---- AVX2 + FMA, 256 bits ----

TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 loadu256(const float* p) noexcept {
    return *reinterpret_cast<const f32x8_u*>(p);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 loadu256(const double* p) noexcept {
    return *reinterpret_cast<const f64x4_u*>(p);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) void storeu(float* p, f32x8 v) noexcept {
    *reinterpret_cast<f32x8_u*>(p) = v;
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) void storeu(double* p, f64x4 v) noexcept {
    *reinterpret_cast<f64x4_u*>(p) = v;
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 set1_256(float x) noexcept {
    return f32x8{x, x, x, x, x, x, x, x};
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 set1_256(double x) noexcept { return f64x4{x, x, x, x}; }
/// a * b + c, one rounding (vfmadd).
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 fmadd(f32x8 a, f32x8 b, f32x8 c) noexcept {
    return __builtin_ia32_vfmaddps256(a, b, c);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 fmadd(f64x4 a, f64x4 b, f64x4 c) noexcept {
    return __builtin_ia32_vfmaddpd256(a, b, c);
}
/// vmaxps: a > b ? a : b per lane (b when either is NaN or both are zeros).
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 max(f32x8 a, f32x8 b) noexcept {
    return __builtin_ia32_maxps256(a, b);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 max(f64x4 a, f64x4 b) noexcept {
    return __builtin_ia32_maxpd256(a, b);
}

/// Aligned integer loads and stores.
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i32x8 load_i32x8(const int* p) noexcept {
    return *reinterpret_cast<const i32x8_a*>(p);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) void store_i32x8(int* p, i32x8 v) noexcept {
    *reinterpret_cast<i32x8_a*>(p) = v;
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i8x16 load_i8x16(const signed char* p) noexcept {
    return *reinterpret_cast<const i8x16_a*>(p);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i32x8 set1_i32x8(int x) noexcept {
    return i32x8{x, x, x, x, x, x, x, x};
}
/// Sign extension of 16 bytes to 16 shorts (vpmovsxbw). GCC 12 splits __builtin_convertvector
/// into two 128-bit halves; Clang has no vpmovsxbw builtin and emits it for the conversion.
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i16x16 widen_i8(i8x16 v) noexcept {
#if defined(__clang__)
    return __builtin_convertvector(v, i16x16);
#else
    typedef char c8x16 __attribute__((vector_size(16)));  // the builtin's operand: plain char
    return __builtin_ia32_pmovsxbw256(reinterpret_cast<c8x16>(v));
#endif
}
/// Products of 16-bit pairs summed into 32 bits (vpmaddwd).
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i32x8 madd_i16(i16x16 a, i16x16 b) noexcept {
    return __builtin_ia32_pmaddwd256(a, b);
}
/// Wrapping 32-bit addition (vpaddd).
TAPIR_X86_AVX2 inline __attribute__((always_inline)) i32x8 add_wrap(i32x8 a, i32x8 b) noexcept {
    return reinterpret_cast<i32x8>(reinterpret_cast<u32x8>(a) + reinterpret_cast<u32x8>(b));
}

/// c - a * b, one rounding (vfnmadd). Clang has no vfnmadd builtin: its negated operand folds into one.
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 fnmadd(f32x8 a, f32x8 b, f32x8 c) noexcept {
#if defined(__clang__)
    return __builtin_ia32_vfmaddps256(-a, b, c);
#else
    return __builtin_ia32_vfnmaddps256(a, b, c);
#endif
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 fnmadd(f64x4 a, f64x4 b, f64x4 c) noexcept {
#if defined(__clang__)
    return __builtin_ia32_vfmaddpd256(-a, b, c);
#else
    return __builtin_ia32_vfnmaddpd256(a, b, c);
#endif
}
/// vminps: a < b ? a : b per lane (b when either is NaN or both are zeros).
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 min(f32x8 a, f32x8 b) noexcept {
    return __builtin_ia32_minps256(a, b);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 min(f64x4 a, f64x4 b) noexcept {
    return __builtin_ia32_minpd256(a, b);
}
/// vcmpps with predicate P: all-ones lanes where it holds, as a float vector.
template <int P> TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 cmp(f32x8 a, f32x8 b) noexcept {
    return __builtin_ia32_cmpps256(a, b, P);
}
template <int P> TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 cmp(f64x4 a, f64x4 b) noexcept {
    return __builtin_ia32_cmppd256(a, b, P);
}
/// vblendvps: b in lanes whose mask sign bit is set, else a.
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 blendv(f32x8 a, f32x8 b, f32x8 m) noexcept {
    return __builtin_ia32_blendvps256(a, b, m);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 blendv(f64x4 a, f64x4 b, f64x4 m) noexcept {
    return __builtin_ia32_blendvpd256(a, b, m);
}
/// vmaskmovps: lanes whose mask sign bit is set; the others read as zero and are never touched.
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 maskload(const float* p, i32x8 m) noexcept {
    return __builtin_ia32_maskloadps256(reinterpret_cast<const f32x8*>(p), m);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 maskload(const double* p, i64x4 m) noexcept {
    return __builtin_ia32_maskloadpd256(reinterpret_cast<const f64x4*>(p), m);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) void maskstore(float* p, i32x8 m, f32x8 v) noexcept {
    __builtin_ia32_maskstoreps256(reinterpret_cast<f32x8*>(p), m, v);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) void maskstore(double* p, i64x4 m, f64x4 v) noexcept {
    __builtin_ia32_maskstorepd256(reinterpret_cast<f64x4*>(p), m, v);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 sqrt(f32x8 a) noexcept { return __builtin_ia32_sqrtps256(a); }
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 sqrt(f64x4 a) noexcept { return __builtin_ia32_sqrtpd256(a); }
/// Horizontal sums in a fixed order: halves added lane by lane down to one (float: 8 -> 4 -> 2 -> 1).
/// The even and the odd lanes of the pair (a, b) read as one vector of twice the width.
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 evens(f32x8 a, f32x8 b) noexcept {
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f32x8 odds(f32x8 a, f32x8 b) noexcept {
    return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 evens(f64x4 a, f64x4 b) noexcept { return __builtin_shufflevector(a, b, 0, 2, 4, 6); }
TAPIR_X86_AVX2 inline __attribute__((always_inline)) f64x4 odds(f64x4 a, f64x4 b) noexcept { return __builtin_shufflevector(a, b, 1, 3, 5, 7); }
TAPIR_X86_AVX2 inline __attribute__((always_inline)) float hsum(f32x8 v) noexcept {
    const f32x4 s = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
    const f32x4 t = s + __builtin_shufflevector(s, s, 2, 3, 2, 3);
    return t[0] + t[1];
}
TAPIR_X86_AVX2 inline __attribute__((always_inline)) double hsum(f64x4 v) noexcept {
    const f64x2 s = __builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3);
    return s[0] + s[1];
}

// ---- AVX-512F, 512 bits ----

TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 loadu512(const float* p) noexcept {
    return *reinterpret_cast<const f32x16_u*>(p);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 loadu512(const double* p) noexcept {
    return *reinterpret_cast<const f64x8_u*>(p);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) void storeu(float* p, f32x16 v) noexcept {
    *reinterpret_cast<f32x16_u*>(p) = v;
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) void storeu(double* p, f64x8 v) noexcept {
    *reinterpret_cast<f64x8_u*>(p) = v;
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 set1_512(float x) noexcept {
    return f32x16{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 set1_512(double x) noexcept {
    return f64x8{x, x, x, x, x, x, x, x};
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 fmadd(f32x16 a, f32x16 b, f32x16 c) noexcept {
    return __builtin_ia32_vfmaddps512_mask(a, b, c, static_cast<unsigned short>(0xFFFF), cur_direction);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 fmadd(f64x8 a, f64x8 b, f64x8 c) noexcept {
    return __builtin_ia32_vfmaddpd512_mask(a, b, c, static_cast<unsigned char>(0xFF), cur_direction);
}
/// GCC's 512-bit max takes a pass-through source and a mask (all lanes here; a zero source, not
/// the undefined one of GCC 12's intrinsic, PR 105593), Clang's does not.
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 max(f32x16 a, f32x16 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_maxps512(a, b, cur_direction);
#else
    return __builtin_ia32_maxps512_mask(a, b, f32x16{}, static_cast<unsigned short>(0xFFFF), cur_direction);
#endif
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 max(f64x8 a, f64x8 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_maxpd512(a, b, cur_direction);
#else
    return __builtin_ia32_maxpd512_mask(a, b, f64x8{}, static_cast<unsigned char>(0xFF), cur_direction);
#endif
}

/// c - a * b, one rounding (vfnmadd).
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 fnmadd(f32x16 a, f32x16 b, f32x16 c) noexcept {
#if defined(__clang__)
    return __builtin_ia32_vfmaddps512_mask(a, -b, c, static_cast<mask16>(0xFFFF), cur_direction);
#else
    return __builtin_ia32_vfnmaddps512_mask(a, b, c, static_cast<mask16>(0xFFFF), cur_direction);
#endif
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 fnmadd(f64x8 a, f64x8 b, f64x8 c) noexcept {
#if defined(__clang__)
    return __builtin_ia32_vfmaddpd512_mask(a, -b, c, static_cast<mask8>(0xFF), cur_direction);
#else
    return __builtin_ia32_vfnmaddpd512_mask(a, b, c, static_cast<mask8>(0xFF), cur_direction);
#endif
}
/// vminps (as max above: GCC's masked form with a zero source and all lanes, Clang's plain one).
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 min(f32x16 a, f32x16 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_minps512(a, b, cur_direction);
#else
    return __builtin_ia32_minps512_mask(a, b, f32x16{}, static_cast<mask16>(0xFFFF), cur_direction);
#endif
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 min(f64x8 a, f64x8 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_minpd512(a, b, cur_direction);
#else
    return __builtin_ia32_minpd512_mask(a, b, f64x8{}, static_cast<mask8>(0xFF), cur_direction);
#endif
}
/// vcmpps into a mask register with predicate P.
template <int P> TAPIR_X86_AVX512 inline __attribute__((always_inline)) mask16 cmp_mask(f32x16 a, f32x16 b) noexcept {
    return __builtin_ia32_cmpps512_mask(a, b, P, static_cast<mask16>(0xFFFF), cur_direction);
}
template <int P> TAPIR_X86_AVX512 inline __attribute__((always_inline)) mask8 cmp_mask(f64x8 a, f64x8 b) noexcept {
    return __builtin_ia32_cmppd512_mask(a, b, P, static_cast<mask8>(0xFF), cur_direction);
}
/// vblendmps: b in the lanes set in m, else a.
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 blend(mask16 m, f32x16 a, f32x16 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_selectps_512(m, b, a);
#else
    return __builtin_ia32_blendmps_512_mask(a, b, m);
#endif
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 blend(mask8 m, f64x8 a, f64x8 b) noexcept {
#if defined(__clang__)
    return __builtin_ia32_selectpd_512(m, b, a);
#else
    return __builtin_ia32_blendmpd_512_mask(a, b, m);
#endif
}
/// Masked unaligned load (lanes not in m read as zero, never touched) and store (only lanes in m).
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 maskz_loadu(mask16 m, const float* p) noexcept {
    return __builtin_ia32_loadups512_mask(p, f32x16{}, m);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 maskz_loadu(mask8 m, const double* p) noexcept {
    return __builtin_ia32_loadupd512_mask(p, f64x8{}, m);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) void mask_storeu(float* p, mask16 m, f32x16 v) noexcept {
    __builtin_ia32_storeups512_mask(p, v, m);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) void mask_storeu(double* p, mask8 m, f64x8 v) noexcept {
    __builtin_ia32_storeupd512_mask(p, v, m);
}
/// vsqrtps (GCC's masked form over all lanes, as with min and max).
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 sqrt(f32x16 a) noexcept {
#if defined(__clang__)
    return __builtin_ia32_sqrtps512(a, cur_direction);
#else
    return __builtin_ia32_sqrtps512_mask(a, a, static_cast<mask16>(0xFFFF), cur_direction);
#endif
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 sqrt(f64x8 a) noexcept {
#if defined(__clang__)
    return __builtin_ia32_sqrtpd512(a, cur_direction);
#else
    return __builtin_ia32_sqrtpd512_mask(a, a, static_cast<mask8>(0xFF), cur_direction);
#endif
}
/// The even and the odd lanes of the pair (a, b) read as one vector of twice the width.
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 evens(f32x16 a, f32x16 b) noexcept {
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f32x16 odds(f32x16 a, f32x16 b) noexcept {
    return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 evens(f64x8 a, f64x8 b) noexcept {
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) f64x8 odds(f64x8 a, f64x8 b) noexcept {
    return __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
}
/// Horizontal sums: the two 256-bit halves added lane by lane, then the 256-bit order above.
TAPIR_X86_AVX512 inline __attribute__((always_inline)) float hsum(f32x16 v) noexcept {
    return hsum(f32x8(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                      __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15)));
}
TAPIR_X86_AVX512 inline __attribute__((always_inline)) double hsum(f64x8 v) noexcept {
    return hsum(f64x4(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7)));
}

} // namespace tapir::detail::x86

#if defined(__clang__)
#pragma clang diagnostic pop
#else
#pragma GCC diagnostic pop
#endif

#endif // TAPIR_X86_BUILTINS
