// A Wasserstein GAN with gradient penalty (Gulrajani et al., arXiv 1704.00028) that learns to
// generate Z gamma -> l l gamma events with 18 correlated features (hep/zgamma.hpp), to scale
// up a simulated data set with a GAN.
//
// The generator maps 16 Gaussian numbers to 14 numbers of an event in the simulation's own
// variables (16 -> 512 -> 1024 -> 512 -> 14, ReLU; EventLayer below): m_ll and m_llg inside the
// real sample's windows, with the second lepton's and the photon's pT following from them, the
// leptons' and the photon's directions, integer jet counts from a Poisson rate and a binomial
// central fraction, and then missing E_T as mismeasured recoil with a resolution that grows with
// the jet count. A fixed differentiable layer
// (hep::zgamma_features) computes the 18 features the critic sees from them, so every generated
// event is a valid event: the 18 features hold exact relations (pT_ll / m_llg is a ratio of two
// others, E_llg is at least m_llg, ...) that a generator of the 18 numbers (--direct) only
// approximates, and a classifier finds; the masses stay in their windows and the counts are
// whole numbers (--independent: the 13 independent numbers, pT, eta, phi of the three objects,
// missing E_T and its azimuth, continuous jet counts). Every event is rotated by a uniform random
// azimuth (the physics is symmetric in phi).
// The critic scores events (18 -> 512 -> 512 -> 512 -> 1, ReLU). Features are min-max scaled to
// [0, 1]. Per generator step the critic takes n_critic steps on
//     L_critic = <C(fake)> - <C(real)> + lambda_gp <(|grad_x C(x_hat)| - 1)^2>,
// x_hat random points between real and fake events (the gradient of a gradient: double
// backprop), and the generator one step on L_gen = -<C(G(z))>. <C(real)> - <C(fake)> estimates
// the Wasserstein distance between the real and generated distributions. The learning rates fall
// linearly to 0 over the second half of the steps (--lr-decay-from), so the weights settle.
// While they fall, the generator is scored every 50 steps (--select-every) on validation events,
// real events split off the training events, and the events come from the best-scoring weights:
// ordinary model selection, since the game still moves the correlations by 0.1-0.3 between
// checks; the test events the summary reports on never take part in the choice. An exponential
// moving average of the weights (--ema D, arXiv 1806.04498) went wrong here after ~3000 steps
// (largest W1 0.3 while the critic's estimate for the current weights stayed near 0.1): with the
// event layer's ratios, an average of weights is not an average of generators.
//
// Quality, on held-out (test) real events against as many generated ones (scaled features): the 1-D
// Wasserstein distance of every feature (the largest is judged: a mean hides a wrong feature),
// the largest difference between the two correlation matrices, a classifier two-sample test (the
// test AUC of a small network trained to tell generated from real events: 0.5 when it cannot;
// Lopez-Paz and Oquab, arXiv 1610.06545), and the critic's mean gradient norm at the
// interpolates (1 for an ideal critic). Acceptance: max W1 < 0.05, max |d corr| < 0.1, AUC < 0.6.
//
//   wgan_gp [--data FILE] [--out DIR] [--steps N] [--n-critic K] [--gp-weight L] ...   (--help)
#include <tapir/data/dataset.hpp>
#include <tapir/hep/zgamma.hpp>
#include <tapir/hep/zgamma_features.hpp>
#include <tapir/io/csv.hpp>
#include <tapir/io/svg.hpp>
#include <tapir/loss/gan.hpp>
#include <tapir/metrics/roc.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/simd/arch.hpp>
#include <tapir/tapir.hpp>

#include "../common/cli.hpp"
#include "../common/json.hpp"
#include "../common/output_dir.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace tapir;
using nn::Dense;
using nn::Sequential;

namespace {

// ---- options ----------------------------------------------------------------------------------

struct Options {
    std::string data;              // CSV with the 18 feature columns; empty: generate events
    std::string out = ".";
    std::size_t events = 120000;   // generated events (80% train, 20% held out)
    std::uint64_t seed = 1;
    std::size_t steps = 4000;      // generator steps
    std::size_t n_critic = 5;      // critic steps per generator step
    double gp_weight = 10.0;       // lambda_gp
    double corr_weight = 0.1;      // weight of the correlation-matching term in the generator's loss (0: off)
    std::size_t batch = 128;
    std::size_t latent = 16;
    double lr = 1e-4, beta1 = 0.5, beta2 = 0.9;
    double ema = 0;                // decay of the generator's weight average (0: off, the last weights)
    std::size_t eval_every = 250;  // steps between quality checks
    std::size_t select_every = 50; // steps between validation scores over the learning-rate fall (0: the last weights)
    std::size_t eval_events = 20000;
    unsigned threads = 1;          // GEMM threads
    bool check = false;            // exit 1 unless the acceptance figures are met
    bool quiet = false;
    double lr_decay_from = 0.5;    // fraction of the steps after which the learning rates fall linearly to 0
    bool direct = false;           // the generator outputs the 18 scaled features (no physics layer)
    bool independent = false;      // the generator outputs the 13 independent numbers (continuous counts)
    bool sim_variables = true;     // the generator outputs the simulation's variables (the default)
};

const examples::Cli cli("wgan_gp",
                         "wgan_gp [options]\n"
                         "  --data FILE        CSV with the 18 feature columns (names in the README); other columns ignored\n"
                         "  --out DIR          output directory (default .)\n"
                         "  --events N         generated Z gamma events (default 120000; 20% held out)\n"
                         "  --steps N          generator steps (default 4000)\n"
                         "  --n-critic K       critic steps per generator step (default 5)\n"
                         "  --gp-weight L      gradient-penalty weight lambda_gp (default 10, as in arXiv 1704.00028)\n"
                         "  --corr-weight L    weight of the generator's correlation-matching term: half the summed squared\n"
                         "                     difference of the batch's and the training events' feature correlations (default 0.1; 0: off)\n"
                         "  --batch B          batch size (default 128); --latent D latent dimension (default 16)\n"
                         "  --lr X, --beta1 X, --beta2 X   Adam (default 1e-4, 0.5, 0.9)\n"
                         "  --lr-decay-from F  the learning rates stay at --lr for the first fraction F of the steps, then fall\n"
                         "                     linearly to 0 at the last step (default 0.5; 1: constant)\n"
                         "  --ema D            events come from an exponential moving average of the generator's weights\n"
                         "                     with decay D (default 0: the last weights, which the falling learning rate steadies)\n"
                         "  --eval-every N     steps between quality checks (default 250); --eval-events N (default 20000)\n"
                         "  --select-every N   while the learning rates fall, score the generator every N steps on a validation\n"
                         "                     sample of real events split off the training events (never the test events the\n"
                         "                     summary reports on) and keep the best-scoring weights (default 50; 0: the last weights)\n"
                         "  --threads T        threads for the matrix products (default 1)\n"
                         "  --seed S           random seed (default 1)\n"
                         "  --check            exit with status 1 unless max W1 < 0.05, max |d corr| < 0.1 and two-sample AUC < 0.6\n"
                         "  --direct           the generator outputs the 18 scaled features itself\n"
                         "  --independent      the generator outputs the 13 independent numbers of an event (pT, eta, phi of the\n"
                         "                     leptons and the photon, missing E_T and its azimuth, continuous jet counts),\n"
                         "                     turned into the 18 features by hep::zgamma_features\n"
                         "                     default: 14 numbers in the simulation's own variables (m_ll and m_llg inside the\n"
                         "                     real sample's windows, the second lepton's and the photon's pT following from\n"
                         "                     them, missing E_T as mismeasured recoil, Poisson and binomial integer jet counts)\n"
                         "  --quiet\n");

Options parse_args(int argc, char** argv) {
    Options o;
    examples::Flags(cli)
        .text("--data", o.data).text("--out", o.out).count("--events", o.events).seed("--seed", o.seed)
        .count("--steps", o.steps).count("--n-critic", o.n_critic).number("--gp-weight", o.gp_weight)
        .number("--corr-weight", o.corr_weight)
        .count("--batch", o.batch).count("--latent", o.latent)
        .number("--lr", o.lr).number("--ema", o.ema).number("--beta1", o.beta1).number("--beta2", o.beta2)
        .count("--eval-every", o.eval_every).count("--eval-events", o.eval_events).count("--select-every", o.select_every, 0)
        .on("--threads", [&](const std::string& a, const char* v) { o.threads = static_cast<unsigned>(cli.count(a, v)); })
        .flag("--check", o.check).flag("--quiet", o.quiet).flag("--direct", o.direct).flag("--independent", o.independent)
        .number("--lr-decay-from", o.lr_decay_from)
        .parse(argc, argv);
    if (o.direct && o.independent) cli.usage("--direct and --independent exclude each other");
    o.sim_variables = !o.direct && !o.independent;
    if (!(o.gp_weight >= 0)) cli.usage("--gp-weight must be >= 0");
    if (!(o.corr_weight >= 0)) cli.usage("--corr-weight must be >= 0");
    if (!(o.lr > 0)) cli.usage("--lr must be positive");
    if (!(o.lr_decay_from >= 0 && o.lr_decay_from <= 1)) cli.usage("--lr-decay-from must be in [0, 1]");
    if (!(o.ema >= 0 && o.ema < 1)) cli.usage("--ema must be in [0, 1)");
    return o;
}

/// Four significant digits unless told otherwise.
inline std::string fmt(double v, int prec = 4) { return examples::fmt(v, prec); }
using examples::json_string;
using examples::Progress;

// ---- events -----------------------------------------------------------------------------------

/// Real events in physical units, (events, 18).
Tensor<float> load_events(const Options& o, std::string& source) {
    const std::vector<std::string>& names = hep::zgamma_feature_names();
    if (!o.data.empty()) {
        io::CsvOptions opt;
        opt.columns = names;
        const io::CsvTable t = io::read_csv(o.data, opt);
        if (t.rows < 1000) throw value_error(o.data + ": only " + std::to_string(t.rows) + " events; a GAN needs thousands");
        source = o.data + " (" + std::to_string(t.rows) + " events)";
        return t.to_tensor<float>(names);
    }
    const auto ev = hep::generate_zgamma(o.events, o.seed);
    Tensor<float> x(Shape{ev.size(), names.size()});
    for (std::size_t i = 0; i < ev.size(); ++i) {
        const auto f = ev[i].features();
        for (std::size_t j = 0; j < f.size(); ++j) x(i, j) = static_cast<float>(f[j]);
    }
    source = "generated Z gamma continuum (" + std::to_string(ev.size()) + " events, seed " + std::to_string(o.seed) + ")";
    return x;
}

// ---- networks ---------------------------------------------------------------------------------

Sequential<float> make_generator(std::size_t latent, std::size_t outputs, Rng& rng) {
    Sequential<float> g;
    g.add<Dense<float>>(latent, 512, rng, Activation::relu)
        .add<Dense<float>>(512, 1024, rng, Activation::relu)
        .add<Dense<float>>(1024, 512, rng, Activation::relu)
        .add<Dense<float>>(512, outputs, rng);
    return g;
}

Sequential<float> make_critic(std::size_t features, Rng& rng) {
    Sequential<float> c;
    c.add<Dense<float>>(features, 512, rng, Activation::relu)
        .add<Dense<float>>(512, 512, rng, Activation::relu)
        .add<Dense<float>>(512, 512, rng, Activation::relu)
        .add<Dense<float>>(512, 1, rng);
    return c;
}

/// avg <- d avg + (1 - d) current, parameter by parameter, with the decay ramped up over the
/// first steps (d_t = min(d, (1 + t) / (10 + t))) so that the average forgets the initial weights.
/// The average of an oscillating generator is steadier than its last weights.
void update_average(Sequential<float>& avg, Sequential<float>& current, double decay, std::size_t step) {
    const double t = static_cast<double>(step);
    const float d = static_cast<float>(std::min(decay, (1.0 + t) / (10.0 + t)));
    const std::vector<Parameter<float>*> a = avg.parameters(), c = current.parameters();
    for (std::size_t k = 0; k < a.size(); ++k) {
        float* av = a[k]->value.data();
        const float* cv = c[k]->value.data();
        for (std::size_t i = 0; i < a[k]->size(); ++i) av[i] = d * av[i] + (1 - d) * cv[i];
    }
}

void fill_normal(Tensor<float>& z, Rng& rng) {
    for (std::size_t i = 0; i < z.size(); ++i) z[i] = static_cast<float>(rng.normal());
}

/// The generator's outputs: the 13 independent numbers of an event, missing E_T as 3 (below).
constexpr std::size_t kGenOutputs = 14;

/// atan2(y, x) of (events, 1) columns with r = |(x, y)| > 0 given: 2 atan(s y / (r + s x)) plus 0
/// (x at least 0) or +-pi, s the sign of x, so that no denominator falls below r.
Var<float> atan2_safe(const Var<float>& y, const Var<float>& x, const Var<float>& r) {
    Tensor<float> s(x.shape()), off(x.shape());
    for (std::size_t i = 0; i < s.size(); ++i) {
        s[i] = x[i] >= 0 ? 1.0f : -1.0f;
        off[i] = x[i] >= 0 ? 0.0f : (y[i] >= 0 ? 3.14159265f : -3.14159265f);
    }
    Tape<float>& t = y.tape();
    const Var<float> sv = t.constant(s);
    return add(scale(atan(div(mul(sv, y), add(r, mul(sv, x)))), 2.0f), t.constant(off));
}

/// Per-event noise of the event layer, (events, 1 or 6): a uniform azimuth rotation in [-pi, pi)
/// and, in the default (simulation variables), two uniform numbers in [0, 1) that draw the jet
/// counts and three standard normal ones that smear missing E_T (x, y, and the recoil response).
std::size_t noise_width(bool sim_variables) { return sim_variables ? 6 : 1; }
void fill_noise(Tensor<float>& r, Rng& rng) {
    for (std::size_t i = 0; i < r.dim(0); ++i) {
        r(i, 0) = static_cast<float>(rng.uniform(-3.14159265358979, 3.14159265358979));
        for (std::size_t j = 1; j < r.dim(1); ++j) r(i, j) = static_cast<float>(j < 3 ? rng.uniform() : rng.normal());
    }
}

/// Jet counts drawn as the simulation draws them (hep/zgamma.hpp), by the inverse CDF of the
/// uniform numbers w: n_jets ~ Poisson(rate), n_central ~ Binomial(n_jets, central fraction).
/// The drawn integers enter with the mean-matching straight-through gradient (Bengio et al.,
/// arXiv 1308.3432): n = mean + a constant (the draw minus the mean), so the gradient is that of
/// the mean (rate, and n_jets times the fraction).
Var<float> poisson_straight_through(const Var<float>& rate, const Var<float>& w) {
    Tensor<float> step(rate.shape());
    for (std::size_t i = 0; i < step.size(); ++i) {
        const double lam = rate[i];
        double p = std::exp(-lam), cdf = p;
        int k = 0;
        while (static_cast<double>(w[i]) > cdf && k < 200) {
            ++k;
            p *= lam / k;
            cdf += p;
        }
        step[i] = static_cast<float>(k - lam);
    }
    return add(rate, rate.tape().constant(step));
}
Var<float> binomial_straight_through(const Var<float>& n, const Var<float>& fraction, const Var<float>& w) {
    const Var<float> mean = mul(n, fraction);
    Tensor<float> step(n.shape());
    for (std::size_t i = 0; i < step.size(); ++i) {
        const int trials = static_cast<int>(std::lround(n[i]));
        const double q = std::min(std::max(static_cast<double>(fraction[i]), 1e-6), 1 - 1e-6);
        double p = std::pow(1 - q, trials), cdf = p;
        int k = 0;
        while (static_cast<double>(w[i]) > cdf && k < trials) {
            p *= static_cast<double>(trials - k) / (k + 1) * q / (1 - q);
            ++k;
            cdf += p;
        }
        step[i] = static_cast<float>(k) - mean[i];
    }
    return add(mean, n.tape().constant(step));
}

/// 2 (sinh^2(deta/2) + sin^2(dphi/2)) = cosh(deta) - cos(dphi), without cancellation: the
/// invariant mass squared of two massless objects is 2 pT_a pT_b times this.
Var<float> pair_factor(const Var<float>& eta_a, const Var<float>& phi_a, const Var<float>& eta_b, const Var<float>& phi_b) {
    const Var<float> x = scale(sub(eta_a, eta_b), 0.5f);
    const Var<float> sh = scale(sub(exp(x), exp(neg(x))), 0.5f);
    return scale(add(square(sh), square(sin(scale(sub(phi_a, phi_b), 0.5f)))), 2.0f);
}

/// The generator's outputs u to events. By default u is (events, 14), in the simulation's own variables
/// (hep/zgamma.hpp draws m_llg and m_ll first, in their windows, and the jet counts as integers):
/// - the leading lepton's pT as exp(a + b u), every eta and phi as a + b u (a and b put the
///   starting network's outputs near typical values: pT 45 GeV);
/// - m_ll = mll_lo + (mll_hi - mll_lo) sigmoid(u3), inside the real sample's m_ll range, and the
///   second lepton's pT from it: m_ll^2 = 2 pT_1 pT_2 (cosh deta - cos dphi), with the leptons at
///   Delta R at least the real sample's smallest (dr_min);
/// - m_llg = m_lo + (m_hi - m_lo) sigmoid(u6 - 0.5), inside the real sample's window [m_lo, m_hi]
///   (its range), and the photon's pT from it: with massless objects
///   m_llg^2 = m_ll^2 + sum over the leptons i of 2 pT_i pT_gamma (cosh deta_i - cos dphi_i),
///   linear in pT_gamma at fixed directions, so pT_gamma = (m_llg^2 - m_ll^2) / (2 sum ...);
/// - the jet counts as in the simulation: n_jets ~ Poisson(softplus(u11 + 0.5)) and n_central ~
///   Binomial(n_jets, sigmoid(u12 + 0.6)) (the network gives each event its rate and central
///   fraction; noise columns 1 and 2 draw the integers): integers with n_central at most n_jets;
///   the rate and the fraction also get a trained linear function of pT_llg (count_head, starting
///   at the real events' least-squares line of n_jets in pT_llg), on which the simulation's jet
///   rate depends;
/// - then, as in the simulation, missing E_T given the jet count, as a vector, -d pT_llg +
///   sigma (g_x, g_y): the recoil's mismeasured part (d the event's response deficit, itself with
///   a normal spread) plus resolution (g standard normal noise), d's mean and spread and sigma
///   trained linear functions of (n_jets, n_jets > 0) (met_head): the simulation's recoil response
///   differs with and without jets, and its resolution grows with the jet count (with missing E_T
///   built first and the counts depending on it, met vs n_jets correlated 0.32 instead of 0.52);
///   outputs 9, 10 and 13 are unused;
/// - every azimuth rotated by the event's angle (noise column 0);
/// then the 18 features (hep::zgamma_features), min-max scaled for the critic.
struct EventLayer {
    Tensor<float> feature_min, feature_scale;  // (1, 18): the scaler's, as tape constants
    float m_lo = 0, m_hi = 0;                  // the real sample's m_llg range (GeV)
    float mll_lo = 0, mll_hi = 0;              // and its m_ll range
    float dr_min = 0;                          // and its smallest Delta R between the leptons
    bool direct = false;  // the generator's outputs are the scaled features
    bool sim = false;     // the 14 simulation variables below (default); else the 13 independent numbers
    Dense<float>* count_head = nullptr;  // pT_llg / 50 GeV to the counts' rate and fraction (trained)
    Dense<float>* met_head = nullptr;    // (n_jets, n_jets > 0) to missing E_T's response deficit, its spread and resolution (trained)
    EventLayer(const data::MinMaxScaler& scaler, std::size_t nf, bool direct_, bool sim_, Dense<float>& head, Dense<float>& met)
        : feature_min(Shape{1, nf}), feature_scale(Shape{1, nf}), m_lo(static_cast<float>(scaler.data_min()[0])),
          m_hi(static_cast<float>(scaler.data_max()[0])), mll_lo(static_cast<float>(scaler.data_min()[5])),
          mll_hi(static_cast<float>(scaler.data_max()[5])),
          dr_min(static_cast<float>(scaler.data_min()[10])), direct(direct_), sim(sim_), count_head(&head), met_head(&met) {
        for (std::size_t j = 0; j < nf; ++j) {
            feature_min[j] = static_cast<float>(scaler.data_min()[j] - scaler.lo() / scaler.scale()[j]);
            feature_scale[j] = static_cast<float>(scaler.scale()[j]);
        }
    }
    /// The default: the 13 independent numbers (pT and missing E_T as exp(a + b u), everything
    /// else a + b u; a and b put the starting network's outputs near 0 at typical values: pT 45, 30
    /// and 25 GeV, missing E_T 15 GeV), every azimuth rotated, jet counts continuous.
    Var<float> independent(const Var<float>& u, const Tensor<float>& noise) const {
        Tape<float>& t = u.tape();
        static constexpr float a[13] = {3.8f, 0, 0, 3.4f, 0, 0, 3.2f, 0, 0, 2.7f, 0, 0, 1};
        static constexpr float b[13] = {0.4f, 1, 1, 0.4f, 1, 1, 0.5f, 1, 1, 0.7f, 1, 1, 1};
        const Var<float> rot = slice(t.view(noise), 1, 0, 1);
        std::vector<Var<float>> cols;
        for (std::size_t j = 0; j < hep::zgamma_num_dof; ++j) {
            Var<float> v = add_scalar(scale(slice(u, 1, j, 1), b[j]), a[j]);
            if (j == 0 || j == 3 || j == 6 || j == 9) v = exp(clamp(v, -30.0f, 30.0f));  // positive, never 0 or inf
            if (j == 2 || j == 5 || j == 8 || j == 10) v = add(v, rot);
            cols.push_back(v);
        }
        const Var<float> f = hep::zgamma_features(concat(cols, 1));
        return mul(sub(f, t.view(feature_min)), t.view(feature_scale));
    }
    Var<float> operator()(const Var<float>& u, const Tensor<float>& noise) const {
        if (direct) return u;
        if (!sim) return independent(u, noise);
        Tape<float>& t = u.tape();
        static constexpr float a[kGenOutputs] = {3.8f, 0, 0, 0, 0, 0, -0.5f, 0, 0, 0.15f, 0, 0.5f, 0.6f, 0};
        static constexpr float b[kGenOutputs] = {0.4f, 1, 1, 1, 1, 1, 1, 1, 1, 0.15f, 8, 1, 1, 8};
        const Var<float> nz = t.view(noise);
        const Var<float> rot = slice(nz, 1, 0, 1);
        std::vector<Var<float>> c;
        for (std::size_t j = 0; j < kGenOutputs; ++j) {
            Var<float> v = add_scalar(scale(slice(u, 1, j, 1), b[j]), a[j]);
            if (j == 0) v = exp(clamp(v, -30.0f, 30.0f));  // positive, never 0 or inf
            if (j == 2 || j == 5 || j == 8) v = add(v, rot);
            c.push_back(v);
        }
        // The second lepton's direction at Delta R at least the real sample's smallest: its (deta,
        // dphi) from the first lepton (dphi wrapped to [-pi, pi]) stretched to the length
        // dr_min + 0.1 softplus(10 (r - dr_min)), r beyond dr_min + 0.3 nearly unchanged. Near
        // dr = 0 the second lepton's pT from m_ll below grows without bound (1500 GeV events, with
        // 80 jets and 900 GeV missing E_T, that no simulation makes and that alone moved the
        // correlations of pT_ll and missing E_T by 0.3).
        {
            const Var<float> deta = sub(c[4], c[1]);
            Var<float> dphi = sub(c[5], c[2]);
            Tensor<float> wrap(dphi.shape());
            for (std::size_t i = 0; i < wrap.size(); ++i)
                wrap[i] = -6.28318531f * std::round(dphi[i] / 6.28318531f);
            dphi = add(dphi, t.constant(wrap));
            const Var<float> r = sqrt(add_scalar(add(square(deta), square(dphi)), 1e-8f));
            const Var<float> stretched = add_scalar(scale(softplus(scale(add_scalar(r, -dr_min), 10.0f)), 0.1f), dr_min);
            const Var<float> f = div(stretched, r);
            c[4] = add(c[1], mul(deta, f));
            c[5] = add(c[2], mul(dphi, f));
        }
        // The second lepton's pT from m_ll (inside the real sample's m_ll window), as the
        // photon's from m_llg below: m_ll^2 = 2 pT_1 pT_2 (cosh deta - cos dphi).
        const Var<float> mll = add_scalar(scale(sigmoid(c[3]), mll_hi - mll_lo), mll_lo);
        c[3] = clamp(div(square(mll), scale(add_scalar(mul(c[0], pair_factor(c[1], c[2], c[4], c[5])), 1e-6f), 2.0f)), 1e-3f, 1e5f);
        // The photon's pT from m_llg: positive and finite for any network output.
        const Var<float> m = add_scalar(scale(sigmoid(c[6]), m_hi - m_lo), m_lo);
        const Var<float> mll2 = square(mll);
        const Var<float> k = add(mul(c[0], pair_factor(c[1], c[2], c[7], c[8])), mul(c[3], pair_factor(c[4], c[5], c[7], c[8])));
        const Var<float> num = clamp(sub(square(m), mll2), 1.0f, 1e9f);
        c[6] = clamp(div(num, scale(add_scalar(k, 1e-6f), 2.0f)), 1e-3f, 1e5f);
        // The jet counts first, as the simulation draws them: from the network's outputs plus a
        // learned linear function of pT_llg (the simulation's jet rate grows with pT_llg, which the
        // network would otherwise have to compute from the objects it outputs).
        Var<float> px = mul(c[0], cos(c[2])), py = mul(c[0], sin(c[2]));
        for (std::size_t j : {std::size_t{3}, std::size_t{6}}) {
            px = add(px, mul(c[j], cos(c[j + 2])));
            py = add(py, mul(c[j], sin(c[j + 2])));
        }
        const Var<float> pt_llg = sqrt(add_scalar(add(square(px), square(py)), 1e-6f));
        const Var<float> pre = add(concat(c[11], c[12], 1), (*count_head)(scale(pt_llg, 1.0f / 50)));
        const Var<float> n_jets = poisson_straight_through(softplus(slice(pre, 1, 0, 1)), slice(nz, 1, 1, 1));
        const Var<float> n_central = binomial_straight_through(n_jets, sigmoid(slice(pre, 1, 1, 1)), slice(nz, 1, 2, 1));
        // Then missing E_T as the simulation makes it, given the jet count, as a vector: the
        // recoil's mismeasured part, -d pT_llg, d the response deficit, plus resolution, sigma times
        // standard normal numbers (noise columns 3 and 4). d = d0 + spread * normal (column 5), and
        // d0, the spread and sigma are trained linear functions of (n_jets, n_jets > 0) (met_head,
        // starting at d0 = 0.15, spread 0.15, sigma 8 GeV): the simulation's response differs with
        // and without jets and its resolution grows with the jet count. Neither depends on the
        // network's other outputs, as in the simulation (with network outputs for d and the
        // resolution, missing E_T correlated with eta_llg and m_llg by 0.15, real 0).
        Tensor<float> jets(Shape{n_jets.shape()[0], 2});  // (n_jets, 1 if n_jets > 0): the drawn integers
        for (std::size_t i = 0; i < jets.dim(0); ++i) {
            jets(i, 0) = std::round(n_jets[i]);
            jets(i, 1) = jets(i, 0) > 0 ? 1.0f : 0.0f;
        }
        const Var<float> mh = (*met_head)(t.constant(jets));
        const Var<float> spread = softplus(add_scalar(slice(mh, 1, 1, 1), -1.8f));  // softplus(-1.8) = 0.15
        const Var<float> deficit = add(add_scalar(slice(mh, 1, 0, 1), 0.15f), mul(spread, slice(nz, 1, 5, 1)));
        const Var<float> sigma = scale(softplus(add_scalar(slice(mh, 1, 2, 1), 0.5413f)), 8.0f);  // softplus(0.5413) = 1
        const Var<float> mex = add(neg(mul(deficit, px)), mul(sigma, slice(nz, 1, 3, 1)));
        const Var<float> mey = add(neg(mul(deficit, py)), mul(sigma, slice(nz, 1, 4, 1)));
        c[9] = sqrt(add_scalar(add(square(mex), square(mey)), 1e-6f));
        c[10] = atan2_safe(mey, mex, c[9]);
        c.pop_back();
        // The kinematic features (the counts pass through zgamma_features unchanged), then the counts.
        const Var<float> f0 = hep::zgamma_features(concat(c, 1));
        const Var<float> f = concat(slice(f0, 1, 0, 16), concat(n_jets, n_central, 1), 1);
        return mul(sub(f, t.view(feature_min)), t.view(feature_scale));
    }
};

/// n generated events (scaled features), in chunks, without gradients.
Tensor<float> sample_generator(Sequential<float>& gen, const EventLayer& events, std::size_t n, std::size_t latent, Rng& rng) {
    Tape<float> tape;
    NoGradGuard<float> guard(tape);
    Tensor<float> out, z, rot;
    std::size_t k = 0;
    for (std::size_t start = 0; start < n; start += 4096) {
        const std::size_t m = std::min<std::size_t>(4096, n - start);
        z.resize(Shape{m, latent});
        rot.resize(Shape{m, noise_width(events.sim)});
        fill_normal(z, rng);
        fill_noise(rot, rng);
        tape.clear();
        const Var<float> x = events(gen(tape.view(z)), rot);
        if (start == 0) out = Tensor<float>(Shape{n, x.shape()[1]});
        k = x.shape()[1];
        std::copy(x.data(), x.data() + m * k, out.data() + start * k);
    }
    return out;
}

// ---- quality ----------------------------------------------------------------------------------

/// The axis label of a feature with its unit: masses, momenta and energies in GeV, angles in
/// radians, pseudorapidities, ratios and counts dimensionless.
std::string feature_axis_label(const std::string& name) {
    if (name.rfind("n_", 0) == 0) return name + " (count)";
    if (name.rfind("eta", 0) == 0) return name + " (dimensionless)";
    if (name.rfind("phi", 0) == 0 || name.rfind("dphi", 0) == 0) return name + " [rad]";
    if (name == "dr_ll" || name == "pt_ll_over_m_llg") return name + " (dimensionless)";
    return name + " [GeV]";  // m_, pt_, e_, met
}

/// 1-D Wasserstein distance between two equal-size samples: the mean |difference| of the
/// sorted values (the area between the two empirical CDFs).
double wasserstein_1d(std::vector<double> a, std::vector<double> b) {
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    double s = 0;
    for (std::size_t i = 0; i < a.size(); ++i) s += std::fabs(a[i] - b[i]);
    return s / static_cast<double>(a.size());
}

std::vector<double> column(const Tensor<float>& x, std::size_t j, std::size_t n) {
    std::vector<double> c(n);
    for (std::size_t i = 0; i < n; ++i) c[i] = x(i, j);
    return c;
}

/// Pearson correlation matrix (features x features, row-major) of the first n rows.
/// Correlation matching: half the summed squared difference between the batch's feature
/// correlation matrix and the training events' (a moment-matching term beside the critic, as the
/// MMD term of Otten et al., arXiv:1901.00875, adds the dilepton mass spectrum to theirs). The
/// critic sees one event at a time through its features and learns pairwise correlations late;
/// this term asks for them from the first step.
Var<float> correlation_penalty(const Var<float>& x, const Var<float>& target) {
    const float n = static_cast<float>(x.shape()[0]);
    const Var<float> xc = sub(x, mean(x, 0, /*keepdim=*/true));
    const Var<float> cov = scale(matmul(transpose(xc), xc), 1.0f / n);
    const Var<float> sd = sqrt(add_scalar(mean(square(xc), 0, /*keepdim=*/true), 1e-8f));
    const Var<float> corr = div(cov, matmul(transpose(sd), sd));
    return scale(sum(square(sub(corr, target))), 0.5f);
}

std::vector<double> correlation_matrix(const Tensor<float>& x, std::size_t n) {
    const std::size_t d = x.dim(1);
    std::vector<double> mean(d, 0), cov(d * d, 0);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < d; ++j) mean[j] += x(i, j);
    for (double& m : mean) m /= static_cast<double>(n);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t a = 0; a < d; ++a)
            for (std::size_t b = a; b < d; ++b) cov[a * d + b] += (x(i, a) - mean[a]) * (x(i, b) - mean[b]);
    std::vector<double> c(d * d);
    for (std::size_t a = 0; a < d; ++a)
        for (std::size_t b = a; b < d; ++b) {
            const double den = std::sqrt(cov[a * d + a] * cov[b * d + b]);
            c[a * d + b] = c[b * d + a] = den > 0 ? cov[a * d + b] / den : (a == b ? 1.0 : 0.0);
        }
    return c;
}

struct Quality {
    std::vector<double> w1;  // per feature
    double mean_w1 = 0, max_w1 = 0, max_corr_diff = 0;
    std::size_t worst_feature = 0;  // of the largest W1
    std::size_t corr_a = 0, corr_b = 0;  // the pair of the largest correlation difference
    std::vector<double> corr_real, corr_fake;
    double two_sample_auc = std::nan("");  // final check only
    // Diagnostics of the final check: the test on each feature alone (which features a classifier
    // uses), and on the events with the generated jet counts rounded to integers (real counts are).
    std::vector<double> auc_per_feature;
    double auc_counts_rounded = std::nan("");
};

constexpr double kMaxW1 = 0.05, kMaxCorrDiff = 0.1, kMaxAuc = 0.6;
bool accepted(const Quality& q) { return q.max_w1 < kMaxW1 && q.max_corr_diff < kMaxCorrDiff && q.two_sample_auc < kMaxAuc; }

/// A generator's score on validation events: the largest of the three figures, each as a fraction
/// of its acceptance limit (AUC above 0.5), so below 1 when all three are met. Ordinary model
/// selection: the game's late oscillations move the correlations by 0.1-0.3 between checks.
double selection_score(const Quality& q) {
    return std::max({q.max_w1 / kMaxW1, q.max_corr_diff / kMaxCorrDiff, (q.two_sample_auc - 0.5) / (kMaxAuc - 0.5)});
}
/// A scored set of weights; too few validation events cannot tell checkpoints apart.
struct Checkpoint {
    std::size_t step;
    double max_w1, max_corr_diff, two_sample_auc, score;
};
constexpr std::size_t kMinValidation = 200;

/// Classifier two-sample test (arXiv 1610.06545): a small network (features -> 64 -> 64 -> 1)
/// learns to tell the first half of the generated events from the first half of the real ones;
/// its ROC AUC on the other halves is 0.5 when the two samples cannot be told apart. Returned as
/// max(AUC, 1 - AUC).
double two_sample_auc(const Tensor<float>& real, const Tensor<float>& fake, std::size_t n, std::uint64_t seed) {
    const std::size_t d = real.dim(1), half = n / 2;
    Rng rng(seed);
    Sequential<float> net;
    net.add<Dense<float>>(d, 64, rng, Activation::relu).add<Dense<float>>(64, 64, rng, Activation::relu).add<Dense<float>>(64, 1, rng);
    optim::Adam<float> opt(net.parameters(), 1e-3f);
    const std::size_t batch = 256, steps = std::max<std::size_t>(500, 6 * half / batch);  // ~3 epochs of both halves
    Tensor<float> xb(Shape{batch, d}), yb(Shape{batch, 1});
    Tape<float> tape;
    for (std::size_t s = 0; s < steps; ++s) {
        for (std::size_t i = 0; i < batch; ++i) {
            const bool gen = i % 2 == 0;
            const std::size_t r = static_cast<std::size_t>(rng.uniform_int(half));
            const Tensor<float>& src = gen ? fake : real;
            std::copy(&src(r, 0), &src(r, 0) + d, &xb(i, 0));
            yb[i] = gen ? 1.f : 0.f;
        }
        tape.clear();
        const Var<float> l = bce_with_logits(net(tape.view(xb)), tape.view(yb));
        backward(l);
        opt.step();
        opt.zero_grad();
    }
    const std::size_t m = n - half;
    Tensor<float> xt(Shape{2 * m, d});
    std::vector<double> label(2 * m);
    for (std::size_t i = 0; i < m; ++i) {
        std::copy(&real(half + i, 0), &real(half + i, 0) + d, &xt(i, 0));
        std::copy(&fake(half + i, 0), &fake(half + i, 0) + d, &xt(m + i, 0));
        label[m + i] = 1.0;
    }
    NoGradGuard<float> guard(tape);
    tape.clear();
    const Var<float> p = net(tape.view(xt));
    const std::vector<double> score(p.data(), p.data() + p.size());
    const double auc = metrics::roc_auc(score, label);
    return std::max(auc, 1.0 - auc);
}

/// Column j of the first n rows as an (n, 1) tensor.
Tensor<float> column_tensor(const Tensor<float>& x, std::size_t j, std::size_t n) {
    Tensor<float> c(Shape{n, 1});
    for (std::size_t i = 0; i < n; ++i) c[i] = x(i, j);
    return c;
}

/// Scaled events with the jet counts (the last two features) rounded to integers at least 0.
Tensor<float> round_counts(const Tensor<float>& scaled, const data::MinMaxScaler& scaler) {
    Tensor<float> x = scaler.inverse_transform(scaled);
    const std::size_t d = x.dim(1);
    for (std::size_t i = 0; i < x.dim(0); ++i)
        for (std::size_t j = d - 2; j < d; ++j) x(i, j) = std::max(0.0f, std::round(x(i, j)));
    return scaler.transform(x);
}

Quality compare(const Tensor<float>& real, const Tensor<float>& fake, std::size_t n) {
    Quality q;
    const std::size_t d = real.dim(1);
    for (std::size_t j = 0; j < d; ++j) q.w1.push_back(wasserstein_1d(column(real, j, n), column(fake, j, n)));
    q.mean_w1 = std::accumulate(q.w1.begin(), q.w1.end(), 0.0) / static_cast<double>(d);
    q.worst_feature = static_cast<std::size_t>(std::max_element(q.w1.begin(), q.w1.end()) - q.w1.begin());
    q.max_w1 = q.w1[q.worst_feature];
    q.corr_real = correlation_matrix(real, n);
    q.corr_fake = correlation_matrix(fake, n);
    for (std::size_t k = 0; k < d * d; ++k)
        if (std::fabs(q.corr_real[k] - q.corr_fake[k]) > q.max_corr_diff) {
            q.max_corr_diff = std::fabs(q.corr_real[k] - q.corr_fake[k]);
            q.corr_a = k / d, q.corr_b = k % d;
        }
    return q;
}

/// Fractions of generated events (physical units) that no simulation makes: m_llg or m_ll outside
/// the real sample's range, jet counts that are not whole numbers at least 0, more central jets
/// than jets. Tolerances of float rounding only (1e-3 GeV; 1e-4 on a count after the scaling's round
/// trip).
struct Validity {
    double m_llg_outside = 0, m_ll_outside = 0, counts_not_integer = 0, central_above_total = 0;
    double any() const { return std::max({m_llg_outside, m_ll_outside, counts_not_integer, central_above_total}); }
};
Validity validity(const Tensor<float>& fake, const data::MinMaxScaler& scaler, std::size_t n) {
    Validity v;
    const auto outside = [&](std::size_t i, std::size_t j) {
        return fake(i, j) < scaler.data_min()[j] - 1e-3 || fake(i, j) > scaler.data_max()[j] + 1e-3;
    };
    const auto not_count = [](float x) { return !(x > -1e-4f) || std::fabs(x - std::round(x)) > 1e-4f * std::max(1.0f, x); };
    for (std::size_t i = 0; i < n; ++i) {
        v.m_llg_outside += outside(i, 0);
        v.m_ll_outside += outside(i, 5);
        v.counts_not_integer += not_count(fake(i, 16)) || not_count(fake(i, 17));
        v.central_above_total += std::round(fake(i, 17)) > std::round(fake(i, 16));
    }
    for (double* f : {&v.m_llg_outside, &v.m_ll_outside, &v.counts_not_integer, &v.central_above_total}) *f /= static_cast<double>(n);
    return v;
}

// ---- history and summary ----------------------------------------------------------------------

struct History {
    std::vector<double> step, critic_loss, gen_loss, w_estimate, gp, grad_norm, mean_w1, max_w1, max_corr_diff;
};

void write_json(const std::string& path, const Options& o, const std::string& source, const std::vector<std::string>& names,
                const Quality& q, const Validity& v, const Checkpoint* chosen, std::size_t n_val, double grad_norm, double seconds_training,
                double seconds) {
    std::ofstream f(path);
    if (!f) throw std::runtime_error("cannot write '" + path + "'");
    f.precision(8);
    f << "{\n  \"events\": " << json_string(source) << ",\n  \"seed\": " << o.seed << ",\n  \"steps\": " << o.steps
      << ",\n  \"n_critic\": " << o.n_critic << ",\n  \"gp_weight\": " << o.gp_weight << ",\n  \"corr_weight\": " << o.corr_weight << ",\n  \"batch\": " << o.batch << ",\n  \"ema\": " << o.ema << ",\n  \"lr\": " << o.lr << ",\n  \"lr_decay_from\": " << o.lr_decay_from << ",\n  \"generator_outputs\": " << json_string(o.direct ? "18 features" : (o.sim_variables ? "14 simulation variables" : "13 independent numbers"))
      << ",\n  \"select_every\": " << o.select_every << ",\n  \"selection\": ";
    if (chosen)
        f << "{\"validation_events\": " << n_val << ", \"step\": " << chosen->step << ", \"validation_max_w1\": " << chosen->max_w1
          << ", \"validation_max_corr_diff\": " << chosen->max_corr_diff << ", \"validation_two_sample_auc\": " << chosen->two_sample_auc
          << ", \"validation_score\": " << chosen->score << "}";
    else
        f << "null";
    f << ",\n  \"training_seconds\": " << seconds_training << ",\n  \"seconds\": " << seconds << ",\n  \"mean_w1\": " << q.mean_w1
      << ",\n  \"max_w1\": " << q.max_w1 << ",\n  \"max_w1_feature\": " << json_string(names[q.worst_feature])
      << ",\n  \"max_corr_diff\": " << q.max_corr_diff << ",\n  \"max_corr_diff_pair\": [" << json_string(names[q.corr_a]) << ", " << json_string(names[q.corr_b]) << "]" << ",\n  \"two_sample_auc\": " << q.two_sample_auc
      << ",\n  \"critic_grad_norm\": " << grad_norm << ",\n  \"acceptance\": {\"max_w1_below\": " << kMaxW1
      << ", \"max_corr_diff_below\": " << kMaxCorrDiff << ", \"two_sample_auc_below\": " << kMaxAuc << "}"
      << ",\n  \"accepted\": " << (accepted(q) ? "true" : "false") << ",\n  \"w1\": {";
    for (std::size_t j = 0; j < names.size(); ++j) f << (j ? ", " : "") << json_string(names[j]) << ": " << q.w1[j];
    f << "},\n  \"two_sample_auc_per_feature\": {";
    for (std::size_t j = 0; j < names.size(); ++j) f << (j ? ", " : "") << json_string(names[j]) << ": " << q.auc_per_feature[j];
    f << "},\n  \"two_sample_auc_counts_rounded\": " << q.auc_counts_rounded << ",\n  \"invalid_event_fractions\": {\"m_llg_outside_window\": "
      << v.m_llg_outside << ", \"m_ll_outside_window\": " << v.m_ll_outside << ", \"jet_counts_not_integer\": " << v.counts_not_integer
      << ", \"n_central_above_n_jets\": " << v.central_above_total << "}\n}\n";
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse_args(argc, argv);
    return examples::run("wgan_gp", o.out, Progress{o.quiet, 7}, [&](const Progress& progress) {
        simd::set_num_threads(o.threads);
        const std::vector<std::string>& names = hep::zgamma_feature_names();

        // ---- data: split, min-max scaling ---------------------------------------------------------
        std::string source;
        const Tensor<float> events = load_events(o, source);
        const std::size_t nf = events.dim(1);
        const data::TrainTestSplit parts = data::train_test_split(events.dim(0), 0.2, o.seed);
        // The validation events that choose the generator's weights (--select-every): the last of
        // the shuffled training events, so that the test events stay untouched by any choice.
        std::vector<std::size_t> train_rows = parts.train;
        const std::size_t n_val = o.select_every > 0 ? std::min(o.eval_events / 2, train_rows.size() / 10) : 0;
        const bool selecting = n_val >= kMinValidation;
        const std::vector<std::size_t> val_rows(train_rows.end() - static_cast<std::ptrdiff_t>(selecting ? n_val : 0), train_rows.end());
        train_rows.resize(train_rows.size() - val_rows.size());
        data::MinMaxScaler scaler;  // to [0, 1], fitted on the training events
        const Tensor<float> train = scaler.fit_transform(data::take_rows(events, train_rows));
        const Tensor<float> held_out = scaler.transform(data::take_rows(events, parts.test));
        const Tensor<float> validation = selecting ? scaler.transform(data::take_rows(events, val_rows)) : Tensor<float>();
        const std::size_t n_eval = std::min(o.eval_events, held_out.dim(0));
        progress.say("events: " + source + "; " + std::to_string(train.dim(0)) + " train, " + std::to_string(val_rows.size()) +
                     " validation, " + std::to_string(held_out.dim(0)) + " test");
        if (o.select_every > 0 && !selecting)
            progress.say("only " + std::to_string(n_val) + " validation events (fewer than " + std::to_string(kMinValidation) +
                         "): no weight selection, the events come from the last weights");

        // ---- networks and optimisers --------------------------------------------------------------
        Rng rng(o.seed * 7919 + 5);
        Sequential<float> gen = make_generator(o.latent, o.direct ? nf : (o.sim_variables ? kGenOutputs : hep::zgamma_num_dof), rng);
        Rng head_rng(o.seed + 13);  // its own stream: the default run draws the same numbers as without the head
        Dense<float> count_head(1, 2, head_rng), met_head(2, 3, head_rng);
        for (Dense<float>* d : {&count_head, &met_head}) {
            d->weight.value.fill(0.0f);
            d->bias.value.fill(0.0f);
        }
        if (o.sim_variables) {
            // The jet rate starts at the real training events' least-squares line n_jets = i + s pT_llg
            // (the head then trains): found from the critic's weak straight-through signal alone,
            // the counts' correlation with pT_llg stayed at half the real one for thousands of steps.
            double sx = 0, sy = 0, sxx = 0, sxy = 0;
            for (const std::size_t r : train_rows) {
                const double x = events(r, 1), y = events(r, 16);
                sx += x, sy += y, sxx += x * x, sxy += x * y;
            }
            const double n = static_cast<double>(train_rows.size()), den = n * sxx - sx * sx;
            const double slope = den > 0 && std::isfinite(den) ? (n * sxy - sx * sy) / den : 0.0;  // 0 for a constant pT_llg
            const double icpt = std::max(0.05, (sy - slope * sx) / n);
            count_head.weight.value(0, 0) = static_cast<float>(50 * slope);  // the head's input is pT_llg / 50 GeV
            count_head.bias.value[0] = static_cast<float>(std::log(std::expm1(icpt)) - 0.5);  // softplus^-1, minus the 0.5 offset
        }
        const EventLayer event_layer(scaler, nf, o.direct, o.sim_variables, count_head, met_head);
        Sequential<float> critic = make_critic(nf, rng);
        Sequential<float> gen_avg = gen;  // deep copy: the weight average (used when --ema > 0)
        Sequential<float>& sampler = o.ema > 0 ? gen_avg : gen;
        optim::Adam<float> opt_g(gen.parameters(), static_cast<float>(o.lr), static_cast<float>(o.beta1), static_cast<float>(o.beta2));
        // The two heads' 13 numbers move 30 times faster than the networks' weights: at the
        // networks' rate they would need thousands of steps to reach the jet rate's pT dependence.
        std::vector<Parameter<float>*> head_params = count_head.parameters();
        for (Parameter<float>* p : met_head.parameters()) head_params.push_back(p);
        optim::Adam<float> opt_h(head_params, static_cast<float>(30 * o.lr), static_cast<float>(o.beta1), static_cast<float>(o.beta2));
        optim::Adam<float> opt_c(critic.parameters(), static_cast<float>(o.lr), static_cast<float>(o.beta1), static_cast<float>(o.beta2));
        progress.say("generator " + std::to_string(gen.num_parameters()) + " parameters, critic " + std::to_string(critic.num_parameters()) +
                     "; lambda_gp = " + fmt(o.gp_weight) + ", n_critic = " + std::to_string(o.n_critic));

        // The weights the events come from (the generator's or its average's, and the two heads'),
        // and a copy of them at the best validation score so far.
        std::vector<Parameter<float>*> model = sampler.parameters();
        for (Parameter<float>* p : head_params) model.push_back(p);
        std::vector<std::vector<float>> best_weights;
        std::vector<Checkpoint> checkpoints;
        std::size_t best = 0;  // index into checkpoints

        // The training events' correlation matrix, the correlation-matching term's target.
        Tensor<float> corr_target(Shape{nf, nf});
        {
            const std::vector<double> c = correlation_matrix(train, train.dim(0));
            for (std::size_t k = 0; k < nf * nf; ++k) corr_target[k] = static_cast<float>(c[k]);
        }

        Tape<float> tape;
        Tensor<float> real(Shape{o.batch, nf}), z(Shape{o.batch, o.latent}), xhat(Shape{o.batch, nf}), rot(Shape{o.batch, noise_width(o.sim_variables)});
        History h;
        double acc_c = 0, acc_g = 0, acc_w = 0, acc_gp = 0, acc_norm = 0;
        std::size_t acc_n = 0;
        Quality q;
        double seconds_training = 0;

        // Constant learning rates, then a linear fall to 0 over the last (1 - lr_decay_from) of the
        // steps: the game's late oscillations die out instead of drifting the generator off.
        const double decay_start = o.lr_decay_from * static_cast<double>(o.steps);
        for (std::size_t step = 1; step <= o.steps; ++step) {
            const auto t_step = std::chrono::steady_clock::now();
            if (static_cast<double>(step) > decay_start) {
                const double f = (static_cast<double>(o.steps + 1 - step)) / (static_cast<double>(o.steps + 1) - decay_start);
                opt_c.set_scheduled_learning_rate(static_cast<float>(o.lr * f));
                opt_g.set_scheduled_learning_rate(static_cast<float>(o.lr * f));
                opt_h.set_scheduled_learning_rate(static_cast<float>(30 * o.lr * f));
            }
            const simd::FlushDenormals flush;  // subnormal gradients stall Intel cores
            // ---- critic: n_critic steps ---------------------------------------------------------
            for (std::size_t k = 0; k < o.n_critic; ++k) {
                for (std::size_t i = 0; i < o.batch; ++i) {  // a random batch of real events
                    const std::size_t r = static_cast<std::size_t>(rng.uniform_int(train.dim(0)));
                    std::copy(&train(r, 0), &train(r, 0) + nf, &real(i, 0));
                }
                fill_normal(z, rng);
                fill_noise(rot, rng);
                tape.clear();
                Var<float> fake;
                {
                    NoGradGuard<float> no_grad(tape);  // the generator is fixed during critic steps
                    fake = event_layer(gen(tape.view(z)), rot);
                }
                // Interpolates x_hat = a real + (1 - a) fake, a ~ U[0, 1] per event.
                for (std::size_t i = 0; i < o.batch; ++i) {
                    const float a = static_cast<float>(rng.uniform());
                    for (std::size_t j = 0; j < nf; ++j) xhat(i, j) = a * real(i, j) + (1 - a) * fake.data()[i * nf + j];
                }
                const Var<float> d_real = critic(tape.view(real));
                const Var<float> d_fake = critic(fake);
                // Gradient penalty: the critic's input gradient at x_hat, recorded (create_graph)
                // so that the penalty can itself be differentiated in the critic's weights.
                const Var<float> x_hat = tape.variable(xhat);
                const Var<float> g = grad(sum(critic(x_hat)), x_hat, /*create_graph=*/true);
                const Var<float> norm = sqrt(add_scalar(sum(square(g), 1), 1e-12f));  // per event
                const Var<float> gp = mean(square(add_scalar(norm, -1.0f)));
                const Var<float> l_critic = add(loss::wgan_critic_loss(d_real, d_fake), scale(gp, static_cast<float>(o.gp_weight)));
                backward(l_critic);
                opt_c.step();
                opt_c.zero_grad();
                if (k + 1 == o.n_critic) {
                    acc_c += l_critic.item();
                    acc_w += mean(d_real).item() - mean(d_fake).item();
                    acc_gp += gp.item();
                    acc_norm += mean(norm).item();
                }
            }
            // ---- generator: one step ------------------------------------------------------------
            fill_normal(z, rng);
            fill_noise(rot, rng);
            tape.clear();
            const Var<float> fake_g = event_layer(gen(tape.view(z)), rot);
            const Var<float> l_gen = loss::wgan_generator_loss(critic(fake_g));
            backward(o.corr_weight > 0 ? add(l_gen, scale(correlation_penalty(fake_g, tape.constant(corr_target)),
                                                             static_cast<float>(o.corr_weight)))
                                       : l_gen);
            opt_g.step();
            if (o.sim_variables) opt_h.step();
            if (o.ema > 0) update_average(gen_avg, gen, o.ema, step);
            opt_g.zero_grad();
            opt_h.zero_grad();
            critic.zero_grad();  // the critic's gradients from this pass are not used
            acc_g += l_gen.item();
            ++acc_n;
            seconds_training += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_step).count();

            // ---- weight selection on the validation events --------------------------------------
            if (selecting && static_cast<double>(step) > decay_start && (step % o.select_every == 0 || step == o.steps)) {
                Rng val_rng(o.seed + 199);  // the same latent points every time
                const Tensor<float> fake = sample_generator(sampler, event_layer, n_val, o.latent, val_rng);
                Quality v = compare(validation, fake, n_val);
                v.two_sample_auc = two_sample_auc(validation, fake, n_val, o.seed + 17);
                checkpoints.push_back({step, v.max_w1, v.max_corr_diff, v.two_sample_auc, selection_score(v)});
                progress.say("step " + std::to_string(step) + " on validation events: max W1 " + fmt(v.max_w1, 3) + ", max |d corr| " +
                             fmt(v.max_corr_diff, 3) + " (" + names[v.corr_a] + ", " + names[v.corr_b] + "), two-sample AUC " +
                             fmt(v.two_sample_auc, 3) + ", score " + fmt(checkpoints.back().score, 3));
                if (checkpoints.size() == 1 || checkpoints.back().score < checkpoints[best].score) {
                    best = checkpoints.size() - 1;
                    best_weights.resize(model.size());
                    for (std::size_t k = 0; k < model.size(); ++k)
                        best_weights[k].assign(model[k]->value.data(), model[k]->value.data() + model[k]->size());
                }
            }

            // ---- quality check ------------------------------------------------------------------
            if (step % o.eval_every == 0 || step == o.steps) {
                Rng eval_rng(o.seed + 99);  // the same latent points every time
                const Tensor<float> fake = sample_generator(sampler, event_layer, n_eval, o.latent, eval_rng);
                q = compare(held_out, fake, n_eval);
                const double n = static_cast<double>(acc_n);
                h.step.push_back(static_cast<double>(step));
                h.critic_loss.push_back(acc_c / n);
                h.gen_loss.push_back(acc_g / n);
                h.w_estimate.push_back(acc_w / n);
                h.gp.push_back(acc_gp / n);
                h.grad_norm.push_back(acc_norm / n);
                h.mean_w1.push_back(q.mean_w1);
                h.max_w1.push_back(q.max_w1);
                h.max_corr_diff.push_back(q.max_corr_diff);
                acc_c = acc_g = acc_w = acc_gp = acc_norm = 0;
                acc_n = 0;
                progress.say("step " + std::to_string(step) + "/" + std::to_string(o.steps) + ": critic " + fmt(h.critic_loss.back()) +
                             ", W estimate " + fmt(h.w_estimate.back()) + ", |grad| " + fmt(h.grad_norm.back(), 3) + ", mean W1 " +
                             fmt(q.mean_w1, 3) + ", max |d corr| " + fmt(q.max_corr_diff, 3) + " (" + names[q.corr_a] + ", " + names[q.corr_b] + ") (" +
                             fmt(seconds_training / static_cast<double>(step), 3) + " s/step), max W1 " + fmt(q.max_w1, 3) +
                             " (" + names[q.worst_feature] + ")");
            }
        }

        // ---- the chosen weights -------------------------------------------------------------------
        if (!checkpoints.empty()) {
            for (std::size_t k = 0; k < model.size(); ++k) std::copy(best_weights[k].begin(), best_weights[k].end(), model[k]->value.data());
            const Checkpoint& c = checkpoints[best];
            progress.say("weights of step " + std::to_string(c.step) + " (best of " + std::to_string(checkpoints.size()) +
                         " validation scores): max W1 " + fmt(c.max_w1, 3) + ", max |d corr| " + fmt(c.max_corr_diff, 3) +
                         ", two-sample AUC " + fmt(c.two_sample_auc, 3));
            Rng eval_rng(o.seed + 99);
            q = compare(held_out, sample_generator(sampler, event_layer, n_eval, o.latent, eval_rng), n_eval);
        }

        // ---- summary ------------------------------------------------------------------------------
        {
            Rng ts_rng(o.seed + 99);  // the events of the last quality check
            const Tensor<float> fake = sample_generator(sampler, event_layer, n_eval, o.latent, ts_rng);
            q.two_sample_auc = two_sample_auc(held_out, fake, n_eval, o.seed + 7);
            for (std::size_t j = 0; j < nf; ++j)
                q.auc_per_feature.push_back(
                    two_sample_auc(column_tensor(held_out, j, n_eval), column_tensor(fake, j, n_eval), n_eval, o.seed + 7));
            q.auc_counts_rounded = two_sample_auc(held_out, round_counts(fake, scaler), n_eval, o.seed + 7);
        }
        const double grad_norm = h.grad_norm.back();
        std::string chosen = o.ema > 0 ? "the generator's weight average (decay " + fmt(o.ema) + ")" : "the generator's weights";
        if (checkpoints.empty()) {
            chosen += " of the last step";
        } else {
            const Checkpoint& c = checkpoints[best];
            chosen += " of step " + std::to_string(c.step) + ", the best of " + std::to_string(checkpoints.size()) + " scored every " +
                      std::to_string(o.select_every) + " steps while the learning rates fell, on " + std::to_string(n_val) +
                      " validation events split off the training events (max W1 " + fmt(c.max_w1, 3) + ", max |d corr| " +
                      fmt(c.max_corr_diff, 3) + ", two-sample AUC " + fmt(c.two_sample_auc, 3) + "); the figures below are on " +
                      std::to_string(n_eval) + " test events no choice saw";
        }
        std::printf("\nWGAN-GP on %s\n%zu generator steps x %zu critic steps, lambda_gp = %g, batch %zu: %.1f s of training "
                    "(%.3f s per generator step)\ngenerated events from %s\n\n",
                    source.c_str(), o.steps, o.n_critic, o.gp_weight, o.batch, seconds_training,
                    seconds_training / static_cast<double>(o.steps),
                    chosen.c_str());
        if (o.sim_variables)
            std::printf("the generator's events: m_llg and m_ll drawn inside the real sample's ranges [%.4g, %.4g] and [%.4g, %.4g] GeV "
                        "(the photon's and the second lepton's pT follow from them), integer jet counts with n_central_jets <= n_jets\n\n",
                        static_cast<double>(event_layer.m_lo), static_cast<double>(event_layer.m_hi),
                        static_cast<double>(event_layer.mll_lo), static_cast<double>(event_layer.mll_hi));
        std::printf("%-18s %14s %20s\n", "feature", "W1 (scaled)", "two-sample AUC alone");
        for (std::size_t j = 0; j < nf; ++j) std::printf("%-18s %14.4f %20.4f\n", names[j].c_str(), q.w1[j], q.auc_per_feature[j]);
        std::printf("%-18s %14.4f\n", "mean", q.mean_w1);
        std::printf("%-18s %14.4f   (%s; acceptance: < %g)\n", "largest", q.max_w1, names[q.worst_feature].c_str(), kMaxW1);
        std::printf("\nlargest |corr(real) - corr(generated)|: %.4f   (%s, %s: %.4f real, %.4f generated; acceptance: < %g)\n",
                q.max_corr_diff, names[q.corr_a].c_str(), names[q.corr_b].c_str(), q.corr_real[q.corr_a * nf + q.corr_b],
                q.corr_fake[q.corr_a * nf + q.corr_b], kMaxCorrDiff);
        std::printf("two-sample test: AUC of a classifier telling generated from real events: %.4f   (0.5: indistinguishable; "
                    "acceptance: < %g)\n", q.two_sample_auc, kMaxAuc);
        if (!o.sim_variables) std::printf("  (diagnostic: %.4f with the generated jet counts rounded to integers)\n", q.auc_counts_rounded);
        std::printf("critic's mean |grad_x C| at interpolates (last %zu steps): %.3f\n", o.eval_every, grad_norm);
        const bool pass = accepted(q);
        std::printf("acceptance (max W1 < %g, max |d corr| < %g, two-sample AUC < %g): %s\n", kMaxW1, kMaxCorrDiff, kMaxAuc,
                    pass ? "met" : "NOT met");
        Rng final_rng(o.seed + 99);  // the same events again
        const Tensor<float> fake_scaled = sample_generator(sampler, event_layer, n_eval, o.latent, final_rng);
        const Tensor<float> fake = scaler.inverse_transform(fake_scaled);
        const Validity valid = validity(fake, scaler, n_eval);
        std::printf("generated events no simulation makes: m_llg outside [%.4g, %.4g] GeV %.2f%%, m_ll outside [%.4g, %.4g] GeV "
                    "%.2f%%, jet counts not whole numbers %.2f%%, n_central_jets > n_jets %.2f%%\n",
                    scaler.data_min()[0], scaler.data_max()[0], 100 * valid.m_llg_outside, scaler.data_min()[5], scaler.data_max()[5],
                    100 * valid.m_ll_outside, 100 * valid.counts_not_integer, 100 * valid.central_above_total);

        // ---- files --------------------------------------------------------------------------------
        const Tensor<float> real_phys = scaler.inverse_transform(held_out);
        {
            std::vector<std::vector<double>> cols;
            for (std::size_t j = 0; j < nf; ++j) cols.push_back(column(fake, j, n_eval));
            io::write_csv(o.out + "/generated_events.csv", names, cols);
        }
        {
            std::vector<double> idx, w1, lo, hi;
            for (std::size_t j = 0; j < nf; ++j) {
                idx.push_back(static_cast<double>(j));
                w1.push_back(q.w1[j]);
                lo.push_back(scaler.data_min()[j]);
                hi.push_back(scaler.data_max()[j]);
            }
            io::write_csv(o.out + "/feature_distances.csv", {"feature_index", "w1_scaled", "train_min", "train_max"}, {idx, w1, lo, hi});
            std::vector<double> a, b, cr, cf;
            for (std::size_t i = 0; i < nf; ++i)
                for (std::size_t j = 0; j < nf; ++j) {
                    a.push_back(static_cast<double>(i));
                    b.push_back(static_cast<double>(j));
                    cr.push_back(q.corr_real[i * nf + j]);
                    cf.push_back(q.corr_fake[i * nf + j]);
                }
            io::write_csv(o.out + "/correlations.csv", {"i", "j", "corr_real", "corr_generated"}, {a, b, cr, cf});
            io::write_csv(o.out + "/history.csv",
                      {"step", "critic_loss", "generator_loss", "wasserstein_estimate", "gradient_penalty", "critic_grad_norm", "mean_w1",
                       "max_w1", "max_corr_diff"},
                      {h.step, h.critic_loss, h.gen_loss, h.w_estimate, h.gp, h.grad_norm, h.mean_w1, h.max_w1, h.max_corr_diff});
            std::vector<double> cs, cw, cc, ca, cscore;
            for (const Checkpoint& c : checkpoints) {
                cs.push_back(static_cast<double>(c.step));
                cw.push_back(c.max_w1);
                cc.push_back(c.max_corr_diff);
                ca.push_back(c.two_sample_auc);
                cscore.push_back(c.score);
            }
            io::write_csv(o.out + "/validation.csv", {"step", "max_w1", "max_corr_diff", "two_sample_auc", "score"}, {cs, cw, cc, ca, cscore});
        }

        // ---- plots --------------------------------------------------------------------------------
        using namespace tapir::io;
        {  // every feature, real vs generated, physical units
            Figure fig(1800, 900, 3, 6);
            fig.suptitle("Held-out real events vs WGAN-GP events (" + std::to_string(n_eval) + " each)");
            for (std::size_t j = 0; j < nf; ++j) {
                auto& ax = fig.axes(static_cast<int>(j / 6), static_cast<int>(j % 6));
                std::vector<double> r = column(real_phys, j, n_eval), f = column(fake, j, n_eval);
                std::vector<double> rs = r;
                std::sort(rs.begin(), rs.end());
                double lo = rs[rs.size() / 200], hi = rs[rs.size() - 1 - rs.size() / 200];  // central 99%
                const bool count = names[j] == "n_jets" || names[j] == "n_central_jets";
                if (count) lo = -0.5, hi = std::max(hi, 1.0) + 0.5;
                if (!(hi > lo)) hi = lo + 1;
                const std::size_t bins = count ? static_cast<std::size_t>(hi - lo) : 40;
                ax.histogram(r, bins, lo, hi, Style("real").fill(0.35), true);
                ax.histogram(f, bins, lo, hi, Style("WGAN-GP").width(1.6), true);
                ax.set_title(names[j] + "  (W1 " + fmt(q.w1[j], 2) + ")");
                ax.set_xlabel(feature_axis_label(names[j])).set_ylabel(count ? "fraction of events" : "normalised events per unit x");
                ax.legend(j == 0 ? Loc::best : Loc::none);  // one legend for the grid
            }
            fig.save(o.out + "/features.svg");
        }
        {  // both correlation matrices and their difference
            Figure fig(1950, 640, 1, 3);
            fig.suptitle("Feature correlations (held-out real events vs generated)");
            std::vector<double> diff(nf * nf);
            for (std::size_t k = 0; k < nf * nf; ++k) diff[k] = q.corr_fake[k] - q.corr_real[k];
            fig.axes(0, 0).heatmap(q.corr_real, nf, nf, names, names, -1, 1, "RdBu_r", "Pearson correlation").set_title("real");
            fig.axes(0, 1).heatmap(q.corr_fake, nf, nf, names, names, -1, 1, "RdBu_r", "Pearson correlation").set_title("WGAN-GP");
            fig.axes(0, 2)
                .heatmap(diff, nf, nf, names, names, -0.2, 0.2, "RdBu_r", "difference")
                .set_title("generated - real (max |d| = " + fmt(q.max_corr_diff, 3) + ")");
            fig.save(o.out + "/correlations.svg");
        }
        {  // losses and quality during training
            Figure fig(1500, 440, 1, 3);
            fig.suptitle("Training (averages over " + std::to_string(o.eval_every) + " generator steps)");
            auto& a = fig.axes(0, 0);
            a.line(h.step, h.critic_loss, Style("critic loss").width(2));
            a.line(h.step, h.gen_loss, Style("generator loss").width(2));
            a.line(h.step, h.w_estimate, Style("<C(real)> - <C(fake)>").width(2).dashed());
            a.set_xlabel("generator step").set_ylabel("loss (critic units)").set_title("Losses").legend();
            auto& b = fig.axes(0, 1);
            b.line(h.step, h.grad_norm, Style("mean |grad_x C| at interpolates").width(2));
            b.hline(1.0, Style("1 (Lipschitz bound)", "#777777").dashed());
            b.set_xlabel("generator step").set_ylabel("|grad_x C| (per scaled feature)").set_title("Critic gradient norm").legend();
            auto& c = fig.axes(0, 2);
            c.line(h.step, h.mean_w1, Style("mean W1 (scaled features)").width(2));
            c.line(h.step, h.max_w1, Style("largest W1 (scaled features)").width(2).dashed());
            c.line(h.step, h.max_corr_diff, Style("max |corr difference|").width(2));
            c.hline(0.05, Style("W1 target 0.05", "#1f77b4").dotted());
            c.hline(0.1, Style("correlation target 0.1", "#ff7f0e").dotted());
            c.set_log_y().set_xlabel("generator step").set_ylabel("distance (scaled features, dimensionless)").set_title("Quality on held-out events").legend();
            fig.save(o.out + "/training.svg");
        }
        write_json(o.out + "/summary.json", o, source, names, q, valid, checkpoints.empty() ? nullptr : &checkpoints[best], n_val, grad_norm,
                   seconds_training, progress.seconds());
        std::printf("\nwrote %s/{generated_events.csv, feature_distances.csv, correlations.csv, history.csv, validation.csv, summary.json, features.svg, "
                    "correlations.svg, training.svg} in %.1f s\n",
                    o.out.c_str(), progress.seconds());
        if (o.check && !pass) return 1;
        return 0;
    });
}
