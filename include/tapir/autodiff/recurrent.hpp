#pragma once
/// Recurrent cells as fused ops over a whole batch-first sequence (B, T, F): the simple RNN
/// (tanh; Elman 1990), the LSTM (Hochreiter and Schmidhuber 1997, with the forget gate of
/// Gers et al. 2000) and the GRU (Cho et al., arXiv:1406.1078), with backpropagation through time.
///
/// Parameters follow PyTorch's torch.nn.RNN/LSTM/GRU exactly, so weights copy either way:
/// weight_ih (G H, F), weight_hh (G H, H), bias_ih (G H,), bias_hh (G H,), with the gate blocks
/// stacked in PyTorch's order: LSTM i, f, g, o (G = 4); GRU r, z, n (G = 3), where
/// n = tanh(W_in x + b_in + r (W_hn h + b_hn)); RNN G = 1.
///
/// The op `recurrent` takes three inputs: the input projection xp = x W_ih^T for all steps,
/// time-major (T, B, G H) so that each step reads one block, computed up front with one GEMM by
/// recurrent_sequence(); the recurrent weight with both biases as two extra columns,
/// [W_hh | b_hh | b_ih] (G H, H + 2); and the initial state (B, S H), S = 2 for the LSTM
/// ([h0 | c0]) and 1 otherwise. Its output is the state after every step, time-major (T, B, S H)
/// ([h_t | c_t] for the LSTM). Each step does one GEMM, h_(t-1) W_hh^T. recurrent_sequence()
/// takes batch-first input and recurrent_output() gives batch-first outputs.
///
/// Variable lengths: an optional (B, T) mask of 1 and 0. Where the mask is 0 the state is carried
/// over unchanged, so with a prefix mask the state at t = T - 1 is the state after each
/// sequence's last element, as a packed sequence in PyTorch gives; recurrent_output() zeroes the
/// outputs after the end as pad_packed_sequence does.
///
/// Backward: the first-order pass runs a fused BPTT kernel on the values the forward saved; the
/// recorded pass (grad with create_graph) writes the same gradient step by step with ordinary
/// ops (matmul, sigmoid, tanh, mul, ...), so gradient penalties through a recurrent layer work.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../simd/arch.hpp"
#include "../simd/elementwise.hpp"
#include "../simd/gemm.hpp"
#include "../simd/math.hpp"
#include "../simd/vec.hpp"
#include "backward.hpp"
#include "kernels.hpp"
#include "ops.hpp"
#include "tape.hpp"

TAPIR_SIMD_DIAG_PUSH

namespace tapir {

/// The cell of a recurrent op.
enum class RnnCell : std::uint8_t { rnn_tanh, lstm, gru };

inline const char* rnn_cell_name(RnnCell c) noexcept {
    return c == RnnCell::lstm ? "lstm" : (c == RnnCell::gru ? "gru" : "rnn_tanh");
}
/// Gate blocks G of a cell: 4 (LSTM), 3 (GRU), 1 (RNN).
constexpr std::size_t rnn_gates(RnnCell c) noexcept { return c == RnnCell::lstm ? 4 : (c == RnnCell::gru ? 3 : 1); }
/// State blocks S of a cell: 2 for the LSTM (h, c), else 1.
constexpr std::size_t rnn_state_blocks(RnnCell c) noexcept { return c == RnnCell::lstm ? 2 : 1; }

namespace detail {

/// The int64 attribute block of a recurrent node (Node::index): [0] 1 when masked, [1] address of
/// the values the forward saved for the fused backward, [2 ..] the (B, T) mask.
struct RnnAttrs {
    bool masked;
    const void* saved;
    const std::int64_t* mask;
};
inline RnnAttrs rnn_attrs(const std::int64_t* p) noexcept {
    return RnnAttrs{p[0] != 0, reinterpret_cast<const void*>(static_cast<std::uintptr_t>(p[1])), p + 2};
}
/// Values saved per step for the fused backward: LSTM i, f, g, o and tanh(c); GRU r, z, n and
/// W_hn h + b_hn; none for the RNN (its output is what it needs).
constexpr std::size_t rnn_saved_width(RnnCell c, std::size_t h) noexcept {
    return c == RnnCell::lstm ? 5 * h : (c == RnnCell::gru ? 4 * h : 0);  // per batch row
}

/// An optional Var argument (null for none) that does not take part in deducing T.
template <class T>
using rnn_opt = const std::enable_if_t<true, Var<T>>*;

/// Row order between batch-first (b, t) and time-major (t, b) rows, in the arena: row k of the
/// time-major result is row order[k] of the batch-first input (to_time_major), or the reverse.
template <class T>
const std::int64_t* rnn_order(Tape<T>& t, std::size_t B, std::size_t Tn, bool to_time_major) {
    auto* p = static_cast<std::int64_t*>(t.arena().allocate(B * Tn * sizeof(std::int64_t)));
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t s = 0; s < Tn; ++s) {
            if (to_time_major) p[s * B + b] = static_cast<std::int64_t>(b * Tn + s);
            else p[b * Tn + s] = static_cast<std::int64_t>(s * B + b);
        }
    return p;
}

/// True when the initial state is all zeros (the default): step 0 then needs no GEMM.
template <class T>
bool rnn_all_zero(const T* p, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i)
        if (p[i] != T(0)) return false;
    return true;
}

struct RnnDims {
    std::size_t b, t, h, g, s;
};

/// W_hh^T (H, G H), b_hh and b_ih from [W_hh | b_hh | b_ih] (G H, H + 2), so that each step's
/// product h W_hh^T + b_hh reads B in place (the GEMM's small-product path, no packing per step).
template <class T>
void rnn_split_weight(const T* TAPIR_RESTRICT w, std::size_t gh, std::size_t h, T* TAPIR_RESTRICT wt, T* TAPIR_RESTRICT bhh,
                      T* TAPIR_RESTRICT bih) {
    for (std::size_t j = 0; j < gh; ++j) {
        for (std::size_t k = 0; k < h; ++k) wt[k * gh + j] = w[j * (h + 2) + k];
        bhh[j] = w[j * (h + 2) + h];
        bih[j] = w[j * (h + 2) + h + 1];
    }
}

/// The forward recurrence. xp (B, T, G H), w (G H, H + 2), s0 (B, S H); out (B, T, S H). Saved per
/// step for the backward, in blocks over the batch (so that each activation is one SIMD call per
/// step): LSTM i f g o (B, 4H), tanh(c) (B, H); GRU r z (B, 2H), n (B, H), W_hn h + b_hn (B, H).
template <class T>
void k_recurrent_forward(Tape<T>& tape, RnnCell cell, const RnnDims& d, const T* xp, const T* w, const T* s0, const std::int64_t* mask,
                         T* out, T* saved) {
    const std::size_t B = d.b, Tn = d.t, H = d.h, GH = d.g * d.h, SH = d.s * d.h, W = rnn_saved_width(cell, H);
    Arena& ar = tape.arena();
    T* TAPIR_RESTRICT hh = ar.template allocate_array<T>(B * GH);
    T* TAPIR_RESTRICT tmp = ar.template allocate_array<T>(B * H);
    T* wt = ar.template allocate_array<T>(H * GH);
    T* TAPIR_RESTRICT bhh = ar.template allocate_array<T>(GH);
    T* TAPIR_RESTRICT bih = ar.template allocate_array<T>(GH);
    rnn_split_weight(w, GH, H, wt, bhh, bih);
    const bool zero0 = rnn_all_zero(s0, B * SH);
    for (std::size_t t = 0; t < Tn; ++t) {
        const T* prev = t == 0 ? s0 : out + (t - 1) * B * SH;
        const std::size_t ldp = SH;
        // hh = h_(t-1) W_hh^T + b_hh: the one GEMM of the step (none from a zero initial state).
        if (t == 0 && zero0) {
            for (std::size_t b = 0; b < B; ++b) std::memcpy(hh + b * GH, bhh, GH * sizeof(T));
        } else if (!simd::gemm_bias_act<T>(B, GH, H, prev, ldp, wt, GH, bhh, false, hh, GH)) {
            simd::gemm<T>(false, false, B, GH, H, T(1), prev, ldp, wt, GH, T(0), hh, GH);
            simd::add_row<T>(hh, B, GH, GH, bhh);
        }
        T* TAPIR_RESTRICT sv = saved + t * B * W;
        switch (cell) {
        case RnnCell::lstm: {
            // g = tanh(a) = 2 sigmoid(2a) - 1: all four gates in one pass over the step.
            simd::gate_sigmoid<T>(B, GH, 2 * H, 3 * H, hh, GH, xp + t * B * GH, GH, bih, sv, GH);
            for (std::size_t b = 0; b < B; ++b) {
                const T* TAPIR_RESTRICT s = sv + b * GH;
                const T* TAPIR_RESTRICT cp = prev + b * ldp + H;
                T* TAPIR_RESTRICT c = tmp + b * H;
                for (std::size_t j = 0; j < H; ++j) c[j] = s[H + j] * cp[j] + s[j] * s[2 * H + j];
            }
            T* TAPIR_RESTRICT tc = sv + B * GH;
            simd::tanh(tmp, tc, B * H);
            for (std::size_t b = 0; b < B; ++b) {
                T* TAPIR_RESTRICT o = out + (t * B + b) * SH;
                const T* TAPIR_RESTRICT s = sv + b * GH;
                for (std::size_t j = 0; j < H; ++j) {
                    o[j] = s[3 * H + j] * tc[b * H + j];
                    o[H + j] = tmp[b * H + j];
                }
            }
            break;
        }
        case RnnCell::gru: {
            T* TAPIR_RESTRICT n = sv + B * 2 * H;
            T* TAPIR_RESTRICT hn = sv + B * 3 * H;
            simd::gate_sigmoid<T>(B, 2 * H, 0, 0, hh, GH, xp + t * B * GH, GH, bih, sv, 2 * H);
            for (std::size_t b = 0; b < B; ++b) std::memcpy(hn + b * H, hh + b * GH + 2 * H, H * sizeof(T));
            for (std::size_t b = 0; b < B; ++b) {
                const T* TAPIR_RESTRICT x = xp + (t * B + b) * GH + 2 * H;
                const T* TAPIR_RESTRICT r = sv + b * 2 * H;
                for (std::size_t j = 0; j < H; ++j) n[b * H + j] = x[j] + bih[2 * H + j] + r[j] * hn[b * H + j];
            }
            simd::tanh(n, n, B * H);
            for (std::size_t b = 0; b < B; ++b) {
                T* TAPIR_RESTRICT o = out + (t * B + b) * SH;
                const T* TAPIR_RESTRICT z = sv + b * 2 * H + H;
                const T* TAPIR_RESTRICT hp = prev + b * ldp;
                for (std::size_t j = 0; j < H; ++j) o[j] = n[b * H + j] + z[j] * (hp[j] - n[b * H + j]);
            }
            break;
        }
        case RnnCell::rnn_tanh: {
            simd::add<T>(hh, xp + t * B * GH, hh, B * GH);
            simd::add_row<T>(hh, B, GH, GH, bih);
            simd::tanh(hh, out + t * B * SH, B * H);
            break;
        }
        }
        if (mask)  // a step past a sequence's end keeps its state
            for (std::size_t b = 0; b < B; ++b)
                if (mask[t * B + b] == 0) std::memcpy(out + (t * B + b) * SH, prev + b * ldp, SH * sizeof(T));
    }
}

/// What the step kernels below share (K is the kernel): loads and stores of a whole vector or a
/// partial one, and the loop over the rows (a.b of them) in vectors of the hidden size a.h.
template <class K, class T>
struct rnn_step_rows {
    using value_type = T;
    template <class V, bool Partial>
    static TAPIR_ALWAYS_INLINE typename V::reg ld(const T* p, std::size_t r) {
        if constexpr (Partial) return V::load_partial(p, r);
        else return (void)r, V::load(p);
    }
    template <class V, bool Partial>
    static TAPIR_ALWAYS_INLINE void st(T* p, const typename V::reg& v, std::size_t r) {
        if constexpr (Partial) V::store_partial(p, v, r);
        else (void)r, V::store(p, v);
    }
    template <class V, class A>
    static TAPIR_ALWAYS_INLINE void run(A a) {
        constexpr std::size_t W = V::W;
        for (std::size_t row = 0; row < a.b; ++row) {
            std::size_t j = 0;
            for (; j + W <= a.h; j += W) K::template block<V, false>(a, row, j, W);
            if (j < a.h) K::template block<V, true>(a, row, j, a.h - j);
        }
    }
};

/// The arguments of one step's backward kernel over the whole batch (b rows, hidden size h), LSTM
/// or GRU: the step's state gradient gy (B, S H), the carry from the later step (updated in place),
/// the step's saved block (its layout is the cell's, rnn_saved_width), the states before the step,
/// and the gate gradients dhh (B, G H); dx (GRU only, may be null) the gradient of xp.
template <class T>
struct rnn_step_args {
    std::size_t b, h;
    const T* gy;
    T* carry;
    const T* saved;
    const T* prev;
    T* dhh;
    T* dx;
};

/// The backward of one step of an LSTM or GRU over the whole batch, on the SIMD layer
/// (simd::dispatch); block() is the cell's.
template <class T, RnnCell Cell>
struct rnn_step_backward_kernel : rnn_step_rows<rnn_step_backward_kernel<T, Cell>, T> {
    using R = rnn_step_rows<rnn_step_backward_kernel<T, Cell>, T>;
    using Args = rnn_step_args<T>;
    template <class V, bool Partial>
    static TAPIR_ALWAYS_INLINE void block(const Args& a, std::size_t row, std::size_t j, std::size_t r) {
        if constexpr (Cell == RnnCell::lstm) lstm_block<V, Partial>(a, row, j, r);
        else gru_block<V, Partial>(a, row, j, r);
    }

    /// LSTM: for each row, ds = gy + carry, then the gate gradients da (B, 4H) and the new carry
    /// (h part 0, c part dc f). The saved block holds the step's gates (B, 4H), then tanh(c) (B, H).
    template <class V, bool Partial>
    static TAPIR_ALWAYS_INLINE void lstm_block(const Args& a, std::size_t row, std::size_t j, std::size_t r) {
        const std::size_t H = a.h, SH = 2 * H, GH = 4 * H;
        const auto one = V::set1(T(1));
        T* cr = a.carry + row * SH + j;
        const T* sr = a.saved + row * GH + j;
        const auto dh = V::add(R::template ld<V, Partial>(a.gy + row * SH + j, r), R::template ld<V, Partial>(cr, r));
        const auto dcin = V::add(R::template ld<V, Partial>(a.gy + row * SH + H + j, r), R::template ld<V, Partial>(cr + H, r));
        const auto ig = R::template ld<V, Partial>(sr, r), fg = R::template ld<V, Partial>(sr + H, r);
        const auto gg = R::template ld<V, Partial>(sr + 2 * H, r), og = R::template ld<V, Partial>(sr + 3 * H, r);
        const auto tc = R::template ld<V, Partial>(a.saved + a.b * GH + row * H + j, r), cp = R::template ld<V, Partial>(a.prev + row * SH + H + j, r);
        const auto dc = V::add(dcin, V::mul(V::mul(dh, og), V::sub(one, V::mul(tc, tc))));
        T* dr = a.dhh + row * GH + j;
        R::template st<V, Partial>(dr, V::mul(V::mul(V::mul(dc, gg), ig), V::sub(one, ig)), r);
        R::template st<V, Partial>(dr + H, V::mul(V::mul(V::mul(dc, cp), fg), V::sub(one, fg)), r);
        R::template st<V, Partial>(dr + 2 * H, V::mul(V::mul(dc, ig), V::sub(one, V::mul(gg, gg))), r);
        R::template st<V, Partial>(dr + 3 * H, V::mul(V::mul(V::mul(dh, tc), og), V::sub(one, og)), r);
        R::template st<V, Partial>(cr, V::zero(), r);
        R::template st<V, Partial>(cr + H, V::mul(dc, fg), r);
    }

    /// GRU: for each row, ds = gy + carry, then the gate gradients dhh (of h W^T + b), dx (of xp)
    /// and the new carry dh z. The saved block holds the step's r, z (B, 2H), then n (B, H), then
    /// W_hn h + b_hn (B, H); dx may be null.
    template <class V, bool Partial>
    static TAPIR_ALWAYS_INLINE void gru_block(const Args& a, std::size_t row, std::size_t j, std::size_t r) {
        const std::size_t H = a.h, GH = 3 * H;
        const auto one = V::set1(T(1));
        T* cr = a.carry + row * H + j;
        const auto dh = V::add(R::template ld<V, Partial>(a.gy + row * H + j, r), R::template ld<V, Partial>(cr, r));
        const T* rz = a.saved + row * 2 * H + j;
        const T* nr = a.saved + a.b * 2 * H + row * H + j;
        const auto rg = R::template ld<V, Partial>(rz, r), zg = R::template ld<V, Partial>(rz + H, r);
        const auto ng = R::template ld<V, Partial>(nr, r), hn = R::template ld<V, Partial>(nr + a.b * H, r);
        const auto hp = R::template ld<V, Partial>(a.prev + row * H + j, r);
        const auto dan = V::mul(V::mul(dh, V::sub(one, zg)), V::sub(one, V::mul(ng, ng)));
        const auto dar = V::mul(V::mul(V::mul(dan, hn), rg), V::sub(one, rg));
        const auto daz = V::mul(V::mul(V::mul(dh, V::sub(hp, ng)), zg), V::sub(one, zg));
        T* d = a.dhh + row * GH + j;
        R::template st<V, Partial>(d, dar, r);
        R::template st<V, Partial>(d + H, daz, r);
        R::template st<V, Partial>(d + 2 * H, V::mul(dan, rg), r);
        if (a.dx) {
            T* x = a.dx + row * GH + j;
            R::template st<V, Partial>(x, dar, r);
            R::template st<V, Partial>(x + H, daz, r);
            R::template st<V, Partial>(x + 2 * H, dan, r);
        }
        R::template st<V, Partial>(cr, V::mul(dh, zg), r);
    }
};

/// The fused BPTT: gradients of xp, w and s0 from the gradient gy of the states (B, T, S H).
/// Any of dxp, dw, ds0 may be null.
template <class T>
void k_recurrent_backward(Tape<T>& tape, RnnCell cell, const RnnDims& d, const T* w, const T* s0, const std::int64_t* mask,
                          const T* out, const T* saved, const T* gy, T* dxp, T* dw, T* ds0) {
    const std::size_t B = d.b, Tn = d.t, H = d.h, GH = d.g * d.h, SH = d.s * d.h, W = rnn_saved_width(cell, H);
    Arena& ar = tape.arena();
    T* carry = ar.template allocate_array<T>(B * SH);
    T* ds = ar.template allocate_array<T>(B * SH);
    // dhh: gradient of h_(t-1) W^T + b for all steps, rows (b, t); the LSTM's and RNN's equal dx.
    // dx: gradient of xp (also needed for b_ih's when xp wants none).
    const bool gru = cell == RnnCell::gru;
    T* dx = dxp ? dxp : ((gru && dw) || !gru ? ar.template allocate_array<T>(B * Tn * GH) : nullptr);
    T* dhh = gru ? ar.template allocate_array<T>(B * Tn * GH) : dx;
    for (std::size_t i = 0; i < B * SH; ++i) carry[i] = T(0);
    // W_hh without its bias columns, rows H apart (aligned for the per-step GEMM).
    T* wh = ar.template allocate_array<T>(GH * H);
    for (std::size_t j = 0; j < GH; ++j) std::memcpy(wh + j * H, w + j * (H + 2), H * sizeof(T));
    for (std::size_t t = Tn; t-- > 0;) {
        const T* prev = t == 0 ? s0 : out + (t - 1) * B * SH;
        const T* sv = saved + t * B * W;
        if (cell == RnnCell::gru) {
            // As the LSTM's below: rows past their sequence's end keep ds = gy + carry, and pass it on.
            for (std::size_t b = 0; mask && b < B; ++b)
                if (mask[t * B + b] == 0)
                    for (std::size_t j = 0; j < SH; ++j) ds[b * SH + j] = gy[(t * B + b) * SH + j] + carry[b * SH + j];
            simd::dispatch<rnn_step_backward_kernel<T, RnnCell::gru>>(
                rnn_step_args<T>{B, H, gy + t * B * SH, carry, sv, prev, dhh + t * B * GH, dx ? dx + t * B * GH : nullptr});
            for (std::size_t b = 0; mask && b < B; ++b)
                if (mask[t * B + b] == 0) {
                    std::memcpy(carry + b * SH, ds + b * SH, SH * sizeof(T));
                    std::memset(dhh + (t * B + b) * GH, 0, GH * sizeof(T));
                    if (dx) std::memset(dx + (t * B + b) * GH, 0, GH * sizeof(T));
                }
        }
        if (cell == RnnCell::lstm) {
            // Rows past their sequence's end first keep ds = gy + carry, which passes on unchanged.
            for (std::size_t b = 0; mask && b < B; ++b)
                if (mask[t * B + b] == 0)
                    for (std::size_t j = 0; j < SH; ++j) ds[b * SH + j] = gy[(t * B + b) * SH + j] + carry[b * SH + j];
            simd::dispatch<rnn_step_backward_kernel<T, RnnCell::lstm>>(rnn_step_args<T>{B, H, gy + t * B * SH, carry, sv, prev, dhh + t * B * GH, nullptr});
            for (std::size_t b = 0; mask && b < B; ++b)
                if (mask[t * B + b] == 0) {
                    std::memcpy(carry + b * SH, ds + b * SH, SH * sizeof(T));
                    std::memset(dhh + (t * B + b) * GH, 0, GH * sizeof(T));
                }
        }
        for (std::size_t b = 0; cell == RnnCell::rnn_tanh && b < B; ++b) {
            const T* gr = gy + (t * B + b) * SH;
            T* dsr = ds + b * SH;
            T* cr = carry + b * SH;
            for (std::size_t j = 0; j < SH; ++j) dsr[j] = gr[j] + cr[j];
            T* dh_row = dhh + (t * B + b) * GH;
            if (mask && mask[t * B + b] == 0) {
                for (std::size_t j = 0; j < SH; ++j) cr[j] = dsr[j];
                for (std::size_t j = 0; j < GH; ++j) dh_row[j] = T(0);
                continue;
            }
            const T* y = out + (t * B + b) * SH;
            for (std::size_t j = 0; j < H; ++j) {
                dh_row[j] = dsr[j] * (T(1) - y[j] * y[j]);
                cr[j] = T(0);
            }
        }
        // carry_h += dhh_t W_hh: the one GEMM of the step (none into an initial state that wants no gradient).
        if (t > 0 || ds0) simd::gemm<T>(false, false, B, H, GH, T(1), dhh + t * B * GH, GH, wh, H, T(1), carry, SH);
    }
    if (ds0)
        for (std::size_t i = 0; i < B * SH; ++i) ds0[i] = carry[i];
    if (dw) {
        // dW^T = sum_t h_(t-1)^T dhh_t: the states are time-major, so two GEMMs (s0 with step 0, the
        // states 0 .. T-2 with steps 1 .. T-1) read them in place. The biases' gradients are the
        // column sums of dhh and dx.
        T* dwt = ar.template allocate_array<T>(H * GH);
        T* dbh = ar.template allocate_array<T>(GH);
        T* dbi = gru ? ar.template allocate_array<T>(GH) : dbh;
        const bool zero0 = rnn_all_zero(s0, B * SH);
        if (!zero0) simd::gemm<T>(true, false, H, GH, B, T(1), s0, SH, dhh, GH, T(0), dwt, GH);
        if (Tn > 1) simd::gemm<T>(true, false, H, GH, B * (Tn - 1), T(1), out, SH, dhh + B * GH, GH, zero0 ? T(0) : T(1), dwt, GH);
        else if (zero0)
            for (std::size_t i = 0; i < H * GH; ++i) dwt[i] = T(0);
        simd::sum_rows<T>(dhh, B * Tn, GH, GH, dbh);
        if (gru) simd::sum_rows<T>(dx, B * Tn, GH, GH, dbi);
        for (std::size_t j = 0; j < GH; ++j) {
            for (std::size_t k = 0; k < H; ++k) dw[j * (H + 2) + k] = dwt[k * GH + j];
            dw[j * (H + 2) + H] = dbh[j];
            dw[j * (H + 2) + H + 1] = dbi[j];
        }
    }
}

/// A constant on the tape of the given value type (a leaf for Var, the bare value for Eager).
template <class T>
Var<T> rnn_const(Tape<T>& t, const Ref<T>& r, const Var<T>*) { return t.leaf(r, false); }
template <class T>
Eager<T> rnn_const(Tape<T>& t, const Ref<T>& r, const Eager<T>*) noexcept { return Eager<T>{r, &t}; }

template <class V>
V rnn_one_minus(const V& v) { return add_scalar(neg(v), 1); }
template <class V>
V rnn_dsigmoid(const V& y) { return sub(y, mul(y, y)); }  // sigma' from sigma's value
template <class V>
V rnn_dtanh(const V& y) { return rnn_one_minus(mul(y, y)); }

/// The gradient as ordinary ops, step by step (recomputing each step's gates from its inputs):
/// recorded under create_graph, so it can be differentiated again.
template <class O, class T, class V>
void recurrent_backward_ops(O& o, const Node<T>& n, const V& g) {
    const RnnCell cell = static_cast<RnnCell>(n.flags);
    Tape<T>& tape = detail::tape_of(g);
    const Shape xs = o.shape(n, 0), ws = o.shape(n, 1);
    const std::size_t Tn = xs[0], B = xs[1], GH = xs[2], H = ws[1] - 2, S = rnn_state_blocks(cell), SH = S * H;
    const RnnAttrs at = rnn_attrs(n.index);
    const V xp = o.in(n, 0), wa = o.in(n, 1), s0 = o.in(n, 2), y = o.out(n);
    const V Wm = slice(wa, 1, 0, H);
    const V bias = reshape(slice(wa, 1, H, 1), Shape{GH}), bias_ih = reshape(slice(wa, 1, H + 1, 1), Shape{GH});
    const auto cols = [](const V& v, std::size_t start, std::size_t len) { return slice(v, 1, start, len); };
    V carry{}, dW{}, db{}, dbi{}, dx{};
    bool have_carry = false;
    std::vector<V> dxs(Tn);
    for (std::size_t t = Tn; t-- > 0;) {
        const V gt = reshape(slice(g, 0, t, 1), Shape{B, SH});
        const V ds = have_carry ? add(gt, carry) : gt;
        const V prev = t == 0 ? s0 : reshape(slice(y, 0, t - 1, 1), Shape{B, SH});
        const V hp = S == 2 ? cols(prev, 0, H) : prev;
        const V ahh = add(matmul(hp, Wm, false, true), bias);
        const V xt = add(reshape(slice(xp, 0, t, 1), Shape{B, GH}), bias_ih);
        V m{}, dsc = ds;
        if (at.masked) {
            Ref<T> mr = tape.alloc(Shape{B, 1});
            for (std::size_t b = 0; b < B; ++b) mr.data[b] = at.mask[t * B + b] != 0 ? T(1) : T(0);
            m = rnn_const(tape, mr, static_cast<const V*>(nullptr));
            dsc = mul(ds, m);
        }
        V dxt{}, dhh{}, direct{};
        bool have_direct = false;
        switch (cell) {
        case RnnCell::lstm: {
            const V a = add(xt, ahh);
            const V ig = sigmoid(cols(a, 0, H)), fg = sigmoid(cols(a, H, H)), gg = tanh(cols(a, 2 * H, H)), og = sigmoid(cols(a, 3 * H, H));
            const V cp = cols(prev, H, H);
            const V c = add(mul(fg, cp), mul(ig, gg));
            const V tc = tanh(c);
            const V dh = cols(dsc, 0, H);
            const V dc = add(cols(dsc, H, H), mul(mul(dh, og), rnn_dtanh(tc)));
            const V dai = mul(mul(dc, gg), rnn_dsigmoid(ig));
            const V daf = mul(mul(dc, cp), rnn_dsigmoid(fg));
            const V dag = mul(mul(dc, ig), rnn_dtanh(gg));
            const V dao = mul(mul(dh, tc), rnn_dsigmoid(og));
            dxt = concat(concat(concat(dai, daf, 1), dag, 1), dao, 1);
            dhh = dxt;
            direct = pad(mul(dc, fg), 1, H, SH);
            have_direct = true;
            break;
        }
        case RnnCell::gru: {
            const V r = sigmoid(add(cols(xt, 0, H), cols(ahh, 0, H)));
            const V z = sigmoid(add(cols(xt, H, H), cols(ahh, H, H)));
            const V hn = cols(ahh, 2 * H, H);
            const V nn = tanh(add(cols(xt, 2 * H, H), mul(r, hn)));
            const V dan = mul(mul(dsc, rnn_one_minus(z)), rnn_dtanh(nn));
            const V dar = mul(mul(dan, hn), rnn_dsigmoid(r));
            const V daz = mul(mul(dsc, sub(hp, nn)), rnn_dsigmoid(z));
            const V drz = concat(dar, daz, 1);
            dxt = concat(drz, dan, 1);
            dhh = concat(drz, mul(dan, r), 1);
            direct = mul(dsc, z);
            have_direct = true;
            break;
        }
        case RnnCell::rnn_tanh: {
            const V hy = tanh(add(xt, ahh));
            dxt = mul(dsc, rnn_dtanh(hy));
            dhh = dxt;
            break;
        }
        }
        const V dhp = matmul(dhh, Wm);
        V c2 = S == 2 ? pad(dhp, 1, 0, SH) : dhp;
        if (have_direct) c2 = add(c2, direct);
        if (at.masked) {
            Ref<T> km = tape.alloc(Shape{B, 1});
            for (std::size_t b = 0; b < B; ++b) km.data[b] = at.mask[t * B + b] != 0 ? T(0) : T(1);
            c2 = add(c2, mul(ds, rnn_const(tape, km, static_cast<const V*>(nullptr))));
        }
        carry = c2;
        have_carry = true;
        if (o.needs(n, 1)) {
            const V dwt = matmul(dhh, hp, true, false);
            const V dbt = sum(dhh, 0), dbit = sum(dxt, 0);
            dW = t == Tn - 1 ? dwt : add(dW, dwt);
            db = t == Tn - 1 ? dbt : add(db, dbt);
            dbi = t == Tn - 1 ? dbit : add(dbi, dbit);
        }
        dxs[t] = reshape(dxt, Shape{1, B, GH});
    }
    if (o.needs(n, 0)) {
        dx = dxs[0];
        for (std::size_t t = 1; t < Tn; ++t) dx = concat(dx, dxs[t], 0);
        o.acc(n, 0, dx);
    }
    if (o.needs(n, 1)) o.acc(n, 1, concat(concat(dW, reshape(db, Shape{GH, 1}), 1), reshape(dbi, Shape{GH, 1}), 1));
    if (o.needs(n, 2)) o.acc(n, 2, carry);
}

} // namespace detail

template <class O, class T, class V>
void backward_recurrent(O& o, const Node<T>& n, const V& g) {
    if constexpr (std::is_same<V, Eager<T>>::value) {
        // First order: the fused BPTT kernel on the values the forward saved.
        const RnnCell cell = static_cast<RnnCell>(n.flags);
        Tape<T>& tape = *g.t;
        const Shape xs = o.shape(n, 0), ws = o.shape(n, 1);
        const detail::RnnDims d{xs[1], xs[0], ws[1] - 2, rnn_gates(cell), rnn_state_blocks(cell)};
        const detail::RnnAttrs at = detail::rnn_attrs(n.index);
        const Eager<T> w = o.in(n, 1), s0 = o.in(n, 2), y = o.out(n);
        Ref<T> dxp{}, dw{}, ds0{};
        if (o.needs(n, 0)) dxp = tape.alloc(xs);
        if (o.needs(n, 1)) dw = tape.alloc(ws);
        if (o.needs(n, 2)) ds0 = tape.alloc(o.shape(n, 2));
        detail::k_recurrent_backward<T>(tape, cell, d, w.r.data, s0.r.data, at.masked ? at.mask : nullptr, y.r.data,
                                        static_cast<const T*>(at.saved), g.r.data, dxp.data, dw.data, ds0.data);
        if (dxp.data) o.acc(n, 0, Eager<T>{dxp, &tape});
        if (dw.data) o.acc(n, 1, Eager<T>{dw, &tape});
        if (ds0.data) o.acc(n, 2, Eager<T>{ds0, &tape});
    } else {
        detail::recurrent_backward_ops(o, n, g);
    }
}
TAPIR_OP(recurrent, "recurrent", backward_recurrent);

/// The fused recurrence (see the header comment): xp (B, T, G H) the input projection,
/// w_hh_b = [W_hh | b_hh | b_ih] (G H, H + 2), state0 (B, S H); optional mask (B, T) of 1 and 0.
/// Returns the states after every step, time-major (T, B, S H).
template <class T>
Var<T> recurrent(RnnCell cell, const Var<T>& xp, const Var<T>& w_hh_b, const Var<T>& state0, detail::rnn_opt<T> mask = nullptr) {
    Tape<T>& t = detail::same_tape(xp, w_hh_b, "recurrent");
    detail::same_tape(xp, state0, "recurrent");
    // Names are built only on the error paths: a training step allocates nothing.
    const auto name = [cell] { return std::string("recurrent(") + rnn_cell_name(cell) + ")"; };
    const Shape xs = xp.shape(), ws = w_hh_b.shape(), ss = state0.shape();
    const std::size_t G = rnn_gates(cell), S = rnn_state_blocks(cell);
    if (xs.rank() != 3) throw shape_error(name() + ": input projection must be (steps, batch, gates * hidden), got " + xs.str());
    if (ws.rank() != 2 || ws[1] < 3 || ws[0] != G * (ws[1] - 2))
        throw shape_error(name() + ": recurrent weight with bias columns must be (" + std::to_string(G) +
                          " * hidden, hidden + 2), got " + ws.str());
    const std::size_t Tn = xs[0], B = xs[1], H = ws[1] - 2;
    if (xs[2] != G * H) detail::throw_shape((name() + ": input projection vs recurrent weight").c_str(), xs, ws);
    if (ss != Shape{B, S * H}) detail::throw_shape((name() + ": input projection vs initial state").c_str(), xs, ss);
    if (Tn == 0) throw shape_error(name() + ": empty sequence, input projection of shape " + xs.str());
    auto* attrs = static_cast<std::int64_t*>(t.arena().allocate((2 + (mask ? B * Tn : 0)) * sizeof(std::int64_t)));
    attrs[0] = mask ? 1 : 0;
    if (mask) {
        detail::same_tape(xp, *mask, "recurrent");
        const Shape ms = mask->shape();
        if (ms != Shape{B, Tn}) detail::throw_shape((name() + ": input vs mask").c_str(), Shape{B, Tn, xs[2]}, ms);
        const T* m = mask->data();
        for (std::size_t i = 0; i < B * Tn; ++i) {
            if (m[i] != T(0) && m[i] != T(1))
                throw value_error(name() + ": mask values must be 0 or 1, got " + std::to_string(static_cast<double>(m[i])) + " at " +
                                  std::to_string(i));
            attrs[2 + (i % Tn) * B + i / Tn] = m[i] != T(0) ? 1 : 0;  // kept time-major, as the states
        }
    }
    const detail::RnnDims d{B, Tn, H, G, S};
    Ref<T> out = t.alloc(Shape{Tn, B, S * H});
    T* saved = t.arena().template allocate_array<T>(Tn * B * detail::rnn_saved_width(cell, H));
    attrs[1] = static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(saved));
    detail::k_recurrent_forward<T>(t, cell, d, xp.data(), w_hh_b.data(), state0.data(), mask ? attrs + 2 : nullptr, out.data, saved);
    const auto flags = static_cast<std::uint8_t>(cell);
    return detail::emit(t, op_recurrent<T>, out, [attrs, flags](Node<T>& nd) {
        nd.index = attrs;
        nd.flags = flags;
    }, xp, w_hh_b, state0);
}

/// A whole layer's recurrence from PyTorch-layout parameters: x (B, T, F), weight_ih (G H, F),
/// weight_hh (G H, H), bias_ih and bias_hh (G H,) (either may be null), state0 (B, S H) or null for
/// zeros, mask (B, T) or null. The input projection of all steps is one GEMM. Returns the states
/// time-major (T, B, S H) as recurrent(); recurrent_output() gives the layer's outputs.
template <class T>
Var<T> recurrent_sequence(RnnCell cell, const Var<T>& x, const Var<T>& weight_ih, const Var<T>& weight_hh, detail::rnn_opt<T> bias_ih,
                          detail::rnn_opt<T> bias_hh, detail::rnn_opt<T> state0 = nullptr, detail::rnn_opt<T> mask = nullptr) {
    Tape<T>& t = detail::same_tape(x, weight_ih, "recurrent_sequence");
    const auto name = [cell] { return std::string("recurrent_sequence(") + rnn_cell_name(cell) + ")"; };
    const Shape xs = x.shape(), wi = weight_ih.shape(), wh = weight_hh.shape();
    const std::size_t G = rnn_gates(cell), S = rnn_state_blocks(cell);
    if (xs.rank() != 3) throw shape_error(name() + ": input must be (batch, steps, features), got " + xs.str());
    if (wh.rank() != 2 || wh[1] == 0 || wh[0] != G * wh[1])
        throw shape_error(name() + ": weight_hh must be (" + std::to_string(G) + " * hidden, hidden), got " + wh.str());
    const std::size_t H = wh[1];
    if (wi.rank() != 2 || wi[0] != G * H || wi[1] != xs[2]) detail::throw_shape((name() + ": input vs weight_ih").c_str(), xs, wi);
    for (const Var<T>* b : {bias_ih, bias_hh})
        if (b && b->shape() != Shape{G * H}) detail::throw_shape((name() + ": weight_hh vs bias").c_str(), wh, b->shape());
    const std::size_t B = xs[0], Tn = xs[1];
    if (state0 && state0->shape() != Shape{B, S * H})
        detail::throw_shape((name() + ": input vs initial state").c_str(), xs, state0->shape());
    // x W_ih^T for all steps in one GEMM, on the rows of x in time-major order (so that each step
    // reads one contiguous block); b_ih rides in the recurrent op (added inside the cell). W_ih is
    // transposed as a value first: its gradient is then x^T g (F x G H, the faster product).
    const Var<T> xt = gather_rows_raw(reshape(x, Shape{B * Tn, xs[2]}), detail::rnn_order(t, B, Tn, true), B * Tn);
    const Var<T> xp = reshape(matmul(xt, transpose(weight_ih)), Shape{Tn, B, G * H});
    const Var<T> bh = bias_hh ? reshape(*bias_hh, Shape{G * H, 1}) : t.full(Shape{G * H, 1}, T(0));
    const Var<T> bi = bias_ih ? reshape(*bias_ih, Shape{G * H, 1}) : t.full(Shape{G * H, 1}, T(0));
    const Var<T> wa = concat(concat(weight_hh, bh, 1), bi, 1);
    const Var<T> s0 = state0 ? *state0 : t.full(Shape{B, S * H}, T(0));
    return recurrent(cell, xp, wa, s0, mask);
}

/// The final state (B, S H) from recurrent()'s states (T, B, S H): [h | c] for the LSTM. With a
/// mask, each sequence's state after its last element.
template <class T>
Var<T> recurrent_final_state(const Var<T>& states) {
    const Shape ss = states.shape();
    return reshape(slice(states, 0, ss[0] - 1, 1), Shape{ss[1], ss[2]});
}

/// The layer outputs from recurrent()'s states (T, B, S H): every step's h batch-first (B, T, H),
/// zero where the mask is 0 (as pad_packed_sequence), or only the last state's h (B, H).
template <class T>
Var<T> recurrent_output(RnnCell cell, const Var<T>& states, bool return_sequences, detail::rnn_opt<T> mask = nullptr) {
    const Shape ss = states.shape();
    const std::size_t S = rnn_state_blocks(cell), Tn = ss[0], B = ss[1], H = ss[2] / S;
    if (!return_sequences) {
        const Var<T> last = recurrent_final_state(states);
        return S == 1 ? last : slice(last, 1, 0, H);
    }
    Tape<T>& t = states.tape();
    Var<T> h = reshape(gather_rows_raw(reshape(states, Shape{Tn * B, S * H}), detail::rnn_order(t, B, Tn, false), B * Tn),
                       Shape{B, Tn, S * H});
    if (S != 1) h = slice(h, 2, 0, H);
    if (!mask) return h;
    return mul(h, reshape(*mask, Shape{B, Tn, 1}));
}

/// A (B, T) mask of 1 for the first lengths[b] steps of each sequence and 0 after, as a constant.
template <class T>
Var<T> sequence_mask(Tape<T>& t, const std::vector<std::size_t>& lengths, std::size_t steps) {
    Ref<T> r = t.alloc(Shape{lengths.size(), steps});
    for (std::size_t b = 0; b < lengths.size(); ++b) {
        if (lengths[b] > steps)
            throw value_error("sequence_mask: length " + std::to_string(lengths[b]) + " of sequence " + std::to_string(b) +
                              " exceeds the " + std::to_string(steps) + " steps");
        for (std::size_t s = 0; s < steps; ++s) r.data[b * steps + s] = s < lengths[b] ? T(1) : T(0);
    }
    return t.leaf(r, false);
}

// ---- embedding ----------------------------------------------------------------------------------

template <class O, class T, class V>
void backward_embedding(O& o, const Node<T>& n, const V& g) {
    const Shape ws = o.shape(n, 0);
    const std::size_t E = ws[1], count = g.size() / E;
    o.acc(n, 0, scatter_rows_raw(reshape(g, Shape{count, E}), n.index, ws[0]));
}
TAPIR_OP(embedding, "embedding", backward_embedding);
/// Rows of a lookup table weight (V, E) at integer indices of any shape up to rank 3 (held as
/// values of T, e.g. token ids (B, T)): the result has the indices' shape plus E. The gradient
/// goes into the used rows only (added where an index repeats).
template <class T>
Var<T> embedding(const Var<T>& weight, const Var<T>& indices) {
    Tape<T>& t = detail::same_tape(weight, indices, "embedding");
    const Shape ws = weight.shape(), is = indices.shape();
    if (ws.rank() != 2) throw shape_error("embedding: weight must be (rows, features), got " + ws.str());
    if (is.rank() >= max_rank) detail::throw_shape("embedding: indices of rank 4 give rank 5; weight vs indices", ws, is);
    const std::size_t count = is.numel(), rows = ws[0], E = ws[1];
    auto* p = static_cast<std::int64_t*>(t.arena().allocate(count * sizeof(std::int64_t) + 1));
    const T* v = indices.data();
    for (std::size_t i = 0; i < count; ++i) {
        const T x = v[i];
        if (!(x >= T(0)) || !(x < static_cast<T>(rows)) || x != static_cast<T>(static_cast<std::int64_t>(x)))
            throw value_error("embedding: index " + std::to_string(static_cast<double>(x)) + " at position " + std::to_string(i) +
                              " is not a row of the table of shape " + ws.str());
        p[i] = static_cast<std::int64_t>(x);
    }
    Shape os = is;
    os.push_back(E);
    Ref<T> out = detail::k_gather_rows(t, weight.ref(), p, count);
    out.shape = os;
    return detail::emit(t, op_embedding<T>, out, [p](Node<T>& nd) { nd.index = p; }, weight);
}

} // namespace tapir

TAPIR_SIMD_DIAG_POP
