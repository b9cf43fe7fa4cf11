#pragma once
/// Derivatives built on grad(): vector-Jacobian products (grad with grad_outputs), Jacobians,
/// Hessians and Hessian-vector products, as PyTorch's torch.autograd.grad and
/// torch.autograd.functional offer them, on the tape's values.

#include <cstddef>
#include <vector>

#include "backward.hpp"
#include "tape.hpp"

namespace tapir {

/// Gradients of sum_k <outputs[k], grad_outputs[k]> with respect to inputs (a vector-Jacobian
/// product): outputs may have any shape, grad_outputs[k] has the shape of outputs[k].
template <class T>
std::vector<Var<T>> grad(const std::vector<Var<T>>& outputs, const std::vector<Var<T>>& inputs, const std::vector<Var<T>>& grad_outputs,
                         bool create_graph = false, bool allow_unused = false) {
    if (grad_outputs.size() != outputs.size())
        throw value_error("grad: " + std::to_string(grad_outputs.size()) + " grad_outputs for " + std::to_string(outputs.size()) + " outputs");
    std::vector<Var<T>> result(inputs.size());
    detail::grad_into<T>(outputs.data(), outputs.size(), inputs.data(), inputs.size(), grad_outputs.data(), create_graph, allow_unused,
                         result.data());
    return result;
}
/// One output with its gradient, one input: the vector-Jacobian product <grad_output, d output / d input>.
template <class T>
Var<T> grad(const Var<T>& output, const Var<T>& input, const Var<T>& grad_output, bool create_graph = false, bool allow_unused = false) {
    Var<T> result;
    detail::grad_into<T>(&output, 1, &input, 1, &grad_output, create_graph, allow_unused, &result);
    return result;
}

/// d output / d input as an (output.size(), input.size()) matrix of flat indices, one backward
/// pass per output element. Elements the output does not depend on are zero.
template <class T>
Tensor<T> jacobian(const Var<T>& output, const Var<T>& input) {
    Tape<T>& t = output.tape();
    const std::size_t m = output.size(), n = input.size();
    Tensor<T> jac(Shape{m, n});
    Tensor<T> seed(output.shape());
    for (std::size_t i = 0; i < m; ++i) {
        seed.fill(T(0));
        seed[i] = T(1);
        const Var<T> row = grad(output, input, t.constant(seed), false, /*allow_unused=*/true);
        for (std::size_t j = 0; j < n; ++j) jac(i, j) = row[j];
    }
    return jac;
}

/// The Hessian of a single-valued output with respect to input, as an (input.size(),
/// input.size()) matrix: the Jacobian of the recorded gradient.
template <class T>
Tensor<T> hessian(const Var<T>& output, const Var<T>& input) {
    return jacobian(grad(output, input, /*create_graph=*/true, /*allow_unused=*/true), input);
}

/// The Hessian of a single-valued output times v (v has input's shape), without forming the
/// Hessian: the gradient of <grad(output), v>, two backward passes. With create_graph the result
/// can be differentiated again.
template <class T>
Var<T> hvp(const Var<T>& output, const Var<T>& input, const Var<T>& v, bool create_graph = false) {
    const Var<T> g = grad(output, input, /*create_graph=*/true, /*allow_unused=*/true);
    return grad(g, input, v, create_graph, /*allow_unused=*/true);
}

} // namespace tapir
