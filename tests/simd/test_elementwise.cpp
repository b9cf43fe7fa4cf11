#include <doctest/doctest.h>

#include <string>

#include <cmath>
#include <limits>
#include <vector>

#include <tapir/data/random.hpp>
#include <tapir/simd/elementwise.hpp>

#include "simd_test_util.hpp"

using tapir::simd::isa;

namespace {

std::vector<std::size_t> lengths() {
    std::vector<std::size_t> n;
    for (std::size_t i = 0; i <= 70; ++i) n.push_back(i);
    for (std::size_t i : {127u, 128u, 129u, 1000u, 1031u}) n.push_back(i);
    return n;
}

template <class T> std::vector<T> random_vec(std::size_t n, tapir::Rng& rng, double lo = -2, double hi = 2) {
    std::vector<T> v(n + 3);
    for (auto& x : v) x = static_cast<T>(rng.uniform(lo, hi));
    return v;
}

template <class T> void check_all_ops() {
    tapir::Rng rng(11);
    const T eps = std::numeric_limits<T>::epsilon();
    for (std::size_t n : lengths()) {
        CAPTURE(n);
        // Inputs start one element in, so vector loads are unaligned.
        auto av = random_vec<T>(n, rng), bv = random_vec<T>(n, rng, 0.5, 3.0), ov = random_vec<T>(n, rng);
        const T* a = av.data() + 1;
        const T* b = bv.data() + 1;
        T* out = ov.data() + 1;
        const T guard_before = ov[0], guard_after = ov[n + 1];
        int bad = 0;
        tapir::simd::add(a, b, out, n);
        for (std::size_t i = 0; i < n; ++i) bad += out[i] != a[i] + b[i];
        tapir::simd::sub(a, b, out, n);
        for (std::size_t i = 0; i < n; ++i) bad += out[i] != a[i] - b[i];
        tapir::simd::mul(a, b, out, n);
        for (std::size_t i = 0; i < n; ++i) bad += out[i] != a[i] * b[i];
        tapir::simd::div(a, b, out, n);
        for (std::size_t i = 0; i < n; ++i) bad += out[i] != a[i] / b[i];
        tapir::simd::add_scalar(a, T(0.25), out, n);
        for (std::size_t i = 0; i < n; ++i) bad += out[i] != a[i] + T(0.25);
        tapir::simd::mul_scalar(a, T(-3), out, n);
        for (std::size_t i = 0; i < n; ++i) bad += out[i] != a[i] * T(-3);
        tapir::simd::relu(a, out, n);
        for (std::size_t i = 0; i < n; ++i) bad += out[i] != (a[i] > 0 ? a[i] : T(0));
        tapir::simd::relu_backward(b, a, out, n);
        for (std::size_t i = 0; i < n; ++i) bad += out[i] != (a[i] > 0 ? b[i] : T(0));
        CHECK(bad == 0);
        CHECK(ov[0] == guard_before);
        CHECK(ov[n + 1] == guard_after);

        // axpy: fused or not, within one rounding of each step.
        std::vector<T> y(out, out + n);
        tapir::simd::axpy(T(1.5), a, out, n);
        for (std::size_t i = 0; i < n; ++i)
            bad += std::fabs(out[i] - (y[i] + T(1.5) * a[i])) > 2 * eps * (std::fabs(y[i]) + std::fabs(T(1.5) * a[i]));
        CHECK(bad == 0);

        long double s = 0, sa = 0, d = 0, da = 0;
        for (std::size_t i = 0; i < n; ++i) {
            s += a[i];
            sa += std::fabs(a[i]);
            d += static_cast<long double>(a[i]) * b[i];
            da += std::fabs(static_cast<long double>(a[i]) * b[i]);
        }
        CHECK(std::fabs(tapir::simd::sum(a, n) - s) <= static_cast<T>(n + 2) * eps * sa);
        CHECK(std::fabs(tapir::simd::dot(a, b, n) - d) <= static_cast<T>(n + 2) * eps * da);
    }
}

template <class T> void check_matrix_ops() {
    tapir::Rng rng(12);
    const T eps = std::numeric_limits<T>::epsilon();
    for (std::size_t m : {0u, 1u, 3u, 17u, 64u, 100u})
        for (std::size_t n : {1u, 5u, 16u, 31u, 67u, 130u}) {
            CAPTURE(m);
            CAPTURE(n);
            const std::size_t ld = n + 3;
            auto g = random_vec<T>(m * ld, rng), row = random_vec<T>(n, rng);
            auto c = g;
            tapir::simd::add_row(c.data(), m, n, ld, row.data());
            int bad = 0;
            for (std::size_t i = 0; i < m; ++i)
                for (std::size_t j = 0; j < ld; ++j)
                    bad += c[i * ld + j] != (j < n ? g[i * ld + j] + row[j] : g[i * ld + j]);
            std::vector<T> out(n + 1, T(99));
            tapir::simd::sum_rows(g.data(), m, n, ld, out.data());
            for (std::size_t j = 0; j < n; ++j) {
                long double s = 0, sa = 0;
                T in_order = 0;  // each column summed from zero in row order, whatever the blocking
                for (std::size_t i = 0; i < m; ++i) {
                    s += g[i * ld + j];
                    sa += std::fabs(g[i * ld + j]);
                    in_order += g[i * ld + j];
                }
                bad += std::fabs(out[j] - s) > static_cast<T>(m + 1) * eps * sa;
                bad += out[j] != in_order;
            }
            bad += out[n] != T(99);
            CHECK(bad == 0);
        }
}

} // namespace

TEST_CASE_TEMPLATE("elementwise ops and reductions match scalar code on every ISA and length", T, float, double) {
    simd_test::isa_guard guard;
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        check_all_ops<T>();
        check_matrix_ops<T>();
    }
}

TEST_CASE_TEMPLATE("elementwise ops may write in place; relu keeps NaN, relu_backward masks", T, float, double) {
    simd_test::isa_guard guard;
    const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        std::vector<T> x(37), y(37);
        for (std::size_t j = 0; j < x.size(); ++j) {
            x[j] = static_cast<T>(j) - T(18);
            y[j] = T(2);
        }
        tapir::simd::add(x.data(), y.data(), x.data(), x.size());
        CHECK(x[0] == -16);
        CHECK(x[36] == 20);
        tapir::simd::mul(x.data(), x.data(), x.data(), x.size());
        CHECK(x[0] == 256);
        tapir::simd::axpy(T(-1), y.data(), y.data(), y.size());
        CHECK(y[36] == 0);
        std::vector<T> r = {nan, -inf, inf, T(-0.0), T(-1), T(2), nan, T(0), T(-5), T(3)};
        tapir::simd::relu(r.data(), r.data(), r.size());
        CHECK(std::isnan(r[0]));
        CHECK(r[1] == 0);
        CHECK(r[2] == inf);
        CHECK(r[3] == 0);
        CHECK(r[4] == 0);
        CHECK(r[5] == 2);
        CHECK(std::isnan(r[6]));
        CHECK(r[9] == 3);
        std::vector<T> yv = {T(0), T(1), T(-1), T(0.5)}, gv = {T(5), T(6), T(7), nan}, out(4);
        tapir::simd::relu_backward(gv.data(), yv.data(), out.data(), 4);
        CHECK(out[0] == 0);
        CHECK(out[1] == 6);
        CHECK(out[2] == 0);
        CHECK(std::isnan(out[3]));
        CHECK(tapir::simd::sum(yv.data(), 0) == 0);
        CHECK(tapir::simd::sum(yv.data(), 4) == T(0.5));
        CHECK(tapir::simd::dot(yv.data(), yv.data(), 4) == T(2.25));
    }
}
