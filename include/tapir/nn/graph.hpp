#pragma once
/// Graph networks on particle clouds (B, N, F) with a (B, N) mask: EdgeConv (Wang et al., "Dynamic
/// Graph CNN for Learning on Point Clouds", arXiv:1801.07829) and ParticleNet-Lite (Qu and Gouskos,
/// "ParticleNet: Jet Tagging via Particle Clouds", arXiv:1902.08570).
///
///     tapir::Rng rng(1);
///     tapir::nn::ParticleNetLite<float> net(2, 4, 1, rng);  // 2 coordinates, 4 features, 1 logit
///     tapir::Var<float> logits = net.forward(tape.view(points), tape.view(features), tape.view(mask));
///
/// Differences from the papers, on purpose: no batch normalisation inside the blocks (the edge
/// network is Dense + ReLU), and no fusion block; the mean over the neighbours is over the real ones.

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
#include "sets.hpp"

namespace tapir {
namespace nn {

/// EdgeConv: for every real particle i, its k nearest real neighbours j in a coordinate space (given,
/// or the features themselves: a dynamic graph), the edge network h(x_i, x_j - x_i) (Dense + ReLU
/// layers of the given sizes), the mean over the neighbours, plus a linear shortcut of x_i, then ReLU.
/// Padded particles output 0. Output (B, N, channels.back()).
///
/// The first edge layer is W [x_i ; x_j - x_i] = (W1 - W2) x_i + W2 x_j: it is computed per particle
/// and gathered per edge, k times fewer multiplications than on the concatenated edge features.
/// Its weight keeps the concatenated layout (2 F, C), rows 0..F for x_i and F..2F for x_j - x_i.
template <class T>
class EdgeConv : public Cloneable<EdgeConv<T>, Module<T>> {
public:
    Dense<T> edge_in;      ///< first edge layer on (x_i, x_j - x_i): weight (2 F, C0), ReLU
    Sequential<T> edge;    ///< further edge layers, Dense + ReLU
    Dense<T> shortcut;     ///< x_i -> C, linear

    EdgeConv(std::size_t in_features, const std::vector<std::size_t>& channels, std::size_t k, Rng& rng)
        : edge_in(2 * in_features, first(channels), rng, Activation::relu),
          edge(rest(channels, rng)),
          shortcut(in_features, channels.back(), rng),
          in_(in_features),
          out_(channels.back()),
          k_(k) {
        if (k == 0) throw value_error("EdgeConv: k must be positive");
    }

    std::size_t k() const noexcept { return k_; }
    std::size_t out_features() const noexcept { return out_; }

    /// Neighbours found in the given coordinates points (B, N, D); features x (B, N, F); mask (B, N).
    Var<T> forward(const Var<T>& points, const Var<T>& x, const Var<T>& mask) { return apply(points, x, &mask); }
    /// A dynamic graph: neighbours in the feature space of x itself.
    Var<T> forward(const Var<T>& x, const Var<T>& mask) { return apply(x, x, &mask); }
    /// A dynamic graph over an all-real set.
    Var<T> forward(const Var<T>& x) override { return apply(x, x, nullptr); }
    /// (x), (x, mask) or (points, x, mask), as nn::Model and multi-input fit() call it.
    Var<T> forward_many(const std::vector<Var<T>>& in) override { return this->template forward_by_arity<1, 3>(*this, in); }
    std::size_t num_inputs() const override { return 0; }
    /// Given coordinates, an all-real set.
    Var<T> forward_points(const Var<T>& points, const Var<T>& x) { return apply(points, x, nullptr); }
    using Module<T>::operator();

    Shape output_shape(const Shape& in) const override {
        detail::check_set("EdgeConv", in, in_);
        return Shape{in[0], in[1], out_};
    }
    std::string type_name() const override { return "EdgeConv"; }
    std::string describe() const override { return "EdgeConv(k=" + std::to_string(k_) + ")"; }

protected:
    void collect_children(std::vector<NamedModule<T>>& out) override { out.insert(out.end(), {{"edge_in", &edge_in}, {"edge", &edge}, {"shortcut", &shortcut}}); }

private:
    static std::size_t first(const std::vector<std::size_t>& c) {
        if (c.empty()) throw value_error("EdgeConv: needs at least one edge layer size");
        return c[0];
    }
    static Sequential<T> rest(const std::vector<std::size_t>& c, Rng& rng) {
        Sequential<T> s;
        for (std::size_t i = 1; i < c.size(); ++i) s.template add<Dense<T>>(c[i - 1], c[i], rng, Activation::relu);
        return s;
    }

    Var<T> apply(const Var<T>& points, const Var<T>& x, const Var<T>* mask) {
        const Shape s = x.shape();
        detail::check_set("EdgeConv", s, in_);
        const Shape ps = points.shape();
        if (ps.rank() != 3 || ps[0] != s[0] || ps[1] != s[1])
            tapir::detail::throw_shape("EdgeConv: points vs features", ps, s, "expects points (B, N, D) and features (B, N, F)");
        if (mask) detail::check_mask("EdgeConv", s, mask->shape());
        Tape<T>& t = x.tape();
        const std::size_t B = s[0], N = s[1], F = s[2], all = B * N;
        const KnnIndex nb = knn(points, mask, k_);
        // Only the real particles are computed on (padded ones output 0): `real` lists their rows,
        // `compact` maps a row to its place among them.
        const T* m = mask ? mask->data() : nullptr;
        std::size_t rows = all;
        const std::int64_t* real = nullptr;
        std::int64_t* compact = nullptr;
        if (m) {
            rows = 0;
            for (std::size_t r = 0; r < all; ++r) rows += m[r] != T(0) ? 1 : 0;
            if (rows == 0) return t.full(Shape{B, N, out_}, T(0));
            std::int64_t* list = tapir::detail::arena_indices(t, rows);
            compact = tapir::detail::arena_indices(t, all);
            std::size_t c = 0;
            for (std::size_t r = 0; r < all; ++r) {
                compact[r] = m[r] != T(0) ? static_cast<std::int64_t>(c) : -1;
                if (m[r] != T(0)) list[c++] = static_cast<std::int64_t>(r);
            }
            real = list;
        }
        // Per edge: the centre's row and the neighbour's (the centre itself where there is none,
        // weighted 0); the neighbour mean's weights 1 / (real neighbours).
        const std::size_t edges = rows * k_;
        std::int64_t* ctr = tapir::detail::arena_indices(t, edges);
        std::int64_t* nbr = tapir::detail::arena_indices(t, edges);
        Ref<T> w = t.alloc(Shape{rows, k_});
        for (std::size_t c = 0; c < rows; ++c) {
            const std::size_t r = real ? static_cast<std::size_t>(real[c]) : c;
            std::size_t valid = 0;
            for (std::size_t j = 0; j < k_; ++j) valid += nb.index[r * k_ + j] >= 0 ? 1 : 0;
            const T inv = valid ? T(1) / static_cast<T>(valid) : T(0);
            for (std::size_t j = 0; j < k_; ++j) {
                const std::int64_t g = nb.index[r * k_ + j];
                ctr[c * k_ + j] = static_cast<std::int64_t>(c);
                nbr[c * k_ + j] = g < 0 ? static_cast<std::int64_t>(c) : (compact ? compact[g] : g);
                w.data[c * k_ + j] = g >= 0 ? inv : T(0);
            }
        }
        const Var<T> xf = reshape(x, Shape{all, F});
        const Var<T> xr = real ? gather_rows_raw(xf, real, rows) : xf;
        const Var<T> wt = this->use(t, edge_in.weight);
        const Var<T> w2 = slice(wt, 0, F, F);
        const Var<T> wc = sub(slice(wt, 0, 0, F), w2);
        const Var<T> bias = this->use(t, edge_in.bias);
        const Var<T> pc = dense(xr, wc, bias);  // (W1 - W2) x_i + b, per particle
        const Var<T> pn = matmul(xr, w2);       // W2 x_j, per particle
        Var<T> h = relu(add(gather_rows_raw(pc, ctr, edges), gather_rows_raw(pn, nbr, edges)));
        if (!edge.empty()) h = edge(h);
        const Var<T> agg = set_sum(reshape(h, Shape{rows, k_, out_}), t.leaf(w, false));
        const Var<T> y = relu(add(agg, shortcut(xr)));
        return reshape(real ? scatter_rows_raw(y, real, all) : y, Shape{B, N, out_});
    }

    std::size_t in_, out_, k_;
};

/// ParticleNet-Lite (arXiv:1902.08570, Table 1): EdgeConv k = 7 with edge layers 32-32-32 on the
/// given coordinates, EdgeConv k = 7 with 64-64-64 on the learned features, the mean over the real
/// particles, Dense 128 + ReLU, Dense to the outputs (logits). Dropout is left to the user.
template <class T>
class ParticleNetLite : public Cloneable<ParticleNetLite<T>, Module<T>> {
public:
    EdgeConv<T> block1, block2;
    Sequential<T> head;

    ParticleNetLite(std::size_t coordinates, std::size_t features, std::size_t outputs, Rng& rng, std::size_t k = 7)
        : block1(features, {32, 32, 32}, k, rng),
          block2(32, {64, 64, 64}, k, rng),
          head(detail::mlp<T>(64, {128, outputs}, rng, Activation::relu, true, "ParticleNetLite")),
          coords_(coordinates),
          features_(features) {}

    /// How many leading feature columns are the coordinates (forward(x) without points).
    std::size_t coordinates() const noexcept { return coords_; }

    /// points (B, N, coordinates), features (B, N, features), mask (B, N) -> (B, outputs).
    Var<T> forward(const Var<T>& points, const Var<T>& x, const Var<T>& mask) {
        const Var<T> h = block2.forward(block1.forward(points, x, mask), mask);
        return head(masked_mean(h, mask));
    }
    /// An all-real set whose first `coordinates` feature columns are the coordinates.
    Var<T> forward(const Var<T>& x) override {
        detail::check_set("ParticleNetLite", x.shape(), features_);
        const Var<T> h = block2.forward(block1.forward_points(slice(x, 2, 0, coords_), x));
        return head(mean(h, 1));
    }
    /// (x) or (points, x, mask), as nn::Model and multi-input fit() call it.
    Var<T> forward_many(const std::vector<Var<T>>& in) override {
        if (in.size() != 1 && in.size() != 3)
            throw value_error(this->describe() + ": takes 1 input (x) or 3 (points, x, mask), got " + std::to_string(in.size()));
        return in.size() == 1 ? forward(in[0]) : forward(in[0], in[1], in[2]);
    }
    std::size_t num_inputs() const override { return 0; }
    using Module<T>::operator();

    Shape output_shape(const Shape& in) const override {
        detail::check_set("ParticleNetLite", in, features_);
        return Shape{in[0], head.output_shape(Shape{in[0], 64})[1]};
    }
    std::string type_name() const override { return "ParticleNetLite"; }

protected:
    void collect_children(std::vector<NamedModule<T>>& out) override { out.insert(out.end(), {{"block1", &block1}, {"block2", &block2}, {"head", &head}}); }

private:
    std::size_t coords_, features_;
};

} // namespace nn
} // namespace tapir
