// The fused recurrent ops (RNN, LSTM, GRU) and embedding: gradcheck and gradgradcheck, the fused
// first-order BPTT against the recorded op-by-op rule, a gradient penalty through an LSTM, PyTorch
// float64 values (with and without padding), and shape errors.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <tapir/autodiff/backward.hpp>
#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/autodiff/recurrent.hpp>
#include <tapir/random.hpp>

#include "support/gradcheck.hpp"
#include "support/torch_ref.hpp"

using namespace tapir;
using namespace tapir_test;

namespace {

const RnnCell all_cells[] = {RnnCell::rnn_tanh, RnnCell::lstm, RnnCell::gru};

/// Parameters of one recurrent layer in PyTorch layout, and an initial state.
struct RnnParams {
    Td wih, whh, bih, bhh, s0;
    RnnParams(RnnCell cell, std::size_t f, std::size_t h, std::size_t b, std::uint64_t seed) {
        const std::size_t gh = rnn_gates(cell) * h;
        wih = rnd(Shape{gh, f}, seed, -0.8, 0.8);
        whh = rnd(Shape{gh, h}, seed + 1, -0.8, 0.8);
        bih = rnd(Shape{gh}, seed + 2, -0.5, 0.5);
        bhh = rnd(Shape{gh}, seed + 3, -0.5, 0.5);
        s0 = rnd(Shape{b, rnn_state_blocks(cell) * h}, seed + 4, -0.7, 0.7);
    }
};

Td mask_of(const std::vector<std::size_t>& lengths, std::size_t steps) {
    Td m(Shape{lengths.size(), steps});
    for (std::size_t b = 0; b < lengths.size(); ++b)
        for (std::size_t s = 0; s < steps; ++s) m.data()[b * steps + s] = s < lengths[b] ? 1.0 : 0.0;
    return m;
}

/// x, weight_ih, weight_hh, bias_ih, bias_hh, state0 -> states.
V run(RnnCell cell, Tape<double>& t, const Vs& v, const Td* mask) {
    Var<double> m;
    if (mask) m = t.constant(*mask);
    return recurrent_sequence(cell, v[0], v[1], v[2], &v[3], &v[4], &v[5], mask ? &m : nullptr);
}

} // namespace

TEST_CASE("recurrent cells: gradcheck and gradgradcheck, with and without a mask") {
    const std::size_t B = 2, T = 3, F = 2, H = 2;
    const Td x = rnd(Shape{B, T, F}, 11, -1.0, 1.0);
    const Td mask = mask_of({3, 2}, T);
    for (RnnCell cell : all_cells) {
        INFO(rnn_cell_name(cell));
        const RnnParams p(cell, F, H, B, 20);
        const std::vector<Td> in{x, p.wih, p.whh, p.bih, p.bhh, p.s0};
        check_both([cell](Tape<double>& t, const Vs& v) { return run(cell, t, v, nullptr); }, in);
        check_both([cell, &mask](Tape<double>& t, const Vs& v) { return run(cell, t, v, &mask); }, in);
        // The layer outputs: masked sequence and last state.
        check_both([cell, &mask](Tape<double>& t, const Vs& v) {
            const Var<double> m = t.constant(mask);
            return recurrent_output(cell, run(cell, t, v, &mask), true, &m);
        }, in);
        check_both([cell, &mask](Tape<double>& t, const Vs& v) { return recurrent_output(cell, run(cell, t, v, &mask), false); }, in);
    }
}

TEST_CASE("recurrent: the fused first-order BPTT equals the recorded op-by-op rule") {
    const std::size_t B = 4, T = 6, F = 3, H = 5;
    const Td x = rnd(Shape{B, T, F}, 31, -1.0, 1.0);
    const Td r = rnd(Shape{B, T, 2 * H}, 32);
    for (const int variant : {0, 1, 2}) {  // plain, masked, zero initial state (step 0 skips its GEMM)
        const bool masked = variant == 1;
        const Td mask = mask_of({6, 4, 1, 5}, T);
        for (RnnCell cell : all_cells) {
            INFO(rnn_cell_name(cell) << " variant " << variant);
            const RnnParams p(cell, F, H, B, 40);
            const std::vector<Td> in{x, p.wih, p.whh, p.bih, p.bhh, variant == 2 ? Td(p.s0.shape()) : p.s0};
            Tape<double> t;
            Vs v;
            for (const Td& a : in) v.push_back(t.variable(a));
            const V y = run(cell, t, v, masked ? &mask : nullptr);
            const Td rr = Td(y.shape(), r.data(), y.size());
            const V loss = sum(mul(y, t.constant(rr)));
            const Vs fused = grad(loss, v, false);
            const Vs ops = grad(loss, v, true);
            for (std::size_t k = 0; k < v.size(); ++k) {
                INFO("input " << k);
                REQUIRE(fused[k].shape() == ops[k].shape());
                CHECK(max_abs_diff(fused[k].value(), ops[k].value()) < 1e-13);
                double norm = 0;
                for (std::size_t i = 0; i < fused[k].size(); ++i) norm += std::fabs(fused[k][i]);
                CHECK(norm > 1e-3);  // a real gradient, not two zeros
            }
        }
    }
}

TEST_CASE("recurrent: a gradient penalty through an LSTM matches finite differences of the first-order gradient") {
    const std::size_t B = 2, T = 4, F = 3, H = 3;
    const Td x = rnd(Shape{B, T, F}, 51, -1.0, 1.0);
    const RnnParams p(RnnCell::lstm, F, H, B, 60);
    const Td mask = mask_of({4, 2}, T);
    // P(w_hh) = sum over x of (d sum(h_last^2) / dx)^2, its gradient by double backprop.
    const auto penalty = [&](const Td& whh, bool create_graph, Td* dwhh) {
        Tape<double> t;
        const V xv = t.variable(x), wi = t.constant(p.wih), wh = create_graph ? t.variable(whh) : t.constant(whh);
        const V bi = t.constant(p.bih), bh = t.constant(p.bhh), m = t.constant(mask);
        const V h = recurrent_output(RnnCell::lstm, recurrent_sequence(RnnCell::lstm, xv, wi, wh, &bi, &bh, nullptr, &m), false);
        const V gx = grad(sum(mul(h, h)), xv, create_graph);
        const V pen = sum(mul(gx, gx));
        if (dwhh) *dwhh = grad(pen, wh).value();
        return pen.item();
    };
    Td analytic;
    penalty(p.whh, true, &analytic);
    const double eps = 1e-6;
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < p.whh.size(); ++i) {
        Td up = p.whh, dn = p.whh;
        up.data()[i] += eps;
        dn.data()[i] -= eps;
        const double numeric = (penalty(up, false, nullptr) - penalty(dn, false, nullptr)) / (2 * eps);
        worst = std::fmax(worst, std::fabs(numeric - analytic.data()[i]));
        scale = std::fmax(scale, std::fabs(numeric));
    }
    INFO("worst " << worst << " of scale " << scale);
    CHECK(scale > 1e-2);
    CHECK(worst < 1e-7 * std::fmax(1.0, scale));
}

TEST_CASE("recurrent: forward values and gradients equal PyTorch float64 (batch_first, weights copied, packed sequences)") {
    const std::size_t B = 3, T = 5, F = 4, H = 3;
    const Td x = rnd(Shape{B, T, F}, 71, -1.5, 1.5);
    const std::vector<std::size_t> lengths{5, 2, 4};
    const Td mask = mask_of(lengths, T);
    const Td lens(Shape{B}, {5.0, 2.0, 4.0});
    for (RnnCell cell : all_cells) {
        INFO(rnn_cell_name(cell));
        const RnnParams p(cell, F, H, B, 80);
        const std::size_t S = rnn_state_blocks(cell);
        const Td r = rnd(Shape{B, T, H}, 90);
        Td ys, hs, cs, yp, hp, cp;
        std::vector<Td> grads;
        for (const bool masked : {false, true}) {
            Tape<double> t;
            Vs v{t.constant(x), t.variable(p.wih), t.variable(p.whh), t.variable(p.bih), t.variable(p.bhh), t.constant(p.s0)};
            const V m = t.constant(mask);
            const V st = run(cell, t, v, masked ? &mask : nullptr);
            const V y = recurrent_output(cell, st, true, masked ? &m : nullptr);
            const V last = recurrent_final_state(st);
            (masked ? yp : ys) = y.value();
            (masked ? hp : hs) = slice(last, 1, 0, H).value();
            if (S == 2) (masked ? cp : cs) = slice(last, 1, H, H).value();
            if (!masked) {
                backward(sum(mul(y, t.constant(r))));
                for (std::size_t k = 1; k <= 4; ++k) grads.push_back(v[k].grad());
            }
        }
        const std::string kind = cell == RnnCell::lstm ? "LSTM" : (cell == RnnCell::gru ? "GRU" : "RNN");
        const auto res = torch_eval(
            {{"x", x}, {"wih", p.wih}, {"whh", p.whh}, {"bih", p.bih}, {"bhh", p.bhh}, {"s0", p.s0}, {"lens", lens}, {"r", r}},
            "H = whh.shape[1]\n"
            "m = torch.nn." + kind + "(x.shape[2], H, batch_first=True)\n"
            "with torch.no_grad():\n"
            "    m.weight_ih_l0.copy_(wih); m.weight_hh_l0.copy_(whh); m.bias_ih_l0.copy_(bih); m.bias_hh_l0.copy_(bhh)\n"
            "lstm = '" + kind + "' == 'LSTM'\n"
            "st = (s0[:, :H].unsqueeze(0).contiguous(), s0[:, H:].unsqueeze(0).contiguous()) if lstm else s0.unsqueeze(0)\n"
            "y, hn = m(x, st)\n"
            "(y * r).sum().backward()\n"
            "out['y'] = y\n"
            "out['h'] = hn[0][0] if lstm else hn[0]\n"
            "if lstm: out['c'] = hn[1][0]\n"
            "out['gwih'] = m.weight_ih_l0.grad; out['gwhh'] = m.weight_hh_l0.grad\n"
            "out['gbih'] = m.bias_ih_l0.grad; out['gbhh'] = m.bias_hh_l0.grad\n"
            "pk = torch.nn.utils.rnn.pack_padded_sequence(x, lens.long(), batch_first=True, enforce_sorted=False)\n"
            "yp, hn = m(pk, st)\n"
            "yp, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, batch_first=True, total_length=x.shape[1])\n"
            "out['yp'] = yp\n"
            "out['hp'] = hn[0][0] if lstm else hn[0]\n"
            "if lstm: out['cp'] = hn[1][0]\n");
        if (!res.ran) return;
        CHECK(max_abs_diff(ys, res["y"]) < 1e-10);
        CHECK(max_abs_diff(hs, res["h"]) < 1e-10);
        CHECK(max_abs_diff(yp, res["yp"]) < 1e-10);
        CHECK(max_abs_diff(hp, res["hp"]) < 1e-10);
        if (S == 2) {
            CHECK(max_abs_diff(cs, res["c"]) < 1e-10);
            CHECK(max_abs_diff(cp, res["cp"]) < 1e-10);
        }
        CHECK(max_abs_diff(grads[0], res["gwih"]) < 1e-10);
        CHECK(max_abs_diff(grads[1], res["gwhh"]) < 1e-10);
        CHECK(max_abs_diff(grads[2], res["gbih"]) < 1e-10);
        CHECK(max_abs_diff(grads[3], res["gbhh"]) < 1e-10);
        CHECK(std::fabs(yp.data()[(1 * T + 3) * H]) == 0.0);  // padding after sequence 1's end
        CHECK(std::fabs(ys.data()[(1 * T + 3) * H]) > 0.0);
    }
}

TEST_CASE("recurrent: bad shapes and masks give errors naming both") {
    Tape<double> t;
    const V x = t.constant(Td(Shape{2, 3, 4}));
    const V wi = t.variable(Td(Shape{12, 4})), wh = t.variable(Td(Shape{12, 4}));
    CHECK_THROWS_WITH_AS(recurrent_sequence(RnnCell::lstm, x, wi, wh, nullptr, nullptr),
                         "recurrent_sequence(lstm): weight_hh must be (4 * hidden, hidden), got (12, 4)", shape_error);
    const V wi5 = t.variable(Td(Shape{9, 5})), wh3 = t.variable(Td(Shape{9, 3}));
    CHECK_THROWS_WITH_AS(recurrent_sequence(RnnCell::gru, x, wi5, wh3, nullptr, nullptr),
                         "recurrent_sequence(gru): input vs weight_ih: shapes do not match: (2, 3, 4) vs (9, 5)", shape_error);
    const V wig = t.variable(Td(Shape{9, 4}));
    const V bad_mask = t.constant(Td(Shape{2, 4}));
    CHECK_THROWS_WITH_AS(recurrent_sequence(RnnCell::gru, x, wig, wh3, nullptr, nullptr, nullptr, &bad_mask),
                         "recurrent(gru): input vs mask: shapes do not match: (2, 3, 9) vs (2, 4)", shape_error);
    const V s_bad = t.constant(Td(Shape{2, 6}));
    CHECK_THROWS_WITH_AS(recurrent_sequence(RnnCell::gru, x, wig, wh3, nullptr, nullptr, &s_bad),
                         "recurrent_sequence(gru): input vs initial state: shapes do not match: (2, 3, 4) vs (2, 6)", shape_error);
    const V half = t.constant(Td(Shape{2, 3}, 0.5));
    CHECK_THROWS_WITH_AS(recurrent_sequence(RnnCell::gru, x, wig, wh3, nullptr, nullptr, nullptr, &half),
                         "recurrent(gru): mask values must be 0 or 1, got 0.500000 at 0", value_error);
    const V b_bad = t.variable(Td(Shape{8}));
    CHECK_THROWS_WITH_AS(recurrent_sequence(RnnCell::gru, x, wig, wh3, &b_bad, nullptr),
                         "recurrent_sequence(gru): weight_hh vs bias: shapes do not match: (9, 3) vs (8,)", shape_error);
    CHECK_THROWS_WITH_AS(sequence_mask(t, {2, 5}, 3), "sequence_mask: length 5 of sequence 1 exceeds the 3 steps", value_error);
}

TEST_CASE("embedding: rows of the table, gradient into the used rows (repeats add), checks") {
    const Td w = rnd(Shape{5, 3}, 101);
    const Td ids(Shape{2, 3}, {4.0, 0.0, 4.0, 2.0, 1.0, 4.0});
    check_both([&ids](Tape<double>& t, const Vs& v) { return embedding(v[0], t.constant(ids)); }, {w});
    Tape<double> t;
    const V wv = t.variable(w);
    const V e = embedding(wv, t.constant(ids));
    CHECK(e.shape() == Shape{2, 3, 3});
    CHECK(e[1 * 9 + 0 * 3 + 2] == w.data()[2 * 3 + 2]);
    backward(sum(e));
    const Td g = wv.grad();
    CHECK(g.data()[4 * 3 + 1] == 3.0);  // row 4 used three times
    CHECK(g.data()[3 * 3 + 0] == 0.0);  // row 3 unused
    CHECK(g.data()[0] == 1.0);
    CHECK_THROWS_WITH_AS(embedding(wv, t.constant(Td(Shape{2}, {1.0, 5.0}))),
                         "embedding: index 5.000000 at position 1 is not a row of the table of shape (5, 3)", value_error);
    CHECK_THROWS_WITH_AS(embedding(wv, t.constant(Td(Shape{1}, {1.5}))),
                         "embedding: index 1.500000 at position 0 is not a row of the table of shape (5, 3)", value_error);
    const auto r = torch_eval({{"w", w}, {"ids", ids}}, "out['e'] = torch.nn.functional.embedding(ids.long(), w)\n");
    if (!r.ran) return;
    CHECK(max_abs_diff(e.value(), r["e"]) < 1e-15);
}
