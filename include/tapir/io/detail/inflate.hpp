#pragma once
/// A small raw-deflate decoder (RFC 1951, DEFLATE Compressed Data Format Specification 1.3):
/// stored, fixed-Huffman and dynamic-Huffman blocks, canonical codes built as in Mark Adler's
/// puff.c; codes of up to 9 bits decode through a lookup table, longer ones one bit at a time. It serves .npz members (ZIP method 8); the output size
/// is known from the archive, so the decoder writes into a buffer of exactly that size and
/// refuses a stream that would write more or less. Every malformed stream throws format_error
/// naming `what` and the problem ("corrupt deflate stream: ...").

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "../../error.hpp"

namespace tapir::io::detail {

class Inflater {
public:
    Inflater(const unsigned char* in, std::size_t in_size, unsigned char* out, std::size_t out_size, const std::string& what)
        : in_(in), in_size_(in_size), out_(out), out_size_(out_size), what_(what) {}

    /// Decodes the whole stream; returns the number of input bytes consumed.
    std::size_t run() {
        bool last = false;
        while (!last) {
            last = bits(1) == 1;
            const unsigned type = bits(2);
            if (type == 0) stored();
            else if (type == 1) fixed();
            else if (type == 2) dynamic();
            else fail("invalid block type 3");
        }
        if (out_pos_ != out_size_)
            fail("the stream ends after " + std::to_string(out_pos_) + " bytes, the archive claims " + std::to_string(out_size_));
        return in_pos_ - static_cast<std::size_t>(bit_cnt_ / 8);
    }

private:
    static constexpr int max_bits = 15;
    static constexpr int max_lcodes = 286;
    static constexpr int max_dcodes = 30;
    static constexpr int fix_lcodes = 288;

    static constexpr int fast_bits = 9;

    struct Huffman {
        short count[max_bits + 1];
        short symbol[fix_lcodes];
        /// Indexed by the next fast_bits input bits: symbol * 16 + code length, 0 when the code
        /// is longer (or absent) and the bit-by-bit decoder decides.
        std::uint16_t fast[1 << fast_bits];
    };

    [[noreturn]] void fail(const std::string& why) const { throw format_error(what_ + ": corrupt deflate stream: " + why); }

    unsigned bits(int need) {
        std::uint64_t v = bit_buf_;
        while (bit_cnt_ < need) {
            if (in_pos_ == in_size_) fail("truncated (the input ends inside a block)");
            v |= static_cast<std::uint64_t>(in_[in_pos_++]) << bit_cnt_;
            bit_cnt_ += 8;
        }
        bit_buf_ = v >> need;
        bit_cnt_ -= need;
        return static_cast<unsigned>(v & ((1u << need) - 1u));
    }

    /// Loads whole bytes into the bit buffer while it has room (at most 56 bits held).
    void refill() {
        while (bit_cnt_ <= 48 && in_pos_ < in_size_) {
            bit_buf_ |= static_cast<std::uint64_t>(in_[in_pos_++]) << bit_cnt_;
            bit_cnt_ += 8;
        }
    }

    void stored() {
        // The rest of the current byte is padding; whole bytes already buffered go back.
        in_pos_ -= static_cast<std::size_t>(bit_cnt_ / 8);
        bit_buf_ = 0;
        bit_cnt_ = 0;
        if (in_size_ - in_pos_ < 4) fail("truncated (a stored block's length is cut off)");
        const unsigned len = in_[in_pos_] | static_cast<unsigned>(in_[in_pos_ + 1]) << 8;
        const unsigned nlen = in_[in_pos_ + 2] | static_cast<unsigned>(in_[in_pos_ + 3]) << 8;
        in_pos_ += 4;
        if (len != (~nlen & 0xFFFFu)) fail("a stored block's length does not match its complement");
        if (in_size_ - in_pos_ < len) fail("truncated (a stored block is cut off)");
        if (out_size_ - out_pos_ < len) overflow();
        if (len) std::memcpy(out_ + out_pos_, in_ + in_pos_, len);
        in_pos_ += len;
        out_pos_ += len;
    }

    [[noreturn]] void overflow() const {
        fail("it inflates to more than the " + std::to_string(out_size_) + " bytes the archive claims");
    }

    int decode(const Huffman& h) {
        if (bit_cnt_ < fast_bits) refill();
        const unsigned e = h.fast[bit_buf_ & ((1u << fast_bits) - 1u)];
        if (e != 0 && static_cast<int>(e & 15u) <= bit_cnt_) {
            bit_buf_ >>= (e & 15u);
            bit_cnt_ -= static_cast<int>(e & 15u);
            return static_cast<int>(e >> 4);
        }
        int code = 0, first = 0, index = 0;
        for (int len = 1; len <= max_bits; ++len) {
            code |= static_cast<int>(bits(1));
            const int count = h.count[len];
            if (code - count < first) return h.symbol[index + (code - first)];
            index += count;
            first += count;
            first <<= 1;
            code <<= 1;
        }
        fail("a code is not in the Huffman table");
    }

    /// Builds a canonical code from lengths; returns 0 for a complete code, above 0 for an
    /// incomplete one, below 0 for an over-subscribed one.
    static int construct(Huffman& h, const short* length, int n) {
        for (auto& e : h.fast) e = 0;
        for (int len = 0; len <= max_bits; ++len) h.count[len] = 0;
        for (int s = 0; s < n; ++s) h.count[length[s]]++;
        if (h.count[0] == n) return 0;
        int left = 1;
        for (int len = 1; len <= max_bits; ++len) {
            left <<= 1;
            left -= h.count[len];
            if (left < 0) return left;
        }
        short offs[max_bits + 1];
        offs[1] = 0;
        for (int len = 1; len < max_bits; ++len) offs[len + 1] = static_cast<short>(offs[len] + h.count[len]);
        for (int s = 0; s < n; ++s)
            if (length[s] != 0) h.symbol[offs[length[s]]++] = static_cast<short>(s);
        // The lookup table: canonical codes in (length, symbol) order, bit-reversed because
        // deflate packs Huffman codes starting from their most significant bit.
        int code = 0, index = 0;
        for (int len = 1; len <= fast_bits; ++len) {
            for (int k = 0; k < h.count[len]; ++k, ++code, ++index) {
                int rev = 0;
                for (int b = 0; b < len; ++b) rev |= ((code >> b) & 1) << (len - 1 - b);
                const auto entry = static_cast<std::uint16_t>(h.symbol[index] * 16 + len);
                for (int fill = rev; fill < (1 << fast_bits); fill += 1 << len) h.fast[fill] = entry;
            }
            code <<= 1;
        }
        return left;
    }

    void codes(const Huffman& lencode, const Huffman& distcode) {
        static const short lbase[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
        static const short lext[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
        static const unsigned short dbase[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385,
                                                 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
        static const short dext[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
        for (;;) {
            int symbol = decode(lencode);
            if (symbol < 256) {
                if (out_pos_ == out_size_) overflow();
                out_[out_pos_++] = static_cast<unsigned char>(symbol);
            } else if (symbol == 256) {
                return;
            } else {
                symbol -= 257;
                if (symbol >= 29) fail("invalid length code " + std::to_string(symbol + 257));
                const std::size_t len = static_cast<std::size_t>(lbase[symbol]) + bits(lext[symbol]);
                symbol = decode(distcode);
                if (symbol >= 30) fail("invalid distance code " + std::to_string(symbol));
                const std::size_t dist = static_cast<std::size_t>(dbase[symbol]) + bits(dext[symbol]);
                if (dist > out_pos_)
                    fail("a distance of " + std::to_string(dist) + " reaches before the start of the output (" + std::to_string(out_pos_) +
                         " bytes written)");
                if (out_size_ - out_pos_ < len) overflow();
                // Byte by byte: the source may overlap the bytes being written (a run).
                unsigned char* d = out_ + out_pos_;
                const unsigned char* s = d - dist;
                for (std::size_t k = 0; k < len; ++k) d[k] = s[k];
                out_pos_ += len;
            }
        }
    }

    void fixed() {
        if (!fixed_built_) {
            short lengths[fix_lcodes];
            int s = 0;
            for (; s < 144; ++s) lengths[s] = 8;
            for (; s < 256; ++s) lengths[s] = 9;
            for (; s < 280; ++s) lengths[s] = 7;
            for (; s < fix_lcodes; ++s) lengths[s] = 8;
            construct(fixed_len_, lengths, fix_lcodes);
            for (s = 0; s < max_dcodes; ++s) lengths[s] = 5;
            construct(fixed_dist_, lengths, max_dcodes);
            fixed_built_ = true;
        }
        codes(fixed_len_, fixed_dist_);
    }

    void dynamic() {
        static const short order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
        const int nlen = static_cast<int>(bits(5)) + 257;
        const int ndist = static_cast<int>(bits(5)) + 1;
        const int ncode = static_cast<int>(bits(4)) + 4;
        if (nlen > max_lcodes) fail("a dynamic block declares " + std::to_string(nlen) + " literal/length codes (at most 286)");
        if (ndist > max_dcodes) fail("a dynamic block declares " + std::to_string(ndist) + " distance codes (at most 30)");
        short lengths[max_lcodes + max_dcodes];
        int index = 0;
        for (; index < ncode; ++index) lengths[order[index]] = static_cast<short>(bits(3));
        for (; index < 19; ++index) lengths[order[index]] = 0;
        Huffman lencode, distcode;
        if (construct(lencode, lengths, 19) != 0) fail("the code-length code is incomplete or over-subscribed");
        index = 0;
        while (index < nlen + ndist) {
            int symbol = decode(lencode);
            if (symbol < 16) {
                lengths[index++] = static_cast<short>(symbol);
                continue;
            }
            short len = 0;
            if (symbol == 16) {
                if (index == 0) fail("a repeat code comes before any length");
                len = lengths[index - 1];
                symbol = 3 + static_cast<int>(bits(2));
            } else if (symbol == 17) {
                symbol = 3 + static_cast<int>(bits(3));
            } else {
                symbol = 11 + static_cast<int>(bits(7));
            }
            if (index + symbol > nlen + ndist) fail("code lengths repeat past the declared count");
            while (symbol--) lengths[index++] = len;
        }
        if (lengths[256] == 0) fail("the block has no end-of-block code");
        int err = construct(lencode, lengths, nlen);
        if (err < 0 || (err > 0 && nlen - lencode.count[0] != 1)) fail("the literal/length code is incomplete or over-subscribed");
        err = construct(distcode, lengths + nlen, ndist);
        if (err < 0 || (err > 0 && ndist - distcode.count[0] != 1)) fail("the distance code is incomplete or over-subscribed");
        codes(lencode, distcode);
    }

    const unsigned char* in_;
    std::size_t in_size_, in_pos_ = 0;
    unsigned char* out_;
    std::size_t out_size_, out_pos_ = 0;
    const std::string& what_;
    std::uint64_t bit_buf_ = 0;
    int bit_cnt_ = 0;
    bool fixed_built_ = false;
    Huffman fixed_len_{}, fixed_dist_{};
};

/// Inflates a raw deflate stream into exactly out_size bytes; throws format_error otherwise.
inline void inflate(const unsigned char* in, std::size_t in_size, unsigned char* out, std::size_t out_size, const std::string& what) {
    Inflater(in, in_size, out, out_size, what).run();
}

} // namespace tapir::io::detail
