#pragma once
/// Opt-in precompiled instantiations of the costliest templates above the SIMD layer (the backward
/// driver, the layers and containers, fit/predict, the optimisers), for float and double.
/// Header-only use is unchanged by default. A program that defines TAPIR_EXTERN_TEMPLATES in every
/// file and TAPIR_INSTANTIATE_KERNELS in exactly one file that includes <tapir/tapir.hpp> compiles
/// them (and the kernels of simd/) once: a user file then compiles in a fraction of the time.

#include <cstddef>
#include <vector>

#include "autodiff/backward.hpp"
#include "nn/fit.hpp"
#include "nn/layers.hpp"
#include "nn/module.hpp"
#include "nn/sequential.hpp"
#include "optim/adagrad.hpp"
#include "optim/adam.hpp"
#include "optim/optimizer.hpp"
#include "optim/rmsprop.hpp"
#include "optim/sgd.hpp"

#if defined(TAPIR_INSTANTIATE_KERNELS) || defined(TAPIR_EXTERN_TEMPLATES)
#if defined(TAPIR_INSTANTIATE_KERNELS)
#define TAPIR_INSTANTIATE_X template
#else
#define TAPIR_INSTANTIATE_X extern template
#endif
/// Whole classes: their out-of-line and virtual members (not inlined calls) come from the one file.
#define TAPIR_INSTANTIATE_ALL(T)                                                                        \
    TAPIR_INSTANTIATE_X void detail::run_eager<T>(Tape<T>&, std::vector<Ref<T>>&, const Var<T>*, std::size_t, const Var<T>*, bool); \
    TAPIR_INSTANTIATE_X class nn::Module<T>;                                                              \
    TAPIR_INSTANTIATE_X class nn::Sequential<T>;                                                          \
    TAPIR_INSTANTIATE_X class nn::Dense<T>;                                                               \
    TAPIR_INSTANTIATE_X nn::History nn::fit<T, nn::BceWithLogitsLoss>(                                    \
        nn::Module<T>&, const Tensor<T>&, const Tensor<T>&, optim::Optimizer<T>&, const nn::FitOptions<T>&, \
        nn::BceWithLogitsLoss);                                                                           \
    TAPIR_INSTANTIATE_X nn::History nn::fit<T, nn::MseLoss>(nn::Module<T>&, const Tensor<T>&, const Tensor<T>&, \
                                                            optim::Optimizer<T>&, const nn::FitOptions<T>&, \
                                                            nn::MseLoss);                                 \
    TAPIR_INSTANTIATE_X Tensor<T> nn::predict<T>(nn::Module<T>&, const Tensor<T>&, std::size_t);         \
    TAPIR_INSTANTIATE_X class optim::Optimizer<T>;                                                        \
    TAPIR_INSTANTIATE_X class optim::detail::DecayingOptimizer<T>;                                        \
    TAPIR_INSTANTIATE_X class optim::detail::AdamCore<T>;                                                 \
    TAPIR_INSTANTIATE_X class optim::Adam<T>;                                                             \
    TAPIR_INSTANTIATE_X class optim::AdamW<T>;                                                            \
    TAPIR_INSTANTIATE_X class optim::SGD<T>;                                                              \
    TAPIR_INSTANTIATE_X class optim::RMSprop<T>;                                                          \
    TAPIR_INSTANTIATE_X class optim::Adagrad<T>;

namespace tapir {
TAPIR_INSTANTIATE_ALL(float)
TAPIR_INSTANTIATE_ALL(double)
} // namespace tapir

#undef TAPIR_INSTANTIATE_ALL
#undef TAPIR_INSTANTIATE_X
#endif
