#pragma once
/// The 18 Z gamma features of hep/zgamma.hpp as a differentiable function of the event's 13
/// independent numbers, on the tape: a generative model that outputs these numbers and sees its
/// events through this function produces only physically consistent events (m_ll and m_llg from
/// the same leptons, pT_ll / m_llg an exact ratio, E_llg at least m_llg, wrapped azimuths), which
/// a network producing the 18 features directly does not.
///
/// The independent numbers (zgamma_dof_names()): the two leptons' and the photon's pT, eta and
/// phi (massless objects), missing E_T and its azimuth, and the two jet counts (passed through).
/// Every formula is safe for any finite input with pT > 0:
/// - pair masses from m_ij^2 = 4 pT_i pT_j (sinh^2(deta/2) + sin^2(dphi/2)), a sum of squares
///   (no cancellation, never negative), and m_llg^2 as the sum of the three pair masses squared;
/// - azimuths from atan2(y, x) = 2 atan(y / (r + x)) on the half plane x at least 0 and its
///   mirror image elsewhere, so no denominator falls below r (the half-angle identity);
/// - eta = asinh(pz / pT) as s log((s pz + p) / pT) with s the sign of pz (log of at least 1);
/// - angles enter only through sin and cos, so an input angle needs no wrapping.

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "../autodiff/ops.hpp"
#include "../error.hpp"
#include "kinematics.hpp"
#include "zgamma.hpp"

namespace tapir::hep {

/// Column names of the independent numbers, the input order of zgamma_features().
inline const std::vector<std::string>& zgamma_dof_names() {
    static const std::vector<std::string> names = {"lep1_pt", "lep1_eta", "lep1_phi", "lep2_pt", "lep2_eta", "lep2_phi", "ph_pt",
                                                   "ph_eta",  "ph_phi",   "met",      "phi_met", "n_jets",   "n_central_jets"};
    return names;
}

inline constexpr std::size_t zgamma_num_dof = 13;

/// The independent numbers of an event, in zgamma_dof_names() order.
inline std::array<double, zgamma_num_dof> zgamma_dof(const ZGammaEvent& e) {
    return {e.lep1_pt, e.lep1_eta, e.lep1_phi, e.lep2_pt, e.lep2_eta, e.lep2_phi, e.ph_pt,
            e.ph_eta,  e.ph_phi,   e.met,      e.phi_met, e.n_jets,   e.n_central_jets};
}

namespace detail {

/// A (rows, 1) constant with one value per row.
template <class T, class F>
Var<T> zg_row_constant(Tape<T>& t, std::size_t rows, F f) {
    Tensor<T> c(Shape{rows, 1});
    for (std::size_t i = 0; i < rows; ++i) c[i] = f(i);
    return t.constant(c);
}

/// atan2(y, x) in [-pi, pi] of (rows, 1) columns, r = |(x, y)| > 0 given: 2 atan(s y / (r + s x))
/// plus 0 (x at least 0) or +-pi, with s the sign of x (1 at 0). r + s x is at least r.
template <class T>
Var<T> zg_atan2(const Var<T>& y, const Var<T>& x, const Var<T>& r) {
    Tape<T>& t = y.tape();
    const std::size_t n = y.shape()[0];
    const Var<T> s = zg_row_constant<T>(t, n, [&](std::size_t i) { return x[i] >= T(0) ? T(1) : T(-1); });
    const Var<T> off = zg_row_constant<T>(t, n, [&](std::size_t i) {
        return x[i] >= T(0) ? T(0) : (y[i] >= T(0) ? static_cast<T>(pi) : static_cast<T>(-pi));
    });
    return add(scale(atan(div(mul(s, y), add(r, mul(s, x)))), T(2)), off);
}

/// asinh(pz / pt) for pt > 0: s log((s pz + sqrt(pt^2 + pz^2)) / pt), s the sign of pz.
template <class T>
Var<T> zg_eta(const Var<T>& pz, const Var<T>& pt) {
    Tape<T>& t = pz.tape();
    const Var<T> s = zg_row_constant<T>(t, pz.shape()[0], [&](std::size_t i) { return pz[i] >= T(0) ? T(1) : T(-1); });
    const Var<T> p = sqrt(add(square(pt), square(pz)));
    return mul(s, sub(log(add(mul(s, pz), p)), log(pt)));
}

template <class T>
Var<T> zg_sinh(const Var<T>& x) {
    return scale(sub(exp(x), exp(neg(x))), T(0.5));
}
template <class T>
Var<T> zg_cosh(const Var<T>& x) {
    return scale(add(exp(x), exp(neg(x))), T(0.5));
}

/// The invariant mass squared of two massless objects: 4 pT_a pT_b (sinh^2(deta/2) + sin^2(dphi/2)).
template <class T>
Var<T> zg_pair_m2(const Var<T>& pta, const Var<T>& etaa, const Var<T>& phia, const Var<T>& ptb, const Var<T>& etab,
                  const Var<T>& phib) {
    const Var<T> sh = zg_sinh(scale(sub(etaa, etab), T(0.5)));
    const Var<T> sn = sin(scale(sub(phia, phib), T(0.5)));
    return scale(mul(mul(pta, ptb), add(square(sh), square(sn))), T(4));
}

} // namespace detail

/// The 18 features (zgamma_feature_names() order) of events given by their independent numbers,
/// (events, 13) in zgamma_dof_names() order (GeV, radians; any real angles) to (events, 18).
/// Lepton order does not matter (every feature is symmetric in the two leptons). Throws
/// shape_error for another shape and value_error unless every object pT is positive and finite
/// and missing E_T is at least 0.
template <class T>
Var<T> zgamma_features(const Var<T>& dof) {
    using namespace tapir;
    const Shape& sh = dof.shape();
    if (sh.rank() != 2 || sh[1] != zgamma_num_dof)
        throw shape_error("zgamma_features: expected (events, " + std::to_string(zgamma_num_dof) + ") independent numbers, got " +
                          sh.str());
    const std::size_t n = sh[0];
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t j : {std::size_t{0}, std::size_t{3}, std::size_t{6}}) {
            const T v = dof[i * zgamma_num_dof + j];
            if (!(v > T(0) && std::isfinite(v)))
                throw value_error("zgamma_features: " + zgamma_dof_names()[j] + " of event " + std::to_string(i) +
                                  " must be positive and finite, got " + std::to_string(v));
        }
        const T met = dof[i * zgamma_num_dof + 9];
        if (!(met >= T(0) && std::isfinite(met)))
            throw value_error("zgamma_features: met of event " + std::to_string(i) + " must be at least 0 and finite, got " +
                              std::to_string(met));
    }
    auto col = [&](std::size_t j) { return slice(dof, 1, j, 1); };
    const Var<T> pt1 = col(0), eta1 = col(1), phi1 = col(2), pt2 = col(3), eta2 = col(4), phi2 = col(5);
    const Var<T> pt3 = col(6), eta3 = col(7), phi3 = col(8), met = col(9), phim = col(10);
    const T tiny = T(1e-12);  // keeps sqrt differentiable at an exactly zero transverse momentum

    // Momentum components and energies of the three massless objects.
    const Var<T> c1 = cos(phi1), s1 = sin(phi1), c2 = cos(phi2), s2 = sin(phi2), c3 = cos(phi3), s3 = sin(phi3);
    const Var<T> px_ll = add(mul(pt1, c1), mul(pt2, c2)), py_ll = add(mul(pt1, s1), mul(pt2, s2));
    const Var<T> pz_ll = add(mul(pt1, detail::zg_sinh(eta1)), mul(pt2, detail::zg_sinh(eta2)));
    const Var<T> e_ll = add(mul(pt1, detail::zg_cosh(eta1)), mul(pt2, detail::zg_cosh(eta2)));
    const Var<T> px = add(px_ll, mul(pt3, c3)), py = add(py_ll, mul(pt3, s3));
    const Var<T> pz = add(pz_ll, mul(pt3, detail::zg_sinh(eta3)));
    const Var<T> e_llg = add(e_ll, mul(pt3, detail::zg_cosh(eta3)));

    // Masses: sums of non-negative pair terms.
    const Var<T> m2_12 = detail::zg_pair_m2(pt1, eta1, phi1, pt2, eta2, phi2);
    const Var<T> m_ll = sqrt(add_scalar(m2_12, tiny));
    const Var<T> m_llg = sqrt(add_scalar(add(add(m2_12, detail::zg_pair_m2(pt1, eta1, phi1, pt3, eta3, phi3)),
                                             detail::zg_pair_m2(pt2, eta2, phi2, pt3, eta3, phi3)),
                                         tiny));

    const Var<T> pt_ll = sqrt(add_scalar(add(square(px_ll), square(py_ll)), tiny));
    const Var<T> pt_llg = sqrt(add_scalar(add(square(px), square(py)), tiny));
    const Var<T> phi_ll = detail::zg_atan2(py_ll, px_ll, pt_ll), phi_llg = detail::zg_atan2(py, px, pt_llg);
    const Var<T> eta_ll = detail::zg_eta(pz_ll, pt_ll), eta_llg = detail::zg_eta(pz, pt_llg);

    // Azimuths and separations: wrapped by construction.
    const Var<T> cm = cos(phim), sm = sin(phim);
    const Var<T> one = sqrt(add_scalar(add(square(cm), square(sm)), tiny));
    const Var<T> phi_met = detail::zg_atan2(sm, cm, one);
    const Var<T> d12 = sub(phi1, phi2);
    const Var<T> cd = cos(d12), sd = abs(sin(d12));
    const Var<T> dphi_ll = detail::zg_atan2(sd, cd, sqrt(add_scalar(add(square(cd), square(sd)), tiny)));
    const Var<T> dr_ll = sqrt(add_scalar(add(square(sub(eta1, eta2)), square(dphi_ll)), tiny));
    // Angle between the missing E_T direction and pT(llg): atan2(|cross|, dot).
    const Var<T> dot = add(mul(cm, px), mul(sm, py)), cross = abs(sub(mul(cm, py), mul(sm, px)));
    const Var<T> dphi_met_llg = detail::zg_atan2(cross, dot, sqrt(add_scalar(add(square(dot), square(cross)), tiny)));

    return concat<T>({m_llg, pt_llg, eta_llg, phi_llg, e_llg, m_ll, pt_ll, eta_ll, phi_ll, e_ll, dr_ll, met, phi_met, dphi_ll,
                      dphi_met_llg, div(pt_ll, m_llg), col(11), col(12)},
                     1);
}

} // namespace tapir::hep
