#pragma once
/// NumPy .npy files: read and write arrays of float32, float64, int32, int64 and bool.
///
/// Format (NumPy Enhancement Proposal 1; numpy/lib/format.py):
///   magic: the byte 0x93 then "NUMPY"; u8 major, u8 minor version (1.0, 2.0 or 3.0);
///   header length: u16 little-endian for version 1, u32 for versions 2 and 3;
///   header: a Python dict literal {'descr': '...', 'fortran_order': bool, 'shape': (...)}
///   (latin-1 for versions 1 and 2, UTF-8 for 3) padded with spaces and ended by a newline;
///   then the array data, numel x itemsize bytes, in C (row-major) or Fortran (column-major) order.
/// descr is a byte order ('<' little, '>' big, '|' not applicable, '=' native) and a type code:
/// f4, f8, i4, i8, b1 are read; any other (complex128, float16, uint8, str, object, structured
/// dtypes) is refused with a format_error that names it.
///
/// NpyArray keeps the values in the host's byte order and C order, whatever the file had.
/// Conversions (NpyArray::values, NpyArray::to_tensor) are exact or throw a value_error naming
/// the element: an integer that float (above 2^24) or double (above 2^53) cannot hold exactly
/// is refused rather than rounded; read it with values of std::int64_t instead. float64 to
/// float32 rounds as any float conversion does (overflow to inf is refused).
///
/// Shapes have rank 0 to 4 (tapir's tensor limit); a file of higher rank is refused with a
/// message saying so. Writing emits version 1.0, little-endian, C order, the header padded so
/// that the data starts on a 64-byte boundary (as NumPy does), through a temporary file and a
/// rename.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../tensor/shape.hpp"
#include "../tensor/tensor.hpp"
#include "detail/file.hpp"

namespace tapir::io {

/// The element types tapir reads from and writes to .npy files.
enum class NpyType : std::uint8_t { float32, float64, int32, int64, boolean };

/// NumPy's name of the type ("float32", ..., "bool").
inline const char* npy_type_name(NpyType t) noexcept {
    switch (t) {
    case NpyType::float32: return "float32";
    case NpyType::float64: return "float64";
    case NpyType::int32: return "int32";
    case NpyType::int64: return "int64";
    case NpyType::boolean: return "bool";
    }
    return "?";
}

/// Bytes per element.
inline std::size_t npy_item_size(NpyType t) noexcept {
    switch (t) {
    case NpyType::float32:
    case NpyType::int32: return 4;
    case NpyType::float64:
    case NpyType::int64: return 8;
    case NpyType::boolean: return 1;
    }
    return 0;
}

namespace detail {

template <class V>
constexpr bool npy_supported_v = std::is_same<V, float>::value || std::is_same<V, double>::value ||
                                 std::is_same<V, std::int32_t>::value || std::is_same<V, std::int64_t>::value ||
                                 std::is_same<V, bool>::value;

template <class V>
constexpr NpyType npy_type_of() {
    static_assert(npy_supported_v<V>, "NpyArray holds float, double, std::int32_t, std::int64_t or bool");
    return std::is_same<V, float>::value          ? NpyType::float32
           : std::is_same<V, double>::value       ? NpyType::float64
           : std::is_same<V, std::int32_t>::value ? NpyType::int32
           : std::is_same<V, std::int64_t>::value ? NpyType::int64
                                                  : NpyType::boolean;
}

inline bool host_little_endian() noexcept {
    const std::uint16_t one = 1;
    unsigned char b;
    std::memcpy(&b, &one, 1);
    return b == 1;
}

inline std::string npy_int_text(std::int64_t v) { return std::to_string(v); }

/// Converts one value exactly (integers, bool) or as a float conversion (between float and
/// double); false when the value does not fit V.
template <class V, class S>
bool npy_convert(S s, V& out) {
    if constexpr (std::is_same<V, bool>::value) {
        if (!(s == S(0) || s == S(1))) return false;
        out = s == S(1);
        return true;
    } else if constexpr (std::is_same<S, bool>::value) {
        out = s ? V(1) : V(0);
        return true;
    } else if constexpr (std::is_floating_point<V>::value && std::is_floating_point<S>::value) {
        out = static_cast<V>(s);
        return !(std::isfinite(s) && !std::isfinite(out));
    } else if constexpr (std::is_floating_point<V>::value) {
        // integer -> float: exact or refused. 2^63 is exactly representable in both float types.
        const V v = static_cast<V>(s);
        if (!(v >= -V(9223372036854775808.0) && v < V(9223372036854775808.0))) return false;
        if (static_cast<std::int64_t>(v) != static_cast<std::int64_t>(s)) return false;
        out = v;
        return true;
    } else if constexpr (std::is_floating_point<S>::value) {
        // float -> integer: integral and in range.
        if (!(s >= static_cast<S>(std::numeric_limits<V>::min()) && s < -static_cast<S>(std::numeric_limits<V>::min())))
            return false;
        if (std::trunc(s) != s) return false;
        out = static_cast<V>(s);
        return true;
    } else {
        const auto w = static_cast<std::int64_t>(s);
        if (w < static_cast<std::int64_t>(std::numeric_limits<V>::min()) ||
            w > static_cast<std::int64_t>(std::numeric_limits<V>::max()))
            return false;
        out = static_cast<V>(w);
        return true;
    }
}

template <class S>
std::string npy_value_text(S s) {
    if constexpr (std::is_same<S, bool>::value) return s ? "True" : "False";
    else if constexpr (std::is_floating_point<S>::value) return tapir::detail::error_number(static_cast<double>(s));
    else return std::to_string(static_cast<std::int64_t>(s));
}

} // namespace detail

/// An array read from or to be written to a .npy file: its element type, shape (rank 0 to 4)
/// and values in C order and the host's byte order. source names it in errors.
class NpyArray {
public:
    NpyArray() = default;
    /// Zero-filled.
    NpyArray(NpyType type, const Shape& shape, std::string source = "array")
        : type_(type), shape_(shape), source_(std::move(source)), bytes_(shape.numel() * npy_item_size(type)) {}

    /// A copy of n = shape.numel() values of V (float, double, std::int32_t, std::int64_t or bool).
    template <class V>
    static NpyArray from(const Shape& shape, const V* values, std::size_t n) {
        if (n != shape.numel())
            throw shape_error("NpyArray::from: " + std::to_string(n) + " values given for shape " + shape.str());
        NpyArray a(detail::npy_type_of<V>(), shape);
        if (n) std::memcpy(a.bytes_.data(), values, n * sizeof(V));
        return a;
    }
    template <class V>
    static NpyArray from(const Shape& shape, const std::vector<V>& values) {
        if constexpr (std::is_same<V, bool>::value) {
            std::vector<unsigned char> b(values.begin(), values.end());
            NpyArray a(NpyType::boolean, shape);
            if (b.size() != shape.numel())
                throw shape_error("NpyArray::from: " + std::to_string(b.size()) + " values given for shape " + shape.str());
            if (!b.empty()) std::memcpy(a.bytes_.data(), b.data(), b.size());
            return a;
        } else {
            return from(shape, values.data(), values.size());
        }
    }
    /// A tensor's values as float32 or float64.
    template <class T>
    static NpyArray from(const Tensor<T>& t) {
        return from(t.shape(), t.data(), t.size());
    }

    NpyType type() const noexcept { return type_; }
    const Shape& shape() const noexcept { return shape_; }
    std::size_t rank() const noexcept { return shape_.rank(); }
    std::size_t size() const noexcept { return bytes_.size() / npy_item_size(type_); }
    const std::string& source() const noexcept { return source_; }
    /// The values' bytes: size() x npy_item_size(type()), host byte order, C order.
    const unsigned char* bytes() const noexcept { return bytes_.data(); }
    unsigned char* bytes() noexcept { return bytes_.data(); }

    /// The values as V, converted exactly: integers to floats only when representable (int64
    /// labels above 2^53 stay exact as std::int64_t), floats to integers only when integral and
    /// in range, anything to bool only from 0 and 1, float64 to float32 rounding. A value that
    /// does not convert throws value_error naming the source, the element and the value.
    template <class V>
    std::vector<V> values() const {
        static_assert(detail::npy_supported_v<V>, "NpyArray::values: V is float, double, std::int32_t, std::int64_t or bool");
        if constexpr (std::is_same<V, bool>::value) {
            std::unique_ptr<bool[]> tmp(new bool[size()]);  // std::vector<bool> has no data()
            convert_into(tmp.get());
            return std::vector<bool>(tmp.get(), tmp.get() + size());
        } else {
            std::vector<V> out(size());
            convert_into(out.data());
            return out;
        }
    }

    /// The array as a tensor of its shape; conversions as in values().
    template <class T>
    Tensor<T> to_tensor() const {
        Tensor<T> t(shape_);
        convert_into(t.data());
        return t;
    }

private:
    template <class V, class S>
    void convert_from(V* out) const {
        const std::size_t n = size();
        const unsigned char* p = bytes_.data();
        for (std::size_t i = 0; i < n; ++i) {
            S s;
            if constexpr (std::is_same<S, bool>::value) s = p[i] != 0;
            else std::memcpy(&s, p + i * sizeof(S), sizeof(S));
            if (!detail::npy_convert(s, out[i]))
                throw value_error(source_ + ": element " + std::to_string(i) + " (" + detail::npy_value_text(s) + ") of the " +
                                  npy_type_name(type_) + " array is not exactly representable as " +
                                  npy_type_name(detail::npy_type_of<V>()) +
                                  (std::is_floating_point<V>::value ? " (read it as int64 values instead)" : ""));
        }
    }
    template <class V>
    void convert_into(V* out) const {
        switch (type_) {
        case NpyType::float32: return convert_from<V, float>(out);
        case NpyType::float64: return convert_from<V, double>(out);
        case NpyType::int32: return convert_from<V, std::int32_t>(out);
        case NpyType::int64: return convert_from<V, std::int64_t>(out);
        case NpyType::boolean: return convert_from<V, bool>(out);
        }
    }

    NpyType type_ = NpyType::float64;
    Shape shape_;
    std::string source_ = "array";
    std::vector<unsigned char> bytes_;
};

namespace detail {

/// The dict of a .npy header: a restricted Python literal parser (strings, True/False,
/// integers, tuples), as numpy/lib/format.py accepts through ast.literal_eval.
class NpyHeaderParser {
public:
    NpyHeaderParser(std::string_view text, const std::string& source) : p_(text.data()), e_(text.data() + text.size()), src_(source) {}

    struct Result {
        std::string descr;
        bool fortran = false;
        std::vector<std::uint64_t> shape;
    };

    Result parse() {
        Result r;
        bool have_descr = false, have_fortran = false, have_shape = false;
        skip_ws();
        expect('{');
        for (;;) {
            skip_ws();
            if (peek() == '}') {
                ++p_;
                break;
            }
            const std::string key = string_literal("a key");
            skip_ws();
            expect(':');
            skip_ws();
            if (key == "descr") {
                if (have_descr) fail("key 'descr' appears twice");
                if (peek() == '[')
                    throw format_error(src_ + ": structured dtype (a list of fields in 'descr') is not supported; save each field as its own array");
                r.descr = string_literal("the 'descr' string");
                have_descr = true;
            } else if (key == "fortran_order") {
                if (have_fortran) fail("key 'fortran_order' appears twice");
                r.fortran = boolean();
                have_fortran = true;
            } else if (key == "shape") {
                if (have_shape) fail("key 'shape' appears twice");
                r.shape = tuple();
                have_shape = true;
            } else {
                fail("unexpected key '" + printable(key) + "' (a .npy header has 'descr', 'fortran_order' and 'shape')");
            }
            skip_ws();
            if (peek() == ',') {
                ++p_;
                continue;
            }
            if (peek() == '}') {
                ++p_;
                break;
            }
            fail("expected ',' or '}' after the value of '" + key + "'");
        }
        skip_ws();
        if (p_ != e_) fail("text after the closing '}'");
        if (!have_descr) fail("no 'descr' key");
        if (!have_fortran) fail("no 'fortran_order' key");
        if (!have_shape) fail("no 'shape' key");
        return r;
    }

    static std::string printable(std::string_view s) {
        std::string out;
        for (std::size_t i = 0; i < s.size() && i < 40; ++i) {
            const auto c = static_cast<unsigned char>(s[i]);
            out += (c < 0x20 || c >= 0x7F) ? '?' : static_cast<char>(c);
        }
        if (s.size() > 40) out += "...";
        return out;
    }

private:
    [[noreturn]] void fail(const std::string& what) const { throw format_error(src_ + ": bad .npy header dict: " + what); }
    char peek() const { return p_ < e_ ? *p_ : '\0'; }
    void skip_ws() {
        while (p_ < e_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
    }
    void expect(char c) {
        if (peek() != c || p_ == e_) fail(std::string("expected '") + c + "'" + (p_ == e_ ? " at the end" : ", found '" + printable(std::string_view(p_, 1)) + "'"));
        ++p_;
    }
    std::string string_literal(const char* what) {
        const char q = peek();
        if (p_ == e_ || (q != '\'' && q != '"')) fail(std::string("expected ") + what + " in quotes");
        const char* b = ++p_;
        while (p_ < e_ && *p_ != q) {
            if (*p_ == '\\') fail("escape sequences in strings are not supported");
            ++p_;
        }
        if (p_ == e_) fail("unterminated string");
        std::string s(b, static_cast<std::size_t>(p_ - b));
        ++p_;
        return s;
    }
    bool boolean() {
        if (e_ - p_ >= 4 && std::memcmp(p_, "True", 4) == 0) {
            p_ += 4;
            return true;
        }
        if (e_ - p_ >= 5 && std::memcmp(p_, "False", 5) == 0) {
            p_ += 5;
            return false;
        }
        fail("'fortran_order' is not True or False");
    }
    std::uint64_t integer() {
        if (!(peek() >= '0' && peek() <= '9')) fail("a dimension of 'shape' is not a non-negative integer");
        std::uint64_t v = 0;
        while (p_ < e_ && *p_ >= '0' && *p_ <= '9') {
            const auto d = static_cast<std::uint64_t>(*p_ - '0');
            if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10) fail("a dimension of 'shape' does not fit 64 bits");
            v = v * 10 + d;
            ++p_;
        }
        if (peek() == 'L') ++p_;  // Python 2's long literal, in files written by old NumPy
        return v;
    }
    std::vector<std::uint64_t> tuple() {
        if (peek() != '(') fail("'shape' is not a tuple");
        ++p_;
        std::vector<std::uint64_t> dims;
        for (;;) {
            skip_ws();
            if (peek() == ')') {
                ++p_;
                return dims;
            }
            if (dims.size() == 64) fail("'shape' has more than 64 dimensions");
            dims.push_back(integer());
            skip_ws();
            if (peek() == ',') {
                ++p_;
                continue;
            }
            if (peek() != ')') fail("expected ',' or ')' in 'shape'");
        }
    }

    const char* p_;
    const char* e_;
    const std::string& src_;
};

/// NumPy's name of a type code this reader refuses, for the message.
inline std::string npy_unsupported_name(char kind, unsigned size) {
    const std::string bits = std::to_string(size * 8);
    switch (kind) {
    case 'f': return size == 2 ? "float16" : size == 16 || size == 12 ? "longdouble" : "float" + bits;
    case 'c': return size == 32 || size == 24 ? "clongdouble" : "complex" + bits;
    case 'i': return "int" + bits;
    case 'u': return "uint" + bits;
    case 'b': return "bool of " + std::to_string(size) + " bytes";
    case 'U': return "str (unicode)";
    case 'S':
    case 'a': return "bytes";
    case 'V': return "void (raw records)";
    case 'M': return "datetime64";
    case 'm': return "timedelta64";
    default: return "unknown";
    }
}

struct NpyDescr {
    NpyType type = NpyType::float64;
    bool swap = false;  // file order differs from the host's
};

inline NpyDescr npy_parse_descr(const std::string& d, const std::string& src) {
    const std::string shown = "descr '" + NpyHeaderParser::printable(d) + "'";
    std::size_t i = 0;
    char order = '=';
    if (i < d.size() && (d[i] == '<' || d[i] == '>' || d[i] == '|' || d[i] == '=')) order = d[i++];
    if (i < d.size() && d[i] == 'O')
        throw format_error(src + ": object arrays (" + shown +
                           ") hold pickled Python objects and cannot be read; save a numeric dtype");
    if (i >= d.size()) throw format_error(src + ": bad .npy header dict: empty type in " + shown);
    const char kind = d[i++];
    unsigned size = 0;
    bool digits = false;
    for (; i < d.size() && d[i] >= '0' && d[i] <= '9' && size < 100000; ++i, digits = true) size = size * 10 + static_cast<unsigned>(d[i] - '0');
    if (i != d.size() && (kind == 'M' || kind == 'm')) i = d.size();  // datetime64[ns]: named below
    if (i != d.size() || (!digits && kind != '?'))
        throw format_error(src + ": unsupported dtype (" + shown + "); tapir reads float32, float64, int32, int64 and bool");
    NpyDescr r;
    if (kind == 'f' && size == 4) r.type = NpyType::float32;
    else if (kind == 'f' && size == 8) r.type = NpyType::float64;
    else if (kind == 'i' && size == 4) r.type = NpyType::int32;
    else if (kind == 'i' && size == 8) r.type = NpyType::int64;
    else if ((kind == 'b' && size == 1) || (kind == '?' && (size == 1 || !digits))) r.type = NpyType::boolean;
    else
        throw format_error(src + ": unsupported dtype " + npy_unsupported_name(kind, size) + " (" + shown +
                           "); tapir reads float32, float64, int32, int64 and bool");
    if (order == '|' && npy_item_size(r.type) > 1)
        throw format_error(src + ": bad .npy header dict: " + shown + " gives no byte order for a " +
                           std::to_string(npy_item_size(r.type)) + "-byte type");
    const bool file_little = order == '<' || (order == '=' && host_little_endian());
    r.swap = npy_item_size(r.type) > 1 && order != '|' && file_little != host_little_endian();
    return r;
}

inline std::string npy_shape_text(const std::vector<std::uint64_t>& dims) {
    std::string s = "(";
    for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + (dims.size() == 1 ? ",)" : ")");
}

/// Column-major src to row-major dst, rank 0..4, items of w bytes.
inline void npy_fortran_to_c(const unsigned char* src, unsigned char* dst, const Shape& s, std::size_t w) {
    const std::size_t r = s.rank();
    if (r < 2) {
        std::memcpy(dst, src, s.numel() * w);
        return;
    }
    std::size_t d[4] = {1, 1, 1, 1}, fs[4] = {0, 0, 0, 0};
    // Pad on the left so that the last axis is always axis 3 (the fastest in C order).
    for (std::size_t k = 0; k < r; ++k) d[4 - r + k] = s[k];
    std::size_t stride = 1;
    for (std::size_t k = 4 - r; k < 4; ++k) {
        fs[k] = stride;
        stride *= d[k];
    }
    std::size_t o = 0;
    for (std::size_t a = 0; a < d[0]; ++a)
        for (std::size_t b = 0; b < d[1]; ++b)
            for (std::size_t c = 0; c < d[2]; ++c) {
                const std::size_t base = a * fs[0] + b * fs[1] + c * fs[2];
                for (std::size_t e = 0; e < d[3]; ++e, ++o) std::memcpy(dst + o * w, src + (base + e * fs[3]) * w, w);
            }
}

inline void npy_swap_bytes(unsigned char* p, std::size_t n, std::size_t w) {
    for (std::size_t i = 0; i < n; ++i, p += w)
        for (std::size_t k = 0; k < w / 2; ++k) std::swap(p[k], p[w - 1 - k]);
}

inline std::uint32_t npy_le(const unsigned char* p, std::size_t n) {
    std::uint32_t v = 0;
    for (std::size_t k = 0; k < n; ++k) v |= static_cast<std::uint32_t>(p[k]) << (8 * k);
    return v;
}

} // namespace detail

/// Parses the bytes of a .npy file; source names it in errors. Throws format_error for a bad
/// magic, an unknown version, a truncated file, a bad header dict, an unsupported dtype, a
/// shape of rank above 4 or one whose size overflows or exceeds the data, and bytes after it.
inline NpyArray parse_npy(std::string_view bytes, const std::string& source) {
    const auto* u = reinterpret_cast<const unsigned char*>(bytes.data());
    const std::size_t n = bytes.size();
    if (n < 6 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
        throw format_error(source + ": bad magic: not a .npy file (it does not start with \\x93NUMPY)");
    if (n < 10) throw format_error(source + ": truncated .npy file (" + std::to_string(n) + " bytes, shorter than its preamble)");
    const unsigned major = u[6], minor = u[7];
    if (!((major == 1 || major == 2 || major == 3) && minor == 0))
        throw format_error(source + ": unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                           " (tapir reads 1.0, 2.0 and 3.0)");
    const std::size_t len_size = major == 1 ? 2 : 4;
    if (n < 8 + len_size) throw format_error(source + ": truncated .npy file (" + std::to_string(n) + " bytes, shorter than its preamble)");
    const std::size_t hlen = detail::npy_le(u + 8, len_size);
    const std::size_t start = 8 + len_size;
    if (hlen > n - start)
        throw format_error(source + ": truncated .npy file: the header claims " + std::to_string(hlen) + " bytes, " +
                           std::to_string(n - start) + " follow");
    const auto h = detail::NpyHeaderParser(bytes.substr(start, hlen), source).parse();
    const detail::NpyDescr descr = detail::npy_parse_descr(h.descr, source);
    if (h.shape.size() > max_rank)
        throw format_error(source + ": array of rank " + std::to_string(h.shape.size()) + " (shape " + detail::npy_shape_text(h.shape) +
                           "): tapir tensors have at most rank 4");
    const std::size_t w = npy_item_size(descr.type);
    std::uint64_t numel = 1;
    bool zero = false;
    for (std::uint64_t d : h.shape) zero = zero || d == 0;
    const std::size_t data_size = n - start - hlen;
    if (!zero) {
        for (std::uint64_t d : h.shape) {
            if (numel > std::numeric_limits<std::uint64_t>::max() / w / d)
                throw format_error(source + ": shape " + detail::npy_shape_text(h.shape) + " claims more elements than fit in memory");
            numel *= d;
        }
    } else {
        numel = 0;
    }
    if (numel * w > data_size)
        throw format_error(source + ": truncated .npy file: shape " + detail::npy_shape_text(h.shape) + " of " + npy_type_name(descr.type) +
                           " needs " + std::to_string(numel * w) + " bytes of data, " + std::to_string(data_size) + " follow the header");
    if (numel * w < data_size)
        throw format_error(source + ": " + std::to_string(data_size - numel * w) + " bytes after the data of shape " +
                           detail::npy_shape_text(h.shape) + " (a corrupt or concatenated file)");
    Shape shape;
    for (std::uint64_t d : h.shape) shape.push_back(static_cast<std::size_t>(d));
    NpyArray a(descr.type, shape, source);
    const unsigned char* data = u + start + hlen;
    if (numel) {
        if (h.fortran) detail::npy_fortran_to_c(data, a.bytes(), shape, w);
        else std::memcpy(a.bytes(), data, static_cast<std::size_t>(numel) * w);
        if (descr.swap) detail::npy_swap_bytes(a.bytes(), static_cast<std::size_t>(numel), w);
        if (descr.type == NpyType::boolean)
            for (std::size_t i = 0; i < numel; ++i) a.bytes()[i] = a.bytes()[i] != 0;
    }
    return a;
}

/// Reads a .npy file.
inline NpyArray read_npy_array(const std::string& path) { return parse_npy(detail::read_file(path, "read_npy"), path); }

/// Reads a .npy file into a tensor (integers and bools converted exactly, see NpyArray::values).
template <class T>
Tensor<T> read_npy(const std::string& path) {
    return read_npy_array(path).to_tensor<T>();
}

/// The bytes of a .npy file (version 1.0, little-endian, C order) holding the array.
inline std::string npy_bytes(const NpyArray& a) {
    static const char* descr[] = {"<f4", "<f8", "<i4", "<i8", "|b1"};
    std::string h = "{'descr': '";
    h += descr[static_cast<int>(a.type())];
    h += "', 'fortran_order': False, 'shape': (";
    for (std::size_t i = 0; i < a.rank(); ++i) h += (i ? ", " : "") + std::to_string(a.shape()[i]);
    h += a.rank() == 1 ? ",), }" : "), }";
    // Pad with spaces and a newline so that the data starts on a 64-byte boundary.
    const std::size_t total = (10 + h.size() + 1 + 63) / 64 * 64;
    h.append(total - 10 - h.size() - 1, ' ');
    h += '\n';
    std::string out("\x93NUMPY\x01\x00", 8);
    out += static_cast<char>(h.size() & 0xFF);
    out += static_cast<char>(h.size() >> 8);
    out += h;
    const std::size_t w = npy_item_size(a.type());
    const std::size_t at = out.size();
    out.append(reinterpret_cast<const char*>(a.bytes()), a.size() * w);
    if (!detail::host_little_endian())
        detail::npy_swap_bytes(reinterpret_cast<unsigned char*>(&out[at]), a.size(), w);
    return out;
}

/// Writes an array as a .npy file, atomically (a temporary file, then a rename).
inline void write_npy(const std::string& path, const NpyArray& a) { detail::write_file_atomic(path, npy_bytes(a), "write_npy"); }

/// Writes a tensor as a .npy file of float32 or float64.
template <class T>
void write_npy(const std::string& path, const Tensor<T>& t) {
    write_npy(path, NpyArray::from(t));
}

} // namespace tapir::io
