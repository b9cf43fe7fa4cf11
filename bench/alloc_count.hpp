#pragma once
// Counting replacement of the global operator new, for the benchmarks that report heap allocations
// per step. Include it in exactly one translation unit of a program (each bench is one file): it
// defines the replaceable allocation functions, which must not be inline.
#include <atomic>
#include <cstdlib>
#include <new>

namespace bench {
inline std::atomic<long long> g_heap_allocations{0};

inline void* counted_malloc(std::size_t n) {
    g_heap_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
inline void* counted_aligned(std::size_t n, std::align_val_t al) {
    g_heap_allocations.fetch_add(1, std::memory_order_relaxed);
    const std::size_t a = static_cast<std::size_t>(al) < sizeof(void*) ? sizeof(void*) : static_cast<std::size_t>(al);
    void* p = nullptr;
    if (posix_memalign(&p, a, n ? n : 1) != 0) throw std::bad_alloc();
    return p;
}

/// Heap allocations made between construction and count().
class AllocationScope {
public:
    AllocationScope() : start_(g_heap_allocations.load()) {}
    long long count() const { return g_heap_allocations.load() - start_; }

private:
    long long start_;
};
} // namespace bench

void* operator new(std::size_t n) { return bench::counted_malloc(n); }
void* operator new[](std::size_t n) { return bench::counted_malloc(n); }
void* operator new(std::size_t n, std::align_val_t al) { return bench::counted_aligned(n, al); }
void* operator new[](std::size_t n, std::align_val_t al) { return bench::counted_aligned(n, al); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return bench::counted_malloc(n);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return ::operator new(n, t); }
void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
    try {
        return bench::counted_aligned(n, al);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t& t) noexcept { return ::operator new(n, al, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
