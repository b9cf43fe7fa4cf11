#pragma once
/// SVG plotting, the document level: series values, styles, legend locations, and the text the
/// writer emits (numbers, escaped text, attributes, colour maps).

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../error.hpp"

namespace tapir::io {

/// Any iterable of numbers (std::vector<float>, Tensor<double>, {1, 2, 3}) converts to Values.
struct Values {
    std::vector<double> v;
    Values() = default;
    Values(std::initializer_list<double> il) : v(il) {}
    template <class C, class E = std::decay_t<decltype(*std::begin(std::declval<const C&>()))>,
              class = std::enable_if_t<std::is_arithmetic_v<E> && !std::is_same_v<E, char> &&
                                       !std::is_same_v<std::decay_t<C>, Values>>>
    Values(const C& c) { // NOLINT: implicit on purpose
        for (const auto& x : c) v.push_back(static_cast<double>(x));
    }
    std::size_t size() const { return v.size(); }
    bool empty() const { return v.empty(); }
    double operator[](std::size_t i) const { return v[i]; }
};

/// Appearance of one series. An empty colour takes the next one of the tab10 cycle.
class Style {
public:
    Style(std::string lbl = {}, std::string col = {}) : label_(std::move(lbl)), color_(std::move(col)) {}
    Style& label(std::string s) { label_ = std::move(s); return *this; }
    Style& color(std::string s) { color_ = std::move(s); return *this; }
    Style& width(double px) { width_ = check(px, 0, 50, "width"); return *this; }
    Style& dashed(bool on = true) { dash_ = on ? "7,4" : ""; return *this; }
    Style& dotted(bool on = true) { dash_ = on ? "2,3" : ""; return *this; }
    Style& alpha(double a) { alpha_ = check(a, 0, 1, "alpha"); return *this; }
    /// Fill the area of a histogram or band with the series colour at this opacity.
    Style& fill(double opacity = 0.35) { fill_ = check(opacity, 0, 1, "fill opacity"); return *this; }
    /// 'o' circle, 's' square, '^' triangle, 'D' diamond, 'x' cross, 0 none.
    Style& marker(char m) {
        if (m != 0 && !std::strchr("os^Dx", m))
            throw value_error(std::string("Style::marker: unknown marker '") + m + "' (use o s ^ D x)");
        marker_ = m;
        return *this;
    }
    Style& marker_size(double px) { marker_size_ = check(px, 0, 100, "marker_size"); return *this; }
    Style& font_size(double px) { font_size_ = check(px, 1, 200, "font_size"); return *this; }
    /// Text anchor: "start", "middle" or "end".
    Style& anchor(std::string a) {
        if (a != "start" && a != "middle" && a != "end")
            throw value_error("Style::anchor: expected start, middle or end, got '" + a + "'");
        anchor_ = std::move(a);
        return *this;
    }

    // Read by Axes when drawing.
    std::string label_, color_, dash_, anchor_ = "start";
    double width_ = 1.8, alpha_ = 1, fill_ = 0, marker_size_ = 3.5, font_size_ = 12;
    char marker_ = 0;

private:
    static double check(double v, double lo, double hi, const char* what) {
        if (!(v >= lo && v <= hi))
            throw value_error(std::string("Style: ") + what + " must be in [" + std::to_string(lo) + ", " +
                              std::to_string(hi) + "], got " + std::to_string(v));
        return v;
    }
};

enum class Loc { best, upper_right, upper_left, lower_left, lower_right, center_right, center_left, lower_center,
                 upper_center, center, none };

namespace detail {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr const char* kCycle[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
inline constexpr const char* kMinus = "\u2212";

inline double pow10(int e) {
    e = std::clamp(e, -400, 400);
    double p = 1;
    for (int i = 0; i < std::abs(e); ++i) p *= 10; // exact up to 1e22, so 1/p rounds correctly
    return e >= 0 ? p : 1 / p;
}

/// Coordinates: two decimals, trailing zeros dropped; never "nan" (callers filter, this is the backstop).
inline std::string num(double v) {
    if (!std::isfinite(v)) v = 0;
    v = std::clamp(v, -1e7, 1e7);
    char buf[48];
    const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 2);
    std::string s(buf, r.ptr);
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
    return s == "-0" ? "0" : s;
}

/// Tick-label number with a fixed count of decimals and a typographic minus.
inline std::string fixed(double v, int decimals) {
    char buf[400];
    const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, decimals);
    std::string s(buf, r.ptr);
    if (s[0] == '-') s = s.find_first_of("123456789") == std::string::npos ? s.substr(1) : kMinus + s.substr(1);
    return s;
}
inline std::string int_label(int e) { return e < 0 ? kMinus + std::to_string(-e) : std::to_string(e); }

/// XML-escapes text and repairs it: invalid UTF-8 becomes U+FFFD, control characters are dropped.
inline std::string escape(const std::string& s) {
    std::string o;
    o.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            switch (c) {
            case '&': o += "&amp;"; break;
            case '<': o += "&lt;"; break;
            case '>': o += "&gt;"; break;
            case '"': o += "&quot;"; break;
            case '\'': o += "&apos;"; break;
            case '\n': case '\r': case '\t': o += ' '; break;
            default: if (c >= 0x20 && c != 0x7f) o += static_cast<char>(c);
            }
            ++i;
            continue;
        }
        const std::size_t n = c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
        bool ok = n != 0 && i + n <= s.size();
        for (std::size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
        if (ok) { // reject overlong forms, surrogates, > U+10FFFF and the non-characters U+FFFE/FFFF
            const auto c1 = static_cast<unsigned char>(s[i + 1]);
            ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0) && !(c == 0xF0 && c1 < 0x90) &&
                 !(c == 0xF4 && c1 >= 0x90) &&
                 !(c == 0xEF && c1 == 0xBF && static_cast<unsigned char>(s[i + 2]) >= 0xBE);
        }
        if (ok) o.append(s, i, n);
        else o += "\uFFFD";
        i += ok ? n : 1;
    }
    return o;
}

/// Rough advance width of DejaVu Sans / Helvetica text, for layout only.
inline double text_width(const std::string& s, double size) {
    double w = 0;
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if ((c & 0xC0) == 0x80) continue;
        if (c >= 0x80) w += 0.7;
        else if (c != 0 && std::strchr("iljtfrI.,:;!|' ()[]", c)) w += 0.34;
        else if (c != 0 && std::strchr("mwMW@%", c)) w += 0.92;
        else if (c >= 'A' && c <= 'Z') w += 0.72;
        else w += 0.64;
    }
    return w * size;
}

inline std::string attr(const char* name, const std::string& v) { return std::string(" ") + name + "=\"" + v + "\""; }
inline std::string attr(const char* name, double v) { return attr(name, num(v)); }
inline std::string pt(double x, double y) { return num(x) + " " + num(y); }
inline std::string rect(double x, double y, double w, double h) {
    return "<rect" + attr("x", x) + attr("y", y) + attr("width", w) + attr("height", h);
}

/// Colour maps as evenly spaced stops, interpolated linearly in sRGB.
inline std::vector<unsigned> colormap_stops(const std::string& name) {
    if (name == "viridis")
        return {0x440154, 0x472d7b, 0x3b528b, 0x2c728e, 0x21918c, 0x28ae80, 0x5ec962, 0xaddc30, 0xfde725};
    if (name == "RdBu_r")
        return {0x053061, 0x2166ac, 0x4393c3, 0x92c5de, 0xd1e5f0, 0xf7f7f7,
                0xfddbc7, 0xf4a582, 0xd6604d, 0xb2182b, 0x67001f};
    if (name == "Blues")
        return {0xf7fbff, 0xdeebf7, 0xc6dbef, 0x9ecae1, 0x6baed6, 0x4292c6, 0x2171b5, 0x08519c, 0x08306b};
    throw value_error("heatmap: unknown colour map '" + name + "' (use viridis, RdBu_r or Blues)");
}
/// Returns "#rrggbb" for t in [0, 1] and the relative luminance through lum.
inline std::string colormap(const std::vector<unsigned>& stops, double t, double* lum = nullptr) {
    t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * static_cast<double>(stops.size() - 1);
    const auto i = std::min(static_cast<std::size_t>(t), stops.size() - 2);
    const double f = t - static_cast<double>(i);
    double ch[3];
    char buf[8];
    for (int k = 0; k < 3; ++k) {
        const int sh = 16 - 8 * k;
        ch[k] = (1 - f) * ((stops[i] >> sh) & 255u) + f * ((stops[i + 1] >> sh) & 255u);
    }
    std::snprintf(buf, sizeof buf, "#%02x%02x%02x", static_cast<unsigned>(std::lround(ch[0])),
                  static_cast<unsigned>(std::lround(ch[1])), static_cast<unsigned>(std::lround(ch[2])));
    if (lum) *lum = (0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2]) / 255;
    return buf;
}

} // namespace detail

} // namespace tapir::io
