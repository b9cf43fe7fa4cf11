#pragma once
/// RMSprop (Tieleman and Hinton 2012; the centered variant of Graves, arXiv 1308.0850), PyTorch
/// torch.optim.RMSprop semantics: optional momentum, centered variant, L2 weight decay.

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

/// Per step, for every parameter p with gradient g:
///   d = g + weight_decay * p
///   sq = alpha * sq + (1 - alpha) * d^2
///   centered:  ga = alpha * ga + (1 - alpha) * d;  avg = sqrt(sq - ga^2) + eps
///   otherwise: avg = sqrt(sq) + eps
///   momentum > 0: buf = momentum * buf + d / avg;  p -= lr * buf
///   otherwise:    p -= lr * d / avg
/// Epsilon is added outside the square root (PyTorch; Keras adds it the same way since TF 2).
/// State starts at zero. In the centered form sq - ga^2 is clamped at 0 against rounding.
template <class T>
class RMSprop : public detail::DecayingOptimizer<T> {
public:
    explicit RMSprop(std::vector<Parameter<T>*> params, T lr = T(1e-2), T alpha = T(0.99), T eps = T(1e-8),
                     T weight_decay = T(0), T momentum = T(0), bool centered = false)
        : detail::DecayingOptimizer<T>(std::move(params), lr, weight_decay, "RMSprop"), alpha_(alpha), eps_(eps), mu_(momentum),
          centered_(centered) {
        detail::check_hyper("RMSprop", "alpha", static_cast<double>(alpha), 0.0, false, 1.0, false);
        detail::check_hyper("RMSprop", "eps", static_cast<double>(eps), 0.0, false, HUGE_VAL, true);
        detail::check_hyper("RMSprop", "weight_decay", static_cast<double>(weight_decay), 0.0, false, HUGE_VAL, true);
        detail::check_hyper("RMSprop", "momentum", static_cast<double>(momentum), 0.0, false, 1.0, false);
    }

    T alpha() const noexcept { return alpha_; }
    T eps() const noexcept { return eps_; }
    T momentum() const noexcept { return mu_; }
    bool centered() const noexcept { return centered_; }

    void step() override {
        allocate();
        const bool mom = mu_ != T(0);
        detail::RmspropArgs<T> a{};
        a.lr = this->lr_;
        a.alpha = alpha_;
        a.c_alpha = static_cast<T>(1.0 - static_cast<double>(alpha_));
        a.eps = eps_;
        a.wd = this->wd_;
        a.mu = mu_;
        this->update_each(a, [&](std::size_t i, detail::RmspropArgs<T>& k) {
            k.sq = sq_[i].data();
            k.gavg = centered_ ? gavg_[i].data() : nullptr;
            k.buf = mom ? buf_[i].data() : nullptr;
            run(k, mom);
        });
    }

    std::vector<std::pair<std::string, Tensor<T>*>> state() override {
        allocate();
        std::vector<std::pair<std::string, Tensor<T>*>> out;
        this->name_state(out, "square_avg", sq_);
        if (centered_) this->name_state(out, "grad_avg", gavg_);
        if (mu_ != T(0)) this->name_state(out, "momentum_buffer", buf_);
        return out;
    }

private:
    void allocate() {
        this->allocate_like_params(sq_, T(0));
        if (centered_) this->allocate_like_params(gavg_, T(0));
        if (mu_ != T(0)) this->allocate_like_params(buf_, T(0));
    }
    template <bool W, bool C, bool M>
    static void go(const detail::RmspropArgs<T>& a) {
        simd::dispatch<detail::rmsprop_kernel<T, W, C, M>>(a);
    }
    template <bool W>
    void run_wd(const detail::RmspropArgs<T>& a, bool mom) const {
        if (centered_) return mom ? go<W, true, true>(a) : go<W, true, false>(a);
        return mom ? go<W, false, true>(a) : go<W, false, false>(a);
    }
    void run(const detail::RmspropArgs<T>& a, bool mom) const {
        if (this->wd_ != T(0)) return run_wd<true>(a, mom);
        return run_wd<false>(a, mom);
    }

    T alpha_, eps_, mu_;
    bool centered_;
    std::vector<Tensor<T>> sq_, gavg_, buf_;
};

} // namespace optim
} // namespace tapir
