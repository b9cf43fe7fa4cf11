#pragma once
/// Convolution, transposed convolution, pooling and upsampling on the tape, channels-first as in
/// PyTorch: inputs (N, C, L) or (N, C, H, W), weights (Cout, Cin/groups, k...) (transposed: (Cin,
/// Cout/groups, k...)). A 1-D op is its 2-D op on a height of one (zero-copy reshapes).
///
/// Convolution is one bilinear form read three ways: y = conv(x, w), its adjoint in x
/// (conv_dx(g, w), the transposed convolution) and its adjoint in w (conv_dw(x, g), a
/// correlation). Each op's backward rule is written with the other two, so first-order backward,
/// create_graph and every higher order use the same three kernels. With stride 1 they are implicit
/// GEMMs on a zero-padded copy of each sample (simd::gemm_rows, gemm_rows_nt: no unfolded copy,
/// and conv_dx is the flipped kernel's convolution of the padded gradient, without col2im); with
/// other strides they unfold one sample and group, in column chunks that stay in L2, into the
/// tape's arena (im2col) and run simd::gemm on each chunk (Chellapilla et al. 2006,
/// "High performance convolutional neural networks for document processing"). The geometry of the
/// three ops is one int64 array in the arena, pointed to by Node::index. Max pooling stores its
/// argmax (flat indices, in the arena) and its backward scatters through them; average pooling and
/// nearest upsampling are linear, each with its adjoint as an op. Output sizes, padding and the
/// transposed convolution follow Dumoulin and Visin, arXiv:1603.07285; global average pooling is
/// from Lin et al., arXiv:1312.4400.
///
///     Var<float> y = conv2d(x, w, b, {1, 1}, Pad2d{1, 2, 1, 2});  // 'same' for a 4x4 kernel
///     Var<float> p = max_pool2d(relu(y), 2);

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "../error.hpp"
#include "../simd/elementwise.hpp"
#include "../simd/gemm.hpp"
#include "../simd/pool.hpp"
#include "backward.hpp"
#include "ops.hpp"
#include "take.hpp"
#include "tape.hpp"

namespace tapir {

/// A pair of sizes (height, width); one number means both.
struct Size2 {
    std::size_t h = 1, w = 1;
    Size2(std::size_t both = 1) : h(both), w(both) {}  // NOLINT: implicit, as PyTorch's int-or-tuple
    Size2(std::size_t h_, std::size_t w_) : h(h_), w(w_) {}
};

/// Zero padding of a 2-D input: top, bottom, left, right. One number pads all four sides, two
/// numbers (h, w) pad top and bottom by h and left and right by w (PyTorch's padding); four allow
/// the asymmetric padding of 'same' with an even kernel (Keras and PyTorch put the extra row and
/// column at the bottom and right).
struct Pad2d {
    std::size_t top = 0, bottom = 0, left = 0, right = 0;
    Pad2d(std::size_t all = 0) : top(all), bottom(all), left(all), right(all) {}  // NOLINT: implicit
    Pad2d(std::size_t h, std::size_t w) : top(h), bottom(h), left(w), right(w) {}
    Pad2d(std::size_t t, std::size_t b, std::size_t l, std::size_t r) : top(t), bottom(b), left(l), right(r) {}
    /// 'same' padding for stride 1 (output size = input size): total dilation (k - 1), the extra at the end.
    static Pad2d same(Size2 kernel, Size2 dilation = 1) {
        const std::size_t th = dilation.h * (kernel.h - 1), tw = dilation.w * (kernel.w - 1);
        return Pad2d(th / 2, th - th / 2, tw / 2, tw - tw / 2);
    }
};

namespace detail {

/// Layout of the geometry array shared by the three convolution ops and the pooling ops.
enum ConvAttr : std::size_t { ca_kh, ca_kw, ca_sh, ca_sw, ca_pt, ca_pb, ca_pl, ca_pr, ca_dh, ca_dw, ca_groups, ca_h, ca_w, ca_count };

/// The sizes of one convolution: x-space (n, c, h, w), y-space (n, o, oh, ow), kernel and steps.
struct ConvGeom {
    std::size_t n = 0, c = 0, h = 0, w = 0, o = 0, oh = 0, ow = 0;
    std::size_t kh = 1, kw = 1, sh = 1, sw = 1, pt = 0, pl = 0, dh = 1, dw = 1, groups = 1;
    std::size_t cg() const noexcept { return c / groups; }
    std::size_t og() const noexcept { return o / groups; }
    std::size_t k() const noexcept { return cg() * kh * kw; }  ///< rows of the unfolded input
    std::size_t ohw() const noexcept { return oh * ow; }
    std::size_t hw() const noexcept { return h * w; }
    /// 1x1, stride 1, unpadded: the input is its own unfolding.
    bool pointwise() const noexcept { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && oh == h && ow == w; }
};

inline std::size_t attr(const std::int64_t* a, ConvAttr k) noexcept { return static_cast<std::size_t>(a[k]); }

/// Output length of a window sweep, or 0 when the dilated window is larger than the padded input.
inline std::size_t sweep_len(std::size_t in, std::size_t pad, std::size_t k, std::size_t d, std::size_t s) noexcept {
    const std::size_t span = d * (k - 1) + 1;
    return in + pad < span ? 0 : (in + pad - span) / s + 1;
}

inline ConvGeom geom_of(const std::int64_t* a, std::size_t n, std::size_t c, std::size_t o) noexcept {
    ConvGeom g;
    g.n = n, g.c = c, g.o = o;
    g.h = attr(a, ca_h), g.w = attr(a, ca_w);
    g.kh = attr(a, ca_kh), g.kw = attr(a, ca_kw), g.sh = attr(a, ca_sh), g.sw = attr(a, ca_sw);
    g.pt = attr(a, ca_pt), g.pl = attr(a, ca_pl), g.dh = attr(a, ca_dh), g.dw = attr(a, ca_dw);
    g.groups = attr(a, ca_groups);
    g.oh = sweep_len(g.h, g.pt + attr(a, ca_pb), g.kh, g.dh, g.sh);
    g.ow = sweep_len(g.w, g.pl + attr(a, ca_pr), g.kw, g.dw, g.sw);
    return g;
}

/// The geometry array in the tape's arena (it lives as long as the nodes that point to it).
template <class T>
const std::int64_t* conv_attrs(Tape<T>& t, Size2 k, Size2 s, const Pad2d& p, Size2 d, std::size_t groups, std::size_t h, std::size_t w) {
    auto* a = static_cast<std::int64_t*>(t.arena().allocate(ca_count * sizeof(std::int64_t)));
    const std::size_t v[ca_count] = {k.h, k.w, s.h, s.w, p.top, p.bottom, p.left, p.right, d.h, d.w, groups, h, w};
    for (std::size_t i = 0; i < ca_count; ++i) a[i] = static_cast<std::int64_t>(v[i]);
    return a;
}

/// First output position whose tap (offset off into the padded axis) lands at or after pad, and
/// one past the last that lands before pad + len: the taps in [lo, hi) read real input.
inline void tap_range(std::size_t off, std::size_t pad, std::size_t len, std::size_t s, std::size_t out, std::size_t& lo,
                      std::size_t& hi) noexcept {
    lo = off >= pad ? 0 : (pad - off + s - 1) / s;
    hi = off >= pad + len ? 0 : (pad + len - off + s - 1) / s;
    if (hi > out) hi = out;
    if (lo > hi) lo = hi;
}

/// The walk im2col and col2im share over columns [j0, j1) of one sample's group: for each row
/// (c, i, j) of the unfolded block and each output row oy the columns touch, row(k, a, b, lo, hi, in):
/// k the offset in the block of output position (oy, a), [a, b) the row's output columns, [lo, hi)
/// those whose tap reads real input (empty when the tap row is in the padding) and in the offset in
/// the group of the tap of output column 0 (element in + ox * sw for ox in [lo, hi); in may be
/// negative when the first taps are in the left padding).
template <class Row>
TAPIR_ALWAYS_INLINE void for_each_tap_row(const ConvGeom& g, std::size_t j0, std::size_t j1, Row&& row) noexcept {
    const std::size_t m = j1 - j0, y0 = j0 / g.ow, y1 = (j1 - 1) / g.ow;
    for (std::size_t c = 0; c < g.cg(); ++c)
        for (std::size_t i = 0; i < g.kh; ++i) {
            std::size_t ylo, yhi;
            tap_range(i * g.dh, g.pt, g.h, g.sh, g.oh, ylo, yhi);
            for (std::size_t j = 0; j < g.kw; ++j) {
                const std::size_t base = ((c * g.kh + i) * g.kw + j) * m;
                std::size_t xlo, xhi;
                tap_range(j * g.dw, g.pl, g.w, g.sw, g.ow, xlo, xhi);
                for (std::size_t oy = y0; oy <= y1; ++oy) {
                    const std::size_t a = oy == y0 ? j0 - y0 * g.ow : 0, b = oy == y1 ? j1 - y1 * g.ow : g.ow;
                    const std::size_t k = base + (oy * g.ow + a - j0);
                    if (oy < ylo || oy >= yhi) {
                        row(k, a, b, a, a, std::ptrdiff_t(0));
                        continue;
                    }
                    const std::size_t lo = xlo < a ? a : (xlo > b ? b : xlo), hi = xhi > b ? b : (xhi < lo ? lo : xhi);
                    row(k, a, b, lo, hi,
                        static_cast<std::ptrdiff_t>((c * g.h + oy * g.sh + i * g.dh - g.pt) * g.w + j * g.dw) - static_cast<std::ptrdiff_t>(g.pl));
                }
            }
        }
}

/// Columns [j0, j1) of one sample's group unfolded: col (cg kh kw, j1 - j0), row r holding the
/// tap (c, i, j) of output positions j0 .. j1 - 1; zeros where a tap is in the padding. Working on
/// column chunks keeps the unfolded block in L2 between the unfolding and its GEMM.
template <class T>
void im2col(const T* TAPIR_RESTRICT x, T* TAPIR_RESTRICT col, const ConvGeom& g, std::size_t j0, std::size_t j1) noexcept {
    for_each_tap_row(g, j0, j1, [x, col, &g](std::size_t k, std::size_t a, std::size_t b, std::size_t lo, std::size_t hi, std::ptrdiff_t in) {
        T* TAPIR_RESTRICT d = col + k;  // d[ox - a] is output column ox
        const T* TAPIR_RESTRICT src = x + in;
        for (std::size_t ox = a; ox < lo; ++ox) d[ox - a] = T(0);
        if (g.sw == 1)
            for (std::size_t ox = lo; ox < hi; ++ox) d[ox - a] = src[ox];
        else
            for (std::size_t ox = lo; ox < hi; ++ox) d[ox - a] = src[ox * g.sw];
        for (std::size_t ox = hi; ox < b; ++ox) d[ox - a] = T(0);
    });
}

/// The adjoint of im2col: adds col (cg kh kw, j1 - j0) back into one sample's group (cg, h, w).
template <class T>
void col2im(const T* TAPIR_RESTRICT col, T* TAPIR_RESTRICT x, const ConvGeom& g, std::size_t j0, std::size_t j1) noexcept {
    for_each_tap_row(g, j0, j1, [x, col, &g](std::size_t k, std::size_t a, std::size_t, std::size_t lo, std::size_t hi, std::ptrdiff_t in) {
        const T* TAPIR_RESTRICT d = col + k;
        T* TAPIR_RESTRICT dst = x + in;
        if (g.sw == 1)
            for (std::size_t ox = lo; ox < hi; ++ox) dst[ox] += d[ox - a];
        else
            for (std::size_t ox = lo; ox < hi; ++ox) dst[ox * g.sw] += d[ox - a];
    });
}

/// Adds bias[ch] to every element of channel ch of an (n, ch, spatial) value.
template <class T>
void add_channel_bias(T* y, const T* bias, std::size_t n, std::size_t ch, std::size_t spatial) noexcept {
    for (std::size_t b = 0; b < n; ++b)
        for (std::size_t k = 0; k < ch; ++k) {
            T* row = y + (b * ch + k) * spatial;
            const T v = bias[k];
            for (std::size_t i = 0; i < spatial; ++i) row[i] += v;
        }
}

template <class T>
T* scratch(Tape<T>& t, std::size_t n) { return t.arena().template allocate_array<T>(n); }

/// Output positions per unfolded chunk: the whole map when it fits, else a multiple of 32 columns
/// (whole register tiles) such that the chunk (k rows) stays within 128 KiB, where simd::gemm reads
/// its B operand in place instead of packing it.
template <class T>
std::size_t chunk_cols(std::size_t k, std::size_t ohw) noexcept {
    std::size_t c = (128 * 1024 / sizeof(T)) / (k ? k : 1);
    c = c > 512 ? 512 : c;
    c = c < 32 ? 32 : c / 32 * 32;
    return ohw <= c ? ohw : c;
}

/// Stride-1 convolutions run as an implicit GEMM (simd::gemm_rows, gemm_rows_nt): each sample's
/// group is copied zero-padded into one arena buffer (its borders stay zero from sample to sample),
/// whose taps are the rows of the unfolded input at one offset each, over output rows as wide as
/// the padded ones (the extra (kw - 1) dw columns are computed and dropped). No unfolded copy is
/// made, and each output's multiply-add chain is the same as through im2col and simd::gemm.
template <class T>
struct PaddedInput {
    std::size_t wp = 0, plane = 0, cols = 0;  ///< padded width, channel plane, output columns
    std::ptrdiff_t* rows = nullptr;           ///< per tap (c, i, j): its offset in buf
    T* buf = nullptr;
    const ConvGeom* g = nullptr;
    PaddedInput(Tape<T>& t, const ConvGeom& geom) : g(&geom) {
        const std::size_t hp = geom.oh + (geom.kh - 1) * geom.dh;
        wp = geom.ow + (geom.kw - 1) * geom.dw, plane = hp * wp, cols = geom.oh * wp;
        const std::size_t nbuf = geom.cg() * plane + (geom.kw - 1) * geom.dw;  // the last row's dropped columns read past the end
        rows = static_cast<std::ptrdiff_t*>(t.arena().allocate(geom.k() * sizeof(std::ptrdiff_t)));
        for (std::size_t c = 0; c < geom.cg(); ++c)
            for (std::size_t i = 0; i < geom.kh; ++i)
                for (std::size_t j = 0; j < geom.kw; ++j)
                    rows[(c * geom.kh + i) * geom.kw + j] = static_cast<std::ptrdiff_t>(c * plane + i * geom.dh * wp + j * geom.dw);
        buf = scratch(t, nbuf);
        for (std::size_t i = 0; i < nbuf; ++i) buf[i] = T(0);
    }
    /// Copies the group (cg, h, w) at xs inside the zero border.
    void load(const T* xs) noexcept {
        for (std::size_t c = 0; c < g->cg(); ++c)
            for (std::size_t y = 0; y < g->h; ++y) {
                const T* TAPIR_RESTRICT s = xs + (c * g->h + y) * g->w;
                T* TAPIR_RESTRICT d = buf + c * plane + (g->pt + y) * wp + g->pl;
                for (std::size_t x = 0; x < g->w; ++x) d[x] = s[x];
            }
    }
};

/// out (n, o, oh, ow) = act(conv(in (n, c, h, w), wgt (o, c/groups, kh, kw)) + bias) for a stride-1
/// geometry g; bias (o) may be null. The bias is added as each output row is copied out, and the
/// activation runs on each sample's block while it is in cache: the same operations, hence bits,
/// as add_channel_bias and simd::activate_on over the whole output, without their two passes.
/// relu_of (shaped as out; only without a bias) makes the copy relu's derivative from those
/// outputs, relu_of > 0 ? value : 0, the select of simd::relu_backward.
template <class T>
void implicit_conv(Tape<T>& t, const T* in, const T* wgt, T* out, const ConvGeom& g, const T* bias = nullptr,
                   Activation act = Activation::none, T alpha = T(0), const T* relu_of = nullptr) {
    const std::size_t og = g.og(), cg = g.cg(), K = g.k();
    PaddedInput<T> p(t, g);
    T* cbuf = scratch(t, og * p.cols);
    for (std::size_t n = 0; n < g.n; ++n)
        for (std::size_t q = 0; q < g.groups; ++q) {
            p.load(in + (n * g.c + q * cg) * g.hw());
            simd::gemm_rows<T>(og, p.cols, K, T(1), wgt + q * og * K, K, p.buf, p.rows, T(0), cbuf, p.cols);
            T* ys = out + (n * g.o + q * og) * g.ohw();
            for (std::size_t o = 0; o < og; ++o)
                for (std::size_t y = 0; y < g.oh; ++y) {
                    const T* TAPIR_RESTRICT s = cbuf + o * p.cols + y * p.wp;
                    T* TAPIR_RESTRICT d = ys + (o * g.oh + y) * g.ow;
                    if (bias) {
                        const T v = bias[q * og + o];
                        for (std::size_t x = 0; x < g.ow; ++x) d[x] = s[x] + v;
                    } else if (relu_of) {
                        const T* TAPIR_RESTRICT m = relu_of + (d - out);
                        for (std::size_t x = 0; x < g.ow; ++x) d[x] = m[x] > T(0) ? s[x] : T(0);
                    } else {
                        for (std::size_t x = 0; x < g.ow; ++x) d[x] = s[x];
                    }
                }
            if (act != Activation::none) simd::activate_on(simd::active_isa(), act, ys, ys, og * g.ohw(), alpha);
        }
}

/// dw (o, c/groups, kh, kw) = sum over samples of y unfold(x)^T for a stride-1 geometry g: y is
/// copied into rows as wide as the padded input's with zeros in the dropped columns, and each
/// (output channel, tap) entry is one dot product along them (simd::gemm_rows_nt).
template <class T>
void implicit_conv_dw(Tape<T>& t, const T* x, const T* y, T* dw, const ConvGeom& g) {
    const std::size_t og = g.og(), cg = g.cg(), K = g.k();
    PaddedInput<T> p(t, g);
    T* yw = scratch(t, og * p.cols);
    for (std::size_t i = 0; i < og * p.cols; ++i) yw[i] = T(0);
    for (std::size_t n = 0; n < g.n; ++n)
        for (std::size_t q = 0; q < g.groups; ++q) {
            p.load(x + (n * g.c + q * cg) * g.hw());
            const T* ys = y + (n * g.o + q * og) * g.ohw();
            for (std::size_t o = 0; o < og; ++o)
                for (std::size_t r = 0; r < g.oh; ++r) {
                    const T* TAPIR_RESTRICT s = ys + (o * g.oh + r) * g.ow;
                    T* TAPIR_RESTRICT d = yw + o * p.cols + r * p.wp;
                    for (std::size_t c = 0; c < g.ow; ++c) d[c] = s[c];
                }
            simd::gemm_rows_nt<T>(og, K, p.cols, T(1), yw, p.cols, p.buf, p.rows, n ? T(1) : T(0), dw + q * og * K, K);
        }
}

/// Whether conv (forward) runs as implicit_conv: stride 1, not pointwise, something to compute.
inline bool implicit_forward(const ConvGeom& g) noexcept {
    return g.sh == 1 && g.sw == 1 && !g.pointwise() && g.n && g.hw() && g.ohw();
}

/// conv_dx with stride 1 is the stride-1 convolution of y, padded by (k - 1) d minus the forward's
/// padding, with the kernel flipped and its channel axes swapped (Dumoulin and Visin,
/// arXiv:1603.07285, relationship 8): its geometry, valid when no such padding is negative.
inline bool implicit_adjoint(const ConvGeom& g, ConvGeom& d) noexcept {
    const std::size_t eh = (g.kh - 1) * g.dh, ew = (g.kw - 1) * g.dw;
    if (!implicit_forward(g) || g.pt > eh || g.pl > ew || g.oh > g.h + g.pt || g.ow > g.w + g.pl) return false;
    d = g;
    d.c = g.o, d.h = g.oh, d.w = g.ow, d.o = g.c, d.oh = g.h, d.ow = g.w, d.pt = eh - g.pt, d.pl = ew - g.pl;
    return true;
}

/// y = conv(x, w) (+ bias): x (n, c, h, w), w (o, c/groups, kh, kw).
template <class T>
Ref<T> k_conv(Tape<T>& t, const Ref<T>& x, const Ref<T>& w, const Ref<T>* b, const std::int64_t* a, Activation act = Activation::none,
              T alpha = T(0)) {
    const ConvGeom g = geom_of(a, x.shape[0], x.shape[1], w.shape[0]);
    Ref<T> y = t.alloc(Shape{g.n, g.o, g.oh, g.ow});
    const std::size_t K = g.k(), ohw = g.ohw(), og = g.og(), cg = g.cg(), nc = chunk_cols<T>(K, ohw);
    if (implicit_forward(g)) {
        implicit_conv(t, x.data, w.data, y.data, g, b ? b->data : nullptr, act, alpha);
        return y;
    }
    T* col = g.pointwise() ? nullptr : scratch(t, K * nc);
    for (std::size_t n = 0; n < g.n; ++n)
        for (std::size_t q = 0; q < g.groups; ++q) {
            const T* xs = x.data + (n * g.c + q * cg) * g.hw();
            T* ys = y.data + (n * g.o + q * og) * ohw;
            if (!col) {
                simd::gemm<T>(false, false, og, ohw, K, T(1), w.data + q * og * K, K, xs, ohw, T(0), ys, ohw);
                continue;
            }
            for (std::size_t j0 = 0; j0 < ohw; j0 += nc) {
                const std::size_t m = ohw - j0 < nc ? ohw - j0 : nc;
                im2col(xs, col, g, j0, j0 + m);
                simd::gemm<T>(false, false, og, m, K, T(1), w.data + q * og * K, K, col, m, T(0), ys + j0, ohw);
            }
        }
    if (b) add_channel_bias(y.data, b->data, g.n, g.o, ohw);
    if (act != Activation::none) simd::activate_on(simd::active_isa(), act, y.data, y.data, y.size(), alpha);
    return y;
}

/// x-space = conv_dx(y, w) (+ bias over the x channels): the adjoint of conv in x, i.e. the
/// transposed convolution; y (n, o, oh, ow), w (o, c/groups, kh, kw), result (n, c, h, w). The
/// weight is transposed once, so every GEMM reads both operands in place. relu_of (x-space, no
/// bias): the result times relu's derivative from those outputs, as simd::relu_backward after it.
template <class T>
Ref<T> k_conv_dx(Tape<T>& t, const Ref<T>& y, const Ref<T>& w, const Ref<T>* b, const std::int64_t* a, const T* relu_of = nullptr) {
    const ConvGeom g = geom_of(a, y.shape[0], w.shape[1] * attr(a, ca_groups), y.shape[1]);
    Ref<T> x = t.alloc(Shape{g.n, g.c, g.h, g.w});
    const std::size_t K = g.k(), ohw = g.ohw(), og = g.og(), cg = g.cg(), nc = chunk_cols<T>(K, ohw);
    ConvGeom d;
    if (implicit_adjoint(g, d)) {
        // Per group (cg, og kh kw): wf(c, (o, i, j)) = w(o, c, kh - 1 - i, kw - 1 - j).
        const std::size_t kk = g.kh * g.kw;
        T* wf = scratch(t, g.o * K);
        for (std::size_t q = 0; q < g.groups; ++q)
            for (std::size_t o = 0; o < og; ++o)
                for (std::size_t c = 0; c < cg; ++c)
                    for (std::size_t r = 0; r < kk; ++r) wf[(q * cg + c) * og * kk + o * kk + r] = w.data[((q * og + o) * cg + c) * kk + (kk - 1 - r)];
        implicit_conv(t, y.data, wf, x.data, d, static_cast<const T*>(nullptr), Activation::none, T(0), b ? nullptr : relu_of);
        if (b) add_channel_bias(x.data, b->data, g.n, g.c, g.hw());
        return x;
    }
    T* wt = scratch(t, g.o * K);  // per group (K, og): the group's weight transposed
    for (std::size_t q = 0; q < g.groups; ++q)
        for (std::size_t oc = 0; oc < og; ++oc)
            for (std::size_t r = 0; r < K; ++r) wt[q * og * K + r * og + oc] = w.data[(q * og + oc) * K + r];
    const bool pw = g.pointwise();
    if (!pw)
        for (std::size_t i = 0; i < x.size(); ++i) x.data[i] = T(0);
    T* col = pw ? nullptr : scratch(t, K * nc);
    for (std::size_t n = 0; n < g.n; ++n)
        for (std::size_t q = 0; q < g.groups; ++q) {
            const T* ys = y.data + (n * g.o + q * og) * ohw;
            T* xs = x.data + (n * g.c + q * cg) * g.hw();
            if (pw) {
                simd::gemm<T>(false, false, K, ohw, og, T(1), wt + q * og * K, og, ys, ohw, T(0), xs, ohw);
                continue;
            }
            for (std::size_t j0 = 0; j0 < ohw; j0 += nc) {
                const std::size_t m = ohw - j0 < nc ? ohw - j0 : nc;
                simd::gemm<T>(false, false, K, m, og, T(1), wt + q * og * K, og, ys + j0, ohw, T(0), col, m);
                col2im(col, xs, g, j0, j0 + m);
            }
        }
    if (b) add_channel_bias(x.data, b->data, g.n, g.c, g.hw());
    if (relu_of && !b) simd::relu_backward(x.data, relu_of, x.data, x.size());
    return x;
}

/// w-space = conv_dw(x, y): the adjoint of conv in w, sum over samples of y unfold(x)^T;
/// x (n, c, h, w), y (n, o, oh, ow), result (o, c/groups, kh, kw). With few taps (K at most 32,
/// narrower than a register tile as the GEMM's width) it is computed transposed, unfold(x) y^T, so
/// the GEMM reads the unfolded chunk in place (about twice as fast for a one-channel input); else
/// as y unfold(x)^T, whose GEMM packs the chunk transposed (faster for K = 128).
template <class T>
Ref<T> k_conv_dw(Tape<T>& t, const Ref<T>& x, const Ref<T>& y, const std::int64_t* a) {
    const ConvGeom g = geom_of(a, x.shape[0], x.shape[1], y.shape[1]);
    Ref<T> dw = t.alloc(Shape{g.o, g.cg(), g.kh, g.kw});
    const std::size_t K = g.k(), ohw = g.ohw(), og = g.og(), cg = g.cg(), nc = chunk_cols<T>(K, ohw);
    if (implicit_forward(g)) {
        implicit_conv_dw(t, x.data, y.data, dw.data, g);
        return dw;
    }
    const bool pw = g.pointwise();
    T* col = pw ? nullptr : scratch(t, K * nc);
    // Both ways walk every column chunk of every sample and group: f(q, more, yc, u, ldu, m) with
    // yc the chunk's m columns of y (leading dimension ohw), u the chunk unfolded (the input itself
    // when pointwise; leading dimension ldu) and more false for the chunk that starts the sum.
    const auto for_each_chunk = [&](auto&& f) {
        for (std::size_t n = 0; n < g.n; ++n)
            for (std::size_t q = 0; q < g.groups; ++q) {
                const T* xs = x.data + (n * g.c + q * cg) * g.hw();
                const T* ys = y.data + (n * g.o + q * og) * ohw;
                for (std::size_t j0 = 0; j0 < ohw; j0 += nc) {
                    const std::size_t m = ohw - j0 < nc ? ohw - j0 : nc;
                    if (!pw) im2col(xs, col, g, j0, j0 + m);
                    f(q, n || j0, ys + j0, pw ? xs + j0 : col, pw ? ohw : m, m);
                }
            }
    };
    if (K > 32) {
        if (g.n == 0 || ohw == 0)
            for (std::size_t i = 0; i < dw.size(); ++i) dw.data[i] = T(0);
        for_each_chunk([&](std::size_t q, bool more, const T* yc, const T* u, std::size_t ldu, std::size_t m) {
            simd::gemm<T>(false, true, og, K, m, T(1), yc, ohw, u, ldu, more ? T(1) : T(0), dw.data + q * og * K, K);
        });
        return dw;
    }
    T* dwt = scratch(t, g.groups * K * og);  // per group (K, og)
    for (std::size_t i = 0; i < dw.size(); ++i) dwt[i] = T(0);
    T* yt = scratch(t, nc * og);
    for_each_chunk([&](std::size_t q, bool, const T* yc, const T* u, std::size_t ldu, std::size_t m) {
        for (std::size_t oc = 0; oc < og; ++oc)
            for (std::size_t r = 0; r < m; ++r) yt[r * og + oc] = yc[oc * ohw + r];
        simd::gemm<T>(false, false, K, og, m, T(1), u, ldu, yt, og, T(1), dwt + q * K * og, og);
    });
    for (std::size_t q = 0; q < g.groups; ++q)
        for (std::size_t oc = 0; oc < og; ++oc)
            for (std::size_t r = 0; r < K; ++r) dw.data[(q * og + oc) * K + r] = dwt[(q * K + r) * og + oc];
    return dw;
}

/// Per-channel sums of an (n, ch, ...) value: the gradient of a channel bias.
template <class T>
Ref<T> k_channel_sum(Tape<T>& t, const Ref<T>& g) {
    const std::size_t n = g.shape[0], ch = g.shape[1], nc = n * ch, sp = nc != 0 ? g.size() / nc : 0;
    Ref<T> out = t.alloc(Shape{ch});
    for (std::size_t k = 0; k < ch; ++k) out.data[k] = T(0);
    for (std::size_t b = 0; b < n; ++b)
        for (std::size_t k = 0; k < ch; ++k) out.data[k] += simd::sum(g.data + (b * ch + k) * sp, sp);
    return out;
}

} // namespace detail

// ---- the three convolution ops ---------------------------------------------------------------

template <class T, template <class> class V>
detail::val<V, T> conv_core(const V<T>& x, const V<T>& w, const V<T>* b, const std::int64_t* attrs, Activation act = Activation::none,
                            T alpha = T(0));
template <class T, template <class> class V>
detail::val<V, T> conv_dx_core(const V<T>& y, const V<T>& w, const V<T>* b, const std::int64_t* attrs);
template <class T, template <class> class V>
detail::val<V, T> conv_dw_core(const V<T>& x, const V<T>& y, const std::int64_t* attrs);
template <class T, template <class> class V>
detail::val<V, T> channel_sum(const V<T>& g);

namespace detail {
/// In backward() (o.fuse), the node making n's input when it is a convolution with a fused relu
/// whose gradient n's rule gives first: the rule may apply that relu's derivative itself (an
/// exact select, the same bits) and mark the result, and the convolution's rule skips its pass.
template <class T>
const Node<T>* relu_conv_input(const EagerContext<T>& o, const Node<T>& n);
} // namespace detail

/// d conv(x, w) = conv_dx(g, w) dx + conv_dw(x, g) dw, bias: the channel sums; a fused activation
/// first turns g into g act'(z) from the output (act_grad, as the dense op does).
template <class O, class T, class V>
void backward_conv(O& o, const Node<T>& n, const V& g0) {
    bool applied = false;  // the relu derivative already applied by the rule that made g0
    if constexpr (std::is_same<O, detail::EagerContext<T>>::value) {
        applied = g0.r.data == o.relu_applied && n.act == std::uint8_t(Activation::relu);
        o.relu_applied = nullptr;
    }
    const V g = n.act && !applied ? act_grad(g0, o.out(n), static_cast<Activation>(n.act), n.a0) : g0;
    bool dx_done = false;
    if constexpr (std::is_same<O, detail::EagerContext<T>>::value) {
        if (const Node<T>* in = detail::relu_conv_input(o, n); in && o.needs(n, 0)) {  // conv_dx applies the input's relu
            const Eager<T> d{detail::k_conv_dx(o.t, g.r, o.in(n, 1).r, static_cast<const Ref<T>*>(nullptr), n.index, in->out.data), &o.t};
            o.acc(n, 0, d);
            o.relu_applied = d.r.data;
            dx_done = true;
        }
    }
    if (!dx_done && o.needs(n, 0)) o.acc(n, 0, conv_dx_core(g, o.in(n, 1), static_cast<const V*>(nullptr), n.index));
    if (o.needs(n, 1)) o.acc(n, 1, conv_dw_core(o.in(n, 0), g, n.index));
    if (o.needs(n, 2)) o.acc(n, 2, channel_sum(g));
}
TAPIR_OP(conv, "conv2d", backward_conv);
namespace detail {
template <class T>
const Node<T>* relu_conv_input(const EagerContext<T>& o, const Node<T>& n) {
    if (!o.fuse || n.in[0] < 0) return nullptr;
    const Node<T>& in = o.t.node(n.in[0]);
    const bool first = !o.grads[static_cast<std::size_t>(n.in[0])].data;
    return first && in.op == &op_conv<T> && in.act == std::uint8_t(Activation::relu) ? &in : nullptr;
}
} // namespace detail

/// conv_dx(y, w) is linear in each: d/dy = conv(h, w), d/dw = conv_dw(h, y).
template <class O, class T, class V>
void backward_conv_dx(O& o, const Node<T>& n, const V& h) {
    if (o.needs(n, 0)) o.acc(n, 0, conv_core(h, o.in(n, 1), static_cast<const V*>(nullptr), n.index));
    if (o.needs(n, 1)) o.acc(n, 1, conv_dw_core(h, o.in(n, 0), n.index));
    if (o.needs(n, 2)) o.acc(n, 2, channel_sum(h));
}
TAPIR_OP(conv_dx, "conv_transpose2d", backward_conv_dx);

/// conv_dw(x, y): d/dx = conv_dx(y, h), d/dy = conv(x, h).
template <class O, class T, class V>
void backward_conv_dw(O& o, const Node<T>& n, const V& h) {
    if (o.needs(n, 0)) o.acc(n, 0, conv_dx_core(o.in(n, 1), h, static_cast<const V*>(nullptr), n.index));
    if (o.needs(n, 1)) o.acc(n, 1, conv_core(o.in(n, 0), h, static_cast<const V*>(nullptr), n.index));
}
TAPIR_OP(conv_dw, "conv2d_weight_grad", backward_conv_dw);

template <class O, class T, class V>
void backward_channel_sum(O& o, const Node<T>& n, const V& h) {
    const Shape in = o.shape(n, 0);
    Shape keep{1, in[1]};
    for (std::size_t i = 2; i < in.rank(); ++i) keep.push_back(1);
    o.acc(n, 0, broadcast_to(reshape(h, keep), in));
}
TAPIR_OP(channel_sum, "channel_sum", backward_channel_sum);

namespace detail {
inline auto set_index(const std::int64_t* p) {
    return [p](auto& n) { n.index = p; };
}
} // namespace detail

/// The convolution on a geometry array (no checks beyond the kernels'): what the rules call.
template <class T, template <class> class V>
detail::val<V, T> conv_core(const V<T>& x, const V<T>& w, const V<T>* b, const std::int64_t* attrs, Activation act, T alpha) {
    Tape<T>& t = detail::same_tape(x, w, "conv2d");
    const Ref<T> out = b ? detail::k_conv(t, detail::ref(t, x), detail::ref(t, w), &detail::ref(t, *b), attrs, act, alpha)
                         : detail::k_conv(t, detail::ref(t, x), detail::ref(t, w), static_cast<const Ref<T>*>(nullptr), attrs, act, alpha);
    const auto set = [attrs, act, alpha](auto& n) {
        n.index = attrs;
        n.act = static_cast<std::uint8_t>(act);
        n.a0 = alpha;
    };
    return b ? detail::emit(t, op_conv<T>, out, set, x, w, *b) : detail::emit(t, op_conv<T>, out, set, x, w);
}
template <class T, template <class> class V>
detail::val<V, T> conv_dx_core(const V<T>& y, const V<T>& w, const V<T>* b, const std::int64_t* attrs) {
    Tape<T>& t = detail::same_tape(y, w, "conv_transpose2d");
    const Ref<T> out = b ? detail::k_conv_dx(t, detail::ref(t, y), detail::ref(t, w), &detail::ref(t, *b), attrs)
                         : detail::k_conv_dx(t, detail::ref(t, y), detail::ref(t, w), static_cast<const Ref<T>*>(nullptr), attrs);
    return b ? detail::emit(t, op_conv_dx<T>, out, detail::set_index(attrs), y, w, *b)
             : detail::emit(t, op_conv_dx<T>, out, detail::set_index(attrs), y, w);
}
template <class T, template <class> class V>
detail::val<V, T> conv_dw_core(const V<T>& x, const V<T>& y, const std::int64_t* attrs) {
    Tape<T>& t = detail::same_tape(x, y, "conv2d_weight_grad");
    return detail::emit(t, op_conv_dw<T>, detail::k_conv_dw(t, detail::ref(t, x), detail::ref(t, y), attrs), detail::set_index(attrs), x, y);
}
/// Sums of an (n, ch, ...) value per channel, shape (ch,).
template <class T, template <class> class V>
detail::val<V, T> channel_sum(const V<T>& g) {
    Tape<T>& t = detail::tape_of(g);
    if (g.shape().rank() < 2) throw shape_error("channel_sum: expects (batch, channels, ...), got shape " + g.shape().str());
    return detail::emit(t, op_channel_sum<T>, detail::k_channel_sum(t, detail::ref(g)), detail::no_attrs{}, g);
}

namespace detail {
inline std::string conv_where(const char* op, const Shape& x, const Shape& w) { return std::string(op) + ": input " + x.str() + " vs weight " + w.str(); }

/// Checks of a 2-D convolution's operands, naming both shapes.
inline void check_conv(const char* op, const Shape& x, const Shape& w, const Shape* b, std::size_t groups, Size2 stride, Size2 dil,
                       bool transposed) {
    if (x.rank() != 4 || w.rank() != 4) throw shape_error(conv_where(op, x, w) + ": expected a 4-D input (N, C, H, W) and a 4-D weight");
    if (groups == 0) throw value_error(conv_where(op, x, w) + ": groups must be positive");
    if (stride.h == 0 || stride.w == 0 || dil.h == 0 || dil.w == 0)
        throw value_error(conv_where(op, x, w) + ": stride and dilation must be positive");
    if (w.numel() == 0) throw shape_error(conv_where(op, x, w) + ": empty weight");
    const std::size_t in_ch = transposed ? w[0] : w[1] * groups;
    const std::size_t out_ch = transposed ? w[1] * groups : w[0];
    if (x[1] != in_ch)
        throw shape_error(conv_where(op, x, w) + ": the input has " + std::to_string(x[1]) + " channels, the weight expects " +
                          std::to_string(in_ch) + (transposed ? "" : " (" + std::to_string(w[1]) + " per group x " + std::to_string(groups) + " groups)"));
    if (w[0] % groups != 0)
        throw shape_error(conv_where(op, x, w) + ": " + std::to_string(w[0]) + " channels are not divisible by " + std::to_string(groups) + " groups");
    if (b && (b->rank() != 1 || (*b)[0] != out_ch))
        throw shape_error(std::string(op) + ": bias " + b->str() + " vs weight " + w.str() + ": expected a bias of shape (" + std::to_string(out_ch) + ",)");
}
} // namespace detail

/// 2-D convolution (cross-correlation, as PyTorch's conv2d): x (N, C, H, W), w (O, C/groups, kh, kw),
/// optional bias (O,); output (N, O, OH, OW) with OH = (H + pad_top + pad_bottom - dilation (kh - 1) - 1) / stride + 1.
/// act applies an activation inside the same node (Sequential fuses Conv2d + ReLU so), alpha its slope or scale.
template <class T>
Var<T> conv2d(const Var<T>& x, const Var<T>& w, const Var<T>* b, Size2 stride = 1, Pad2d padding = 0, Size2 dilation = 1,
              std::size_t groups = 1, Activation act = Activation::none, T alpha = T(0)) {
    const Shape xs = x.shape(), ws = w.shape();
    const Shape bs = b ? b->shape() : Shape{};
    detail::check_conv("conv2d", xs, ws, b ? &bs : nullptr, groups, stride, dilation, false);
    Tape<T>& t = detail::same_tape(x, w, "conv2d");
    if (b) detail::same_tape(x, *b, "conv2d");
    const std::int64_t* a = detail::conv_attrs(t, Size2(ws[2], ws[3]), stride, padding, dilation, groups, xs[2], xs[3]);
    const detail::ConvGeom g = detail::geom_of(a, xs[0], xs[1], ws[0]);
    if (g.oh == 0 || g.ow == 0)
        throw shape_error(detail::conv_where("conv2d", xs, ws) + ": the kernel (dilated to " + std::to_string(dilation.h * (ws[2] - 1) + 1) + " x " +
                          std::to_string(dilation.w * (ws[3] - 1) + 1) + ") is larger than the padded input (" +
                          std::to_string(xs[2] + padding.top + padding.bottom) + " x " + std::to_string(xs[3] + padding.left + padding.right) + ")");
    return conv_core(x, w, b, a, act, alpha);
}
template <class T>
Var<T> conv2d(const Var<T>& x, const Var<T>& w, const Var<T>& b, Size2 stride = 1, Pad2d padding = 0, Size2 dilation = 1,
              std::size_t groups = 1, Activation act = Activation::none, T alpha = T(0)) {
    return conv2d(x, w, &b, stride, padding, dilation, groups, act, alpha);
}
template <class T>
Var<T> conv2d(const Var<T>& x, const Var<T>& w, std::nullptr_t, Size2 stride = 1, Pad2d padding = 0, Size2 dilation = 1,
              std::size_t groups = 1, Activation act = Activation::none, T alpha = T(0)) {
    return conv2d(x, w, static_cast<const Var<T>*>(nullptr), stride, padding, dilation, groups, act, alpha);
}

/// 1-D convolution: x (N, C, L), w (O, C/groups, k), optional bias (O,); output (N, O, OL).
/// padding_left/right as PyTorch's padding when equal.
template <class T>
Var<T> conv1d(const Var<T>& x, const Var<T>& w, const Var<T>* b, std::size_t stride = 1, std::size_t padding = 0,
              std::size_t dilation = 1, std::size_t groups = 1, std::size_t padding_right = std::size_t(-1)) {
    const Shape xs = x.shape(), ws = w.shape();
    if (xs.rank() != 3 || ws.rank() != 3)
        throw shape_error(detail::conv_where("conv1d", xs, ws) + ": expected a 3-D input (N, C, L) and a 3-D weight (O, C/groups, k)");
    const std::size_t pr = padding_right == std::size_t(-1) ? padding : padding_right;
    const std::size_t span = dilation * (ws[2] - 1) + 1;
    if (ws[2] > 0 && dilation > 0 && xs[2] + padding + pr < span)
        throw shape_error(detail::conv_where("conv1d", xs, ws) + ": the kernel (dilated to " + std::to_string(span) +
                          ") is larger than the padded input (" + std::to_string(xs[2] + padding + pr) + ")");
    try {
        const Var<T> y = conv2d(reshape(x, Shape{xs[0], xs[1], 1, xs[2]}), reshape(w, Shape{ws[0], ws[1], 1, ws[2]}), b, Size2(1, stride),
                                Pad2d(0, 0, padding, pr), Size2(1, dilation), groups);
        const Shape ys = y.shape();
        return reshape(y, Shape{ys[0], ys[1], ys[3]});
    } catch (const shape_error& e) {
        std::string m = e.what();
        const std::string from = detail::conv_where("conv2d", Shape{xs[0], xs[1], 1, xs[2]}, Shape{ws[0], ws[1], 1, ws[2]});
        if (m.rfind(from, 0) == 0) m = detail::conv_where("conv1d", xs, ws) + m.substr(from.size());
        else if (m.rfind("conv2d", 0) == 0) m = "conv1d" + m.substr(6);
        throw shape_error(m);
    }
}
template <class T>
Var<T> conv1d(const Var<T>& x, const Var<T>& w, const Var<T>& b, std::size_t stride = 1, std::size_t padding = 0,
              std::size_t dilation = 1, std::size_t groups = 1) {
    return conv1d(x, w, &b, stride, padding, dilation, groups);
}
template <class T>
Var<T> conv1d(const Var<T>& x, const Var<T>& w, std::nullptr_t, std::size_t stride = 1, std::size_t padding = 0,
              std::size_t dilation = 1, std::size_t groups = 1) {
    return conv1d(x, w, static_cast<const Var<T>*>(nullptr), stride, padding, dilation, groups);
}

/// 2-D transposed convolution (PyTorch's conv_transpose2d, the adjoint of conv2d in its input):
/// x (N, Cin, H, W), w (Cin, Cout/groups, kh, kw), optional bias (Cout,); output (N, Cout, OH, OW)
/// with OH = (H - 1) stride - 2 padding + dilation (kh - 1) + output_padding + 1.
template <class T>
Var<T> conv_transpose2d(const Var<T>& x, const Var<T>& w, const Var<T>* b, Size2 stride = 1, Size2 padding = 0,
                        Size2 output_padding = 0, std::size_t groups = 1, Size2 dilation = 1) {
    const Shape xs = x.shape(), ws = w.shape();
    const Shape bs = b ? b->shape() : Shape{};
    detail::check_conv("conv_transpose2d", xs, ws, b ? &bs : nullptr, groups, stride, dilation, true);
    if (output_padding.h >= stride.h && output_padding.h >= dilation.h)
        throw value_error(detail::conv_where("conv_transpose2d", xs, ws) + ": output_padding must be smaller than stride or dilation");
    if (output_padding.w >= stride.w && output_padding.w >= dilation.w)
        throw value_error(detail::conv_where("conv_transpose2d", xs, ws) + ": output_padding must be smaller than stride or dilation");
    Tape<T>& t = detail::same_tape(x, w, "conv_transpose2d");
    if (b) detail::same_tape(x, *b, "conv_transpose2d");
    const std::size_t fh = (xs[2] - 1) * stride.h + dilation.h * (ws[2] - 1) + output_padding.h + 1;
    const std::size_t fw = (xs[3] - 1) * stride.w + dilation.w * (ws[3] - 1) + output_padding.w + 1;
    if (xs[2] == 0 || xs[3] == 0 || fh <= 2 * padding.h || fw <= 2 * padding.w)
        throw shape_error(detail::conv_where("conv_transpose2d", xs, ws) + ": the padding " + std::to_string(padding.h) + " x " +
                          std::to_string(padding.w) + " leaves no output");
    // The adjoint conv2d's geometry: its input is the output here; the extra output_padding rows
    // and columns sit beyond the bottom and right padding (they receive no tap).
    const std::int64_t* a = detail::conv_attrs(t, Size2(ws[2], ws[3]), stride, Pad2d(padding.h, padding.w), dilation,
                                               groups, fh - 2 * padding.h, fw - 2 * padding.w);
    const detail::ConvGeom g = detail::geom_of(a, xs[0], ws[1] * groups, xs[1]);
    if (g.oh != xs[2] || g.ow != xs[3])
        throw shape_error(detail::conv_where("conv_transpose2d", xs, ws) + ": inconsistent geometry");
    return conv_dx_core(x, w, b, a);
}
template <class T>
Var<T> conv_transpose2d(const Var<T>& x, const Var<T>& w, const Var<T>& b, Size2 stride = 1, Size2 padding = 0,
                        Size2 output_padding = 0, std::size_t groups = 1, Size2 dilation = 1) {
    return conv_transpose2d(x, w, &b, stride, padding, output_padding, groups, dilation);
}
template <class T>
Var<T> conv_transpose2d(const Var<T>& x, const Var<T>& w, std::nullptr_t, Size2 stride = 1, Size2 padding = 0,
                        Size2 output_padding = 0, std::size_t groups = 1, Size2 dilation = 1) {
    return conv_transpose2d(x, w, static_cast<const Var<T>*>(nullptr), stride, padding, output_padding, groups, dilation);
}

// ---- pooling ---------------------------------------------------------------------------------

namespace detail {
/// Max over each window; idx receives the flat input index of each maximum (the first on ties).
template <class T>
Ref<T> k_max_pool(Tape<T>& t, const Ref<T>& x, const std::int64_t* a, std::int64_t*& idx) {
    const ConvGeom g = geom_of(a, x.shape[0], x.shape[1], x.shape[1]);
    Ref<T> y = t.alloc(Shape{g.n, g.c, g.oh, g.ow});
    idx = static_cast<std::int64_t*>(t.arena().allocate(y.size() * sizeof(std::int64_t) + 1));
    std::size_t o = 0;
    const bool unpadded = g.pt == 0 && g.pl == 0 && attr(a, ca_pb) == 0 && attr(a, ca_pr) == 0;
    if (unpadded && g.kw == 2 && g.sw == 2 && simd::max_pool_w2_fits(g.kh)) {  // 2x2 and kernel 2 in 1-D: vectorised
        simd::max_pool_w2_on(simd::active_isa(), x.data, g.n * g.c, g.h, g.w, g.kh, g.sh, y.data, idx);
        return y;
    }
    if (g.kh == 2 && g.kw == 2 && unpadded) {  // other strides of the 2x2 window
        for (std::size_t p = 0; p < g.n * g.c; ++p) {
            const T* xs = x.data + p * g.hw();
            for (std::size_t oy = 0; oy < g.oh; ++oy)
                for (std::size_t ox = 0; ox < g.ow; ++ox, ++o) {
                    const std::size_t k0 = oy * g.sh * g.w + ox * g.sw;
                    const std::size_t ks[4] = {k0, k0 + 1, k0 + g.w, k0 + g.w + 1};
                    const T v[4] = {xs[ks[0]], xs[ks[1]], xs[ks[2]], xs[ks[3]]};
                    // The first maximum; a NaN wins and stops. Index arithmetic, not branches: on real
                    // data the comparisons are coin flips, whose mispredictions cost most of the pooling.
                    std::size_t u = 0;
                    for (std::size_t r = 1; r < 4; ++r) {
                        const T b = v[u];
                        const std::size_t take = static_cast<std::size_t>((b == b) & ((v[r] > b) | (v[r] != v[r])));
                        u += (r - u) * take;
                    }
                    const std::size_t arg = ks[u];
                    y.data[o] = v[u];
                    idx[o] = static_cast<std::int64_t>(p * g.hw() + arg);
                }
        }
        return y;
    }
    if (unpadded) {  // every tap inside: no bounds tests
        for (std::size_t p = 0; p < g.n * g.c; ++p) {
            const T* xs = x.data + p * g.hw();
            for (std::size_t oy = 0; oy < g.oh; ++oy)
                for (std::size_t ox = 0; ox < g.ow; ++ox, ++o) {
                    const std::size_t k0 = oy * g.sh * g.w + ox * g.sw;
                    std::size_t arg = k0;
                    T best = xs[k0];
                    for (std::size_t i = 0; i < g.kh && best == best; ++i)
                        for (std::size_t j = 0; j < g.kw; ++j) {
                            const T v = xs[k0 + i * g.w + j];
                            if (v > best || v != v) {
                                best = v, arg = k0 + i * g.w + j;
                                if (v != v) break;  // NaN propagates, as in PyTorch
                            }
                        }
                    y.data[o] = best;
                    idx[o] = static_cast<std::int64_t>(p * g.hw() + arg);
                }
        }
        return y;
    }
    for (std::size_t p = 0; p < g.n * g.c; ++p) {
        const T* xs = x.data + p * g.hw();
        for (std::size_t oy = 0; oy < g.oh; ++oy)
            for (std::size_t ox = 0; ox < g.ow; ++ox, ++o) {
                T best = -std::numeric_limits<T>::infinity();
                std::size_t arg = std::size_t(-1);
                for (std::size_t i = 0; i < g.kh; ++i) {
                    const std::size_t yy = oy * g.sh + i;
                    if (yy < g.pt || yy - g.pt >= g.h) continue;
                    for (std::size_t j = 0; j < g.kw; ++j) {
                        const std::size_t xx = ox * g.sw + j;
                        if (xx < g.pl || xx - g.pl >= g.w) continue;
                        const std::size_t k = (yy - g.pt) * g.w + (xx - g.pl);
                        const T v = xs[k];
                        if (arg == std::size_t(-1) || v > best || v != v) {
                            best = v, arg = k;
                            if (v != v) i = g.kh, j = g.kw;  // NaN propagates, as in PyTorch
                        }
                    }
                }
                y.data[o] = best;
                idx[o] = static_cast<std::int64_t>(p * g.hw() + arg);
            }
    }
    return y;
}

/// Average over each window (the divisor counts the padding, PyTorch's count_include_pad).
template <class T>
Ref<T> k_avg_pool(Tape<T>& t, const Ref<T>& x, const std::int64_t* a) {
    const ConvGeom g = geom_of(a, x.shape[0], x.shape[1], x.shape[1]);
    Ref<T> y = t.alloc(Shape{g.n, g.c, g.oh, g.ow});
    const T inv = T(1) / static_cast<T>(g.kh * g.kw);
    std::size_t o = 0;
    for (std::size_t p = 0; p < g.n * g.c; ++p) {
        const T* xs = x.data + p * g.hw();
        for (std::size_t oy = 0; oy < g.oh; ++oy)
            for (std::size_t ox = 0; ox < g.ow; ++ox, ++o) {
                T s = T(0);
                for (std::size_t i = 0; i < g.kh; ++i) {
                    const std::size_t yy = oy * g.sh + i;
                    if (yy < g.pt || yy - g.pt >= g.h) continue;
                    for (std::size_t j = 0; j < g.kw; ++j) {
                        const std::size_t xx = ox * g.sw + j;
                        if (xx >= g.pl && xx - g.pl < g.w) s += xs[(yy - g.pt) * g.w + (xx - g.pl)];
                    }
                }
                y.data[o] = s * inv;
            }
    }
    return y;
}

/// The adjoint of k_avg_pool: each window's value over its divisor, added back into the input.
template <class T>
Ref<T> k_avg_pool_t(Tape<T>& t, const Ref<T>& gy, const std::int64_t* a) {
    const ConvGeom g = geom_of(a, gy.shape[0], gy.shape[1], gy.shape[1]);
    Ref<T> x = t.alloc(Shape{g.n, g.c, g.h, g.w});
    for (std::size_t i = 0; i < x.size(); ++i) x.data[i] = T(0);
    const T inv = T(1) / static_cast<T>(g.kh * g.kw);
    std::size_t o = 0;
    for (std::size_t p = 0; p < g.n * g.c; ++p) {
        T* xs = x.data + p * g.hw();
        for (std::size_t oy = 0; oy < g.oh; ++oy)
            for (std::size_t ox = 0; ox < g.ow; ++ox, ++o) {
                const T v = gy.data[o] * inv;
                for (std::size_t i = 0; i < g.kh; ++i) {
                    const std::size_t yy = oy * g.sh + i;
                    if (yy < g.pt || yy - g.pt >= g.h) continue;
                    for (std::size_t j = 0; j < g.kw; ++j) {
                        const std::size_t xx = ox * g.sw + j;
                        if (xx >= g.pl && xx - g.pl < g.w) xs[(yy - g.pt) * g.w + (xx - g.pl)] += v;
                    }
                }
            }
    }
    return x;
}

/// Nearest-neighbour upsampling by integer factors (sh, sw) of an (n, c, h, w) value.
template <class T>
Ref<T> k_upsample(Tape<T>& t, const Ref<T>& x, std::size_t sh, std::size_t sw) {
    const std::size_t nc = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3];
    Ref<T> y = t.alloc(Shape{x.shape[0], x.shape[1], h * sh, w * sw});
    T* o = y.data;
    for (std::size_t p = 0; p < nc; ++p)
        for (std::size_t i = 0; i < h * sh; ++i) {
            const T* row = x.data + (p * h + i / sh) * w;
            for (std::size_t j = 0; j < w * sw; ++j) *o++ = row[j / sw];
        }
    return y;
}
/// The adjoint of k_upsample: sums of (sh, sw) blocks.
template <class T>
Ref<T> k_block_sum(Tape<T>& t, const Ref<T>& g, std::size_t sh, std::size_t sw) {
    const std::size_t nc = g.shape[0] * g.shape[1], h = g.shape[2] / sh, w = g.shape[3] / sw;
    Ref<T> x = t.alloc(Shape{g.shape[0], g.shape[1], h, w});
    for (std::size_t i = 0; i < x.size(); ++i) x.data[i] = T(0);
    const T* s = g.data;
    for (std::size_t p = 0; p < nc; ++p)
        for (std::size_t i = 0; i < h * sh; ++i) {
            T* row = x.data + (p * h + i / sh) * w;
            for (std::size_t j = 0; j < w * sw; ++j) row[j / sw] += *s++;
        }
    return x;
}
} // namespace detail

namespace detail {
/// put_add then relu's act_grad (y > 0 ? g : 0) on the pooled relu output, in one pass: every
/// position an argmax of a positive maximum y[i] (the relu output there) receives 0 + g[i] in the
/// order of i, every other position 0, the bits of the two passes.
template <class T>
Ref<T> k_max_pool_relu_back(Tape<T>& t, const Ref<T>& g, const Ref<T>& y, const std::int64_t* idx, const Shape& in) {
    Ref<T> out = t.alloc(in);
    const std::size_t m = in.numel(), n = g.size();
    for (std::size_t i = 0; i < m; ++i) out.data[i] = T(0);
    for (std::size_t i = 0; i < n; ++i)
        if (y.data[i] > T(0)) out.data[static_cast<std::size_t>(idx[i])] += g.data[i];
    return out;
}
} // namespace detail

/// Max pooling takes each window's argmax (positions stored by the forward in the arena), so its
/// rule is take's: the gradient goes back to those positions. After a convolution with a fused
/// relu (Sequential's Conv2d + ReLU), backward() applies the relu's derivative here, on the
/// pooled values, and the convolution's rule skips its pass over the whole map; grad() and
/// recorded passes keep the two steps.
template <class O, class T, class V>
void backward_max_pool(O& o, const Node<T>& n, const V& g) {
    if constexpr (std::is_same<O, detail::EagerContext<T>>::value) {
        if (const Node<T>* in = detail::relu_conv_input(o, n)) {
            const Eager<T> d{detail::k_max_pool_relu_back(o.t, g.r, n.out, n.index, in->out.shape), &o.t};
            o.acc(n, 0, d);
            o.relu_applied = d.r.data;
            return;
        }
    }
    backward_take(o, n, g);
}
TAPIR_OP(max_pool, "max_pool2d", backward_max_pool);

template <class T, template <class> class V>
detail::val<V, T> avg_pool_core(const V<T>& x, const std::int64_t* attrs);
template <class T, template <class> class V>
detail::val<V, T> avg_pool_t_core(const V<T>& g, const std::int64_t* attrs);
template <class O, class T, class V>
void backward_avg_pool(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, avg_pool_t_core(g, n.index));
}
TAPIR_OP(avg_pool, "avg_pool2d", backward_avg_pool);
template <class O, class T, class V>
void backward_avg_pool_t(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, avg_pool_core(g, n.index));
}
TAPIR_OP(avg_pool_t, "avg_pool2d_adjoint", backward_avg_pool_t);
template <class T, template <class> class V>
detail::val<V, T> avg_pool_core(const V<T>& x, const std::int64_t* attrs) {
    Tape<T>& t = detail::tape_of(x);
    return detail::emit(t, op_avg_pool<T>, detail::k_avg_pool(t, detail::ref(x), attrs), detail::set_index(attrs), x);
}
template <class T, template <class> class V>
detail::val<V, T> avg_pool_t_core(const V<T>& g, const std::int64_t* attrs) {
    Tape<T>& t = detail::tape_of(g);
    return detail::emit(t, op_avg_pool_t<T>, detail::k_avg_pool_t(t, detail::ref(g), attrs), detail::set_index(attrs), g);
}

namespace detail {
/// Checks a pooling's operands and returns its geometry array.
template <class T>
const std::int64_t* pool_attrs(Tape<T>& t, const char* op, const Shape& x, Size2 k, Size2 s, const Pad2d& p) {
    if (x.rank() != 4) throw shape_error(std::string(op) + ": expected a 4-D input (N, C, H, W), got " + x.str());
    if (k.h == 0 || k.w == 0 || s.h == 0 || s.w == 0)
        throw value_error(std::string(op) + ": kernel and stride must be positive (input " + x.str() + ")");
    if (2 * p.top > k.h || 2 * p.bottom > k.h || 2 * p.left > k.w || 2 * p.right > k.w)
        throw value_error(std::string(op) + ": padding must be at most half the kernel " + std::to_string(k.h) + " x " + std::to_string(k.w) +
                          " (input " + x.str() + ")");
    if (x[2] + p.top + p.bottom < k.h || x[3] + p.left + p.right < k.w)
        throw shape_error(std::string(op) + ": input " + x.str() + " vs kernel (" + std::to_string(k.h) + ", " + std::to_string(k.w) +
                          "): the kernel is larger than the padded input (" + std::to_string(x[2] + p.top + p.bottom) + " x " +
                          std::to_string(x[3] + p.left + p.right) + ")");
    return conv_attrs(t, k, s, p, Size2(1), 1, x[2], x[3]);
}
/// Runs a 2-D op on (N, C, L) as (N, C, 1, L) and renames its errors.
template <class F>
auto as_1d(const char* op1, const char* op2, F f) -> decltype(f()) {
    try {
        return f();
    } catch (const shape_error& e) {
        std::string m = e.what();
        if (m.rfind(op2, 0) == 0) m = op1 + m.substr(std::string(op2).size());
        throw shape_error(m);
    }
}
} // namespace detail

/// Max pooling over (kh, kw) windows: x (N, C, H, W); stride defaults to the kernel; padding
/// (at most half the kernel) never wins a window. The gradient goes to the first maximum of each window.
template <class T>
Var<T> max_pool2d(const Var<T>& x, Size2 kernel, Size2 stride = 0, Pad2d padding = 0) {
    if (stride.h == 0 && stride.w == 0) stride = kernel;
    Tape<T>& t = x.tape();
    const std::int64_t* a = detail::pool_attrs(t, "max_pool2d", x.shape(), kernel, stride, padding);
    std::int64_t* idx = nullptr;
    const Ref<T> out = detail::k_max_pool(t, x.ref(), a, idx);
    return detail::emit(t, op_max_pool<T>, out, detail::set_index(idx), x);
}
/// Average pooling, the padding counted in the divisor (PyTorch's default count_include_pad).
template <class T>
Var<T> avg_pool2d(const Var<T>& x, Size2 kernel, Size2 stride = 0, Pad2d padding = 0) {
    if (stride.h == 0 && stride.w == 0) stride = kernel;
    Tape<T>& t = x.tape();
    return avg_pool_core(x, detail::pool_attrs(t, "avg_pool2d", x.shape(), kernel, stride, padding));
}
namespace detail {
inline void check_pool1d(const char* op, const Shape& s, std::size_t kernel, std::size_t padding) {
    if (s.rank() != 3) throw shape_error(std::string(op) + ": expected a 3-D input (N, C, L), got " + s.str());
    if (kernel > 0 && 2 * padding <= kernel && s[2] + 2 * padding < kernel)
        throw shape_error(std::string(op) + ": input " + s.str() + " vs kernel (" + std::to_string(kernel) +
                          "): the kernel is larger than the padded input (" + std::to_string(s[2] + 2 * padding) + ")");
}
/// A 1-D pooling of (N, C, L): pool2d (max_pool2d or avg_pool2d, named op2) on a height of one.
template <class T, class Pool2d>
Var<T> pool1d(const char* op1, const char* op2, Pool2d pool2d, const Var<T>& x, std::size_t kernel, std::size_t stride,
              std::size_t padding) {
    const Shape s = x.shape();
    check_pool1d(op1, s, kernel, padding);
    return as_1d(op1, op2, [&] {
        const Var<T> y = pool2d(reshape(x, Shape{s[0], s[1], 1, s[2]}), Size2(1, kernel), Size2(1, stride ? stride : kernel), Pad2d(0, padding));
        return reshape(y, Shape{s[0], s[1], y.shape()[3]});
    });
}
} // namespace detail
/// Max pooling of (N, C, L) over windows of `kernel` (stride defaults to the kernel).
template <class T>
Var<T> max_pool1d(const Var<T>& x, std::size_t kernel, std::size_t stride = 0, std::size_t padding = 0) {
    return detail::pool1d("max_pool1d", "max_pool2d", max_pool2d<T>, x, kernel, stride, padding);
}
template <class T>
Var<T> avg_pool1d(const Var<T>& x, std::size_t kernel, std::size_t stride = 0, std::size_t padding = 0) {
    return detail::pool1d("avg_pool1d", "avg_pool2d", avg_pool2d<T>, x, kernel, stride, padding);
}

namespace detail {
inline std::size_t per_channel(const Shape& s) noexcept {
    const std::size_t nc = s[0] * s[1];
    return nc != 0 ? s.numel() / nc : 0;
}
} // namespace detail
/// Mean over every axis after the channel axis: (N, C, ...) to (N, C).
template <class T>
Var<T> global_avg_pool(const Var<T>& x) {
    const Shape s = x.shape();
    if (s.rank() < 3) throw shape_error("global_avg_pool: expected (N, C, L) or (N, C, H, W), got " + s.str());
    return mean(reshape(x, Shape{s[0], s[1], detail::per_channel(s)}), 2);
}
/// Maximum over every axis after the channel axis: (N, C, ...) to (N, C).
template <class T>
Var<T> global_max_pool(const Var<T>& x) {
    const Shape s = x.shape();
    if (s.rank() < 3) throw shape_error("global_max_pool: expected (N, C, L) or (N, C, H, W), got " + s.str());
    return max(reshape(x, Shape{s[0], s[1], detail::per_channel(s)}), 2);
}
/// (N, ...) to (N, product of the rest), a zero-copy reshape.
template <class T>
Var<T> flatten(const Var<T>& x) {
    const Shape s = x.shape();
    if (s.rank() < 1) throw shape_error("flatten: expected a batch axis, got shape " + s.str());
    return reshape(x, Shape{s[0], s[0] ? s.numel() / s[0] : 0});
}

// ---- nearest-neighbour upsampling -------------------------------------------------------------

template <class T, template <class> class V>
detail::val<V, T> upsample_core(const V<T>& x, std::size_t sh, std::size_t sw);
template <class T, template <class> class V>
detail::val<V, T> block_sum_core(const V<T>& g, std::size_t sh, std::size_t sw);
template <class O, class T, class V>
void backward_upsample(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, block_sum_core(g, n.i0, static_cast<std::size_t>(n.axis)));
}
TAPIR_OP(upsample, "upsample_nearest2d", backward_upsample);
template <class O, class T, class V>
void backward_block_sum(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, upsample_core(g, n.i0, static_cast<std::size_t>(n.axis)));
}
TAPIR_OP(block_sum, "block_sum2d", backward_block_sum);
namespace detail {
inline auto set_scales(std::size_t sh, std::size_t sw) {
    return [sh, sw](auto& n) {
        n.i0 = sh;
        n.axis = static_cast<std::int32_t>(sw);
    };
}
} // namespace detail
template <class T, template <class> class V>
detail::val<V, T> upsample_core(const V<T>& x, std::size_t sh, std::size_t sw) {
    Tape<T>& t = detail::tape_of(x);
    return detail::emit(t, op_upsample<T>, detail::k_upsample(t, detail::ref(x), sh, sw), detail::set_scales(sh, sw), x);
}
template <class T, template <class> class V>
detail::val<V, T> block_sum_core(const V<T>& g, std::size_t sh, std::size_t sw) {
    Tape<T>& t = detail::tape_of(g);
    return detail::emit(t, op_block_sum<T>, detail::k_block_sum(t, detail::ref(g), sh, sw), detail::set_scales(sh, sw), g);
}
/// Nearest-neighbour upsampling of (N, C, H, W) by integer factors: (N, C, H sh, W sw).
template <class T>
Var<T> upsample_nearest2d(const Var<T>& x, Size2 scale) {
    if (x.shape().rank() != 4) throw shape_error("upsample_nearest2d: expected a 4-D input (N, C, H, W), got " + x.shape().str());
    if (scale.h == 0 || scale.w == 0)
        throw value_error("upsample_nearest2d: scale factors must be positive, got " + std::to_string(scale.h) + " x " + std::to_string(scale.w));
    return upsample_core(x, scale.h, scale.w);
}

} // namespace tapir
