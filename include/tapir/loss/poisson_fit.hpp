#pragma once
/// Binned Poisson likelihood fits on the tape (Baker and Cousins, Nucl. Instrum. Meth. 221 (1984)
/// 437; Cowan et al., arXiv 1007.1727, for the significance): background n0 exp(a x + b x^2), signal plus background with a Gaussian,
/// a damped Newton minimiser of the negative log-likelihood whose gradient and Hessian come
/// from the tape (the Hessian through double backprop), parameter uncertainties from the
/// inverse Hessian, and the local significance sqrt(2 (ln L_sb - ln L_b)).
///
/// The expected count of bin i is the model at its centre x_i (no integration over the bin):
/// n0 and n1 are then counts per bin. Centre and scale x (e.g. t = (m - 130 GeV) / 25 GeV) so that
/// a and b are of order one: a fit in raw GeV is badly conditioned.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../autodiff/backward.hpp"
#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../random.hpp"
#include "../error.hpp"
#include "../tensor/tensor.hpp"

namespace tapir {
namespace loss {

// ---- Poisson sampling ----------------------------------------------------------------------------

/// A Poisson variate from tapir::Rng (portable, unlike std::poisson_distribution). Mean below 10:
/// Knuth's multiplication of uniforms (exact, O(mean) uniforms). Mean 10 and above: Hormann's
/// transformed rejection with squeeze, PTRS (W. Hormann, "The transformed rejection method for
/// generating Poisson random variables", Insurance: Math. Econ. 12 (1993) 39), exact, O(1);
/// the same algorithm numpy uses.
inline std::uint64_t poisson_sample(Rng& rng, double mean) {
    if (!(mean >= 0.0) || !std::isfinite(mean))
        throw value_error("poisson_sample: mean must be finite and >= 0, got " + std::to_string(mean));
    if (mean == 0.0) return 0;
    if (mean < 10.0) {
        const double limit = std::exp(-mean);
        double p = rng.uniform();
        std::uint64_t k = 0;
        while (p > limit) {
            ++k;
            p *= rng.uniform();
        }
        return k;
    }
    const double slam = std::sqrt(mean), loglam = std::log(mean);
    const double b = 0.931 + 2.53 * slam;
    const double a = -0.059 + 0.02483 * b;
    const double invalpha = 1.1239 + 1.1328 / (b - 3.4);
    const double vr = 0.9277 - 3.6224 / (b - 2.0);
    for (;;) {
        const double u = rng.uniform() - 0.5;
        const double v = rng.uniform();
        const double us = 0.5 - std::abs(u);
        const double k = std::floor((2.0 * a / us + b) * u + mean + 0.43);
        if (us >= 0.07 && v <= vr) return static_cast<std::uint64_t>(k);
        if (k < 0.0 || (us < 0.013 && v > us)) continue;
        if (std::log(v) + std::log(invalpha) - std::log(a / (us * us) + b) <= -mean + k * loglam - std::lgamma(k + 1.0))
            return static_cast<std::uint64_t>(k);
    }
}

// ---- models --------------------------------------------------------------------------------------

namespace detail {
template <class T>
Var<T> param_at(const Var<T>& p, std::size_t i) {
    return slice(p, 0, i, 1);  // shape (1,): broadcasts against the bins
}
template <class T>
void check_model_args(const Var<T>& p, const Var<T>& x, std::size_t np, const char* fn) {
    if (p.shape() != Shape{np}) throw shape_error(std::string(fn) + ": expects " + std::to_string(np) + " parameters, got shape " + p.shape().str());
    if (x.shape().rank() != 1) throw shape_error(std::string(fn) + ": bin centres must be a vector (B,), got " + x.shape().str());
}
} // namespace detail

/// Background f(x) = n0 exp(a x + b x^2), parameters p = [n0, a, b], bin centres x (B,).
template <class T>
Var<T> exp_poly2_background(const Var<T>& p, const Var<T>& x) {
    detail::check_model_args(p, x, 3, "exp_poly2_background");
    const Var<T> expo = add(mul(detail::param_at(p, 1), x), mul(detail::param_at(p, 2), square(x)));
    return mul(detail::param_at(p, 0), exp(expo));
}

/// Signal plus background g(x) = n0 exp(a x + b x^2) + n1 exp(-(x - mu)^2 / (2 sigma^2)),
/// p = [n0, a, b, n1, mu, sigma]. Depends on sigma^2 only: fit with a lower bound 0 on sigma
/// (PoissonFitOptions::lower), or a step may land on the mirror minimum -sigma.
template <class T>
Var<T> exp_poly2_plus_gaussian(const Var<T>& p, const Var<T>& x) {
    detail::check_model_args(p, x, 6, "exp_poly2_plus_gaussian");
    const Var<T> bkg = exp_poly2_background(slice(p, 0, 0, 3), x);
    const Var<T> d = div(sub(x, detail::param_at(p, 4)), detail::param_at(p, 5));
    return add(bkg, mul(detail::param_at(p, 3), exp(scale(square(d), T(-0.5)))));
}

/// Poisson negative log-likelihood -ln L = sum_i [lambda_i - k_i ln lambda_i + ln k_i!] of counts
/// k (constants; may be non-integer, e.g. an Asimov data set, through lgamma) for expectations
/// lambda > 0.
template <class T>
Var<T> poisson_nll(const Var<T>& lambda, const Var<T>& counts) {
    if (lambda.shape() != counts.shape()) tapir::detail::throw_shape("poisson_nll: expectations vs counts", lambda.shape(), counts.shape());
    double c = 0.0;
    for (std::size_t i = 0; i < counts.size(); ++i) {
        const double k = static_cast<double>(counts[i]);
        if (!(k >= 0.0) || !std::isfinite(k))
            throw value_error("poisson_nll: count of bin " + std::to_string(i) + " must be finite and >= 0, got " + std::to_string(k));
        c += std::lgamma(k + 1.0);
    }
    const Var<T> k = detach(counts);
    return add_scalar(sum(sub(lambda, mul(k, log(lambda)))), static_cast<T>(c));
}

// ---- the fit ----------------------------------------------------------------------------------

struct PoissonFitOptions {
    std::size_t max_iterations = 200;
    /// Converged when the Newton decrement g^T H^-1 g (the expected drop of 2 x NLL) is below this.
    double tolerance = 1e-10;
    /// Parameters held at their initial value (empty: all free).
    std::vector<bool> fixed;
    /// Open bounds lower < p < upper (empty: none; use +-HUGE_VAL for an unbounded entry). Steps
    /// that leave them are rejected, e.g. sigma > 0 for the Gaussian, whose likelihood depends on
    /// sigma^2 only and would otherwise let a Newton step jump to the mirror minimum at -sigma.
    std::vector<double> lower, upper;
};

struct PoissonFitResult {
    std::vector<double> params;
    std::vector<double> errors;      ///< sqrt of the covariance diagonal (0 for fixed parameters)
    std::vector<double> covariance;  ///< P x P row-major inverse Hessian of the NLL (0 rows for fixed)
    double nll = 0.0;                ///< -ln L at the minimum, with the ln k! terms
    double log_likelihood = 0.0;     ///< ln L = -nll
    std::size_t iterations = 0;
    bool converged = false;
    double cov(std::size_t i, std::size_t j) const { return covariance[i * params.size() + j]; }
};

namespace detail {

/// Cholesky factorisation of a symmetric n x n matrix in place (lower triangle); false unless
/// positive definite.
inline bool cholesky(std::vector<double>& a, std::size_t n) {
    for (std::size_t j = 0; j < n; ++j) {
        double d = a[j * n + j];
        for (std::size_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
        if (!(d > 0.0) || !std::isfinite(d)) return false;
        d = std::sqrt(d);
        a[j * n + j] = d;
        for (std::size_t i = j + 1; i < n; ++i) {
            double s = a[i * n + j];
            for (std::size_t k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = s / d;
        }
    }
    return true;
}
/// Solves L L^T x = b with the factor from cholesky().
inline std::vector<double> cholesky_solve(const std::vector<double>& l, std::size_t n, std::vector<double> b) {
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t k = 0; k < i; ++k) b[i] -= l[i * n + k] * b[k];
        b[i] /= l[i * n + i];
    }
    for (std::size_t i = n; i-- > 0;) {
        for (std::size_t k = i + 1; k < n; ++k) b[i] -= l[k * n + i] * b[k];
        b[i] /= l[i * n + i];
    }
    return b;
}

/// T is double; a template parameter so that the tape code below is compiled only where a fit is
/// made, not in every file that includes tapir.hpp.
template <class Model, class T = double>
struct PoissonFitEval {
    Model& model;
    const Tensor<T>& x;
    const Tensor<T>& k;
    Tape<T> tape;

    /// The NLL, or +inf where the model is not positive (outside the physical region).
    double value(const std::vector<double>& p) {
        NoGradGuard<T> guard(tape);
        tape.clear();
        const Var<T> pv = tape.constant(Tensor<T>(Shape{p.size()}, p));
        const Var<T> lam = model(pv, tape.view(x));
        for (std::size_t i = 0; i < lam.size(); ++i)
            if (!(lam[i] > 0.0) || !std::isfinite(lam[i])) return HUGE_VAL;
        const double v = poisson_nll(lam, tape.view(k)).item();
        return std::isfinite(v) ? v : HUGE_VAL;
    }
    /// NLL, gradient and Hessian (rows by differentiating each gradient component again).
    double derivatives(const std::vector<double>& p, std::vector<double>& g, std::vector<double>& h) {
        const std::size_t np = p.size();
        tape.clear();
        const Var<T> pv = tape.variable(Tensor<T>(Shape{np}, p));
        const Var<T> lam = model(pv, tape.view(x));
        if (lam.shape() != x.shape())
            throw shape_error("poisson_fit: the model returned shape " + lam.shape().str() + " for bin centres of shape " + x.shape().str());
        const Var<T> nll = poisson_nll(lam, tape.view(k));
        const Var<T> gv = grad(nll, pv, /*create_graph=*/true);
        g.assign(np, 0.0);
        h.assign(np * np, 0.0);
        for (std::size_t i = 0; i < np; ++i) g[i] = gv[i];
        if (gv.requires_grad()) {
            for (std::size_t i = 0; i < np; ++i) {
                const Var<T> row = grad(slice(gv, 0, i, 1), pv, false);
                for (std::size_t j = 0; j < np; ++j) h[i * np + j] = row[j];
            }
        }
        for (std::size_t i = 0; i < np; ++i)  // symmetrise rounding
            for (std::size_t j = 0; j < i; ++j) h[i * np + j] = h[j * np + i] = 0.5 * (h[i * np + j] + h[j * np + i]);
        return nll.item();
    }
};

} // namespace detail

/// Maximum-likelihood fit of a binned Poisson model: minimises -ln L over the parameters with a
/// Levenberg-damped Newton method, gradient and Hessian from the tape (double precision).
/// `model(params (P,), x (B,)) -> lambda (B,)` is any callable built from tape ops, e.g.
/// exp_poly2_background or exp_poly2_plus_gaussian; x are the bin centres, counts the observed
/// entries, init the starting point (the fit is local: start near the answer, e.g. n0 from the
/// data, the signal mean and width at the hypothesis). The covariance is the inverse Hessian at
/// the minimum (the Cramer-Rao / Wald approximation).
template <class Model>
PoissonFitResult poisson_fit(Model&& model, const std::vector<double>& x, const std::vector<double>& counts, std::vector<double> init,
                             const PoissonFitOptions& opt = PoissonFitOptions{}) {
    const char* fn = "poisson_fit";
    if (x.size() != counts.size())
        throw shape_error(std::string(fn) + ": " + std::to_string(x.size()) + " bin centres but " + std::to_string(counts.size()) + " counts");
    if (x.empty()) throw shape_error(std::string(fn) + ": no bins");
    const std::size_t np = init.size();
    if (np == 0) throw value_error(std::string(fn) + ": no parameters");
    if (!opt.fixed.empty() && opt.fixed.size() != np)
        throw value_error(std::string(fn) + ": 'fixed' has " + std::to_string(opt.fixed.size()) + " flags for " + std::to_string(np) + " parameters");
    for (const auto* bound : {&opt.lower, &opt.upper})
        if (!bound->empty() && bound->size() != np)
            throw value_error(std::string(fn) + ": " + std::to_string(bound->size()) + " bounds for " + std::to_string(np) + " parameters");
    auto inside = [&opt](const std::vector<double>& q) {
        for (std::size_t i = 0; i < q.size(); ++i) {
            if (!opt.lower.empty() && !(q[i] > opt.lower[i])) return false;
            if (!opt.upper.empty() && !(q[i] < opt.upper[i])) return false;
        }
        return true;
    };
    if (!inside(init)) throw value_error(std::string(fn) + ": the starting point is outside the parameter bounds");
    std::vector<std::size_t> freeidx;
    for (std::size_t i = 0; i < np; ++i)
        if (opt.fixed.empty() || !opt.fixed[i]) freeidx.push_back(i);
    const std::size_t nf = freeidx.size();

    const Tensor<double> xt(Shape{x.size()}, x), kt(Shape{counts.size()}, counts);
    detail::PoissonFitEval<typename std::remove_reference<Model>::type> ev{model, xt, kt, {}};
    PoissonFitResult res;
    std::vector<double> p = std::move(init);
    double f = ev.value(p);
    if (!std::isfinite(f)) throw value_error(std::string(fn) + ": the model is not positive and finite at the starting point");

    std::vector<double> g, h, hf(nf * nf), gf(nf);
    double damping = 1e-3;  // relative to the Hessian diagonal
    for (res.iterations = 0; res.iterations < opt.max_iterations; ++res.iterations) {
        f = ev.derivatives(p, g, h);
        for (std::size_t a = 0; a < nf; ++a) {
            gf[a] = g[freeidx[a]];
            for (std::size_t b = 0; b < nf; ++b) hf[a * nf + b] = h[freeidx[a] * np + freeidx[b]];
        }
        // Convergence: the undamped Newton decrement, where the Hessian is positive definite;
        // the last Newton step is still taken (quadratic convergence makes it nearly exact).
        std::vector<double> l = hf;
        double dec = HUGE_VAL;
        if (detail::cholesky(l, nf)) {
            const std::vector<double> step = detail::cholesky_solve(l, nf, gf);
            dec = 0.0;
            for (std::size_t a = 0; a < nf; ++a) dec += gf[a] * step[a];
            if (dec < opt.tolerance) {
                std::vector<double> trial = p;
                for (std::size_t a = 0; a < nf; ++a) trial[freeidx[a]] -= step[a];
                if (inside(trial) && ev.value(trial) <= f) p = std::move(trial);
                res.converged = true;
                ++res.iterations;
                break;
            }
        }
        bool accepted = false;
        while (damping < 1e12) {
            l = hf;
            for (std::size_t a = 0; a < nf; ++a) l[a * nf + a] += damping * (std::abs(hf[a * nf + a]) + 1e-12);
            if (detail::cholesky(l, nf)) {
                const std::vector<double> step = detail::cholesky_solve(l, nf, gf);
                std::vector<double> trial = p;
                for (std::size_t a = 0; a < nf; ++a) trial[freeidx[a]] -= step[a];
                const double ft = inside(trial) ? ev.value(trial) : HUGE_VAL;
                if (ft <= f) {
                    p = std::move(trial);
                    damping = damping * 0.1 > 1e-9 ? damping * 0.1 : 1e-9;
                    accepted = true;
                    break;
                }
            }
            damping *= 10.0;
        }
        if (!accepted) {  // no descent step left: at the minimum up to rounding, or stuck
            res.converged = dec < 1e3 * opt.tolerance;
            break;
        }
    }
    f = ev.derivatives(p, g, h);
    res.params = p;
    res.nll = f;
    res.log_likelihood = -f;
    res.errors.assign(np, 0.0);
    res.covariance.assign(np * np, 0.0);
    for (std::size_t a = 0; a < nf; ++a)
        for (std::size_t b = 0; b < nf; ++b) hf[a * nf + b] = h[freeidx[a] * np + freeidx[b]];
    std::vector<double> l = hf;
    if (detail::cholesky(l, nf)) {
        for (std::size_t b = 0; b < nf; ++b) {
            std::vector<double> e(nf, 0.0);
            e[b] = 1.0;
            const std::vector<double> col = detail::cholesky_solve(l, nf, e);
            for (std::size_t a = 0; a < nf; ++a) res.covariance[freeidx[a] * np + freeidx[b]] = col[a];
        }
        for (std::size_t a = 0; a < nf; ++a) res.errors[freeidx[a]] = std::sqrt(res.cov(freeidx[a], freeidx[a]));
    } else {
        res.converged = false;  // not a minimum: no uncertainties
        for (std::size_t a = 0; a < nf; ++a) res.errors[freeidx[a]] = std::numeric_limits<double>::quiet_NaN();
    }
    return res;
}

/// Local significance of a signal-plus-background fit against the background-only fit,
/// Z = sqrt(2 (ln L_sb - ln L_b)) (Wilks, one extra signal strength; 0 if L_sb < L_b).
inline double local_significance(double log_likelihood_sb, double log_likelihood_b) {
    const double q = 2.0 * (log_likelihood_sb - log_likelihood_b);
    return q > 0.0 ? std::sqrt(q) : 0.0;
}
inline double local_significance(const PoissonFitResult& sb, const PoissonFitResult& b) {
    return local_significance(sb.log_likelihood, b.log_likelihood);
}

} // namespace loss
} // namespace tapir
