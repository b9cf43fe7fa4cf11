#pragma once
/// Code generation for the layer-list models of model.hpp: generate_header(model, opt) writes a
/// standalone header (only `<cmath>`, C++11, no exceptions, RTTI, heap or tapir) for a ModelT of
/// DenseT, Conv2dT/Conv1dT and GroupedConv2dT/GroupedConv1dT (stride, padding, dilation),
/// MaxPool/AvgPool 1d/2d (padded too), FlattenT, ActivationT, LstmT and GruT, and for the set
/// models EnergyFlowT (EFN) and DeepSetT (PFN):
///
///     static Cnn cnn;  tapir::deploy::load_model(cnn, trained);   // convert_model.hpp
///     tapir::deploy::CodegenOptions opt;
///     opt.name_space = "cnn";
///     tapir::deploy::write_header("cnn.hpp", cnn, opt);
///
///     // in the trigger code:
///     cnn::predict(x, y);                         // x: cnn::n_inputs, y: cnn::n_outputs
///     cnn::predict_step(x_t, state);              // first layer LSTM/GRU: one time step, state of cnn::n_state zeros at the start
///     cnn::predict_head(state, y);                // the layers after it on the state's h
///     cnn::predict(x, mask, y);                   // first layer LSTM/GRU: a variable-length sequence, as ModelT::forward(x, mask, y)
///     efn::predict(x, mask, y);                   // EnergyFlowT / DeepSetT: x (particles x features), mask per particle
///
/// Numbers, with fused multiply-adds (TAPIR_GEN_FMA, as codegen.hpp): dense, convolution,
/// pooling, flatten and activation layers do the ModelT's arithmetic in its order (one chain per
/// output over the taps in order, restarted every CodegenOptions::sum_block terms, then the bias;
/// tanh and sigmoid as tapir::simd's polynomials), so their outputs are bitwise the ModelT's and
/// the trained model's. The recurrent cells' gate arithmetic is written as the ModelT's
/// (autodiff/recurrent.hpp's) plain code, which compilers contract into fused multiply-adds or
/// not by their flags: bitwise when both builds contract alike (a library built without FMA and
/// the header with -ffp-contract=off), otherwise within 1e-6 relative (measured: about 1e-7).
/// The set models' pooling (z_i phi_i summed) is such plain code too; their phi and rho are dense.
///
/// The quantised layers of quantize_model.hpp (QDenseT, QConv2dT) are written as integer code:
/// int8 (codes, int sums, then the float scale and activation; none, relu and leaky ReLU are
/// bitwise on any flags) and ap_fixed with none or relu (exact integers, the formats' rounding
/// and overflow), so their outputs are the library's bit for bit.

#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "codegen.hpp"
#include "model.hpp"
#include "quantize_model.hpp"

namespace tapir::deploy {

namespace detail {

/// What the layers of one generated header contribute: declarations (weights and one function
/// per layer) and whether the polynomial tanh and sigmoid are needed.
struct ModelGen {
    std::string tn;        ///< "float" or "double"
    std::string decls;     ///< inside namespace detail
    std::string describe;  ///< "Conv2d(1x8x8 -> 4, 3x3) -> ..." for the leading comment
    std::size_t sum_block = 256;
    bool uses_poly = false;
    bool uses_conv = false, uses_pool = false;
    bool uses_int8 = false, uses_int8_conv = false, uses_fixed_conv = false;
    std::string fixed;  ///< the helpers of the one ap_fixed format in use ("" for none)
};

/// Integers as a C++ array initialiser (rows x cols).
template <class I>
void emit_int_array(std::string& out, const std::string& decl, const I* v, std::size_t rows, std::size_t cols) {
    emit_values(out, decl, v, rows, cols, 16, [](I x) { return std::to_string(static_cast<long long>(x)); });
}

template <class T>
void gen_activation_loop(ModelGen& g, Activation a, T alpha, std::size_t n, const std::string& v) {
    if (a == Activation::none) return;
    const bool poly = a == Activation::tanh || a == Activation::sigmoid;
    g.uses_poly |= poly;
    g.decls += "    for (int j = 0; j < " + std::to_string(n) + "; ++j) " + v + "[j] = " + act_expr(a, alpha, v + "[j]") + ";\n";
}

inline void gen_describe(ModelGen& g, const std::string& s) { g.describe += (g.describe.empty() ? "" : " -> ") + s; }

template <class T, std::size_t In, std::size_t Out>
void gen_dense(ModelGen& g, const std::string& id, const Dense<T, In, Out>& d) {
    std::vector<T> w(In * Out), b(Out);
    for (std::size_t p = 0; p < In; ++p)
        for (std::size_t j = 0; j < Out; ++j) w[p * Out + j] = d.weight[p][j];
    for (std::size_t j = 0; j < Out; ++j) b[j] = d.bias[j];
    const std::string k = std::to_string(In), n = std::to_string(Out);
    gen_describe(g, "Dense(" + k + " -> " + n + ", " + activation_name(d.act) + ")");
    g.decls += "// layer " + id + ": Dense " + k + " -> " + n + ", " + activation_name(d.act) + "\n";
    emit_array(g.decls, "constexpr " + g.tn + " w" + id + "[" + k + "][" + n + "]", w.data(), In, Out);
    emit_array(g.decls, "constexpr " + g.tn + " b" + id + "[" + n + "]", b.data(), 1, Out);
    g.decls += "inline void layer" + id + "(const " + g.tn + "* x, " + g.tn + "* y) noexcept {\n";
    g.decls += "    dense<" + k + ", " + n + ", " + std::to_string(simd::gemm_k_block(In, g.sum_block)) + ">(x, w" + id + ", b" + id + ", y);\n";
    gen_activation_loop(g, d.act, d.alpha, Out, "y");
    g.decls += "}\n\n";
}

template <class T, std::size_t In, std::size_t Out>
void gen_layer(ModelGen& g, const std::string& id, const DenseT<T, In, Out>& l) {
    gen_dense(g, id, l.dense);
}

/// An Mlp (a set model's phi or rho) as layers <name>0, <name>1, ... and one function <name>(x, y).
template <class T, std::size_t... S, std::size_t... I>
void gen_mlp(ModelGen& g, const std::string& name, const Mlp<T, S...>& m, std::index_sequence<I...>) {
    if (m.input_scaling())
        throw value_error("deploy::generate_header: " + name + " standardises its inputs; set models are generated without input scaling");
    (gen_dense(g, name + std::to_string(I), m.template layer<I>()), ...);
    constexpr std::size_t sizes[] = {S...};
    std::string b = "inline void " + name + "(const " + g.tn + "* x, " + g.tn + "* y) noexcept {\n", in = "x";
    for (std::size_t i = 0; i + 1 < sizeof...(S); ++i) {
        const bool last = i + 2 == sizeof...(S);
        const std::string out = last ? "y" : "h" + std::to_string(i);
        if (!last) b += "    " + g.tn + " " + out + "[" + std::to_string(sizes[i + 1]) + "];\n";
        b += "    layer" + name + std::to_string(i) + "(" + in + ", " + out + ");\n";
        in = out;
    }
    g.decls += b + "}\n\n";
}

/// The text of one Conv2dT: its sizes for the leading comment, its weight and bias arrays (w<tag>,
/// b<tag>) appended to g.decls, and the call of the conv2d helper on x and y.
template <class T, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW, std::size_t SH,
          std::size_t SW, std::size_t PH, std::size_t PW, std::size_t PB, std::size_t PR, std::size_t DH, std::size_t DW>
std::string gen_conv(ModelGen& g, const std::string& tag, const Conv2dT<T, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR, DH, DW>& l,
                     const std::string& x, const std::string& y) {
    using L = Conv2dT<T, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR, DH, DW>;
    constexpr std::size_t K = L::K;
    constexpr bool dilated = DH != 1 || DW != 1, asymmetric = PB != PH || PR != PW;
    g.uses_conv = true;
    const auto s = [](std::size_t v) { return std::to_string(v); };
    emit_array(g.decls, "constexpr " + g.tn + " w" + tag + "[" + s(Cout) + "][" + s(K) + "]", &l.weight[0][0], Cout, K);
    emit_array(g.decls, "constexpr " + g.tn + " b" + tag + "[" + s(Cout) + "]", l.bias, 1, Cout);
    return "    conv2d<" + s(Cin) + ", " + s(H) + ", " + s(W) + ", " + s(Cout) + ", " + s(KH) + ", " + s(KW) + ", " + s(SH) + ", " + s(SW) + ", " +
           s(PH) + ", " + s(PW) + ", " + s(simd::gemm_k_block(K, g.sum_block)) + (asymmetric || dilated ? ", " + s(PB) + ", " + s(PR) : std::string()) +
           (dilated ? ", " + s(DH) + ", " + s(DW) : std::string()) + ">(" + x + ", w" + tag + ", b" + tag + ", " + y + ");\n";
}

template <class L>
std::string conv_text(const L& l, std::size_t groups) {
    const auto s = [](std::size_t v) { return std::to_string(v); };
    return "Conv2d(" + s(L::in_channels * groups) + "x" + s(L::in_h) + "x" + s(L::in_w) + " -> " + s(L::out_channels * groups) + "x" + s(L::OH) +
           "x" + s(L::OW) + ", kernel " + s(L::kernel_h) + "x" + s(L::kernel_w) + ", stride " + s(L::stride_h) + "x" + s(L::stride_w) +
           ", padding " + s(L::pad_h) + "x" + s(L::pad_w) +
           (L::pad_bottom != L::pad_h || L::pad_right != L::pad_w ? " (bottom " + s(L::pad_bottom) + ", right " + s(L::pad_right) + ")" : std::string()) +
           (L::dilation_h != 1 || L::dilation_w != 1 ? ", dilation " + s(L::dilation_h) + "x" + s(L::dilation_w) : std::string()) +
           (groups != 1 ? ", groups " + s(groups) : std::string()) + ", " + activation_name(l.act) + ")";
}

template <class T, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW, std::size_t SH,
          std::size_t SW, std::size_t PH, std::size_t PW, std::size_t PB, std::size_t PR, std::size_t DH, std::size_t DW>
void gen_layer(ModelGen& g, const std::string& id, const Conv2dT<T, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR, DH, DW>& l) {
    const std::string what = conv_text(l, 1);
    gen_describe(g, what);
    g.decls += "// layer " + id + ": " + what + "\n";
    const std::string call = gen_conv(g, id, l, "x", "y");
    g.decls += "inline void layer" + id + "(const " + g.tn + "* x, " + g.tn + "* y) noexcept {\n" + call;
    gen_activation_loop(g, l.act, l.alpha, l.out_size, "y");
    g.decls += "}\n\n";
}

/// A grouped convolution: one conv2d call per group on its channel slices, as GroupedConv2dT.
template <class T, std::size_t G, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW,
          std::size_t SH, std::size_t SW, std::size_t PH, std::size_t PW, std::size_t PB, std::size_t PR, std::size_t DH, std::size_t DW>
void gen_layer(ModelGen& g, const std::string& id, const GroupedConv2dT<T, G, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR, DH, DW>& l) {
    using Q = typename GroupedConv2dT<T, G, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR, DH, DW>::group_type;
    const std::string what = conv_text(l.group[0], G);
    gen_describe(g, what);
    g.decls += "// layer " + id + ": " + what + ", one convolution per group\n";
    std::string body;
    for (std::size_t q = 0; q < G; ++q) {
        const std::string tag = id + "_" + std::to_string(q);
        body += gen_conv(g, tag, l.group[q], "x + " + std::to_string(q * Q::in_size), "y + " + std::to_string(q * Q::out_size));
    }
    g.decls += "inline void layer" + id + "(const " + g.tn + "* x, " + g.tn + "* y) noexcept {\n" + body;
    for (std::size_t q = 0; q < G; ++q)
        gen_activation_loop(g, l.group[q].act, l.group[q].alpha, Q::out_size, "(y + " + std::to_string(q * Q::out_size) + ")");
    g.decls += "}\n\n";
}

/// int8: quantise the input as detail::quantize_i8 does, then integer sums (quantize_model.hpp).
inline const char* gen_int8_helpers() {
    return R"(
/// round-half-even(clamp(v, lo, hi)) (NaN -> 0) as tapir's int8 quantiser: the clamp keeps the
/// product out of the rounding add.
inline int quantize_i8(float v, float lo, float hi) noexcept {
    v = v > hi ? hi : (v < lo ? lo : v);
    if (v != v) v = 0.0f;
    const float magic = 12582912.0f;
    return static_cast<int>((v + magic) - magic);
}
)";
}

inline const char* gen_int8_conv_helpers() {
    return R"(
/// int8 cross-correlation of one (CI, H, W) sample: codes of x (inv: 1 / input scale), exact
/// int sums from the bias, then one float scale per output channel.
template <int CI, int H, int W, int CO, int KH, int KW, int SH, int SW, int PH, int PW, int PB, int PR>
inline void conv2d_i8(const float* x, const signed char (&w)[CO][CI * KH * KW], const int (&b)[CO], const float (&s)[CO], float inv,
                      float lo, float hi, float* y) noexcept {
    const int OH = (H + PH + PB - KH) / SH + 1, OW = (W + PW + PR - KW) / SW + 1, K = CI * KH * KW;
    int q[CI * H * W];
    for (int i = 0; i < CI * H * W; ++i) q[i] = quantize_i8(x[i] * inv, lo, hi);
    for (int oc = 0; oc < CO; ++oc)
        for (int oy = 0; oy < OH; ++oy)
            for (int ox = 0; ox < OW; ++ox) {
                int acc = b[oc];
                for (int p = 0; p < K; ++p) {
                    const int c = p / (KH * KW), i = (p / KW) % KH, j = p % KW;
                    const int iy = oy * SH + i - PH, ix = ox * SW + j - PW;
                    if (iy >= 0 && iy < H && ix >= 0 && ix < W) acc += w[oc][p] * q[(c * H + iy) * W + ix];
                }
                y[(oc * OH + oy) * OW + ox] = static_cast<float>(acc) * s[oc];
            }
}
)";
}

/// The helpers of one ap_fixed format (tapir::deploy::FixedPoint's arithmetic).
template <class Fx>
std::string gen_fixed_helpers() {
    const int F = Fx::frac_bits;
    const std::string fs = std::to_string(F), ws = std::to_string(Fx::width);
    std::string h = "\n/// ap_fixed<" + ws + ", " + std::to_string(Fx::int_bits) + (Fx::quant == Quant::rnd ? ", AP_RND" : ", AP_TRN") +
                    (Fx::overflow == Ovf::sat ? ", AP_SAT" : ", AP_WRAP") + ">: raw integers, value raw * 2^-" + fs + ".\n";
    if (Fx::overflow == Ovf::sat) {
        h += "inline long long fx_fit(long long r) noexcept { return r > " + std::to_string(Fx::raw_max) + "LL ? " + std::to_string(Fx::raw_max) +
             "LL : (r < " + std::to_string(Fx::raw_min) + "LL ? " + std::to_string(Fx::raw_min) + "LL : r); }\n";
    } else {
        h += "inline long long fx_fit(long long r) noexcept {\n"
             "    const unsigned long long m = (1ULL << " + ws + ") - 1;\n"
             "    unsigned long long u = static_cast<unsigned long long>(r) & m;\n"
             "    if (u >> " + std::to_string(Fx::width - 1) + ") u |= ~m;\n"
             "    return static_cast<long long>(u);\n}\n";
    }
    h += "inline long long fx_floor_shift(long long v, int s) noexcept { return v >= 0 ? (v >> s) : -(((-(v + 1)) >> s) + 1); }\n";
    h += "inline long long fx_from_double(double x) noexcept {\n"
         "    if (x != x) return 0;\n"
         "    double s = std::ldexp(x, " + fs + ");\n";
    h += Fx::quant == Quant::rnd ? "    s = std::floor(s + 0.5);\n" : "    s = std::floor(s);\n";
    h += "    const double lim = 4611686018427387904.0;\n"
         "    s = s > lim ? lim : (s < -lim ? -lim : s);\n"
         "    return fx_fit(static_cast<long long>(s));\n}\n";
    h += "/// A sum of products (" + std::to_string(2 * F) + " fractional bits) quantised to the format.\n";
    h += "inline long long fx_from_acc(long long v) noexcept {\n";
    if (F > 0) h += std::string(Fx::quant == Quant::rnd ? "    v += 1LL << " + std::to_string(F - 1) + ";\n" : "") + "    v = fx_floor_shift(v, " + fs + ");\n";
    h += "    return fx_fit(v);\n}\n";
    h += "inline float fx_to_float(long long r) noexcept { return static_cast<float>(std::ldexp(static_cast<double>(r), -" + fs + ")); }\n";
    return h;
}

inline const char* gen_fixed_conv_helpers() {
    return R"(
/// ap_fixed cross-correlation of one (CI, H, W) sample: exact sums of raw products from the
/// bias, quantised once per output, then ReLU on the raw value when RELU.
template <int CI, int H, int W, int CO, int KH, int KW, int SH, int SW, int PH, int PW, int PB, int PR, bool RELU>
inline void conv2d_fx(const float* x, const int (&w)[CO][CI * KH * KW], const int (&b)[CO], float* y) noexcept {
    const int OH = (H + PH + PB - KH) / SH + 1, OW = (W + PW + PR - KW) / SW + 1, K = CI * KH * KW;
    long long q[CI * H * W];
    for (int i = 0; i < CI * H * W; ++i) q[i] = fx_from_double(static_cast<double>(x[i]));
    for (int oc = 0; oc < CO; ++oc)
        for (int oy = 0; oy < OH; ++oy)
            for (int ox = 0; ox < OW; ++ox) {
                long long acc = static_cast<long long>(b[oc]) * fx_one;
                for (int p = 0; p < K; ++p) {
                    const int c = p / (KH * KW), i = (p / KW) % KH, j = p % KW;
                    const int iy = oy * SH + i - PH, ix = ox * SW + j - PW;
                    if (iy >= 0 && iy < H && ix >= 0 && ix < W) acc += static_cast<long long>(w[oc][p]) * q[(c * H + iy) * W + ix];
                }
                long long r = fx_from_acc(acc);
                if (RELU && r < 0) r = 0;
                y[(oc * OH + oy) * OW + ox] = fx_to_float(r);
            }
}
)";
}

/// Registers the ap_fixed format Fx (one per header) and checks the activation.
template <class Fx>
void gen_use_fixed(ModelGen& g, Activation act, const std::string& what) {
    if (act != Activation::none && act != Activation::relu)
        throw value_error(std::string("deploy::generate_header: ") + what + ": ap_fixed layers are generated with none or relu activations, not " +
                          activation_name(act));
    const std::string h = gen_fixed_helpers<Fx>() + "constexpr long long fx_one = 1LL << " + std::to_string(Fx::frac_bits) + ";\n";
    if (!g.fixed.empty() && g.fixed != h) throw value_error("deploy::generate_header: " + what + ": one header holds one ap_fixed format");
    g.fixed = h;
}

template <std::size_t In, std::size_t Out>
void gen_layer(ModelGen& g, const std::string& id, const QDenseT<Int8, In, Out>& l) {
    const Int8Dense<In, Out>& d = l.q;
    g.uses_int8 = true;
    std::vector<int> w(In * Out);
    for (std::size_t p = 0; p < In; ++p)
        for (std::size_t j = 0; j < Out; ++j) w[p * Out + j] = d.w(p, j);
    const std::string k = std::to_string(In), n = std::to_string(Out);
    const std::string what = "Int8Dense(" + k + " -> " + n + ", " + activation_name(d.act) + ")";
    gen_describe(g, what);
    g.decls += "// layer " + id + ": " + what + "; input codes [" + literal(d.in_min) + ", " + literal(d.in_max) + "]\n";
    emit_int_array(g.decls, "constexpr signed char w" + id + "[" + k + "][" + n + "]", w.data(), In, Out);
    emit_int_array(g.decls, "constexpr int b" + id + "[" + n + "]", d.bias, 1, Out);
    emit_array(g.decls, "constexpr float s" + id + "[" + n + "]", d.out_scales, 1, Out);
    g.decls += "inline void layer" + id + "(const float* x, float* y) noexcept {\n";
    g.decls += "    int q[" + k + "];\n";
    g.decls += "    for (int p = 0; p < " + k + "; ++p) q[p] = quantize_i8(x[p] * " + literal(d.inv_in_scale) + ", " + literal(d.in_min) + ", " +
               literal(d.in_max) + ");\n";
    g.decls += "    for (int j = 0; j < " + n + "; ++j) {\n        int acc = b" + id + "[j];\n";
    g.decls += "        for (int p = 0; p < " + k + "; ++p) acc += q[p] * w" + id + "[p][j];\n";
    g.decls += "        y[j] = static_cast<float>(acc) * s" + id + "[j];\n    }\n";
    gen_activation_loop(g, d.act, d.alpha, Out, "y");
    g.decls += "}\n\n";
}

template <int FW, int FI, Quant Q, Ovf O, std::size_t In, std::size_t Out>
void gen_layer(ModelGen& g, const std::string& id, const QDenseT<FixedPoint<FW, FI, Q, O>, In, Out>& l) {
    const auto& d = l.q;
    const std::string k = std::to_string(In), n = std::to_string(Out);
    const std::string what = "FixedDense(" + k + " -> " + n + ", " + activation_name(d.act) + ")";
    gen_use_fixed<FixedPoint<FW, FI, Q, O>>(g, d.act, "layer " + id + " " + what);
    gen_describe(g, what);
    g.decls += "// layer " + id + ": " + what + ", raw ap_fixed values\n";
    emit_int_array(g.decls, "constexpr int w" + id + "[" + k + "][" + n + "]", &d.weight[0][0], In, Out);
    emit_int_array(g.decls, "constexpr int b" + id + "[" + n + "]", d.bias, 1, Out);
    g.decls += "inline void layer" + id + "(const float* x, float* y) noexcept {\n";
    g.decls += "    long long q[" + k + "];\n";
    g.decls += "    for (int p = 0; p < " + k + "; ++p) q[p] = fx_from_double(static_cast<double>(x[p]));\n";
    g.decls += "    for (int j = 0; j < " + n + "; ++j) {\n        long long acc = static_cast<long long>(b" + id + "[j]) * fx_one;\n";
    g.decls += "        for (int p = 0; p < " + k + "; ++p) acc += q[p] * w" + id + "[p][j];\n";
    g.decls += "        long long r = fx_from_acc(acc);\n";
    if (d.act == Activation::relu) g.decls += "        if (r < 0) r = 0;\n";
    g.decls += "        y[j] = fx_to_float(r);\n    }\n}\n\n";
}

template <class S, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW, std::size_t SH,
          std::size_t SW, std::size_t PH, std::size_t PW, std::size_t PB, std::size_t PR>
void gen_layer(ModelGen& g, const std::string& id, const QConv2dT<S, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR>& l) {
    using L = QConv2dT<S, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR>;
    constexpr bool int8 = std::is_same<S, Int8>::value;
    const auto s = [](std::size_t v) { return std::to_string(v); };
    const std::string what = std::string(int8 ? "Int8Conv2d(" : "FixedConv2d(") + s(Cin) + "x" + s(H) + "x" + s(W) + " -> " + s(Cout) + "x" +
                             s(L::OH) + "x" + s(L::OW) + ", kernel " + s(KH) + "x" + s(KW) + ", stride " + s(SH) + "x" + s(SW) + ", padding " +
                             s(PH) + "x" + s(PW) + " (bottom " + s(PB) + ", right " + s(PR) + "), " + activation_name(l.act) + ")";
    const std::string args = s(Cin) + ", " + s(H) + ", " + s(W) + ", " + s(Cout) + ", " + s(KH) + ", " + s(KW) + ", " + s(SH) + ", " + s(SW) + ", " +
                             s(PH) + ", " + s(PW) + ", " + s(PB) + ", " + s(PR);
    const std::string wdecl = "[" + s(Cout) + "][" + s(L::K) + "]";
    if constexpr (int8) {
        g.uses_int8 = g.uses_int8_conv = true;
        gen_describe(g, what);
        g.decls += "// layer " + id + ": " + what + "\n";
        emit_int_array(g.decls, "constexpr signed char w" + id + wdecl, &l.weight[0][0], Cout, L::K);
        emit_int_array(g.decls, "constexpr int b" + id + "[" + s(Cout) + "]", l.bias, 1, Cout);
        emit_array(g.decls, "constexpr float s" + id + "[" + s(Cout) + "]", l.out_scales, 1, Cout);
        g.decls += "inline void layer" + id + "(const float* x, float* y) noexcept {\n";
        g.decls += "    conv2d_i8<" + args + ">(x, w" + id + ", b" + id + ", s" + id + ", " + literal(l.inv_in_scale) + ", " + literal(l.in_min) + ", " +
                   literal(l.in_max) + ", y);\n";
        gen_activation_loop(g, l.act, l.alpha, L::out_size, "y");
        g.decls += "}\n\n";
    } else {
        gen_use_fixed<S>(g, l.act, "layer " + id + " " + what);
        g.uses_fixed_conv = true;
        gen_describe(g, what);
        g.decls += "// layer " + id + ": " + what + ", raw ap_fixed values\n";
        emit_int_array(g.decls, "constexpr int w" + id + wdecl, &l.weight[0][0], Cout, L::K);
        emit_int_array(g.decls, "constexpr int b" + id + "[" + s(Cout) + "]", l.bias, 1, Cout);
        g.decls += "inline void layer" + id + "(const float* x, float* y) noexcept {\n";
        g.decls += "    conv2d_fx<" + args + ", " + (l.act == Activation::relu ? "true" : "false") + ">(x, w" + id + ", b" + id + ", y);\n}\n\n";
    }
}

template <class T, bool IsMax, std::size_t C, std::size_t H, std::size_t W, std::size_t KH, std::size_t KW, std::size_t SH, std::size_t SW,
          std::size_t PH, std::size_t PW>
void gen_layer(ModelGen& g, const std::string& id, const Pool2dT<T, IsMax, C, H, W, KH, KW, SH, SW, PH, PW>&) {
    constexpr bool padded = PH != 0 || PW != 0;
    g.uses_pool = true;
    const auto s = [](std::size_t v) { return std::to_string(v); };
    const std::string what = std::string(IsMax ? "MaxPool" : "AvgPool") + "(" + s(C) + "x" + s(H) + "x" + s(W) + ", window " + s(KH) + "x" +
                             s(KW) + ", stride " + s(SH) + "x" + s(SW) + (padded ? ", padding " + s(PH) + "x" + s(PW) : std::string()) + ")";
    gen_describe(g, what);
    g.decls += "// layer " + id + ": " + what + "\n";
    g.decls += "inline void layer" + id + "(const " + g.tn + "* x, " + g.tn + "* y) noexcept {\n";
    g.decls += "    pool2d<" + s(C) + ", " + s(H) + ", " + s(W) + ", " + s(KH) + ", " + s(KW) + ", " + s(SH) + ", " + s(SW) + ", " +
               (IsMax ? "true" : "false") + (padded ? ", " + s(PH) + ", " + s(PW) : std::string()) + ">(x, y);\n}\n\n";
}

template <class T, std::size_t N>
void gen_layer(ModelGen& g, const std::string& id, const FlattenT<T, N>&) {
    gen_describe(g, "Flatten(" + std::to_string(N) + ")");
    g.decls += "// layer " + id + ": Flatten (channels-first data is already flat)\n";
    g.decls += "inline void layer" + id + "(const " + g.tn + "* x, " + g.tn + "* y) noexcept {\n";
    g.decls += "    for (int j = 0; j < " + std::to_string(N) + "; ++j) y[j] = x[j];\n}\n\n";
}

template <class T, std::size_t N, Activation A>
void gen_layer(ModelGen& g, const std::string& id, const ActivationT<T, N, A>& l) {
    gen_describe(g, std::string(activation_name(A)) + "(" + std::to_string(N) + ")");
    g.decls += "// layer " + id + ": " + activation_name(A) + "\n";
    g.decls += "inline void layer" + id + "(const " + g.tn + "* x, " + g.tn + "* y) noexcept {\n";
    g.decls += "    for (int j = 0; j < " + std::to_string(N) + "; ++j) y[j] = x[j];\n";
    gen_activation_loop(g, A, l.alpha, N, "y");
    g.decls += "}\n\n";
}

template <class T, Cell C, std::size_t In, std::size_t Hidden, std::size_t Steps, bool Sequences>
void gen_layer(ModelGen& g, const std::string& id, const RecurrentT<T, C, In, Hidden, Steps, Sequences>& l) {
    using L = RecurrentT<T, C, In, Hidden, Steps, Sequences>;
    constexpr std::size_t GH = L::GH, H = Hidden;
    g.uses_poly = true;
    const auto s = [](std::size_t v) { return std::to_string(v); };
    const std::string& t = g.tn;
    const std::string what = std::string(L::name) + "(" + s(In) + " -> " + s(Hidden) + ", " + s(Steps) + " steps" +
                             (Sequences ? ", every step's h" : ", last h") + ")";
    gen_describe(g, what);
    std::vector<T> wi(In * GH), wh(Hidden * GH), bh(GH), zero(GH, T(0));
    for (std::size_t p = 0; p < In; ++p)
        for (std::size_t j = 0; j < GH; ++j) wi[p * GH + j] = l.input.weight[p][j];
    for (std::size_t p = 0; p < Hidden; ++p)
        for (std::size_t j = 0; j < GH; ++j) wh[p * GH + j] = l.hidden.weight[p][j];
    for (std::size_t j = 0; j < GH; ++j) bh[j] = l.hidden.bias[j];
    g.decls += "// layer " + id + ": " + what + "; gates " + (C == Cell::lstm ? "i, f, g, o" : "r, z, n") + " (PyTorch's)\n";
    emit_array(g.decls, "constexpr " + t + " wi" + id + "[" + s(In) + "][" + s(GH) + "]", wi.data(), In, GH);
    emit_array(g.decls, "constexpr " + t + " wh" + id + "[" + s(Hidden) + "][" + s(GH) + "]", wh.data(), Hidden, GH);
    emit_array(g.decls, "constexpr " + t + " bi" + id + "[" + s(GH) + "]", l.bias_ih, 1, GH);
    emit_array(g.decls, "constexpr " + t + " bh" + id + "[" + s(GH) + "]", bh.data(), 1, GH);
    emit_array(g.decls, "constexpr " + t + " zero" + id + "[" + s(GH) + "]", zero.data(), 1, GH);
    const std::string hs = s(H), gs = s(GH);
    g.decls += "/// One step: state (" + s(L::state_size) + (C == Cell::lstm ? " values, h then c" : " values, h") + ") advanced by x (" +
               s(In) + " values).\n";
    g.decls += "inline void step" + id + "(const " + t + "* x, " + t + "* state) noexcept {\n";
    g.decls += "    " + t + " xp[" + gs + "];\n    " + t + " a[" + gs + "];\n";
    g.decls += "    dense<" + s(In) + ", " + gs + ", " + s(simd::gemm_k_block(In, g.sum_block)) + ">(x, wi" + id + ", zero" + id + ", xp);\n";
    g.decls += "    dense<" + hs + ", " + gs + ", " + s(simd::gemm_k_block(Hidden, g.sum_block)) + ">(state, wh" + id + ", bh" + id + ", a);\n";
    const std::string loop = "    for (int j = 0; j < ";
    if (C == Cell::lstm) {
        g.decls += "    " + t + " cn[" + hs + "];\n    " + t + " tc[" + hs + "];\n";
        g.decls += loop + gs + "; ++j) a[j] = a[j] + xp[j];\n";
        g.decls += loop + gs + "; ++j) a[j] = a[j] + bi" + id + "[j];\n";
        g.decls += loop + hs + "; ++j) a[" + s(2 * H) + " + j] *= " + t + "(2);\n";
        g.decls += loop + gs + "; ++j) a[j] = sigmoid_poly(a[j]);\n";
        g.decls += loop + hs + "; ++j) {\n";
        g.decls += "        a[" + s(2 * H) + " + j] = " + t + "(2) * a[" + s(2 * H) + " + j] - " + t + "(1);\n";
        g.decls += "        cn[j] = a[" + hs + " + j] * state[" + hs + " + j] + a[j] * a[" + s(2 * H) + " + j];\n    }\n";
        g.decls += loop + hs + "; ++j) tc[j] = tanh_poly(cn[j]);\n";
        g.decls += loop + hs + "; ++j) {\n        state[j] = a[" + s(3 * H) + " + j] * tc[j];\n        state[" + hs + " + j] = cn[j];\n    }\n";
    } else {
        g.decls += "    " + t + " rz[" + s(2 * H) + "];\n    " + t + " n[" + hs + "];\n";
        g.decls += loop + s(2 * H) + "; ++j) rz[j] = a[j] + xp[j] + bi" + id + "[j];\n";
        g.decls += loop + s(2 * H) + "; ++j) rz[j] = sigmoid_poly(rz[j]);\n";
        g.decls += loop + hs + "; ++j) n[j] = xp[" + s(2 * H) + " + j] + bi" + id + "[" + s(2 * H) + " + j] + rz[j] * a[" + s(2 * H) + " + j];\n";
        g.decls += loop + hs + "; ++j) n[j] = tanh_poly(n[j]);\n";
        g.decls += loop + hs + "; ++j) state[j] = n[j] + rz[" + hs + " + j] * (state[j] - n[j]);\n";
    }
    g.decls += "}\n";
    g.decls += "inline void layer" + id + "(const " + t + "* x, " + t + "* y) noexcept {\n";
    g.decls += "    " + t + " state[" + s(L::state_size) + "];\n";
    g.decls += loop + s(L::state_size) + "; ++j) state[j] = " + t + "(0);\n";
    g.decls += "    for (int t = 0; t < " + s(Steps) + "; ++t) {\n";
    g.decls += "        step" + id + "(x + t * " + s(In) + ", state);\n";
    if (Sequences) g.decls += "        for (int j = 0; j < " + hs + "; ++j) y[t * " + hs + " + j] = state[j];\n";
    g.decls += "    }\n";
    if (!Sequences) g.decls += loop + hs + "; ++j) y[j] = state[j];\n";
    g.decls += "}\n";
    // A variable-length sequence, as RecurrentT::forward_masked: a masked step is not taken (the
    // state is kept) and, with every step's h, outputs h times 0.
    g.decls += "inline void layer" + id + "_masked(const " + t + "* x, const " + t + "* mask, " + t + "* y) noexcept {\n";
    g.decls += "    " + t + " state[" + s(L::state_size) + "];\n";
    g.decls += loop + s(L::state_size) + "; ++j) state[j] = " + t + "(0);\n";
    g.decls += "    for (int t = 0; t < " + s(Steps) + "; ++t) {\n";
    g.decls += "        const bool present = mask[t] != " + t + "(0);\n";
    g.decls += "        if (present) step" + id + "(x + t * " + s(In) + ", state);\n";
    if (Sequences) {
        g.decls += "        const " + t + " m = present ? " + t + "(1) : " + t + "(0);\n";
        g.decls += "        for (int j = 0; j < " + hs + "; ++j) y[t * " + hs + " + j] = state[j] * m;\n";
    }
    g.decls += "    }\n";
    if (!Sequences) g.decls += loop + hs + "; ++j) y[j] = state[j];\n";
    g.decls += "}\n\n";
}

/// The convolution and pooling kernels, written once for T (replacing @T@): the loops of
/// Conv2dT and Pool2dT for one output at a time.
inline const char* gen_conv_helpers() {
    return R"(
/// Cross-correlation of one (CI, H, W) sample to (CO, OH, OW), padded PH rows above and PB below,
/// PW columns left and PR right, taps DH rows and DW columns apart: per output one multiply-add chain over the taps (channel, row,
/// column) in order, zero outside the padding, restarted every KB taps and the partial sums
/// added in order, then the bias.
template <int CI, int H, int W, int CO, int KH, int KW, int SH, int SW, int PH, int PW, int KB, int PB = PH, int PR = PW, int DH = 1, int DW = 1>
inline void conv2d(const @T@* x, const @T@ (&w)[CO][CI * KH * KW], const @T@ (&b)[CO], @T@* y) noexcept {
    const int OH = (H + PH + PB - DH * (KH - 1) - 1) / SH + 1, OW = (W + PW + PR - DW * (KW - 1) - 1) / SW + 1, K = CI * KH * KW;
    for (int oc = 0; oc < CO; ++oc)
        for (int oy = 0; oy < OH; ++oy)
            for (int ox = 0; ox < OW; ++ox) {
                @T@ acc = @T@(0);
                for (int k0 = 0; k0 < K; k0 += KB) {
                    const int k1 = k0 + KB < K ? k0 + KB : K;
                    @T@ part = @T@(0);
                    for (int p = k0; p < k1; ++p) {
                        const int c = p / (KH * KW), i = (p / KW) % KH, j = p % KW;
                        const int iy = oy * SH + i * DH - PH, ix = ox * SW + j * DW - PW;
                        const @T@ v = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[(c * H + iy) * W + ix] : @T@(0);
                        part = mad(w[oc][p], v, part);
                    }
                    acc = k0 == 0 ? part : part + acc;
                }
                y[(oc * OH + oy) * OW + ox] = acc + b[oc];
            }
}
)";
}

inline const char* gen_pool_helpers() {
    return R"(
/// Max (a NaN propagates) or average (sum in window order, times 1 / (KH KW)) pooling of one
/// (C, H, W) sample with PH rows and PW columns of padding on each side: a padded window takes
/// its taps inside the input only (the average still divides by KH KW, as PyTorch's
/// count_include_pad), max from the first of them.
template <int C, int H, int W, int KH, int KW, int SH, int SW, bool MAX, int PH = 0, int PW = 0>
inline void pool2d(const @T@* x, @T@* y) noexcept {
    const int OH = (H + 2 * PH - KH) / SH + 1, OW = (W + 2 * PW - KW) / SW + 1;
    const @T@ inv = @T@(1) / static_cast<@T@>(KH * KW);
    int o = 0;
    for (int c = 0; c < C; ++c)
        for (int oy = 0; oy < OH; ++oy)
            for (int ox = 0; ox < OW; ++ox, ++o) {
                const @T@* xs = x + c * H * W;
                @T@ r = @T@(0);
                if (PH == 0 && PW == 0) {
                    const @T@* win = xs + oy * SH * W + ox * SW;
                    if (MAX) r = win[0];
                    for (int i = 0; i < KH; ++i)
                        for (int j = 0; j < KW; ++j) {
                            const @T@ v = win[i * W + j];
                            if (MAX) r = (v <= r || r != r) ? r : v;  // the first maximum, the first NaN
                            else r += v;
                        }
                } else {
                    bool first = true;
                    for (int i = 0; i < KH; ++i) {
                        const int iy = oy * SH + i - PH;
                        if (iy < 0 || iy >= H) continue;
                        for (int j = 0; j < KW; ++j) {
                            const int ix = ox * SW + j - PW;
                            if (ix < 0 || ix >= W) continue;
                            const @T@ v = xs[iy * W + ix];
                            if (!MAX) {
                                r += v;
                            } else if (first || v > r || v != v) {
                                r = v;
                                first = false;
                                if (v != v) i = KH, j = KW;
                            }
                        }
                    }
                }
                y[o] = MAX ? r : r * inv;
            }
}
)";
}

/// A ModelGen for T after checking the options every generated header shares.
template <class T>
ModelGen start_gen(const CodegenOptions& opt) {
    if (!is_identifier(opt.function)) throw value_error("deploy::generate_header: function name '" + opt.function + "' is not a C++ identifier");
    if (opt.sum_block == 0) throw value_error("deploy::generate_header: sum_block must be positive");
    ModelGen g;
    g.tn = std::is_same<T, float>::value ? "float" : "double";
    g.sum_block = opt.sum_block;
    return g;
}

/// The header up to and with namespace detail: the leading comment (usage: the functions' lines),
/// the guard and namespaces, the sizes, the helpers the layers use and their declarations.
template <class T>
std::string gen_prologue(const ModelGen& g, const CodegenOptions& opt, const std::vector<std::string>& ns, const std::string& usage,
                         const std::string& sizes) {
    std::string o;
    o += "// Generated by tapir " TAPIR_VERSION_STRING " (tapir::deploy::generate_header). Do not edit: regenerate.\n";
    o += "// Model: " + g.describe + ", " + g.tn + ".\n";
    if (!opt.comment.empty()) {
        std::string c = opt.comment;
        replace_all(c, "\n", "\n// ");
        o += "// " + c + "\n";
    }
    o += "//\n// Standalone: needs <cmath> and C++11; no exceptions, RTTI, heap or tapir.\n" + usage;
    o += "// Bitwise tapir's outputs when TAPIR_GEN_FMA is 1 (fused multiply-adds; the default when\n";
    o += "// the target has FMA); LSTM/GRU gates are bitwise when this file and tapir contract a * b + c\n";
    o += "// alike (-ffp-contract=off against a tapir built without FMA), else within 1e-6. 0: up to rounding.\n";
    o += header_open(include_guard(opt, ns), ns) + sizes;
    std::string helpers = math_helpers<T>(g.uses_poly);
    if (g.uses_conv) helpers += gen_conv_helpers();
    if (g.uses_pool) helpers += gen_pool_helpers();
    if (g.uses_int8) helpers += gen_int8_helpers();
    if (g.uses_int8_conv) helpers += gen_int8_conv_helpers();
    helpers += g.fixed;
    if (g.uses_fixed_conv) helpers += gen_fixed_conv_helpers();
    replace_all(helpers, "@T@", g.tn);
    return o + "\nnamespace detail {\n\n" + helpers + "\n" + g.decls + "} // namespace detail\n\n";
}

inline std::string gen_epilogue(const CodegenOptions& opt, const std::vector<std::string>& ns) {
    std::string o;
    for (std::size_t i = ns.size(); i-- > 0;) o += "} // namespace " + ns[i] + "\n";
    return o + "\n#endif // " + include_guard(opt, ns) + "\n";
}

template <class M, std::size_t... I>
void gen_layers(ModelGen& g, const M& model, std::index_sequence<I...>) {
    (gen_layer(g, std::to_string(I), model.template layer<I>()), ...);
}

template <class L>
struct is_recurrent : std::false_type {};
template <class T, Cell C, std::size_t In, std::size_t Hidden, std::size_t Steps, bool Sequences>
struct is_recurrent<RecurrentT<T, C, In, Hidden, Steps, Sequences>> : std::true_type {};

} // namespace detail

/// The header text for a ModelT (model.hpp): predict and predict_batch as for an MLP, and, when
/// the first layer is an LSTM or GRU, predict_step (one time step on a state the caller keeps)
/// and, when it returns its last h and more layers follow, predict_head (those layers on h).
template <class T, class... Layers>
std::string generate_header(const ModelT<T, Layers...>& model, const CodegenOptions& opt = CodegenOptions{}) {
    using M = ModelT<T, Layers...>;
    using First = std::tuple_element_t<0, typename M::layers_type>;
    const std::vector<std::string> ns = detail::split_namespace(opt.name_space);
    detail::ModelGen g = detail::start_gen<T>(opt);
    detail::gen_layers(g, model, std::index_sequence_for<Layers...>{});
    const std::string& tn = g.tn;
    const std::string& fn = opt.function;

    std::string usage = "//   " + fn + "(x, y)            x: n_inputs values, y: n_outputs values\n";
    usage += "//   " + fn + "_batch(x, y, n)   n samples, row-major\n";
    std::string sizes = "\nconstexpr int n_inputs = " + std::to_string(M::inputs) + ";\n";
    sizes += "constexpr int n_outputs = " + std::to_string(M::outputs) + ";\n";
    if constexpr (detail::is_recurrent<First>::value) {
        usage += "//   " + fn + "(x, mask, y)      a variable-length sequence: mask one value per step, 0 skips the step\n";
        usage += "//   " + fn + "_step(x, state)   one time step: x n_step_inputs values, state n_state values (zeros at the start)\n";
        if (!First::return_sequences && M::num_layers > 1) usage += "//   " + fn + "_head(state, y)    the layers after the recurrent one, on h\n";
        sizes += "constexpr int n_step_inputs = " + std::to_string(First::input_size) + ";\n";
        sizes += "constexpr int n_state = " + std::to_string(First::state_size) + ";\n";
    }
    std::string o = detail::gen_prologue<T>(g, opt, ns, usage, sizes);

    constexpr std::size_t outs[] = {Layers::out_size...};
    const auto chain = [&](std::size_t from, const std::string& input) {
        std::string b, in = input;
        for (std::size_t i = from; i < M::num_layers; ++i) {
            const std::string id = std::to_string(i);
            const bool last = i + 1 == M::num_layers;
            const std::string out = last ? "y" : "h" + id;
            if (!last) b += "    " + tn + " " + out + "[" + std::to_string(outs[i]) + "];\n";
            b += "    detail::layer" + id + "(" + in + ", " + out + ");\n";
            in = out;
        }
        return b;
    };
    o += "/// One sample: x (n_inputs values) -> y (n_outputs values).\n";
    o += "inline void " + fn + "(const " + tn + "* x, " + tn + "* y) noexcept {\n" + chain(0, "x") + "}\n\n";
    o += "/// n samples, row-major: x (n x n_inputs) -> y (n x n_outputs).\n";
    o += "inline void " + fn + "_batch(const " + tn + "* x, " + tn + "* y, long n) noexcept {\n";
    o += "    for (long i = 0; i < n; ++i) " + fn + "(x + i * n_inputs, y + i * n_outputs);\n}\n\n";
    if constexpr (detail::is_recurrent<First>::value) {
        o += "/// One time step of the first layer: state (n_state values, zeros at the start) advanced by x (n_step_inputs values).\n";
        o += "inline void " + fn + "_step(const " + tn + "* x, " + tn + "* state) noexcept { detail::step0(x, state); }\n\n";
        o += "/// One variable-length sequence: mask (one value per step, 1 present, 0 absent) as the trained layer's mask.\n";
        o += "inline void " + fn + "(const " + tn + "* x, const " + tn + "* mask, " + tn + "* y) noexcept {\n";
        const std::string first_out = M::num_layers == 1 ? "y" : "h0";
        if (M::num_layers > 1) o += "    " + tn + " h0[" + std::to_string(outs[0]) + "];\n";
        o += "    detail::layer0_masked(x, mask, " + first_out + ");\n" + (M::num_layers > 1 ? chain(1, "h0") : std::string()) + "}\n\n";
        if (!First::return_sequences && M::num_layers > 1) {
            o += "/// The layers after the recurrent one on the state's h: after the last step, " + fn + "(sequence) is " + fn + "_head(state).\n";
            o += "inline void " + fn + "_head(const " + tn + "* state, " + tn + "* y) noexcept {\n" + chain(1, "state") + "}\n\n";
        }
    }
    return o + detail::gen_epilogue(opt, ns);
}

namespace detail {

/// The header of a set model (DeepSetT, EnergyFlowT): phi and rho as functions, then the pooling
/// between them as SetModel::pool_forward writes it, one particle at a time (phi is per row, so
/// its rows batched or not give the same bits; the sum goes in particle order from zero). With
/// energy weights (EFN) a particle of zero weight is skipped; without (PFN) a masked one is.
template <class T, std::size_t N, class Phi, class Rho>
std::string generate_set_header(const SetModel<T, N, Phi, Rho>& model, bool efn, bool mean, const CodegenOptions& opt) {
    const std::vector<std::string> ns = split_namespace(opt.name_space);
    ModelGen g = start_gen<T>(opt);
    gen_mlp(g, "phi", model.phi, std::make_index_sequence<Phi::num_layers>{});
    gen_mlp(g, "rho", model.rho, std::make_index_sequence<Rho::num_layers>{});
    const std::size_t F = efn ? Phi::inputs + 1 : Phi::inputs, L = Phi::outputs;
    const std::string& tn = g.tn;
    const std::string& fn = opt.function;
    const auto s = [](std::size_t v) { return std::to_string(v); };
    g.describe = std::string(efn ? "EnergyFlow(" : "DeepSet(") + s(N) + " particles x " + s(F) + ", phi " + s(Phi::inputs) + " -> " + s(L) +
                 (efn ? ", energy-weighted sum" : (mean ? ", masked mean" : ", masked sum")) + ", rho " + s(L) + " -> " + s(Rho::outputs) + ")";
    std::string usage = "//   " + fn + "(x, mask, y)      x: n_particles x n_features, mask: n_particles values (0: padding), y: n_outputs\n";
    if (efn) usage += "//   " + fn + "(x, y)            every particle as given (padding has energy fraction 0)\n";
    const std::string sizes = "\nconstexpr int n_particles = " + s(N) + ";\nconstexpr int n_features = " + s(F) +
                              ";\nconstexpr int n_inputs = " + s(N * F) + ";\nconstexpr int n_outputs = " + s(Rho::outputs) + ";\n";
    std::string o = gen_prologue<T>(g, opt, ns, usage, sizes);
    o += "/// One event: x (n_particles x n_features), mask (n_particles values, 1 real, 0 padding" + std::string(efn ? "; may be null" : "") +
         ") -> y (n_outputs values).\n";
    o += "inline void " + fn + "(const " + tn + "* x, const " + tn + "* mask, " + tn + "* y) noexcept {\n";
    o += "    " + tn + " pooled[" + s(L) + "];\n    " + tn + " h[" + s(L) + "];\n";
    o += "    for (int j = 0; j < " + s(L) + "; ++j) pooled[j] = " + tn + "(0);\n";
    if (mean) o += "    int count = 0;\n";
    o += "    for (int i = 0; i < " + s(N) + "; ++i) {\n";
    o += "        const " + tn + "* xi = x + i * " + s(F) + ";\n";
    if (efn) {
        o += "        const " + tn + " z = mask ? xi[0] * mask[i] : xi[0];\n";
        o += "        if (z == " + tn + "(0)) continue;\n";
        o += "        detail::phi(xi + 1, h);\n";
        o += "        for (int j = 0; j < " + s(L) + "; ++j) pooled[j] += z * h[j];\n    }\n";
    } else {
        o += "        if (mask[i] == " + tn + "(0)) continue;\n";
        if (mean) o += "        ++count;\n";
        o += "        detail::phi(xi, h);\n";
        o += "        for (int j = 0; j < " + s(L) + "; ++j) pooled[j] += h[j];\n    }\n";
        if (mean) {
            o += "    const " + tn + " inv = count ? " + tn + "(1) / static_cast<" + tn + ">(count) : " + tn + "(0);\n";
            o += "    for (int j = 0; j < " + s(L) + "; ++j) pooled[j] = pooled[j] * inv;\n";
        }
    }
    o += "    detail::rho(pooled, y);\n}\n\n";
    if (efn) o += "/// One event, every particle as given.\ninline void " + fn + "(const " + tn + "* x, " + tn + "* y) noexcept { " + fn + "(x, nullptr, y); }\n\n";
    return o + gen_epilogue(opt, ns);
}

} // namespace detail

/// The header text for an EFN (EnergyFlowT): predict(x, mask, y) and predict(x, y) as its forward.
template <class T, std::size_t N, class Phi, class Rho>
std::string generate_header(const EnergyFlowT<T, N, Phi, Rho>& model, const CodegenOptions& opt = CodegenOptions{}) {
    return detail::generate_set_header(model, true, false, opt);
}

/// The header text for a PFN (DeepSetT): predict(x, mask, y) as its forward.
template <class T, std::size_t N, class Phi, class Rho, bool Mean>
std::string generate_header(const DeepSetT<T, N, Phi, Rho, Mean>& model, const CodegenOptions& opt = CodegenOptions{}) {
    return detail::generate_set_header(model, false, Mean, opt);
}

/// Writes generate_header(model, opt) to path (a ModelT, EnergyFlowT or DeepSetT); throws format_error naming the file on failure.
template <class M>
auto write_header(const std::string& path, const M& model, const CodegenOptions& opt = CodegenOptions{})
    -> decltype(generate_header(model, opt), void()) {
    detail::write_text(path, generate_header(model, opt));
}

} // namespace tapir::deploy
