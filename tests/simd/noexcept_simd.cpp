// Compiled (not run) with -fno-exceptions -fno-rtti by tests/CMakeLists.txt: simd/ is exception-
// free below its checking entry points (TAPIR_THROW aborts there), so every simd header and its
// kernels build without exceptions, as deploy/ needs. Instantiates each public entry once.
#include <tapir/simd/activation.hpp>
#include <tapir/simd/arch.hpp>
#include <tapir/simd/elementwise.hpp>
#include <tapir/simd/fp_mode.hpp>
#include <tapir/simd/gemm.hpp>
#include <tapir/simd/isa.hpp>
#include <tapir/simd/thread_pool.hpp>
#include <tapir/simd/math.hpp>
#include <tapir/simd/vec.hpp>
#include <tapir/simd/vmath.hpp>

#include <cstddef>

namespace tapir_noexcept_check {
template <class T>
T run_all(T* a, T* b, T* c, std::size_t n) {
    namespace s = tapir::simd;
    s::set_active_isa(s::detected_isa());
    s::gemm<T>(false, true, n, n, n, T(1), a, n, b, n, T(0), c, n);
    (void)s::gemm_bias_act<T>(n, n, n, a, n, b, n, c, true, c, n);
    s::exp(a, c, n);
    s::log(a, c, n);
    s::tanh(a, c, n);
    s::sigmoid(a, c, n);
    s::relu(a, c, n);
    s::relu_backward(a, b, c, n);
    s::axpy(T(2), a, c, n);
    s::activate_on(s::active_isa(), tapir::Activation::elu, a, c, n, T(1));
    s::activation_backward_on(s::active_isa(), tapir::Activation::softplus, a, b, c, n, T(0));
    return s::sum(c, n) + s::dot(a, b, n) + s::activation_scalar<T, true>(tapir::Activation::tanh, a[0], T(0));
}
template float run_all<float>(float*, float*, float*, std::size_t);
template double run_all<double>(double*, double*, double*, std::size_t);
} // namespace tapir_noexcept_check
