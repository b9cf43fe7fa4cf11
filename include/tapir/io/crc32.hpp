#pragma once
/// CRC-32/ISO-HDLC (the zlib, PNG and gzip CRC): reflected polynomial 0xEDB88320, initial value
/// and final xor 0xFFFFFFFF; crc32("123456789") = 0xCBF43926. Slicing by 8 bytes.

#include <array>
#include <cstddef>
#include <cstdint>

namespace tapir {
namespace io {

namespace detail {
struct Crc32Tables {
    std::uint32_t t[8][256];
};

constexpr Crc32Tables make_crc32_tables() {
    Crc32Tables tab{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1u) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
        tab.t[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i)
        for (int s = 1; s < 8; ++s) tab.t[s][i] = (tab.t[s - 1][i] >> 8) ^ tab.t[0][tab.t[s - 1][i] & 0xFFu];
    return tab;
}

inline const Crc32Tables& crc32_tables() noexcept {
    static constexpr Crc32Tables tab = make_crc32_tables();
    return tab;
}
} // namespace detail

/// Continues a CRC: crc32_update(crc32_update(0, a), b) == crc32(a ++ b). Start from 0.
inline std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t n) noexcept {
    const auto& t = detail::crc32_tables().t;
    const auto* p = static_cast<const unsigned char*>(data);
    std::uint32_t c = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        // Bytes assembled explicitly: the result does not depend on the host's byte order.
        const std::uint32_t lo = c ^ (static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
                                      static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24);
        c = t[7][lo & 0xFFu] ^ t[6][(lo >> 8) & 0xFFu] ^ t[5][(lo >> 16) & 0xFFu] ^ t[4][lo >> 24] ^ t[3][p[4]] ^
            t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    }
    for (; n > 0; --n, ++p) c = t[0][(c ^ *p) & 0xFFu] ^ (c >> 8);
    return ~c;
}

inline std::uint32_t crc32(const void* data, std::size_t n) noexcept { return crc32_update(0u, data, n); }

} // namespace io
} // namespace tapir
