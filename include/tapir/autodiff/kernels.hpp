#pragma once
/// Forward kernels on arena values (Ref). They allocate their output from the tape's arena and
/// never record: the recorded ops in ops.hpp and the eager backward pass both call them.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "../error.hpp"
#include "../simd/activation.hpp"
#include "../simd/elementwise.hpp"
#include "../simd/gemm.hpp"
#include "../simd/math.hpp"
#include "tape.hpp"

namespace tapir {
namespace detail {

inline void dims4(const Shape& s, std::size_t d[4]) noexcept {
    const std::size_t r = s.rank();
    for (std::size_t i = 0; i < 4; ++i) d[i] = i + r >= 4 ? s[i + r - 4] : 1;
}
/// Strides of s read as the broadcast shape od (0 along stretched axes).
inline void broadcast_strides(const Shape& s, const std::size_t od[4], std::size_t st[4]) noexcept {
    std::size_t d[4];
    dims4(s, d);
    std::size_t acc = 1;
    for (std::size_t i = 4; i-- > 0;) {
        st[i] = (d[i] == 1 && od[i] != 1) ? 0 : acc;
        acc *= d[i];
    }
}

inline std::size_t normalize_axis(std::int64_t axis, const Shape& s, const char* op) {
    const auto r = static_cast<std::int64_t>(s.rank());
    const std::int64_t a = axis < 0 ? axis + r : axis;
    if (r == 0 || a < 0 || a >= r)
        throw shape_error(std::string(op) + ": axis " + std::to_string(axis) + " is out of range for shape " + s.str());
    return static_cast<std::size_t>(a);
}

/// (outer, len, inner) view of a shape around one axis.
struct AxisSplit {
    std::size_t outer = 1, len = 1, inner = 1;
};
inline AxisSplit split_axis(const Shape& s, std::size_t axis) noexcept {
    AxisSplit a;
    for (std::size_t i = 0; i < s.rank(); ++i) {
        if (i < axis) a.outer *= s[i];
        else if (i == axis) a.len = s[i];
        else a.inner *= s[i];
    }
    return a;
}
inline Shape reduced_shape(const Shape& s, std::size_t axis, bool keepdim) {
    Shape out;
    for (std::size_t i = 0; i < s.rank(); ++i) {
        if (i != axis) out.push_back(s[i]);
        else if (keepdim) out.push_back(1);
    }
    return out;
}

template <class T>
T stable_sigmoid(T x) noexcept {
    if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
    const T e = std::exp(x);
    return e / (T(1) + e);
}
template <class T>
T stable_softplus(T x) noexcept {
    return (x > T(0) ? x : T(0)) + std::log1p(std::exp(-std::abs(x)));
}

// ---- elementwise --------------------------------------------------------------------------

template <class T, class F>
Ref<T> k_unary(Tape<T>& t, const Ref<T>& a, F f) {
    Ref<T> out = t.alloc(a.shape);
    const std::size_t n = a.size();
    const T* TAPIR_RESTRICT x = a.data;
    T* TAPIR_RESTRICT y = out.data;
    for (std::size_t i = 0; i < n; ++i) y[i] = f(x[i]);
    return out;
}

template <class T, class F>
Ref<T> k_binary(Tape<T>& t, const Ref<T>& a, const Ref<T>& b, F f, const char* op) {
    if (a.shape == b.shape) {
        Ref<T> out = t.alloc(a.shape);
        const std::size_t n = a.size();
        for (std::size_t i = 0; i < n; ++i) out.data[i] = f(a.data[i], b.data[i]);
        return out;
    }
    const Shape os = broadcast_shapes(a.shape, b.shape, op);
    Ref<T> out = t.alloc(os);
    const std::size_t n = os.numel();
    if (os == a.shape && b.size() == 1) {
        const T s = b.data[0];
        for (std::size_t i = 0; i < n; ++i) out.data[i] = f(a.data[i], s);
        return out;
    }
    if (os == b.shape && a.size() == 1) {
        const T s = a.data[0];
        for (std::size_t i = 0; i < n; ++i) out.data[i] = f(s, b.data[i]);
        return out;
    }
    const std::size_t cols = os.cols();
    if (os == a.shape && b.size() == cols && b.shape.cols() == cols) {  // row vector over a batch
        for (std::size_t r = 0, rows = n / (cols ? cols : 1); r < rows; ++r)
            for (std::size_t j = 0; j < cols; ++j) out.data[r * cols + j] = f(a.data[r * cols + j], b.data[j]);
        return out;
    }
    std::size_t od[4], sa[4], sb[4];
    dims4(os, od);
    broadcast_strides(a.shape, od, sa);
    broadcast_strides(b.shape, od, sb);
    std::size_t o = 0;
    for (std::size_t i0 = 0; i0 < od[0]; ++i0)
        for (std::size_t i1 = 0; i1 < od[1]; ++i1)
            for (std::size_t i2 = 0; i2 < od[2]; ++i2) {
                const std::size_t ba = i0 * sa[0] + i1 * sa[1] + i2 * sa[2];
                const std::size_t bb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2];
                for (std::size_t i3 = 0; i3 < od[3]; ++i3) out.data[o++] = f(a.data[ba + i3 * sa[3]], b.data[bb + i3 * sb[3]]);
            }
    return out;
}

/// Below this many elements a plain loop beats the dispatch to a vector kernel.
constexpr std::size_t small_size = 16;

/// Same shapes: a plain loop when small, else the vector kernel vec (both compute f lane by lane);
/// other shapes broadcast through k_binary.
template <class T, class F, class G>
TAPIR_ALWAYS_INLINE Ref<T> k_lanewise(Tape<T>& t, const Ref<T>& a, const Ref<T>& b, F f, G vec, const char* name) {
    if (TAPIR_LIKELY(a.shape == b.shape)) {
        Ref<T> out = t.alloc(a.shape);
        const std::size_t n = a.size();
        if (n <= small_size)
            for (std::size_t i = 0; i < n; ++i) out.data[i] = f(a.data[i], b.data[i]);
        else
            vec(a.data, b.data, out.data, n);
        return out;
    }
    return k_binary(t, a, b, f, name);
}
template <class T>
TAPIR_ALWAYS_INLINE Ref<T> k_add(Tape<T>& t, const Ref<T>& a, const Ref<T>& b) {
    return k_lanewise(
        t, a, b, [](T x, T y) { return x + y; },
        [](const T* x, const T* y, T* o, std::size_t n) { simd::add(x, y, o, n); }, "add");
}
template <class T>
Ref<T> k_sub(Tape<T>& t, const Ref<T>& a, const Ref<T>& b) {
    return k_binary(t, a, b, [](T x, T y) { return x - y; }, "sub");
}
template <class T>
TAPIR_ALWAYS_INLINE Ref<T> k_mul(Tape<T>& t, const Ref<T>& a, const Ref<T>& b) {
    return k_lanewise(
        t, a, b, [](T x, T y) { return x * y; },
        [](const T* x, const T* y, T* o, std::size_t n) { simd::mul(x, y, o, n); }, "mul");
}
template <class T>
Ref<T> k_div(Tape<T>& t, const Ref<T>& a, const Ref<T>& b) {
    return k_binary(t, a, b, [](T x, T y) { return x / y; }, "div");
}

/// out = cond ? a : b with all three broadcast together; cond holds 0 or 1.
template <class T>
Ref<T> k_where(Tape<T>& t, const Ref<T>& c, const Ref<T>& a, const Ref<T>& b) {
    const Shape os = broadcast_shapes(c.shape, broadcast_shapes(a.shape, b.shape, "where"), "where");
    Ref<T> out = t.alloc(os);
    std::size_t od[4], sc[4], sa[4], sb[4];
    dims4(os, od);
    broadcast_strides(c.shape, od, sc);
    broadcast_strides(a.shape, od, sa);
    broadcast_strides(b.shape, od, sb);
    std::size_t o = 0;
    for (std::size_t i0 = 0; i0 < od[0]; ++i0)
        for (std::size_t i1 = 0; i1 < od[1]; ++i1)
            for (std::size_t i2 = 0; i2 < od[2]; ++i2)
                for (std::size_t i3 = 0; i3 < od[3]; ++i3) {
                    const std::size_t kc = i0 * sc[0] + i1 * sc[1] + i2 * sc[2] + i3 * sc[3];
                    const std::size_t ka = i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3];
                    const std::size_t kb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3];
                    out.data[o++] = c.data[kc] != T(0) ? a.data[ka] : b.data[kb];
                }
    return out;
}

// ---- shape ops ----------------------------------------------------------------------------

template <class T>
Ref<T> k_broadcast_to(Tape<T>& t, const Ref<T>& a, const Shape& s) {
    if (a.shape == s) return a;
    if (broadcast_shapes(a.shape, s, "broadcast_to") != s) throw_shape("broadcast_to", a.shape, s, "cannot broadcast");
    Ref<T> out = t.alloc(s);
    const std::size_t n = s.numel();
    if (a.size() == 1) {
        for (std::size_t i = 0; i < n; ++i) out.data[i] = a.data[0];
        return out;
    }
    std::size_t od[4], sa[4];
    dims4(s, od);
    broadcast_strides(a.shape, od, sa);
    std::size_t o = 0;
    for (std::size_t i0 = 0; i0 < od[0]; ++i0)
        for (std::size_t i1 = 0; i1 < od[1]; ++i1)
            for (std::size_t i2 = 0; i2 < od[2]; ++i2)
                for (std::size_t i3 = 0; i3 < od[3]; ++i3)
                    out.data[o++] = a.data[i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3]];
    return out;
}

/// Sums a over the axes along which s was broadcast to a's shape (the adjoint of broadcast_to).
template <class T>
Ref<T> k_sum_to_reduce(Tape<T>& t, const Ref<T>& a, const Shape& s) {
    if (broadcast_shapes(s, a.shape, "sum_to") != a.shape) throw_shape("sum_to", a.shape, s, "cannot reduce");
    Ref<T> out = t.alloc(s);
    const std::size_t m = s.numel(), n = a.size();
    if (m == 1) {
        out.data[0] = simd::sum(a.data, n);
        return out;
    }
    const std::size_t cols = a.shape.cols();
    if (m == cols && s.cols() == cols) {  // column sums of a batch
        simd::sum_rows(a.data, n / cols, cols, cols, out.data);
        return out;
    }
    for (std::size_t i = 0; i < m; ++i) out.data[i] = T(0);
    std::size_t od[4], so[4];
    dims4(a.shape, od);
    broadcast_strides(s, od, so);
    std::size_t k = 0;
    for (std::size_t i0 = 0; i0 < od[0]; ++i0)
        for (std::size_t i1 = 0; i1 < od[1]; ++i1)
            for (std::size_t i2 = 0; i2 < od[2]; ++i2)
                for (std::size_t i3 = 0; i3 < od[3]; ++i3)
                    out.data[i0 * so[0] + i1 * so[1] + i2 * so[2] + i3 * so[3]] += a.data[k++];
    return out;
}
template <class T>
TAPIR_ALWAYS_INLINE Ref<T> k_sum_to(Tape<T>& t, const Ref<T>& a, const Shape& s) {
    if (TAPIR_LIKELY(a.shape == s)) return a;
    return k_sum_to_reduce(t, a, s);
}

template <class T>
Ref<T> k_reshape(const Ref<T>& a, const Shape& s) {
    if (s.numel() != a.size()) throw_shape("reshape", a.shape, s, "element counts differ");
    return Ref<T>{a.data, s};
}

template <class T>
Ref<T> k_transpose(Tape<T>& t, const Ref<T>& a) {
    if (a.shape.rank() != 2) throw shape_error("transpose: expects a 2-D value, got shape " + a.shape.str());
    const std::size_t r = a.shape[0], c = a.shape[1];
    Ref<T> out = t.alloc(Shape{c, r});
    for (std::size_t i = 0; i < r; ++i)
        for (std::size_t j = 0; j < c; ++j) out.data[j * r + i] = a.data[i * c + j];
    return out;
}

/// The shape of op(a) op(b) for 2-D a and b; throws shape_error naming both shapes otherwise.
template <class T>
Shape matmul_shape(const Ref<T>& a, const Ref<T>& b, bool ta, bool tb) {
    if (a.shape.rank() != 2 || b.shape.rank() != 2)
        throw_shape("matmul", a.shape, b.shape, "expects 2-D operands");
    if ((ta ? a.shape[0] : a.shape[1]) != (tb ? b.shape[1] : b.shape[0])) {
        throw shape_error(std::string("matmul: inner dimensions differ: ") + a.shape.str() + (ta ? "^T" : "") + " x " +
                          b.shape.str() + (tb ? "^T" : ""));
    }
    return Shape{ta ? a.shape[1] : a.shape[0], tb ? b.shape[0] : b.shape[1]};
}

/// c = op(a) op(b) + beta c, c row-major of matmul_shape(a, b, ta, tb) (checked by the caller).
template <class T>
void matmul_into(const Ref<T>& a, const Ref<T>& b, bool ta, bool tb, T beta, T* c) {
    const std::size_t m = ta ? a.shape[1] : a.shape[0], k = ta ? a.shape[0] : a.shape[1], n = tb ? b.shape[0] : b.shape[1];
    simd::gemm<T>(ta, tb, m, n, k, T(1), a.data, a.shape[1], b.data, b.shape[1], beta, c, n);
}

template <class T>
Ref<T> k_matmul(Tape<T>& t, const Ref<T>& a, const Ref<T>& b, bool ta, bool tb) {
    Ref<T> out = t.alloc(matmul_shape(a, b, ta, tb));
    matmul_into(a, b, ta, tb, T(0), out.data);
    return out;
}

template <class T>
Ref<T> k_sum_axis(Tape<T>& t, const Ref<T>& a, std::size_t axis, bool keepdim) {
    const AxisSplit s = split_axis(a.shape, axis);
    Ref<T> out = t.alloc(reduced_shape(a.shape, axis, keepdim));
    for (std::size_t o = 0; o < s.outer; ++o) {
        T* dst = out.data + o * s.inner;
        for (std::size_t i = 0; i < s.inner; ++i) dst[i] = T(0);
        for (std::size_t l = 0; l < s.len; ++l) {
            const T* src = a.data + (o * s.len + l) * s.inner;
            for (std::size_t i = 0; i < s.inner; ++i) dst[i] += src[i];
        }
    }
    return out;
}

template <class T>
Ref<T> k_extreme_axis(Tape<T>& t, const Ref<T>& a, std::size_t axis, bool keepdim, bool is_max) {
    const AxisSplit s = split_axis(a.shape, axis);
    if (s.len == 0) throw shape_error(std::string(is_max ? "max" : "min") + ": empty axis in shape " + a.shape.str());
    Ref<T> out = t.alloc(reduced_shape(a.shape, axis, keepdim));
    for (std::size_t o = 0; o < s.outer; ++o)
        for (std::size_t i = 0; i < s.inner; ++i) {
            T best = a.data[o * s.len * s.inner + i];
            for (std::size_t l = 1; l < s.len; ++l) {
                const T v = a.data[(o * s.len + l) * s.inner + i];
                if (is_max ? v > best : v < best) best = v;
            }
            out.data[o * s.inner + i] = best;
        }
    return out;
}

/// One-hot mask of the first maximum (or minimum) along an axis: where max/min send the gradient.
template <class T>
Ref<T> k_extreme_mask(Tape<T>& t, const Ref<T>& a, std::size_t axis, bool is_max) {
    const AxisSplit s = split_axis(a.shape, axis);
    Ref<T> out = t.alloc(a.shape);
    for (std::size_t j = 0; j < a.size(); ++j) out.data[j] = T(0);
    for (std::size_t o = 0; o < s.outer; ++o)
        for (std::size_t i = 0; i < s.inner; ++i) {
            std::size_t arg = 0;
            T best = a.data[o * s.len * s.inner + i];
            for (std::size_t l = 1; l < s.len; ++l) {
                const T v = a.data[(o * s.len + l) * s.inner + i];
                if (is_max ? v > best : v < best) best = v, arg = l;
            }
            out.data[(o * s.len + arg) * s.inner + i] = T(1);
        }
    return out;
}

enum class SoftmaxKind { softmax, log_softmax, logsumexp };

template <class T>
Ref<T> k_softmax_family(Tape<T>& t, const Ref<T>& a, std::size_t axis, SoftmaxKind kind, bool keepdim) {
    const AxisSplit s = split_axis(a.shape, axis);
    Ref<T> out = t.alloc(kind == SoftmaxKind::logsumexp ? reduced_shape(a.shape, axis, keepdim) : a.shape);
    for (std::size_t o = 0; o < s.outer; ++o)
        for (std::size_t i = 0; i < s.inner; ++i) {
            const T* x = a.data + o * s.len * s.inner + i;
            T m = -std::numeric_limits<T>::infinity();
            for (std::size_t l = 0; l < s.len; ++l) m = x[l * s.inner] > m ? x[l * s.inner] : m;
            if (!(m > -std::numeric_limits<T>::infinity() && m < std::numeric_limits<T>::infinity())) m = T(0);
            T sum = T(0);
            for (std::size_t l = 0; l < s.len; ++l) sum += std::exp(x[l * s.inner] - m);
            if (kind == SoftmaxKind::logsumexp) {
                out.data[o * s.inner + i] = m + std::log(sum);
                continue;
            }
            T* y = out.data + o * s.len * s.inner + i;
            if (kind == SoftmaxKind::softmax) {
                const T inv = T(1) / sum;
                for (std::size_t l = 0; l < s.len; ++l) y[l * s.inner] = std::exp(x[l * s.inner] - m) * inv;
            } else {
                const T lse = m + std::log(sum);
                for (std::size_t l = 0; l < s.len; ++l) y[l * s.inner] = x[l * s.inner] - lse;
            }
        }
    return out;
}

template <class T>
Ref<T> k_concat(Tape<T>& t, const Ref<T>& a, const Ref<T>& b, std::size_t axis) {
    if (a.shape.rank() != b.shape.rank()) throw_shape("concat", a.shape, b.shape, "ranks differ");
    Shape os = a.shape;
    for (std::size_t i = 0; i < a.shape.rank(); ++i)
        if (i != axis && a.shape[i] != b.shape[i]) throw_shape("concat", a.shape, b.shape, "shapes differ off the concatenation axis");
    os[axis] = a.shape[axis] + b.shape[axis];
    Ref<T> out = t.alloc(os);
    const AxisSplit sa = split_axis(a.shape, axis), sb = split_axis(b.shape, axis);
    const std::size_t na = sa.len * sa.inner, nb = sb.len * sb.inner;
    for (std::size_t o = 0; o < sa.outer; ++o) {
        T* dst = out.data + o * (na + nb);
        for (std::size_t j = 0; j < na; ++j) dst[j] = a.data[o * na + j];
        for (std::size_t j = 0; j < nb; ++j) dst[na + j] = b.data[o * nb + j];
    }
    return out;
}

template <class T>
Ref<T> k_slice(Tape<T>& t, const Ref<T>& a, std::size_t axis, std::size_t start, std::size_t len) {
    if (start + len > a.shape[axis])
        throw shape_error("slice: range [" + std::to_string(start) + ", " + std::to_string(start + len) +
                          ") exceeds axis " + std::to_string(axis) + " of shape " + a.shape.str());
    Shape os = a.shape;
    os[axis] = len;
    Ref<T> out = t.alloc(os);
    const AxisSplit s = split_axis(a.shape, axis);
    for (std::size_t o = 0; o < s.outer; ++o)
        for (std::size_t j = 0; j < len * s.inner; ++j)
            out.data[o * len * s.inner + j] = a.data[(o * s.len + start) * s.inner + j];
    return out;
}

/// The adjoint of slice: a placed at [start, start+len) of an axis of length total, zeros elsewhere.
template <class T>
Ref<T> k_pad(Tape<T>& t, const Ref<T>& a, std::size_t axis, std::size_t start, std::size_t total) {
    Shape os = a.shape;
    os[axis] = total;
    Ref<T> out = t.alloc(os);
    for (std::size_t j = 0; j < os.numel(); ++j) out.data[j] = T(0);
    const AxisSplit s = split_axis(a.shape, axis);
    for (std::size_t o = 0; o < s.outer; ++o)
        for (std::size_t j = 0; j < s.len * s.inner; ++j)
            out.data[(o * total + start) * s.inner + j] = a.data[o * s.len * s.inner + j];
    return out;
}

template <class T>
Ref<T> k_gather_rows(Tape<T>& t, const Ref<T>& a, const std::int64_t* idx, std::size_t n) {
    Shape os = a.shape;
    os[0] = n;
    const std::size_t row = a.shape[0] ? a.size() / a.shape[0] : 0;
    Ref<T> out = t.alloc(os);
    for (std::size_t r = 0; r < n; ++r)
        for (std::size_t j = 0; j < row; ++j) out.data[r * row + j] = a.data[static_cast<std::size_t>(idx[r]) * row + j];
    return out;
}

/// The adjoint of gather_rows: rows of g added into a zero tensor of nrows rows at idx.
template <class T>
Ref<T> k_scatter_rows(Tape<T>& t, const Ref<T>& g, const std::int64_t* idx, std::size_t nrows) {
    Shape os = g.shape;
    os[0] = nrows;
    const std::size_t n = g.shape[0];
    const std::size_t row = n ? g.size() / n : 0;
    Ref<T> out = t.alloc(os);
    for (std::size_t j = 0; j < os.numel(); ++j) out.data[j] = T(0);
    for (std::size_t r = 0; r < n; ++r)
        for (std::size_t j = 0; j < row; ++j) out.data[static_cast<std::size_t>(idx[r]) * row + j] += g.data[r * row + j];
    return out;
}

/// act(z) for one value: simd/activation.hpp's definition on the scalar kernel family.
template <class T>
T apply_activation(Activation act, T z, T alpha) noexcept {
    return simd::activation_scalar<T>(act, z, alpha);
}

/// act(x W + b): x (batch, in), W (in, out), b (out,) or absent.
template <class T>
Ref<T> k_dense(Tape<T>& t, const Ref<T>& x, const Ref<T>& w, const Ref<T>* b, Activation act, T alpha) {
    if (x.shape.rank() != 2 || w.shape.rank() != 2 || x.shape[1] != w.shape[0])
        throw_shape("dense", x.shape, w.shape, "input features do not match the weight rows");
    const std::size_t m = x.shape[0], k = x.shape[1], n = w.shape[1];
    if (b && b->size() != n) throw_shape("dense", w.shape, b->shape, "bias length does not match the weight columns");
    Ref<T> out = t.alloc(Shape{m, n});
    if (b && (act == Activation::none || act == Activation::relu) &&
        simd::gemm_bias_act<T>(m, n, k, x.data, k, w.data, n, b->data, act == Activation::relu, out.data, n))
        return out;
    simd::gemm<T>(false, false, m, n, k, T(1), x.data, k, w.data, n, T(0), out.data, n);
    if (b) simd::add_row(out.data, m, n, n, b->data);
    if (act != Activation::none) simd::activate_on(simd::active_isa(), act, out.data, out.data, m * n, alpha);
    return out;
}

/// g * act'(z), written with the activation's output y (and for softplus its output too).
template <class T>
Ref<T> k_act_grad(Tape<T>& t, const Ref<T>& g, const Ref<T>& y, Activation act, T alpha) {
    Ref<T> out = t.alloc(g.shape);
    simd::activation_backward_on(simd::active_isa(), act, g.data, y.data, out.data, g.size(), alpha);
    return out;
}

} // namespace detail
} // namespace tapir
