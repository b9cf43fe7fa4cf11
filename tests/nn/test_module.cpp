// Module tree: names, counts, modes, summary(), cloning, walking a Sequential, functional_call.
#include <doctest/doctest.h>

#include <string>
#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/random.hpp>
#include <tapir/nn/conv.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/module.hpp>
#include <tapir/nn/recurrent.hpp>
#include <tapir/nn/sequential.hpp>

using namespace tapir;
using namespace tapir::nn;

namespace {
/// The course classifier: 8 -> 24 -> 16 -> 8 -> 1, ReLU, sigmoid output.
Sequential<float> course_classifier(Rng& rng) {
    Sequential<float> m;
    m.add<Dense<float>>(8, 24, rng).add<ReLU<float>>();
    m.add<Dense<float>>(24, 16, rng).add<ReLU<float>>();
    m.add<Dense<float>>(16, 8, rng).add<ReLU<float>>();
    m.add<Dense<float>>(8, 1, rng).add<Sigmoid<float>>();
    return m;
}

/// A user module with named children and a parameter of its own.
struct TwoTower : Module<double> {
    Dense<double> left, right;
    Parameter<double> mix{"mix", Tensor<double>(Shape{1}, 0.5)};
    explicit TwoTower(Rng& rng) : left(3, 2, rng), right(3, 2, rng, Activation::tanh) {}
    Var<double> forward(const Var<double>& x) override {
        const Var<double> m = use(x.tape(), mix);
        return add(mul(left(x), m), right(x));
    }
    std::string type_name() const override { return "TwoTower"; }
    std::unique_ptr<Module<double>> clone() const override { return std::make_unique<TwoTower>(*this); }

protected:
    void collect_parameters(std::vector<NamedParameter<double>>& out) override { out.emplace_back("mix", &mix); }
    void collect_children(std::vector<NamedModule<double>>& out) override {
        out.emplace_back("left", &left);
        out.emplace_back("right", &right);
    }
};
} // namespace

TEST_CASE("parameter counts and PyTorch-style names of the course classifier") {
    Rng rng(42);
    Sequential<float> m = course_classifier(rng);
    CHECK(m.size() == 8);
    // 8*24+24 + 24*16+16 + 16*8+8 + 8*1+1 = 216 + 400 + 136 + 9
    CHECK(m.num_parameters() == 761);
    CHECK(m.num_trainable_parameters() == 761);
    const auto named = m.named_parameters();
    REQUIRE(named.size() == 8);
    const char* expected[] = {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias", "6.weight", "6.bias"};
    for (std::size_t i = 0; i < 8; ++i) {
        CHECK(named[i].first == expected[i]);
        CHECK(named[i].second->name == expected[i]);  // Parameter::name follows the path
    }
    CHECK(named[0].second->shape() == Shape{8, 24});  // Keras layout (in, out)
    CHECK(named[1].second->shape() == Shape{24});
    CHECK(named[6].second->shape() == Shape{8, 1});
    const auto ps = m.parameters();
    REQUIRE(ps.size() == 8);
    CHECK(ps[2] == named[2].second);

    // Freezing a parameter moves it to the non-trainable count.
    ps[0]->requires_grad = false;
    CHECK(m.num_trainable_parameters() == 761 - 192);
    CHECK(m.named_parameters("model")[3].first == "model.2.bias");
}

TEST_CASE("summary() prints layers, output shapes and parameter counts") {
    Rng rng(42);
    const Sequential<float> m = course_classifier(rng);
    const std::string expected =
        "Model: Sequential, input shape (32, 8)\n"
        "Layer (type)  Output shape  Param #\n"
        "===================================\n"
        "0 (Dense)     (32, 24)          216\n"
        "1 (ReLU)      (32, 24)            0\n"
        "2 (Dense)     (32, 16)          400\n"
        "3 (ReLU)      (32, 16)            0\n"
        "4 (Dense)     (32, 8)           136\n"
        "5 (ReLU)      (32, 8)             0\n"
        "6 (Dense)     (32, 1)             9\n"
        "7 (Sigmoid)   (32, 1)             0\n"
        "===================================\n"
        "Total params: 761\n"
        "Trainable params: 761\n"
        "Non-trainable params: 0\n";
    CHECK(m.summary(Shape{32, 8}) == expected);

    Sequential<double> mixed;
    mixed.add<Dense<double>>(4, 3, rng, Activation::leaky_relu).add<BatchNorm<double>>(3).add<Dropout<double>>(0.25);
    mixed.add<Dense<double>>(3, 2, rng, Activation::elu).add<Softmax<double>>();
    mixed.parameters()[0]->requires_grad = false;
    const std::string expected_mixed =
        "Model: Sequential, input shape (10, 4)\n"
        "Layer (type)                 Output shape  Param #\n"
        "==================================================\n"
        "0 (Dense(leaky_relu, 0.01))  (10, 3)            15\n"
        "1 (BatchNorm)                (10, 3)             6\n"
        "2 (Dropout(0.25))            (10, 3)             0\n"
        "3 (Dense(elu, 1))            (10, 2)             8\n"
        "4 (Softmax)                  (10, 2)             0\n"
        "==================================================\n"
        "Total params: 29\n"
        "Trainable params: 17\n"
        "Non-trainable params: 12\n"
        "Buffers (running statistics, not parameters): 6\n";
    CHECK(mixed.summary(Shape{10, 4}) == expected_mixed);

    // A shape mismatch names the layer and both shapes.
    CHECK_THROWS_WITH_AS(m.summary(Shape{32, 7}),
                         "Sequential layer 0 (Dense): Dense(8 -> 24): expected input of shape (batch, 8), got (32, 7)", shape_error);
}

TEST_CASE("train and eval modes reach every module; modes can be saved and restored") {
    Rng rng(1);
    Sequential<float> inner;
    inner.add<Dense<float>>(4, 4, rng).add<Dropout<float>>(0.5);
    Sequential<float> m;
    m.add<BatchNorm<float>>(4).add(std::move(inner));
    const auto mods = m.modules();
    REQUIRE(mods.size() == 5);  // m, BatchNorm, inner, Dense, Dropout
    for (auto* x : mods) CHECK(x->is_training());
    m.eval();
    for (auto* x : mods) CHECK_FALSE(x->is_training());
    m.train();
    mods[1]->set_training_flag(false);  // freeze the BatchNorm statistics only
    const std::vector<bool> saved = m.training_modes();
    CHECK(saved == std::vector<bool>{true, false, true, true, true});
    m.eval();
    m.set_training_modes(saved);
    CHECK(m.training_modes() == saved);
    CHECK_THROWS_AS(m.set_training_modes({true}), value_error);
}

TEST_CASE("nested containers and user modules name parameters and buffers by path") {
    Rng rng(3);
    Sequential<double> inner;
    inner.add<Dense<double>>(2, 3, rng).add<BatchNorm<double>>(3);
    Sequential<double> m;
    m.add<Dense<double>>(2, 2, rng).add(std::move(inner));
    const auto names = m.named_parameters();
    REQUIRE(names.size() == 6);
    CHECK(names[2].first == "1.0.weight");
    CHECK(names[5].first == "1.1.bias");
    CHECK(names[5].second->name == "1.1.bias");
    const auto bufs = m.named_buffers();
    REQUIRE(bufs.size() == 2);
    CHECK(bufs[0].first == "1.1.running_mean");
    CHECK(bufs[1].first == "1.1.running_var");
    CHECK(m.num_buffer_elements() == 6);

    TwoTower tt(rng);
    const auto tn = tt.named_parameters();
    REQUIRE(tn.size() == 5);
    CHECK(tn[0].first == "mix");
    CHECK(tn[1].first == "left.weight");
    CHECK(tn[4].first == "right.bias");
    CHECK(tt.num_parameters() == 1 + 2 * (3 * 2 + 2));
    // The default output_shape() runs the module on a scratch tape.
    CHECK(tt.output_shape(Shape{5, 3}) == Shape{5, 2});
    CHECK_THROWS_AS(tt.output_shape(Shape{5, 4}), shape_error);
    CHECK(tt.summary(Shape{5, 3}) ==
          "Model: TwoTower, input shape (5, 3)\n"
          "Layer (type)      Output shape  Param #\n"
          "=======================================\n"
          "model (TwoTower)  (5, 2)             17\n"
          "=======================================\n"
          "Total params: 17\n"
          "Trainable params: 17\n"
          "Non-trainable params: 0\n");
}

TEST_CASE("copies are deep: a cloned Sequential computes the same and trains independently") {
    Rng rng(5);
    Sequential<double> a;
    a.add<Dense<double>>(3, 4, rng, Activation::tanh).add<Dense<double>>(4, 1, rng);
    Sequential<double> b = a;
    CHECK(b.named_parameters()[0].second != a.named_parameters()[0].second);
    Tensor<double> x(Shape{2, 3}, {0.1, -0.2, 0.3, 1.0, 0.5, -1.0});
    Tape<double> t;
    const Var<double> ya = a(t.view(x)), yb = b(t.view(x));
    CHECK(ya[0] == yb[0]);
    CHECK(ya[1] == yb[1]);
    b.parameters()[3]->value[0] += 1.0;  // output bias
    t.clear();
    const Var<double> ya2 = a(t.view(x)), yb2 = b(t.view(x));
    CHECK(yb2[0] == doctest::Approx(ya2[0] + 1.0));
    CHECK(b.named_parameters()[0].first == "0.weight");
    auto c = a.clone();
    CHECK(c->num_parameters() == a.num_parameters());
    CHECK(c->kind() == LayerKind::sequential);
}

TEST_CASE("walking a Sequential for export: kinds, activations and weights") {
    Rng rng(9);
    Sequential<float> m;
    m.add<Dense<float>>(8, 24, rng).add<LeakyReLU<float>>(0.2f).add<BatchNorm<float>>(24).add<Dropout<float>>(0.1);
    m.add<Dense<float>>(24, 1, rng, Activation::sigmoid);
    const auto layers = static_cast<const Sequential<float>&>(m).layers();
    REQUIRE(layers.size() == 5);
    const LayerKind kinds[] = {LayerKind::dense, LayerKind::activation, LayerKind::batch_norm, LayerKind::dropout, LayerKind::dense};
    for (std::size_t i = 0; i < 5; ++i) CHECK(layers[i]->kind() == kinds[i]);
    CHECK(std::string(layer_kind_name(layers[2]->kind())) == "batch_norm");
    const auto& d0 = static_cast<const Dense<float>&>(*layers[0]);
    CHECK(d0.in_features() == 8);
    CHECK(d0.out_features() == 24);
    CHECK(d0.activation() == Activation::none);
    CHECK(d0.has_bias());
    const auto* act = dynamic_cast<const ActivationLayer<float>*>(layers[1]);
    REQUIRE(act != nullptr);
    CHECK(act->activation() == Activation::leaky_relu);
    CHECK(act->alpha() == 0.2f);
    CHECK(dynamic_cast<const LeakyReLU<float>*>(layers[1]) != nullptr);
    CHECK(static_cast<const BatchNorm<float>&>(*layers[2]).running_var.size() == 24);
    CHECK(static_cast<const Dense<float>&>(*layers[4]).activation() == Activation::sigmoid);
    CHECK(m.at(4).describe() == "Dense(sigmoid)");
    CHECK_THROWS_AS(m.at(5), value_error);

    // add() of a layer object and emplace() returning the layer.
    Sequential<float> s2;
    s2.add(Dense<float>(2, 3, rng));
    Dense<float>& d = s2.emplace<Dense<float>>(3, 1, rng);
    CHECK(&d == &s2[1]);
    CHECK(s2.num_parameters() == 2 * 3 + 3 + 3 + 1);
}

TEST_CASE("functional_call routes gradients into the given values") {
    Rng rng(11);
    Sequential<double> m;
    m.add<Dense<double>>(3, 4, rng).add<Tanh<double>>().add<Dense<double>>(4, 2, rng);
    Tensor<double> x(Shape{5, 3});
    for (auto& v : x) v = rng.uniform(-1, 1);

    // Gradients from backward() into Parameter::grad...
    Tape<double> t;
    m.zero_grad();
    backward(sum(square(m(t.view(x)))));
    std::vector<Tensor<double>> from_backward;
    for (auto* p : m.parameters()) from_backward.push_back(p->grad);

    // ... equal grad() with respect to bound variables, which leave Parameter::grad alone.
    t.clear();
    std::vector<Var<double>> vars;
    for (auto* p : m.parameters()) vars.push_back(t.variable(p->value));
    const auto gs = grad(sum(square(functional_call(m, t.view(x), vars))), vars);
    for (std::size_t k = 0; k < vars.size(); ++k)
        for (std::size_t j = 0; j < gs[k].size(); ++j) CHECK(gs[k][j] == doctest::Approx(from_backward[k][j]).epsilon(1e-12));

    // Bound values really replace the parameters.
    t.clear();
    std::vector<Var<double>> zeros;
    for (auto* p : m.parameters()) zeros.push_back(t.full(p->shape(), 0.0));
    const Var<double> y0 = functional_call(m, t.view(x), zeros);
    for (std::size_t i = 0; i < y0.size(); ++i) CHECK(y0[i] == 0.0);
    // ... only during the call.
    const Var<double> y1 = m(t.view(x));
    CHECK(y1[0] != 0.0);

    CHECK_THROWS_AS(functional_call(m, t.view(x), std::vector<Var<double>>{zeros[0]}), value_error);
    std::vector<Var<double>> wrong = zeros;
    wrong[1] = t.full(Shape{3}, 0.0);
    CHECK_THROWS_AS(functional_call(m, t.view(x), wrong), shape_error);
}

namespace {
/// A user layer that gets clone() from Cloneable.
struct Scale : Cloneable<Scale, Module<double>> {
    Parameter<double> s{"s", Tensor<double>(Shape{1}, 2.0)};
    Var<double> forward(const Var<double>& x) override { return mul(x, use(x.tape(), s)); }
    std::string type_name() const override { return "Scale"; }

protected:
    void collect_parameters(std::vector<NamedParameter<double>>& out) override { out.emplace_back("s", &s); }
};

template <class L, class T>
const L* clone_as(const Module<T>& m, std::unique_ptr<Module<T>>& keep) {
    keep = m.clone();
    return dynamic_cast<const L*>(keep.get());
}
} // namespace

TEST_CASE("Cloneable: a clone has the layer's dynamic type, a deep copy of its parameters and its mode") {
    Scale a;
    a.eval();
    std::unique_ptr<Module<double>> keep;
    const Scale* c = clone_as<Scale>(a, keep);
    REQUIRE(c != nullptr);
    CHECK(c->s.value[0] == 2.0);
    CHECK_FALSE(c->is_training());
    a.s.value[0] = 5.0;  // deep: the clone keeps its own value
    CHECK(c->s.value[0] == 2.0);

    std::unique_ptr<Module<float>> k;
    CHECK(clone_as<ReLU<float>>(ReLU<float>(), k) != nullptr);
    CHECK(k->type_name() == "ReLU");
    CHECK(clone_as<Identity<float>>(Identity<float>(), k) != nullptr);
    CHECK(k->type_name() == "Identity");
    const auto* lr = clone_as<LeakyReLU<float>>(LeakyReLU<float>(0.25f), k);
    REQUIRE(lr != nullptr);
    CHECK(lr->describe() == "LeakyReLU(0.25)");

    Rng rng(3);
    const LSTM<float> lstm(3, 4, rng);
    const auto* lc = clone_as<LSTM<float>>(lstm, k);
    REQUIRE(lc != nullptr);
    CHECK(lc->describe() == "LSTM(3 -> 4)");
    CHECK(lc->weight_hh.value.shape() == Shape{16, 4});
    CHECK(lc->weight_hh.value[5] == lstm.weight_hh.value[5]);
    CHECK(GRU<float>(3, 4, rng).type_name() == "GRU");
    CHECK(SimpleRNN<float>(3, 4, rng).type_name() == "SimpleRNN");

    const Conv2d<float> conv(2, 3, Size2(3, 3), rng);
    const auto* cc = clone_as<Conv2d<float>>(conv, k);
    REQUIRE(cc != nullptr);
    CHECK(cc->type_name() == "Conv2d");
    CHECK(cc->describe() == conv.describe());
    CHECK(ConvTranspose2d<float>(2, 3, Size2(3, 3), rng).type_name() == "ConvTranspose2d");
    CHECK(Conv1d<float>(2, 3, 3, rng).type_name() == "Conv1d");
}
