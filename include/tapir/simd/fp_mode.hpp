#pragma once
/// Flush-to-zero for training. Subnormal floats (below 1.2e-38 in float, 2.2e-308 in double) make
/// Intel cores take a microcode assist per operation: once a model fits its batch, gradients and
/// Adam's second moments go subnormal and a training step ran 1.5 to 4 times slower. Training
/// therefore flushes them (flush-to-zero and denormals-are-zero on x86, FPCR.FZ on aarch64, as
/// TensorFlow does by default on x86) inside FlushDenormals scopes: nn::fit's step, backward and
/// grad, and the optimisers' updates. Each scope restores the calling thread's mode when it ends,
/// so user code outside them keeps its own floating-point mode. set_flush_denormals(false) opts out.
///
/// What changes: a value below the smallest normal becomes zero (of the same sign) where it is
/// produced or read inside a scope. Results with no subnormal anywhere are bit-identical.

#include <atomic>
#include <cstdint>

#include "../config.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__SSE__) && defined(__GNUC__)
// The MXCSR is read and written with GCC/Clang builtins, not <xmmintrin.h> (compile time).
#define TAPIR_FP_MODE_X86 1
#elif defined(__aarch64__)
#define TAPIR_FP_MODE_ARM64 1
#endif

namespace tapir::simd {

namespace detail {
inline std::atomic<bool>& flush_denormals_slot() noexcept {
    static std::atomic<bool> on{true};
    return on;
}
#if defined(TAPIR_FP_MODE_X86)
using fp_mode_word = unsigned int;
constexpr fp_mode_word flush_bits = 0x8040u;  // MXCSR: FTZ (bit 15) | DAZ (bit 6)
inline fp_mode_word read_fp_mode() noexcept { return __builtin_ia32_stmxcsr(); }
inline void write_fp_mode(fp_mode_word v) noexcept { __builtin_ia32_ldmxcsr(v); }
#elif defined(TAPIR_FP_MODE_ARM64)
using fp_mode_word = std::uint64_t;
constexpr fp_mode_word flush_bits = std::uint64_t(1) << 24;  // FPCR.FZ
inline fp_mode_word read_fp_mode() noexcept {
    fp_mode_word v;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
    return v;
}
inline void write_fp_mode(fp_mode_word v) noexcept { __asm__ __volatile__("msr fpcr, %0" : : "r"(v)); }
#else
using fp_mode_word = unsigned int;
constexpr fp_mode_word flush_bits = 0;  // no control on this target: scopes do nothing
inline fp_mode_word read_fp_mode() noexcept { return 0; }
inline void write_fp_mode(fp_mode_word) noexcept {}
#endif
} // namespace detail

/// Whether training scopes flush subnormals (default true; process-wide, takes effect at the next scope).
inline void set_flush_denormals(bool on) noexcept { detail::flush_denormals_slot().store(on, std::memory_order_relaxed); }
inline bool flush_denormals() noexcept { return detail::flush_denormals_slot().load(std::memory_order_relaxed); }

/// True when this target can flush subnormals (x86 and aarch64).
constexpr bool can_flush_denormals() noexcept { return detail::flush_bits != 0; }

/// True when the calling thread flushes subnormals right now.
inline bool denormals_flushed() noexcept {
    return can_flush_denormals() && (detail::read_fp_mode() & detail::flush_bits) == detail::flush_bits;
}

/// Scope in which the calling thread flushes subnormals (unless set_flush_denormals(false)); on
/// exit the flush bits return to what they were, other bits (sticky exception flags raised inside
/// the scope) are kept. Nested scopes cost one register read.
class FlushDenormals {
public:
    FlushDenormals() noexcept {
        if (!can_flush_denormals() || !flush_denormals()) return;
        saved_ = detail::read_fp_mode();
        if ((saved_ & detail::flush_bits) == detail::flush_bits) return;
        detail::write_fp_mode(saved_ | detail::flush_bits);
        changed_ = true;
    }
    ~FlushDenormals() {
        if (changed_) detail::write_fp_mode((detail::read_fp_mode() & ~detail::flush_bits) | (saved_ & detail::flush_bits));
    }
    FlushDenormals(const FlushDenormals&) = delete;
    FlushDenormals& operator=(const FlushDenormals&) = delete;

private:
    detail::fp_mode_word saved_ = 0;
    bool changed_ = false;
};

} // namespace tapir::simd
