#pragma once
// Shared by the set op and set/graph layer tests: masks, particle permutations, padding,
// and gradcheck of a multi-input layer with respect to its input and parameters.
#include <doctest/doctest.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <tapir/autodiff/gradcheck.hpp>
#include <tapir/nn/module.hpp>
#include <tapir/random.hpp>

#include "support/gradcheck.hpp"

namespace set_fixture {
using tapir::Shape;
using tapir_test::Td;
using tapir_test::V;
using tapir_test::Vs;

/// A (B, N) mask with lengths[b] real particles first.
inline Td mask_of(std::size_t n, const std::vector<std::size_t>& lengths) {
    Td m(Shape{lengths.size(), n});
    for (std::size_t b = 0; b < lengths.size(); ++b)
        for (std::size_t i = 0; i < n; ++i) m(b, i) = i < lengths[b] ? 1.0 : 0.0;
    return m;
}

/// Particles of each event reordered: out[b, i] = in[b, perm[i]] (rank 2 or 3).
inline Td permute(const Td& x, const std::vector<std::size_t>& perm) {
    Td out(x.shape());
    const std::size_t B = x.shape()[0], N = x.shape()[1], F = x.size() / (B * N);
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t i = 0; i < N; ++i)
            for (std::size_t f = 0; f < F; ++f) out[(b * N + i) * F + f] = x[(b * N + perm[i]) * F + f];
    return out;
}

/// x with `extra` more particles per event, filled with `fill` (rank 2 or 3).
inline Td pad_particles(const Td& x, std::size_t extra, double fill) {
    Shape s = x.shape();
    const std::size_t B = s[0], N = s[1], F = x.size() / (B * N);
    s[1] = N + extra;
    Td out(s);
    for (std::size_t b = 0; b < B; ++b)
        for (std::size_t i = 0; i < N + extra; ++i)
            for (std::size_t f = 0; f < F; ++f) out[(b * (N + extra) + i) * F + f] = i < N ? x[(b * N + i) * F + f] : fill + 0.37 * double(f);
    return out;
}

/// A module seen as one-input: forward(x) calls the given multi-input forward with constants.
template <class M>
class Bound : public tapir::nn::Module<double> {
public:
    using Fn = std::function<V(M&, const V&)>;
    Bound(M& inner, Fn fn) : inner_(&inner), fn_(std::move(fn)) {}
    V forward(const V& x) override { return fn_(*inner_, x); }
    std::string type_name() const override { return "Bound(" + inner_->describe() + ")"; }
    std::unique_ptr<tapir::nn::Module<double>> clone() const override { return std::make_unique<Bound>(*this); }

protected:
    void collect_children(std::vector<tapir::nn::NamedModule<double>>& out) override { out.emplace_back("inner", inner_); }

private:
    M* inner_;
    Fn fn_;
};

/// gradcheck and gradgradcheck with respect to the input and every parameter.
inline void check_module(tapir::nn::Module<double>& m, const Td& x) {
    std::vector<Td> inputs{x};
    for (auto* p : m.parameters()) inputs.push_back(p->value);
    tapir_test::check_both([&m](tapir::Tape<double>&, const Vs& v) { return tapir::nn::functional_call(m, v[0], Vs(v.begin() + 1, v.end())); },
                           inputs);
}
} // namespace set_fixture
