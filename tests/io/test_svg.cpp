#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <tapir/data/random.hpp>
#include <tapir/io/svg.hpp>
#include <tapir/tensor/tensor.hpp>

namespace io = tapir::io;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == ':' || c == '_';
}

/// Tiny well-formedness checker: one root, balanced tags, quoted attributes, only the five XML entities, valid
/// UTF-8, no raw '<' or '>' in text. Returns an empty string when fine, else what is wrong and where.
std::string xml_problem(const std::string& s) {
    auto at = [&](std::size_t i, const std::string& what) { return what + " at offset " + std::to_string(i); };
    for (std::size_t i = 0; i < s.size();) { // UTF-8
        const auto c = static_cast<unsigned char>(s[i]);
        std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || i + n > s.size()) return at(i, "invalid UTF-8");
        for (std::size_t k = 1; k < n; ++k)
            if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return at(i, "invalid UTF-8");
        if (c < 0x20 && c != '\n' && c != '\t' && c != '\r') return at(i, "control character");
        i += n;
    }
    auto entity_ok = [&](std::size_t i) {
        for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"})
            if (s.compare(i, std::string(e).size(), e) == 0) return true;
        return false;
    };
    std::vector<std::string> stack;
    int roots = 0;
    std::size_t i = 0;
    if (s.compare(0, 5, "<?xml") == 0) i = s.find("?>") + 2;
    while (i < s.size()) {
        if (s[i] != '<') {
            if (s[i] == '>') return at(i, "raw '>' in text");
            if (s[i] == '&' && !entity_ok(i)) return at(i, "bad entity");
            if (stack.empty() && !std::isspace(static_cast<unsigned char>(s[i]))) return at(i, "text outside the root");
            ++i;
            continue;
        }
        if (s.compare(i, 2, "</") == 0) {
            const std::size_t e = s.find('>', i);
            if (e == std::string::npos) return at(i, "unterminated end tag");
            const std::string name = s.substr(i + 2, e - i - 2);
            if (stack.empty() || stack.back() != name) return at(i, "mismatched </" + name + ">");
            stack.pop_back();
            i = e + 1;
            continue;
        }
        std::size_t j = i + 1;
        while (j < s.size() && is_name_char(s[j])) ++j;
        const std::string name = s.substr(i + 1, j - i - 1);
        if (name.empty()) return at(i, "empty tag name");
        if (stack.empty() && ++roots > 1) return at(i, "second root element");
        for (;;) {
            while (j < s.size() && s[j] == ' ') ++j;
            if (j >= s.size()) return at(i, "unterminated tag");
            if (s.compare(j, 2, "/>") == 0) { j += 2; break; }
            if (s[j] == '>') { stack.push_back(name); ++j; break; }
            const std::size_t a = j;
            while (j < s.size() && is_name_char(s[j])) ++j;
            if (j == a || s.compare(j, 2, "=\"") != 0) return at(j, "malformed attribute in <" + name + ">");
            j += 2;
            for (; j < s.size() && s[j] != '"'; ++j) {
                if (s[j] == '<') return at(j, "'<' in attribute");
                if (s[j] == '&' && !entity_ok(j)) return at(j, "bad entity in attribute");
            }
            ++j;
        }
        i = j;
    }
    if (!stack.empty()) return "unclosed <" + stack.back() + ">";
    return roots == 1 ? "" : "no root element";
}

std::size_t count(const std::string& s, const std::string& what) {
    std::size_t n = 0;
    for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
    return n;
}

/// The <text> elements of one class: position and content, a superscript written as "^{...}".
struct Text {
    double x, y;
    std::string s;
};
std::vector<Text> texts(const std::string& svg, const std::string& cls) {
    std::vector<Text> out;
    for (std::size_t p = svg.find("<text "); p != std::string::npos; p = svg.find("<text ", p + 1)) {
        const std::size_t gt = svg.find('>', p), end = svg.find("</text>", p);
        const std::string tag = svg.substr(p, gt - p);
        if (tag.find(" class=\"" + cls + "\"") == std::string::npos) continue;
        auto num_attr = [&](const char* a) { return std::stod(tag.substr(tag.find(std::string(" ") + a + "=\"") + 4)); };
        std::string body = svg.substr(gt + 1, end - gt - 1), txt;
        for (std::size_t k = 0; k < body.size();) {
            if (body.compare(k, 6, "<tspan") == 0) { txt += "^{"; k = body.find('>', k) + 1; }
            else if (body.compare(k, 8, "</tspan>") == 0) { txt += "}"; k += 8; }
            else txt += body[k++];
        }
        out.push_back({num_attr("x"), num_attr("y"), txt});
    }
    return out;
}
std::vector<std::string> strings(const std::vector<Text>& t) {
    std::vector<std::string> s;
    for (const auto& x : t) s.push_back(x.s);
    return s;
}

/// Plot area from the first clip path.
std::array<double, 4> plot_area(const std::string& svg) {
    const std::size_t p = svg.find("<clipPath");
    auto get = [&](const char* a) { return std::stod(svg.substr(svg.find(std::string(" ") + a + "=\"", p) + std::string(a).size() + 3)); };
    return {get("x"), get("y"), get("width"), get("height")};
}

} // namespace

TEST_CASE("the XML checker itself rejects broken documents") {
    CHECK(xml_problem("<a><b x=\"1\"/>t &amp; u</a>").empty());
    CHECK_FALSE(xml_problem("<a><b></a>").empty());
    CHECK_FALSE(xml_problem("<a>x & y</a>").empty());
    CHECK_FALSE(xml_problem("<a>x > y</a>").empty());
    CHECK_FALSE(xml_problem("<a x=1/>").empty());
    CHECK_FALSE(xml_problem("<a/><b/>").empty());
    CHECK_FALSE(xml_problem("<a>\xff</a>").empty());
}

TEST_CASE("nice_ticks: 1-2-5 steps, exact decimal values") {
    CHECK(io::nice_ticks(0, 1) == std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1});
    CHECK(io::nice_ticks(-0.05, 1.05) == std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1});
    CHECK(io::nice_ticks(0, 100) == std::vector<double>{0, 20, 40, 60, 80, 100});
    CHECK(io::nice_ticks(0.3, 0.7) == std::vector<double>{0.3, 0.4, 0.5, 0.6, 0.7});
    CHECK(io::nice_ticks(105, 160) == std::vector<double>{110, 120, 130, 140, 150, 160});
    CHECK(io::nice_ticks(-3, 7) == std::vector<double>{-2, 0, 2, 4, 6});
    CHECK(io::nice_ticks(0, 1.5e6) == std::vector<double>{0, 5e5, 1e6, 1.5e6});
    CHECK(io::nice_ticks(1e-6, 5e-6) == std::vector<double>{1e-6, 2e-6, 3e-6, 4e-6, 5e-6});
    CHECK(io::nice_ticks(0, 1, 11) == std::vector<double>{0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1});
    CHECK(io::nice_ticks(0, 1, 3) == std::vector<double>{0, 0.5, 1});
    CHECK(io::nice_ticks(2.5, 2.5) == std::vector<double>{2.5});
    CHECK_THROWS_AS(io::nice_ticks(1, 0), tapir::value_error);
    CHECK_THROWS_AS(io::nice_ticks(0, kNaN), tapir::value_error);

    // Never a lone tick: more than asked for rather than one.
    CHECK(io::nice_ticks(0.001, 9.991, 3) == std::vector<double>{2, 4, 6, 8});
    // Invariants over many ranges: inside, evenly spaced by 1, 2 or 5 x 10^k, at most as many as asked (or
    // up to 5 when fewer would leave one).
    for (double lo : {-1234.5, -1.0, 0.0, 0.001, 3.7, 1e5})
        for (double span : {1e-4, 0.37, 1.0, 9.99, 450.0, 3e7})
            for (int n : {3, 5, 7, 10}) {
                const auto t = io::nice_ticks(lo, lo + span, n);
                REQUIRE(t.size() >= 2);
                CHECK(static_cast<int>(t.size()) <= std::max(n, 5));
                CHECK(t.front() >= lo - 1e-9 * span);
                CHECK(t.back() <= lo + span + 1e-9 * span);
                const double step = t[1] - t[0];
                const double mant = step / std::pow(10.0, std::floor(std::log10(step) + 1e-6));
                CHECK((std::abs(mant - 1) < 1e-6 || std::abs(mant - 2) < 1e-6 || std::abs(mant - 5) < 1e-6));
                for (std::size_t i = 1; i < t.size(); ++i) CHECK(t[i] - t[i - 1] == doctest::Approx(step).epsilon(1e-6));
            }
    // A range far below the resolution of its offset still gives ticks inside it.
    const auto tiny = io::nice_ticks(1e9, 1e9 + 1e-4);
    CHECK(tiny.size() >= 2);
    CHECK(tiny.front() >= 1e9);
    CHECK(tiny.back() <= 1e9 + 1e-4);
}

TEST_CASE("log ticks: labelled decades, 1-2-5 fallback for narrow ranges") {
    const auto t = tapir::io::detail::log_ticks(1e-2, 1e3, 8);
    CHECK(t.major == std::vector<double>{1e-2, 1e-1, 1, 10, 100, 1000});
    REQUIRE(t.labels.size() == 6);
    CHECK(t.labels[0].base == "10");
    CHECK(t.labels[0].sup == "\u22122");
    CHECK(t.labels[3].sup == "1");
    CHECK(t.minor.size() == 5 * 8); // 2..9 in each of the five decades
    const auto wide = tapir::io::detail::log_ticks(1e-10, 1e10, 6);
    CHECK(wide.major.size() <= 6);
    CHECK(wide.major.size() >= 4);
    const auto narrow = tapir::io::detail::log_ticks(0.015, 0.25, 6);
    CHECK(narrow.major == std::vector<double>{0.02, 0.05, 0.1, 0.2});
    CHECK(narrow.labels[0].base == "0.02");
}

TEST_CASE("an empty figure is a valid SVG with default axes") {
    io::Figure fig;
    const std::string svg = fig.to_string();
    CHECK(xml_problem(svg).empty());
    CHECK(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"640\" height=\"480\"") != std::string::npos);
    CHECK(strings(texts(svg, "xtick")) == std::vector<std::string>{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"});
    CHECK(count(svg, "<g class=\"legend\"") == 0);
}

TEST_CASE("line series: one path each, legend entries, nice tick labels for known limits") {
    io::Figure fig(640, 480);
    auto& ax = fig.axes();
    ax.line({0, 0.1, 0.5, 1}, {0, 0.6, 0.9, 1}, io::Style("DNN").width(2));
    ax.line(std::vector<float>{0, 1}, std::array<int, 2>{0, 1}, io::Style("random", "#999999").dashed());
    ax.line({0, 1}, {0.5, 0.5}); // unlabelled: no legend entry
    ax.set_xlim(0, 1).set_ylim(0, 1).set_xlabel("ε_B").set_ylabel("ε_S").set_title("ROC");
    const std::string svg = fig.to_string();
    CHECK(xml_problem(svg).empty());
    CHECK(count(svg, "<path class=\"line\"") == 3);
    CHECK(count(svg, "stroke-dasharray") == 2); // the dashed line and its legend swatch
    CHECK(strings(texts(svg, "legend-label")) == std::vector<std::string>{"DNN", "random"});
    CHECK(strings(texts(svg, "xtick")) == std::vector<std::string>{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"});
    CHECK(strings(texts(svg, "ytick")) == std::vector<std::string>{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"});
    CHECK(strings(texts(svg, "xlabel")) == std::vector<std::string>{"ε_B"});
    CHECK(strings(texts(svg, "title")) == std::vector<std::string>{"ROC"});
    // Default colours follow the tab10 cycle, explicit ones are kept.
    CHECK(svg.find("stroke=\"#1f77b4\"") != std::string::npos);
    CHECK(svg.find("stroke=\"#999999\"") != std::string::npos);
    CHECK(svg.find("stroke=\"#ff7f0e\"") != std::string::npos); // the third line takes the second cycle colour

    // Ticks sit at the right pixels: 0 on the left frame, 1 on the right one, evenly in between.
    const auto area = plot_area(svg);
    const auto xt = texts(svg, "xtick");
    CHECK(xt.front().x == doctest::Approx(area[0]).epsilon(1e-3));
    CHECK(xt.back().x == doctest::Approx(area[0] + area[2]).epsilon(1e-3));
    CHECK(xt[2].x - xt[1].x == doctest::Approx(area[2] / 5).epsilon(1e-3));
    const auto yt = texts(svg, "ytick");
    CHECK(yt.front().y > yt.back().y); // y grows downwards in SVG
}

TEST_CASE("automatic limits: padded for lines, tight at histogram edges and baseline") {
    io::Figure fig(640, 480);
    fig.axes().line({0, 10}, {0, 5});
    const std::string svg = fig.to_string();
    CHECK(strings(texts(svg, "xtick")) == std::vector<std::string>{"0", "2", "4", "6", "8", "10"});
    const auto area = plot_area(svg);
    CHECK(texts(svg, "xtick").front().x > area[0] + 10); // 5 % padding left of 0

    io::Figure h(640, 480);
    const auto c = h.axes().histogram({0.05, 0.15, 0.15, 1.0, 1.5, kNaN, -kInf}, 10, 0, 1);
    CHECK(c == std::vector<double>{1, 2, 0, 0, 0, 0, 0, 0, 0, 1}); // hi included, outside and non-finite dropped
    const std::string hs = h.to_string();
    const auto harea = plot_area(hs);
    const auto hx = texts(hs, "xtick"), hy = texts(hs, "ytick");
    CHECK(hx.front().x == doctest::Approx(harea[0]).epsilon(1e-3));
    CHECK(hx.back().x == doctest::Approx(harea[0] + harea[2]).epsilon(1e-3));
    CHECK(hy.front().s == "0.0");
    CHECK(hy.front().y > harea[1] + harea[3]); // label centred on the bottom frame line
    CHECK(hy.front().y < harea[1] + harea[3] + 6);
    CHECK(count(hs, "<path class=\"hist\"") == 1);

    io::Figure d(640, 480);
    const auto dens = d.axes().histogram({0.1, 0.2, 0.3, 0.9}, {1, 1, 1, 5}, 4, 0, 1, io::Style(), true);
    double area_sum = 0;
    for (double v : dens) area_sum += v * 0.25;
    CHECK(area_sum == doctest::Approx(1.0));
    CHECK(dens[3] == doctest::Approx(5.0 / 8 / 0.25));
    const auto wn = d.axes().histogram({0.1, 0.2, 0.6}, {1, kNaN, 2}, 2, 0, 1);
    CHECK(wn == std::vector<double>{1, 2}); // an entry with a non-finite weight is dropped
}

TEST_CASE("log axes put decades at evenly spaced pixels") {
    io::Figure fig(640, 480);
    auto& ax = fig.axes();
    ax.line({1, 2, 3}, {0.05, 3, 500}).set_log_y().set_ylim(1e-2, 1e3).set_log_x().set_xlim(1, 1000);
    const std::string svg = fig.to_string();
    CHECK(xml_problem(svg).empty());
    const auto yt = texts(svg, "ytick");
    CHECK(strings(yt) == std::vector<std::string>{"10^{\u22122}", "10^{\u22121}", "10^{0}", "10^{1}", "10^{2}", "10^{3}"});
    const auto area = plot_area(svg);
    for (std::size_t i = 1; i < yt.size(); ++i) CHECK(yt[i - 1].y - yt[i].y == doctest::Approx(area[3] / 5).epsilon(1e-3));
    const auto xt = texts(svg, "xtick");
    CHECK(strings(xt) == std::vector<std::string>{"10^{0}", "10^{1}", "10^{2}", "10^{3}"});
    CHECK(xt[1].x - xt[0].x == doctest::Approx(area[2] / 3).epsilon(1e-3));

    // Non-positive limits on a log axis are an error that says so.
    io::Figure bad;
    bad.axes().set_log_x().set_xlim(-1, 10);
    CHECK_THROWS_WITH_AS(bad.to_string(), doctest::Contains("log x axis needs positive limits"), tapir::value_error);
    // Automatic log limits ignore zeros and negatives.
    io::Figure autolog;
    autolog.axes().line({1, 2, 3, 4}, {0, -5, 10, 1000}).set_log_y();
    const std::string as = autolog.to_string();
    CHECK(strings(texts(as, "ytick")) == std::vector<std::string>{"10^{1}", "10^{2}", "10^{3}"});
}

TEST_CASE("non-finite input is skipped and never printed") {
    io::Figure fig(800, 400, 1, 2);
    auto& a = fig.axes(0, 0);
    a.line({0, 1, 2, 3, 4}, {1, 2, kNaN, 4, 5}, io::Style("gap"));
    a.scatter({0, kInf, 2}, {1, 1, kNaN});
    a.errorbars({1, 2}, {1, 2}, {kNaN, 0.5});
    a.step_histogram({0, 1, 2}, {kNaN, 3});
    a.hline(kNaN);
    a.text(kNaN, 1, "lost");
    fig.axes(0, 1).heatmap({1, kNaN, 0.5, 0.25}, 2, 2);
    const std::string svg = fig.to_string();
    CHECK(xml_problem(svg).empty());
    for (const char* bad : {"nan", "NaN", "inf", "Inf"}) CHECK(svg.find(bad) == std::string::npos);
    const std::size_t p = svg.find("<path class=\"line\" d=\"");
    REQUIRE(p != std::string::npos);
    const std::string d = svg.substr(p + 22, svg.find('"', p + 22) - p - 22);
    CHECK(count(d, "M") == 2); // the NaN breaks the line into two pieces
    CHECK(count(d, "L") == 2);
    CHECK(count(svg, "<circle") == 1 + 2); // one valid scatter point, two error-bar points
    CHECK(svg.find("lost") == std::string::npos);
    CHECK(svg.find("fill=\"#d9d9d9\"") != std::string::npos); // the NaN heatmap cell is grey and unlabelled
}

TEST_CASE("extreme magnitudes stay finite and valid") {
    io::Figure fig(900, 400, 1, 3);
    fig.axes(0, 0).line({-1e308, 1e308}, {1e-310, 1e-300});
    fig.axes(0, 1).line({1, 2}, {1e-300, 1e300}).set_log_y();
    fig.axes(0, 2).scatter({1e9, 1e9 + 1e-4}, {0, 1});
    const std::string svg = fig.to_string();
    CHECK(xml_problem(svg).empty());
    for (const char* bad : {"nan", "inf"}) CHECK(svg.find(bad) == std::string::npos);
    CHECK(texts(svg, "ytick").size() >= 4);
    CHECK_THROWS_AS(io::Axes().set_xlim(-1e308, 1e308), tapir::value_error);
}

TEST_CASE("random series with holes always give a valid document") {
    tapir::Rng rng(7);
    auto value = [&]() {
        const auto k = rng.uniform_int(12);
        if (k == 0) return kNaN;
        if (k == 1) return rng.uniform() < 0.5 ? kInf : -kInf;
        if (k == 2) return 0.0;
        return rng.normal() * std::pow(10.0, static_cast<double>(rng.uniform_int(13)) - 6);
    };
    for (int trial = 0; trial < 60; ++trial) {
        io::Figure fig(500, 400, 1, 2);
        auto& ax = fig.axes(0, trial % 2);
        const std::size_t n = rng.uniform_int(30);
        std::vector<double> x(n), y(n), e(n);
        for (std::size_t i = 0; i < n; ++i) x[i] = value(), y[i] = value(), e[i] = std::abs(value());
        ax.line(x, y, io::Style("l").marker('D'));
        ax.scatter(y, x, io::Style("s"), std::vector<std::string>(n, "p"));
        ax.errorbars(x, y, e, io::Style("e"), e);
        ax.fill_between(x, y, e);
        ax.histogram(x, y, 7, -1, 1, io::Style("h").fill(), trial % 3 == 0);
        ax.set_log_x(trial % 4 == 1).set_log_y(trial % 5 < 2).minor_ticks(trial % 2 == 0).grid(trial % 3 == 1);
        const std::string svg = fig.to_string();
        INFO("trial " << trial);
        CHECK(xml_problem(svg).empty());
        for (const char* bad : {"nan", "inf"}) CHECK(svg.find(bad) == std::string::npos);
    }
}

TEST_CASE("text is XML-escaped and repaired, UTF-8 kept") {
    io::Figure fig;
    auto& ax = fig.axes();
    ax.line({0, 1}, {0, 1}, io::Style("a<b & \"c\" 'd' >"));
    ax.set_title("m_γγ < 130 GeV, λ = 0.1").set_xlabel("bad \xff byte\x01 and\nnewline");
    ax.annotate(0.1, 0.9, "line 1\n<line 2>");
    ax.scatter({0.5}, {0.5}, io::Style(), {"p&q"});
    const std::string svg = fig.to_string();
    CHECK(xml_problem(svg).empty());
    CHECK(svg.find("a&lt;b &amp; &quot;c&quot; &apos;d&apos; &gt;") != std::string::npos);
    CHECK(svg.find("m_γγ &lt; 130 GeV, λ = 0.1") != std::string::npos);
    CHECK(svg.find("bad \uFFFD byte and newline") != std::string::npos);
    CHECK(svg.find("<tspan x=\"") != std::string::npos);
    CHECK(svg.find("&lt;line 2&gt;</tspan>") != std::string::npos);
    CHECK(svg.find(">p&amp;q</text>") != std::string::npos);
    CHECK(tapir::io::detail::escape("\xe2\x82") == "\uFFFD\uFFFD");     // truncated sequence
    CHECK(tapir::io::detail::escape("\xed\xa0\x80") == "\uFFFD\uFFFD\uFFFD"); // surrogate
    CHECK(tapir::io::detail::escape("\xc0\xaf") == "\uFFFD\uFFFD");       // overlong '/'
}

TEST_CASE("tick labels: compact, typographic minus, shared power of ten") {
    io::Figure fig;
    fig.axes().line({-1, 1}, {0, 1}).set_xlim(-1, 1).set_ylim(0, 2e-5);
    const std::string svg = fig.to_string();
    CHECK(strings(texts(svg, "xtick")) ==
          std::vector<std::string>{"\u22121.0", "\u22120.5", "0.0", "0.5", "1.0"});
    CHECK(strings(texts(svg, "ytick")).back() == "2.0");
    CHECK(strings(texts(svg, "ypower")) == std::vector<std::string>{"\u00d710^{\u22125}"});
    io::Figure big;
    big.axes().line({0, 1}, {0, 4000}).set_xlim(0, 1).set_ylim(0, 4000);
    const auto bt = strings(texts(big.to_string(), "ytick"));
    CHECK(bt.front() == "0");
    CHECK(bt.back() == "4000"); // plain integers up to 10^6, no power of ten
    CHECK(std::stod(bt[1]) / 1000 == doctest::Approx(std::round(std::stod(bt[1]) / 1000 * 2) / 2)); // steps of 500 or 1000
}

TEST_CASE("legend: placement options, hidden on request, avoids data") {
    auto legend_x = [](io::Loc loc) {
        io::Figure fig;
        auto& ax = fig.axes();
        ax.line({0, 1}, {0, 1}, io::Style("diag")).legend(loc);
        const std::string svg = fig.to_string();
        const auto t = texts(svg, "legend-label");
        return t.empty() ? -1.0 : t[0].x;
    };
    CHECK(legend_x(io::Loc::upper_left) < 200);
    CHECK(legend_x(io::Loc::lower_right) > 400);
    CHECK(legend_x(io::Loc::none) == -1.0);
    // "best" keeps the box off a rising diagonal: upper left or lower right, never on the line.
    io::Figure fig;
    fig.axes().line({0, 1}, {0, 1}, io::Style("diag"));
    const std::string svg = fig.to_string();
    const auto area = plot_area(svg);
    const auto lab = texts(svg, "legend-label");
    REQUIRE(lab.size() == 1);
    const double fx = (lab[0].x - area[0]) / area[2], fy = 1 - (lab[0].y - area[1]) / area[3];
    CHECK(std::abs(fx - fy) > 0.3);

    // A stacked histogram fills the lower part: the y range grows so the legend fits above the data.
    auto top_tick = [](bool labelled) {
        io::Figure f;
        std::vector<io::Style> st;
        if (labelled) st = {io::Style("bkg"), io::Style("sig")};
        f.axes().stacked_histogram({0, 1, 2, 3}, {{5, 5, 5}, {4, 4, 4}}, st); // fills the plot up to the top
        return std::stod(texts(f.to_string(), "ytick").back().s);
    };
    CHECK(top_tick(true) > top_tick(false));
}

TEST_CASE("scatter labels, error bars, stacks, bands, reference lines and text") {
    io::Figure fig(700, 500);
    auto& ax = fig.axes();
    ax.scatter({30, 45, 60}, {0.1, 0.05, 0.02}, io::Style("adversarial").marker('s'), {"λ = 10", "λ = 1", "λ = 0"});
    ax.errorbars({30, 40}, {0.1, 0.2}, {0.01, 0.02}, io::Style("data", "black"), {2, 2});
    ax.fill_between({30, 40, 50}, {0.1, 0.1, 0.1}, {0.2, 0.25, 0.2}, io::Style("±1σ"));
    ax.hline(0.15, io::Style().dotted());
    ax.vline(42);
    ax.text(35, 0.12, "note", io::Style().anchor("middle").font_size(10));
    const std::string svg = fig.to_string();
    CHECK(xml_problem(svg).empty());
    CHECK(strings(texts(svg, "point-label")) == std::vector<std::string>{"λ = 10", "λ = 1", "λ = 0"});
    CHECK(count(svg, "<path class=\"errorbar\"") == 1);
    CHECK(count(svg, "<path class=\"band\"") == 1);
    CHECK(count(svg, "<path class=\"refline\"") == 2);
    CHECK(strings(texts(svg, "legend-label")) == std::vector<std::string>{"adversarial", "data", "±1σ"});
    CHECK(svg.find(">note</tspan>") != std::string::npos);

    io::Figure st;
    st.axes().stacked_histogram({0, 1, 2}, {{1, 2}, {3, 4}}, {io::Style("a"), io::Style("b")});
    const std::string ss = st.to_string();
    CHECK(count(ss, "<path class=\"hist-fill\"") == 2);
    CHECK(count(ss, "<path class=\"hist\"") == 2);
}

TEST_CASE("heatmap: cells, labels, values, colour bar, validation") {
    io::Figure fig(500, 450);
    fig.axes().heatmap(std::vector<double>{1, -0.5, -0.5, 1}, 2, 2, {"p_T", "η"}, {"p_T", "η"}, -1, 1, "", "ρ");
    const std::string svg = fig.to_string();
    CHECK(xml_problem(svg).empty());
    CHECK(count(svg, "<rect x=") >= 4);
    CHECK(svg.find(">1.00</text>") != std::string::npos);
    CHECK(svg.find(">\u22120.50</text>") != std::string::npos);
    CHECK(svg.find("stop-color=\"#053061\"") != std::string::npos); // RdBu_r for a range around zero
    CHECK(strings(texts(svg, "ctick")) ==
          std::vector<std::string>{"\u22121.0", "\u22120.5", "0.0", "0.5", "1.0"});
    CHECK(strings(texts(svg, "ytick")) == std::vector<std::string>{"p_T", "η"});
    // 1.00 on dark red gets white text, -0.50 on light blue dark text.
    CHECK(svg.find("fill=\"#ffffff\">1.00<") != std::string::npos);
    CHECK(svg.find("fill=\"#111111\">\u22120.50<") != std::string::npos);

    io::Figure big(500, 450); // tiny cells: no numbers
    big.axes().heatmap(std::vector<double>(60 * 60, 0.5), 60, 60);
    CHECK(count(big.to_string(), "</text>") < 20);

    io::Axes ax;
    CHECK_THROWS_WITH_AS(ax.heatmap({1, 2, 3}, 2, 2), "Axes::heatmap: 3 values for a 2 x 2 matrix", tapir::shape_error);
    CHECK_THROWS_AS(ax.heatmap({1, 2, 3, 4}, 2, 2, {"a"}), tapir::shape_error);
    CHECK_THROWS_WITH_AS(ax.heatmap({1, 2, 3, 4}, 2, 2, {}, {}, 0, 1, "jet"), doctest::Contains("unknown colour map 'jet'"),
                         tapir::value_error);
}

TEST_CASE("grids of subplots and figure title") {
    io::Figure fig(1000, 400, 1, 2);
    fig.suptitle("Diphoton mass");
    fig.axes(0, 0).histogram({120, 125, 125, 130}, 10, 105, 160, io::Style("sig"));
    fig.axes(0, 0).set_xlabel("m_γγ [GeV]");
    fig.axes(0, 1).line({0, 1}, {1, 0});
    const std::string svg = fig.to_string();
    CHECK(xml_problem(svg).empty());
    CHECK(count(svg, "<g class=\"axes\">") == 2);
    CHECK(count(svg, "<clipPath id=\"tapir-clip-0-0\"") == 1);
    CHECK(count(svg, "<clipPath id=\"tapir-clip-0-1\"") == 1);
    CHECK(svg.find(">Diphoton mass</text>") != std::string::npos);
    const auto xt = texts(svg, "xtick");
    CHECK(std::stod(xt.front().s) >= 105);
    CHECK(xt.back().x > 500); // second panel's ticks are on the right half
    CHECK_THROWS_WITH_AS(fig.axes(1, 0), "Figure::axes: (1, 0) outside the 1 x 2 grid", tapir::value_error);
    CHECK_THROWS_WITH_AS(io::Figure(1, 2), doctest::Contains("Figure(width, height, rows, cols)"), tapir::value_error);
}

TEST_CASE("bad series input is rejected with the sizes") {
    io::Axes ax;
    CHECK_THROWS_WITH_AS(ax.line({1, 2, 3}, {1, 2}), "Axes::line: sizes differ: 3 vs 2 (ys)", tapir::shape_error);
    CHECK_THROWS_WITH_AS(ax.step_histogram({0, 1}, {1, 2}), "Axes::step_histogram: need counts + 1 edges, got 2 edges for 2 counts",
                         tapir::shape_error);
    CHECK_THROWS_AS(ax.step_histogram({0, 2, 1}, {1, 2}), tapir::value_error);
    CHECK_THROWS_AS(ax.histogram({1.0}, 0, 0, 1), tapir::value_error);
    CHECK_THROWS_AS(ax.histogram({1.0}, 10, 1, 1), tapir::value_error);
    CHECK_THROWS_AS(ax.errorbars({1}, {1}, {-0.1}), tapir::value_error);
    CHECK_THROWS_AS(ax.scatter({1, 2}, {1, 2}, io::Style(), {"one"}), tapir::shape_error);
    CHECK_THROWS_AS(ax.set_xlim(1, 1), tapir::value_error);
    CHECK_THROWS_AS(ax.set_ylim(0, kInf), tapir::value_error);
    CHECK_THROWS_AS(io::Style().alpha(1.5), tapir::value_error);
    CHECK_THROWS_AS(io::Style().marker('?'), tapir::value_error);
    CHECK_THROWS_AS(io::Style().anchor("left"), tapir::value_error);
}

TEST_CASE("Values accept vectors, arrays, tensors and braced lists") {
    tapir::Tensor<float> t(tapir::Shape{3}, {1.0f, 2.0f, 3.5f});
    const io::Values a(t), b(std::vector<int>{1, 2}), c{0.5, 1.5};
    CHECK(a.v == std::vector<double>{1, 2, 3.5});
    CHECK(b.v == std::vector<double>{1, 2});
    CHECK(c.size() == 2);
}

TEST_CASE("save writes the file and names the path when it cannot") {
    io::Figure fig;
    fig.axes().line({0, 1}, {0, 1}, io::Style("x"));
    const std::string path = "tapir_test_svg_save.svg";
    fig.save(path);
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    CHECK(ss.str() == fig.to_string());
    in.close();
    std::remove(path.c_str());
    CHECK_THROWS_WITH_AS(fig.save("/nonexistent-dir/sub/plot.svg"),
                         "Figure::save: cannot write '/nonexistent-dir/sub/plot.svg'", std::runtime_error);
}
