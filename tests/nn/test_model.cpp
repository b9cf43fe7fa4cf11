// The model API beyond Sequential (nn/model.hpp): several inputs, a residual connection and a
// shared layer, checked by hand, by gradcheck and gradgradcheck, and by training; freezing
// (nn::Module::freeze) with fit() and summary(); whole-module files and pretrained parts
// (nn/model_file.hpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/nn/fit.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/model.hpp>
#include <tapir/nn/model_file.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/nn/sets.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/random.hpp>

#include "support/alloc_counter.hpp"
#include "support/gradcheck.hpp"

using namespace tapir;
using namespace tapir::nn;
using namespace tapir_test;

namespace {
/// Two inputs a, b (batch, 2); a shared tanh layer enc; out = head(concat(enc(a) + a, enc(b))).
struct TwoInputModel {
    Model<double> g;
    Model<double>::Layer enc, head;
    explicit TwoInputModel(std::uint64_t seed) {
        Rng rng(seed);
        const auto a = g.input("a", Shape{2});
        const auto b = g.input("b", Shape{2});
        enc = g.layer("enc", Dense<double>(2, 2, rng, Activation::tanh));
        head = g.layer("head", Dense<double>(4, 1, rng));
        const auto ha = g.call(enc, a);
        const auto hb = g.call(enc, b);  // the same weights again
        const auto res = g.add(ha, a, "residual");
        g.output(g.call(head, g.concat({res, hb}, "joined")));
    }
    Dense<double>& dense(Model<double>::Layer l) { return static_cast<Dense<double>&>(g[l]); }
};

bool bit_equal(const Tensor<double>& a, const Tensor<double>& b) {
    return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}
} // namespace

TEST_CASE("a graph of two inputs with a residual and a shared layer: values by hand") {
    TwoInputModel m(3);
    const Dense<double>& enc = m.dense(m.enc);
    const Dense<double>& head = m.dense(m.head);
    const Td a = rnd(Shape{3, 2}, 1), b = rnd(Shape{3, 2}, 2);
    Tape<double> t;
    const V y = m.g(t.view(a), t.view(b));
    REQUIRE(y.shape() == Shape{3, 1});
    for (std::size_t i = 0; i < 3; ++i) {
        double z[4];
        for (std::size_t j = 0; j < 2; ++j) {
            double ea = enc.bias.value[j], eb = enc.bias.value[j];
            for (std::size_t k = 0; k < 2; ++k) {
                ea += a[i * 2 + k] * enc.weight.value[k * 2 + j];
                eb += b[i * 2 + k] * enc.weight.value[k * 2 + j];
            }
            z[j] = std::tanh(ea) + a[i * 2 + j];
            z[2 + j] = std::tanh(eb);
        }
        double out = head.bias.value[0];
        for (std::size_t k = 0; k < 4; ++k) out += z[k] * head.weight.value[k];
        CHECK(y[i] == doctest::Approx(out).epsilon(1e-14));
    }
    // Parameters are named by layer and listed once although enc is called twice.
    const auto named = m.g.named_parameters();
    REQUIRE(named.size() == 4);
    CHECK(named[0].first == "enc.weight");
    CHECK(named[3].first == "head.bias");
    CHECK(m.g.num_parameters() == 6 + 5);
    CHECK(m.g.num_inputs() == 2);
    CHECK(m.g.input_names() == std::vector<std::string>{"a", "b"});

    // A deep copy computes the same and owns its layers.
    Model<double> copy = m.g;
    const V y2 = copy(t.view(a), t.view(b));
    for (std::size_t i = 0; i < 3; ++i) CHECK(y2[i] == y[i]);
    copy.named_parameters()[0].second->value[0] += 1.0;
    CHECK(m.g.named_parameters()[0].second->value[0] != copy.named_parameters()[0].second->value[0]);
}

TEST_CASE("gradcheck and gradgradcheck through the graph, for inputs and parameters") {
    TwoInputModel m(4);
    const Td a = rnd(Shape{3, 2}, 5), b = rnd(Shape{3, 2}, 6);
    check_both([&](Tape<double>&, const Vs& x) { return m.g(x[0], x[1]); }, {a, b});
    std::vector<Td> xs{a, b};
    for (auto* p : m.g.parameters()) xs.push_back(p->value);
    check_both(
        [&](Tape<double>&, const Vs& x) {
            return functional_call(m.g, Vs{x[0], x[1]}, Vs(x.begin() + 2, x.end()));
        },
        xs);
}

TEST_CASE("training a two-input graph reduces the loss") {
    // Target: the sign of a0 * b1 (needs both inputs).
    Rng rng(7);
    const std::size_t n = 256;
    Tensor<double> a(Shape{n, 2}), b(Shape{n, 2}), y(Shape{n, 1});
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t k = 0; k < 2; ++k) {
            a[i * 2 + k] = rng.uniform(-1.0, 1.0);
            b[i * 2 + k] = rng.uniform(-1.0, 1.0);
        }
        y[i] = a[i * 2] + b[i * 2 + 1] > 0 ? 1.0 : 0.0;
    }
    TwoInputModel m(8);
    optim::Adam<double> adam(m.g.parameters(), 0.05);
    Tape<double> t;
    auto loss_now = [&] {
        t.clear();
        return loss::binary_cross_entropy_with_logits(m.g(t.view(a), t.view(b)), t.view(y)).item();
    };
    const double before = loss_now();
    for (int step = 0; step < 150; ++step) {
        t.clear();
        const V l = loss::binary_cross_entropy_with_logits(m.g(t.view(a), t.view(b)), t.view(y));
        adam.zero_grad();
        backward(l);
        adam.step();
    }
    const double after = loss_now();
    INFO("loss before " << before << ", after " << after);
    CHECK(after < 0.5 * before);
}

TEST_CASE("fit, predict and evaluate take one tensor per input; steady-state steps allocate nothing") {
    Rng rng(12);
    const std::size_t n = 300;
    Tensor<double> a(Shape{n, 2}), b(Shape{n, 2}), y(Shape{n, 1});
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t k = 0; k < 4; ++k) (k < 2 ? a[i * 2 + k] : b[i * 2 + k - 2]) = rng.uniform(-1.0, 1.0);
        y[i] = a[i * 2] + b[i * 2 + 1] > 0 ? 1.0 : 0.0;
    }
    TwoInputModel m(13);
    optim::Adam<double> adam(m.g.parameters(), 0.02);
    FitOptions<double> o;
    o.epochs = 8;
    o.batch_size = 32;
    o.validation_split = 0.2;
    o.verbose = Verbosity::quiet;
    const History h = fit(m.g, {&a, &b}, y, adam, o);
    CHECK(h["loss"].back() < 0.6 * h["loss"].front());
    CHECK(h["val_loss"].back() < h["val_loss"].front());

    // predict() runs the graph on every row, as a direct call does.
    const Tensor<double> p = predict(m.g, {&a, &b}, 64);
    REQUIRE(p.shape() == Shape{n, 1});
    Tape<double> t;
    const V direct = m.g(t.view(a), t.view(b));
    for (std::size_t i = 0; i < n; ++i) CHECK(p[i] == direct[i]);
    // evaluate() on all rows: the loss of the direct outputs.
    const Evaluation e = evaluate(m.g, {&a, &b}, y, {}, nullptr, 50);
    t.clear();
    const double whole = loss::binary_cross_entropy_with_logits(m.g(t.view(a), t.view(b)), t.view(y)).item();
    CHECK(e.loss == doctest::Approx(whole).epsilon(1e-12));

    // Errors name the inputs and both shapes.
    Tensor<double> short_b(Shape{n - 1, 2});
    CHECK_THROWS_WITH_AS(fit(m.g, {&a, &short_b}, y, adam, o), "fit: input #0 vs input #1: every input needs one row per event: (300, 2) vs (299, 2)",
                         shape_error);
    FitOptions<double> bad = o;
    bad.validation_x = &a;
    CHECK_THROWS_WITH_AS(fit(m.g, {&a, &b}, y, adam, bad), "fit: a model of several inputs takes FitOptions::validation_inputs, not validation_x",
                         value_error);
    FitOptions<double> val = o;
    val.validation_split = 0.0;
    Tensor<double> wide(Shape{10, 3});
    val.validation_inputs = {&a, &wide};
    val.validation_y = &y;
    CHECK_THROWS_WITH_AS(fit(m.g, {&a, &b}, y, adam, val),
                         "fit (validation set): input #0 vs input #1: every input needs one row per event: (300, 2) vs (10, 3)", shape_error);

    Trainer<double> tr(m.g, adam);
    std::vector<std::size_t> idx(n);
    std::iota(idx.begin(), idx.end(), std::size_t(0));
    const std::vector<const Tensor<double>*> xs{&a, &b};
    tr.step(xs, y, nullptr, idx.data(), 64);
    tr.step(xs, y, nullptr, idx.data() + 64, 64);
    tapir_test::AllocationScope scope;
    for (std::size_t s = 0; s < 10; ++s) tr.step(xs, y, nullptr, idx.data() + (s % 4) * 64, 64);
    CHECK(scope.count() == 0);
}

TEST_CASE("graph errors name the node and both shapes") {
    TwoInputModel m(9);
    Tape<double> t;
    const Td a = rnd(Shape{3, 2}, 1), wide = rnd(Shape{3, 5}, 2);
    CHECK_THROWS_WITH_AS(m.g(t.view(a)), "Model: expected 2 inputs (a, b), got 1", value_error);
    CHECK_THROWS_WITH_AS(m.g(t.view(a), t.view(wide)), "Model input 'b': expected (batch, features...): (3, 2) vs (3, 5)", shape_error);

    Rng rng(1);
    Model<double> g;
    const auto x = g.input("x");
    const auto d = g.call(g.layer("d", Dense<double>(2, 3, rng)), x);
    g.output(g.add(d, x, "skip"));
    CHECK_THROWS_WITH_AS(g(t.view(a)), "Model node 'skip' (add): the shapes must be equal: (3, 3) vs (3, 2)", shape_error);
    CHECK_THROWS_WITH_AS(g.layer("d", Dense<double>(2, 3, rng)), "Model::layer: a layer named 'd' exists already", value_error);
    CHECK_THROWS_WITH_AS(g.call(g.layer("e", Dense<double>(2, 3, rng)), {x, x}), "Model::call: layer 'e' (Dense) takes 1 input, got 2",
                         value_error);
    CHECK_THROWS_WITH_AS(g.layer("nope"), "Model: no layer 'nope' (layers: d, e)", value_error);
    Model<double> empty;
    empty.input("x");
    CHECK_THROWS_WITH_AS(empty(t.view(a)), "Model: no output set (call output(value) when building)", value_error);
}

TEST_CASE("a layer of two inputs (features and a mask) plugs into a graph through forward_many") {
    /// A masked sum over particles: (B, N, F) and (B, N) -> (B, F).
    struct MaskedSum : Module<double> {
        Var<double> forward(const Var<double>& x) override { return sum(x, 1); }
        Var<double> forward_many(const std::vector<Var<double>>& in) override {
            if (in.size() != 2) throw value_error("MaskedSum: takes 2 inputs, got " + std::to_string(in.size()));
            const Shape s = in[1].shape();
            return sum(mul(in[0], reshape(in[1], Shape{s[0], s[1], 1})), 1);
        }
        std::size_t num_inputs() const override { return 2; }
        std::string type_name() const override { return "MaskedSum"; }
        std::unique_ptr<Module<double>> clone() const override { return std::make_unique<MaskedSum>(*this); }
    };
    Rng rng(2);
    Model<double> g;
    const auto parts = g.input("particles", Shape{3, 2});
    const auto mask = g.input("mask", Shape{3});
    const auto pooled = g.call(g.layer("pool", MaskedSum{}), {parts, mask});
    g.output(g.call(g.layer("out", Dense<double>(2, 1, rng)), pooled));
    const Td x = rnd(Shape{2, 3, 2}, 3);
    Td mk(Shape{2, 3}, 1.0);
    mk[2] = 0.0;  // event 0, particle 2 is padding
    Tape<double> t;
    const V pooled_direct = MaskedSum{}(t.view(x), t.view(mk));
    CHECK(pooled_direct[0] == x[0] + x[2]);
    CHECK(pooled_direct[2] == x[6] + x[8] + x[10]);
    CHECK(g(t.view(x), t.view(mk)).shape() == Shape{2, 1});
    CHECK_THROWS_WITH_AS(g.call(g.layer("p2", MaskedSum{}), parts), "Model::call: layer 'p2' (MaskedSum) takes 2 inputs, got 1", value_error);

    const std::string s = g.summary({Shape{2, 3, 2}, Shape{2, 3}});
    const std::string expected =
        "Model: Model, input shapes (2, 3, 2), (2, 3)\n"
        "Layer (type)       Output shape  Param #  Connected to\n"
        "=========================================================\n"
        "particles (Input)  (2, 3, 2)           0\n"
        "mask (Input)       (2, 3)              0\n"
        "pool (MaskedSum)   (2, 2)              0  particles, mask\n"
        "out (Dense)        (2, 1)              3  pool\n"
        "=========================================================\n"
        "Total params: 3\n"
        "Trainable params: 3\n"
        "Non-trainable params: 0\n";
    CHECK(s == expected);
}

TEST_CASE("a layer with its own forward(x, mask) plugs in as it is: a Particle Flow Network beside jet-level inputs") {
    Rng rng(31);
    Model<double> g;
    const auto parts = g.input("particles", Shape{5, 4});
    const auto mask = g.input("mask", Shape{5});
    const auto jets = g.input("jets", Shape{2});
    const auto pfn = g.layer("pfn", ParticleFlowNetwork<double>(4, {6, 5}, {4}, rng));
    const auto head = g.layer("head", Dense<double>(6, 1, rng));
    g.output(g.call(head, g.concat({g.call(pfn, {parts, mask}), jets})));

    const Td x = rnd(Shape{3, 5, 4}, 32), j = rnd(Shape{3, 2}, 33);
    Td mk(Shape{3, 5}, 1.0);
    mk[3] = mk[4] = mk[9] = 0.0;  // padding
    Tape<double> t;
    const V y = g(t.view(x), t.view(mk), t.view(j));
    auto& net = static_cast<ParticleFlowNetwork<double>&>(g[pfn]);
    const V direct = g[head](concat(net.forward(t.view(x), t.view(mk)), t.view(j), 1));
    REQUIRE(y.shape() == Shape{3, 1});
    for (std::size_t i = 0; i < 3; ++i) CHECK(y[i] == direct[i]);
    check_both([&](Tape<double>& tt, const Vs& v) { return g(v[0], tt.view(mk), v[1]); }, {x, j});
    CHECK(g.summary({Shape{3, 5, 4}, Shape{3, 5}, Shape{3, 2}}).find("pfn (DeepSet(sum))") != std::string::npos);
    // A copy calls the copied layer's own forward.
    Model<double> copy = g;
    const V y2 = copy(t.view(x), t.view(mk), t.view(j));
    for (std::size_t i = 0; i < 3; ++i) CHECK(y2[i] == y[i]);
}

TEST_CASE("freeze: no gradient, no update by fit, Keras-style counts and a Trainable column in summary()") {
    Rng rng(11);
    Sequential<double> encoder;
    encoder.add<Dense<double>>(3, 4, rng, Activation::tanh).add<Dense<double>>(4, 4, rng, Activation::tanh);
    Model<double> g;
    const auto x = g.input("x", Shape{3});
    const auto enc = g.layer("encoder", encoder);
    const auto h = g.call(enc, x);
    g.output(g.call(g.layer("head", Dense<double>(4, 1, rng)), h));

    g.layer("encoder").freeze();
    CHECK_FALSE(g.layer("encoder").is_trainable());
    CHECK(g.layer("head").is_trainable());
    CHECK(g.num_parameters() == 16 + 20 + 5);
    CHECK(g.num_trainable_parameters() == 5);
    for (const auto& p : g.named_parameters()) CHECK(p.second->requires_grad == (p.first.compare(0, 5, "head.") == 0));

    const std::string expected =
        "Model: Model, input shape (8, 3)\n"
        "Layer (type)          Output shape  Param #  Connected to  Trainable\n"
        "====================================================================\n"
        "x (Input)             (8, 3)              0                -\n"
        "encoder (Sequential)  (8, 4)             36  x             N\n"
        "head (Dense)          (8, 1)              5  encoder       Y\n"
        "====================================================================\n"
        "Total params: 41\n"
        "Trainable params: 5\n"
        "Non-trainable params: 36\n";
    CHECK(g.summary(Shape{8, 3}) == expected);
    // A Sequential shows the column once something in it is frozen, and on request.
    Sequential<double> seq;
    seq.add<Dense<double>>(3, 2, rng).add<ReLU<double>>().add<Dense<double>>(2, 1, rng);
    CHECK(seq.summary(Shape{4, 3}).find("Param #  Trainable") == std::string::npos);
    CHECK(seq.summary(Shape{4, 3}, true).find("0 (Dense)     (4, 2)              8  Y\n") != std::string::npos);
    seq[0].freeze();
    CHECK(seq.summary(Shape{4, 3}) ==
          "Model: Sequential, input shape (4, 3)\n"
          "Layer (type)  Output shape  Param #  Trainable\n"
          "==============================================\n"
          "0 (Dense)     (4, 2)              8  N\n"
          "1 (ReLU)      (4, 2)              0  Y\n"
          "2 (Dense)     (4, 1)              3  Y\n"
          "==============================================\n"
          "Total params: 11\n"
          "Trainable params: 3\n"
          "Non-trainable params: 8\n");

    // fit() with Adam over all parameters: the frozen ones stay bit for bit.
    const std::size_t n = 64;
    Tensor<double> xs(Shape{n, 3}), ys(Shape{n, 1});
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t k = 0; k < 3; ++k) xs[i * 3 + k] = rng.uniform(-1.0, 1.0);
        ys[i] = xs[i * 3] > 0 ? 1.0 : 0.0;
    }
    std::vector<Tensor<double>> before;
    for (auto* p : g.parameters()) before.push_back(p->value);
    optim::Adam<double> adam(g.parameters(), 0.01);
    FitOptions<double> o;
    o.epochs = 3;
    o.batch_size = 16;
    o.verbose = Verbosity::quiet;
    fit(g, xs, ys, adam, o);
    const auto ps = g.parameters();
    for (std::size_t i = 0; i < 4; ++i) CHECK(bit_equal(ps[i]->value, before[i]));
    CHECK_FALSE(bit_equal(ps[4]->value, before[4]));  // head.weight trained
    // A frozen parameter gets no gradient on the tape.
    Tape<double> t;
    backward(sum(g(t.view(xs))));
    for (std::size_t i = 0; i < 4; ++i) CHECK(std::all_of(ps[i]->grad.begin(), ps[i]->grad.end(), [](double v) { return v == 0.0; }));

    g.layer("encoder").unfreeze();
    CHECK(g.num_trainable_parameters() == 41);
    CHECK(g.summary(Shape{8, 3}).find("Connected to  Trainable") == std::string::npos);
}

TEST_CASE("whole-module files keep BatchNorm statistics; pretrained parts load by name") {
    Rng rng(21);
    Sequential<double> m;
    m.add<Dense<double>>(3, 4, rng).add<BatchNorm<double>>(4).add<ReLU<double>>().add<Dense<double>>(4, 1, rng);
    // Training moves the running statistics away from (0, 1).
    const Td x = rnd(Shape{16, 3}, 22, -3.0, 5.0);
    Tape<double> t;
    for (int i = 0; i < 5; ++i) {
        t.clear();
        m(t.view(x));
    }
    const std::string file = save_model_to_string(m);
    Rng other(99);
    Sequential<double> fresh;
    fresh.add<Dense<double>>(3, 4, other).add<BatchNorm<double>>(4).add<ReLU<double>>().add<Dense<double>>(4, 1, other);
    load_model_from_string(file, fresh);
    const Tensor<double> p1 = predict(m, x), p2 = predict(fresh, x);
    CHECK(bit_equal(p1, p2));

    // The encoder of an autoencoder into a classifier's encoder, by prefix.
    // x -> encoder (Sequential: Dense 3 -> 2, tanh) -> second (Dense 2 -> out).
    auto encoder_model = [](Rng& r, const char* second, std::size_t out) {
        Model<double> g;
        const auto in = g.input("x", Shape{3});
        Sequential<double> e;
        e.add<Dense<double>>(3, 2, r, Activation::tanh);
        const auto z = g.call(g.layer("encoder", e), in);
        g.output(g.call(g.layer(second, Dense<double>(2, out, r)), z));
        return g;
    };
    Model<double> ae = encoder_model(rng, "decoder", 3);
    const std::string ae_file = save_model_to_string(ae);
    Model<double> clf = encoder_model(other, "head", 1);
    const Tensor<double> head_before = clf.layer("head").parameters()[0]->value;
    load_pretrained_from_string(ae_file, clf.layer("encoder"), "encoder.", "ae.tpr");
    CHECK(bit_equal(clf.layer("encoder").parameters()[0]->value, ae.layer("encoder").parameters()[0]->value));
    CHECK(bit_equal(clf.layer("encoder").parameters()[1]->value, ae.layer("encoder").parameters()[1]->value));
    CHECK(bit_equal(clf.layer("head").parameters()[0]->value, head_before));

    Sequential<double> wide;
    wide.add<Dense<double>>(3, 5, other, Activation::tanh);
    const Tensor<double> wide_before = wide.parameters()[0]->value;
    CHECK_THROWS_WITH_AS(load_pretrained_from_string(ae_file, wide, "encoder.", "ae.tpr"),
                         "ae.tpr: load_pretrained: parameter 'encoder.0.weight' has shape (3, 2) in the file but (3, 5) in the model ('0.weight')",
                         format_error);
    CHECK(bit_equal(wide.parameters()[0]->value, wide_before));
    CHECK_THROWS_WITH_AS(load_pretrained_from_string(ae_file, clf.layer("encoder"), "enc.", "ae.tpr"),
                         "ae.tpr: load_pretrained: the file has no parameter 'enc.0.weight' (its parameters under 'enc.': none)", format_error);
    Sequential<double> two;
    two.add<Dense<double>>(2, 3, other);
    CHECK_THROWS_WITH_AS(load_pretrained_from_string(ae_file, two, "decoder.", "ae.tpr"),
                         "ae.tpr: load_pretrained: the file has no parameter 'decoder.0.weight' (its parameters under 'decoder.': decoder.weight, decoder.bias)",
                         format_error);
}
