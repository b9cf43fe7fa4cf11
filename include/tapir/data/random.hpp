#pragma once
/// Rng lives on the base floor (tapir/random.hpp); this header is kept so that existing includes work.

#include "../random.hpp"
