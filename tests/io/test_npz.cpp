#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include <tapir/data/dataset.hpp>
#include <tapir/io/detail/inflate.hpp>
#include <tapir/io/npz.hpp>

#include "support/numpy_ref.hpp"

using namespace tapir;

namespace {

std::string npz_error(const std::string& bytes) {
    return tapir_test::format_error_of([&] { (void)io::parse_npz(bytes, "t.npz"); });
}

std::string inflate_text(const std::string& in, std::size_t out_size) {
    std::string out(out_size, '\0');
    io::detail::inflate(reinterpret_cast<const unsigned char*>(in.data()), in.size(), reinterpret_cast<unsigned char*>(&out[0]), out.size(),
                        "s");
    return out;
}

std::string inflate_error(const std::string& in, std::size_t out_size) {
    return tapir_test::format_error_of([&] { (void)inflate_text(in, out_size); });
}

std::vector<std::pair<std::string, io::NpyArray>> sample_arrays() {
    std::vector<float> x(60);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) * 0.5f - 7.0f;
    return {{"x", io::NpyArray::from(Shape{20, 3}, x)},
            {"y", io::NpyArray::from(Shape{20}, std::vector<std::int64_t>{0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 0})},
            {"w", io::NpyArray::from(Shape{20}, std::vector<double>(20, 0.25))},
            {"mask", io::NpyArray::from(Shape{2, 2}, std::vector<bool>{true, false, false, true})}};
}

} // namespace

TEST_CASE("inflate: hand-made stored and fixed-Huffman streams of known content") {
    // zlib, raw deflate, strategy Z_FIXED: one final fixed-Huffman block with back-references.
    const std::string fixed = tapir_test::bytes_of("\x2b\x49\x2c\xc8\x2c\x52\x28\x4a\x4d\x4c\x29\x56\x48\x49\x4d\xcb\x49\x2c\x49\xb5\x52\x48\x4c\x4a\x46\x43\x3a"
                                       "\xe8\x62\x8a\x5c\x00");
    const std::string text = "tapir reads deflate: abcabcabcabcabcabc, abcabcabcabcabc!\n";
    CHECK((static_cast<unsigned char>(fixed[0]) & 7u) == 3u);  // BFINAL = 1, BTYPE = 01 (fixed)
    CHECK(inflate_text(fixed, text.size()) == text);
    // A stored block: BFINAL = 1, BTYPE = 00, LEN = 5, NLEN = ~5.
    CHECK(inflate_text(tapir_test::bytes_of("\x01\x05\x00\xfa\xffhello"), 5) == "hello");
    // Two blocks: a non-final stored "ab", then a final stored "c".
    CHECK(inflate_text(tapir_test::bytes_of("\x00\x02\x00\xfd\xff" "ab" "\x01\x01\x00\xfe\xff" "c"), 3) == "abc");

    CHECK(inflate_error(tapir_test::bytes_of("\x07"), 1) == "s: corrupt deflate stream: invalid block type 3");
    CHECK(inflate_error(fixed.substr(0, 12), text.size()) == "s: corrupt deflate stream: truncated (the input ends inside a block)");
    CHECK(inflate_error(fixed, text.size() - 1).find("inflates to more than the 57 bytes") != std::string::npos);
    CHECK(inflate_error(fixed, text.size() + 1) == "s: corrupt deflate stream: the stream ends after 58 bytes, the archive claims 59");
    CHECK(inflate_error(tapir_test::bytes_of("\x01\x05\x00\xfb\xffhello"), 5) == "s: corrupt deflate stream: a stored block's length does not match its complement");
    // Fixed block whose first symbol is a match (length 3, distance 1) with nothing written yet.
    CHECK(inflate_error(tapir_test::bytes_of("\x03\x02\x00"), 3) ==
          "s: corrupt deflate stream: a distance of 1 reaches before the start of the output (0 bytes written)");
    // Dynamic block header declaring 287 literal/length codes.
    CHECK(inflate_error(tapir_test::bytes_of("\xf5\x00\x00"), 3).find("declares 287 literal/length codes (at most 286)") != std::string::npos);
}

TEST_CASE("npz: tapir's archives round-trip, with and without ZIP64 records") {
    const auto arrays = sample_arrays();
    for (bool zip64 : {false, true}) {
        io::NpzOptions o;
        o.zip64 = zip64;
        const std::string b = io::npz_bytes(arrays, o);
        const io::NpzFile f = io::parse_npz(b, "t.npz");
        CHECK(f.names() == std::vector<std::string>{"x", "y", "w", "mask"});
        CHECK(f["x"].values<float>() == arrays[0].second.values<float>());
        CHECK(f["y"].values<std::int64_t>() == arrays[1].second.values<std::int64_t>());
        CHECK(f["mask"].values<bool>() == std::vector<bool>{true, false, false, true});
        CHECK(f.tensor<double>("w")[19] == 0.25);
        CHECK(f["x"].source() == "t.npz: member 'x.npy'");
        CHECK((b.find(tapir_test::bytes_of("PK\x06\x06")) != std::string::npos) == zip64);
    }
    CHECK_THROWS_WITH_AS((void)io::parse_npz(io::npz_bytes(arrays), "t.npz")["z"], "t.npz: no array 'z' (available: x, y, w, mask)", value_error);
    CHECK_THROWS_WITH_AS((void)io::npz_bytes({{"a", arrays[0].second}, {"a", arrays[1].second}}), "npz_bytes: array name 'a' is used twice", value_error);

    tapir_test::ScratchDir dir("npz_rt");
    io::write_npz(dir / "a.npz", arrays);
    CHECK(!std::filesystem::exists(dir / "a.npz.tmp"));
    CHECK(io::read_npz(dir / "a.npz")["y"].values<std::int64_t>()[1] == 1);
}

TEST_CASE("npz: bad archives are refused with the problem named") {
    const std::string good = io::npz_bytes(sample_arrays());
    std::string crc = good;
    crc[30 + 5 + 130] = static_cast<char>(crc[30 + 5 + 130] ^ 0x01);  // a data byte of x.npy
    CHECK(npz_error(crc).find("t.npz: member 'x.npy': CRC mismatch (the archive says 0x") != std::string::npos);
    CHECK(npz_error(good.substr(0, good.size() - 7)) == "t.npz: truncated archive: no end of central directory record");
    CHECK(npz_error(good.substr(0, 100)) == "t.npz: truncated archive: no end of central directory record");
    CHECK(npz_error("not a zip file at all, just text") == "t.npz: bad magic: not a ZIP (.npz) archive");
    // The end record claims a central directory beyond the file.
    std::string far = good;
    far[far.size() - 3] = '\x7f';
    CHECK(npz_error(far).find("t.npz: truncated archive: the central directory") != std::string::npos);
    // A member's method 12 (bzip2).
    std::string bz = good;
    const std::size_t cd = bz.find(tapir_test::bytes_of("PK\x01\x02"));
    bz[cd + 10] = 12;
    CHECK(npz_error(bz) == "t.npz: member 'x.npy': compression method 12 (bzip2) is not supported (stored and deflate are)");
    // A member that is not a .npy file (its CRC made right): the error names the member.
    std::string badnpy = io::npz_bytes({{"x", io::NpyArray::from(Shape{1}, std::vector<double>{1.0})}});
    badnpy[30 + 5 + 1] = 'X';
    const std::uint32_t c = io::crc32(badnpy.data() + 35, 136);
    const std::size_t at = badnpy.find(tapir_test::bytes_of("PK\x01\x02")) + 16;
    for (std::size_t k = 0; k < 4; ++k) badnpy[at + k] = static_cast<char>((c >> (8 * k)) & 0xFFu);
    CHECK(npz_error(badnpy) == "t.npz: member 'x.npy': bad magic: not a .npy file (it does not start with \\x93NUMPY)");
}

TEST_CASE("npz: archives written by NumPy (np.savez, np.savez_compressed) read exactly") {
    if (!tapir_test::numpy_available()) return;
    tapir_test::ScratchDir dir("npz_np");
    const std::string out = tapir_test::numpy_run(dir, R"(
import zipfile, struct
rng = np.random.default_rng(5)
arrays = {
    'f4': (rng.standard_normal((30, 7)) * 100).astype('<f4'),
    'f8be': rng.standard_normal((4, 5, 6)).astype('>f8'),
    'i4': rng.integers(-2**31, 2**31, size=(50,), dtype=np.int64).astype('<i4'),
    'i8': np.asfortranarray(rng.integers(-2**62, 2**62, size=(6, 9), dtype=np.int64)),
    'b1': rng.random((3, 4, 5, 2)) < 0.3,
    'scalar': np.float64(3.5),
    # long runs (matches of 258 bytes) and a skewed alphabet (dynamic Huffman blocks)
    'big_runs': np.repeat(np.arange(3000, dtype=np.float64), 200),
    'big_noise': rng.integers(0, 40, size=(400000,), dtype=np.int64).astype('<i4'),
}
np.savez('plain.npz', **arrays)
np.savez_compressed('packed.npz', **arrays)
np.savez('positional.npz', arrays['f4'], arrays['i4'])
for k, a in arrays.items():
    np.ascontiguousarray(a).reshape(-1).astype('<f8' if a.dtype.kind in 'fb' else '<i8').tofile(k + '.ref')
# Count the block types at the start of each compressed member (bits 1-2 of the first byte).
z = zipfile.ZipFile('packed.npz')
raw = open('packed.npz', 'rb').read()
types = set()
for info in z.infolist():
    assert info.compress_type == 8
    o = info.header_offset
    n, m = struct.unpack('<HH', raw[o + 26:o + 30])
    types.add((raw[o + 30 + n + m] >> 1) & 3)
print('dynamic', 2 in types)
)");
    CHECK(out.find("dynamic True") != std::string::npos);  // dynamic Huffman blocks were decoded
    for (const char* file : {"plain.npz", "packed.npz"}) {
        const io::NpzFile f = io::read_npz(dir / file);
        CAPTURE(file);
        CHECK(f.arrays.size() == 8);
        for (const auto& kv : f.arrays) {
            CAPTURE(kv.first);
            const std::string ref = tapir_test::file_bytes(dir / (kv.first + ".ref"));
            CHECK(tapir_test::equals_reference(kv.second, ref));
        }
        CHECK(f["f8be"].shape() == Shape{4, 5, 6});
        CHECK(f["b1"].type() == io::NpyType::boolean);
        CHECK(f["scalar"].rank() == 0);
        CHECK(f["big_runs"].size() == 600000);
    }
    const io::NpzFile p = io::read_npz(dir / "positional.npz");
    CHECK(p.names() == std::vector<std::string>{"arr_0", "arr_1"});
    CHECK(p["arr_1"].type() == io::NpyType::int32);
}

TEST_CASE("npz: archives written by tapir read exactly in NumPy") {
    if (!tapir_test::numpy_available()) return;
    tapir_test::ScratchDir dir("npz_tp");
    io::write_npz(dir / "a.npz", sample_arrays());
    io::NpzOptions o;
    o.zip64 = true;
    io::write_npz(dir / "b.npz", sample_arrays(), o);
    const std::string out = tapir_test::numpy_run(dir, R"(
import zipfile
bad = []
for name in ['a.npz', 'b.npz']:
    if zipfile.ZipFile(name).testzip() is not None: bad.append(name + ' testzip')
    d = np.load(name)
    want = {'x': (np.arange(60) * 0.5 - 7).astype('<f4').reshape(20, 3),
            'y': np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 0], dtype='<i8'),
            'w': np.full(20, 0.25), 'mask': np.array([[True, False], [False, True]])}
    if sorted(d.files) != sorted(want): bad.append(name + ' files ' + str(d.files))
    for k, v in want.items():
        a = d[k]
        if a.dtype != v.dtype or a.shape != v.shape or not np.array_equal(a, v): bad.append(name + ':' + k)
print('VERDICT', 'ok' if not bad else 'mismatch ' + ' '.join(bad))
)");
    CHECK(out.find("VERDICT ok") != std::string::npos);
    if (out.find("VERDICT ok") == std::string::npos) MESSAGE(out);
}

TEST_CASE("npz: a dataset from an archive's arrays (int64 labels, float32 features, weights)") {
    const io::NpzFile f = io::parse_npz(io::npz_bytes(sample_arrays()), "train.npz");
    const data::Dataset<float> d = data::make_dataset<float>(f, "x", "y", "w");
    CHECK(d.size() == 20);
    CHECK(d.x.shape() == Shape{20, 3});
    CHECK(d.x(1, 2) == -4.5f);
    CHECK(d.y.shape() == Shape{20});
    CHECK(d.y[2] == 1.0f);
    CHECK(d.w[7] == 0.25f);
    CHECK_THROWS_WITH_AS((void)data::make_dataset<float>(f, "x", "mask"), "Dataset: x has 20 events (shape (20, 3)) but y has shape (2, 2)", shape_error);
    CHECK_THROWS_WITH_AS((void)data::make_dataset<float>(f, "x", "labels"), doctest::Contains("no array 'labels'"), value_error);
    const data::Dataset<double> e = data::make_dataset<double>(f["x"], f["y"]);
    CHECK(e.y[1] == 1.0);
}

TEST_CASE("inflate: zlib streams that mix fixed, stored and dynamic blocks") {
    if (!tapir_test::numpy_available()) return;
    tapir_test::ScratchDir dir("inflate_zlib");
    // Sync flushes end a Huffman block and add an empty stored block; random bytes go into
    // stored blocks: the decoder must hand back the bytes it had buffered past a Huffman block.
    (void)tapir_test::numpy_run(dir, R"(
import zlib
rnd = np.random.default_rng(3).integers(0, 256, size=70000, dtype=np.uint8).tobytes()
text = b'tapir reads deflate ' * 300
for name, strategy in [('fixed', zlib.Z_FIXED), ('default', zlib.Z_DEFAULT_STRATEGY)]:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, strategy)
    s = c.compress(text) + c.flush(zlib.Z_SYNC_FLUSH) + c.compress(rnd) + c.flush(zlib.Z_FULL_FLUSH) + c.compress(text) + c.flush()
    open(name + '.deflate', 'wb').write(s)
    open(name + '.raw', 'wb').write(text + rnd + text)
)");
    for (const char* name : {"fixed", "default"}) {
        CAPTURE(name);
        const std::string in = tapir_test::file_bytes(dir / (std::string(name) + ".deflate"));
        const std::string want = tapir_test::file_bytes(dir / (std::string(name) + ".raw"));
        REQUIRE(want.size() == 70000 + 2 * 6000);
        CHECK(inflate_text(in, want.size()) == want);
    }
}
