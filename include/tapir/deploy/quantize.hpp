#pragma once
/// Quantised fixed-size MLPs, with the same guarantees as fixed.hpp (noexcept, no heap, const and
/// thread-safe forward, builds with -fno-exceptions -fno-rtti):
///
/// - Int8Mlp<8, 24, 16, 8, 1>: int8 weights (one symmetric scale per layer, max |W| -> 127) and
///   8-bit activations with one scale per layer input, calibrated on data (the range that covers
///   99.99% of the |inputs| by default; beyond it values saturate): int8 [-127, 127], or uint8
///   [0, 255] when the previous activation is non-negative (relu, sigmoid, softplus), int32
///   accumulation with the bias in the accumulator's units, then
///   y = act(acc * s_x * s_w) in float (tanh and sigmoid with fused multiply-adds everywhere),
///   requantised by the next layer. Integer sums are exact, so every instruction set gives the
///   same outputs.
/// - FixedPoint<W, I, Q, O>: the ap_fixed<W, I> convention of FPGA toolchains (W bits in total,
///   I of them integer bits including the sign, F = W - I fractional bits; Q = trn (floor, the
///   default) or rnd (round half up); O = wrap (the default) or sat), and FixedMlp<Fx, 8, 24, ...>
///   with weights, biases, inputs and layer outputs in Fx, products accumulated at full precision
///   (2F fractional bits, as an accumulator wide enough never to round or overflow) and quantised
///   once per output. Non-linear activations are evaluated exactly and then quantised (hls4ml
///   uses lookup tables, which adds the table's error on top).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>

#include "../config.hpp"
#include "fixed.hpp"

namespace tapir::deploy {

// ---- int8 -----------------------------------------------------------------------------------

namespace detail {

/// round-half-even(clamp(v, lo, hi)) as an integer, without libm and without fp contraction
/// (the clamp separates the product from the rounding add). NaN -> 0.
inline std::int32_t quantize_i8(float v, float lo = -127.0f, float hi = 127.0f) noexcept {
    v = v > hi ? hi : (v < lo ? lo : v);
    if (v != v) v = 0.0f;
    const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer, half to even
    return static_cast<std::int32_t>((v + magic) - magic);
}

/// Whether an activation's outputs are never negative (the next layer can use uint8 codes).
inline bool non_negative_activation(Activation a) noexcept {
    return a == Activation::relu || a == Activation::sigmoid || a == Activation::softplus;
}

/// Symmetric int8 weight scale for a largest |weight| of wmax: wmax -> 127 (1 for all-zero weights).
inline float weight_scale(float wmax) noexcept { return wmax > 0.0f ? wmax / 127.0f : 1.0f; }

/// How a layer's inputs are quantised: x_q = round(x * inv_scale) clamped to [lo, hi].
struct InputQuant {
    float lo, hi, scale, inv_scale;
};
/// int8 [-127, 127] for signed inputs, uint8 [0, 255] for non-negative ones; range -> hi.
inline InputQuant input_quant(float input_range, bool non_negative) noexcept {
    InputQuant q;
    q.lo = non_negative ? 0.0f : -127.0f;
    q.hi = non_negative ? 255.0f : 127.0f;
    q.scale = input_range > 0.0f ? input_range / q.hi : 1.0f;
    q.inv_scale = 1.0f / q.scale;
    return q;
}

/// A bias in accumulator units (unit = in_scale * w_scale), rounded, clamped to +-lim.
inline std::int32_t quantize_bias(float b, float unit, double lim = 2147483647.0) noexcept {
    const double v = static_cast<double>(b) / static_cast<double>(unit);
    return static_cast<std::int32_t>(std::nearbyint(v > lim ? lim : (v < -lim ? -lim : v)));
}

} // namespace detail

template <std::size_t In, std::size_t Out>
struct Int8Dense {
    static constexpr std::size_t in = In, out = Out;
    static constexpr std::size_t out_padded = detail::round_up(Out, 32);
    static constexpr std::size_t in_pairs = (In + 1) / 2;

    /// Quantised W, inputs in pairs: weight[p / 2][j][p % 2] (the operand layout of a
    /// 16-bit multiply-add of two inputs into one 32-bit sum); padding is zero.
    alignas(64) std::int8_t weight[in_pairs][out_padded][2] = {};
    alignas(64) std::int32_t bias[out_padded] = {};
    float in_scale = 1.0f;   ///< x_q = round(x / in_scale), clamped to [in_min, in_max]
    float inv_in_scale = 1.0f;
    float in_min = -127.0f, in_max = 127.0f;  ///< int8, or uint8 [0, 255] for non-negative inputs
    float w_scale = 1.0f;    ///< W ~ w_scale * weight (per channel: the largest channel scale)
    float out_scale = 1.0f;  ///< in_scale * w_scale: one accumulator unit
    alignas(64) float out_scales[out_padded] = {};  ///< one accumulator unit per output (all out_scale unless per channel)
    Activation act = Activation::none;
    float alpha = 0.0f;

    /// Quantised weight (p, j).
    std::int32_t w(std::size_t p, std::size_t j) const noexcept { return weight[p / 2][j][p % 2]; }

    static Status check(const LayerView<float>& v, float input_range) noexcept {
        const Status s = detail::check_view_shape(v, In, Out);
        if (s != Status::ok) return s;
        if (!detail::finite(input_range) || !(input_range >= 0.0f)) return Status::bad_scale;
        return detail::view_values_finite(v) ? Status::ok : Status::non_finite;
    }

    /// Quantises a float layer; input_range = the largest |input| to represent (from
    /// calibration), non_negative_input = the previous activation cannot go below zero,
    /// per_channel = one weight scale per output (max |W[., j]| -> 127) instead of one per layer.
    Status set(const LayerView<float>& v, float input_range, bool non_negative_input = false, bool per_channel = false) noexcept {
        const Status s = check(v, input_range);
        if (s != Status::ok) return s;
        float wmax = 0.0f;
        for (std::size_t k = 0; k < In * Out; ++k) wmax = std::fabs(v.weight[k]) > wmax ? std::fabs(v.weight[k]) : wmax;
        w_scale = detail::weight_scale(wmax);
        const detail::InputQuant iq = detail::input_quant(input_range, non_negative_input);
        in_min = iq.lo, in_max = iq.hi, in_scale = iq.scale, inv_in_scale = iq.inv_scale;
        out_scale = in_scale * w_scale;
        for (std::size_t j = 0; j < out_padded; ++j) {
            float cmax = 0.0f;
            if (per_channel && j < Out)
                for (std::size_t p = 0; p < In; ++p) cmax = std::fabs(v.weight[p * Out + j]) > cmax ? std::fabs(v.weight[p * Out + j]) : cmax;
            const float ws = per_channel ? detail::weight_scale(cmax) : w_scale;
            const float inv_w = 1.0f / ws;
            for (std::size_t p = 0; p < 2 * in_pairs; ++p)
                weight[p / 2][j][p % 2] = static_cast<std::int8_t>(p < In && j < Out ? detail::quantize_i8(v.weight[p * Out + j] * inv_w) : 0);
            out_scales[j] = per_channel ? in_scale * ws : out_scale;
            bias[j] = detail::quantize_bias(v.bias && j < Out ? v.bias[j] : 0.0f, out_scales[j]);
        }
        act = v.act;
        alpha = v.alpha;
        return Status::ok;
    }

    /// x (In floats) -> 16-bit pairs of quantised inputs (the odd tail padded with 0).
    TAPIR_ALWAYS_INLINE void quantize_input(const float* x, std::int16_t* q) const noexcept {
        for (std::size_t p = 0; p < In; ++p)
            q[p] = static_cast<std::int16_t>(detail::quantize_i8(x[p] * inv_in_scale, in_min, in_max));
        if (In % 2) q[In] = 0;
    }

    /// Dequantise and activate the Out accumulators into y.
    TAPIR_ALWAYS_INLINE void finish(const std::int32_t* acc, float* y) const noexcept {
        for (std::size_t j = 0; j < Out; ++j)
            y[j] = simd::activation_scalar<float, true>(act, static_cast<float>(acc[j]) * out_scales[j], alpha);
    }

    /// x (In floats) -> y (Out floats), portable loops.
    TAPIR_ALWAYS_INLINE void run(const float* x, float* y) const noexcept {
        alignas(64) std::int16_t q[2 * in_pairs];
        alignas(64) std::int32_t acc[out_padded];
        quantize_input(x, q);
        for (std::size_t j = 0; j < out_padded; ++j) acc[j] = bias[j];
        for (std::size_t pp = 0; pp < in_pairs; ++pp) {
            const std::int32_t x0 = q[2 * pp], x1 = q[2 * pp + 1];
            const std::int8_t(*wp)[2] = weight[pp];
            for (std::size_t j = 0; j < out_padded; ++j)
                acc[j] += x0 * static_cast<std::int32_t>(wp[j][0]) + x1 * static_cast<std::int32_t>(wp[j][1]);
        }
        finish(acc, y);
    }

#if TAPIR_SIMD_X86
    /// The same sums with AVX2: per pair of inputs, 16-bit multiply-adds (vpmaddwd) of the widened
    /// weights with the broadcast input pair, 8 outputs per register. |x_q w_q| <= 255 * 127, so the
    /// pair sum never saturates.
    TAPIR_TARGET_AVX2 inline void run_avx2(const float* x, float* y) const noexcept {
        alignas(64) std::int16_t q[2 * in_pairs];
        alignas(64) std::int32_t acc[out_padded];
        quantize_input(x, q);
        namespace x86 = ::tapir::detail::x86;
        constexpr std::size_t groups = out_padded / 8;  // 8 outputs = 16 int8 weights
        constexpr std::size_t U = groups < 4 ? groups : 4;
        for (std::size_t g0 = 0; g0 < groups; g0 += U) {
            x86::i32x8 a[U];
            for (std::size_t u = 0; u < U; ++u) a[u] = x86::load_i32x8(bias + (g0 + u) * 8);
            for (std::size_t pp = 0; pp < in_pairs; ++pp) {
                std::int32_t pair;
                std::memcpy(&pair, q + 2 * pp, sizeof pair);
                const x86::i16x16 xv = reinterpret_cast<x86::i16x16>(x86::set1_i32x8(pair));
                const std::int8_t* wp = &weight[pp][g0 * 8][0];
                for (std::size_t u = 0; u < U; ++u) {
                    const x86::i16x16 wv = x86::widen_i8(x86::load_i8x16(wp + u * 16));
                    a[u] = x86::add_wrap(a[u], x86::madd_i16(wv, xv));
                }
            }
            for (std::size_t u = 0; u < U; ++u) x86::store_i32x8(acc + (g0 + u) * 8, a[u]);
        }
        finish(acc, y);
    }
#endif
};

namespace detail {
template <std::size_t... S>
struct int8_layers {
    template <std::size_t... I>
    static std::tuple<Int8Dense<size_at<S...>(I), size_at<S...>(I + 1)>...> make(std::index_sequence<I...>);
    using type = decltype(make(std::make_index_sequence<sizeof...(S) - 1>{}));
};

template <std::size_t... S>
constexpr std::size_t max_size() noexcept {
    std::size_t m = 0;
    for (std::size_t s : {S...}) m = s > m ? s : m;
    return m;
}
} // namespace detail

/// An int8 MLP with compile-time sizes (float in, float out).
template <std::size_t... S>
class Int8Mlp : public detail::model_base<typename detail::int8_layers<S...>::type, float, S...> {
    using base = detail::model_base<typename detail::int8_layers<S...>::type, float, S...>;
    using base::layers_;

public:
    using typename base::layers_type;
    using base::inputs, base::num_layers, base::outputs;

    Int8Mlp() noexcept
        : isa_(simd::detected_isa() == simd::isa::neon
                   ? simd::isa::neon
                   : (simd::isa_supported(simd::isa::avx2) ? simd::isa::avx2 : simd::isa::scalar)) {}

    /// Quantises trained float layers; input_ranges[l] is the |input| range of layer l to
    /// represent (ModelSpec::input_ranges in convert.hpp calibrates them). All or nothing.
    Status load(const LayerView<float>* views, std::size_t count, const float* input_ranges) noexcept {
        return this->load_layers(
            count, input_ranges ? views : nullptr,
            [&](auto i) { return std::tuple_element_t<i, layers_type>::check(views[i], input_ranges[i]); },
            [&](auto i) {
                return std::get<i>(layers_).set(views[i], input_ranges[i], i > 0 && detail::non_negative_activation(views[i - 1].act));
            });
    }

    simd::isa isa() const noexcept { return isa_; }
    /// scalar, or avx2 (its loops compiled for AVX2; avx512 falls back to it), or neon.
    Status set_isa(simd::isa i) noexcept {
        if (!simd::isa_supported(i)) return Status::unsupported_isa;
        isa_ = i == simd::isa::avx512 ? simd::isa::avx2 : i;
        return Status::ok;
    }

    void forward(const float* x, float* y) const noexcept { forward(x, y, 1); }
    void forward(const float* x, float* y, std::size_t n) const noexcept {
#if TAPIR_SIMD_X86
        if (isa_ == simd::isa::avx2) {
            run_avx2(*this, x, y, n);
            return;
        }
#endif
        run_generic(x, y, n);
    }
    float operator()(const float* x) const noexcept {
        static_assert(outputs == 1, "Int8Mlp::operator(): the model has several outputs, use forward(x, y)");
        return detail::single_output(*this, x);
    }

private:
    template <bool Avx2, std::size_t I>
    TAPIR_ALWAYS_INLINE void run_layers(const float* in, float* a, float* b, float* y) const noexcept {
        float* out = (I + 1 == num_layers) ? y : ((I % 2 == 0) ? a : b);
#if TAPIR_SIMD_X86
        if constexpr (Avx2) std::get<I>(layers_).run_avx2(in, out);
        else std::get<I>(layers_).run(in, out);
#else
        std::get<I>(layers_).run(in, out);
#endif
        if constexpr (I + 1 < num_layers) run_layers<Avx2, I + 1>(out, a, b, y);
    }

    template <bool Avx2>
    TAPIR_ALWAYS_INLINE void run_rows(const float* x, float* y, std::size_t n) const noexcept {
        constexpr std::size_t mw = detail::max_size<S...>();
        float a[mw], b[mw], z[inputs];
        for (std::size_t r = 0; r < n; ++r) {
            const float* xr = x + r * inputs;
            if (this->input_scaling()) {
                for (std::size_t i = 0; i < inputs; ++i) z[i] = static_cast<float>(this->standardise(i, static_cast<double>(xr[i])));
                xr = z;
            }
            run_layers<Avx2, 0>(xr, a, b, y + r * outputs);
        }
    }
    void run_generic(const float* x, float* y, std::size_t n) const noexcept { run_rows<false>(x, y, n); }

#if TAPIR_SIMD_X86
    TAPIR_TARGET_AVX2 static void run_avx2(const Int8Mlp& m, const float* x, float* y, std::size_t n) noexcept {
        m.run_rows<true>(x, y, n);
    }
#endif

    simd::isa isa_;
};

// ---- fixed point (ap_fixed) -----------------------------------------------------------------

/// Quantisation mode when bits are dropped: trn = toward minus infinity (AP_TRN, the default),
/// rnd = to nearest, halves up (AP_RND).
enum class Quant : std::uint8_t { trn, rnd };
/// Overflow mode: wrap = keep the low W bits (AP_WRAP, the default), sat = clamp (AP_SAT).
enum class Ovf : std::uint8_t { wrap, sat };

/// A signed fixed-point number in the ap_fixed<W, I, Q, O> convention: W total bits, I integer
/// bits including the sign, F = W - I fractional bits; the value is raw * 2^-F.
template <int W, int I, Quant Q = Quant::trn, Ovf O = Ovf::wrap>
class FixedPoint {
    static_assert(W >= 2 && W <= 26, "FixedPoint: 2 <= W <= 26 (products accumulate exactly in 64-bit integers)");
    static_assert(I >= 1 && I <= W, "FixedPoint: 1 <= I <= W (I counts the sign bit)");

public:
    static constexpr int width = W, int_bits = I, frac_bits = W - I;
    static constexpr Quant quant = Q;
    static constexpr Ovf overflow = O;
    static constexpr std::int64_t raw_max = (std::int64_t(1) << (W - 1)) - 1;
    static constexpr std::int64_t raw_min = -(std::int64_t(1) << (W - 1));

    constexpr FixedPoint() noexcept = default;

    /// Quantises a value carried as an integer with `from_frac` fractional bits.
    static constexpr FixedPoint from_scaled(std::int64_t v, int from_frac) noexcept {
        std::int64_t r = v;
        const int shift = from_frac - frac_bits;
        if (shift > 0) {
            if (Q == Quant::rnd) r += std::int64_t(1) << (shift - 1);
            r = floor_shift(r, shift);
        } else if (shift < 0) {
            r = v * (std::int64_t(1) << -shift);
        }
        return from_raw(fit(r));
    }
    /// Quantises a double (NaN -> 0; out of range: wrap or saturate as O says).
    static FixedPoint from_double(double x) noexcept {
        if (x != x) return FixedPoint();
        double s = std::ldexp(x, frac_bits);
        s = Q == Quant::rnd ? std::floor(s + 0.5) : std::floor(s);
        const double lim = 4611686018427387904.0;  // 2^62: beyond any W <= 26 either way
        s = s > lim ? lim : (s < -lim ? -lim : s);
        return from_raw(fit(static_cast<std::int64_t>(s)));
    }
    static constexpr FixedPoint from_raw(std::int64_t r) noexcept {
        FixedPoint f;
        f.raw_ = r;
        return f;
    }

    constexpr std::int64_t raw() const noexcept { return raw_; }
    double to_double() const noexcept { return std::ldexp(static_cast<double>(raw_), -frac_bits); }
    /// Resolution 2^-F and range [-2^(I-1), 2^(I-1) - 2^-F].
    static double lsb() noexcept { return std::ldexp(1.0, -frac_bits); }
    static double max_value() noexcept { return std::ldexp(static_cast<double>(raw_max), -frac_bits); }
    static double min_value() noexcept { return std::ldexp(static_cast<double>(raw_min), -frac_bits); }

    friend constexpr FixedPoint operator+(FixedPoint a, FixedPoint b) noexcept { return from_raw(fit(a.raw_ + b.raw_)); }
    friend constexpr FixedPoint operator-(FixedPoint a, FixedPoint b) noexcept { return from_raw(fit(a.raw_ - b.raw_)); }
    /// Full-precision product (2F fractional bits), quantised back to this type.
    friend constexpr FixedPoint operator*(FixedPoint a, FixedPoint b) noexcept {
        return from_scaled(a.raw_ * b.raw_, 2 * frac_bits);
    }
    friend constexpr bool operator==(FixedPoint a, FixedPoint b) noexcept { return a.raw_ == b.raw_; }
    friend constexpr bool operator!=(FixedPoint a, FixedPoint b) noexcept { return a.raw_ != b.raw_; }
    friend constexpr bool operator<(FixedPoint a, FixedPoint b) noexcept { return a.raw_ < b.raw_; }

    /// Floor division by 2^s, defined for negative values too.
    static constexpr std::int64_t floor_shift(std::int64_t v, int s) noexcept {
        return v >= 0 ? (v >> s) : -(((-(v + 1)) >> s) + 1);
    }
    /// The overflow rule applied to an exact raw value.
    static constexpr std::int64_t fit(std::int64_t r) noexcept {
        if (O == Ovf::sat) return r > raw_max ? raw_max : (r < raw_min ? raw_min : r);
        const std::uint64_t m = (std::uint64_t(1) << W) - 1;
        std::uint64_t u = static_cast<std::uint64_t>(r) & m;
        if (u >> (W - 1)) u |= ~m;  // sign-extend
        return static_cast<std::int64_t>(u);
    }

private:
    std::int64_t raw_ = 0;
};

template <class Fx, std::size_t In, std::size_t Out>
struct FixedDense {
    static constexpr std::size_t in = In, out = Out;
    std::int32_t weight[In][Out] = {};  ///< raw values of Fx
    std::int32_t bias[Out] = {};
    Activation act = Activation::none;
    double alpha = 0.0;

    static Status check(const LayerView<float>& v) noexcept {
        const Status s = detail::check_view_shape(v, In, Out);
        if (s != Status::ok) return s;
        return detail::view_values_finite(v) ? Status::ok : Status::non_finite;
    }

    Status set(const LayerView<float>& v) noexcept {
        const Status s = check(v);
        if (s != Status::ok) return s;
        for (std::size_t p = 0; p < In; ++p)
            for (std::size_t j = 0; j < Out; ++j)
                weight[p][j] = static_cast<std::int32_t>(Fx::from_double(static_cast<double>(v.weight[p * Out + j])).raw());
        for (std::size_t j = 0; j < Out; ++j) {
            bias[j] = static_cast<std::int32_t>(Fx::from_double(v.bias ? static_cast<double>(v.bias[j]) : 0.0).raw());
        }
        act = v.act;
        alpha = static_cast<double>(v.alpha);
        return Status::ok;
    }

    /// x (In raw Fx values) -> y (Out raw Fx values).
    void run(const std::int64_t* x, std::int64_t* y) const noexcept {
        constexpr int F = Fx::frac_bits;
        std::int64_t acc[Out];
        for (std::size_t j = 0; j < Out; ++j) acc[j] = static_cast<std::int64_t>(bias[j]) * (std::int64_t(1) << F);
        for (std::size_t p = 0; p < In; ++p)
            for (std::size_t j = 0; j < Out; ++j) acc[j] += x[p] * static_cast<std::int64_t>(weight[p][j]);
        for (std::size_t j = 0; j < Out; ++j) y[j] = finish(acc[j], act, alpha);
    }

    /// An accumulator (2F fractional bits) quantised to Fx and activated: the raw output.
    static std::int64_t finish(std::int64_t acc, Activation act, double alpha) noexcept {
        const Fx z = Fx::from_scaled(acc, 2 * Fx::frac_bits);
        switch (act) {
        case Activation::none: return z.raw();
        case Activation::relu: return z.raw() > 0 ? z.raw() : 0;
        default: return Fx::from_double(simd::activation_scalar<double, false>(act, z.to_double(), alpha)).raw();
        }
    }
};

namespace detail {
template <class Fx, std::size_t... S>
struct fixed_layers {
    template <std::size_t... I>
    static std::tuple<FixedDense<Fx, size_at<S...>(I), size_at<S...>(I + 1)>...> make(std::index_sequence<I...>);
    using type = decltype(make(std::make_index_sequence<sizeof...(S) - 1>{}));
};
} // namespace detail

/// An MLP computed in the fixed-point type Fx (an emulation of an FPGA implementation: float in,
/// inputs quantised to Fx, float out).
template <class Fx, std::size_t... S>
class FixedMlp : public detail::model_base<typename detail::fixed_layers<Fx, S...>::type, float, S...> {
    using base = detail::model_base<typename detail::fixed_layers<Fx, S...>::type, float, S...>;
    using base::layers_;

public:
    using base::inputs, base::num_layers, base::outputs;
    using fixed_type = Fx;

    /// Quantises trained float layers to Fx. All or nothing.
    Status load(const LayerView<float>* views, std::size_t count) noexcept { return this->load_views(views, count); }

    void forward(const float* x, float* y) const noexcept { forward(x, y, 1); }
    void forward(const float* x, float* y, std::size_t n) const noexcept {
        constexpr std::size_t mw = detail::max_size<S...>();
        std::int64_t a[mw], b[mw];
        for (std::size_t r = 0; r < n; ++r) {
            for (std::size_t i = 0; i < inputs; ++i) {
                const double v = static_cast<double>(x[r * inputs + i]);
                a[i] = Fx::from_double(this->input_scaling() ? this->standardise(i, v) : v).raw();
            }
            const std::int64_t* out = run_layers<0>(a, b);
            for (std::size_t j = 0; j < outputs; ++j)
                y[r * outputs + j] = static_cast<float>(Fx::from_raw(out[j]).to_double());
        }
    }
    float operator()(const float* x) const noexcept {
        static_assert(outputs == 1, "FixedMlp::operator(): the model has several outputs, use forward(x, y)");
        return detail::single_output(*this, x);
    }

private:
    template <std::size_t I>
    const std::int64_t* run_layers(std::int64_t* in, std::int64_t* other) const noexcept {
        std::get<I>(layers_).run(in, other);
        if constexpr (I + 1 < num_layers) return run_layers<I + 1>(other, in);
        else return other;
    }

};

} // namespace tapir::deploy
