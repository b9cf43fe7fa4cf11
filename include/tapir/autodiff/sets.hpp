#pragma once
/// Ops on sets and graphs: sets are (B, N, F) values with a (B, N) mask of 1 (real particle) and
/// 0 (padding). Indices live in the tape's arena (Node::index) so a step allocates nothing.
///
/// Two index ops carry every gather and scatter: take and its adjoint put_add (take.hpp), each the
/// other's backward rule. torch.gather, scatter_add, index_select, index_add, masked max and
/// segment sums and maxima are index computations on top of them.
///
/// Weighted set sums rest on one trilinear form sum over (b, n, f) of x[b,n,f] w[b,n] g[b,f]: its three
/// partial contractions (set_sum, set_expand, set_dot) are each other's backward rules. Masked
/// sum and mean, the Energy Flow Network's pT-weighted sum and EdgeConv's neighbour mean use it.
///
/// Conventions: an all-masked row (or an empty segment) reduces to 0 and passes no gradient, for
/// sum, mean and max alike. Masks and lengths are constants: no gradient flows into them.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "kernels.hpp"
#include "ops.hpp"
#include "take.hpp"
#include "tape.hpp"

namespace tapir {

// ---- kernels ----------------------------------------------------------------------------------

namespace detail {

/// A (B, N, F) value against a (B, N) weight, with the error naming both shapes.
inline void check_set_pair(const char* op, const Shape& x, const Shape& w) {
    if (x.rank() != 3 || w.rank() != 2 || x[0] != w[0] || x[1] != w[1])
        throw_shape(op, x, w, "expects a set of shape (B, N, F) and a mask or weight of shape (B, N)");
}
inline void check_set_event(const char* op, const Shape& x, const Shape& g) {
    if (x.rank() != 3 || g.rank() != 2 || x[0] != g[0] || x[2] != g[1])
        throw_shape(op, x, g, "expects a set of shape (B, N, F) and an event value of shape (B, F)");
}
inline void check_event_weight(const char* op, const Shape& g, const Shape& w) {
    if (g.rank() != 2 || w.rank() != 2 || g[0] != w[0])
        throw_shape(op, g, w, "expects an event value of shape (B, F) and a weight of shape (B, N)");
}

/// out[b,f] = sum_n w[b,n] x[b,n,f].
template <class T>
Ref<T> k_set_sum(Tape<T>& t, const Ref<T>& x, const Ref<T>& w) {
    check_set_pair("set_sum", x.shape, w.shape);
    const std::size_t B = x.shape[0], N = x.shape[1], F = x.shape[2];
    Ref<T> out = t.alloc(Shape{B, F});
    for (std::size_t b = 0; b < B; ++b) {
        T* o = out.data + b * F;
        for (std::size_t f = 0; f < F; ++f) o[f] = T(0);
        for (std::size_t n = 0; n < N; ++n) {
            const T wn = w.data[b * N + n];
            if (wn == T(0)) continue;
            const T* xr = x.data + (b * N + n) * F;
            for (std::size_t f = 0; f < F; ++f) o[f] += wn * xr[f];
        }
    }
    return out;
}

/// out[b,n,f] = g[b,f] w[b,n].
template <class T>
Ref<T> k_set_expand(Tape<T>& t, const Ref<T>& g, const Ref<T>& w) {
    check_event_weight("set_expand", g.shape, w.shape);
    const std::size_t B = g.shape[0], F = g.shape[1], N = w.shape[1];
    Ref<T> out = t.alloc(Shape{B, N, F});
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t n = 0; n < N; ++n) {
            const T wn = w.data[b * N + n];
            const T* gr = g.data + b * F;
            T* o = out.data + (b * N + n) * F;
            for (std::size_t f = 0; f < F; ++f) o[f] = wn * gr[f];
        }
    return out;
}

/// out[b,n] = sum_f x[b,n,f] g[b,f].
template <class T>
Ref<T> k_set_dot(Tape<T>& t, const Ref<T>& x, const Ref<T>& g) {
    check_set_event("set_dot", x.shape, g.shape);
    const std::size_t B = x.shape[0], N = x.shape[1], F = x.shape[2];
    Ref<T> out = t.alloc(Shape{B, N});
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t n = 0; n < N; ++n) {
            const T* xr = x.data + (b * N + n) * F;
            const T* gr = g.data + b * F;
            T s = T(0);
            for (std::size_t f = 0; f < F; ++f) s += xr[f] * gr[f];
            out.data[b * N + n] = s;
        }
    return out;
}

/// Index array of n entries in the arena (freed with the tape's next clear()).
template <class T>
std::int64_t* arena_indices(Tape<T>& t, std::size_t n) {
    return static_cast<std::int64_t*>(t.arena().allocate(n * sizeof(std::int64_t) + 1));
}

/// Row-major strides of a shape.
inline void strides_of(const Shape& s, std::size_t st[4]) noexcept {
    std::size_t acc = 1;
    for (std::size_t i = s.rank(); i-- > 0;) {
        st[i] = acc;
        acc *= s[i];
    }
}
} // namespace detail

namespace detail {
/// Flat positions in `target` for an index tensor of shape ishape along axis (torch.gather and
/// scatter_add): position p of the index reads target at p's coordinates with axis replaced by index[p].
template <class T>
const std::int64_t* axis_positions(Tape<T>& t, const char* op, const Shape& target, std::size_t axis, const Shape& ishape,
                                   const std::vector<std::int64_t>& index) {
    if (ishape.rank() != target.rank()) throw_shape(op, target, ishape, "index rank differs from the value's rank");
    for (std::size_t d = 0; d < target.rank(); ++d)
        if (d != axis && ishape[d] > target[d]) throw_shape(op, target, ishape, "index is larger than the value off the axis");
    if (index.size() != ishape.numel())
        throw value_error(std::string(op) + ": " + std::to_string(index.size()) + " index values given for an index of shape " + ishape.str());
    std::size_t ts[4], is[4];
    strides_of(target, ts);
    strides_of(ishape, is);
    const auto len = static_cast<std::int64_t>(target[axis]);
    std::int64_t* p = arena_indices(t, index.size());
    for (std::size_t i = 0; i < index.size(); ++i) {
        const std::int64_t v = index[i];
        if (v < 0 || v >= len)
            throw value_error(std::string(op) + ": index " + std::to_string(v) + " at position " + std::to_string(i) + " is out of range for axis " +
                              std::to_string(axis) + " of shape " + target.str());
        std::size_t rest = i, off = 0;
        for (std::size_t d = 0; d < ishape.rank(); ++d) {
            const std::size_t c = rest / is[d];
            rest -= c * is[d];
            off += (d == axis ? static_cast<std::size_t>(v) : c) * ts[d];
        }
        p[i] = static_cast<std::int64_t>(off);
    }
    return p;
}
} // namespace detail

/// torch.gather(a, axis, index): out has the index's shape and out[..i..] = a[..index[..i..]..] with
/// the index replacing the coordinate on `axis`. index holds index_shape.numel() values, row-major.
template <class T, template <class> class V>
detail::val<V, T> gather(const V<T>& a, std::int64_t axis, const Shape& index_shape, const std::vector<std::int64_t>& index) {
    Tape<T>& t = detail::tape_of(a);
    const Shape s = a.shape();
    const std::size_t ax = detail::normalize_axis(axis, s, "gather");
    return take_raw(a, detail::axis_positions(t, "gather: value vs index", s, ax, index_shape, index), index_shape);
}

/// zeros(out_shape).scatter_add(axis, index, src) in PyTorch: src[..i..] is added at out's
/// coordinates with axis replaced by index[..i..]; the index has src's shape.
template <class T, template <class> class V>
detail::val<V, T> scatter_add(const V<T>& src, std::int64_t axis, const std::vector<std::int64_t>& index, const Shape& out_shape) {
    Tape<T>& t = detail::tape_of(src);
    const Shape s = src.shape();
    const std::size_t ax = detail::normalize_axis(axis, out_shape, "scatter_add");
    return put_add_raw(src, detail::axis_positions(t, "scatter_add: output vs source", out_shape, ax, s, index), out_shape);
}

namespace detail {
/// Flat positions of index_select along axis: out has a's shape with that axis of length idx.size().
template <class T>
const std::int64_t* select_positions(Tape<T>& t, const char* op, const Shape& a, std::size_t axis, const std::vector<std::int64_t>& idx,
                                     Shape& out) {
    out = a;
    out[axis] = idx.size();
    std::size_t outer = 1, inner = 1;
    for (std::size_t d = 0; d < axis; ++d) outer *= a[d];
    for (std::size_t d = axis + 1; d < a.rank(); ++d) inner *= a[d];
    const std::size_t len = a[axis], m = idx.size();
    for (std::size_t j = 0; j < m; ++j)
        if (idx[j] < 0 || static_cast<std::size_t>(idx[j]) >= len)
            throw value_error(std::string(op) + ": index " + std::to_string(idx[j]) + " at position " + std::to_string(j) + " is out of range for axis " +
                              std::to_string(axis) + " of shape " + a.str());
    std::int64_t* p = arena_indices(t, outer * m * inner);
    std::size_t k = 0;
    for (std::size_t o = 0; o < outer; ++o)
        for (std::size_t j = 0; j < m; ++j)
            for (std::size_t i = 0; i < inner; ++i) p[k++] = static_cast<std::int64_t>((o * len + static_cast<std::size_t>(idx[j])) * inner + i);
    return p;
}
} // namespace detail

/// torch.index_select(a, axis, idx): the slices of a at idx along axis, in order (repeats allowed).
template <class T, template <class> class V>
detail::val<V, T> index_select(const V<T>& a, std::int64_t axis, const std::vector<std::int64_t>& idx) {
    Tape<T>& t = detail::tape_of(a);
    const Shape s = a.shape();
    const std::size_t ax = detail::normalize_axis(axis, s, "index_select");
    Shape out;
    const std::int64_t* p = detail::select_positions(t, "index_select", s, ax, idx, out);
    return take_raw(a, p, out);
}

/// zeros(...).index_add(axis, idx, src) in PyTorch: slice j of src along axis is added at slice
/// idx[j] of an output whose axis has length `size` (the adjoint of index_select).
template <class T, template <class> class V>
detail::val<V, T> index_add(const V<T>& src, std::int64_t axis, const std::vector<std::int64_t>& idx, std::size_t size) {
    Tape<T>& t = detail::tape_of(src);
    Shape target = src.shape();
    const std::size_t ax = detail::normalize_axis(axis, target, "index_add");
    if (idx.size() != target[ax])
        throw shape_error("index_add: " + std::to_string(idx.size()) + " indices for axis " + std::to_string(ax) + " of source shape " + target.str());
    target[ax] = size;
    Shape sel;
    const std::int64_t* p = detail::select_positions(t, "index_add", target, ax, idx, sel);
    return put_add_raw(src, p, target);
}

// ---- weighted and masked set sums ------------------------------------------------------------------

/// set_sum(x, w) = sum_n w[b,n] x[b,n,:]: x (B, N, F), w (B, N) -> (B, F). Differentiable in both.
TAPIR_BINARY_OP(set_sum, k_set_sum, set_expand(g, b), set_dot(a, g));
/// set_expand(g, w) = g[b,:] w[b,n]: g (B, F), w (B, N) -> (B, N, F), the adjoint of set_sum in x.
TAPIR_BINARY_OP(set_expand, k_set_expand, set_sum(g, b), set_dot(g, a));
/// set_dot(x, g) = x[b,n,:] . g[b,:]: x (B, N, F), g (B, F) -> (B, N), the adjoint of set_sum in w.
TAPIR_BINARY_OP(set_dot, k_set_dot, set_expand(b, g), set_sum(a, g));

namespace detail {
/// A constant (B, N) mask from per-row lengths (1 for the first lengths[b] particles).
template <class T>
Var<T> mask_from_lengths(Tape<T>& t, const Shape& x, const std::vector<std::size_t>& lengths, const char* op) {
    if (x.rank() != 3 || lengths.size() != x[0])
        throw shape_error(std::string(op) + ": " + std::to_string(lengths.size()) + " lengths for a set of shape " + x.str() +
                          " (expects (B, N, F) and B lengths)");
    const std::size_t B = x[0], N = x[1];
    Ref<T> m = t.alloc(Shape{B, N});
    for (std::size_t b = 0; b < B; ++b) {
        if (lengths[b] > N)
            throw value_error(std::string(op) + ": length " + std::to_string(lengths[b]) + " of row " + std::to_string(b) + " exceeds the " +
                              std::to_string(N) + " particles of shape " + x.str());
        for (std::size_t n = 0; n < N; ++n) m.data[b * N + n] = n < lengths[b] ? T(1) : T(0);
    }
    return t.leaf(m, false);
}
/// The mask of a masked reduction: a (B, N) value as given, or one made from per-row lengths,
/// so each reduction is written once for both forms.
template <class T>
const Var<T>& as_mask(const Var<T>&, const Var<T>& mask, const char*) {
    return mask;
}
template <class T>
Var<T> as_mask(const Var<T>& x, const std::vector<std::size_t>& lengths, const char* op) {
    return mask_from_lengths(x.tape(), x.shape(), lengths, op);
}
/// The tape of a masked reduction's x (B, N, F) and mask (B, N), checked to match (op in the errors).
template <class T>
Tape<T>& masked_operands(const Var<T>& x, const Var<T>& mask, const char* op) {
    check_set_pair(op, x.shape(), mask.shape());
    return same_tape(x, mask, op);
}
} // namespace detail

/// Sum over the particle axis of the real particles: x (B, N, F), mask (B, N) of 1/0 -> (B, F).
/// An all-masked row gives 0. The mask is a constant (detached). Each masked reduction takes the
/// mask as a (B, N) value or as B per-row lengths (std::vector<std::size_t>: the first lengths[b]
/// particles are real).
template <class T, class Mask = std::vector<std::size_t>>
Var<T> masked_sum(const Var<T>& x, const Mask& mask_or_lengths) {
    const Var<T>& mask = detail::as_mask(x, mask_or_lengths, "masked_sum");
    detail::check_set_pair("masked_sum", x.shape(), mask.shape());
    return set_sum(x, detach(mask));
}

/// Mean over the real particles: sum_n m[b,n] x[b,n,:] / sum_n m[b,n]; an all-masked row gives 0
/// and passes no gradient (its weights are all 0), never NaN.
template <class T, class Mask = std::vector<std::size_t>>
Var<T> masked_mean(const Var<T>& x, const Mask& mask_or_lengths) {
    const Var<T>& mask = detail::as_mask(x, mask_or_lengths, "masked_mean");
    Tape<T>& t = detail::masked_operands(x, mask, "masked_mean");
    const Shape s = mask.shape();
    const std::size_t B = s[0], N = s[1];
    Ref<T> w = t.alloc(s);
    const T* m = mask.data();
    for (std::size_t b = 0; b < B; ++b) {
        T c = T(0);
        for (std::size_t n = 0; n < N; ++n) c += m[b * N + n];
        const T inv = c != T(0) ? T(1) / c : T(0);
        for (std::size_t n = 0; n < N; ++n) w.data[b * N + n] = m[b * N + n] * inv;
    }
    return set_sum(x, t.leaf(w, false));
}

/// Maximum over the real particles, per feature: (B, N, F) -> (B, F). The gradient goes to the
/// first maximal real particle (as PyTorch's max(dim)); an all-masked row gives 0 and no gradient.
template <class T, class Mask = std::vector<std::size_t>>
Var<T> masked_max(const Var<T>& x, const Mask& mask_or_lengths) {
    const Var<T>& mask = detail::as_mask(x, mask_or_lengths, "masked_max");
    Tape<T>& t = detail::masked_operands(x, mask, "masked_max");
    const Shape s = x.shape();
    const std::size_t B = s[0], N = s[1], F = s[2];
    std::int64_t* p = detail::arena_indices(t, B * F);
    const T* xd = x.data();
    const T* m = mask.data();
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t f = 0; f < F; ++f) {
            std::int64_t best = -1;
            for (std::size_t n = 0; n < N; ++n) {
                if (m[b * N + n] == T(0)) continue;
                const std::size_t k = (b * N + n) * F + f;
                if (best < 0 || xd[k] > xd[static_cast<std::size_t>(best)]) best = static_cast<std::int64_t>(k);
            }
            p[b * F + f] = best;
        }
    return take_raw(x, p, Shape{B, F});
}

// ---- segment reductions ----------------------------------------------------------------------------

namespace detail {
/// Checks offsets (S + 1 nondecreasing values from 0 to the row count) against x's first axis.
inline void check_offsets(const char* op, const Shape& x, const std::vector<std::size_t>& offsets) {
    if (x.rank() == 0) throw shape_error(std::string(op) + ": expects at least 1-D rows, got shape " + x.str());
    if (offsets.size() < 2 || offsets.front() != 0 || offsets.back() != x[0])
        throw value_error(std::string(op) + ": offsets must run from 0 to the " + std::to_string(x[0]) + " rows of shape " + x.str() + " (" +
                          std::to_string(offsets.size()) + " offsets given)");
    for (std::size_t s = 1; s < offsets.size(); ++s)
        if (offsets[s] < offsets[s - 1])
            throw value_error(std::string(op) + ": offsets decrease at position " + std::to_string(s) + " (" + std::to_string(offsets[s - 1]) +
                              " then " + std::to_string(offsets[s]) + ")");
}
inline Shape segment_shape(const Shape& x, std::size_t segments) {
    Shape out = x;
    out[0] = segments;
    return out;
}
/// A segment reduction of x by offsets (checked): the segment count S, the elements per row, and
/// the output shape (S, ...).
struct segment_layout {
    std::size_t count, inner;
    Shape out;
};
inline segment_layout segments_of(const char* op, const Shape& x, const std::vector<std::size_t>& offsets) {
    check_offsets(op, x, offsets);
    return {offsets.size() - 1, x[0] ? x.numel() / x[0] : 0, segment_shape(x, offsets.size() - 1)};
}
} // namespace detail

/// Row sums of x over segments: rows [offsets[s], offsets[s+1]) of x (M, ...) -> (S, ...). An empty
/// segment gives 0.
template <class T>
Var<T> segment_sum(const Var<T>& x, const std::vector<std::size_t>& offsets) {
    const detail::segment_layout seg = detail::segments_of("segment_sum", x.shape(), offsets);
    const std::size_t inner = seg.inner;
    std::int64_t* p = detail::arena_indices(x.tape(), x.shape().numel());
    for (std::size_t g = 0; g < seg.count; ++g)
        for (std::size_t r = offsets[g]; r < offsets[g + 1]; ++r)
            for (std::size_t i = 0; i < inner; ++i) p[r * inner + i] = static_cast<std::int64_t>(g * inner + i);
    return put_add_raw(x, p, seg.out);
}

/// Row means over segments; an empty segment gives 0 and passes no gradient.
template <class T>
Var<T> segment_mean(const Var<T>& x, const std::vector<std::size_t>& offsets) {
    const Var<T> sums = segment_sum(x, offsets);
    Tape<T>& t = x.tape();
    const std::size_t S = offsets.size() - 1;
    Shape cs = detail::segment_shape(x.shape(), S);
    for (std::size_t d = 1; d < cs.rank(); ++d) cs[d] = 1;
    Ref<T> c = t.alloc(cs);
    for (std::size_t g = 0; g < S; ++g) {
        const std::size_t len = offsets[g + 1] - offsets[g];
        c.data[g] = len ? T(1) / static_cast<T>(len) : T(0);
    }
    return mul(sums, t.leaf(c, false));
}

/// Row maxima over segments, per column; the gradient goes to the first maximal row; an empty
/// segment gives 0 and no gradient.
template <class T>
Var<T> segment_max(const Var<T>& x, const std::vector<std::size_t>& offsets) {
    const detail::segment_layout seg = detail::segments_of("segment_max", x.shape(), offsets);
    const std::size_t inner = seg.inner;
    std::int64_t* p = detail::arena_indices(x.tape(), seg.out.numel());
    const T* xd = x.data();
    for (std::size_t g = 0; g < seg.count; ++g)
        for (std::size_t i = 0; i < inner; ++i) {
            std::int64_t best = -1;
            for (std::size_t r = offsets[g]; r < offsets[g + 1]; ++r) {
                const std::size_t k = r * inner + i;
                if (best < 0 || xd[k] > xd[static_cast<std::size_t>(best)]) best = static_cast<std::int64_t>(k);
            }
            p[g * inner + i] = best;
        }
    return take_raw(x, p, seg.out);
}

// ---- k nearest neighbours --------------------------------------------------------------------------

/// Neighbour lists in the arena: index[(b N + i) k + j] is the global row b N + n of the j-th
/// nearest neighbour of point i of event b, nearest first, or -1 where the event has fewer than
/// k other real points (and for every slot of a padded point). Valid until the tape's next clear().
struct KnnIndex {
    const std::int64_t* index = nullptr;
    std::size_t batch = 0, points = 0, k = 0;
    /// The neighbour's position within its event (0 .. points), or -1.
    std::int64_t local(std::size_t b, std::size_t i, std::size_t j) const noexcept {
        const std::int64_t g = index[(b * points + i) * k + j];
        return g < 0 ? -1 : g - static_cast<std::int64_t>(b * points);
    }
};

namespace detail {
template <class T>
struct KnnCandidate {
    T d;
    std::int64_t j;
};
} // namespace detail

/// The k nearest neighbours (squared Euclidean distance, ties to the lower index) of every point
/// of coords (B, N, D) among the real points of its event, never itself; mask (B, N) of 1/0 or
/// null for all real. No gradient (indices are constants); arXiv:1801.07829 builds its dynamic
/// graph this way.
template <class T>
KnnIndex knn(const Var<T>& coords, const Var<T>* mask, std::size_t k) {
    const Shape s = coords.shape();
    if (s.rank() != 3) throw shape_error("knn: expects coordinates of shape (B, N, D), got " + s.str());
    if (mask) {
        if (mask->shape().rank() != 2 || mask->shape()[0] != s[0] || mask->shape()[1] != s[1])
            detail::throw_shape("knn: coordinates vs mask", s, mask->shape(), "expects coordinates (B, N, D) and a mask (B, N)");
        detail::same_tape(coords, *mask, "knn");
    }
    if (k == 0) throw value_error("knn: k must be positive");
    Tape<T>& t = coords.tape();
    const std::size_t B = s[0], N = s[1], D = s[2];
    std::int64_t* p = detail::arena_indices(t, B * N * k);
    auto* cand = static_cast<detail::KnnCandidate<T>*>(t.arena().allocate(N * sizeof(detail::KnnCandidate<T>) + 1));
    const T* x = coords.data();
    const T* m = mask ? mask->data() : nullptr;
    const auto less = [](const detail::KnnCandidate<T>& a, const detail::KnnCandidate<T>& b) { return a.d < b.d || (a.d == b.d && a.j < b.j); };
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t i = 0; i < N; ++i) {
            std::int64_t* row = p + (b * N + i) * k;
            std::size_t c = 0;
            if (!m || m[b * N + i] != T(0)) {
                const T* xi = x + (b * N + i) * D;
                for (std::size_t j = 0; j < N; ++j) {
                    if (j == i || (m && m[b * N + j] == T(0))) continue;
                    const T* xj = x + (b * N + j) * D;
                    T d2 = T(0);
                    for (std::size_t q = 0; q < D; ++q) {
                        const T u = xi[q] - xj[q];
                        d2 += u * u;
                    }
                    new (cand + c) detail::KnnCandidate<T>{d2, static_cast<std::int64_t>(b * N + j)};
                    ++c;
                }
            }
            const std::size_t take = c < k ? c : k;
            std::partial_sort(cand, cand + take, cand + c, less);
            for (std::size_t j = 0; j < k; ++j) row[j] = j < take ? cand[j].j : -1;
        }
    return KnnIndex{p, B, N, k};
}
template <class T>
KnnIndex knn(const Var<T>& coords, const Var<T>& mask, std::size_t k) {
    return knn(coords, &mask, k);
}

// ---- per-particle dense -----------------------------------------------------------------------------

/// act(x W + b) applied to every particle of x (B, N, F): one fused dense node on (B N, F).
template <class T>
Var<T> set_dense(const Var<T>& x, const Var<T>& w, typename detail::optional_var<T>::arg b, Activation act = Activation::none,
                 T alpha = T(0.01)) {
    const Shape s = x.shape();
    if (s.rank() != 3) detail::throw_shape("set_dense: set vs weight", s, w.shape(), "expects a set of shape (B, N, F)");
    const Var<T> y = dense(reshape(x, Shape{s[0] * s[1], s[2]}), w, b, act, alpha);
    return reshape(y, Shape{s[0], s[1], y.shape()[1]});
}

} // namespace tapir
