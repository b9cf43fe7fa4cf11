#pragma once
// Locates ../shared/data files beside the checkout; tests skip with a message when absent.
#include <fstream>
#include <string>

#ifndef TAPIR_SOURCE_DIR
#define TAPIR_SOURCE_DIR "."
#endif

namespace tapir_test {
inline std::string shared_data(const std::string& name) {
    const std::string path = std::string(TAPIR_SOURCE_DIR) + "/../shared/data/" + name;
    std::ifstream f(path);
    return f.good() ? path : std::string();
}
} // namespace tapir_test
