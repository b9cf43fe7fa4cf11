#include <doctest/doctest.h>

#include "support/zgamma_helpers.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <tapir/error.hpp>
#include <tapir/hep/kinematics.hpp>
#include <tapir/hep/zgamma.hpp>

#include "support/statistics.hpp"

namespace hep = tapir::hep;
using hep::FourVector;
using hep::ZGammaConfig;
using hep::ZGammaEvent;

namespace {

using tapir_test::correlation;
using tapir_test::exponential_slope;
using tapir_test::mean;
using tapir_test::quantile;

constexpr double kPi = 3.14159265358979323846;

std::vector<double> column(const std::vector<ZGammaEvent>& ev, std::size_t j) {
    std::vector<double> out;
    for (const auto& e : ev) out.push_back(e.features()[j]);
    return out;
}

using tapir::test::zgamma_index_of;

} // namespace

TEST_CASE("zgamma: 18 named features") {
    const auto& names = hep::zgamma_feature_names();
    CHECK(names.size() == 18);
    CHECK(ZGammaEvent::num_features == 18);
    CHECK(std::set<std::string>(names.begin(), names.end()).size() == 18);
    CHECK(names.front() == "m_llg");
    CHECK(names.back() == "n_central_jets");
    const ZGammaEvent e = hep::generate_zgamma(1, 3)[0];
    CHECK(e.features()[zgamma_index_of("m_ll")] == e.m_ll);
    CHECK(e.features()[zgamma_index_of("dphi_met_llg")] == e.dphi_met_llg);
    CHECK(e.features()[zgamma_index_of("pt_ll_over_m_llg")] == e.pt_ll_over_m_llg);
}

TEST_CASE("zgamma: a seed gives the same events, a shorter run is a prefix") {
    const auto a = hep::generate_zgamma(300, 42);
    const auto b = hep::generate_zgamma(300, 42);
    const auto c = hep::generate_zgamma(100, 42);
    const auto d = hep::generate_zgamma(300, 43);
    std::size_t same = 0, differ = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        same += a[i].features() == b[i].features() ? 1 : 0;
        differ += a[i].m_llg != d[i].m_llg ? 1 : 0;
    }
    CHECK(same == 300);
    CHECK(differ == 300);
    for (std::size_t i = 0; i < c.size(); ++i) CHECK(c[i].features() == a[i].features());
}

TEST_CASE("zgamma: every event passes the selection and its features follow from its objects") {
    ZGammaConfig cfg;
    cfg.signal_fraction = 0.3;
    const auto ev = hep::generate_zgamma(5000, 7, cfg);
    std::size_t bad = 0;
    for (const auto& e : ev) {
        const FourVector l1 = FourVector::massless(e.lep1_pt, e.lep1_eta, e.lep1_phi);
        const FourVector l2 = FourVector::massless(e.lep2_pt, e.lep2_eta, e.lep2_phi);
        const FourVector ph = FourVector::massless(e.ph_pt, e.ph_eta, e.ph_phi);
        const FourVector z = l1 + l2, llg = z + ph;
        bool ok = e.lep1_pt >= e.lep2_pt && e.lep1_pt > cfg.lep1_pt_min && e.lep2_pt > cfg.lep2_pt_min && e.ph_pt > cfg.ph_pt_min;
        ok = ok && std::fabs(e.lep1_eta) < cfg.lep_eta_max && std::fabs(e.lep2_eta) < cfg.lep_eta_max && std::fabs(e.ph_eta) < cfg.ph_eta_max;
        ok = ok && hep::delta_r(l1, ph) > cfg.dr_lep_ph_min && hep::delta_r(l2, ph) > cfg.dr_lep_ph_min;
        ok = ok && e.m_llg >= cfg.m_min - 1e-9 && e.m_llg <= cfg.m_max + 1e-9 && e.m_ll >= cfg.mll_min - 1e-9 && e.m_ll <= cfg.mll_max + 1e-9;
        ok = ok && std::fabs(llg.m() - e.m_llg) < 1e-6 * e.m_llg && std::fabs(z.m() - e.m_ll) < 1e-6 * e.m_ll;
        ok = ok && std::fabs(llg.pt() - e.pt_llg) < 1e-6 * (1 + e.pt_llg) && std::fabs(llg.e - e.e_llg) < 1e-6 * e.e_llg;
        ok = ok && std::fabs(z.pt() - e.pt_ll) < 1e-6 * (1 + e.pt_ll) && std::fabs(z.e - e.e_ll) < 1e-6 * e.e_ll;
        ok = ok && std::fabs(z.eta() - e.eta_ll) < 1e-6 && std::fabs(hep::delta_phi(z.phi(), e.phi_ll)) < 1e-6;
        ok = ok && std::fabs(hep::delta_r(l1, l2) - e.dr_ll) < 1e-9;
        ok = ok && std::fabs(std::fabs(hep::delta_phi(e.lep1_phi, e.lep2_phi)) - e.dphi_ll) < 1e-12;
        ok = ok && std::fabs(std::fabs(hep::delta_phi(e.phi_met, e.phi_llg)) - e.dphi_met_llg) < 1e-12;
        ok = ok && std::fabs(e.pt_ll_over_m_llg - e.pt_ll / e.m_llg) < 1e-12;
        ok = ok && e.e_llg >= e.m_llg && e.met >= 0.0 && e.dphi_met_llg <= kPi && e.dphi_ll <= kPi;
        ok = ok && e.n_jets >= 0 && e.n_central_jets >= 0 && e.n_central_jets <= e.n_jets && e.n_jets == std::floor(e.n_jets);
        ok = ok && (e.label == 0 || e.label == 1);
        if (!ok) ++bad;
    }
    CHECK(bad == 0);
}

TEST_CASE("zgamma: mass spectra follow the configuration") {
    ZGammaConfig cfg;
    const auto bkg = hep::generate_zgamma(20000, 11, cfg);
    const std::vector<double> m = column(bkg, 0), mll = column(bkg, zgamma_index_of("m_ll"));
    // MLE slope: statistical sd ~ 0.0007 at 20k events.
    CHECK(exponential_slope(m, cfg.m_min, cfg.m_max) == doctest::Approx(cfg.bkg_slope).epsilon(0.06));
    CHECK(std::fabs(quantile(mll, 0.5) - cfg.z_mass) < 0.15);
    // Breit-Wigner (half width 1.25) convolved with a 1.6 GeV Gaussian: central 68% half width ~2.3.
    const double hw = 0.5 * (quantile(mll, 0.84) - quantile(mll, 0.16));
    CHECK(hw > 1.9);
    CHECK(hw < 2.8);

    cfg.signal_fraction = 1.0;
    const auto sig = hep::generate_zgamma(5000, 12, cfg);
    std::vector<double> ms = column(sig, 0);
    CHECK(std::fabs(quantile(ms, 0.5) - cfg.sig_mass) < 0.1);  // sd of the median ~0.03
    const double sd = 0.5 * (quantile(ms, 0.84) - quantile(ms, 0.16));
    CHECK(sd == doctest::Approx(cfg.sig_width).epsilon(0.06));
    for (const auto& e : sig) REQUIRE(e.label == 1);

    cfg.signal_fraction = 0.25;
    const auto mix = hep::generate_zgamma(8000, 13, cfg);
    double ns = 0;
    for (const auto& e : mix) ns += e.label;
    CHECK(ns / 8000.0 == doctest::Approx(0.25).epsilon(0.08));  // binomial sd 0.0048
}

TEST_CASE("zgamma: correlations of the recoil, the jets and the missing E_T") {
    const auto ev = hep::generate_zgamma(20000, 21);
    const std::vector<double> pt = column(ev, zgamma_index_of("pt_llg")), nj = column(ev, zgamma_index_of("n_jets")),
                              met = column(ev, zgamma_index_of("met")), dphi = column(ev, zgamma_index_of("dphi_met_llg")),
                              ptll = column(ev, zgamma_index_of("pt_ll")), ratio = column(ev, zgamma_index_of("pt_ll_over_m_llg")),
                              drll = column(ev, zgamma_index_of("dr_ll")), eta = column(ev, zgamma_index_of("eta_llg")),
                              etall = column(ev, zgamma_index_of("eta_ll")), ncj = column(ev, zgamma_index_of("n_central_jets"));
    CHECK(correlation(pt, nj) > 0.4);       // more recoil, more jets
    CHECK(correlation(pt, met) > 0.35);     // mismeasured recoil
    CHECK(correlation(nj, met) > 0.3);      // soft-term resolution grows with the jets
    CHECK(correlation(nj, ncj) > 0.75);
    CHECK(correlation(ptll, ratio) > 0.95);
    CHECK(correlation(ptll, drll) < -0.6);  // a boosted Z has collimated leptons
    CHECK(correlation(eta, etall) > 0.7);
    // Missing E_T points along the recoil (opposite to the Z gamma system) when the recoil is
    // hard, and anywhere when it is soft.
    double hard = 0, nhard = 0, soft = 0, nsoft = 0;
    for (std::size_t i = 0; i < ev.size(); ++i) {
        if (pt[i] > 60) hard += dphi[i], ++nhard;
        if (pt[i] < 5) soft += dphi[i], ++nsoft;
    }
    REQUIRE(nhard > 500);
    REQUIRE(nsoft > 500);
    CHECK(hard / nhard > 2.0);  // ~2.17; isotropic would be pi/2
    CHECK(std::fabs(soft / nsoft - kPi / 2) < 0.25);

    // The resonance recoils harder than the continuum.
    ZGammaConfig cfg;
    cfg.signal_fraction = 1.0;
    const auto sig = hep::generate_zgamma(5000, 22, cfg);
    CHECK(mean(column(sig, zgamma_index_of("pt_llg"))) > 1.5 * mean(pt));
}

TEST_CASE("zgamma: bad configurations and labels are rejected with the reason") {
    ZGammaConfig c;
    c.signal_fraction = 1.5;
    CHECK_THROWS_WITH_AS(hep::ZGammaGenerator(1, c), doctest::Contains("signal_fraction"), tapir::value_error);
    c = ZGammaConfig{};
    c.mll_max = 140.0;
    CHECK_THROWS_WITH_AS(hep::ZGammaGenerator(1, c), doctest::Contains("mll_max"), tapir::value_error);
    c = ZGammaConfig{};
    c.sig_mass = 200.0;
    CHECK_THROWS_WITH_AS(hep::ZGammaGenerator(1, c), doctest::Contains("sig_mass"), tapir::value_error);
    c = ZGammaConfig{};
    c.central_prob = -0.1;
    CHECK_THROWS_AS(hep::ZGammaGenerator(1, c), tapir::value_error);
    hep::ZGammaGenerator g(1);
    CHECK_THROWS_WITH_AS(g.next(2), doctest::Contains("label"), tapir::value_error);
    // Cuts no event can pass: a clear error, not an endless loop.
    c = ZGammaConfig{};
    c.ph_pt_min = 5000.0;
    c.max_attempts = 50;
    hep::ZGammaGenerator g2(1, c);
    CHECK_THROWS_WITH_AS(g2.next(), doctest::Contains("passed the cuts"), tapir::value_error);
}
