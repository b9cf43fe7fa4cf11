#pragma once
/// Networks on unordered sets of particles (B, N, F) with a (B, N) mask of 1 (real) and 0 (padding):
/// DeepSet / Particle Flow Network and the Energy Flow Network (Komiske, Metodiev, Thaler,
/// "Energy Flow Networks: Deep Sets for Particle Jets", arXiv:1810.05165; Deep Sets, arXiv:1703.06114).
///
///     tapir::Rng rng(1);
///     tapir::nn::ParticleFlowNetwork<float> pfn(4, {100, 100, 64}, {100, 100, 1}, rng);
///     tapir::Var<float> logits = pfn.forward(tape.view(x), tape.view(mask));  // x (B, N, 4), mask (B, N)
///
/// Padded particles change nothing (the per-particle network runs on the real ones only; a mask
/// entry other than 0 counts as real) and the output does not depend on the order of the particles.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../autodiff/ops.hpp"
#include "../autodiff/sets.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../random.hpp"
#include "layers.hpp"
#include "module.hpp"
#include "sequential.hpp"

namespace tapir {
namespace nn {

/// How a set network pools its per-particle outputs over the real particles.
enum class SetPooling : std::uint8_t { sum, mean };

namespace detail {
/// Dense layers in -> sizes[0] -> ... with `act` after each, and none after the last when last_linear.
template <class T>
Sequential<T> mlp(std::size_t in, const std::vector<std::size_t>& sizes, Rng& rng, Activation act, bool last_linear, const char* who) {
    if (in == 0 || sizes.empty()) throw value_error(std::string(who) + ": needs a positive input size and at least one layer");
    Sequential<T> s;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
        const bool last = i + 1 == sizes.size();
        s.template add<Dense<T>>(i == 0 ? in : sizes[i - 1], sizes[i], rng, last && last_linear ? Activation::none : act);
    }
    return s;
}
inline void check_set(const char* who, const Shape& x, std::size_t features) {
    if (x.rank() != 3 || x[2] != features)
        throw shape_error(std::string(who) + ": expected a set of shape (B, N, " + std::to_string(features) + "), got " + x.str());
}
inline void check_mask(const char* who, const Shape& x, const Shape& m) {
    if (m.rank() != 2 || m[0] != x[0] || m[1] != x[1])
        tapir::detail::throw_shape((std::string(who) + ": set vs mask").c_str(), x, m, "expects a mask of shape (B, N)");
}
} // namespace detail

/// What DeepSet and EnergyFlowNetwork share: F(latent(x, mask)) with Phi a stack of Dense layers with
/// `act` after every one (latent = the last size) and F likewise but linear at the end (logits or a
/// regression value). A derived network defines latent(), the pooled (B, latent) event vector.
template <class T>
class SetNetwork : public Module<T> {
public:
    Sequential<T> phi;  ///< per particle: (rows, phi inputs) -> (rows, latent)
    Sequential<T> f;    ///< per event: (B, latent) -> (B, outputs)

    std::size_t in_features() const noexcept { return in_; }
    std::size_t latent_size() const noexcept { return latent_; }

    /// x (B, N, in) and mask (B, N) of 1/0 -> (B, outputs).
    Var<T> forward(const Var<T>& x, const Var<T>& mask) { return f(latent(x, &mask)); }
    /// Every particle real.
    Var<T> forward(const Var<T>& x) override { return f(latent(x, nullptr)); }
    /// (x) or (x, mask), as nn::Model and multi-input fit() call it.
    Var<T> forward_many(const std::vector<Var<T>>& in) override { return this->template forward_by_arity<1, 2>(*this, in); }
    std::size_t num_inputs() const override { return 0; }
    using Module<T>::operator();
    Var<T> operator()(const Var<T>& x, const Var<T>& mask) { return forward(x, mask); }

    /// The pooled per-event latent vector (B, latent), before F; mask may be null (all real).
    virtual Var<T> latent(const Var<T>& x, const Var<T>* mask) = 0;

    Shape output_shape(const Shape& in) const override {
        detail::check_set(name_, in, in_);
        return Shape{in[0], f.output_shape(Shape{in[0], latent_})[1]};
    }
    std::string type_name() const override { return name_; }

protected:
    SetNetwork(const char* name, std::size_t in_features, std::size_t phi_in, const std::vector<std::size_t>& phi_sizes,
               const std::vector<std::size_t>& f_sizes, Rng& rng, Activation act)
        : phi(detail::mlp<T>(phi_in, phi_sizes, rng, act, false, name)),
          f(detail::mlp<T>(phi_sizes.back(), f_sizes, rng, act, true, name)),
          in_(in_features),
          latent_(phi_sizes.back()),
          name_(name) {}
    /// Checks x (B, N, in) and the mask (B, N) when there is one.
    void check(const Shape& x, const Var<T>* mask) const {
        detail::check_set(name_, x, in_);
        if (mask) detail::check_mask(name_, x, mask->shape());
    }
    void collect_children(std::vector<NamedModule<T>>& out) override { out.insert(out.end(), {{"phi", &phi}, {"f", &f}}); }

    std::size_t in_, latent_;
    const char* name_;
};

/// Deep Set / Particle Flow Network: F(pool_i Phi(x_i)) over the real particles (sum or mean).
/// Phi runs as fused dense nodes on the real particles of the whole batch at once.
template <class T>
class DeepSet : public Cloneable<DeepSet<T>, SetNetwork<T>> {
public:
    DeepSet(std::size_t in_features, const std::vector<std::size_t>& phi_sizes, const std::vector<std::size_t>& f_sizes, Rng& rng,
            Activation act = Activation::relu, SetPooling pooling = SetPooling::sum)
        : DeepSet::Cloneable("DeepSet", in_features, in_features, phi_sizes, f_sizes, rng, act), pooling_(pooling) {}

    Var<T> latent(const Var<T>& x, const Var<T>* mask) override {
        const Shape s = x.shape();
        this->check(s, mask);
        const std::size_t B = s[0], N = s[1];
        const Var<T> xf = reshape(x, Shape{B * N, s[2]});
        if (!mask) {
            const Var<T> h = reshape(this->phi(xf), Shape{B, N, this->latent_});
            return pooling_ == SetPooling::sum ? sum(h, 1) : mean(h, 1);
        }
        // Phi runs on the real particles only (padding costs nothing), whose outputs are then
        // added into their events' rows.
        Tape<T>& t = x.tape();
        const T* m = mask->data();
        std::size_t rows = 0;
        for (std::size_t r = 0; r < B * N; ++r) rows += m[r] != T(0) ? 1 : 0;
        if (rows == 0) return t.full(Shape{B, this->latent_}, T(0));
        std::int64_t* real = tapir::detail::arena_indices(t, rows);
        std::int64_t* event = tapir::detail::arena_indices(t, rows);
        Ref<T> inv = t.alloc(Shape{B, 1});
        std::size_t c = 0;
        for (std::size_t b = 0; b < B; ++b) {
            const std::size_t first = c;
            for (std::size_t n = 0; n < N; ++n)
                if (m[b * N + n] != T(0)) real[c] = static_cast<std::int64_t>(b * N + n), event[c++] = static_cast<std::int64_t>(b);
            inv.data[b] = c > first ? T(1) / static_cast<T>(c - first) : T(0);
        }
        const Var<T> pooled = scatter_rows_raw(this->phi(gather_rows_raw(xf, real, rows)), event, B);
        return pooling_ == SetPooling::sum ? pooled : mul(pooled, t.leaf(inv, false));
    }

    SetPooling pooling() const noexcept { return pooling_; }
    std::string describe() const override { return pooling_ == SetPooling::sum ? "DeepSet(sum)" : "DeepSet(mean)"; }

private:
    SetPooling pooling_;
};

/// The Particle Flow Network of arXiv:1810.05165 is a DeepSet with sum pooling over particle features.
template <class T>
using ParticleFlowNetwork = DeepSet<T>;

/// Energy Flow Network (arXiv:1810.05165): F(sum_i z_i Phi(angles_i)), infrared and collinear safe.
/// Input x (B, N, 1 + A): column 0 is the particle's energy (pT) fraction z_i, the other A columns its
/// angular coordinates (e.g. rapidity and azimuth relative to the jet axis). z is used as given (it is
/// differentiable, and 0 for padding already); a mask multiplies it.
template <class T>
class EnergyFlowNetwork : public Cloneable<EnergyFlowNetwork<T>, SetNetwork<T>> {
public:
    EnergyFlowNetwork(std::size_t angular_features, const std::vector<std::size_t>& phi_sizes, const std::vector<std::size_t>& f_sizes,
                      Rng& rng, Activation act = Activation::relu)
        : EnergyFlowNetwork::Cloneable("EnergyFlowNetwork", angular_features + 1, angular_features, phi_sizes, f_sizes, rng, act) {}

    /// sum_i z_i Phi(angles_i), (B, latent).
    Var<T> latent(const Var<T>& x, const Var<T>* mask) override {
        const Shape s = x.shape();
        this->check(s, mask);
        const std::size_t B = s[0], N = s[1], A = s[2] - 1;
        Var<T> z = reshape(slice(x, 2, 0, 1), Shape{B, N});
        if (mask) z = mul(z, detach(*mask));
        const Var<T> ang = reshape(slice(x, 2, 1, A), Shape{B * N, A});
        return set_sum(reshape(this->phi(ang), Shape{B, N, this->latent_}), z);
    }

};

} // namespace nn
} // namespace tapir
