#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include <tapir/error.hpp>
#include <tapir/hep/jet_clustering.hpp>
#include <tapir/hep/jets.hpp>
#include <tapir/hep/kinematics.hpp>

#ifdef TAPIR_TEST_FASTJET
#include <fastjet/ClusterSequence.hh>
#endif

namespace hep = tapir::hep;
using hep::FourVector;

TEST_CASE("anti-kT: separated particles are separate jets, close ones merge, hardest first") {
    const std::vector<FourVector> p = {
        FourVector::massless(100.0, 0.0, 0.0), FourVector::massless(10.0, 0.3, 0.2),  // within R of the first
        FourVector::massless(50.0, 0.0, 2.5),                                          // far away in phi
        FourVector::massless(5.0, 1.2, 2.5),                                           // dR = 1.2 from it: alone
    };
    const auto jets = hep::cluster_jets(p, 0.8);
    REQUIRE(jets.size() == 3);
    CHECK(jets[0].constituents == std::vector<std::size_t>{0, 1});
    CHECK(jets[1].constituents == std::vector<std::size_t>{2});
    CHECK(jets[2].constituents == std::vector<std::size_t>{3});
    const FourVector s = p[0] + p[1];
    CHECK(jets[0].p.px == doctest::Approx(s.px));
    CHECK(jets[0].p.e == doctest::Approx(s.e));
    // With R = 1.5 the soft particle at dR = 1.2 joins the 50 GeV one.
    const auto wide = hep::cluster_jets(p, 1.5);
    REQUIRE(wide.size() == 2);
    CHECK(wide[1].constituents == std::vector<std::size_t>{2, 3});
    // pt_min drops soft jets.
    CHECK(hep::cluster_jets(p, 0.8, hep::JetAlgorithm::anti_kt, 20.0).size() == 2);
    // Across phi = pi the distance wraps.
    const std::vector<FourVector> w = {FourVector::massless(80.0, 0.0, 3.1), FourVector::massless(20.0, 0.0, -3.1)};
    CHECK(hep::cluster_jets(w, 0.4).size() == 1);
    CHECK(hep::cluster_jets({}, 0.8).empty());
}

TEST_CASE("anti-kT: hard jets are circular; kT merges soft particles first") {
    // A soft particle between two hard ones at dR = 0.7 and 0.9: anti-kT gives it to the
    // nearer hard one with a cone of radius R around each.
    const std::vector<FourVector> p = {FourVector::massless(200.0, 0.0, 0.0), FourVector::massless(150.0, 1.6, 0.0),
                                       FourVector::massless(1.0, 0.7, 0.0), FourVector::massless(1.0, 0.75, 0.0)};
    const auto akt = hep::cluster_jets(p, 0.8, hep::JetAlgorithm::anti_kt);
    REQUIRE(akt.size() == 2);
    CHECK(akt[0].constituents == std::vector<std::size_t>{0, 2, 3});
    const auto ex = hep::exclusive_subjets(p, 3, hep::JetAlgorithm::kt);  // the two soft ones merge first
    REQUIRE(ex.size() == 3);
    CHECK(ex[2].constituents == std::vector<std::size_t>{2, 3});
    CHECK(hep::exclusive_subjets(p, 1).front().constituents.size() == 4);
    CHECK(hep::exclusive_subjets(p, 9).size() == 4);
}

TEST_CASE("anti-kT: bad input is rejected with the values named") {
    const std::vector<FourVector> p = {FourVector(1.0, 0.0, 0.0, 1.0), FourVector(1.0, 0.0, std::nan(""), 1.0)};
    CHECK_THROWS_WITH_AS(hep::cluster_jets(p), doctest::Contains("particle 1 must have finite components"), tapir::value_error);
    CHECK_THROWS_WITH_AS(hep::cluster_jets({}, -0.4), doctest::Contains("radius R must be in (0, 10], got -0.4"), tapir::value_error);
    CHECK_THROWS_WITH_AS(hep::exclusive_subjets({}, 0), doctest::Contains("n must be >= 1"), tapir::value_error);
}

TEST_CASE("anti-kT: tapir's jets equal FastJet's on 1000 generated events") {
#ifndef TAPIR_TEST_FASTJET
    MESSAGE("FastJet not found at configure time (libfastjet-dev): the comparison with FastJet is skipped");
#else
    hep::JetGenerator gen(7);
    std::size_t n_jets = 0, n_multi = 0;
    for (int ev = 0; ev < 1000; ++ev) {
        gen.next(ev % 2);
        const std::vector<FourVector>& h = gen.last_hadrons();
        std::vector<fastjet::PseudoJet> in;
        for (std::size_t i = 0; i < h.size(); ++i) {
            in.emplace_back(h[i].px, h[i].py, h[i].pz, h[i].e);
            in.back().set_user_index(static_cast<int>(i));
        }
        const fastjet::JetDefinition def(fastjet::antikt_algorithm, 0.8, fastjet::E_scheme);
        const fastjet::ClusterSequence cs(in, def);
        const std::vector<fastjet::PseudoJet> fj = cs.inclusive_jets(0.0);
        const auto tj = hep::cluster_jets(h, 0.8);
        REQUIRE(tj.size() == fj.size());
        std::map<std::vector<std::size_t>, const fastjet::PseudoJet*> by_members;
        for (const auto& j : fj) {
            std::vector<std::size_t> m;
            for (const auto& c : j.constituents()) m.push_back(static_cast<std::size_t>(c.user_index()));
            std::sort(m.begin(), m.end());
            by_members[m] = &j;
        }
        for (const auto& j : tj) {
            const auto it = by_members.find(j.constituents);
            REQUIRE(it != by_members.end());
            const fastjet::PseudoJet& f = *it->second;
            const double tol = 1e-10 * f.E();
            CHECK(std::fabs(j.p.px - f.px()) <= tol);
            CHECK(std::fabs(j.p.py - f.py()) <= tol);
            CHECK(std::fabs(j.p.pz - f.pz()) <= tol);
            CHECK(std::fabs(j.p.e - f.E()) <= tol);
        }
        n_jets += tj.size();
        n_multi += tj.size() > 1 ? 1 : 0;
        // Exclusive kT subjets (the N-subjettiness axes) agree as well.
        if (ev % 10 == 0) {
            const fastjet::JetDefinition kt(fastjet::kt_algorithm, fastjet::JetDefinition::max_allowable_R, fastjet::E_scheme);
            const fastjet::ClusterSequence ks(in, kt);
            const auto fx = fastjet::sorted_by_pt(ks.exclusive_jets(3));
            const auto tx = hep::exclusive_subjets(h, 3);
            REQUIRE(fx.size() == tx.size());
            for (std::size_t k = 0; k < tx.size(); ++k) CHECK(std::fabs(tx[k].p.e - fx[k].E()) <= 1e-10 * fx[k].E());
        }
    }
    CHECK(n_multi > 100);  // the comparison covers events with several jets, not only one
    MESSAGE("compared " << n_jets << " anti-kT jets in 1000 events with FastJet");
#endif
}
