#pragma once
/// Significance losses (Elwood & Kruecker, arXiv 1806.00322): soft signal and
/// background yields from sigmoid outputs, the s/sqrt(s+b) loss (s+b)/s^2, and the Asimov
/// significance Z_A with a relative background systematic as 1/Z_A or 1/Z_A^2, with the
/// pretraining scheme that makes the Asimov loss trainable.
///
/// The yields are per batch, so these losses want large batches (the reference uses 4096).

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>

#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../tensor/tensor.hpp"
#include "common.hpp"

namespace tapir {
namespace loss {

/// Soft yields of one batch.
template <class T>
struct SoftYields {
    Var<T> s;  ///< expected selected signal, S_exp * (soft efficiency of the signal events)
    Var<T> b;  ///< expected selected background, B_exp * (soft efficiency of the background events)
};

/// s = S_exp sum_i w_i yhat_i y_i / sum_i w_i y_i,  b = B_exp sum_i w_i yhat_i (1 - y_i) / sum_i w_i (1 - y_i)
/// (arXiv 1806.00322): yhat are sigmoid outputs (the soft selection), y the 0/1
/// labels (constants), w optional per-event weights, S_exp and B_exp the expected yields before
/// the selection (luminosity x cross-section x efficiency). Throws if the batch holds no signal
/// or no background weight.
template <class T>
SoftYields<T> soft_yields(const Var<T>& yhat, const Var<T>& labels, detail::scalar_t<T> s_exp, detail::scalar_t<T> b_exp,
                          detail::weights_t<T> weights = nullptr) {
    const char* fn = "soft_yields";
    const Var<T> p = detail::per_event_column(yhat, fn, "outputs");
    const std::size_t n = p.size();
    const Var<T> y = detail::same_layout(p, detach(labels), fn, "labels");
    detail::check_finite_param(fn, "S_exp", static_cast<double>(s_exp));
    detail::check_finite_param(fn, "B_exp", static_cast<double>(b_exp));
    Tensor<T> ws(Shape{n}), wb(Shape{n});
    const T* yv = y.data();
    const T* wv = weights ? detail::event_weights(*weights, n, fn).data() : nullptr;
    double sum_s = 0.0, sum_b = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        if (!(yv[i] == T(0) || yv[i] == T(1)))
            throw value_error(std::string(fn) + ": label of event " + std::to_string(i) + " is " + std::to_string(yv[i]) +
                              ", expected 0 or 1");
        const T w = wv ? wv[i] : T(1);
        ws[i] = yv[i] * w;
        wb[i] = (T(1) - yv[i]) * w;
        sum_s += static_cast<double>(ws[i]);
        sum_b += static_cast<double>(wb[i]);
    }
    if (!std::isfinite(sum_s) || !std::isfinite(sum_b)) throw value_error(std::string(fn) + ": the event weights contain NaN or infinity");
    if (sum_s == 0.0) throw value_error(std::string(fn) + ": the batch has no signal weight (no signal events?)");
    if (sum_b == 0.0) throw value_error(std::string(fn) + ": the batch has no background weight (no background events?)");
    Tape<T>& t = p.tape();
    const Var<T> s = scale(sum(mul(p, t.constant(ws))), static_cast<T>(static_cast<double>(s_exp) / sum_s));
    const Var<T> b = scale(sum(mul(p, t.constant(wb))), static_cast<T>(static_cast<double>(b_exp) / sum_b));
    return SoftYields<T>{s, b};
}

/// The s/sqrt(s+b) loss: (s + b) / (s^2 + eps), eps = 1e-7 as in the reference code
/// (github.com/aelwood/hepML), minimising it maximises s/sqrt(s+b).
template <class T>
Var<T> s_over_sqrt_sb_loss(const Var<T>& s, const Var<T>& b, detail::scalar_t<T> eps = T(1e-7)) {
    if (s.shape() != b.shape()) tapir::detail::throw_shape("s_over_sqrt_sb_loss: s vs b", s.shape(), b.shape());
    return div(add(s, b), add_scalar(square(s), eps));
}

namespace detail {

/// h(t) = g(t)/t with g(t) = (1+t) ln(1+t) - t, and h(0) = 0, for t >= 0 elementwise.
/// Below t = 0.1 the series h = sum_{j>=1} (-1)^(j+1) t^j / (j (j+1)) (15 terms: relative
/// error < 1e-17); above it the closed form, which loses at most a factor 20 to cancellation
/// there. Each branch is fed a safe input (0 or 1 where it is not selected), so both stay
/// finite and where() passes clean gradients: no 0/0 at t = 0.
template <class T>
Var<T> xlog1px_minus_x_over_x(const Var<T>& t) {
    Tape<T>& tape = t.tape();
    const std::size_t n = t.size();
    Tensor<T> m(t.shape());
    for (std::size_t i = 0; i < n; ++i) m[i] = std::abs(t[i]) < T(0.1) ? T(1) : T(0);
    const Var<T> mask = tape.constant(m);
    const Var<T> ts = where(mask, t, tape.full(t.shape(), T(0)));
    const Var<T> te = where(mask, tape.full(t.shape(), T(1)), t);
    constexpr int terms = 15;
    auto coef = [](int j) { return static_cast<T>((j % 2 == 1 ? 1.0 : -1.0) / (static_cast<double>(j) * (j + 1.0))); };
    Var<T> p = tape.full(t.shape(), coef(terms));
    for (int j = terms - 1; j >= 1; --j) p = add_scalar(mul(ts, p), coef(j));
    const Var<T> series = mul(ts, p);
    const Var<T> closed = add_scalar(div(mul(add_scalar(te, T(1)), log1p(te)), te), T(-1));
    return where(mask, series, closed);
}

template <class T>
void check_yields(const Var<T>& s, const Var<T>& b, double r, const char* fn) {
    if (s.shape() != b.shape()) tapir::detail::throw_shape((std::string(fn) + ": s vs b").c_str(), s.shape(), b.shape());
    if (!(r >= 0.0 && std::isfinite(r)))
        throw value_error(std::string(fn) + ": relative background systematic r must be finite and >= 0, got " + std::to_string(r));
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (!(s[i] >= T(0) && std::isfinite(static_cast<double>(s[i]))))
            throw value_error(std::string(fn) + ": signal yield s must be finite and >= 0, got " + std::to_string(s[i]));
        if (!(b[i] > T(0) && std::isfinite(static_cast<double>(b[i]))))
            throw value_error(std::string(fn) + ": background yield b must be finite and > 0, got " + std::to_string(b[i]));
    }
}

/// Z_A^2 = 2 s (h(s/b) - h(y)), y = r^2 s / (1 + r^2 b), floored at the smallest normal number.
template <class T>
Var<T> asimov_z2(const Var<T>& s, const Var<T>& b, T r, const char* fn) {
    check_yields(s, b, static_cast<double>(r), fn);
    const T r2 = r * r;
    const Var<T> x = div(s, b);
    const Var<T> y = div(scale(s, r2), add_scalar(scale(b, r2), T(1)));
    const Var<T> z2 = scale(mul(s, sub(xlog1px_minus_x_over_x(x), xlog1px_minus_x_over_x(y))), T(2));
    return clamp(z2, std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
}

} // namespace detail

/// Asimov discovery significance with a relative background systematic r (sigma_b = r b),
/// Cowan et al. (arXiv 1007.1727), in the form with sigma_b that arXiv 1806.00322 uses:
///   Z_A = sqrt(2[(s+b) ln((s+b)(b+sb^2)/(b^2+(s+b)sb^2)) - (b^2/sb^2) ln(1 + sb^2 s/(b(b+sb^2)))]),
/// evaluated as Z_A^2 = 2 s [h(s/b) - h(r^2 s/(1 + r^2 b))], h(t) = ((1+t) ln(1+t) - t)/t, which
/// never divides by r: r = 0 gives sqrt(2((s+b) ln(1+s/b) - s)) exactly, and value and
/// gradients are continuous as r -> 0. Z_A(14, 5, 0.3) = 3.6149635; Z_A(100, 1000, 0) = 3.11165.
/// Elementwise in s and b (same shape); s >= 0 and b > 0 are required (value_error otherwise).
template <class T>
Var<T> asimov_significance(const Var<T>& s, const Var<T>& b, detail::scalar_t<T> r = T(0)) {
    return sqrt(detail::asimov_z2(s, b, r, "asimov_significance"));
}

/// Asimov loss: 1/Z_A (the slides, default) or 1/Z_A^2 (squared = true, the reference code).
template <class T>
Var<T> asimov_loss(const Var<T>& s, const Var<T>& b, detail::scalar_t<T> r, bool squared = false) {
    const Var<T> z2 = detail::asimov_z2(s, b, r, "asimov_loss");
    return squared ? rdiv_scalar(T(1), z2) : rdiv_scalar(T(1), sqrt(z2));
}

/// Kaggle HiggsML approximate median significance, differentiable:
///   AMS = sqrt(2((s + b + b_reg) ln(1 + s/(b + b_reg)) - s)), b_reg = 10,
/// which is Z_A at r = 0 with b + b_reg in place of b. AMS(100, 1000) = 3.09669.
template <class T>
Var<T> ams(const Var<T>& s, const Var<T>& b, detail::scalar_t<T> b_reg = T(10)) {
    if (!(b_reg >= T(0)) || !std::isfinite(static_cast<double>(b_reg)))
        throw value_error("ams: b_reg must be finite and >= 0, got " + std::to_string(b_reg));
    return sqrt(detail::asimov_z2(s, add_scalar(b, b_reg), T(0), "ams"));
}

/// The training scheme of the paper: the first `pretrain_epochs` epochs (5 is typically
/// enough) use (s+b)/s^2, then the Asimov loss, whose gradients are tiny while s is small.
template <class T>
struct SignificanceSchedule {
    std::size_t pretrain_epochs = 5;
    T systematic = T(0.5);  ///< relative background systematic r of the Asimov loss
    bool squared = false;   ///< Asimov loss as 1/Z_A^2 instead of 1/Z_A
    T eps = T(1e-7);        ///< of the (s+b)/s^2 loss

    bool pretraining(std::size_t epoch) const noexcept { return epoch < pretrain_epochs; }
    /// The loss for a batch in `epoch` (counted from 0).
    Var<T> operator()(std::size_t epoch, const Var<T>& s, const Var<T>& b) const {
        return pretraining(epoch) ? s_over_sqrt_sb_loss(s, b, eps) : asimov_loss(s, b, systematic, squared);
    }
    Var<T> operator()(std::size_t epoch, const SoftYields<T>& y) const { return (*this)(epoch, y.s, y.b); }
};

} // namespace loss
} // namespace tapir
