#pragma once
/// ONNX files without a protobuf library: plain structs for the messages tapir reads and writes
/// (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto) and their
/// serialisation and parsing on io/protobuf.hpp. Field numbers and enums are those of
/// onnx/onnx.proto (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto, IR version 8).
/// Fields tapir does not use are skipped when read and not written.
///
/// Tensors keep their values decoded: float and double data (raw_data, float_data or
/// double_data) in `values`, integer and bool data in `ints`. The parser checks every claimed
/// size against the bytes present before it allocates, so a file claiming huge dimensions is a
/// format_error, not an allocation. Models built on these structs live in nn/onnx.hpp.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "detail/file.hpp"
#include "protobuf.hpp"

namespace tapir {
namespace io {
namespace onnx {

/// TensorProto.DataType values used here.
enum DataType : std::int32_t { kFloat = 1, kUint8 = 2, kInt8 = 3, kInt32 = 6, kInt64 = 7, kBool = 9, kDouble = 11 };
/// AttributeProto.AttributeType.
enum AttrType : std::int32_t { kAttrFloat = 1, kAttrInt = 2, kAttrString = 3, kAttrTensor = 4, kAttrGraph = 5, kAttrFloats = 6, kAttrInts = 7, kAttrStrings = 8, kAttrTensors = 9, kAttrGraphs = 10 };

inline const char* data_type_name(std::int32_t t) {
    switch (t) {
    case kFloat: return "float";
    case kUint8: return "uint8";
    case kInt8: return "int8";
    case kInt32: return "int32";
    case kInt64: return "int64";
    case kBool: return "bool";
    case kDouble: return "double";
    case 10: return "float16";
    case 16: return "bfloat16";
    case 8: return "string";
    default: return "unsupported";
    }
}

struct TensorProto {
    std::string name;
    std::int32_t data_type = 0;
    std::vector<std::int64_t> dims;
    std::vector<double> values;       ///< float and double tensors
    std::vector<std::int64_t> ints;   ///< integer and bool tensors

    bool is_real() const noexcept { return data_type == kFloat || data_type == kDouble; }
    /// Product of dims (dims are checked non-negative and the product against overflow on parsing).
    std::size_t numel() const noexcept {
        std::size_t n = 1;
        for (std::int64_t d : dims) n *= static_cast<std::size_t>(d);
        return n;
    }
};

struct GraphProto;

struct AttributeProto {
    std::string name;
    std::int32_t type = 0;
    float f = 0;
    std::int64_t i = 0;
    std::string s;
    std::vector<TensorProto> t;  ///< at most one (field t)
    std::vector<float> floats;
    std::vector<std::int64_t> ints;
    std::vector<std::string> strings;
    std::vector<TensorProto> tensors;
    std::vector<GraphProto> graphs;  ///< field g (one) or graphs
};

struct NodeProto {
    std::vector<std::string> input, output;
    std::string name, op_type, domain;
    std::vector<AttributeProto> attribute;

    const AttributeProto* find(const std::string& n) const {
        for (const auto& a : attribute)
            if (a.name == n) return &a;
        return nullptr;
    }
    /// Whether input i is given (ONNX marks an omitted optional input with an empty name).
    bool has_input(std::size_t i) const noexcept { return i < input.size() && !input[i].empty(); }
};

/// One dimension: a value (>= 0), or a symbolic name (dim_param) with value -1.
struct Dim {
    std::int64_t value = -1;
    std::string param;
};

struct ValueInfoProto {
    std::string name;
    std::int32_t elem_type = 0;
    bool has_shape = false;
    std::vector<Dim> shape;
};

struct GraphProto {
    std::string name;
    std::vector<NodeProto> node;
    std::vector<TensorProto> initializer;
    std::vector<ValueInfoProto> input, output, value_info;
};

struct OperatorSetId {
    std::string domain;  ///< "" (or "ai.onnx") is the default operator set
    std::int64_t version = 0;
};

struct ModelProto {
    std::int64_t ir_version = 8;
    std::vector<OperatorSetId> opset_import;
    std::string producer_name = "tapir", producer_version;
    GraphProto graph;

    /// The version of the default operator set ("" or "ai.onnx"), 0 when absent.
    std::int64_t opset() const {
        for (const auto& o : opset_import)
            if (o.domain.empty() || o.domain == "ai.onnx") return o.version;
        return 0;
    }
};

// ---- reading nodes (shared by nn/onnx.hpp and deploy/onnx.hpp) ---------------------------------

/// Attribute `name` of the node as an int (field i), or `def` when the node does not carry it.
inline std::int64_t attr_i(const NodeProto& n, const char* name, std::int64_t def) {
    const AttributeProto* a = n.find(name);
    return a ? a->i : def;
}
/// Attribute `name` as a float (field f) widened to double, or `def` when absent.
inline double attr_f(const NodeProto& n, const char* name, double def) {
    const AttributeProto* a = n.find(name);
    return a ? static_cast<double>(a->f) : def;
}
/// Attribute `name` as a list of ints (field ints), empty when absent.
inline std::vector<std::int64_t> attr_ints(const NodeProto& n, const char* name) {
    const AttributeProto* a = n.find(name);
    return a ? a->ints : std::vector<std::int64_t>{};
}

/// What keeps `t`, input i of a node, from being a constant real tensor of the given rank (0: any)
/// with no empty dimension, for a message naming the input `what`; empty when nothing. `t` is null
/// when the input is not a constant (an initializer).
inline std::string real_constant_problem(const TensorProto* t, std::size_t i, const char* what, std::size_t rank) {
    if (!t) return std::string(what) + " (input " + std::to_string(i) + ") must be a constant (an initializer)";
    if (!t->is_real()) return std::string(what) + " '" + t->name + "' has data type " + data_type_name(t->data_type) + ", expected float or double";
    if (rank != 0 && t->dims.size() != rank)
        return std::string(what) + " '" + t->name + "' has rank " + std::to_string(t->dims.size()) + ", expected " + std::to_string(rank);
    for (std::int64_t d : t->dims)
        if (d <= 0) return std::string(what) + " '" + t->name + "' has an empty dimension";
    return "";
}

/// The weights of a forward LSTM, GRU or RNN node: W, R and B (null when absent).
struct RecurrentWeights {
    const TensorProto& w;
    const TensorProto& r;
    const TensorProto* b;
};

/// What is wrong with the weights of a forward LSTM, GRU or RNN node of `gates` gate blocks: W
/// (1, gates H, F), R (1, gates H, H), the hidden_size attribute (H when given) and B (absent or
/// (1, 2 gates H)), all already checked real tensors of ranks 3, 3 and 2; empty when nothing.
inline std::string recurrent_weights_problem(const NodeProto& n, const TensorProto& w, const TensorProto& r, const TensorProto* b,
                                             std::size_t gates) {
    const std::int64_t H = r.dims[2], G = static_cast<std::int64_t>(gates);
    if (w.dims[0] != 1 || r.dims[0] != 1 || w.dims[1] != G * H || r.dims[1] != w.dims[1])
        return "W and R must have shapes (1, " + std::to_string(G) + " H, F) and (1, " + std::to_string(G) + " H, H)";
    if (attr_i(n, "hidden_size", H) != H) return "hidden_size does not match R";
    if (b && (b->dims[0] != 1 || b->dims[1] != 2 * w.dims[1])) return "B must have shape (1, " + std::to_string(2 * G) + " H)";
    return "";
}

/// What the two ONNX readers (nn/onnx.hpp's importer, deploy/onnx.hpp's loader) share: the graph's
/// constants by name (initializers and Constant nodes' values) and the checked reading of an input
/// that must be one. Reader derives from it (CRTP) and provides fail(node, what), which throws.
template <class Reader>
class ConstantInputs {
protected:
    /// Input i of n when it is given and a constant, else null.
    const TensorProto* constant(const NodeProto& n, std::size_t i) const {
        if (!n.has_input(i)) return nullptr;
        const auto it = consts_.find(n.input[i]);
        return it == consts_.end() ? nullptr : it->second;
    }
    /// Input i of n as a constant real tensor of the given rank (0: any); else the reader fails.
    const TensorProto& need_real(const NodeProto& n, std::size_t i, const char* what, std::size_t rank) const {
        const TensorProto* t = constant(n, i);
        const std::string problem = real_constant_problem(t, i, what, rank);
        if (!problem.empty()) static_cast<const Reader&>(*this).fail(n, problem);
        return *t;
    }

    /// W, R and B (null when absent) of a forward LSTM, GRU or RNN node of `gates` gate blocks,
    /// checked by recurrent_weights_problem; else the reader fails.
    RecurrentWeights recurrent_weights(const NodeProto& n, std::size_t gates) const {
        const TensorProto& w = need_real(n, 1, "W", 3);
        const TensorProto& r = need_real(n, 2, "R", 3);
        const TensorProto* b = n.has_input(3) ? &need_real(n, 3, "B", 2) : nullptr;
        const std::string problem = recurrent_weights_problem(n, w, r, b, gates);
        if (!problem.empty()) static_cast<const Reader&>(*this).fail(n, problem);
        return {w, r, b};
    }

    std::map<std::string, const TensorProto*> consts_;
};

/// A 1-D or 2-D window (Conv, ConvTranspose, MaxPool, AveragePool): kernel_shape (0 when absent:
/// the weight's), strides, pads (begins, then ends), dilations, with ONNX's defaults.
struct Window {
    std::vector<std::int64_t> k, s, p, d;
    std::string problem;  ///< what tapir cannot read in the attributes; empty when none
};
inline Window read_window(const NodeProto& n, std::size_t dims) {
    Window w{attr_ints(n, "kernel_shape"), attr_ints(n, "strides"), attr_ints(n, "pads"), attr_ints(n, "dilations"), ""};
    const AttributeProto* ap = n.find("auto_pad");
    if (ap && !(ap->s == "NOTSET" || ap->s == "VALID" || ap->s.empty())) w.problem = "auto_pad = " + ap->s + " is not supported (give pads)";
    else if (dims != 1 && dims != 2) w.problem = "only 1-D and 2-D windows are supported, got " + std::to_string(dims) + "-D";
    if (!w.problem.empty()) return w;
    if (w.k.empty()) w.k.assign(dims, 0);
    if (w.s.empty()) w.s.assign(dims, 1);
    if (w.p.empty()) w.p.assign(2 * dims, 0);
    if (w.d.empty()) w.d.assign(dims, 1);
    if (w.k.size() != dims || w.s.size() != dims || w.p.size() != 2 * dims || w.d.size() != dims) {
        w.problem = "kernel_shape, strides, pads or dilations do not match a " + std::to_string(dims) + "-D window";
        return w;
    }
    for (const auto* v : {&w.k, &w.s, &w.p, &w.d})
        for (std::int64_t x : *v)
            if (x < 0 || x > (1 << 20)) w.problem = "kernel, stride, pad or dilation " + std::to_string(x) + " out of range";
    for (std::size_t i = 0; w.problem.empty() && i < dims; ++i)
        if (w.s[i] == 0 || w.d[i] == 0) w.problem = "strides and dilations must be positive";
    return w;
}

/// What a forward LSTM, GRU or RNN as PyTorch's (default activations, zero or no initial state,
/// GRU linear_before_reset = 1) cannot take from the node's attributes; empty when nothing.
inline std::string recurrent_problem(const NodeProto& n) {
    const AttributeProto* dir = n.find("direction");
    if (dir && dir->s != "forward") return "direction '" + dir->s + "' is not supported (forward only)";
    if (attr_i(n, "layout", 0) != 0) return "layout = 1 is not supported (time-major input)";
    if (n.find("clip")) return "clip is not supported";
    if (attr_i(n, "input_forget", 0) != 0) return "input_forget = 1 is not supported";
    if (n.op_type == "GRU" && attr_i(n, "linear_before_reset", 0) != 1)
        return "linear_before_reset = 0 is not supported (tapir's GRU is PyTorch's: linear_before_reset = 1)";
    if (const AttributeProto* acts = n.find("activations")) {
        const std::vector<std::string> want = n.op_type == "LSTM" ? std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"}
                                              : n.op_type == "GRU" ? std::vector<std::string>{"Sigmoid", "Tanh"}
                                                                   : std::vector<std::string>{"Tanh"};
        if (acts->strings != want) return "activations other than the defaults are not supported";
    }
    if (n.has_input(4)) return "sequence_lens is not supported";
    if (n.has_input(7)) return "peepholes (P) are not supported";
    return "";
}

// ---- writing ------------------------------------------------------------------------------------

namespace detail {
inline void write_ints_unpacked(pb::Writer& w, std::uint32_t field, const std::vector<std::int64_t>& v) {
    for (std::int64_t x : v) w.varint_field(field, x);
}

inline std::string serialise(const TensorProto& t);
inline std::string serialise(const AttributeProto& a);
inline std::string serialise(const NodeProto& n);
inline std::string serialise(const ValueInfoProto& v);
inline std::string serialise(const GraphProto& g);
/// A repeated length-delimited field: each string as it is, each message serialised.
template <class Item>
void write_repeated(pb::Writer& w, std::uint32_t field, const std::vector<Item>& items) {
    for (const Item& x : items) {
        if constexpr (std::is_same<Item, std::string>::value) w.bytes_field(field, x);
        else w.bytes_field(field, serialise(x));
    }
}

inline std::string serialise(const TensorProto& t) {
    pb::Writer w;
    write_ints_unpacked(w, 1, t.dims);
    w.varint_field(2, t.data_type);
    if (!t.name.empty()) w.bytes_field(8, t.name);
    // raw_data (field 9), little-endian, as the ONNX tools write it.
    pb::Writer raw;
    if (t.data_type == kFloat) {
        for (double v : t.values) {
            const float f = static_cast<float>(v);
            std::uint32_t u;
            std::memcpy(&u, &f, 4);
            raw.append_le32(u);
        }
    } else if (t.data_type == kDouble) {
        for (double v : t.values) {
            std::uint64_t u;
            std::memcpy(&u, &v, 8);
            raw.append_le64(u);
        }
    } else if (t.data_type == kInt64) {
        for (std::int64_t v : t.ints) raw.append_le64(static_cast<std::uint64_t>(v));
    } else if (t.data_type == kInt32) {
        for (std::int64_t v : t.ints) raw.append_le32(static_cast<std::uint32_t>(v));
    } else {
        throw value_error(std::string("onnx: cannot write tensors of type ") + data_type_name(t.data_type));
    }
    w.bytes_field(9, raw.data());
    return w.take();
}

inline std::string serialise(const AttributeProto& a) {
    pb::Writer w;
    w.bytes_field(1, a.name);
    switch (a.type) {
    case kAttrFloat: w.float_field(2, a.f); break;
    case kAttrInt: w.varint_field(3, a.i); break;
    case kAttrString: w.bytes_field(4, a.s); break;
    case kAttrTensor: write_repeated(w, 5, a.t); break;
    case kAttrGraph: write_repeated(w, 6, a.graphs); break;
    case kAttrFloats:
        for (float f : a.floats) w.float_field(7, f);
        break;
    case kAttrInts: write_ints_unpacked(w, 8, a.ints); break;
    case kAttrStrings: write_repeated(w, 9, a.strings); break;
    case kAttrTensors: write_repeated(w, 10, a.tensors); break;
    case kAttrGraphs: write_repeated(w, 11, a.graphs); break;
    default: throw value_error("onnx: attribute '" + a.name + "' has no type");
    }
    w.varint_field(20, a.type);
    return w.take();
}

inline std::string serialise(const NodeProto& n) {
    pb::Writer w;
    write_repeated(w, 1, n.input);
    write_repeated(w, 2, n.output);
    if (!n.name.empty()) w.bytes_field(3, n.name);
    w.bytes_field(4, n.op_type);
    write_repeated(w, 5, n.attribute);
    if (!n.domain.empty()) w.bytes_field(7, n.domain);
    return w.take();
}

inline std::string serialise(const ValueInfoProto& v) {
    pb::Writer shape;
    for (const auto& d : v.shape) {
        pb::Writer dim;
        if (d.value >= 0) dim.varint_field(1, d.value);
        else dim.bytes_field(2, d.param);
        shape.message_field(1, dim);
    }
    pb::Writer tensor;
    tensor.varint_field(1, v.elem_type);
    if (v.has_shape) tensor.message_field(2, shape);
    pb::Writer type;
    type.message_field(1, tensor);
    pb::Writer w;
    w.bytes_field(1, v.name);
    w.message_field(2, type);
    return w.take();
}

inline std::string serialise(const GraphProto& g) {
    pb::Writer w;
    write_repeated(w, 1, g.node);
    w.bytes_field(2, g.name);
    write_repeated(w, 5, g.initializer);
    write_repeated(w, 11, g.input);
    write_repeated(w, 12, g.output);
    write_repeated(w, 13, g.value_info);
    return w.take();
}
} // namespace detail

/// The model as ONNX bytes (ModelProto).
inline std::string serialise(const ModelProto& m) {
    pb::Writer w;
    w.varint_field(1, m.ir_version);
    w.bytes_field(2, m.producer_name);
    if (!m.producer_version.empty()) w.bytes_field(3, m.producer_version);
    w.bytes_field(7, detail::serialise(m.graph));
    for (const auto& o : m.opset_import) {
        pb::Writer op;
        if (!o.domain.empty()) op.bytes_field(1, o.domain);
        op.varint_field(2, o.version);
        w.message_field(8, op);
    }
    return w.take();
}

/// Writes the model to path atomically (a temporary file renamed into place).
inline void save(const ModelProto& m, const std::string& path) { io::detail::write_file_atomic(path, serialise(m), "save_onnx"); }

// ---- reading ------------------------------------------------------------------------------------

namespace detail {
/// A repeated int64 field, packed (wire type 2) or not.
inline void read_ints(pb::Reader& r, std::vector<std::int64_t>& out) {
    if (r.wire_type() == pb::WireType::bytes) {
        pb::Reader p = r.sub();
        while (!p.at_end()) out.push_back(static_cast<std::int64_t>(p.raw_varint()));
    } else {
        out.push_back(r.int64());
    }
}
inline float bits_to_float(std::uint64_t u) {
    const auto v = static_cast<std::uint32_t>(u);
    float f;
    std::memcpy(&f, &v, 4);
    return f;
}
inline double bits_to_double(std::uint64_t u) {
    double d;
    std::memcpy(&d, &u, 8);
    return d;
}
inline void read_floats(pb::Reader& r, std::vector<double>& out) {
    if (r.wire_type() == pb::WireType::bytes) {
        pb::Reader p = r.sub();
        while (!p.at_end()) out.push_back(static_cast<double>(bits_to_float(p.le(4))));
    } else {
        out.push_back(static_cast<double>(r.float32()));
    }
}
inline void read_doubles(pb::Reader& r, std::vector<double>& out) {
    if (r.wire_type() == pb::WireType::bytes) {
        pb::Reader p = r.sub();
        while (!p.at_end()) out.push_back(bits_to_double(p.le(8)));
    } else {
        out.push_back(bits_to_double(r.fixed64()));
    }
}
inline std::int32_t read_int32(pb::Reader& r) { return static_cast<std::int32_t>(r.int64()); }

inline std::size_t elem_size(std::int32_t t) {
    switch (t) {
    case kFloat: case kInt32: return 4;
    case kDouble: case kInt64: return 8;
    case kUint8: case kInt8: case kBool: return 1;
    default: return 0;
    }
}

inline TensorProto parse_tensor(pb::Reader r) {
    TensorProto t;
    const std::size_t at = r.offset();
    std::string raw;
    bool has_raw = false, external = false;
    std::vector<double> reals;
    std::vector<std::int64_t> ints;
    while (r.next()) {
        switch (r.field()) {
        case 1: read_ints(r, t.dims); break;
        case 2: t.data_type = read_int32(r); break;
        case 4: read_floats(r, reals); break;
        case 5: case 7: read_ints(r, ints); break;  // int32_data (also bool, uint8, ...), int64_data
        case 8: t.name = r.bytes(); break;
        case 9: raw = r.bytes(), has_raw = true; break;
        case 10: read_doubles(r, reals); break;
        case 14: external = r.int64() == 1; break;
        default: r.skip();
        }
    }
    const std::string what = "tensor '" + t.name + "'";
    if (external) r.fail(at, what + " keeps its data in an external file, which is not supported");
    if (t.dims.size() > 8) r.fail(at, what + " has rank " + std::to_string(t.dims.size()) + " (at most 8 are read)");
    // The element count, refusing negative dimensions and overflow before anything is allocated.
    std::size_t n = 1;
    for (std::int64_t d : t.dims) {
        if (d < 0) r.fail(at, what + " has a negative dimension " + std::to_string(d));
        if (d != 0 && n > (std::size_t(1) << 40) / static_cast<std::size_t>(d))
            r.fail(at, what + " claims oversized dimensions (more than 2^40 elements)");
        n *= static_cast<std::size_t>(d);
    }
    const std::size_t es = elem_size(t.data_type);
    if (es == 0) r.fail(at, what + " has data type " + std::to_string(t.data_type) + " (" + data_type_name(t.data_type) + "), which tapir does not read");
    const bool real = t.data_type == kFloat || t.data_type == kDouble;
    const std::size_t have = has_raw ? raw.size() / es : (real ? reals.size() : ints.size());
    if ((has_raw && raw.size() % es != 0) || have != n)
        r.fail(at, what + " claims " + std::to_string(n) + " elements (dims) but holds " + std::to_string(have) + " (" +
                       (has_raw ? std::to_string(raw.size()) + " raw bytes" : std::string("typed data")) + ")");
    if (has_raw) {
        const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
        for (std::size_t i = 0; i < n; ++i, p += es) {
            std::uint64_t u = 0;
            for (std::size_t b = 0; b < es; ++b) u |= static_cast<std::uint64_t>(p[b]) << (8 * b);
            switch (t.data_type) {
            case kFloat: t.values.push_back(static_cast<double>(bits_to_float(u))); break;
            case kDouble: t.values.push_back(bits_to_double(u)); break;
            case kInt32: t.ints.push_back(static_cast<std::int32_t>(static_cast<std::uint32_t>(u))); break;
            case kInt8: t.ints.push_back(static_cast<std::int8_t>(static_cast<std::uint8_t>(u))); break;
            default: t.ints.push_back(static_cast<std::int64_t>(u)); break;
            }
        }
    } else if (real) {
        t.values = std::move(reals);
    } else {
        t.ints = std::move(ints);
    }
    return t;
}

inline GraphProto parse_graph(pb::Reader r, int depth);

inline AttributeProto parse_attribute(pb::Reader r, int depth) {
    AttributeProto a;
    while (r.next()) {
        switch (r.field()) {
        case 1: a.name = r.bytes(); break;
        case 2: a.f = r.float32(); break;
        case 3: a.i = r.int64(); break;
        case 4: a.s = r.bytes(); break;
        case 5: a.t.push_back(parse_tensor(r.sub())); break;
        case 6: case 11: a.graphs.push_back(parse_graph(r.sub(), depth + 1)); break;
        case 7: {
            std::vector<double> f;
            read_floats(r, f);
            for (double v : f) a.floats.push_back(static_cast<float>(v));
            break;
        }
        case 8: read_ints(r, a.ints); break;
        case 9: a.strings.push_back(r.bytes()); break;
        case 10: a.tensors.push_back(parse_tensor(r.sub())); break;
        case 20: a.type = read_int32(r); break;
        default: r.skip();
        }
    }
    return a;
}

inline NodeProto parse_node(pb::Reader r, int depth) {
    NodeProto n;
    while (r.next()) {
        switch (r.field()) {
        case 1: n.input.push_back(r.bytes()); break;
        case 2: n.output.push_back(r.bytes()); break;
        case 3: n.name = r.bytes(); break;
        case 4: n.op_type = r.bytes(); break;
        case 5: n.attribute.push_back(parse_attribute(r.sub(), depth)); break;
        case 7: n.domain = r.bytes(); break;
        default: r.skip();
        }
    }
    return n;
}

inline void read_scalar(pb::Reader& r, std::int64_t& v) { v = r.int64(); }
inline void read_scalar(pb::Reader& r, std::string& v) { v = r.bytes(); }
/// A message of two scalar fields (Dim, OperatorSetId): field 1 into first, field 2 into second
/// (as varint or bytes by the member's type), any other skipped.
template <class A, class B>
void read_pair(pb::Reader r, A& first, B& second) {
    while (r.next()) {
        if (r.field() == 1) read_scalar(r, first);
        else if (r.field() == 2) read_scalar(r, second);
        else r.skip();
    }
}
/// Calls f(message) for every message in field `field` of r, skipping the other fields.
template <class F>
void each_message(pb::Reader r, std::uint32_t field, F f) {
    while (r.next()) {
        if (r.field() == field) f(r.sub());
        else r.skip();
    }
}

inline ValueInfoProto parse_value_info(pb::Reader r) {
    ValueInfoProto v;
    while (r.next()) {
        if (r.field() == 1) {
            v.name = r.bytes();
        } else if (r.field() == 2) {
            each_message(r.sub(), 1, [&](pb::Reader tensor) {  // TypeProto's tensor_type
                while (tensor.next()) {
                    if (tensor.field() == 1) {
                        v.elem_type = read_int32(tensor);
                    } else if (tensor.field() == 2) {
                        v.has_shape = true;
                        each_message(tensor.sub(), 1, [&](pb::Reader dim) {  // TensorShapeProto's dim
                            Dim d;
                            read_pair(dim, d.value, d.param);
                            v.shape.push_back(d);
                        });
                    } else {
                        tensor.skip();
                    }
                }
            });
        } else {
            r.skip();
        }
    }
    return v;
}

inline GraphProto parse_graph(pb::Reader r, int depth) {
    if (depth > pb::kMaxDepth) r.fail(r.offset(), "graphs nested more than " + std::to_string(pb::kMaxDepth) + " deep");
    GraphProto g;
    while (r.next()) {
        switch (r.field()) {
        case 1: g.node.push_back(parse_node(r.sub(), depth)); break;
        case 2: g.name = r.bytes(); break;
        case 5: g.initializer.push_back(parse_tensor(r.sub())); break;
        case 11: g.input.push_back(parse_value_info(r.sub())); break;
        case 12: g.output.push_back(parse_value_info(r.sub())); break;
        case 13: g.value_info.push_back(parse_value_info(r.sub())); break;
        default: r.skip();
        }
    }
    return g;
}
} // namespace detail

/// Parses ONNX bytes (a ModelProto); `source` names the file in errors. Throws format_error.
inline ModelProto parse(const char* data, std::size_t size, const std::string& source = "<memory>") {
    pb::Reader r(data, size, source);
    ModelProto m;
    m.producer_name.clear();
    bool has_graph = false;
    while (r.next()) {
        switch (r.field()) {
        case 1: m.ir_version = r.int64(); break;
        case 2: m.producer_name = r.bytes(); break;
        case 3: m.producer_version = r.bytes(); break;
        case 7: m.graph = detail::parse_graph(r.sub(), 0), has_graph = true; break;
        case 8: {
            OperatorSetId id;
            detail::read_pair(r.sub(), id.domain, id.version);
            m.opset_import.push_back(id);
            break;
        }
        default: r.skip();
        }
    }
    if (!has_graph) throw format_error(source + ": not an ONNX model: no graph (is the file truncated or of another format?)");
    return m;
}
inline ModelProto parse(const std::string& data, const std::string& source = "<memory>") { return parse(data.data(), data.size(), source); }
/// Reads and parses an ONNX file.
inline ModelProto load(const std::string& path) { return parse(io::detail::read_file(path, "load_onnx"), path); }

} // namespace onnx
} // namespace io
} // namespace tapir
