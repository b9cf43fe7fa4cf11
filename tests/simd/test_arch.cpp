#include <doctest/doctest.h>

#include <string>
#include <tapir/simd/arch.hpp>

#include "simd_test_util.hpp"

using tapir::simd::isa;

TEST_CASE("isa names") {
    CHECK(std::string(tapir::simd::isa_name(isa::scalar)) == "scalar");
    CHECK(std::string(tapir::simd::isa_name(isa::avx2)) == "avx2");
    CHECK(std::string(tapir::simd::isa_name(isa::avx512)) == "avx512");
    CHECK(std::string(tapir::simd::isa_name(isa::neon)) == "neon");
}

TEST_CASE("detection agrees with the compiler's view of the CPU") {
    const isa best = tapir::simd::detected_isa();
    CHECK(tapir::simd::isa_supported(best));
    CHECK(tapir::simd::isa_supported(isa::scalar));
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    CHECK(tapir::simd::isa_supported(isa::avx512) == avx512);
    CHECK(tapir::simd::isa_supported(isa::avx2) == avx2);
    CHECK_FALSE(tapir::simd::isa_supported(isa::neon));
    CHECK(best == (avx512 ? isa::avx512 : avx2 ? isa::avx2 : isa::scalar));
#elif defined(__aarch64__)
    CHECK(best == isa::neon);
    CHECK_FALSE(tapir::simd::isa_supported(isa::avx2));
    CHECK_FALSE(tapir::simd::isa_supported(isa::avx512));
#endif
    MESSAGE("detected ISA: " << std::string(tapir::simd::isa_name(best)));
}

TEST_CASE("set_active_isa switches paths and rejects what the CPU lacks") {
    simd_test::isa_guard guard;
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CHECK(tapir::simd::active_isa() == i);
    }
    for (isa i : {isa::avx2, isa::avx512, isa::neon}) {
        if (tapir::simd::isa_supported(i)) continue;
        try {
            tapir::simd::set_active_isa(i);
            FAIL("expected value_error");
        } catch (const tapir::value_error& e) {
            CHECK(std::string(e.what()).find(tapir::simd::isa_name(i)) != std::string::npos);
        }
    }
}

TEST_CASE("TAPIR_SIMD values are parsed, unknown or unsupported ones are named in the error") {
    const auto parse_isa_env = [](const char* v) { return tapir::simd::parse_isa(v); };
    CHECK(parse_isa_env("scalar") == isa::scalar);
    CHECK(parse_isa_env("") == tapir::simd::detected_isa());
    CHECK(parse_isa_env("auto") == tapir::simd::detected_isa());
    try {
        parse_isa_env("sse9");
        FAIL("expected value_error");
    } catch (const tapir::value_error& e) {
        CHECK(std::string(e.what()) ==
              "TAPIR_SIMD='sse9' is not an instruction set (expected scalar, avx2, avx512, neon or auto)");
    }
    for (isa i : {isa::avx2, isa::avx512, isa::neon}) {
        if (tapir::simd::isa_supported(i)) {
            CHECK(parse_isa_env(tapir::simd::isa_name(i)) == i);
        } else {
            CHECK_THROWS_WITH_AS(parse_isa_env(tapir::simd::isa_name(i)),
                                 doctest::Contains("does not support"), tapir::value_error);
        }
    }
}

TEST_CASE("thread count setting") {
    simd_test::isa_guard guard;
    tapir::simd::set_num_threads(3);
    CHECK(tapir::simd::num_threads() == 3);
    tapir::simd::set_num_threads(0);
    CHECK(tapir::simd::num_threads() >= 1);
    tapir::simd::set_num_threads(1);
    CHECK(tapir::simd::num_threads() == 1);
}
