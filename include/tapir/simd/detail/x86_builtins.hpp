#pragma once
/// The few AVX2/FMA/AVX-512F operations tapir's deploy kernels use, written with GCC/Clang vector
/// extensions and compiler builtins instead of <immintrin.h>, which alone costs ~0.7 s of compile
/// time in every file that includes it. Each operation is the instruction the intrinsic of the
/// same name emits (same operand order, so the same bits, NaN and signed-zero cases included).
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

} // namespace tapir::detail::x86

#if defined(__clang__)
#pragma clang diagnostic pop
#else
#pragma GCC diagnostic pop
#endif

#endif // TAPIR_X86_BUILTINS
