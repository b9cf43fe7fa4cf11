// The persistent pool behind threaded GEMM: every part once, part p always on the same worker
// (threads are not started per call), nested and concurrent calls, the caller's flush-to-zero
// mode in every part, no heap allocation per call.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

#include <tapir/simd/fp_mode.hpp>
#include <tapir/simd/gemm.hpp>
#include <tapir/simd/thread_pool.hpp>

#include "support/alloc_counter.hpp"

using tapir::simd::parallel_run;

TEST_CASE("parallel_run runs every part once, part 0 on the caller and part p on the same worker every call") {
    constexpr std::size_t parts = 4;
    std::array<std::thread::id, parts> first{};
    for (int call = 0; call < 200; ++call) {
        std::array<std::atomic<int>, parts> runs{};
        std::array<std::thread::id, parts> who{};
        parallel_run(parts, [&](std::size_t p) {
            runs[p].fetch_add(1);
            who[p] = std::this_thread::get_id();
        });
        for (std::size_t p = 0; p < parts; ++p) REQUIRE(runs[p].load() == 1);
        REQUIRE((who[0] == std::this_thread::get_id()));
        for (std::size_t p = 1; p < parts; ++p) REQUIRE((who[p] != who[0]));
        if (call == 0) first = who;
        REQUIRE((who == first));  // the same threads: started once, reused
    }
    // Fewer parts later: the extra workers sit out; one part runs on the caller alone.
    std::atomic<int> n{0};
    parallel_run(2, [&](std::size_t) { n.fetch_add(1); });
    CHECK(n.load() == 2);
    std::thread::id only;
    parallel_run(1, [&](std::size_t) { only = std::this_thread::get_id(); });
    CHECK((only == std::this_thread::get_id()));
    parallel_run(0, [&](std::size_t) { n.fetch_add(100); });
    CHECK(n.load() == 2);
}

TEST_CASE("parallel_run: a call inside a part, and calls from two threads at once, run every part") {
    std::atomic<int> inner{0};
    parallel_run(3, [&](std::size_t) { parallel_run(3, [&](std::size_t) { inner.fetch_add(1); }); });
    CHECK(inner.load() == 9);

    std::atomic<long> sum{0};
    auto user = [&](long base) {
        for (int i = 0; i < 100; ++i) parallel_run(2, [&](std::size_t p) { sum.fetch_add(base + static_cast<long>(p)); });
    };
    std::thread a(user, 10), b(user, 1000);
    a.join();
    b.join();
    CHECK(sum.load() == 100 * (10 + 11) + 100 * (1000 + 1001));
}

TEST_CASE("parallel_run: every part runs in the caller's flush-to-zero mode") {
    if (!tapir::simd::can_flush_denormals()) return;
    std::array<bool, 3> flushed{};
    parallel_run(3, [&](std::size_t p) { flushed[p] = tapir::simd::denormals_flushed(); });
    CHECK((flushed == std::array<bool, 3>{false, false, false}));
    {
        const tapir::simd::FlushDenormals guard;
        parallel_run(3, [&](std::size_t p) { flushed[p] = tapir::simd::denormals_flushed(); });
        CHECK((flushed == std::array<bool, 3>{true, true, true}));
    }
    parallel_run(3, [&](std::size_t p) { flushed[p] = tapir::simd::denormals_flushed(); });
    CHECK((flushed == std::array<bool, 3>{false, false, false}));
}

TEST_CASE("threaded gemm allocates nothing per call once the pool has started") {
    const std::size_t saved = tapir::simd::set_gemm_parallel_threshold(1000);
    tapir::simd::set_num_threads(2);
    const std::size_t n = 256;
    std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
    tapir::simd::gemm<float>(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);  // warm-up
    long long allocs = -1;
    {
        tapir_test::AllocationScope scope;
        for (int i = 0; i < 20; ++i)
            tapir::simd::gemm<float>(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
        allocs = scope.count();
    }
    tapir::simd::set_num_threads(1);
    tapir::simd::set_gemm_parallel_threshold(saved);
    CHECK(allocs == 0);
    CHECK(c[0] == doctest::Approx(0.125 * 256));
    CHECK(c[n * n - 1] == c[0]);
}
