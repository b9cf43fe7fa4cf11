#pragma once
/// Batched linear algebra on the tape: bmm (a matrix product per batch item, rank 3 or rank 4 with
/// two batch axes, with transpose flags) and permute (reorders the axes of a value of rank up to 4,
/// e.g. (B, N, h, d) to (B, h, N, d) for attention heads). Written as ops.hpp writes its ops: the
/// backward rules compute with bmm and permute themselves, so every order of derivative follows.
///
///     Var<float> s = bmm(q, k, false, true);  // (B, h, N, d) x (B, h, N, d)^T -> (B, h, N, N)
///     Var<float> p = permute(x, {0, 2, 1});   // (B, N, F) -> (B, F, N)

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

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
} // namespace detail

// ---- bmm: one matrix product per batch item ------------------------------------------------------

template <class O, class T, class V>
void backward_bmm(O& o, const Node<T>& n, const V& g) {
    const bool ta = n.flags & 1, tb = (n.flags & 2) != 0;
    const V a = o.in(n, 0), b = o.in(n, 1);
    // As matmul, per batch item: dop(A) = G op(B)^T, dop(B) = op(A)^T G, then undo each op.
    if (o.needs(n, 0)) o.acc(n, 0, ta ? bmm(b, g, tb, true) : bmm(g, b, false, !tb));
    if (o.needs(n, 1)) o.acc(n, 1, tb ? bmm(g, a, true, ta) : bmm(a, g, !ta, false));
}
TAPIR_OP(bmm, "bmm", backward_bmm);
/// op(a[i]) op(b[i]) for every batch item i: a (..., m, k), b (..., k, n) of rank 3 or 4 with the same
/// batch axes; op transposes the last two axes when its flag is set (by the GEMM's packing, no copy).
/// torch.matmul on equal batch shapes (torch.bmm for rank 3).
template <class T, template <class> class V>
detail::val<V, T> bmm(const V<T>& a, const V<T>& b, bool transpose_a = false, bool transpose_b = false) {
    Tape<T>& t = detail::same_tape(a, b, "bmm");
    const auto flags = static_cast<std::uint8_t>((transpose_a ? 1 : 0) | (transpose_b ? 2 : 0));
    return detail::emit(t, op_bmm<T>, detail::k_bmm(t, detail::ref(t, a), detail::ref(t, b), transpose_a, transpose_b),
                        [flags](Node<T>& n) { n.flags = flags; }, a, b);
}

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

} // namespace tapir
