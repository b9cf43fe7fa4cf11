// DeepSet / Particle Flow Network and Energy Flow Network: gradients (input and parameters, first
// and second order), PyTorch float64 values, permutation and padding invariance, training on a
// toy set task, zero heap allocations per masked training step.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/nn/fit.hpp>
#include <tapir/nn/sets.hpp>
#include <tapir/nn/graph.hpp>
#include <tapir/nn/recurrent.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/random.hpp>

#include "support/set_fixture.hpp"
#include "support/alloc_counter.hpp"
#include "support/gradcheck.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir::nn;
using namespace tapir_test;
using set_fixture::Bound;
using set_fixture::mask_of;
using set_fixture::pad_particles;
using set_fixture::permute;

TEST_CASE("DeepSet and EnergyFlowNetwork: gradients of first and second order in input and parameters, with masks") {
    Rng rng(1);
    const Td x = rnd(Shape{2, 4, 3}, 2), m = mask_of(4, {4, 2});
    for (SetPooling pool : {SetPooling::sum, SetPooling::mean}) {
        DeepSet<double> ds(3, {5, 4}, {3, 2}, rng, Activation::tanh, pool);
        Bound<DeepSet<double>> masked(ds, [&m](DeepSet<double>& d, const V& v) { return d.forward(v, v.tape().constant(m)); });
        set_fixture::check_module(masked, x);
        set_fixture::check_module(ds, x);
    }
    EnergyFlowNetwork<double> efn(2, {5, 4}, {3, 1}, rng, Activation::tanh);
    Bound<EnergyFlowNetwork<double>> masked(efn, [&m](EnergyFlowNetwork<double>& e, const V& v) { return e.forward(v, v.tape().constant(m)); });
    set_fixture::check_module(masked, x);
}

TEST_CASE("a Particle Flow Network equals the same network written in PyTorch (float64)") {
    Rng rng(3);
    ParticleFlowNetwork<double> pfn(3, {6, 5}, {4, 1}, rng);
    const Td x = rnd(Shape{3, 5, 3}, 4), m = mask_of(5, {5, 3, 1});
    Tape<double> t;
    const Td y = pfn.forward(t.constant(x), t.constant(m)).value();
    TorchTensors in{{"x", x}, {"m", m}};
    for (auto& p : pfn.named_parameters()) {
        const std::string& n = p.first;  // "phi.0.weight" -> p_p0t
        in.emplace("p_" + n.substr(0, 1) + n.substr(n.find('.') + 1, 1) + n.substr(n.size() - 1), p.second->value);
    }
    // Names: p_p0t (phi.0.weight), p_p0s (phi.0.bias), ... f likewise.
    const auto r = torch_eval(in, "r = torch.relu\n"
                                  "h = r(r(x @ p_p0t + p_p0s) @ p_p1t + p_p1s)\n"
                                  "p = (h * m.unsqueeze(-1)).sum(1)\n"
                                  "out['y'] = r(p @ p_f0t + p_f0s) @ p_f1t + p_f1s\n");
    if (!r.ran) return;
    CHECK(max_abs_diff(r["y"], y) < 1e-10);
}

TEST_CASE("PFN and EFN outputs do not depend on the particle order or on masked padding") {
    Rng rng(5);
    ParticleFlowNetwork<double> pfn(3, {8, 6}, {5, 2}, rng, Activation::tanh);  // tanh: no dead units hide a change
    EnergyFlowNetwork<double> efn(2, {8, 6}, {5, 2}, rng, Activation::tanh);
    const Td x = rnd(Shape{3, 6, 3}, 6), m = mask_of(6, {6, 4, 0});
    const std::vector<std::size_t> perm = {3, 0, 5, 1, 4, 2};
    Tape<double> t;
    const auto run = [&](const Td& xv, const Td& mv, int which) {
        t.clear();
        return which == 0 ? pfn.forward(t.constant(xv), t.constant(mv)).value() : efn.forward(t.constant(xv), t.constant(mv)).value();
    };
    for (int which = 0; which < 2; ++which) {
        INFO("network " << which);
        const Td y = run(x, m, which);
        CHECK(max_abs_diff(run(permute(x, perm), permute(m, perm), which), y) < 1e-12);
        CHECK(max_abs_diff(run(pad_particles(x, 3, 9.5), pad_particles(m, 3, 0.0), which), y) < 1e-12);
        CHECK(max_abs_diff(y, run(x, m, which)) == 0.0);
        // The padding really is ignored: other values in the padded slots give the same output.
        Td x2 = x;
        x2(1, 5, 0) = 100.0;
        CHECK(max_abs_diff(run(x2, m, which), y) == 0.0);
        // ... and a real particle is not.
        x2(1, 1, 2) += 1.0;
        x2(1, 1, 1) += 1.0;
        CHECK(max_abs_diff(run(x2, m, which), y) > 1e-6);
    }
    // The EFN is linear in the energy fractions: doubling z doubles the latent sum.
    t.clear();
    Td x3 = x;
    for (std::size_t b = 0; b < 3; ++b)
        for (std::size_t i = 0; i < 6; ++i) x3(b, i, 0) *= 2.0;
    const Td l1 = efn.latent(t.constant(x), nullptr).value(), l2 = efn.latent(t.constant(x3), nullptr).value();
    for (std::size_t i = 0; i < l1.size(); ++i) CHECK(l2[i] == doctest::Approx(2 * l1[i]).epsilon(1e-12));
}

TEST_CASE("a PFN learns a toy set task: is the sum of a feature over the real particles positive?") {
    const std::size_t n_events = 512, N = 10, F = 2, B = 64;
    Rng data(7);
    Tensor<float> x(Shape{n_events, N, F}), m(Shape{n_events, N}), y(Shape{n_events, 1});
    for (std::size_t e = 0; e < n_events; ++e) {
        const std::size_t len = 1 + static_cast<std::size_t>(data.uniform(0.0, 1.0) * (N - 0.01));
        float s = 0;
        for (std::size_t i = 0; i < N; ++i) {
            m(e, i) = i < len ? 1.0f : 0.0f;
            for (std::size_t f = 0; f < F; ++f) x(e, i, f) = static_cast<float>(data.uniform(-1.0, 1.0));
            if (i < len) s += x(e, i, 0);
        }
        y(e, 0) = s > 0 ? 1.0f : 0.0f;
    }
    Rng rng(8);
    ParticleFlowNetwork<float> pfn(F, {16, 8}, {16, 1}, rng);
    optim::Adam<float> opt(pfn.parameters(), 1e-2f);
    Tape<float> t;
    const auto batch = [&](const Tensor<float>& a, std::size_t first) {
        Shape s = a.shape();
        s[0] = B;
        return Tensor<float>(s, a.data() + first * (a.size() / n_events), B * (a.size() / n_events));
    };
    const std::size_t train_batches = 6;  // 384 events to train on, 128 held out
    for (int epoch = 0; epoch < 60; ++epoch)
        for (std::size_t k = 0; k < train_batches; ++k) {
            const Tensor<float> xb = batch(x, k * B), mb = batch(m, k * B), yb = batch(y, k * B);
            t.clear();
            backward(bce_with_logits(pfn.forward(t.view(xb), t.view(mb)), t.view(yb)));
            opt.step();
            opt.zero_grad();
        }
    std::size_t right = 0;
    for (std::size_t k = train_batches; k < n_events / B; ++k) {
        const Tensor<float> xb = batch(x, k * B), mb = batch(m, k * B), yb = batch(y, k * B);
        t.clear();
        const Var<float> z = pfn.forward(t.view(xb), t.view(mb));
        for (std::size_t i = 0; i < B; ++i) right += ((z[i] > 0) == (yb[i] > 0.5f)) ? 1 : 0;
    }
    const double acc = static_cast<double>(right) / static_cast<double>(n_events - train_batches * B);
    INFO("held-out accuracy " << acc);
    CHECK(acc > 0.9);
}

TEST_CASE("a masked PFN training step makes zero heap allocations in steady state") {
    const std::size_t B = 32, N = 20, F = 4;
    Rng rng(9);
    Tensor<float> x(Shape{B, N, F}), m(Shape{B, N}), y(Shape{B, 1});
    for (auto& v : x) v = static_cast<float>(rng.uniform(-1.0, 1.0));
    for (std::size_t b = 0; b < B; ++b) {
        for (std::size_t i = 0; i < N; ++i) m(b, i) = i < 3 + b % 17 ? 1.0f : 0.0f;
        y(b, 0) = static_cast<float>(b % 2);
    }
    ParticleFlowNetwork<float> pfn(F, {32, 32, 16}, {32, 1}, rng);
    EnergyFlowNetwork<float> efn(F - 1, {32, 16}, {16, 1}, rng);
    optim::Adam<float> opt(pfn.parameters(), 1e-3f), opt2(efn.parameters(), 1e-3f);
    Tape<float> t;
    float total = 0;
    const auto step = [&] {
        t.clear();
        const Var<float> l = bce_with_logits(pfn.forward(t.view(x), t.view(m)), t.view(y)) +
                             bce_with_logits(efn.forward(t.view(x), t.view(m)), t.view(y));
        backward(l);
        total += l.item();
        opt.step();
        opt2.step();
        opt.zero_grad();
        opt2.zero_grad();
    };
    step();
    step();
    AllocationScope scope;
    for (int i = 0; i < 10; ++i) step();
    CHECK(scope.count() == 0);
    CHECK(std::isfinite(total));
}

TEST_CASE("set layers name both shapes in their errors") {
    Rng rng(10);
    DeepSet<double> ds(3, {4}, {1}, rng);
    Tape<double> t;
    CHECK_THROWS_WITH_AS(ds.forward(t.constant(Td(Shape{2, 5, 3})), t.constant(Td(Shape{2, 4}))),
                         "DeepSet: set vs mask: expects a mask of shape (B, N): (2, 5, 3) vs (2, 4)", shape_error);
    CHECK_THROWS_WITH_AS(ds.forward(t.constant(Td(Shape{2, 5, 2}))), "DeepSet: expected a set of shape (B, N, 3), got (2, 5, 2)", shape_error);
    CHECK(ds.output_shape(Shape{7, 5, 3}) == Shape{7, 1});
    CHECK(ds.num_parameters() == 3 * 4 + 4 + 4 * 1 + 1);
}

TEST_CASE("set, graph, recurrent and attention layers take their several inputs through forward_many") {
    Rng rng(4);
    Tape<double> t;
    const Td x = rnd(Shape{2, 4, 3}, 5), m = mask_of(4, {4, 2});
    const V xv = t.constant(x), mv = t.constant(m);
    DeepSet<double> ds(3, {5, 4}, {3, 1}, rng);
    const V a = ds.forward_many({xv, mv}), b = ds.forward(xv, mv);
    CHECK(a.shape() == Shape{2, 1});
    CHECK(a.value()[0] == b.value()[0]);
    CHECK(a.value()[1] == b.value()[1]);
    CHECK(ds.forward_many({xv}).value()[1] == ds.forward(xv).value()[1]);
    CHECK(ds(xv, mv).value()[1] == b.value()[1]);  // operator() of two arguments
    CHECK(ds.num_inputs() == 0);
    CHECK_THROWS_WITH_AS(ds.forward_many({xv, mv, mv}), "DeepSet(sum): takes 1 to 2 inputs, got 3", value_error);

    // fit() and predict() on the layer itself, with (x, mask) per event.
    Rng r2(6);
    DeepSet<float> pfn(3, {8, 4}, {4, 1}, r2);
    Tensor<float> xf(Shape{32, 4, 3}), mf(Shape{32, 4}, 1.0f), yf(Shape{32, 1});
    for (std::size_t i = 0; i < xf.size(); ++i) xf[i] = static_cast<float>(r2.normal());
    for (std::size_t i = 0; i < 32; ++i) {
        yf[i] = i % 2 ? 1.0f : 0.0f;
        mf[i * 4 + 3] = 0.0f;  // a padded last particle
    }
    optim::Adam<float> adam(pfn.parameters(), 1e-2f);
    FitOptions<float> fo;
    fo.epochs = 2;
    fo.batch_size = 8;
    fo.verbose = Verbosity::quiet;
    const History h = fit(pfn, {&xf, &mf}, yf, adam, fo);
    CHECK(h.epochs() == 2);
    const Tensor<float> p = predict(pfn, {&xf, &mf});
    CHECK(p.shape() == Shape{32, 1});

    // The recurrent, graph and attention layers alike.
    LSTM<double> lstm(3, 4, rng);
    const Td seq = rnd(Shape{2, 5, 3}, 7), sm = mask_of(5, {5, 3});
    const V sv = t.constant(seq), smv = t.constant(sm);
    CHECK(lstm.forward_many({sv, smv}).value()[3] == lstm.forward(sv, smv).value()[3]);
    EdgeConv<double> ec(3, {4}, 2, rng);
    CHECK(ec.forward_many({xv, mv}).value()[5] == ec.forward(xv, mv).value()[5]);
    CHECK(ec.forward_many({xv, xv, mv}).value()[5] == ec.forward(xv, xv, mv).value()[5]);
}
