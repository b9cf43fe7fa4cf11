// Learning to pivot: gradient reversal, the MDN adversary module, and the training helper on
// the toy of arXiv 1611.01046 section 5.1, where lambda = 50 must make the classifier output
// (nearly) independent of the nuisance z while lambda = 0 does not.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/nn/pivot.hpp>
#include <tapir/metrics/divergence.hpp>
#include <tapir/metrics/roc.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>

using namespace tapir;
using V = Var<double>;
using Vs = std::vector<V>;
using Td = Tensor<double>;
using Tf = Tensor<float>;

namespace {
bool quick() {
    const char* v = std::getenv("TAPIR_TEST_QUICK");
    if (v && *v && std::strcmp(v, "0") != 0) return true;
#if defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return true;
#endif
#endif
    return false;
}

/// Two-sample Kolmogorov-Smirnov distance sup_t |F_a(t) - F_b(t)|.
double ks_distance(std::vector<float> a, std::vector<float> b) {
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    std::size_t i = 0, j = 0;
    double d = 0;
    while (i < a.size() && j < b.size()) {
        const float t = std::min(a[i], b[j]);
        while (i < a.size() && a[i] <= t) ++i;
        while (j < b.size() && b[j] <= t) ++j;
        d = std::max(d, std::abs(static_cast<double>(i) / static_cast<double>(a.size()) - static_cast<double>(j) / static_cast<double>(b.size())));
    }
    return d;
}

/// The toy of arXiv 1611.01046 section 5.1: x|y=0 ~ N((0,0), [[1,-0.5],[-0.5,1]]),
/// x|y=1 ~ N((1, 1+z), I), z ~ N(0, 1) for every event (it acts on the signal only).
struct Toy {
    Tf x, y, z;
};
Toy make_toy(std::size_t n, Rng& rng) {
    Toy d{Tf(Shape{n, 2}), Tf(Shape{n}), Tf(Shape{n})};
    const double c = std::sqrt(1 - 0.25);  // Cholesky of [[1, -0.5], [-0.5, 1]]
    for (std::size_t i = 0; i < n; ++i) {
        const bool sig = i % 2 == 0;
        const double z = rng.normal(), u = rng.normal(), v = rng.normal();
        d.y[i] = sig ? 1.f : 0.f;
        d.z[i] = static_cast<float>(z);
        d.x(i, 0) = static_cast<float>(sig ? 1 + u : u);
        d.x(i, 1) = static_cast<float>(sig ? 1 + z + v : -0.5 * u + c * v);
    }
    return d;
}
/// Signal events at a fixed nuisance value z.
Tf signal_at(double z, std::size_t n, Rng& rng) {
    Tf x(Shape{n, 2});
    for (std::size_t i = 0; i < n; ++i) {
        x(i, 0) = static_cast<float>(1 + rng.normal());
        x(i, 1) = static_cast<float>(1 + z + rng.normal());
    }
    return x;
}

/// Jensen-Shannon divergence (bits) of 20-bin histograms of two samples of values in [0, 1].
double jsd_hist(const std::vector<float>& a, const std::vector<float>& b) {
    std::vector<double> ha(20, 0.0), hb(20, 0.0);
    for (float v : a) ha[std::min<std::size_t>(19, static_cast<std::size_t>(v * 20))] += 1;
    for (float v : b) hb[std::min<std::size_t>(19, static_cast<std::size_t>(v * 20))] += 1;
    return metrics::jensen_shannon(ha, hb);
}

struct PivotResult {
    double ks_max;       // max over the pairs of z in {-1, 0, 1}
    double jsd;          // JSD between z = -1 and z = +1
    double auc_proxy;    // mean output on signal minus mean output on background
    double adversary_nll;
};

PivotResult run_pivot(float lambda, std::size_t steps) {
    Rng rng(12345);
    const Toy train = make_toy(20000, rng);
    nn::Sequential<float> clf;
    clf.add<nn::Dense<float>>(2, 20, rng, Activation::relu).add<nn::Dense<float>>(20, 20, rng, Activation::relu).add<nn::Dense<float>>(20, 1, rng);
    nn::MdnAdversary<float> adv(1, {32, 32}, 5, rng);
    // The adversary learns faster than the classifier, so that it keeps up with it.
    optim::Adam<float> oc(clf.parameters(), 5e-4f), oa(adv.parameters(), 5e-3f);
    nn::PivotOptions<float> opt;
    opt.lambda = lambda;
    opt.adversary_steps = 5;
    opt.pretrain_classifier_steps = steps / 2;
    opt.pretrain_adversary_steps = steps / 2;
    opt.steps = steps;
    opt.batch_size = 256;
    opt.adversary_events = nn::PivotEvents::all;  // the paper's toy: z acts on the signal
    nn::PivotTrainer<float> tr(clf, adv, oc, oa, opt);
    tr.set_data(train.x, train.y, train.z);
    const auto hist = tr.run();
    CHECK(hist.classifier.size() == steps);
    CHECK(hist.adversary.size() == steps);
    CHECK(hist.classifier_pretrain.size() == steps / 2);
    for (float v : hist.classifier) CHECK_MESSAGE(std::isfinite(v), "non-finite E = L_f - lambda L_r");

    std::vector<std::vector<float>> out;
    for (double z : {-1.0, 0.0, 1.0}) {
        const Tf p = tr.predict(signal_at(z, 5000, rng));
        out.emplace_back(p.begin(), p.end());
    }
    PivotResult r{};
    r.ks_max = std::max({ks_distance(out[0], out[1]), ks_distance(out[1], out[2]), ks_distance(out[0], out[2])});
    r.jsd = jsd_hist(out[0], out[2]);
    const Toy test = make_toy(4000, rng);
    const Tf p = tr.predict(test.x);
    double ms = 0, mb = 0;
    for (std::size_t i = 0; i < 4000; ++i) (test.y[i] > 0 ? ms : mb) += p[i] / 2000.0;
    r.auc_proxy = ms - mb;
    r.adversary_nll = tr.adversary_loss(test.x, test.y, test.z);
    return r;
}
/// Two normal features, alternating labels (even rows signal), a uniform mass: rows of x, y, m.
void toy_events(Rng& rng, Td& x, Td& y, Td& m) {
    for (std::size_t i = 0; i < y.size(); ++i) {
        x(i, 0) = rng.normal();
        x(i, 1) = rng.normal();
        y[i] = i % 2 == 0 ? 1.0 : 0.0;
        m[i] = rng.uniform();
    }
}

} // namespace

TEST_CASE("gradient reversal: identity forward, -lambda backward, as a function and as a layer") {
    Tape<double> t;
    const V x = t.variable(Td(Shape{3}, {1.0, -2.0, 0.5}));
    const V y = grad_reverse(x, 3.0);
    for (std::size_t i = 0; i < 3; ++i) CHECK(y[i] == x[i]);
    const V g = grad(sum(mul(y, y)), x);
    for (std::size_t i = 0; i < 3; ++i) CHECK(g[i] == doctest::Approx(-3.0 * 2 * x[i]));
    nn::GradientReversal<double> layer(2.0);
    const V g2 = grad(sum(layer(x)), x);
    CHECK(g2[0] == doctest::Approx(-2.0));
    CHECK(layer.describe() == "GradientReversal(2)");
    CHECK_THROWS_AS(nn::GradientReversal<double>(std::nan("")), value_error);
    // (No finite-difference check: by design its gradient is not the derivative of its value.)
}

TEST_CASE("MDN adversary module: heads, NLL, parameters, copies, gradients") {
    Rng rng(3);
    nn::MdnAdversary<double> adv(1, {8, 6}, 5, rng);
    CHECK(adv.components() == 5);
    CHECK(adv.parameters().size() == 6);  // body 2 x (W, b), head (W, b)
    CHECK(adv.num_parameters() == (1 * 8 + 8) + (8 * 6 + 6) + (6 * 15 + 15));
    CHECK(adv.named_parameters()[0].first == "body.0.weight");
    CHECK(adv.named_parameters()[5].first == "head.bias");
    Tape<double> t;
    const Td z(Shape{4, 1}, {0.1, 0.5, 0.9, 0.3}), m(Shape{4}, {0.2, 0.4, 0.6, 0.8});
    const auto h = adv.heads(t.constant(z));
    CHECK(h.logits.shape() == Shape{4, 5});
    CHECK(h.mu.shape() == Shape{4, 5});
    CHECK(h.raw_sigma.shape() == Shape{4, 5});
    const double direct = loss::mdn_nll(h.logits, h.mu, h.raw_sigma, t.constant(m)).item();
    CHECK(adv.nll(t.constant(z), t.constant(m)).item() == doctest::Approx(direct).epsilon(1e-14));
    CHECK(adv.nll(t.constant(z.reshaped(Shape{4})), t.constant(m)).item() == doctest::Approx(direct).epsilon(1e-14));  // (N,) input
    // A copy is deep and equal.
    nn::MdnAdversary<double> copy(adv);
    CHECK(copy.nll(t.constant(z), t.constant(m)).item() == doctest::Approx(direct).epsilon(1e-14));
    copy.parameters()[0]->value[0] += 1.0;
    CHECK(adv.nll(t.constant(z), t.constant(m)).item() == doctest::Approx(direct).epsilon(1e-14));
    auto cl = adv.clone();
    CHECK(cl->num_parameters() == adv.num_parameters());
    CHECK(adv.summary(Shape{4, 1}).find("MdnAdversary") != std::string::npos);
    // Gradient w.r.t. the adversary weights through functional_call, and w.r.t. its input.
    std::vector<Td> ws;
    for (auto* p : adv.parameters()) ws.push_back(p->value);
    const GradcheckFn f = [&](Tape<double>& tt, const Vs& p) {
        loss::MdnOptions<double> o;
        o.truncate = true;
        const V x = tt.view(z);
        const V out = nn::functional_call<double>(adv, x, p);
        return loss::mdn_nll(slice(out, 1, 0, 5), slice(out, 1, 5, 5), slice(out, 1, 10, 5), tt.view(m), nullptr, o);
    };
    const auto r1 = gradcheck(f, ws);
    INFO(r1.message());
    CHECK(r1.passed);
    const GradcheckFn fz = [&](Tape<double>& tt, const Vs& x) { return adv.nll(x[0], tt.view(m)); };
    CHECK(gradcheck(fz, {z}).passed);
    CHECK(gradgradcheck(fz, {z}).passed);
    CHECK_THROWS_AS(nn::MdnAdversary<double>(1, {4}, 0, rng), value_error);
}

TEST_CASE("pivot trainer: adversary restricted by weights, steps touch the right parameters, errors") {
    Rng rng(9);
    nn::Sequential<double> clf;
    clf.add<nn::Dense<double>>(2, 4, rng, Activation::tanh).add<nn::Dense<double>>(4, 1, rng);
    nn::MdnAdversary<double> adv(1, {4}, 2, rng);
    optim::Adam<double> oc(clf.parameters(), 1e-2), oa(adv.parameters(), 1e-2);
    nn::PivotOptions<double> opt;
    opt.batch_size = 16;
    nn::PivotTrainer<double> tr(clf, adv, oc, oa, opt);
    CHECK_THROWS_AS(tr.adversary_step(), value_error);  // no data yet
    Td x(Shape{32, 2}), y(Shape{32}), m(Shape{32});
    toy_events(rng, x, y, m);
    CHECK_THROWS_AS(tr.set_data(x, Td(Shape{31}), m), shape_error);
    CHECK_THROWS_AS(tr.set_data(x, Td(Shape{32}, 0.5), m), value_error);
    tr.set_data(x, y, m);
    // An adversary step changes only the adversary; a classifier step only the classifier.
    auto snapshot = [](nn::Module<double>& mod) {
        std::vector<double> v;
        for (auto* p : mod.parameters()) v.insert(v.end(), p->value.begin(), p->value.end());
        return v;
    };
    const auto c0 = snapshot(clf), a0 = snapshot(adv);
    tr.adversary_step();
    CHECK(snapshot(clf) == c0);
    CHECK(snapshot(adv) != a0);
    const auto a1 = snapshot(adv);
    tr.classifier_step();
    CHECK(snapshot(clf) != c0);
    CHECK(snapshot(adv) == a1);
    for (auto* p : adv.parameters()) CHECK(p->requires_grad);  // unfrozen again
    // The adversary loss only sees background: changing signal masses leaves it unchanged.
    Td m2 = m;
    for (std::size_t i = 0; i < 32; i += 2) m2[i] = 0.99;
    CHECK(tr.adversary_loss(x, y, m2) == doctest::Approx(tr.adversary_loss(x, y, m)).epsilon(1e-14));
    Td m3 = m;
    m3[1] = 0.99;
    CHECK(tr.adversary_loss(x, y, m3) != doctest::Approx(tr.adversary_loss(x, y, m)).epsilon(1e-14));
    CHECK_THROWS_AS(nn::PivotTrainer<double>(clf, adv, oc, oa, [] {
                        nn::PivotOptions<double> b;
                        b.batch_size = 0;
                        return b;
                    }()),
                    value_error);
}

TEST_CASE("pivot helper on the toy of arXiv 1611.01046: lambda = 50 makes f(x) independent of z") {
    // Distance measure: the largest two-sample Kolmogorov-Smirnov distance between the classifier
    // output distributions of signal events generated at z = -1, 0 and +1 (5000 events each).
    const std::size_t steps = quick() ? 200 : 500;
    const PivotResult plain = run_pivot(0.f, steps);
    const PivotResult pivot = run_pivot(50.f, steps);
    MESSAGE("KS distance of f(x) at z = -1, 0, +1 (max over pairs): lambda = 0: " << plain.ks_max << ", lambda = 50: " << pivot.ks_max
                                                                                    << "; JSD (bits, 20 bins) z = -1 vs +1: " << plain.jsd
                                                                                    << " vs " << pivot.jsd
                                                                                    << "; <f>_sig - <f>_bkg: " << plain.auc_proxy << " vs "
                                                                                    << pivot.auc_proxy << "; adversary NLL on z: "
                                                                                    << plain.adversary_nll << " vs " << pivot.adversary_nll
                                                                                    << " (ln sqrt(2 pi e) = 1.419 when f tells nothing about z)");
    CHECK(plain.ks_max > 0.3);
    CHECK(pivot.ks_max < (quick() ? 0.12 : 0.1));
    CHECK(pivot.ks_max < plain.ks_max / 3);
    CHECK(pivot.jsd < plain.jsd / 10);  // second measure; JSD([1,0],[0,1]) = 1 and JSD([1,1],[1,3]) = 0.048795:
    CHECK(metrics::jensen_shannon({1.0, 0.0}, {0.0, 1.0}) == doctest::Approx(1.0));
    CHECK(metrics::jensen_shannon({1.0, 1.0}, {1.0, 3.0}) == doctest::Approx(0.048795).epsilon(1e-5));
    // The pivotal classifier still separates signal from background, if less well.
    CHECK(pivot.auc_proxy > 0.1);
    CHECK(pivot.adversary_nll > plain.adversary_nll);
}

namespace {
/// Generated events for the mass-decorrelation protocol: background m ~ U(105, 160) GeV with a
/// feature x1 that rises with m, signal at m ~ N(125, 2) GeV with x1 ~ N(1, 0.7); x0 separates
/// the classes independently of m. A plain classifier uses x1 and so sculpts the background mass.
struct MassToy {
    Tf x, y, m01;
    std::vector<double> myy, label;
};
MassToy make_mass_toy(std::size_t n, Rng& rng) {
    MassToy d{Tf(Shape{n, 2}), Tf(Shape{n}), Tf(Shape{n}), {}, {}};
    for (std::size_t i = 0; i < n; ++i) {
        const bool sig = i % 2 == 0;
        const double m = sig ? 125.0 + 2.0 * rng.normal() : 105.0 + 55.0 * rng.uniform();
        d.x(i, 0) = static_cast<float>((sig ? 1.0 : 0.0) + rng.normal());
        d.x(i, 1) = static_cast<float>(sig ? 1.0 + 0.7 * rng.normal() : 3.0 * (m - 132.5) / 55.0 + 0.5 * rng.normal());
        d.y[i] = sig ? 1.f : 0.f;
        d.m01[i] = static_cast<float>((m - 105.0) / 55.0);
        d.myy.push_back(m);
        d.label.push_back(sig ? 1.0 : 0.0);
    }
    return d;
}

struct MassPivotResult {
    double inverse_jsd, auc;
    nn::PivotGameCheck<float> game;
    bool converged;
};

/// The protocol of arXiv 1611.01046 Algorithm 1 with the adversary's own background batches:
/// classifier pretraining, the adversary to convergence on it frozen, then K = 5 adversary steps
/// on fresh batches of 512 background events per classifier step.
MassPivotResult run_mass_pivot(float lambda, float adversary_lr, std::size_t steps) {
    Rng rng(2024);
    const MassToy train = make_mass_toy(16000, rng), test = make_mass_toy(20000, rng);
    nn::Sequential<float> clf;
    clf.add<nn::Dense<float>>(2, 16, rng, Activation::relu).add<nn::Dense<float>>(16, 16, rng, Activation::relu).add<nn::Dense<float>>(16, 1, rng);
    nn::MdnAdversary<float> adv(1, {32, 32}, 5, rng);
    optim::Adam<float> oc(clf.parameters(), 1e-3f), oa(adv.parameters(), adversary_lr);
    nn::PivotOptions<float> opt;
    opt.lambda = lambda;
    opt.adversary_steps = 5;
    opt.batch_size = 256;
    opt.adversary_batch_size = 512;
    opt.pretrain_classifier_steps = steps;
    opt.pretrain_adversary_steps = 200;
    opt.pretrain_adversary_max_steps = 2000;
    opt.convergence_window = 100;
    opt.steps = steps;
    opt.mdn.truncate = true;
    opt.seed = 7;
    nn::PivotTrainer<float> tr(clf, adv, oc, oa, opt);
    tr.set_data(train.x, train.y, train.m01);
    const auto hist = tr.run();
    MassPivotResult r{};
    r.converged = hist.adversary_converged;
    const Tf p = tr.predict(test.x);
    const std::vector<double> score(p.begin(), p.end());
    r.inverse_jsd = 1.0 / metrics::mass_sculpting_jsd(score, test.myy, test.label, {}, 0.5, 105.0, 160.0, 5.0).jsd;
    r.auc = metrics::roc_auc(score, test.label);
    r.game = tr.check_game(1000, 3e-3f);
    return r;
}
} // namespace

TEST_CASE("pivot protocol on generated mass events: lambda = 10 decorrelates, a starved adversary is a lost game") {
    // 300 classifier steps in both modes: at this classifier learning rate (1e-3, the pretraining
    // one) a longer game oscillates (600 steps: 1/JSD 32 instead of 97 at lambda = 10).
    const std::size_t steps = 300;
    const MassPivotResult plain = run_mass_pivot(0.f, 3e-3f, steps);
    const MassPivotResult pivot = run_mass_pivot(10.f, 3e-3f, steps);
    const MassPivotResult starved = run_mass_pivot(10.f, 1e-7f, steps);
    MESSAGE("1/JSD lambda = 0: " << plain.inverse_jsd << " (AUC " << plain.auc << "), lambda = 10: " << pivot.inverse_jsd << " (AUC "
                                 << pivot.auc << "), starved adversary: " << starved.inverse_jsd << "; game gap (nats) "
                                 << plain.game.gap << ", " << pivot.game.gap << ", " << starved.game.gap << "; information "
                                 << plain.game.information << ", " << pivot.game.information << ", " << starved.game.information);
    CHECK(plain.converged);
    CHECK(pivot.inverse_jsd > 5 * plain.inverse_jsd);
    CHECK(pivot.auc > 0.65);
    CHECK(plain.game.information > pivot.game.information);
    CHECK_FALSE(plain.game.lost);
    CHECK_FALSE(pivot.game.lost);
    CHECK(starved.game.lost);
    CHECK(starved.game.gap > 10 * nn::PivotOptions<float>{}.lost_game_tolerance);
}

TEST_CASE("pivot trainer: adversary batches of adversary events only, option errors") {
    Rng rng(5);
    nn::Sequential<double> clf;
    clf.add<nn::Dense<double>>(2, 4, rng, Activation::tanh).add<nn::Dense<double>>(4, 1, rng);
    nn::MdnAdversary<double> adv(1, {4}, 2, rng);
    optim::Adam<double> oc(clf.parameters(), 1e-2), oa(adv.parameters(), 1e-2);
    nn::PivotOptions<double> opt;
    opt.batch_size = 8;
    opt.adversary_batch_size = 16;
    nn::PivotTrainer<double> tr(clf, adv, oc, oa, opt);
    Td x(Shape{40, 2}), y(Shape{40}, 1.0), m(Shape{40});
    for (std::size_t i = 0; i < 40; ++i) {
        x(i, 0) = rng.normal();
        x(i, 1) = rng.normal();
        m[i] = rng.uniform();
    }
    CHECK_THROWS_AS(tr.set_data(x, y, m), value_error);  // all signal: no background for the adversary
    CHECK_THROWS_AS(tr.check_game(10), value_error);     // no data
    for (std::size_t i = 0; i < 40; i += 4) y[i] = 0.0;  // 10 background events
    tr.set_data(x, y, m);
    // An adversary step on the background alone: its loss is the loss on a batch of all 10.
    const double before = tr.adversary_loss(x, y, m);
    const double step_loss = tr.adversary_step();
    CHECK(step_loss == doctest::Approx(before).epsilon(1e-12));
    CHECK_THROWS_AS(tr.check_game(0), value_error);
    const auto g = tr.check_game(50, 1e-2);
    CHECK(g.gap == doctest::Approx(g.adversary_loss - g.refit_loss).epsilon(1e-12));
    CHECK(g.information == doctest::Approx(g.marginal_loss - g.refit_loss).epsilon(1e-12));
    CHECK(std::isfinite(g.refit_loss));
    CHECK_THROWS_AS(nn::PivotTrainer<double>(clf, adv, oc, oa, [] {
                        nn::PivotOptions<double> b;
                        b.pretrain_adversary_max_steps = 10;
                        b.convergence_window = 0;
                        return b;
                    }()),
                    value_error);
}

TEST_CASE("pivot trainer: the classifier's learning rate annealed by half a cosine over the game, then restored") {
    Rng rng(11);
    Td x(Shape{40, 2}), y(Shape{40}), m(Shape{40});
    toy_events(rng, x, y, m);
    const auto game = [&](bool anneal, std::vector<double>& params) {
        Rng r(3);
        nn::Sequential<double> clf;
        clf.add<nn::Dense<double>>(2, 4, r, Activation::tanh).add<nn::Dense<double>>(4, 1, r);
        nn::MdnAdversary<double> adv(1, {4}, 2, r);
        optim::Adam<double> oc(clf.parameters(), 0.1), oa(adv.parameters(), 1e-2);
        nn::PivotOptions<double> opt;
        opt.batch_size = 8;
        opt.adversary_batch_size = 8;
        opt.pretrain_classifier_steps = 0;
        opt.pretrain_adversary_steps = 2;
        opt.adversary_steps = 1;
        opt.steps = 4;
        opt.anneal_classifier_lr = anneal;
        nn::PivotTrainer<double> tr(clf, adv, oc, oa, opt);
        tr.set_data(x, y, m);
        const nn::PivotHistory<double> h = tr.run();
        CHECK(oc.learning_rate() == 0.1);  // restored after the game
        params.clear();
        for (auto* p : clf.parameters()) params.insert(params.end(), p->value.begin(), p->value.end());
        return h.classifier_lr;
    };
    std::vector<double> pa, pc;
    // 0.1 (1 + cos(pi s / 4)) / 2 for s = 0..3, hand-derived: 0.1, 0.0853553, 0.05, 0.0146447.
    const std::vector<double> lr = game(true, pa);
    REQUIRE(lr.size() == 4);
    CHECK(lr[0] == doctest::Approx(0.1).epsilon(1e-12));
    CHECK(lr[1] == doctest::Approx(0.05 * (1 + std::sqrt(0.5))).epsilon(1e-12));
    CHECK(lr[1] == doctest::Approx(0.0853553).epsilon(1e-6));
    CHECK(lr[2] == doctest::Approx(0.05).epsilon(1e-12));
    CHECK(lr[3] == doctest::Approx(0.0146447).epsilon(1e-5));
    const std::vector<double> flat = game(false, pc);
    REQUIRE(flat.size() == 4);
    for (double v : flat) CHECK(v == 0.1);
    // Same seeds, same batches: the first step agrees, the smaller later steps end elsewhere.
    REQUIRE(pa.size() == pc.size());
    double diff = 0;
    for (std::size_t i = 0; i < pa.size(); ++i) diff = std::max(diff, std::abs(pa[i] - pc[i]));
    CHECK(diff > 1e-3);
}
