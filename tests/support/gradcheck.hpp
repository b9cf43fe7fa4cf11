#pragma once
// The preamble of the gradient tests: double-precision aliases, seeded random inputs, and
// check_both (gradcheck and gradgradcheck with doctest assertions).
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/random.hpp>

namespace tapir_test {
using V = tapir::Var<double>;
using Vs = std::vector<V>;
using Td = tapir::Tensor<double>;

/// Uniform values in [lo, hi).
inline Td rnd(const tapir::Shape& s, std::uint64_t seed, double lo = -2.0, double hi = 2.0) {
    tapir::Rng r(seed);
    Td t(s);
    for (auto& v : t) v = r.uniform(lo, hi);
    return t;
}

/// Values kept away from the kinks of relu/abs/clamp/max so finite differences are valid.
inline Td rnd_away(const tapir::Shape& s, std::uint64_t seed) {
    tapir::Rng r(seed);
    Td t(s);
    for (auto& v : t) v = (r.uniform(0.2, 2.0)) * (r.bernoulli(0.5) ? 1 : -1);
    return t;
}

/// First-order (and unless told otherwise second-order) check of f at xs against central differences.
inline void check_both(const tapir::GradcheckFn& f, const std::vector<Td>& xs, bool second_order = true) {
    const auto r1 = tapir::gradcheck(f, xs);
    INFO("first order: " << r1.message());
    CHECK(r1.passed);
    CHECK(r1.max_error < 1e-6);
    if (second_order) {
        const auto r2 = tapir::gradgradcheck(f, xs);
        INFO("second order: " << r2.message());
        CHECK(r2.passed);
    }
}
} // namespace tapir_test
