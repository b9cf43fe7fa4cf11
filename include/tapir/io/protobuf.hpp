#pragma once
/// A minimal protocol-buffers wire-format reader and writer, enough for ONNX files (io/onnx.hpp)
/// without a protobuf library. Wire format as specified in
/// https://protobuf.dev/programming-guides/encoding/ : a message is a sequence of fields, each a
/// varint key (the field number shifted left by 3, or-ed with the wire type) and a value: varint (type 0), fixed64 (1),
/// length-delimited bytes (2, also strings, sub-messages and packed repeated fields) or fixed32 (5).
/// Groups (3, 4) are obsolete and refused.
///
/// The reader never reads past its buffer: every length is checked against what is left, varints
/// longer than 10 bytes or overflowing 64 bits are refused, and nesting is limited (kMaxDepth), so
/// a hostile file gives a format_error naming the offset, not a crash.
///
///     tapir::io::pb::Writer w;
///     w.varint_field(1, 8);                     // ir_version
///     w.bytes_field(7, graph_bytes);           // a sub-message
///     tapir::io::pb::Reader r(w.data(), "model.onnx");
///     while (r.next()) { if (r.field() == 1) v = r.varint(); else r.skip(); }

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "../error.hpp"

namespace tapir {
namespace io {
namespace pb {

enum class WireType : std::uint8_t { varint = 0, fixed64 = 1, bytes = 2, start_group = 3, end_group = 4, fixed32 = 5 };

/// Deepest message nesting the readers built on Reader accept (ONNX graphs nest in attributes).
constexpr int kMaxDepth = 32;

/// Appends fields to a byte string. Field numbers must be in [1, 2^29 - 1].
class Writer {
public:
    void raw_varint(std::uint64_t v) {
        while (v >= 0x80) {
            buf_.push_back(static_cast<char>(static_cast<unsigned char>(v | 0x80)));
            v >>= 7;
        }
        buf_.push_back(static_cast<char>(static_cast<unsigned char>(v)));
    }
    void key(std::uint32_t field, WireType wt) {
        if (field == 0 || field >= (1u << 29)) throw value_error("protobuf: field number " + std::to_string(field) + " out of range");
        raw_varint((static_cast<std::uint64_t>(field) << 3) | static_cast<std::uint64_t>(wt));
    }
    /// int32/int64/uint64/bool/enum: negative int64 values take 10 bytes (two's complement), as protobuf does.
    void varint_field(std::uint32_t field, std::int64_t v) {
        key(field, WireType::varint);
        raw_varint(static_cast<std::uint64_t>(v));
    }
    void fixed32_field(std::uint32_t field, std::uint32_t v) {
        key(field, WireType::fixed32);
        put_le(v, 4);
    }
    void fixed64_field(std::uint32_t field, std::uint64_t v) {
        key(field, WireType::fixed64);
        put_le(v, 8);
    }
    void float_field(std::uint32_t field, float f) {
        std::uint32_t u;
        std::memcpy(&u, &f, 4);
        fixed32_field(field, u);
    }
    void bytes_field(std::uint32_t field, const std::string& b) {
        key(field, WireType::bytes);
        raw_varint(b.size());
        buf_ += b;
    }
    /// A sub-message, serialised by the caller into its own Writer.
    void message_field(std::uint32_t field, const Writer& sub) { bytes_field(field, sub.data()); }
    void append_le32(std::uint32_t v) { put_le(v, 4); }
    void append_le64(std::uint64_t v) { put_le(v, 8); }

    const std::string& data() const noexcept { return buf_; }
    std::string take() { return std::move(buf_); }

private:
    void put_le(std::uint64_t v, int n) {
        for (int i = 0; i < n; ++i) buf_.push_back(static_cast<char>(static_cast<unsigned char>((v >> (8 * i)) & 0xff)));
    }
    std::string buf_;
};

/// Reads the fields of one message from [begin, end). Call next() for each field, then exactly
/// one of varint(), fixed32(), fixed64(), bytes() or skip() for its value.
class Reader {
public:
    Reader(const char* data, std::size_t size, const std::string& source, std::size_t base = 0)
        : p_(data), end_(data + size), start_(data), base_(base), src_(&source) {}
    Reader(const std::string& data, const std::string& source) : Reader(data.data(), data.size(), source) {}

    /// Reads the next key; false at the end of the message.
    bool next() {
        if (p_ == end_) return false;
        const std::size_t at = offset();
        const std::uint64_t k = raw_varint();
        const std::uint64_t f = k >> 3;
        const unsigned wt = static_cast<unsigned>(k & 7);
        if (f == 0 || f >= (1u << 29)) fail(at, "invalid field number " + std::to_string(f));
        if (wt == 3 || wt == 4) fail(at, "groups (wire types 3 and 4) are not supported");
        if (wt > 5) fail(at, "invalid wire type " + std::to_string(wt));
        field_ = static_cast<std::uint32_t>(f);
        wt_ = static_cast<WireType>(wt);
        return true;
    }
    std::uint32_t field() const noexcept { return field_; }
    WireType wire_type() const noexcept { return wt_; }
    /// Byte offset of the read position from the start of the file (for messages).
    std::size_t offset() const noexcept { return base_ + static_cast<std::size_t>(p_ - start_); }

    std::uint64_t varint() {
        expect(WireType::varint);
        return raw_varint();
    }
    std::int64_t int64() { return static_cast<std::int64_t>(varint()); }
    std::uint32_t fixed32() {
        expect(WireType::fixed32);
        return static_cast<std::uint32_t>(le(4));
    }
    std::uint64_t fixed64() {
        expect(WireType::fixed64);
        return le(8);
    }
    float float32() {
        const std::uint32_t u = fixed32();
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    /// A length-delimited value: the bytes stay in the buffer; returns a Reader over them (for
    /// sub-messages and packed fields) whose offsets continue this one's.
    Reader sub() {
        std::size_t n = 0;
        const char* b = bytes_view(n);
        return Reader(b, n, *src_, base_ + static_cast<std::size_t>(b - start_));
    }
    std::string bytes() {
        std::size_t n = 0;
        const char* b = bytes_view(n);
        return std::string(b, n);
    }
    const char* bytes_view(std::size_t& n) {
        expect(WireType::bytes);
        const std::size_t at = offset();
        const std::uint64_t len = raw_varint();
        if (len > static_cast<std::uint64_t>(end_ - p_))
            fail(at, "length " + std::to_string(len) + " runs past the end (" + std::to_string(end_ - p_) + " bytes left): truncated file");
        const char* b = p_;
        n = static_cast<std::size_t>(len);
        p_ += n;
        return b;
    }
    /// Skips the current field's value, whatever its type.
    void skip() {
        switch (wt_) {
        case WireType::varint: raw_varint(); break;
        case WireType::fixed64: le(8); break;
        case WireType::fixed32: le(4); break;
        case WireType::bytes: {
            std::size_t n = 0;
            bytes_view(n);
            break;
        }
        default: fail(offset(), "cannot skip a group");
        }
    }
    bool at_end() const noexcept { return p_ == end_; }
    /// The next raw varint of a packed field (no key).
    std::uint64_t raw_varint() {
        const std::size_t at = offset();
        std::uint64_t v = 0;
        for (int i = 0; i < 10; ++i) {
            if (p_ == end_) fail(at, "varint runs past the end: truncated file");
            const auto b = static_cast<unsigned char>(*p_++);
            if (i == 9 && b > 1) fail(at, "varint overflows 64 bits");
            v |= static_cast<std::uint64_t>(b & 0x7f) << (7 * i);
            if (!(b & 0x80)) return v;
        }
        fail(at, "varint longer than 10 bytes");
    }
    /// The next n raw little-endian bytes of a packed fixed-width field.
    std::uint64_t le(int n) {
        if (end_ - p_ < n) fail(offset(), "fixed-width value runs past the end: truncated file");
        std::uint64_t v = 0;
        for (int i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p_[i])) << (8 * i);
        p_ += n;
        return v;
    }
    [[noreturn]] void fail(std::size_t at, const std::string& what) const {
        throw format_error(*src_ + ": protobuf: " + what + " (byte " + std::to_string(at) + ")");
    }
    const std::string& source() const noexcept { return *src_; }

private:
    void expect(WireType wt) const {
        if (wt_ != wt)
            fail(offset(), "field " + std::to_string(field_) + " has wire type " + std::to_string(static_cast<int>(wt_)) + ", expected " +
                               std::to_string(static_cast<int>(wt)));
    }
    const char* p_;
    const char* end_;
    const char* start_;
    std::size_t base_;
    const std::string* src_;
    std::uint32_t field_ = 0;
    WireType wt_ = WireType::varint;
};

} // namespace pb
} // namespace io
} // namespace tapir
