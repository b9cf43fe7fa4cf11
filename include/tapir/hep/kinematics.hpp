#pragma once
/// Collider kinematics in double precision: four-vectors in (px, py, pz, E), built from the
/// detector coordinates (pT, eta, phi, E), and the pair observables of a diphoton analysis.
///
/// Conventions: GeV and radians, z along the beam, eta = asinh(pz / pT), phi in [-pi, pi].

#include <cmath>
#include <limits>
#include <string>

#include "../error.hpp"

namespace tapir::hep {

namespace detail {
inline constexpr double pi = 3.14159265358979323846;
}

/// phi1 - phi2 wrapped to [-pi, pi]. std::remainder is exact, so no rounding is added
/// however many turns the inputs differ by.
inline double delta_phi(double phi1, double phi2) noexcept {
    return std::remainder(phi1 - phi2, 2.0 * detail::pi);
}

inline double delta_eta(double eta1, double eta2) noexcept { return eta1 - eta2; }

/// sqrt(deta^2 + dphi^2) with dphi wrapped.
inline double delta_r(double eta1, double phi1, double eta2, double phi2) noexcept {
    return std::hypot(eta1 - eta2, delta_phi(phi1, phi2));
}

struct FourVector {
    double px = 0.0, py = 0.0, pz = 0.0, e = 0.0;

    constexpr FourVector() = default;
    constexpr FourVector(double px_, double py_, double pz_, double e_) noexcept : px(px_), py(py_), pz(pz_), e(e_) {}

    /// From detector coordinates with a measured energy (the mass is whatever E implies).
    static FourVector from_pt_eta_phi_e(double pt, double eta, double phi, double energy) {
        check_pt(pt, "from_pt_eta_phi_e");
        return {pt * std::cos(phi), pt * std::sin(phi), pt * std::sinh(eta), energy};
    }
    /// A massless particle (photon): E = |p| = pT cosh(eta).
    static FourVector massless(double pt, double eta, double phi) {
        check_pt(pt, "massless");
        return {pt * std::cos(phi), pt * std::sin(phi), pt * std::sinh(eta), pt * std::cosh(eta)};
    }
    /// From (pT, eta, phi, m): E = sqrt(p^2 + m^2).
    static FourVector from_pt_eta_phi_m(double pt, double eta, double phi, double mass) {
        check_pt(pt, "from_pt_eta_phi_m");
        const double p = pt * std::cosh(eta);
        return {pt * std::cos(phi), pt * std::sin(phi), pt * std::sinh(eta), std::hypot(p, mass)};
    }

    double pt() const noexcept { return std::hypot(px, py); }
    double p() const noexcept { return std::hypot(std::hypot(px, py), pz); }
    /// Pseudorapidity; +-infinity along the beam (pT = 0), 0 for the null vector.
    double eta() const noexcept {
        const double t = pt();
        if (t == 0.0) return pz > 0.0 ? std::numeric_limits<double>::infinity()
                                      : (pz < 0.0 ? -std::numeric_limits<double>::infinity() : 0.0);
        return std::asinh(pz / t);
    }
    double phi() const noexcept { return (px == 0.0 && py == 0.0) ? 0.0 : std::atan2(py, px); }
    /// Rapidity 0.5 ln((E + pz) / (E - pz)); +-infinity for |pz| >= E.
    double rapidity() const noexcept {
        if (pz >= e) return std::numeric_limits<double>::infinity();
        if (-pz >= e) return -std::numeric_limits<double>::infinity();
        return std::atanh(pz / e);
    }
    /// m^2 = (E - |p|)(E + |p|): the factored form loses less than E^2 - p^2. Can be a little
    /// negative from rounding (or truly, for a spacelike vector).
    double m2() const noexcept {
        const double pp = p();
        return (e - pp) * (e + pp);
    }
    /// Invariant mass; m^2 < 0 from rounding is clamped to 0 rather than giving NaN.
    double m() const noexcept {
        const double q = m2();
        return q > 0.0 ? std::sqrt(q) : 0.0;
    }
    /// Transverse mass sqrt(m^2 + pT^2) = sqrt(E^2 - pz^2).
    double mt() const noexcept {
        const double q = (e - pz) * (e + pz);
        return q > 0.0 ? std::sqrt(q) : 0.0;
    }

    FourVector& operator+=(const FourVector& o) noexcept {
        px += o.px, py += o.py, pz += o.pz, e += o.e;
        return *this;
    }
    FourVector& operator-=(const FourVector& o) noexcept {
        px -= o.px, py -= o.py, pz -= o.pz, e -= o.e;
        return *this;
    }
    friend FourVector operator+(FourVector a, const FourVector& b) noexcept { return a += b; }
    friend FourVector operator-(FourVector a, const FourVector& b) noexcept { return a -= b; }
    /// Minkowski product with metric (+, -, -, -).
    friend double dot(const FourVector& a, const FourVector& b) noexcept {
        return a.e * b.e - a.px * b.px - a.py * b.py - a.pz * b.pz;
    }

private:
    static void check_pt(double pt, const char* who) {
        if (!(pt >= 0.0) || !std::isfinite(pt))
            throw value_error(std::string("FourVector::") + who + ": pT must be finite and >= 0, got " + std::to_string(pt));
    }
};

/// Lorentz boost by velocity (bx, by, bz) (in units of c): a particle at rest acquires that
/// velocity. Throws value_error unless |beta| < 1.
inline FourVector boost(const FourVector& v, double bx, double by, double bz) {
    const double b2 = bx * bx + by * by + bz * bz;
    if (!(b2 < 1.0))
        throw value_error("hep::boost: |beta| must be < 1, got |beta|^2 = " + std::to_string(b2));
    if (b2 == 0.0) return v;
    const double gamma = 1.0 / std::sqrt((1.0 - std::sqrt(b2)) * (1.0 + std::sqrt(b2)));
    const double bp = bx * v.px + by * v.py + bz * v.pz;
    /// (gamma - 1) / b2 = gamma^2 / (gamma + 1): no cancellation for tiny beta.
    const double g2 = gamma * gamma / (gamma + 1.0);
    const double k = g2 * bp + gamma * v.e;
    return {v.px + k * bx, v.py + k * by, v.pz + k * bz, gamma * (v.e + bp)};
}

/// Boost along z by rapidity y (exact for any y, unlike beta near 1): rapidities add.
inline FourVector boost_z_rapidity(const FourVector& v, double y) noexcept {
    const double c = std::cosh(y), s = std::sinh(y);
    return {v.px, v.py, c * v.pz + s * v.e, c * v.e + s * v.pz};
}

/// Boost that takes the system p to rest (p must be timelike, E > 0).
inline FourVector boost_to_rest_frame(const FourVector& v, const FourVector& p) {
    if (!(p.e > 0.0) || !(p.m2() > 0.0))
        throw value_error("hep::boost_to_rest_frame: the frame vector must be timelike with E > 0");
    return boost(v, -p.px / p.e, -p.py / p.e, -p.pz / p.e);
}

inline double delta_phi(const FourVector& a, const FourVector& b) noexcept { return delta_phi(a.phi(), b.phi()); }
inline double delta_eta(const FourVector& a, const FourVector& b) noexcept { return a.eta() - b.eta(); }
inline double delta_r(const FourVector& a, const FourVector& b) noexcept {
    return delta_r(a.eta(), a.phi(), b.eta(), b.phi());
}

/// Invariant mass of a pair of general four-vectors, clamped at 0.
inline double invariant_mass(const FourVector& a, const FourVector& b) noexcept { return (a + b).m(); }

/// Mass of two massless particles from detector coordinates:
/// m^2 = 2 pT1 pT2 (cosh deta - cos dphi) = 4 pT1 pT2 (sinh^2(deta/2) + sin^2(dphi/2)),
/// the second form being a sum of non-negative terms, free of cancellation for collinear pairs.
inline double massless_pair_mass(double pt1, double eta1, double phi1, double pt2, double eta2, double phi2) noexcept {
    const double sh = std::sinh(0.5 * (eta1 - eta2));
    const double sn = std::sin(0.5 * delta_phi(phi1, phi2));
    const double q = 4.0 * pt1 * pt2 * (sh * sh + sn * sn);
    return q > 0.0 ? std::sqrt(q) : 0.0;
}

/// Transverse momentum of the pair, pT(yy) = |pT1 + pT2| (vector sum in the transverse plane).
inline double pair_pt(double pt1, double phi1, double pt2, double phi2) noexcept {
    return std::hypot(pt1 * std::cos(phi1) + pt2 * std::cos(phi2), pt1 * std::sin(phi1) + pt2 * std::sin(phi2));
}
inline double pair_pt(const FourVector& a, const FourVector& b) noexcept { return std::hypot(a.px + b.px, a.py + b.py); }

/// Collins-Soper cos(theta*) of particle a in the pair rest frame:
/// 2 (a+ b- - a- b+) / (m sqrt(m^2 + pT^2)) with p+- = (E +- pz)/sqrt(2), signed along the
/// pair's pz (the quark direction is not known in pp). 0 for a massless pair.
inline double collins_soper_cos_theta(const FourVector& a, const FourVector& b) noexcept {
    const FourVector q = a + b;
    const double m = q.m();
    const double mt = q.mt();
    if (m == 0.0 || mt == 0.0) return 0.0;
    const double num = (a.e + a.pz) * (b.e - b.pz) - (a.e - a.pz) * (b.e + b.pz);
    const double c = num / (m * mt);
    return q.pz < 0.0 ? -c : c;
}

} // namespace tapir::hep
