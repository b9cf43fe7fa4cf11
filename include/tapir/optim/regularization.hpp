#pragma once
/// L1 and L2 regularisation, Keras conventions: the L1 term is lambda * sum |w|, the L2 term
/// lambda * sum w^2 (tf.keras.regularizers.l1 / l2). Either add the term to the loss on the tape
/// (l1_loss, l2_loss) or add its gradient after backward() (add_l1_gradient, add_l2_gradient);
/// the penalty values (l1_penalty, l2_penalty) are for logging.
///
/// Note: an optimiser's weight_decay wd adds wd * w to the gradient, the gradient of
/// (wd / 2) sum w^2; it equals add_l2_gradient with lambda = wd / 2.

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../simd/elementwise.hpp"
#include "kernels.hpp"
#include "optimizer.hpp"

namespace tapir {
namespace optim {

namespace detail {
template <class T>
void check_reg(const std::vector<Parameter<T>*>& params, const char* fn, T lambda) {
    check_hyper(fn, "lambda", static_cast<double>(lambda), 0.0, false, HUGE_VAL, true);
    for (std::size_t i = 0; i < params.size(); ++i)
        if (params[i] == nullptr) throw value_error(std::string(fn) + ": parameter #" + std::to_string(i) + " is a null pointer");
}
template <class T>
void check_grad_shape(const Parameter<T>& p, const char* fn) {
    if (p.grad.shape() != p.value.shape())
        throw shape_error(std::string(fn) + ": parameter '" + p.name + "' has a gradient of shape " + p.grad.shape().str() +
                          " but a value of shape " + p.value.shape().str());
}
/// Checks lambda and every trainable gradient's shape first (a failing call changes nothing),
/// then applies f to each trainable parameter.
template <class T, class F>
void for_each_trainable(const std::vector<Parameter<T>*>& params, const char* fn, T lambda, F f) {
    check_reg(params, fn, lambda);
    for (const Parameter<T>* p : params) if (p->requires_grad) check_grad_shape(*p, fn);
    for (Parameter<T>* p : params)
        if (p->requires_grad) f(*p);
}
/// lambda * sum over the parameters of sum(term(w)), recorded on the tape.
template <class T, class F>
Var<T> penalty_on_tape(Tape<T>& tape, const std::vector<Parameter<T>*>& params, T lambda, const char* fn, F term) {
    check_reg(params, fn, lambda);
    Var<T> total = tape.scalar(T(0));
    for (Parameter<T>* p : params) total = tapir::add(total, tapir::sum(term(tape.param(*p))));
    return tapir::scale(total, lambda);
}
} // namespace detail

/// lambda * sum |w| over the parameters' values.
template <class T>
T l1_penalty(const std::vector<Parameter<T>*>& params, T lambda) {
    detail::check_reg(params, "l1_penalty", lambda);
    double s = 0.0;
    for (const Parameter<T>* p : params) s += static_cast<double>(simd::dispatch<detail::abs_sum_kernel<T>>(p->value.data(), p->value.size()));
    return static_cast<T>(static_cast<double>(lambda) * s);
}

/// lambda * sum w^2 over the parameters' values.
template <class T>
T l2_penalty(const std::vector<Parameter<T>*>& params, T lambda) {
    detail::check_reg(params, "l2_penalty", lambda);
    double s = 0.0;
    for (const Parameter<T>* p : params) s += static_cast<double>(simd::dot(p->value.data(), p->value.data(), p->value.size()));
    return static_cast<T>(static_cast<double>(lambda) * s);
}

/// grad += lambda * sign(w) for every trainable parameter (sign(0) = 0: the subgradient that
/// leaves exact zeros alone).
template <class T>
void add_l1_gradient(const std::vector<Parameter<T>*>& params, T lambda) {
    detail::for_each_trainable(params, "add_l1_gradient", lambda, [lambda](Parameter<T>& p) {
        simd::dispatch<detail::l1_grad_kernel<T>>(
            detail::GradArgs<T>{p.value.data(), p.grad.data(), p.value.size(), lambda});
    });
}

/// grad += 2 lambda w for every trainable parameter.
template <class T>
void add_l2_gradient(const std::vector<Parameter<T>*>& params, T lambda) {
    detail::for_each_trainable(params, "add_l2_gradient", lambda, [lambda](Parameter<T>& p) {
        simd::axpy(T(2) * lambda, p.value.data(), p.grad.data(), p.value.size());
    });
}

/// lambda * sum |w| recorded on the tape (add it to the loss before backward()).
template <class T>
Var<T> l1_loss(Tape<T>& tape, const std::vector<Parameter<T>*>& params, T lambda) {
    return detail::penalty_on_tape(tape, params, lambda, "l1_loss", [](const Var<T>& w) { return tapir::abs(w); });
}

/// lambda * sum w^2 recorded on the tape.
template <class T>
Var<T> l2_loss(Tape<T>& tape, const std::vector<Parameter<T>*>& params, T lambda) {
    return detail::penalty_on_tape(tape, params, lambda, "l2_loss", [](const Var<T>& w) { return tapir::square(w); });
}

} // namespace optim
} // namespace tapir
