// The protobuf wire format (io/protobuf.hpp) and the ONNX structs on it (io/onnx.hpp).
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include <tapir/io/onnx.hpp>
#include <tapir/io/protobuf.hpp>

using namespace tapir;
namespace pb = tapir::io::pb;
namespace ox = tapir::io::onnx;

namespace {
std::string hex(const std::string& s) {
    static const char* d = "0123456789abcdef";
    std::string out;
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        out += std::string(1, d[c >> 4]) + d[c & 15] + " ";
    }
    return out;
}
std::string error_of(const std::string& bytes) {
    try {
        ox::parse(bytes, "m.onnx");
    } catch (const format_error& e) {
        return e.what();
    }
    return "no error";
}
} // namespace

TEST_CASE("protobuf: encodings match the specification's examples") {
    pb::Writer w;
    w.varint_field(1, 150);  // the spec's example: 08 96 01
    CHECK(hex(w.data()) == "08 96 01 ");
    pb::Writer s;
    s.bytes_field(2, "testing");  // 12 07 74 65 73 74 69 6e 67
    CHECK(hex(s.data()) == "12 07 74 65 73 74 69 6e 67 ");
    pb::Writer n;
    n.varint_field(1, -1);  // negative int64: ten bytes
    CHECK(n.data().size() == 11);
    pb::Writer f;
    f.float_field(3, 1.0f);  // key 1d, then 00 00 80 3f
    CHECK(hex(f.data()) == "1d 00 00 80 3f ");
}

TEST_CASE("protobuf: every value round-trips") {
    pb::Writer w;
    const std::uint64_t vs[] = {0, 1, 127, 128, 300, 16383, 16384, (1ull << 35) + 7, ~0ull};
    for (std::uint64_t v : vs) w.varint_field(1, static_cast<std::int64_t>(v));
    w.fixed32_field(2, 0xdeadbeefu);
    w.fixed64_field(3, 0x0123456789abcdefull);
    w.bytes_field(4, std::string("a\0b", 3));
    w.float_field(5, -2.5f);
    const std::string src = "buf";
    pb::Reader r(w.data(), src);
    for (std::uint64_t v : vs) {
        REQUIRE(r.next());
        CHECK(r.field() == 1);
        CHECK(r.varint() == v);
    }
    REQUIRE(r.next());
    CHECK(r.fixed32() == 0xdeadbeefu);
    REQUIRE(r.next());
    CHECK(r.fixed64() == 0x0123456789abcdefull);
    REQUIRE(r.next());
    CHECK(r.bytes() == std::string("a\0b", 3));
    REQUIRE(r.next());
    CHECK(r.float32() == -2.5f);
    CHECK_FALSE(r.next());
}

TEST_CASE("protobuf: malformed input is a format_error naming the problem and the byte") {
    const std::string src = "bad.pb";
    auto err = [&](const std::string& bytes, bool read_bytes) {
        try {
            pb::Reader r(bytes, src);
            while (r.next()) read_bytes ? (void)r.bytes() : r.skip();
        } catch (const format_error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    CHECK(err(std::string("\x08\x96", 2), false) == "bad.pb: protobuf: varint runs past the end: truncated file (byte 1)");
    CHECK(err(std::string("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 11), false) == "bad.pb: protobuf: varint overflows 64 bits (byte 1)");
    CHECK(err(std::string("\x12\x05" "ab", 4), true) ==
          "bad.pb: protobuf: length 5 runs past the end (2 bytes left): truncated file (byte 1)");
    CHECK(err(std::string("\x0b", 1), false) == "bad.pb: protobuf: groups (wire types 3 and 4) are not supported (byte 0)");
    CHECK(err(std::string("\x0f", 1), false) == "bad.pb: protobuf: invalid wire type 7 (byte 0)");
    CHECK(err(std::string("\x00", 1), false) == "bad.pb: protobuf: invalid field number 0 (byte 0)");
    CHECK(err(std::string("\x0d\x01\x02", 3), false) == "bad.pb: protobuf: fixed-width value runs past the end: truncated file (byte 1)");
}

TEST_CASE("onnx structs: a model round-trips through its bytes") {
    ox::ModelProto m;
    m.opset_import.push_back({"", 13});
    m.graph.name = "g";
    ox::TensorProto w;
    w.name = "w", w.data_type = ox::kFloat, w.dims = {2, 3}, w.values = {1, -2, 3.5, 0.25, 5, -6};
    ox::TensorProto d;
    d.name = "d", d.data_type = ox::kDouble, d.dims = {2}, d.values = {0.1, -1e300};
    ox::TensorProto i;
    i.name = "axes", i.data_type = ox::kInt64, i.dims = {2}, i.ints = {-1, 1ll << 40};
    m.graph.initializer = {w, d, i};
    ox::NodeProto n;
    n.name = "fc", n.op_type = "Gemm", n.input = {"x", "w"}, n.output = {"y"};
    ox::AttributeProto a;
    a.name = "alpha", a.type = ox::kAttrFloat, a.f = 0.5f;
    ox::AttributeProto b;
    b.name = "perm", b.type = ox::kAttrInts, b.ints = {1, 0, -3};
    n.attribute = {a, b};
    m.graph.node = {n};
    ox::ValueInfoProto x;
    x.name = "x", x.elem_type = ox::kFloat, x.has_shape = true, x.shape = {ox::Dim{-1, "N"}, ox::Dim{3, ""}};
    m.graph.input = {x};

    const ox::ModelProto r = ox::parse(ox::serialise(m));
    CHECK(r.opset() == 13);
    CHECK(r.ir_version == m.ir_version);
    REQUIRE(r.graph.initializer.size() == 3);
    CHECK(r.graph.initializer[0].values == w.values);
    CHECK(r.graph.initializer[0].dims == w.dims);
    CHECK(r.graph.initializer[1].values == d.values);
    CHECK(r.graph.initializer[2].ints == i.ints);
    REQUIRE(r.graph.node.size() == 1);
    CHECK(r.graph.node[0].op_type == "Gemm");
    CHECK(r.graph.node[0].input == n.input);
    REQUIRE(r.graph.node[0].find("alpha"));
    CHECK(r.graph.node[0].find("alpha")->f == 0.5f);
    CHECK(r.graph.node[0].find("perm")->ints == b.ints);
    REQUIRE(r.graph.input.size() == 1);
    CHECK(r.graph.input[0].shape[0].param == "N");
    CHECK(r.graph.input[0].shape[1].value == 3);
}

TEST_CASE("onnx structs: float_data and double_data (packed and not) read like raw_data") {
    // TensorProto: dims 2 (unpacked), data_type FLOAT, float_data packed [1.5, -2].
    pb::Writer t;
    t.varint_field(1, 2);
    t.varint_field(2, ox::kFloat);
    pb::Writer packed;
    packed.append_le32(0x3fc00000u);  // 1.5
    packed.append_le32(0xc0000000u);  // -2
    t.bytes_field(4, packed.data());
    t.bytes_field(8, "w");
    pb::Writer g;
    g.bytes_field(5, t.data());
    pb::Writer m;
    m.bytes_field(7, g.data());
    const ox::ModelProto r = ox::parse(m.data());
    REQUIRE(r.graph.initializer.size() == 1);
    CHECK(r.graph.initializer[0].values == std::vector<double>{1.5, -2.0});

    pb::Writer td;  // double_data unpacked: two fixed64 fields
    td.varint_field(1, 2);
    td.varint_field(2, ox::kDouble);
    td.fixed64_field(10, 0x3ff8000000000000ull);  // 1.5
    td.fixed64_field(10, 0xc000000000000000ull);  // -2
    pb::Writer g2;
    g2.bytes_field(5, td.data());
    pb::Writer m2;
    m2.bytes_field(7, g2.data());
    CHECK(ox::parse(m2.data()).graph.initializer[0].values == std::vector<double>{1.5, -2.0});
}

TEST_CASE("onnx structs: hostile sizes, types and nesting are refused before allocation") {
    auto model_with_tensor = [](const pb::Writer& t) {
        pb::Writer g;
        g.bytes_field(5, t.data());
        pb::Writer m;
        m.bytes_field(7, g.data());
        return m.take();
    };
    pb::Writer huge;  // dims 2^30 x 2^30 with 8 bytes of data
    huge.varint_field(1, 1 << 30);
    huge.varint_field(1, 1 << 30);
    huge.varint_field(2, ox::kFloat);
    huge.bytes_field(8, "w");
    huge.bytes_field(9, std::string(8, '\0'));
    CHECK(error_of(model_with_tensor(huge)).find("m.onnx: protobuf: tensor 'w' claims oversized dimensions (more than 2^40 elements)") == 0);

    pb::Writer few;  // dims 3 with 2 floats
    few.varint_field(1, 3);
    few.varint_field(2, ox::kFloat);
    few.bytes_field(8, "w");
    few.bytes_field(9, std::string(8, '\0'));
    CHECK(error_of(model_with_tensor(few)).find("tensor 'w' claims 3 elements (dims) but holds 2 (8 raw bytes)") != std::string::npos);

    pb::Writer half;  // float16
    half.varint_field(1, 1);
    half.varint_field(2, 10);
    half.bytes_field(8, "h");
    half.bytes_field(9, std::string(2, '\0'));
    CHECK(error_of(model_with_tensor(half)).find("tensor 'h' has data type 10 (float16), which tapir does not read") != std::string::npos);

    // Graphs nested in attributes deeper than kMaxDepth.
    std::string g;
    for (int d = 0; d < pb::kMaxDepth + 2; ++d) {
        pb::Writer a;
        a.bytes_field(1, "body");
        if (!g.empty()) a.bytes_field(6, g);
        pb::Writer node;
        node.bytes_field(4, "If");
        node.bytes_field(5, a.data());
        pb::Writer graph;
        graph.bytes_field(1, node.data());
        g = graph.take();
    }
    pb::Writer m;
    m.bytes_field(7, g);
    CHECK(error_of(m.data()).find("graphs nested more than 32 deep") != std::string::npos);

    CHECK(error_of("") == "m.onnx: not an ONNX model: no graph (is the file truncated or of another format?)");
}
