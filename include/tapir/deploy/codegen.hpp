#pragma once
/// Code generation: one standalone C++ header per trained model, for firmware and trigger code
/// bases (in the spirit of hls4ml and TMVA SOFIE). The header holds the weights as constexpr
/// arrays and one function; it includes only `<cmath>`, needs C++11, and uses no exceptions, no
/// RTTI, no heap and no tapir:
///
///     auto spec = tapir::deploy::spec_from(trained);
///     tapir::deploy::CodegenOptions opt;
///     opt.name_space = "higgs";
///     tapir::deploy::write_header("higgs_classifier.hpp", spec, opt);
///
///     // in the trigger code:
///     #include "higgs_classifier.hpp"
///     float y[higgs::n_outputs];
///     higgs::predict(x, y);                       // x: higgs::n_inputs raw features
///
/// The generated code sums in tapir's order (one multiply-add chain per output, restarted every
/// CodegenOptions::sum_block terms) and computes tanh and sigmoid with the polynomials of tapir::simd, using table
/// powers of two instead of libm: with fused multiply-adds (TAPIR_GEN_FMA, on by default when
/// the target has FMA: __FMA__, aarch64) its outputs are bitwise tapir's on AVX2/AVX-512/NEON,
/// on any compiler and libm; without, they differ by rounding only.

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "../io/text.hpp"
#include "../simd/vmath.hpp"
#include "convert.hpp"
#include "fixed.hpp"

namespace tapir::deploy {

struct CodegenOptions {
    /// Namespace of everything generated ("a::b" nests); must be a C++ identifier path.
    std::string name_space = "tapir_model";
    /// Name of the batch-1 function; "<function>_batch" is the batched one.
    std::string function = "predict";
    /// Include guard; empty: derived from the namespace.
    std::string include_guard;
    /// Free text for the header's leading comment (model name, training run, ...).
    std::string comment;
    /// Longest multiply-add chain before the sum restarts, as tapir's GEMM does for long sums
    /// (Mlp::sum_block: 256 for the scalar and NEON kernels, 384 or 512 for AVX2/AVX-512).
    /// Only layers with more inputs than this are affected.
    std::size_t sum_block = 256;
};

namespace detail {

inline bool is_identifier(const std::string& s) {
    if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
    for (char c : s)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
    return true;
}

inline std::vector<std::string> split_namespace(const std::string& ns) {
    const std::vector<std::string> parts = io::split(ns, "::");
    for (const auto& p : parts)
        if (!is_identifier(p))
            throw value_error("deploy::generate_header: namespace '" + ns + "' is not a C++ identifier path (part '" + p + "')");
    return parts;
}

/// Shortest round-trip decimal of a finite value as a C++ literal of type T (locale-independent).
template <class T>
std::string literal(T v) {
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof buf, v);
    std::string s(buf, res.ptr);
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    if (std::is_same<T, float>::value) s += 'f';
    return s;
}

/// decl = {values} for a rows x cols array, per_line values a line, each written by text(v).
template <class T, class Text>
void emit_values(std::string& out, const std::string& decl, const T* v, std::size_t rows, std::size_t cols, std::size_t per_line, Text text) {
    out += decl + " = {";
    for (std::size_t r = 0; r < rows; ++r) {
        if (rows > 1) out += r ? ",\n    {" : "\n    {";
        for (std::size_t c = 0; c < cols; ++c) {
            if (c) out += (c % per_line == 0) ? ",\n     " : ", ";
            out += text(v[r * cols + c]);
        }
        if (rows > 1) out += "}";
    }
    out += "};\n";
}

template <class T>
void emit_array(std::string& out, const std::string& decl, const T* v, std::size_t rows, std::size_t cols) {
    emit_values(out, decl, v, rows, cols, 8, [](T x) { return literal(x); });
}

/// The helpers, written once for T (replacing @T@): multiply-add, the blocked dense kernel,
/// and tanh/sigmoid as simd/vmath.hpp's tanh_v/sigmoid_v (simd/activation.hpp) on one lane,
/// operation by operation, with simd::math_constants' numbers; test_codegen.cpp compiles the
/// output and checks it bitwise against the library on every instruction set.
inline const char* gen_dense_helpers() {
    return R"(#if TAPIR_GEN_FMA
inline @T@ mad(@T@ a, @T@ b, @T@ c) noexcept { return std::fma(a, b, c); }
#else
inline @T@ mad(@T@ a, @T@ b, @T@ c) noexcept { return a * b + c; }
#endif

/// y = x W + b: per output one multiply-add chain over k in order, restarted every KB terms
/// and the partial sums added in order (tapir's GEMM blocking), then the bias.
template <int K, int N, int KB>
inline void dense(const @T@* x, const @T@ (&w)[K][N], const @T@ (&b)[N], @T@* y) noexcept {
    @T@ part[N];
    for (int k0 = 0; k0 < K; k0 += KB) {
        const int k1 = k0 + KB < K ? k0 + KB : K;
        for (int j = 0; j < N; ++j) part[j] = @T@(0);
        for (int k = k0; k < k1; ++k) {
            const @T@ xk = x[k];
            for (int j = 0; j < N; ++j) part[j] = mad(xk, w[k][j], part[j]);
        }
        for (int j = 0; j < N; ++j) y[j] = k0 == 0 ? part[j] : part[j] + y[j];
    }
    for (int j = 0; j < N; ++j) y[j] = y[j] + b[j];
}
)";
}

inline const char* gen_exp_helpers() {
    return R"(
/// Powers of two 2^(n - pow2_bias) for the exponent range the reductions below produce.
@POW2@

inline void reduce_ln2(@T@ y, @T@& n, @T@& r) noexcept {
    n = mad(y, @LOG2E@, @SHIFTER@) - @SHIFTER@;
    r = mad(-n, @LN2HI@, y);
    r = mad(-n, @LN2LO@, r);
}
/// e^r - 1 for |r| <= ln2/2: r + r^2 (1/2! + r (1/3! + ...)).
inline @T@ expm1_reduced(@T@ r) noexcept {
    @T@ q = @FACT_TOP@;
@HORNER@    return mad(r * r, q, r);
}
inline @T@ pow2(@T@ n) noexcept { return pow2_table[static_cast<int>(n) + pow2_bias]; }
inline @T@ exp_poly(@T@ x) noexcept {
    if (x != x) return x + x;
    @T@ xc = x > @EXPLO@ ? x : @EXPLO@;
    xc = xc < @EXPHI@ ? xc : @EXPHI@;
    @T@ n, r;
    reduce_ln2(xc, n, r);
    const @T@ p = expm1_reduced(r) + @T@(1);
    const @T@ n1 = mad(n, @T@(0.5), @SHIFTER@) - @SHIFTER@;
    const @T@ n2 = n - n1;
    return (p * pow2(n1)) * pow2(n2);
}
inline @T@ tanh_poly(@T@ x) noexcept {
    if (x != x) return x + x;
    @T@ a = std::fabs(x);
    a = a < @TANHCLAMP@ ? a : @TANHCLAMP@;
    @T@ n, r;
    reduce_ln2(a + a, n, r);
    const @T@ s = pow2(n);
    const @T@ em = mad(s, expm1_reduced(r), s - @T@(1));
    const @T@ t = em / (em + @T@(2));
    return std::signbit(x) ? -t : t;
}
inline @T@ sigmoid_poly(@T@ x) noexcept {
    if (x != x) return x + x;
    const @T@ e = exp_poly(-std::fabs(x));
    return (std::signbit(x) ? e : @T@(1)) / (@T@(1) + e);
}
)";
}

inline void replace_all(std::string& s, const std::string& from, const std::string& to) {
    for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
}

template <class T>
std::string act_expr(Activation a, T alpha, const std::string& v) {
    switch (a) {
    case Activation::none: return v;
    case Activation::relu: return "(" + literal(T(0)) + " > " + v + " ? " + literal(T(0)) + " : " + v + ")";
    case Activation::leaky_relu: return "(" + v + " > " + literal(T(0)) + " ? " + v + " : " + literal(alpha) + " * " + v + ")";
    case Activation::elu: return "(" + v + " > " + literal(T(0)) + " ? " + v + " : " + literal(alpha) + " * std::expm1(" + v + "))";
    case Activation::tanh: return "tanh_poly(" + v + ")";
    case Activation::sigmoid: return "sigmoid_poly(" + v + ")";
    case Activation::softplus:
        return "((" + v + " > " + literal(T(0)) + " ? " + v + " : " + literal(T(0)) + ") + std::log1p(std::exp(-std::fabs(" + v + "))))";
    }
    return v;
}

/// The helpers of a generated header for T: mad and dense, and with uses_poly the exp, tanh and
/// sigmoid polynomials with their power-of-two table.
template <class T>
std::string math_helpers(bool uses_poly) {
    const std::string tn = std::is_same<T, float>::value ? "float" : "double";
    const auto lit = [](auto v) { return literal(static_cast<T>(v)); };
    std::string helpers = gen_dense_helpers();
    if (uses_poly) {
        using C = simd::math_constants<T>;
        std::string e = gen_exp_helpers();
        // 2^n for n in [lo, hi]: exp's two half exponents and tanh's expm1 exponent.
        const int lo = static_cast<int>(std::floor(static_cast<double>(C::exp_lo) * static_cast<double>(C::log2e) / 2.0)) - 2;
        const int hi = static_cast<int>(std::ceil(static_cast<double>(C::exp_hi) * static_cast<double>(C::log2e) / 2.0)) + 2;
        const int hi_t = static_cast<int>(std::ceil(2.0 * static_cast<double>(C::tanh_clamp) * static_cast<double>(C::log2e))) + 2;
        const int top = hi > hi_t ? hi : hi_t;
        std::vector<T> p2;
        for (int n = lo; n <= top; ++n) p2.push_back(static_cast<T>(std::ldexp(1.0, n)));
        std::string table = "constexpr int pow2_bias = " + std::to_string(-lo) + ";\n";
        emit_array(table, "constexpr @T@ pow2_table[" + std::to_string(p2.size()) + "]", p2.data(), 1, p2.size());
        table.pop_back();
        replace_all(e, "@POW2@", table);
        std::string horner;
        for (int k = C::exp_terms - 2; k >= 2; --k) horner += "    q = mad(q, r, " + lit(simd::inv_factorial<T>(k)) + ");\n";
        replace_all(e, "@HORNER@", horner);
        replace_all(e, "@FACT_TOP@", lit(simd::inv_factorial<T>(C::exp_terms - 1)));
        replace_all(e, "@LOG2E@", lit(C::log2e));
        replace_all(e, "@SHIFTER@", lit(C::shifter));
        replace_all(e, "@LN2HI@", lit(C::ln2_hi));
        replace_all(e, "@LN2LO@", lit(C::ln2_lo));
        replace_all(e, "@EXPLO@", lit(C::exp_lo));
        replace_all(e, "@EXPHI@", lit(C::exp_hi));
        replace_all(e, "@TANHCLAMP@", lit(C::tanh_clamp));
        helpers += e;
    }
    replace_all(helpers, "@T@", tn);
    return helpers;
}

/// The include guard: opt.include_guard, or one derived from the namespace parts.
inline std::string include_guard(const CodegenOptions& opt, const std::vector<std::string>& ns) {
    std::string guard = opt.include_guard;
    if (guard.empty()) {
        guard = "TAPIR_GENERATED_";
        for (const auto& p : ns) guard += p + "_";
        for (char& c : guard) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        guard += "HPP";
    }
    if (!is_identifier(guard)) throw value_error("deploy::generate_header: include guard '" + guard + "' is not an identifier");
    return guard;
}

/// The include guard, cmath, the TAPIR_GEN_FMA default and the opened namespaces.
inline std::string header_open(const std::string& guard, const std::vector<std::string>& ns) {
    std::string o;
    o += "#ifndef " + guard + "\n#define " + guard + "\n\n#include <cmath>\n\n";
    o += "#ifndef TAPIR_GEN_FMA\n#if defined(__FMA__) || defined(__aarch64__) || defined(__ARM_FEATURE_FMA)\n"
         "#define TAPIR_GEN_FMA 1\n#else\n#define TAPIR_GEN_FMA 0\n#endif\n#endif\n\n";
    for (const auto& p : ns) o += "namespace " + p + " {\n";
    return o;
}

/// Writes a generated header's text to path; throws format_error naming the file on failure.
inline void write_text(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!f) throw format_error("deploy::write_header: cannot open '" + path + "' for writing");
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    f.close();
    if (!f) throw format_error("deploy::write_header: error writing '" + path + "'");
}

} // namespace detail

/// The header text for a float or double model.
template <class T>
std::string generate_header(const ModelSpec<T>& spec, const CodegenOptions& opt = CodegenOptions{}) {
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "generate_header: float or double");
    spec.validate();
    const std::vector<std::string> ns = detail::split_namespace(opt.name_space);
    if (!detail::is_identifier(opt.function))
        throw value_error("deploy::generate_header: function name '" + opt.function + "' is not a C++ identifier");
    const std::string guard = detail::include_guard(opt, ns);
    if (opt.sum_block == 0) throw value_error("deploy::generate_header: sum_block must be positive");
    const std::string tn = std::is_same<T, float>::value ? "float" : "double";
    const std::size_t nl = spec.layers.size();

    bool uses_poly = false;
    for (const auto& l : spec.layers) uses_poly |= l.act == Activation::tanh || l.act == Activation::sigmoid;

    std::string o;
    o += "// Generated by tapir " TAPIR_VERSION_STRING " (tapir::deploy::generate_header). Do not edit: regenerate.\n";
    o += "// Model: " + spec.describe() + ", " + tn + (spec.has_input_scaling() ? ", inputs standardised inside" : "") + ".\n";
    if (!opt.comment.empty()) {
        std::string c = opt.comment;
        detail::replace_all(c, "\n", "\n// ");
        o += "// " + c + "\n";
    }
    o += "//\n// Standalone: needs <cmath> and C++11; no exceptions, RTTI, heap or tapir.\n";
    o += "//   " + opt.function + "(x, y)            x: n_inputs values, y: n_outputs values\n";
    o += "//   " + opt.function + "_batch(x, y, n)   n events, row-major\n";
    o += "// Bitwise tapir's outputs when TAPIR_GEN_FMA is 1 (fused multiply-adds; the default when\n";
    o += "// the target has FMA); 0 gives the same up to rounding.\n";
    o += detail::header_open(guard, ns);
    o += "\nconstexpr int n_inputs = " + std::to_string(spec.inputs()) + ";\n";
    o += "constexpr int n_outputs = " + std::to_string(spec.outputs()) + ";\n\nnamespace detail {\n\n";

    o += detail::math_helpers<T>(uses_poly) + "\n";

    if (spec.has_input_scaling()) {
        detail::emit_array(o, "constexpr double input_mean[" + std::to_string(spec.inputs()) + "]", spec.input_mean.data(), 1,
                           spec.inputs());
        detail::emit_array(o, "constexpr double input_scale[" + std::to_string(spec.inputs()) + "]", spec.input_scale.data(), 1,
                           spec.inputs());
        o += "\n";
    }
    for (std::size_t i = 0; i < nl; ++i) {
        const DenseSpec<T>& l = spec.layers[i];
        const std::string k = std::to_string(l.in), n = std::to_string(l.out), id = std::to_string(i);
        o += "// layer " + id + ": " + k + " -> " + n + ", " + activation_name(l.act) + "\n";
        detail::emit_array(o, "constexpr " + tn + " w" + id + "[" + k + "][" + n + "]", l.weight.data(), l.in, l.out);
        const std::vector<T> b = l.bias.empty() ? std::vector<T>(l.out, T(0)) : l.bias;
        detail::emit_array(o, "constexpr " + tn + " b" + id + "[" + n + "]", b.data(), 1, l.out);
        o += "\n";
    }
    o += "} // namespace detail\n\n";

    o += "/// One event: x (n_inputs values) -> y (n_outputs values).\n";
    o += "inline void " + opt.function + "(const " + tn + "* x, " + tn + "* y) noexcept {\n";
    std::string in = "x";
    if (spec.has_input_scaling()) {
        o += "    " + tn + " z[n_inputs];\n";
        o += "    for (int i = 0; i < n_inputs; ++i)\n";
        o += "        z[i] = static_cast<" + tn + ">((static_cast<double>(x[i]) - detail::input_mean[i]) / detail::input_scale[i]);\n";
        in = "z";
    }
    for (std::size_t i = 0; i < nl; ++i) {
        const DenseSpec<T>& l = spec.layers[i];
        const std::string id = std::to_string(i), n = std::to_string(l.out);
        const bool last = i + 1 == nl;
        const std::string out = last ? "y" : "h" + id;
        if (!last) o += "    " + tn + " " + out + "[" + n + "];\n";
        o += "    detail::dense<" + std::to_string(l.in) + ", " + n + ", " + std::to_string(simd::gemm_k_block(l.in, opt.sum_block)) + ">(" + in +
             ", detail::w" + id + ", detail::b" + id + ", " + out + ");\n";
        if (l.act != Activation::none) {
            const std::string e = detail::act_expr(l.act, l.alpha, out + "[j]");
            o += "    for (int j = 0; j < " + n + "; ++j) " + out + "[j] = " + (l.act == Activation::tanh || l.act == Activation::sigmoid ? "detail::" : "") + e + ";\n";
        }
        in = out;
    }
    o += "}\n\n";
    o += "/// n events, row-major: x (n x n_inputs) -> y (n x n_outputs).\n";
    o += "inline void " + opt.function + "_batch(const " + tn + "* x, " + tn + "* y, long n) noexcept {\n";
    o += "    for (long i = 0; i < n; ++i) " + opt.function + "(x + i * n_inputs, y + i * n_outputs);\n}\n\n";
    for (std::size_t i = ns.size(); i-- > 0;) o += "} // namespace " + ns[i] + "\n";
    o += "\n#endif // " + guard + "\n";
    return o;
}

/// Writes generate_header(spec, opt) to path; throws format_error naming the file on failure.
template <class T>
void write_header(const std::string& path, const ModelSpec<T>& spec, const CodegenOptions& opt = CodegenOptions{}) {
    detail::write_text(path, generate_header(spec, opt));
}

} // namespace tapir::deploy
