/// libFuzzer target for the .npy reader (parse_npy). Any input must either parse into a
/// consistent array or throw format_error; a parsed array must write and read back to the same
/// type, shape and bytes. Anything else (a crash, a sanitizer report, another exception type) is
/// a finding.
#include <tapir/io/npy.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    tapir::io::NpyArray a;
    try {
        a = tapir::io::parse_npy(bytes, "fuzz.npy");
    } catch (const tapir::format_error&) {
        return 0;
    }
    if (a.rank() > tapir::max_rank || a.size() != a.shape().numel()) std::abort();
    const std::string again = tapir::io::npy_bytes(a);
    const tapir::io::NpyArray b = tapir::io::parse_npy(again, "again.npy");  // must not throw
    if (b.type() != a.type() || b.shape() != a.shape() || b.size() != a.size()) std::abort();
    const std::size_t n = a.size() * tapir::io::npy_item_size(a.type());
    if (n && std::memcmp(a.bytes(), b.bytes(), n) != 0) std::abort();
    if (a.type() == tapir::io::NpyType::boolean)
        for (std::size_t i = 0; i < a.size(); ++i)
            if (a.bytes()[i] > 1) std::abort();
    // Conversions: exact or value_error.
    try {
        (void)a.to_tensor<float>();
    } catch (const tapir::value_error&) {
    }
    try {
        (void)a.values<std::int64_t>();
    } catch (const tapir::value_error&) {
    }
    return 0;
}
