#pragma once
/// Inference-only deployment header for trigger and embedded code: the fixed-size and quantised
/// models, no exceptions, no heap, none of the training library (compiles in a fraction of
/// tapir.hpp's time):
///   fixed.hpp     Mlp<float, 8, 24, 16, 8, 1>: compile-time sizes, noexcept, no heap, SIMD kernels,
///                 bitwise the dynamic model's numbers (builds with -fno-exceptions -fno-rtti)
///   model.hpp     ModelT<float, Conv2dT<...>, MaxPool2dT<...>, FlattenT<...>, DenseT<...>>: any
///                 chain of dense, convolution, pooling, activation, LSTM and GRU layers, and
///                 DeepSetT (PFN), EnergyFlowT (EFN); same guarantees and bitwise the trained model
///   quantize.hpp  Int8Mlp (int8 weights and activations) and FixedMlp<FixedPoint<W, I>, ...>
///                 (the ap_fixed<W, I> convention), same guarantees
///   quantize_model.hpp  QuantizedT<Int8, M> and QuantizedT<FixedPoint<W, I>, M>: a ModelT with
///                 its dense and convolution layers quantised, quantize_model() calibrates it
/// The tools that build these models from trained ones are separate headers (both in tapir.hpp):
///   convert.hpp   ModelSpec (a neutral list of dense layers) from nn::Sequential or a model file,
///                 loading into the fixed-size and quantised models, int8 calibration
///   convert_model.hpp  ModelT, DeepSetT and EnergyFlowT from a trained nn::Sequential,
///                 DeepSet or EnergyFlowNetwork, or a model file
///   onnx.hpp      load_onnx: a ModelT from an ONNX file (PyTorch's MLPs, CNNs, LSTMs, GRUs)
///   codegen.hpp   generate_header(): one standalone C++ header (weights as constexpr arrays, one
///                 function, only `<cmath>`) for firmware and trigger code bases

#include "fixed.hpp"
#include "model.hpp"
#include "quantize.hpp"
#include "quantize_model.hpp"
