#pragma once
/// The optimiser interface: a list of parameters, a learning rate, step() and zero_grad(),
/// and named state tensors so that a run can be saved and resumed bit for bit.

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../simd/arch.hpp"
#include "../simd/thread_pool.hpp"

namespace tapir {
namespace optim {

namespace detail {
/// A number for an error message: shortest readable form, "NaN" and "inf" spelled out.
inline std::string fmt_number(double v) {
    if (v != v) return "NaN";
    if (v == HUGE_VAL) return "inf";
    if (v == -HUGE_VAL) return "-inf";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

/// Throws value_error unless lo <= v <= hi (lo < v with open_lo, v < hi with open_hi) and v is finite.
inline void check_hyper(const char* kind, const char* what, double v, double lo, bool open_lo, double hi, bool open_hi) {
    const bool ok = std::isfinite(v) && (open_lo ? v > lo : v >= lo) && (open_hi ? v < hi : v <= hi);
    if (ok) return;
    std::string range = std::string(open_lo ? "(" : "[") + fmt_number(lo) + ", " + fmt_number(hi) + (open_hi ? ")" : "]");
    throw value_error(std::string(kind) + ": " + what + " must be in " + range + ", got " + fmt_number(v));
}
} // namespace detail

template <class T>
class Optimizer {
public:
    Optimizer(std::vector<Parameter<T>*> params, T lr) : Optimizer(std::move(params), lr, "optimizer") {}
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    /// One update from the gradients in Parameter::grad. Parameters with requires_grad == false
    /// are skipped; the iteration count advances once per call.
    virtual void step() = 0;
    /// The optimiser's class name, as given to the constructor (an optimiser of your own overrides it).
    virtual std::string name() const { return name_or_optimizer(); }

    void zero_grad() noexcept {
        for (Parameter<T>* p : params_) p->zero_grad();
    }

    T learning_rate() const noexcept { return lr_; }
    /// Rejects zero, negative and non-finite rates: they silently stall or wreck a run.
    void set_learning_rate(T lr) {
        if (!(lr > T(0)) || !std::isfinite(lr))
            throw value_error(name_or_optimizer() + ": learning rate must be positive and finite, got " +
                              detail::fmt_number(static_cast<double>(lr)));
        lr_ = lr;
    }
    /// For schedules: like set_learning_rate, but 0 is allowed (the end of a cosine annealing).
    void set_scheduled_learning_rate(T lr) {
        if (!(lr >= T(0)) || !std::isfinite(lr))
            throw value_error(name_or_optimizer() + ": scheduled learning rate must be non-negative and finite, got " +
                              detail::fmt_number(static_cast<double>(lr)));
        lr_ = lr;
    }
    std::size_t iterations() const noexcept { return iterations_; }
    const std::vector<Parameter<T>*>& parameters() const noexcept { return params_; }

    /// Named state tensors (moments, step counts) for saving and restoring; the iteration count is
    /// stored by the model file alongside. Allocates the state on first use, so that a fresh
    /// optimiser can receive a saved state before its first step.
    virtual std::vector<std::pair<std::string, Tensor<T>*>> state() { return {}; }
    void set_iterations(std::size_t n) noexcept { iterations_ = n; }

    /// Debug aid: step() first checks every gradient and throws value_error naming the parameter
    /// and element of the first NaN or infinity (off by default: it costs a pass over the gradients).
    void set_check_finite(bool on) noexcept { check_finite_ = on; }
    bool check_finite() const noexcept { return check_finite_; }

protected:
    /// kind names the optimiser in error messages (name() is not callable from a constructor).
    Optimizer(std::vector<Parameter<T>*> params, T lr, const char* kind) : params_(std::move(params)), kind_(kind) {
        set_learning_rate(lr);
        for (std::size_t i = 0; i < params_.size(); ++i) {
            if (params_[i] == nullptr)
                throw value_error(name_or_optimizer() + ": parameter #" + std::to_string(i) + " is a null pointer");
            for (std::size_t j = 0; j < i; ++j)
                if (params_[j] == params_[i])
                    throw value_error(name_or_optimizer() + ": parameter '" + params_[i]->name + "' is listed twice (#" +
                                      std::to_string(j) + " and #" + std::to_string(i) + "); it would be updated twice");
        }
    }

    std::string name_or_optimizer() const { return kind_ ? std::string(kind_) : std::string("optimizer"); }

    /// Every trainable parameter's gradient must match its value; checked for all parameters
    /// before any is updated, so a failing step changes nothing.
    void check_gradients() const {
        for (std::size_t i = 0; i < params_.size(); ++i) {
            const Parameter<T>& p = *params_[i];
            if (!p.requires_grad) continue;
            if (TAPIR_UNLIKELY(p.grad.shape() != p.value.shape()))
                throw shape_error(name_or_optimizer() + ": parameter '" + p.name + "' (#" + std::to_string(i) +
                                  ") has a gradient of shape " + p.grad.shape().str() + " but a value of shape " +
                                  p.value.shape().str());
            if (check_finite_) {
                const T* g = p.grad.data();
                for (std::size_t k = 0; k < p.grad.size(); ++k) {
                    if (g[k] - g[k] == T(0)) continue;
                    throw value_error(name_or_optimizer() + ": gradient of parameter '" + p.name + "' is " +
                                      (g[k] != g[k] ? "NaN" : (g[k] > T(0) ? "+inf" : "-inf")) + " at element " +
                                      std::to_string(k));
                }
            }
        }
    }

    /// One update pass: checks the gradients (check_gradients), then for every trainable
    /// parameter i calls update(i, k) with k a copy of `a` whose p, g and n point at i (update sets
    /// i's state pointers in k and runs the kernel); then counts the iteration. With
    /// simd::num_threads() > 1 and enough elements, the parameters are split into contiguous
    /// groups of about equal size, one per thread: every update is elementwise, so the result is
    /// the same bits on any number of threads (a serial Adam step was a twentieth of a two-thread
    /// WGAN-GP step).
    template <class Args, class F>
    void update_each(const Args& a, F update) {
        check_gradients();
        std::size_t total = 0;
        for (const Parameter<T>* p : params_)
            if (p->requires_grad) total += p->value.size();
        const std::size_t threads = simd::in_parallel_region() ? 1 : simd::num_threads();
        const std::size_t parts = total >= parallel_min ? std::min(threads, params_.size()) : 1;
        auto part = [&](std::size_t k) {
            Args mine = a;
            const std::size_t lo = total * k / parts, hi = k + 1 == parts ? SIZE_MAX : total * (k + 1) / parts;
            std::size_t at = 0;  // elements of the trainable parameters before i
            for (std::size_t i = 0; i < params_.size() && at < hi; ++i) {
                Parameter<T>& p = *params_[i];
                if (!p.requires_grad) continue;
                const std::size_t start = at;
                at += p.value.size();
                if (start < lo) continue;  // each parameter goes to the group its first element falls in
                mine.p = p.value.data();
                mine.g = p.grad.data();
                mine.n = p.value.size();
                update(i, mine);
            }
        };
        if (parts > 1) simd::parallel_run(parts, part);
        else part(0);
        ++iterations_;
    }

    /// State tensors shaped like every parameter, allocated once and filled with `init`.
    void allocate_like_params(std::vector<Tensor<T>>& s, T init) const {
        if (s.size() == params_.size()) return;
        s.clear();
        s.reserve(params_.size());
        for (const Parameter<T>* p : params_) s.emplace_back(p->value.shape(), init);
    }
    /// Appends {prefix[i], &s[i]} for every parameter i.
    static void name_state(std::vector<std::pair<std::string, Tensor<T>*>>& out, const char* prefix, std::vector<Tensor<T>>& s) {
        for (std::size_t i = 0; i < s.size(); ++i)
            out.emplace_back(std::string(prefix) + "[" + std::to_string(i) + "]", &s[i]);
    }

    std::vector<Parameter<T>*> params_;
    T lr_ = T(0);
    std::size_t iterations_ = 0;
    const char* kind_ = nullptr;
    /// Steps over fewer elements stay on one thread (waking a parked worker costs more).
    static constexpr std::size_t parallel_min = std::size_t(1) << 17;
    bool check_finite_ = false;
};

namespace detail {
/// What every built-in optimiser has besides a learning rate: a weight decay (an L2 term in the
/// gradient, or AdamW's decoupled shrinkage). Each optimiser checks it among its other arguments.
template <class T>
class DecayingOptimizer : public Optimizer<T> {
public:
    T weight_decay() const noexcept { return wd_; }

protected:
    DecayingOptimizer(std::vector<Parameter<T>*> params, T lr, T weight_decay, const char* kind)
        : Optimizer<T>(std::move(params), lr, kind), wd_(weight_decay) {}
    T wd_;
};
} // namespace detail

} // namespace optim
} // namespace tapir
