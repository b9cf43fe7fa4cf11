#pragma once
// Shared by the examples: the output directory is made before any work, so a path that cannot be
// made fails at once (exit 1, naming the path) instead of after minutes of training. Results are
// written atomically (a temporary file, then a rename), as io/model_file.hpp writes models.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
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

/// Writes text to path + ".tmp" and renames it to path: an interrupted run never leaves a
/// half-written table or plot. Throws std::runtime_error naming the path on failure.
inline void write_text_file(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::binary);
        if (f) f.write(text.data(), static_cast<std::streamsize>(text.size()));
        if (f) f.close();
        if (!f) {
            std::remove(tmp.c_str());
            throw std::runtime_error("cannot write '" + path + "'");
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw std::runtime_error("cannot rename '" + tmp + "' to '" + path + "'");
    }
}
} // namespace examples
