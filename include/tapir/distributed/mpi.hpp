#pragma once
/// Data-parallel training across processes and machines on MPI (OpenMPI, MPICH; SLURM's srun),
/// the model of PyTorch's DistributedDataParallel (Li et al., "PyTorch Distributed", VLDB 2020)
/// and Horovod (Sergeev & Del Balso, arXiv:1802.05799): every rank holds the whole model, trains
/// on its share of each global batch, and the ranks add their gradients with MPI_Allreduce before
/// the same optimiser step on every rank.
///
/// Not part of tapir.hpp: include it only in programs that link MPI (CMake target tapir::mpi,
/// meson dependency tapir_mpi_dep). Contents:
///   - Environment: MPI_Init / MPI_Finalize for the program's lifetime;
///   - Communicator: rank, size, barrier, reductions of metrics across ranks;
///   - broadcast_parameters / broadcast_module: rank 0's initial values to every rank;
///   - GradientAllReduce: bucketed all-reduce of Parameter::grad (sum or average, fp32 or fp64
///     on the wire), weighted by each rank's share of the global batch;
///   - DistributedSampler: the rows of each global batch, shared out by rank, from a permutation
///     seeded per epoch that does not depend on the number of ranks;
///   - DistributedDataParallel::step: the training step helper (local step, error check, gradient
///     all-reduce), for hand-written loops and Trainer-like loops;
///   - all_or_none: an exception on any rank stops every rank at the same point with the failing
///     rank's message, instead of leaving the others waiting in a collective;
///   - Communicator::set_timeout (or TAPIR_MPI_TIMEOUT): a rank that dies or hangs makes the
///     others end the job after that many seconds in a collective, with a clear message;
///   - sync_batch_norm: BatchNorm statistics of the global batch (SyncBatchNorm);
///   - save_checkpoint / load_checkpoint: written by rank 0 atomically, read by rank 0 and sent
///     to every rank, so a run resumes on any number of ranks.
/// The all-reduce is not overlapped with the backward pass (a later step).

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../autodiff/collective.hpp"
#include "../autodiff/parameter.hpp"
#include "../error.hpp"
#include "../nn/layers.hpp"
#include "../nn/module.hpp"
#include "../optim/model_file.hpp"
#include "../optim/optimizer.hpp"
#include "../random.hpp"
#include "../tensor/tensor.hpp"

namespace tapir {
namespace distributed {

/// An MPI call failed, or another rank failed (all_or_none): what() names the rank and the reason.
class distributed_error : public std::runtime_error {
public:
    explicit distributed_error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
inline void check_mpi(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw distributed_error(std::string("MPI: ") + what + " failed: " + std::string(text, static_cast<std::size_t>(len)));
}
template <class T>
MPI_Datatype mpi_type();
template <>
inline MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
inline MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

/// Counts as MPI's int, refusing larger ones (messages are cut below this size anyway).
inline int mpi_count(std::size_t n, const char* what) {
    if (n > 0x7fffffffu) throw distributed_error(std::string("MPI: ") + what + ": " + std::to_string(n) + " elements exceed one message");
    return static_cast<int>(n);
}
} // namespace detail

/// MPI_Init at construction (unless MPI is already initialised) and MPI_Finalize at destruction
/// (if this object initialised it): one per program, first thing in main().
class Environment {
public:
    Environment(int& argc, char**& argv) {
        int on = 0;
        MPI_Initialized(&on);
        if (!on) {
            int provided = 0;
            detail::check_mpi(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
            owner_ = true;
        }
    }
    Environment() {
        int on = 0;
        MPI_Initialized(&on);
        if (!on) {
            int provided = 0;
            detail::check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
            owner_ = true;
        }
    }
    ~Environment() {
        int done = 0;
        MPI_Finalized(&done);
        if (owner_ && !done) MPI_Finalize();
    }
    Environment(const Environment&) = delete;
    Environment& operator=(const Environment&) = delete;

private:
    bool owner_ = false;
};

class Communicator;
[[noreturn]] inline void abort_with(const Communicator& c, const std::string& message, int code = 1);

/// A communicator (MPI_COMM_WORLD by default; not owned) with the reductions training needs.
///
/// Timeout: a rank that is killed or hangs leaves the others waiting in their next collective.
/// mpirun ends the whole job when a rank dies (OpenMPI's default), but a rank that hangs, or a
/// launcher that lets the others run on (srun without --kill-on-bad-exit), does not. With a
/// timeout set, every collective of this library is started non-blocking and waited for with a
/// deadline; past it the rank ends the job with abort_with and a message naming the collective.
/// Set by set_timeout or, at construction, by the environment variable TAPIR_MPI_TIMEOUT
/// (seconds). Copies (DistributedDataParallel, GradientAllReduce) take the value they see.
class Communicator {
public:
    explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
        detail::check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
        detail::check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
        if (const char* env = std::getenv("TAPIR_MPI_TIMEOUT")) {
            char* end = nullptr;
            const double s = std::strtod(env, &end);
            if (end == env || *end != '\0')
                throw value_error(std::string("Communicator: TAPIR_MPI_TIMEOUT must be a number of seconds, got '") + env + "'");
            set_timeout(s);
        }
    }
    int rank() const noexcept { return rank_; }
    int size() const noexcept { return size_; }
    MPI_Comm comm() const noexcept { return comm_; }

    /// Seconds a collective may take before this rank ends the job (0: wait for ever, the default).
    void set_timeout(double seconds) {
        if (!(seconds >= 0.0) || std::isinf(seconds))
            throw value_error("Communicator: the timeout must be a finite number of seconds >= 0, got " + std::to_string(seconds));
        timeout_ = seconds;
    }
    double timeout() const noexcept { return timeout_; }

    /// MPI_Allreduce on this communicator, within the timeout; `what` names it in errors.
    void all_reduce(const void* in, void* out, int count, MPI_Datatype type, MPI_Op op, const char* what) const {
        if (timeout_ <= 0.0) {
            detail::check_mpi(MPI_Allreduce(in, out, count, type, op, comm_), what);
            return;
        }
        MPI_Request req = MPI_REQUEST_NULL;
        detail::check_mpi(MPI_Iallreduce(in, out, count, type, op, comm_, &req), what);
        wait(req, what);
    }
    /// MPI_Bcast on this communicator, within the timeout.
    void bcast(void* buf, int count, MPI_Datatype type, int root, const char* what) const {
        if (timeout_ <= 0.0) {
            detail::check_mpi(MPI_Bcast(buf, count, type, root, comm_), what);
            return;
        }
        MPI_Request req = MPI_REQUEST_NULL;
        detail::check_mpi(MPI_Ibcast(buf, count, type, root, comm_, &req), what);
        wait(req, what);
    }

    void barrier() const {
        if (timeout_ <= 0.0) {
            detail::check_mpi(MPI_Barrier(comm_), "MPI_Barrier");
            return;
        }
        MPI_Request req = MPI_REQUEST_NULL;
        detail::check_mpi(MPI_Ibarrier(comm_, &req), "MPI_Barrier");
        wait(req, "MPI_Barrier");
    }

    /// Sum of v over the ranks (every rank gets it).
    double sum(double v) const {
        double out = 0.0;
        all_reduce(&v, &out, 1, MPI_DOUBLE, MPI_SUM, "MPI_Allreduce (sum)");
        return out;
    }
    /// Element-wise sums over the ranks, in place (a vector of metric sums in one message).
    void sum(std::vector<double>& v) const {
        all_reduce(MPI_IN_PLACE, v.data(), detail::mpi_count(v.size(), "sum"), MPI_DOUBLE, MPI_SUM, "MPI_Allreduce (sum)");
    }
    double max(double v) const {
        double out = 0.0;
        all_reduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, "MPI_Allreduce (max)");
        return out;
    }
    /// The mean of a metric over all events: each rank gives its mean and its event count (or
    /// weight sum); the result is sum(mean_r weight_r) / sum(weight_r) on every rank.
    double weighted_mean(double mean, double weight) const {
        std::vector<double> v{mean * weight, weight};
        sum(v);
        if (!(v[1] > 0.0)) throw value_error("distributed weighted_mean: the weights sum to " + std::to_string(v[1]) + " over the ranks");
        return v[0] / v[1];
    }
    /// Rank root's bytes to every rank (resized on the others).
    void broadcast(std::string& bytes, int root = 0) const {
        unsigned long long n = bytes.size();
        bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root, "MPI_Bcast (size)");
        bytes.resize(static_cast<std::size_t>(n));
        const std::size_t chunk = std::size_t(1) << 30;
        for (std::size_t at = 0; at < bytes.size(); at += chunk) {
            const std::size_t m = std::min(chunk, bytes.size() - at);
            bcast(&bytes[at], static_cast<int>(m), MPI_CHAR, root, "MPI_Bcast (bytes)");
        }
    }

private:
    /// MPI_Test until done (each call also progresses the operation) or past the deadline.
    void wait(MPI_Request& req, const char* what) const {
        const auto start = std::chrono::steady_clock::now();
        const std::chrono::duration<double> limit(timeout_);
        for (;;) {
            int done = 0;
            detail::check_mpi(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
            if (done) return;
            if (std::chrono::steady_clock::now() - start > limit) {
                char secs[32];
                std::snprintf(secs, sizeof secs, "%g", timeout_);
                abort_with(*this, std::string(what) + " did not complete within " + secs +
                                      " s: another rank has died, hung, or is in a different collective (Communicator::set_timeout)");
            }
            std::this_thread::yield();
        }
    }

    MPI_Comm comm_;
    int rank_ = 0, size_ = 1;
    double timeout_ = 0.0;
};

/// Runs f on every rank of c, then checks with one all-reduce whether it threw anywhere: if so,
/// every rank throws distributed_error("rank R failed: message") for the lowest failing rank R,
/// so that no rank is left waiting in a later collective. Call it at step boundaries (the
/// training step helper does), with f containing no collective of its own.
template <class F>
void all_or_none(const Communicator& c, F&& f) {
    std::string msg;
    bool failed = false;
    try {
        f();
    } catch (const std::exception& e) {
        failed = true;
        msg = e.what();
    } catch (...) {
        failed = true;
        msg = "unknown exception";
    }
    int mine = failed ? c.rank() : c.size(), first = 0;
    c.all_reduce(&mine, &first, 1, MPI_INT, MPI_MIN, "MPI_Allreduce (error check)");
    if (first == c.size()) return;
    c.broadcast(msg, first);
    throw distributed_error("rank " + std::to_string(first) + " failed: " + msg);
}

/// For errors that cannot be met at a step boundary: prints "tapir: rank R: message" and calls
/// MPI_Abort, which ends every rank of the job (mpirun and srun then exit non-zero).
[[noreturn]] inline void abort_with(const Communicator& c, const std::string& message, int code) {
    std::fprintf(stderr, "tapir: rank %d: %s\n", c.rank(), message.c_str());
    std::fflush(stderr);
    MPI_Abort(c.comm(), code);
    std::terminate();
}

namespace detail {
/// Tensors packed into one buffer and broadcast from root (values of parameters and buffers).
template <class T>
void broadcast_tensors(const Communicator& c, const std::vector<Tensor<T>*>& ts, int root) {
    std::size_t n = 0;
    for (const Tensor<T>* t : ts) n += t->size();
    std::vector<T> buf(n);
    std::size_t at = 0;
    for (const Tensor<T>* t : ts) at = static_cast<std::size_t>(std::copy(t->begin(), t->end(), buf.begin() + static_cast<std::ptrdiff_t>(at)) - buf.begin());
    // Equal sizes on every rank: a model built differently on some rank is refused, not misread.
    const double mine = static_cast<double>(n);
    if (c.max(mine) != mine || -c.max(-mine) != mine)
        throw distributed_error("broadcast_parameters: the ranks' models differ in size (this rank has " + std::to_string(n) + " values)");
    const std::size_t chunk = std::size_t(1) << 28;
    for (std::size_t i = 0; i < n; i += chunk)
        c.bcast(buf.data() + i, static_cast<int>(std::min(chunk, n - i)), mpi_type<T>(), root, "MPI_Bcast (parameters)");
    at = 0;
    for (Tensor<T>* t : ts) {
        std::copy(buf.begin() + static_cast<std::ptrdiff_t>(at), buf.begin() + static_cast<std::ptrdiff_t>(at + t->size()), t->begin());
        at += t->size();
    }
}
} // namespace detail

/// Rank root's parameter values to every rank, so that all ranks start from the same model
/// (DDP does this at construction).
template <class T>
void broadcast_parameters(const Communicator& c, const std::vector<Parameter<T>*>& params, int root = 0) {
    std::vector<Tensor<T>*> ts;
    for (Parameter<T>* p : params) ts.push_back(&p->value);
    detail::broadcast_tensors(c, ts, root);
}
/// The same for a model's parameters and buffers (BatchNorm running statistics).
template <class T>
void broadcast_module(const Communicator& c, nn::Module<T>& m, int root = 0) {
    std::vector<Tensor<T>*> ts;
    for (Parameter<T>* p : m.parameters()) ts.push_back(&p->value);
    for (auto& b : m.named_buffers()) ts.push_back(b.second);
    detail::broadcast_tensors(c, ts, root);
}

/// What the gradient all-reduce gives every rank: the sum of the ranks' gradients, or their
/// mean; each rank's gradient first scaled by the weight it passes (its share of the batch).
enum class Reduction { sum, average };
/// The precision of the numbers sent: the parameters' own, or double (float gradients summed
/// in double over many ranks lose less).
enum class Wire { native, fp64 };

struct AllReduceOptions {
    Reduction reduction = Reduction::sum;
    Wire wire = Wire::native;
    /// Gradients are sent in buckets of about this many bytes (PyTorch DDP's default 25 MiB):
    /// fewer, larger messages than one per parameter, and a bounded extra buffer.
    std::size_t bucket_bytes = std::size_t(25) << 20;
};

/// Bucketed all-reduce of Parameter::grad over the ranks of a communicator. Buckets are filled
/// in parameter order; their buffers are kept, so a steady-state call allocates nothing.
template <class T>
class GradientAllReduce {
public:
    GradientAllReduce(const Communicator& c, std::vector<Parameter<T>*> params, const AllReduceOptions& o = AllReduceOptions{})
        : comm_(c), params_(std::move(params)), opt_(o) {
        if (o.bucket_bytes == 0) throw value_error("GradientAllReduce: bucket_bytes must be positive");
        const std::size_t elem = o.wire == Wire::fp64 ? sizeof(double) : sizeof(T);
        const std::size_t cap = std::max<std::size_t>(1, o.bucket_bytes / elem);
        std::size_t begin = 0, count = 0;
        for (std::size_t i = 0; i < params_.size(); ++i) {
            if (params_[i] == nullptr) throw value_error("GradientAllReduce: parameter #" + std::to_string(i) + " is a null pointer");
            if (count > 0 && count + params_[i]->size() > cap) {
                buckets_.push_back({begin, i, count});
                begin = i;
                count = 0;
            }
            count += params_[i]->size();
        }
        if (count > 0 || begin < params_.size()) buckets_.push_back({begin, params_.size(), count});
        std::size_t largest = 0;
        for (const auto& b : buckets_) largest = std::max(largest, b.count);
        if (o.wire == Wire::fp64) wide_.resize(largest);
        else narrow_.resize(largest);
    }

    std::size_t buckets() const noexcept { return buckets_.size(); }

    /// Every rank's gradient times its weight, summed (or averaged) over the ranks, into
    /// Parameter::grad on every rank. With weight = local events / global batch and a loss
    /// that is a mean over the local events, the sum is the full-batch gradient.
    void operator()(T weight = T(1)) {
        for (const auto& b : buckets_) {
            if (opt_.wire == Wire::fp64) reduce_bucket(b, wide_, weight);
            else reduce_bucket(b, narrow_, weight);
        }
    }

private:
    struct Bucket {
        std::size_t begin, end, count;
    };
    template <class W>
    void reduce_bucket(const Bucket& b, std::vector<W>& buf, T weight) {
        std::size_t at = 0;
        for (std::size_t i = b.begin; i < b.end; ++i) {
            Tensor<T>& g = params_[i]->grad;
            if (g.size() != params_[i]->size()) g = Tensor<T>(params_[i]->shape());
            for (std::size_t j = 0; j < g.size(); ++j) buf[at + j] = static_cast<W>(weight == T(1) ? g[j] : g[j] * weight);
            at += g.size();
        }
        comm_.all_reduce(MPI_IN_PLACE, buf.data(), detail::mpi_count(b.count, "gradient bucket"), detail::mpi_type<W>(), MPI_SUM,
                         "MPI_Allreduce (gradients)");
        const W scale = opt_.reduction == Reduction::average ? W(1) / static_cast<W>(comm_.size()) : W(1);
        at = 0;
        for (std::size_t i = b.begin; i < b.end; ++i) {
            Tensor<T>& g = params_[i]->grad;
            for (std::size_t j = 0; j < g.size(); ++j) g[j] = static_cast<T>(scale == W(1) ? buf[at + j] : buf[at + j] * scale);
            at += g.size();
        }
    }

    Communicator comm_;
    std::vector<Parameter<T>*> params_;
    AllReduceOptions opt_;
    std::vector<Bucket> buckets_;
    std::vector<T> narrow_;
    std::vector<double> wide_;
};

/// The rows of each global batch, shared out by rank. Each epoch draws one permutation of the
/// events from Rng(seed, epoch), the same on every rank and for every number of ranks; global
/// batch s is its rows [s B, (s + 1) B) and rank r takes the contiguous part
/// [B r / R, B (r + 1) / R) of it. So the union of the ranks' batches is the batch one process
/// with batch B would train on, and a run resumed on another number of ranks sees the same
/// global batches.
class DistributedSampler {
public:
    DistributedSampler(std::size_t events, std::size_t global_batch, int rank, int ranks, std::uint64_t seed = 42, bool shuffle = true)
        : events_(events), batch_(global_batch), rank_(rank), ranks_(ranks), seed_(seed), shuffle_(shuffle) {
        if (events == 0) throw value_error("DistributedSampler: no events");
        if (global_batch == 0) throw value_error("DistributedSampler: the global batch size must be positive");
        if (ranks <= 0 || rank < 0 || rank >= ranks)
            throw value_error("DistributedSampler: rank " + std::to_string(rank) + " is not in [0, " + std::to_string(ranks) + ")");
        set_epoch(0);
    }
    DistributedSampler(std::size_t events, std::size_t global_batch, const Communicator& c, std::uint64_t seed = 42, bool shuffle = true)
        : DistributedSampler(events, global_batch, c.rank(), c.size(), seed, shuffle) {}

    /// Draws the epoch's permutation (call at the start of each epoch, as PyTorch's set_epoch).
    void set_epoch(std::uint64_t epoch) {
        epoch_ = epoch;
        if (shuffle_) {
            Rng rng(seed_ ^ (0x9e3779b97f4a7c15ULL * (epoch + 1)));
            perm_ = rng.permutation(events_);
        } else {
            perm_.resize(events_);
            for (std::size_t i = 0; i < events_; ++i) perm_[i] = i;
        }
    }
    std::uint64_t epoch() const noexcept { return epoch_; }
    /// Global batches per epoch (the last one may be smaller).
    std::size_t steps() const noexcept { return (events_ + batch_ - 1) / batch_; }
    /// Events in global batch s.
    std::size_t global_size(std::size_t s) const { return std::min(batch_, events_ - check_step(s) * batch_); }
    /// This rank's rows of global batch s: begin pointer into the permutation and count (may be 0).
    std::pair<const std::size_t*, std::size_t> local_batch(std::size_t s) const {
        const std::size_t g = global_size(s);
        const auto r = static_cast<std::size_t>(rank_), n = static_cast<std::size_t>(ranks_);
        const std::size_t b = g * r / n, e = g * (r + 1) / n;
        return {perm_.data() + s * batch_ + b, e - b};
    }
    /// The whole global batch s (every rank's rows, in rank order).
    std::pair<const std::size_t*, std::size_t> global_batch(std::size_t s) const { return {perm_.data() + s * batch_, global_size(s)}; }

private:
    std::size_t check_step(std::size_t s) const {
        if (s >= steps())
            throw value_error("DistributedSampler: step " + std::to_string(s) + " out of range for " + std::to_string(steps()) + " steps per epoch");
        return s;
    }
    std::size_t events_, batch_;
    int rank_, ranks_;
    std::uint64_t seed_;
    bool shuffle_;
    std::uint64_t epoch_ = 0;
    std::vector<std::size_t> perm_;
};

/// The ranks of a communicator as a SumGroup (autodiff/collective.hpp), for synchronised
/// BatchNorm: sums are MPI_Allreduce calls (within the communicator's timeout); the loss weight
/// is this rank's share of the global batch, set by DistributedDataParallel::step each step
/// (1 / size until then: equal shares).
template <class T>
class RankGroup final : public SumGroup<T> {
public:
    explicit RankGroup(const Communicator& c) : comm_(c), weight_(T(1) / static_cast<T>(c.size())) {}
    void sum(T* v, std::size_t n) override {
        comm_.all_reduce(MPI_IN_PLACE, v, detail::mpi_count(n, "synchronised BatchNorm"), detail::mpi_type<T>(), MPI_SUM,
                         "MPI_Allreduce (synchronised BatchNorm)");
    }
    T loss_weight() const override { return weight_; }
    void set_loss_weight(T w) {
        if (!(w > T(0))) throw value_error("RankGroup: the loss weight must be positive, got " + std::to_string(static_cast<double>(w)));
        weight_ = w;
    }
    const Communicator& communicator() const noexcept { return comm_; }

private:
    Communicator comm_;
    T weight_;
};

/// Synchronised BatchNorm (PyTorch's SyncBatchNorm.convert_sync_batchnorm): every BatchNorm of
/// model, nested ones too, then normalises in training with the statistics of the global batch
/// (the union of the ranks' batches) and updates its running statistics with them, so that R
/// ranks with B / R events each train as one process with B. Costs 3 small all-reduces per layer
/// in the forward pass and 2 in the backward. Call it before building DistributedDataParallel
/// on the model, which then sets the group's loss weights. Returns the group the layers share.
template <class T>
std::shared_ptr<RankGroup<T>> sync_batch_norm(nn::Module<T>& model, const Communicator& c) {
    auto group = std::make_shared<RankGroup<T>>(c);
    std::size_t layers = 0;
    for (nn::Module<T>* m : model.modules())
        if (auto* bn = dynamic_cast<nn::BatchNorm<T>*>(m)) {
            bn->synchronise(group);
            ++layers;
        }
    if (layers == 0) throw value_error("sync_batch_norm: the model has no BatchNorm layer");
    return group;
}

/// The training step across ranks. At construction rank 0's parameter values go to every rank.
/// step(local, global, fn): fn() computes this rank's gradient of its mean loss over its
/// `local` events into Parameter::grad (a tape and backward(), a Trainer-like gatherer, or
/// nn::DataParallel over threads) and returns that mean loss; then one all-reduce checks that
/// no rank threw (all_or_none), the gradients are all-reduced weighted by local / global, and
/// the global mean loss is returned. The caller zeroes the gradients before and runs the
/// optimiser step after, the same on every rank.
/// With synchronised BatchNorm (sync_batch_norm before construction) fn holds collectives: every
/// rank must have events (checked first, on every rank), and an exception in fn on one rank
/// ends the job (abort_with, with its message), since the others wait inside fn.
template <class T>
class DistributedDataParallel {
public:
    DistributedDataParallel(const Communicator& c, std::vector<Parameter<T>*> params, const AllReduceOptions& o = AllReduceOptions{})
        : comm_(c), reduce_(c, params, o) {
        broadcast_parameters(c, params);
    }
    DistributedDataParallel(const Communicator& c, nn::Module<T>& model, const AllReduceOptions& o = AllReduceOptions{})
        : comm_(c), reduce_(c, model.parameters(), o) {
        broadcast_module(c, model);
        for (nn::Module<T>* m : model.modules())
            if (auto* bn = dynamic_cast<nn::BatchNorm<T>*>(m))
                if (auto g = std::dynamic_pointer_cast<RankGroup<T>>(bn->group()))
                    if (std::find(groups_.begin(), groups_.end(), g) == groups_.end()) groups_.push_back(std::move(g));
    }
    /// Whether the model's BatchNorm layers are synchronised across the ranks (sync_batch_norm).
    bool synchronised_batch_norm() const noexcept { return !groups_.empty(); }

    const Communicator& communicator() const noexcept { return comm_; }

    template <class F>
    T step(std::size_t local, std::size_t global, F&& fn) {
        if (global == 0) throw value_error("DistributedDataParallel::step: empty global batch");
        if (local > global)
            throw value_error("DistributedDataParallel::step: " + std::to_string(local) + " local events in a global batch of " + std::to_string(global));
        const double w = static_cast<double>(local) / static_cast<double>(global);
        double loss = 0.0;
        if (!groups_.empty()) {
            all_or_none(comm_, [&] {
                if (local == 0)
                    throw value_error("DistributedDataParallel::step: with synchronised BatchNorm every rank needs events; rank " +
                                      std::to_string(comm_.rank()) + " has none of the global batch of " + std::to_string(global));
            });
            for (auto& g : groups_) g->set_loss_weight(static_cast<T>(w));
            try {
                loss = static_cast<double>(fn()) * w;
            } catch (const std::exception& e) {
                abort_with(comm_, std::string("failed in a step with synchronised BatchNorm (the other ranks wait in its collectives): ") + e.what());
            } catch (...) {
                abort_with(comm_, "failed in a step with synchronised BatchNorm (the other ranks wait in its collectives): unknown exception");
            }
        } else {
            all_or_none(comm_, [&] {
                if (local > 0) loss = static_cast<double>(fn()) * w;
            });
        }
        const double total = comm_.sum(loss);
        reduce_(static_cast<T>(w));
        return static_cast<T>(total);
    }

private:
    Communicator comm_;
    GradientAllReduce<T> reduce_;
    std::vector<std::shared_ptr<RankGroup<T>>> groups_;
};

/// Rank 0 writes the model's parameters, buffers and the optimiser's state to path (the tapir
/// model file, written to a temporary file and renamed, so a crash leaves the previous
/// checkpoint whole); the other ranks wait, and a failure on rank 0 is raised on every rank.
template <class T>
void save_checkpoint(const Communicator& c, const std::string& path, nn::Module<T>& model, optim::Optimizer<T>* optimizer = nullptr) {
    all_or_none(c, [&] {
        if (c.rank() == 0) optim::save_model(path, model.named_parameters(), model.named_buffers(), optimizer);
    });
}

/// Rank 0 reads the checkpoint and sends its bytes to every rank, which loads them (so only
/// rank 0 needs the file; the number of ranks may differ from the run that wrote it). A missing,
/// corrupt or mismatched file is refused on every rank with the loader's message.
template <class T>
void load_checkpoint(const Communicator& c, const std::string& path, nn::Module<T>& model, optim::Optimizer<T>* optimizer = nullptr) {
    std::string bytes;
    all_or_none(c, [&] {
        if (c.rank() != 0) return;
        std::ifstream in(path, std::ios::binary);
        if (!in) throw format_error("load_checkpoint: cannot open '" + path + "'");
        bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    });
    c.broadcast(bytes, 0);
    all_or_none(c, [&] { optim::load_model_from_string(bytes, model.named_parameters(), model.named_buffers(), optimizer, path); });
}

} // namespace distributed
} // namespace tapir
