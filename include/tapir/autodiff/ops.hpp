#pragma once
/// Differentiable operations. Each op is written in one place: its backward rule, its descriptor
/// (TAPIR_OP: the name and the rule's two instantiations, which the tape's nodes point to) and
/// its forward (a kernel from kernels.hpp plus a node). Nothing else lists the ops.
///
/// Every op takes Var<T> (records a node) and, for the eager backward pass, Eager<T> (computes
/// into the arena, records nothing). A backward rule is a template over its context `o` and the
/// value type V and computes with the ordinary ops, so one rule serves the fast first-order pass
/// and the recorded pass of grad(..., create_graph) alike. In a rule, `o.in(n, k)` is the k-th
/// input's value, `o.out(n)` the node's value, `o.shape(n, k)` the input's shape, `o.needs(n, k)`
/// tells whether input k wants a gradient, and `o.acc(n, k, v)` adds v to its gradient.
/// A forward is usually one call of a helper of detail (unary, unary_simd, binary, along_axis,
/// product, indexed): the input's tape, the kernel on the input values and the node in one place.
/// An elementwise, binary or matrix-product op that is only its formulas is one line
/// (TAPIR_UNARY_OP, TAPIR_BINARY_OP, TAPIR_PRODUCT_OP: the rule, the descriptor and the forward,
/// the derivative beside the forward).
/// README.md, "Adding an op", walks through one.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "backward.hpp"
#include "kernels.hpp"
#include "tape.hpp"

/// Declares `op_<id><T>`, the descriptor of the op called `name` whose backward rule is the function
/// template `rule(o, node, g)`.
#define TAPIR_OP(id, name, rule)                                                                                                 \
    template <class T>                                                                                                             \
    inline constexpr OpDef<T> op_##id {                                                                                            \
        name, &rule<detail::EagerContext<T>, T, Eager<T>>, &rule<detail::RecordContext<T>, T, Var<T>>                                \
    }
/// Declares the rule of a linear op (transpose, reshape, slice, gather, ...): its gradient is its
/// adjoint applied to g, an expression in g, n (the node) and o (for o.shape(n, 0)) that is itself
/// an op, so every order follows. It defines backward_<id> and op_<id> (named "id").
#define TAPIR_LINEAR_OP(id, adjoint)                                                                                              \
    template <class O, class T, class V>                                                                                           \
    void backward_##id(O& o, const Node<T>& n, const V& g) {                                                                       \
        o.acc(n, 0, adjoint);                                                                                                      \
    }                                                                                                                              \
    TAPIR_OP(id, #id, backward_##id)
/// Declares an elementwise op in one line, its derivative beside its forward: `forward` is a
/// scalar function of T or a whole-array kernel of simd/ (simd::exp<T>, ...), and `dx` the
/// gradient for the input, written with the ordinary ops in g (the gradient of the output), x
/// (the input) and y (the output). It defines the rule backward_<id>, op_<id> (named "id") and
/// the forward id(a).
#define TAPIR_UNARY_OP(id, forward, dx)                                                                                        \
    template <class O, class T, class V>                                                                                           \
    void backward_##id(O& o, const Node<T>& n, const V& g) {                                                                       \
        [[maybe_unused]] const V x = o.in(n, 0);                                                                                   \
        [[maybe_unused]] const V y = o.out(n);                                                                                     \
        o.acc(n, 0, dx);                                                                                                           \
    }                                                                                                                              \
    TAPIR_OP(id, #id, backward_##id);                                                                                              \
    template <class T, template <class> class V>                                                                                   \
    detail::val<V, T> id(const V<T>& a) { return detail::elementwise(op_##id<T>, a, forward); }
/// Declares a binary op in one line, its derivatives beside its forward: `kernel` is the kernel
/// K(tape, a, b) of detail that detail::binary runs, and `da`, `db` the gradients for the two
/// inputs, written with the ordinary ops in g, a and b (the inputs), o and n (for o.shape(n, k));
/// each is computed only when its input wants a gradient. It defines the rule backward_<id>,
/// op_<id> (named "id") and the forward id(a, b).
#define TAPIR_BINARY_OP(id, kernel, da, db)                                                                                    \
    template <class O, class T, class V>                                                                                           \
    void backward_##id(O& o, const Node<T>& n, const V& g) {                                                                       \
        [[maybe_unused]] const V a = o.in(n, 0);                                                                                   \
        [[maybe_unused]] const V b = o.in(n, 1);                                                                                   \
        if (o.needs(n, 0)) o.acc(n, 0, da);                                                                                        \
        if (o.needs(n, 1)) o.acc(n, 1, db);                                                                                        \
    }                                                                                                                              \
    TAPIR_OP(id, #id, backward_##id);                                                                                              \
    template <class T, template <class> class V>                                                                                   \
    TAPIR_ALWAYS_INLINE detail::val<V, T> id(const V<T>& a, const V<T>& b) {                                                       \
        return detail::binary<detail::kernel<T>>(op_##id<T>, a, b);                                                                \
    }
/// Declares a matrix-product op id(a, b, transpose_a, transpose_b) = op(a) op(b) in one line:
/// `kernel` is its kernel of detail, which detail::product runs (the flags kept in the node), and
/// its rule is detail::backward_product with the op itself as the product.
#define TAPIR_PRODUCT_OP(id, kernel)                                                                                           \
    template <class O, class T, class V>                                                                                           \
    void backward_##id(O& o, const Node<T>& n, const V& g) {                                                                       \
        detail::backward_product(o, n, g, [](const V& x, const V& y, bool tx, bool ty) { return id(x, y, tx, ty); });            \
    }                                                                                                                              \
    TAPIR_OP(id, #id, backward_##id);                                                                                              \
    template <class T, template <class> class V>                                                                                   \
    detail::val<V, T> id(const V<T>& a, const V<T>& b, bool transpose_a = false, bool transpose_b = false) {                       \
        return detail::product<detail::kernel<T>>(op_##id<T>, a, b, transpose_a, transpose_b);                                     \
    }
/// An op that passes no gradient (the masks rules multiply by).
#define TAPIR_OP_NO_GRAD(id, name)                                                                                               \
    template <class T>                                                                                                             \
    inline constexpr OpDef<T> op_##id { name, nullptr, nullptr }

namespace tapir {

namespace detail {
template <class V>
struct is_value : std::false_type {};
template <class T>
struct is_value<Var<T>> : std::true_type {};
template <class T>
struct is_value<Eager<T>> : std::true_type {};
/// V<T> for the two value types an op takes (Var, Eager); no overload for anything else.
template <template <class> class V, class T>
using val = std::enable_if_t<is_value<V<T>>::value, V<T>>;
/// Scalar arguments of any arithmetic type, converted to T: pow(x, 3), x * 2, 1 - x.
template <class S>
using if_scalar = std::enable_if_t<std::is_arithmetic<S>::value, int>;

template <class T>
Tape<T>& tape_of(const Var<T>& v) { return v.tape(); }
template <class T>
Tape<T>& tape_of(const Eager<T>& v) noexcept { return *v.t; }
template <class T>
const Ref<T>& ref(const Var<T>& v) { return v.ref(); }
template <class T>
const Ref<T>& ref(const Eager<T>& v) noexcept { return v.r; }
/// The value of an input already checked against tape t.
template <class T>
const Ref<T>& ref(const Tape<T>& t, const Var<T>& v) noexcept { return t.node(v.index()).out; }
template <class T>
const Ref<T>& ref(const Tape<T>&, const Eager<T>& v) noexcept { return v.r; }

template <class T>
Tape<T>& same_tape(const Var<T>& a, const Var<T>& b, const char* op) {
    Tape<T>& t = a.tape();
    if (&b.tape() != &t) throw tape_error(std::string(op) + ": operands are recorded on different tapes");
    return t;
}
template <class T>
Tape<T>& same_tape(const Eager<T>& a, const Eager<T>&, const char*) noexcept { return *a.t; }

struct no_attrs {
    template <class N>
    void operator()(N&) const noexcept {}
};

/// An op's result: for Var inputs a node of `op` (set writes its attributes), for Eager ones the value.
template <class T, class Set, class... In>
Var<T> emit(Tape<T>& t, const OpDef<T>& op, const Ref<T>& out, Set set, const Var<T>& a, const In&... in) {
    Var<T> v = t.record(op, out, a.index(), in.index()...);
    set(t.node_mut(v.index()));
    return v;
}
template <class T, class Set, class... In>
Eager<T> emit(Tape<T>& t, const OpDef<T>&, const Ref<T>& out, Set, const Eager<T>&, const In&...) noexcept {
    return Eager<T>{out, &t};
}
template <class T>
auto set_a(T a0, T a1 = T(0)) {
    return [a0, a1](Node<T>& n) {
        n.a0 = a0;
        n.a1 = a1;
    };
}
template <class T>
auto set_axis(std::size_t axis, bool keepdim) {
    return [axis, keepdim](Node<T>& n) {
        n.axis = static_cast<std::int32_t>(axis);
        n.flags = keepdim ? 1 : 0;
    };
}
/// The axis and offset of a window along it (slice, pad).
template <class T>
auto set_window(std::size_t axis, std::size_t start) {
    return [axis, start](Node<T>& n) {
        n.axis = static_cast<std::int32_t>(axis);
        n.i0 = start;
    };
}
/// The forwards of most ops, each in one line: the input's tape, a kernel on the input values, a
/// node of `op` (set writes its attributes). unary maps f over every element (k_unary) ...
template <class T, template <class> class V, class F, class Set = no_attrs>
val<V, T> unary(const OpDef<T>& op, const V<T>& a, F f, Set set = {}) {
    Tape<T>& t = tape_of(a);
    return emit(t, op, k_unary(t, ref(a), f), set, a);
}
/// ... unary_simd runs a whole-array kernel of simd/ (simd::exp, simd::tanh, ...) ...
template <class T, template <class> class V>
val<V, T> unary_simd(const OpDef<T>& op, const V<T>& a, void (*f)(const T*, T*, std::size_t)) {
    Tape<T>& t = tape_of(a);
    const Ref<T>& x = ref(a);
    Ref<T> out = t.alloc(x.shape);
    f(x.data, out.data, x.size());
    return emit(t, op, out, no_attrs{}, a);
}
/// ... elementwise calls whichever of the two fits f (the forward of a TAPIR_UNARY_OP) ...
template <class T, template <class> class V, class F>
val<V, T> elementwise(const OpDef<T>& op, const V<T>& a, F f) {
    if constexpr (std::is_convertible<F, void (*)(const T*, T*, std::size_t)>::value) return unary_simd(op, a, f);
    else return unary(op, a, f);
}
/// ... binary runs kernel K(tape, a, b) on two values of one tape (the op's name in the error) ...
template <auto K, class T, template <class> class V, class Set = no_attrs>
TAPIR_ALWAYS_INLINE val<V, T> binary(const OpDef<T>& op, const V<T>& a, const V<T>& b, Set set = {}) {
    Tape<T>& t = same_tape(a, b, op.name);
    return emit(t, op, K(t, ref(t, a), ref(t, b)), set, a, b);
}
/// ... along_axis runs k(tape, a, axis) for an axis checked and normalised in the op's name,
/// which the node keeps with keepdim.
template <class T, template <class> class V, class K>
val<V, T> along_axis(const OpDef<T>& op, const V<T>& a, std::int64_t axis, bool keepdim, K k) {
    Tape<T>& t = tape_of(a);
    const std::size_t ax = normalize_axis(axis, a.shape(), op.name);
    return emit(t, op, k(t, ref(a), ax), set_axis<T>(ax, keepdim), a);
}
/// ... product runs K(tape, a, b, transpose_a, transpose_b), the flags kept in the node (matmul, bmm) ...
template <auto K, class T, template <class> class V>
val<V, T> product(const OpDef<T>& op, const V<T>& a, const V<T>& b, bool transpose_a, bool transpose_b) {
    Tape<T>& t = same_tape(a, b, op.name);
    const auto flags = static_cast<std::uint8_t>((transpose_a ? 1 : 0) | (transpose_b ? 2 : 0));
    return emit(t, op, K(t, ref(t, a), ref(t, b), transpose_a, transpose_b), [flags](Node<T>& n) { n.flags = flags; }, a, b);
}
/// ... and indexed runs K(tape, a, idx, size) for positions idx in the arena, which the node keeps
/// for its rule (gather and scatter of rows, take and put_add).
template <auto K, class T, template <class> class V, class Size>
val<V, T> indexed(const OpDef<T>& op, const V<T>& a, const std::int64_t* idx, const Size& size) {
    Tape<T>& t = tape_of(a);
    return emit(t, op, K(t, ref(a), idx, size), [idx](Node<T>& n) { n.index = idx; }, a);
}
/// Shape of a reduced value with the reduced axis kept as 1, for broadcasting a gradient back.
inline Shape keepdim_shape(const Shape& in, std::int32_t axis) { return reduced_shape(in, static_cast<std::size_t>(axis), true); }
} // namespace detail

// ---- add, sub, mul, div: broadcasting binary ops ---------------------------------------------

TAPIR_BINARY_OP(add, k_add, sum_to(g, o.shape(n, 0)), sum_to(g, o.shape(n, 1)));
TAPIR_BINARY_OP(sub, k_sub, sum_to(g, o.shape(n, 0)), sum_to(neg(g), o.shape(n, 1)));
TAPIR_BINARY_OP(mul, k_mul, sum_to(mul(g, b), o.shape(n, 0)), sum_to(mul(g, a), o.shape(n, 1)));

template <class O, class T, class V>
void backward_div(O& o, const Node<T>& n, const V& g) {
    const V gb = div(g, o.in(n, 1));  // d(a/b)/da = 1/b, d(a/b)/db = -(a/b)/b
    if (o.needs(n, 0)) o.acc(n, 0, sum_to(gb, o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, sum_to(neg(mul(gb, o.out(n))), o.shape(n, 1)));
}
TAPIR_OP(div, "div", backward_div);
template <class T, template <class> class V>
detail::val<V, T> div(const V<T>& a, const V<T>& b) { return detail::binary<detail::k_div<T>>(op_div<T>, a, b); }

// ---- scalar ops ---------------------------------------------------------------------------

TAPIR_UNARY_OP(neg, [](T x) { return -x; }, neg(g));

template <class O, class T, class V>
void backward_scale(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, scale(g, n.a0));
}
TAPIR_OP(scale, "scale", backward_scale);
/// a * c for a constant c.
template <class T, template <class> class V, class S, detail::if_scalar<S> = 0>
detail::val<V, T> scale(const V<T>& a, S s) {
    const T c = static_cast<T>(s);
    return detail::unary(op_scale<T>, a, [c](T x) { return x * c; }, detail::set_a(c));
}

template <class O, class T, class V>
void backward_add_scalar(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, g);
}
TAPIR_OP(add_scalar, "add_scalar", backward_add_scalar);
/// a + c for a constant c.
template <class T, template <class> class V, class S, detail::if_scalar<S> = 0>
detail::val<V, T> add_scalar(const V<T>& a, S s) {
    const T c = static_cast<T>(s);
    return detail::unary(op_add_scalar<T>, a, [c](T x) { return x + c; }, detail::set_a(c));
}

template <class O, class T, class V>
void backward_rdiv_scalar(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, neg(div(mul(g, o.out(n)), o.in(n, 0))));  // d(c/a)/da = -(c/a)/a
}
TAPIR_OP(rdiv_scalar, "rdiv_scalar", backward_rdiv_scalar);
/// c / a for a constant c.
template <class S, class T, template <class> class V, detail::if_scalar<S> = 0>
detail::val<V, T> rdiv_scalar(S s, const V<T>& a) {
    const T c = static_cast<T>(s);
    return detail::unary(op_rdiv_scalar<T>, a, [c](T x) { return c / x; }, detail::set_a(c));
}

// ---- linear algebra and shapes --------------------------------------------------------------

namespace detail {
/// The rule of every product C = op(A) op(B) (matmul, bmm), `prod` being the product itself:
/// dop(A) = G op(B)^T, dop(B) = op(A)^T G, then undo the op on each side.
template <class O, class T, class V, class P>
void backward_product(O& o, const Node<T>& n, const V& g, P prod) {
    const bool ta = n.flags & 1, tb = (n.flags & 2) != 0;
    const V a = o.in(n, 0), b = o.in(n, 1);
    if (o.needs(n, 0)) o.acc(n, 0, ta ? prod(b, g, tb, true) : prod(g, b, false, !tb));
    if (o.needs(n, 1)) o.acc(n, 1, tb ? prod(g, a, true, ta) : prod(a, g, !ta, false));
}
} // namespace detail

/// op(a) * op(b) for 2-D values; op transposes when the flag is set (by packing, not copying).
TAPIR_PRODUCT_OP(matmul, k_matmul);

TAPIR_LINEAR_OP(transpose, transpose(g));
/// The transpose of a 2-D value (a copy).
template <class T, template <class> class V>
detail::val<V, T> transpose(const V<T>& a) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_transpose<T>, detail::k_transpose(t, detail::ref(a)), detail::no_attrs{}, a);
}

TAPIR_LINEAR_OP(reshape, reshape(g, o.shape(n, 0)));
/// The same elements in shape s (same count), without a copy.
template <class T, template <class> class V>
detail::val<V, T> reshape(const V<T>& a, const Shape& s) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_reshape<T>, detail::k_reshape(detail::ref(a), s), detail::no_attrs{}, a);
}

TAPIR_LINEAR_OP(broadcast_to, sum_to(g, o.shape(n, 0)));
/// a repeated along the axes where it has size 1 (or is missing) to shape s, as NumPy broadcasts.
template <class T, template <class> class V>
detail::val<V, T> broadcast_to(const V<T>& a, const Shape& s) {
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_broadcast_to<T>, detail::k_broadcast_to(t, detail::ref(a), s), detail::no_attrs{}, a);
}

TAPIR_LINEAR_OP(sum_to, broadcast_to(g, o.shape(n, 0)));
/// Sums over the axes along which `s` broadcasts to a's shape; sum_to(a, Shape{}) sums everything.
/// A value that already has shape s is returned as it is.
template <class T, template <class> class V>
detail::val<V, T> sum_to(const V<T>& a, const Shape& s) {
    if (a.shape() == s) return a;
    Tape<T>& t = detail::tape_of(a);
    return detail::emit(t, op_sum_to<T>, detail::k_sum_to(t, detail::ref(a), s), detail::no_attrs{}, a);
}

// ---- reductions -----------------------------------------------------------------------------

/// Sum of all elements (a scalar of shape ()).
template <class T, template <class> class V>
detail::val<V, T> sum(const V<T>& a) { return sum_to(a, Shape{}); }

template <class O, class T, class V>
void backward_sum_axis(O& o, const Node<T>& n, const V& g) {
    const Shape& in = o.shape(n, 0);
    o.acc(n, 0, broadcast_to(reshape(g, detail::keepdim_shape(in, n.axis)), in));
}
TAPIR_OP(sum_axis, "sum", backward_sum_axis);
template <class T, template <class> class V>
detail::val<V, T> sum(const V<T>& a, std::int64_t axis, bool keepdim = false) {
    return detail::along_axis(op_sum_axis<T>, a, axis, keepdim,
                              [keepdim](Tape<T>& t, const Ref<T>& x, std::size_t ax) { return detail::k_sum_axis(t, x, ax, keepdim); });
}

template <class T>
Var<T> mean(const Var<T>& a) {
    const std::size_t n = a.size();
    if (n == 0) throw shape_error("mean: empty value of shape " + a.shape().str());
    return scale(sum(a), T(1) / static_cast<T>(n));
}
template <class T>
Var<T> mean(const Var<T>& a, std::int64_t axis, bool keepdim = false) {
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "mean");
    const std::size_t len = a.shape()[ax];
    if (len == 0) throw shape_error("mean: empty axis in shape " + a.shape().str());
    return scale(sum(a, axis, keepdim), T(1) / static_cast<T>(len));
}

/// The gradient goes to the first extreme element along the axis (as PyTorch's max(dim)).
template <class O, class T, class V>
void backward_extreme_axis(O& o, const Node<T>& n, const V& g);
TAPIR_OP(max_axis, "max", backward_extreme_axis);
TAPIR_OP(min_axis, "min", backward_extreme_axis);
template <class O, class T, class V>
void backward_extreme_axis(O& o, const Node<T>& n, const V& g) {
    const Shape& in = o.shape(n, 0);
    const V mask = extreme_mask(o.in(n, 0), n.axis, n.op == &op_max_axis<T>);
    o.acc(n, 0, mul(mask, broadcast_to(reshape(g, detail::keepdim_shape(in, n.axis)), in)));
}
template <class T, template <class> class V>
detail::val<V, T> max(const V<T>& a, std::int64_t axis, bool keepdim = false) {
    return detail::along_axis(op_max_axis<T>, a, axis, keepdim, [keepdim](Tape<T>& t, const Ref<T>& x, std::size_t ax) {
        return detail::k_extreme_axis(t, x, ax, keepdim, true);
    });
}
template <class T, template <class> class V>
detail::val<V, T> min(const V<T>& a, std::int64_t axis, bool keepdim = false) {
    return detail::along_axis(op_min_axis<T>, a, axis, keepdim, [keepdim](Tape<T>& t, const Ref<T>& x, std::size_t ax) {
        return detail::k_extreme_axis(t, x, ax, keepdim, false);
    });
}

// ---- elementwise math -------------------------------------------------------------------------

TAPIR_UNARY_OP(exp, simd::exp<T>, mul(g, y));
TAPIR_UNARY_OP(log, simd::log<T>, div(g, x));
TAPIR_UNARY_OP(log1p, [](T x) { return std::log1p(x); }, div(g, add_scalar(x, T(1))));
TAPIR_UNARY_OP(sqrt, [](T x) { return std::sqrt(x); }, div(scale(g, T(0.5)), y));

template <class O, class T, class V>
void backward_pow(O& o, const Node<T>& n, const V& g) {
    if (n.a0 == T(0)) return;
    const V d = n.a0 == T(1) ? g : mul(g, scale(pow(o.in(n, 0), n.a0 - T(1)), n.a0));
    o.acc(n, 0, d);
}
TAPIR_OP(pow, "pow", backward_pow);
/// a^p for a constant exponent p.
template <class T, template <class> class V, class S, detail::if_scalar<S> = 0>
detail::val<V, T> pow(const V<T>& a, S exponent) {
    const T p = static_cast<T>(exponent);
    return detail::unary(op_pow<T>, a, [p](T x) { return std::pow(x, p); }, detail::set_a(p));
}

TAPIR_UNARY_OP(abs, [](T x) { return std::abs(x); }, mul(g, sign(x)));
TAPIR_UNARY_OP(square, [](T x) { return x * x; }, scale(mul(g, x), T(2)));

template <class O, class T, class V>
void backward_clamp(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, mul(g, inrange_mask(o.in(n, 0), n.a0, n.a1)));
}
TAPIR_OP(clamp, "clamp", backward_clamp);
/// Clamp to [lo, hi]; the gradient passes where lo <= a <= hi.
template <class T, template <class> class V, class S1, class S2, detail::if_scalar<S1> = 0, detail::if_scalar<S2> = 0>
detail::val<V, T> clamp(const V<T>& a, S1 lower, S2 upper) {
    const T lo = static_cast<T>(lower), hi = static_cast<T>(upper);
    if (!(lo <= hi)) throw value_error("clamp: lower bound " + std::to_string(lo) + " exceeds upper bound " + std::to_string(hi));
    return detail::unary(op_clamp<T>, a, [lo, hi](T x) { return x < lo ? lo : (x > hi ? hi : x); }, detail::set_a(lo, hi));
}

template <class O, class T, class V>
void backward_where(O& o, const Node<T>& n, const V& g) {
    const V c = o.in(n, 2);
    if (o.needs(n, 0)) o.acc(n, 0, sum_to(mul(g, c), o.shape(n, 0)));
    if (o.needs(n, 1)) o.acc(n, 1, sum_to(sub(g, mul(g, c)), o.shape(n, 1)));
}
TAPIR_OP(where, "where", backward_where);
/// cond ? a : b elementwise (cond is a constant of 0s and 1s, e.g. from a comparison).
template <class T>
Var<T> where(const Var<T>& cond, const Var<T>& a, const Var<T>& b) {
    Tape<T>& t = detail::same_tape(a, b, "where");
    detail::same_tape(cond, a, "where");
    return t.record(op_where<T>, detail::k_where(t, cond.ref(), a.ref(), b.ref()), a.index(), b.index(), cond.index());
}

// The standalone activations keep rules of their own rather than act_grad's: their first-order
// bits (g - g y^2 for tanh, g (y - y^2) for sigmoid, ...) round differently from the SIMD
// derivative, and the README's example figures (e.g. higgs's adversary through sigmoid) rest on them.

TAPIR_UNARY_OP(tanh, simd::tanh<T>, sub(g, mul(g, mul(y, y))));
TAPIR_UNARY_OP(sigmoid, simd::sigmoid<T>, mul(g, sub(y, mul(y, y))));
TAPIR_UNARY_OP(relu, simd::relu<T>, mul(g, positive_mask(x)));

template <class O, class T, class V>
void backward_leaky_relu(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, mul(g, leaky_slope(o.in(n, 0), n.a0)));
}
TAPIR_OP(leaky_relu, "leaky_relu", backward_leaky_relu);
template <class T, template <class> class V, class S = T, detail::if_scalar<S> = 0>
detail::val<V, T> leaky_relu(const V<T>& a, S slope = S(0.01)) {
    const T alpha = static_cast<T>(slope);
    return detail::unary(op_leaky_relu<T>, a, [alpha](T x) { return x > T(0) ? x : alpha * x; }, detail::set_a(alpha));
}

template <class O, class T, class V>
void backward_elu(O& o, const Node<T>& n, const V& g) {
    // elu'(x) = 1 for x > 0, alpha*exp(x) = elu(x) + alpha otherwise.
    const V pos = positive_mask(o.in(n, 0));
    const V slope = add(pos, mul(add_scalar(neg(pos), T(1)), add_scalar(o.out(n), n.a0)));
    o.acc(n, 0, mul(g, slope));
}
TAPIR_OP(elu, "elu", backward_elu);
template <class T, template <class> class V, class S = T, detail::if_scalar<S> = 0>
detail::val<V, T> elu(const V<T>& a, S scale_alpha = S(1)) {
    const T alpha = static_cast<T>(scale_alpha);
    return detail::unary(op_elu<T>, a, [alpha](T x) { return x > T(0) ? x : alpha * std::expm1(x); }, detail::set_a(alpha));
}

/// softplus(a) = log(1 + exp(a)), exact for large |a|; log_sigmoid(a) = log(sigmoid(a)) = -softplus(-a),
/// finite for all a.
TAPIR_UNARY_OP(softplus, [](T x) { return detail::stable_softplus(x); }, mul(g, sigmoid(x)));
TAPIR_UNARY_OP(log_sigmoid, [](T x) { return -detail::stable_softplus(-x); }, mul(g, sigmoid(neg(x))));
TAPIR_UNARY_OP(erf, [](T x) { return std::erf(x); }, mul(g, scale(exp(neg(mul(x, x))), T(1.1283791670955126))));  // 2/sqrt(pi)
TAPIR_UNARY_OP(atan, [](T x) { return std::atan(x); }, div(g, add_scalar(mul(x, x), T(1))));  // 1 / (1 + x^2)

/// sin and cos, for azimuths: a direction from an angle is (cos, sin), smooth and periodic, so a
/// generated angle needs no wrapping. Each rule uses the other op, so every order is defined.
TAPIR_UNARY_OP(sin, [](T x) { return std::sin(x); }, mul(g, cos(x)));
TAPIR_UNARY_OP(cos, [](T x) { return std::cos(x); }, neg(mul(g, sin(x))));

// ---- softmax family ------------------------------------------------------------------------

namespace detail {
/// softmax, log_softmax and logsumexp share one kernel (k_softmax_family) and one forward.
template <class T, template <class> class V>
val<V, T> softmax_family(const OpDef<T>& op, const V<T>& a, std::int64_t axis, bool keepdim, SoftmaxKind kind) {
    return along_axis(op, a, axis, keepdim,
                      [keepdim, kind](Tape<T>& t, const Ref<T>& x, std::size_t ax) { return k_softmax_family(t, x, ax, kind, keepdim); });
}
} // namespace detail

template <class O, class T, class V>
void backward_softmax(O& o, const Node<T>& n, const V& g) {
    const V y = o.out(n);
    o.acc(n, 0, mul(y, sub(g, sum(mul(g, y), n.axis, true))));
}

template <class O, class T, class V>
void backward_log_softmax(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, sub(g, mul(exp(o.out(n)), sum(g, n.axis, true))));
}

template <class O, class T, class V>
void backward_logsumexp(O& o, const Node<T>& n, const V& g) {
    const Shape& in = o.shape(n, 0);
    const Shape keep = detail::keepdim_shape(in, n.axis);
    const V p = exp(sub(o.in(n, 0), reshape(o.out(n), keep)));  // softmax of the input
    o.acc(n, 0, mul(p, reshape(g, keep)));
}

// The family's three ops, then their forwards.
TAPIR_OP(softmax, "softmax", backward_softmax);
TAPIR_OP(log_softmax, "log_softmax", backward_log_softmax);
TAPIR_OP(logsumexp, "logsumexp", backward_logsumexp);

/// exp(a) / sum(exp(a)) along an axis, computed stably (the maximum subtracted first).
template <class T, template <class> class V>
detail::val<V, T> softmax(const V<T>& a, std::int64_t axis = -1) {
    return detail::softmax_family(op_softmax<T>, a, axis, false, detail::SoftmaxKind::softmax);
}
/// log(softmax(a)) along an axis, without forming softmax (stable for large logits).
template <class T, template <class> class V>
detail::val<V, T> log_softmax(const V<T>& a, std::int64_t axis = -1) {
    return detail::softmax_family(op_log_softmax<T>, a, axis, false, detail::SoftmaxKind::log_softmax);
}
/// log(sum(exp(a))) along an axis, computed stably; keepdim keeps the axis with size 1.
template <class T, template <class> class V>
detail::val<V, T> logsumexp(const V<T>& a, std::int64_t axis = -1, bool keepdim = false) {
    return detail::softmax_family(op_logsumexp<T>, a, axis, keepdim, detail::SoftmaxKind::logsumexp);
}

// ---- joining and indexing ------------------------------------------------------------------

template <class O, class T, class V>
void backward_concat(O& o, const Node<T>& n, const V& g) {
    const auto ax = static_cast<std::int64_t>(n.axis);
    const auto k = static_cast<std::size_t>(n.axis);
    const std::size_t la = o.shape(n, 0)[k], lb = o.shape(n, 1)[k];
    if (o.needs(n, 0)) o.acc(n, 0, slice(g, ax, 0, la));
    if (o.needs(n, 1)) o.acc(n, 1, slice(g, ax, la, lb));
}
TAPIR_OP(concat, "concat", backward_concat);
template <class T, template <class> class V>
detail::val<V, T> concat(const V<T>& a, const V<T>& b, std::int64_t axis = 0) {
    Tape<T>& t = detail::same_tape(a, b, "concat");
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "concat");
    return detail::emit(t, op_concat<T>, detail::k_concat(t, detail::ref(a), detail::ref(b), ax), detail::set_axis<T>(ax, false), a, b);
}
template <class T>
Var<T> concat(const std::vector<Var<T>>& parts, std::int64_t axis = 0) {
    if (parts.empty()) throw value_error("concat: no values given");
    Var<T> out = parts[0];
    for (std::size_t i = 1; i < parts.size(); ++i) out = concat(out, parts[i], axis);
    return out;
}

// slice and pad are each other's adjoint: each rule is the other op on the node's window (axis,
// offset i0, and the length of the input's axis).
TAPIR_LINEAR_OP(slice, pad(g, static_cast<std::int64_t>(n.axis), n.i0, o.shape(n, 0)[static_cast<std::size_t>(n.axis)]));
TAPIR_LINEAR_OP(pad, slice(g, static_cast<std::int64_t>(n.axis), n.i0, o.shape(n, 0)[static_cast<std::size_t>(n.axis)]));

/// Elements [start, start+len) along an axis.
template <class T, template <class> class V>
detail::val<V, T> slice(const V<T>& a, std::int64_t axis, std::size_t start, std::size_t len) {
    Tape<T>& t = detail::tape_of(a);
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "slice");
    return detail::emit(t, op_slice<T>, detail::k_slice(t, detail::ref(a), ax, start, len), detail::set_window<T>(ax, start), a);
}
/// The adjoint of slice: a placed at offset `start` of an axis of length `total`, zeros elsewhere.
template <class T, template <class> class V>
detail::val<V, T> pad(const V<T>& a, std::int64_t axis, std::size_t start, std::size_t total) {
    Tape<T>& t = detail::tape_of(a);
    const std::size_t ax = detail::normalize_axis(axis, a.shape(), "pad");
    if (start + a.shape()[ax] > total)
        throw shape_error("pad: value of shape " + a.shape().str() + " does not fit at offset " + std::to_string(start) +
                          " of an axis of length " + std::to_string(total));
    return detail::emit(t, op_pad<T>, detail::k_pad(t, detail::ref(a), ax, start, total), detail::set_window<T>(ax, start), a);
}

namespace detail {
template <class T>
const std::int64_t* copy_indices(Tape<T>& t, const std::vector<std::size_t>& idx, std::size_t limit, const char* op) {
    auto* p = static_cast<std::int64_t*>(t.arena().allocate(idx.size() * sizeof(std::int64_t) + 1));
    for (std::size_t i = 0; i < idx.size(); ++i) {
        if (idx[i] >= limit)
            throw value_error(std::string(op) + ": index " + std::to_string(idx[i]) + " at position " + std::to_string(i) +
                              " is out of range for " + std::to_string(limit) + " rows");
        p[i] = static_cast<std::int64_t>(idx[i]);
    }
    return p;
}
} // namespace detail

// gather_rows and scatter_rows are each other's adjoint: each rule is the other op on the node's rows.
TAPIR_LINEAR_OP(gather_rows, scatter_rows_raw(g, n.index, o.shape(n, 0)[0]));
TAPIR_LINEAR_OP(scatter_rows, gather_rows_raw(g, n.index, o.shape(n, 0)[0]));

/// Rows of a (first axis) at p[0..n), unchecked: the indices live in the arena.
template <class T, template <class> class V>
detail::val<V, T> gather_rows_raw(const V<T>& a, const std::int64_t* p, std::size_t n) {
    return detail::indexed<detail::k_gather_rows<T>>(op_gather_rows<T>, a, p, n);
}
/// Rows of a (first axis) at the given indices, in order; indices may repeat.
template <class T>
Var<T> gather_rows(const Var<T>& a, const std::vector<std::size_t>& idx) {
    Tape<T>& t = a.tape();
    if (a.shape().rank() == 0) throw shape_error("gather_rows: expects at least 1-D, got shape " + a.shape().str());
    return gather_rows_raw(a, detail::copy_indices(t, idx, a.shape()[0], "gather_rows"), idx.size());
}
/// The adjoint of gather_rows_raw: rows of g added into nrows zero rows at p.
template <class T, template <class> class V>
detail::val<V, T> scatter_rows_raw(const V<T>& g, const std::int64_t* p, std::size_t nrows) {
    return detail::indexed<detail::k_scatter_rows<T>>(op_scatter_rows<T>, g, p, nrows);
}

// ---- adversarial training helpers ------------------------------------------------------------

template <class O, class T, class V>
void backward_grad_reverse(O& o, const Node<T>& n, const V& g) {
    o.acc(n, 0, scale(g, -n.a0));
}
TAPIR_OP(grad_reverse, "grad_reverse", backward_grad_reverse);
/// Identity forward, gradient times -lambda backward (Ganin & Lempitsky): the classifier
/// maximises what the adversary after this layer minimises.
template <class T, class S = T, detail::if_scalar<S> = 0>
Var<T> grad_reverse(const Var<T>& a, S factor = S(1)) {
    const T lambda = static_cast<T>(factor);
    return detail::emit(a.tape(), op_grad_reverse<T>, a.ref(), detail::set_a(lambda), a);
}

/// The same value, cut from the graph.
template <class T>
Var<T> detach(const Var<T>& a) {
    return a.tape().leaf(a.ref(), false);
}

// ---- fused dense layer ------------------------------------------------------------------------

/// g * act'(z) from the activation's output y = act(z), the fused dense op's activation step. Its
/// forward is simd/activation.hpp's activation_grad (k_act_grad) in both passes, so the recorded
/// first-order gradient equals the eager one bit for bit. The rule writes the derivative as
/// D(y) = act'(z) seen as a function of the output: d(g D(y))/dg = D(y), the op again, and
/// d(g D(y))/dy = g D'(y), with D' in ordinary ops so every higher order follows.
template <class O, class T, class V>
void backward_act_grad(O& o, const Node<T>& n, const V& gbar) {
    const auto act = static_cast<Activation>(n.act);
    const V y = o.in(n, 1);
    if (o.needs(n, 0)) o.acc(n, 0, act_grad(gbar, y, act, n.a0));
    // relu, leaky_relu: D is piecewise constant in y, so nothing flows into y.
    if (!o.needs(n, 1) || act == Activation::none || act == Activation::relu || act == Activation::leaky_relu) return;
    const V gg = mul(gbar, o.in(n, 0));
    switch (act) {
    case Activation::elu: o.acc(n, 1, mul(gg, add_scalar(neg(positive_mask(y)), T(1)))); break;  // D = y + alpha for y <= 0
    case Activation::tanh: o.acc(n, 1, mul(gg, scale(y, T(-2)))); break;                          // D = 1 - y^2
    case Activation::sigmoid: o.acc(n, 1, mul(gg, add_scalar(scale(y, T(-2)), T(1)))); break;     // D = y (1 - y)
    case Activation::softplus: o.acc(n, 1, mul(gg, exp(neg(y)))); break;                          // D = 1 - e^-y
    default: break;
    }
}
TAPIR_OP(act_grad, "act_grad", backward_act_grad);
/// The eager pass computes it straight into the arena, recording nothing ...
template <class T>
Eager<T> act_grad(const Eager<T>& g, const Eager<T>& y, Activation act, T alpha) {
    return Eager<T>{detail::k_act_grad(*g.t, g.r, y.r, act, alpha), g.t};
}
/// ... the recorded one with the same kernel, as one node (none passes g on unchanged).
template <class T>
Var<T> act_grad(const Var<T>& g, const Var<T>& y, Activation act, T alpha) {
    if (act == Activation::none) return g;
    Tape<T>& t = detail::same_tape(g, y, "act_grad");
    return detail::emit(t, op_act_grad<T>, detail::k_act_grad(t, detail::ref(t, g), detail::ref(t, y), act, alpha),
                        [act, alpha](Node<T>& n) {
                            n.act = static_cast<std::uint8_t>(act);
                            n.a0 = alpha;
                        },
                        g, y);
}

template <class O, class T, class V>
void backward_dense(O& o, const Node<T>& n, const V& g) {
    const V gz = act_grad(g, o.out(n), static_cast<Activation>(n.act), n.a0);
    if (o.needs(n, 0)) o.acc(n, 0, matmul(gz, o.in(n, 1), false, true));
    if (o.needs(n, 1)) o.acc_matmul(n, 1, o.in(n, 0), gz, true, false);
    if (n.in[2] >= 0 && o.needs(n, 2)) o.acc(n, 2, sum_to(gz, o.shape(n, 2)));
}
TAPIR_OP(dense, "dense", backward_dense);
namespace detail {
/// An optional operand such as a bias: a value, a pointer to one, or nullptr for none. Functions
/// take it as `typename optional_var<T>::arg`, so T comes from their other arguments and one
/// definition accepts all three forms.
template <class T>
class optional_var {
public:
    using arg = optional_var;
    optional_var(std::nullptr_t) noexcept {}
    optional_var(const Var<T>* v) noexcept : p_(v) {}
    optional_var(const Var<T>& v) noexcept : p_(&v) {}
    const Var<T>* get() const noexcept { return p_; }

private:
    const Var<T>* p_ = nullptr;
};
} // namespace detail

/// act(x W + b) as one node: x (batch, in), W (in, out), b (out,) optional: a value, a pointer
/// to one, or nullptr.
template <class T>
Var<T> dense(const Var<T>& x, const Var<T>& w, typename detail::optional_var<T>::arg bias, Activation act = Activation::none,
             T alpha = T(0.01)) {
    const Var<T>* b = bias.get();
    Tape<T>& t = detail::same_tape(x, w, "dense");
    if (b) detail::same_tape(x, *b, "dense");
    const Ref<T> bref = b ? b->ref() : Ref<T>{};
    Var<T> v = t.record(op_dense<T>, detail::k_dense(t, x.ref(), w.ref(), b ? &bref : nullptr, act, alpha), x.index(), w.index(),
                        b ? b->index() : -1);
    Node<T>& n = t.node_mut(v.index());
    n.act = static_cast<std::uint8_t>(act);
    n.a0 = alpha;
    return v;
}

// ---- fused binary cross-entropy from logits ------------------------------------------------

template <class O, class T, class V>
void backward_bce_logits(O& o, const Node<T>& n, const V& g) {
    const V z = o.in(n, 0), y = o.in(n, 1);
    const auto weighted = [&](const V& v) {
        const V scaled = scale(reshape(v, o.shape(n, 0)), n.a0);
        return n.in[2] >= 0 ? mul(scaled, reshape(o.in(n, 2), o.shape(n, 0))) : scaled;
    };
    if (o.needs(n, 0)) o.acc(n, 0, mul(g, weighted(sub(sigmoid(z), reshape(y, o.shape(n, 0))))));
    if (o.needs(n, 1)) o.acc(n, 1, reshape(mul(g, weighted(neg(z))), o.shape(n, 1)));
}
TAPIR_OP(bce_logits, "bce_with_logits", backward_bce_logits);
/// sum_i w_i (softplus(z_i) - y_i z_i) / sum_i w_i as one node (the mean when w is absent).
/// Never forms log(sigmoid(z)), so it is finite for any logit. Weights may be negative (Monte
/// Carlo weights) but must not sum to zero; they are constants (no gradient flows into them).
template <class T>
Var<T> bce_with_logits(const Var<T>& logits, const Var<T>& targets, const Var<T>* weights = nullptr) {
    Tape<T>& t = detail::same_tape(logits, targets, "bce_with_logits");
    if (logits.size() != targets.size())
        detail::throw_shape("bce_with_logits: logits vs targets", logits.shape(), targets.shape());
    if (logits.size() == 0) throw shape_error("bce_with_logits: empty batch (logits of shape " + logits.shape().str() + ")");
    const T* z = logits.data();
    const T* y = targets.data();
    const T* w = nullptr;
    const std::size_t n = logits.size();
    T norm = static_cast<T>(n);
    if (weights) {
        detail::same_tape(logits, *weights, "bce_with_logits");
        if (weights->size() != n) detail::throw_shape("bce_with_logits: logits vs weights", logits.shape(), weights->shape());
        w = weights->data();
        norm = T(0);
        for (std::size_t i = 0; i < n; ++i) norm += w[i];
        if (norm == T(0)) throw value_error("bce_with_logits: the event weights sum to zero");
    }
    T acc = T(0);
    for (std::size_t i = 0; i < n; ++i) acc += (w ? w[i] : T(1)) * (detail::stable_softplus(z[i]) - y[i] * z[i]);
    Ref<T> out = t.alloc(Shape{});
    out.data[0] = acc / norm;
    Var<T> v = t.record(op_bce_logits<T>, out, logits.index(), targets.index(), weights ? weights->index() : -1);
    Node<T>& nd = t.node_mut(v.index());
    nd.a0 = T(1) / norm;
    if (weights && weights->requires_grad()) nd.requires_grad = logits.requires_grad() || targets.requires_grad();
    return v;
}
template <class T>
Var<T> bce_with_logits(const Var<T>& logits, const Var<T>& targets, const Var<T>& weights) {
    return bce_with_logits(logits, targets, &weights);
}

// ---- non-differentiable masks used by backward rules ------------------------------------------

namespace detail {
/// A mask: recorded without a gradient (rules multiply by it; nothing flows through it).
template <class T, class Set>
Var<T> emit_mask(Tape<T>& t, const OpDef<T>& op, const Ref<T>& out, Set set, const Var<T>& a) {
    Var<T> v = emit(t, op, out, set, a);
    t.node_mut(v.index()).requires_grad = false;
    return v;
}
template <class T, class Set>
Eager<T> emit_mask(Tape<T>& t, const OpDef<T>&, const Ref<T>& out, Set, const Eager<T>&) noexcept {
    return Eager<T>{out, &t};
}
/// A mask computed elementwise, f(x) for every element x of a.
template <class T, template <class> class V, class F, class Set = no_attrs>
val<V, T> unary_mask(const OpDef<T>& op, const V<T>& a, F f, Set set = {}) {
    Tape<T>& t = tape_of(a);
    return emit_mask(t, op, k_unary(t, ref(a), f), set, a);
}
} // namespace detail

TAPIR_OP_NO_GRAD(positive_mask, "positive_mask");
template <class T, template <class> class V>
detail::val<V, T> positive_mask(const V<T>& a) {
    return detail::unary_mask(op_positive_mask<T>, a, [](T x) { return x > T(0) ? T(1) : T(0); });
}
TAPIR_OP_NO_GRAD(sign, "sign");
template <class T, template <class> class V>
detail::val<V, T> sign(const V<T>& a) {
    return detail::unary_mask(op_sign<T>, a, [](T x) { return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0)); });
}
TAPIR_OP_NO_GRAD(inrange_mask, "inrange_mask");
template <class T, template <class> class V>
detail::val<V, T> inrange_mask(const V<T>& a, T lo, T hi) {
    return detail::unary_mask(op_inrange_mask<T>, a, [lo, hi](T x) { return x >= lo && x <= hi ? T(1) : T(0); }, detail::set_a(lo, hi));
}
TAPIR_OP_NO_GRAD(leaky_slope, "leaky_slope");
template <class T, template <class> class V>
detail::val<V, T> leaky_slope(const V<T>& a, T alpha) {
    return detail::unary_mask(op_leaky_slope<T>, a, [alpha](T x) { return x > T(0) ? T(1) : alpha; }, detail::set_a(alpha));
}
TAPIR_OP_NO_GRAD(extreme_mask, "extreme_mask");
template <class T, template <class> class V>
detail::val<V, T> extreme_mask(const V<T>& a, std::int32_t axis, bool is_max) {
    Tape<T>& t = detail::tape_of(a);
    const auto ax = static_cast<std::size_t>(axis);
    return detail::emit_mask(t, op_extreme_mask<T>, detail::k_extreme_mask(t, detail::ref(a), ax, is_max), detail::set_axis<T>(ax, false), a);
}

// ---- operators: Var with Var, or with a scalar of any arithmetic type (converted to T) ----------

template <class T> Var<T> operator+(const Var<T>& a, const Var<T>& b) { return add(a, b); }
template <class T> Var<T> operator-(const Var<T>& a, const Var<T>& b) { return sub(a, b); }
template <class T> Var<T> operator*(const Var<T>& a, const Var<T>& b) { return mul(a, b); }
template <class T> Var<T> operator/(const Var<T>& a, const Var<T>& b) { return div(a, b); }
template <class T> Var<T> operator-(const Var<T>& a) { return neg(a); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator+(const Var<T>& a, S c) { return add_scalar(a, static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator+(S c, const Var<T>& a) { return add_scalar(a, static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator-(const Var<T>& a, S c) { return add_scalar(a, -static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator-(S c, const Var<T>& a) { return add_scalar(neg(a), static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator*(const Var<T>& a, S c) { return scale(a, static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator*(S c, const Var<T>& a) { return scale(a, static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator/(const Var<T>& a, S c) { return scale(a, T(1) / static_cast<T>(c)); }
template <class T, class S, detail::if_scalar<S> = 0> Var<T> operator/(S c, const Var<T>& a) { return rdiv_scalar(static_cast<T>(c), a); }

} // namespace tapir
