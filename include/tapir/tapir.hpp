#pragma once
/// tapir: the umbrella header. Include this, or only the concept headers you use.

#include "config.hpp"
#include "error.hpp"
#include "tensor/shape.hpp"
#include "tensor/tensor.hpp"
#include "data/random.hpp"
