// FlushDenormals: the scope flushes subnormals, restores the caller's mode (nested, opted out,
// sticky flags kept), and leaves results without subnormals unchanged.
#include <doctest/doctest.h>

#include <cfenv>
#include <cmath>
#include <limits>

#include <tapir/simd/fp_mode.hpp>

using tapir::simd::FlushDenormals;
using tapir::simd::denormals_flushed;

namespace {
/// x * y computed at run time (volatile: no constant folding at compile time).
float mul_rt(float x, float y) {
    volatile float a = x, b = y;
    return a * b;
}
double mul_rt(double x, double y) {
    volatile double a = x, b = y;
    return a * b;
}
} // namespace

TEST_CASE("FlushDenormals flushes subnormals in its scope and restores the mode after it") {
    if (!tapir::simd::can_flush_denormals()) {
        MESSAGE("skipped: this target has no flush-to-zero control");
        return;
    }
    REQUIRE(tapir::simd::flush_denormals());  // the default
    const float tiny = std::numeric_limits<float>::min() / 8;  // subnormal
    REQUIRE(std::fpclassify(tiny) == FP_SUBNORMAL);
    REQUIRE(!denormals_flushed());  // the process starts in IEEE mode
    CHECK(std::fpclassify(mul_rt(tiny, 1.0f)) == FP_SUBNORMAL);
    {
        const FlushDenormals guard;
        CHECK(denormals_flushed());
        CHECK(mul_rt(tiny, 1.0f) == 0.0f);  // input flushed (DAZ / FZ)
        CHECK(mul_rt(std::numeric_limits<float>::min(), 0.5f) == 0.0f);  // result flushed (FTZ)
        CHECK(mul_rt(std::numeric_limits<double>::min(), 0.5) == 0.0);
        CHECK(mul_rt(3.0f, 0.5f) == 1.5f);  // normal values untouched
        {
            const FlushDenormals inner;
            CHECK(denormals_flushed());
        }
        CHECK(denormals_flushed());  // the inner scope found it on and left it on
    }
    CHECK(!denormals_flushed());
    CHECK(std::fpclassify(mul_rt(tiny, 1.0f)) == FP_SUBNORMAL);
}

TEST_CASE("FlushDenormals keeps a caller's own flush mode and exception flags") {
    if (!tapir::simd::can_flush_denormals()) return;
    {
        // The caller already flushes: the scope changes nothing and leaves it on.
        const FlushDenormals outer;
        {
            const FlushDenormals g;
            CHECK(denormals_flushed());
        }
        CHECK(denormals_flushed());
    }
    std::feclearexcept(FE_ALL_EXCEPT);
    {
        const FlushDenormals g;
        volatile double zero = 0.0;
        volatile double r = 1.0 / zero;  // raises FE_DIVBYZERO inside the scope
        (void)r;
    }
    CHECK(std::fetestexcept(FE_DIVBYZERO) != 0);  // a sticky flag raised inside survives the scope
    std::feclearexcept(FE_ALL_EXCEPT);
}

TEST_CASE("set_flush_denormals(false) opts out") {
    tapir::simd::set_flush_denormals(false);
    {
        const FlushDenormals g;
        CHECK(!denormals_flushed());
    }
    tapir::simd::set_flush_denormals(true);
    if (!tapir::simd::can_flush_denormals()) return;
    const FlushDenormals g;
    CHECK(denormals_flushed());
}
