#pragma once
/// A synthetic one-lepton search sample: top-squark pairs (T2tt: stop -> t neutralino, label 1)
/// against top-quark pairs (label 0), after the preselection of Elwood and Kruecker
/// (arXiv:1806.00322: one lepton with pT > 40 GeV, at least four jets with pT > 30 GeV, at least one
/// b-tagged jet), with the expected yields of a luminosity.
///
/// Physics of the generator (every number from tapir::Rng):
/// - Production: the pair mass is threshold plus a Gamma-distributed excess, the pair pT a
///   generalised-gamma spectrum (initial-state radiation), the pair rapidity a Gaussian; the
///   pair decays isotropically in its rest frame.
/// - Decays: stop -> t chi (two-body, isotropic), t -> b W, W -> l nu or q qbar', with
///   Breit-Wigner top and W masses. One W decays to an electron or muon; with probability
///   `dilepton_fraction` the other one decays leptonically too. A second electron or muon
///   (or the lepton of a leptonic tau decay) inside the acceptance vetoes the event; outside
///   it (soft or forward) it is lost and its momentum is missing; a hadronic tau is a jet
///   carrying part of its momentum, vetoed with an efficiency. These lost-lepton top pairs
///   populate the transverse-mass tail beyond the W mass, as in the real searches.
/// - Detector: jets are the b and W-daughter quarks plus initial-state-radiation jets that
///   share the recoil of the pair, with a calorimeter resolution; b-tagging with an efficiency
///   and mistag rates; missing E_T is the invisible momentum (neutrinos, neutralinos, the lost
///   lepton) plus the jet mismeasurement and a soft-term resolution.
/// - Selection by rejection, counting attempts: efficiency() is the preselection efficiency of
///   each class, and expected_yield() = luminosity x cross-section x branching x efficiency.
///
/// The signal default, m_stop = 600 GeV and m_LSP = 250 GeV, is moderately compressed: the
/// signal looks like top pairs with more missing E_T. The paper's compressed point (600, 400) is
/// out of reach of this background at 30 fb^-1 (its lost-lepton tail is that of the real
/// searches, heavier than the paper's sample shows); its uncompressed point is (900, 100) with
/// stop_cross_section_pb = 0.033. Cross-sections are approximate 14 TeV values.

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

/// One preselected event: the 21 features (GeV, radians) and the class (1 stop pair, 0 top pair).
struct StopEvent {
    double lep_pt, lep_eta;
    double jet1_pt, jet1_eta, jet2_pt, jet2_eta, jet3_pt, jet3_eta, jet4_pt, jet4_eta;
    double n_jets, n_bjets;
    double met, mt, ht, met_over_sqrt_ht;
    double dphi_min_j12_met;  ///< smallest |delta phi| between one of the two leading jets and the missing E_T
    double m_lb;              ///< mass of the lepton and the b-tagged jet closest to it
    double m_jjj;             ///< mass of the three jets with the largest summed pT (hadronic top candidate)
    double dr_lb;             ///< delta R of that lepton-b pair
    /// Hadronic-top chi^2: min over a jet pair (W) and a third jet (b) of
    /// ((m_jj - m_W)/10 GeV)^2 + ((m_jjj - m_t)/15 GeV)^2. Small when a t -> b q q' decay is
    /// reconstructed (single-lepton top pairs, the signal), large for lost-lepton top pairs.
    double had_top_chi2;
    int label;

    static constexpr std::size_t num_features = 21;
    std::array<double, num_features> features() const {
        return {lep_pt, lep_eta, jet1_pt, jet1_eta, jet2_pt, jet2_eta, jet3_pt, jet3_eta, jet4_pt, jet4_eta, n_jets,
                n_bjets, met,    mt,      ht,       met_over_sqrt_ht, dphi_min_j12_met, m_lb, m_jjj, dr_lb, had_top_chi2};
    }
};

/// Column names of StopEvent::features(), as used in the examples' CSV files.
inline const std::vector<std::string>& stop_feature_names() {
    static const std::vector<std::string> names = {
        "lep_pt", "lep_eta", "jet1_pt", "jet1_eta", "jet2_pt", "jet2_eta", "jet3_pt", "jet3_eta", "jet4_pt", "jet4_eta",
        "n_jets", "n_bjets", "met",     "mt",       "ht",      "met_over_sqrt_ht", "dphi_min_j12_met", "m_lb", "m_jjj", "dr_lb",
        "had_top_chi2"};
    return names;
}

struct StopConfig {
    double signal_fraction = 0.5;

    double stop_mass = 600.0, lsp_mass = 250.0;
    double top_mass = 172.5, top_width = 1.42, w_mass = 80.38, w_width = 2.085;

    /// Pair mass = threshold + excess, excess ~ Gamma(shape) x scale (scale for stops: a
    /// fraction of the stop mass).
    double tt_excess_shape = 1.5, tt_excess_scale = 90.0;
    double stop_excess_shape = 1.5, stop_excess_scale_fraction = 0.25;
    /// Pair pT, dN/dpT ~ pT^(shape-1) exp(-(pT/scale)^tail); heavier pairs radiate more.
    double tt_pt_scale = 30.0, stop_pt_scale = 45.0, pt_shape = 1.4, pt_tail = 0.8;
    double tt_y_sigma = 1.0, stop_y_sigma = 0.8;

    /// Probability that the second W decays leptonically (e, mu or tau: BR(W -> l nu) = 0.326);
    /// the second lepton is an electron or muon with probability 2/3, a tau otherwise. An
    /// electron or muon with pT > veto_pt_min and |eta| < lep_eta_max vetoes the event.
    double dilepton_fraction = 0.326, veto_pt_min = 10.0, tau_hadronic = 0.65;
    /// Hadronic-tau veto: a visible tau with pT > tau_veto_pt_min in the acceptance vetoes the
    /// event with probability tau_veto_eff (isolated-track and tau vetoes of the real searches).
    double tau_veto_pt_min = 10.0, tau_veto_eff = 0.7;

    /// Initial-state-radiation jets: N ~ Poisson(isr_base + pT(pair)/isr_pt_per_jet).
    double isr_base = 0.6, isr_pt_per_jet = 50.0, isr_eta_sigma = 1.8;
    /// Jet energy resolution sigma/pT = stochastic/sqrt(pT/GeV) (+) constant; lepton resolution.
    double jet_stochastic = 0.8, jet_constant = 0.05, lep_resolution = 0.02;
    /// Missing E_T soft-term resolution per component, GeV.
    double met_soft_sigma = 12.0;
    /// b-tagging: efficiency for b jets, mistag for W-daughter jets (charm included) and ISR jets.
    double btag_eff = 0.70, mistag_w = 0.03, mistag_isr = 0.01;

    /// Preselection (arXiv:1806.00322's).
    double lep_pt_min = 40.0, lep_eta_max = 2.5, jet_pt_min = 30.0, jet_eta_max = 2.5;
    int min_jets = 4, min_bjets = 1;

    /// Cross-sections (pb, approximate 14 TeV) and the branching fraction to at least one
    /// electron or muon, 1 - (1 - 0.214)^2, applied to both classes.
    double tt_cross_section_pb = 985.0, stop_cross_section_pb = 0.25, branching = 0.38;

    std::size_t max_attempts = 10000000;
};

namespace detail {
inline void check_stop_config(const StopConfig& c) {
    ConfigCheck::generator("StopConfig", c, [&](const ConfigCheck& fail) {
        if (!(c.top_mass > c.w_mass && c.w_mass > 0.0 && c.top_width > 0.0 && c.w_width > 0.0)) fail("need top_mass > w_mass > 0 and widths > 0");
        if (!(c.lsp_mass >= 0.0 && c.stop_mass > c.top_mass + c.lsp_mass + 3.0 * c.top_width))
            fail("stop -> t chi needs stop_mass > top_mass + lsp_mass (on-shell top), got m_stop = " + fail.num(c.stop_mass) +
                 ", m_LSP = " + fail.num(c.lsp_mass));
        for (double v : {c.tt_excess_shape, c.tt_excess_scale, c.stop_excess_shape, c.stop_excess_scale_fraction, c.tt_pt_scale,
                         c.stop_pt_scale, c.pt_shape, c.pt_tail, c.isr_pt_per_jet, c.tt_cross_section_pb, c.stop_cross_section_pb})
            if (!(v > 0.0 && std::isfinite(v))) fail("production shapes, scales and cross-sections must be finite and > 0");
        if (!(c.dilepton_fraction >= 0.0 && c.dilepton_fraction <= 1.0 && c.tau_hadronic >= 0.0 && c.tau_hadronic <= 1.0))
            fail("dilepton_fraction and tau_hadronic must be in [0, 1]");
        if (!(c.branching > 0.0 && c.branching <= 1.0)) fail("branching must be in (0, 1]");
        for (double p : {c.btag_eff, c.mistag_w, c.mistag_isr})
            if (!(p >= 0.0 && p <= 1.0)) fail("b-tagging probabilities must be in [0, 1]");
        if (!(c.isr_base >= 0.0 && c.tt_y_sigma >= 0.0 && c.stop_y_sigma >= 0.0 && c.isr_eta_sigma >= 0.0)) fail("widths and isr_base must be >= 0");
        if (!(c.jet_stochastic >= 0.0 && c.jet_constant >= 0.0 && c.lep_resolution >= 0.0 && c.met_soft_sigma >= 0.0))
            fail("resolutions must be >= 0");
        if (!(c.min_jets >= 3 && c.min_bjets >= 0)) fail("the features need min_jets >= 3 (jets 1-3) and min_bjets >= 0");
    });
}

struct StopJet {
    FourVector p;
    bool btag;
};
} // namespace detail

/// Streams preselected events and counts the attempts of each class.
class StopGenerator : public detail::Generator<StopGenerator, StopConfig, StopEvent, detail::check_stop_config> {
public:
    /// StopGenerator(seed, config = StopConfig{}): the configuration is checked.
    using Generator::Generator;

    using Generator::next;

    /// A preselected event of the given class (1 stop pair, 0 top pair).
    StopEvent next(int label) {
        check_label("StopGenerator::next", label);
        const auto attempt = [&](StopEvent& ev) {
            ++attempts_[label];
            if (!try_event(label, ev)) return false;
            ++accepted_[label];
            return true;
        };
        return first_accepted(attempt, [&] {
            return value_error("StopGenerator: no event passed the preselection in " + std::to_string(cfg_.max_attempts) + " attempts");
        });
    }

    /// Preselection efficiency of a class so far (accepted / attempted); 0 before any attempt.
    double efficiency(int label) const {
        check_label("StopGenerator", label);
        return attempts_[label] ? static_cast<double>(accepted_[label]) / static_cast<double>(attempts_[label]) : 0.0;
    }
    std::size_t attempts(int label) const {
        check_label("StopGenerator", label);
        return attempts_[label];
    }
    /// Expected preselected events of a class at an integrated luminosity (fb^-1):
    /// L x sigma x branching x efficiency, with the efficiency measured so far.
    double expected_yield(int label, double luminosity_fb) const {
        const double xs = label ? cfg_.stop_cross_section_pb : cfg_.tt_cross_section_pb;
        return luminosity_fb * 1000.0 * xs * cfg_.branching * efficiency(label);
    }

private:
    double top_mass() { return sampling::breit_wigner(rng_, cfg_.top_mass, cfg_.top_width, cfg_.top_mass - 15.0, cfg_.top_mass + 15.0); }
    double w_mass() { return sampling::breit_wigner(rng_, cfg_.w_mass, cfg_.w_width, cfg_.w_mass - 20.0, cfg_.w_mass + 20.0); }

    /// Smeared jet at the parton's direction; below threshold partons still enter the MET balance.
    FourVector smear_jet(const FourVector& p) {
        const double pt = p.pt();
        const double rel = std::hypot(cfg_.jet_stochastic / std::sqrt(std::max(pt, 1.0)), cfg_.jet_constant);
        const double f = std::max(0.1, 1.0 + rel * rng_.normal());
        return FourVector(f * p.px, f * p.py, f * p.pz, f * p.e);
    }

    /// t -> b W -> b (l nu | q q'): appends the quarks to `partons` with their flavour (5 for b,
    /// 1 for a W daughter) and sets `lep` for a leptonic W (the neutrino is simply not seen).
    void decay_top(const FourVector& top, bool leptonic, std::vector<std::pair<FourVector, int>>& partons, FourVector& lep) {
        const double mw = std::min(w_mass(), top.m() - 5.0);
        const sampling::TwoBody bw = sampling::decay_isotropic(rng_, top, 4.8, mw);
        partons.emplace_back(bw.d1, 5);
        const sampling::TwoBody ff = sampling::decay_isotropic(rng_, bw.d2, 0.0, 0.0);
        if (leptonic) {
            lep = ff.d1;
        } else {
            partons.emplace_back(ff.d1, 1);
            partons.emplace_back(ff.d2, 1);
        }
    }

    bool try_event(int label, StopEvent& ev) {
        using sampling::pi;
        const bool sig = label == 1;
        // Production.
        const double m1 = sig ? cfg_.stop_mass : top_mass(), m2 = sig ? cfg_.stop_mass : top_mass();
        const double excess = sig ? sampling::gamma(rng_, cfg_.stop_excess_shape) * cfg_.stop_excess_scale_fraction * cfg_.stop_mass
                                  : sampling::gamma(rng_, cfg_.tt_excess_shape) * cfg_.tt_excess_scale;
        const double mpair = m1 + m2 + excess;
        const double ptpair = sampling::generalised_gamma(rng_, sig ? cfg_.stop_pt_scale : cfg_.tt_pt_scale, cfg_.pt_shape, cfg_.pt_tail);
        const double ypair = rng_.normal() * (sig ? cfg_.stop_y_sigma : cfg_.tt_y_sigma);
        const FourVector pair = sampling::system_from_m_pt_y(mpair, ptpair, rng_.uniform(-pi, pi), ypair);
        const sampling::TwoBody pp = sampling::decay_isotropic(rng_, pair, m1, m2);

        // Decays; neutrinos, neutralinos and the lost lepton are invisible (not in any list).
        FourVector t1 = pp.d1, t2 = pp.d2;
        if (sig) {  // stop -> t chi
            t1 = sampling::decay_isotropic(rng_, pp.d1, top_mass(), cfg_.lsp_mass).d1;
            t2 = sampling::decay_isotropic(rng_, pp.d2, top_mass(), cfg_.lsp_mass).d1;
        }
        std::vector<std::pair<FourVector, int>> partons;
        FourVector lep, lost;
        const bool dilepton = rng_.bernoulli(cfg_.dilepton_fraction);
        decay_top(t1, true, partons, lep);
        decay_top(t2, dilepton, partons, lost);
        if (dilepton) {
            // The second lepton: e or mu (2/3), else a tau whose visible decay product (a lepton
            // or a jet) carries a uniform fraction of its momentum. A visible lepton in the
            // acceptance vetoes the event; a visible hadronic tau does so with tau_veto_eff.
            const bool tau = rng_.uniform() >= 2.0 / 3.0;
            const bool hadronic = tau && rng_.bernoulli(cfg_.tau_hadronic);
            const double x = tau ? rng_.uniform(0.2, 1.0) : 1.0;
            const FourVector vis(x * lost.px, x * lost.py, x * lost.pz, x * lost.e);
            const bool in_acceptance = std::fabs(vis.eta()) < cfg_.lep_eta_max;
            if (!hadronic && in_acceptance && vis.pt() > cfg_.veto_pt_min) return false;
            if (hadronic) {
                if (in_acceptance && vis.pt() > cfg_.tau_veto_pt_min && rng_.bernoulli(cfg_.tau_veto_eff)) return false;
                partons.emplace_back(vis, 1);
            }
        }

        // ISR jets balance the pair's pT: Dirichlet(1,..,1) shares along the recoil with some
        // azimuthal spread, the last jet taking what is left so that the sum is exact.
        const int nisr = sampling::poisson(rng_, cfg_.isr_base + ptpair / cfg_.isr_pt_per_jet);
        FourVector soft(-pair.px, -pair.py, 0.0, 0.0);  // the recoil still to be assigned
        if (nisr > 0) {
            std::vector<double> share(static_cast<std::size_t>(nisr));
            double tot = 0.0;
            for (double& s : share) tot += (s = rng_.exponential(1.0));
            const double recoil_phi = std::atan2(-pair.py, -pair.px);
            for (int k = 0; k + 1 < nisr; ++k) {
                const FourVector j = FourVector::massless(share[static_cast<std::size_t>(k)] / tot * ptpair, cfg_.isr_eta_sigma * rng_.normal(),
                                                          recoil_phi + 0.3 * rng_.normal());
                partons.emplace_back(j, 0);
                soft.px -= j.px, soft.py -= j.py;
            }
            partons.emplace_back(FourVector::massless(std::hypot(soft.px, soft.py), cfg_.isr_eta_sigma * rng_.normal(),
                                                      std::atan2(soft.py, soft.px)),
                                 0);
            soft = FourVector();
        }

        // Detector: lepton, jets, b-tags, missing E_T.
        const double lf = 1.0 + cfg_.lep_resolution * rng_.normal();
        const FourVector l(lf * lep.px, lf * lep.py, lf * lep.pz, lf * lep.e);
        std::vector<detail::StopJet> jets;
        FourVector visible = l;
        for (const auto& q : partons) {
            const FourVector j = smear_jet(q.first);
            const double u = rng_.uniform();
            visible += j;
            if (!(j.pt() > cfg_.jet_pt_min && std::fabs(j.eta()) < cfg_.jet_eta_max)) continue;
            const double ptag = q.second == 5 ? cfg_.btag_eff : (q.second == 1 ? cfg_.mistag_w : cfg_.mistag_isr);
            jets.push_back(detail::StopJet{j, u < ptag});
        }
        // Missing E_T: minus everything measured (jets below threshold included; an unclustered
        // recoil with response 0.6), plus the soft-term resolution.
        const double mex = -(visible.px + 0.6 * soft.px) + cfg_.met_soft_sigma * rng_.normal();
        const double mey = -(visible.py + 0.6 * soft.py) + cfg_.met_soft_sigma * rng_.normal();

        // Preselection.
        if (!(l.pt() > cfg_.lep_pt_min && std::fabs(l.eta()) < cfg_.lep_eta_max)) return false;
        if (static_cast<int>(jets.size()) < cfg_.min_jets) return false;
        int nb = 0;
        for (const auto& j : jets) nb += j.btag ? 1 : 0;
        if (nb < cfg_.min_bjets) return false;

        std::sort(jets.begin(), jets.end(), [](const detail::StopJet& a, const detail::StopJet& b) { return a.p.pt() > b.p.pt(); });
        ev.lep_pt = l.pt(), ev.lep_eta = l.eta();
        const auto jpt = [&](std::size_t i) { return i < jets.size() ? jets[i].p.pt() : 0.0; };
        const auto jeta = [&](std::size_t i) { return i < jets.size() ? jets[i].p.eta() : 0.0; };
        ev.jet1_pt = jpt(0), ev.jet1_eta = jeta(0), ev.jet2_pt = jpt(1), ev.jet2_eta = jeta(1);
        ev.jet3_pt = jpt(2), ev.jet3_eta = jeta(2), ev.jet4_pt = jpt(3), ev.jet4_eta = jeta(3);
        ev.n_jets = static_cast<double>(jets.size());
        ev.n_bjets = nb;
        ev.met = std::hypot(mex, mey);
        const double met_phi = std::atan2(mey, mex);
        ev.mt = std::sqrt(std::max(0.0, 2.0 * ev.lep_pt * ev.met * (1.0 - std::cos(delta_phi(l.phi(), met_phi)))));
        double ht = 0.0;
        for (const auto& j : jets) ht += j.p.pt();
        ev.ht = ht;
        ev.met_over_sqrt_ht = ev.met / std::sqrt(ht);
        ev.dphi_min_j12_met = std::min(std::fabs(delta_phi(jets[0].p.phi(), met_phi)), std::fabs(delta_phi(jets[1].p.phi(), met_phi)));
        // Lepton + closest b-tagged jet (the leading jet when none is tagged, with min_bjets = 0).
        std::size_t best = 0;
        double best_dr = 1e300;
        for (std::size_t i = 0; i < jets.size(); ++i) {
            if (nb > 0 && !jets[i].btag) continue;
            const double dr = delta_r(l, jets[i].p);
            if (dr < best_dr) best_dr = dr, best = i;
        }
        ev.m_lb = (l + jets[best].p).m();
        ev.dr_lb = best_dr;
        // Hadronic top candidate: the three jets with the largest vector-sum pT.
        double best_pt = -1.0;
        for (std::size_t a = 0; a < jets.size(); ++a)
            for (std::size_t b = a + 1; b < jets.size(); ++b)
                for (std::size_t c = b + 1; c < jets.size(); ++c) {
                    const FourVector s = jets[a].p + jets[b].p + jets[c].p;
                    if (s.pt() > best_pt) best_pt = s.pt(), ev.m_jjj = s.m();
                }
        ev.had_top_chi2 = 1e300;
        for (std::size_t a = 0; a < jets.size(); ++a)
            for (std::size_t b = a + 1; b < jets.size(); ++b) {
                const FourVector w = jets[a].p + jets[b].p;
                const double cw = (w.m() - cfg_.w_mass) / 10.0;
                for (std::size_t c = 0; c < jets.size(); ++c) {
                    if (c == a || c == b) continue;
                    const double ct = ((w + jets[c].p).m() - cfg_.top_mass) / 15.0;
                    ev.had_top_chi2 = std::min(ev.had_top_chi2, cw * cw + ct * ct);
                }
            }
        ev.label = label;
        return true;
    }

    std::size_t attempts_[2] = {0, 0}, accepted_[2] = {0, 0};
};

/// n preselected events; the same (n, seed, config) gives the same events.
inline std::vector<StopEvent> generate_stop(std::size_t n, std::uint64_t seed, const StopConfig& config = StopConfig{}) {
    return detail::generate_n<StopGenerator>(n, seed, config);
}

} // namespace tapir::hep
