// MultiHeadAttention, TransformerBlock, ParticleBlock, Residual: gradients of first and second order
// through mask and bias, PyTorch float64 equality with copied weights, permutation equivariance.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/nn/attention.hpp>

#include "support/gradcheck.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir::nn;
using namespace tapir_test;

namespace {
/// Wraps a layer with forward(x, mask, bias) as a one-input module for functional_call; the test
/// sets mask and bias (Vars of the current tape) before each call.
template <class L>
struct WithMask : Module<double> {
    L& layer;
    V mask, bias;
    explicit WithMask(L& l) : layer(l) {}
    V forward(const V& x) override { return layer.forward(x, mask, bias); }
    std::string type_name() const override { return "WithMask"; }
    std::unique_ptr<Module<double>> clone() const override { return nullptr; }
    void collect_children(std::vector<NamedModule<double>>& out) override { out.emplace_back("layer", &layer); }
};

/// gradcheck and gradgradcheck with respect to x, the bias and every parameter, with a fixed mask.
template <class L>
void check_layer(L& layer, const Td& x, const Td& mask, const Td& bias) {
    WithMask<L> w(layer);
    std::vector<Td> inputs{x, bias};
    for (auto* p : w.parameters()) inputs.push_back(p->value);
    const GradcheckFn f = [&w, &mask](Tape<double>& t, const Vs& v) {
        w.mask = t.constant(mask);
        w.bias = v[1];
        return functional_call(w, v[0], Vs(v.begin() + 2, v.end()));
    };
    check_both(f, inputs);
}

Td mask_of(std::size_t b, std::size_t n, const std::vector<std::size_t>& lengths) {
    Td m(Shape{b, n});
    for (std::size_t i = 0; i < b; ++i)
        for (std::size_t j = 0; j < lengths[i]; ++j) m(i, j) = 1.0;
    return m;
}

/// Particles reordered by perm along axis 1 (and axis 2 and 3 for a pairwise value).
Td permuted(const Td& x, const std::vector<std::size_t>& perm) {
    Td y(x.shape());
    const Shape s = x.shape();
    for (std::size_t b = 0; b < s[0]; ++b)
        for (std::size_t i = 0; i < s[1]; ++i) {
            if (s.rank() == 2) y(b, i) = x(b, perm[i]);
            else if (s.rank() == 3)
                for (std::size_t f = 0; f < s[2]; ++f) y(b, i, f) = x(b, perm[i], f);
            else
                for (std::size_t k = 0; k < s[2]; ++k)
                    for (std::size_t l = 0; l < s[3]; ++l) y(b, i, k, l) = x(b, i, perm[k], perm[l]);
        }
    return y;
}

} // namespace

TEST_CASE("MultiHeadAttention: first and second order through mask, bias and all parameters") {
    Rng rng(3);
    MultiHeadAttention<double> attn(4, 2, rng);
    for (auto& v : attn.in_proj_bias.value) v = rng.uniform(-0.5, 0.5);
    for (auto& v : attn.out_proj_bias.value) v = rng.uniform(-0.5, 0.5);
    CHECK(attn.num_parameters() == 3 * 16 + 12 + 16 + 4);
    check_layer(attn, rnd(Shape{2, 3, 4}, 1), mask_of(2, 3, {3, 2}), rnd(Shape{2, 2, 3, 3}, 2, -1.0, 1.0));
}

TEST_CASE("MultiHeadAttention equals torch.nn.MultiheadAttention with copied weights (mask, bias)") {
    const std::size_t b = 3, n = 5, e = 8, h = 2;
    Rng rng(7);
    MultiHeadAttention<double> attn(e, h, rng);
    for (auto& v : attn.in_proj_bias.value) v = rng.uniform(-0.5, 0.5);
    for (auto& v : attn.out_proj_bias.value) v = rng.uniform(-0.5, 0.5);
    const Td x = rnd(Shape{b, n, e}, 11), u = rnd(Shape{b, h, n, n}, 12), mask = mask_of(b, n, {5, 3, 1});
    auto r = torch_eval({{"x", x}, {"u", u}, {"mask", mask}, {"w_in", attn.in_proj_weight.value}, {"b_in", attn.in_proj_bias.value},
                         {"w_out", attn.out_proj_weight.value}, {"b_out", attn.out_proj_bias.value}},
                        "m = torch.nn.MultiheadAttention(8, 2, batch_first=True)\n"
                        "with torch.no_grad():\n"
                        "    m.in_proj_weight.copy_(w_in); m.in_proj_bias.copy_(b_in)\n"
                        "    m.out_proj.weight.copy_(w_out); m.out_proj.bias.copy_(b_out)\n"
                        "pad = mask == 0\n"
                        "out['plain'] = m(x, x, x, need_weights=False)[0]\n"
                        "out['masked'] = m(x, x, x, key_padding_mask=pad, need_weights=False)[0]\n"
                        "out['both'] = m(x, x, x, key_padding_mask=pad, attn_mask=u.reshape(6, 5, 5), need_weights=False)[0]\n");
    if (!r.ran) return;
    Tape<double> t;
    const V vx = t.constant(x), vm = t.constant(mask), vu = t.constant(u);
    CHECK(max_abs_diff(attn.forward(vx).value(), r["plain"]) < 1e-10);
    CHECK(max_abs_diff(attn.forward(vx, vm).value(), r["masked"]) < 1e-10);
    CHECK(max_abs_diff(attn.forward(vx, vm, vu).value(), r["both"]) < 1e-10);
    CHECK(max_abs_diff(attn.forward(vx).value(), r["masked"]) > 1e-3);  // the mask matters
    std::vector<std::string> names;
    for (auto& p : attn.named_parameters()) names.push_back(p.first);
    CHECK(names == std::vector<std::string>{"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"});
}

TEST_CASE("MultiHeadAttention: padded keys do not change real particles; bad shapes name both") {
    Rng rng(5);
    MultiHeadAttention<double> attn(6, 3, rng);
    Td x = rnd(Shape{2, 4, 6}, 21);
    const Td mask = mask_of(2, 4, {4, 2});
    Tape<double> t;
    const Td y0 = attn.forward(t.constant(x), t.constant(mask)).value();
    for (std::size_t f = 0; f < 6; ++f) x(1, 2, f) += 3.0, x(1, 3, f) -= 1.0;
    const Td y1 = attn.forward(t.constant(x), t.constant(mask)).value();
    for (std::size_t i = 0; i < 2; ++i)
        for (std::size_t f = 0; f < 6; ++f) CHECK(y1(1, i, f) == doctest::Approx(y0(1, i, f)).epsilon(1e-14));
    const Td y2 = attn.forward(t.constant(x)).value();  // without the mask the same change shows
    CHECK(std::fabs(y2(1, 0, 0) - y0(1, 0, 0)) > 1e-6);

    CHECK_THROWS_WITH(attn.forward(t.constant(Td(Shape{2, 4, 5}))), "MultiHeadAttention(6, 3): expected input of shape (B, N, 6), got (2, 4, 5)");
    CHECK_THROWS_WITH(attn.forward(t.constant(x), t.constant(Td(Shape{2, 3}))), "MultiHeadAttention: mask vs input: expected a mask of shape (B, N): (2, 3) vs (2, 4, 6)");
    CHECK_THROWS_WITH(attn.forward(t.constant(x), V(), t.constant(Td(Shape{2, 2, 4, 4}))), "MultiHeadAttention: bias vs input: expected a bias of shape (B, heads, N, N): (2, 2, 4, 4) vs (2, 4, 6)");
    CHECK_THROWS_WITH(MultiHeadAttention<double>(6, 4, rng), "MultiHeadAttention: the embedding size 6 must be a positive multiple of the number of heads 4");
}

TEST_CASE("TransformerBlock and ParticleBlock: first and second order with mask and bias") {
    Rng rng(9);
    TransformerBlock<double> block(4, 2, 6, rng);
    check_layer(block, rnd(Shape{2, 3, 4}, 31), mask_of(2, 3, {3, 2}), rnd(Shape{2, 2, 3, 3}, 32, -1.0, 1.0));
    ParticleBlock<double> part(4, 2, 5, rng);
    CHECK(part.type_name() == "ParticleBlock");
    CHECK(part.num_parameters() == block.num_parameters() - (4 * 6 + 6 + 6 * 4) + (4 * 5 + 5 + 5 * 4) + 2 * 4 + 2 * 5);
    check_layer(part, rnd(Shape{2, 3, 4}, 33), mask_of(2, 3, {3, 2}), rnd(Shape{2, 2, 3, 3}, 34, -1.0, 1.0));
}

TEST_CASE("TransformerBlock equals torch.nn.TransformerEncoderLayer(norm_first, gelu) with copied weights") {
    const std::size_t b = 2, n = 5, e = 8, h = 4, hid = 16;
    Rng rng(13);
    TransformerBlock<double> block(e, h, hid, rng);
    for (auto* p : block.parameters())
        for (auto& v : p->value) v += rng.uniform(-0.3, 0.3);  // non-trivial LayerNorm weights and biases
    const Td x = rnd(Shape{b, n, e}, 41), mask = mask_of(b, n, {5, 3});
    Td w1t(Shape{hid, e}), w2t(Shape{e, hid});  // nn.Linear stores (out, in); Dense stores (in, out)
    for (std::size_t i = 0; i < e; ++i)
        for (std::size_t j = 0; j < hid; ++j) w1t(j, i) = block.fc1.weight.value(i, j), w2t(i, j) = block.fc2.weight.value(j, i);
    auto r = torch_eval({{"x", x}, {"mask", mask}, {"w_in", block.attn.in_proj_weight.value}, {"b_in", block.attn.in_proj_bias.value},
                         {"w_out", block.attn.out_proj_weight.value}, {"b_out", block.attn.out_proj_bias.value},
                         {"g1", block.norm1.weight.value}, {"c1", block.norm1.bias.value}, {"g2", block.norm2.weight.value},
                         {"c2", block.norm2.bias.value}, {"w1", w1t}, {"b1", block.fc1.bias.value}, {"w2", w2t},
                         {"b2", block.fc2.bias.value}},
                        "m = torch.nn.TransformerEncoderLayer(8, 4, 16, dropout=0.0, activation='gelu', batch_first=True, norm_first=True)\n"
                        "with torch.no_grad():\n"
                        "    a = m.self_attn\n"
                        "    a.in_proj_weight.copy_(w_in); a.in_proj_bias.copy_(b_in); a.out_proj.weight.copy_(w_out); a.out_proj.bias.copy_(b_out)\n"
                        "    m.norm1.weight.copy_(g1); m.norm1.bias.copy_(c1); m.norm2.weight.copy_(g2); m.norm2.bias.copy_(c2)\n"
                        "    m.linear1.weight.copy_(w1); m.linear1.bias.copy_(b1); m.linear2.weight.copy_(w2); m.linear2.bias.copy_(b2)\n"
                        "out['y'] = m(x, src_key_padding_mask=(mask == 0))\n");
    if (!r.ran) return;
    Tape<double> t;
    CHECK(max_abs_diff(block.forward(t.constant(x), t.constant(mask)).value(), r["y"]) < 1e-10);
}

TEST_CASE("ParticleBlock is permutation equivariant (particles, mask and bias reordered together)") {
    Rng rng(17);
    ParticleBlock<double> block(8, 2, 12, rng);
    const Td x = rnd(Shape{2, 5, 8}, 51), u = rnd(Shape{2, 2, 5, 5}, 52), mask = mask_of(2, 5, {5, 4});
    const std::vector<std::size_t> perm{3, 0, 4, 1, 2};
    Tape<double> t;
    const Td y = block.forward(t.constant(x), t.constant(mask), t.constant(u)).value();
    const Td yp = block.forward(t.constant(permuted(x, perm)), t.constant(permuted(mask, perm)), t.constant(permuted(u, perm))).value();
    CHECK(max_abs_diff(yp, permuted(y, perm)) < 1e-12);
    CHECK(max_abs_diff(yp, y) > 1e-3);  // the reordering is real
    // A clone is a deep copy that computes the same.
    auto c = block.clone();
    CHECK(c->describe() == "ParticleBlock(8, heads 2, hidden 12)");
    CHECK(max_abs_diff(c->forward(t.constant(x)).value(), block.forward(t.constant(x)).value()) == 0.0);
    CHECK(c->parameters()[0] != block.parameters()[0]);
}

TEST_CASE("Residual: x + f(x), gradients, shape errors") {
    Rng rng(19);
    Residual<double> res(std::make_unique<Dense<double>>(3, 3, rng, Activation::tanh));
    const Td x = rnd(Shape{4, 3}, 61);
    Tape<double> t;
    const Td y = res.forward(t.constant(x)).value();
    const Td fx = res.inner().forward(t.constant(x)).value();
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(y.data()[i] == x.data()[i] + fx.data()[i]);
    CHECK(res.named_parameters()[0].first == "fn.weight");
    std::vector<Td> inputs{x};
    for (auto* p : res.parameters()) inputs.push_back(p->value);
    check_both([&res](Tape<double>&, const Vs& v) { return functional_call(res, v[0], Vs(v.begin() + 1, v.end())); }, inputs);
    Residual<double> bad(std::make_unique<Dense<double>>(3, 2, rng));
    CHECK_THROWS_WITH(bad.forward(t.constant(x)), "Residual: the wrapped module's output vs its input: (4, 2) vs (4, 3)");
}
