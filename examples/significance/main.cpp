// Training a classifier directly for discovery significance (Elwood and Kruecker, arXiv
// 1806.00322): top-squark pairs against top-quark pairs in the one-lepton channel.
//
// The same small network (one hidden layer of 23 neurons) is trained
// three ways:
//   - binary cross-entropy (BCE), the usual classifier;
//   - the s/sqrt(s+b) loss (s+b)/s^2, with s and b the soft yields of a batch;
//   - the Asimov loss 1/Z_A with a relative background systematic r, one network per r,
//     fine-tuning the cross-entropy network (Z_A's gradients are tiny while s is small), its
//     output bias moved so that the soft cut (logit 0) starts at its validation best cut; or,
//     with --pretrain-sb, after 5 epochs of (s+b)/s^2 as in the paper.
// s and b are expected events at the luminosity: s = S_exp * (mean network output over the
// batch's signal events), b likewise, so the loss is per batch and wants large batches: near
// the best cut b is ~1 event in 20000 background events, hence batches of 32768 for Z_A.
// Every network keeps the epoch with the highest best-cut Z_A at its r on a validation sample
// generated with its training sample (cross-entropy and (s+b)/s^2: one kept epoch per r).
// Each kept network is then cut at the score that maximises Z_A(s, b, r) on an independent test
// sample, for r = 10%, 30% and 50%; the cut must keep 50 background
// test events so that b's simulation error (14%) stays well below the systematic.
//
//   significance [--data FILE] [--out DIR] [--seeds K] [--epochs E] [--lumi L] ...   (--help)
#include <tapir/data/dataset.hpp>
#include <tapir/hep/stop.hpp>
#include <tapir/io/csv.hpp>
#include <tapir/io/svg.hpp>
#include <tapir/loss/significance.hpp>
#include <tapir/metrics/metrics.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
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
#include <functional>
#include <map>
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

struct Options : examples::DataOptions {  // --data: a CSV with the features, label and weight
    std::size_t train = 200000;     // generated training events (half signal, half background)
    std::size_t test_sig = 100000;  // generated test events
    std::size_t test_bkg = 1000000;
    double lumi = 30.0;             // fb^-1
    double stop_mass = 600.0, lsp_mass = 250.0, stop_xsec = 0.25;  // GeV, GeV, pb
    double dilepton_fraction = 0.326;
    std::size_t seeds = 5;          // independent trainings (training sample, initialisation, order)
    std::size_t bce_epochs = 40;    // cross-entropy epochs (batch 128: many steps per epoch)
    std::size_t epochs = 200;       // epochs of the significance losses (batch 4096: few steps per epoch)
    std::size_t pretrain = 5;       // epochs of (s+b)/s^2 before the Asimov loss
    std::size_t hidden = 23;
    std::size_t bce_batch = 128, sig_batch = 4096;
    std::size_t asimov_batch = 32768;  // b near the best cut is ~1 event per 20000 background events
    double lr = 1e-3;
    bool squared = false;           // Asimov loss 1/Z_A^2 (reference code) instead of 1/Z_A (slides)
    std::size_t min_bkg_events = 50;  // a cut must keep this many background test events (b's MC error 14%)
    bool pretrain_bce = true;       // Asimov networks start from the cross-entropy network (else (s+b)/s^2)
    bool control_bce = false;       // the fine-tuning uses cross-entropy instead (control)
    bool centre = true;             // ... with the output bias moved so that logit 0 is its validation best cut
    std::size_t finetune_epochs = 100;  // Asimov epochs from the cross-entropy network
    double finetune_lr = 0;         // learning rate of those (0: lr)
    std::size_t val_sig = 20000, val_bkg = 400000;  // validation events generated with each training sample
    std::size_t checkpoints = 20;   // validation looks per training run
};

const std::vector<double> kSystematics = {0.1, 0.3, 0.5};

const examples::Cli cli("significance",
                         "significance [options]\n"
                         "  --data FILE          CSV with the 21 feature columns (see README), 'label' (1 stop, 0 top)\n"
                         "                       and 'weight' (expected events the row stands for); half trains, half tests\n"
                         "  --out DIR            output directory (default .)\n"
                         "  --train N            generated training events (default 200000)\n"
                         "  --test-sig N, --test-bkg N   generated test events (default 100000, 1000000)\n"
                         "  --lumi L             integrated luminosity in fb^-1 (default 30)\n"
                         "  --stop-mass M, --lsp-mass M, --stop-xsec PB   signal point (default 600, 250, 0.25)\n"
                         "  --dilepton-fraction F   share of top pairs with a second leptonic W (default 0.326)\n"
                         "  --seeds K            independent trainings to average (default 5); --seed S first seed\n"
                         "  --bce-epochs E       cross-entropy epochs (default 40)\n"
                         "  --epochs E           significance-loss epochs (default 200); --pretrain E (default 5)\n"
                         "  --hidden H           hidden neurons (default 23); --lr X (default 1e-3)\n"
                         "  --bce-batch B, --sig-batch B   batch sizes (default 128, 4096)\n"
                         "  --asimov-batch B     batch size of the Asimov loss (default 32768)\n"
                         "  --asimov-squared     Asimov loss 1/Z_A^2 instead of 1/Z_A\n"
                         "  --pretrain-sb        Asimov networks start from --pretrain epochs of (s+b)/s^2 (the paper)\n"
                         "                       instead of the cross-entropy network (default, --pretrain-bce)\n"
                         "  --finetune-epochs E, --finetune-lr X   Asimov epochs and learning rate from the\n"
                         "                       cross-entropy network (default 100, --lr)\n"
                         "  --no-centre          do not move its output bias to put logit 0 at its validation best cut\n"
                         "                       (without validation, --val-bkg 0, it is never moved)\n"
                         "  --control-bce        control: the 'Asimov' rows fine-tune the cross-entropy network with\n"
                         "                       cross-entropy on the same schedule (are the gains the loss or the steps?)\n"
                         "  --min-bkg-events K   background test events a cut must keep (default 50)\n"
                         "  --val-sig N, --val-bkg N   validation events per training sample (default 20000, 400000;\n"
                         "                       --val-bkg 0: no model selection, the last epoch is kept; with --data a\n"
                         "                       quarter of the training half validates)\n"
                         "  --checkpoints K      validation looks per training run (default 20)\n"
                         "  --quiet\n");

Options parse_args(int argc, char** argv) {
    Options o;
    examples::Flags(cli)
        .common(o)
        .count("--train", o.train).count("--test-sig", o.test_sig).count("--test-bkg", o.test_bkg).number("--lumi", o.lumi)
        .number("--stop-mass", o.stop_mass).number("--lsp-mass", o.lsp_mass).number("--stop-xsec", o.stop_xsec)
        .number("--dilepton-fraction", o.dilepton_fraction).count("--seeds", o.seeds)
        .count("--epochs", o.epochs).count("--bce-epochs", o.bce_epochs).count("--pretrain", o.pretrain)
        .count("--hidden", o.hidden).count("--bce-batch", o.bce_batch).count("--sig-batch", o.sig_batch)
        .count("--asimov-batch", o.asimov_batch).number("--lr", o.lr).flag("--asimov-squared", o.squared)
        .flag("--pretrain-bce", o.pretrain_bce).flag("--pretrain-sb", o.pretrain_bce, false).flag("--no-centre", o.centre, false)
        .on_flag("--control-bce", [&] { o.control_bce = o.pretrain_bce = true; })
        .count("--min-bkg-events", o.min_bkg_events)
        .count("--finetune-epochs", o.finetune_epochs).number("--finetune-lr", o.finetune_lr)
        .count("--val-sig", o.val_sig).count("--val-bkg", o.val_bkg, 0).count("--checkpoints", o.checkpoints)
        .parse(argc, argv);
    if (!(o.lumi > 0)) cli.usage("--lumi must be positive");
    if (o.pretrain >= o.epochs) cli.usage("--pretrain must be smaller than --epochs");
    if (!(o.lr > 0) || !(o.finetune_lr >= 0)) cli.usage("--lr and --finetune-lr must be positive");
    if (o.finetune_lr == 0) o.finetune_lr = o.lr;
    return o;
}

using examples::json_string;
using examples::Progress;

// ---- events -----------------------------------------------------------------------------------

/// Events with their features, class (1 stop, 0 top) and weight: the expected number of events
/// at the luminosity that each one stands for.
struct Sample {
    Tensor<float> x;
    std::vector<double> label, weight;
    std::size_t size() const { return label.size(); }
    double expected(int cls) const {  // S_exp (cls 1) or B_exp (cls 0)
        double s = 0;
        for (std::size_t i = 0; i < size(); ++i) s += label[i] == cls ? weight[i] : 0.0;
        return s;
    }
};

/// n_sig signal and n_bkg background events; each class weighted to its expected yield.
Sample generate(hep::StopGenerator& gen, std::size_t n_sig, std::size_t n_bkg, double lumi) {
    const std::size_t nf = hep::StopEvent::num_features, n = n_sig + n_bkg;
    Sample s;
    s.x = Tensor<float>(Shape{n, nf});
    for (std::size_t i = 0; i < n; ++i) {
        const int cls = i < n_sig ? 1 : 0;
        const auto f = gen.next(cls).features();
        for (std::size_t j = 0; j < nf; ++j) s.x(i, j) = static_cast<float>(f[j]);
        s.label.push_back(cls);
    }
    // Efficiencies are measured on this generator's attempts: weights after the loop.
    const double ws = gen.expected_yield(1, lumi) / static_cast<double>(n_sig);
    const double wb = gen.expected_yield(0, lumi) / static_cast<double>(n_bkg);
    for (double c : s.label) s.weight.push_back(c == 1 ? ws : wb);
    return s;
}

hep::StopConfig generator_config(const Options& o) {
    hep::StopConfig c;
    c.stop_mass = o.stop_mass;
    c.lsp_mass = o.lsp_mass;
    c.stop_cross_section_pb = o.stop_xsec;
    c.dilepton_fraction = o.dilepton_fraction;
    return c;
}

/// The user's file: the feature columns, label and weight. Half of each class trains, half
/// tests; the test weights are doubled so that each half stands for the whole luminosity.
void read_data(const std::string& path, std::uint64_t seed, Sample& train, Sample& test) {
    const std::vector<std::string>& features = hep::stop_feature_names();
    io::CsvOptions opt;
    opt.columns = features;
    opt.columns.push_back("label");
    opt.columns.push_back("weight");
    const io::CsvTable t = io::read_csv(path, opt);
    const std::vector<double> label = t.column("label"), weight = t.column("weight");
    for (std::size_t i = 0; i < t.rows; ++i) {
        if (label[i] != 0.0 && label[i] != 1.0)
            throw value_error(path + ": data line " + std::to_string(i + 2) + ": label " + std::to_string(label[i]) + " is not 0 or 1");
        if (!(weight[i] >= 0.0))
            throw value_error(path + ": data line " + std::to_string(i + 2) + ": weight " + std::to_string(weight[i]) + " is negative");
    }
    const data::TrainTestSplit parts = data::stratified_split(label, 0.5, seed);
    const Tensor<float> x = t.to_tensor<float>(features);
    for (int which = 0; which < 2; ++which) {
        const std::vector<std::size_t>& idx = which ? parts.test : parts.train;
        Sample& s = which ? test : train;
        s.x = data::take_rows(x, idx);
        for (std::size_t i : idx) {
            s.label.push_back(label[i]);
            s.weight.push_back(2.0 * weight[i]);
        }
    }
    if (train.expected(1) <= 0 || train.expected(0) <= 0)
        throw value_error(path + ": needs signal and background rows with positive weights in both halves");
}

/// The rows idx of s.
Sample subset(const Sample& s, const std::vector<std::size_t>& idx) {
    Sample r;
    r.x = data::take_rows(s.x, idx);
    for (std::size_t i : idx) {
        r.label.push_back(s.label[i]);
        r.weight.push_back(s.weight[i]);
    }
    return r;
}

/// Scales each class's weights so that the sample stands for the expected yields of `like`.
void normalise_like(Sample& s, const Sample& like) {
    const double f[2] = {like.expected(0) / s.expected(0), like.expected(1) / s.expected(1)};
    for (std::size_t i = 0; i < s.size(); ++i) s.weight[i] *= f[s.label[i] == 1 ? 1 : 0];
}

void write_events(const std::string& path, const Sample& s, std::size_t n) {
    std::vector<std::string> names = hep::stop_feature_names();
    names.push_back("label");
    names.push_back("weight");
    std::vector<std::vector<double>> cols(names.size());
    const std::size_t nf = hep::StopEvent::num_features;
    // Alternate classes so that the excerpt shows both.
    std::vector<std::size_t> rows;
    for (std::size_t i = 0, j = s.size() - 1; rows.size() < n && i < j; ++i, --j) rows.push_back(i), rows.push_back(j);
    for (std::size_t i : rows) {
        for (std::size_t k = 0; k < nf; ++k) cols[k].push_back(s.x(i, k));
        cols[nf].push_back(s.label[i]);
        cols[nf + 1].push_back(s.weight[i]);
    }
    io::write_csv(path, names, cols);
}

// ---- training ---------------------------------------------------------------------------------

/// One hidden layer of ReLU neurons and a logit output (1 x 23 by default).
Sequential<float> make_network(std::size_t features, std::size_t hidden, Rng& rng) {
    Sequential<float> m;
    m.add<Dense<float>>(features, hidden, rng, Activation::relu).add<Dense<float>>(hidden, 1, rng);
    return m;
}

struct Yields {
    float s_exp, b_exp;  // expected signal and background before any cut
};

/// The three losses on a batch: network logits, labels, physical event weights.
enum class LossKind { bce, s_over_sqrt_sb, asimov };

Var<float> batch_loss(LossKind kind, const Var<float>& logits, const data::Batch<float>& b, Tape<float>& tape, const Yields& y, float r,
                      bool squared) {
    if (kind == LossKind::bce) return bce_with_logits(logits, tape.view(b.y), tape.view(b.w));  // class-balanced weights
    const Var<float> phys = tape.view(b.aux);
    const loss::SoftYields<float> sy = loss::soft_yields(sigmoid(logits), tape.view(b.y), y.s_exp, y.b_exp, &phys);
    if (kind == LossKind::s_over_sqrt_sb) return loss::s_over_sqrt_sb_loss(sy.s, sy.b);
    return loss::asimov_loss(sy.s, sy.b, r, squared);
}

/// `epochs` epochs of one loss; appends the mean batch loss of each to `history` and calls
/// `after_epoch(e)` (e from 1) when given.
void train(Sequential<float>& net, optim::Adam<float>& opt, data::DataLoader<float>& loader, std::size_t epochs, LossKind kind,
           const Yields& y, float r, bool squared, std::vector<double>& history,
           const std::function<void(std::size_t)>& after_epoch = nullptr) {
    Tape<float> tape;
    for (std::size_t e = 0; e < epochs; ++e) {
        double sum = 0;
        std::size_t n = 0;
        for (const auto& b : loader) {
            if (kind != LossKind::bce) {  // soft yields need both classes in the batch
                double ns = 0;
                for (std::size_t i = 0; i < b.size(); ++i) ns += b.y[i];
                if (ns == 0 || ns == static_cast<double>(b.size())) continue;
            }
            tape.clear();
            const Var<float> l = batch_loss(kind, net(tape.view(b.x)), b, tape, y, r, squared);
            backward(l);
            opt.step();
            opt.zero_grad();
            sum += l.item();
            ++n;
        }
        history.push_back(n ? sum / static_cast<double>(n) : std::nan(""));
        if (after_epoch) after_epoch(e + 1);
    }
}

std::vector<double> logits_of(Sequential<float>& net, const Tensor<float>& x) {
    Tape<float> tape;
    NoGradGuard<float> guard(tape);
    std::vector<double> out;
    out.reserve(x.dim(0));
    const std::size_t chunk = 65536, nf = x.dim(1);
    for (std::size_t start = 0; start < x.dim(0); start += chunk) {
        const std::size_t m = std::min(chunk, x.dim(0) - start);
        tape.clear();
        const Var<float> l = net(tape.constant(x.data() + start * nf, Shape{m, nf}));
        for (std::size_t i = 0; i < m; ++i) out.push_back(l[i]);
    }
    return out;
}

// ---- the best cut -----------------------------------------------------------------------------

struct Cut {
    double threshold = 0, s = 0, b = 0, z = 0, sig_eff = 0;
    std::size_t bkg_events = 0;
};

/// Scan of every cut "score >= t" on the test sample: the one with the highest Z_A(s, b, r)
/// among those keeping at least min_bkg background events (so that b is estimated from
/// enough simulated events, not a lucky empty region). Also returns the Z_A curve.
Cut best_cut(const std::vector<double>& score, const Sample& test, double r, std::size_t min_bkg, std::vector<double>* eff_curve = nullptr,
             std::vector<double>* z_curve = nullptr) {
    std::vector<std::size_t> order(score.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return score[a] > score[b]; });
    const double s_tot = test.expected(1);
    Cut best;
    double s = 0, b = 0, next_eff = 1e-3;
    std::size_t nb = 0;
    for (std::size_t k = 0; k < order.size(); ++k) {
        const std::size_t i = order[k];
        (test.label[i] == 1 ? s : b) += test.weight[i];
        nb += test.label[i] == 1 ? 0 : 1;
        if (k + 1 < order.size() && score[order[k + 1]] == score[i]) continue;  // ties pass together
        if (nb < min_bkg || b <= 0) continue;
        const double z = metrics::asimov_significance(s, b, r);
        if (eff_curve && s / s_tot >= next_eff) {  // points spaced by 3% in efficiency
            eff_curve->push_back(s / s_tot);
            z_curve->push_back(z);
            while (next_eff <= s / s_tot) next_eff *= 1.03;
        }
        if (z > best.z) best = Cut{score[i], s, b, z, s / s_tot, nb};
    }
    return best;
}

/// Model selection on the validation sample: after each look, keeps for every systematic r the
/// network with the highest best-cut Z_A(r) on validation events (never on the test sample).
struct Selector {
    const Tensor<float>* x = nullptr;  // standardised validation features; null: keep the last epoch
    const Sample* val = nullptr;
    std::size_t min_bkg = 1;           // validation background events standing for the test floor
    std::vector<double> rs, z, cut;  // cut: the kept network's best logit cut on validation
    std::vector<std::size_t> epoch;
    std::vector<Sequential<float>> net;

    Selector(const Tensor<float>* x_, const Sample* v, std::size_t mb, std::vector<double> r)
        : x(x_), val(v), min_bkg(mb), rs(std::move(r)), z(rs.size(), -1.0), cut(rs.size(), 0.0), epoch(rs.size(), 0), net(rs.size()) {}
    void look(Sequential<float>& current, std::size_t e) {
        if (!x) {
            for (auto& n : net) n = current;
            std::fill(epoch.begin(), epoch.end(), e);
            return;
        }
        const std::vector<double> sc = logits_of(current, *x);
        for (std::size_t i = 0; i < rs.size(); ++i) {
            const Cut c = best_cut(sc, *val, rs[i], min_bkg);
            if (c.z > z[i]) z[i] = c.z, cut[i] = c.threshold, epoch[i] = e, net[i] = current;
        }
    }
    /// Looks at about `looks` evenly spaced epochs of `epochs`, always at the last.
    std::function<void(std::size_t)> every(Sequential<float>& current, std::size_t epochs, std::size_t looks, std::size_t offset = 0) {
        const std::size_t step = std::max<std::size_t>(1, epochs / std::max<std::size_t>(1, looks));
        return [this, &current, epochs, step, offset](std::size_t e) {
            if (e % step == 0 || e == epochs) look(current, offset + e);
        };
    }
    Sequential<float>& at(double r) { return net[static_cast<std::size_t>(std::find(rs.begin(), rs.end(), r) - rs.begin())]; }
};

// ---- output -----------------------------------------------------------------------------------

struct Run {  // one network evaluated at one systematic
    std::size_t seed;
    std::string loss;
    double r;
    std::size_t epoch;  // the one kept by validation
    Cut cut;
};

double mean_of(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()); }
double sd_of(const std::vector<double>& v) {
    if (v.size() < 2) return 0;
    const double m = mean_of(v);
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::sqrt(s / static_cast<double>(v.size() - 1));
}

std::vector<double> select(const std::vector<Run>& runs, const std::string& loss, double r, double Cut::*field) {
    std::vector<double> v;
    for (const auto& x : runs)
        if (x.loss == loss && x.r == r) v.push_back(x.cut.*field);
    return v;
}
std::vector<double> select(const std::vector<Run>& runs, const std::string& loss, double r, std::size_t Run::*field) {
    std::vector<double> v;
    for (const auto& x : runs)
        if (x.loss == loss && x.r == r) v.push_back(static_cast<double>(x.*field));
    return v;
}

const std::vector<std::string> kLosses = {"cross entropy", "(s+b)/s^2", "Asimov"};
const std::vector<std::string> kColours = {"#1f77b4", "#ff7f0e", "#2ca02c"};

void print_table(const std::vector<Run>& runs, std::size_t seeds) {
    std::printf("\nBest cut on each network's output, test sample (mean over %zu training seed%s; Z_A: mean +- sd)\n\n", seeds,
                seeds == 1 ? "" : "s");
    std::printf("%-16s", "loss");
    for (double r : kSystematics) std::printf(" |        sigma_b/b = %2.0f%%        ", 100 * r);
    std::printf("\n%-16s", "");
    for (std::size_t k = 0; k < kSystematics.size(); ++k) std::printf(" | %7s %8s %13s", "s", "b", "Z_A");
    std::printf("\n");
    for (const auto& l : kLosses) {
        std::printf("%-16s", l.c_str());
        for (double r : kSystematics) {
            const auto z = select(runs, l, r, &Cut::z);
            std::printf(" | %7.1f %8.1f %6.2f +- %4.2f", mean_of(select(runs, l, r, &Cut::s)), mean_of(select(runs, l, r, &Cut::b)),
                        mean_of(z), sd_of(z));
        }
        std::printf("\n");
    }
}

void write_results(const std::string& path, const std::vector<Run>& runs) {
    std::vector<double> seed, loss, r, ep, s, b, z, thr, eff, nb;
    for (const auto& x : runs) {
        seed.push_back(static_cast<double>(x.seed));
        loss.push_back(static_cast<double>(std::find(kLosses.begin(), kLosses.end(), x.loss) - kLosses.begin()));
        r.push_back(x.r);
        ep.push_back(static_cast<double>(x.epoch));
        s.push_back(x.cut.s);
        b.push_back(x.cut.b);
        z.push_back(x.cut.z);
        thr.push_back(x.cut.threshold);
        eff.push_back(x.cut.sig_eff);
        nb.push_back(static_cast<double>(x.cut.bkg_events));
    }
    io::write_csv(path, {"seed", "loss", "systematic", "epoch", "s", "b", "z_asimov", "logit_cut", "signal_efficiency", "bkg_test_events"},
              {seed, loss, r, ep, s, b, z, thr, eff, nb});
}

void write_json(const std::string& path, const Options& o, const std::string& source, const std::vector<Run>& runs, std::size_t wins,
                double seconds) {
    std::ofstream f(path);
    if (!f) throw std::runtime_error("cannot write '" + path + "'");
    f.precision(8);
    f << "{\n  \"events\": " << json_string(source) << ",\n  \"lumi_fb\": " << o.lumi << ",\n  \"first_seed\": " << o.seed
      << ",\n  \"seeds\": " << o.seeds << ",\n  \"seconds\": " << seconds << ",\n  \"asimov_beats_bce_at_50pc\": " << wins
      << ",\n  \"results\": [\n";
    bool first = true;
    for (const auto& l : kLosses)
        for (double r : kSystematics) {
            const auto z = select(runs, l, r, &Cut::z);
            f << (first ? "" : ",\n") << "    {\"loss\": " << json_string(l) << ", \"systematic\": " << r
              << ", \"s\": " << mean_of(select(runs, l, r, &Cut::s)) << ", \"b\": " << mean_of(select(runs, l, r, &Cut::b))
              << ", \"z_asimov_mean\": " << mean_of(z) << ", \"z_asimov_sd\": " << sd_of(z) << ", \"z_asimov\": [";
            for (std::size_t i = 0; i < z.size(); ++i) f << (i ? ", " : "") << z[i];
            f << "]}";
            first = false;
        }
    f << "\n  ]\n}\n";
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse_args(argc, argv);
    return examples::run("significance", o.out, Progress{o.quiet}, [&](const Progress& progress) {
        const std::size_t nf = hep::StopEvent::num_features;

        // ---- the test sample (fixed) and where training samples come from ------------------------
        Sample test, data_train;
        std::string source;
        if (!o.data.empty()) {
            read_data(o.data, o.seed, data_train, test);
            source = o.data;
        } else {
            hep::StopGenerator gen(o.seed * 1000003 + 17, generator_config(o));
            test = generate(gen, o.test_sig, o.test_bkg, o.lumi);
            source = "generated, m_stop = " + std::to_string(static_cast<int>(o.stop_mass)) +
                     " GeV, m_LSP = " + std::to_string(static_cast<int>(o.lsp_mass)) + " GeV, " + std::to_string(o.lumi) + " fb^-1";
            write_events(o.out + "/stop_events_sample.csv", test, 2000);
        }
        const Yields yields{static_cast<float>(test.expected(1)), static_cast<float>(test.expected(0))};
        progress.say("events: " + source + "; expected after preselection: S = " + std::to_string(yields.s_exp) +
                     ", B = " + std::to_string(yields.b_exp) + "; test sample " + std::to_string(test.size()) + " events");

        std::vector<Run> runs;
        std::map<std::string, std::vector<double>> history;              // first seed, per loss
        std::map<std::string, std::vector<double>> first_scores;         // first seed, r = 50%
        std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> first_curve;
        for (std::size_t k = 0; k < o.seeds; ++k) {
            const std::uint64_t seed = o.seed + k;
            // ---- training sample: balanced, standardised -------------------------------------------
            Sample tr = data_train, val;
            if (o.data.empty()) {
                hep::StopGenerator gen(seed * 7919 + 3, generator_config(o));
                tr = generate(gen, o.train / 2, o.train - o.train / 2, o.lumi);
                if (o.val_bkg) val = generate(gen, o.val_sig, o.val_bkg, o.lumi);  // same generation, later events
            } else if (o.val_bkg) {  // a quarter of the training half validates
                const data::TrainTestSplit parts = data::stratified_split(data_train.label, 0.25, seed);
                tr = subset(data_train, parts.train);
                val = subset(data_train, parts.test);
            }
            std::size_t val_min_bkg = 0;
            if (o.val_bkg) {
                normalise_like(val, test);
                // The test floor in expected events, in validation events.
                const auto per_bkg_event = [](const Sample& x) {
                    return x.expected(0) / static_cast<double>(std::count(x.label.begin(), x.label.end(), 0.0));
                };
                val_min_bkg = static_cast<std::size_t>(
                    std::max(1.0, std::round(static_cast<double>(o.min_bkg_events) * per_bkg_event(test) / per_bkg_event(val))));
            }
            data::StandardScaler scaler;
            scaler.fit(tr.x);
            data::Dataset<float> d;
            d.x = scaler.transform(tr.x);
            d.y = Tensor<float>(Shape{tr.size(), 1});
            d.w = Tensor<float>(Shape{tr.size()});
            d.aux = Tensor<float>(Shape{tr.size(), 1});
            const std::vector<double> balanced = data::balanced_weights(tr.label);
            const double scale_s = yields.s_exp / tr.expected(1), scale_b = yields.b_exp / tr.expected(0);
            for (std::size_t i = 0; i < tr.size(); ++i) {
                d.y[i] = static_cast<float>(tr.label[i]);
                d.w[i] = static_cast<float>(balanced[i]);
                d.aux[i] = static_cast<float>(tr.weight[i] * (tr.label[i] == 1 ? scale_s : scale_b));
            }
            const Tensor<float> xtest = scaler.transform(test.x);
            const Tensor<float> xval = o.val_bkg ? scaler.transform(val.x) : Tensor<float>();
            const auto selector = [&](std::vector<double> rs) {
                return Selector(o.val_bkg ? &xval : nullptr, &val, val_min_bkg, std::move(rs));
            };

            data::LoaderOptions lo;
            lo.seed = seed;
            data::DataLoader<float> small(d, o.bce_batch, lo), large(d, o.sig_batch, lo), asimov_loader(d, o.asimov_batch, lo);
            const auto evaluate = [&](const std::string& name, Selector& sel) {
                for (std::size_t i = 0; i < sel.rs.size(); ++i) {
                    const double r = sel.rs[i];
                    const std::vector<double> sc = logits_of(sel.net[i], xtest);
                    Run run{seed, name, r, sel.epoch[i], {}};
                    if (k == 0 && r == 0.5) {
                        first_scores[name] = sc;
                        auto& c = first_curve[name];
                        run.cut = best_cut(sc, test, r, o.min_bkg_events, &c.first, &c.second);
                    } else {
                        run.cut = best_cut(sc, test, r, o.min_bkg_events);
                    }
                    runs.push_back(run);
                }
            };
            std::vector<double> hist;

            // 1. Cross-entropy (the classifier does not know r: one network for all three).
            Rng rng(seed * 31 + 1);
            Sequential<float> bce = make_network(nf, o.hidden, rng);
            optim::Adam<float> opt_bce(bce.parameters(), static_cast<float>(o.lr));
            Selector sel_bce = selector(kSystematics);
            train(bce, opt_bce, small, o.bce_epochs, LossKind::bce, yields, 0.f, false, hist,
                  sel_bce.every(bce, o.bce_epochs, o.checkpoints));
            if (k == 0) history["cross entropy"] = hist;
            evaluate("cross entropy", sel_bce);
            progress.say("seed " + std::to_string(seed) + ": cross-entropy network trained");

            // 2. (s+b)/s^2 for all epochs; its first `pretrain` epochs are also the Asimov pretraining.
            Rng rng2(seed * 31 + 2);
            Sequential<float> sb = make_network(nf, o.hidden, rng2);
            optim::Adam<float> opt_sb(sb.parameters(), static_cast<float>(o.lr));
            hist.clear();
            train(sb, opt_sb, large, o.pretrain, LossKind::s_over_sqrt_sb, yields, 0.f, false, hist);
            const Sequential<float> pretrained = sb;  // deep copy, the starting point of the Asimov networks
            Selector sel_sb = selector(kSystematics);
            train(sb, opt_sb, large, o.epochs - o.pretrain, LossKind::s_over_sqrt_sb, yields, 0.f, false, hist,
                  sel_sb.every(sb, o.epochs - o.pretrain, o.checkpoints, o.pretrain));
            if (k == 0) history["(s+b)/s^2"] = hist;
            evaluate("(s+b)/s^2", sel_sb);

            // 3. Asimov, one network per systematic, each from the pretrained one.
            // With --pretrain-bce each starts from the cross-entropy network selected at its r.
            for (double r : kSystematics) {
                Sequential<float> az = o.pretrain_bce ? sel_bce.at(r) : pretrained;
                if (o.pretrain_bce && o.centre && o.val_bkg && !o.control_bce) {
                    // The soft yields cut at logit 0, the cross-entropy network's best cut is near logit 8:
                    // without the shift most Asimov steps go into moving the bias there.
                    std::vector<Parameter<float>*> ps = az.parameters();
                    const std::size_t i = static_cast<std::size_t>(std::find(kSystematics.begin(), kSystematics.end(), r) - kSystematics.begin());
                    ps.back()->value[0] -= static_cast<float>(sel_bce.cut[i]);
                }
                const std::size_t epochs = o.pretrain_bce ? o.finetune_epochs : o.epochs - o.pretrain;
                optim::Adam<float> opt_az(az.parameters(), static_cast<float>(o.pretrain_bce ? o.finetune_lr : o.lr));
                std::vector<double> h(hist.begin(), hist.begin() + static_cast<std::ptrdiff_t>(o.pretrain_bce ? 0 : o.pretrain));
                Selector sel_az = selector({r});
                train(az, opt_az, asimov_loader, epochs, o.control_bce ? LossKind::bce : LossKind::asimov, yields, static_cast<float>(r), o.squared, h,
                      sel_az.every(az, epochs, o.checkpoints));
                if (k == 0 && r == 0.5) history["Asimov"] = h;
                evaluate("Asimov", sel_az);
            }
            progress.say("seed " + std::to_string(seed) + ": significance networks trained");
        }

        // ---- results ------------------------------------------------------------------------------
        print_table(runs, o.seeds);
        const auto z_bce = select(runs, "cross entropy", 0.5, &Cut::z), z_as = select(runs, "Asimov", 0.5, &Cut::z);
        const auto e_bce = select(runs, "cross entropy", 0.5, &Run::epoch), e_as = select(runs, "Asimov", 0.5, &Run::epoch);
        std::size_t wins = 0;
        std::printf("\nAt 50%% systematic, per seed (epoch kept): cross entropy | Asimov\n");
        for (std::size_t i = 0; i < z_bce.size(); ++i) {
            wins += z_as[i] > z_bce[i] ? 1 : 0;
            std::printf("  seed %2zu: %5.2f (%3.0f) | %5.2f (%3.0f)\n", o.seed + i, z_bce[i], e_bce[i], z_as[i], e_as[i]);
        }
        std::printf("\nAt 50%% systematic: Z_A(Asimov) = %.2f +- %.2f, Z_A(cross entropy) = %.2f +- %.2f; Asimov higher in %zu of %zu seeds\n",
                    mean_of(z_as), sd_of(z_as), mean_of(z_bce), sd_of(z_bce), wins, z_bce.size());

        write_results(o.out + "/significance_results.csv", runs);
        write_json(o.out + "/summary.json", o, source, runs, wins, progress.seconds());
        {  // long format: network (0 cross entropy, 1 (s+b)/s^2, 2 Asimov at r = 50%), epoch, loss
            std::vector<double> net, epoch, value;
            for (std::size_t l = 0; l < kLosses.size(); ++l)
                for (std::size_t e = 0; e < history[kLosses[l]].size(); ++e) {
                    net.push_back(static_cast<double>(l));
                    epoch.push_back(static_cast<double>(e + 1));
                    value.push_back(history[kLosses[l]][e]);
                }
            io::write_csv(o.out + "/history.csv", {"network", "epoch", "loss"}, {net, epoch, value});
        }

        // ---- plots --------------------------------------------------------------------------------
        using namespace tapir::io;
        {  // network outputs (sigmoid of the logit), expected events, log scale
            Figure fig(1320, 420, 1, 3);
            fig.suptitle("Network outputs on the test sample (expected events at the luminosity; Asimov with r = 50%)");
            int col = 0;
            for (const auto& l : kLosses) {
                std::vector<double> ps, pb, ws, wb;
                const std::vector<double>& sc = first_scores[l];
                for (std::size_t i = 0; i < sc.size(); ++i) {
                    const double p = 1.0 / (1.0 + std::exp(-sc[i]));
                    (test.label[i] == 1 ? ps : pb).push_back(p);
                    (test.label[i] == 1 ? ws : wb).push_back(test.weight[i]);
                }
                auto& ax = fig.axes(0, col++);
                ax.histogram(pb, wb, 40, 0.0, 1.0, Style("top pairs").fill(0.3));
                ax.histogram(ps, ws, 40, 0.0, 1.0, Style("stop pairs").width(2));
                ax.set_log_y().set_xlabel("network output").set_ylabel("expected events / bin").set_title(l);
            }
            fig.save(o.out + "/outputs.svg");
        }
        {  // Z_A against signal efficiency of the cut, r = 50%
            Figure fig(680, 480);
            auto& ax = fig.axes();
            for (std::size_t i = 0; i < kLosses.size(); ++i)
                ax.line(first_curve[kLosses[i]].first, first_curve[kLosses[i]].second, Style(kLosses[i], kColours[i]).width(2));
            ax.set_xlabel("signal efficiency of the cut").set_ylabel("Z_A (σ_b/b = 50%)").set_log_x();
            ax.set_title("Asimov significance along each network's cut (first seed)").legend();
            fig.save(o.out + "/significance_vs_cut.svg");
        }
        {  // best-cut Z_A against the systematic, mean and sd over seeds
            Figure fig(680, 480);
            auto& ax = fig.axes();
            double shift = -0.01;
            for (std::size_t li = 0; li < kLosses.size(); ++li) {
                const std::string& l = kLosses[li];
                std::vector<double> x, y, e;
                for (double r : kSystematics) {
                    const auto z = select(runs, l, r, &Cut::z);
                    x.push_back(100 * (r + shift));
                    y.push_back(mean_of(z));
                    e.push_back(sd_of(z));
                }
                ax.errorbars(x, y, e, Style(l, kColours[li]).marker('o'));
                ax.line(x, y, Style("", kColours[li]).alpha(0.5));
                shift += 0.01;
            }
            ax.set_xlabel("background systematic σ_b/b [%]").set_ylabel("best-cut Z_A (mean ± sd over seeds)");
            ax.set_title("Discovery significance at the best cut").legend();
            fig.save(o.out + "/significance_vs_systematic.svg");
        }
        {  // training histories
            Figure fig(1320, 400, 1, 3);
            fig.suptitle("Training loss per epoch (first seed)");
            int col = 0;
            for (const auto& l : kLosses) {
                auto& ax = fig.axes(0, col++);
                const std::vector<double>& h = history[l];
                std::vector<double> epoch;
                for (std::size_t e = 0; e < h.size(); ++e) epoch.push_back(static_cast<double>(e + 1));
                if (l != "cross entropy") ax.set_log_y();
                ax.line(epoch, h, Style(l).width(2));
                if (l == "Asimov" && !o.pretrain_bce) ax.vline(static_cast<double>(o.pretrain) + 0.5, Style("end of pretraining", "#666666").dashed());
                ax.set_xlabel("epoch").set_ylabel("batch loss").set_title(l == "Asimov" ? "Asimov (1/Z_A, r = 50%)" : l);
            }
            fig.save(o.out + "/history.svg");
        }
        std::printf("\nwrote %s/{significance_results.csv, summary.json, history.csv%s, outputs.svg, significance_vs_cut.svg, "
                    "significance_vs_systematic.svg, history.svg} in %.1f s\n",
                    o.out.c_str(), o.data.empty() ? ", stop_events_sample.csv" : "", progress.seconds());
        return 0;
    });
}
