// A semi-supervised resonance search in Z gamma -> l l gamma: a classifier learns to
// tell an unlabelled data sample from a background-only reference sample, its response is cut
// into slices, and the m_llg spectrum of each slice is fitted for a narrow resonance.
//
// 1. Two samples: the reference (labelled background: simulation, or a control region) and
//    the data (background plus, maybe, signal). Semi-supervised training (CWoLa, arXiv
//    1708.02949: plain cross-entropy with label 0 for reference, 1 for data; or learning from
//    label proportions, arXiv 1702.00414: the mean response of each batch fitted to an assumed
//    signal fraction). The optimal classifier of the two mixtures is monotone in S/B.
//    The network is 360-180-180-90-180-1 for 360 inputs, its widths scaled to the inputs.
//    Two folds: each half of the data is scored by the network trained on the other half.
// 2. Slices of the data's response, from the most signal-like down (equal numbers of events).
// 3. In each slice, binned Poisson fits of m_llg: background n0 exp(a x + b x^2) and background
//    plus a Gaussian of the detector resolution at each mass of a scan; the local significance
//    Z(m) = sign(n1) sqrt(2 (ln L_s+b - ln L_b)), and the slice's largest one.
// 4. The look-elsewhere effect from toy experiments: background-only pseudo-data drawn from each
//    slice's background fit and analysed the same way give the distribution of the largest local
//    significance under the null, hence the global p-value of the observed one.
//
// By default the network does not see m_llg (nor e_llg and pT_ll/m_llg, from which it could be
// rebuilt): a classifier that sees the mass can carve bumps into the background spectrum
// (--with-mass shows it). The program runs two experiments on generated events: background-only
// data (the fake-signal significances must follow the toys' null distribution) and the same data
// with a resonance injected (it must be found at its mass).
//
//   resonance_search [--data FILE] [--out DIR] [--signal N] [--method cwola|llp] ...   (--help)
#include <tapir/data/dataset.hpp>
#include <tapir/hep/zgamma.hpp>
#include <tapir/io/csv.hpp>
#include <tapir/io/svg.hpp>
#include <tapir/loss/label_proportions.hpp>
#include <tapir/loss/poisson_fit.hpp>
#include <tapir/metrics/metrics.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/optim/schedule.hpp>
#include <tapir/tapir.hpp>

#include "../common/cli.hpp"
#include "../common/json.hpp"
#include "../common/output_dir.hpp"

#include <algorithm>
#include <array>
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

struct Options : examples::DataOptions {  // --data: a CSV of the 18 features and 'sample' (0 reference, 1 data)
    std::size_t reference = 100000, background = 100000;  // generated events per sample
    std::size_t signal = 2000;     // injected resonance events (second experiment)
    double signal_mass = 150.0, resolution = 1.8;  // GeV
    std::string method = "cwola";  // or "llp"
    double llp_fraction = 0.015;   // assumed signal fraction of the data (llp)
    bool with_mass = false;        // let the network see m_llg, e_llg, pt_ll/m_llg
    double width_factor = 2.0;     // first hidden layer = width_factor x inputs
    std::size_t epochs = 8;
    std::size_t batch = 256;
    double lr = 1e-3, lr_decay = 3e-4;  // lr 1e-3 with (Keras) decay 3e-4
    std::size_t slices = 5;
    double scan_lo = 135.0, scan_hi = 165.0, scan_step = 1.0;  // GeV
    std::size_t toys = 200;        // per slice
    std::size_t null_experiments = 5;  // independent background-only data samples
};

constexpr double kMassLo = 130.0, kMassHi = 170.0;
constexpr std::size_t kBins = 40;
/// Fit variable: x = (m - 150 GeV) / 20 GeV keeps a and b of order one.
constexpr double kCentre = 150.0, kScale = 20.0;

const examples::Cli cli("resonance_search",
                         "resonance_search [options]\n"
                         "  --data FILE          CSV with the 18 feature columns (README) and 'sample' (0 reference, 1 data)\n"
                         "  --out DIR            output directory (default .)\n"
                         "  --reference N        generated reference (background) events (default 100000)\n"
                         "  --background N       generated background events in the data (default 100000)\n"
                         "  --signal N           resonance events injected into the second experiment (default 2000)\n"
                         "  --signal-mass M      resonance mass, GeV (default 150); --resolution S its width (default 1.8)\n"
                         "  --method cwola|llp   semi-supervised loss (default cwola); --llp-fraction F (default 0.015)\n"
                         "  --with-mass          let the network see m_llg, e_llg and pt_ll/m_llg\n"
                         "  --width-factor K     first hidden layer = K x inputs (default 2)\n"
                         "  --epochs E, --batch B, --lr X, --lr-decay D   training (default 8, 256, 1e-3, 3e-4)\n"
                         "  --slices K           response slices (default 5)\n"
                         "  --scan-lo M, --scan-hi M, --scan-step M   mass scan, GeV (default 135, 165, 1)\n"
                         "  --toys N             toy experiments per slice (default 200)\n"
                         "  --null-experiments K independent background-only data samples (default 5; the toys of the first\n"
                         "                       give the null distribution of the others)\n"
                         "  --seed S, --quiet\n");

Options parse_args(int argc, char** argv) {
    Options o;
    examples::Flags(cli)
        .common(o)
        .count("--reference", o.reference).count("--background", o.background).count("--signal", o.signal, 0)
        .number("--signal-mass", o.signal_mass).number("--resolution", o.resolution).text("--method", o.method)
        .number("--llp-fraction", o.llp_fraction).flag("--with-mass", o.with_mass).number("--width-factor", o.width_factor)
        .count("--epochs", o.epochs).count("--batch", o.batch).number("--lr", o.lr).number("--lr-decay", o.lr_decay)
        .count("--slices", o.slices)
        .number("--scan-lo", o.scan_lo).number("--scan-hi", o.scan_hi).number("--scan-step", o.scan_step)
        .count("--toys", o.toys, 0).count("--null-experiments", o.null_experiments)
        .parse(argc, argv);
    if (o.method != "cwola" && o.method != "llp") cli.usage("--method must be cwola or llp, got '" + o.method + "'");
    if (!(o.llp_fraction > 0 && o.llp_fraction < 1)) cli.usage("--llp-fraction must be in (0, 1)");
    if (!(o.signal_mass > kMassLo && o.signal_mass < kMassHi)) cli.usage("--signal-mass must be inside 130-170 GeV");
    if (!(o.resolution > 0)) cli.usage("--resolution must be positive");
    if (!(o.scan_lo >= kMassLo && o.scan_hi <= kMassHi && o.scan_lo < o.scan_hi && o.scan_step > 0))
        cli.usage("the mass scan must lie inside 130-170 GeV with a positive step");
    if (!(o.width_factor > 0)) cli.usage("--width-factor must be positive");
    return o;
}

using examples::fmt;
using examples::json_string;
using examples::Progress;

// ---- events -----------------------------------------------------------------------------------

/// One sample: the 18 features per event (physical units) and, for generated events, the truth.
struct Sample {
    std::vector<std::array<double, 18>> x;
    std::vector<int> truth;  // 1 = injected resonance (generated events only)
    std::size_t size() const { return x.size(); }
};

Sample generate(std::size_t n_bkg, std::size_t n_sig, std::uint64_t seed, const Options& o) {
    hep::ZGammaConfig c;
    c.sig_mass = o.signal_mass;
    c.sig_width = o.resolution;
    hep::ZGammaGenerator gen(seed, c);
    Sample s;
    for (std::size_t i = 0; i < n_bkg + n_sig; ++i) {
        const int label = i < n_bkg ? 0 : 1;
        s.x.push_back(gen.next(label).features());
        s.truth.push_back(label);
    }
    return s;
}

/// The user's file: rows with sample == 0 are the reference, sample == 1 the data.
void read_data(const std::string& path, Sample& reference, Sample& data) {
    io::CsvOptions opt;
    opt.columns = hep::zgamma_feature_names();
    opt.columns.push_back("sample");
    const io::CsvTable t = io::read_csv(path, opt);
    for (std::size_t r = 0; r < t.rows; ++r) {
        std::array<double, 18> f{};
        for (std::size_t j = 0; j < 18; ++j) f[j] = t(r, j);
        const double s = t(r, 18);
        if (s != 0.0 && s != 1.0)
            throw value_error(path + ": data line " + std::to_string(r + 2) + ": sample " + std::to_string(s) + " is not 0 or 1");
        (s == 1.0 ? data : reference).x.push_back(f);
        (s == 1.0 ? data : reference).truth.push_back(-1);  // unknown
    }
    for (const Sample* s : {&reference, &data})
        if (s->size() < 1000)
            throw value_error(path + ": the " + std::string(s == &data ? "data (sample 1)" : "reference (sample 0)") + " has only " +
                              std::to_string(s->size()) + " events; the search needs thousands");
}

// ---- the classifier ---------------------------------------------------------------------------

std::vector<std::size_t> input_columns(bool with_mass) {
    const auto& names = hep::zgamma_feature_names();
    std::vector<std::size_t> cols;
    for (std::size_t j = 0; j < names.size(); ++j)
        if (with_mass || (names[j] != "m_llg" && names[j] != "e_llg" && names[j] != "pt_ll_over_m_llg")) cols.push_back(j);
    return cols;
}

/// 360-180-180-90-180-1 for 360 inputs, widths scaled to the inputs.
Sequential<float> make_network(std::size_t inputs, double factor, Rng& rng) {
    const auto w = [&](double f) { return std::max<std::size_t>(2, static_cast<std::size_t>(std::lround(factor * f * static_cast<double>(inputs)))); };
    Sequential<float> m;
    m.add<Dense<float>>(inputs, w(1.0), rng, Activation::relu)
        .add<Dense<float>>(w(1.0), w(0.5), rng, Activation::relu)
        .add<Dense<float>>(w(0.5), w(0.5), rng, Activation::relu)
        .add<Dense<float>>(w(0.5), w(0.25), rng, Activation::relu)
        .add<Dense<float>>(w(0.25), w(0.5), rng, Activation::relu)
        .add<Dense<float>>(w(0.5), 1, rng);
    return m;
}

Tensor<float> to_tensor(const Sample& s, const std::vector<std::size_t>& rows, const std::vector<std::size_t>& cols) {
    Tensor<float> t(Shape{rows.size(), cols.size()});
    for (std::size_t i = 0; i < rows.size(); ++i)
        for (std::size_t j = 0; j < cols.size(); ++j) t(i, j) = static_cast<float>(s.x[rows[i]][cols[j]]);
    return t;
}

/// Trains on reference rows ref_rows (label 0) against data rows data_rows (label 1) and
/// returns the response (sigmoid) of the data rows score_rows. Loss: CWoLa's cross-entropy,
/// with the two samples weighted equally; or label proportions, each batch split into its
/// reference events (fraction 0) and data events (fraction f).
std::vector<double> train_and_score(const Sample& ref, const Sample& data, const std::vector<std::size_t>& ref_rows,
                                    const std::vector<std::size_t>& data_rows, const std::vector<std::size_t>& score_rows,
                                    const Options& o, std::uint64_t seed, std::vector<double>& history) {
    const std::vector<std::size_t> cols = input_columns(o.with_mass);
    data::Dataset<float> d;
    {
        const Tensor<float> xr = to_tensor(ref, ref_rows, cols), xd = to_tensor(data, data_rows, cols);
        const std::size_t n = ref_rows.size() + data_rows.size(), nf = cols.size();
        d.x = Tensor<float>(Shape{n, nf});
        std::copy(xr.data(), xr.data() + xr.size(), d.x.data());
        std::copy(xd.data(), xd.data() + xd.size(), d.x.data() + xr.size());
        d.y = Tensor<float>(Shape{n, 1});
        d.w = Tensor<float>(Shape{n});
        for (std::size_t i = 0; i < n; ++i) {
            const bool is_data = i >= ref_rows.size();
            d.y[i] = is_data ? 1.f : 0.f;
            d.w[i] = static_cast<float>(0.5 * static_cast<double>(n) / static_cast<double>(is_data ? data_rows.size() : ref_rows.size()));
        }
    }
    data::StandardScaler scaler;
    d.x = scaler.fit_transform(d.x);

    Rng rng(seed);
    Sequential<float> net = make_network(cols.size(), o.width_factor, rng);
    optim::Adam<float> opt(net.parameters(), static_cast<float>(o.lr));
    optim::InverseTimeLR<float> schedule(opt, o.lr_decay);
    data::LoaderOptions lo;
    lo.seed = seed + 1;
    data::DataLoader<float> loader(d, o.batch, lo);
    Tape<float> tape;
    const float f = static_cast<float>(o.llp_fraction);
    for (std::size_t e = 0; e < o.epochs; ++e) {
        double sum = 0;
        std::size_t nb = 0;
        for (const auto& b : loader) {
            tape.clear();
            const Var<float> logits = net(tape.view(b.x));
            Var<float> l;
            if (o.method == "cwola") {
                l = bce_with_logits(logits, tape.view(b.y), tape.view(b.w));
            } else {  // label proportions: group 0 = reference events (fraction 0), group 1 = data (fraction f)
                std::vector<std::size_t> group(b.size());
                bool both = false;
                for (std::size_t i = 0; i < b.size(); ++i) {
                    group[i] = b.y[i] > 0.5f ? 1 : 0;
                    both = both || group[i] != group[0];
                }
                if (!both) continue;
                l = loss::label_proportion_loss(sigmoid(logits), group, std::vector<float>{0.f, f});
            }
            backward(l);
            opt.step();
            schedule.step();
            opt.zero_grad();
            sum += l.item();
            ++nb;
        }
        history.push_back(nb ? sum / static_cast<double>(nb) : std::nan(""));
    }

    const Tensor<float> xs = scaler.transform(to_tensor(data, score_rows, cols));
    NoGradGuard<float> guard(tape);
    tape.clear();
    const Var<float> p = sigmoid(net(tape.view(xs)));
    return std::vector<double>(p.data(), p.data() + p.size());
}

/// Every data event's response from the network trained on the other half of the data (and
/// the matching half of the reference): two folds, so no event is scored by a network that saw it.
std::vector<double> two_fold_response(const Sample& ref, const Sample& data, const Options& o, std::uint64_t seed,
                                      std::vector<double>& history) {
    Rng rng(seed);
    const std::vector<std::size_t> pr = rng.permutation(ref.size()), pd = rng.permutation(data.size());
    const std::size_t hr = ref.size() / 2, hd = data.size() / 2;
    const std::vector<std::size_t> ra(pr.begin(), pr.begin() + static_cast<std::ptrdiff_t>(hr)), rb(pr.begin() + static_cast<std::ptrdiff_t>(hr), pr.end());
    const std::vector<std::size_t> da(pd.begin(), pd.begin() + static_cast<std::ptrdiff_t>(hd)), db(pd.begin() + static_cast<std::ptrdiff_t>(hd), pd.end());
    std::vector<double> response(data.size());
    std::vector<double> h2;
    const std::vector<double> sb = train_and_score(ref, data, ra, da, db, o, seed * 3 + 1, history);  // trained on A, scores B
    const std::vector<double> sa = train_and_score(ref, data, rb, db, da, o, seed * 3 + 2, h2);       // trained on B, scores A
    for (std::size_t i = 0; i < db.size(); ++i) response[db[i]] = sb[i];
    for (std::size_t i = 0; i < da.size(); ++i) response[da[i]] = sa[i];
    return response;
}

// ---- fits -------------------------------------------------------------------------------------

std::vector<double> bin_centres() {
    std::vector<double> x(kBins);
    const double w = (kMassHi - kMassLo) / static_cast<double>(kBins);
    for (std::size_t i = 0; i < kBins; ++i) x[i] = (kMassLo + (static_cast<double>(i) + 0.5) * w - kCentre) / kScale;
    return x;
}

std::vector<double> histogram_mass(const std::vector<double>& m) {
    std::vector<double> k(kBins, 0.0);
    const double w = (kMassHi - kMassLo) / static_cast<double>(kBins);
    for (double v : m)
        if (v >= kMassLo && v < kMassHi) k[static_cast<std::size_t>((v - kMassLo) / w)] += 1;
    return k;
}

const auto kBackground = [](const Var<double>& p, const Var<double>& x) { return loss::exp_poly2_background(p, x); };
const auto kSignalPlusBackground = [](const Var<double>& p, const Var<double>& x) { return loss::exp_poly2_plus_gaussian(p, x); };

/// The background-only fit, started from the data (n0 from the counts near the centre, the
/// generator-like slope).
loss::PoissonFitResult fit_background(const std::vector<double>& x, const std::vector<double>& k) {
    double n0 = 0;
    for (std::size_t i = kBins / 2 - 2; i < kBins / 2 + 2; ++i) n0 += k[i] / 4;
    return loss::poisson_fit(kBackground, x, k, {std::max(n0, 1.0), -0.9, 0.0});
}

struct Scan {
    std::vector<double> mass, z;  // signed local significance at each mass
    double best_mass = 0, best_z = -1e9, best_n1 = 0;
    loss::PoissonFitResult background;
};

/// Signal-plus-background fits at each mass of the scan (mean and width fixed, n1 free),
/// against the background-only fit.
Scan mass_scan(const std::vector<double>& x, const std::vector<double>& k, const Options& o) {
    Scan s;
    s.background = fit_background(x, k);
    loss::PoissonFitOptions fixed_peak;
    fixed_peak.fixed = {false, false, false, false, true, true};
    const std::vector<double>& b = s.background.params;
    for (double m = o.scan_lo; m <= o.scan_hi + 1e-9; m += o.scan_step) {
        const loss::PoissonFitResult sb =
            loss::poisson_fit(kSignalPlusBackground, x, k, {b[0], b[1], b[2], 0.0, (m - kCentre) / kScale, o.resolution / kScale}, fixed_peak);
        const double z = (sb.params[3] >= 0 ? 1.0 : -1.0) * loss::local_significance(sb, s.background);
        s.mass.push_back(m);
        s.z.push_back(z);
        if (z > s.best_z) s.best_z = z, s.best_mass = m, s.best_n1 = sb.params[3];
    }
    return s;
}

// ---- one experiment ---------------------------------------------------------------------------

struct Slice {
    double lo = 0, hi = 1;          // response range
    std::vector<double> mass;       // m_llg of its events
    std::size_t n_signal = 0;       // injected resonance events in it (generated data)
    Scan scan;
    std::vector<double> toy_max_z;  // largest local Z of each toy
    std::vector<double> toy_fixed_z;  // local Z of each toy at the injected mass
    double p_global = 1;
};

struct Experiment {
    std::string name;
    std::vector<double> response;
    std::vector<Slice> slices;
    Slice all;  // every data event (no toys)
    Scan inclusive;
    std::vector<double> history;
};

/// The whole search on one data sample. With toys > 0, each slice gets its own toys; with
/// toys == 0, global p-values come from `null_max_z` (the largest local Z of earlier toys).
Experiment run(const std::string& name, const Sample& ref, const Sample& data, const Options& o, std::uint64_t seed, std::size_t toys,
               const std::vector<double>& null_max_z, const Progress& progress) {
    Experiment ex;
    ex.name = name;
    ex.response = two_fold_response(ref, data, o, seed, ex.history);
    progress.say(name + ": network trained (two folds)");

    const std::size_t im = 0;  // m_llg is feature 0
    const std::vector<double> x = bin_centres();
    for (std::size_t i = 0; i < data.size(); ++i) {
        ex.all.mass.push_back(data.x[i][im]);
        ex.all.n_signal += data.truth[i] == 1 ? 1 : 0;
    }
    ex.all.scan = ex.inclusive = mass_scan(x, histogram_mass(ex.all.mass), o);
    ex.all.lo = 0, ex.all.hi = 1;
    // Slices of equal population, from the highest response down.
    std::vector<std::size_t> order(data.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ex.response[a] > ex.response[b]; });
    for (std::size_t s = 0; s < o.slices; ++s) {
        Slice sl;
        const std::size_t a = s * data.size() / o.slices, b = (s + 1) * data.size() / o.slices;
        sl.hi = ex.response[order[a]];
        sl.lo = ex.response[order[b - 1]];
        for (std::size_t k = a; k < b; ++k) {
            sl.mass.push_back(data.x[order[k]][im]);
            sl.n_signal += data.truth[order[k]] == 1 ? 1 : 0;
        }
        const std::vector<double> counts = histogram_mass(sl.mass);
        sl.scan = mass_scan(x, counts, o);

        // Toys: Poisson pseudo-data from this slice's background fit, analysed the same way.
        Rng rng(seed * 1000 + s);
        Tape<double> tape;
        NoGradGuard<double> guard(tape);
        const Var<double> bkg = kBackground(tape.constant(Tensor<double>(Shape{3}, sl.scan.background.params)), tape.constant(Tensor<double>(Shape{kBins}, x)));
        std::vector<double> expected(bkg.data(), bkg.data() + kBins);
        const std::size_t at_signal = static_cast<std::size_t>(std::lround((o.signal_mass - o.scan_lo) / o.scan_step));
        for (std::size_t t = 0; t < toys; ++t) {
            std::vector<double> toy(kBins);
            for (std::size_t i = 0; i < kBins; ++i) toy[i] = static_cast<double>(loss::poisson_sample(rng, expected[i]));
            const Scan ts = mass_scan(x, toy, o);
            sl.toy_max_z.push_back(ts.best_z);
            if (at_signal < ts.z.size()) sl.toy_fixed_z.push_back(ts.z[at_signal]);
        }
        // Global p-value: the fraction of null toys with a larger maximum (+1 in both counts,
        // so that it is never 0 with finitely many toys).
        const std::vector<double>& null = toys ? sl.toy_max_z : null_max_z;
        std::size_t above = 0;
        for (double z : null) above += z >= sl.scan.best_z ? 1 : 0;
        sl.p_global = null.empty() ? std::nan("") : (static_cast<double>(above) + 1.0) / (static_cast<double>(null.size()) + 1.0);
        ex.slices.push_back(std::move(sl));
        progress.say(name + ": slice " + std::to_string(s + 1) + " fitted" + (toys ? ", " + std::to_string(toys) + " toys" : ""));
    }
    return ex;
}

double mean_of(const std::vector<double>& v) { return v.empty() ? std::nan("") : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()); }
double sd_of(const std::vector<double>& v) {
    if (v.size() < 2) return std::nan("");
    const double m = mean_of(v);
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::sqrt(s / static_cast<double>(v.size() - 1));
}

/// Global significance (one-sided Gaussian quantile) of a p-value.
double z_of_p(double p) {
    if (!(p > 0 && p < 1)) return p >= 1 ? 0.0 : std::nan("");
    double lo = -10, hi = 10;  // solve 0.5 erfc(z / sqrt 2) = p
    for (int i = 0; i < 100; ++i) {
        const double z = 0.5 * (lo + hi);
        (0.5 * std::erfc(z / std::sqrt(2.0)) > p ? lo : hi) = z;
    }
    return 0.5 * (lo + hi);
}

void print_experiment(const Experiment& ex, bool truth) {
    std::printf("\n%s\n", ex.name.c_str());
    std::printf("  inclusive (all data): largest local Z = %.2f at %.0f GeV\n", ex.inclusive.best_z, ex.inclusive.best_mass);
    std::printf("  %-6s %-17s %8s %s %9s %9s %13s %9s %9s\n", "slice", "response", "events", truth ? "  signal" : "", "best m", "local Z",
                "toys: max Z", "p global", "Z global");
    for (std::size_t s = 0; s < ex.slices.size(); ++s) {
        const Slice& sl = ex.slices[s];
        char range[40];
        std::snprintf(range, sizeof range, "%.3f-%.3f", sl.lo, sl.hi);
        std::printf("  %-6zu %-17s %8zu", s + 1, range, sl.mass.size());
        if (truth) std::printf(" %8zu", sl.n_signal);
        std::printf(" %9.1f %9.2f %6.2f +- %4.2f %9.3f %9.2f\n", sl.scan.best_mass, sl.scan.best_z, mean_of(sl.toy_max_z), sd_of(sl.toy_max_z),
                    sl.p_global, z_of_p(sl.p_global));
    }
}

// ---- output -----------------------------------------------------------------------------------

void write_results(const std::string& out, const std::vector<Experiment>& exs) {
    std::vector<double> e, s, lo, hi, n, nsig, bm, bz, pg, tm, ts;
    std::vector<double> e2, s2, m2, z2;
    std::vector<double> e3, s3, t3, tmax, tfix;
    for (std::size_t k = 0; k < exs.size(); ++k)
        for (std::size_t i = 0; i < exs[k].slices.size(); ++i) {
            const Slice& sl = exs[k].slices[i];
            e.push_back(static_cast<double>(k));
            s.push_back(static_cast<double>(i + 1));
            lo.push_back(sl.lo);
            hi.push_back(sl.hi);
            n.push_back(static_cast<double>(sl.mass.size()));
            nsig.push_back(static_cast<double>(sl.n_signal));
            bm.push_back(sl.scan.best_mass);
            bz.push_back(sl.scan.best_z);
            pg.push_back(sl.p_global);
            tm.push_back(mean_of(sl.toy_max_z));
            ts.push_back(sd_of(sl.toy_max_z));
            for (std::size_t j = 0; j < sl.scan.mass.size(); ++j) {
                e2.push_back(static_cast<double>(k));
                s2.push_back(static_cast<double>(i + 1));
                m2.push_back(sl.scan.mass[j]);
                z2.push_back(sl.scan.z[j]);
            }
            for (std::size_t t = 0; t < sl.toy_max_z.size(); ++t) {
                e3.push_back(static_cast<double>(k));
                s3.push_back(static_cast<double>(i + 1));
                t3.push_back(static_cast<double>(t));
                tmax.push_back(sl.toy_max_z[t]);
                tfix.push_back(t < sl.toy_fixed_z.size() ? sl.toy_fixed_z[t] : 0.0);
            }
        }
    io::write_csv(out + "/slices.csv",
              {"experiment", "slice", "response_lo", "response_hi", "events", "signal_events", "best_mass", "local_z", "p_global",
               "toy_max_z_mean", "toy_max_z_sd"},
              {e, s, lo, hi, n, nsig, bm, bz, pg, tm, ts});
    io::write_csv(out + "/mass_scan.csv", {"experiment", "slice", "mass", "local_z"}, {e2, s2, m2, z2});
    if (!e3.empty()) io::write_csv(out + "/toys.csv", {"experiment", "slice", "toy", "max_local_z", "local_z_at_signal_mass"}, {e3, s3, t3, tmax, tfix});
}

void plot_experiment(const std::string& path, const Experiment& ex, const Options& o) {
    using namespace tapir::io;
    const std::size_t panels = ex.slices.size() + 1;  // the slices, then all data
    const int cols = static_cast<int>(std::min<std::size_t>(panels, 3));
    const int rows = static_cast<int>((panels + 2) / 3);
    Figure fig(470 * cols, 380 * rows + 40, rows, cols);
    fig.suptitle(ex.name + ": m_llγ in slices of the network response, with the fits at the best mass");
    const std::vector<double> x = bin_centres();
    for (std::size_t s = 0; s < panels; ++s) {
        const bool all = s == ex.slices.size();
        const Slice& sl = all ? ex.all : ex.slices[s];
        auto& ax = fig.axes(static_cast<int>(s / 3), static_cast<int>(s % 3));
        const std::vector<double> k = histogram_mass(sl.mass);
        std::vector<double> m, err, fb, fsb;
        Tape<double> tape;
        const auto& b = sl.scan.background.params;
        const Var<double> xv = tape.constant(Tensor<double>(Shape{kBins}, x));
        const Var<double> bkg = kBackground(tape.constant(Tensor<double>(Shape{3}, b)), xv);
        const Var<double> sb = kSignalPlusBackground(
            tape.constant(Tensor<double>(Shape{6}, std::vector<double>{b[0], b[1], b[2], sl.scan.best_n1, (sl.scan.best_mass - kCentre) / kScale,
                                                                       o.resolution / kScale})),
            xv);
        for (std::size_t i = 0; i < kBins; ++i) {
            m.push_back(x[i] * kScale + kCentre);
            err.push_back(std::sqrt(std::max(k[i], 1.0)));
            fb.push_back(bkg[i]);
            fsb.push_back(sb[i]);
        }
        ax.errorbars(m, k, err, Style("data", "#222222").marker('o').marker_size(2.5));
        ax.line(m, fb, Style("background fit", "#1f77b4").width(2));
        ax.line(m, fsb, Style("+ Gaussian at " + fmt(sl.scan.best_mass, 4) + " GeV", "#d62728").width(1.6).dashed());
        ax.set_xlabel("m_llγ [GeV]").set_ylabel("events / GeV");
        ax.set_title((all ? std::string("all data") : "slice " + std::to_string(s + 1) + ": response " + fmt(sl.lo, 2) + "-" + fmt(sl.hi, 2)) +
                     ", Z_local = " + fmt(sl.scan.best_z, 3));
        if (s == 0) ax.legend();
    }
    fig.save(path);
}

/// One panel per experiment, side by side: draw(axes, k) for experiment k.
template <class Draw>
void plot_per_experiment(const std::string& path, int height, const std::string& title, std::size_t experiments, const Draw& draw) {
    io::Figure fig(560 * static_cast<int>(experiments), height, 1, static_cast<int>(experiments));
    fig.suptitle(title);
    for (std::size_t k = 0; k < experiments; ++k) draw(fig.axes(0, static_cast<int>(k)), k);
    fig.save(path);
}

void plot_scans(const std::string& path, const std::vector<Experiment>& exs, const Options& o) {
    using namespace tapir::io;
    plot_per_experiment(path, 440, "Local significance along the mass scan, per response slice", exs.size(), [&](auto& ax, std::size_t k) {
        for (std::size_t s = 0; s < exs[k].slices.size(); ++s) ax.line(exs[k].slices[s].scan.mass, exs[k].slices[s].scan.z, Style("slice " + std::to_string(s + 1)).width(1.8));
        ax.line(exs[k].inclusive.mass, exs[k].inclusive.z, Style("all data", "#444444").dashed());
        if (!exs[k].slices.empty() && !exs[k].slices[0].toy_max_z.empty()) {
            const double m = mean_of(exs[k].slices[0].toy_max_z);
            ax.hline(m, Style("toys: mean largest Z (slice 1)", "#999999").dotted());
        }
        ax.vline(o.signal_mass, Style("", "#bbbbbb").dotted());
        ax.set_xlabel("m_llγ hypothesis [GeV]").set_ylabel("signed local Z").set_title(exs[k].name).legend();
    });
}

void plot_toys(const std::string& path, const Experiment& ex) {
    using namespace tapir::io;
    Figure fig(1100, 430, 1, 2);
    fig.suptitle(ex.name + ": toy experiments (background-only pseudo-data, all slices)");
    std::vector<double> mx, fx;
    for (const auto& sl : ex.slices) {
        mx.insert(mx.end(), sl.toy_max_z.begin(), sl.toy_max_z.end());
        fx.insert(fx.end(), sl.toy_fixed_z.begin(), sl.toy_fixed_z.end());
    }
    auto& a = fig.axes(0, 0);
    a.histogram(fx, 30, -4, 4, Style("toys").fill(0.35), true);
    std::vector<double> g, gx;
    for (int i = 0; i <= 80; ++i) {
        const double z = -4 + 0.1 * i;
        gx.push_back(z);
        g.push_back(std::exp(-0.5 * z * z) / std::sqrt(2 * 3.14159265358979));
    }
    a.line(gx, g, Style("N(0, 1)", "#d62728").width(2));
    a.set_xlabel("signed local Z at a fixed mass").set_ylabel("density").set_title("fixed mass: mean " + fmt(mean_of(fx)) + ", sd " + fmt(sd_of(fx))).legend();
    auto& b = fig.axes(0, 1);
    b.histogram(mx, 30, 0, 5, Style("toys").fill(0.35), true);
    for (std::size_t s = 0; s < ex.slices.size(); ++s) b.vline(ex.slices[s].scan.best_z, Style(s == 0 ? "observed (each slice)" : "", "#d62728"));
    b.set_xlabel("largest local Z over the mass scan").set_ylabel("density").set_title("look-elsewhere: mean " + fmt(mean_of(mx)) + ", sd " + fmt(sd_of(mx))).legend();
    fig.save(path);
}

void plot_response(const std::string& path, const std::vector<Experiment>& exs, const Sample& data_sig) {
    using namespace tapir::io;
    const char* title = "Network response of the data events (scored by the fold that did not train on them)";
    plot_per_experiment(path, 420, title, exs.size(), [&](auto& ax, std::size_t k) {
        const bool truth = exs.size() == 2 && k == 1;
        std::vector<double> bkg, sig;
        for (std::size_t i = 0; i < exs[k].response.size(); ++i) ((truth && data_sig.truth[i] == 1) ? sig : bkg).push_back(exs[k].response[i]);
        ax.histogram(bkg, 50, 0, 1, Style("background events").fill(0.35), true);
        if (!sig.empty()) ax.histogram(sig, 50, 0, 1, Style("injected resonance").width(2), true);
        ax.set_log_y().set_xlabel("network response").set_ylabel("density").set_title(exs[k].name).legend();
    });
}

/// The acceptance figures on background-only data (generated events only).
struct NullSummary {
    bool valid = false;
    double observed_mean = 0, observed_sd = 0, toy_mean = 0, toy_sd = 0, p_mean = 0;
    std::size_t below5 = 0, slices = 0, toys = 0;
    double scan_mean = 0, scan_sd = 0, fixed_mean = 0, fixed_sd = 0;
};

/// JSON has no NaN: null instead.
std::string json_number(double v) {
    if (!std::isfinite(v)) return "null";
    std::ostringstream s;
    s.precision(8);
    s << v;
    return s.str();
}

void write_json(const std::string& path, const Options& o, const std::vector<Experiment>& exs, const NullSummary& ns, double seconds) {
    std::ofstream f(path);
    if (!f) throw std::runtime_error("cannot write '" + path + "'");
    f << "{\n  \"method\": " << json_string(o.method) << ",\n  \"with_mass\": " << (o.with_mass ? "true" : "false")
      << ",\n  \"seed\": " << o.seed << ",\n  \"toys_per_slice\": " << o.toys << ",\n  \"seconds\": " << json_number(seconds);
    if (ns.valid)
        f << ",\n  \"background_only\": {\"slices\": " << ns.slices << ", \"largest_local_z_mean\": " << json_number(ns.observed_mean)
          << ", \"largest_local_z_sd\": " << json_number(ns.observed_sd) << ", \"toys\": " << ns.toys
          << ", \"toy_largest_local_z_mean\": " << json_number(ns.toy_mean) << ", \"toy_largest_local_z_sd\": " << json_number(ns.toy_sd)
          << ", \"global_p_mean\": " << json_number(ns.p_mean) << ", \"global_p_below_0.05\": " << ns.below5
          << ", \"scan_local_z_mean\": " << json_number(ns.scan_mean) << ", \"scan_local_z_sd\": " << json_number(ns.scan_sd)
          << ", \"toy_fixed_mass_z_mean\": " << json_number(ns.fixed_mean) << ", \"toy_fixed_mass_z_sd\": " << json_number(ns.fixed_sd) << "}";
    f << ",\n  \"experiments\": [\n";
    for (std::size_t k = 0; k < exs.size(); ++k) {
        const Experiment& ex = exs[k];
        f << "    {\"name\": " << json_string(ex.name) << ", \"inclusive_best_mass\": " << json_number(ex.inclusive.best_mass)
          << ", \"inclusive_local_z\": " << json_number(ex.inclusive.best_z) << ", \"slices\": [\n";
        for (std::size_t i = 0; i < ex.slices.size(); ++i) {
            const Slice& sl = ex.slices[i];
            f << "      {\"slice\": " << i + 1 << ", \"response_lo\": " << json_number(sl.lo) << ", \"response_hi\": " << json_number(sl.hi)
              << ", \"events\": " << sl.mass.size() << ", \"signal_events\": " << sl.n_signal << ", \"best_mass\": " << json_number(sl.scan.best_mass)
              << ", \"local_z\": " << json_number(sl.scan.best_z) << ", \"p_global\": " << json_number(sl.p_global) << ", \"z_global\": "
              << json_number(z_of_p(sl.p_global)) << "}" << (i + 1 < ex.slices.size() ? "," : "") << "\n";
        }
        f << "    ]}" << (k + 1 < exs.size() ? "," : "") << "\n";
    }
    f << "  ]\n}\n";
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse_args(argc, argv);
    return examples::run("resonance_search", o.out, Progress{o.quiet}, [&](const Progress& progress) {
        std::vector<Experiment> exs;    // shown in full: the first null experiment, the injected one (or the user's data)
        std::vector<Experiment> nulls;  // every background-only experiment (generated events)
        Sample data_sig;
        if (!o.data.empty()) {
            Sample ref, data;
            read_data(o.data, ref, data);
            progress.say("events: " + o.data + ": " + std::to_string(ref.size()) + " reference, " + std::to_string(data.size()) + " data");
            exs.push_back(run("data (" + o.data + ")", ref, data, o, o.seed, o.toys, {}, progress));
            data_sig = data;
        } else {
            const Sample ref = generate(o.reference, 0, o.seed * 101 + 1, o);
            std::vector<double> pooled;  // largest local Z of the first null experiment's toys, all slices
            for (std::size_t k = 0; k < o.null_experiments; ++k) {
                const Sample bkg_only = generate(o.background, 0, o.seed * 101 + 2 + 7 * k, o);
                if (k == 0) {
                    progress.say("events: generated " + std::to_string(ref.size()) + " reference, " + std::to_string(bkg_only.size()) +
                                 " background data");
                    data_sig = bkg_only;  // the same background with the resonance added
                    const Sample extra = generate(0, o.signal, o.seed * 101 + 3, o);
                    data_sig.x.insert(data_sig.x.end(), extra.x.begin(), extra.x.end());
                    data_sig.truth.insert(data_sig.truth.end(), extra.truth.begin(), extra.truth.end());
                }
                const std::string name = "background-only data" + (o.null_experiments > 1 ? " #" + std::to_string(k + 1) : std::string());
                nulls.push_back(run(name, ref, bkg_only, o, o.seed + 10 * k, k == 0 ? o.toys : 0, pooled, progress));
                if (k == 0)
                    for (const auto& sl : nulls[0].slices) pooled.insert(pooled.end(), sl.toy_max_z.begin(), sl.toy_max_z.end());
            }
            exs.push_back(nulls[0]);
            exs.push_back(run("data with " + std::to_string(o.signal) + " injected resonance events at " + fmt(o.signal_mass, 4) + " GeV", ref,
                              data_sig, o, o.seed + 1, o.toys, {}, progress));
        }

        // ---- summary ------------------------------------------------------------------------------
        std::printf("\nSemi-supervised resonance search (%s, inputs: %s), %zu response slices, mass scan %.0f-%.0f GeV, %zu toys per slice\n",
                    o.method == "cwola" ? "CWoLa" : "label proportions", o.with_mass ? "all 18 features" : "15 features without m_llg",
                    o.slices, o.scan_lo, o.scan_hi, o.toys);
        for (std::size_t k = 0; k < exs.size(); ++k) print_experiment(exs[k], o.data.empty() && k == 1);
        NullSummary null_summary;
        if (o.data.empty() && o.toys > 1) {
            // Acceptance 1: on background-only data, the fake-signal significances look like the toys'.
            std::vector<double> observed, p, scan_z, toy_max, toy_fixed;
            for (const auto& sl : nulls[0].slices) {
                toy_max.insert(toy_max.end(), sl.toy_max_z.begin(), sl.toy_max_z.end());
                toy_fixed.insert(toy_fixed.end(), sl.toy_fixed_z.begin(), sl.toy_fixed_z.end());
            }
            std::printf("\nBackground-only data, %zu independent samples x %zu slices: largest local Z and global p-value of each slice\n",
                        nulls.size(), o.slices);
            for (const auto& ex : nulls) {
                std::printf("  %-26s", ex.name.c_str());
                for (const auto& sl : ex.slices) {
                    observed.push_back(sl.scan.best_z);
                    p.push_back(sl.p_global);
                    scan_z.insert(scan_z.end(), sl.scan.z.begin(), sl.scan.z.end());
                    std::printf("  %4.2f (p %.2f)", sl.scan.best_z, sl.p_global);
                }
                std::printf("\n");
            }
            std::size_t below5 = 0;
            for (double v : p) below5 += v < 0.05 ? 1 : 0;
            NullSummary& ns = null_summary;
            ns.valid = true;
            ns.observed_mean = mean_of(observed), ns.observed_sd = sd_of(observed);
            ns.toy_mean = mean_of(toy_max), ns.toy_sd = sd_of(toy_max), ns.toys = toy_max.size();
            ns.p_mean = mean_of(p), ns.below5 = below5, ns.slices = p.size();
            ns.scan_mean = mean_of(scan_z), ns.scan_sd = sd_of(scan_z);
            ns.fixed_mean = mean_of(toy_fixed), ns.fixed_sd = sd_of(toy_fixed);
            std::printf("  largest local Z: data mean %.2f, sd %.2f (%zu slices); toys mean %.2f, sd %.2f (%zu toys)\n", mean_of(observed),
                        sd_of(observed), observed.size(), mean_of(toy_max), sd_of(toy_max), toy_max.size());
            std::printf("  global p-values: mean %.2f (uniform: 0.50), %zu of %zu below 0.05 (expected %.1f)\n", mean_of(p), below5, p.size(),
                        0.05 * static_cast<double>(p.size()));
            std::printf("  signed local Z at every scanned mass: data mean %.3f, sd %.3f; toys at a fixed mass mean %.3f, sd %.3f "
                        "(expected 0 and 1)\n",
                        mean_of(scan_z), sd_of(scan_z), mean_of(toy_fixed), sd_of(toy_fixed));
            // Acceptance 2: the injected resonance, in the most signal-like slice.
            const Slice& top = exs[1].slices[0];
            std::printf("Injected resonance: slice 1 (%zu of its %zu events are resonance) has its largest local Z = %.2f at %.0f GeV "
                        "(injected at %.0f GeV, width %.1f GeV); all data: %.2f; global Z >= %.2f (p = %.4f, limited by %zu toys)\n",
                        top.n_signal, top.mass.size(), top.scan.best_z, top.scan.best_mass, o.signal_mass, o.resolution, exs[1].inclusive.best_z,
                        z_of_p(top.p_global), top.p_global, o.toys);
        }

        std::vector<Experiment> all = exs;
        if (nulls.size() > 1) all.insert(all.end(), nulls.begin() + 1, nulls.end());
        write_results(o.out, all);
        for (std::size_t k = 0; k < exs.size(); ++k) {
            const std::string tag = exs.size() == 1 ? "data" : (k == 0 ? "null" : "signal");
            plot_experiment(o.out + "/mass_slices_" + tag + ".svg", exs[k], o);
            if (o.toys > 0) plot_toys(o.out + "/toys_" + tag + ".svg", exs[k]);
        }
        plot_scans(o.out + "/mass_scan.svg", exs, o);
        plot_response(o.out + "/response.svg", exs, data_sig);
        write_json(o.out + "/summary.json", o, all, null_summary, progress.seconds());
        std::printf("\nwrote %s/{slices.csv, mass_scan.csv%s, summary.json, mass_slices_*.svg, mass_scan.svg, response.svg%s} in %.1f s\n", o.out.c_str(),
                    o.toys ? ", toys.csv" : "", o.toys ? ", toys_*.svg" : "", progress.seconds());
        return 0;
    });
}
