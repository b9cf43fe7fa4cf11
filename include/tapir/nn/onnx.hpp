#pragma once
/// ONNX export and import of models (https://onnx.ai/onnx/operators/, default domain, opset 13
/// written; opsets 9 to 17 read), on the hand-written protobuf structs of io/onnx.hpp.
///
///     tapir::nn::export_onnx(model, "tagger.onnx", tapir::Shape{1, 16});   // a Sequential
///     tapir::nn::Model<float> m = tapir::nn::import_onnx<float>("from_torch.onnx");
///     m.eval();                                   // imported models start in training mode
///
/// Export writes Dense as Gemm, the activations (Relu, Sigmoid, Tanh, LeakyRelu, Elu, Softplus),
/// Softmax, BatchNorm as BatchNormalization (running statistics, ONNX momentum = 1 - tapir's),
/// Dropout as nothing (identity at inference), Flatten, Conv1d/Conv2d as Conv, the pools as
/// ConvTranspose2d as ConvTranspose, MaxPool/AveragePool (count_include_pad = 1, as tapir), GlobalAvgPool/GlobalMaxPool as
/// GlobalAveragePool/GlobalMaxPool + Flatten, and SimpleRNN/LSTM/GRU as RNN/LSTM/GRU between
/// Transpose nodes (ONNX is time-major; gates reordered: ONNX LSTM i o f c vs tapir's and PyTorch's
/// i f g o, ONNX GRU z r h vs r z n, linear_before_reset = 1 as PyTorch), as torch.onnx.export does.
/// A functional model (nn::Model, several inputs: to_onnx(model, {shapes...})) writes its layer
/// calls the same way, add, multiply and concat as Add, Mul and Concat, and a DeepSet or
/// EnergyFlowNetwork as phi on the (B N, F) rows, a Mul by the mask (1/0; EFN: by z times the mask)
/// and a ReduceSum over the particles (mean: a Div by the count). Function nodes (Model::apply) and
/// layers without an ONNX form are refused with an error naming them.
///
/// Import builds an nn::Model of tapir layers (trainable, to fine-tune) for the same operators plus
/// the plumbing exporters emit around them (Gemm/MatMul, Add, Sub, Mul, Div, Max by a scalar, Transpose, Squeeze, Unsqueeze,
/// Reshape, Gather, Slice, Concat, ReduceSum, Pad with zeros, Identity, Constant, and the Shape, ConstantOfShape,
/// Expand and Cast with which PyTorch builds a recurrent layer's zero initial state). Weights must
/// be initializers or Constants. BatchNormalization after a convolution runs on the (N H W, C)
/// rows. Any other operator (Einsum, for one) or attribute (a bidirectional LSTM or GRU) is refused with an error naming it and its node, before anything
/// is built; so are cyclic graphs and values that nothing produces.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../autodiff/conv.hpp"
#include "../autodiff/linalg.hpp"
#include "../autodiff/ops.hpp"
#include "../error.hpp"
#include "../io/onnx.hpp"
#include "../random.hpp"
#include "conv.hpp"
#include "layers.hpp"
#include "model.hpp"
#include "module.hpp"
#include "recurrent.hpp"
#include "sequential.hpp"
#include "sets.hpp"

namespace tapir {
namespace nn {

struct OnnxExportOptions {
    std::int64_t opset = 13;
    std::string input_name = "input";
    std::string output_name = "output";
    bool dynamic_batch = true;  ///< the batch axis is the symbolic "N" rather than the given size
};

namespace detail {
namespace ox = io::onnx;

template <class T>
constexpr std::int32_t onnx_real_type() {
    return sizeof(T) == 4 ? ox::kFloat : ox::kDouble;
}

inline ox::AttributeProto onnx_attr_i(const std::string& n, std::int64_t v) {
    ox::AttributeProto a;
    a.name = n, a.type = ox::kAttrInt, a.i = v;
    return a;
}
inline ox::AttributeProto onnx_attr_f(const std::string& n, double v) {
    ox::AttributeProto a;
    a.name = n, a.type = ox::kAttrFloat, a.f = static_cast<float>(v);
    return a;
}
inline ox::AttributeProto onnx_attr_ints(const std::string& n, std::vector<std::int64_t> v) {
    ox::AttributeProto a;
    a.name = n, a.type = ox::kAttrInts, a.ints = std::move(v);
    return a;
}
inline std::int64_t i64(std::size_t v) { return static_cast<std::int64_t>(v); }

/// Builds the graph of a Sequential, one layer at a time.
template <class T>
class OnnxWriter {
public:
    ox::GraphProto g;

    std::string init(const std::string& base, const std::vector<std::int64_t>& dims, std::vector<double> values) {
        ox::TensorProto t;
        t.name = fresh(base);
        t.data_type = onnx_real_type<T>();
        t.dims = dims;
        t.values = std::move(values);
        g.initializer.push_back(std::move(t));
        return g.initializer.back().name;
    }
    std::string init(const std::string& base, const Tensor<T>& x) {
        std::vector<std::int64_t> dims;
        for (std::size_t i = 0; i < x.shape().rank(); ++i) dims.push_back(i64(x.shape()[i]));
        return init(base, dims, std::vector<double>(x.data(), x.data() + x.size()));
    }
    std::string init_i64(const std::string& base, std::vector<std::int64_t> v) {
        ox::TensorProto t;
        t.name = fresh(base);
        t.data_type = ox::kInt64;
        t.dims = {i64(v.size())};
        t.ints = std::move(v);
        g.initializer.push_back(std::move(t));
        return g.initializer.back().name;
    }
    std::vector<std::string> node(const std::string& op, const std::string& name, std::vector<std::string> in,
                                  std::vector<ox::AttributeProto> attrs = {}, std::size_t outputs = 1) {
        ox::NodeProto n;
        n.op_type = op;
        n.name = fresh(name);
        n.input = std::move(in);
        for (std::size_t k = 0; k < outputs; ++k) n.output.push_back(n.name + (k ? "_out" + std::to_string(k) : "_out"));
        n.attribute = std::move(attrs);
        g.node.push_back(n);
        return n.output;
    }
    std::string node1(const std::string& op, const std::string& name, std::vector<std::string> in, std::vector<ox::AttributeProto> attrs = {}) {
        return node(op, name, std::move(in), std::move(attrs))[0];
    }

    std::string activation(Activation act, T alpha, const std::string& name, const std::string& x) {
        switch (act) {
        case Activation::none: return x;
        case Activation::relu: return node1("Relu", name, {x});
        case Activation::sigmoid: return node1("Sigmoid", name, {x});
        case Activation::tanh: return node1("Tanh", name, {x});
        case Activation::softplus: return node1("Softplus", name, {x});
        case Activation::leaky_relu: return node1("LeakyRelu", name, {x}, {onnx_attr_f("alpha", static_cast<double>(alpha))});
        case Activation::elu: return node1("Elu", name, {x}, {onnx_attr_f("alpha", static_cast<double>(alpha))});
        }
        return x;
    }

    /// Appends the nodes of layer m (named `name`) applied to value x of shape in; returns the output value.
    std::string layer(const Module<T>& m, const std::string& name, const std::string& x, const Shape& in_shape) {
        if (const auto* s = dynamic_cast<const Sequential<T>*>(&m)) {
            std::string h = x;
            Shape hs = in_shape;
            const auto ls = s->layers();
            for (std::size_t i = 0; i < ls.size(); ++i) {
                h = layer(*ls[i], name.empty() ? std::to_string(i) : name + "." + std::to_string(i), h, hs);
                hs = ls[i]->output_shape(hs);
            }
            return h;
        }
        if (const auto* fm = dynamic_cast<const Model<T>*>(&m)) return model(*fm, name, {x}, {in_shape});
        if (const auto* sn = dynamic_cast<const SetNetwork<T>*>(&m)) return set_network(*sn, name, x, nullptr, in_shape);
        if (const auto* d = dynamic_cast<const Dense<T>*>(&m)) {
            std::vector<std::string> in{x, init(name + ".weight", d->weight.value)};
            if (d->has_bias()) in.push_back(init(name + ".bias", d->bias.value));
            return activation(d->activation(), d->alpha(), name + ".act", node1("Gemm", name, in));
        }
        if (const auto* a = dynamic_cast<const ActivationLayer<T>*>(&m)) {
            if (a->activation() == Activation::none) return node1("Identity", name, {x});
            return activation(a->activation(), a->alpha(), name, x);
        }
        if (const auto* sm = dynamic_cast<const Softmax<T>*>(&m)) return node1("Softmax", name, {x}, {onnx_attr_i("axis", sm->axis())});
        if (dynamic_cast<const Dropout<T>*>(&m)) return x;
        if (const auto* b = dynamic_cast<const BatchNorm<T>*>(&m)) {
            return node1("BatchNormalization", name,
                         {x, init(name + ".weight", b->weight.value), init(name + ".bias", b->bias.value),
                          init(name + ".running_mean", b->running_mean), init(name + ".running_var", b->running_var)},
                         {onnx_attr_f("epsilon", b->eps()), onnx_attr_f("momentum", 1.0 - b->momentum())});
        }
        if (dynamic_cast<const Flatten<T>*>(&m)) return node1("Flatten", name, {x}, {onnx_attr_i("axis", 1)});
        if (const auto* c = dynamic_cast<const Conv2d<T>*>(&m)) {
            const ConvOptions& o = c->options();
            const Pad2d p = c->padding();
            return conv(*c, name, x, {i64(c->kernel_size().h), i64(c->kernel_size().w)},
                        {i64(p.top), i64(p.left), i64(p.bottom), i64(p.right)}, {i64(o.stride.h), i64(o.stride.w)},
                        {i64(o.dilation.h), i64(o.dilation.w)});
        }
        if (const auto* c = dynamic_cast<const Conv1d<T>*>(&m)) {
            const ConvOptions& o = c->options();
            return conv(*c, name, x, {i64(c->kernel_size().w)}, {i64(c->padding_left()), i64(c->padding_right())}, {i64(o.stride.w)},
                        {i64(o.dilation.w)});
        }
        if (const auto* c = dynamic_cast<const ConvTranspose2d<T>*>(&m)) {
            const ConvOptions& o = c->options();
            const Size2 k = c->kernel_size();
            std::vector<std::string> in{x, init(name + ".weight", c->weight.value)};
            if (o.bias) in.push_back(init(name + ".bias", c->bias.value));
            return node1("ConvTranspose", name, in,
                         {onnx_attr_ints("kernel_shape", {i64(k.h), i64(k.w)}),
                          onnx_attr_ints("pads", {i64(o.padding.top), i64(o.padding.left), i64(o.padding.top), i64(o.padding.left)}),
                          onnx_attr_ints("strides", {i64(o.stride.h), i64(o.stride.w)}), onnx_attr_ints("dilations", {i64(o.dilation.h), i64(o.dilation.w)}),
                          onnx_attr_ints("output_padding", {i64(o.output_padding.h), i64(o.output_padding.w)}), onnx_attr_i("group", i64(o.groups))});
        }
        if (const auto* p = dynamic_cast<const MaxPool2d<T>*>(&m)) return pool(*p, name, x);
        if (const auto* p = dynamic_cast<const AvgPool2d<T>*>(&m)) return pool(*p, name, x);
        if (const auto* p = dynamic_cast<const MaxPool1d<T>*>(&m)) return pool(*p, name, x);
        if (const auto* p = dynamic_cast<const AvgPool1d<T>*>(&m)) return pool(*p, name, x);
        if (dynamic_cast<const GlobalAvgPool<T>*>(&m))
            return node1("Flatten", name + ".flatten", {node1("GlobalAveragePool", name, {x})}, {onnx_attr_i("axis", 1)});
        if (dynamic_cast<const GlobalMaxPool<T>*>(&m))
            return node1("Flatten", name + ".flatten", {node1("GlobalMaxPool", name, {x})}, {onnx_attr_i("axis", 1)});
        if (const auto* r = dynamic_cast<const RecurrentLayer<T>*>(&m)) return recurrent(*r, name, x);
        throw value_error("export_onnx: layer '" + name + "' (" + m.describe() + ") has no ONNX counterpart that tapir writes");
    }

    /// Appends the nodes of a functional model on values xs of shapes in (in input order).
    std::string model(const Model<T>& fm, const std::string& prefix, const std::vector<std::string>& xs, const std::vector<Shape>& in) {
        const std::size_t out = fm.output_node();
        if (xs.size() != fm.num_inputs())
            throw value_error("export_onnx: model '" + prefix + "' takes " + std::to_string(fm.num_inputs()) + " inputs, got " + std::to_string(xs.size()));
        std::vector<std::string> v(out + 1);
        std::vector<Shape> sh(out + 1);
        using K = typename Model<T>::NodeKind;
        for (std::size_t i = 0; i <= out; ++i) {
            const typename Model<T>::NodeInfo n = fm.node(i);
            const std::string where = prefix.empty() ? n.name : prefix + "." + n.name;
            std::vector<std::string> a;
            std::vector<Shape> as;
            for (std::size_t k : n.inputs) a.push_back(v[k]), as.push_back(sh[k]);
            switch (n.kind) {
            case K::input:
                v[i] = xs[n.input_index], sh[i] = in[n.input_index];
                break;
            case K::call: {
                const auto* sn = dynamic_cast<const SetNetwork<T>*>(n.layer);
                if (a.size() == 1) v[i] = layer(*n.layer, where, a[0], as[0]);
                else if (sn && a.size() == 2) v[i] = set_network(*sn, where, a[0], &a[1], as[0]);
                else
                    throw value_error("export_onnx: node '" + where + "' calls layer '" + n.layer_name + "' (" + n.layer->describe() + ") on " +
                                      std::to_string(a.size()) + " inputs, which tapir does not write to ONNX");
                sh[i] = sn ? sn->output_shape(as[0]) : n.layer->output_shape_many(as);
                break;
            }
            case K::add:
            case K::multiply:
                v[i] = node1(n.kind == K::add ? "Add" : "Mul", where, a);
                sh[i] = as[0];
                break;
            case K::concat: {
                Shape s = as[0];
                const std::size_t last = s.rank() - 1;
                for (std::size_t k = 1; k < as.size(); ++k) s[last] += as[k][last];
                v[i] = node1("Concat", where, a, {onnx_attr_i("axis", i64(last))});
                sh[i] = s;
                break;
            }
            case K::function:
                throw value_error("export_onnx: node '" + where +
                                  "' is a function (Model::apply), which has no ONNX counterpart; build it from layers, add, multiply and concat");
            }
        }
        return v[out];
    }

    /// A DeepSet or EnergyFlowNetwork on x (B, N, F) and an optional 1/0 mask (B, N): phi on the
    /// rows (B N, F) as Gemm nodes, the sum over particles as Mul by the mask (EFN: by the energy
    /// fractions z, times the mask) then ReduceSum over axis 1, the mean as a Div by the count.
    std::string set_network(const SetNetwork<T>& sn, const std::string& name, const std::string& x, const std::string* mask, const Shape& in) {
        (void)sn.output_shape(in);  // checks (B, N, F)
        const auto* ds = dynamic_cast<const DeepSet<T>*>(&sn);
        const bool efn = dynamic_cast<const EnergyFlowNetwork<T>*>(&sn) != nullptr;
        if (!ds && !efn) throw value_error("export_onnx: layer '" + name + "' (" + sn.describe() + ") has no ONNX counterpart that tapir writes");
        const std::size_t N = in[1], F = in[2], L = sn.latent_size();
        std::string weights, feats = x;  // weights: (B, N, 1), empty when every particle counts once
        std::size_t A = F;
        if (mask) weights = node1("Unsqueeze", name + ".mask", {*mask, init_i64(name + ".mask_axes", {2})});
        if (efn) {
            const std::string axis = init_i64(name + ".feature_axis", {2});
            const std::string z = node1("Slice", name + ".z", {x, init_i64(name + ".z_start", {0}), init_i64(name + ".z_end", {1}), axis});
            weights = mask ? node1("Mul", name + ".masked_z", {z, weights}) : z;
            feats = node1("Slice", name + ".angles", {x, init_i64(name + ".angles_start", {1}), init_i64(name + ".angles_end", {i64(F)}), axis});
            A = F - 1;
        }
        const std::string rows = node1("Reshape", name + ".rows", {feats, init_i64(name + ".rows_shape", {-1, i64(A)})});
        const std::string h = layer(sn.phi, name + ".phi", rows, Shape{in[0] * N, A});
        std::string h3 = node1("Reshape", name + ".sets", {h, init_i64(name + ".sets_shape", {-1, i64(N), i64(L)})});
        if (!weights.empty()) h3 = node1("Mul", name + ".weighted", {h3, weights});
        std::string pooled = node1("ReduceSum", name + ".sum", {h3, init_i64(name + ".sum_axes", {1})}, {onnx_attr_i("keepdims", 0)});
        if (ds && ds->describe() == "DeepSet(mean)") {
            if (mask) {
                const std::string count =
                    node1("ReduceSum", name + ".count", {*mask, init_i64(name + ".count_axes", {1})}, {onnx_attr_i("keepdims", 1)});
                // An event without particles pools to 0 (its sum is 0), as tapir: divide by max(count, 1).
                pooled = node1("Div", name + ".mean", {pooled, node1("Max", name + ".count_at_least_1", {count, init(name + ".one", {1}, {1.0})})});
            } else {
                pooled = node1("Div", name + ".mean", {pooled, init(name + ".n", {1}, {static_cast<double>(N)})});
            }
        }
        return layer(sn.f, name + ".f", pooled, Shape{in[0], L});
    }

    /// Keeps a name (a graph input's) from being generated for anything else.
    void reserve(const std::string& n) { used_.insert(n); }

private:
    std::string fresh(const std::string& base) {
        std::string n = base.empty() ? "node" : base;
        for (std::size_t k = 1; !used_.insert(n).second; ++k) n = base + "_" + std::to_string(k);
        return n;
    }
    std::string conv(const ConvLayer<T>& c, const std::string& name, const std::string& x, std::vector<std::int64_t> kernel,
                     std::vector<std::int64_t> pads, std::vector<std::int64_t> strides, std::vector<std::int64_t> dilations) {
        std::vector<std::string> in{x, init(name + ".weight", c.weight.value)};
        if (c.options().bias) in.push_back(init(name + ".bias", c.bias.value));
        return node1("Conv", name, in,
                     {onnx_attr_ints("kernel_shape", std::move(kernel)), onnx_attr_ints("pads", std::move(pads)),
                      onnx_attr_ints("strides", std::move(strides)), onnx_attr_ints("dilations", std::move(dilations)),
                      onnx_attr_i("group", i64(c.options().groups))});
    }
    template <class P>
    std::string pool(const P& p, const std::string& name, const std::string& x) {
        const Size2 k = p.kernel_size(), s = p.stride();
        const Pad2d pd = p.padding();
        std::vector<ox::AttributeProto> attrs;
        if (P::one_d) {
            attrs = {onnx_attr_ints("kernel_shape", {i64(k.w)}), onnx_attr_ints("strides", {i64(s.w)}),
                     onnx_attr_ints("pads", {i64(pd.left), i64(pd.right)})};
        } else {
            attrs = {onnx_attr_ints("kernel_shape", {i64(k.h), i64(k.w)}), onnx_attr_ints("strides", {i64(s.h), i64(s.w)}),
                     onnx_attr_ints("pads", {i64(pd.top), i64(pd.left), i64(pd.bottom), i64(pd.right)})};
        }
        if (!P::is_max) attrs.push_back(onnx_attr_i("count_include_pad", 1));
        return node1(P::is_max ? "MaxPool" : "AveragePool", name, {x}, attrs);
    }
    /// Rows of a (G H, K) PyTorch-ordered weight in ONNX gate order as (1, G H, K).
    std::vector<double> gates_to_onnx(const Tensor<T>& w, RnnCell cell) const {
        const std::size_t rows = w.shape()[0], cols = w.shape().rank() > 1 ? w.shape()[1] : 1, G = rnn_gates(cell), H = rows / G;
        // ONNX block b holds PyTorch block order[b].
        static const std::size_t lstm[4] = {0, 3, 1, 2}, gru[3] = {1, 0, 2}, rnn[1] = {0};
        const std::size_t* order = cell == RnnCell::lstm ? lstm : cell == RnnCell::gru ? gru : rnn;
        std::vector<double> out;
        out.reserve(rows * cols);
        for (std::size_t b = 0; b < G; ++b)
            for (std::size_t r = 0; r < H; ++r)
                for (std::size_t c = 0; c < cols; ++c) out.push_back(static_cast<double>(w.data()[(order[b] * H + r) * cols + c]));
        return out;
    }
    std::string recurrent(const RecurrentLayer<T>& r, const std::string& name, const std::string& x) {
        const RnnCell cell = r.cell();
        const std::size_t G = rnn_gates(cell), H = r.hidden_size(), F = r.input_size();
        const std::string xt = node1("Transpose", name + ".to_time_major", {x}, {onnx_attr_ints("perm", {1, 0, 2})});
        std::vector<std::string> in{xt, init(name + ".W", {1, i64(G * H), i64(F)}, gates_to_onnx(r.weight_ih.value, cell)),
                                    init(name + ".R", {1, i64(G * H), i64(H)}, gates_to_onnx(r.weight_hh.value, cell))};
        if (r.bias_ih.value.size() != 0) {
            std::vector<double> b = gates_to_onnx(r.bias_ih.value, cell), bh = gates_to_onnx(r.bias_hh.value, cell);
            b.insert(b.end(), bh.begin(), bh.end());
            in.push_back(init(name + ".B", {1, i64(2 * G * H)}, std::move(b)));
        }
        std::vector<ox::AttributeProto> attrs{onnx_attr_i("hidden_size", i64(H))};
        if (cell == RnnCell::gru) attrs.push_back(onnx_attr_i("linear_before_reset", 1));
        const char* op = cell == RnnCell::lstm ? "LSTM" : cell == RnnCell::gru ? "GRU" : "RNN";
        const std::vector<std::string> y = node(op, name, in, attrs, 2);  // Y (T, 1, B, H), Y_h (1, B, H)
        if (r.return_sequences()) {
            const std::string sq = node1("Squeeze", name + ".squeeze", {y[0], init_i64(name + ".axes", {1})});
            return node1("Transpose", name + ".to_batch_major", {sq}, {onnx_attr_ints("perm", {1, 0, 2})});
        }
        return node1("Squeeze", name + ".squeeze", {y[1], init_i64(name + ".axes", {0})});
    }

    std::set<std::string> used_;
};

inline ox::ValueInfoProto onnx_value_info(const std::string& name, std::int32_t type, const Shape& s, bool dynamic_batch) {
    ox::ValueInfoProto v;
    v.name = name, v.elem_type = type, v.has_shape = true;
    for (std::size_t i = 0; i < s.rank(); ++i) {
        ox::Dim d;
        if (i == 0 && dynamic_batch) d.param = "N";
        else d.value = static_cast<std::int64_t>(s[i]);
        v.shape.push_back(d);
    }
    return v;
}
} // namespace detail

namespace detail {
template <class T>
io::onnx::ModelProto onnx_model(OnnxWriter<T>& w, const std::vector<std::string>& inputs, const std::vector<Shape>& shapes, const std::string& y,
                                const Shape& out_shape, const OnnxExportOptions& opt) {
    // The output gets the requested name through an Identity (the last node's output is generated).
    w.g.node.push_back(io::onnx::NodeProto{{y}, {opt.output_name}, "output", "Identity", "", {}});
    for (std::size_t i = 0; i < inputs.size(); ++i)
        w.g.input.push_back(onnx_value_info(inputs[i], onnx_real_type<T>(), shapes[i], opt.dynamic_batch));
    w.g.output.push_back(onnx_value_info(opt.output_name, onnx_real_type<T>(), out_shape, opt.dynamic_batch));
    io::onnx::ModelProto m;
    m.ir_version = opt.opset >= 15 ? 8 : 7;
    m.opset_import.push_back(io::onnx::OperatorSetId{"", opt.opset});
    m.graph = std::move(w.g);
    return m;
}
} // namespace detail

/// A functional model (nn/model.hpp) as an ONNX ModelProto for inputs of the given shapes (batch
/// axis included, in input() order). The graph inputs take the model's input names; layer
/// calls export as in a Sequential, add, multiply and concat as Add, Mul and Concat, and a
/// DeepSet or EnergyFlowNetwork called on (x, mask) as its masked sum (see OnnxWriter::set_network;
/// the mask must hold 1 and 0). A function node (Model::apply) has no ONNX form: value_error naming it.
template <class T>
io::onnx::ModelProto to_onnx(const Model<T>& model, const std::vector<Shape>& inputs, const OnnxExportOptions& opt = {}) {
    if (inputs.size() != model.num_inputs())
        throw value_error("export_onnx: the model takes " + std::to_string(model.num_inputs()) + " inputs, got " + std::to_string(inputs.size()) +
                          " shapes");
    const Shape out_shape = model.output_shape_many(inputs);  // checks the input shapes as forward would
    const std::vector<std::string> names = model.input_names();
    detail::OnnxWriter<T> w;
    w.g.name = "tapir";
    for (const auto& n : names) w.reserve(n);
    w.reserve(opt.output_name);
    const std::string y = w.model(model, "", names, inputs);
    return detail::onnx_model(w, names, inputs, y, out_shape, opt);
}

/// The model as an ONNX ModelProto for inputs of the given shape (batch axis included). A
/// Sequential (nested ones too), a functional model of one input, or a single layer; the layers
/// listed at the top of this header.
template <class T>
io::onnx::ModelProto to_onnx(const Module<T>& model, const Shape& input, const OnnxExportOptions& opt = {}) {
    if (const auto* g = dynamic_cast<const Model<T>*>(&model)) return to_onnx(*g, std::vector<Shape>{input}, opt);
    const Shape out_shape = model.output_shape(input);  // checks the input shape as forward would
    detail::OnnxWriter<T> w;
    w.g.name = "tapir";
    w.reserve(opt.input_name);
    w.reserve(opt.output_name);
    const std::string y = w.layer(model, "", opt.input_name, input);
    return detail::onnx_model(w, {opt.input_name}, {input}, y, out_shape, opt);
}

/// Writes the model as an ONNX file, atomically. input: the input shape with its batch axis.
template <class T>
void export_onnx(const Module<T>& model, const std::string& path, const Shape& input, const OnnxExportOptions& opt = {}) {
    io::onnx::save(to_onnx(model, input, opt), path);
}
/// Writes a functional model of several inputs as an ONNX file, atomically.
template <class T>
void export_onnx(const Model<T>& model, const std::string& path, const std::vector<Shape>& inputs, const OnnxExportOptions& opt = {}) {
    io::onnx::save(to_onnx(model, inputs, opt), path);
}

// ---- import -------------------------------------------------------------------------------------

namespace detail {

template <class T>
Var<T> onnx_permute(const Var<T>& x, const std::vector<std::size_t>& p) {
    const std::size_t r = x.shape().rank();
    if (p.size() != r) throw shape_error("onnx Transpose: permutation of " + std::to_string(p.size()) + " axes for a value of shape " + x.shape().str());
    switch (r) {
    case 1: return x;
    case 2: return permute(x, {p[0], p[1]});
    case 3: return permute(x, {p[0], p[1], p[2]});
    default: return permute(x, {p[0], p[1], p[2], p[3]});
    }
}
inline std::size_t onnx_axis(std::int64_t a, std::size_t rank, const char* op) {
    const std::int64_t r = static_cast<std::int64_t>(rank);
    if (a < -r || a >= r) throw shape_error(std::string("onnx ") + op + ": axis " + std::to_string(a) + " out of range for rank " + std::to_string(rank));
    return static_cast<std::size_t>(a < 0 ? a + r : a);
}

/// The importer: values are constants (initializers, Constant nodes) or nodes of the Model.
template <class T>
class OnnxReader : public ox::ConstantInputs<OnnxReader<T>> {
    using Base = ox::ConstantInputs<OnnxReader<T>>;
    friend Base;  // calls fail
    using Base::consts_, Base::constant, Base::need_real;

public:
    using Value = typename Model<T>::Value;
    OnnxReader(const ox::ModelProto& m, const std::string& src) : m_(m), src_(src) {}

    Model<T> run() {
        const ox::GraphProto& g = m_.graph;
        check_operators();
        for (const auto& t : g.initializer) consts_[t.name] = &t;
        // Inputs that are not initializers are the model's inputs.
        for (const auto& in : g.input) {
            if (consts_.count(in.name)) continue;
            if (in.elem_type != ox::kFloat && in.elem_type != ox::kDouble)
                fail("graph input '" + in.name + "' has data type " + ox::data_type_name(in.elem_type) + "; tapir models take float or double");
            Shape features;
            bool known = in.has_shape && !in.shape.empty();
            if (known && in.shape.size() > max_rank) fail("graph input '" + in.name + "' has rank " + std::to_string(in.shape.size()) + " (tapir: at most 4)");
            for (std::size_t i = 1; known && i < in.shape.size(); ++i) {
                if (in.shape[i].value <= 0 || in.shape[i].value > (std::int64_t(1) << 31)) known = false;
                else features.push_back(static_cast<std::size_t>(in.shape[i].value));
            }
            dyn_[in.name] = model_.input(unique(in.name), known ? features : Shape{});
        }
        if (dyn_.empty()) fail("the graph has no input");
        if (g.output.size() != 1) fail("tapir models have one output; the graph has " + std::to_string(g.output.size()));
        for (const auto& n : g.node)
            for (const auto& s : n.input) consumed_.insert(s);
        consumed_.insert(g.output[0].name);
        for (std::size_t i : topological_order()) build(g.node[i]);
        const auto it = dyn_.find(g.output[0].name);
        if (it == dyn_.end()) fail("the graph output '" + g.output[0].name + "' is not computed from the inputs");
        model_.output(it->second);
        return std::move(model_);
    }

private:
    [[noreturn]] void fail(const std::string& what) const { throw format_error(src_ + ": ONNX import: " + what); }
    static std::string node_name(const ox::NodeProto& n) { return n.name.empty() ? (n.output.empty() ? n.op_type : n.output[0]) : n.name; }
    [[noreturn]] void fail(const ox::NodeProto& n, const std::string& what) const {
        fail("node '" + node_name(n) + "' (" + n.op_type + "): " + what);
    }

    static bool supported(const std::string& op) {
        static const char* const ops[] = {"Gemm", "MatMul", "Add", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Softplus", "Softmax",
                                          "Identity", "Dropout", "Flatten", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool",
                                          "GlobalMaxPool", "BatchNormalization", "Transpose", "Squeeze", "Unsqueeze", "Reshape", "Gather",
                                          "Slice", "Concat", "ReduceSum", "LSTM", "GRU", "RNN", "Constant", "Shape", "ConstantOfShape",
                                          "Expand", "Cast", "Pad", "Sub", "Mul", "Div", "Max", "ConvTranspose"};
        for (const char* o : ops)
            if (op == o) return true;
        return false;
    }
    void check_operators() const {
        const std::int64_t v = m_.opset();
        if (v == 0) fail("the model imports no version of the default operator set (opset_import)");
        if (v < 7 || v > 20) fail("opset " + std::to_string(v) + " is not supported (7 to 20 are read)");
        for (const auto& n : m_.graph.node) {
            if (!(n.domain.empty() || n.domain == "ai.onnx") || !supported(n.op_type))
                fail("unsupported ONNX operator '" + (n.domain.empty() ? "" : n.domain + ".") + n.op_type + "' in node '" + node_name(n) + "'");
        }
    }

    /// Kahn's algorithm over the nodes; a value must come from an input, an initializer or a node.
    std::vector<std::size_t> topological_order() const {
        const auto& nodes = m_.graph.node;
        std::map<std::string, std::size_t> producer;
        for (std::size_t i = 0; i < nodes.size(); ++i)
            for (const auto& o : nodes[i].output) {
                if (o.empty()) continue;
                if (consts_.count(o) || dyn_.count(o) || !producer.emplace(o, i).second)
                    fail(nodes[i], "its output '" + o + "' is defined twice in the graph");
            }
        std::vector<std::size_t> pending(nodes.size(), 0);
        std::vector<std::vector<std::size_t>> users(nodes.size());
        for (std::size_t i = 0; i < nodes.size(); ++i)
            for (const auto& in : nodes[i].input) {
                if (in.empty() || consts_.count(in) || dyn_.count(in)) continue;
                const auto p = producer.find(in);
                if (p == producer.end()) fail(nodes[i], "reads '" + in + "', which no input, initializer or node defines");
                ++pending[i];
                users[p->second].push_back(i);
            }
        std::vector<std::size_t> order, ready;
        for (std::size_t i = nodes.size(); i-- > 0;)
            if (pending[i] == 0) ready.push_back(i);
        while (!ready.empty()) {
            const std::size_t i = ready.back();
            ready.pop_back();
            order.push_back(i);
            for (std::size_t u : users[i])
                if (--pending[u] == 0) ready.push_back(u);
        }
        if (order.size() != nodes.size()) {
            // Every node left waits for another one left: walk back until a node repeats, one on a cycle.
            std::size_t cur = 0;
            while (pending[cur] == 0) ++cur;
            std::vector<bool> seen(nodes.size(), false);
            while (!seen[cur]) {
                seen[cur] = true;
                for (const auto& in : nodes[cur].input) {
                    const auto p = producer.find(in);
                    if (!in.empty() && p != producer.end() && pending[p->second] != 0) {
                        cur = p->second;
                        break;
                    }
                }
            }
            fail("cyclic graph: node '" + node_name(nodes[cur]) + "' (" + nodes[cur].op_type + ") depends on its own output");
        }
        return order;
    }

    /// A fresh node or layer name from an ONNX name: nn::Model names take no '.', and parameter
    /// paths read better without the '/' of PyTorch's node names ("/fc/Gemm" becomes "fc_Gemm").
    std::string unique(const std::string& onnx_name) {
        std::string base;
        for (char c : onnx_name) {
            const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
            if (keep) base += c;
            else if (!base.empty() && base.back() != '_') base += '_';
        }
        while (!base.empty() && base.back() == '_') base.pop_back();
        if (base.empty()) base = "node";
        std::string n = base;
        for (std::size_t k = 1; !names_.insert(n).second; ++k) n = base + "_" + std::to_string(k);
        return n;
    }

    // ---- attributes and inputs ----
    const ox::TensorProto& need_const(const ox::NodeProto& n, std::size_t i, const char* what) const {
        const ox::TensorProto* t = constant(n, i);
        if (!t) fail(n, std::string(what) + " (input " + std::to_string(i) + ") must be a constant (an initializer)");
        return *t;
    }
    std::vector<std::int64_t> need_ints(const ox::NodeProto& n, std::size_t i, const char* what) const {
        const ox::TensorProto& t = need_const(n, i, what);
        if (t.is_real() || t.dims.size() > 1) fail(n, std::string(what) + " '" + t.name + "' must be a 1-D integer tensor");
        return t.ints;
    }
    Value value(const ox::NodeProto& n, std::size_t i) {
        if (!n.has_input(i)) fail(n, "input " + std::to_string(i) + " is missing");
        const auto it = dyn_.find(n.input[i]);
        if (shaped_.count(n.input[i]) || zeros_.count(n.input[i]))
            fail(n, "input '" + n.input[i] + "' is computed from a tensor's shape, which tapir supports only as the zero initial state of LSTM, GRU and RNN");
        if (it == dyn_.end()) {
            if (consts_.count(n.input[i])) fail(n, "input '" + n.input[i] + "' is a constant where tapir needs a computed value");
            fail(n, "input '" + n.input[i] + "' is not computed (an output tapir does not produce)");
        }
        return it->second;
    }
    void set(const ox::NodeProto& n, std::size_t out, Value v) {
        if (out < n.output.size() && !n.output[out].empty()) dyn_[n.output[out]] = v;
    }
    bool used(const ox::NodeProto& n, std::size_t out) const { return out < n.output.size() && !n.output[out].empty() && consumed_.count(n.output[out]); }
    template <class L>
    void layer(const ox::NodeProto& n, L&& l) {
        const std::string name = unique(node_name(n));
        set(n, 0, model_.call(model_.layer(name, std::forward<L>(l)), value(n, 0), name));
    }
    void fn(const ox::NodeProto& n, typename Model<T>::Function f, std::vector<Value> xs, std::size_t out = 0) {
        set(n, out, model_.apply(unique(node_name(n) + (out ? "_" + std::to_string(out) : "")), std::move(f), xs));
    }
    template <class Dst>
    static void copy_into(Tensor<T>& dst, const Dst& src) {
        for (std::size_t i = 0; i < dst.size(); ++i) dst.data()[i] = static_cast<T>(src[i]);
    }

    // ---- operators ----
    /// Shape plumbing: PyTorch computes a recurrent layer's zero initial state from the input's
    /// shape (Shape, Gather, Unsqueeze, Concat, ConstantOfShape). Such values are followed
    /// symbolically: "shaped" values may only feed more plumbing, and the zeros they make may
    /// only be initial states (where tapir starts from zeros anyway).
    bool plumbing(const ox::NodeProto& n) {
        const std::string& op = n.op_type;
        bool from_shape = op == "Shape";
        for (const auto& in : n.input) from_shape = from_shape || shaped_.count(in) != 0;
        if (op == "ConstantOfShape") {
            const ox::AttributeProto* v = n.find("value");
            bool zero = true;
            if (v)
                for (const auto& t : v->t) {
                    for (double x : t.values) zero = zero && x == 0.0;
                    for (std::int64_t x : t.ints) zero = zero && x == 0;
                }
            if (!zero) fail(n, "only zeros are supported");
            if (!n.output.empty()) zeros_.insert(n.output[0]);
            return true;
        }
        if (op == "Expand" || (op == "Cast" && !n.input.empty() && zeros_.count(n.input[0]))) {
            const ox::TensorProto* c = constant(n, 0);
            bool zero = !n.input.empty() && zeros_.count(n.input[0]) != 0;
            if (c) {
                zero = true;
                for (double x : c->values) zero = zero && x == 0.0;
            }
            if (!zero) fail(n, "only the expansion of zeros is supported");
            if (!n.output.empty()) zeros_.insert(n.output[0]);
            return true;
        }
        if (op == "Cast" && !from_shape) fail(n, "Cast is supported on tensor shapes only");
        if (!from_shape) return false;
        for (const auto& o : n.output) shaped_.insert(o);
        return true;
    }

    void build(const ox::NodeProto& n) {
        const std::string& op = n.op_type;
        if (plumbing(n)) return;
        if (op == "Constant") return constant_node(n);
        if (op == "Identity" || op == "Dropout") {
            if (op == "Dropout" && used(n, 1)) fail(n, "the dropout mask output is not supported");
            if (op == "Dropout" && attr_i(n, "training_mode", 0) != 0) fail(n, "training_mode = 1 is not supported");
            if (!n.input.empty() && consts_.count(n.input[0]) && !n.output.empty()) {
                consts_[n.output[0]] = consts_[n.input[0]];
                return;
            }
            return set(n, 0, value(n, 0));
        }
        if (op == "Relu") return layer(n, ReLU<T>());
        if (op == "Sigmoid") return layer(n, Sigmoid<T>());
        if (op == "Tanh") return layer(n, Tanh<T>());
        if (op == "Softplus") return layer(n, Softplus<T>());
        if (op == "LeakyRelu") return layer(n, LeakyReLU<T>(static_cast<T>(attr_f(n, "alpha", 0.01))));
        if (op == "Elu") return layer(n, ELU<T>(static_cast<T>(attr_f(n, "alpha", 1.0))));
        if (op == "Softmax") return layer(n, Softmax<T>(attr_i(n, "axis", m_.opset() >= 13 ? -1 : 1)));
        if (op == "Gemm" || op == "MatMul") return gemm(n);
        if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Max") return binary(n);
        if (op == "Flatten") return flatten(n);
        if (op == "Conv") return conv(n);
        if (op == "ConvTranspose") return conv_transpose(n);
        if (op == "MaxPool" || op == "AveragePool") return pool(n);
        if (op == "GlobalAveragePool" || op == "GlobalMaxPool") {
            const bool is_max = op == "GlobalMaxPool";
            return fn(n,
                      [is_max](const std::vector<Var<T>>& x) {
                          const Shape s = x[0].shape();
                          const Var<T> y = is_max ? global_max_pool(x[0]) : global_avg_pool(x[0]);
                          return reshape(y, s.rank() == 3 ? Shape{s[0], s[1], 1} : Shape{s[0], s[1], 1, 1});
                      },
                      {value(n, 0)});
        }
        if (op == "BatchNormalization") return batch_norm(n);
        if (op == "Transpose") return transpose(n);
        if (op == "Squeeze" || op == "Unsqueeze") return squeeze(n, op == "Squeeze");
        if (op == "Reshape") return reshape_node(n);
        if (op == "Pad") return pad(n);
        if (op == "Gather") return gather(n);
        if (op == "Slice") return slice_node(n);
        if (op == "Concat") return concat_node(n);
        if (op == "ReduceSum") return reduce_sum(n);
        return recurrent(n);  // LSTM, GRU, RNN (check_operators admitted nothing else)
    }

    void constant_node(const ox::NodeProto& n) {
        const ox::AttributeProto* a = n.find("value");
        if (!a || a->t.size() != 1) {
            if (const ox::AttributeProto* f = n.find("value_float")) store({}, {static_cast<double>(f->f)}, {}, ox::kFloat, n);
            else if (const ox::AttributeProto* i = n.find("value_int")) store({}, {}, {i->i}, ox::kInt64, n);
            else if (const ox::AttributeProto* is = n.find("value_ints")) store({i64(is->ints.size())}, {}, is->ints, ox::kInt64, n);
            else fail(n, "only the attributes value, value_float, value_int and value_ints are supported");
            return;
        }
        owned_.push_back(std::make_unique<ox::TensorProto>(a->t[0]));
        if (!n.output.empty()) consts_[n.output[0]] = owned_.back().get();
    }
    void store(std::vector<std::int64_t> dims, std::vector<double> v, std::vector<std::int64_t> ints, std::int32_t type, const ox::NodeProto& n) {
        auto t = std::make_unique<ox::TensorProto>();
        t->dims = std::move(dims), t->values = std::move(v), t->ints = std::move(ints), t->data_type = type;
        t->name = n.output.empty() ? "" : n.output[0];
        owned_.push_back(std::move(t));
        if (!n.output.empty()) consts_[n.output[0]] = owned_.back().get();
    }

    void gemm(const ox::NodeProto& n) {
        const bool is_gemm = n.op_type == "Gemm";
        if (is_gemm && attr_i(n, "transA", 0) != 0) fail(n, "transA = 1 is not supported");
        const ox::TensorProto& b = need_real(n, 1, "weight", 2);
        const bool tb = is_gemm && attr_i(n, "transB", 0) != 0;
        const double alpha = is_gemm ? attr_f(n, "alpha", 1.0) : 1.0, beta = is_gemm ? attr_f(n, "beta", 1.0) : 1.0;
        const auto K = static_cast<std::size_t>(tb ? b.dims[1] : b.dims[0]), N = static_cast<std::size_t>(tb ? b.dims[0] : b.dims[1]);
        const ox::TensorProto* c = is_gemm && n.has_input(2) ? &need_real(n, 2, "bias", 0) : nullptr;
        if (c && c->numel() != N && c->numel() != 1)
            fail(n, "bias '" + c->name + "' has " + std::to_string(c->numel()) + " values for " + std::to_string(N) + " outputs");
        DenseOptions o;
        o.bias = c != nullptr;
        Rng rng(0);
        Dense<T> d(K, N, rng, o);
        for (std::size_t k = 0; k < K; ++k)
            for (std::size_t j = 0; j < N; ++j) d.weight.value.data()[k * N + j] = static_cast<T>(alpha * b.values[tb ? j * K + k : k * N + j]);
        if (c)
            for (std::size_t j = 0; j < N; ++j) d.bias.value.data()[j] = static_cast<T>(beta * c->values[c->numel() == 1 ? 0 : j]);
        layer(n, std::move(d));
    }

    /// Add, Sub, Mul, Div (broadcasting, as ONNX) of two computed values or of one and a
    /// constant; Max of a value and a constant scalar (a clamp from below).
    void binary(const ox::NodeProto& n) {
        const std::string& op = n.op_type;
        if (n.input.size() != 2) fail(n, "takes 2 inputs, got " + std::to_string(n.input.size()));
        const ox::TensorProto* c[2] = {dyn_.count(n.input[0]) ? nullptr : constant(n, 0), dyn_.count(n.input[1]) ? nullptr : constant(n, 1)};
        if (c[0] && c[1]) fail(n, "both inputs are constants (fold them before export)");
        if (!c[0] && !c[1]) {
            const Value a = value(n, 0), b = value(n, 1);
            if (op == "Max") fail(n, "Max of two computed values is not supported (a constant scalar bound only)");
            if (op == "Add") return set(n, 0, model_.add(a, b, unique(node_name(n))));
            return fn(n,
                      [op](const std::vector<Var<T>>& x) {
                          return op == "Sub" ? sub(x[0], x[1]) : op == "Mul" ? mul(x[0], x[1]) : div(x[0], x[1]);
                      },
                      {a, b});
        }
        const bool first = c[0] != nullptr;
        const ox::TensorProto& k = need_real(n, first ? 0 : 1, "constant", 0);
        if (k.dims.size() > max_rank) fail(n, "constant '" + k.name + "' has rank above 4");
        Shape ks;
        for (std::int64_t d : k.dims) ks.push_back(z(d));
        Tensor<T> kt(ks);
        copy_into(kt, k.values);
        if (op == "Max") {
            if (kt.size() != 1) fail(n, "Max with a constant of " + std::to_string(kt.size()) + " values is not supported (a scalar bound only)");
            const T lo = kt.data()[0];
            return fn(n, [lo](const std::vector<Var<T>>& x) { return clamp(x[0], lo, std::numeric_limits<T>::infinity()); }, {value(n, first ? 1 : 0)});
        }
        fn(n,
           [op, kt, first](const std::vector<Var<T>>& x) {
               const Var<T> kv = x[0].tape().constant(kt);
               const Var<T>& a = first ? kv : x[0];
               const Var<T>& b = first ? x[0] : kv;
               return op == "Add" ? add(a, b) : op == "Sub" ? sub(a, b) : op == "Mul" ? mul(a, b) : div(a, b);
           },
           {value(n, first ? 1 : 0)});
    }

    void flatten(const ox::NodeProto& n) {
        const std::int64_t axis = attr_i(n, "axis", 1);
        if (axis == 1) return layer(n, Flatten<T>());
        fn(n,
           [axis](const std::vector<Var<T>>& x) {
               const Shape s = x[0].shape();
               const std::size_t a = axis == static_cast<std::int64_t>(s.rank()) ? s.rank() : onnx_axis(axis, s.rank(), "Flatten");
               std::size_t lead = 1;
               for (std::size_t i = 0; i < a; ++i) lead *= s[i];
               return reshape(x[0], Shape{lead, lead ? s.numel() / lead : 0});
           },
           {value(n, 0)});
    }

    using Window = ox::Window;
    Window window(const ox::NodeProto& n, std::size_t dims) const {
        Window w = ox::read_window(n, dims);
        if (!w.problem.empty()) fail(n, w.problem);
        return w;
    }
    static std::size_t z(std::int64_t v) { return static_cast<std::size_t>(v); }

    void conv(const ox::NodeProto& n) {
        const ox::TensorProto& w = need_real(n, 1, "weight", 0);
        if (w.dims.size() != 3 && w.dims.size() != 4) fail(n, "weight '" + w.name + "' must have rank 3 or 4");
        const std::size_t dims = w.dims.size() - 2;
        Window win = window(n, dims);
        for (std::size_t i = 0; i < dims; ++i)
            if (win.k[i] == 0) win.k[i] = w.dims[2 + i];
        for (std::size_t i = 0; i < dims; ++i)
            if (win.k[i] != w.dims[2 + i]) fail(n, "kernel_shape does not match the weight '" + w.name + "'");
        const std::int64_t group = attr_i(n, "group", 1);
        if (group <= 0 || group > w.dims[0]) fail(n, "group " + std::to_string(group) + " out of range");
        const ox::TensorProto* b = n.has_input(2) ? &need_real(n, 2, "bias", 1) : nullptr;
        if (b && b->dims[0] != w.dims[0]) fail(n, "bias '" + b->name + "' has " + std::to_string(b->dims[0]) + " values for " + std::to_string(w.dims[0]) + " channels");
        ConvOptions o;
        o.groups = z(group);
        o.bias = b != nullptr;
        Rng rng(0);
        const std::size_t out = z(w.dims[0]), in = z(w.dims[1]) * z(group);
        if (dims == 2) {
            o.stride = Size2(z(win.s[0]), z(win.s[1]));
            o.padding = Pad2d(z(win.p[0]), z(win.p[2]), z(win.p[1]), z(win.p[3]));
            o.dilation = Size2(z(win.d[0]), z(win.d[1]));
            fill_conv(n, Conv2d<T>(in, out, Size2(z(win.k[0]), z(win.k[1])), rng, o), w, b);
        } else {
            o.stride = Size2(1, z(win.s[0]));
            o.padding = Pad2d(0, 0, z(win.p[0]), z(win.p[1]));
            o.dilation = Size2(1, z(win.d[0]));
            fill_conv(n, Conv1d<T>(in, out, z(win.k[0]), rng, o), w, b);
        }
    }
    /// ConvTranspose2d: weight (C, M / group, kh, kw), symmetric pads, output_padding.
    void conv_transpose(const ox::NodeProto& n) {
        const ox::TensorProto& w = need_real(n, 1, "weight", 0);
        if (w.dims.size() != 4) fail(n, "weight '" + w.name + "' must have rank 4 (2-D transposed convolutions only)");
        if (n.find("output_shape")) fail(n, "output_shape is not supported (give pads and output_padding)");
        Window win = window(n, 2);
        for (std::size_t i = 0; i < 2; ++i) {
            if (win.k[i] == 0) win.k[i] = w.dims[2 + i];
            if (win.k[i] != w.dims[2 + i]) fail(n, "kernel_shape does not match the weight '" + w.name + "'");
            if (win.p[i] != win.p[i + 2]) fail(n, "asymmetric pads are not supported");
        }
        std::vector<std::int64_t> op = attr_ints(n, "output_padding");
        if (op.empty()) op.assign(2, 0);
        if (op.size() != 2) fail(n, "output_padding must have 2 values");
        for (std::int64_t v : op)
            if (v < 0 || v > (1 << 20)) fail(n, "output_padding " + std::to_string(v) + " out of range");
        const std::int64_t group = attr_i(n, "group", 1);
        if (group <= 0 || group > w.dims[0] || w.dims[0] % group) fail(n, "group " + std::to_string(group) + " does not divide the input channels");
        const std::size_t in = z(w.dims[0]), out = z(w.dims[1]) * z(group);
        const ox::TensorProto* b = n.has_input(2) ? &need_real(n, 2, "bias", 1) : nullptr;
        if (b && z(b->dims[0]) != out) fail(n, "bias '" + b->name + "' has " + std::to_string(b->dims[0]) + " values for " + std::to_string(out) + " channels");
        ConvOptions o;
        o.groups = z(group);
        o.bias = b != nullptr;
        o.stride = Size2(z(win.s[0]), z(win.s[1]));
        o.padding = Pad2d(z(win.p[0]), z(win.p[2]), z(win.p[1]), z(win.p[3]));
        o.dilation = Size2(z(win.d[0]), z(win.d[1]));
        o.output_padding = Size2(z(op[0]), z(op[1]));
        Rng rng(0);
        fill_conv(n, ConvTranspose2d<T>(in, out, Size2(z(win.k[0]), z(win.k[1])), rng, o), w, b);
    }
    template <class C>
    void fill_conv(const ox::NodeProto& n, C c, const ox::TensorProto& w, const ox::TensorProto* b) {
        if (c.weight.value.size() != w.values.size()) fail(n, "weight '" + w.name + "' does not fit the convolution");
        copy_into(c.weight.value, w.values);
        if (b) copy_into(c.bias.value, b->values);
        layer(n, std::move(c));
    }

    void pool(const ox::NodeProto& n) {
        const bool is_max = n.op_type == "MaxPool";
        if (used(n, 1)) fail(n, "the Indices output is not supported");
        if (attr_i(n, "ceil_mode", 0) != 0) fail(n, "ceil_mode = 1 is not supported");
        if (attr_i(n, "storage_order", 0) != 0) fail(n, "storage_order = 1 is not supported");
        const std::size_t dims = attr_ints(n, "kernel_shape").size();
        const Window w = window(n, dims);
        for (std::size_t i = 0; i < dims; ++i) {
            if (w.k[i] <= 0 || w.k[i] > (1 << 20)) fail(n, "kernel_shape must be positive");
            if (w.d[i] != 1) fail(n, "dilated pooling is not supported");
            if (w.p[i] != w.p[i + dims]) fail(n, "asymmetric pads are not supported");
            if (2 * w.p[i] > w.k[i]) fail(n, "pads larger than half the kernel are not supported");
        }
        const bool padded = std::any_of(w.p.begin(), w.p.end(), [](std::int64_t p) { return p != 0; });
        if (!is_max && padded && attr_i(n, "count_include_pad", 0) != 1)
            fail(n, "padded average pooling needs count_include_pad = 1 (tapir counts the padding, as PyTorch's default)");
        if (dims == 2) {
            const Size2 k(z(w.k[0]), z(w.k[1])), s(z(w.s[0]), z(w.s[1])), p(z(w.p[0]), z(w.p[1]));
            if (is_max) return layer(n, MaxPool2d<T>(k, s, p));
            return layer(n, AvgPool2d<T>(k, s, p));
        }
        const Size2 k(1, z(w.k[0])), s(1, z(w.s[0])), p(0, z(w.p[0]));
        if (is_max) return layer(n, MaxPool1d<T>(k, s, p));
        layer(n, AvgPool1d<T>(k, s, p));
    }

    void batch_norm(const ox::NodeProto& n) {
        if (attr_i(n, "training_mode", 0) != 0 || (n.output.size() > 1 && used(n, 1))) fail(n, "training_mode = 1 is not supported");
        const ox::TensorProto& sc = need_real(n, 1, "scale", 1);
        const std::size_t c = z(sc.dims[0]);
        const char* names[4] = {"scale", "bias", "mean", "var"};
        for (std::size_t i = 2; i <= 4; ++i)
            if (need_real(n, i, names[i - 1], 1).dims[0] != sc.dims[0]) fail(n, std::string(names[i - 1]) + " does not have " + std::to_string(c) + " values");
        const double eps = attr_f(n, "epsilon", 1e-5), mom = attr_f(n, "momentum", 0.9);
        if (!(eps > 0) || !(mom >= 0 && mom <= 1)) fail(n, "epsilon must be positive and momentum in [0, 1]");
        BatchNorm<T> bn(c, 1.0 - mom, eps);
        copy_into(bn.weight.value, sc.values);
        copy_into(bn.bias.value, need_const(n, 2, "bias").values);
        copy_into(bn.running_mean, need_const(n, 3, "mean").values);
        copy_into(bn.running_var, need_const(n, 4, "var").values);
        // tapir's BatchNorm normalises (rows, C); a (N, C, L) or (N, C, H, W) input (after a
        // convolution) runs as its (N L, C) or (N H W, C) rows, channels last, and back.
        const std::string name = unique(node_name(n));
        const Value x = value(n, 0);
        const Value rows = model_.apply(unique(name + "_rows"),
                                        [](const std::vector<Var<T>>& v) -> Var<T> {
                                            const Shape s = v[0].shape();
                                            if (s.rank() == 2) return v[0];
                                            if (s.rank() != 3 && s.rank() != 4)
                                                throw shape_error("onnx BatchNormalization: input of shape " + s.str() + " (rank 2 to 4)");
                                            const Var<T> last = onnx_permute(v[0], s.rank() == 3 ? std::vector<std::size_t>{0, 2, 1}
                                                                                                   : std::vector<std::size_t>{0, 2, 3, 1});
                                            return reshape(last, Shape{s.numel() / s[1], s[1]});
                                        },
                                        {x});
        const Value y = model_.call(model_.layer(name, std::move(bn)), rows, name);
        fn(n,
           [](const std::vector<Var<T>>& v) -> Var<T> {
               const Shape s = v[1].shape();
               if (s.rank() == 2) return v[0];
               if (s.rank() == 3) return onnx_permute(reshape(v[0], Shape{s[0], s[2], s[1]}), {0, 2, 1});
               return onnx_permute(reshape(v[0], Shape{s[0], s[2], s[3], s[1]}), {0, 3, 1, 2});
           },
           {y, x});
    }

    void transpose(const ox::NodeProto& n) {
        const std::vector<std::int64_t> perm = attr_ints(n, "perm");
        std::vector<std::size_t> p;
        for (std::int64_t v : perm) {
            if (v < 0 || v >= 4) fail(n, "perm entry " + std::to_string(v) + " out of range");
            p.push_back(z(v));
        }
        fn(n,
           [p](const std::vector<Var<T>>& x) {
               std::vector<std::size_t> q = p;
               if (q.empty())
                   for (std::size_t i = x[0].shape().rank(); i-- > 0;) q.push_back(i);
               return onnx_permute(x[0], q);
           },
           {value(n, 0)});
    }

    std::vector<std::int64_t> axes_of(const ox::NodeProto& n, bool required) const {
        std::vector<std::int64_t> axes = attr_ints(n, "axes");
        if (n.has_input(1)) axes = need_ints(n, 1, "axes");
        if (required && axes.empty()) fail(n, "axes are required");
        for (std::int64_t a : axes)
            if (a < -8 || a > 8) fail(n, "axis " + std::to_string(a) + " out of range");
        return axes;
    }
    void squeeze(const ox::NodeProto& n, bool sq) {
        const std::vector<std::int64_t> axes = axes_of(n, !sq);
        fn(n,
           [axes, sq](const std::vector<Var<T>>& x) {
               const Shape s = x[0].shape();
               Shape out;
               if (sq) {
                   std::vector<bool> drop(s.rank(), axes.empty());
                   for (std::int64_t a : axes) {
                       const std::size_t k = onnx_axis(a, s.rank(), "Squeeze");
                       if (s[k] != 1) throw shape_error("onnx Squeeze: axis " + std::to_string(a) + " of shape " + s.str() + " is not 1");
                       drop[k] = true;
                   }
                   for (std::size_t i = 0; i < s.rank(); ++i)
                       if (!(drop[i] && s[i] == 1)) out.push_back(s[i]);
               } else {
                   const std::size_t r = s.rank() + axes.size();
                   if (r > max_rank) throw shape_error("onnx Unsqueeze: rank above 4 for shape " + s.str());
                   std::vector<bool> ins(r, false);
                   for (std::int64_t a : axes) {
                       const std::size_t k = onnx_axis(a, r, "Unsqueeze");
                       if (ins[k]) throw shape_error("onnx Unsqueeze: axis " + std::to_string(a) + " given twice");
                       ins[k] = true;
                   }
                   for (std::size_t i = 0, k = 0; i < r; ++i) out.push_back(ins[i] ? std::size_t(1) : s[k++]);
               }
               return reshape(x[0], out);
           },
           {value(n, 0)});
    }
    void reshape_node(const ox::NodeProto& n) {
        const std::vector<std::int64_t> shape = need_ints(n, 1, "shape");
        if (shape.size() > max_rank) fail(n, "target rank above 4");
        for (std::int64_t v : shape)
            if (v < -1 || v > (std::int64_t(1) << 31)) fail(n, "target dimension " + std::to_string(v) + " out of range");
        if (attr_i(n, "allowzero", 0) != 0) fail(n, "allowzero = 1 is not supported");
        fn(n,
           [shape](const std::vector<Var<T>>& x) {
               const Shape s = x[0].shape();
               Shape out;
               std::size_t known = 1, infer = shape.size();
               for (std::size_t i = 0; i < shape.size(); ++i) {
                   std::size_t d = 0;
                   if (shape[i] == -1) infer = i, d = 1;
                   else if (shape[i] == 0 && i < s.rank()) d = s[i];
                   else if (shape[i] < 0) throw shape_error("onnx Reshape: dimension " + std::to_string(shape[i]));
                   else d = static_cast<std::size_t>(shape[i]);
                   out.push_back(d);
                   known *= d;
               }
               if (infer < shape.size()) {
                   if (known == 0 || s.numel() % known) throw shape_error("onnx Reshape: cannot infer -1 for shape " + s.str());
                   out[infer] = s.numel() / known;
               }
               return reshape(x[0], out);
           },
           {value(n, 0)});
    }
    /// Zero padding (PyTorch writes AvgPool2d's padding as a Pad node): pads are begins, then ends.
    void pad(const ox::NodeProto& n) {
        const ox::AttributeProto* mode = n.find("mode");
        if (mode && mode->s != "constant") fail(n, "mode '" + mode->s + "' is not supported (constant only)");
        std::vector<std::int64_t> pads = m_.opset() < 11 ? attr_ints(n, "pads") : need_ints(n, 1, "pads");
        if (const ox::TensorProto* c = constant(n, 2)) {
            bool zero = true;
            for (double v : c->values) zero = zero && v == 0.0;
            for (std::int64_t v : c->ints) zero = zero && v == 0;
            if (!zero) fail(n, "only padding with zeros is supported");
        } else if (n.has_input(2) || attr_f(n, "value", 0.0) != 0.0) {
            fail(n, "only padding with zeros is supported");
        }
        if (pads.size() % 2 || pads.size() > 2 * max_rank) fail(n, "pads must hold a begin and an end for each axis");
        bool all_zero = true;
        for (std::int64_t v : pads) {
            if (v < 0 || v > (1 << 20)) fail(n, "pad " + std::to_string(v) + " out of range (cropping is not supported)");
            all_zero = all_zero && v == 0;
        }
        if (all_zero) return set(n, 0, value(n, 0));
        fn(n,
           [pads](const std::vector<Var<T>>& x) {
               const std::size_t r = pads.size() / 2;
               if (x[0].shape().rank() != r)
                   throw shape_error("onnx Pad: " + std::to_string(r) + " axes of pads for shape " + x[0].shape().str());
               Var<T> y = x[0];
               for (std::size_t a = 0; a < r; ++a) {
                   for (int end = 0; end < 2; ++end) {
                       const std::int64_t p = pads[a + (end ? r : 0)];
                       if (p == 0) continue;
                       Shape zs = y.shape();
                       zs[a] = static_cast<std::size_t>(p);
                       const Var<T> z = y.tape().full(zs, T(0));
                       y = end ? concat(y, z, static_cast<std::int64_t>(a)) : concat(z, y, static_cast<std::int64_t>(a));
                   }
               }
               return y;
           },
           {value(n, 0)});
    }
    void gather(const ox::NodeProto& n) {
        const ox::TensorProto& idx = need_const(n, 1, "indices");
        if (idx.is_real() || idx.ints.size() != 1 || idx.dims.size() > 1) fail(n, "only a single constant index is supported");
        const std::int64_t i = idx.ints[0], axis = attr_i(n, "axis", 0);
        const bool keep = idx.dims.size() == 1;
        fn(n,
           [i, axis, keep](const std::vector<Var<T>>& x) {
               const Shape s = x[0].shape();
               const std::size_t a = onnx_axis(axis, s.rank(), "Gather");
               const std::int64_t len = static_cast<std::int64_t>(s[a]);
               if (i < -len || i >= len) throw shape_error("onnx Gather: index " + std::to_string(i) + " out of range for shape " + s.str());
               const Var<T> y = slice(x[0], static_cast<std::int64_t>(a), static_cast<std::size_t>(i < 0 ? i + len : i), 1);
               if (keep) return y;
               Shape out;
               for (std::size_t k = 0; k < s.rank(); ++k)
                   if (k != a) out.push_back(s[k]);
               return reshape(y, out);
           },
           {value(n, 0)});
    }
    void slice_node(const ox::NodeProto& n) {
        std::vector<std::int64_t> starts, ends, axes, steps;
        if (m_.opset() < 10) {
            starts = attr_ints(n, "starts"), ends = attr_ints(n, "ends"), axes = attr_ints(n, "axes");
        } else {
            starts = need_ints(n, 1, "starts"), ends = need_ints(n, 2, "ends");
            if (n.has_input(3)) axes = need_ints(n, 3, "axes");
            if (n.has_input(4)) steps = need_ints(n, 4, "steps");
        }
        for (std::int64_t st : steps)
            if (st != 1) fail(n, "steps other than 1 are not supported");
        if (axes.empty())
            for (std::size_t k = 0; k < starts.size(); ++k) axes.push_back(i64(k));
        if (starts.size() != ends.size() || axes.size() != starts.size() || starts.size() > 4) fail(n, "starts, ends and axes differ in length");
        fn(n,
           [starts, ends, axes](const std::vector<Var<T>>& x) {
               Var<T> y = x[0];
               for (std::size_t k = 0; k < axes.size(); ++k) {
                   const std::size_t a = onnx_axis(axes[k], y.shape().rank(), "Slice");
                   const std::int64_t len = static_cast<std::int64_t>(y.shape()[a]);
                   auto clamp = [len](std::int64_t v) { return v < 0 ? (v < -len ? std::int64_t(0) : v + len) : std::min(v, len); };
                   const std::int64_t b = clamp(starts[k]), e = clamp(ends[k]);
                   if (e <= b) throw shape_error("onnx Slice: empty slice of shape " + y.shape().str());
                   y = slice(y, static_cast<std::int64_t>(a), static_cast<std::size_t>(b), static_cast<std::size_t>(e - b));
               }
               return y;
           },
           {value(n, 0)});
    }
    void concat_node(const ox::NodeProto& n) {
        std::vector<Value> xs;
        for (std::size_t i = 0; i < n.input.size(); ++i) xs.push_back(value(n, i));
        if (xs.empty()) fail(n, "no inputs");
        const std::int64_t axis = attr_i(n, "axis", 0);
        fn(n, [axis](const std::vector<Var<T>>& x) { return concat(x, static_cast<std::int64_t>(onnx_axis(axis, x[0].shape().rank(), "Concat"))); },
           xs);
    }
    void reduce_sum(const ox::NodeProto& n) {
        const std::vector<std::int64_t> axes = axes_of(n, false);
        const bool keep = attr_i(n, "keepdims", 1) != 0, noop = attr_i(n, "noop_with_empty_axes", 0) != 0;
        fn(n,
           [axes, keep, noop](const std::vector<Var<T>>& x) {
               const std::size_t r = x[0].shape().rank();
               if (axes.empty() && noop) return x[0];
               std::vector<bool> on(r, axes.empty());
               for (std::int64_t a : axes) on[onnx_axis(a, r, "ReduceSum")] = true;
               Var<T> y = x[0];
               for (std::size_t k = r; k-- > 0;)
                   if (on[k]) y = sum(y, static_cast<std::int64_t>(k), keep);
               return y;
           },
           {value(n, 0)});
    }

    /// ONNX gate blocks to PyTorch's order: row block b of the result is ONNX block from[b].
    static void gates_from_onnx(Tensor<T>& dst, const std::vector<double>& src, std::size_t offset, RnnCell cell) {
        static const std::size_t lstm[4] = {0, 2, 3, 1}, gru[3] = {1, 0, 2}, rnn[1] = {0};
        const std::size_t* from = cell == RnnCell::lstm ? lstm : cell == RnnCell::gru ? gru : rnn;
        const std::size_t G = rnn_gates(cell), block = dst.size() / G;
        for (std::size_t b = 0; b < G; ++b)
            for (std::size_t k = 0; k < block; ++k) dst.data()[b * block + k] = static_cast<T>(src[offset + from[b] * block + k]);
    }
    void recurrent(const ox::NodeProto& n) {
        const RnnCell cell = n.op_type == "LSTM" ? RnnCell::lstm : n.op_type == "GRU" ? RnnCell::gru : RnnCell::rnn_tanh;
        const std::size_t G = rnn_gates(cell);
        const std::string problem = ox::recurrent_problem(n);
        if (!problem.empty()) fail(n, problem);
        for (std::size_t i = 5; i < n.input.size(); ++i) {
            if (!n.has_input(i)) continue;
            if (zeros_.count(n.input[i])) continue;
            const ox::TensorProto* t = constant(n, i);
            bool zero = t != nullptr;
            if (t)
                for (double v : t->values) zero = zero && v == 0.0;
            if (!zero) fail(n, "initial states must be absent or constant zeros");
        }
        const auto [w, r, b] = this->recurrent_weights(n, G);
        const std::int64_t H = r.dims[2];
        if (used(n, 2)) fail(n, "the cell state output Y_c is not supported");
        RecurrentOptions o;
        o.return_sequences = true;
        o.bias = b != nullptr;
        Rng rng(0);
        std::unique_ptr<RecurrentLayer<T>> l;
        const std::size_t F = z(w.dims[2]), h = z(H);
        if (cell == RnnCell::lstm) l = std::make_unique<LSTM<T>>(F, h, rng, o);
        else if (cell == RnnCell::gru) l = std::make_unique<GRU<T>>(F, h, rng, o);
        else l = std::make_unique<SimpleRNN<T>>(F, h, rng, o);
        gates_from_onnx(l->weight_ih.value, w.values, 0, cell);
        gates_from_onnx(l->weight_hh.value, r.values, 0, cell);
        if (b) {
            gates_from_onnx(l->bias_ih.value, b->values, 0, cell);
            gates_from_onnx(l->bias_hh.value, b->values, G * h, cell);
        }
        // (T, B, F) -> (B, T, F) -> the layer -> (B, T, H); Y = (T, 1, B, H), Y_h = (1, B, H).
        const std::string base = unique(node_name(n));
        const Value xb = model_.apply(unique(base + "_batch_major"), [](const std::vector<Var<T>>& x) { return permute(x[0], {1, 0, 2}); },
                                      {value(n, 0)});
        const Value seq = model_.call(model_.layer(base, std::unique_ptr<Module<T>>(std::move(l))), xb, base);
        if (used(n, 0))
            fn(n,
               [](const std::vector<Var<T>>& x) {
                   const Shape s = x[0].shape();
                   return reshape(permute(x[0], {1, 0, 2}), Shape{s[1], 1, s[0], s[2]});
               },
               {seq}, 0);
        if (used(n, 1))
            fn(n,
               [](const std::vector<Var<T>>& x) {
                   const Shape s = x[0].shape();
                   return reshape(slice(x[0], 1, s[1] - 1, 1), Shape{1, s[0], s[2]});
               },
               {seq}, 1);
    }

    const ox::ModelProto& m_;
    std::string src_;
    Model<T> model_;
    std::vector<std::unique_ptr<ox::TensorProto>> owned_;
    std::map<std::string, Value> dyn_;
    std::set<std::string> consumed_, names_, shaped_, zeros_;
};
} // namespace detail

/// An nn::Model of tapir layers from a parsed ONNX model (see the top of this header for the
/// operators). Throws format_error naming the first unsupported operator, a cyclic graph, or a
/// weight of the wrong type or shape. The model starts in training mode: call eval() to infer.
template <class T>
Model<T> import_onnx(const io::onnx::ModelProto& m, const std::string& source = "<memory>") {
    return detail::OnnxReader<T>(m, source).run();
}
template <class T>
Model<T> import_onnx_from_string(const std::string& bytes, const std::string& source = "<memory>") {
    return import_onnx<T>(io::onnx::parse(bytes, source), source);
}
/// Reads an ONNX file into an nn::Model.
template <class T>
Model<T> import_onnx(const std::string& path) {
    return import_onnx<T>(io::onnx::load(path), path);
}

} // namespace nn
} // namespace tapir
