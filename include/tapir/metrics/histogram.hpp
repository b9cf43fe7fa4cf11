#pragma once
/// Fixed-width weighted histograms.
///
/// Bins follow numpy.histogram: bin i covers [edge(i), edge(i+1)), the last bin also includes
/// hi. Values below lo go to underflow(), above hi to overflow(); the flows are kept apart and
/// never enter contents(), integral() or normalized(). -inf / +inf are flows; NaN is an error.

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../error.hpp"
#include "common.hpp"

namespace tapir::metrics {

class Histogram {
public:
    Histogram(std::size_t bins, double lo, double hi) : lo_(lo), hi_(hi), w_(bins, 0.0), w2_(bins, 0.0) {
        if (bins == 0) throw value_error("Histogram: the number of bins must be positive");
        if (!(std::isfinite(lo) && std::isfinite(hi) && lo < hi))
            throw value_error("Histogram: range [" + detail::error_number(lo) + ", " + detail::error_number(hi) +
                              "] must be finite with lo < hi");
    }

    /// Bins of the given width from lo to hi; (hi - lo) must be a whole number of widths
    /// (up to 1e-9 relative), e.g. with_width(105, 160, 5) has 11 bins.
    static Histogram with_width(double lo, double hi, double width) {
        if (!(width > 0.0 && std::isfinite(width)))
            throw value_error("Histogram::with_width: width must be positive, got " + detail::error_number(width));
        if (!(std::isfinite(lo) && std::isfinite(hi) && lo < hi))
            throw value_error("Histogram::with_width: range [" + detail::error_number(lo) + ", " +
                              detail::error_number(hi) + "] must be finite with lo < hi");
        const double n = std::round((hi - lo) / width);
        if (n < 1.0 || std::abs(n * width - (hi - lo)) > 1e-9 * (hi - lo) || n > 1e9)
            throw value_error("Histogram::with_width: width " + detail::error_number(width) + " does not divide [" +
                              detail::error_number(lo) + ", " + detail::error_number(hi) + "] into whole bins");
        return Histogram(static_cast<std::size_t>(n), lo, hi);
    }

    std::size_t bins() const noexcept { return w_.size(); }
    double lo() const noexcept { return lo_; }
    double hi() const noexcept { return hi_; }
    double width() const noexcept { return (hi_ - lo_) / static_cast<double>(w_.size()); }
    /// Lower edge of bin i; edge(bins()) == hi.
    double edge(std::size_t i) const noexcept {
        return i >= w_.size() ? hi_ : lo_ + (hi_ - lo_) * (static_cast<double>(i) / static_cast<double>(w_.size()));
    }
    double center(std::size_t i) const noexcept { return 0.5 * (edge(i) + edge(i + 1)); }

    /// Bin of x, or -1 for underflow and bins() for overflow.
    long long find_bin(double x) const {
        if (std::isnan(x)) throw value_error("Histogram: cannot bin NaN");
        if (x < lo_) return -1;
        if (x > hi_) return static_cast<long long>(w_.size());
        const std::size_t n = w_.size();
        if (x == hi_) return static_cast<long long>(n - 1);
        double f = std::floor((x - lo_) / (hi_ - lo_) * static_cast<double>(n));
        std::size_t i = f < 0.0 ? 0 : (f >= static_cast<double>(n) ? n - 1 : static_cast<std::size_t>(f));
        // Rounding can put x one bin off; the edges decide.
        while (i > 0 && x < edge(i)) --i;
        while (i + 1 < n && x >= edge(i + 1)) ++i;
        return static_cast<long long>(i);
    }

    void fill(double x, double weight = 1.0) {
        if (std::isnan(x)) throw value_error("Histogram::fill: value is NaN");
        if (!std::isfinite(weight))
            throw value_error("Histogram::fill: non-finite weight " + detail::error_number(weight) + " for value " +
                              detail::error_number(x));
        const long long b = find_bin(x);
        if (b < 0) {
            under_ += weight;
        } else if (b >= static_cast<long long>(w_.size())) {
            over_ += weight;
        } else {
            w_[static_cast<std::size_t>(b)] += weight;
            w2_[static_cast<std::size_t>(b)] += weight * weight;
        }
        ++entries_;
    }

    /// Fills every value, with weights (empty = all 1).
    void fill(const ValueView& xs, const ValueView& weights = {}) {
        if (!weights.empty()) detail::metric_check_same_size("Histogram::fill", "values", xs, "weights", weights);
        for (std::size_t i = 0; i < xs.size(); ++i) {
            if (std::isnan(xs[i])) throw value_error("Histogram::fill: value " + std::to_string(i) + " is NaN");
            fill(xs[i], detail::metric_weight(weights, i));
        }
    }

    double content(std::size_t i) const { return w_.at(i); }
    double operator[](std::size_t i) const noexcept { return w_[i]; }
    const std::vector<double>& contents() const noexcept { return w_; }
    /// Statistical error of bin i: sqrt(sum of squared weights).
    double error(std::size_t i) const { return std::sqrt(w2_.at(i)); }
    double underflow() const noexcept { return under_; }
    double overflow() const noexcept { return over_; }
    /// Number of fill calls, flows included.
    std::size_t entries() const noexcept { return entries_; }
    /// Sum of the in-range bins (flows excluded).
    double integral() const noexcept {
        double s = 0.0;
        for (double v : w_) s += v;
        return s;
    }
    /// Contents divided by the integral (flows excluded); the integral must be positive.
    std::vector<double> normalized() const {
        const double s = integral();
        if (!(s > 0.0))
            throw value_error("Histogram::normalized: the in-range integral is " + detail::error_number(s) +
                              " (need a positive total)");
        std::vector<double> p(w_);
        for (double& v : p) v /= s;
        return p;
    }

private:
    double lo_, hi_;
    std::vector<double> w_, w2_;
    double under_ = 0.0, over_ = 0.0;
    std::size_t entries_ = 0;
};

} // namespace tapir::metrics
