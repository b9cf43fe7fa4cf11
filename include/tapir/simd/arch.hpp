#pragma once
/// The active kernel family: TAPIR_SIMD (read once), set_active_isa, the GEMM thread count, and
/// simd::dispatch, which runs a kernel on the active family. Like all of simd/, this header builds
/// with -fno-exceptions -fno-rtti: its two checking entry points (parse_isa, which active_isa
/// uses for TAPIR_SIMD, and set_active_isa) raise through TAPIR_THROW.

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <string>
#include <thread>

#include "../config.hpp"
#include "../error.hpp"
#include "isa.hpp"
#include "vec.hpp"

namespace tapir::simd {

namespace detail {

/// -1 until the first call of active_isa() reads TAPIR_SIMD.
inline std::atomic<int>& active_slot() noexcept {
    static std::atomic<int> slot{-1};
    return slot;
}

inline std::atomic<unsigned>& threads_slot() noexcept {
    static std::atomic<unsigned> n{1};
    return n;
}

} // namespace detail

/// An instruction set from its name (scalar|avx2|avx512|neon, or auto / empty for detected_isa()),
/// as TAPIR_SIMD gives it; raises value_error (TAPIR_THROW) for an unknown or unsupported one.
inline isa parse_isa(const char* v) {
    const std::string s(v);
    isa want;
    if (s.empty() || s == "auto") return detected_isa();
    if (s == "scalar") want = isa::scalar;
    else if (s == "avx2") want = isa::avx2;
    else if (s == "avx512") want = isa::avx512;
    else if (s == "neon") want = isa::neon;
    else
        TAPIR_THROW(value_error("TAPIR_SIMD='" + s + "' is not an instruction set (expected scalar, avx2, avx512, neon or auto)"));
    if (!isa_supported(want))
        TAPIR_THROW(value_error("TAPIR_SIMD='" + s + "': this CPU or build does not support " + isa_name(want) +
                          " (best available: " + isa_name(detected_isa()) + ")"));
    return want;
}

/// The kernel family in use: TAPIR_SIMD if set (scalar|avx2|avx512|neon|auto), else detected_isa().
inline isa active_isa() {
    const int v = detail::active_slot().load(std::memory_order_relaxed);
    if (TAPIR_LIKELY(v >= 0)) return static_cast<isa>(v);
    const char* env = std::getenv("TAPIR_SIMD");
    const isa chosen = env ? parse_isa(env) : detected_isa();
    detail::active_slot().store(static_cast<int>(chosen), std::memory_order_relaxed);
    return chosen;
}

/// Forces a kernel family (tests, benchmarks). Throws value_error if the CPU or build lacks it.
inline void set_active_isa(isa i) {
    if (!isa_supported(i))
        TAPIR_THROW(value_error(std::string("set_active_isa: this CPU or build does not support ") + isa_name(i) +
                                " (best available: " + isa_name(detected_isa()) + ")"));
    detail::active_slot().store(static_cast<int>(i), std::memory_order_relaxed);
}

/// Threads used by large GEMMs (default 1). 0 means std::thread::hardware_concurrency().
/// Results are bitwise identical for every thread count.
inline void set_num_threads(unsigned n) {
    if (n == 0) n = std::thread::hardware_concurrency();
    detail::threads_slot().store(n == 0 ? 1u : n, std::memory_order_relaxed);
}

inline unsigned num_threads() noexcept { return detail::threads_slot().load(std::memory_order_relaxed); }

/// Runs the kernel K (see dispatch_to in vec.hpp) on the active instruction set (active_isa()).
template <class K, class... A> inline auto dispatch(A... args) { return dispatch_to<K>(active_isa(), args...); }

} // namespace tapir::simd
