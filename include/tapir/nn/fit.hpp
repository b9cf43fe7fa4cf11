#pragma once
/// A Keras-like training loop: fit(model, x, y, optimizer, options, loss) with mini-batches,
/// validation (split or set), metrics, early stopping, per-epoch callbacks, a progress bar on a
/// terminal, and the history as CSV.
///
/// The step itself (Trainer::step) reuses one tape, cleared each step, and gathers each batch
/// into tensors kept across steps; the loss is a template parameter, not a std::function. Once
/// the first steps have sized the arena and the buffers, a step touches the heap not at all.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#if defined(_WIN32)
#include <io.h>
#elif defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "../autodiff/backward.hpp"
#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../data/random.hpp"
#include "../error.hpp"
#include "../optim/optimizer.hpp"
#include "module.hpp"

namespace tapir {
namespace nn {

// ---- losses ---------------------------------------------------------------------------------

/// The default loss: binary cross-entropy on logits, weighted by per-event weights if given.
struct BceWithLogitsLoss {
    template <class T>
    Var<T> operator()(const Var<T>& out, const Var<T>& target, const Var<T>* weight) const {
        return bce_with_logits(out, target, weight);
    }
};

/// Mean squared error over events and outputs; with weights w (batch, 1):
/// sum_i w_i sum_k (o_ik - y_ik)^2 / (K sum_i w_i).
struct MseLoss {
    template <class T>
    Var<T> operator()(const Var<T>& out, const Var<T>& target, const Var<T>* weight) const {
        if (out.shape() != target.shape()) tapir::detail::throw_shape("MseLoss: output vs target", out.shape(), target.shape());
        const Var<T> d2 = square(sub(out, target));
        if (!weight) return mean(d2);
        T norm = T(0);
        for (std::size_t i = 0; i < weight->size(); ++i) norm += (*weight)[i];
        if (norm == T(0)) throw value_error("MseLoss: the event weights sum to zero");
        const T k = static_cast<T>(out.size() / (out.shape().rank() ? out.shape()[0] : 1));
        return scale(sum(mul(d2, *weight)), T(1) / (norm * k));
    }
};

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

// ---- metrics, callbacks, options ----------------------------------------------------------------

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

/// automatic: a progress bar on stderr when stderr is a terminal, nothing otherwise.
enum class Verbosity { automatic, quiet, progress };
/// automatic: minimise a monitored name ending in "loss", maximise anything else.
enum class MonitorMode { automatic, min, max };

template <class T>
struct FitOptions {
    std::size_t epochs = 10;
    std::size_t batch_size = 32;
    bool shuffle = true;
    bool drop_last = false;  ///< skip the last, incomplete batch (BatchNorm needs >= 2 events)
    std::uint64_t seed = 42;  ///< fixes the validation split and the batch order

    const Tensor<T>* sample_weight = nullptr;  ///< per-event weights, (n,) or (n, 1)

    /// Fraction of events held out for validation, drawn at random with the seed (Keras takes
    /// the last rows instead, which is wrong for files sorted by class). Ignored when
    /// validation_x is given.
    double validation_split = 0.0;
    const Tensor<T>* validation_x = nullptr;
    const Tensor<T>* validation_y = nullptr;
    const Tensor<T>* validation_weight = nullptr;

    std::vector<Metric<T>> metrics;

    /// Early stopping: stop after `patience` epochs without an improvement larger than
    /// min_delta in `monitor` (default "val_loss" with validation data, else "loss"); 0 = off.
    std::size_t patience = 0;
    std::string monitor;
    MonitorMode monitor_mode = MonitorMode::automatic;
    double min_delta = 0.0;
    /// With early stopping on: end with the parameters and buffers of the best epoch.
    bool restore_best_weights = true;

    std::vector<Callback<T>> callbacks;
    Verbosity verbose = Verbosity::automatic;
};

namespace detail {

inline bool stderr_is_terminal() noexcept {
#if defined(_WIN32)
    return _isatty(_fileno(stderr)) != 0;
#elif defined(__unix__) || defined(__APPLE__)
    return isatty(2) != 0;
#else
    return false;
#endif
}

/// "Epoch 3/20 [=====>........] 45/100 - loss: 0.4123" (no allocation: for the step loop).
inline int format_progress(char* buf, std::size_t cap, std::size_t epoch, std::size_t epochs, std::size_t step,
                           std::size_t steps, double loss, std::size_t width = 30) {
    char bar[128];
    if (width > sizeof bar - 1) width = sizeof bar - 1;
    const std::size_t done = steps ? (step * width) / steps : width;
    for (std::size_t i = 0; i < width; ++i) bar[i] = i < done ? '=' : (i == done ? '>' : '.');
    bar[width] = '\0';
    return std::snprintf(buf, cap, "Epoch %zu/%zu [%s] %zu/%zu - loss: %.4f", epoch, epochs, bar, step, steps, loss);
}

/// The line left on screen after an epoch: bar, seconds, then every history column.
inline std::string format_epoch_line(std::size_t epoch, std::size_t epochs, std::size_t steps, double seconds, const History& h) {
    char buf[256];
    format_progress(buf, sizeof buf, epoch, epochs, steps, steps, 0.0);
    std::string s = buf;
    s.erase(s.find(" - loss"));
    std::snprintf(buf, sizeof buf, " - %.1fs", seconds);
    s += buf;
    for (const auto& c : h.columns()) {
        std::snprintf(buf, sizeof buf, " - %s: %.4f", c.c_str(), h[c].back());
        s += buf;
    }
    return s;
}

template <class T>
std::size_t checked_rows(const char* who, const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w) {
    if (x.rank() != 2) throw shape_error(std::string(who) + ": inputs must have shape (events, features), got " + x.shape().str());
    const std::size_t n = x.shape()[0];
    if (y.rank() == 0 || y.rank() > 2 || y.shape()[0] != n)
        tapir::detail::throw_shape(who, x.shape(), y.shape(), "targets must be (events,) or (events, outputs) with one row per input row");
    if (w && (w->size() != n || w->rank() == 0 || w->shape()[0] != n))
        tapir::detail::throw_shape(who, x.shape(), w->shape(), "weights must be (events,) or (events, 1) with one per input row");
    return n;
}

/// Copies rows idx[0..n) of src (rows x cols) into dst, reshaped to (n, cols) without allocating
/// once dst has held that many elements.
template <class T>
void gather_into(const Tensor<T>& src, std::size_t rows, const std::size_t* idx, std::size_t n, Tensor<T>& dst) {
    const std::size_t cols = rows ? src.size() / rows : 0;
    dst.resize(Shape{n, cols});
    const T* s = src.data();
    T* d = dst.data();
    for (std::size_t i = 0; i < n; ++i) std::memcpy(d + i * cols, s + idx[i] * cols, cols * sizeof(T));
}

/// Parameter and buffer values, for restoring the best epoch.
template <class T>
struct Snapshot {
    std::vector<Tensor<T>> values;
    void save(const std::vector<Parameter<T>*>& ps, const std::vector<NamedBuffer<T>>& bs) {
        values.resize(ps.size() + bs.size());
        for (std::size_t i = 0; i < ps.size(); ++i) values[i] = ps[i]->value;
        for (std::size_t i = 0; i < bs.size(); ++i) values[ps.size() + i] = *bs[i].second;
    }
    void restore(const std::vector<Parameter<T>*>& ps, const std::vector<NamedBuffer<T>>& bs) const {
        for (std::size_t i = 0; i < ps.size(); ++i) ps[i]->value = values[i];
        for (std::size_t i = 0; i < bs.size(); ++i) *bs[i].second = values[ps.size() + i];
    }
};

/// Puts the modules' mode flags back when leaving a scope (also on exceptions).
template <class T>
struct ModeGuard {
    Module<T>& m;
    std::vector<bool> modes;
    explicit ModeGuard(Module<T>& mod) : m(mod), modes(mod.training_modes()) {}
    ~ModeGuard() { m.set_training_modes(modes); }
    ModeGuard(const ModeGuard&) = delete;
    ModeGuard& operator=(const ModeGuard&) = delete;
};

} // namespace detail

// ---- the training step -------------------------------------------------------------------------

/// One reusable training step: gathers the batch rows into kept tensors, clears and reuses one
/// tape, runs forward, loss, backward and the optimiser. Steady-state steps allocate nothing.
template <class T, class Loss = BceWithLogitsLoss>
class Trainer {
public:
    Trainer(Module<T>& model, optim::Optimizer<T>& optimizer, Loss loss = Loss{})
        : model_(model), opt_(optimizer), loss_(std::move(loss)) {
        // Model parameters the optimiser does not update still get gradients: keep them from
        // accumulating across steps.
        for (Parameter<T>* p : model.parameters())
            if (std::find(opt_.parameters().begin(), opt_.parameters().end(), p) == opt_.parameters().end()) extra_.push_back(p);
    }
    Trainer(const Trainer&) = delete;
    Trainer& operator=(const Trainer&) = delete;

    Tape<T>& tape() noexcept { return tape_; }
    Module<T>& model() noexcept { return model_; }

    /// One optimisation step on rows idx[0..n) of x, y (and per-event weights w); returns the
    /// batch loss. With pred, the batch outputs are also written to pred's rows idx[i] (pred
    /// is shaped (rows of x, outputs) on first use).
    T step(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n,
           Tensor<T>* pred = nullptr) {
        const Var<T> l = record(x, y, w, idx, n);
        for (Parameter<T>* p : extra_) p->zero_grad();
        opt_.zero_grad();
        backward(l);
        opt_.step();
        if (pred) copy_rows(x.shape()[0], idx, n, *pred);
        return l.item();
    }

    /// The loss on rows idx[0..n) without gradients or updates (in the modules' current modes).
    T evaluate(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n) {
        NoGradGuard<T> guard(tape_);
        return record(x, y, w, idx, n).item();
    }

    /// Copies the outputs of the last step or evaluation (batch rows x last_output_width()) to dst.
    void copy_last_output(T* dst) const {
        const Ref<T>& o = tape_.node(out_index_).out;
        std::memcpy(dst, o.data, o.size() * sizeof(T));
    }

    /// Outputs per event of the last step or evaluation.
    std::size_t last_output_width() const noexcept { return out_width_; }

private:
    Var<T> record(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n) {
        const std::size_t rows = detail::checked_rows("Trainer", x, y, w);
        if (n == 0) throw value_error("Trainer: empty batch");
        for (std::size_t i = 0; i < n; ++i)
            if (TAPIR_UNLIKELY(idx[i] >= rows))
                throw value_error("Trainer: row index " + std::to_string(idx[i]) + " out of range for " + std::to_string(rows) + " events");
        tape_.clear();
        detail::gather_into(x, rows, idx, n, xb_);
        detail::gather_into(y, rows, idx, n, yb_);
        const Var<T> xv = tape_.view(xb_), yv = tape_.view(yb_);
        const Var<T> out = model_(xv);
        if (out.shape().rank() == 0 || out.shape()[0] != n)
            throw shape_error("Trainer: the model output must have one row per event: input " + xb_.shape().str() + ", output " +
                              out.shape().str());
        out_index_ = out.index();
        out_width_ = out.size() / n;
        Var<T> l;
        if (w) {
            detail::gather_into(*w, rows, idx, n, wb_);
            const Var<T> wv = tape_.view(wb_);
            l = loss_(out, yv, &wv);
        } else {
            l = loss_(out, yv, static_cast<const Var<T>*>(nullptr));
        }
        if (l.size() != 1) throw shape_error("Trainer: the loss must be a single value, got shape " + l.shape().str());
        return l;
    }

    void copy_rows(std::size_t rows, const std::size_t* idx, std::size_t n, Tensor<T>& pred) {
        if (pred.rank() != 2 || pred.shape()[0] != rows || pred.shape()[1] != out_width_) pred = Tensor<T>(Shape{rows, out_width_});
        const T* o = tape_.node(out_index_).out.data;
        for (std::size_t i = 0; i < n; ++i) std::memcpy(pred.data() + idx[i] * out_width_, o + i * out_width_, out_width_ * sizeof(T));
    }

    Module<T>& model_;
    optim::Optimizer<T>& opt_;
    Loss loss_;
    Tape<T> tape_;
    Tensor<T> xb_, yb_, wb_;
    std::vector<Parameter<T>*> extra_;
    std::int32_t out_index_ = -1;
    std::size_t out_width_ = 0;
};

// ---- prediction ---------------------------------------------------------------------------------

/// The model's outputs for every row of x, in eval mode (modes restored afterwards), without
/// gradients, in batches: shape (rows, outputs...). Thread-safe on a shared model that is already
/// in eval mode (nothing is written to it then).
template <class T>
Tensor<T> predict(Module<T>& model, const Tensor<T>& x, std::size_t batch_size = 256) {
    if (x.rank() != 2) throw shape_error("predict: inputs must have shape (events, features), got " + x.shape().str());
    if (batch_size == 0) throw value_error("predict: batch size must be positive");
    // Modes are switched (and restored) only when some module is training: a model already in
    // eval mode is only read, so several threads may predict with it at once.
    const std::vector<bool> before = model.training_modes();
    std::optional<detail::ModeGuard<T>> modes;
    if (std::find(before.begin(), before.end(), true) != before.end()) {
        modes.emplace(model);
        model.eval();
    }
    const std::size_t n = x.shape()[0], f = x.shape()[1];
    Tape<T> t;
    NoGradGuard<T> guard(t);
    Tensor<T> out, xb;
    for (std::size_t start = 0; start < n; start += batch_size) {
        const std::size_t m = std::min(batch_size, n - start);
        t.clear();
        xb.resize(Shape{m, f});
        std::memcpy(xb.data(), x.data() + start * f, m * f * sizeof(T));
        const Var<T> y = model(t.view(xb));
        if (y.shape().rank() == 0 || y.shape()[0] != m)
            throw shape_error("predict: the model output must have one row per event: input " + xb.shape().str() + ", output " + y.shape().str());
        const std::size_t k = y.size() / m;
        if (start == 0) {
            Shape s = y.shape();
            s[0] = n;
            out = Tensor<T>(s);
        }
        std::memcpy(out.data() + start * k, y.data(), m * k * sizeof(T));
    }
    return out;
}

// ---- fit ----------------------------------------------------------------------------------------

/// Trains model on (x, y) with the optimiser for options.epochs epochs of mini-batches and returns
/// the history. Inputs are (events, features), targets (events,) or (events, outputs), weights
/// (events,) or (events, 1) and reach the loss as a (batch, 1) value. The loss is any callable
/// (output, target, const Var* weights or nullptr) -> single-valued Var; default
/// bce_with_logits. Training runs in the modules' own modes (train() by default); validation in
/// eval mode; the modes are put back at the end. The epoch "loss" is the weighted mean of the
/// batch losses (Keras' running mean); "val_loss" combines batches of validation events the
/// same way, which is exact for losses that are (weighted) means over events.
template <class T, class Loss = BceWithLogitsLoss>
History fit(Module<T>& model, const Tensor<T>& x, const Tensor<T>& y, optim::Optimizer<T>& optimizer,
            const FitOptions<T>& o = FitOptions<T>(), Loss loss = Loss{}) {
    const Tensor<T>* w = o.sample_weight;
    const std::size_t n = detail::checked_rows("fit", x, y, w);
    if (n == 0) throw value_error("fit: no events");
    if (o.batch_size == 0) throw value_error("fit: batch size must be positive");

    // Which rows train and which validate.
    Rng rng(o.seed);
    std::vector<std::size_t> train_rows, val_rows;
    const Tensor<T>* vx = nullptr;
    const Tensor<T>* vy = nullptr;
    const Tensor<T>* vw = nullptr;
    if (o.validation_x || o.validation_y) {
        if (!o.validation_x || !o.validation_y) throw value_error("fit: give both validation_x and validation_y");
        vx = o.validation_x;
        vy = o.validation_y;
        vw = o.validation_weight;
        const std::size_t nv = detail::checked_rows("fit (validation set)", *vx, *vy, vw);
        if (vx->shape()[1] != x.shape()[1]) tapir::detail::throw_shape("fit: training vs validation inputs", x.shape(), vx->shape(), "feature counts differ");
        if (vy->size() / (nv ? nv : 1) != y.size() / n) tapir::detail::throw_shape("fit: training vs validation targets", y.shape(), vy->shape(), "output counts differ");
        if ((vw != nullptr) != (w != nullptr)) throw value_error("fit: give weights for both the training and the validation set, or for neither");
        if (nv == 0) throw value_error("fit: empty validation set");
        for (std::size_t i = 0; i < nv; ++i) val_rows.push_back(i);
        for (std::size_t i = 0; i < n; ++i) train_rows.push_back(i);
    } else if (o.validation_split != 0.0) {
        if (!(o.validation_split > 0.0 && o.validation_split < 1.0))
            throw value_error("fit: validation_split must be in [0, 1), got " + std::to_string(o.validation_split));
        const auto nv = static_cast<std::size_t>(std::llround(o.validation_split * static_cast<double>(n)));
        if (nv == 0 || nv >= n)
            throw value_error("fit: validation_split " + std::to_string(o.validation_split) + " of " + std::to_string(n) +
                              " events leaves " + std::to_string(nv) + " for validation and " + std::to_string(n - (nv < n ? nv : n)) +
                              " for training; both need at least one");
        std::vector<std::size_t> perm = rng.permutation(n);
        val_rows.assign(perm.begin(), perm.begin() + static_cast<std::ptrdiff_t>(nv));
        train_rows.assign(perm.begin() + static_cast<std::ptrdiff_t>(nv), perm.end());
        std::sort(val_rows.begin(), val_rows.end());
        std::sort(train_rows.begin(), train_rows.end());
        vx = &x;
        vy = &y;
        vw = w;
    } else {
        for (std::size_t i = 0; i < n; ++i) train_rows.push_back(i);
    }
    const bool has_val = vx != nullptr;
    const std::size_t nt = train_rows.size();
    const std::size_t steps = o.drop_last ? nt / o.batch_size : (nt + o.batch_size - 1) / o.batch_size;
    if (steps == 0)
        throw value_error("fit: drop_last with batch size " + std::to_string(o.batch_size) + " leaves no batch of the " + std::to_string(nt) +
                          " training events");

    History h;
    h.add_column("loss");
    for (const auto& m : o.metrics) {
        if (m.name.empty() || m.name == "loss" || m.name.compare(0, 4, "val_") == 0)
            throw value_error("fit: metric name '" + m.name + "' is empty or reserved");
        if (!m.fn) throw value_error("fit: metric '" + m.name + "' has no function");
        h.add_column(m.name);
    }
    if (has_val) {
        h.add_column("val_loss");
        for (const auto& m : o.metrics) h.add_column("val_" + m.name);
    }
    bool minimise = true;
    if (o.patience > 0) {
        h.monitor = o.monitor.empty() ? (has_val ? "val_loss" : "loss") : o.monitor;
        (void)h[h.monitor];  // names the columns if the monitor is unknown
        const std::string& mon = h.monitor;
        minimise = o.monitor_mode == MonitorMode::min ||
                   (o.monitor_mode == MonitorMode::automatic && mon.size() >= 4 && mon.compare(mon.size() - 4, 4, "loss") == 0);
    }

    Trainer<T, Loss> trainer(model, optimizer, std::move(loss));
    detail::ModeGuard<T> modes(model);
    const std::vector<Parameter<T>*> params = model.parameters();
    const std::vector<NamedBuffer<T>> buffers = model.named_buffers();
    detail::Snapshot<T> best;

    // Metric inputs: predictions by row, gathered per set at the end of an epoch.
    const bool metrics = !o.metrics.empty();
    Tensor<T> pred_all, pred_set, y_train, w_train, y_val, w_val, val_pred;
    auto gather_set = [](const Tensor<T>& src, const std::vector<std::size_t>& rows, Tensor<T>& dst) {
        detail::gather_into(src, src.shape()[0], rows.data(), rows.size(), dst);
    };
    if (metrics && has_val) {
        gather_set(*vy, val_rows, y_val);
        if (vw) gather_set(*vw, val_rows, w_val);
    }

    const bool show = o.verbose == Verbosity::progress || (o.verbose == Verbosity::automatic && detail::stderr_is_terminal());
    using clock = std::chrono::steady_clock;
    std::size_t wait = 0;
    std::vector<double> row;
    char line[256];

    for (std::size_t epoch = 1; epoch <= o.epochs; ++epoch) {
        const auto t0 = clock::now();
        auto last_draw = t0;
        model.set_training_modes(modes.modes);
        if (o.shuffle) rng.shuffle(train_rows.begin(), train_rows.end());
        double loss_sum = 0.0, weight_sum = 0.0;
        for (std::size_t s = 0; s < steps; ++s) {
            const std::size_t start = s * o.batch_size;
            const std::size_t nb = std::min(o.batch_size, nt - start);
            const std::size_t* idx = train_rows.data() + start;
            const T l = trainer.step(x, y, w, idx, nb, metrics ? &pred_all : nullptr);
            if (!std::isfinite(static_cast<double>(l)))
                throw value_error("fit: the loss is " + std::string(l != l ? "NaN" : "infinite") + " at epoch " + std::to_string(epoch) +
                                  ", batch " + std::to_string(s + 1) + " of " + std::to_string(steps) +
                                  " (lower the learning rate, standardise the inputs, or use anomaly mode to find the op)");
            double bw = static_cast<double>(nb);
            if (w) {
                bw = 0.0;
                for (std::size_t i = 0; i < nb; ++i) bw += static_cast<double>((*w)[idx[i]]);
            }
            loss_sum += static_cast<double>(l) * bw;
            weight_sum += bw;
            if (show) {
                const auto now = clock::now();
                if (s + 1 == steps || now - last_draw > std::chrono::milliseconds(100)) {
                    last_draw = now;
                    const int len = detail::format_progress(line + 1, sizeof line - 1, epoch, o.epochs, s + 1, steps, loss_sum / weight_sum);
                    line[0] = '\r';
                    const std::size_t shown = len < 0 ? 0 : std::min(static_cast<std::size_t>(len), sizeof line - 2);
                    std::fwrite(line, 1, shown + 1, stderr);
                }
            }
        }
        row.assign(1, loss_sum / weight_sum);
        if (metrics) {
            gather_set(pred_all, train_rows, pred_set);
            // train_rows is shuffled: gather the targets in the same order.
            gather_set(y, train_rows, y_train);
            if (w) gather_set(*w, train_rows, w_train);
            for (const auto& m : o.metrics) row.push_back(m.fn(pred_set, y_train, w ? &w_train : nullptr));
        }
        if (has_val) {
            model.eval();
            double vsum = 0.0, vwsum = 0.0;
            const std::size_t nv = val_rows.size();
            for (std::size_t start = 0; start < nv; start += o.batch_size) {
                const std::size_t nb = std::min(o.batch_size, nv - start);
                const std::size_t* idx = val_rows.data() + start;
                const T l = trainer.evaluate(*vx, *vy, vw, idx, nb);
                if (metrics) {
                    const std::size_t k = trainer.last_output_width();
                    if (val_pred.rank() != 2 || val_pred.shape()[0] != nv || val_pred.shape()[1] != k) val_pred = Tensor<T>(Shape{nv, k});
                    trainer.copy_last_output(val_pred.data() + start * k);
                }
                double bw = static_cast<double>(nb);
                if (vw) {
                    bw = 0.0;
                    for (std::size_t i = 0; i < nb; ++i) bw += static_cast<double>((*vw)[idx[i]]);
                }
                vsum += static_cast<double>(l) * bw;
                vwsum += bw;
            }
            row.push_back(vsum / vwsum);
            for (const auto& m : o.metrics) row.push_back(m.fn(val_pred, y_val, vw ? &w_val : nullptr));
            model.set_training_modes(modes.modes);
        }
        h.append(row);

        bool stop = false;
        if (o.patience > 0) {
            const double v = h[h.monitor].back();
            const bool better = h.best_epoch == 0 ||
                                (minimise ? v < h.best_value - o.min_delta : v > h.best_value + o.min_delta);
            if (better) {
                h.best_value = v;
                h.best_epoch = epoch;
                wait = 0;
                if (o.restore_best_weights) best.save(params, buffers);
            } else if (++wait >= o.patience) {
                stop = true;
                h.stopped_early = epoch < o.epochs;
            }
        }
        if (!o.callbacks.empty()) {
            EpochEnd<T> info{epoch, o.epochs, h, model, optimizer, false};
            for (const auto& cb : o.callbacks)
                if (cb) cb(info);
            if (info.stop_training) {
                stop = true;
                h.stopped_early = epoch < o.epochs;
            }
        }
        if (show) {
            const double secs = std::chrono::duration<double>(clock::now() - t0).count();
            const std::string s = "\r" + detail::format_epoch_line(epoch, o.epochs, steps, secs, h) + "\n";
            std::fwrite(s.data(), 1, s.size(), stderr);
        }
        if (stop) break;
    }
    if (o.patience > 0 && o.restore_best_weights && h.best_epoch != 0 && h.best_epoch != h.epochs()) best.restore(params, buffers);
    return h;
}

} // namespace nn
} // namespace tapir
