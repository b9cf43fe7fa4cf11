#pragma once
/// Compile-time-sized inference for trained MLPs: Mlp<float, 8, 24, 16, 8, 1>.
///
/// Built for trigger and embedded code: forward() is const, noexcept, allocates nothing (weights
/// live inside the object, scratch on the stack), shares no mutable state (thread-safe), and this
/// header compiles with -fno-exceptions -fno-rtti (as simd/ does, whose instruction-set detection,
/// vector wrappers, math and activations it uses); conversion from a dynamic model or a model file
/// (with error messages) is in convert.hpp.
///
/// Numbers: each output is act(sum_p x[p] W[p][j] + b[j]) with the sum a chain of fused
/// multiply-adds in increasing p, exactly the order of tapir::simd::gemm (including its split of
/// long sums into blocks, 256 to 512 terms by kernel family), then the bias, then the
/// activation (simd/activation.hpp, the dynamic model's). On the same instruction set the
/// outputs are therefore bitwise those of the dynamic model's dense op.
///
/// Kernels: simd's families (AVX-512 and AVX2+FMA by target attributes, chosen at run time, no
/// -march needed; NEON on aarch64; a portable scalar path), through simd::dispatch_to. Large models (3 x 256 is 0.5 MB
/// of weights) belong in static storage or on the heap, not on a small stack.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../simd/activation.hpp"
#include "../simd/isa.hpp"
#include "../simd/vec.hpp"

TAPIR_SIMD_DIAG_PUSH

namespace tapir::deploy {

/// Outcome of loading or configuring a model (no exceptions in this header).
enum class Status : std::uint8_t { ok, layer_count, shape, null_pointer, non_finite, bad_scale, unsupported_isa, no_calibration, bad_coverage };

inline const char* status_message(Status s) noexcept {
    switch (s) {
    case Status::ok: return "ok";
    case Status::layer_count: return "the number of layers differs from the model's";
    case Status::shape: return "a layer's input or output size differs from the model's";
    case Status::null_pointer: return "a weight or bias pointer is null";
    case Status::non_finite: return "a weight, bias or scale is NaN or infinite";
    case Status::bad_scale: return "an input scale is not positive";
    case Status::unsupported_isa: return "this CPU or build does not support the requested instruction set";
    case Status::no_calibration: return "int8 calibration needs at least one sample";
    case Status::bad_coverage: return "the calibration coverage must be in (0, 1]";
    }
    return "?";
}

/// One trained dense layer, read-only: weight (in x out, row-major, as tapir::nn::Dense and Keras
/// store it), bias (out values, or null for none), activation and its alpha (leaky slope, ELU scale).
template <class T>
struct LayerView {
    const T* weight = nullptr;
    const T* bias = nullptr;
    std::size_t in = 0, out = 0;
    Activation act = Activation::none;
    T alpha = T(0);
};

namespace detail {

constexpr std::size_t round_up(std::size_t x, std::size_t r) noexcept { return (x + r - 1) / r * r; }
constexpr std::size_t cmax(std::size_t a, std::size_t b) noexcept { return a > b ? a : b; }

template <class T>
inline bool finite(T x) noexcept {
    return x - x == x - x;
}

/// The checks every fixed-size layer makes of a LayerView: the sizes, then the weight pointer.
template <class T>
inline Status check_view_shape(const LayerView<T>& v, std::size_t in, std::size_t out) noexcept {
    if (v.in != in || v.out != out) return Status::shape;
    if (!v.weight) return Status::null_pointer;
    return Status::ok;
}
/// Whether every weight and bias (if any) of a LayerView whose sizes were checked is finite.
template <class T>
inline bool view_values_finite(const LayerView<T>& v) noexcept {
    for (std::size_t k = 0; k < v.in * v.out; ++k)
        if (!finite(v.weight[k])) return false;
    if (v.bias)
        for (std::size_t j = 0; j < v.out; ++j)
            if (!finite(v.bias[j])) return false;
    return true;
}

/// Single-output convenience shared by the models: the output of m for one event.
template <class M, class T>
inline T single_output(const M& m, const T* x) noexcept {
    T y[1];
    m.forward(x, y);
    return y[0];
}

/// Blocking per kernel family V (a simd wrapper): U1 vectors per pass at batch 1 (enough chains to
/// hide the FMA latency), R rows x UB vectors per pass in batches (weights loaded once for R rows);
/// KC is simd::gemm's K block depth, which decides where the dynamic model restarts its chains.
template <class V>
struct blocking {
    static constexpr std::size_t U1 = 8, R = 4;
    static constexpr std::size_t UB = (V::id == simd::isa::avx512 || V::id == simd::isa::neon) ? 4 : 2;
    static constexpr std::size_t KC = simd::gemm_kc(V::id, sizeof(typename V::value_type));
};

/// c[a][b] = a sum of K terms split as simd::gemm splits it (blocks of gemm_k_block depth):
/// chain(p0, p1, acc) sets acc to the sum over one block, a fresh multiply-add chain per lane;
/// the first block's goes straight into c, each further one is added in order. The dense and
/// the convolution kernels share it, so both restart their chains where the dynamic model does.
template <class V, std::size_t K, std::size_t A, std::size_t B, class Chain>
TAPIR_ALWAYS_INLINE void k_blocked_sum(Chain chain, typename V::reg (&c)[A][B]) noexcept {
    constexpr std::size_t kcb = simd::gemm_k_block(K, blocking<V>::KC);
    chain(std::size_t(0), kcb, c);
    for (std::size_t p0 = kcb; p0 < K; p0 += kcb) {
        typename V::reg acc[A][B];
        chain(p0, p0 + kcb < K ? p0 + kcb : K, acc);
#pragma GCC unroll 8
        for (std::size_t i = 0; i < A; ++i)
#pragma GCC unroll 16
            for (std::size_t j = 0; j < B; ++j) c[i][j] = V::add(acc[i][j], c[i][j]);
    }
}

/// acc[r][u] = sum_{p0 <= p < p1} x[r][p] W[p][u-th vector], one fused chain per lane in p order.
template <class V, class T, std::size_t R, std::size_t U>
TAPIR_ALWAYS_INLINE void dense_chain(const T* TAPIR_RESTRICT x, std::size_t ldx, const T* TAPIR_RESTRICT w, std::size_t ldw,
                                     std::size_t p0, std::size_t p1, typename V::reg (&acc)[R][U]) noexcept {
#pragma GCC unroll 4
    for (std::size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (std::size_t u = 0; u < U; ++u) acc[r][u] = V::zero();
    for (std::size_t p = p0; p < p1; ++p) simd::fma_broadcast<V>(x + p, ldx, w + p * ldw, acc);
}

/// y[r][0 .. U*W) = x[r][0 .. K) W[0 .. K)[same columns] + b for R rows: one fused chain per
/// output over each K block (simd::gemm's order), blocks added in order, then the bias.
template <class V, class T, std::size_t K, std::size_t R, std::size_t U>
TAPIR_ALWAYS_INLINE void dense_tile(const T* TAPIR_RESTRICT x, std::size_t ldx, const T* TAPIR_RESTRICT w, std::size_t ldw,
                                    const T* TAPIR_RESTRICT b, T* TAPIR_RESTRICT y, std::size_t ldy, bool relu) noexcept {
    using reg = typename V::reg;
    constexpr std::size_t W = V::W;
    reg c[R][U];
    k_blocked_sum<V, K>([&](std::size_t p0, std::size_t p1, reg (&acc)[R][U]) TAPIR_ALWAYS_INLINE_LAMBDA {
        dense_chain<V, T, R, U>(x, ldx, w, ldw, p0, p1, acc);
    }, c);
#pragma GCC unroll 4
    for (std::size_t r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (std::size_t u = 0; u < U; ++u) {
            reg v = V::add(c[r][u], V::load(b + u * W));
            if (relu) v = simd::activation_value<Activation::relu, V>(v, T(0));
            V::store(y + r * ldy + u * W, v);
        }
}

} // namespace detail

/// A dense layer with compile-time sizes: weight (In x Out, row-major, rows padded to a multiple
/// of 64 bytes with zeros), bias, activation.
template <class T, std::size_t In, std::size_t Out>
struct Dense {
    static_assert(In > 0 && Out > 0, "Dense: sizes must be positive");
    using value_type = T;
    static constexpr std::size_t in = In, out = Out;
    static constexpr std::size_t lanes = 64 / sizeof(T);
    static constexpr std::size_t out_padded = detail::round_up(Out, lanes);

    alignas(64) T weight[In][out_padded] = {};
    alignas(64) T bias[out_padded] = {};
    Activation act = Activation::none;
    T alpha = T(0);

    /// Weight element (p, j), as in the (in, out) trained matrix.
    T w(std::size_t p, std::size_t j) const noexcept { return weight[p][j]; }

    /// Whether v fits this layer (sizes, pointers, finite values).
    static Status check(const LayerView<T>& v) noexcept {
        const Status s = detail::check_view_shape(v, In, Out);
        if (s != Status::ok) return s;
        if (!detail::view_values_finite(v) || !detail::finite(v.alpha)) return Status::non_finite;
        return Status::ok;
    }

    Status set(const LayerView<T>& v) noexcept {
        const Status s = check(v);
        if (s != Status::ok) return s;
        for (std::size_t p = 0; p < In; ++p)
            for (std::size_t j = 0; j < out_padded; ++j) weight[p][j] = j < Out ? v.weight[p * Out + j] : T(0);
        for (std::size_t j = 0; j < out_padded; ++j) bias[j] = (v.bias && j < Out) ? v.bias[j] : T(0);
        act = v.act;
        alpha = v.alpha;
        return Status::ok;
    }

    /// This layer on R rows (x: R x In with leading dimension ldx) into y (R x out_padded).
    template <class V, std::size_t R>
    TAPIR_ALWAYS_INLINE void run(const T* x, std::size_t ldx, T* y) const noexcept {
        constexpr std::size_t W = V::W, nvec = (Out + W - 1) / W;
        constexpr std::size_t U = R == 1 ? detail::blocking<V>::U1 : detail::blocking<V>::UB;
        constexpr std::size_t U_ = U < nvec ? U : nvec;
        constexpr std::size_t full = nvec / U_;
        const bool relu = act == Activation::relu;
        for (std::size_t t = 0; t < full; ++t)
            detail::dense_tile<V, T, In, R, U_>(x, ldx, &weight[0][0] + t * U_ * W, out_padded, bias + t * U_ * W,
                                               y + t * U_ * W, out_padded, relu);
        for (std::size_t v = full * U_; v < nvec; ++v)
            detail::dense_tile<V, T, In, R, 1>(x, ldx, &weight[0][0] + v * W, out_padded, bias + v * W, y + v * W,
                                              out_padded, relu);
        // The R rows are contiguous and out_padded a whole number of vectors: one sweep.
        if (act != Activation::none && act != Activation::relu) simd::activate_on(V::id, act, y, y, R * out_padded, alpha);
    }
};

namespace detail {
/// The i-th of a pack of sizes.
template <std::size_t... S>
constexpr std::size_t size_at(std::size_t i) noexcept {
    constexpr std::size_t a[] = {S...};
    return a[i];
}

template <class T, std::size_t... S>
struct mlp_layers {
    template <std::size_t... I>
    static std::tuple<Dense<T, size_at<S...>(I), size_at<S...>(I + 1)>...> make(std::index_sequence<I...>);
    using type = decltype(make(std::make_index_sequence<sizeof...(S) - 1>{}));
};

/// The tuple of layers every fixed-size model holds, and access to each by index.
template <class Layers>
class layer_tuple {
public:
    using layers_type = Layers;

    template <std::size_t I>
    const std::tuple_element_t<I, Layers>& layer() const noexcept {
        return std::get<I>(layers_);
    }
    template <std::size_t I>
    std::tuple_element_t<I, Layers>& layer() noexcept {
        return std::get<I>(layers_);
    }

protected:
    Layers layers_{};
};

/// What the fixed-size models (Mlp, Int8Mlp, FixedMlp) share: the sizes, the tuple of layers,
/// the value type of their inputs and outputs, the optional input standardisation, and
/// all-or-nothing loading.
template <class Layers, class Value, std::size_t... S>
class model_base : public layer_tuple<Layers> {
    static_assert(sizeof...(S) >= 2, "deploy: a model needs at least the input and output sizes");

public:
    using value_type = Value;
    static constexpr std::size_t sizes[] = {S...};
    static constexpr std::size_t num_layers = sizeof...(S) - 1;
    static constexpr std::size_t inputs = size_at<S...>(0);
    static constexpr std::size_t outputs = size_at<S...>(sizeof...(S) - 1);

    /// Standardise inputs first: z = (x - mean) / scale (inputs values each). Null pointers turn it off.
    Status set_input_scaling(const double* mean, const double* scale) noexcept {
        if (!mean || !scale) {
            scaled_ = false;
            return Status::ok;
        }
        for (std::size_t i = 0; i < inputs; ++i) {
            if (!finite(mean[i]) || !finite(scale[i])) return Status::non_finite;
            if (!(scale[i] > 0.0)) return Status::bad_scale;
        }
        for (std::size_t i = 0; i < inputs; ++i) {
            mean_[i] = mean[i];
            scale_[i] = scale[i];
        }
        scaled_ = true;
        return Status::ok;
    }
    bool input_scaling() const noexcept { return scaled_; }
    const double* input_mean() const noexcept { return mean_; }
    const double* input_scale() const noexcept { return scale_; }

protected:
    /// count layers from views (null: null_pointer): check(index) for every layer first, then
    /// set(index) for each, index a std::integral_constant; the model is unchanged on a failed check.
    template <class Check, class Set>
    Status load_layers(std::size_t count, const void* views, Check check, Set set) noexcept {
        if (count != num_layers) return Status::layer_count;
        if (!views) return Status::null_pointer;
        const Status s = each<0>(check);
        return s != Status::ok ? s : each<0>(set);
    }

    /// load_layers for layers that take one LayerView each (Layer::check, then set).
    template <class V>
    Status load_views(const LayerView<V>* views, std::size_t count) noexcept {
        return load_layers(
            count, views, [&](auto i) { return std::tuple_element_t<i, Layers>::check(views[i]); },
            [&](auto i) { return std::get<i>(this->layers_).set(views[i]); });
    }

    /// Input i standardised, (v - mean) / scale in double (as tapir::StandardScaler::transform).
    double standardise(std::size_t i, double v) const noexcept { return (v - mean_[i]) / scale_[i]; }

private:
    double mean_[inputs] = {};
    double scale_[inputs] = {};
    bool scaled_ = false;

    template <std::size_t I, class F>
    static Status each(F& f) noexcept {
        if constexpr (I == num_layers) {
            return Status::ok;
        } else {
            const Status s = f(std::integral_constant<std::size_t, I>{});
            return s != Status::ok ? s : each<I + 1>(f);
        }
    }
};
} // namespace detail

/// A multilayer perceptron of compile-time sizes: Mlp<float, 8, 24, 16, 8, 1> has inputs 8,
/// hidden layers 24, 16, 8 and one output. Activations come with the loaded weights.
///
///     static tapir::deploy::Mlp<float, 8, 24, 16, 8, 1> net;      // or from deploy::to_fixed()
///     net.load(views, 4);                                           // Status::ok
///     float x[8] = {...}, y[1];
///     net.forward(x, y);                                            // batch 1
///     net.forward(xs, ys, n);                                       // n rows, row-major
///
/// Optional input standardisation z = (x - mean) / scale is computed in double and rounded to T,
/// exactly as tapir::data::StandardScaler::transform.
template <class T, std::size_t... S>
class Mlp : public detail::model_base<typename detail::mlp_layers<T, S...>::type, T, S...> {
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "Mlp: float or double");
    using base = detail::model_base<typename detail::mlp_layers<T, S...>::type, T, S...>;
    using base::layers_;

public:
    using typename base::layers_type;
    using base::inputs, base::num_layers, base::outputs;

    Mlp() noexcept : isa_(simd::detected_isa()) {}

    /// Copies trained layers in (count must be num_layers; sizes must match). All or nothing:
    /// on an error the model is unchanged.
    Status load(const LayerView<T>* views, std::size_t count) noexcept { return this->load_views(views, count); }

    /// Kernel family used by forward (simd::detected_isa() by default).
    simd::isa isa() const noexcept { return isa_; }
    Status set_isa(simd::isa i) noexcept {
        if (!simd::isa_supported(i)) return Status::unsupported_isa;
        isa_ = i;
        return Status::ok;
    }

    /// Longest multiply-add chain of a kernel family before it restarts (simd::gemm's K block).
    static std::size_t sum_block(simd::isa i) noexcept {
#if !TAPIR_SIMD_X86
        if (i == simd::isa::avx2 || i == simd::isa::avx512) i = simd::isa::scalar; // not in this build
#endif
        return simd::gemm_kc(i, sizeof(T));
    }

    /// One event: x (inputs values) -> y (outputs values).
    void forward(const T* x, T* y) const noexcept { forward(x, y, 1); }

    /// n events, row-major: x (n x inputs) -> y (n x outputs).
    void forward(const T* x, T* y, std::size_t n) const noexcept {
        simd::dispatch_to<forward_kernel>(isa_, this, x, y, n);
    }

    /// Single-output convenience: the output for one event.
    T operator()(const T* x) const noexcept {
        static_assert(outputs == 1, "Mlp::operator(): the model has several outputs, use forward(x, y)");
        return detail::single_output(*this, x);
    }

private:
    /// The forward pass as a simd kernel: compiled once per instruction set.
    struct forward_kernel {
        using value_type = T;
        template <class V>
        static TAPIR_ALWAYS_INLINE void run(const Mlp* m, const T* x, T* y, std::size_t n) noexcept {
            m->template run_with<V>(x, y, n);
        }
    };

    /// Widest row a layer reads or writes, padded: the ping-pong scratch size.
    static constexpr std::size_t max_width() noexcept {
        std::size_t m = detail::round_up(inputs, 64 / sizeof(T));
        for (std::size_t i = 1; i <= num_layers; ++i) m = detail::cmax(m, detail::round_up(detail::size_at<S...>(i), 64 / sizeof(T)));
        return m;
    }

    template <class V, std::size_t R, std::size_t I>
    TAPIR_ALWAYS_INLINE void run_layers(const T* in, std::size_t ldin, T* buf0, T* buf1, T* y) const noexcept {
        using L = std::tuple_element_t<I, layers_type>;
        T* out = (I % 2 == 0) ? buf0 : buf1;
        std::get<I>(layers_).template run<V, R>(in, ldin, out);
        if constexpr (I + 1 < num_layers) {
            run_layers<V, R, I + 1>(out, L::out_padded, buf0, buf1, y);
        } else {
            for (std::size_t r = 0; r < R; ++r)
                for (std::size_t j = 0; j < outputs; ++j) y[r * outputs + j] = out[r * L::out_padded + j];
        }
    }

    template <class V, std::size_t R>
    TAPIR_ALWAYS_INLINE void run_rows(const T* x, T* y) const noexcept {
        constexpr std::size_t mw = max_width();
        alignas(64) T buf0[R * mw];
        alignas(64) T buf1[R * mw];
        if (this->input_scaling()) {
            for (std::size_t r = 0; r < R; ++r)
                for (std::size_t i = 0; i < inputs; ++i)
                    buf1[r * inputs + i] = static_cast<T>(this->standardise(i, static_cast<double>(x[r * inputs + i])));
            run_layers<V, R, 0>(buf1, inputs, buf0, buf1, y);
        } else {
            run_layers<V, R, 0>(x, inputs, buf0, buf1, y);
        }
    }

    template <class V>
    TAPIR_ALWAYS_INLINE void run_with(const T* x, T* y, std::size_t n) const noexcept {
        std::size_t i = 0;
        constexpr std::size_t R = detail::blocking<V>::R;
        for (; i + R <= n; i += R) run_rows<V, R>(x + i * inputs, y + i * outputs);
        for (; i < n; ++i) run_rows<V, 1>(x + i * inputs, y + i * outputs);
    }

    simd::isa isa_;
};

} // namespace tapir::deploy

TAPIR_SIMD_DIAG_POP
