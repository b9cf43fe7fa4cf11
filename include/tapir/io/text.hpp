#pragma once
/// Small text helpers for readers of files and user input: quoting text safely in an error
/// message and splitting a list.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tapir {
namespace io {

/// `s` as it may appear in a message: control bytes (below 0x20, and 0x7F) become '?', and text
/// longer than `max_chars` is cut there and ends in "...", so that a corrupt file or a stray binary
/// name cannot garble the terminal or flood the log.
inline std::string printable(std::string_view s, std::size_t max_chars) {
    std::string out;
    const std::size_t n = s.size() < max_chars ? s.size() : max_chars;
    for (std::size_t i = 0; i < n; ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        out += (c < 0x20 || c == 0x7F) ? '?' : s[i];
    }
    if (n < s.size()) out += "...";
    return out;
}

/// The pieces of `s` between occurrences of `sep` (non-empty), in order: n separators give n + 1
/// pieces, empty ones included, so "" gives one empty piece and "a,,b" three.
inline std::vector<std::string> split(std::string_view s, std::string_view sep) {
    std::vector<std::string> out;
    std::size_t at = 0;
    for (;;) {
        const std::size_t k = s.find(sep, at);
        out.emplace_back(s.substr(at, k == std::string_view::npos ? std::string_view::npos : k - at));
        if (k == std::string_view::npos) return out;
        at = k + sep.size();
    }
}

} // namespace io
} // namespace tapir
