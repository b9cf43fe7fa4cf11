#pragma once
/// Negative log-likelihood of a Gaussian mixture density network (Bishop 1994), the adversary
/// of "learning to pivot" (Louppe, Kagan, Cranmer, arXiv 1611.01046), optionally with every
/// component truncated to an interval (the mass window the adversary sees).

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>

#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "common.hpp"

namespace tapir {
namespace loss {

template <class T>
struct MdnOptions {
    /// sigma_k = softplus(raw_k) + sigma_floor: keeps a component from collapsing onto one
    /// point (where the likelihood is unbounded).
    T sigma_floor = T(1e-4);
    /// Truncate each component to [lo, hi] and renormalise it (the course's variant, on m
    /// scaled to [0, 1]).
    bool truncate = false;
    T lo = T(0);
    T hi = T(1);
};

/// Per-event log-density log p(m_i) of the mixture, shape (N,):
///   log p(m) = logsumexp_k [ log_softmax(logits)_k + log N(m; mu_k, sigma_k) - log Z_k ],
///   N(m; mu, s) = exp(-(m - mu)^2 / (2 s^2)) / (s sqrt(2 pi)),
///   Z_k = Phi((hi - mu_k)/s_k) - Phi((lo - mu_k)/s_k) with truncation (else Z_k = 1),
///   Phi(x) = (1 + erf(x / sqrt 2)) / 2   (Bishop 1994; Louppe et al., arXiv 1611.01046).
/// Inputs: logits, mu, raw_sigma of shape (N, K); m of shape (N,) or (N, 1). Z_k is floored at
/// 64 machine epsilons, the rounding noise of a difference of two erf values near 1, so a
/// component lying entirely outside [lo, hi] is under-weighted instead of divided by 0
/// (or by noise).
template <class T>
Var<T> mdn_log_prob(const Var<T>& logits, const Var<T>& mu, const Var<T>& raw_sigma, const Var<T>& m,
                    const MdnOptions<T>& opt = MdnOptions<T>{}) {
    const char* fn = "mdn_nll";
    detail::batch_size(logits, fn, "mixture logits");
    if (logits.shape().rank() != 2) throw shape_error(std::string(fn) + ": mixture logits must be (N, K), got " + logits.shape().str());
    if (mu.shape() != logits.shape() || raw_sigma.shape() != logits.shape())
        throw shape_error(std::string(fn) + ": logits " + logits.shape().str() + ", means " + mu.shape().str() + " and widths " +
                          raw_sigma.shape().str() + " must all be (N, K)");
    const std::size_t n = logits.shape()[0];
    if (m.size() != n || m.shape()[0] != n)
        throw shape_error(std::string(fn) + ": target of shape " + m.shape().str() + " for " + std::to_string(n) +
                          " events; expected (N,) or (N, 1)");
    if (!(opt.sigma_floor >= T(0)) || !std::isfinite(static_cast<double>(opt.sigma_floor)))
        throw value_error(std::string(fn) + ": sigma_floor must be finite and >= 0, got " + std::to_string(opt.sigma_floor));
    if (opt.truncate && !(opt.lo < opt.hi))
        throw value_error(std::string(fn) + ": truncation interval [" + std::to_string(opt.lo) + ", " + std::to_string(opt.hi) +
                          "] is empty");
    const Var<T> target = m.shape().rank() == 2 ? m : reshape(m, Shape{n, 1});
    const Var<T> sigma = add_scalar(softplus(raw_sigma), opt.sigma_floor);
    const Var<T> z = div(sub(target, mu), sigma);
    const T half_log_2pi = T(0.91893853320467274178);
    Var<T> lp = sub(sub(log_softmax(logits, 1), scale(square(z), T(0.5))), add_scalar(log(sigma), half_log_2pi));
    if (opt.truncate) {
        const T inv_sqrt2 = T(0.70710678118654752440);
        const Var<T> inv_s = rdiv_scalar(inv_sqrt2, sigma);
        const Var<T> ehi = erf(mul(add_scalar(neg(mu), opt.hi), inv_s));
        const Var<T> elo = erf(mul(add_scalar(neg(mu), opt.lo), inv_s));
        const Var<T> zk = clamp(scale(sub(ehi, elo), T(0.5)), T(64) * std::numeric_limits<T>::epsilon(), T(1));
        lp = sub(lp, log(zk));
    }
    return logsumexp(lp, 1);
}

/// Weighted mean negative log-likelihood -sum_i w_i log p(m_i) / sum_i w_i of the mixture (see
/// mdn_log_prob). In the pivot set-up the weights select background events (w = 0 for signal).
/// With m ~ N(0, 1) and a perfect fit, the value tends to ln sqrt(2 pi e) = 1.4189 nats.
template <class T>
Var<T> mdn_nll(const Var<T>& logits, const Var<T>& mu, const Var<T>& raw_sigma, const Var<T>& m, detail::weights_t<T> weights = nullptr,
               const MdnOptions<T>& opt = MdnOptions<T>{}) {
    return neg(detail::weighted_mean(mdn_log_prob(logits, mu, raw_sigma, m, opt), weights, "mdn_nll"));
}

} // namespace loss
} // namespace tapir
