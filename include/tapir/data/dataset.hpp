#pragma once
/// Data preparation: seeded train/test splits, StandardScaler / MinMaxScaler, per-event
/// weights, datasets of tensors and a seeded shuffled mini-batch loader.
///
/// Everything random takes a seed and uses tapir::Rng, so a split or an epoch's batch order is
/// the same on every platform.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../io/csv.hpp"
#include "../io/npy.hpp"
#include "../io/npz.hpp"
#include "../tensor/shape.hpp"
#include "../tensor/tensor.hpp"
#include "random.hpp"

namespace tapir::data {

// ---------------------------------------------------------------- splits and gathers

struct TrainTestSplit {
    std::vector<std::size_t> train;
    std::vector<std::size_t> test;
};

namespace detail {
using tapir::detail::error_number;

inline std::size_t split_test_count(const char* fn, std::size_t n, double test_fraction) {
    if (!(test_fraction > 0.0 && test_fraction < 1.0))
        throw value_error(std::string(fn) + ": test_fraction must be in (0, 1), got " + detail::error_number(test_fraction));
    return static_cast<std::size_t>(std::floor(test_fraction * static_cast<double>(n) + 0.5));
}
inline void split_check_sizes(const char* fn, std::size_t n, std::size_t k, double test_fraction) {
    if (k == 0 || k == n)
        throw value_error(std::string(fn) + ": test_fraction " + detail::error_number(test_fraction) + " of " +
                          std::to_string(n) + " events leaves the " + (k == 0 ? "test" : "training") + " set empty");
}
} // namespace detail

/// Seeded random split of n events: round(test_fraction * n) indices go to test, the rest to
/// train, each in random order (like sklearn's train_test_split with shuffle=True).
inline TrainTestSplit train_test_split(std::size_t n, double test_fraction, std::uint64_t seed) {
    const std::size_t k = detail::split_test_count("train_test_split", n, test_fraction);
    detail::split_check_sizes("train_test_split", n, k, test_fraction);
    Rng rng(seed);
    const std::vector<std::size_t> p = rng.permutation(n);
    TrainTestSplit s;
    s.test.assign(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(k));
    s.train.assign(p.begin() + static_cast<std::ptrdiff_t>(k), p.end());
    return s;
}

/// Seeded split that keeps each label value's share: round(test_fraction * n_c) events of
/// every class c go to test. Both parts are shuffled.
inline TrainTestSplit stratified_split(const std::vector<double>& labels, double test_fraction, std::uint64_t seed) {
    const std::size_t n = labels.size();
    detail::split_test_count("stratified_split", n, test_fraction);
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) {
        if (std::isnan(labels[i]))
            throw value_error("stratified_split: label " + std::to_string(i) + " is NaN");
        order[i] = i;
    }
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return labels[a] < labels[b] || (labels[a] == labels[b] && a < b);
    });
    Rng rng(seed);
    TrainTestSplit s;
    for (std::size_t b = 0; b < n;) {
        std::size_t e = b;
        while (e < n && labels[order[e]] == labels[order[b]]) ++e;
        rng.shuffle(order.begin() + static_cast<std::ptrdiff_t>(b), order.begin() + static_cast<std::ptrdiff_t>(e));
        const std::size_t k = detail::split_test_count("stratified_split", e - b, test_fraction);
        s.test.insert(s.test.end(), order.begin() + static_cast<std::ptrdiff_t>(b),
                      order.begin() + static_cast<std::ptrdiff_t>(b + k));
        s.train.insert(s.train.end(), order.begin() + static_cast<std::ptrdiff_t>(b + k),
                       order.begin() + static_cast<std::ptrdiff_t>(e));
        b = e;
    }
    detail::split_check_sizes("stratified_split", n, s.test.size(), test_fraction);
    rng.shuffle(s.test.begin(), s.test.end());
    rng.shuffle(s.train.begin(), s.train.end());
    return s;
}

namespace detail {
inline void check_index(const char* fn, std::size_t i, std::size_t n) {
    if (i >= n)
        throw value_error(std::string(fn) + ": index " + std::to_string(i) + " is out of range for " +
                          std::to_string(n) + " events");
}
} // namespace detail

/// v[idx[0]], v[idx[1]], ...
template <class V>
std::vector<V> take(const std::vector<V>& v, const std::vector<std::size_t>& idx) {
    std::vector<V> out;
    out.reserve(idx.size());
    for (std::size_t i : idx) {
        detail::check_index("take", i, v.size());
        out.push_back(v[i]);
    }
    return out;
}

/// Rows idx of x along its first dimension (any rank >= 1).
template <class T>
Tensor<T> take_rows(const Tensor<T>& x, const std::vector<std::size_t>& idx) {
    if (x.rank() == 0) throw shape_error("take_rows: tensor of shape " + x.shape().str() + " has no rows");
    const std::size_t n = x.dim(0);
    const std::size_t row = n ? x.size() / n : 0;
    Shape s = x.shape();
    s[0] = idx.size();
    Tensor<T> out(s);
    for (std::size_t k = 0; k < idx.size(); ++k) {
        detail::check_index("take_rows", idx[k], n);
        if (row) std::memcpy(out.data() + k * row, x.data() + idx[k] * row, row * sizeof(T));
    }
    return out;
}

/// Rows idx[0..n) of src (along its first axis) into dst, shaped (n, <src's other axes>). dst's
/// storage is reused, so gathering batches of one size allocates once (nn::fit's training step
/// relies on it). The indices are not checked: callers check them once, not per batch.
template <class T>
void gather_rows(const Tensor<T>& src, const std::size_t* idx, std::size_t n, Tensor<T>& dst) {
    const std::size_t rows = src.rank() ? src.dim(0) : 0;
    const std::size_t row = rows ? src.size() / rows : 0;
    Shape s = src.shape();
    if (s.rank()) s[0] = n;
    dst.resize(s);
    for (std::size_t k = 0; k < n; ++k)
        if (row) std::memcpy(dst.data() + k * row, src.data() + idx[k] * row, row * sizeof(T));
}

// ---------------------------------------------------------------- scalers

namespace detail {
inline void scaler_check_2d(const char* fn, const Shape& s) {
    if (s.rank() != 2)
        throw shape_error(std::string(fn) + ": expected a (events, features) tensor, got shape " + s.str());
}
inline void scaler_check_features(const char* fn, const Shape& s, std::size_t d) {
    scaler_check_2d(fn, s);
    if (d == 0) throw value_error(std::string(fn) + ": the scaler is not fitted (call fit first)");
    if (s[1] != d)
        throw shape_error(std::string(fn) + ": the scaler was fitted on " + std::to_string(d) +
                          " features, got shape " + s.str());
}
/// out[i, j] = f(j, x[i, j]) in double, for a fitted scaler of d features.
template <class T, class F>
Tensor<T> scaler_map(const char* fn, const Tensor<T>& x, std::size_t d, F f) {
    scaler_check_features(fn, x.shape(), d);
    Tensor<T> out(x.shape());
    const std::size_t n = x.dim(0);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < d; ++j) out[i * d + j] = static_cast<T>(f(j, static_cast<double>(x[i * d + j])));
    return out;
}
template <class T>
void scaler_check_fit_input(const char* fn, const Tensor<T>& x, const std::vector<double>& w) {
    scaler_check_2d(fn, x.shape());
    const std::size_t n = x.dim(0), d = x.dim(1);
    if (n == 0 || d == 0) throw value_error(std::string(fn) + ": empty input of shape " + x.shape().str());
    if (!w.empty() && w.size() != n)
        throw value_error(std::string(fn) + ": " + std::to_string(n) + " events but " + std::to_string(w.size()) +
                          " weights");
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < d; ++j)
            if (!std::isfinite(x[i * d + j]))
                throw value_error(std::string(fn) + ": non-finite value " + detail::error_number(static_cast<double>(x[i * d + j])) +
                                  " at event " + std::to_string(i) + ", feature " + std::to_string(j));
    for (std::size_t i = 0; i < w.size(); ++i)
        if (!std::isfinite(w[i]))
            throw value_error(std::string(fn) + ": non-finite weight " + detail::error_number(w[i]) + " at event " +
                              std::to_string(i));
}
/// A spread this small next to the values is rounding noise of a constant column.
inline bool negligible_spread(double spread, double magnitude) {
    return !(spread > 16.0 * std::numeric_limits<double>::epsilon() * magnitude) || spread == 0.0;
}

/// transform and inverse_transform of a scaler that maps each feature on its own:
/// Derived::scaled(j, v) and Derived::unscaled(j, v) in double, features() of them once fitted,
/// and its class name for the error messages ("StandardScaler::transform: ...").
template <class Derived>
class feature_scaler {
public:
    template <class T>
    Tensor<T> transform(const Tensor<T>& x) const {
        const Derived& d = static_cast<const Derived&>(*this);
        return scaler_map((std::string(Derived::name) + "::transform").c_str(), x, d.features(),
                          [&d](std::size_t j, double v) { return d.scaled(j, v); });
    }

    template <class T>
    Tensor<T> inverse_transform(const Tensor<T>& z) const {
        const Derived& d = static_cast<const Derived&>(*this);
        return scaler_map((std::string(Derived::name) + "::inverse_transform").c_str(), z, d.features(),
                          [&d](std::size_t j, double v) { return d.unscaled(j, v); });
    }
};
} // namespace detail

/// Standardises each feature to zero mean and unit variance: (x - mean) / scale, with the
/// population standard deviation (ddof = 0, as sklearn). A constant feature gets scale 1, so it
/// maps to 0 and nothing divides by zero. Optional per-event weights (sum must be positive).
class StandardScaler : public detail::feature_scaler<StandardScaler> {
public:
    StandardScaler() = default;
    /// A scaler with known parameters (for instance loaded from a file).
    StandardScaler(std::vector<double> mean, std::vector<double> scale) : mean_(std::move(mean)), scale_(std::move(scale)) {
        if (mean_.size() != scale_.size())
            throw value_error("StandardScaler: " + std::to_string(mean_.size()) + " means but " +
                              std::to_string(scale_.size()) + " scales");
        for (std::size_t j = 0; j < scale_.size(); ++j)
            if (!(scale_[j] > 0.0 && std::isfinite(scale_[j]) && std::isfinite(mean_[j])))
                throw value_error("StandardScaler: feature " + std::to_string(j) + " has mean " +
                                  detail::error_number(mean_[j]) + " and scale " + detail::error_number(scale_[j]) +
                                  " (need finite values and scale > 0)");
    }

    template <class T>
    StandardScaler& fit(const Tensor<T>& x, const std::vector<double>& weights = {}) {
        detail::scaler_check_fit_input("StandardScaler::fit", x, weights);
        const std::size_t n = x.dim(0), d = x.dim(1);
        double wsum = 0.0;
        for (std::size_t i = 0; i < n; ++i) wsum += weights.empty() ? 1.0 : weights[i];
        if (!(wsum > 0.0))
            throw value_error("StandardScaler::fit: the weights sum to " + detail::error_number(wsum) + " (must be positive)");
        std::vector<double> mean(d, 0.0), var(d, 0.0);
        for (std::size_t i = 0; i < n; ++i) {
            const double w = weights.empty() ? 1.0 : weights[i];
            for (std::size_t j = 0; j < d; ++j) mean[j] += w * static_cast<double>(x[i * d + j]);
        }
        for (double& m : mean) m /= wsum;
        for (std::size_t i = 0; i < n; ++i) {
            const double w = weights.empty() ? 1.0 : weights[i];
            for (std::size_t j = 0; j < d; ++j) {
                const double dev = static_cast<double>(x[i * d + j]) - mean[j];
                var[j] += w * dev * dev;
            }
        }
        std::vector<double> scale(d);
        for (std::size_t j = 0; j < d; ++j) {
            const double sd = std::sqrt(std::max(var[j] / wsum, 0.0));
            scale[j] = detail::negligible_spread(sd, std::abs(mean[j])) ? 1.0 : sd;
        }
        mean_ = std::move(mean);
        scale_ = std::move(scale);
        return *this;
    }

    template <class T>
    Tensor<T> fit_transform(const Tensor<T>& x, const std::vector<double>& weights = {}) {
        return fit(x, weights).transform(x);
    }

    bool fitted() const noexcept { return !mean_.empty(); }
    std::size_t features() const noexcept { return mean_.size(); }
    const std::vector<double>& mean() const noexcept { return mean_; }
    /// Standard deviation per feature (1 for constant features).
    const std::vector<double>& scale() const noexcept { return scale_; }

private:
    friend class detail::feature_scaler<StandardScaler>;
    static constexpr const char* name = "StandardScaler";
    /// Feature j's value v standardised, and back (transform and inverse_transform, per value).
    double scaled(std::size_t j, double v) const { return (v - mean_[j]) / scale_[j]; }
    double unscaled(std::size_t j, double v) const { return v * scale_[j] + mean_[j]; }

    std::vector<double> mean_, scale_;
};

/// Maps each feature linearly so that its fitted [min, max] becomes [lo, hi] (default [0, 1]).
/// A constant feature (max == min) gets scale 1, so it maps to lo; nothing divides by zero.
class MinMaxScaler : public detail::feature_scaler<MinMaxScaler> {
public:
    explicit MinMaxScaler(double lo = 0.0, double hi = 1.0) : lo_(lo), hi_(hi) {
        if (!(std::isfinite(lo) && std::isfinite(hi) && lo < hi))
            throw value_error("MinMaxScaler: feature range [" + detail::error_number(lo) + ", " + detail::error_number(hi) +
                              "] must be finite with lo < hi");
    }

    template <class T>
    MinMaxScaler& fit(const Tensor<T>& x) {
        detail::scaler_check_fit_input("MinMaxScaler::fit", x, {});
        const std::size_t n = x.dim(0), d = x.dim(1);
        std::vector<double> mn(d, std::numeric_limits<double>::infinity()), mx(d, -std::numeric_limits<double>::infinity());
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < d; ++j) {
                const double v = static_cast<double>(x[i * d + j]);
                mn[j] = std::min(mn[j], v);
                mx[j] = std::max(mx[j], v);
            }
        std::vector<double> scale(d);
        for (std::size_t j = 0; j < d; ++j) {
            const double range = mx[j] - mn[j];
            scale[j] = detail::negligible_spread(range, std::max(std::abs(mn[j]), std::abs(mx[j]))) ? 1.0
                                                                                                     : (hi_ - lo_) / range;
        }
        min_ = std::move(mn);
        max_ = std::move(mx);
        scale_ = std::move(scale);
        return *this;
    }

    template <class T>
    Tensor<T> fit_transform(const Tensor<T>& x) {
        return fit(x).transform(x);
    }

    bool fitted() const noexcept { return !min_.empty(); }
    std::size_t features() const noexcept { return min_.size(); }
    const std::vector<double>& data_min() const noexcept { return min_; }
    const std::vector<double>& data_max() const noexcept { return max_; }
    /// (hi - lo) / (max - min) per feature (1 for constant features).
    const std::vector<double>& scale() const noexcept { return scale_; }
    double lo() const noexcept { return lo_; }
    double hi() const noexcept { return hi_; }

private:
    friend class detail::feature_scaler<MinMaxScaler>;
    static constexpr const char* name = "MinMaxScaler";
    /// Feature j's value v mapped into [lo, hi], and back (transform and inverse_transform, per value).
    double scaled(std::size_t j, double v) const { return lo_ + (v - min_[j]) * scale_[j]; }
    double unscaled(std::size_t j, double v) const { return (v - lo_) / scale_[j] + min_[j]; }

    double lo_, hi_;
    std::vector<double> min_, max_, scale_;
};

// ---------------------------------------------------------------- per-event weights

namespace detail {
inline void check_binary_labels(const char* fn, const std::vector<double>& labels) {
    for (std::size_t i = 0; i < labels.size(); ++i)
        if (labels[i] != 0.0 && labels[i] != 1.0)
            throw value_error(std::string(fn) + ": label " + detail::error_number(labels[i]) + " at index " +
                              std::to_string(i) + " is not 0 or 1");
}
} // namespace detail

/// Rescales weights (all 1 when empty) so that signal (label 1) and background (label 0) each
/// sum to N/2, N the number of events: a balanced training sample with unchanged shapes.
/// Negative weights are kept; each class total must be positive.
inline std::vector<double> balanced_weights(const std::vector<double>& labels, const std::vector<double>& weights = {}) {
    const std::size_t n = labels.size();
    if (n == 0) throw value_error("balanced_weights: empty input");
    if (!weights.empty() && weights.size() != n)
        throw value_error("balanced_weights: " + std::to_string(n) + " labels but " + std::to_string(weights.size()) +
                          " weights");
    detail::check_binary_labels("balanced_weights", labels);
    double tot[2] = {0.0, 0.0};
    for (std::size_t i = 0; i < n; ++i) tot[labels[i] == 1.0 ? 1 : 0] += weights.empty() ? 1.0 : weights[i];
    for (int c = 0; c < 2; ++c)
        if (!(tot[c] > 0.0 && std::isfinite(tot[c])))
            throw value_error(std::string("balanced_weights: the ") + (c ? "signal" : "background") +
                              " weights sum to " + detail::error_number(tot[c]) + " (must be positive)");
    const double half = 0.5 * static_cast<double>(n);
    std::vector<double> out(n);
    for (std::size_t i = 0; i < n; ++i) {
        const int c = labels[i] == 1.0 ? 1 : 0;
        out[i] = (weights.empty() ? 1.0 : weights[i]) * (half / tot[c]);
    }
    return out;
}

/// Scales weights so that they sum to total (default: the number of events).
inline std::vector<double> normalized_weights(const std::vector<double>& weights, double total = -1.0) {
    if (weights.empty()) throw value_error("normalized_weights: empty input");
    if (total < 0.0) total = static_cast<double>(weights.size());
    double s = 0.0;
    for (double w : weights) s += w;
    if (!(std::isfinite(s) && s != 0.0))
        throw value_error("normalized_weights: the weights sum to " + detail::error_number(s) + " (cannot normalise)");
    std::vector<double> out(weights.size());
    for (std::size_t i = 0; i < weights.size(); ++i) out[i] = weights[i] * (total / s);
    return out;
}

// ---------------------------------------------------------------- datasets and batches

/// Events as tensors sharing their first dimension: features x, targets y, optional per-event
/// weights w (rank 1) and optional auxiliary columns aux (e.g. m_yy for a decorrelation loss).
/// An empty w means every weight is 1.
template <class T>
struct Dataset {
    Tensor<T> x, y, w, aux;

    Dataset() = default;
    Dataset(Tensor<T> x_, Tensor<T> y_, Tensor<T> w_ = {}, Tensor<T> aux_ = {})
        : x(std::move(x_)), y(std::move(y_)), w(std::move(w_)), aux(std::move(aux_)) {
        validate();
    }

    std::size_t size() const noexcept { return x.rank() ? x.dim(0) : 0; }
    bool weighted() const noexcept { return !w.empty(); }
    bool has_aux() const noexcept { return !aux.empty(); }

    /// The events idx, in that order.
    Dataset subset(const std::vector<std::size_t>& idx) const {
        Dataset d;
        d.x = take_rows(x, idx);
        d.y = take_rows(y, idx);
        if (weighted()) d.w = take_rows(w, idx);
        if (has_aux()) d.aux = take_rows(aux, idx);
        return d;
    }

    void validate() const {
        if (x.rank() == 0) throw shape_error("Dataset: x must have an event dimension, got shape " + x.shape().str());
        const std::size_t n = x.dim(0);
        const auto check = [&](const Tensor<T>& t, const char* name) {
            if (t.rank() == 0 || t.dim(0) != n)
                throw shape_error(std::string("Dataset: x has ") + std::to_string(n) + " events (shape " +
                                  x.shape().str() + ") but " + name + " has shape " + t.shape().str());
        };
        check(y, "y");
        if (!w.empty()) {
            check(w, "w");
            if (w.rank() != 1) throw shape_error("Dataset: w must be one weight per event, got shape " + w.shape().str());
        }
        if (!aux.empty()) check(aux, "aux");
    }
};

/// A dataset from CSV columns: features -> x (n, features), label -> y (n), optional weight
/// column -> w (n), optional aux columns -> aux (n, aux).
template <class T>
Dataset<T> make_dataset(const io::CsvTable& table, const std::vector<std::string>& features, const std::string& label,
                        const std::string& weight = "", const std::vector<std::string>& aux = {}) {
    Dataset<T> d;
    d.x = table.to_tensor<T>(features);
    d.y = table.to_tensor<T>({label}).reshaped(Shape{table.rows});
    if (!weight.empty()) d.w = table.to_tensor<T>({weight}).reshaped(Shape{table.rows});
    if (!aux.empty()) d.aux = table.to_tensor<T>(aux);
    d.validate();
    return d;
}

/// A dataset from NumPy arrays sharing their first dimension: x (events, ...), y (events, ...),
/// optional w (events) and aux (events, ...). Integer and bool arrays (int64 labels) are
/// converted exactly; a value T cannot hold exactly is a value_error (see io::NpyArray::values).
template <class T>
Dataset<T> make_dataset(const io::NpyArray& x, const io::NpyArray& y, const io::NpyArray* w = nullptr,
                        const io::NpyArray* aux = nullptr) {
    Dataset<T> d;
    d.x = x.to_tensor<T>();
    d.y = y.to_tensor<T>();
    if (w) d.w = w->to_tensor<T>();
    if (aux) d.aux = aux->to_tensor<T>();
    d.validate();
    return d;
}

/// A dataset from the arrays of an .npz archive, by name (as np.savez(f, x=..., y=...) names
/// them): make_dataset<float>(io::read_npz("train.npz"), "x", "y"). Empty names are absent.
template <class T>
Dataset<T> make_dataset(const io::NpzFile& npz, const std::string& features, const std::string& label,
                        const std::string& weight = "", const std::string& aux = "") {
    return make_dataset<T>(npz[features], npz[label], weight.empty() ? nullptr : &npz[weight], aux.empty() ? nullptr : &npz[aux]);
}

/// One mini-batch: the gathered rows of every dataset tensor, w filled with 1 for an
/// unweighted dataset, and the dataset indices of its events.
template <class T>
struct Batch {
    Tensor<T> x, y, w, aux;
    std::vector<std::size_t> indices;
    std::size_t size() const noexcept { return indices.size(); }
};

struct LoaderOptions {
    bool shuffle = true;
    /// Drop the last batch when it is smaller than batch_size (kept by default).
    bool drop_last = false;
    std::uint64_t seed = 0;
};

/// Seeded shuffled mini-batches over a Dataset, which must outlive the loader.
///
/// The order of epoch e is a fixed function of (seed, e). Each range-for over the loader is one
/// epoch: the first uses epoch 0 (or the one given to set_epoch), each later one the next epoch.
/// Batch storage is reused: a Batch reference is valid until the next batch is requested.
template <class T>
class DataLoader {
public:
    DataLoader(const Dataset<T>& data, std::size_t batch_size, const LoaderOptions& options = {})
        : data_(&data), bs_(batch_size), opt_(options) {
        if (batch_size == 0) throw value_error("DataLoader: batch_size must be positive");
        data.validate();
        set_epoch(0);
    }
    DataLoader(const Dataset<T>&&, std::size_t, const LoaderOptions& = {}) = delete;

    /// Batches per epoch.
    std::size_t size() const noexcept {
        const std::size_t n = data_->size();
        return opt_.drop_last ? n / bs_ : (n + bs_ - 1) / bs_;
    }
    std::size_t batch_size() const noexcept { return bs_; }
    std::uint64_t epoch() const noexcept { return epoch_; }
    const std::vector<std::size_t>& order() const noexcept { return order_; }

    /// Selects the order of epoch e; the next range-for iterates over it.
    void set_epoch(std::uint64_t e) {
        epoch_ = e;
        started_ = false;
        cached_ = static_cast<std::size_t>(-1);
        const std::size_t n = data_->size();
        if (opt_.shuffle) {
            Rng rng(mix(opt_.seed, e));
            order_ = rng.permutation(n);
        } else {
            order_.resize(n);
            for (std::size_t i = 0; i < n; ++i) order_[i] = i;
        }
    }

    /// Batch i of the current epoch.
    const Batch<T>& batch(std::size_t i) {
        if (i >= size())
            throw value_error("DataLoader::batch: batch " + std::to_string(i) + " of " + std::to_string(size()));
        if (i == cached_) return buf_;
        const std::size_t b = i * bs_;
        const std::size_t m = std::min(bs_, data_->size() - b);
        buf_.indices.assign(order_.begin() + static_cast<std::ptrdiff_t>(b),
                            order_.begin() + static_cast<std::ptrdiff_t>(b + m));
        gather(data_->x, buf_.x);
        gather(data_->y, buf_.y);
        if (data_->weighted()) {
            gather(data_->w, buf_.w);
        } else {
            buf_.w.resize(Shape{m});
            buf_.w.fill(T(1));
        }
        if (data_->has_aux()) gather(data_->aux, buf_.aux);
        cached_ = i;
        return buf_;
    }

    class iterator {
    public:
        using value_type = Batch<T>;
        using reference = const Batch<T>&;
        using difference_type = std::ptrdiff_t;
        iterator(DataLoader* l, std::size_t i) : l_(l), i_(i) {}
        reference operator*() const { return l_->batch(i_); }
        const Batch<T>* operator->() const { return &l_->batch(i_); }
        iterator& operator++() {
            ++i_;
            return *this;
        }
        bool operator==(const iterator& o) const noexcept { return i_ == o.i_; }
        bool operator!=(const iterator& o) const noexcept { return i_ != o.i_; }

    private:
        DataLoader* l_;
        std::size_t i_;
    };

    /// Starts an epoch: the current one the first time after construction or set_epoch, else the next.
    iterator begin() {
        if (started_) set_epoch(epoch_ + 1);
        started_ = true;
        return iterator(this, 0);
    }
    iterator end() { return iterator(this, size()); }

private:
    static std::uint64_t mix(std::uint64_t seed, std::uint64_t e) noexcept {
        std::uint64_t z = seed ^ (e * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }

    void gather(const Tensor<T>& src, Tensor<T>& dst) const { gather_rows(src, buf_.indices.data(), buf_.indices.size(), dst); }

    const Dataset<T>* data_;
    std::size_t bs_;
    LoaderOptions opt_;
    std::uint64_t epoch_ = 0;
    bool started_ = false;
    std::size_t cached_ = static_cast<std::size_t>(-1);
    std::vector<std::size_t> order_;
    Batch<T> buf_;
};

} // namespace tapir::data
