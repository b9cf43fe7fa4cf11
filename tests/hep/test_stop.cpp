#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <tapir/data/random.hpp>
#include <tapir/error.hpp>
#include <tapir/hep/kinematics.hpp>
#include <tapir/hep/sampling.hpp>
#include <tapir/hep/stop.hpp>

#include "support/statistics.hpp"

namespace hep = tapir::hep;
namespace smp = tapir::hep::sampling;
using hep::FourVector;
using hep::StopConfig;
using hep::StopEvent;

namespace {

using tapir_test::mean;
using tapir_test::variance;

double fraction_above(const std::vector<StopEvent>& ev, double StopEvent::*f, double cut) {
    double n = 0;
    for (const auto& e : ev) n += e.*f > cut ? 1 : 0;
    return n / static_cast<double>(ev.size());
}

std::vector<StopEvent> sample(std::size_t n, std::uint64_t seed, int label, const StopConfig& cfg = StopConfig{}) {
    hep::StopGenerator g(seed, cfg);
    std::vector<StopEvent> out;
    for (std::size_t i = 0; i < n; ++i) out.push_back(g.next(label));
    return out;
}

} // namespace

TEST_CASE("sampling: variates have the moments of their distributions") {
    tapir::Rng rng(5);
    const std::size_t n = 40000;
    std::vector<double> g2, g05, gg, po, bw, tn;
    for (std::size_t i = 0; i < n; ++i) {
        g2.push_back(smp::gamma(rng, 2.5));
        g05.push_back(smp::gamma(rng, 0.5));
        po.push_back(smp::poisson(rng, 3.2));
        bw.push_back(smp::breit_wigner(rng, 91.19, 2.5, 81.19, 101.19));
        tn.push_back(smp::truncated_normal(rng, 0.0, 1.0, 0.0, 10.0));
    }
    CHECK(mean(g2) == doctest::Approx(2.5).epsilon(0.02));  // Gamma(k): mean = variance = k
    CHECK(variance(g2) == doctest::Approx(2.5).epsilon(0.05));
    CHECK(mean(g05) == doctest::Approx(0.5).epsilon(0.03));
    CHECK(variance(g05) == doctest::Approx(0.5).epsilon(0.06));
    CHECK(mean(po) == doctest::Approx(3.2).epsilon(0.02));
    CHECK(variance(po) == doctest::Approx(3.2).epsilon(0.05));
    CHECK(mean(tn) == doctest::Approx(std::sqrt(2.0 / 3.14159265358979)).epsilon(0.02));  // half-normal
    // Truncated Cauchy: symmetric, inside the window, half of it within +-gamma/2.
    double inside = 0;
    for (double m : bw) {
        REQUIRE(m >= 81.19);
        REQUIRE(m <= 101.19);
        inside += std::fabs(m - 91.19) < 1.25 ? 1 : 0;
    }
    const double expect = std::atan(1.0) / std::atan(10.0 / 1.25);  // P(|m - m0| < G/2 | window)
    CHECK(inside / static_cast<double>(n) == doctest::Approx(expect).epsilon(0.03));
    CHECK(std::fabs(mean(bw) - 91.19) < 0.06);
    // Generalised gamma with a = b = 1 is an exponential of mean `scale`.
    std::vector<double> ex;
    for (std::size_t i = 0; i < n; ++i) ex.push_back(smp::generalised_gamma(rng, 7.0, 1.0, 1.0));
    CHECK(mean(ex) == doctest::Approx(7.0).epsilon(0.02));
    // 1 + cos^2: <cos^2> = (1/3 + 1/5) / (1 + 1/3) = 0.4.
    std::vector<double> c2;
    for (std::size_t i = 0; i < n; ++i) {
        const double c = smp::cos_theta_1pc2(rng, 1.0);
        c2.push_back(c * c);
    }
    CHECK(mean(c2) == doctest::Approx(0.4).epsilon(0.02));
}

TEST_CASE("sampling: two-body decays conserve four-momentum and put the daughters on shell") {
    tapir::Rng rng(9);
    CHECK(smp::two_body_momentum(91.1876, 0.0, 0.0) == doctest::Approx(91.1876 / 2));
    CHECK(smp::two_body_momentum(172.5, 4.8, 80.38) == doctest::Approx(67.6).epsilon(0.01));  // top -> b W
    CHECK(smp::two_body_momentum(100.0, 50.0, 50.0) == 0.0);
    CHECK_THROWS_AS(smp::two_body_momentum(100.0, 60.0, 50.0), tapir::value_error);
    for (int i = 0; i < 200; ++i) {
        const FourVector parent = smp::system_from_m_pt_y(172.5, rng.uniform(0, 300), rng.uniform(-3, 3), rng.normal() * 2);
        CHECK(parent.m() == doctest::Approx(172.5).epsilon(1e-9));
        const smp::TwoBody d = smp::decay_isotropic(rng, parent, 4.8, 80.38);
        const FourVector sum = d.d1 + d.d2;
        CHECK(sum.px == doctest::Approx(parent.px).epsilon(1e-9).scale(parent.e));
        CHECK(sum.py == doctest::Approx(parent.py).epsilon(1e-9).scale(parent.e));
        CHECK(sum.pz == doctest::Approx(parent.pz).epsilon(1e-9).scale(parent.e));
        CHECK(sum.e == doctest::Approx(parent.e).epsilon(1e-9));
        CHECK(d.d1.m() == doctest::Approx(4.8).epsilon(1e-5));
        CHECK(d.d2.m() == doctest::Approx(80.38).epsilon(1e-7));
    }
}

TEST_CASE("stop: 21 named features; a seed gives the same events") {
    const auto& names = hep::stop_feature_names();
    CHECK(names.size() == StopEvent::num_features);
    CHECK(std::set<std::string>(names.begin(), names.end()).size() == names.size());
    const auto a = hep::generate_stop(200, 4), b = hep::generate_stop(200, 4), c = hep::generate_stop(200, 5);
    std::size_t same = 0, differ = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        same += a[i].features() == b[i].features() ? 1 : 0;
        differ += a[i].features() != c[i].features() ? 1 : 0;
    }
    CHECK(same == 200);
    CHECK(differ > 190);
}

TEST_CASE("stop: events pass the preselection and features are consistent") {
    StopConfig cfg;
    const auto ev = hep::generate_stop(3000, 8, cfg);
    std::size_t bad = 0;
    for (const auto& e : ev) {
        bool ok = e.lep_pt > 40 && std::fabs(e.lep_eta) < 2.5 && e.n_jets >= 4 && e.n_bjets >= 1 && e.n_bjets <= e.n_jets;
        ok = ok && e.jet1_pt >= e.jet2_pt && e.jet2_pt >= e.jet3_pt && e.jet3_pt >= e.jet4_pt && e.jet4_pt > 30;
        for (double eta : {e.jet1_eta, e.jet2_eta, e.jet3_eta, e.jet4_eta}) ok = ok && std::fabs(eta) < 2.5;
        ok = ok && e.ht >= e.jet1_pt + e.jet2_pt + e.jet3_pt + e.jet4_pt - 1e-9;
        ok = ok && std::fabs(e.met_over_sqrt_ht - e.met / std::sqrt(e.ht)) < 1e-12;
        // m_T = sqrt(2 pT MET (1 - cos dphi)) <= 2 sqrt(pT MET).
        ok = ok && e.mt >= 0 && e.mt <= 2 * std::sqrt(e.lep_pt * e.met) + 1e-9;
        ok = ok && e.dphi_min_j12_met >= 0 && e.dphi_min_j12_met <= 3.14159266 && e.m_lb > 0 && e.m_jjj > 0;
        ok = ok && e.had_top_chi2 >= 0 && e.dr_lb > 0;
        if (!ok) ++bad;
    }
    CHECK(bad == 0);
}

TEST_CASE("stop: the physics of the two classes") {
    StopConfig single;
    single.dilepton_fraction = 0.0;
    const auto tt1 = sample(6000, 30, 0, single);
    const auto tt = sample(6000, 31, 0);
    const auto st = sample(3000, 32, 1);
    // Single-lepton top pairs: m_T has its Jacobian edge at m_W (smeared by the resolution);
    // lost leptons fill the tail; the signal (two neutralinos) fills it more.
    // Beyond 180 GeV: ~0.0016 single-lepton, ~0.0046 with lost leptons (sd ~0.0005 / 0.0009 at
    // 6000 events), ~0.6 signal.
    const double tail1 = fraction_above(tt1, &StopEvent::mt, 180);
    const double tail = fraction_above(tt, &StopEvent::mt, 180);
    const double tails = fraction_above(st, &StopEvent::mt, 180);
    CHECK(tail1 < 0.004);
    CHECK(tail > 0.0025);
    CHECK(tail > 1.5 * tail1);
    CHECK(tails > 0.5);
    double met_b = 0, met_s = 0, chi_small_b = 0, chi_small_s = 0;
    for (const auto& e : tt) met_b += e.met, chi_small_b += e.had_top_chi2 < 2;
    for (const auto& e : st) met_s += e.met, chi_small_s += e.had_top_chi2 < 2;
    CHECK(met_s / 3000 > 2 * met_b / 6000);
    // Both have a hadronic top in most events: the chi^2 is small.
    CHECK(chi_small_b / 6000 > 0.5);
    CHECK(chi_small_s / 3000 > 0.5);
    // Single-lepton top pairs reconstruct m_jjj near the top mass more often than lost-lepton ones.
    double near1 = 0;
    for (const auto& e : tt1) near1 += std::fabs(e.m_jjj - 172.5) < 30;
    CHECK(near1 / 6000 > 0.25);
}

TEST_CASE("stop: efficiencies and expected yields") {
    hep::StopGenerator g(3);
    CHECK(g.efficiency(0) == 0.0);
    for (int i = 0; i < 2000; ++i) g.next(0);
    for (int i = 0; i < 2000; ++i) g.next(1);
    const double e0 = g.efficiency(0), e1 = g.efficiency(1);
    CHECK(e0 == doctest::Approx(2000.0 / static_cast<double>(g.attempts(0))));
    CHECK(e0 > 0.1);
    CHECK(e0 < 0.35);
    CHECK(e1 > 0.1);
    CHECK(e1 < 0.5);
    const StopConfig& c = g.config();
    CHECK(g.expected_yield(0, 30.0) == doctest::Approx(30.0 * 1000.0 * c.tt_cross_section_pb * c.branching * e0));
    CHECK(g.expected_yield(1, 30.0) == doctest::Approx(30.0 * 1000.0 * c.stop_cross_section_pb * c.branching * e1));
    CHECK_THROWS_AS(g.efficiency(2), tapir::value_error);
}

TEST_CASE("stop: bad configurations are rejected with the reason") {
    StopConfig c;
    c.lsp_mass = 500.0;  // 600 -> 172.5 + 500: off-shell top
    CHECK_THROWS_WITH_AS(hep::StopGenerator(1, c), doctest::Contains("on-shell top"), tapir::value_error);
    c = StopConfig{};
    c.btag_eff = 1.2;
    CHECK_THROWS_WITH_AS(hep::StopGenerator(1, c), doctest::Contains("b-tagging"), tapir::value_error);
    c = StopConfig{};
    c.min_jets = 2;
    CHECK_THROWS_WITH_AS(hep::StopGenerator(1, c), doctest::Contains("min_jets"), tapir::value_error);
    c = StopConfig{};
    c.lep_pt_min = 1e6;
    c.max_attempts = 100;
    hep::StopGenerator g(1, c);
    CHECK_THROWS_WITH_AS(g.next(0), doctest::Contains("preselection"), tapir::value_error);
    CHECK_THROWS_AS(g.next(-1), tapir::value_error);
}
