// Bad inputs, one table: every row is an input the library must refuse, the exception type it
// must throw and a distinctive part of the message (file, line, column, both shapes, the bad
// value). A row that does not throw, throws another type or says something else fails.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <tapir/autodiff/ops.hpp>
#include <tapir/data/dataset.hpp>
#include <tapir/data/random.hpp>
#include <tapir/io/csv.hpp>
#include <tapir/io/model_file.hpp>
#include <tapir/io/npy.hpp>
#include <tapir/io/npz.hpp>
#include <tapir/io/onnx.hpp>
#include <tapir/metrics/roc.hpp>
#include <tapir/nn/fit.hpp>
#include <tapir/nn/layers.hpp>
#include <tapir/nn/model_file.hpp>
#include <tapir/nn/onnx.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/optim/adagrad.hpp>
#include <tapir/optim/adam.hpp>
#include <tapir/optim/rmsprop.hpp>
#include <tapir/optim/sgd.hpp>

using namespace tapir;

namespace {

enum class Kind { shape, value, parse, format };

const char* kind_name(Kind k) {
    switch (k) {
    case Kind::shape: return "shape_error";
    case Kind::value: return "value_error";
    case Kind::parse: return "parse_error";
    case Kind::format: return "format_error";
    }
    return "?";
}

struct Row {
    const char* what;
    std::function<void()> run;
    Kind kind;
    std::string message;  // must occur in what()
};

/// The kind of exception thrown, or "" with msg set to a description of the wrong outcome.
std::string thrown_kind(const std::function<void()>& f, std::string& msg) {
    try {
        f();
    } catch (const shape_error& e) {
        msg = e.what();
        return "shape_error";
    } catch (const value_error& e) {
        msg = e.what();
        return "value_error";
    } catch (const parse_error& e) {
        msg = e.what();
        return "parse_error";
    } catch (const format_error& e) {
        msg = e.what();
        return "format_error";
    } catch (const std::exception& e) {
        msg = e.what();
        return "another std::exception";
    }
    msg = "";
    return "nothing";
}

io::CsvTable csv(const std::string& text, const io::CsvOptions& opt = {}) { return io::parse_csv(text, "bad.csv", opt); }
io::CsvOptions columns(std::vector<std::string> c) {
    io::CsvOptions o;
    o.columns = std::move(c);
    return o;
}

/// A .npy file (version 1.0) around a header dict and data bytes.
std::string npy(const std::string& dict, const std::string& data) {
    const std::string h = dict + "\n";
    std::string out("\x93NUMPY\x01\x00", 8);
    out += static_cast<char>(h.size() & 0xFF);
    out += static_cast<char>(h.size() >> 8);
    return out + h + data;
}
void load_npy(const std::string& bytes) { (void)io::parse_npy(bytes, "bad.npy"); }
void load_npz(const std::string& bytes) { (void)io::parse_npz(bytes, "bad.npz"); }

Tensor<float> filled(const Shape& s, float v = 0.5f) { return Tensor<float>(s, v); }

/// A small classifier and its model file: 8 -> 4 -> 1.
struct Net {
    nn::Sequential<float> m;
    explicit Net(std::size_t in = 8, std::size_t hidden = 4) {
        Rng rng(3);
        m.add<nn::Dense<float>>(in, hidden, rng).add<nn::ReLU<float>>().add<nn::Dense<float>>(hidden, 1, rng);
    }
    std::string file() { return io::save_model_to_string(m.named_parameters()); }
    void load(const std::string& bytes) { io::load_model_from_string(bytes, m.named_parameters(), nullptr, "net.tpr"); }
};

/// Runs a module on an input of the given shape.
template <class M>
void forward(M& layer, const Shape& s) {
    Tape<float> tape;
    (void)layer(tape.constant(filled(s)));
}

/// An ONNX model of the given nodes and initializers on input x (batch, 3), output y.
std::string onnx_bytes(std::vector<io::onnx::NodeProto> nodes, std::vector<io::onnx::TensorProto> inits = {}) {
    io::onnx::ModelProto m;
    m.opset_import.push_back({"", 13});
    m.graph.node = std::move(nodes);
    m.graph.initializer = std::move(inits);
    io::onnx::ValueInfoProto x;
    x.name = "x", x.elem_type = io::onnx::kFloat, x.has_shape = true, x.shape = {io::onnx::Dim{-1, "N"}, io::onnx::Dim{3, ""}};
    io::onnx::ValueInfoProto y = x;
    y.name = "y";
    m.graph.input = {x};
    m.graph.output = {y};
    return io::onnx::serialise(m);
}
io::onnx::NodeProto onnx_node(const char* op, const char* name, std::vector<std::string> in, std::vector<std::string> out) {
    io::onnx::NodeProto n;
    n.op_type = op, n.name = name, n.input = std::move(in), n.output = std::move(out);
    return n;
}
void import_onnx_bytes(const std::string& bytes) { (void)nn::import_onnx_from_string<float>(bytes, "m.onnx"); }

template <class Opt>
void make_opt(float lr) {
    Parameter<float> p("w", filled(Shape{2}));
    Opt opt({&p}, lr);
}

const float nan_f = std::numeric_limits<float>::quiet_NaN();
const float inf_f = std::numeric_limits<float>::infinity();

} // namespace

TEST_CASE("bad inputs: every row throws the documented error") {
    Net net;
    const std::string good = net.file();
    std::string truncated = good.substr(0, good.size() / 2);
    std::string corrupted = good;
    corrupted[40] = static_cast<char>(corrupted[40] ^ 0x10);

    const std::string dir = (std::filesystem::temp_directory_path() / "tapir_bad_inputs_dir").string();
    std::filesystem::create_directories(dir);

    Rng rng(1);
    nn::Dense<float> dense(3, 2, rng);
    nn::BatchNorm<float> batchnorm(3);
    nn::LayerNorm<float> layernorm(3);

    const std::string f8 = std::string(16, '\0');
    const std::string npz_good = io::npz_bytes({{"x", io::NpyArray::from(Shape{2}, std::vector<double>{1.0, 2.0})}});
    std::string npz_crc = npz_good;
    npz_crc[npz_crc.size() / 2] = static_cast<char>(npz_crc[npz_crc.size() / 2] ^ 0x20);
    // The member deflated (method 8) with a stream that starts with block type 3.
    std::string npz_deflate = npz_good;
    npz_deflate[8] = 8, npz_deflate[npz_deflate.find("PK\x01\x02") + 10] = 8, npz_deflate[35] = 7;
    nn::Sequential<float> small;
    small.add<nn::Dense<float>>(3, 3, rng).add<nn::Tanh<float>>();
    const std::string onnx_good = io::onnx::serialise(nn::to_onnx(small, Shape{1, 3}));
    io::onnx::TensorProto int_weight;
    int_weight.name = "w", int_weight.data_type = io::onnx::kInt64, int_weight.dims = {3, 3}, int_weight.ints.assign(9, 1);

    const std::vector<Row> table = {
        // ---- CSV ------------------------------------------------------------------------------
        {"empty CSV", [] { csv(""); }, Kind::parse, "bad.csv: empty file (no header row)"},
        {"blank lines only", [] { csv("\n\r\n\n"); }, Kind::parse, "bad.csv: empty file (no header row)"},
        {"header only", [] { csv("pt,eta\n"); }, Kind::parse, "bad.csv: no data rows (the file has only a header)"},
        {"ragged row, too short", [] { csv("pt,eta\n1,2\n3\n"); }, Kind::parse,
         "bad.csv:3: column 2 (eta) is missing (the row has 1 field, the header 2)"},
        {"ragged row, too long", [] { csv("pt,eta\n1,2,3\n"); }, Kind::parse,
         "bad.csv:2: column 3: unexpected extra field (the row has 3 fields, the header 2)"},
        {"non-numeric field", [] { csv("pt,eta\n1,2\n4,abc\n"); }, Kind::parse,
         "bad.csv:3: column 2 (eta): 'abc' is not a number"},
        {"empty field", [] { csv("pt,eta\n1,\n"); }, Kind::parse, "bad.csv:2: column 2 (eta): empty field (expected a number)"},
        {"NaN field", [] { csv("pt,eta\n1,nan\n"); }, Kind::parse,
         "bad.csv:2: column 2 (eta): non-finite value 'nan' (set CsvOptions::allow_non_finite to accept it)"},
        {"infinite field", [] { csv("pt,eta\ninf,1\n"); }, Kind::parse, "bad.csv:2: column 1 (pt): non-finite value 'inf'"},
        {"negative infinite field", [] { csv("pt,eta\n1,2\n3,-inf\n"); }, Kind::parse, "bad.csv:3: column 2 (eta): non-finite value '-inf'"},
        {"overflowing number", [] { csv("pt\n1e999\n"); }, Kind::parse,
         "bad.csv:2: column 1 (pt): '1e999' is out of the range of double"},
        {"unterminated quote", [] { csv("pt\n\"1\n"); }, Kind::parse, "bad.csv:2: column 1 (pt): unterminated quoted field"},
        {"unknown selected column", [] { csv("pt,eta\n1,2\n", columns({"phi"})); }, Kind::value,
         "bad.csv: unknown column 'phi' (available: pt, eta)"},
        {"unknown column by name", [] { (void)csv("pt,eta\n1,2\n").column("phi"); }, Kind::value,
         "bad.csv: unknown column 'phi' (available: pt, eta)"},

        // ---- NumPy .npy / .npz ------------------------------------------------------------------
        {"npy: bad magic", [] { load_npy("PK\x03\x04"); }, Kind::format, "bad.npy: bad magic: not a .npy file"},
        {"npy: truncated data", [&] { load_npy(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,)}", f8)); }, Kind::format,
         "bad.npy: truncated .npy file: shape (3,) of float64 needs 24 bytes of data, 16 follow the header"},
        {"npy: oversized claimed dimensions", [&] { load_npy(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000, 1000000000, 1000000000)}", f8)); },
         Kind::format, "bad.npy: shape (1000000000, 1000000000, 1000000000) claims more elements than fit in memory"},
        {"npy: unsupported dtype", [&] { load_npy(npy("{'descr': '<c16', 'fortran_order': False, 'shape': (1,)}", f8)); }, Kind::format,
         "bad.npy: unsupported dtype complex128 (descr '<c16')"},
        {"npy: object array", [&] { load_npy(npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,)}", f8)); }, Kind::format,
         "bad.npy: object arrays (descr '|O') hold pickled Python objects and cannot be read"},
        {"npy: bad header dict", [&] { load_npy(npy("{'descr': '<f8', 'shape': (2,)}", f8)); }, Kind::format,
         "bad.npy: bad .npy header dict: no 'fortran_order' key"},
        {"npy: rank 5", [&] { load_npy(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1, 1, 2)}", f8)); }, Kind::format,
         "bad.npy: array of rank 5 (shape (1, 1, 1, 1, 2)): tapir tensors have at most rank 4"},
        {"npy: int64 not exact in float32",
         [] { (void)io::NpyArray::from(Shape{1}, std::vector<std::int64_t>{16777217}).to_tensor<float>(); }, Kind::value,
         "array: element 0 (16777217) of the int64 array is not exactly representable as float32"},
        {"npz: truncated archive", [&] { load_npz(npz_good.substr(0, npz_good.size() - 30)); }, Kind::format,
         "bad.npz: truncated archive: no end of central directory record"},
        {"npz: CRC mismatch", [&] { load_npz(npz_crc); }, Kind::format, "bad.npz: member 'x.npy': CRC mismatch"},
        {"npz: corrupt deflate stream", [&] { load_npz(npz_deflate); }, Kind::format,
         "bad.npz: member 'x.npy': corrupt deflate stream: invalid block type 3"},

        // ---- labels outside {0, 1} --------------------------------------------------------------
        {"roc_auc label 2", [] { (void)metrics::roc_auc({0.1, 0.9, 0.4}, {0.0, 2.0, 1.0}); }, Kind::value,
         "roc_auc: label 2 at index 1 is not 0 or 1"},
        {"roc_auc label -1", [] { (void)metrics::roc_auc({0.1, 0.9}, {-1.0, 1.0}); }, Kind::value,
         "roc_auc: label -1 at index 0 is not 0 or 1"},
        {"roc_auc NaN label", [] { (void)metrics::roc_auc({0.1, 0.9}, {0.0, std::nan("")}); }, Kind::value,
         "roc_auc: label nan at index 1 is not 0 or 1"},
        {"balanced_weights label 0.5", [] { (void)data::balanced_weights({0.0, 0.5, 1.0}); }, Kind::value,
         "balanced_weights: label 0.5 at index 1 is not 0 or 1"},

        // ---- shapes: each layer and op names both shapes --------------------------------------
        {"Dense(3, 2) on (4, 5)", [&] { forward(dense, Shape{4, 5}); }, Kind::shape,
         "Dense(3 -> 2): expected input of shape (batch, 3), got (4, 5)"},
        {"BatchNorm(3) on (4, 5)", [&] { forward(batchnorm, Shape{4, 5}); }, Kind::shape,
         "BatchNorm(3): expected input of shape (batch, 3), got (4, 5)"},
        {"LayerNorm(3) on (4, 5)", [&] { forward(layernorm, Shape{4, 5}); }, Kind::shape,
         "LayerNorm(3): expected the last axis of length 3, got input of shape (4, 5)"},
        {"Sequential 8->4->1 on (2, 7)", [&] { (void)nn::predict(net.m, filled(Shape{2, 7})); }, Kind::shape,
         "Dense(8 -> 4): expected input of shape (batch, 8), got (2, 7)"},
        {"add (2, 3) + (4, 5)",
         [] {
             Tape<float> t;
             (void)(t.constant(filled(Shape{2, 3})) + t.constant(filled(Shape{4, 5})));
         },
         Kind::shape, "add: shapes cannot be broadcast: (2, 3) vs (4, 5)"},
        {"matmul (2, 3) x (4, 5)",
         [] {
             Tape<float> t;
             (void)matmul(t.constant(filled(Shape{2, 3})), t.constant(filled(Shape{4, 5})));
         },
         Kind::shape, "matmul: inner dimensions differ: (2, 3) x (4, 5)"},

        // ---- empty batches ----------------------------------------------------------------------
        {"bce_with_logits on an empty batch",
         [] {
             Tape<float> t;
             (void)bce_with_logits(t.constant(filled(Shape{0, 1})), t.constant(filled(Shape{0, 1})));
         },
         Kind::shape, "bce_with_logits: empty batch (logits of shape (0, 1))"},
        {"Trainer step on no rows",
         [&] {
             optim::SGD<float> opt(net.m.parameters(), 0.1f);
             nn::Trainer<float> tr(net.m, opt);
             const std::size_t idx = 0;
             (void)tr.step(filled(Shape{4, 8}), filled(Shape{4, 1}), nullptr, &idx, 0);
         },
         Kind::value, "Trainer: empty batch"},
        {"roc_auc on no events", [] { (void)metrics::roc_auc(std::vector<double>{}, std::vector<double>{}); }, Kind::value,
         "roc_auc: empty input"},

        // ---- learning rates ---------------------------------------------------------------------
        {"SGD lr 0", [] { make_opt<optim::SGD<float>>(0.0f); }, Kind::value, "learning rate must be positive and finite, got 0"},
        {"SGD lr -0.1", [] { make_opt<optim::SGD<float>>(-0.1f); }, Kind::value, "SGD: learning rate must be positive and finite, got -0.1"},
        {"SGD lr NaN", [] { make_opt<optim::SGD<float>>(nan_f); }, Kind::value, "got NaN"},
        {"Adam lr 0", [] { make_opt<optim::Adam<float>>(0.0f); }, Kind::value, "learning rate must be positive and finite, got 0"},
        {"Adam lr -1", [] { make_opt<optim::Adam<float>>(-1.0f); }, Kind::value, "got -1"},
        {"Adam lr NaN", [] { make_opt<optim::Adam<float>>(nan_f); }, Kind::value, "got NaN"},
        {"Adam lr inf", [] { make_opt<optim::Adam<float>>(inf_f); }, Kind::value, "got inf"},
        {"AdamW lr 0", [] { make_opt<optim::AdamW<float>>(0.0f); }, Kind::value, "got 0"},
        {"RMSprop lr NaN", [] { make_opt<optim::RMSprop<float>>(nan_f); }, Kind::value, "got NaN"},
        {"Adagrad lr -1", [] { make_opt<optim::Adagrad<float>>(-1.0f); }, Kind::value, "got -1"},
        {"set_learning_rate(NaN)",
         [] {
             Parameter<float> p("w", filled(Shape{2}));
             optim::SGD<float> opt({&p}, 0.1f);
             opt.set_learning_rate(nan_f);
         },
         Kind::value, "got NaN"},

        // ---- model files ------------------------------------------------------------------------
        {"empty model file", [&] { net.load(""); }, Kind::format, "net.tpr: not a tapir model file (the file is empty)"},
        {"not a model file", [&] { net.load("pt,eta\n1,2\n"); }, Kind::format, "net.tpr: not a tapir model file (no \"TAPIR\" magic at the start)"},
        {"truncated model file", [&] { net.load(truncated); }, Kind::format,
         "net.tpr: truncated: expected 128 bytes of data for tensor '0.weight', file ends after 90"},
        {"corrupted model file", [&] { net.load(corrupted); }, Kind::format, "net.tpr: CRC mismatch (file is corrupted)"},
        {"model file of a wider network",
         [&] {
             Net other(8, 6);
             net.load(other.file());
         },
         Kind::format, "net.tpr: parameter '0.weight' has shape (8, 6) in the file but (8, 4) in the model"},
        {"model file of a deeper network",
         [&] {
             Net deeper;
             Rng rng5(5);
             deeper.m.add<nn::Dense<float>>(1, 1, rng5);
             net.load(deeper.file());
         },
         Kind::format, "net.tpr: the file has 6 parameters but the model has 4"},
        {"float64 model file into a float32 model",
         [&] {
             Parameter<double> w("w", Tensor<double>(Shape{2}, 1.0));
             net.load(io::save_model_to_string<double>({{"w", &w}}));
         },
         Kind::format, "net.tpr: the file holds float64 values but the model is float32"},
        {"model file with oversized claimed dimensions",
         [&] {
             // A valid file whose tensor claims 2^62 elements; the size field and CRC are repaired so the
             // reader reaches the shape.
             Parameter<float> w("w", Tensor<float>(Shape{2}, 1.0f));
             std::string f = io::save_model_to_string<float>({{"w", &w}});
             const std::string rec = std::string("\x01\x00\x00\x00w\x01", 6);
             const std::size_t at = f.find(rec) + rec.size();
             for (int k = 0; k < 8; ++k) f[at + static_cast<std::size_t>(k)] = k == 7 ? '\x40' : '\0';
             const std::uint32_t crc = io::crc32(reinterpret_cast<const std::uint8_t*>(f.data()), f.size() - 4);
             for (int k = 0; k < 4; ++k) f[f.size() - 4 + static_cast<std::size_t>(k)] = static_cast<char>((crc >> (8 * k)) & 0xFFu);
             net.load(f);
         },
         Kind::format, "net.tpr: tensor 'w' has shape (4611686018427387904,), too large for this machine"},
        {"whole-model file with an unknown layer type",
         [&] {
             Parameter<float> w("w", Tensor<float>(Shape{2}, 1.0f));
             (void)nn::load_model_from_string<float>(
                 io::save_model_to_string<float>({{"w", &w}}, {}, nullptr, std::vector<io::ModelSection>{{"architecture", "tapir-config 1\nBogus size=2\n"}}));
         },
         Kind::format, "unknown layer type 'Bogus'"},
        {"load_model from a directory", [&] { io::load_model(dir, net.m.named_parameters()); }, Kind::format,
         "load_model: cannot read '" + dir + "': Is a directory"},
        {"save_model to a directory", [&] { io::save_model(dir, net.m.named_parameters()); }, Kind::format,
         "save_model: cannot write '" + dir + "': Is a directory"},
        // ---- ONNX -----------------------------------------------------------------------------
        {"truncated ONNX file", [&] { import_onnx_bytes(onnx_good.substr(0, onnx_good.size() / 2)); }, Kind::format,
         "m.onnx: protobuf: length"},
        {"truncated ONNX file (the reason)", [&] { import_onnx_bytes(onnx_good.substr(0, onnx_good.size() / 2)); }, Kind::format,
         "runs past the end"},
        {"ONNX tensor with oversized claimed dimensions",
         [&] {
             io::pb::Writer t;
             t.varint_field(1, std::int64_t(1) << 31), t.varint_field(1, std::int64_t(1) << 31), t.varint_field(2, io::onnx::kFloat);
             t.bytes_field(8, "w"), t.bytes_field(9, std::string(12, '\0'));
             io::pb::Writer g, m;
             g.bytes_field(5, t.data()), m.bytes_field(7, g.data());
             import_onnx_bytes(m.data());
         },
         Kind::format, "m.onnx: protobuf: tensor 'w' claims oversized dimensions (more than 2^40 elements)"},
        {"ONNX initializer of the wrong dtype",
         [&] { import_onnx_bytes(onnx_bytes({onnx_node("Gemm", "fc", {"x", "w"}, {"y"})}, {int_weight})); }, Kind::format,
         "m.onnx: ONNX import: node 'fc' (Gemm): weight 'w' has data type int64, expected float or double"},
        {"unsupported ONNX operator", [&] { import_onnx_bytes(onnx_bytes({onnx_node("Einsum", "x", {"x"}, {"y"})})); }, Kind::format,
         "m.onnx: ONNX import: unsupported ONNX operator 'Einsum' in node 'x'"},
        {"cyclic ONNX graph",
         [&] {
             import_onnx_bytes(onnx_bytes({onnx_node("Add", "a", {"x", "b_out"}, {"a_out"}), onnx_node("Relu", "b", {"a_out"}, {"b_out"}),
                                           onnx_node("Relu", "c", {"a_out"}, {"y"})}));
         },
         Kind::format, "m.onnx: ONNX import: cyclic graph: node 'a' (Add) depends on its own output"},
    };

    for (const Row& row : table) {
        std::string msg;
        const std::string got = thrown_kind(row.run, msg);
        INFO("row: " << std::string(row.what));
        INFO("message: " << msg);
        CHECK(got == kind_name(row.kind));
        CHECK(msg.find(row.message) != std::string::npos);
    }
    // A failed load changes nothing; a failed save leaves no temporary file behind.
    CHECK(net.file() == good);
    CHECK_FALSE(std::filesystem::exists(dir + ".tmp"));
    std::filesystem::remove(dir);
}
