// The main job: a Higgs (H -> gamma gamma) classifier on photon 4-vectors, and the same classifier
// decorrelated from the diphoton mass by an adversary (Louppe, Kagan, Cranmer, arXiv 1611.01046).
//
// A plain classifier learns that background at high m_yy looks more signal-like (harder photons,
// wider |delta eta|), so cutting on it sculpts a bump into the background mass spectrum. The
// adversary, a Gaussian mixture density network, tries to predict m_yy of background events from
// the classifier output; a gradient-reversal layer between them makes the classifier pay
// lambda * (what the adversary learns), so L_classifier = L_bce - lambda * L_adversary.
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
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/tapir.hpp>

#include "../common/cli.hpp"
#include "../common/diphoton.hpp"
#include "../common/estimates.hpp"
#include "../common/output_dir.hpp"

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

using examples::diphoton::Events;
using examples::diphoton::kMassHi;
using examples::diphoton::kMassLo;
using examples::diphoton::make_classifier;

// ---- options ----------------------------------------------------------------------------------

struct Options {
    std::string data;                // course-format CSV; empty: generate events
    std::string out = ".";           // where results and plots go
    std::string write_events;        // write the generated events as CSV
    std::size_t events = 60000;
    std::uint64_t seed = 1;
    double lambda = 10.0;            // adversary strength
    std::size_t epochs = 40;         // plain classifier epochs
    std::size_t adv_pretrain = 5;    // adversary epochs on the frozen classifier
    std::size_t adv_epochs = 20;     // adversarial epochs
    std::size_t adv_steps = 3;       // adversary steps per classifier step
    std::size_t batch = 64;          // classifier training
    std::size_t adv_batch = 256;     // adversarial training: the adversary sees background events only
    std::size_t bootstrap = 100;     // bootstrap replicas for the uncertainties (0: none)
    bool scan = false;
    bool quiet = false;
};

const examples::Cli cli("higgs",
                         "higgs [--data FILE | --events N] [--seed S] [--lambda L] [--epochs E] [--adv-epochs E]\n"
                         "             [--adv-pretrain E] [--adv-steps K] [--batch B] [--adv-batch B] [--out DIR]\n"
                         "             [--scan-lambda] [--bootstrap N] [--write-events FILE] [--quiet] [--help]\n"
                         "  --bootstrap N   bootstrap replicas for the uncertainties of R50 and 1/JSD and for the\n"
                         "                  1/JSD floor of a mass-blind selection (default 100; 0: none)\n");

Options parse_args(int argc, char** argv) {
    Options o;
    cli.parse(argc, argv, [&](const std::string& a, const auto& value) {
        if (a == "--data") o.data = value();
        else if (a == "--out") o.out = value();
        else if (a == "--write-events") o.write_events = value();
        else if (a == "--events") o.events = cli.count(a, value());
        else if (a == "--seed") o.seed = cli.seed(a, value());
        else if (a == "--lambda") {
            o.lambda = cli.number(a, value());
            if (o.lambda < 0) cli.usage("--lambda must be >= 0");
        } else if (a == "--epochs") o.epochs = cli.count(a, value());
        else if (a == "--adv-epochs") o.adv_epochs = cli.count(a, value());
        else if (a == "--batch") o.batch = cli.count(a, value());
        else if (a == "--adv-batch") o.adv_batch = cli.count(a, value());
        else if (a == "--adv-pretrain") o.adv_pretrain = cli.count(a, value());
        else if (a == "--adv-steps") o.adv_steps = cli.count(a, value());
        else if (a == "--scan-lambda") o.scan = true;
        else if (a == "--bootstrap") o.bootstrap = cli.count(a, value());
        else if (a == "--quiet") o.quiet = true;
        else return false;
        return true;
    });
    examples::diphoton::check_event_count(cli, o.data, o.events);
    return o;
}

// ---- networks ---------------------------------------------------------------------------------

constexpr std::size_t kComponents = 5;
/// The course adversary: classifier output -> 200 -> 100 -> 50 -> a 5-component Gaussian mixture over
/// the scaled mass (mixture logits, means, raw widths).
Sequential<float> make_adversary(Rng& rng) {
    Sequential<float> m;
    m.add<Dense<float>>(1, 200, rng, Activation::relu)
        .add<Dense<float>>(200, 100, rng, Activation::relu)
        .add<Dense<float>>(100, 50, rng, Activation::relu)
        .add<Dense<float>>(50, 3 * kComponents, rng);
    return m;
}

/// Negative log-likelihood of the scaled mass under the adversary's mixture, background events only.
Var<float> adversary_loss(Sequential<float>& adv, const Var<float>& score, const Var<float>& mass01, const Var<float>& bkg_weight) {
    const Var<float> h = adv(score);
    loss::MdnOptions<float> opt;
    opt.truncate = true;  // each component truncated to [0, 1], as in the course code
    return loss::mdn_nll(slice(h, 1, 0, kComponents), slice(h, 1, kComponents, kComponents), slice(h, 1, 2 * kComponents, kComponents),
                         mass01, &bkg_weight, opt);
}

// ---- training ---------------------------------------------------------------------------------

struct Split {
    data::Dataset<float> train, test;  // aux column 0: mass scaled to [0, 1]
    std::vector<double> test_myy, test_label;
};

struct History {
    std::vector<double> clf_loss, ann_clf_loss, ann_adv_loss;
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
};

/// Bootstrap uncertainties (68% intervals) and the random-selection floor for every result.
void add_uncertainties(std::vector<Result>& rs, const Split& s, const Options& o) {
    if (o.bootstrap == 0) return;
    for (Result& r : rs) {
        r.est = examples::diphoton::estimate(r.score, s.test_myy, s.test_label, o.bootstrap, o.seed);
        r.has_estimate = true;
    }
}

Result evaluate(const std::string& name, Sequential<float>& net, const Split& s) {
    Result r;
    r.name = name;
    r.score = predict(net, s.test.x);
    r.auc = metrics::roc_auc(r.score, s.test_label);
    r.r50 = metrics::background_rejection(r.score, s.test_label, {}, 0.5);
    const metrics::SculptingResult sc = metrics::mass_sculpting_jsd(r.score, s.test_myy, s.test_label, {}, 0.5, kMassLo, kMassHi, 5.0);
    r.jsd = sc.jsd;
    r.threshold = sc.threshold;
    return r;
}

/// The plain classifier: `epochs` epochs of BCE.
Result train_plain(const Split& s, const Options& o, Sequential<float>& clf, History& h, const Progress& p) {
    optim::Adam<float> opt(clf.parameters(), 1e-3f);
    data::LoaderOptions lo;
    lo.seed = o.seed;
    data::DataLoader<float> loader(s.train, o.batch, lo);
    Tape<float> tape;
    for (std::size_t e = 0; e < o.epochs; ++e) {
        h.clf_loss.push_back(train_classifier_epoch(clf, opt, loader, tape));
        p.say("classifier epoch " + std::to_string(e + 1) + "/" + std::to_string(o.epochs) + ": loss " + std::to_string(h.clf_loss.back()));
    }
    return evaluate("classifier", clf, s);
}

/// The adversarial classifier (arXiv 1611.01046, Algorithm 1): start from the trained plain
/// classifier, pretrain the adversary on it frozen, then alternate K adversary steps with one
/// classifier step on L_bce - lambda * L_adv (the reversal layer supplies the minus sign).
Result train_adversarial(const Split& s, const Options& o, const Sequential<float>& pretrained, double lambda, History& h,
                         const Progress& p) {
    Rng rng(o.seed * 7919 + 2);
    Sequential<float> clf = pretrained;  // deep copy
    Sequential<float> adv = make_adversary(rng);
    optim::Adam<float> clf_opt(clf.parameters(), 1e-3f);
    optim::Adam<float> adv_opt(adv.parameters(), 1e-3f);
    data::LoaderOptions lo;
    lo.seed = o.seed + 1;
    data::DataLoader<float> loader(s.train, o.adv_batch, lo);
    Tape<float> tape;

    const auto adversary_step = [&](const data::Batch<float>& b) {
        tape.clear();
        const Var<float> score = detach(sigmoid(clf(tape.view(b.x))));
        const Var<float> l = adversary_loss(adv, score, tape.view(b.aux), tape.view(b.w));
        backward(l);
        adv_opt.step();
        adv_opt.zero_grad();
        return static_cast<double>(l.item());
    };
    for (std::size_t e = 0; e < o.adv_pretrain; ++e) {
        double sum = 0;
        std::size_t n = 0;
        for (const auto& b : loader) sum += adversary_step(b), ++n;
        p.say("adversary pretraining " + std::to_string(e + 1) + "/" + std::to_string(o.adv_pretrain) + ": NLL " +
              std::to_string(sum / static_cast<double>(n)));
    }
    for (std::size_t e = 0; e < o.adv_epochs; ++e) {
        double sc = 0, sa = 0;
        std::size_t n = 0;
        for (const auto& b : loader) {
            for (std::size_t k = 0; k < o.adv_steps; ++k) adversary_step(b);
            tape.clear();
            const Var<float> logits = clf(tape.view(b.x));
            const Var<float> l_clf = bce_with_logits(logits, tape.view(b.y));
            const Var<float> score = grad_reverse(sigmoid(logits), static_cast<float>(lambda));
            const Var<float> l_adv = adversary_loss(adv, score, tape.view(b.aux), tape.view(b.w));
            backward(add(l_clf, l_adv));
            clf_opt.step();  // the adversary's gradients from this pass are discarded
            clf_opt.zero_grad();
            adv_opt.zero_grad();
            sc += l_clf.item();
            sa += l_adv.item();
            ++n;
        }
        h.ann_clf_loss.push_back(sc / static_cast<double>(n));
        h.ann_adv_loss.push_back(sa / static_cast<double>(n));
        p.say("adversarial epoch " + std::to_string(e + 1) + "/" + std::to_string(o.adv_epochs) + ": classifier loss " +
              std::to_string(h.ann_clf_loss.back()) + ", adversary NLL " + std::to_string(h.ann_adv_loss.back()));
    }
    std::ostringstream name;
    name << "adversarial (lambda=" << lambda << ")";
    return evaluate(name.str(), clf, s);
}

Split make_split(const Events& ev, std::uint64_t seed) {
    const auto parts = data::train_test_split(ev.size(), 0.3, seed);
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

void plot_all(const std::string& out, const Split& s, const Result& clf, const Result& ann, const History& h) {
    using namespace tapir::io;
    {
        Figure fig(640, 520);
        auto& ax = fig.axes();
        for (const Result* r : {&clf, &ann}) {
            const metrics::RocCurve roc = metrics::roc_curve(r->score, s.test_label);
            std::vector<double> x, y;
            for (std::size_t i = 0; i < roc.tpr.size(); ++i) {
                x.push_back(roc.tpr[i]);
                y.push_back(1.0 - roc.fpr[i]);
            }
            std::ostringstream label;
            label.precision(3);
            label << r->name << ", AUC " << r->auc;
            ax.line(x, y, Style(label.str()).width(2));
        }
        ax.line(std::vector<double>{0, 1}, std::vector<double>{1, 0}, Style("random", "#999999").dashed());
        ax.set_xlabel("signal efficiency").set_ylabel("background rejection (1 - ε_B)").set_title("ROC curves (test events)");
        ax.set_xlim(0, 1).set_ylim(0, 1.02);
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
        ax.set_xlabel("network output").set_ylabel("normalised events").set_title(r.name).set_log_y();
    });
    per_network("mass_sculpting.svg", "Background m_γγ: all events vs events passing the 50% signal-efficiency cut",
                [&](auto& ax, const Result& r) {
                    std::vector<double> all, pass;
                    for (std::size_t i = 0; i < r.score.size(); ++i) {
                        if (s.test_label[i] > 0.5) continue;
                        all.push_back(s.test_myy[i]);
                        if (r.score[i] >= r.threshold) pass.push_back(s.test_myy[i]);
                    }
                    ax.histogram(all, 11, kMassLo, kMassHi, Style("all background").fill(0.3), true);
                    ax.histogram(pass, 11, kMassLo, kMassHi, Style("passing the cut").width(2), true);
                    std::ostringstream t;
                    t.precision(3);
                    t << r.name << ": 1/JSD = " << 1.0 / r.jsd;
                    ax.set_xlabel("m_γγ [GeV]").set_ylabel("1/N dN/dm_γγ [1/GeV]").set_title(t.str());
                });
    {
        Figure fig(640, 440);
        auto& ax = fig.axes();
        const auto epochs = [](std::size_t n) {
            std::vector<double> e;
            for (std::size_t i = 0; i < n; ++i) e.push_back(static_cast<double>(i + 1));
            return e;
        };
        ax.line(epochs(h.clf_loss.size()), h.clf_loss, Style("classifier: BCE").width(2));
        ax.line(epochs(h.ann_clf_loss.size()), h.ann_clf_loss, Style("adversarial: classifier BCE").width(2));
        ax.line(epochs(h.ann_adv_loss.size()), h.ann_adv_loss, Style("adversarial: adversary NLL").width(2).dashed());
        ax.set_xlabel("epoch").set_ylabel("training loss").set_title("Training history");
        fig.save(out + "/history.svg");
    }
}

void write_history(const std::string& path, const History& h) {
    std::vector<double> epoch, clf, ann_clf, ann_adv;
    const std::size_t n = std::max(h.clf_loss.size(), h.ann_clf_loss.size());
    const auto at = [](const std::vector<double>& v, std::size_t i) { return i < v.size() ? v[i] : std::nan(""); };
    for (std::size_t i = 0; i < n; ++i) {
        epoch.push_back(static_cast<double>(i + 1));
        clf.push_back(at(h.clf_loss, i));
        ann_clf.push_back(at(h.ann_clf_loss, i));
        ann_adv.push_back(at(h.ann_adv_loss, i));
    }
    std::ofstream f(path);
    if (!f) throw std::runtime_error("cannot write '" + path + "'");
    f << "epoch,classifier_bce,adversarial_classifier_bce,adversary_nll\n";
    for (std::size_t i = 0; i < n; ++i) {
        f << epoch[i] << ',';
        const double v[3] = {clf[i], ann_clf[i], ann_adv[i]};
        for (int k = 0; k < 3; ++k) {
            if (std::isfinite(v[k])) f << v[k];
            f << (k < 2 ? ',' : '\n');
        }
    }
}

void write_json(const std::string& path, const Options& o, const std::string& source, const std::vector<Result>& rs, double seconds) {
    std::ofstream f(path);
    if (!f) throw std::runtime_error("cannot write '" + path + "'");
    f.precision(10);
    f << "{\n  \"events\": \"" << source << "\",\n  \"seed\": " << o.seed << ",\n  \"lambda\": " << o.lambda
      << ",\n  \"seconds\": " << seconds << ",\n  \"networks\": [\n";
    for (std::size_t i = 0; i < rs.size(); ++i)
    {
        const Result& r = rs[i];
        f << "    {\"name\": \"" << r.name << "\", \"auc\": " << r.auc << ", \"r50\": " << r.r50 << ", \"jsd\": " << r.jsd
          << ", \"inverse_jsd\": " << 1.0 / r.jsd;
        if (r.has_estimate) examples::diphoton::write_estimate_json(f, r.est);
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
    if (!examples::make_output_dir("higgs", o.out)) return 1;
    try {
        const Progress progress{o.quiet};
        std::string source;
        const Events ev = examples::diphoton::load_events(o.data, o.events, o.seed, source, o.write_events);
        progress.say("events: " + source + ", " + std::to_string(ev.size()) + " in total, 70/30 train/test split");
        const Split split = make_split(ev, o.seed);

        History h;
        Rng rng(o.seed * 7919 + 1);
        Sequential<float> classifier = make_classifier(rng);
        const Result clf = train_plain(split, o, classifier, h, progress);
        const Result ann = train_adversarial(split, o, classifier, o.lambda, h, progress);
        std::vector<Result> results{clf, ann};

        std::vector<std::string> scan_labels;
        if (o.scan) {
            for (double l : {0.0, 1.0, 3.0, 10.0, 30.0, 100.0}) {
                History hs;
                Options q = o;
                q.quiet = true;
                Result r = train_adversarial(split, q, classifier, l, hs, Progress{true});
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
        write_json(o.out + "/summary.json", o, source, results, seconds);
        print_table(results);
        std::printf("\nwrote %s/{clf_results.csv, ANN_results.csv, summary.json, history.csv, roc.svg, discriminant.svg, "
                    "mass_sculpting.svg, history.svg%s} in %.1f s\n",
                    o.out.c_str(), o.scan ? ", lambda_scan.svg" : "", seconds);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "higgs: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
