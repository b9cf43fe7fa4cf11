#pragma once
/// What fit() reports and calls back: the per-epoch History, epoch metrics (accuracy, AUC), the
/// EpochEnd record handed to callbacks, and Keras' reduce_lr_on_plateau (checkpoint_best, which
/// writes model files, is in checkpoint.hpp: the training loop itself does not depend on io/).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../metrics/roc.hpp"
#include "../optim/optimizer.hpp"
#include "../tensor/tensor.hpp"
#include "module.hpp"

namespace tapir {
namespace metrics {}  // roc_auc: tapir:: today, tapir::metrics:: under the one namespace rule
namespace nn {

// ---- history --------------------------------------------------------------------------------

/// Per-epoch values ("loss", metrics, "val_loss", "val_<metric>"), Keras' History.history.
class History {
public:
    std::size_t epochs() const noexcept { return epochs_; }
    /// Column names in order (the CSV adds a leading "epoch").
    const std::vector<std::string>& columns() const noexcept { return names_; }
    bool has(const std::string& name) const { return find(name) < names_.size(); }
    const std::vector<double>& operator[](const std::string& name) const {
        const std::size_t i = find(name);
        if (i == names_.size()) {
            std::string known;
            for (const auto& n : names_) known += (known.empty() ? "" : ", ") + n;
            throw value_error("History: no column '" + name + "' (columns: " + known + ")");
        }
        return values_[i];
    }

    /// Early stopping outcome: the monitored column, its best value and epoch (1-based; 0 when
    /// nothing was monitored), and whether training stopped before the last epoch.
    std::string monitor;
    double best_value = std::numeric_limits<double>::quiet_NaN();
    std::size_t best_epoch = 0;
    bool stopped_early = false;

    void add_column(const std::string& name) {
        if (has(name)) throw value_error("History: duplicate column '" + name + "'");
        if (epochs_ != 0) throw value_error("History: columns must be added before the first epoch");
        names_.push_back(name);
        values_.emplace_back();
    }
    /// One epoch's values, in column order.
    void append(const std::vector<double>& row) {
        if (row.size() != names_.size())
            throw value_error("History::append: " + std::to_string(row.size()) + " values for " + std::to_string(names_.size()) + " columns");
        for (std::size_t i = 0; i < row.size(); ++i) values_[i].push_back(row[i]);
        ++epochs_;
    }

    /// "epoch,<columns>" then one line per epoch (epochs counted from 1), values with 10
    /// significant digits.
    std::string to_csv() const {
        std::string s = "epoch";
        for (const auto& n : names_) s += "," + n;
        s += "\n";
        char buf[40];
        for (std::size_t e = 0; e < epochs_; ++e) {
            s += std::to_string(e + 1);
            for (const auto& col : values_) {
                std::snprintf(buf, sizeof buf, ",%.10g", col[e]);
                s += buf;
            }
            s += "\n";
        }
        return s;
    }
    void write_csv(const std::string& path) const {
        std::ofstream f(path, std::ios::binary);
        if (!f) throw value_error("History::write_csv: cannot open '" + path + "' for writing");
        const std::string s = to_csv();
        f.write(s.data(), static_cast<std::streamsize>(s.size()));
        if (!f) throw value_error("History::write_csv: writing '" + path + "' failed");
    }

private:
    std::size_t find(const std::string& name) const {
        std::size_t i = 0;
        while (i < names_.size() && names_[i] != name) ++i;
        return i;
    }
    std::vector<std::string> names_;
    std::vector<std::vector<double>> values_;
    std::size_t epochs_ = 0;
};

// ---- metrics ------------------------------------------------------------------------------------

/// An epoch metric over all predictions of a set: fn(pred (n, k), target (n, k), weight (n, 1) or null).
template <class T>
struct Metric {
    std::string name;
    std::function<double(const Tensor<T>& pred, const Tensor<T>& target, const Tensor<T>* weight)> fn;
};

/// Weighted fraction of outputs with (pred > threshold) == (target > 0.5). The default threshold
/// 0 reads the outputs as logits (probability 0.5); use 0.5 for probabilities.
template <class T>
Metric<T> binary_accuracy(double threshold = 0.0, std::string name = "accuracy") {
    return Metric<T>{std::move(name), [threshold](const Tensor<T>& pred, const Tensor<T>& target, const Tensor<T>* w) {
                         const std::size_t n = pred.size();
                         const std::size_t rows = pred.rank() ? pred.shape()[0] : 1;
                         const std::size_t k = rows ? n / rows : 1;
                         double good = 0.0, total = 0.0;
                         for (std::size_t i = 0; i < n; ++i) {
                             const double wi = w ? static_cast<double>((*w)[i / k]) : 1.0;
                             total += wi;
                             if ((static_cast<double>(pred[i]) > threshold) == (target[i] > T(0.5))) good += wi;
                         }
                         return total != 0.0 ? good / total : std::numeric_limits<double>::quiet_NaN();
                     }};
}

/// Weighted area under the ROC curve of a one-output model (logits or probabilities: the AUC
/// depends on the order only), Keras' AUC metric computed exactly. Labels must be 0 or 1.
template <class T>
Metric<T> binary_auc(std::string name = "auc") {
    return Metric<T>{std::move(name), [](const Tensor<T>& pred, const Tensor<T>& target, const Tensor<T>* w) {
                         if (pred.size() != target.size() || (pred.rank() == 2 && pred.shape()[1] != 1))
                             throw shape_error("binary_auc: needs one output per event, got predictions of shape " + pred.shape().str());
                         using namespace tapir::metrics;
                         return w ? roc_auc(pred, target, *w) : roc_auc(pred, target);
                     }};
}

// ---- callbacks ----------------------------------------------------------------------------------

/// Passed to callbacks after each epoch; set stop_training to end training (Keras'
/// model.stop_training). The optimiser is there for learning-rate schedules.
template <class T>
struct EpochEnd {
    std::size_t epoch;   ///< 1-based
    std::size_t epochs;  ///< requested
    const History& history;
    Module<T>& model;
    optim::Optimizer<T>& optimizer;
    bool stop_training = false;
};
template <class T>
using Callback = std::function<void(EpochEnd<T>&)>;

/// automatic: minimise a monitored name ending in "loss", maximise anything else.
enum class MonitorMode { automatic, min, max };

namespace detail {

inline bool monitor_minimises(const std::string& mon, MonitorMode mode) {
    return mode == MonitorMode::min || (mode == MonitorMode::automatic && mon.size() >= 4 && mon.compare(mon.size() - 4, 4, "loss") == 0);
}

/// The best value of a monitored History column so far (shared by the callbacks below).
struct MonitorState {
    std::string monitor;  ///< empty: "val_loss" with validation data, else "loss"
    MonitorMode mode = MonitorMode::automatic;
    double min_delta = 0.0;
    bool minimise = true;
    bool started = false;
    double best = 0.0;

    /// Whether this epoch's value improves on the best (and records it if so). NaN never does.
    bool improved(const History& h) {
        if (monitor.empty()) monitor = h.has("val_loss") ? "val_loss" : "loss";
        const double v = h[monitor].back();  // names the columns if the monitor is unknown
        if (!started) {
            minimise = monitor_minimises(monitor, mode);
            if (v != v) return false;
            started = true;
            best = v;
            return true;
        }
        const bool better = minimise ? v < best - min_delta : v > best + min_delta;
        if (better) best = v;
        return better;
    }
};

} // namespace detail

struct ReduceLROnPlateauOptions {
    std::string monitor;  ///< default: "val_loss" with validation data, else "loss"
    double factor = 0.1;  ///< new rate = max(rate * factor, min_lr), 0 < factor < 1
    std::size_t patience = 10;  ///< epochs without improvement before a reduction
    double min_delta = 1e-4;    ///< an improvement must beat the best by more than this
    std::size_t cooldown = 0;   ///< epochs after a reduction before counting again
    double min_lr = 0.0;
    MonitorMode mode = MonitorMode::automatic;
};

/// Keras' ReduceLROnPlateau: multiplies the optimiser's learning rate by `factor` (not below
/// min_lr) after `patience` epochs in which the monitored value did not improve.
template <class T>
Callback<T> reduce_lr_on_plateau(const ReduceLROnPlateauOptions& o = ReduceLROnPlateauOptions{}) {
    if (!(o.factor > 0.0 && o.factor < 1.0))
        throw value_error("reduce_lr_on_plateau: factor must be in (0, 1), got " + std::to_string(o.factor));
    if (o.patience == 0) throw value_error("reduce_lr_on_plateau: patience must be at least 1 epoch");
    if (!(o.min_lr >= 0.0) || !std::isfinite(o.min_lr))
        throw value_error("reduce_lr_on_plateau: min_lr must be finite and >= 0, got " + std::to_string(o.min_lr));
    struct State {
        detail::MonitorState mon;
        std::size_t wait = 0, cooldown = 0;
    };
    auto st = std::make_shared<State>();
    st->mon.monitor = o.monitor;
    st->mon.mode = o.mode;
    st->mon.min_delta = o.min_delta;
    return [st, o](EpochEnd<T>& e) {
        const bool better = st->mon.improved(e.history);
        if (st->cooldown > 0) --st->cooldown;  // epochs after a reduction: no counting
        else if (better) st->wait = 0;
        else if (++st->wait >= o.patience) {
            const double lr = static_cast<double>(e.optimizer.learning_rate());
            if (lr > o.min_lr) {
                const double next = std::max(lr * o.factor, o.min_lr);
                if (next > 0.0) e.optimizer.set_learning_rate(static_cast<T>(next));
                else e.optimizer.set_scheduled_learning_rate(T(0));
            }
            st->wait = 0;
            st->cooldown = o.cooldown;
        }
    };
}

} // namespace nn
} // namespace tapir
