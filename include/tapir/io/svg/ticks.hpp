#pragma once
/// SVG plotting, axis ticks: 1-2-5 steps, linear and logarithmic tick sets with their labels.

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../../error.hpp"
#include "document.hpp"

namespace tapir::io {

namespace detail {

struct Step {
    long long m = 1;
    int e = 0;
    double value() const { return static_cast<double>(m) * pow10(e); }
    double at(long long k) const { // k * step without accumulating 0.1 + 0.2 style error
        return e >= 0 ? static_cast<double>(k * m) * pow10(e) : static_cast<double>(k * m) / pow10(-e);
    }
};

/// The smallest 1-2-5 step giving at most max_ticks multiples inside [lo, hi] (the step before it when that
/// would leave a single tick).
inline Step nice_step(double lo, double hi, int max_ticks) {
    max_ticks = std::max(max_ticks, 2);
    const int e0 = static_cast<int>(std::floor(std::log10((hi - lo) / max_ticks))) - 1;
    Step prev{1, e0 - 1};
    for (int e = e0;; ++e)
        for (long long m : {1, 2, 5}) {
            const Step s{m, e};
            const double d = s.value(), n = std::floor(hi / d + 1e-9) - std::ceil(lo / d - 1e-9) + 1;
            if (n <= max_ticks) return n >= 2 ? s : prev;
            prev = s;
        }
}

/// Major ticks at multiples of a 1-2-5 step inside [lo, hi]: nice_ticks(0, 1, 7) = {0, 0.2, ..., 1}.
inline std::vector<double> ticks_for(double lo, double hi, Step s) {
    std::vector<double> t;
    const double d = s.value();
    const double k0 = std::ceil(lo / d - 1e-9), k1 = std::floor(hi / d + 1e-9);
    if (!(k1 - k0 < 1e4) || std::abs(k0) > 1e15) return {lo, hi}; // degenerate: range far below resolution
    for (auto k = static_cast<long long>(k0); k <= static_cast<long long>(k1); ++k) t.push_back(s.at(k));
    return t;
}

struct Label {
    std::string base, sup; // sup is drawn as a superscript: "10" + "−3"
};
struct Ticks {
    std::vector<double> major, minor;
    std::vector<Label> labels;
    std::string power; // labels are multiples of 10^power (drawn once at the axis end) when not empty
};
inline double label_width(const Label& l, double fs) { return text_width(l.base, fs) + text_width(l.sup, 0.7 * fs); }

inline Ticks linear_ticks(double lo, double hi, int max_ticks, bool minor) {
    Ticks t;
    const Step s = nice_step(lo, hi, max_ticks);
    t.major = ticks_for(lo, hi, s);
    double mx = 0;
    for (double v : t.major) mx = std::max(mx, std::abs(v));
    const bool sci = mx >= 1e6 || (mx > 0 && mx < 1e-3);
    const int e10 = sci ? static_cast<int>(std::floor(std::log10(mx))) : 0;
    for (double v : t.major) t.labels.push_back({fixed(v / pow10(e10), std::max(0, e10 - s.e)), ""});
    if (sci) t.power = int_label(e10);
    if (minor) {
        const Step ms{s.m == 2 ? 5 : (s.m == 5 ? 1 : 2), s.m == 5 ? s.e : s.e - 1};
        const int div = s.m == 2 ? 4 : 5;
        const double d = ms.value();
        const auto k0 = static_cast<long long>(std::ceil(lo / d - 1e-9));
        const auto k1 = static_cast<long long>(std::floor(hi / d + 1e-9));
        for (auto k = k0; k <= k1 && t.major.size() > 1; ++k)
            if (k % div != 0) t.minor.push_back(ms.at(k));
    }
    return t;
}

/// Log axes: labelled decades (every n-th when crowded), minor ticks at 2..9; narrow ranges fall back to 1-2-5.
inline Ticks log_ticks(double lo, double hi, int max_ticks) {
    Ticks t;
    const int d0 = static_cast<int>(std::ceil(std::log10(lo) - 1e-9));
    const int d1 = static_cast<int>(std::floor(std::log10(hi) + 1e-9));
    const int a = static_cast<int>(std::floor(std::log10(lo))), b = static_cast<int>(std::ceil(std::log10(hi)));
    if (d1 > d0) {
        const int stride = std::max(1, (d1 - d0 + max_ticks) / std::max(max_ticks, 1));
        for (int d = d0; d <= d1; ++d) {
            if (((d % stride) + stride) % stride == 0) {
                t.major.push_back(pow10(d));
                t.labels.push_back({"10", int_label(d)});
            } else {
                t.minor.push_back(pow10(d));
            }
        }
        if (stride == 1 && b - a <= 12)
            for (int d = a; d <= b; ++d)
                for (int m = 2; m <= 9; ++m)
                    if (m * pow10(d) >= lo && m * pow10(d) <= hi) t.minor.push_back(m * pow10(d));
        return t;
    }
    for (int d = a; d <= b; ++d)
        for (int m = 1; m <= 9; ++m) {
            const double v = m * pow10(d);
            if (v < lo * (1 - 1e-9) || v > hi * (1 + 1e-9)) continue;
            if (m == 1 || m == 2 || m == 5) {
                t.major.push_back(v);
                t.labels.push_back({fixed(v, std::max(0, -d)), ""});
            } else {
                t.minor.push_back(v);
            }
        }
    if (t.major.size() < 2) return linear_ticks(lo, hi, max_ticks, false);
    return t;
}

} // namespace detail

/// Public tick helper (1-2-5 steps, at most max_ticks values inside [lo, hi]).
inline std::vector<double> nice_ticks(double lo, double hi, int max_ticks = 7) {
    if (!std::isfinite(lo) || !std::isfinite(hi) || lo > hi)
        throw value_error("nice_ticks: need finite lo <= hi, got [" + std::to_string(lo) + ", " + std::to_string(hi) +
                          "]");
    if (lo == hi) return {lo};
    return detail::ticks_for(lo, hi, detail::nice_step(lo, hi, max_ticks));
}

} // namespace tapir::io
