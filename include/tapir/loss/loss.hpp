#pragma once
/// All of tapir's training objectives (loss/): classification, GAN and WGAN-GP, significance,
/// DisCo, learning from label proportions, mixture density NLL, learning to pivot, and binned
/// Poisson likelihood fits. Formulas and sources are in each header.

#include "classification.hpp"
#include "common.hpp"
#include "disco.hpp"
#include "gan.hpp"
#include "label_proportions.hpp"
#include "mdn.hpp"
#include "pivot.hpp"
#include "poisson_fit.hpp"
#include "significance.hpp"
