#pragma once
// Shared by the examples: the output directory is made before any work, so a path that cannot be
// made fails at once (exit 1, naming the path) instead of after minutes of training.
#include <cstdio>
#include <filesystem>
#include <string>
#include <system_error>

namespace examples {
inline bool make_output_dir(const char* program, const std::string& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (!ec) return true;
    std::fprintf(stderr, "%s: error: cannot create the output directory '%s': %s\n", program, dir.c_str(), ec.message().c_str());
    return false;
}
} // namespace examples
