#pragma once
/// Adversarial generative losses: the original GAN (from logits) and the Wasserstein GAN with
/// gradient penalty.
///
/// GAN losses take discriminator logits t, D = sigmoid(t), and use log D = -softplus(-t),
/// log(1 - D) = -softplus(t), so they are finite for any logit (Goodfellow et al., arXiv 1406.2661).

#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "../autodiff/backward.hpp"
#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../random.hpp"
#include "../error.hpp"
#include "../tensor/tensor.hpp"
#include "common.hpp"

namespace tapir {
namespace loss {

namespace detail {
/// The (weighted) mean of phi over one batch of per-event scores: every GAN and WGAN loss is one
/// such mean or the sum or difference of two (real and fake batches, each with its own weights).
template <class T, class Phi>
Var<T> batch_mean(const Var<T>& scores, weights_t<T> weights, const char* fn, const char* what, Phi phi) {
    return weighted_mean(phi(per_event_column(scores, fn, what)), weights, fn);
}
template <class T>
Var<T> softplus_of_neg(const Var<T>& t) { return softplus(neg(t)); }  // -log D = softplus(-t)
template <class T>
Var<T> softplus_of(const Var<T>& t) { return softplus(t); }  // -log(1 - D) = softplus(t)
template <class T>
Var<T> identity(const Var<T>& t) { return t; }
} // namespace detail

// ---- GAN (Goodfellow et al. 2014, arXiv 1406.2661) ------------------------------------------

/// Discriminator loss, the negative of the GAN value function:
///   L_D = -E_x[log D(x)] - E_z[log(1 - D(G(z)))] = <softplus(-t_real)> + <softplus(t_fake)>,
/// with each expectation a (weighted) mean over its own batch.
template <class T>
Var<T> gan_discriminator_loss(const Var<T>& real_logits, const Var<T>& fake_logits, detail::weights_t<T> real_weights = nullptr,
                              detail::weights_t<T> fake_weights = nullptr) {
    const char* fn = "gan_discriminator_loss";
    const Var<T> r = detail::batch_mean(real_logits, real_weights, fn, "real logits", detail::softplus_of_neg<T>);
    return add(r, detail::batch_mean(fake_logits, fake_weights, fn, "fake logits", detail::softplus_of<T>));
}

/// Minimax generator loss (minimised by G): L_G = E_z[log(1 - D(G(z)))] = -<softplus(t_fake)>.
/// Saturates when D rejects the fakes confidently; see the non-saturating form.
template <class T>
Var<T> gan_generator_loss_minimax(const Var<T>& fake_logits, detail::weights_t<T> weights = nullptr) {
    return neg(detail::batch_mean(fake_logits, weights, "gan_generator_loss_minimax", "fake logits", detail::softplus_of<T>));
}

/// Non-saturating generator loss: L_G = -E_z[log D(G(z))] = <softplus(-t_fake)>.
template <class T>
Var<T> gan_generator_loss_nonsaturating(const Var<T>& fake_logits, detail::weights_t<T> weights = nullptr) {
    return detail::batch_mean(fake_logits, weights, "gan_generator_loss_nonsaturating", "fake logits", detail::softplus_of_neg<T>);
}

// ---- Wasserstein GAN (arXiv 1701.07875, 1704.00028) ---------------------------------------------

/// Critic loss (minimised by the critic): L_C = <D(fake)> - <D(real)> on raw critic scores.
/// Add gradient_penalty() for WGAN-GP.
template <class T>
Var<T> wgan_critic_loss(const Var<T>& real_scores, const Var<T>& fake_scores, detail::weights_t<T> real_weights = nullptr,
                        detail::weights_t<T> fake_weights = nullptr) {
    const char* fn = "wgan_critic_loss";
    const Var<T> r = detail::batch_mean(real_scores, real_weights, fn, "real scores", detail::identity<T>);
    return sub(detail::batch_mean(fake_scores, fake_weights, fn, "fake scores", detail::identity<T>), r);
}

/// Generator loss: L_G = -<D(G(z))>.
template <class T>
Var<T> wgan_generator_loss(const Var<T>& fake_scores, detail::weights_t<T> weights = nullptr) {
    return neg(detail::batch_mean(fake_scores, weights, "wgan_generator_loss", "fake scores", detail::identity<T>));
}

/// Gradient penalty at given points xhat (a variable on the tape, shape (N, ...)):
///   lambda * mean_i (||grad_x D(xhat_i)||_2 - 1)^2   (one-sided: relu(||g|| - 1)^2),
/// with the per-event gradients from grad(sum D(xhat), xhat, create_graph = true), so the result
/// is differentiable in the critic's weights (double backprop). The norm is
/// sqrt(sum g^2 + 1e-12): the epsilon keeps the derivative of sqrt finite at a zero gradient
/// and shifts the norm by at most 1e-6.
template <class T, class Critic>
Var<T> gradient_penalty_at(Critic&& critic, const Var<T>& xhat, detail::scalar_t<T> lambda = T(10), bool one_sided = false) {
    const char* fn = "gradient_penalty";
    const std::size_t n = detail::batch_size(xhat, fn, "interpolates");
    if (!xhat.requires_grad())
        throw tape_error(std::string(fn) + ": the interpolates must be a tape.variable (gradient recording is off?)");
    detail::check_finite_param(fn, "lambda", static_cast<double>(lambda));
    const Var<T> d = critic(xhat);
    if (d.size() != n)
        throw shape_error(std::string(fn) + ": the critic must give one score per event; " + std::to_string(n) +
                          " events but output of shape " + d.shape().str());
    const Var<T> g = grad(sum(d), xhat, /*create_graph=*/true);
    const Var<T> sq = detail::sum_per_event(square(g));
    const Var<T> norm = sqrt(add_scalar(sq, T(1e-12)));
    Var<T> dev = add_scalar(norm, T(-1));
    if (one_sided) dev = relu(dev);
    return scale(mean(square(dev)), lambda);
}

/// Interpolates xhat = a real + (1 - a) fake with a ~ U[0, 1] per event, as a new variable on
/// the tape (no graph link to the generator: fakes enter as values).
template <class T>
Var<T> random_interpolates(const Var<T>& real, const Var<T>& fake, Rng& rng) {
    const char* fn = "gradient_penalty";
    const std::size_t n = detail::batch_size(real, fn, "real batch");
    if (real.shape() != fake.shape())
        throw shape_error(std::string(fn) + ": real batch of shape " + real.shape().str() + " vs fake batch of shape " +
                          fake.shape().str());
    const std::size_t k = real.size() / n;
    Tensor<T> x(real.shape());
    const T* r = real.data();
    const T* f = fake.data();
    for (std::size_t i = 0; i < n; ++i) {
        const T a = static_cast<T>(rng.uniform());
        for (std::size_t j = 0; j < k; ++j) x[i * k + j] = a * r[i * k + j] + (T(1) - a) * f[i * k + j];
    }
    return real.tape().variable(x);
}

/// WGAN-GP penalty (Gulrajani et al., arXiv 1704.00028, eq. 3) on random interpolates of a real
/// and a fake batch; `critic` is any callable Var -> Var (a Sequential, a lambda). Returns
/// lambda * GP; the paper uses lambda = 10.
template <class T, class Critic>
Var<T> gradient_penalty(Critic&& critic, const Var<T>& real, const Var<T>& fake, Rng& rng, detail::scalar_t<T> lambda = T(10),
                        bool one_sided = false) {
    const Var<T> xhat = random_interpolates(real, fake, rng);
    return gradient_penalty_at(std::forward<Critic>(critic), xhat, lambda, one_sided);
}

} // namespace loss
} // namespace tapir
