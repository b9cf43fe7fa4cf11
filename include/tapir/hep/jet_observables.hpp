#pragma once
/// High-level jet substructure observables of a jet given by its constituents (four-vectors):
/// the jet mass, N-subjettiness (Thaler and Van Tilburg, arXiv:1011.2268) and energy
/// correlation functions with their ratios C2 and D2 (Larkoski, Salam and Thaler,
/// arXiv:1305.0007; D2 from Larkoski, Moult and Neill, arXiv:1409.6298). Angles are
/// dR = sqrt(dy^2 + dphi^2) in rapidity and azimuth; momenta are transverse momenta, the
/// hadron-collider form of both papers.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "../error.hpp"
#include "jet_clustering.hpp"
#include "kinematics.hpp"

namespace tapir::hep {

/// Invariant mass of the sum of the constituents.
inline double jet_mass(const std::vector<FourVector>& constituents) {
    FourVector s;
    for (const FourVector& c : constituents) s += c;
    return s.m();
}

/// Sum of the constituents' four-vectors (E-scheme jet momentum).
inline FourVector jet_momentum(const std::vector<FourVector>& constituents) {
    FourVector s;
    for (const FourVector& c : constituents) s += c;
    return s;
}

namespace detail {
inline double obs_dr(double y1, double phi1, double y2, double phi2) noexcept {
    double dphi = std::fabs(phi1 - phi2);
    if (dphi > pi) dphi = 2.0 * pi - dphi;
    return std::hypot(y1 - y2, dphi);
}
inline double pow_beta(double x, double beta) noexcept { return beta == 1.0 ? x : (beta == 2.0 ? x * x : std::pow(x, beta)); }
inline void check_beta(double beta, const char* who) {
    if (!(beta > 0.0 && beta <= 4.0)) throw value_error(std::string(who) + ": beta must be in (0, 4], got " + std::to_string(beta));
}
} // namespace detail

/// tau_N = sum_k pT_k min_a dR(k, a)^beta / sum_k pT_k R0^beta with the axes a the N exclusive-kT
/// subjets of the jet (FastJet's KT_Axes with NormalizedMeasure(beta, R0)). 0 for a jet with at
/// most N constituents.
inline double nsubjettiness(const std::vector<FourVector>& constituents, std::size_t n, double beta = 1.0, double r0 = 0.8) {
    if (n == 0) throw value_error("nsubjettiness: N must be >= 1");
    detail::check_beta(beta, "nsubjettiness");
    if (!(r0 > 0.0)) throw value_error("nsubjettiness: R0 must be > 0, got " + std::to_string(r0));
    if (constituents.size() <= n) return 0.0;
    const std::vector<ClusteredJet> axes = exclusive_subjets(constituents, n, JetAlgorithm::kt);
    std::vector<double> ay, aphi;
    for (const ClusteredJet& a : axes) ay.push_back(detail::jet_rapidity(a.p)), aphi.push_back(detail::jet_phi(a.p));
    double num = 0.0, den = 0.0;
    for (const FourVector& c : constituents) {
        const double pt = c.pt(), y = detail::jet_rapidity(c), phi = detail::jet_phi(c);
        double dmin = std::numeric_limits<double>::infinity();
        for (std::size_t a = 0; a < ay.size(); ++a) dmin = std::min(dmin, detail::obs_dr(y, phi, ay[a], aphi[a]));
        num += pt * detail::pow_beta(dmin, beta);
        den += pt * detail::pow_beta(r0, beta);
    }
    return den > 0.0 ? num / den : 0.0;
}

/// Energy correlation function ECF(N, beta) for N = 0..3: 1; the sum of pT_i; the sum over
/// pairs of pT_i pT_j dR_ij^beta; the sum over triplets of pT_i pT_j pT_k (dR_ij dR_ik dR_jk)^beta.
/// ECF(3) is O(n^3): about a million triplets for 200 constituents.
inline double energy_correlation(const std::vector<FourVector>& constituents, int n, double beta = 1.0) {
    if (n < 0 || n > 3) throw value_error("energy_correlation: N must be 0, 1, 2 or 3, got " + std::to_string(n));
    detail::check_beta(beta, "energy_correlation");
    if (n == 0) return 1.0;
    const std::size_t m = constituents.size();
    std::vector<double> pt(m), y(m), phi(m);
    for (std::size_t i = 0; i < m; ++i)
        pt[i] = constituents[i].pt(), y[i] = detail::jet_rapidity(constituents[i]), phi[i] = detail::jet_phi(constituents[i]);
    if (n == 1) {
        double s = 0.0;
        for (double p : pt) s += p;
        return s;
    }
    std::vector<double> w(m * m, 0.0);  // dR_ij^beta
    for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = i + 1; j < m; ++j) w[i * m + j] = w[j * m + i] = detail::pow_beta(detail::obs_dr(y[i], phi[i], y[j], phi[j]), beta);
    double s = 0.0;
    if (n == 2) {
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = i + 1; j < m; ++j) s += pt[i] * pt[j] * w[i * m + j];
        return s;
    }
    for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = i + 1; j < m; ++j) {
            const double pij = pt[i] * pt[j] * w[i * m + j];
            double t = 0.0;
            for (std::size_t k = j + 1; k < m; ++k) t += pt[k] * w[i * m + k] * w[j * m + k];
            s += pij * t;
        }
    return s;
}

/// The features of one jet that a high-level tagger uses.
struct JetSubstructure {
    double pt = 0, eta = 0, mass = 0;
    double tau1 = 0, tau2 = 0, tau3 = 0;
    double tau21 = 0, tau32 = 0;  ///< ratios; 0 when the denominator is 0
    double c2 = 0, d2 = 0;        ///< ECF ratios, beta as given; 0 for fewer than 2 constituents
    std::size_t n_constituents = 0;
};

/// Mass, N-subjettiness (beta, R0) and C2 = ECF3 ECF1 / ECF2^2, D2 = ECF3 ECF1^3 / ECF2^3.
inline JetSubstructure jet_substructure(const std::vector<FourVector>& constituents, double beta = 1.0, double r0 = 0.8) {
    JetSubstructure s;
    const FourVector p = jet_momentum(constituents);
    s.pt = p.pt();
    s.eta = p.eta();
    s.mass = p.m();
    s.n_constituents = constituents.size();
    s.tau1 = nsubjettiness(constituents, 1, beta, r0);
    s.tau2 = nsubjettiness(constituents, 2, beta, r0);
    s.tau3 = nsubjettiness(constituents, 3, beta, r0);
    s.tau21 = s.tau1 > 0.0 ? s.tau2 / s.tau1 : 0.0;
    s.tau32 = s.tau2 > 0.0 ? s.tau3 / s.tau2 : 0.0;
    const double e1 = energy_correlation(constituents, 1, beta), e2 = energy_correlation(constituents, 2, beta);
    const double e3 = energy_correlation(constituents, 3, beta);
    if (e2 > 0.0) {
        s.c2 = e3 * e1 / (e2 * e2);
        s.d2 = e3 * e1 * e1 * e1 / (e2 * e2 * e2);
    }
    return s;
}

} // namespace tapir::hep
