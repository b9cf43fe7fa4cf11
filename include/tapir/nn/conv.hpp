#pragma once
/// Convolutional layers, channels-first with PyTorch's parameter layout and default init:
/// Conv1d, Conv2d, ConvTranspose2d, MaxPool1d/2d, AvgPool1d/2d, GlobalAvgPool, GlobalMaxPool,
/// Flatten, Upsample (nearest). Weights are (Cout, Cin/groups, k...) (transposed: (Cin,
/// Cout/groups, k...)), so a state dict copied from PyTorch gives PyTorch's outputs. Init as
/// torch.nn: kaiming_uniform(a = sqrt(5)) for the weight, i.e. U(-1/sqrt(fan_in), +), and the bias
/// from the same range (He et al., arXiv:1502.01852). CNNs on jet images: de Oliveira et al.,
/// arXiv:1511.05190; Kasieczka et al., arXiv:1701.08784.
///
///     tapir::Rng rng(1);
///     tapir::nn::ConvOptions same;
///     same.same = true;
///     tapir::nn::Sequential<float> cnn;
///     cnn.add<tapir::nn::Conv2d<float>>(1, 8, 4, rng, same).add<tapir::nn::ReLU<float>>()
///        .add<tapir::nn::MaxPool2d<float>>(2).add<tapir::nn::Flatten<float>>()
///        .add<tapir::nn::Dense<float>>(8 * 20 * 20, 1, rng);
///     tapir::Var<float> logits = cnn(tape.view(images));  // images (N, 1, 40, 40)

#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../autodiff/conv.hpp"
#include "../autodiff/ops.hpp"
#include "../error.hpp"
#include "../random.hpp"
#include "init.hpp"
#include "module.hpp"

namespace tapir {
namespace nn {

/// Hyper-parameters of the convolution layers. For 1-D layers the width fields apply
/// (stride.w, padding.left and .right, dilation.w).
struct ConvOptions {
    Size2 stride = 1;
    Pad2d padding = 0;
    bool same = false;         ///< 'same' padding (stride 1): the output keeps the input size; overrides padding
    Size2 dilation = 1;
    std::size_t groups = 1;
    bool bias = true;
    Size2 output_padding = 0;  ///< ConvTranspose2d only
};

namespace detail {
inline std::string size2_text(Size2 s) { return std::to_string(s.h) + "x" + std::to_string(s.w); }
/// Weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch.nn.Conv defaults), fan_in = (Cin/groups) kh kw.
template <class T>
void torch_conv_init(Tensor<T>& w, Tensor<T>* b, std::size_t fan_in, Rng& rng) {
    const double bound = fan_in ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    init::uniform(w, rng, -bound, bound);
    if (b) init::uniform(*b, rng, -bound, bound);
}
inline std::string conv_text(const char* type, std::size_t in, std::size_t out, Size2 k, const ConvOptions& o, bool one_d) {
    std::string s = std::string(type) + "(" + std::to_string(in) + "->" + std::to_string(out) + ", " +
                    (one_d ? std::to_string(k.w) : size2_text(k));
    if (o.stride.h != 1 || o.stride.w != 1) s += ", stride " + (one_d ? std::to_string(o.stride.w) : size2_text(o.stride));
    if (o.same) s += ", same";
    else if (o.padding.top || o.padding.bottom || o.padding.left || o.padding.right) {
        const Pad2d& p = o.padding;
        s += ", pad " + (one_d ? (p.left == p.right ? std::to_string(p.left) : std::to_string(p.left) + "," + std::to_string(p.right))
                               : (p.top == p.bottom && p.left == p.right ? size2_text(Size2(p.top, p.left))
                                                                          : std::to_string(p.top) + "," + std::to_string(p.bottom) + "," +
                                                                                std::to_string(p.left) + "," + std::to_string(p.right)));
    }
    if (o.dilation.h != 1 || o.dilation.w != 1) s += ", dilation " + (one_d ? std::to_string(o.dilation.w) : size2_text(o.dilation));
    if (o.groups != 1) s += ", groups " + std::to_string(o.groups);
    if (!o.bias) s += ", no bias";
    return s + ")";
}
inline void check_conv_layer(const char* type, std::size_t in, std::size_t out, Size2 k, const ConvOptions& o) {
    if (in == 0 || out == 0 || k.h == 0 || k.w == 0)
        throw value_error(std::string(type) + ": channels and kernel size must be positive, got " + std::to_string(in) + " -> " +
                          std::to_string(out) + ", kernel " + size2_text(k));
    if (o.groups == 0 || in % o.groups != 0 || out % o.groups != 0)
        throw value_error(std::string(type) + ": " + std::to_string(in) + " input and " + std::to_string(out) +
                          " output channels must both be divisible by groups = " + std::to_string(o.groups));
    if (o.same && (o.stride.h != 1 || o.stride.w != 1))
        throw value_error(std::string(type) + ": 'same' padding needs stride 1 (as PyTorch), got stride " + size2_text(o.stride));
}
} // namespace detail

/// What the convolution layers share: the weight and bias, their PyTorch layout and init, the
/// channel counts and options, the check of an input's channels, and the name and description.
template <class T>
class ConvLayer : public Module<T> {
public:
    Parameter<T> weight;
    Parameter<T> bias;  ///< (out,); empty without bias

    std::size_t in_channels() const noexcept { return in_; }
    std::size_t out_channels() const noexcept { return out_; }
    Size2 kernel_size() const noexcept { return k_; }
    const ConvOptions& options() const noexcept { return o_; }
    std::string type_name() const override { return type_; }
    std::string describe() const override { return detail::conv_text(type_, in_, out_, k_, o_, one_d_); }

protected:
    /// weight (out, in/groups, k...) or, transposed, (in, out/groups, kh, kw); 1-D kernels have kh = 1.
    ConvLayer(const char* type, std::size_t in, std::size_t out, Size2 k, Rng& rng, const ConvOptions& o, bool one_d, bool transposed)
        : type_(type), in_(in), out_(out), k_(k), o_(o), one_d_(one_d) {
        detail::check_conv_layer(type, in, out, k, o);
        const std::size_t rows = transposed ? in : out, cols = (transposed ? out : in) / o.groups;
        weight = Parameter<T>("weight", one_d ? Tensor<T>(Shape{rows, cols, k.w}) : Tensor<T>(Shape{rows, cols, k.h, k.w}));
        if (o.bias) bias = Parameter<T>("bias", Tensor<T>(Shape{out}));
        detail::torch_conv_init(weight.value, o.bias ? &bias.value : nullptr, cols * k.h * k.w, rng);
    }
    void collect_parameters(std::vector<NamedParameter<T>>& out) override {
        out.emplace_back("weight", &weight);
        if (o_.bias) out.emplace_back("bias", &bias);
    }
    void check_input(const Shape& s) const {
        if (TAPIR_UNLIKELY(s.rank() != (one_d_ ? 3u : 4u) || s[1] != in_))
            throw shape_error(this->describe() + ": expected input of shape (N, " + std::to_string(in_) + (one_d_ ? ", L)" : ", H, W)") +
                              ", got " + s.str());
    }
    const char* type_;  ///< "Conv2d", "Conv1d", "ConvTranspose2d"
    std::size_t in_, out_;
    Size2 k_;
    ConvOptions o_;
    bool one_d_;
};

/// 2-D convolution layer: (N, in, H, W) to (N, out, OH, OW). weight (out, in/groups, kh, kw), bias (out,).
template <class T>
class Conv2d : public Cloneable<Conv2d<T>, ConvLayer<T>> {
public:
    Conv2d(std::size_t in, std::size_t out, Size2 kernel, Rng& rng, const ConvOptions& opt = {})
        : Conv2d::Cloneable("Conv2d", in, out, kernel, rng, opt, false, false), pad_(opt.same ? Pad2d::same(kernel, opt.dilation) : opt.padding) {}
    Pad2d padding() const noexcept { return pad_; }

    Var<T> forward(const Var<T>& x) override { return apply(x, Activation::none, T(0)); }
    bool can_fuse_activation() const noexcept override { return true; }
    /// This layer followed by an activation, as one convolution node (what Sequential calls).
    Var<T> forward_fused(const Var<T>& x, Activation act, T alpha) override { return apply(x, act, alpha); }
    Shape output_shape(const Shape& in) const override {
        this->check_input(in);
        const ConvOptions& o = this->o_;
        const std::size_t oh = tapir::detail::sweep_len(in[2], pad_.top + pad_.bottom, this->k_.h, o.dilation.h, o.stride.h);
        const std::size_t ow = tapir::detail::sweep_len(in[3], pad_.left + pad_.right, this->k_.w, o.dilation.w, o.stride.w);
        if (oh == 0 || ow == 0) throw shape_error(this->describe() + ": the kernel is larger than the padded input " + in.str());
        return Shape{in[0], this->out_, oh, ow};
    }

private:
    Var<T> apply(const Var<T>& x, Activation act, T alpha) {
        this->check_input(x.shape());
        Tape<T>& t = x.tape();
        const ConvOptions& o = this->o_;
        const Var<T> w = this->use(t, this->weight);
        if (!o.bias) return conv2d(x, w, nullptr, o.stride, pad_, o.dilation, o.groups, act, alpha);
        const Var<T> b = this->use(t, this->bias);
        return conv2d(x, w, &b, o.stride, pad_, o.dilation, o.groups, act, alpha);
    }
    Pad2d pad_;
};

/// 1-D convolution layer: (N, in, L) to (N, out, OL). weight (out, in/groups, k), bias (out,).
template <class T>
class Conv1d : public Cloneable<Conv1d<T>, ConvLayer<T>> {
public:
    Conv1d(std::size_t in, std::size_t out, std::size_t kernel, Rng& rng, const ConvOptions& opt = {})
        : Conv1d::Cloneable("Conv1d", in, out, Size2(1, kernel), rng, opt, true, false) {
        const Pad2d p = opt.same ? Pad2d::same(Size2(1, kernel), Size2(1, opt.dilation.w)) : opt.padding;
        pl_ = p.left, pr_ = p.right;
    }

    /// Zero padding before and after the sequence ('same' resolved).
    std::size_t padding_left() const noexcept { return pl_; }
    std::size_t padding_right() const noexcept { return pr_; }

    Var<T> forward(const Var<T>& x) override {
        this->check_input(x.shape());
        Tape<T>& t = x.tape();
        const ConvOptions& o = this->o_;
        const Var<T> w = this->use(t, this->weight);
        if (!o.bias) return conv1d(x, w, static_cast<const Var<T>*>(nullptr), o.stride.w, pl_, o.dilation.w, o.groups, pr_);
        const Var<T> b = this->use(t, this->bias);
        return conv1d(x, w, &b, o.stride.w, pl_, o.dilation.w, o.groups, pr_);
    }
    Shape output_shape(const Shape& in) const override {
        this->check_input(in);
        const std::size_t ol = tapir::detail::sweep_len(in[2], pl_ + pr_, this->k_.w, this->o_.dilation.w, this->o_.stride.w);
        if (ol == 0) throw shape_error(this->describe() + ": the kernel is larger than the padded input " + in.str());
        return Shape{in[0], this->out_, ol};
    }

private:
    std::size_t pl_ = 0, pr_ = 0;
};

/// 2-D transposed convolution layer (a decoder's upsampling): (N, in, H, W) to (N, out, OH, OW),
/// OH = (H - 1) stride - 2 padding + dilation (kh - 1) + output_padding + 1. weight (in, out/groups, kh, kw).
/// Padding is symmetric (padding.top and padding.left are used).
template <class T>
class ConvTranspose2d : public Cloneable<ConvTranspose2d<T>, ConvLayer<T>> {
public:
    ConvTranspose2d(std::size_t in, std::size_t out, Size2 kernel, Rng& rng, const ConvOptions& opt = {})
        : ConvTranspose2d::Cloneable("ConvTranspose2d", in, out, kernel, rng, checked(opt), false, true) {}
    Var<T> forward(const Var<T>& x) override {
        this->check_input(x.shape());
        Tape<T>& t = x.tape();
        const ConvOptions& o = this->o_;
        const Var<T> w = this->use(t, this->weight);
        const Size2 p(o.padding.top, o.padding.left);
        if (!o.bias) return conv_transpose2d(x, w, nullptr, o.stride, p, o.output_padding, o.groups, o.dilation);
        const Var<T> b = this->use(t, this->bias);
        return conv_transpose2d(x, w, &b, o.stride, p, o.output_padding, o.groups, o.dilation);
    }
    Shape output_shape(const Shape& in) const override {
        this->check_input(in);
        const ConvOptions& o = this->o_;
        const auto len = [](std::size_t n, std::size_t s, std::size_t p, std::size_t d, std::size_t k, std::size_t op) {
            const std::size_t full = (n - 1) * s + d * (k - 1) + op + 1;
            return full > 2 * p ? full - 2 * p : 0;
        };
        const std::size_t oh = in[2] ? len(in[2], o.stride.h, o.padding.top, o.dilation.h, this->k_.h, o.output_padding.h) : 0;
        const std::size_t ow = in[3] ? len(in[3], o.stride.w, o.padding.left, o.dilation.w, this->k_.w, o.output_padding.w) : 0;
        if (oh == 0 || ow == 0) throw shape_error(this->describe() + ": no output for input " + in.str());
        return Shape{in[0], this->out_, oh, ow};
    }

private:
    static const ConvOptions& checked(const ConvOptions& opt) {
        if (opt.same) throw value_error("ConvTranspose2d: 'same' padding is not supported; give the padding");
        if (opt.padding.top != opt.padding.bottom || opt.padding.left != opt.padding.right)
            throw value_error("ConvTranspose2d: padding must be symmetric (top = bottom, left = right)");
        return opt;
    }
};

namespace detail {
/// Pooling hyper-parameters shared by the pooling layers (stride 0 means the kernel).
struct PoolGeom {
    Size2 kernel, stride;
    Pad2d padding;
    std::string text(const char* type, bool one_d) const {
        std::string s = std::string(type) + "(" + (one_d ? std::to_string(kernel.w) : size2_text(kernel));
        if (stride.h != kernel.h || stride.w != kernel.w) s += ", stride " + (one_d ? std::to_string(stride.w) : size2_text(stride));
        if (padding.top || padding.left) s += ", pad " + (one_d ? std::to_string(padding.left) : size2_text(Size2(padding.top, padding.left)));
        return s + ")";
    }
    Shape out(const Shape& in, bool one_d) const {
        const std::size_t w = one_d ? in[2] : in[3];
        const std::size_t ow = tapir::detail::sweep_len(w, padding.left + padding.right, kernel.w, 1, stride.w);
        if (one_d) return Shape{in[0], in[1], ow};
        return Shape{in[0], in[1], tapir::detail::sweep_len(in[2], padding.top + padding.bottom, kernel.h, 1, stride.h), ow};
    }
};
inline PoolGeom pool_geom(Size2 k, Size2 s, Size2 p) {
    return PoolGeom{k, s.h == 0 && s.w == 0 ? k : s, Pad2d(p.h, p.w)};
}
} // namespace detail

/// Max or average pooling over (N, C, H, W) (MaxPool2d, AvgPool2d) or (N, C, L) (MaxPool1d, AvgPool1d).
template <class T, bool IsMax, bool OneD>
class Pool : public Cloneable<Pool<T, IsMax, OneD>, Module<T>> {
public:
    /// kernel, stride (0: the kernel), padding (at most half the kernel).
    explicit Pool(Size2 kernel, Size2 stride = 0, Size2 padding = 0)
        : g_(OneD ? detail::pool_geom(Size2(1, kernel.w), Size2(stride.h == 0 && stride.w == 0 ? 0 : 1, stride.w), Size2(0, padding.w))
                  : detail::pool_geom(kernel, stride, padding)) {
        if (g_.kernel.h == 0 || g_.kernel.w == 0) throw value_error(type_name() + ": kernel size must be positive");
    }
    static constexpr bool is_max = IsMax;
    static constexpr bool one_d = OneD;
    /// Window, stride and padding (1-D layers: height 1, the width fields).
    Size2 kernel_size() const noexcept { return g_.kernel; }
    Size2 stride() const noexcept { return g_.stride; }
    Pad2d padding() const noexcept { return g_.padding; }
    Var<T> forward(const Var<T>& x) override {
        check_input(x.shape());
        if (OneD) return IsMax ? max_pool1d(x, g_.kernel.w, g_.stride.w, g_.padding.left) : avg_pool1d(x, g_.kernel.w, g_.stride.w, g_.padding.left);
        return IsMax ? max_pool2d(x, g_.kernel, g_.stride, g_.padding) : avg_pool2d(x, g_.kernel, g_.stride, g_.padding);
    }
    Shape output_shape(const Shape& in) const override {
        check_input(in);
        const Shape s = g_.out(in, OneD);
        if (s.numel() == 0 && in.numel() != 0) throw shape_error(this->describe() + ": the kernel is larger than the padded input " + in.str());
        return s;
    }
    std::string type_name() const override { return std::string(IsMax ? "MaxPool" : "AvgPool") + (OneD ? "1d" : "2d"); }
    std::string describe() const override { return g_.text(type_name().c_str(), OneD); }

private:
    void check_input(const Shape& s) const {
        if (TAPIR_UNLIKELY(s.rank() != (OneD ? 3u : 4u)))
            throw shape_error(describe() + ": expected input of shape " + (OneD ? "(N, C, L)" : "(N, C, H, W)") + ", got " + s.str());
    }
    detail::PoolGeom g_;
};
template <class T>
using MaxPool2d = Pool<T, true, false>;
template <class T>
using AvgPool2d = Pool<T, false, false>;
template <class T>
using MaxPool1d = Pool<T, true, true>;
template <class T>
using AvgPool1d = Pool<T, false, true>;

/// Mean (GlobalAvgPool) or maximum (GlobalMaxPool) over all positions: (N, C, ...) to (N, C).
template <class T, bool IsMax>
class GlobalPool : public Cloneable<GlobalPool<T, IsMax>, Module<T>> {
public:
    Var<T> forward(const Var<T>& x) override { return IsMax ? global_max_pool(x) : global_avg_pool(x); }
    Shape output_shape(const Shape& in) const override {
        if (in.rank() < 3) throw shape_error(type_name() + ": expected input of shape (N, C, L) or (N, C, H, W), got " + in.str());
        return Shape{in[0], in[1]};
    }
    std::string type_name() const override { return IsMax ? "GlobalMaxPool" : "GlobalAvgPool"; }
};
template <class T>
using GlobalAvgPool = GlobalPool<T, false>;
template <class T>
using GlobalMaxPool = GlobalPool<T, true>;

/// (N, ...) to (N, product of the rest), e.g. between convolutions and Dense layers.
template <class T>
class Flatten : public Cloneable<Flatten<T>, Module<T>> {
public:
    Var<T> forward(const Var<T>& x) override { return flatten(x); }
    Shape output_shape(const Shape& in) const override {
        if (in.rank() < 1) throw shape_error("Flatten: expected a batch axis, got shape " + in.str());
        return Shape{in[0], in[0] ? in.numel() / in[0] : 0};
    }
    std::string type_name() const override { return "Flatten"; }
};

/// (N, ...) to (N, shape...): the same values in a new per-row shape (as Keras' Reshape, whose
/// target shape excludes the batch axis), e.g. a decoder's Dense output as (C, H, W) feature maps.
template <class T>
class Reshape : public Cloneable<Reshape<T>, Module<T>> {
public:
    explicit Reshape(Shape target) : target_(std::move(target)) {
        if (target_.rank() == 0 || target_.rank() > 3)
            throw value_error("Reshape: the target shape (without the batch axis) must have rank 1 to 3, got " + target_.str());
    }
    Var<T> forward(const Var<T>& x) override { return reshape(x, output_shape(x.shape())); }
    Shape output_shape(const Shape& in) const override {
        if (in.rank() < 1 || (in[0] && in.numel() / in[0] != target_.numel()))
            throw shape_error(describe() + ": input " + in.str() + " does not hold " + std::to_string(target_.numel()) + " values per row");
        Shape s{in[0]};
        for (std::size_t i = 0; i < target_.rank(); ++i) s.push_back(target_[i]);
        return s;
    }
    /// The per-row shape (without the batch axis).
    const Shape& target() const { return target_; }
    std::string type_name() const override { return "Reshape"; }
    std::string describe() const override { return "Reshape" + target_.str(); }

private:
    Shape target_;
};

/// Nearest-neighbour upsampling by integer factors: (N, C, H, W) to (N, C, H sh, W sw).
template <class T>
class Upsample : public Cloneable<Upsample<T>, Module<T>> {
public:
    explicit Upsample(Size2 scale) : s_(scale) {
        if (scale.h == 0 || scale.w == 0) throw value_error("Upsample: scale factors must be positive, got " + detail::size2_text(scale));
    }
    Size2 scale() const noexcept { return s_; }
    Var<T> forward(const Var<T>& x) override { return upsample_nearest2d(x, s_); }
    Shape output_shape(const Shape& in) const override {
        if (in.rank() != 4) throw shape_error(describe() + ": expected input of shape (N, C, H, W), got " + in.str());
        return Shape{in[0], in[1], in[2] * s_.h, in[3] * s_.w};
    }
    std::string type_name() const override { return "Upsample"; }
    std::string describe() const override { return "Upsample(" + detail::size2_text(s_) + ", nearest)"; }

private:
    Size2 s_;
};

} // namespace nn
} // namespace tapir
