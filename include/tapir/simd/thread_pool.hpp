#pragma once
/// The worker threads of simd's parallel kernels: started once (at the first parallel call, as
/// many as num_threads() asks), parked between calls, reused. Starting threads on every GEMM cost
/// 20-50 us a call, so two threads were slower than one below 512x512x512.
///
/// parallel_run(parts, fn) runs fn(0) on the calling thread and fn(1) ... fn(parts - 1) on workers
/// 1 ... parts - 1 (a static assignment: a part always runs on the same worker, so results never
/// depend on scheduling), and returns when all are done. Workers spin for a short while after a
/// part (back-to-back products of a training step find them awake), then sleep on a condition
/// variable. Each part runs in the caller's flush-to-zero mode. No allocation per call; one
/// region at a time: a call made while another region runs (from another thread, or from inside
/// a part) runs its parts serially on its own thread, with the same results.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "../config.hpp"
#include "fp_mode.hpp"

namespace tapir::simd {

namespace detail {

/// A spin-wait hint (PAUSE, YIELD), as a builtin or inline assembly: <immintrin.h> alone would
/// cost every file that includes tapir ~0.7 s of compile time.
inline void cpu_relax() noexcept {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/// Spins up to `limit` while pred() is false; true when pred() became true.
template <class Pred>
bool spin_until(Pred pred, std::chrono::microseconds limit) noexcept {
    const auto t0 = std::chrono::steady_clock::now();
    for (unsigned i = 1;; ++i) {
        if (pred()) return true;
        cpu_relax();
        if ((i & 63) == 0 && std::chrono::steady_clock::now() - t0 > limit) return false;
    }
}

/// Whether this thread is running a part of a parallel region; see in_parallel_region().
inline bool& in_part_flag() noexcept {
    thread_local bool on = false;
    return on;
}

/// Marks the running thread as inside a part for its lifetime (nests: restores the previous state).
struct part_scope {
    bool prev = in_part_flag();
    part_scope() noexcept { in_part_flag() = true; }
    ~part_scope() { in_part_flag() = prev; }
    part_scope(const part_scope&) = delete;
    part_scope& operator=(const part_scope&) = delete;
};

class thread_pool {
public:
    using part_fn = void (*)(const void* ctx, std::size_t part);

    static thread_pool& instance() {
        static thread_pool pool;
        return pool;
    }
    thread_pool() = default;
    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;
    ~thread_pool() {
        {
            std::lock_guard<std::mutex> lk(m_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& w : workers_) w.join();
    }

    /// Runs fn(ctx, p) for p in [0, parts); see the header comment.
    void run(std::size_t parts, part_fn fn, const void* ctx) {
        struct region {
            std::atomic<bool>& busy;
            const bool mine = !busy.exchange(true, std::memory_order_acquire);
            ~region() {
                if (mine) busy.store(false, std::memory_order_release);
            }
        } r{busy_};
        const part_scope scope;
        if (parts < 2 || !r.mine || !start_workers(parts - 1)) {
            for (std::size_t p = 0; p < parts; ++p) fn(ctx, p);
            return;
        }
        {
            std::lock_guard<std::mutex> lk(m_);
            job_ = job{fn, ctx, parts, read_fp_mode()};
            remaining_.store(parts - 1, std::memory_order_relaxed);
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        fn(ctx, 0);
        if (!spin_until([this] { return remaining_.load(std::memory_order_acquire) == 0; }, spin_)) {
            std::unique_lock<std::mutex> lk(m_);
            done_.wait(lk, [this] { return remaining_.load(std::memory_order_acquire) == 0; });
        }
    }

    /// Workers started so far (they stay until the program ends).
    std::size_t workers() const {
        std::lock_guard<std::mutex> lk(m_);
        return workers_.size();
    }

private:
    struct job {
        part_fn fn = nullptr;
        const void* ctx = nullptr;
        std::size_t parts = 0;
        fp_mode_word fp_mode = 0;
    };

    /// At least n workers; false when the system refuses a thread (the caller then runs alone).
    bool start_workers(std::size_t n) {
        std::lock_guard<std::mutex> lk(m_);
#if TAPIR_HAS_EXCEPTIONS
        try {
#endif
            if (workers_.capacity() < n) workers_.reserve(n);
            while (workers_.size() < n) {
                const std::size_t index = workers_.size() + 1;
                const std::uint64_t now = generation_.load(std::memory_order_relaxed);
                workers_.emplace_back([this, index, now] { work(index, now); });
            }
#if TAPIR_HAS_EXCEPTIONS
        } catch (...) {
            return workers_.size() >= n;
        }
#endif
        return true;
    }

    void work(std::size_t index, std::uint64_t seen) {
        for (;;) {
            spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; }, spin_);
            job j;
            {
                std::unique_lock<std::mutex> lk(m_);
                wake_.wait(lk, [&] { return stop_ || generation_.load(std::memory_order_relaxed) != seen; });
                if (stop_) return;
                seen = generation_.load(std::memory_order_relaxed);
                j = job_;
            }
            if (index >= j.parts) continue;  // this region needs fewer workers
            if (read_fp_mode() != j.fp_mode) write_fp_mode(j.fp_mode);
            {
                const part_scope scope;
                j.fn(j.ctx, index);
            }
            if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lk(m_);
                done_.notify_one();
            }
        }
    }

    static constexpr std::chrono::microseconds spin_{50};

    std::atomic<bool> busy_{false};  ///< one parallel region at a time (nested calls run serially)
    mutable std::mutex m_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> workers_;
    job job_;
    std::atomic<std::uint64_t> generation_{0};
    std::atomic<std::size_t> remaining_{0};
    bool stop_ = false;
};

} // namespace detail

/// True while this thread runs a part of parallel_run (on a worker, or part 0 on the caller):
/// kernels that could split their own work over the pool (gemm above gemm_parallel_threshold())
/// then run on this thread alone, so data-parallel workers (nn/data_parallel.hpp) never nest
/// regions and their results do not depend on which thread got the pool first.
inline bool in_parallel_region() noexcept { return detail::in_part_flag(); }

/// Runs f(p) for p in [0, parts): p = 0 on the calling thread, the others on the pool's workers
/// (worker p always runs part p). Returns when every part is done. F must not throw.
template <class F>
void parallel_run(std::size_t parts, const F& f) {
    detail::thread_pool::instance().run(
        parts, [](const void* ctx, std::size_t p) { (*static_cast<const F*>(ctx))(p); }, &f);
}

} // namespace tapir::simd
