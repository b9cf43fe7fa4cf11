#pragma once
/// Batched linear algebra on the tape: bmm (a matrix product per batch item, rank 3 or rank 4 with
/// two batch axes, with transpose flags) and permute (reorders the axes of a value of rank up to 4,
/// e.g. (B, N, h, d) to (B, h, N, d) for attention heads) and masked_softmax (softmax along the last
/// axis with masked entries at exactly zero, the attention weights over padded sets). Written as ops.hpp writes its ops: the
/// backward rules compute with bmm and permute themselves, so every order of derivative follows.
///
///     Var<float> s = bmm(q, k, false, true);  // (B, h, N, d) x (B, h, N, d)^T -> (B, h, N, N)
///     Var<float> p = permute(x, {0, 2, 1});   // (B, N, F) -> (B, F, N)

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>

#include "../simd/elementwise.hpp"
#include "../simd/math.hpp"
#include "kernels.hpp"
#include "ops.hpp"
#include "tape.hpp"

namespace tapir {

namespace detail {
/// (batch count, rows, cols) of a value seen as a stack of matrices.
struct MatStack {
    std::size_t batch = 1, rows = 0, cols = 0;
};
inline MatStack mat_stack(const Shape& s) noexcept {
    MatStack m;
    const std::size_t r = s.rank();
    for (std::size_t i = 0; i + 2 < r; ++i) m.batch *= s[i];
    m.rows = s[r - 2];
    m.cols = s[r - 1];
    return m;
}

/// One GEMM per batch item: out[i] = op(a[i]) op(b[i]). Both operands have rank 3 or 4 and the same
/// batch axes (no broadcasting: a shared matrix is a 2-D matmul on a reshaped value).
template <class T>
Ref<T> k_bmm(Tape<T>& t, const Ref<T>& a, const Ref<T>& b, bool ta, bool tb) {
    const std::size_t r = a.shape.rank();
    if (r < 3 || r > 4 || b.shape.rank() != r) throw_shape("bmm", a.shape, b.shape, "expects two rank-3 or two rank-4 operands");
    for (std::size_t i = 0; i + 2 < r; ++i)
        if (a.shape[i] != b.shape[i]) throw_shape("bmm", a.shape, b.shape, "batch axes differ");
    const MatStack sa = mat_stack(a.shape), sb = mat_stack(b.shape);
    const std::size_t m = ta ? sa.cols : sa.rows, k = ta ? sa.rows : sa.cols;
    const std::size_t kb = tb ? sb.cols : sb.rows, n = tb ? sb.rows : sb.cols;
    if (k != kb)
        throw shape_error(std::string("bmm: inner dimensions differ: ") + a.shape.str() + (ta ? "^T" : "") + " vs " + b.shape.str() +
                          (tb ? "^T" : ""));
    Shape os = a.shape;
    os[r - 2] = m;
    os[r - 1] = n;
    Ref<T> out = t.alloc(os);
    const std::size_t asz = sa.rows * sa.cols, bsz = sb.rows * sb.cols, osz = m * n;
    for (std::size_t i = 0; i < sa.batch; ++i)
        simd::gemm<T>(ta, tb, m, n, k, T(1), a.data + i * asz, sa.cols, b.data + i * bsz, sb.cols, T(0), out.data + i * osz, n);
    return out;
}

/// A permutation of up to 4 axes packed in 2-bit digits (axis i of the output is axis digit(i) of
/// the input), so that it fits a node's axis field.
inline std::int32_t pack_perm(const std::size_t* p, std::size_t r) noexcept {
    std::int32_t code = 0;
    for (std::size_t i = 0; i < r; ++i) code |= static_cast<std::int32_t>(p[i] << (2 * i));
    return code;
}
inline std::size_t perm_digit(std::int32_t code, std::size_t i) noexcept { return static_cast<std::size_t>(code >> (2 * i)) & 3u; }
inline std::int32_t inverse_perm(std::int32_t code, std::size_t r) noexcept {
    std::size_t inv[4] = {0, 1, 2, 3};
    for (std::size_t i = 0; i < r; ++i) inv[perm_digit(code, i)] = i;
    return pack_perm(inv, r);
}

template <class T>
Ref<T> k_permute(Tape<T>& t, const Ref<T>& a, std::int32_t code) {
    const std::size_t r = a.shape.rank();
    Shape os;
    for (std::size_t i = 0; i < r; ++i) os.push_back(a.shape[perm_digit(code, i)]);
    Ref<T> out = t.alloc(os);
    // Input strides, then the input stride of each output axis, all padded to 4 axes at the front.
    std::size_t in_stride[4] = {0, 0, 0, 0}, st[4] = {0, 0, 0, 0}, od[4] = {1, 1, 1, 1};
    std::size_t s = 1;
    for (std::size_t i = r; i-- > 0;) {
        in_stride[i] = s;
        s *= a.shape[i];
    }
    for (std::size_t i = 0; i < r; ++i) {
        st[4 - r + i] = in_stride[perm_digit(code, i)];
        od[4 - r + i] = os[i];
    }
    T* dst = out.data;
    for (std::size_t i0 = 0; i0 < od[0]; ++i0)
        for (std::size_t i1 = 0; i1 < od[1]; ++i1)
            for (std::size_t i2 = 0; i2 < od[2]; ++i2) {
                const T* src = a.data + i0 * st[0] + i1 * st[1] + i2 * st[2];
                const std::size_t s3 = st[3];
                for (std::size_t i3 = 0; i3 < od[3]; ++i3) *dst++ = src[i3 * s3];
            }
    return out;
}

/// Softmax along the last axis, one row at a time on the SIMD exp. With a mask (first axis, last
/// axis) of 1/0, entries whose mask is 0 get exactly 0 and the rest share 1; a row with every entry
/// masked is all 0.
template <class T>
Ref<T> k_masked_softmax(Tape<T>& t, const Ref<T>& a, const Ref<T>* mask) {
    const std::size_t r = a.shape.rank();
    if (r == 0) throw shape_error("masked_softmax: expects at least 1-D, got shape " + a.shape.str());
    const std::size_t n = a.shape[r - 1], rows = n ? a.size() / n : 0;
    if (mask && (r < 2 || mask->shape != Shape{a.shape[0], n}))
        throw_shape("masked_softmax", a.shape, mask->shape, "expected a mask of shape (first axis, last axis)");
    const std::size_t per_item = mask && a.shape[0] ? rows / a.shape[0] : 1;
    Ref<T> out = t.alloc(a.shape);
    for (std::size_t i = 0; i < rows; ++i) {
        const T* x = a.data + i * n;
        T* y = out.data + i * n;
        const T* mk = mask ? mask->data + (i / per_item) * n : nullptr;
        T m = -std::numeric_limits<T>::infinity();
        for (std::size_t l = 0; l < n; ++l)
            if ((!mk || mk[l] != T(0)) && x[l] > m) m = x[l];
        if (!(m > -std::numeric_limits<T>::infinity())) {
            for (std::size_t l = 0; l < n; ++l) y[l] = T(0);
            continue;
        }
        simd::add_scalar(x, -m, y, n);
        simd::exp(y, y, n);
        if (mk)
            for (std::size_t l = 0; l < n; ++l) y[l] = mk[l] != T(0) ? y[l] : T(0);
        simd::mul_scalar(y, T(1) / simd::sum(y, n), y, n);
    }
    return out;
}

/// y (g - sum(g y)) per row of the last axis: the softmax's vector-Jacobian product in one pass.
template <class T>
Ref<T> k_softmax_grad(Tape<T>& t, const Ref<T>& g, const Ref<T>& y) {
    if (g.shape != y.shape || g.shape.rank() == 0) throw_shape("softmax_grad", g.shape, y.shape);
    const std::size_t n = g.shape[g.shape.rank() - 1], rows = n ? g.size() / n : 0;
    Ref<T> out = t.alloc(g.shape);
    for (std::size_t i = 0; i < rows; ++i) {
        const T* gr = g.data + i * n;
        const T* yr = y.data + i * n;
        T* o = out.data + i * n;
        const T d = simd::dot(gr, yr, n);
        for (std::size_t l = 0; l < n; ++l) o[l] = yr[l] * (gr[l] - d);
    }
    return out;
}
} // namespace detail

// ---- bmm: one matrix product per batch item ------------------------------------------------------

/// op(a[i]) op(b[i]) for every batch item i: a (..., m, k), b (..., k, n) of rank 3 or 4 with the same
/// batch axes; op transposes the last two axes when its flag is set (by the GEMM's packing, no copy).
/// torch.matmul on equal batch shapes (torch.bmm for rank 3). Its rule is matmul's, per batch item.
TAPIR_PRODUCT_OP(bmm, k_bmm);

// ---- permute: reorder axes -------------------------------------------------------------------------

template <class O, class T, class V>
void backward_permute(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, permute_code(g, detail::inverse_perm(n.axis, o.shape(n, 0).rank())));
}
TAPIR_OP(permute, "permute", backward_permute);
/// permute() with the permutation already packed and checked (what the backward rule calls).
template <class T, template <class> class V>
detail::val<V, T> permute_code(const V<T>& a, std::int32_t code) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_permute<T>, detail::k_permute(t, detail::ref(a), code), [code](Node<T>& n) { n.axis = code; }, a);
}
/// Axis i of the result is axis axes[i] of a (torch.permute): permute(x, {0, 2, 1}) swaps the last
/// two axes of a rank-3 value. The result is a contiguous copy.
template <class T, template <class> class V>
detail::val<V, T> permute(const V<T>& a, std::initializer_list<std::size_t> axes) {
    const Shape s = a.shape();
    const std::size_t r = s.rank();
    std::size_t p[4] = {0, 0, 0, 0};
    bool seen[4] = {false, false, false, false};
    bool ok = axes.size() == r;
    std::size_t i = 0;
    for (std::size_t ax : axes) {
        if (!ok || ax >= r || seen[ax]) {
            ok = false;
            break;
        }
        seen[ax] = true;
        p[i++] = ax;
    }
    if (!ok) {
        std::string list;
        for (std::size_t ax : axes) list += (list.empty() ? "" : ", ") + std::to_string(ax);
        throw shape_error("permute: (" + list + ") is not a permutation of the axes of shape " + s.str());
    }
    return permute_code(a, detail::pack_perm(p, r));
}

// ---- masked softmax along the last axis -------------------------------------------------------

/// The rule of softmax_grad for higher orders: with s = sum(g y) per row, out = y (g - s) is linear
/// in g with the symmetric Jacobian diag(y) - y y^T, so d/dg is softmax_grad again, and
/// d out_i / d y_k = delta_ik (g_i - s) - y_i g_k.
template <class O, class T, class V>
void backward_softmax_grad(O& o, const Node<T>& n, const V& gbar) {
    const V g = o.in(n, 0), y = o.in(n, 1);
    if (o.needs(n, 0)) o.acc(n, 0, softmax_grad(gbar, y));
    if (o.needs(n, 1)) {
        const V s = sum(mul(g, y), -1, true), u = sum(mul(gbar, y), -1, true);
        o.acc(n, 1, sub(mul(gbar, sub(g, s)), mul(g, u)));
    }
}
TAPIR_OP(softmax_grad, "softmax_grad", backward_softmax_grad);
/// y (g - sum(g y)) along the last axis: the gradient through a softmax y along that axis, fused.
template <class T, template <class> class V>
detail::val<V, T> softmax_grad(const V<T>& g, const V<T>& y) { return detail::binary<detail::k_softmax_grad<T>>(op_softmax_grad<T>, g, y); }

template <class O, class T, class V>
void backward_masked_softmax(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, softmax_grad(g, o.out(n)));  // the mask (input 1) is a constant: no gradient
}
TAPIR_OP(masked_softmax, "masked_softmax", backward_masked_softmax);
/// Softmax along the last axis (the values of softmax(x, -1), one fused backward pass).
template <class T, template <class> class V>
detail::val<V, T> masked_softmax(const V<T>& x) {
    Tape<T>& t = detail::tape_of(x);
    return detail::emit(t, op_masked_softmax<T>, detail::k_masked_softmax(t, detail::ref(x), static_cast<const Ref<T>*>(nullptr)),
                        detail::no_attrs{}, x);
}
/// Softmax along the last axis of x (first axis B, last axis N) over the entries whose mask (B, N)
/// is 1; entries masked by 0 are exactly 0 (PyTorch's softmax after masked_fill with -inf), a row
/// with nothing left is all 0 (PyTorch: NaN). Attention weights over padded sets: x (B, h, N, N).
template <class T, template <class> class V>
detail::val<V, T> masked_softmax(const V<T>& x, const V<T>& mask) {
    Tape<T>& t = detail::same_tape(x, mask, "masked_softmax");
    const Ref<T> m = detail::ref(t, mask);
    return detail::emit(t, op_masked_softmax<T>, detail::k_masked_softmax(t, detail::ref(t, x), &m), detail::no_attrs{}, x, mask);
}

} // namespace tapir
