#pragma once
// tapir's timing harness: warm-up, repeats, median and min-max, machine details, JSON output.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <tapir/simd/arch.hpp>

namespace bench {

struct Stats {
    double median = 0, min = 0, max = 0;  // seconds per call
    int repeats = 0;
};

/// Times fn (one call = one unit of work) over `repeats` samples of `inner` calls each, after warm-up.
inline Stats measure(const std::function<void()>& fn, int repeats = 15, int inner = 1, double warmup_s = 0.05) {
    using clk = std::chrono::steady_clock;
    const auto w0 = clk::now();
    do fn();
    while (std::chrono::duration<double>(clk::now() - w0).count() < warmup_s);
    std::vector<double> s;
    for (int r = 0; r < repeats; ++r) {
        const auto t0 = clk::now();
        for (int i = 0; i < inner; ++i) fn();
        s.push_back(std::chrono::duration<double>(clk::now() - t0).count() / inner);
    }
    std::sort(s.begin(), s.end());
    return Stats{s[s.size() / 2], s.front(), s.back(), repeats};
}

/// Picks `inner` so that one sample takes about target_s.
inline int calibrate(const std::function<void()>& fn, double target_s = 0.02) {
    using clk = std::chrono::steady_clock;
    int n = 1;
    for (;;) {
        const auto t0 = clk::now();
        for (int i = 0; i < n; ++i) fn();
        const double dt = std::chrono::duration<double>(clk::now() - t0).count();
        if (dt > target_s || n > (1 << 24)) return n;
        n *= 2;
    }
}

inline std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

inline std::string machine_json() {
    std::ostringstream os;
    os << "{\"cpu\": \"" << cpu_model() << "\", \"isa\": \"" << tapir::simd::isa_name(tapir::simd::active_isa()) << "\"}";
    return os.str();
}

inline void print_machine() {
    std::printf("# cpu: %s, tapir ISA path: %s\n", cpu_model().c_str(), tapir::simd::isa_name(tapir::simd::active_isa()));
}

/// The options of every benchmark with a PyTorch peer: --quick (7 samples), --wall (wall-clock
/// instead of process CPU time), --no-torch, --json FILE, --python PYTHON.
struct PeerOptions {
    bool quick = false, wall = false, torch = true;
    std::string json, python = "/usr/bin/python3";
    int repeats = 15;
    /// Takes argv[i] (and its value, advancing i) when it is one of these options.
    bool parse(int& i, int argc, char** argv) {
        const std::string a = argv[i];
        if (a == "--quick") quick = true, repeats = 7;
        else if (a == "--wall") wall = true;
        else if (a == "--no-torch") torch = false;
        else if (a == "--json" && i + 1 < argc) json = argv[++i];
        else if (a == "--python" && i + 1 < argc) python = argv[++i];
        else return false;
        return true;
    }
    /// Parses the whole command line: these options first, then `extra(arg, i)` for the
    /// benchmark's own (it advances i over their values and returns false for an unknown one).
    /// Prints `usage` and returns false for anything else.
    template <class Extra> bool parse_args(int argc, char** argv, const char* usage, Extra&& extra) {
        for (int i = 1; i < argc; ++i) {
            if (parse(i, argc, argv)) continue;
            if (!extra(std::string(argv[i]), i)) {
                std::fprintf(stderr, "%s", usage);
                return false;
            }
        }
        return true;
    }
    bool parse_args(int argc, char** argv, const char* usage) {
        return parse_args(argc, argv, usage, [](const std::string&, int&) { return false; });
    }
};

} // namespace bench
