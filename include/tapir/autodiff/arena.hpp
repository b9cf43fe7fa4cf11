#pragma once
/// Bump allocator for a tape's intermediate tensors.
///
/// Blocks are kept across reset(), so a step that requests the same sizes as the step before
/// is served from the same blocks and touches the heap not at all. Owned by one tape; not movable.

#include <cstddef>
#include <new>
#include <vector>

#include "../config.hpp"

namespace tapir {

class Arena {
public:
    static constexpr std::size_t alignment = 64;

    Arena() = default;
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;
    ~Arena() { release(); }

    void* allocate(std::size_t bytes) {
        bytes = (bytes + alignment - 1) & ~(alignment - 1);
        if (TAPIR_LIKELY(cur_ < blocks_.size() && off_ + bytes <= blocks_[cur_].capacity)) {
            void* p = blocks_[cur_].data + off_;
            off_ += bytes;
            return p;
        }
        return allocate_slow(bytes);
    }

    template <class T>
    T* allocate_array(std::size_t n) { return static_cast<T*>(allocate(n * sizeof(T) + (n == 0 ? 1 : 0))); }

    /// Forget every allocation but keep the memory.
    void reset() noexcept {
        cur_ = 0;
        off_ = 0;
    }

    std::size_t capacity() const noexcept {
        std::size_t c = 0;
        for (const auto& b : blocks_) c += b.capacity;
        return c;
    }
    std::size_t blocks() const noexcept { return blocks_.size(); }

private:
    struct Block {
        unsigned char* data;
        std::size_t capacity;
    };

    TAPIR_NOINLINE void* allocate_slow(std::size_t bytes) {
        // Move on to the next kept block that fits; the same sequence of requests takes the same path.
        while (cur_ + 1 < blocks_.size()) {
            ++cur_;
            off_ = 0;
            if (bytes <= blocks_[cur_].capacity) {
                off_ = bytes;
                return blocks_[cur_].data;
            }
        }
        std::size_t cap = blocks_.empty() ? std::size_t(1) << 16 : blocks_.back().capacity * 2;
        if (cap < bytes) cap = bytes;
        auto* p = static_cast<unsigned char*>(::operator new(cap, std::align_val_t(alignment)));
        blocks_.push_back(Block{p, cap});
        cur_ = blocks_.size() - 1;
        off_ = bytes;
        return p;
    }

    void release() noexcept {
        for (auto& b : blocks_) ::operator delete(b.data, std::align_val_t(alignment));
        blocks_.clear();
        cur_ = off_ = 0;
    }

    std::vector<Block> blocks_;
    std::size_t cur_ = 0;
    std::size_t off_ = 0;
};

} // namespace tapir
