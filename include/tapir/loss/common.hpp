#pragma once
/// Shared plumbing of the losses: batch-shape checks and the weighted mean over events.
///
/// Every loss takes optional per-event weights as a pointer to a Var of N values (N = the batch
/// axis). Weights are constants: they are detached, so no gradient flows into them. They may be
/// negative (Monte Carlo weights); only a zero or non-finite total is rejected, because the
/// weighted mean sum_i w_i l_i / sum_i w_i is then undefined.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../config.hpp"
#include "../error.hpp"
#include "../tensor/shape.hpp"

namespace tapir {
namespace loss {
namespace detail {

/// A scalar argument of type T that does not take part in template deduction, so that
/// f(var, 10) and f(var, 0.5) work for Var<float> and Var<double> alike.
template <class T>
using scalar_t = typename Var<T>::value_type;

template <class U>
struct type_identity {
    using type = U;
};
/// Optional per-event weights, also non-deduced so that `nullptr` can be passed.
template <class T>
using weights_t = const typename type_identity<Var<T>>::type*;

/// Number of events (the first axis); rejects scalars and empty batches.
template <class T>
std::size_t batch_size(const Var<T>& v, const char* fn, const char* what) {
    if (v.shape().rank() == 0)
        throw shape_error(std::string(fn) + ": " + what + " must have a batch axis, got shape ()");
    const std::size_t n = v.shape()[0];
    if (n == 0 || v.size() == 0) throw shape_error(std::string(fn) + ": empty batch (" + what + " of shape " + v.shape().str() + ")");
    return n;
}

/// One value per event: (N,) or (N, 1) (or any shape of N elements along the batch axis).
template <class T>
Var<T> per_event_column(const Var<T>& v, const char* fn, const char* what) {
    const std::size_t n = batch_size(v, fn, what);
    if (v.size() != n)
        throw shape_error(std::string(fn) + ": " + what + " must hold one value per event, shape (N,) or (N, 1); got " + v.shape().str());
    return v.shape().rank() == 1 ? v : reshape(v, Shape{n});
}

/// `b` viewed with a's shape; both must have the same number of elements. Guards against the
/// silent (N, 1) - (N,) -> (N, N) broadcast.
template <class T>
Var<T> same_layout(const Var<T>& a, const Var<T>& b, const char* fn, const char* what) {
    if (a.size() != b.size()) {
        throw shape_error(std::string(fn) + ": " + what + " of shape " + b.shape().str() + " does not match predictions of shape " +
                          a.shape().str());
    }
    return a.shape() == b.shape() ? b : reshape(b, a.shape());
}

/// Sum of the weights (accumulated in double), checked to be finite and non-zero.
template <class T>
double weight_total(const Var<T>& w, const char* fn) {
    double s = 0.0;
    const T* p = w.data();
    for (std::size_t i = 0; i < w.size(); ++i) s += static_cast<double>(p[i]);
    if (!std::isfinite(s)) throw value_error(std::string(fn) + ": the event weights contain NaN or infinity");
    if (s == 0.0) throw value_error(std::string(fn) + ": the event weights sum to zero (no events with weight?)");
    return s;
}

/// Weights as a detached (N,) constant; checks that there is one per event.
template <class T>
Var<T> event_weights(const Var<T>& w, std::size_t n, const char* fn) {
    if (w.size() != n)
        throw shape_error(std::string(fn) + ": " + std::to_string(n) + " events but weights of shape " + w.shape().str());
    const Var<T> d = detach(w);
    return d.shape().rank() == 1 ? d : reshape(d, Shape{n});
}

/// sum_i w_i l_i / sum_i w_i over per-event values l (N,); the plain mean without weights.
template <class T>
Var<T> weighted_mean(const Var<T>& per_event, const Var<T>* weights, const char* fn) {
    const std::size_t n = per_event.size();
    if (!weights) return mean(per_event);
    const Var<T> w = event_weights(*weights, n, fn);
    const double total = weight_total(w, fn);
    return scale(sum(mul(per_event, w)), static_cast<T>(1.0 / total));
}

/// reduce(flat, 1) over all axes but the first: (N, ...) -> (N,); one value per event is kept as is.
template <class T, class R>
Var<T> reduce_per_event(const Var<T>& v, R reduce) {
    const std::size_t n = v.shape()[0];
    const std::size_t k = v.size() / n;
    const Var<T> flat = v.shape().rank() == 2 ? v : reshape(v, Shape{n, k});
    return k == 1 ? reshape(flat, Shape{n}) : reduce(flat, 1);
}

/// Mean over all axes but the first: (N, ...) -> (N,).
template <class T>
Var<T> mean_per_event(const Var<T>& v) {
    return reduce_per_event(v, [](const Var<T>& x, std::int64_t axis) { return mean(x, axis); });
}

/// Sum over all axes but the first: (N, ...) -> (N,).
template <class T>
Var<T> sum_per_event(const Var<T>& v) {
    return reduce_per_event(v, [](const Var<T>& x, std::int64_t axis) { return sum(x, axis); });
}

} // namespace detail

/// Refuses binary targets outside [0, 1] (and NaN) with the row and the value: a stray "2" in a
/// label column would otherwise train silently. Soft labels in [0, 1] are accepted on purpose
/// (label smoothing, teacher probabilities). y holds `rows` rows of `per_row` values each.
template <class T>
void check_binary_targets(const T* y, std::size_t rows, std::size_t per_row, const char* fn) {
    const std::size_t n = rows * per_row;
    for (std::size_t i = 0; i < n; ++i) {
        if (TAPIR_LIKELY(y[i] >= T(0) && y[i] <= T(1))) continue;
        std::string where = "row " + std::to_string(i / (per_row ? per_row : 1));
        if (per_row > 1) where += ", column " + std::to_string(i % per_row);
        throw value_error(std::string(fn) + ": target " + tapir::detail::number_text(static_cast<double>(y[i])) + " in " + where +
                          " is not in [0, 1] (binary labels are 0 or 1, soft labels lie between)");
    }
}

namespace detail {

/// check_binary_targets on a loss's targets when they are constants (labels); targets that
/// carry a gradient are model outputs, not labels.
template <class T>
void check_binary_target_var(const Var<T>& y, const char* fn) {
    if (y.requires_grad()) return;
    const std::size_t rows = y.shape().rank() ? y.shape()[0] : 1;
    check_binary_targets(y.data(), rows, rows ? y.size() / rows : 0, fn);
}

inline void check_finite_param(const char* fn, const char* what, double v) {
    if (!std::isfinite(v)) throw value_error(std::string(fn) + ": " + what + " must be finite, got " + std::to_string(v));
}

} // namespace detail
} // namespace loss
} // namespace tapir
