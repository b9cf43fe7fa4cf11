#pragma once
/// Statistical uncertainties of the metrics, and the noise floor of the mass-sculpting measure.
///
/// bootstrap() is the Poisson bootstrap: each replica weights every event by an independent draw
/// of Poisson(1) (times its own weight) and recomputes the metric; the spread of the replicas is
/// the statistical uncertainty of the metric on a sample of this size (Efron and Tibshirani, An
/// Introduction to the Bootstrap, 1993; the Poisson form keeps events independent, so one weight
/// vector serves metrics of any number of inputs).
///
/// 1/JSD has a floor set by the sample alone: two histograms of the same parent differ by their
/// statistical fluctuations, E[JSD] ~ (K - 1) (1/N_pass + 1/N_fail) / (8 ln 2) bits for K bins.
/// random_selection_inverse_jsd() measures it: 1/JSD of selections that never look at the mass,
/// passing each background event with the efficiency of the real cut. A 1/JSD at or above that
/// floor cannot be told apart from no sculpting at all.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../random.hpp"
#include "common.hpp"
#include "divergence.hpp"
#include "histogram.hpp"
#include "roc.hpp"

namespace tapir::metrics {

struct BootstrapOptions {
    std::size_t replicas = 200;
    std::uint64_t seed = 1;
    double coverage = 0.68;  ///< of the central interval [lo, hi] of the replicas (0.68: +-1 sigma; 0.9: 5-95%)
};

/// A value with the spread of its replicas.
struct Estimate {
    double value = 0.0;  ///< on the sample as given (random_selection_inverse_jsd: the replicas' median)
    double sd = 0.0;     ///< standard deviation of the replicas
    /// Central interval holding BootstrapOptions::coverage of the replicas, moved by -bias so that
    /// it is centred on value as the replicas are on their median (bias-corrected percentile
    /// interval; unchanged for an unbiased metric).
    double lo = 0.0, hi = 0.0;
    double bias = 0.0;  ///< the replicas' median minus value (JSD: resampling adds its own fluctuations)
    std::size_t replicas = 0;
};

namespace detail {
/// Poisson(1) by inversion of its distribution function (mean 1: at most a few steps).
inline int poisson_one(Rng& rng) {
    double u = rng.uniform(), p = std::exp(-1.0), c = p;
    int k = 0;
    while (u > c && k < 30) {
        ++k;
        p /= k;
        c += p;
    }
    return k;
}

/// Quantile q of sorted finite-or-infinite values (linear interpolation between order statistics).
inline double sorted_quantile(const std::vector<double>& v, double q) {
    if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
    const double x = q * static_cast<double>(v.size() - 1);
    const std::size_t i = static_cast<std::size_t>(x);
    if (i + 1 >= v.size()) return v.back();
    const double f = x - static_cast<double>(i);
    return f == 0.0 ? v[i] : v[i] + f * (v[i + 1] - v[i]);
}

/// Spread of the replicas r around value; with `centre`, the interval is moved by the bias.
inline Estimate summarize_replicas(double value, std::vector<double>& r, double coverage, bool centre = true) {
    Estimate e;
    e.value = value;
    e.replicas = r.size();
    std::sort(r.begin(), r.end());
    e.bias = centre ? sorted_quantile(r, 0.5) - value : 0.0;
    double mean = 0.0;
    for (double x : r) mean += x;
    mean /= static_cast<double>(r.size());
    double var = 0.0;
    for (double x : r) var += (x - mean) * (x - mean);
    e.sd = r.size() > 1 ? std::sqrt(var / static_cast<double>(r.size() - 1)) : 0.0;
    e.lo = sorted_quantile(r, 0.5 - 0.5 * coverage) - e.bias;
    e.hi = sorted_quantile(r, 0.5 + 0.5 * coverage) - e.bias;
    return e;
}

inline void check_bootstrap_options(const char* fn, const BootstrapOptions& o) {
    if (o.replicas < 2) throw value_error(std::string(fn) + ": need at least 2 replicas, got " + std::to_string(o.replicas));
    if (!(o.coverage > 0.0 && o.coverage < 1.0))
        throw value_error(std::string(fn) + ": coverage must be in (0, 1), got " + error_number(o.coverage));
}
} // namespace detail

/// metric(w) on the n events' weights as given (empty = all 1), then on `replicas` Poisson(1)
/// reweightings of them: value, and the replicas' standard deviation and central interval.
/// metric is called as metric(const ValueView& weights) and returns a double. Seeded: the same
/// options give the same replicas.
template <class F>
Estimate bootstrap(std::size_t n, const ValueView& weights, F&& metric, const BootstrapOptions& o = {}) {
    detail::check_bootstrap_options("bootstrap", o);
    if (n == 0) throw value_error("bootstrap: no events");
    if (!weights.empty() && weights.size() != n)
        throw value_error("bootstrap: " + std::to_string(weights.size()) + " weights for " + std::to_string(n) + " events");
    const double value = metric(weights);
    Rng rng(o.seed);
    std::vector<double> w(n), reps;
    reps.reserve(o.replicas);
    for (std::size_t r = 0; r < o.replicas; ++r) {
        for (std::size_t i = 0; i < n; ++i) w[i] = detail::poisson_one(rng) * detail::metric_weight(weights, i);
        reps.push_back(metric(ValueView(w)));
    }
    return detail::summarize_replicas(value, reps, o.coverage);
}

/// 1/JSD (bits) of selections blind to the mass: each background event (label 0) in [lo, hi]
/// passes with probability background_efficiency, independently; the replicas' median as value,
/// their spread as interval. The floor against which a measured 1/JSD is read.
inline Estimate random_selection_inverse_jsd(const ValueView& mass, const ValueView& labels, const ValueView& weights,
                                             double background_efficiency, double lo = 105.0, double hi = 160.0,
                                             double bin = 5.0, const BootstrapOptions& o = {}) {
    const char* fn = "random_selection_inverse_jsd";
    detail::check_bootstrap_options(fn, o);
    detail::metric_check_same_size(fn, "masses", mass, "labels", labels);
    if (!weights.empty()) detail::metric_check_same_size(fn, "masses", mass, "weights", weights);
    detail::metric_check_labels(fn, labels);
    detail::metric_check_finite(fn, "mass", mass);
    if (!(background_efficiency > 0.0 && background_efficiency < 1.0))
        throw value_error(std::string(fn) + ": background efficiency must be in (0, 1), got " +
                          detail::error_number(background_efficiency));
    Rng rng(o.seed);
    std::vector<double> reps;
    reps.reserve(o.replicas);
    for (std::size_t r = 0; r < o.replicas; ++r) {
        Histogram pass = Histogram::with_width(lo, hi, bin), fail = Histogram::with_width(lo, hi, bin);
        for (std::size_t i = 0; i < mass.size(); ++i) {
            if (labels[i] != 0.0) continue;
            (rng.uniform() < background_efficiency ? pass : fail).fill(mass[i], detail::metric_weight(weights, i));
        }
        if (!(pass.integral() > 0.0) || !(fail.integral() > 0.0))
            throw value_error(std::string(fn) + ": too few background events in [" + detail::error_number(lo) + ", " +
                              detail::error_number(hi) + "] for a selection of efficiency " +
                              detail::error_number(background_efficiency));
        reps.push_back(1.0 / jensen_shannon(pass, fail));
    }
    std::vector<double> sorted = reps;
    std::sort(sorted.begin(), sorted.end());
    return detail::summarize_replicas(detail::sorted_quantile(sorted, 0.5), reps, o.coverage, false);
}

/// The figures of the mass-decorrelation study with their statistical uncertainties: background
/// rejection at signal efficiency eps (R50 for eps = 0.5) and 1/JSD of the background mass
/// passing vs failing that cut, each bootstrapped, and the random-selection floor of 1/JSD at the
/// cut's background efficiency.
struct SculptingEstimate {
    Estimate rejection;    ///< 1/eps_B at the cut
    /// 1/JSD (bits). Bootstrapped as JSD, whose resampling bias is additive, then inverted: sd is
    /// propagated (sd_JSD / JSD^2), [lo, hi] = [1/hi_JSD, 1/lo_JSD], hi infinite when lo_JSD <= 0
    /// (consistent with no sculpting).
    Estimate inverse_jsd;
    Estimate floor;        ///< 1/JSD of a mass-blind selection with the same background efficiency
};

inline SculptingEstimate sculpting_with_uncertainty(const ValueView& scores, const ValueView& mass, const ValueView& labels,
                                                    const ValueView& weights = {}, double eps = 0.5, double lo = 105.0,
                                                    double hi = 160.0, double bin = 5.0, const BootstrapOptions& o = {}) {
    SculptingEstimate s;
    s.rejection = bootstrap(
        scores.size(), weights, [&](const ValueView& w) { return background_rejection(scores, labels, w, eps); }, o);
    const Estimate jsd = bootstrap(
        scores.size(), weights, [&](const ValueView& w) { return mass_sculpting_jsd(scores, mass, labels, w, eps, lo, hi, bin).jsd; },
        o);
    s.inverse_jsd.value = 1.0 / jsd.value;
    s.inverse_jsd.sd = jsd.sd / (jsd.value * jsd.value);
    s.inverse_jsd.lo = jsd.hi > 0.0 ? 1.0 / jsd.hi : std::numeric_limits<double>::infinity();
    s.inverse_jsd.hi = jsd.lo > 0.0 ? 1.0 / jsd.lo : std::numeric_limits<double>::infinity();
    s.inverse_jsd.bias = jsd.bias;  // on the JSD scale
    s.inverse_jsd.replicas = jsd.replicas;
    // The cut's background efficiency, counted inside the mass window as the JSD is.
    const SculptingResult nominal = mass_sculpting_jsd(scores, mass, labels, weights, eps, lo, hi, bin);
    const double eff_b = nominal.pass.integral() / (nominal.pass.integral() + nominal.fail.integral());
    BootstrapOptions fo = o;
    fo.seed = o.seed ^ 0x9e3779b97f4a7c15ULL;
    s.floor = random_selection_inverse_jsd(mass, labels, weights, std::min(std::max(eff_b, 1e-9), 1.0 - 1e-9), lo, hi, bin, fo);
    return s;
}

} // namespace tapir::metrics
