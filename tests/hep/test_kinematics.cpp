#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <tapir/data/random.hpp>
#include <tapir/error.hpp>
#include <tapir/hep/kinematics.hpp>

#include "support/data_path.hpp"

using tapir::hep::FourVector;
namespace hep = tapir::hep;

namespace {
constexpr double kPi = 3.14159265358979323846;

/// Rows of the course CSV as 11 numbers (index, 8 photon columns, myy, label). Local on purpose:
/// these tests must not depend on the io/ CSV reader.
std::vector<std::vector<double>> read_course_csv(const std::string& path) {
    std::ifstream f(path);
    std::string line;
    std::getline(f, line);
    REQUIRE(line == ",pt_y1,eta_y1,phi_y1,e_y1,pt_y2,eta_y2,phi_y2,e_y2,myy,label");
    std::vector<std::vector<double>> rows;
    std::size_t lineno = 1;
    while (std::getline(f, line)) {
        ++lineno;
        if (line.empty()) continue;
        std::vector<double> r;
        std::stringstream ss(line);
        std::string tok;
        while (std::getline(ss, tok, ',')) r.push_back(std::stod(tok));
        if (r.size() != 11) FAIL("line " << lineno << " has " << r.size() << " fields, expected 11");
        rows.push_back(r);
    }
    return rows;
}
} // namespace

TEST_CASE("four-vectors from detector coordinates, hand-derived") {
    const FourVector a = FourVector::massless(50.0, 0.0, 0.0);
    CHECK(a.px == doctest::Approx(50.0));
    CHECK(a.py == doctest::Approx(0.0));
    CHECK(a.pz == doctest::Approx(0.0));
    CHECK(a.e == doctest::Approx(50.0));

    // eta = ln 2: sinh = 3/4, cosh = 5/4.
    const FourVector b = FourVector::massless(40.0, std::log(2.0), kPi / 2);
    CHECK(b.px == doctest::Approx(0.0).epsilon(1e-12));
    CHECK(b.py == doctest::Approx(40.0).epsilon(1e-14));
    CHECK(b.pz == doctest::Approx(30.0).epsilon(1e-14));
    CHECK(b.e == doctest::Approx(50.0).epsilon(1e-14));
    CHECK(b.m() == doctest::Approx(0.0));

    const FourVector c = FourVector::from_pt_eta_phi_e(30.0, std::log(2.0), 0.0, 40.0);  // p = 37.5
    CHECK(c.m() == doctest::Approx(std::sqrt(40.0 * 40.0 - 37.5 * 37.5)).epsilon(1e-13));

    const FourVector z = FourVector::from_pt_eta_phi_m(25.0, -1.1, 2.0, 91.1876);
    CHECK(z.m() == doctest::Approx(91.1876).epsilon(1e-13));
    CHECK(z.pt() == doctest::Approx(25.0).epsilon(1e-14));
    CHECK(z.eta() == doctest::Approx(-1.1).epsilon(1e-13));
    CHECK(z.phi() == doctest::Approx(2.0).epsilon(1e-14));
    CHECK(z.mt() == doctest::Approx(std::hypot(91.1876, 25.0)).epsilon(1e-13));
    CHECK(z.rapidity() != doctest::Approx(z.eta()));  // massive: y != eta

    CHECK_THROWS_AS(FourVector::massless(-1.0, 0.0, 0.0), tapir::value_error);
    CHECK_THROWS_AS(FourVector::from_pt_eta_phi_e(std::nan(""), 0.0, 0.0, 1.0), tapir::value_error);
}

TEST_CASE("pt, eta, phi round-trip and the beam axis") {
    for (double eta : {-2.37, -0.9, 0.0, 0.4, 1.9, 4.0})
        for (double phi : {-3.1, -1.0, 0.0, 0.5, 2.9, kPi}) {
            const FourVector v = FourVector::massless(37.5, eta, phi);
            CHECK(v.pt() == doctest::Approx(37.5).epsilon(1e-14));
            CHECK(v.eta() == doctest::Approx(eta).epsilon(1e-12));
            CHECK(std::fabs(hep::delta_phi(v.phi(), phi)) < 1e-14);
            CHECK(v.rapidity() == doctest::Approx(eta).epsilon(1e-12));  // massless: y = eta
        }
    const FourVector beam(0.0, 0.0, 10.0, 10.0);
    CHECK(beam.eta() == std::numeric_limits<double>::infinity());
    CHECK(FourVector(0.0, 0.0, -3.0, 10.0).eta() == -std::numeric_limits<double>::infinity());
    CHECK(FourVector().eta() == 0.0);
    CHECK(FourVector().phi() == 0.0);
}

TEST_CASE("delta phi wraps to [-pi, pi], delta eta, delta R") {
    CHECK(hep::delta_phi(3.0, -3.0) == doctest::Approx(6.0 - 2 * kPi).epsilon(1e-14));
    CHECK(hep::delta_phi(-3.0, 3.0) == doctest::Approx(2 * kPi - 6.0).epsilon(1e-14));
    CHECK(std::fabs(hep::delta_phi(kPi / 2, -kPi / 2)) == doctest::Approx(kPi).epsilon(1e-15));
    CHECK(std::fabs(hep::delta_phi(1.0 + 20 * kPi, 1.0)) < 1e-13);
    CHECK(hep::delta_phi(0.3, 0.1) == doctest::Approx(0.2).epsilon(1e-14));
    tapir::Rng rng(11);
    for (int i = 0; i < 2000; ++i) {
        const double p1 = rng.uniform(-10.0, 10.0), p2 = rng.uniform(-10.0, 10.0);
        const double d = hep::delta_phi(p1, p2);
        CHECK((d >= -kPi && d <= kPi));
        CHECK(std::cos(d) == doctest::Approx(std::cos(p1 - p2)).epsilon(1e-12));
        CHECK(std::sin(d) == doctest::Approx(std::sin(p1 - p2)).scale(1.0).epsilon(1e-12));
    }
    CHECK(hep::delta_eta(1.2, -0.3) == doctest::Approx(1.5));
    CHECK(hep::delta_r(0.0, 3.0, 0.3, -3.0) == doctest::Approx(std::hypot(0.3, 2 * kPi - 6.0)).epsilon(1e-14));
    const FourVector a = FourVector::massless(40, 0.5, 3.0), b = FourVector::massless(30, -0.1, -3.0);
    CHECK(hep::delta_eta(a, b) == doctest::Approx(0.6).epsilon(1e-13));
    CHECK(hep::delta_phi(a, b) == doctest::Approx(6.0 - 2 * kPi).epsilon(1e-13));
    CHECK(hep::delta_r(a, b) == doctest::Approx(std::hypot(0.6, 6.0 - 2 * kPi)).epsilon(1e-13));
}

TEST_CASE("diphoton mass and pT, hand-derived") {
    // Back to back at eta = 0: m = pt1 + pt2.
    const FourVector a = FourVector::massless(50, 0, 0), b = FourVector::massless(50, 0, kPi);
    CHECK(hep::invariant_mass(a, b) == doctest::Approx(100.0).epsilon(1e-14));
    CHECK(hep::pair_pt(a, b) < 1e-12);
    // Perpendicular in phi, same eta: m^2 = 2 pt1 pt2.
    const FourVector c = FourVector::massless(40, 0.7, 0), d = FourVector::massless(30, 0.7, kPi / 2);
    CHECK(hep::invariant_mass(c, d) == doctest::Approx(std::sqrt(2400.0)).epsilon(1e-13));
    CHECK(hep::massless_pair_mass(40, 0.7, 0, 30, 0.7, kPi / 2) == doctest::Approx(std::sqrt(2400.0)).epsilon(1e-14));
    CHECK(hep::pair_pt(40, 0, 30, kPi / 2) == doctest::Approx(50.0).epsilon(1e-14));
    CHECK(hep::pair_pt(c, d) == doctest::Approx(50.0).epsilon(1e-14));
    // deta = ln 2 (cosh = 5/4), same phi: m^2 = 2 * 40 * 30 * (1/4) = 600.
    CHECK(hep::massless_pair_mass(40, 0.1, 1.0, 30, 0.1 + std::log(2.0), 1.0) == doctest::Approx(std::sqrt(600.0)).epsilon(1e-13));
    // The course file's first row (header row 0).
    CHECK(hep::massless_pair_mass(62.2385, 1.2206, 2.02509, 58.7416, 0.879753, -1.23967) ==
          doctest::Approx(122.464).epsilon(1e-5));
}

TEST_CASE("massless identity m^2 = 2 pt1 pt2 (cosh deta - cos dphi)") {
    tapir::Rng rng(2024);
    for (int i = 0; i < 5000; ++i) {
        const double pt1 = rng.uniform(25, 300), pt2 = rng.uniform(25, 300);
        const double e1 = rng.uniform(-2.5, 2.5), e2 = rng.uniform(-2.5, 2.5);
        const double p1 = rng.uniform(-kPi, kPi), p2 = rng.uniform(-kPi, kPi);
        const double m2 = 2 * pt1 * pt2 * (std::cosh(e1 - e2) - std::cos(p1 - p2));
        const double ref = std::sqrt(m2);
        const FourVector a = FourVector::massless(pt1, e1, p1), b = FourVector::massless(pt2, e2, p2);
        CHECK(hep::invariant_mass(a, b) == doctest::Approx(ref).epsilon(1e-9));
        CHECK(hep::massless_pair_mass(pt1, e1, p1, pt2, e2, p2) == doctest::Approx(ref).epsilon(1e-12));
        CHECK(dot(a + b, a + b) == doctest::Approx(m2).epsilon(1e-9));
        CHECK(2 * dot(a, b) == doctest::Approx(m2).epsilon(1e-9));
    }
}

TEST_CASE("numerically careful mass: collinear pairs and rounding below zero") {
    // deta = 1e-7, same phi: m = 2 sqrt(pt1 pt2) sinh(deta/2). E^2 - p^2 would lose every digit.
    const double m_ref = 2 * std::sqrt(40.0 * 90.0) * std::sinh(0.5e-7);
    CHECK(hep::massless_pair_mass(40, 1.0, 0.3, 90, 1.0 + 1e-7, 0.3) == doctest::Approx(m_ref).epsilon(1e-8));
    CHECK(hep::massless_pair_mass(40, 1.0, 0.3, 90, 1.0, 0.3) == 0.0);
    // A vector just outside the light cone by rounding: m^2 < 0, m() clamps to 0 (not NaN).
    const FourVector v(3.0, 4.0, 0.0, 5.0 - 1e-15);
    CHECK(v.m2() < 0.0);
    CHECK(v.m() == 0.0);
    tapir::Rng rng(5);
    for (int i = 0; i < 2000; ++i) {
        const FourVector g = FourVector::massless(rng.uniform(1, 500), rng.uniform(-5, 5), rng.uniform(-kPi, kPi));
        const double m = g.m();
        CHECK(std::isfinite(m));
        CHECK(m >= 0.0);
        CHECK(m <= 1e-6 * g.e);
        const double mm = hep::invariant_mass(g, g);  // parallel photons: zero mass
        CHECK((std::isfinite(mm) && mm <= 1e-6 * g.e));
    }
}

TEST_CASE("Lorentz invariance: boosts leave the mass unchanged") {
    tapir::Rng rng(99);
    for (int i = 0; i < 500; ++i) {
        const FourVector a = FourVector::massless(rng.uniform(25, 200), rng.uniform(-2.4, 2.4), rng.uniform(-kPi, kPi));
        const FourVector b = FourVector::massless(rng.uniform(25, 200), rng.uniform(-2.4, 2.4), rng.uniform(-kPi, kPi));
        const double m = hep::invariant_mass(a, b);
        const double y = rng.uniform(-3, 3);
        const FourVector ay = hep::boost_z_rapidity(a, y), by = hep::boost_z_rapidity(b, y);
        CHECK(hep::invariant_mass(ay, by) == doctest::Approx(m).epsilon(1e-9));
        // Along z: pT unchanged, eta (= rapidity for photons) shifted by y, so deta unchanged.
        CHECK(ay.pt() == doctest::Approx(a.pt()).epsilon(1e-13));
        CHECK(ay.eta() == doctest::Approx(a.eta() + y).epsilon(1e-9));
        CHECK(hep::delta_eta(ay, by) == doctest::Approx(hep::delta_eta(a, b)).epsilon(1e-9));
        // The same boost by velocity tanh(y).
        const FourVector az = hep::boost(a, 0, 0, std::tanh(y));
        CHECK(az.pz == doctest::Approx(ay.pz).epsilon(1e-9));
        CHECK(az.e == doctest::Approx(ay.e).epsilon(1e-9));
        // A general boost keeps the mass, and its inverse restores the vector.
        const double bx = rng.uniform(-0.5, 0.5), byy = rng.uniform(-0.5, 0.5), bz = rng.uniform(-0.6, 0.6);
        const FourVector ag = hep::boost(a, bx, byy, bz), bg = hep::boost(b, bx, byy, bz);
        CHECK(hep::invariant_mass(ag, bg) == doctest::Approx(m).epsilon(1e-9));
        CHECK(ag.m() <= 1e-6 * ag.e);
        const FourVector back = hep::boost(ag, -bx, -byy, -bz);
        CHECK(back.px == doctest::Approx(a.px).epsilon(1e-10).scale(a.e));
        CHECK(back.pz == doctest::Approx(a.pz).epsilon(1e-10).scale(a.e));
        CHECK(back.e == doctest::Approx(a.e).epsilon(1e-10));
        // In the pair rest frame the photons are back to back with E = m/2 each.
        const FourVector ar = hep::boost_to_rest_frame(a, a + b), br = hep::boost_to_rest_frame(b, a + b);
        CHECK(ar.e == doctest::Approx(m / 2).epsilon(1e-9));
        CHECK(br.e == doctest::Approx(m / 2).epsilon(1e-9));
        CHECK(std::fabs(ar.px + br.px) < 1e-9 * m);
        CHECK(std::fabs(ar.pz + br.pz) < 1e-9 * m);
    }
    CHECK_THROWS_AS(hep::boost(FourVector(1, 0, 0, 1), 0.6, 0.0, 0.8), tapir::value_error);
    CHECK_THROWS_AS(hep::boost_to_rest_frame(FourVector(1, 0, 0, 1), FourVector(1, 0, 0, 1)), tapir::value_error);
}

TEST_CASE("Collins-Soper cos(theta*) recovers the rest-frame decay angle") {
    for (double cth : {-0.9, -0.3, 0.0, 0.45, 0.8})
        for (double y : {-1.5, 0.0, 0.7}) {
            const double h = 62.5, s = std::sqrt(1 - cth * cth);
            const FourVector a(h * s, 0.0, h * cth, h), b(-h * s, 0.0, -h * cth, h);
            const FourVector al = hep::boost_z_rapidity(a, y), bl = hep::boost_z_rapidity(b, y);
            // Signed along the pair's pz: the sign flips for a backward-moving pair.
            const double expect = y < 0 ? -cth : cth;
            CHECK(hep::collins_soper_cos_theta(al, bl) == doctest::Approx(expect).scale(1.0).epsilon(1e-12));
            // Massless and pT = 0: |cos theta*| = tanh(|deta|/2).
            CHECK(std::fabs(hep::collins_soper_cos_theta(al, bl)) ==
                  doctest::Approx(std::tanh(std::fabs(hep::delta_eta(al, bl)) / 2)).scale(1.0).epsilon(1e-10));
        }
}

TEST_CASE("real H->yy file: myy recomputes from the photon four-vectors") {
    const std::string path = tapir_test::shared_data("higgs_diphoton_50k.csv");
    if (path.empty()) {
        MESSAGE("skipped: ../shared/data/higgs_diphoton_50k.csv not found");
        return;
    }
    const auto rows = read_course_csv(path);
    REQUIRE(rows.size() == 49999);
    double max_dm = 0, max_dm_e = 0, max_de = 0;
    std::size_t within_1mev = 0;
    for (const auto& r : rows) {
        // Massless photons from (pT, eta, phi): the sheet's "to ~1e-3 GeV".
        const FourVector a = FourVector::massless(r[1], r[2], r[3]), b = FourVector::massless(r[5], r[6], r[7]);
        const double dm = std::fabs(hep::invariant_mass(a, b) - r[9]);
        max_dm = std::max(max_dm, dm);
        if (dm < 1e-3) ++within_1mev;
        // The stored E columns (6 significant digits) put a little mass on each photon; with them
        // the pair mass is off by up to ~0.07 GeV for forward photons.
        const FourVector ae = FourVector::from_pt_eta_phi_e(r[1], r[2], r[3], r[4]);
        const FourVector be = FourVector::from_pt_eta_phi_e(r[5], r[6], r[7], r[8]);
        max_dm_e = std::max(max_dm_e, std::fabs(hep::invariant_mass(ae, be) - r[9]));
        max_de = std::max({max_de, std::fabs(r[4] - a.e) / r[4], std::fabs(r[8] - b.e) / r[8]});
    }
    MESSAGE("max |myy - m(massless)| = " << max_dm << " GeV, within 1e-3 GeV: " << within_1mev << "/" << rows.size()
                                          << "; with the E column: " << max_dm_e << " GeV");
    CHECK(max_dm < 3e-3);
    CHECK(static_cast<double>(within_1mev) / static_cast<double>(rows.size()) > 0.995);
    CHECK(max_dm_e < 0.1);
    CHECK(max_de < 2e-5);  // E = pT cosh(eta) to the file's printed precision
}
