#pragma once
/// nn::Model: the functional model API (Keras' functional Model, PyTorch's nn.Module with a forward
/// of several arguments): named inputs, layers called on one or more values, layers shared
/// between calls, residual sums and concatenations, one output.
///
///     tapir::Rng rng(1);
///     tapir::nn::Model<double> g;
///     auto jets = g.input("jets", tapir::Shape{3});           // (batch, 3)
///     auto parts = g.input("particles", tapir::Shape{4});     // (batch, 4)
///     auto enc = g.layer("enc", tapir::nn::Dense<double>(4, 4, rng, tapir::Activation::tanh));
///     auto h = g.call(enc, parts);                             // enc is shared:
///     auto r = g.add(h, g.call(enc, h));                       // residual h + enc(h)
///     auto z = g.concat({r, jets});                            // (batch, 7)
///     g.output(g.call(g.layer("head", tapir::nn::Dense<double>(7, 1, rng)), z));
///     tapir::Var<double> y = g(tape.view(xj), tape.view(xp));  // inputs in input() order
///
/// Layers may take several inputs: g.call(pfn, {parts, mask}) runs Module::forward_many, or,
/// for a layer whose forward_many takes one input, its own forward(x, mask) or forward(a, b, c)
/// (found from the layer's type when it is added: DeepSet, EdgeConv, LSTM plug in as they are). Parameters
/// are named by layer: "enc.weight", "head.bias". Nodes run in the order they were added, which
/// is an order in which every node's inputs come first. Build a graph in place (Value and Layer
/// are indices into it); copies are deep, with the same structure.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../autodiff/ops.hpp"
#include "../error.hpp"
#include "module.hpp"

namespace tapir {
namespace nn {

template <class T>
class Model : public Cloneable<Model<T>, Module<T>> {
public:
    /// A value in the graph: an input or the output of a node.
    struct Value {
        std::size_t id = static_cast<std::size_t>(-1);
    };
    /// A layer owned by the graph; call it any number of times to share its parameters.
    struct Layer {
        std::size_t id = static_cast<std::size_t>(-1);
    };
    /// A parameter-free node computed from its inputs' values (masked sums, products, ...).
    using Function = std::function<Var<T>(const std::vector<Var<T>>&)>;

    Model() = default;
    Model(Model&&) noexcept = default;
    Model& operator=(Model&&) noexcept = default;
    /// A deep copy: every layer is cloned; functions are copied.
    Model(const Model& o)
        : Model::Cloneable(o), steps_(o.steps_), names_(o.names_), inputs_(o.inputs_), output_(o.output_), layer_names_(o.layer_names_),
          forwards_(o.forwards_) {
        for (const auto& l : o.layers_) layers_.push_back(l->clone());
        this->update_parameter_names();
    }
    Model& operator=(const Model& o) {
        if (this != &o) {
            Model copy(o);
            *this = std::move(copy);
        }
        return *this;
    }

    // ---- building --------------------------------------------------------------------------------
    /// A model input; `features` is its shape without the batch axis, checked by forward (an
    /// empty Shape{} leaves it unchecked).
    Value input(const std::string& name, const Shape& features = Shape{}) {
        if (features.rank() >= max_rank)
            throw shape_error("Model::input: '" + name + "' has features " + features.str() + "; with the batch axis the rank must be at most " +
                              std::to_string(max_rank));
        Step s;
        s.kind = Kind::input;
        s.features = features;
        s.input = inputs_.size();
        const Value v = push(std::move(s), name, "input");
        inputs_.push_back(v.id);
        return v;
    }
    /// Takes ownership of a layer under a unique name (its parameters become "name.weight", ...).
    template <class L, class = std::enable_if_t<std::is_base_of<Module<T>, std::decay_t<L>>::value>>
    Layer layer(const std::string& name, L&& l) {
        using D = std::decay_t<L>;
        const Layer id = add_layer(name, std::make_unique<D>(std::forward<L>(l)));
        set_forwards<D>(id.id);
        return id;
    }
    Layer layer(const std::string& name, std::unique_ptr<Module<T>> l) {
        if (!l) throw value_error("Model::layer: null layer '" + name + "'");
        return add_layer(name, std::move(l));
    }
    /// Constructs a layer in place: emplace<Dense<double>>("enc", 4, 4, rng).
    template <class L, class... Args>
    Layer emplace(const std::string& name, Args&&... args) {
        static_assert(std::is_base_of<Module<T>, L>::value, "Model::emplace: the layer must derive from tapir::nn::Module<T>");
        const Layer id = add_layer(name, std::make_unique<L>(std::forward<Args>(args)...));
        set_forwards<L>(id.id);
        return id;
    }

    /// The layer applied to one value or several (a node); a second call shares the parameters.
    /// The node is named after the layer ("enc", then "enc_1", ...) unless a name is given.
    Value call(Layer l, Value x, const std::string& name = "") { return call(l, std::vector<Value>{x}, name); }
    Value call(Layer l, const std::vector<Value>& xs, const std::string& name = "") {
        check_layer(l, "call");
        Module<T>& m = *layers_[l.id];
        const std::size_t want = m.num_inputs();
        if (want != 0 && xs.size() != want && !typed_forward(l.id, xs.size()))
            throw value_error("Model::call: layer '" + layer_names_[l.id] + "' (" + m.describe() + ") takes " + std::to_string(want) +
                              " input" + (want == 1 ? "" : "s") + ", got " + std::to_string(xs.size()));
        Step s;
        s.kind = Kind::call;
        s.layer = l.id;
        s.ins = ids(xs, "call");
        s.label = layer_names_[l.id] + " (" + m.type_name() + ")";
        std::string node = name;
        if (node.empty()) {
            node = layer_names_[l.id];
            for (std::size_t k = 1; taken(node); ++k) node = layer_names_[l.id] + "_" + std::to_string(k);
        }
        return push(std::move(s), node, "call");
    }
    /// a + b of equal shapes (a residual connection), Keras' Add.
    Value add(Value a, Value b, const std::string& name = "") { return merge(Kind::add, {a, b}, name, "add"); }
    /// a * b of equal shapes (gating), Keras' Multiply.
    Value multiply(Value a, Value b, const std::string& name = "") { return merge(Kind::mul, {a, b}, name, "multiply"); }
    /// Concatenation along the last axis, Keras' Concatenate.
    Value concat(const std::vector<Value>& xs, const std::string& name = "") {
        if (xs.size() < 2) throw value_error("Model::concat: needs at least 2 values, got " + std::to_string(xs.size()));
        return merge(Kind::concat, xs, name, "concat");
    }
    /// Any parameter-free function of the given values (Keras' Lambda), e.g. a masked sum.
    Value apply(const std::string& name, Function f, const std::vector<Value>& xs) {
        if (!f) throw value_error("Model::apply: empty function '" + name + "'");
        Step s;
        s.kind = Kind::function;
        s.fn = std::move(f);
        s.ins = ids(xs, "apply");
        return push(std::move(s), name, "apply");
    }
    /// The model's output (one value; concatenate to return several).
    void output(Value v) {
        if (v.id >= steps_.size()) throw value_error("Model::output: unknown value");
        output_ = v.id;
    }

    // ---- access ----------------------------------------------------------------------------------
    std::size_t num_inputs() const override { return inputs_.size(); }
    std::vector<std::string> input_names() const {
        std::vector<std::string> out;
        for (std::size_t id : inputs_) out.push_back(names_[id]);
        return out;
    }
    Module<T>& operator[](Layer l) {
        check_layer(l, "operator[]");
        return *layers_[l.id];
    }
    /// A layer by name, e.g. to freeze it or to load pretrained parameters into it.
    Module<T>& layer(const std::string& name) {
        for (std::size_t i = 0; i < layers_.size(); ++i)
            if (layer_names_[i] == name) return *layers_[i];
        std::string known;
        for (const auto& n : layer_names_) known += (known.empty() ? "" : ", ") + n;
        throw value_error("Model: no layer '" + name + "' (layers: " + known + ")");
    }

    // ---- reading the graph (exporters: nn/onnx.hpp) --------------------------------------------
    enum class NodeKind : std::uint8_t { input, call, add, multiply, concat, function };
    /// One node as exporters see it: what it is, its name, the nodes it reads.
    struct NodeInfo {
        NodeKind kind = NodeKind::input;
        std::string name;
        std::vector<std::size_t> inputs;   ///< indices of the nodes read, all below this node's
        const Module<T>* layer = nullptr;  ///< call: the layer
        std::string layer_name;            ///< call: the layer's name
        std::size_t layer_index = 0;       ///< call: the layer's position among layer_at(0 ...)
        std::size_t input_index = 0;       ///< input: position among the model inputs
        Shape features{};                  ///< input: shape without the batch axis (empty: unchecked)
    };
    /// Nodes in run order (every node's inputs come first); the output is node output_node().
    std::size_t num_nodes() const noexcept { return steps_.size(); }
    NodeInfo node(std::size_t i) const {
        if (i >= steps_.size()) throw value_error("Model::node: index " + std::to_string(i) + " out of range");
        const Step& s = steps_[i];
        NodeInfo n;
        static const NodeKind kinds[] = {NodeKind::input, NodeKind::call, NodeKind::add, NodeKind::multiply, NodeKind::concat, NodeKind::function};
        n.kind = kinds[static_cast<std::size_t>(s.kind)];
        n.name = names_[i];
        n.inputs = s.ins;
        if (s.kind == Kind::call) n.layer = layers_[s.layer].get(), n.layer_name = layer_names_[s.layer], n.layer_index = s.layer;
        n.input_index = s.input;
        n.features = s.features;
        return n;
    }
    /// The layers in the order they were added (the order of the parameters' names).
    std::size_t num_layers() const noexcept { return layers_.size(); }
    const Module<T>& layer_at(std::size_t i) const {
        if (i >= layers_.size()) throw value_error("Model::layer_at: index " + std::to_string(i) + " out of range");
        return *layers_[i];
    }
    const std::string& layer_name(std::size_t i) const {
        if (i >= layers_.size()) throw value_error("Model::layer_name: index " + std::to_string(i) + " out of range");
        return layer_names_[i];
    }
    std::size_t output_node() const {
        if (output_ >= steps_.size()) throw value_error("Model: no output set (call output(value) when building)");
        return output_;
    }

    // ---- running ---------------------------------------------------------------------------------
    Var<T> forward(const Var<T>& x) override {
        one_.resize(1);
        one_[0] = x;
        return forward_many(one_);
    }
    Var<T> forward_many(const std::vector<Var<T>>& xs) override {
        if (output_ >= steps_.size()) throw value_error("Model: no output set (call output(value) when building)");
        if (xs.size() != inputs_.size()) {
            std::string names;
            for (std::size_t id : inputs_) names += (names.empty() ? "" : ", ") + names_[id];
            throw value_error("Model: expected " + std::to_string(inputs_.size()) + " input" + (inputs_.size() == 1 ? "" : "s") +
                              " (" + names + "), got " + std::to_string(xs.size()));
        }
        Tape<T>& t = xs[0].tape();
        const char* outer = t.label();
        values_.resize(steps_.size());
        for (std::size_t i = 0; i <= output_; ++i) {
            Step& s = steps_[i];
            switch (s.kind) {
            case Kind::input: values_[i] = checked_input(s, names_[i], xs[s.input]); break;
            case Kind::call: {
                t.set_label(s.label.c_str());
                Module<T>& m = *layers_[s.layer];
                if (s.ins.size() == 1) {
                    values_[i] = m.forward(values_[s.ins[0]]);
                } else {
                    gather(s);
                    const Forward f = m.num_inputs() == 1 ? typed_forward(s.layer, s.ins.size()) : nullptr;
                    values_[i] = f ? f(m, s.args) : m.forward_many(s.args);
                }
                t.set_label(outer);
                break;
            }
            case Kind::add:
            case Kind::mul: {
                const Var<T>& a = values_[s.ins[0]];
                const Var<T>& b = values_[s.ins[1]];
                const Shape sa = a.shape(), sb = b.shape();
                if (sa != sb)
                    tapir::detail::throw_shape(("Model node '" + names_[i] + "' (" + (s.kind == Kind::add ? "add" : "multiply") + ")").c_str(),
                                               sa, sb, "the shapes must be equal");
                values_[i] = s.kind == Kind::add ? tapir::add(a, b) : tapir::mul(a, b);
                break;
            }
            case Kind::concat: {
                Var<T> out = values_[s.ins[0]];
                for (std::size_t k = 1; k < s.ins.size(); ++k) {
                    const Var<T>& b = values_[s.ins[k]];
                    const Shape sa = out.shape(), sb = b.shape();
                    bool ok = sa.rank() == sb.rank() && sa.rank() >= 1;
                    for (std::size_t d = 0; ok && d + 1 < sa.rank(); ++d) ok = sa[d] == sb[d];
                    if (!ok)
                        tapir::detail::throw_shape(("Model node '" + names_[i] + "' (concat)").c_str(), sa, sb,
                                                   "all axes but the last must be equal");
                    out = tapir::concat(out, b, static_cast<std::int64_t>(sa.rank()) - 1);
                }
                values_[i] = out;
                break;
            }
            case Kind::function:
                gather(s);
                values_[i] = s.fn(s.args);
                break;
            }
        }
        return values_[output_];
    }

    /// Output shape for one input; output_shape_many (the default) for several.
    Shape output_shape(const Shape& in) const override { return trace(std::vector<Shape>{in}).back(); }
    Shape output_shape_many(const std::vector<Shape>& in) const override { return trace(in).back(); }

    void summary_rows(const Shape& input, std::vector<SummaryRow>& rows) const override {
        summary_rows_many(std::vector<Shape>{input}, rows);
    }
    /// One row per node: inputs, layer calls (a shared layer's later calls count no parameters
    /// again), merges; "Connected to" names each node's inputs.
    void summary_rows_many(const std::vector<Shape>& inputs, std::vector<SummaryRow>& rows) const override {
        const std::vector<Shape> shapes = trace(inputs);
        std::vector<bool> seen(layers_.size(), false);
        for (std::size_t i = 0; i < shapes.size(); ++i) {
            const Step& s = steps_[i];
            std::string from;
            for (std::size_t k : s.ins) from += (from.empty() ? "" : ", ") + names_[k];
            switch (s.kind) {
            case Kind::input: rows.push_back(SummaryRow{names_[i], "Input", shapes[i], 0, "", ""}); break;
            case Kind::call: {
                const Module<T>& m = *layers_[s.layer];
                const bool first = !seen[s.layer];
                seen[s.layer] = true;
                rows.push_back(SummaryRow{names_[i], first ? m.describe() : "shared " + layer_names_[s.layer], shapes[i],
                                          first ? m.num_parameters() : 0, from, m.trainable_mark()});
                break;
            }
            case Kind::add: rows.push_back(SummaryRow{names_[i], "Add", shapes[i], 0, from, ""}); break;
            case Kind::mul: rows.push_back(SummaryRow{names_[i], "Multiply", shapes[i], 0, from, ""}); break;
            case Kind::concat: rows.push_back(SummaryRow{names_[i], "Concatenate", shapes[i], 0, from, ""}); break;
            case Kind::function: rows.push_back(SummaryRow{names_[i], "Function", shapes[i], 0, from, ""}); break;
            }
        }
    }

    std::string type_name() const override { return "Model"; }

protected:
    void collect_children(std::vector<NamedModule<T>>& out) override {
        for (std::size_t i = 0; i < layers_.size(); ++i) out.emplace_back(layer_names_[i], layers_[i].get());
    }

private:
    /// A layer's own forward of 2 or 3 values, called on the layer as its type (clone-safe).
    using Forward = Var<T> (*)(Module<T>&, const std::vector<Var<T>>&);
    template <class L, class = void>
    struct has_forward2 : std::false_type {};
    template <class L>
    struct has_forward2<L, std::void_t<decltype(std::declval<L&>().forward(std::declval<const Var<T>&>(), std::declval<const Var<T>&>()))>>
        : std::true_type {};
    template <class L, class = void>
    struct has_forward3 : std::false_type {};
    template <class L>
    struct has_forward3<L, std::void_t<decltype(std::declval<L&>().forward(std::declval<const Var<T>&>(), std::declval<const Var<T>&>(),
                                                                         std::declval<const Var<T>&>()))>> : std::true_type {};
    template <class L>
    static Var<T> forward2(Module<T>& m, const std::vector<Var<T>>& a) {
        return static_cast<L&>(m).forward(a[0], a[1]);
    }
    template <class L>
    static Var<T> forward3(Module<T>& m, const std::vector<Var<T>>& a) {
        return static_cast<L&>(m).forward(a[0], a[1], a[2]);
    }
    template <class L>
    void set_forwards(std::size_t id) {
        if constexpr (has_forward2<L>::value) forwards_[id][0] = &forward2<L>;
        if constexpr (has_forward3<L>::value) forwards_[id][1] = &forward3<L>;
    }
    Forward typed_forward(std::size_t layer, std::size_t inputs) const {
        if (layer >= forwards_.size() || inputs < 2 || inputs > 3) return nullptr;
        return forwards_[layer][inputs - 2];
    }

    enum class Kind { input, call, add, mul, concat, function };
    struct Step {
        Kind kind = Kind::input;
        std::size_t input = 0;        // input: position among the model inputs
        Shape features{};             // input: shape without the batch axis (empty: unchecked)
        std::size_t layer = 0;        // call: the layer
        std::vector<std::size_t> ins; // values this node reads
        std::string label;            // call: tape label for anomaly messages
        Function fn;                  // function
        std::vector<Var<T>> args;     // scratch, kept so that steady-state steps do not allocate
    };

    Layer add_layer(const std::string& name, std::unique_ptr<Module<T>> l) {
        if (name.empty() || name.find('.') != std::string::npos)
            throw value_error("Model::layer: layer names must be non-empty and without '.', got '" + name + "'");
        for (const auto& n : layer_names_)
            if (n == name) throw value_error("Model::layer: a layer named '" + name + "' exists already");
        layers_.push_back(std::move(l));
        forwards_.resize(layers_.size());
        layer_names_.push_back(name);
        this->update_parameter_names();
        return Layer{layers_.size() - 1};
    }
    void check_layer(Layer l, const char* fn) const {
        if (l.id >= layers_.size()) throw value_error(std::string("Model::") + fn + ": unknown layer");
    }
    bool taken(const std::string& name) const {
        for (const auto& n : names_)
            if (n == name) return true;
        return false;
    }
    std::vector<std::size_t> ids(const std::vector<Value>& xs, const char* fn) const {
        std::vector<std::size_t> out;
        for (const Value& v : xs) {
            if (v.id >= steps_.size()) throw value_error(std::string("Model::") + fn + ": unknown value (from another graph?)");
            out.push_back(v.id);
        }
        return out;
    }
    Value merge(Kind k, const std::vector<Value>& xs, const std::string& name, const char* what) {
        Step s;
        s.kind = k;
        s.ins = ids(xs, what);
        std::string node = name;
        if (node.empty())
            for (std::size_t n = 0; node.empty() || taken(node); ++n) node = std::string(what) + "_" + std::to_string(n);
        return push(std::move(s), node, what);
    }
    Value push(Step s, const std::string& name, const char* fn) {
        if (name.empty()) throw value_error(std::string("Model::") + fn + ": empty node name");
        if (taken(name)) throw value_error(std::string("Model::") + fn + ": a node named '" + name + "' exists already");
        s.args.reserve(s.ins.size());
        steps_.push_back(std::move(s));
        names_.push_back(name);
        return Value{steps_.size() - 1};
    }
    void gather(Step& s) {
        s.args.resize(s.ins.size());
        for (std::size_t k = 0; k < s.ins.size(); ++k) s.args[k] = values_[s.ins[k]];
    }
    static Var<T> checked_input(const Step& s, const std::string& name, const Var<T>& x) {
        if (s.features.rank() == 0) return x;
        const Shape xs = x.shape();
        bool ok = xs.rank() == s.features.rank() + 1;
        for (std::size_t d = 0; ok && d < s.features.rank(); ++d) ok = xs[d + 1] == s.features[d];
        if (!ok) {
            Shape want{xs.rank() ? xs[0] : 0};
            for (std::size_t d = 0; d < s.features.rank(); ++d) want.push_back(s.features[d]);
            tapir::detail::throw_shape(("Model input '" + name + "'").c_str(), want, xs, "expected (batch, features...)");
        }
        return x;
    }
    /// Every node's output shape for the given input shapes (a run on a scratch tape in eval mode).
    std::vector<Shape> trace(const std::vector<Shape>& in) const {
        return this->scratch_run([&](Tape<T>& t) {
            Model& self = const_cast<Model&>(*this);
            std::vector<Var<T>> xs;
            for (const Shape& s : in) xs.push_back(t.full(s, T(1)));
            self.forward_many(xs);
            std::vector<Shape> out;
            for (std::size_t i = 0; i <= output_; ++i) out.push_back(values_[i].shape());
            return out;
        });
    }

    std::vector<Step> steps_;
    std::vector<std::string> names_;  ///< node names, one per step
    std::vector<std::size_t> inputs_;
    std::size_t output_ = static_cast<std::size_t>(-1);
    std::vector<std::unique_ptr<Module<T>>> layers_;
    std::vector<std::string> layer_names_;
    std::vector<std::array<Forward, 2>> forwards_;  ///< per layer: its forward of 2 and of 3 values, if any
    std::vector<Var<T>> values_, one_;  ///< scratch of forward
};

} // namespace nn
} // namespace tapir
