#pragma once
/// Every optimiser, schedule and gradient helper, and saving an optimiser's state in model files.

#include "adagrad.hpp"
#include "adam.hpp"
#include "clip.hpp"
#include "model_file.hpp"
#include "optimizer.hpp"
#include "regularization.hpp"
#include "rmsprop.hpp"
#include "schedule.hpp"
#include "sgd.hpp"
