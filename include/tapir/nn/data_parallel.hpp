#pragma once
/// Data-parallel training on the threads of one process (the single-machine half of PyTorch's
/// DistributedDataParallel; Li et al., "PyTorch Distributed", VLDB 2020). A batch of B events is
/// cut into one contiguous shard per worker; each worker records forward and backward on its own
/// tape, with the same Parameter objects (no weight copies: every tape reads the one set of
/// values), and its tape's gradient sink (autodiff/tape.hpp) sends the parameter gradients into
/// the worker's own buffers. The buffers are then added into Parameter::grad in worker order
/// 0, 1, ..., N-1 (each worker adds an element range of that sum, the same bits as one thread
/// adding it all), so a step gives the same bits for the same thread count on every run, and the
/// caller runs one optimiser step (split over simd::num_threads() threads when that is > 1:
/// call simd::set_num_threads(N) too; optim/optimizer.hpp).
///
/// A shard's loss is a mean over its events; Shard::backward seeds it with the shard's fraction
/// of the batch (n_k / B, or its share of the event weights), so the sum over shards is the
/// gradient of the full-batch mean (the same up to float rounding: the sums run in another order).
///
/// Workers run on the persistent pool (simd/thread_pool.hpp). Inside a worker
/// simd::in_parallel_region() is true, so GEMMs stay on the worker's thread (no nested region,
/// no wait on a pool that is already busy). Layers whose forward pass changes their own state
/// see the worker through nn::detail::current_replica(): Dropout draws its masks from the
/// worker's stream, BatchNorm normalises with its shard's statistics and only worker 0 updates
/// the running statistics (DDP without SyncBatchNorm). An exception in a worker is rethrown to
/// the caller (the first in worker order) once every worker has finished; the pool stays usable.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../autodiff/backward.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../random.hpp"
#include "../simd/elementwise.hpp"
#include "../simd/fp_mode.hpp"
#include "../simd/thread_pool.hpp"
#include "module.hpp"

namespace tapir {
namespace nn {

template <class T>
class DataParallel;

/// One worker of a data-parallel step: its rows [begin, end) of the batch, its tape, its
/// gradient buffers (one per parameter, in the order given to DataParallel) and its loss weight.
template <class T>
class Shard final : public GradSink<T> {
public:
    std::size_t worker() const noexcept { return worker_; }
    std::size_t begin() const noexcept { return begin_; }
    std::size_t end() const noexcept { return end_; }
    std::size_t size() const noexcept { return end_ - begin_; }
    /// The shard's fraction of the batch, size() / B: the factor of its mean loss.
    T weight() const noexcept { return weight_; }

    /// The worker's own tape, cleared before each step; its parameter gradients go to grads().
    Tape<T>& tape() noexcept { return tape_; }
    /// The gradient buffer of parameter i (DataParallel's order) after this worker's backward.
    const Tensor<T>& grad(std::size_t i) const { return grads_.at(i); }

    /// Backward of a loss that is a mean over this shard's events, scaled by weight(), so that
    /// the shards add up to the full-batch gradient; adds weight() * loss to the step's loss.
    void backward(const Var<T>& loss) { backward(loss, weight_); }
    /// The same with the shard's fraction given: its share of the batch's event weights for a
    /// weighted mean, sum of w over the shard / sum of w over the batch.
    void backward(const Var<T>& loss, T fraction) {
        if (loss.size() != 1) throw shape_error("DataParallel: the shard loss must be a single value, got shape " + loss.shape().str());
        Tape<T>& t = loss.tape();
        if (t.grad_sink() != this)
            throw value_error("DataParallel: the shard loss was recorded on a tape that does not send its gradients to worker " +
                              std::to_string(worker_) + " (use shard.tape(), or attach the tape with shard.attach(tape))");
        tapir::backward(loss, t.full(loss.shape(), fraction));
        loss_ += static_cast<double>(fraction) * static_cast<double>(loss.item());
    }

    /// Sends the parameter gradients of backward() on another tape (one the caller keeps per
    /// worker, as fit's batch gatherers do) to this worker's buffers.
    void attach(Tape<T>& t) noexcept { t.set_grad_sink(this); }

    /// The worker's random stream (Dropout masks in this worker are drawn from it).
    Rng& rng() noexcept { return rng_; }

    Tensor<T>& grad_of(Parameter<T>& p) override {
        const auto it = std::lower_bound(index_->begin(), index_->end(), &p,
                                         [](const std::pair<Parameter<T>*, std::size_t>& e, const Parameter<T>* q) {
                                             return std::less<const Parameter<T>*>()(e.first, q);
                                         });
        if (TAPIR_UNLIKELY(it == index_->end() || it->first != &p))
            throw value_error("DataParallel: parameter '" + p.name + "' is used on worker " + std::to_string(worker_) +
                              "'s tape but is not among the parameters given to DataParallel");
        return grads_[it->second];
    }

private:
    friend class DataParallel<T>;
    Shard(std::size_t worker, const std::vector<Parameter<T>*>& params, const std::vector<std::pair<Parameter<T>*, std::size_t>>* index,
          std::uint64_t seed)
        : worker_(worker), index_(index), rng_(seed ^ (0x9e3779b97f4a7c15ULL * (worker + 1))) {
        grads_.reserve(params.size());
        for (Parameter<T>* p : params) grads_.emplace_back(p->shape());
        tape_.set_grad_sink(this);
        replica_.index = worker;
        replica_.rng = &rng_;
    }

    std::size_t worker_;
    std::size_t begin_ = 0, end_ = 0;
    T weight_ = T(0);
    double loss_ = 0.0;
    const std::vector<std::pair<Parameter<T>*, std::size_t>>* index_;
    std::vector<Tensor<T>> grads_;
    Tape<T> tape_;
    Rng rng_;
    detail::Replica replica_;
    std::exception_ptr error_;
};

/// Data-parallel steps over a fixed set of parameters and a fixed number of threads.
///
///     nn::DataParallel<float> dp(model.parameters(), 2);
///     opt.zero_grad();
///     float loss = dp.run(batch, [&](nn::Shard<float>& s) {
///         Tape<float>& t = s.tape();
///         const Var<float> x = t.view(...rows s.begin() to s.end() of the batch...);
///         s.backward(loss::mse(model(x), t.view(...)));
///     });
///     opt.step();
///
/// The function may record anything on the shard's tape (several models, grad() with
/// create_graph for a gradient penalty, tapir::backward with its own scaling); parameters it uses
/// must be among the ones given here. It runs concurrently on the workers: it must not write
/// shared state (the model's parameters are only read; Parameter::grad is written after the
/// workers finish).
template <class T>
class DataParallel {
public:
    /// Workers for these parameters on `threads` threads (the caller's and threads - 1 of the
    /// pool's); seed starts the workers' random streams (Dropout).
    DataParallel(std::vector<Parameter<T>*> params, std::size_t threads, std::uint64_t seed = 0x5eed) : params_(std::move(params)) {
        if (threads == 0) throw value_error("DataParallel: the number of threads must be at least 1");
        for (std::size_t i = 0; i < params_.size(); ++i) {
            if (params_[i] == nullptr) throw value_error("DataParallel: parameter #" + std::to_string(i) + " is a null pointer");
            index_.emplace_back(params_[i], i);
        }
        std::sort(index_.begin(), index_.end(), [](const auto& a, const auto& b) { return std::less<const Parameter<T>*>()(a.first, b.first); });
        for (std::size_t i = 1; i < index_.size(); ++i)
            if (index_[i].first == index_[i - 1].first)
                throw value_error("DataParallel: parameter '" + index_[i].first->name + "' is given twice");
        offsets_.assign(params_.size() + 1, 0);
        for (std::size_t k = 0; k < threads; ++k) shards_.push_back(std::unique_ptr<Shard<T>>(new Shard<T>(k, params_, &index_, seed)));
    }
    /// Workers for a model's parameters.
    DataParallel(Module<T>& model, std::size_t threads, std::uint64_t seed = 0x5eed) : DataParallel(model.parameters(), threads, seed) {}
    DataParallel(const DataParallel&) = delete;
    DataParallel& operator=(const DataParallel&) = delete;

    std::size_t threads() const noexcept { return shards_.size(); }
    Shard<T>& shard(std::size_t k) { return *shards_.at(k); }
    const std::vector<Parameter<T>*>& parameters() const noexcept { return params_; }

    /// One data-parallel step over a batch of `batch` events: fn(shard) on every worker with a
    /// non-empty shard (fewer events than threads leave some workers idle), then the workers'
    /// gradients are added into Parameter::grad in worker order (accumulating, as backward()
    /// does: zero them first). Returns the sum of the weighted shard losses given to
    /// Shard::backward, i.e. the full-batch mean loss. An exception thrown by fn on any worker is
    /// rethrown here after all workers stopped, and Parameter::grad is then left untouched.
    template <class F>
    T run(std::size_t batch, F&& fn) {
        if (batch == 0) throw value_error("DataParallel: empty batch");
        const simd::FlushDenormals flush;  // the workers inherit the caller's mode (simd/thread_pool.hpp)
        const std::size_t n = shards_.size();
        std::size_t used = 0;
        for (std::size_t k = 0; k < n; ++k) {
            Shard<T>& s = *shards_[k];
            s.begin_ = batch * k / n;
            s.end_ = batch * (k + 1) / n;
            s.weight_ = static_cast<T>(static_cast<double>(s.size()) / static_cast<double>(batch));
            s.loss_ = 0.0;
            s.error_ = nullptr;
            if (s.size() > 0) used = k + 1;
        }
        auto part = [&](std::size_t k) {
            Shard<T>& s = *shards_[k];
            if (s.size() == 0) return;
            detail::Replica*& slot = detail::current_replica();
            detail::Replica* const prev = slot;
            slot = &s.replica_;
            try {
                for (Tensor<T>& g : s.grads_) g.fill(T(0));
                s.tape_.clear();
                fn(s);
            } catch (...) {
                s.error_ = std::current_exception();
            }
            slot = prev;
        };
        if (used == 1) part(0);  // one worker: the caller's thread, GEMMs free to use the pool
        else simd::parallel_run(used, part);
        for (std::size_t k = 0; k < used; ++k)
            if (shards_[k]->error_) {
                std::exception_ptr e = shards_[k]->error_;
                for (auto& s : shards_) s->error_ = nullptr;
                std::rethrow_exception(e);
            }
        std::size_t total = 0;
        for (std::size_t i = 0; i < params_.size(); ++i) {
            Tensor<T>& pg = params_[i]->grad;
            if (pg.shape() != params_[i]->shape()) pg = Tensor<T>(params_[i]->shape());
            offsets_[i] = total;
            total += pg.size();
        }
        offsets_[params_.size()] = total;
        // The reduction is split over the workers by element ranges (each element still gets
        // grad + g_0 + g_1 + ... in worker order: the same bits on any number of threads); run
        // serially it was a tenth of a two-thread WGAN-GP step.
        const std::size_t parts = used > 1 && total >= reduce_parallel_min ? used : 1;
        auto reduce = [&](std::size_t k) { reduce_range(used, total / W * k / parts * W, k + 1 == parts ? total : total / W * (k + 1) / parts * W); };
        if (parts == 1) reduce(0);
        else simd::parallel_run(parts, reduce);
        double loss = 0.0;
        for (std::size_t k = 0; k < used; ++k) loss += shards_[k]->loss_;
        return static_cast<T>(loss);
    }

private:
    /// Reduction chunks: 64-byte aligned boundaries between threads, and a chunk small enough that
    /// the running sum stays in L1 while every worker's buffer is added to it (one pass over
    /// memory, not one per worker).
    static constexpr std::size_t W = 64 / sizeof(T), chunk = 2048, reduce_parallel_min = std::size_t(1) << 15;

    /// Parameter::grad[e] += the workers' gradients, in worker order, for flat elements [lo, hi).
    void reduce_range(std::size_t used, std::size_t lo, std::size_t hi) {
        std::size_t i = static_cast<std::size_t>(std::upper_bound(offsets_.begin(), offsets_.end() - 1, lo) - offsets_.begin()) - 1;
        for (; lo < hi; ++i) {
            const std::size_t b = lo - offsets_[i], e = std::min(hi, offsets_[i + 1]) - offsets_[i];
            T* pg = params_[i]->grad.data();
            for (std::size_t c = b; c < e; c += chunk) {
                const std::size_t len = std::min(chunk, e - c);
                for (std::size_t k = 0; k < used; ++k)
                    if (shards_[k]->size() > 0) simd::add(pg + c, shards_[k]->grads_[i].data() + c, pg + c, len);
            }
            lo = offsets_[i] + e;
        }
    }

    std::vector<Parameter<T>*> params_;
    std::vector<std::pair<Parameter<T>*, std::size_t>> index_;
    std::vector<std::size_t> offsets_;  ///< flat offset of each parameter's gradient, and the total
    std::vector<std::unique_ptr<Shard<T>>> shards_;
};

} // namespace nn
} // namespace tapir
