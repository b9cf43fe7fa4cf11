#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <locale>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <tapir/error.hpp>
#include <tapir/hep/diphoton.hpp>
#include <tapir/hep/kinematics.hpp>
#include <tapir/io/csv.hpp>

#include "support/data_path.hpp"
#include "support/statistics.hpp"

using tapir::hep::DiphotonConfig;
using tapir::hep::DiphotonEvent;
namespace hep = tapir::hep;

namespace {

using tapir_test::correlation;
using tapir_test::exponential_slope;
using tapir_test::mean;
using tapir_test::quantile;

/// The course CSV into events. Local on purpose: these tests must not depend on the io/ reader.
std::vector<DiphotonEvent> read_events(const std::string& path, std::vector<long>* index = nullptr) {
    std::ifstream f(path);
    std::string line;
    std::getline(f, line);
    REQUIRE(line == ",pt_y1,eta_y1,phi_y1,e_y1,pt_y2,eta_y2,phi_y2,e_y2,myy,label");
    std::vector<DiphotonEvent> out;
    std::size_t lineno = 1;
    while (std::getline(f, line)) {
        ++lineno;
        if (line.empty()) continue;
        std::vector<std::string> tok;
        std::stringstream ss(line);
        std::string t;
        while (std::getline(ss, t, ',')) tok.push_back(t);
        if (tok.size() != 11) FAIL("line " << lineno << " has " << tok.size() << " fields, expected 11");
        double v[9];
        for (int i = 0; i < 9; ++i) v[i] = std::stod(tok[static_cast<std::size_t>(i) + 1]);
        if (index) index->push_back(std::stol(tok[0]));
        out.push_back(DiphotonEvent{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], std::stoi(tok[10])});
    }
    return out;
}

/// Area under the ROC curve (Mann-Whitney, ties counted half).
double auc(const std::vector<double>& score, const std::vector<int>& label) {
    std::vector<std::size_t> idx(score.size());
    std::iota(idx.begin(), idx.end(), std::size_t{0});
    std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return score[a] < score[b]; });
    double rank_sum = 0, npos = 0, nneg = 0;
    for (std::size_t i = 0; i < idx.size();) {
        std::size_t j = i;
        while (j < idx.size() && score[idx[j]] == score[idx[i]]) ++j;
        const double rank = 0.5 * static_cast<double>(i + j + 1);
        for (std::size_t k = i; k < j; ++k) (label[idx[k]] ? (rank_sum += rank, npos) : nneg) += 1;
        i = j;
    }
    return (rank_sum - npos * (npos + 1) / 2) / (npos * nneg);
}

/// Statistics of the real file higgs_diphoton_50k.csv (ATLAS Open Data 13 TeV), measured on it;
/// [0] background, [1] signal.
struct Stats {
    std::size_t n = 0;
    double signal_fraction = 0;
    double bkg_slope = 0;
    double sig_median = 0, sig_halfwidth68 = 0, sig_tail5 = 0;
    double mean_deta[2]{}, mean_ptyy[2]{}, mean_pt1[2]{}, mean_pt2[2]{}, mean_dphi[2]{};
    double corr_pt1 = 0, corr_pt2 = 0, corr_deta = 0;  // with myy, background
    double pt1_low = 0, pt1_high = 0, deta_low = 0, deta_high = 0;  // background, [105,115) and [155,160]
    double auc_lr = 0;  // binned likelihood ratio on (|deta|, pT(yy)), trained on even, tested on odd events
};

Stats compute_stats(const std::vector<DiphotonEvent>& ev) {
    Stats s;
    s.n = ev.size();
    std::vector<double> m[2], deta[2], ptyy[2], pt1[2], pt2[2], dphi[2];
    std::vector<double> lo_pt1, hi_pt1, lo_deta, hi_deta;
    for (const auto& e : ev) {
        const int c = e.label;
        const double de = std::fabs(e.eta1 - e.eta2);
        m[c].push_back(e.myy);
        deta[c].push_back(de);
        ptyy[c].push_back(hep::pair_pt(e.pt1, e.phi1, e.pt2, e.phi2));
        pt1[c].push_back(e.pt1);
        pt2[c].push_back(e.pt2);
        dphi[c].push_back(std::fabs(hep::delta_phi(e.phi1, e.phi2)));
        if (c == 0 && e.myy < 115) lo_pt1.push_back(e.pt1), lo_deta.push_back(de);
        if (c == 0 && e.myy >= 155) hi_pt1.push_back(e.pt1), hi_deta.push_back(de);
    }
    REQUIRE(!m[0].empty());
    REQUIRE(!m[1].empty());
    s.signal_fraction = static_cast<double>(m[1].size()) / static_cast<double>(ev.size());
    s.bkg_slope = exponential_slope(m[0], 105, 160);
    s.sig_median = quantile(m[1], 0.5);
    s.sig_halfwidth68 = 0.5 * (quantile(m[1], 0.84) - quantile(m[1], 0.16));
    s.sig_tail5 = static_cast<double>(std::count_if(m[1].begin(), m[1].end(), [](double x) { return std::fabs(x - 125) > 5; })) /
                  static_cast<double>(m[1].size());
    for (int c = 0; c < 2; ++c) {
        s.mean_deta[c] = mean(deta[c]);
        s.mean_ptyy[c] = mean(ptyy[c]);
        s.mean_pt1[c] = mean(pt1[c]);
        s.mean_pt2[c] = mean(pt2[c]);
        s.mean_dphi[c] = mean(dphi[c]);
    }
    s.corr_pt1 = correlation(pt1[0], m[0]);
    s.corr_pt2 = correlation(pt2[0], m[0]);
    s.corr_deta = correlation(deta[0], m[0]);
    s.pt1_low = mean(lo_pt1), s.pt1_high = mean(hi_pt1), s.deta_low = mean(lo_deta), s.deta_high = mean(hi_deta);

    constexpr int B = 20;
    std::vector<double> hist[2] = {std::vector<double>(B * B, 1.0), std::vector<double>(B * B, 1.0)};
    auto bin = [&](const DiphotonEvent& e) {
        const int i = std::min(B - 1, static_cast<int>(std::fabs(e.eta1 - e.eta2) / 4.74 * B));
        const int j = std::min(B - 1, static_cast<int>(hep::pair_pt(e.pt1, e.phi1, e.pt2, e.phi2) / 200.0 * B));
        return static_cast<std::size_t>(i * B + j);
    };
    for (std::size_t i = 0; i < ev.size(); i += 2) hist[ev[i].label][bin(ev[i])] += 1;
    std::vector<double> score;
    std::vector<int> lab;
    for (std::size_t i = 1; i < ev.size(); i += 2) {
        const std::size_t k = bin(ev[i]);
        score.push_back(std::log(hist[1][k] / hist[0][k]));
        lab.push_back(ev[i].label);
    }
    s.auc_lr = auc(score, lab);
    return s;
}

void print_stats(const char* name, const Stats& s) {
    MESSAGE(std::string(name) << ": n " << s.n << ", signal fraction " << s.signal_fraction << ", bkg slope " << s.bkg_slope
                 << "/GeV, signal median " << s.sig_median << " half-width68 " << s.sig_halfwidth68 << " P(|m-125|>5) "
                 << s.sig_tail5 << ", <|deta|> S/B " << s.mean_deta[1] << "/" << s.mean_deta[0] << ", <pTyy> S/B "
                 << s.mean_ptyy[1] << "/" << s.mean_ptyy[0] << ", <pt1> S/B " << s.mean_pt1[1] << "/" << s.mean_pt1[0]
                 << ", <pt2> S/B " << s.mean_pt2[1] << "/" << s.mean_pt2[0] << ", <|dphi|> S/B " << s.mean_dphi[1] << "/"
                 << s.mean_dphi[0] << ", bkg corr(m; pt1, pt2, |deta|) " << s.corr_pt1 << ", " << s.corr_pt2 << ", "
                 << s.corr_deta << ", bkg <pt1> " << s.pt1_low << " -> " << s.pt1_high << ", <|deta|> " << s.deta_low
                 << " -> " << s.deta_high << ", AUC LR(|deta|, pTyy) " << s.auc_lr);
}

constexpr std::uint64_t kSeed = 20240601;
constexpr std::size_t kEvents = 50000;

const std::vector<DiphotonEvent>& generated() {
    static const std::vector<DiphotonEvent> ev = hep::generate_diphoton(kEvents, kSeed);
    return ev;
}

const Stats& generated_stats() {
    static const Stats s = compute_stats(generated());
    return s;
}

bool same(const DiphotonEvent& a, const DiphotonEvent& b) {
    return a.pt1 == b.pt1 && a.eta1 == b.eta1 && a.phi1 == b.phi1 && a.e1 == b.e1 && a.pt2 == b.pt2 && a.eta2 == b.eta2 &&
           a.phi2 == b.phi2 && a.e2 == b.e2 && a.myy == b.myy && a.label == b.label;
}

} // namespace

TEST_CASE("generated events pass the cuts exactly and are self-consistent") {
    const auto& ev = generated();
    REQUIRE(ev.size() == kEvents);
    const double pi = 3.14159265358979323846;
    std::size_t bad = 0;
    for (const auto& e : ev) {
        const bool ok = e.pt1 >= e.pt2 && e.pt1 > 35.0 && e.pt2 > 25.0 && std::fabs(e.eta1) < 2.37 &&
                        std::fabs(e.eta2) < 2.37 && e.myy >= 105.0 && e.myy <= 160.0 && (e.label == 0 || e.label == 1) &&
                        std::fabs(e.phi1) <= pi && std::fabs(e.phi2) <= pi &&
                        e.e1 == e.pt1 * std::cosh(e.eta1) && e.e2 == e.pt2 * std::cosh(e.eta2);
        // myy recomputes from the four-vectors, by either formula.
        const double m4 = hep::invariant_mass(hep::FourVector::from_pt_eta_phi_e(e.pt1, e.eta1, e.phi1, e.e1),
                                              hep::FourVector::from_pt_eta_phi_e(e.pt2, e.eta2, e.phi2, e.e2));
        const double ma = hep::massless_pair_mass(e.pt1, e.eta1, e.phi1, e.pt2, e.eta2, e.phi2);
        if (!ok || !(std::fabs(m4 - e.myy) < 1e-6) || !(ma == e.myy)) ++bad;
    }
    CHECK(bad == 0);
}

TEST_CASE("generator reproduces the statistics of the real file") {
    const Stats& s = generated_stats();
    print_stats("generated", s);
    CHECK(s.signal_fraction == doctest::Approx(0.5).epsilon(0.02));  // binomial sd 0.0022
    // Background myy ~ exp(-0.020..-0.021 / GeV).
    CHECK(s.bkg_slope > -0.023);
    CHECK(s.bkg_slope < -0.018);
    // Signal: median 124.95, 68% half-width ~2.5 GeV, with tails (a Gaussian of that width has
    // P(|m - 125| > 5) = 0.046; the real file 0.081).
    CHECK(std::fabs(s.sig_median - 124.95) < 0.3);
    CHECK(s.sig_halfwidth68 > 2.2);
    CHECK(s.sig_halfwidth68 < 2.9);
    CHECK(s.sig_tail5 > 0.06);
    CHECK(s.sig_tail5 < 0.11);
    // Signal vs background: <|deta|> 0.88 vs 1.46, <pT(yy)> 47 vs 35 GeV (10%).
    CHECK(s.mean_deta[1] == doctest::Approx(0.88).epsilon(0.10));
    CHECK(s.mean_deta[0] == doctest::Approx(1.46).epsilon(0.10));
    CHECK(s.mean_ptyy[1] == doctest::Approx(47.0).epsilon(0.10));
    CHECK(s.mean_ptyy[0] == doctest::Approx(35.0).epsilon(0.10));
    // Background sculpting: pt1, pt2, |deta| correlate with myy at about +0.2.
    CHECK(std::fabs(s.corr_pt1 - 0.2) < 0.07);
    CHECK(std::fabs(s.corr_pt2 - 0.2) < 0.07);
    CHECK(std::fabs(s.corr_deta - 0.2) < 0.07);
    // ... mean pt1 58.9 -> 74.2 GeV and |deta| 1.24 -> 1.75 from the low to the high end (the
    // real file gives these in [105, 115) and [155, 160]).
    // (The model's top bin sits ~2 GeV low: its pt1 tail is softer than the real one.)
    CHECK(s.pt1_low == doctest::Approx(58.9).epsilon(0.05));
    CHECK(s.pt1_high == doctest::Approx(74.2).epsilon(0.06));
    CHECK(s.pt1_high - s.pt1_low > 10.0);
    CHECK(s.deta_high - s.deta_low > 0.35);
    CHECK(std::fabs(s.deta_low - 1.24) < 0.08);
    CHECK(std::fabs(s.deta_high - 1.75) < 0.08);
    // Separation on (|deta|, pT(yy)) alone: 0.729 on the real file.
    CHECK(s.auc_lr > 0.70);
    CHECK(s.auc_lr < 0.76);
}

TEST_CASE("generated vs the real file, same statistics") {
    const std::string path = tapir_test::shared_data("higgs_diphoton_50k.csv");
    if (path.empty()) {
        MESSAGE("skipped: ../shared/data/higgs_diphoton_50k.csv not found");
        return;
    }
    const auto real_events = read_events(path);
    REQUIRE(real_events.size() == 49999);
    const Stats r = compute_stats(real_events);
    const Stats& g = generated_stats();
    print_stats("real", r);
    // The real file itself matches the sheet (guards the statistics code too).
    CHECK(r.bkg_slope == doctest::Approx(-0.0204).epsilon(0.02));
    CHECK(r.sig_median == doctest::Approx(124.94).epsilon(1e-4));
    CHECK(r.mean_deta[0] == doctest::Approx(1.459).epsilon(0.002));

    CHECK(std::fabs(g.bkg_slope - r.bkg_slope) < 0.002);  // stat. sd ~0.0005 each
    CHECK(std::fabs(g.sig_median - r.sig_median) < 0.25);
    CHECK(std::fabs(g.sig_halfwidth68 - r.sig_halfwidth68) < 0.25);
    CHECK(std::fabs(g.sig_tail5 - r.sig_tail5) < 0.02);
    for (int c = 0; c < 2; ++c) {
        CAPTURE(c);
        CHECK(g.mean_deta[c] == doctest::Approx(r.mean_deta[c]).epsilon(0.05));
        CHECK(g.mean_ptyy[c] == doctest::Approx(r.mean_ptyy[c]).epsilon(0.10));
        CHECK(g.mean_pt1[c] == doctest::Approx(r.mean_pt1[c]).epsilon(0.05));
        CHECK(g.mean_pt2[c] == doctest::Approx(r.mean_pt2[c]).epsilon(0.06));
        CHECK(std::fabs(g.mean_dphi[c] - r.mean_dphi[c]) < 0.05);
    }
    CHECK(std::fabs(g.corr_pt1 - r.corr_pt1) < 0.07);
    CHECK(std::fabs(g.corr_pt2 - r.corr_pt2) < 0.07);
    CHECK(std::fabs(g.corr_deta - r.corr_deta) < 0.07);
    CHECK(std::fabs(g.pt1_low - r.pt1_low) < 3.0);
    CHECK(std::fabs(g.pt1_high - r.pt1_high) < 4.5);
    CHECK(std::fabs(g.deta_low - r.deta_low) < 0.08);
    CHECK(std::fabs(g.deta_high - r.deta_high) < 0.08);
    CHECK(std::fabs(g.auc_lr - r.auc_lr) < 0.03);
}

TEST_CASE("the generator is deterministic in its seed") {
    const auto a = hep::generate_diphoton(2000, 7);
    const auto b = hep::generate_diphoton(2000, 7);
    const auto c = hep::generate_diphoton(2000, 8);
    const auto prefix = hep::generate_diphoton(100, 7);
    REQUIRE(a.size() == 2000);
    std::size_t equal_ab = 0, equal_ac = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        equal_ab += same(a[i], b[i]);
        equal_ac += same(a[i], c[i]);
    }
    CHECK(equal_ab == a.size());
    CHECK(equal_ac == 0);
    for (std::size_t i = 0; i < prefix.size(); ++i) CHECK(same(prefix[i], a[i]));
    // The streaming generator gives the same events as the batch call.
    hep::DiphotonGenerator gen(7, DiphotonConfig{});
    for (std::size_t i = 0; i < 50; ++i) CHECK(same(gen.next(), a[i]));
    // Pinned: seed 1's first event. Tolerance covers last-bit libm/FMA differences; a change
    // beyond it means the stream changed (retuned defaults): update deliberately.
    const auto p = hep::generate_diphoton(1, 1);
    MESSAGE("seed 1, event 0: pt1 " << p[0].pt1 << " eta1 " << p[0].eta1 << " myy " << p[0].myy << " label " << p[0].label);
    CHECK(p[0].label == 0);
    CHECK(p[0].pt1 == doctest::Approx(46.928583465176182).epsilon(1e-9));
    CHECK(p[0].eta1 == doctest::Approx(-0.84432863148141657).epsilon(1e-9));
    CHECK(p[0].myy == doctest::Approx(126.18986122680221).epsilon(1e-9));
}

TEST_CASE("signal fraction, labels and the streaming interface") {
    const auto bkg = hep::generate_diphoton(300, 3, 0.0);
    const auto sig = hep::generate_diphoton(300, 3, 1.0);
    CHECK(std::all_of(bkg.begin(), bkg.end(), [](const DiphotonEvent& e) { return e.label == 0; }));
    CHECK(std::all_of(sig.begin(), sig.end(), [](const DiphotonEvent& e) { return e.label == 1; }));
    const auto mixed = hep::generate_diphoton(4000, 3, 0.25);
    const auto nsig = std::count_if(mixed.begin(), mixed.end(), [](const DiphotonEvent& e) { return e.label == 1; });
    CHECK(static_cast<double>(nsig) / 4000.0 == doctest::Approx(0.25).epsilon(0.12));  // sd 0.007

    hep::DiphotonGenerator gen(5);
    for (int i = 0; i < 20; ++i) {
        CHECK(gen.next(0).label == 0);
        CHECK(gen.next(1).label == 1);
    }
    CHECK_THROWS_AS(gen.next(2), tapir::value_error);

    // A background-only sample with a flat mass spectrum: the slope knob is honoured.
    DiphotonConfig flat;
    flat.signal_fraction = 0.0;
    flat.bkg_slope = 0.0;
    const auto fl = hep::generate_diphoton(4000, 4, flat);
    std::vector<double> m;
    for (const auto& e : fl) m.push_back(e.myy);
    CHECK(mean(m) == doctest::Approx(132.5).epsilon(0.005));  // sd of the mean 0.25 GeV
}

TEST_CASE("bad configurations are refused with a message naming the knob") {
    auto refuses = [](DiphotonConfig c, const std::string& word) {
        try {
            hep::DiphotonGenerator g(1, c);
            FAIL("accepted a bad configuration (" << word << ")");
        } catch (const tapir::value_error& e) {
            CHECK(std::string(e.what()).find(word) != std::string::npos);
        }
    };
    DiphotonConfig c;
    c.signal_fraction = 1.5;
    refuses(c, "signal_fraction");
    c = DiphotonConfig{};
    c.m_max = 100;
    refuses(c, "m_min");
    c = DiphotonConfig{};
    c.sig_n_lo = 1.0;
    refuses(c, "Crystal Ball");
    c = DiphotonConfig{};
    c.bkg_pt_tail = 0.0;
    refuses(c, "pT(yy)");
    c = DiphotonConfig{};
    c.crack_keep = -0.1;
    refuses(c, "crack");
    c = DiphotonConfig{};
    c.bkg_angle_power = -3;
    refuses(c, "bkg_angle_power");
    CHECK_THROWS_AS(hep::generate_diphoton(10, 1, 2.0), tapir::value_error);

    // Cuts no event can pass: a clear error after max_attempts, not an endless loop.
    c = DiphotonConfig{};
    c.pt1_min = 2000;
    c.pt2_min = 1000;
    c.max_attempts = 2000;
    hep::DiphotonGenerator g(1, c);
    CHECK_THROWS_WITH_AS(g.next(0), doctest::Contains("too tight"), tapir::value_error);
    c = DiphotonConfig{};
    c.sig_mean = 1000;
    c.max_attempts = 2000;
    hep::DiphotonGenerator g2(1, c);
    CHECK_THROWS_WITH_AS(g2.next(1), doctest::Contains("mass window"), tapir::value_error);
}

TEST_CASE("write_diphoton_csv: course format, full precision, round trip") {
    const auto ev = hep::generate_diphoton(500, 11);
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("tapir_test_diphoton_" + std::to_string(stamp) + ".csv")).string();
    hep::write_diphoton_csv(path, ev);
    std::vector<long> index;
    const auto back = read_events(path, &index);
    // The project's reader (which skips the unnamed index column) reads the same numbers.
    const tapir::io::CsvTable table = tapir::io::read_csv(path);
    std::remove(path.c_str());
    CHECK(table.names == std::vector<std::string>{"pt_y1", "eta_y1", "phi_y1", "e_y1", "pt_y2", "eta_y2", "phi_y2", "e_y2", "myy", "label"});
    REQUIRE(table.rows == ev.size());
    std::size_t table_exact = 0;
    for (std::size_t i = 0; i < ev.size(); ++i) {
        const DiphotonEvent& e = ev[i];
        const double v[10] = {e.pt1, e.eta1, e.phi1, e.e1, e.pt2, e.eta2, e.phi2, e.e2, e.myy, static_cast<double>(e.label)};
        bool all = true;
        for (std::size_t c = 0; c < 10; ++c) all = all && table(i, c) == v[c];
        table_exact += all;
    }
    CHECK(table_exact == ev.size());
    REQUIRE(back.size() == ev.size());
    std::size_t exact = 0;
    for (std::size_t i = 0; i < ev.size(); ++i) {
        exact += same(back[i], ev[i]);
        CHECK(index[i] == static_cast<long>(i));
    }
    CHECK(exact == ev.size());  // 17 significant digits: every double round-trips

    // The stream overload writes the C locale and leaves the caller's formatting alone.
    std::ostringstream os;
    os.setf(std::ios::fixed);
    os.precision(2);
    hep::write_diphoton_csv(os, {DiphotonEvent{40.5, 0.125, -1.0, 41.0, 30.0, -0.5, 2.0, 33.75, 120.25, 1}});
    CHECK(os.str() == ",pt_y1,eta_y1,phi_y1,e_y1,pt_y2,eta_y2,phi_y2,e_y2,myy,label\n"
                      "0,40.5,0.125,-1,41,30,-0.5,2,33.75,120.25,1\n");
    CHECK(os.precision() == 2);
    CHECK((os.flags() & std::ios::fixed));

    // Errors: unwritable path, values that would not read back.
    CHECK_THROWS_WITH(hep::write_diphoton_csv("/nonexistent-dir/x.csv", ev), doctest::Contains("cannot open"));
    auto bad = ev;
    bad[3].eta2 = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_WITH_AS(hep::write_diphoton_csv(os, bad), doctest::Contains("event 3"), tapir::value_error);
    bad = ev;
    bad[4].label = 2;
    CHECK_THROWS_WITH_AS(hep::write_diphoton_csv(os, bad), doctest::Contains("label 2"), tapir::value_error);
}
