#pragma once
/// ROC curve, weighted AUC, background rejection at a signal efficiency, and the score cut
/// that keeps a given signal efficiency.
///
/// Convention: an event passes a cut t when score >= t. Signal = label 1, background = label 0.
/// Weights may be negative (MC weights) but each class total must be positive.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "common.hpp"

namespace tapir::metrics {

/// One point per distinct score, from the tightest cut to the loosest: the first point is
/// (0, 0) at threshold +inf, the last (1, 1) at the lowest score. Tied scores form one step,
/// so the trapezoid between two points counts a tie as half a correct ordering.
struct RocCurve {
    std::vector<double> fpr;        ///< background efficiency eps_B at each threshold
    std::vector<double> tpr;        ///< signal efficiency eps_S at each threshold
    std::vector<double> thresholds; ///< cut on the score (pass: score >= threshold)

    /// Trapezoidal area: the weighted probability that a signal event outscores a background
    /// event, ties counting 1/2.
    double auc() const {
        double a = 0.0;
        for (std::size_t k = 1; k < fpr.size(); ++k) a += (fpr[k] - fpr[k - 1]) * (tpr[k] + tpr[k - 1]);
        return 0.5 * a;
    }

    /// eps_B at signal efficiency eps_s, linearly interpolated between the two ROC points
    /// around it (the first crossing, walking from the tightest cut). The interpolation is exact
    /// for a cut that accepts part of the events tied at the next score, chosen at random.
    double background_efficiency(double eps_s) const {
        if (!(eps_s > 0.0 && eps_s <= 1.0))
            throw value_error("background_efficiency: signal efficiency must be in (0, 1], got " +
                              detail::error_number(eps_s));
        if (tpr.size() < 2) throw value_error("background_efficiency: empty ROC curve");
        for (std::size_t k = 1; k < tpr.size(); ++k) {
            if (tpr[k] >= eps_s) {
                if (tpr[k - 1] >= eps_s) return fpr[k - 1];
                const double t = (eps_s - tpr[k - 1]) / (tpr[k] - tpr[k - 1]);
                return fpr[k - 1] + t * (fpr[k] - fpr[k - 1]);
            }
        }
        return fpr.back();
    }

    /// Background rejection 1/eps_B at signal efficiency eps_s (R50: eps_s = 0.5); +infinity
    /// when no background passes.
    double rejection(double eps_s) const {
        const double eb = background_efficiency(eps_s);
        if (eb < 0.0)
            throw value_error("rejection: background efficiency " + detail::error_number(eb) +
                              " is negative at signal efficiency " + detail::error_number(eps_s) +
                              " (negative weights)");
        return eb == 0.0 ? std::numeric_limits<double>::infinity() : 1.0 / eb;
    }
};

namespace detail {
/// Indices sorted by decreasing score, and the class totals (checked positive).
template <class = void>
std::vector<std::size_t> roc_order(const char* fn, const ValueView& scores, const ValueView& labels,
                                   const ValueView& weights, double& wpos, double& wneg) {
    metric_check(fn, scores, labels, weights);
    wpos = 0.0;
    wneg = 0.0;
    for (std::size_t i = 0; i < scores.size(); ++i) (labels[i] == 1.0 ? wpos : wneg) += metric_weight(weights, i);
    if (!(wpos > 0.0))
        throw value_error(std::string(fn) + ": the signal (label 1) weights sum to " + error_number(wpos) +
                          " (need a positive total)");
    if (!(wneg > 0.0))
        throw value_error(std::string(fn) + ": the background (label 0) weights sum to " + error_number(wneg) +
                          " (need a positive total)");
    std::vector<std::size_t> order(scores.size());
    std::iota(order.begin(), order.end(), std::size_t(0));
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
    return order;
}
TAPIR_COMPILED_ONCE(std::vector<std::size_t> roc_order<>(const char*, const ValueView&, const ValueView&,
                                                         const ValueView&, double&, double&))
} // namespace detail

/// ROC curve of a binary classifier; empty weights = all 1.
inline RocCurve roc_curve(const ValueView& scores, const ValueView& labels, const ValueView& weights = {}) {
    double wpos, wneg;
    const auto order = detail::roc_order("roc_curve", scores, labels, weights, wpos, wneg);
    RocCurve r;
    r.fpr.push_back(0.0);
    r.tpr.push_back(0.0);
    r.thresholds.push_back(std::numeric_limits<double>::infinity());
    double tp = 0.0, fp = 0.0;
    for (std::size_t k = 0; k < order.size();) {
        const double s = scores[order[k]];
        for (; k < order.size() && scores[order[k]] == s; ++k) {
            const std::size_t i = order[k];
            (labels[i] == 1.0 ? tp : fp) += detail::metric_weight(weights, i);
        }
        r.fpr.push_back(fp / wneg);
        r.tpr.push_back(tp / wpos);
        r.thresholds.push_back(s);
    }
    // The loosest cut accepts everything: exactly (1, 1), free of summation rounding.
    r.fpr.back() = 1.0;
    r.tpr.back() = 1.0;
    return r;
}

/// Weighted area under the ROC curve: sum over (signal i, background j) of
/// w_i w_j ([s_i > s_j] + [s_i == s_j]/2), divided by the product of the class totals.
inline double roc_auc(const ValueView& scores, const ValueView& labels, const ValueView& weights = {}) {
    double wpos, wneg;
    const auto order = detail::roc_order("roc_auc", scores, labels, weights, wpos, wneg);
    double tp = 0.0, area = 0.0;
    for (std::size_t k = 0; k < order.size();) {
        const double s = scores[order[k]];
        double gp = 0.0, gn = 0.0;
        for (; k < order.size() && scores[order[k]] == s; ++k) {
            const std::size_t i = order[k];
            (labels[i] == 1.0 ? gp : gn) += detail::metric_weight(weights, i);
        }
        area += gn * (tp + 0.5 * gp);
        tp += gp;
    }
    return area / (wpos * wneg);
}

/// Background rejection 1/eps_B at signal efficiency eps_s (see RocCurve::background_efficiency
/// for the interpolation); +infinity when no background passes.
inline double background_rejection(const ValueView& scores, const ValueView& labels, const ValueView& weights = {},
                                   double signal_efficiency = 0.5) {
    return roc_curve(scores, labels, weights).rejection(signal_efficiency);
}

/// The score cut t that keeps signal efficiency eps_s: the highest signal score at which the
/// weighted signal passing (score >= t) first reaches eps_s of the signal total (up to 1e-12
/// relative rounding). With unit weights and no ties it keeps ceil(eps_s * N_S) signal events.
/// Tied scores pass together.
inline double efficiency_threshold(const ValueView& scores, const ValueView& labels, const ValueView& weights = {},
                                   double signal_efficiency = 0.5) {
    if (!(signal_efficiency > 0.0 && signal_efficiency <= 1.0))
        throw value_error("efficiency_threshold: signal efficiency must be in (0, 1], got " +
                          detail::error_number(signal_efficiency));
    detail::metric_check("efficiency_threshold", scores, labels, weights);
    std::vector<std::size_t> sig;
    double wpos = 0.0, wabs = 0.0;
    for (std::size_t i = 0; i < scores.size(); ++i) {
        if (labels[i] != 1.0) continue;
        sig.push_back(i);
        wpos += detail::metric_weight(weights, i);
        wabs += std::abs(detail::metric_weight(weights, i));
    }
    if (!(wpos > 0.0))
        throw value_error("efficiency_threshold: the signal (label 1) weights sum to " + detail::error_number(wpos) +
                          " (need a positive total)");
    std::sort(sig.begin(), sig.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
    const double target = signal_efficiency * wpos - 1e-12 * wabs;
    double cum = 0.0;
    for (std::size_t k = 0; k < sig.size();) {
        const double s = scores[sig[k]];
        for (; k < sig.size() && scores[sig[k]] == s; ++k) cum += detail::metric_weight(weights, sig[k]);
        if (cum >= target) return s;
    }
    return scores[sig.back()];
}

} // namespace tapir::metrics
