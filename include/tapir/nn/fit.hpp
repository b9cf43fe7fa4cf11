#pragma once
/// A Keras-like training loop: fit(model, x, y, optimizer, options, loss) with mini-batches,
/// validation (split or set), metrics, early stopping, per-epoch callbacks and a progress
/// display; evaluate() and predict() for trained models. Each also takes a model of several
/// inputs (Module::forward_many, nn::Model) given one tensor per input: fit(model, {&particles,
/// &mask}, y, adam). History, metrics and callbacks are in callbacks.hpp, the display in
/// progress.hpp, the losses are loss/'s functions.
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
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../autodiff/backward.hpp"
#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../data/dataset.hpp"
#include "../error.hpp"
#include "../loss/classification.hpp"
#include "../optim/optimizer.hpp"
#include "../random.hpp"
#include "../simd/fp_mode.hpp"
#include "callbacks.hpp"
#include "data_parallel.hpp"
#include "module.hpp"
#include "progress.hpp"

namespace tapir {
namespace nn {

// ---- losses ---------------------------------------------------------------------------------

/// The default loss: binary cross-entropy on logits (loss::binary_cross_entropy_with_logits),
/// weighted by per-event weights if given. Targets must lie in [0, 1]: fit() checks every
/// label before training and names the row of the first one outside (soft labels are fine).
struct BceWithLogitsLoss {
    template <class T>
    Var<T> operator()(const Var<T>& out, const Var<T>& target, const Var<T>* weight) const {
        return loss::binary_cross_entropy_with_logits(out, target, weight);
    }
    /// fit() and evaluate() call this on the whole target tensor before the first batch.
    template <class T>
    void check_targets(const Tensor<T>& y, const char* who) const {
        const std::size_t rows = y.rank() ? y.shape()[0] : 1;
        loss::check_binary_targets(y.data(), rows, rows ? y.size() / rows : 0, who);
    }
};

/// Mean squared error over events and outputs (loss::mse); with weights w (batch, 1):
/// sum_i w_i sum_k (o_ik - y_ik)^2 / (K sum_i w_i).
struct MseLoss {
    template <class T>
    Var<T> operator()(const Var<T>& out, const Var<T>& target, const Var<T>* weight) const {
        return loss::mse(out, target, weight);
    }
};

// ---- options ------------------------------------------------------------------------------------

template <class T>
struct FitOptions {
    std::size_t epochs = 10;
    std::size_t batch_size = 32;
    bool shuffle = true;
    bool drop_last = false;  ///< skip the last, incomplete batch (BatchNorm needs >= 2 events)
    std::uint64_t seed = 42;  ///< fixes the validation split and the batch order
    /// Threads of data-parallel training (nn/data_parallel.hpp): each batch is cut into this many
    /// shards, one per thread, whose gradients are summed in a fixed order. The loss must be a
    /// (weighted) mean over events. Results are the same on every run for a given thread count and
    /// equal the one-thread results up to float rounding (BatchNorm: per-shard statistics).
    std::size_t threads = 1;

    const Tensor<T>* sample_weight = nullptr;  ///< per-event weights, (n,) or (n, 1)

    /// Fraction of events held out for validation, drawn at random with the seed (Keras takes
    /// the last rows instead, which is wrong for files sorted by class). Ignored when
    /// validation_x is given.
    double validation_split = 0.0;
    const Tensor<T>* validation_x = nullptr;
    /// For a model of several inputs: one validation tensor per input (instead of validation_x).
    std::vector<const Tensor<T>*> validation_inputs;
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
    std::FILE* progress_stream = nullptr;  ///< where the display goes; null = stderr
};

namespace detail {
/// A batch's weight in the epoch means: its event weights' sum, or its size without weights.
template <class T>
double batch_weight(const Tensor<T>* w, const std::size_t* idx, std::size_t nb) {
    if (!w) return static_cast<double>(nb);
    double bw = 0.0;
    for (std::size_t i = 0; i < nb; ++i) bw += static_cast<double>((*w)[idx[i]]);
    return bw;
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

/// The events of a model of several inputs: every input has one row per event along its first
/// axis; targets and weights as for one input.
template <class T>
std::size_t checked_rows(const char* who, const std::vector<const Tensor<T>*>& xs, const Tensor<T>& y, const Tensor<T>* w) {
    if (xs.empty()) throw value_error(std::string(who) + ": no input tensors given");
    for (std::size_t k = 0; k < xs.size(); ++k) {
        if (xs[k] == nullptr) throw value_error(std::string(who) + ": input #" + std::to_string(k) + " is a null pointer");
        if (xs[k]->rank() == 0)
            throw shape_error(std::string(who) + ": input #" + std::to_string(k) + " must have an events axis, got shape " + xs[k]->shape().str());
        if (xs[k]->shape()[0] != xs[0]->shape()[0])
            tapir::detail::throw_shape((std::string(who) + ": input #0 vs input #" + std::to_string(k)).c_str(), xs[0]->shape(), xs[k]->shape(),
                                       "every input needs one row per event");
    }
    const std::size_t n = xs[0]->shape()[0];
    if (y.rank() == 0 || y.rank() > 2 || y.shape()[0] != n)
        tapir::detail::throw_shape(who, xs[0]->shape(), y.shape(), "targets must be (events,) or (events, outputs) with one row per input row");
    if (w && (w->size() != n || w->rank() == 0 || w->shape()[0] != n))
        tapir::detail::throw_shape(who, xs[0]->shape(), w->shape(), "weights must be (events,) or (events, 1) with one per input row");
    return n;
}
template <class T>
std::size_t input_rows(const Tensor<T>& x) { return x.shape()[0]; }
template <class T>
std::size_t input_rows(const std::vector<const Tensor<T>*>& xs) { return xs[0]->shape()[0]; }

/// Training and validation inputs must agree in everything but the number of events.
template <class T>
void check_same_features(const Tensor<T>& x, const Tensor<T>& vx) {
    if (vx.shape()[1] != x.shape()[1]) tapir::detail::throw_shape("fit: training vs validation inputs", x.shape(), vx.shape(), "feature counts differ");
}
template <class T>
void check_same_features(const std::vector<const Tensor<T>*>& xs, const std::vector<const Tensor<T>*>& vxs) {
    if (xs.size() != vxs.size())
        throw value_error("fit: " + std::to_string(xs.size()) + " training inputs but " + std::to_string(vxs.size()) + " validation inputs");
    for (std::size_t k = 0; k < xs.size(); ++k) {
        Shape a = xs[k]->shape(), b = vxs[k]->shape();
        a[0] = b[0] = 0;
        if (a != b)
            tapir::detail::throw_shape(("fit: training vs validation input #" + std::to_string(k)).c_str(), xs[k]->shape(), vxs[k]->shape(),
                                       "shapes differ beyond the events axis");
    }
}

template <class U>
struct non_deduced {
    using type = U;
};

/// Whether a loss functor checks its targets (BceWithLogitsLoss: labels in [0, 1]).
template <class L, class T, class = void>
struct checks_targets : std::false_type {};
template <class L, class T>
struct checks_targets<L, T, std::void_t<decltype(std::declval<const L&>().check_targets(std::declval<const Tensor<T>&>(), ""))>>
    : std::true_type {};

template <class T, class Loss>
void check_targets(const Loss& l, const Tensor<T>& y, const char* who) {
    if constexpr (checks_targets<Loss, T>::value) l.check_targets(y, who);
}

/// Rows idx[0..n) of src (rows, ...) into dst as (n, columns) (data/dataset.hpp's gather_rows,
/// viewed as a matrix), without allocating once dst has held that many elements.
template <class T>
void gather_into(const Tensor<T>& src, const std::size_t* idx, std::size_t n, Tensor<T>& dst) {
    const std::size_t rows = src.rank() ? src.shape()[0] : 0;
    data::gather_rows(src, idx, n, dst);
    if (dst.rank() != 2) dst.reshape_(Shape{n, rows ? src.size() / rows : 0});
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

namespace detail {

/// Forward pass and loss on gathered rows, on one tape that is cleared and reused: the part of
/// a training step that evaluation shares.
template <class T, class Loss>
class BatchLoss {
public:
    BatchLoss(Module<T>& model, Loss loss, const char* who) : model_(model), loss_(std::move(loss)), who_(who) {}
    BatchLoss(const BatchLoss&) = delete;
    BatchLoss& operator=(const BatchLoss&) = delete;

    Tape<T>& tape() noexcept { return tape_; }
    Module<T>& model() noexcept { return model_; }
    const Loss& loss() const noexcept { return loss_; }

    Var<T> record(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n) {
        check_batch(checked_rows(who_, x, y, w), idx, n);
        tape_.clear();
        gather_into(x, idx, n, xb_);
        gather_into(y, idx, n, yb_);
        const Var<T> xv = tape_.view(xb_), yv = tape_.view(yb_);
        return finish(model_(xv), yv, xb_.shape(), w, idx, n);
    }
    /// The same for a model of several inputs: rows idx of every input, then forward_many.
    Var<T> record(const std::vector<const Tensor<T>*>& xs, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n) {
        check_batch(checked_rows(who_, xs, y, w), idx, n);
        tape_.clear();
        xbs_.resize(xs.size());
        views_.resize(xs.size());
        for (std::size_t k = 0; k < xs.size(); ++k) data::gather_rows(*xs[k], idx, n, xbs_[k]);
        gather_into(y, idx, n, yb_);
        for (std::size_t k = 0; k < xs.size(); ++k) views_[k] = tape_.view(xbs_[k]);
        const Var<T> yv = tape_.view(yb_);
        return finish(model_.forward_many(views_), yv, xbs_[0].shape(), w, idx, n);
    }

    template <class X>
    T evaluate(const X& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n) {
        NoGradGuard<T> guard(tape_);
        return record(x, y, w, idx, n).item();
    }

    void copy_last_output(T* dst) const {
        const Ref<T>& o = tape_.node(out_index_).out;
        std::memcpy(dst, o.data, o.size() * sizeof(T));
    }
    std::size_t last_output_width() const noexcept { return out_width_; }

    /// The last outputs into pred's rows idx[i] (pred shaped (rows, outputs) on first use).
    void copy_rows(std::size_t rows, const std::size_t* idx, std::size_t n, Tensor<T>& pred) {
        if (pred.rank() != 2 || pred.shape()[0] != rows || pred.shape()[1] != out_width_) pred = Tensor<T>(Shape{rows, out_width_});
        const T* o = tape_.node(out_index_).out.data;
        for (std::size_t i = 0; i < n; ++i) std::memcpy(pred.data() + idx[i] * out_width_, o + i * out_width_, out_width_ * sizeof(T));
    }

private:
    void check_batch(std::size_t rows, const std::size_t* idx, std::size_t n) const {
        if (n == 0) throw value_error(std::string(who_) + ": empty batch");
        for (std::size_t i = 0; i < n; ++i)
            if (TAPIR_UNLIKELY(idx[i] >= rows))
                throw value_error(std::string(who_) + ": row index " + std::to_string(idx[i]) + " out of range for " + std::to_string(rows) +
                                  " events");
    }
    Var<T> finish(const Var<T>& out, const Var<T>& yv, const Shape& input, const Tensor<T>* w, const std::size_t* idx, std::size_t n) {
        if (out.shape().rank() == 0 || out.shape()[0] != n)
            throw shape_error(std::string(who_) + ": the model output must have one row per event: input " + input.str() +
                              ", output " + out.shape().str());
        out_index_ = out.index();
        out_width_ = out.size() / n;
        Var<T> l;
        if (w) {
            gather_into(*w, idx, n, wb_);
            const Var<T> wv = tape_.view(wb_);
            l = loss_(out, yv, &wv);
        } else {
            l = loss_(out, yv, static_cast<const Var<T>*>(nullptr));
        }
        if (l.size() != 1) throw shape_error(std::string(who_) + ": the loss must be a single value, got shape " + l.shape().str());
        return l;
    }

    Module<T>& model_;
    Loss loss_;
    const char* who_;
    Tape<T> tape_;
    Tensor<T> xb_, yb_, wb_;
    std::vector<Tensor<T>> xbs_;  ///< several inputs: the gathered rows of each
    std::vector<Var<T>> views_;
    std::int32_t out_index_ = -1;
    std::size_t out_width_ = 0;
};

} // namespace detail

/// One reusable training step: gathers the batch rows into kept tensors, clears and reuses one
/// tape, runs forward, loss, backward and the optimiser. Steady-state steps allocate nothing.
template <class T, class Loss = BceWithLogitsLoss>
class Trainer {
public:
    Trainer(Module<T>& model, optim::Optimizer<T>& optimizer, Loss loss = Loss{})
        : batch_(model, std::move(loss), "Trainer"), opt_(optimizer) {
        // Model parameters the optimiser does not update still get gradients: keep them from
        // accumulating across steps.
        for (Parameter<T>* p : model.parameters())
            if (std::find(opt_.parameters().begin(), opt_.parameters().end(), p) == opt_.parameters().end()) extra_.push_back(p);
    }
    Trainer(const Trainer&) = delete;
    Trainer& operator=(const Trainer&) = delete;

    Tape<T>& tape() noexcept { return batch_.tape(); }
    Module<T>& model() noexcept { return batch_.model(); }

    /// One optimisation step on rows idx[0..n) of x, y (and per-event weights w); returns the
    /// batch loss. With pred, the batch outputs are also written to pred's rows idx[i] (pred
    /// is shaped (rows of x, outputs) on first use).
    T step(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n,
           Tensor<T>* pred = nullptr) {
        return run_step(x, y, w, idx, n, pred);
    }
    /// The same for a model of several inputs, one tensor per input ({&particles, &mask}).
    T step(const std::vector<const Tensor<T>*>& xs, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n,
           Tensor<T>* pred = nullptr) {
        return run_step(xs, y, w, idx, n, pred);
    }

    /// The loss on rows idx[0..n) without gradients or updates (in the modules' current modes).
    T evaluate(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n) {
        return batch_.evaluate(x, y, w, idx, n);
    }
    T evaluate(const std::vector<const Tensor<T>*>& xs, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n) {
        return batch_.evaluate(xs, y, w, idx, n);
    }

    /// Copies the outputs of the last step or evaluation (batch rows x last_output_width()) to dst.
    void copy_last_output(T* dst) const { batch_.copy_last_output(dst); }

    /// Outputs per event of the last step or evaluation.
    std::size_t last_output_width() const noexcept { return batch_.last_output_width(); }

    detail::BatchLoss<T, Loss>& batch_loss() noexcept { return batch_; }

private:
    template <class X>
    T run_step(const X& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n, Tensor<T>* pred) {
        const simd::FlushDenormals flush;  // the whole step, forward included (simd/fp_mode.hpp)
        const Var<T> l = batch_.record(x, y, w, idx, n);
        for (Parameter<T>* p : extra_) p->zero_grad();
        opt_.zero_grad();
        backward(l);
        opt_.step();
        if (pred) batch_.copy_rows(detail::input_rows(x), idx, n, *pred);
        return l.item();
    }

    detail::BatchLoss<T, Loss> batch_;
    optim::Optimizer<T>& opt_;
    std::vector<Parameter<T>*> extra_;
};

/// Trainer's step on several threads (FitOptions::threads): one batch gatherer and tape per
/// worker, shards of the batch trained by DataParallel, one optimiser step. Steady-state steps
/// allocate nothing. The loss must be a (weighted) mean over events: each shard's loss is scaled
/// by its share of the batch (of the event weights, when given).
template <class T, class Loss = BceWithLogitsLoss>
class ParallelTrainer {
public:
    ParallelTrainer(Module<T>& model, optim::Optimizer<T>& optimizer, std::size_t threads, const Loss& loss = Loss{}, std::uint64_t seed = 0x5eed)
        : dp_(model, threads, seed), opt_(optimizer) {
        for (std::size_t k = 0; k < threads; ++k) {
            batches_.emplace_back(new detail::BatchLoss<T, Loss>(model, loss, "fit"));
            dp_.shard(k).attach(batches_.back()->tape());
        }
        for (Parameter<T>* p : model.parameters())
            if (std::find(opt_.parameters().begin(), opt_.parameters().end(), p) == opt_.parameters().end()) extra_.push_back(p);
    }
    ParallelTrainer(const ParallelTrainer&) = delete;
    ParallelTrainer& operator=(const ParallelTrainer&) = delete;

    DataParallel<T>& data_parallel() noexcept { return dp_; }
    /// The first worker's gatherer, for validation on the caller's thread.
    detail::BatchLoss<T, Loss>& batch_loss() noexcept { return *batches_[0]; }

    /// One optimisation step on rows idx[0..n) of x, y (and weights w), as Trainer::step.
    template <class X>
    T step(const X& x, const Tensor<T>& y, const Tensor<T>* w, const std::size_t* idx, std::size_t n, Tensor<T>* pred = nullptr) {
        const double total = detail::batch_weight(w, idx, n);
        if (w && !(total != 0.0)) throw value_error("fit: the event weights of a batch sum to zero; data-parallel shards cannot be weighted");
        for (Parameter<T>* p : extra_) p->zero_grad();
        opt_.zero_grad();
        const T l = dp_.run(n, [&](Shard<T>& s) {
            const std::size_t* sidx = idx + s.begin();
            const Var<T> ls = batches_[s.worker()]->record(x, y, w, sidx, s.size());
            s.backward(ls, w ? static_cast<T>(detail::batch_weight(w, sidx, s.size()) / total) : s.weight());
        });
        opt_.step();
        if (pred)
            for (std::size_t k = 0; k < dp_.threads(); ++k)
                if (dp_.shard(k).size() > 0) batches_[k]->copy_rows(detail::input_rows(x), idx + dp_.shard(k).begin(), dp_.shard(k).size(), *pred);
        return l;
    }

private:
    DataParallel<T> dp_;
    optim::Optimizer<T>& opt_;
    std::vector<std::unique_ptr<detail::BatchLoss<T, Loss>>> batches_;
    std::vector<Parameter<T>*> extra_;
};

namespace detail {

/// The loss over the rows of a set in batches, combined as the weighted mean of the batch
/// losses (exact for losses that are weighted means over events); with pred, the outputs
/// (rows.size(), outputs) too. fit's validation and evaluate() share it.
template <class T, class Loss, class X>
double set_loss(BatchLoss<T, Loss>& b, const X& x, const Tensor<T>& y, const Tensor<T>* w, const std::vector<std::size_t>& rows,
                std::size_t batch_size, Tensor<T>* pred) {
    double vsum = 0.0, vwsum = 0.0;
    const std::size_t nv = rows.size();
    for (std::size_t start = 0; start < nv; start += batch_size) {
        const std::size_t nb = std::min(batch_size, nv - start);
        const std::size_t* idx = rows.data() + start;
        const T l = b.evaluate(x, y, w, idx, nb);
        if (pred) {
            const std::size_t k = b.last_output_width();
            if (pred->rank() != 2 || pred->shape()[0] != nv || pred->shape()[1] != k) *pred = Tensor<T>(Shape{nv, k});
            b.copy_last_output(pred->data() + start * k);
        }
        const double bw = batch_weight(w, idx, nb);
        vsum += static_cast<double>(l) * bw;
        vwsum += bw;
    }
    return vsum / vwsum;
}

} // namespace detail

// ---- prediction ---------------------------------------------------------------------------------

namespace detail {
/// predict() in eval mode. Modes are switched (and restored by `modes`) only when some module is
/// training: a model already in eval mode is only read, so several threads may predict with it.
template <class T>
void eval_for_predict(Module<T>& model, std::optional<ModeGuard<T>>& modes) {
    const std::vector<bool> before = model.training_modes();
    if (std::find(before.begin(), before.end(), true) != before.end()) {
        modes.emplace(model);
        model.eval();
    }
}

/// predict(): a batch's outputs y (one row per event of the batch input) into rows start... of
/// out, which the first batch shapes (n, outputs...).
template <class T>
void store_rows(const Var<T>& y, const Shape& input, std::size_t start, std::size_t n, Tensor<T>& out) {
    const std::size_t m = input[0];
    if (y.shape().rank() == 0 || y.shape()[0] != m)
        throw shape_error("predict: the model output must have one row per event: input " + input.str() + ", output " + y.shape().str());
    const std::size_t k = y.size() / m;
    if (start == 0) {
        Shape s = y.shape();
        s[0] = n;
        out = Tensor<T>(s);
    }
    std::memcpy(out.data() + start * k, y.data(), m * k * sizeof(T));
}
} // namespace detail

/// The model's outputs for every row of x, in eval mode (modes restored afterwards), without
/// gradients, in batches: shape (rows, outputs...); (0, outputs...) for zero rows. Thread-safe on
/// a shared model that is already in eval mode (nothing is written to it then).
template <class T>
Tensor<T> predict(Module<T>& model, const Tensor<T>& x, std::size_t batch_size = 256) {
    if (x.rank() != 2) throw shape_error("predict: inputs must have shape (events, features), got " + x.shape().str());
    if (batch_size == 0) throw value_error("predict: batch size must be positive");
    std::optional<detail::ModeGuard<T>> modes;
    detail::eval_for_predict(model, modes);
    const std::size_t n = x.shape()[0], f = x.shape()[1];
    if (n == 0) {  // no batch to run: the shape of one row's output, with zero rows
        Shape s = model.output_shape(Shape{1, f});
        if (s.rank() == 0) throw shape_error("predict: the model output must have one row per event, got shape " + s.str());
        s[0] = 0;
        return Tensor<T>(s);
    }
    Tape<T> t;
    NoGradGuard<T> guard(t);
    Tensor<T> out, xb;
    for (std::size_t start = 0; start < n; start += batch_size) {
        const std::size_t m = std::min(batch_size, n - start);
        t.clear();
        xb.resize(Shape{m, f});
        std::memcpy(xb.data(), x.data() + start * f, m * f * sizeof(T));
        detail::store_rows(model(t.view(xb)), xb.shape(), start, n, out);
    }
    return out;
}

/// predict() for a model of several inputs: one tensor per model input, each with one row per
/// event along its first axis; outputs (rows, outputs...).
template <class T>
Tensor<T> predict(Module<T>& model, const std::vector<const Tensor<T>*>& inputs, std::size_t batch_size = 256) {
    if (inputs.empty()) throw value_error("predict: no input tensors given");
    for (std::size_t k = 0; k < inputs.size(); ++k) {
        if (inputs[k] == nullptr) throw value_error("predict: input #" + std::to_string(k) + " is a null pointer");
        if (inputs[k]->rank() == 0 || inputs[k]->shape()[0] != inputs[0]->shape()[0])
            tapir::detail::throw_shape(("predict: input #0 vs input #" + std::to_string(k)).c_str(), inputs[0]->shape(), inputs[k]->shape(),
                                       "every input needs one row per event");
    }
    if (batch_size == 0) throw value_error("predict: batch size must be positive");
    std::optional<detail::ModeGuard<T>> modes;
    detail::eval_for_predict(model, modes);
    const std::size_t n = inputs[0]->shape()[0];
    std::vector<Shape> shapes;
    for (const Tensor<T>* x : inputs) shapes.push_back(x->shape());
    if (n == 0) {
        for (Shape& s : shapes) s[0] = 1;
        Shape s = model.output_shape_many(shapes);
        if (s.rank() == 0) throw shape_error("predict: the model output must have one row per event, got shape " + s.str());
        s[0] = 0;
        return Tensor<T>(s);
    }
    Tape<T> t;
    NoGradGuard<T> guard(t);
    Tensor<T> out;
    std::vector<Tensor<T>> xb(inputs.size());
    std::vector<Var<T>> views(inputs.size());
    for (std::size_t start = 0; start < n; start += batch_size) {
        const std::size_t m = std::min(batch_size, n - start);
        t.clear();
        for (std::size_t k = 0; k < inputs.size(); ++k) {
            Shape s = shapes[k];
            s[0] = m;
            const std::size_t row = s.numel() / m;
            xb[k].resize(s);
            std::memcpy(xb[k].data(), inputs[k]->data() + start * row, m * row * sizeof(T));
            views[k] = t.view(xb[k]);
        }
        detail::store_rows(model.forward_many(views), xb[0].shape(), start, n, out);
    }
    return out;
}

// ---- evaluation ---------------------------------------------------------------------------------

/// The loss and metrics of a trained model on a data set, Keras' model.evaluate.
struct Evaluation {
    double loss = std::numeric_limits<double>::quiet_NaN();
    std::vector<std::pair<std::string, double>> metrics;  ///< in the order asked for

    /// "loss" or a metric's name.
    double operator[](const std::string& name) const {
        if (name == "loss") return loss;
        std::string known = "loss";
        for (const auto& m : metrics) {
            if (m.first == name) return m.second;
            known += ", " + m.first;
        }
        throw value_error("Evaluation: no value '" + name + "' (values: " + known + ")");
    }
};

namespace detail {
template <class T, class Loss, class X>
Evaluation evaluate_impl(Module<T>& model, const X& x, const Tensor<T>& y, const std::vector<Metric<T>>& metrics, const Tensor<T>* weights,
                         std::size_t batch_size, Loss loss) {
    const std::size_t n = detail::checked_rows("evaluate", x, y, weights);
    if (n == 0) throw value_error("evaluate: no events");
    if (batch_size == 0) throw value_error("evaluate: batch size must be positive");
    for (const auto& m : metrics)
        if (m.name.empty() || m.name == "loss" || !m.fn) throw value_error("evaluate: metric '" + m.name + "' has no function or a reserved name");
    detail::check_targets(loss, y, "evaluate");
    detail::ModeGuard<T> modes(model);
    model.eval();
    detail::BatchLoss<T, Loss> b(model, std::move(loss), "evaluate");
    std::vector<std::size_t> rows(n);
    for (std::size_t i = 0; i < n; ++i) rows[i] = i;
    Tensor<T> pred, yy, ww;
    Evaluation e;
    e.loss = detail::set_loss(b, x, y, weights, rows, batch_size, metrics.empty() ? nullptr : &pred);
    if (!metrics.empty()) {
        detail::gather_into(y, rows.data(), n, yy);
        if (weights) detail::gather_into(*weights, rows.data(), n, ww);
        for (const auto& m : metrics) e.metrics.emplace_back(m.name, m.fn(pred, yy, weights ? &ww : nullptr));
    }
    return e;
}
} // namespace detail

/// Loss (the same loss as fit's, default BCE on logits) and metrics of model on (x, y[, weights])
/// in eval mode, without gradients, in batches of batch_size; modes are restored. With the
/// validation set and fit's batch size, the loss equals the last "val_loss" of fit's history bit
/// for bit.
template <class T, class Loss = BceWithLogitsLoss>
Evaluation evaluate(Module<T>& model, const Tensor<T>& x, const Tensor<T>& y, const std::vector<Metric<T>>& metrics = {},
                    const typename detail::non_deduced<Tensor<T>>::type* weights = nullptr, std::size_t batch_size = 32,
                    Loss loss = Loss{}) {
    return detail::evaluate_impl(model, x, y, metrics, weights, batch_size, std::move(loss));
}
/// evaluate() for a model of several inputs: one tensor per model input ({&particles, &mask}).
template <class T, class Loss = BceWithLogitsLoss>
Evaluation evaluate(Module<T>& model, const std::vector<const Tensor<T>*>& inputs, const Tensor<T>& y, const std::vector<Metric<T>>& metrics = {},
                    const typename detail::non_deduced<Tensor<T>>::type* weights = nullptr, std::size_t batch_size = 32,
                    Loss loss = Loss{}) {
    return detail::evaluate_impl(model, inputs, y, metrics, weights, batch_size, std::move(loss));
}


// ---- fit ----------------------------------------------------------------------------------------

namespace detail {
/// fit() for one input tensor (X = Tensor) or one per model input (X = vector of pointers);
/// given_vx is the validation input (validation_x or validation_inputs), vname its option's name.
template <class T, class Loss, class X>
History fit_impl(Module<T>& model, const X& x, const X* given_vx, const char* vname, const Tensor<T>& y, optim::Optimizer<T>& optimizer,
                 const FitOptions<T>& o, Loss loss) {
    const Tensor<T>* w = o.sample_weight;
    const std::size_t n = detail::checked_rows("fit", x, y, w);
    if (n == 0) throw value_error("fit: no events");
    if (o.batch_size == 0) throw value_error("fit: batch size must be positive");

    // Which rows train and which validate.
    Rng rng(o.seed);
    std::vector<std::size_t> train_rows, val_rows;
    const X* vx = nullptr;
    const Tensor<T>* vy = nullptr;
    const Tensor<T>* vw = nullptr;
    if (given_vx || o.validation_y) {
        if (!given_vx || !o.validation_y) throw value_error(std::string("fit: give both ") + vname + " and validation_y");
        vx = given_vx;
        vy = o.validation_y;
        vw = o.validation_weight;
        const std::size_t nv = detail::checked_rows("fit (validation set)", *vx, *vy, vw);
        detail::check_same_features(x, *vx);
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
    detail::check_targets(loss, y, "fit");
    if (vy && vy != &y) detail::check_targets(loss, *vy, "fit (validation set)");
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
        minimise = detail::monitor_minimises(h.monitor, o.monitor_mode);
    }

    if (o.threads == 0) throw value_error("fit: threads must be at least 1");
    std::optional<Trainer<T, Loss>> serial;
    std::optional<ParallelTrainer<T, Loss>> parallel;
    if (o.threads > 1) parallel.emplace(model, optimizer, o.threads, loss, o.seed);
    else serial.emplace(model, optimizer, std::move(loss));
    detail::BatchLoss<T, Loss>& batch_loss = parallel ? parallel->batch_loss() : serial->batch_loss();
    detail::ModeGuard<T> modes(model);
    const std::vector<Parameter<T>*> params = model.parameters();
    const std::vector<NamedBuffer<T>> buffers = model.named_buffers();
    detail::Snapshot<T> best;

    // Metric inputs: predictions by row, gathered per set at the end of an epoch.
    const bool metrics = !o.metrics.empty();
    Tensor<T> pred_all, pred_set, y_train, w_train, y_val, w_val, val_pred;
    auto gather_set = [](const Tensor<T>& src, const std::vector<std::size_t>& rows, Tensor<T>& dst) {
        detail::gather_into(src, rows.data(), rows.size(), dst);
    };
    if (metrics && has_val) {
        gather_set(*vy, val_rows, y_val);
        if (vw) gather_set(*vw, val_rows, w_val);
    }

    detail::ProgressDisplay display(o.verbose, o.progress_stream);
    using clock = std::chrono::steady_clock;
    std::size_t wait = 0;
    std::vector<double> row;

    for (std::size_t epoch = 1; epoch <= o.epochs; ++epoch) {
        const auto t0 = clock::now();
        display.start_epoch(t0);
        model.set_training_modes(modes.modes);
        if (o.shuffle) rng.shuffle(train_rows.begin(), train_rows.end());
        double loss_sum = 0.0, weight_sum = 0.0;
        for (std::size_t s = 0; s < steps; ++s) {
            const std::size_t start = s * o.batch_size;
            const std::size_t nb = std::min(o.batch_size, nt - start);
            const std::size_t* idx = train_rows.data() + start;
            Tensor<T>* pred = metrics ? &pred_all : nullptr;
            const T l = parallel ? parallel->step(x, y, w, idx, nb, pred) : serial->step(x, y, w, idx, nb, pred);
            if (!std::isfinite(static_cast<double>(l)))
                throw value_error("fit: the loss is " + std::string(l != l ? "NaN" : "infinite") + " at epoch " + std::to_string(epoch) +
                                  ", batch " + std::to_string(s + 1) + " of " + std::to_string(steps) +
                                  " (lower the learning rate, standardise the inputs, or use anomaly mode to find the op)");
            const double bw = detail::batch_weight(w, idx, nb);
            loss_sum += static_cast<double>(l) * bw;
            weight_sum += bw;
            if (display.bar()) display.step(epoch, o.epochs, s + 1, steps, loss_sum / weight_sum);
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
            row.push_back(detail::set_loss(batch_loss, *vx, *vy, vw, val_rows, o.batch_size, metrics ? &val_pred : nullptr));
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
        if (display.active()) display.end_epoch(epoch, o.epochs, steps, std::chrono::duration<double>(clock::now() - t0).count(), h);
        if (stop) break;
    }
    if (o.patience > 0 && o.restore_best_weights && h.best_epoch != 0 && h.best_epoch != h.epochs()) best.restore(params, buffers);
    return h;
}
} // namespace detail

/// Trains model on (x, y) with the optimiser for options.epochs epochs of mini-batches and returns
/// the history. Inputs are (events, features), targets (events,) or (events, outputs), weights
/// (events,) or (events, 1) and reach the loss as a (batch, 1) value. The loss is any callable
/// (output, target, const Var* weights or nullptr) -> single-valued Var; default
/// loss::binary_cross_entropy_with_logits, whose targets must lie in [0, 1] (a label outside is
/// refused before training, with its row and value). Training runs in the modules' own modes (train() by default); validation in
/// eval mode; the modes are put back at the end. The epoch "loss" is the weighted mean of the
/// batch losses (Keras' running mean); "val_loss" combines batches of validation events the
/// same way, which is exact for losses that are (weighted) means over events.
template <class T, class Loss = BceWithLogitsLoss>
History fit(Module<T>& model, const Tensor<T>& x, const Tensor<T>& y, optim::Optimizer<T>& optimizer,
            const FitOptions<T>& o = FitOptions<T>(), Loss loss = Loss{}) {
    if (!o.validation_inputs.empty()) throw value_error("fit: validation_inputs is for a model of several inputs; give validation_x");
    return detail::fit_impl(model, x, o.validation_x, "validation_x", y, optimizer, o, std::move(loss));
}
/// fit() for a model of several inputs (Module::forward_many, nn::Model): one tensor per model
/// input, in its input order, each with one row per event along its first axis (of any rank,
/// e.g. particles (events, 100, 4) and their mask (events, 100)); validation sets through
/// FitOptions::validation_inputs or validation_split. Batches are gathered as for one input, so
/// steady-state steps allocate nothing.
template <class T, class Loss = BceWithLogitsLoss>
History fit(Module<T>& model, const std::vector<const Tensor<T>*>& inputs, const Tensor<T>& y, optim::Optimizer<T>& optimizer,
            const FitOptions<T>& o = FitOptions<T>(), Loss loss = Loss{}) {
    if (o.validation_x) throw value_error("fit: a model of several inputs takes FitOptions::validation_inputs, not validation_x");
    return detail::fit_impl(model, inputs, o.validation_inputs.empty() ? nullptr : &o.validation_inputs, "validation_inputs", y, optimizer, o,
                            std::move(loss));
}

} // namespace nn
} // namespace tapir
