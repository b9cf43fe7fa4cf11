#pragma once
/// Classification and regression losses: binary cross-entropy from logits and from
/// probabilities, MSE, MAE and categorical cross-entropy from logits.
///
/// All take an optional pointer to per-event weights (N values, may be negative, detached) and
/// return the weighted mean over events sum_i w_i l_i / sum_i w_i. A multi-column prediction
/// (N, D) is averaged over its columns first (Keras' convention), so a weight belongs to an event.

#include <cstddef>
#include <string>
#include <vector>

#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../tensor/tensor.hpp"
#include "common.hpp"

namespace tapir {
namespace loss {

/// Binary cross-entropy from logits t and labels y (the numerically stable form):
///   BCE = sum_i w_i (softplus(t_i) - y_i t_i) / sum_i w_i,
/// never log(sigmoid(t)), so any logit is finite. Labels may be soft (in [0, 1]); constant
/// targets outside [0, 1] or NaN are refused with their row (see check_binary_targets).
template <class T>
Var<T> binary_cross_entropy_with_logits(const Var<T>& logits, const Var<T>& targets, detail::weights_t<T> weights = nullptr) {
    const char* fn = "binary_cross_entropy_with_logits";
    const std::size_t n = detail::batch_size(logits, fn, "logits");
    const Var<T> y = detail::same_layout(logits, targets, fn, "targets");
    detail::check_binary_target_var(y, fn);
    // Without weights the mean over events of the per-event column means is the mean over all
    // elements: one fused node, also for several outputs per event.
    if (!weights) return bce_with_logits(logits, y);
    if (logits.size() == n) {  // one logit per event: the fused node
        const Var<T> w = detail::event_weights(*weights, n, fn);
        detail::weight_total(w, fn);
        return bce_with_logits(logits, y, &w);
    }
    const Var<T> per = detail::mean_per_event(sub(softplus(logits), mul(y, logits)));
    return detail::weighted_mean(per, weights, fn);
}

/// Binary cross-entropy from probabilities with Keras' clipping (tf.keras.backend, TF 2.x):
///   p' = clip(p, eps, 1 - eps),  l = -[y ln(p' + eps) + (1 - y) ln(1 - p' + eps)],  eps = 1e-7.
/// The gradient is zero where p was clipped, as in Keras. Prefer the logit form when you can.
/// Targets as for binary_cross_entropy_with_logits (in [0, 1], checked when constant).
template <class T>
Var<T> binary_cross_entropy(const Var<T>& probs, const Var<T>& targets, detail::weights_t<T> weights = nullptr, detail::scalar_t<T> eps = T(1e-7)) {
    const char* fn = "binary_cross_entropy";
    detail::batch_size(probs, fn, "probabilities");
    if (!(eps > T(0) && eps < T(0.5))) throw value_error(std::string(fn) + ": eps must be in (0, 0.5), got " + std::to_string(eps));
    const Var<T> y = detail::same_layout(probs, targets, fn, "targets");
    detail::check_binary_target_var(y, fn);
    const Var<T> p = clamp(probs, eps, T(1) - eps);
    const Var<T> lp = log(add_scalar(p, eps));
    const Var<T> lq = log(add_scalar(neg(p), T(1) + eps));
    // -(y lp + (1 - y) lq) = -(lq + y (lp - lq))
    const Var<T> l = neg(add(lq, mul(y, sub(lp, lq))));
    return detail::weighted_mean(detail::mean_per_event(l), weights, fn);
}

/// Mean squared error: per event mean_j (p_ij - y_ij)^2, then the weighted mean over events,
/// computed as sum_ij w_i (p_ij - y_ij)^2 / (K sum_i w_i) (the mean of all elements without
/// weights): one reduction, and the arithmetic nn::fit's MseLoss has always used.
template <class T>
Var<T> mse(const Var<T>& pred, const Var<T>& targets, detail::weights_t<T> weights = nullptr) {
    const char* fn = "mse";
    const std::size_t n = detail::batch_size(pred, fn, "predictions");
    const Var<T> y = detail::same_layout(pred, targets, fn, "targets");
    const Var<T> d2 = square(sub(pred, y));
    if (!weights) return mean(d2);
    const Var<T> w = detail::event_weights(*weights, n, fn);
    detail::weight_total(w, fn);
    T norm = T(0);  // accumulated in T, in order: the factor fit has always applied
    for (std::size_t i = 0; i < n; ++i) norm += w.data()[i];
    const T k = static_cast<T>(pred.size() / n);
    const Var<T> per = d2.shape().rank() == 2 ? d2 : reshape(d2, Shape{n, pred.size() / n});
    return scale(sum(mul(per, reshape(w, Shape{n, 1}))), T(1) / (norm * k));
}

/// Mean absolute error: per event mean_j |p_ij - y_ij|, then the weighted mean over events.
/// The gradient at p = y is 0 (sign(0) = 0).
template <class T>
Var<T> mae(const Var<T>& pred, const Var<T>& targets, detail::weights_t<T> weights = nullptr) {
    const char* fn = "mae";
    detail::batch_size(pred, fn, "predictions");
    const Var<T> y = detail::same_layout(pred, targets, fn, "targets");
    return detail::weighted_mean(detail::mean_per_event(abs(sub(pred, y))), weights, fn);
}

/// Categorical cross-entropy from logits z (N, K) and target distributions q (N, K) (one-hot or
/// soft): l_i = -sum_k q_ik log_softmax(z_i)_k, weighted mean over events. log_softmax is
/// computed with the max subtracted, so large logits are safe.
template <class T>
Var<T> categorical_cross_entropy_with_logits(const Var<T>& logits, const Var<T>& targets, detail::weights_t<T> weights = nullptr) {
    const char* fn = "categorical_cross_entropy_with_logits";
    detail::batch_size(logits, fn, "logits");
    if (logits.shape().rank() != 2) throw shape_error(std::string(fn) + ": logits must be (N, K), got " + logits.shape().str());
    if (targets.shape() != logits.shape())
        throw shape_error(std::string(fn) + ": targets of shape " + targets.shape().str() + " do not match logits of shape " +
                          logits.shape().str());
    const Var<T> l = neg(sum(mul(targets, log_softmax(logits, 1)), 1));
    return detail::weighted_mean(l, weights, fn);
}

/// The same with integer class labels in [0, K).
template <class T>
Var<T> categorical_cross_entropy_with_logits(const Var<T>& logits, const std::vector<std::size_t>& labels,
                                             detail::weights_t<T> weights = nullptr) {
    const char* fn = "categorical_cross_entropy_with_logits";
    detail::batch_size(logits, fn, "logits");
    if (logits.shape().rank() != 2) throw shape_error(std::string(fn) + ": logits must be (N, K), got " + logits.shape().str());
    const std::size_t n = logits.shape()[0], k = logits.shape()[1];
    if (labels.size() != n)
        throw shape_error(std::string(fn) + ": " + std::to_string(labels.size()) + " labels for logits of shape " + logits.shape().str());
    Tensor<T> onehot(Shape{n, k});
    for (std::size_t i = 0; i < n; ++i) {
        if (labels[i] >= k)
            throw value_error(std::string(fn) + ": label " + std::to_string(labels[i]) + " of event " + std::to_string(i) +
                              " is out of range for " + std::to_string(k) + " classes");
        onehot(i, labels[i]) = T(1);
    }
    return categorical_cross_entropy_with_logits(logits, logits.tape().constant(onehot), weights);
}

} // namespace loss
} // namespace tapir
