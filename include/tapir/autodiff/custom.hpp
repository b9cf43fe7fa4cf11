#pragma once
/// User-defined ops without editing the library, the analogue of torch.autograd.Function: a
/// struct with a name, a forward kernel and a backward rule, and `custom_op<Op>(inputs...)` to
/// record it. The backward rule is a template over the value type V, exactly as the library's
/// own rules (ops.hpp): written with the ordinary ops, it serves the fast eager backward and the
/// recorded one of grad(..., create_graph = true), so gradgradcheck and higher orders work.
///
///     struct Softsign {  // x / (1 + |x|)
///         static constexpr const char* name = "softsign";
///         template <class T>  // optional; the default is the first input's shape
///         static tapir::Shape output_shape(const tapir::CustomInputs<T>& in) { return in.shape(0); }
///         template <class T>
///         static void forward(const tapir::CustomInputs<T>& in, T* out) {
///             for (std::size_t i = 0; i < in.size(0); ++i) out[i] = in.data(0)[i] / (T(1) + std::abs(in.data(0)[i]));
///         }
///         template <class O, class T, class V>  // d/dx = 1 / (1 + |x|)^2
///         static void backward(O& o, const tapir::Node<T>& n, const V& g) {
///             o.acc(n, 0, div(g, square(add_scalar(abs(o.in(n, 0)), 1))));
///         }
///     };
///     tapir::Var<double> y = tapir::custom_op<Softsign>(x);
///
/// In backward, o.in(n, k) is input k, o.out(n) the output, o.shape(n, k) input k's shape,
/// o.needs(n, k) whether input k wants a gradient and o.acc(n, k, v) adds v to it; n.a0 and n.a1
/// are the op's scalar attributes (`custom_op<Op>(CustomAttributes<T>{a0, a1}, x)`). A rule may
/// record custom ops too. Up to 3 inputs; an op of more inputs packs them (concat). Check a new
/// op with tapir::gradcheck and tapir::gradgradcheck (autodiff/gradcheck.hpp).

#include <cstddef>
#include <string>
#include <type_traits>

#include "backward.hpp"
#include "ops.hpp"
#include "tape.hpp"

namespace tapir {

/// What a custom op's forward sees: its inputs' data and shapes, and its scalar attributes.
template <class T>
struct CustomInputs {
    const Ref<T>* refs[3] = {nullptr, nullptr, nullptr};
    std::size_t count = 0;
    T a0 = T(0), a1 = T(0);

    const T* data(std::size_t k) const { return refs[k]->data; }
    const Shape& shape(std::size_t k) const { return refs[k]->shape; }
    std::size_t size(std::size_t k) const { return refs[k]->shape.numel(); }
};

/// Scalar attributes of a custom op node (n.a0, n.a1 in its backward rule).
template <class T>
struct CustomAttributes {
    T a0 = T(0), a1 = T(0);
};

namespace detail {
template <class Op, class T, class = void>
struct has_output_shape : std::false_type {};
template <class Op, class T>
struct has_output_shape<Op, T, std::void_t<decltype(Op::template output_shape<T>(std::declval<const CustomInputs<T>&>()))>> : std::true_type {};

/// The descriptor of a custom op: its name and its rule instantiated for the two passes.
template <class Op, class T>
inline constexpr OpDef<T> custom_op_def{Op::name, &Op::template backward<EagerContext<T>, T, Eager<T>>,
                                        &Op::template backward<RecordContext<T>, T, Var<T>>};

template <class Op, class T, class... In>
Ref<T> custom_forward(Tape<T>& t, const CustomAttributes<T>& attrs, const In&... in) {
    CustomInputs<T> ci;
    const Ref<T>* rs[] = {&ref(t, in)...};
    for (std::size_t k = 0; k < sizeof...(In); ++k) ci.refs[k] = rs[k];
    ci.count = sizeof...(In);
    ci.a0 = attrs.a0;
    ci.a1 = attrs.a1;
    Shape s;
    if constexpr (has_output_shape<Op, T>::value) s = Op::template output_shape<T>(ci);
    else s = ci.shape(0);
    const Ref<T> out = t.alloc(s);
    Op::template forward<T>(ci, out.data);
    return out;
}

template <class T>
Tape<T>& common_tape(const char*, const Var<T>& a) {
    return a.tape();
}
template <class T, class... Rest>
Tape<T>& common_tape(const char* name, const Var<T>& a, const Var<T>& b, const Rest&... rest) {
    same_tape(a, b, name);
    return common_tape(name, b, rest...);
}
template <class T, class... Rest>
Tape<T>& common_tape(const char*, const Eager<T>& a, const Rest&...) noexcept {
    return *a.t;
}
} // namespace detail

/// Records the custom op Op on its inputs (1 to 3 values of the same type, Var or Eager).
template <class Op, class T, template <class> class V, class... Rest>
detail::val<V, T> custom_op(const CustomAttributes<T>& attrs, const V<T>& a, const Rest&... rest) {
    static_assert(sizeof...(Rest) <= 2, "custom_op: at most 3 inputs (pack more with concat)");
    static_assert((std::is_same<Rest, V<T>>::value && ...), "custom_op: all inputs must be of the same value type");
    Tape<T>& t = detail::common_tape(Op::name, a, rest...);
    const Ref<T> out = detail::custom_forward<Op>(t, attrs, a, rest...);
    return detail::emit(t, detail::custom_op_def<Op, T>, out, detail::set_a(attrs.a0, attrs.a1), a, rest...);
}
template <class Op, class T, template <class> class V, class... Rest>
detail::val<V, T> custom_op(const V<T>& a, const Rest&... rest) {
    return custom_op<Op>(CustomAttributes<T>{}, a, rest...);
}

} // namespace tapir
