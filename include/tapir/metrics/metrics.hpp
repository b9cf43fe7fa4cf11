#pragma once
/// All metrics: ROC / AUC / rejection, histograms, Jensen-Shannon divergence, significances, accuracy.

#include "accuracy.hpp"
#include "common.hpp"
#include "divergence.hpp"
#include "histogram.hpp"
#include "roc.hpp"
#include "significance.hpp"
