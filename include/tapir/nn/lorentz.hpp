#pragma once
/// Physics layers on constituent 4-vectors (B, N, 4) ordered (E, px, py, pz):
/// CoLa and LoLa (Butter, Kasieczka, Plehn, Russell, arXiv:1707.08966) and the Lorentz Boost
/// Network (Erdmann, Geiser, Rath, Rieger, arXiv:1812.09722).
///
///     tapir::Rng rng(1);
///     tapir::nn::CoLa<float> cola(20, 10, rng);  // 20 constituents -> 30 4-vectors
///     tapir::nn::LoLa<float> lola(30, rng);      // -> (B, 30, 5) features
///     tapir::Var<float> f = lola(cola(x));       // x (B, 20, 4)

#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../autodiff/linalg.hpp"
#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../random.hpp"
#include "init.hpp"
#include "module.hpp"

namespace tapir {
namespace nn {

namespace detail {
inline void check_four_vectors(const char* layer, const Shape& s, std::size_t n) {
    if (s.rank() != 3 || s[1] != n || s[2] != 4)
        throw shape_error(std::string(layer) + ": expected 4-vectors of shape (B, " + std::to_string(n) + ", 4), got " + s.str());
}
} // namespace detail

/// Linear combinations of 4-vectors: out[b, m] = sum_i x[b, i] w[i, m], x (B, N, 4), w (N, M) -> (B, M, 4).
template <class T>
Var<T> combine_four_vectors(const Var<T>& x, const Var<T>& w) {
    const Shape s = x.shape(), ws = w.shape();
    if (s.rank() != 3 || s[2] != 4 || ws.rank() != 2 || ws[0] != s[1])
        throw shape_error("combine_four_vectors: expected x (B, N, 4) and weights (N, M): " + s.str() + " vs " + ws.str());
    const std::size_t b = s[0], n = s[1], m = ws[1];
    const Var<T> c = matmul(reshape(permute(x, {0, 2, 1}), Shape{b * 4, n}), w);  // (4B, M)
    return permute(reshape(c, Shape{b, 4, m}), {0, 2, 1});
}

/// Minkowski square E^2 - px^2 - py^2 - pz^2 of 4-vectors (..., 4), keeping the last axis as 1.
template <class T>
Var<T> minkowski_square(const Var<T>& p) {
    const Var<T> e = slice(p, -1, 0, 1), q = slice(p, -1, 1, 3);
    return sub(square(e), sum(square(q), -1, true));
}

/// p boosted into the rest frame of r (both (..., 4), same shape; r must be time-like). With
/// beta = r_vec / r_E and gamma = r_E / m_r: E' = gamma (E - beta.p) and
/// p' = p + (gamma^2 / (gamma + 1) beta.p - gamma E) beta, the standard boost with
/// (gamma - 1) / beta^2 written as gamma^2 / (gamma + 1), finite as beta goes to 0.
template <class T>
Var<T> boost_to_rest_frame(const Var<T>& p, const Var<T>& r) {
    if (p.shape() != r.shape() || p.shape().rank() == 0 || p.shape()[p.shape().rank() - 1] != 4)
        throw shape_error("boost_to_rest_frame: expected two 4-vector values (..., 4) of one shape: " + p.shape().str() + " vs " +
                          r.shape().str());
    const Var<T> er = slice(r, -1, 0, 1);
    const Var<T> beta = div(slice(r, -1, 1, 3), er);
    const Var<T> gamma = div(er, sqrt(minkowski_square(r)));
    const Var<T> e = slice(p, -1, 0, 1), q = slice(p, -1, 1, 3);
    const Var<T> bp = sum(mul(beta, q), -1, true);
    const Var<T> e_rest = mul(gamma, sub(e, bp));
    const Var<T> coef = sub(div(mul(square(gamma), bp), add_scalar(gamma, T(1))), mul(gamma, e));
    return concat(e_rest, add(q, mul(coef, beta)), -1);
}

/// Combination layer (arXiv:1707.08966, eq. 2): N constituents -> N + M 4-vectors, the first N
/// the constituents themselves (the identity part of the paper's matrix C), the last M the learned
/// combinations sum_i x_i w_im with `weight` (N, M), initialised uniform in [0, 1) so that the
/// combinations start as physical (time-like or light-like) 4-vectors.
template <class T>
class CoLa : public detail::WeightMatrixLayer<CoLa<T>, T> {
public:
    using CoLa::WeightMatrixLayer::weight;  ///< (N, M)

    CoLa(std::size_t particles, std::size_t combinations, Rng& rng)
        : CoLa::WeightMatrixLayer("CoLa", "the numbers of particles and combinations", particles, combinations) {
        for (auto& w : weight.value) w = static_cast<T>(rng.uniform());
    }
    std::size_t particles() const noexcept { return this->rows(); }
    std::size_t combinations() const noexcept { return this->cols(); }

    Var<T> forward(const Var<T>& x) override {
        detail::check_four_vectors("CoLa", x.shape(), particles());
        return concat(x, combine_four_vectors(x, this->use(x.tape(), weight)), 1);
    }
    Shape output_shape(const Shape& in) const override {
        detail::check_four_vectors("CoLa", in, particles());
        return Shape{in[0], particles() + combinations(), 4};
    }
    std::string type_name() const override { return "CoLa"; }
    std::string describe() const override { return "CoLa(" + std::to_string(particles()) + " + " + std::to_string(combinations()) + ")"; }
};

/// Lorentz layer (arXiv:1707.08966, eq. 4): per 4-vector k_j of (B, N, 4) five features (B, N, 5):
/// m^2 (the fixed Minkowski metric, so Lorentz invariant), pT^2, E, the weighted energy sum
/// sum_m energy_weights[j, m] E_m, and the weighted distance sum sum_m distance_weights[j, m] d2_jm
/// with d2_jm = (k_j - k_m)^T diag(metric) (k_j - k_m) and `metric` (4,) trainable, initialised to
/// the Minkowski metric (1, -1, -1, -1) as in the paper.
template <class T>
class LoLa : public Cloneable<LoLa<T>, Module<T>> {
public:
    Parameter<T> metric;            ///< (4,)
    Parameter<T> energy_weights;    ///< (N, N)
    Parameter<T> distance_weights;  ///< (N, N)

    LoLa(std::size_t particles, Rng& rng)
        : metric("metric", Tensor<T>(Shape{4})),
          energy_weights("energy_weights", Tensor<T>(Shape{particles, particles})),
          distance_weights("distance_weights", Tensor<T>(Shape{particles, particles})) {
        if (particles == 0) throw value_error("LoLa: the number of 4-vectors must be positive");
        metric.value(0) = T(1);
        for (std::size_t i = 1; i < 4; ++i) metric.value(i) = T(-1);
        Init::glorot_uniform().apply(energy_weights.value, rng);
        Init::glorot_uniform().apply(distance_weights.value, rng);
    }
    std::size_t particles() const noexcept { return energy_weights.value.shape()[0]; }
    static constexpr std::size_t features() noexcept { return 5; }

    Var<T> forward(const Var<T>& x) override {
        detail::check_four_vectors("LoLa", x.shape(), particles());
        Tape<T>& t = x.tape();
        const std::size_t b = x.shape()[0], n = particles();
        const Var<T> e = slice(x, -1, 0, 1), px = slice(x, -1, 1, 1), py = slice(x, -1, 2, 1);
        const Var<T> m2 = minkowski_square(x);
        const Var<T> pt2 = add(square(px), square(py));
        const Var<T> e_sum = reshape(matmul(reshape(e, Shape{b, n}), this->use(t, energy_weights), false, true), Shape{b, n, 1});
        // d2_jm = s_j + s_m - 2 k_j^T g k_m with s_j = k_j^T g k_j.
        const Var<T> kg = mul(x, this->use(t, metric));
        const Var<T> s = sum(mul(kg, x), -1, true);  // (B, N, 1)
        const Var<T> d2 = add(add(s, reshape(s, Shape{b, 1, n})), scale(bmm(kg, x, false, true), T(-2)));
        const Var<T> d_sum = sum(mul(d2, this->use(t, distance_weights)), -1, true);
        return concat(concat(concat(concat(m2, pt2, -1), e, -1), e_sum, -1), d_sum, -1);
    }
    Shape output_shape(const Shape& in) const override {
        detail::check_four_vectors("LoLa", in, particles());
        return Shape{in[0], particles(), features()};
    }
    std::string type_name() const override { return "LoLa"; }
    std::string describe() const override { return "LoLa(" + std::to_string(particles()) + ")"; }

protected:
    void collect_parameters(std::vector<NamedParameter<T>>& out) override {
        out.insert(out.end(), {{"metric", &metric}, {"energy_weights", &energy_weights}, {"distance_weights", &distance_weights}});
    }
};

/// Lorentz Boost Network (arXiv:1812.09722): M particles and M rest frames as combinations of the
/// N input 4-vectors with the absolute values of `particle_weights` and `restframe_weights` (N, M)
/// (the lbn package's default, which keeps the combinations physical), particle m boosted into rest
/// frame m, and per boosted particle E, pT, eta, phi, m, then cos of the angle between every pair
/// (m < n, row-major). Output (B, 5 M + M (M - 1) / 2), in the order E (M), pT (M), eta (M), phi (M),
/// m (M), pair cosines. The angles are undefined for a particle at rest in its frame (p = 0).
template <class T>
class LorentzBoostNetwork : public Cloneable<LorentzBoostNetwork<T>, Module<T>> {
public:
    Parameter<T> particle_weights;   ///< (N, M)
    Parameter<T> restframe_weights;  ///< (N, M)

    LorentzBoostNetwork(std::size_t particles, std::size_t combinations, Rng& rng)
        : particle_weights("particle_weights", Tensor<T>(Shape{particles, combinations})),
          restframe_weights("restframe_weights", Tensor<T>(Shape{particles, combinations})) {
        if (particles == 0 || combinations == 0)
            throw value_error("LorentzBoostNetwork: the numbers of particles and combinations must be positive, got " +
                              std::to_string(particles) + " and " + std::to_string(combinations));
        for (auto& w : particle_weights.value) w = static_cast<T>(rng.uniform(0.05, 1.0));
        for (auto& w : restframe_weights.value) w = static_cast<T>(rng.uniform(0.05, 1.0));
        const std::size_t m = combinations;
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = i + 1; j < m; ++j) pairs_.push_back(i * m + j);
    }
    std::size_t particles() const noexcept { return particle_weights.value.shape()[0]; }
    std::size_t combinations() const noexcept { return particle_weights.value.shape()[1]; }
    std::size_t features() const noexcept { return 5 * combinations() + pairs_.size(); }

    /// The boosted particles (B, M, 4), before the features.
    Var<T> boosted(const Var<T>& x) {
        detail::check_four_vectors("LorentzBoostNetwork", x.shape(), particles());
        Tape<T>& t = x.tape();
        const Var<T> p = combine_four_vectors(x, abs(this->use(t, particle_weights)));
        const Var<T> r = combine_four_vectors(x, abs(this->use(t, restframe_weights)));
        return boost_to_rest_frame(p, r);
    }
    Var<T> forward(const Var<T>& x) override {
        const Var<T> pb = boosted(x);
        const std::size_t b = x.shape()[0], m = combinations();
        const Shape flat{b, m};
        const Var<T> e = slice(pb, -1, 0, 1), px = slice(pb, -1, 1, 1), py = slice(pb, -1, 2, 1), pz = slice(pb, -1, 3, 1);
        const Var<T> q = slice(pb, -1, 1, 3);
        const Var<T> pt = sqrt(add(square(px), square(py)));
        const Var<T> pabs = sqrt(sum(square(q), -1, true));
        // eta = asinh(pz / pT) = ln((|p| + pz) / pT) and phi = atan2(py, px) = 2 atan(py / (pT + px)).
        // |p| + pz and pT + px cancel to exactly 0 in rounding for a particle within ~sqrt(eps) of the
        // -z or -x axis (in float, 1 in ~10^4 directions: boosted particles land there while a
        // network trains), and the gradients become NaN. A guard of 4 eps |p| keeps both finite; the
        // values change by O(eps) elsewhere, and within the band phi passes through 0 instead of
        // jumping from pi to -pi.
        const Var<T> guard = scale(pabs, T(4) * std::numeric_limits<T>::epsilon());
        const Var<T> eta = log(div(add(add(pabs, pz), guard), pt));
        const Var<T> phi = scale(atan(div(py, add(add(pt, px), guard))), T(2));
        const Var<T> mass = sqrt(clamp(minkowski_square(pb), T(0), std::numeric_limits<T>::max()));
        Var<T> out = concat(concat(concat(concat(reshape(e, flat), reshape(pt, flat), 1), reshape(eta, flat), 1), reshape(phi, flat), 1),
                            reshape(mass, flat), 1);
        if (pairs_.empty()) return out;
        const Var<T> u = div(q, pabs);
        const Var<T> cosines = reshape(bmm(u, u, false, true), Shape{b, m * m});
        return concat(out, transpose(gather_rows(transpose(cosines), pairs_)), 1);
    }
    Shape output_shape(const Shape& in) const override {
        detail::check_four_vectors("LorentzBoostNetwork", in, particles());
        return Shape{in[0], features()};
    }
    std::string type_name() const override { return "LorentzBoostNetwork"; }
    std::string describe() const override {
        return "LorentzBoostNetwork(" + std::to_string(particles()) + " -> " + std::to_string(combinations()) + ")";
    }

protected:
    void collect_parameters(std::vector<NamedParameter<T>>& out) override { out.insert(out.end(), {{"particle_weights", &particle_weights}, {"restframe_weights", &restframe_weights}}); }

private:
    std::vector<std::size_t> pairs_;  // flat (m, n) indices of the pairs m < n of an M x M matrix
};

} // namespace nn
} // namespace tapir
