#pragma once
/// Whole-file reads and atomic writes shared by the io readers and writers (model files, .npy,
/// .npz). Failures are format_errors that name the calling function, the path and the reason.

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "../../config.hpp"
#include "../../error.hpp"

namespace tapir::io::detail {

struct FileCloser {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};

/// The bytes of a file; fn names the caller in errors ("load_model: cannot open 'x': ...").
template <class = void>
std::string read_file(const std::string& path, const char* fn) {
    errno = 0;
    std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
    if (!f) throw format_error(std::string(fn) + ": cannot open '" + path + "': " + std::generic_category().message(errno));
    std::string data;
    char buf[1 << 16];
    errno = 0;
    for (;;) {
        const std::size_t got = std::fread(buf, 1, sizeof buf, f.get());
        data.append(buf, got);
        if (got < sizeof buf) break;
    }
    // A directory opens but does not read (EISDIR): the reason names it.
    if (std::ferror(f.get()))
        throw format_error(std::string(fn) + ": cannot read '" + path + "': " + std::generic_category().message(errno ? errno : EIO));
    return data;
}

/// Writes to path + ".tmp" and renames: a crash mid-write never leaves a half-written file.
template <class = void>
void write_file_atomic(const std::string& path, std::string_view data, const char* fn) {
    const std::string tmp = path + ".tmp";
    errno = 0;
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw format_error(std::string(fn) + ": cannot open '" + tmp + "' for writing: " + std::generic_category().message(errno));
    const bool wrote = std::fwrite(data.data(), 1, data.size(), f) == data.size();
    const int err = errno;
    const bool closed = std::fclose(f) == 0;
    if (!wrote || !closed) {
        std::remove(tmp.c_str());
        throw format_error(std::string(fn) + ": error writing '" + tmp + "': " + std::generic_category().message(err ? err : EIO));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        std::remove(tmp.c_str());
        // The temporary file is an implementation detail: the reason (a directory, EISDIR) is the path's.
        throw format_error(std::string(fn) + ": cannot write '" + path + "': " + std::generic_category().message(e));
    }
}

TAPIR_COMPILED_ONCE(std::string read_file<>(const std::string&, const char*))
TAPIR_COMPILED_ONCE(void write_file_atomic<>(const std::string&, std::string_view, const char*))

} // namespace tapir::io::detail
