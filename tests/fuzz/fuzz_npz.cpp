/// libFuzzer target for the .npz reader (parse_npz: ZIP structures, ZIP64, the inflate decoder,
/// CRC-32, the .npy members) and for the inflate decoder alone. Any input must either parse or
/// throw format_error; a parsed archive must write and read back to the same arrays. Anything
/// else (a crash, a sanitizer report, another exception type) is a finding.
#include <tapir/io/detail/inflate.hpp>
#include <tapir/io/npz.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);

    // The raw deflate decoder on the input, into a buffer of a size taken from the input.
    if (size >= 2) {
        const std::size_t out_size = static_cast<std::size_t>(data[0]) | static_cast<std::size_t>(data[1]) << 8;
        std::vector<unsigned char> out(out_size);
        try {
            tapir::io::detail::inflate(data + 2, size - 2, out.data(), out.size(), "fuzz");
        } catch (const tapir::format_error&) {
        }
    }

    tapir::io::NpzFile f;
    try {
        f = tapir::io::parse_npz(bytes, "fuzz.npz");
    } catch (const tapir::format_error&) {
        return 0;
    }
    for (bool zip64 : {false, true}) {
        tapir::io::NpzOptions o;
        o.zip64 = zip64;
        const tapir::io::NpzFile g = tapir::io::parse_npz(tapir::io::npz_bytes(f.arrays, o), "again.npz");  // must not throw
        if (g.arrays.size() != f.arrays.size()) std::abort();
        for (std::size_t i = 0; i < f.arrays.size(); ++i) {
            const tapir::io::NpyArray &a = f.arrays[i].second, &b = g.arrays[i].second;
            if (g.arrays[i].first != f.arrays[i].first || a.type() != b.type() || a.shape() != b.shape()) std::abort();
            const std::size_t n = a.size() * tapir::io::npy_item_size(a.type());
            if (n && std::memcmp(a.bytes(), b.bytes(), n) != 0) std::abort();
        }
    }
    return 0;
}
