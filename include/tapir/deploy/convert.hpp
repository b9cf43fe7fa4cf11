#pragma once
/// From a trained model to the deploy formats: a neutral list of dense layers (ModelSpec), built
/// from a tapir::nn::Sequential, from a model file, or by hand; and from it a fixed-size Mlp.
/// Unlike fixed.hpp this header throws (shape_error, value_error, format_error) with messages
/// that name the layer and both shapes.
///
///     tapir::nn::Sequential<float> net = ...;                    // trained
///     auto spec = tapir::deploy::spec_from(net);                 // or spec_from_model_file(...)
///     spec.set_input_scaling(scaler.mean(), scaler.scale());     // optional
///     auto fixed = tapir::deploy::to_fixed<tapir::deploy::Mlp<float, 8, 24, 16, 8, 1>>(spec);
///     fixed->forward(x, y);

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../autodiff/tape.hpp"
#include "../error.hpp"
#include "../io/model_file.hpp"
#include "../nn/layers.hpp"
#include "../nn/module.hpp"
#include "../nn/sequential.hpp"
#include "../simd/gemm.hpp"
#include "../simd/math.hpp"
#include "../tensor/tensor.hpp"
#include "fixed.hpp"
#include "quantize.hpp"

namespace tapir::deploy {

/// One dense layer: y = act(x W + b) with W (in x out, row-major) and b (out values or empty).
template <class T>
struct DenseSpec {
    std::size_t in = 0, out = 0;
    std::vector<T> weight;
    std::vector<T> bias;
    Activation act = Activation::none;
    T alpha = T(0);

    T w(std::size_t p, std::size_t j) const { return weight[p * out + j]; }
    LayerView<T> view() const noexcept {
        LayerView<T> v;
        v.weight = weight.data();
        v.bias = bias.empty() ? nullptr : bias.data();
        v.in = in;
        v.out = out;
        v.act = act;
        v.alpha = alpha;
        return v;
    }
};

/// A model as a neutral list of dense layers plus optional input standardisation
/// z = (x - input_mean) / input_scale (empty vectors: none).
template <class T>
struct ModelSpec {
    std::vector<DenseSpec<T>> layers;
    std::vector<double> input_mean, input_scale;

    std::size_t inputs() const noexcept { return layers.empty() ? 0 : layers.front().in; }
    std::size_t outputs() const noexcept { return layers.empty() ? 0 : layers.back().out; }
    bool has_input_scaling() const noexcept { return !input_mean.empty(); }

    /// Standardisation as tapir::data::StandardScaler stores it (scaler.mean(), scaler.scale()).
    void set_input_scaling(std::vector<double> mean, std::vector<double> scale) {
        input_mean = std::move(mean);
        input_scale = std::move(scale);
        validate();
    }

    /// Adds a layer: weight (in x out, row-major), bias (out values or empty).
    ModelSpec& add(std::size_t in, std::size_t out, std::vector<T> weight, std::vector<T> bias, Activation act = Activation::none,
                   T alpha = T(0)) {
        DenseSpec<T> d;
        d.in = in;
        d.out = out;
        d.weight = std::move(weight);
        d.bias = std::move(bias);
        d.act = act;
        d.alpha = alpha;
        layers.push_back(std::move(d));
        validate();
        return *this;
    }

    /// Sizes as a string: "8 -> 24 (relu) -> 16 (relu) -> 1 (sigmoid)".
    std::string describe() const {
        if (layers.empty()) return "(no layers)";
        std::string s = std::to_string(layers.front().in);
        for (const auto& l : layers) {
            s += " -> " + std::to_string(l.out);
            if (l.act != Activation::none) s += std::string(" (") + activation_name(l.act) + ")";
        }
        return s;
    }

    /// Throws value_error/shape_error naming the layer if the list is not a valid MLP.
    void validate() const {
        if (layers.empty()) throw value_error("deploy::ModelSpec: the model has no dense layers");
        for (std::size_t i = 0; i < layers.size(); ++i) {
            const DenseSpec<T>& l = layers[i];
            const std::string name = "deploy::ModelSpec: layer " + std::to_string(i);
            if (l.in == 0 || l.out == 0)
                throw value_error(name + " has size " + std::to_string(l.in) + " -> " + std::to_string(l.out));
            if (l.weight.size() != l.in * l.out)
                throw shape_error(name + ": weight has " + std::to_string(l.weight.size()) + " values, expected " +
                                  std::to_string(l.in) + " x " + std::to_string(l.out) + " = " + std::to_string(l.in * l.out));
            if (!l.bias.empty() && l.bias.size() != l.out)
                throw shape_error(name + ": bias has " + std::to_string(l.bias.size()) + " values, expected " + std::to_string(l.out));
            if (i > 0 && layers[i - 1].out != l.in)
                throw shape_error(name + " takes " + std::to_string(l.in) + " inputs but layer " + std::to_string(i - 1) + " gives " +
                                  std::to_string(layers[i - 1].out));
            for (std::size_t k = 0; k < l.weight.size(); ++k)
                if (!std::isfinite(l.weight[k]))
                    throw value_error(name + ": weight (" + std::to_string(k / l.out) + ", " + std::to_string(k % l.out) +
                                      ") is not finite");
            for (std::size_t k = 0; k < l.bias.size(); ++k)
                if (!std::isfinite(l.bias[k])) throw value_error(name + ": bias " + std::to_string(k) + " is not finite");
        }
        if (input_mean.size() != input_scale.size())
            throw value_error("deploy::ModelSpec: " + std::to_string(input_mean.size()) + " input means but " +
                              std::to_string(input_scale.size()) + " input scales");
        if (!input_mean.empty() && input_mean.size() != inputs())
            throw shape_error("deploy::ModelSpec: input scaling has " + std::to_string(input_mean.size()) +
                              " features but the model takes " + std::to_string(inputs()));
        for (std::size_t i = 0; i < input_mean.size(); ++i)
            if (!std::isfinite(input_mean[i]) || !(input_scale[i] > 0.0) || !std::isfinite(input_scale[i]))
                throw value_error("deploy::ModelSpec: input feature " + std::to_string(i) + " has mean " + std::to_string(input_mean[i]) +
                                  " and scale " + std::to_string(input_scale[i]) + " (need finite values and scale > 0)");
    }

    std::vector<LayerView<T>> views() const {
        std::vector<LayerView<T>> v;
        for (const auto& l : layers) v.push_back(l.view());
        return v;
    }

    /// Reference forward pass (x (n x inputs) -> y (n x outputs)): per output one fused
    /// multiply-add chain, restarted every sum_block terms (see Mlp::sum_block), then bias and
    /// activation. Plain loops, for checks and tools; not for speed.
    void forward(const T* x, T* y, std::size_t n, std::size_t sum_block = 256) const { run(x, y, n, nullptr, sum_block); }

    /// The |input| range of each layer over n events (layer 0: after input scaling): the
    /// coverage quantile of |x| over all of the layer's inputs (1 = the maximum). The int8
    /// model's activation scales are calibrated on these; rarer values saturate.
    std::vector<float> input_ranges(const T* x, std::size_t n, double coverage = 0.9999) const {
        if (!(coverage > 0.0 && coverage <= 1.0))
            throw value_error("deploy::ModelSpec::input_ranges: coverage must be in (0, 1], got " + std::to_string(coverage));
        std::vector<std::vector<float>> seen(layers.size());
        run(x, nullptr, n, &seen, 256);
        std::vector<float> r(layers.size(), 0.0f);
        for (std::size_t l = 0; l < seen.size(); ++l) {
            std::vector<float>& v = seen[l];
            if (v.empty()) continue;
            const auto k = static_cast<std::size_t>(std::ceil(coverage * static_cast<double>(v.size()))) - 1;
            std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
            r[l] = v[k];
        }
        return r;
    }

private:
    void run(const T* x, T* y, std::size_t n, std::vector<std::vector<float>>* seen, std::size_t sum_block) const {
        validate();
        if (sum_block == 0) throw value_error("deploy::ModelSpec::forward: sum_block must be positive");
        std::vector<T> a, b;
        for (std::size_t r = 0; r < n; ++r) {
            a.assign(x + r * inputs(), x + (r + 1) * inputs());
            if (has_input_scaling())
                for (std::size_t i = 0; i < a.size(); ++i)
                    a[i] = static_cast<T>((static_cast<double>(a[i]) - input_mean[i]) / input_scale[i]);
            for (std::size_t li = 0; li < layers.size(); ++li) {
                const DenseSpec<T>& l = layers[li];
                if (seen)
                    for (const T v : a) (*seen)[li].push_back(static_cast<float>(std::fabs(v)));
                b.assign(l.out, T(0));
                for (std::size_t j = 0; j < l.out; ++j) {
                    T acc = T(0);
                    for (std::size_t p0 = 0, kc = simd::gemm_k_block(l.in, sum_block); p0 < l.in; p0 += kc) {
                        T part = T(0);
                        for (std::size_t p = p0; p < p0 + kc && p < l.in; ++p) part = std::fma(a[p], l.w(p, j), part);
                        acc = p0 == 0 ? part : part + acc;
                    }
                    if (!l.bias.empty()) acc += l.bias[j];
                    b[j] = simd::activation_scalar<T, true>(l.act, acc, l.alpha);
                }
                a.swap(b);
            }
            if (y)
                for (std::size_t j = 0; j < outputs(); ++j) y[r * outputs() + j] = a[j];
        }
    }
};

namespace detail {

template <class T>
void append_dense(ModelSpec<T>& spec, const nn::Dense<T>& d) {
    DenseSpec<T> l;
    l.in = d.in_features();
    l.out = d.out_features();
    l.weight.assign(d.weight.value.data(), d.weight.value.data() + d.weight.value.size());
    if (d.has_bias()) l.bias.assign(d.bias.value.data(), d.bias.value.data() + d.bias.value.size());
    l.act = d.activation();
    l.alpha = d.alpha();
    spec.layers.push_back(std::move(l));
}

/// Folds an eval-mode BatchNorm into the preceding dense layer: W'[p][j] = W[p][j] s[j],
/// b'[j] = (b[j] - mean[j]) s[j] + beta[j], s = gamma / sqrt(var + eps). Not bitwise the unfolded
/// graph (a few ulp).
template <class T>
void fold_batch_norm(DenseSpec<T>& l, const nn::BatchNorm<T>& bn, const std::string& where) {
    if (bn.features() != l.out)
        throw shape_error("deploy::spec_from: " + where + " normalises " + std::to_string(bn.features()) +
                          " features but the dense layer before it has " + std::to_string(l.out) + " outputs");
    if (l.act != Activation::none)
        throw value_error("deploy::spec_from: " + where + " follows a dense layer with activation " + activation_name(l.act) +
                          "; only a BatchNorm between a dense layer and its activation can be folded");
    if (l.bias.empty()) l.bias.assign(l.out, T(0));
    for (std::size_t j = 0; j < l.out; ++j) {
        const double s = static_cast<double>(bn.weight.value[j]) /
                         std::sqrt(static_cast<double>(bn.running_var[j]) + bn.eps());
        for (std::size_t p = 0; p < l.in; ++p)
            l.weight[p * l.out + j] = static_cast<T>(static_cast<double>(l.weight[p * l.out + j]) * s);
        l.bias[j] = static_cast<T>((static_cast<double>(l.bias[j]) - static_cast<double>(bn.running_mean[j])) * s +
                                   static_cast<double>(bn.bias.value[j]));
    }
}

/// pending: the last dense layer may still take an activation (nothing but dropout since).
template <class T>
void walk(ModelSpec<T>& spec, const nn::Sequential<T>& seq, const std::string& prefix, bool& pending) {
    const std::vector<const nn::Module<T>*> layers = seq.layers();
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const nn::Module<T>& m = *layers[i];
        const std::string where = "layer " + prefix + std::to_string(i) + " (" + m.describe() + ")";
        switch (m.kind()) {
        case nn::LayerKind::dense: {
            const auto& d = static_cast<const nn::Dense<T>&>(m);
            if (!spec.layers.empty() && spec.layers.back().out != d.in_features())
                throw shape_error("deploy::spec_from: " + where + " takes " + std::to_string(d.in_features()) +
                                  " inputs but the layer before gives " + std::to_string(spec.layers.back().out));
            append_dense(spec, d);
            pending = d.activation() == Activation::none;
            break;
        }
        case nn::LayerKind::activation: {
            const auto& a = static_cast<const nn::ActivationLayer<T>&>(m);
            if (a.activation() == Activation::none) break;
            if (!pending || spec.layers.empty())
                throw value_error("deploy::spec_from: " + where +
                                  " does not directly follow a dense layer without activation; deploy supports act(x W + b) layers");
            spec.layers.back().act = a.activation();
            spec.layers.back().alpha = a.alpha();
            pending = false;
            break;
        }
        case nn::LayerKind::dropout: break;  // the identity at inference
        case nn::LayerKind::batch_norm:
            if (!pending || spec.layers.empty())
                throw value_error("deploy::spec_from: " + where + " does not directly follow a dense layer, so it cannot be folded");
            fold_batch_norm(spec.layers.back(), static_cast<const nn::BatchNorm<T>&>(m), where);
            break;
        case nn::LayerKind::sequential:
            walk(spec, static_cast<const nn::Sequential<T>&>(m), prefix + std::to_string(i) + ".", pending);
            break;
        default:
            throw value_error("deploy::spec_from: " + where + " is not supported by the fixed-size path (" +
                              nn::layer_kind_name(m.kind()) + "); supported: Dense, activations, Dropout, BatchNorm after Dense");
        }
    }
}

} // namespace detail

/// The dense layers of a trained Sequential (Dense, activation layers fused into the Dense before
/// them, Dropout dropped, BatchNorm folded into the Dense before it, nested Sequentials walked).
template <class T>
ModelSpec<T> spec_from(const nn::Sequential<T>& model) {
    ModelSpec<T> spec;
    bool pending = false;
    detail::walk(spec, model, "", pending);
    spec.validate();
    return spec;
}

/// A model file saved from an MLP (parameters "<name>.weight" (in, out) and optional
/// "<name>.bias" (out), in order), with one activation per dense layer; alphas default to
/// 0.01 (leaky ReLU) and 1 (ELU).
template <class T>
ModelSpec<T> spec_from_model_file(const std::string& path, const std::vector<Activation>& activations,
                                  const std::vector<T>& alphas = {}) {
    const io::ModelFileInfo info = io::inspect_model(path);
    const std::string want = sizeof(T) == 4 ? "float32" : "float64";
    if (info.dtype != want)
        throw format_error(path + ": the file holds " + info.dtype + " values but a " + want + " model was requested");
    std::vector<Parameter<T>> params(info.parameters.size());
    io::NamedParameters<T> named;
    for (std::size_t i = 0; i < info.parameters.size(); ++i) {
        params[i] = Parameter<T>(info.parameters[i].first, Tensor<T>(info.parameters[i].second));
        named.emplace_back(info.parameters[i].first, &params[i]);
    }
    io::load_model(path, named);

    auto ends_with = [](const std::string& s, const std::string& suffix) {
        return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    ModelSpec<T> spec;
    for (std::size_t i = 0; i < params.size(); ++i) {
        const std::string& name = params[i].name;
        const Shape& s = params[i].value.shape();
        if (!ends_with(name, "weight") || s.rank() != 2)
            throw format_error(path + ": parameter '" + name + "' of shape " + s.str() +
                               " is not a dense weight (expected '<layer>.weight' of shape (in, out))");
        const std::string layer = name.substr(0, name.size() - 6);
        DenseSpec<T> l;
        l.in = s[0];
        l.out = s[1];
        l.weight.assign(params[i].value.data(), params[i].value.data() + params[i].value.size());
        if (i + 1 < params.size() && params[i + 1].name == layer + "bias") {
            const Shape& bs = params[i + 1].value.shape();
            if (bs.rank() != 1 || bs[0] != l.out)
                throw format_error(path + ": parameter '" + params[i + 1].name + "' has shape " + bs.str() + ", expected (" +
                                   std::to_string(l.out) + ") for weight '" + name + "' of shape " + s.str());
            l.bias.assign(params[i + 1].value.data(), params[i + 1].value.data() + params[i + 1].value.size());
            ++i;
        }
        spec.layers.push_back(std::move(l));
    }
    if (activations.size() != spec.layers.size())
        throw value_error("deploy::spec_from_model_file: " + path + " holds " + std::to_string(spec.layers.size()) +
                          " dense layers but " + std::to_string(activations.size()) + " activations were given");
    if (!alphas.empty() && alphas.size() != spec.layers.size())
        throw value_error("deploy::spec_from_model_file: " + std::to_string(alphas.size()) + " alphas for " +
                          std::to_string(spec.layers.size()) + " layers");
    for (std::size_t i = 0; i < spec.layers.size(); ++i) {
        spec.layers[i].act = activations[i];
        spec.layers[i].alpha = alphas.empty() ? static_cast<T>(nn::default_alpha(activations[i])) : alphas[i];
    }
    spec.validate();
    return spec;
}

/// Sizes of a fixed-size model type, as text: "8 -> 24 -> 16 -> 1".
template <class M>
std::string fixed_sizes() {
    std::string s;
    for (std::size_t i = 0; i <= M::num_layers; ++i) s += (i ? " -> " : "") + std::to_string(M::sizes[i]);
    return s;
}

/// Loads a spec into a fixed-size model (Mlp, or the quantised models of quantize.hpp).
/// Throws shape_error naming both architectures when the sizes differ.
template <class M, class T>
void load(M& fixed, const ModelSpec<T>& spec) {
    spec.validate();
    bool same = spec.layers.size() == M::num_layers;
    for (std::size_t i = 0; same && i < spec.layers.size(); ++i)
        same = spec.layers[i].in == M::sizes[i] && spec.layers[i].out == M::sizes[i + 1];
    if (!same)
        throw shape_error("deploy::load: the trained model is " + spec.describe() + " but the fixed-size model is " + fixed_sizes<M>());
    const std::vector<LayerView<T>> v = spec.views();
    const Status s = fixed.load(v.data(), v.size());
    if (s != Status::ok) throw value_error(std::string("deploy::load: ") + status_message(s));
    const Status t = spec.has_input_scaling() ? fixed.set_input_scaling(spec.input_mean.data(), spec.input_scale.data())
                                              : fixed.set_input_scaling(nullptr, nullptr);
    if (t != Status::ok) throw value_error(std::string("deploy::load: input scaling: ") + status_message(t));
}

/// A heap-allocated fixed-size model loaded from a spec or a trained Sequential (the object can be
/// large; for a trigger, copy it into static storage or keep it where it is).
template <class M, class T>
std::unique_ptr<M> to_fixed(const ModelSpec<T>& spec) {
    auto m = std::make_unique<M>();
    load(*m, spec);
    return m;
}
template <class M, class T>
std::unique_ptr<M> to_fixed(const nn::Sequential<T>& model) {
    return to_fixed<M>(spec_from(model));
}

/// Loads a float spec into an Int8Mlp, calibrating the activation scales on n events x
/// (n x inputs, raw features: the spec's input scaling is applied first) to cover the given
/// fraction of each layer's |inputs|.
template <class M>
void load(M& q, const ModelSpec<float>& spec, const float* calibration, std::size_t n, double coverage = 0.9999) {
    spec.validate();
    if (!calibration || n == 0) throw value_error("deploy::load (int8): calibration needs at least one event");
    bool same = spec.layers.size() == M::num_layers;
    for (std::size_t i = 0; same && i < spec.layers.size(); ++i)
        same = spec.layers[i].in == M::sizes[i] && spec.layers[i].out == M::sizes[i + 1];
    if (!same)
        throw shape_error("deploy::load: the trained model is " + spec.describe() + " but the fixed-size model is " + fixed_sizes<M>());
    const std::vector<float> ranges = spec.input_ranges(calibration, n, coverage);
    const std::vector<LayerView<float>> v = spec.views();
    const Status s = q.load(v.data(), v.size(), ranges.data());
    if (s != Status::ok) throw value_error(std::string("deploy::load (int8): ") + status_message(s));
    const Status t = spec.has_input_scaling() ? q.set_input_scaling(spec.input_mean.data(), spec.input_scale.data())
                                              : q.set_input_scaling(nullptr, nullptr);
    if (t != Status::ok) throw value_error(std::string("deploy::load (int8): input scaling: ") + status_message(t));
}

/// A heap-allocated Int8Mlp calibrated on n events.
template <class M>
std::unique_ptr<M> to_int8(const ModelSpec<float>& spec, const float* calibration, std::size_t n, double coverage = 0.9999) {
    auto m = std::make_unique<M>();
    load(*m, spec, calibration, n, coverage);
    return m;
}

} // namespace tapir::deploy
