// Recurrent layers (SimpleRNN, LSTM, GRU) and Embedding: shapes, summary, clone, init, gradients
// through the layers, masks vs lengths, PyTorch values, and a steady-state training step without
// heap allocations.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/recurrent.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>

#include "support/alloc_counter.hpp"
#include "support/gradcheck.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir::nn;
using namespace tapir_test;

TEST_CASE("recurrent layers: shapes, names, PyTorch init range, summary, clone") {
    Rng rng(3);
    LSTM<double> lstm(7, 16, rng);
    GRU<double> gru(7, 16, rng, RecurrentOptions{true, true});
    SimpleRNN<double> rnn(7, 16, rng, RecurrentOptions{false, false});
    CHECK(lstm.output_shape(Shape{8, 20, 7}) == Shape{8, 16});
    CHECK(gru.output_shape(Shape{8, 20, 7}) == Shape{8, 20, 16});
    CHECK(lstm.num_parameters() == 4 * 16 * (7 + 16 + 2));
    CHECK(gru.num_parameters() == 3 * 16 * (7 + 16 + 2));
    CHECK(rnn.num_parameters() == 16 * (7 + 16));
    const auto named = lstm.named_parameters();
    REQUIRE(named.size() == 4);
    CHECK(named[0].first == "weight_ih");
    CHECK(named[0].second->shape() == Shape{64, 7});
    CHECK(named[1].first == "weight_hh");
    CHECK(named[3].first == "bias_hh");
    double lo = 1, hi = -1;
    for (const auto& p : named)
        for (double v : p.second->value) lo = std::fmin(lo, v), hi = std::fmax(hi, v);
    CHECK(lo >= -0.25);
    CHECK(hi < 0.25);
    CHECK(hi - lo > 0.45);  // spans most of uniform(-1/4, 1/4)
    CHECK(lstm.describe() == "LSTM(7 -> 16)");
    CHECK(gru.describe() == "GRU(7 -> 16, sequences)");
    const std::string s = lstm.summary(Shape{8, 20, 7});
    CHECK(s.find("LSTM(7 -> 16)") != std::string::npos);
    CHECK(s.find("(8, 16)") != std::string::npos);
    CHECK(s.find("Total params: 1600") != std::string::npos);
    CHECK_THROWS_WITH_AS(lstm.output_shape(Shape{8, 20, 6}), "LSTM(7 -> 16): expected input of shape (batch, steps, 7), got (8, 20, 6)",
                         shape_error);

    Sequential<double> model;
    model.add<Embedding<double>>(10, 7, rng).add<GRU<double>>(7, 5, rng).add<Dense<double>>(5, 1, rng);
    const std::string ms = model.summary(Shape{4, 6});
    CHECK(ms.find("Embedding(10, 7)") != std::string::npos);
    CHECK(ms.find("(4, 6, 7)") != std::string::npos);
    CHECK(ms.find("GRU(7 -> 5)") != std::string::npos);

    // clone: same outputs, independent parameters.
    auto copy = lstm.clone();
    Tape<double> t;
    const V x = t.constant(rnd(Shape{3, 4, 7}, 5));
    const Td a = lstm(x).value(), b = (*copy)(x).value();
    CHECK(max_abs_diff(a, b) == 0.0);
    lstm.weight_hh.value.data()[0] += 1.0;
    CHECK(max_abs_diff(lstm(x).value(), (*copy)(x).value()) > 0.0);
}

TEST_CASE("recurrent layers: gradcheck and gradgradcheck through the weights (functional_call), masked") {
    Rng rng(9);
    const Td x = rnd(Shape{2, 3, 2}, 7, -1.0, 1.0);
    const Td mask = Td(Shape{2, 3}, {1, 1, 1, 1, 0, 0});
    std::vector<std::unique_ptr<RecurrentLayer<double>>> layers;
    layers.push_back(std::make_unique<LSTM<double>>(2, 2, rng));
    layers.push_back(std::make_unique<GRU<double>>(2, 2, rng, RecurrentOptions{true, true}));
    layers.push_back(std::make_unique<SimpleRNN<double>>(2, 2, rng));
    for (auto& l : layers) {
        INFO(l->describe());
        std::vector<Td> in{x};
        for (auto* p : l->parameters()) in.push_back(p->value);
        RecurrentLayer<double>* layer = l.get();
        check_both([layer, &mask](Tape<double>& t, const Vs& v) {
            const Vs params(v.begin() + 1, v.end());
            std::vector<nn::detail::ParamBinding<double>> bindings;
            const auto named = layer->parameters();
            for (std::size_t i = 0; i < named.size(); ++i) bindings.push_back({named[i], params[i]});
            nn::detail::BindingState<double>::current = &bindings;
            const V m = t.constant(mask);
            const V y = layer->forward(v[0], m);
            nn::detail::BindingState<double>::current = nullptr;
            return y;
        }, in);
    }
}

TEST_CASE("recurrent layers: a mask from lengths gives the state after each sequence's end") {
    Rng rng(4);
    LSTM<double> lstm(3, 4, rng);
    const Td x = rnd(Shape{3, 5, 3}, 8);
    Tape<double> t;
    const V xv = t.constant(x);
    const V m = sequence_mask(t, std::vector<std::size_t>{5, 2, 3}, 5);
    const Td full = lstm(xv, m).value();
    // Each sequence alone, cut to its length, ends in the same state.
    const std::size_t len[3] = {5, 2, 3};
    for (std::size_t b = 0; b < 3; ++b) {
        Td xb(Shape{1, len[b], 3});
        for (std::size_t s = 0; s < len[b]; ++s)
            for (std::size_t f = 0; f < 3; ++f) xb.data()[s * 3 + f] = x.data()[(b * 5 + s) * 3 + f];
        const Td hb = lstm(t.constant(xb)).value();
        for (std::size_t j = 0; j < 4; ++j) CHECK(hb.data()[j] == doctest::Approx(full.data()[b * 4 + j]).epsilon(1e-14));
    }
    LSTM<double> seq(3, 4, rng, RecurrentOptions{true, true});
    const Td ys = seq(xv, m).value();
    CHECK(ys.shape() == Shape{3, 5, 4});
    CHECK(ys.data()[(1 * 5 + 2) * 4 + 1] == 0.0);  // after sequence 1's end
    CHECK(ys.data()[(1 * 5 + 1) * 4 + 1] != 0.0);
}

TEST_CASE("recurrent layers: a GRU layer equals torch.nn.GRU with the weights copied") {
    Rng rng(12);
    GRU<double> gru(4, 3, rng, RecurrentOptions{true, true});
    const Td x = rnd(Shape{2, 6, 4}, 13);
    Tape<double> t;
    const Td y = gru(t.constant(x)).value();
    const auto r = torch_eval({{"x", x}, {"wih", gru.weight_ih.value}, {"whh", gru.weight_hh.value}, {"bih", gru.bias_ih.value},
                               {"bhh", gru.bias_hh.value}},
                              "m = torch.nn.GRU(4, 3, batch_first=True)\n"
                              "with torch.no_grad():\n"
                              "    m.weight_ih_l0.copy_(wih); m.weight_hh_l0.copy_(whh); m.bias_ih_l0.copy_(bih); m.bias_hh_l0.copy_(bhh)\n"
                              "out['y'] = m(x)[0]\n");
    if (!r.ran) return;
    CHECK(max_abs_diff(y, r["y"]) < 1e-10);
}

TEST_CASE("Embedding layer: lookup, gradient into the used rows, errors") {
    Rng rng(2);
    Embedding<double> emb(6, 3, rng);
    CHECK(emb.output_shape(Shape{2, 4}) == Shape{2, 4, 3});
    CHECK(emb.num_parameters() == 18);
    Tape<double> t;
    const V e = emb(t.constant(Td(Shape{2, 2}, {5.0, 1.0, 1.0, 0.0})));
    CHECK(e[3 * 1 + 2] == emb.weight.value.data()[1 * 3 + 2]);
    backward(sum(e));
    CHECK(emb.weight.grad.data()[1 * 3] == 2.0);
    CHECK(emb.weight.grad.data()[2 * 3] == 0.0);
    CHECK_THROWS_WITH_AS(emb(t.constant(Td(Shape{1}, {6.0}))),
                         "embedding: index 6.000000 at position 0 is not a row of the table of shape (6, 3)", value_error);
}

TEST_CASE("an LSTM classifier trained with Adam makes zero heap allocations per step in steady state") {
    Rng rng(21);
    const std::size_t B = 16, T = 10, F = 7;
    LSTM<float> lstm(F, 12, rng);
    GRU<float> gru(F, 12, rng);
    Dense<float> head(12, 1, rng);
    Tensor<float> x(Shape{B, T, F}), y(Shape{B, 1}), mask(Shape{B, T});
    for (auto& v : x) v = static_cast<float>(rng.uniform(-1, 1));
    for (std::size_t b = 0; b < B; ++b) {
        y.data()[b] = static_cast<float>(b % 2);
        for (std::size_t s = 0; s < T; ++s) mask.data()[b * T + s] = s < 3 + b % 8 ? 1.0f : 0.0f;
    }
    for (RecurrentLayer<float>* rec : {static_cast<RecurrentLayer<float>*>(&lstm), static_cast<RecurrentLayer<float>*>(&gru)}) {
        INFO(rec->describe());
        std::vector<Parameter<float>*> params = rec->parameters();
        for (auto* p : head.parameters()) params.push_back(p);
        optim::Adam<float> opt(params, 1e-2f);
        Tape<float> t;
        const auto step = [&] {
            t.clear();
            for (auto* p : params) p->zero_grad();
            const Var<float> m = t.view(mask);
            const Var<float> loss = bce_with_logits(head(rec->forward(t.view(x), m)), t.view(y));
            backward(loss);
            opt.step();
            return loss.item();
        };
        const float first = step();
        step();
        tapir_test::AllocationScope scope;
        float last = 0;
        for (int s = 0; s < 30; ++s) last = step();
        CHECK(scope.count() == 0);
        CHECK(last < first);  // it learns
    }
}
