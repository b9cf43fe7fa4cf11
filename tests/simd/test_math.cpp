#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <tapir/data/random.hpp>
#include <tapir/simd/math.hpp>

#include "simd_test_util.hpp"

using tapir::simd::isa;

namespace {

/// The accuracy promised in the /// comments of math.hpp, in ulp of the correctly rounded result.
constexpr double kExpUlp = 1.5, kLogUlp = 1.5, kTanhUlp = 3.0, kSigmoidUlp = 3.0;

/// Error of got in ulp of T against a higher-precision reference; infinite when a special value
/// (NaN, infinity, exact zero) is wrong.
template <class T> double ulp_error(T got, long double ref) {
    if (std::isnan(ref)) return std::isnan(got) ? 0.0 : HUGE_VAL;
    if (std::isnan(got)) return HUGE_VAL;
    const T r = static_cast<T>(ref);
    if (std::isinf(r)) {
        if (got == r) return 0.0;
        return std::fabs(got) == std::numeric_limits<T>::max() && (got > 0) == (r > 0) ? 1.0 : HUGE_VAL;
    }
    if (std::isinf(got)) return HUGE_VAL;
    long double ulp;
    if (std::fabs(r) < std::numeric_limits<T>::min())
        ulp = std::numeric_limits<T>::denorm_min();
    else
        ulp = std::ldexp(1.0L, std::ilogb(r) - (std::numeric_limits<T>::digits - 1));
    return static_cast<double>(std::fabs(static_cast<long double>(got) - ref) / ulp);
}

long double ref_exp(long double x) { return std::exp(x); }
long double ref_log(long double x) { return std::log(x); }
long double ref_tanh(long double x) { return std::tanh(x); }
long double ref_sigmoid(long double x) { return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x)); }

template <class T> std::vector<T> edge_values() {
    using L = std::numeric_limits<T>;
    std::vector<T> v = {T(0),      T(-0.0),      L::denorm_min(), -L::denorm_min(), L::min(),   -L::min(),
                        L::max(),  -L::max(),    L::infinity(),   -L::infinity(),   L::quiet_NaN(), T(1),
                        T(-1),     T(1000),      T(-1000),        T(0.5),           T(1e-30),   T(-1e-30),
                        T(88.72283935546875), T(88.7228317), T(88.72284), T(-87.33654), T(-103.972), T(-103.28),
                        T(-104.0), T(709.78271289338397), T(-745.1332191), T(-708.39641853226408), T(9.0), T(9.01),
                        T(10.0),   T(19.06),     T(20.0),         T(-9.5),          T(44.0),    T(-44.0),
                        T(0.34657359), T(-0.34657359), T(0.70710678), T(1.41421356), T(2.0), T(0.9999999)};
    for (T x = T(1e-6); x < T(800); x *= T(1.37)) {
        v.push_back(x);
        v.push_back(-x);
    }
    return v;
}

/// Inputs spread over the whole format, in chunks: every stride-th float bit pattern (every one
/// with TAPIR_TEST_FULL=1), random double bit patterns of every exponent; the edges come first.
template <class T> class input_chunks {
public:
    input_chunks() {
        if constexpr (sizeof(T) == 4) stride_ = simd_test::full() ? 1 : simd_test::quick() ? 16381 : 1021;
        else count_ = simd_test::full() ? 50000000 : simd_test::quick() ? 60000 : 1000000;
    }
    /// Next chunk into v; false when done.
    bool next(std::vector<T>& v) {
        v.clear();
        if (first_) {
            first_ = false;
            v = edge_values<T>();
        }
        constexpr std::size_t chunk = std::size_t(1) << 22;
        if constexpr (sizeof(T) == 4) {
            for (; pos_ < (std::uint64_t(1) << 32) && v.size() < chunk; pos_ += stride_) {
                const std::uint32_t b = static_cast<std::uint32_t>(pos_);
                float x;
                std::memcpy(&x, &b, 4);
                v.push_back(x);
            }
        } else {
            for (; made_ < count_ && v.size() < chunk; ++made_) {
                // Half over all bit patterns, half on |x| in [2^-30, 2^11) where the functions vary.
                std::uint64_t b = rng_.next_u64();
                if (made_ & 1) b = (b & 0x800FFFFFFFFFFFFFull) | ((0x3E1ull + rng_.uniform_int(41)) << 52);
                double x;
                std::memcpy(&x, &b, 8);
                v.push_back(x);
            }
        }
        return !v.empty();
    }

private:
    bool first_ = true;
    std::uint64_t stride_ = 1, pos_ = 0;
    std::size_t count_ = 0, made_ = 0;
    tapir::Rng rng_{3};
};

struct worst_case {
    double ulp = 0;
    double at = 0;
    void update(double e, double x) {
        if (!(e <= ulp)) {
            ulp = e;
            at = x;
        }
    }
};

template <class T> void accuracy_all_isas() {
    simd_test::isa_guard guard;
    const std::vector<isa> list = simd_test::isas();
    using fn = void (*)(const T*, T*, std::size_t);
    using rf = long double (*)(long double);
    const fn f[4] = {tapir::simd::exp<T>, tapir::simd::log<T>, tapir::simd::tanh<T>, tapir::simd::sigmoid<T>};
    const rf r[4] = {ref_exp, ref_log, ref_tanh, ref_sigmoid};
    const double bound[4] = {kExpUlp, kLogUlp, kTanhUlp, kSigmoidUlp};
    const char* names[4] = {"exp", "log", "tanh", "sigmoid"};
    std::vector<std::vector<worst_case>> worst(list.size(), std::vector<worst_case>(4));
    input_chunks<T> chunks;
    std::vector<T> x, y;
    std::vector<long double> ref;
    std::size_t total = 0;
    while (chunks.next(x)) {
        total += x.size();
        y.resize(x.size());
        ref.resize(x.size());
        for (int fi = 0; fi < 4; ++fi) {
            for (std::size_t j = 0; j < x.size(); ++j) ref[j] = r[fi](static_cast<long double>(x[j]));
            for (std::size_t ii = 0; ii < list.size(); ++ii) {
                tapir::simd::set_active_isa(list[ii]);
                f[fi](x.data(), y.data(), x.size());
                for (std::size_t j = 0; j < x.size(); ++j)
                    worst[ii][static_cast<std::size_t>(fi)].update(ulp_error<T>(y[j], ref[j]), static_cast<double>(x[j]));
            }
        }
    }
    for (std::size_t ii = 0; ii < list.size(); ++ii) {
        CAPTURE(std::string(tapir::simd::isa_name(list[ii])));
        for (std::size_t fi = 0; fi < 4; ++fi) {
            INFO(names[fi] << ": " << worst[ii][fi].ulp << " ulp at x = " << worst[ii][fi].at);
            CHECK(worst[ii][fi].ulp <= bound[fi]);
        }
        MESSAGE(std::string(tapir::simd::isa_name(list[ii]))
                << " " << std::string(sizeof(T) == 4 ? "float" : "double") << " max ulp: exp " << worst[ii][0].ulp
                << ", log " << worst[ii][1].ulp << ", tanh " << worst[ii][2].ulp << ", sigmoid " << worst[ii][3].ulp
                << " over " << total << " inputs");
    }
}

} // namespace

TEST_CASE_TEMPLATE("exp, log, tanh, sigmoid hold their stated ulp bounds over the whole range", T, float, double) {
    accuracy_all_isas<T>();
}

TEST_CASE_TEMPLATE("math edge values are exact", T, float, double) {
    simd_test::isa_guard guard;
    using L = std::numeric_limits<T>;
    const T inf = L::infinity(), nan = L::quiet_NaN();
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        const std::vector<T> x = {T(-1000), T(1000), -inf, inf, nan, T(0), T(-0.0), T(-1)};
        std::vector<T> y(x.size());
        tapir::simd::exp(x.data(), y.data(), x.size());
        CHECK(y[0] == 0);
        CHECK(y[1] == inf);
        CHECK(y[2] == 0);
        CHECK(y[3] == inf);
        CHECK(std::isnan(y[4]));
        CHECK(y[5] == 1);
        CHECK(y[6] == 1);
        tapir::simd::tanh(x.data(), y.data(), x.size());
        CHECK(y[0] == -1);
        CHECK(y[1] == 1);
        CHECK(y[2] == -1);
        CHECK(y[3] == 1);
        CHECK(std::isnan(y[4]));
        CHECK(y[5] == 0);
        CHECK(std::signbit(y[6]));
        tapir::simd::sigmoid(x.data(), y.data(), x.size());
        CHECK(y[0] == 0);
        CHECK(y[1] == 1);
        CHECK(y[2] == 0);
        CHECK(y[3] == 1);
        CHECK(std::isnan(y[4]));
        CHECK(y[5] == T(0.5));
        CHECK(y[6] == T(0.5));
        tapir::simd::log(x.data(), y.data(), x.size());
        CHECK(std::isnan(y[0]));
        CHECK(y[1] == doctest::Approx(6.907755278982137));
        CHECK(std::isnan(y[2]));
        CHECK(y[3] == inf);
        CHECK(std::isnan(y[4]));
        CHECK(y[5] == -inf);
        CHECK(y[6] == -inf);
        CHECK(std::isnan(y[7]));
        // Gradual underflow: exp lands on denormals, log reads them.
        const T tiny[] = {L::denorm_min(), T(4) * L::denorm_min()};
        T out[2];
        tapir::simd::log(tiny, out, 2);
        CHECK(out[0] == doctest::Approx(std::log(static_cast<double>(L::denorm_min()))));
        CHECK(out[1] == doctest::Approx(std::log(4.0 * static_cast<double>(L::denorm_min()))));
        tapir::simd::exp(out, out, 2);
        CHECK(out[0] == L::denorm_min());
        CHECK(out[1] == T(4) * L::denorm_min());
        // No NaN anywhere on a dense grid of finite inputs.
        std::vector<T> g;
        for (int k = -3000; k <= 3000; ++k) g.push_back(static_cast<T>(k) * T(0.37));
        std::vector<T> h(g.size());
        int nans = 0;
        tapir::simd::sigmoid(g.data(), h.data(), g.size());
        for (T v : h) nans += std::isnan(v) || v < 0 || v > 1;
        tapir::simd::tanh(g.data(), h.data(), g.size());
        for (T v : h) nans += std::isnan(v) || v < -1 || v > 1;
        CHECK(nans == 0);
    }
}

TEST_CASE_TEMPLATE("gate_sigmoid is the separate add, add-row, doubling, sigmoid and 2 s - 1 passes, bit for bit", T, float, double) {
    simd_test::isa_guard guard;
    tapir::Rng rng(21);
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        // (rows, n, g0, g1): an LSTM's four gates (cell candidate third), GRU-like r z, odd widths with tails.
        const std::size_t cases[][4] = {{3, 256, 128, 192}, {2, 20, 10, 15}, {4, 37, 0, 0}, {1, 7, 0, 7}, {5, 50, 13, 50}};
        for (const auto& c : cases) {
            const std::size_t rows = c[0], n = c[1], g0 = c[2], g1 = c[3], lda = n + 3, ldb = n + 1, ldo = n + 2;
            CAPTURE(n);
            std::vector<T> a(rows * lda), b(rows * ldb), bias(n), out(rows * ldo, T(7)), ref(rows * ldo, T(7));
            for (T& v : a) v = static_cast<T>(rng.normal() * 3.0);
            for (T& v : b) v = static_cast<T>(rng.normal() * 3.0);
            for (T& v : bias) v = static_cast<T>(rng.normal());
            a[0] = T(0), b[0] = T(0), bias[0] = T(0);  // sigmoid(0) is exactly 1/2 (2 s - 1 = 0 when doubled)
            tapir::simd::gate_sigmoid<T>(rows, n, g0, g1, a.data(), lda, b.data(), ldb, bias.data(), out.data(), ldo);
            std::vector<T> x(n);
            for (std::size_t r = 0; r < rows; ++r) {
                for (std::size_t j = 0; j < n; ++j) {
                    x[j] = (a[r * lda + j] + b[r * ldb + j]) + bias[j];
                    if (j >= g0 && j < g1) x[j] *= T(2);
                }
                tapir::simd::sigmoid(x.data(), ref.data() + r * ldo, n);
                for (std::size_t j = g0; j < g1; ++j) ref[r * ldo + j] = T(2) * ref[r * ldo + j] - T(1);
            }
            int bad = 0;
            for (std::size_t k = 0; k < out.size(); ++k) bad += std::memcmp(&out[k], &ref[k], sizeof(T)) != 0;
            CHECK(bad == 0);
            CHECK(out[0] == (g0 == 0 && g1 > 0 ? T(0) : T(0.5)));
            CHECK(out[n] == T(7));  // padding between rows untouched
            for (std::size_t j = 0; j < n; ++j) {
                const T lo = j >= g0 && j < g1 ? T(-1) : T(0);
                bad += !(out[j] >= lo && out[j] <= T(1));
            }
            CHECK(bad == 0);
        }
    }
}
