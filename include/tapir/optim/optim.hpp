#pragma once
/// Every optimiser, schedule and gradient helper.

#include "adagrad.hpp"
#include "adam.hpp"
#include "clip.hpp"
#include "optimizer.hpp"
#include "regularization.hpp"
#include "rmsprop.hpp"
#include "schedule.hpp"
#include "sgd.hpp"
