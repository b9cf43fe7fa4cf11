#pragma once
/// SVG plotting, one panel: the series kinds an Axes holds (lines, histograms, scatter, error bars,
/// bands, heatmaps, text), its limits, and its drawing (layout, ticks, clipping, legend).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../../error.hpp"
#include "document.hpp"
#include "ticks.hpp"

namespace tapir::io {

namespace detail {

struct Box {
    double x0, y0, x1, y1;
};
/// Liang-Barsky: does the segment touch the box? Drives the "best" legend position.
inline bool hits(double x0, double y0, double x1, double y1, const Box& b) {
    double t0 = 0, t1 = 1;
    const double p[4] = {x0 - x1, x1 - x0, y0 - y1, y1 - y0}, q[4] = {x0 - b.x0, b.x1 - x0, y0 - b.y0, b.y1 - y0};
    for (int i = 0; i < 4; ++i) {
        if (p[i] == 0) {
            if (q[i] < 0) return false;
        } else if (p[i] < 0) {
            t0 = std::max(t0, q[i] / p[i]);
        } else {
            t1 = std::min(t1, q[i] / p[i]);
        }
    }
    return t0 <= t1;
}

enum class Kind { line, hist, scatter, errorbar, band, hline, vline, text, annotate };
struct Item {
    Kind kind;
    Style st;
    std::vector<double> x, y, lo, e, ex; // lo: histogram bottom / band lower edge; e, ex: error bars
    std::vector<std::string> labels;
};
struct Heatmap {
    std::vector<double> v;
    std::size_t rows = 0, cols = 0;
    std::vector<std::string> row_labels, col_labels;
    double vmin = 0, vmax = 1;
    std::string cmap, cbar_label;
};

} // namespace detail

class Axes {
public:
    Axes& line(const Values& xs, const Values& ys, Style st = {}) {
        same_size("line", xs, ys, "ys");
        return add(detail::Kind::line, std::move(st), xs.v, ys.v);
    }
    /// Histogram from bin edges (n + 1) and contents (n), drawn as steps from `bottom` (default 0; for stacks).
    Axes& step_histogram(const Values& edges, const Values& counts, Style st = {}, const Values& bottom = {}) {
        if (edges.size() != counts.size() + 1)
            throw shape_error("Axes::step_histogram: need counts + 1 edges, got " + std::to_string(edges.size()) +
                              " edges for " + std::to_string(counts.size()) + " counts");
        for (std::size_t i = 0; i + 1 < edges.size(); ++i)
            if (!(edges[i] < edges[i + 1]) || !std::isfinite(edges[i + 1]) || !std::isfinite(edges[0]))
                throw value_error("Axes::step_histogram: edges must be finite and increasing (edge " +
                                  std::to_string(i) + " = " + std::to_string(edges[i]) + ", next " +
                                  std::to_string(edges[i + 1]) + ")");
        if (!bottom.empty()) same_size("step_histogram", counts, bottom, "bottom");
        add(detail::Kind::hist, std::move(st), edges.v, counts.v);
        items_.back().lo = bottom.empty() ? std::vector<double>(counts.size(), 0.0) : bottom.v;
        return *this;
    }
    /// Fills nbins equal bins on [lo, hi] (hi included, outside and non-finite values ignored) and draws them;
    /// density normalises to unit area. Returns the bin contents.
    std::vector<double> histogram(const Values& values, const Values& weights, std::size_t nbins, double lo, double hi,
                                  Style st = {}, bool density = false) {
        if (!weights.empty()) same_size("histogram", values, weights, "weights");
        if (nbins == 0 || !std::isfinite(lo) || !std::isfinite(hi) || !(lo < hi))
            throw value_error("Axes::histogram: need nbins > 0 and finite lo < hi, got nbins=" + std::to_string(nbins) +
                              " range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        std::vector<double> c(nbins, 0.0), edges(nbins + 1);
        const double w = (hi - lo) / static_cast<double>(nbins);
        for (std::size_t i = 0; i < values.size(); ++i) {
            const double v = values[i], wt = weights.empty() ? 1.0 : weights[i];
            if (!std::isfinite(v) || !std::isfinite(wt) || v < lo || v > hi) continue;
            c[std::min(nbins - 1, static_cast<std::size_t>((v - lo) / w))] += wt;
        }
        double total = 0;
        for (double x : c) total += x;
        if (density && total != 0)
            for (double& x : c) x /= total * w;
        for (std::size_t i = 0; i <= nbins; ++i) edges[i] = i == nbins ? hi : lo + static_cast<double>(i) * w;
        step_histogram(edges, c, std::move(st));
        return c;
    }
    std::vector<double> histogram(const Values& values, std::size_t nbins, double lo, double hi, Style st = {},
                                  bool density = false) {
        return histogram(values, Values{}, nbins, lo, hi, std::move(st), density);
    }
    /// Layers stacked bottom-up and filled (opaque unless the style says otherwise).
    Axes& stacked_histogram(const Values& edges, const std::vector<std::vector<double>>& layers,
                            std::vector<Style> styles = {}) {
        if (!styles.empty() && styles.size() != layers.size())
            throw shape_error("Axes::stacked_histogram: " + std::to_string(layers.size()) + " layers but " +
                              std::to_string(styles.size()) + " styles");
        std::vector<double> base(edges.empty() ? 0 : edges.size() - 1, 0.0);
        for (std::size_t l = 0; l < layers.size(); ++l) {
            Style st = styles.empty() ? Style() : styles[l];
            if (st.fill_ == 0) st.fill(0.85);
            Values top(layers[l]);
            same_size("stacked_histogram", Values(base), top, "layer " + std::to_string(l));
            for (std::size_t i = 0; i < base.size(); ++i) top.v[i] = base[i] + (std::isfinite(top[i]) ? top[i] : 0.0);
            step_histogram(edges, top, std::move(st), base);
            base = top.v;
        }
        return *this;
    }
    /// Markers, with an optional text label next to each point (e.g. the λ of each working point).
    Axes& scatter(const Values& xs, const Values& ys, Style st = {}, std::vector<std::string> point_labels = {}) {
        same_size("scatter", xs, ys, "ys");
        if (!point_labels.empty() && point_labels.size() != xs.size())
            throw shape_error("Axes::scatter: " + std::to_string(xs.size()) + " points but " +
                              std::to_string(point_labels.size()) + " point labels");
        if (st.marker_ == 0) st.marker('o');
        add(detail::Kind::scatter, std::move(st), xs.v, ys.v);
        items_.back().labels = std::move(point_labels);
        return *this;
    }
    /// Data points with symmetric vertical (and optional horizontal) error bars.
    Axes& errorbars(const Values& xs, const Values& ys, const Values& yerr, Style st = {}, const Values& xerr = {}) {
        same_size("errorbars", xs, ys, "ys");
        same_size("errorbars", xs, yerr, "yerr");
        if (!xerr.empty()) same_size("errorbars", xs, xerr, "xerr");
        for (std::size_t i = 0; i < yerr.size() + xerr.size(); ++i)
            if ((i < yerr.size() ? yerr[i] : xerr[i - yerr.size()]) < 0)
                throw value_error("Axes::errorbars: negative error at point " +
                                  std::to_string(i < yerr.size() ? i : i - yerr.size()));
        if (st.marker_ == 0) st.marker('o');
        add(detail::Kind::errorbar, std::move(st), xs.v, ys.v);
        items_.back().e = yerr.v;
        items_.back().ex = xerr.empty() ? std::vector<double>(xs.size(), 0.0) : xerr.v;
        return *this;
    }
    /// Shaded band between lower(x) and upper(x), e.g. a ±1σ envelope.
    Axes& fill_between(const Values& xs, const Values& lower, const Values& upper, Style st = {}) {
        same_size("fill_between", xs, lower, "lower");
        same_size("fill_between", xs, upper, "upper");
        if (st.fill_ == 0) st.fill(0.25);
        add(detail::Kind::band, std::move(st), xs.v, upper.v);
        items_.back().lo = lower.v;
        return *this;
    }
    Axes& hline(double y, Style st = {}) { return ref_line(detail::Kind::hline, y, std::move(st)); }
    Axes& vline(double x, Style st = {}) { return ref_line(detail::Kind::vline, x, std::move(st)); }
    /// Text at data coordinates; '\n' starts a new line.
    Axes& text(double x, double y, std::string s, Style st = {}) {
        return add_text(detail::Kind::text, x, y, std::move(s), std::move(st));
    }
    /// Text at axes-fraction coordinates ((0, 0) bottom left, (1, 1) top right).
    Axes& annotate(double fx, double fy, std::string s, Style st = {}) {
        return add_text(detail::Kind::annotate, fx, fy, std::move(s), std::move(st));
    }
    /// rows x cols matrix (row-major), row 0 at the top, with a colour bar; values printed when cells are large
    /// enough. NaN limits are taken from the data; an empty cmap means RdBu_r when the range straddles 0, else viridis.
    Axes& heatmap(const Values& m, std::size_t rows, std::size_t cols, std::vector<std::string> row_labels = {},
                  std::vector<std::string> col_labels = {}, double vmin = detail::kNaN, double vmax = detail::kNaN,
                  std::string cmap = {}, std::string cbar_label = {}) {
        if (m.size() != rows * cols || rows == 0)
            throw shape_error("Axes::heatmap: " + std::to_string(m.size()) + " values for a " + std::to_string(rows) +
                              " x " + std::to_string(cols) + " matrix");
        if ((!row_labels.empty() && row_labels.size() != rows) || (!col_labels.empty() && col_labels.size() != cols))
            throw shape_error("Axes::heatmap: " + std::to_string(row_labels.size()) + " row / " +
                              std::to_string(col_labels.size()) + " column labels for a " + std::to_string(rows) +
                              " x " + std::to_string(cols) + " matrix");
        double lo = std::numeric_limits<double>::infinity(), hi = -lo;
        for (double v : m.v)
            if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
        if (!std::isfinite(vmin)) vmin = lo <= hi ? lo : 0;
        if (!std::isfinite(vmax)) vmax = lo <= hi ? hi : 1;
        if (!(vmin < vmax)) vmax = vmin + 1;
        if (cmap.empty()) cmap = vmin < 0 && vmax > 0 ? "RdBu_r" : "viridis";
        detail::colormap_stops(cmap); // validate the name now
        heat_ = {m.v, rows, cols, std::move(row_labels), std::move(col_labels), vmin, vmax, std::move(cmap),
                 std::move(cbar_label)};
        has_heat_ = true;
        return *this;
    }

    Axes& set_title(std::string s) { title_ = std::move(s); return *this; }
    Axes& set_xlabel(std::string s) { xlabel_ = std::move(s); return *this; }
    Axes& set_ylabel(std::string s) { ylabel_ = std::move(s); return *this; }
    Axes& set_xlim(double lo, double hi) { return set_lim(xlim_, lo, hi, "set_xlim"); }
    Axes& set_ylim(double lo, double hi) { return set_lim(ylim_, lo, hi, "set_ylim"); }
    Axes& set_log_x(bool on = true) { logx_ = on; return *this; }
    Axes& set_log_y(bool on = true) { logy_ = on; return *this; }
    /// Legend placement; it is drawn whenever a series has a label, Loc::none hides it.
    Axes& legend(Loc where = Loc::best) { loc_ = where; return *this; }
    Axes& grid(bool on = true) { grid_ = on; return *this; }
    Axes& minor_ticks(bool on = true) { minor_ = on; return *this; }

    /// Draws into the cell (x, y, w, h) of a figure; id keeps clip-path ids unique. When the legend would hide
    /// data and the y limits are automatic, the y range is extended upwards to make room for it.
    void render(std::string& o, double cx, double cy, double cw, double ch, const std::string& id) const {
        std::string first;
        const double need = draw(first, cx, cy, cw, ch, id, 0);
        if (need > 0) draw(o, cx, cy, cw, ch, id, need);
        else o += first;
    }

private:
    struct Lim {
        double lo = 0, hi = 1;
        bool set = false;
    };
    struct Scale {
        double lo, hi, p0, p1;
        bool log;
        double t(double v) const { return log ? std::log10(v) : v; }
        bool ok(double v) const { return std::isfinite(v) && (!log || v > 0); }
        double operator()(double v) const {
            if (log && !(v > 0)) return p0 - 0.1 * (p1 - p0); // just outside the axis: clipped
            return std::clamp(p0 + (t(v) - t(lo)) / (t(hi) - t(lo)) * (p1 - p0), -1e6, 1e6);
        }
    };

    static void same_size(const char* fn, const Values& a, const Values& b, const std::string& what) {
        if (a.size() != b.size())
            throw shape_error(std::string("Axes::") + fn + ": sizes differ: " + std::to_string(a.size()) + " vs " +
                              std::to_string(b.size()) + " (" + what + ")");
    }
    Axes& add(detail::Kind k, Style st, std::vector<double> x, std::vector<double> y) {
        const bool neutral = k == detail::Kind::hline || k == detail::Kind::vline || k == detail::Kind::text ||
                             k == detail::Kind::annotate;
        if (st.color_.empty()) st.color_ = neutral ? "#333333" : detail::kCycle[ncolor_++ % 10];
        items_.push_back({k, std::move(st), std::move(x), std::move(y), {}, {}, {}, {}});
        return *this;
    }
    Axes& ref_line(detail::Kind k, double v, Style st) {
        if (st.width_ == 1.8) st.width(1.2);
        return add(k, std::move(st), {v}, {v});
    }
    Axes& add_text(detail::Kind k, double x, double y, std::string s, Style st) {
        add(k, std::move(st), {x}, {y});
        items_.back().labels = {std::move(s)};
        return *this;
    }
    Axes& set_lim(Lim& l, double lo, double hi, const char* fn) {
        if (!std::isfinite(hi - lo) || !(lo < hi))
            throw value_error(std::string("Axes::") + fn + ": need finite lo < hi, got [" + std::to_string(lo) + ", " +
                              std::to_string(hi) + "]");
        l = {lo, hi, true};
        return *this;
    }
    Lim limits(bool xaxis) const;
    double draw(std::string& o, double cx, double cy, double cw, double ch, const std::string& id,
                double headroom) const;

    std::vector<detail::Item> items_;
    detail::Heatmap heat_;
    bool has_heat_ = false, logx_ = false, logy_ = false, grid_ = false, minor_ = false;
    Lim xlim_, ylim_;
    std::string title_, xlabel_, ylabel_;
    Loc loc_ = Loc::best;
    std::size_t ncolor_ = 0;
};

inline Axes::Lim Axes::limits(bool xaxis) const {
    const bool lg = xaxis ? logx_ : logy_;
    const Lim& fixed_lim = xaxis ? xlim_ : ylim_;
    if (fixed_lim.set) {
        if (lg && !(fixed_lim.lo > 0))
            throw value_error(std::string("Axes: log ") + (xaxis ? "x" : "y") + " axis needs positive limits, got [" +
                              std::to_string(fixed_lim.lo) + ", " + std::to_string(fixed_lim.hi) + "]");
        return fixed_lim;
    }
    if (has_heat_) return {0, static_cast<double>(xaxis ? heat_.cols : heat_.rows), true};
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    std::vector<double> sticky;
    auto add = [&](double v) { // clamped so that padding and tick steps stay finite
        if (std::isfinite(v) && (!lg || v > 0)) v = std::clamp(v, -1e300, 1e300), lo = std::min(lo, v), hi = std::max(hi, v);
    };
    for (const auto& it : items_) {
        using K = detail::Kind;
        const std::vector<double>& own = xaxis ? it.x : it.y;
        const std::vector<double>& other = xaxis ? it.y : it.x;
        switch (it.kind) {
        case K::line: case K::scatter: case K::band:
            for (std::size_t i = 0; i < own.size(); ++i)
                if (std::isfinite(other[i])) add(own[i]);
            if (it.kind == K::band && !xaxis)
                for (double v : it.lo) add(v);
            break;
        case K::errorbar:
            for (std::size_t i = 0; i < own.size(); ++i) {
                const double e = std::isfinite((xaxis ? it.ex : it.e)[i]) ? (xaxis ? it.ex : it.e)[i] : 0.0;
                if (std::isfinite(other[i])) add(own[i] - e), add(own[i] + e), add(own[i]);
            }
            break;
        case K::hist:
            for (double v : own) add(v);
            for (double v : (xaxis ? it.x : it.lo)) add(v), sticky.push_back(v);
            break;
        case K::hline: if (!xaxis) add(it.y[0]); break;
        case K::vline: if (xaxis) add(it.x[0]); break;
        default: break;
        }
    }
    if (lo > hi) return lg ? Lim{1, 10, false} : Lim{0, 1, false};
    auto T = [&](double v) { return lg ? std::log10(v) : v; };
    auto inv = [&](double v) { return lg ? std::pow(10.0, std::clamp(v, -300.0, 300.0)) : v; };
    double a = T(lo), b = T(hi);
    if (a == b) {
        const double d = lg || a == 0 ? 0.5 : 0.1 * std::abs(a);
        return {inv(a - d), inv(b + d), false};
    }
    double pa = a - 0.05 * (b - a), pb = b + 0.05 * (b - a);
    for (double s : sticky) { // do not pad past a histogram baseline or outer edge
        if (!std::isfinite(s) || (lg && !(s > 0))) continue;
        if (pa < T(s) && T(s) <= a) pa = T(s);
        if (pb > T(s) && T(s) >= b) pb = T(s);
    }
    return {inv(pa), inv(pb), false};
}

/// Returns the fraction of the plot height to add on top for the legend (0: nothing to do).
inline double Axes::draw(std::string& o, double cx, double cy, double cw, double ch, const std::string& id,
                         double headroom) const {
    using namespace detail;
    using std::to_string;
    constexpr double TF = 12, LF = 14, HF = 15, TL = 5; // tick, label and title font sizes; tick length
    const Lim xl = limits(true);
    Lim yl = limits(false);
    const bool lx = logx_ && !has_heat_, ly = logy_ && !has_heat_;
    if (headroom > 0) {
        if (ly) yl.hi = std::pow(10.0, std::log10(yl.lo) + (std::log10(yl.hi) - std::log10(yl.lo)) / (1 - headroom));
        else yl.hi = yl.lo + (yl.hi - yl.lo) / (1 - headroom);
    }
    auto make_ticks = [&](const Lim& l, bool lg, double len, double spacing) {
        return lg ? log_ticks(l.lo, l.hi, std::max(2, static_cast<int>(len / spacing)))
                  : linear_ticks(l.lo, l.hi, std::max(2, static_cast<int>(len / spacing)), minor_);
    };
    auto widest = [&](const std::vector<std::string>& v, double fs) {
        double w = 0;
        for (const auto& s : v) w = std::max(w, text_width(s, fs));
        return w;
    };

    // Layout: margins follow from the tick labels, which depend on the axis length; one refinement suffices.
    const double hfs = has_heat_ ? std::clamp(cw / static_cast<double>(heat_.cols + 6) * 0.45, 8.0, TF) : TF;
    double top = 14 + (title_.empty() ? 0 : HF + 10);
    double bottom = 12 + TL + 4 + TF + (xlabel_.empty() ? 0 : LF + 10);
    double left = 12 + (ylabel_.empty() ? 0 : LF + 10), right = 18;
    Ticks yt, xt;
    bool rotate = false;
    if (has_heat_) {
        const double cell = std::min((cw - left - right - 120) / static_cast<double>(heat_.cols),
                                     (ch - top - bottom - 40) / static_cast<double>(heat_.rows));
        const double wc = widest(heat_.col_labels, hfs);
        rotate = wc > cell - 4;
        if (rotate) bottom += wc * 0.72 - hfs;
        left += widest(heat_.row_labels, hfs) + 6;
        const double ph = ch - top - bottom;
        yt = linear_ticks(heat_.vmin, heat_.vmax, std::max(2, static_cast<int>(ph / 45)), false);
        double wl = 0;
        for (const auto& l : yt.labels) wl = std::max(wl, label_width(l, 11));
        right = 12 + 14 + 4 + wl + (heat_.cbar_label.empty() ? 0 : LF + 8) + 16;
    } else {
        yt = make_ticks(yl, ly, ch - top - bottom, 45);
        double wl = 0;
        for (const auto& l : yt.labels) wl = std::max(wl, label_width(l, TF));
        left += wl + TL + 5;
    }
    double pw = std::max(cw - left - right, 10.0), ph = std::max(ch - top - bottom, 10.0);
    if (has_heat_) { // square cells, centred in the cell
        const double cell = std::min(pw / static_cast<double>(heat_.cols), ph / static_cast<double>(heat_.rows));
        left += (pw - cell * static_cast<double>(heat_.cols)) / 2;
        top += (ph - cell * static_cast<double>(heat_.rows)) / 2;
        pw = cell * static_cast<double>(heat_.cols);
        ph = cell * static_cast<double>(heat_.rows);
    } else {
        for (double sp = 75;; sp *= 1.25) { // fewer x ticks until the labels do not collide
            xt = make_ticks(xl, lx, pw, sp);
            double wl = 0;
            for (const auto& l : xt.labels) wl = std::max(wl, label_width(l, TF));
            if (xt.major.size() < 3 || pw / static_cast<double>(xt.major.size() - 1) > wl + 12 || sp > pw) break;
        }
        // Keep a tick label at the right end inside the figure.
        if (!xt.labels.empty() && std::abs(xt.major.back() - xl.hi) <= 1e-9 * std::max(1.0, std::abs(xl.hi))) {
            const double half = label_width(xt.labels.back(), TF) / 2 + 4;
            if (half > right) pw -= half - right;
        }
    }
    const double x0 = cx + left, y0 = cy + top, x1 = x0 + pw, y1 = y0 + ph;
    const Scale X{xl.lo, xl.hi, x0, x1, lx}, Y{yl.lo, yl.hi, y1, y0, ly};
    const std::string clip = "tapir-clip-" + id;

    o += "<g class=\"axes\">\n<defs><clipPath" + attr("id", clip) + ">" + rect(x0, y0, pw, ph) +
         "/></clipPath></defs>\n";
    o += rect(x0, y0, pw, ph) + " fill=\"white\"/>\n";
    auto text = [&](double x, double y, const std::string& s, double fs, const char* anchor,
                    const std::string& extra = {}) {
        o += "<text" + attr("x", x) + attr("y", y) + attr("font-size", fs) + " text-anchor=\"" + anchor + "\"" + extra +
             ">" + escape(s) + "</text>\n";
    };
    auto label_text = [&](double x, double y, const Label& l, double fs, const char* anchor, const std::string& cls) {
        o += "<text class=\"" + cls + "\"" + attr("x", x) + attr("y", y) + attr("font-size", fs) + " text-anchor=\"" +
             anchor + "\">" + escape(l.base);
        if (!l.sup.empty()) o += "<tspan dy=\"-0.45em\" font-size=\"72%\">" + escape(l.sup) + "</tspan>";
        o += "</text>\n";
    };
    auto stroke = [&](const Style& s) {
        std::string a = " fill=\"none\"" + attr("stroke", escape(s.color_)) + attr("stroke-width", s.width_);
        if (!s.dash_.empty()) a += attr("stroke-dasharray", s.dash_);
        if (s.alpha_ < 1) a += attr("stroke-opacity", s.alpha_);
        return a;
    };
    auto marker = [&](double x, double y, const Style& s) {
        const double r = s.marker_size_;
        const std::string fill = attr("fill", escape(s.color_)) + (s.alpha_ < 1 ? attr("fill-opacity", s.alpha_) : "");
        auto poly = [&](std::initializer_list<std::pair<double, double>> pts) { // closed, in units of r
            std::string d;
            for (const auto& q : pts) d += (d.empty() ? "M" : "L") + pt(x + q.first * r, y + q.second * r);
            o += "<path d=\"" + d + "Z\"" + fill + "/>\n";
        };
        switch (s.marker_) {
        case 'o': o += "<circle" + attr("cx", x) + attr("cy", y) + attr("r", r) + fill + "/>\n"; break;
        case 's': poly({{-1, -1}, {1, -1}, {1, 1}, {-1, 1}}); break;
        case '^': poly({{0, -1.25}, {1.1, 0.65}, {-1.1, 0.65}}); break;
        case 'D': poly({{0, -1.3}, {1.1, 0}, {0, 1.3}, {-1.1, 0}}); break;
        case 'x':
            o += "<path d=\"M" + pt(x - r, y - r) + "L" + pt(x + r, y + r) + "M" + pt(x + r, y - r) + "L" +
                 pt(x - r, y + r) + "\"" + attr("stroke", escape(s.color_)) + " stroke-width=\"1.5\"/>\n";
            break;
        default: break;
        }
    };

    // Grid and heatmap cells sit under everything else.
    if (grid_ && !has_heat_) {
        std::string d;
        for (double v : xt.major) d += "M" + pt(X(v), y0) + "V" + num(y1);
        for (double v : yt.major) d += "M" + pt(x0, Y(v)) + "H" + num(x1);
        if (!d.empty())
            o += "<path class=\"grid\" d=\"" + d + "\" fill=\"none\" stroke=\"#e2e2e2\" stroke-width=\"0.8\"/>\n";
    }
    if (has_heat_) {
        const auto stops = colormap_stops(heat_.cmap);
        const double cw1 = pw / static_cast<double>(heat_.cols), ch1 = ph / static_cast<double>(heat_.rows);
        const int dec = heat_.vmax - heat_.vmin >= 100 ? 0 : heat_.vmax - heat_.vmin >= 10 ? 1 : 2;
        std::vector<std::string> vals(heat_.v.size());
        auto fit = [&](bool drop_zero) { // one font size for all cells, from the widest value
            double w = 0;
            for (std::size_t i = 0; i < vals.size(); ++i) {
                if (!std::isfinite(heat_.v[i])) continue;
                vals[i] = fixed(heat_.v[i], dec);
                const auto z = vals[i].find("0.");
                if (drop_zero && z != std::string::npos && (z == 0 || (z == 3 && vals[i].compare(0, 3, kMinus) == 0)))
                    vals[i].erase(z, 1);
                w = std::max(w, text_width(vals[i], 1));
            }
            return std::min({ch1 * 0.42, (cw1 - 5) / (w + 0.01), 12.0});
        };
        double fs = fit(false);
        if (fs < 8.5 && dec > 0) fs = fit(true);
        o += "<g class=\"heatmap\" stroke=\"white\"" + attr("stroke-width", std::min({1.0, cw1 / 25, ch1 / 25})) +
             ">\n";
        for (std::size_t r = 0; r < heat_.rows; ++r)
            for (std::size_t c = 0; c < heat_.cols; ++c) {
                const double v = heat_.v[r * heat_.cols + c], cx0 = x0 + static_cast<double>(c) * cw1,
                             cy0 = y0 + static_cast<double>(r) * ch1;
                double lum = 1;
                const double t = (v - heat_.vmin) / (heat_.vmax - heat_.vmin);
                const std::string col = std::isfinite(v) ? colormap(stops, t, &lum) : "#d9d9d9";
                o += rect(cx0, cy0, cw1, ch1) + attr("fill", col) + "/>\n";
                if (!std::isfinite(v)) continue;
                if (fs >= 6.5)
                    text(cx0 + cw1 / 2, cy0 + ch1 / 2, vals[r * heat_.cols + c], fs, "middle",
                         " dy=\"0.35em\" stroke=\"none\"" + attr("fill", lum > 0.45 ? "#111111" : "#ffffff"));
            }
        o += "</g>\n";
    }

    // Data, clipped to the plot area; legend swatch and hit segments collected on the way.
    std::vector<Box> segs, refs, areas; // data segments (points: degenerate), reference lines, filled areas
    o += "<g clip-path=\"url(#" + clip + ")\">\n";
    for (const auto& it : items_) {
        const Style& s = it.st;
        const std::size_t n = it.x.size();
        switch (it.kind) {
        case Kind::line: {
            std::string d;
            bool pen = false;
            for (std::size_t i = 0; i < n; ++i) {
                if (!X.ok(it.x[i]) || !Y.ok(it.y[i])) { pen = false; continue; }
                d += (pen ? "L" : "M") + pt(X(it.x[i]), Y(it.y[i]));
                if (pen) segs.push_back({X(it.x[i - 1]), Y(it.y[i - 1]), X(it.x[i]), Y(it.y[i])});
                else segs.push_back({X(it.x[i]), Y(it.y[i]), X(it.x[i]), Y(it.y[i])});
                pen = true;
            }
            if (!d.empty())
                o += "<path class=\"line\" d=\"" + d + "\"" + stroke(s) +
                     " stroke-linejoin=\"round\" stroke-linecap=\"round\"/>\n";
            if (s.marker_)
                for (std::size_t i = 0; i < n; ++i)
                    if (X.ok(it.x[i]) && Y.ok(it.y[i])) marker(X(it.x[i]), Y(it.y[i]), s);
            break;
        }
        case Kind::hist: case Kind::band: {
            const bool hist = it.kind == Kind::hist;
            std::vector<std::pair<double, double>> up, dn; // pixel polygon: upper edge forwards, lower edge backwards
            auto val = [](double v) { return std::isfinite(v) ? v : 0.0; };
            const std::size_t m = hist ? n - 1 : n;
            for (std::size_t i = 0; i < m; ++i) {
                if (!hist && (!X.ok(it.x[i]) || !std::isfinite(it.y[i]) || !std::isfinite(it.lo[i]))) continue;
                const double hi = val(it.y[i]), lo = val(it.lo[i]);
                const double top_v = hist && !std::isfinite(it.y[i]) ? lo : hi;
                for (double xv : hist ? std::vector<double>{it.x[i], it.x[i + 1]} : std::vector<double>{it.x[i]}) {
                    up.push_back({X(xv), Y(top_v)});
                    dn.push_back({X(xv), Y(lo)});
                }
                if (s.fill_ > 0)
                    areas.push_back({X(it.x[i]), std::min(Y(lo), Y(top_v)), X(it.x[hist ? i + 1 : i]),
                                     std::max(Y(lo), Y(top_v))});
            }
            if (up.empty()) break;
            std::string d;
            if (s.fill_ > 0) {
                for (std::size_t i = 0; i < up.size(); ++i) d += (i ? "L" : "M") + pt(up[i].first, up[i].second);
                for (std::size_t i = dn.size(); i-- > 0;) d += "L" + pt(dn[i].first, dn[i].second);
                o += "<path class=\"" + std::string(hist ? "hist-fill" : "band") + "\" d=\"" + d + "Z\"" +
                     attr("fill", escape(s.color_)) + attr("fill-opacity", s.fill_) + " stroke=\"none\"/>\n";
            }
            if (!hist) break;
            d = "M" + pt(dn.front().first, dn.front().second);
            for (std::size_t i = 0; i < up.size(); ++i) {
                d += "L" + pt(up[i].first, up[i].second);
                if (i) segs.push_back({up[i - 1].first, up[i - 1].second, up[i].first, up[i].second});
            }
            d += "L" + pt(dn.back().first, dn.back().second);
            o += "<path class=\"hist\" d=\"" + d + "\"" + stroke(s) + " stroke-linejoin=\"miter\"/>\n";
            break;
        }
        case Kind::scatter: case Kind::errorbar: {
            std::string d;
            for (std::size_t i = 0; i < n; ++i) {
                if (!X.ok(it.x[i]) || !Y.ok(it.y[i])) continue;
                const double px = X(it.x[i]), py = Y(it.y[i]);
                segs.push_back({px, py, px, py});
                if (it.kind == Kind::errorbar && std::isfinite(it.e[i]) && it.e[i] > 0)
                    d += "M" + pt(px, Y(it.y[i] - it.e[i])) + "V" + num(Y(it.y[i] + it.e[i]));
                if (it.kind == Kind::errorbar && std::isfinite(it.ex[i]) && it.ex[i] > 0)
                    d += "M" + pt(X(it.x[i] - it.ex[i]), py) + "H" + num(X(it.x[i] + it.ex[i]));
            }
            if (!d.empty())
                o += "<path class=\"errorbar\" d=\"" + d + "\"" + attr("stroke", escape(s.color_)) +
                     attr("stroke-width", std::min(s.width_, 1.5)) + "/>\n";
            for (std::size_t i = 0; i < n; ++i)
                if (X.ok(it.x[i]) && Y.ok(it.y[i])) marker(X(it.x[i]), Y(it.y[i]), s);
            break;
        }
        case Kind::hline: case Kind::vline: {
            const bool h = it.kind == Kind::hline;
            if (!(h ? Y : X).ok(it.x[0])) break;
            const double p = h ? Y(it.x[0]) : X(it.x[0]);
            o += "<path class=\"refline\" d=\"" + (h ? "M" + pt(x0, p) + "H" + num(x1)
                                                      : "M" + pt(p, y0) + "V" + num(y1)) + "\"" + stroke(s) + "/>\n";
            refs.push_back(h ? Box{x0, p, x1, p} : Box{p, y0, p, y1});
            break;
        }
        default: break;
        }
    }
    o += "</g>\n";

    // Frame, ticks, labels.
    o += rect(x0, y0, pw, ph) + " fill=\"none\" stroke=\"#333333\" stroke-width=\"1\"/>\n";
    std::string td;
    auto tick_in = [](double p, double a, double b) { return p >= std::min(a, b) - 0.5 && p <= std::max(a, b) + 0.5; };
    if (has_heat_) {
        const double cw1 = pw / static_cast<double>(heat_.cols), ch1 = ph / static_cast<double>(heat_.rows);
        for (std::size_t r = 0; r < heat_.row_labels.size(); ++r)
            text(x0 - 5, y0 + (static_cast<double>(r) + 0.5) * ch1, heat_.row_labels[r], hfs, "end",
                 " dy=\"0.35em\" class=\"ytick\"");
        for (std::size_t c = 0; c < heat_.col_labels.size(); ++c) {
            const double xc = x0 + (static_cast<double>(c) + 0.5) * cw1;
            if (rotate) text(xc + 0.3 * hfs, y1 + 6 + 0.5 * hfs, heat_.col_labels[c], hfs, "end",
                             " class=\"xtick\" transform=\"rotate(-45 " + pt(xc + 0.3 * hfs, y1 + 6 + 0.5 * hfs) +
                                 ")\"");
            else text(xc, y1 + 5 + hfs, heat_.col_labels[c], hfs, "middle", " class=\"xtick\"");
        }
        // Colour bar with its own ticks.
        const double bx = x1 + 12, bw = 14;
        const auto stops = colormap_stops(heat_.cmap);
        o += "<defs><linearGradient" + attr("id", "tapir-cbar-" + id) + " x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
        for (int i = 0; i <= 16; ++i)
            o += "<stop" + attr("offset", i / 16.0) + attr("stop-color", colormap(stops, i / 16.0)) + "/>";
        o += "</linearGradient></defs>\n" + rect(bx, y0, bw, ph) + " class=\"colorbar\" fill=\"url(#tapir-cbar-" + id +
             ")\" stroke=\"#333333\" stroke-width=\"0.8\"/>\n";
        const Scale C{heat_.vmin, heat_.vmax, y1, y0, false};
        double wl = 0;
        for (std::size_t i = 0; i < yt.major.size(); ++i) {
            td += "M" + pt(bx + bw, C(yt.major[i])) + "h4";
            label_text(bx + bw + 6, C(yt.major[i]) + 4, yt.labels[i], 11, "start", "ctick");
            wl = std::max(wl, label_width(yt.labels[i], 11));
        }
        if (!yt.power.empty()) label_text(bx, y0 - 6, {"\u00d710", yt.power}, 11, "start", "ypower");
        if (!heat_.cbar_label.empty())
            text(bx + bw + 14 + wl, (y0 + y1) / 2, heat_.cbar_label, LF - 1, "middle",
                 " dy=\"0.35em\" transform=\"rotate(90 " + pt(bx + bw + 14 + wl, (y0 + y1) / 2) + ")\"");
    } else {
        for (std::size_t i = 0; i < xt.major.size(); ++i) {
            const double p = X(xt.major[i]);
            if (!tick_in(p, x0, x1)) continue;
            td += "M" + pt(p, y1) + "v" + num(TL);
            label_text(p, y1 + TL + 3 + TF * 0.9, xt.labels[i], TF, "middle", "xtick");
        }
        for (std::size_t i = 0; i < yt.major.size(); ++i) {
            const double p = Y(yt.major[i]);
            if (!tick_in(p, y0, y1)) continue;
            td += "M" + pt(x0, p) + "h" + num(-TL);
            label_text(x0 - TL - 3, p + TF * 0.35, yt.labels[i], TF, "end", "ytick");
        }
        for (double v : xt.minor)
            if (tick_in(X(v), x0, x1)) td += "M" + pt(X(v), y1) + "v3";
        for (double v : yt.minor)
            if (tick_in(Y(v), y0, y1)) td += "M" + pt(x0, Y(v)) + "h-3";
    }
    if (!td.empty()) o += "<path class=\"ticks\" d=\"" + td + "\" stroke=\"#333333\" stroke-width=\"1\"/>\n";
    if (!xt.power.empty()) label_text(x1, cy + ch - 12, {"\u00d710", xt.power}, TF, "end", "xpower");
    if (!yt.power.empty() && !has_heat_) label_text(x0, y0 - 6, {"\u00d710", yt.power}, TF, "start", "ypower");
    if (!xlabel_.empty()) text((x0 + x1) / 2, cy + ch - 12, xlabel_, LF, "middle", " class=\"xlabel\"");
    if (!ylabel_.empty())
        text(cx + 12 + LF * 0.8, (y0 + y1) / 2, ylabel_, LF, "middle",
             " class=\"ylabel\" transform=\"rotate(-90 " + pt(cx + 12 + LF * 0.8, (y0 + y1) / 2) + ")\"");
    if (!title_.empty()) text((x0 + x1) / 2, y0 - 10, title_, HF, "middle", " class=\"title\" font-weight=\"bold\"");

    // Free text, unclipped. Point labels take the first of eight spots around their marker that stays inside the
    // plot and clear of other labels and markers.
    std::vector<Box> placed;
    for (const auto& it : items_) {
        const Style& s = it.st;
        for (std::size_t i = 0; it.kind == Kind::scatter && i < it.labels.size(); ++i) {
            if (!X.ok(it.x[i]) || !Y.ok(it.y[i]) || it.labels[i].empty()) continue;
            const double px = X(it.x[i]), py = Y(it.y[i]), r = s.marker_size_ + 2, tw = text_width(it.labels[i], 10.5);
            Box best{};
            double best_cost = 1e300;
            constexpr int spots[8][2] = {{1, 0}, {1, -1}, {1, 1}, {-1, 0}, {-1, -1}, {-1, 1}, {0, -1}, {0, 1}};
            for (int k = 0; k < 8; ++k) {
                const int ax = spots[k][0], ay = spots[k][1];
                const double bx = ax > 0 ? px + r : ax < 0 ? px - r - tw : px - tw / 2;
                const double by = ay < 0 ? py - r - 9 : ay > 0 ? py + r - 2 : py - 5.5;
                const Box b{bx, by, bx + tw, by + 11};
                double cost = k + (b.x0 < x0 || b.x1 > x1 || b.y0 < y0 || b.y1 > y1 ? 100 : 0);
                for (const auto& q : placed) cost += q.x0 < b.x1 && b.x0 < q.x1 && q.y0 < b.y1 && b.y0 < q.y1 ? 50 : 0;
                for (const auto& q : segs) {
                    const bool point = q.x0 == q.x1 && q.y0 == q.y1; // markers count within their radius
                    const Box g = point ? Box{b.x0 - r + 2, b.y0 - r + 2, b.x1 + r - 2, b.y1 + r - 2} : b;
                    cost += hits(q.x0, q.y0, q.x1, q.y1, g) ? (point ? 20 : 3) : 0;
                }
                if (cost < best_cost) best_cost = cost, best = b;
            }
            placed.push_back(best);
            text(best.x0, best.y1 - 2, it.labels[i], 10.5, "start", " class=\"point-label\" fill=\"#333333\"");
        }
        if (it.kind != Kind::text && it.kind != Kind::annotate) continue;
        const bool data = it.kind == Kind::text;
        if (data && (!X.ok(it.x[0]) || !Y.ok(it.y[0]))) continue;
        if (!data && (!std::isfinite(it.x[0]) || !std::isfinite(it.y[0]))) continue;
        const double px = data ? X(it.x[0]) : x0 + it.x[0] * pw, py = data ? Y(it.y[0]) : y1 - it.y[0] * ph;
        const std::string& str = it.labels[0];
        o += "<text class=\"text\"" + attr("x", px) + attr("y", py) + attr("font-size", s.font_size_) +
             attr("fill", escape(s.color_)) + attr("text-anchor", s.anchor_) + ">";
        std::size_t start = 0;
        for (int line_no = 0; start <= str.size(); ++line_no) {
            const std::size_t end = std::min(str.find('\n', start), str.size());
            o += "<tspan" + attr("x", px) + (line_no ? " dy=\"1.25em\"" : "") + ">" +
                 escape(str.substr(start, end - start)) + "</tspan>";
            start = end + 1;
        }
        o += "</text>\n";
        if (it.kind == Kind::annotate) { // keep the legend off annotations: both diagonals of their box
            const double tw = text_width(str, s.font_size_);
            const double lines = static_cast<double>(std::count(str.begin(), str.end(), '\n') + 1);
            const double bx = s.anchor_ == "start" ? px : s.anchor_ == "end" ? px - tw : px - tw / 2;
            const double by0 = py - s.font_size_, by1 = py + (lines - 1) * 1.25 * s.font_size_ + 3;
            segs.push_back({bx, by0, bx + tw, by1});
            segs.push_back({bx, by1, bx + tw, by0});
        }
    }
    for (const auto& b : placed) segs.push_back({b.x0, b.y0, b.x1, b.y1});

    // Legend.
    std::vector<const Item*> entries;
    for (const auto& it : items_)
        if (!it.st.label_.empty() && it.kind != Kind::text && it.kind != Kind::annotate) entries.push_back(&it);
    if (loc_ != Loc::none && !entries.empty()) {
        constexpr double LFS = 12, row = 19, sw = 26, pad = 8, inset = 10;
        double tw = 0;
        for (const auto* e : entries) tw = std::max(tw, text_width(e->st.label_, LFS));
        const double bw = pad + sw + 7 + tw + pad, bh = 6 + row * static_cast<double>(entries.size()) + 4;
        auto place = [&](Loc l) { // column and row (0 left/top, 1 centre, 2 right/bottom) per Loc, in enum order
            constexpr int cr[10][2] = {{2, 0}, {2, 0}, {0, 0}, {0, 2}, {2, 2}, {2, 1}, {0, 1}, {1, 2}, {1, 0}, {1, 1}};
            const int c = cr[static_cast<int>(l)][0], r = cr[static_cast<int>(l)][1];
            const double lx0 = c == 0 ? x0 + inset : c == 1 ? (x0 + x1 - bw) / 2 : x1 - inset - bw;
            const double ly0 = r == 0 ? y0 + inset : r == 1 ? (y0 + y1 - bh) / 2 : y1 - inset - bh;
            return Box{lx0, ly0, lx0 + bw, ly0 + bh};
        };
        Loc where = loc_;
        if (where == Loc::best) {
            std::size_t best = std::numeric_limits<std::size_t>::max(), data_hits = 0;
            for (Loc l : {Loc::upper_right, Loc::upper_left, Loc::lower_left, Loc::lower_right, Loc::center_right,
                          Loc::center_left, Loc::lower_center, Loc::upper_center, Loc::center}) {
                const Box b = place(l);
                std::size_t dh = 0, rh = 0;
                for (const auto& sg : segs) dh += hits(sg.x0, sg.y0, sg.x1, sg.y1, b) ? 1 : 0;
                for (const auto& a : areas) dh += a.x0 <= b.x1 && b.x0 <= a.x1 && a.y0 <= b.y1 && b.y0 <= a.y1 ? 1 : 0;
                for (const auto& sg : refs) rh += hits(sg.x0, sg.y0, sg.x1, sg.y1, b) ? 1 : 0;
                if (1000 * dh + rh < best) best = 1000 * dh + rh, where = l, data_hits = dh;
            }
            if (data_hits > 0 && headroom == 0 && !ylim_.set && !has_heat_ && bh + 2 * inset < 0.45 * ph)
                return (bh + 2 * inset) / ph;
        }
        const Box b = place(where);
        o += "<g class=\"legend\">\n" + rect(b.x0, b.y0, bw, bh) +
             " rx=\"3\" fill=\"white\" fill-opacity=\"0.88\" stroke=\"#bbbbbb\" stroke-width=\"0.8\"/>\n";
        for (std::size_t i = 0; i < entries.size(); ++i) {
            const Item& e = *entries[i];
            const double cyr = b.y0 + 6 + row * (static_cast<double>(i) + 0.5), sx = b.x0 + pad;
            if (e.kind == Kind::hist || e.kind == Kind::band)
                o += rect(sx, cyr - 6, sw, 12) +
                     (e.st.fill_ > 0 ? attr("fill", escape(e.st.color_)) + attr("fill-opacity", e.st.fill_)
                                     : std::string(" fill=\"none\"")) +
                     (e.kind == Kind::band ? std::string(" stroke=\"none\"")
                                           : attr("stroke", escape(e.st.color_)) +
                                                 attr("stroke-width", std::min(e.st.width_, 2.0))) +
                     "/>\n";
            else if (e.kind == Kind::line || e.kind == Kind::hline || e.kind == Kind::vline)
                o += "<path d=\"M" + pt(sx, cyr) + "h" + num(sw) + "\"" + stroke(e.st) + "/>\n";
            if (e.kind == Kind::errorbar)
                o += "<path d=\"M" + pt(sx + sw / 2, cyr - 7) + "v14\"" + attr("stroke", escape(e.st.color_)) +
                     " stroke-width=\"1.5\"/>\n";
            if (e.st.marker_ && e.kind != Kind::hist) marker(sx + sw / 2, cyr, e.st);
            text(sx + sw + 7, cyr, e.st.label_, LFS, "start", " dy=\"0.35em\" class=\"legend-label\"");
        }
        o += "</g>\n";
    }
    o += "</g>\n";
    return 0;
}

} // namespace tapir::io
