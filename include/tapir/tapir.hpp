#pragma once
/// tapir: the umbrella header. Include this, or only the concept headers you use.

#include "config.hpp"
#include "error.hpp"
#include "tensor/shape.hpp"
#include "tensor/tensor.hpp"
#include "data/random.hpp"
#include "data/dataset.hpp"
#include "autodiff/arena.hpp"
#include "autodiff/tape.hpp"
#include "autodiff/kernels.hpp"
#include "autodiff/ops.hpp"
#include "autodiff/backward.hpp"
#include "autodiff/gradcheck.hpp"
#include "io/csv.hpp"
#include "io/svg.hpp"
#include "metrics/metrics.hpp"
