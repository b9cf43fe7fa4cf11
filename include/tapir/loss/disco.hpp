#pragma once
/// Distance correlation decorrelation (DisCo: Kasieczka & Shih, arXiv 2001.05310).
///
/// dCorr^2 is zero exactly when two variables are independent, so the penalty
/// lambda dCorr^2(m, score) on background events keeps a classifier from sculpting the mass.
/// O(N^2) per batch in time and memory: the N x N distance matrices are built with
/// broadcasting, (N, 1) - (1, N).

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../tensor/tensor.hpp"
#include "classification.hpp"
#include "common.hpp"

namespace tapir {
namespace loss {
namespace detail {

/// Double-centred distance matrix A_ij = a_ij - abar_i - abar_j + (1/N) sum_i abar_i w_i with
/// a_ij = |x_i - x_j| and abar_i = (1/N) sum_j a_ij w_j (weights normalised to sum N).
/// |x_i - x_i| = 0 has gradient 0 (sign(0) = 0), which is its correct one-sided average.
template <class T>
Var<T> dcenter(const Var<T>& x, std::size_t n, const Var<T>* wr, const Var<T>* wc) {
    const Var<T> a = abs(sub(reshape(x, Shape{n, 1}), reshape(x, Shape{1, n})));
    const T inv_n = T(1) / static_cast<T>(n);
    const Var<T> abar = scale(sum(wr ? mul(a, *wr) : a, 1, true), inv_n);  // (n, 1)
    const Var<T> grand = scale(sum(wc ? mul(abar, *wc) : abar), inv_n);    // ()
    return add(sub(sub(a, abar), reshape(abar, Shape{1, n})), grand);
}

/// dCov^2(A, B) = (1/N^2) sum_ij w_i w_j A_ij B_ij.
template <class T>
Var<T> dcov2(const Var<T>& a, const Var<T>& b, std::size_t n, const Var<T>* wm) {
    const Var<T> ab = mul(a, b);
    return scale(sum(wm ? mul(ab, *wm) : ab), T(1) / (static_cast<T>(n) * static_cast<T>(n)));
}

} // namespace detail

/// Squared distance correlation of two per-event variables (Szekely, Rizzo, Bakirov, Ann. Statist. 35 (2007) 2769):
///   dCorr^2(x, y) = dCov^2(x, y) / sqrt(dCov^2(x, x) dCov^2(y, y)),
/// weighted as in the DisCo reference code: weights normalised so that sum w = N. x and y hold
/// one value per event ((N,) or (N, 1)); N >= 2. dCorr^2(x, x) = 1; x = [-2..2], y = x^2 gives
/// 0.266177. The product under the square root is floored at the smallest normal number, so a
/// constant variable gives 0 rather than NaN (negative weights can make dCov^2 negative: the
/// same floor applies).
template <class T>
Var<T> distance_correlation_sq(const Var<T>& x, const Var<T>& y, detail::weights_t<T> weights = nullptr) {
    const char* fn = "distance_correlation_sq";
    const Var<T> xv = detail::per_event_column(x, fn, "x");
    const Var<T> yv = detail::per_event_column(y, fn, "y");
    const std::size_t n = xv.size();
    if (yv.size() != n)
        throw shape_error(std::string(fn) + ": x of shape " + x.shape().str() + " and y of shape " + y.shape().str() +
                          " differ in the number of events");
    if (n < 2) throw shape_error(std::string(fn) + ": needs at least 2 events, got " + std::to_string(n));
    Tape<T>& t = xv.tape();
    Var<T> wr, wc, wm;
    if (weights) {
        const Var<T> w = detail::event_weights(*weights, n, fn);
        const double total = detail::weight_total(w, fn);
        Tensor<T> wn(Shape{n}), wmat(Shape{n, n});
        for (std::size_t i = 0; i < n; ++i) wn[i] = static_cast<T>(static_cast<double>(w[i]) * static_cast<double>(n) / total);
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j) wmat(i, j) = wn[i] * wn[j];
        wr = reshape(t.constant(wn), Shape{1, n});
        wc = reshape(wr, Shape{n, 1});
        wm = t.constant(wmat);
    }
    const Var<T>* pr = weights ? &wr : nullptr;
    const Var<T>* pc = weights ? &wc : nullptr;
    const Var<T>* pm = weights ? &wm : nullptr;
    const Var<T> a = detail::dcenter(xv, n, pr, pc);
    const Var<T> b = detail::dcenter(yv, n, pr, pc);
    const Var<T> xy = detail::dcov2(a, b, n, pm);
    const Var<T> xx = detail::dcov2(a, a, n, pm);
    const Var<T> yy = detail::dcov2(b, b, n, pm);
    return div(xy, sqrt(clamp(mul(xx, yy), std::numeric_limits<T>::min(), std::numeric_limits<T>::max())));
}

/// DisCo penalty lambda dCorr^2(m, score) over the background events (label 0) of the batch;
/// `labels` are 0/1 constants, `weights` optional per-event weights of the whole batch.
/// Needs at least two background events.
template <class T>
Var<T> disco_penalty(const Var<T>& mass, const Var<T>& score, const Var<T>& labels, detail::scalar_t<T> lambda,
                     detail::weights_t<T> weights = nullptr) {
    const char* fn = "disco_penalty";
    const Var<T> m = detail::per_event_column(mass, fn, "mass");
    const Var<T> f = detail::per_event_column(score, fn, "score");
    const std::size_t n = m.size();
    if (f.size() != n || labels.size() != n)
        throw shape_error(std::string(fn) + ": mass " + mass.shape().str() + ", score " + score.shape().str() + " and labels " +
                          labels.shape().str() + " must hold the same number of events");
    detail::check_finite_param(fn, "lambda", static_cast<double>(lambda));
    std::vector<std::size_t> bkg;
    for (std::size_t i = 0; i < n; ++i) {
        if (!(labels[i] == T(0) || labels[i] == T(1)))
            throw value_error(std::string(fn) + ": label of event " + std::to_string(i) + " is " + std::to_string(labels[i]) +
                              ", expected 0 or 1");
        if (labels[i] == T(0)) bkg.push_back(i);
    }
    if (bkg.size() < 2)
        throw value_error(std::string(fn) + ": the batch has " + std::to_string(bkg.size()) + " background events; at least 2 are needed");
    const Var<T> mb = gather_rows(m, bkg);
    const Var<T> fb = gather_rows(f, bkg);
    if (!weights) return scale(distance_correlation_sq(mb, fb), lambda);
    const Var<T> w = detail::event_weights(*weights, n, fn);
    const Var<T> wb = gather_rows(w, bkg);
    return scale(distance_correlation_sq(mb, fb, &wb), lambda);
}

/// The DisCo training loss: BCE(logits, labels) + lambda dCorr^2(m, sigmoid(logits)) on background.
template <class T>
Var<T> disco_loss(const Var<T>& logits, const Var<T>& labels, const Var<T>& mass, detail::scalar_t<T> lambda,
                  detail::weights_t<T> weights = nullptr) {
    return add(binary_cross_entropy_with_logits(logits, labels, weights), disco_penalty(mass, sigmoid(logits), labels, lambda, weights));
}

} // namespace loss
} // namespace tapir
