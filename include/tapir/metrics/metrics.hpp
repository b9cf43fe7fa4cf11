#pragma once
/// All metrics: ROC / AUC / rejection, histograms, Jensen-Shannon divergence, significances, accuracy,
/// bootstrap uncertainties.

#include "accuracy.hpp"
#include "bootstrap.hpp"
#include "common.hpp"
#include "divergence.hpp"
#include "histogram.hpp"
#include "roc.hpp"
#include "significance.hpp"
