#pragma once
/// ONNX files into a compile-time ModelT (model.hpp), to infer: the graph is read as a chain of
/// deployable layers that must match the ModelT's layers one to one, as deploy::load_model does
/// for a trained Sequential (convert_model.hpp), without going through tapir::nn.
///
///     using Cnn = tapir::deploy::ModelT<float, tapir::deploy::Conv2dT<float, 2, 16, 16, 4, 3, 3, 1, 1, 1, 1>, ...>;
///     auto cnn = tapir::deploy::load_onnx<Cnn>("from_torch.onnx");   // std::unique_ptr<Cnn>
///     cnn->forward(x, y);
///
/// Operators (https://onnx.ai/onnx/operators/, opsets 7 to 20, as torch.onnx.export writes them):
/// Gemm and MatMul (+ Add of a constant bias) as DenseT; Conv (dilated too, no groups; symmetric
/// pads) as Conv2dT or Conv1dT; MaxPool and AveragePool without padding, and GlobalMaxPool and
/// GlobalAveragePool as a pool over the whole input, as Pool2dT; Flatten and a Reshape to 2-D as
/// FlattenT; Relu, Sigmoid, Tanh, LeakyRelu, Elu, Softplus fused into the Dense or Conv before
/// them, else ActivationT; BatchNormalization folded into the Dense or Conv before it (before
/// its activation) or into the Gemm right after it (an MLP's BatchNorm after an activation);
/// forward LSTM and GRU (between the Transposes of batch-first models; zero initial states;
/// Y, Squeeze and Transpose back for every step, Y_h or a Gather of the last step for the last)
/// as LstmT and GruT; Identity, Dropout, Constant and Pad of zero width pass through, and the Shape plumbing with
/// which PyTorch builds the zero states is followed symbolically. Anything else (an operator,
/// a branch such as a residual Add, a bidirectional recurrent layer, padding of a pool) is a
/// format_error naming the node; a layer that differs from the ModelT's is a shape_error naming
/// the node, the fixed-size layer and both shapes. The ONNX spec requires nodes in topological
/// order; a node that reads a value not defined before it (a cycle) is refused.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../io/onnx.hpp"
#include "model.hpp"

namespace tapir::deploy {

/// One deployable layer read from an ONNX graph; weights in double, in PyTorch's layouts.
struct OnnxLayer {
    /// "Dense", "Conv2d", "Conv1d", "MaxPool", "AvgPool", "GlobalMaxPool", "GlobalAvgPool",
    /// "Flatten", "Activation", "LSTM", "GRU".
    std::string type;
    std::string where;  ///< "node '/fc/Gemm' (Gemm)"
    Activation act = Activation::none;
    double alpha = 0;
    /// Dense: (in, out) row-major; Conv: (out, in, kh, kw); recurrent: W_ih (G H, in) then W_hh (G H, H).
    std::vector<double> weight, weight_hh;
    std::vector<double> bias, bias_hh;  ///< empty: none
    std::vector<std::size_t> dims;      ///< Dense {in, out}; Conv {out, in, kh, kw}; pools {kh, kw}; recurrent {in, hidden}
    std::size_t stride_h = 1, stride_w = 1, pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0, groups = 1, dilation_h = 1,
                dilation_w = 1;
    bool sequences = false;  ///< recurrent: every step's h rather than the last
};

namespace detail {

namespace ox = io::onnx;

inline std::string onnx_shape_text(const std::vector<std::size_t>& s) {
    std::string t = "(";
    for (std::size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
    return t + ")";
}

/// Reads a graph into OnnxLayers: every value is a constant, a piece of shape plumbing, zeros
/// made from it, or the one computed value ("main") whose chain the layers are.
class OnnxChain : public ox::ConstantInputs<OnnxChain> {
    friend ox::ConstantInputs<OnnxChain>;  // calls fail

public:
    OnnxChain(const ox::ModelProto& m, const std::string& source) : m_(m), src_(source) {}

    std::vector<OnnxLayer> run() {
        const ox::GraphProto& g = m_.graph;
        const std::int64_t v = m_.opset();
        if (v == 0) fail("the model imports no version of the default operator set (opset_import)");
        if (v < 7 || v > 20) fail("opset " + std::to_string(v) + " is not supported (7 to 20 are read)");
        for (const auto& n : g.node)
            if (!(n.domain.empty() || n.domain == "ai.onnx") || !supported(n.op_type))
                fail("unsupported ONNX operator '" + (n.domain.empty() ? "" : n.domain + ".") + n.op_type + "' in node '" + node_name(n) +
                     "' (deploy models read: Gemm, MatMul, Add, Conv, pools, Flatten, Reshape, activations, BatchNormalization, LSTM, GRU)");
        for (const auto& t : g.initializer) consts_[t.name] = &t;
        for (const auto& in : g.input) {
            if (consts_.count(in.name)) continue;
            if (!main_.empty()) fail("the graph has several inputs ('" + main_.begin()->first + "', '" + in.name + "'); deploy models take one");
            if (in.has_shape) input_dims_ = in.shape;
            main_[in.name] = Main{in.has_shape ? in.shape.size() : 0, Layout::batch, epoch_, false, false};
        }
        if (main_.empty()) fail("the graph has no input");
        if (g.output.size() != 1) fail("deploy models have one output; the graph has " + std::to_string(g.output.size()));
        for (const auto& n : g.node) node(n);
        const auto it = main_.find(g.output[0].name);
        if (it == main_.end()) fail("the graph output '" + g.output[0].name + "' is not computed from the input");
        if (it->second.epoch != epoch_) fail("the graph output '" + g.output[0].name + "' is not the end of the chain of layers (the graph branches)");
        if (it->second.pending_bn) fail("the graph ends with a BatchNormalization that follows an activation; nothing can absorb it");
        if (it->second.layout != Layout::batch)
            fail("the graph output '" + g.output[0].name + "' is not batch-major");
        if (layers_.empty()) fail("the graph has no layer");
        return std::move(layers_);
    }

    /// The graph input's dimensions after the batch axis (empty when the file does not give them).
    std::vector<std::int64_t> input_features() const {
        std::vector<std::int64_t> out;
        for (std::size_t i = 1; i < input_dims_.size(); ++i) out.push_back(input_dims_[i].value);
        return out;
    }

private:
    /// Where the batch axis is: batch-major, time-major (between Transposes around a recurrent
    /// layer), a recurrent layer's Y (T, 1, B, H) or Y_h (1, B, H).
    enum class Layout { batch, time, rnn_y, rnn_h };
    struct Main {
        std::size_t rank = 0;  ///< with the batch axis; 0: unknown
        Layout layout = Layout::batch;
        std::size_t epoch = 0;    ///< the chain step that made it; only the newest may be read
        bool fusable = false;     ///< the raw output of the last Dense or Conv (no activation yet)
        bool pending_bn = false;  ///< a BatchNormalization waits to fold into the next Gemm
    };

    [[noreturn]] void fail(const std::string& what) const { throw format_error(src_ + ": deploy::load_onnx: " + what); }
    static std::string node_name(const ox::NodeProto& n) { return n.name.empty() ? (n.output.empty() ? n.op_type : n.output[0]) : n.name; }
    static std::string where(const ox::NodeProto& n) { return "node '" + node_name(n) + "' (" + n.op_type + ")"; }
    [[noreturn]] void fail(const ox::NodeProto& n, const std::string& what) const { fail(where(n) + ": " + what); }

    static bool supported(const std::string& op) {
        static const char* const ops[] = {"Gemm", "MatMul", "Add", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Softplus", "Identity",
                                          "Dropout", "Flatten", "Reshape", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool",
                                          "GlobalMaxPool", "BatchNormalization", "Transpose", "Squeeze", "Unsqueeze", "Gather", "Slice",
                                          "Concat", "LSTM", "GRU", "Constant", "Shape", "ConstantOfShape", "Expand", "Cast", "Pad"};
        for (const char* o : ops)
            if (op == o) return true;
        return false;
    }

    // ---- values ----
    std::vector<std::int64_t> need_ints(const ox::NodeProto& n, std::size_t i, const char* what) const {
        const ox::TensorProto* t = constant(n, i);
        if (!t || t->is_real() || t->dims.size() > 1) fail(n, std::string(what) + " (input " + std::to_string(i) + ") must be a constant 1-D integer tensor");
        return t->ints;
    }
    static std::size_t z(std::int64_t v) { return static_cast<std::size_t>(v); }
    static bool all_zero(const ox::TensorProto& t) {
        for (double x : t.values)
            if (x != 0.0) return false;
        for (std::int64_t x : t.ints)
            if (x != 0) return false;
        return true;
    }
    /// Inputs that are the computed value; every input must be defined before the node.
    std::vector<std::size_t> mains(const ox::NodeProto& n) const {
        std::vector<std::size_t> out;
        for (std::size_t i = 0; i < n.input.size(); ++i) {
            const std::string& in = n.input[i];
            if (in.empty()) continue;
            if (main_.count(in)) out.push_back(i);
            else if (!consts_.count(in) && !shaped_.count(in) && !zeros_.count(in))
                fail(n, "reads '" + in + "', which no input, initializer or earlier node defines (a cyclic or unsorted graph)");
        }
        return out;
    }
    /// The computed input of a layer node, which must be the newest value of the chain.
    Main take(const ox::NodeProto& n, std::size_t i) {
        const auto it = main_.find(n.input[i]);
        if (it->second.epoch != epoch_)
            fail(n, "reads '" + n.input[i] + "', which another node has read already: the graph branches (deploy models are chains of layers)");
        if (it->second.pending_bn && n.op_type != "Gemm" && n.op_type != "MatMul" && n.op_type != "Identity" && n.op_type != "Dropout")
            fail(n, "follows a BatchNormalization that follows an activation; it folds only into a Gemm or MatMul right after it");
        return it->second;
    }
    void put(const ox::NodeProto& n, std::size_t out, Main m) {
        if (out < n.output.size() && !n.output[out].empty()) main_[n.output[out]] = m;
    }
    /// A new step of the chain from x: the old values may no longer be read.
    void step(const ox::NodeProto& n, Main m, std::size_t out = 0) {
        ++epoch_;
        m.epoch = epoch_;
        put(n, out, m);
    }
    OnnxLayer& add_layer(const ox::NodeProto& n, const char* type) {
        OnnxLayer l;
        l.type = type;
        l.where = where(n);
        layers_.push_back(std::move(l));
        return layers_.back();
    }

    // ---- nodes ----
    void node(const ox::NodeProto& n) {
        const std::string& op = n.op_type;
        const std::vector<std::size_t> mi = mains(n);
        if (op == "Constant") return constant_node(n);
        if (op == "Shape") {
            if (!n.output.empty()) shaped_.insert(n.output[0]);
            return;
        }
        if (op == "ConstantOfShape" || op == "Expand" || op == "Cast") {
            if (!mi.empty()) fail(n, "is supported only on tensor shapes (the zero initial state of LSTM and GRU)");
            bool zero = true;
            if (const ox::AttributeProto* v = n.find("value"))
                for (const auto& t : v->t) zero = zero && all_zero(t);
            if (const ox::TensorProto* c = constant(n, 0)) zero = zero && c->is_real() && all_zero(*c);
            if (op == "Cast" && n.has_input(0) && shaped_.count(n.input[0])) {
                if (!n.output.empty()) shaped_.insert(n.output[0]);
                return;
            }
            if (op != "ConstantOfShape" && !(n.has_input(0) && (zeros_.count(n.input[0]) || constant(n, 0))))
                fail(n, "only the expansion of zeros is supported");
            if (!zero) fail(n, "only zeros are supported");
            if (!n.output.empty()) zeros_.insert(n.output[0]);
            return;
        }
        if (mi.empty()) {
            bool shaped = false;
            for (const auto& in : n.input) shaped = shaped || shaped_.count(in) != 0;
            if (!shaped) fail(n, "computes from constants only (fold constants before export)");
            for (const auto& o : n.output) shaped_.insert(o);
            return;
        }
        if (mi.size() > 1) fail(n, "combines two computed values (a residual or a concatenation); deploy models are chains of layers");
        const std::size_t xi = mi[0];
        if (xi != 0 && op != "Add") fail(n, "the computed value must be the first input");
        const Main x = take(n, xi);
        if (op == "Pad") {  // PyTorch writes one of zero width before an AvgPool2d
            const std::vector<std::int64_t> pads = n.has_input(1) ? need_ints(n, 1, "pads") : attr_ints(n, "pads");
            for (std::int64_t p : pads)
                if (p != 0) fail(n, "padding is not supported (only pads of zero width pass)");
            return put(n, 0, x);
        }
        if (op == "Identity" || op == "Dropout") {
            if (op == "Dropout" && n.output.size() > 1 && !n.output[1].empty()) fail(n, "the dropout mask output is not supported");
            return put(n, 0, x);
        }
        if (x.layout != Layout::batch && op != "Transpose" && op != "Squeeze" && op != "Gather" && op != "LSTM" && op != "GRU")
            fail(n, "reads a time-major value; only Transpose, Squeeze, Gather, LSTM and GRU may follow a recurrent layer's ONNX outputs");
        if (op == "Gemm" || op == "MatMul") return gemm(n, x);
        if (op == "Add") return bias_add(n, x, 1 - xi);
        if (op == "Relu" || op == "Sigmoid" || op == "Tanh" || op == "LeakyRelu" || op == "Elu" || op == "Softplus") return activation(n, x);
        if (op == "BatchNormalization") return batch_norm(n, x);
        if (op == "Conv") return conv(n, x);
        if (op == "MaxPool" || op == "AveragePool") return pool(n, x);
        if (op == "GlobalMaxPool" || op == "GlobalAveragePool") {
            if (x.rank != 0 && x.rank != 3 && x.rank != 4) fail(n, "expects a (N, C, L) or (N, C, H, W) input");
            add_layer(n, op == "GlobalMaxPool" ? "GlobalMaxPool" : "GlobalAvgPool");
            return step(n, Main{x.rank, Layout::batch, 0, false, false});
        }
        if (op == "Flatten") {
            if (attr_i(n, "axis", 1) != 1) fail(n, "only axis = 1 is supported");
            add_layer(n, "Flatten");
            return step(n, Main{2, Layout::batch, 0, false, false});
        }
        if (op == "Reshape") {
            const std::vector<std::int64_t> s = need_ints(n, 1, "shape");
            if (s.size() != 2 || (s[0] != -1 && s[0] != 0 && s[1] != -1)) fail(n, "only a reshape to (batch, features) is supported, as a Flatten");
            add_layer(n, "Flatten");
            return step(n, Main{2, Layout::batch, 0, false, false});
        }
        if (op == "Transpose") return transpose(n, x);
        if (op == "LSTM" || op == "GRU") return recurrent(n, x);
        if (op == "Squeeze") return squeeze(n, x);
        if (op == "Gather") return gather(n, x);
        fail(n, "has no deploy layer on a computed value");  // Unsqueeze, Slice, Concat on the chain
    }

    void constant_node(const ox::NodeProto& n) {
        const ox::AttributeProto* a = n.find("value");
        if (!a || a->t.size() != 1) fail(n, "only the attribute value (a tensor) is supported");
        if (!n.output.empty()) consts_[n.output[0]] = &a->t[0];
    }

    void gemm(const ox::NodeProto& n, const Main& x) {
        const bool is_gemm = n.op_type == "Gemm";
        if (x.rank != 0 && x.rank != 2) fail(n, "expects a (batch, features) input, got rank " + std::to_string(x.rank));
        if (is_gemm && attr_i(n, "transA", 0) != 0) fail(n, "transA = 1 is not supported");
        const ox::TensorProto& b = need_real(n, 1, "weight", 2);
        const bool tb = is_gemm && attr_i(n, "transB", 0) != 0;
        const double alpha = is_gemm ? attr_f(n, "alpha", 1.0) : 1.0, beta = is_gemm ? attr_f(n, "beta", 1.0) : 1.0;
        const std::size_t K = z(tb ? b.dims[1] : b.dims[0]), N = z(tb ? b.dims[0] : b.dims[1]);
        const ox::TensorProto* c = is_gemm && n.has_input(2) ? &need_real(n, 2, "bias", 0) : nullptr;
        if (c && c->numel() != N && c->numel() != 1)
            fail(n, "bias '" + c->name + "' has " + std::to_string(c->numel()) + " values for " + std::to_string(N) + " outputs");
        OnnxLayer& l = add_layer(n, "Dense");
        l.dims = {K, N};
        l.weight.resize(K * N);
        for (std::size_t k = 0; k < K; ++k)
            for (std::size_t j = 0; j < N; ++j) l.weight[k * N + j] = alpha * b.values[tb ? j * K + k : k * N + j];
        l.bias.assign(N, 0.0);
        if (c)
            for (std::size_t j = 0; j < N; ++j) l.bias[j] = beta * c->values[c->numel() == 1 ? 0 : j];
        if (x.pending_bn) {
            // y = (s x + t) W + b = x (diag(s) W) + (t W + b)
            if (bn_scale_.size() != K) fail(n, "the BatchNormalization before it has " + std::to_string(bn_scale_.size()) + " features for " + std::to_string(K) + " inputs");
            for (std::size_t j = 0; j < N; ++j)
                for (std::size_t k = 0; k < K; ++k) l.bias[j] += bn_shift_[k] * l.weight[k * N + j];
            for (std::size_t k = 0; k < K; ++k)
                for (std::size_t j = 0; j < N; ++j) l.weight[k * N + j] *= bn_scale_[k];
        }
        step(n, Main{2, Layout::batch, 0, true, false});
    }

    /// The bias of a MatMul (an Add of a constant right after it).
    void bias_add(const ox::NodeProto& n, const Main& x, std::size_t ci) {
        const ox::TensorProto* c = n.input.size() == 2 ? constant(n, ci) : nullptr;
        if (!c) fail(n, "adds a value that is not a constant");
        if (!x.fusable || layers_.empty() || layers_.back().type != "Dense" || layers_.back().act != Activation::none)
            fail(n, "adds a constant where no Dense layer's bias can take it (right after a Gemm or MatMul only)");
        if (!c->is_real()) fail(n, "constant '" + c->name + "' is not float or double");
        OnnxLayer& l = layers_.back();
        const std::size_t N = l.dims[1];
        if (c->numel() != N && c->numel() != 1)
            fail(n, "constant '" + c->name + "' has " + std::to_string(c->numel()) + " values for " + std::to_string(N) + " outputs");
        for (std::size_t j = 0; j < N; ++j) l.bias[j] += c->values[c->numel() == 1 ? 0 : j];
        step(n, x);
    }

    void activation(const ox::NodeProto& n, const Main& x) {
        const std::string& op = n.op_type;
        const Activation a = op == "Relu" ? Activation::relu : op == "Sigmoid" ? Activation::sigmoid : op == "Tanh" ? Activation::tanh
                             : op == "LeakyRelu" ? Activation::leaky_relu : op == "Elu" ? Activation::elu : Activation::softplus;
        const double alpha = a == Activation::leaky_relu ? attr_f(n, "alpha", 0.01) : a == Activation::elu ? attr_f(n, "alpha", 1.0) : 0.0;
        if (x.fusable && !layers_.empty() && layers_.back().act == Activation::none) {
            layers_.back().act = a;
            layers_.back().alpha = alpha;
        } else {
            OnnxLayer& l = add_layer(n, "Activation");
            l.act = a;
            l.alpha = alpha;
        }
        step(n, Main{x.rank, Layout::batch, 0, false, false});
    }

    void batch_norm(const ox::NodeProto& n, const Main& x) {
        if (attr_i(n, "training_mode", 0) != 0 || (n.output.size() > 1 && !n.output[1].empty())) fail(n, "training_mode = 1 is not supported");
        const ox::TensorProto& sc = need_real(n, 1, "scale", 1);
        const char* names[4] = {"scale", "bias", "mean", "var"};
        const ox::TensorProto* p[4] = {&sc, nullptr, nullptr, nullptr};
        for (std::size_t i = 1; i < 4; ++i) {
            p[i] = &need_real(n, i + 1, names[i], 1);
            if (p[i]->dims[0] != sc.dims[0]) fail(n, std::string(names[i]) + " does not have " + std::to_string(sc.dims[0]) + " values");
        }
        const double eps = attr_f(n, "epsilon", 1e-5);
        if (!(eps > 0)) fail(n, "epsilon must be positive");
        const std::size_t C = z(sc.dims[0]);
        std::vector<double> s(C), t(C);  // y = s x + t
        for (std::size_t c = 0; c < C; ++c) {
            s[c] = p[0]->values[c] / std::sqrt(p[3]->values[c] + eps);
            t[c] = p[1]->values[c] - p[2]->values[c] * s[c];
        }
        if (x.fusable && !layers_.empty() && layers_.back().act == Activation::none) {
            OnnxLayer& l = layers_.back();
            const bool dense = l.type == "Dense";
            const std::size_t outs = dense ? l.dims[1] : l.dims[0];
            if (outs != C) fail(n, "normalises " + std::to_string(C) + " channels but " + l.where + " has " + std::to_string(outs) + " outputs");
            const std::size_t per = l.weight.size() / outs;
            for (std::size_t o = 0; o < outs; ++o) {
                for (std::size_t k = 0; k < per; ++k) l.weight[dense ? k * outs + o : o * per + k] *= s[o];
                l.bias[o] = l.bias[o] * s[o] + t[o];
            }
            return step(n, x);
        }
        if (x.rank != 0 && x.rank != 2) fail(n, "follows no Dense or Conv layer it could fold into (only an MLP's BatchNorm before a Gemm folds forward)");
        bn_scale_ = std::move(s), bn_shift_ = std::move(t);
        step(n, Main{2, Layout::batch, 0, false, true});
    }

    using Window = ox::Window;
    Window window(const ox::NodeProto& n, std::size_t dims) const {
        Window w = ox::read_window(n, dims);
        if (!w.problem.empty()) fail(n, w.problem);
        return w;
    }
    /// 1-D windows as 2-D ones of height 1: (h, w) of entry i.
    static std::size_t at(const std::vector<std::int64_t>& v, std::size_t dims, std::size_t i, std::size_t one_d) {
        return dims == 1 ? (i == 0 ? one_d : z(v[0])) : z(v[i]);
    }

    void conv(const ox::NodeProto& n, const Main& x) {
        const ox::TensorProto& w = need_real(n, 1, "weight", 0);
        if (w.dims.size() != 3 && w.dims.size() != 4) fail(n, "weight '" + w.name + "' must have rank 3 or 4");
        const std::size_t dims = w.dims.size() - 2;
        if (x.rank != 0 && x.rank != dims + 2) fail(n, "a " + std::to_string(dims) + "-D convolution of a rank " + std::to_string(x.rank) + " input");
        Window win = window(n, dims);
        for (std::size_t i = 0; i < dims; ++i) {
            if (win.k[i] == 0) win.k[i] = w.dims[2 + i];
            if (win.k[i] != w.dims[2 + i]) fail(n, "kernel_shape does not match the weight '" + w.name + "'");
        }
        const ox::TensorProto* b = n.has_input(2) ? &need_real(n, 2, "bias", 1) : nullptr;
        if (b && b->dims[0] != w.dims[0]) fail(n, "bias '" + b->name + "' has " + std::to_string(b->dims[0]) + " values for " + std::to_string(w.dims[0]) + " channels");
        const std::int64_t group = attr_i(n, "group", 1);
        if (group <= 0) fail(n, "group must be positive");
        OnnxLayer& l = add_layer(n, dims == 2 ? "Conv2d" : "Conv1d");
        l.dims = {z(w.dims[0]), z(w.dims[1]), dims == 2 ? z(w.dims[2]) : 1, z(w.dims.back())};
        l.weight = w.values;
        l.bias = b ? b->values : std::vector<double>(z(w.dims[0]), 0.0);
        l.groups = z(group);
        l.stride_h = at(win.s, dims, 0, 1), l.stride_w = at(win.s, dims, 1, 1);
        l.dilation_h = at(win.d, dims, 0, 1), l.dilation_w = at(win.d, dims, 1, 1);
        l.pad_top = dims == 2 ? z(win.p[0]) : 0, l.pad_bottom = dims == 2 ? z(win.p[2]) : 0;
        l.pad_left = z(win.p[dims == 2 ? 1 : 0]), l.pad_right = z(win.p[dims == 2 ? 3 : 1]);
        step(n, Main{dims + 2, Layout::batch, 0, true, false});
    }

    void pool(const ox::NodeProto& n, const Main& x) {
        const bool is_max = n.op_type == "MaxPool";
        if (n.output.size() > 1 && !n.output[1].empty()) fail(n, "the Indices output is not supported");
        if (attr_i(n, "ceil_mode", 0) != 0) fail(n, "ceil_mode = 1 is not supported");
        const std::size_t dims = attr_ints(n, "kernel_shape").size();
        const Window w = window(n, dims);
        if (x.rank != 0 && x.rank != dims + 2) fail(n, "a " + std::to_string(dims) + "-D pool of a rank " + std::to_string(x.rank) + " input");
        for (std::size_t i = 0; i < dims; ++i) {
            if (w.k[i] == 0) fail(n, "kernel_shape must be positive");
            if (w.d[i] != 1) fail(n, "dilated pooling is not supported");
        }
        for (std::int64_t p : w.p)
            if (p != 0) fail(n, "padded pooling is not supported by Pool2dT (pads must be 0)");
        OnnxLayer& l = add_layer(n, is_max ? "MaxPool" : "AvgPool");
        l.dims = {at(w.k, dims, 0, 1), at(w.k, dims, 1, 1)};
        l.stride_h = at(w.s, dims, 0, 1), l.stride_w = at(w.s, dims, 1, 1);
        step(n, Main{x.rank, Layout::batch, 0, false, false});
    }

    void transpose(const ox::NodeProto& n, const Main& x) {
        const std::vector<std::int64_t> perm = attr_ints(n, "perm");
        if (perm != std::vector<std::int64_t>{1, 0, 2} || (x.rank != 0 && x.rank != 3) || (x.layout != Layout::batch && x.layout != Layout::time))
            fail(n, "only the swap of the batch and time axes of a sequence (perm 1, 0, 2) around LSTM and GRU is supported");
        Main y = x;
        y.rank = 3;
        y.layout = x.layout == Layout::batch ? Layout::time : Layout::batch;
        step(n, y);
    }

    void squeeze(const ox::NodeProto& n, const Main& x) {
        std::vector<std::int64_t> axes = attr_ints(n, "axes");
        if (n.has_input(1)) axes = need_ints(n, 1, "axes");
        Main y = x;
        if (x.layout == Layout::rnn_y && axes == std::vector<std::int64_t>{1}) y.layout = Layout::time, y.rank = 3;
        else if (x.layout == Layout::rnn_h && axes == std::vector<std::int64_t>{0}) y.layout = Layout::batch, y.rank = 2;
        else fail(n, "only the Squeeze of the direction axis of a recurrent layer's Y (axis 1) or Y_h (axis 0) is supported");
        step(n, y);
    }

    /// The last step of a recurrent layer's output: y[:, -1] (batch-first), y[-1] (time-major) or h[-1].
    void gather(const ox::NodeProto& n, const Main& x) {
        const std::vector<std::int64_t> idx = need_ints(n, 1, "indices");
        const ox::TensorProto* t = constant(n, 1);
        const std::int64_t axis = attr_i(n, "axis", 0);
        const bool last = idx.size() == 1 && t->dims.empty() && idx[0] == -1;
        Main y = x;
        y.layout = Layout::batch, y.rank = 2;
        if (x.layout == Layout::rnn_h && axis == 0 && t->dims.empty() && idx.size() == 1 && (idx[0] == 0 || idx[0] == -1)) return step(n, y);
        const bool seq_tail = !layers_.empty() && (layers_.back().type == "LSTM" || layers_.back().type == "GRU") && layers_.back().sequences &&
                              x.rank == 3;
        if (seq_tail && last && ((x.layout == Layout::batch && axis == 1) || (x.layout == Layout::time && axis == 0))) {
            layers_.back().sequences = false;  // the last step of every step's h is the last h
            return step(n, y);
        }
        fail(n, "only the last step (index -1 of the time axis) of a recurrent layer's output is supported");
    }

    void recurrent(const ox::NodeProto& n, const Main& x) {
        const bool lstm = n.op_type == "LSTM";
        const std::size_t G = lstm ? 4 : 3;
        if (x.layout != Layout::time || (x.rank != 0 && x.rank != 3))
            fail(n, "expects a time-major (T, B, F) input (a Transpose of the batch-first sequence)");
        const std::string problem = ox::recurrent_problem(n);
        if (!problem.empty()) fail(n, problem);
        for (std::size_t i = 5; i < n.input.size(); ++i) {
            if (!n.has_input(i)) continue;
            const ox::TensorProto* c = constant(n, i);
            if (!zeros_.count(n.input[i]) && !(c && c->is_real() && all_zero(*c))) fail(n, "initial states must be absent or constant zeros");
        }
        const auto [w, r, b] = this->recurrent_weights(n, G);
        const std::int64_t H = r.dims[2];
        if (n.output.size() > 2 && !n.output[2].empty() && used(n.output[2])) fail(n, "the cell state output Y_c is not supported");
        OnnxLayer& l = add_layer(n, lstm ? "LSTM" : "GRU");
        const std::size_t F = z(w.dims[2]), h = z(H), GH = G * h;
        l.dims = {F, h};
        // ONNX gate blocks (LSTM i o f c, GRU z r h) to PyTorch's (LSTM i f g o, GRU r z n).
        static const std::size_t from_lstm[4] = {0, 2, 3, 1}, from_gru[3] = {1, 0, 2};
        const std::size_t* from = lstm ? from_lstm : from_gru;
        const auto reorder = [&](const std::vector<double>& src, std::size_t offset, std::size_t cols) {
            std::vector<double> out(GH * cols);
            for (std::size_t g = 0; g < G; ++g)
                for (std::size_t k = 0; k < h * cols; ++k) out[g * h * cols + k] = src[offset + from[g] * h * cols + k];
            return out;
        };
        l.weight = reorder(w.values, 0, F);
        l.weight_hh = reorder(r.values, 0, h);
        l.bias = b ? reorder(b->values, 0, 1) : std::vector<double>(GH, 0.0);
        l.bias_hh = b ? reorder(b->values, GH, 1) : std::vector<double>(GH, 0.0);
        const bool y_used = !n.output.empty() && used(n.output[0]), h_used = n.output.size() > 1 && used(n.output[1]);
        if (y_used && h_used) fail(n, "both Y and Y_h are read: the graph branches (deploy models are chains of layers)");
        l.sequences = y_used;
        ++epoch_;
        put(n, 0, Main{4, Layout::rnn_y, epoch_, false, false});
        put(n, 1, Main{3, Layout::rnn_h, epoch_, false, false});
    }
    bool used(const std::string& v) const {
        if (m_.graph.output.size() == 1 && m_.graph.output[0].name == v) return true;
        for (const auto& k : m_.graph.node)
            for (const auto& in : k.input)
                if (in == v) return true;
        return false;
    }

    const ox::ModelProto& m_;
    std::string src_;
    std::map<std::string, Main> main_;
    std::set<std::string> shaped_, zeros_;
    std::vector<ox::Dim> input_dims_;
    std::vector<OnnxLayer> layers_;
    std::vector<double> bn_scale_, bn_shift_;
    std::size_t epoch_ = 0;
};

[[noreturn]] inline void onnx_mismatch(const OnnxLayer& l, std::size_t index, const char* want, const std::string& what) {
    throw shape_error("deploy::load_onnx: " + l.where + " vs fixed-size layer " + std::to_string(index) + " (" + want + "): " + what);
}
inline void onnx_expect(const OnnxLayer& l, std::size_t index, const char* want, bool ok) {
    if (!ok) onnx_mismatch(l, index, want, "a " + l.type + " layer cannot load into a " + want + " layer");
}
template <class T>
std::vector<T> onnx_cast(const OnnxLayer& l, const std::vector<double>& v) {
    std::vector<T> out(v.size());
    for (std::size_t k = 0; k < v.size(); ++k) {
        out[k] = static_cast<T>(v[k]);
        if (!std::isfinite(out[k])) throw value_error("deploy::load_onnx: " + l.where + ": value " + std::to_string(k) + " is not finite in this type");
    }
    return out;
}

template <class T, std::size_t In, std::size_t Out>
void load_onnx_layer(DenseT<T, In, Out>& d, const OnnxLayer& l, std::size_t index) {
    onnx_expect(l, index, "Dense", l.type == "Dense");
    if (l.dims[0] != In || l.dims[1] != Out)
        onnx_mismatch(l, index, "Dense", "ONNX weight " + onnx_shape_text(l.dims) + ", fixed-size weight " + onnx_shape_text({In, Out}));
    const std::vector<T> w = onnx_cast<T>(l, l.weight), b = onnx_cast<T>(l, l.bias);
    const LayerView<T> v{w.data(), b.data(), In, Out, l.act, static_cast<T>(l.alpha)};
    const Status s = d.dense.set(v);
    if (s != Status::ok) throw value_error("deploy::load_onnx: " + l.where + ": " + status_message(s));
}

template <class T, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t KH, std::size_t KW, std::size_t SH,
          std::size_t SW, std::size_t PH, std::size_t PW, std::size_t DH, std::size_t DW>
void load_onnx_layer(Conv2dT<T, Cin, H, W, Cout, KH, KW, SH, SW, PH, PW, PH, PW, DH, DW>& c, const OnnxLayer& l, std::size_t index) {
    onnx_expect(l, index, "Conv2d", l.type == "Conv2d" || l.type == "Conv1d");
    if (l.type == "Conv1d" && H != 1) onnx_mismatch(l, index, "Conv2d", "a 1-D convolution cannot load into a 2-D one of height " + std::to_string(H));
    if (l.dims != std::vector<std::size_t>{Cout, Cin, KH, KW})
        onnx_mismatch(l, index, "Conv2d", "ONNX weight " + onnx_shape_text(l.dims) + ", fixed-size weight " + onnx_shape_text({Cout, Cin, KH, KW}) +
                                              (l.groups != 1 ? " (the ONNX convolution has " + std::to_string(l.groups) + " groups)" : ""));
    if (l.groups != 1) onnx_mismatch(l, index, "Conv2d", "groups " + std::to_string(l.groups) + "; Conv2dT needs 1");
    if (l.dilation_h != DH || l.dilation_w != DW)
        onnx_mismatch(l, index, "Conv2d", "ONNX dilation " + onnx_shape_text({l.dilation_h, l.dilation_w}) + ", fixed-size dilation " +
                                              onnx_shape_text({DH, DW}));
    if (l.stride_h != SH || l.stride_w != SW || l.pad_top != PH || l.pad_bottom != PH || l.pad_left != PW || l.pad_right != PW)
        onnx_mismatch(l, index, "Conv2d", "ONNX stride " + onnx_shape_text({l.stride_h, l.stride_w}) + " and padding (top, bottom, left, right) " +
                                              onnx_shape_text({l.pad_top, l.pad_bottom, l.pad_left, l.pad_right}) + ", fixed-size stride " +
                                              onnx_shape_text({SH, SW}) + " and padding " + onnx_shape_text({PH, PH, PW, PW}));
    constexpr std::size_t K = Cin * KH * KW;
    const std::vector<T> w = onnx_cast<T>(l, l.weight), b = onnx_cast<T>(l, l.bias);
    for (std::size_t oc = 0; oc < Cout; ++oc) {
        for (std::size_t r = 0; r < K; ++r) c.weight[oc][r] = w[oc * K + r];
        c.bias[oc] = b[oc];
    }
    c.act = l.act;
    c.alpha = static_cast<T>(l.alpha);
}

template <class T, bool IsMax, std::size_t C, std::size_t H, std::size_t W, std::size_t KH, std::size_t KW, std::size_t SH, std::size_t SW>
void load_onnx_layer(Pool2dT<T, IsMax, C, H, W, KH, KW, SH, SW>&, const OnnxLayer& l, std::size_t index) {
    const char* want = IsMax ? "MaxPool" : "AvgPool";
    const bool global = l.type == (IsMax ? "GlobalMaxPool" : "GlobalAvgPool");
    onnx_expect(l, index, want, l.type == want || global);
    if (global) {
        if (KH != H || KW != W)
            onnx_mismatch(l, index, want, "a global pool over the whole input, fixed-size window " + onnx_shape_text({KH, KW}) + " of an input " +
                                              onnx_shape_text({C, H, W}));
        return;
    }
    if (l.dims != std::vector<std::size_t>{KH, KW} || l.stride_h != SH || l.stride_w != SW)
        onnx_mismatch(l, index, want, "ONNX window " + onnx_shape_text(l.dims) + " stride " + onnx_shape_text({l.stride_h, l.stride_w}) +
                                          ", fixed-size window " + onnx_shape_text({KH, KW}) + " stride " + onnx_shape_text({SH, SW}));
}

template <class T, std::size_t N>
void load_onnx_layer(FlattenT<T, N>&, const OnnxLayer& l, std::size_t index) {
    onnx_expect(l, index, "Flatten", l.type == "Flatten");
}

template <class T, std::size_t N, Activation A>
void load_onnx_layer(ActivationT<T, N, A>& a, const OnnxLayer& l, std::size_t index) {
    if (l.type != "Activation" || l.act != A)
        onnx_mismatch(l, index, "Activation", std::string("the ONNX layer is ") + (l.type == "Activation" ? activation_name(l.act) : l.type.c_str()) +
                                                  ", the fixed-size layer " + activation_name(A));
    a.alpha = static_cast<T>(l.alpha);
}

template <class T, Cell C, std::size_t In, std::size_t Hd, std::size_t Steps, bool Seq>
void load_onnx_layer(RecurrentT<T, C, In, Hd, Steps, Seq>& r, const OnnxLayer& l, std::size_t index) {
    using R = RecurrentT<T, C, In, Hd, Steps, Seq>;
    onnx_expect(l, index, R::name, l.type == R::name);
    if (l.dims[0] != In || l.dims[1] != Hd)
        onnx_mismatch(l, index, R::name, "ONNX W " + onnx_shape_text({R::G * l.dims[1], l.dims[0]}) + ", fixed-size " + onnx_shape_text({R::GH, In}));
    if (l.sequences != Seq)
        onnx_mismatch(l, index, R::name, std::string("the ONNX layer gives ") + (l.sequences ? "every step" : "the last step") + ", the fixed-size layer " +
                                             (Seq ? "every step" : "the last step"));
    const std::vector<T> w = onnx_cast<T>(l, l.weight), u = onnx_cast<T>(l, l.weight_hh), bi = onnx_cast<T>(l, l.bias), bh = onnx_cast<T>(l, l.bias_hh);
    std::vector<T> wx(In * R::GH), wh(Hd * R::GH);
    for (std::size_t j = 0; j < R::GH; ++j) {
        for (std::size_t p = 0; p < In; ++p) wx[p * R::GH + j] = w[j * In + p];
        for (std::size_t p = 0; p < Hd; ++p) wh[p * R::GH + j] = u[j * Hd + p];
    }
    const LayerView<T> vx{wx.data(), nullptr, In, R::GH, Activation::none, T(0)};
    const LayerView<T> vh{wh.data(), bh.data(), Hd, R::GH, Activation::none, T(0)};
    if (r.input.set(vx) != Status::ok || r.hidden.set(vh) != Status::ok) throw value_error("deploy::load_onnx: " + l.where + ": the weights do not fit");
    for (std::size_t j = 0; j < R::GH; ++j) r.bias_ih[j] = bi[j];
}

template <std::size_t I, class T, class... L>
void load_onnx_layers(ModelT<T, L...>& m, const std::vector<OnnxLayer>& layers) {
    if constexpr (I < sizeof...(L)) {
        load_onnx_layer(m.template layer<I>(), layers[I], I);
        load_onnx_layers<I + 1>(m, layers);
    }
}

} // namespace detail

/// The deployable layers of a parsed ONNX model, in order (see the top of this header).
inline std::vector<OnnxLayer> onnx_layers(const io::onnx::ModelProto& m, const std::string& source = "<memory>") {
    return detail::OnnxChain(m, source).run();
}

/// Loads a parsed ONNX model into a ModelT. Throws format_error for what no deploy layer
/// expresses and shape_error (naming the node, the fixed-size layer and both shapes) when the
/// layers or their sizes differ; the fixed-size model may be partly loaded then.
template <class T, class... L>
void load_onnx(ModelT<T, L...>& fixed, const io::onnx::ModelProto& m, const std::string& source = "<memory>") {
    detail::OnnxChain chain(m, source);
    const std::vector<OnnxLayer> layers = chain.run();
    if (layers.size() != sizeof...(L)) {
        std::string list;
        for (const auto& l : layers) list += (list.empty() ? "" : ", ") + l.type;
        throw shape_error("deploy::load_onnx: " + source + " has " + std::to_string(layers.size()) + " deployable layers (" + list +
                          ") but the fixed-size model has " + std::to_string(sizeof...(L)));
    }
    const std::vector<std::int64_t> f = chain.input_features();
    std::size_t n = 1;
    bool known = !f.empty();
    for (std::int64_t d : f) known = known && d > 0, n *= known ? static_cast<std::size_t>(d) : 1;
    if (known && n != ModelT<T, L...>::inputs) {
        std::vector<std::size_t> dims;
        for (std::int64_t d : f) dims.push_back(static_cast<std::size_t>(d));
        throw shape_error("deploy::load_onnx: " + source + ": the graph input has features " + detail::onnx_shape_text(dims) + " (" + std::to_string(n) +
                          " values), the fixed-size model takes " + std::to_string(ModelT<T, L...>::inputs));
    }
    detail::load_onnx_layers<0>(fixed, layers);
}

/// Loads an ONNX file into a ModelT.
template <class T, class... L>
void load_onnx(ModelT<T, L...>& fixed, const std::string& path) {
    load_onnx(fixed, io::onnx::load(path), path);
}

/// A heap-allocated ModelT (the object can be large) from an ONNX file.
template <class M>
std::unique_ptr<M> load_onnx(const std::string& path) {
    auto m = std::make_unique<M>();
    load_onnx(*m, path);
    return m;
}

} // namespace tapir::deploy
