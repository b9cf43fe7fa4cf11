#pragma once
/// Learning from label proportions (Dery et al., arXiv 1702.00414): without per-event
/// labels, the batch-mean output is fitted to the batch's known signal fraction.

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../tensor/tensor.hpp"
#include "common.hpp"

namespace tapir {
namespace loss {

/// The distance l between a batch mean and its fraction: both forms are used publicly.
enum class ProportionDistance { squared, absolute };

namespace detail {
inline void check_fraction(const char* fn, double f, std::size_t k) {
    if (!(f >= 0.0 && f <= 1.0))
        throw value_error(std::string(fn) + ": signal fraction of group " + std::to_string(k) + " must be in [0, 1], got " +
                          std::to_string(f));
}
template <class T>
Var<T> proportion_distance(const Var<T>& d, ProportionDistance kind) {
    return kind == ProportionDistance::squared ? square(d) : abs(d);
}
} // namespace detail

/// One batch with known signal fraction f: l(`<yhat>_w` - f), l = square or abs, where `<yhat>_w` is
/// the (weighted) batch mean of the outputs yhat in [0, 1].
template <class T>
Var<T> label_proportion_loss(const Var<T>& yhat, detail::scalar_t<T> fraction,
                             ProportionDistance kind = ProportionDistance::squared, detail::weights_t<T> weights = nullptr) {
    const char* fn = "label_proportion_loss";
    detail::check_fraction(fn, static_cast<double>(fraction), 0);
    const Var<T> m = detail::weighted_mean(detail::per_event_column(yhat, fn, "outputs"), weights, fn);
    return detail::proportion_distance(add_scalar(m, -fraction), kind);
}

/// Several groups K in one batch: sum_K l(`<yhat>_K` - f_K) (arXiv 1702.00414), with group[i] the
/// group index of event i in [0, fractions.size()). Every group needs events (non-zero weight).
template <class T>
Var<T> label_proportion_loss(const Var<T>& yhat, const std::vector<std::size_t>& group, const std::vector<T>& fractions,
                             ProportionDistance kind = ProportionDistance::squared, detail::weights_t<T> weights = nullptr) {
    const char* fn = "label_proportion_loss";
    const Var<T> p = detail::per_event_column(yhat, fn, "outputs");
    const std::size_t n = p.size(), k = fractions.size();
    if (group.size() != n)
        throw shape_error(std::string(fn) + ": " + std::to_string(group.size()) + " group indices for " + std::to_string(n) + " events");
    if (k == 0) throw value_error(std::string(fn) + ": no group fractions given");
    for (std::size_t j = 0; j < k; ++j) detail::check_fraction(fn, static_cast<double>(fractions[j]), j);
    const T* wv = weights ? detail::event_weights(*weights, n, fn).data() : nullptr;
    // Row K of the membership matrix holds w_i / sum_{i in K} w_i for the events of group K.
    Tensor<T> member(Shape{k, n});
    std::vector<double> total(k, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
        if (group[i] >= k)
            throw value_error(std::string(fn) + ": group index " + std::to_string(group[i]) + " of event " + std::to_string(i) +
                              " is out of range for " + std::to_string(k) + " groups");
        total[group[i]] += wv ? static_cast<double>(wv[i]) : 1.0;
    }
    for (std::size_t j = 0; j < k; ++j)
        if (total[j] == 0.0 || !std::isfinite(total[j]))
            throw value_error(std::string(fn) + ": group " + std::to_string(j) + " has no events (or zero / non-finite total weight)");
    for (std::size_t i = 0; i < n; ++i)
        member(group[i], i) = static_cast<T>((wv ? static_cast<double>(wv[i]) : 1.0) / total[group[i]]);
    Tape<T>& t = p.tape();
    const Var<T> means = matmul(t.constant(member), reshape(p, Shape{n, 1}));  // (k, 1)
    Tensor<T> f(Shape{k, 1});
    for (std::size_t j = 0; j < k; ++j) f[j] = fractions[j];
    return sum(detail::proportion_distance(sub(means, t.constant(f)), kind));
}

} // namespace loss
} // namespace tapir
