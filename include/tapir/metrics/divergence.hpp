#pragma once
/// Jensen-Shannon divergence of histograms, and the background mass-sculpting measure of the
/// H -> gamma gamma study.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../error.hpp"
#include "common.hpp"
#include "histogram.hpp"
#include "roc.hpp"

namespace tapir::metrics {

/// JSD(P, Q) = KL(P||M)/2 + KL(Q||M)/2 with M = (P + Q)/2, in bits (log base 2), so it lies
/// in [0, 1]. P and Q are normalised each to unit sum first; entries must be finite and >= 0;
/// 0 * log 0 = 0. JSD([1,0],[0,1]) = 1, JSD([1,1],[1,3]) = 0.048795.
inline double jensen_shannon(const ValueView& p, const ValueView& q) {
    detail::metric_check_same_size("jensen_shannon", "bins in p", p, "bins in q", q);
    if (p.empty()) throw value_error("jensen_shannon: empty input");
    double sp = 0.0, sq = 0.0;
    for (std::size_t i = 0; i < p.size(); ++i) {
        if (!(std::isfinite(p[i]) && p[i] >= 0.0))
            throw value_error("jensen_shannon: bin " + std::to_string(i) + " of p is " + detail::error_number(p[i]) +
                              " (need finite values >= 0)");
        if (!(std::isfinite(q[i]) && q[i] >= 0.0))
            throw value_error("jensen_shannon: bin " + std::to_string(i) + " of q is " + detail::error_number(q[i]) +
                              " (need finite values >= 0)");
        sp += p[i];
        sq += q[i];
    }
    if (!(sp > 0.0)) throw value_error("jensen_shannon: p sums to 0 (cannot normalise)");
    if (!(sq > 0.0)) throw value_error("jensen_shannon: q sums to 0 (cannot normalise)");
    double acc = 0.0;
    for (std::size_t i = 0; i < p.size(); ++i) {
        const double a = p[i] / sp, b = q[i] / sq, m = a + b; // m = 2 M
        if (a > 0.0) acc += a * std::log2(2.0 * a / m);
        if (b > 0.0) acc += b * std::log2(2.0 * b / m);
    }
    return std::min(1.0, std::max(0.0, 0.5 * acc));
}

/// Same binning required.
inline double jensen_shannon(const Histogram& p, const Histogram& q) {
    if (p.bins() != q.bins() || p.lo() != q.lo() || p.hi() != q.hi())
        throw value_error("jensen_shannon: histograms have different binnings: " + std::to_string(p.bins()) +
                          " bins in [" + detail::error_number(p.lo()) + ", " + detail::error_number(p.hi()) + "] vs " +
                          std::to_string(q.bins()) + " bins in [" + detail::error_number(q.lo()) + ", " +
                          detail::error_number(q.hi()) + "]");
    return jensen_shannon(p.contents(), q.contents());
}

struct SculptingResult {
    double jsd = 0.0;       ///< JSD of the background mass, passing vs failing the cut (bits)
    double threshold = 0.0; ///< score cut: pass when score >= threshold
    Histogram pass;         ///< background mass of events passing the cut
    Histogram fail;         ///< background mass of events failing it
    /// 1/JSD, the figure quoted in the study (higher = less sculpting).
    double inverse_jsd() const noexcept { return 1.0 / jsd; }
};

/// Background mass sculpting: the cut on the score that keeps signal efficiency eps (see
/// efficiency_threshold), then the JSD between the background (label 0) mass histograms of
/// events passing and failing it, with bins of width `bin` from lo to hi (numpy binning; masses
/// outside [lo, hi] are left out, as in numpy.histogram). Empty weights = all 1.
inline SculptingResult mass_sculpting_jsd(const ValueView& scores, const ValueView& mass, const ValueView& labels,
                                          const ValueView& weights = {}, double eps = 0.5, double lo = 105.0,
                                          double hi = 160.0, double bin = 5.0) {
    const char* fn = "mass_sculpting_jsd";
    detail::metric_check_same_size(fn, "scores", scores, "masses", mass);
    detail::metric_check(fn, scores, labels, weights);
    detail::metric_check_finite(fn, "mass", mass);
    SculptingResult r{0.0, efficiency_threshold(scores, labels, weights, eps), Histogram::with_width(lo, hi, bin),
                      Histogram::with_width(lo, hi, bin)};
    for (std::size_t i = 0; i < scores.size(); ++i) {
        if (labels[i] != 0.0) continue;
        (scores[i] >= r.threshold ? r.pass : r.fail).fill(mass[i], detail::metric_weight(weights, i));
    }
    if (!(r.pass.integral() > 0.0))
        throw value_error(std::string(fn) + ": no background weight in [" + detail::error_number(lo) + ", " +
                          detail::error_number(hi) + "] passes the cut at score " + detail::error_number(r.threshold) +
                          " (total " + detail::error_number(r.pass.integral()) + ")");
    if (!(r.fail.integral() > 0.0))
        throw value_error(std::string(fn) + ": no background weight in [" + detail::error_number(lo) + ", " +
                          detail::error_number(hi) + "] fails the cut at score " + detail::error_number(r.threshold) +
                          " (total " + detail::error_number(r.fail.integral()) + ")");
    r.jsd = jensen_shannon(r.pass, r.fail);
    return r;
}

} // namespace tapir::metrics
