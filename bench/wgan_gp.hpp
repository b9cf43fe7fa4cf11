#pragma once
// The WGAN-GP step of examples/wgan_gp as the benchmarks run it (bench_wgan on one thread,
// bench_parallel on threads and MPI ranks): generator 16 -> 512 -> 1024 -> 512 -> 18 and critic
// 18 -> 512 -> 512 -> 512 -> 1 (ReLU), global batch 128, 5 critic steps with the gradient
// penalty at random interpolates (double backprop), then 1 generator step; Adam, lr 1e-4, betas
// (0.5, 0.9), lambda_gp 10; "events" drawn from a fixed pool of 4096 uniform rows.
#include <algorithm>
#include <cstddef>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/ops.hpp>
#include <tapir/autodiff/tape.hpp>
#include <tapir/loss/gan.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/random.hpp>

namespace bench {

constexpr std::size_t wgan_batch = 128, wgan_latent = 16, wgan_features = 18, wgan_pool = 4096, wgan_critic_steps = 5;
constexpr float wgan_lr = 1e-4f, wgan_gp = 10.0f;

struct WganNets {
    tapir::nn::Sequential<float> gen, critic;
    explicit WganNets(tapir::Rng& rng) {
        using tapir::Activation;
        using tapir::nn::Dense;
        gen.add<Dense<float>>(wgan_latent, 512, rng, Activation::relu)
            .add<Dense<float>>(512, 1024, rng, Activation::relu)
            .add<Dense<float>>(1024, 512, rng, Activation::relu)
            .add<Dense<float>>(512, wgan_features, rng);
        critic.add<Dense<float>>(wgan_features, 512, rng, Activation::relu)
            .add<Dense<float>>(512, 512, rng, Activation::relu)
            .add<Dense<float>>(512, 512, rng, Activation::relu)
            .add<Dense<float>>(512, 1, rng);
    }
};

/// One worker's rows of a critic step: real events, latent vectors, interpolation weights, and
/// the interpolates (written by the critic loss). Buffers kept: no allocation per step.
struct WganRows {
    tapir::Tensor<float> real, z, xhat;
    std::vector<float> alpha;
    explicit WganRows(std::size_t n)
        : real(tapir::Shape{n, wgan_features}), z(tapir::Shape{n, wgan_latent}), xhat(tapir::Shape{n, wgan_features}), alpha(n) {}
    std::size_t rows() const { return alpha.size(); }
    /// Random pool rows, then normal latents, then uniform weights (bench_wgan's order).
    void draw(const tapir::Tensor<float>& pool, tapir::Rng& rng) {
        for (std::size_t i = 0; i < rows(); ++i) {
            const auto r = static_cast<std::size_t>(rng.uniform_int(wgan_pool));
            std::copy(&pool(r, 0), &pool(r, 0) + wgan_features, &real(i, 0));
        }
        draw_latent(rng);
        for (float& a : alpha) a = static_cast<float>(rng.uniform());
    }
    void draw_latent(tapir::Rng& rng) {
        for (std::size_t i = 0; i < z.size(); ++i) z[i] = static_cast<float>(rng.normal());
    }
};

/// The critic loss on a worker's rows, a mean over them: fakes from the generator without
/// gradient, <C(fake)> - <C(real)> + lambda_gp times the penalty at the interpolates (the
/// critic's input gradient recorded with create_graph and differentiated again).
inline tapir::Var<float> wgan_critic_loss(tapir::Tape<float>& t, WganNets& nets, WganRows& r) {
    using namespace tapir;
    Var<float> fake;
    {
        NoGradGuard<float> no_grad(t);  // the generator is fixed during critic steps
        fake = nets.gen(t.view(r.z));
    }
    for (std::size_t i = 0; i < r.rows(); ++i) {
        const float a = r.alpha[i];
        for (std::size_t j = 0; j < wgan_features; ++j) r.xhat(i, j) = a * r.real(i, j) + (1 - a) * fake.data()[i * wgan_features + j];
    }
    const Var<float> d_real = nets.critic(t.view(r.real));
    const Var<float> d_fake = nets.critic(fake);
    const Var<float> x_hat = t.variable(r.xhat);
    const Var<float> g = grad(sum(nets.critic(x_hat)), x_hat, /*create_graph=*/true);
    const Var<float> norm = sqrt(add_scalar(sum(square(g), 1), 1e-12f));
    const Var<float> gp = mean(square(add_scalar(norm, -1.0f)));
    return add(loss::wgan_critic_loss(d_real, d_fake), scale(gp, wgan_gp));
}

/// The generator loss -<C(G(z))> on a worker's latent rows (the critic's parameter gradients
/// are computed too and left unused, as in examples/wgan_gp).
inline tapir::Var<float> wgan_generator_loss(tapir::Tape<float>& t, WganNets& nets, const tapir::Tensor<float>& z) {
    return tapir::loss::wgan_generator_loss(nets.critic(nets.gen(t.view(z))));
}

} // namespace bench
