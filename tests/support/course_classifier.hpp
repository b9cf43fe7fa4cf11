#pragma once
// The course classifier's shape for the data-parallel tests (threads and MPI): a synthetic
// 8-feature problem, the 8 -> 64 -> 64 -> 64 -> 1 ReLU MLP, and a parameter comparison.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/random.hpp>

namespace tapir_test {

struct ClassifierData {
    tapir::Tensor<float> x, y;
};

/// n events of 8 normal features; the label is a noisy linear cut.
inline ClassifierData classifier_data(std::size_t n, std::uint64_t seed) {
    tapir::Rng rng(seed);
    ClassifierData d{tapir::Tensor<float>(tapir::Shape{n, 8}), tapir::Tensor<float>(tapir::Shape{n, 1})};
    for (std::size_t i = 0; i < n; ++i) {
        double s = 0.0;
        for (std::size_t j = 0; j < 8; ++j) {
            const double v = rng.normal();
            d.x[i * 8 + j] = static_cast<float>(v);
            s += v * (j % 2 ? 0.5 : -0.3);
        }
        d.y[i] = s + 0.3 * rng.normal() > 0 ? 1.0f : 0.0f;
    }
    return d;
}

/// 8 -> 64 -> 64 -> 64 -> 1 (ReLU), weights from a seed.
inline tapir::nn::Sequential<float> classifier_mlp(std::uint64_t seed) {
    using namespace tapir::nn;
    tapir::Rng rng(seed);
    Sequential<float> m;
    m.add<Dense<float>>(8, 64, rng).add<ReLU<float>>().add<Dense<float>>(64, 64, rng).add<ReLU<float>>();
    m.add<Dense<float>>(64, 64, rng).add<ReLU<float>>().add<Dense<float>>(64, 1, rng);
    return m;
}

/// Largest |a - b| over all parameters of two models of the same layout, relative to max(1, |a|).
inline double max_param_diff(tapir::nn::Module<float>& a, tapir::nn::Module<float>& b) {
    const auto pa = a.parameters(), pb = b.parameters();
    double d = pa.size() == pb.size() ? 0.0 : INFINITY;
    for (std::size_t k = 0; k < pa.size() && k < pb.size(); ++k)
        for (std::size_t i = 0; i < pa[k]->size(); ++i) {
            const double u = pa[k]->value[i], v = pb[k]->value[i];
            d = std::max(d, std::abs(u - v) / std::max(1.0, std::abs(u)));
        }
    return d;
}

} // namespace tapir_test
