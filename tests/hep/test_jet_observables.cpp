#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <tapir/error.hpp>
#include <tapir/hep/jet_observables.hpp>
#include <tapir/hep/kinematics.hpp>

namespace hep = tapir::hep;
using hep::FourVector;

TEST_CASE("jet observables: mass, N-subjettiness and ECFs of hand-computable jets") {
    // Two massless particles at dR = 0.4 (same eta): m^2 = 2 pT1 pT2 (cosh 0 - cos 0.4).
    const std::vector<FourVector> two = {FourVector::massless(300.0, 0.0, 0.0), FourVector::massless(100.0, 0.0, 0.4)};
    CHECK(hep::jet_mass(two) == doctest::Approx(std::sqrt(2.0 * 300.0 * 100.0 * (1.0 - std::cos(0.4)))).epsilon(1e-12));
    // tau1: one axis (the E-scheme sum); tau2 = 0 (each particle is an axis).
    const FourVector s = two[0] + two[1];
    const double d0 = 400.0 * 0.8;
    const double expect_tau1 = (300.0 * hep::delta_r(s.rapidity(), s.phi(), 0.0, 0.0) + 100.0 * hep::delta_r(s.rapidity(), s.phi(), 0.0, 0.4)) / d0;
    CHECK(hep::nsubjettiness(two, 1) == doctest::Approx(expect_tau1).epsilon(1e-12));
    CHECK(hep::nsubjettiness(two, 2) == 0.0);
    // ECF2 = pT1 pT2 dR; ECF3 of two particles = 0.
    CHECK(hep::energy_correlation(two, 1) == doctest::Approx(400.0));
    CHECK(hep::energy_correlation(two, 2) == doctest::Approx(300.0 * 100.0 * 0.4).epsilon(1e-12));
    CHECK(hep::energy_correlation(two, 2, 2.0) == doctest::Approx(300.0 * 100.0 * 0.16).epsilon(1e-12));
    CHECK(hep::energy_correlation(two, 3) == 0.0);

    // Three particles on a right triangle of sides 0.3, 0.4, 0.5.
    const std::vector<FourVector> three = {FourVector::massless(200.0, 0.0, 0.0), FourVector::massless(100.0, 0.3, 0.0),
                                           FourVector::massless(50.0, 0.0, 0.4)};
    const double e1 = 350.0, e2 = 200.0 * 100.0 * 0.3 + 200.0 * 50.0 * 0.4 + 100.0 * 50.0 * 0.5;
    const double e3 = 200.0 * 100.0 * 50.0 * 0.3 * 0.4 * 0.5;
    CHECK(hep::energy_correlation(three, 3) == doctest::Approx(e3).epsilon(1e-12));
    const hep::JetSubstructure js = hep::jet_substructure(three);
    CHECK(js.c2 == doctest::Approx(e3 * e1 / (e2 * e2)).epsilon(1e-12));
    CHECK(js.d2 == doctest::Approx(e3 * e1 * e1 * e1 / (e2 * e2 * e2)).epsilon(1e-12));
    CHECK(js.tau3 == 0.0);
    CHECK(js.tau32 == 0.0);
    CHECK(js.tau2 > 0.0);
    CHECK(js.tau21 == doctest::Approx(js.tau2 / js.tau1));
    CHECK(js.n_constituents == 3);
    // tau2 of the triangle: the kT distance min(pT^2) dR^2 is smallest for the pair (0, 2)
    // (50^2 0.4^2 = 400 against 625 and 900), so the axes are p0 + p2 and p1.
    const FourVector a = three[0] + three[2];
    const double t2 = (200.0 * hep::delta_r(a.rapidity(), a.phi(), 0.0, 0.0) + 50.0 * hep::delta_r(a.rapidity(), a.phi(), 0.0, 0.4)) / (350.0 * 0.8);
    CHECK(js.tau2 == doctest::Approx(t2).epsilon(1e-12));
}

TEST_CASE("jet observables: bad arguments are named") {
    const std::vector<FourVector> two = {FourVector::massless(300.0, 0.0, 0.0), FourVector::massless(100.0, 0.0, 0.4)};
    CHECK_THROWS_WITH_AS(hep::nsubjettiness(two, 0), doctest::Contains("N must be >= 1"), tapir::value_error);
    CHECK_THROWS_WITH_AS(hep::nsubjettiness(two, 1, -1.0), doctest::Contains("beta must be in (0, 4], got -1"), tapir::value_error);
    CHECK_THROWS_WITH_AS(hep::energy_correlation(two, 4), doctest::Contains("N must be 0, 1, 2 or 3, got 4"), tapir::value_error);
    CHECK(hep::jet_substructure({}).mass == 0.0);
}
