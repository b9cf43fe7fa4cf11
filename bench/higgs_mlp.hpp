#pragma once
// The Higgs MLP of the training benchmarks (bench_train, bench_parallel): 8 inputs, 3 hidden
// Dense+ReLU layers of `hidden` units (ReLU fused into the Dense node), one logit.
#include <cstddef>

#include <tapir/nn/layers.hpp>
#include <tapir/nn/sequential.hpp>
#include <tapir/random.hpp>

namespace bench {

inline tapir::nn::Sequential<float> higgs_mlp(std::size_t hidden, tapir::Rng& rng) {
    using tapir::nn::Dense;
    tapir::nn::Sequential<float> m;
    m.add<Dense<float>>(8, hidden, rng, tapir::Activation::relu)
        .add<Dense<float>>(hidden, hidden, rng, tapir::Activation::relu)
        .add<Dense<float>>(hidden, hidden, rng, tapir::Activation::relu)
        .add<Dense<float>>(hidden, 1, rng);
    return m;
}

} // namespace bench
