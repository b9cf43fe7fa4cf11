#pragma once
/// NumPy .npz archives: a ZIP file whose members are .npy files, as np.savez (stored) and
/// np.savez_compressed (deflate) write them. Read: the end of central directory record, the
/// ZIP64 end record and locator when present, every central directory entry (with its ZIP64
/// extra field), the local headers; members stored (method 0) or deflated (method 8, through
/// the decoder of io/detail/inflate.hpp); the CRC-32 of every member is checked. Write: stored
/// members, ZIP64 records where sizes or offsets need them (or always, NpzOptions::zip64, as
/// NumPy writes its local headers). Reference: PKWARE APPNOTE.TXT 6.3 (sections 4.3 and 4.5).
///
/// Member names are the array names with ".npy" appended (np.savez(f, x=..., y=...) stores
/// x.npy and y.npy; positional arrays are arr_0, arr_1, ...). Errors are format_errors naming
/// the archive and, for a member's problem, the member: "data.npz: member 'x.npy': CRC
/// mismatch ...". Encrypted members, multi-disk archives and methods other than stored and
/// deflate are refused by name.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../tensor/tensor.hpp"
#include "crc32.hpp"
#include "detail/file.hpp"
#include "detail/inflate.hpp"
#include "npy.hpp"

namespace tapir::io {

/// The arrays of an .npz archive, in archive order, named without ".npy".
struct NpzFile {
    std::string source;
    std::vector<std::pair<std::string, NpyArray>> arrays;

    bool has(const std::string& name) const noexcept {
        for (const auto& a : arrays)
            if (a.first == name) return true;
        return false;
    }
    std::vector<std::string> names() const {
        std::vector<std::string> n;
        for (const auto& a : arrays) n.push_back(a.first);
        return n;
    }
    /// The array called name; value_error listing the names when there is none.
    const NpyArray& operator[](const std::string& name) const {
        for (const auto& a : arrays)
            if (a.first == name) return a.second;
        std::string list;
        for (const auto& a : arrays) list += (list.empty() ? "" : ", ") + a.first;
        throw value_error(source + ": no array '" + name + "' (available: " + list + ")");
    }
    /// The array called name as a tensor (see NpyArray::to_tensor).
    template <class T>
    Tensor<T> tensor(const std::string& name) const {
        return (*this)[name].template to_tensor<T>();
    }
};

/// Options of npz_bytes and write_npz.
struct NpzOptions {
    /// Write ZIP64 records for every member and the end of the archive even when no size needs
    /// them (any ZIP reader of the last twenty years accepts them); otherwise only where needed.
    bool zip64 = false;
};

namespace detail {

inline std::uint64_t zip_le(const unsigned char* p, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t k = 0; k < n; ++k) v |= static_cast<std::uint64_t>(p[k]) << (8 * k);
    return v;
}

constexpr std::uint32_t zip_local_sig = 0x04034b50u, zip_central_sig = 0x02014b50u, zip_end_sig = 0x06054b50u,
                        zip64_end_sig = 0x06064b50u, zip64_locator_sig = 0x07064b50u;

class NpzReader {
public:
    NpzReader(std::string_view bytes, const std::string& source)
        : p_(reinterpret_cast<const unsigned char*>(bytes.data())), n_(bytes.size()), src_(source) {}

    NpzFile read() {
        NpzFile f;
        f.source = src_;
        const std::size_t end = find_end();
        std::uint64_t entries = le(end + 10, 2), cd_size = le(end + 12, 4), cd_off = le(end + 16, 4);
        std::size_t cd_limit = end;
        if (le(end + 4, 2) != 0 || le(end + 6, 2) != 0 || le(end + 8, 2) != entries)
            fail("multi-disk (split) archives are not supported");
        if (end >= 20 && le(end - 20, 4) == zip64_locator_sig) {
            const std::uint64_t rec = le(end - 20 + 8, 8);
            if (rec > end - 20 || end - 20 - rec < 56 || le(static_cast<std::size_t>(rec), 4) != zip64_end_sig)
                fail("the ZIP64 end of central directory locator points to no ZIP64 record");
            const auto r = static_cast<std::size_t>(rec);
            if (le(r + 16, 4) != 0 || le(r + 20, 4) != 0 || le(r + 24, 8) != le(r + 32, 8))
                fail("multi-disk (split) archives are not supported");
            entries = le(r + 32, 8), cd_size = le(r + 40, 8), cd_off = le(r + 48, 8);
            cd_limit = r;
        }
        if (cd_off > cd_limit || cd_size > cd_limit - cd_off)
            fail("truncated archive: the central directory (" + std::to_string(cd_size) + " bytes at offset " + std::to_string(cd_off) +
                 ") lies outside the file");
        if (entries > cd_size / 46)
            fail("the end record claims " + std::to_string(entries) + " members in a central directory of " + std::to_string(cd_size) + " bytes");
        std::size_t at = static_cast<std::size_t>(cd_off);
        const std::size_t cd_end = at + static_cast<std::size_t>(cd_size);
        for (std::uint64_t e = 0; e < entries; ++e) at = member(f, at, cd_end, static_cast<std::size_t>(cd_off));
        return f;
    }

private:
    [[noreturn]] void fail(const std::string& why) const { throw format_error(src_ + ": " + why); }
    std::uint64_t le(std::size_t at, std::size_t k) const { return zip_le(p_ + at, k); }

    /// The end of central directory record: the last signature whose comment fits the file.
    std::size_t find_end() const {
        if (n_ < 22) {
            if (n_ >= 4 && le(0, 4) == zip_local_sig) fail("truncated archive (" + std::to_string(n_) + " bytes, no end of central directory)");
            fail("bad magic: not a ZIP (.npz) archive");
        }
        const std::size_t lowest = n_ - 22 > 65535 ? n_ - 22 - 65535 : 0;
        for (std::size_t at = n_ - 22 + 1; at-- > lowest;)
            if (le(at, 4) == zip_end_sig && le(at + 20, 2) <= n_ - at - 22) return at;
        if (le(0, 4) == zip_local_sig) fail("truncated archive: no end of central directory record");
        fail("bad magic: not a ZIP (.npz) archive");
    }

    /// One central directory entry at `at`: reads its member and returns the next entry's offset.
    std::size_t member(NpzFile& f, std::size_t at, std::size_t cd_end, std::size_t cd_off) {
        if (cd_end - at < 46 || le(at, 4) != zip_central_sig) fail("corrupt central directory (entry " + std::to_string(f.arrays.size()) + ")");
        const auto flags = le(at + 8, 2), method = le(at + 10, 2);
        const auto crc = static_cast<std::uint32_t>(le(at + 16, 4));
        std::uint64_t csize = le(at + 20, 4), usize = le(at + 24, 4), off = le(at + 42, 4);
        const auto nlen = static_cast<std::size_t>(le(at + 28, 2)), xlen = static_cast<std::size_t>(le(at + 30, 2)),
                   clen = static_cast<std::size_t>(le(at + 32, 2));
        if (cd_end - at - 46 < nlen + xlen + clen) fail("corrupt central directory (entry " + std::to_string(f.arrays.size()) + " is cut off)");
        const std::string name(reinterpret_cast<const char*>(p_ + at + 46), nlen);
        const std::string who = "member '" + NpyHeaderParser::printable(name) + "'";
        // ZIP64 extended information (header id 1): the 8-byte fields whose 4-byte ones are all ones.
        std::size_t x = at + 46 + nlen;
        const std::size_t xend = x + xlen;
        while (xend - x >= 4) {
            const auto id = le(x, 2), sz = static_cast<std::size_t>(le(x + 2, 2));
            if (sz > xend - x - 4) fail(who + ": corrupt extra field");
            if (id == 1) {
                std::size_t q = x + 4;
                const std::size_t qe = q + sz;
                for (std::uint64_t* v : {&usize, &csize, &off}) {
                    if (*v != 0xFFFFFFFFu) continue;
                    if (qe - q < 8) fail(who + ": ZIP64 extra field too short");
                    *v = le(q, 8);
                    q += 8;
                }
            }
            x += 4 + sz;
        }
        if (flags & 1u) fail(who + " is encrypted (not supported)");
        if (method != 0 && method != 8)
            fail(who + ": compression method " + std::to_string(method) + method_name(method) + " is not supported (stored and deflate are)");
        if (off > cd_off || cd_off - off < 30 || le(static_cast<std::size_t>(off), 4) != zip_local_sig)
            fail(who + ": no local header at offset " + std::to_string(off));
        const auto lo = static_cast<std::size_t>(off);
        const std::size_t data = lo + 30 + static_cast<std::size_t>(le(lo + 26, 2)) + static_cast<std::size_t>(le(lo + 28, 2));
        if (data > cd_off || csize > cd_off - data)
            fail("truncated archive: " + who + " claims " + std::to_string(csize) + " bytes of data at offset " + std::to_string(data) +
                 ", the central directory starts at " + std::to_string(cd_off));
        if (method == 0 && csize != usize)
            fail(who + ": stored with " + std::to_string(csize) + " bytes but claims " + std::to_string(usize) + " uncompressed");
        // Deflate expands a bit into at most 129 bytes (a 258-byte match in 2 bits): anything more is a lie.
        if (method == 8 && usize / 1032 > csize + 1)
            fail(who + ": claims " + std::to_string(usize) + " bytes from " + std::to_string(csize) + " compressed (more than deflate can expand)");
        std::string out;
        const auto* in = p_ + data;
        if (method == 0) {
            out.assign(reinterpret_cast<const char*>(in), static_cast<std::size_t>(csize));
        } else {
            out.resize(static_cast<std::size_t>(usize));
            inflate(in, static_cast<std::size_t>(csize), reinterpret_cast<unsigned char*>(&out[0]), out.size(), src_ + ": " + who);
        }
        const std::uint32_t got = crc32(out.data(), out.size());
        if (got != crc) fail(who + ": CRC mismatch (the archive says " + hex(crc) + ", the data gives " + hex(got) + ")");
        if (name.size() < 4 || name.compare(name.size() - 4, 4, ".npy") != 0) fail(who + " is not a .npy array");
        const std::string key = name.substr(0, name.size() - 4);
        if (key.empty()) fail(who + " has an empty array name");
        if (f.has(key)) fail(who + " appears twice");
        f.arrays.emplace_back(key, parse_npy(out, src_ + ": " + who));
        return at + 46 + nlen + xlen + clen;
    }

    static std::string method_name(std::uint64_t m) {
        switch (m) {
        case 9: return " (deflate64)";
        case 12: return " (bzip2)";
        case 14: return " (lzma)";
        case 93: return " (zstd)";
        case 95: return " (xz)";
        default: return "";
        }
    }
    static std::string hex(std::uint32_t v) {
        char b[16];
        std::snprintf(b, sizeof b, "0x%08x", static_cast<unsigned>(v));
        return b;
    }

    const unsigned char* p_;
    std::size_t n_;
    const std::string& src_;
};

inline void zip_put(std::string& s, std::uint64_t v, int bytes) {
    for (int k = 0; k < bytes; ++k) s += static_cast<char>(static_cast<unsigned char>(v >> (8 * k)));
}

} // namespace detail

/// Parses the bytes of an .npz archive; source names it in errors.
inline NpzFile parse_npz(std::string_view bytes, const std::string& source) { return detail::NpzReader(bytes, source).read(); }

/// Reads an .npz archive (np.savez or np.savez_compressed).
inline NpzFile read_npz(const std::string& path) { return parse_npz(detail::read_file(path, "read_npz"), path); }

/// The bytes of an .npz archive holding the named arrays (stored, uncompressed); names are
/// given without ".npy", non-empty and distinct.
inline std::string npz_bytes(const std::vector<std::pair<std::string, NpyArray>>& arrays, const NpzOptions& options = {}) {
    using detail::zip_put;
    constexpr std::uint64_t all4 = 0xFFFFFFFFu;
    std::string out, cd;
    for (std::size_t i = 0; i < arrays.size(); ++i) {
        const std::string& key = arrays[i].first;
        if (key.empty()) throw value_error("npz_bytes: array #" + std::to_string(i) + " has an empty name");
        if (key.size() > 65531) throw value_error("npz_bytes: array #" + std::to_string(i) + " has a name longer than 65531 bytes");
        for (std::size_t j = 0; j < i; ++j)
            if (arrays[j].first == key) throw value_error("npz_bytes: array name '" + key + "' is used twice");
        const std::string name = key + ".npy";
        const std::string data = npy_bytes(arrays[i].second);
        const std::uint32_t crc = crc32(data.data(), data.size());
        const std::uint64_t size = data.size(), off = out.size();
        const bool big = options.zip64 || size >= all4 || off >= all4;
        const std::uint16_t version = big ? 45 : 20;
        // Local header: the sizes go into its ZIP64 field when they or the offset need one.
        zip_put(out, detail::zip_local_sig, 4), zip_put(out, version, 2), zip_put(out, 0, 2), zip_put(out, 0, 2);
        zip_put(out, 0, 2), zip_put(out, 0x21, 2);  // 1980-01-01 00:00: a reproducible file
        zip_put(out, crc, 4), zip_put(out, big ? all4 : size, 4), zip_put(out, big ? all4 : size, 4);
        zip_put(out, name.size(), 2), zip_put(out, big ? 20 : 0, 2);
        out += name;
        if (big) zip_put(out, 1, 2), zip_put(out, 16, 2), zip_put(out, size, 8), zip_put(out, size, 8);
        out += data;
        zip_put(cd, detail::zip_central_sig, 4), zip_put(cd, version, 2), zip_put(cd, version, 2), zip_put(cd, 0, 2), zip_put(cd, 0, 2);
        zip_put(cd, 0, 2), zip_put(cd, 0x21, 2), zip_put(cd, crc, 4);
        zip_put(cd, big ? all4 : size, 4), zip_put(cd, big ? all4 : size, 4);
        zip_put(cd, name.size(), 2), zip_put(cd, big ? 28 : 0, 2), zip_put(cd, 0, 2), zip_put(cd, 0, 2), zip_put(cd, 0, 2);
        zip_put(cd, 0, 4), zip_put(cd, big ? all4 : off, 4);
        cd += name;
        if (big) zip_put(cd, 1, 2), zip_put(cd, 24, 2), zip_put(cd, size, 8), zip_put(cd, size, 8), zip_put(cd, off, 8);
    }
    const std::uint64_t cd_off = out.size(), cd_size = cd.size(), n = arrays.size();
    out += cd;
    const bool big = options.zip64 || n >= 0xFFFFu || cd_off >= all4 || cd_size >= all4;
    if (big) {
        const std::uint64_t rec = out.size();
        zip_put(out, detail::zip64_end_sig, 4), zip_put(out, 44, 8), zip_put(out, 45, 2), zip_put(out, 45, 2);
        zip_put(out, 0, 4), zip_put(out, 0, 4), zip_put(out, n, 8), zip_put(out, n, 8), zip_put(out, cd_size, 8), zip_put(out, cd_off, 8);
        zip_put(out, detail::zip64_locator_sig, 4), zip_put(out, 0, 4), zip_put(out, rec, 8), zip_put(out, 1, 4);
    }
    zip_put(out, detail::zip_end_sig, 4), zip_put(out, 0, 2), zip_put(out, 0, 2);
    zip_put(out, big ? 0xFFFFu : n, 2), zip_put(out, big ? 0xFFFFu : n, 2);
    zip_put(out, big ? all4 : cd_size, 4), zip_put(out, big ? all4 : cd_off, 4), zip_put(out, 0, 2);
    return out;
}

/// Writes an .npz archive of the named arrays, atomically (a temporary file, then a rename).
inline void write_npz(const std::string& path, const std::vector<std::pair<std::string, NpyArray>>& arrays, const NpzOptions& options = {}) {
    detail::write_file_atomic(path, npz_bytes(arrays, options), "write_npz");
}

} // namespace tapir::io
