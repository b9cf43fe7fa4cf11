#pragma once
// Shared by the training benchmarks: CPU clocks, memory figures, and running a PyTorch peer script
// under each of the settings the issue asks for (as installed, OpenBLAS's AVX-512 kernels forced,
// glibc malloc thresholds raised, both), collecting its result lines.
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace bench {

/// Seconds on the given clock: process CPU time (robust on a shared, loaded machine; counts any
/// helper thread) or wall time.
inline double clock_seconds(bool wall) {
    timespec ts;
    clock_gettime(wall ? CLOCK_MONOTONIC : CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Sample {
    double median = NAN, min = NAN, max = NAN;  // seconds per call
};

/// How many calls make one sample of about target_s (the calls double as warm-up).
template <class F>
long calibrate_inner(F&& call, double target_s, bool wall) {
    long inner = 1;
    for (;;) {
        const double t0 = clock_seconds(wall);
        for (long i = 0; i < inner; ++i) call();
        if (clock_seconds(wall) - t0 > target_s || inner > (1L << 24)) return inner;
        inner *= 2;
    }
}

/// Appends `repeats` samples (seconds per call, over `inner` calls each) to out.
template <class F>
void add_samples(F&& call, long inner, int repeats, bool wall, std::vector<double>& out) {
    for (int r = 0; r < repeats; ++r) {
        const double t0 = clock_seconds(wall);
        for (long i = 0; i < inner; ++i) call();
        out.push_back((clock_seconds(wall) - t0) / static_cast<double>(inner));
    }
}

inline Sample summarize(std::vector<double> s) {
    if (s.empty()) return Sample{};
    std::sort(s.begin(), s.end());
    return Sample{s[s.size() / 2], s.front(), s.back()};
}

/// Median, min and max seconds per call over `repeats` samples of about target_s each, after a
/// warm-up of about target_s.
template <class F>
Sample time_calls(F&& call, int repeats, double target_s, bool wall) {
    const long inner = calibrate_inner(call, target_s, wall);
    std::vector<double> s;
    add_samples(call, inner, repeats, wall, s);
    return summarize(s);
}

/// Peak resident set size of this process so far, in MiB (VmHWM).
inline double peak_rss_mib() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

inline std::string load_average() {
    std::ifstream la("/proc/loadavg");
    std::string l1, l5;
    la >> l1 >> l5;
    return l1 + " (1 min) " + l5 + " (5 min) on " + std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " logical CPUs";
}

/// One way of running PyTorch: a label and the environment it runs in.
struct TorchSetting {
    std::string label, env;
};

/// The four settings: as installed; OpenBLAS told the CPU is a SkylakeX (Debian's OpenBLAS 0.3.21
/// does not know Zen 5); glibc malloc kept from returning memory to the OS between steps; both.
/// quick: as installed and both.
inline std::vector<TorchSetting> torch_settings(bool quick) {
    const std::string blas = "OPENBLAS_CORETYPE=SkylakeX";
    const std::string malloc_tune = "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824";
    std::vector<TorchSetting> s{{"as installed", ""}};
    if (!quick) {
        s.push_back({"SkylakeX", blas});
        s.push_back({"malloc tuned", malloc_tune});
    }
    s.push_back({"SkylakeX, malloc tuned", blas + " " + malloc_tune});
    return s;
}

/// Runs bench/<script> (found next to this header's directory, the bench sources) with `python`
/// on one thread in the given setting, and returns its stdout lines; empty if it could not run.
inline std::vector<std::string> run_peer_script(const std::string& python, const std::string& script, const std::string& args,
                                                const TorchSetting& s, int* status = nullptr) {
    std::vector<std::string> lines;
    const std::filesystem::path path = std::filesystem::path(__FILE__).parent_path() / script;
    if (!std::filesystem::exists(path)) return lines;
    // One thread: torch.set_num_threads(1) in the script does not reach OpenBLAS's own pool.
    const std::string cmd = "env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 " + s.env + (s.env.empty() ? "" : " ") +
                            python + " '" + path.string() + "' " + args + " 2>/dev/null";
    std::FILE* p = popen(cmd.c_str(), "r");
    if (!p) return lines;
    char buf[4096];
    while (std::fgets(buf, sizeof buf, p)) {
        std::string l(buf);
        while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
        lines.push_back(l);
    }
    const int rc = pclose(p);
    if (status) *status = rc;
    return lines;
}

/// One result line of a peer script, "TAG KEY... MEDIAN MIN MAX VERSION" (seconds per call):
/// key is the KEY fields joined by '/', empty when there are none.
struct PeerLine {
    std::string key, version;
    Sample t;
};

/// The lines of `lines` that start with `tag` and have that layout.
inline std::vector<PeerLine> peer_lines(const std::vector<std::string>& lines, const std::string& tag) {
    std::vector<PeerLine> out;
    for (const std::string& line : lines) {
        std::istringstream is(line);
        std::vector<std::string> f;
        for (std::string w; is >> w;) f.push_back(w);
        if (f.size() < 5 || f[0] != tag) continue;
        PeerLine p;
        const std::size_t n = f.size();
        char* end = nullptr;
        double v[3];
        bool ok = true;
        for (std::size_t j = 0; j < 3; ++j) {
            v[j] = std::strtod(f[n - 4 + j].c_str(), &end);
            ok = ok && end && *end == 0;
        }
        if (!ok) continue;
        p.t = Sample{v[0], v[1], v[2]};
        p.version = f[n - 1];
        for (std::size_t j = 1; j + 4 < n; ++j) p.key += (j > 1 ? "/" : "") + f[j];
        out.push_back(p);
    }
    return out;
}

/// run_peer_script, then peer_lines with the script's tag (its name without ".py").
inline std::vector<PeerLine> run_peer(const std::string& python, const std::string& script, const std::string& args,
                                      const TorchSetting& s) {
    return peer_lines(run_peer_script(python, script, args, s), script.substr(0, script.rfind('.')));
}

} // namespace bench
