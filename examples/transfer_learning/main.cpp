// Transfer learning with a jet-image CNN: train a top tagger on plenty of jets at one pT
// (550-650 GeV, the generator's default), freeze its convolutional part (Module::freeze) and
// retrain only its dense head on a SMALL sample (a few hundred jets) at another pT (default
// 800-1000 GeV, where top jets are narrower: the prongs sit at angles ~ 2 m_t / pT). The
// comparison is the same CNN trained from scratch on that small sample; both are scored by their
// AUC on a large test set at the new pT, over several seeds (small sample and initialisation).
// Transfer learning for jet images: e.g. Kasieczka et al., arXiv:1701.08784 (CNN top tagger);
// Yosinski et al., arXiv:1411.1792 (how transferable convolutional features are).
//
//   transfer_learning [--source-train N] [--source-epochs E] [--target-pt-min PT] [--target-pt-max PT]
//                     [--small N] [--small-epochs E] [--test N] [--seeds K] [--seed S] [--out DIR]
//                     [--quick] [--quiet]
#include <tapir/io/svg.hpp>
#include <tapir/metrics/roc.hpp>
#include <tapir/nn/conv.hpp>
#include <tapir/nn/fit.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/model_file.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/tapir.hpp>

#include "../common/cli.hpp"
#include "../common/jet_images.hpp"
#include "../common/json.hpp"
#include "../common/output_dir.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace tapir;
using nn::Sequential;
namespace ji = examples::jet_images;

namespace {

struct Options : examples::CommonOptions {
    std::size_t source_train = 10000;   // jets at the source pT (half top, half QCD)
    std::size_t source_test = 2000;     // per class, at the source pT
    std::size_t source_epochs = 8;
    double target_lo = 800.0, target_hi = 1000.0;
    std::size_t small = 300;            // the small sample at the target pT (half top, half QCD)
    std::size_t small_epochs = 40;
    std::size_t test = 3000;            // per class, at the target pT
    std::size_t seeds = 10;
    std::size_t batch = 32;
    double power = 0.5;                 // pixel intensities x -> x^power (as in anomaly/)
};

const examples::Cli cli("transfer_learning",
                         "transfer_learning [--source-train N] [--source-test N] [--source-epochs E]\n"
                         "                         [--target-pt-min PT] [--target-pt-max PT] [--small N] [--small-epochs E]\n"
                         "                         [--test N] [--seeds K] [--batch B] [--seed S] [--out DIR] [--quick] [--quiet] [--help]\n"
                         "  --source-train N  jets (half top) that train the CNN at 550-650 GeV (default 10000)\n"
                         "  --target-pt-min, --target-pt-max  the new jet-pT window in GeV (default 800, 1000)\n"
                         "  --small N         the small training sample at the new pT (default 300, half top)\n"
                         "  --test N          test jets per class at the new pT (default 3000)\n"
                         "  --seeds K         small samples and initialisations compared (default 10)\n"
                         "  --quick           a CI-sized run in seconds\n");

Options parse_args(int argc, char** argv) {
    Options o;
    const auto pt = [&](const std::string& a, const char* v) {
        const double x = cli.number(a, v);
        if (!(x >= 100.0 && x <= 5000.0)) cli.usage(a + " must be in [100, 5000] GeV, got '" + v + "'");
        return x;
    };
    examples::Flags f(cli);
    f.common(o).count("--source-train", o.source_train, 100).count("--source-test", o.source_test, 20)
        .count("--source-epochs", o.source_epochs, 1, 10000)
        .on("--target-pt-min", [&](const std::string& a, const char* v) { o.target_lo = pt(a, v); })
        .on("--target-pt-max", [&](const std::string& a, const char* v) { o.target_hi = pt(a, v); })
        .count("--small", o.small, 20).count("--small-epochs", o.small_epochs, 1, 10000).count("--test", o.test, 50)
        .count("--seeds", o.seeds, 1, 1000).count("--batch", o.batch, 1, 100000)
        .flag("--quick", o.quick)
        .parse(argc, argv);
    if (!(o.target_lo < o.target_hi))
        cli.usage("--target-pt-min must be below --target-pt-max, got " + examples::fmt(o.target_lo) + " and " + examples::fmt(o.target_hi));
    if (o.quick) {  // explicit counts win
        f.preset("--source-train", o.source_train, 400).preset("--source-test", o.source_test, 100)
            .preset("--source-epochs", o.source_epochs, 1).preset("--small", o.small, 60)
            .preset("--small-epochs", o.small_epochs, 3).preset("--test", o.test, 100).preset("--seeds", o.seeds, 2);
    }
    return o;
}

/// Jet-image CNN as two named parts: layer 0 the convolutional features (3x3 convolutions with 8
/// maps and 2x2 pooling, 40 -> 20 -> 10, flattened to 800), layer 1 the dense head (800 -> 32 -> 1
/// logit). Parameters are "0.*" (features) and "1.*" (head).
Sequential<float> make_cnn(Rng& rng) {
    nn::ConvOptions same;
    same.same = true;
    Sequential<float> features, head, net;
    features.add<nn::Conv2d<float>>(1, 8, 3, rng, same).add<nn::ReLU<float>>().add<nn::MaxPool2d<float>>(2)
        .add<nn::Conv2d<float>>(8, 8, 3, rng, same).add<nn::ReLU<float>>().add<nn::MaxPool2d<float>>(2)
        .add<nn::Flatten<float>>();
    head.add<nn::Dense<float>>(800, 32, rng, Activation::relu).add<nn::Dense<float>>(32, 1, rng);
    net.add(std::move(features)).add(std::move(head));
    return net;
}

struct Data {
    Tensor<float> x, y;
    std::vector<double> labels;
};
Data make_data(std::size_t n_qcd, std::size_t n_top, std::uint64_t seed, const hep::JetConfig& cfg, double power) {
    const auto jets = ji::jets_by_class(n_qcd, n_top, seed, cfg);
    Data d{ji::image_tensor(jets, power), ji::label_tensor(jets), {}};
    for (const auto& j : jets) d.labels.push_back(j.label);
    return d;
}

void train(Sequential<float>& net, const Data& d, std::size_t epochs, const Options& o, std::uint64_t seed, bool verbose) {
    optim::Adam<float> adam(net.parameters(), 1e-3f);  // frozen parameters are skipped
    nn::FitOptions<float> fo;
    fo.epochs = epochs;
    fo.batch_size = o.batch;
    fo.seed = seed;
    fo.verbose = verbose && !o.quiet ? nn::Verbosity::lines : nn::Verbosity::quiet;
    nn::fit(net, {&d.x}, d.y, adam, fo);
}

std::vector<double> logits(Sequential<float>& net, const Data& d) {
    const Tensor<float> p = nn::predict(net, {&d.x});
    return std::vector<double>(p.data(), p.data() + p.size());
}

struct Row {
    std::string name;
    std::vector<double> auc;  // one per seed (one value for the rows without seeds)
};

/// "0.8123 ± 0.0101" (mean ± sample sd) or one value.
std::string pm(const std::vector<double>& v) {
    const ji::MeanSd m = ji::mean_sd(v);
    char b[64];
    if (v.size() > 1) std::snprintf(b, sizeof b, "%.4f ± %.4f", m.mean, m.sd);
    else std::snprintf(b, sizeof b, "%.4f", m.mean);
    return b;
}

void write_outputs(const Options& o, const std::vector<Row>& rows, const std::vector<double>& diff, std::size_t frozen, std::size_t total,
                   double seconds) {
    const std::string win = examples::fmt(o.target_lo, 4) + "-" + examples::fmt(o.target_hi, 4) + " GeV";
    {
        std::ofstream f(o.out + "/summary.json");
        if (!f) throw std::runtime_error("cannot write '" + o.out + "/summary.json'");
        f.precision(10);
        f << "{\n  \"seed\": " << o.seed << ",\n  \"seeds\": " << o.seeds << ",\n  \"source_pt_gev\": [550, 650],\n  \"target_pt_gev\": ["
          << o.target_lo << ", " << o.target_hi << "],\n  \"source_train_jets\": " << o.source_train << ",\n  \"source_epochs\": "
          << o.source_epochs << ",\n  \"small_sample_jets\": " << o.small << ",\n  \"small_epochs\": " << o.small_epochs
          << ",\n  \"test_jets_per_class\": " << o.test << ",\n  \"parameters\": " << total << ",\n  \"frozen_parameters\": " << frozen
          << ",\n  \"quick\": " << (o.quick ? "true" : "false") << ",\n  \"seconds\": " << seconds << ",\n  \"results\": [\n";
        for (std::size_t i = 0; i < rows.size(); ++i) {
            const ji::MeanSd m = ji::mean_sd(rows[i].auc);
            f << "    {\"name\": " << examples::json_string(rows[i].name) << ", \"auc_mean\": " << m.mean << ", \"auc_sd\": " << m.sd
              << ", \"auc\": [";
            for (std::size_t k = 0; k < rows[i].auc.size(); ++k) f << (k ? ", " : "") << rows[i].auc[k];
            f << "]}" << (i + 1 < rows.size() ? "," : "") << "\n";
        }
        const ji::MeanSd d = ji::mean_sd(diff);
        f << "  ],\n  \"transfer_minus_scratch_auc\": {\"mean\": " << d.mean << ", \"sd\": " << d.sd << ", \"wins\": ";
        std::size_t wins = 0;
        for (double x : diff) wins += x > 0;
        f << wins << ", \"of\": " << diff.size() << "}\n}\n";
    }
    std::ofstream t(o.out + "/table.md");
    if (!t) throw std::runtime_error("cannot write '" + o.out + "/table.md'");
    t << "| CNN | test jets | AUC (mean ± sd over seeds) |\n|---|---|---|\n";
    for (std::size_t i = 0; i < rows.size(); ++i)
        t << "| " << rows[i].name << " | " << (i == 0 ? "550-650 GeV" : win) << " | " << pm(rows[i].auc) << " |\n";
    t << "| transfer − scratch (paired by seed) | " << win << " | " << pm(diff) << " |\n";
    t << "\nSource: " << o.source_train << " jets at 550-650 GeV, " << o.source_epochs << " epochs; small sample: " << o.small
      << " jets at " << win << ", " << o.small_epochs << " epochs; test: " << o.test << " + " << o.test << " jets; seeds "
      << o.seed << " (base) and " << o.seeds << " small samples/initialisations; " << frozen << " of " << total
      << " parameters frozen for transfer.\n";
}

void plot_aucs(const std::string& path, const std::vector<Row>& rows, const Options& o) {
    io::Figure fig(640, 460);
    auto& ax = fig.axes();
    const char* colors[] = {"#1f77b4", "#d62728"};
    for (std::size_t r = 2; r < rows.size() && r < 4; ++r) {
        std::vector<double> x, y;
        for (std::size_t k = 0; k < rows[r].auc.size(); ++k) x.push_back(static_cast<double>(k + 1)), y.push_back(rows[r].auc[k]);
        ax.scatter(x, y, io::Style(rows[r].name + ": " + pm(rows[r].auc), colors[r - 2]).marker(r == 2 ? 'o' : 's'));
    }
    if (!rows[1].auc.empty()) ax.hline(rows[1].auc[0], io::Style("source CNN, no retraining", "#777777").dashed());
    ax.set_xlabel("seed (small sample and initialisation)").set_ylabel("AUC on the test jets at the new pT");
    ax.set_title("Transfer learning to " + examples::fmt(o.target_lo, 4) + "-" + examples::fmt(o.target_hi, 4) + " GeV with " +
                 std::to_string(o.small) + " jets");
    fig.save(path);
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse_args(argc, argv);
    return examples::run("transfer_learning", o.out, examples::Progress{o.quiet}, [&](const examples::Progress& progress) {
        const hep::JetConfig source_cfg;  // 550-650 GeV
        const hep::JetConfig target_cfg = ji::pt_window(o.target_lo, o.target_hi);
        const Data source = make_data(o.source_train / 2, o.source_train - o.source_train / 2, o.seed, source_cfg, o.power);
        const Data source_test = make_data(o.source_test, o.source_test, o.seed + 1000003, source_cfg, o.power);
        const Data target_test = make_data(o.test, o.test, o.seed + 2000003, target_cfg, o.power);
        progress.say("generated " + std::to_string(o.source_train) + " + " + std::to_string(2 * o.source_test) + " jets at 550-650 GeV and " +
                     std::to_string(2 * o.test) + " test jets at the new pT");

        // 1. The source CNN, saved as a model file as a real pretraining run would.
        Rng rng(o.seed * 7919 + 5);
        Sequential<float> src = make_cnn(rng);
        train(src, source, o.source_epochs, o, o.seed, true);
        const std::string file = o.out + "/source_cnn.tpr";
        nn::save_model(file, src);
        std::vector<Row> rows{{"source CNN (trained at 550-650 GeV)", {metrics::roc_auc(logits(src, source_test), source_test.labels)}},
                              {"source CNN, no retraining", {metrics::roc_auc(logits(src, target_test), target_test.labels)}},
                              {"transfer: frozen convolutions, head retrained", {}},
                              {"from scratch on the small sample", {}}};
        progress.say("source CNN: AUC " + examples::fmt(rows[0].auc[0], 4) + " at 550-650 GeV, " + examples::fmt(rows[1].auc[0], 4) +
                     " at the new pT without retraining; saved to " + file);

        // 2. Per seed: a small sample at the new pT; the same initial network twice.
        std::vector<double> diff;
        std::size_t frozen = 0, total = 0;
        for (std::size_t s = 0; s < o.seeds; ++s) {
            const std::uint64_t ss = o.seed * 1000 + 100 + s;
            const Data small_set = make_data(o.small / 2, o.small - o.small / 2, ss, target_cfg, o.power);
            Rng r1(ss * 7919 + 1), r2(ss * 7919 + 1);
            Sequential<float> tl = make_cnn(r1), scratch = make_cnn(r2);
            nn::load_pretrained(file, tl.at(0), "0.");  // the file's "0.*" (features) into the features
            tl.at(0).freeze();
            frozen = tl.num_parameters() - tl.num_trainable_parameters(), total = tl.num_parameters();
            train(tl, small_set, o.small_epochs, o, ss, false);
            train(scratch, small_set, o.small_epochs, o, ss, false);
            rows[2].auc.push_back(metrics::roc_auc(logits(tl, target_test), target_test.labels));
            rows[3].auc.push_back(metrics::roc_auc(logits(scratch, target_test), target_test.labels));
            diff.push_back(rows[2].auc.back() - rows[3].auc.back());
            progress.say("seed " + std::to_string(ss) + ": transfer AUC " + examples::fmt(rows[2].auc.back(), 4) + ", from scratch " +
                         examples::fmt(rows[3].auc.back(), 4));
        }
        const double seconds = progress.seconds();
        write_outputs(o, rows, diff, frozen, total, seconds);
        plot_aucs(o.out + "/auc.svg", rows, o);
        std::printf("\n%-48s %s\n", "CNN", "AUC (mean +- sd over seeds)");
        for (const Row& r : rows) std::printf("%-48s %s\n", r.name.c_str(), pm(r.auc).c_str());
        std::printf("%-48s %s\n", "transfer - scratch (paired)", pm(diff).c_str());
        std::printf("\nwrote %s/{summary.json, table.md, auc.svg, source_cnn.tpr} in %.1f s\n", o.out.c_str(), seconds);
        return 0;
    });
}
