// The top-tagging comparison (Kasieczka, Plehn et al., "The Machine Learning Landscape of Top
// Taggers", arXiv:1902.09914), rerun with tapir: every network of its table that tapir can
// express, trained on the same jets (one seeded train/validation/test split), evaluated on the same
// test jets: AUC, accuracy, background rejection 1/eps_B at eps_S = 0.3 with its bootstrap
// uncertainty, parameters, training time and inference time per jet; ROC curves in one plot.
//
// Jets are generated (hep/jets.hpp: a toy shower of t -> bqq' against quark and gluon jets) or read
// from a CSV in the reference dataset's layout (hep/jet_dataset.hpp).
//
//   top_tagging [--data FILE | --train N --val N --test N --seed S] [--models a,b,c] [--epochs E]
//               [--bootstrap N] [--out DIR] [--write-jets FILE] [--quantize] [--quick] [--quiet]
//
// --quantize deploys the trained CNN (deploy/model.hpp, quantize_model.hpp) as a float ModelT,
// int8 (per layer and per channel) and ap_fixed<16,6>, <8,3> and <8,3,RND,SAT>, and prints the
// AUC, 1/eps_B at eps_S = 0.3 and the agreement of the decisions at the float model's cut.
#include <tapir/tapir.hpp>

#include "../common/cli.hpp"
#include "../common/jets.hpp"
#include "../common/json.hpp"
#include "../common/output_dir.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace tapir;

namespace {

using examples::jets::JetInputs;
using Net = std::unique_ptr<nn::Module<float>>;

// ---- the networks ---------------------------------------------------------------------------------

/// Sizes shared by the networks and the inputs.
struct Sizes {
    std::size_t particles = 40;  // constituents in the sets and sequences
    std::size_t vectors = 30;    // constituents as 4-vectors (CoLa + LoLa)
    std::size_t lbn_vectors = 20;
    std::size_t pixels = 40;
};

enum class Input { high_level, image, set, efn, graph, sequence, vectors };

/// One network of the table: how to build it, what it reads, how it trains by default.
struct ModelSpec {
    const char* key;
    const char* title;
    const char* paper;  // the comparison's AUC for this network ("" when it has none)
    Input input;
    std::size_t epochs, batch;
    float lr;
    std::function<Net(Rng&, const Sizes&)> build;
};

Net make_mlp(Rng& rng, const Sizes&) {
    auto m = std::make_unique<nn::Sequential<float>>();
    m->add<nn::Dense<float>>(3, 64, rng, Activation::relu)
        .add<nn::Dense<float>>(64, 64, rng, Activation::relu)
        .add<nn::Dense<float>>(64, 64, rng, Activation::relu)
        .add<nn::Dense<float>>(64, 1, rng);
    return m;
}

/// DeepTop-like (arXiv:1701.08784), smaller: 3 convolutions 8@4x4, 2 max-pools, dense 64.
Net make_cnn(Rng& rng, const Sizes& s) {
    nn::ConvOptions same;
    same.same = true;
    auto m = std::make_unique<nn::Sequential<float>>();
    m->add<nn::Conv2d<float>>(1, 8, 4, rng, same)
        .add<nn::ReLU<float>>()
        .add<nn::MaxPool2d<float>>(2)
        .add<nn::Conv2d<float>>(8, 8, 4, rng, same)
        .add<nn::ReLU<float>>()
        .add<nn::MaxPool2d<float>>(2)
        .add<nn::Conv2d<float>>(8, 8, 4, rng, same)
        .add<nn::ReLU<float>>()
        .add<nn::Flatten<float>>()
        .add<nn::Dense<float>>(8 * (s.pixels / 4) * (s.pixels / 4), 64, rng, Activation::relu)
        .add<nn::Dense<float>>(64, 1, rng);
    return m;
}

/// An LSTM over the constituents, softest first, its last state into a dense head.
template <class Cell>
Net make_recurrent(Rng& rng, const Sizes& s) {
    auto g = std::make_unique<nn::Model<float>>();
    const auto x = g->input("particles", Shape{s.particles, 4});
    const auto mask = g->input("mask", Shape{s.particles});
    const auto h = g->call(g->layer("rnn", Cell(4, 64, rng)), {x, mask});
    const auto d = g->call(g->layer("dense", nn::Dense<float>(64, 64, rng, Activation::relu)), h);
    g->output(g->call(g->layer("out", nn::Dense<float>(64, 1, rng)), d));
    return g;
}

Net make_efn(Rng& rng, const Sizes&) { return std::make_unique<nn::EnergyFlowNetwork<float>>(2, std::vector<std::size_t>{64, 64, 64}, std::vector<std::size_t>{64, 64, 1}, rng); }
Net make_pfn(Rng& rng, const Sizes&) { return std::make_unique<nn::ParticleFlowNetwork<float>>(4, std::vector<std::size_t>{64, 64, 64}, std::vector<std::size_t>{64, 64, 1}, rng); }

/// CoLa + LoLa (arXiv:1707.08966): N constituents and 15 combinations, the 5 LoLa features of
/// each, batch-normalised, dense 100-50.
Net make_lola(Rng& rng, const Sizes& s) {
    const std::size_t n = s.vectors + 15;
    auto m = std::make_unique<nn::Sequential<float>>();
    m->add<nn::CoLa<float>>(s.vectors, 15, rng)
        .add<nn::LoLa<float>>(n, rng)
        .add<nn::Flatten<float>>()
        .add<nn::BatchNorm<float>>(5 * n)
        .add<nn::Dense<float>>(5 * n, 100, rng, Activation::relu)
        .add<nn::Dense<float>>(100, 50, rng, Activation::relu)
        .add<nn::Dense<float>>(50, 1, rng);
    return m;
}

/// Lorentz Boost Network (arXiv:1812.09722): 10 particles in 10 rest frames from the hardest
/// constituents, their features batch-normalised, dense 64-64.
Net make_lbn(Rng& rng, const Sizes& s) {
    auto g = std::make_unique<nn::Model<float>>();
    const auto x = g->input("vectors", Shape{s.vectors, 4});
    const std::size_t n = s.lbn_vectors, keep = std::min(n, s.vectors);
    const auto hard = g->apply("hardest", [keep](const std::vector<Var<float>>& v) { return slice(v[0], 1, 0, keep); }, {x});
    nn::LorentzBoostNetwork<float> lbn(keep, 10, rng);
    const std::size_t f = lbn.features();
    auto h = g->call(g->layer("lbn", std::move(lbn)), hard);
    h = g->call(g->layer("norm", nn::BatchNorm<float>(f)), h);
    h = g->call(g->layer("dense1", nn::Dense<float>(f, 64, rng, Activation::relu)), h);
    h = g->call(g->layer("dense2", nn::Dense<float>(64, 64, rng, Activation::relu)), h);
    g->output(g->call(g->layer("out", nn::Dense<float>(64, 1, rng)), h));
    return g;
}

/// ParticleNet-Lite (arXiv:1902.08570): EdgeConv blocks k = 7 on (eta', phi'), then on features.
Net make_particlenet(Rng& rng, const Sizes&) { return std::make_unique<nn::ParticleNetLite<float>>(2, 4, 1, rng); }

/// ParT's pairwise features of the particles (arXiv:2202.03772, eq. 3) from the set features of
/// examples/common/jets.hpp: ln dR, ln kT, ln z = min(pT) / (pT_i + pT_j) and ln m^2 (momenta in
/// units of the jet pT), as (B N N, 4) rows, zero where either particle is padding. Data, not
/// parameters: no gradient flows into them.
Var<float> pair_features(const Var<float>& x, const Var<float>& mask) {
    const Shape sh = x.shape();
    const std::size_t b = sh[0], n = sh[1], f = sh[2];
    Tape<float>& t = x.tape();
    Ref<float> u = t.alloc(Shape{b * n * n, 4});
    const float* px = x.data();
    const float* pm = mask.data();
    const double a = examples::jets::kAngleScale;
    for (std::size_t e = 0; e < b; ++e)
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j) {
                float* o = u.data + ((e * n + i) * n + j) * 4;
                const float* p = px + (e * n + i) * f;
                const float* q = px + (e * n + j) * f;
                if (pm[e * n + i] == 0.0f || pm[e * n + j] == 0.0f || i == j) {
                    o[0] = o[1] = o[2] = o[3] = 0.0f;
                    continue;
                }
                const double deta = a * (p[0] - q[0]), dphi = a * (p[1] - q[1]);
                const double zi = std::exp(2.0 * p[2] - 4.0), zj = std::exp(2.0 * q[2] - 4.0);
                const double dr = std::max(std::hypot(deta, dphi), 1e-4), lo = std::min(zi, zj);
                const double m2 = std::max(2.0 * zi * zj * (std::cosh(deta) - std::cos(dphi)), 1e-12);
                o[0] = static_cast<float>(std::log(dr));
                o[1] = static_cast<float>(std::log(lo * dr));
                o[2] = static_cast<float>(std::log(lo / (zi + zj)));
                o[3] = static_cast<float>(std::log(m2));
            }
    return t.leaf(u, false);
}

/// A small Particle Transformer (arXiv:2202.03772): particle embedding 4 -> 64 -> 32, the pairwise
/// features embedded 4 -> 16 -> 4 per pair as the attention bias U of each of the 4 heads, two
/// particle attention blocks (MLP 32-64-32) with the padding mask, the mean over the real particles
/// (instead of ParT's class-attention blocks), dense 64.
Net make_part(Rng& rng, const Sizes& s) {
    const std::size_t n = s.particles, e = 32, heads = 4;
    auto g = std::make_unique<nn::Model<float>>();
    const auto x = g->input("particles", Shape{n, 4});
    const auto mask = g->input("mask", Shape{n});
    const auto rows = g->apply("rows", [](const std::vector<Var<float>>& v) {
        const Shape sh = v[0].shape();
        return reshape(v[0], Shape{sh[0] * sh[1], sh[2]});
    }, {x});
    auto h = g->call(g->layer("embed1", nn::Dense<float>(4, 64, rng, Activation::relu)), rows);
    h = g->call(g->layer("embed2", nn::Dense<float>(64, e, rng)), h);
    h = g->apply("sets", [=](const std::vector<Var<float>>& v) { return reshape(v[0], Shape{v[0].shape()[0] / n, n, e}); }, {h});
    auto u = g->apply("pairs", [](const std::vector<Var<float>>& v) { return pair_features(v[0], v[1]); }, {x, mask});
    u = g->call(g->layer("pair_embed1", nn::Dense<float>(4, 16, rng, Activation::relu)), u);
    u = g->call(g->layer("pair_embed2", nn::Dense<float>(16, heads, rng)), u);
    u = g->apply("bias", [=](const std::vector<Var<float>>& v) {
        return permute(reshape(v[0], Shape{v[0].shape()[0] / (n * n), n, n, heads}), {0, 3, 1, 2});
    }, {u});
    h = g->call(g->layer("block1", nn::ParticleBlock<float>(e, heads, 2 * e, rng)), {h, mask, u});
    h = g->call(g->layer("block2", nn::ParticleBlock<float>(e, heads, 2 * e, rng)), {h, mask, u});
    h = g->apply("pool", [](const std::vector<Var<float>>& v) { return masked_mean(v[0], v[1]); }, {h, mask});
    h = g->call(g->layer("dense", nn::Dense<float>(e, 64, rng, Activation::relu)), h);
    g->output(g->call(g->layer("out", nn::Dense<float>(64, 1, rng)), h));
    return g;
}

const std::vector<ModelSpec>& model_specs() {
    static const std::vector<ModelSpec> specs = {
        {"mlp", "MLP on (m, τ21, τ32)", "", Input::high_level, 60, 128, 1e-3f, make_mlp},
        {"cnn", "CNN on 40×40 images", "0.981", Input::image, 10, 128, 1e-3f, make_cnn},
        {"lstm", "LSTM on constituents", "", Input::sequence, 15, 128, 2e-3f, make_recurrent<nn::LSTM<float>>},
        {"gru", "GRU on constituents", "", Input::sequence, 15, 128, 2e-3f, make_recurrent<nn::GRU<float>>},
        {"efn", "Energy Flow Network", "0.979", Input::efn, 40, 128, 1e-3f, make_efn},
        {"pfn", "Particle Flow Network", "0.982", Input::set, 40, 128, 1e-3f, make_pfn},
        {"lola", "CoLa + LoLa", "0.980", Input::vectors, 40, 128, 1e-3f, make_lola},
        {"lbn", "Lorentz Boost Network", "0.981", Input::vectors, 60, 128, 1e-3f, make_lbn},
        {"particlenet", "ParticleNet-Lite (EdgeConv)", "0.985 (full ParticleNet)", Input::graph, 10, 128, 1e-3f, make_particlenet},
        {"part", "Particle Transformer (small)", "", Input::set, 12, 128, 1e-3f, make_part},
    };
    return specs;
}
const char* const kDefaultModels = "mlp,cnn,lstm,efn,pfn,lola,lbn,particlenet,part";

/// The tensors a network reads, in its input order.
std::vector<const Tensor<float>*> inputs_of(Input in, const JetInputs& d) {
    switch (in) {
    case Input::high_level: return {&d.high_level};
    case Input::image: return {&d.images};
    case Input::set: return {&d.particles, &d.mask};
    case Input::efn: return {&d.efn, &d.mask};
    case Input::graph: return {&d.points, &d.particles, &d.mask};
    case Input::sequence: return {&d.sequence, &d.mask};
    case Input::vectors: return {&d.vectors};
    }
    return {};
}

// ---- options --------------------------------------------------------------------------------------

struct Options {
    std::string data, out = ".", write_jets;
    std::size_t train = 15000, val = 3000, test = 15000;
    std::uint64_t seed = 1;
    std::vector<const ModelSpec*> models;
    std::size_t epochs = 0;  // 0: each network's default
    std::size_t patience = 5;
    std::size_t bootstrap = 100;
    bool quick = false, quiet = false, quantize = false;
};

/// Fewer jets leave too few background jets passing at eps_S = 0.3 to measure a rejection.
constexpr std::size_t kMinJets = 100;

const examples::Cli cli(
    "top_tagging",
    "top_tagging [--data FILE | --train N --val N --test N] [--seed S] [--models a,b,c] [--epochs E]\n"
    "                   [--patience E] [--bootstrap N] [--out DIR] [--write-jets FILE] [--quantize] [--quick] [--quiet] [--help]\n"
    "  --data FILE       jets in the Top Quark Tagging Reference Dataset's CSV layout (E_0,PX_0,PY_0,PZ_0,...,\n"
    "                    is_signal_new), split 50/12.5/37.5% into train/validation/test (seeded)\n"
    "  --train N         generated training jets (default 15000); --val N validation (3000), --test N test (15000)\n"
    "  --models a,b,c    networks to train (default mlp,cnn,lstm,efn,pfn,lola,lbn,particlenet,part; also gru)\n"
    "  --epochs E        epochs for every network (default: each network's own, with early stopping)\n"
    "  --patience E      early stopping on the validation loss after E epochs without improvement (default 5; 0: off)\n"
    "  --bootstrap N     replicas for the uncertainty of 1/eps_B (default 100)\n"
    "  --quick           a CI-sized run: 400 + 200 + 400 jets, one epoch, 20 replicas\n"
    "  --write-jets FILE write the generated jets in the reference CSV layout\n"
    "  --quantize        deploy the trained CNN as float, int8 and ap_fixed<W,I> models (deploy/quantize_model.hpp)\n"
    "                    and compare their AUC, 1/eps_B and decisions on the test jets (writes quantized.md)\n"
    "writes table.md, summary.json, scores.csv and roc.svg to DIR (default .)\n");

std::vector<const ModelSpec*> parse_models(const std::string& list) {
    std::vector<const ModelSpec*> out;
    std::stringstream ss(list);
    std::string key;
    while (std::getline(ss, key, ',')) {
        if (key.empty()) continue;
        const ModelSpec* found = nullptr;
        for (const ModelSpec& m : model_specs())
            if (key == m.key) found = &m;
        if (!found) {
            std::string known;
            for (const ModelSpec& m : model_specs()) known += (known.empty() ? "" : ", ") + std::string(m.key);
            cli.usage("--models: unknown network '" + key + "' (known: " + known + ")");
        }
        if (std::find(out.begin(), out.end(), found) != out.end()) cli.usage("--models: '" + key + "' is given twice");
        out.push_back(found);
    }
    if (out.empty()) cli.usage("--models needs at least one network");
    return out;
}

Options parse_args(int argc, char** argv) {
    Options o;
    std::string models = kDefaultModels;
    examples::Flags f(cli);
    f.text("--data", o.data).text("--out", o.out).text("--write-jets", o.write_jets)
        .count("--train", o.train, kMinJets).count("--val", o.val, kMinJets).count("--test", o.test, kMinJets)
        .seed("--seed", o.seed).text("--models", models).count("--epochs", o.epochs, 1, 10000)
        .count("--patience", o.patience, 0, 10000).count("--bootstrap", o.bootstrap, 2, 100000)
        .flag("--quick", o.quick).flag("--quiet", o.quiet).flag("--quantize", o.quantize)
        .parse(argc, argv);
    const bool sized = f.given("--train") || f.given("--val") || f.given("--test");
    o.models = parse_models(models);
    if (o.quick) {
        if (!sized) o.train = 400, o.val = 200, o.test = 400;
        if (o.epochs == 0) o.epochs = 1;
        o.bootstrap = std::min<std::size_t>(o.bootstrap, 20);
    }
    if (!o.data.empty() && !o.write_jets.empty()) cli.usage("--write-jets writes generated jets; it cannot be used with --data");
    if (o.quantize && std::none_of(o.models.begin(), o.models.end(), [](const ModelSpec* m) { return m->input == Input::image; }))
        cli.usage("--quantize deploys the CNN: add cnn to --models");
    return o;
}

// ---- data -----------------------------------------------------------------------------------------

struct Split {
    JetInputs train, val, test;
    std::vector<double> test_label;
};

examples::jets::InputSpec input_spec(const Options& o, const Sizes& s) {
    examples::jets::InputSpec spec;
    spec.particles = s.particles;
    spec.vectors = s.vectors;
    spec.pixels = s.pixels;
    for (const ModelSpec* m : o.models) {
        switch (m->input) {
        case Input::high_level: spec.high_level = true; break;
        case Input::image: spec.images = true; break;
        case Input::set:
        case Input::efn:
        case Input::graph: spec.sets = true; break;
        case Input::sequence: spec.sequences = true; break;
        case Input::vectors: spec.four_vectors = true; break;
        }
    }
    return spec;
}

/// The jets and their seeded split: generated as train + val + test jets, or a file's jets split
/// 50/12.5/37.5%. Each part must hold both classes.
Split load_split(const Options& o, const Sizes& sizes, const examples::Progress& progress, std::string& source) {
    std::vector<hep::GeneratedJet> jets;
    std::size_t n_train = o.train, n_val = o.val;
    if (!o.data.empty()) {
        jets = hep::read_top_tagging_csv(o.data);
        if (jets.size() < 4 * kMinJets)
            throw value_error(o.data + ": only " + std::to_string(jets.size()) + " jets; the split needs at least " + std::to_string(4 * kMinJets));
        n_train = jets.size() / 2;
        n_val = jets.size() / 8;
        source = o.data + " (" + std::to_string(jets.size()) + " jets)";
    } else {
        const std::size_t n = o.train + o.val + o.test;
        jets = hep::generate_jets(n, o.seed);
        if (!o.write_jets.empty()) hep::write_top_tagging_csv(o.write_jets, jets);
        source = "generated (" + std::to_string(n) + " jets, seed " + std::to_string(o.seed) + ")";
    }
    progress.say("jets: " + source);
    std::vector<std::size_t> order(jets.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    Rng rng(o.seed * 7919 + 3);
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[static_cast<std::size_t>(rng.uniform() * static_cast<double>(i))]);
    const std::vector<std::size_t> tr(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n_train));
    const std::vector<std::size_t> va(order.begin() + static_cast<std::ptrdiff_t>(n_train), order.begin() + static_cast<std::ptrdiff_t>(n_train + n_val));
    const std::vector<std::size_t> te(order.begin() + static_cast<std::ptrdiff_t>(n_train + n_val), order.end());
    const examples::jets::InputSpec spec = input_spec(o, sizes);
    Split s;
    s.train = examples::jets::make_inputs(jets, tr, spec);
    s.val = examples::jets::make_inputs(jets, va, spec);
    s.test = examples::jets::make_inputs(jets, te, spec);
    for (const JetInputs* d : {&s.train, &s.val, &s.test}) {
        double sig = 0;
        for (std::size_t i = 0; i < d->n; ++i) sig += d->label[i];
        if (sig == 0 || sig == static_cast<double>(d->n))
            throw value_error("the " + std::string(d == &s.train ? "training" : d == &s.val ? "validation" : "test") + " jets are all of one class");
    }
    for (std::size_t i = 0; i < s.test.n; ++i) s.test_label.push_back(s.test.label[i]);
    if (spec.high_level) {  // standardised with the training jets' means and spreads
        data::StandardScaler scaler;
        scaler.fit(s.train.high_level);
        for (JetInputs* d : {&s.train, &s.val, &s.test}) d->high_level = scaler.transform(d->high_level);
    }
    progress.say("split: " + std::to_string(s.train.n) + " training, " + std::to_string(s.val.n) + " validation, " +
                 std::to_string(s.test.n) + " test jets");
    return s;
}

// ---- training and evaluation ----------------------------------------------------------------------

struct Result {
    const ModelSpec* spec = nullptr;
    std::vector<double> score;  // test-jet probabilities
    double auc = 0, accuracy = 0;
    metrics::Estimate rejection;  // 1/eps_B at eps_S = 0.3, bootstrapped
    std::size_t parameters = 0, epochs = 0, best_epoch = 0;
    double train_seconds = 0, infer_us = 0;
    double train_cpu = 0, infer_cpu_us = 0;  // process CPU time: the figures to compare on a loaded machine
    std::string deployed;  // --quantize: the deployed CNN's table (markdown)
};

constexpr double kEpsS = 0.3;

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
double cpu_seconds_since(std::clock_t c0) { return static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC; }

std::string deploy_cnn(const nn::Module<float>& net, const Tensor<float>& trained_logits, const Split& s, const Sizes& sizes,
                       const examples::Progress& progress);

Result train_and_test(const ModelSpec& spec, const Split& s, const Sizes& sizes, const Options& o, const examples::Progress& progress) {
    Rng rng(o.seed * 104729 + static_cast<std::uint64_t>(&spec - model_specs().data()));
    Net net = spec.build(rng, sizes);
    Result r;
    r.spec = &spec;
    r.parameters = net->num_parameters();
    optim::Adam<float> adam(net->parameters(), spec.lr);
    nn::FitOptions<float> fo;
    fo.epochs = o.epochs ? o.epochs : spec.epochs;
    fo.batch_size = spec.batch;
    fo.seed = o.seed;
    fo.validation_inputs = inputs_of(spec.input, s.val);
    fo.validation_y = &s.val.label;
    fo.patience = o.patience;
    fo.restore_best_weights = true;
    // The learning rate divided by 3 after 2 epochs without a better validation loss: the noisy
    // plateau of a constant rate is where most networks here would otherwise stop.
    nn::ReduceLROnPlateauOptions plateau;
    plateau.factor = 0.3;
    plateau.patience = 2;
    plateau.min_lr = 1e-5;
    fo.callbacks.push_back(nn::reduce_lr_on_plateau<float>(plateau));
    fo.verbose = o.quiet ? nn::Verbosity::quiet : nn::Verbosity::lines;
    progress.say(std::string(spec.title) + ": " + std::to_string(r.parameters) + " parameters, up to " + std::to_string(fo.epochs) + " epochs");
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    const nn::History h = nn::fit(*net, inputs_of(spec.input, s.train), s.train.label, adam, fo);
    r.train_seconds = seconds_since(t0);
    r.train_cpu = cpu_seconds_since(c0);
    r.epochs = h.epochs();
    r.best_epoch = h.best_epoch;
    const auto t1 = std::chrono::steady_clock::now();
    const std::clock_t c1 = std::clock();
    const Tensor<float> logits = nn::predict(*net, inputs_of(spec.input, s.test), 256);
    r.infer_us = 1e6 * seconds_since(t1) / static_cast<double>(s.test.n);
    r.infer_cpu_us = 1e6 * cpu_seconds_since(c1) / static_cast<double>(s.test.n);
    r.score.resize(s.test.n);
    for (std::size_t i = 0; i < s.test.n; ++i) r.score[i] = 1.0 / (1.0 + std::exp(-static_cast<double>(logits[i])));
    r.auc = metrics::roc_auc(r.score, s.test_label);
    r.accuracy = metrics::accuracy(r.score, s.test_label);
    metrics::BootstrapOptions bo;
    bo.replicas = o.bootstrap;
    bo.seed = o.seed;
    r.rejection = metrics::bootstrap(
        s.test.n, {}, [&](const metrics::ValueView& w) { return metrics::background_rejection(r.score, s.test_label, w, kEpsS); }, bo);
    if (o.quantize && spec.input == Input::image) r.deployed = deploy_cnn(*net, logits, s, sizes, progress);
    progress.say(std::string(spec.title) + ": AUC " + examples::fmt(r.auc, 4) + ", accuracy " + examples::fmt(r.accuracy, 3) +
                 ", 1/eps_B(0.3) " + examples::fmt(r.rejection.value, 4) + " +- " + examples::fmt(r.rejection.sd, 2) + ", " +
                 examples::fmt(r.train_seconds, 3) + " s training (" + examples::fmt(r.train_cpu, 3) + " s CPU)");
    return r;
}

// ---- deployment of the CNN (--quantize) -----------------------------------------------------------

/// make_cnn on 40 x 40 images as a compile-time model: 'same' 4 x 4 convolutions pad 1 before
/// and 2 after (Conv2dT's PH, PW, PB, PR); the ReLUs are fused into the layers before them.
using CnnT = deploy::ModelT<float, deploy::Conv2dT<float, 1, 40, 40, 8, 4, 4, 1, 1, 1, 1, 2, 2>, deploy::MaxPool2dT<float, 8, 40, 40, 2, 2>,
                            deploy::Conv2dT<float, 8, 20, 20, 8, 4, 4, 1, 1, 1, 1, 2, 2>, deploy::MaxPool2dT<float, 8, 20, 20, 2, 2>,
                            deploy::Conv2dT<float, 8, 10, 10, 8, 4, 4, 1, 1, 1, 1, 2, 2>, deploy::FlattenT<float, 800>,
                            deploy::DenseT<float, 800, 64>, deploy::DenseT<float, 64, 1>>;

struct Deployed {
    std::string name;
    std::vector<float> logit;
    std::vector<double> score;
    double cpu_us = 0;  // CPU time per jet, one jet at a time
};

void set_scores(Deployed& d) {
    d.score.resize(d.logit.size());
    for (std::size_t i = 0; i < d.logit.size(); ++i) d.score[i] = 1.0 / (1.0 + std::exp(-static_cast<double>(d.logit[i])));
}

template <class M>
Deployed run_deployed(const std::string& name, const M& m, const Tensor<float>& images) {
    Deployed d;
    d.name = name;
    const std::size_t n = images.dim(0);
    d.logit.resize(n);
    const std::clock_t c0 = std::clock();
    for (std::size_t i = 0; i < n; ++i) m.forward(images.data() + i * M::inputs, &d.logit[i]);
    d.cpu_us = 1e6 * cpu_seconds_since(c0) / static_cast<double>(n);
    set_scores(d);
    return d;
}

/// The trained CNN deployed as a float ModelT, int8 and ap_fixed models (int8 calibrated on up to
/// 1000 training images): AUC, 1/eps_B at eps_S = 0.3, and how many test jets get the float
/// model's decision at its eps_S = 0.3 cut. Returns the table (markdown).
std::string deploy_cnn(const nn::Module<float>& net, const Tensor<float>& trained_logits, const Split& s, const Sizes& sizes,
                       const examples::Progress& progress) {
    const auto* seq = dynamic_cast<const nn::Sequential<float>*>(&net);
    if (!seq || sizes.pixels != 40) throw value_error("--quantize: the deployed CNN is make_cnn on 40 x 40 images");
    const auto f = deploy::to_model<CnnT>(*seq);
    const std::size_t nc = std::min<std::size_t>(1000, s.train.n);
    const auto check = [](deploy::Status st, const char* what) {
        if (st != deploy::Status::ok) throw value_error(std::string("--quantize: ") + what + ": " + deploy::status_message(st));
    };
    deploy::QuantizeOptions qo;
    qo.non_negative_input = true;  // pT fractions
    const auto q8 = std::make_unique<deploy::QuantizedT<deploy::Int8, CnnT>>();
    check(deploy::quantize_model(*q8, *f, s.train.images.data(), nc, qo), "int8");
    qo.per_channel = true;
    const auto q8c = std::make_unique<deploy::QuantizedT<deploy::Int8, CnnT>>();
    check(deploy::quantize_model(*q8c, *f, s.train.images.data(), nc, qo), "int8 per channel");
    const auto q16 = std::make_unique<deploy::QuantizedT<deploy::FixedPoint<16, 6>, CnnT>>();
    check(deploy::quantize_model(*q16, *f, nullptr, 0), "ap_fixed<16,6>");
    const auto q8_3 = std::make_unique<deploy::QuantizedT<deploy::FixedPoint<8, 3>, CnnT>>();
    check(deploy::quantize_model(*q8_3, *f, nullptr, 0), "ap_fixed<8,3>");
    const auto q8_3s = std::make_unique<deploy::QuantizedT<deploy::FixedPoint<8, 3, deploy::Quant::rnd, deploy::Ovf::sat>, CnnT>>();
    check(deploy::quantize_model(*q8_3s, *f, nullptr, 0), "ap_fixed<8,3,RND,SAT>");

    std::vector<Deployed> rows(1);
    rows[0].name = "trained network (nn::predict)";
    rows[0].logit.assign(trained_logits.data(), trained_logits.data() + s.test.n);
    set_scores(rows[0]);
    const Tensor<float>& x = s.test.images;
    rows.push_back(run_deployed("float ModelT", *f, x));
    rows.push_back(run_deployed("int8, one scale per layer", *q8, x));
    rows.push_back(run_deployed("int8, per-channel weight scales", *q8c, x));
    rows.push_back(run_deployed("ap_fixed<16,6>", *q16, x));
    rows.push_back(run_deployed("ap_fixed<8,3>", *q8_3, x));
    rows.push_back(run_deployed("ap_fixed<8,3,AP_RND,AP_SAT>", *q8_3s, x));

    const Deployed& ref = rows[1];
    const double cut = metrics::efficiency_threshold(ref.score, s.test_label, {}, kEpsS);
    std::ostringstream t;
    t << "| deployed CNN | AUC | 1/ε_B at ε_S = 0.3 | decisions as float at its ε_S = 0.3 cut | logits bitwise float | max abs Δ logit | CPU µs/jet |\n"
      << "|---|---|---|---|---|---|---|\n";
    char b[512];
    for (const Deployed& d : rows) {
        std::size_t agree = 0, same = 0;
        double dmax = 0.0;
        for (std::size_t i = 0; i < s.test.n; ++i) {
            agree += (d.score[i] >= cut) == (ref.score[i] >= cut) ? 1 : 0;
            same += std::memcmp(&d.logit[i], &ref.logit[i], sizeof(float)) == 0 ? 1 : 0;
            dmax = std::max(dmax, std::fabs(static_cast<double>(d.logit[i]) - static_cast<double>(ref.logit[i])));
        }
        const double rej = metrics::background_rejection(d.score, s.test_label, {}, kEpsS);
        std::snprintf(b, sizeof b, "| %s | %.4f | %.1f | %.2f%% (%zu of %zu) | %zu of %zu | %.3g | %s |\n", d.name.c_str(),
                      metrics::roc_auc(d.score, s.test_label), rej, 100.0 * static_cast<double>(agree) / static_cast<double>(s.test.n), agree,
                      s.test.n, same, s.test.n, dmax, &d == &rows[0] ? "—" : examples::fmt(d.cpu_us, 3).c_str());
        t << b;
    }
    t << "\nint8 input scales calibrated on " << nc << " training images (coverage 0.9999, uint8 codes after ReLU); ap_fixed as "
      << "hls4ml's default AP_TRN, AP_WRAP unless given; tapir::simd::isa " << simd::isa_name(f->isa()) << ".\n";
    progress.say("deployed the CNN as float, int8 and ap_fixed models");
    return t.str();
}

// ---- output ---------------------------------------------------------------------------------------

std::string rejection_text(const metrics::Estimate& e) {
    if (!std::isfinite(e.value)) return "∞ (no test background passes)";
    char b[64];
    std::snprintf(b, sizeof b, "%.0f ± %.0f", e.value, std::isfinite(e.sd) ? e.sd : 0.0);
    return std::isfinite(e.sd) ? b : std::string(b) + " (unbounded replicas)";
}

std::string table_markdown(const std::vector<Result>& rs, const std::string& source, const std::string& command) {
    std::ostringstream t;
    t << "| network | AUC | accuracy | 1/ε_B at ε_S = 0.3 | parameters | training [s] wall (CPU) | epochs (best) | inference [µs/jet] wall (CPU) | AUC in arXiv:1902.09914 |\n"
      << "|---|---|---|---|---|---|---|---|---|\n";
    char b[512];
    for (const Result& r : rs) {
        std::snprintf(b, sizeof b, "| %s | %.4f | %.3f | %s | %zu | %.0f (%.0f) | %zu (%zu) | %.0f (%.0f) | %s |\n", r.spec->title, r.auc,
                      r.accuracy, rejection_text(r.rejection).c_str(), r.parameters, r.train_seconds, r.train_cpu, r.epochs, r.best_epoch,
                      r.infer_us, r.infer_cpu_us, *r.spec->paper ? r.spec->paper : "—");
        t << b;
    }
    t << "\nJets: " << source << ". Command: `" << command << "`. 1/ε_B ± the standard deviation of "
      << "Poisson-bootstrap replicas of the test jets.\n";
    return t.str();
}

void write_json(const std::string& path, const Options& o, const std::string& source, const std::string& command,
                const std::vector<Result>& rs, double seconds) {
    std::ostringstream f;
    f.precision(8);
    const auto num = [](double v) { return std::isfinite(v) ? examples::fmt(v, 8) : std::string("null"); };
    f << "{\n  \"jets\": " << examples::json_string(source) << ",\n  \"command\": " << examples::json_string(command)
      << ",\n  \"seed\": " << o.seed << ",\n  \"signal_efficiency\": " << kEpsS << ",\n  \"bootstrap_replicas\": " << o.bootstrap
      << ",\n  \"seconds\": " << seconds << ",\n  \"networks\": [\n";
    for (std::size_t i = 0; i < rs.size(); ++i) {
        const Result& r = rs[i];
        f << "    {\"key\": " << examples::json_string(r.spec->key) << ", \"name\": " << examples::json_string(r.spec->title)
          << ", \"auc\": " << num(r.auc) << ", \"accuracy\": " << num(r.accuracy) << ", \"inverse_background_efficiency\": "
          << num(r.rejection.value) << ", \"inverse_background_efficiency_sd\": " << num(r.rejection.sd)
          << ", \"parameters\": " << r.parameters << ", \"epochs\": " << r.epochs << ", \"best_epoch\": " << r.best_epoch
          << ", \"training_seconds\": " << num(r.train_seconds) << ", \"training_cpu_seconds\": " << num(r.train_cpu)
          << ", \"inference_microseconds_per_jet\": " << num(r.infer_us) << ", \"inference_cpu_microseconds_per_jet\": " << num(r.infer_cpu_us)
          << ", \"paper_auc\": " << examples::json_string(r.spec->paper) << "}" << (i + 1 < rs.size() ? "," : "") << "\n";
    }
    f << "  ]\n}\n";
    examples::write_text_file(path, f.str());
}

void write_scores(const std::string& path, const std::vector<Result>& rs, const std::vector<double>& label) {
    std::ostringstream f;
    f.precision(7);
    f << "label";
    for (const Result& r : rs) f << ',' << r.spec->key;
    f << '\n';
    for (std::size_t i = 0; i < label.size(); ++i) {
        f << label[i];
        for (const Result& r : rs) f << ',' << r.score[i];
        f << '\n';
    }
    examples::write_text_file(path, f.str());
}

/// 1/eps_B (log) against eps_S, one curve per network, on a grid of eps_S.
void plot_roc(const std::string& path, const std::vector<Result>& rs, const std::vector<double>& label) {
    io::Figure fig(760, 560);
    auto& ax = fig.axes();
    double top = 1.0;
    for (const Result& r : rs) {
        const metrics::RocCurve roc = metrics::roc_curve(r.score, label);
        std::vector<double> x, y;
        for (int k = 1; k <= 200; ++k) {
            const double es = 0.005 * k;
            const double eb = roc.background_efficiency(es);
            if (eb > 0.0) x.push_back(es), y.push_back(1.0 / eb), top = std::max(top, 1.0 / eb);
        }
        std::ostringstream l;
        l.precision(4);
        l << r.spec->title << " (AUC " << r.auc << ")";
        ax.line(x, y, io::Style(l.str()).width(2));
    }
    ax.vline(kEpsS, io::Style("ε_S = 0.3", "#999999").dashed());
    ax.set_xlabel("signal efficiency ε_S").set_ylabel("background rejection 1/ε_B").set_title("Top tagging: ROC curves (test jets)");
    ax.set_xlim(0, 1).set_ylim(1, 2 * top).set_log_y();
    examples::write_text_file(path, fig.to_string());
}

void print_table(const std::vector<Result>& rs) {
    std::printf("\n%-30s %7s %6s %16s %10s %9s %9s %11s %8s\n", "network", "AUC", "acc", "1/eps_B(0.3)", "params", "train s", "CPU s", "CPU us/jet",
                "paper");
    for (const Result& r : rs) {
        char rej[48];
        if (std::isfinite(r.rejection.value)) std::snprintf(rej, sizeof rej, "%.0f+-%.0f", r.rejection.value, r.rejection.sd);
        else std::snprintf(rej, sizeof rej, "inf");
        // The titles hold multi-byte characters: pad by hand to 30 columns.
        std::string title = r.spec->title;
        std::size_t cols = 0;
        for (char c : title) cols += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
        title += std::string(cols < 30 ? 30 - cols : 0, ' ');
        std::printf("%s %7.4f %6.3f %16s %10zu %9.1f %9.1f %11.1f %8s\n", title.c_str(), r.auc, r.accuracy, rej, r.parameters, r.train_seconds,
                    r.train_cpu, r.infer_cpu_us, *r.spec->paper ? std::string(r.spec->paper).substr(0, 5).c_str() : "-");
    }
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse_args(argc, argv);
    return examples::run("top_tagging", o.out, examples::Progress{o.quiet}, [&](const examples::Progress& progress) {
        std::string command = "top_tagging";
        for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
        const Sizes sizes;
        std::string source;
        const Split split = load_split(o, sizes, progress, source);
        std::vector<Result> results;
        for (const ModelSpec* m : o.models) results.push_back(train_and_test(*m, split, sizes, o, progress));
        const double seconds = progress.seconds();
        examples::write_text_file(o.out + "/table.md", table_markdown(results, source, command));
        write_json(o.out + "/summary.json", o, source, command, results, seconds);
        write_scores(o.out + "/scores.csv", results, split.test_label);
        plot_roc(o.out + "/roc.svg", results, split.test_label);
        print_table(results);
        for (const Result& r : results)
            if (!r.deployed.empty()) {
                std::printf("\n%s", r.deployed.c_str());
                examples::write_text_file(o.out + "/quantized.md", r.deployed);
            }
        const Result* mlp = nullptr;
        for (const Result& r : results)
            if (std::string(r.spec->key) == "mlp") mlp = &r;
        if (mlp) {
            std::size_t beaten = 0, deep = 0;
            for (const Result& r : results)
                if (&r != mlp) ++deep, beaten += r.auc > mlp->auc ? 1 : 0;
            if (deep) std::printf("\n%zu of %zu deep networks beat the MLP on (m, tau21, tau32) in AUC (%.4f)\n", beaten, deep, mlp->auc);
        }
        std::printf("\nwrote %s/{table.md, summary.json, scores.csv, roc.svg} in %.1f s\n", o.out.c_str(), seconds);
        return 0;
    });
}
