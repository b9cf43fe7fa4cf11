#pragma once
/// Input view and argument checks shared by the metrics.

#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../tensor/tensor.hpp"

namespace tapir::metrics {

/// A non-owning read-only view of float or double values: a std::vector, a Tensor (all its
/// elements), a pointer and a size, or a braced list. For function parameters only (a view
/// of a temporary must not outlive the call). Default-constructed = empty (e.g. "no weights").
class ValueView {
public:
    ValueView() = default;
    ValueView(const std::vector<double>& v) noexcept : d_(v.data()), n_(v.size()) {}
    ValueView(const std::vector<float>& v) noexcept : f_(v.data()), n_(v.size()) {}
    ValueView(std::initializer_list<double> v) noexcept : n_(v.size()) { d_ = std::data(v); }
    ValueView(const double* p, std::size_t n) noexcept : d_(p), n_(n) {}
    ValueView(const float* p, std::size_t n) noexcept : f_(p), n_(n) {}
    ValueView(const Tensor<double>& t) noexcept : d_(t.data()), n_(t.size()) {}
    ValueView(const Tensor<float>& t) noexcept : f_(t.data()), n_(t.size()) {}

    std::size_t size() const noexcept { return n_; }
    bool empty() const noexcept { return n_ == 0; }
    double operator[](std::size_t i) const noexcept { return f_ ? static_cast<double>(f_[i]) : d_[i]; }
    std::vector<double> to_vector() const {
        std::vector<double> v(n_);
        for (std::size_t i = 0; i < n_; ++i) v[i] = (*this)[i];
        return v;
    }

private:
    const double* d_ = nullptr;
    const float* f_ = nullptr;
    std::size_t n_ = 0;
};

namespace detail {

using tapir::detail::error_number;

/// Equal non-zero sizes (both named in the error), finite values.
inline void metric_check_same_size(const char* fn, const char* what_a, const ValueView& a, const char* what_b,
                                   const ValueView& b) {
    if (a.size() != b.size())
        throw value_error(std::string(fn) + ": " + std::to_string(a.size()) + " " + what_a + " but " +
                          std::to_string(b.size()) + " " + what_b);
}
inline void metric_check_finite(const char* fn, const char* what, const ValueView& v) {
    for (std::size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(v[i]))
            throw value_error(std::string(fn) + ": non-finite " + what + " " + error_number(v[i]) + " at index " +
                              std::to_string(i));
}
inline void metric_check_labels(const char* fn, const ValueView& labels) {
    for (std::size_t i = 0; i < labels.size(); ++i)
        if (labels[i] != 0.0 && labels[i] != 1.0)
            throw value_error(std::string(fn) + ": label " + error_number(labels[i]) + " at index " + std::to_string(i) +
                              " is not 0 or 1");
}
/// scores/labels/weights of a binary classification metric; empty weights = all 1.
inline void metric_check(const char* fn, const ValueView& scores, const ValueView& labels, const ValueView& weights) {
    metric_check_same_size(fn, "scores", scores, "labels", labels);
    if (scores.empty()) throw value_error(std::string(fn) + ": empty input");
    if (!weights.empty()) metric_check_same_size(fn, "scores", scores, "weights", weights);
    metric_check_labels(fn, labels);
    metric_check_finite(fn, "score", scores);
    metric_check_finite(fn, "weight", weights);
}
inline double metric_weight(const ValueView& w, std::size_t i) noexcept { return w.empty() ? 1.0 : w[i]; }

} // namespace detail
} // namespace tapir::metrics
