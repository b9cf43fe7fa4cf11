// GAN and WGAN-GP losses: values against direct formulas, the gradient penalty's value for a
// linear critic, its gradient with respect to the critic weights against finite differences
// (ReLU and tanh critics, through double backprop) and its second-order check.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/loss/gan.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adam.hpp>

#include "support/alloc_counter.hpp"

using namespace tapir;
using V = Var<double>;
using Vs = std::vector<V>;
using Td = Tensor<double>;

namespace {
Td rnd(const Shape& s, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
    Rng r(seed);
    Td t(s);
    for (auto& v : t) v = r.uniform(lo, hi);
    return t;
}
double sig(double x) { return 1 / (1 + std::exp(-x)); }

/// A two-layer critic D(x) = act(x W1 + b1) W2 + b2 on explicit weights.
struct Critic {
    V w1, b1, w2, b2;
    Activation act;
    V operator()(const V& x) const { return dense(dense(x, w1, b1, act), w2, b2); }
};
/// The same critic from unfused ops (matmul, broadcasting add, relu/tanh).
struct CriticOps {
    V w1, b1, w2, b2;
    bool use_tanh;
    V operator()(const V& x) const {
        const V pre = matmul(x, w1) + b1;
        const V h = use_tanh ? tanh(pre) : relu(pre);
        return matmul(h, w2) + b2;
    }
};
} // namespace

TEST_CASE("GAN losses from logits equal the textbook formulas") {
    Tape<double> t;
    const Td r(Shape{3}, {0.5, -1.0, 2.0}), f(Shape{2, 1}, {-0.3, 1.5});
    const V rv = t.constant(r), fv = t.constant(f);
    double er = 0, ef = 0, ef1 = 0;
    for (std::size_t i = 0; i < 3; ++i) er += std::log(sig(r[i])) / 3;
    for (std::size_t i = 0; i < 2; ++i) {
        ef += std::log(1 - sig(f[i])) / 2;
        ef1 += std::log(sig(f[i])) / 2;
    }
    CHECK(loss::gan_discriminator_loss(rv, fv).item() == doctest::Approx(-(er + ef)).epsilon(1e-13));
    CHECK(loss::gan_generator_loss_minimax(fv).item() == doctest::Approx(ef).epsilon(1e-13));
    CHECK(loss::gan_generator_loss_nonsaturating(fv).item() == doctest::Approx(-ef1).epsilon(1e-13));
    // D = 1/2 everywhere: the discriminator loss is 2 ln 2.
    const V z = t.constant(Td(Shape{4}, 0.0));
    CHECK(loss::gan_discriminator_loss(z, z).item() == doctest::Approx(2 * std::log(2.0)));
    // Weighted means per batch.
    const V wr = t.constant(Td(Shape{3}, {1.0, 0.0, 3.0}));
    const double wer = (std::log(sig(0.5)) + 3 * std::log(sig(2.0))) / 4;
    CHECK(loss::gan_discriminator_loss(rv, fv, &wr, nullptr).item() == doctest::Approx(-(wer + ef)).epsilon(1e-13));
    // Extreme logits stay finite (in float as well).
    Tape<float> tf;
    const Var<float> big = tf.constant(Tensor<float>(Shape{2}, {200.f, -200.f}));
    CHECK(loss::gan_discriminator_loss(big, big).item() == doctest::Approx(200.0));
    CHECK(loss::gan_generator_loss_nonsaturating(big).item() == doctest::Approx(100.0));
    CHECK(loss::gan_generator_loss_minimax(big).item() == doctest::Approx(-100.0));
    // Saturation: at a confidently rejected fake, the minimax gradient vanishes, the
    // non-saturating one does not.
    const V fk = t.variable(Td(Shape{1}, -8.0));
    CHECK(std::abs(grad(loss::gan_generator_loss_minimax(fk), fk)[0]) < 1e-3);
    CHECK(std::abs(grad(loss::gan_generator_loss_nonsaturating(fk), fk)[0]) > 0.99);
}

TEST_CASE("WGAN critic and generator losses") {
    Tape<double> t;
    const V r = t.constant(Td(Shape{3, 1}, {1.0, 2.0, 3.0})), f = t.constant(Td(Shape{2, 1}, {-1.0, 0.5}));
    CHECK(loss::wgan_critic_loss(r, f).item() == doctest::Approx(-0.25 - 2.0));
    CHECK(loss::wgan_generator_loss(f).item() == doctest::Approx(0.25));
    const V wf = t.constant(Td(Shape{2}, {3.0, -1.0}));
    CHECK(loss::wgan_generator_loss(f, &wf).item() == doctest::Approx(-(-3.0 - 0.5) / 2));
}

TEST_CASE("gradient penalty: value for a linear critic, one-sided variant, interpolates") {
    Tape<double> t;
    const Td real = rnd(Shape{5, 2}, 1), fake = rnd(Shape{5, 2}, 2);
    for (double scale_w : {2.0, 0.5}) {
        const V w = t.constant(Td(Shape{2, 1}, {0.6 * scale_w, 0.8 * scale_w}));  // ||grad D|| = scale_w for every event
        auto lin = [&](const V& x) { return matmul(x, w); };
        Rng rng(7);
        const double gp = loss::gradient_penalty(lin, t.constant(real), t.constant(fake), rng, 10.0).item();
        CHECK(gp == doctest::Approx(10 * (scale_w - 1) * (scale_w - 1)).epsilon(1e-9));
        Rng rng2(7);
        const double gp1 = loss::gradient_penalty(lin, t.constant(real), t.constant(fake), rng2, 10.0, true).item();
        CHECK(gp1 == doctest::Approx(scale_w > 1 ? 10 * (scale_w - 1) * (scale_w - 1) : 0.0).epsilon(1e-9));
    }
    // Interpolates lie on the segments, with a ~ U[0,1) drawn per event in order.
    Rng rng(11), ref(11);
    const V xh = loss::random_interpolates(t.constant(real), t.constant(fake), rng);
    CHECK(xh.requires_grad());
    for (std::size_t i = 0; i < 5; ++i) {
        const double a = ref.uniform();
        for (std::size_t j = 0; j < 2; ++j) CHECK(xh[i * 2 + j] == doctest::Approx(a * real(i, j) + (1 - a) * fake(i, j)));
    }
    // A critic with zero input gradient: the epsilon keeps the norm's derivative finite.
    const V zw = t.variable(Td(Shape{2, 1}, 0.0));
    auto zero = [&](const V& x) { return matmul(x, zw); };
    Rng rng3(3);
    const V gp0 = loss::gradient_penalty(zero, t.constant(real), t.constant(fake), rng3, 1.0);
    CHECK(gp0.item() == doctest::Approx(1.0).epsilon(1e-5));
    const V gz = grad(gp0, zw);
    CHECK(std::isfinite(gz[0]));
    CHECK(std::isfinite(gz[1]));
}

TEST_CASE("gradient penalty: gradient w.r.t. critic weights matches finite differences (double backprop)") {
    const Td real = rnd(Shape{6, 3}, 21, -2, 2), fake = rnd(Shape{6, 3}, 22, -2, 2);
    const Td w1 = rnd(Shape{3, 5}, 23), b1 = rnd(Shape{5}, 24, -0.3, 0.3), w2 = rnd(Shape{5, 1}, 25), b2 = rnd(Shape{1}, 26);
    for (Activation act : {Activation::relu, Activation::tanh}) {
        for (bool one_sided : {false, true}) {
            INFO("activation " << activation_name(act) << ", one-sided " << one_sided);
            const GradcheckFn fused = [&](Tape<double>& t, const Vs& p) {
                Rng rng(99);  // the same interpolates at every evaluation
                return loss::gradient_penalty(Critic{p[0], p[1], p[2], p[3], act}, t.constant(real), t.constant(fake), rng, 10.0,
                                              one_sided);
            };
            const auto r1 = gradcheck(fused, {w1, b1, w2, b2});
            INFO(r1.message());
            CHECK(r1.passed);
            const GradcheckFn unfused = [&](Tape<double>& t, const Vs& p) {
                Rng rng(99);
                return loss::gradient_penalty(CriticOps{p[0], p[1], p[2], p[3], act == Activation::tanh}, t.constant(real),
                                              t.constant(fake), rng, 10.0, one_sided);
            };
            const auto r2 = gradcheck(unfused, {w1, b1, w2, b2});
            INFO(r2.message());
            CHECK(r2.passed);
            // Both critic forms give the same penalty.
            Tape<double> t;
            const Vs p{t.constant(w1), t.constant(b1), t.constant(w2), t.constant(b2)};
            const double v1 = fused(t, p).item(), v2 = unfused(t, p).item();
            CHECK(v1 > 0.0);
            CHECK(v1 == doctest::Approx(v2).epsilon(1e-12));
        }
    }
    // Make sure the one-sided test above is not vacuous: with these weights some norms exceed 1.
    Tape<double> t;
    Rng rng(99);
    const Critic c{t.constant(w1), t.constant(b1), t.constant(w2), t.constant(b2), Activation::tanh};
    CHECK(loss::gradient_penalty(c, t.constant(real), t.constant(fake), rng, 1.0, true).item() > 1e-4);
}

TEST_CASE("gradient penalty: second-order check (tanh critic) and gradient w.r.t. the interpolates") {
    const Td real = rnd(Shape{4, 2}, 31, -2, 2), fake = rnd(Shape{4, 2}, 32, -2, 2);
    const Td w1 = rnd(Shape{2, 3}, 33), b1 = rnd(Shape{3}, 34), w2 = rnd(Shape{3, 1}, 35), b2 = rnd(Shape{1}, 36);
    const GradcheckFn f = [&](Tape<double>& t, const Vs& p) {
        Rng rng(5);
        return loss::gradient_penalty(Critic{p[0], p[1], p[2], p[3], Activation::tanh}, t.constant(real), t.constant(fake), rng, 2.0);
    };
    const auto r2 = gradgradcheck(f, {w1, b1, w2, b2});
    INFO(r2.message());
    CHECK(r2.passed);
    // As a function of the interpolation points themselves.
    const GradcheckFn fx = [&](Tape<double>& t, const Vs& x) {
        const Critic c{t.constant(w1), t.constant(b1), t.constant(w2), t.constant(b2), Activation::tanh};
        return loss::gradient_penalty_at(c, x[0], 2.0);
    };
    const auto r3 = gradcheck(fx, {real});
    INFO(r3.message());
    CHECK(r3.passed);
}

TEST_CASE("GAN and WGAN losses: gradcheck, gradgradcheck, float, errors") {
    const Td r = rnd(Shape{4}, 41, -3, 3), f = rnd(Shape{3, 1}, 42, -3, 3), w = Td(Shape{4}, {1.0, -0.2, 0.5, 2.0});
    const std::vector<GradcheckFn> fs = {
        [](Tape<double>&, const Vs& x) { return loss::gan_discriminator_loss(x[0], x[1]); },
        [&](Tape<double>& t, const Vs& x) {
            const V wv = t.view(w);
            return loss::gan_discriminator_loss(x[0], x[1], &wv, nullptr);
        },
        [](Tape<double>&, const Vs& x) { return loss::gan_generator_loss_minimax(x[1]); },
        [](Tape<double>&, const Vs& x) { return loss::gan_generator_loss_nonsaturating(x[1]); },
        [&](Tape<double>& t, const Vs& x) {
            const V wv = t.view(w);
            return loss::wgan_critic_loss(x[0], x[1], &wv);
        },
        [](Tape<double>&, const Vs& x) { return loss::wgan_generator_loss(x[1]); },
    };
    for (const auto& fn : fs) {
        const auto r1 = gradcheck(fn, {r, f});
        INFO(r1.message());
        CHECK(r1.passed);
        const auto r2 = gradgradcheck(fn, {r, f});
        INFO(r2.message());
        CHECK(r2.passed);
    }
    // float: the penalty through double backprop compiles and runs.
    Tape<float> tf;
    const Var<float> w1 = tf.constant(rnd(Shape{2, 4}, 43).cast<float>()), w2 = tf.constant(rnd(Shape{4, 1}, 44).cast<float>());
    auto critic = [&](const Var<float>& x) { return matmul(tanh(matmul(x, w1)), w2); };
    Rng rng(1);
    const float gp = loss::gradient_penalty(critic, tf.constant(rnd(Shape{8, 2}, 45).cast<float>()),
                                            tf.constant(rnd(Shape{8, 2}, 46).cast<float>()), rng, 10.0f)
                         .item();
    CHECK(std::isfinite(gp));
    CHECK(gp > 0.f);

    Tape<double> t;
    Rng rng2(1);
    const V a = t.constant(rnd(Shape{4, 2}, 1)), b = t.constant(rnd(Shape{3, 2}, 2));
    auto lin = [&](const V& x) { return sum(x, 1); };
    CHECK_THROWS_AS(loss::gradient_penalty(lin, a, b, rng2), shape_error);
    auto bad = [&](const V& x) { return x; };  // two scores per event
    CHECK_THROWS_WITH_AS(loss::gradient_penalty(bad, a, a, rng2), doctest::Contains("one score per event"), shape_error);
    CHECK_THROWS_AS(loss::gradient_penalty_at(lin, a), tape_error);  // a constant, not a variable
    CHECK_THROWS_AS(loss::gan_discriminator_loss(a, a), shape_error);  // two logits per event
}

TEST_CASE("a steady-state WGAN-GP critic step (double backprop) makes zero heap allocations") {
    Rng rng(31);
    nn::Sequential<float> critic;
    critic.add<nn::Dense<float>>(6, 16, rng, Activation::relu).add<nn::Dense<float>>(16, 16, rng, Activation::relu);
    critic.add<nn::Dense<float>>(16, 1, rng);
    optim::Adam<float> opt(critic.parameters(), 1e-3f, 0.5f, 0.9f);
    Tensor<float> real(Shape{32, 6}), fake(Shape{32, 6}), xhat(Shape{32, 6});
    Tape<float> tape;
    const auto step = [&] {
        for (auto& v : real) v = static_cast<float>(rng.normal());
        for (auto& v : fake) v = static_cast<float>(rng.normal(0.5, 1.0));
        for (std::size_t i = 0; i < 32; ++i) {
            const float a = static_cast<float>(rng.uniform());
            for (std::size_t j = 0; j < 6; ++j) xhat(i, j) = a * real(i, j) + (1 - a) * fake(i, j);
        }
        tape.clear();
        const Var<float> x = tape.variable(xhat);
        const Var<float> loss = loss::wgan_critic_loss(critic(tape.view(real)), critic(tape.view(fake))) +
                                loss::gradient_penalty_at(critic, x, 10.0f);
        opt.zero_grad();
        backward(loss);
        opt.step();
        return loss.item();
    };
    step();  // warm-up: arena, gradient buffers, optimiser state
    step();
    tapir_test::AllocationScope scope;
    float total = 0.0f;
    for (int s = 0; s < 5; ++s) total += step();
    CHECK(scope.count() == 0);
    CHECK(std::isfinite(total));
}
