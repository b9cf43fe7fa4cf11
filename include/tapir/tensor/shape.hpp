#pragma once
/// Shapes of rank 0 to 4, stored inline so a shape never allocates.

#include <array>
#include <cstddef>
#include <initializer_list>
#include <string>

#include "../error.hpp"

namespace tapir {

constexpr std::size_t max_rank = 4;

class Shape {
public:
    Shape() = default;
    Shape(std::initializer_list<std::size_t> dims) {
        if (dims.size() > max_rank) throw shape_error("Shape: rank " + std::to_string(dims.size()) + " exceeds the maximum rank 4");
        for (std::size_t d : dims) d_[rank_++] = d;
    }
    template <class It>
    static Shape from_range(It first, It last) {
        Shape s;
        for (; first != last; ++first) {
            if (s.rank_ == max_rank) throw shape_error("Shape: rank exceeds the maximum rank 4");
            s.d_[s.rank_++] = static_cast<std::size_t>(*first);
        }
        return s;
    }

    std::size_t rank() const noexcept { return rank_; }
    std::size_t operator[](std::size_t i) const noexcept { return d_[i]; }
    std::size_t& operator[](std::size_t i) noexcept { return d_[i]; }
    /// Unused trailing dimensions are stored as 1, so this is branch-free.
    std::size_t numel() const noexcept { return d_[0] * d_[1] * d_[2] * d_[3]; }
    /// Rows and columns as seen by 2-D ops: a vector is one row, a scalar 1x1.
    std::size_t rows() const noexcept {
        std::size_t r = 1;
        for (std::size_t i = 0; i + 1 < rank_; ++i) r *= d_[i];
        return r;
    }
    std::size_t cols() const noexcept { return rank_ >= 1 ? d_[rank_ - 1] : 1; }

    void push_back(std::size_t d) {
        if (rank_ == max_rank) throw shape_error("Shape: rank exceeds the maximum rank 4");
        d_[rank_++] = d;
    }

    friend bool operator==(const Shape& a, const Shape& b) noexcept {
        return ((a.rank_ ^ b.rank_) | (a.d_[0] ^ b.d_[0]) | (a.d_[1] ^ b.d_[1]) | (a.d_[2] ^ b.d_[2]) | (a.d_[3] ^ b.d_[3])) == 0;
    }
    friend bool operator!=(const Shape& a, const Shape& b) noexcept { return !(a == b); }

    std::string str() const {
        std::string s = "(";
        for (std::size_t i = 0; i < rank_; ++i) {
            if (i) s += ", ";
            s += std::to_string(d_[i]);
        }
        if (rank_ == 1) s += ",";
        return s + ")";
    }

private:
    std::array<std::size_t, max_rank> d_{{1, 1, 1, 1}};
    std::size_t rank_ = 0;
};

namespace detail {
[[noreturn]] inline void throw_shape(const char* op, const Shape& a, const Shape& b, const char* why = "shapes do not match") {
    throw shape_error(std::string(op) + ": " + why + ": " + a.str() + " vs " + b.str());
}
} // namespace detail

/// Numpy-style broadcasting (dimensions aligned from the right, 1 stretches).
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
    const std::size_t r = a.rank() > b.rank() ? a.rank() : b.rank();
    Shape out;
    for (std::size_t i = 0; i < r; ++i) {
        const std::size_t ia = i + a.rank() >= r ? a[i + a.rank() - r] : 1;
        const std::size_t ib = i + b.rank() >= r ? b[i + b.rank() - r] : 1;
        if (ia != ib && ia != 1 && ib != 1) detail::throw_shape(op, a, b, "shapes cannot be broadcast");
        out.push_back(ia == 1 ? ib : ia);
    }
    return out;
}

} // namespace tapir
