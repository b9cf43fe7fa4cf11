#pragma once
/// Quantised dense and convolution layers for ModelT (model.hpp), and a quantised ModelT built
/// from a float one and calibration data:
///
///     using Cnn = tapir::deploy::ModelT<float, Conv2dT<...>, MaxPool2dT<...>, FlattenT<...>, DenseT<...>>;
///     using Cnn8 = tapir::deploy::QuantizedT<tapir::deploy::Int8, Cnn>;                  // int8
///     using Cnn16 = tapir::deploy::QuantizedT<tapir::deploy::FixedPoint<16, 6>, Cnn>;   // ap_fixed<16, 6>
///     static Cnn8 q;
///     tapir::deploy::quantize_model(q, cnn, calibration_images, 1000);                 // Status::ok
///     q.forward(image, &logit);                                                        // noexcept, const, no heap
///
/// QuantizedT replaces every DenseT by QDenseT and every undilated Conv2dT/Conv1dT by QConv2dT of
/// the scheme; dilated and grouped convolutions, pooling, flatten, activations and recurrent
/// layers stay float (a max-pool of
/// quantised values is exact). Float in, float out: each quantised layer quantises its input,
/// accumulates in integers and writes float outputs, as quantize.hpp's models do:
///
/// - Int8: int8 weights, symmetric, one scale per layer or (QuantizeOptions::per_channel) per
///   output channel (Krishnamoorthi, arXiv:1806.08342, section 3.1); inputs quantised to int8
///   [-127, 127], or uint8 [0, 255] when the layer before cannot go below zero, with a scale
///   calibrated on data (the coverage quantile of the layer's |inputs|; beyond it values
///   saturate); int32 sums with the bias in accumulator units; then act(acc * s_x * s_w) in
///   float. Integer sums are exact: every instruction set gives the same outputs.
/// - FixedPoint<W, I, Q, O> (ap_fixed, quantize.hpp): weights, biases, inputs and outputs in
///   the format, products summed exactly (2F fractional bits) and quantised once per output, as
///   FixedMlp. The float outputs hold the fixed-point values exactly (W at most 25), so a chain
///   of these layers, max-pools and flattens computes what an all-fixed-point model does.
///
/// Same guarantees as ModelT: forward is noexcept and const, allocates nothing (the quantised
/// input of a layer lives on the stack) and this header builds with -fno-exceptions -fno-rtti.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "model.hpp"
#include "quantize.hpp"

TAPIR_SIMD_DIAG_PUSH

namespace tapir::deploy {

/// The int8 scheme of QDenseT, QConv2dT and QuantizedT.
struct Int8 {};

/// A quantised dense layer of scheme S (Int8 or a FixedPoint) with the sizes of DenseT<float, In, Out>.
template <class S, std::size_t In, std::size_t Out>
struct QDenseT;

/// A quantised convolution of scheme S with the sizes of Conv2dT<float, Cin, H, W, ...>.
template <class S, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW, std::size_t SH = 1,
          std::size_t SW = 1, std::size_t PH = 0, std::size_t PW = 0, std::size_t PB = PH, std::size_t PR = PW>
struct QConv2dT;

/// A quantised 1-D convolution (Conv1dT's sizes).
template <class S, std::size_t Cin, std::size_t L, std::size_t Cout, std::size_t K, std::size_t S1 = 1, std::size_t P = 0, std::size_t PR = P>
using QConv1dT = QConv2dT<S, Cin, 1, L, Cout, 1, K, 1, S1, 0, P, 0, PR>;

namespace detail {

/// The float layer's weights as a LayerView (the copy holds them unpadded).
template <std::size_t In, std::size_t Out>
LayerView<float> dense_view(const DenseT<float, In, Out>& f, std::vector<float>& w) {
    w.resize(In * Out);
    for (std::size_t p = 0; p < In; ++p)
        for (std::size_t j = 0; j < Out; ++j) w[p * Out + j] = f.dense.weight[p][j];
    return LayerView<float>{w.data(), f.dense.bias, In, Out, f.dense.act, f.dense.alpha};
}

/// Integer cross-correlation of padded codes xq (C, HP, WP): per output channel oc and row,
/// accumulators from init(oc), plus weight[oc][p] times the tap at offsets[p], then
/// finish(oc, acc, y_row) writes the OW outputs. Exact sums, so the same on every instruction set.
template <class Acc, std::size_t OH, std::size_t OW, std::size_t SH, std::size_t SW, std::size_t WP, class X, class Wt, std::size_t Cout,
          std::size_t K, class Init, class Finish>
TAPIR_ALWAYS_INLINE void integer_conv(const X* xq, const Wt (&weight)[Cout][K], const std::array<std::uint32_t, K>& offsets, float* y, Init init,
                                      Finish finish) noexcept {
    for (std::size_t oc = 0; oc < Cout; ++oc)
        for (std::size_t oy = 0; oy < OH; ++oy) {
            Acc acc[OW];
            for (std::size_t ox = 0; ox < OW; ++ox) acc[ox] = init(oc);
            for (std::size_t p = 0; p < K; ++p) {
                const Acc w = weight[oc][p];
                const X* xr = xq + oy * SH * WP + offsets[p];
                for (std::size_t ox = 0; ox < OW; ++ox) acc[ox] += w * static_cast<Acc>(xr[ox * SW]);
            }
            finish(oc, acc, y + (oc * OH + oy) * OW);
        }
}

} // namespace detail

template <std::size_t In, std::size_t Out>
struct QDenseT<Int8, In, Out> {
    using value_type = float;
    using scheme = Int8;
    static constexpr const char* name = "Int8Dense";
    static constexpr std::size_t in_size = In, out_size = Out, out_buffer = Out, scratch_size = 0;

    Int8Dense<In, Out> q;  ///< quantize.hpp's layer: weights, scales, the kernels

    /// Quantises f: input_range = the |input| that maps to the largest code (calibration).
    Status set(const DenseT<float, In, Out>& f, float input_range, bool non_negative_input, bool per_channel) {
        std::vector<float> w;
        return q.set(detail::dense_view(f, w), input_range, non_negative_input, per_channel);
    }

    void forward(simd::isa which, const float* x, float* y, float*) const noexcept { detail::run_layer(which, *this, x, y); }
    template <class V>
    TAPIR_ALWAYS_INLINE void run(const float* x, float* y) const noexcept {
#if TAPIR_SIMD_X86
        if constexpr (V::id == simd::isa::avx2 || V::id == simd::isa::avx512) {
            q.run_avx2(x, y);
            return;
        }
#endif
        q.run(x, y);
    }
};

template <int W, int I, Quant Q, Ovf O, std::size_t In, std::size_t Out>
struct QDenseT<FixedPoint<W, I, Q, O>, In, Out> {
    static_assert(W <= 25, "QDenseT: a fixed-point layer's outputs must be exact in float (W at most 25)");
    using value_type = float;
    using scheme = FixedPoint<W, I, Q, O>;
    static constexpr const char* name = "FixedDense";
    static constexpr std::size_t in_size = In, out_size = Out, out_buffer = Out, scratch_size = 0;

    FixedDense<scheme, In, Out> q;  ///< quantize.hpp's layer: raw weights and the sums

    /// Quantises f (the input range and the int8 options do not apply).
    Status set(const DenseT<float, In, Out>& f, float, bool, bool) {
        std::vector<float> w;
        return q.set(detail::dense_view(f, w));
    }

    void forward(simd::isa which, const float* x, float* y, float*) const noexcept { detail::run_layer(which, *this, x, y); }
    template <class V>
    TAPIR_ALWAYS_INLINE void run(const float* x, float* y) const noexcept {
        std::int64_t a[In], b[Out];
        for (std::size_t i = 0; i < In; ++i) a[i] = scheme::from_double(static_cast<double>(x[i])).raw();
        q.run(a, b);
        for (std::size_t j = 0; j < Out; ++j) y[j] = static_cast<float>(scheme::from_raw(b[j]).to_double());
    }
};

template <std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW, std::size_t SH, std::size_t SW,
          std::size_t PH, std::size_t PW, std::size_t PB, std::size_t PR>
struct QConv2dT<Int8, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR> {
    using F = Conv2dT<float, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR>;  ///< the float layer (its sizes)
    static constexpr std::size_t HP = F::HP, WP = F::WP, OH = F::OH, OW = F::OW, K = F::K;
    static_assert(K * 255 * 127 < (std::size_t(1) << 30), "QConv2dT: too many taps per output for exact int32 sums");
    using value_type = float;
    using scheme = Int8;
    static constexpr const char* name = "Int8Conv2d";
    static constexpr std::size_t in_size = F::in_size, out_size = F::out_size, out_buffer = out_size, scratch_size = F::scratch_size;
    /// Whether every partial sum of codes (at most K 127 255 in magnitude) is an integer float
    /// holds exactly: then the float convolution kernel computes the exact integer sums, in any
    /// order, on every instruction set, at its speed.
    static constexpr bool float_sums = K * 127 * 255 < (std::size_t(1) << 24);

    alignas(64) std::int8_t weight[Cout][K] = {};
    alignas(64) std::int32_t bias[Cout] = {};  ///< in accumulator units, |bias| at most 2^30
    alignas(64) float out_scales[Cout] = {};   ///< one accumulator unit per output channel: in_scale * w_scale
    float in_scale = 1.0f, inv_in_scale = 1.0f;
    float in_min = -127.0f, in_max = 127.0f;
    float w_scale = 1.0f;  ///< the largest weight scale (the layer's, unless per channel)
    Activation act = Activation::none;
    float alpha = 0.0f;
    F codes;  ///< the weight codes as floats, no bias or activation: the kernel of the exact sums

    /// Quantises f: input_range = the |input| that maps to the largest code (calibration).
    Status set(const F& f, float input_range, bool non_negative_input, bool per_channel) noexcept {
        if (!detail::finite(input_range) || !(input_range >= 0.0f)) return Status::bad_scale;
        float wmax = 0.0f, cmax[Cout] = {};
        for (std::size_t oc = 0; oc < Cout; ++oc) {
            if (!detail::finite(f.bias[oc])) return Status::non_finite;
            for (std::size_t p = 0; p < K; ++p) {
                if (!detail::finite(f.weight[oc][p])) return Status::non_finite;
                cmax[oc] = std::fabs(f.weight[oc][p]) > cmax[oc] ? std::fabs(f.weight[oc][p]) : cmax[oc];
            }
            wmax = cmax[oc] > wmax ? cmax[oc] : wmax;
        }
        w_scale = detail::weight_scale(wmax);
        const detail::InputQuant iq = detail::input_quant(input_range, non_negative_input);
        in_min = iq.lo, in_max = iq.hi, in_scale = iq.scale, inv_in_scale = iq.inv_scale;
        for (std::size_t oc = 0; oc < Cout; ++oc) {
            const float ws = per_channel ? detail::weight_scale(cmax[oc]) : w_scale, inv_w = 1.0f / ws;
            for (std::size_t p = 0; p < K; ++p) {
                weight[oc][p] = static_cast<std::int8_t>(detail::quantize_i8(f.weight[oc][p] * inv_w));
                codes.weight[oc][p] = static_cast<float>(weight[oc][p]);
            }
            codes.bias[oc] = 0.0f;
            out_scales[oc] = in_scale * ws;
            bias[oc] = detail::quantize_bias(f.bias[oc], out_scales[oc], 1073741824.0);
        }
        act = f.act;
        alpha = f.alpha;
        return Status::ok;
    }

    void forward(simd::isa which, const float* x, float* y, float* scratch) const noexcept { detail::run_layer(which, *this, x, y, scratch); }

    template <class V>
    TAPIR_ALWAYS_INLINE void run(const float* x, float* y, float* scratch) const noexcept {
        if constexpr (float_sums) {
            // The input codes as floats, the float kernel's exact sums, then the int32 bias.
            alignas(64) float xq[in_size];
            for (std::size_t i = 0; i < in_size; ++i) xq[i] = static_cast<float>(detail::quantize_i8(x[i] * inv_in_scale, in_min, in_max));
            codes.template run<V>(xq, y, scratch);
            for (std::size_t oc = 0; oc < Cout; ++oc) {
                float* yc = y + oc * OH * OW;
                const std::int32_t b = bias[oc];
                const float s = out_scales[oc];
                if (act == Activation::relu) {
                    for (std::size_t i = 0; i < OH * OW; ++i) {
                        const float v = static_cast<float>(static_cast<std::int32_t>(yc[i]) + b) * s;
                        yc[i] = v < 0.0f ? 0.0f : v;  // max(0, v) as simd::activation
                    }
                } else {
                    for (std::size_t i = 0; i < OH * OW; ++i)
                        yc[i] = simd::activation_scalar<float, true>(act, static_cast<float>(static_cast<std::int32_t>(yc[i]) + b) * s, alpha);
                }
            }
        } else {
            run_integer(x, y);
        }
    }

    /// Plain loops over integers (any number of taps), compiled for each instruction set.
    TAPIR_ALWAYS_INLINE void run_integer(const float* x, float* y) const noexcept {
        alignas(64) std::int16_t xq[Cin * HP * WP];
        for (std::size_t i = 0; i < Cin * HP * WP; ++i) xq[i] = 0;  // zero pads quantise to zero
        for (std::size_t c = 0; c < Cin; ++c)
            for (std::size_t i = 0; i < H; ++i)
                for (std::size_t j = 0; j < W; ++j)
                    xq[(c * HP + i + PH) * WP + j + PW] =
                        static_cast<std::int16_t>(detail::quantize_i8(x[(c * H + i) * W + j] * inv_in_scale, in_min, in_max));
        detail::integer_conv<std::int32_t, OH, OW, SH, SW, WP>(
            xq, weight, offsets, y, [&](std::size_t oc) { return bias[oc]; },
            [&](std::size_t oc, const std::int32_t* acc, float* yr) {
                for (std::size_t ox = 0; ox < OW; ++ox)
                    yr[ox] = simd::activation_scalar<float, true>(act, static_cast<float>(acc[ox]) * out_scales[oc], alpha);
            });
    }

private:
    static constexpr std::array<std::uint32_t, K> offsets = detail::tap_offsets<Cin, KH, KW, HP, WP>();
};

template <int FW, int FI, Quant Q, Ovf O, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW,
          std::size_t SH, std::size_t SW, std::size_t PH, std::size_t PW, std::size_t PB, std::size_t PR>
struct QConv2dT<FixedPoint<FW, FI, Q, O>, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR> {
    using F = Conv2dT<float, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR>;  ///< the float layer (its sizes)
    static constexpr std::size_t HP = F::HP, WP = F::WP, OH = F::OH, OW = F::OW, K = F::K;
    static_assert(FW <= 25, "QConv2dT: a fixed-point layer's outputs must be exact in float (W at most 25)");
    static_assert(K < (std::size_t(1) << (62 - 2 * (FW - 1))), "QConv2dT: too many taps per output for exact 64-bit sums");
    using value_type = float;
    using scheme = FixedPoint<FW, FI, Q, O>;
    static constexpr const char* name = "FixedConv2d";
    static constexpr std::size_t in_size = F::in_size, out_size = F::out_size, out_buffer = out_size, scratch_size = 0;

    alignas(64) std::int32_t weight[Cout][K] = {};  ///< raw values of the scheme
    alignas(64) std::int32_t bias[Cout] = {};
    Activation act = Activation::none;
    double alpha = 0.0;

    /// Quantises f (the input range and the int8 options do not apply).
    Status set(const F& f, float, bool, bool) noexcept {
        for (std::size_t oc = 0; oc < Cout; ++oc) {
            if (!detail::finite(f.bias[oc])) return Status::non_finite;
            for (std::size_t p = 0; p < K; ++p)
                if (!detail::finite(f.weight[oc][p])) return Status::non_finite;
        }
        for (std::size_t oc = 0; oc < Cout; ++oc) {
            for (std::size_t p = 0; p < K; ++p)
                weight[oc][p] = static_cast<std::int32_t>(scheme::from_double(static_cast<double>(f.weight[oc][p])).raw());
            bias[oc] = static_cast<std::int32_t>(scheme::from_double(static_cast<double>(f.bias[oc])).raw());
        }
        act = f.act;
        alpha = static_cast<double>(f.alpha);
        return Status::ok;
    }

    void forward(simd::isa which, const float* x, float* y, float*) const noexcept { detail::run_layer(which, *this, x, y); }

    template <class V>
    TAPIR_ALWAYS_INLINE void run(const float* x, float* y) const noexcept {
        constexpr int Fb = scheme::frac_bits;
        alignas(64) std::int32_t xq[Cin * HP * WP];
        for (std::size_t i = 0; i < Cin * HP * WP; ++i) xq[i] = 0;
        for (std::size_t c = 0; c < Cin; ++c)
            for (std::size_t i = 0; i < H; ++i)
                for (std::size_t j = 0; j < W; ++j)
                    xq[(c * HP + i + PH) * WP + j + PW] =
                        static_cast<std::int32_t>(scheme::from_double(static_cast<double>(x[(c * H + i) * W + j])).raw());
        detail::integer_conv<std::int64_t, OH, OW, SH, SW, WP>(
            xq, weight, offsets, y, [&](std::size_t oc) { return static_cast<std::int64_t>(bias[oc]) * (std::int64_t(1) << Fb); },
            [&](std::size_t, const std::int64_t* acc, float* yr) {
                for (std::size_t ox = 0; ox < OW; ++ox)
                    yr[ox] = static_cast<float>(scheme::from_raw(FixedDense<scheme, 1, 1>::finish(acc[ox], act, alpha)).to_double());
            });
    }

private:
    static constexpr std::array<std::uint32_t, K> offsets = detail::tap_offsets<Cin, KH, KW, HP, WP>();
};

namespace detail {

template <class S, class L>
struct quantized_layer {
    using type = L;
};
template <class S, std::size_t In, std::size_t Out>
struct quantized_layer<S, DenseT<float, In, Out>> {
    using type = QDenseT<S, In, Out>;
};
template <class S, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW, std::size_t SH,
          std::size_t SW, std::size_t PH, std::size_t PW, std::size_t PB, std::size_t PR>
struct quantized_layer<S, Conv2dT<float, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR>> {
    using type = QConv2dT<S, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR>;
};
template <class S, class M>
struct quantized_model;
template <class S, class... L>
struct quantized_model<S, ModelT<float, L...>> {
    using type = ModelT<float, typename quantized_layer<S, L>::type...>;
};

/// Whether a layer quantises its inputs with a calibrated scale.
template <class L>
struct calibrated : std::false_type {};
template <std::size_t In, std::size_t Out>
struct calibrated<QDenseT<Int8, In, Out>> : std::true_type {};
template <std::size_t... P>
struct calibrated<QConv2dT<Int8, P...>> : std::true_type {};

/// Whether a float layer's outputs are never negative, given whether its inputs are not.
template <class T, std::size_t In, std::size_t Out>
bool output_non_negative(const DenseT<T, In, Out>& l, bool) noexcept {
    return non_negative_activation(l.dense.act);
}
template <class T, std::size_t... P>
bool output_non_negative(const Conv2dT<T, P...>& l, bool) noexcept {
    return non_negative_activation(l.act);
}
template <class T, bool M, std::size_t... P>
bool output_non_negative(const Pool2dT<T, M, P...>&, bool in) noexcept {
    return in;
}
template <class T, std::size_t N>
bool output_non_negative(const FlattenT<T, N>&, bool in) noexcept {
    return in;
}
template <class T, std::size_t N, Activation A>
bool output_non_negative(const ActivationT<T, N, A>&, bool) noexcept {
    return non_negative_activation(A);
}
template <class L>
bool output_non_negative(const L&, bool) noexcept {
    return false;
}

template <class Q, class L>
struct always_false : std::false_type {};

/// A layer that QuantizedT keeps: copied.
template <class L>
Status quantize_layer(L& q, const L& f, float, bool, bool) {
    q = f;
    return Status::ok;
}
template <class S, std::size_t In, std::size_t Out>
Status quantize_layer(QDenseT<S, In, Out>& q, const DenseT<float, In, Out>& f, float range, bool non_negative, bool per_channel) {
    return q.set(f, range, non_negative, per_channel);
}
template <class S, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW, std::size_t SH,
          std::size_t SW, std::size_t PH, std::size_t PW, std::size_t PB, std::size_t PR>
Status quantize_layer(QConv2dT<S, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR>& q,
                      const Conv2dT<float, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR>& f, float range, bool non_negative, bool per_channel) {
    return q.set(f, range, non_negative, per_channel);
}
template <class Q, class L>
Status quantize_layer(Q&, const L&, float, bool, bool) {
    static_assert(always_false<Q, L>::value, "quantize_model: a layer of the quantised model is not the float layer or its QDenseT/QConv2dT");
    return Status::shape;
}

/// Runs the float model on one sample, layer by layer, appending each calibrated layer's |inputs| to seen.
template <std::size_t I, class... QL, class... FL>
void calibration_pass(const ModelT<float, FL...>& f, const float* in, float* a, float* b, float* scratch,
                      std::vector<std::vector<float>>& seen) {
    if constexpr (I < sizeof...(FL)) {
        using L = std::tuple_element_t<I, std::tuple<FL...>>;
        if constexpr (calibrated<std::tuple_element_t<I, std::tuple<QL...>>>::value)
            for (std::size_t k = 0; k < L::in_size; ++k) seen[I].push_back(std::fabs(in[k]));
        if constexpr (I + 1 < sizeof...(FL)) {
            f.template layer<I>().forward(f.isa(), in, a, scratch);
            calibration_pass<I + 1, QL...>(f, a, b, a, scratch, seen);
        }
    }
}

template <std::size_t I, class... QL, class... FL>
Status quantize_layers(ModelT<float, QL...>& q, const ModelT<float, FL...>& f, const std::vector<float>& range, bool non_negative,
                       bool per_channel) {
    if constexpr (I == sizeof...(FL)) {
        return Status::ok;
    } else {
        const auto& fl = f.template layer<I>();
        const Status s = quantize_layer(q.template layer<I>(), fl, range[I], non_negative, per_channel);
        if (s != Status::ok) return s;
        return quantize_layers<I + 1>(q, f, range, output_non_negative(fl, non_negative), per_channel);
    }
}

} // namespace detail

/// The quantised form of a float ModelT: each DenseT becomes a QDenseT and each Conv2dT a QConv2dT of scheme S, the rest is kept.
template <class S, class M>
using QuantizedT = typename detail::quantized_model<S, M>::type;

/// How quantize_model calibrates the int8 layers.
struct QuantizeOptions {
    /// The quantile of each int8 layer's |inputs| over the calibration samples that maps to the
    /// largest code (1: the maximum; the maximum too when the quantile is zero); rarer, larger
    /// inputs saturate.
    double coverage = 0.9999;
    /// One int8 weight scale per output channel instead of one per layer.
    bool per_channel = false;
    /// The model's inputs are never negative (jet images): the first layer uses uint8 codes.
    /// Later layers know it from the activations before them.
    bool non_negative_input = false;
};

/// Quantises the float model f into q (QuantizedT of it, or any ModelT whose layers are f's or
/// their QDenseT/QConv2dT), calibrating the int8 input scales on n samples (n x f.inputs floats,
/// row-major; fixed point needs none: calibration may then be null). On an error q is partly
/// quantised.
template <class... QL, class... FL>
Status quantize_model(ModelT<float, QL...>& q, const ModelT<float, FL...>& f, const float* calibration, std::size_t n,
                      const QuantizeOptions& opt = {}) {
    static_assert(sizeof...(QL) == sizeof...(FL), "quantize_model: the quantised model has a different number of layers");
    constexpr std::size_t L = sizeof...(FL);
    constexpr bool any = (detail::calibrated<QL>::value || ...);
    std::vector<float> range(L, 0.0f);
    if (any) {
        if (!calibration) return Status::null_pointer;
        if (n == 0) return Status::no_calibration;
        if (!(opt.coverage > 0.0 && opt.coverage <= 1.0)) return Status::bad_coverage;
        using FM = ModelT<float, FL...>;
        for (std::size_t k = 0; k < n * FM::inputs; ++k)
            if (!detail::finite(calibration[k])) return Status::non_finite;
        std::vector<std::vector<float>> seen(L);
        std::vector<float> a(FM::buffer_size), b(FM::buffer_size), scratch(FM::scratch_size);
        for (std::size_t r = 0; r < n; ++r)
            detail::calibration_pass<0, QL...>(f, calibration + r * FM::inputs, a.data(), b.data(), scratch.data(), seen);
        for (std::size_t l = 0; l < L; ++l) {
            std::vector<float>& v = seen[l];
            if (v.empty()) continue;
            const auto k = static_cast<std::size_t>(std::ceil(opt.coverage * static_cast<double>(v.size()))) - 1;
            std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
            range[l] = v[k];
            if (range[l] == 0.0f) range[l] = *std::max_element(v.begin(), v.end());  // mostly zeros: keep the rest representable
        }
    }
    return detail::quantize_layers<0>(q, f, range, opt.non_negative_input, opt.per_channel);
}

} // namespace tapir::deploy

TAPIR_SIMD_DIAG_POP
