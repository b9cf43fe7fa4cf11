#pragma once
/// Random variates and decay kinematics shared by the event generators (zgamma.hpp, stop.hpp):
/// line shapes, spectra, counts and two-body decays, every number drawn from tapir::Rng so that
/// a seed gives the same events on every platform with the same libm.

#include <cmath>
#include <cstdint>
#include <string>

#include "../error.hpp"
#include "../random.hpp"
#include "kinematics.hpp"

namespace tapir::hep::sampling {

inline constexpr double pi = 3.14159265358979323846;

/// dN/dx ~ exp(slope x) on [lo, hi], by inversion (expm1/log1p keep it exact for tiny slopes).
inline double truncated_exponential(Rng& rng, double slope, double lo, double hi) {
    const double u = rng.uniform();
    if (slope == 0.0) return lo + (hi - lo) * u;
    const double x = lo + std::log1p(u * std::expm1(slope * (hi - lo))) / slope;
    return x < lo ? lo : (x > hi ? hi : x);
}

/// Gaussian truncated to [lo, hi] by rejection; throws when the window holds (almost) nothing.
inline double truncated_normal(Rng& rng, double mean, double sigma, double lo, double hi) {
    for (int i = 0; i < 100000; ++i) {
        const double x = mean + sigma * rng.normal();
        if (x >= lo && x <= hi) return x;
    }
    throw value_error("sampling::truncated_normal: N(" + std::to_string(mean) + ", " + std::to_string(sigma) +
                      ") puts no probability in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

/// Relativistic line shape in the narrow-width form, a Cauchy distribution in the mass:
/// dN/dm ~ 1 / ((m - m0)^2 + (gamma/2)^2) on [lo, hi], by inversion of its CDF (exact).
inline double breit_wigner(Rng& rng, double m0, double gamma, double lo, double hi) {
    const double h = 0.5 * gamma;
    const double a = std::atan((lo - m0) / h), b = std::atan((hi - m0) / h);
    const double m = m0 + h * std::tan(a + (b - a) * rng.uniform());
    return m < lo ? lo : (m > hi ? hi : m);
}

namespace detail {
/// Marsaglia and Tsang (2000), "A simple method for generating gamma variables", with their
/// squeeze; k < 1 through U^(1/k) boosting. `unit()` draws the uniform variates: the diphoton
/// generator draws them on (0, 1] and the others on [0, 1), and both conventions stay so that every
/// seeded event stream (and the figures quoted from them) keeps its bits.
template <class Unit>
double gamma_marsaglia_tsang(Rng& rng, double k, Unit unit) {
    if (k < 1.0) return gamma_marsaglia_tsang(rng, k + 1.0, unit) * std::pow(unit(), 1.0 / k);
    const double d = k - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = rng.normal();
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        const double u = unit();
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
    }
}
/// scale * Gamma(a/b)^(1/b): see generalised_gamma.
template <class Unit>
double generalised_gamma_with(Rng& rng, double scale, double a, double b, Unit unit) {
    return scale * std::pow(gamma_marsaglia_tsang(rng, a / b, unit), 1.0 / b);
}
} // namespace detail

/// Gamma(shape k, scale 1) variate: Marsaglia and Tsang (2000); k < 1 through U^(1/k) boosting.
inline double gamma(Rng& rng, double k) {
    if (!(k > 0.0)) throw value_error("sampling::gamma: shape must be > 0, got " + std::to_string(k));
    return detail::gamma_marsaglia_tsang(rng, k, [&rng] { return rng.uniform(); });
}

/// Generalised gamma spectrum dN/dx ~ x^(a-1) exp(-(x/scale)^b) (a transverse-momentum shape:
/// rises like x^(a-1), tail exp(-x^b)). With u = (x/scale)^b, u ~ Gamma(a/b).
inline double generalised_gamma(Rng& rng, double scale, double a, double b) {
    if (!(a > 0.0) || !(b > 0.0))
        throw value_error("sampling::generalised_gamma: a and b must be > 0, got " + std::to_string(a) + " and " + std::to_string(b));
    return detail::generalised_gamma_with(rng, scale, a, b, [&rng] { return rng.uniform(); });
}

/// Poisson count (Knuth's product of uniforms; fine for the small means of jet multiplicities).
inline int poisson(Rng& rng, double mean) {
    if (!(mean >= 0.0) || !(mean < 200.0)) throw value_error("sampling::poisson: mean must be in [0, 200), got " + std::to_string(mean));
    const double limit = std::exp(-mean);
    double p = rng.uniform();
    int k = 0;
    while (p > limit) {
        ++k;
        p *= rng.uniform();
    }
    return k;
}

/// Number of successes in n trials of probability p.
inline int binomial(Rng& rng, int n, double p) {
    int k = 0;
    for (int i = 0; i < n; ++i) k += rng.bernoulli(p) ? 1 : 0;
    return k;
}

/// cos(theta) with dN/dcos ~ 1 + c2 cos^2 (c2 >= -1), by rejection.
inline double cos_theta_1pc2(Rng& rng, double c2) {
    const double top = 1.0 + (c2 > 0.0 ? c2 : 0.0);
    for (;;) {
        const double c = rng.uniform(-1.0, 1.0);
        if (rng.uniform() * top <= 1.0 + c2 * c * c) return c;
    }
}

/// cos(theta) = tanh(eta*) with dN/deta* ~ cosh(eta*)^k on |eta*| < emax: k = -2 is isotropic,
/// k = 0 is dN/dcos ~ 1/sin^2 (a t-channel forward peak), k > 0 more forward still.
inline double cos_theta_forward(Rng& rng, double k, double emax) {
    const double norm = k >= 0.0 ? std::cosh(emax) : 1.0;
    for (;;) {
        const double e = rng.uniform(-emax, emax);
        if (rng.uniform() <= std::pow(std::cosh(e) / norm, k)) return std::tanh(e);
    }
}

/// Momentum of either daughter in the rest frame of a parent of mass m decaying to masses m1, m2
/// (the Kallen function); 0 at threshold, value_error below it.
inline double two_body_momentum(double m, double m1, double m2) {
    const double a = (m - m1 - m2) * (m + m1 + m2), b = (m - m1 + m2) * (m + m1 - m2);
    if (a < 0.0 || m <= 0.0)
        throw value_error("sampling::two_body_momentum: " + std::to_string(m) + " GeV cannot decay to " + std::to_string(m1) +
                          " + " + std::to_string(m2) + " GeV");
    return std::sqrt(a * (b > 0.0 ? b : 0.0)) / (2.0 * m);
}

/// Daughters of a two-body decay of `parent` (a four-vector in the lab, mass > m1 + m2) with the
/// daughter-1 direction (cos theta, phi) given in the parent's rest frame, boosted to the lab.
struct TwoBody {
    FourVector d1, d2;
};
inline TwoBody decay_two_body(const FourVector& parent, double m1, double m2, double cos_t, double phi) {
    const double m = parent.m();
    const double p = two_body_momentum(m, m1, m2);
    const double s = std::sqrt((1.0 - cos_t) * (1.0 + cos_t));
    const FourVector a(p * s * std::cos(phi), p * s * std::sin(phi), p * cos_t, std::hypot(p, m1));
    const FourVector b(-a.px, -a.py, -a.pz, std::hypot(p, m2));
    const double bx = parent.px / parent.e, by = parent.py / parent.e, bz = parent.pz / parent.e;
    return TwoBody{boost(a, bx, by, bz), boost(b, bx, by, bz)};
}

/// Isotropic two-body decay.
inline TwoBody decay_isotropic(Rng& rng, const FourVector& parent, double m1, double m2) {
    const double c = rng.uniform(-1.0, 1.0);
    return decay_two_body(parent, m1, m2, c, rng.uniform(-pi, pi));
}

/// A system of mass m, transverse momentum pt at azimuth phi and rapidity y, as a four-vector:
/// (pt cos phi, pt sin phi, mT sinh y, mT cosh y) with mT = sqrt(m^2 + pt^2).
inline FourVector system_from_m_pt_y(double m, double pt, double phi, double y) {
    const double mt = std::hypot(m, pt);
    return FourVector(pt * std::cos(phi), pt * std::sin(phi), mt * std::sinh(y), mt * std::cosh(y));
}

} // namespace tapir::hep::sampling
