// CoLa, LoLa, LorentzBoostNetwork and the boost: gradients of first and second order, Lorentz
// invariance, boosts into rest frames against hand-derived values.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/nn/lorentz.hpp>

#include "support/gradcheck.hpp"

using namespace tapir;
using namespace tapir::nn;
using namespace tapir_test;

namespace {
/// Physical 4-vectors (B, N, 4): momenta in [-pmax, pmax), masses in [mlo, mhi), E = sqrt(m^2 + p^2).
Td four_vectors(std::size_t b, std::size_t n, std::uint64_t seed, double pmax = 2.0, double mlo = 0.1, double mhi = 1.0) {
    Rng r(seed);
    Td x(Shape{b, n, 4});
    for (std::size_t i = 0; i < b; ++i)
        for (std::size_t j = 0; j < n; ++j) {
            double p2 = 0;
            for (std::size_t k = 1; k < 4; ++k) {
                x(i, j, k) = r.uniform(-pmax, pmax);
                p2 += x(i, j, k) * x(i, j, k);
            }
            const double m = r.uniform(mlo, mhi);
            x(i, j, 0) = std::sqrt(m * m + p2);
        }
    return x;
}

/// Every 4-vector boosted by beta along z, after a rotation about x by angle a (a general Lorentz
/// transformation written out by hand, independent of the library's boost).
Td transformed(const Td& x, double beta, double a) {
    const double g = 1.0 / std::sqrt(1.0 - beta * beta), c = std::cos(a), s = std::sin(a);
    Td y(x.shape());
    for (std::size_t i = 0; i < x.shape()[0]; ++i)
        for (std::size_t j = 0; j < x.shape()[1]; ++j) {
            const double e = x(i, j, 0), px = x(i, j, 1);
            const double py = c * x(i, j, 2) - s * x(i, j, 3), pz = s * x(i, j, 2) + c * x(i, j, 3);
            y(i, j, 0) = g * (e - beta * pz);
            y(i, j, 1) = px;
            y(i, j, 2) = py;
            y(i, j, 3) = g * (pz - beta * e);
        }
    return y;
}

void check_module(Module<double>& m, const Td& x) {
    std::vector<Td> inputs{x};
    for (auto* p : m.parameters()) inputs.push_back(p->value);
    check_both([&m](Tape<double>&, const Vs& v) { return functional_call(m, v[0], Vs(v.begin() + 1, v.end())); }, inputs);
}

} // namespace

TEST_CASE("CoLa: identity part kept, combinations by hand, gradients, shape errors") {
    Rng rng(1);
    CoLa<double> cola(3, 2, rng);
    const Td x = four_vectors(2, 3, 2);
    Tape<double> t;
    const Td y = cola.forward(t.constant(x)).value();
    CHECK(y.shape() == Shape{2, 5, 4});
    for (std::size_t b = 0; b < 2; ++b)
        for (std::size_t k = 0; k < 4; ++k) {
            for (std::size_t i = 0; i < 3; ++i) CHECK(y(b, i, k) == x(b, i, k));
            for (std::size_t m = 0; m < 2; ++m) {
                double want = 0;
                for (std::size_t i = 0; i < 3; ++i) want += x(b, i, k) * cola.weight.value(i, m);
                CHECK(y(b, 3 + m, k) == doctest::Approx(want).epsilon(1e-14));
            }
        }
    check_module(cola, x);
    CHECK_THROWS_WITH(cola.forward(t.constant(Td(Shape{2, 4, 4}))), "CoLa: expected 4-vectors of shape (B, 3, 4), got (2, 4, 4)");
    CHECK(cola.output_shape(Shape{7, 3, 4}) == Shape{7, 5, 4});
}

TEST_CASE("LoLa: features by hand, Lorentz-invariant mass under a boost of every input, gradients") {
    Rng rng(3);
    LoLa<double> lola(4, rng);
    const Td x = four_vectors(2, 4, 4);
    Tape<double> t;
    const Td f = lola.forward(t.constant(x)).value();
    CHECK(f.shape() == Shape{2, 4, 5});
    // One 4-vector by hand: m^2, pT^2, E, the energy sum and the distance sum.
    const std::size_t b = 1, j = 2;
    const double e = x(b, j, 0), px = x(b, j, 1), py = x(b, j, 2), pz = x(b, j, 3);
    CHECK(f(b, j, 0) == doctest::Approx(e * e - px * px - py * py - pz * pz).epsilon(1e-12));
    CHECK(f(b, j, 1) == doctest::Approx(px * px + py * py).epsilon(1e-12));
    CHECK(f(b, j, 2) == e);
    double esum = 0, dsum = 0;
    for (std::size_t m = 0; m < 4; ++m) {
        esum += lola.energy_weights.value(j, m) * x(b, m, 0);
        double d2 = 0;
        for (std::size_t k = 0; k < 4; ++k) {
            const double dk = x(b, j, k) - x(b, m, k);
            d2 += (k == 0 ? 1.0 : -1.0) * dk * dk;
        }
        dsum += lola.distance_weights.value(j, m) * d2;
    }
    CHECK(f(b, j, 3) == doctest::Approx(esum).epsilon(1e-12));
    CHECK(f(b, j, 4) == doctest::Approx(dsum).epsilon(1e-12));

    // A boost with beta = 0.6 after a rotation: m^2 (and, with the Minkowski metric, d^2) stay, E moves.
    const Td fb = lola.forward(t.constant(transformed(x, 0.6, 0.4))).value();
    for (std::size_t i = 0; i < 2; ++i)
        for (std::size_t k = 0; k < 4; ++k) {
            CHECK(fb(i, k, 0) == doctest::Approx(f(i, k, 0)).epsilon(1e-10));
            CHECK(fb(i, k, 4) == doctest::Approx(f(i, k, 4)).epsilon(1e-10));
        }
    CHECK(std::fabs(fb(0, 0, 2) - f(0, 0, 2)) > 1e-3);
    // A learned metric away from Minkowski breaks the invariance of d^2 but not of m^2.
    lola.metric.value(0) = 1.1;
    const Td g0 = lola.forward(t.constant(x)).value(), g1 = lola.forward(t.constant(transformed(x, 0.6, 0.4))).value();
    CHECK(std::fabs(g1(0, 0, 4) - g0(0, 0, 4)) > 1e-6);
    CHECK(g1(0, 0, 0) == doctest::Approx(g0(0, 0, 0)).epsilon(1e-10));
    check_module(lola, x);
    CHECK_THROWS_WITH(lola.forward(t.constant(Td(Shape{2, 4, 3}))), "LoLa: expected 4-vectors of shape (B, 4, 4), got (2, 4, 3)");
}

TEST_CASE("boost_to_rest_frame: a particle in its own rest frame, and a hand-derived boost") {
    const Td p = four_vectors(2, 3, 5);
    Tape<double> t;
    const V vp = t.constant(p);
    const Td r = boost_to_rest_frame(vp, vp).value();
    for (std::size_t i = 0; i < 2; ++i)
        for (std::size_t j = 0; j < 3; ++j) {
            const double m = std::sqrt(p(i, j, 0) * p(i, j, 0) - p(i, j, 1) * p(i, j, 1) - p(i, j, 2) * p(i, j, 2) - p(i, j, 3) * p(i, j, 3));
            CHECK(r(i, j, 0) == doctest::Approx(m).epsilon(1e-12));
            for (std::size_t k = 1; k < 4; ++k) CHECK(std::fabs(r(i, j, k)) < 1e-12);
        }
    // A particle of mass 2 at rest, seen from a frame of mass 3 moving with beta = 0.8 along z
    // (gamma = 5/3, frame E = 5, pz = 4): E' = gamma m = 10/3, pz' = -gamma beta m = -8/3.
    Td a(Shape{1, 4}), f(Shape{1, 4});
    a(0, 0) = 2.0;
    f(0, 0) = 5.0, f(0, 3) = 4.0;
    const Td ab = boost_to_rest_frame(t.constant(a), t.constant(f)).value();
    CHECK(ab(0, 0) == doctest::Approx(10.0 / 3.0).epsilon(1e-14));
    CHECK(ab(0, 1) == 0.0);
    CHECK(ab(0, 2) == 0.0);
    CHECK(ab(0, 3) == doctest::Approx(-8.0 / 3.0).epsilon(1e-14));
    // A transverse momentum is untouched by a boost along z: (E, px, 0, 0) -> (gamma E, px, 0, -gamma beta E).
    Td c(Shape{1, 4});
    c(0, 0) = 2.0, c(0, 1) = 1.5;
    const Td cb = boost_to_rest_frame(t.constant(c), t.constant(f)).value();
    CHECK(cb(0, 0) == doctest::Approx(10.0 / 3.0).epsilon(1e-14));
    CHECK(cb(0, 1) == doctest::Approx(1.5).epsilon(1e-14));
    CHECK(cb(0, 3) == doctest::Approx(-8.0 / 3.0).epsilon(1e-14));
    // Rest frames well inside the light cone (gamma below 2), where finite differences are accurate.
    check_both([](Tape<double>&, const Vs& v) { return boost_to_rest_frame(v[0], v[1]); },
               {four_vectors(2, 2, 6), four_vectors(2, 2, 7, 1.0, 1.0, 2.0)});
    CHECK_THROWS_WITH(boost_to_rest_frame(t.constant(a), t.constant(p)), "boost_to_rest_frame: expected two 4-vector values (..., 4) of one shape: (1, 4) vs (2, 3, 4)");
}

TEST_CASE("LorentzBoostNetwork: features of the boosted particles by hand, gradients") {
    Rng rng(8);
    LorentzBoostNetwork<double> lbn(4, 3, rng);
    CHECK(lbn.features() == 5 * 3 + 3);
    const Td x = four_vectors(2, 4, 9);
    Tape<double> t;
    const V vx = t.constant(x);
    const Td pb = lbn.boosted(vx).value();
    const Td f = lbn.forward(vx).value();
    CHECK(f.shape() == Shape{2, 18});
    for (std::size_t b = 0; b < 2; ++b) {
        for (std::size_t m = 0; m < 3; ++m) {
            const double e = pb(b, m, 0), px = pb(b, m, 1), py = pb(b, m, 2), pz = pb(b, m, 3);
            const double pt = std::hypot(px, py), p = std::sqrt(px * px + py * py + pz * pz);
            CHECK(f(b, m) == doctest::Approx(e).epsilon(1e-12));
            CHECK(f(b, 3 + m) == doctest::Approx(pt).epsilon(1e-12));
            CHECK(f(b, 6 + m) == doctest::Approx(std::asinh(pz / pt)).epsilon(1e-10));
            CHECK(f(b, 9 + m) == doctest::Approx(std::atan2(py, px)).epsilon(1e-12));
            CHECK(f(b, 12 + m) == doctest::Approx(std::sqrt(e * e - p * p)).epsilon(1e-10));
        }
        // Pairs (0, 1), (0, 2), (1, 2).
        const std::size_t pairs[3][2] = {{0, 1}, {0, 2}, {1, 2}};
        for (std::size_t k = 0; k < 3; ++k) {
            const std::size_t i = pairs[k][0], j = pairs[k][1];
            double dot = 0, ni = 0, nj = 0;
            for (std::size_t c = 1; c < 4; ++c) {
                dot += pb(b, i, c) * pb(b, j, c);
                ni += pb(b, i, c) * pb(b, i, c);
                nj += pb(b, j, c) * pb(b, j, c);
            }
            CHECK(f(b, 15 + k) == doctest::Approx(dot / std::sqrt(ni * nj)).epsilon(1e-12));
        }
    }
    // The boosted particle of combination m, from the weights by hand: its mass is the mass of the
    // (unboosted) combination, an invariant.
    for (std::size_t m = 0; m < 3; ++m) {
        double c[4] = {0, 0, 0, 0};
        for (std::size_t i = 0; i < 4; ++i)
            for (std::size_t k = 0; k < 4; ++k) c[k] += std::fabs(lbn.particle_weights.value(i, m)) * x(0, i, k);
        CHECK(f(0, 12 + m) == doctest::Approx(std::sqrt(c[0] * c[0] - c[1] * c[1] - c[2] * c[2] - c[3] * c[3])).epsilon(1e-10));
    }
    check_module(lbn, x);
    CHECK_THROWS_WITH(lbn.forward(t.constant(Td(Shape{2, 3, 4}))), "LorentzBoostNetwork: expected 4-vectors of shape (B, 4, 4), got (2, 3, 4)");
}

TEST_CASE("LorentzBoostNetwork: finite values and gradients for particles on the -x and -z axes (float)") {
    // Particle 0 boosted into the rest frame of particle 1, which is at rest: the boosted particle is
    // particle 0 as given. In float, pT + px and |p| + pz round to exactly 0 for these directions;
    // unguarded, phi's gradient (jets 0 and 1) and eta (jet 2) were not finite.
    Rng rng(3);
    LorentzBoostNetwork<float> lbn(2, 1, rng);
    lbn.particle_weights.value(0, 0) = 1.0f, lbn.particle_weights.value(1, 0) = 0.0f;
    lbn.restframe_weights.value(0, 0) = 0.0f, lbn.restframe_weights.value(1, 0) = 1.0f;
    const float p[3][4] = {{2.0f, -1.0f, 1e-5f, 0.0f}, {2.0f, -1.0f, 0.0f, 0.0f}, {2.0f, 1e-5f, 0.0f, -1.0f}};
    Tensor<float> x(Shape{3, 2, 4});
    for (std::size_t b = 0; b < 3; ++b) {
        for (std::size_t k = 0; k < 4; ++k) x(b, 0, k) = p[b][k];
        x(b, 1, 0) = 1.0f;
    }
    REQUIRE(std::hypot(x(0, 0, 1), x(0, 0, 2)) + x(0, 0, 1) == 0.0f);  // the cancellation the guard is for
    Tape<float> t;
    const Var<float> vx = t.variable(x);
    const Var<float> f = lbn.forward(vx);  // (3, 5): E, pT, eta, phi, m
    for (std::size_t i = 0; i < f.size(); ++i) CHECK(std::isfinite(f.data()[i]));
    const Tensor<float> v = f.value();
    CHECK(v(0, 3) == doctest::Approx(3.14159265).epsilon(0.1));  // near the cut: about pi
    CHECK(v(1, 3) == 0.0f);                                      // on it: 0 (documented), not NaN
    CHECK(v(0, 4) == doctest::Approx(std::sqrt(3.0)).epsilon(1e-5));
    CHECK(v(2, 2) < -2.0f);  // eta of a particle 1e-5 from the -z axis: large and negative, not -inf
    backward(sum(f));
    const Tensor<float> g = vx.grad();
    for (std::size_t i = 0; i < g.size(); ++i) CHECK(std::isfinite(g.data()[i]));
    for (auto* w : lbn.parameters())
        for (std::size_t i = 0; i < w->grad.size(); ++i) CHECK(std::isfinite(w->grad.data()[i]));
}
