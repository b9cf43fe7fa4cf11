#pragma once
/// Vectorised max pooling over windows two columns wide with a column stride of two (the 2x2
/// pooling of image CNNs, and kernel 2 of 1-D pooling), unpadded, on channels-first planes: the
/// kernel the training op (autodiff/conv.hpp) and the deployed layer (deploy/model.hpp) share, so
/// both give the same bits. Each vector of outputs reads two vectors of a window row and splits
/// them into even and odd columns (evens/odds in vec.hpp), then walks the window's taps in
/// row-major order with compares and blends: the first maximum wins a tie (as PyTorch's argmax),
/// a NaN wins and later taps are ignored (the first NaN's payload propagates).

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "arch.hpp"
#include "vec.hpp"

TAPIR_SIMD_DIAG_PUSH

namespace tapir::simd {
namespace detail {

template <class T> struct max_pool_w2_kernel {
    using value_type = T;
    using bits_type = typename int_of<T>::type;

    /// The two vectors of row values under n (at most W) windows from row: 2n values.
    template <class V>
    static TAPIR_ALWAYS_INLINE void load_pairs(const T* row, std::size_t n, typename V::reg& e, typename V::reg& o) {
        constexpr std::size_t W = V::W;
        typename V::reg a, b;
        if (n == W) {
            a = V::load(row), b = V::load(row + W);
        } else if (2 * n >= W) {
            a = V::load(row), b = 2 * n > W ? V::load_partial(row + W, 2 * n - W) : V::zero();
        } else {
            a = V::load_partial(row, 2 * n), b = V::zero();
        }
        e = V::evens(a, b), o = V::odds(a, b);
    }

    /// n windows from the row at x (the window's top row), outputs at y and their flat indices at
    /// arg (if not null) relative to start, the tap offsets within a window in off.
    template <class V>
    static TAPIR_ALWAYS_INLINE void windows(const T* x, std::size_t w, std::size_t kh, std::size_t n, T* y, std::int64_t* arg,
                                            std::int64_t start, const std::int64_t* off) {
        using reg = typename V::reg;
        reg best, odd;
        load_pairs<V>(x, n, best, odd);
        reg tap = V::zero();  // the bits of the winning tap's number (tap 0: all zero)
        const auto step = [&](const reg& v, bits_type t) TAPIR_ALWAYS_INLINE_LAMBDA {
            // Keep unless v is larger or a NaN, and always once the best is a NaN.
            const auto keep = V::mask_or(V::le(v, best), V::isnan(best));
            best = V::select(keep, best, v);
            if (arg) tap = V::select(keep, tap, V::from_bits(V::iset1(t)));
        };
        step(odd, 1);
        for (std::size_t i = 1; i < kh; ++i) {
            reg even;
            load_pairs<V>(x + i * w, n, even, odd);
            step(even, static_cast<bits_type>(2 * i));
            step(odd, static_cast<bits_type>(2 * i + 1));
        }
        if (n == V::W) V::store(y, best);
        else V::store_partial(y, best, n);
        if (!arg) return;
        alignas(64) T tv[V::W];
        bits_type tb[V::W];
        V::store(tv, tap);
        std::memcpy(tb, tv, sizeof tb);
        for (std::size_t l = 0; l < n; ++l) arg[l] = start + static_cast<std::int64_t>(2 * l) + off[tb[l]];
    }

    template <class V>
    static TAPIR_ALWAYS_INLINE void run(const T* x, std::size_t planes, std::size_t h, std::size_t w, std::size_t kh, std::size_t sh, T* y,
                                        std::int64_t* arg) {
        constexpr std::size_t W = V::W;
        const std::size_t oh = (h - kh) / sh + 1, ow = w / 2;
        std::int64_t off[2 * 16];  // tap t of a window: row t / 2, column t % 2
        const std::size_t taps = arg ? 2 * kh : 0;
        for (std::size_t t = 0; t < taps && t < 2 * 16; ++t) off[t] = static_cast<std::int64_t>((t / 2) * w + t % 2);
        for (std::size_t p = 0; p < planes; ++p)
            for (std::size_t oy = 0; oy < oh; ++oy) {
                const std::size_t r = p * h * w + oy * sh * w;  // the windows' top row
                T* yr = y + (p * oh + oy) * ow;
                std::int64_t* ar = arg ? arg + (p * oh + oy) * ow : nullptr;
                for (std::size_t ox = 0; ox < ow; ox += W) {
                    const std::size_t n = ow - ox < W ? ow - ox : W;
                    windows<V>(x + r + 2 * ox, w, kh, n, yr + ox, ar ? ar + ox : nullptr, static_cast<std::int64_t>(r + 2 * ox), off);
                }
            }
    }
};

} // namespace detail

/// Whether max_pool_w2_on takes windows of kh rows (kh at most 16, the index table's size).
constexpr bool max_pool_w2_fits(std::size_t kh) noexcept { return kh >= 1 && kh <= 16; }

/// y (planes, oh, ow) = the maxima of x (planes, h, w) over windows of kh rows and 2 columns, row
/// stride sh and column stride 2, no padding: oh = (h - kh) / sh + 1 (h >= kh), ow = w / 2. When
/// arg is not null it receives each window's first maximum (or first NaN) as a flat index into
/// x. Runs on the instruction set `which` (unchecked, see dispatch_to); the result does not
/// depend on it. Allocation- and exception-free.
template <class T>
void max_pool_w2_on(isa which, const T* x, std::size_t planes, std::size_t h, std::size_t w, std::size_t kh, std::size_t sh, T* y,
                    std::int64_t* arg) noexcept {
    dispatch_to<detail::max_pool_w2_kernel<T>>(which, x, planes, h, w, kh, sh, y, arg);
}

} // namespace tapir::simd

TAPIR_SIMD_DIAG_POP
