#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <array>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <tapir/data/random.hpp>
#include <tapir/simd/elementwise.hpp>
#include <tapir/simd/gemm.hpp>

#include "simd_test_util.hpp"

using tapir::simd::isa;

namespace {

/// A row-major matrix inside a larger buffer: leading dimension ld >= cols, data starting at an
/// odd offset; the bytes around it hold a sentinel that gemm must not touch.
template <class T> struct Mat {
    std::size_t rows = 0, cols = 0, ld = 0, off = 0;
    std::vector<T> buf;
    Mat(std::size_t r, std::size_t c, std::size_t pad, std::size_t offset, tapir::Rng& rng)
        : rows(r), cols(c), ld(c + pad), off(offset), buf(offset + r * (c + pad) + 5, T(777)) {
        for (std::size_t i = 0; i < r; ++i)
            for (std::size_t j = 0; j < c; ++j) at(i, j) = static_cast<T>(rng.uniform(-1.0, 1.0));
    }
    T* data() { return buf.data() + off; }
    T& at(std::size_t i, std::size_t j) { return buf[off + i * ld + j]; }
};

struct Case {
    bool ta, tb;
    std::size_t m, n, k;
    double alpha, beta;
    std::size_t pad, off;
};

std::string describe(const Case& c) {
    std::ostringstream os;
    os << "ta=" << c.ta << " tb=" << c.tb << " m=" << c.m << " n=" << c.n << " k=" << c.k << " alpha=" << c.alpha
       << " beta=" << c.beta << " pad=" << c.pad << " off=" << c.off
       << " isa=" << tapir::simd::isa_name(tapir::simd::active_isa());
    return os.str();
}

/// Runs one case against a long double reference; returns an empty string or the first mismatch.
template <class T> std::string run_case(const Case& c, tapir::Rng& rng) {
    Mat<T> A(c.ta ? c.k : c.m, c.ta ? c.m : c.k, c.pad, c.off, rng);
    Mat<T> B(c.tb ? c.n : c.k, c.tb ? c.k : c.n, c.pad + 1, c.off + 2, rng);
    Mat<T> C(c.m, c.n, c.pad, c.off + 1, rng);
    if (c.beta == 0.0)
        for (std::size_t i = 0; i < c.m; ++i)
            for (std::size_t j = 0; j < c.n; ++j) C.at(i, j) = std::numeric_limits<T>::quiet_NaN();
    const std::vector<T> c0 = C.buf;
    const T alpha = static_cast<T>(c.alpha), beta = static_cast<T>(c.beta);
    tapir::simd::gemm<T>(c.ta, c.tb, c.m, c.n, c.k, alpha, A.data(), A.ld, B.data(), B.ld, beta, C.data(), C.ld);
    const long double eps = std::numeric_limits<T>::epsilon();
    for (std::size_t i = 0; i < c.m; ++i) {
        for (std::size_t j = 0; j < c.n; ++j) {
            long double s = 0, abs_s = 0;
            for (std::size_t p = 0; p < c.k; ++p) {
                const long double x = c.ta ? A.at(p, i) : A.at(i, p);
                const long double y = c.tb ? B.at(j, p) : B.at(p, j);
                s += x * y;
                abs_s += std::fabs(x * y);
            }
            const long double old = c0[C.off + i * C.ld + j];
            long double ref = static_cast<long double>(alpha) * s;
            long double bound = std::fabs(static_cast<long double>(alpha)) * abs_s;
            if (beta != T(0)) {
                ref += static_cast<long double>(beta) * old;
                bound += std::fabs(static_cast<long double>(beta) * old);
            }
            const long double tol = 2 * (static_cast<long double>(c.k) + 4) * eps * bound + 1e-30L;
            const long double got = C.at(i, j);
            if (!(std::fabs(got - ref) <= tol)) {
                std::ostringstream os;
                os << describe(c) << ": C(" << i << "," << j << ") = " << static_cast<double>(got) << ", expected "
                   << static_cast<double>(ref) << " (tol " << static_cast<double>(tol) << ")";
                return os.str();
            }
        }
    }
    // Nothing outside the m x n window of C may change (padding, neighbours of the odd offset).
    for (std::size_t idx = 0; idx < C.buf.size(); ++idx) {
        const bool inside = idx >= C.off && (idx - C.off) / C.ld < c.m && (idx - C.off) % C.ld < c.n;
        if (!inside && std::memcmp(&C.buf[idx], &c0[idx], sizeof(T)) != 0)
            return describe(c) + ": wrote outside C at buffer index " + std::to_string(idx);
    }
    return {};
}

const double kAlphaBeta[][2] = {{1.0, 0.0}, {1.0, 1.0}, {-0.5, 2.0}, {2.0, 0.0}, {0.75, -1.0}, {1.0, 0.5}};
const std::size_t kOther[] = {1, 3, 16, 17, 31, 33, 48, 64, 67, 2, 8, 29};
const std::size_t kPadOff[][2] = {{0, 0}, {3, 1}, {1, 3}, {16, 5}};

template <class T> void sweep_dims(tapir::Rng& rng, int& failures) {
    const std::size_t step = simd_test::quick() ? 5 : 1;
    std::size_t idx = 0;
    for (int t = 0; t < 4; ++t) {
        const bool ta = t & 1, tb = (t >> 1) & 1;
        for (std::size_t v = 1; v <= 67; v = (v + step > 67 && v != 67) ? 67 : v + step) {
            for (int which = 0; which < 3; ++which, ++idx) {
                const std::size_t o1 = kOther[idx % 12], o2 = kOther[(idx * 7 + 3) % 12];
                Case c{ta, tb, o1, o2, o2, kAlphaBeta[idx % 6][0], kAlphaBeta[idx % 6][1], kPadOff[idx % 4][0],
                       kPadOff[idx % 4][1]};
                if (which == 0) c.m = v;
                if (which == 1) c.n = v;
                if (which == 2) c.k = v;
                if (which != 0) c.m = o1;
                if (which == 2) c.n = o2;
                const std::string err = run_case<T>(c, rng);
                if (!err.empty() && failures++ < 5) FAIL_CHECK(err);
            }
        }
    }
}

template <class T> void special_shapes(tapir::Rng& rng, int& failures) {
    const bool q = simd_test::quick();
    std::vector<Case> cases = {
        {false, false, 97, 89, 83, 1.0, 0.0, 0, 0},    {true, true, 89, 97, 101, -1.0, 0.5, 2, 1},
        {false, true, 1000, 3, 5, 1.0, 1.0, 1, 1},      {true, false, 3, 1000, 7, 2.0, 0.0, 0, 3},
        {false, false, 130, 150, 1, 1.0, -1.0, 0, 1},   {true, true, 1, 1, 1, 3.0, 0.0, 0, 0},
        {false, false, 9, 2200, 20, 1.0, 1.0, 3, 1},    {true, false, 300, 40, 30, 0.5, 0.0, 1, 0},
        {false, true, 33, 47, 1100, 1.0, 0.25, 1, 1},   {true, false, 2, 700, 513, -2.0, 1.0, 0, 1},
        {false, false, 128, 64, 64, 1.0, 0.0, 0, 0},    {false, true, 64, 64, 64, 1.0, 1.0, 0, 0},
    };
    if (!q) {
        cases.push_back({false, false, 500, 2, 300, 1.0, 0.0, 0, 1});
        cases.push_back({true, true, 257, 263, 269, 1.0, 2.0, 3, 1});
    }
    for (const Case& c : cases) {
        const std::string err = run_case<T>(c, rng);
        if (!err.empty() && failures++ < 5) FAIL_CHECK(err);
    }
}

/// Every M x N x K in 1..67 (TAPIR_TEST_FULL=1): transposes and alpha/beta rotate with the shape.
template <class T> void full_cube(tapir::Rng& rng, int& failures) {
    std::size_t idx = 0;
    for (std::size_t m = 1; m <= 67; ++m)
        for (std::size_t n = 1; n <= 67; ++n)
            for (std::size_t k = 1; k <= 67; ++k, ++idx) {
                const Case c{(idx & 1) != 0, (idx & 2) != 0, m, n, k, kAlphaBeta[idx % 6][0], kAlphaBeta[idx % 6][1],
                             kPadOff[idx % 4][0], kPadOff[idx % 4][1]};
                const std::string err = run_case<T>(c, rng);
                if (!err.empty() && failures++ < 5) FAIL_CHECK(err);
            }
}

} // namespace

TEST_CASE_TEMPLATE("gemm matches a long double reference on awkward shapes, every ISA", T, float, double) {
    simd_test::isa_guard guard;
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        tapir::Rng rng(42 + static_cast<unsigned>(i));
        int failures = 0;
        sweep_dims<T>(rng, failures);
        special_shapes<T>(rng, failures);
        if (simd_test::full()) full_cube<T>(rng, failures);
        CHECK(failures == 0);
    }
}

TEST_CASE_TEMPLATE("gemm: exact small product, k = 0 and alpha = 0 scale C, beta = 0 ignores NaN", T, float, double) {
    simd_test::isa_guard guard;
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        // [1 2 3; 4 5 6] * [7 8; 9 10; 11 12] = [58 64; 139 154]
        const T a[] = {1, 2, 3, 4, 5, 6}, b[] = {7, 8, 9, 10, 11, 12};
        const T nan = std::numeric_limits<T>::quiet_NaN();
        T c[] = {nan, nan, nan, nan};
        tapir::simd::gemm<T>(false, false, 2, 2, 3, T(1), a, 3, b, 2, T(0), c, 2);
        CHECK(c[0] == 58);
        CHECK(c[1] == 64);
        CHECK(c[2] == 139);
        CHECK(c[3] == 154);
        // A^T stored as 3x2, B^T stored as 2x3; C = 2 * A B - 1 * C
        const T at[] = {1, 4, 2, 5, 3, 6}, bt[] = {7, 9, 11, 8, 10, 12};
        tapir::simd::gemm<T>(true, true, 2, 2, 3, T(2), at, 2, bt, 3, T(-1), c, 2);
        CHECK(c[0] == 58);
        CHECK(c[3] == 154);
        T d[] = {1, 2, 3, 4};
        tapir::simd::gemm<T>(false, false, 2, 2, 0, T(1), nullptr, 0, nullptr, 2, T(3), d, 2);
        CHECK(d[0] == 3);
        CHECK(d[3] == 12);
        tapir::simd::gemm<T>(false, false, 2, 2, 3, T(0), a, 3, b, 2, T(0.5), d, 2);
        CHECK(d[0] == 1.5);
        T e[] = {nan, nan, nan, nan};
        tapir::simd::gemm<T>(false, false, 2, 2, 0, T(1), a, 3, b, 2, T(0), e, 2);
        CHECK(e[0] == 0);
        CHECK(e[3] == 0);
        tapir::simd::gemm<T>(false, false, 0, 2, 3, T(1), a, 3, b, 2, T(0), e, 2); // m = 0: no-op
        CHECK(e[0] == 0);
    }
}

TEST_CASE("gemm: bad leading dimensions are named in the error") {
    const float a[6] = {}, b[6] = {};
    float c[4] = {};
    CHECK_THROWS_WITH_AS(tapir::simd::gemm<float>(false, false, 2, 2, 3, 1.0f, a, 2, b, 2, 0.0f, c, 2),
                         "gemm: lda=2 is smaller than the 3 columns of A (trans_a=false, m=2, k=3)",
                         tapir::value_error);
    CHECK_THROWS_WITH_AS(tapir::simd::gemm<float>(false, true, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 2),
                         "gemm: ldb=2 is smaller than the 3 columns of B (trans_b=true, k=3, n=2)",
                         tapir::value_error);
    CHECK_THROWS_WITH_AS(tapir::simd::gemm<float>(false, false, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 1),
                         "gemm: ldc=1 is smaller than the 2 columns of C", tapir::value_error);
    CHECK_THROWS_AS(tapir::simd::gemm<float>(false, false, 2, 2, 3, 1.0f, nullptr, 3, b, 2, 0.0f, c, 2),
                    tapir::value_error);
}

/// Lets moderate products take the threaded path.
struct parallel_threshold_guard {
    std::size_t saved = tapir::simd::gemm_parallel_threshold();
    explicit parallel_threshold_guard(std::size_t v) { tapir::simd::set_gemm_parallel_threshold(v); }
    parallel_threshold_guard(const parallel_threshold_guard&) = delete;
    parallel_threshold_guard& operator=(const parallel_threshold_guard&) = delete;
    ~parallel_threshold_guard() { tapir::simd::set_gemm_parallel_threshold(saved); }
};

TEST_CASE_TEMPLATE("gemm results are bitwise identical for any thread count", T, float, double) {
    simd_test::isa_guard guard;
    parallel_threshold_guard low(1000);
    const bool q = simd_test::quick();
    const std::size_t m = q ? 150 : 301, n = q ? 140 : 257, k = q ? 100 : 300;
    tapir::Rng rng(7);
    std::vector<T> a(m * k), b(k * n), c0(m * n);
    for (auto& x : a) x = static_cast<T>(rng.uniform(-1, 1));
    for (auto& x : b) x = static_cast<T>(rng.uniform(-1, 1));
    for (auto& x : c0) x = static_cast<T>(rng.uniform(-1, 1));
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        for (int t = 0; t < 4; ++t) {
            const bool ta = t & 1, tb = (t >> 1) & 1;
            std::vector<T> ref = c0;
            tapir::simd::set_num_threads(1);
            tapir::simd::gemm<T>(ta, tb, m, n, k, T(0.5), a.data(), ta ? m : k, b.data(), tb ? k : n, T(2),
                                 ref.data(), n);
            for (unsigned nt : {2u, 3u, 5u}) {
                tapir::simd::set_num_threads(nt);
                std::vector<T> c = c0;
                tapir::simd::gemm<T>(ta, tb, m, n, k, T(0.5), a.data(), ta ? m : k, b.data(), tb ? k : n, T(2),
                                     c.data(), n);
                CHECK(std::memcmp(c.data(), ref.data(), c.size() * sizeof(T)) == 0);
            }
            // Wide C: threads split N instead of M.
            const std::size_t wn = 4 * m;
            std::vector<T> bw(k * wn), r1(m * wn), r2(m * wn);
            for (auto& x : bw) x = static_cast<T>(rng.uniform(-1, 1));
            tapir::simd::set_num_threads(1);
            tapir::simd::gemm<T>(ta, false, 40, wn, k, T(1), a.data(), ta ? 40 : k, bw.data(), wn, T(0), r1.data(),
                                 wn);
            tapir::simd::set_num_threads(4);
            tapir::simd::gemm<T>(ta, false, 40, wn, k, T(1), a.data(), ta ? 40 : k, bw.data(), wn, T(0), r2.data(),
                                 wn);
            CHECK(std::memcmp(r1.data(), r2.data(), 40 * wn * sizeof(T)) == 0);
        }
    }
}

TEST_CASE_TEMPLATE("gemm_bias_act: same bits as gemm, add_row and relu; false (C untouched) where it does not apply",
                   T, float, double) {
    simd_test::isa_guard guard;
    tapir::Rng rng(11);
    struct Shape3 {
        std::size_t m, n, k;
    };
    // Whole tiles of every family (the dense layers of the Higgs MLPs), and shapes that must fall back.
    const Shape3 shapes[] = {{128, 64, 64}, {128, 64, 8}, {32, 64, 64}, {24, 48, 64}, {48, 96, 256},
                             {40, 128, 17}, {7, 64, 64},  {128, 33, 64}, {16, 64, 300}, {128, 1, 64}};
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        int fused = 0;
        for (const Shape3& s : shapes) {
            CAPTURE(s.m);
            CAPTURE(s.n);
            CAPTURE(s.k);
            std::vector<T> a(s.m * s.k), b(s.k * s.n), bias(s.n);
            for (auto& x : a) x = static_cast<T>(rng.uniform(-1, 1));
            for (auto& x : b) x = static_cast<T>(rng.uniform(-1, 1));
            for (auto& x : bias) x = static_cast<T>(rng.uniform(-1, 1));
            for (bool relu : {false, true}) {
                std::vector<T> ref(s.m * s.n), c(s.m * s.n, T(-7));
                tapir::simd::gemm<T>(false, false, s.m, s.n, s.k, T(1), a.data(), s.k, b.data(), s.n, T(0), ref.data(),
                                     s.n);
                tapir::simd::add_row(ref.data(), s.m, s.n, s.n, bias.data());
                if (relu) tapir::simd::relu(ref.data(), ref.data(), ref.size());
                if (tapir::simd::gemm_bias_act<T>(s.m, s.n, s.k, a.data(), s.k, b.data(), s.n, bias.data(), relu,
                                                  c.data(), s.n)) {
                    ++fused;
                    CHECK(std::memcmp(c.data(), ref.data(), c.size() * sizeof(T)) == 0);
                } else {
                    CHECK(std::all_of(c.begin(), c.end(), [](T x) { return x == T(-7); }));
                }
            }
        }
        // The fast path is taken where the tiles fit: 8- and 4-row tiles divide 128 (AVX2's 6 do not).
        if (i == isa::avx512 || i == isa::scalar) CHECK(fused >= 4);
    }
}

TEST_CASE_TEMPLATE("gemm with a transposed B is bitwise the product with B transposed by hand, every ISA", T, float,
                   double) {
    // The transposed-B pack moves whole vectors through an in-register transpose; any lane mix-up
    // shows as a changed bit. Widths and depths cover full panels, partial panels and depth remainders.
    simd_test::isa_guard guard;
    tapir::Rng rng(13);
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        for (std::size_t n : {16u, 32u, 64u, 70u, 96u})
            for (std::size_t k : {8u, 16u, 40u, 64u, 77u}) {
                const std::size_t m = 24;
                CAPTURE(n);
                CAPTURE(k);
                std::vector<T> a(m * k), bt(n * k), b(k * n), c1(m * n), c2(m * n);
                for (auto& x : a) x = static_cast<T>(rng.uniform(-1, 1));
                for (auto& x : bt) x = static_cast<T>(rng.uniform(-1, 1));
                for (std::size_t j = 0; j < n; ++j)
                    for (std::size_t p = 0; p < k; ++p) b[p * n + j] = bt[j * k + p];
                tapir::simd::gemm<T>(false, true, m, n, k, T(1), a.data(), k, bt.data(), k, T(0), c1.data(), n);
                // The same product with B read in place (no packing), A read by columns.
                std::vector<T> at(k * m);
                for (std::size_t r = 0; r < m; ++r)
                    for (std::size_t p = 0; p < k; ++p) at[p * m + r] = a[r * k + p];
                tapir::simd::gemm<T>(true, false, m, n, k, T(1), at.data(), m, b.data(), n, T(0), c2.data(), n);
                CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(T)) == 0);
            }
    }
}

TEST_CASE_TEMPLATE("one-column products (A x and A^T x) are bitwise the tiled path's first column, every ISA", T,
                   float, double) {
    // gemv paths reorganise the work (rows as lanes, in-register transposes) but must keep each
    // element's chain: deployed models reproduce these bits.
    simd_test::isa_guard guard;
    tapir::Rng rng(17);
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        for (bool ta : {false, true})
            for (std::size_t m : {1u, 15u, 16u, 17u, 40u, 128u})
                for (std::size_t k : {1u, 7u, 16u, 33u, 64u, 700u}) {
                    CAPTURE(ta);
                    CAPTURE(m);
                    CAPTURE(k);
                    const std::size_t wide = 48; // several tiles wide: the general path
                    std::vector<T> a(m * k), bw(k * wide), b(k), c0(m * wide);
                    for (auto& x : a) x = static_cast<T>(rng.uniform(-1, 1));
                    for (auto& x : bw) x = static_cast<T>(rng.uniform(-1, 1));
                    for (auto& x : c0) x = static_cast<T>(rng.uniform(-1, 1));
                    for (std::size_t p = 0; p < k; ++p) b[p] = bw[p * wide];
                    for (const T beta : {T(0), T(0.5)}) {
                        std::vector<T> cw = c0, c1(m);
                        for (std::size_t r = 0; r < m; ++r) c1[r] = c0[r * wide];
                        tapir::simd::gemm<T>(ta, false, m, wide, k, T(0.75), a.data(), ta ? m : k, bw.data(), wide, beta,
                                             cw.data(), wide);
                        tapir::simd::gemm<T>(ta, false, m, 1, k, T(0.75), a.data(), ta ? m : k, b.data(), 1, beta,
                                             c1.data(), 1);
                        int diff = 0;
                        for (std::size_t r = 0; r < m; ++r) diff += std::memcmp(&c1[r], &cw[r * wide], sizeof(T)) != 0;
                        CHECK(diff == 0);
                    }
                }
    }
}

TEST_CASE_TEMPLATE("gemm with a transposed A gives the bits of the same product on A transposed by hand", T, float, double) {
    simd_test::isa_guard guard;
    tapir::Rng rng(23);
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        // m past one MC block with a ragged last panel, k past one K block, n past the small path.
        for (const auto& d : {std::array<std::size_t, 3>{301, 530, 700}, std::array<std::size_t, 3>{13, 40, 9}}) {
            const std::size_t m = d[0], n = d[1], k = d[2];
            std::vector<T> at(k * m), a(m * k), b(k * n), c1(m * n), c2(m * n);
            for (auto& x : at) x = static_cast<T>(rng.uniform(-1, 1));
            for (std::size_t p = 0; p < k; ++p)
                for (std::size_t r = 0; r < m; ++r) a[r * k + p] = at[p * m + r];
            for (auto& x : b) x = static_cast<T>(rng.uniform(-1, 1));
            for (std::size_t e = 0; e < c1.size(); ++e) c1[e] = c2[e] = static_cast<T>(rng.uniform(-1, 1));
            tapir::simd::gemm<T>(true, false, m, n, k, T(0.5), at.data(), m, b.data(), n, T(1), c1.data(), n);
            tapir::simd::gemm<T>(false, false, m, n, k, T(0.5), a.data(), k, b.data(), n, T(1), c2.data(), n);
            CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(T)) == 0);
        }
    }
}

TEST_CASE_TEMPLATE("gemm_rows (B given by row offsets) is bitwise gemm on the gathered rows; gemm_rows_nt matches a reference, every ISA",
                   T, float, double) {
    // Rows overlap and repeat, as a convolution's taps do; shapes cover full and edge tiles, a K
    // beyond one K block (so the blocks restart alike) and a beta that reads C.
    simd_test::isa_guard guard;
    tapir::Rng rng(21);
    for (isa i : simd_test::isas()) {
        tapir::simd::set_active_isa(i);
        CAPTURE(std::string(tapir::simd::isa_name(i)));
        for (std::size_t m : {1u, 8u, 13u})
            for (std::size_t n : {1u, 31u, 70u})
                for (std::size_t k : {3u, 40u, 700u})
                    for (double beta : {0.0, 0.5}) {
                        CAPTURE(m);
                        CAPTURE(n);
                        CAPTURE(k);
                        std::vector<T> src(3 * n + 2 * k + 8), a(m * k), b(k * n), c1(m * n), c2(m * n);
                        std::vector<std::ptrdiff_t> rows(k);
                        for (auto& x : src) x = static_cast<T>(rng.uniform(-1, 1));
                        for (auto& x : a) x = static_cast<T>(rng.uniform(-1, 1));
                        for (std::size_t p = 0; p < k; ++p) {
                            rows[p] = static_cast<std::ptrdiff_t>((p * 7) % (2 * n + k + 1));
                            for (std::size_t j = 0; j < n; ++j) b[p * n + j] = src[static_cast<std::size_t>(rows[p]) + j];
                        }
                        for (std::size_t e = 0; e < m * n; ++e) c1[e] = c2[e] = static_cast<T>(rng.uniform(-1, 1));
                        tapir::simd::gemm<T>(false, false, m, n, k, T(1.5), a.data(), k, b.data(), n, T(beta), c1.data(), n);
                        tapir::simd::gemm_rows<T>(m, n, k, T(1.5), a.data(), k, src.data(), rows.data(), T(beta), c2.data(), n);
                        CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(T)) == 0);
                        // C (m x n rows) = A' B'^T with A' = a read as m x (k') rows and B' rows at the offsets:
                        // here k' = n' values per dot, m rows of A' (lda k), k rows of B' (the offsets).
                        const std::size_t len = std::min(n, k);
                        std::vector<T> d(m * k);
                        for (std::size_t e = 0; e < m * k; ++e) d[e] = static_cast<T>(rng.uniform(-1, 1));
                        std::vector<T> d0 = d;
                        tapir::simd::gemm_rows_nt<T>(m, k, len, T(2), a.data(), k, src.data(), rows.data(), T(beta), d.data(), k);
                        double worst = 0;
                        for (std::size_t r = 0; r < m; ++r)
                            for (std::size_t p = 0; p < k; ++p) {
                                long double s = 0;
                                for (std::size_t j = 0; j < len; ++j)
                                    s += static_cast<long double>(a[r * k + j]) * src[static_cast<std::size_t>(rows[p]) + j];
                                const long double want = 2 * s + static_cast<long double>(beta) * d0[r * k + p];
                                worst = std::max(worst, static_cast<double>(std::fabs(want - d[r * k + p])));
                            }
                        CHECK(worst < 64 * static_cast<double>(len + 2) * std::numeric_limits<T>::epsilon());
                    }
    }
    CHECK_THROWS_WITH_AS(tapir::simd::gemm_rows<float>(2, 2, 2, 1.0f, nullptr, 2, nullptr, nullptr, 0.0f, nullptr, 2),
                         doctest::Contains("null matrix pointer"), tapir::value_error);
    float a[4] = {1, 2, 3, 4}, c[4] = {};
    CHECK_THROWS_WITH_AS(tapir::simd::gemm_rows_nt<float>(2, 2, 2, 1.0f, a, 2, a, nullptr, 0.0f, c, 2),
                         doctest::Contains("null matrix pointer"), tapir::value_error);
}
