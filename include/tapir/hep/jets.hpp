#pragma once
/// A toy generator of boosted jets for top tagging: hadronic top decays t -> b W -> b q qbar'
/// (signal, label 1) against light-quark and gluon jets (background, label 0), anti-kT R = 0.8
/// jets with 550 < pT < 650 GeV and |eta| < 2, as in the Top Quark Tagging Reference Dataset
/// (arXiv:1902.09914), given as up to 200 massless constituents sorted by pT.
///
/// Physics (every number from tapir::Rng, so a seed gives the same jets on every platform with
/// the same libm):
/// - Hard partons: a top with Breit-Wigner mass (173 GeV, width 1.4), pT flat in a window a
///   little wider than the jet's, rapidity flat, decaying isotropically to b W, the W (80.4 GeV,
///   width 2.1) isotropically to q qbar'; or a QCD parton (gluon with probability
///   gluon_fraction, else a light quark) with the same pT and rapidity.
/// - Parton shower: a final-state shower ordered in the relative transverse momentum k of each
///   branching, as the pT-ordered shower of Sjostrand and Skands (hep-ph/0408302), with the
///   Sudakov veto algorithm, the DGLAP splitting functions q -> q g, g -> g g (with its 1/2 for
///   identical gluons) and g -> q qbar (nf = 5), one-loop running alpha_s(k^2) and a cut-off
///   k > shower_cutoff (1 GeV). The opening angle of a branching, k / (z (1 - z) E), is bounded
///   by max_angle, a coherence limit in the spirit of the angular ordering of Marchesini and
///   Webber (Nucl. Phys. B310 (1988) 461). Each parton is a 1 -> 2 tree; masses are built
///   from the leaves up, m^2 = (m1^2 + k^2)/z + (m2^2 + k^2)/(1 - z) with z the light-cone
///   fraction, and momenta are placed from the root down by exact two-body decays in each
///   parent's rest frame, so the shower conserves four-momentum exactly (to rounding). The b,
///   q and qbar' of a top decay shower from k_max = m_t/2 resp. m_W/2, and their shower masses
///   enter the decay kinematics (t -> b W and W -> q qbar' with the showered masses); a QCD
///   parton showers from k_max = its pT.
/// - Hadronisation (a smearing, not a model): each final parton becomes 1 + Poisson(a + b ln E)
///   massless hadrons that share its three-momentum with flat (Dirichlet) fractions and a
///   Gaussian transverse kick (summing to zero); hadrons below hadron_pt_min are dropped.
/// - Jet: all hadrons are clustered with anti-kT R = 0.8 (jet_clustering.hpp); the hardest jet
///   must lie in the pT and |eta| window and, for a top, contain the b, q and qbar' directions
///   within R (the reference dataset's matching); otherwise the event is redrawn.
///
/// What it captures: three-prong substructure of top jets against one-prong QCD jets (tau32),
/// the jet mass peaking near m_t with a W-mass subjet pair inside, a QCD mass spectrum falling
/// from the Sudakov peak, gluon jets wider and with more constituents than quark jets. What it
/// does not: colour connection between partons (no dipoles, no coherence between the top's
/// daughters), hadron masses, decays and a real hadronisation model, initial-state radiation,
/// the underlying event, pile-up and any detector (granularity, resolution, thresholds).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../random.hpp"
#include "generator.hpp"
#include "jet_clustering.hpp"
#include "kinematics.hpp"
#include "sampling.hpp"

namespace tapir::hep {

/// The generator's knobs. Defaults give the reference dataset's selection.
struct JetConfig {
    double signal_fraction = 0.5;
    /// Selected jets: jet_pt_min < pT < jet_pt_max, |eta| < jet_eta_max, anti-kT radius jet_r.
    double jet_pt_min = 550.0, jet_pt_max = 650.0, jet_eta_max = 2.0, jet_r = 0.8;
    /// Hard parton (top or QCD parton) pT is flat in [parton_pt_min, parton_pt_max] and its
    /// rapidity flat in |y| < parton_y_max; the jet cuts select from it.
    double parton_pt_min = 540.0, parton_pt_max = 700.0, parton_y_max = 2.0;
    double top_mass = 173.0, top_width = 1.4, w_mass = 80.4, w_width = 2.1;
    /// Background: fraction of gluon-initiated jets (the rest are light quarks).
    double gluon_fraction = 0.5;
    /// Shower: alpha_s(m_Z) of the one-loop running coupling, cut-off on k, maximal opening angle.
    double alpha_s_mz = 0.1365, shower_cutoff = 1.0, max_angle = 1.0;
    /// Hadrons per parton: 1 + Poisson(hadrons_a + hadrons_b ln(E / 1 GeV)).
    double hadrons_a = 0.5, hadrons_b = 1.5;
    /// Gaussian width of each transverse-kick component (GeV) and the hadron pT threshold.
    double hadron_kt = 0.35, hadron_pt_min = 0.5;
    /// At most this many constituents are kept (the hardest).
    std::size_t max_constituents = 200;
    /// Redraws per jet before giving up (cuts that accept nothing).
    std::size_t max_attempts = 10000;
};

/// One generated jet: constituents sorted by pT (massless four-vectors), its label (1 top,
/// 0 QCD) and the hard parton (the top, or the QCD parton) as truth.
struct GeneratedJet {
    std::vector<FourVector> constituents;
    int label = 0;
    FourVector truth;
};

/// A shower parton: four-momentum and whether it is a gluon.
struct ShowerParton {
    FourVector p;
    bool gluon = false;
};

namespace detail {

inline void check_jet_config(const JetConfig& c) {
    const ConfigCheck fail{"JetConfig"};
    const auto num = ConfigCheck::num;
    fail.signal_fraction(c);
    if (!(c.jet_pt_min >= 0.0 && c.jet_pt_max > c.jet_pt_min && std::isfinite(c.jet_pt_max)))
        fail("need 0 <= jet_pt_min < jet_pt_max, got [" + num(c.jet_pt_min) + ", " + num(c.jet_pt_max) + "]");
    if (!(c.jet_eta_max > 0.0)) fail("jet_eta_max must be > 0, got " + num(c.jet_eta_max));
    if (!(c.jet_r > 0.0 && c.jet_r <= 2.0)) fail("jet_r must be in (0, 2], got " + num(c.jet_r));
    if (!(c.parton_pt_min > 0.0 && c.parton_pt_max >= c.parton_pt_min && std::isfinite(c.parton_pt_max)))
        fail("need 0 < parton_pt_min <= parton_pt_max, got [" + num(c.parton_pt_min) + ", " + num(c.parton_pt_max) + "]");
    if (!(c.parton_y_max >= 0.0 && c.parton_y_max <= 10.0)) fail("parton_y_max must be in [0, 10], got " + num(c.parton_y_max));
    if (!(c.w_mass > 0.0 && c.top_mass > c.w_mass && std::isfinite(c.top_mass)))
        fail("need 0 < w_mass < top_mass, got w_mass = " + num(c.w_mass) + ", top_mass = " + num(c.top_mass));
    if (!(c.top_width > 0.0 && c.w_width > 0.0 && c.top_width < c.top_mass - c.w_mass && c.w_width < c.w_mass))
        fail("widths must be > 0 and below the mass gaps, got top_width = " + num(c.top_width) + ", w_width = " + num(c.w_width));
    if (!(c.gluon_fraction >= 0.0 && c.gluon_fraction <= 1.0)) fail("gluon_fraction must be in [0, 1], got " + num(c.gluon_fraction));
    if (!(c.alpha_s_mz > 0.0 && c.alpha_s_mz < 0.3)) fail("alpha_s_mz must be in (0, 0.3), got " + num(c.alpha_s_mz));
    if (!(c.shower_cutoff >= 0.2 && c.shower_cutoff <= 50.0)) fail("shower_cutoff must be in [0.2, 50] GeV, got " + num(c.shower_cutoff));
    const double b0 = 23.0 / (12.0 * pi);
    if (!(1.0 + c.alpha_s_mz * b0 * std::log(c.shower_cutoff * c.shower_cutoff / (91.1876 * 91.1876)) > 0.1))
        fail("alpha_s runs into its Landau pole above shower_cutoff = " + num(c.shower_cutoff) + " GeV with alpha_s_mz = " +
             num(c.alpha_s_mz) + "; raise the cut-off");
    if (!(c.max_angle > 0.0 && c.max_angle <= pi)) fail("max_angle must be in (0, pi], got " + num(c.max_angle));
    if (!(c.hadrons_a >= 0.0 && c.hadrons_b >= 0.0 && c.hadrons_a + c.hadrons_b * std::log(1e4) < 150.0))
        fail("hadron multiplicity parameters must be >= 0 and moderate, got a = " + num(c.hadrons_a) + ", b = " + num(c.hadrons_b));
    if (!(c.hadron_kt >= 0.0 && c.hadron_kt < 10.0)) fail("hadron_kt must be in [0, 10) GeV, got " + num(c.hadron_kt));
    if (!(c.hadron_pt_min >= 0.0 && c.hadron_pt_min < c.jet_pt_min + 1.0)) fail("hadron_pt_min must be >= 0, got " + num(c.hadron_pt_min));
    if (c.max_constituents == 0) fail("max_constituents must be >= 1");
    if (c.max_attempts == 0) fail("max_attempts must be >= 1");
}

/// One-loop alpha_s(q2) from alpha_s(m_Z), nf = 5.
inline double alpha_s(double q2, double alpha_mz) noexcept {
    const double b0 = 23.0 / (12.0 * pi);
    return alpha_mz / (1.0 + alpha_mz * b0 * std::log(q2 / (91.1876 * 91.1876)));
}

/// A node of the shower tree: a leaf (no children) is a final massless parton.
struct ShowerNode {
    bool gluon = false;
    double z = 0.0, k2 = 0.0, m2 = 0.0;
    int child1 = -1, child2 = -1;  ///< child1 carries light-cone fraction z
};

/// Builds the branching tree of a parton of energy e evolving down in k^2 from k2_max.
class ShowerTree {
public:
    ShowerTree(Rng& rng, const JetConfig& c) : rng_(rng), c_(c) {}

    std::vector<ShowerNode> nodes;

    /// Appends the tree of one parton; returns its root index.
    int build(bool gluon, double e, double k2_max, double theta_max) {
        const int id = static_cast<int>(nodes.size());
        nodes.push_back(ShowerNode{gluon, 0.0, 0.0, 0.0, -1, -1});
        double z = 0.0, k2 = 0.0;
        int kind = 0;  // 1 q -> q g, 2 g -> g g, 3 g -> q qbar
        if (!next_branching(gluon, e, k2_max, theta_max, z, k2, kind)) return id;
        const bool g1 = kind == 2;  // daughter 1: the quark of q -> q g and g -> q qbar, a gluon of g -> g g
        const bool g2 = kind != 3;  // daughter 2: the emitted gluon, or the antiquark of g -> q qbar
        // Coherence: the daughters radiate inside the opening angle of their branching.
        const double theta = std::min(theta_max, std::sqrt(k2) / (z * (1.0 - z) * e));
        const int a = build(g1, z * e, k2, theta);
        const int b = build(g2, (1.0 - z) * e, k2, theta);
        ShowerNode& n = nodes[static_cast<std::size_t>(id)];
        n.z = z;
        n.k2 = k2;
        n.child1 = a;
        n.child2 = b;
        n.m2 = (nodes[static_cast<std::size_t>(a)].m2 + k2) / z + (nodes[static_cast<std::size_t>(b)].m2 + k2) / (1.0 - z);
        return id;
    }

private:
    /// The next branching below k2_max, or false if none above the cut-off. z is bounded by
    /// the opening angle: k / (z (1 - z) e) < max_angle.
    bool next_branching(bool gluon, double e, double k2_max, double theta_max, double& z, double& k2, int& kind) {
        const double kmin = c_.shower_cutoff, k2min = kmin * kmin;
        // z (1 - z) >= k / (e max_angle) >= kmin / (e max_angle): the widest z range, eps0.
        const double zz0 = kmin / (e * theta_max);
        if (!(zz0 < 0.25) || !(k2_max > k2min)) return false;
        const double eps0 = 0.5 * (1.0 - std::sqrt(1.0 - 4.0 * zz0));
        const double lnz = std::log((1.0 - eps0) / eps0);
        const double cf = 4.0 / 3.0, ca = 3.0, tr_nf = 0.5 * 5.0;
        const double amax = alpha_s(k2min, c_.alpha_s_mz);
        // Overestimated z integrals of the channels.
        const double i1 = gluon ? 0.0 : 2.0 * cf * lnz;
        const double i2 = gluon ? 2.0 * ca * lnz : 0.0;  // (1/2) P_gg overestimated by CA (1/z + 1/(1-z))
        const double i3 = gluon ? tr_nf * (1.0 - 2.0 * eps0) : 0.0;
        const double coef = amax / (2.0 * pi) * (i1 + i2 + i3);
        double t = k2_max;
        for (;;) {
            t *= std::pow((1.0 - rng_.uniform()), 1.0 / coef);
            if (t <= k2min) return false;
            const double r = rng_.uniform() * (i1 + i2 + i3);
            const double u = rng_.uniform(), v = rng_.uniform(), w = rng_.uniform();
            double zc, ratio;
            if (r < i1) {
                zc = 1.0 - eps0 * std::pow((1.0 - eps0) / eps0, u);
                ratio = 0.5 * (1.0 + zc * zc);
                kind = 1;
            } else if (r < i1 + i2) {
                zc = 1.0 - eps0 * std::pow((1.0 - eps0) / eps0, u);
                if (v < 0.5) zc = 1.0 - zc;
                ratio = zc * zc + (1.0 - zc) * (1.0 - zc) + zc * zc * (1.0 - zc) * (1.0 - zc);
                kind = 2;
            } else {
                zc = eps0 + (1.0 - 2.0 * eps0) * u;
                ratio = zc * zc + (1.0 - zc) * (1.0 - zc);
                kind = 3;
            }
            if (zc * (1.0 - zc) < std::sqrt(t) / (e * theta_max)) continue;  // outside the true phase space
            if (w * amax > ratio * alpha_s(t, c_.alpha_s_mz)) continue;          // veto
            z = zc;
            k2 = t;
            return true;
        }
    }

    Rng& rng_;
    const JetConfig& c_;
};

/// Unit vectors (e1, e2) orthogonal to the unit vector (nx, ny, nz) and to each other.
inline void orthonormal_basis(double nx, double ny, double nz, double* e1, double* e2) noexcept {
    if (std::fabs(nx) < 0.6) {  // e1 = n x (1,0,0) normalised
        const double l = std::hypot(nz, ny);
        e1[0] = 0.0, e1[1] = nz / l, e1[2] = -ny / l;
    } else {  // e1 = n x (0,1,0)
        const double l = std::hypot(nz, nx);
        e1[0] = -nz / l, e1[1] = 0.0, e1[2] = nx / l;
    }
    e2[0] = ny * e1[2] - nz * e1[1];
    e2[1] = nz * e1[0] - nx * e1[2];
    e2[2] = nx * e1[1] - ny * e1[0];
}

/// Daughters of parent p (mass^2 m2 = p^2) into masses^2 m1s, m2s at light-cone fraction z along
/// the parent's direction, azimuth phi: an exact two-body decay in the parent's rest frame.
inline std::pair<FourVector, FourVector> split_momentum(const FourVector& p, double m1s, double m2s, double z, double phi) {
    const double m = std::sqrt(std::max(p.m2(), 0.0));
    const double m1 = std::sqrt(m1s), m2 = std::sqrt(m2s);
    const double q = sampling::two_body_momentum(m, m1, m2);
    const double e1 = std::sqrt(m1s + q * q);
    double c = q > 0.0 ? (z * m - e1) / q : 0.0;
    c = std::max(-1.0, std::min(1.0, c));
    const double s = std::sqrt((1.0 - c) * (1.0 + c));
    const double pp = p.p();
    double n[3] = {0.0, 0.0, 1.0};
    if (pp > 0.0) n[0] = p.px / pp, n[1] = p.py / pp, n[2] = p.pz / pp;
    double a[3], b[3];
    orthonormal_basis(n[0], n[1], n[2], a, b);
    const double cp = std::cos(phi), sp = std::sin(phi);
    double d[3];
    for (int i = 0; i < 3; ++i) d[i] = q * (c * n[i] + s * (cp * a[i] + sp * b[i]));
    const FourVector r1(d[0], d[1], d[2], e1);
    const FourVector d1 = boost(r1, p.px / p.e, p.py / p.e, p.pz / p.e);
    // The second daughter as the difference keeps the sum exact (its mass is m2 to rounding).
    return {d1, p - d1};
}

/// Places the momenta of the tree below node id, whose four-momentum is p, appending the leaves.
inline void place_momenta(Rng& rng, const std::vector<ShowerNode>& nodes, int id, const FourVector& p, std::vector<ShowerParton>& out) {
    const ShowerNode& n = nodes[static_cast<std::size_t>(id)];
    if (n.child1 < 0) {
        out.push_back(ShowerParton{p, n.gluon});
        return;
    }
    const ShowerNode& a = nodes[static_cast<std::size_t>(n.child1)];
    const ShowerNode& b = nodes[static_cast<std::size_t>(n.child2)];
    const auto d = split_momentum(p, a.m2, b.m2, n.z, rng.uniform(-pi, pi));
    place_momenta(rng, nodes, n.child1, d.first, out);
    place_momenta(rng, nodes, n.child2, d.second, out);
}

} // namespace detail

/// Showers one parton whose four-momentum is given (its mass is ignored: the shower gives the
/// mass): the tree is evolved from k_max down, the parton is rebuilt with the shower mass at the
/// same three-momentum, and the leaves are returned. Their sum is that rebuilt four-vector
/// up to rounding.
inline std::vector<ShowerParton> shower_parton(Rng& rng, const FourVector& p, bool gluon, double k_max, const JetConfig& config) {
    detail::check_jet_config(config);
    detail::ShowerTree tree(rng, config);
    const int root = tree.build(gluon, p.e, k_max * k_max, config.max_angle);
    const double m2 = tree.nodes[static_cast<std::size_t>(root)].m2;
    const double pp = p.p();
    const FourVector q(p.px, p.py, p.pz, std::sqrt(pp * pp + m2));
    std::vector<ShowerParton> out;
    detail::place_momenta(rng, tree.nodes, root, q, out);
    return out;
}

/// Streams jets one at a time; generate_jets() is a loop over next().
class JetGenerator : public detail::Generator<JetGenerator, JetConfig, GeneratedJet, detail::check_jet_config> {
public:
    /// JetGenerator(seed, config = JetConfig{}): the configuration is checked.
    using Generator::Generator;

    /// A jet of a random class (top with probability signal_fraction).
    using Generator::next;

    /// A jet of the given class (1 top, 0 QCD).
    GeneratedJet next(int label) {
        check_label("JetGenerator::next", label);
        return first_accepted([&](GeneratedJet& j) { return label == 1 ? try_top(j) : try_qcd(j); }, [&] {
            return value_error("JetGenerator: no jet passed the selection in " + std::to_string(cfg_.max_attempts) +
                               " attempts; the jet window [" + std::to_string(cfg_.jet_pt_min) + ", " + std::to_string(cfg_.jet_pt_max) +
                               "] GeV does not fit the parton window [" + std::to_string(cfg_.parton_pt_min) + ", " +
                               std::to_string(cfg_.parton_pt_max) + "] GeV");
        });
    }

    /// The partons after the shower of the last accepted jet's event, before hadronisation.
    const std::vector<ShowerParton>& last_partons() const noexcept { return partons_; }
    /// All hadrons of the last accepted jet's event (the jet's constituents and those outside it).
    const std::vector<FourVector>& last_hadrons() const noexcept { return hadrons_; }

private:
    static double angle_between(const FourVector& a, const FourVector& b) {
        const double c = (a.px * b.px + a.py * b.py + a.pz * b.pz) / (a.p() * b.p());
        return std::acos(std::max(-1.0, std::min(1.0, c)));
    }

    FourVector hard_momentum(double m) {
        const double pt = rng_.uniform(cfg_.parton_pt_min, cfg_.parton_pt_max);
        const double y = rng_.uniform(-cfg_.parton_y_max, cfg_.parton_y_max);
        return sampling::system_from_m_pt_y(m, pt, rng_.uniform(-detail::pi, detail::pi), y);
    }

    bool try_qcd(GeneratedJet& j) {
        const bool gluon = rng_.bernoulli(cfg_.gluon_fraction);
        const FourVector p = hard_momentum(0.0);
        partons_ = shower_parton(rng_, p, gluon, p.pt(), cfg_);
        j.label = 0;
        j.truth = p;
        return finish(j, nullptr, 0);
    }

    bool try_top(GeneratedJet& j) {
        const double mt = sampling::breit_wigner(rng_, cfg_.top_mass, cfg_.top_width, cfg_.top_mass - 10.0 * cfg_.top_width,
                                                 cfg_.top_mass + 10.0 * cfg_.top_width);
        const double mw = sampling::breit_wigner(rng_, cfg_.w_mass, cfg_.w_width, cfg_.w_mass - 10.0 * cfg_.w_width,
                                                 std::min(cfg_.w_mass + 10.0 * cfg_.w_width, mt - 1.0));
        const FourVector top = hard_momentum(mt);
        const double ct1 = rng_.uniform(-1.0, 1.0), ph1 = rng_.uniform(-detail::pi, detail::pi);
        const double ct2 = rng_.uniform(-1.0, 1.0), ph2 = rng_.uniform(-detail::pi, detail::pi);
        // Energies at zero daughter masses set the shower phase space; the trees then fix the masses.
        const auto bw0 = sampling::decay_two_body(top, 0.0, mw, ct1, ph1);
        const auto qq0 = sampling::decay_two_body(bw0.d2, 0.0, 0.0, ct2, ph2);
        for (int tries = 0; tries < 100; ++tries) {
            detail::ShowerTree tree(rng_, cfg_);
            const double th_qq = std::min(cfg_.max_angle, angle_between(qq0.d1, qq0.d2));
            const double th_b = std::min(cfg_.max_angle, angle_between(bw0.d1, bw0.d2));
            const int rb = tree.build(false, bw0.d1.e, 0.25 * mt * mt, th_b);
            const int rq = tree.build(false, qq0.d1.e, 0.25 * mw * mw, th_qq);
            const int rqb = tree.build(false, qq0.d2.e, 0.25 * mw * mw, th_qq);
            const auto& nd = tree.nodes;
            const double mb = std::sqrt(nd[static_cast<std::size_t>(rb)].m2), mq = std::sqrt(nd[static_cast<std::size_t>(rq)].m2);
            const double mqb = std::sqrt(nd[static_cast<std::size_t>(rqb)].m2);
            if (!(mq + mqb < mw && mb + mw < mt)) continue;
            const auto bw = sampling::decay_two_body(top, mb, mw, ct1, ph1);
            const FourVector w = top - bw.d1;
            const auto qq = sampling::decay_two_body(w, mq, mqb, ct2, ph2);
            partons_.clear();
            detail::place_momenta(rng_, nd, rb, bw.d1, partons_);
            detail::place_momenta(rng_, nd, rq, qq.d1, partons_);
            detail::place_momenta(rng_, nd, rqb, w - qq.d1, partons_);
            j.label = 1;
            j.truth = top;
            const FourVector prongs[3] = {bw.d1, qq.d1, w - qq.d1};
            return finish(j, prongs, 3);
        }
        return false;
    }

    /// Hadronises partons_, clusters, selects; fills j.constituents. False if the jet fails.
    bool finish(GeneratedJet& j, const FourVector* prongs, int n_prongs) {
        hadrons_.clear();
        for (const ShowerParton& sp : partons_) hadronise(sp.p);
        if (hadrons_.empty()) return false;
        const std::vector<ClusteredJet> jets = detail::run_clustering(hadrons_, cfg_.jet_r, JetAlgorithm::anti_kt, 0);
        if (jets.empty()) return false;
        const ClusteredJet& lead = jets.front();
        const double pt = lead.p.pt();
        if (!(pt > cfg_.jet_pt_min && pt < cfg_.jet_pt_max && std::fabs(lead.p.eta()) < cfg_.jet_eta_max)) return false;
        for (int i = 0; i < n_prongs; ++i)
            if (!(delta_r(prongs[i], lead.p) < cfg_.jet_r)) return false;
        j.constituents.clear();
        for (std::size_t idx : lead.constituents) j.constituents.push_back(hadrons_[idx]);
        std::stable_sort(j.constituents.begin(), j.constituents.end(),
                         [](const FourVector& a, const FourVector& b) { return a.pt() > b.pt(); });
        if (j.constituents.size() > cfg_.max_constituents) j.constituents.resize(cfg_.max_constituents);
        return true;
    }

    /// 1 + Poisson(a + b ln E) massless hadrons sharing the parton's three-momentum.
    void hadronise(const FourVector& p) {
        const double pp = p.p();
        if (!(pp > 0.0)) return;
        const double mean = cfg_.hadrons_a + cfg_.hadrons_b * std::log(std::max(p.e, 1.0));
        const int n = 1 + sampling::poisson(rng_, std::min(mean, 150.0));
        double nv[3] = {p.px / pp, p.py / pp, p.pz / pp}, a[3], b[3];
        detail::orthonormal_basis(nv[0], nv[1], nv[2], a, b);
        frac_.assign(static_cast<std::size_t>(n), 0.0);
        kick_.assign(2 * static_cast<std::size_t>(n), 0.0);
        double sum = 0.0, ka = 0.0, kb = 0.0;
        for (int i = 0; i < n; ++i) {
            const std::size_t u = static_cast<std::size_t>(i);
            frac_[u] = rng_.exponential(1.0);
            sum += frac_[u];
            kick_[2 * u] = n > 1 ? rng_.normal() * cfg_.hadron_kt : 0.0;
            kick_[2 * u + 1] = n > 1 ? rng_.normal() * cfg_.hadron_kt : 0.0;
            ka += kick_[2 * u], kb += kick_[2 * u + 1];
        }
        ka /= n, kb /= n;
        for (int i = 0; i < n; ++i) {
            const std::size_t u = static_cast<std::size_t>(i);
            const double x = frac_[u] / sum * pp, s = kick_[2 * u] - ka, t = kick_[2 * u + 1] - kb;
            const double px = x * nv[0] + s * a[0] + t * b[0], py = x * nv[1] + s * a[1] + t * b[1];
            const double pz = x * nv[2] + s * a[2] + t * b[2];
            const FourVector h(px, py, pz, std::sqrt(px * px + py * py + pz * pz));
            if (h.pt() >= cfg_.hadron_pt_min) hadrons_.push_back(h);
        }
    }

    std::vector<ShowerParton> partons_;
    std::vector<FourVector> hadrons_;
    std::vector<double> frac_, kick_;
};

/// n jets (signal with probability signal_fraction); the same (n, seed, config) gives the same
/// jets, and a shorter run is a prefix of a longer one.
inline std::vector<GeneratedJet> generate_jets(std::size_t n, std::uint64_t seed, const JetConfig& config = JetConfig{}) {
    return detail::generate_n<JetGenerator>(n, seed, config);
}

} // namespace tapir::hep
