#pragma once
/// Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay (PyTorch
/// torch.optim.SGD semantics).

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

/// Per step, for every parameter p with gradient g (PyTorch's update rule):
///   d = g + weight_decay * p
///   if momentum != 0:  buf = d on the first step, else buf = momentum * buf + (1 - dampening) * d
///                      d = nesterov ? d + momentum * buf : buf
///   p -= lr * d
/// The momentum buffers are allocated at the first step (or by state()) and never again.
template <class T>
class SGD : public detail::DecayingOptimizer<T> {
public:
    SGD(std::vector<Parameter<T>*> params, T lr, T momentum = T(0), T dampening = T(0), T weight_decay = T(0),
        bool nesterov = false)
        : detail::DecayingOptimizer<T>(std::move(params), lr, weight_decay, "SGD"), momentum_(momentum), dampening_(dampening),
          nesterov_(nesterov) {
        detail::check_hyper("SGD", "momentum", static_cast<double>(momentum), 0.0, false, 1.0, false);
        detail::check_hyper("SGD", "dampening", static_cast<double>(dampening), 0.0, false, 1.0, false);
        detail::check_hyper("SGD", "weight_decay", static_cast<double>(weight_decay), 0.0, false, HUGE_VAL, true);
        if (nesterov && (momentum <= T(0) || dampening != T(0)))
            throw value_error("SGD: Nesterov momentum requires momentum > 0 and dampening = 0, got momentum " +
                              detail::fmt_number(static_cast<double>(momentum)) + " and dampening " +
                              detail::fmt_number(static_cast<double>(dampening)));
    }

    T momentum() const noexcept { return momentum_; }
    T dampening() const noexcept { return dampening_; }
    bool nesterov() const noexcept { return nesterov_; }

    void step() override {
        const bool mom = momentum_ != T(0);
        if (mom) this->allocate_like_params(buf_, T(0));
        const bool first = this->iterations_ == 0;
        detail::SgdArgs<T> a{};
        a.lr = this->lr_;
        a.wd = this->wd_;
        a.mu = momentum_;
        a.mu_buf = first ? T(0) : momentum_;  // first step: buf = d exactly (0 * 0 + 1 * d)
        a.c_grad = first ? T(1) : T(1) - dampening_;
        this->update_each(a, [&](std::size_t i, detail::SgdArgs<T>& k) {
            k.buf = mom ? buf_[i].data() : nullptr;
            run(k, mom);
        });
    }

    std::vector<std::pair<std::string, Tensor<T>*>> state() override {
        std::vector<std::pair<std::string, Tensor<T>*>> out;
        if (momentum_ == T(0)) return out;
        this->allocate_like_params(buf_, T(0));
        this->name_state(out, "momentum_buffer", buf_);
        return out;
    }

private:
    template <bool Wd, bool M, bool N>
    static void go(const detail::SgdArgs<T>& a) {
        simd::dispatch<detail::sgd_kernel<T, Wd, M, N>>(a);
    }
    void run(const detail::SgdArgs<T>& a, bool mom) const {
        const bool wd = this->wd_ != T(0);
        if (!mom) return wd ? go<true, false, false>(a) : go<false, false, false>(a);
        if (nesterov_) return wd ? go<true, true, true>(a) : go<false, true, true>(a);
        return wd ? go<true, true, false>(a) : go<false, true, false>(a);
    }

    T momentum_, dampening_;
    bool nesterov_;
    std::vector<Tensor<T>> buf_;
};

} // namespace optim
} // namespace tapir
