// The main job: a Higgs (H -> gamma gamma) classifier on photon 4-vectors, and the same classifier
// decorrelated from the diphoton mass by an adversary (Louppe, Kagan, Cranmer, arXiv 1611.01046).
//
// A plain classifier learns that background at high m_yy looks more signal-like (harder photons,
// wider |delta eta|), so cutting on it sculpts a bump into the background mass spectrum. The
// adversary, a Gaussian mixture density network, tries to predict m_yy of background events from
// the classifier output; the classifier minimises L_bce - lambda * L_adversary, L_bce the mean
// cross-entropy per event and L_adversary the mean negative log-likelihood (nats) per background
// event of the mass scaled to [0, 1]. The protocol is the paper's Algorithm 1 in
// nn::PivotTrainer: the classifier is pretrained briefly (the plain classifier after --pretrain-epochs,
// 2 by default: a classifier trained to the end has learnt the mass features that the game would have
// to unlearn at a small learning rate, and ends far more sculpted), the adversary is trained to
// convergence on it frozen, then K adversary steps on fresh batches of background events per
// classifier step, the classifier's learning rate annealed by half a cosine to 0 over the game (at a
// constant rate the game at large lambda oscillates, the classifier now and then slipping mass
// information past the adversary, and where it ends is chance); finally an adversary refit from
// scratch on the frozen classifier tells whether the adversary kept up (a lost game) or not.
//
//   higgs [--data FILE | --events N --seed S] [--lambda L] [--epochs E] [--out DIR]
//         [--scan-lambda] [--write-events FILE] [--quiet]
#include <tapir/data/dataset.hpp>
#include <tapir/hep/diphoton.hpp>
#include <tapir/io/csv.hpp>
#include <tapir/io/svg.hpp>
#include <tapir/loss/mdn.hpp>
#include <tapir/metrics/metrics.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/pivot.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/tapir.hpp>

#include "../common/cli.hpp"
#include "../common/diphoton.hpp"
#include "../common/estimates.hpp"
#include "../common/output_dir.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace tapir;
using nn::Dense;
using nn::Sequential;

namespace {

using namespace examples::diphoton;  // the shared H -> yy events, mass window and classifier

// ---- options ----------------------------------------------------------------------------------

struct Options {
    std::string data;                // course-format CSV; empty: generate events
    std::string out = ".";           // where results and plots go
    std::string write_events;        // write the generated events as CSV
    std::size_t events = 60000;      // generated events split 70/30 into training and test events
    std::size_t test_events = 60000; // more generated events for the test set alone (resolves 1/JSD ~ 1000)
    std::uint64_t seed = 1;
    double lambda = 10.0;            // adversary strength: L_bce - lambda * L_adv (see the top of the file)
    std::size_t epochs = 40;         // plain classifier epochs
    std::size_t pretrain_epochs = 2; // the adversarial classifier starts from the plain one after this many epochs
    std::size_t adv_pretrain = 3000; // at most this many adversary steps on the frozen classifier (to convergence)
    std::size_t adv_epochs = 20;     // the game: classifier steps = adv_epochs passes over the training set
    std::size_t adv_steps = 5;       // K adversary steps per classifier step, each on a fresh batch
    std::size_t batch = 64;          // classifier batch, plain training
    std::size_t game_batch = 256;    // classifier batch in the game
    std::size_t adv_batch = 512;     // background events per adversary batch
    double adv_lr = 1e-3;            // Adam learning rate of the adversary
    double game_lr = 6e-4;           // Adam learning rate of the classifier at the start of the game (annealed)
    bool constant_game_lr = false;   // else the game's classifier rate is annealed by half a cosine to 0
                                     // (from 6e-4, twice the old constant rate: the same mean rate)
    std::vector<std::size_t> adv_hidden{200, 100, 50};  // the adversary's hidden layers (the course's)
    std::size_t check_steps = 2000;  // steps of the adversary refit that judges the game (0: no check)
    std::size_t bootstrap = 100;     // bootstrap replicas for the uncertainties (0: none)
    bool scan = false;
    bool quiet = false;
};

const examples::Cli cli("higgs",
                         "higgs [--data FILE | --events N [--test-events N]] [--seed S] [--lambda L] [--epochs E] [--pretrain-epochs P]\n"
                         "             [--adv-epochs E] [--adv-pretrain N] [--adv-steps K] [--batch B] [--game-batch B] [--adv-batch B]\n"
                         "             [--adv-lr R] [--game-lr R] [--constant-game-lr] [--adv-hidden W1,W2,..]\n"
                         "             [--check-steps N] [--out DIR]\n"
                         "             [--scan-lambda] [--bootstrap N] [--write-events FILE] [--quiet] [--help]\n"
                         "  --test-events N generated events added to the test set only (default 60000, so that 1/JSD ~ 1000\n"
                         "                  stands above the random-selection floor; ignored with --data)\n"
                         "  --lambda L      the classifier minimises L_bce - L * L_adv: mean cross-entropy per event minus L times\n"
                         "                  the adversary's mean NLL (nats) per background event (default 10)\n"
                         "  --pretrain-epochs P  the adversarial classifier's pretraining: the plain classifier after\n"
                         "                  min(P, E) of its E epochs (default 2; 0: untrained)\n"
                         "  --adv-pretrain N  at most N adversary steps on the frozen classifier, to convergence (default 3000)\n"
                         "  --adv-epochs E  game length in passes of --game-batch over the training set (default 20)\n"
                         "  --adv-steps K   adversary steps per classifier step, each on a fresh batch (default 5)\n"
                         "  --adv-batch B   background events per adversary batch (default 512)\n"
                         "  --adv-lr R, --game-lr R  Adam learning rates of the adversary and of the classifier in the game\n"
                         "                  (default 1e-3 and 6e-4, the latter at the start of the game)\n"
                         "  --constant-game-lr  keep the classifier's game rate constant (default: annealed by half a cosine\n"
                         "                  to 0 over the game, so that the game ends settled)\n"
                         "  --adv-hidden W1,W2,..  the adversary's hidden layer widths (default 200,100,50, the course's)\n"
                         "  --check-steps N steps of the from-scratch adversary refit that detects a lost game (default 2000; 0: none)\n"
                         "  --bootstrap N   bootstrap replicas for the uncertainties of R50 and 1/JSD and for the\n"
                         "                  1/JSD floor of a mass-blind selection (default 100; 0: none)\n");

Options parse_args(int argc, char** argv) {
    Options o;
    const auto rate = [](double& to) {  // an Adam learning rate in (0, 1)
        return [&to](const std::string& a, const char* v) {
            to = cli.number(a, v);
            if (!(to > 0 && to < 1)) cli.usage(a + " must be in (0, 1)");
        };
    };
    examples::Flags(cli)
        .text("--data", o.data).text("--out", o.out).text("--write-events", o.write_events)
        .count("--events", o.events).count("--test-events", o.test_events, 0).seed("--seed", o.seed)
        .on("--lambda", [&](const std::string& a, const char* v) {
            o.lambda = cli.number(a, v);
            if (o.lambda < 0) cli.usage("--lambda must be >= 0");
        })
        .count("--epochs", o.epochs).count("--pretrain-epochs", o.pretrain_epochs, 0).count("--adv-epochs", o.adv_epochs)
        .count("--batch", o.batch).count("--adv-batch", o.adv_batch).count("--game-batch", o.game_batch)
        .count("--check-steps", o.check_steps, 0).on("--adv-lr", rate(o.adv_lr)).on("--game-lr", rate(o.game_lr))
        .count("--adv-pretrain", o.adv_pretrain).count("--adv-steps", o.adv_steps).flag("--scan-lambda", o.scan)
        .flag("--constant-game-lr", o.constant_game_lr)
        .count("--bootstrap", o.bootstrap, 0).flag("--quiet", o.quiet)
        .on("--adv-hidden", [&](const std::string& a, const char* v) {
            o.adv_hidden.clear();
            std::stringstream ss(v);
            std::string item;
            while (std::getline(ss, item, ',')) o.adv_hidden.push_back(static_cast<std::size_t>(cli.count(a, item.c_str(), 1, 4096)));
            if (o.adv_hidden.empty()) cli.usage(a + " needs at least one layer width");
        })
        .parse(argc, argv);
    examples::diphoton::check_event_count(cli, o.data, o.events);
    return o;
}

// ---- networks ---------------------------------------------------------------------------------

constexpr std::size_t kComponents = 5;
/// A game is lost when the trained adversary's NLL exceeds a refit's by more than this (nats per
/// background event): healthy games show gaps below 0.002 on the refit's held-out half, while a
/// classifier that slipped to 1/JSD ~ 150 left a gap of 0.004 (generated events, seed 2, lambda 100).
constexpr float kLostGameTolerance = 0.003f;
/// The course adversary: classifier output -> 200 -> 100 -> 50 -> a 5-component Gaussian mixture over
/// the scaled mass (mixture logits, means, raw widths).
nn::MdnAdversary<float> make_adversary(Rng& rng, const std::vector<std::size_t>& hidden) {
    return nn::MdnAdversary<float>(1, hidden, kComponents, rng);
}

// ---- training ---------------------------------------------------------------------------------

struct Split {
    data::Dataset<float> train, test;  // aux column 0: mass scaled to [0, 1]
    std::vector<double> test_myy, test_label;
};

/// Losses per step: the plain classifier's epochs (mean BCE, at the step that ends each epoch),
/// then the adversary's pretraining and the game (classifier BCE and adversary NLL per classifier step).
struct History {
    std::vector<double> clf_loss;          // per epoch of plain training
    std::size_t clf_steps_per_epoch = 0;
    std::size_t pretrain_epochs = 0;       // the first epochs of clf_loss: the adversarial classifier's pretraining
    std::vector<double> adv_pretrain_loss; // per adversary pretraining step
    std::vector<double> ann_clf_loss, ann_adv_loss;  // per classifier step of the game
    double marginal_loss = std::nan("");   // the adversary NLL with no information from the classifier
};

using examples::Progress;

/// One epoch of plain binary cross-entropy; returns the mean batch loss.
double train_classifier_epoch(Sequential<float>& clf, optim::Adam<float>& opt, data::DataLoader<float>& loader, Tape<float>& tape) {
    double sum = 0;
    std::size_t n = 0;
    for (const auto& b : loader) {
        tape.clear();
        const Var<float> l = bce_with_logits(clf(tape.view(b.x)), tape.view(b.y));
        backward(l);
        opt.step();
        opt.zero_grad();
        sum += l.item();
        ++n;
    }
    return sum / static_cast<double>(n);
}

/// Scores (sigmoid outputs) of a network on a whole set, in eval mode without gradients.
std::vector<double> predict(Sequential<float>& net, const Tensor<float>& x) {
    Tape<float> tape;
    NoGradGuard<float> guard(tape);
    net.eval();
    const Var<float> p = sigmoid(net(tape.view(x)));
    net.train();
    return std::vector<double>(p.data(), p.data() + p.size());
}

struct Result {
    std::string name;
    double auc = 0, r50 = 0, jsd = 0, threshold = 0;
    std::vector<double> score;
    bool has_estimate = false;
    metrics::SculptingEstimate est;  // R50 and 1/JSD with bootstrap uncertainties, and the 1/JSD floor
    bool adversarial = false, has_game = false, adversary_converged = true;
    double lambda = 0;
    nn::PivotGameCheck<float> game;  // did the adversary keep up (refit from scratch on the frozen classifier)
};

/// Bootstrap uncertainties (68% intervals) and the random-selection floor for every result.
void add_uncertainties(std::vector<Result>& rs, const Split& s, const Options& o) {
    if (o.bootstrap == 0) return;
    for (Result& r : rs) {
        r.est = examples::diphoton::estimate(r.score, s.test_myy, s.test_label, o.bootstrap, o.seed);
        r.has_estimate = true;
    }
}

Result finish(Result r, const Split& s);

Result evaluate(const std::string& name, Sequential<float>& net, const Split& s) {
    Result r;
    r.name = name;
    r.score = predict(net, s.test.x);
    return finish(std::move(r), s);
}

Result finish(Result r, const Split& s) {
    r.auc = metrics::roc_auc(r.score, s.test_label);
    r.r50 = metrics::background_rejection(r.score, s.test_label, {}, 0.5);
    const metrics::SculptingResult sc = metrics::mass_sculpting_jsd(r.score, s.test_myy, s.test_label, {}, 0.5, kMassLo, kMassHi, 5.0);
    r.jsd = sc.jsd;
    r.threshold = sc.threshold;
    return r;
}

/// The plain classifier: `epochs` epochs of BCE.
/// The plain classifier: `epochs` epochs of BCE; `pretrained` gets its state after min(pretrain_epochs, epochs)
/// epochs, the adversarial classifier's start.
Result train_plain(const Split& s, const Options& o, Sequential<float>& clf, Sequential<float>& pretrained, History& h, const Progress& p) {
    optim::Adam<float> opt(clf.parameters(), 1e-3f);
    data::LoaderOptions lo;
    lo.seed = o.seed;
    data::DataLoader<float> loader(s.train, o.batch, lo);
    Tape<float> tape;
    h.clf_steps_per_epoch = (s.train.x.dim(0) + o.batch - 1) / o.batch;
    h.pretrain_epochs = std::min(o.pretrain_epochs, o.epochs);
    if (h.pretrain_epochs == 0) pretrained = clf;
    for (std::size_t e = 0; e < o.epochs; ++e) {
        h.clf_loss.push_back(train_classifier_epoch(clf, opt, loader, tape));
        p.say("classifier epoch " + std::to_string(e + 1) + "/" + std::to_string(o.epochs) + ": loss " + std::to_string(h.clf_loss.back()));
        if (e + 1 == h.pretrain_epochs) pretrained = clf;
    }
    return evaluate("classifier", clf, s);
}

/// The adversarial classifier (arXiv 1611.01046, Algorithm 1, in nn::PivotTrainer): start from
/// the trained plain classifier (the classifier's pretraining), train the adversary to convergence
/// on it frozen, then K adversary steps on fresh background batches per classifier step on
/// L_bce - lambda * L_adv; then refit an adversary from scratch on the final classifier to see
/// whether the game was lost.
Result train_adversarial(const Split& s, const Options& o, const Sequential<float>& pretrained, double lambda, History& h,
                         const Progress& p) {
    Rng rng(o.seed * 7919 + 2);
    Sequential<float> clf = pretrained;  // deep copy
    nn::MdnAdversary<float> adv = make_adversary(rng, o.adv_hidden);
    optim::Adam<float> clf_opt(clf.parameters(), static_cast<float>(o.game_lr));
    optim::Adam<float> adv_opt(adv.parameters(), static_cast<float>(o.adv_lr));
    nn::PivotOptions<float> po;
    po.lambda = static_cast<float>(lambda);
    po.adversary_steps = o.adv_steps;
    po.pretrain_classifier_steps = 0;  // the plain classifier is the pretrained one
    po.pretrain_adversary_steps = std::min<std::size_t>(200, o.adv_pretrain);
    po.pretrain_adversary_max_steps = o.adv_pretrain;
    po.convergence_window = 100;
    po.convergence_tolerance = 1e-3f;
    const std::size_t n_train = s.train.x.dim(0);
    po.steps = o.adv_epochs * ((n_train + o.game_batch - 1) / o.game_batch);
    po.batch_size = o.game_batch;
    po.adversary_batch_size = o.adv_batch;
    po.adversary_events = nn::PivotEvents::background;
    po.anneal_classifier_lr = !o.constant_game_lr;
    po.lost_game_tolerance = kLostGameTolerance;
    po.mdn.truncate = true;  // each component truncated to [0, 1], as in the course code
    po.seed = o.seed + 1;
    nn::PivotTrainer<float> tr(clf, adv, clf_opt, adv_opt, po);
    tr.set_data(s.train.x, s.train.y, s.train.aux);
    std::ostringstream lam;
    lam << lambda;
    p.say("adversarial training, lambda " + lam.str() + ": adversary pretraining (at most " +
          std::to_string(o.adv_pretrain) + " steps), then " + std::to_string(po.steps) + " classifier steps x " +
          std::to_string(o.adv_steps) + " adversary steps");
    clf.train();
    const nn::PivotHistory<float> ph = tr.run();
    h.adv_pretrain_loss.assign(ph.adversary_pretrain.begin(), ph.adversary_pretrain.end());
    h.ann_clf_loss.assign(ph.classifier_bce.begin(), ph.classifier_bce.end());
    h.ann_adv_loss.assign(ph.adversary.begin(), ph.adversary.end());
    std::ostringstream name;
    name << "adversarial (lambda=" << lambda << ")";
    Result r;
    r.name = name.str();
    r.adversarial = true;
    r.lambda = lambda;
    r.adversary_converged = ph.adversary_converged;
    p.say("adversary pretraining: " + std::to_string(ph.adversary_pretrain.size()) + " steps, " +
          (ph.adversary_converged ? "converged" : "NOT converged") + "; game: final adversary NLL " +
          (ph.adversary.empty() ? std::string("-") : std::to_string(ph.adversary.back())));
    if (o.check_steps > 0) {
        r.game = tr.check_game(o.check_steps, static_cast<float>(o.adv_lr));
        r.has_game = true;
        h.marginal_loss = r.game.marginal_loss;
        p.say("game check: adversary NLL " + std::to_string(r.game.adversary_loss) + ", refit from scratch " +
              std::to_string(r.game.refit_loss) + ", mass shape alone " + std::to_string(r.game.marginal_loss) +
              (r.game.lost ? ": the adversary LOST the game" : ": the adversary kept up"));
    }
    r.score = predict(clf, s.test.x);
    return finish(std::move(r), s);
}

/// The first n_split events split 70/30; any events after them join the test set.
Split make_split(const Events& ev, std::size_t n_split, std::uint64_t seed) {
    auto parts = data::train_test_split(n_split, 0.3, seed);
    for (std::size_t i = n_split; i < ev.size(); ++i) parts.test.push_back(i);
    Split s;
    for (int which = 0; which < 2; ++which) {
        const std::vector<std::size_t>& idx = which == 0 ? parts.train : parts.test;
        data::Dataset<float>& d = which == 0 ? s.train : s.test;
        d.x = data::take_rows(ev.x, idx);
        d.y = Tensor<float>(Shape{idx.size(), 1});
        d.w = Tensor<float>(Shape{idx.size()});
        d.aux = Tensor<float>(Shape{idx.size(), 1});
        for (std::size_t k = 0; k < idx.size(); ++k) {
            const std::size_t i = idx[k];
            d.y[k] = static_cast<float>(ev.label[i]);
            d.w[k] = static_cast<float>(1.0 - ev.label[i]);  // the adversary sees background only
            d.aux[k] = static_cast<float>((ev.myy[i] - kMassLo) / (kMassHi - kMassLo));
            if (which == 1) {
                s.test_myy.push_back(ev.myy[i]);
                s.test_label.push_back(ev.label[i]);
            }
        }
    }
    data::StandardScaler scaler;
    scaler.fit(s.train.x);
    s.train.x = scaler.transform(s.train.x);
    s.test.x = scaler.transform(s.test.x);
    return s;
}

// ---- output -----------------------------------------------------------------------------------

void write_results(const std::string& path, const Split& s, const Result& r) {
    io::write_csv(path, {"myy", "y_pred", "y_true"}, {s.test_myy, r.score, s.test_label});
}

/// Background m_yy histogram (counts per bin, and their Poisson errors) normalised to unit area as a density per GeV.
void normalised_density(const std::vector<double>& m, std::size_t bins, std::vector<double>& x, std::vector<double>& y,
                        std::vector<double>& err) {
    const double w = (kMassHi - kMassLo) / static_cast<double>(bins);
    std::vector<double> c(bins, 0.0);
    double n = 0;
    for (double v : m) {
        if (v < kMassLo || v >= kMassHi) continue;
        c[std::min(bins - 1, static_cast<std::size_t>((v - kMassLo) / w))] += 1;
        n += 1;
    }
    x.clear(), y.clear(), err.clear();
    for (std::size_t i = 0; i < bins; ++i) {
        x.push_back(kMassLo + (static_cast<double>(i) + 0.5) * w);
        y.push_back(n > 0 ? c[i] / (n * w) : 0.0);
        err.push_back(n > 0 ? std::sqrt(c[i]) / (n * w) : 0.0);
    }
}

void plot_all(const std::string& out, const Split& s, const Result& clf, const Result& ann, const History& h) {
    using namespace tapir::io;
    {
        // The convention of the notes' tables and of R50: background rejection 1/eps_B (log) against eps_S.
        Figure fig(640, 520);
        auto& ax = fig.axes();
        double nb = 0;
        for (double l : s.test_label) nb += l < 0.5 ? 1 : 0;
        for (const Result* r : {&clf, &ann}) {
            const metrics::RocCurve roc = metrics::roc_curve(r->score, s.test_label);
            std::vector<double> x, y;
            for (std::size_t i = 0; i < roc.tpr.size(); ++i) {
                if (!(roc.fpr[i] > 0) || !(roc.tpr[i] > 0.01)) continue;  // 1/eps_B undefined at eps_B = 0
                x.push_back(roc.tpr[i]);
                y.push_back(1.0 / roc.fpr[i]);
            }
            std::ostringstream label;
            label.precision(3);
            label << r->name << ", AUC " << r->auc << ", R50 " << r->r50;
            ax.line(x, y, Style(label.str()).width(2));
        }
        std::vector<double> rx, ry;
        for (int i = 1; i <= 100; ++i) {
            rx.push_back(i / 100.0);
            ry.push_back(100.0 / i);
        }
        ax.line(rx, ry, Style("random (1/ε_S)", "#999999").dashed());
        ax.vline(0.5, Style("ε_S = 0.5 (R50)", "#444444").dashed());
        std::ostringstream t;
        t << "ROC curves (test events; 1/ε_B resolved down to 1/" << nb << ")";
        ax.set_xlabel("signal efficiency ε_S").set_ylabel("background rejection 1/ε_B").set_title(t.str());
        ax.set_xlim(0, 1).set_log_y();
        fig.save(out + "/roc.svg");
    }
    /// One panel per network, side by side: draw(axes, result).
    const auto per_network = [&](const std::string& file, const std::string& title, const auto& draw) {
        Figure fig(1100, 440, 1, 2);
        fig.suptitle(title);
        int col = 0;
        for (const Result* r : {&clf, &ann}) draw(fig.axes(0, col++), *r);
        fig.save(out + "/" + file);
    };
    per_network("discriminant.svg", "Discriminant distributions (test events)", [&](auto& ax, const Result& r) {
        std::vector<double> sig, bkg;
        for (std::size_t i = 0; i < r.score.size(); ++i) (s.test_label[i] > 0.5 ? sig : bkg).push_back(r.score[i]);
        ax.histogram(bkg, 40, 0.0, 1.0, Style("background").fill(0.3), true);
        ax.histogram(sig, 40, 0.0, 1.0, Style("signal (H → γγ)").width(2), true);
        ax.vline(r.threshold, Style("cut at ε_S = 50%", "#444444").dashed());
        ax.set_xlabel("network output (dimensionless)").set_ylabel("normalised events per unit output").set_title(r.name).set_log_y();
    });
    per_network("mass_sculpting.svg", "Background m_γγ passing vs failing the cut at 50% signal efficiency (test events)",
                [&](auto& ax, const Result& r) {
                    std::vector<double> pass, fail;
                    for (std::size_t i = 0; i < r.score.size(); ++i) {
                        if (s.test_label[i] > 0.5) continue;
                        (r.score[i] >= r.threshold ? pass : fail).push_back(s.test_myy[i]);
                    }
                    const std::size_t bins = static_cast<std::size_t>((kMassHi - kMassLo) / 5.0 + 0.5);  // the JSD's 5 GeV bins
                    std::vector<double> x, y, e;
                    normalised_density(fail, bins, x, y, e);
                    ax.errorbars(x, y, e, Style("failing (" + std::to_string(fail.size()) + " events)", "#1f77b4").marker('o'));
                    normalised_density(pass, bins, x, y, e);
                    ax.errorbars(x, y, e, Style("passing (" + std::to_string(pass.size()) + " events)", "#d62728").marker('s'));
                    std::ostringstream t;
                    t.precision(3);
                    t << r.name << ": 1/JSD = " << 1.0 / r.jsd;
                    if (r.has_estimate) t << " [" << r.est.inverse_jsd.lo << ", " << r.est.inverse_jsd.hi << "], floor ~" << r.est.floor.value;
                    ax.set_xlabel("m_γγ [GeV]").set_ylabel("1/N dN/dm_γγ [1/GeV]").set_title(t.str());
                });
    {
        // Two panels over one step axis: the classifier's loss above, the adversary's below, with the
        // three phases marked (classifier pretraining = the plain classifier, adversary pretraining, the game).
        Figure fig(900, 700, 2, 1);
        fig.suptitle("Training history (adversarial classifier at the default lambda)");
        const double n1 = static_cast<double>(h.pretrain_epochs * h.clf_steps_per_epoch);
        const double n2 = n1 + static_cast<double>(h.adv_pretrain_loss.size());
        const double n3 = n2 + static_cast<double>(h.ann_clf_loss.size());
        /// Means over windows of w steps (per-step losses are noisy), placed at the window centres from x0.
        const auto binned = [](const std::vector<double>& v, double x0, std::vector<double>& x, std::vector<double>& y) {
            const std::size_t w = std::max<std::size_t>(1, v.size() / 100);
            x.clear(), y.clear();
            for (std::size_t i = 0; i + w <= v.size(); i += w) {
                double m = 0;
                for (std::size_t j = i; j < i + w; ++j) m += v[j];
                x.push_back(x0 + static_cast<double>(i) + 0.5 * static_cast<double>(w));
                y.push_back(m / static_cast<double>(w));
            }
        };
        std::vector<double> x, y;
        auto& top = fig.axes(0, 0);
        for (std::size_t i = 0; i < h.pretrain_epochs; ++i) {
            x.push_back(static_cast<double>((i + 1) * h.clf_steps_per_epoch));
            y.push_back(h.clf_loss[i]);
        }
        top.line(x, y, Style("classifier pretraining: BCE (epoch means)").width(2));
        binned(h.ann_clf_loss, n2, x, y);
        top.line(x, y, Style("game: classifier BCE", "#d62728").width(2));
        top.set_xlabel("training step (classifier steps; adversary steps while it pretrains)")
            .set_ylabel("classifier loss L_bce [nats/event]");
        auto& bot = fig.axes(1, 0);
        binned(h.adv_pretrain_loss, n1, x, y);
        bot.line(x, y, Style("adversary pretraining: NLL", "#2ca02c").width(2));
        binned(h.ann_adv_loss, n2, x, y);
        bot.line(x, y, Style("game: adversary NLL", "#9467bd").width(2));
        if (std::isfinite(h.marginal_loss)) bot.hline(h.marginal_loss, Style("NLL of the mass shape alone (perfect pivot)", "#444444").dashed());
        bot.set_xlabel("training step (classifier steps; adversary steps while it pretrains)")
            .set_ylabel("adversary loss L_adv [nats/background event]");
        for (auto* ax : {&top, &bot}) {
            ax->vline(n1, Style("", "#999999").dashed());
            ax->vline(n2, Style("", "#999999").dashed());
            ax->set_xlim(0, std::max(n3, 1.0));
        }
        const double span = std::max(n3, 1.0);
        top.annotate(0.5 * n1 / span, 0.92, "classifier pretraining", Style("", "#444444"));
        bot.annotate(0.5 * (n1 + n2) / span, 0.92, "adversary pretraining", Style("", "#444444"));
        top.annotate(0.5 * (n2 + n3) / span, 0.92, "game", Style("", "#444444"));
        fig.save(out + "/history.svg");
    }
}

void write_history(const std::string& path, const History& h) {
    std::ofstream f(path);
    if (!f) throw std::runtime_error("cannot write '" + path + "'");
    f << "phase,step,classifier_bce,adversary_nll\n";
    for (std::size_t i = 0; i < h.pretrain_epochs; ++i) f << "classifier_pretraining," << (i + 1) * h.clf_steps_per_epoch << ',' << h.clf_loss[i] << ",\n";
    const std::size_t n1 = h.pretrain_epochs * h.clf_steps_per_epoch;
    for (std::size_t i = 0; i < h.adv_pretrain_loss.size(); ++i) f << "adversary_pretraining," << n1 + i + 1 << ",," << h.adv_pretrain_loss[i] << '\n';
    const std::size_t n2 = n1 + h.adv_pretrain_loss.size();
    for (std::size_t i = 0; i < h.ann_clf_loss.size(); ++i) f << "game," << n2 + i + 1 << ',' << h.ann_clf_loss[i] << ',' << h.ann_adv_loss[i] << '\n';
}

std::string hidden_text(const std::vector<std::size_t>& h) {
    std::string t;
    for (std::size_t w : h) t += (t.empty() ? "" : ",") + std::to_string(w);
    return t;
}

void write_json(const std::string& path, const Options& o, const std::string& source, const std::vector<Result>& rs, double seconds) {
    std::ofstream f(path);
    if (!f) throw std::runtime_error("cannot write '" + path + "'");
    f.precision(10);
    f << "{\n  \"events\": \"" << source << "\",\n  \"seed\": " << o.seed << ",\n  \"lambda\": " << o.lambda
      << ",\n  \"lambda_meaning\": \"classifier loss = mean BCE per event - lambda * adversary mean NLL (nats) per background event of m_yy scaled to [0, 1]\""
      << ",\n  \"protocol\": {\"paper\": \"arXiv:1611.01046 Algorithm 1\", \"plain_classifier_epochs\": " << o.epochs
      << ", \"classifier_pretraining_epochs\": " << std::min(o.pretrain_epochs, o.epochs) << ", \"classifier_batch\": " << o.batch << ", \"adversary_pretraining_max_steps\": " << o.adv_pretrain
      << ", \"game_epochs\": " << o.adv_epochs << ", \"game_classifier_batch\": " << o.game_batch
      << ", \"adversary_steps_per_classifier_step\": " << o.adv_steps << ", \"adversary_batch_background_events\": " << o.adv_batch
      << ", \"adversary_hidden\": \"" << hidden_text(o.adv_hidden) << "\", \"adversary_lr\": " << o.adv_lr << ", \"game_classifier_lr\": " << o.game_lr << ", \"game_classifier_lr_schedule\": \"" << (o.constant_game_lr ? "constant" : "cosine to 0") << "\"" << ", \"game_check_steps\": " << o.check_steps
      << "},\n  \"seconds\": " << seconds << ",\n  \"networks\": [\n";
    for (std::size_t i = 0; i < rs.size(); ++i)
    {
        const Result& r = rs[i];
        f << "    {\"name\": \"" << r.name << "\", \"auc\": " << r.auc << ", \"r50\": " << r.r50 << ", \"jsd\": " << r.jsd
          << ", \"inverse_jsd\": " << 1.0 / r.jsd;
        if (r.has_estimate) examples::diphoton::write_estimate_json(f, r.est);
        if (r.adversarial) f << ", \"lambda\": " << r.lambda << ", \"adversary_pretraining_converged\": " << (r.adversary_converged ? "true" : "false");
        if (r.has_game)
            f << ", \"game\": {\"adversary_nll\": " << r.game.adversary_loss << ", \"refit_nll\": " << r.game.refit_loss
              << ", \"mass_shape_nll\": " << r.game.marginal_loss << ", \"gap\": " << r.game.gap << ", \"information\": " << r.game.information
              << ", \"tolerance\": " << kLostGameTolerance << ", \"lost\": " << (r.game.lost ? "true" : "false") << "}";
        f << "}" << (i + 1 < rs.size() ? "," : "") << "\n";
    }
    f << "  ]\n}\n";
}

void print_table(const std::vector<Result>& rs) {
    std::printf("\n%-28s %8s %10s %10s %10s", "network", "AUC", "R50", "JSD", "1/JSD");
    const bool est = !rs.empty() && rs.front().has_estimate;
    if (est) examples::diphoton::print_estimate_header();
    std::printf("\n");
    for (const auto& r : rs) {
        std::printf("%-28s %8.4f %10.2f %10.5f %10.1f", r.name.c_str(), r.auc, r.r50, r.jsd, 1.0 / r.jsd);
        if (r.has_estimate) examples::diphoton::print_estimate_cells(r.est);
        std::printf("\n");
    }
    if (est) examples::diphoton::print_estimate_note();
    bool any = false;
    for (const auto& r : rs) {
        if (!r.has_game) continue;
        if (!any) std::printf("\ngame check (adversary NLL per background event, nats: trained / refit from scratch on the final "
                              "classifier / mass shape alone; lost when trained - refit > %.3g):\n",
                              static_cast<double>(kLostGameTolerance));
        any = true;
        std::printf("%-28s %9.5f %9.5f %9.5f  gap %+.5f  information %.5f  %s%s\n", r.name.c_str(), static_cast<double>(r.game.adversary_loss),
                    static_cast<double>(r.game.refit_loss), static_cast<double>(r.game.marginal_loss), static_cast<double>(r.game.gap),
                    static_cast<double>(r.game.information), r.game.lost ? "LOST: the adversary did not keep up" : "ok",
                    r.adversary_converged ? "" : " (adversary pretraining did not converge)");
    }
}

/// The lambda scan on the R50-1/JSD plane: each point with its 68% intervals, and beside it (grey)
/// the 1/JSD of mass-blind selections at the same background efficiency.
void plot_scan(const std::string& path, const std::vector<Result>& rs, const std::vector<std::string>& labels) {
    io::Figure fig(640, 480);
    auto& ax = fig.axes();
    std::vector<double> r50, inv;
    std::vector<metrics::SculptingEstimate> es;
    for (std::size_t i = 2; i < rs.size(); ++i) {  // after the classifier and the adversarial default
        r50.push_back(rs[i].r50);
        inv.push_back(1.0 / rs[i].jsd);
        if (rs[i].has_estimate) es.push_back(rs[i].est);
    }
    examples::diphoton::plot_estimates(ax, es, "#1f77b4", true);
    ax.scatter(r50, inv, io::Style("adversarial classifier").marker('o'), labels);
    const Result& clf = rs.front();
    ax.scatter(std::vector<double>{clf.r50}, std::vector<double>{1.0 / clf.jsd}, io::Style("plain classifier", "#d62728").marker('s'));
    ax.set_xlabel("background rejection R50 (1/ε_B at ε_S = 0.5)").set_ylabel("1/JSD (higher: less sculpting)").set_log_y();
    ax.set_title("Rejection against decorrelation");
    fig.save(path);
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse_args(argc, argv);
    return examples::run("higgs", o.out, Progress{o.quiet}, [&](const Progress& progress) {
        const Sample sample = load_sample(o.data, o.events, o.test_events, o.seed, o.write_events);
        const Events& ev = sample.events;
        const Split split = make_split(ev, sample.n_split, o.seed);
        progress.say("events: " + sample.source + ", " + std::to_string(ev.size()) + " in total: " + std::to_string(split.train.x.dim(0)) +
                     " for training (70% of " + std::to_string(sample.n_split) + "), " + std::to_string(split.test_label.size()) +
                     " for testing");

        History h;
        Rng rng(o.seed * 7919 + 1);
        Sequential<float> classifier = make_classifier(rng);
        Sequential<float> pretrained = classifier;  // the adversarial classifier's start (--pretrain-epochs)
        const Result clf = train_plain(split, o, classifier, pretrained, h, progress);
        const Result ann = train_adversarial(split, o, pretrained, o.lambda, h, progress);
        std::vector<Result> results{clf, ann};

        std::vector<std::string> scan_labels;
        if (o.scan) {
            for (double l : {0.0, 1.0, 3.0, 10.0, 30.0, 100.0}) {
                History hs;
                Options q = o;
                q.quiet = true;
                Result r = train_adversarial(split, q, pretrained, l, hs, Progress{true});
                progress.say("scan: lambda " + std::to_string(l) + ": AUC " + std::to_string(r.auc) + ", R50 " + std::to_string(r.r50) +
                             ", 1/JSD " + std::to_string(1.0 / r.jsd));
                std::ostringstream t;
                t << "λ=" << l;
                scan_labels.push_back(t.str());
                results.push_back(std::move(r));
            }
        }
        if (o.bootstrap > 0) progress.say("bootstrap: " + std::to_string(o.bootstrap) + " replicas per network");
        add_uncertainties(results, split, o);
        if (o.scan) plot_scan(o.out + "/lambda_scan.svg", results, scan_labels);
        write_results(o.out + "/clf_results.csv", split, clf);
        write_results(o.out + "/ANN_results.csv", split, ann);
        write_history(o.out + "/history.csv", h);
        plot_all(o.out, split, clf, ann, h);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - progress.t0).count();
        write_json(o.out + "/summary.json", o, sample.source, results, seconds);
        print_table(results);
        std::printf("\nwrote %s/{clf_results.csv, ANN_results.csv, summary.json, history.csv, roc.svg, discriminant.svg, "
                    "mass_sculpting.svg, history.svg%s} in %.1f s\n",
                    o.out.c_str(), o.scan ? ", lambda_scan.svg" : "", seconds);
        return 0;
    });
}
