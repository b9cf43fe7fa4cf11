#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include <tapir/io/npy.hpp>

#include "support/numpy_ref.hpp"

using namespace tapir;

namespace {

using tapir_test::bytes_of;
using tapir_test::file_bytes;

std::string error_of(const std::string& bytes) {
    return tapir_test::format_error_of([&] { (void)io::parse_npy(bytes, "t.npy"); });
}

/// A .npy file of the given version around a header dict and raw data.
std::string npy_file(const std::string& dict, const std::string& data, int major = 1) {
    std::string h = dict + "\n";
    std::string out("\x93NUMPY", 6);
    out += static_cast<char>(major);
    out += '\0';
    const std::size_t n = h.size();
    out += static_cast<char>(n & 0xFF);
    out += static_cast<char>((n >> 8) & 0xFF);
    if (major > 1) out += std::string(2, '\0');
    return out + h + data;
}

// Test values both sides compute: element i of a float array, of an int array, of a bool array.
double fval(std::size_t i) { return static_cast<double>(static_cast<long>(i * 7 % 23) - 11) + 0.25 * static_cast<double>(i % 4); }
std::int64_t ival(std::size_t i, bool wide) {
    const std::int64_t v = static_cast<std::int64_t>(i * 7919 % 100003) - 50000;
    return wide ? v * (std::int64_t(1) << 33) + 1 : v;
}
bool bval(std::size_t i) { return i % 3 == 0; }

const char* py_values =
    "def fval(n): i = np.arange(n); return ((i * 7 % 23) - 11) + 0.25 * (i % 4)\n"
    "def ival(n, wide): i = np.arange(n, dtype=np.int64); v = (i * 7919 % 100003) - 50000; return v * 2**33 + 1 if wide else v\n"
    "def bval(n): return np.arange(n) % 3 == 0\n";

} // namespace

TEST_CASE("npy: a tiny big-endian int32 file in a string literal") {
    const std::string f = bytes_of("\x93NUMPY\x01\x00\x34\x00{'descr':'>i4','fortran_order':False,'shape':(2,3)}\n"
                                   "\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00\x00\x03\x00\x06\x1a\x80\xff\xff\xff\xfb\x00\x00\x00\x06");
    const io::NpyArray a = io::parse_npy(f, "tiny.npy");
    CHECK(a.type() == io::NpyType::int32);
    CHECK(a.shape() == Shape{2, 3});
    CHECK(a.values<std::int32_t>() == std::vector<std::int32_t>{1, -2, 3, 400000, -5, 6});
    const Tensor<float> t = a.to_tensor<float>();
    CHECK(t(1, 0) == 400000.0f);
    CHECK(t(0, 1) == -2.0f);
}

TEST_CASE("npy: header versions 1.0, 2.0 and 3.0, both byte orders, Fortran order") {
    const std::vector<double> v{1.5, -2.0, 3.25, 4.0, 5.5, -6.0};
    for (int major : {1, 2, 3}) {
        const io::NpyArray a = io::parse_npy(npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", tapir_test::raw_bytes(v), major), "v.npy");
        CHECK(a.values<double>() == v);
    }
    // Fortran order: column-major data of [[1, 2, 3], [4, 5, 6]] reads in C order.
    const std::vector<std::int64_t> f{1, 4, 2, 5, 3, 6};
    const io::NpyArray c = io::parse_npy(npy_file("{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3)}", tapir_test::raw_bytes(f)), "f.npy");
    CHECK(c.values<std::int64_t>() == std::vector<std::int64_t>{1, 2, 3, 4, 5, 6});
    // Rank 3 in Fortran order: element (i, j, k) is at i + 2 j + 6 k.
    std::vector<float> f3(24);
    for (std::size_t i = 0; i < 2; ++i)
        for (std::size_t j = 0; j < 3; ++j)
            for (std::size_t k = 0; k < 4; ++k) f3[i + 2 * j + 6 * k] = static_cast<float>(100 * i + 10 * j + k);
    const Tensor<float> t3 = io::parse_npy(npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4)}", tapir_test::raw_bytes(f3)), "f3.npy").to_tensor<float>();
    CHECK(t3(1, 2, 3) == 123.0f);
    CHECK(t3(0, 1, 2) == 12.0f);
    CHECK(t3(1, 0, 1) == 101.0f);
    // Big-endian float64 2.5 = 0x4004000000000000.
    const io::NpyArray b = io::parse_npy(npy_file("{'descr': '>f8', 'fortran_order': False, 'shape': ()}", bytes_of("\x40\x04\0\0\0\0\0\0")), "b.npy");
    CHECK(b.rank() == 0);
    CHECK(b.values<double>() == std::vector<double>{2.5});
    // bool: any non-zero byte is True.
    const io::NpyArray bo = io::parse_npy(npy_file("{'descr': '|b1', 'fortran_order': False, 'shape': (3,)}", bytes_of("\x01\x00\x01")), "b.npy");
    CHECK(bo.values<bool>() == std::vector<bool>{true, false, true});
    CHECK(bo.to_tensor<double>()[2] == 1.0);
}

TEST_CASE("npy: conversions are exact or refused with the element named") {
    const std::int64_t big = (std::int64_t(1) << 53) + 1;
    const io::NpyArray a = io::NpyArray::from(Shape{3}, std::vector<std::int64_t>{0, 1, big});
    CHECK(a.values<std::int64_t>()[2] == big);  // the raw typed view keeps it
    try {
        (void)a.to_tensor<double>();
        FAIL("no error");
    } catch (const value_error& e) {
        CHECK(std::string(e.what()) == "array: element 2 (9007199254740993) of the int64 array is not exactly representable as "
                                       "float64 (read it as int64 values instead)");
    }
    const io::NpyArray i32 = io::NpyArray::from(Shape{2}, std::vector<std::int32_t>{16777216, 16777217});
    CHECK(i32.to_tensor<double>()[1] == 16777217.0);
    CHECK_THROWS_WITH_AS((void)i32.to_tensor<float>(), doctest::Contains("element 1 (16777217) of the int32 array"), value_error);
    const io::NpyArray d = io::NpyArray::from(Shape{2}, std::vector<double>{2.0, 1.5});
    CHECK_THROWS_WITH_AS((void)d.values<std::int64_t>(), doctest::Contains("element 1 (1.5) of the float64 array is not exactly representable as int64"),
                         value_error);
    CHECK_THROWS_AS((void)io::NpyArray::from(Shape{1}, std::vector<double>{1e300}).to_tensor<float>(), value_error);
    CHECK(io::NpyArray::from(Shape{1}, std::vector<double>{0.1}).to_tensor<float>()[0] == 0.1f);
    CHECK_THROWS_WITH_AS((void)io::NpyArray::from(Shape{1}, std::vector<std::int64_t>{std::int64_t(1) << 40}).values<std::int32_t>(),
                         doctest::Contains("not exactly representable as int32"), value_error);
}

TEST_CASE("npy: tapir's files round-trip bit for bit, data 64-byte aligned") {
    Tensor<float> t(Shape{2, 3, 4});
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(fval(i)) / 3.0f;
    t[5] = -0.0f;
    t[6] = std::numeric_limits<float>::infinity();
    const std::string b = io::npy_bytes(io::NpyArray::from(t));
    CHECK(b.size() == 128 + 24 * 4);
    CHECK(b.substr(10, 62) == "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }");
    CHECK(b[127] == '\n');
    const Tensor<float> back = io::parse_npy(b, "t.npy").to_tensor<float>();
    REQUIRE(back.shape() == t.shape());
    CHECK(std::memcmp(back.data(), t.data(), t.size() * sizeof(float)) == 0);
    CHECK(std::signbit(back[5]));
    // Rank 0 and rank 1 shapes are written as () and (n,).
    CHECK(io::npy_bytes(io::NpyArray::from(Tensor<double>::scalar(1.0))).find("'shape': ()") != std::string::npos);
    CHECK(io::npy_bytes(io::NpyArray::from(Tensor<double>(Shape{7}))).find("'shape': (7,)") != std::string::npos);

    tapir_test::ScratchDir dir("npy_rt");
    const std::string path = dir / "t.npy";
    io::write_npy(path, t);
    CHECK(!std::filesystem::exists(path + ".tmp"));
    const Tensor<float> f = io::read_npy<float>(path);
    CHECK(std::memcmp(f.data(), t.data(), t.size() * sizeof(float)) == 0);
    CHECK_THROWS_WITH_AS(io::write_npy(dir / "no/such/dir/t.npy", t), doctest::Contains("write_npy: cannot open"), format_error);
    CHECK_THROWS_WITH_AS((void)io::read_npy<float>(dir / "missing.npy"), doctest::Contains("read_npy: cannot open"), format_error);
}

TEST_CASE("npy: bad files are refused with the problem named") {
    const std::string d4 = tapir_test::raw_bytes(std::vector<float>{1, 2, 3, 4});
    CHECK(error_of("PK\x03\x04 not numpy") == "t.npy: bad magic: not a .npy file (it does not start with \\x93NUMPY)");
    CHECK(error_of(bytes_of("\x93NUMPY\x01")) == "t.npy: truncated .npy file (7 bytes, shorter than its preamble)");
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (4,)}", d4).substr(0, 30)).find("truncated .npy file: the header claims") !=
          std::string::npos);
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (5,)}", d4)) ==
          "t.npy: truncated .npy file: shape (5,) of float32 needs 20 bytes of data, 16 follow the header");
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}", d4)) ==
          "t.npy: 4 bytes after the data of shape (3,) (a corrupt or concatenated file)");
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4)}", d4)) ==
          "t.npy: shape (4294967296, 4294967296, 4) claims more elements than fit in memory");
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000)}", d4)).find("needs 40000000000 bytes of data") !=
          std::string::npos);
    CHECK(error_of(npy_file("{'descr': '<c16', 'fortran_order': False, 'shape': (1,)}", d4)) ==
          "t.npy: unsupported dtype complex128 (descr '<c16'); tapir reads float32, float64, int32, int64 and bool");
    CHECK(error_of(npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (1,)}", d4)).find("unsupported dtype uint8") != std::string::npos);
    CHECK(error_of(npy_file("{'descr': '<U5', 'fortran_order': False, 'shape': (1,)}", d4)).find("unsupported dtype str (unicode)") != std::string::npos);
    CHECK(error_of(npy_file("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", d4)) ==
          "t.npy: object arrays (descr '|O') hold pickled Python objects and cannot be read; save a numeric dtype");
    CHECK(error_of(npy_file("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", d4)).find("structured dtype") != std::string::npos);
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 2, 2)}", d4)) ==
          "t.npy: array of rank 5 (shape (1, 1, 1, 2, 2)): tapir tensors have at most rank 4");
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': False}", d4)) == "t.npy: bad .npy header dict: no 'shape' key");
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': 1, 'shape': (4,)}", d4)) ==
          "t.npy: bad .npy header dict: 'fortran_order' is not True or False");
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", d4)).find("unexpected key 'x'") != std::string::npos);
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (-4,)}", d4)).find("not a non-negative integer") != std::string::npos);
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (4,)", d4)).find("bad .npy header dict") != std::string::npos);
    CHECK(error_of(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (4,)}", d4, 4)) ==
          "t.npy: unsupported .npy format version 4.0 (tapir reads 1.0, 2.0 and 3.0)");
}

TEST_CASE("npy: files written by NumPy read exactly (every dtype, C and Fortran order, both byte orders)") {
    if (!tapir_test::numpy_available()) return;
    tapir_test::ScratchDir dir("npy_np");
    const std::string made = tapir_test::numpy_run(dir, std::string(py_values) + R"(
shapes = [(), (5,), (3, 4), (2, 3, 5), (2, 3, 2, 3), (0, 3)]
for k, s in enumerate(shapes):
    n = int(np.prod(s))
    for name, v in [('f4', fval(n)), ('f8', fval(n) / 3), ('i4', ival(n, False)), ('i8', ival(n, True)), ('b1', bval(n))]:
        for order in '<>':
            a = v.reshape(s).astype(np.dtype(order + name) if name != 'b1' else np.bool_)
            np.save('%s_%s_%d_c.npy' % (name, 'le' if order == '<' else 'be', k), a)
            np.save('%s_%s_%d_f.npy' % (name, 'le' if order == '<' else 'be', k), np.asfortranarray(a))
            a.reshape(-1).astype('<f8' if name[0] in 'fb' else '<i8').tofile('%s_%s_%d.ref' % (name, 'le' if order == '<' else 'be', k))
a = fval(12).reshape(3, 4)
np.lib.format.write_array(open('v2.npy', 'wb'), a, version=(2, 0))
np.lib.format.write_array(open('v3.npy', 'wb'), a, version=(3, 0))
print('made', len(os.listdir('.')))
)");
    REQUIRE(made.find("made") != std::string::npos);
    std::size_t checked = 0, fortran = 0;
    for (const char* name : {"f4", "f8", "i4", "i8", "b1"})
        for (const char* order : {"le", "be"})
            for (int k = 0; k < 6; ++k)
                for (const char* layout : {"c", "f"}) {
                    const std::string stem = std::string(name) + "_" + order + "_" + std::to_string(k);
                    const io::NpyArray a = io::read_npy_array(dir / (stem + "_" + layout + ".npy"));
                    const std::string ref = file_bytes(dir / (stem + ".ref"));
                    CAPTURE(stem);
                    CAPTURE(layout);
                    CHECK(tapir_test::equals_reference(a, ref));
                    checked++;
                    if (layout[0] == 'f' && a.rank() >= 2) fortran++;
                }
    CHECK(checked == 120);
    CHECK(fortran == 40);
    for (const char* v : {"v2.npy", "v3.npy"}) {
        const Tensor<double> t = io::read_npy<double>(dir / v);
        REQUIRE(t.shape() == Shape{3, 4});
        for (std::size_t i = 0; i < 12; ++i) CHECK(t[i] == fval(i));
    }
}

TEST_CASE("npy: files written by tapir read exactly in NumPy") {
    if (!tapir_test::numpy_available()) return;
    tapir_test::ScratchDir dir("npy_tp");
    const Shape shapes[] = {Shape{}, Shape{5}, Shape{3, 4}, Shape{2, 3, 5}, Shape{2, 3, 2, 3}, Shape{0, 3}};
    for (std::size_t k = 0; k < 6; ++k) {
        const Shape& s = shapes[k];
        const std::size_t n = s.numel();
        std::vector<float> f4(n);
        std::vector<double> f8(n);
        std::vector<std::int32_t> i4(n);
        std::vector<std::int64_t> i8(n);
        std::vector<bool> b1(n);
        for (std::size_t i = 0; i < n; ++i) {
            f4[i] = static_cast<float>(fval(i));
            f8[i] = fval(i) / 3;
            i4[i] = static_cast<std::int32_t>(ival(i, false));
            i8[i] = ival(i, true);
            b1[i] = bval(i);
        }
        const std::string kk = std::to_string(k);
        io::write_npy(dir / ("f4_" + kk + ".npy"), io::NpyArray::from(s, f4));
        io::write_npy(dir / ("f8_" + kk + ".npy"), io::NpyArray::from(s, f8));
        io::write_npy(dir / ("i4_" + kk + ".npy"), io::NpyArray::from(s, i4));
        io::write_npy(dir / ("i8_" + kk + ".npy"), io::NpyArray::from(s, i8));
        io::write_npy(dir / ("b1_" + kk + ".npy"), io::NpyArray::from(s, b1));
    }
    const std::string out = tapir_test::numpy_run(dir, std::string(py_values) + R"(
shapes = [(), (5,), (3, 4), (2, 3, 5), (2, 3, 2, 3), (0, 3)]
bad = []
for k, s in enumerate(shapes):
    n = int(np.prod(s))
    for name, v in [('f4', fval(n).astype('<f4')), ('f8', fval(n) / 3), ('i4', ival(n, False).astype('<i4')), ('i8', ival(n, True)), ('b1', bval(n))]:
        a = np.load('%s_%d.npy' % (name, k))
        want = v.reshape(s)
        if a.dtype != want.dtype or a.shape != want.shape or not np.array_equal(a, want):
            bad.append('%s_%d: %s %s' % (name, k, a.dtype, a.shape))
print('VERDICT', 'ok' if not bad else 'mismatch ' + ' '.join(bad))
)");
    CHECK(out.find("VERDICT ok") != std::string::npos);
    if (out.find("VERDICT ok") == std::string::npos) MESSAGE(out);
}
