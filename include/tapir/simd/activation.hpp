#pragma once
/// The activations a dense layer can fuse: one enum for the tape, the layers, the deployed models
/// and the code generator.

#include <cstdint>

namespace tapir {

/// Activation fused into a dense node.
enum class Activation : std::uint8_t { none, relu, leaky_relu, elu, tanh, sigmoid, softplus };

inline const char* activation_name(Activation a) noexcept {
    switch (a) {
    case Activation::none: return "linear";
    case Activation::relu: return "relu";
    case Activation::leaky_relu: return "leaky_relu";
    case Activation::elu: return "elu";
    case Activation::tanh: return "tanh";
    case Activation::sigmoid: return "sigmoid";
    case Activation::softplus: return "softplus";
    }
    return "?";
}

} // namespace tapir
