// GEMM throughput of tapir::simd::gemm against OpenBLAS (cblas) and Eigen, side by side, one thread or N,
// plus the fraction of this core's measured FMA peak. Medians over repeats; tapir and OpenBLAS samples alternate.
//
// Build (tapir without -march; peers optional):
//   g++ -std=c++17 -O2 -DNDEBUG -I include -isystem /usr/include/eigen3 -DTAPIR_BENCH_OPENBLAS
//       bench/bench_gemm.cpp -o /tmp/bench_gemm -lopenblas -pthread
// Run:
//   OPENBLAS_CORETYPE=SkylakeX /tmp/bench_gemm [--double] [--isa=avx2] [--threads N]
// With --threads N both tapir and OpenBLAS use N threads, and each one's speed-up over its own
// one-thread run is printed.
// OpenBLAS is used only when TAPIR_BENCH_OPENBLAS is defined (it must be linked); Eigen whenever its
// headers are on the include path.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <tapir/simd/arch.hpp>
#include <tapir/simd/gemm.hpp>

#if TAPIR_SIMD_X86
#include <immintrin.h> // the peak-FMA probe below uses intrinsics; tapir's headers do not include it
#endif

#if defined(TAPIR_BENCH_OPENBLAS) && __has_include(<cblas.h>)
#include <cblas.h>
#define BENCH_HAVE_OPENBLAS 1
#else
#define BENCH_HAVE_OPENBLAS 0
#endif

#if __has_include(<Eigen/Core>)
#include <Eigen/Core>
#define BENCH_HAVE_EIGEN 1
#elif __has_include(<eigen3/Eigen/Core>)
#include <eigen3/Eigen/Core>
#define BENCH_HAVE_EIGEN 1
#else
#define BENCH_HAVE_EIGEN 0
#endif

namespace {

/// Single-threaded runs are timed in thread CPU time, so a shared, loaded machine (other jobs
/// preempting this one) does not count against any library; multi-threaded runs use wall time.
bool g_wall_clock = false;

struct clock_type {
    using time_point = double;
    static double now() {
        if (g_wall_clock)
            return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    }
};

double seconds_since(double t0) { return clock_type::now() - t0; }

/// Calls of f per sample so that a sample lasts >= ~20 ms (after a warm-up call: caches, packing
/// buffers, page faults).
template <class F> int batch_for(F&& f) {
    f();
    int batch = 1;
    for (;;) {
        const auto t0 = clock_type::now();
        for (int i = 0; i < batch; ++i) f();
        const double s = seconds_since(t0);
        if (s > 0.02 || batch > (1 << 20)) break;
        batch *= 2;
    }
    return batch;
}

template <class F> double sample_seconds(F&& f, int batch) {
    const auto t0 = clock_type::now();
    for (int i = 0; i < batch; ++i) f();
    return seconds_since(t0) / batch;
}

double median_of(std::vector<double> t) {
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

/// Median seconds per call of f over batched samples.
template <class F> double median_seconds(F&& f, int samples = 9) {
    const int batch = batch_for(f);
    std::vector<double> t;
    for (int r = 0; r < samples; ++r) t.push_back(sample_seconds(f, batch));
    return median_of(t);
}

/// Medians for two contenders whose samples alternate (f, g, f, g, ...): on a shared machine the
/// load drifts during a run, and alternation lets both see the same drift, so their ratio is fair.
/// With threads (blocks = true) the two run in separate blocks after a pause instead: OpenBLAS's
/// idle workers spin for about 0.1 s after each call (OPENBLAS_THREAD_TIMEOUT), and on a 2-core
/// machine that took the second core from the other library's worker (tapir measured 0.65x its
/// one-thread speed at 256^3 when alternating, 1.86x alone).
template <class F, class G>
std::pair<double, double> median_seconds_paired(F&& f, G&& g, int samples = 15, bool blocks = false) {
    const int bf = batch_for(f), bg = batch_for(g);
    std::vector<double> tf, tg;
    if (blocks) {
        const auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(300)); };
        pause();
        for (int r = 0; r < samples; ++r) tf.push_back(sample_seconds(f, bf));
        pause();
        for (int r = 0; r < samples; ++r) tg.push_back(sample_seconds(g, bg));
        return {median_of(tf), median_of(tg)};
    }
    for (int r = 0; r < samples; ++r) {
        tf.push_back(sample_seconds(f, bf));
        tg.push_back(sample_seconds(g, bg));
    }
    return {median_of(tf), median_of(tg)};
}

// ---- Single-core peak: independent FMA chains, enough to cover latency x pipes. -----------------
#if TAPIR_SIMD_X86
/// Ten independent FMA chains per step (>= latency x pipes on current cores), kept in registers.
#define BENCH_FMA10(F, a, b)                                                                                         \
    x0 = F(x0, a, b); x1 = F(x1, a, b); x2 = F(x2, a, b); x3 = F(x3, a, b); x4 = F(x4, a, b);                     \
    x5 = F(x5, a, b); x6 = F(x6, a, b); x7 = F(x7, a, b); x8 = F(x8, a, b); x9 = F(x9, a, b)
TAPIR_TARGET_AVX512 double fma_peak_avx512(long iters, bool dbl) {
    __m512 x0 = _mm512_set1_ps(0.1f), x1 = _mm512_set1_ps(0.2f), x2 = _mm512_set1_ps(0.3f), x3 = _mm512_set1_ps(0.4f),
           x4 = _mm512_set1_ps(0.5f), x5 = _mm512_set1_ps(0.6f), x6 = _mm512_set1_ps(0.7f), x7 = _mm512_set1_ps(0.8f),
           x8 = _mm512_set1_ps(0.9f), x9 = _mm512_set1_ps(1.0f);
    __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    __asm__ volatile("" : "+v"(a), "+v"(b));
    const auto t0 = clock_type::now();
    for (long it = 0; it < iters; ++it) {
        BENCH_FMA10(_mm512_fmadd_ps, a, b);
        BENCH_FMA10(_mm512_fmadd_ps, a, b);
    }
    const double s = seconds_since(t0);
    __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)),
                               _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7)));
    sum = _mm512_add_ps(sum, _mm512_add_ps(x8, x9));
    alignas(64) float t[16];
    _mm512_store_ps(t, sum);
    if (t[0] == 12345.0f) std::puts("");
    return 20.0 * 16 * 2 * static_cast<double>(iters) / s / (dbl ? 2 : 1);
}
TAPIR_TARGET_AVX2 double fma_peak_avx2(long iters, bool dbl) {
    __m256 x0 = _mm256_set1_ps(0.1f), x1 = _mm256_set1_ps(0.2f), x2 = _mm256_set1_ps(0.3f), x3 = _mm256_set1_ps(0.4f),
           x4 = _mm256_set1_ps(0.5f), x5 = _mm256_set1_ps(0.6f), x6 = _mm256_set1_ps(0.7f), x7 = _mm256_set1_ps(0.8f),
           x8 = _mm256_set1_ps(0.9f), x9 = _mm256_set1_ps(1.0f);
    __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    __asm__ volatile("" : "+x"(a), "+x"(b));
    const auto t0 = clock_type::now();
    for (long it = 0; it < iters; ++it) {
        BENCH_FMA10(_mm256_fmadd_ps, a, b);
        BENCH_FMA10(_mm256_fmadd_ps, a, b);
    }
    const double s = seconds_since(t0);
    __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)),
                               _mm256_add_ps(_mm256_add_ps(x4, x5), _mm256_add_ps(x6, x7)));
    sum = _mm256_add_ps(sum, _mm256_add_ps(x8, x9));
    alignas(32) float t[8];
    _mm256_store_ps(t, sum);
    if (t[0] == 12345.0f) std::puts("");
    return 20.0 * 8 * 2 * static_cast<double>(iters) / s / (dbl ? 2 : 1);
}
#undef BENCH_FMA10
#endif

/// Best of several runs of the FMA loop for the active ISA, in GFLOP/s.
double measured_peak(bool dbl) {
    double best = 0;
    for (int r = 0; r < 20; ++r) {
        double g = 0;
#if TAPIR_SIMD_X86
        if (tapir::simd::active_isa() == tapir::simd::isa::avx512) g = fma_peak_avx512(2000000, dbl);
        else if (tapir::simd::active_isa() == tapir::simd::isa::avx2) g = fma_peak_avx2(2000000, dbl);
#endif
        best = std::max(best, g / 1e9);
    }
    return best;
}

template <class T> struct Problem {
    std::size_t m, n, k;
    std::vector<T> a, b, c;
    Problem(std::size_t m_, std::size_t n_, std::size_t k_) : m(m_), n(n_), k(k_), a(m * k), b(k * n), c(m * n) {
        unsigned s = 1;
        auto rnd = [&s] {
            s = s * 1664525u + 1013904223u;
            return static_cast<T>((s >> 8) & 0xFFFF) / T(65536) - T(0.5);
        };
        for (auto& x : a) x = rnd();
        for (auto& x : b) x = rnd();
        for (auto& x : c) x = rnd();
    }
};

template <class T> void run_tapir(Problem<T>& p) {
    tapir::simd::gemm<T>(false, false, p.m, p.n, p.k, T(1), p.a.data(), p.k, p.b.data(), p.n, T(0), p.c.data(), p.n);
}

#if BENCH_HAVE_OPENBLAS
void run_openblas(Problem<float>& p) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(p.m), static_cast<int>(p.n),
                static_cast<int>(p.k), 1.0f, p.a.data(), static_cast<int>(p.k), p.b.data(), static_cast<int>(p.n),
                0.0f, p.c.data(), static_cast<int>(p.n));
}
void run_openblas(Problem<double>& p) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(p.m), static_cast<int>(p.n),
                static_cast<int>(p.k), 1.0, p.a.data(), static_cast<int>(p.k), p.b.data(), static_cast<int>(p.n), 0.0,
                p.c.data(), static_cast<int>(p.n));
}
#endif

#if BENCH_HAVE_EIGEN
template <class T> void run_eigen(Problem<T>& p) {
    using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<const M> A(p.a.data(), static_cast<Eigen::Index>(p.m), static_cast<Eigen::Index>(p.k));
    Eigen::Map<const M> B(p.b.data(), static_cast<Eigen::Index>(p.k), static_cast<Eigen::Index>(p.n));
    Eigen::Map<M> C(p.c.data(), static_cast<Eigen::Index>(p.m), static_cast<Eigen::Index>(p.n));
    C.noalias() = A * B;
}
#endif

template <class T> void bench(unsigned threads) {
    const bool dbl = sizeof(T) == 8;
    const double peak = measured_peak(dbl);
    std::printf("tapir gemm<%s>, ISA %s, %u thread(s); measured single-core %s FMA peak: %.1f GFLOP/s\n",
                dbl ? "double" : "float", tapir::simd::isa_name(tapir::simd::active_isa()), threads,
                dbl ? "fp64" : "fp32", peak);
#if BENCH_HAVE_OPENBLAS
    openblas_set_num_threads(static_cast<int>(threads));  // the same thread count as tapir
    std::printf("OpenBLAS %s, core %s, %d thread(s)\n", openblas_get_config(), openblas_get_corename(),
                openblas_get_num_threads());
#else
    std::printf("OpenBLAS: not built in (define TAPIR_BENCH_OPENBLAS and link -lopenblas)\n");
#endif
#if BENCH_HAVE_EIGEN
    std::printf("Eigen %d.%d.%d (SIMD: %s)\n", EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION,
                Eigen::SimdInstructionSetsInUse());
#else
    std::printf("Eigen: headers not found\n");
#endif
    std::printf("\n%-16s %10s %10s %10s %12s %10s", "M x N x K", "tapir", "OpenBLAS", "Eigen", "tapir/OBLAS",
                "tapir/peak");
    // With threads: each library's speed-up over its own one-thread run (paired the same way).
    if (threads > 1) std::printf(" %12s %12s", "tapir xN/x1", "OBLAS xN/x1");
    std::printf("\n");
    struct Shape {
        std::size_t m, n, k;
    };
    std::vector<Shape> shapes;
    for (std::size_t s : {32u, 64u, 128u, 256u, 384u, 512u, 768u, 1024u}) shapes.push_back({s, s, s});
    shapes.push_back({128, 64, 64});
    shapes.push_back({512, 64, 64});
    shapes.push_back({128, 512, 1024});
    tapir::simd::set_num_threads(threads);
    g_wall_clock = threads > 1;
    for (const Shape& s : shapes) {
        Problem<T> p(s.m, s.n, s.k);
        const double flops = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k);
        double g_tapir = 0, g_oblas = 0, g_eigen = 0, max_diff = 0;
#if BENCH_HAVE_OPENBLAS
        const auto both = median_seconds_paired([&] { run_tapir(p); }, [&] { run_openblas(p); }, 15, threads > 1);
        g_tapir = flops / both.first / 1e9;
        g_oblas = flops / both.second / 1e9;
        std::vector<T> ref = p.c;
        run_tapir(p);
        for (std::size_t i = 0; i < ref.size(); ++i)
            max_diff = std::max(max_diff, static_cast<double>(std::fabs(ref[i] - p.c[i])));
#else
        g_tapir = flops / median_seconds([&] { run_tapir(p); }) / 1e9;
#endif
#if BENCH_HAVE_EIGEN
        g_eigen = flops / median_seconds([&] { run_eigen(p); }) / 1e9;
#endif
        double s_tapir = 0, s_oblas = 0;
        if (threads > 1) {
            tapir::simd::set_num_threads(1);
#if BENCH_HAVE_OPENBLAS
            openblas_set_num_threads(1);
            const auto one = median_seconds_paired([&] { run_tapir(p); }, [&] { run_openblas(p); }, 15, true);
            s_oblas = g_oblas / (flops / one.second / 1e9);
            openblas_set_num_threads(static_cast<int>(threads));
            s_tapir = g_tapir / (flops / one.first / 1e9);
#else
            s_tapir = g_tapir / (flops / median_seconds([&] { run_tapir(p); }) / 1e9);
#endif
            tapir::simd::set_num_threads(threads);
        }
        char name[64];
        std::snprintf(name, sizeof name, "%zux%zux%zu", s.m, s.n, s.k);
        std::printf("%-16s %10.1f %10.1f %10.1f %11.0f%% %9.0f%%", name, g_tapir, g_oblas, g_eigen,
                    g_oblas > 0 ? 100 * g_tapir / g_oblas : 0.0, peak > 0 ? 100 * g_tapir / peak : 0.0);
        if (threads > 1) std::printf(" %11.2fx %11.2fx", s_tapir, s_oblas);
        std::printf("%s\n", max_diff > 1e-2 ? "  (MISMATCH vs OpenBLAS)" : "");
        std::fflush(stdout);
    }
}

} // namespace

int main(int argc, char** argv) {
    bool dbl = false, peak_only = false;
    unsigned threads = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--double") {
            dbl = true;
        } else if (a.rfind("--isa=", 0) == 0) {
            const std::string v = a.substr(6);
            for (auto i_ : {tapir::simd::isa::scalar, tapir::simd::isa::avx2, tapir::simd::isa::avx512,
                            tapir::simd::isa::neon})
                if (v == tapir::simd::isa_name(i_)) tapir::simd::set_active_isa(i_);
        } else if (a.rfind("--threads=", 0) == 0) {
            threads = static_cast<unsigned>(std::strtoul(a.c_str() + 10, nullptr, 10));
        } else if (a == "--peak") {
            peak_only = true;
        } else if (a == "--threads" && i + 1 < argc) {
            threads = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
        } else {
            std::fprintf(stderr, "usage: %s [--double] [--isa=scalar|avx2|avx512|neon] [--threads N] [--peak]\n", argv[0]);
            return 2;
        }
    }
    if (peak_only) {  // the machine line of bench/run_all.sh
        std::printf("measured single-core FMA peak (%s): fp32 %.1f GFLOP/s, fp64 %.1f GFLOP/s\n",
                    tapir::simd::isa_name(tapir::simd::active_isa()), measured_peak(false), measured_peak(true));
        return 0;
    }
    if (dbl)
        bench<double>(threads);
    else
        bench<float>(threads);
    return 0;
}
