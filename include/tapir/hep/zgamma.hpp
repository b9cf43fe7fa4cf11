#pragma once
/// A synthetic Z gamma -> l+ l- gamma sample with 18 event features after the ATLAS
/// search ATLAS-CONF-2019-034: m_llg in a 130-170 GeV window, the dilepton (Z) and
/// l l gamma systems' four-momenta, Delta R and Delta phi of the leptons, missing E_T and its
/// azimuth, Delta phi(missing E_T, Z gamma), pT_ll / m_llg, and the jet counts. Optionally a
/// narrow scalar resonance X -> Z gamma on top (label 1), for resonance searches.
///
/// Physics of the generator (every number from tapir::Rng):
/// - m_llg is drawn first: the Standard-Model Z gamma continuum falls exponentially in the
///   window; the resonance is a Gaussian of the detector resolution. m_ll follows the Z line
///   shape (Breit-Wigner) convolved with the dilepton mass resolution.
/// - pT(llg) from a generalised-gamma spectrum (harder for the resonance, produced in gluon
///   fusion), rapidity from a Gaussian (wider for the q qbar -> Z gamma continuum).
/// - X -> Z gamma in the rest frame: isotropic for the scalar, forward-peaked (t-channel-like)
///   for the continuum; Z -> l l with 1 + cos^2. The system is boosted to the lab and the
///   lepton and photon cuts are applied by retrying the kinematics at fixed masses, so the
///   drawn mass spectra are exact and the rest is conditional on passing the cuts.
/// - Jets recoil against the l l gamma system: N_jets ~ Poisson(a + pT(llg)/b), a fraction of
///   them central. Missing E_T is the mismeasured recoil (jet response below one, so it points
///   along the recoil, opposite to the Z gamma system) plus a soft-term resolution that grows
///   with the jet count. That is what correlates met, dphi_met_llg, n_jets and pt_llg.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../random.hpp"
#include "generator.hpp"
#include "kinematics.hpp"
#include "sampling.hpp"

namespace tapir::hep {

/// One l l gamma event: the three objects and the 18 features (GeV, radians); label 1 = resonance.
struct ZGammaEvent {
    // Objects (leptons ordered by pT), massless.
    double lep1_pt, lep1_eta, lep1_phi, lep2_pt, lep2_eta, lep2_phi, ph_pt, ph_eta, ph_phi;
    // The 18 features, in zgamma_feature_names() order.
    double m_llg, pt_llg, eta_llg, phi_llg, e_llg;
    double m_ll, pt_ll, eta_ll, phi_ll, e_ll;
    double dr_ll, met, phi_met, dphi_ll, dphi_met_llg, pt_ll_over_m_llg;
    double n_jets, n_central_jets;
    int label;

    static constexpr std::size_t num_features = 18;
    std::array<double, num_features> features() const {
        return {m_llg, pt_llg, eta_llg, phi_llg, e_llg, m_ll, pt_ll, eta_ll, phi_ll,
                e_ll,  dr_ll,  met,     phi_met, dphi_ll, dphi_met_llg, pt_ll_over_m_llg, n_jets, n_central_jets};
    }
};

/// Column names of ZGammaEvent::features(), as used in the examples' CSV files.
inline const std::vector<std::string>& zgamma_feature_names() {
    static const std::vector<std::string> names = {
        "m_llg", "pt_llg", "eta_llg", "phi_llg", "e_llg", "m_ll",         "pt_ll",            "eta_ll", "phi_ll",
        "e_ll",  "dr_ll",  "met",     "phi_met", "dphi_ll", "dphi_met_llg", "pt_ll_over_m_llg", "n_jets", "n_central_jets"};
    return names;
}

struct ZGammaConfig {
    /// Probability of a resonance event (0: the Standard-Model continuum only).
    double signal_fraction = 0.0;

    double m_min = 130.0, m_max = 170.0;  ///< m_llg window
    double bkg_slope = -0.045;            ///< continuum: dN/dm_llg ~ exp(bkg_slope m_llg)
    double sig_mass = 150.0, sig_width = 1.8;  ///< resonance: mean and Gaussian width (resolution)

    /// Z line shape: Breit-Wigner (mass, width) convolved with a Gaussian resolution, in [ll_min, ll_max].
    double z_mass = 91.1876, z_width = 2.4952, mll_resolution = 1.6;
    double mll_min = 76.0, mll_max = 106.0;

    /// pT(llg) spectra, dN/dpT ~ pT^(shape-1) exp(-(pT/scale)^tail): mean ~22 GeV for the
    /// continuum, ~47 GeV for the resonance (like a gluon-fusion Higgs boson).
    double bkg_pt_scale = 6.0, bkg_pt_shape = 1.6, bkg_pt_tail = 0.7;
    double sig_pt_scale = 16.0, sig_pt_shape = 1.8, sig_pt_tail = 0.8;
    /// Rapidity of the l l gamma system (Gaussian widths).
    double bkg_y_sigma = 1.3, sig_y_sigma = 1.0;
    /// Continuum decay angle: dN/deta* ~ cosh(eta*)^bkg_angle_power, |eta*| < bkg_eta_star_max.
    double bkg_angle_power = 0.0, bkg_eta_star_max = 2.0;

    /// Selection: pT-ordered leptons, photon, acceptance, lepton-photon separation.
    double lep1_pt_min = 25.0, lep2_pt_min = 20.0, lep_eta_max = 2.5;
    double ph_pt_min = 15.0, ph_eta_max = 2.37, dr_lep_ph_min = 0.4;

    /// Jets: N ~ Poisson(jet_base + pT(llg)/jet_pt_per_jet); each central with probability central_prob.
    double bkg_jet_base = 0.35, sig_jet_base = 0.8, jet_pt_per_jet = 30.0, central_prob = 0.65;
    /// Missing E_T: recoil response (mean, spread; soft response without jets) and soft-term
    /// resolution per component (constant plus per jet), GeV.
    double jet_response = 0.85, jet_response_spread = 0.15, soft_response = 0.6;
    double met_sigma = 6.0, met_sigma_per_jet = 3.0;

    std::size_t max_attempts = 100000;
};

namespace detail {
inline void check_zgamma_config(const ZGammaConfig& c) {
    ConfigCheck::generator("ZGammaConfig", c, [&](const ConfigCheck& fail) {
        fail.resonance_over_continuum(c, "pT(llg)");
        if (!(c.mll_min > 0.0 && c.mll_max > c.mll_min)) fail("need 0 < mll_min < mll_max");
        if (!(c.mll_max < c.m_min)) fail("mll_max (" + fail.num(c.mll_max) + ") must be below m_min (" + fail.num(c.m_min) + "): m_llg >= m_ll");
        if (!(c.z_width > 0.0 && c.mll_resolution >= 0.0 && c.sig_width > 0.0)) fail("widths must be > 0");
        if (!(c.sig_mass > c.m_min && c.sig_mass < c.m_max)) fail("sig_mass must lie inside the m_llg window, got " + fail.num(c.sig_mass));
        if (!(c.lep1_pt_min >= c.lep2_pt_min && c.lep2_pt_min >= 0.0 && c.ph_pt_min >= 0.0 && c.lep_eta_max > 0.0 && c.ph_eta_max > 0.0))
            fail("need lep1_pt_min >= lep2_pt_min >= 0, ph_pt_min >= 0 and positive eta limits");
        if (!(c.bkg_jet_base >= 0.0 && c.sig_jet_base >= 0.0 && c.jet_pt_per_jet > 0.0 && c.central_prob >= 0.0 && c.central_prob <= 1.0))
            fail("need jet bases >= 0, jet_pt_per_jet > 0 and central_prob in [0, 1]");
        if (!(c.jet_response_spread >= 0.0 && c.met_sigma >= 0.0 && c.met_sigma_per_jet >= 0.0)) fail("MET resolutions must be >= 0");
    });
}
} // namespace detail

/// Streams Z gamma events; generate_zgamma() is a loop over next().
class ZGammaGenerator : public detail::Generator<ZGammaGenerator, ZGammaConfig, ZGammaEvent, detail::check_zgamma_config> {
public:
    /// ZGammaGenerator(seed, config = ZGammaConfig{}): the configuration is checked.
    using Generator::Generator;

    /// An event of a random class (resonance with probability signal_fraction).
    using Generator::next;

    /// An event of the given class (1 resonance, 0 continuum).
    ZGammaEvent next(int label) {
        check_label("ZGammaGenerator::next", label);
        const double m = label ? sampling::truncated_normal(rng_, cfg_.sig_mass, cfg_.sig_width, cfg_.m_min, cfg_.m_max)
                               : sampling::truncated_exponential(rng_, cfg_.bkg_slope, cfg_.m_min, cfg_.m_max);
        const double mll = sample_mll();
        return first_accepted([&](ZGammaEvent& ev) { return try_kinematics(m, mll, label, ev); }, [&] {
            return value_error("ZGammaGenerator: no event passed the cuts in " + std::to_string(cfg_.max_attempts) +
                               " attempts at m_llg = " + std::to_string(m) + " GeV; the cuts are too tight");
        });
    }

private:
    double sample_mll() {
        for (std::size_t i = 0; i < cfg_.max_attempts; ++i) {
            const double bw = sampling::breit_wigner(rng_, cfg_.z_mass, cfg_.z_width, cfg_.mll_min - 20.0, cfg_.mll_max + 20.0);
            const double m = bw + cfg_.mll_resolution * rng_.normal();
            if (m >= cfg_.mll_min && m <= cfg_.mll_max) return m;
        }
        throw value_error("ZGammaGenerator: the Z line shape puts nothing in [mll_min, mll_max]");
    }

    bool try_kinematics(double m, double mll, int label, ZGammaEvent& ev) {
        using sampling::pi;
        const bool sig = label == 1;
        const double pt = sig ? sampling::generalised_gamma(rng_, cfg_.sig_pt_scale, cfg_.sig_pt_shape, cfg_.sig_pt_tail)
                              : sampling::generalised_gamma(rng_, cfg_.bkg_pt_scale, cfg_.bkg_pt_shape, cfg_.bkg_pt_tail);
        const double y = rng_.normal() * (sig ? cfg_.sig_y_sigma : cfg_.bkg_y_sigma);
        const FourVector x = sampling::system_from_m_pt_y(m, pt, rng_.uniform(-pi, pi), y);

        // X -> Z gamma, then Z -> l l (1 + cos^2 in the Z frame).
        const double cos_x = sig ? rng_.uniform(-1.0, 1.0) : sampling::cos_theta_forward(rng_, cfg_.bkg_angle_power, cfg_.bkg_eta_star_max);
        const sampling::TwoBody zg = sampling::decay_two_body(x, mll, 0.0, cos_x, rng_.uniform(-pi, pi));
        const sampling::TwoBody ll = sampling::decay_two_body(zg.d1, 0.0, 0.0, sampling::cos_theta_1pc2(rng_, 1.0), rng_.uniform(-pi, pi));
        FourVector l1 = ll.d1, l2 = ll.d2;
        const FourVector& ph = zg.d2;
        if (l1.pt() < l2.pt()) std::swap(l1, l2);

        // Jets and missing E_T (they do not enter the cuts).
        const int nj = sampling::poisson(rng_, (sig ? cfg_.sig_jet_base : cfg_.bkg_jet_base) + pt / cfg_.jet_pt_per_jet);
        const int ncj = sampling::binomial(rng_, nj, cfg_.central_prob);
        const double response = nj > 0 ? cfg_.jet_response + cfg_.jet_response_spread * rng_.normal() : cfg_.soft_response;
        const double sigma = cfg_.met_sigma + cfg_.met_sigma_per_jet * nj;
        // Visible recoil = -response * pT(llg): the imbalance (response - 1) pT(llg) is missing.
        const double mex = (response - 1.0) * x.px + sigma * rng_.normal();
        const double mey = (response - 1.0) * x.py + sigma * rng_.normal();

        const double l1pt = l1.pt(), l2pt = l2.pt(), phpt = ph.pt();
        if (!(l1pt > cfg_.lep1_pt_min && l2pt > cfg_.lep2_pt_min && phpt > cfg_.ph_pt_min)) return false;
        const double l1eta = l1.eta(), l2eta = l2.eta(), pheta = ph.eta();
        if (!(std::fabs(l1eta) < cfg_.lep_eta_max && std::fabs(l2eta) < cfg_.lep_eta_max && std::fabs(pheta) < cfg_.ph_eta_max))
            return false;
        if (!(delta_r(l1, ph) > cfg_.dr_lep_ph_min && delta_r(l2, ph) > cfg_.dr_lep_ph_min)) return false;

        const FourVector z = l1 + l2, llg = z + ph;
        ev.lep1_pt = l1pt, ev.lep1_eta = l1eta, ev.lep1_phi = l1.phi();
        ev.lep2_pt = l2pt, ev.lep2_eta = l2eta, ev.lep2_phi = l2.phi();
        ev.ph_pt = phpt, ev.ph_eta = pheta, ev.ph_phi = ph.phi();
        ev.m_llg = llg.m(), ev.pt_llg = llg.pt(), ev.eta_llg = llg.eta(), ev.phi_llg = llg.phi(), ev.e_llg = llg.e;
        ev.m_ll = z.m(), ev.pt_ll = z.pt(), ev.eta_ll = z.eta(), ev.phi_ll = z.phi(), ev.e_ll = z.e;
        ev.dr_ll = delta_r(l1, l2);
        ev.met = std::hypot(mex, mey);
        ev.phi_met = std::atan2(mey, mex);
        ev.dphi_ll = std::fabs(delta_phi(ev.lep1_phi, ev.lep2_phi));
        ev.dphi_met_llg = std::fabs(delta_phi(ev.phi_met, ev.phi_llg));
        ev.pt_ll_over_m_llg = ev.pt_ll / ev.m_llg;
        ev.n_jets = nj;
        ev.n_central_jets = ncj;
        ev.label = label;
        return true;
    }

};

/// n events; the same (n, seed, config) gives the same events, and a shorter run is a prefix.
inline std::vector<ZGammaEvent> generate_zgamma(std::size_t n, std::uint64_t seed, const ZGammaConfig& config = ZGammaConfig{}) {
    return detail::generate_n<ZGammaGenerator>(n, seed, config);
}

} // namespace tapir::hep
