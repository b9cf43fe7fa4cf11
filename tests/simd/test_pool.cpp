#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <tapir/data/random.hpp>
#include <tapir/simd/pool.hpp>

#include "simd_test_util.hpp"

using tapir::simd::isa;

namespace {

/// The rule written plainly: each window's taps in row-major order, the first maximum, a NaN wins
/// and stops the window.
template <class T>
void reference(const std::vector<T>& x, std::size_t planes, std::size_t h, std::size_t w, std::size_t kh, std::size_t sh,
               std::vector<T>& y, std::vector<std::int64_t>& arg) {
    const std::size_t oh = (h - kh) / sh + 1, ow = w / 2;
    y.assign(planes * oh * ow, T(0));
    arg.assign(planes * oh * ow, -1);
    std::size_t o = 0;
    for (std::size_t p = 0; p < planes; ++p)
        for (std::size_t oy = 0; oy < oh; ++oy)
            for (std::size_t ox = 0; ox < ow; ++ox, ++o) {
                std::size_t best = p * h * w + oy * sh * w + 2 * ox;
                for (std::size_t i = 0; i < kh && !std::isnan(x[best]); ++i)
                    for (std::size_t j = 0; j < 2; ++j) {
                        const std::size_t k = p * h * w + (oy * sh + i) * w + 2 * ox + j;
                        if (x[k] > x[best] || std::isnan(x[k])) {
                            best = k;
                            if (std::isnan(x[k])) break;
                        }
                    }
                y[o] = x[best];
                arg[o] = static_cast<std::int64_t>(best);
            }
}

template <class T>
bool same_bits(const T* a, const T* b, std::size_t n) {
    return std::memcmp(a, b, n * sizeof(T)) == 0;
}

/// Values from a small set (ties are common), signed zeros, and NaNs of distinct payloads.
template <class T>
std::vector<T> pool_input(std::size_t n, tapir::Rng& rng) {
    std::vector<T> x(n);
    for (T& v : x) {
        const double u = rng.uniform();
        if (u < 0.05) v = static_cast<T>(std::nanf(u < 0.025 ? "1" : "2"));
        else if (u < 0.15) v = rng.uniform() < 0.5 ? T(0) : -T(0);
        else v = static_cast<T>(std::floor(rng.uniform(-4, 4)));
    }
    return x;
}

template <class T>
void check_against_reference() {
    tapir::Rng rng(5);
    struct Case {
        std::size_t planes, h, w, kh, sh;
    };
    std::vector<Case> cases;
    for (std::size_t w : {2u, 3u, 8u, 9u, 16u, 20u, 31u, 32u, 33u, 40u, 64u, 67u})
        for (std::size_t kh : {1u, 2u, 3u})
            for (std::size_t sh : {1u, 2u, 3u}) cases.push_back({3, kh + 5, w, kh, sh});
    cases.push_back({2, 40, 40, 2, 2});
    cases.push_back({1, 16, 2, 16, 1});
    for (isa i : simd_test::isas())
        for (const Case& c : cases) {
            CAPTURE(tapir::simd::isa_name(i));
            CAPTURE(c.w);
            CAPTURE(c.kh);
            CAPTURE(c.sh);
            const std::vector<T> x = pool_input<T>(c.planes * c.h * c.w, rng);
            std::vector<T> want;
            std::vector<std::int64_t> want_arg;
            reference(x, c.planes, c.h, c.w, c.kh, c.sh, want, want_arg);
            std::vector<T> y(want.size() + 1, T(7)), y2(want.size() + 1, T(7));
            std::vector<std::int64_t> arg(want.size() + 1, -7);
            tapir::simd::max_pool_w2_on(i, x.data(), c.planes, c.h, c.w, c.kh, c.sh, y.data(), arg.data());
            CHECK(same_bits(y.data(), want.data(), want.size()));  // NaN payloads and the signs of zeros too
            CHECK(std::memcmp(arg.data(), want_arg.data(), want.size() * sizeof(std::int64_t)) == 0);
            CHECK(y.back() == T(7));  // nothing written past the end
            CHECK(arg.back() == -7);
            tapir::simd::max_pool_w2_on(i, x.data(), c.planes, c.h, c.w, c.kh, c.sh, y2.data(), static_cast<std::int64_t*>(nullptr));
            CHECK(same_bits(y2.data(), want.data(), want.size()));
        }
}

} // namespace

TEST_CASE("max_pool_w2_on: every instruction set gives the reference values, first maxima and first NaNs") {
    check_against_reference<float>();
    check_against_reference<double>();
}

TEST_CASE("max_pool_w2_on: a hand-computed 2x2 case with ties, signed zeros and NaNs") {
    const float nan1 = std::nanf("1"), nan2 = std::nanf("2");
    // One plane of 2 x 8: four windows.
    const std::vector<float> x = {3, 3, 0.0f, -0.0f, 1, nan1, -1, -2,   //
                                  3, 1, -0.0f, 0.0f, nan2, 2, -3, -1};
    for (isa i : simd_test::isas()) {
        CAPTURE(tapir::simd::isa_name(i));
        float y[4];
        std::int64_t arg[4];
        tapir::simd::max_pool_w2_on(i, x.data(), 1, 2, 8, 2, 2, y, arg);
        CHECK(y[0] == 3.0f);
        CHECK(arg[0] == 0);  // a three-way tie: the first
        CHECK(arg[1] == 2);  // +0 first, then -0, -0, +0: the first zero
        CHECK(!std::signbit(y[1]));
        CHECK(arg[2] == 5);  // the first NaN, its payload kept
        CHECK(std::memcmp(&y[2], &nan1, sizeof(float)) == 0);
        CHECK(y[3] == -1.0f);
        CHECK(arg[3] == 6);  // -1 twice: the first
    }
}
