#pragma once
// Sample statistics shared by the tests that check generated events against known distributions.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

namespace tapir_test {

inline double mean(const std::vector<double>& x) {
    return std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size());
}

/// Unbiased sample variance (n - 1 in the denominator).
inline double variance(const std::vector<double>& x) {
    const double m = mean(x);
    double s = 0;
    for (double v : x) s += (v - m) * (v - m);
    return s / static_cast<double>(x.size() - 1);
}

/// The p-quantile with linear interpolation between order statistics (numpy's default).
inline double quantile(std::vector<double> x, double p) {
    std::sort(x.begin(), x.end());
    const double pos = p * static_cast<double>(x.size() - 1);
    const auto i = static_cast<std::size_t>(pos);
    const double f = pos - static_cast<double>(i);
    return i + 1 < x.size() ? x[i] * (1 - f) + x[i + 1] * f : x[i];
}

/// Pearson correlation coefficient.
inline double correlation(const std::vector<double>& x, const std::vector<double>& y) {
    const double mx = mean(x), my = mean(y);
    double sxy = 0, sxx = 0, syy = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    return sxy / std::sqrt(sxx * syy);
}

/// Maximum-likelihood slope of exp(s m) truncated to [lo, hi], from the sample mean (bisection).
inline double exponential_slope(const std::vector<double>& m, double lo, double hi) {
    const double target = mean(m) - lo, L = hi - lo;
    double a = 1e-6, b = 1.0;  // decay rate
    for (int it = 0; it < 100; ++it) {
        const double r = 0.5 * (a + b);
        const double expected = 1 / r - L / std::expm1(r * L);
        (expected > target ? a : b) = r;
    }
    return -0.5 * (a + b);
}

} // namespace tapir_test
