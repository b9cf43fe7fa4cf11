#pragma once
/// Dense row-major tensors with 64-byte aligned storage and value semantics.

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <new>
#include <ostream>
#include <type_traits>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "shape.hpp"

namespace tapir {

namespace detail {
constexpr std::size_t tensor_alignment = 64;

template <class T>
T* aligned_alloc_array(std::size_t n) {
    if (n == 0) return nullptr;
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(tensor_alignment)));
}
template <class T>
void aligned_free_array(T* p) noexcept {
    if (p) ::operator delete(p, std::align_val_t(tensor_alignment));
}
} // namespace detail

template <class T>
class Tensor {
    static_assert(std::is_floating_point<T>::value, "tapir::Tensor holds float or double");

public:
    using value_type = T;

    Tensor() = default;
    explicit Tensor(const Shape& shape) : shape_(shape) { allocate(shape.numel()); std::fill_n(data_, size_, T(0)); }
    Tensor(const Shape& shape, T fill) : shape_(shape) { allocate(shape.numel()); std::fill_n(data_, size_, fill); }
    Tensor(const Shape& shape, std::initializer_list<T> values) : Tensor(shape, values.begin(), values.size()) {}
    Tensor(const Shape& shape, const std::vector<T>& values) : Tensor(shape, values.data(), values.size()) {}
    Tensor(const Shape& shape, const T* values, std::size_t n) : shape_(shape) {
        if (n != shape.numel())
            throw shape_error("Tensor: " + std::to_string(n) + " values given for shape " + shape.str() + " (" +
                              std::to_string(shape.numel()) + " elements)");
        allocate(n);
        if (n) std::memcpy(data_, values, n * sizeof(T));
    }

    static Tensor zeros(const Shape& s) { return Tensor(s); }
    static Tensor ones(const Shape& s) { return Tensor(s, T(1)); }
    static Tensor full(const Shape& s, T v) { return Tensor(s, v); }
    static Tensor scalar(T v) { return Tensor(Shape{}, v); }

    Tensor(const Tensor& o) : shape_(o.shape_) {
        allocate(o.size_);
        if (size_) std::memcpy(data_, o.data_, size_ * sizeof(T));
    }
    Tensor(Tensor&& o) noexcept : shape_(o.shape_), data_(o.data_), size_(o.size_), capacity_(o.capacity_) {
        o.data_ = nullptr;
        o.size_ = o.capacity_ = 0;
        o.shape_ = Shape{};
    }
    Tensor& operator=(const Tensor& o) {
        if (this != &o) {
            if (capacity_ < o.size_) {
                detail::aligned_free_array(data_);
                data_ = nullptr;
                capacity_ = 0;
                allocate(o.size_);
            }
            size_ = o.size_;
            shape_ = o.shape_;
            if (size_) std::memcpy(data_, o.data_, size_ * sizeof(T));
        }
        return *this;
    }
    Tensor& operator=(Tensor&& o) noexcept {
        if (this != &o) {
            detail::aligned_free_array(data_);
            shape_ = o.shape_;
            data_ = o.data_;
            size_ = o.size_;
            capacity_ = o.capacity_;
            o.data_ = nullptr;
            o.size_ = o.capacity_ = 0;
            o.shape_ = Shape{};
        }
        return *this;
    }
    ~Tensor() { detail::aligned_free_array(data_); }

    const Shape& shape() const noexcept { return shape_; }
    std::size_t rank() const noexcept { return shape_.rank(); }
    std::size_t dim(std::size_t i) const noexcept { return shape_[i]; }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    T* data() noexcept { return data_; }
    const T* data() const noexcept { return data_; }
    T* begin() noexcept { return data_; }
    T* end() noexcept { return data_ + size_; }
    const T* begin() const noexcept { return data_; }
    const T* end() const noexcept { return data_ + size_; }

    T& operator[](std::size_t i) noexcept { return data_[i]; }
    const T& operator[](std::size_t i) const noexcept { return data_[i]; }

    /// Multi-index access; the number of indices must equal the rank.
    template <class... I>
    T& operator()(I... idx) noexcept { return data_[offset(static_cast<std::size_t>(idx)...)]; }
    template <class... I>
    const T& operator()(I... idx) const noexcept { return data_[offset(static_cast<std::size_t>(idx)...)]; }

    /// Scalar value of a one-element tensor.
    T item() const {
        if (size_ != 1) throw shape_error("Tensor::item: tensor of shape " + shape_.str() + " is not a single value");
        return data_[0];
    }

    void fill(T v) noexcept { std::fill_n(data_, size_, v); }

    /// Same data, new shape with the same number of elements.
    Tensor& reshape_(const Shape& s) {
        if (s.numel() != size_) detail::throw_shape("Tensor::reshape", shape_, s, "element counts differ");
        shape_ = s;
        return *this;
    }
    Tensor reshaped(const Shape& s) const& {
        Tensor t(*this);
        t.reshape_(s);
        return t;
    }

    /// Changes the shape, reusing storage when it is large enough (contents unspecified).
    void resize(const Shape& s) {
        const std::size_t n = s.numel();
        if (n > capacity_) {
            detail::aligned_free_array(data_);
            data_ = nullptr;
            capacity_ = 0;
            allocate(n);
        }
        size_ = n;
        shape_ = s;
    }

    std::vector<T> to_vector() const { return std::vector<T>(data_, data_ + size_); }

    template <class U>
    Tensor<U> cast() const {
        Tensor<U> out(shape_);
        for (std::size_t i = 0; i < size_; ++i) out[i] = static_cast<U>(data_[i]);
        return out;
    }

private:
    void allocate(std::size_t n) {
        data_ = detail::aligned_alloc_array<T>(n);
        size_ = n;
        capacity_ = n;
    }
    std::size_t offset() const noexcept { return 0; }
    template <class... I>
    std::size_t offset(std::size_t i0, I... rest) const noexcept {
        std::size_t idx[] = {i0, static_cast<std::size_t>(rest)...};
        std::size_t off = 0;
        for (std::size_t k = 0; k < sizeof...(I) + 1; ++k) off = off * shape_[k] + idx[k];
        return off;
    }

    Shape shape_{};
    T* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t capacity_ = 0;
};

template <class T>
std::ostream& operator<<(std::ostream& os, const Tensor<T>& t) {
    os << "Tensor" << t.shape().str() << " [";
    const std::size_t n = t.size() < 16 ? t.size() : 16;
    for (std::size_t i = 0; i < n; ++i) os << (i ? ", " : "") << t[i];
    if (n < t.size()) os << ", ...";
    return os << "]";
}

} // namespace tapir
