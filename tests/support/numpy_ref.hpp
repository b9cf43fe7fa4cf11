#pragma once
// NumPy as the reference for the .npy/.npz tests: a test writes a Python script that runs in a
// scratch directory under /usr/bin/python3 (with numpy), makes or checks files there, and prints
// lines the test asserts ("VERDICT ok"). Tests that use it skip with a message when numpy is
// missing (Debian: apt-get install python3-numpy).
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

#include <unistd.h>

namespace tapir_test {

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
