#pragma once
/// Compile-time-sized models as a list of layer types, for every layer that trains: dense,
/// convolution (1-D and 2-D, stride, padding, dilation, groups), pooling, flatten, activations, LSTM and GRU
/// (whole sequences, or one step with a state the caller keeps), and deep-set pooling (PFN, EFN).
/// In the spirit of RTNeural's ModelT (Chowdhury, arXiv:2106.03037), over tapir's one SIMD layer:
///
///     using Cnn = tapir::deploy::ModelT<float,
///         tapir::deploy::Conv2dT<float, 1, 40, 40, 8, 3, 3, 1, 1, 1, 1>,  // Cin, H, W, Cout, kh, kw, sh, sw, ph, pw
///         tapir::deploy::MaxPool2dT<float, 8, 40, 40, 2, 2>,
///         tapir::deploy::FlattenT<float, 8 * 20 * 20>,
///         tapir::deploy::DenseT<float, 8 * 20 * 20, 1>>;
///     static Cnn cnn;                                   // tapir::deploy::load_model(cnn, trained): convert_model.hpp
///     cnn.forward(image, &logit);                       // noexcept, const, no heap
///
/// Same guarantees as Mlp (fixed.hpp): forward() is const and noexcept, allocates nothing (the
/// activations of one sample live on the stack, two buffers of the widest layer plus its
/// scratch: work_size values; forward_with(x, y, work) takes a caller-held buffer instead), keeps no
/// state (thread-safe), and this header compiles with -fno-exceptions -fno-rtti. Activations and
/// weights come with the loaded model.
///
/// Numbers: each layer does the training forward's arithmetic in its order, so on the same
/// instruction set the outputs are bitwise the trained model's. Dense is Mlp's layer. A
/// convolution output is one fused multiply-add chain over (channel, row, column) of the kernel
/// in increasing order, restarted at simd::gemm's K blocks, then the bias, then the activation:
/// what im2col + simd::gemm compute (autodiff/conv.hpp). Pooling mirrors its kernels' loops. The
/// recurrent cells compute x W_ih^T and h W_hh^T + b_hh as such chains and then the gate
/// arithmetic of autodiff/recurrent.hpp, written the same way (plain code outside the vector
/// kernels, so the compiler contracts it, or not, exactly as it does the training code).
/// Where it cannot be bitwise: BatchNorm folded into the layer before it (a few ulp).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../simd/pool.hpp"
#include "fixed.hpp"

TAPIR_SIMD_DIAG_PUSH

namespace tapir::deploy {

namespace detail {

/// Values of T in 64 bytes: buffers are padded to whole vectors of the widest family.
template <class T>
constexpr std::size_t lanes64() noexcept {
    return 64 / sizeof(T);
}

/// Runs a layer's kernel, run<V>(args...), on the chosen instruction set.
template <class L>
struct layer_kernel {
    using value_type = typename L::value_type;
    template <class V, class... A>
    static TAPIR_ALWAYS_INLINE void run(const L* l, A... args) noexcept {
        l->template run<V>(args...);
    }
};

template <class L, class... A>
inline void run_layer(simd::isa which, const L& l, A... args) noexcept {
    simd::dispatch_to<layer_kernel<L>>(which, &l, args...);
}

/// Offset of each tap r = (c, i, j) of a convolution window in the padded (C, HP, WP) input,
/// relative to the window's corner, in the order of the unfolded rows (im2col).
/// Dilation DH x DW: tap (i, j) is i DH rows and j DW columns from the corner.
template <std::size_t C, std::size_t KH, std::size_t KW, std::size_t HP, std::size_t WP, std::size_t DH = 1, std::size_t DW = 1>
constexpr std::array<std::uint32_t, C * KH * KW> tap_offsets() noexcept {
    std::array<std::uint32_t, C * KH * KW> o{};
    std::size_t r = 0;
    for (std::size_t c = 0; c < C; ++c)
        for (std::size_t i = 0; i < KH; ++i)
            for (std::size_t j = 0; j < KW; ++j) o[r++] = static_cast<std::uint32_t>((c * HP + i * DH) * WP + j * DW);
    return o;
}

} // namespace detail

/// A dense layer, y = act(x W + b): Mlp's layer (fixed.hpp) as a model layer.
template <class T, std::size_t In, std::size_t Out>
struct DenseT {
    using value_type = T;
    static constexpr const char* name = "Dense";
    static constexpr std::size_t in_size = In, out_size = Out;
    static constexpr std::size_t out_buffer = Dense<T, In, Out>::out_padded;  ///< values forward writes
    static constexpr std::size_t scratch_size = 0;

    Dense<T, In, Out> dense;

    void forward(simd::isa which, const T* x, T* y, T*) const noexcept { detail::run_layer(which, *this, x, y); }
    template <class V>
    TAPIR_ALWAYS_INLINE void run(const T* x, T* y) const noexcept {
        dense.template run<V, 1>(x, In, y);
    }
};

/// 2-D convolution (cross-correlation, as PyTorch) of one (Cin, H, W) sample to (Cout, OH, OW):
/// kernel KH x KW, stride SH x SW, zero padding PH rows above and PB below, PW columns left and
/// PR right (PyTorch's symmetric padding by default; 'same' with an odd kernel is (k - 1) / 2 on
/// each side, with an even kernel tapir's 'same' puts the extra row and column at the end:
/// PH = PW = (k - 1) / 2, PB = PR = k / 2). Weight (Cout, Cin, KH, KW) as tapir::nn::Conv2d and
/// PyTorch store it. Dilation DH x DW spaces the taps (tap (i, j) reads row i DH, column j DW of
/// the window), as tapir::nn::Conv2d's dilation: the unfolded rows keep their (c, i, j) order, so
/// the sums are the trained ones. Groups: GroupedConv2dT.
template <class T, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW,
          std::size_t SH = 1, std::size_t SW = 1, std::size_t PH = 0, std::size_t PW = 0, std::size_t PB = PH, std::size_t PR = PW,
          std::size_t DH = 1, std::size_t DW = 1>
struct Conv2dT {
    static_assert(Cin > 0 && H > 0 && W > 0 && Cout > 0 && KH > 0 && KW > 0 && SH > 0 && SW > 0 && DH > 0 && DW > 0,
                  "Conv2dT: sizes must be positive");
    static_assert(H + PH + PB >= DH * (KH - 1) + 1 && W + PW + PR >= DW * (KW - 1) + 1, "Conv2dT: the (dilated) kernel is larger than the padded input");
    using value_type = T;
    static constexpr const char* name = "Conv2d";
    static constexpr std::size_t in_channels = Cin, out_channels = Cout, in_h = H, in_w = W;
    static constexpr std::size_t kernel_h = KH, kernel_w = KW, stride_h = SH, stride_w = SW, pad_h = PH, pad_w = PW;
    static constexpr std::size_t pad_bottom = PB, pad_right = PR, dilation_h = DH, dilation_w = DW;
    static constexpr std::size_t HP = H + PH + PB, WP = W + PW + PR;
    static constexpr std::size_t OH = (HP - DH * (KH - 1) - 1) / SH + 1, OW = (WP - DW * (KW - 1) - 1) / SW + 1;
    static constexpr std::size_t K = Cin * KH * KW;  ///< taps per output: the rows of the unfolded input
    static constexpr std::size_t in_size = Cin * H * W, out_size = Cout * OH * OW;
    static constexpr std::size_t out_buffer = out_size;
    static constexpr std::size_t pad_size = (PH || PW || PB || PR) ? Cin * HP * WP : 0;  ///< the padded input
    /// Stride 1 over several rows: the output is computed at every position of the padded rows,
    /// (Cout, OH, WP) with the WP - OW positions past each row's end thrown away, so that whole
    /// vectors run across row ends (rows of 20 fill 1.25 vectors of 16; the flat sweep wastes 2 of 22).
    static constexpr bool flat = SH == 1 && SW == 1 && OH > 1;
    static constexpr std::size_t P = (OH - 1) * WP + OW;  ///< flat positions up to the last output
    static constexpr std::size_t scratch_size = pad_size + (flat ? Cout * OH * WP : 0);

    alignas(64) T weight[Cout][K] = {};
    alignas(64) T bias[Cout] = {};
    Activation act = Activation::none;
    T alpha = T(0);

    void forward(simd::isa which, const T* x, T* y, T* scratch) const noexcept { detail::run_layer(which, *this, x, y, scratch); }

    template <class V>
    TAPIR_ALWAYS_INLINE void run(const T* x, T* y, T* scratch) const noexcept {
        const T* xp = x;
        if constexpr (pad_size != 0) {
            pad_input(x, scratch);
            xp = scratch;
        }
        // Enough independent chains (U channels x NV vectors of positions) to keep two FMA pipes
        // busy: narrow rows take more channels per pass, wide rows more vectors (up to 16
        // accumulators on the 32-register families, 8 on AVX2).
        constexpr bool regs32 = V::id == simd::isa::avx512 || V::id == simd::isa::neon;
        // Flat only where rows end inside a vector: rows of whole vectors lose nothing per row.
        constexpr bool sweep = flat && OW % V::W != 0;
        constexpr bool narrow = (sweep ? P : OW) < 2 * V::W;
        constexpr std::size_t U = (narrow && Cout % 8 == 0) ? 8 : (Cout % 4 == 0 ? 4 : (Cout % 2 == 0 ? 2 : 1));
        constexpr std::size_t NV = (regs32 ? 16 : 8) / U;
        if constexpr (sweep) {
            T* out = scratch + pad_size;
            for (std::size_t oc = 0; oc < Cout; oc += U) {
                T* yo = out + oc * OH * WP;
                std::size_t p = 0;
                if constexpr (NV >= 4)
                    for (; p + 4 * V::W <= P; p += 4 * V::W) tile<V, U, 4>(xp + p, V::W, oc, yo + p, OH * WP);
                if constexpr (NV >= 2)
                    for (; p + 2 * V::W <= P; p += 2 * V::W) tile<V, U, 2>(xp + p, V::W, oc, yo + p, OH * WP);
                for (; p < P; p += V::W) tile<V, U, 1>(xp + p, P - p < V::W ? P - p : V::W, oc, yo + p, OH * WP);
            }
            for (std::size_t r = 0; r < Cout * OH; ++r) std::memcpy(y + r * OW, out + r * WP, OW * sizeof(T));
            if (act != Activation::none && act != Activation::relu) simd::activate_on(V::id, act, y, y, out_size, alpha);
            return;
        }
        for (std::size_t oc = 0; oc < Cout; oc += U)
            for (std::size_t oy = 0; oy < OH; ++oy) {
                std::size_t ox = 0;
                if constexpr (NV >= 4)
                    for (; ox + 4 * V::W <= OW; ox += 4 * V::W)
                        tile<V, U, 4>(xp + oy * SH * WP + ox * SW, V::W, oc, y + (oc * OH + oy) * OW + ox, OH * OW);
                if constexpr (NV >= 2)
                    for (; ox + 2 * V::W <= OW; ox += 2 * V::W)
                        tile<V, U, 2>(xp + oy * SH * WP + ox * SW, V::W, oc, y + (oc * OH + oy) * OW + ox, OH * OW);
                for (; ox < OW; ox += V::W) {
                    const std::size_t n = OW - ox < V::W ? OW - ox : V::W;
                    tile<V, U, 1>(xp + oy * SH * WP + ox * SW, n, oc, y + (oc * OH + oy) * OW + ox, OH * OW);
                }
            }
        if (act != Activation::none && act != Activation::relu) simd::activate_on(V::id, act, y, y, out_size, alpha);
    }

private:
    static constexpr std::array<std::uint32_t, K> offsets = detail::tap_offsets<Cin, KH, KW, HP, WP, DH, DW>();

    /// x copied into the padded (Cin, HP, WP) buffer xp: zeros written to the border only (the
    /// scratch is shared by the layers, so the border is rewritten at every call).
    static void pad_input(const T* x, T* xp) noexcept {
        for (std::size_t c = 0; c < Cin; ++c) {
            T* p = xp + c * HP * WP;
            std::fill(p, p + PH * WP + PW, T(0));  // the top rows and the first row's left margin
            for (std::size_t i = 0; i < H; ++i) {
                T* r = p + (PH + i) * WP + PW;
                std::memcpy(r, x + (c * H + i) * W, W * sizeof(T));
                std::fill(r + W, r + W + PR + (i + 1 < H ? PW : 0), T(0));  // its right margin and the next row's left
            }
            std::fill(p + (PH + H) * WP, p + HP * WP, T(0));  // the bottom rows
        }
    }

    /// n (at most one vector) output positions of one row from the window corners at x.
    template <class V>
    static TAPIR_ALWAYS_INLINE typename V::reg load_taps(const T* x, std::size_t n) noexcept {
        if constexpr (SW == 1) {
            return n == V::W ? V::load(x) : V::load_partial(x, n);
        } else {
            alignas(64) T g[V::W] = {};
            for (std::size_t l = 0; l < n; ++l) g[l] = x[l * SW];
            return V::load(g);
        }
    }

    /// acc[u][v] = sum over taps p0 <= p < p1 of w[oc + u][p] x[p] at the v-th vector of
    /// positions, one fused chain per lane (n lanes in use when NV is 1).
    template <class V, std::size_t U, std::size_t NV>
    TAPIR_ALWAYS_INLINE void chain(const T* x, std::size_t n, std::size_t oc, std::size_t p0, std::size_t p1,
                                   typename V::reg (&acc)[U][NV]) const noexcept {
#pragma GCC unroll 8
        for (std::size_t u = 0; u < U; ++u)
#pragma GCC unroll 8
            for (std::size_t v = 0; v < NV; ++v) acc[u][v] = V::zero();
        for (std::size_t p = p0; p < p1; ++p) {
            typename V::reg xv[NV];
#pragma GCC unroll 8
            for (std::size_t v = 0; v < NV; ++v) xv[v] = load_taps<V>(x + offsets[p] + v * V::W * SW, n);
            simd::fma_broadcast<V>(&weight[oc][p], K, xv, acc);
        }
    }

    /// U output channels from oc at NV vectors of positions of one row (n lanes of one vector when
    /// NV is 1), channels cs values apart in y: simd::gemm's K blocks, then the bias, and a relu
    /// here (simd::activate_on's max(0, z), on the values while they are in registers).
    template <class V, std::size_t U, std::size_t NV>
    TAPIR_ALWAYS_INLINE void tile(const T* x, std::size_t n, std::size_t oc, T* y, std::size_t cs) const noexcept {
        using reg = typename V::reg;
        reg c[U][NV];
        detail::k_blocked_sum<V, K>([&](std::size_t p0, std::size_t p1, reg (&acc)[U][NV]) TAPIR_ALWAYS_INLINE_LAMBDA {
            chain<V, U, NV>(x, n, oc, p0, p1, acc);
        }, c);
#pragma GCC unroll 8
        for (std::size_t u = 0; u < U; ++u)
#pragma GCC unroll 8
            for (std::size_t v = 0; v < NV; ++v) {
                reg r = V::add(c[u][v], V::set1(bias[oc + u]));
                if (act == Activation::relu) r = V::max(V::zero(), r);  // activation_value<relu>: NaN and -0 kept
                if (n == V::W) V::store(y + u * cs + v * V::W, r);
                else V::store_partial(y + u * cs, r, n);
            }
    }
};

/// 1-D convolution of one (Cin, L) sample to (Cout, OL): kernel K, stride S, padding P on the
/// left and PR (default P) on the right; weight (Cout, Cin, K) as tapir::nn::Conv1d (the 2-D
/// layer on a height of one, as in training); dilation D.
template <class T, std::size_t Cin, std::size_t L, std::size_t Cout, std::size_t K, std::size_t S = 1, std::size_t P = 0, std::size_t PR = P,
          std::size_t D = 1>
using Conv1dT = Conv2dT<T, Cin, 1, L, Cout, 1, K, 1, S, 0, P, 0, PR, 1, D>;

/// Max or average pooling of one (C, H, W) sample over KH x KW windows with stride SH x SW and
/// PH rows and PW columns of padding on each side (at most half the window, as tapir::nn's and
/// PyTorch's pooling layers allow); the loops of autodiff/conv.hpp's pooling kernels (average:
/// sum in window order, times 1 / (KH KW), the padding counted as PyTorch's count_include_pad;
/// max: over the window's taps inside the input only).
template <class T, bool IsMax, std::size_t C, std::size_t H, std::size_t W, std::size_t KH, std::size_t KW, std::size_t SH = KH,
          std::size_t SW = KW, std::size_t PH = 0, std::size_t PW = 0>
struct Pool2dT {
    static_assert(C > 0 && KH > 0 && KW > 0 && SH > 0 && SW > 0 && H + 2 * PH >= KH && W + 2 * PW >= KW, "Pool2dT: bad sizes");
    static_assert(2 * PH <= KH && 2 * PW <= KW, "Pool2dT: the padding must be at most half the window");
    using value_type = T;
    static constexpr const char* name = IsMax ? "MaxPool" : "AvgPool";
    static constexpr bool is_max = IsMax;
    static constexpr std::size_t channels = C, in_h = H, in_w = W, kernel_h = KH, kernel_w = KW, stride_h = SH, stride_w = SW;
    static constexpr std::size_t pad_h = PH, pad_w = PW;
    static constexpr std::size_t OH = (H + 2 * PH - KH) / SH + 1, OW = (W + 2 * PW - KW) / SW + 1;
    static constexpr std::size_t in_size = C * H * W, out_size = C * OH * OW, out_buffer = out_size, scratch_size = 0;

    /// Max over unpadded windows two columns wide at column stride 2: the training op's SIMD kernel.
    static constexpr bool w2 = IsMax && KW == 2 && SW == 2 && PH == 0 && PW == 0 && simd::max_pool_w2_fits(KH);

    void forward(simd::isa which, const T* x, T* y, T*) const noexcept {
        if constexpr (w2) {
            simd::max_pool_w2_on(which, x, C, H, W, KH, SH, y, nullptr);
            return;
        }
        const T inv = T(1) / static_cast<T>(KH * KW);
        std::size_t o = 0;
        for (std::size_t c = 0; c < C; ++c) {
            const T* xs = x + c * H * W;
            for (std::size_t oy = 0; oy < OH; ++oy)
                for (std::size_t ox = 0; ox < OW; ++ox, ++o) {
                    if constexpr (PH != 0 || PW != 0) y[o] = padded(xs, oy, ox, inv);
                    else y[o] = window(xs + oy * SH * W + ox * SW, inv);
                }
        }
    }

private:
    /// A window inside the input, at win.
    static TAPIR_ALWAYS_INLINE T window(const T* win, T inv) noexcept {
        if constexpr (IsMax) {
            // Branch-free (random data mispredicts every other compare), the training kernels'
            // rule: the first maximum, and the first NaN, which then stays.
            T best = win[0];
            for (std::size_t i = 0; i < KH; ++i)
                for (std::size_t j = 0; j < KW; ++j) {
                    const T v = win[i * W + j];
                    best = (v <= best || best != best) ? best : v;
                }
            return best;
        } else {
            T s = T(0);
            for (std::size_t i = 0; i < KH; ++i)
                for (std::size_t j = 0; j < KW; ++j) s += win[i * W + j];
            return s * inv;
        }
    }

    /// A window over the padding, as autodiff/conv.hpp's general pooling loops: the taps inside
    /// the input in window order; max starts from the first and stops at a NaN.
    static T padded(const T* xs, std::size_t oy, std::size_t ox, T inv) noexcept {
        T acc = T(0);
        bool first = true;
        for (std::size_t i = 0; i < KH; ++i) {
            const std::size_t yy = oy * SH + i;
            if (yy < PH || yy - PH >= H) continue;
            for (std::size_t j = 0; j < KW; ++j) {
                const std::size_t xx = ox * SW + j;
                if (xx < PW || xx - PW >= W) continue;
                const T v = xs[(yy - PH) * W + (xx - PW)];
                if constexpr (IsMax) {
                    if (first || v > acc || v != v) {
                        acc = v, first = false;
                        if (v != v) i = KH, j = KW;  // NaN propagates, as in PyTorch
                    }
                } else {
                    acc += v;
                }
            }
        }
        return IsMax ? acc : acc * inv;
    }
};
template <class T, std::size_t C, std::size_t H, std::size_t W, std::size_t KH, std::size_t KW, std::size_t SH = KH, std::size_t SW = KW,
          std::size_t PH = 0, std::size_t PW = 0>
using MaxPool2dT = Pool2dT<T, true, C, H, W, KH, KW, SH, SW, PH, PW>;
template <class T, std::size_t C, std::size_t H, std::size_t W, std::size_t KH, std::size_t KW, std::size_t SH = KH, std::size_t SW = KW,
          std::size_t PH = 0, std::size_t PW = 0>
using AvgPool2dT = Pool2dT<T, false, C, H, W, KH, KW, SH, SW, PH, PW>;
template <class T, std::size_t C, std::size_t L, std::size_t K, std::size_t S = K, std::size_t P = 0>
using MaxPool1dT = Pool2dT<T, true, C, 1, L, 1, K, 1, S, 0, P>;
template <class T, std::size_t C, std::size_t L, std::size_t K, std::size_t S = K, std::size_t P = 0>
using AvgPool1dT = Pool2dT<T, false, C, 1, L, 1, K, 1, S, 0, P>;

/// Grouped 2-D convolution (tapir::nn::Conv2d's and PyTorch's groups; depthwise when G = Cin):
/// group q maps input channels [q Cin / G, (q + 1) Cin / G) to output channels [q Cout / G,
/// (q + 1) Cout / G) with its own Conv2dT, as the trained convolution runs one GEMM per group
/// (autodiff/conv.hpp), so the outputs are bitwise. Channels-first slices are contiguous.
template <class T, std::size_t G, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW,
          std::size_t SH = 1, std::size_t SW = 1, std::size_t PH = 0, std::size_t PW = 0, std::size_t PB = PH, std::size_t PR = PW,
          std::size_t DH = 1, std::size_t DW = 1>
struct GroupedConv2dT {
    static_assert(G > 0 && Cin % G == 0 && Cout % G == 0, "GroupedConv2dT: the groups must divide both channel counts");
    using group_type = Conv2dT<T, Cin / G, H, W, Cout / G, KH, KW, SH, SW, PH, PW, PB, PR, DH, DW>;
    using value_type = T;
    static constexpr const char* name = "Conv2d";
    static constexpr std::size_t groups = G, in_channels = Cin, out_channels = Cout;
    static constexpr std::size_t in_size = Cin * H * W, out_size = Cout * group_type::OH * group_type::OW;
    static constexpr std::size_t out_buffer = out_size, scratch_size = group_type::scratch_size;

    group_type group[G];

    void forward(simd::isa which, const T* x, T* y, T* scratch) const noexcept {
        for (std::size_t q = 0; q < G; ++q) group[q].forward(which, x + q * group_type::in_size, y + q * group_type::out_size, scratch);
    }
};
/// Grouped 1-D convolution of one (Cin, L) sample, as Conv1dT.
template <class T, std::size_t G, std::size_t Cin, std::size_t L, std::size_t Cout, std::size_t K, std::size_t S = 1, std::size_t P = 0,
          std::size_t PR = P, std::size_t D = 1>
using GroupedConv1dT = GroupedConv2dT<T, G, Cin, 1, L, Cout, 1, K, 1, S, 0, P, 0, PR, 1, D>;

/// (C, H, W) or (C, L) to a vector of N values: channels-first data is already flat (a copy).
template <class T, std::size_t N>
struct FlattenT {
    using value_type = T;
    static constexpr const char* name = "Flatten";
    static constexpr std::size_t in_size = N, out_size = N, out_buffer = N, scratch_size = 0;
    void forward(simd::isa, const T* x, T* y, T*) const noexcept { std::memcpy(y, x, N * sizeof(T)); }
};

/// An activation on its own (one that no dense or convolution layer before it absorbed).
template <class T, std::size_t N, Activation A>
struct ActivationT {
    using value_type = T;
    static constexpr const char* name = "Activation";
    static constexpr Activation activation = A;
    static constexpr std::size_t in_size = N, out_size = N, out_buffer = N, scratch_size = 0;
    T alpha = A == Activation::leaky_relu ? T(0.01) : (A == Activation::elu ? T(1) : T(0));
    void forward(simd::isa which, const T* x, T* y, T*) const noexcept { simd::activate_on(which, A, x, y, N, alpha); }
};

/// The recurrent cells.
enum class Cell : std::uint8_t { lstm, gru };

/// An LSTM or GRU layer with PyTorch's gates (LSTM i, f, g, o; GRU r, z, n; as tapir::nn::LSTM
/// and GRU). As a model layer it reads a whole (Steps, In) sequence from a zero state and gives
/// the last h (Hidden values) or, with Sequences, every step's h (Steps, Hidden). For streaming,
/// step(x, state) advances a state the caller keeps: state_size values, [h | c] for the LSTM, h
/// for the GRU, zeros at the start. Variable lengths: forward_masked (ModelT::forward(x, mask, y))
/// takes a mask of Steps values as nn::LSTM and GRU take a (B, T) one (autodiff/recurrent.hpp):
/// a masked step keeps the state, so the last h is the one after the sequence's last present
/// step, and with Sequences its output is h times 0 (zero, as pad_packed_sequence gives). When
/// streaming, a masked step is a step not taken.
template <class T, Cell C, std::size_t In, std::size_t Hidden, std::size_t Steps = 1, bool Sequences = false>
struct RecurrentT {
    static_assert(In > 0 && Hidden > 0 && Steps > 0, "RecurrentT: sizes must be positive");
    using value_type = T;
    static constexpr const char* name = C == Cell::lstm ? "LSTM" : "GRU";
    static constexpr Cell cell = C;
    static constexpr std::size_t input_size = In, hidden_size = Hidden, steps = Steps;
    static constexpr bool return_sequences = Sequences;
    static constexpr std::size_t G = C == Cell::lstm ? 4 : 3;  ///< gate blocks
    static constexpr std::size_t GH = G * Hidden;
    static constexpr std::size_t state_size = (C == Cell::lstm ? 2 : 1) * Hidden;
    static constexpr std::size_t in_size = Steps * In, out_size = (Sequences ? Steps : 1) * Hidden;
    static constexpr std::size_t out_buffer = out_size, scratch_size = state_size;

    Dense<T, In, GH> input;       ///< x W_ih^T, no bias (b_ih is added after, as in training)
    Dense<T, Hidden, GH> hidden;  ///< h W_hh^T + b_hh
    alignas(64) T bias_ih[GH] = {};

    /// One step: state (state_size values) advanced by input x (In values), on the detected instruction set.
    void step(const T* x, T* state) const noexcept { step(simd::detected_isa(), x, state); }

    void step(simd::isa which, const T* x, T* state) const noexcept {
        alignas(64) T xp[decltype(input)::out_padded];
        alignas(64) T a[decltype(hidden)::out_padded];
        detail::run_layer(which, *this, x, state, xp, a);
        if constexpr (C == Cell::lstm) lstm_gates(which, xp, a, state);
        else gru_gates(which, xp, a, state);
    }

    void forward(simd::isa which, const T* x, T* y, T* state) const noexcept {
        for (std::size_t i = 0; i < state_size; ++i) state[i] = T(0);
        for (std::size_t t = 0; t < Steps; ++t) {
            step(which, x + t * In, state);
            if (Sequences) std::memcpy(y + t * Hidden, state, Hidden * sizeof(T));
        }
        if (!Sequences) std::memcpy(y, state, Hidden * sizeof(T));
    }

    /// A variable-length sequence: mask (Steps values, 1 present, 0 absent; nonzero counts as
    /// present) as the trained layer's mask. The trained layer computes a masked step and then
    /// restores the state; here it is skipped, which leaves the same state.
    void forward_masked(simd::isa which, const T* x, const T* mask, T* y, T* state) const noexcept {
        for (std::size_t i = 0; i < state_size; ++i) state[i] = T(0);
        for (std::size_t t = 0; t < Steps; ++t) {
            const bool present = mask[t] != T(0);
            if (present) step(which, x + t * In, state);
            if (Sequences) {
                const T m = present ? T(1) : T(0);  // the trained output is h * mask
                for (std::size_t j = 0; j < Hidden; ++j) y[t * Hidden + j] = state[j] * m;
            }
        }
        if (!Sequences) std::memcpy(y, state, Hidden * sizeof(T));
    }

    /// The two products of a step: xp = x W_ih^T, a = h W_hh^T + b_hh.
    template <class V>
    TAPIR_ALWAYS_INLINE void run(const T* x, const T* h, T* xp, T* a) const noexcept {
        input.template run<V, 1>(x, In, xp);
        hidden.template run<V, 1>(h, Hidden, a);
    }

private:
    /// autodiff/recurrent.hpp's LSTM step for one row, expression by expression.
    void lstm_gates(simd::isa which, const T* xp, T* a, T* state) const noexcept {
        constexpr std::size_t H = Hidden;
        alignas(64) T tmp[H];
        alignas(64) T tc[H];
        for (std::size_t j = 0; j < GH; ++j) a[j] = a[j] + xp[j];
        for (std::size_t j = 0; j < GH; ++j) a[j] = a[j] + bias_ih[j];
        for (std::size_t j = 0; j < H; ++j) a[2 * H + j] *= T(2);
        simd::activate_on(which, Activation::sigmoid, a, a, GH, T(0));
        T* s = a;
        const T* cp = state + H;
        T* c = tmp;
        for (std::size_t j = 0; j < H; ++j) {
            s[2 * H + j] = T(2) * s[2 * H + j] - T(1);
            c[j] = s[H + j] * cp[j] + s[j] * s[2 * H + j];
        }
        simd::activate_on(which, Activation::tanh, tmp, tc, H, T(0));
        for (std::size_t j = 0; j < H; ++j) {
            state[j] = s[3 * H + j] * tc[j];
            state[H + j] = tmp[j];
        }
    }

    /// autodiff/recurrent.hpp's GRU step for one row, expression by expression.
    void gru_gates(simd::isa which, const T* x, const T* a, T* state) const noexcept {
        constexpr std::size_t H = Hidden;
        alignas(64) T rz[2 * H];
        alignas(64) T n[H];
        alignas(64) T hn[H];
        const T* bih = bias_ih;
        for (std::size_t j = 0; j < 2 * H; ++j) rz[j] = a[j] + x[j] + bih[j];
        for (std::size_t j = 0; j < H; ++j) hn[j] = a[2 * H + j];
        simd::activate_on(which, Activation::sigmoid, rz, rz, 2 * H, T(0));
        const T* r = rz;
        for (std::size_t j = 0; j < H; ++j) n[j] = x[2 * H + j] + bih[2 * H + j] + r[j] * hn[j];
        simd::activate_on(which, Activation::tanh, n, n, H, T(0));
        const T* z = rz + H;
        const T* hp = state;
        for (std::size_t j = 0; j < H; ++j) state[j] = n[j] + z[j] * (hp[j] - n[j]);
    }
};
template <class T, std::size_t In, std::size_t Hidden, std::size_t Steps = 1, bool Sequences = false>
using LstmT = RecurrentT<T, Cell::lstm, In, Hidden, Steps, Sequences>;
template <class T, std::size_t In, std::size_t Hidden, std::size_t Steps = 1, bool Sequences = false>
using GruT = RecurrentT<T, Cell::gru, In, Hidden, Steps, Sequences>;

namespace detail {
template <class... L>
struct first_layer;
template <class A, class... L>
struct first_layer<A, L...> {
    using type = A;
};
template <class L>
struct is_recurrent_layer : std::false_type {};
template <class T, Cell C, std::size_t In, std::size_t Hidden, std::size_t Steps, bool Sequences>
struct is_recurrent_layer<RecurrentT<T, C, In, Hidden, Steps, Sequences>> : std::true_type {};
template <class... L>
constexpr bool chained() noexcept {
    constexpr std::size_t in[] = {L::in_size...}, out[] = {L::out_size...};
    for (std::size_t i = 0; i + 1 < sizeof...(L); ++i)
        if (out[i] != in[i + 1]) return false;
    return true;
}
} // namespace detail

/// A model as a list of layers (DenseT, Conv2dT, Conv1dT, MaxPool2dT, AvgPool2dT, FlattenT,
/// ActivationT, LstmT, GruT), each layer's output the next one's input, of one sample at a time.
/// ModelT of DenseT layers computes what Mlp does (MlpT below).
template <class T, class... Layers>
class ModelT : public detail::layer_tuple<std::tuple<Layers...>> {
    static_assert(sizeof...(Layers) >= 1, "ModelT: give at least one layer");
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "ModelT: float or double");
    static_assert((std::is_same<typename Layers::value_type, T>::value && ...), "ModelT: every layer must hold the model's value type");
    static_assert(detail::chained<Layers...>(), "ModelT: a layer's out_size differs from the next layer's in_size");

public:
    using value_type = T;
    using layers_type = std::tuple<Layers...>;
    static constexpr std::size_t num_layers = sizeof...(Layers);
    static constexpr std::size_t inputs = detail::first_layer<Layers...>::type::in_size;
    static constexpr std::size_t outputs = std::tuple_element_t<sizeof...(Layers) - 1, layers_type>::out_size;
    /// Values of one activation buffer (the widest output, padded to whole 64-byte vectors).
    static constexpr std::size_t buffer_size = detail::round_up(detail::cmax(std::size_t(1), std::max({Layers::out_buffer...})), detail::lanes64<T>());
    static constexpr std::size_t scratch_size = detail::round_up(std::max({std::size_t(1), Layers::scratch_size...}), detail::lanes64<T>());
    /// Values of the work buffer forward_with(x, y, work) takes: two activation buffers and the scratch.
    static constexpr std::size_t work_size = 2 * buffer_size + scratch_size;

    ModelT() noexcept : isa_(simd::detected_isa()) {}

    simd::isa isa() const noexcept { return isa_; }
    Status set_isa(simd::isa i) noexcept {
        if (!simd::isa_supported(i)) return Status::unsupported_isa;
        isa_ = i;
        return Status::ok;
    }

    /// One sample: x (inputs values) -> y (outputs values); the activations on the stack.
    void forward(const T* x, T* y) const noexcept {
        alignas(64) T work[work_size];
        forward_with(x, y, work);
    }
    /// One sample with a caller-held work buffer of work_size values (64-byte aligned is fastest).
    void forward_with(const T* x, T* y, T* work) const noexcept { run<0>(x, work, work + buffer_size, work + 2 * buffer_size, y); }
    /// n samples, row-major.
    void forward(const T* x, T* y, std::size_t n) const noexcept {
        for (std::size_t i = 0; i < n; ++i) forward(x + i * inputs, y + i * outputs);
    }
    /// One variable-length sequence through a model whose first layer is an LstmT or GruT: mask
    /// (its Steps values, 1 present and 0 absent) as the trained layer's (B, T) mask.
    void forward(const T* x, const T* mask, T* y) const noexcept {
        alignas(64) T work[work_size];
        forward_with(x, mask, y, work);
    }
    /// The masked forward with a caller-held work buffer of work_size values.
    void forward_with(const T* x, const T* mask, T* y, T* work) const noexcept {
        using First = typename detail::first_layer<Layers...>::type;
        static_assert(detail::is_recurrent_layer<First>::value, "ModelT::forward(x, mask, y): the first layer must be an LstmT or GruT");
        T* const b0 = work;
        std::get<0>(this->layers_).forward_masked(isa_, x, mask, b0, work + 2 * buffer_size);
        if constexpr (num_layers > 1) run<1>(b0, b0, work + buffer_size, work + 2 * buffer_size, y);
        else std::memcpy(y, b0, outputs * sizeof(T));
    }
    /// Single-output convenience.
    T operator()(const T* x) const noexcept {
        static_assert(outputs == 1, "ModelT::operator(): the model has several outputs, use forward(x, y)");
        return detail::single_output(*this, x);
    }

private:
    template <std::size_t I>
    void run(const T* in, T* b0, T* b1, T* scratch, T* y) const noexcept {
        T* out = (I % 2 == 0) ? b0 : b1;
        std::get<I>(this->layers_).forward(isa_, in, out, scratch);
        if constexpr (I + 1 < num_layers) run<I + 1>(out, b0, b1, scratch, y);
        else std::memcpy(y, out, outputs * sizeof(T));
    }

    simd::isa isa_;
};

namespace detail {
template <class T, std::size_t... S>
struct mlp_model {
    template <std::size_t... I>
    static ModelT<T, DenseT<T, size_at<S...>(I), size_at<S...>(I + 1)>...> make(std::index_sequence<I...>);
    using type = decltype(make(std::make_index_sequence<sizeof...(S) - 1>{}));
};
} // namespace detail

/// Mlp<T, S...> as a ModelT of dense layers: MlpT<float, 8, 24, 1> is
/// ModelT<float, DenseT<float, 8, 24>, DenseT<float, 24, 1>>, bitwise Mlp's numbers.
template <class T, std::size_t... S>
using MlpT = typename detail::mlp_model<T, S...>::type;

namespace detail {
/// What DeepSetT and EnergyFlowT share: the per-particle model phi, the event model rho, one
/// instruction set for both, and the pooling between them.
template <class T, std::size_t N, class Phi, class Rho>
class SetModel {
    static_assert(N > 0, "DeepSetT/EnergyFlowT: give at least one particle");
    static_assert(Phi::outputs == Rho::inputs, "DeepSetT/EnergyFlowT: phi's outputs differ from rho's inputs");

public:
    using value_type = T;
    static constexpr std::size_t particles = N, latent = Phi::outputs, outputs = Rho::outputs;

    Phi phi;
    Rho rho;

    simd::isa isa() const noexcept { return phi.isa(); }
    Status set_isa(simd::isa i) noexcept {
        const Status s = phi.set_isa(i);
        return s != Status::ok ? s : rho.set_isa(i);
    }

protected:
    /// rho(pool), pool = the sum over the count rows (count, phi inputs) of phi(row), each times
    /// w[r] when w is given (the EFN's energy weights, as autodiff/sets.hpp's set_sum), times
    /// 1 / count when mean. phi runs on the rows as one batch, as the trained phi runs on its
    /// rows; the sum goes in row order from zero, written as the training kernels write it.
    void pool_forward(const T* rows, const T* w, std::size_t count, bool mean, T* y) const noexcept {
        alignas(64) T h[N * latent];
        alignas(64) T pooled[latent];
        phi.forward(rows, h, count);
        for (std::size_t j = 0; j < latent; ++j) pooled[j] = T(0);
        if (w) {
            for (std::size_t r = 0; r < count; ++r) {
                const T wr = w[r];
                const T* hr = h + r * latent;
                for (std::size_t j = 0; j < latent; ++j) pooled[j] += wr * hr[j];
            }
        } else {
            for (std::size_t r = 0; r < count; ++r)
                for (std::size_t j = 0; j < latent; ++j) pooled[j] += h[r * latent + j];
        }
        if (mean) {
            const T inv = count ? T(1) / static_cast<T>(count) : T(0);
            for (std::size_t j = 0; j < latent; ++j) pooled[j] = pooled[j] * inv;
        }
        rho.forward(pooled, y);
    }
};
} // namespace detail

/// Deep set / particle flow network (Komiske, Metodiev, Thaler, arXiv:1810.05165; Zaheer et al.,
/// arXiv:1703.06114): rho(pool over the real particles of phi(x_i)), with phi and rho fixed-size
/// models (Mlp; tapir::nn::DeepSet builds both from Dense layers) and sum or mean pooling. Input
/// x (N, F) and mask (N) of 1 (real) and 0 (padding), as tapir::nn::DeepSet with a mask: phi
/// runs on the real particles only (their rows in order, batched as Mlp batches), summed in
/// particle order, times 1 / count for the mean. Stack: N (F + latent) values.
template <class T, std::size_t N, class Phi, class Rho, bool Mean = false>
class DeepSetT : public detail::SetModel<T, N, Phi, Rho> {
public:
    static constexpr std::size_t features = Phi::inputs;
    static constexpr bool mean = Mean;

    /// x (N x features), mask (N values, nonzero = real) -> y (outputs values).
    void forward(const T* x, const T* mask, T* y) const noexcept {
        alignas(64) T rows[N * features];
        std::size_t count = 0;
        for (std::size_t i = 0; i < N; ++i)
            if (mask[i] != T(0)) std::memcpy(rows + features * count++, x + i * features, features * sizeof(T));
        this->pool_forward(rows, nullptr, count, Mean, y);
    }
};

/// Energy Flow Network (Komiske, Metodiev, Thaler, arXiv:1810.05165): rho(sum_i z_i phi(angles_i)),
/// infrared and collinear safe. Input x (N, 1 + A), as tapir::nn::EnergyFlowNetwork: column 0 the
/// particle's energy fraction z_i, the A others its angles (phi takes A inputs); an optional
/// mask (N) multiplies z. The trained network runs phi on every particle and its weighted sum
/// skips the zero weights; here phi runs on the particles of nonzero weight only (their rows in
/// order, batched as Mlp batches), which gives the same sum. Stack: N (A + 1 + latent) values.
template <class T, std::size_t N, class Phi, class Rho>
class EnergyFlowT : public detail::SetModel<T, N, Phi, Rho> {
public:
    static constexpr std::size_t angular = Phi::inputs, features = Phi::inputs + 1;

    /// x (N x features), mask (N values that multiply z: 1 real, 0 padding) -> y (outputs values).
    void forward(const T* x, const T* mask, T* y) const noexcept { run(x, mask, y); }
    /// Every particle as given (padding has z = 0 already).
    void forward(const T* x, T* y) const noexcept { run(x, nullptr, y); }

private:
    void run(const T* x, const T* mask, T* y) const noexcept {
        alignas(64) T rows[N * angular];
        alignas(64) T w[N];
        std::size_t count = 0;
        for (std::size_t i = 0; i < N; ++i) {
            const T* xi = x + i * features;
            const T z = mask ? xi[0] * mask[i] : xi[0];
            if (z == T(0)) continue;
            w[count] = z;
            std::memcpy(rows + angular * count++, xi + 1, angular * sizeof(T));
        }
        this->pool_forward(rows, w, count, false, y);
    }
};

} // namespace tapir::deploy

TAPIR_SIMD_DIAG_POP
