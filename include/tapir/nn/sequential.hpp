#pragma once
/// Sequential: layers applied in order, with Dense followed by an activation layer fused into
/// one dense node (one matmul + bias + activation kernel and one fused backward).

#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "layers.hpp"
#include "module.hpp"

namespace tapir {
namespace nn {

/// A stack of layers, PyTorch's nn.Sequential / Keras' Sequential:
///
///     tapir::Rng rng(42);
///     tapir::nn::Sequential<float> model;
///     model.add<tapir::nn::Dense<float>>(8, 24, rng).add<tapir::nn::ReLU<float>>()
///          .add<tapir::nn::Dense<float>>(24, 1, rng);
///     tapir::Var<float> logits = model(tape.view(x));
///
/// Layers are named by position ("0", "1", ...), so parameters are "0.weight", "0.bias", ...
template <class T>
class Sequential : public Cloneable<Sequential<T>, Module<T>> {
public:
    Sequential() = default;
    Sequential(Sequential&&) noexcept = default;
    Sequential& operator=(Sequential&&) noexcept = default;
    /// A deep copy: every layer is cloned.
    Sequential(const Sequential& o) : Sequential::Cloneable(o), fuse_(o.fuse_) {
        for (const auto& l : o.layers_) push(l->clone());
    }
    Sequential& operator=(const Sequential& o) {
        if (this != &o) {
            Sequential copy(o);
            *this = std::move(copy);
        }
        return *this;
    }

    /// Constructs a layer in place: add<Dense<float>>(8, 24, rng). Returns *this for chaining.
    template <class L, class... Args>
    Sequential& add(Args&&... args) {
        static_assert(std::is_base_of<Module<T>, L>::value, "Sequential::add: the layer must derive from tapir::nn::Module<T>");
        push(std::make_unique<L>(std::forward<Args>(args)...));
        return *this;
    }
    /// Adds a layer object (moved or copied in): add(Dense<float>(8, 24, rng)).
    template <class L, class = std::enable_if_t<std::is_base_of<Module<T>, std::decay_t<L>>::value>>
    Sequential& add(L&& layer) {
        push(std::make_unique<std::decay_t<L>>(std::forward<L>(layer)));
        return *this;
    }
    Sequential& add(std::unique_ptr<Module<T>> layer) {
        if (!layer) throw value_error("Sequential::add: null layer");
        push(std::move(layer));
        return *this;
    }
    /// Like add<L>(...), but returns the new layer.
    template <class L, class... Args>
    L& emplace(Args&&... args) {
        auto p = std::make_unique<L>(std::forward<Args>(args)...);
        L& ref = *p;
        push(std::move(p));
        return ref;
    }

    std::size_t size() const noexcept { return layers_.size(); }
    bool empty() const noexcept { return layers_.empty(); }
    Module<T>& operator[](std::size_t i) { return *layers_[i]; }
    const Module<T>& operator[](std::size_t i) const { return *layers_[i]; }
    Module<T>& at(std::size_t i) {
        check_index(i);
        return *layers_[i];
    }
    const Module<T>& at(std::size_t i) const {
        check_index(i);
        return *layers_[i];
    }
    /// The layers in order, for code that walks the model (e.g. export: switch on kind(), then
    /// static_cast to Dense<T>, ActivationLayer<T>, BatchNorm<T>, ...).
    std::vector<const Module<T>*> layers() const {
        std::vector<const Module<T>*> out;
        for (const auto& l : layers_) out.push_back(l.get());
        return out;
    }
    std::vector<Module<T>*> layers() {
        std::vector<Module<T>*> out;
        for (auto& l : layers_) out.push_back(l.get());
        return out;
    }

    /// Fusion of Dense + activation into one node (on by default; off reproduces the unfused graph).
    void set_fusion(bool on) noexcept { fuse_ = on; }
    bool fusion() const noexcept { return fuse_; }

    Var<T> forward(const Var<T>& x) override {
        Var<T> h = x;
        Tape<T>& t = x.tape();
        const char* outer = t.label();
        const std::size_t n = layers_.size();
        for (std::size_t i = 0; i < n; ++i) {
            Module<T>& l = *layers_[i];
            t.set_label(labels_[i].c_str());
            if (fuse_ && i + 1 < n && l.can_fuse_activation()) {
                const Module<T>& next = *layers_[i + 1];
                const Activation act = next.fusable_activation();
                if (act != Activation::none) {
                    h = l.forward_fused(h, act, next.activation_alpha());
                    ++i;
                    continue;
                }
            }
            h = l.forward(h);
        }
        t.set_label(outer);
        return h;
    }

    Shape output_shape(const Shape& in) const override {
        Shape s = in;
        for (std::size_t i = 0; i < layers_.size(); ++i) s = shape_after(i, s);
        return s;
    }
    void summary_rows(const Shape& input, std::vector<SummaryRow>& rows) const override {
        Shape s = input;
        for (std::size_t i = 0; i < layers_.size(); ++i) {
            s = shape_after(i, s);
            rows.push_back(SummaryRow{std::to_string(i), layers_[i]->describe(), s, layers_[i]->num_parameters(), "", layers_[i]->trainable_mark()});
        }
    }
    LayerKind kind() const override { return LayerKind::sequential; }
    std::string type_name() const override { return "Sequential"; }

protected:
    void collect_children(std::vector<NamedModule<T>>& out) override {
        for (std::size_t i = 0; i < layers_.size(); ++i) out.emplace_back(std::to_string(i), layers_[i].get());
    }

private:
    void push(std::unique_ptr<Module<T>> l) {
        labels_.push_back(std::to_string(layers_.size()) + " (" + l->type_name() + ")");
        layers_.push_back(std::move(l));
        this->update_parameter_names();
    }
    void check_index(std::size_t i) const {
        if (i >= layers_.size())
            throw value_error("Sequential: layer index " + std::to_string(i) + " out of range for " + std::to_string(layers_.size()) + " layers");
    }
    Shape shape_after(std::size_t i, const Shape& s) const {
        try {
            return layers_[i]->output_shape(s);
        } catch (const shape_error& e) {
            throw shape_error("Sequential layer " + std::to_string(i) + " (" + layers_[i]->describe() + "): " + e.what());
        }
    }

    std::vector<std::unique_ptr<Module<T>>> layers_;
    std::vector<std::string> labels_;  ///< tape labels ("2 (Dense)") named by anomaly errors
    bool fuse_ = true;
};

} // namespace nn
} // namespace tapir
