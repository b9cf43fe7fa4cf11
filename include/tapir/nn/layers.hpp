#pragma once
/// Layers: Dense (fused matmul + bias + activation), activation layers, Softmax, Dropout,
/// BatchNorm and LayerNorm.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "../autodiff/collective.hpp"
#include "../autodiff/norm.hpp"
#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../random.hpp"
#include "../error.hpp"
#include "init.hpp"
#include "module.hpp"

namespace tapir {
namespace nn {

/// The conventional slope of an activation that has one: 0.01 for leaky ReLU, 1 for ELU.
inline double default_alpha(Activation act) noexcept {
    return act == Activation::leaky_relu ? 0.01 : (act == Activation::elu ? 1.0 : 0.0);
}

// ---- Dense ----------------------------------------------------------------------------------

struct DenseOptions {
    Activation activation = Activation::none;
    std::optional<double> alpha;  ///< leaky ReLU slope or ELU scale; default_alpha() when unset
    bool bias = true;
    Init kernel_init = Init::glorot_uniform();  ///< Keras' defaults: Glorot uniform kernel, zero bias
    Init bias_init = Init::zeros();
};

/// y = act(x W + b), recorded as ONE tape node (tapir::dense) with a fused backward.
/// Weight layout follows Keras: `weight` has shape (in, out), so y = x W with x (batch, in);
/// PyTorch's nn.Linear stores the transpose (out, in). `bias` has shape (out,).
template <class T>
class Dense : public Cloneable<Dense<T>, Module<T>> {
public:
    Parameter<T> weight;  ///< (in, out)
    Parameter<T> bias;    ///< (out,); empty without bias

    Dense(std::size_t in, std::size_t out, Rng& rng, Activation act = Activation::none)
        : Dense(in, out, rng, options_for(act)) {}
    Dense(std::size_t in, std::size_t out, Rng& rng, const DenseOptions& opt)
        : weight("weight", Tensor<T>(Shape{in, out})),
          act_(opt.activation),
          alpha_(static_cast<T>(opt.alpha ? *opt.alpha : default_alpha(opt.activation))),
          has_bias_(opt.bias) {
        if (in == 0 || out == 0)
            throw value_error("Dense: input and output sizes must be positive, got " + std::to_string(in) + " -> " + std::to_string(out));
        opt.kernel_init.apply(weight.value, rng);
        if (has_bias_) {
            bias = Parameter<T>("bias", Tensor<T>(Shape{out}));
            opt.bias_init.apply(bias.value, rng);
        }
    }

    std::size_t in_features() const noexcept { return weight.value.shape()[0]; }
    std::size_t out_features() const noexcept { return weight.value.shape()[1]; }
    bool has_bias() const noexcept { return has_bias_; }
    Activation activation() const noexcept { return act_; }
    T alpha() const noexcept { return alpha_; }

    Var<T> forward(const Var<T>& x) override { return apply(x, act_, alpha_); }

    bool can_fuse_activation() const noexcept override { return act_ == Activation::none; }
    /// This layer followed by an activation, as one dense node (what Sequential calls).
    Var<T> forward_fused(const Var<T>& x, Activation act, T alpha) override {
        if (act_ != Activation::none)
            throw value_error(std::string("Dense::forward_fused: the layer already applies ") + activation_name(act_));
        return apply(x, act, alpha);
    }

    Shape output_shape(const Shape& in) const override {
        check_input(in);
        return Shape{in[0], out_features()};
    }
    LayerKind kind() const override { return LayerKind::dense; }
    std::string type_name() const override { return "Dense"; }
    std::string describe() const override {
        std::string s = "Dense";
        if (act_ != Activation::none) {
            s += std::string("(") + activation_name(act_);
            if (act_ == Activation::leaky_relu || act_ == Activation::elu) s += ", " + tapir::detail::number_text(static_cast<double>(alpha_));
            s += ")";
        }
        return s;
    }

protected:
    void collect_parameters(std::vector<NamedParameter<T>>& out) override {
        out.emplace_back("weight", &weight);
        if (has_bias_) out.emplace_back("bias", &bias);
    }

private:
    static DenseOptions options_for(Activation act) {
        DenseOptions o;
        o.activation = act;
        return o;
    }
    void check_input(const Shape& s) const {
        if (TAPIR_UNLIKELY(s.rank() != 2 || s[1] != in_features()))
            throw shape_error("Dense(" + std::to_string(in_features()) + " -> " + std::to_string(out_features()) +
                              "): expected input of shape (batch, " + std::to_string(in_features()) + "), got " + s.str());
    }
    Var<T> apply(const Var<T>& x, Activation act, T alpha) {
        check_input(x.shape());
        Tape<T>& t = x.tape();
        const Var<T> w = this->use(t, weight);
        if (!has_bias_) return dense(x, w, nullptr, act, alpha);
        const Var<T> b = this->use(t, bias);
        return dense(x, w, &b, act, alpha);
    }

    Activation act_;
    T alpha_;
    bool has_bias_;
};

// ---- activations ----------------------------------------------------------------------------

/// An elementwise activation as a layer. Sequential fuses it into a preceding Dense.
template <class T>
class ActivationLayer : public Cloneable<ActivationLayer<T>, Module<T>> {
public:
    explicit ActivationLayer(Activation act, T alpha = T(0)) : act_(act), alpha_(alpha) {}

    Activation activation() const noexcept { return act_; }
    T alpha() const noexcept { return alpha_; }

    Var<T> forward(const Var<T>& x) override {
        switch (act_) {
        case Activation::none: return x;
        case Activation::relu: return relu(x);
        case Activation::leaky_relu: return leaky_relu(x, alpha_);
        case Activation::elu: return elu(x, alpha_);
        case Activation::tanh: return tanh(x);
        case Activation::sigmoid: return sigmoid(x);
        case Activation::softplus: return softplus(x);
        }
        return x;
    }
    Activation fusable_activation() const noexcept override { return act_; }
    T activation_alpha() const noexcept override { return alpha_; }

    Shape output_shape(const Shape& in) const override { return in; }
    LayerKind kind() const override { return LayerKind::activation; }
    std::string type_name() const override {
        switch (act_) {
        case Activation::none: return "Identity";
        case Activation::relu: return "ReLU";
        case Activation::leaky_relu: return "LeakyReLU";
        case Activation::elu: return "ELU";
        case Activation::tanh: return "Tanh";
        case Activation::sigmoid: return "Sigmoid";
        case Activation::softplus: return "Softplus";
        }
        return "?";
    }
    std::string describe() const override {
        if (act_ == Activation::leaky_relu || act_ == Activation::elu)
            return type_name() + "(" + tapir::detail::number_text(static_cast<double>(alpha_)) + ")";
        return type_name();
    }

private:
    Activation act_;
    T alpha_;
};

namespace detail {
/// ReLU, Sigmoid, Tanh, Softplus and Identity: an ActivationLayer whose activation is fixed by the type.
template <class Derived, class T, Activation A>
class FixedActivation : public Cloneable<Derived, ActivationLayer<T>> {
public:
    FixedActivation() : Cloneable<Derived, ActivationLayer<T>>(A) {}
};
} // namespace detail

template <class T>
struct ReLU : detail::FixedActivation<ReLU<T>, T, Activation::relu> {};
template <class T>
struct Sigmoid : detail::FixedActivation<Sigmoid<T>, T, Activation::sigmoid> {};
template <class T>
struct Tanh : detail::FixedActivation<Tanh<T>, T, Activation::tanh> {};
template <class T>
struct Softplus : detail::FixedActivation<Softplus<T>, T, Activation::softplus> {};
template <class T>
struct Identity : detail::FixedActivation<Identity<T>, T, Activation::none> {};
/// LeakyReLU and ELU keep their slope or scale alpha.
template <class T>
struct LeakyReLU : Cloneable<LeakyReLU<T>, ActivationLayer<T>> {
    explicit LeakyReLU(T alpha = T(0.01)) : LeakyReLU::Cloneable(Activation::leaky_relu, alpha) {}
};
template <class T>
struct ELU : Cloneable<ELU<T>, ActivationLayer<T>> {
    explicit ELU(T alpha = T(1)) : ELU::Cloneable(Activation::elu, alpha) {}
};

/// Softmax along an axis (the last by default). Not fused: it couples the outputs of a row.
template <class T>
class Softmax : public Cloneable<Softmax<T>, Module<T>> {
public:
    explicit Softmax(std::int64_t axis = -1) : axis_(axis) {}
    std::int64_t axis() const noexcept { return axis_; }
    Var<T> forward(const Var<T>& x) override { return softmax(x, axis_); }
    Shape output_shape(const Shape& in) const override {
        tapir::detail::normalize_axis(axis_, in, "Softmax");
        return in;
    }
    LayerKind kind() const override { return LayerKind::softmax; }
    std::string type_name() const override { return "Softmax"; }

private:
    std::int64_t axis_;
};

// ---- Dropout --------------------------------------------------------------------------------

/// Inverted dropout: in training each element is zeroed with probability p and the survivors
/// are scaled by 1/(1-p), so eval mode is the identity. The mask stream comes from the layer's
/// own Rng, so a seed reproduces it; in a data-parallel worker it comes from the worker's stream
/// (seeded by the DataParallel seed and the worker index), so the masks depend on the thread count.
template <class T>
class Dropout : public Cloneable<Dropout<T>, Module<T>> {
public:
    explicit Dropout(double p, std::uint64_t seed = 0x5eed) : p_(check_p(p)), rng_(seed) {}
    Dropout(double p, Rng& rng) : p_(check_p(p)), rng_(rng.next_u64()) {}

    double p() const noexcept { return p_; }
    void reseed(std::uint64_t seed) noexcept { rng_.reseed(seed); }

    Var<T> forward(const Var<T>& x) override {
        if (!this->is_training() || p_ == 0.0) return x;
        Tape<T>& t = x.tape();
        Ref<T> mask = t.alloc(x.shape());
        const T keep = p_ < 1.0 ? static_cast<T>(1.0 / (1.0 - p_)) : T(0);
        const std::size_t n = mask.size();
        const detail::Replica* rep = detail::current_replica();
        Rng& rng = rep && rep->rng ? *rep->rng : rng_;
        for (std::size_t i = 0; i < n; ++i) mask.data[i] = rng.uniform() < p_ ? T(0) : keep;
        return mul(x, t.leaf(mask, false));
    }

    Shape output_shape(const Shape& in) const override { return in; }
    LayerKind kind() const override { return LayerKind::dropout; }
    std::string type_name() const override { return "Dropout"; }
    std::string describe() const override { return "Dropout(" + tapir::detail::number_text(p_) + ")"; }

private:
    static double check_p(double p) {
        if (!(p >= 0.0 && p <= 1.0)) throw value_error("Dropout: probability must be in [0, 1], got " + std::to_string(p));
        return p;
    }
    double p_;
    Rng rng_;
};

// ---- normalisation --------------------------------------------------------------------------

namespace detail {
/// What BatchNorm and LayerNorm share: a learned elementwise scale `weight` (starts at 1) and shift
/// `bias` (starts at 0) over `features`, an eps, and an output of the input's shape, which
/// Derived's check_input checks.
template <class Derived, class T>
class AffineNorm : public Cloneable<Derived, Module<T>> {
public:
    Parameter<T> weight;  ///< (features,) scale, gamma
    Parameter<T> bias;    ///< (features,) shift, beta

    std::size_t features() const noexcept { return weight.value.size(); }
    double eps() const noexcept { return eps_; }

    Shape output_shape(const Shape& in) const override {
        check_input(in);
        return in;
    }

protected:
    AffineNorm(std::size_t features, double eps)
        : weight("weight", Tensor<T>(Shape{features}, T(1))), bias("bias", Tensor<T>(Shape{features})), eps_(eps) {}

    /// Throws shape_error for an input the layer does not take.
    virtual void check_input(const Shape& s) const = 0;
    void collect_parameters(std::vector<NamedParameter<T>>& out) override { out.insert(out.end(), {{"weight", &weight}, {"bias", &bias}}); }

    double eps_;
};
} // namespace detail

/// Batch normalisation over the batch axis of (batch, features) inputs, PyTorch conventions:
/// training normalises with the batch mean and biased variance and updates
///   running_mean = (1 - momentum) running_mean + momentum mean,
///   running_var  = (1 - momentum) running_var  + momentum var * n / (n - 1)   (unbiased),
/// momentum 0.1, eps 1e-5; eval normalises with the running statistics. (Keras' momentum 0.99
/// is 1 - PyTorch's.) weight starts at 1, bias at 0; running_mean at 0, running_var at 1.
/// In data-parallel training (nn/data_parallel.hpp) each worker normalises with its own shard's
/// statistics and only worker 0 updates the running statistics, as PyTorch's
/// DistributedDataParallel without SyncBatchNorm (whose buffers are rank 0's). With a group
/// (synchronise; distributed::sync_batch_norm sets it on a model) the statistics are those of
/// the union of the group's batches, as PyTorch's SyncBatchNorm.
template <class T>
class BatchNorm : public detail::AffineNorm<BatchNorm<T>, T> {
    using Norm = detail::AffineNorm<BatchNorm<T>, T>;

public:
    using Norm::bias;
    using Norm::weight;
    Tensor<T> running_mean;
    Tensor<T> running_var;

    explicit BatchNorm(std::size_t features, double momentum = 0.1, double eps = 1e-5)
        : Norm(features, eps), running_mean(Shape{features}), running_var(Shape{features}, T(1)), momentum_(momentum) {
        if (features == 0) throw value_error("BatchNorm: the number of features must be positive");
        if (!(momentum >= 0.0 && momentum <= 1.0)) throw value_error("BatchNorm: momentum must be in [0, 1], got " + std::to_string(momentum));
        if (!(eps > 0.0)) throw value_error("BatchNorm: eps must be positive, got " + std::to_string(eps));
    }

    double momentum() const noexcept { return momentum_; }
    /// Training batches seen (the running statistics' update count).
    std::size_t batches_tracked() const noexcept { return batches_; }

    /// Synchronised statistics: in training, normalise with the mean and biased variance of the
    /// events of every member of the group (every rank of a data-parallel job) and update the
    /// running statistics with them, so that R ranks with B / R events each compute what one
    /// process computes with B, gradients included. Every member must run the layer at the same
    /// point of each step (its statistics are collectives). nullptr: the batch's own statistics.
    void synchronise(std::shared_ptr<SumGroup<T>> group) noexcept { group_ = std::move(group); }
    const std::shared_ptr<SumGroup<T>>& group() const noexcept { return group_; }

    Var<T> forward(const Var<T>& x) override {
        check_input(x.shape());
        Tape<T>& t = x.tape();
        const Var<T> w = this->use(t, weight), b = this->use(t, bias);
        const std::size_t f = this->features();
        if (this->is_training()) {
            if (group_) return forward_synchronised(x, w, b);
            const std::size_t n = x.shape()[0];
            if (n < 2)
                throw value_error("BatchNorm(" + std::to_string(f) + "): training needs more than one event per batch, got input of shape " +
                                  x.shape().str());
            const Var<T> mu = mean(x, 0, true);
            const Var<T> xc = sub(x, mu);
            const Var<T> var = mean(square(xc), 0, true);
            const Var<T> inv_std = pow(add_scalar(var, static_cast<T>(eps_)), T(-0.5));
            const Var<T> y = add(mul(mul(xc, inv_std), w), b);
            const T unbias = static_cast<T>(static_cast<double>(n) / static_cast<double>(n - 1));
            const detail::Replica* rep = detail::current_replica();
            if (rep && rep->index != 0) return y;  // worker 0 keeps the running statistics
            update_running(mu, var, unbias);
            return y;
        }
        Ref<T> inv = t.alloc(Shape{f});
        for (std::size_t j = 0; j < f; ++j) inv.data[j] = T(1) / std::sqrt(running_var[j] + static_cast<T>(eps_));
        const Var<T> scale = mul(w, t.leaf(inv, false));
        return add(mul(sub(x, t.constant(running_mean)), scale), b);
    }

    LayerKind kind() const override { return LayerKind::batch_norm; }
    std::string type_name() const override { return "BatchNorm"; }

protected:
    void collect_buffers(std::vector<NamedBuffer<T>>& out) override { out.insert(out.end(), {{"running_mean", &running_mean}, {"running_var", &running_var}}); }

private:
    using Norm::eps_;

    void update_running(const Var<T>& mu, const Var<T>& var, T unbias) {
        const T m = static_cast<T>(momentum_);
        for (std::size_t j = 0; j < this->features(); ++j) {
            running_mean[j] = (T(1) - m) * running_mean[j] + m * mu[j];
            running_var[j] = (T(1) - m) * running_var[j] + m * var[j] * unbias;
        }
        ++batches_;
    }
    /// The group's events counted, their per-feature sums added (group_sum, whose gradient sums
    /// again in the backward pass), the centred squares likewise (two passes, as unsynchronised).
    Var<T> forward_synchronised(const Var<T>& x, const Var<T>& w, const Var<T>& b) {
        const std::size_t f = this->features();
        if (detail::current_replica())
            throw value_error("BatchNorm(" + std::to_string(f) +
                              "): synchronised statistics cannot run inside nn::DataParallel workers (one thread per process calls the group)");
        T count = static_cast<T>(x.shape()[0]);
        group_->sum(&count, 1);
        if (count < T(2))
            throw value_error("BatchNorm(" + std::to_string(f) + "): training needs more than one event per batch, got " +
                              std::to_string(static_cast<double>(count)) + " over the synchronised group");
        const T inv_n = T(1) / count;
        const Var<T> mu = scale(group_sum(sum(x, 0, true), *group_), inv_n);
        const Var<T> xc = sub(x, mu);
        const Var<T> var = scale(group_sum(sum(square(xc), 0, true), *group_), inv_n);
        const Var<T> inv_std = pow(add_scalar(var, static_cast<T>(eps_)), T(-0.5));
        const Var<T> y = add(mul(mul(xc, inv_std), w), b);
        update_running(mu, var, count / (count - T(1)));
        return y;
    }
    void check_input(const Shape& s) const final {
        if (TAPIR_UNLIKELY(s.rank() != 2 || s[1] != this->features()))
            throw shape_error("BatchNorm(" + std::to_string(this->features()) + "): expected input of shape (batch, " +
                              std::to_string(this->features()) + "), got " + s.str());
    }
    double momentum_;
    std::size_t batches_ = 0;
    std::shared_ptr<SumGroup<T>> group_;
};

/// Layer normalisation over the last axis (biased variance, eps 1e-5), with a learned
/// elementwise scale (weight, starts at 1) and shift (bias, starts at 0). Same in train and eval.
template <class T>
class LayerNorm : public detail::AffineNorm<LayerNorm<T>, T> {
    using Norm = detail::AffineNorm<LayerNorm<T>, T>;

public:
    using Norm::bias;
    using Norm::weight;

    explicit LayerNorm(std::size_t features, double eps = 1e-5) : Norm(features, eps) {
        if (features == 0) throw value_error("LayerNorm: the number of features must be positive");
        if (!(eps > 0.0)) throw value_error("LayerNorm: eps must be positive, got " + std::to_string(eps));
    }

    Var<T> forward(const Var<T>& x) override {
        check_input(x.shape());
        Tape<T>& t = x.tape();
        // One node for the normalisation, one fused pass for its gradient (autodiff/norm.hpp).
        return add(mul(layer_norm(x, static_cast<T>(eps_)), this->use(t, weight)), this->use(t, bias));
    }

    LayerKind kind() const override { return LayerKind::layer_norm; }
    std::string type_name() const override { return "LayerNorm"; }

private:
    using Norm::eps_;

    void check_input(const Shape& s) const final {
        if (TAPIR_UNLIKELY(s.rank() == 0 || s[s.rank() - 1] != this->features()))
            throw shape_error("LayerNorm(" + std::to_string(this->features()) + "): expected the last axis of length " +
                              std::to_string(this->features()) + ", got input of shape " + s.str());
    }
};

} // namespace nn
} // namespace tapir
