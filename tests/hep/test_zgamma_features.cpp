#include <doctest/doctest.h>

#include "support/zgamma_helpers.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/error.hpp>
#include <tapir/hep/zgamma_features.hpp>

#include "support/gradcheck.hpp"

namespace hep = tapir::hep;
using tapir::Shape;
using tapir::Tape;
using tapir::Tensor;
using tapir_test::check_both;
using tapir_test::Td;
using tapir_test::V;
using tapir_test::Vs;

namespace {

constexpr double kPi = 3.14159265358979323846;

template <class T>
Tensor<T> dof_of(const std::vector<hep::ZGammaEvent>& ev) {
    Tensor<T> x(Shape{ev.size(), hep::zgamma_num_dof});
    for (std::size_t i = 0; i < ev.size(); ++i) {
        const auto d = hep::zgamma_dof(ev[i]);
        for (std::size_t j = 0; j < d.size(); ++j) x(i, j) = static_cast<T>(d[j]);
    }
    return x;
}

using tapir::test::zgamma_index_of;

} // namespace

TEST_CASE("zgamma_features reproduces the generator's 18 features from its 13 independent numbers") {
    hep::ZGammaConfig cfg;
    cfg.signal_fraction = 0.3;
    const auto ev = hep::generate_zgamma(3000, 11, cfg);
    Tape<double> t;
    const V f = hep::zgamma_features(t.constant(dof_of<double>(ev)));
    REQUIRE(f.shape() == Shape{ev.size(), hep::ZGammaEvent::num_features});
    double worst = 0;
    for (std::size_t i = 0; i < ev.size(); ++i) {
        const auto want = ev[i].features();
        for (std::size_t j = 0; j < want.size(); ++j) {
            const double err = std::fabs(f[i * want.size() + j] - want[j]) / std::max(1.0, std::fabs(want[j]));
            worst = std::max(worst, err);
        }
    }
    CHECK(worst < 1e-9);

    Tape<float> tf;  // float: the generator's precision (inputs rounded to float, eta up to ~5 amplifies)
    const tapir::Var<float> ff = hep::zgamma_features(tf.constant(dof_of<float>(ev)));
    double worst_f = 0;
    for (std::size_t i = 0; i < ev.size(); ++i) {
        const auto want = ev[i].features();
        for (std::size_t j = 0; j < want.size(); ++j)
            worst_f = std::max(worst_f, std::fabs(ff[i * want.size() + j] - want[j]) / std::max(1.0, std::fabs(want[j])));
    }
    CHECK(worst_f < 1e-4);
}

TEST_CASE("zgamma_features: hand-derived event, symmetric in the leptons, angles need no wrapping") {
    // Back-to-back leptons at eta 0 with pT 40 (m_ll = 80, pT_ll = 0 up to the guard), photon pT 30
    // at eta 0 and phi pi/2: m_llg^2 = 80^2 + 2 (4 * 40 * 30 * 1/2) = 11200.
    Td d(Shape{1, 13}, {40, 0, 0, 40, 0, kPi, 30, 0, kPi / 2, 12, -kPi / 2, 2, 1});
    Tape<double> t;
    const V f = hep::zgamma_features(t.constant(d));
    CHECK(f[zgamma_index_of("m_ll")] == doctest::Approx(80.0).epsilon(1e-12));
    CHECK(f[zgamma_index_of("m_llg")] == doctest::Approx(std::sqrt(11200.0)).epsilon(1e-12));
    CHECK(f[zgamma_index_of("pt_llg")] == doctest::Approx(30.0).epsilon(1e-12));
    CHECK(f[zgamma_index_of("phi_llg")] == doctest::Approx(kPi / 2).epsilon(1e-12));
    CHECK(f[zgamma_index_of("e_llg")] == doctest::Approx(110.0).epsilon(1e-12));
    CHECK(f[zgamma_index_of("e_ll")] == doctest::Approx(80.0).epsilon(1e-12));
    CHECK(f[zgamma_index_of("dphi_ll")] == doctest::Approx(kPi).epsilon(1e-12));
    CHECK(f[zgamma_index_of("dr_ll")] == doctest::Approx(kPi).epsilon(1e-12));
    CHECK(f[zgamma_index_of("dphi_met_llg")] == doctest::Approx(kPi).epsilon(1e-12));
    CHECK(f[zgamma_index_of("phi_met")] == doctest::Approx(-kPi / 2).epsilon(1e-12));
    CHECK(f[zgamma_index_of("met")] == 12.0);
    CHECK(f[zgamma_index_of("n_jets")] == 2.0);
    CHECK(f[zgamma_index_of("n_central_jets")] == 1.0);
    CHECK(f[zgamma_index_of("pt_ll_over_m_llg")] < 1e-6);

    // Swapped leptons and every angle shifted by whole turns: the same 18 features.
    const auto ev = hep::generate_zgamma(200, 5);
    Td a = dof_of<double>(ev), b = a;
    for (std::size_t i = 0; i < ev.size(); ++i) {
        for (std::size_t j = 0; j < 3; ++j) std::swap(b(i, j), b(i, 3 + j));
        b(i, 2) += 6 * kPi, b(i, 5) -= 4 * kPi, b(i, 8) += 2 * kPi, b(i, 10) -= 10 * kPi;
    }
    const V fa = hep::zgamma_features(t.constant(a)), fb = hep::zgamma_features(t.constant(b));
    for (std::size_t k = 0; k < fa.size(); ++k) CHECK(fb[k] == doctest::Approx(fa[k]).epsilon(1e-10));
}

TEST_CASE("zgamma_features: arbitrary inputs give physical events (finite, E_llg at least m_llg, exact ratio)") {
    tapir::Rng r(3);
    Tensor<float> d(Shape{4000, 13});
    for (std::size_t i = 0; i < 4000; ++i)
        for (std::size_t j = 0; j < 13; ++j) {
            const bool pt = j == 0 || j == 3 || j == 6 || j == 9;
            d(i, j) = static_cast<float>(pt ? std::exp(3.0 + 2.0 * r.normal()) : 3.0 * r.normal());
        }
    Tape<float> t;
    const tapir::Var<float> x = t.variable(d);
    const tapir::Var<float> f = hep::zgamma_features(x);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < 4000; ++i) {
        const float* e = f.data() + i * 18;
        for (std::size_t j = 0; j < 18; ++j) bad += std::isfinite(e[j]) ? 0 : 1;
        bad += e[zgamma_index_of("e_llg")] >= e[zgamma_index_of("m_llg")] * (1 - 1e-6f) ? 0 : 1;
        bad += e[zgamma_index_of("e_llg")] >= e[zgamma_index_of("e_ll")] ? 0 : 1;
        bad += std::fabs(e[zgamma_index_of("phi_llg")]) <= kPi + 1e-6 && std::fabs(e[zgamma_index_of("phi_met")]) <= kPi + 1e-6 ? 0 : 1;
        bad += e[zgamma_index_of("dphi_ll")] >= 0 && e[zgamma_index_of("dphi_ll")] <= kPi + 1e-6 ? 0 : 1;
        bad += e[zgamma_index_of("dphi_met_llg")] >= 0 && e[zgamma_index_of("dphi_met_llg")] <= kPi + 1e-6 ? 0 : 1;
        bad += e[zgamma_index_of("pt_ll_over_m_llg")] == e[zgamma_index_of("pt_ll")] / e[zgamma_index_of("m_llg")] ? 0 : 1;
    }
    CHECK(bad == 0);
    tapir::backward(tapir::sum(f));
    const Tensor<float> g = x.grad();
    std::size_t nonfinite = 0;
    for (float v : g) nonfinite += std::isfinite(v) ? 0 : 1;
    CHECK(nonfinite == 0);
}

TEST_CASE("zgamma_features: first and second derivatives (WGAN-GP differentiates twice)") {
    const auto ev = hep::generate_zgamma(4, 21);
    check_both([](Tape<double>&, const Vs& x) { return hep::zgamma_features(x[0]); }, {dof_of<double>(ev)});
}

TEST_CASE("zgamma_features: bad input names the problem") {
    Tape<double> t;
    CHECK_THROWS_WITH_AS(hep::zgamma_features(t.constant(Td(Shape{2, 12}))), doctest::Contains("expected (events, 13)"),
                         tapir::shape_error);
    Td d(Shape{1, 13}, {40, 0, 0, 0, 0, 1, 30, 0, 2, 5, 0, 0, 0});
    CHECK_THROWS_WITH_AS(hep::zgamma_features(t.constant(d)), doctest::Contains("lep2_pt of event 0 must be positive"), tapir::value_error);
    d(0, 3) = 20, d(0, 9) = -1;
    CHECK_THROWS_WITH_AS(hep::zgamma_features(t.constant(d)), doctest::Contains("met of event 0 must be at least 0"), tapir::value_error);
}
