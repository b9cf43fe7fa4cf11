#pragma once
// Shared helpers of the SIMD tests: the ISAs to sweep, an ISA guard, and the sweep size.
//   TAPIR_TEST_QUICK=1  sampled sweeps (default under ASan/UBSan and in the emulated aarch64 build)
//   TAPIR_TEST_FULL=1   exhaustive sweeps (every float bit pattern, every M x N x K in 1..67)
#include <cstdlib>
#include <cstring>
#include <vector>

#include <tapir/simd/arch.hpp>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
#define TAPIR_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define TAPIR_TEST_SANITIZED 1
#endif
#endif
#ifndef TAPIR_TEST_SANITIZED
#define TAPIR_TEST_SANITIZED 0
#endif
#ifndef TAPIR_TEST_EMULATED
#define TAPIR_TEST_EMULATED 0
#endif

namespace simd_test {

inline bool env_flag(const char* name) {
    const char* v = std::getenv(name);
    return v && *v && std::strcmp(v, "0") != 0;
}

inline bool full() { return env_flag("TAPIR_TEST_FULL"); }

inline bool quick() {
    if (full()) return false;
    return env_flag("TAPIR_TEST_QUICK") || TAPIR_TEST_SANITIZED || TAPIR_TEST_EMULATED;
}

/// Every kernel family this CPU and build can run.
inline std::vector<tapir::simd::isa> isas() {
    using tapir::simd::isa;
    std::vector<isa> out;
    for (isa i : {isa::scalar, isa::avx2, isa::avx512, isa::neon})
        if (tapir::simd::isa_supported(i)) out.push_back(i);
    return out;
}

/// Restores the active ISA and thread count on scope exit.
struct isa_guard {
    tapir::simd::isa saved = tapir::simd::active_isa();
    unsigned threads = tapir::simd::num_threads();
    isa_guard() = default;
    isa_guard(const isa_guard&) = delete;
    isa_guard& operator=(const isa_guard&) = delete;
    ~isa_guard() {
        tapir::simd::set_active_isa(saved);
        tapir::simd::set_num_threads(threads);
    }
};

} // namespace simd_test
