#pragma once
/// The two index ops: take (out[i] = a[idx[i]], 0 where idx[i] = -1) and its adjoint put_add
/// (out[idx[i]] += g[i], -1 skipped), each the other's backward rule, so every order of derivative
/// follows. Indices live in the tape's arena (Node::index). The gathers and scatters of sets.hpp
/// and max pooling's gradient (conv.hpp) are index computations on top of them.

#include <cstddef>
#include <cstdint>

#include "ops.hpp"
#include "tape.hpp"

namespace tapir {

namespace detail {

/// out[i] = a[idx[i]] (flat positions), 0 where idx[i] is negative.
template <class T>
Ref<T> k_take(Tape<T>& t, const Ref<T>& a, const std::int64_t* idx, const Shape& out_shape) {
    Ref<T> out = t.alloc(out_shape);
    const std::size_t n = out_shape.numel();
    for (std::size_t i = 0; i < n; ++i) out.data[i] = idx[i] >= 0 ? a.data[static_cast<std::size_t>(idx[i])] : T(0);
    return out;
}

/// The adjoint of take: zeros of out_shape, then out[idx[i]] += g[i] (negative idx skipped).
template <class T>
Ref<T> k_put_add(Tape<T>& t, const Ref<T>& g, const std::int64_t* idx, const Shape& out_shape) {
    Ref<T> out = t.alloc(out_shape);
    const std::size_t m = out_shape.numel(), n = g.size();
    for (std::size_t i = 0; i < m; ++i) out.data[i] = T(0);
    for (std::size_t i = 0; i < n; ++i)
        if (idx[i] >= 0) out.data[static_cast<std::size_t>(idx[i])] += g.data[i];
    return out;
}

} // namespace detail

// take and put_add are each other's adjoint: each rule is the other op on the node's positions.
TAPIR_LINEAR_OP(take, put_add_raw(g, n.index, o.shape(n, 0)));
TAPIR_LINEAR_OP(put_add, take_raw(g, n.index, o.shape(n, 0)));

/// Elements of a at flat positions idx[0 .. out_shape.numel()) (unchecked, in the arena); -1 gives 0.
template <class T, template <class> class V>
detail::val<V, T> take_raw(const V<T>& a, const std::int64_t* idx, const Shape& out_shape) {
    return detail::indexed<detail::k_take<T>>(op_take<T>, a, idx, out_shape);
}
/// The adjoint of take_raw: g's elements added into zeros of out_shape at flat positions idx (-1 skipped).
template <class T, template <class> class V>
detail::val<V, T> put_add_raw(const V<T>& g, const std::int64_t* idx, const Shape& out_shape) {
    return detail::indexed<detail::k_put_add<T>>(op_put_add<T>, g, idx, out_shape);
}

} // namespace tapir
