#pragma once
/// Neural-network layers, models and the training loop in one include.

#include "checkpoint.hpp"
#include "data_parallel.hpp"
#include "fit.hpp"
#include "init.hpp"
#include "layers.hpp"
#include "model.hpp"
#include "model_file.hpp"
#include "module.hpp"
#include "pivot.hpp"
#include "recurrent.hpp"
#include "sequential.hpp"
