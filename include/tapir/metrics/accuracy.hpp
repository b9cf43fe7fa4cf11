#pragma once
/// Classification accuracy.

#include <cstddef>
#include <string>

#include "../error.hpp"
#include "common.hpp"

namespace tapir::metrics {

/// Weighted fraction of events classified correctly, predicting 1 when score > threshold
/// (Keras' binary_accuracy convention: a score equal to the threshold predicts 0).
/// Empty weights = all 1; the weight total must be positive.
inline double accuracy(const ValueView& scores, const ValueView& labels, const ValueView& weights = {},
                       double threshold = 0.5) {
    detail::metric_check("accuracy", scores, labels, weights);
    double good = 0.0, total = 0.0;
    for (std::size_t i = 0; i < scores.size(); ++i) {
        const double w = detail::metric_weight(weights, i);
        total += w;
        if ((scores[i] > threshold) == (labels[i] == 1.0)) good += w;
    }
    if (!(total > 0.0))
        throw value_error("accuracy: the weights sum to " + detail::error_number(total) + " (need a positive total)");
    return good / total;
}

} // namespace tapir::metrics
