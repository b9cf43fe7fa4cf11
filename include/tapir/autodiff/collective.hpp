#pragma once
/// A sum over the processes of a data-parallel group as a tape op: the differentiable all-reduce
/// (torch.distributed.nn.all_reduce) that synchronised BatchNorm (nn::BatchNorm::synchronise)
/// adds its batch statistics with. The transport is not here: a SumGroup is an interface, which
/// distributed/mpi.hpp implements on an MPI communicator, so the tape needs no MPI.
///
/// The gradient. Member r's loss L_r counts in the global loss as w_r L_r (w_r is its
/// loss_weight(), its share of the global batch), and y = sum over q of x_q on every member, so
/// dL/dx_r = sum over q of w_q dL_q/dy. Member r's backward is seeded with dL_r (its parameter
/// gradients are weighted by w_r afterwards, by the gradient all-reduce), so the rule adds
/// (1 / w_r) times the group sum of w_q g_q: one more group sum, in the backward pass.

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "ops.hpp"
#include "tape.hpp"

namespace tapir {

/// The members of a data-parallel group (processes), seen by one member: what group_sum needs.
template <class T>
class SumGroup {
public:
    virtual ~SumGroup() = default;
    /// Element-wise sum over the members of v[0..n), in place, the same on every member. A
    /// collective: every member calls it, with the same n, in the same order.
    virtual void sum(T* v, std::size_t n) = 0;
    /// This member's factor in the global loss (positive): its events over the global batch.
    virtual T loss_weight() const = 0;
};

namespace detail {
static_assert(sizeof(std::size_t) >= sizeof(std::uintptr_t), "group_sum keeps the group's address in a node's integer attribute");

template <class T>
Ref<T> k_group_sum(Tape<T>& t, const Ref<T>& a, SumGroup<T>& group) {
    Ref<T> out = t.alloc(a.shape);
    std::copy(a.data, a.data + a.size(), out.data);
    group.sum(out.data, out.size());
    return out;
}
template <class T>
SumGroup<T>& group_of(const Node<T>& n) noexcept {
    return *reinterpret_cast<SumGroup<T>*>(static_cast<std::uintptr_t>(n.i0));
}
} // namespace detail

template <class O, class T, class V>
void backward_group_sum(O& o, const Node<T>& n, const V& g) {
    SumGroup<T>& group = detail::group_of(n);
    const T w = group.loss_weight();
    o.acc(n, 0, scale(group_sum(scale(g, w), group), T(1) / w));
}
TAPIR_OP(group_sum, "group_sum", backward_group_sum);
/// The element-wise sum of x over the members of group, on every member (the group must outlive
/// the tape's backward pass, which sums again). Every member records it at the same point.
template <class T, template <class> class V>
detail::val<V, T> group_sum(const V<T>& x, SumGroup<T>& group) {
    Tape<T>& t = detail::tape_of(x);
    const auto id = static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(&group));
    return detail::emit(t, op_group_sum<T>, detail::k_group_sum(t, detail::ref(x), group), [id](Node<T>& nd) { nd.i0 = id; }, x);
}

} // namespace tapir
