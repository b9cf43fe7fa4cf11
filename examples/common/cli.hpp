#pragma once
// Shared by the examples: the command line (usage text, --help, checked numbers), progress lines
// on stderr and short number formatting.
//
// Usage errors print "<program>: <what>" and the usage text on stderr and exit with status 2;
// --help prints the usage text on stdout and exits 0. Numbers are checked before any work: a
// count outside its range names the limit, so "--events 1e30" fails at once instead of
// converting an out-of-range double to size_t (undefined) or asking for exabytes.
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "output_dir.hpp"

namespace examples {

/// Shortest text of v with prec significant digits ("0.875", "1e-05").
inline std::string fmt(double v, int prec = 3) {
    std::ostringstream s;
    s.precision(prec);
    s << v;
    return s.str();
}

/// Every whole number up to 2^53 is exact in a double, so a count parsed as a double is exact.
constexpr double kExactIntegerLimit = 9007199254740992.0;

class Cli {
public:
    /// Counts above this (events, epochs, batch sizes, steps...) are refused: any of them that
    /// large needs more memory or time than a run can have.
    static constexpr std::size_t kMaxCount = 100000000;

    /// usage_text: the lines after "usage: ", starting with the program's synopsis.
    Cli(std::string program, std::string usage_text) : program_(std::move(program)), usage_(std::move(usage_text)) {}

    const std::string& program() const { return program_; }

    /// Prints "<program>: msg" (when msg is not empty) and the usage, then exits with code:
    /// 2 (usage error, on stderr) or 0 (--help, on stdout).
    [[noreturn]] void usage(const std::string& msg, int code = 2) const {
        std::FILE* out = code ? stderr : stdout;
        if (!msg.empty()) std::fprintf(out, "%s: %s\n\n", program_.c_str(), msg.c_str());
        std::fprintf(out, "usage: %s", usage_.c_str());
        std::fflush(out);
        std::exit(code);
    }
    [[noreturn]] void help() const { usage("", 0); }

    /// Walks the arguments: --help and -h print the usage and exit 0; every other argument goes to
    /// on(arg, value) (a callable taking const std::string& and a callable), where value() takes
    /// the next argument (a usage error when there is none). on returns false for an argument it
    /// does not know: a usage error naming it.
    template <class On>
    void parse(int argc, char** argv, On&& on) const {
        for (int i = 1; i < argc; ++i) {
            const std::string arg = argv[i];
            if (arg == "--help" || arg == "-h") help();
            const auto value = [&]() -> const char* {
                if (i + 1 >= argc) usage(arg + " needs a value");
                return argv[++i];
            };
            if (!on(arg, value)) usage("unknown option '" + arg + "'");
        }
    }

    /// A finite decimal number.
    double number(const std::string& flag, const char* text) const {
        char* end = nullptr;
        const double v = std::strtod(text, &end);
        if (end == text || *end != '\0' || !std::isfinite(v))
            usage(flag + " expects a number, got '" + text + "'");
        return v;
    }

    double number(const std::string& flag, const std::string& text) const { return number(flag, text.c_str()); }

    /// A whole number in [least, most].
    std::size_t count(const std::string& flag, const char* text, std::size_t least = 1, std::size_t most = kMaxCount) const {
        const double v = number(flag, text);
        if (v != std::floor(v) || v < 0 || (least > 0 && v < 1))
            usage(flag + " expects a " + (least > 0 ? "positive" : "non-negative") + " whole number, got '" + text + "'");
        if (v < static_cast<double>(least)) usage(flag + " must be at least " + std::to_string(least) + ", got '" + text + "'");
        if (v > static_cast<double>(most))
            usage(flag + " must be at most " + std::to_string(most) + ", got '" + text + "'");
        return static_cast<std::size_t>(v);
    }

    /// A random seed: a whole number in [1, 2^53].
    std::uint64_t seed(const std::string& flag, const char* text) const {
        const double v = number(flag, text);
        if (v != std::floor(v) || v < 1)
            usage(flag + " expects a positive whole number, got '" + text + "'");
        if (v > kExactIntegerLimit) usage(flag + " must be at most 2^53 = 9007199254740992, got '" + text + "'");
        return static_cast<std::uint64_t>(v);
    }

private:
    std::string program_, usage_;
};

/// The options most examples share: where the results go, the random seed, the CI-sized run and
/// the progress switch. A program's Options derive from it; Flags::common declares --out, --seed
/// and --quiet (a program with a CI-sized run adds .flag("--quick", o.quick)).
struct CommonOptions {
    std::string out = ".";
    std::uint64_t seed = 1;
    bool quick = false;
    bool quiet = false;
};
/// The same for a program that reads its events from a file when given one (--data FILE).
struct DataOptions : CommonOptions {
    std::string data;  // empty: generate the events
};

/// A program's options declared once, as a table: each name with where its value goes and how it
/// is checked (Cli's count, number and seed, so the usage errors are Cli's). Declaring an option
/// returns the table, so the declarations chain; parse then walks the command line with Cli::parse.
class Flags {
public:
    /// What an option with a value does with it: on(flag, value).
    using Handler = std::function<void(const std::string&, const char*)>;

    explicit Flags(const Cli& cli) : cli_(cli) {}

    /// An option with a value, handled by on.
    Flags& on(const char* name, Handler on) {
        options_.push_back({name, true, std::move(on), false});
        return *this;
    }
    /// An option without a value: on() runs when it is given.
    Flags& on_flag(const char* name, std::function<void()> on) {
        options_.push_back({name, false, [f = std::move(on)](const std::string&, const char*) { f(); }, false});
        return *this;
    }
    Flags& text(const char* name, std::string& to) {
        return on(name, [&to](const std::string&, const char* v) { to = v; });
    }
    Flags& number(const char* name, double& to) {
        return on(name, [this, &to](const std::string& f, const char* v) { to = cli_.number(f, v); });
    }
    Flags& count(const char* name, std::size_t& to, std::size_t least = 1, std::size_t most = Cli::kMaxCount) {
        return on(name, [this, &to, least, most](const std::string& f, const char* v) { to = cli_.count(f, v, least, most); });
    }
    Flags& seed(const char* name, std::uint64_t& to) {
        return on(name, [this, &to](const std::string& f, const char* v) { to = cli_.seed(f, v); });
    }
    /// A switch: sets to = value when given.
    Flags& flag(const char* name, bool& to, bool value = true) {
        return on_flag(name, [&to, value] { to = value; });
    }

    /// --out DIR, --seed S and --quiet into the shared options.
    Flags& common(CommonOptions& o) { return text("--out", o.out).seed("--seed", o.seed).flag("--quiet", o.quiet); }
    /// The same and --data FILE.
    Flags& common(DataOptions& o) { return common(static_cast<CommonOptions&>(o)).text("--data", o.data); }

    /// Walks the command line (--help and unknown options as Cli::parse), each option in turn.
    Flags& parse(int argc, char** argv) {
        cli_.parse(argc, argv, [&](const std::string& a, const auto& value) {
            for (Option& o : options_)
                if (a == o.name) {
                    o.on(a, o.takes_value ? value() : nullptr);
                    o.given = true;
                    return true;
                }
            return false;
        });
        return *this;
    }

    /// Whether the command line gave the option (after parse): explicit values win over presets.
    bool given(const std::string& name) const {
        for (const Option& o : options_)
            if (name == o.name) return o.given;
        return false;
    }
    /// to = value unless the command line gave the option (after parse): presets such as --quick
    /// yield to explicit values.
    Flags& preset(const std::string& name, std::size_t& to, std::size_t value) {
        if (!given(name)) to = value;
        return *this;
    }

private:
    struct Option {
        std::string name;
        bool takes_value;
        Handler on;
        bool given = false;
    };
    const Cli& cli_;
    std::vector<Option> options_;
};

/// Progress lines "[  12.3 s] what" on stderr, silent when quiet.
struct Progress {
    bool quiet = false;
    int width = 6;  // of the seconds field
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
    void say(const std::string& what) const {
        if (!quiet) std::fprintf(stderr, "[%*.1f s] %s\n", width, seconds(), what.c_str());
    }
};

/// The frame of an example's main: makes the output directory, then runs body(progress) (returning
/// the exit status) and reports what it throws as "<program>: error: what" with status 1.
template <class Body>
int run(const char* program, const std::string& out, const Progress& progress, Body&& body) {
    if (!make_output_dir(program, out)) return 1;
    try {
        return body(progress);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: error: %s\n", program, e.what());
        return 1;
    }
}

} // namespace examples
