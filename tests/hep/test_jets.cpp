#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

#include <tapir/error.hpp>
#include <tapir/hep/jet_clustering.hpp>
#include <tapir/hep/jet_observables.hpp>
#include <tapir/hep/jets.hpp>
#include <tapir/hep/kinematics.hpp>
#include <tapir/random.hpp>

#include "support/statistics.hpp"

namespace hep = tapir::hep;
using hep::FourVector;
using tapir_test::quantile;

namespace {

struct Sample {
    std::vector<double> mass, tau32, tau21, n, pt, eta;
    std::size_t w_pairs = 0, jets = 0;
};

// The three hardest exclusive-kT subjets: is a pair within 15 GeV of m_W?
bool has_w_pair(const std::vector<FourVector>& c) {
    const auto sj = hep::exclusive_subjets(c, 3);
    if (sj.size() < 3) return false;
    for (std::size_t a = 0; a < 3; ++a)
        for (std::size_t b = a + 1; b < 3; ++b)
            if (std::fabs((sj[a].p + sj[b].p).m() - 80.4) < 15.0) return true;
    return false;
}

Sample sample(int label, std::size_t n, std::uint64_t seed) {
    hep::JetGenerator gen(seed);
    Sample s;
    for (std::size_t i = 0; i < n; ++i) {
        const hep::GeneratedJet j = gen.next(label);
        const FourVector p = hep::jet_momentum(j.constituents);
        s.mass.push_back(p.m());
        s.pt.push_back(p.pt());
        s.eta.push_back(p.eta());
        s.n.push_back(static_cast<double>(j.constituents.size()));
        const double t1 = hep::nsubjettiness(j.constituents, 1), t2 = hep::nsubjettiness(j.constituents, 2);
        const double t3 = hep::nsubjettiness(j.constituents, 3);
        s.tau21.push_back(t2 / t1);
        s.tau32.push_back(t3 / t2);
        s.w_pairs += has_w_pair(j.constituents) ? 1 : 0;
        ++s.jets;
    }
    return s;
}

} // namespace

TEST_CASE("jets: top jets peak at m_t, with three prongs and a W pair; QCD jets are one-prong") {
    const Sample top = sample(1, 1000, 1), qcd = sample(0, 1000, 2);
    const double m_top = quantile(top.mass, 0.5), m_qcd = quantile(qcd.mass, 0.5);
    const double t32_top = quantile(top.tau32, 0.5), t32_qcd = quantile(qcd.tau32, 0.5);
    MESSAGE("median mass top " << m_top << " QCD " << m_qcd << "; median tau32 top " << t32_top << " QCD " << t32_qcd
                               << "; median tau21 top " << quantile(top.tau21, 0.5) << " QCD " << quantile(qcd.tau21, 0.5)
                               << "; median constituents top " << quantile(top.n, 0.5) << " QCD " << quantile(qcd.n, 0.5)
                               << "; W pair in " << top.w_pairs << "/1000 top and " << qcd.w_pairs << "/1000 QCD jets");
    CHECK(std::fabs(m_top - 173.0) < 10.0);
    // Most top jets lie in the peak; QCD jets are much lighter.
    CHECK(quantile(top.mass, 0.25) > 150.0);
    CHECK(m_qcd < 100.0);
    CHECK(t32_top < t32_qcd - 0.1);
    CHECK(quantile(top.tau21, 0.5) > 0.0);
    CHECK(top.w_pairs > 700);
    CHECK(qcd.w_pairs < top.w_pairs / 2);
    // Top jets have more constituents than QCD jets (three showering prongs).
    CHECK(quantile(top.n, 0.5) > quantile(qcd.n, 0.5));
    for (const Sample* s : {&top, &qcd}) {
        for (std::size_t i = 0; i < s->jets; ++i) {
            CHECK(s->n[i] >= 1.0);
            CHECK(s->n[i] <= 200.0);
            CHECK(s->pt[i] > 550.0);
            CHECK(s->pt[i] < 650.0);
            CHECK(std::fabs(s->eta[i]) < 2.0);
        }
    }
}

TEST_CASE("jets: constituents are massless, sorted by pT, and capped at max_constituents") {
    hep::JetConfig cfg;
    cfg.max_constituents = 20;
    hep::JetGenerator gen(5, cfg);
    std::size_t capped = 0;
    for (int i = 0; i < 50; ++i) {
        const auto j = gen.next(1);
        REQUIRE(!j.constituents.empty());
        CHECK(j.constituents.size() <= 20);
        capped += j.constituents.size() == 20 ? 1 : 0;
        for (std::size_t k = 0; k < j.constituents.size(); ++k) {
            const FourVector& c = j.constituents[k];
            CHECK(std::fabs(c.m2()) <= 1e-9 * c.e * c.e);
            CHECK(c.pt() >= cfg.hadron_pt_min);
            if (k > 0) CHECK(c.pt() <= j.constituents[k - 1].pt());
        }
    }
    CHECK(capped > 40);  // top jets have more than 20 hadrons: the cap is exercised
}

TEST_CASE("jets: the shower conserves four-momentum before hadronisation") {
    hep::JetGenerator gen(9);
    for (int i = 0; i < 200; ++i) {
        const auto j = gen.next(i % 2);
        FourVector s;
        std::size_t n = 0;
        for (const auto& p : gen.last_partons()) s += p.p, ++n;
        CHECK(n >= 1);
        const double tol = 1e-9 * j.truth.e;
        // A top: the partons add up to the top exactly. A QCD parton: to its three-momentum,
        // with the shower's mass.
        CHECK(std::fabs(s.px - j.truth.px) <= tol);
        CHECK(std::fabs(s.py - j.truth.py) <= tol);
        CHECK(std::fabs(s.pz - j.truth.pz) <= tol);
        if (j.label == 1) CHECK(std::fabs(s.e - j.truth.e) <= tol);
        for (const auto& p : gen.last_partons()) CHECK(std::fabs(p.p.m2()) <= 1e-6 * p.p.e * p.p.e);
    }
    // Lone 1 TeV partons: exact three-momentum, a positive mass, more branchings for gluons.
    tapir::Rng rng(4);
    const FourVector g = FourVector::massless(1000.0, 0.5, 1.0);
    double n_g = 0, n_q = 0;
    for (int i = 0; i < 200; ++i) {
        const bool gluon = i % 2 == 1;
        const auto partons = hep::shower_parton(rng, g, gluon, 1000.0, hep::JetConfig{});
        FourVector s;
        for (const auto& p : partons) s += p.p;
        CHECK(std::fabs(s.px - g.px) <= 1e-9 * g.e);
        CHECK(std::fabs(s.pz - g.pz) <= 1e-9 * g.e);
        CHECK(s.e >= g.e);
        (gluon ? n_g : n_q) += static_cast<double>(partons.size());
    }
    MESSAGE("mean partons of a 1 TeV shower: gluon " << n_g / 100 << ", quark " << n_q / 100);
    CHECK(n_q / 100 > 3.0);
    CHECK(n_g > 1.3 * n_q);
}

TEST_CASE("jets: gluon jets radiate more than quark jets (CA > CF)") {
    hep::JetConfig q, g;
    q.gluon_fraction = 0.0;
    g.gluon_fraction = 1.0;
    hep::JetGenerator gq(21, q), gg(22, g);
    std::vector<double> nq, ng;
    for (int i = 0; i < 300; ++i) nq.push_back(static_cast<double>(gq.next(0).constituents.size()));
    for (int i = 0; i < 300; ++i) ng.push_back(static_cast<double>(gg.next(0).constituents.size()));
    CHECK(quantile(ng, 0.5) > quantile(nq, 0.5) + 3.0);
}

TEST_CASE("jets: bit-identical for a seed; a shorter run is a prefix") {
    const auto a = hep::generate_jets(30, 1), b = hep::generate_jets(30, 1), c = hep::generate_jets(10, 1);
    REQUIRE(a.size() == 30);
    for (std::size_t i = 0; i < a.size(); ++i) {
        CHECK(a[i].label == b[i].label);
        REQUIRE(a[i].constituents.size() == b[i].constituents.size());
        for (std::size_t k = 0; k < a[i].constituents.size(); ++k) {
            CHECK(a[i].constituents[k].px == b[i].constituents[k].px);
            CHECK(a[i].constituents[k].e == b[i].constituents[k].e);
        }
        if (i < c.size()) CHECK(c[i].constituents.size() == a[i].constituents.size());
    }
    // Pinned numbers of seed 1's first jet (change only with a deliberate change of the physics).
    const hep::GeneratedJet& j = a[0];
    char buf[160];
    std::snprintf(buf, sizeof buf, "%d %zu %.9g %.9g %.9g", j.label, j.constituents.size(), j.constituents[0].px,
                  j.constituents[0].e, hep::jet_mass(j.constituents));
    CHECK(std::string(buf) == "0 32 45.164639 152.693766 37.2332292");
    const auto other = hep::generate_jets(3, 2);
    CHECK(other[0].constituents[0].e != a[0].constituents[0].e);
}

TEST_CASE("jets: bad configurations are named") {
    hep::JetConfig c;
    c.signal_fraction = 1.5;
    CHECK_THROWS_WITH_AS(hep::JetGenerator(1, c), doctest::Contains("JetConfig: signal_fraction must be in [0, 1], got 1.5"),
                         tapir::value_error);
    c = hep::JetConfig{};
    c.jet_pt_min = 700.0;
    CHECK_THROWS_WITH_AS(hep::JetGenerator(1, c), doctest::Contains("need 0 <= jet_pt_min < jet_pt_max, got [700"),
                         tapir::value_error);
    c = hep::JetConfig{};
    c.shower_cutoff = 0.3;
    c.alpha_s_mz = 0.25;
    CHECK_THROWS_WITH_AS(hep::JetGenerator(1, c), doctest::Contains("Landau pole"), tapir::value_error);
    c = hep::JetConfig{};
    c.top_mass = 50.0;
    CHECK_THROWS_WITH_AS(hep::JetGenerator(1, c), doctest::Contains("need 0 < w_mass < top_mass"), tapir::value_error);
    c = hep::JetConfig{};
    c.max_constituents = 0;
    CHECK_THROWS_WITH_AS(hep::JetGenerator(1, c), doctest::Contains("max_constituents must be >= 1"), tapir::value_error);
    // A jet window the partons cannot reach: a clear error instead of an endless loop.
    c = hep::JetConfig{};
    c.jet_pt_min = 900.0, c.jet_pt_max = 1000.0, c.max_attempts = 50;
    hep::JetGenerator g(1, c);
    CHECK_THROWS_WITH_AS(g.next(0), doctest::Contains("no jet passed the selection in 50 attempts"), tapir::value_error);
    hep::JetGenerator ok(1);
    CHECK_THROWS_WITH_AS(ok.next(2), doctest::Contains("label must be 0 or 1, got 2"), tapir::value_error);
}
