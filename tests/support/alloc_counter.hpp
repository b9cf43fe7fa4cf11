#pragma once
// Heap allocations seen by the replaced global operator new in tests/main.cpp.
#include <atomic>

namespace tapir_test {
extern std::atomic<long long> g_allocations;

/// Counts the allocations made between construction and count().
class AllocationScope {
public:
    AllocationScope() : start_(g_allocations.load()) {}
    long long count() const { return g_allocations.load() - start_; }

private:
    long long start_;
};
} // namespace tapir_test
