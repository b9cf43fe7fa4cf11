#pragma once
// Shared by the examples that write a summary.json by hand.
#include <string>

namespace examples {

/// s as a JSON string: quotes and backslashes escaped, control characters dropped.
inline std::string json_string(const std::string& s) {
    std::string r = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') r += '\\';
        if (static_cast<unsigned char>(c) >= 0x20) r += c;
    }
    return r + "\"";
}

} // namespace examples
