#pragma once
/// Discovery significances of a counting experiment: the HiggsML AMS and the Asimov Z_A with a
/// relative background systematic. Double precision throughout, accurate for s << b.

#include <algorithm>
#include <cmath>
#include <string>

#include "../error.hpp"
#include "common.hpp"

namespace tapir::metrics {
namespace detail {

/// sum_{k>=2} (-1)^k term_k / (k (k-1)) with term_2 = term and term_{k+1} = term_k x, to 1e-17
/// relative: the small-argument series of the two functions below.
inline double alternating_series(double term, double x) {
    double sum = 0.0;
    for (int k = 2; k < 60; ++k) {
        const double t = term / (static_cast<double>(k) * static_cast<double>(k - 1));
        sum += (k % 2 == 0) ? t : -t;
        if (t <= 1e-17 * sum) break;
        term *= x;
    }
    return sum;
}

/// g(x) = (1 + x) ln(1 + x) - x for x >= 0, without the cancellation at small x
/// (series sum_{k>=2} (-1)^k x^k / (k (k-1)) below 0.1).
inline double xlog1px_minus_x(double x) {
    if (x > 0.1) return (1.0 + x) * std::log1p(x) - x;
    return alternating_series(x * x, x);
}

/// g(y) / y, continuous at 0 where it vanishes (series below 0.1).
inline double xlog1px_minus_x_over_x(double y) {
    if (y > 0.1) return xlog1px_minus_x(y) / y;
    return alternating_series(y, y);
}

inline void check_yield(const char* fn, const char* name, double v) {
    if (!(std::isfinite(v) && v >= 0.0))
        throw value_error(std::string(fn) + ": " + name + " must be finite and >= 0, got " + error_number(v));
}

} // namespace detail

/// Kaggle HiggsML approximate median significance:
/// AMS = sqrt(2((s + b + b_reg) ln(1 + s/(b + b_reg)) - s)), b_reg = 10 by default.
/// AMS(100, 1000) = 3.09669.
inline double ams(double s, double b, double b_reg = 10.0) {
    detail::check_yield("ams", "s", s);
    detail::check_yield("ams", "b", b);
    detail::check_yield("ams", "b_reg", b_reg);
    const double bb = b + b_reg;
    if (!(bb > 0.0)) throw value_error("ams: b + b_reg must be positive, got " + detail::error_number(bb));
    return std::sqrt(std::max(0.0, 2.0 * bb * detail::xlog1px_minus_x(s / bb)));
}

/// Asimov discovery significance with relative background uncertainty r (sigma_b = r b),
/// Cowan et al.:
///   Z_A = sqrt(2[(s+b) ln((s+b)(b+sb^2)/(b^2+(s+b)sb^2)) - (b^2/sb^2) ln(1 + sb^2 s/(b(b+sb^2)))]).
/// Written as Z_A^2 / 2 = b [g(x) - x g(y)/y] with x = s/b, u = r^2 b, y = x u/(1+u) and
/// g(t) = (1+t) ln(1+t) - t, which never divides by r: r = 0 gives exactly the
/// no-systematic sqrt(2((s+b) ln(1+s/b) - s)) and r -> 0 approaches it smoothly.
/// Z_A(14, 5, 0.3) = 3.6149635; Z_A(100, 1000, 0) = 3.11165.
inline double asimov_significance(double s, double b, double r = 0.0) {
    detail::check_yield("asimov_significance", "s", s);
    detail::check_yield("asimov_significance", "relative systematic r", r);
    if (!(std::isfinite(b) && b > 0.0))
        throw value_error("asimov_significance: b must be finite and positive, got " + detail::error_number(b));
    const double x = s / b;
    const double u = r * r * b;
    const double y = x * (u / (1.0 + u));
    const double half = b * (detail::xlog1px_minus_x(x) - x * detail::xlog1px_minus_x_over_x(y));
    return std::sqrt(std::max(0.0, 2.0 * half));
}

} // namespace tapir::metrics
