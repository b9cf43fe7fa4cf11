#pragma once
/// fit()'s progress display: a bar redrawn with carriage returns on a terminal, or one line per
/// epoch where carriage returns would litter a file (a pipe, a log, CI).

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <string>

#if defined(_WIN32)
#include <io.h>
#elif defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "callbacks.hpp"

namespace tapir {
namespace nn {

/// automatic: the bar on a terminal, nothing otherwise. progress: the bar on a terminal, one
/// line per epoch otherwise. lines: one line per epoch always. quiet: nothing.
enum class Verbosity { automatic, quiet, progress, lines };

namespace detail {

inline bool is_terminal(std::FILE* f) noexcept {
#if defined(_WIN32)
    return _isatty(_fileno(f)) != 0;
#elif defined(__unix__) || defined(__APPLE__)
    return isatty(fileno(f)) != 0;
#else
    (void)f;
    return false;
#endif
}
inline bool stderr_is_terminal() noexcept { return is_terminal(stderr); }

/// "Epoch 3/20 [=====>........] 45/100 - loss: 0.4123" (no allocation: for the step loop).
inline int format_progress(char* buf, std::size_t cap, std::size_t epoch, std::size_t epochs, std::size_t step,
                           std::size_t steps, double loss, std::size_t width = 30) {
    char bar[128];
    if (width > sizeof bar - 1) width = sizeof bar - 1;
    const std::size_t done = steps ? (step * width) / steps : width;
    for (std::size_t i = 0; i < width; ++i) bar[i] = i < done ? '=' : (i == done ? '>' : '.');
    bar[width] = '\0';
    return std::snprintf(buf, cap, "Epoch %zu/%zu [%s] %zu/%zu - loss: %.4f", epoch, epochs, bar, step, steps, loss);
}

/// The line left on screen after an epoch: bar, seconds, then every history column.
inline std::string format_epoch_line(std::size_t epoch, std::size_t epochs, std::size_t steps, double seconds, const History& h) {
    char buf[256];
    format_progress(buf, sizeof buf, epoch, epochs, steps, steps, 0.0);
    std::string s = buf;
    s.erase(s.find(" - loss"));
    std::snprintf(buf, sizeof buf, " - %.1fs", seconds);
    s += buf;
    for (const auto& c : h.columns()) {
        std::snprintf(buf, sizeof buf, " - %s: %.4f", c.c_str(), h[c].back());
        s += buf;
    }
    return s;
}

/// The display of one fit() call. step() is allocation-free (it runs inside the training loop).
class ProgressDisplay {
public:
    ProgressDisplay(Verbosity v, std::FILE* out) : out_(out ? out : stderr) {
        const bool tty = v == Verbosity::automatic || v == Verbosity::progress ? is_terminal(out_) : false;
        bar_ = tty;
        lines_ = !tty && (v == Verbosity::progress || v == Verbosity::lines);
    }
    bool active() const noexcept { return bar_ || lines_; }
    bool bar() const noexcept { return bar_; }

    void start_epoch(std::chrono::steady_clock::time_point t0) noexcept { last_draw_ = t0; }

    /// Redraws the bar at most every 100 ms, and after the last step.
    void step(std::size_t epoch, std::size_t epochs, std::size_t s, std::size_t steps, double loss) {
        if (!bar_) return;
        const auto now = std::chrono::steady_clock::now();
        if (s == steps || now - last_draw_ > std::chrono::milliseconds(100)) {
            last_draw_ = now;
            char line[256];
            const int len = format_progress(line + 1, sizeof line - 1, epoch, epochs, s, steps, loss);
            line[0] = '\r';
            const std::size_t shown = len < 0 ? 0 : (static_cast<std::size_t>(len) < sizeof line - 2 ? static_cast<std::size_t>(len) : sizeof line - 2);
            std::fwrite(line, 1, shown + 1, out_);
        }
    }

    void end_epoch(std::size_t epoch, std::size_t epochs, std::size_t steps, double seconds, const History& h) {
        if (!active()) return;
        const std::string s = (bar_ ? "\r" : "") + format_epoch_line(epoch, epochs, steps, seconds, h) + "\n";
        std::fwrite(s.data(), 1, s.size(), out_);
        if (lines_) std::fflush(out_);
    }

private:
    std::FILE* out_;
    bool bar_ = false, lines_ = false;
    std::chrono::steady_clock::time_point last_draw_{};
};

} // namespace detail
} // namespace nn
} // namespace tapir
