#pragma once
/// Loading trained layers into a ModelT (model.hpp), a DeepSetT or an EnergyFlowT: from a tapir::nn::Sequential,
/// or from a model file (nn/model_file.hpp) read into the Sequential that defines the
/// architecture. Throws shape_error and value_error naming the layer and both shapes.
///
///     tapir::nn::Sequential<float> cnn = ...;               // trained: Conv2d, ReLU, MaxPool2d, Flatten, Dense
///     auto fixed = tapir::deploy::to_model<Cnn>(cnn);      // or load_model(static_model, cnn)
///     auto same = tapir::deploy::to_model<Cnn>("cnn.tpr", architecture);
///
/// The trained model is read as a list of deployable layers: Dense and Conv1d/Conv2d with the
/// activation layer right after them fused in, a BatchNorm right after a Dense folded into it
/// (a few ulp off the unfolded graph); MaxPool and AvgPool (padded too), Flatten, activations on
/// their own, LSTM and GRU (the mask of a variable-length sequence is
/// an input: ModelT::forward(x, mask, y)); Dropout is dropped and nested Sequentials walked.
/// That list must match the ModelT's layers one to one.

#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../nn/conv.hpp"
#include "../nn/layers.hpp"
#include "../nn/model_file.hpp"
#include "../nn/module.hpp"
#include "../nn/recurrent.hpp"
#include "../nn/sequential.hpp"
#include "../nn/sets.hpp"
#include "convert.hpp"
#include "model.hpp"

namespace tapir::deploy {

/// One deployable layer of a trained model: the module, the activation fused into it, the
/// BatchNorm folded into it, and where it is ("layer 2 (Conv2d(1->8, 3x3))").
template <class T>
struct TrainedLayer {
    const nn::Module<T>* module = nullptr;
    Activation act = Activation::none;
    T alpha = T(0);
    const nn::BatchNorm<T>* batch_norm = nullptr;
    std::string where;
    /// "Dense", "Conv2d", "Conv1d", "MaxPool2d", ..., "Flatten", "Activation", "LSTM", "GRU".
    std::string type;
};

namespace detail {

inline std::string shape_text(std::initializer_list<std::size_t> s) {
    std::string t = "(";
    std::size_t i = 0;
    for (const std::size_t v : s) t += (i++ ? ", " : "") + std::to_string(v);
    return t + ")";
}

template <class T>
bool takes_activation(const TrainedLayer<T>& l) {
    return (l.type == "Dense" || l.type == "Conv2d" || l.type == "Conv1d") && l.act == Activation::none;
}

template <class T>
void trained_walk(std::vector<TrainedLayer<T>>& out, const nn::Sequential<T>& seq, const std::string& prefix, bool& open) {
    const std::vector<const nn::Module<T>*> layers = seq.layers();
    for (std::size_t i = 0; i < layers.size(); ++i) {
        const nn::Module<T>& m = *layers[i];
        const std::string where = "layer " + prefix + std::to_string(i) + " (" + m.describe() + ")";
        TrainedLayer<T> l;
        l.module = &m;
        l.where = where;
        switch (m.kind()) {
        case nn::LayerKind::dense: {
            const auto& d = static_cast<const nn::Dense<T>&>(m);
            l.type = "Dense";
            l.act = d.activation(), l.alpha = d.alpha();
            out.push_back(l);
            open = true;
            continue;
        }
        case nn::LayerKind::activation: {
            const auto& a = static_cast<const nn::ActivationLayer<T>&>(m);
            if (a.activation() == Activation::none) continue;
            // Fused into the Dense or convolution before it when that has none; else a layer of its own.
            const bool fuse = open && !out.empty() && takes_activation(out.back());
            if (!fuse) l.type = "Activation", out.push_back(l);
            out.back().act = a.activation(), out.back().alpha = a.alpha();
            open = false;
            continue;
        }
        case nn::LayerKind::dropout: continue;  // the identity at inference
        case nn::LayerKind::batch_norm:
            // nn::BatchNorm normalises (N, F) features: after a Dense layer (there is no channel BatchNorm to fold into a convolution).
            if (!open || out.empty() || out.back().type != "Dense" || out.back().act != Activation::none || out.back().batch_norm)
                throw value_error("deploy::load_model: " + where +
                                  " does not directly follow a Dense layer without activation, so it cannot be folded");
            out.back().batch_norm = static_cast<const nn::BatchNorm<T>*>(&m);
            continue;
        case nn::LayerKind::sequential:
            trained_walk(out, static_cast<const nn::Sequential<T>&>(m), prefix + std::to_string(i) + ".", open);
            continue;
        default: break;
        }
        open = false;
        if (dynamic_cast<const nn::Conv2d<T>*>(&m)) l.type = "Conv2d", open = true;
        else if (dynamic_cast<const nn::Conv1d<T>*>(&m)) l.type = "Conv1d", open = true;
        else if (dynamic_cast<const nn::MaxPool2d<T>*>(&m)) l.type = "MaxPool2d";
        else if (dynamic_cast<const nn::AvgPool2d<T>*>(&m)) l.type = "AvgPool2d";
        else if (dynamic_cast<const nn::MaxPool1d<T>*>(&m)) l.type = "MaxPool1d";
        else if (dynamic_cast<const nn::AvgPool1d<T>*>(&m)) l.type = "AvgPool1d";
        else if (dynamic_cast<const nn::Flatten<T>*>(&m)) l.type = "Flatten";
        else if (dynamic_cast<const nn::LSTM<T>*>(&m)) l.type = "LSTM";
        else if (dynamic_cast<const nn::GRU<T>*>(&m)) l.type = "GRU";
        else
            throw value_error("deploy::load_model: " + where + " (" + m.type_name() +
                              ") has no fixed-size layer; supported: Dense, Conv1d, Conv2d, MaxPool/AvgPool 1d/2d, Flatten, activations, "
                              "Dropout, BatchNorm after Dense, LSTM, GRU");
        out.push_back(l);
    }
}

template <class T>
[[noreturn]] void layer_mismatch(const TrainedLayer<T>& l, std::size_t index, const char* want, const std::string& what) {
    throw shape_error("deploy::load_model: " + l.where + " vs fixed-size layer " + std::to_string(index) + " (" + want + "): " + what);
}

/// Folds an eval-mode BatchNorm into a dense weight (per x outs, row-major) and bias:
/// W' = W s, b' = (b - mean) s + beta, s = gamma / sqrt(var + eps), in double.
template <class T>
void fold_rows(std::vector<T>& w, std::vector<T>& b, std::size_t outs, std::size_t per, const nn::BatchNorm<T>& bn, const std::string& where) {
    if (bn.features() != outs)
        throw shape_error("deploy::load_model: the BatchNorm after " + where + " normalises " + std::to_string(bn.features()) +
                          " features but the layer has " + std::to_string(outs) + " outputs");
    for (std::size_t o = 0; o < outs; ++o) {
        const double s = static_cast<double>(bn.weight.value[o]) / std::sqrt(static_cast<double>(bn.running_var[o]) + bn.eps());
        for (std::size_t p = 0; p < per; ++p) {
            T& v = w[p * outs + o];
            v = static_cast<T>(static_cast<double>(v) * s);
        }
        b[o] = static_cast<T>((static_cast<double>(b[o]) - static_cast<double>(bn.running_mean[o])) * s + static_cast<double>(bn.bias.value[o]));
    }
}

template <class T>
void check_finite(const std::vector<T>& v, const TrainedLayer<T>& l) {
    for (std::size_t k = 0; k < v.size(); ++k)
        if (!std::isfinite(v[k])) throw value_error("deploy::load_model: " + l.where + ": value " + std::to_string(k) + " is not finite");
}

template <class T, std::size_t In, std::size_t Out>
void load_layer(DenseT<T, In, Out>& d, const TrainedLayer<T>& l, std::size_t index) {
    if (l.type != "Dense") layer_mismatch(l, index, "Dense", "a " + l.type + " layer cannot load into a Dense layer");
    const auto& m = static_cast<const nn::Dense<T>&>(*l.module);
    if (m.in_features() != In || m.out_features() != Out)
        layer_mismatch(l, index, "Dense", "trained weight " + shape_text({m.in_features(), m.out_features()}) + ", fixed-size weight " +
                                              shape_text({In, Out}));
    std::vector<T> w(m.weight.value.data(), m.weight.value.data() + In * Out);
    std::vector<T> b(Out, T(0));
    if (m.has_bias()) b.assign(m.bias.value.data(), m.bias.value.data() + Out);
    if (l.batch_norm) fold_rows(w, b, Out, In, *l.batch_norm, l.where);
    check_finite(w, l);
    check_finite(b, l);
    LayerView<T> v;
    v.weight = w.data();
    v.bias = m.has_bias() || l.batch_norm ? b.data() : nullptr;
    v.in = In;
    v.out = Out;
    v.act = l.act;
    v.alpha = l.alpha;
    const Status s = d.dense.set(v);
    if (s != Status::ok) throw value_error("deploy::load_model: " + l.where + ": " + status_message(s));
}

/// Checks a trained Conv1d or Conv2d against a fixed-size geometry of G groups and hands its
/// weight (Cout, Cin / G, KH, KW) and bias to set(w, b).
template <std::size_t G, std::size_t Cin, std::size_t Cout, std::size_t KH, std::size_t KW, std::size_t SH, std::size_t SW, std::size_t PH,
          std::size_t PW, std::size_t PB, std::size_t PR, std::size_t DH, std::size_t DW, class T, class Set>
void load_conv(const TrainedLayer<T>& l, std::size_t index, Set&& set) {
    const bool one_d = l.type == "Conv1d";
    if (l.type != "Conv2d" && !one_d) layer_mismatch(l, index, "Conv2d", "a " + l.type + " layer cannot load into a convolution layer");
    const auto& m = static_cast<const nn::ConvLayer<T>&>(*l.module);
    const nn::ConvOptions& o = m.options();
    std::size_t pt, pb, pl, pr;
    if (one_d) {
        const auto& c1 = static_cast<const nn::Conv1d<T>&>(m);
        pt = pb = 0, pl = c1.padding_left(), pr = c1.padding_right();
    } else {
        const Pad2d p = static_cast<const nn::Conv2d<T>&>(m).padding();
        pt = p.top, pb = p.bottom, pl = p.left, pr = p.right;
    }
    const Size2 k = m.kernel_size();
    const std::size_t sh = one_d ? 1 : o.stride.h;
    if (o.groups != G)
        layer_mismatch(l, index, "Conv2d", "trained groups " + std::to_string(o.groups) + ", fixed-size groups " + std::to_string(G) +
                                               (G == 1 ? " (a grouped convolution deploys as GroupedConv2dT)" : ""));
    if (m.in_channels() != Cin || m.out_channels() != Cout || k.h != KH || k.w != KW)
        layer_mismatch(l, index, "Conv2d", "trained weight " + shape_text({m.out_channels(), m.in_channels() / G, k.h, k.w}) +
                                               ", fixed-size weight " + shape_text({Cout, Cin / G, KH, KW}));
    if (sh != SH || o.stride.w != SW || pt != PH || pb != PB || pl != PW || pr != PR)
        layer_mismatch(l, index, "Conv2d", "trained stride " + shape_text({sh, o.stride.w}) + " and padding (top, bottom, left, right) " +
                                               shape_text({pt, pb, pl, pr}) + ", fixed-size stride " + shape_text({SH, SW}) + " and padding " +
                                               shape_text({PH, PB, PW, PR}));
    const std::size_t dh = one_d ? 1 : o.dilation.h;
    if (dh != DH || o.dilation.w != DW)
        layer_mismatch(l, index, "Conv2d", "trained dilation " + shape_text({dh, o.dilation.w}) + ", fixed-size dilation " + shape_text({DH, DW}));
    constexpr std::size_t K = Cin / G * KH * KW;
    std::vector<T> w(m.weight.value.data(), m.weight.value.data() + Cout * K);
    std::vector<T> b(Cout, T(0));
    if (o.bias) b.assign(m.bias.value.data(), m.bias.value.data() + Cout);
    check_finite(w, l);
    check_finite(b, l);
    set(w, b);
}

/// Group q's slice (weight rows and bias from out channel first) into a Conv2dT.
template <class T, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW, std::size_t SH,
          std::size_t SW, std::size_t PH, std::size_t PW, std::size_t PB, std::size_t PR, std::size_t DH, std::size_t DW>
void set_conv(Conv2dT<T, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR, DH, DW>& c, const std::vector<T>& w, const std::vector<T>& b,
              std::size_t first, const TrainedLayer<T>& l) {
    constexpr std::size_t K = Cin * KH * KW;
    for (std::size_t oc = 0; oc < Cout; ++oc) {
        for (std::size_t r = 0; r < K; ++r) c.weight[oc][r] = w[(first + oc) * K + r];
        c.bias[oc] = b[first + oc];
    }
    c.act = l.act;
    c.alpha = l.alpha;
}

template <class T, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW, std::size_t SH,
          std::size_t SW, std::size_t PH, std::size_t PW, std::size_t PB, std::size_t PR, std::size_t DH, std::size_t DW>
void load_layer(Conv2dT<T, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR, DH, DW>& c, const TrainedLayer<T>& l, std::size_t index) {
    load_conv<1, Cin, Cout, KH, KW, SH, SW, PH, PW, PB, PR, DH, DW>(l, index, [&](const std::vector<T>& w, const std::vector<T>& b) { set_conv(c, w, b, 0, l); });
}

template <class T, std::size_t G, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW,
          std::size_t SH, std::size_t SW, std::size_t PH, std::size_t PW, std::size_t PB, std::size_t PR, std::size_t DH, std::size_t DW>
void load_layer(GroupedConv2dT<T, G, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PB, PR, DH, DW>& c, const TrainedLayer<T>& l, std::size_t index) {
    load_conv<G, Cin, Cout, KH, KW, SH, SW, PH, PW, PB, PR, DH, DW>(l, index, [&](const std::vector<T>& w, const std::vector<T>& b) {
        for (std::size_t q = 0; q < G; ++q) set_conv(c.group[q], w, b, q * (Cout / G), l);
    });
}



template <class T, bool IsMax, std::size_t C, std::size_t H, std::size_t W, std::size_t KH, std::size_t KW, std::size_t SH, std::size_t SW,
          std::size_t PH, std::size_t PW>
void load_layer(Pool2dT<T, IsMax, C, H, W, KH, KW, SH, SW, PH, PW>&, const TrainedLayer<T>& l, std::size_t index) {
    const char* want = IsMax ? "MaxPool" : "AvgPool";
    if (l.type.compare(0, 7, want) != 0) layer_mismatch(l, index, want, "a " + l.type + " layer cannot load into a " + want + " layer");
    Size2 k, s;
    Pad2d p;
    if (l.type.find("1d") != std::string::npos) {
        const auto& m = static_cast<const nn::Pool<T, IsMax, true>&>(*l.module);
        k = m.kernel_size(), s = m.stride(), p = m.padding();
    } else {
        const auto& m = static_cast<const nn::Pool<T, IsMax, false>&>(*l.module);
        k = m.kernel_size(), s = m.stride(), p = m.padding();
    }
    if (k.h != KH || k.w != KW || s.h != SH || s.w != SW || p.top != PH || p.bottom != PH || p.left != PW || p.right != PW)
        layer_mismatch(l, index, want, "trained window " + shape_text({k.h, k.w}) + " stride " + shape_text({s.h, s.w}) + " padding " +
                                           shape_text({p.top, p.left}) + ", fixed-size window " + shape_text({KH, KW}) + " stride " +
                                           shape_text({SH, SW}) + " padding " + shape_text({PH, PW}));
}

template <class T, std::size_t N>
void load_layer(FlattenT<T, N>&, const TrainedLayer<T>& l, std::size_t index) {
    if (l.type != "Flatten") layer_mismatch(l, index, "Flatten", "a " + l.type + " layer cannot load into a Flatten layer");
}

template <class T, std::size_t N, Activation A>
void load_layer(ActivationT<T, N, A>& a, const TrainedLayer<T>& l, std::size_t index) {
    if (l.type != "Activation" || l.act != A)
        layer_mismatch(l, index, "Activation", std::string("the trained layer is ") + (l.type == "Activation" ? activation_name(l.act) : l.type.c_str()) +
                                                   ", the fixed-size layer " + activation_name(A));
    a.alpha = l.alpha;
}

template <class T, Cell C, std::size_t In, std::size_t Hd, std::size_t Steps, bool Seq>
void load_layer(RecurrentT<T, C, In, Hd, Steps, Seq>& r, const TrainedLayer<T>& l, std::size_t index) {
    using R = RecurrentT<T, C, In, Hd, Steps, Seq>;
    if (l.type != R::name) layer_mismatch(l, index, R::name, "a " + l.type + " layer cannot load into a " + R::name + " layer");
    const auto& m = static_cast<const nn::RecurrentLayer<T>&>(*l.module);
    if (m.input_size() != In || m.hidden_size() != Hd)
        layer_mismatch(l, index, R::name, "trained weight_ih " + shape_text({R::G * m.hidden_size(), m.input_size()}) + ", fixed-size " +
                                              shape_text({R::GH, In}));
    if (m.return_sequences() != Seq)
        layer_mismatch(l, index, R::name, std::string("the trained layer returns ") + (m.return_sequences() ? "every step" : "the last step") +
                                              ", the fixed-size layer " + (Seq ? "every step" : "the last step"));
    const bool bias = m.bias_ih.value.size() == R::GH;
    std::vector<T> wx(In * R::GH), wh(Hd * R::GH), bh(R::GH, T(0)), bi(R::GH, T(0));
    for (std::size_t j = 0; j < R::GH; ++j) {
        for (std::size_t p = 0; p < In; ++p) wx[p * R::GH + j] = m.weight_ih.value[j * In + p];
        for (std::size_t p = 0; p < Hd; ++p) wh[p * R::GH + j] = m.weight_hh.value[j * Hd + p];
        if (bias) bh[j] = m.bias_hh.value[j], bi[j] = m.bias_ih.value[j];
    }
    for (const auto* v : {&wx, &wh, &bh, &bi}) check_finite(*v, l);
    LayerView<T> vx{wx.data(), nullptr, In, R::GH, Activation::none, T(0)};
    LayerView<T> vh{wh.data(), bh.data(), Hd, R::GH, Activation::none, T(0)};
    if (r.input.set(vx) != Status::ok || r.hidden.set(vh) != Status::ok)
        throw value_error("deploy::load_model: " + l.where + ": the weights do not fit");
    for (std::size_t j = 0; j < R::GH; ++j) r.bias_ih[j] = bi[j];
}

template <std::size_t I, class T, class... L>
void load_layers(ModelT<T, L...>& m, const std::vector<TrainedLayer<T>>& layers) {
    if constexpr (I < sizeof...(L)) {
        load_layer(m.template layer<I>(), layers[I], I);
        load_layers<I + 1>(m, layers);
    }
}

} // namespace detail

/// The deployable layers of a trained Sequential (see the header comment), in order.
template <class T>
std::vector<TrainedLayer<T>> trained_layers(const nn::Sequential<T>& model) {
    std::vector<TrainedLayer<T>> out;
    bool open = false;
    detail::trained_walk(out, model, "", open);
    return out;
}

/// Loads a trained Sequential into a ModelT. Throws (naming the layer and both shapes) when
/// the layers or their sizes differ; the fixed-size model may be partly loaded then.
template <class T, class... L>
void load_model(ModelT<T, L...>& fixed, const nn::Sequential<T>& trained) {
    const std::vector<TrainedLayer<T>> layers = trained_layers(trained);
    if (layers.size() != sizeof...(L)) {
        std::string list;
        for (const auto& l : layers) list += (list.empty() ? "" : ", ") + l.type;
        throw shape_error("deploy::load_model: the trained model has " + std::to_string(layers.size()) + " deployable layers (" + list +
                          ") but the fixed-size model has " + std::to_string(sizeof...(L)));
    }
    detail::load_layers<0>(fixed, layers);
}

/// A heap-allocated ModelT loaded from a trained Sequential (the object can be large).
template <class M, class T>
std::unique_ptr<M> to_model(const nn::Sequential<T>& trained) {
    auto m = std::make_unique<M>();
    load_model(*m, trained);
    return m;
}

/// A ModelT from a model file (nn::save_model) read into `architecture`, the Sequential that
/// defines the layers (its weights are replaced by the file's).
template <class M, class T>
std::unique_ptr<M> to_model(const std::string& path, nn::Sequential<T>& architecture) {
    nn::load_model(path, architecture);
    return to_model<M>(architecture);
}

namespace detail {
/// phi and rho of a set network into the fixed-size model's two MLPs, a shape error naming the part.
template <class Fixed, class Trained>
void load_set_parts(Fixed& fixed, const Trained& trained, const char* name) {
    try {
        load(fixed.phi, spec_from(trained.phi));
    } catch (const shape_error& e) {
        throw shape_error(std::string("deploy::load_model: ") + name + " phi: " + e.what());
    }
    try {
        load(fixed.rho, spec_from(trained.f));
    } catch (const shape_error& e) {
        throw shape_error(std::string("deploy::load_model: ") + name + " rho (f): " + e.what());
    }
}
} // namespace detail

/// Loads a trained DeepSet (a PFN) into a DeepSetT: phi and rho as fixed-size MLPs.
template <class T, std::size_t N, class Phi, class Rho, bool Mean>
void load_model(DeepSetT<T, N, Phi, Rho, Mean>& fixed, const nn::DeepSet<T>& trained) {
    const bool mean = trained.describe() == "DeepSet(mean)";
    if (mean != Mean)
        throw value_error(std::string("deploy::load_model: the trained DeepSet pools by ") + (mean ? "mean" : "sum") +
                          ", the fixed-size one by " + (Mean ? "mean" : "sum"));
    detail::load_set_parts(fixed, trained, "DeepSet");
}

/// Loads a trained EnergyFlowNetwork into an EnergyFlowT: phi (on the angles) and rho (F) as
/// fixed-size MLPs; the energy fraction is column 0 of both inputs.
template <class T, std::size_t N, class Phi, class Rho>
void load_model(EnergyFlowT<T, N, Phi, Rho>& fixed, const nn::EnergyFlowNetwork<T>& trained) {
    using E = EnergyFlowT<T, N, Phi, Rho>;
    if (trained.in_features() != E::features)
        throw shape_error("deploy::load_model: the trained EnergyFlowNetwork takes particles of " + std::to_string(trained.in_features()) +
                          " features (z and " + std::to_string(trained.in_features() - 1) + " angles), the fixed-size one " +
                          std::to_string(E::features) + " (z and " + std::to_string(E::angular) + " angles)");
    detail::load_set_parts(fixed, trained, "EnergyFlowNetwork");
}

} // namespace tapir::deploy
