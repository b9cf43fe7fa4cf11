#pragma once
/// Weight initialisers: Glorot/Xavier and He/Kaiming (uniform, normal), zeros, ones, constant.
///
/// Every random initialiser draws from a tapir::Rng, so a seed fixes the weights on every
/// platform. Fans follow the Keras kernel layout (in, out): fan_in = shape[0], fan_out =
/// shape[1]. The normal variants use a plain (untruncated) normal, as PyTorch does.

#include <cmath>
#include <cstddef>
#include <string>

#include "../random.hpp"
#include "../error.hpp"
#include "../tensor/tensor.hpp"

namespace tapir {
namespace nn {

struct Fans {
    double in = 1.0;
    double out = 1.0;
};

/// Fans of a weight tensor: rank 2 (in, out); rank 1 and 0 count the elements both ways; a higher
/// rank (kernel..., in, out) multiplies both by the receptive field, as Keras does.
inline Fans compute_fans(const Shape& s) {
    const std::size_t r = s.rank();
    if (r == 0) return Fans{1.0, 1.0};
    if (r == 1) return Fans{static_cast<double>(s[0]), static_cast<double>(s[0])};
    double receptive = 1.0;
    for (std::size_t i = 0; i + 2 < r; ++i) receptive *= static_cast<double>(s[i]);
    return Fans{static_cast<double>(s[r - 2]) * receptive, static_cast<double>(s[r - 1]) * receptive};
}

namespace init {

template <class T>
void zeros(Tensor<T>& w) { w.fill(T(0)); }
template <class T>
void ones(Tensor<T>& w) { w.fill(T(1)); }
template <class T>
void constant(Tensor<T>& w, T value) { w.fill(value); }

/// Uniform in [lo, hi).
template <class T>
void uniform(Tensor<T>& w, Rng& rng, double lo, double hi) {
    if (!(lo <= hi)) throw value_error("init::uniform: lower bound " + std::to_string(lo) + " exceeds upper bound " + std::to_string(hi));
    for (auto& v : w) v = static_cast<T>(rng.uniform(lo, hi));
}
template <class T>
void normal(Tensor<T>& w, Rng& rng, double mean, double stddev) {
    if (!(stddev >= 0.0)) throw value_error("init::normal: standard deviation must be non-negative, got " + std::to_string(stddev));
    for (auto& v : w) v = static_cast<T>(rng.normal(mean, stddev));
}

namespace detail {
inline double checked_fan(double fan, const char* who, const Shape& s) {
    if (!(fan > 0.0)) throw value_error(std::string(who) + ": weight of shape " + s.str() + " has a zero fan");
    return fan;
}
} // namespace detail

/// U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)).
template <class T>
void glorot_uniform(Tensor<T>& w, Rng& rng, double gain = 1.0) {
    if (w.empty()) return;
    const Fans f = compute_fans(w.shape());
    const double a = gain * std::sqrt(6.0 / detail::checked_fan(f.in + f.out, "init::glorot_uniform", w.shape()));
    uniform(w, rng, -a, a);
}
/// N(0, s^2) with s = gain * sqrt(2 / (fan_in + fan_out)).
template <class T>
void glorot_normal(Tensor<T>& w, Rng& rng, double gain = 1.0) {
    if (w.empty()) return;
    const Fans f = compute_fans(w.shape());
    normal(w, rng, 0.0, gain * std::sqrt(2.0 / detail::checked_fan(f.in + f.out, "init::glorot_normal", w.shape())));
}
/// U(-a, a) with a = sqrt(6 / fan_in): variance 2 / fan_in, for ReLU networks.
template <class T>
void he_uniform(Tensor<T>& w, Rng& rng) {
    if (w.empty()) return;
    const Fans f = compute_fans(w.shape());
    const double a = std::sqrt(6.0 / detail::checked_fan(f.in, "init::he_uniform", w.shape()));
    uniform(w, rng, -a, a);
}
/// N(0, s^2) with s = sqrt(2 / fan_in).
template <class T>
void he_normal(Tensor<T>& w, Rng& rng) {
    if (w.empty()) return;
    const Fans f = compute_fans(w.shape());
    normal(w, rng, 0.0, std::sqrt(2.0 / detail::checked_fan(f.in, "init::he_normal", w.shape())));
}

template <class T>
void xavier_uniform(Tensor<T>& w, Rng& rng, double gain = 1.0) { glorot_uniform(w, rng, gain); }
template <class T>
void xavier_normal(Tensor<T>& w, Rng& rng, double gain = 1.0) { glorot_normal(w, rng, gain); }
template <class T>
void kaiming_uniform(Tensor<T>& w, Rng& rng) { he_uniform(w, rng); }
template <class T>
void kaiming_normal(Tensor<T>& w, Rng& rng) { he_normal(w, rng); }

} // namespace init

/// An initialiser as a value, for layer options: Init::he_normal(), Init::constant(0.1), ...
struct Init {
    enum class Kind { zeros, ones, constant, glorot_uniform, glorot_normal, he_uniform, he_normal };
    Kind kind = Kind::glorot_uniform;
    double value = 0.0;  ///< the constant, or the gain of the Glorot variants

    static Init zeros() { return Init{Kind::zeros, 0.0}; }
    static Init ones() { return Init{Kind::ones, 0.0}; }
    static Init constant(double v) { return Init{Kind::constant, v}; }
    static Init glorot_uniform(double gain = 1.0) { return Init{Kind::glorot_uniform, gain}; }
    static Init glorot_normal(double gain = 1.0) { return Init{Kind::glorot_normal, gain}; }
    static Init xavier_uniform(double gain = 1.0) { return glorot_uniform(gain); }
    static Init xavier_normal(double gain = 1.0) { return glorot_normal(gain); }
    static Init he_uniform() { return Init{Kind::he_uniform, 0.0}; }
    static Init he_normal() { return Init{Kind::he_normal, 0.0}; }

    template <class T>
    void apply(Tensor<T>& w, Rng& rng) const {
        switch (kind) {
        case Kind::zeros: init::zeros(w); break;
        case Kind::ones: init::ones(w); break;
        case Kind::constant: init::constant(w, static_cast<T>(value)); break;
        case Kind::glorot_uniform: init::glorot_uniform(w, rng, value); break;
        case Kind::glorot_normal: init::glorot_normal(w, rng, value); break;
        case Kind::he_uniform: init::he_uniform(w, rng); break;
        case Kind::he_normal: init::he_normal(w, rng); break;
        }
    }

    std::string name() const {
        switch (kind) {
        case Kind::zeros: return "zeros";
        case Kind::ones: return "ones";
        case Kind::constant: return "constant";
        case Kind::glorot_uniform: return "glorot_uniform";
        case Kind::glorot_normal: return "glorot_normal";
        case Kind::he_uniform: return "he_uniform";
        case Kind::he_normal: return "he_normal";
        }
        return "?";
    }
};

} // namespace nn
} // namespace tapir
