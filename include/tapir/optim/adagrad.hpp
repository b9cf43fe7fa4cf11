#pragma once
/// Adagrad (Duchi, Hazan & Singer 2011), PyTorch torch.optim.Adagrad semantics.

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

/// Per step t = 1, 2, ... and every parameter p with gradient g:
///   clr = lr / (1 + (t - 1) * lr_decay)
///   d = g + weight_decay * p
///   sum += d^2                      (sum starts at initial_accumulator_value)
///   p -= clr * d / (sqrt(sum) + eps)
template <class T>
class Adagrad : public detail::DecayingOptimizer<T> {
public:
    explicit Adagrad(std::vector<Parameter<T>*> params, T lr = T(1e-2), T lr_decay = T(0), T weight_decay = T(0),
                     T initial_accumulator_value = T(0), T eps = T(1e-10))
        : detail::DecayingOptimizer<T>(std::move(params), lr, weight_decay, "Adagrad"), lr_decay_(lr_decay),
          init_(initial_accumulator_value), eps_(eps) {
        detail::check_hyper("Adagrad", "lr_decay", static_cast<double>(lr_decay), 0.0, false, HUGE_VAL, true);
        detail::check_hyper("Adagrad", "weight_decay", static_cast<double>(weight_decay), 0.0, false, HUGE_VAL, true);
        detail::check_hyper("Adagrad", "initial_accumulator_value", static_cast<double>(initial_accumulator_value), 0.0,
                            false, HUGE_VAL, true);
        detail::check_hyper("Adagrad", "eps", static_cast<double>(eps), 0.0, false, HUGE_VAL, true);
    }

    T lr_decay() const noexcept { return lr_decay_; }
    T initial_accumulator_value() const noexcept { return init_; }
    T eps() const noexcept { return eps_; }

    void step() override {
        this->allocate_like_params(sum_, init_);
        const double t = static_cast<double>(this->iterations_ + 1);
        detail::AdagradArgs<T> a{};
        a.clr = static_cast<T>(static_cast<double>(this->lr_) / (1.0 + (t - 1.0) * static_cast<double>(lr_decay_)));
        a.eps = eps_;
        a.wd = this->wd_;
        this->update_each(a, [&](std::size_t i, detail::AdagradArgs<T>& k) {
            k.sum = sum_[i].data();
            if (this->wd_ != T(0)) {
                simd::dispatch<detail::adagrad_kernel<T, true>>(k);
            } else {
                simd::dispatch<detail::adagrad_kernel<T, false>>(k);
            }
        });
    }

    std::vector<std::pair<std::string, Tensor<T>*>> state() override {
        this->allocate_like_params(sum_, init_);
        std::vector<std::pair<std::string, Tensor<T>*>> out;
        this->name_state(out, "sum", sum_);
        return out;
    }

private:
    T lr_decay_, init_, eps_;
    std::vector<Tensor<T>> sum_;
};

} // namespace optim
} // namespace tapir
