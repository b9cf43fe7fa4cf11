#pragma once
/// SIMD instruction sets: the names, run-time detection (cpuid, and whether the OS saves the vector
/// state), and the per-function target attributes that let a plain -O2 build run AVX-512 kernels.
/// Cheap to include and exception-free: the no-exceptions deploy models build on it. The active
/// kernel family (the TAPIR_SIMD override) is in arch.hpp.

#include <cstddef>

#include "../config.hpp"

// x86 kernels need GCC/Clang target attributes; other compilers get the scalar path only.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(TAPIR_SIMD_NO_X86)
#define TAPIR_SIMD_X86 1
#include <cpuid.h>
/// Kernels compiled for AVX2+FMA regardless of -march, called only after cpuid says so.
#define TAPIR_TARGET_AVX2 __attribute__((target("avx2,fma")))
/// Kernels compiled for AVX-512 (F/BW/DQ/VL, as on Skylake-X and Zen 4/5).
#define TAPIR_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx2")))
#else
#define TAPIR_SIMD_X86 0
#endif

// NEON is part of the aarch64 baseline: no attribute and no run-time check needed.
#if defined(__aarch64__) && defined(__ARM_NEON) && !defined(TAPIR_SIMD_NO_NEON)
#define TAPIR_SIMD_NEON 1
#include <arm_neon.h>
#else
#define TAPIR_SIMD_NEON 0
#endif

/// Generic kernels carry no target attribute and pass vector registers to the attributed wrappers;
/// they are always inlined into an attributed entry, so the ABI note GCC and Clang give is moot.
#if defined(__clang__)
#define TAPIR_SIMD_DIAG_PUSH _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wpsabi\"")
#define TAPIR_SIMD_DIAG_POP _Pragma("clang diagnostic pop")
#elif defined(__GNUC__)
#define TAPIR_SIMD_DIAG_PUSH _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wpsabi\"")
#define TAPIR_SIMD_DIAG_POP _Pragma("GCC diagnostic pop")
#else
#define TAPIR_SIMD_DIAG_PUSH
#define TAPIR_SIMD_DIAG_POP
#endif

namespace tapir::simd {

enum class isa { scalar, avx2, avx512, neon };

inline const char* isa_name(isa i) noexcept {
    switch (i) {
    case isa::scalar: return "scalar";
    case isa::avx2: return "avx2";
    case isa::avx512: return "avx512";
    case isa::neon: return "neon";
    }
    return "unknown";
}

namespace detail {

#if TAPIR_SIMD_X86
struct x86_features {
    bool avx2_fma = false;
    bool avx512 = false;
};

inline x86_features query_x86() noexcept {
    x86_features f;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
    const bool osxsave = (ecx >> 27) & 1u, avx = (ecx >> 28) & 1u, fma = (ecx >> 12) & 1u;
    if (!osxsave || !avx) return f;
    unsigned xcr0_lo = 0, xcr0_hi = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0u));
    /// The OS must save the YMM (bits 1,2) and, for AVX-512, the opmask/ZMM state (bits 5,6,7).
    const bool ymm_os = (xcr0_lo & 0x6u) == 0x6u;
    const bool zmm_os = (xcr0_lo & 0xE6u) == 0xE6u;
    if (__get_cpuid_max(0, nullptr) < 7) return f;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const bool avx2 = (ebx >> 5) & 1u;
    const bool f512 = (ebx >> 16) & 1u, dq = (ebx >> 17) & 1u, bw = (ebx >> 30) & 1u, vl = (ebx >> 31) & 1u;
    f.avx2_fma = ymm_os && avx2 && fma;
    f.avx512 = f.avx2_fma && zmm_os && f512 && dq && bw && vl;
    return f;
}
#endif

} // namespace detail

/// Whether this CPU (cpuid, with the OS saving the vector state) and this build can run a kernel family.
inline bool isa_supported(isa i) noexcept {
    switch (i) {
    case isa::scalar: return true;
#if TAPIR_SIMD_X86
    case isa::avx2: {
#if defined(__AVX2__) && defined(__FMA__)
        return true; // -march already guarantees it: no cpuid needed.
#else
        static const bool ok = detail::query_x86().avx2_fma;
        return ok;
#endif
    }
    case isa::avx512: {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__) && defined(__FMA__)
        return true;
#else
        static const bool ok = detail::query_x86().avx512;
        return ok;
#endif
    }
#else
    case isa::avx2:
    case isa::avx512: return false;
#endif
    case isa::neon: return TAPIR_SIMD_NEON != 0;
    }
    return false;
}

/// Best instruction set that both this CPU and this build support.
inline isa detected_isa() noexcept {
    if (isa_supported(isa::avx512)) return isa::avx512;
    if (isa_supported(isa::avx2)) return isa::avx2;
    if (isa_supported(isa::neon)) return isa::neon;
    return isa::scalar;
}

} // namespace tapir::simd
