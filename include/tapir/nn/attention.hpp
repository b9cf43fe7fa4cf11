#pragma once
/// Attention layers for sets of particles (B, N, E): multi-head self-attention with a padding mask
/// and an additive pairwise-interaction bias, a pre-norm transformer block, the Particle
/// Transformer's particle attention block (Qu, Gouskos, arXiv:2202.03772) and Residual.
///
/// Attention is Vaswani et al., arXiv:1706.03762: softmax(q k^T / sqrt(d) + U) v per head, with
/// U the optional bias (B, h, N, N) (ParT's interaction features after their embedding) and the
/// padding mask (B, N) of 1 (a particle) and 0 (padding) giving padded keys exactly zero weight
/// (masked_softmax), so that no particle attends to padding.
///
///     tapir::Rng rng(1);
///     tapir::nn::ParticleBlock<float> block(64, 8, 256, rng);     // E = 64, 8 heads, MLP 64-256-64
///     tapir::Var<float> y = block.forward(x, mask, u);             // x (B, N, 64), mask (B, N), u (B, 8, N, N)

#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../autodiff/gelu.hpp"
#include "../autodiff/linalg.hpp"
#include "../autodiff/ops.hpp"
#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../random.hpp"
#include "init.hpp"
#include "layers.hpp"
#include "module.hpp"

namespace tapir {
namespace nn {
namespace detail {
[[noreturn]] inline void throw_attention_shapes(const std::string& what, const Shape& a, const Shape& b) {
    throw shape_error(what + ": " + a.str() + " vs " + b.str());
}
} // namespace detail

/// Multi-head self-attention on (B, N, E). Parameters use PyTorch's nn.MultiheadAttention names and
/// layouts, so state dicts copy element for element: `in_proj_weight` (3E, E) holds the query, key
/// and value projections stacked in that order and maps x to x W^T + in_proj_bias (3E,);
/// `out_proj.weight` (E, E) and `out_proj.bias` (E,) are the output nn.Linear. forward(x, mask) equals
/// PyTorch's attn(x, x, x, key_padding_mask=(mask == 0)) with batch_first=True, and the bias u
/// equals a float attn_mask of shape (B h, N, N) (u reshaped). A batch item whose every key is
/// padding gets the output bias alone (PyTorch gives NaN there).
template <class T>
class MultiHeadAttention : public Cloneable<MultiHeadAttention<T>, Module<T>> {
public:
    Parameter<T> in_proj_weight;   ///< (3E, E): rows 0..E query, E..2E key, 2E..3E value
    Parameter<T> in_proj_bias;     ///< (3E,)
    Parameter<T> out_proj_weight;  ///< (E, E), named "out_proj.weight"
    Parameter<T> out_proj_bias;    ///< (E,), named "out_proj.bias"

    /// PyTorch's initialisation: Xavier uniform projections in, zero biases, U(-1/sqrt E, 1/sqrt E) out.
    MultiHeadAttention(std::size_t embed_dim, std::size_t heads, Rng& rng)
        : in_proj_weight("in_proj_weight", Tensor<T>(Shape{3 * embed_dim, embed_dim})),
          in_proj_bias("in_proj_bias", Tensor<T>(Shape{3 * embed_dim})),
          out_proj_weight("out_proj.weight", Tensor<T>(Shape{embed_dim, embed_dim})),
          out_proj_bias("out_proj.bias", Tensor<T>(Shape{embed_dim})),
          heads_(heads) {
        if (embed_dim == 0 || heads == 0 || embed_dim % heads != 0)
            throw value_error("MultiHeadAttention: the embedding size " + std::to_string(embed_dim) +
                              " must be a positive multiple of the number of heads " + std::to_string(heads));
        Init::xavier_uniform().apply(in_proj_weight.value, rng);
        const double bound = 1.0 / std::sqrt(static_cast<double>(embed_dim));
        for (auto& w : out_proj_weight.value) w = static_cast<T>(rng.uniform(-bound, bound));
    }

    std::size_t embed_dim() const noexcept { return out_proj_bias.value.size(); }
    std::size_t heads() const noexcept { return heads_; }

    /// Self-attention without mask or bias.
    Var<T> forward(const Var<T>& x) override { return forward(x, Var<T>(), Var<T>()); }
    /// (x), (x, mask) or (x, mask, bias), as nn::Model and multi-input fit() call it.
    Var<T> forward_many(const std::vector<Var<T>>& in) override { return this->template forward_by_arity<1, 3>(*this, in); }
    std::size_t num_inputs() const override { return 0; }
    /// mask (B, N) of 1/0 and bias (B, h, N, N) are optional: pass Var<T>() for none.
    Var<T> forward(const Var<T>& x, const Var<T>& mask, const Var<T>& bias = Var<T>()) {
        const Shape xs = x.shape();
        const std::size_t e = embed_dim(), h = heads_, d = e / h;
        if (xs.rank() != 3 || xs[2] != e)
            throw shape_error("MultiHeadAttention(" + std::to_string(e) + ", " + std::to_string(h) + "): expected input of shape (B, N, " +
                              std::to_string(e) + "), got " + xs.str());
        const std::size_t b = xs[0], n = xs[1];
        if (mask.valid() && mask.shape() != Shape{b, n})
            detail::throw_attention_shapes("MultiHeadAttention: mask vs input: expected a mask of shape (B, N)", mask.shape(), xs);
        if (bias.valid() && bias.shape() != Shape{b, h, n, n})
            detail::throw_attention_shapes("MultiHeadAttention: bias vs input: expected a bias of shape (B, heads, N, N)", bias.shape(), xs);
        Tape<T>& t = x.tape();
        const Var<T> qkv = add(matmul(reshape(x, Shape{b * n, e}), this->use(t, in_proj_weight), false, true), this->use(t, in_proj_bias));
        const auto head_split = [&](std::size_t part) {
            return permute(reshape(slice(qkv, 1, part * e, e), Shape{b, n, h, d}), {0, 2, 1, 3});  // (B, h, N, d)
        };
        // PyTorch scales q before the product; the scores then round as its do.
        const Var<T> q = scale(head_split(0), T(1) / std::sqrt(static_cast<T>(d)));
        Var<T> s = bmm(q, head_split(1), false, true);  // (B, h, N, N)
        if (bias.valid()) s = add(s, bias);
        const Var<T> p = mask.valid() ? masked_softmax(s, mask) : masked_softmax(s);  // padded keys get weight 0
        const Var<T> o = bmm(p, head_split(2));                                        // (B, h, N, d)
        const Var<T> merged = reshape(permute(o, {0, 2, 1, 3}), Shape{b * n, e});
        const Var<T> y = add(matmul(merged, this->use(t, out_proj_weight), false, true), this->use(t, out_proj_bias));
        return reshape(y, xs);
    }

    Shape output_shape(const Shape& in) const override {
        if (in.rank() != 3 || in[2] != embed_dim())
            throw shape_error("MultiHeadAttention(" + std::to_string(embed_dim()) + ", " + std::to_string(heads_) +
                              "): expected input of shape (B, N, " + std::to_string(embed_dim()) + "), got " + in.str());
        return in;
    }
    std::string type_name() const override { return "MultiHeadAttention"; }
    std::string describe() const override { return "MultiHeadAttention(" + std::to_string(embed_dim()) + ", heads " + std::to_string(heads_) + ")"; }

protected:
    void collect_parameters(std::vector<NamedParameter<T>>& out) override {
        out.insert(out.end(), {{"in_proj_weight", &in_proj_weight}, {"in_proj_bias", &in_proj_bias},
                               {"out_proj.weight", &out_proj_weight}, {"out_proj.bias", &out_proj_bias}});
    }

private:
    std::size_t heads_;
};

/// A transformer encoder block on (B, N, E), pre-norm (Xiong et al., arXiv:2002.04745):
/// h = x + MHA(LN(x)), y = h + W2 gelu(W1 LN(h)) (gelu: autodiff/gelu.hpp). With post_norms (ParticleBlock) a LayerNorm also
/// follows the attention and the MLP's activation, as in the Particle Transformer.
template <class T>
class TransformerBlock : public Cloneable<TransformerBlock<T>, Module<T>> {
public:
    TransformerBlock(std::size_t embed_dim, std::size_t heads, std::size_t hidden, Rng& rng)
        : TransformerBlock(embed_dim, heads, hidden, rng, false) {}

    /// The layers, public so that weights can be copied in by name ("attn.in_proj_weight", "fc1.weight").
    LayerNorm<T> norm1;
    MultiHeadAttention<T> attn;
    LayerNorm<T> norm2;
    Dense<T> fc1;
    Dense<T> fc2;
    std::unique_ptr<LayerNorm<T>> post_attn_norm, post_fc_norm;  ///< ParticleBlock only

    TransformerBlock(const TransformerBlock& o)
        : TransformerBlock::Cloneable(o), norm1(o.norm1), attn(o.attn), norm2(o.norm2), fc1(o.fc1), fc2(o.fc2),
          post_attn_norm(o.post_attn_norm ? std::make_unique<LayerNorm<T>>(*o.post_attn_norm) : nullptr),
          post_fc_norm(o.post_fc_norm ? std::make_unique<LayerNorm<T>>(*o.post_fc_norm) : nullptr) {}
    TransformerBlock& operator=(const TransformerBlock&) = delete;

    Var<T> forward(const Var<T>& x) override { return forward(x, Var<T>(), Var<T>()); }
    /// (x), (x, mask) or (x, mask, bias), as nn::Model and multi-input fit() call it.
    Var<T> forward_many(const std::vector<Var<T>>& in) override { return this->template forward_by_arity<1, 3>(*this, in); }
    std::size_t num_inputs() const override { return 0; }
    /// mask (B, N) and bias (B, heads, N, N) go to the attention; pass Var<T>() for none.
    Var<T> forward(const Var<T>& x, const Var<T>& mask, const Var<T>& bias = Var<T>()) {
        Var<T> a = attn.forward(norm1.forward(x), mask, bias);
        if (post_attn_norm) a = post_attn_norm->forward(a);
        const Var<T> h = add(x, a);
        const Shape s = h.shape();
        const std::size_t rows = s[0] * s[1];
        Var<T> m = gelu(fc1.forward(reshape(norm2.forward(h), Shape{rows, s[2]})));
        if (post_fc_norm) m = post_fc_norm->forward(m);
        return add(h, reshape(fc2.forward(m), s));
    }

    Shape output_shape(const Shape& in) const override { return attn.output_shape(in); }
    std::string type_name() const override { return post_attn_norm ? "ParticleBlock" : "TransformerBlock"; }
    std::string describe() const override {
        return type_name() + "(" + std::to_string(attn.embed_dim()) + ", heads " + std::to_string(attn.heads()) + ", hidden " +
               std::to_string(fc1.out_features()) + ")";
    }

protected:
    TransformerBlock(std::size_t embed_dim, std::size_t heads, std::size_t hidden, Rng& rng, bool post_norms)
        : norm1(embed_dim), attn(embed_dim, heads, rng), norm2(embed_dim), fc1(embed_dim, hidden, rng), fc2(hidden, embed_dim, rng) {
        if (post_norms) {
            post_attn_norm = std::make_unique<LayerNorm<T>>(embed_dim);
            post_fc_norm = std::make_unique<LayerNorm<T>>(hidden);
        }
    }
    void collect_children(std::vector<NamedModule<T>>& out) override {
        out.emplace_back("norm1", &norm1);
        out.emplace_back("attn", &attn);
        if (post_attn_norm) out.emplace_back("post_attn_norm", post_attn_norm.get());
        out.emplace_back("norm2", &norm2);
        out.emplace_back("fc1", &fc1);
        if (post_fc_norm) out.emplace_back("post_fc_norm", post_fc_norm.get());
        out.emplace_back("fc2", &fc2);
    }
};

/// The Particle Transformer's particle attention block (arXiv:2202.03772, Fig. 3 right): pre-norm
/// attention with the interaction bias U, a LayerNorm after the attention, residual; then LayerNorm,
/// linear, GELU, LayerNorm, linear, residual. Children: norm1, attn, post_attn_norm, norm2, fc1,
/// post_fc_norm, fc2 (ParT's pre_attn_norm, attn, post_attn_norm, pre_fc_norm, fc1, post_fc_norm, fc2).
template <class T>
class ParticleBlock : public Cloneable<ParticleBlock<T>, TransformerBlock<T>> {
public:
    ParticleBlock(std::size_t embed_dim, std::size_t heads, std::size_t hidden, Rng& rng)
        : ParticleBlock::Cloneable(embed_dim, heads, hidden, rng, true) {}
};

/// x + f(x) for a module f whose output has x's shape (He et al., arXiv:1512.03385).
template <class T>
class Residual : public Cloneable<Residual<T>, Module<T>> {
public:
    explicit Residual(std::unique_ptr<Module<T>> fn) : fn_(std::move(fn)) {
        if (!fn_) throw value_error("Residual: no module given");
    }
    Residual(const Residual& o) : Residual::Cloneable(o), fn_(o.fn_->clone()) {}
    Residual& operator=(const Residual&) = delete;

    Module<T>& inner() noexcept { return *fn_; }
    Var<T> forward(const Var<T>& x) override {
        const Var<T> y = fn_->forward(x);
        if (y.shape() != x.shape())
            detail::throw_attention_shapes("Residual: the wrapped module's output vs its input", y.shape(), x.shape());
        return add(x, y);
    }
    Shape output_shape(const Shape& in) const override {
        const Shape out = fn_->output_shape(in);
        if (out != in) detail::throw_attention_shapes("Residual: the wrapped module's output vs its input", out, in);
        return in;
    }
    std::string type_name() const override { return "Residual"; }
    std::string describe() const override { return "Residual(" + fn_->describe() + ")"; }

protected:
    void collect_children(std::vector<NamedModule<T>>& out) override { out.emplace_back("fn", fn_.get()); }

private:
    std::unique_ptr<Module<T>> fn_;
};

} // namespace nn
} // namespace tapir
