#pragma once
/// A synthetic H -> gamma gamma sample resembling the course's ATLAS Open Data file, and the
/// course CSV writer.
///
/// Physics of the generator: myy is drawn first (signal: double-sided Crystal Ball around the
/// Higgs mass; background: falling exponential), then the diphoton pT, the system rapidity Y
/// and the decay angles in the pair rest frame (signal isotropic, spin 0; background forward
/// peaked in eta* = atanh(cos theta*), beyond the t-channel 1/(1 - cos^2) of q qbar -> gamma
/// gamma, and with part of its pair pT along the photon axis, as from fake photons). The
/// photons are boosted to the lab and the analysis cuts are applied by retrying the kinematics
/// at fixed myy, so the mass spectrum is exactly the one drawn and everything else is the
/// distribution conditional on passing the cuts. That conditioning is what makes pT and
/// |delta eta| of the background rise with myy, as in the real file
/// (m^2 = 2 pT1 pT2 (cosh deta - cos dphi) under absolute pT cuts).
///
/// The default knobs were fitted to the course's 50k-event file (quantiles of pT1, pT2,
/// |delta eta|, |delta phi|, pT(yy), |Y| and the signal mass per class; background
/// correlations with myy and per-mass-bin means). A small network trained on the 8 photon
/// columns reaches the same AUC (~0.88) on generated events as on the real ones.
///
/// Every random number comes from tapir::Rng, so a seed gives the same events on every
/// platform with the same libm (std:: distributions would not).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <locale>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../random.hpp"
#include "generator.hpp"
#include "kinematics.hpp"
#include "sampling.hpp"

namespace tapir::hep {

/// One event of the course file: leading photon first, GeV and radians; label 1 = signal.
struct DiphotonEvent {
    double pt1, eta1, phi1, e1, pt2, eta2, phi2, e2, myy;
    int label;
};

/// The generator's knobs. Defaults are tuned to the statistics of the ATLAS Open Data 13 TeV
/// diphoton file higgs_diphoton_50k.csv (checked in tests/hep/test_diphoton.cpp).
struct DiphotonConfig {
    double signal_fraction = 0.5;

    // Selection (the real file's): ordered photons, absolute pT cuts, acceptance, mass window.
    double pt1_min = 35.0, pt2_min = 25.0;
    double eta_max = 2.37;
    /// Barrel/end-cap transition: a photon with crack_lo < |eta| < crack_hi survives with
    /// probability crack_keep (the real file's stored eta shows a partial dip there, the cut
    /// having been applied on the calorimeter cluster eta). 1 disables.
    double crack_lo = 1.37, crack_hi = 1.52, crack_keep = 0.45;
    double m_min = 105.0, m_max = 160.0;

    /// Background: dN/dmyy ~ exp(bkg_slope * myy).
    double bkg_slope = -0.0204;
    /// Signal: double-sided Crystal Ball (core mean and sigma, tail start in sigmas, tail power).
    double sig_mean = 124.95, sig_sigma = 2.35;
    double sig_alpha_lo = 1.45, sig_n_lo = 8.0, sig_alpha_hi = 1.55, sig_n_hi = 12.0;

    /// pT(yy) before cuts, a generalised gamma: dN/dpT ~ pT^(a-1) exp(-(pT/p0)^b) (shape a,
    /// tail b), p0 = scale * (myy/125)^pt_mass_power. b < 1 gives the long tail of recoil
    /// against jets while keeping the far tail finite (a power law would not).
    double sig_pt_scale = 8.2, sig_pt_shape = 1.57, sig_pt_tail = 0.60;
    double bkg_pt_scale = 5.35, bkg_pt_shape = 2.36, bkg_pt_tail = 0.684;
    double pt_mass_power = 0.637;
    /// Fraction of background events whose pair pT points along a photon's transverse direction
    /// (Gaussian spread bkg_pt_align_width, radians), the rest isotropic in azimuth. It mimics
    /// the imbalance of a fake photon that carries only part of its jet: unequal pT, yet
    /// back to back; the real file shows it in the background and not in the signal.
    double bkg_pt_aligned = 0.59, bkg_pt_align_width = 0.324;
    /// System rapidity: Gaussian widths.
    double sig_y_sigma = 1.98, bkg_y_sigma = 1.10;
    /// Background decay angle, in eta* = atanh(cos theta*) (half the photons' rapidity gap):
    /// dN/deta* ~ cosh(eta*)^bkg_angle_power on |eta*| < bkg_eta_star_max. Power -2 is isotropic
    /// (the signal's), 0 is dN/dcos ~ 1/(1 - cos^2) (t-channel), > 0 more forward still.
    double bkg_angle_power = 2.24, bkg_eta_star_max = 1.56;

    /// Kinematic retries per event before giving up (cuts that accept nothing).
    std::size_t max_attempts = 100000;
};

namespace detail {

/// Double-sided Crystal Ball in t = (x - mean)/sigma: Gaussian core on [-alo, ahi], power-law
/// tails A (B -+ t)^-n joined with continuous value and slope. Region by weight, then inversion
/// (tails) or rejection from the normal (core).
inline double sample_dscb(Rng& rng, double alo, double nlo, double ahi, double nhi) {
    const double w_lo = nlo / alo / (nlo - 1.0) * std::exp(-0.5 * alo * alo);
    const double w_hi = nhi / ahi / (nhi - 1.0) * std::exp(-0.5 * ahi * ahi);
    const double w_core = std::sqrt(0.5 * pi) *
                          (std::erf(alo / std::sqrt(2.0)) + std::erf(ahi / std::sqrt(2.0)));
    const double r = rng.uniform() * (w_lo + w_core + w_hi);
    if (r < w_lo) {
        const double b = nlo / alo - alo;
        const double u = 1.0 - rng.uniform();  // (0, 1]
        return b - (b + alo) * std::pow(u, -1.0 / (nlo - 1.0));
    }
    if (r < w_lo + w_core) {
        for (;;) {
            const double t = rng.normal();
            if (t >= -alo && t <= ahi) return t;
        }
    }
    const double b = nhi / ahi - ahi;
    const double u = 1.0 - rng.uniform();
    return -b + (b + ahi) * std::pow(u, -1.0 / (nhi - 1.0));
}

/// cos theta* with dN/deta* ~ cosh(eta*)^k on |eta*| < emax: eta* uniform, accepted with
/// (cosh eta* / cosh emax)^k for k >= 0 or cosh(eta*)^k for k < 0 (both <= 1). The acceptance
/// stays above ~1/(|k| emax + 1) within the range check_config allows.
inline double sample_cos_theta(Rng& rng, double k, double emax) {
    const double norm = k >= 0.0 ? std::cosh(emax) : 1.0;
    for (;;) {
        const double e = rng.uniform(-emax, emax);
        if (rng.uniform() <= std::pow(std::cosh(e) / norm, k)) return std::tanh(e);
    }
}

inline bool in_crack(double abs_eta, const DiphotonConfig& c) noexcept {
    return abs_eta > c.crack_lo && abs_eta < c.crack_hi;
}

inline void check_config(const DiphotonConfig& c) {
    ConfigCheck::generator("DiphotonConfig", c, [&](const ConfigCheck& fail) {
        fail.resonance_over_continuum(c, "pT(yy)");
        if (!(c.pt1_min >= c.pt2_min && c.pt2_min >= 0.0))
            fail("need pt1_min >= pt2_min >= 0, got " + fail.num(c.pt1_min) + ", " + fail.num(c.pt2_min));
        if (!(c.eta_max > 0.0)) fail("eta_max must be > 0, got " + fail.num(c.eta_max));
        if (!(c.crack_keep >= 0.0 && c.crack_keep <= 1.0) || !(c.crack_lo <= c.crack_hi))
            fail("need crack_lo <= crack_hi and crack_keep in [0, 1]");
        if (!(c.sig_sigma > 0.0) || !std::isfinite(c.sig_mean)) fail("sig_sigma must be > 0 and sig_mean finite");
        if (!(c.sig_alpha_lo > 0.0 && c.sig_alpha_hi > 0.0 && c.sig_n_lo > 1.0 && c.sig_n_hi > 1.0))
            fail("Crystal Ball tails need alpha > 0 and n > 1");
        if (!std::isfinite(c.pt_mass_power)) fail("pt_mass_power must be finite");
        if (!(c.bkg_pt_aligned >= 0.0 && c.bkg_pt_aligned <= 1.0) || !(c.bkg_pt_align_width >= 0.0))
            fail("need bkg_pt_aligned in [0, 1] and bkg_pt_align_width >= 0");
    });
}

} // namespace detail

/// Streams events one at a time; generate_diphoton() is a loop over next().
class DiphotonGenerator : public detail::Generator<DiphotonGenerator, DiphotonConfig, DiphotonEvent, detail::check_config> {
public:
    /// DiphotonGenerator(seed, config = DiphotonConfig{}): the configuration is checked.
    using Generator::Generator;

    /// An event of a random class (signal with probability signal_fraction).
    using Generator::next;

    /// An event of the given class (1 signal, 0 background).
    DiphotonEvent next(int label) {
        check_label("DiphotonGenerator::next", label);
        const double m = label ? sample_signal_mass() : sampling::truncated_exponential(rng_, cfg_.bkg_slope, cfg_.m_min, cfg_.m_max);
        return first_accepted([&](DiphotonEvent& ev) { return try_kinematics(m, label, ev); }, [&] {
            return value_error("DiphotonGenerator: no event passed the cuts in " + std::to_string(cfg_.max_attempts) +
                               " attempts at myy = " + std::to_string(m) + " GeV; the cuts are too tight for the mass window");
        });
    }

private:
    double sample_signal_mass() {
        for (std::size_t attempt = 0; attempt < cfg_.max_attempts; ++attempt) {
            const double t = detail::sample_dscb(rng_, cfg_.sig_alpha_lo, cfg_.sig_n_lo, cfg_.sig_alpha_hi, cfg_.sig_n_hi);
            const double m = cfg_.sig_mean + cfg_.sig_sigma * t;
            if (m >= cfg_.m_min && m <= cfg_.m_max) return m;
        }
        throw value_error("DiphotonGenerator: the signal peak (sig_mean = " + std::to_string(cfg_.sig_mean) +
                          " GeV) puts no events in the mass window [" + std::to_string(cfg_.m_min) + ", " +
                          std::to_string(cfg_.m_max) + "] GeV");
    }

    /// One try: pair pT, rapidity and decay angles at mass m, boost, cuts. False if cut away.
    bool try_kinematics(double m, int label, DiphotonEvent& ev) {
        const bool sig = label == 1;
        const double p0 = (sig ? cfg_.sig_pt_scale : cfg_.bkg_pt_scale) * std::pow(m / 125.0, cfg_.pt_mass_power);
        const auto unit = [this] { return 1.0 - rng_.uniform(); };  // (0, 1]: this stream's convention
        const double pt = sig ? sampling::detail::generalised_gamma_with(rng_, p0, cfg_.sig_pt_shape, cfg_.sig_pt_tail, unit)
                              : sampling::detail::generalised_gamma_with(rng_, p0, cfg_.bkg_pt_shape, cfg_.bkg_pt_tail, unit);
        const double y = rng_.normal() * (sig ? cfg_.sig_y_sigma : cfg_.bkg_y_sigma);

        const double cos_t = sig ? rng_.uniform(-1.0, 1.0)
                                 : detail::sample_cos_theta(rng_, cfg_.bkg_angle_power, cfg_.bkg_eta_star_max);
        const double sin_t = std::sqrt((1.0 - cos_t) * (1.0 + cos_t));
        const double phi_s = rng_.uniform(-detail::pi, detail::pi);
        // Pair pT azimuth: isotropic, or (aligned background) along +-the photon axis.
        const double u_dir = rng_.uniform();
        const double jitter = rng_.normal() * cfg_.bkg_pt_align_width;
        double big_phi = rng_.uniform(-detail::pi, detail::pi);
        if (!sig && u_dir < cfg_.bkg_pt_aligned) big_phi = phi_s + jitter + (rng_.bernoulli(0.5) ? detail::pi : 0.0);

        // Rest frame: back to back along (theta*, phi*), each with E = m/2.
        const double h = 0.5 * m;
        const FourVector a(h * sin_t * std::cos(phi_s), h * sin_t * std::sin(phi_s), h * cos_t, h);
        const FourVector b(-a.px, -a.py, -a.pz, h);
        // Transverse boost to pT, then longitudinal by rapidity y: the pair ends at
        // (pT cos Phi, pT sin Phi, mT sinh y, mT cosh y) and z stays the beam axis.
        const double mt = std::hypot(m, pt);
        const double bt = pt / mt;
        const double bx = bt * std::cos(big_phi), by = bt * std::sin(big_phi);
        FourVector g1 = boost_z_rapidity(boost(a, bx, by, 0.0), y);
        FourVector g2 = boost_z_rapidity(boost(b, bx, by, 0.0), y);
        if (g1.pt() < g2.pt()) std::swap(g1, g2);

        const double pt1 = g1.pt(), pt2 = g2.pt();
        if (!(pt1 > cfg_.pt1_min && pt2 > cfg_.pt2_min)) return false;
        const double eta1 = g1.eta(), eta2 = g2.eta();
        if (!(std::fabs(eta1) < cfg_.eta_max && std::fabs(eta2) < cfg_.eta_max)) return false;
        const double k1 = rng_.uniform(), k2 = rng_.uniform();
        if (detail::in_crack(std::fabs(eta1), cfg_) && !(k1 < cfg_.crack_keep)) return false;
        if (detail::in_crack(std::fabs(eta2), cfg_) && !(k2 < cfg_.crack_keep)) return false;

        const double phi1 = g1.phi(), phi2 = g2.phi();
        // Stored values are the massless photons at (pT, eta, phi); myy is recomputed from them
        // so the file is self-consistent to rounding.
        const double myy = massless_pair_mass(pt1, eta1, phi1, pt2, eta2, phi2);
        if (!(myy >= cfg_.m_min && myy <= cfg_.m_max)) return false;
        ev = DiphotonEvent{pt1, eta1, phi1, pt1 * std::cosh(eta1), pt2, eta2, phi2, pt2 * std::cosh(eta2), myy, label};
        return true;
    }

};

/// n events with the given configuration; the same (n, seed, config) gives the same events, and
/// a shorter run is a prefix of a longer one.
inline std::vector<DiphotonEvent> generate_diphoton(std::size_t n, std::uint64_t seed, const DiphotonConfig& config) {
    return detail::generate_n<DiphotonGenerator>(n, seed, config);
}

/// n events with the default (real-file-like) configuration and the given signal fraction.
inline std::vector<DiphotonEvent> generate_diphoton(std::size_t n, std::uint64_t seed, double signal_fraction = 0.5) {
    DiphotonConfig c;
    c.signal_fraction = signal_fraction;
    return generate_diphoton(n, seed, c);
}

namespace detail {
inline void check_events_writable(const std::vector<DiphotonEvent>& events) {
    for (std::size_t i = 0; i < events.size(); ++i) {
        const DiphotonEvent& e = events[i];
        const double v[9] = {e.pt1, e.eta1, e.phi1, e.e1, e.pt2, e.eta2, e.phi2, e.e2, e.myy};
        for (double x : v)
            if (!std::isfinite(x)) throw value_error("write_diphoton_csv: event " + std::to_string(i) + " has a non-finite value");
        if (e.label != 0 && e.label != 1)
            throw value_error("write_diphoton_csv: event " + std::to_string(i) + " has label " + std::to_string(e.label) +
                              " (must be 0 or 1)");
    }
}
} // namespace detail

/// The course CSV: header `,pt_y1,eta_y1,phi_y1,e_y1,pt_y2,eta_y2,phi_y2,e_y2,myy,label`, an
/// unnamed row index first, 17 significant digits (doubles round-trip), C locale whatever the
/// stream's; the stream's formatting state is restored afterwards. Throws value_error for an
/// event with a non-finite value or a label other than 0/1 (the file would not read back).
inline void write_diphoton_csv(std::ostream& os, const std::vector<DiphotonEvent>& events) {
    detail::check_events_writable(events);
    const std::locale old_locale = os.imbue(std::locale::classic());
    const auto old_flags = os.flags();
    const auto old_precision = os.precision(17);
    os.unsetf(std::ios::floatfield);
    os << ",pt_y1,eta_y1,phi_y1,e_y1,pt_y2,eta_y2,phi_y2,e_y2,myy,label\n";
    for (std::size_t i = 0; i < events.size(); ++i) {
        const DiphotonEvent& e = events[i];
        os << i << ',' << e.pt1 << ',' << e.eta1 << ',' << e.phi1 << ',' << e.e1 << ',' << e.pt2 << ',' << e.eta2 << ','
           << e.phi2 << ',' << e.e2 << ',' << e.myy << ',' << e.label << '\n';
    }
    os.precision(old_precision);
    os.flags(old_flags);
    os.imbue(old_locale);
}

inline void write_diphoton_csv(const std::string& path, const std::vector<DiphotonEvent>& events) {
    detail::check_events_writable(events);  // before the file is created or truncated
    std::ofstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("write_diphoton_csv: cannot open '" + path + "' for writing");
    write_diphoton_csv(f, events);
    f.flush();
    if (!f) throw std::runtime_error("write_diphoton_csv: writing '" + path + "' failed (disk full?)");
}

} // namespace tapir::hep
