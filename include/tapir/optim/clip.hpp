#pragma once
/// Gradient clipping over a parameter list: by global norm and by value. Both return the global
/// L2 norm of the gradients before clipping (for logging, and to skip steps on spikes).

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../simd/elementwise.hpp"
#include "kernels.hpp"
#include "optimizer.hpp"

namespace tapir {
namespace optim {

namespace detail {
/// Sum of squares of one gradient, safe against overflow: a scaled second pass if the fast one
/// overflows while every value is finite. Returns NaN or inf if the gradient holds either.
template <class T>
double sum_squares(const T* g, std::size_t n) {
    const double fast = static_cast<double>(simd::dot(g, g, n));
    if (std::isfinite(fast)) return fast;
    double amax = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        const double a = std::fabs(static_cast<double>(g[i]));
        if (!(a <= amax)) amax = a;  // NaN propagates
    }
    if (!std::isfinite(amax)) return amax;
    double s = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        const double q = static_cast<double>(g[i]) / amax;
        s += q * q;
    }
    return s * amax * amax;  // may be inf for T = double near the overflow threshold
}

template <class T>
[[noreturn]] void throw_nonfinite_grad(const char* fn, const Parameter<T>& p) {
    const T* g = p.grad.data();
    for (std::size_t k = 0; k < p.grad.size(); ++k) {
        if (g[k] - g[k] == T(0)) continue;
        throw value_error(std::string(fn) + ": the gradient of parameter '" + p.name + "' is " +
                          (g[k] != g[k] ? "NaN" : (g[k] > T(0) ? "+inf" : "-inf")) + " at element " + std::to_string(k) +
                          "; the gradient norm is not finite");
    }
    throw value_error(std::string(fn) + ": the gradient norm overflows (parameter '" + p.name + "')");
}

/// Global norm over the trainable parameters; throws naming the first non-finite gradient if asked.
template <class T>
double global_norm_checked(const std::vector<Parameter<T>*>& params, const char* fn, bool error_if_nonfinite) {
    double total = 0.0;
    for (const Parameter<T>* p : params) {
        if (p == nullptr) throw value_error(std::string(fn) + ": null parameter pointer");
        if (!p->requires_grad) continue;
        const double s = sum_squares(p->grad.data(), p->grad.size());
        if (!std::isfinite(s) && error_if_nonfinite) throw_nonfinite_grad(fn, *p);
        total += s;
    }
    return std::sqrt(total);
}
} // namespace detail

/// sqrt(sum of squares of every trainable parameter's gradient), accumulated in double.
template <class T>
T grad_norm(const std::vector<Parameter<T>*>& params) {
    return static_cast<T>(detail::global_norm_checked(params, "grad_norm", false));
}

/// Scales all gradients by max_norm / norm when their global norm exceeds max_norm, so the
/// clipped norm is max_norm (tf.clip_by_global_norm; PyTorch's clip_grad_norm_ divides by
/// norm + 1e-6). Returns the norm before clipping. A NaN or infinite gradient throws value_error
/// naming it (error_if_nonfinite, the default) or, if not, leaves every gradient untouched and
/// returns the non-finite norm so that the caller can skip the step.
template <class T>
T clip_grad_norm(const std::vector<Parameter<T>*>& params, T max_norm, bool error_if_nonfinite = true) {
    detail::check_hyper("clip_grad_norm", "max_norm", static_cast<double>(max_norm), 0.0, true, HUGE_VAL, true);
    const double norm = detail::global_norm_checked(params, "clip_grad_norm", error_if_nonfinite);
    if (!std::isfinite(norm) || !(norm > static_cast<double>(max_norm))) return static_cast<T>(norm);
    const T scale = static_cast<T>(static_cast<double>(max_norm) / norm);
    for (Parameter<T>* p : params) {
        if (!p->requires_grad) continue;
        simd::mul_scalar(p->grad.data(), scale, p->grad.data(), p->grad.size());
    }
    return static_cast<T>(norm);
}

/// Clamps every gradient element to [-clip_value, clip_value] (Keras clipvalue, PyTorch
/// clip_grad_value_). Returns the global norm before clipping; non-finite gradients as above.
template <class T>
T clip_grad_value(const std::vector<Parameter<T>*>& params, T clip_value, bool error_if_nonfinite = true) {
    detail::check_hyper("clip_grad_value", "clip_value", static_cast<double>(clip_value), 0.0, true, HUGE_VAL, true);
    const double norm = detail::global_norm_checked(params, "clip_grad_value", error_if_nonfinite);
    if (!std::isfinite(norm)) return static_cast<T>(norm);
    for (Parameter<T>* p : params) {
        if (!p->requires_grad) continue;
        simd::dispatch<detail::clamp_kernel<T>>(detail::GradArgs<T>{nullptr, p->grad.data(), p->grad.size(), clip_value});
    }
    return static_cast<T>(norm);
}

} // namespace optim
} // namespace tapir
