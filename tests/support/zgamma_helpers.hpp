#pragma once
/// Test helper shared by the Z gamma generator and feature-layer tests.
#include <algorithm>
#include <cstddef>
#include <string>

#include <tapir/hep/zgamma.hpp>

namespace tapir::test {

/// Column of a named Z gamma feature (18 when the name is unknown, so a CHECK on it fails).
inline std::size_t zgamma_index_of(const std::string& name) {
    const auto& n = hep::zgamma_feature_names();
    return static_cast<std::size_t>(std::find(n.begin(), n.end(), name) - n.begin());
}

} // namespace tapir::test
