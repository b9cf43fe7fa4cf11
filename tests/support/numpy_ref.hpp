#pragma once
// NumPy as the reference for the .npy/.npz tests: a test writes a Python script that runs in a
// scratch directory under /usr/bin/python3 (with numpy), makes or checks files there, and prints
// lines the test asserts ("VERDICT ok"). Also the helpers the .npy/.npz tests share. Tests that use it skip with a message when numpy is
// missing (Debian: apt-get install python3-numpy).
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include <tapir/error.hpp>
#include <tapir/io/npy.hpp>

namespace tapir_test {

/// The bytes of a string literal, embedded NULs included.
template <std::size_t N>
std::string bytes_of(const char (&s)[N]) {
    return std::string(s, N - 1);
}

/// The whole content of a file ("" when it cannot be read).
inline std::string file_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

/// The bytes of a vector's values.
template <class V>
std::string raw_bytes(const std::vector<V>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(V));
}

/// The message of the tapir::format_error that f() throws, or "no error".
template <class F>
std::string format_error_of(F f) {
    try {
        f();
    } catch (const tapir::format_error& e) {
        return e.what();
    }
    return "no error";
}

/// Whether an array equals reference values NumPy wrote with tofile: little-endian int64 for
/// integer arrays, float64 for float and bool arrays, in C order; bit for bit.
inline bool equals_reference(const tapir::io::NpyArray& a, const std::string& ref) {
    const bool integer = a.type() == tapir::io::NpyType::int32 || a.type() == tapir::io::NpyType::int64;
    const std::string got = integer ? raw_bytes(a.values<std::int64_t>()) : raw_bytes(a.values<double>());
    return got == ref;
}

/// True when /usr/bin/python3 imports numpy; otherwise prints why the caller skips.
inline bool numpy_available() {
    static const int ok = std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0 ? 1 : 0;
    if (ok == 1) return true;
    MESSAGE("skipped: /usr/bin/python3 has no numpy (Debian: apt-get install python3-numpy)");
    return false;
}

/// A fresh scratch directory, removed with everything in it when the object goes.
struct ScratchDir {
    std::filesystem::path path;
    explicit ScratchDir(const std::string& tag) {
        static int counter = 0;
        path = std::filesystem::temp_directory_path() /
               ("tapir_" + tag + "_" + std::to_string(static_cast<long>(::getpid())) + "_" + std::to_string(counter++));
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    ~ScratchDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    std::string operator/(const std::string& name) const { return (path / name).string(); }
};

/// Runs `script` with numpy imported as np and the working directory `dir`; returns what it
/// printed. Throws (the test fails) when Python fails.
inline std::string numpy_run(const ScratchDir& dir, const std::string& script) {
    const std::string py = dir / "script.py", log = dir / "script.log";
    {
        std::ofstream f(py);
        f << "import sys, os\nimport numpy as np\nos.chdir(sys.argv[1])\n" << script << "\n";
    }
    const std::string cmd = "/usr/bin/python3 " + py + " " + dir.path.string() + " >" + log + " 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream lf(log);
    const std::string out((std::istreambuf_iterator<char>(lf)), std::istreambuf_iterator<char>());
    if (rc != 0) throw std::runtime_error("numpy_run: python failed:\n" + out);
    return out;
}

} // namespace tapir_test
