#pragma once
/// Parameters: trainable tensors that live outside the tape, across steps.

#include <string>
#include <utility>

#include "../tensor/tensor.hpp"

namespace tapir {

/// A trainable tensor with its gradient buffer; lives outside the tape, across steps.
template <class T>
struct Parameter {
    std::string name;
    Tensor<T> value;
    Tensor<T> grad;
    bool requires_grad = true;

    Parameter() = default;
    Parameter(std::string n, Tensor<T> v) : name(std::move(n)), value(std::move(v)), grad(value.shape()) {}
    const Shape& shape() const noexcept { return value.shape(); }
    std::size_t size() const noexcept { return value.size(); }
    void zero_grad() noexcept { grad.fill(T(0)); }
};

} // namespace tapir
