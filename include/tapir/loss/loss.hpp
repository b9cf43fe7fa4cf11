#pragma once
/// All of tapir's training objectives (loss/): classification, GAN and WGAN-GP, significance,
/// DisCo, learning from label proportions, mixture density NLL (the pivot adversary's loss; its
/// model and trainer are in nn/pivot.hpp), and binned Poisson likelihood fits. Losses are
/// functions only: loss/ includes neither nn/ nor optim/. Formulas and sources are in each header.

#include "classification.hpp"
#include "common.hpp"
#include "disco.hpp"
#include "gan.hpp"
#include "label_proportions.hpp"
#include "mdn.hpp"
#include "poisson_fit.hpp"
#include "significance.hpp"
