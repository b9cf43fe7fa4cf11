#pragma once
/// Learning-rate schedules: objects that set an optimiser's learning rate from a step count.
///
/// A schedule remembers the optimiser's learning rate at construction as the base rate and keeps
/// its own count t (0 at construction). Each call of step() advances t and sets
/// lr = lr_at(t). Call it after every optimiser step for per-iteration schedules, or once per
/// epoch for per-epoch ones: the schedule does not care which.
///
///   Keras' legacy `decay` (lr / (1 + decay * iterations); lr 1e-3, decay 3e-4 here):
///       Adam<float> opt(params, 1e-3f);  InverseTimeLR<float> sched(opt, 3e-4);
///       for (...) { ...; opt.step(); sched.step(); }   // update k (k = 0, 1, ...) uses lr / (1 + decay k)

#include <cmath>
#include <cstddef>
#include <functional>
#include <string>
#include <utility>

#include "../error.hpp"
#include "optimizer.hpp"

namespace tapir {
namespace optim {

template <class T>
class LRSchedule {
public:
    virtual ~LRSchedule() = default;
    LRSchedule(const LRSchedule&) = delete;
    LRSchedule& operator=(const LRSchedule&) = delete;

    /// The learning rate after t schedule steps (lr_at(0) is the base rate).
    T lr_at(std::size_t t) const { return static_cast<T>(rate(static_cast<double>(base_), t)); }
    /// Advances the count and sets the optimiser's learning rate.
    void step() {
        ++count_;
        opt_.set_scheduled_learning_rate(lr_at(count_));
    }
    std::size_t count() const noexcept { return count_; }
    /// Resumes at count t (e.g. opt.iterations() after loading a per-step run) and sets lr_at(t).
    void set_count(std::size_t t) {
        opt_.set_scheduled_learning_rate(lr_at(t));
        count_ = t;
    }
    T base_lr() const noexcept { return base_; }
    /// The schedule's class name, as given to the constructor (a schedule of your own overrides it).
    virtual std::string name() const { return kind_ ? kind_ : "LRSchedule"; }

protected:
    explicit LRSchedule(Optimizer<T>& opt) : opt_(opt), base_(opt.learning_rate()) {}
    /// A schedule given by its name (for name()) and its formula rate(base, t).
    LRSchedule(Optimizer<T>& opt, const char* kind, std::function<double(double, std::size_t)> formula)
        : opt_(opt), base_(opt.learning_rate()), kind_(kind), formula_(std::move(formula)) {}
    /// The rate after t steps from base rate `base`: the formula given to the constructor, or a
    /// schedule of your own overrides it.
    virtual double rate(double base, std::size_t t) const {
        if (!formula_) throw value_error(name() + ": a schedule must override rate() or pass a formula to LRSchedule");
        return formula_(base, t);
    }

private:
    Optimizer<T>& opt_;
    T base_;
    std::size_t count_ = 0;
    const char* kind_ = nullptr;
    std::function<double(double, std::size_t)> formula_;
};

// A built-in schedule is its checks and its formula: the constructor checks the arguments and
// hands the base its name and the formula as a function of (base rate, t).

/// lr = base * gamma^floor(t / step_size) (PyTorch StepLR).
template <class T>
class StepLR : public LRSchedule<T> {
public:
    StepLR(Optimizer<T>& opt, std::size_t step_size, double gamma = 0.1)
        : LRSchedule<T>(opt, "StepLR", [step_size, gamma](double base, std::size_t t) {
              return base * std::pow(gamma, static_cast<double>(t / step_size));
          }) {
        if (step_size == 0) throw value_error("StepLR: step_size must be at least 1, got 0");
        detail::check_hyper("StepLR", "gamma", gamma, 0.0, true, HUGE_VAL, true);
    }
};

/// lr = base * gamma^t (PyTorch ExponentialLR; Keras ExponentialDecay with decay_steps = 1).
template <class T>
class ExponentialLR : public LRSchedule<T> {
public:
    ExponentialLR(Optimizer<T>& opt, double gamma)
        : LRSchedule<T>(opt, "ExponentialLR",
                        [gamma](double base, std::size_t t) { return base * std::pow(gamma, static_cast<double>(t)); }) {
        detail::check_hyper("ExponentialLR", "gamma", gamma, 0.0, true, HUGE_VAL, true);
    }
};

/// lr = min_lr + (base - min_lr) * (1 + cos(pi * min(t, t_max) / t_max)) / 2: half a cosine from
/// base to min_lr over t_max steps, then min_lr (PyTorch CosineAnnealingLR's closed form up to
/// t_max; Keras CosineDecay with alpha = min_lr / base). min_lr = 0 is allowed here.
template <class T>
class CosineAnnealingLR : public LRSchedule<T> {
public:
    CosineAnnealingLR(Optimizer<T>& opt, std::size_t t_max, double min_lr = 0.0)
        : LRSchedule<T>(opt, "CosineAnnealingLR", [t_max, min_lr](double base, std::size_t t) {
              const double pi = 3.14159265358979323846;
              const double x = static_cast<double>(t < t_max ? t : t_max) / static_cast<double>(t_max);
              return min_lr + (base - min_lr) * 0.5 * (1.0 + std::cos(pi * x));
          }) {
        if (t_max == 0) throw value_error("CosineAnnealingLR: t_max must be at least 1, got 0");
        detail::check_hyper("CosineAnnealingLR", "min_lr", min_lr, 0.0, false, static_cast<double>(opt.learning_rate()), false);
    }
};

/// lr = base / (1 + decay * t) (Keras' legacy `decay` argument; Keras InverseTimeDecay with
/// decay_steps = 1, staircase off).
template <class T>
class InverseTimeLR : public LRSchedule<T> {
public:
    InverseTimeLR(Optimizer<T>& opt, double decay)
        : LRSchedule<T>(opt, "InverseTimeLR",
                        [decay](double base, std::size_t t) { return base / (1.0 + decay * static_cast<double>(t)); }) {
        detail::check_hyper("InverseTimeLR", "decay", decay, 0.0, false, HUGE_VAL, true);
    }
};

} // namespace optim
} // namespace tapir
