#pragma once
/// Adam (with the epsilon convention of PyTorch or of Keras) and AdamW (decoupled weight decay).

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../simd/vec.hpp"
#include "kernels.hpp"
#include "optimizer.hpp"

namespace tapir {
namespace optim {

/// Where epsilon enters Adam's denominator. With t the step number (1, 2, ...) and
/// m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2 in both conventions:
///   pytorch (torch.optim.Adam, the default):
///       p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
///     epsilon is added to the bias-corrected sqrt(v_hat).
///   keras (TF2 / Keras 2 legacy Adam, "epsilon hat" of Kingma & Ba section 2):
///       lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t);   p -= lr_t * m / (sqrt(v) + eps)
///     epsilon is added to the uncorrected sqrt(v), so it acts as eps * sqrt(1 - b2^t) in
///     PyTorch's terms: larger early on. Keras' default epsilon is 1e-7 (PyTorch's 1e-8): pass it.
/// The two agree exactly when eps = 0.
enum class AdamEps { pytorch, keras };

inline const char* adam_eps_name(AdamEps e) noexcept { return e == AdamEps::keras ? "keras" : "pytorch"; }

namespace detail {
/// Shared by Adam and AdamW: moments, bias corrections, the fused kernel.
template <class T>
class AdamCore : public DecayingOptimizer<T> {
public:
    T beta1() const noexcept { return b1_; }
    T beta2() const noexcept { return b2_; }
    T eps() const noexcept { return eps_; }
    AdamEps eps_convention() const noexcept { return conv_; }

    void step() override {
        this->allocate_like_params(m_, T(0));
        this->allocate_like_params(v_, T(0));
        const double t = static_cast<double>(this->iterations_ + 1);
        const double b1 = static_cast<double>(b1_), b2 = static_cast<double>(b2_), lr = static_cast<double>(this->lr_);
        const double bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
        AdamArgs<T> a{};
        a.b1 = b1_;
        a.c1 = static_cast<T>(1.0 - b1);
        a.b2 = b2_;
        a.c2 = static_cast<T>(1.0 - b2);
        a.eps = eps_;
        if (conv_ == AdamEps::pytorch) {
            a.step = static_cast<T>(lr / bc1);
            a.sqrt_bc2 = static_cast<T>(std::sqrt(bc2));
        } else {
            a.step = static_cast<T>(lr * std::sqrt(bc2) / bc1);
            a.sqrt_bc2 = T(1);
        }
        const bool l2 = this->wd_ != T(0) && !decoupled_, dec = this->wd_ != T(0) && decoupled_;
        a.wd = this->wd_;
        a.decay = static_cast<T>(1.0 - lr * static_cast<double>(this->wd_));
        this->update_each(a, [&](std::size_t i, AdamArgs<T>& k) {
            k.m = m_[i].data();
            k.v = v_[i].data();
            if (l2) {
                simd::dispatch<adam_kernel<T, true, false>>(k);
            } else if (dec) {
                simd::dispatch<adam_kernel<T, false, true>>(k);
            } else {
                simd::dispatch<adam_kernel<T, false, false>>(k);
            }
        });
    }

    std::vector<std::pair<std::string, Tensor<T>*>> state() override {
        this->allocate_like_params(m_, T(0));
        this->allocate_like_params(v_, T(0));
        std::vector<std::pair<std::string, Tensor<T>*>> out;
        this->name_state(out, "exp_avg", m_);
        this->name_state(out, "exp_avg_sq", v_);
        return out;
    }

protected:
    AdamCore(std::vector<Parameter<T>*> params, T lr, T b1, T b2, T eps, T wd, AdamEps conv, bool decoupled, const char* kind)
        : DecayingOptimizer<T>(std::move(params), lr, wd, kind), b1_(b1), b2_(b2), eps_(eps), conv_(conv), decoupled_(decoupled) {
        check_hyper(kind, "beta1", static_cast<double>(b1), 0.0, false, 1.0, true);
        check_hyper(kind, "beta2", static_cast<double>(b2), 0.0, false, 1.0, true);
        check_hyper(kind, "eps", static_cast<double>(eps), 0.0, false, HUGE_VAL, true);
        check_hyper(kind, "weight_decay", static_cast<double>(wd), 0.0, false, HUGE_VAL, true);
    }

private:
    T b1_, b2_, eps_;
    AdamEps conv_;
    bool decoupled_;
    std::vector<Tensor<T>> m_, v_;
};
} // namespace detail

/// Adam (Kingma & Ba 2015). weight_decay adds weight_decay * p to the gradient before the
/// moments (L2, PyTorch's Adam); for decoupled decay use AdamW.
template <class T>
class Adam : public detail::AdamCore<T> {
public:
    explicit Adam(std::vector<Parameter<T>*> params, T lr = T(1e-3), T beta1 = T(0.9), T beta2 = T(0.999),
                  T eps = T(1e-8), AdamEps convention = AdamEps::pytorch, T weight_decay = T(0))
        : detail::AdamCore<T>(std::move(params), lr, beta1, beta2, eps, weight_decay, convention, false, "Adam") {}
};

/// AdamW (Loshchilov & Hutter 2019), PyTorch semantics: before the Adam update (with the
/// undecayed gradient) every parameter shrinks as p *= 1 - lr * weight_decay, with the current lr.
template <class T>
class AdamW : public detail::AdamCore<T> {
public:
    explicit AdamW(std::vector<Parameter<T>*> params, T lr = T(1e-3), T beta1 = T(0.9), T beta2 = T(0.999),
                   T eps = T(1e-8), T weight_decay = T(1e-2), AdamEps convention = AdamEps::pytorch)
        : detail::AdamCore<T>(std::move(params), lr, beta1, beta2, eps, weight_decay, convention, true, "AdamW") {}
};

} // namespace optim
} // namespace tapir
