// The Higgs (H -> gamma gamma) classifier decorrelated from the diphoton mass with distance
// correlation, DisCo (Kasieczka and Shih, arXiv 2001.05310), for a scan of lambda.
//
// A plain classifier learns that background at high m_yy looks signal-like, so a cut on it
// sculpts the background mass spectrum. DisCo adds a penalty instead of an adversary:
//     L = BCE + lambda * dCorr^2(m_yy, sigmoid(output)) over the batch's background events,
// where the squared distance correlation is zero exactly when the two are independent. No
// second network, no minimax: one loss, O(N^2) in the batch size.
//
// Each lambda gives a working point on the plane of background rejection at 50% signal
// efficiency (R50) against 1/JSD, the inverse Jensen-Shannon divergence between the background
// mass spectra passing and failing that cut (higher: less sculpting) -- the plane of the
// adversarial scan of the Higgs example (`higgs --scan-lambda`), whose points can be overlaid
// with --adversarial higgs_out/summary.json. The classifier, inputs, split and metrics are those of the Higgs
// example.
//
//   disco [--data FILE | --events N] [--lambdas L1,L2,..] [--epochs E] [--out DIR] ...   (--help)
#include <tapir/data/dataset.hpp>
#include <tapir/hep/diphoton.hpp>
#include <tapir/io/csv.hpp>
#include <tapir/io/svg.hpp>
#include <tapir/loss/disco.hpp>
#include <tapir/metrics/metrics.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/tapir.hpp>

#include "../common/cli.hpp"
#include "../common/diphoton.hpp"
#include "../common/estimates.hpp"
#include "../common/json.hpp"
#include "../common/output_dir.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace tapir;
using nn::Sequential;

namespace {

using namespace examples::diphoton;  // the shared H -> yy events, mass window and classifier

// ---- options ----------------------------------------------------------------------------------

struct Options {
    std::string data;         // course-format CSV; empty: generate events
    std::string out = ".";
    std::string adversarial;  // CSV of the Higgs example's adversarial scan, overlaid on the plane
    std::size_t events = 60000;
    std::size_t test_events = 60000;  // generated events for the test set alone (the Higgs example's default)
    std::uint64_t seed = 1;
    std::vector<double> lambdas = {0, 0.3, 1, 3, 10, 30, 100};
    double results_lambda = 10;  // the working point whose test scores are written in the course format
    std::size_t epochs = 40;
    std::size_t batch = 512;     // dCorr is estimated per batch: a few hundred background events
    double lr = 1e-3;
    std::size_t bootstrap = 100;  // bootstrap replicas for the uncertainties (0: none)
    bool quiet = false;
};

const examples::Cli cli("disco",
                         "disco [options]\n"
                         "  --data FILE          course CSV (,pt_y1,eta_y1,phi_y1,e_y1,pt_y2,eta_y2,phi_y2,e_y2,myy,label)\n"
                         "  --events N           generated events when no --data (default 60000), split 70/30\n"
                         "  --test-events N      more generated events for the test set alone (default 60000, as in higgs,\n"
                         "                       so that 1/JSD ~ 1000 is resolved; ignored with --data)\n"
                         "  --lambdas L1,L2,...  DisCo strengths to scan (default 0,0.3,1,3,10,30,100)\n"
                         "  --results-lambda L   write this working point's test scores to disco_results.csv (default 10)\n"
                         "  --adversarial FILE   overlay the adversarial scan: the summary.json of `higgs --scan-lambda`, or a CSV\n"
                         "                       with columns lambda, r50, inverse_jsd\n"
                         "  --epochs E           epochs per lambda (default 40); --batch B (default 512); --lr X (default 1e-3)\n"
                         "  --bootstrap N        bootstrap replicas for the uncertainties of R50 and 1/JSD and the 1/JSD floor\n"
                         "                       of a mass-blind selection (default 100; 0: none)\n"
                         "  --seed S, --out DIR, --quiet\n");

Options parse_args(int argc, char** argv) {
    Options o;
    examples::Flags(cli)
        .text("--data", o.data).text("--out", o.out).text("--adversarial", o.adversarial)
        .count("--events", o.events).count("--test-events", o.test_events, 0).seed("--seed", o.seed)
        .on("--lambdas", [&](const std::string& a, const char* v) {
            o.lambdas.clear();
            std::stringstream ss(v);
            std::string item;
            while (std::getline(ss, item, ',')) {
                const double l = cli.number(a, item);
                if (l < 0) cli.usage("lambdas must be >= 0, got " + item);
                o.lambdas.push_back(l);
            }
            if (o.lambdas.empty()) cli.usage("--lambdas needs at least one value");
        })
        .number("--results-lambda", o.results_lambda)
        .count("--epochs", o.epochs).count("--batch", o.batch).number("--lr", o.lr).count("--bootstrap", o.bootstrap)
        .flag("--quiet", o.quiet)
        .parse(argc, argv);
    examples::diphoton::check_event_count(cli, o.data, o.events);
    return o;
}

using examples::fmt;
using examples::json_string;
using examples::Progress;

// ---- the 70/30 split (as in the Higgs example) ----------------------------------------------------

struct Split {
    data::Dataset<float> train;  // aux: m_yy
    Tensor<float> test_x;
    std::vector<double> test_myy, test_label;
};

/// 70/30 split of the first n_split events with the seed, any events after them joining the test
/// set; inputs standardised on the training events (the Higgs example's split).
Split make_split(const Events& ev, std::size_t n_split, std::uint64_t seed) {
    auto parts = data::train_test_split(n_split, 0.3, seed);
    for (std::size_t i = n_split; i < ev.size(); ++i) parts.test.push_back(i);
    Split s;
    s.train.x = data::take_rows(ev.x, parts.train);
    s.train.y = Tensor<float>(Shape{parts.train.size(), 1});
    s.train.aux = Tensor<float>(Shape{parts.train.size(), 1});
    for (std::size_t k = 0; k < parts.train.size(); ++k) {
        s.train.y[k] = static_cast<float>(ev.label[parts.train[k]]);
        s.train.aux[k] = static_cast<float>(ev.myy[parts.train[k]]);
    }
    s.test_x = data::take_rows(ev.x, parts.test);
    for (std::size_t i : parts.test) {
        s.test_myy.push_back(ev.myy[i]);
        s.test_label.push_back(ev.label[i]);
    }
    data::StandardScaler scaler;
    scaler.fit(s.train.x);
    s.train.x = scaler.transform(s.train.x);
    s.test_x = scaler.transform(s.test_x);
    return s;
}

// ---- the classifier and its training ----------------------------------------------------------

struct Point {
    double lambda = 0, auc = 0, r50 = 0, jsd = 0, dcorr2 = 0, threshold = 0;  // threshold: score cut at eps_S = 50%
    std::vector<double> score;
    bool has_estimate = false;
    metrics::SculptingEstimate est;  // R50 and 1/JSD with bootstrap uncertainties, and the 1/JSD floor
    std::vector<double> bce_history, dcorr_history;
};

std::vector<double> predict(Sequential<float>& net, const Tensor<float>& x) {
    Tape<float> tape;
    NoGradGuard<float> guard(tape);
    const Var<float> p = sigmoid(net(tape.view(x)));
    return std::vector<double>(p.data(), p.data() + p.size());
}

/// dCorr^2(m_yy, score) of (up to) 1500 test background events, in double precision.
double test_dcorr2(const std::vector<double>& score, const Split& s) {
    std::vector<double> m, f;
    for (std::size_t i = 0; i < score.size() && m.size() < 1500; ++i)
        if (s.test_label[i] == 0) m.push_back(s.test_myy[i]), f.push_back(score[i]);
    Tape<double> tape;
    NoGradGuard<double> guard(tape);
    return loss::distance_correlation_sq(tape.constant(Tensor<double>(Shape{m.size()}, m)), tape.constant(Tensor<double>(Shape{f.size()}, f))).item();
}

/// Trains the classifier from scratch with L = BCE + lambda dCorr^2(m_yy, sigmoid) (background
/// events of each batch) and evaluates it on the test events.
Point train_disco(const Split& s, double lambda, const Options& o) {
    Point p;
    p.lambda = lambda;
    Rng rng(o.seed * 7919 + 1);  // the same initial network for every lambda
    Sequential<float> clf = make_classifier(rng);
    optim::Adam<float> opt(clf.parameters(), static_cast<float>(o.lr));
    data::LoaderOptions lo;
    lo.seed = o.seed;
    lo.drop_last = true;  // no tiny last batch: dCorr wants many background events
    data::DataLoader<float> loader(s.train, o.batch, lo);
    Tape<float> tape;
    for (std::size_t e = 0; e < o.epochs; ++e) {
        double sum_bce = 0, sum_dc = 0;
        std::size_t n = 0;
        for (const auto& b : loader) {
            tape.clear();
            const Var<float> logits = clf(tape.view(b.x));
            const Var<float> labels = tape.view(b.y);
            const Var<float> bce = bce_with_logits(logits, labels);
            const Var<float> dcorr2 = loss::disco_penalty(tape.view(b.aux), sigmoid(logits), labels, 1.0f);
            backward(add(bce, scale(dcorr2, static_cast<float>(lambda))));
            opt.step();
            opt.zero_grad();
            sum_bce += bce.item();
            sum_dc += dcorr2.item();
            ++n;
        }
        p.bce_history.push_back(sum_bce / static_cast<double>(n));
        p.dcorr_history.push_back(sum_dc / static_cast<double>(n));
    }
    p.score = predict(clf, s.test_x);
    p.auc = metrics::roc_auc(p.score, s.test_label);
    p.r50 = metrics::background_rejection(p.score, s.test_label, {}, 0.5);
    const metrics::SculptingResult sculpting = metrics::mass_sculpting_jsd(p.score, s.test_myy, s.test_label, {}, 0.5, kMassLo, kMassHi, 5.0);
    p.jsd = sculpting.jsd;
    p.threshold = sculpting.threshold;
    p.dcorr2 = test_dcorr2(p.score, s);
    if (o.bootstrap > 0) {
        p.est = examples::diphoton::estimate(p.score, s.test_myy, s.test_label, o.bootstrap, o.seed);
        p.has_estimate = true;
    }
    return p;
}

// ---- output -----------------------------------------------------------------------------------

void print_table(const std::vector<Point>& pts) {
    std::printf("\nDisCo scan (test events; R50 = 1/eps_B at eps_S = 50%%; JSD of the background m_yy passing vs failing that cut)\n\n");
    std::printf("%10s %8s %10s %10s %10s %12s", "lambda", "AUC", "R50", "JSD", "1/JSD", "dCorr^2(bkg)");
    const bool est = !pts.empty() && pts.front().has_estimate;
    if (est) examples::diphoton::print_estimate_header();
    std::printf("\n");
    for (const auto& p : pts) {
        std::printf("%10g %8.4f %10.2f %10.5f %10.1f %12.5f", p.lambda, p.auc, p.r50, p.jsd, 1.0 / p.jsd, p.dcorr2);
        if (p.has_estimate) examples::diphoton::print_estimate_cells(p.est);
        std::printf("\n");
    }
    if (est) examples::diphoton::print_estimate_note();
}

struct Adversarial {
    std::vector<double> lambda, r50, inv_jsd;
    std::vector<std::string> labels;
    // 68% bootstrap intervals when the summary.json has them (all points or none): R50 sd, 1/JSD [lo, hi]
    std::vector<double> r50_sd, inv_lo, inv_hi;
};

/// The number after "key": in `text`, searching from `from`; throws if there is none.
double json_field(const std::string& text, const std::string& key, std::size_t from, const std::string& path) {
    const std::size_t k = text.find("\"" + key + "\":", from);
    if (k == std::string::npos) throw parse_error(path + ": no \"" + key + "\" after byte " + std::to_string(from));
    return std::strtod(text.c_str() + k + key.size() + 3, nullptr);
}

/// The adversarial working points, from the Higgs example's summary.json (its "networks" named
/// "adversarial (lambda=L)", one per lambda) or from a CSV with lambda, r50, inverse_jsd.
Adversarial read_adversarial(const std::string& path) {
    Adversarial a;
    if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
        std::ifstream f(path);
        if (!f) throw parse_error("cannot read '" + path + "'");
        const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        const std::string tag = "\"name\": \"adversarial (lambda=";
        std::vector<double> seen;
        for (std::size_t at = text.find(tag); at != std::string::npos; at = text.find(tag, at + 1)) {
            const double l = std::strtod(text.c_str() + at + tag.size(), nullptr);
            if (std::find(seen.begin(), seen.end(), l) != seen.end()) continue;  // the default lambda appears twice with a scan
            seen.push_back(l);
            a.lambda.push_back(l);
            a.r50.push_back(json_field(text, "r50", at, path));
            a.inv_jsd.push_back(json_field(text, "inverse_jsd", at, path));
            const std::size_t next = text.find("\"name\"", at + 1), b = text.find("\"inverse_jsd_bootstrap\"", at);
            if (b != std::string::npos && b < next) {
                a.r50_sd.push_back(json_field(text, "sd", text.find("\"r50_bootstrap\"", at), path));
                a.inv_lo.push_back(json_field(text, "lo68", b, path));
                a.inv_hi.push_back(json_field(text, "hi68", b, path));
            }
        }
        if (a.inv_lo.size() != a.r50.size()) a.r50_sd.clear(), a.inv_lo.clear(), a.inv_hi.clear();
        if (a.r50.empty()) throw parse_error(path + ": no adversarial networks found (expected the summary.json of the higgs example)");
    } else {
        io::CsvOptions opt;
        opt.columns = {"lambda", "r50", "inverse_jsd"};
        const io::CsvTable t = io::read_csv(path, opt);
        a.lambda = t.column("lambda");
        a.r50 = t.column("r50");
        a.inv_jsd = t.column("inverse_jsd");
    }
    // In order of lambda, so that the line joining the points follows the scan.
    std::vector<std::size_t> order(a.lambda.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return a.lambda[x] < a.lambda[y]; });
    Adversarial sorted;
    for (std::size_t i : order) {
        if (!a.inv_lo.empty()) {
            sorted.r50_sd.push_back(a.r50_sd[i]);
            sorted.inv_lo.push_back(a.inv_lo[i]);
            sorted.inv_hi.push_back(a.inv_hi[i]);
        }
        sorted.lambda.push_back(a.lambda[i]);
        sorted.r50.push_back(a.r50[i]);
        sorted.inv_jsd.push_back(a.inv_jsd[i]);
        sorted.labels.push_back("λ=" + fmt(a.lambda[i]));
    }
    return sorted;
}

void write_json(const std::string& path, const Options& o, const std::string& source, const std::vector<Point>& pts, double seconds) {
    std::ofstream f(path);
    if (!f) throw std::runtime_error("cannot write '" + path + "'");
    f.precision(8);
    f << "{\n  \"events\": " << json_string(source) << ",\n  \"seed\": " << o.seed << ",\n  \"epochs\": " << o.epochs
      << ",\n  \"batch\": " << o.batch << ",\n  \"seconds\": " << seconds << ",\n  \"scan\": [\n";
    for (std::size_t i = 0; i < pts.size(); ++i) {
        f << "    {\"lambda\": " << pts[i].lambda << ", \"auc\": " << pts[i].auc << ", \"r50\": " << pts[i].r50 << ", \"jsd\": " << pts[i].jsd
          << ", \"inverse_jsd\": " << 1.0 / pts[i].jsd << ", \"dcorr2\": " << pts[i].dcorr2;
        if (pts[i].has_estimate) examples::diphoton::write_estimate_json(f, pts[i].est);
        f << "}" << (i + 1 < pts.size() ? "," : "") << "\n";
    }
    f << "  ]\n}\n";
}

void plot_all(const std::string& out, const std::vector<Point>& pts, const Split& s, const Adversarial* adv) {
    using namespace tapir::io;
    {  // the plane of the Higgs example's adversarial scan
        Figure fig(680, 500);
        auto& ax = fig.axes();
        std::vector<double> x, y;
        std::vector<std::string> labels;
        std::vector<tapir::metrics::SculptingEstimate> es;
        for (const auto& p : pts) {
            x.push_back(p.r50);
            y.push_back(1.0 / p.jsd);
            labels.push_back("λ=" + fmt(p.lambda));
            if (p.has_estimate) es.push_back(p.est);
        }
        examples::diphoton::plot_estimates(ax, es, "#2ca02c", true);
        ax.line(x, y, Style("", "#2ca02c").alpha(0.4));
        ax.scatter(x, y, Style("DisCo classifier", "#2ca02c").marker('D'), labels);
        if (adv) {
            if (!adv->inv_lo.empty()) {  // the adversarial points' 68% intervals
                std::vector<double> mid, half;
                for (std::size_t i = 0; i < adv->inv_lo.size(); ++i) {
                    const double hi = std::isfinite(adv->inv_hi[i]) ? adv->inv_hi[i] : 10 * adv->inv_lo[i];
                    mid.push_back(0.5 * (adv->inv_lo[i] + hi));
                    half.push_back(0.5 * (hi - adv->inv_lo[i]));
                }
                ax.errorbars(adv->r50, mid, half, Style("", "#1f77b4"), adv->r50_sd);
            }
            ax.line(adv->r50, adv->inv_jsd, Style("", "#1f77b4").alpha(0.4));
            ax.scatter(adv->r50, adv->inv_jsd, Style("adversarial classifier (Higgs example)", "#1f77b4").marker('o'), adv->labels);
        }
        ax.set_xlabel("background rejection R50 (1/ε_B at ε_S = 0.5)").set_ylabel("1/JSD (higher: less sculpting)").set_log_y();
        ax.set_title("Rejection against decorrelation (bars: 68% bootstrap intervals)").legend();
        fig.save(out + "/lambda_scan.svg");
    }
    {  // background m_yy passing the cut, for a few lambdas
        Figure fig(700, 480);
        auto& ax = fig.axes();
        std::vector<double> all;
        for (std::size_t i = 0; i < s.test_myy.size(); ++i)
            if (s.test_label[i] == 0) all.push_back(s.test_myy[i]);
        ax.histogram(all, 11, kMassLo, kMassHi, Style("all background", "#999999").fill(0.3), true);
        const std::size_t step = std::max<std::size_t>(1, pts.size() / 3);
        for (std::size_t k = 0; k < pts.size(); k += step) {
            std::vector<double> pass;
            for (std::size_t i = 0; i < s.test_myy.size(); ++i)
                if (s.test_label[i] == 0 && pts[k].score[i] >= pts[k].threshold) pass.push_back(s.test_myy[i]);
            ax.histogram(pass, 11, kMassLo, kMassHi, Style("passing, λ=" + fmt(pts[k].lambda) + " (1/JSD " + fmt(1.0 / pts[k].jsd) + ")").width(2),
                         true);
        }
        ax.set_xlabel("m_γγ [GeV]").set_ylabel("1/N dN/dm_γγ [1/GeV]").set_title("Background mass passing the 50% signal-efficiency cut").legend();
        fig.save(out + "/mass_sculpting.svg");
    }
    {  // training: BCE and dCorr^2 per epoch
        Figure fig(1100, 420, 1, 2);
        fig.suptitle("Training (mean over the batches of each epoch)");
        auto& a = fig.axes(0, 0);
        auto& b = fig.axes(0, 1);
        for (const auto& p : pts) {
            std::vector<double> e;
            for (std::size_t i = 0; i < p.bce_history.size(); ++i) e.push_back(static_cast<double>(i + 1));
            a.line(e, p.bce_history, Style("λ=" + fmt(p.lambda)).width(1.6));
            b.line(e, p.dcorr_history, Style("λ=" + fmt(p.lambda)).width(1.6));
        }
        a.set_xlabel("epoch").set_ylabel("binary cross-entropy").set_title("Classification loss").legend();
        b.set_xlabel("epoch").set_ylabel("dCorr²(m_γγ, output), background").set_title("Distance correlation").set_log_y().legend();
        fig.save(out + "/history.svg");
    }
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse_args(argc, argv);
    return examples::run("disco", o.out, Progress{o.quiet}, [&](const Progress& progress) {
        const Sample sample = load_sample(o.data, o.events, o.test_events, o.seed);
        const Events& ev = sample.events;
        const Split split = make_split(ev, sample.n_split, o.seed);
        progress.say("events: " + sample.source + ", " + std::to_string(ev.size()) + " in total, 70/30 train/test split");

        std::vector<Point> pts;
        for (double l : o.lambdas) {
            pts.push_back(train_disco(split, l, o));
            progress.say("lambda " + fmt(l) + ": AUC " + fmt(pts.back().auc, 4) + ", R50 " + fmt(pts.back().r50) + ", 1/JSD " +
                         fmt(1.0 / pts.back().jsd) + ", test dCorr^2 " + fmt(pts.back().dcorr2));
        }
        print_table(pts);

        // ---- files --------------------------------------------------------------------------------
        {
            std::vector<double> l, auc, r50, jsd, inv, dc;
            for (const auto& p : pts) {
                l.push_back(p.lambda);
                auc.push_back(p.auc);
                r50.push_back(p.r50);
                jsd.push_back(p.jsd);
                inv.push_back(1.0 / p.jsd);
                dc.push_back(p.dcorr2);
            }
            io::write_csv(o.out + "/disco_scan.csv", {"lambda", "auc", "r50", "jsd", "inverse_jsd", "dcorr2"}, {l, auc, r50, jsd, inv, dc});
        }
        const Point* chosen = &pts.front();  // the scanned lambda nearest to --results-lambda
        for (const auto& p : pts)
            if (std::fabs(p.lambda - o.results_lambda) < std::fabs(chosen->lambda - o.results_lambda)) chosen = &p;
        io::write_csv(o.out + "/disco_results.csv", {"myy", "y_pred", "y_true"}, {split.test_myy, chosen->score, split.test_label});

        Adversarial adv;
        if (!o.adversarial.empty()) adv = read_adversarial(o.adversarial);
        plot_all(o.out, pts, split, o.adversarial.empty() ? nullptr : &adv);
        write_json(o.out + "/summary.json", o, sample.source, pts, progress.seconds());
        std::printf("\nwrote %s/{disco_scan.csv, disco_results.csv (lambda = %g), summary.json, lambda_scan.svg, mass_sculpting.svg, history.svg} in %.1f s\n",
                    o.out.c_str(), chosen->lambda, progress.seconds());
        return 0;
    });
}
